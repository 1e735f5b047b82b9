// Export and import in Node (issue 15): a store's export restores into a new directory with
// every table, value, queue entry, mark and commit id; a cut or damaged export is refused
// naming the offset, and creates nothing.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { importInto, open } from '../../pkg/node.js';

let dir;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'walnut-node-export-'));
});
after(() => rm(dir, { recursive: true, force: true }));

async function bytesOf(stream) {
  const parts = [];
  for await (const p of stream) parts.push(p);
  return Buffer.concat(parts);
}

async function contents(db) {
  const out = {};
  for (const e of await db.entries({ values: true, as: 'bytes' })) out[String(e.key)] = Buffer.from(e.value).toString('hex');
  const q = db.table('q');
  return {
    keys: out,
    queue: (await q.read({ as: 'text' })).map((x) => [x.seq, x.value]),
    tables: await db.tables(),
    changes: await q.changes(),
  };
}

test('an export restores into a new directory whole, and a cut one is refused naming the offset', async () => {
  const { want, file } = await sourceExport('src');

  const restored = join(dir, 'restored');
  const r = await importInto(restored, file);
  assert.equal(r.bytes, file.length);
  const db = await open(restored);
  assert.deepEqual(await contents(db), want);
  assert.equal((await db.transaction(async () => 'ran', { id: 'payment-1' })).applied, false, 'ids travel');
  assert.equal(await db.table('q').append('next'), 8, 'numbers go on');
  await db.close();

  for (const cut of [10, 100, Math.floor(file.length / 2), file.length - 1]) {
    const target = join(dir, `cut-${cut}`);
    await assert.rejects(importInto(target, file.subarray(0, cut)), (error) => {
      assert.equal(error.name, 'WalnutCorruptionError', `${cut}: ${error.message}`);
      assert.match(error.message, /offset|ends early|header/, `${cut}`);
      return true;
    });
    assert.equal(existsSync(target), false, `a refused import at ${cut} creates nothing`);
  }
  await assert.rejects(importInto(restored, file), { name: 'WalnutInvalidArgumentError' }, 'not into a store that exists');
});

test('a store opened where an import is going while its source streams in is not replaced: the import fails, its writes stay', async () => {
  const { file } = await sourceExport('src-race');
  const target = join(dir, 'raced');
  // The export in 4 KiB pieces, each after a turn of the event loop (as a file or a network
  // stream delivers them): the target is empty when the import starts, not when it ends.
  async function* pieces() {
    for (let at = 0; at < file.length; at += 4096) {
      await new Promise((resolve) => setImmediate(resolve));
      yield file.subarray(at, at + 4096);
    }
  }
  const importing = importInto(target, pieces());
  await new Promise((resolve) => setImmediate(resolve));
  const db = await open(target);
  await db.put('mine', 'acknowledged');
  await assert.rejects(importing, (error) => {
    assert.equal(error.name, 'WalnutInvalidArgumentError', error.message);
    assert.match(error.message, /not empty/);
    return true;
  });
  assert.equal(await db.get('mine', { as: 'text' }), 'acknowledged');
  await db.close();
  const reopened = await open(target);
  assert.equal(await reopened.get('mine', { as: 'text' }), 'acknowledged', 'after a reopen');
  assert.deepEqual(await reopened.keys(), ['mine'], 'nothing of the import in it');
  await reopened.close();
  assert.deepEqual(
    (await readdir(dir)).filter((n) => n.startsWith('raced.import-')),
    [],
    'the import left no directory of its own behind',
  );
});

/** A source store with every kind of content; its contents and its export. */
async function sourceExport(name) {
  const src = await open(join(dir, name), { chunkSize: 4096 });
  await src.put('a', 'one');
  await src.put('big', new Uint8Array(300_000).map((_, i) => i * 13));
  const q = src.table('q');
  for (let i = 0; i < 6; i++) await q.append(`e${i}`);
  await q.put('state', 'kept');
  await q.markFlushed(4);
  await q.deleteUpTo(2);
  await src.transaction(async (tx) => tx.put('paid', '1'), { id: 'payment-1' });
  const want = await contents(src);
  const file = await bytesOf(src.export());
  await src.close();
  return { want, file };
}

test('db.import() fills an open, empty store from a stream, bytes or a Blob, and refuses what it must', async () => {
  const { want, file } = await sourceExport('src-import');
  // From a stream (the export of another store), with progress.
  const db = await open(join(dir, 'into-open'), { chunkSize: 4096 });
  const seen = [];
  const blob = new Blob([file]);
  const r = await db.import(blob.stream(), { onProgress: (n) => seen.push(n) });
  assert.deepEqual(r, { values: (await db.stats()).keys, bytes: file.length });
  assert.equal(seen.at(-1), file.length);
  assert.deepEqual(await contents(db), want);
  assert.equal((await db.transaction(async () => 'ran', { id: 'payment-1' })).applied, false, 'ids travel');
  assert.equal(await db.table('q').append('next'), 8, 'numbers go on');
  // Not into a store that holds something: nothing changes.
  await assert.rejects(db.import(file), (e) => e.name === 'WalnutInvalidArgumentError' && /store/.test(e.message));
  assert.equal(await db.table('q').append('again'), 9);
  await db.close();
  const reopened = await open(join(dir, 'into-open'));
  assert.equal(await reopened.get('a', { as: 'text' }), 'one');
  await reopened.close();

  // A cut or damaged file: refused naming the offset, the store still empty and usable.
  const empty = await open(join(dir, 'refusing'), { chunkSize: 4096 });
  for (const cut of [10, 100, Math.floor(file.length / 2), file.length - 1]) {
    await assert.rejects(empty.import(file.subarray(0, cut)), (error) => {
      assert.equal(error.name, 'WalnutCorruptionError', `${cut}: ${error.message}`);
      assert.match(error.message, /offset|ends early|header/, `${cut}`);
      return true;
    });
  }
  const bad = Uint8Array.from(file);
  bad[Math.floor(file.length / 3)] ^= 0x20;
  await assert.rejects(empty.import(bad), { name: 'WalnutCorruptionError' });
  await assert.rejects(empty.import('not bytes'), (e) => e.name === 'WalnutInvalidArgumentError' && /source/.test(e.message));
  const aborted = AbortSignal.abort();
  await assert.rejects(empty.import(file, { signal: aborted }), { name: 'AbortError' });
  assert.equal((await empty.stats()).keys, 0);
  // Blob in slices; the sync store's import too.
  await empty.import(new Blob([file]));
  assert.deepEqual(await contents(empty), want);
  await empty.close();
});

test('the sync store imports too, and a write meanwhile fails the import and is kept', async () => {
  const { want, file } = await sourceExport('src-sync');
  const { openSync } = await import('../../pkg/node.js');
  const s = openSync(join(dir, 'sync-into'), { chunkSize: 4096 });
  async function* slowly() {
    yield file.subarray(0, 1000);
    s.put('meanwhile', 'kept');
    yield file.subarray(1000);
  }
  await assert.rejects(s.import(slowly()), (e) => e.name === 'WalnutInvalidArgumentError' && /written|values/.test(e.message));
  assert.equal(s.get('meanwhile', { as: 'text' }), 'kept');
  s.delete('meanwhile');
  const r = await s.import(file);
  assert.equal(r.bytes, file.length);
  assert.equal(s.get('a', { as: 'text' }), 'one');
  assert.deepEqual(s.table('q').read({ as: 'text' }).map((x) => [x.seq, x.value]), want.queue);
  s.close();
});
