/**
 * A store's files in a Cloudflare Durable Object's SQLite storage (the `VolumeHost` of
 * docs/HOSTS.md): each file is fixed-size pages in `_walnut_pages` rows (64 KiB by default,
 * always far under the 2 MB a row may hold, checked here because local workerd does not
 * enforce it). A file's last page is stored only up to the file's end, so the pages say the
 * file's size and a small commit rewrites one row (its tail page); a file without pages is
 * empty, and free. Writes land in dirty pages in memory; a
 * flush writes the dirty pages and the changed sizes back in one `transactionSync`, and so does
 * the write that takes the dirty pages past 8 MiB (memory stays bounded during a large upload;
 * what it writes early is not acknowledged until a flush, as a file's unflushed bytes).
 *
 * Durability: the platform confirms the transaction asynchronously and holds every outgoing
 * message until it is confirmed (the output gate): nothing that depends on a flushed write
 * leaves the object before it is durable. walnut never uses `allowUnconfirmed`.
 *
 * @module walnut-kv/volume-do
 */

import { checkInteger, invalid, WalnutLockedError } from './common.js';

/** Default page size, bytes. */
export const PAGE_SIZE = 64 * 1024;
/** The largest page size: a row (its BLOB) must stay under the 2 MB limit. */
export const MAX_PAGE_SIZE = 1024 * 1024;
/** Dirty bytes past which a write writes pages back before any flush. */
const WRITEBACK_BYTES = 8 * 1024 * 1024;
/** Clean pages kept for reads (recovery reads the log in small pieces). */
const CACHE_PAGES = 64;
/** Version of this table layout, kept per store in `_walnut_stores`. */
const LAYOUT = 1;

const SCHEMA = [
  'CREATE TABLE IF NOT EXISTS _walnut_stores (name TEXT PRIMARY KEY, page_size INTEGER NOT NULL, layout INTEGER NOT NULL)',
  'CREATE TABLE IF NOT EXISTS _walnut_pages (store TEXT NOT NULL, file INTEGER NOT NULL, idx INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (store, file, idx)) WITHOUT ROWID',
];

/** Stores open in each object's storage, by name: a second open of one is refused. */
const open = new WeakMap();

/**
 * The files of one store in a Durable Object's storage.
 */
export class DurableObjectVolume {
  #storage;
  #sql;
  #name;
  #pageSize;
  /** @type {Map<number, number>} file id -> size in bytes (every file, free ones at 0) */
  #sizes = new Map();
  /**
   * Files handed out by create() and not released since. An empty file is free unless it is
   * here: one just created and not yet written, or one whose release threw (the store still
   * holds it, and releases it again).
   */
  #inUse = new Set();
  /** @type {Map<number, Map<number, Uint8Array>>} file -> page index -> page (pageSize bytes) */
  #dirty = new Map();
  #dirtyBytes = 0;
  /** @type {Map<number, number>} file -> the smallest size it had since the last write-back */
  #cut = new Map();
  /** @type {Map<string, Uint8Array>} `${file}:${idx}` -> a clean page, least recently used first */
  #cache = new Map();
  #closed = false;
  /** Counters, for the benchmarks: rows written and transactions run. */
  stats = { rowsWritten: 0, transactions: 0 };

  /**
   * Opens the store `name` in `storage` (a Durable Object's `ctx.storage`, SQLite-backed),
   * creating its tables on first use.
   * @param {DurableObjectStorage} storage
   * @param {{ name?: string, pageSize?: number }} [options] `pageSize` (bytes, 4096 to 1 MiB)
   *   applies to a new store; an existing one keeps the page size it was created with
   */
  static open(storage, { name = 'default', pageSize } = {}) {
    if (!storage?.sql || typeof storage.transactionSync !== 'function') {
      throw invalid('storage must be a SQLite-backed Durable Object\'s ctx.storage (enableSql / new_sqlite_classes)');
    }
    if (typeof name !== 'string' || name === '' || name.length > 200) {
      throw invalid('options.name must be a string of 1 to 200 characters');
    }
    if (pageSize !== undefined) checkInteger(pageSize, 'options.pageSize', 4096, MAX_PAGE_SIZE);
    let names = open.get(storage);
    if (!names) open.set(storage, (names = new Set()));
    if (names.has(name)) throw new WalnutLockedError(`store ${name} is already open in this Durable Object; close it first`);
    const volume = new DurableObjectVolume(storage, name);
    volume.#load(pageSize ?? PAGE_SIZE);
    names.add(name);
    return volume;
  }

