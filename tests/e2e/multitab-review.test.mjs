// Review of the multi-tab protocol: interleavings around leader changes and closes where a call
// hangs, or a write is misreported. Pages of one browser context share OPFS, Web Locks and
// BroadcastChannel, as the tabs of one profile do.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setup, until } from './helpers.mjs';

let env;
before(async () => {
  env = await setup();
});
after(() => env?.close());

/** Opens `n` pages, in order (so they queue for leadership in this order), each with `name` open as `window.db`. */
async function pagesWith(name, n, options) {
  const pages = [];
  for (let i = 0; i < n; i++) {
    const page = await env.openPage();
    await page.evaluate(
      async ([name, options]) => {
        window.db = await window.walnut.open(name, options);
      },
      [name, options],
    );
    pages.push(page);
  }
  return pages;
}

const isLeader = (page) => page.evaluate(async () => (await window.db.stats()).leader);


test('the leader closes while a follower streams a put, a third context leads next: the put is not reported done with a truncated value', async () => {
  const [leader, next, follower] = await pagesWith('moved-stream', 3);
  assert.deepEqual(await Promise.all([leader, next, follower].map(isLeader)), [true, false, false]);
  // The leader closes its use as soon as the follower's put has written 2 MiB (told in the
  // browser, not through the test driver, so that the leader is still writing the first 32 MiB
  // piece of the value when it closes).
  await leader.evaluate(() => {
    new BroadcastChannel('review-go').onmessage = () => (window.closeOutcome = window.harness.settled(window.db.close(), 20_000));
  });
  const r = await follower.evaluate(async () => {
    const { db, harness } = window;
    await db.put('v', 'old');
    const MiB = 1024 * 1024;
    const value = harness.pattern(64 * MiB, 7);
    // Two parts of 32 MiB: the leader pulls the second only once it has written the first.
    let offset = 0;
    const stream = new ReadableStream({
      pull(controller) {
        if (offset >= value.length) controller.close();
        else controller.enqueue(value.slice(offset, (offset += 32 * MiB)));
      },
    });
    const go = new BroadcastChannel('review-go');
    let told = false;
    const put = harness.settled(
      db.put('v', stream, {
        onProgress: (written) => {
          if (!told && written >= 2 * MiB) {
            told = true;
            go.postMessage('close');
          }
        },
      }),
      30_000,
    );
    const outcome = await put;
    const stored = await db.getBytes('v');
    return {
      outcome,
      size: stored.length,
      old: new TextDecoder().decode(stored.subarray(0, 3)) === 'old' && stored.length === 3,
      intact: stored.length === value.length && harness.firstDifference(stored, value) === -1,
      leader: (await db.stats()).leader,
    };
  });
  assert.equal(await leader.evaluate(() => window.closeOutcome), 'resolved');
  assert.equal(r.leader, false, 'the context queued second leads now');
  if (r.outcome === 'resolved') {
    assert.ok(r.intact, `put() resolved, so 'v' must hold the 64 MiB value; it holds ${r.size} bytes`);
  } else {
    assert.match(r.outcome, /^Walnut(LeaderChanged|Closed)Error: /);
    assert.ok(r.old, `put() rejected, so 'v' must keep its old value; it holds ${r.size} bytes`);
  }
  for (const page of [leader, next, follower]) await page.close();
});

/**
 * A page that takes a place in store `name`'s leadership queue (as a context that is slow to
 * open would, or one whose open fails) and holds the leadership, once granted, until
 * `release(page)`. Returns once its request is queued.
 */
async function squatter(name) {
  const page = await env.openPage();
  await page.evaluate(async (name) => {
    window.granted = new Promise((granted) =>
      navigator.locks.request(`walnut:${name}`, () => {
        granted();
        return new Promise((release) => (window.release = release));
      }),
    );
    // Queued behind the leader before the test goes on.
    for (;;) {
      const { pending } = await navigator.locks.query();
      if (pending.some((lock) => lock.name === `walnut:${name}`)) return;
      await new Promise((r) => setTimeout(r, 10));
    }
  }, name);
  return page;
}
const release = (page) => page.evaluate(() => window.release());

test('a follower closing while the leader changes becomes the leader: its close() and the other contexts do not hang', async () => {
  const [leader] = await pagesWith('close-lead', 1);
  const slow = await squatter('close-lead');
  const [follower, other] = await pagesWith('close-lead', 2);
  await leader.close(); // the squatting context leads now, and says nothing
  await follower.evaluate(() => {
    const { db, harness } = window;
    // A call made before close(), so close() waits for it.
    window.put = harness.settled(db.put('x', 'before close'), 15_000);
    window.closeOutcome = harness.settled(db.close(), 15_000);
  });
  await slow.evaluate(() => window.granted);
  await release(slow); // the follower is next in the queue
  const r = await follower.evaluate(async () => ({ put: await window.put, close: await window.closeOutcome }));
  const o = await other.evaluate(async () => {
    const { db, harness } = window;
    const put = await harness.settled(db.put('y', 'from the other page'), 10_000);
    const x = await harness.settled(db.get('x').then((b) => b?.text()).then((t) => { window.x = t; }), 10_000);
    return { put, x, xValue: window.x };
  });
  assert.deepEqual(
    { closing: r, other: o },
    {
      closing: { put: 'resolved', close: 'resolved' }, // the closing follower answers its call and closes
      other: { put: 'resolved', x: 'resolved', xValue: 'before close' }, // the other page is served
    },
  );
  for (const page of [slow, follower, other]) await page.close();
});

