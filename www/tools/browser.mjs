// Debian's Chromium, headless, driven by playwright-core, for the end-to-end tests and the
// benchmarks: the static server and a persistent context with a new, temporary profile. A
// persistent context keeps OPFS and IndexedDB on disk; an incognito one (browser.newContext())
// would keep them in memory.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { startServer } from './serve.mjs';

export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/**
 * Starts the server and Chromium with a new profile; close() stops both and deletes the profile.
 * @param {{ routes?: Array<[string, string]>, headers?: Record<string, string> }} [options] extra
 *   server routes, headers set on every file served (see serve.mjs)
 * @returns {Promise<{ url: string, context: import('playwright-core').BrowserContext, close: () => Promise<void> }>}
 */
export async function launch({ routes, headers } = {}) {
  const server = await startServer({ port: 0, routes, headers });
  const profile = await mkdtemp(join(tmpdir(), 'walnut-chromium-profile-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ARGS,
    });
  } catch (error) {
    await server.close();
    await rm(profile, { recursive: true, force: true });
    throw error;
  }
  return {
    url: server.url,
    context,
    async close() {
      await context.close();
      await server.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}
