// The same package in Firefox (ESR, driven over WebDriver by geckodriver, since Playwright
// drives only its own Firefox builds): every value type round-trips, keys sort bytewise, and
// a held store is refused with WalnutLockedError.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { homedir } from 'node:os';
import { after, before, test } from 'node:test';
import { startServer } from '../../www/tools/serve.mjs';
import { cases, crashes } from '../conformance/suite.mjs';

const FIREFOX = process.env.FIREFOX ?? '/usr/bin/firefox-esr';
const GECKODRIVER = [process.env.GECKODRIVER, `${homedir()}/.cargo/bin/geckodriver`, '/usr/bin/geckodriver']
  .filter(Boolean)
  .find((path) => existsSync(path));
const missing = !existsSync(FIREFOX) ? FIREFOX : !GECKODRIVER ? 'geckodriver (make setup-rust installs it)' : null;

let server;
let driver;
let base;
let session;

/** A port nobody listens on now. */
async function freePort() {
  const probe = createServer();
  await new Promise((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

/** One WebDriver command. */
async function webdriver(method, path, body) {
  const response = await fetch(base + path, {
    method,
    headers: { 'content-type': 'application/json' },
    body: body && JSON.stringify(body),
  });
  const { value } = await response.json();
  if (value?.error) throw new Error(`WebDriver ${value.error}: ${value.message}`);
  return value;
}

/** Runs `fn` (an async function source) in the page with `args`; returns its result. */
function inPage(fn, ...args) {
  const script = `const done = arguments[arguments.length - 1];
    (${fn})(...Array.from(arguments).slice(0, -1)).then(done, (e) => done({ thrown: e.name + ': ' + e.message }));`;
  return webdriver('POST', `/session/${session}/execute/async`, { script, args });
}

before(async () => {
  if (missing) return;
  server = await startServer({ port: 0 });
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  driver = spawn(GECKODRIVER, ['--host', '127.0.0.1', '--port', String(port)], { stdio: 'ignore' });
  for (let tries = 0; ; tries++) {
    const ready = await fetch(`${base}/status`).then((r) => r.ok, () => false);
    if (ready) break;
    if (tries > 100) throw new Error('geckodriver did not start');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  ({ sessionId: session } = await webdriver('POST', '/session', {
    capabilities: { alwaysMatch: { browserName: 'firefox', 'moz:firefoxOptions': { binary: FIREFOX, args: ['-headless'] } } },
  }));
  await webdriver('POST', `/session/${session}/timeouts`, { script: 180000 });
  await webdriver('POST', `/session/${session}/url`, { url: `${server.url}tests/e2e/fixtures/` });
});

after(async () => {
  if (session) await webdriver('DELETE', `/session/${session}`).catch(() => {});
  driver?.kill();
  await server?.close();
});

test('Firefox: values round-trip, keys sort bytewise, a second open of a store joins it', { skip: missing ? `missing ${missing}` : false }, async () => {
  const r = await inPage(async (chunk) => {
    while (!window.walnut) await new Promise((resolve) => setTimeout(resolve, 20));
    const { pattern, streamOf, readAll, firstDifference } = window.harness;
    const db = await window.walnut.open('firefox', { chunkSize: chunk });
    const failures = [];
    for (const size of [0, 1, chunk - 1, chunk, chunk + 1, 3 * chunk + 17]) {
      const bytes = pattern(size, size + 1);
      const text = 'x'.repeat(size);
      const values = { bytes: bytes.slice(), buffer: bytes.slice().buffer, blob: new Blob([bytes]), stream: streamOf(bytes), text };
      for (const [type, value] of Object.entries(values)) {
        const want = type === 'text' ? new TextEncoder().encode(text) : bytes;
        await db.put(`${type}/${size}`, value);
        const viaGet = firstDifference(new Uint8Array(await (await db.get(`${type}/${size}`)).arrayBuffer()), want);
        const viaStream = firstDifference(await readAll(await db.getStream(`${type}/${size}`)), want);
        if (viaGet !== -1 || viaStream !== -1) failures.push(`${type}/${size}: ${viaGet} ${viaStream}`);
      }
    }
    for (const key of ['\uffff', '😀', 'a']) await db.put(key, key);
    const order = await db.keys({ start: 'a', end: 'b' });
    const tail = await db.keys({ start: '\uffff' });
    // A second context of the same store follows the first (multi-tab), through its leader.
    const second = await window.walnut.open('firefox', { lockTimeout: 200 });
    await second.put('from-second', 'joined');
    const joined = [await (await db.get('from-second')).text(), (await second.stats()).leader];
    await second.close();
    await db.close();
    return { failures, order, tail, joined };
  }, 65536);
  assert.deepEqual(r, { failures: [], order: ['a'], tail: ['\uffff', '😀'], joined: ['joined', false] });
});

// The conformance suite (tests/conformance/suite.mjs) in Firefox: the page API and the
// synchronous store in a dedicated worker, and the crash case on each.
for (const home of ['page', 'worker']) {
  test(`Firefox, ${home}: every conformance case`, { skip: missing ? `missing ${missing}` : false }, async (t) => {
    await webdriver('POST', `/session/${session}/url`, { url: `${server.url}tests/conformance/` });
    const results = await inPage(async (home) => {
      while (!window.conformance) await new Promise((resolve) => setTimeout(resolve, 20));
      return window.conformance[home]();
    }, home);
    assert.ok(Array.isArray(results), `the suite did not run: ${JSON.stringify(results)}`);
    assert.equal(results.length, cases.length);
    for (const r of results) await t.test(r.name, () => assert.ok(r.ok, r.error));
    for (const [index, c] of crashes.entries()) {
      await t.test(c.name, async () => {
        const outcome = await inPage((home, index) => window.conformance.crash(home, index), home, index);
        assert.equal(outcome, 'ok');
      });
    }
  });
}
