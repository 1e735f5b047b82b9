/**
 * The promise-returning store over the synchronous core, in the same thread: the API of the
 * page's `WalnutStore` (walnut-kv) for runtimes where the store's files can be written
 * synchronously right here (Node). Strict writes made in the same turn of the event loop share
 * one flush (group commit): the core writes each at once, and the flush runs when the turn's
 * I/O callbacks are done (`setImmediate`), resolving every write it made durable.
 *
 * @module walnut-kv/async
 */

import { NO_TABLE } from './engine.js';
import {
  checkForm,
  checkOperation,
  checkOptions,
  checkRange,
  checkSeq,
  checkTableName,
  checkWriteOptions,
  describe,
  encodeKey,
  encodeKeys,
  Entry,
  EntryQuery,
  followFeed,
  invalid,
  watchFeed,
  paged,
  putOperations,
  valueAs,
  valueBytes,
  WalnutClosedError,
  runTransaction,
  writeConditions,
  checkExportOptions,
} from './common.js';

/** Guards the constructor: stores come from open(). */
const TOKEN = Symbol('walnut.async');

/** Runs `fn` once the current turn's callbacks are done. */
const later = typeof setImmediate === 'function' ? setImmediate : (fn) => setTimeout(fn, 0);

/**
 * A store whose calls return promises, over an Engine (www/sync.js) in this thread.
 */
export class AsyncStore {
  #engine;
  #durability;
  /** @type {Array<{ ticket: number, resolve: () => void, reject: (error: unknown) => void }>} */
  #waiting = [];
  #scheduled = false;
  /** @type {Promise<void> | undefined} */
  #closing;
  /** Writes under way (streams being read): close() aborts them. */
  #controllers = new Set();

  /**
   * @param {symbol} token
   * @param {import('./engine.js').Engine} engine
   * @param {'strict' | 'relaxed'} durability
   */
  /** This view's table name, or undefined for the store's default table. */
  #table;
  /** The store this is a table view of (its group commit and close are the store's). */
  #root;

  constructor(token, engine, durability, table, root) {
    if (token !== TOKEN) throw new TypeError('use open() to open a store');
    this.#engine = engine;
    this.#durability = durability;
    this.#table = table;
    this.#root = root ?? this;
  }

