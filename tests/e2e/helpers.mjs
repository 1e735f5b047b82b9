// Shared setup for the end-to-end tests: the static server, a Chromium with a fresh profile
// (OPFS persists per profile, so pages of one context share stores) and the test page.
import { copyFile, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { fileURLToPath } from 'node:url';
import { launch } from '../../www/tools/browser.mjs';

const repo = fileURLToPath(new URL('../../', import.meta.url));

/**
 * Starts the server and a persistent Chromium context with a new profile.
 * @param {{ routes?: Array<[string, string]> }} [options] extra server routes
 * @returns {Promise<{ url: string, context: import('playwright-core').BrowserContext, openPage: () => Promise<import('playwright-core').Page>, close: () => Promise<void> }>}
 */
export async function setup({ routes } = {}) {
  const { url, context, close } = await launch({ routes });
  const fixture = `${url}tests/e2e/fixtures/`;
  return {
    url,
    context,
    close,
    /** Opens the test page, with `window.walnut` and `window.harness` loaded. */
    async openPage() {
      const page = await context.newPage();
      page.on('pageerror', (error) => console.error(`[page error] ${error.stack ?? error}`));
      page.on('console', (message) => {
        if (message.type() === 'error' || process.env.WALNUT_E2E_CONSOLE) {
          console.error(`[page ${message.type()}] ${message.text()}`);
        }
      });
      await page.goto(fixture);
      await page.waitForFunction(() => window.walnut && window.harness);
      return page;
    },
  };
}

/**
 * For a test file whose tests share one page: sets it up before them and closes it after.
 * @returns {{ env?: Awaited<ReturnType<typeof setup>>, page?: import('playwright-core').Page }}
 *   filled in once the tests run
 */
export function sharedPage() {
  const shared = {};
  before(async () => {
    shared.env = await setup();
    shared.page = await shared.env.openPage();
  });
  after(() => shared.env?.close());
  return shared;
}

/**
 * Serves the built wrapper (every module of pkg/ but the core's glue) under `route` beside a
 * stand-in core, `tests/e2e/fixtures/<core>/walnut_core.js`, so the real wrapper runs over a
 * core that fails on purpose. Call at the top level of a test file: it starts the browser
 * before the tests and removes everything after them.
 * @param {string} core fixture directory holding the stand-in walnut_core.js
 * @param {string} route server path, such as '/faulty/'
 * @param {(page: import('playwright-core').Page) => Promise<void>} [init] runs on the page once
 *   it is open, before any test (top-level `before` hooks of a file do not wait for each other)
 * @returns {{ env?: Awaited<ReturnType<typeof setup>>, page?: import('playwright-core').Page }}
 *   filled in once the tests run
 */
export function standInCore(core, route, init) {
  const shared = {};
  let dir;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), `walnut-e2e-${core}-`));
    for (const file of await readdir(`${repo}pkg`)) {
      if (file.endsWith('.js') && file !== 'walnut_core.js') await copyFile(`${repo}pkg/${file}`, join(dir, file));
    }
    await copyFile(`${repo}tests/e2e/fixtures/${core}/walnut_core.js`, join(dir, 'walnut_core.js'));
    shared.env = await setup({ routes: [[route, dir]] });
    shared.page = await shared.env.openPage();
    await init?.(shared.page);
  });
  after(async () => {
    await shared.env?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  return shared;
}

/**
 * Polls `predicate` (async, run in the page) every 10 ms until it is true, for up to 10 s.
 * (Playwright's waitForFunction does not wait for an async predicate: it returned at once.)
 */
export async function until(page, predicate) {
  const met = await page.evaluate(async (source) => {
    const check = (0, eval)(source);
    for (let i = 0; i < 1000; i++) {
      if (await check()) return true;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    return false;
  }, predicate.toString());
  if (!met) throw new Error(`not met within 10 s: ${predicate}`);
}
