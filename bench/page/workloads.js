// The workloads, written once against the contenders' common shape (see contenders/*.js):
//
//   open(name) -> store with put(key, value), batch([[key, value]]), get(key) -> Uint8Array,
//   readLarge(key) -> bytes read, scan(prefix) -> keys listed, close()
//
// Each workload opens its own store, times only what its metrics name (performance.now() in
// the context that calls the contender's API), closes the store and returns the metrics by name.
// Storage is cleared by the page between runs.
import { MiB } from './plan.js';

const VALUE_BYTES = 128;
/** Keys of the small-value workloads: `k/0000042`, so that they sort like their numbers. */
const PREFIX = 'k/';
/** The preparatory fill of the read and open workloads goes in batches of this many values. */
const FILL_BATCH = 10_000;
/** Prefix scans per run; the metric is taken from their median. */
const SCANS = 10;

const now = () => performance.now();

/**
 * `count` distinct 128-byte values, each under its own key.
 * @returns {Array<[string, Uint8Array]>}
 */
function smallEntries(count) {
  const base = crypto.getRandomValues(new Uint8Array(VALUE_BYTES));
  return Array.from({ length: count }, (_, i) => {
    const value = base.slice();
    new DataView(value.buffer).setUint32(0, i);
    return [`${PREFIX}${String(i).padStart(7, '0')}`, value];
  });
}

/** @param {number[]} values */
function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/**
 * Throughput and latency percentiles (nearest rank) of one run.
 * @param {number[]} latencies ms, one per operation
 * @param {number} elapsed ms for the whole run
 */
function latencyMetrics(latencies, elapsed) {
  const sorted = [...latencies].sort((a, b) => a - b);
  const rank = (q) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
  return { ops: latencies.length / (elapsed / 1000), p50: rank(0.5), p99: rank(0.99) };
}

/** @param {number} bytes @param {number} ms */
const mibPerSecond = (bytes, ms) => bytes / MiB / (ms / 1000);

/** Resolves in the next task: lets the event loop run what is queued (timers, reads, messages). */
function nextTask() {
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = resolve;
    channel.port2.postMessage(null);
  });
}

/**
 * Stores entries issued at the same moment: one batch for contenders that batch, else one call
 * per entry, all in flight together.
 * @returns {Promise<number[]>} when each entry was acknowledged (performance.now())
 */
async function writeTogether(store, batches, entries) {
  if (batches) {
    await store.batch(entries);
    return entries.map(now);
  }
  return Promise.all(entries.map(([key, value]) => store.put(key, value).then(now)));
}

/** Opens a store and fills it with `count` small values (not timed). */
async function openFilled(contender, name, count) {
  const store = await contender.open(name);
  const entries = smallEntries(count);
  for (let i = 0; i < entries.length; i += FILL_BATCH) await store.batch(entries.slice(i, i + FILL_BATCH));
  return { store, entries };
}

/** Puts one large Blob, then reads it back whole. */
export async function large(contender, { name, file }) {
  const store = await contender.open(name);
  let started = now();
  await store.put('large', file);
  const put = mibPerSecond(file.size, now() - started);
  started = now();
  const read = await store.readLarge('large');
  const get = mibPerSecond(read, now() - started);
  await store.close();
  if (read !== file.size) throw new Error(`read back ${read} bytes of ${file.size}`);
  return { put, get };
}

/** Puts `count` slices of the large file (disk-backed Blobs too), issued together. */
export async function many(contender, { name, file, count, size, batches }) {
  const entries = Array.from({ length: count }, (_, i) => [`v${i}`, file.slice(i * size, (i + 1) * size)]);
  const store = await contender.open(name);
  const started = now();
  await writeTogether(store, batches, entries);
  const elapsed = now() - started;
  await store.close();
  return { put: mibPerSecond(count * size, elapsed) };
}

/** Small durable puts, each awaited before the next is issued. */
export async function seq(contender, { name, count }) {
  const entries = smallEntries(count);
  const store = await contender.open(name);
  const latencies = [];
  const started = now();
  for (const [key, value] of entries) {
    const issued = now();
    await store.put(key, value);
    latencies.push(now() - issued);
  }
  const elapsed = now() - started;
  await store.close();
  return latencyMetrics(latencies, elapsed);
}

/** Queue appends of 128 bytes, each awaited before the next (an outbox filled offline). */
export async function qseq(contender, { name, count }) {
  const [[, value]] = smallEntries(1);
  const store = await contender.open(name);
  const latencies = [];
  const started = now();
  let last = 0;
  for (let i = 0; i < count; i++) {
    const issued = now();
    const seq = await store.append(value);
    latencies.push(now() - issued);
    if (!(seq > last)) throw new Error(`append returned ${seq} after ${last}`);
    last = seq;
  }
  const elapsed = now() - started;
  await store.close();
  return latencyMetrics(latencies, elapsed);
}

/** Queue appends of 128 bytes all issued at once; each one's latency runs from the common start. */
export async function qconc(contender, { name, count }) {
  const [[, value]] = smallEntries(1);
  const store = await contender.open(name);
  const started = now();
  const acknowledged = await Promise.all(Array.from({ length: count }, () => store.append(value).then(() => now())));
  const elapsed = Math.max(...acknowledged) - started;
  await store.close();
  return latencyMetrics(
    acknowledged.map((at) => at - started),
    elapsed,
  );
}

