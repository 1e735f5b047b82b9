// A dedicated worker that hosts one contender: `{ contender }` once, then `{ workload, params }`
// requests, one at a time, each answered with `{ value }` or `{ error }`.
import { createHost } from './host.js';

let host;
self.onmessage = async ({ data }) => {
  if (data.contender) {
    host = createHost(data.contender);
    return;
  }
  try {
    self.postMessage({ value: await host.call(data.workload, data.params) });
  } catch (error) {
    self.postMessage({ error: error instanceof Error ? `${error.name}: ${error.message}\n${error.stack}` : String(error) });
  }
};
