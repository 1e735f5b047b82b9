/**
 * walnut's dedicated worker: owns one store's OPFS log through the wasm core and answers the
 * requests of walnut.js.
 *
 * Protocol. In: optionally `{ type: 'init', module? }` (preload: load the WebAssembly module
 * now), then `{ type: 'open', name, options, module? }` once (`module`: the compiled
 * WebAssembly.Module, else the worker fetches and compiles it), then `{ type: 'requests', requests }`.
 * Out: `{ type: 'opened', recovery, chunkSize }` or `{ type: 'open-failed', error }`, then
 * `{ results }` where each result is `{ id, value }`, `{ id, error: { name, message } }`,
 * `{ id, aborted: true }` or `{ id, progress }` (value bytes written so far).
 *
 * A lone put of small bytes, or a delete, runs at once; other writes (large bytes, Blobs,
 * streams, batches) run as tasks that write one chunk at a time and give way to other requests
 * between chunks. Writes to the same key apply in request order. Strict commits are deferred
 * and made durable together: one sync() per group, run in a macrotask once the queued requests
 * are handled, then all of the group's answers go out.
 */
import init, { WalnutStore } from './walnut_core.js';

/** A write task gives way to other requests after running this long, ms. */
const SLICE_MS = 2;
/** get() folds chunks into its Blob every this many bytes, so no single giant Blob is built. */
const FOLD_BYTES = 16 * 1024 * 1024;

/** Thrown inside a write task that was cancelled. */
const ABORTED = Symbol('aborted');

/** @type {WalnutStore} */
let store;
/** @type {number} bytes per chunk, from the store */
let chunkSize;
/** Set when the wasm instance trapped: its state is unknown, so nothing else may run in it. */
let crashed = null;

/** Cancellable write tasks by request id. */
const tasks = new Map();
/** Everything still running asynchronously (writes and get()s), answered or not: close() waits for them. */
const inflight = new Set();
/** For each key with a write task, a promise that settles when that write has been applied and answered. */
const keyTails = new Map();
/** Readers opened for getStream(), by reader id. */
const readers = new Set();

/** Strict writes applied but not yet durable: answered after the next group sync. */
let durableWaiters = [];
let groupCommitScheduled = false;
const groupCommitChannel = new MessageChannel();
groupCommitChannel.port1.onmessage = commitGroup;

const yieldChannel = new MessageChannel();
const yieldResumers = [];
yieldChannel.port1.onmessage = () => yieldResumers.shift()();
let sliceStart = performance.now();

/** Results waiting for the end of this microtask, sent as one message. */
let outbox = [];
let outboxTransfer = [];

/** Decodes key bytes to a string used as a Map key (windows-1252 maps bytes to chars one-to-one). */
const keyIds = new TextDecoder('latin1');

self.onmessage = ({ data }) => {
  if (data.type === 'init') load(data.module).catch(() => {}); // open() reports the failure
  else if (data.type === 'open') openStore(data.name, data.options, data.module);
  else for (const request of data.requests) dispatch(request);
};

/** @type {Promise<unknown> | undefined} */
let loaded;

/**
 * Instantiates walnut's WebAssembly module, once.
 * @param {WebAssembly.Module} [module] compiled by the page; else fetched and compiled here
 */
function load(module) {
  loaded ??= init(module ? { module_or_path: module } : undefined);
  return loaded;
}

/**
 * @param {string} name
 * @param {object} options
 * @param {WebAssembly.Module} [module] compiled by the page
 */
async function openStore(name, options, module) {
  try {
    try {
      await load(module);
    } catch (error) {
      throw named('WalnutUnsupportedError', `could not load walnut's WebAssembly module: ${describeError(error)}`);
    }
    store = await WalnutStore.open(name, options);
    chunkSize = store.chunkSize;
    self.postMessage({ type: 'opened', recovery: store.recovery(), chunkSize });
  } catch (error) {
    self.postMessage({ type: 'open-failed', error: serializeError(error) });
  }
}

