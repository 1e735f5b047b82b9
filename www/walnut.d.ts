/**
 * walnut: a durable key-value store for web apps, kept in a write-ahead log in the origin
 * private file system (OPFS). Each open store runs in its own dedicated worker.
 *
 * Sizes are in bytes, times in milliseconds.
 * @module walnut-kv
 */

/** A key: a string (stored as UTF-8) or bytes; 1 to 65535 bytes. Keys sort bytewise. */
export type Key = string | Uint8Array;

/**
 * What put() accepts. Strings are stored as UTF-8. Byte values are copied at call time. A
 * ReadableStream is walnut's once passed: if the call ends without reading it to its end (it
 * failed, was aborted, was refused, or close() came first), walnut cancels it, so its source
 * stops (a fetch body releases its connection).
 */
export type Value = string | ArrayBuffer | ArrayBufferView | Blob | ReadableStream<Uint8Array>;

/**
 * `'strict'`: a write resolves only after its COMMIT record is flushed to disk (writes issued
 * together share one flush). A strict call that writes nothing (a delete of an absent key, a
 * transaction or batch whose `id` was committed before) resolves after a flush too, so that
 * what it answers (absent, already applied) survives a crash even when relaxed writes made it
 * so. `'relaxed'`: a write resolves once it is written and visible; it is
 * flushed by a later strict write or by close(), and may be lost in a crash before that.
 */
export type Durability = 'strict' | 'relaxed';

export interface OpenOptions {
  /** Bytes per chunk record: values are written in chunks of this size. 4096 to 67108864, default 1048576 (1 MiB). */
  chunkSize?: number;
  /** Default durability of this store's writes. Default `'strict'`. */
  durability?: Durability;
  /** How long open() retries while another worker holds the store, ms. 0 to 2^32-1, default 5000. */
  lockTimeout?: number;
  /** Records of at least this many bytes bypass the write batch buffer. 1 to 2^32-1, default 65536. */
  directWriteThreshold?: number;
  /** Target size of a log segment, bytes: the log moves to a new file past it. 4096 to 2^39, default 67108864 (64 MiB). */
  segmentSize?: number;
  /** A checkpoint (the index persisted, so open replays only what follows) is written every this many bytes of log, and at close(). 0 disables the periodic ones. 0 to 2^53, default 67108864. */
  checkpointBytes?: number;
  /** Compaction starts by itself when dead bytes reach this fraction of the log (and it spans more than two segments). 0 to 1, default 0.5. */
  compactionRatio?: number;
  /**
   * How many commit ids (transaction() and batch() `id`s, and the ids other tabs' writes are
   * made under) the store remembers, newest first: a retried id older than that is applied
   * again. Kept in the log and in checkpoints (about 40 bytes and the id each). 0 to 10^6,
   * default 10,000.
   */
  idRetention?: number;
}

export interface WriteOptions {
  /**
   * Called as value bytes are written to the log: `bytesWritten` so far, and `totalBytes` when
   * known (not for ReadableStream values). Not called again after the promise settles.
   */
  onProgress?: (bytesWritten: number, totalBytes?: number) => void;
  /**
   * Aborting it before the write commits writes ABORT, keeps the old value and rejects with
   * `signal.reason`. If the commit happened first, the write resolves normally.
   */
  signal?: AbortSignal;
  /** Overrides the store's durability for this call. */
  durability?: Durability;
}

/** put() and delete()'s options: a write's own, and a compare-and-set condition. */
export interface ConditionalWriteOptions extends WriteOptions {
  /**
   * Write only if the key's version is this one (from versionOf() or getWithVersion()), or if
   * the key is absent (`null`); otherwise reject with WalnutConflictError and write nothing.
   * Checked in the same turn as the commit (Deno KV's atomic checks, compare-and-set).
   */
  ifVersion?: number | null;
}

