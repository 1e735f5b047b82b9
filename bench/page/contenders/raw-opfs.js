// The physical floor: the same bytes written and read through a FileSystemSyncAccessHandle with
// nothing on top. Records go one after another into one file (key length u16, value length u32,
// both little-endian, key, value), an in-memory Map finds them, and open() rebuilds that Map by
// reading the whole file. No checksums, no transactions. A put is durable once flushed: one
// flush per put, one per batch. A Blob is written part by part as its stream yields them.
import { MiB } from '../plan.js';

const HEADER = 6;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** @param {string} name */
export async function open(name) {
  const root = await navigator.storage.getDirectory();
  const handle = await (await root.getFileHandle(`raw-${name}.log`, { create: true })).createSyncAccessHandle();
  /** key -> [offset of the value, its length] */
  const index = new Map();
  let end = load(handle, index);

  const write = (bytes, at) => {
    const written = handle.write(bytes, { at });
    if (written !== bytes.length) throw new Error(`wrote ${written} bytes of ${bytes.length}`);
  };
  const read = (bytes, at) => {
    const got = handle.read(bytes, { at });
    if (got !== bytes.length) throw new Error(`read ${got} bytes of ${bytes.length}`);
  };

  /**
   * Reserves a record of `size` value bytes at the end of the file, so that appends made while
   * a Blob streams in go after it.
   * @returns {{ head: Uint8Array, at: number, valueAt: number }} head = header and key, with
   *   room for the value when `inline`
   */
  const place = (key, size, inline) => {
    const keyBytes = encoder.encode(key);
    const head = new Uint8Array(HEADER + keyBytes.length + (inline ? size : 0));
    const view = new DataView(head.buffer);
    view.setUint16(0, keyBytes.length, true);
    view.setUint32(2, size, true);
    head.set(keyBytes, HEADER);
    const at = end;
    end += HEADER + keyBytes.length + size;
    return { head, at, valueAt: at + HEADER + keyBytes.length };
  };

  /** Writes a record (not flushed). */
  const append = async (key, value) => {
    if (value instanceof Blob) {
      const { head, at, valueAt } = place(key, value.size, false);
      write(head, at);
      let offset = valueAt;
      for await (const part of value.stream()) {
        write(part, offset);
        offset += part.length;
      }
      index.set(key, [valueAt, value.size]);
    } else {
      const { head, at, valueAt } = place(key, value.length, true);
      head.set(value, valueAt - at);
      write(head, at);
      index.set(key, [valueAt, value.length]);
    }
  };

  return {
    put: async (key, value) => {
      await append(key, value);
      handle.flush();
    },
    batch: async (entries) => {
      for (const [key, value] of entries) await append(key, value);
      handle.flush();
    },
    get: async (key) => {
      const [at, length] = index.get(key);
      const value = new Uint8Array(length);
      read(value, at);
      return value;
    },
    readLarge: async (key) => {
      const [at, length] = index.get(key);
      const piece = new Uint8Array(MiB);
      for (let offset = 0; offset < length; offset += MiB) {
        read(piece.subarray(0, Math.min(MiB, length - offset)), at + offset);
      }
      return length;
    },
    // Its export: the one file streamed out in 1 MiB pieces, each handed on (as a stream would).
    exportAll: async () => {
      const size = handle.getSize();
      let bytes = 0;
      for (let offset = 0; offset < size; offset += MiB) {
        const piece = new Uint8Array(Math.min(MiB, size - offset));
        read(piece, offset);
        bytes += piece.length;
      }
      return bytes;
    },
    scan: async (prefix) => [...index.keys()].filter((key) => key.startsWith(prefix)).sort().length,
    close: async () => {
      handle.flush();
      handle.close();
    },
  };
}

/**
 * Reads the whole file and indexes its records; a torn last record is ignored.
 * @param {FileSystemSyncAccessHandle} handle
 * @param {Map<string, [number, number]>} index
 * @returns {number} where the next record goes
 */
function load(handle, index) {
  const bytes = new Uint8Array(handle.getSize());
  handle.read(bytes, { at: 0 });
  const view = new DataView(bytes.buffer);
  let at = 0;
  while (at + HEADER <= bytes.length) {
    const valueAt = at + HEADER + view.getUint16(at, true);
    const valueEnd = valueAt + view.getUint32(at + 2, true);
    if (valueEnd > bytes.length) break;
    index.set(decoder.decode(bytes.subarray(at + HEADER, valueAt)), [valueAt, valueEnd - valueAt]);
    at = valueEnd;
  }
  return at;
}
