/**
 * What every walnut entry point shares: the error classes, and the checking and encoding of
 * keys, values, ranges and options, so that a bad argument gets the same error, naming the
 * same parameter, from the page API, the synchronous store, Node and a Durable Object.
 *
 * @module walnut-kv/common
 */

/** Longest key accepted, in bytes (UTF-8 for strings). */
export const MAX_KEY_BYTES = 65535;
/** The largest `lockTimeout` and `directWriteThreshold`: the core holds them as 32-bit integers. */
export const MAX_U32 = 2 ** 32 - 1;

/**
 * markFlushed()/deleteUpTo() on a table nothing was written to: its last sequence number is 0,
 * so 0 is a mark already in place (nothing is written, and the table is not created) and
 * anything above is refused as the core refuses it on an existing table.
 * @returns {number} ticket 0 (nothing written)
 */
export function absentMark(seq) {
  if (seq === 0) return 0;
  throw invalid(`seq: ${seq} is above the table's last sequence number 0 (nothing was ever written to it)`);
}

export const encoder = new TextEncoder();
export const decoder = new TextDecoder();

/** Base class of every error walnut rejects with; `name` tells the kind. */
export class WalnutError extends Error {}
WalnutError.prototype.name = 'WalnutError';

/**
 * Makes the error class for one of the stable error names (a class per name so that
 * `instanceof` works and `name` survives minification).
 * @param {string} name
 */
export function errorClass(name) {
  const cls = class extends WalnutError {};
  Object.defineProperty(cls, 'name', { value: name });
  cls.prototype.name = name;
  return cls;
}

/** Reading or writing OPFS failed. */
export const WalnutIoError = errorClass('WalnutIoError');
/** The log holds data that cannot be right (a broken structure, not a torn tail). */
export const WalnutCorruptionError = errorClass('WalnutCorruptionError');
/** A stored chunk failed its CRC check on read. */
export const WalnutChecksumError = errorClass('WalnutChecksumError');
/** An earlier write or flush failed; the store refuses writes until it is reopened. */
export const WalnutPoisonedError = errorClass('WalnutPoisonedError');
/** The origin's storage quota is exhausted. */
export const WalnutQuotaExceededError = errorClass('WalnutQuotaExceededError');
/** Another worker (tab, or a page being reloaded) holds the store for longer than `lockTimeout`. */
export const WalnutLockedError = errorClass('WalnutLockedError');
/** An argument has the wrong type or value; the message names the parameter. */
export const WalnutInvalidArgumentError = errorClass('WalnutInvalidArgumentError');
/** The store was closed or terminated. */
export const WalnutClosedError = errorClass('WalnutClosedError');
/** The environment lacks what walnut needs (module workers, OPFS, WebAssembly). */
export const WalnutUnsupportedError = errorClass('WalnutUnsupportedError');
/** A transaction was used wrongly or could not be completed. */
export const WalnutTransactionError = errorClass('WalnutTransactionError');
/**
 * The context leading the store (the tab whose worker holds its files) went away while this call
 * was under way, and the call did not take effect: the old value stands. Retryable: call again
 * (a new leader is elected at once). Only calls that cannot be sent again safely get it: a put
 * whose stream was partly read, a read of a stream opened on the old leader.
 */
export const WalnutLeaderChangedError = errorClass('WalnutLeaderChangedError');
/**
 * An optimistic transaction or a conditional write lost a race: a key or range it read, or the
 * version it was given, changed before it could commit. Nothing was written. transaction()
 * runs its callback again first (up to `retries` times) and rejects with it only then.
 */
export const WalnutConflictError = errorClass('WalnutConflictError');

export const ERROR_CLASSES = new Map(
  [
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
  ].map((cls) => [cls.name, cls]),
);

/**
 * Rebuilds an error the worker sent as `{ name, message }`.
 * @param {{ name: string, message: string }} error
 */
export function toError({ name, message }) {
  const cls = ERROR_CLASSES.get(name) ?? WalnutIoError;
  return new cls(message);
}

/** @param {string} message */
export function invalid(message) {
  return new WalnutInvalidArgumentError(message);
}

/** @param {unknown} value a short description of a value's type for error messages */
export function describe(value) {
  if (value === null) return 'null';
  if (typeof value !== 'object') return typeof value;
  return value.constructor?.name ?? 'object';
}

/** @param {ArrayBuffer} buffer */
export function isDetached(buffer) {
  // `detached` is missing in older engines; there a detached buffer shows as empty.
  return buffer.detached === true;
}

/**
 * Validates a key and encodes it for the worker. The bytes are a copy, so the caller may
 * reuse their array at once.
 * @param {unknown} key
 * @param {string} param the parameter name for error messages
 * @returns {{ bytes: Uint8Array, isString: boolean }}
 */
export function encodeKey(key, param = 'key') {
  let bytes;
  let isString = false;
  if (typeof key === 'string') {
    if (key.isWellFormed?.() === false) {
      throw invalid(`${param} is not well-formed UTF-16 (it has a lone surrogate)`);
    }
    bytes = encoder.encode(key);
    isString = true;
  } else if (key instanceof Uint8Array) {
    if (isDetached(key.buffer)) throw invalid(`${param}: its ArrayBuffer is detached`);
    bytes = key.slice();
  } else {
    throw invalid(`${param} must be a string or a Uint8Array, got ${describe(key)}`);
  }
  if (bytes.length === 0) throw invalid(`${param} must not be empty`);
  if (bytes.length > MAX_KEY_BYTES) {
    throw invalid(`${param} is ${bytes.length} bytes long; the limit is ${MAX_KEY_BYTES}`);
  }
  return { bytes, isString };
}

/**
 * Validates an optional key range bound or prefix (empty allowed) and encodes it.
 * @param {unknown} bound
 * @param {string} param
 * @returns {Uint8Array | undefined}
 */
