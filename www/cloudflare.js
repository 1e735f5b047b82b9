/**
 * walnut in a Cloudflare Durable Object: `openDurableObject(ctx.storage)` returns the
 * synchronous store over the object's SQLite-backed storage (www/volume-do.js), for values of
 * any size: a 50 MiB value streams in with putStream() across events and is visible only once
 * committed, where a Durable Object value may hold 2 MB.
 *
 * ```js
 * import { DurableObject } from 'cloudflare:workers';
 * import { openDurableObject } from 'walnut-kv/cloudflare';
 *
 * export class Files extends DurableObject {
 *   constructor(ctx, env) {
 *     super(ctx, env);
 *     this.db = openDurableObject(ctx.storage);
 *   }
 *   async fetch(request) {
 *     const key = new URL(request.url).pathname;
 *     if (request.method === 'PUT') {
 *       await this.db.putStream(key, request.body);
 *       return new Response('stored');
 *     }
 *     const body = this.db.getStream(key);
 *     return body ? new Response(body) : new Response('not found', { status: 404 });
 *   }
 * }
 * ```
 *
 * The WebAssembly core is imported as a compiled module (workerd forbids compiling wasm from
 * bytes): wrangler, and esbuild with `.wasm` kept external, do this.
 *
 * @module walnut-kv/cloudflare
 */

import wasmModule from './walnut_core_bg.wasm';
import { initSync } from './walnut_core.js';
import { checkOptions } from './common.js';
import { checkHostOptions, openEngine, syncStore, zeroTimeout } from './engine.js';
import { DurableObjectVolume } from './volume-do.js';

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
export { DurableObjectVolume } from './volume-do.js';

let loaded = false;

/**
 * Opens (or creates) the store `options.name` (default 'default') in a Durable Object's
 * storage and runs recovery. One object can hold several stores, each opened once at a time.
 * @param {DurableObjectStorage} storage the object's `ctx.storage` (SQLite-backed)
 * @param {{ name?: string, pageSize?: number, chunkSize?: number, durability?: 'strict' | 'relaxed', directWriteThreshold?: number, segmentSize?: number, checkpointBytes?: number, compactionRatio?: number, relaxedFlushMs?: number }} [options]
 * @returns {import('./engine.js').SyncStore}
 */
export function openDurableObject(storage, options) {
  const { name = 'default', pageSize, ...rest } = checkOptions(options, 'options');
  const { core, durability, relaxedFlushMs } = checkHostOptions(rest);
  if (!loaded) {
    initSync({ module: wasmModule });
    loaded = true;
  }
  const volume = DurableObjectVolume.open(storage, { name, pageSize });
  try {
    // A long putStream() gives way by zero timeouts: workerd delivers a MessageChannel
    // message in a microtask, which lets no other request in.
    return syncStore(openEngine(volume, { name, core, relaxedFlushMs, nextTask: zeroTimeout }), durability);
  } catch (error) {
    volume.close();
    throw error;
  }
}