/** batch()'s options: a write's own, version checks, and an idempotency id. */
export interface BatchOptions extends WriteOptions {
  /**
   * Commit only if every key has the version given (`null`: absent); otherwise reject with
   * WalnutConflictError and write nothing. `table`: the key's table (default: the view's).
   */
  checks?: Array<{ key: Key; version: number | null; table?: string }>;
  /**
   * An idempotency id (1 to 128 bytes of UTF-8): a batch committed before under it (across
   * restarts, within the store's id retention, default the newest 10,000 ids) is not applied
   * again. With an id, batch() resolves to a TransactionResult with `seqs`.
   */
  id?: string;
}

/** transaction()'s options. */
export interface TransactionOptions {
  /**
   * An idempotency id (1 to 128 bytes of UTF-8): if a transaction (or batch) with this id has
   * committed, the callback is not run and nothing is written: `{ applied: false, version }`.
   * Holds across close/reopen and crashes, for the newest 10,000 ids (SynapseDB's transaction
   * ids).
   */
  id?: string;
  /** As for other writes: 'strict' resolves once the COMMIT is on disk. */
  durability?: Durability;
  /** Aborting it aborts the transaction (nothing is written) and rejects with its reason. */
  signal?: AbortSignal;
  /** Runs after the first when a conflict makes the commit fail (default 10, at most 1000). */
  retries?: number;
}

/** What transaction() (and batch() with an id) resolves to. */
export interface TransactionResult<T = unknown> {
  /**
   * false: a commit with the same id was made before; nothing was written now. A call whose
   * answer a closing leader tab never sent is answered so too when the next leader finds its
   * commit under the id: it is in the store either way.
   */
  applied: boolean;
  /** The commit's version (its LSN): the version of every value it wrote. */
  version: number;
  /** What the callback returned (applied only). */
  value?: T;
  /** batch() with an id: the sequence numbers it took, per table. */
  seqs?: SeqRange[];
}

/**
 * A transaction as its callback sees it. Reads see one committed state and the transaction's
 * own writes, and are remembered: if any key or range read changes before the commit, the
 * commit fails with a conflict and the callback runs again (optimistic concurrency control,
 * serializable). Writes go to the log now and become visible to others at once at the
 * outermost commit. Calls run one at a time in call order. `options.table` reads or writes
 * another table of the store.
 */
export interface Transaction {
  /** Nesting depth: 1 for the outermost transaction (at most 32). */
  readonly depth: number;
  get<A extends ListForm = 'bytes'>(key: Key, options?: { as?: A; table?: string }): Promise<ValueForms[A] | undefined>;
  getBytes(key: Key, options?: { table?: string }): Promise<Uint8Array | undefined>;
  has(key: Key, options?: { table?: string }): Promise<boolean>;
  /** The whole range is part of what the transaction read: a key added to it or removed is a conflict. */
  keys(options?: KeysOptions & { table?: string }): Promise<Key[]>;
  entries(options?: KeysOptions & { table?: string }): Promise<Array<Entry<undefined>>>;
  /** Values of any size; streams and async iterables are read into a Blob first on the page. */
  put(key: Key, value: Value, options?: { table?: string }): Promise<void>;
  delete(key: Key, options?: { table?: string }): Promise<void>;
  /**
   * Runs `fn` as a nested transaction: a throw discards only its writes and rethrows here (catch
   * it to go on); its success merges its writes into this one. Nothing nested is visible before
   * the outermost commit. This transaction cannot be used while `fn` runs.
   */
  transaction<T>(fn: (tx: Transaction) => Promise<T> | T): Promise<T>;
}

export interface KeysOptions {
  /** Only keys starting with these bytes. */
  prefix?: Key;
  /** Only keys at or after this one (inclusive). */
  start?: Key;
  /** Only keys before this one (exclusive). */
  end?: Key;
  /** At most this many keys. */
  limit?: number;
  /** Descending order. */
  reverse?: boolean;
}

