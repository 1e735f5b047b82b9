/**
 * walnut's dedicated worker: owns one store's OPFS log through the wasm core and answers the
 * requests of walnut.js.
 *
 * Protocol. In: optionally `{ type: 'init', module? }` (preload: load the WebAssembly module
 * now), then `{ type: 'open', name, options, module? }` once (`module`: the compiled
 * WebAssembly.Module, else the worker fetches and compiles it), then `{ type: 'requests', requests }`.
 * Out: `{ type: 'opened', recovery, chunkSize }` or `{ type: 'open-failed', error }`, then
 * `{ results }` where each result is `{ id, value }`, `{ id, error: { name, message } }`,
 * `{ id, aborted: true }` or `{ id, progress }` (value bytes written so far); and
 * `{ type: 'unreadable', message }` when message number `message` (counted from 0, every message
 * this worker got) could not be deserialized (a `messageerror`): the page fails its requests.
 *
 * A lone put of small bytes, or a delete, runs at once; other writes (large bytes, Blobs,
 * streams, batches) run as tasks that write one chunk at a time and give way to other requests
 * between chunks. Writes to the same key apply in request order. Strict commits are deferred
 * and made durable together: one sync() per group, run in a macrotask once the queued requests
 * are handled, then all of the group's answers go out. close() waits for the writes whose data
 * is all in hand and aborts those still reading a stream (see closeStore).
 */
import init, { WalnutStore } from './walnut_core.js';

/** A write task gives way to other requests after running this long, ms. */
const SLICE_MS = 2;
/** get() folds chunks into its Blob every this many bytes, so no single giant Blob is built. */
const FOLD_BYTES = 16 * 1024 * 1024;

/** Thrown inside a write task that was cancelled. */
const ABORTED = Symbol('aborted');
/**
 * Bytes of staging buffers (where Blob and stream values are gathered into chunks) all puts may
 * hold at once: each holds one chunk, a Blob smaller than a chunk only its size, so however many
 * run together their memory stays bounded; past it they wait their turn. A chunkSize above it
 * lets one value stage at a time.
 */
const STAGING_BYTES = 128 * 1024 * 1024;

/** @type {WalnutStore} */
let store;
/** @type {number} bytes per chunk, from the store */
let chunkSize;
/** Set when the wasm instance trapped: its state is unknown, so nothing else may run in it. */
let crashed = null;
/** Set once close() is under way: writes whose stream has not ended are aborted. */
let closing = false;
/** Messages received so far, readable or not: numbers a message that could not be read. */
let received = 0;

/** Cancellable write tasks by request id. */
const tasks = new Map();
/** Everything still running asynchronously (writes and get()s), answered or not: close() waits for them. */
const inflight = new Set();
/** For each key with a write task, a promise that settles once that write and every earlier one to the key are applied and answered. */
const keyTails = new Map();
/** Readers opened for getStream(), by reader id. */
const readers = new Set();
/** Bytes of staging buffers reserved (see STAGING_BYTES), and the puts waiting for some. */
let stagingInUse = 0;
/** @type {Array<{ bytes: number, granted: boolean, resume: () => void }>} */
const stagingWaiters = [];

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
  received++;
  if (data.type === 'init') load(data.module).catch(() => {}); // open() reports the failure
  else if (data.type === 'open') openStore(data.name, data.options, data.module);
  else for (const request of data.requests) dispatch(request);
};

// A message that cannot be deserialized never reaches onmessage: its requests would wait
// forever. Its content is lost, but not its place in the order: the page knows which requests
// (or which open) it carried, and fails them.
self.onmessageerror = () => {
  self.postMessage({ type: 'unreadable', message: received++ });
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
    store = guarded(await WalnutStore.open(name, options));
    chunkSize = store.chunkSize;
    self.postMessage({ type: 'opened', recovery: store.recovery(), chunkSize });
  } catch (error) {
    self.postMessage({ type: 'open-failed', error: serializeError(error) });
  }
}

/**
 * Wraps the core's store so that nothing calls into a crashed instance: once a call trapped
 * (WebAssembly.RuntimeError), every later call, from a task already under way too, throws the
 * crash's WalnutPoisonedError instead of reaching wasm (where wasm-bindgen would answer
 * "recursive use of an object detected": the trapped call never released the object).
 * @param {WalnutStore} core
 * @returns {WalnutStore}
 */
