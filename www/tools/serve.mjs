#!/usr/bin/env node
/**
 * Static server for the demo and the end-to-end tests.
 *
 *   node www/tools/serve.mjs [--host 127.0.0.1] [--port 8080]
 *
 * Routes: `/pkg/` → pkg/ (the built package), `/vendor/noble-hashes/` → the SHA-256 library the
 * demo imports, `/tests/e2e/fixtures/` → the test pages, `/` → www/demo/. Files are read on
 * every request (no caching), so a rebuilt pkg/ is served at once.
 */
import { existsSync } from 'node:fs';
import { createServer } from 'node:http';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import sirv from 'sirv';

const root = fileURLToPath(new URL('../../', import.meta.url));

/** URL prefix → directory under the repository root. The first matching prefix wins. */
const ROUTES = [
  ['/pkg/', 'pkg'],
  ['/vendor/noble-hashes/', 'node_modules/@noble/hashes'],
  ['/tests/e2e/fixtures/', 'tests/e2e/fixtures'],
  ['/tests/conformance/', 'tests/conformance'],
  ['/', 'www/demo'],
];

/**
 * Starts the server.
 * @param {{ host?: string, port?: number, routes?: Array<[string, string]>, headers?: Record<string, string> }} [options]
 *   port 0 picks a free port; `routes` adds [URL prefix, absolute directory] pairs ahead of the
 *   usual ones; `headers` are set on every file served
 * @returns {Promise<{ url: string, close: () => Promise<void> }>} url ends with a slash
 */
export async function startServer({ host = '127.0.0.1', port = 0, routes = [], headers = {} } = {}) {
  const setHeaders = (res) => {
    for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
  };
  const handlers = [...routes, ...ROUTES.map(([prefix, dir]) => [prefix, root + dir])].map(([prefix, dir]) => [
    prefix,
    sirv(dir, { dev: true, etag: true, setHeaders }),
  ]);
  const server = createServer((req, res) => {
    const [prefix, handler] = handlers.find(([p]) => req.url.startsWith(p));
    req.url = req.url.slice(prefix.length - 1); // keep the leading slash
    handler(req, res, () => {
      res.writeHead(404, { 'Content-Type': 'text/plain;charset=utf-8' });
      res.end(`not found: ${prefix}${req.url.slice(1)}\n`);
    });
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  const address = server.address();
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${shownHost}:${address.port}/`,
    close: () =>
      new Promise((resolve, reject) => {
        server.closeAllConnections();
        server.close((error) => (error ? reject(error) : resolve()));
      }),
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === resolve(process.argv[1])) {
  const { values } = parseArgs({
    options: {
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: '8080' },
    },
  });
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`--port must be an integer from 0 to 65535, got ${values.port}`);
    process.exit(2);
  }
  if (!existsSync(root + 'pkg/walnut.js')) {
    console.warn('pkg/walnut.js is missing: build the package with `make pkg` first.');
  }
  const { url } = await startServer({ host: values.host, port });
  console.log(`walnut demo: ${url}`);
}
