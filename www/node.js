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

import { dirname, resolve } from 'node:path';
import { closeSync, fsyncSync, mkdirSync, openSync as openFile, readdirSync, readFileSync, renameSync, rmdirSync, rmSync, writeSync, existsSync } from 'node:fs';
import { initSync } from './walnut_core.js';
import { asyncStore } from './async.js';
import { checkHostOptions, openEngine, slicer, syncStore } from './engine.js';
import { checkExportOptions, describe, importChunks, invalid } from './common.js';
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

/**
 * Restores an export (a `.walnut` file from `export()` or `walnut export`) into a new store
 * directory `directory`: the file is written into a directory beside it, checked whole by
 * opening it (recovery keeps every record, every value reads, the end mark is there), and only
 * then renamed into place. A cut or damaged file rejects with WalnutCorruptionError naming the
 * byte offset, and nothing is created. `directory` must not exist or be empty.
 * @param {string} directory
 * @param {ReadableStream<Uint8Array> | AsyncIterable<Uint8Array> | Uint8Array | Blob} source
 * @param {{ signal?: AbortSignal, onProgress?: (bytes: number) => void }} [options]
 * @returns {Promise<{ values: number, bytes: number }>}
 */
export async function importInto(directory, source, options) {
  const { signal, onProgress } = checkExportOptions(options);
  if (typeof directory !== 'string' || directory === '') throw invalid('directory must be a non-empty path string');
  if (existsSync(directory) && readdirSync(directory).length > 0) {
    throw invalid(`directory ${directory} exists and is not empty: import into a new one`);
  }
  loadCore();
  // A new directory beside the target, never someone else's: removed only if made here.
  const partial = `${directory}.import-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
  mkdirSync(partial);
  let bytes = 0;
  try {
    const fd = openFile(`${partial}/00000000.wal`, 'w');
    try {
      const write = (chunk) => {
        for (let at = 0; at < chunk.length; ) at += writeSync(fd, chunk, at, chunk.length - at, bytes + at);
        bytes += chunk.length;
        onProgress?.(bytes);
      };
      const slices = slicer();
      for await (const chunk of importChunks(source)) {
        signal?.throwIfAborted();
        write(chunk);
        await slices.wrote(chunk.length);
      }
      signal?.throwIfAborted();
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    // Every commit id the export holds is kept (the retention's maximum), as `walnut import` does.
    const { engine } = openDirectory(partial, { idRetention: 1_000_000 });
    let values;
    try {
      engine.checkImport();
      values = engine.stats().keys;
    } finally {
      engine.close();
    }
    rmSync(`${partial}/LOCK`, { force: true });
    // Only an empty directory is replaced, checked again here: the source streamed in over many
    // turns of the event loop, and a store may have been opened there meanwhile (a recursive
    // remove deleted it, acknowledged writes and all). rmdir and rename refuse a non-empty one.
    try {
      if (existsSync(directory)) rmdirSync(directory);
      renameSync(partial, directory);
    } catch (error) {
      if (error?.code !== 'ENOTEMPTY' && error?.code !== 'EEXIST') throw error;
      throw invalid(`directory ${directory} is not empty any more (a store was opened there during the import): import into a new one`);
    }
    // The rename durable too: the parent directory flushed.
    const parent = openFile(dirname(resolve(directory)), 'r');
    try {
      fsyncSync(parent);
    } finally {
      closeSync(parent);
    }
    return { values, bytes };
  } catch (error) {
    rmSync(partial, { recursive: true, force: true });
    throw error;
  }
}
