// Every tab at once: pages (and workers) of one origin open one store together. One leads and
// holds the files; the others' calls go through it; when it goes, another takes over, and no
// call hangs or reports a write that is not there. Pages of one browser context share OPFS,
// Web Locks and BroadcastChannel, as the tabs of one profile do.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { setup, until } from './helpers.mjs';

const MiB = 1024 * 1024;

let env;
let dir;
let bigFile;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'walnut-e2e-multitab-'));
  bigFile = join(dir, 'big.bin');
  const out = createWriteStream(bigFile);
  const block = randomBytes(MiB);
  for (let i = 0; i < 200; i++) {
    const piece = Buffer.from(block);
    piece.writeUInt32LE(i, 0);
    if (!out.write(piece)) await new Promise((resolve) => out.once('drain', resolve));
  }
  await new Promise((resolve, reject) => out.end((error) => (error ? reject(error) : resolve())));
  env = await setup();
});
after(async () => {
  await env?.close();
  await rm(dir, { recursive: true, force: true });
});

/** Opens `n` pages, each with store `name` open as `window.db`, recording its change events. */
async function pagesWith(name, n) {
  const pages = [];
  for (let i = 0; i < n; i++) {
    const page = await env.openPage();
    await page.evaluate(async (name) => {
      window.db = await window.walnut.open(name);
      window.events = [];
      window.resyncs = [];
      window.db.addEventListener('change', (e) => window.events.push({ lsn: e.lsn, puts: e.puts, deletes: e.deletes }));
      window.db.addEventListener('resync', (e) => window.resyncs.push(e.reason));
    }, name);
    pages.push(page);
  }
  return pages;
}

/** Waits until page `page` has seen `count` change events (or 10 s), and returns them. */
async function eventsOf(page, count) {
  await page.waitForFunction((count) => window.events.length >= count, count, { timeout: 10_000 }).catch(() => {});
  return page.evaluate(() => window.events);
}

/** Every call of the API, from page number `i`, on keys of its own. */
async function everyCall(page, i) {
  return page.evaluate(async (i) => {
    const { db, harness } = window;
    const p = `p${i}/`;
    const out = {};
    await db.put(`${p}string`, `from page ${i}`);
    await db.put(`${p}bytes`, harness.pattern(3000 + i, i));
    await db.put(`${p}blob`, new Blob([harness.pattern(70_000, 10 + i)]));
    await db.put(`${p}stream`, harness.streamOf(harness.pattern(2_500_000, 20 + i)), { durability: 'relaxed' });
    await db.batch([
      { type: 'put', key: `${p}batch-a`, value: 'a' },
      { type: 'put', key: `${p}batch-b`, value: new Uint8Array([1, 2, 3]) },
      { type: 'delete', key: `${p}string` },
    ]);
    out.deleted = await db.delete(`${p}batch-a`);
    out.deletedAgain = await db.delete(`${p}batch-a`);
    out.has = [await db.has(`${p}bytes`), await db.has(`${p}string`)];
    out.bytes = harness.firstDifference(await db.getBytes(`${p}bytes`), harness.pattern(3000 + i, i));
    out.blob = harness.firstDifference(new Uint8Array(await (await db.get(`${p}blob`)).arrayBuffer()), harness.pattern(70_000, 10 + i));
    out.stream = await harness.compareStreams(await db.getStream(`${p}stream`), harness.streamOf(harness.pattern(2_500_000, 20 + i)));
    out.keys = await db.keys({ prefix: p });
    out.entries = (await db.entries({ prefix: p, limit: 2 })).map((e) => [e.key, e.size]);
    await db.checkpoint();
    out.compacted = typeof (await db.compact());
    const stats = await db.stats();
    out.stats = { leader: stats.leader, contexts: stats.contexts };
    return out;
  }, i);
}

