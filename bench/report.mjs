// Turns the samples of a run into a summary (median and min-max per contender, walnut's ratios,
// the targets), a text table for the terminal, the generated part of docs/BENCHMARKS.md and an
// SVG chart.
import { CONTENDERS, PEERS } from './page/plan.js';

/**
 * Targets walnut is measured against (reported, not asserted). `met` gets the medians of a
 * metric by contender id; `needs` lists the contenders it reads. A metric may have several
 * (one per walnut contender): `MORE_TARGETS`.
 */
const TARGETS = {
  'large.put': {
    text: '≥ 85% of raw OPFS and ≥ 2× IndexedDB',
    needs: ['walnut', 'raw', 'idb-keyval'],
    met: (m) => m.walnut >= 0.85 * m.raw && m.walnut >= 2 * m['idb-keyval'],
  },
  'concurrent.ops': {
    text: '≥ 20× idb-keyval',
    needs: ['walnut', 'idb-keyval'],
    met: (m) => m.walnut >= 20 * m['idb-keyval'],
  },
  'seq.ops': {
    text: '≥ 2× idb-keyval and ≥ 1× SQLite',
    needs: ['walnut', 'idb-keyval', 'sqlite'],
    met: (m) => m.walnut >= 2 * m['idb-keyval'] && m.walnut >= m.sqlite,
  },
  'open.large': {
    text: '< 50 ms (walnut after preload())',
    needs: ['walnut-pre'],
    met: (m) => m['walnut-pre'] < 50,
  },
  'memory.put': { text: '≤ 32 MiB above the idle store', needs: ['walnut'], met: (m) => m.walnut <= 32 },
};

/** The synchronous store's targets (issue 11), beside walnut's own. */
const MORE_TARGETS = {
  'gets.ops': {
    text: 'sync store ≥ 2× SQLite',
    needs: ['walnut-sync', 'sqlite'],
    met: (m) => m['walnut-sync'] >= 2 * m.sqlite,
  },
  'seq.ops': {
    text: 'sync store ≥ 1× SQLite',
    needs: ['walnut-sync', 'sqlite'],
    met: (m) => m['walnut-sync'] >= m.sqlite,
  },
};

/** @param {number[]} values */
function stats(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
  return { median, min: sorted[0], max: sorted.at(-1), n: sorted.length };
}

/**
 * @param {Awaited<ReturnType<import('./harness.mjs').runBench>>} results
 * @returns {Array<{ workload: string, metric: object, cells: Record<string, ReturnType<typeof stats>>, vsRaw?: number, bestPeer?: { id: string, ratio: number }, target?: { text: string, met: boolean | undefined } }>}
 */
export function summarize(results) {
  return results.workloads.flatMap((workload) =>
    workload.metrics.map((metric) => {
      const cells = {};
      for (const [contender, values] of Object.entries(results.samples[metric.id] ?? {})) cells[contender] = stats(values);
      const medians = Object.fromEntries(Object.entries(cells).map(([id, cell]) => [id, cell.median]));
      const walnut = medians.walnut;
      const row = { workload: workload.id, metric, cells };
      if (walnut !== undefined && medians.raw) row.vsRaw = walnut / medians.raw;
      const better = metric.better === 'higher' ? (a, b) => a > b : (a, b) => a < b;
      const best = PEERS.filter((id) => medians[id] !== undefined).reduce(
        (found, id) => (found && !better(medians[id], medians[found]) ? found : id),
        undefined,
      );
      if (walnut !== undefined && best) row.bestPeer = { id: best, ratio: walnut / medians[best] };
      const targets = [TARGETS[metric.id], MORE_TARGETS[metric.id]].filter(Boolean).map((target) => {
        const known = target.needs.every((id) => Number.isFinite(medians[id]));
        return { text: target.text, met: known ? target.met(medians) : undefined };
      });
      if (targets.length > 0) {
        // Met only when each is; the table shows each one's answer.
        const met = targets.some((t) => t.met === false) ? false : targets.every((t) => t.met) ? true : undefined;
        row.target = { text: targets.map((t) => t.text).join('; '), met, each: targets.map((t) => t.met) };
      }
      return row;
    }),
  );
}

