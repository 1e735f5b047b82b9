// walnut in a Durable Object, in workerd: the conformance suite (tests/conformance/suite.mjs)
// inside the object; its crash case with the runtime killed mid-stream; and a workload of
// strict puts and streamed 3 MiB values (over the 2 MB a Durable Object value may hold) killed
// with SIGKILL at several moments: after each restart on the same on-disk storage, every
// acknowledged write is there whole, and no value is partial.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { bytes, cases, crashes } from '../conformance/suite.mjs';
import { scratch } from '../node/helpers.mjs';
import { bundle, repo, start } from './harness.mjs';

const dir = scratch('workerd');
let runtime;
before(async () => {
  await bundle({ entry: `${repo}tests/cloudflare/worker.mjs`, dir });
  runtime = await start(dir);
});
after(() => runtime?.stop());

test('workerd: every conformance case in a Durable Object', async (t) => {
  const response = await runtime.fetch('/run?object=conformance');
  assert.equal(response.status, 200, await response.clone().text());
  const results = await response.json();
  assert.equal(results.length, cases.length);
  for (const r of results) await t.test(r.name, () => assert.ok(r.ok, r.error));
});

test('workerd: the page volume matches a model of its files over random writes, cuts, releases and reopens', async () => {
  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
    const r = await (await runtime.fetch(`/volume?object=volume-${seed}&seed=${seed}&steps=400`)).json();
    assert.equal(r, null, `seed ${seed}`);
  }
});

test('workerd: a release whose write-back fails leaves the store writing (300 puts), and every value there after a reopen', async () => {
  const r = await (await runtime.fetch('/release-fails?object=release&name=release-fails')).json();
  assert.equal(r, null);
});

for (const [index, c] of crashes.entries()) {
  test(`workerd: ${c.name} (runtime killed)`, async () => {
    const name = `${c.store}-${Date.now().toString(36)}`;
    const wrote = await runtime.fetch(`/crash-write?object=crash&index=${index}&name=${name}`);
    assert.equal(await wrote.text(), 'ready');
    await runtime.kill();
    runtime = await start(dir);
    const checked = await runtime.fetch(`/crash-check?object=crash&index=${index}&name=${name}`);
    assert.equal(await checked.text(), 'ok');
  });
}

/** The workload's value of key `w<i>` (as worker.mjs computes it). */
const workloadValue = (i) => bytes(i % 10 === 0 ? 3 * 1024 * 1024 : 100 + (i % 300), i + 1);

test('workerd: a workload killed with SIGKILL keeps every acknowledged write whole', async () => {
  const acked = [];
  let next = 1;
  for (const [round, kills] of [7, 25, 3, 40, 12].entries()) {
    // Four writers at once, each waiting for its answer (sent only once the write is confirmed).
    let stop = false;
    const writer = async () => {
      while (!stop) {
        const i = next++;
        const body = i % 10 === 0 ? workloadValue(i) : undefined;
        const ok = await runtime.fetch(`/put?object=load&i=${i}`, { method: 'PUT', body }).then(
          async (r) => r.status === 200 && (await r.text()) === 'ok',
          () => false,
        );
        if (ok) acked.push(i); // answered: confirmed, whether or not the kill is near
        if (acked.length >= kills * (round + 1)) stop = true;
      }
    };
    const writers = Promise.all([writer(), writer(), writer(), writer()]);
    while (!stop) await new Promise((resolve) => setTimeout(resolve, 5));
    await runtime.kill();
    await writers;
    runtime = await start(dir);
    const r = await (await runtime.fetch('/check?object=load', { method: 'POST', body: JSON.stringify(acked) })).json();
    assert.deepEqual({ missing: r.missing, wrong: r.wrong }, { missing: [], wrong: [] }, `round ${round}`);
    assert.ok(r.keys >= acked.length);
  }
  const large = acked.filter((i) => i % 10 === 0).length;
  console.log(`crash points: SIGKILL of workerd: 5 (${acked.length} acknowledged writes checked, ${large} of 3 MiB)`);
});