/**
 * One operation of a batch. `table` names another table of the store than the one the batch is
 * called on (created by the write); an `append` adds an entry to a table's queue.
 */
export type BatchOperation =
  | { type: 'put'; key: Key; value: Value; table?: string }
  | { type: 'delete'; key: Key; table?: string }
  | { type: 'append'; table: string; value: Value };

/**
 * The sequence numbers a commit took in one table: `first` to `last` (table '' is the store's
 * default table). Every committed write to a table (put, delete, append) takes its next number,
 * from 1, in commit order, never reused (HoraeDB's per-table sequence numbers).
 */
export interface SeqRange {
  table: string;
  first: number;
  last: number;
}

/** A table of a store, as `tables()` lists it. */
export interface TableInfo {
  name: string;
  /** The last sequence number a committed write to it took (0: none yet). */
  lastSeq: number;
  /** The flushed sequence number last persisted with markFlushed() (HoraeDB's MaxSeq). */
  flushedSeq: number;
  /** Its queue entries at or below this are deleted (deleteUpTo()). */
  deletedUpTo: number;
}

/** A queue entry: its sequence number, its value's size in bytes, and the value. */
export interface QueueEntry<V> {
  seq: number;
  size: number;
  value: V;
}

/** A change of a table's change feed: a put or delete of one of its keys. */
export interface Change {
  seq: number;
  type: 'put' | 'delete';
  key: Key;
  /** The value's size, bytes (0 for a delete). Values are not kept for the feed. */
  size: number;
  /** Whether this change made the key's present state (no later change to the key). */
  current: boolean;
}

/** Options of a queue read: entries from sequence number `from` (default: the first), at most `limit`. */
export interface ReadOptions<A extends ListForm = ListForm> {
  from?: number;
  limit?: number;
  as?: A;
}

/** The forms a value can be read in (`get(key, { as })`), and what each gives. */
export interface ValueForms {
  /** A Blob (the page API's default). */
  blob: Blob;
  /** A Uint8Array, the value's bytes (the synchronous store's default). */
  bytes: Uint8Array;
  /** A string: the bytes decoded as UTF-8. */
  text: string;
  /** What `JSON.parse` makes of the text (throws SyntaxError if it is not JSON). */
  json: unknown;
  /** A ReadableStream, one chunk per pull (as getStream()). */
  stream: ReadableStream<Uint8Array>;
}

/** The forms a whole listing can hold (not streams). */
export type ListForm = Exclude<keyof ValueForms, 'stream'>;

/** Options of entries(): the range, and whether and how to read the values. */
export interface EntriesOptions<A extends ListForm = ListForm> extends KeysOptions {
  /** Read each value too (default: false on the page and in Node's promise API, true in the synchronous store). */
  values?: boolean;
  /** The values' form. */
  as?: A;
}

/**
 * A key, its value's size, and the value when it was read. Iterating it gives the key then the
 * value, so `for (const [key, value] of entries)` works as for a Map.
 */
export class Entry<V = unknown> {
  private constructor();
  /** The key, in the form (string or Uint8Array) it was last put with. */
  readonly key: Key;
  /** Size of the value, bytes. */
  readonly size: number;
  /** The value, when the listing read values. */
  readonly value?: V;
  [Symbol.iterator](): Iterator<Key | V | undefined>;
}

/**
 * What entries() returns: awaited, the list; iterated with `for await`, the entries page by page
 * (256 per round trip, values always read), so memory holds one page at a time.
 */
export interface EntryQuery<E> extends PromiseLike<E[]>, AsyncIterable<E> {
  catch<R = never>(onRejected?: ((reason: unknown) => R | PromiseLike<R>) | null): Promise<E[] | R>;
  finally(onFinally?: (() => void) | null): Promise<E[]>;
}

