// The conformance suite (tests/conformance/suite.mjs) in Node: every case against the promise
// API and the synchronous store; the crash cases in a child process killed with SIGKILL.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { cases, crashes } from '../conformance/suite.mjs';
import { home } from './fixtures/homes.mjs';
import { scratch } from './helpers.mjs';

const root = scratch('conformance');
const dirOf = (name) => join(root, name);
const victim = new URL('./fixtures/victim.mjs', import.meta.url).pathname;

for (const mode of ['async', 'sync']) {
  for (const c of cases) test(`${mode}: ${c.name}`, () => c.run(home(mode, dirOf)));
  for (const [index, c] of crashes.entries()) {
    test(`${mode}: ${c.name} (process killed)`, async () => {
      const dir = dirOf(`${c.store}-${mode}`);
      const child = spawn(process.execPath, [victim, String(index), dir, mode], { stdio: ['ignore', 'pipe', 'inherit'] });
      const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve(signal ?? code)));
      for await (const line of createInterface({ input: child.stdout })) {
        if (line === 'ready') child.kill('SIGKILL');
      }
      assert.equal(await exited, 'SIGKILL', 'the writer got to its crash point');
      await c.check(home(mode, () => dir), dir);
    });
  }
}
