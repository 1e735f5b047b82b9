// Semantics of the store's methods, key forms and ordering, errors, and persistence.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sharedPage } from './helpers.mjs';

const shared = sharedPage();

test('get, getStream, has and delete', async () => {
  const r = await shared.page.evaluate(async () => {
    const { readAll, caught } = window.harness;
    const db = await window.walnut.open('basics');
    await db.put('k', 'value');
    const out = {
      has: await db.has('k'),
      text: await (await db.get('k')).text(),
      streamed: new TextDecoder().decode(await readAll(await db.getStream('k'))),
      deleted: await db.delete('k'),
      deletedAgain: await db.delete('k'),
      hasAfter: await db.has('k'),
      getAfter: String(await db.get('k')),
      streamAfter: String(await db.getStream('k')),
      missing: String(await db.get('never')),
    };
    // A stream reads the value as it was when getStream() resolved.
    await db.put('snap', 'old');
    const stream = await db.getStream('snap');
    await db.put('snap', 'new');
    out.snapshot = new TextDecoder().decode(await readAll(stream));
    out.current = await (await db.get('snap')).text();
    // Cancelling a stream early is fine, and the store goes on.
    await db.put('long', new Uint8Array(5 * 1024 * 1024));
    const early = await db.getStream('long');
    const reader = early.getReader();
    out.firstChunk = (await reader.read()).value.length;
    await reader.cancel();
    out.afterCancel = await db.has('long');
    await db.close();
    out.closedGet = await caught(db.get('k'));
    return out;
  });
  assert.equal(r.closedGet.name, 'WalnutClosedError');
  delete r.closedGet;
  assert.deepEqual(r, {
    has: true,
    text: 'value',
    streamed: 'value',
    deleted: true,
    deletedAgain: false,
    hasAfter: false,
    getAfter: 'undefined',
    streamAfter: 'undefined',
    missing: 'undefined',
    snapshot: 'old',
    current: 'new',
    firstChunk: 1024 * 1024,
    afterCancel: true,
  });
});

test('a stream reads chunks ahead; a store closed meanwhile still delivers what was on its way', async () => {
  const r = await shared.page.evaluate(async () => {
    const { readAll } = window.harness;
    const chunk = 4096;
    const value = (n) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + n) & 255);
    const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
    const db = await window.walnut.open('read-ahead', { chunkSize: chunk });
    // Whole chunks and a short tail, exactly whole chunks, one chunk, nothing: read back whole.
    const sizes = [5 * chunk + 100, 3 * chunk, chunk, 1];
    for (const n of sizes) await db.put(`v${n}`, value(n));
    const intact = [];
    for (const n of sizes) intact.push(same(await readAll(await db.getStream(`v${n}`)), value(n)));
    // Cancelled with a read ahead in flight: the store goes on, streams included.
    const early = (await db.getStream(`v${sizes[0]}`)).getReader();
    const first = (await early.read()).value.length;
    await early.cancel();
    const afterCancel = same(await readAll(await db.getStream(`v${sizes[0]}`)), value(sizes[0]));
    // close() while the stream's first read is under way: that chunk was asked for before
    // close(), so it is delivered; the next read fails by name.
    const stream = await db.getStream(`v${chunk}`);
    const closing = db.close();
    const reader = stream.getReader();
    const got = await reader.read().then((x) => x.value?.length, (e) => e.name);
    const next = await reader.read().then((x) => (x.done ? 'done' : x.value.length), (e) => e.name);
    await closing;
    return { intact, first, afterCancel, got, next };
  });
  assert.deepEqual(r.intact, [true, true, true, true]);
  assert.equal(r.first, 4096);
  assert.ok(r.afterCancel);
  assert.equal(r.got, 4096, 'the chunk asked for before close() arrives');
  assert.ok(r.next === 'WalnutClosedError' || r.next === 'done', r.next);
});

