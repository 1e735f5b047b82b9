// The package as a user gets it: `npm pack` of pkg/, installed from the tarball into a scratch
// project, imported by its name. In Node (the `node` condition), in workerd (bundled with
// esbuild as wrangler bundles: the `workerd` condition, the .wasm as a compiled module), and in
// Chromium through Vite and webpack 5 production builds with their default configs, and the
// Vite dev server (which pre-bundles dependencies).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { bundle, start } from '../cloudflare/harness.mjs';
import { repo, scratch } from '../node/helpers.mjs';
import { startServer } from '../../www/tools/serve.mjs';
import { setup } from './helpers.mjs';

const run = promisify(execFile);
const project = scratch('install');
const web = join(project, 'web');
let env;

before(async () => {
  const { stdout } = await run('npm', ['pack', `${repo}pkg`, '--pack-destination', project, '--json']);
  const [{ filename }] = JSON.parse(stdout);
  writeFileSync(
    join(project, 'package.json'),
    JSON.stringify({ name: 'scratch', private: true, type: 'module', dependencies: { 'walnut-kv': `file:./${filename}` } }),
  );
  await run('npm', ['install', '--offline', '--no-audit', '--no-fund', '--ignore-scripts'], { cwd: project });
  // The app every bundler builds: opens a store, round-trips a value, says what it read.
  mkdirSync(join(web, 'src'), { recursive: true });
  const app = `import { open } from 'walnut-kv';
open('bundled-' + Math.random().toString(36).slice(2))
  .then(async (db) => {
    await db.put('greeting', 'hello from a bundle');
    const text = await db.get('greeting', { as: 'text' });
    await db.close();
    window.result = text;
  })
  .catch((error) => {
    window.result = error.name + ': ' + error.message;
  });
`;
  writeFileSync(join(web, 'src', 'index.js'), app);
  writeFileSync(join(web, 'index.html'), '<!doctype html><script type="module" src="/src/index.js"></script>\n');
  env = await setup();
});
after(() => env?.close());

/** Serves `dir` at the root of a new origin while `fn(url)` runs. */
async function served(dir, fn) {
  const server = await startServer({ port: 0, routes: [['/', dir]] });
  try {
    return await fn(server.url);
  } finally {
    await server.close();
  }
}

/** Loads `url` in Chromium and returns what the app says it read. */
async function appResult(url) {
  const page = await env.context.newPage();
  try {
    await page.goto(url);
    await page.waitForFunction(() => window.result !== undefined, null, { timeout: 30_000 });
    return await page.evaluate(() => window.result);
  } finally {
    await page.close();
  }
}

test('Node: import by name gives the Node build, async and sync', async () => {
  const script = `import { open, openSync, WalnutLockedError } from 'walnut-kv';
import { openSync as viaSync } from 'walnut-kv/sync';
const dir = process.argv[2];
const db = await open(dir);
await db.put('k', 'async');
await db.close();
const s = viaSync(dir);
const out = { read: s.get('k', { as: 'text' }), same: viaSync === openSync, locked: false };
try { openSync(dir); } catch (e) { out.locked = e instanceof WalnutLockedError; }
s.close();
console.log(JSON.stringify(out));`;
  writeFileSync(join(project, 'node-app.mjs'), script);
  const { stdout } = await run(process.execPath, [join(project, 'node-app.mjs'), join(project, 'node-store')], { cwd: project });
  assert.deepEqual(JSON.parse(stdout), { read: 'async', same: true, locked: true });
});

test('workerd: a Worker bundled from the installed package round-trips a large value in a Durable Object', async () => {
  const source = `import { DurableObject } from 'cloudflare:workers';
import { openDurableObject } from 'walnut-kv';
export class Store extends DurableObject {
  async fetch(request) {
    const db = openDurableObject(this.ctx.storage);
    const big = new Uint8Array(3 * 1024 * 1024).map((_, i) => i % 251);
    await db.putStream('big', new Blob([big]).stream());
    const back = db.get('big');
    db.close();
    return new Response(String(back.length === big.length && back.every((b, i) => b === big[i])));
  }
}
export default { fetch: (request, env) => env.STORE.get(env.STORE.idFromName('x')).fetch(request) };
`;
  writeFileSync(join(project, 'worker.mjs'), source);
  const dir = join(project, 'workerd');
  await bundle({ entry: join(project, 'worker.mjs'), dir, packageDir: join(project, 'node_modules', 'walnut-kv'), nodePaths: [] });
  const runtime = await start(dir);
  try {
    assert.equal(await (await runtime.fetch('/')).text(), 'true');
  } finally {
    await runtime.stop();
  }
});

test('Vite production build: the worker and the wasm are found in the output', async () => {
  const { build } = await import('vite');
  const outDir = join(web, 'dist-vite');
  await build({ root: web, logLevel: 'error', build: { outDir, emptyOutDir: true } });
  const assets = readdirSync(join(outDir, 'assets'));
  assert.ok(assets.some((f) => f.endsWith('.wasm')), `wasm in ${assets}`);
  assert.equal(await served(outDir, appResult), 'hello from a bundle');
});

test('webpack 5 production build (default config): the worker and the wasm are found in the output', async () => {
  const { default: webpack } = await import('webpack');
  const outDir = join(web, 'dist-webpack');
  const stats = await new Promise((resolve, reject) =>
    webpack({ mode: 'production', context: web, output: { path: outDir } }, (error, result) => (error ? reject(error) : resolve(result))),
  );
  assert.ok(!stats.hasErrors(), stats.toString('errors-only'));
  writeFileSync(join(outDir, 'index.html'), '<!doctype html><script src="./main.js"></script>\n');
  assert.equal(await served(outDir, appResult), 'hello from a bundle');
});

test('Vite dev server: with its default config, and with walnut-kv excluded from pre-bundling', async () => {
  const { createServer } = await import('vite');
  const results = {};
  for (const [label, config] of [
    ['default', {}],
    ['excluded', { optimizeDeps: { exclude: ['walnut-kv'] } }],
  ]) {
    const server = await createServer({ root: web, logLevel: 'silent', server: { port: 0, host: '127.0.0.1' }, ...config });
    await server.listen();
    try {
      results[label] = await appResult(server.resolvedUrls.local[0]).catch((e) => `no result: ${e.message.split('\n')[0]}`);
    } finally {
      await server.close();
    }
  }
  // Vite 8 keeps the package's new URL(..., import.meta.url) worker and wasm working through
  // its dependency pre-bundling; the exclusion the README mentions for older Vites works too.
  assert.deepEqual(results, { default: 'hello from a bundle', excluded: 'hello from a bundle' });
});