/** @param {{ id: number, op: string } & Record<string, any>} request */
function dispatch(request) {
  const { id } = request;
  try {
    switch (request.op) {
      case 'cancel':
        cancel(request.target);
        return;
      case 'closeReader':
        closeReader(request.reader);
        return;
      case 'close':
        answer(id, closeStore());
        return;
    }
    if (crashed) throw crashedError();
    switch (request.op) {
      case 'write':
        write(request);
        return;
      case 'get':
        getValue(id, request.key);
        return;
      case 'openReader': {
        const opened = store.openReader(request.key);
        if (opened) readers.add(opened.id);
        reply(id, opened && { reader: opened.id, size: opened.size });
        return;
      }
      case 'read':
        readChunk(id, request.reader);
        return;
      case 'has':
        reply(id, store.has(request.key));
        return;
      case 'keys': {
        const packed = store.keys(request.options);
        reply(id, packed, [packed.buffer]);
        return;
      }
      case 'stats':
        reply(id, store.stats());
        return;
      case 'compact':
        keepInFlight(answer(id, compact()));
        return;
      case 'checkpoint':
        reply(id, store.checkpoint());
        return;
      default:
        throw named('WalnutInvalidArgumentError', `unknown request ${String(request.op)}`);
    }
  } catch (error) {
    fail(id, error);
  }
}

/**
 * Applies a put, delete or batch: a lone put of small bytes or a lone delete at once (unless an
 * earlier write to the same key is still running), everything else as a task.
 * @param {{ id: number, ops: Array<{ type: 'put' | 'delete', key: Uint8Array, isString?: boolean, value?: Uint8Array | Blob | ReadableStream }>, strict: boolean, progress: boolean }} request
 */
function write(request) {
  const [first] = request.ops;
  const single =
    request.ops.length === 1 &&
    (first.type === 'delete' || (first.value instanceof Uint8Array && first.value.length <= chunkSize));
  const keys = single && keyTails.size === 0 ? [] : request.ops.map((op) => keyIds.decode(op.key));
  const earlier = keys.map((key) => keyTails.get(key)).filter(Boolean);
  if (single && earlier.length === 0) {
    acknowledge(request, applySingle(request));
    return;
  }
  const task = { aborted: false };
  tasks.set(request.id, task);
  const applied = (async () => {
    await Promise.all(earlier);
    if (task.aborted) throw ABORTED;
    return single ? applySingle(request) : await writeTransaction(request, task);
  })();
  const done = keepInFlight(
    applied.then(
      (result) => acknowledge(request, result),
      (error) => (error === ABORTED ? send({ id: request.id, aborted: true }) : fail(request.id, error)),
    ),
  );
  for (const key of keys) keyTails.set(key, done);
  done.then(() => {
    tasks.delete(request.id);
    for (const key of keys) if (keyTails.get(key) === done) keyTails.delete(key);
  });
}

/**
 * Writes a lone small put or a delete with the single-call methods, synchronously.
 * @returns {{ value: boolean | undefined, ticket: number }} for a delete, whether the key
 *   existed; the commit's ticket (0 when nothing was written)
 */
function applySingle({ id, ops: [op], strict, progress }) {
  if (op.type === 'delete') {
    const ticket = store.delete(op.key, strict);
    return { value: ticket > 0, ticket };
  }
  const ticket = store.put(op.key, op.isString, op.value, strict);
  if (progress) send({ id, progress: op.value.length });
  return { value: undefined, ticket };
}

/**
 * Writes a transaction (a large put, or a batch) whose values are streamed in chunks of exactly
 * chunkSize bytes (the last one of each value shorter), giving way to other requests between
 * chunks.
 * @param {{ id: number, ops: Array<any>, strict: boolean, progress: boolean }} request
 * @param {{ aborted: boolean }} task
 */
