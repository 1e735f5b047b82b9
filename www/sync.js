/**
 * walnut's synchronous store on OPFS, in your own dedicated worker: `openSync(name)` opens the
 * store and returns a SyncStore whose calls answer at once (no extra worker, no message per
 * call), for apps that already run their data layer in a worker.
 *
 * ```js
 * // in a dedicated worker
 * import { openSync } from 'walnut-kv/sync';
 * const db = await openSync('cache');
 * db.put('greeting', 'hello');
 * db.get('greeting', { as: 'text' }); // 'hello'
 * ```
 *
 * @module walnut-kv/sync
 */

import init, { WalnutStore as Core } from './walnut_core.js';
import { describe, invalid, WalnutUnsupportedError } from './common.js';
import { checkHostOptions, Engine, fromCore, syncStore } from './engine.js';

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
} from './common.js';
export { SyncStore } from './engine.js';

/**
 * Opens (or creates) the store `name` on OPFS, in this dedicated worker, and runs recovery.
 * The store's files are locked to this worker until close(): a page using `open()` on the same
 * name in another tab waits for them (`lockTimeout`), and the other way round.
 * @param {string} name
 * @param {{ chunkSize?: number, durability?: 'strict' | 'relaxed', lockTimeout?: number, directWriteThreshold?: number, segmentSize?: number, checkpointBytes?: number, compactionRatio?: number, relaxedFlushMs?: number }} [options]
 * @returns {Promise<SyncStore>}
 */
export async function openSync(name, options) {
  const { core: coreOptions, durability, relaxedFlushMs } = checkHostOptions(options);
  if (typeof name !== 'string' || name === '') {
    throw invalid(`name must be a non-empty string, got ${typeof name === 'string' ? 'an empty string' : describe(name)}`);
  }
  if (typeof globalThis.FileSystemSyncAccessHandle === 'undefined' || typeof globalThis.WorkerGlobalScope === 'undefined') {
    throw new WalnutUnsupportedError(
      'openSync() needs a dedicated worker with OPFS sync access handles; on a page, use open() from walnut-kv',
    );
  }
  await loadCore();
  const core = await Core.open(name, coreOptions).catch((error) => {
    throw fromCore(error);
  });
  return syncStore(new Engine(core, { name, relaxedFlushMs }), durability);
}

/** @type {Promise<unknown> | undefined} */
let loaded;

/** Loads the WebAssembly module next to this file, once. */
function loadCore() {
  loaded ??= init({ module_or_path: new URL('./walnut_core_bg.wasm', import.meta.url) });
  return loaded;
}
