// Shared by the Node tests: the built package's entry points, scratch directories, and the
// deterministic bytes the Rust tests use (src/testing/mod.rs `pattern`).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { fileURLToPath } from 'node:url';

export const repo = fileURLToPath(new URL('../../', import.meta.url));
/** The built package (make pkg). */
export const pkg = `${repo}pkg/`;

/**
 * A new empty directory under the system's temp directory, removed after the file's tests.
 * @param {string} label
 */
export function scratch(label) {
  const dir = mkdtempSync(join(tmpdir(), `walnut-node-${label}-`));
  after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * Deterministic bytes (xorshift64), byte for byte what the Rust tests' `pattern(len, seed)` makes.
 * @param {number} len
 * @param {number | bigint} seed
 */
export function pattern(len, seed) {
  const mask = (1n << 64n) - 1n;
  let x = ((BigInt(seed) * 0x9e3779b97f4a7c15n) & mask) | 1n;
  const out = new Uint8Array(len);
  for (let i = 0; i < len; i++) {
    x ^= (x << 13n) & mask;
    x ^= x >> 7n;
    x ^= (x << 17n) & mask;
    out[i] = Number(x & 0xffn);
  }
  return out;
}
