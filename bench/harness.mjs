// Runs the benchmark: makes the input files on disk, starts the server and a fresh headless
// Chromium, and runs every workload for every contender in rounds. Within a round the
// contenders take turns (their order rotating from round to round), so that the slow drift of
// a shared virtual disk spreads over all of them; every run gets a new store and the origin's
// storage is wiped after it.
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { createWriteStream, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CHROMIUM, launch } from '../www/tools/browser.mjs';
import { FIREFOX, launchFirefox } from '../www/tools/firefox.mjs';
import { memoryProbe } from './memory.mjs';
import { CONTENDERS, MiB, SCALES, workloadsAt } from './page/plan.js';

const repo = fileURLToPath(new URL('../', import.meta.url));
/** The server routes of the bench page and the peers' libraries; `pkg`: walnut's package directory. */
const routes = (pkg) => [
  ['/pkg/', pkg],
  ['/bench/', `${repo}bench/page`],
  ['/vendor/idb-keyval/', `${repo}node_modules/idb-keyval/dist`],
  ['/vendor/sqlite-wasm/', `${repo}node_modules/@sqlite.org/sqlite-wasm/dist`],
];
/** A workload call that takes longer has hung (the slowest take about 30 s here). */
const CALL_TIMEOUT_MS = 300_000;
/**
 * A cross-origin-isolated page and workers: performance.now() then ticks in 5 µs steps instead
 * of 100 µs, fine enough for the latencies of single small operations.
 */
