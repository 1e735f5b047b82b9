/**
 * A store's files in a directory, for Node (the `VolumeHost` of docs/HOSTS.md): the same
 * `NNNNNNNN.wal` files as on OPFS and the native `DirVolume`, so a store directory moves
 * between them byte for byte. Positioned reads and writes (`fs.readSync`/`fs.writeSync` with a
 * position; never append mode, where Linux ignores the position), `fdatasync` on flush, and a
 * directory fsync after a file is created.
 *
 * The directory is locked by a `LOCK` file naming the holder (pid, process start time, host):
 * Node has no `flock` (nodejs/node#54446). A lock whose holder is gone (killed, crashed) is
 * taken over; one held by a live process, or by another host, fails with WalnutLockedError.
 *
 * @module walnut-kv/volume-node
 */

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { invalid, WalnutIoError, WalnutLockedError } from './common.js';

/** The lock file, and the first line of its contents. */
export const LOCK_FILE = 'LOCK';
const LOCK_MAGIC = 'walnut-lock 1';

/**
 * The file id a name stands for: `NNNNNNNN.wal` (eight digits), or `<n>.wal` as the native
 * DirVolume of version 0.1 named files (not `007.wal`: a name and its id map to each other).
 * @param {string} name
 */
function fileId(name) {
  const m = /^(\d+)\.wal$/.exec(name);
  if (!m) return undefined;
  const id = Number(m[1]);
  return id <= 0xffffffff && (m[1].length === 8 || String(id) === m[1]) ? id : undefined;
}

/** Directories this process holds, by real path (a second open here is refused at once). */
const held = new Set();

/**
 * This process's start time in clock ticks since boot (Linux), or '' elsewhere: with the pid,
 * it names a process uniquely, so a reused pid is not mistaken for the lock's holder.
 * @param {number} pid
 * @returns {string | undefined} undefined if there is no such process (Linux)
 */
function startTime(pid) {
  if (process.platform !== 'linux') return '';
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 22, counted after the command name (which may hold spaces) closes at the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '';
  } catch {
    return undefined;
  }
}

/**
 * Whether the process a lock names still runs.
 * @param {{ pid: number, start: string, host: string }} holder
 */
function alive(holder) {
  if (holder.host !== os.hostname()) return true; // cannot tell: another machine's process
  // This process checks its own directories before locking: a lock naming it is a dead
  // process's whose pid came round again.
  if (holder.pid === process.pid) return false;
  if (process.platform === 'linux') {
    const start = startTime(holder.pid);
    return start !== undefined && (holder.start === '' || start === holder.start);
  }
  try {
    process.kill(holder.pid, 0);
    return true;
  } catch (error) {
    return error.code === 'EPERM';
  }
}

/** @param {string} text */
function parseLock(text) {
  const lines = text.split('\n');
  if (lines[0] !== LOCK_MAGIC) return undefined;
  const fields = Object.fromEntries(lines.slice(1).map((line) => [line.split(' ', 1)[0], line.slice(line.indexOf(' ') + 1)]));
  const pid = Number(fields.pid);
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  return { pid, start: fields.start ?? '', host: fields.host ?? '' };
}

/** Whether `file` was modified less than `ms` ago (false if it is gone). */
function youngerThan(file, ms) {
  try {
    return Date.now() - fs.statSync(file).mtimeMs < ms;
  } catch {
    return false;
  }
}

