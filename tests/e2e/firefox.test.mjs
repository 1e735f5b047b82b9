// The same package in Firefox (ESR, driven over WebDriver by geckodriver, since Playwright
// drives only its own Firefox builds): every value type round-trips, keys sort bytewise, and
// a held store is refused with WalnutLockedError.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchFirefox, missing } from '../../www/tools/firefox.mjs';
import { cases, crashes } from '../conformance/suite.mjs';

let firefox;

/** Runs `fn` (an async function) in the page with `args`; returns its result. */
function inPage(fn, ...args) {
  return firefox.evaluate(fn, ...args);
}

before(async () => {
  if (missing) return;
  firefox = await launchFirefox();
  await firefox.goto(`${firefox.url}tests/e2e/fixtures/`);
});

after(() => firefox?.close());

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
    await firefox.goto(`${firefox.url}tests/conformance/`);
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
