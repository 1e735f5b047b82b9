// Large values from a disk-backed File (as a user's upload is): crash mid-put, abort, small
// writes interleaving with a large one, and an exact read-back.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { setup } from './helpers.mjs';

const MiB = 1024 * 1024;
const SIZE = 200 * MiB;

let env;
let dir;
let file;

/** Writes `size` bytes: a random MiB, varied per MiB so that misplaced chunks show. */
async function writeBigFile(path, size) {
  const block = randomBytes(MiB);
  const out = createWriteStream(path);
  for (let i = 0; i * MiB < size; i++) {
    const piece = Buffer.from(block.subarray(0, Math.min(MiB, size - i * MiB)));
    piece.writeUInt32LE(i, 0);
    if (!out.write(piece)) await new Promise((resolve) => out.once('drain', resolve));
  }
  await new Promise((resolve, reject) => out.end((error) => (error ? reject(error) : resolve())));
}

/** Opens the test page with the big file chosen in its file input (`window.bigFile`). */
async function pageWithFile() {
  const page = await env.openPage();
  await page.setInputFiles('#file', file);
  await page.evaluate(() => {
    window.bigFile = document.querySelector('#file').files[0];
  });
  return page;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'walnut-e2e-data-'));
  file = join(dir, 'big.bin');
  await writeBigFile(file, SIZE);
  env = await setup();
});
after(async () => {
  await env?.close();
  await rm(dir, { recursive: true, force: true });
});

test('a page closed while a 200 MiB value streams in leaves the old value', async () => {
  const first = await pageWithFile();
  await first.evaluate(async () => {
    const db = await window.walnut.open('crash');
    await db.put('v', 'old value');
    window.written = 0;
    db.put('v', window.bigFile, { onProgress: (bytes) => (window.written = bytes) }).catch(() => {});
  });
  await first.waitForFunction((least) => window.written >= least, 16 * MiB, { polling: 10 });
  const writtenBeforeClose = await first.evaluate(() => window.written);
  assert.ok(writtenBeforeClose < SIZE, 'the put must still be running when the page closes');
  await first.close();

  const second = await env.openPage();
  const r = await second.evaluate(async () => {
    const started = performance.now();
    const db = await window.walnut.open('crash'); // retries while the old worker lets go
    const out = {
      openMs: performance.now() - started,
      value: await (await db.get('v')).text(),
      recovery: db.recovery,
      stats: await db.stats(),
    };
    await db.close();
    return out;
  });
  await second.close();
  assert.equal(r.value, 'old value');
  assert.ok(r.recovery.discarded.length >= 1, `recovery: ${JSON.stringify(r.recovery)}`);
  assert.equal(r.stats.keys, 1);
  assert.equal(r.stats.openTransactions, 0);
});

test('aborting a streaming put keeps the old value and rejects with the signal reason', async () => {
  const page = await pageWithFile();
  const r = await page.evaluate(async () => {
    const db = await window.walnut.open('abort');
    await db.put('v', 'old value');
    const controller = new AbortController();
    const reason = new Error('changed my mind');
    let abortedAt = 0;
    const progress = (bytes) => {
      if (bytes >= 8 * 1024 * 1024 && !controller.signal.aborted) {
        abortedAt = bytes;
        controller.abort(reason);
      }
    };
    let outcome;
    try {
      await db.put('v', window.bigFile, { signal: controller.signal, onProgress: progress });
      outcome = 'resolved';
    } catch (error) {
      outcome = error === reason ? 'rejected with the reason' : `rejected with ${error}`;
    }
    const preAborted = await db.put('v', 'never', { signal: AbortSignal.abort(reason) }).catch((e) => e === reason);
    const out = {
      outcome,
      abortedAt,
      preAborted,
      value: await (await db.get('v')).text(),
      stats: await db.stats(),
    };
    await db.close();
    return out;
  });
  await page.close();
  assert.equal(r.outcome, 'rejected with the reason');
  assert.ok(r.abortedAt > 0 && r.abortedAt < 200 * MiB);
  assert.equal(r.preAborted, true);
  assert.equal(r.value, 'old value');
  assert.equal(r.stats.openTransactions, 0);
});

