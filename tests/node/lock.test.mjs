// A store directory belongs to one process at a time: another process, or a second open in
// this one, gets WalnutLockedError naming the holder; the lock of a killed holder is taken over.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { pkg, scratch } from './helpers.mjs';

const { open, openSync, WalnutLockedError } = await import(`${pkg}node.js`);
const holderScript = new URL('./fixtures/holder.mjs', import.meta.url).pathname;

/** Starts a process holding the store in `dir`; resolves once it has it open. */
async function holder(dir) {
  const child = spawn(process.execPath, [holderScript, dir], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async () => (await lines.next()).value;
  assert.equal(await next(), 'open');
  const exited = new Promise((resolve) => child.on('exit', resolve));
  return { child, next, exited };
}

test('a store held by another process is refused, naming it; once it closes it opens', async () => {
  const dir = scratch('lock');
  const h = await holder(dir);
  assert.throws(() => openSync(dir), (e) => e instanceof WalnutLockedError && e.message.includes(`process ${h.child.pid}`));
  await assert.rejects(open(dir), WalnutLockedError);
  // With a lock timeout, the open waits for the holder to let go.
  const waiting = new Promise((resolve, reject) => {
    setTimeout(() => {
      try {
        resolve(openSync(dir, { lockTimeout: 10_000 }));
      } catch (e) {
        reject(e);
      }
    }, 0);
  });
  h.child.stdin.write('close\n');
  // openSync blocks this thread while it waits, so the holder's answer is read afterwards.
  const db = await waiting;
  assert.equal(db.get('holder', { as: 'text' }), String(h.child.pid));
  db.close();
  await h.exited;
});

test('the lock of a holder killed with SIGKILL is stale and taken over', async () => {
  const dir = scratch('stale');
  const h = await holder(dir);
  h.child.kill('SIGKILL');
  await h.exited;
  const text = readFileSync(join(dir, 'LOCK'), 'utf8');
  assert.match(text, new RegExp(`^walnut-lock 1\\npid ${h.child.pid}\\n`), 'the dead holder left its lock');
  const db = openSync(dir);
  assert.equal(db.get('holder', { as: 'text' }), String(h.child.pid), 'its acknowledged write survived');
  assert.match(readFileSync(join(dir, 'LOCK'), 'utf8'), new RegExp(`\\npid ${process.pid}\\n`));
  db.close();
});

test('a second open in this process is refused until the first is closed', async () => {
  const dir = scratch('twice');
  const db = await open(dir);
  assert.throws(() => openSync(dir), (e) => e instanceof WalnutLockedError && /already open in this process/.test(e.message));
  await db.close();
  const again = openSync(dir);
  again.close();
});

test('a lock naming another host is never taken over', async () => {
  const dir = scratch('host');
  const { writeFileSync } = await import('node:fs');
  writeFileSync(join(dir, 'LOCK'), 'walnut-lock 1\npid 1\nstart 5\nhost elsewhere.example\n');
  assert.throws(() => openSync(dir), (e) => e instanceof WalnutLockedError && e.message.includes('on host elsewhere.example'));
});