async function writeTransaction({ id, ops, strict, progress }, task) {
  const txn = store.begin();
  let written = 0;
  let reported = -1;
  const report = () => {
    if (progress && reported !== written) send({ id, progress: (reported = written) });
  };
  const writeChunk = async (chunk) => {
    store.txnChunk(txn, chunk);
    written += chunk.length;
    report();
    if (task.aborted) throw ABORTED;
    await giveWay();
  };
  try {
    for (const op of ops) {
      if (op.type === 'delete') {
        store.txnDelete(txn, op.key);
      } else {
        store.txnPut(txn, op.key, op.isString);
        await writeValue(op.value, task, writeChunk);
      }
    }
    if (task.aborted) throw ABORTED;
    report(); // values without any chunk (empty ones) get their one report here
    return { value: undefined, ticket: store.commit(txn, strict) };
  } catch (error) {
    abortQuietly(txn);
    throw error;
  }
}

/**
 * Cuts a value into chunks of chunkSize bytes (the last one shorter) and hands each to
 * `writeChunk`, reading Blobs and streams only as fast as the chunks are written.
 * @param {Uint8Array | Blob | ReadableStream} value
 * @param {{ aborted: boolean, reader?: ReadableStreamDefaultReader }} task gets the reader, so
 *   that cancel() can stop a read that waits on a slow source
 * @param {(chunk: Uint8Array) => Promise<void>} writeChunk
 */
async function writeValue(value, task, writeChunk) {
  if (value instanceof Uint8Array) {
    for (let offset = 0; offset < value.length; offset += chunkSize) {
      await writeChunk(value.subarray(offset, offset + chunkSize));
    }
    return;
  }
  const reader = (value instanceof Blob ? value.stream() : value).getReader();
  task.reader = reader;
  const staging = new Uint8Array(chunkSize);
  let filled = 0;
  try {
    for (;;) {
      const { done, value: part } = await reader.read().catch((error) => {
        throw named('WalnutIoError', `reading the value failed: ${describeError(error)}`);
      });
      if (done) break;
      const bytes = asBytes(part);
      let offset = 0;
      if (filled > 0) {
        offset = Math.min(chunkSize - filled, bytes.length);
        staging.set(bytes.subarray(0, offset), filled);
        filled += offset;
        if (filled < chunkSize) continue;
        await writeChunk(staging); // copied into wasm memory: staging can be refilled
        filled = 0;
      }
      for (; bytes.length - offset >= chunkSize; offset += chunkSize) {
        await writeChunk(bytes.subarray(offset, offset + chunkSize));
      }
      staging.set(bytes.subarray(offset), 0);
      filled = bytes.length - offset;
    }
    if (filled > 0) await writeChunk(staging.subarray(0, filled));
  } catch (error) {
    reader.cancel().catch(noop); // stop the source: nothing more will be read from it
    throw error;
  }
}

/**
 * @param {unknown} part a chunk read from a value's stream
 * @returns {Uint8Array}
 */
function asBytes(part) {
  if (part instanceof Uint8Array) return part;
  if (ArrayBuffer.isView(part)) return new Uint8Array(part.buffer, part.byteOffset, part.byteLength);
  if (part instanceof ArrayBuffer) return new Uint8Array(part);
  throw named('WalnutInvalidArgumentError', `value: the stream yielded a ${describe(part)}, not bytes`);
}

/**
 * Answers get(): a value of up to one chunk as bytes (the page makes the Blob: cheaper than
 * making it here and cloning it over), a larger one as a Blob built here, folding the chunks in
 * every FOLD_BYTES.
 * @param {number} id
 * @param {Uint8Array} key
 */
