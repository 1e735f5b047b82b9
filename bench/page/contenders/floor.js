// The floor of a call from the page: a Map in a dedicated worker, one postMessage there and one
// back per call, as plain as it can be (no batching, no ids beyond a counter, nothing durable).
// It is what any store living in a worker pays per call from the page before doing any work;
// walnut's page API pays it too. Only in the workloads of single small calls (seq, gets).
const WORKER = `
const map = new Map();
self.onmessage = ({ data: [id, op, key, value] }) => {
  if (op === 'put') { map.set(key, value); self.postMessage([id]); }
  else if (op === 'get') { const v = map.get(key); self.postMessage([id, v]); }
  else if (op === 'batch') { for (const [k, v] of value) map.set(k, v); self.postMessage([id]); }
};`;

/** @param {string} _name */
export async function open(_name) {
  const url = URL.createObjectURL(new Blob([WORKER], { type: 'text/javascript' }));
  const worker = new Worker(url, { name: 'bench:floor' });
  URL.revokeObjectURL(url);
  const pending = new Map();
  let next = 0;
  worker.onmessage = ({ data: [id, value] }) => {
    const resolve = pending.get(id);
    pending.delete(id);
    resolve(value);
  };
  const call = (op, key, value) =>
    new Promise((resolve) => {
      pending.set(next, resolve);
      worker.postMessage([next++, op, key, value]);
    });
  return {
    put: (key, value) => call('put', key, value),
    batch: (entries) => call('batch', undefined, entries),
    get: (key) => call('get', key),
    close: async () => worker.terminate(),
  };
}