function guarded(core) {
  /** One wrapper per method, made once: the store is called on every request. */
  const wrappers = new Map();
  const wrap = (method) => (...args) => {
    if (crashed) throw crashedError();
    try {
      return core[method](...args);
    } catch (error) {
      if (error instanceof WebAssembly.RuntimeError) crashed ??= error;
      throw error;
    }
  };
  return new Proxy(core, {
    get(target, property) {
      const value = Reflect.get(target, property, target);
      if (typeof value !== 'function') return value; // chunkSize
      if (!wrappers.has(property)) wrappers.set(property, wrap(property));
      return wrappers.get(property);
    },
  });
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
    if (closing) throw named('WalnutClosedError', 'the store is closing');
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
    if (request.op === 'write') cancelStreams(request.ops);
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
  const task = newTask(request.ops);
  tasks.set(request.id, task);
  const applied = (async () => {
    await unlessStopped(task, Promise.all(earlier));
    return single ? applySingle(request) : await writeTransaction(request, task);
  })();
  const done = keepInFlight(
    applied.then(
      (result) => acknowledge(request, result),
      (error) => {
        cancelStreams(request.ops); // those it never read to the end
        if (error === ABORTED) send({ id: request.id, aborted: true });
        else fail(request.id, error);
      },
    ),
  );
  // A task stopped while queued answers at once; writes after it must still wait for the
  // writes before it, so the key's tail is both.
  const tail = earlier.length === 0 ? done : Promise.all([done, ...earlier]);
  for (const key of keys) keyTails.set(key, tail);
  done.then(() => tasks.delete(request.id));
  tail.then(() => {
    for (const key of keys) if (keyTails.get(key) === tail) keyTails.delete(key);
  });
}

/**
 * A write task's state, shared with cancel() and close(), which stop it.
 * @param {Array<{ value?: unknown }>} ops
 * @returns {{ stop: unknown, stopped: Promise<void>, onStop: () => void, unread: number, reader?: ReadableStreamDefaultReader }}
 *   `stop`: what the task throws once stopped (ABORTED, or close()'s WalnutClosedError), null
 *   while it runs; `stopped` settles then; `unread`: its stream values not yet read to the end
 */
function newTask(ops) {
  const task = { stop: null, unread: ops.filter((op) => op.value instanceof ReadableStream).length };
  task.stopped = new Promise((resolve) => (task.onStop = resolve));
  return task;
}

/**
 * Stops a write task: it throws `reason` at its next step; a read waiting on a slow source,
 * a wait behind earlier writes or for staging memory ends now.
 * @param {{ stop: unknown, onStop: () => void, reader?: ReadableStreamDefaultReader }} task
 * @param {unknown} reason ABORTED or an Error
 */
function stopTask(task, reason) {
  if (task.stop) return;
  task.stop = reason;
  task.onStop();
  task.reader?.cancel().catch(noop);
}

/** @param {{ stop: unknown }} task @throws its stop reason once it was stopped */
function throwIfStopped(task) {
  if (task.stop) throw task.stop;
}

/**
 * Waits for `promise`, unless the task is stopped first.
 * @param {{ stop: unknown, stopped: Promise<void> }} task
 * @param {Promise<unknown>} promise
 */
async function unlessStopped(task, promise) {
  await Promise.race([promise, task.stopped]);
  throwIfStopped(task);
}

/**
 * Cancels the streams among a write's values that no reader holds (never read), so that their
 * source stops (a fetch body releases its connection). A stream being read is cancelled through
 * its reader by writeValue; one read to its end is closed already.
 * @param {Array<{ value?: unknown }>} ops
 */
function cancelStreams(ops) {
  for (const { value } of ops) {
    if (value instanceof ReadableStream && !value.locked) value.cancel().catch(noop);
  }
}

/**
 * Writes a lone small put or a delete with the single-call methods, synchronously.
 * @returns {{ value: boolean | undefined, ticket: number }} for a delete, whether the key
 *   existed; the commit's ticket (0 when nothing was written)
 */
function applySingle({ id, ops: [op], strict, progress }) {
  if (op.type === 'delete') {
    const { existed, ticket } = store.delete(op.key, strict);
    return { value: existed, ticket };
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
 * @param {ReturnType<typeof newTask>} task
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
    throwIfStopped(task);
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
    throwIfStopped(task);
    report(); // values without any chunk (empty ones) get their one report here
    return { value: undefined, ticket: store.commit(txn, strict) };
  } catch (error) {
    abortQuietly(txn);
    throw error;
  }
}

/**
 * Cuts a value into chunks of chunkSize bytes (the last one shorter) and hands each to
 * `writeChunk`, reading Blobs and streams only as fast as the chunks are written, through a
 * staging buffer reserved from the shared budget (STAGING_BYTES).
 * @param {Uint8Array | Blob | ReadableStream} value
 * @param {ReturnType<typeof newTask>} task gets the reader, so that cancel() and close() can
 *   stop a read that waits on a slow source
 * @param {(chunk: Uint8Array) => Promise<void>} writeChunk
 */