function getValue(id, key) {
  const opened = store.openReader(key);
  if (!opened) {
    reply(id, undefined);
    return;
  }
  if (opened.size <= chunkSize) {
    // One chunk, or several when the value was written with a smaller chunkSize.
    const bytes = new Uint8Array(opened.size);
    try {
      for (let offset = 0, chunk; (chunk = store.readNext(opened.id)) !== undefined; ) {
        bytes.set(chunk, offset);
        offset += chunk.length;
      }
    } finally {
      store.closeReader(opened.id);
    }
    reply(id, bytes, [bytes.buffer]);
    return;
  }
  const reading = (async () => {
    try {
      let blob = new Blob([]);
      let parts = [];
      let partBytes = 0;
      for (let chunk; (chunk = store.readNext(opened.id)) !== undefined; ) {
        parts.push(chunk);
        partBytes += chunk.length;
        if (partBytes >= FOLD_BYTES) {
          blob = new Blob([blob, ...parts]);
          parts = [];
          partBytes = 0;
        }
        await giveWay();
      }
      return new Blob([blob, ...parts]);
    } finally {
      if (!crashed) store.closeReader(opened.id);
    }
  })();
  keepInFlight(answer(id, reading));
}

/**
 * Answers one pull of a getStream() stream; closes the reader at the end or on error.
 * @param {number} id
 * @param {number} reader
 */
function readChunk(id, reader) {
  if (!readers.has(reader)) throw named('WalnutInvalidArgumentError', `reader ${reader} is not open`);
  let chunk;
  try {
    chunk = store.readNext(reader);
  } catch (error) {
    closeReader(reader);
    throw error;
  }
  if (chunk === undefined) closeReader(reader);
  reply(id, chunk, chunk ? [chunk.buffer] : []);
}

/** @param {number} reader */
function closeReader(reader) {
  if (readers.delete(reader) && !crashed) store.closeReader(reader);
}

/** @param {number} target the id of the write request to cancel */
function cancel(target) {
  const task = tasks.get(target);
  if (!task) return; // finished already: its result stands
  task.aborted = true;
  // A pending read then ends as if the value ended; the task sees `aborted` before committing.
  task.reader?.cancel().catch(noop);
}

/**
 * Finishes the requests made before close (their results go out first), syncs and releases the
 * file. After a trap the instance is left alone: stopping the worker releases the file.
 */
async function closeStore() {
  await Promise.all(inflight);
  commitGroup();
  // The closing checkpoint may need a file from the pool; let it refill first. A failed
  // refill only skips that checkpoint (the next open replays the log instead).
  if (!crashed) await store.refillPool().catch(noop);
  if (!crashed) store.close();
  readers.clear();
}

/**
 * Answers a write: at once when relaxed, after the committer's flush when strict.
 * @param {{ id: number, strict: boolean }} request
 * @param {{ value: unknown, ticket: number }} applied
 */
function acknowledge({ id, strict }, { value, ticket }) {
  if (!strict) {
    reply(id, value);
    return;
  }
  durableWaiters.push({ id, value, ticket });
  if (!groupCommitScheduled) {
    groupCommitScheduled = true;
    groupCommitChannel.port2.postMessage(null);
  }
}

/**
 * Group commit: the committer flushes once for every strict write applied so far, then each
 * write is answered with its own commit's outcome (a flush that failed earlier, asked for by a
 * read, a relaxed write, a checkpoint or a compaction step, fails exactly the commits it
 * carried, and is reported here to them). A write that wrote nothing (a delete of an absent
 * key, ticket 0) is answered with the group.
 */
function commitGroup() {
  groupCommitScheduled = false;
  const group = durableWaiters;
  durableWaiters = [];
  if (group.length === 0) return;
  let outcomes;
  try {
    if (crashed) throw crashedError();
    const tickets = group.filter((w) => w.ticket > 0);
    const failures = store.commitGroup(Float64Array.from(tickets, (w) => w.ticket));
    outcomes = new Map(tickets.map((w, i) => [w, failures[i]]));
  } catch (error) {
    for (const { id } of group) fail(id, error);
    return;
  }
  for (const waiter of group) {
    const failure = outcomes.get(waiter);
    if (failure) fail(waiter.id, failure);
    else reply(waiter.id, waiter.value);
  }
}

