// The bench page's side of the harness: starts contender hosts (a dedicated worker each, or the
// page itself for walnut), forwards workload calls to them with the chosen Files, and clears
// the origin's storage between runs. The Node harness drives it through `window.bench`.
import { createHost } from './host.js';
import { CONTENDERS } from './plan.js';

/** @type {Map<number, { call: (workload: string, params: object) => Promise<object>, end: () => void }>} */
const hosts = new Map();
let nextHost = 1;

/** A host in a dedicated worker; requests go one at a time. */
function workerHost(contender) {
  const worker = new Worker(new URL('./host-worker.js', import.meta.url), { type: 'module', name: `bench:${contender}` });
  worker.postMessage({ contender });
  return {
    call: (workload, params) =>
      new Promise((resolve, reject) => {
        worker.onmessage = ({ data }) => (data.error ? reject(new Error(data.error)) : resolve(data.value));
        worker.onerror = (event) => reject(new Error(`the ${contender} worker failed: ${event.message}`));
        worker.postMessage({ workload, params });
      }),
    end: () => worker.terminate(),
  };
}

/** Replaces a file input's id in `params.file` by the File chosen in it. */
function withFile(params) {
  if (!params.file) return params;
  const file = document.getElementById(params.file).files[0];
  if (!file) throw new Error(`no file chosen in #${params.file}`);
  return { ...params, file };
}

/**
 * Retries `action` while OPFS reports the entry as locked: a sync access handle closed by a
 * worker that just ended is released a little later.
 */
async function whileLocked(action, timeoutMs = 10_000) {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    try {
      return await action();
    } catch (error) {
      const locked = error?.name === 'NoModificationAllowedError' || error?.name === 'InvalidModificationError';
      if (!locked || performance.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

/** @param {string} name */
function deleteDatabase(name) {
  return new Promise((resolve, reject) => {
    const request = indexedDB.deleteDatabase(name);
    request.onsuccess = resolve; // after `blocked`, once the last connection closed
    request.onerror = () => reject(request.error);
  });
}

window.bench = {
  /** Starts a host for a contender; returns its id. */
  begin(contender) {
    const { host } = CONTENDERS.find((c) => c.id === contender);
    const id = nextHost++;
    hosts.set(id, host === 'page' ? { ...createHost(contender), end() {} } : workerHost(contender));
    return id;
  },
  /** Runs a workload in a host; resolves to its metrics. */
  call(id, workload, params) {
    return hosts.get(id).call(workload, withFile(params));
  },
  end(id) {
    hosts.get(id).end();
    hosts.delete(id);
  },
  /** Removes every OPFS entry and IndexedDB database of the origin. */
  async clear() {
    const root = await navigator.storage.getDirectory();
    for (const name of await Array.fromAsync(root.keys())) await whileLocked(() => root.removeEntry(name, { recursive: true }));
    for (const { name } of await indexedDB.databases()) await deleteDatabase(name);
  },
};