export interface RecoveryReport {
  /** Committed transactions replayed. */
  committed: number;
  /** Transactions dropped: no COMMIT (a crash mid-write), ABORT, or a broken chain. The first 1000 only. */
  discarded: Array<{ txn: number; lsn: number; reason: string }>;
  /** How many transactions were dropped in all. */
  discardedTotal: number;
  /** Torn or corrupt tail cut off the log, bytes. */
  bytesTruncated: number;
  /** Where the log was cut: the segment (log file) and the byte offset in it; null when nothing was cut. */
  truncatedAt: { segment: number; offset: number } | null;
  /** Why the tail was cut; null when nothing was cut. */
  tailReason: string | null;
  /** Log size after recovery, bytes. */
  logBytes: number;
  /** Valid records scanned (replayed after the checkpoint, if one was used). */
  records: number;
  /** Log segments after recovery. */
  segments: number;
  /** Number of the checkpoint recovery started from; null when it scanned the whole log. */
  checkpointSeq: number | null;
  /** LSN where replay after that checkpoint began; null without a checkpoint. */
  checkpointLsn: number | null;
  /** Checkpoints passed over and why (torn, corrupt, or needing a segment that is gone). */
  checkpointsRejected: string[];
  /** Segments an interrupted compaction left behind, released. */
  segmentsReleased: number;
  /** Checkpoint entries dropped because the log was cut before their data. */
  entriesDropped: number;
  /** Time recovery took, ms. */
  millis: number;
}

export interface Stats {
  /** Live keys. */
  keys: number;
  /** Sum of the live values' sizes, bytes. */
  liveBytes: number;
  /** Log file size, bytes. */
  logBytes: number;
  /** Log sequence number the next record gets. */
  nextLsn: number;
  /** Transactions begun and not yet committed or aborted (e.g. streaming puts). */
  openTransactions: number;
  /** Strict commits waiting for the next group flush. */
  pendingCommits: number;
  /**
   * Flushes of the log since open. Each makes durable every commit written before it, so strict
   * writes committed together (group commit) share one.
   */
  flushes: number;
  /** Whether a failed write or flush made the store refuse writes until reopened. */
  poisoned: boolean;
  /** Bytes per chunk record. */
  chunkSize: number;
  /** Log segments (files). */
  segments: number;
  /** Fraction of the log's bytes no live value uses, 0 to 1. */
  deadRatio: number;
  /** LSN where replay starts from the last checkpoint; 0 before the first. */
  lastCheckpointLsn: number;
  /** Checkpoints written since open. */
  checkpoints: number;
  /** Compaction rounds finished since open. */
  compactions: number;
  /** Whether this context (page, iframe or worker) is the store's leader: its worker holds the files. */
  leader: boolean;
  /** Contexts that have the store open now, the leader included. */
  contexts: number;
}

/**
 * A change to the store, in every context that has it open: the keys a durable commit put and
 * deleted (in the form they were given; not the values) and the commit's LSN. Events arrive in
 * commit order, once each. `type` is `'change'`.
 */
export class WalnutChangeEvent extends Event {
  readonly type: 'change';
  /** LSN of the commit: later commits have higher ones. */
  readonly lsn: number;
  /** Keys the commit put. */
  readonly puts: Key[];
  /** Keys the commit deleted. */
  readonly deletes: Key[];
}

/**
 * Change events may have been missed (the leader changed, or a gap showed): read what you track
 * again. `type` is `'resync'`.
 */
export class WalnutResyncEvent extends Event {
  readonly type: 'resync';
  /** Why. */
  readonly reason: string;
}

interface WalnutStoreEventMap {
  change: WalnutChangeEvent;
  resync: WalnutResyncEvent;
}

/**
 * The calls of a store that answers with promises: the page's {@link WalnutStore} and Node's
 * (walnut-kv under the `node` condition). Every method rejects with a {@link WalnutError}.
 */
export interface StoreApi {
  /** The name given to open() (Node: the directory).  */
  readonly name: string;
  /** What recovery found and did when this store was opened. */
  readonly recovery: RecoveryReport;
  /** Bytes per chunk record. */
  readonly chunkSize: number;

