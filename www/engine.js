/**
 * The synchronous store and the engine under every store that runs the core in its own thread
 * (internal: the entry points are sync.js, node.js and cloudflare.js). The SyncStore calls the
 * core directly, with no worker and no message in between: every call but the streaming ones
 * returns its answer at once, as the Durable Objects storage API's synchronous `kv` does.
 *
 * Durability: a `strict` write is flushed (one flush per call: `putMany` and `batch` group
 * many values into one) before the call returns; a `relaxed` write is flushed by the next
 * strict write, `flush()`, `close()`, or a timer within `relaxedFlushMs` (1000 ms).
 */

import { WalnutStore as Core } from './walnut_core.js';
import {
  checkForm,
  checkOpenOptions,
  checkOperation,
  checkOptions,
  checkChangesOptions,
  checkRange,
  checkSeq,
  checkTableName,
  checkWriteOptions,
  describe,
  encodeKey,
  encodeKeys,
  Entry,
  ERROR_CLASSES,
  followFeed,
  watchFeed,
  invalid,
  absentMark,
  encoder,
  putOperations,
  toError,
  unpackChanges,
  unpackKeys,
  unpackQueue,
  valueAs,
  valueBytes,
  WalnutClosedError,
  WalnutError,
  WalnutIoError,
  WalnutPoisonedError,
  WalnutConflictError,
  runTransaction,
  runTransactionSync,
  writeConditions,
  checkExportOptions,
  importChunks,
} from './common.js';

/** Guards the constructors: stores come from the open functions. */
const TOKEN = Symbol('walnut.sync');

/** Bytes of an export per pull (the core gathers its records up to this). */
export const EXPORT_PIECE = 256 * 1024;

/** A table id no table has: reads of a table not created yet find nothing. */
export const NO_TABLE = 0xffffffff;


/** Set once the core trapped (a bug in walnut): no call into this instance is safe after it. */
let trapped;

/**
 * Turns what the core threw into walnut's error classes. A trap (`RuntimeError`) means the
 * WebAssembly instance is in an unknown state: every later call fails.
 * @param {unknown} error
 */
export function fromCore(error) {
  if (error instanceof WebAssembly.RuntimeError) {
    trapped ??= error;
    return new WalnutPoisonedError(
      `walnut's core crashed (${error.message}); nothing acknowledged is lost: open the store again in a new process or worker`,
      { cause: error },
    );
  }
  if (error instanceof WalnutError) return error;
  if (error instanceof Error && ERROR_CLASSES.has(error.name)) return toError(error);
  return error;
}

/**
 * Runs `fn` against the core.
 * @template T
 * @param {() => T} fn
 * @returns {T}
 */
function call(fn) {
  if (trapped) {
    throw new WalnutPoisonedError(`walnut's core crashed earlier (${trapped.message}); open the store again`);
  }
  try {
    return fn();
  } catch (error) {
    throw fromCore(error);
  }
}

/**
 * How long (ms) and how many bytes a streamed write may hold the thread before it gives way to
 * the event loop, as the page's worker gives way between slices of a long task (worker.js
 * giveWay, SLICE_MS). The byte bound holds where the clock stands still between I/O (workerd).
 */
const SLICE_MS = 2;
const SLICE_BYTES = 1 << 20;

/**
 * A promise resolved in a later task (a macrotask, not a microtask): `setImmediate` in Node, a
 * MessageChannel message in browsers (a zero timeout is clamped to 4 ms there when nested).
 * workerd delivers a MessageChannel message in a microtask: cloudflare.js passes a zero
 * timeout instead (Engine's `nextTask` option).
 * @type {() => Promise<void>}
 */
const defaultNextTask =
  typeof setImmediate === 'function'
    ? () => new Promise((resolve) => setImmediate(resolve))
    : typeof MessageChannel === 'function'
      ? channelTask()
      : zeroTimeout;

/** A promise resolved by a zero timeout. @returns {Promise<void>} */
export function zeroTimeout() {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** A nextTask over one MessageChannel, made when first used. */
function channelTask() {
  let channel;
  const resumers = [];
  return () =>
    new Promise((resolve) => {
      if (!channel) {
        channel = new MessageChannel();
        channel.port1.onmessage = () => resumers.shift()?.();
      }
      resumers.push(resolve);
      channel.port2.postMessage(null);
    });
}

/**
 * Paces a long streamed write (a put, a transaction's streamed value, an import): `wrote(n)`
 * after each piece written returns a promise to await when the write has held the thread for
 * SLICE_MS or SLICE_BYTES since it last gave way, else undefined. A source whose chunks are
 * ready at once (an async generator, a Blob in memory) resolves every read in a microtask, so
 * without this the write kept its thread to the end: the sync store in a worker answered 4.5
 * small puts/s during a 256 MiB putStream (p99 967 ms), and a server's other requests waited.
 * @param {() => Promise<void>} [nextTask] how to wait for a later task (defaultNextTask)
 */
export function slicer(nextTask = defaultNextTask) {
  let start = performance.now();
  let bytes = 0;
  const resume = () => {
    start = performance.now();
    bytes = 0;
  };
  return {
    wrote(n) {
      bytes += n;
      if (bytes < SLICE_BYTES && performance.now() - start < SLICE_MS) return undefined;
      return nextTask().then(resume);
    },
  };
}

/**
 * The last number a write took in table `table` (0 if none), of its `lastSeqs()`.
 * @param {Array<{ table: number, last: number }>} seqs
 * @param {number | undefined} table
 */
function seqOf(seqs, table) {
  return seqs.find((s) => s.table === (table ?? 0))?.last ?? 0;
}

/**
 * Yields the chunks of a value source as Uint8Arrays. A Blob is read through a BYOB reader into
 * one lent buffer (no allocation, no garbage per chunk): each chunk is then a view valid until
 * the next is asked for, so the consumer copies it (into wasm memory) at once.
 * @param {Array<(reason: unknown) => void>} [cancels] gets a function that cancels the reader
 *   of a stream source (a Blob's too), ending a read that waits (see untilStopped)
 */
async function* chunksOf(source, param, cancels = []) {
  if (source instanceof Blob) {
    if (source.size === 0) return;
    const lent = byobReader(source);
    if (lent) {
      cancels.push((reason) => lent.cancel(reason).catch(() => {}));
      yield* lentChunks(lent, Math.min(LENT_BYTES, source.size));
      return;
    }
    source = source.stream();
  }
  if (source instanceof ReadableStream) {
    const reader = source.getReader();
    cancels.push((reason) => reader.cancel(reason).catch(() => {}));
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        yield chunkBytes(value, param);
      }
    } finally {
      reader.releaseLock();
    }
  }
  for await (const chunk of source) yield chunkBytes(chunk, param);
}

/**
 * `chunks` (Uint8Arrays, each valid until the next is asked for) regrouped into pieces of whole
 * `size`-byte chunks, the last shorter: a source's pieces are not the log's chunks (a fetch
 * body comes in pieces of a few KiB), and each piece written as a chunk of its own made a
 * value of many small records, slower to write and to read back, with more index per value.
 * A run of whole chunks is passed on as a view of the piece holding it; the rest is gathered
 * in one staging buffer of `size` bytes. Each piece yielded is valid until the next is asked.
 * @param {AsyncIterable<Uint8Array>} chunks
 * @param {number} size the store's chunk size, bytes
 * @param {() => void} check called as each piece arrives (throws to stop: an abort, a close),
 *   so a slow source is stopped at its next piece, not at the next whole chunk
 */
async function* gathered(chunks, size, check) {
  let staging = null;
  let filled = 0;
  for await (const chunk of chunks) {
    check();
    let at = 0;
    while (at < chunk.length) {
      if (filled === 0 && chunk.length - at >= size) {
        const whole = Math.floor((chunk.length - at) / size) * size;
        yield chunk.subarray(at, at + whole);
        at += whole;
        continue;
      }
      staging ??= new Uint8Array(size);
      const n = Math.min(size - filled, chunk.length - at);
      staging.set(chunk.subarray(at, at + n), filled);
      filled += n;
      at += n;
      if (filled === size) {
        filled = 0;
        yield staging;
      }
    }
  }
  if (filled > 0) yield staging.subarray(0, filled);
}

