// The benchmark harness (bench/), run at a tiny scale so that it cannot rot: every contender
// must produce a figure for every metric of every workload it runs, and the report must render.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runBench } from '../../bench/harness.mjs';
import { markdownReport, summarize, svgChart, textTable } from '../../bench/report.mjs';

test('every contender measures every workload it runs, and the report renders', { timeout: 120_000 }, async () => {
  const results = await runBench({ scale: 'tiny' });
  assert.deepEqual(results.errors, []);
  for (const workload of results.workloads) {
    for (const metric of workload.metrics) {
      for (const contender of workload.contenders) {
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
  // Every row compares walnut with a peer; those raw OPFS runs (not the queue workloads) with it too.
  const withRaw = new Set(results.workloads.filter((w) => w.contenders.includes('raw')).map((w) => w.id));
  assert.ok(rows.every((row) => (!withRaw.has(row.workload) || row.vsRaw > 0) && row.bestPeer?.ratio > 0));
  assert.match(textTable(rows, results.sizes.rounds), /walnut ÷ raw/);
  assert.match(markdownReport(results, rows, { command: 'test', chart: 'bench.svg' }), /\n\| metric \|[^]*\n\| raw OPFS \|/);
  assert.match(svgChart(rows, 'test'), /^<svg [^]*<\/svg>\n$/);
});