test('a stream read with a BYOB reader fills the caller\'s buffers of any size, and hands the chunks\' buffers back to the worker', async () => {
  const r = await shared.page.evaluate(async () => {
    const { readAll } = window.harness;
    const chunk = 4096;
    const n = 10 * chunk + 123;
    const value = Uint8Array.from({ length: n }, (_, i) => (i * 13 + 5) & 255);
    const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
    // Buffers the page hands the worker with its read requests (postMessage's transfer list).
    const handedBack = [];
    const post = Worker.prototype.postMessage;
    Worker.prototype.postMessage = function (message, transfer) {
      for (const request of message?.requests ?? []) {
        if (request.op === 'read') handedBack.push(request.buffer?.byteLength ?? 0);
      }
      return post.call(this, message, transfer);
    };
    const db = await window.walnut.open('byob', { chunkSize: chunk });
    await db.put('v', value);
    await db.put('whole', value.subarray(0, 3 * chunk));
    // Reads into views of `size` bytes, one buffer reused throughout.
    const { readByob: byob } = await import('/tests/conformance/suite.mjs');
    const sizes = [1000, chunk, chunk + 1, 3 * chunk];
    const intact = [];
    for (const size of sizes) {
      handedBack.length = 0;
      const { all, reads } = await byob(await db.getStream('v'), size);
      intact.push({ size, same: same(all, value), reads, handedBack: handedBack.filter((b) => b >= chunk).length });
    }
    // Exactly whole chunks: the end is found by a read that returns nothing.
    const whole = same((await byob(await db.getStream('whole'), chunk)).all, value.subarray(0, 3 * chunk));
    const empty = await db.put('empty', new Uint8Array(0)).then(async () => (await byob(await db.getStream('empty'), 10)).reads);
    // A default reader still gets the chunks themselves, and nothing is handed back.
    handedBack.length = 0;
    const viaDefault = same(await readAll(await db.getStream('v')), value);
    const defaultHandedBack = handedBack.filter((b) => b > 0).length;
    // Cancelled halfway through a BYOB read: the store goes on.
    const half = (await db.getStream('v')).getReader({ mode: 'byob' });
    await half.read(new Uint8Array(chunk));
    await half.cancel();
    const afterCancel = same((await byob(await db.getStream('v'), 777)).all, value);
    Worker.prototype.postMessage = post;
    await db.close();
    return { intact, whole, empty, viaDefault, defaultHandedBack, afterCancel };
  });
  for (const { size, same, reads, handedBack } of r.intact) {
    assert.ok(same, `read with views of ${size} bytes`);
    // A view never takes more than one chunk: ceil(chunk / size) reads per chunk.
    assert.equal(reads, 10 * Math.ceil(4096 / Math.min(size, 4096)) + Math.ceil(123 / Math.min(size, 4096)), `reads with views of ${size} bytes`);
    // 11 reads, the first three before any chunk came back (two of them read ahead); the
    // last (which finds the end) may find none back yet.
    assert.ok(handedBack >= 7, `views of ${size} bytes: ${handedBack} of 12 reads handed a buffer back`);
  }
  assert.ok(r.whole);
  assert.equal(r.empty, 0);
  assert.ok(r.viaDefault);
  assert.equal(r.defaultHandedBack, 0);
  assert.ok(r.afterCancel);
});

test('keys sort bytewise and keep the form they were put with', async () => {
  const r = await shared.page.evaluate(async () => {
    const db = await window.walnut.open('ordering');
    const show = (keys) => keys.map((k) => (typeof k === 'string' ? k : `bytes:${Array.from(k).join(',')}`));
    // In UTF-16 order '\uffff' sorts after '😀'; in UTF-8 (EF BF BF < F0 9F 98 80) before it.
    for (const key of ['b', 'a', 'ab', 'é', '\uffff', '😀', new Uint8Array([0]), new Uint8Array([0xff])]) {
      await db.put(key, 'x');
    }
    const out = { all: show(await db.keys()) };
    // The same bytes as a string and as bytes are one key; keys() reports the last form put.
    await db.put(new Uint8Array([0x61]), 'from bytes');
    out.aAsBytes = show(await db.keys({ limit: 2 }));
    out.aValue = await (await db.get('a')).text();
    await db.put('a', 'from string');
    out.aAsString = show(await db.keys({ limit: 2 }));
    out.viaBytes = await (await db.get(new Uint8Array([0x61]))).text();
    await db.close();
    return out;
  });
  assert.deepEqual(r.all, ['bytes:0', 'a', 'ab', 'b', 'é', '\uffff', '😀', 'bytes:255']);
  assert.deepEqual(r.aAsBytes, ['bytes:0', 'bytes:97']);
  assert.equal(r.aValue, 'from bytes');
  assert.deepEqual(r.aAsString, ['bytes:0', 'a']);
  assert.equal(r.viaBytes, 'from string');
});