for (const n of [2, 5]) {
  test(`${n} pages use one store at once: every call works from every page, every page sees every change in order`, async () => {
    const pages = await pagesWith(`tabs-${n}`, n);
    const results = await Promise.all(pages.map((page, i) => everyCall(page, i)));
    results.forEach((r, i) => {
      const p = `p${i}/`;
      assert.deepEqual(
        { ...r, stats: undefined },
        {
          deleted: true,
          deletedAgain: false,
          has: [true, false],
          bytes: -1,
          blob: -1,
          stream: -1,
          keys: [`${p}batch-b`, `${p}blob`, `${p}bytes`, `${p}stream`],
          entries: [
            [`${p}batch-b`, 3],
            [`${p}blob`, 70_000],
          ],
          compacted: 'number',
          stats: undefined,
        },
        `page ${i}`,
      );
      assert.equal(r.stats.contexts, n, `page ${i}`);
    });
    assert.equal(results.filter((r) => r.stats.leader).length, 1, 'exactly one leader');
    // Every page reads every other page's values.
    const seen = await Promise.all(pages.map((page) => page.evaluate(async () => (await window.db.keys()).length)));
    assert.deepEqual(seen, Array(n).fill(4 * n));
    // Each page made 6 commits (4 puts, the batch, one delete that found its key): every page
    // sees all of them, once, in commit order, the same sequence everywhere.
    const all = await Promise.all(pages.map((page) => eventsOf(page, 6 * n)));
    for (const events of all) {
      assert.equal(events.length, 6 * n);
      assert.ok(events.every((e, k) => k === 0 || e.lsn > events[k - 1].lsn), 'in commit order');
      assert.deepEqual(events, all[0]);
    }
    const puts = all[0].flatMap((e) => e.puts);
    assert.equal(new Set(puts).size, puts.length, 'each put once');
    assert.equal(puts.length, 6 * n, 'four puts and two in the batch per page');
    for (const page of pages) await page.close();
  });
}


test('the leader page closes while a follower streams 200 MiB and makes strict puts: nothing resolved is lost, nothing hangs', async () => {
  const [leader, follower] = await pagesWith('failover-big', 2);
  await follower.setInputFiles('#file', bigFile);
  await follower.evaluate(async () => {
    const { db } = window;
    window.bigFile = document.querySelector('#file').files[0];
    await db.put('big', 'old value');
    window.written = 0;
    window.big = window.harness.settled(
      db.put('big', window.bigFile, { onProgress: (bytes) => (window.written = bytes) }),
      60_000,
    );
    window.acked = [];
    window.failed = [];
    window.writing = (async () => {
      for (let i = 0; !window.halt; i++) {
        const value = `small ${i}`;
        await db.put(`small-${i}`, value).then(
          () => window.acked.push([`small-${i}`, value]),
          (e) => window.failed.push(`${e.name}: ${e.message}`),
        );
      }
    })();
  });
  assert.equal(await leader.evaluate(async () => (await window.db.stats()).leader), true);
  await follower.waitForFunction(() => window.written >= 16 * 1024 * 1024, null, { polling: 10, timeout: 60_000 });
  const before = await follower.evaluate(() => window.acked.length);
  await leader.close();
  await follower.waitForFunction((n) => window.acked.length >= n + 20, before, { timeout: 20_000 });
  const r = await follower.evaluate(async () => {
    window.halt = true;
    const writing = await window.harness.settled(window.writing, 20_000);
    const big = await window.big;
    const { db } = window;
    const missing = [];
    for (const [key, value] of window.acked) {
      const got = await db.get(key);
      if ((await got?.text()) !== value) missing.push(key);
    }
    const value = await db.getBytes('big');
    return {
      writing,
      big,
      bigSize: value.length,
      bigOld: new TextDecoder().decode(value.subarray(0, 16)),
      acked: window.acked.length,
      failed: window.failed,
      missing,
      leader: (await db.stats()).leader,
    };
  });
  assert.equal(r.writing, 'resolved', 'the small puts never hung');
  assert.deepEqual(r.failed, [], 'no small put failed: they were sent again to the new leader');
  assert.deepEqual(r.missing, [], `every resolved put is there (${r.acked} checked)`);
  assert.equal(r.leader, true, 'the follower took over');
  if (r.big === 'resolved') assert.equal(r.bigSize, 200 * MiB);
  else {
    assert.match(r.big, /^WalnutLeaderChangedError: /, 'the large put rejects with the retryable error');
    assert.equal(r.bigOld, 'old value', 'and leaves the old value');
  }
  // A new page sees the same, after the new leader's recovery.
  const [third] = await pagesWith('failover-big', 1);
  const again = await third.evaluate(async (keys) => {
    const got = [];
    for (const key of keys) got.push(await (await window.db.get(key))?.text());
    return got;
  }, r.acked ? await follower.evaluate(() => window.acked.map(([k]) => k)) : []);
  assert.deepEqual(again, await follower.evaluate(() => window.acked.map(([, v]) => v)));
  await third.close();
  await follower.close();
});