test('no leader for lockTimeout + 5 s: close() of a follower with a call waiting resolves once the call is failed', async () => {
  const [leader] = await pagesWith('close-leaderless', 1);
  const slow = await squatter('close-leaderless');
  const [follower] = await pagesWith('close-leaderless', 1, { lockTimeout: 100 });
  await leader.close();
  const r = await follower.evaluate(async () => {
    const { db, harness } = window;
    const put = harness.settled(db.put('x', '1'), 12_000);
    const close = harness.settled(db.close(), 12_000);
    return { put: await put, close: await close };
  });
  assert.match(r.put, /^WalnutLeaderChangedError: /, 'the call is failed after lockTimeout + 5 s');
  assert.equal(r.close, 'resolved', 'close() does not hang');
  await release(slow);
  for (const page of [slow, follower]) await page.close();
});

test('no leader for lockTimeout + 5 s: a call made after the first ones were failed does not hang either', async () => {
  const [leader] = await pagesWith('late-call', 1);
  const slow = await squatter('late-call');
  const [follower] = await pagesWith('late-call', 1, { lockTimeout: 100 });
  await leader.close();
  const r = await follower.evaluate(async () => {
    const { db, harness } = window;
    const first = await harness.settled(db.put('a', '1'), 12_000);
    const later = await harness.settled(db.put('b', '2'), 12_000);
    return { first, later };
  });
  assert.match(r.first, /^WalnutLeaderChangedError: /);
  assert.match(r.later, /^WalnutLeaderChangedError: /, 'the later call is failed too, not left waiting');
  // Once a context leads again, calls work.
  await release(slow);
  assert.equal(await follower.evaluate(() => window.harness.settled(window.db.put('c', '3'), 12_000)), 'resolved');
  for (const page of [slow, follower]) await page.close();
});

test('a getStream() stream opened on a leader that is gone never reads another value', async () => {
  const [leader, follower] = await pagesWith('reader-ids', 2);
  await leader.evaluate(async () => {
    const { db, harness } = window;
    await db.put('a', harness.pattern(3 * 1024 * 1024, 1));
    await db.put('b', harness.pattern(3 * 1024 * 1024, 2));
  });
  await follower.evaluate(async () => {
    window.sa = (await window.db.getStream('a')).getReader();
    await window.sa.read();
  });
  await leader.close();
  const r = await follower.evaluate(async () => {
    const { db, harness } = window;
    const MiB = 1024 * 1024;
    const values = { a: harness.pattern(3 * MiB, 1), b: harness.pattern(3 * MiB, 2) };
    /** Which MiB of which value `chunk` is. */
    const which = (chunk) => {
      for (const [key, bytes] of Object.entries(values)) {
        for (let i = 0; i < 3; i++) if (harness.firstDifference(chunk, bytes.subarray(i * MiB, (i + 1) * MiB)) === -1) return `${key}[${i}]`;
      }
      return `${chunk.length} unknown bytes`;
    };
    // The follower leads now (a new store instance: its reader ids start again at 1).
    const leads = (await db.stats()).leader;
    const sb = await db.getStream('b');
    // What the stream of 'a' gives next: the rest of 'a' (read before the leader went), then
    // it must fail.
    const fromA = [];
    for (let i = 0; i < 3; i++) {
      const outcome = await harness.settled(window.sa.read().then(({ done, value }) => fromA.push(done ? 'done' : which(value))), 10_000);
      if (outcome !== 'resolved') {
        fromA.push(outcome.replace(/:.*/, ''));
        break;
      }
    }
    const b = await harness.readAll(sb).then(
      (bytes) => harness.firstDifference(bytes, values.b),
      (error) => `${error.name}: ${error.message}`,
    );
    return { leads, fromA, b };
  });
  assert.equal(r.leads, true);
  assert.ok(!r.fromA.some((c) => c.startsWith('b')), `the stream of 'a' gave parts of 'b': ${r.fromA}`);
  assert.equal(r.fromA.at(-1), 'WalnutLeaderChangedError', `the stream of 'a' fails: ${r.fromA}`);
  assert.equal(r.b, -1, "the stream of 'b' reads 'b' whole");
  await follower.close();
});

