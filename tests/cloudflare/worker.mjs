// The test worker for workerd: a Durable Object class whose storage holds walnut stores, with
// endpoints for the conformance suite (tests/conformance/suite.mjs) and for a workload that the
// test kills with SIGKILL. Bundled by harness.mjs with esbuild, as wrangler would.
import { DurableObject } from 'cloudflare:workers';
import { DurableObjectVolume, openDurableObject } from 'walnut-kv/cloudflare';
import { bytes, crashes, runCases } from '../conformance/suite.mjs';

const LARGE = 2.5 * 1024 * 1024;

/** The value the workload writes under key `w<i>`: 3 MiB for every tenth, else small. */
function workloadValue(i) {
  return bytes(i % 10 === 0 ? 3 * 1024 * 1024 : 100 + (i % 300), i + 1);
}

/**
 * A store whose volume's next release fails: the release's write-back (`transactionSync`)
 * throws once, as SQLITE_FULL or an I/O error would, after the volume already counts the file
 * free. Before the fix the next segment rotation took that file's id back from `create()`,
 * which the core refused ("in use"), poisoning the store; a core that accepted it put a new
 * segment in a file it released again later. Returns what went wrong, or null.
 */
function releaseFails(ctxStorage, name) {
  let failNext = false;
  const storage = {
    sql: ctxStorage.sql,
    transactionSync: (fn) => {
      if (failNext) {
        failNext = false;
        throw new Error('SQLITE_IOERR: disk I/O error (injected)');
      }
      return ctxStorage.transactionSync(fn);
    },
  };
  const release = DurableObjectVolume.prototype.release;
  let failed = null;
  const failing = function (id) {
    if (failed === null) {
      failed = id;
      failNext = true;
    }
    return release.call(this, id);
  };
  const value = (i) => bytes(1500, i + 1);
  const options = { name, segmentSize: 4096, checkpointBytes: 0 };
  const written = new Map();
  try {
    // Files the volume finds at open (not handed out by this session's create()) too.
    DurableObjectVolume.prototype.release = release;
    let db = openDurableObject(storage, options);
    for (let i = 0; i < 40; i++) {
      db.put(`k${i % 7}`, value(i));
      written.set(`k${i % 7}`, i);
    }
    db.close();
    DurableObjectVolume.prototype.release = failing;
    db = openDurableObject(storage, options);
    for (let i = 40; i < 340; i++) {
      try {
        db.put(`k${i % 7}`, value(i));
        written.set(`k${i % 7}`, i);
      } catch (error) {
        return `put ${i} after release of file ${failed} failed: ${error.name}: ${error.message}`;
      }
    }
    if (failed === null) return 'no release happened';
    db.close();
    db = openDurableObject(storage, options);
    for (const [key, i] of written) {
      if (!same(db.get(key), value(i))) return `${key}: not the value last put (${i}) after a reopen`;
    }
    db.close();
    return null;
  } finally {
    DurableObjectVolume.prototype.release = release;
  }
}