const HEADERS = { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' };

/** Writes `size` random bytes: one random MiB, numbered per MiB so that no two MiB are equal. */
async function writeRandomFile(path, size) {
  const block = randomBytes(MiB);
  const out = createWriteStream(path);
  for (let offset = 0; offset < size; offset += MiB) {
    block.writeUInt32LE(offset / MiB, 0);
    const piece = Buffer.from(block.subarray(0, Math.min(MiB, size - offset)));
    if (!out.write(piece)) await new Promise((resolve) => out.once('drain', resolve));
  }
  await new Promise((resolve, reject) => out.end((error) => (error ? reject(error) : resolve())));
}

/** The repository's commit, and whether walnut's sources differ from it. */
function commit() {
  const git = (...args) => execFileSync('git', args, { cwd: repo }).toString().trim();
  const changed = git('status', '--porcelain', '--', 'src', 'www', 'Cargo.toml', 'Cargo.lock');
  return `${git('rev-parse', '--short', 'HEAD')}${changed ? ' with uncommitted changes to the sources' : ''}`;
}

/** `binary --version`. Debian's Chromium wrapper prints a shell warning on stderr: keep stdout only. */
const versionOf = (binary) => execFileSync(binary, ['--version'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();

/**
 * The browser the bench page runs in, behind one shape: `evaluate(fn, arg)` runs `fn` in the
 * page, `setInputFiles(selector, path)` chooses a file in an input, `probe()` starts the memory
 * probe (Chromium only: it reads memory over the DevTools Protocol; null elsewhere).
 * @param {'chromium' | 'firefox'} name
 * @param {string} pkg
 * @param {(line: string) => void} log
 */
async function openBrowser(name, pkg, log) {
  if (name === 'firefox') {
    // WebDriver classic over geckodriver (Firefox ESR): a call may run for minutes.
    const firefox = await launchFirefox({ routes: routes(pkg), headers: HEADERS, scriptTimeoutMs: CALL_TIMEOUT_MS });
    await firefox.goto(`${firefox.url}bench/index.html`);
    return { ...firefox, version: versionOf(FIREFOX), probe: null };
  }
  const browser = await launch({ routes: routes(pkg), headers: HEADERS });
  const page = await browser.context.newPage();
  page.on('pageerror', (error) => log(`[page error] ${error.stack ?? error}`));
  await page.goto(`${browser.url}bench/index.html`);
  return {
    evaluate: (fn, arg) => page.evaluate(fn, arg),
    setInputFiles: (selector, path) => page.setInputFiles(selector, path),
    version: versionOf(CHROMIUM),
    probe: () => memoryProbe(browser.context, page),
    close: () => browser.close(),
  };
}

/** The machine and the software versions, for the report. */
function environment(userAgent, pkg, loadStart, browserVersion) {
  const version = (dir) => JSON.parse(readFileSync(`${dir}/package.json`, 'utf8')).version;
  return {
    cpu: os.cpus()[0]?.model,
    cores: os.availableParallelism(),
    memoryGiB: Math.round(os.totalmem() / 1024 ** 3),
    kernel: `${os.type()} ${os.release()}`,
    // Other work on the machine skews every figure: the 1-minute load average before and after.
    load: [loadStart, os.loadavg()[0]].map((load) => Number(load.toFixed(2))),
    commit: commit(),
    browser: browserVersion,
    userAgent,
    node: process.version,
    walnut: `${version(pkg)} from ${pkg.startsWith(repo) ? pkg.slice(repo.length) : pkg}`,
    idbKeyval: version(`${repo}node_modules/idb-keyval`),
    sqliteWasm: version(`${repo}node_modules/@sqlite.org/sqlite-wasm`),
  };
}

/** @param {string[]} items @param {number} round */
const rotate = (items, round) => items.map((_, i) => items[(i + round) % items.length]);

/**
 * Runs the benchmark.
 * @param {{ scale?: keyof SCALES, only?: string[], pkg?: string, browser?: 'chromium' | 'firefox', log?: (line: string) => void }} [options]
 *   `only`: the ids of the workloads to run (default: all); `pkg`: the directory of the walnut
 *   package to measure (default: the repository's pkg/); `browser`: where (default Chromium;
 *   in Firefox the memory workload is left out: its probe needs the DevTools Protocol)
 * @returns {Promise<{ scale: string, sizes: object, startedAt: string, seconds: number, environment: object, contenders: object[], workloads: object[], samples: Record<string, Record<string, number[]>>, memory: object[], errors: string[] }>}
 *   `samples[metric][contender]`: one value per round; `memory`: each memory run's idle and peak
 *   samples (JS and wasm bytes)
 */
export async function runBench({ scale: scaleName = 'full', only, pkg = `${repo}pkg`, browser: browserName = 'chromium', log = () => {} } = {}) {
  // BENCH_MEMORY_MIB=n: the memory run's File is n MiB instead of the scale's (a one-off run of a
  // larger store, such as the 2 GiB export of issue 15).
  // BENCH_ROUNDS=n: n rounds instead of the scale's.
  const memoryMiB = Number(process.env.BENCH_MEMORY_MIB);
  const rounds = Number(process.env.BENCH_ROUNDS);
  const scale = {
    ...SCALES[scaleName],
    ...(memoryMiB > 0 ? { memory: memoryMiB * MiB } : {}),
    ...(rounds > 0 ? { rounds } : {}),
  };
  const workloads = workloadsAt(scale).filter(
    (workload) => (!only || only.includes(workload.id)) && (browserName === 'chromium' || workload.kind !== 'memory'),
  );
  const started = Date.now();
  const loadStart = os.loadavg()[0];
  await mkdir(`${repo}bench/out`, { recursive: true });
  const dataDir = await mkdtemp(`${repo}bench/out/data-`);
  const files = { large: join(dataDir, 'large.bin'), memory: join(dataDir, 'memory.bin') };
  const samples = {};
  const memory = [];
  const errors = [];
  let browser;
  try {
    log(`writing ${scale.large / MiB} MiB and ${scale.memory / MiB} MiB of random bytes to ${dataDir}`);
    await writeRandomFile(files.large, Math.max(scale.large, scale.many[0] * scale.many[1]));
    await writeRandomFile(files.memory, scale.memory);
    browser = await openBrowser(browserName, pkg, log);
    const page = browser;
    for (let tries = 0; !(await page.evaluate(() => Boolean(window.bench))); tries++) {
      if (tries > 100) throw new Error('the bench page did not load');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    if (!(await page.evaluate(() => crossOriginIsolated))) throw new Error('the bench page is not cross-origin isolated');
    await page.setInputFiles('#large', files.large);
    await page.setInputFiles('#memory', files.memory);
    const probe = await browser.probe?.();

    const bench = {
      begin: (contender) => page.evaluate((c) => window.bench.begin(c), contender),
      call: (host, workload, params) =>
        Promise.race([
          page.evaluate(([h, w, p]) => window.bench.call(h, w, p), [host, workload, params]),
          new Promise((_, reject) => {
            const timer = setTimeout(() => reject(new Error(`${workload} did not finish in ${CALL_TIMEOUT_MS / 1000} s`)), CALL_TIMEOUT_MS);
            timer.unref();
          }),
        ]),
      end: (host) => page.evaluate((h) => window.bench.end(h), host),
      clear: () => page.evaluate(() => window.bench.clear()),
    };
    /** Runs one workload call in a new host for `contender`. */
    const runOnce = async (contender, workload, params) => {
      const host = await bench.begin(contender);
      try {
        return await bench.call(host, workload, params);
      } finally {
        await bench.end(host);
      }
    };
    const record = (metric, contender, value) => {
      ((samples[metric] ??= {})[contender] ??= []).push(value);
    };
    /** Runs `run`, then clears the storage; a failure is logged and kept, and the run goes on. */
    const attempt = async (what, run) => {
      const t = Date.now();
      const fail = (error) => {
        errors.push(`${what}: ${error.message}`);
        log(`  ${what}: FAILED ${error.message}`);
      };
      try {
        await run();
        log(`  ${what}: ${((Date.now() - t) / 1000).toFixed(1)} s`);
      } catch (error) {
        fail(error);
      }
      await bench.clear().catch(fail);
    };

    const runners = {
      /** The workload once per contender per round; its metrics are what it returns. */
      async plain(workload) {
        for (let round = 0; round < scale.rounds; round++) {
          for (const contender of rotate(workload.contenders, round)) {
            await attempt(`${workload.id} round ${round + 1} ${contender}`, async () => {
              const metrics = await runOnce(contender, workload.id, { name: workload.id, ...workload.params });
              for (const [name, value] of Object.entries(metrics)) record(`${workload.id}.${name}`, contender, value);
            });
          }
        }
      },
      /** Each store size is filled once per contender; then the rounds time opening it, each in a new host. */
      async open(workload) {
        const [small, large] = workload.metrics;
        for (const [size, metric] of [
          [workload.params.sizes[0], small.id],
          [workload.params.sizes[1], large.id],
        ]) {
          const params = { name: `open-${size}`, count: size };
          await attempt(`open ${size} keys`, async () => {
            for (const contender of workload.contenders) await runOnce(contender, 'fill', params);
            for (let round = 0; round < scale.rounds; round++) {
              for (const contender of rotate(workload.contenders, round)) {
                record(metric, contender, (await runOnce(contender, 'open', params)).ms);
              }
            }
          });
        }
      },
      /**
       * Peak memory above the open, idle store (after a full GC), sampled around each step; in
       * two passes per round, as held (garbage included) and live (see memory.mjs).
       */
      async memory(workload) {
        const [put, get, putLive, getLive, exp, expLive] = workload.metrics;
        for (let round = 0; round < scale.rounds; round++) {
          for (const contender of rotate(workload.contenders, round)) {
            for (const [live, putMetric, getMetric, exportMetric] of [
              [false, put, get, exp],
              [true, putLive, getLive, expLive],
            ]) {
              await attempt(`memory round ${round + 1} ${contender}${live ? ' live' : ''}`, async () => {
                const params = { name: 'memory', ...workload.params };
                const host = await bench.begin(contender);
                try {
                  await bench.call(host, 'memoryOpen', params);
                  await probe.trackWasm();
                  await probe.collectGarbage();
                  const idle = await probe.sample();
                  const putPeak = await probe.peakDuring(bench.call(host, 'memoryPut', params), { live });
                  await probe.collectGarbage();
                  const getPeak = await probe.peakDuring(bench.call(host, 'memoryGet', params), { live });
                  let exportPeak;
                  if (exportMetric?.contenders.includes(contender)) {
                    await probe.collectGarbage();
                    exportPeak = await probe.peakDuring(bench.call(host, 'memoryExport', params), { live });
                    record(exportMetric.id, contender, (exportPeak.total - idle.total) / MiB);
                  }
                  await bench.call(host, 'memoryClose', params);
                  record(putMetric.id, contender, (putPeak.total - idle.total) / MiB);
                  record(getMetric.id, contender, (getPeak.total - idle.total) / MiB);
                  memory.push({ contender, round: round + 1, live, idle, putPeak, getPeak, exportPeak });
                } finally {
                  await bench.end(host);
                }
              });
            }
          }
        }
      },
    };

    for (const workload of workloads) {
      log(`${workload.id}: ${workload.metrics.map((m) => m.label).join('; ')}`);
      await runners[workload.kind ?? 'plain'](workload);
    }
    const userAgent = await page.evaluate(() => navigator.userAgent);
    await probe?.close();
    return {
      scale: scaleName,
      sizes: scale,
      startedAt: new Date(started).toISOString(),
      seconds: Math.round((Date.now() - started) / 1000),
      browser: browserName,
      environment: environment(userAgent, pkg, loadStart, browser.version),
      contenders: CONTENDERS.map(({ id, label, host, batches }) => ({ id, label, host, batches })),
      workloads,
      samples,
      memory,
      errors,
    };
  } finally {
    await browser?.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}