export function encodeBound(bound, param) {
  if (bound === undefined) return undefined;
  if (typeof bound === 'string') return encoder.encode(bound);
  if (bound instanceof Uint8Array) {
    if (isDetached(bound.buffer)) throw invalid(`${param}: its ArrayBuffer is detached`);
    return bound.slice();
  }
  throw invalid(`${param} must be a string or a Uint8Array, got ${describe(bound)}`);
}

/**
 * Validates a value and turns it into what the worker receives: bytes (copied, so the caller's
 * buffer is never detached), a Blob (cloned by reference) or a ReadableStream (transferred).
 * @param {unknown} value
 * @param {string} param
 * @param {Transferable[]} transfer collects what must be transferred with the message
 * @returns {{ value: Uint8Array | Blob | ReadableStream, size: number | undefined }}
 */
export function encodeValue(value, param, transfer) {
  let bytes;
  if (typeof value === 'string') {
    bytes = encoder.encode(value);
  } else if (value instanceof ArrayBuffer) {
    if (isDetached(value)) throw invalid(`${param}: the ArrayBuffer is detached`);
    bytes = new Uint8Array(value.slice(0));
  } else if (ArrayBuffer.isView(value)) {
    if (isDetached(value.buffer)) throw invalid(`${param}: its ArrayBuffer is detached`);
    bytes = new Uint8Array(value.buffer, value.byteOffset, value.byteLength).slice();
  } else if (value instanceof Blob) {
    return { value, size: value.size };
  } else if (value instanceof ReadableStream) {
    if (value.locked) throw invalid(`${param}: the ReadableStream is locked`);
    transfer.push(value);
    return { value, size: undefined };
  } else {
    throw invalid(
      `${param} must be a string, ArrayBuffer, ArrayBufferView, Blob or ReadableStream, got ${describe(value)}`,
    );
  }
  transfer.push(bytes.buffer);
  return { value: bytes, size: bytes.length };
}

/**
 * Cancels the streams of a write call that were never sent to the worker, so that their sources
 * stop (a fetch body releases its connection): the call is over and nothing will read them. A
 * stream that was sent is locked (the worker holds it, and cancels it when its write ends
 * without reading it to the end); a stream the caller locked is not walnut's to cancel.
 * @param {ReadableStream[]} streams
 * @param {unknown} reason
 */
export function cancelUnsent(streams, reason) {
  for (const stream of streams) if (!stream.locked) stream.cancel(reason).catch(() => {});
}

/**
 * @param {unknown} durability
 * @param {string} param
 * @returns {'strict' | 'relaxed' | undefined}
 */
export function checkDurability(durability, param) {
  if (durability === undefined || durability === 'strict' || durability === 'relaxed') {
    return durability;
  }
  throw invalid(`${param} must be 'strict' or 'relaxed', got ${String(durability)}`);
}

/**
 * @param {unknown} options
 * @param {string} param
 * @returns {Record<string, unknown>}
 */
export function checkOptions(options, param) {
  if (options === undefined) return {};
  if (options === null || typeof options !== 'object') {
    throw invalid(`${param} must be an object, got ${describe(options)}`);
  }
  return /** @type {Record<string, unknown>} */ (options);
}

/**
 * @param {unknown} value
 * @param {string} param
 * @param {number} min
 * @param {number} max
 */
export function checkInteger(value, param, min, max = Number.MAX_SAFE_INTEGER) {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw invalid(`${param} must be an integer from ${min} to ${max}, got ${String(value)}`);
  }
  return value;
}

/**
 * Validates the options of a write (put, delete, batch).
 * @param {unknown} options
 * @param {'strict' | 'relaxed'} storeDurability
 */
export function checkWriteOptions(options, storeDurability) {
  const { onProgress, signal, durability } = checkOptions(options, 'options');
  if (onProgress !== undefined && typeof onProgress !== 'function') {
    throw invalid(`options.onProgress must be a function, got ${describe(onProgress)}`);
  }
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw invalid(`options.signal must be an AbortSignal, got ${describe(signal)}`);
  }
  const strict = (checkDurability(durability, 'options.durability') ?? storeDurability) === 'strict';
  return { onProgress, signal, strict };
}

/**
 * Validates open()'s options.
 * @param {unknown} options
 */
export function checkOpenOptions(options) {
  const { chunkSize, durability, lockTimeout, directWriteThreshold, segmentSize, checkpointBytes, compactionRatio, idRetention } =
    checkOptions(options, 'options');
  const core = {};
  if (chunkSize !== undefined) {
    core.chunkSize = checkInteger(chunkSize, 'options.chunkSize', 4096, 64 * 1024 * 1024);
  }
  if (directWriteThreshold !== undefined) {
    core.directWriteThreshold = checkInteger(directWriteThreshold, 'options.directWriteThreshold', 1, MAX_U32);
  }
  if (lockTimeout !== undefined) {
    core.lockTimeoutMs = checkInteger(lockTimeout, 'options.lockTimeout', 0, MAX_U32);
  }
  if (segmentSize !== undefined) {
    core.segmentSize = checkInteger(segmentSize, 'options.segmentSize', 4096, 2 ** 39);
  }
  if (checkpointBytes !== undefined) {
    core.checkpointBytes = checkInteger(checkpointBytes, 'options.checkpointBytes', 0, 2 ** 53);
  }
  if (compactionRatio !== undefined) {
    if (typeof compactionRatio !== 'number' || !(compactionRatio >= 0 && compactionRatio <= 1)) {
      throw invalid(`options.compactionRatio must be a number from 0 to 1, got ${String(compactionRatio)}`);
    }
    core.compactionRatio = compactionRatio;
  }
  if (idRetention !== undefined) {
    core.idRetention = checkInteger(idRetention, 'options.idRetention', 0, 1_000_000);
  }
  return { core, durability: checkDurability(durability, 'options.durability') ?? 'strict' };
}


