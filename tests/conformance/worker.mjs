// The synchronous store's home for the conformance suite: a dedicated worker that opens its
// stores with walnut-kv/sync (OPFS, in this worker) and runs what page.mjs asks.
import { openSync } from '/pkg/sync.js';
import { crashes, runCases } from './suite.mjs';

const home = {
  sync: true,
  direct: true,
  large: 2.5 * 1024 * 1024,
  open: (name, options) => openSync(name, options),
  stream: (iterable) => iterable,
};

self.onmessage = async ({ data }) => {
  try {
    if (data.cmd === 'run') {
      postMessage(await runCases(home, data.only));
    } else if (data.cmd === 'crashWrite') {
      await crashes[data.index].write(home, data.name);
      postMessage('ready'); // terminated by the page from here on
    } else if (data.cmd === 'crashCheck') {
      await crashes[data.index].check(home, data.name);
      postMessage('ok');
    }
  } catch (error) {
    postMessage(`${error.name}: ${error.message}`);
  }
};
