// IndexedDB through idb-keyval. Used as it is used: `set`/`get` per call, each its own
// transaction (contender `idb-keyval`); `setMany` puts a batch in one transaction (contender
// `idb-batch`). Chromium's default transaction durability applies ("relaxed": no flush).
import { createStore, get, keys, promisifyRequest, set, setMany } from '/vendor/idb-keyval/index.js';
import { drain } from './drain.js';

/** @param {string} name */
export async function open(name) {
  // idb-keyval opens the database at the first call on the store, so open() timings include it.
  const store = createStore(`bench-${name}`, 'kv');
  return {
    put: (key, value) => set(key, value, store),
    batch: (entries) => setMany(entries, store),
    get: (key) => get(key, store),
    readLarge: async (key) => drain((await get(key, store)).stream()),
    // A key range on the raw object store: idb-keyval's keys() has no prefix.
    scan: (prefix) =>
      store('readonly', (kv) => promisifyRequest(kv.getAllKeys(IDBKeyRange.bound(prefix, `${prefix}\uffff`)))).then(
        (listed) => listed.length,
      ),
    // idb-keyval keeps its connection; the page deletes the database after the worker ends.
    close: async () => {},
  };
}