/** Reads a queue of `count` entries from its first sequence number, in pages of 1,000. */
export async function qread(contender, { name, count }) {
  const [[, value]] = smallEntries(1);
  const store = await contender.open(name);
  let first;
  for (let i = 0; i < count; i += 1000) {
    const seqs = await Promise.all(Array.from({ length: Math.min(1000, count - i) }, () => store.append(value)));
    first ??= Math.min(...seqs);
  }
  const started = now();
  let read = 0;
  for (let from = first; read < count; from += 1000) {
    const n = await store.readFrom(from, 1000);
    if (n === 0) break;
    read += n;
  }
  const elapsed = now() - started;
  await store.close();
  if (read !== count) throw new Error(`read ${read} queue entries of ${count}`);
  return { entries: count / (elapsed / 1000) };
}

/**
 * Reads the change feed of `count` puts to a table from its start, in pages of 1,000 (the
 * peers: a change log they append to beside each write, read from a sequence number).
 */
export async function fread(contender, { name, count }) {
  const store = await contender.open(name);
  const entries = smallEntries(count);
  for (let i = 0; i < count; i += FILL_BATCH) await store.feedFill(entries.slice(i, i + FILL_BATCH));
  const started = now();
  let read = 0;
  let since = 0;
  while (read < count) {
    const { count: n, last } = await store.feedRead(since, 1000);
    if (n === 0) break;
    read += n;
    since = last;
  }
  const elapsed = now() - started;
  await store.close();
  if (read !== count) throw new Error(`read ${read} changes of ${count}`);
  return { entries: count / (elapsed / 1000) };
}

/** Small durable puts all issued at once; each one's latency runs from the common start. */
export async function concurrent(contender, { name, count, batches }) {
  const entries = smallEntries(count);
  const store = await contender.open(name);
  const started = now();
  const acknowledged = await writeTogether(store, batches, entries);
  const elapsed = Math.max(...acknowledged) - started;
  await store.close();
  return latencyMetrics(
    acknowledged.map((at) => at - started),
    elapsed,
  );
}

/** Gets of small values in random order, each awaited, the value's bytes in hand. */
export async function gets(contender, { name, count }) {
  const { store, entries } = await openFilled(contender, name, count);
  const keys = entries.map(([key]) => key);
  for (let i = keys.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [keys[i], keys[j]] = [keys[j], keys[i]];
  }
  const latencies = [];
  const started = now();
  for (const key of keys) {
    const issued = now();
    const value = await store.get(key);
    latencies.push(now() - issued);
    if (value?.length !== VALUE_BYTES) throw new Error(`get(${key}) returned ${value?.length} bytes`);
  }
  const elapsed = now() - started;
  await store.close();
  return latencyMetrics(latencies, elapsed);
}

/** Lists the keys under the small values' prefix, SCANS times. */
export async function scan(contender, { name, count }) {
  const { store } = await openFilled(contender, name, count);
  const times = [];
  for (let i = 0; i < SCANS; i++) {
    const started = now();
    const listed = await store.scan(PREFIX);
    times.push(now() - started);
    if (listed !== count) throw new Error(`the scan listed ${listed} keys of ${count}`);
  }
  await store.close();
  return { keys: count / (median(times) / 1000) };
}

/**
 * Small durable puts, one after another, for as long as a large Blob streams in. A small put's
 * latency counts from the moment the loop wants to issue it, one task turn before it does: a
 * large write that holds the thread (or the store) shows up in the small puts' latencies.
 */
export async function mixed(contender, { name, file }) {
  const store = await contender.open(name);
  const [[, value]] = smallEntries(1);
  let largeDone = false;
  const started = now();
  const largePut = store.put('large', file).then(() => {
    largeDone = true;
    return now() - started;
  });
  const latencies = [];
  while (!largeDone) {
    const wanted = now();
    await nextTask();
    await store.put(`${PREFIX}${latencies.length}`, value);
    latencies.push(now() - wanted);
  }
  const smallElapsed = now() - started;
  const largeElapsed = await largePut;
  await store.close();
  return { ...latencyMetrics(latencies, smallElapsed), large: mibPerSecond(file.size, largeElapsed) };
}

/** Fills a store for the `open` workload and closes it. */
export async function fill(contender, { name, count }) {
  const { store } = await openFilled(contender, name, count);
  await store.close();
  return {};
}

/** Time from open() to the first answered get, on a store made by fill(). */
export async function open(contender, { name, count }) {
  const key = `${PREFIX}${String(count - 1).padStart(7, '0')}`;
  await contender.prepare?.(); // before the clock: what an app does at start-up
  const started = now();
  const store = await contender.open(name);
  const value = await store.get(key);
  const ms = now() - started;
  await store.close();
  if (value?.length !== VALUE_BYTES) throw new Error(`get(${key}) after open returned ${value?.length} bytes`);
  return { ms };
}

// The memory workload comes in steps, so that the harness can sample memory around each.
// `state` is kept by the host between steps.

export async function memoryOpen(contender, { name }, state) {
  state.store = await contender.open(name);
  return {};
}

export async function memoryPut(contender, { file }, state) {
  await state.store.put('large', file);
  return {};
}

export async function memoryGet(contender, { file }, state) {
  const read = await state.store.readLarge('large');
  if (read !== file.size) throw new Error(`read back ${read} bytes of ${file.size}`);
  return {};
}

/** Streams the whole store out (walnut: db.export(); raw OPFS: its one file), keeping nothing. */
export async function memoryExport(contender, { file }, state) {
  const bytes = await state.store.exportAll();
  if (bytes < file.size) throw new Error(`exported ${bytes} bytes, less than the ${file.size} stored`);
  return {};
}

export async function memoryClose(contender, params, state) {
  await state.store.close();
  state.store = undefined;
  return {};
}
