// The conformance suite (tests/conformance/suite.mjs) in Chromium: every case on the page API
// and on the synchronous store in a dedicated worker; the crash cases with the store's worker
// terminated mid-stream. (Firefox runs the same in firefox.test.mjs.)
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { cases, crashes } from '../conformance/suite.mjs';
import { setup } from './helpers.mjs';

let env;
let page;
before(async () => {
  env = await setup();
  page = await env.context.newPage();
  page.on('pageerror', (error) => console.error(`[page error] ${error.stack ?? error}`));
  await page.goto(`${env.url}tests/conformance/`);
  await page.waitForFunction(() => window.conformance);
});
after(() => env?.close());

for (const home of ['page', 'worker']) {
  test(`Chromium, ${home}: every conformance case`, async (t) => {
    const results = await page.evaluate((home) => window.conformance[home](), home);
    assert.equal(results.length, cases.length);
    for (const r of results) await t.test(r.name, () => assert.ok(r.ok, r.error));
  });
  for (const [index, c] of crashes.entries()) {
    test(`Chromium, ${home}: ${c.name}`, async () => {
      assert.equal(await page.evaluate(([home, index]) => window.conformance.crash(home, index), [home, index]), 'ok');
    });
  }
}