/** A number for the tables: whole (thousands separated) from 100 up, else three significant digits (two below 1). */
function formatNumber(value) {
  if (value >= 100) return Math.round(value).toLocaleString('en-US');
  if (value >= 10) return value.toFixed(1);
  if (value >= 1) return value.toFixed(2);
  return value.toPrecision(2);
}

const formatRatio = (ratio) => (ratio === undefined ? '' : `${formatNumber(ratio)}×`);
const label = (id) => CONTENDERS.find((c) => c.id === id).label;
const metTitle = (met) => (met === undefined ? 'unknown' : met ? 'yes' : 'NO');

/**
 * The table's header and rows, as text cells. A cell with fewer values than `rounds` (some runs
 * failed) says how many it has.
 */
function tableCells(rows, { spread, rounds }) {
  const header = [
    'metric',
    'unit',
    ...CONTENDERS.map((c) => c.label),
    'walnut ÷ raw',
    'walnut ÷ best peer',
    'target',
    'target met?',
  ];
  const body = rows.map((row) => [
    row.metric.label,
    row.metric.better === 'higher' ? `${row.metric.unit} ↑` : `${row.metric.unit} ↓`,
    ...CONTENDERS.map(({ id }) => {
      const cell = row.cells[id];
      if (!cell) return '–';
      const median = formatNumber(cell.median);
      const partial = cell.n < rounds ? ` [${cell.n} of ${rounds}]` : '';
      return spread && cell.n > 1 ? `${median} (${formatNumber(cell.min)}–${formatNumber(cell.max)})${partial}` : `${median}${partial}`;
    }),
    formatRatio(row.vsRaw),
    row.bestPeer ? `${formatRatio(row.bestPeer.ratio)} ${label(row.bestPeer.id)}` : '',
    row.target?.text ?? '',
    row.target ? row.target.each.map(metTitle).join('; ') : '',
  ]);
  return { header, body };
}

/**
 * A plain-text table for the terminal (medians only; the spread is in the Markdown).
 * @param {ReturnType<typeof summarize>} rows
 * @param {number} rounds
 */
export function textTable(rows, rounds) {
  const { header, body } = tableCells(rows, { spread: false, rounds });
  const all = [header, ...body];
  const widths = header.map((_, i) => Math.max(...all.map((cells) => [...cells[i]].length)));
  const line = (cells) => cells.map((cell, i) => (i < 2 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

/**
 * A Markdown table: medians with min–max over the rounds.
 * @param {ReturnType<typeof summarize>} rows
 * @param {number} rounds
 */
function markdownTable(rows, rounds) {
  const { header, body } = tableCells(rows, { spread: true, rounds });
  const line = (cells) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map((_, i) => (i < 2 ? '---' : '---:'))), ...body.map(line)].join('\n');
}

const COLORS = { raw: '#8c8c8c', walnut: '#a0522d', 'idb-keyval': '#4e79a7', 'idb-batch': '#9ecae9', sqlite: '#59a14f' };

/** @param {string} text */
const escapeXml = (text) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/**
 * A horizontal bar chart of the throughput metrics (MiB/s, ops/s, keys/s): one group per metric,
 * one bar per contender at its median, a whisker from min to max. Each group is scaled to its
 * own largest value, since the metrics differ by orders of magnitude.
 * @param {ReturnType<typeof summarize>} rows
 * @param {string} caption
 */
export function svgChart(rows, caption) {
  const groups = rows.filter((row) => row.metric.better === 'higher');
  const width = 960;
  const left = 190;
  const barWidth = 560;
  const barHeight = 14;
  const parts = [];
  let y = 48;
  for (const row of groups) {
    const bars = CONTENDERS.filter(({ id }) => row.cells[id]);
    const scale = Math.max(...bars.map(({ id }) => row.cells[id].max));
    parts.push(`<text x="10" y="${y}" class="group">${escapeXml(`${row.metric.label} (${row.metric.unit})`)}</text>`);
    y += 8;
    for (const { id, label: name } of bars) {
      const cell = row.cells[id];
      const x = (value) => left + (value / scale) * barWidth;
      const middle = y + barHeight / 2;
      parts.push(
        `<text x="${left - 8}" y="${middle + 4}" class="name">${escapeXml(name)}</text>`,
        `<rect x="${left}" y="${y}" width="${(x(cell.median) - left).toFixed(1)}" height="${barHeight}" fill="${COLORS[id]}"/>`,
        `<line x1="${x(cell.min).toFixed(1)}" x2="${x(cell.max).toFixed(1)}" y1="${middle}" y2="${middle}" class="whisker"/>`,
        `<text x="${(x(cell.max) + 6).toFixed(1)}" y="${middle + 4}" class="value">${formatNumber(cell.median)}</text>`,
      );
      y += barHeight + 4;
    }
    y += 18;
  }
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y}" viewBox="0 0 ${width} ${y}" font-family="sans-serif" font-size="12">`,
    '<style>.group{font-weight:bold}.name{text-anchor:end}.value{fill:#333}.whisker{stroke:#000;stroke-width:1}</style>',
    `<rect width="${width}" height="${y}" fill="#fff"/>`,
    `<text x="10" y="22" font-size="14" font-weight="bold">${escapeXml(caption)}</text>`,
    ...parts,
    '</svg>',
    '',
  ].join('\n');
}

