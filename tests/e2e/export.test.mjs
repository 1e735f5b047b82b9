// Export from the page (issue 15): the browser's `.walnut` file is a valid walnut log that the
// native `walnut` tool verifies and lists with the same keys and sizes, and an export taken
// while writes go on is the snapshot at its start.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, test } from 'node:test';
import { sharedPage } from './helpers.mjs';
import { importInto, open as openNode } from '../../pkg/node.js';

const run = promisify(execFile);
const repo = new URL('../../', import.meta.url).pathname;
const shared = sharedPage();
let dir;
let cli;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'walnut-export-'));
  cli = `${repo}target/debug/walnut`;
  if (!existsSync(cli)) await run('cargo', ['build', '--bin', 'walnut'], { cwd: repo });
});
after(() => rm(dir, { recursive: true, force: true }));

test("the page's export is a log the walnut tool verifies and lists the same", async () => {
  const r = await shared.page.evaluate(async () => {
    const { harness } = window;
    const db = await window.walnut.open(`export-${Date.now()}`);
    await db.put('greeting', 'hello');
    await db.put(new Uint8Array([1, 2, 3]), new Uint8Array(10));
    await db.put('large', harness.streamOf(harness.pattern(3_000_000, 7)));
    await db.put('gone', 'x');
    await db.delete('gone');
    const outbox = db.table('outbox');
    for (let i = 0; i < 5; i++) await outbox.append(`entry ${i}`);
    await outbox.put('state', 'kept');
    await outbox.deleteUpTo(2);
    await db.transaction(async (tx) => tx.put('paid', '1'), { id: 'payment-1' });
    const keys = (await db.entries()).map((e) => [typeof e.key === 'string' ? e.key : `0x${[...e.key].map((b) => b.toString(16).padStart(2, '0')).join('')}`, e.size]);
    const stream = db.export();
    // Writes after the export began are not in it.
    await db.put('after', 'not exported');
    await db.put('greeting', 'changed after');
    const bytes = await harness.readAll(stream);
    await db.close();
    let s = '';
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return { keys, base64: btoa(s), length: bytes.length };
  });
  const file = join(dir, 'page.walnut');
  await writeFile(file, Buffer.from(r.base64, 'base64'));
  const verify = JSON.parse((await run(cli, ['--json', 'verify', file])).stdout);
  assert.equal(verify.ok, true, JSON.stringify(verify));
  const listed = JSON.parse((await run(cli, ['--json', 'ls', file])).stdout).map((k) => [k.key, k.size]);
  assert.deepEqual(listed, r.keys, 'the same keys and sizes, none written after the export began');
  const greeting = await run(cli, ['get', file, 'greeting']);
  assert.equal(greeting.stdout, 'hello', 'the value as it was when the export began');
  const outbox = JSON.parse((await run(cli, ['--json', 'inspect', file])).stdout).tables.find((t) => t.name === 'outbox');
  assert.deepEqual([outbox.last_seq, outbox.deleted_upto], [6, 2]);
  // Imported into Node: the same keys and sizes.
  const inNode = join(dir, 'node');
  await importInto(inNode, Buffer.from(r.base64, 'base64'));
  const nodeDb = await openNode(inNode);
  const hex = (k) => (typeof k === 'string' ? k : `0x${Buffer.from(k).toString('hex')}`);
  assert.deepEqual((await nodeDb.entries()).map((e) => [hex(e.key), e.size]), r.keys);
  await nodeDb.close();
  const restored = join(dir, 'restored');
  await run(cli, ['import', file, restored]);
  assert.deepEqual(JSON.parse((await run(cli, ['--json', 'ls', restored, '--table', 'outbox'])).stdout).map((k) => k.key), ['state']);
});

