// SQLite (@sqlite.org/sqlite-wasm) on its opfs-sahpool VFS, a `kv(key TEXT PRIMARY KEY, value
// BLOB)` table, default settings (rollback journal, synchronous=FULL: the VFS flushes at every
// commit), autocommit: one transaction per put. Its API is synchronous; the async methods here
// only give it the shape of the others.
import sqlite3InitModule from '/vendor/sqlite-wasm/index.mjs';

/** The pool VFS of this worker, installed by the first open() (so open() timings include it). */
let pool;

/** @param {Blob | Uint8Array} value */
async function bytesOf(value) {
  return value instanceof Blob ? new Uint8Array(await value.arrayBuffer()) : value;
}

/** @param {string} name */
export async function open(name) {
  pool ??= await (await sqlite3InitModule()).installOpfsSAHPoolVfs();
  if (pool.isPaused()) await pool.unpauseVfs();
  const db = new pool.OpfsSAHPoolDb(`/${name}.sqlite3`);
  db.exec('CREATE TABLE IF NOT EXISTS kv(key TEXT PRIMARY KEY, value BLOB)');
  const insert = db.prepare('INSERT OR REPLACE INTO kv(key, value) VALUES (?, ?)');
  const select = db.prepare('SELECT value FROM kv WHERE key = ?');
  const range = db.prepare('SELECT key FROM kv WHERE key >= ? AND key < ?');
  // A queue as SQLite apps keep one: an INTEGER PRIMARY KEY (rowid) table.
  db.exec('CREATE TABLE IF NOT EXISTS q(seq INTEGER PRIMARY KEY, value BLOB)');
  const enqueue = db.prepare('INSERT INTO q(value) VALUES (?) RETURNING seq');
  const readQ = db.prepare('SELECT seq, value FROM q WHERE seq >= ? ORDER BY seq LIMIT ?');
  // reset(true) also drops the bound value, so that a large one does not stay in wasm memory.
  const write = (key, bytes) => {
    try {
      insert.bind([key, bytes]).step();
    } finally {
      insert.reset(true);
    }
  };
  const get = (key) => {
    try {
      return select.bind([key]).step() ? select.get(0) : undefined;
    } finally {
      select.reset(true);
    }
  };
  return {
    put: async (key, value) => write(key, await bytesOf(value)),
    batch: async (entries) => {
      const values = await Promise.all(entries.map(([, value]) => bytesOf(value)));
      db.transaction(() => entries.forEach(([key], i) => write(key, values[i])));
    },
    get: async (key) => get(key),
    readLarge: async (key) => get(key).length,
    scan: async (prefix) => {
      // Keys under the prefix: from the prefix up to (excluding) the prefix with its last char + 1.
      const end = prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
      const listed = [];
      range.bind([prefix, end]);
      while (range.step()) listed.push(range.get(0));
      range.reset(true);
      return listed.length;
    },
    append: async (value) => {
      const bytes = await bytesOf(value);
      try {
        enqueue.bind([bytes]).step();
        return enqueue.get(0);
      } finally {
        enqueue.reset(true);
      }
    },
    readFrom: async (seq, limit) => {
      let n = 0;
      try {
        readQ.bind([seq, limit]);
        while (readQ.step()) {
          readQ.get(1);
          n += 1;
        }
      } finally {
        readQ.reset(true);
      }
      return n;
    },
    // A change feed as these stores keep one: each write also appends {key, size} to a log
    // (the queue above); reading the feed reads that log from a sequence number.
    async feedFill(entries) {
      db.transaction(() => {
        for (const [key, value] of entries) {
          try {
            enqueue.bind([new TextEncoder().encode(`${key}:${value.length}`)]).step();
          } finally {
            enqueue.reset(true);
          }
        }
      });
    },
    async feedRead(since, limit) {
      const count = await this.readFrom(since + 1, limit);
      return { count, last: since + count };
    },
    close: async () => {
      for (const statement of [insert, select, range, enqueue, readQ]) statement.finalize();
      db.close();
      pool.pauseVfs(); // releases the pool's access handles, for the next worker and the page
    },
  };
}
