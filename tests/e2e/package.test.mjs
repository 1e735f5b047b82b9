// The built package (pkg/): publint, its package.json, and how the server delivers its files.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { publint } from 'publint';
import { mergePackage } from '../../www/tools/merge-pkg.mjs';
import { startServer } from '../../www/tools/serve.mjs';

const repo = fileURLToPath(new URL('../../', import.meta.url));
const pkgDir = `${repo}pkg/`;
const manifest = JSON.parse(readFileSync(`${pkgDir}package.json`, 'utf8'));

test('publint finds no errors or warnings in pkg/', async () => {
  const { messages } = await publint({ pkgDir, level: 'warning', strict: false });
  assert.deepEqual(
    messages.map(({ type, code, path }) => `${type} ${code} at ${path.join('.')}`),
    [],
  );
});

test('pkg/package.json is the template merged into what wasm-pack wrote', () => {
  assert.equal(manifest.name, 'walnut-kv');
  assert.equal(manifest.type, 'module');
  const web = { types: './walnut.d.ts', default: './walnut.js' };
  const node = { types: './node.d.ts', default: './node.js' };
  const workerd = { types: './cloudflare.d.ts', default: './cloudflare.js' };
  // Conditions in the order a resolver must meet them: workerd before node (wrangler and
  // esbuild for Workers set both), node before browser and worker, default last.
  assert.deepEqual(manifest.exports['.'], { workerd, node, browser: web, worker: web, default: web });
  assert.deepEqual(Object.keys(manifest.exports['.']), ['workerd', 'node', 'browser', 'worker', 'default']);
  assert.deepEqual(manifest.exports['./sync'], { workerd, node, default: { types: './sync.d.ts', default: './sync.js' } });
  assert.deepEqual(manifest.exports['./cloudflare'], workerd);
  const modules = readdirSync(`${repo}www`).filter((f) => f.endsWith('.js'));
  const declarations = readdirSync(`${repo}www`).filter((f) => f.endsWith('.d.ts'));
  for (const file of [...modules, ...declarations, 'walnut_core.js', 'walnut_core_bg.wasm', 'walnut_core.d.ts']) {
    assert.ok(manifest.files.includes(file), `files lists ${file}`);
    assert.ok(existsSync(`${pkgDir}${file}`), `pkg/${file} exists`);
  }
  assert.ok(manifest.sideEffects.includes('./worker.js'), 'worker.js is marked as having side effects');
  assert.ok(manifest.version, 'the version comes from Cargo.toml');
});

/** The names a declaration file exports (classes, functions, constants, and re-exported ones). */
function declared(file) {
  const text = readFileSync(`${pkgDir}${file}`, 'utf8');
  const direct = [...text.matchAll(/^export (?:declare )?(?:class|function|const) (\w+)/gm)].map((m) => m[1]);
  const reexported = [...text.matchAll(/^export \{([^}]*)\} from/gm)].flatMap((m) =>
    m[1].split(',').map((n) => n.trim()).filter(Boolean),
  );
  return [...new Set([...direct, ...reexported])].sort();
}

/** The names a module exports, read from its source (for cloudflare.js, which imports a .wasm). */
function exportedInSource(file) {
  const text = readFileSync(`${pkgDir}${file}`, 'utf8');
  const direct = [...text.matchAll(/^export (?:async )?(?:class|function|const) (\w+)/gm)].map((m) => m[1]);
  const reexported = [...text.matchAll(/^export \{([^}]*)\} from/gm)].flatMap((m) =>
    m[1].split(',').map((n) => n.trim().split(' as ').at(-1)).filter(Boolean),
  );
  return [...new Set([...direct, ...reexported])].sort();
}

test('each entry point declares exactly what it exports', async () => {
  for (const [module, types] of [
    ['walnut.js', 'walnut.d.ts'],
    ['sync.js', 'sync.d.ts'],
    ['node.js', 'node.d.ts'],
  ]) {
    const runtime = Object.keys(await import(`${pkgDir}${module}`)).sort();
    assert.deepEqual(declared(types), runtime, `${types} against ${module}`);
  }
  assert.deepEqual(declared('cloudflare.d.ts'), exportedInSource('cloudflare.js'), 'cloudflare.d.ts against cloudflare.js');
});

test('the declarations type-check a sample of correct and incorrect usage', async () => {
  const tsc = `${repo}node_modules/.bin/tsc`;
  const result = await promisify(execFile)(tsc, ['-p', `${repo}tests/e2e/types`]).catch((error) => error);
  assert.equal(result.code ?? 0, 0, `tsc failed:\n${result.stdout}${result.stderr}`);
});

test('mergePackage: template wins, objects merge deeply, files are unioned', () => {
  const generated = {
    name: 'walnut',
    version: '1.2.3',
    files: ['a.js', 'b.wasm'],
    sideEffects: ['./snippets/*'],
    nested: { keep: 1, replace: 'old', deeper: { x: 1 } },
  };
  const template = {
    name: 'walnut-kv',
    files: ['b.wasm', 'c.js'],
    sideEffects: ['./worker.js'],
    nested: { replace: 'new', deeper: { y: 2 } },
  };
  assert.deepEqual(mergePackage(generated, template), {
    name: 'walnut-kv',
    version: '1.2.3',
    files: ['a.js', 'b.wasm', 'c.js'],
    sideEffects: ['./worker.js'],
    nested: { keep: 1, replace: 'new', deeper: { x: 1, y: 2 } },
  });
  assert.deepEqual(generated.nested, { keep: 1, replace: 'old', deeper: { x: 1 } }, 'inputs untouched');
});

let server;
before(async () => {
  server = await startServer({ port: 0 });
});
after(() => server?.close());

test('the server sends wasm and JavaScript with the right types', async () => {
  const types = {};
  for (const path of ['pkg/walnut_core_bg.wasm', 'pkg/walnut.js', 'pkg/worker.js', 'tests/e2e/fixtures/', '', 'demo.js']) {
    const response = await fetch(server.url + path);
    assert.equal(response.status, 200, path);
    types[path] = response.headers.get('content-type');
    await response.arrayBuffer();
  }
  assert.deepEqual(types, {
    'pkg/walnut_core_bg.wasm': 'application/wasm',
    'pkg/walnut.js': 'text/javascript',
    'pkg/worker.js': 'text/javascript',
    'tests/e2e/fixtures/': 'text/html;charset=utf-8',
    '': 'text/html;charset=utf-8',
    'demo.js': 'text/javascript',
  });
  const missing = await fetch(`${server.url}pkg/nope.js`);
  assert.equal(missing.status, 404);
  const escape = await fetch(`${server.url}pkg/..%2f..%2fCargo.toml`);
  assert.equal(escape.status, 404);
  const vendored = await fetch(`${server.url}vendor/noble-hashes/sha2.js`);
  assert.equal(vendored.status, 200);
  await Promise.all([missing.arrayBuffer(), escape.arrayBuffer(), vendored.arrayBuffer()]);
});