/**
 * Validates one operation of a batch and encodes its key, and its value with `encode`.
 * @param {unknown} operation
 * @param {number} index
 * @param {string | undefined} list the array parameter's name (undefined: a single put/delete)
 * @param {(value: unknown, param: string) => { value: unknown, size: number | undefined }} encode
 * @returns {{ type: 'put', key: Uint8Array, isString: boolean, value: unknown, size: number | undefined } | { type: 'delete', key: Uint8Array, isString: boolean }}
 */
export function checkOperation(operation, index, list, encode) {
  const param = (name) => (list ? `${list}[${index}].${name}` : name);
  if (operation === null || typeof operation !== 'object') {
    throw invalid(`${list}[${index}] must be an operation object, got ${describe(operation)}`);
  }
  const table = operation.table === undefined ? undefined : checkTableName(operation.table, param('table'));
  if (operation.type === 'append') {
    if (table === undefined) throw invalid(`${param('table')} must name the table an append goes to`);
    const encoded = encode(operation.value, param('value'));
    return { type: 'append', table, value: encoded.value, size: encoded.size };
  }
  const { bytes, isString } = encodeKey(operation.key, param('key'));
  if (operation.type === 'delete') return { type: 'delete', key: bytes, isString, table };
  if (operation.type !== 'put') {
    throw invalid(`${param('type')} must be 'put', 'delete' or 'append', got ${String(operation.type)}`);
  }
  const encoded = encode(operation.value, param('value'));
  return { type: 'put', key: bytes, isString, value: encoded.value, size: encoded.size, table };
}

const utf8 = new TextEncoder();

/**
 * Unpacks readQueueValues()'s buffer: per entry seq (f64 LE), size (f64 LE), then the value.
 * @param {Uint8Array} packed
 * @returns {Array<{ seq: number, size: number, value: Uint8Array }>}
 */
export function unpackQueue(packed) {
  const view = new DataView(packed.buffer, packed.byteOffset, packed.byteLength);
  const out = [];
  for (let at = 0; at + 16 <= packed.length; ) {
    const seq = view.getFloat64(at, true);
    const size = view.getFloat64(at + 8, true);
    at += 16;
    out.push({ seq, size, value: packed.subarray(at, at + size) });
    at += size;
  }
  return out;
}

/**
 * Unpacks changes()'s buffer into `[{ seq, type, key, size, current }]`.
 * @param {Uint8Array} packed
 */
export function unpackChanges(packed) {
  const view = new DataView(packed.buffer, packed.byteOffset, packed.byteLength);
  const out = [];
  for (let at = 0; at + 21 <= packed.length; ) {
    const seq = view.getFloat64(at, true);
    const flags = packed[at + 8];
    const size = view.getFloat64(at + 9, true);
    const len = view.getUint32(at + 17, true);
    const bytes = packed.slice(at + 21, at + 21 + len);
    at += 21 + len;
    const key = flags & 4 ? utf8Decoder.decode(bytes) : bytes;
    out.push({ seq, type: flags & 1 ? 'delete' : 'put', key, size, current: Boolean(flags & 2) });
  }
  return out;
}

const utf8Decoder = new TextDecoder();

/**
 * Checks changes()' and follow()'s options.
 * @returns {{ since: number, limit: number | undefined }}
 */
export function checkChangesOptions(options) {
  const { since = 0, limit } = checkOptions(options, 'options');
  checkSeq(since, 'options.since');
  if (limit !== undefined && !(Number.isInteger(limit) && limit >= 0 && limit <= 0xffffffff)) {
    throw invalid(`options.limit must be a whole number, got ${describe(limit)}`);
  }
  return { since, limit };
}

/**
 * Follows a table's change feed (the body of every home's `follow()`): pages it with
 * `changes({ since, limit })` (a value or a promise), yields each change, and once caught up
 * waits with `wait(interval, signal)` before looking again, until `signal` aborts.
 * @param {(options: { since: number, limit: number }) => unknown} changes
 * @param {(ms: number, signal?: AbortSignal) => Promise<void>} wait
 * @param {unknown} options `{ since, signal, interval }`
 */
export async function* followFeed(changes, wait, options) {
  const { signal, interval = 100, ...rest } = checkOptions(options, 'options');
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw invalid(`options.signal must be an AbortSignal, got ${describe(signal)}`);
  }
  if (!(Number.isFinite(interval) && interval >= 0)) throw invalid(`options.interval must be ms >= 0, got ${describe(interval)}`);
  let { since } = checkChangesOptions(rest);
  for (;;) {
    if (signal?.aborted) return;
    const page = await changes({ since, limit: 1000 });
    for (const change of page) {
      yield change;
      since = change.seq;
    }
    if (page.length === 0) await wait(interval, signal);
  }
}

/**
 * Calls `callback` with every change `feed` (a followFeed) yields; resolves when it stops.
 * @param {AsyncIterable<unknown>} feed
 * @param {unknown} callback
 */
export async function watchFeed(feed, callback) {
  if (typeof callback !== 'function') throw invalid(`callback must be a function, got ${describe(callback)}`);
  for await (const change of feed) callback(change);
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true });
  });
}

/**
 * Checks a table name: a string of 1 to 255 bytes of UTF-8.
 * @param {unknown} name
 * @param {string} [param]
 * @returns {string}
 */
export function checkTableName(name, param = 'name') {
  if (typeof name !== 'string' || name.length === 0 || utf8.encode(name).length > 255) {
    throw invalid(`${param} must be a table name (1 to 255 bytes of UTF-8), got ${describe(name)}`);
  }
  return name;
}

