// A store directory is the same bytes whichever host writes it: the native DirVolume, Node's
// volume (www/volume-node.js) and OPFS share the format and the file names.
import assert from 'node:assert/strict';
import { cpSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { pattern, pkg, repo, scratch } from './helpers.mjs';

const { openSync } = await import(`${pkg}node.js`);
const { initSync, WalnutStore: Core } = await import(`${pkg}walnut_core.js`);
const { NodeVolume } = await import(`${pkg}volume-node.js`);

// The store fixture of the newest format version (tests/golden.rs writes one per version).
const newest = readdirSync(`${repo}tests/fixtures`)
  .filter((d) => /^v\d+$/.test(d))
  .map((d) => Number(d.slice(1)))
  .sort((a, b) => b - a)[0];
const fixture = `${repo}tests/fixtures/v${newest}/store`;
const enc = new TextEncoder();

/** The state tests/golden.rs `store()` leaves: every key and value. */
function goldenState() {
  const model = new Map();
  for (let r = 0; r < 3; r++) {
    for (let i = 0; i < 10; i++) model.set(`key-${i}`, pattern(500 + i * 10, r * 100 + i));
  }
  model.delete('key-3');
  model.set('streamed', pattern(3000, 77));
  model.set('after', enc.encode('checkpoint'));
  model.delete('key-4');
  return [...model].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

test('Node opens the store fixture the native build wrote, and sees every value', () => {
  const dir = scratch('fixture');
  cpSync(fixture, dir, { recursive: true });
  const db = openSync(dir);
  assert.equal(db.recovery.checkpointSeq, 1, 'recovery started from the fixture checkpoint');
  const got = db.entries({ values: true }).map(({ key, value }) => [new TextDecoder().decode(key), value]);
  assert.deepEqual(got, goldenState());
  db.close();
});

test('Node writes byte for byte the files the native build writes', () => {
  // The workload of tests/golden.rs `store()`, through the core on Node's volume, with the
  // same options (below the public API's minimum chunk size, so the core is called directly).
  const wasm = readFileSync(`${pkg}walnut_core_bg.wasm`);
  initSync({ module: wasm });
  const dir = scratch('write');
  const core = Core.openHost(NodeVolume.open(dir), {
    chunkSize: 1024,
    segmentSize: 8192,
    checkpointBytes: 0,
    compactionRatio: 1.0,
  });
  const commit = (ticket) => assert.deepEqual(Array.from(core.commitGroup(Float64Array.of(ticket))), [undefined]);
  for (let r = 0; r < 3; r++) {
    for (let i = 0; i < 10; i++) commit(core.put(enc.encode(`key-${i}`), false, pattern(500 + i * 10, r * 100 + i), true));
  }
  commit(core.delete(enc.encode('key-3'), true).ticket);
  const txn = core.begin();
  core.txnPut(txn, enc.encode('streamed'), false);
  core.txnChunk(txn, pattern(3000, 77));
  commit(core.commit(txn, true));
  core.checkpoint();
  commit(core.put(enc.encode('after'), false, enc.encode('checkpoint'), true));
  commit(core.delete(enc.encode('key-4'), true).ticket);
  // Dropped without close(), as the golden store is (close would write a checkpoint).
  core.free();
  const files = (d) =>
    Object.fromEntries(
      readdirSync(d)
        .filter((n) => n.endsWith('.wal') && readFileSync(join(d, n)).length > 0)
        .map((n) => [Number(n.slice(0, -4)), readFileSync(join(d, n)).toString('hex')]),
    );
  const written = files(dir);
  const committed = files(fixture);
  assert.deepEqual(Object.keys(written), Object.keys(committed), 'the same files hold data');
  for (const id of Object.keys(committed)) assert.equal(written[id], committed[id], `file ${id} differs`);
});