test('keys() and entries() ranges: prefix, start, end, limit, reverse', async () => {
  const r = await shared.page.evaluate(async () => {
    const db = await window.walnut.open('ranges');
    for (const key of ['user/1', 'user/2', 'user/3', 'users', 'v', 'u']) await db.put(key, key.repeat(2));
    const out = {
      prefix: await db.keys({ prefix: 'user/' }),
      range: await db.keys({ start: 'user/2', end: 'users' }),
      startOnly: await db.keys({ start: 'users' }),
      endOnly: await db.keys({ end: 'user/2' }),
      limit: await db.keys({ limit: 2 }),
      reverse: await db.keys({ reverse: true }),
      reverseLimit: await db.keys({ reverse: true, limit: 2 }),
      prefixReverseLimit: await db.keys({ prefix: 'user/', reverse: true, limit: 2 }),
      bytesPrefix: await db.keys({ prefix: new TextEncoder().encode('user') }),
      zeroLimit: await db.keys({ limit: 0 }),
      entries: await db.entries({ prefix: 'user/', limit: 1 }),
    };
    await db.close();
    return out;
  });
  assert.deepEqual(r.prefix, ['user/1', 'user/2', 'user/3']);
  assert.deepEqual(r.range, ['user/2', 'user/3']);
  assert.deepEqual(r.startOnly, ['users', 'v']);
  assert.deepEqual(r.endOnly, ['u', 'user/1']);
  assert.deepEqual(r.limit, ['u', 'user/1']);
  assert.deepEqual(r.reverse, ['v', 'users', 'user/3', 'user/2', 'user/1', 'u']);
  assert.deepEqual(r.reverseLimit, ['v', 'users']);
  assert.deepEqual(r.prefixReverseLimit, ['user/3', 'user/2']);
  assert.deepEqual(r.bytesPrefix, ['user/1', 'user/2', 'user/3', 'users']);
  assert.deepEqual(r.zeroLimit, []);
  assert.deepEqual(r.entries, [{ key: 'user/1', size: 12 }]);
});

test('batch applies puts and deletes of any value type together', async () => {
  const r = await shared.page.evaluate(async () => {
    const { pattern, streamOf, readAll, firstDifference, caught } = window.harness;
    const db = await window.walnut.open('batch', { chunkSize: 4096 });
    await db.put('gone', 'soon deleted');
    const big = pattern(50000, 3);
    const progress = [];
    const result = await db.batch(
      [
        { type: 'put', key: 'text', value: 'hello' },
        { type: 'put', key: new Uint8Array([1, 2]), value: new Uint8Array([7, 8, 9]) },
        { type: 'put', key: 'blob', value: new Blob([big]) },
        { type: 'put', key: 'stream', value: streamOf(big) },
        { type: 'delete', key: 'gone' },
      ],
      { onProgress: (written, total) => progress.push([written, total]) },
    );
    const out = {
      result: JSON.stringify(result),
      keys: (await db.keys()).map(String),
      text: await (await db.get('text')).text(),
      bytes: Array.from(await readAll(await db.getStream(new Uint8Array([1, 2])))),
      blob: firstDifference(await readAll(await db.getStream('blob')), big),
      stream: firstDifference(await readAll(await db.getStream('stream')), big),
      gone: await db.has('gone'),
      lastProgress: progress.at(-1),
      empty: String(await db.batch([])),
      oneDelete: JSON.stringify(await db.batch([{ type: 'delete', key: 'text' }])),
    };
    // An invalid operation fails the whole batch before anything is written.
    out.invalid = await caught(
      db.batch([
        { type: 'put', key: 'never', value: 'x' },
        { type: 'put', key: '', value: 'x' },
      ]),
    );
    out.badType = await caught(db.batch([{ type: 'upsert', key: 'k', value: 'x' }]));
    out.notArray = await caught(db.batch('nope'));
    out.neverWritten = await db.has('never');
    const stats = await db.stats();
    out.stats = { keys: stats.keys, liveBytes: stats.liveBytes, open: stats.openTransactions };
    await db.close();
    return out;
  });
  assert.equal(r.result, '[{"table":"","first":2,"last":6}]', 'the sequence numbers the batch took');
  assert.deepEqual(r.keys, ['1,2', 'blob', 'stream', 'text']);
  assert.equal(r.text, 'hello');
  assert.deepEqual(r.bytes, [7, 8, 9]);
  assert.equal(r.blob, -1);
  assert.equal(r.stream, -1);
  assert.equal(r.gone, false);
  assert.deepEqual(r.lastProgress, [5 + 3 + 50000 + 50000, undefined]); // total unknown: a stream is in it
  assert.equal(r.empty, 'undefined');
  assert.equal(r.oneDelete, '[{"table":"","first":7,"last":7}]', "a one-delete batch: its number, not delete()'s boolean");
  assert.equal(r.invalid.name, 'WalnutInvalidArgumentError');
  assert.match(r.invalid.message, /operations\[1\]\.key/);
  assert.equal(r.badType.name, 'WalnutInvalidArgumentError');
  assert.match(r.badType.message, /operations\[0\]\.type/);
  assert.equal(r.notArray.name, 'WalnutInvalidArgumentError');
  assert.equal(r.neverWritten, false);
  assert.deepEqual(r.stats, { keys: 3, liveBytes: 3 + 50000 + 50000, open: 0 });
});

