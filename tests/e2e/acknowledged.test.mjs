// No acknowledged write lost, through the public API in Chromium. A strict put issued in one
// microtask with a call whose flush meets a full disk first (a relaxed put, a read, a
// checkpoint) must either resolve and be in the store, before and after a reopen, or reject
// and be absent. Before the committer owned durability, each of these resolved the strict put
// and lost it.
//
// The full disk is a shim over the sync handle's write in the store's worker
// (fixtures/disk/walnut_core.js), in the three ways browsers fail at quota. (CDP's
// Storage.overrideQuotaForOrigin is accepted but not enforced on OPFS sync handles by this
// Chromium: the estimate keeps its 10 GiB quota.)
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { standInCore } from './helpers.mjs';

const shared = standInCore('disk', '/disk/', (page) =>
  page.evaluate(async () => {
    window.disk = await import('/disk/walnut.js');
    const channel = new BroadcastChannel('walnut-disk');
    // Sets the worker's disk mode; resolves once the worker has it.
    window.setDisk = (mode) =>
      new Promise((resolve) => {
        channel.onmessage = ({ data }) => data.ack === mode && resolve();
        channel.postMessage({ mode });
      });
  }),
);

/**
 * Opens store `name`, fills the disk, runs `other` (the name of a call) beside a strict put of
 * 60 KB in one microtask, frees the disk, and reports what each call did and whether the store
 * holds the put now and after a reopen.
 */
async function strictPutBeside(name, other, mode) {
  return shared.page.evaluate(
    async ({ name, other, mode }) => {
      const { disk, harness } = window;
      let db = await disk.open(name);
      await db.put('seed', 'x');
      await window.setDisk(mode);
      const others = {
        relaxed: () => db.put('B', harness.pattern(40_000, 2), { durability: 'relaxed' }),
        has: () => db.has('B'),
        checkpoint: () => db.checkpoint(),
      };
      const results = await Promise.allSettled([db.put('A', harness.pattern(60_000, 1)), others[other]()]);
      const settled = results.map((r) => (r.status === 'fulfilled' ? 'resolved' : r.reason.name));
      await window.setDisk('off');
      const before = (await db.getBytes('A'))?.length ?? null;
      await db.close();
      db = await disk.open(name);
      const after = (await db.getBytes('A'))?.length ?? null;
      const writable = await db.put('later', 'fits').then(() => 'resolved', (e) => e.name);
      await db.close();
      return { settled, present: { before, after }, writable };
    },
    { name, other, mode },
  );
}

for (const mode of ['throw', 'short', 'absurd']) {
  for (const other of ['relaxed', 'has', 'checkpoint']) {
    test(`a strict put beside ${other} on a full disk (${mode}): resolved means stored, rejected means absent`, async () => {
      const { settled, present, writable } = await strictPutBeside(`ack-${other}-${mode}`, other, mode);
      const [strict, beside] = settled;
      const why = JSON.stringify({ settled, present });
      assert.equal(strict, 'WalnutQuotaExceededError', `the disk was full when A was flushed: ${why}`);
      assert.deepEqual(present, { before: null, after: null }, `A rejected but is there: ${why}`);
      // A read never fails for another call's flush; the others meet the full disk too.
      assert.equal(beside, other === 'has' ? 'resolved' : 'WalnutQuotaExceededError', why);
      assert.equal(writable, 'resolved', 'writes go on once the disk has room');
    });
  }
}

for (const mode of ['throw', 'short', 'absurd']) {
  test(`close() resolves when only its checkpoint meets a full disk (${mode}), and a reopen has every acknowledged write`, async () => {
    const r = await shared.page.evaluate(
      async ({ name, mode }) => {
        const { disk, harness } = window;
        const { pattern, firstDifference, settled } = harness;
        let db = await disk.open(name, { chunkSize: 4096 });
        const values = Array.from({ length: 20 }, (_, i) => pattern(1000 + 997 * i, i + 1));
        for (const [i, value] of values.entries()) await db.put(`k${i}`, value); // strict: acknowledged
        await window.setDisk(mode);
        const closing = db.close(); // its checkpoint cannot be written
        const closed = await settled(closing);
        if (closed === 'pending') {
          db.terminate(); // release the store for the reopen below
          await closing.catch(() => {});
        }
        db = await disk.open(name); // a new worker: its disk is not full
        const differ = [];
        for (const [i, value] of values.entries()) {
          const stored = await db.getBytes(`k${i}`);
          if (!stored || firstDifference(stored, value) !== -1) differ.push(`k${i}`);
        }
        const { records, checkpointsRejected } = db.recovery;
        await db.close();
        return { closed, differ, records, checkpointsRejected };
      },
      { name: `close-full-${mode}`, mode },
    );
    assert.equal(r.closed, 'resolved', `no acknowledged write depends on the closing checkpoint: ${JSON.stringify(r)}`);
    assert.deepEqual(r.differ, [], 'every acknowledged write is there after a reopen');
    // The closing checkpoint was not written: the reopen replayed the 20 puts from the log.
    assert.ok(r.records >= 20, `the log was replayed: ${JSON.stringify(r)}`);
  });

  test(`a streamed put under way when another write meets a full disk (${mode}) rejects with WalnutQuotaExceededError, its old value intact`, async () => {
    const r = await shared.page.evaluate(
      async ({ name, mode }) => {
        const { disk, harness } = window;
        const { pattern, settled } = harness;
        let db = await disk.open(name, { chunkSize: 4096 });
        await db.put('s', 'old');
        let source;
        const slow = new ReadableStream({ start: (controller) => (source = controller) });
        let progressed;
        const firstChunks = new Promise((resolve) => (progressed = resolve));
        const streamed = db.put('s', slow, { onProgress: () => progressed() });
        source.enqueue(pattern(10_000, 1)); // two chunks written, the rest staged
        await firstChunks;
        await window.setDisk(mode);
        const other = await settled(db.put('other', 'x'));
        await window.setDisk('off');
        source.enqueue(pattern(10_000, 2));
        source.close();
        const put = await settled(streamed);
        const before = await (await db.get('s'))?.text();
        await db.close();
        db = await disk.open(name);
        const after = await (await db.get('s'))?.text();
        const open = (await db.stats()).openTransactions;
        await db.close();
        return { other, put, before, after, open };
      },
      { name: `stream-full-${mode}`, mode },
    );
    assert.match(r.other, /^WalnutQuotaExceededError: /, JSON.stringify(r));
    assert.match(r.put, /^WalnutQuotaExceededError: /, JSON.stringify(r));
    assert.deepEqual({ before: r.before, after: r.after, open: r.open }, { before: 'old', after: 'old', open: 0 });
  });
}

test('a strict call that wrote nothing, whose flush fails, rejects: its answer rested on a relaxed write', async () => {
  const r = await shared.page.evaluate(async () => {
    const { disk } = window;
    const db = await disk.open('noop-flush-fails');
    await db.put('k', 'v');
    await db.delete('k', { durability: 'relaxed' }); // written, not flushed
    await window.setDisk('flush');
    const strict = await db.delete('k').then(
      (existed) => `resolved ${existed}`,
      (error) => error.name,
    );
    await window.setDisk('off');
    await db.close().catch(() => {});
    return strict;
  });
  // Resolving false would say "k is absent, durably", which a power cut could take back.
  assert.notEqual(r, 'resolved false');
  assert.match(r, /^Walnut\w+Error$/);
});
