// The engine under the sync store, Node and Durable Objects, on a volume host that keeps only
// what was flushed (fixtures/power-host.mjs): a strict call's answer must survive a power cut
// right after it, also when the call wrote nothing and its answer rests on relaxed writes.
// And a batch's byte values are the caller's bytes at call time.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { PowerCutHost } from './fixtures/power-host.mjs';
import { pkg, scratch } from './helpers.mjs';

const { initSync } = await import(`${pkg}walnut_core.js`);
const { openEngine, syncStore } = await import(`${pkg}engine.js`);
const { asyncStore } = await import(`${pkg}async.js`);
const { open } = await import(`${pkg}node.js`);
initSync({ module: readFileSync(`${pkg}walnut_core_bg.wasm`) });

// No background flush of relaxed writes: only what a strict call flushes is durable.
const engineOn = (host) => openEngine(host, { name: 'p', core: {}, relaxedFlushMs: Infinity });

/** Strict calls that write nothing, each after relaxed writes its answer rests on (`setup`: calls made one after another). */
const noops = [
  {
    name: 'a delete of a key a relaxed delete removed',
    setup: (db) => [() => db.put('k', 'v'), () => db.delete('k', { durability: 'relaxed' })],
    call: (db) => db.delete('k'),
    answer: false,
    state: (db) => db.get('k', { as: 'text' }),
    expected: undefined,
  },
  {
    name: 'a batch under an id a relaxed batch committed',
    setup: (db) => [() => db.batch([{ type: 'put', key: 'a', value: '1' }], { id: 'x', durability: 'relaxed' })],
    call: (db) => db.batch([{ type: 'put', key: 'a', value: '1' }], { id: 'x' }),
    answer: (r) => r.applied === false,
    state: (db) => db.get('a', { as: 'text' }),
    expected: '1',
  },
  {
    name: 'a transaction under an id a relaxed transaction committed',
    setup: (db, sync) => [() => db.transaction(sync ? (tx) => tx.put('t', '1') : async (tx) => tx.put('t', '1'), { id: 'y', durability: 'relaxed' })],
    call: (db, sync) => db.transaction(sync ? (tx) => tx.put('t', '2') : async (tx) => tx.put('t', '2'), { id: 'y' }),
    answer: (r) => r.applied === false,
    state: (db) => db.get('t', { as: 'text' }),
    expected: '1',
  },
  {
    name: 'deleteUpTo at a mark a relaxed deleteUpTo set',
    setup: (db) => {
      const q = db.table('q');
      return [() => q.append('a'), () => q.append('b'), () => q.deleteUpTo(2, { durability: 'relaxed' })];
    },
    call: (db) => db.table('q').deleteUpTo(2),
    state: async (db) => (await db.table('q').read({ as: 'text' })).map((e) => e.value),
    expected: [],
  },
  {
    name: 'a deleteMany of keys a relaxed delete removed',
    setup: (db) => [() => db.put('k', 'v'), () => db.delete('k', { durability: 'relaxed' })],
    call: (db) => db.deleteMany(['k']),
    answer: 0,
    state: (db) => db.get('k', { as: 'text' }),
    expected: undefined,
  },
  {
    name: "a table's clear() after relaxed deletes emptied it",
    setup: (db) => [() => db.table('t').put('k', 'v'), () => db.table('t').delete('k', { durability: 'relaxed' })],
    call: (db) => db.table('t').clear(),
    answer: 0,
    state: (db) => db.table('t').keys(),
    expected: [],
  },
  {
    name: 'a clear() of a store relaxed deletes emptied',
    setup: (db) => [() => db.put('c', 'v'), () => db.delete('c', { durability: 'relaxed' })],
    call: (db) => db.clear(),
    answer: 0,
    state: (db) => db.keys(),
    expected: [],
  },
];

for (const mode of ['sync', 'async']) {
  const storeOn = (host) => (mode === 'sync' ? syncStore : asyncStore)(engineOn(host), 'strict');
  for (const c of noops) {
    test(`${mode}: a strict call that writes nothing survives a power cut: ${c.name}`, async () => {
      const host = new PowerCutHost();
      const db = storeOn(host);
      for (const step of c.setup(db, mode === 'sync')) await step(); // one after another
      const answer = await c.call(db, mode === 'sync');
      if (typeof c.answer === 'function') assert.ok(c.answer(answer), `answered ${JSON.stringify(answer)}`);
      else if ('answer' in c) assert.deepEqual(answer, c.answer);
      const after = storeOn(host.powerCut());
      assert.deepEqual(await c.state(after), c.expected, 'what the strict call answered is what a power cut leaves');
    });
  }
}

test("a batch's byte values are read at call time, also after a streamed value", async () => {
  const db = await open(scratch('batch-bytes'));
  try {
    async function* streamed() {
      yield new Uint8Array([1, 2, 3]);
    }
    const reused = new TextEncoder().encode('AAAA');
    const first = db.batch([
      { type: 'put', key: 's', value: streamed() },
      { type: 'put', key: 'reused', value: reused },
    ]);
    reused.fill(0x42); // the caller reuses its buffer once the call returned
    await first;
    const moved = new TextEncoder().encode('CCCC');
    const second = db.putMany([
      ['b', new Blob(['x'])],
      ['moved', moved],
    ]);
    structuredClone(moved.buffer, { transfer: [moved.buffer] }); // e.g. posted to a worker
    await second;
    assert.equal(await db.get('reused', { as: 'text' }), 'AAAA');
    assert.equal(await db.get('moved', { as: 'text' }), 'CCCC');
  } finally {
    await db.close();
  }
});