test('writes to one key apply in call order, relaxed and strict alike', async () => {
  const r = await shared.page.evaluate(async () => {
    const db = await window.walnut.open('order', { chunkSize: 4096 });
    const big = new Blob([window.harness.pattern(300000, 5)]);
    // Not awaited in between: the Blob put streams for a while, the later small put must still win.
    const a = db.put('k', big);
    const b = db.put('k', 'last');
    await Promise.all([a, b]);
    const out = { afterBlob: await (await db.get('k')).text() };
    const c = db.put('m', 'strict first', { durability: 'strict' });
    const d = db.put('m', 'relaxed second', { durability: 'relaxed' });
    await Promise.all([c, d]);
    out.mixed = await (await db.get('m')).text();
    const e = db.put('n', new Blob(['streamed']));
    const f = db.delete('n');
    out.deleteAfterBlob = await f;
    await e;
    out.nAfter = await db.has('n');
    await db.close();
    return out;
  });
  assert.deepEqual(r, { afterBlob: 'last', mixed: 'relaxed second', deleteAfterBlob: true, nAfter: false });
});

test('requests of one microtask travel in one message; strict writes issued together are acknowledged together', async () => {
  const r = await shared.page.evaluate(async () => {
    const sent = [];
    const received = [];
    const { postMessage } = Worker.prototype;
    const onmessage = Object.getOwnPropertyDescriptor(Worker.prototype, 'onmessage');
    Worker.prototype.postMessage = function (message, transfer) {
      sent.push(message.type === 'requests' ? message.requests.length : message.type);
      return postMessage.call(this, message, transfer);
    };
    Object.defineProperty(Worker.prototype, 'onmessage', {
      configurable: true,
      get: onmessage.get,
      set(handler) {
        onmessage.set.call(this, (event) => {
          received.push(event.data.results ? event.data.results.length : event.data.type);
          handler(event);
        });
      },
    });
    try {
      const db = await window.walnut.open('grouped');
      await Promise.all(Array.from({ length: 100 }, (_, i) => db.put(`k${i}`, `value ${i}`)));
      await db.has('k1');
      await db.close();
    } finally {
      Worker.prototype.postMessage = postMessage;
      Object.defineProperty(Worker.prototype, 'onmessage', onmessage);
    }
    return { sent, received };
  });
  assert.deepEqual(r.sent, ['open', 100, 1, 1]);
  assert.deepEqual(r.received, ['opened', 100, 1, 1]);
});