test('calls queued on a follower when the leader closes are all answered by the next leader', async () => {
  const [leader, follower] = await pagesWith('failover-queued', 2);
  const puts = follower.evaluate(async () => {
    const { db, harness } = window;
    const calls = [];
    for (let i = 0; i < 200; i++) calls.push(db.put(`q${i}`, `value ${i}`));
    calls.push(db.batch([{ type: 'put', key: 'qb', value: 'batched' }]));
    const outcomes = await Promise.all(calls.map((c) => harness.settled(c, 20_000)));
    const values = [];
    for (let i = 0; i < 200; i++) values.push(await (await db.get(`q${i}`))?.text());
    return { outcomes, values, batched: await (await db.get('qb'))?.text() };
  });
  await leader.close();
  const r = await puts;
  assert.deepEqual(r.outcomes, Array(201).fill('resolved'));
  assert.deepEqual(r.values, Array.from({ length: 200 }, (_, i) => `value ${i}`));
  assert.equal(r.batched, 'batched');
  await follower.close();
});

test('appends queued on a follower when the leader closes resolve to the numbers they took, retried or not', async () => {
  const [leader, follower] = await pagesWith('failover-appends', 2);
  const appends = follower.evaluate(async () => {
    const { db, harness } = window;
    const t = db.table('outbox');
    const calls = [];
    for (let i = 0; i < 200; i++) calls.push(t.append(`a${i}`));
    const outcomes = await Promise.all(calls.map((c) => harness.settled(c, 20_000)));
    const seqs = await Promise.all(calls.map((c) => c.catch(() => null)));
    const queue = new Map((await t.read({ as: 'text' })).map((e) => [e.seq, e.value]));
    return { outcomes, seqs, found: seqs.map((seq) => queue.get(seq)) };
  });
  await leader.close();
  const r = await appends;
  assert.deepEqual(r.outcomes, Array(200).fill('resolved'));
  assert.ok(r.seqs.every((x) => Number.isInteger(x) && x > 0), `every append resolved to its number: ${r.seqs}`);
  assert.equal(new Set(r.seqs).size, 200, 'no number twice');
  assert.deepEqual(r.found, Array.from({ length: 200 }, (_, i) => `a${i}`), 'each number holds its own value');
  await follower.close();
});

test("a follower's writes that a silent leader committed resolve to the numbers they took once the next leader answers them", async () => {
  const [leader, follower] = await pagesWith('retried-seqs', 2);
  assert.equal(await follower.evaluate(() => window.db.table('outbox').append('first')), 1);
  // The leader goes silent: it still commits what followers send, but no answer leaves it.
  const workers = leader.workers();
  assert.ok(workers.length > 0, "the leader page's worker");
  for (const w of workers) await w.evaluate(() => (BroadcastChannel.prototype.postMessage = () => {}));
  await follower.evaluate(() => {
    const { db } = window;
    const t = db.table('outbox');
    window.calls = [
      t.append('a'),
      t.put('k', 'v'),
      db.batch([
        { type: 'append', table: 'outbox', value: 'b' },
        { type: 'put', table: 'other', key: 'x', value: 'y' },
      ]),
    ];
  });
  // Committed by the leader (its own page reads its store directly), answered to nobody.
  await until(leader, async () => (await window.db.table('outbox').lastSeq) >= 4);
  await leader.close(); // the follower leads next and finds the three commits by their request ids
  const got = await follower.evaluate(async () => {
    const [append, put, batch] = await Promise.all(window.calls);
    const t = window.db.table('outbox');
    const queue = (await t.read({ as: 'text' })).map((e) => [e.seq, e.value]);
    const feed = (await t.changes()).map((c) => [c.seq, c.key]);
    return { append, put, batch: [...batch].sort((a, b) => (a.table < b.table ? -1 : 1)), queue, feed };
  });
  const seqOf = (value) => got.queue.find(([, v]) => v === value)?.[0];
  assert.equal(got.queue.length, 3, `each committed once: ${JSON.stringify(got.queue)}`);
  assert.equal(got.append, seqOf('a'), 'the append resolves to the number its entry holds');
  assert.deepEqual(got.feed, [[got.put, 'k']], 'the put resolves to the number its change took');
  assert.deepEqual(got.batch, [
    { table: 'other', first: 1, last: 1 },
    { table: 'outbox', first: seqOf('b'), last: seqOf('b') },
  ]);
  assert.deepEqual([got.append, got.put, seqOf('b')].sort(), [2, 3, 4]);
  await follower.close();
});

