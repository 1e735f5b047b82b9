// One set of test bodies for every home of walnut: the page API (Chromium, Firefox), the
// synchronous store in a dedicated worker (Chromium, Firefox), Node (promises and synchronous)
// and a Durable Object in workerd. Each home gives the bodies a `home`:
//
//   home.open(name, options?)  -> a store (its calls may answer with values or promises: the
//                                 bodies await every call, and always ask for values' forms)
//   home.sync                  -> whether the store's calls answer synchronously
//   home.large                 -> the size of the "large" value, bytes (> 2 MiB)
//   home.direct                -> whether the core runs in the caller's thread (not behind a
//                                 worker), so that writes apply in call order across keys
//   home.stream(asyncIterable) -> what the home's put() takes to stream a value (page API)
//   home.later(fn)             -> runs fn in a later task (optional: by default a MessageChannel
//                                 message; workerd delivers those in a microtask)
//
// Crash cases (`crashes`) are split in two: `write(home)` runs where it can be killed (the
// store's worker, a child process, the workerd process) and resolves once its acknowledged
// writes are done and an unacknowledged one is under way; the home kills it there, reopens
// the store elsewhere, and runs `check(home)`.
//
// The bodies use no test framework and no Node module: they run in browsers and workerd too.

/** Thrown by the checks below. */
export class CheckError extends Error {}
CheckError.prototype.name = 'CheckError';

function show(v) {
  if (v instanceof Uint8Array) return `Uint8Array(${v.length})[${Array.from(v.subarray(0, 8)).join(',')}${v.length > 8 ? ',…' : ''}]`;
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

function same(a, b) {
  if (a instanceof Uint8Array && b instanceof Uint8Array) {
    return a.length === b.length && a.every((x, i) => x === b[i]);
  }
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => same(x, b[i]));
  if (a && b && typeof a === 'object' && typeof b === 'object' && !(a instanceof Uint8Array) && !(b instanceof Uint8Array)) {
    const ka = Object.keys(a);
    return ka.length === Object.keys(b).length && ka.every((k) => same(a[k], b[k]));
  }
  return Object.is(a, b);
}

export function equal(actual, expected, what) {
  if (!same(actual, expected)) throw new CheckError(`${what}: got ${show(actual)}, expected ${show(expected)}`);
}

export function ok(value, what) {
  if (!value) throw new CheckError(what);
}

/**
 * Runs `fn` (which may throw, or return a promise that rejects) and checks the error's name and
 * that its message matches `message`.
 */
export async function fails(fn, name, message, what) {
  let error;
  try {
    await fn();
  } catch (e) {
    error = e;
  }
  if (!error) throw new CheckError(`${what}: did not fail`);
  if (error.name !== name) throw new CheckError(`${what}: failed with ${error.name}: ${error.message}, expected ${name}`);
  if (message && !message.test(error.message)) {
    throw new CheckError(`${what}: message "${error.message}" does not match ${message}`);
  }
}

const enc = new TextEncoder();

