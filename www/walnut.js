/**
 * walnut: a durable key-value store for web apps.
 *
 * This module is the main-thread API. Every store runs in its own dedicated worker
 * (`worker.js`, next to this file) that owns the OPFS write-ahead log through a
 * `FileSystemSyncAccessHandle`. Requests made in the same microtask travel to the worker in
 * one message; large values are streamed to it and written chunk by chunk.
 *
 * @module walnut-kv
 */

import {
  cancelUnsent,
  checkForm,
  encodeKeys,
  EntryQuery,
  followFeed,
  paged,
  sleep,
  watchFeed,
  putOperations,
  valueAs,
  checkOpenOptions,
  checkOperation,
  checkOptions,
  checkChangesOptions,
  checkRange,
  checkSeq,
  checkTableName,
  checkWriteOptions,
  describe,
  encodeBound,
  encodeKey,
  encoder,
  encodeValue,
  Entry,
  invalid,
  toError,
  unpackChanges,
  unpackKeys,
  unpackQueue,
  WalnutClosedError,
  WalnutIoError,
  WalnutLockedError,
  WalnutUnsupportedError,
  checkId,
  checkVersion,
  runTransaction,
  toBlob,
  writeConditions,
  checkExportOptions,
  importChunks,
} from './common.js';
export {
  Entry,
  WalnutError,
  WalnutIoError,
  WalnutCorruptionError,
  WalnutChecksumError,
  WalnutPoisonedError,
  WalnutQuotaExceededError,
  WalnutLockedError,
  WalnutInvalidArgumentError,
  WalnutClosedError,
  WalnutUnsupportedError,
  WalnutTransactionError,
  WalnutLeaderChangedError,
  WalnutConflictError,
} from './common.js';

/** Guards the constructor: stores come from open(). */
const INTERNAL = Symbol('walnut.internal');

/**
 * A change to a store, told in every context that has it open: the keys a commit put and
 * deleted (in the form they were given: string or Uint8Array; not the values) and the LSN of
 * the commit, once it is durable. `type` is 'change'.
 */
export class WalnutChangeEvent extends Event {
  /** @param {{ lsn: number, puts: Array<string | Uint8Array>, deletes: Array<string | Uint8Array> }} change */
  constructor({ lsn, puts, deletes }) {
    super('change');
    /** LSN of the commit: later commits have higher ones. */
    this.lsn = lsn;
    /** Keys the commit put. */
    this.puts = puts;
    /** Keys the commit deleted. */
    this.deletes = deletes;
  }
}

/**
 * Change events may have been missed (a leader changed, or this context was suspended): `type`
 * is 'resync', `reason` says why. Read what you track again.
 */
export class WalnutResyncEvent extends Event {
  /** @param {string} reason */
  constructor(reason) {
    super('resync');
    this.reason = reason;
  }
}

/**
 * An open store. Get one with {@link open}. Every page, iframe and worker of an origin can have
 * the same store open at once: one of them (the leader) runs it, the others' calls go through
 * it, with the same semantics. It is an EventTarget: 'change' ({@link WalnutChangeEvent}) for
 * every durable commit made by any context, 'resync' ({@link WalnutResyncEvent}) when some may
 * have been missed.
 */