test('a leader page reloaded 10 times while two followers write: every resolved write stays, no call hangs', async () => {
  const [leader, ...followers] = await pagesWith('reloads', 3);
  const writers = followers.map((page, f) =>
    page.evaluate(async (f) => {
      const { db, harness } = window;
      window.acked = [];
      const failed = [];
      for (let i = 0; !window.halt; i++) {
        const outcome = await harness.settled(db.put(`f${f}-${i}`, `v${i}`), 20_000);
        if (outcome === 'resolved') window.acked.push(i);
        else failed.push(outcome);
        if (failed.length > 20) break;
      }
      return failed;
    }, f),
  );
  for (let i = 0; i < 10; i++) {
    await leader.reload();
    await leader.waitForFunction(() => window.walnut && window.harness);
    await leader.evaluate(async () => {
      window.db = await window.walnut.open('reloads');
      await window.db.put('reloaded', String(Date.now()));
    });
  }
  await Promise.all(followers.map((page) => page.evaluate(() => (window.halt = true))));
  const failures = await Promise.all(writers);
  assert.deepEqual(failures, [[], []], 'no write failed or hung');
  for (const [f, page] of followers.entries()) {
    const r = await page.evaluate(async (f) => {
      const missing = [];
      for (const i of window.acked) if ((await (await window.db.get(`f${f}-${i}`))?.text()) !== `v${i}`) missing.push(i);
      return { acked: window.acked.length, missing };
    }, f);
    assert.ok(r.acked > 10, `follower ${f} kept writing (${r.acked})`);
    assert.deepEqual(r.missing, [], `follower ${f}`);
  }
  for (const page of [leader, ...followers]) await page.close();
});

test('a follower closed mid-upload: its transaction is aborted, the store goes on', async () => {
  const [leader, follower] = await pagesWith('follower-gone', 2);
  await leader.evaluate(() => window.db.put('v', 'old'));
  await follower.evaluate(() => {
    // A stream that gives 1 MiB every 20 ms and never ends.
    let i = 0;
    const endless = new ReadableStream({
      async pull(controller) {
        await new Promise((resolve) => setTimeout(resolve, 20));
        controller.enqueue(window.harness.pattern(1024 * 1024, i++));
      },
    });
    window.written = 0;
    window.db.put('v', endless, { onProgress: (n) => (window.written = n) }).catch(() => {});
  });
  await follower.waitForFunction(() => window.written >= 4 * 1024 * 1024, null, { timeout: 20_000 });
  await follower.close();
  const r = await leader.evaluate(async () => {
    const { db } = window;
    // The leader learns of the follower's end through its lock; give it a moment.
    for (let i = 0; i < 100 && (await db.stats()).openTransactions > 0; i++) await new Promise((r) => setTimeout(r, 20));
    await db.put('after', 'still works');
    return { v: await (await db.get('v')).text(), after: await (await db.get('after')).text(), stats: await db.stats() };
  });
  assert.deepEqual([r.v, r.after], ['old', 'still works']);
  assert.equal(r.stats.openTransactions, 0, 'the upload was aborted');
  assert.equal(r.stats.contexts, 1);
  await leader.close();
});

/** A page driving a worker that has the store open itself (fixtures/store-worker.js). */
async function pageWithWorker() {
  const page = await env.openPage();
  await page.evaluate(() => {
    const worker = new Worker('/tests/e2e/fixtures/store-worker.js', { type: 'module' });
    let next = 0;
    const waiting = new Map();
    worker.onmessage = ({ data }) => waiting.get(data.id)(data);
    window.inWorker = (cmd, ...args) =>
      new Promise((resolve) => {
        const id = next++;
        waiting.set(id, resolve);
        worker.postMessage({ id, cmd, args });
      });
  });
  return page;
}