/**
 * Checks a sequence number: a whole number from 0 to 2^53 - 1.
 * @param {unknown} seq
 * @param {string} [param]
 * @returns {number}
 */
export function checkSeq(seq, param = 'seq') {
  if (!Number.isSafeInteger(seq) || seq < 0) {
    throw invalid(`${param} must be a sequence number (a whole number >= 0), got ${describe(seq)}`);
  }
  return seq;
}

/**
 * Turns putMany()'s argument into batch operations: an iterable of `[key, value]` pairs (an
 * array of pairs, a Map) or a plain object whose own string keys are the keys.
 * @param {unknown} entries
 * @returns {Array<{ type: 'put', key: unknown, value: unknown }>}
 */
export function putOperations(entries) {
  if (entries !== null && typeof entries === 'object' && typeof entries[Symbol.iterator] === 'function') {
    return Array.from(entries, (pair, index) => {
      if (!Array.isArray(pair) || pair.length !== 2) {
        throw invalid(`entries[${index}] must be a [key, value] pair, got ${describe(pair)}`);
      }
      return { type: 'put', key: pair[0], value: pair[1] };
    });
  }
  if (entries !== null && typeof entries === 'object' && Object.getPrototypeOf(entries) === Object.prototype) {
    return Object.entries(entries).map(([key, value]) => ({ type: 'put', key, value }));
  }
  throw invalid(`entries must be an iterable of [key, value] pairs or a plain object, got ${describe(entries)}`);
}

/**
 * Validates a list of keys (getMany, deleteMany).
 * @param {unknown} keys
 * @returns {Array<{ bytes: Uint8Array, isString: boolean }>}
 */
export function encodeKeys(keys) {
  if (!Array.isArray(keys)) throw invalid(`keys must be an array, got ${describe(keys)}`);
  return keys.map((key, index) => encodeKey(key, `keys[${index}]`));
}

/**
 * Validates the options of a scan (keys, entries) and encodes its range for the core.
 * @param {unknown} options
 * @returns {{ range: { prefix?: Uint8Array, start?: Uint8Array, end?: Uint8Array, limit?: number, reverse?: boolean }, values: boolean | undefined, as: unknown }}
 */
export function checkRange(options) {
  const { prefix, start, end, limit, reverse, values, as } = checkOptions(options, 'options');
  const range = {};
  for (const [name, bound] of [
    ['prefix', prefix],
    ['start', start],
    ['end', end],
  ]) {
    const bytes = encodeBound(bound, `options.${name}`);
    if (bytes) range[name] = bytes;
  }
  if (limit !== undefined) range.limit = checkInteger(limit, 'options.limit', 0);
  if (reverse !== undefined) {
    if (typeof reverse !== 'boolean') throw invalid('options.reverse must be a boolean');
    range.reverse = reverse;
  }
  if (values !== undefined && typeof values !== 'boolean') throw invalid('options.values must be a boolean');
  return { range, values, as };
}

/**
 * Decodes the core's packed key list (see `WalnutStore.keys` in docs/WORKER_API.md): for each
 * key, `key_len` u32 LE, `flags` u8 (bit 0: a string key), `size` f64 LE, the key bytes.
 * @param {Uint8Array} packed
 * @returns {Array<{ key: string | Uint8Array, bytes: Uint8Array, size: number }>}
 */
export function unpackKeys(packed) {
  const view = new DataView(packed.buffer, packed.byteOffset, packed.byteLength);
  const out = [];
  for (let at = 0; at < packed.length; ) {
    const length = view.getUint32(at, true);
    const isString = (view.getUint8(at + 4) & 1) === 1;
    const size = view.getFloat64(at + 5, true);
    const bytes = packed.slice(at + 13, at + 13 + length);
    out.push({ key: isString ? decoder.decode(bytes) : bytes, bytes, size });
    at += 13 + length;
  }
  return out;
}

/** The forms a value can be read as: `get(key, { as })`. */
export const VALUE_FORMS = ['bytes', 'text', 'json', 'blob', 'stream'];

/**
 * Validates a read's `as` option.
 * @param {unknown} as
 * @param {string} fallback the form when `as` is undefined
 * @param {string} [param]
 * @returns {'bytes' | 'text' | 'json' | 'blob' | 'stream'}
 */
export function checkForm(as, fallback, param = 'options.as') {
  if (as === undefined) return /** @type {any} */ (fallback);
  if (!VALUE_FORMS.includes(/** @type {string} */ (as))) {
    throw invalid(`${param} must be one of ${VALUE_FORMS.map((f) => `'${f}'`).join(', ')}, got ${String(as)}`);
  }
  return /** @type {any} */ (as);
}

/**
 * A value read whole, in the form asked for ('stream' is the caller's business).
 * @param {Uint8Array} bytes
 * @param {'bytes' | 'text' | 'json' | 'blob'} as
 */
export function valueAs(bytes, as) {
  switch (as) {
    case 'text':
      return decoder.decode(bytes);
    case 'json':
      return JSON.parse(decoder.decode(bytes));
    case 'blob':
      return new Blob([bytes]);
    default:
      return bytes;
  }
}

/**
 * A key and its value's size, and, when the listing asked for values, the value. Iterating an
 * entry gives its key, then its value, so that `for (const [key, value] of entries)` works (as
 * for a Map's entries).
 */
export class Entry {
  /**
   * @param {string | Uint8Array} key
   * @param {number} size bytes
   * @param {unknown} [value]
   */
  constructor(key, size, value) {
    this.key = key;
    this.size = size;
    if (value !== undefined) this.value = value;
  }

  *[Symbol.iterator]() {
    yield this.key;
    yield this.value;
  }
}