test('an export made in Node imports into OPFS from the page, whole, and reads back the same', async () => {
  // Node: a store with every kind of content, exported.
  const src = await openNode(join(dir, 'node-src'), { chunkSize: 4096 });
  await src.put('greeting', 'hello');
  await src.put(new Uint8Array([1, 2, 3]), new Uint8Array(10).fill(9));
  await src.put('large', new Uint8Array(2_500_000).map((_, i) => (i * 31) & 0xff));
  const q = src.table('outbox');
  for (let i = 0; i < 5; i++) await q.append(`entry ${i}`);
  await q.put('state', 'kept');
  await q.markFlushed(3);
  await q.deleteUpTo(2);
  await src.transaction(async (tx) => tx.put('paid', '1'), { id: 'payment-1' });
  const hex = (k) => (typeof k === 'string' ? k : `0x${Buffer.from(k).toString('hex')}`);
  const want = {
    keys: (await src.entries()).map((e) => [hex(e.key), e.size]),
    queue: (await q.read({ as: 'text' })).map((e) => [e.seq, e.value]),
    large: Buffer.from(await src.get('large', { as: 'bytes' })).toString('base64'),
    lastSeq: (await src.tables()).find((t) => t.name === 'outbox').lastSeq,
  };
  const parts = [];
  for await (const p of src.export()) parts.push(p);
  await src.close();
  const file = Buffer.concat(parts);

  const got = await shared.page.evaluate(async (base64) => {
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const name = `import-${Date.now()}`;
    const { walnut } = window;
    // A cut file first: refused naming where, the store left empty.
    const cut = await walnut.importInto(name, new Blob([bytes.subarray(0, bytes.length - 100)])).catch((e) => `${e.name}: ${e.message}`);
    let progress = 0;
    const done = await walnut.importInto(name, new Blob([bytes]), { onProgress: (n) => (progress = n) });
    const db = await walnut.open(name);
    const hex = (k) => (typeof k === 'string' ? k : `0x${[...k].map((b) => b.toString(16).padStart(2, '0')).join('')}`);
    const large = await db.get('large', { as: 'bytes' });
    let s = '';
    for (let i = 0; i < large.length; i += 0x8000) s += String.fromCharCode(...large.subarray(i, i + 0x8000));
    const out = {
      cut,
      done,
      progress,
      keys: (await db.entries()).map((e) => [hex(e.key), e.size]),
      queue: (await db.table('outbox').read({ as: 'text' })).map((e) => [e.seq, e.value]),
      large: btoa(s),
      again: (await db.transaction(async () => 'ran', { id: 'payment-1' })).applied,
      next: await db.table('outbox').append('next'),
      refused: await db.import(new Blob([bytes])).catch((e) => e.name),
    };
    await db.close();
    return out;
  }, file.toString('base64'));
  assert.match(got.cut, /^WalnutCorruptionError: .*(offset|ends early)/);
  assert.deepEqual([got.done.bytes, got.progress], [file.length, file.length]);
  assert.deepEqual(got.keys, want.keys);
  assert.deepEqual(got.queue, want.queue);
  assert.ok(got.large === want.large, 'the large value, byte for byte');
  assert.equal(got.again, false, 'commit ids travel');
  assert.equal(got.next, want.lastSeq + 1, 'numbers go on');
  assert.equal(got.refused, 'WalnutInvalidArgumentError', 'not into a store with values');
});

test('a tab closed while an import streams in leaves the store empty, and it imports again', async () => {
  const { env } = shared;
  const first = await env.openPage();
  const name = `import-closed-${Date.now()}`;
  await first.evaluate(async (name) => {
    const { walnut, harness } = window;
    const src = await walnut.open(`${name}-src`);
    await src.put('huge', harness.streamOf(harness.pattern(48 * 1024 * 1024, 5)));
    await src.put('small', 'yes');
    window.file = await new Response(src.export()).blob();
    await src.close();
    const db = await walnut.open(name);
    window.imported = 0;
    db.import(window.file, { onProgress: (n) => (window.imported = n) }).catch(() => {});
  }, name);
  await first.waitForFunction(() => window.imported >= 8 * 1024 * 1024, null, { polling: 10 });
  const at = await first.evaluate(() => [window.imported, window.file.size]);
  assert.ok(at[0] < at[1], 'the import must still be running when the tab closes');
  // The file again, from the same origin's source store, for the second try.
  await first.close();

  const second = await env.openPage();
  const r = await second.evaluate(async (name) => {
    const { walnut } = window;
    let db = await walnut.open(name);
    const before = { keys: (await db.entries()).length, tables: (await db.tables()).filter((t) => t.name !== '').length };
    await db.close();
    // Every byte the store's directory holds (the staged file released by recovery).
    const root = await (await navigator.storage.getDirectory()).getDirectoryHandle('walnut');
    before.files = 0;
    for await (const handle of (await root.getDirectoryHandle(name)).values()) before.files += (await handle.getFile()).size;
    db = await walnut.open(name);
    const src = await walnut.open(`${name}-src`);
    const file = await new Response(src.export()).blob();
    await src.close();
    const done = await db.import(file);
    const after = { small: await db.get('small', { as: 'text' }), huge: (await db.entries()).find((e) => e.key === 'huge')?.size };
    await db.close();
    return { before, done, after, size: file.size };
  }, name);
  await second.close();
  assert.deepEqual([r.before.keys, r.before.tables], [0, 0], 'nothing of the cut import');
  assert.ok(r.before.files < 1024 * 1024, `the staged file was let go: the store's files hold ${r.before.files} bytes`);
  assert.deepEqual(r.after, { small: 'yes', huge: 48 * 1024 * 1024 });
  assert.equal(r.done.bytes, r.size);
});
