// Crash tests that really crash, in Node (sled's test_crash_recovery): a child process writes
// strict puts and large streamed values to a store directory and prints each acknowledged
// write; the parent kills it with SIGKILL after a varying number of them, reopens the store
// (taking over the dead child's lock) and checks that every acknowledged value is there whole
// and that no value is partial.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { pkg, scratch } from './helpers.mjs';
import { value } from './fixtures/values.mjs';

const { openSync } = await import(`${pkg}node.js`);
const writer = new URL('./fixtures/writer.mjs', import.meta.url).pathname;

/**
 * Runs the writer until `count` acks, kills it, and returns every ack it printed.
 * @returns {Promise<number[]>}
 */
async function writeThenKill(dir, mode, count) {
  const child = spawn(process.execPath, [writer, dir, mode], { stdio: ['ignore', 'pipe', 'inherit'] });
  const acked = [];
  const exited = new Promise((resolve) => child.on('exit', resolve));
  for await (const line of createInterface({ input: child.stdout })) {
    if (line.startsWith('ack ')) acked.push(Number(line.slice(4)));
    if (acked.length === count) child.kill('SIGKILL');
  }
  await exited;
  assert.ok(acked.length >= count, `the writer stopped after ${acked.length} acks`);
  return acked;
}

/** Checks the store holds every acked value whole and only whole values. */
function check(dir, acked, round) {
  const db = openSync(dir);
  try {
    for (const i of acked) {
      const got = db.get(`k${String(i).padStart(7, '0')}`);
      assert.ok(got, `round ${round}: acknowledged write ${i} is lost`);
      const want = i >= 2_000_000 && got.length >= 300_000 ? value(i, 300_000) : value(i);
      assert.deepEqual(got, want, `round ${round}: value ${i} is not the one written`);
    }
    for (const { key, value: got } of db.entries()) {
      const i = Number(key.slice(1));
      const want = got.length === 300_000 ? value(i, 300_000) : value(i);
      assert.deepEqual(got, want, `round ${round}: ${key} holds a partial or wrong value`);
    }
    return db.stats();
  } finally {
    db.close();
  }
}

for (const mode of ['async', 'sync']) {
  test(`a ${mode} writer killed with SIGKILL loses nothing acknowledged`, async () => {
    const dir = scratch(`kill-${mode}`);
    const acked = [];
    const rounds = mode === 'async' ? [5, 40, 1, 90, 17] : [3, 60, 1, 25];
    for (const [round, count] of rounds.entries()) {
      acked.push(...(await writeThenKill(dir, mode, count)));
      const stats = check(dir, acked, round);
      assert.ok(stats.keys >= new Set(acked).size);
    }
    console.log(`crash points: SIGKILL of a Node ${mode} writer: ${rounds.length} (${acked.length} acknowledged writes checked)`);
  });
}