test('strict writes that resolved survive a killed worker', async () => {
  const r = await shared.page.evaluate(async () => {
    const { open } = window.walnut;
    const db = await open('durable');
    const puts = Array.from({ length: 300 }, (_, i) => db.put(`k${i}`, `value ${i}`));
    puts.push(db.batch([{ type: 'put', key: 'b1', value: '1' }, { type: 'put', key: 'b2', value: new Blob(['2']) }]));
    await Promise.all(puts);
    db.terminate(); // no close(): only what was flushed before the promises resolved can survive
    const reopened = await open('durable');
    const out = {
      keys: (await reopened.keys()).length,
      last: await (await reopened.get('k299')).text(),
      b2: await (await reopened.get('b2')).text(),
      pending: (await reopened.stats()).pendingCommits,
    };
    await reopened.close();
    return out;
  });
  assert.deepEqual(r, { keys: 302, last: 'value 299', b2: '2', pending: 0 });
});

test('close() lets a streaming put that is under way finish first', async () => {
  const r = await shared.page.evaluate(async () => {
    const { open } = window.walnut;
    const db = await open('close-waits', { chunkSize: 4096 });
    const value = window.harness.pattern(2 * 1024 * 1024, 4);
    const put = db.put('big', new Blob([value]));
    await db.close();
    const putOutcome = await put.then(() => 'resolved', (error) => error.name);
    const reopened = await open('close-waits');
    const stored = await window.harness.readAll(await reopened.getStream('big'));
    await reopened.close();
    return { putOutcome, diff: window.harness.firstDifference(stored, value) };
  });
  assert.deepEqual(r, { putOutcome: 'resolved', diff: -1 });
});

test('a value stream that fails, or yields no bytes, fails the put and keeps the old value', async () => {
  const r = await shared.page.evaluate(async () => {
    const db = await window.walnut.open('bad-streams', { chunkSize: 4096 });
    await db.put('k', 'old');
    let sent = 0;
    const failing = new ReadableStream({
      pull(controller) {
        if (sent++ < 3) controller.enqueue(new Uint8Array(3000));
        else controller.error(new TypeError('the network went away'));
      },
    });
    const texts = new ReadableStream({
      start(controller) {
        controller.enqueue('not bytes');
        controller.close();
      },
    });
    const out = {
      failing: await db.put('k', failing).catch((e) => `${e.name}: ${e.message}`),
      texts: await db.put('k', texts).catch((e) => `${e.name}: ${e.message}`),
      value: await (await db.get('k')).text(),
      open: (await db.stats()).openTransactions,
    };
    await db.close();
    return out;
  });
  assert.match(r.failing, /^WalnutIoError: .*TypeError: the network went away/);
  assert.equal(r.texts, 'WalnutInvalidArgumentError: value: the stream yielded a string, not bytes');
  assert.equal(r.value, 'old');
  assert.equal(r.open, 0);
});

test('stats() counts keys and bytes', async () => {
  const s = await shared.page.evaluate(async () => {
    const db = await window.walnut.open('stats', { chunkSize: 8192 });
    await db.put('a', new Uint8Array(100));
    await db.put('b', new Uint8Array(20000));
    await db.put('c', 'xyz', { durability: 'relaxed' });
    await db.delete('c');
    const stats = await db.stats();
    await db.close();
    return stats;
  });
  assert.equal(s.keys, 2);
  assert.equal(s.liveBytes, 20100);
  assert.equal(s.chunkSize, 8192);
  assert.equal(s.openTransactions, 0);
  assert.equal(s.pendingCommits, 0);
  assert.equal(s.poisoned, false);
  assert.ok(s.logBytes > 20100, `logBytes ${s.logBytes}`);
  assert.ok(s.nextLsn > 0);
});

test('stats().flushes: strict writes issued together share one flush, awaited ones take one each, a strict duplicate one', async () => {
  const r = await shared.page.evaluate(async () => {
    const db = await window.walnut.open('flushes');
    const flushes = async () => (await db.stats()).flushes;
    const start = await flushes();
    await Promise.all(Array.from({ length: 100 }, (_, i) => db.put(`k${i}`, `value ${i}`)));
    const together = (await flushes()) - start;
    for (let i = 0; i < 5; i++) await db.put(`a${i}`, 'x');
    const awaited = (await flushes()) - start - together;
    // A strict transaction under an id a relaxed one committed is answered once that commit
    // is flushed: its answer says the transaction is in the store.
    await db.transaction(async (tx) => tx.put('t', '1'), { id: 'once', durability: 'relaxed' });
    const beforeDuplicate = await flushes();
    const duplicate = await db.transaction(async (tx) => tx.put('t', '2'), { id: 'once' });
    const duplicateFlushes = (await flushes()) - beforeDuplicate;
    await db.close();
    return { together, awaited, applied: duplicate.applied, duplicateFlushes };
  });
  assert.deepEqual(r, { together: 1, awaited: 5, applied: false, duplicateFlushes: 1 });
});

