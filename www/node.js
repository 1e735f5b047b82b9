/**
 * walnut for Node: a store in a directory, with the page API's promises (`open`) or answered
 * synchronously (`openSync`). The directory holds the same segment and checkpoint files as a
 * store in OPFS, written with positioned writes and `fdatasync` (www/volume-node.js).
 *
 * ```js
 * import { open } from 'walnut-kv';
 * const db = await open('./data/cache');
 * await db.put('greeting', 'hello');
 * console.log(await db.get('greeting', { as: 'text' }));
 * await db.close();
 * ```
 *
 * @module walnut-kv/node
 */

import { readFileSync } from 'node:fs';
import { initSync } from './walnut_core.js';
import { asyncStore } from './async.js';
import { checkHostOptions, openEngine, syncStore } from './engine.js';
import { describe, invalid } from './common.js';
import { NodeVolume } from './volume-node.js';

export {
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
  Entry,
} from './common.js';
export { SyncStore } from './engine.js';
export { AsyncStore as WalnutStore } from './async.js';

let loaded = false;

/** Compiles and instantiates the WebAssembly core next to this file, once per process. */
function loadCore() {
  if (loaded) return;
  initSync({ module: readFileSync(new URL('./walnut_core_bg.wasm', import.meta.url)) });
  loaded = true;
}

/**
 * Opens the engine of the store in `directory`.
 * @param {unknown} directory
 * @param {unknown} options
 */
function openDirectory(directory, options) {
  if (typeof directory !== 'string' || directory === '') {
    throw invalid(
      `directory must be a non-empty path string, got ${typeof directory === 'string' ? 'an empty string' : describe(directory)}`,
    );
  }
  const { core, durability, relaxedFlushMs } = checkHostOptions(options);
  loadCore();
  const volume = NodeVolume.open(directory, { lockTimeout: core.lockTimeoutMs ?? 0 });
  try {
    return { engine: openEngine(volume, { name: directory, core, relaxedFlushMs }), durability };
  } catch (error) {
    volume.close();
    throw error;
  }
}

/**
 * Opens (creating if needed) the store in `directory` and runs recovery. Another process
 * holding the directory makes it fail with WalnutLockedError (after `lockTimeout` ms, default
 * 0); so does a second open in this process before close().
 * @param {string} directory
 * @param {{ chunkSize?: number, durability?: 'strict' | 'relaxed', lockTimeout?: number, directWriteThreshold?: number, segmentSize?: number, checkpointBytes?: number, compactionRatio?: number, relaxedFlushMs?: number }} [options]
 * @returns {Promise<import('./async.js').AsyncStore>}
 */
export async function open(directory, options) {
  const { engine, durability } = openDirectory(directory, options);
  return asyncStore(engine, durability);
}

/**
 * Like {@link open}, with a store whose calls answer synchronously (see SyncStore).
 * @param {string} directory
 * @param {Parameters<typeof open>[1]} [options]
 * @returns {import('./engine.js').SyncStore}
 */
export function openSync(directory, options) {
  const { engine, durability } = openDirectory(directory, options);
  return syncStore(engine, durability);
}
