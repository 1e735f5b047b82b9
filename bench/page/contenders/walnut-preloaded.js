// walnut as an app that calls preload() at start-up opens it: the worker is started and the
// WebAssembly module loaded before open() is called (and timed).
import { preload } from '/pkg/walnut.js';

export { open } from './walnut.js';

/** Called before the clock starts: readies a worker, then gives it time to start. */
export async function prepare() {
  preload();
  await new Promise((resolve) => setTimeout(resolve, 250));
}
