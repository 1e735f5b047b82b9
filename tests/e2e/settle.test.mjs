// No call left hanging, no resource kept: close() settles even behind a stream that never
// ends, every stream walnut was handed is cancelled when its call ends without reading it to
// the end, staging memory is bounded however many Blob and stream puts run at once, and a long
// streamed upload keeps rotating segments.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sharedPage } from './helpers.mjs';

const shared = sharedPage();

test('close() aborts streamed puts whose source never ends, keeps their old values, and settles', async () => {
  const r = await shared.page.evaluate(async () => {
    const { open } = window.walnut;
    const db = await open('close-never-ends', { chunkSize: 4096 });
    await db.put('k', 'old k');
    await db.put('j', 'old j');
    const inProgress = window.harness.tracked(new Uint8Array(5000));
    let progressed;
    const firstChunk = new Promise((resolve) => (progressed = resolve));
    // Under way: a first chunk is in the log when close() comes.
    const { settled, tracked } = window.harness;
    const running = settled(db.put('k', inProgress.stream, { onProgress: progressed }));
    const queuedSource = tracked();
    const queued = settled(db.put('k', queuedSource.stream)); // behind `running`, never read
    const bytesAfter = settled(db.put('k', 'after')); // all its data in hand: close() lets it finish
    const otherSource = tracked(new Uint8Array(10));
    const otherKey = settled(db.put('j', otherSource.stream));
    await firstChunk;
    const closing = db.close();
    const out = {
      close: await settled(closing),
      running: await running,
      queued: await queued,
      bytesAfter: await bytesAfter,
      otherKey: await otherKey,
      cancelled: [await inProgress.wasCancelled(), await queuedSource.wasCancelled(), await otherSource.wasCancelled()],
    };
    if (out.close === 'pending') {
      db.terminate(); // release the store for the reopen below
      await closing.catch(() => {});
    }
    const reopened = await open('close-never-ends');
    out.k = await (await reopened.get('k')).text();
    out.j = await (await reopened.get('j')).text();
    out.open = (await reopened.stats()).openTransactions;
    await reopened.close();
    return out;
  });
  assert.equal(r.close, 'resolved', `close() must settle: ${JSON.stringify(r)}`);
  assert.match(r.running, /^WalnutClosedError: /);
  assert.match(r.queued, /^WalnutClosedError: /);
  assert.match(r.otherKey, /^WalnutClosedError: /);
  assert.equal(r.bytesAfter, 'resolved');
  assert.deepEqual(r.cancelled, ['cancelled', 'cancelled', 'cancelled'], 'the aborted puts cancelled their streams');
  assert.equal(r.k, 'after', 'the bytes put after the aborted streams applied');
  assert.equal(r.j, 'old j', 'the aborted stream left the old value');
  assert.equal(r.open, 0);
});

test('a stream handed to put or batch is cancelled when the call ends without reading it to the end', async () => {
  const r = await shared.page.evaluate(async () => {
    const { open } = window.walnut;
    const { tracked, settled } = window.harness;
    const db = await open('cancel-streams', { chunkSize: 4096 });
    const out = {};

    // Aborted while queued behind an earlier write to the same key.
    let release;
    const earlier = db.put('q', new ReadableStream({
      start(controller) {
        controller.enqueue(new Uint8Array(100));
        release = () => controller.close();
      },
    }));
    const queued = tracked();
    const controller = new AbortController();
    const aborted = db.put('q', queued.stream, { signal: controller.signal });
    controller.abort(new Error('no longer wanted'));
    out.queuedCall = await settled(aborted);
    out.queued = await queued.wasCancelled();
    release();
    out.earlier = await settled(earlier);

    // A batch failing on an earlier operation: the later stream is never read.
    const later = tracked();
    const failing = new ReadableStream({
      pull(c) {
        c.error(new TypeError('the network went away'));
      },
    });
    out.batchCall = await settled(db.batch([
      { type: 'put', key: 'b1', value: failing },
      { type: 'put', key: 'b2', value: later.stream },
    ]));
    out.batch = await later.wasCancelled();

    // A batch refused for a bad argument: nothing is sent, the stream is still cancelled.
    const refused = tracked();
    out.refusedCall = await settled(db.batch([
      { type: 'put', key: 'ok', value: refused.stream },
      { type: 'put', key: '', value: 'x' },
    ]));
    out.refused = await refused.wasCancelled();

    // A signal aborted already.
    const preAborted = tracked();
    out.preAbortedCall = await settled(db.put('p', preAborted.stream, { signal: AbortSignal.abort(new Error('early')) }));
    out.preAborted = await preAborted.wasCancelled();

    // After close().
    await db.close();
    const afterClose = tracked();
    out.afterCloseCall = await settled(db.put('c', afterClose.stream));
    out.afterClose = await afterClose.wasCancelled();

    // After terminate(), for a put issued in the same microtask (not yet sent).
    const other = await open('cancel-streams-terminated');
    const unsent = tracked();
    const unsentCall = other.put('t', unsent.stream);
    other.terminate();
    out.unsentCall = await settled(unsentCall);
    out.unsent = await unsent.wasCancelled();
    return out;
  });
  const why = JSON.stringify(r);
  assert.deepEqual(
    { queued: r.queued, batch: r.batch, refused: r.refused, preAborted: r.preAborted, afterClose: r.afterClose, unsent: r.unsent },
    { queued: 'cancelled', batch: 'cancelled', refused: 'cancelled', preAborted: 'cancelled', afterClose: 'cancelled', unsent: 'cancelled' },
    why,
  );
  // An aborted write waiting behind another settles at once, without waiting for it.
  assert.equal(r.queuedCall, 'Error: no longer wanted', why);
  assert.equal(r.earlier, 'resolved', why);
  assert.match(r.batchCall, /^WalnutIoError: .*the network went away/, why);
  assert.match(r.refusedCall, /^WalnutInvalidArgumentError: operations\[1\]\.key/, why);
  assert.equal(r.preAbortedCall, 'Error: early', why);
  assert.match(r.afterCloseCall, /^WalnutClosedError: /, why);
  assert.match(r.unsentCall, /^WalnutClosedError: /, why);
});