/**
 * Validates a write value for a store in this thread: its bytes (a view of the caller's
 * memory, read before the call returns), or `undefined` for a value to stream in (a Blob, a
 * ReadableStream, an async iterable of chunks).
 * @param {unknown} value
 * @param {string} param
 * @returns {Uint8Array | undefined}
 */
export function valueBytes(value, param) {
  if (typeof value === 'string') return encoder.encode(value);
  if (value instanceof ArrayBuffer) {
    if (isDetached(value)) throw invalid(`${param}: the ArrayBuffer is detached`);
    return new Uint8Array(value);
  }
  if (ArrayBuffer.isView(value)) {
    if (isDetached(value.buffer)) throw invalid(`${param}: its ArrayBuffer is detached`);
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }
  if (value instanceof Blob || value instanceof ReadableStream) return undefined;
  if (value !== null && typeof value === 'object' && typeof value[Symbol.asyncIterator] === 'function') {
    return undefined; // an async iterable of chunks (a Node Readable, an async generator)
  }
  throw invalid(
    `${param} must be a string, ArrayBuffer, ArrayBufferView, Blob, ReadableStream or async iterable, got ${describe(value)}`,
  );
}

/**
 * What `entries()` returns: awaited, the list of entries; iterated with `for await`, the entries
 * page by page (`[key, value]` pairs, values always read), so memory holds one page at a time.
 * @template T
 */
export class EntryQuery {
  #run;
  #iterate;
  /** @type {Promise<T[]> | undefined} */
  #promise;

  /**
   * @param {() => Promise<T[]>} run the whole list
   * @param {() => AsyncIterator<T>} iterate the pages
   */
  constructor(run, iterate) {
    this.#run = run;
    this.#iterate = iterate;
  }

  /** @type {Promise<T[]>['then']} */
  then(onFulfilled, onRejected) {
    this.#promise ??= this.#run();
    return this.#promise.then(onFulfilled, onRejected);
  }

  /** @type {Promise<T[]>['catch']} */
  catch(onRejected) {
    return this.then(undefined, onRejected);
  }

  /** @type {Promise<T[]>['finally']} */
  finally(onFinally) {
    this.#promise ??= this.#run();
    return this.#promise.finally(onFinally);
  }

  [Symbol.asyncIterator]() {
    return this.#iterate();
  }
}

/** Entries per page when `entries()` is iterated. */
export const PAGE_ENTRIES = 256;

/**
 * Walks `range` page by page: `fetchPage(range)` lists up to `range.limit` keys and returns
 * `{ items, listed, last }`: what to yield (some listed keys may be left out), how many keys it
 * listed, and the raw bytes of the last one; the next page starts after it (or, walking in
 * reverse, ends before it).
 * @template T
 * @param {{ start?: Uint8Array, end?: Uint8Array, limit?: number, reverse?: boolean }} range
 * @param {(range: object) => Promise<{ items: T[], listed: number, last?: Uint8Array }> | { items: T[], listed: number, last?: Uint8Array }} fetchPage
 * @returns {AsyncGenerator<T>}
 */
export async function* paged(range, fetchPage) {
  let left = range.limit ?? Infinity;
  const next = { ...range };
  while (left > 0) {
    const want = Math.min(PAGE_ENTRIES, left);
    const { items, listed, last } = await fetchPage({ ...next, limit: want });
    yield* items;
    if (listed < want || !last) return;
    left -= listed;
    if (next.reverse) {
      next.end = last;
    } else {
      const after = new Uint8Array(last.length + 1); // the least key greater than `last`
      after.set(last);
      next.start = after;
    }
  }
}

// ----- transactions -----

/** Longest commit id, bytes of UTF-8 (the core's MAX_COMMIT_ID_LEN). */
export const MAX_ID_BYTES = 128;
/** Deepest nesting of transactions (the core's MAX_TX_DEPTH): the outermost is depth 1. */
export const MAX_TX_DEPTH = 32;
/** Default of transaction()'s `retries`: runs after the first, on conflicts. */
export const DEFAULT_TX_RETRIES = 10;

/**
 * Validates transaction()'s options.
 * @returns {{ id?: string, strict: boolean, signal?: AbortSignal, retries: number }}
 */
export function checkTransactionOptions(options, storeDurability) {
  const { id, durability, signal, retries } = checkOptions(options, 'options');
  const { strict } = checkWriteOptions({ durability, signal }, storeDurability);
  return { id: checkId(id, 'options.id'), strict, signal, retries: retries === undefined ? DEFAULT_TX_RETRIES : checkInteger(retries, 'options.retries', 0, 1000) };
}

/** Validates a commit id: a string of 1 to MAX_ID_BYTES bytes of UTF-8, or undefined. */
export function checkId(id, param) {
  if (id === undefined) return undefined;
  if (typeof id !== 'string') throw invalid(`${param} must be a string, got ${describe(id)}`);
  const n = encoder.encode(id).length;
  if (n < 1 || n > MAX_ID_BYTES) throw invalid(`${param} must be 1 to ${MAX_ID_BYTES} bytes of UTF-8, got ${n}`);
  if (id.startsWith('walnut-export/')) throw invalid(`${param}: ids starting with 'walnut-export/' are walnut's own`);
  return id;
}

/**
 * Validates a version for a conditional write or check: a whole number (a version read with
 * versionOf() or getWithVersion()), or null for "absent".
 * @returns {number} the version, -1 for null (the core's form)
 */
export function checkVersion(version, param) {
  if (version === null) return -1;
  if (!Number.isSafeInteger(version) || version < 1) {
    throw invalid(`${param} must be a version (a whole number from versionOf()) or null for "absent", got ${String(version)}`);
  }
  return version;
}

