// The log's lifecycle through the public API: segments, compact(), checkpoints at close, and a
// stream that outlives the compaction of the segments it reads.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sharedPage } from './helpers.mjs';

const shared = sharedPage();

test('compact() reclaims overwritten space, an open stream keeps its snapshot, reopen starts from a checkpoint', async () => {
  const r = await shared.page.evaluate(async () => {
    const { readAll } = window.harness;
    const { open } = window.walnut;
    // Small segments; compactionRatio 1 keeps compaction from starting by itself.
    const options = { chunkSize: 4096, segmentSize: 16384, compactionRatio: 1 };
    const value = (length, seed) => Uint8Array.from({ length }, (_, i) => (i * 31 + seed) & 255);
    const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

    let db = await open('lifecycle', options);
    for (let round = 0; round < 20; round++) {
      for (let k = 0; k < 6; k++) await db.put(`k${k}`, value(3000 + k, round));
    }
    const before = await db.stats();
    const stream = await db.getStream('k0'); // the value of round 19
    for (let k = 0; k < 6; k++) await db.put(`k${k}`, value(3000 + k, 99));
    const rounds = await db.compact();
    const snapshot = await readAll(stream);
    const after = await db.stats();
    await db.close();

    db = await open('lifecycle', options);
    const recovery = db.recovery;
    const values = [];
    for (let k = 0; k < 6; k++) values.push(new Uint8Array(await (await db.get(`k${k}`)).arrayBuffer()));
    const nothingToDo = await db.compact();
    await db.close();
    return {
      before,
      after,
      rounds,
      nothingToDo,
      recovery,
      snapshotIntact: same(snapshot, value(3000, 19)),
      valuesIntact: values.every((v, k) => same(v, value(3000 + k, 99))),
    };
  });
  assert.ok(r.before.segments > 5, `segments before: ${r.before.segments}`);
  assert.ok(r.before.deadRatio > 0.8, `dead ratio before: ${r.before.deadRatio}`);
  assert.equal(r.rounds, 1);
  assert.ok(r.after.logBytes < r.before.logBytes / 3, `log ${r.before.logBytes} -> ${r.after.logBytes}`);
  assert.ok(r.after.compactions >= 1 && r.after.checkpoints >= 2, JSON.stringify(r.after));
  assert.ok(r.snapshotIntact, 'a stream opened before compact() reads its value whole');
  assert.ok(r.valuesIntact);
  assert.notEqual(r.recovery.checkpointSeq, null, JSON.stringify(r.recovery));
  assert.equal(r.recovery.records, 0, 'close() checkpointed: nothing to replay');
  assert.equal(r.nothingToDo, 0);
});

test('open options for the lifecycle are checked by name', async () => {
  const r = await shared.page.evaluate(async () => {
    const { caught } = window.harness;
    const { open } = window.walnut;
    return {
      segment: await caught(open('x', { segmentSize: 100 })),
      ratio: await caught(open('x', { compactionRatio: 2 })),
      every: await caught(open('x', { checkpointBytes: -1 })),
    };
  });
  assert.equal(r.segment.name, 'WalnutInvalidArgumentError');
  assert.match(r.segment.message, /segmentSize/);
  assert.match(r.ratio.message, /compactionRatio/);
  assert.match(r.every.message, /checkpointBytes/);
});

test('a burst of writes while the pool of spare files is short opens only the files it lacks', async () => {
  // The pool keeps 3 spare OPFS files open, refilled in the background after a write uses one.
  // Each write of a burst asked for a refill before any refill had started, and each refill
  // then opened files until the pool was full: a putMany of 2,000 values left thousands of
  // empty files in the store, each with a sync access handle open, until OPFS stalled and
  // close() took seconds. Through the page's store and through the sync store in a worker,
  // whose gets (awaited one by one) let the queued refills run.
  const r = await shared.page.evaluate(async () => {
    const files = async (name) => {
      const root = await navigator.storage.getDirectory();
      const dir = await (await root.getDirectoryHandle('walnut')).getDirectoryHandle(name);
      return (await Array.fromAsync(dir.keys())).length;
    };
    const settle = () => new Promise((resolve) => setTimeout(resolve, 500));
    const entries = Array.from({ length: 2000 }, (_, i) => [`k${i}`, new Uint8Array(128).fill(i & 255)]);

    const db = await window.walnut.open('pool-burst-page');
    await db.putMany(entries);
    await db.putMany(entries);
    for (let i = 0; i < 50; i++) await db.getBytes(`k${i}`);
    await settle();
    const page = await files('pool-burst-page');
    await db.close();

    const worker = new Worker('/tests/e2e/fixtures/sync-worker.js', { type: 'module' });
    let next = 1;
    const waiting = new Map();
    worker.onmessage = ({ data }) => waiting.get(data.id)?.(data);
    const call = (cmd, ...args) =>
      new Promise((resolve, reject) => {
        const id = next++;
        waiting.set(id, (data) => (data.error ? reject(new Error(data.error)) : resolve(data.value)));
        worker.postMessage({ id, cmd, args });
      });
    await call('open', 'pool-burst-sync');
    await call('putMany', 2000);
    await call('gets', 2000);
    await settle();
    const sync = await files('pool-burst-sync');
    await call('close');
    worker.terminate();
    return { page, sync };
  });
  // One segment (or two), the 3 spare files, at most a checkpoint: never hundreds.
  assert.ok(r.page <= 8, `the page's store holds ${r.page} files`);
  assert.ok(r.sync <= 8, `the sync store holds ${r.sync} files`);
});