test('a worker uses the store as a follower and as the leader', async () => {
  // A page leads, a worker follows.
  const [page] = await pagesWith('worker-ctx', 1);
  const host = await pageWithWorker();
  assert.deepEqual(await host.evaluate(() => window.inWorker('open', 'worker-ctx')), { id: 0, value: false });
  await host.evaluate(() => window.inWorker('put', 'from-worker', 'hi'));
  assert.equal(await page.evaluate(async () => (await window.db.get('from-worker')).text()), 'hi');
  // The page closes: the worker leads.
  await page.close();
  await host.evaluate(() => window.inWorker('put', 'after', 'worker leads'));
  assert.equal((await host.evaluate(() => window.inWorker('stats'))).value.leader, true);
  const [other] = await pagesWith('worker-ctx', 1);
  assert.equal(await other.evaluate(async () => (await window.db.get('after')).text()), 'worker leads');
  assert.equal(await other.evaluate(async () => (await window.db.stats()).leader), false);
  await other.close();
  await host.close();
});

test('change events: once in every page; a leader change and a gap in the events say resync', async () => {
  const pages = await pagesWith('events', 3);
  await pages[1].evaluate(() => window.db.put('one', '1'));
  for (const page of pages) assert.equal((await eventsOf(page, 1)).length, 1);
  // A gap: a change event numbered past the next one (as if this page had slept through some).
  const leaderId = await pages[2].evaluate(
    () =>
      new Promise((resolve) => {
        const channel = new BroadcastChannel('walnut:events');
        channel.onmessage = ({ data }) => data.type === 'changes' && resolve({ from: data.from, seq: data.seq + data.changes.length - 1 });
        window.db.put('two', '2');
      }),
  );
  await pages[2].evaluate(({ from, seq }) => {
    new BroadcastChannel('walnut:events').postMessage({
      type: 'changes',
      from,
      seq: seq + 5,
      changes: [{ lsn: 1e9, puts: ['forged'], deletes: [] }],
    });
  }, leaderId);
  await pages[1].waitForFunction(() => window.resyncs.length > 0, null, { timeout: 10_000 });
  assert.match((await pages[1].evaluate(() => window.resyncs))[0], /missed/);
  // The leader goes: the others are told to resynchronise.
  const leaderIndex = (await Promise.all(pages.map((p) => p.evaluate(async () => (await window.db.stats()).leader)))).indexOf(true);
  await pages[leaderIndex].close();
  const rest = pages.filter((_, i) => i !== leaderIndex);
  await rest[0].evaluate(() => window.db.put('three', '3'));
  for (const page of rest) {
    await page.waitForFunction(() => window.resyncs.some((r) => /leader/.test(r)), null, { timeout: 10_000 });
  }
  for (const page of rest) await page.close();
});

test('tables from a follower and the leader: one sequence per table, queues, marks, across a leader change', async () => {
  const [leader, follower] = await pagesWith('tables-multitab', 2);
  const fromLeader = await leader.evaluate(async () => {
    const t = window.db.table('outbox');
    return [await t.append('L1'), await t.put('k', 'leader')];
  });
  const fromFollower = await follower.evaluate(async () => {
    const { db, harness } = window;
    const t = db.table('outbox');
    const seqs = [await t.append('F1'), await t.append(harness.streamOf(harness.pattern(300_000, 3)))];
    const batch = await db.batch([
      { type: 'append', table: 'outbox', value: 'F3' },
      { type: 'put', table: 'other', key: 'x', value: 'y' },
    ]);
    await t.markFlushed(2);
    return { seqs, batch, last: await t.lastSeq, flushed: await t.flushedSeq };
  });
  assert.deepEqual(fromLeader, [1, 2]);
  assert.deepEqual(fromFollower.seqs, [3, 4], "the follower's appends continue the table's one sequence");
  assert.deepEqual(
    [...fromFollower.batch].sort((a, b) => (a.table < b.table ? -1 : 1)),
    [
      { table: 'other', first: 1, last: 1 },
      { table: 'outbox', first: 5, last: 5 },
    ],
  );
  assert.deepEqual([fromFollower.last, fromFollower.flushed], [5, 2]);
  await leader.close(); // the follower takes over, recovering the log
  const after = await follower.evaluate(async () => {
    const { db, harness } = window;
    const t = db.table('outbox');
    const read = await t.read({ as: 'bytes' });
    await t.deleteUpTo(3);
    return {
      seqs: read.map((e) => e.seq),
      streamed: harness.firstDifference(read.find((e) => e.seq === 4).value, harness.pattern(300_000, 3)),
      next: await t.append('after'),
      left: (await t.read({ as: 'text' })).map((e) => [e.seq, e.value]),
      marks: [await t.flushedSeq, await t.deletedUpTo],
      tables: (await db.tables()).map((x) => x.name),
    };
  });
  assert.deepEqual(after.seqs, [1, 3, 4, 5], 'every acknowledged entry (the put took 2, and is not in the queue)');
  assert.equal(after.streamed, -1, 'the streamed entry is whole');
  assert.equal(after.next, 6, 'numbers go on under the new leader');
  assert.deepEqual(after.left.map(([seq]) => seq), [4, 5, 6], 'deleteUpTo(3) left the entries above it');
  assert.deepEqual(after.left.slice(1), [
    [5, 'F3'],
    [6, 'after'],
  ]);
  assert.deepEqual(after.marks, [2, 3]);
  assert.deepEqual(after.tables, ['outbox', 'other']);
  await follower.close();
});

