// Streamed writes in the engine under Node, the sync store and Durable Objects: an abort ends
// them at once even while the source waits (and cancels the source), and memory holds one
// source piece at a time however long the value (the conformance suite checks plain puts).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { pkg, scratch } from './helpers.mjs';

const { open } = await import(`${pkg}node.js`);
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc');

/** A stream that gives `first` and then waits forever; `state.cancelled` once cancelled. */
function stalled(first, state) {
  return new ReadableStream({
    start(controller) {
      controller.enqueue(first);
    },
    cancel() {
      state.cancelled = true;
    },
  });
}

/** How `promise` settled: 'resolved', the error's name, or 'pending' after 10 s (a hang detector). */
async function settled(promise) {
  let timer;
  const outcome = await Promise.race([
    promise.then(
      () => 'resolved',
      (error) => error.name,
    ),
    new Promise((resolve) => (timer = setTimeout(() => resolve('pending'), 10_000))),
  ]);
  clearTimeout(timer);
  return outcome;
}

test("an aborted transaction ends while its tx.put's source waits, and cancels the source", async () => {
  const db = await open(scratch('tx-stall'));
  try {
    const state = {};
    const controller = new AbortController();
    const tx = db.transaction(
      async (t) => {
        await t.put('k', stalled(new Uint8Array(100), state));
      },
      { signal: controller.signal },
    );
    setTimeout(() => controller.abort(), 20);
    assert.equal(await settled(tx), 'AbortError');
    assert.ok(state.cancelled, 'the source was cancelled');
    assert.equal(await db.get('k'), undefined);
    assert.equal((await db.stats()).openTransactions, 0);
  } finally {
    await db.close();
  }
});

test('an aborted import ends while its source waits, cancels the source, and the store imports again', async () => {
  const source = await open(scratch('import-src'));
  await source.put('a', 'x'.repeat(1000));
  const file = new Uint8Array(await new Response(source.export()).arrayBuffer());
  await source.close();
  const db = await open(scratch('import-stall'));
  try {
    const state = {};
    const stream = stalled(file.subarray(0, 100), state);
    const controller = new AbortController();
    const imported = db.import(stream, { signal: controller.signal });
    setTimeout(() => controller.abort(), 20);
    assert.equal(await settled(imported), 'AbortError');
    for (let waited = 0; !state.cancelled && waited < 5000; waited += 10) await new Promise((r) => setTimeout(r, 10));
    assert.ok(state.cancelled, 'the source was cancelled');
    assert.equal(stream.locked, false, 'the source is released');
    assert.deepEqual(await db.import(file), { values: 1, bytes: file.length });
    assert.equal(await db.get('a', { as: 'text' }), 'x'.repeat(1000));
  } finally {
    await db.close();
  }
});

test('an import given up part way (an abort while a piece is written, a chunk that is not bytes) cancels and releases its stream', async () => {
  const source = await open(scratch('import-src2'));
  for (let i = 0; i < 4; i++) await source.put(`k${i}`, new Uint8Array(1 << 20).fill(i));
  const file = new Uint8Array(await new Response(source.export()).arrayBuffer());
  await source.close();
  const streamOf = (state, map = (piece) => piece) => {
    let at = 0;
    return new ReadableStream(
      {
        pull(controller) {
          if (at >= file.length) controller.close();
          else controller.enqueue(map(file.subarray(at, (at += 65536))));
        },
        cancel() {
          state.cancelled = true;
        },
      },
      { highWaterMark: 0 },
    );
  };
  for (const how of ['abort', 'not bytes']) {
    const db = await open(scratch('import-given-up'));
    try {
      const state = {};
      const controller = new AbortController();
      const stream = streamOf(state, how === 'abort' ? undefined : (piece) => (piece.byteOffset > 200_000 ? 'text' : piece));
      const options = {
        signal: controller.signal,
        onProgress: (bytes) => {
          if (how === 'abort' && bytes > 1 << 20) controller.abort();
        },
      };
      assert.equal(await settled(db.import(stream, options)), how === 'abort' ? 'AbortError' : 'WalnutInvalidArgumentError');
      assert.ok(state.cancelled, `${how}: the source was cancelled`);
      assert.equal(stream.locked, false, `${how}: the source is released`);
    } finally {
      await db.close();
    }
  }
});

test('a streamed put holds one source piece at a time (forced collections while 128 MiB streams in)', async () => {
  const db = await open(scratch('piece-memory'));
  try {
    const PIECE = 4 << 20;
    const PIECES = 32;
    let made = 0;
    let peak = 0;
    const stream = new ReadableStream(
      {
        pull(controller) {
          if (made === PIECES) {
            controller.close();
            return;
          }
          if (made % 4 === 0) {
            gc();
            peak = Math.max(peak, process.memoryUsage().arrayBuffers);
          }
          controller.enqueue(new Uint8Array(PIECE).fill(made++ & 0xff));
        },
      },
      { highWaterMark: 0 },
    );
    await db.put('big', stream, { durability: 'relaxed' });
    // Pieces are 4 MiB, so a few are in flight at most; holding every piece until the end
    // (a race per piece against a stopper that never settled did) reaches 124 MiB.
    assert.ok(peak < 32 * 2 ** 20, `array buffers peaked at ${(peak / 2 ** 20).toFixed(1)} MiB`);
    assert.equal((await db.stats()).liveBytes, PIECE * PIECES);
  } finally {
    await db.close();
  }
});
