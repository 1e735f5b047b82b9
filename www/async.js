/**
 * The promise-returning store over the synchronous core, in the same thread: the API of the
 * page's `WalnutStore` (walnut-kv) for runtimes where the store's files can be written
 * synchronously right here (Node). Strict writes made in the same turn of the event loop share
 * one flush (group commit): the core writes each at once, and the flush runs when the turn's
 * I/O callbacks are done (`setImmediate`), resolving every write it made durable.
 *
 * @module walnut-kv/async
 */

import {
  checkForm,
  checkOperation,
  checkOptions,
  checkRange,
  checkWriteOptions,
  describe,
  encodeKey,
  encodeKeys,
  Entry,
  EntryQuery,
  invalid,
  paged,
  putOperations,
  valueAs,
  valueBytes,
  WalnutClosedError,
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
  constructor(token, engine, durability) {
    if (token !== TOKEN) throw new TypeError('use open() to open a store');
    this.#engine = engine;
    this.#durability = durability;
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
    if (this.#closing) throw new WalnutClosedError(`store ${this.name} is closed`);
  }

  /** Resolves once the commit `ticket` is durable (group commit), or rejects with its failure. */
  #durable(ticket, strict) {
    if (!strict || ticket === 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.#waiting.push({ ticket, resolve, reject });
      if (!this.#scheduled) {
        this.#scheduled = true;
        later(() => this.#commitGroup());
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
      failures = this.#engine.settle(group.map((w) => w.ticket));
    } catch (error) {
      for (const w of group) w.reject(error);
      return;
    }
    group.forEach((w, i) => (failures[i] ? w.reject(failures[i]) : w.resolve()));
  }

  /**
   * Writes `operations` (puts and deletes; values of any kind) in one commit.
   * @returns {Promise<void>}
   */
  async #write(operations, options, list) {
    this.#live();
    const { onProgress, signal, strict } = checkWriteOptions(options, this.#durability);
    const ops = operations.map((operation, index) =>
      checkOperation(operation, index, list, (value, param) => {
        const bytes = valueBytes(value, param);
        if (bytes === undefined && value instanceof ReadableStream && value.locked) {
          throw invalid(`${param}: the ReadableStream is locked`);
        }
        return { value: bytes ?? value, size: bytes?.length };
      }),
    );
    if (ops.length === 0) return;
    let ticket;
    const [op] = ops;
    if (ops.length === 1 && op.type === 'put' && op.value instanceof Uint8Array && !signal) {
      ticket = this.#engine.put({ bytes: op.key, isString: op.isString }, op.value, strict);
      onProgress?.(op.value.length, op.value.length);
    } else {
      const controller = new AbortController();
      const aborted = signal ? AbortSignal.any([signal, controller.signal]) : controller.signal;
      this.#controllers.add(controller);
      try {
        ticket = await this.#engine.transaction(
          ops.map((o) => ({ type: o.type, key: o.key, isString: o.isString, value: o.value })),
          { strict, onProgress, signal: aborted },
        );
      } finally {
        this.#controllers.delete(controller);
      }
    }
    await this.#durable(ticket, strict);
  }

  /**
   * Stores `value` under `key` in one commit. A ReadableStream, Blob or async iterable is
   * streamed in chunk by chunk.
   * @param {string | Uint8Array} key
   * @param {string | ArrayBuffer | ArrayBufferView | Blob | ReadableStream<Uint8Array>} value
   * @param {{ onProgress?: (bytesWritten: number, totalBytes?: number) => void, signal?: AbortSignal, durability?: 'strict' | 'relaxed' }} [options]
   */
  async put(key, value, options) {
    await this.#write([{ type: 'put', key, value }], options, undefined);
  }

  /** Stores several values in one commit (see SyncStore.putMany). */
  async putMany(entries, options) {
    await this.#write(putOperations(entries), options, 'entries');
  }

  /** Applies puts and deletes atomically. */
  async batch(operations, options) {
    if (!Array.isArray(operations)) throw invalid(`operations must be an array, got ${describe(operations)}`);
    await this.#write(operations, options, 'operations');
  }

  /**
   * Deletes `key`.
   * @returns {Promise<boolean>} whether it existed
   */
  async delete(key, options) {
    this.#live();
    const { durability } = checkOptions(options, 'options');
    const { strict } = checkWriteOptions({ durability }, this.#durability);
    const { existed, ticket } = this.#engine.delete(encodeKey(key), strict);
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
    for (const key of encodeKeys(keys)) {
      const id = key.bytes.join(',');
      if (seen.has(id) || !this.#engine.has(key.bytes)) continue;
      seen.add(id);
      ops.push({ type: 'delete', key: key.bytes, isString: key.isString });
    }
    if (ops.length > 0) await this.#durable(this.#engine.batch(ops, strict), strict);
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
    if (as === 'stream') return this.#engine.stream(bytes);
    const value = this.#engine.get(bytes);
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
    return encodeKeys(keys).map(({ bytes }) => {
      const value = this.#engine.get(bytes);
      return value === undefined ? undefined : valueAs(value, as);
    });
  }

  /** Whether `key` has a committed value. */
  async has(key) {
    this.#live();
    return this.#engine.has(encodeKey(key).bytes);
  }

  /** Keys in bytewise order. */
  async keys(options) {
    this.#live();
    return this.#engine.scan(checkRange(options).range).map(({ key }) => key);
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
      const listed = this.#engine.scan(r);
      const items = [];
      for (const { key, bytes, size } of listed) {
        const value = withValues ? this.#engine.get(bytes) : undefined;
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
    this.#commitGroup();
    this.#engine.flush();
  }

  /**
   * Waits for the writes whose data is in hand, aborts streamed writes still reading their
   * source (WalnutClosedError), flushes, writes a checkpoint and releases the store and its
   * lock. Calling it again returns the same promise.
   * @returns {Promise<void>}
   */
  close() {
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
