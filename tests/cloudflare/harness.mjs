// Runs a worker in workerd, as a user's Worker would run: bundled with esbuild as wrangler
// bundles it (conditions workerd, worker, browser; the .wasm kept as a compiled module), a
// Durable Object namespace with SQLite storage persisted to a directory on disk, one HTTP
// socket. The runtime can be killed with SIGKILL and started again on the same storage.
import { spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import getPort from 'get-port';

const require = createRequire(import.meta.url);
export const repo = fileURLToPath(new URL('../../', import.meta.url));
/** The workerd binary npm ships. */
export const WORKERD = require('workerd').default;

/**
 * Bundles `entry` into `dir`/worker.js with walnut-kv resolved to `packageDir` (pkg/, or an
 * installed package), and copies the wasm beside it.
 * @param {{ entry: string, dir: string, packageDir?: string, nodePaths?: string[] }} options
 */
export async function bundle({ entry, dir, packageDir = `${repo}pkg`, nodePaths }) {
  mkdirSync(dir, { recursive: true });
  await build({
    entryPoints: [entry],
    outfile: join(dir, 'worker.js'),
    bundle: true,
    format: 'esm',
    platform: 'neutral',
    conditions: ['workerd', 'worker', 'browser'],
    mainFields: ['module', 'main'],
    external: ['cloudflare:*', '*.wasm'],
    alias: nodePaths ? undefined : { 'walnut-kv': packageDir },
    nodePaths,
    logLevel: 'error',
  });
  copyFileSync(join(packageDir, 'walnut_core_bg.wasm'), join(dir, 'walnut_core_bg.wasm'));
}

/**
 * Writes the workerd config for the bundle in `dir`: a Durable Object class `Store` with
 * SQLite storage in `dir`/do, bound as STORE.
 */
function config(dir, port) {
  mkdirSync(join(dir, 'do'), { recursive: true });
  const text = `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "main", worker = .worker),
    (name = "disk", disk = (path = "${join(dir, 'do')}", writable = true)),
  ],
  sockets = [(name = "http", address = "127.0.0.1:${port}", http = (), service = "main")],
);
const worker :Workerd.Worker = (
  modules = [
    (name = "worker.js", esModule = embed "worker.js"),
    (name = "walnut_core_bg.wasm", wasm = embed "walnut_core_bg.wasm"),
  ],
  compatibilityDate = "2025-09-01",
  durableObjectNamespaces = [(className = "Store", uniqueKey = "walnut-test", enableSql = true)],
  durableObjectStorage = (localDisk = "disk"),
  bindings = [(name = "STORE", durableObjectNamespace = "Store")],
);
`;
  writeFileSync(join(dir, 'config.capnp'), text);
}

/**
 * Starts workerd on the bundle in `dir`; resolves once it answers.
 * @returns {Promise<{ url: string, fetch: (path: string, init?: RequestInit) => Promise<Response>, kill: () => Promise<void>, stop: () => Promise<void> }>}
 */
export async function start(dir) {
  const port = await getPort({ host: '127.0.0.1' });
  config(dir, port);
  const child = spawn(WORKERD, ['serve', join(dir, 'config.capnp'), '--verbose'], {
    cwd: dir,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
    if (process.env.WALNUT_WORKERD_LOG) process.stderr.write(d);
  });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve(signal ?? code)));
  const url = `http://127.0.0.1:${port}`;
  for (let tries = 0; ; tries++) {
    const up = await fetch(`${url}/ping`).then(
      () => true,
      () => false,
    );
    if (up) break;
    if (child.exitCode !== null || tries > 300) throw new Error(`workerd did not start:\n${stderr}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    url,
    fetch: (path, init) => fetch(url + path, init),
    /** SIGKILL: the runtime dies at once, as a machine would. */
    kill: async () => {
      child.kill('SIGKILL');
      await exited;
    },
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
    },
    log: () => stderr,
  };
}
