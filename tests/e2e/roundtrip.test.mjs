// Every value type at the sizes around the chunk boundary, read back through get() and
// getStream() and compared byte for byte.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sharedPage } from './helpers.mjs';

const CHUNK = 64 * 1024;

const shared = sharedPage();

test('values of every type and boundary size read back exactly', async () => {
  const report = await shared.page.evaluate(async (chunk) => {
    const { pattern, streamOf, readAll, firstDifference } = window.harness;
    const db = await window.walnut.open('roundtrip', { chunkSize: chunk });
    const sizes = [0, 1, chunk - 1, chunk, chunk + 1, 3 * chunk + 17];
    // Each maker returns [value to put, the bytes it stands for].
    const makers = {
      string: (bytes) => {
        const text = Array.from(bytes, (b) => String.fromCharCode(97 + (b % 26))).join('');
        return [text, new TextEncoder().encode(text)];
      },
      Uint8Array: (bytes) => [bytes.slice(), bytes],
      ArrayBuffer: (bytes) => [bytes.slice().buffer, bytes],
      DataView: (bytes) => {
        const padded = new Uint8Array(bytes.length + 8);
        padded.set(bytes, 3);
        return [new DataView(padded.buffer, 3, bytes.length), bytes];
      },
      Blob: (bytes) => [new Blob([bytes]), bytes],
      ReadableStream: (bytes) => [streamOf(bytes), bytes],
    };
    const failures = [];
    let seed = 1;
    const expected = new Map();
    for (const [type, make] of Object.entries(makers)) {
      for (const size of sizes) {
        const key = `${type}/${size}`;
        const [value, bytes] = make(pattern(size, seed++));
        const progress = [];
        await db.put(key, value, { onProgress: (written, total) => progress.push([written, total]) });
        expected.set(key, bytes);
        const last = progress.at(-1);
        if (!last || last[0] !== bytes.length) failures.push(`${key}: last progress ${JSON.stringify(last)}`);
        const wantTotal = type === 'ReadableStream' ? undefined : bytes.length;
        if (last && last[1] !== wantTotal) failures.push(`${key}: total ${last[1]} != ${wantTotal}`);
      }
    }
    // Multi-byte characters straddling chunk boundaries.
    const euros = '€'.repeat(chunk);
    await db.put('string/utf8', euros);
    expected.set('string/utf8', new TextEncoder().encode(euros));

    for (const [key, bytes] of expected) {
      const blob = await db.get(key);
      if (!(blob instanceof Blob)) {
        failures.push(`${key}: get() gave ${blob}`);
        continue;
      }
      const viaGet = new Uint8Array(await blob.arrayBuffer());
      const viaStream = await readAll(await db.getStream(key));
      for (const [how, got] of [['get', viaGet], ['getStream', viaStream]]) {
        const at = firstDifference(got, bytes);
        if (at >= 0) failures.push(`${key}: ${how} differs at byte ${at} (length ${got.length} vs ${bytes.length})`);
      }
    }
    const sizesListed = Object.fromEntries((await db.entries()).map(({ key, size }) => [key, size]));
    for (const [key, bytes] of expected) {
      if (sizesListed[key] !== bytes.length) failures.push(`${key}: entries() size ${sizesListed[key]}`);
    }
    const text = await (await db.get('string/utf8')).text();
    if (text !== euros) failures.push('string/utf8 does not decode to the original string');
    const stats = await db.stats();
    await db.close();
    return { failures, count: expected.size, stats };
  }, CHUNK);
  assert.deepEqual(report.failures, []);
  assert.equal(report.stats.keys, report.count);
  assert.equal(report.stats.chunkSize, CHUNK);
  assert.equal(report.stats.openTransactions, 0);
  assert.equal(report.stats.pendingCommits, 0);
});

test('byte values are copied: the caller may reuse the buffer at once, and it stays attached', async () => {
  const result = await shared.page.evaluate(async () => {
    const db = await window.walnut.open('copies', { chunkSize: 4096 });
    const small = new Uint8Array([1, 2, 3]);
    const large = window.harness.pattern(20000, 9);
    const original = large.slice();
    const puts = [db.put('small', small), db.put('large', large.buffer)];
    small[0] = 99; // mutations after the call must not reach the store
    large.fill(0);
    await Promise.all(puts);
    const got = {
      small: Array.from(new Uint8Array(await (await db.get('small')).arrayBuffer())),
      largeDiff: window.harness.firstDifference(new Uint8Array(await (await db.get('large')).arrayBuffer()), original),
      attached: large.buffer.byteLength,
    };
    await db.close();
    return got;
  });
  assert.deepEqual(result, { small: [1, 2, 3], largeDiff: -1, attached: 20000 });
});

test('values written with one chunkSize read back exactly under another', async () => {
  const r = await shared.page.evaluate(async () => {
    const { pattern, readAll, firstDifference } = window.harness;
    const small = pattern(20000, 21);
    const large = pattern(300000, 22);
    const before = await window.walnut.open('rechunked', { chunkSize: 4096 });
    await before.put('small', small);
    await before.put('large', large);
    await before.close();
    const after = await window.walnut.open('rechunked', { chunkSize: 65536 });
    const out = {
      small: firstDifference(new Uint8Array(await (await after.get('small')).arrayBuffer()), small),
      large: firstDifference(new Uint8Array(await (await after.get('large')).arrayBuffer()), large),
      largeStream: firstDifference(await readAll(await after.getStream('large')), large),
    };
    await after.close();
    return out;
  });
  assert.deepEqual(r, { small: -1, large: -1, largeStream: -1 });
});
