// One store, two pages: the second joins as a follower; a leadership that never answers is refused.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setup } from './helpers.mjs';

let env;
before(async () => {
  env = await setup();
});
after(() => env?.close());

test('a second page opens a store another page holds: it follows, both work, and it stays open when the first closes', async () => {
  const holder = await env.openPage();
  const other = await env.openPage();
  await holder.evaluate(async () => {
    window.db = await window.walnut.open('shared');
    await window.db.put('k', 'from the holder');
  });
  const joined = await other.evaluate(async () => {
    window.db = await window.walnut.open('shared', { lockTimeout: 300 });
    await window.db.put('k2', 'from the other');
    return { value: await (await window.db.get('k')).text(), leader: (await window.db.stats()).leader };
  });
  assert.deepEqual(joined, { value: 'from the holder', leader: false });
  assert.equal(await holder.evaluate(async () => (await window.db.get('k2')).text()), 'from the other');

  // The holder closes its use: the other page leads now, with the data.
  await holder.evaluate(() => window.db.close());
  const afterRelease = await other.evaluate(async () => {
    await window.db.put('k3', 'after');
    const out = { keys: await window.db.keys(), leader: (await window.db.stats()).leader };
    await window.db.close();
    return out;
  });
  assert.deepEqual(afterRelease, { keys: ['k', 'k2', 'k3'], leader: true });
  await holder.close();
  await other.close();
});

test('a store whose leadership is held by something that never answers is refused with WalnutLockedError, in bounded time', async () => {
  const page = await env.openPage();
  const r = await page.evaluate(async () => {
    // Not a walnut context: it holds the store's leadership lock and says nothing.
    navigator.locks.request('walnut:squatted', () => new Promise(() => {}));
    const started = performance.now();
    const outcome = await window.harness.settled(window.walnut.open('squatted', { lockTimeout: 300 }), 15_000);
    return { outcome, ms: performance.now() - started };
  });
  assert.match(r.outcome, /^WalnutLockedError: /);
  assert.ok(r.ms >= 300, `gave up after ${r.ms} ms, before the lock timeout`);
  await page.close();
});