export class WalnutStore extends EventTarget {
  /** @type {Worker | null} */
  #worker;
  /** @type {{ worker: Worker, posted: number }} the worker and how many messages it was sent */
  #started;
  #name;
  #recovery;
  #chunkSize;
  /** @type {'strict' | 'relaxed'} */
  #durability;
  #nextId = 1;
  /** @type {Map<number, { resolve: Function, reject: Function, onProgress?: Function, total?: number, signal?: AbortSignal, onAbort?: () => void, streams?: ReadableStream[], message?: number }>} */
  #pending = new Map();
  /** Requests waiting for the end of the current microtask, sent as one message. */
  #outbox = [];
  /** @type {Transferable[][]} what each request in the outbox transfers */
  #outboxTransfers = [];
  /** @type {WalnutClosedError | null} set by close() or terminate(): the error later calls get */
  #closedError = null;
  /** @type {Promise<void> | null} */
  #closing = null;
  /** @type {number | null} the id of the close request, once close() sent it */
  #closeId = null;
  /** Whether the worker was asked for change events. */
  #listening = false;
  /** @type {WalnutIoError | null} set when the worker died: what close() rejects with */
  #unclean = null;
  /** Closes worker-side readers of getStream() streams that were dropped without cancel(). */
  #abandonedStreams = new FinalizationRegistry((reader) => {
    if (!this.#root.#closedError) this.#post({ op: 'closeReader', reader });
  });
  /** The store whose worker serves this one: itself, or for a table view the store it is of. */
  #root = this;
  /** This view's table name; undefined for the store's default table. */
  #table;

  /** @internal */
  constructor(token, started, name, opened, durability, view) {
    if (token !== INTERNAL) throw new TypeError('use open() to get a WalnutStore');
    super();
    if (view) {
      this.#root = view.root;
      this.#table = view.table;
      this.#name = name;
      this.#recovery = opened.recovery;
      this.#chunkSize = opened.chunkSize;
      this.#durability = durability;
      return;
    }
    const { worker } = started;
    this.#worker = worker;
    this.#started = started;
    this.#name = name;
    this.#recovery = opened.recovery;
    this.#chunkSize = opened.chunkSize;
    this.#durability = durability;
    worker.onmessage = ({ data }) => {
      if (data.type === 'unreadable') this.#unreadable(data.message);
      else if (data.type === 'changes') for (const change of data.changes) this.dispatchEvent(new WalnutChangeEvent(change));
      else if (data.type === 'resync') this.dispatchEvent(new WalnutResyncEvent(data.reason));
      else if (data.results) this.#receive(data.results);
    };
    worker.onerror = (event) => {
      event.preventDefault();
      this.#died(`the walnut worker failed: ${event.message ?? 'unknown error'}`);
    };
    worker.onmessageerror = () => {
      this.#died('the walnut worker sent a message that could not be read');
    };
  }

  /**
   * EventTarget's, noting the first 'change' or 'resync' listener: only then does the worker
   * send this page change events.
   * @param {string} type
   * @param {EventListenerOrEventListenerObject | null} listener
   * @param {boolean | AddEventListenerOptions} [options]
   */
  addEventListener(type, listener, options) {
    if (this.#root !== this) {
      this.#root.addEventListener(type, listener, options);
      return;
    }
    if ((type === 'change' || type === 'resync') && !this.#listening && !this.#closedError) {
      this.#listening = true;
      this.#post({ op: 'listen' });
    }
    super.addEventListener(type, listener, options);
  }

  /** The store's name, as given to open(). */
  get name() {
    return this.#name;
  }

  /** What recovery found and did when this store was opened. */
  get recovery() {
    return this.#recovery;
  }

  /** Bytes per chunk record in the log. */
  get chunkSize() {
    return this.#chunkSize;
  }

  /**
   * Stores `value` under `key`, replacing any previous value, in one transaction. A
   * ReadableStream value is walnut's from then on: if the call ends without reading it to its
   * end (an error, an abort, close()), it is cancelled.
   * @param {string | Uint8Array} key
   * @param {string | ArrayBuffer | ArrayBufferView | Blob | ReadableStream<Uint8Array>} value
   * @param {{ onProgress?: (bytesWritten: number, totalBytes?: number) => void, signal?: AbortSignal, durability?: 'strict' | 'relaxed' }} [options]
   * @returns {Promise<void>}
   */
  async put(key, value, options) {
    return this.#write([{ type: 'put', key, value }], options);
  }

  /**
   * Table `name` of this store: a namespace with the store's whole API (its own ordered keys),
   * its own sequence numbers (every committed write to it takes the next, from 1: put() and
   * append() resolve to theirs) and a queue (append, read, stream, markFlushed, deleteUpTo).
   * Created by its first write; served by the same worker. (HoraeDB's table units in one log.)
   * @param {string} name 1 to 255 bytes of UTF-8
   * @returns {WalnutStore}
   */
  table(name) {
    const root = this.#root;
    return new WalnutStore(INTERNAL, null, root.#name, { recovery: root.#recovery, chunkSize: root.#chunkSize }, root.#durability, {
      root,
      table: checkTableName(name),
    });
  }

  /** This view's table name (undefined for the store itself). */
  get tableName() {
    return this.#table;
  }

  /**
   * The store's named tables: `[{ name, lastSeq, flushedSeq, deletedUpTo }]`.
   * @returns {Promise<Array<{ name: string, lastSeq: number, flushedSeq: number, deletedUpTo: number }>>}
   */
  async tables() {
    const all = await this.#request({ op: 'tables' });
    return all.filter((t) => t.id !== 0).map(({ name, lastSeq, flushedSeq, deletedUpTo }) => ({ name, lastSeq, flushedSeq, deletedUpTo }));
  }

  /**
   * Drops table `name` at once (one flushed record): its keys, queue and marks are gone, its
   * space reclaimed by compaction.
   * @returns {Promise<boolean>} whether it existed
   */
  async dropTable(name) {
    return this.#request({ op: 'dropTable', name: checkTableName(name) });
  }

  async #info(field) {
    const all = await this.#request({ op: 'tables' });
    const t = all.find((x) => (this.#table === undefined ? x.id === 0 : x.id !== 0 && x.name === this.#table));
    return t?.[field] ?? 0;
  }

  /** Resolves to the last sequence number a committed write to this table took (0: none). */
  get lastSeq() {
    return this.#info('lastSeq');
  }

  /** Resolves to the flushed sequence number last persisted with markFlushed(). */
  get flushedSeq() {
    return this.#info('flushedSeq');
  }

  /** Resolves to the mark at or below which this table's queue entries are deleted. */
  get deletedUpTo() {
    return this.#info('deletedUpTo');
  }

  #named(call) {
    if (this.#table === undefined) throw invalid(`${call}() needs a table: db.table(name).${call}(...)`);
    return this.#table;
  }

  /**
   * Stores `value` (bytes, a string, a Blob, a ReadableStream: streamed as put() streams) as this
   * table's next queue entry.
   * @param {unknown} value
   * @param {{ onProgress?: (bytesWritten: number, totalBytes?: number) => void, signal?: AbortSignal, durability?: 'strict' | 'relaxed' }} [options]
   * @returns {Promise<number>} its sequence number
   */
  async append(value, options) {
    return this.#write([{ type: 'append', table: this.#named('append'), value }], options);
  }

  /**
   * This table's queue entries from sequence number `from`, at most `limit`, in order:
   * `[{ seq, size, value }]`, values as `as` (default a Blob).
   * @param {{ from?: number, limit?: number, as?: 'blob' | 'bytes' | 'text' | 'json' }} [options]
   */
  async read(options) {
    const { from = 0, limit, as } = checkOptions(options, 'options');
    checkSeq(from, 'options.from');
    if (limit !== undefined && !(Number.isInteger(limit) && limit >= 0 && limit <= 0xffffffff)) {
      throw invalid(`options.limit must be a whole number, got ${describe(limit)}`);
    }
    const form = checkForm(as, 'blob');
    if (form === 'stream') throw invalid("options.as cannot be 'stream' for read(); use stream()");
    const entries = unpackQueue(await this.#request({ op: 'readQueue', from, limit }));
    return entries.map(({ seq, size, value }) => ({ seq, size, value: form === 'blob' ? new Blob([value]) : valueAs(value, form) }));
  }

  /**
   * This table's queue entries from `from` on, one at a time, each value a stream:
   * `for await (const { seq, size, value } of table.stream({ from }))`.
   * @param {{ from?: number }} [options]
   */
  async *stream(options) {
    const { from = 0 } = checkOptions(options, 'options');
    let next = checkSeq(from, 'options.from');
    for (;;) {
      const [entry] = await this.#request({ op: 'readQueue', from: next, limit: 1, sizes: true });
      if (entry === undefined) return;
      const value = await this.#stream(undefined, entry.seq);
      if (value !== undefined) yield { seq: entry.seq, size: entry.size, value };
      next = entry.seq + 1;
    }
  }

  /**
   * This table's change feed after sequence number `since` (default 0), at most `limit`:
   * `[{ seq, type: 'put' | 'delete', key, size, current }]` in sequence order: every put and
   * delete of its keys (not its queue appends), kept until deleteUpTo() passes it; `current`
   * says whether the change made the key's present state.
   * @param {{ since?: number, limit?: number }} [options]
   */
  async changes(options) {
    const { since, limit } = checkChangesOptions(options);
    return unpackChanges(await this.#request({ op: 'changes', since, limit }));
  }

  /**
   * Follows this table's change feed: replays the changes after `since`, then waits for new
   * ones (written by any tab: checked every `interval` ms, default 100), until `signal`
   * aborts: `for await (const change of table.follow({ since }))`.
   * @param {{ since?: number, signal?: AbortSignal, interval?: number }} [options]
   */
  follow(options) {
    return followFeed((o) => this.changes(o), sleep, options);
  }

  /**
   * Persists `seq` as this table's flushed sequence number (HoraeDB's MaxSeq); it never goes
   * back, and after a crash reads back as the last one acknowledged.
   * @param {number} seq
   * @param {{ durability?: 'strict' | 'relaxed' }} [options]
   */
  async markFlushed(seq, options) {
    const { durability } = checkOptions(options, 'options');
    const { strict } = checkWriteOptions({ durability }, this.#durability);
    await this.#request({ op: 'mark', what: 'flushed', seq: checkSeq(seq), table: this.#named('markFlushed'), strict });
  }

  /**
   * Deletes this table's queue entries at or below `seq` at once (one record); sequence numbers
   * go on above every number handed out.
   * @param {number} seq
   * @param {{ durability?: 'strict' | 'relaxed' }} [options]
   */
  async deleteUpTo(seq, options) {
    const { durability } = checkOptions(options, 'options');
    const { strict } = checkWriteOptions({ durability }, this.#durability);
    await this.#request({ op: 'mark', what: 'deleted', seq: checkSeq(seq), table: this.#named('deleteUpTo'), strict });
  }

  /**
   * Deletes `key`.
   * @param {string | Uint8Array} key
   * @param {{ durability?: 'strict' | 'relaxed' }} [options]
   * @returns {Promise<boolean>} whether the key existed
   */
  async delete(key, options) {
    const { durability, ifVersion } = checkOptions(options, 'options');
    return this.#write([{ type: 'delete', key }], { durability, ifVersion });
  }

  /**
   * Applies puts and deletes atomically: after a crash either all of them are visible or none.
   * @param {Array<{ type: 'put', key: string | Uint8Array, value: unknown } | { type: 'delete', key: string | Uint8Array }>} operations
   * @param {{ onProgress?: (bytesWritten: number, totalBytes?: number) => void, signal?: AbortSignal, durability?: 'strict' | 'relaxed' }} [options]
   * @returns {Promise<void>}
   */
  async batch(operations, options) {
    if (!Array.isArray(operations)) {
      throw invalid(`operations must be an array, got ${describe(operations)}`);
    }
    if (operations.length === 0) {
      checkWriteOptions(options, this.#durability);
      this.#ensureOpen();
      return undefined;
    }
    const result = await this.#write(operations, options, 'operations', true);
    if (checkOptions(options, 'options').id !== undefined) return result; // { applied, version, seqs }
    return Array.isArray(result) ? result : undefined; // never delete()'s boolean
  }

  /**
   * Runs `fn(tx)` as an optimistic, serializable transaction (see walnut.d.ts, Transaction):
   * reads see one state and the transaction's own writes, writes become visible at once at
   * the commit, and a conflict runs `fn` again (up to `options.retries`, default 10), then
   * rejects with WalnutConflictError. With `options.id`, a transaction committed before under
   * that id is not run again: `{ applied: false, version }`. (SynapseDB's transactions.)
   * @returns {Promise<{ applied: boolean, version: number, value?: unknown }>}
   */
  async transaction(fn, options) {
    this.#ensureOpen();
    const req = (message, transfer) => this.#request({ op: 'tx', ...message }, transfer);
    const driver = {
      begin: (txId, strict) => req({ action: 'begin', txId, strict }),
      get: (txn, key, table) => req({ action: 'get', txn, key, table }),
      keys: async (txn, options, table) => unpackKeys(await req({ action: 'keys', txn, options, table })),
      put: async (txn, key, value, table) => {
        const body = value instanceof Uint8Array || value instanceof Blob ? value : await toBlob(value, 'value');
        return req({ action: 'put', txn, key: key.bytes, isString: key.isString, value: body, table });
      },
      delete: (txn, key, table) => req({ action: 'delete', txn, key, table }),
      nest: (txn) => req({ action: 'nest', txn }),
      end: (txn, keep) => req({ action: 'end', txn, keep }),
      commit: (txn, txId, strict) => req({ action: 'commit', txn, txId, strict }),
      abort: (txn) => req({ action: 'abort', txn }),
    };
    return runTransaction(driver, fn, options, this.#durability, this.#table);
  }

  /**
   * A consistent snapshot of the whole store (every table) as one `.walnut` file, streamed:
   * itself a valid walnut log (docs/FORMAT.md section 12) that the `walnut` tool verifies and
   * imports. Taken when this is called; the store keeps serving every tab meanwhile, and memory
   * holds about 256 KiB of it at a time. A leader change while it streams errors the stream with
   * WalnutLeaderChangedError (export again).
   * @param {{ signal?: AbortSignal, onProgress?: (bytes: number) => void }} [options]
   * @returns {ReadableStream<Uint8Array>}
   */
  export(options) {
    const { signal, onProgress } = checkExportOptions(options);
    this.#ensureOpen();
    const root = this.#root;
    let handle;
    let bytes = 0;
    const begun = root.#request({ op: 'export', action: 'begin' });
    return new ReadableStream({
      pull: async (controller) => {
        try {
          signal?.throwIfAborted();
          handle ??= await begun;
          const piece = await root.#request({ op: 'export', action: 'next', handle });
          if (piece === null || piece === undefined) {
            handle = null;
            controller.close();
            return;
          }
          bytes += piece.length;
          onProgress?.(bytes);
          controller.enqueue(piece);
        } catch (error) {
          if (handle) root.#request({ op: 'export', action: 'cancel', handle }).catch(() => {});
          handle = null;
          controller.error(error);
        }
      },
      cancel: async () => {
        const h = handle ?? (await begun.catch(() => null));
        handle = null;
        if (h) await root.#request({ op: 'export', action: 'cancel', handle: h }).catch(() => {});
      },
    });
  }

  /**
   * Imports a `.walnut` file (from `export()` or `walnut export`) into this store, which must be
   * empty (no value, no table). The file is written into a new file of the store as it is read,
   * checked whole, and only then replaces the store's log, in steps that each recover to the
   * empty store or to the import: a cut or damaged file rejects with WalnutCorruptionError
   * naming the byte offset and changes nothing, and a closed tab or a crash meanwhile leaves the
   * store empty. Rejects with WalnutInvalidArgumentError naming `store` if the store is not empty
   * or was written to meanwhile, and with WalnutLeaderChangedError if the tab holding the store
   * closed meanwhile (import again). Memory: about 1 MiB of the source at a time.
   * @param {ReadableStream<Uint8Array> | AsyncIterable<Uint8Array> | Uint8Array | ArrayBuffer | Blob} source
   * @param {{ signal?: AbortSignal, onProgress?: (bytes: number) => void }} [options]
   * @returns {Promise<{ values: number, bytes: number }>} entries now held, bytes imported
   */
  async import(source, options) {
    const { signal, onProgress } = checkExportOptions(options);
    this.#ensureOpen();
    signal?.throwIfAborted();
    const root = this.#root;
    const chunks = importChunks(source);
    const handle = await root.#request({ op: 'import', action: 'begin' });
    let bytes = 0;
    try {
      for await (const chunk of chunks) {
        signal?.throwIfAborted();
        // A copy of just these bytes, moved to the worker: posting a view would clone its whole
        // buffer (a 1 MiB piece of a 1 GiB Uint8Array is 1 GiB to clone; found by review).
        const piece = chunk.slice();
        await root.#request({ op: 'import', action: 'write', handle, bytes: piece }, [piece.buffer]);
        bytes += chunk.length;
        onProgress?.(bytes);
      }
      signal?.throwIfAborted();
      return await root.#request({ op: 'import', action: 'finish', handle });
    } catch (error) {
      root.#request({ op: 'import', action: 'cancel', handle }).catch(() => {});
      throw error;
    }
  }

  /**
   * The version of `key`'s value: the LSN of the commit that wrote it (changes when the value
   * does, or when compaction moves it), or null if absent. For put/delete's `ifVersion` and
   * batch's `checks`.
   * @returns {Promise<number | null>}
   */
  async versionOf(key) {
    return this.#request({ op: 'version', key: encodeKey(key).bytes });
  }

  /**
   * The value of `key` with its version: `{ value, version }` (value in the form `as`, default a
   * Blob), or undefined if absent. Read in one turn of the worker, so the two belong together.
   */
  async getWithVersion(key, options) {
    const as = checkForm(checkOptions(options, 'options').as, 'blob');
    if (as === 'stream') throw invalid("options.as cannot be 'stream' for getWithVersion()");
    const k = encodeKey(key).bytes;
    const [version, value] = await Promise.all([this.#request({ op: 'version', key: k }), this.#get(k, as)]);
    return value === undefined || version === null ? undefined : { value, version };
  }

  /**
   * Stores several values in one commit: after a crash all or none are visible.
   * @param {Iterable<[string | Uint8Array, unknown]> | Record<string, unknown>} entries `[key,
   *   value]` pairs (an array, a Map) or a plain object; values as for put()
   * @param {{ onProgress?: (bytesWritten: number, totalBytes?: number) => void, signal?: AbortSignal, durability?: 'strict' | 'relaxed' }} [options]
   * @returns {Promise<void>}
   */
  async putMany(entries, options) {
    const operations = putOperations(entries);
    if (operations.length === 0) {
      checkWriteOptions(options, this.#durability);
      this.#ensureOpen();
      return undefined;
    }
    await this.#write(operations, options, 'entries');
    return undefined;
  }

  /**
   * Deletes `keys` in one commit.
   * @param {Array<string | Uint8Array>} keys
   * @param {{ durability?: 'strict' | 'relaxed' }} [options]
   * @returns {Promise<number>} how many of them existed (NaN in the rare case of a call
   *   retried after a leader change that had already been committed)
   */
  async deleteMany(keys, options) {
    const { durability } = checkOptions(options, 'options');
    const { strict } = checkWriteOptions({ durability }, this.#durability);
    const ops = encodeKeys(keys).map(({ bytes, isString }) => ({ type: 'delete', key: bytes, isString }));
    if (ops.length === 0) {
      this.#ensureOpen();
      return 0;
    }
    return this.#request({ op: 'write', ops, strict, existing: true });
  }

  /**
   * Deletes every key in one commit (the Durable Objects API's deleteAll). Waits for the writes
   * issued before it; writes issued after it wait for it.
   * @param {{ durability?: 'strict' | 'relaxed' }} [options]
   * @returns {Promise<number>} how many keys it deleted (NaN as for deleteMany())
   */
  async clear(options) {
    const { durability } = checkOptions(options, 'options');
    const { strict } = checkWriteOptions({ durability }, this.#durability);
    return this.#request({ op: 'write', ops: [], strict, clear: true });
  }

  /**
   * Reads a value whole. Reads do not wait for writes still streaming in: they see the last
   * committed value.
   * @param {string | Uint8Array} key
   * @param {{ as?: 'blob' | 'bytes' | 'text' | 'json' | 'stream' }} [options] the form of the
   *   value: a Blob (default), a Uint8Array, a string (UTF-8), what JSON.parse makes of that
   *   string, or a ReadableStream (as getStream())
   * @returns {Promise<unknown>} the value, or undefined if the key is absent
   */
  async get(key, options) {
    const as = checkForm(checkOptions(options, 'options').as, 'blob');
    return this.#get(encodeKey(key).bytes, as);
  }

  /**
   * @param {Uint8Array} key
   * @param {'blob' | 'bytes' | 'text' | 'json' | 'stream'} as
   */
  async #get(key, as) {
    if (as === 'stream') return this.#stream(key);
    const value = await this.#request({ op: 'get', key });
    if (value === undefined) return undefined;
    if (as === 'blob') {
      // Small values come as bytes: a Blob made here costs less than one cloned from the worker.
      return value instanceof Uint8Array ? new Blob([value]) : value;
    }
    return valueAs(value instanceof Blob ? new Uint8Array(await value.arrayBuffer()) : value, as);
  }

  /**
   * The values of `keys`, in order (undefined where absent), requested together (one message
   * to the worker). Each is the value committed when the worker reads it.
   * @param {Array<string | Uint8Array>} keys
   * @param {{ as?: 'blob' | 'bytes' | 'text' | 'json' }} [options]
   * @returns {Promise<unknown[]>}
   */
  async getMany(keys, options) {
    const as = checkForm(checkOptions(options, 'options').as, 'blob');
    if (as === 'stream') throw invalid("options.as cannot be 'stream' for getMany(); use getStream() per key");
    return Promise.all(encodeKeys(keys).map(({ bytes }) => this.#get(bytes, as)));
  }

  /**
   * Reads a value whole into memory, as bytes: for small values, where making a Blob costs more
   * than the read itself (a 128-byte get() spends most of its time on the Blob). A value longer
   * than `chunkSize` is gathered as a Blob in the worker first, then read into one buffer here:
   * prefer getStream() for those.
   * @param {string | Uint8Array} key
   * @returns {Promise<Uint8Array | undefined>}
   */
  async getBytes(key) {
    return this.#get(encodeKey(key).bytes, 'bytes');
  }

  /**
   * Reads a value as a stream that fetches one chunk from the worker per pull. Cancel the stream
   * if you stop reading early.
   * @param {string | Uint8Array} key
   * @returns {Promise<ReadableStream<Uint8Array> | undefined>}
   */
  async getStream(key) {
    return this.#stream(encodeKey(key).bytes);
  }

  /** @param {Uint8Array | undefined} key @param {number} [seq] a queue entry instead */
  async #stream(key, seq) {
    const opened = await this.#request({ op: 'openReader', key, seq });
    if (opened === undefined) return undefined;
    const { reader, size } = opened;
    /** Bytes delivered so far: reads ahead are asked for only while some are still to come. */
    let received = 0;
    let finished = false;
    const finish = () => {
      finished = true;
      this.#abandonedStreams.unregister(stream);
    };
    // Reads ahead: up to READ_AHEAD chunks asked for before the consumer pulls them, so the
    // worker reads and checks the next ones while one travels and is consumed (that many
    // chunks more in memory). A read past the end fails quietly (the reader is closed by then).
    // A byte stream: a consumer with a BYOB reader gets each chunk copied into its own buffer,
    // and the chunk's buffer goes back to the worker with a later read, to be read into again:
    // reading a 1 GiB value that way allocates nothing per chunk. A default reader is handed
    // the chunks themselves, as before.
    const spare = [];
    const read = () => {
      const buffer = spare.pop();
      const next = this.#request({ op: 'read', reader, buffer }, buffer ? [buffer] : []);
      next.catch(() => {}); // awaited by a later pull; unless the stream ended or was cancelled
      return next;
    };
    // The first chunk is asked for at once, as a default stream's first pull would be.
    const ahead = [read()];
    /** What is left of the chunk a BYOB read took only part of. @type {Uint8Array | null} */
    let rest = null;
    const stream = new ReadableStream({
      type: 'bytes',
      pull: async (controller) => {
        let chunk = rest;
        rest = null;
        if (chunk === null) {
          try {
            chunk = await (ahead.shift() ?? read());
          } catch (error) {
            finish(); // the worker closed the reader, or the store is gone
            throw error;
          }
          if (chunk === undefined) {
            finish();
            controller.close();
            controller.byobRequest?.respond(0);
            return;
          }
          // Chunks keep the size they were written with (other chunk sizes, pieces written
          // while small writes waited): more is asked for while the value's size is not
          // reached, so at most the read that finds the end is asked for past it. A store
          // closed meanwhile refuses a request at once: the next pull asks again and reports
          // it, after this chunk was delivered.
          received += chunk.length;
          try {
            while (received < size && ahead.length < READ_AHEAD) ahead.push(read());
          } catch {
            // closed: see above
          }
        }
        const request = controller.byobRequest;
        if (!request?.view) {
          controller.enqueue(chunk); // the chunk's buffer is the consumer's now
          return;
        }
        const n = Math.min(request.view.byteLength, chunk.length);
        new Uint8Array(request.view.buffer, request.view.byteOffset, n).set(chunk.subarray(0, n));
        request.respond(n);
        if (n < chunk.length) rest = chunk.subarray(n);
        else if (chunk.buffer.byteLength >= this.#chunkSize) spare.push(chunk.buffer);
      },
      cancel: () => {
        if (finished) return;
        finish();
        if (!this.#root.#closedError) this.#post({ op: 'closeReader', reader });
      },
    });
    this.#abandonedStreams.register(stream, reader, stream);
    return stream;
  }

  /**
   * Whether `key` has a value.
   * @param {string | Uint8Array} key
   * @returns {Promise<boolean>}
   */
  async has(key) {
    return this.#request({ op: 'has', key: encodeKey(key).bytes });
  }

  /**
   * Keys in bytewise order, each in the form (string or Uint8Array) it was last put with.
   * @param {{ prefix?: string | Uint8Array, start?: string | Uint8Array, end?: string | Uint8Array, limit?: number, reverse?: boolean }} [options]
   * @returns {Promise<Array<string | Uint8Array>>}
   */
  async keys(options) {
    return (await this.entries(options)).map((entry) => entry.key);
  }

  /**
   * Keys in bytewise order with each value's size in bytes: `{ key, size }`, and `value` too
   * with `values: true` (in the form `as`, default a Blob; each read just after the listing,
   * so a key deleted in between is left out). Awaited: the whole list. Iterated with
   * `for await (const [key, value] of db.entries(...))`: page by page (256 entries per round
   * trip), values always read, so memory holds one page at a time.
   * @param {{ prefix?: string | Uint8Array, start?: string | Uint8Array, end?: string | Uint8Array, limit?: number, reverse?: boolean, values?: boolean, as?: 'blob' | 'bytes' | 'text' | 'json' }} [options]
   * @returns {EntryQuery<Entry>}
   */
  entries(options) {
    const { range, values, as } = checkRange(options);
    const form = checkForm(as, 'blob');
    if (form === 'stream') throw invalid("options.as cannot be 'stream' for entries(); use getStream() per key");
    const page = async (r, withValues) => {
      // One buffer for the whole list (see WalnutStore.keys in docs/WORKER_API.md).
      const listed = unpackKeys(await this.#request({ op: 'keys', options: r }));
      const read = withValues ? await Promise.all(listed.map(({ bytes }) => this.#get(bytes, form))) : [];
      const items = [];
      listed.forEach(({ key, size }, i) => {
        if (!withValues) items.push(new Entry(key, size));
        else if (read[i] !== undefined) items.push(new Entry(key, size, read[i]));
      });
      return { items, listed: listed.length, last: listed.at(-1)?.bytes };
    };
    return new EntryQuery(
      async () => (await page(range, values === true)).items,
      () => paged(range, (r) => page(r, true)),
    );
  }

  /**
   * Counters of the store and its log (see `Stats` in walnut.d.ts).
   * @returns {Promise<{ keys: number, liveBytes: number, logBytes: number, nextLsn: number, openTransactions: number, pendingCommits: number, flushes: number, poisoned: boolean, chunkSize: number, segments: number, deadRatio: number, lastCheckpointLsn: number, checkpoints: number, compactions: number }>}
   */
  async stats() {
    return this.#request({ op: 'stats' });
  }

  /**
   * Reclaims the space of overwritten, deleted and aborted values now: the live values of the
   * segments with dead bytes are copied forward one chunk at a time (other requests are served
   * in between) and the old segments released. Compaction also runs by itself once dead bytes
   * pass `compactionRatio` of the log.
   * @returns {Promise<number>} compaction rounds finished (0: nothing worth compacting)
   */
  async compact() {
    return this.#request({ op: 'compact' });
  }

  /**
   * Persists the index now, so the next open replays only what follows. Checkpoints are also
   * written by themselves every `checkpointBytes` of log and at close().
   * @returns {Promise<void>}
   */
  async checkpoint() {
    await this.#request({ op: 'checkpoint' });
  }

  /**
   * Calls `callback` with every change event (see {@link WalnutChangeEvent}) that touches a key
   * starting with `prefix` (all keys without one), and with every resync event. Stops when
   * `signal` aborts.
   * @param {{ prefix?: string | Uint8Array, signal?: AbortSignal }} options
   * @param {(event: WalnutChangeEvent | WalnutResyncEvent) => void} callback
   */
  watch(options, callback) {
    if (this.#table !== undefined) {
      // A table's watch follows its change feed (see follow()); it stops when `signal` aborts.
      if (typeof callback !== 'function') throw invalid(`callback must be a function, got ${describe(callback)}`);
      watchFeed(this.follow(options), callback).catch(() => {}); // a closed store ends it
      return;
    }
    const { prefix, signal } = checkOptions(options, 'options');
    if (typeof callback !== 'function') throw invalid(`callback must be a function, got ${describe(callback)}`);
    if (signal !== undefined && !(signal instanceof AbortSignal)) {
      throw invalid(`options.signal must be an AbortSignal, got ${describe(signal)}`);
    }
    const bytes = encodeBound(prefix, 'options.prefix');
    const matches = (key) => {
      if (!bytes) return true;
      const k = typeof key === 'string' ? encoder.encode(key) : key;
      return k.length >= bytes.length && bytes.every((b, i) => k[i] === b);
    };
    const onChange = (event) => {
      if (event.puts.some(matches) || event.deletes.some(matches)) callback(event);
    };
    this.addEventListener('change', onChange, { signal });
    this.addEventListener('resync', callback, { signal });
  }

  /**
   * Waits for the requests made before it, flushes, releases the OPFS file and stops the worker.
   * It waits for every write whose data is all in hand (strings, bytes, Blobs, streams already
   * read to their end), reads and compaction. A put or batch whose ReadableStream has not ended
   * is aborted instead (ABORT is written, the old value kept): it rejects with
   * WalnutClosedError and its stream is cancelled, so a source that never ends cannot hold
   * close() up. Calling it again returns the same promise, and after terminate() it resolves at
   * once; every other call afterwards rejects with WalnutClosedError. Rejects when the store
   * could not be closed cleanly (the worker died, or the WebAssembly instance crashed): nothing
   * acknowledged is lost, the next open() recovers it.
   * @returns {Promise<void>}
   */
  close() {
    if (this.#root !== this) return this.#root.close();
    if (this.#closing) return this.#closing;
    if (this.#unclean) {
      this.#closing = Promise.reject(this.#unclean);
      return this.#closing;
    }
    if (this.#closedError) return Promise.resolve(); // terminated: nothing left to close
    this.#closeId = this.#nextId; // the id #request gives it
    const closed = this.#request({ op: 'close' });
    this.#closedError = new WalnutClosedError(`store "${this.#name}" is closed`);
    this.#closing = closed.finally(() => this.#stopWorker());
    return this.#closing;
  }

  /**
   * Kills the worker at once, like a crash: unflushed writes are lost, pending calls reject with
   * WalnutClosedError. Recovery on the next open() sorts out the log.
   */
  terminate() {
    if (this.#root !== this) {
      this.#root.terminate();
      return;
    }
    this.#fail(new WalnutClosedError(`store "${this.#name}" was terminated`));
  }

  /**
   * Validates writes and sends them as one request.
   * @param {unknown[]} operations
   * @param {unknown} options
   * @param {string} [list] the parameter holding the operations (batch), for error messages
   */
  #write(operations, options, list, seqs) {
    const streams = operations.map((operation) => operation?.value).filter((value) => value instanceof ReadableStream);
    try {
      return this.#sendWrite(operations, options, list, streams, seqs);
    } catch (error) {
      cancelUnsent(streams, error); // refused: nothing will read them
      throw error;
    }
  }

  /**
   * The body of #write: validates, then sends.
   * @param {unknown[]} operations
   * @param {unknown} options
   * @param {string | undefined} list
   * @param {ReadableStream[]} streams the operations' stream values
   */
  #sendWrite(operations, options, list, streams, seqs) {
    const { onProgress, signal, strict } = checkWriteOptions(options, this.#durability);
    const { checks, txId } = writeConditions(operations, options, list, this.#table);
    const transfer = [];
    let total = 0;
    const ops = operations.map((operation, index) => {
      const op = checkOperation(operation, index, list, (value, param) => encodeValue(value, param, transfer));
      if (op.type === 'delete') return op;
      total = total === undefined || op.size === undefined ? undefined : total + op.size;
      return { type: op.type, key: op.key, isString: op.isString, value: op.value, table: op.table };
    });
    return this.#request({ op: 'write', ops, strict, seqs: Boolean(seqs), progress: Boolean(onProgress), checks, txId }, transfer, {
      onProgress,
      signal,
      total,
      streams,
    });
  }

  #ensureOpen() {
    const root = this.#root;
    if (root.#closedError) throw root.#closedError;
  }

  /**
   * Sends a request and returns the promise of its answer.
   * @param {Record<string, unknown>} message
   * @param {Transferable[]} [transfer]
   * @param {{ onProgress?: Function, signal?: AbortSignal, total?: number, streams?: ReadableStream[] }} [extra]
   *   `streams`: the write's stream values, cancelled if it fails before sending them
   */
  #request(message, transfer = [], extra = {}) {
    if (this.#root !== this) {
      return this.#root.#request({ ...message, table: message.table ?? this.#table }, transfer, extra);
    }
    const { onProgress, signal, total, streams } = extra;
    this.#ensureOpen();
    if (signal?.aborted) {
      cancelUnsent(streams ?? [], signal.reason);
      return Promise.reject(signal.reason);
    }
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const entry = { resolve, reject, onProgress, total, signal, streams };
      if (signal) {
        entry.onAbort = () => this.#post({ op: 'cancel', target: id });
        signal.addEventListener('abort', entry.onAbort, { once: true });
      }
      this.#pending.set(id, entry);
      this.#post({ ...message, id }, transfer);
    });
  }

  /** Queues a message; everything queued in one microtask goes to the worker as one message. */
  #post(message, transfer = []) {
    if (this.#root !== this) {
      this.#root.#post(message, transfer);
      return;
    }
    if (this.#outbox.length === 0) queueMicrotask(() => this.#flush());
    this.#outbox.push(message);
    this.#outboxTransfers.push(transfer);
  }

  #flush() {
    const requests = this.#outbox;
    const transfers = this.#outboxTransfers;
    this.#outbox = [];
    this.#outboxTransfers = [];
    if (!this.#worker) return; // terminated: the requests were rejected already
    try {
      this.#send(requests, transfers.flat());
    } catch {
      // Something could not be cloned or transferred (e.g. a stream locked, or passed twice,
      // after put() was called). Nothing was sent: send one by one so only the culprit fails.
      requests.forEach((request, i) => {
        try {
          this.#send([request], transfers[i]);
        } catch (error) {
          const failure = invalid(`value could not be sent to the worker: ${error.message}`);
          this.#settle(request.id, { error: failure });
        }
      });
    }
  }

  /**
   * Posts requests as one message, and notes its number on their entries: should the worker be
   * unable to read it, it names it by that number (see #unreadable).
   * @param {Array<{ id?: number }>} requests
   * @param {Transferable[]} transfer
   */
  #send(requests, transfer) {
    const message = postCounted(this.#started, { type: 'requests', requests }, transfer);
    for (const { id } of requests) {
      const entry = this.#pending.get(id);
      if (entry) entry.message = message;
    }
  }

  /**
   * Fails the requests of a message the worker could not read (a `messageerror` there): they
   * never reached it, so nothing of them was done; the calls in other messages go on.
   * @param {number} message its number (see #send)
   */
  #unreadable(message) {
    const error = new WalnutIoError(
      'the message carrying this call could not be read by the walnut worker (a messageerror: it could not be deserialized); nothing of it was done',
    );
    for (const [id, entry] of [...this.#pending]) if (entry.message === message) this.#settle(id, { error });
  }

  /** @param {Array<{ id: number, progress?: number, value?: unknown, error?: { name: string, message: string }, aborted?: boolean }>} results */
  #receive(results) {
    for (const result of results) {
      if (result.progress === undefined) {
        this.#settle(result.id, result);
        continue;
      }
      const entry = this.#pending.get(result.id);
      try {
        entry?.onProgress?.(result.progress, entry.total);
      } catch (error) {
        reportError(error); // a throwing callback must not stall the store
      }
    }
  }

  /**
   * @param {number} id
   * @param {{ value?: unknown, error?: Error | { name: string, message: string }, aborted?: boolean }} result
   */
  #settle(id, { value, error, aborted }) {
    const entry = this.#pending.get(id);
    if (!entry) return;
    this.#pending.delete(id);
    if (entry.onAbort) entry.signal.removeEventListener('abort', entry.onAbort);
    if (!aborted && !error) {
      entry.resolve(value);
      return;
    }
    // (only a call with a signal is aborted; should another ever be, it must still settle)
    const reason = aborted
      ? (entry.signal?.reason ?? new WalnutClosedError(`store "${this.#name}" is closed`))
      : error instanceof Error
        ? error
        : toError(error);
    if (entry.streams) cancelUnsent(entry.streams, reason); // e.g. terminated before they were sent
    entry.reject(reason);
  }

  /**
   * Stops the worker now and rejects everything pending with `error` (a close() under way with
   * the unclean-close error, when the worker died).
   */
  #fail(error) {
    this.#closedError ??= error;
    this.#stopWorker();
    for (const id of [...this.#pending.keys()]) {
      this.#settle(id, { error: id === this.#closeId && this.#unclean ? this.#unclean : error });
    }
  }

  /**
   * The worker died (an uncaught error, or a message from it that cannot be read): fails every
   * call, and makes close() reject, as the store was not closed cleanly.
   * @param {string} reason
   */
  #died(reason) {
    this.#unclean ??= new WalnutIoError(
      `store "${this.#name}" was not closed cleanly: ${reason}; the next open recovers every acknowledged write`,
    );
    this.#fail(new WalnutIoError(reason));
  }

  #stopWorker() {
    this.#worker?.terminate();
    this.#worker = null;
  }
}

/** Chunks a getStream() stream asks for before they are pulled. */
const READ_AHEAD = 2;

/** @type {Promise<WebAssembly.Module | undefined> | undefined} */
let compiledModule;

/**
 * walnut's WebAssembly module, compiled once per page and shared by every store's worker.
 * Compiling here runs while the worker starts (the two take about as long), and later opens
 * skip it. Resolves to undefined where it cannot be done (no streaming compilation, a server
 * without the application/wasm type, a CSP that forbids it here): the worker then loads the
 * module itself, and reports what fails.
 * @returns {Promise<WebAssembly.Module | undefined>}
 */
function compileModule() {
  compiledModule ??= (async () => {
    if (typeof WebAssembly?.compileStreaming !== 'function') return undefined;
    return WebAssembly.compileStreaming(fetch(new URL('./walnut_core_bg.wasm', import.meta.url)));
  })().catch(() => undefined);
  return compiledModule;
}

/**
 * Starts a walnut worker. Load errors are kept (`failed`) until open() installs its handlers.
 * @param {string} label the worker's name, shown in developer tools
 * @returns {{ worker: Worker, failed: ErrorEvent | null, posted: number }} `posted`: messages
 *   sent to it so far (see postCounted)
 */
function startWorker(label) {
  const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module', name: label });
  const started = { worker, failed: null, posted: 0 };
  worker.onerror = (event) => {
    event.preventDefault();
    started.failed = event;
  };
  return started;
}

/**
 * Posts a message to a walnut worker and numbers it. The worker counts what it receives in the
 * same order, so it can name a message it could not read (`{ type: 'unreadable', message }`).
 * @param {{ worker: Worker, posted: number }} started
 * @param {object} message
 * @param {Transferable[]} [transfer]
 * @returns {number} the message's number
 * @throws what postMessage throws: then nothing was sent, and no number was used
 */
function postCounted(started, message, transfer = []) {
  started.worker.postMessage(message, transfer);
  return started.posted++;
}

/**
 * @param {{ worker: Worker, posted: number }} started
 * @param {object} message may carry a WebAssembly.Module
 * @returns {number} the number of the message sent (see postCounted)
 */
function postWithModule(started, message) {
  try {
    return postCounted(started, message);
  } catch {
    return postCounted(started, { ...message, module: undefined }); // a module that cannot be sent
  }
}

/** @type {{ worker: Worker, failed: ErrorEvent | null, posted: number } | null} the worker preload() readied */
let spare = null;

/**
 * Readies a worker for the next open(): starts it and loads walnut's WebAssembly module into
 * it, so that open() has only the store's files to open and its log to recover. Starting a
 * worker takes 20-30 ms in Chromium, often more than recovering a store, so an app that knows
 * it will open a store calls this as early as it can (at start-up, before its own code loads).
 * Keeps one worker ready (another call does nothing until open() takes it); optional, as
 * open() starts its own worker when none is ready. The worker waits idle until then.
 * @returns {void}
 */
/**
 * Imports a `.walnut` file into the store `name` (created if absent; it must be empty): opens it,
 * runs `db.import(source, options)`, and closes it. See WalnutStore.import.
 * @param {string} name
 * @param {Parameters<WalnutStore['import']>[0]} source
 * @param {Parameters<WalnutStore['import']>[1] & Parameters<typeof open>[1]} [options] open options too
 * @returns {Promise<{ values: number, bytes: number }>}
 */
export async function importInto(name, source, options) {
  const { signal, onProgress, ...openOptions } = checkOptions(options, 'options');
  const db = await open(name, openOptions);
  try {
    return await db.import(source, { signal, onProgress });
  } finally {
    await db.close();
  }
}

export function preload() {
  if (spare || typeof Worker !== 'function') return;
  const started = (spare = startWorker('walnut'));
  compileModule().then((module) => postWithModule(started, { type: 'init', module }));
}

/**
 * Opens (or creates) the store `name` in this origin's private file system, recovering its log.
 * Only one worker at a time can hold a store: while another tab (or a page being reloaded) has it,
 * open() retries for `lockTimeout` ms, then rejects with WalnutLockedError.
 *
 * @param {string} name
 * @param {{ chunkSize?: number, durability?: 'strict' | 'relaxed', lockTimeout?: number, directWriteThreshold?: number, segmentSize?: number, checkpointBytes?: number, compactionRatio?: number }} [options]
 * @returns {Promise<WalnutStore>}
 */
export async function open(name, options) {
  if (typeof name !== 'string' || name === '') {
    throw invalid(`name must be a non-empty string, got ${typeof name === 'string' ? 'an empty string' : describe(name)}`);
  }
  const { core, durability } = checkOpenOptions(options);
  if (typeof Worker !== 'function') {
    throw new WalnutUnsupportedError('walnut needs Web Workers, which this environment lacks');
  }
  const started = spare ?? startWorker(`walnut:${name}`);
  spare = null;
  const { worker } = started;
  try {
    const opened = await new Promise((resolve, reject) => {
      const failed = (event) =>
        reject(
          new WalnutUnsupportedError(
            `the walnut worker could not start (module workers are required): ${event.message ?? 'failed to load worker.js'}`,
          ),
        );
      if (started.failed) failed(started.failed);
      let openMessage = -1;
      worker.onmessage = ({ data }) => {
        if (data.type === 'opened') resolve(data);
        else if (data.type !== 'unreadable') reject(toError(data.error));
        else if (data.message === openMessage) {
          // (another unreadable message is preload()'s, whose work the open does anyway)
          reject(new WalnutIoError('the open request could not be read by the walnut worker (a messageerror: it could not be deserialized)'));
        }
      };
      worker.onerror = (event) => {
        event.preventDefault();
        failed(event);
      };
      // Handlers first: a worker that fails to load while the module compiles is still seen.
      compileModule().then((module) => {
        openMessage = postWithModule(started, { type: 'open', name, options: core, module });
      });
    });
    return new WalnutStore(INTERNAL, started, name, opened, durability);
  } catch (error) {
    worker.terminate();
    throw error;
  }
}