function sleepSync(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function fsyncDir(dir) {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Takes the directory's lock, retrying a live holder for `timeoutMs`.
 * @param {string} dir
 * @param {number} timeoutMs
 */
function lock(dir, timeoutMs) {
  const file = path.join(dir, LOCK_FILE);
  const me = `${LOCK_MAGIC}\npid ${process.pid}\nstart ${startTime(process.pid) ?? ''}\nhost ${os.hostname()}\n`;
  const deadline = Date.now() + timeoutMs;
  for (let backoff = 10; ; backoff = Math.min(backoff * 2, 250)) {
    let fd;
    try {
      fd = fs.openSync(file, 'wx');
    } catch (error) {
      if (error.code !== 'EEXIST') throw error;
    }
    if (fd !== undefined) {
      try {
        fs.writeSync(fd, me);
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      return;
    }
    let text = '';
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (error) {
      if (error.code === 'ENOENT') continue; // released meanwhile
      throw error;
    }
    const holder = parseLock(text);
    // A lock file being written (empty or partial for an instant) counts as held, unless it
    // has been so for seconds: its writer died between creating and writing it.
    const live = holder === undefined ? youngerThan(file, 5000) : alive(holder);
    if (!live) {
      // The holder is gone (killed, crashed): its lock is stale. It is removed only if it still
      // reads the same, so that a lock another opener took meanwhile is left alone. (Two
      // openers that read the same stale lock within microseconds of each other can still both
      // remove it and both take it: Node has no atomic compare-and-delete of a file.)
      let again;
      try {
        again = fs.readFileSync(file, 'utf8');
      } catch {
        continue;
      }
      if (again === text) fs.rmSync(file, { force: true });
      continue;
    }
    if (Date.now() >= deadline) {
      const who = holder
        ? `process ${holder.pid}${holder.host === os.hostname() ? '' : ` on host ${holder.host}`}`
        : 'another process';
      throw new WalnutLockedError(
        `store directory ${dir} is open in ${who}; gave up after ${timeoutMs} ms (if that process is gone for good, delete ${file})`,
      );
    }
    sleepSync(Math.min(backoff, Math.max(1, deadline - Date.now())));
  }
}

/**
 * Wraps an fs call so that its failure names the store's operation. ENOSPC/EDQUOT keep their
 * `code`, which the core maps to WalnutQuotaExceededError.
 */
function fsError(op, file, error) {
  const wrapped = new Error(`${op} ${file}: ${error.message}`);
  wrapped.code = error.code;
  return wrapped;
}

/**
 * The files of one store directory, open until close().
 */
export class NodeVolume {
  /** @type {Map<number, number>} file id (its number) -> fd, every file with data */
  #files = new Map();
  /** @type {Array<[number, number]>} empty files kept for reuse: [id, fd] */
  #free = [];
  #next = 0;
  #dir;
  #closed = false;

  /**
   * Opens (creating if needed) the store directory `dir` and takes its lock.
   * @param {string} dir
   * @param {{ lockTimeout?: number }} [options] ms to wait for a live holder (default 0)
   */
  static open(dir, { lockTimeout = 0 } = {}) {
    if (typeof dir !== 'string' || dir === '') throw invalid('directory must be a non-empty path string');
    fs.mkdirSync(dir, { recursive: true });
    const real = fs.realpathSync(dir);
    if (held.has(real)) {
      throw new WalnutLockedError(`store directory ${dir} is already open in this process; close it first`);
    }
    lock(real, lockTimeout);
    held.add(real);
    const volume = new NodeVolume(real);
    try {
      volume.#load();
    } catch (error) {
      volume.close();
      throw error instanceof WalnutLockedError ? error : new WalnutIoError(`open ${dir}: ${error.message}`);
    }
    return volume;
  }

  /** @param {string} dir */
  constructor(dir) {
    this.#dir = dir;
  }

  /** The directory's real path. */
  get directory() {
    return this.#dir;
  }

  #load() {
    const names = new Map();
    for (const name of fs.readdirSync(this.#dir).sort()) {
      const id = fileId(name);
      if (id === undefined) continue;
      if (names.has(id)) {
        throw new Error(`${names.get(id)} and ${name} both name file ${id}; remove the empty one`);
      }
      names.set(id, name);
    }
    for (const [id, name] of names) {
      const fd = fs.openSync(path.join(this.#dir, name), 'r+');
      this.#next = Math.max(this.#next, id + 1);
      if (fs.fstatSync(fd).size === 0) this.#free.push([id, fd]);
      else this.#files.set(id, fd);
    }
  }

  #fd(id) {
    const fd = this.#files.get(id);
    if (fd === undefined) throw new Error(`no file ${id} in ${this.#dir}`);
    return fd;
  }

  #name(id) {
    return path.join(this.#dir, `${String(id).padStart(8, '0')}.wal`);
  }

  list() {
    return [...this.#files.keys()];
  }

  read(id, offset, into) {
    const fd = this.#fd(id);
    let done = 0;
    while (done < into.length) {
      const n = fs.readSync(fd, into, done, into.length - done, offset + done);
      if (n === 0) break;
      done += n;
    }
    return done;
  }

  write(id, offset, data) {
    const fd = this.#fd(id);
    try {
      let done = 0;
      while (done < data.length) done += fs.writeSync(fd, data, done, data.length - done, offset + done);
      return done;
    } catch (error) {
      throw fsError('write', this.#name(id), error);
    }
  }

  size(id) {
    return fs.fstatSync(this.#fd(id)).size;
  }

  truncate(id, len) {
    try {
      fs.ftruncateSync(this.#fd(id), len);
    } catch (error) {
      throw fsError('truncate', this.#name(id), error);
    }
  }

  flush(id) {
    try {
      fs.fdatasyncSync(this.#fd(id));
    } catch (error) {
      throw fsError('flush', this.#name(id), error);
    }
  }

  create() {
    let entry = this.#free.pop();
    if (!entry) {
      const id = this.#next++;
      const fd = fs.openSync(this.#name(id), 'wx+');
      // The new name must survive a crash as the records written into it do.
      fsyncDir(this.#dir);
      entry = [id, fd];
    }
    this.#files.set(entry[0], entry[1]);
    return entry[0];
  }

  release(id) {
    const fd = this.#fd(id);
    fs.ftruncateSync(fd, 0);
    fs.fdatasyncSync(fd);
    this.#files.delete(id);
    this.#free.push([id, fd]);
  }

  /** Closes every file and releases the lock. Idempotent. */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    for (const fd of this.#files.values()) fs.closeSync(fd);
    for (const [, fd] of this.#free) fs.closeSync(fd);
    this.#files.clear();
    this.#free = [];
    fs.rmSync(path.join(this.#dir, LOCK_FILE), { force: true });
    held.delete(this.#dir);
  }
}