/** Whether a run of a transaction should be tried again: it lost a race, or its leader went. */
function retryable(error) {
  return (
    error instanceof WalnutConflictError ||
    error instanceof WalnutLeaderChangedError ||
    (error instanceof WalnutTransactionError && /not an open transaction|not open/.test(error.message))
  );
}

/**
 * Runs `fn(tx)` as an optimistic transaction on `driver` (the store's transaction calls), again
 * on a conflict, up to `retries` more times: SynapseDB's BEGIN/COMMIT/ABORT with a layer stack
 * for nested transactions and idempotent ids. Resolves to `{ applied: true, version, value }`
 * (`value`: what `fn` returned), or `{ applied: false, version }` if a commit with `id` was made
 * before (then `fn` does not run, or its writes are dropped).
 * @param {object} driver begin(id, strict), get(txn, key, table), keys(txn, range, table),
 *   put(txn, key, value, table, signal), delete(txn, key, table), nest(txn), end(txn, keep),
 *   commit(txn, id, strict), abort(txn): each a value or a promise of one
 */
export async function runTransaction(driver, fn, options, storeDurability, table) {
  if (typeof fn !== 'function') throw invalid(`callback must be a function, got ${describe(fn)}`);
  const { id, strict, signal, retries } = checkTransactionOptions(options, storeDurability);
  for (let attempt = 0; ; attempt++) {
    signal?.throwIfAborted();
    // A strict call whose id was committed before waits for that commit's flush (it may have
    // been relaxed): its answer says the transaction is in the store.
    const begun = await driver.begin(id, strict);
    if (begun.duplicate) return { applied: false, version: begun.version };
    const tx = new Transaction(driver, begun.txn, table, 1, signal, false);
    let value;
    try {
      value = await fn(tx);
      await tx.finish();
      signal?.throwIfAborted();
    } catch (error) {
      await tx.finish().catch(() => {});
      await Promise.resolve()
        .then(() => driver.abort(begun.txn))
        .catch(() => {});
      if (retryable(error) && attempt < retries && !signal?.aborted) {
        await backoff(attempt);
        continue;
      }
      throw error;
    }
    try {
      const done = await driver.commit(begun.txn, id, strict);
      return done.applied ? { applied: true, version: done.version, value } : { applied: false, version: done.version };
    } catch (error) {
      if (retryable(error) && attempt < retries && !signal?.aborted) {
        await backoff(attempt);
        continue;
      }
      throw error;
    }
  }
}

/**
 * Waits before a transaction's next run: a random time up to 2^attempt ms (at most 256 ms), so
 * that contenders that keep conflicting spread out (randomized exponential backoff, as
 * FoundationDB's clients do) instead of livelocking.
 */
function backoff(attempt) {
  return sleep(Math.random() * Math.min(256, 2 ** attempt));
}

/**
 * runTransaction for a synchronous store (SyncStore): `fn(tx)` runs synchronously, `tx`'s calls
 * return values, and so does this.
 */
export function runTransactionSync(driver, fn, options, storeDurability, table) {
  if (typeof fn !== 'function') throw invalid(`callback must be a function, got ${describe(fn)}`);
  const { id, strict, retries } = checkTransactionOptions(options, storeDurability);
  for (let attempt = 0; ; attempt++) {
    const begun = driver.begin(id, strict); // a duplicate is flushed first when strict (see runTransaction)
    if (begun.duplicate) return { applied: false, version: begun.version };
    const tx = new Transaction(driver, begun.txn, table, 1, undefined, true);
    let value;
    try {
      value = fn(tx);
      tx.finish();
      if (typeof value?.then === 'function') {
        throw invalid("a synchronous store's transaction callback must not be async (use the async store)");
      }
      const done = driver.commit(begun.txn, id, strict);
      return done.applied ? { applied: true, version: done.version, value } : { applied: false, version: done.version };
    } catch (error) {
      tx.finish();
      try {
        driver.abort(begun.txn);
      } catch {
        // aborted already (a conflict at commit), or the store closed
      }
      if (retryable(error) && attempt < retries) continue;
      throw error;
    }
  }
}

/**
 * A transaction (or a nested one) as its callback sees it: reads of a consistent state with its
 * own writes, writes visible to others only at the outermost commit. An async store's calls
 * return promises and run one at a time in call order; a synchronous store's return values.
 * Not usable once its callback has settled, nor while a transaction nested in it runs.
 */
export class Transaction {
  #driver;
  #txn;
  #table;
  #depth;
  #signal;
  #sync;
  /** The last call's promise: calls run one after another. */
  #queue = Promise.resolve();
  #ended = false;
  #nested = false;
  /** The first of its calls that failed: the transaction cannot commit (it may hold part of a write). */
  #failure = null;

  constructor(driver, txn, table, depth, signal, sync) {
    this.#driver = driver;
    this.#txn = txn;
    this.#table = table;
    this.#depth = depth;
    this.#signal = signal;
    this.#sync = sync;
  }

  /** Nesting depth: 1 for the outermost transaction. */
  get depth() {
    return this.#depth;
  }