test('answers to calls sent before a write come before its change event; one flush per group', async () => {
  const r = await shared.page.evaluate(async () => {
    const db = await window.walnut.open('event-order');
    const log = [];
    db.addEventListener('change', (e) => log.push(`change ${e.puts.join(',')}`));
    await db.put('warm', 'x');
    await new Promise((resolve) => setTimeout(resolve, 50));
    log.length = 0;
    // One microtask, so one message: a relaxed put, a get, a strict put.
    await Promise.all([
      db.put('a', '1', { durability: 'relaxed' }).then(() => log.push('relaxed a')),
      db.get('warm').then(() => log.push('get')),
      db.put('b', '2').then(() => log.push('strict b')),
    ]);
    await new Promise((resolve) => setTimeout(resolve, 50));
    const order = [...log];
    // A strict put, then a relaxed one in the next message, sent in the same task: the relaxed
    // one's event waits for a later flush (within a second), it takes none of its own at once.
    const flushes = [];
    for (let round = 0; round < 5; round++) {
      const before = (await db.stats()).flushes;
      const strict = db.put(`s${round}`, 'strict');
      await new Promise((resolve) => queueMicrotask(resolve)); // the first message is sent
      await Promise.all([strict, db.put(`r${round}`, 'relaxed', { durability: 'relaxed' })]);
      await new Promise((resolve) => setTimeout(resolve, 20));
      flushes.push((await db.stats()).flushes - before);
    }
    await db.close();
    return { order, flushes };
  });
  assert.deepEqual(r.order, ['relaxed a', 'get', 'change a', 'change b', 'strict b']);
  assert.deepEqual(r.flushes, [1, 1, 1, 1, 1]);
});