test('small puts complete while a 200 MiB put streams, and the value reads back exactly', async () => {
  const page = await pageWithFile();
  const r = await page.evaluate(async () => {
    const { compareStreams } = window.harness;
    const db = await window.walnut.open('interleave');
    let bigDone = false;
    const started = performance.now();
    const big = db.put('big', window.bigFile).then(() => {
      bigDone = true;
    });
    let smallDone = 0;
    let issued = 0;
    let slowest = 0;
    for (; !bigDone && issued < 100000; issued++) {
      const i = issued;
      const t = performance.now();
      await db.put(`small/${i}`, `value ${i}`);
      slowest = Math.max(slowest, performance.now() - t);
      if (!bigDone) smallDone++;
    }
    await big;
    const bigMs = performance.now() - started;
    const entries = await db.entries({ prefix: 'big' });
    const streamDiff = await compareStreams(await db.getStream('big'), window.bigFile.stream());
    const blob = await db.get('big');
    const blobDiff = await compareStreams(blob.stream(), window.bigFile.stream());
    const out = { smallDone, issued, slowest, bigMs, entries, streamDiff, blobSize: blob.size, blobDiff };
    out.smallKeys = (await db.keys({ prefix: 'small/' })).length;
    await db.close();
    return out;
  });
  await page.close();
  console.log(
    `200 MiB put: ${r.bigMs.toFixed(0)} ms (${((200 / r.bigMs) * 1000).toFixed(0)} MiB/s); ` +
      `${r.smallDone} small puts meanwhile, slowest ${r.slowest.toFixed(1)} ms`,
  );
  assert.ok(r.smallDone > 0, 'no small put completed while the large one streamed');
  assert.equal(r.smallKeys, r.issued, 'every small put landed');
  assert.deepEqual(r.entries, [{ key: 'big', size: SIZE }]);
  assert.equal(r.streamDiff, -1, 'getStream() differs from the file');
  assert.equal(r.blobSize, SIZE);
  assert.equal(r.blobDiff, -1, 'get() differs from the file');
});

test('terminate() in the middle of a batch: after reopening none of it is visible', async () => {
  const page = await env.openPage();
  const r = await page.evaluate(async () => {
    const { open } = window.walnut;
    const db = await open('atomic', { chunkSize: 4096 });
    await db.put('a', 'before');
    let sent = 0;
    const endless = new ReadableStream({
      pull(controller) {
        sent += 4096;
        controller.enqueue(new Uint8Array(4096).fill(7));
        return new Promise((resolve) => setTimeout(resolve, 1));
      },
    });
    let written = 0;
    const batch = db
      .batch(
        [
          { type: 'put', key: 'a', value: 'after' },
          { type: 'put', key: 'b', value: endless },
        ],
        { onProgress: (bytes) => (written = bytes) },
      )
      .catch((error) => error.name);
    while (written < 64 * 1024) await new Promise((resolve) => setTimeout(resolve, 5));
    db.terminate();
    const batchOutcome = await batch;
    const reopened = await open('atomic');
    const out = {
      batchOutcome,
      a: await (await reopened.get('a')).text(),
      b: await reopened.has('b'),
      sentSome: sent > 0,
    };
    await reopened.close();
    return out;
  });
  await page.close();
  assert.deepEqual(r, { batchOutcome: 'WalnutClosedError', a: 'before', b: false, sentSome: true });
});

test('a 200 MiB put from a disk-backed File, and its read back with a BYOB reader, complete byte for byte under repeated forced GC, from the page and the sync store', async () => {
  // The Blob is read through a BYOB reader into one lent buffer (www/worker.js writeLent);
  // a BYOB variant once hung under forced GC. Collect garbage in the page and its workers
  // every 20 ms while the put runs, then read the value back through a BYOB reader (the
  // chunks' buffers going back to the worker: walnut.js getStream).
  const { memoryProbe } = await import('../../bench/memory.mjs');
  const page = await pageWithFile();
  const probe = await memoryProbe(env.context, page);
  // Two puts: through the page (its worker reads the Blob) and through the sync store in a
  // dedicated worker of the page's own (www/engine.js reads the Blob), the one that hung.
  await page.evaluate(() => {
    const worker = new Worker('/tests/e2e/fixtures/sync-worker.js', { type: 'module' });
    let next = 1;
    const waiting = new Map();
    worker.onmessage = ({ data }) => waiting.get(data.id)?.(data);
    window.syncWorker = (cmd, ...args) =>
      new Promise((resolve, reject) => {
        const id = next++;
        waiting.set(id, (data) => (data.error ? reject(new Error(data.error)) : resolve(data.value)));
        worker.postMessage({ id, cmd, args });
      });
  });
  let collecting = true;
  let collections = 0;
  const collector = (async () => {
    while (collecting) {
      await probe.collectGarbage();
      collections++;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();
  try {
    const r = await page.evaluate(async () => {
      const db = await window.walnut.open(`gc-${Date.now()}`);
      await db.put('v', window.bigFile);
      const difference = await window.harness.compareStreams(await db.getStream('v'), window.bigFile.stream(), { byob: 1 << 20 });
      const size = (await db.entries())[0].size;
      await db.close();
      const { syncWorker } = window;
      await syncWorker('open', `gc-sync-${Date.now()}`);
      await syncWorker('putStream', 'v', window.bigFile);
      const syncDifference = await syncWorker('compare', 'v', window.bigFile);
      await syncWorker('close');
      return { difference, size, syncDifference };
    });
    assert.equal(r.size, SIZE);
    assert.equal(r.difference, -1, `the value read back differs at ${r.difference}`);
    assert.equal(r.syncDifference, -1, `the sync store's value read back differs at ${r.syncDifference}`);
  } finally {
    collecting = false;
    await collector;
    await probe.close();
    await page.close();
  }
  assert.ok(collections > 10, `garbage was collected ${collections} times during the put`);
});