  #run(call, work, dooms = true) {
    if (this.#ended) throw new WalnutTransactionError(`tx.${call}() after the transaction's callback settled`);
    if (this.#nested) throw new WalnutTransactionError(`tx.${call}() while a nested transaction runs: use the inner one`);
    if (this.#failure) throw this.#failure;
    this.#signal?.throwIfAborted();
    // A call that fails fails the transaction, caught or not (a streamed put that broke off
    // may have written part of its value): its commit rejects with that failure.
    if (this.#sync) {
      try {
        return work();
      } catch (error) {
        if (dooms) this.#failure ??= error;
        throw error;
      }
    }
    const next = this.#queue.then(() => {
      if (this.#failure) throw this.#failure;
      return work();
    });
    this.#queue = next.catch((error) => {
      if (dooms) this.#failure ??= error;
    });
    return next;
  }

  /** `f(result)`, now for a synchronous store, once `result` settles for an async one. */
  #then(result, f) {
    return this.#sync ? f(result) : Promise.resolve(result).then(f);
  }

  /** Waits for its calls and closes it (the runner, after the callback); throws the first call's failure. */
  finish() {
    this.#ended = true;
    const failed = () => {
      if (this.#failure) throw this.#failure;
    };
    return this.#sync ? failed() : this.#queue.then(failed);
  }

  #tableOf(options) {
    const { table } = checkOptions(options, 'options');
    if (table !== undefined && (typeof table !== 'string' || table === '')) throw invalid('options.table must be a table name');
    return table ?? this.#table;
  }

  /** The value of `key` in the form `as` (default 'bytes'), or undefined. Option `table`: another table. */
  get(key, options) {
    const { as } = checkOptions(options, 'options');
    const form = checkForm(as, 'bytes');
    if (form === 'stream' || (this.#sync && form === 'blob')) throw invalid(`options.as cannot be '${form}' in this transaction`);
    const k = encodeKey(key);
    const table = this.#tableOf(options);
    return this.#run('get', () =>
      this.#then(this.#driver.get(this.#txn, k.bytes, table), (bytes) => (bytes === undefined ? undefined : valueAs(bytes, form))),
    );
  }

  /** The value of `key` as bytes, or undefined. */
  getBytes(key, options) {
    return this.get(key, { ...checkOptions(options, 'options'), as: 'bytes' });
  }

  /** Whether `key` has a value (a read, as get()). */
  has(key, options) {
    return this.#then(this.get(key, options), (v) => v !== undefined);
  }

  /** Keys with sizes, `[{ key, size }]`, as keys() selects them; the whole range is read (no phantoms). */
  entries(options) {
    const { range } = checkRange(options);
    const table = this.#tableOf(options);
    return this.#run('entries', () =>
      this.#then(this.#driver.keys(this.#txn, range, table), (keys) => keys.map(({ key, size }) => new Entry(key, size))),
    );
  }

  /** Keys in bytewise order (see entries()). */
  keys(options) {
    return this.#then(this.entries(options), (entries) => entries.map((e) => e.key));
  }

  /** Puts `value` under `key` (bytes, a string; an async store's also a Blob, a stream...): visible at the commit. */
  put(key, value, options) {
    const k = encodeKey(key);
    const table = this.#tableOf(options);
    const bytes = valueBytes(value, 'value')?.slice(); // the caller may reuse its buffer
    if (bytes === undefined && this.#sync) throw invalid(`value is a ${describe(value)}: a synchronous store's transaction takes bytes or a string`);
    return this.#run('put', () => this.#driver.put(this.#txn, k, bytes ?? value, table, this.#signal));
  }

  /** Deletes `key`: visible at the commit. */
  delete(key, options) {
    const k = encodeKey(key);
    const table = this.#tableOf(options);
    return this.#run('delete', () => this.#driver.delete(this.#txn, k.bytes, table));
  }

  /**
   * Runs `fn(inner)` as a nested transaction: a throw discards its writes only and rethrows to
   * this one, which may catch it and go on; its success merges its writes into this one.
   * Nothing nested is visible before the outermost commit. Returns (resolves to) what `fn` returned.
   */
  transaction(fn) {
    if (typeof fn !== 'function') throw invalid(`callback must be a function, got ${describe(fn)}`);
    if (this.#depth >= MAX_TX_DEPTH) throw invalid(`transactions nest at most ${MAX_TX_DEPTH} deep`);
    const inner = () => new Transaction(this.#driver, this.#txn, this.#table, this.#depth + 1, this.#signal, this.#sync);
    // Whatever the failure (a conflict too), the inner writes are rolled back before this one
    // goes on; if even that fails, the whole transaction is gone (the core aborts it).
    const failed = async (error) => {
      this.#nested = false;
      await Promise.resolve()
        .then(() => this.#driver.end(this.#txn, false))
        .catch(() => {});
      throw error;
    };
    if (this.#sync) {
      return this.#run('transaction', () => {
        this.#driver.nest(this.#txn);
        this.#nested = true;
        const tx = inner();
        let value;
        try {
          value = fn(tx);
          tx.finish();
          if (typeof value?.then === 'function') throw invalid("a synchronous store's transaction callback must not be async");
        } catch (error) {
          try {
            tx.finish();
          } catch {
            // the inner's own failure: `error` already is, or follows from, it
          }
          this.#nested = false;
          try {
            this.#driver.end(this.#txn, false);
          } catch {
            // the transaction is gone: its commit fails
          }
          throw error;
        }
        this.#nested = false;
        this.#driver.end(this.#txn, true);
        return value;
      }, false);
    }
    return this.#run('transaction', async () => {
      await this.#driver.nest(this.#txn);
      this.#nested = true;
      const tx = inner();
      let value;
      try {
        value = await fn(tx);
        await tx.finish();
      } catch (error) {
        await tx.finish().catch(() => {});
        return failed(error);
      }
      this.#nested = false;
      await this.#driver.end(this.#txn, true);
      return value;
    }, false);
  }
}

/**
 * A write's conditions: `ifVersion` (put, delete: a check on its one key), batch's `checks`
 * (`[{ key, version, table? }]`) and `id` (batch only).
 * @returns {{ checks?: Array<{ key: Uint8Array, table?: string, version: number }>, txId?: string }}
 */
