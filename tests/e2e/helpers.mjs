// Shared setup for the end-to-end tests: the static server, a Chromium with a fresh profile
// (OPFS persists per profile, so pages of one context share stores) and the test page.
import { after, before } from 'node:test';
import { launch } from '../../www/tools/browser.mjs';

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
