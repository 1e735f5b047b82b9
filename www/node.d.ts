/**
 * walnut for Node: a store in a directory, with promises (`open`) or synchronous calls
 * (`openSync`). The directory holds the same files as a store in OPFS, written with positioned
 * writes and fdatasync, and locked by a `LOCK` file naming its process.
 * @module walnut-kv/node
 */
import type { Change, OpenOptions, StoreApi } from './walnut.js';
import type { SyncOpenOptions, SyncStore } from './sync.js';

export type {
  BatchOperation,
  Durability,
  EntriesOptions,
  EntryQuery,
  Key,
  KeysOptions,
  ListForm,
  OpenOptions,
  RecoveryReport,
  Stats,
  StoreApi,
  Value,
  ValueForms,
  WriteOptions,
} from './walnut.js';
export type { SyncBatchOperation, SyncOpenOptions, SyncStats, SyncValue } from './sync.js';
export { SyncStore } from './sync.js';
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

/** Node's options: `lockTimeout` defaults to 0 (a held directory fails at once). */
export interface NodeOpenOptions extends SyncOpenOptions {}

/**
 * A store in a directory, answering with promises: the page API's calls (not its events).
 * Strict writes made in one turn of the event loop share one fdatasync (group commit).
 */
export interface WalnutStore extends StoreApi {}
export class WalnutStore {
  private constructor();
  /** Makes every write so far durable, relaxed ones too. (Also `Symbol.asyncDispose`-able.) */
  flush(): Promise<void>;
  /** On a table: calls `callback` with each change after `since`, then each new one, until `signal` aborts. */
  watch(options: { since?: number; signal?: AbortSignal; interval?: number }, callback: (change: Change) => void): Promise<void>;
}

/**
 * Opens (or creates) the store in `directory` and runs recovery. A directory another process
 * holds (or this one, before close()) fails with WalnutLockedError, after `lockTimeout` ms.
 */
export function open(directory: string, options?: NodeOpenOptions): Promise<WalnutStore>;

/** Like open(), with a store whose calls answer synchronously. */
export function openSync(directory: string, options?: NodeOpenOptions): SyncStore;

/**
 * Restores an export (`export()`, `walnut export`) into the new store directory `directory`
 * (which must not exist or be empty): written beside it, checked whole (recovery keeps every
 * record, every value reads back, the end mark is there), then renamed into place. A cut or
 * damaged file rejects with WalnutCorruptionError naming the byte offset; nothing is created.
 */
export function importInto(
  directory: string,
  source: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array> | Uint8Array | Blob,
  options?: { signal?: AbortSignal; onProgress?: (bytes: number) => void },
): Promise<{ values: number; bytes: number }>;
