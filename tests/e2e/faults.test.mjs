// The worker's error paths, reached by swapping in a core that fails on purpose
// (fixtures/faults/walnut_core.js): the real walnut.js and worker.js run beside it.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { standInCore } from './helpers.mjs';

const shared = standInCore('faults', '/faulty/', (page) =>
  page.evaluate(async () => {
    window.faulty = await import('/faulty/walnut.js');
  }),
);

test('a failed group sync rejects every strict write waiting on it, relaxed writes are not held up', async () => {
  const r = await shared.page.evaluate(async () => {
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
  const r = await shared.page.evaluate(async () => {
    const db = await window.faulty.open('fault:txnChunk:trap', { chunkSize: 4096 });
    const failed = await db.put('k', new Uint8Array(10000)).catch((e) => `${e.name}: ${e.message}`);
    const later = await db.has('k').catch((e) => e.name);
    const closed = await window.harness.settled(db.close());
    return { failed, later, closed };
  });
  assert.match(r.failed, /^WalnutPoisonedError: .*crashed.*RuntimeError: unreachable/);
  assert.equal(r.later, 'WalnutPoisonedError');
  assert.match(r.closed, /^WalnutPoisonedError: .*not closed cleanly.*the next open recovers every acknowledged write/);
});

test('after a trap, writes under way and queued fail with WalnutPoisonedError, and their streams are cancelled', async () => {
  const r = await shared.page.evaluate(async () => {
    const { settled, tracked, pattern } = window.harness;
    const db = await window.faulty.open('fault:txnChunk:trap', { chunkSize: 4096 });
    // All under way together: the first to write a chunk traps the instance while the others
    // have begun their transactions (or wait behind a write to the same key).
    const blob = () => new Blob([pattern(10000, 1)]);
    const calls = [
      db.put('a', blob()),
      db.put('b', blob()),
      db.put('a', blob()),
      db.put('c', new Blob([pattern(20000, 2)]).stream()),
      db.batch([{ type: 'put', key: 'd', value: blob() }, { type: 'put', key: 'e', value: 'small' }]),
    ];
    const outcomes = await Promise.all(calls.map((call) => settled(call)));
    const after = tracked();
    const afterCall = await settled(db.put('f', after.stream));
    return {
      outcomes,
      afterCall,
      afterCancelled: await after.wasCancelled(),
      closed: await settled(db.close()),
    };
  });
  for (const outcome of r.outcomes) assert.match(outcome, /^WalnutPoisonedError: .*crashed/, JSON.stringify(r.outcomes));
  assert.match(r.afterCall, /^WalnutPoisonedError: /);
  assert.equal(r.afterCancelled, 'cancelled', 'a stream handed over after the crash is cancelled');
  assert.match(r.closed, /^WalnutPoisonedError: .*not closed cleanly/);
});

test('close() rejects when the worker died, and resolves after terminate()', async () => {
  const r = await shared.page.evaluate(async () => {
    const { settled } = window.harness;
    let db = await window.faulty.open('fault:stats:die');
    await db.put('k', 'acknowledged');
    await db.stats(); // the worker throws an uncaught error right after answering
    // Until the page has seen the worker's error event, calls are still answered.
    let failed = null;
    for (let i = 0; i < 100_000 && !failed; i++) failed = await db.has('k').then(() => null, (e) => `${e.name}: ${e.message}`);
    const closed = await settled(db.close());
    db = await window.faulty.open('fault:stats:die');
    const reopened = await (await db.get('k'))?.text();
    await db.close();
    const terminated = await window.faulty.open('fault:none:io');
    terminated.terminate();
    return { failed, closed, reopened, afterTerminate: await settled(terminated.close()) };
  });
  assert.match(r.failed, /^WalnutIoError: .*worker failed/);
  assert.match(r.closed, /^WalnutIoError: .*not closed cleanly.*the next open recovers every acknowledged write/);
  assert.equal(r.reopened, 'acknowledged');
  assert.equal(r.afterTerminate, 'resolved');
});

test('a request message the worker cannot read fails its calls instead of leaving them pending', async () => {
  const r = await shared.page.evaluate(async () => {
    const { settled } = window.harness;
    const db = await window.faulty.open('fault:has:unreadable');
    await db.put('k', 'v');
    const lost = await Promise.all([settled(db.has('k')), settled(db.get('k'))]); // one message
    const later = await (await db.get('k')).text();
    const closed = await settled(db.close());
    const openLost = await settled(window.faulty.open('fault:open:unreadable'));
    return { lost, later, closed, openLost };
  });
  for (const lost of r.lost) assert.match(lost, /^WalnutIoError: .*could not be read/, JSON.stringify(r.lost));
  assert.equal(r.later, 'v', 'calls in later messages are answered');
  assert.equal(r.closed, 'resolved');
  assert.match(r.openLost, /^WalnutIoError: .*could not be read/);
});

test('a failure to open reaches open() as the named error', async () => {
  const r = await shared.page.evaluate(async () => {
    const db = await window.faulty.open('fault:recovery:io').catch((e) => e);
    return { name: db.name, message: db.message };
  });
  assert.deepEqual(r, { name: 'WalnutIoError', message: 'injected fault' });
});
