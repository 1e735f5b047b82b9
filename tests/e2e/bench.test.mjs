// The benchmark harness (bench/), run at a tiny scale so that it cannot rot: every contender
// must produce a figure for every metric of every workload it runs, and the report must render.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runBench } from '../../bench/harness.mjs';
import { missing as noFirefox } from '../../www/tools/firefox.mjs';
import { PEERS } from '../../bench/page/plan.js';
import { markdownReport, summarize, svgChart, textTable } from '../../bench/report.mjs';

/** Every contender measured every metric of every workload it ran, and the report renders. */
function check(results) {
  assert.deepEqual(results.errors, []);
  for (const workload of results.workloads) {
    for (const metric of workload.metrics) {
      // A metric may be measured by some of its workload's contenders only (the export: those
      // that have one).
      for (const contender of metric.contenders ?? workload.contenders) {
        const values = results.samples[metric.id]?.[contender] ?? [];
        // Rates must be positive; a latency can round to 0 at the timer's 5 µs resolution.
        const valid = (v) => Number.isFinite(v) && (metric.better === 'higher' ? v > 0 : v >= 0);
        assert.ok(
          values.length === results.sizes.rounds && values.every(valid),
          `${metric.id} of ${contender}: ${JSON.stringify(values)}`,
        );
      }
    }
  }
  const rows = summarize(results);
  assert.equal(rows.length, results.workloads.flatMap((w) => w.metrics).length);
  // Every row compares walnut with raw OPFS where raw runs it (not the queue workloads), and with
  // a peer where one does (not the export, which only raw OPFS and walnut have).
  const contendersOf = (row) => row.metric.contenders ?? results.workloads.find((w) => w.id === row.workload).contenders;
  const hasPeer = (row) => contendersOf(row).some((id) => PEERS.includes(id));
  // A ratio is positive; where lower is better a median may be 0 (memory above idle at this
  // scale, a latency at the timer's resolution), which makes it 0, or leaves no ratio to the
  // raw contender (a CI run of 2026-11-28 measured raw OPFS's export at 0 MiB held).
  const zeroOk = (row, ratio, other) =>
    row.metric.better !== 'higher' && (ratio === 0 || (ratio === undefined && row.cells[other]?.median === 0));
  const rawOk = (row) => !contendersOf(row).includes('raw') || row.vsRaw > 0 || zeroOk(row, row.vsRaw, 'raw');
  const peerOk = (row) =>
    !hasPeer(row) || row.bestPeer?.ratio > 0 || zeroOk(row, row.bestPeer?.ratio, row.bestPeer?.id ?? '');
  assert.ok(
    rows.every((row) => rawOk(row) && peerOk(row)),
    JSON.stringify(rows.filter((row) => !(rawOk(row) && peerOk(row))).map((row) => [row.metric.id, row.vsRaw, row.bestPeer])),
  );
  assert.match(textTable(rows, results.sizes.rounds), /walnut ÷ raw/);
  // The main table, then (where memory was measured) the memory table.
  const report = markdownReport(results, rows, { command: 'test', chart: 'bench.svg' });
  assert.match(report, /\n\| metric \|/);
  if (results.memory.length > 0) assert.match(report, /\n\| raw OPFS \| held \|/);
  else assert.doesNotMatch(report, /Memory \(MiB, medians\)/);
  assert.match(svgChart(rows, 'test'), /^<svg [^]*<\/svg>\n$/);
}

test('every contender measures every workload it runs, and the report renders', { timeout: 120_000 }, async () => {
  check(await runBench({ scale: 'tiny' }));
});

test('the same in Firefox, but the memory workload', { timeout: 180_000, skip: noFirefox ? `missing ${noFirefox}` : false }, async () => {
  const results = await runBench({ scale: 'tiny', browser: 'firefox' });
  assert.ok(!results.workloads.some((w) => w.kind === 'memory'), 'the memory probe needs the DevTools Protocol');
  assert.match(results.environment.browser, /Firefox/);
  check(results);
});
