// The Durable Object benchmark's worker (bench/cloudflare.mjs runs it in workerd): rows written
// per small strict put and per MiB of a large value, walnut (its SQL writes counted through
// each statement's cursor) beside the same values stored with the object's synchronous KV API.
import { DurableObject } from 'cloudflare:workers';
import { openDurableObject } from 'walnut-kv/cloudflare';

const MiB = 1024 * 1024;
/** The largest value `kv.put` takes: key + value must stay under 2 MB. (A part must be its own buffer:
 * kv.put of a view stores the whole buffer under it.) */
const KV_LIMIT = 2_000_000 - 64;

/** The object's storage, with the rows its SQL statements write counted. */
function counted(storage) {
  const count = { rows: 0 };
  const sql = {
    exec(query, ...bindings) {
      const cursor = storage.sql.exec(query, ...bindings);
      const rows = cursor.toArray();
      count.rows += cursor.rowsWritten;
      return Object.assign(rows, { toArray: () => rows });
    },
  };
  return { count, storage: { sql, transactionSync: (fn) => storage.transactionSync(fn) } };
}

function time(fn) {
  const start = performance.now();
  fn();
  return performance.now() - start;
}

export class Store extends DurableObject {
  async fetch(request) {
    try {
      return await this.measure(request);
    } catch (error) {
      return new Response(`${error.name}: ${error.message}\n${error.stack}`, { status: 500 });
    }
  }

  async measure(request) {
    const url = new URL(request.url);
    if (url.pathname === '/ping') return new Response('up');
    if (url.pathname === '/whole') {
      // A whole large value through kv.put, in an object of its own: the write fails when it
      // commits, and the failure resets the object.
      try {
        this.ctx.storage.kv.put('whole', new Uint8Array(Number(url.searchParams.get('large')) * MiB));
        await this.ctx.storage.sync();
        return new Response('accepted');
      } catch (error) {
        return new Response(`${error.name}: ${error.message}`);
      }
    }
    const small = Number(url.searchParams.get('small'));
    const large = Number(url.searchParams.get('large')) * MiB;
    const pageSize = Number(url.searchParams.get('pageSize'));
    const run = url.searchParams.get('run');
    const { count, storage } = counted(this.ctx.storage);
    const db = openDurableObject(storage, { name: `bench-${run}-${pageSize}`, pageSize });
    const value = new Uint8Array(128).fill(7);
    count.rows = 0;
    const walnutSmallMs = time(() => {
      for (let i = 0; i < small; i++) db.put(`small-${i}`, value);
    });
    const walnutSmallRows = count.rows;
    const big = new Uint8Array(large).map((_, i) => i % 251);
    count.rows = 0;
    const start = performance.now();
    await db.putStream('large', new Blob([big]).stream());
    const walnutLargeMs = performance.now() - start;
    const walnutLargeRows = count.rows;
    db.close();

    // The same with kv.put: one row per value (the platform's rule), a large value split by the
    // caller into parts under the 2 MB limit (kv.put refuses more: tried below).
    const kv = this.ctx.storage.kv;
    const kvSmallMs = time(() => {
      for (let i = 0; i < small; i++) kv.put(`kv-small-${run}-${i}`, value);
    });
    const parts = Math.ceil(large / KV_LIMIT);
    const kvLargeMs = time(() => {
      for (let p = 0; p < parts; p++) kv.put(`kv-large-${run}-${p}`, big.slice(p * KV_LIMIT, (p + 1) * KV_LIMIT));
    });
    return Response.json({
      walnut: { smallRows: walnutSmallRows, smallMs: walnutSmallMs, largeRows: walnutLargeRows, largeMs: walnutLargeMs },
      kv: { smallRows: small, smallMs: kvSmallMs, largeRows: parts, largeMs: kvLargeMs },
    });
  }
}

export default {
  fetch: (request, env) => {
    const object = new URL(request.url).pathname === '/whole' ? 'probe' : 'bench';
    return env.STORE.get(env.STORE.idFromName(object)).fetch(request);
  },
};