export function writeConditions(operations, options, list, table) {
  const { ifVersion, checks, id } = checkOptions(options, 'options');
  const out = {};
  if (ifVersion !== undefined) {
    if (list !== undefined) throw invalid('options.ifVersion is for put() and delete(); a batch takes options.checks');
    const [op] = operations;
    out.checks = [{ key: encodeKey(op.key).bytes, table, version: checkVersion(ifVersion, 'options.ifVersion') }];
  }
  if (checks !== undefined) {
    if (list === undefined) throw invalid('options.checks is for batch(); put() and delete() take options.ifVersion');
    if (!Array.isArray(checks)) throw invalid(`options.checks must be an array, got ${describe(checks)}`);
    out.checks = checks.map((c, i) => {
      const { key, version, table: t } = checkOptions(c, `options.checks[${i}]`);
      if (t !== undefined && (typeof t !== 'string' || t === '')) throw invalid(`options.checks[${i}].table must be a table name`);
      if (version === undefined) throw invalid(`options.checks[${i}].version is required (null: the key must be absent)`);
      return { key: encodeKey(key, `options.checks[${i}].key`).bytes, table: t ?? table, version: checkVersion(version, `options.checks[${i}].version`) };
    });
  }
  if (id !== undefined) {
    if (list === undefined) throw invalid('options.id is for batch() and transaction()');
    out.txId = checkId(id, 'options.id');
  }
  return out;
}

/** A transaction's streamed value as a Blob (sent to the worker, which streams it into the log). */
export async function toBlob(value, param) {
  if (value instanceof Blob) return value;
  if (value instanceof ReadableStream) {
    // Read here (not through a Response) so that the source's own error comes out.
    const parts = [];
    const reader = value.getReader();
    for (;;) {
      const { done, value: chunk } = await reader.read();
      if (done) return new Blob(parts);
      const bytes = valueBytes(chunk, `${param} chunks`);
      if (bytes === undefined) {
        await reader.cancel().catch(() => {});
        throw invalid(`${param} chunks must be bytes or strings, got ${describe(chunk)}`);
      }
      parts.push(bytes.slice());
    }
  }
  if (value && typeof value[Symbol.asyncIterator] === 'function') {
    const parts = [];
    for await (const chunk of value) {
      const bytes = valueBytes(chunk, `${param} chunks`);
      if (bytes === undefined) throw invalid(`${param} chunks must be bytes or strings, got ${describe(chunk)}`);
      parts.push(bytes.slice());
    }
    return new Blob(parts);
  }
  throw invalid(`${param} must be bytes, a string, a Blob, a ReadableStream or an async iterable, got ${describe(value)}`);
}

/** Validates export()'s options: `{ signal, onProgress }`. */
export function checkExportOptions(options) {
  const { signal, onProgress } = checkOptions(options, 'options');
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw invalid(`options.signal must be an AbortSignal, got ${describe(signal)}`);
  }
  if (onProgress !== undefined && typeof onProgress !== 'function') {
    throw invalid(`options.onProgress must be a function, got ${describe(onProgress)}`);
  }
  return { signal, onProgress };
}

/**
 * The pieces of an import's `source` (a `.walnut` file): a ReadableStream or async iterable of
 * Uint8Array, one Uint8Array or ArrayBuffer, or a Blob (read a slice at a time, so a 2 GiB
 * file never sits in memory whole). Throws WalnutInvalidArgumentError naming `source` for
 * anything else, or for a piece that is not bytes.
 * @param {ReadableStream<Uint8Array> | AsyncIterable<Uint8Array> | Uint8Array | ArrayBuffer | Blob} source
 * @param {Array<(reason: unknown) => void>} [cancels] gets a function that cancels a stream
 *   source (a Node Readable: destroys it), ending a read that waits (engine.js untilStopped)
 * @returns {AsyncGenerator<Uint8Array>}
 */
export async function* importChunks(source, cancels = []) {
  if (source instanceof ArrayBuffer) source = new Uint8Array(source);
  if (source instanceof Uint8Array) {
    yield* pieces(source);
    return;
  }
  if (typeof Blob !== 'undefined' && source instanceof Blob) {
    for (let at = 0; at < source.size; at += IMPORT_SLICE) {
      yield new Uint8Array(await source.slice(at, Math.min(at + IMPORT_SLICE, source.size)).arrayBuffer());
    }
    return;
  }
  if (typeof ReadableStream !== 'undefined' && source instanceof ReadableStream) {
    const reader = source.getReader();
    cancels.push((reason) => reader.cancel(reason).catch(() => {}));
    let ended = false;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) {
          ended = true;
          return;
        }
        yield* pieces(checkedChunk(value));
      }
    } finally {
      // Given up early (an abort, a failed write, a chunk that is not bytes): the stream is
      // cancelled, as a for-await would, and released either way.
      if (!ended) reader.cancel().catch(() => {});
      reader.releaseLock();
    }
  }
  if (!source || typeof source[Symbol.asyncIterator] !== 'function') {
    throw invalid(`source must be a ReadableStream, an async iterable, bytes or a Blob, got ${describe(source)}`);
  }
  if (typeof source.destroy === 'function') {
    // A Node Readable: destroyed, unless it ended already (then its iterator is done, and an
    // 'error' event nobody listens to would end the process).
    cancels.push((reason) => {
      if (source.destroyed || source.readableEnded) return;
      source.once?.('error', () => {});
      source.destroy(reason);
    });
  }
  for await (const chunk of source) yield* pieces(checkedChunk(chunk));
}

function checkedChunk(chunk) {
  if (!(chunk instanceof Uint8Array)) throw invalid(`source chunks must be Uint8Array, got ${describe(chunk)}`);
  return chunk;
}

/** `bytes` as views of at most IMPORT_SLICE bytes (no copy). */
function* pieces(bytes) {
  for (let at = 0; at < bytes.length; at += IMPORT_SLICE) yield bytes.subarray(at, at + IMPORT_SLICE);
}

/** Bytes of a Blob read per piece of an import. */
const IMPORT_SLICE = 1 << 20;
