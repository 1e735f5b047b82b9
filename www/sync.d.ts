/**
 * walnut's synchronous store: the core called directly, with no worker and no message in
 * between. `openSync(name)` from `walnut-kv/sync` opens one on OPFS inside a dedicated worker;
 * `walnut-kv/node` and `walnut-kv/cloudflare` open them on a directory and in a Durable Object.
 *
 * Sizes are in bytes, times in milliseconds.
 * @module walnut-kv/sync
 */
import type {
  Durability,
  EntriesOptions,
  Entry,
  Key,
  KeysOptions,
  ListForm,
  OpenOptions,
  QueueEntry,
  ReadOptions,
  RecoveryReport,
  SeqRange,
  Stats,
  TableInfo,
  ValueForms,
  WriteOptions,
  Change,
  BatchOptions,
  TransactionOptions,
  TransactionResult,
} from './walnut.js';

export type {
  Change,
  Durability,
  EntriesOptions,
  Key,
  KeysOptions,
  ListForm,
  OpenOptions,
  QueueEntry,
  ReadOptions,
  RecoveryReport,
  SeqRange,
  Stats,
  TableInfo,
  ValueForms,
  WriteOptions,
};
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
  WalnutConflictError,
} from './walnut.js';

/** What a synchronous write takes: strings (stored as UTF-8) and bytes. Blobs and streams go through putStream(). */
export type SyncValue = string | ArrayBuffer | ArrayBufferView;

export type SyncBatchOperation =
  | { type: 'put'; key: Key; value: SyncValue; table?: string }
  | { type: 'delete'; key: Key; table?: string }
  | { type: 'append'; table: string; value: SyncValue };

export interface SyncOpenOptions extends OpenOptions {
  /** A relaxed write is flushed within this many ms (or by the next strict write, flush() or close()). Default 1000; Infinity: only then. */
  relaxedFlushMs?: number;
}

/** A store's counters (no multi-context fields: a synchronous store has one owner). */
export type SyncStats = Omit<Stats, 'leader' | 'contexts'>;

/**
 * A store whose calls answer synchronously, like the Durable Objects storage API's `kv`. A
 * strict write is flushed before the call returns (one flush per call: putMany() and batch()
 * write many values with one); a relaxed one within `relaxedFlushMs`. Every method throws a
 * WalnutError; after close(), WalnutClosedError.
 */
/** A synchronous store's transaction: Transaction's calls, answering with values. */
export interface SyncTransaction {
  readonly depth: number;
  get<A extends ListForm = 'bytes'>(key: Key, options?: { as?: A; table?: string }): ValueForms[A] | undefined;
  getBytes(key: Key, options?: { table?: string }): Uint8Array | undefined;
  has(key: Key, options?: { table?: string }): boolean;
  keys(options?: KeysOptions & { table?: string }): Key[];
  entries(options?: KeysOptions & { table?: string }): Array<Entry<undefined>>;
  put(key: Key, value: SyncValue, options?: { table?: string }): void;
  delete(key: Key, options?: { table?: string }): void;
  transaction<T>(fn: (tx: SyncTransaction) => T): T;
}