  #tid(create) {
    return this.#engine.tid(this.#table, create);
  }

  /**
   * Table `name` of this store: a namespace with the store's whole API, its own sequence
   * numbers and a queue (see SyncStore.table). Created by its first write.
   * @param {string} name
   * @returns {AsyncStore}
   */
  table(name) {
    return new AsyncStore(TOKEN, this.#engine, this.#durability, checkTableName(name), this.#root);
  }

  /** This view's table name (undefined for the store itself). */
  get tableName() {
    return this.#table;
  }

  /** The store's named tables: `[{ name, lastSeq, flushedSeq, deletedUpTo }]`. */
  async tables() {
    this.#live();
    return this.#engine
      .tables()
      .filter((t) => t.id !== 0)
      .map(({ name, lastSeq, flushedSeq, deletedUpTo }) => ({ name, lastSeq, flushedSeq, deletedUpTo }));
  }

  /** Drops table `name` at once; resolves to whether it existed. */
  async dropTable(name) {
    this.#live();
    return this.#engine.dropTable(checkTableName(name));
  }

  /** Resolves to the last sequence number a committed write to this table took. */
  get lastSeq() {
    return this.#infoOf('lastSeq');
  }

  /** Resolves to the flushed sequence number last persisted. */
  get flushedSeq() {
    return this.#infoOf('flushedSeq');
  }

  /** Resolves to the deleted-up-to mark of this table's queue. */
  get deletedUpTo() {
    return this.#infoOf('deletedUpTo');
  }

  async #infoOf(field) {
    this.#live();
    return this.#engine.tableInfo(this.#table)[field];
  }

  /** This view's table id for `call`, which only a named table has (created if `create`). */
  #namedTable(call, create = true) {
    if (this.#table === undefined) throw invalid(`${call}() needs a table: db.table(name).${call}(...)`);
    return this.#tid(create);
  }

  /**
   * Stores `value` (bytes, a string, a Blob, a stream) as this table's next queue entry.
   * @returns {Promise<number>} its sequence number
   */
  async append(value, options) {
    this.#live();
    if (this.#table === undefined) throw invalid('append() needs a table: db.table(name).append(...)');
    const seqs = await this.#write([{ type: 'append', table: this.#table, value }], options, undefined);
    return seqs.find((x) => x.table === this.#table)?.last ?? 0;
  }

  /**
   * This table's queue entries from `from`, at most `limit`: `[{ seq, size, value }]`, values
   * as `as` (default 'blob').
   */
  async read(options) {
    this.#live();
    return this.#engine.readOf(this.#table, options, 'blob');
  }

  /** This table's queue entries from `from` on, each value a stream. */
  stream(options) {
    return this.#engine.streamOf(this.#table, options, () => this.#live());
  }

  /** This table's change feed after `since` (see SyncStore.changes). */
  async changes(options) {
    this.#live();
    return this.#engine.changesOf(this.#table, options);
  }

  /** Follows this table's change feed from `since` (see SyncStore.follow). */
  follow(options) {
    return followFeed((o) => this.changes(o), (ms, signal) => this.#engine.changed(ms, signal), options);
  }

  /** Calls `callback` with each change after `since`, then each new one (see SyncStore.watch). */
  watch(options, callback) {
    return watchFeed(this.follow(options), callback);
  }

  /** Persists `seq` as this table's flushed sequence number. */
  async markFlushed(seq, options) {
    this.#live();
    const { durability } = checkOptions(options, 'options');
    const { strict } = checkWriteOptions({ durability }, this.#durability);
    checkSeq(seq);
    await this.#durable(this.#engine.markFlushed(this.#namedTable('markFlushed', false), seq, strict), strict);
  }

  /** Deletes this table's queue entries at or below `seq`, at once. */
  async deleteUpTo(seq, options) {
    this.#live();
    const { durability } = checkOptions(options, 'options');
    const { strict } = checkWriteOptions({ durability }, this.#durability);
    checkSeq(seq);
    await this.#durable(this.#engine.deleteUpTo(this.#namedTable('deleteUpTo', false), seq, strict), strict);
  }

  /** The store's directory (Node) or name. */
  get name() {
    return this.#engine.name;
  }

  /** What recovery did when the store was opened. */
  get recovery() {
    return this.#engine.recovery;
  }

  /** Bytes per log chunk. */
  get chunkSize() {
    return this.#engine.chunkSize;
  }

  #live() {
    if (this.#root.#closing) throw new WalnutClosedError(`store ${this.name} is closed`);
  }

  /**
   * Resolves once the commit `ticket` is durable (group commit), or rejects with its failure.
   * A strict call that wrote nothing (ticket 0) waits for the group's flush too: its answer may
   * rest on relaxed writes not yet flushed (see Engine.commit).
   */
  #durable(ticket, strict) {
    if (!strict) return Promise.resolve();
    const root = this.#root;
    return new Promise((resolve, reject) => {
      root.#waiting.push({ ticket, resolve, reject });
      if (!root.#scheduled) {
        root.#scheduled = true;
        later(() => root.#commitGroup());
      }
    });
  }

  /** The committer: one flush for every strict write of the turn. */
  #commitGroup() {
    this.#scheduled = false;
    const group = this.#waiting;
    this.#waiting = [];
    if (group.length === 0) return;
    let failures;
    try {
      failures = this.#engine.settle(group.filter((w) => w.ticket > 0).map((w) => w.ticket));
    } catch (error) {
      for (const w of group) w.reject(error);
      return;
    }
    // Calls that wrote nothing (ticket 0): the flush above made what they read durable, unless
    // it failed, which this reports to them (a flush with nothing new written does nothing).
    let unwritten;
    if (group.some((w) => w.ticket === 0)) {
      try {
        this.#engine.durable();
      } catch (error) {
        unwritten = error;
      }
    }
    let i = 0;
    for (const w of group) {
      const failure = w.ticket > 0 ? failures[i++] : unwritten;
      if (failure) w.reject(failure);
      else w.resolve();
    }
  }

  /**
   * Writes `operations` (puts and deletes; values of any kind) in one commit.
   * @returns {Promise<void>}
   */
  async #write(operations, options, list) {
    this.#live();
    const { onProgress, signal, strict } = checkWriteOptions(options, this.#durability);
    const { checks, txId } = writeConditions(operations, options, list, this.#table);
    const ops = operations.map((operation, index) =>
      checkOperation(operation, index, list, (value, param) => {
        const bytes = valueBytes(value, param);
        if (bytes === undefined && value instanceof ReadableStream && value.locked) {
          throw invalid(`${param}: the ReadableStream is locked`);
        }
        return { value: bytes ?? value, size: bytes?.length };
      }),
    );
    if (ops.length === 0) return [];
    let ticket;
    const names = this.#engine.resolveOps(ops, this.#table);
    const [op] = ops;
    let seqs;
    let outcome;
    if (ops.length === 1 && op.type === 'put' && op.value instanceof Uint8Array && !signal && txId === undefined) {
      if (checks) this.#engine.checkVersions(checks); // in the same turn as the put
      ticket = this.#engine.put({ bytes: op.key, isString: op.isString }, op.value, strict, op.table);
      seqs = this.#engine.namedSeqs(names);
      onProgress?.(op.value.length, op.value.length);
    } else {
      const controller = new AbortController();
      const aborted = signal ? AbortSignal.any([signal, controller.signal]) : controller.signal;
      const controllers = this.#root.#controllers;
      controllers.add(controller);
      // Bytes are written in the call's turn unless a source comes before them: then they are
      // read after this call returned, so they are copied now (the caller may reuse its buffer).
      const streamed = ops.some((o) => o.value !== undefined && !(o.value instanceof Uint8Array));
      const own = (value) => (streamed && value instanceof Uint8Array ? value.slice() : value);
      try {
        const done = await this.#engine.transaction(
          ops.map((o) => ({ type: o.type, key: o.key, isString: o.isString, value: own(o.value), table: o.table })),
          { strict, onProgress, signal: aborted, checks, txId },
        );
        ticket = done.ticket;
        seqs = this.#engine.namedSeqs(names, done.seqs);
        if (txId !== undefined) {
          outcome = { applied: ticket.applied, version: ticket.version, seqs: ticket.applied ? seqs : [] };
          ticket = ticket.ticket;
        }
      } finally {
        controllers.delete(controller);
      }
    }
    await this.#durable(ticket, strict);
    return outcome ?? seqs;
  }

  /**
   * Stores `value` under `key` in one commit. A ReadableStream, Blob or async iterable is
   * streamed in chunk by chunk.
   * @param {string | Uint8Array} key
   * @param {string | ArrayBuffer | ArrayBufferView | Blob | ReadableStream<Uint8Array>} value
   * @param {{ onProgress?: (bytesWritten: number, totalBytes?: number) => void, signal?: AbortSignal, durability?: 'strict' | 'relaxed' }} [options]
   */
  async put(key, value, options) {
    const seqs = await this.#write([{ type: 'put', key, value }], options, undefined);
    return seqs.find((x) => x.table === (this.#table ?? ''))?.last ?? 0;
  }

  /**
   * Runs `fn(tx)` as an optimistic, serializable transaction (see SyncStore.transaction; here
   * `fn` may be async and `tx`'s calls return promises, values may be streams).
   * @returns {Promise<{ applied: boolean, version: number, value?: unknown }>}
   */
  async transaction(fn, options) {
    this.#live();
    const driver = this.#engine.txDriver((ticket, strict) => this.#durable(ticket, strict));
    return runTransaction(driver, fn, options, this.#durability, this.#table);
  }

  /**
   * A consistent snapshot of the store as one `.walnut` file, streamed (see SyncStore.export).
   * @returns {ReadableStream<Uint8Array>}
   */
  export(options) {
    this.#live();
    return this.#engine.exportStream(checkExportOptions(options));
  }

  /**
   * Imports a `.walnut` file into this store, which must be empty (see SyncStore.import).
   * @returns {Promise<{ values: number, bytes: number }>}
   */
  async import(source, options) {
    this.#live();
    return this.#engine.importSource(source, checkExportOptions(options));
  }

  /** The version of `key`: the LSN of its value's commit, or null if absent. */
  async versionOf(key) {
    this.#live();
    return this.#engine.versionOf(encodeKey(key).bytes, this.#tid(false));
  }

  /** `{ value, version }` of `key` (value in the form `as`, default a Blob), or undefined. */
  async getWithVersion(key, options) {
    this.#live();
    const version = this.#engine.versionOf(encodeKey(key).bytes, this.#tid(false));
    const value = await this.get(key, options);
    return value === undefined || version === null ? undefined : { value, version };
  }

  /** Stores several values in one commit (see SyncStore.putMany). */
  async putMany(entries, options) {
    return this.#write(putOperations(entries), options, 'entries');
  }

  /**
   * Applies puts, deletes and appends atomically, across tables (an operation may name its
   * `table`); resolves to the sequence numbers taken per table.
   */
  async batch(operations, options) {
    if (!Array.isArray(operations)) throw invalid(`operations must be an array, got ${describe(operations)}`);
    return this.#write(operations, options, 'operations');
  }

  /**
   * Deletes `key`.
   * @returns {Promise<boolean>} whether it existed
   */
  async delete(key, options) {
    this.#live();
    const { durability, ifVersion } = checkOptions(options, 'options');
    const { strict } = checkWriteOptions({ durability }, this.#durability);
    const { checks } = writeConditions([{ key }], { ifVersion }, undefined, this.#table);
    const k = encodeKey(key);
    if (checks) this.#engine.checkVersions(checks); // in the same turn as the delete
    const tid = this.#tid(false);
    if (tid === NO_TABLE) return false;
    const { existed, ticket } = this.#engine.delete(k, strict, tid);
    await this.#durable(ticket, strict);
    return existed;
  }

  /**
   * Deletes `keys` in one commit.
   * @returns {Promise<number>} how many of them existed
   */
  async deleteMany(keys, options) {
    this.#live();
    const { durability } = checkOptions(options, 'options');
    const { strict } = checkWriteOptions({ durability }, this.#durability);
    const seen = new Set();
    const ops = [];
    const tid = this.#tid(false);
    for (const key of encodeKeys(keys)) {
      const id = key.bytes.join(',');
      if (seen.has(id) || !this.#engine.has(key.bytes, tid)) continue;
      seen.add(id);
      ops.push({ type: 'delete', key: key.bytes, isString: key.isString, table: tid });
    }
    await this.#durable(ops.length > 0 ? this.#engine.batch(ops, strict) : 0, strict); // 0 flushes all the same
    return ops.length;
  }

  /**
   * Deletes every key in one commit.
   * @returns {Promise<number>} how many keys it deleted
   */
  async clear(options) {
    this.#live();
    const { durability } = checkOptions(options, 'options');
    const { strict } = checkWriteOptions({ durability }, this.#durability);
    if (this.#table !== undefined) {
      const tid = this.#tid(false);
      if (tid === NO_TABLE) {
        await this.#durable(0, strict); // the table a relaxed drop removed stays removed
        return 0;
      }
      const ops = this.#engine.scan({}, tid).map(({ bytes, key }) => ({
        type: 'delete',
        key: bytes,
        isString: typeof key === 'string',
        table: tid,
      }));
      await this.#durable(ops.length > 0 ? this.#engine.batch(ops, strict) : 0, strict); // 0 flushes all the same
      return ops.length;
    }
    const { count, ticket } = this.#engine.clear(strict);
    await this.#durable(ticket, strict);
    return count;
  }

  /**
   * The committed value of `key`, or undefined.
   * @param {{ as?: 'blob' | 'bytes' | 'text' | 'json' | 'stream' }} [options] default 'blob'
   */
  async get(key, options) {
    this.#live();
    const as = checkForm(checkOptions(options, 'options').as, 'blob');
    const { bytes } = encodeKey(key);
    const tid = this.#tid(false);
    if (as === 'stream') return this.#engine.stream(bytes, tid);
    const value = this.#engine.get(bytes, tid);
    return value === undefined ? undefined : valueAs(value, as);
  }

  /** The value as bytes, or undefined. */
  async getBytes(key) {
    return this.get(key, { as: 'bytes' });
  }

  /** The value as a stream, one chunk per pull, or undefined. */
  async getStream(key) {
    return this.get(key, { as: 'stream' });
  }

  /** The values of `keys`, in order (undefined where absent). */
  async getMany(keys, options) {
    this.#live();
    const as = checkForm(checkOptions(options, 'options').as, 'blob');
    if (as === 'stream') throw invalid("options.as cannot be 'stream' for getMany(); use getStream() per key");
    const tid = this.#tid(false);
    return encodeKeys(keys).map(({ bytes }) => {
      const value = this.#engine.get(bytes, tid);
      return value === undefined ? undefined : valueAs(value, as);
    });
  }

  /** Whether `key` has a committed value. */
  async has(key) {
    this.#live();
    return this.#engine.has(encodeKey(key).bytes, this.#tid(false));
  }

  /** Keys in bytewise order. */
  async keys(options) {
    this.#live();
    return this.#engine.scan(checkRange(options).range, this.#tid(false)).map(({ key }) => key);
  }

  /**
   * Entries in bytewise key order, `{ key, size }` (and `value` with `values: true`). Awaited:
   * the list. Iterated with `for await (const [key, value] of ...)`: page by page, values read
   * (as `as`, default 'blob').
   * @returns {EntryQuery<Entry>}
   */
  entries(options) {
    const { range, values, as } = checkRange(options);
    const form = checkForm(as, 'blob');
    if (form === 'stream') throw invalid("options.as cannot be 'stream' for entries(); use getStream() per key");
    const page = (r, withValues) => {
      this.#live();
      const tid = this.#tid(false);
      const listed = this.#engine.scan(r, tid);
      const items = [];
      for (const { key, bytes, size } of listed) {
        const value = withValues ? this.#engine.get(bytes, tid) : undefined;
        if (!withValues) items.push(new Entry(key, size));
        else if (value !== undefined) items.push(new Entry(key, size, valueAs(value, form)));
      }
      return { items, listed: listed.length, last: listed.at(-1)?.bytes };
    };
    return new EntryQuery(
      async () => page(range, values === true).items,
      () => paged(range, (r) => page(r, true)),
    );
  }

  /** Counters of the store and its log. */
  async stats() {
    this.#live();
    return this.#engine.stats();
  }

  /** Writes a checkpoint now. */
  async checkpoint() {
    this.#live();
    this.#engine.checkpoint();
  }

  /**
   * Reclaims the space of overwritten and deleted values, one chunk copy at a time, giving way
   * to other calls in between.
   * @returns {Promise<number>} compaction rounds finished
   */
  async compact() {
    let rounds = 0;
    for (;;) {
      this.#live();
      const step = this.#engine.compactStep();
      if (step === 'idle') return rounds;
      if (step === 'done') rounds += 1;
      await new Promise((resolve) => later(resolve));
    }
  }

  /** Makes every write so far durable, relaxed ones too. */
  async flush() {
    this.#live();
    this.#root.#commitGroup();
    this.#engine.flush();
  }

  /**
   * Waits for the writes whose data is in hand, aborts streamed writes still reading their
   * source (WalnutClosedError), flushes, writes a checkpoint and releases the store and its
   * lock. Calling it again returns the same promise.
   * @returns {Promise<void>}
   */
  close() {
    if (this.#root !== this) return this.#root.close();
    this.#closing ??= (async () => {
      const closed = new WalnutClosedError(`store ${this.name} was closed`);
      for (const controller of this.#controllers) controller.abort(closed);
      this.#commitGroup();
      this.#engine.close();
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose]() {
    await this.close();
  }
}

/**
 * Makes an AsyncStore over an Engine.
 * @param {import('./engine.js').Engine} engine
 * @param {'strict' | 'relaxed'} durability
 */
export function asyncStore(engine, durability) {
  return new AsyncStore(TOKEN, engine, durability);
}