/** Deterministic bytes: `len` of them from `seed` (xorshift32). */
export function bytes(len, seed) {
  const out = new Uint8Array(len);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** A fresh store name for a case (stores persist per home). */
let counter = 0;
export function unique(label) {
  counter += 1;
  return `conf-${label}-${Date.now().toString(36)}-${counter}`;
}

/** Opens a store whose chunks are 4096 bytes, so values cross chunk boundaries early. */
const CHUNK = 4096;
function openSmall(home, name) {
  return home.open(name, { chunkSize: CHUNK });
}

/**
 * Runs a generator that yields each call's result, for one test body on synchronous and async
 * stores alike: synchronously on a sync home (values), awaiting each yield on the others.
 */
function driveOn(home, gen) {
  if (home.sync) {
    let r = gen.next();
    while (!r.done) r = gen.next(r.value);
    return r.value;
  }
  return (async () => {
    let r = gen.next();
    while (!r.done) {
      let v;
      try {
        v = await r.value;
      } catch (error) {
        r = gen.throw(error);
        continue;
      }
      r = gen.next(v);
    }
    return r.value;
  })();
}

/**
 * A BYOB reader of `stream` into one buffer of `room` bytes, reused: `read()` resolves as a
 * default reader's does, each chunk valid until the next read.
 * @param {ReadableStream<Uint8Array>} stream
 * @param {number} room
 */
export function byobReader(stream, room) {
  const reader = stream.getReader({ mode: 'byob' });
  let buffer = new ArrayBuffer(room);
  return {
    async read() {
      const r = await reader.read(new Uint8Array(buffer));
      if (!r.done) buffer = r.value.buffer;
      return r;
    },
  };
}

/**
 * Reads `stream` with a BYOB reader into one buffer of `room` bytes, reused for every read:
 * the bytes read and how many reads it took.
 */
export async function readByob(stream, room) {
  const reader = byobReader(stream, room);
  const parts = [];
  for (let r = await reader.read(); !r.done; r = await reader.read()) parts.push(r.value.slice());
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((at, p) => (all.set(p, at), at + p.length), 0);
  return { all, reads: parts.length };
}

/** `parts` joined into one Uint8Array. */
function concat(parts) {
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((at, p) => (all.set(p, at), at + p.length), 0);
  return all;
}

/**
 * Counts the turns other tasks get: a task that queues itself again each time it runs (by
 * `home.later`, else a MessageChannel message). `ticks` grows only while the thread is handed
 * back to the event loop.
 */
function startTicker(home) {
  const ticker = { ticks: 0, stopped: false };
  let later = home.later;
  if (!later) {
    const channel = new MessageChannel();
    let next;
    channel.port1.onmessage = () => next();
    later = (fn) => {
      next = fn;
      channel.port2.postMessage(null);
    };
    ticker.stop = () => {
      ticker.stopped = true;
      channel.port1.close();
    };
  }
  ticker.stop ??= () => (ticker.stopped = true);
  const tick = () => {
    if (ticker.stopped) return;
    ticker.ticks += 1;
    later(tick);
  };
  later(tick);
  return ticker;
}

/** `key` of `db` read as by readByob. */
async function byobOf(db, key, room) {
  return readByob(await db.get(key, { as: 'stream' }), room);
}

export const cases = [
  {
    name: 'values round-trip at sizes 0, 1, chunk-1, chunk, chunk+1 and large, across a reopen',
    async run(home) {
      const name = unique('sizes');
      const sizes = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, home.large];
      let db = await openSmall(home, name);
      for (const [i, size] of sizes.entries()) await db.put(`v${i}`, bytes(size, i + 1));
      for (const [i, size] of sizes.entries()) equal(await db.get(`v${i}`, { as: 'bytes' }), bytes(size, i + 1), `size ${size}`);
      await db.close();
      db = await openSmall(home, name);
      for (const [i, size] of sizes.entries()) {
        equal(await db.get(`v${i}`, { as: 'bytes' }), bytes(size, i + 1), `size ${size} after a reopen`);
      }
      equal((await db.stats()).keys, sizes.length, 'stats().keys');
      await db.close();
    },
  },
  {
    name: 'strings, bytes keys and the forms a value is read in',
    async run(home) {
      const db = await openSmall(home, unique('forms'));
      await db.put('text', 'héllo wörld');
      await db.put('json', JSON.stringify({ a: [1, 2], b: 'c' }));
      await db.put(new Uint8Array([0, 255, 7]), new Uint8Array([9, 8]));
      equal(await db.get('text', { as: 'text' }), 'héllo wörld', 'as text');
      equal(await db.get('text', { as: 'bytes' }), enc.encode('héllo wörld'), 'as bytes');
      equal(await db.get('json', { as: 'json' }), { a: [1, 2], b: 'c' }, 'as json');
      const blob = await db.get('text', { as: 'blob' });
      equal(await blob.text(), 'héllo wörld', 'as blob');
      const stream = await db.get('text', { as: 'stream' });
      equal(await new Response(stream).text(), 'héllo wörld', 'as stream');
      equal(await db.get(new Uint8Array([0, 255, 7]), { as: 'bytes' }), new Uint8Array([9, 8]), 'a bytes key');
      equal(await db.get('absent', { as: 'text' }), undefined, 'an absent key');
      equal(await db.keys(), [new Uint8Array([0, 255, 7]), 'json', 'text'], 'keys keep their form, in bytewise order');
      await db.close();
    },
  },
  {
    name: 'a value read as a byte stream: BYOB readers with buffers of any size, and default readers',
    async run(home) {
      const db = await openSmall(home, unique('byob'));
      const size = 3 * CHUNK + 17;
      await db.put('v', bytes(size, 41));
      await db.put('whole', bytes(2 * CHUNK, 42));
      await db.put('empty', new Uint8Array(0));
      const byob = (key, room) => byobOf(db, key, room);
      for (const room of [1000, CHUNK - 1, CHUNK, CHUNK + 1, 4 * CHUNK]) {
        const { all, reads } = await byob('v', room);
        equal(all, bytes(size, 41), `read into ${room}-byte buffers`);
        const per = Math.min(room, CHUNK);
        equal(reads, 3 * Math.ceil(CHUNK / per) + Math.ceil(17 / per), `reads into ${room}-byte buffers (none spans two chunks)`);
      }
      equal((await byob('whole', CHUNK)).all, bytes(2 * CHUNK, 42), 'whole chunks, the end found by an empty read');
      equal((await byob('empty', 10)).reads, 0, 'an empty value ends at once');
      // Half read with a BYOB reader, the rest with a default reader of the same stream.
      const stream = await db.get('v', { as: 'stream' });
      const first = stream.getReader({ mode: 'byob' });
      const head = (await first.read(new Uint8Array(100))).value.slice();
      first.releaseLock();
      const rest = stream.getReader();
      const parts = [head];
      for (let r = await rest.read(); !r.done; r = await rest.read()) parts.push(r.value);
      const joined = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
      parts.reduce((at, p) => (joined.set(p, at), at + p.length), 0);
      equal(joined, bytes(size, 41), 'a BYOB read, then a default reader');
      await db.close();
      // Chunks keep the size they were written with: a value written with chunks 4x today's
      // is read into buffers of today's chunk size, and smaller, all the same.
      const name = unique('byob-larger');
      const big = await home.open(name, { chunkSize: 4 * CHUNK });
      await big.put('v', bytes(9 * CHUNK + 3, 43));
      await big.close();
      const reopened = await openSmall(home, name);
      for (const room of [1000, CHUNK, 4 * CHUNK]) {
        equal((await byobOf(reopened, 'v', room)).all, bytes(9 * CHUNK + 3, 43), `chunks of 4 x ${CHUNK} bytes read into ${room}-byte buffers`);
      }
      await reopened.close();
    },
  },
  {
    name: 'ordered scans with prefix, start, end, limit and reverse',
    async run(home) {
      const db = await openSmall(home, unique('scan'));
      const keys = ['a', 'b/1', 'b/2', 'b/3', 'ba', 'c', 'é'];
      await db.putMany(keys.map((k, i) => [k, `v${i}`]));
      equal(await db.keys(), keys, 'all, bytewise (é is 0xC3 0xA9)');
      equal(await db.keys({ prefix: 'b/' }), ['b/1', 'b/2', 'b/3'], 'prefix');
      equal(await db.keys({ start: 'b/2', end: 'c' }), ['b/2', 'b/3', 'ba'], 'start inclusive, end exclusive');
      equal(await db.keys({ limit: 2 }), ['a', 'b/1'], 'limit');
      equal(await db.keys({ reverse: true, limit: 3 }), ['é', 'c', 'ba'], 'reverse');
      equal(await db.keys({ prefix: 'b', reverse: true, limit: 2 }), ['ba', 'b/3'], 'prefix, reverse, limit');
      const entries = await db.entries({ prefix: 'b/', values: true, as: 'text' });
      equal(
        entries.map((e) => [e.key, e.size, e.value]),
        [
          ['b/1', 2, 'v1'],
          ['b/2', 2, 'v2'],
          ['b/3', 2, 'v3'],
        ],
        'entries with values',
      );
      const pairs = [];
      for (const [key, value] of entries) pairs.push([key, value]);
      equal(pairs[0], ['b/1', 'v1'], 'an entry destructures as [key, value]');
      await db.close();
    },
  },
  {
    name: 'a listing of 600 entries is iterated page by page with for await',
    async run(home) {
      const db = await openSmall(home, unique('iterate'));
      await db.putMany(Array.from({ length: 600 }, (_, i) => [`k${String(i).padStart(4, '0')}`, String(i)]));
      const seen = [];
      for await (const [key, value] of db.entries({ as: 'text' })) seen.push([key, value]);
      equal(seen.length, 600, 'every entry');
      equal(seen[599], ['k0599', '599'], 'the last one, in order');
      const back = [];
      for await (const [key] of db.entries({ reverse: true, limit: 300, as: 'text' })) back.push(key);
      equal([back.length, back[0], back[299]], [300, 'k0599', 'k0300'], 'reverse with a limit across pages');
      await db.close();
    },
  },
  {
    name: 'delete, has, getMany, deleteMany and clear',
    async run(home) {
      const db = await openSmall(home, unique('delete'));
      await db.putMany({ a: '1', b: '2', c: '3', d: '4' });
      equal(await db.has('a'), true, 'has a');
      equal(await db.delete('a'), true, 'delete of a present key');
      equal(await db.delete('a'), false, 'delete of an absent key');
      equal(await db.has('a'), false, 'has after delete');
      equal(await db.getMany(['b', 'a', 'c'], { as: 'text' }), ['2', undefined, '3'], 'getMany');
      equal(await db.deleteMany(['b', 'x', 'b', 'c']), 2, 'deleteMany counts the keys that existed, once each');
      equal(await db.keys(), ['d'], 'what deleteMany left');
      await db.putMany([
        ['e', '5'],
        ['f', '6'],
      ]);
      equal(await db.clear(), 3, 'clear counts what it deleted');
      equal(await db.keys(), [], 'clear leaves nothing');
      equal(await db.clear(), 0, 'clearing an empty store');
      await db.put('after', 'x');
      equal(await db.get('after', { as: 'text' }), 'x', 'writes go on after clear');
      await db.close();
    },
  },
  {
    name: 'a batch applies all of its operations, and a batch with a bad one applies none',
    async run(home) {
      const name = unique('batch');
      let db = await openSmall(home, name);
      await db.put('keep', 'old');
      await db.batch([
        { type: 'put', key: 'x', value: bytes(CHUNK * 3 + 5, 7) },
        { type: 'delete', key: 'keep' },
        { type: 'put', key: 'y', value: 'why' },
      ]);
      equal(await db.keys(), ['x', 'y'], 'after the batch');
      await fails(
        () =>
          db.batch([
            { type: 'put', key: 'z', value: 'zed' },
            { type: 'delete', key: 'x' },
            { type: 'rename', key: 'y' },
          ]),
        'WalnutInvalidArgumentError',
        /operations\[2\]\.type/,
        'a batch with a bad operation',
      );
      await db.close();
      db = await openSmall(home, name);
      equal(await db.keys(), ['x', 'y'], 'nothing of the refused batch, after a reopen');
      equal(await db.get('x', { as: 'bytes' }), bytes(CHUNK * 3 + 5, 7), 'the batch value');
      await db.close();
    },
  },
  {
    name: 'tables: namespaces with their own sequence numbers, queues, marks and drop, across reopens',
    async run(home) {
      const name = unique('tables');
      let db = await openSmall(home, name);
      const t = db.table('outbox');
      equal(await t.keys(), [], 'a table not written yet is empty');
      equal(await db.tables(), [], 'and not listed');
      await db.put('k', 'default');
      equal(await t.put('k', 'in outbox'), 1, "a table's first write takes 1");
      equal(await t.append('e1'), 2, 'an append takes the next number');
      equal(await t.append(bytes(CHUNK * 2 + 3, 5)), 3, 'an append of several chunks too');
      const seqs = await db.batch([
        { type: 'append', table: 'outbox', value: 'e3' },
        { type: 'put', table: 'other', key: 'x', value: 'y' },
        { type: 'delete', key: 'k' },
      ]);
      equal(
        [...seqs].sort((a, b) => (a.table < b.table ? -1 : 1)),
        [
          { table: '', first: 2, last: 2 },
          { table: 'other', first: 1, last: 1 },
          { table: 'outbox', first: 4, last: 4 },
        ],
        'a batch across tables: the numbers it took, per table',
      );
      equal(await db.get('k', { as: 'text' }), undefined, "the default table's k is deleted");
      equal(await t.get('k', { as: 'text' }), 'in outbox', "the table's k is its own");
      equal(await db.keys(), [], 'the default table lists none of the tables keys');
      equal((await t.read({ from: 2, limit: 1, as: 'text' })).map((e) => [e.seq, e.value]), [[2, 'e1']], 'read from, limit');
      const all = await t.read({ as: 'bytes' });
      equal(all.map((e) => e.seq), [2, 3, 4], 'the queue in sequence order (the put is not in it)');
      equal(all[1].value, bytes(CHUNK * 2 + 3, 5), 'a queue value of several chunks');
      equal(
        (await t.changes()).map((c) => [c.seq, c.type, c.key, c.size, c.current]),
        [[1, 'put', 'k', 9, true]],
        'the change feed lists puts and deletes (not appends)',
      );
      await t.markFlushed(3);
      await t.deleteUpTo(3);
      equal(await t.changes(), [], 'deleteUpTo trims the feed too');
      equal([await t.lastSeq, await t.flushedSeq, await t.deletedUpTo], [4, 3, 3], 'the marks');
      equal((await t.read({ as: 'text' })).map((e) => [e.seq, e.value]), [[4, 'e3']], 'entries at or below the mark are gone');
      const streamed = [];
      for await (const { seq, value } of t.stream({ from: 1 })) streamed.push([seq, await new Response(value).text()]);
      equal(streamed, [[4, 'e3']], 'stream() yields each entry with its value as a stream');
      await fails(() => t.markFlushed(2), 'WalnutInvalidArgumentError', /seq/, 'the flushed mark never goes back');
      await fails(() => t.deleteUpTo(99), 'WalnutInvalidArgumentError', /seq/, 'no delete past the last number');
      await fails(() => db.table(''), 'WalnutInvalidArgumentError', /name/, 'an empty table name');
      await db.close();
      db = await openSmall(home, name);
      let t2 = db.table('outbox');
      equal(
        await db.tables(),
        [
          { name: 'outbox', lastSeq: 4, flushedSeq: 3, deletedUpTo: 3 },
          { name: 'other', lastSeq: 1, flushedSeq: 0, deletedUpTo: 0 },
        ],
        'tables and their marks after a reopen',
      );
      equal(await t2.append('e5'), 5, 'numbers go on after a reopen');
      await t2.deleteUpTo(5);
      await db.close();
      db = await openSmall(home, name);
      t2 = db.table('outbox');
      equal(await t2.read({ as: 'text' }), [], 'a queue deleted up to its last number stays empty');
      equal(await t2.append('e6'), 6, 'and its next append takes the next number');
      equal(await db.dropTable('other'), true, 'drop an existing table');
      equal(await db.dropTable('other'), false, 'drop it again');
      equal((await db.tables()).map((x) => x.name), ['outbox'], 'what is left');
      const ghost = db.table('ghost');
      await ghost.markFlushed(0);
      await ghost.deleteUpTo(0);
      await fails(() => ghost.markFlushed(1), 'WalnutInvalidArgumentError', /seq/, 'a mark above a new table\'s 0');
      await fails(() => ghost.deleteUpTo(1), 'WalnutInvalidArgumentError', /seq/, 'a delete above a new table\'s 0');
      equal(await ghost.batch([{ type: 'put', table: 'outbox', key: 'via-ghost', value: 'x' }]), [
        { table: 'outbox', first: 7, last: 7 },
      ]);
      equal((await db.tables()).map((x) => x.name), ['outbox'], 'marks and batches of other tables create no table');
      await db.table('outbox').delete('via-ghost');
      equal(await db.table('other').keys(), [], 'a dropped table is empty');
      equal(await db.table('other').put('x', 'new'), 1, 'a table created again starts from 1');
      const f = db.table('feed');
      await f.put('a', '1');
      await f.put('b', '22');
      await f.delete('a');
      equal(
        (await f.changes()).map((c) => [c.seq, c.type, c.key, c.size, c.current]),
        [
          [1, 'put', 'a', 1, false],
          [2, 'put', 'b', 2, true],
          [3, 'delete', 'a', 0, true],
        ],
        'a change is current until a later one to its key',
      );
      equal((await f.changes({ since: 1, limit: 1 })).map((c) => c.seq), [2], 'since is exclusive; limit');
      const stop = new AbortController();
      const seen = [];
      for await (const c of f.follow({ since: 0, signal: stop.signal, interval: 20 })) {
        seen.push([c.seq, c.key]);
        if (c.seq === 3) await f.put('c', '333');
        if (c.seq === 4) stop.abort();
      }
      equal(seen, [[1, 'a'], [2, 'b'], [3, 'a'], [4, 'c']], 'follow replays from since, then follows new commits');
      const watched = [];
      const quit = new AbortController();
      const watching = f.watch({ since: 2, signal: quit.signal, interval: 20 }, (c) => {
        watched.push(c.seq);
        if (c.seq === 5) quit.abort();
      });
      await f.put('d', '4');
      for (let i = 0; i < 100 && watched.length < 3; i++) await new Promise((resolve) => setTimeout(resolve, 20));
      await watching;
      equal(watched, [3, 4, 5], 'watch calls back with each change after since, then with new ones');
      await fails(() => f.changes({ since: -1 }), 'WalnutInvalidArgumentError', /options\.since/, 'a bad since');
      await db.close();
    },
  },
  {
    name: 'transactions: read-modify-write, conflicts retried, aborts, nesting, ids across a reopen, conditional writes',
    async run(home) {
      const name = unique('tx');
      let db = await openSmall(home, name);
      const drive = (gen) => driveOn(home, gen);
      const tx = (body, options) => db.transaction((t) => drive(body(t)), options);
      function* increment(t, key = 'n') {
        const n = Number((yield t.get(key, { as: 'text' })) ?? '0');
        yield t.put(key, String(n + 1));
        return n + 1;
      }
      for (let i = 0; i < 3; i++) await tx((t) => increment(t));
      equal(await db.get('n', { as: 'text' }), '3', 'three increments');
      const done = await tx((t) => increment(t));
      equal([done.applied, done.value, typeof done.version], [true, 4, 'number'], 'resolves to applied, version, value');
      equal(await db.versionOf('n'), done.version, "the commit's version is the value's");

      // A write from outside between the read and the commit: the callback runs again.
      let runs = 0;
      const raced = await tx(function* (t) {
        runs += 1;
        const n = Number(yield t.get('n', { as: 'text' }));
        if (runs === 1) yield db.put('n', '100');
        yield t.put('n', String(n + 1));
        return n;
      });
      equal([runs, raced.value, await db.get('n', { as: 'text' })], [2, 100, '101'], 'a conflict runs the callback again');
      await fails(
        () =>
          tx(
            function* (t) {
              yield t.get('n');
              yield db.put('n', 'other');
              yield t.put('n', 'mine');
            },
            { retries: 0 },
          ),
        'WalnutConflictError',
        /n/,
        'with no retries left it rejects',
      );
      equal(await db.get('n', { as: 'text' }), 'other', 'and wrote nothing');

      // A throw aborts: nothing is written, the error comes out.
      await fails(
        () =>
          tx(function* (t) {
            yield t.put('aborted', 'x');
            throw new Error('no thanks');
          }),
        'Error',
        /no thanks/,
        'a throwing callback rejects with its error',
      );
      equal(await db.has('aborted'), false, 'an aborted transaction left nothing');

      // Nesting: an inner throw discards only its writes; an inner success merges.
      const nested = await tx(function* (t) {
        yield t.put('outer', 'o');
        try {
          yield t.transaction((inner) =>
            drive(
              (function* () {
                yield inner.put('inner-failed', 'x');
                yield inner.put('outer', 'overwritten');
                throw new Error('inner fails');
              })(),
            ),
          );
        } catch (error) {
          equal(error.message, 'inner fails', 'the inner error reaches the parent');
        }
        equal(yield t.get('outer', { as: 'text' }), 'o', "the parent's write is back");
        yield t.transaction((inner) => drive((function* () { yield inner.put('inner-kept', 'k'); })()));
        return yield t.keys({ prefix: 'inner' });
      });
      equal(nested.value, ['inner-kept'], 'the transaction sees the kept inner write only');
      equal(
        [await db.get('outer', { as: 'text' }), await db.has('inner-failed'), await db.get('inner-kept', { as: 'text' })],
        ['o', false, 'k'],
        'after the commit',
      );

      // Ids: a transaction committed under an id is not run again, across a reopen.
      const first = await tx((t) => increment(t, 'paid'), { id: 'payment-17' });
      equal(first.applied, true, 'the first run applies');
      let ran = false;
      const again = await tx(
        function* (t) {
          ran = true;
          yield* increment(t, 'paid');
        },
        { id: 'payment-17' },
      );
      equal([again.applied, again.version, ran], [false, first.version, false], 'the same id again: not run');
      await db.close();
      db = await openSmall(home, name);
      const reopened = await tx((t) => increment(t, 'paid'), { id: 'payment-17' });
      equal([reopened.applied, await db.get('paid', { as: 'text' })], [false, '1'], 'and not after a reopen');

      // Conditional writes.
      equal(await db.versionOf('cas'), null, 'an absent key has no version');
      await db.put('cas', 'v1', { ifVersion: null });
      const v1 = await db.versionOf('cas');
      await fails(() => db.put('cas', 'v2', { ifVersion: null }), 'WalnutConflictError', /cas/, 'absent expected');
      await fails(() => db.put('cas', 'v2', { ifVersion: v1 + 1000 }), 'WalnutConflictError', /cas/, 'another version');
      await db.put('cas', 'v2', { ifVersion: v1 });
      const got = await db.getWithVersion('cas', { as: 'text' });
      equal(got.value, 'v2', 'getWithVersion value');
      await fails(() => db.delete('cas', { ifVersion: v1 }), 'WalnutConflictError', /cas/, 'a stale delete');
      equal(await db.delete('cas', { ifVersion: got.version }), true, 'a delete at its version');
      await fails(
        () => db.batch([{ type: 'put', key: 'b1', value: '1' }], { checks: [{ key: 'n', version: 1 }] }),
        'WalnutConflictError',
        /n/,
        'a batch whose check fails',
      );
      equal(await db.has('b1'), false, 'writes nothing');
      const b = await db.batch([{ type: 'put', key: 'b1', value: '1' }], { id: 'batch-1', checks: [{ key: 'cas', version: null }] });
      equal(b.applied, true, 'a batch under an id applies');
      const b2 = await db.batch([{ type: 'put', key: 'b1', value: '2' }], { id: 'batch-1' });
      equal([b2.applied, b2.version, await db.get('b1', { as: 'text' })], [false, b.version, '1'], 'and once only');
      await fails(() => db.put('x', 'y', { ifVersion: 'one' }), 'WalnutInvalidArgumentError', /ifVersion/, 'a bad version');
      await fails(() => tx(() => increment, { id: '' }), 'WalnutInvalidArgumentError', /options\.id/, 'an empty id');
      await db.close();
      // The id retention is a count: an id older than the newest `idRetention` applies again.
      db = await home.open(unique('tx-retention'), { chunkSize: CHUNK, idRetention: 1 });
      const put = (value, id) => db.batch([{ type: 'put', key: 'r', value }], { id });
      equal((await put('1', 'r1')).applied, true, 'r1');
      equal((await put('2', 'r2')).applied, true, 'r2');
      equal((await put('3', 'r2')).applied, false, 'r2 again: remembered');
      equal((await put('4', 'r1')).applied, true, 'r1 again: past the retention of 1, applied again');
      await db.close();
    },
  },
  {
    name: 'transactions: reads of a table not created yet, a nested failure, a call failing unawaited',
    async run(home) {
      const db = await openSmall(home, unique('tx-fail'));
      const drive = (gen) => driveOn(home, gen);
      const tx = (body, options) => db.transaction((t) => drive(body(t)), options);
      // A read in a table that does not exist is part of the read set: another writer creating
      // the table and the key before the commit is a conflict (found by review).
      await fails(
        () =>
          tx(
            function* (t) {
              const v = yield t.get('k', { table: 't', as: 'text' });
              yield db.table('t').put('k', 'other writer');
              if (v === undefined) yield t.put('k', 'mine', { table: 't' });
            },
            { retries: 0 },
          ),
        'WalnutConflictError',
        /t/,
        'a read of an absent table, then its creation',
      );
      equal(await db.table('t').get('k', { as: 'text' }), 'other writer', "the other writer's value stands");
      // A nested transaction failing with a conflict is rolled back before the parent goes on.
      const outer = await tx(
        function* (t) {
          yield t.get('flag');
          try {
            yield t.transaction((inner) =>
              drive(
                (function* () {
                  yield inner.put('x', 'written by the failed inner');
                  yield db.put('flag', '1');
                  yield inner.get('y');
                })(),
              ),
            );
          } catch (error) {
            equal(error.name, 'WalnutConflictError', 'the inner read conflicts');
          }
          yield db.delete('flag');
        },
        { retries: 0 },
      );
      equal(outer.applied, true, 'the parent commits (what it read stands again)');
      equal(await db.has('x'), false, "a failed inner transaction's writes never commit");
      if (!home.sync) {
        // A put whose source breaks off, not awaited: the transaction fails, nothing is written.
        async function* failing() {
          yield new Uint8Array(10).fill(65);
          throw new Error('source broke');
        }
        await fails(
          () =>
            db.transaction(
              async (t) => {
                t.put('a', '1');
                t.put('b', home.stream(failing()));
              },
              { retries: 0 },
            ),
          'Error',
          /source broke/,
          'the failed put fails the transaction',
        );
        equal([await db.has('a'), await db.has('b')], [false, false], 'and nothing of it is written');
      }
      await db.close();
    },
  },
  {
    name: 'a long streamed put gives the thread back between chunks, whatever its source',
    async run(home) {
      // Sources whose chunks are ready at once (an async generator, a Blob in memory) resolve
      // each read in a microtask: a put that never gives way holds its thread, and everything
      // else there (a worker's messages, a server's requests, timers) waits until it ends.
      const db = await home.open(unique('give-way'));
      const MIB = 1024 * 1024;
      const ticker = startTicker(home);
      async function* ready() {
        for (let i = 0; i < 8; i++) yield bytes(MIB, 50 + i);
      }
      const sources = [
        ['an async generator', () => ready()],
        ['a Blob', () => new Blob([bytes(4 * MIB, 60), bytes(4 * MIB, 61)])],
      ];
      try {
        for (const [label, source] of sources) {
          const before = ticker.ticks;
          const value = source();
          if (home.sync) await db.putStream(label, value);
          else await db.put(label, value instanceof Blob ? value : home.stream(value));
          const turns = ticker.ticks - before;
          ok(turns >= 3, `other tasks ran ${turns} times while 8 MiB from ${label} went in (at least 3)`);
        }
      } finally {
        ticker.stop();
      }
      equal(await db.get('an async generator', { as: 'bytes' }), concat(Array.from({ length: 8 }, (_, i) => bytes(MIB, 50 + i))), 'the generator value');
      equal(await db.get('a Blob', { as: 'bytes' }), concat([bytes(4 * MIB, 60), bytes(4 * MIB, 61)]), 'the Blob value');
      equal((await db.stats()).openTransactions, 0, 'no transaction left open');
      await db.close();
    },
  },
  {
    name: 'a value streamed in pieces of any size is stored in whole chunks',
    async run(home) {
      // A source's pieces are not chunks: a fetch body or a file read comes in pieces of a
      // few KiB (Firefox reads a disk-backed File 4-64 KiB at a time, even into a 1 MiB
      // buffer). Each piece stored as a chunk of its own made values of many small records:
      // slower to write and to read back, and more index per value.
      const db = await openSmall(home, unique('gathered'));
      const sizes = [1000, 10000, 3, 5000, 4096, 1, 4095];
      const parts = sizes.map((n, i) => bytes(n, 90 + i));
      async function* pieces() {
        for (const p of parts) yield p;
      }
      const total = sizes.reduce((a, b) => a + b, 0);
      if (home.sync) await db.putStream('v', pieces());
      else await db.put('v', home.stream(pieces()));
      const stream = await db.get('v', { as: 'stream' });
      const reader = stream.getReader();
      const lengths = [];
      for (let r = await reader.read(); !r.done; r = await reader.read()) lengths.push(r.value.length);
      const whole = Array(Math.floor(total / CHUNK)).fill(CHUNK);
      equal(lengths, total % CHUNK ? [...whole, total % CHUNK] : whole, `the chunks of ${total} bytes written in pieces of ${sizes}`);
      equal(await db.get('v', { as: 'bytes' }), concat(parts), 'the value');
      equal((await db.stats()).openTransactions, 0, 'no transaction left open');
      await db.close();
    },
  },
  {
    name: 'an aborted streamed put stops at the source\'s next piece, before a whole chunk has come',
    async run(home) {
      // Pieces are gathered into whole chunks; the abort is still seen as each piece arrives
      // (a review found it seen only once a chunk filled: never, for a source that stalls).
      const db = await openSmall(home, unique('abort-piece'));
      await db.put('v', 'old');
      const controller = new AbortController();
      async function* slow() {
        for (let i = 0; i < 3; i++) yield bytes(100, 110 + i);
        controller.abort();
        yield bytes(100, 113); // less than a chunk so far, and then nothing more
        await new Promise(() => {});
      }
      const options = { signal: controller.signal };
      await fails(
        () => (home.sync ? db.putStream('v', slow(), options) : db.put('v', home.stream(slow()), options)),
        'AbortError',
        undefined,
        'the put',
      );
      equal(await db.get('v', { as: 'text' }), 'old', 'the old value stays');
      equal((await db.stats()).openTransactions, 0, 'no transaction left open');
      await db.close();
    },
  },
  {
    name: 'an abort, or a close, while the source waits for its next piece ends the put at once and cancels the source',
    async run(home) {
      // The abort was seen only when a piece arrived (a review: a source that stalls left the
      // put pending forever, after close() too, and the stream never cancelled).
      for (const how of ['abort', 'close']) {
        const name = unique(`stall-${how}`);
        const db = await openSmall(home, name);
        await db.put('v', 'old');
        let cancelled = false;
        const stream = new ReadableStream({
          start(controller) {
            controller.enqueue(bytes(100, 120)); // then nothing more
          },
          cancel() {
            cancelled = true;
          },
        });
        const controller = new AbortController();
        const options = { signal: controller.signal };
        const put = home.sync ? db.putStream('v', stream, options) : db.put('v', stream, options);
        let timer;
        const outcome = Promise.race([
          put.then(
            () => 'resolved',
            (error) => error.name,
          ),
          new Promise((resolve) => (timer = setTimeout(() => resolve('still pending after 10 s'), 10_000))),
        ]);
        await new Promise((resolve) => setTimeout(resolve, 20)); // the piece is read, the next awaited
        if (how === 'abort') controller.abort();
        else await db.close();
        const settled = await outcome;
        clearTimeout(timer);
        ok(['AbortError', 'WalnutClosedError'].includes(settled), `${how}: the put settled with ${settled}`);
        // A stream handed to a worker (the page's API) hears its cancel a few turns later.
        for (let waited = 0; !cancelled && waited < 5000; waited += 10) await new Promise((resolve) => setTimeout(resolve, 10));
        ok(cancelled, `${how}: the source was cancelled`);
        if (how === 'abort') {
          equal(await db.get('v', { as: 'text' }), 'old', 'the old value stays');
          equal((await db.stats()).openTransactions, 0, 'no transaction left open');
          await db.close();
        } else {
          const again = await openSmall(home, name);
          equal(await again.get('v', { as: 'text' }), 'old', 'the old value stays');
          await again.close();
        }
      }
    },
  },
  {
    name: 'streamed writes under way at once each resolve to the sequence number they took',
    async run(home) {
      // Each commit's numbers are read in its own turn: read a microtask later, another
      // stream's commit in between handed both writes the same number (found by a review).
      const db = await openSmall(home, unique('seq-race'));
      async function* two(i) {
        yield bytes(CHUNK, 70 + i);
        yield bytes(10, 80 + i);
      }
      const valueOf = (i) => concat([bytes(CHUNK, 70 + i), bytes(10, 80 + i)]);
      const q = db.table('q');
      const appended = await Promise.all(
        [0, 1, 2, 3].map((i) => (home.sync ? q.appendStream(two(i)) : q.append(home.stream(two(i))))),
      );
      const entries = await q.read({ as: 'bytes' });
      for (const [i, seq] of appended.entries()) {
        const entry = entries.find((e) => e.seq === seq);
        ok(entry, `append ${i} resolved to ${seq}, a number of the queue ${JSON.stringify(entries.map((e) => e.seq))}`);
        equal(entry.value, valueOf(i), `entry ${seq} holds append ${i}'s value`);
      }
      equal(new Set(appended).size, 4, `four appends, four numbers (${appended})`);
      const t = db.table('docs');
      const put = await Promise.all(
        [0, 1, 2, 3].map((i) => (home.sync ? t.putStream(`k${i}`, two(i)) : t.put(`k${i}`, home.stream(two(i))))),
      );
      const changes = await t.changes();
      for (const [i, seq] of put.entries()) {
        ok(
          changes.some((c) => c.seq === seq && c.key === `k${i}`),
          `put ${i} resolved to ${seq}, its change: ${JSON.stringify(changes.map((c) => [c.seq, c.key]))}`,
        );
      }
      await db.close();
    },
  },
  {
    name: 'export: a streamed snapshot taken when called, as one walnut log with its end mark',
    async run(home) {
      const db = await openSmall(home, unique('export'));
      await db.put('a', 'one');
      await db.put('big', bytes(3 * CHUNK + 5, 3));
      await db.table('q').append('entry');
      const stream = db.export();
      await db.put('after', 'not in the export');
      const reader = stream.getReader();
      const parts = [];
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        parts.push(value);
      }
      const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
      parts.reduce((at, p) => (all.set(p, at), at + p.length), 0);
      const text = new TextDecoder('latin1').decode(all);
      equal(text.slice(0, 8), 'WALNUTLG', 'a walnut log');
      ok(/walnut-export\/1\/3$/.test(text), `it ends with the end mark of its 3 entries (a, big, the queue entry)`);
      ok(text.includes('one') && !text.includes('not in the export'), 'the snapshot at the call');
      await fails(() => db.export({ signal: 'no' }), 'WalnutInvalidArgumentError', /signal/, 'a bad signal');
      await db.close();
    },
  },
  {
    name: 'import: an export fills an empty store whole across a reopen; a cut one and a store with values are refused',
    async run(home) {
      const src = await openSmall(home, unique('import-src'));
      await src.put('a', 'one');
      const big = bytes(3 * CHUNK + 5, 4);
      await src.put('big', big);
      const q = src.table('q');
      await q.append('first');
      await q.append('second');
      await q.markFlushed(1);
      const parts = [];
      const reader = src.export().getReader();
      for (let r = await reader.read(); !r.done; r = await reader.read()) parts.push(r.value);
      const file = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
      parts.reduce((at, p) => (file.set(p, at), at + p.length), 0);
      await src.close();

      const name = unique('import');
      const db = await openSmall(home, name);
      await fails(() => db.import(file.subarray(0, file.length - 9)), 'WalnutCorruptionError', /offset|ends early/, 'a cut file');
      equal(await db.keys(), [], 'a refused import changes nothing');
      let progress = 0;
      const done = await db.import(new Blob([file]), { onProgress: (n) => (progress = n) });
      equal([done.values, done.bytes, progress], [4, file.length, file.length], 'what it installed');
      equal(await db.get('a', { as: 'text' }), 'one', 'a small value');
      equal(await db.get('big', { as: 'bytes' }), big, 'a value of several chunks');
      await fails(() => db.import(file), 'WalnutInvalidArgumentError', /store/, 'into a store with values');
      await db.close();
      const again = await openSmall(home, name);
      const t = again.table('q');
      equal((await t.read({ as: 'text' })).map((e) => [e.seq, e.value]), [[1, 'first'], [2, 'second']], 'the queue');
      equal((await again.tables()).find((x) => x.name === 'q')?.flushedSeq, 1, 'its marks');
      equal(await t.append('third'), 3, 'numbers go on');
      await again.close();
    },
  },
  {
    name: 'bad input fails with WalnutInvalidArgumentError naming the parameter, and changes nothing',
    async run(home) {
      const db = await openSmall(home, unique('invalid'));
      await db.put('k', 'v');
      const bad = [
        [() => db.put(42, 'v'), /key/],
        [() => db.put('', 'v'), /key must not be empty/],
        [() => db.put('k', 42), /value/],
        [() => db.put('k', 'v', { durability: 'eventually' }), /options\.durability/],
        [() => db.get('k', { as: 'xml' }), /options\.as/],
        [() => db.keys({ limit: -1 }), /options\.limit/],
        [() => db.keys({ reverse: 'yes' }), /options\.reverse/],
        [() => db.getMany('k'), /keys must be an array/],
        [() => db.putMany(5), /entries/],
        [() => db.deleteMany([1]), /keys\[0\]/],
        [() => db.batch('nope'), /operations/],
        [() => db.put('x'.repeat(70000), 'v'), /key is 70000 bytes/],
      ];
      for (const [i, [call, message]] of bad.entries()) {
        await fails(call, 'WalnutInvalidArgumentError', message, `bad call ${i}`);
      }
      equal(await db.keys(), ['k'], 'nothing was written');
      equal(await db.get('k', { as: 'text' }), 'v', 'the value stands');
      await db.close();
    },
  },
  {
    name: 'a closed store refuses calls with WalnutClosedError, and close is idempotent',
    async run(home) {
      const name = unique('closed');
      const db = await openSmall(home, name);
      await db.put('k', 'v', { durability: 'relaxed' });
      await db.close();
      await db.close();
      await fails(() => db.get('k', { as: 'text' }), 'WalnutClosedError', null, 'get after close');
      await fails(() => db.put('k', 'w'), 'WalnutClosedError', null, 'put after close');
      const again = await openSmall(home, name);
      equal(await again.get('k', { as: 'text' }), 'v', 'close flushed the relaxed write');
      await again.close();
    },
  },
];