export class SyncStore {
  private constructor();
  /** The store's name (OPFS), directory (Node) or name in the Durable Object. */
  readonly name: string;
  /** What recovery found and did when the store was opened. */
  readonly recovery: RecoveryReport;
  /** Bytes per chunk record. */
  readonly chunkSize: number;
  /** Whether close() was called. */
  readonly closed: boolean;
  /** The committed value, or undefined: bytes, or the form `as`. */
  get<A extends keyof ValueForms = 'bytes'>(key: Key, options?: { as?: A }): ValueForms[A] | undefined;
  /** The values of `keys`, in order (undefined where absent), read at one moment. */
  getMany<A extends ListForm = 'bytes'>(keys: Key[], options?: { as?: A }): Array<ValueForms[A] | undefined>;
  /** Whether `key` has a committed value. */
  has(key: Key): boolean;
  /** Stores `value` under `key` in one commit; returns the sequence number it took in its table. */
  put(key: Key, value: SyncValue, options?: { durability?: Durability; ifVersion?: number | null }): number;
  /**
   * Runs `fn(tx)` (synchronous) as an optimistic, serializable transaction: see
   * WalnutStore.transaction. `tx`'s calls return values; a nested transaction is
   * `tx.transaction(fn)`.
   */
  transaction<T>(fn: (tx: SyncTransaction) => T, options?: Omit<TransactionOptions, 'signal'>): TransactionResult<T>;
  /** A consistent snapshot of the whole store as one `.walnut` file, streamed (see WalnutStore.export). */
  export(options?: { signal?: AbortSignal; onProgress?: (bytes: number) => void }): ReadableStream<Uint8Array>;
  /**
   * Imports a `.walnut` file into this store, which must be empty (see WalnutStore.import).
   * Asynchronous, as its source is; `{ values, bytes }`: entries now held, bytes imported.
   */
  import(
    source: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array> | Uint8Array | ArrayBuffer | Blob,
    options?: { signal?: AbortSignal; onProgress?: (bytes: number) => void },
  ): Promise<{ values: number; bytes: number }>;
  /** The version of `key`'s value (the LSN of its commit), or null if absent. */
  versionOf(key: Key): number | null;
  /** The value of `key` (in the form `as`) with its version, or undefined if absent. */
  getWithVersion<A extends ListForm = 'bytes'>(key: Key, options?: { as?: A }): { value: ValueForms[A]; version: number } | undefined;
  /** Stores several values in one commit: all or none survive a crash. */
  putMany(entries: Iterable<readonly [Key, SyncValue]> | Record<string, SyncValue>, options?: Pick<WriteOptions, 'durability'>): SeqRange[];
  /**
   * Table `name` of this store: a namespace with this whole API over its own keys, its own
   * sequence numbers and a queue (see StoreApi.table in walnut.d.ts). Created by its first write.
   */
  table(name: string): SyncStore;
  /** This view's table name (undefined for the store itself). */
  readonly tableName: string | undefined;
  /** The store's named tables and their marks. */
  tables(): TableInfo[];
  /** Drops table `name` at once; returns whether it existed. */
  dropTable(name: string): boolean;
  /** The last sequence number a committed write to this table took (0: none yet). */
  readonly lastSeq: number;
  /** This table's flushed sequence number. */
  readonly flushedSeq: number;
  /** This table's queue entries at or below this are deleted. */
  readonly deletedUpTo: number;
  /** Stores `value` as this table's next queue entry; returns its sequence number. */
  append(value: SyncValue, options?: Pick<WriteOptions, 'durability'>): number;
  /** Streams a value in as this table's next queue entry (one transaction, as putStream()). */
  appendStream(
    source: ReadableStream<Uint8Array> | Blob | AsyncIterable<Uint8Array | ArrayBuffer | string>,
    options?: WriteOptions,
  ): Promise<number>;
  /** This table's queue entries from `from`, at most `limit`, in sequence order. */
  read<A extends ListForm = 'bytes'>(options?: ReadOptions<A>): Array<QueueEntry<ValueForms[A]>>;
  /** This table's queue entries from `from` on, one at a time, each value a stream. */
  stream(options?: { from?: number }): AsyncIterable<QueueEntry<ReadableStream<Uint8Array>>>;
  /** This table's change feed after `since` (exclusive), at most `limit` (see walnut.d.ts). */
  changes(options?: { since?: number; limit?: number }): Change[];
  /** Follows this table's change feed from `since`, until `signal` aborts. */
  follow(options?: { since?: number; signal?: AbortSignal; interval?: number }): AsyncIterable<Change>;
  /** Calls `callback` with each change after `since`, then each new one, until `signal` aborts. */
  watch(options: { since?: number; signal?: AbortSignal; interval?: number }, callback: (change: Change) => void): Promise<void>;
  /** Persists `seq` as this table's flushed sequence number; it never goes back. */
  markFlushed(seq: number, options?: Pick<WriteOptions, 'durability'>): void;
  /** Deletes this table's queue entries at or below `seq`, at once. */
  deleteUpTo(seq: number, options?: Pick<WriteOptions, 'durability'>): void;
  /** Deletes `key`; returns whether it existed. */
  delete(key: Key, options?: { durability?: Durability; ifVersion?: number | null }): boolean;
  /** Deletes `keys` in one commit; returns how many of them existed. */
  deleteMany(keys: Key[], options?: Pick<WriteOptions, 'durability'>): number;
  /** Puts, deletes and appends in one commit, across tables; returns the sequence numbers it took, per table. */
  batch(operations: SyncBatchOperation[], options?: Pick<BatchOptions, 'durability' | 'checks'>): SeqRange[];
  batch(operations: SyncBatchOperation[], options: Pick<BatchOptions, 'durability' | 'checks' | 'id'> & { id: string }): TransactionResult<undefined>;
  /** Deletes every key in one commit (the Durable Objects API's deleteAll); returns how many. */
  clear(options?: Pick<WriteOptions, 'durability'>): number;
  /** Keys in bytewise order, each in the form it was put with. */
  keys(options?: KeysOptions): Key[];
  /** Entries in bytewise key order, with their values (unless `values: false`), as bytes or the form `as`. Bound the memory with `limit`. */
  entries<A extends ListForm = 'bytes'>(options?: EntriesOptions<A>): Array<Entry<ValueForms[A]>>;
  /**
   * Streams a value in as one transaction, chunk by chunk as the source yields them (memory holds
   * one chunk): the old value stays until the commit, and an error, an abort or a crash leaves it.
   * It gives the thread back to the event loop every 2 ms or 1 MiB written, so this worker's
   * other calls and messages are served while it runs (each strict one flushes what it wrote).
   */
  putStream(
    key: Key,
    source: ReadableStream<Uint8Array> | Blob | AsyncIterable<Uint8Array | ArrayBuffer | string>,
    options?: WriteOptions,
  ): Promise<number>;
  /**
   * The value as a stream, one chunk per pull, or undefined. Cancel it if you stop early. A
   * byte stream: a BYOB reader's buffer is read into straight from the log (no chunk allocated
   * when it holds a whole chunk); a default reader gets each chunk as a new Uint8Array.
   */
  getStream(key: Key): ReadableStream<Uint8Array> | undefined;
  /** Counters of the store and its log. */
  stats(): SyncStats;
  /** Writes a checkpoint now, so the next open replays only what follows. */
  checkpoint(): void;
  /** Reclaims the space of overwritten and deleted values now; returns the rounds finished. */
  compact(): number;
  /** Makes every write so far durable, relaxed ones too. */
  flush(): void;
  /**
   * Flushes, writes a checkpoint and releases the store and its lock. Idempotent. (The store is
   * also `Symbol.dispose`-able: `using db = ...` where the runtime has explicit resource
   * management; not declared here, so that the types need no `esnext` lib.)
   */
  close(): void;
}

/**
 * Opens (or creates) the store `name` on OPFS, in this dedicated worker, and runs recovery. The
 * store's files are this worker's until close(): open() of the same name on a page waits for
 * them (`lockTimeout`), and the other way round. Outside a dedicated worker it rejects with
 * WalnutUnsupportedError.
 */
export function openSync(name: string, options?: SyncOpenOptions): Promise<SyncStore>;