/** Medians over the rounds of the memory runs' parts, in MiB, per pass (held, live), as a Markdown table. */
function memoryTable(memory) {
  const mib = (bytes) => formatNumber(bytes / 1024 / 1024);
  const rows = CONTENDERS.flatMap(({ id, label: name }) =>
    [false, true].flatMap((live) => {
      const runs = memory.filter((m) => m.contender === id && m.live === live);
      if (runs.length === 0) return [];
      const part = (step) => ['js', 'wasm'].map((kind) => mib(stats(runs.map((m) => m[step][kind])).median)).join(' / ');
      return [`| ${name} | ${live ? 'live (GC before each sample)' : 'held'} | ${part('idle')} | ${part('putPeak')} | ${part('getPeak')} |`];
    }),
  );
  return [
    '| contender | pass | idle store: JS / wasm | peak while putting: JS / wasm | peak while reading: JS / wasm |',
    '| --- | --- | ---: | ---: | ---: |',
    ...rows,
  ].join('\n');
}

/**
 * The generated part of docs/BENCHMARKS.md: the run's setting, the chart, the table, the
 * memory breakdown and any failures.
 * @param {Awaited<ReturnType<import('./harness.mjs').runBench>>} results
 * @param {ReturnType<typeof summarize>} rows
 * @param {{ command: string, chart: string }} options `chart`: the SVG's path relative to the document
 */
export function markdownReport(results, rows, { command, chart }) {
  const env = results.environment;
  const met = rows.filter((row) => row.target);
  return [
    `Run of ${results.startedAt.slice(0, 16).replace('T', ' ')} UTC, scale \`${results.scale}\`: ${results.sizes.rounds} rounds per workload, contenders interleaved; it took ${Math.round(results.seconds / 60)} min.`,
    '',
    `- Command: \`${command}\``,
    `- Machine: ${env.cpu}, ${env.cores} cores, ${env.memoryGiB} GiB memory, ${env.kernel}`,
    `- Browser: ${env.browser ?? env.chromium}, headless, a new profile${results.browser === 'firefox' ? ' (driven over WebDriver by geckodriver)' : ''}; Node ${env.node}`,
    `- Versions: walnut ${env.walnut} at commit ${env.commit}, idb-keyval ${env.idbKeyval}, @sqlite.org/sqlite-wasm ${env.sqliteWasm}`,
    `- Load average (1 min) before and after: ${env.load.join(' and ')} (other work on the machine skews every figure)`,
    `- Targets met: ${met.filter((row) => row.target.met).length} of ${met.length}`,
    '',
    ...(chart ? [`![MiB/s and ops/s per contender](${chart})`, ''] : []),
    'Each cell: median (min–max) over the rounds; [n of m]: only n rounds succeeded (see the failures below). ↑ higher is better, ↓ lower is better; the ratios divide medians, so for ↓ metrics a ratio below 1× is walnut ahead. – : the contender does not run that workload.',
    '',
    markdownTable(rows, results.sizes.rounds),
    '',
    ...(results.memory.length
      ? [
          'Memory (MiB, medians): the JS heap (V8 + Blink + ArrayBuffer contents) of the page and the workers, and the wasm memory of the workers.',
          '',
          memoryTable(results.memory),
          '',
        ]
      : []),
    results.errors.length ? `Failures:\n\n${results.errors.map((e) => `- ${e}`).join('\n')}` : 'No run failed.',
  ].join('\n');
}