test('bad arguments and closed stores reject with named errors', async () => {
  const r = await shared.page.evaluate(async () => {
    const { caught } = window.harness;
    const { open } = window.walnut;
    const db = await open('errors');
    const detached = new ArrayBuffer(8);
    structuredClone(detached, { transfer: [detached] });
    const lockedStream = new ReadableStream();
    lockedStream.getReader();
    const out = {
      emptyKey: await caught(db.put('', 'x')),
      emptyBytesKey: await caught(db.get(new Uint8Array(0))),
      numberKey: await caught(db.has(42)),
      longKey: await caught(db.put('k'.repeat(65536), 'x')),
      loneSurrogate: await caught(db.put('\ud800', 'x')),
      numberValue: await caught(db.put('k', 123)),
      objectValue: await caught(db.put('k', { a: 1 })),
      missingValue: await caught(db.put('k')),
      detachedValue: await caught(db.put('k', detached)),
      lockedStream: await caught(db.put('k', lockedStream)),
      badDurability: await caught(db.put('k', 'x', { durability: 'eventually' })),
      badProgress: await caught(db.put('k', 'x', { onProgress: 'no' })),
      badSignal: await caught(db.put('k', 'x', { signal: {} })),
      badLimit: await caught(db.keys({ limit: -1 })),
      badPrefix: await caught(db.keys({ prefix: 5 })),
      badName: await caught(open('')),
      badChunk: await caught(open('other', { chunkSize: 100 })),
      badTimeout: await caught(open('other', { lockTimeout: 'soon' })),
      bigTimeout: await caught(open('other', { lockTimeout: 2 ** 32 })),
      bigThreshold: await caught(open('other', { directWriteThreshold: 2 ** 32 })),
      zeroThreshold: await caught(open('other', { directWriteThreshold: 0 })),
      bigCheckpointBytes: await caught(open('other', { checkpointBytes: 2 ** 53 + 2 })),
      // The largest of each is accepted.
      largest: await caught(async () => {
        const edge = await open('edges', { lockTimeout: 2 ** 32 - 1, directWriteThreshold: 2 ** 32 - 1, checkpointBytes: 2 ** 53 });
        await edge.put('k', 'x');
        await edge.close();
      }),
    };
    const { Worker } = window;
    delete window.Worker;
    out.noWorkers = await caught(open('other'));
    window.Worker = Worker;
    const keyCount = (await db.keys()).length;
    await db.close();
    out.afterClose = await caught(db.put('k', 'x'));
    out.keysAfterClose = await caught(db.keys());
    out.closeTwice = await caught(db.close());
    out.keyCount = keyCount;
    return out;
  });
  const expect = (what, name, param) => {
    assert.equal(r[what].name, name, `${what}: ${JSON.stringify(r[what])}`);
    if (param) assert.match(r[what].message, param, what);
  };
  for (const what of ['emptyKey', 'emptyBytesKey', 'numberKey', 'longKey', 'loneSurrogate']) {
    expect(what, 'WalnutInvalidArgumentError', /key/);
  }
  for (const what of ['numberValue', 'objectValue', 'missingValue', 'detachedValue', 'lockedStream']) {
    expect(what, 'WalnutInvalidArgumentError', /value/);
  }
  expect('detachedValue', 'WalnutInvalidArgumentError', /detached/);
  expect('badDurability', 'WalnutInvalidArgumentError', /durability/);
  expect('badProgress', 'WalnutInvalidArgumentError', /onProgress/);
  expect('badSignal', 'WalnutInvalidArgumentError', /signal/);
  expect('badLimit', 'WalnutInvalidArgumentError', /limit/);
  expect('badPrefix', 'WalnutInvalidArgumentError', /prefix/);
  expect('badName', 'WalnutInvalidArgumentError', /name/);
  expect('badChunk', 'WalnutInvalidArgumentError', /chunkSize/);
  expect('badTimeout', 'WalnutInvalidArgumentError', /lockTimeout/);
  expect('bigTimeout', 'WalnutInvalidArgumentError', /^options\.lockTimeout must be an integer from 0 to 4294967295, got 4294967296$/);
  expect('bigThreshold', 'WalnutInvalidArgumentError', /^options\.directWriteThreshold must be an integer from 1 to 4294967295, got 4294967296$/);
  expect('zeroThreshold', 'WalnutInvalidArgumentError', /^options\.directWriteThreshold must be an integer from 1 to 4294967295, got 0$/);
  expect('bigCheckpointBytes', 'WalnutInvalidArgumentError', /^options\.checkpointBytes must be an integer from 0 to 9007199254740992, got 9007199254740994$/);
  assert.equal(r.largest.name, null, `the largest values are accepted: ${JSON.stringify(r.largest)}`);
  expect('noWorkers', 'WalnutUnsupportedError', /Worker/);
  expect('afterClose', 'WalnutClosedError');
  expect('keysAfterClose', 'WalnutClosedError');
  assert.equal(r.closeTwice.name, null, 'close() twice is harmless');
  assert.equal(r.keyCount, 0, 'no rejected write reached the store');
});

test('errors are instances of the exported classes', async () => {
  const r = await shared.page.evaluate(async () => {
    const { open, WalnutError, WalnutInvalidArgumentError } = window.walnut;
    const db = await open('classes');
    try {
      await db.put('', 'x');
      return 'did not throw';
    } catch (error) {
      return [error instanceof WalnutInvalidArgumentError, error instanceof WalnutError, error instanceof Error];
    } finally {
      await db.close();
    }
  });
  assert.deepEqual(r, [true, true, true]);
});

