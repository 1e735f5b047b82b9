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
    // getBytes(): the value's bytes in hand, with no Blob made (get() answers a Blob).
    get: (key) => db.getBytes(key),
    // getStream() is walnut's bounded-memory way to read a large value.
    readLarge: async (key) => drain(await db.getStream(key)),
    // The whole store as one .walnut file, streamed (db.export()).
    exportAll: () => drain(db.export()),
    scan: async (prefix) => (await db.keys({ prefix })).length,
    // A queue: a table of the store (db.table(name).append, resolving to the sequence number).
    append: (value) => db.table('queue').append(value),
    readFrom: async (seq, limit) => (await db.table('queue').read({ from: seq, limit, as: 'bytes' })).length,
    // A change feed: every put to a table is in its feed (table.changes).
    feedFill: (entries) => db.table('docs').putMany(entries),
    feedRead: async (since, limit) => {
      const page = await db.table('docs').changes({ since, limit });
      return { count: page.length, last: page.at(-1)?.seq ?? since };
    },
    close: () => db.close(),
  };
}