  /**
   * Stores `value` under `key` in one transaction, replacing the old value. Blobs and streams
   * are read in the worker and written chunk by chunk with bounded memory: each stages one chunk
   * (a Blob smaller than a chunk, its size), and all puts together at most 128 MiB (or one
   * chunk, if chunkSize is larger); past that they wait their turn. Other requests keep being
   * served meanwhile. Writes to the same key apply in call order.
   */
  put(key: Key, value: Value, options?: ConditionalWriteOptions): Promise<number>;
  /**
   * Table `name` of this store (1 to 255 bytes of UTF-8): a namespace with this whole API over its
   * own ordered keys, its own sequence numbers (put() and append() resolve to the number they
   * took) and a queue. Created by its first write; reads of a table not yet written find
   * nothing. Served by the same worker and log: a batch may span tables and stays atomic.
   */
  table(name: string): this;
  /** This view's table name (undefined for the store itself). */
  readonly tableName: string | undefined;
  /** The store's named tables and their marks. */
  tables(): Promise<TableInfo[]>;
  /** Drops table `name` at once (one flushed record); resolves to whether it existed. */
  dropTable(name: string): Promise<boolean>;
  /** The last sequence number a committed write to this table took (0: none yet). */
  readonly lastSeq: Promise<number>;
  /** This table's flushed sequence number (markFlushed()). */
  readonly flushedSeq: Promise<number>;
  /** This table's queue entries at or below this are deleted (deleteUpTo()). */
  readonly deletedUpTo: Promise<number>;
  /**
   * Stores `value` as this table's next queue entry (values of any size, streamed as put()
   * streams them); resolves to its sequence number. Only on a table: `db.table(name).append()`.
   */
  append(value: Value, options?: WriteOptions): Promise<number>;
  /** This table's queue entries from `from`, at most `limit`, in sequence order. */
  read<A extends ListForm = 'blob'>(options?: ReadOptions<A>): Promise<Array<QueueEntry<ValueForms[A]>>>;
  /** This table's queue entries from `from` on, one at a time, each value a stream. */
  stream(options?: { from?: number }): AsyncIterable<QueueEntry<ReadableStream<Uint8Array>>>;
  /**
   * This table's change feed after `since` (exclusive; default 0), at most `limit`: every put
   * and delete of its keys (not its queue appends), kept until deleteUpTo() passes it.
   */
  changes(options?: { since?: number; limit?: number }): Promise<Change[]>;
  /**
   * Follows this table's change feed: replays the changes after `since`, then waits for new
   * ones (checked every `interval` ms, default 100), until `signal` aborts.
   */
  follow(options?: { since?: number; signal?: AbortSignal; interval?: number }): AsyncIterable<Change>;
  /**
   * Persists `seq` as this table's flushed sequence number (atomically with the log): after a
   * crash it reads back as the last one acknowledged. It never goes back (WalnutInvalidArgumentError).
   */
  markFlushed(seq: number, options?: Pick<WriteOptions, 'durability'>): Promise<void>;
  /**
   * Deletes this table's queue entries at or below `seq`, at once (one record; their space is
   * reclaimed by compaction). Sequence numbers go on above every number handed out.
   */
  deleteUpTo(seq: number, options?: Pick<WriteOptions, 'durability'>): Promise<void>;
  /**
   * Reads a whole value, or undefined when the key is absent, as a Blob or in the form `as`.
   * Reads do not wait for writes still streaming in: they see the last committed value. Use
   * `as: 'stream'` (or getStream()) for huge values.
   */
  get<A extends keyof ValueForms = 'blob'>(key: Key, options?: { as?: A }): Promise<ValueForms[A] | undefined>;
  /**
   * The values of `keys`, in order (undefined where absent), requested together: each is the
   * value committed when the worker reads it.
   */
  getMany<A extends ListForm = 'blob'>(keys: Key[], options?: { as?: A }): Promise<Array<ValueForms[A] | undefined>>;
  /**
   * Reads a whole value into memory as bytes, or undefined when the key is absent: the fast way
   * to read small values (no Blob is made). Use getStream() for huge values.
   */
  getBytes(key: Key): Promise<Uint8Array | undefined>;
  /**
   * Reads a value as a stream that fetches one chunk from the worker per pull, or undefined when
   * the key is absent. The stream sees the value as it was when getStream() resolved. Cancel it
   * if you stop reading early. A byte stream: read it with `getReader({ mode: 'byob' })` and one
   * reused buffer, and each chunk is copied into that buffer and its own buffer goes back to
   * the worker to be read into again, so reading a value of any size allocates nothing per
   * chunk (a default reader gets each chunk as a new Uint8Array, at most one chunk per read).
   */
  getStream(key: Key): Promise<ReadableStream<Uint8Array> | undefined>;
  /** Whether `key` has a value. */
  has(key: Key): Promise<boolean>;
  /** Deletes `key`; resolves to whether it existed. */
  delete(key: Key, options?: Pick<ConditionalWriteOptions, 'durability' | 'ifVersion'>): Promise<boolean>;
  /**
   * Runs `fn(tx)` as an optimistic, serializable transaction (SynapseDB's BEGIN/COMMIT/ABORT):
   * on a conflict `fn` runs again, up to `options.retries` times, then the call rejects with
   * WalnutConflictError; if `fn` throws or `options.signal` aborts, nothing is written. With
   * `options.id`, a transaction committed before under that id is not run again.
   */
  transaction<T>(fn: (tx: Transaction) => Promise<T> | T, options?: TransactionOptions): Promise<TransactionResult<T>>;
  /**
   * A consistent snapshot of the whole store (every table, values of any size, queues, change
   * feeds, sequence marks, commit ids) as one `.walnut` file, streamed: a valid walnut log
   * (docs/FORMAT.md section 12) that the `walnut` tool verifies (`walnut verify`) and imports
   * (`walnut import FILE DIR`). Taken when called; the store keeps serving meanwhile. Cancel the
   * stream if you stop reading early (its snapshot keeps old log segments until then).
   */
  export(options?: { signal?: AbortSignal; onProgress?: (bytes: number) => void }): ReadableStream<Uint8Array>;
  /**
   * Imports a `.walnut` file (from `export()` or `walnut export`) into this store, which must be
   * empty (no value, no table). The file is written beside the store's log, checked whole, and
   * only then replaces it, in steps that each recover to the empty store or to the import: a cut
   * or damaged file rejects with WalnutCorruptionError naming the byte offset and changes
   * nothing, and a closed tab or a crash meanwhile leaves the store empty. The store then holds
   * the export's tables, values, sequence numbers and commit ids. Rejects with
   * WalnutInvalidArgumentError naming `store` if the store is not empty or was written to
   * meanwhile. Memory: about 1 MiB of the source at a time.
   * @returns entries now held (keys, queue and change-feed entries) and bytes imported
   */
  import(
    source: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array> | Uint8Array | ArrayBuffer | Blob,
    options?: { signal?: AbortSignal; onProgress?: (bytes: number) => void },
  ): Promise<{ values: number; bytes: number }>;
  /**
   * The version of `key`'s value: the LSN of the commit that wrote it, or null if absent. It
   * changes when the value does, and when compaction moves the value (a check against the old
   * version then fails: read again).
   */
  versionOf(key: Key): Promise<number | null>;
  /** The value of `key` (in the form `as`) with its version, or undefined if absent. */
  getWithVersion<A extends ListForm = 'blob'>(key: Key, options?: { as?: A }): Promise<{ value: ValueForms[A]; version: number } | undefined>;
  /** Keys in bytewise order. */
  keys(options?: KeysOptions): Promise<Key[]>;
  /**
   * Keys in bytewise order with their values' sizes, and with `values: true` the values (each
   * read just after the listing: a key deleted in between is left out). Await it for the list,
   * or iterate it with `for await (const [key, value] of db.entries())`, page by page.
   */
  entries<A extends ListForm = 'blob'>(options?: EntriesOptions<A>): EntryQuery<Entry<ValueForms[A]>>;
  /**
   * Puts, deletes and appends in one transaction, across tables: after a crash, all of them or
   * none are visible. Resolves to the sequence numbers it took, per table.
   */
  batch(operations: BatchOperation[], options?: WriteOptions & { checks?: BatchOptions['checks'] }): Promise<SeqRange[] | undefined>;
  batch(operations: BatchOperation[], options: BatchOptions & { id: string }): Promise<TransactionResult<undefined>>;
  /**
   * Stores several values in one transaction: `[key, value]` pairs (an array, a Map) or a plain
   * object's own properties. All or none survive a crash.
   */
  putMany(entries: Iterable<readonly [Key, Value]> | Record<string, Value>, options?: WriteOptions): Promise<void>;
  /**
   * Deletes `keys` in one transaction; resolves to how many of them existed (NaN in the rare
   * case of a call retried after a leader change, whose first try had committed).
   */
  deleteMany(keys: Key[], options?: Pick<WriteOptions, 'durability'>): Promise<number>;
  /**
   * Deletes every key in one transaction (the Durable Objects API's deleteAll); resolves to how
   * many it deleted. Writes issued before it apply first, writes issued after it wait for it.
   */
  clear(options?: Pick<WriteOptions, 'durability'>): Promise<number>;
  /** Counters of the store and its log. */
  stats(): Promise<Stats>;
  /**
   * Reclaims the space of overwritten, deleted and aborted values: live values of segments with
   * dead bytes are copied forward one chunk at a time, other requests served in between, and the
   * old segments released. Also runs by itself past `compactionRatio`. Resolves to the rounds
   * finished (0: nothing worth compacting).
   */
  compact(): Promise<number>;
  /** Persists the index now, so the next open replays only what follows. Also automatic. */
  checkpoint(): Promise<void>;
  /**
   * Lets the requests made before it finish, flushes, releases the file and stops the worker.
   * It waits for every write whose data is all in hand (strings, bytes, Blobs, streams already
   * read to their end), reads and compaction; a put or batch whose ReadableStream has not ended
   * is aborted instead (ABORT is logged, the old value kept), rejects with WalnutClosedError and
   * has its stream cancelled, so a source that never ends cannot hold close() up. Calling it
   * again, or after terminate(), is harmless. Other calls afterwards reject with
   * WalnutClosedError. Rejects when the store was not closed cleanly: the worker died
   * (WalnutIoError) or its WebAssembly instance crashed (WalnutPoisonedError); the next open()
   * recovers every acknowledged write. A closing checkpoint that cannot be written (a full disk)
   * does not fail it: the next open() replays the log instead.
   */
  close(): Promise<void>;
}

