// IndexedDB through idb-keyval. Used as it is used: `set`/`get` per call, each its own
// transaction (contender `idb-keyval`); `setMany` puts a batch in one transaction (contender
// `idb-batch`). Chromium's default transaction durability applies ("relaxed": no flush).
import { createStore, get, keys, promisifyRequest, set, setMany } from '/vendor/idb-keyval/index.js';
import { drain } from './drain.js';

/** The database of a queue: one autoIncrement object store `q`. */
function openQueue(name) {
  const request = indexedDB.open(`bench-q-${name}`, 1);
  request.onupgradeneeded = () => request.result.createObjectStore('q', { autoIncrement: true });
  return promisifyRequest(request);
}

/** @param {string} name */
export async function open(name) {
  // idb-keyval opens the database at the first call on the store, so open() timings include it.
  const store = createStore(`bench-${name}`, 'kv');
  let queue;
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
    // A queue as IndexedDB apps keep one: an autoIncrement object store (raw IndexedDB: idb-keyval
    // has no such store); add() resolves to the generated key.
    append: async (value) => {
      const db = await (queue ??= openQueue(name));
      const tx = db.transaction('q', 'readwrite');
      const key = promisifyRequest(tx.objectStore('q').add(value));
      await promisifyRequest(tx);
      return key;
    },
    readFrom: async (seq, limit) => {
      const db = await (queue ??= openQueue(name));
      const store = db.transaction('q', 'readonly').objectStore('q');
      return (await promisifyRequest(store.getAll(IDBKeyRange.lowerBound(seq), limit))).length;
    },
    // idb-keyval keeps its connection; the page deletes the database after the worker ends.
    // A change feed as these stores keep one: each write also appends {key, size} to a log
    // (the queue above); reading the feed reads that log from a sequence number.
    async feedFill(entries) {
      const db = await (queue ??= openQueue(name));
      const tx = db.transaction('q', 'readwrite');
      for (const [key, value] of entries) tx.objectStore('q').add(`${key}:${value.length}`);
      await promisifyRequest(tx);
    },
    async feedRead(since, limit) {
      const count = await this.readFrom(since + 1, limit);
      return { count, last: since + count };
    },
    close: async () => {
      (await queue)?.close();
    },
  };
}
