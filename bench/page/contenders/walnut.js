// walnut through its public API only (the built package, pkg/walnut.js), with its defaults:
// strict durability (a write resolves after its COMMIT is flushed), 1 MiB chunks.
import { open as openWalnut } from '/pkg/walnut.js';
import { drain } from './drain.js';

/** @param {string} name */
export async function open(name) {
  const db = await openWalnut(name);
  return {
    put: (key, value) => db.put(key, value),
    batch: (entries) => db.batch(entries.map(([key, value]) => ({ type: 'put', key, value }))),
    // get() answers a Blob; the value is in hand once its bytes are.
    get: async (key) => new Uint8Array(await (await db.get(key)).arrayBuffer()),
    // getStream() is walnut's bounded-memory way to read a large value.
    readLarge: async (key) => drain(await db.getStream(key)),
    scan: async (prefix) => (await db.keys({ prefix })).length,
    close: () => db.close(),
  };
}
