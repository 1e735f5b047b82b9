// The worker's error paths, reached by swapping in a core that fails on purpose
// (fixtures/faults/walnut_core.js): the real walnut.js and worker.js run beside it.
import assert from 'node:assert/strict';
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { setup } from './helpers.mjs';

const repo = fileURLToPath(new URL('../../', import.meta.url));
let env;
let dir;
let page;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'walnut-e2e-faults-'));
  await copyFile(`${repo}pkg/walnut.js`, join(dir, 'walnut.js'));
  await copyFile(`${repo}pkg/worker.js`, join(dir, 'worker.js'));
  await copyFile(`${repo}tests/e2e/fixtures/faults/walnut_core.js`, join(dir, 'walnut_core.js'));
  env = await setup({ routes: [['/faulty/', dir]] });
  page = await env.openPage();
  await page.evaluate(async () => {
    window.faulty = await import('/faulty/walnut.js');
  });
});
after(async () => {
  await env?.close();
  await rm(dir, { recursive: true, force: true });
});

test('a failed group sync rejects every strict write waiting on it, relaxed writes are not held up', async () => {
  const r = await page.evaluate(async () => {
    const db = await window.faulty.open('fault:commitGroup:io');
    const strict = await Promise.allSettled(Array.from({ length: 5 }, (_, i) => db.put(`k${i}`, 'v')));
    const relaxed = await db.put('r', 'v', { durability: 'relaxed' }).then(() => 'resolved', (e) => e.name);
    db.terminate();
    return { strict: strict.map((s) => s.status === 'rejected' && `${s.reason.name}: ${s.reason.message}`), relaxed };
  });
  assert.deepEqual(r.strict, Array(5).fill('WalnutIoError: injected fault'));
  assert.equal(r.relaxed, 'resolved');
});

test('a trap in the core fails the call, and every later call, with WalnutPoisonedError', async () => {
  const r = await page.evaluate(async () => {
    const db = await window.faulty.open('fault:txnChunk:trap', { chunkSize: 4096 });
    const failed = await db.put('k', new Uint8Array(10000)).catch((e) => `${e.name}: ${e.message}`);
    const later = await db.has('k').catch((e) => e.name);
    const closed = await db.close().then(() => 'closed', (e) => e.name);
    return { failed, later, closed };
  });
  assert.match(r.failed, /^WalnutPoisonedError: .*crashed.*RuntimeError: unreachable/);
  assert.equal(r.later, 'WalnutPoisonedError');
  assert.equal(r.closed, 'closed');
});

test('a failure to open reaches open() as the named error', async () => {
  const r = await page.evaluate(async () => {
    const db = await window.faulty.open('fault:recovery:io').catch((e) => e);
    return { name: db.name, message: db.message };
  });
  assert.deepEqual(r, { name: 'WalnutIoError', message: 'injected fault' });
});
