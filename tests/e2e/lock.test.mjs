// One store, two pages: the second is refused with WalnutLockedError while the first works on.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setup } from './helpers.mjs';

let env;
before(async () => {
  env = await setup();
});
after(() => env?.close());

test('a second page cannot open a store another page holds, and the holder keeps working', async () => {
  const holder = await env.openPage();
  const other = await env.openPage();
  await holder.evaluate(async () => {
    window.db = await window.walnut.open('shared');
    await window.db.put('k', 'from the holder');
  });

  const refused = await other.evaluate(async () => {
    const started = performance.now();
    try {
      await window.walnut.open('shared', { lockTimeout: 300 });
      return { name: 'opened' };
    } catch (error) {
      return {
        name: error.name,
        message: error.message,
        isClass: error instanceof window.walnut.WalnutLockedError,
        ms: performance.now() - started,
      };
    }
  });
  assert.equal(refused.name, 'WalnutLockedError', JSON.stringify(refused));
  assert.equal(refused.isClass, true);
  assert.ok(refused.ms >= 250, `gave up after ${refused.ms} ms, before the lock timeout`);

  const stillWorking = await holder.evaluate(async () => {
    await window.db.put('k2', 'still here');
    return [await (await window.db.get('k')).text(), await (await window.db.get('k2')).text()];
  });
  assert.deepEqual(stillWorking, ['from the holder', 'still here']);

  // Once the holder closes, the other page gets the store and its data.
  await holder.evaluate(() => window.db.close());
  const afterRelease = await other.evaluate(async () => {
    const db = await window.walnut.open('shared');
    const keys = await db.keys();
    await db.close();
    return keys;
  });
  assert.deepEqual(afterRelease, ['k', 'k2']);
  await holder.close();
  await other.close();
});