/**
 * The pieces of `pieces`, ended by `stopped`'s rejection as soon as it rejects (an abort, a
 * close), even while the source waits for its next piece: its stream is cancelled (`cancels`)
 * so the read under way ends. An async iterable that is not a stream cannot be interrupted
 * while it waits; it is left to return when it next yields, and the write fails at once.
 * @param {AsyncIterable<Uint8Array>} pieces
 * @param {Promise<never>} stopped
 * @param {Array<(reason: unknown) => void>} cancels
 */
async function* untilStopped(pieces, stopped, cancels) {
  const it = pieces[Symbol.asyncIterator]();
  // One reaction to `stopped` for the whole write: a Promise.race per piece adds a reaction
  // each, and each holds its piece until the write ends (a 256 MiB put held all of it).
  let stop = null;
  let rejectWaiting = null;
  stopped.catch((error) => {
    stop = { error };
    rejectWaiting?.(error);
  });
  let waiting = false;
  try {
    for (;;) {
      waiting = true;
      const { done, value } = await new Promise((resolve, reject) => {
        if (stop) {
          reject(stop.error);
          return;
        }
        rejectWaiting = reject;
        it.next().then(resolve, reject);
      });
      rejectWaiting = null;
      waiting = false;
      if (done) return;
      yield value;
    }
  } catch (error) {
    if (waiting) {
      for (const cancel of cancels) cancel(error);
      // Not awaited: it returns once its read under way ends, which a cancel makes it do.
      it.return?.().catch(() => {});
    }
    throw error;
  } finally {
    if (!waiting) await it.return?.();
  }
}

/** Bytes lent to a Blob's BYOB reader per read. */
const LENT_BYTES = 1 << 20;

/**
 * A BYOB reader of `blob`'s bytes, or null where its stream is not a byte stream.
 * @param {Blob} blob
 */
function byobReader(blob) {
  try {
    return blob.stream().getReader({ mode: 'byob' });
  } catch {
    return null;
  }
}

/**
 * Readers of Blobs under way, held from a root: in Chromium a Blob's byte stream, while a BYOB
 * read is pending, is otherwise reachable only from that read's promise, and a garbage
 * collection then collects the stream with its source, so the read never settles (a put under
 * forced GC hung in the benchmark: the sync store in a worker, whose put awaits only promises).
 */
const reading = new Set();

/**
 * @param {ReadableStreamBYOBReader} reader
 * @param {number} bytes lent per read (1..LENT_BYTES: a small Blob's own size)
 */
async function* lentChunks(reader, bytes) {
  let buffer = new ArrayBuffer(bytes);
  let filled = 0;
  let ended = false;
  reading.add(reader);
  try {
    for (;;) {
      // Filled before it is handed on: a read may return less than it was lent (Firefox reads
      // a disk-backed File 4-64 KiB at a time, even into a 1 MiB view).
      const { done, value } = await reader.read(new Uint8Array(buffer, filled, bytes - filled));
      if (done) {
        ended = true;
        // A read cancelled from elsewhere ends without its buffer: what was read is lost.
        if (!value) throw new WalnutIoError('reading the value failed: its stream was cancelled');
        if (filled > 0) yield new Uint8Array(value.buffer, 0, filled);
        return;
      }
      buffer = value.buffer;
      filled += value.byteLength;
      if (filled === bytes) {
        filled = 0;
        yield new Uint8Array(buffer, 0, bytes);
      }
    }
  } finally {
    reading.delete(reader);
    // Given up early (a failed write, an abort): the Blob's stream is cancelled, not left open.
    if (!ended) reader.cancel().catch(() => {});
    else reader.releaseLock();
  }
}

function chunkBytes(chunk, param) {
  const bytes = valueBytes(chunk, `${param} chunk`);
  if (bytes === undefined) throw invalid(`${param} chunks must be bytes or strings, got ${describe(chunk)}`);
  return bytes;
}

/**
 * The core, one store's worth: what the synchronous store and the async facades over it
 * share. Writes return their commit's ticket; `settle(tickets)` flushes once for all of them
 * (group commit) and reports each one's failure. Internal: applications use SyncStore.
 */
export class Engine {
  #core;
  #closed = false;
  #readers = new Set();
  #flushTimer;
  #relaxedFlushMs;
  /** How a long streamed write waits for a later task (slicer). */
  #nextTask;
  #onClose;
  /** The first failure of a background flush, thrown by the next flush() or close(). */
  #flushError;

  /**
   * @param {Core} core
   * @param {{ name: string, relaxedFlushMs?: number, onClose?: () => void, nextTask?: () => Promise<void> }} options
   *   `nextTask`: how a long streamed write waits for a later task (see slicer)
   */
  constructor(core, { name, relaxedFlushMs = 1000, onClose, nextTask = defaultNextTask }) {
    this.#core = core;
    this.#nextTask = nextTask;
    this.name = name;
    this.recovery = call(() => core.recovery());
    this.chunkSize = core.chunkSize;
    this.#relaxedFlushMs = relaxedFlushMs;
    this.#onClose = onClose;
  }

  get closed() {
    return this.#closed;
  }

  #live() {
    if (this.#closed) throw new WalnutClosedError(`store ${this.name} is closed`);
    return this.#core;
  }

  /** Rejecters of the stoppers of writes under way (see #stopper), called by close(). */
  #stops = new Set();

