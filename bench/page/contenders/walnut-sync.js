// walnut's synchronous store (walnut-kv/sync: openSync) in the bench's dedicated worker, with its
// defaults: strict durability (each put flushed before it returns), 1 MiB chunks. Its calls are
// synchronous; the async methods here only give it the shape of the others.
import { openSync } from '/pkg/sync.js';
import { drain } from './drain.js';

/** @param {string} name */
export async function open(name) {
  const db = await openSync(name);
  return {
    put: async (key, value) => {
      if (value instanceof Blob) await db.putStream(key, value);
      else db.put(key, value);
    },
    batch: async (entries) => {
      const small = entries.filter(([, value]) => !(value instanceof Blob));
      if (small.length > 0) db.putMany(small);
      for (const [key, value] of entries) if (value instanceof Blob) await db.putStream(key, value);
    },
    get: async (key) => db.get(key),
    readLarge: async (key) => drain(db.getStream(key)),
    // The whole store as one .walnut file, streamed (db.export()).
    exportAll: () => drain(db.export()),
    scan: async (prefix) => db.keys({ prefix }).length,
    append: async (value) => db.table('queue').append(value),
    readFrom: async (seq, limit) => db.table('queue').read({ from: seq, limit }).length,
    feedFill: async (entries) => db.table('docs').putMany(entries),
    feedRead: async (since, limit) => {
      const page = db.table('docs').changes({ since, limit });
      return { count: page.length, last: page.at(-1)?.seq ?? since };
    },
    close: async () => db.close(),
  };
}