/** Lets other requests run when this task has had the thread for SLICE_MS. */
async function giveWay() {
  if (performance.now() - sliceStart < SLICE_MS) return;
  await new Promise((resume) => {
    yieldResumers.push(resume);
    yieldChannel.port2.postMessage(null);
  });
  sliceStart = performance.now();
}

/**
 * Runs one compaction round step by step, handing the worker back to other requests after
 * every step (one chunk copied at most), so small puts are served while it runs.
 * @returns {Promise<number>} rounds finished (0 when there was nothing worth compacting)
 */
async function compact() {
  for (;;) {
    if (crashed) throw crashedError();
    const step = store.compactStep();
    if (step !== 'progress') return step === 'done' ? 1 : 0;
    sliceStart = -Infinity; // give way after every step, not only after a full slice
    await giveWay();
  }
}

/** @param {number} txn */
function abortQuietly(txn) {
  if (crashed) return;
  try {
    store.abort(txn);
  } catch (error) {
    // The error that made us abort is the one to report; a store that cannot write ABORT is
    // poisoned and recovery discards the transaction anyway. A trap still counts.
    if (error instanceof WebAssembly.RuntimeError) crashed ??= error;
  }
}

/**
 * Answers a request from a promise.
 * @param {number} id
 * @param {Promise<unknown>} promise
 * @returns {Promise<void>} settles (never rejects) once the answer is queued
 */
function answer(id, promise) {
  return promise.then(
    (value) => reply(id, value),
    (error) => fail(id, error),
  );
}

/**
 * Makes close() wait for `work`, which must never reject.
 * @param {Promise<void>} work
 */
function keepInFlight(work) {
  inflight.add(work);
  work.then(() => inflight.delete(work));
  return work;
}

/**
 * @param {number} id
 * @param {unknown} value
 * @param {Transferable[]} [transfer]
 */
function reply(id, value, transfer = []) {
  send({ id, value }, transfer);
}

/**
 * @param {number} id
 * @param {unknown} error
 */
function fail(id, error) {
  if (error instanceof WebAssembly.RuntimeError) crashed ??= error;
  send({ id, error: serializeError(error) });
}

/** Queues a result; results queued in one microtask go out as one message. */
function send(result, transfer = []) {
  if (outbox.length === 0) queueMicrotask(flushOutbox);
  outbox.push(result);
  outboxTransfer.push(...transfer);
}

function flushOutbox() {
  const results = outbox;
  const transfer = outboxTransfer;
  outbox = [];
  outboxTransfer = [];
  self.postMessage({ results }, transfer);
}

/**
 * Turns anything thrown into `{ name, message }` with one of walnut's stable names.
 * @param {unknown} error
 */
function serializeError(error) {
  if (error instanceof WebAssembly.RuntimeError) {
    return serializeError(crashedError(error));
  }
  if (error instanceof Error && /^Walnut[A-Za-z]*Error$/.test(error.name)) {
    return { name: error.name, message: error.message };
  }
  return { name: 'WalnutIoError', message: describeError(error) };
}

/** The error every call gets once the wasm instance has trapped. */
function crashedError(trap = crashed) {
  return named(
    'WalnutPoisonedError',
    `the store's WebAssembly instance crashed (${describeError(trap)}); close it and open it again`,
  );
}

/**
 * @param {string} name
 * @param {string} message
 */
function named(name, message) {
  const error = new Error(message);
  error.name = name;
  return error;
}

/** @param {unknown} error */
function describeError(error) {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

/** @param {unknown} value */
function describe(value) {
  if (value === null) return 'null';
  if (typeof value !== 'object') return typeof value;
  return value.constructor?.name ?? 'object';
}

function noop() {}
