/**
 * walnut in a Cloudflare Durable Object: the synchronous store over the object's SQLite-backed
 * storage, for values of any size (a Durable Object value may hold 2 MB).
 * @module walnut-kv/cloudflare
 */
import type { SyncOpenOptions, SyncStore } from './sync.js';

export type {
  Durability,
  EntriesOptions,
  Key,
  KeysOptions,
  ListForm,
  RecoveryReport,
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

/** The storage of a SQLite-backed Durable Object (`ctx.storage`), as far as walnut uses it. */
export interface DurableObjectStorageLike {
  sql: { exec(query: string, ...bindings: unknown[]): Iterable<Record<string, unknown>> & { toArray(): Array<Record<string, unknown>> } };
  transactionSync<T>(closure: () => T): T;
}

export interface DurableObjectOpenOptions extends Omit<SyncOpenOptions, 'lockTimeout'> {
  /** The store's name in the object: one object can hold several stores. Default 'default'. */
  name?: string;
  /** Bytes per page row, 4096 to 1048576 (rows must stay under 2 MB), for a new store; default 65536. */
  pageSize?: number;
}

/**
 * Opens (or creates) a store in a Durable Object's storage and runs recovery. A strict write
 * returns once its pages are written to the object's SQLite in one transaction; the platform's
 * output gate holds every response until that write is confirmed (walnut never uses
 * allowUnconfirmed). A second open of the same name in one object fails with WalnutLockedError
 * until the first is closed.
 */
export function openDurableObject(storage: DurableObjectStorageLike, options?: DurableObjectOpenOptions): SyncStore;

/** The volume under the store (pages of `_walnut_pages` rows): exported for tools and tests. */
export class DurableObjectVolume {
  private constructor();
  static open(storage: DurableObjectStorageLike, options?: { name?: string; pageSize?: number }): DurableObjectVolume;
  readonly pageSize: number;
  /** Rows written and write-back transactions run since open. */
  readonly stats: { rowsWritten: number; transactions: number };
}
