// The conformance suite's browser homes: the page API (walnut-kv) on this page, and the
// synchronous store (walnut-kv/sync) in a dedicated worker (worker.mjs). The test drivers
// (Playwright for Chromium, WebDriver for Firefox) call window.conformance.
import * as walnut from '/pkg/walnut.js';
import { crashes, runCases } from './suite.mjs';

const LARGE = 2.5 * 1024 * 1024;

/** An async iterable as the ReadableStream the page API's put() takes. */
function streamOf(iterable) {
  const it = iterable[Symbol.asyncIterator]();
  return new ReadableStream({
    async pull(controller) {
      const { done, value } = await it.next();
      if (done) controller.close();
      else controller.enqueue(value);
    },
    cancel: () => it.return?.(),
  });
}

const pageHome = {
  sync: false,
  direct: false,
  large: LARGE,
  open: (name, options) => walnut.open(name, options),
  stream: streamOf,
};

/** Runs `message` in a new worker of worker.mjs; resolves with its answer. */
function inWorker(message, onWorker) {
  const worker = new Worker(new URL('./worker.mjs', import.meta.url), { type: 'module' });
  onWorker?.(worker);
  return new Promise((resolve, reject) => {
    worker.onmessage = ({ data }) => resolve(data);
    worker.onerror = (event) => reject(new Error(`worker error: ${event.message}`));
    worker.postMessage(message);
  });
}

window.conformance = {
  /** Every case on the page API. */
  page: (only) => runCases(pageHome, only),
  /** Every case on the synchronous store in a dedicated worker. */
  worker: async (only) => {
    let worker;
    const results = await inWorker({ cmd: 'run', only }, (w) => (worker = w));
    worker.terminate();
    return results;
  },
  /**
   * Crash case `index`: its write half, then a crash (the page API's worker terminated, or the
   * worker holding the synchronous store terminated), then its check half. Resolves with
   * 'ok' or the error.
   */
  crash: async (home, index) => {
    const c = crashes[index];
    const name = `${c.store}-${home}-${Date.now().toString(36)}`;
    try {
      if (home === 'page') {
        const db = await c.write(pageHome, name);
        db.terminate();
        await c.check(pageHome, name);
        return 'ok';
      }
      let victim;
      const ready = await inWorker({ cmd: 'crashWrite', index, name }, (w) => (victim = w));
      if (ready !== 'ready') return `write: ${ready}`;
      victim.terminate();
      let checker;
      const checked = await inWorker({ cmd: 'crashCheck', index, name }, (w) => (checker = w));
      checker.terminate();
      return checked;
    } catch (error) {
      return `${error.name}: ${error.message}`;
    }
  },
};
