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
