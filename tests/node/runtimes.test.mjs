// The Node build in Deno and Bun, from their npm-shipped binaries: the conformance suite's
// cases on the promise API and the synchronous store, and its crash case with the runtime's
// process killed mid-stream and the store then checked by Node (one directory, any runtime).
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { cases, crashes } from '../conformance/suite.mjs';
import { home } from './fixtures/homes.mjs';
import { repo, scratch } from './helpers.mjs';

const RUNTIMES = {
  deno: { bin: `${repo}node_modules/.bin/deno`, args: ['run', '--allow-all', '--quiet'] },
  bun: { bin: `${repo}node_modules/.bin/bun`, args: ['run'] },
};
const suite = new URL('./fixtures/run-suite.mjs', import.meta.url).pathname;
const victim = new URL('./fixtures/victim.mjs', import.meta.url).pathname;

for (const [name, { bin, args }] of Object.entries(RUNTIMES)) {
  const skip = existsSync(bin) ? false : `${bin} is not installed`;
  test(`${name}: every conformance case, promises and sync`, { skip }, async (t) => {
    const dir = scratch(name);
    const { stdout } = await promisify(execFile)(bin, [...args, suite, dir], { maxBuffer: 1 << 24 });
    const results = JSON.parse(stdout.trim().split('\n').at(-1));
    for (const mode of ['async', 'sync']) {
      assert.equal(results[mode].length, cases.length);
      for (const r of results[mode]) await t.test(`${mode}: ${r.name}`, () => assert.ok(r.ok, r.error));
    }
  });
  test(`${name}: killed mid-stream, the store opens in Node with every acknowledged write`, { skip }, async () => {
    const dir = join(scratch(`${name}-crash`), 'store');
    for (const [index, c] of crashes.entries()) {
      const child = spawn(bin, [...args, victim, String(index), dir, 'async'], { stdio: ['ignore', 'pipe', 'inherit'] });
      const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve(signal ?? code)));
      for await (const line of createInterface({ input: child.stdout })) if (line === 'ready') child.kill('SIGKILL');
      assert.equal(await exited, 'SIGKILL');
      // Checked by Node: the runtimes share the directory format and the lock.
      await c.check({ ...home('async', () => dir), direct: true }, dir);
    }
  });
}
