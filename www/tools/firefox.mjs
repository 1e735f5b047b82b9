// Firefox ESR, headless, driven over WebDriver by geckodriver (Playwright drives only its own
// Firefox builds, which are not installed here), for the end-to-end tests and the benchmark:
// the static server, a geckodriver on a free port, one session with a new profile.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import getPort from 'get-port';
import { startServer } from './serve.mjs';

export const FIREFOX = process.env.FIREFOX ?? '/usr/bin/firefox-esr';
export const GECKODRIVER = [process.env.GECKODRIVER, `${homedir()}/.cargo/bin/geckodriver`, '/usr/bin/geckodriver']
  .filter(Boolean)
  .find((path) => existsSync(path));
/** What is missing to drive Firefox here, or null. */
export const missing = !existsSync(FIREFOX) ? FIREFOX : !GECKODRIVER ? 'geckodriver (make setup-rust installs it)' : null;

/**
 * Starts the server, geckodriver and a Firefox session; close() stops all three.
 * @param {{ routes?: Array<[string, string]>, headers?: Record<string, string>, scriptTimeoutMs?: number }} [options]
 *   server routes and headers as in serve.mjs; how long one evaluate() may run (default 180 s)
 * @returns {Promise<{ url: string, goto: (url: string) => Promise<void>, evaluate: (fn: Function, ...args: unknown[]) => Promise<unknown>, setInputFiles: (selector: string, path: string) => Promise<void>, close: () => Promise<void> }>}
 *   `url`: the server's, ending with a slash; `evaluate(fn, ...args)`: runs the async function
 *   `fn` in the page and resolves to its result (JSON-like values), or rejects with what it threw
 */
export async function launchFirefox({ routes, headers, scriptTimeoutMs = 180_000 } = {}) {
  if (missing) throw new Error(`cannot drive Firefox: missing ${missing}`);
  const server = await startServer({ port: 0, routes, headers });
  const base = `http://127.0.0.1:${await getPort({ host: '127.0.0.1' })}`;
  const driver = spawn(GECKODRIVER, ['--host', '127.0.0.1', '--port', base.split(':').at(-1)], { stdio: 'ignore' });
  let session;
  const webdriver = async (method, path, body) => {
    const response = await fetch(base + path, {
      method,
      headers: { 'content-type': 'application/json' },
      body: body && JSON.stringify(body),
    });
    const { value } = await response.json();
    if (value?.error) throw new Error(`WebDriver ${value.error}: ${value.message}`);
    return value;
  };
  const close = async () => {
    if (session) await webdriver('DELETE', `/session/${session}`).catch(() => {});
    driver.kill();
    await server.close();
  };
  try {
    for (let tries = 0; ; tries++) {
      if (await fetch(`${base}/status`).then((r) => r.ok, () => false)) break;
      if (tries > 100) throw new Error('geckodriver did not start');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    ({ sessionId: session } = await webdriver('POST', '/session', {
      capabilities: { alwaysMatch: { browserName: 'firefox', 'moz:firefoxOptions': { binary: FIREFOX, args: ['-headless'] } } },
    }));
    await webdriver('POST', `/session/${session}/timeouts`, { script: scriptTimeoutMs });
  } catch (error) {
    await close();
    throw error;
  }
  return {
    url: server.url,
    goto: (url) => webdriver('POST', `/session/${session}/url`, { url }).then(() => {}),
    async evaluate(fn, ...args) {
      const script = `const done = arguments[arguments.length - 1];
        Promise.resolve().then(() => (${fn})(...Array.from(arguments).slice(0, -1))).then(
          (value) => done({ value }),
          (e) => done({ thrown: (e && e.name) + ': ' + (e && e.message) }));`;
      const { value, thrown } = await webdriver('POST', `/session/${session}/execute/async`, { script, args });
      if (thrown) throw new Error(thrown);
      return value;
    },
    async setInputFiles(selector, path) {
      const found = await webdriver('POST', `/session/${session}/element`, { using: 'css selector', value: selector });
      const element = Object.values(found)[0];
      await webdriver('POST', `/session/${session}/element/${element}/value`, { text: path });
    },
    close,
  };
}