test('500 parallel small Blob puts and 50 small stream puts with 64 MiB chunks all succeed', async () => {
  const r = await shared.page.evaluate(async () => {
    const { open } = window.walnut;
    const db = await open('staging-bound', { chunkSize: 64 * 1024 * 1024 });
    const blobs = Array.from({ length: 500 }, (_, i) => db.put(`blob${i}`, new Blob([`value ${i}`.padEnd(16)])));
    const streams = Array.from({ length: 50 }, (_, i) =>
      db.put(`stream${i}`, new Blob([`streamed ${i}`]).stream()),
    );
    const results = await Promise.allSettled([...blobs, ...streams]);
    const failures = results.filter((s) => s.status === 'rejected').map((s) => `${s.reason.name}: ${s.reason.message}`);
    const out = {
      failed: failures.length,
      firstFailure: failures[0] ?? null,
      keys: (await db.keys()).length,
      blob7: await (await db.get('blob7'))?.text(),
      stream7: await (await db.get('stream7'))?.text(),
    };
    await db.close();
    return out;
  });
  assert.deepEqual(r, { failed: 0, firstFailure: null, keys: 550, blob7: 'value 7'.padEnd(16), stream7: 'streamed 7' });
});

test('a long streamed upload keeps rotating segments: no segment grows past segmentSize plus one chunk', async (t) => {
  const MiB = 1024 * 1024;
  const r = await shared.page.evaluate(async (MiB) => {
    const { open } = window.walnut;
    const segmentSize = MiB;
    const chunkSize = 64 * 1024;
    const total = 96 * MiB;
    const db = await open('long-upload', { segmentSize, chunkSize, compactionRatio: 1 });
    // Generated as it is read (an upload from the network): never a giant Blob in memory.
    let produced = 0;
    const upload = new ReadableStream({
      pull(controller) {
        if (produced >= total) {
          controller.close();
          return;
        }
        const piece = new Uint8Array(Math.min(100_000, total - produced)).fill(produced & 255);
        produced += piece.length;
        controller.enqueue(piece);
      },
    });
    await db.put('upload', upload);
    const stats = await db.stats();
    await db.close(); // releases the sync handles: the files' sizes can be read
    const root = await navigator.storage.getDirectory();
    const dir = await (await root.getDirectoryHandle('walnut')).getDirectoryHandle('long-upload');
    const files = [];
    for await (const [name, handle] of dir.entries()) {
      if (handle.kind === 'file') files.push({ name, size: (await handle.getFile()).size });
    }
    files.sort((a, b) => b.size - a.size);
    return { segmentSize, chunkSize, total, segments: stats.segments, logBytes: stats.logBytes, liveBytes: stats.liveBytes, largest: files.slice(0, 3), count: files.length };
  }, MiB);
  const why = JSON.stringify(r);
  t.diagnostic(`segments ${r.segments}, largest files ${r.largest.map((f) => f.size).join(', ')} bytes`);
  assert.equal(r.liveBytes, r.total, why);
  assert.ok(r.segments >= r.total / r.segmentSize, `segments: ${why}`);
  // A record never splits: a segment may pass segmentSize by one record (a chunk and its
  // 36-byte header) at most; a little more for the transaction's small records.
  const bound = r.segmentSize + r.chunkSize + 4096;
  assert.ok(r.largest[0].size <= bound, `largest file ${r.largest[0].size} > ${bound}: ${why}`);
});