/**
 * Crash cases: `write` is killed once it resolves (while a streamed value is under way);
 * `check` runs on the store reopened after the kill.
 */
export const crashes = [
  {
    name: 'a crash mid-stream keeps every acknowledged write and the old value of the one under way',
    store: 'conf-crash',
    async write(home, name) {
      const db = await openSmall(home, name);
      await db.put('acked-small', 'small');
      await db.put('acked-large', bytes(home.large, 11));
      await db.put('big', bytes(CHUNK * 5, 12));
      await db.batch([
        { type: 'put', key: 'batch-a', value: 'a' },
        { type: 'put', key: 'batch-b', value: bytes(CHUNK * 2, 13) },
      ]);
      // A new value of 'big', streamed: three chunks arrive, then the source stalls.
      let stall;
      const stalled = new Promise((resolve) => (stall = resolve));
      async function* source() {
        for (let i = 0; i < 3; i++) yield bytes(CHUNK, 100 + i);
        stall();
        await new Promise(() => {});
      }
      const put = home.sync ? db.putStream('big', source()) : db.put('big', home.stream(source()));
      put.catch(() => {});
      await stalled;
      // More commits after the stalled chunks, flushed: the stream's chunks reach the disk too.
      await db.put('acked-after', 'after');
      return db;
    },
    async check(home, name) {
      const db = await openSmall(home, name);
      equal(await db.get('acked-small', { as: 'text' }), 'small', 'acked-small');
      equal(await db.get('acked-large', { as: 'bytes' }), bytes(home.large, 11), 'acked-large');
      equal(await db.get('batch-b', { as: 'bytes' }), bytes(CHUNK * 2, 13), 'the batch');
      equal(await db.get('acked-after', { as: 'text' }), 'after', 'acked-after');
      equal(await db.get('big', { as: 'bytes' }), bytes(CHUNK * 5, 12), 'the old value of the stream under way');
      if (home.direct) {
        // The stream's chunks were written before 'acked-after' was flushed: recovery saw them.
        const report = await db.recovery;
        ok(report.discardedTotal >= 1, `recovery dropped the uncommitted stream (${JSON.stringify(report.discarded)})`);
      }
      await db.close();
    },
  },
];

/**
 * Runs every case against `home`; never throws.
 * @returns {Promise<Array<{ name: string, ok: boolean, error?: string, ms: number }>>}
 */
export async function runCases(home, only) {
  const results = [];
  for (const c of cases) {
    if (only && !only.includes(c.name)) continue;
    const start = Date.now();
    try {
      await c.run(home);
      results.push({ name: c.name, ok: true, ms: Date.now() - start });
    } catch (error) {
      results.push({ name: c.name, ok: false, error: `${error?.name}: ${error?.message}`, ms: Date.now() - start });
    }
  }
  return results;
}
