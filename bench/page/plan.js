// What the benchmark runs: the contenders, the scales and the workloads with their metrics.
// Imported by the page, by the contenders' workers and by the Node harness.

export const MiB = 1024 * 1024;

/**
 * `host`: where the contender's API is called: `worker` = a dedicated worker of the bench page
 * (the workload loop runs inside it, so no postMessage is timed), `page` = the page itself
 * (walnut's public API lives there and runs its own worker, so its postMessage hop is timed).
 * `batches`: writes issued together go out as one batch (one IndexedDB transaction; for raw
 * OPFS, all writes then one flush) instead of one call each.
 */
export const CONTENDERS = [
  { id: 'raw', label: 'raw OPFS', module: './contenders/raw-opfs.js', host: 'worker', batches: true },
  { id: 'walnut', label: 'walnut', module: './contenders/walnut.js', host: 'page', batches: false },
  // open only: walnut's open() after preload() readied its worker (the app called it at start-up)
  { id: 'walnut-pre', label: 'walnut after preload()', module: './contenders/walnut-preloaded.js', host: 'page', batches: false },
  // walnut-kv/sync: the core called directly in the worker (no extra worker, no message per call)
  { id: 'walnut-sync', label: 'walnut sync store (worker)', module: './contenders/walnut-sync.js', host: 'worker', batches: false },
  { id: 'idb-keyval', label: 'idb-keyval', module: './contenders/idb.js', host: 'worker', batches: false },
  { id: 'idb-batch', label: 'IndexedDB, 1 tx per batch', module: './contenders/idb.js', host: 'worker', batches: true },
  { id: 'sqlite', label: 'SQLite opfs-sahpool', module: './contenders/sqlite.js', host: 'worker', batches: false },
  // The floor of a call from the page: a Map in a worker, one postMessage each way (not durable)
  { id: 'floor', label: 'postMessage floor (a Map in a worker)', module: './contenders/floor.js', host: 'page', batches: true },
];

/** The peers walnut is compared with (the "best peer" column). */
export const PEERS = ['idb-keyval', 'idb-batch', 'sqlite'];

/**
 * Sizes and repetitions. `rounds`: how often each workload runs per contender (interleaved);
 * `large`: the one big Blob (also the one streamed during `mixed`); `many`: [count, bytes];
 * `small`: how many 128-byte values the small-value workloads write, read and scan;
 * `open`: the store sizes (keys) whose opening is timed; `memory`: the Blob of the memory run.
 */
export const SCALES = {
  full: { rounds: 5, large: 256 * MiB, many: [16, 16 * MiB], small: 10_000, open: [10_000, 100_000], memory: 1024 * MiB },
  quick: { rounds: 3, large: 64 * MiB, many: [16, 4 * MiB], small: 2_000, open: [2_000, 20_000], memory: 256 * MiB },
  tiny: { rounds: 1, large: 4 * MiB, many: [4, MiB], small: 100, open: [100, 1_000], memory: 8 * MiB },
};

const ALL = CONTENDERS.map((c) => c.id).filter((id) => id !== 'walnut-pre' && id !== 'floor');
const PER_CALL = ALL.filter((id) => id !== 'idb-batch');
/** Who keeps a queue (tables with sequence numbers; an autoIncrement store; an INTEGER PRIMARY KEY table). */
const QUEUES = ['walnut', 'walnut-sync', 'idb-keyval', 'sqlite'];
/** Who can stream the whole store out as one file (walnut's export; raw OPFS's one file). */
const EXPORTERS = ['raw', 'walnut', 'walnut-sync'];

/** @param {number} bytes */
export function formatBytes(bytes) {
  return bytes >= 1024 * MiB ? `${bytes / 1024 / MiB} GiB` : `${bytes / MiB} MiB`;
}

/** @param {number} n */
function formatCount(n) {
  return n >= 1000 ? `${n / 1000}k` : String(n);
}

/** Latency metrics of a run of small writes or reads (`prefix` names the operation). */
function latencies(prefix, what) {
  return [
    { id: `${prefix}.ops`, label: `${what}: throughput`, unit: 'ops/s', better: 'higher' },
    { id: `${prefix}.p50`, label: `${what}: p50 latency`, unit: 'ms', better: 'lower' },
    { id: `${prefix}.p99`, label: `${what}: p99 latency`, unit: 'ms', better: 'lower' },
  ];
}

/**
 * The workloads at a scale. `kind` picks how the harness runs them (see bench/harness.mjs);
 * `contenders` lists who runs them; each metric id is `<workload>.<name>`, the names being the
 * keys of what the workload function returns (bench/page/workloads.js).
 * @param {typeof SCALES.full} scale
 */
