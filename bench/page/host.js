// Runs workloads for one contender, in the page or in a dedicated worker (host-worker.js).
import { CONTENDERS } from './plan.js';
import * as workloads from './workloads.js';

/**
 * A host for one contender: `call(workload, params)` runs a workload function of workloads.js
 * with the contender's module; state is kept between calls (the memory workload's steps).
 * @param {string} id a contender id from plan.js
 */
export function createHost(id) {
  const { module, batches } = CONTENDERS.find((c) => c.id === id);
  const contender = import(module);
  const state = {};
  return {
    async call(workload, params) {
      return workloads[workload](await contender, { ...params, batches }, state);
    },
  };
}