test('transactions from two tabs at once: every increment counted once, a streamed value inside, a tab closed mid-transaction leaves nothing', async () => {
  const [leader, follower, third] = await pagesWith('tx-multitab', 3);
  const incrementer = (page, label) =>
    page.evaluate(
      async ({ label }) => {
        const { db } = window;
        let runs = 0;
        for (let i = 0; i < 25; i++) {
          await db.transaction(async (tx) => {
            runs += 1;
            const n = Number((await tx.get('counter', { as: 'text' })) ?? '0');
            await new Promise((resolve) => setTimeout(resolve, Math.random() * 3));
            await tx.put('counter', String(n + 1));
            await tx.put(`by-${label}-${i}`, String(n));
          });
        }
        return runs;
      },
      { label },
    );
  const [leaderRuns, followerRuns] = await Promise.all([incrementer(leader, 'leader'), incrementer(follower, 'follower')]);
  const counted = await third.evaluate(async () => Number(await window.db.get('counter', { as: 'text' })));
  assert.equal(counted, 50, `every increment counted once (runs: leader ${leaderRuns}, follower ${followerRuns})`);
  assert.ok(leaderRuns + followerRuns >= 50);
  // Each increment saw a distinct value: no lost update.
  const seen = await third.evaluate(async () => {
    const keys = await window.db.keys({ prefix: 'by-' });
    return Promise.all(keys.map(async (k) => Number(await window.db.get(k, { as: 'text' }))));
  });
  assert.deepEqual([...seen].sort((a, b) => a - b), Array.from({ length: 50 }, (_, i) => i));

  // A streamed value inside a follower's nested transaction, and an idempotent id.
  const streamed = await follower.evaluate(async () => {
    const { db, harness } = window;
    const r = await db.transaction(
      async (tx) => {
        await tx.transaction(async (inner) => inner.put('big', harness.streamOf(harness.pattern(3_000_000, 5))));
        await tx.transaction(async (inner) => {
          await inner.put('dropped', 'x');
          throw new Error('discard');
        }).catch(() => {});
        return tx.has('dropped');
      },
      { id: 'import-1' },
    );
    const again = await db.transaction(async () => 'ran', { id: 'import-1' });
    const big = await db.get('big', { as: 'bytes' });
    return { r, again, diff: harness.firstDifference(big, harness.pattern(3_000_000, 5)), dropped: await db.has('dropped') };
  });
  assert.deepEqual(
    [streamed.r.applied, streamed.r.value, streamed.again.applied, streamed.again.version === streamed.r.version],
    [true, false, false, true],
  );
  assert.equal(streamed.diff, -1, 'the streamed value is whole');
  assert.equal(streamed.dropped, false);

  // A follower tab closed with a transaction open: its writes never appear.
  await third.evaluate(() => {
    window.db.transaction(async (tx) => {
      await tx.put('from-closed-tab', 'x');
      await new Promise(() => {}); // never finishes
    });
  });
  await third.close();
  await new Promise((resolve) => setTimeout(resolve, 500));
  const after = await leader.evaluate(async () => ({ has: await window.db.has('from-closed-tab'), open: (await window.db.stats()).openTransactions }));
  assert.deepEqual(after, { has: false, open: 0 }, "the closed tab's transaction was aborted");
  await follower.close();
  await leader.close();
});

