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
  RecoveryReport,
  Stats,
  ValueForms,
  WriteOptions,
} from './walnut.js';

export type { Durability, EntriesOptions, Key, KeysOptions, ListForm, OpenOptions, RecoveryReport, Stats, ValueForms, WriteOptions };
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
} from './walnut.js';

/** What a synchronous write takes: strings (stored as UTF-8) and bytes. Blobs and streams go through putStream(). */
export type SyncValue = string | ArrayBuffer | ArrayBufferView;

export type SyncBatchOperation = { type: 'put'; key: Key; value: SyncValue } | { type: 'delete'; key: Key };

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
  /** Stores `value` under `key` in one commit. */
  put(key: Key, value: SyncValue, options?: Pick<WriteOptions, 'durability'>): void;
  /** Stores several values in one commit: all or none survive a crash. */
  putMany(entries: Iterable<readonly [Key, SyncValue]> | Record<string, SyncValue>, options?: Pick<WriteOptions, 'durability'>): void;
  /** Deletes `key`; returns whether it existed. */
  delete(key: Key, options?: Pick<WriteOptions, 'durability'>): boolean;
  /** Deletes `keys` in one commit; returns how many of them existed. */
  deleteMany(keys: Key[], options?: Pick<WriteOptions, 'durability'>): number;
  /** Puts and deletes in one commit: after a crash, all of them or none are visible. */
  batch(operations: SyncBatchOperation[], options?: Pick<WriteOptions, 'durability'>): void;
  /** Deletes every key in one commit (the Durable Objects API's deleteAll); returns how many. */
  clear(options?: Pick<WriteOptions, 'durability'>): number;
  /** Keys in bytewise order, each in the form it was put with. */
  keys(options?: KeysOptions): Key[];
  /** Entries in bytewise key order, with their values (unless `values: false`), as bytes or the form `as`. Bound the memory with `limit`. */
  entries<A extends ListForm = 'bytes'>(options?: EntriesOptions<A>): Array<Entry<ValueForms[A]>>;
  /**
   * Streams a value in as one transaction, chunk by chunk as the source yields them (memory holds
   * one chunk): the old value stays until the commit, and an error, an abort or a crash leaves it.
   */
  putStream(
    key: Key,
    source: ReadableStream<Uint8Array> | Blob | AsyncIterable<Uint8Array | ArrayBuffer | string>,
    options?: WriteOptions,
  ): Promise<void>;
  /** The value as a stream, one chunk per pull, or undefined. Cancel it if you stop early. */
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