export function workloadsAt(scale) {
  const small = formatCount(scale.small);
  const [count, size] = scale.many;
  const [openSmall, openLarge] = scale.open;
  return [
    {
      id: 'large',
      contenders: PER_CALL,
      params: { file: 'large' },
      metrics: [
        { id: 'large.put', label: `put one ${formatBytes(scale.large)} Blob`, unit: 'MiB/s', better: 'higher' },
        { id: 'large.get', label: `get it back, every byte read`, unit: 'MiB/s', better: 'higher' },
      ],
    },
    {
      id: 'many',
      contenders: ALL,
      params: { file: 'large', count, size },
      metrics: [
        { id: 'many.put', label: `put ${count} × ${formatBytes(size)}, issued together`, unit: 'MiB/s', better: 'higher' },
      ],
    },
    {
      id: 'seq',
      contenders: [...PER_CALL, 'floor'],
      params: { count: scale.small },
      metrics: latencies('seq', `${small} × 128 B durable puts, one after another`),
    },
    {
      id: 'concurrent',
      contenders: ALL,
      params: { count: scale.small },
      metrics: latencies('concurrent', `${small} × 128 B durable puts issued at once`),
    },
    {
      id: 'qseq',
      contenders: QUEUES,
      params: { count: scale.small },
      metrics: latencies('qseq', `${small} × 128 B queue appends, one after another`),
    },
    {
      id: 'qconc',
      contenders: QUEUES,
      params: { count: scale.small },
      metrics: latencies('qconc', `${small} × 128 B queue appends issued at once`),
    },
    {
      id: 'qread',
      contenders: QUEUES,
      params: { count: scale.small },
      metrics: [{ id: 'qread.entries', label: `read ${small} queue entries from a sequence number`, unit: 'entries/s', better: 'higher' }],
    },
    {
      id: 'fread',
      contenders: QUEUES,
      params: { count: scale.small },
      metrics: [{ id: 'fread.entries', label: `read a change feed of ${small} puts from a sequence number`, unit: 'entries/s', better: 'higher' }],
    },
    {
      id: 'gets',
      contenders: [...PER_CALL, 'floor'],
      params: { count: scale.small },
      metrics: latencies('gets', `${small} × 128 B gets, random order, one after another`),
    },
    {
      id: 'scan',
      contenders: PER_CALL,
      params: { count: scale.small },
      metrics: [{ id: 'scan.keys', label: `prefix scan of ${small} keys`, unit: 'keys/s', better: 'higher' }],
    },
    {
      id: 'mixed',
      contenders: PER_CALL,
      params: { file: 'large' },
      metrics: [
        ...latencies('mixed', `128 B puts while ${formatBytes(scale.large)} streams in`),
        { id: 'mixed.large', label: `the ${formatBytes(scale.large)} put meanwhile`, unit: 'MiB/s', better: 'higher' },
      ],
    },
    {
      id: 'open',
      kind: 'open',
      contenders: [...PER_CALL, 'walnut-pre'],
      params: { sizes: scale.open },
      metrics: [
        { id: 'open.small', label: `open a ${formatCount(openSmall)}-key store, first get answered`, unit: 'ms', better: 'lower' },
        { id: 'open.large', label: `open a ${formatCount(openLarge)}-key store, first get answered`, unit: 'ms', better: 'lower' },
      ],
    },
    {
      id: 'memory',
      kind: 'memory',
      contenders: ['raw', 'walnut', 'walnut-sync', 'idb-keyval'],
      params: { file: 'memory' },
      metrics: [
        { id: 'memory.put', label: `peak memory putting a ${formatBytes(scale.memory)} Blob, above the idle store`, unit: 'MiB', better: 'lower' },
        { id: 'memory.get', label: `peak memory reading it back, above the idle store`, unit: 'MiB', better: 'lower' },
        { id: 'memory.putLive', label: `the same, live memory only (GC before each sample): putting`, unit: 'MiB', better: 'lower' },
        { id: 'memory.getLive', label: `the same, live memory only: reading back`, unit: 'MiB', better: 'lower' },
        // Who has an export: walnut's db.export() (a .walnut file of the store), raw OPFS
        // streaming its one file out; the others have none.
        { id: 'memory.export', label: `peak memory exporting the store (the ${formatBytes(scale.memory)} value in it), above the idle store`, unit: 'MiB', better: 'lower', contenders: EXPORTERS },
        { id: 'memory.exportLive', label: `the same, live memory only: exporting`, unit: 'MiB', better: 'lower', contenders: EXPORTERS },
      ],
    },
  ];
}