test("a follower's transaction that a silent leader committed is not run again by the next leader", async () => {
  const [leader, follower] = await pagesWith('tx-retried', 2);
  await follower.evaluate(() => {
    window.runs = 0;
    window.txDone = window.db.transaction(async (tx) => {
      window.runs += 1;
      const n = Number((await tx.get('c', { as: 'text' })) ?? '0');
      await tx.put('c', String(n + 1));
      if (window.runs === 1) await new Promise((resolve) => (window.release = resolve));
      return n + 1;
    });
  });
  await follower.waitForFunction(() => typeof window.release === 'function');
  // The leader goes silent: it commits what it is sent, but no answer leaves it.
  for (const w of leader.workers()) await w.evaluate(() => (BroadcastChannel.prototype.postMessage = () => {}));
  await follower.evaluate(() => window.release());
  await until(leader, async () => (await window.db.get('c', { as: 'text' })) === '1');
  await leader.close(); // the follower leads next; its COMMIT, sent again, is found committed
  const got = await follower.evaluate(async () => {
    const r = await window.txDone;
    return { applied: r.applied, value: r.value, runs: window.runs, c: await window.db.get('c', { as: 'text' }) };
  });
  assert.deepEqual(got, { applied: true, value: 1, runs: 1, c: '1' }, 'applied once, answered as applied');
  await follower.close();
});

test('an import from a follower: installed through the leader and seen by every tab; a follower closed mid-import leaves the store empty', async () => {
  const name = `mt-import-${Date.now()}`;
  const [leader, follower] = await pagesWith(name, 2);
  // The export: made by the leader page from another store, handed to the follower as bytes.
  const base64 = await leader.evaluate(async (name) => {
    const src = await window.walnut.open(`${name}-src`);
    await src.put('doc', 'from the export');
    await src.put('big', window.harness.pattern(3_000_000, 4));
    await src.table('q').append('queued');
    const bytes = await window.harness.readAll(src.export());
    await src.close();
    let s = '';
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(s);
  }, name);
  assert.equal(await leader.evaluate(async () => (await window.db.stats()).leader), true);
  const done = await follower.evaluate(async (base64) => {
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    return window.db.import(new Blob([bytes]));
  }, base64);
  assert.equal(done.values, 3);
  for (const page of [leader, follower]) {
    const seen = await page.evaluate(async () => ({
      doc: await window.db.get('doc', { as: 'text' }),
      big: (await window.db.entries()).find((e) => e.key === 'big')?.size,
      queue: (await window.db.table('q').read({ as: 'text' })).map((e) => e.value),
    }));
    assert.deepEqual(seen, { doc: 'from the export', big: 3_000_000, queue: ['queued'] });
  }

  // Into a second store: the follower's import is under way when the follower closes.
  const other = `${name}-b`;
  const [leader2, follower2] = await pagesWith(other, 2);
  await follower2.evaluate(async (base64) => {
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    // A slow source: the first piece, then nothing until the tab is gone.
    const source = new ReadableStream({
      start(controller) {
        controller.enqueue(bytes.subarray(0, 100_000));
        window.firstPieceSent = true;
      },
    });
    window.db.import(source).catch(() => {});
  }, base64);
  await follower2.waitForFunction(() => window.firstPieceSent === true);
  await new Promise((resolve) => setTimeout(resolve, 300));
  await follower2.close();
  const after = await leader2.evaluate(async (base64) => {
    const keys = await window.db.keys();
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    // The leader's worker gave the follower's import up: a new one goes through.
    const done = await window.db.import(bytes);
    return { keys, done, doc: await window.db.get('doc', { as: 'text' }) };
  }, base64);
  assert.deepEqual(after.keys, []);
  assert.equal(after.done.values, 3);
  assert.equal(after.doc, 'from the export');
  for (const page of [leader, follower, leader2]) await page.close();
});