/**
 * An open store. Get one with {@link open}. Every method rejects with a {@link WalnutError}.
 * Every page, iframe and worker of an origin can have the same store open at once: one of them,
 * the leader, runs it; the others' calls go through it with the same semantics (see
 * docs/MULTITAB.md). An EventTarget of `'change'` and `'resync'` events.
 */
export interface WalnutStore extends StoreApi {}
export class WalnutStore extends EventTarget {
  private constructor();
  addEventListener<K extends keyof WalnutStoreEventMap>(
    type: K,
    listener: (this: WalnutStore, event: WalnutStoreEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof WalnutStoreEventMap>(
    type: K,
    listener: (this: WalnutStore, event: WalnutStoreEventMap[K]) => void,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
  /**
   * Calls `callback` with every change event touching a key that starts with `prefix` (every
   * one without a prefix) and with every resync event, until `signal` aborts.
   */
  watch(
    options: { prefix?: Key; signal?: AbortSignal },
    callback: (event: WalnutChangeEvent | WalnutResyncEvent) => void,
  ): void;
  /**
   * On a table (`db.table(name)`): calls `callback` with each change of its feed after
   * `since`, then with each new one, until `signal` aborts (follow() as a callback).
   */
  watch(options: { since?: number; signal?: AbortSignal; interval?: number }, callback: (change: Change) => void): void;
  /**
   * Kills the worker at once, as a crash would: writes not yet flushed may be lost and pending
   * calls reject with WalnutClosedError. The next open() recovers the log.
   */
  terminate(): void;
}

/**
 * Opens (or creates) the store `name`, recovering its log. While another worker holds the store
 * (another tab, or a page being reloaded), retries for `lockTimeout` ms, then rejects with
 * WalnutLockedError.
 */
export function open(name: string, options?: OpenOptions): Promise<WalnutStore>;

/**
 * Imports a `.walnut` file into the store `name` (created if absent; it must be empty): opens
 * it, runs `db.import(source, { signal, onProgress })` (see WalnutStore.import), and closes it.
 */
export function importInto(
  name: string,
  source: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array> | Uint8Array | ArrayBuffer | Blob,
  options?: OpenOptions & { signal?: AbortSignal; onProgress?: (bytes: number) => void },
): Promise<{ values: number; bytes: number }>;

/**
 * Readies a worker for the next open(): starts it and loads walnut's WebAssembly module into
 * it, so that open() only opens the store's files and recovers its log. Starting a worker
 * takes 20-30 ms in Chromium; call this as early as possible when a store will be opened.
 * Keeps one worker ready; optional (open() starts its own worker when none is ready).
 */
export function preload(): void;

/** Base class of every error walnut rejects with; `name` tells the kind. */
export class WalnutError extends Error {}
/**
 * Reading or writing OPFS failed; or reading a value's Blob or stream failed, or memory to stage
 * it could not be allocated; or the worker died, or could not read a message carrying a call.
 */
export class WalnutIoError extends WalnutError {}
/** The log holds data that cannot be right (a broken structure, not a torn tail). */
export class WalnutCorruptionError extends WalnutError {}
/** A stored chunk failed its CRC check on read. */
export class WalnutChecksumError extends WalnutError {}
/** An earlier write or flush failed; the store refuses writes until it is reopened. */
export class WalnutPoisonedError extends WalnutError {}
/** The origin's storage quota is exhausted. */
export class WalnutQuotaExceededError extends WalnutError {}
/**
 * The store's leadership is held by a context that did not answer within `lockTimeout` (plus two
 * seconds), or its files stayed held (a dying worker) longer than that.
 */
export class WalnutLockedError extends WalnutError {}
/** An argument has the wrong type or value; the message names the parameter. */
export class WalnutInvalidArgumentError extends WalnutError {}
/** The store was closed or terminated. */
export class WalnutClosedError extends WalnutError {}
/** The environment lacks what walnut needs (module workers, OPFS, WebAssembly). */
export class WalnutUnsupportedError extends WalnutError {}
/** A transaction was used wrongly or could not be completed. */
export class WalnutTransactionError extends WalnutError {}
/**
 * The context leading the store went away while this call was under way, and the call did not
 * take effect (the old value stands). Retryable: call again. Only calls that cannot be sent to
 * the next leader safely get it: a put whose stream was partly read, reading a stream opened on
 * the old leader, or calls no leader answered for `lockTimeout` plus five seconds.
 */
export class WalnutLeaderChangedError extends WalnutError {}
/**
 * An optimistic transaction or a conditional write lost a race: a key or range it read (or the
 * version it was given) changed before it could commit. Nothing was written. transaction() runs
 * its callback again first, `retries` times.
 */
export class WalnutConflictError extends WalnutError {}