test('a follower closes while its put reads a stream: the put rejects with WalnutClosedError, it does not hang', async () => {
  const [leader, follower] = await pagesWith('follower-close-put', 2);
  const r = await follower.evaluate(async () => {
    const { db, harness } = window;
    await db.put('v', 'old');
    // A stream that gives 1 MiB every 20 ms and never ends.
    let i = 0;
    const endless = new ReadableStream({
      async pull(controller) {
        await new Promise((resolve) => setTimeout(resolve, 20));
        controller.enqueue(harness.pattern(1024 * 1024, i++));
      },
    });
    let written = 0;
    let progressed;
    const enough = new Promise((resolve) => (progressed = resolve));
    const put = harness.settled(
      db.put('v', endless, {
        onProgress: (n) => {
          written = n;
          if (written >= 2 * 1024 * 1024) progressed();
        },
      }),
      10_000,
    );
    const alsoPending = harness.settled(db.has('v'), 10_000); // answered before close()
    await enough;
    const close = harness.settled(db.close(), 10_000);
    return { put: await put, close: await close, has: await alsoPending };
  });
  assert.equal(r.close, 'resolved');
  assert.match(r.put, /^WalnutClosedError: /, 'the put rejects as MULTITAB.md says, it does not hang');
  assert.equal(await leader.evaluate(async () => (await window.db.get('v')).text()), 'old');
  for (const page of [leader, follower]) await page.close();
});

for (const last of ['put', 'clear']) {
  test(`a follower's writes to one key keep call order across the leader's close(): stream put, stream put, then a ${last}`, async () => {
    const [leader, follower] = await pagesWith(`order-${last}`, 2);
    assert.deepEqual(await Promise.all([leader, follower].map(isLeader)), [true, false]);
    await leader.evaluate(() => {
      new BroadcastChannel('order-go').onmessage = () => (window.closeOutcome = window.harness.settled(window.db.close(), 20_000));
    });
    const r = await follower.evaluate(async (last) => {
      const { db, harness } = window;
      await db.put('k', 'old');
      const go = new BroadcastChannel('order-go');
      // W0: one whole chunk (1 MiB), then a source that never ends, so the leader closes
      // with W0 under way. W1 (a stream) and W2 wait behind it for the key.
      let pulls = 0;
      const s0 = new ReadableStream({
        pull(controller) {
          if (++pulls === 1) controller.enqueue(new Uint8Array(1024 * 1024));
          else return new Promise(() => {});
        },
      });
      let told = false;
      const onProgress = () => {
        if (!told) {
          told = true;
          go.postMessage('close');
        }
      };
      const s1 = new ReadableStream({
        start(controller) {
          controller.enqueue(new TextEncoder().encode('W1'));
          controller.close();
        },
      });
      const w0 = harness.settled(db.put('k', s0, { onProgress }), 20_000);
      const w1 = harness.settled(db.put('k', s1), 20_000);
      let seen;
      const w2 = harness.settled(last === 'put' ? db.put('k', 'W2') : db.clear(), 20_000).then(async (outcome) => {
        seen = await (await db.get('k'))?.text(); // right after W2 resolved
        return outcome;
      });
      const outcomes = await Promise.all([w0, w1, w2]);
      return { outcomes, seen, final: await (await db.get('k'))?.text(), leader: (await db.stats()).leader };
    }, last);
    assert.equal(await leader.evaluate(() => window.closeOutcome), 'resolved');
    assert.match(r.outcomes[0], /^WalnutLeaderChangedError/, 'W0 was under way on the leader that closed');
    assert.deepEqual(r.outcomes.slice(1), ['resolved', 'resolved']);
    assert.equal(r.leader, true, 'the follower leads now');
    const expected = last === 'put' ? 'W2' : undefined;
    assert.equal(r.seen, expected, 'read right after W2 resolved');
    assert.equal(r.final, expected, 'W1, issued before W2, must not apply over it');
  });
}

test("a follower's batch under an id with a streamed value, committed by a leader whose answer was lost, is answered as made before", async () => {
  const [leader, follower] = await pagesWith('lost-answer-id', 2);
  assert.deepEqual(await Promise.all([leader, follower].map(isLeader)), [true, false]);
  // The leader pulls the stream and commits, but no answer leaves it.
  for (const w of leader.workers()) {
    await w.evaluate(() => {
      const { postMessage } = BroadcastChannel.prototype;
      BroadcastChannel.prototype.postMessage = function (message) {
        if (message?.type !== 'results') postMessage.call(this, message);
      };
    });
  }
  await follower.evaluate(() => {
    const value = new ReadableStream({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('streamed'));
        controller.close();
      },
    });
    window.call = window.harness.settled(window.db.batch([{ type: 'put', key: 's', value }], { id: 'once' }), 20_000);
  });
  await until(leader, async () => window.db.has('s'));
  await leader.close(); // the follower leads next; it read the whole stream, so it asks whether it was committed
  const r = await follower.evaluate(async () => {
    const outcome = await window.call;
    const again = await window.db.batch([{ type: 'put', key: 's', value: 'other' }], { id: 'once' });
    return { outcome, again: again.applied, value: await (await window.db.get('s'))?.text() };
  });
  // Not "it was not committed: try again": it was, under the caller's id.
  assert.equal(r.outcome, 'resolved');
  assert.equal(r.again, false, 'a retry under the id is made before too');
  assert.equal(r.value, 'streamed');
  await follower.close();
});