async function writeValue(value, task, writeChunk) {
  if (value instanceof Uint8Array) {
    for (let offset = 0; offset < value.length; offset += chunkSize) {
      await writeChunk(value.subarray(offset, offset + chunkSize));
    }
    return;
  }
  // A Blob's size is known: a small one stages only its own bytes.
  const bytes = value instanceof Blob ? Math.min(value.size, chunkSize) : chunkSize;
  await reserveStaging(bytes, task);
  try {
    throwIfStopped(task);
    const reader = (value instanceof Blob ? value.stream() : value).getReader();
    task.reader = reader;
    // Once a stream has ended, its data is all in hand: close() lets the write finish.
    const ended = value instanceof ReadableStream ? () => task.unread-- : noop;
    try {
      await writeChunks(reader, allocateStaging(bytes), task, writeChunk, ended);
    } catch (error) {
      reader.cancel().catch(noop); // stop the source: nothing more will be read from it
      throw error;
    }
  } finally {
    releaseStaging(bytes);
  }
}

/**
 * Reads `reader` to its end, writing every full chunk (straight from the parts read when they
 * hold one, else gathered in `staging`) and the last, shorter one.
 * @param {ReadableStreamDefaultReader} reader
 * @param {Uint8Array} staging at most chunkSize bytes; a value smaller than a chunk fits in it
 * @param {{ stop: unknown }} task
 * @param {(chunk: Uint8Array) => Promise<void>} writeChunk
 * @param {() => void} ended called when the reader reports the end, before the last chunk
 */
async function writeChunks(reader, staging, task, writeChunk, ended) {
  let filled = 0;
  for (;;) {
    const { done, value: part } = await reader.read().catch((error) => {
      throw named('WalnutIoError', `reading the value failed: ${describeError(error)}`);
    });
    throwIfStopped(task); // a stopped task's read ends early: what it read is not the value
    if (done) {
      ended();
      break;
    }
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
}

/**
 * Reserves `bytes` of the staging budget, waiting (unless the task is stopped) while other
 * puts hold it. Any waiter that fits goes first, so a small Blob never waits behind a large
 * stream for memory it does not need.
 * @param {number} bytes
 * @param {ReturnType<typeof newTask>} task
 */
async function reserveStaging(bytes, task) {
  if (stagingInUse + bytes <= stagingLimit()) {
    stagingInUse += bytes;
    return;
  }
  const waiter = { bytes, granted: false, resume: noop };
  const granted = new Promise((resolve) => (waiter.resume = resolve));
  stagingWaiters.push(waiter);
  await Promise.race([granted, task.stopped]);
  if (waiter.granted) return; // a stopped task still releases it (writeValue's finally)
  stagingWaiters.splice(stagingWaiters.indexOf(waiter), 1);
  throwIfStopped(task);
}

/** @param {number} bytes returned to the staging budget; the waiters that now fit go on */
function releaseStaging(bytes) {
  stagingInUse -= bytes;
  for (let i = 0; i < stagingWaiters.length; ) {
    const waiter = stagingWaiters[i];
    if (stagingInUse + waiter.bytes > stagingLimit()) {
      i++;
      continue;
    }
    stagingInUse += waiter.bytes;
    waiter.granted = true;
    stagingWaiters.splice(i, 1);
    waiter.resume();
  }
}

/** The staging budget, bytes: STAGING_BYTES, or one chunk if that is larger. */
function stagingLimit() {
  return Math.max(STAGING_BYTES, chunkSize);
}

/**
 * @param {number} bytes
 * @returns {Uint8Array}
 * @throws {Error} WalnutIoError naming the size when the memory cannot be had
 */
function allocateStaging(bytes) {
  try {
    return new Uint8Array(bytes);
  } catch (error) {
    throw named(
      'WalnutIoError',
      `could not allocate ${bytes} bytes of memory to stage the value (${describeError(error)}); nothing was written`,
    );
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
  // A pending read then ends; the task sees the stop before committing.
  stopTask(task, ABORTED);
}

/**
 * Finishes the requests made before close (their results go out first), syncs and releases the
 * file. What it waits for: every write whose data is all in hand (bytes, Blobs, streams read to
 * their end), reads and compaction. A write with a stream not yet read to its end is aborted
 * instead (ABORT is written, the old value kept) and rejects with WalnutClosedError: its source
 * may never end, and close() must not wait on it. After a trap the instance is left alone:
 * stopping the worker releases the file, and close() rejects, as the store was not closed cleanly.
 */
async function closeStore() {
  closing = true;
  for (const task of tasks.values()) {
    if (task.unread > 0) {
      stopTask(task, named('WalnutClosedError', "the store was closed before the value's stream ended; the old value is kept"));
    }
  }
  await Promise.all(inflight);
  commitGroup();
  try {
    // The closing checkpoint may need a file from the pool; let it refill first. A failed
    // refill only skips that checkpoint (the next open replays the log instead).
    if (!crashed) await store.refillPool().catch(noop);
    store.close();
  } catch (error) {
    if (!crashed) throw error;
    throw named(
      'WalnutPoisonedError',
      `the store was not closed cleanly: its WebAssembly instance crashed (${describeError(crashed)}); ` +
        'the next open recovers every acknowledged write',
    );
  } finally {
    readers.clear();
  }
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