test('data survives a page reload', async () => {
  await shared.page.evaluate(async () => {
    const db = await window.walnut.open('persist', { chunkSize: 4096 });
    await db.put('strict', window.harness.pattern(10000, 11));
    await db.put(new Uint8Array([0, 1]), 'bytes key');
    await db.put('relaxed', 'flushed by close', { durability: 'relaxed' });
    await db.put('doomed', 'x');
    await db.delete('doomed');
    await db.close();
    // Left open on purpose: the reload kills this worker while it holds the file.
    const held = await window.walnut.open('persist-held');
    await held.put('k', 'strictly durable');
  });
  await shared.page.reload();
  await shared.page.waitForFunction(() => window.walnut && window.harness);
  const r = await shared.page.evaluate(async () => {
    const { pattern, readAll, firstDifference } = window.harness;
    const db = await window.walnut.open('persist');
    const out = {
      keys: (await db.keys()).map((k) => (typeof k === 'string' ? k : Array.from(k).join(','))),
      strict: firstDifference(await readAll(await db.getStream('strict')), pattern(10000, 11)),
      relaxed: await (await db.get('relaxed')).text(),
      committed: db.recovery.committed,
      checkpointSeq: db.recovery.checkpointSeq,
      discarded: db.recovery.discarded.length,
    };
    await db.close();
    const held = await window.walnut.open('persist-held');
    out.held = await (await held.get('k')).text();
    out.heldReplayed = held.recovery.committed;
    await held.close();
    return out;
  });
  assert.deepEqual(r.keys, ['0,1', 'relaxed', 'strict']);
  assert.equal(r.strict, -1);
  assert.equal(r.relaxed, 'flushed by close');
  // close() wrote a checkpoint: the reopen starts from it and has nothing to replay.
  assert.notEqual(r.checkpointSeq, null);
  assert.equal(r.committed, 0);
  assert.equal(r.discarded, 0);
  // The store left open when the page reloaded had no checkpoint: its log was replayed.
  assert.equal(r.held, 'strictly durable');
  assert.ok(r.heldReplayed >= 1, `replayed ${r.heldReplayed}`);
});

test('preload() readies one worker, which the next open() takes', async () => {
  // A page of its own: workers of earlier tests' stores, still shutting down, would skew the count.
  const page = await shared.env.openPage();
  const workers = () => page.workers().filter((w) => w.url().endsWith('/pkg/worker.js')).length;
  const before = workers();
  assert.equal(before, 0);
  await page.evaluate(() => {
    window.walnut.preload();
    window.walnut.preload(); // one is ready already: nothing more
  });
  for (let i = 0; i < 50 && workers() < before + 1; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(workers(), before + 1, 'preload() started one worker');
  await page.evaluate(async () => {
    window.preloaded = await window.walnut.open('preloaded');
    await window.preloaded.put('k', 'through the preloaded worker');
  });
  assert.equal(workers(), before + 1, 'open() took the ready worker instead of starting one');
  const r = await page.evaluate(async () => {
    const other = await window.walnut.open('preloaded-other'); // none ready: starts its own
    await other.put('k', 'own worker');
    const out = {
      first: await (await window.preloaded.get('k')).text(),
      other: await (await other.get('k')).text(),
    };
    await other.close();
    await window.preloaded.close();
    const again = await window.walnut.open('preloaded');
    out.reopened = await (await again.get('k')).text();
    await again.close();
    return out;
  });
  assert.deepEqual(r, { first: 'through the preloaded worker', other: 'own worker', reopened: 'through the preloaded worker' });
  for (let i = 0; i < 50 && workers() > before; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(workers(), before, 'closed stores leave no worker behind');
  await page.close();
});

test('getBytes reads small and multi-chunk values as bytes, undefined when absent', async () => {
  const r = await shared.page.evaluate(async () => {
    const { pattern, firstDifference } = window.harness;
    const db = await window.walnut.open('get-bytes', { chunkSize: 4096 });
    await db.put('small', 'héllo');
    await db.put(new Uint8Array([7, 0]), pattern(3 * 4096 + 5, 3));
    const small = await db.getBytes('small');
    const large = await db.getBytes(new Uint8Array([7, 0]));
    const out = {
      small: new TextDecoder().decode(small),
      isBytes: small instanceof Uint8Array && large instanceof Uint8Array,
      large: firstDifference(large, pattern(3 * 4096 + 5, 3)),
      largeLength: large.length,
      absent: String(await db.getBytes('never')),
    };
    small.fill(0); // the caller owns the bytes: the store is unaffected
    out.again = new TextDecoder().decode(await db.getBytes('small'));
    await db.close();
    return out;
  });
  assert.deepEqual(r, { small: 'héllo', isBytes: true, large: -1, largeLength: 3 * 4096 + 5, absent: 'undefined', again: 'héllo' });
});