function same(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * The page volume against a model (a byte array per file) over random steps: writes at any
 * offset and length (across pages, past the end), cuts and zero-extensions, reads anywhere,
 * releases and creates, flushes, and reopens from the storage, after which only what was
 * flushed stands. Returns the first difference, or null.
 */
function volumeModel(storage, seed, steps) {
  let x = seed || 1;
  const rand = (n) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
  const name = `model-${seed}`;
  const pageSize = 4096;
  let volume = DurableObjectVolume.open(storage, { name, pageSize });
  let live = new Map(); // what the volume shows
  let durable = new Map(); // what a reopen must show (as of the last flush)
  const copy = (m) => new Map([...m].map(([id, b]) => [id, b.slice()]));
  const resize = (b, len) => {
    const out = new Uint8Array(len);
    out.set(b.subarray(0, Math.min(len, b.length)));
    return out;
  };
  let writeBacks = volume.stats.transactions;
  for (let step = 0; step < steps; step++) {
    // A write-back (a flush, a release, or a write past the dirty limit) makes every file as
    // it stands durable.
    if (volume.stats.transactions !== writeBacks) {
      writeBacks = volume.stats.transactions;
      durable = copy(live);
    }
    const ids = [...live.keys()];
    const id = ids.length > 0 ? ids[rand(ids.length)] : undefined;
    const op = id === undefined ? 0 : rand(10);
    if (op === 0) {
      const created = volume.create();
      if (live.has(created) && live.get(created).length > 0) return `step ${step}: create gave file ${created}, which holds data`;
      live.set(created, new Uint8Array(0));
    } else if (op <= 3) {
      const b = live.get(id);
      const offset = rand(b.length + 2 * pageSize);
      const data = new Uint8Array(1 + rand(3 * pageSize)).map(() => rand(256));
      volume.write(id, offset, data);
      const grown = resize(b, Math.max(b.length, offset + data.length));
      grown.set(data, offset);
      live.set(id, grown);
    } else if (op === 4) {
      const b = live.get(id);
      const len = rand(b.length + pageSize + 1);
      volume.truncate(id, len);
      live.set(id, resize(b, len));
    } else if (op <= 6) {
      const b = live.get(id);
      const offset = rand(b.length + pageSize);
      const into = new Uint8Array(rand(2 * pageSize + 1)).fill(0xee);
      const n = volume.read(id, offset, into);
      const want = b.subarray(Math.min(offset, b.length), Math.min(b.length, offset + into.length));
      if (n !== want.length || into.subarray(0, n).some((v, i) => v !== want[i])) {
        return `step ${step}: read of file ${id} at ${offset}, ${into.length} bytes, differs (got ${n}, expected ${want.length})`;
      }
      if (volume.size(id) !== b.length) return `step ${step}: size of file ${id} is ${volume.size(id)}, expected ${b.length}`;
    } else if (op === 7) {
      volume.flush(id);
    } else if (op === 8) {
      volume.release(id);
      live.set(id, new Uint8Array(0));
    } else {
      if (volume.stats.transactions !== writeBacks) durable = copy(live);
      volume.close();
      volume = DurableObjectVolume.open(storage, { name, pageSize: 65536 }); // the stored page size wins
      writeBacks = volume.stats.transactions;
      live = copy(durable);
      const listed = volume.list().sort((a, b) => a - b);
      const expected = [...live].filter(([, b]) => b.length > 0).map(([i]) => i).sort((a, b) => a - b);
      if (listed.join() !== expected.join()) return `step ${step}: reopened with files ${listed}, expected ${expected}`;
      for (const [i, b] of live) {
        if (b.length === 0) continue;
        const got = new Uint8Array(b.length);
        volume.read(i, 0, got);
        const at = got.findIndex((v, k) => v !== b[k]);
        if (volume.size(i) !== b.length || at >= 0) {
          return `step ${step}: file ${i} after a reopen differs: size ${volume.size(i)} (expected ${b.length}), first difference at ${at}`;
        }
      }
      for (const [i, b] of [...live]) if (b.length === 0) live.delete(i); // empty files are not kept
    }
  }
  volume.close();
  return null;
}

export class Store extends DurableObject {
  /** @type {import('walnut-kv/cloudflare').SyncStore | undefined} the workload's store */
  #load;

  home() {
    return {
      sync: true,
      direct: true,
      large: LARGE,
      open: (name, options) => openDurableObject(this.ctx.storage, { name, ...options }),
      stream: (iterable) => iterable,
      // A MessageChannel message arrives in a microtask here: a timer is a later task.
      later: (fn) => setTimeout(fn, 0),
    };
  }

  load() {
    this.#load ??= openDurableObject(this.ctx.storage, { name: 'workload', chunkSize: 65536, segmentSize: 4 << 20 });
    return this.#load;
  }

  async fetch(request) {
    const url = new URL(request.url);
    const q = (name) => url.searchParams.get(name);
    try {
      switch (url.pathname) {
        case '/run':
          return Response.json(await runCases(this.home()));
        case '/crash-write':
          await crashes[Number(q('index'))].write(this.home(), q('name'));
          return new Response('ready');
        case '/crash-check':
          await crashes[Number(q('index'))].check(this.home(), q('name'));
          return new Response('ok');
        case '/volume':
          return Response.json(volumeModel(this.ctx.storage, Number(q('seed')), Number(q('steps'))));
        case '/release-fails':
          return Response.json(releaseFails(this.ctx.storage, q('name')));
        case '/put': {
          // A strict put (small) or a streamed one (the body, for the large values): the
          // response leaves only once the write is confirmed (the output gate).
          const i = Number(q('i'));
          if (request.body && i % 10 === 0) await this.load().putStream(`w${i}`, request.body);
          else this.load().put(`w${i}`, workloadValue(i));
          return new Response('ok');
        }
        case '/check': {
          const acked = await request.json();
          const db = this.load();
          const missing = acked.filter((i) => !db.has(`w${i}`));
          const wrong = [];
          for (const key of db.keys()) {
            const i = Number(String(key).slice(1));
            if (!same(db.get(key), workloadValue(i))) wrong.push(i);
          }
          return Response.json({ missing, wrong, keys: db.keys().length, recovery: db.recovery });
        }
        default:
          return new Response('not found', { status: 404 });
      }
    } catch (error) {
      return new Response(`${error.name}: ${error.message}\n${error.stack}`, { status: 500 });
    }
  }
}

export default {
  fetch(request, env) {
    const object = new URL(request.url).searchParams.get('object') ?? 'main';
    return env.STORE.get(env.STORE.idFromName(object)).fetch(request);
  },
};