  /**
   * A promise that rejects when `signal` aborts (with its reason) or the store closes
   * (WalnutClosedError), to race a source's next piece with; `done()` forgets it.
   * @param {AbortSignal} [signal]
   */
  #stopper(signal) {
    let stop;
    const promise = new Promise((_, reject) => {
      stop = reject;
    });
    promise.catch(() => {}); // raced, not always awaited
    const onAbort = () => stop(signal.reason);
    const onClose = () => stop(new WalnutClosedError(`store ${this.name} is closed`));
    if (signal?.aborted) onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    this.#stops.add(onClose);
    return {
      promise,
      done: () => {
        signal?.removeEventListener('abort', onAbort);
        this.#stops.delete(onClose);
      },
    };
  }

  /**
   * `pieces` until `signal` aborts or the store closes, even while the source waits for its
   * next piece (see untilStopped; `cancels` as chunksOf and importChunks fill it).
   */
  async *#untilStopped(pieces, cancels, signal) {
    const stopper = this.#stopper(signal);
    try {
      yield* untilStopped(pieces, stopper.promise, cancels);
    } finally {
      stopper.done();
    }
  }

  /** Runs a write; a relaxed one arms the flush timer. */
  #write(strict, fn) {
    const core = this.#live();
    const result = call(() => fn(core));
    if (!strict) this.#armFlush();
    this.#notify();
    return result;
  }

  /** Waiters of changed(): woken after every write. */
  #waiters = new Set();

  #notify() {
    for (const wake of this.#waiters) wake();
    this.#waiters.clear();
  }

  /**
   * Resolves after the next write through this engine, or after `ms`, or when `signal` aborts.
   * @param {number} ms
   * @param {AbortSignal} [signal]
   */
  changed(ms, signal) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        this.#waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal?.addEventListener('abort', done, { once: true });
      this.#waiters.add(done);
    });
  }

  #armFlush() {
    if (this.#flushTimer !== undefined || this.#relaxedFlushMs === Infinity) return;
    this.#flushTimer = setTimeout(() => {
      this.#flushTimer = undefined;
      if (this.#closed) return;
      try {
        call(() => this.#core.sync());
      } catch (error) {
        this.#flushError ??= error;
      }
    }, this.#relaxedFlushMs);
    // In Node, a pending relaxed flush does not keep the process alive (close() flushes).
    this.#flushTimer?.unref?.();
  }

  /**
   * In table `table` (an id; undefined: the default table).
   * @returns {number} the put's ticket
   */
  put(key, bytes, strict, table) {
    return this.#write(strict, (core) => core.put(key.bytes, key.isString, bytes, strict, table));
  }

  /** @returns {{ existed: boolean, ticket: number }} */
  delete(key, strict, table) {
    return this.#write(strict, (core) => core.delete(key.bytes, strict, table));
  }

  /** Appends to table `table`'s queue. @returns {number} the ticket */
  append(table, bytes, strict) {
    return this.#write(strict, (core) => core.append(table, bytes, strict));
  }

  /**
   * The sequence numbers the last write took: `[{ table, first, last }]` (table ids).
   * @returns {Array<{ table: number, first: number, last: number }>}
   */
  lastSeqs() {
    const flat = this.#live().lastSeqs();
    const out = [];
    for (let i = 0; i + 2 < flat.length; i += 3) out.push({ table: flat[i], first: flat[i + 1], last: flat[i + 2] });
    return out;
  }

  /** The last sequence number the last write took in table `table` (0 if none). */
  lastSeqOf(table) {
    return seqOf(this.lastSeqs(), table);
  }

  /** The id of table `name`, or undefined. */
  tableId(name) {
    return this.#live().tableId(name);
  }

  /**
   * The id a call on table `name` uses: undefined for the default table (`name` undefined);
   * for a named one, created if `create` (a write), else NO_TABLE while it does not exist.
   */
  tid(name, create) {
    if (name === undefined) return undefined;
    const id = this.tableId(name);
    if (id !== undefined) return id;
    return create ? this.createTable(name) : NO_TABLE;
  }

  /** Table `name`'s (or the default table's) sequence marks, zeros if it does not exist. */
  tableInfo(name) {
    const id = name === undefined ? 0 : this.tableId(name);
    const t = this.tables().find((x) => x.id === id);
    return { lastSeq: t?.lastSeq ?? 0, flushedSeq: t?.flushedSeq ?? 0, deletedUpTo: t?.deletedUpTo ?? 0 };
  }

  /**
   * A table view's read(): table `name`'s queue entries from `options.from`, at most
   * `options.limit`, values in the form `options.as` (default `form`). A table that does not
   * exist reads as empty.
   * @returns {Array<{ seq: number, size: number, value: unknown }>}
   */
  readOf(name, options, form) {
    const { from = 0, limit, as } = checkOptions(options, 'options');
    checkSeq(from, 'options.from');
    if (limit !== undefined && !(Number.isInteger(limit) && limit >= 0 && limit <= 0xffffffff)) {
      throw invalid(`options.limit must be a whole number, got ${describe(limit)}`);
    }
    const shape = checkForm(as, form);
    if (shape === 'stream') throw invalid("options.as cannot be 'stream' for read(); use stream()");
    const tid = this.tid(name, false) ?? 0;
    return this.readQueueValues(tid, from, limit).map(({ seq, size, value }) => ({ seq, size, value: valueAs(value, shape) }));
  }

  /**
   * A table view's stream(): table `name`'s queue entries from `options.from` on, one at a time,
   * each value a stream; `live()` throws once the view's store is closed.
   */
  async *streamOf(name, options, live) {
    const { from = 0 } = checkOptions(options, 'options');
    let next = checkSeq(from, 'options.from');
    for (;;) {
      live();
      const tid = this.tid(name, false) ?? 0;
      const [entry] = this.readQueue(tid, next, 1);
      if (entry === undefined) return;
      const value = this.stream(undefined, undefined, { table: tid, seq: entry.seq });
      if (value !== undefined) yield { seq: entry.seq, size: entry.size, value };
      next = entry.seq + 1;
    }
  }

  /** A table view's changes(): table `name`'s change feed (none for the default table). */
  changesOf(name, options) {
    const { since, limit } = checkChangesOptions(options);
    if (name === undefined) return [];
    return this.changes(this.tid(name, false), since, limit);
  }

  /**
   * Resolves the table names of batch operations to ids (creating the tables they write), the
   * others to the view's table `ownName` (undefined: the default table); returns a map from id
   * to name for reporting sequence numbers.
   */
  resolveOps(ops, ownName) {
    const names = new Map([[0, '']]);
    let own;
    for (const op of ops) {
      if (op.table === undefined) {
        // The view's own table, created only when an operation writes to it.
        if (own === undefined && ownName !== undefined) {
          own = this.tid(ownName, true);
          names.set(own, ownName);
        }
        op.table = own;
        continue;
      }
      const id = this.tid(op.table, true);
      names.set(id, op.table);
      op.table = id;
    }
    return names;
  }

  /** The last write's sequence numbers, with table names from `names`. */
  namedSeqs(names, seqs = this.lastSeqs()) {
    return seqs.map(({ table, first, last }) => ({ table: names.get(table) ?? '', first, last }));
  }

  /** Creates table `name` (flushed) or finds it. @returns {number} its id */
  createTable(name) {
    const core = this.#live();
    return call(() => core.createTable(name));
  }

  /** Drops table `name` (flushed). @returns {boolean} whether it existed */
  dropTable(name) {
    const core = this.#live();
    return call(() => core.dropTable(name));
  }

  /** @returns {Array<{ id: number, name: string, lastSeq: number, flushedSeq: number, deletedUpTo: number }>} */
  tables() {
    const core = this.#live();
    return call(() => core.tables());
  }

  /** @returns {number} the ticket */
  markFlushed(table, seq, strict) {
    if (table === NO_TABLE) return absentMark(seq);
    return this.#write(strict, (core) => core.markFlushed(table, seq, strict));
  }

  /** @returns {number} the ticket (0: nothing written) */
  deleteUpTo(table, seq, strict) {
    if (table === NO_TABLE) return absentMark(seq);
    return this.#write(strict, (core) => core.deleteUpTo(table, seq, strict));
  }

  /**
   * Table `table`'s queue entries from `from`: `[{ seq, size }]`, at most `limit`.
   * @returns {Array<{ seq: number, size: number }>}
   */
  readQueue(table, from, limit) {
    const core = this.#live();
    const flat = call(() => core.readQueue(table, from, limit));
    const out = [];
    for (let i = 0; i + 1 < flat.length; i += 2) out.push({ seq: flat[i], size: flat[i + 1] });
    return out;
  }

  /** Table `table`'s change feed after `since`: `[{ seq, type, key, size, current }]`. */
  changes(table, since, limit) {
    const core = this.#live();
    return unpackChanges(call(() => core.changes(table, since, limit)));
  }

  /** Table `table`'s queue entries from `from` with their values: `[{ seq, size, value }]`. */
  readQueueValues(table, from, limit) {
    const core = this.#live();
    return unpackQueue(call(() => core.readQueueValues(table, from, limit)));
  }

  /** @returns {{ count: number, ticket: number }} */
  clear(strict) {
    return this.#write(strict, (core) => core.clear(strict));
  }

  /**
   * Writes puts (whose values are bytes) and deletes in one transaction.
   * @param {Array<{ type: 'put' | 'delete', key: Uint8Array, isString: boolean, value?: Uint8Array }>} ops
   * @returns {number} the commit's ticket
   */
  batch(ops, strict, conditions = {}) {
    const { checks, txId } = conditions;
    if (checks) this.checkVersions(checks); // in the same turn as the commit
    return this.#write(strict, (core) => {
      const txn = core.begin();
      try {
        for (const op of ops) {
          if (op.type === 'delete') {
            core.txnDelete(txn, op.key, op.table);
          } else {
            if (op.type === 'append') core.txnAppend(txn, op.table);
            else core.txnPut(txn, op.key, op.isString, op.table);
            if (op.value.length > 0) core.txnChunk(txn, op.value);
          }
        }
        return txId === undefined ? core.commit(txn, strict) : this.#commitWithId(core, txn, strict, txId);
      } catch (error) {
        abortQuietly(core, txn);
        throw error;
      }
    });
  }

  /**
   * Commits `txn` under the caller's id `txId`: `{ applied, ticket, version }`; a commit made
   * before under that id (committed or queued) leaves this one aborted, `applied` false.
   */
  #commitWithId(core, txn, strict, txId) {
    const id = encoder.encode(txId);
    const earlier = core.idStatus(id);
    if (earlier) {
      abortQuietly(core, txn);
      return { applied: false, ticket: earlier.committed ? 0 : earlier.ticket, version: earlier.lsn };
    }
    const { ticket } = core.commitWithId(txn, strict, id);
    return { applied: true, ticket, version: core.lastLsn };
  }

  /**
   * Writes puts and deletes as one transaction, streaming each value that is a source (a
   * ReadableStream, a Blob, an async iterable) chunk by chunk as it yields them: memory holds
   * one source chunk at a time. Old values stand until the commit; an error, an abort or a
   * close aborts the transaction and cancels the streams not read to their end.
   * @param {Array<{ type: 'put' | 'delete', key: Uint8Array, isString: boolean, value?: Uint8Array | ReadableStream | Blob | AsyncIterable<unknown>, param?: string }>} ops
   * @param {{ strict: boolean, onProgress?: (bytes: number, total?: number) => void, signal?: AbortSignal }} options
   * @returns {Promise<{ ticket: number | { applied: boolean, ticket: number, version: number }, seqs: Array<{ table: number, first: number, last: number }> }>}
   *   the commit's ticket (with `txId`, commitWithId's answer) and the sequence numbers it
   *   took, read in the commit's own turn (a microtask later, another stream may have
   *   committed: its numbers would be read instead)
   */
  async transaction(ops, { strict, onProgress, signal, checks, txId }) {
    let total = 0;
    for (const op of ops) {
      const size = op.value instanceof Uint8Array || op.value instanceof Blob ? (op.value.size ?? op.value.length) : undefined;
      total = total === undefined || size === undefined ? undefined : total + size;
    }
    const core = this.#live();
    let txn;
    let written = 0;
    let reported = -1;
    const report = () => {
      if (onProgress && reported !== written) onProgress((reported = written), total);
    };
    const check = () => {
      signal?.throwIfAborted();
      this.#live();
    };
    let current;
    const slices = slicer(this.#nextTask);
    try {
      check();
      txn = call(() => core.begin());
      for (const op of ops) {
        if (op.type === 'delete') {
          call(() => core.txnDelete(txn, op.key, op.table));
          continue;
        }
        if (op.type === 'append') call(() => core.txnAppend(txn, op.table));
        else call(() => core.txnPut(txn, op.key, op.isString, op.table));
        if (op.value instanceof Uint8Array) {
          if (op.value.length > 0) call(() => core.txnChunk(txn, op.value));
          written += op.value.length;
          report();
          continue;
        }
        const cancels = [];
        const pieces = gathered(chunksOf(op.value, op.param ?? 'value', cancels), this.chunkSize, check);
        current = this.#untilStopped(pieces, cancels, signal);
        for await (const chunk of current) {
          check();
          call(() => core.txnChunk(txn, chunk));
          written += chunk.length;
          report();
          await slices.wrote(chunk.length);
        }
        current = undefined;
      }
      check();
      report(); // a write of empty values gets its one report here
      if (checks) this.checkVersions(checks); // in the same turn as the commit
      const ticket = call(() => (txId === undefined ? core.commit(txn, strict) : this.#commitWithId(core, txn, strict, txId)));
      const seqs = this.lastSeqs();
      if (!strict) this.#armFlush();
      return { ticket, seqs };
    } catch (error) {
      if (txn !== undefined && !this.#closed) abortQuietly(core, txn);
      await current?.return?.();
      for (const { value } of ops) {
        if (value instanceof ReadableStream && !value.locked) await value.cancel(error).catch(() => {});
      }
      throw error;
    }
  }

  // ----- interactive transactions (the core's txn.rs) -----

  /**
   * The calls a transaction runner needs (common.js runTransaction; SyncStore's runs them
   * synchronously): tables by name, values as bytes or (async only) sources streamed in chunks.
   * `durable(ticket, strict)` waits for a strict commit (the store's committer).
   */
  txDriver(durable) {
    const id = (txId) => encoder.encode(txId ?? '');
    return {
      begin: (txId, strict) => {
        const core = this.#live();
        if (txId !== undefined) {
          const status = call(() => core.idStatus(id(txId)));
          if (status?.committed) {
            // Strict: answered once the earlier commit (perhaps relaxed) is flushed.
            const out = { duplicate: true, version: status.lsn };
            const waited = strict ? durable(0, true) : undefined;
            return waited === undefined ? out : waited.then(() => out);
          }
        }
        return { txn: call(() => core.txBegin()) };
      },
      // A read in a table that does not exist reads nothing, and is noted: the table's
      // creation with that key (or in that range) before the commit is a conflict.
      get: (txn, key, table) => {
        const tid = this.tid(table, false);
        if (tid !== NO_TABLE) return call(() => this.#live().txGet(txn, key, tid));
        call(() => this.#live().txNoteAbsent(txn, table, key, undefined));
        return undefined;
      },
      keys: (txn, range, table) => {
        const tid = this.tid(table, false);
        if (tid !== NO_TABLE) return unpackKeys(call(() => this.#live().txKeys(txn, range, tid)));
        call(() => this.#live().txNoteAbsent(txn, table, undefined, range));
        return [];
      },
      // `signal`: the transaction's; an abort ends a source's streaming at once (see untilStopped).
      put: (txn, key, value, table, signal) => {
        const core = this.#live();
        const tid = this.tid(table, true);
        if (value instanceof Uint8Array) return call(() => core.txPut(txn, key.bytes, key.isString, value, tid));
        // A source (async stores only): streamed in, chunk by chunk.
        return (async () => {
          call(() => core.txnPut(txn, key.bytes, key.isString, tid));
          const slices = slicer(this.#nextTask);
          const cancels = [];
          const check = () => {
            signal?.throwIfAborted();
            this.#live();
          };
          const pieces = gathered(chunksOf(value, 'value', cancels), this.chunkSize, check);
          for await (const chunk of this.#untilStopped(pieces, cancels, signal)) {
            call(() => this.#live().txnChunk(txn, chunk));
            await slices.wrote(chunk.length);
          }
        })();
      },
      delete: (txn, key, table) => call(() => this.#live().txnDelete(txn, key, this.tid(table, true))),
      nest: (txn) => call(() => this.#live().txNest(txn)),
      end: (txn, keep) => call(() => this.#live().txEnd(txn, keep)),
      commit: (txn, txId, strict) => {
        const r = this.#write(strict, (core) => core.txCommit(txn, strict, id(txId)));
        const out = { applied: r.applied, version: r.lsn };
        const waited = durable(r.ticket, strict);
        return waited === undefined ? out : waited.then(() => out);
      },
      abort: (txn) => {
        if (!this.#closed) call(() => this.#live().txAbort(txn));
      },
    };
  }

  /**
   * A consistent snapshot of the store as one `.walnut` file (docs/FORMAT.md section 12): a
   * valid walnut log holding every table, value, queue and change-feed entry, sequence marks and
   * commit ids, taken when this is called; the store keeps serving calls while it streams, one
   * chunk in memory at a time. The `walnut` tool imports it (`walnut import`).
   * @param {{ signal?: AbortSignal, onProgress?: (bytes: number) => void }} [options]
   * @returns {ReadableStream<Uint8Array>}
   */
  exportStream({ signal, onProgress } = {}) {
    const core = this.#live();
    const id = call(() => core.exportBegin());
    let bytes = 0;
    let open = true;
    const cancel = () => {
      if (open && !this.#closed) call(() => core.exportCancel(id));
      open = false;
    };
    return new ReadableStream({
      pull: (controller) => {
        try {
          signal?.throwIfAborted();
          const piece = call(() => this.#live().exportNext(id, EXPORT_PIECE));
          // A piece shorter than asked is the last: the core has finished the export.
          if (piece === undefined || piece.length < EXPORT_PIECE) open = false;
          if (piece !== undefined) {
            bytes += piece.length;
            onProgress?.(bytes);
            controller.enqueue(piece);
          }
          if (!open) controller.close();
        } catch (error) {
          cancel();
          controller.error(error);
        }
      },
      cancel,
    });
  }

  /**
   * Imports a `.walnut` file (an export) into this store, which must be empty: the file goes to
   * a new file of the store, is checked whole, and only then replaces the store's log, in steps
   * that each recover to the empty store or to the import (docs/FORMAT.md section 12). Other
   * calls go on meanwhile; a write meanwhile makes the import fail at its end (nothing lost).
   * @param {Parameters<typeof importChunks>[0]} source
   * @param {{ signal?: AbortSignal, onProgress?: (bytes: number) => void }} options
   * @returns {Promise<{ values: number, bytes: number }>} entries now held, bytes imported
   */
  async importSource(source, { signal, onProgress } = {}) {
    signal?.throwIfAborted();
    const cancels = [];
    const chunks = importChunks(source, cancels);
    // On OPFS the staged file, and the switch's sealed segment and checkpoints, take files
    // from the pool: topped up first (elsewhere this resolves at once).
    await this.#live().refillPool();
    call(() => this.#live().importBegin());
    let bytes = 0;
    const slices = slicer(this.#nextTask);
    try {
      // An abort or a close ends the import at once, even while its source waits for a piece.
      for await (const chunk of this.#untilStopped(chunks, cancels, signal)) {
        signal?.throwIfAborted();
        call(() => this.#live().importWrite(chunk));
        bytes += chunk.length;
        onProgress?.(bytes);
        await slices.wrote(chunk.length);
      }
      signal?.throwIfAborted();
      await this.#live().refillPool();
      return call(() => this.#live().importFinish());
    } catch (error) {
      if (!this.#closed) this.#core.importCancel();
      throw error;
    }
  }

  /** Checks that this store, opened on an export file, holds the whole export (throws naming where it is cut). */
  checkImport() {
    call(() => this.#live().checkImport());
  }

  /** The version of `key` (the LSN of its value's commit), or null if absent. */
  versionOf(key, table) {
    if (table === NO_TABLE) return null;
    return call(() => this.#live().versionOf(key, table)) ?? null;
  }

  /**
   * Checks `[{ key, table (name), version (-1: absent) }]` against the store, in one turn with
   * the write that follows; throws WalnutConflictError naming the first key that differs.
   */
  checkVersions(checks) {
    const flat = [];
    for (const { key, table, version } of checks) {
      const tid = this.tid(table, false);
      if (tid === NO_TABLE) {
        if (version !== -1) throw new WalnutConflictError(`table ${table} does not exist, the check expects version ${version}`);
        continue;
      }
      flat.push(tid ?? 0, key, version);
    }
    call(() => this.#live().checkVersions(flat));
  }

  /**
   * Flushes once and reports, for each ticket, `undefined` (durable) or the error that failed
   * its commit (group commit).
   * @param {number[]} tickets
   * @returns {Array<Error | undefined>}
   */
  settle(tickets) {
    const core = this.#live();
    const failures = call(() => core.commitGroup(Float64Array.from(tickets)));
    return Array.from(failures, (failure) => (failure === undefined ? undefined : fromCore(failure)));
  }

  /**
   * Flushes the commit `ticket` (and every one before it); throws its failure. Ticket 0 (a
   * strict call that wrote nothing: a delete of an absent key, a commit id already used, a
   * clear() of an empty store) flushes too: its answer may rest on relaxed writes not yet
   * flushed (the key a relaxed delete removed), which a power cut would take back.
   */
  commit(ticket) {
    if (ticket === 0) {
      this.durable();
      return;
    }
    const [failure] = this.settle([ticket]);
    if (failure) throw failure;
  }

  /**
   * Makes every write so far durable for a strict call that wrote nothing (see `commit`):
   * flushes if anything was written since the last flush; throws if that flush fails.
   */
  durable() {
    const core = this.#live();
    call(() => core.sync());
  }

  /** Makes every write so far durable, relaxed ones too; throws a background flush's failure. */
  flush() {
    const core = this.#live();
    clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    call(() => core.sync());
    this.#throwFlushError();
  }

  #throwFlushError() {
    const error = this.#flushError;
    this.#flushError = undefined;
    if (error) throw error;
  }

  /** @returns {Uint8Array | undefined} the whole value */
  get(key, table) {
    const core = this.#live();
    if (trapped) return call(() => undefined); // throws
    // The hot path of small reads: no closure per call.
    try {
      return core.get(key, table);
    } catch (error) {
      throw fromCore(error);
    }
  }

  has(key, table) {
    const core = this.#live();
    return call(() => core.has(key, table));
  }

  /** @returns {Array<{ key: string | Uint8Array, bytes: Uint8Array, size: number }>} */
  scan(range, table) {
    const core = this.#live();
    return unpackKeys(call(() => core.keys(range, table)));
  }

  /**
   * A stream of the committed value of `key`, one chunk per pull, or undefined. The value's
   * chunks are pinned (compaction leaves them) until the stream ends or is cancelled.
   * @returns {ReadableStream<Uint8Array> | undefined}
   */
  stream(key, table, entry) {
    const core = this.#live();
    const opened = call(() => (entry ? core.openEntry(entry.table, entry.seq) : core.openReader(key, table)));
    if (opened === undefined) return undefined;
    const { id } = opened;
    this.#readers.add(id);
    const done = () => {
      if (this.#readers.delete(id) && !this.#closed && !trapped) core.closeReader(id);
    };
    // A byte stream: a BYOB reader's buffer is read into straight from the core (through a
    // scratch chunk when the buffer is shorter than a chunk), so reading a value of any size
    // allocates nothing per chunk; a default reader gets each chunk as a new Uint8Array.
    let scratch = null;
    /** What is left of a chunk a BYOB read took only part of (in `scratch`). */
    let rest = null;
    const next = (into) => {
      try {
        return call(() => (into ? core.readNextInto(id, into) : core.readNext(id)));
      } catch (error) {
        done();
        throw error;
      }
    };
    return new ReadableStream({
      type: 'bytes',
      pull: (controller) => {
        if (!this.#readers.has(id) && rest === null) {
          controller.error(new WalnutClosedError(`store ${this.name} was closed while the value was read`));
          return;
        }
        const request = controller.byobRequest;
        const view = request?.view && new Uint8Array(request.view.buffer, request.view.byteOffset, request.view.byteLength);
        if (!view) {
          // (A rest lives in `scratch`, which is reused: enqueue a copy of it, not it.)
          const chunk = rest ? rest.slice() : next();
          rest = null;
          if (chunk === undefined) {
            this.#readers.delete(id); // the core closed it at the end
            controller.close();
          } else {
            controller.enqueue(chunk);
          }
          return;
        }
        if (rest === null) {
          const direct = view.length >= this.chunkSize;
          if (!direct) scratch ??= new Uint8Array(this.chunkSize);
          // A number: the chunk's length, read into the buffer given; a Uint8Array: a chunk
          // longer than it (written with a larger chunkSize), as its own array.
          const got = next(direct ? view : scratch);
          if (got === undefined) {
            this.#readers.delete(id);
            controller.close();
            request.respond(0);
            return;
          }
          if (direct && typeof got === 'number') {
            request.respond(got);
            return;
          }
          rest = typeof got === 'number' ? scratch.subarray(0, got) : got;
        }
        const n = Math.min(view.length, rest.length);
        view.set(rest.subarray(0, n));
        rest = n < rest.length ? rest.subarray(n) : null;
        request.respond(n);
      },
      cancel: done,
    });
  }

  stats() {
    const core = this.#live();
    return call(() => core.stats());
  }

  checkpoint() {
    const core = this.#live();
    call(() => core.checkpoint());
  }

  /**
   * Compacts one step (at most one chunk copied).
   * @returns {'idle' | 'progress' | 'done'}
   */
  compactStep() {
    const core = this.#live();
    return call(() => core.compactStep());
  }

  /**
   * Flushes, writes the closing checkpoint, releases the files (and their lock). Idempotent.
   * Throws if the store could not be closed cleanly (nothing acknowledged is lost).
   */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    for (const stop of this.#stops) stop(); // writes waiting on a source end now
    this.#stops.clear();
    clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    this.#readers.clear();
    try {
      if (!trapped) call(() => this.#core.close());
    } finally {
      if (!trapped) this.#core.free();
      this.#onClose?.();
    }
    this.#throwFlushError();
  }
}

function checkSource(source) {
  const streamable =
    source instanceof ReadableStream ||
    source instanceof Blob ||
    (source !== null && typeof source === 'object' && typeof source[Symbol.asyncIterator] === 'function');
  if (!streamable) {
    throw invalid(`source must be a ReadableStream, a Blob or an async iterable, got ${describe(source)}`);
  }
}

function abortQuietly(core, txn) {
  try {
    core.abort(txn);
  } catch {
    // The store failed under the transaction; recovery drops it as uncommitted.
  }
}

/**
 * A store whose calls answer synchronously. Made by `openSync()` (OPFS, in a dedicated worker),
 * `walnut-kv/node`'s `openSync()` and `walnut-kv/cloudflare`'s `openDurableObject()`.
 */
export class SyncStore {
  #engine;
  #durability;
  /** The table this view writes to (a name), or undefined for the store's default table. */
  #table;

  /**
   * @param {symbol} token
   * @param {Engine} engine
   * @param {'strict' | 'relaxed'} durability the default of writes
   * @param {string} [table]
   */
  constructor(token, engine, durability, table) {
    if (token !== TOKEN) throw new TypeError('use openSync() to open a store');
    this.#engine = engine;
    this.#durability = durability;
    this.#table = table;
  }

  /**
   * The id of this view's table: undefined for the default table; for a named one, created on
   * the first write (`create`), else NO_TABLE while it does not exist.
   */
  #tid(create) {
    return this.#engine.tid(this.#table, create);
  }

  /** The sequence number the last write took in this view's table. */
  #seq(tid) {
    return this.#engine.lastSeqOf(tid ?? 0);
  }

  /**
   * Table `name` of this store: a namespace with its own ordered keys and the store's whole
   * API (get, put, delete, keys, entries, batch, putStream, getStream...), its own sequence
   * numbers (every committed write takes the next, from 1), and a queue (`append`, `read`,
   * `deleteUpTo`). Created by its first write. (HoraeDB's table units in one shared log.)
   * @param {string} name 1 to 255 bytes of UTF-8
   * @returns {SyncStore}
   */
  table(name) {
    return new SyncStore(TOKEN, this.#engine, this.#durability, checkTableName(name));
  }

  /** This view's table name (undefined for the store itself). */
  get tableName() {
    return this.#table;
  }

  /**
   * The store's named tables: `[{ name, lastSeq, flushedSeq, deletedUpTo }]`, by creation.
   * @returns {Array<{ name: string, lastSeq: number, flushedSeq: number, deletedUpTo: number }>}
   */
  tables() {
    return this.#engine
      .tables()
      .filter((t) => t.id !== 0)
      .map(({ name, lastSeq, flushedSeq, deletedUpTo }) => ({ name, lastSeq, flushedSeq, deletedUpTo }));
  }

  /**
   * Drops table `name` at once (one flushed record): its keys, queue and marks are gone; its
   * space is reclaimed by compaction. A table of the same name created later starts afresh.
   * @returns {boolean} whether it existed
   */
  dropTable(name) {
    return this.#engine.dropTable(checkTableName(name));
  }

  /** The last sequence number a committed write to this table took (0: none yet). */
  get lastSeq() {
    return this.#engine.tableInfo(this.#table).lastSeq;
  }

  /** The flushed sequence number last persisted with markFlushed() (0: none). */
  get flushedSeq() {
    return this.#engine.tableInfo(this.#table).flushedSeq;
  }

  /** Queue entries at or below this sequence number are deleted (deleteUpTo()). */
  get deletedUpTo() {
    return this.#engine.tableInfo(this.#table).deletedUpTo;
  }

  /**
   * Stores `value` as this table's next queue entry.
   * @param {string | ArrayBuffer | ArrayBufferView} value
   * @param {{ durability?: 'strict' | 'relaxed' }} [options]
   * @returns {number} its sequence number
   */
  append(value, options) {
    const strict = this.#strict(options);
    const bytes = valueBytes(value, 'value');
    if (bytes === undefined) {
      throw invalid(`value is a ${describe(value)}: a synchronous append takes bytes or a string; use appendStream()`);
    }
    const tid = this.#namedTable('append');
    this.#settle(this.#engine.append(tid, bytes, strict), strict);
    return this.#seq(tid);
  }

  /**
   * Streams a value in as this table's next queue entry (one transaction, as putStream()).
   * @returns {Promise<number>} its sequence number
   */
  async appendStream(source, options) {
    const { onProgress, signal, strict } = checkWriteOptions(options, this.#durability);
    checkSource(source);
    const tid = this.#namedTable('appendStream');
    const { ticket, seqs } = await this.#engine.transaction([{ type: 'append', table: tid, value: source, param: 'source' }], {
      strict,
      onProgress,
      signal,
    });
    this.#settle(ticket, strict);
    return seqOf(seqs, tid);
  }

  /** This view's table id for `call`, which only a named table has (created if `create`). */
  #namedTable(call, create = true) {
    if (this.#table === undefined) throw invalid(`${call}() needs a table: db.table(name).${call}(...)`);
    return this.#tid(create);
  }

  /**
   * This table's queue entries from sequence number `from` (default 1), at most `limit`, in
   * sequence order: `[{ seq, size, value }]`, values in the form `as` (default 'bytes').
   * @param {{ from?: number, limit?: number, as?: 'bytes' | 'text' | 'json' | 'blob' }} [options]
   */
  read(options) {
    return this.#engine.readOf(this.#table, options, 'bytes');
  }

  /**
   * This table's queue entries from `from` on, one at a time, each value as a stream (large
   * values stay out of memory): `for await (const { seq, size, value } of table.stream())`.
   * @param {{ from?: number }} [options]
   */
  stream(options) {
    return this.#engine.streamOf(this.#table, options, () => {});
  }

  /**
   * This table's change feed after sequence number `since` (default 0: from the start), at
   * most `limit` changes: `[{ seq, type: 'put' | 'delete', key, size, current }]` in sequence
   * order, every put and delete of its keys (not its queue appends) until deleteUpTo() passes
   * it; `current` says whether the change made the key's present state (values are not kept
   * for the feed: read the key for it).
   * @param {{ since?: number, limit?: number }} [options]
   */
  changes(options) {
    return this.#engine.changesOf(this.#table, options);
  }

  /**
   * Follows this table's change feed: replays the changes after `since`, then waits for new
   * ones (checked every `interval` ms, default 100, and after each write through this store),
   * until `signal` aborts: `for await (const change of table.follow({ since }))`.
   * @param {{ since?: number, signal?: AbortSignal, interval?: number }} [options]
   */
  follow(options) {
    return followFeed((o) => this.changes(o), (ms, signal) => this.#engine.changed(ms, signal), options);
  }

  /**
   * Calls `callback` with each change of this table's feed after `since`, then with each new
   * one, until `signal` aborts (follow() as a callback); resolves when it stops.
   * @param {{ since?: number, signal?: AbortSignal, interval?: number }} options
   * @param {(change: { seq: number, type: 'put' | 'delete', key: string | Uint8Array, size: number, current: boolean }) => void} callback
   */
  watch(options, callback) {
    return watchFeed(this.follow(options), callback);
  }

  /**
   * Persists `seq` as this table's flushed sequence number (HoraeDB's MaxSeq): after a crash
   * `flushedSeq` is the last one acknowledged. It never goes back.
   * @param {number} seq
   */
  markFlushed(seq, options) {
    const strict = this.#strict(options);
    checkSeq(seq);
    const tid = this.#namedTable('markFlushed', false);
    this.#settle(this.#engine.markFlushed(tid, seq, strict), strict);
  }

  /**
   * Deletes this table's queue entries at or below `seq`, at once (one record); sequence
   * numbers go on above every number handed out.
   * @param {number} seq
   */
  deleteUpTo(seq, options) {
    const strict = this.#strict(options);
    checkSeq(seq);
    const tid = this.#namedTable('deleteUpTo', false);
    this.#settle(this.#engine.deleteUpTo(tid, seq, strict), strict);
  }

  /** The store's name (OPFS) or directory (Node). */
  get name() {
    return this.#engine.name;
  }

  /** What recovery did when the store was opened (see RecoveryReport in walnut.d.ts). */
  get recovery() {
    return this.#engine.recovery;
  }

  /** Bytes per log chunk. */
  get chunkSize() {
    return this.#engine.chunkSize;
  }

  /** Whether close() was called. */
  get closed() {
    return this.#engine.closed;
  }

  #strict(options) {
    return checkWriteOptions(options, this.#durability).strict;
  }

  /**
   * The committed value of `key`, or undefined.
   * @param {string | Uint8Array} key
   * @param {{ as?: 'bytes' | 'text' | 'json' | 'blob' | 'stream' }} [options] the form, default 'bytes'
   */
  get(key, options) {
    const as = options === undefined ? 'bytes' : checkForm(checkOptions(options, 'options').as, 'bytes');
    const { bytes } = encodeKey(key);
    const tid = this.#tid(false);
    if (as === 'stream') return this.#engine.stream(bytes, tid);
    const value = this.#engine.get(bytes, tid);
    return value === undefined ? undefined : valueAs(value, as);
  }

  /**
   * The values of `keys`, in order (undefined where absent), read at one moment.
   * @param {Array<string | Uint8Array>} keys
   * @param {{ as?: 'bytes' | 'text' | 'json' | 'blob' }} [options]
   */
  getMany(keys, options) {
    const as = checkForm(checkOptions(options, 'options').as, 'bytes');
    if (as === 'stream') throw invalid("options.as cannot be 'stream' for getMany(); use get() per key");
    const tid = this.#tid(false);
    return encodeKeys(keys).map(({ bytes }) => {
      const value = this.#engine.get(bytes, tid);
      return value === undefined ? undefined : valueAs(value, as);
    });
  }

  /** Whether `key` has a committed value. */
  has(key) {
    return this.#engine.has(encodeKey(key).bytes, this.#tid(false));
  }

  /**
   * Stores `value` under `key` in one commit. For a Blob or a ReadableStream, use putStream().
   * @param {string | Uint8Array} key
   * @param {string | ArrayBuffer | ArrayBufferView} value
   * @param {{ durability?: 'strict' | 'relaxed' }} [options]
   * @returns {number} the sequence number the put took in its table
   */
  put(key, value, options) {
    const strict = this.#strict(options);
    const { checks } = writeConditions([{ key }], options, undefined, this.#table);
    const k = encodeKey(key);
    const bytes = valueBytes(value, 'value');
    if (bytes === undefined) {
      throw invalid(`value is a ${describe(value)}: a synchronous put takes bytes or a string; use putStream()`);
    }
    if (checks) this.#engine.checkVersions(checks); // in the same turn as the put
    const tid = this.#tid(true);
    this.#settle(this.#engine.put(k, bytes, strict, tid), strict);
    return this.#seq(tid);
  }

  /**
   * Stores several values in one commit: all or none survive a crash.
   * @param {Iterable<[string | Uint8Array, string | ArrayBuffer | ArrayBufferView]> | Record<string, string | ArrayBuffer | ArrayBufferView>} entries
   * @param {{ durability?: 'strict' | 'relaxed' }} [options]
   */
  putMany(entries, options) {
    return this.#batch(putOperations(entries), options, 'entries');
  }

  /**
   * Deletes `key`.
   * @returns {boolean} whether it existed
   */
  delete(key, options) {
    const strict = this.#strict(options);
    const { checks } = writeConditions([{ key }], options, undefined, this.#table);
    if (checks) this.#engine.checkVersions(checks); // in the same turn as the delete
    const tid = this.#tid(false);
    if (tid === NO_TABLE) return false;
    const { existed, ticket } = this.#engine.delete(encodeKey(key), strict, tid);
    this.#settle(ticket, strict);
    return existed;
  }

  /**
   * Deletes `keys` in one commit.
   * @returns {number} how many of them existed
   */
  deleteMany(keys, options) {
    const strict = this.#strict(options);
    const seen = new Set();
    const ops = [];
    const tid = this.#tid(false);
    for (const key of encodeKeys(keys)) {
      const id = key.bytes.join(',');
      if (seen.has(id) || !this.#engine.has(key.bytes, tid)) continue;
      seen.add(id);
      ops.push({ type: 'delete', key: key.bytes, isString: key.isString, table: tid });
    }
    this.#settle(ops.length > 0 ? this.#engine.batch(ops, strict) : 0, strict); // 0 flushes all the same (Engine.commit)
    return ops.length;
  }

  /**
   * Applies puts and deletes in one commit: after a crash all or none are visible.
   * @param {Array<{ type: 'put', key: string | Uint8Array, value: string | ArrayBuffer | ArrayBufferView } | { type: 'delete', key: string | Uint8Array }>} operations
   * @param {{ durability?: 'strict' | 'relaxed' }} [options]
   */
  /**
   * An operation may name another `table` (created by the write), and `{ type: 'append',
   * table, value }` appends to a table's queue: one commit across tables.
   * @returns {Array<{ table: string, first: number, last: number }>} the sequence numbers the
   *   commit took, per table ('' is the store's default table)
   */
  batch(operations, options) {
    if (!Array.isArray(operations)) throw invalid(`operations must be an array, got ${describe(operations)}`);
    return this.#batch(operations, options, 'operations');
  }

  #batch(operations, options, list) {
    const strict = this.#strict(options);
    const conditions = writeConditions(operations, options, list, this.#table);
    const ops = operations.map((operation, index) =>
      checkOperation(operation, index, list, (value, param) => {
        const bytes = valueBytes(value, param);
        if (bytes === undefined) {
          throw invalid(`${param} is a ${describe(value)}: a synchronous batch takes bytes or strings`);
        }
        return { value: bytes, size: bytes.length };
      }),
    );
    if (ops.length === 0 && conditions.txId === undefined) return [];
    const names = this.#engine.resolveOps(ops, this.#table);
    const done = this.#engine.batch(ops, strict, conditions);
    const seqs = this.#engine.namedSeqs(names);
    if (conditions.txId !== undefined) {
      this.#settle(done.ticket, strict);
      return { applied: done.applied, version: done.version, seqs: done.applied ? seqs : [] };
    }
    this.#settle(done, strict);
    return seqs;
  }

  /**
   * Runs `fn(tx)` as an optimistic, serializable transaction (SynapseDB's BEGIN/COMMIT/ABORT):
   * `tx.get/getBytes/has/keys/entries` read one consistent state with the transaction's own
   * writes, `tx.put/delete` are written to the log now and become visible to others at once at
   * the commit; `tx.transaction(inner)` nests (an inner throw discards only its writes). If a
   * key or range it read changed before the commit, `fn` runs again (up to `options.retries`,
   * default 10), then this throws WalnutConflictError. `fn` throwing aborts: nothing is written.
   * With `options.id` (1 to 128 bytes of UTF-8), a transaction committed before under that id
   * (across restarts, within the store's id retention) is not run again.
   * @param {(tx: object) => unknown} fn synchronous here
   * @param {{ id?: string, durability?: 'strict' | 'relaxed', retries?: number }} [options]
   * @returns {{ applied: boolean, version: number, value?: unknown }} `value`: what `fn`
   *   returned; `version`: the commit's LSN (the version of every value it wrote)
   */
  transaction(fn, options) {
    const driver = this.#engine.txDriver((ticket, strict) => this.#settle(ticket, strict));
    return runTransactionSync(driver, fn, options, this.#durability, this.#table);
  }

  /**
   * A consistent snapshot of the store as one `.walnut` file, streamed (see Engine.exportStream):
   * taken now, while the store keeps serving calls. Every table is in it, whichever view this is.
   * @param {{ signal?: AbortSignal, onProgress?: (bytes: number) => void }} [options]
   * @returns {ReadableStream<Uint8Array>}
   */
  export(options) {
    return this.#engine.exportStream(checkExportOptions(options));
  }

  /**
   * Imports a `.walnut` file (from `export()` or `walnut export`) into this store, which must be
   * empty (no value, no table): checked whole before it replaces the store, so a cut or damaged
   * file rejects with WalnutCorruptionError naming the byte offset and changes nothing; a crash
   * meanwhile leaves the store empty. Asynchronous, as its source is. The store then holds the
   * export's tables, values, sequence numbers and commit ids. Rejects with
   * WalnutInvalidArgumentError naming `store` if the store is not empty or was written meanwhile.
   * @param {ReadableStream<Uint8Array> | AsyncIterable<Uint8Array> | Uint8Array | ArrayBuffer | Blob} source
   * @param {{ signal?: AbortSignal, onProgress?: (bytes: number) => void }} [options]
   * @returns {Promise<{ values: number, bytes: number }>}
   */
  import(source, options) {
    return this.#engine.importSource(source, checkExportOptions(options));
  }

  /**
   * The version of `key`: the LSN of the commit that wrote its value (it changes when the value
   * does, or when compaction moves it), or null if absent. For `ifVersion` and `checks`.
   * @returns {number | null}
   */
  versionOf(key) {
    return this.#engine.versionOf(encodeKey(key).bytes, this.#tid(false));
  }

  /** `{ value, version }` of `key` (value in the form `as`, default bytes), or undefined. */
  getWithVersion(key, options) {
    const version = this.versionOf(key);
    if (version === null) return undefined;
    return { value: this.get(key, options), version };
  }

  /**
   * Deletes every key of this table (the store's default table: the Durable Objects API's
   * deleteAll) in one commit; a table's queue and marks stay.
   * @returns {number} how many keys it deleted
   */
  clear(options) {
    const strict = this.#strict(options);
    if (this.#table !== undefined) {
      const tid = this.#tid(false);
      if (tid === NO_TABLE) {
        this.#settle(0, strict); // the table a relaxed drop removed stays removed
        return 0;
      }
      const ops = this.#engine.scan({}, tid).map(({ bytes, key }) => ({
        type: 'delete',
        key: bytes,
        isString: typeof key === 'string',
        table: tid,
      }));
      this.#settle(ops.length > 0 ? this.#engine.batch(ops, strict) : 0, strict); // 0 flushes all the same (Engine.commit)
      return ops.length;
    }
    const { count, ticket } = this.#engine.clear(strict);
    this.#settle(ticket, strict);
    return count;
  }

  /**
   * Keys in bytewise order, each in the form (string or Uint8Array) it was put with.
   * @param {{ prefix?: string | Uint8Array, start?: string | Uint8Array, end?: string | Uint8Array, limit?: number, reverse?: boolean }} [options]
   */
  keys(options) {
    return this.#engine.scan(checkRange(options).range, this.#tid(false)).map(({ key }) => key);
  }

  /**
   * Entries in bytewise key order: `{ key, size, value }` (iterable as `[key, value]`). Values
   * are read unless `values: false`, in the form `as` (default 'bytes'); bound the memory with
   * `limit`, or page with `start`.
   * @param {{ prefix?: string | Uint8Array, start?: string | Uint8Array, end?: string | Uint8Array, limit?: number, reverse?: boolean, values?: boolean, as?: 'bytes' | 'text' | 'json' | 'blob' }} [options]
   * @returns {Entry[]}
   */
  entries(options) {
    const { range, values = true, as } = checkRange(options);
    const form = checkForm(as, 'bytes');
    if (form === 'stream') throw invalid("options.as cannot be 'stream' for entries(); use get() per key");
    const tid = this.#tid(false);
    return this.#engine.scan(range, tid).map(({ key, bytes, size }) => {
      if (!values) return new Entry(key, size);
      const value = this.#engine.get(bytes, tid);
      // A value read back is there: this store is the only writer, and nothing ran in between.
      return new Entry(key, size, value === undefined ? undefined : valueAs(value, form));
    });
  }

  /**
   * Streams a value in, one transaction: the previous value stays visible until the commit,
   * and a crash, an error or an abort leaves it. Memory holds one chunk of the source at a time.
   * @param {string | Uint8Array} key
   * @param {ReadableStream<Uint8Array> | Blob | AsyncIterable<Uint8Array | string>} source
   * @param {{ onProgress?: (bytesWritten: number, totalBytes?: number) => void, signal?: AbortSignal, durability?: 'strict' | 'relaxed' }} [options]
   * @returns {Promise<void>}
   */
  async putStream(key, source, options) {
    const { onProgress, signal, strict } = checkWriteOptions(options, this.#durability);
    const k = encodeKey(key);
    checkSource(source);
    const tid = this.#tid(true);
    const { ticket, seqs } = await this.#engine.transaction(
      [{ type: 'put', key: k.bytes, isString: k.isString, value: source, param: 'source', table: tid }],
      { strict, onProgress, signal },
    );
    this.#settle(ticket, strict);
    return seqOf(seqs, tid);
  }

  /**
   * The value of `key` as a stream, one chunk per pull, or undefined. Cancel it if you stop early.
   * @returns {ReadableStream<Uint8Array> | undefined}
   */
  getStream(key) {
    return this.#engine.stream(encodeKey(key).bytes, this.#tid(false));
  }

  /** Counters of the store and its log (see Stats in walnut.d.ts). */
  stats() {
    return this.#engine.stats();
  }

  /** Writes a checkpoint now, so the next open replays only what follows. */
  checkpoint() {
    this.#engine.checkpoint();
  }

  /**
   * Reclaims the space of overwritten and deleted values now (synchronously: for a large log,
   * this call takes a while; compaction also runs by itself, a step per commit).
   * @returns {number} compaction rounds finished
   */
  compact() {
    let rounds = 0;
    for (let step; (step = this.#engine.compactStep()) !== 'idle'; ) if (step === 'done') rounds += 1;
    return rounds;
  }

  /** Makes every write so far durable, relaxed ones included. */
  flush() {
    this.#engine.flush();
  }

  /**
   * Flushes, writes a checkpoint and releases the store (and its lock). Idempotent; every other
   * call afterwards throws WalnutClosedError.
   */
  close() {
    this.#engine.close();
  }

  [Symbol.dispose]() {
    this.close();
  }

  #settle(ticket, strict) {
    if (strict) this.#engine.commit(ticket);
  }
}

/**
 * Makes a SyncStore over an open Engine (the hosts' entry points call this).
 * @param {Engine} engine
 * @param {'strict' | 'relaxed'} durability
 */
export function syncStore(engine, durability) {
  return new SyncStore(TOKEN, engine, durability);
}

/**
 * Opens the store whose files `host` keeps (a VolumeHost: docs/HOSTS.md) on the loaded core.
 * On failure the host is closed.
 * @param {unknown} host
 * @param {{ name: string, core: object, relaxedFlushMs?: number, nextTask?: () => Promise<void> }} options
 * @returns {Engine}
 */
export function openEngine(host, { name, core: coreOptions, relaxedFlushMs, nextTask }) {
  const core = call(() => Core.openHost(host, coreOptions));
  return new Engine(core, { name, relaxedFlushMs, nextTask });
}

/**
 * Checks open()'s options shared by every host, plus `relaxedFlushMs`.
 * @param {unknown} options
 */
export function checkHostOptions(options) {
  const { relaxedFlushMs, ...rest } = checkOptions(options, 'options');
  const checked = checkOpenOptions(rest);
  if (relaxedFlushMs !== undefined) {
    if (!(relaxedFlushMs === Infinity || (Number.isInteger(relaxedFlushMs) && relaxedFlushMs >= 0))) {
      throw invalid(`options.relaxedFlushMs must be a whole number of ms or Infinity, got ${String(relaxedFlushMs)}`);
    }
  }
  return { ...checked, relaxedFlushMs };
}

