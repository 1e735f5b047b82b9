// Memory of the bench page and its dedicated workers, read through the Chrome DevTools
// Protocol. `performance.measureUserAgentSpecificMemory()` would need a cross-origin-isolated
// page and answers only at the next GC (seconds later), so it cannot follow a peak; CDP can:
//
// - JS heap: `Runtime.getHeapUsage` per target: V8's used heap + Blink's (Oilpan) heap +
//   `backingStorageSize` (ArrayBuffer contents, where stream chunks live). Garbage not yet
//   collected counts: it is memory the process holds.
// - wasm memory: not in those figures. The `WebAssembly.Memory` objects of each worker are
//   found once with `Runtime.queryObjects` and their `buffer.byteLength` read at every sample.
//
// Workers are reached through auto-attach on the page's CDP session, with messages wrapped in
// `Target.sendMessageToTarget`: playwright's CDP sessions cannot address a flattened child
// session. Now and then a terminated worker's session is never detached and never answers: a
// worker that has not answered within WORKER_TIMEOUT_MS is taken for gone.

const SAMPLE_MS = 25;
const LIVE_SAMPLE_MS = 100;
const WORKER_TIMEOUT_MS = 10_000;

/**
 * @param {import('playwright-core').BrowserContext} context
 * @param {import('playwright-core').Page} page
 */
export async function memoryProbe(context, page) {
  const cdp = await context.newCDPSession(page);
  /** Worker sessions: id -> { pending: Map<message id, { resolve, reject }>, memories?: objectId } */
  const workers = new Map();
  let nextId = 1;

  cdp.on('Target.attachedToTarget', ({ sessionId, targetInfo }) => {
    if (targetInfo.type === 'worker') workers.set(sessionId, { pending: new Map() });
  });
  const forget = (sessionId) => {
    const worker = workers.get(sessionId);
    workers.delete(sessionId);
    for (const { reject } of worker?.pending.values() ?? []) reject(new Error('the worker went away'));
  };
  cdp.on('Target.detachedFromTarget', ({ sessionId }) => forget(sessionId));
  cdp.on('Target.receivedMessageFromTarget', ({ sessionId, message }) => {
    const { id, result, error } = JSON.parse(message);
    const waiter = workers.get(sessionId)?.pending.get(id);
    if (!waiter) return;
    workers.get(sessionId).pending.delete(id);
    if (error) waiter.reject(new Error(`${error.message} (${error.code})`));
    else waiter.resolve(result);
  });
  await cdp.send('Target.setAutoAttach', { autoAttach: true, waitForDebuggerOnStart: false, flatten: false });

  /** Sends a CDP command to a worker session, or to the page without one. */
  const send = (sessionId, method, params = {}) => {
    if (!sessionId) return cdp.send(method, params);
    const worker = workers.get(sessionId);
    if (!worker) return Promise.reject(new Error('the worker went away'));
    const id = nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => forget(sessionId), WORKER_TIMEOUT_MS);
      const settle = (action) => (value) => {
        clearTimeout(timer);
        action(value);
      };
      worker.pending.set(id, { resolve: settle(resolve), reject: settle(reject) });
      cdp.send('Target.sendMessageToTarget', { sessionId, message: JSON.stringify({ id, method, params }) }).catch(reject);
    });
  };
  const targets = () => [undefined, ...workers.keys()];

  /** Bytes of one target's JS heap, and of its wasm memories once they are tracked. */
  const measure = async (sessionId) => {
    const heap = await send(sessionId, 'Runtime.getHeapUsage');
    const js = heap.usedSize + (heap.embedderHeapUsedSize ?? 0) + (heap.backingStorageSize ?? 0);
    const memories = sessionId && workers.get(sessionId)?.memories;
    if (!memories) return { js, wasm: 0 };
    const sizes = await send(sessionId, 'Runtime.callFunctionOn', {
      objectId: memories,
      functionDeclaration: 'function () { return this.reduce((sum, m) => sum + m.buffer.byteLength, 0); }',
      returnByValue: true,
    });
    return { js, wasm: sizes.result.value };
  };

  /** One sample over every target: { js, wasm, total } in bytes. A worker ending meanwhile is left out. */
  const sample = async () => {
    const parts = await Promise.all(targets().map((sessionId) => measure(sessionId).catch(() => ({ js: 0, wasm: 0 }))));
    const js = parts.reduce((sum, part) => sum + part.js, 0);
    const wasm = parts.reduce((sum, part) => sum + part.wasm, 0);
    return { js, wasm, total: js + wasm };
  };

  return {
    /** Full garbage collection in every target. */
    async collectGarbage() {
      await Promise.all(targets().map((sessionId) => send(sessionId, 'HeapProfiler.collectGarbage').catch(() => {})));
    },
    /** Finds the wasm memories of the workers alive now; later samples include their sizes. */
    async trackWasm() {
      const track = async (sessionId) => {
        const { result: prototype } = await send(sessionId, 'Runtime.evaluate', { expression: 'WebAssembly.Memory.prototype' });
        const { objects } = await send(sessionId, 'Runtime.queryObjects', { prototypeObjectId: prototype.objectId });
        workers.get(sessionId).memories = objects.objectId;
      };
      await Promise.all([...workers.keys()].map((sessionId) => track(sessionId).catch(() => {})));
    },
    sample,
    /**
     * Samples every SAMPLE_MS while `work` runs, and once after it. With `live`, every sample
     * follows a full GC (and they come every LIVE_SAMPLE_MS): the peak of what is still
     * referenced, without the garbage V8 has not yet collected.
     * @returns {Promise<{ js: number, wasm: number, total: number }>} the sample of the highest total
     */
    async peakDuring(work, { live = false } = {}) {
      const measure = async () => {
        if (live) await this.collectGarbage();
        return sample();
      };
      let finished = false;
      const done = work.finally(() => (finished = true));
      let peak = await measure();
      while (!finished) {
        const pause = new Promise((resolve) => setTimeout(resolve, live ? LIVE_SAMPLE_MS : SAMPLE_MS));
        await Promise.race([done.catch(() => {}), pause]);
        const now = await measure();
        if (now.total > peak.total) peak = now;
      }
      await done;
      return peak;
    },
    close: () => cdp.detach(),
  };
}