  /** @param {DurableObjectStorage} storage @param {string} name */
  constructor(storage, name) {
    this.#storage = storage;
    this.#sql = storage.sql;
    this.#name = name;
  }

  #load(pageSize) {
    this.#storage.transactionSync(() => {
      for (const statement of SCHEMA) this.#sql.exec(statement);
      const [row] = this.#sql.exec('SELECT page_size, layout FROM _walnut_stores WHERE name = ?', this.#name).toArray();
      if (row) {
        if (row.layout !== LAYOUT) throw new Error(`store ${this.#name} has table layout ${row.layout}; this build reads ${LAYOUT}`);
        this.#pageSize = row.page_size;
      } else {
        this.#pageSize = pageSize;
        this.#sql.exec('INSERT INTO _walnut_stores (name, page_size, layout) VALUES (?, ?, ?)', this.#name, pageSize, LAYOUT);
      }
      // Each file's size: its last page's index and that page's length.
      const last = this.#sql.exec(
        `SELECT file, idx, length(data) AS len FROM _walnut_pages WHERE store = ?1
           AND (file, idx) IN (SELECT file, MAX(idx) FROM _walnut_pages WHERE store = ?1 GROUP BY file)`,
        this.#name,
      );
      for (const { file, idx, len } of last) this.#sizes.set(file, idx * this.#pageSize + len);
    });
  }

  /** Page size in force, bytes. */
  get pageSize() {
    return this.#pageSize;
  }

  #size(id) {
    const size = this.#sizes.get(id);
    if (size === undefined) throw new Error(`no file ${id} in store ${this.#name}`);
    return size;
  }

  /** The page `idx` of file `id` as it stands (dirty, cached or stored), or undefined if none. */
  #page(id, idx) {
    const dirty = this.#dirty.get(id)?.get(idx);
    if (dirty) return dirty;
    // A page past a cut not yet written back is gone, whatever the table still holds.
    const cut = this.#cut.get(id);
    if (cut !== undefined && idx >= Math.ceil(cut / this.#pageSize)) return undefined;
    const key = `${id}:${idx}`;
    let page = this.#cache.get(key);
    if (page) {
      this.#cache.delete(key); // most recently used last
    } else {
      const [row] = this.#sql
        .exec('SELECT data FROM _walnut_pages WHERE store = ? AND file = ? AND idx = ?', this.#name, id, idx)
        .toArray();
      if (!row) return undefined;
      page = new Uint8Array(row.data);
    }
    this.#cache.set(key, page);
    if (this.#cache.size > CACHE_PAGES) this.#cache.delete(this.#cache.keys().next().value);
    return page;
  }

  /** A dirty page `idx` of file `id`, pageSize bytes, holding what the page holds now. */
  #dirtyPage(id, idx) {
    let pages = this.#dirty.get(id);
    if (!pages) this.#dirty.set(id, (pages = new Map()));
    let page = pages.get(idx);
    if (!page) {
      page = new Uint8Array(this.#pageSize);
      const stored = this.#page(id, idx);
      if (stored) page.set(stored.subarray(0, this.#pageSize));
      this.#cache.delete(`${id}:${idx}`);
      pages.set(idx, page);
      this.#dirtyBytes += this.#pageSize;
    }
    return page;
  }

  list() {
    return [...this.#sizes].filter(([, size]) => size > 0).map(([id]) => id);
  }

  read(id, offset, into) {
    const size = this.#size(id);
    const end = Math.min(size, offset + into.length);
    let at = offset;
    while (at < end) {
      const idx = Math.floor(at / this.#pageSize);
      const from = at - idx * this.#pageSize;
      const n = Math.min(this.#pageSize - from, end - at);
      const page = this.#page(id, idx);
      const target = into.subarray(at - offset, at - offset + n);
      if (page) {
        const part = page.subarray(from, from + n);
        target.set(part);
        target.fill(0, part.length); // a stored page shorter than the size (zero-extended)
      } else {
        target.fill(0);
      }
      at += n;
    }
    return Math.max(0, end - offset);
  }

  write(id, offset, data) {
    const size = this.#size(id);
    let at = 0;
    while (at < data.length) {
      const pos = offset + at;
      const idx = Math.floor(pos / this.#pageSize);
      const from = pos - idx * this.#pageSize;
      const n = Math.min(this.#pageSize - from, data.length - at);
      this.#dirtyPage(id, idx).set(data.subarray(at, at + n), from);
      at += n;
    }
    // The page holding the new end is dirty: written back, it says the new size.
    if (offset + data.length > size) this.#sizes.set(id, offset + data.length);
    if (this.#dirtyBytes >= WRITEBACK_BYTES) this.#writeBack();
    return data.length;
  }

  size(id) {
    return this.#size(id);
  }

  truncate(id, len) {
    const size = this.#size(id);
    if (len < size) {
      this.#cut.set(id, Math.min(this.#cut.get(id) ?? size, len));
      const keep = Math.ceil(len / this.#pageSize);
      for (const idx of [...(this.#dirty.get(id)?.keys() ?? [])]) {
        if (idx >= keep) {
          this.#dirty.get(id).delete(idx);
          this.#dirtyBytes -= this.#pageSize;
        }
      }
      for (const key of [...this.#cache.keys()]) {
        const [file, idx] = key.split(':').map(Number);
        if (file === id && idx >= Math.floor(len / this.#pageSize)) this.#cache.delete(key);
      }
      const tail = len % this.#pageSize;
      // The cut page keeps zeros past the new end, so that growing again reads zeros.
      if (tail > 0) this.#dirtyPage(id, keep - 1).fill(0, tail);
    } else if (len > size) {
      const tail = size % this.#pageSize;
      if (tail > 0) this.#dirtyPage(id, Math.floor(size / this.#pageSize)).fill(0, tail);
      // The new last page is stored (zeros) so that the pages say the new size.
      this.#dirtyPage(id, Math.floor((len - 1) / this.#pageSize));
    }
    this.#sizes.set(id, len);
  }

  flush() {
    this.#writeBack();
  }

  /** Writes dirty pages and cuts back in one transaction. */
  #writeBack() {
    if (this.#dirty.size === 0 && this.#cut.size === 0) return;
    const name = this.#name;
    let rows = 0;
    this.#storage.transactionSync(() => {
      for (const [id, len] of this.#cut) {
        this.#sql.exec('DELETE FROM _walnut_pages WHERE store = ? AND file = ? AND idx >= ?', name, id, Math.ceil(len / this.#pageSize));
        rows += 1;
      }
      for (const [id, pages] of this.#dirty) {
        const size = this.#sizes.get(id) ?? 0;
        for (const [idx, page] of pages) {
          const used = Math.min(this.#pageSize, size - idx * this.#pageSize);
          if (used <= 0) continue;
          this.#sql.exec(
            'INSERT OR REPLACE INTO _walnut_pages (store, file, idx, data) VALUES (?, ?, ?, ?)',
            name,
            id,
            idx,
            page.slice(0, used).buffer,
          );
          rows += 1;
        }
      }
    });
    this.stats.rowsWritten += rows;
    this.stats.transactions += 1;
    for (const [id, pages] of this.#dirty) {
      for (const [idx, page] of pages) {
        this.#cache.set(`${id}:${idx}`, page);
        if (this.#cache.size > CACHE_PAGES) this.#cache.delete(this.#cache.keys().next().value);
      }
    }
    this.#dirty.clear();
    this.#dirtyBytes = 0;
    this.#cut.clear();
  }

  create() {
    let id = [...this.#sizes].find(([file, size]) => size === 0 && !this.#inUse.has(file))?.[0];
    if (id === undefined) {
      id = this.#sizes.size === 0 ? 0 : Math.max(...this.#sizes.keys()) + 1;
      this.#sizes.set(id, 0); // no rows until it is written: an empty file is free
    }
    this.#inUse.add(id);
    return id;
  }

  release(id) {
    this.#inUse.add(id); // a file listed at open too: held until a release of it returns
    this.truncate(id, 0);
    this.#writeBack(); // if it throws, the file stays in use: the store releases it again
    this.#inUse.delete(id);
  }

  /** The store is closed: unflushed pages are dropped (nothing acknowledged is in them). */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#dirty.clear();
    this.#cache.clear();
    open.get(this.#storage)?.delete(this.#name);
  }
}
