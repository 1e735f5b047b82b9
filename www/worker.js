/**
 * walnut's dedicated worker: one per context (page, iframe or worker) that opens a store. The
 * contexts of a store elect a leader (multitab.js); the leader's worker owns the store's OPFS
 * log through the wasm core and answers every context's requests; a follower's worker forwards
 * its page's requests to the leader and its answers back, and takes over when the leader goes.
 * docs/MULTITAB.md describes the protocol between workers.
 *
 * Protocol with the page. In: optionally `{ type: 'init', module? }` (preload: load the
 * WebAssembly module now), then `{ type: 'open', name, options, module? }` once (`module`: the
 * compiled WebAssembly.Module, else the worker fetches and compiles it), then
 * `{ type: 'requests', requests }`. Out: `{ type: 'opened', recovery, chunkSize, leader }` or
 * `{ type: 'open-failed', error }`, then `{ results }` where each result is `{ id, value }`,
 * `{ id, error: { name, message } }`, `{ id, aborted: true }` or `{ id, progress }` (value bytes
 * written so far); `{ type: 'change', lsn, puts, deletes }` for every write committed by any
 * context, once durable, in commit order; `{ type: 'resync', reason }` when change events may
 * have been missed (a leader changed, a gap); `{ type: 'role', leader }` when this context
 * becomes the leader; and `{ type: 'unreadable', message }` when message number `message`
 * (counted from 0, every message this worker got) could not be deserialized (a `messageerror`):
 * the page fails its requests.
 *
 * As leader: a lone put of small bytes, or a delete, runs at once; other writes (large bytes,
 * Blobs, streams, batches, and every write another context forwarded) run as tasks that write
 * one chunk at a time and give way to other requests between chunks. Writes to the same key
 * apply in request order. Strict commits are deferred and made durable together: one flush per
 * group, run in a macrotask once the queued requests are handled, then all of the group's
 * answers go out. close() waits for the writes whose data is all in hand and aborts those still
 * reading a stream (see closeStore).
 */
import init, { WalnutStore } from './walnut_core.js';
import { LEADER_CHANGED, Member } from './multitab.js';
import { absentMark, unpackKeys } from './common.js';

/** A write task gives way to other requests after running this long, ms. */
const SLICE_MS = 2;
/** get() folds chunks into its Blob every this many bytes, so no single giant Blob is built. */
const FOLD_BYTES = 16 * 1024 * 1024;

/** Thrown inside a write task that was cancelled. */
const ABORTED = Symbol('aborted');
/**
 * Bytes of staging buffers (where Blob and stream values are gathered into chunks) all puts may
 * hold at once: each holds one chunk, a Blob smaller than a chunk only its size, so however many
 * run together their memory stays bounded; past it they wait their turn. A chunkSize above it
 * lets one value stage at a time.
 */
const STAGING_BYTES = 128 * 1024 * 1024;

/** @type {WalnutStore} */
let store;
/** @type {number} bytes per chunk, from the store */
let chunkSize;
/** Set when the wasm instance trapped: its state is unknown, so nothing else may run in it. */
let crashed = null;
/** Set once close() is under way: writes whose stream has not ended are aborted. */
let closing = false;
/** Messages received so far, readable or not: numbers a message that could not be read. */
let received = 0;

/** Cancellable write tasks by request id. */
const tasks = new Map();
/** Everything still running asynchronously (writes and get()s), answered or not: close() waits for them. */
const inflight = new Set();
/** For each key with a write task, a promise that settles once that write and every earlier one to the key are applied and answered. */
const keyTails = new Map();
/** A clear() under way or waiting: every write issued after it waits for it. */
let barrier = null;
/** Readers opened for getStream(), by reader id. */
const readers = new Set();
/** Bytes of staging buffers reserved (see STAGING_BYTES), and the puts waiting for some. */
let stagingInUse = 0;
/** @type {Array<{ bytes: number, granted: boolean, resume: () => void }>} */
const stagingWaiters = [];

/** Strict writes applied but not yet durable: answered after the next group sync. */
let durableWaiters = [];
let groupCommitScheduled = false;
const groupCommitChannel = new MessageChannel();
// A commit scheduled here may have run already, at the end of its message (commitIfAlone): the
// message that arrives after it then commits nothing, so that relaxed writes' events arriving
// in between wait for the next group (or a second) instead of taking a flush of their own.
groupCommitChannel.port1.onmessage = () => {
  if (groupCommitScheduled) commitGroup();
};

const yieldChannel = new MessageChannel();
const yieldResumers = [];
// A write task that gave way resumes here. Strict writes applied meanwhile are committed
// first: their group-commit message was posted after this one, so waiting for it would make
// them wait for another slice of the long task, and flush the bytes that slice writes too.
// (During a 256 MiB put, 128 B strict puts: p50 12.9 -> 6.7 ms, 75 -> 141 puts/s.)
yieldChannel.port1.onmessage = () => {
  try {
    if (groupCommitScheduled) commitGroup();
  } finally {
    yieldResumers.shift()(); // whatever the commit threw, the task waiting here goes on
  }
};
let sliceStart = performance.now();

/** Results waiting for the end of this microtask, sent as one message. */
let outbox = [];
let outboxTransfer = [];

/** Decodes key bytes to a string used as a Map key (windows-1252 maps bytes to chars one-to-one). */
const keyIds = new TextDecoder('latin1');
const utf8 = new TextDecoder();
const utf8Encoder = new TextEncoder();

// ----- multi-tab state -----

/**
 * This context's part: 'joining' (looking for a leader, or waiting to be one), 'opening' (just
 * made leader, opening the store), 'leader', 'follower'.
 */
let role = 'joining';
/** @type {Member | null} */
let member = null;
/** What opens the store when this context becomes the leader. */
let openArgs = null;
/** Whether the page has its 'opened' answer. */
let opened = false;
/** The leader's context id, as a follower. */
let leaderCtx = null;
/** Says hello until a leader answers. */
let seeking = null;
/** Rejects the calls waiting for a leader once none has answered for too long. */
let failoverTimer = null;
/** As leader: the recovery report of its open, which followers are given too. */
let report = null;
/** The last change event passed to the page: `{ from, seq }`, so a gap shows. */
let lastEvent = null;
/** Whether the page listens for change events (its first listener says so): else none are sent to it. */
let pageListens = false;

/**
 * As follower: the page's calls not yet answered, by the page's request id. `sentTo`: the leader
 * it went to (null: not sent yet, or to send again); `streams`: its stream values, by stream id.
 * @type {Map<number, { request: any, sentTo: string | null, streams: Map<string, { stream: ReadableStream, reader?: ReadableStreamDefaultReader, state: 'untouched' | 'partial' | 'done' }> }>}
 */
const pending = new Map();
/** As follower: requests to send to the leader at the end of this microtask. */
let forwardBox = [];
/** Set when no leader answered for lockTimeout plus a few seconds: calls fail at once until one does. */
let leaderless = false;

/**
 * As leader: the other contexts it serves, by context id: the requests they have under way
 * (their request id -> the local id standing for it) and the readers they opened.
 * @type {Map<string, { ids: Map<number, number>, readers: Set<number> }>}
 */
const clients = new Map();
/** As leader: another context's request stands here under a negative id: where its answers go. */
const routes = new Map();
let nextRemoteId = -1;
/** As leader: results for other contexts, sent at the end of this microtask, by context. */
const remoteBoxes = new Map();
/** As leader: pulls of other contexts' streams waiting for their chunk, by `ctx/sid`. */
const pulls = new Map();
/** As leader: change events of committed writes, waiting for the flush that makes them durable. */
let undurableChanges = [];
/** As leader: the number of the last change event sent. */
let eventSeq = 0;

self.onmessage = ({ data }) => {
  received++;
  if (data.type === 'init') load(data.module).catch(() => {}); // open() reports the failure
  else if (data.type === 'open') openStore(data.name, data.options, data.module);
  else {
    for (const request of data.requests) route(request);
    commitIfAlone();
  }
};

/**
 * Commits the strict writes this message applied at once, at the end of the message, when no
 * other context is attached. The group-commit hop (a `MessageChannel` task) exists so that writes
 * arriving in other contexts' messages meanwhile join the same flush; a lone page sends
 * everything it issued in one microtask as one message, so for it the hop only adds its trip
 * (about 50 µs of a strict put's 0.3 ms: "Small calls from the page" in BENCHMARKS.md). Writes
 * still waiting for an earlier write to their key are applied later and take the hop as before.
 */
function commitIfAlone() {
  if (!(groupCommitScheduled && durableWaiters.length > 0 && role === 'leader' && clients.size === 0)) return;
  // Answers to this message's earlier requests go first, as they did when the commit ran a task
  // later: the commit posts its change events at once, and a get answered after the event of
  // a write issued after it would hand the page an older value than the event announced.
  if (outbox.length > 0) flushOutbox();
  commitGroup();
}

/**
 * Runs a request of this context's page: here as leader, else through the leader.
 * @param {{ id: number, op: string } & Record<string, any>} request
 */
function route(request) {
  if (request.op === 'listen') pageListens = true;
  else if (role === 'leader') dispatchOwn(request);
  else forward(request);
}

/**
 * Runs a request of this context's page here, as leader. The page names a getStream() reader
 * by a handle `leader/id` (reader ids start again at every leader's open): a reader another
 * leader opened is not one of this store's.
 */
function dispatchOwn(request) {
  if (request.op === 'read' || request.op === 'closeReader') {
    const { leader, reader } = readerOf(request.reader);
    if (leader !== member.ctx) {
      if (request.op === 'read') fail(request.id, readerGone());
      return;
    }
    request = { ...request, reader };
  }
  dispatch(request);
}

/** The handle the page gets for reader `reader` of leader `leader`'s store. */
function readerHandle(leader, reader) {
  return `${leader}/${reader}`;
}

/** @param {unknown} handle a reader handle from the page @returns {{ leader: string, reader: number }} */
function readerOf(handle) {
  const text = String(handle);
  const at = text.lastIndexOf('/');
  return { leader: text.slice(0, at), reader: Number(text.slice(at + 1)) };
}

function readerGone() {
  return named(LEADER_CHANGED, 'the stream was being read from a leader that is gone; open it again');
}

// A message that cannot be deserialized never reaches onmessage: its requests would wait
// forever. Its content is lost, but not its place in the order: the page knows which requests
// (or which open) it carried, and fails them.
self.onmessageerror = () => {
  self.postMessage({ type: 'unreadable', message: received++ });
};

/** @type {Promise<unknown> | undefined} */
let loaded;

/**
 * Instantiates walnut's WebAssembly module, once.
 * @param {WebAssembly.Module} [module] compiled by the page; else fetched and compiled here
 */
function load(module) {
  loaded ??= init(module ? { module_or_path: module } : undefined);
  return loaded;
}

/** How long calls wait for a leader after the last one went, beyond `lockTimeout`, ms. */
const FAILOVER_SLACK_MS = 5000;

/**
 * Joins the store's contexts: this one becomes the leader (and opens the store) or a follower
 * of the one that is; the page hears 'opened' either way.
 * @param {string} name
 * @param {object} options
 * @param {WebAssembly.Module} [module] compiled by the page
 */
async function openStore(name, options, module) {
  try {
    try {
      await load(module);
    } catch (error) {
      throw named('WalnutUnsupportedError', `could not load walnut's WebAssembly module: ${describeError(error)}`);
    }
    if (typeof navigator.locks?.request !== 'function' || typeof BroadcastChannel !== 'function') {
      throw named('WalnutUnsupportedError', 'walnut needs the Web Locks API and BroadcastChannel, which this browser lacks');
    }
    openArgs = { name, options };
    member = new Member(name, { onLeadership: becomeLeader, onControl, onInbox });
    await member.join();
    seeking = member.seekLeader(() => role !== 'joining');
    const limit = (options?.lockTimeoutMs ?? 5000) + 2000;
    setTimeout(() => {
      if (!opened && role === 'joining') {
        failOpen(named('WalnutLockedError', `store "${name}" is held by a context that did not answer within ${limit} ms`));
      }
    }, limit);
  } catch (error) {
    failOpen(error);
  }
}

/** @param {unknown} error why open() fails */
function failOpen(error) {
  if (opened) return;
  opened = true;
  seeking?.stop();
  member?.leave();
  self.postMessage({ type: 'open-failed', error: serializeError(error) });
}

/**
 * Leadership is this context's: opens the store (a leader that just died may hold its files a
 * little longer: OPFS retries them for lockTimeout), announces itself, and runs the calls of its
 * own page that no leader answered.
 */
async function becomeLeader() {
  seeking?.stop();
  // The last leader is gone (it held the leadership until then), even if its alive lock has
  // not told yet: what it cannot have finished fails as in leaderGone.
  role = 'opening';
  leaderCtx = null;
  dropLost();
  try {
    store = guarded(await WalnutStore.open(openArgs.name, openArgs.options));
    chunkSize = store.chunkSize;
    report = store.recovery();
  } catch (error) {
    if (!opened) {
      failOpen(error);
      return;
    }
    // A later leader that cannot open gives leadership back and waits its turn again: another
    // context may succeed, or this one once the old holder's files are released.
    role = 'joining';
    member.leadership.release();
    setTimeout(() => member.requeue(), 1000);
    seekLeader();
    return;
  }
  if (member.closing.signal.aborted) {
    // This context left while opening (its page closed its use): it does not lead.
    try {
      store.close();
    } catch {
      // the worker is stopped next, which releases the files
    }
    return;
  }
  clearTimeout(failoverTimer);
  leaderless = false;
  role = 'leader';
  leaderCtx = member.ctx;
  // A page that closed its use while this context waited (closeFollower) has its calls made
  // before close() answered here, then closeFollower closes the store, as a leader does.
  closing = false;
  member.broadcast({ type: 'leader', from: member.ctx });
  if (!opened) {
    opened = true;
    self.postMessage({ type: 'opened', recovery: report, chunkSize, leader: true });
  } else {
    self.postMessage({ type: 'role', leader: true });
    resync('this context became the leader: changes the last one made may not have been told');
  }
  const unanswered = [...pending.entries()];
  pending.clear();
  for (const [id, entry] of unanswered) {
    dispatch(resent(id, entry));
    if (entry.cancel) cancel(id, entry.cancel === 'closed');
  }
  drained?.();
}

/**
 * A forwarded call to run again, on whichever leader: a write under its request id (applied
 * once, whether or not the last leader committed it), and a write whose stream the last leader
 * read to its end asks only whether it was committed.
 */
function resent(id, entry) {
  if (entry.request.op === 'tx' && entry.request.action === 'commit') {
    return { ...entry.request, rid: requestId(member.ctx, id) };
  }
  if (entry.request.op !== 'write') return entry.request;
  const done = [...entry.streams.values()].some((s) => s.state === 'done');
  return { ...entry.request, rid: requestId(member.ctx, id), recheck: done };
}

/** The commit id a context's write is applied under: its context and request id. */
function requestId(ctx, id) {
  return `${ctx}/${id}`;
}

/** Tells the page that change events may have been missed. */
function resync(reason) {
  if (pageListens) self.postMessage({ type: 'resync', reason });
}

/** Says hello until a leader answers; calls wait at most lockTimeout plus a few seconds. */
function seekLeader() {
  seeking?.stop();
  seeking = member.seekLeader(() => role !== 'joining');
  clearTimeout(failoverTimer);
  const limit = (openArgs.options?.lockTimeoutMs ?? 5000) + FAILOVER_SLACK_MS;
  failoverTimer = setTimeout(() => {
    if (role !== 'joining') return;
    leaderless = true; // later calls fail at once, until a leader answers
    for (const [id, entry] of pending) {
      pending.delete(id);
      cancelStreams(entry.request.ops ?? []);
      fail(id, noLeader());
    }
    if (pending.size === 0) drained?.();
  }, limit);
}

function noLeader() {
  const limit = (openArgs.options?.lockTimeoutMs ?? 5000) + FAILOVER_SLACK_MS;
  return named(LEADER_CHANGED, `no context has led store "${openArgs.name}" for ${limit} ms; try again`);
}

/** A message on the store's shared channel. */
function onControl(message) {
  switch (message.type) {
    case 'hello':
      if (role === 'leader') welcome(message.from);
      return;
    case 'leader':
      if (role === 'joining') seeking?.nudge();
      return;
    case 'changes':
      if (role === 'follower' && message.from === leaderCtx) passChanges(message);
      return;
  }
}

/** A message to this context. */
function onInbox(message) {
  switch (message.type) {
    case 'welcome':
      if (role === 'joining') follow(message);
      return;
    case 'results':
      if (role === 'follower' && message.from === leaderCtx) fromLeader(message.results);
      return;
    case 'pull':
      pullForLeader(message.sid);
      return;
    case 'cancelStream':
      pending.forEach((entry) => entry.streams.get(message.sid)?.reader?.cancel().catch(noop));
      return;
    case 'requests':
      if (role === 'leader' || role === 'opening') serve(message.from, message.requests);
      return;
    case 'chunk':
      pulls.get(`${message.from}/${message.sid}`)?.(message);
      return;
    case 'bye':
      clientGone(message.from);
      return;
  }
}

// ----- as follower -----

/** A leader answered: follow it, send it every call not yet answered, and watch it go. */
function follow({ from, recovery, chunkSize: size, seq }) {
  seeking?.stop();
  clearTimeout(failoverTimer);
  leaderless = false;
  const changed = opened;
  role = 'follower';
  leaderCtx = from;
  chunkSize = size;
  lastEvent = { from, seq };
  if (!opened) {
    opened = true;
    self.postMessage({ type: 'opened', recovery, chunkSize, leader: false });
  } else if (changed) {
    resync('the leader changed: changes the last one made may not have been told');
  }
  for (const [id, entry] of pending) if (!entry.sentTo) sendToLeader(id, entry);
  member.whenGone(from).then((gone) => gone && leaderGone(from));
}

/**
 * Takes a call of this context's page: into `pending` until a leader answers it.
 * @param {{ id: number, op: string } & Record<string, any>} request
 */
function forward(request) {
  switch (request.op) {
    case 'close':
      answer(request.id, closeFollower());
      return;
    case 'cancel': {
      const entry = pending.get(request.target);
      if (!entry) return;
      if (entry.sentTo) {
        entry.cancel = 'aborted'; // told again to the next leader, should this one go first
        toLeader(request);
      } else {
        pending.delete(request.target);
        cancelStreams(entry.request.ops);
        send({ id: request.target, aborted: true });
        if (pending.size === 0) drained?.();
      }
      return;
    }
    case 'closeReader': {
      const { leader, reader } = readerOf(request.reader);
      if (role === 'follower' && leader === leaderCtx) toLeader({ ...request, reader });
      return;
    }
    case 'read': {
      const { leader, reader } = readerOf(request.reader);
      if (role !== 'follower' || leader !== leaderCtx) {
        fail(request.id, readerGone());
        return;
      }
      // A buffer handed back is not sent on: another context would receive a copy.
      request = { ...request, reader, buffer: undefined };
      break;
    }
  }
  if (crashed) {
    fail(request.id, crashedError());
    return;
  }
  if (leaderless && role === 'joining') {
    cancelStreams(request.ops ?? []);
    fail(request.id, noLeader());
    return;
  }
  const streams = new Map();
  (request.ops ?? []).forEach((op, i) => {
    if (op.value instanceof ReadableStream) streams.set(`${request.id}:${i}`, { stream: op.value, state: 'untouched' });
  });
  const entry = { request, sentTo: null, streams };
  pending.set(request.id, entry);
  if (role === 'follower') sendToLeader(request.id, entry);
}

/** Sends a pending call to the leader: its streams stay here, the leader pulls their chunks. */
function sendToLeader(id, entry) {
  entry.sentTo = leaderCtx;
  const request = entry.request.op === 'write' || entry.request.op === 'tx' ? resent(id, entry) : entry.request;
  if (request.op === 'write') {
    request.ops = request.ops.map((op, i) =>
      op.value instanceof ReadableStream ? { ...op, value: { walnutStream: `${id}:${i}` } } : op,
    );
  }
  toLeader(request);
  // Cancelled while the last leader had it: it is done if that one committed it, else stopped.
  if (entry.cancel) toLeader({ op: 'cancel', target: id, closed: entry.cancel === 'closed' });
}

/** Queues a request for the leader; those of one microtask go as one message. */
function toLeader(request) {
  if (forwardBox.length === 0) {
    queueMicrotask(() => {
      const requests = forwardBox;
      forwardBox = [];
      if (leaderCtx && role === 'follower') member.to(leaderCtx, { type: 'requests', from: member.ctx, requests });
    });
  }
  forwardBox.push(request);
}

/** The leader's answers: to the page, and out of `pending` (a `moved` one waits for the next leader). */
function fromLeader(results) {
  const out = [];
  for (const result of results) {
    const entry = pending.get(result.id);
    if (!entry) continue;
    if (result.moved) {
      // The leader is leaving and did not do it: the next one gets it, unless it cannot be
      // done again (a put whose stream this leader read from: what it read is gone).
      if (entry.cancel) {
        // It was cancelled, and this leader did not do it: the cancel stands.
        pending.delete(result.id);
        for (const s of entry.streams.values()) (s.reader ?? s.stream).cancel().catch(noop);
        out.push(entry.cancel === 'closed' ? { id: result.id, error: serializeError(closedBeforeEnd()) } : { id: result.id, aborted: true });
      } else if (lost(entry, ['partial', 'done'])) {
        dropCall(result.id, entry, 'the leader closed while this call was under way; it did not take effect: try again');
      } else {
        entry.sentTo = null;
      }
      continue;
    }
    if (result.progress === undefined) {
      pending.delete(result.id);
      if (entry.request.op === 'openReader' && result.value) {
        result.value = { ...result.value, reader: readerHandle(leaderCtx, result.value.reader) };
      }
    }
    out.push(result);
  }
  if (out.length > 0) self.postMessage({ results: out });
  if (pending.size === 0) drained?.();
}

/**
 * Whether a call the last leader took cannot be sent to the next one: a read of a stream opened
 * there, or a put whose stream it read from (a stream in one of `states`).
 */
function lost(entry, states) {
  return entry.request.op === 'read' || [...entry.streams.values()].some((s) => states.includes(s.state));
}

/** Fails a pending call with the retryable WalnutLeaderChangedError; its streams are cancelled. */
function dropCall(id, entry, message) {
  pending.delete(id);
  for (const s of entry.streams.values()) (s.reader ?? s.stream).cancel().catch(noop);
  fail(id, named(LEADER_CHANGED, message));
}

/** The leader pulls a chunk of a stream this context's page handed to a put. */
async function pullForLeader(sid) {
  let stream;
  pending.forEach((entry) => (stream ??= entry.streams.get(sid)));
  if (!stream || !leaderCtx) return;
  const to = leaderCtx;
  try {
    stream.reader ??= stream.stream.getReader();
    stream.state = 'partial';
    const { done, value } = await stream.reader.read();
    if (done) stream.state = 'done';
    member.to(to, { type: 'chunk', from: member.ctx, sid, done, value });
  } catch (error) {
    member.to(to, { type: 'chunk', from: member.ctx, sid, error: serializeError(error) });
  }
}

/**
 * The leader is gone (closed, crashed, its page closed). Every call it had not answered is sent
 * to the next leader, except a write whose stream it had read part of: that one fails with the
 * retryable WalnutLeaderChangedError (the dead leader's transaction was discarded with it; the
 * old value stands), its stream cancelled.
 */
function leaderGone(ctx) {
  if (ctx !== leaderCtx || role !== 'follower') return;
  role = 'joining';
  leaderCtx = null;
  dropLost();
  seekLeader();
}

/** The calls a leader that is gone had taken go to the next one, except those it cannot do. */
function dropLost() {
  for (const [id, entry] of pending) {
    if (!entry.sentTo) continue;
    entry.sentTo = null;
    if (lost(entry, ['partial'])) dropCall(id, entry, 'the leader changed while this call was under way; it did not take effect: try again');
  }
  if (pending.size === 0) drained?.();
}

/** Resolves `closeFollower`'s wait once every call is answered. */
let drained = null;

/**
 * Closes this context's use of the store (the store stays open for the others): puts still
 * reading a stream are given up, the other calls answered, then the leader is told.
 */
async function closeFollower() {
  closing = true;
  for (const [id, entry] of pending) {
    if ([...entry.streams.values()].every((s) => s.state === 'done')) continue;
    if (entry.sentTo) {
      entry.cancel = 'closed';
      toLeader({ op: 'cancel', target: id, closed: true });
    } else {
      pending.delete(id);
      cancelStreams(entry.request.ops);
      fail(id, named('WalnutClosedError', "the store was closed before the value's stream ended; the old value is kept"));
    }
  }
  if (pending.size > 0) await new Promise((resolve) => (drained = resolve));
  // It became the leader meanwhile (and answered its calls): it closes the store as one.
  if (role === 'leader') return closeStore();
  if (leaderCtx) member.to(leaderCtx, { type: 'bye', from: member.ctx });
  member.leave();
}

/**
 * Passes the leader's change events (a group of them, numbered from `seq`) to the page, saying
 * so first if some were missed.
 */
function passChanges(message) {
  if (lastEvent && lastEvent.from === message.from && message.seq !== lastEvent.seq + 1) {
    resync(`change events ${lastEvent.seq + 1} to ${message.seq - 1} were missed`);
  }
  lastEvent = { from: message.from, seq: message.seq + message.changes.length - 1 };
  if (pageListens) self.postMessage(message);
}

// ----- as leader -----

/** Answers a context's hello: who leads, and where things stand. */
function welcome(ctx) {
  watchClient(ctx);
  member.to(ctx, { type: 'welcome', from: member.ctx, recovery: report, chunkSize, seq: eventSeq });
}

/** Serves context `ctx` from now on, and learns when it goes. */
function watchClient(ctx) {
  if (clients.has(ctx)) return;
  clients.set(ctx, { ids: new Map(), readers: new Set() });
  member.whenGone(ctx).then((gone) => gone && clientGone(ctx));
}

/**
 * Takes another context's requests: each stands here under a negative id, its answers routed
 * back; its writes are applied under their request ids; its streams are pulled from it.
 * @param {string} from
 * @param {Array<any>} requests
 */
function serve(from, requests) {
  watchClient(from);
  const client = clients.get(from);
  for (const request of requests) {
    // A cancel counts while this leader closes too: the write it stops may still be finishing.
    if (request.op === 'cancel') {
      const local = client.ids.get(request.target);
      // `closed`: the other context's page closed its use (closeFollower)
      if (local !== undefined) cancel(local, request.closed);
      continue;
    }
    if (request.op === 'closeReader') {
      client.readers.delete(request.reader);
      closeReader(request.reader);
      continue;
    }
    if (closing || role !== 'leader') {
      if (request.id !== undefined) remoteResult(from, { id: request.id, moved: true });
      continue;
    }
    const local = nextRemoteId--;
    routes.set(local, { ctx: from, id: request.id, op: request.op });
    client.ids.set(request.id, local);
    if (request.op === 'write') {
      const ops = request.ops.map((op) => (op.value?.walnutStream ? { ...op, value: pullFrom(from, op.value.walnutStream) } : op));
      dispatch({ ...request, id: local, ops, rid: request.rid ?? requestId(from, request.id) });
    } else if (request.op === 'tx' && request.action === 'commit') {
      // A transaction's COMMIT goes under the call's request id, as a write does: sent again
      // after a leader change, it is found committed, not run again.
      dispatch({ ...request, id: local, owner: from, rid: request.rid ?? requestId(from, request.id) });
    } else {
      dispatch({ ...request, id: local, owner: from });
    }
  }
}

/**
 * A stream whose chunks are pulled from context `ctx`, one at a time, as the put reads it.
 * @param {string} ctx
 * @param {string} sid
 */
function pullFrom(ctx, sid) {
  const key = `${ctx}/${sid}`;
  return new ReadableStream(
    {
      pull: (controller) =>
        new Promise((resolve) => {
          pulls.set(key, resolve);
          member.to(ctx, { type: 'pull', sid });
        }).then((message) => {
          pulls.delete(key);
          if (message.error) controller.error(named(message.error.name, message.error.message));
          else if (message.done) controller.close();
          else controller.enqueue(message.value);
        }),
      cancel: () => {
        pulls.get(key)?.({ error: { name: 'WalnutClosedError', message: 'cancelled' } });
        member.to(ctx, { type: 'cancelStream', sid });
      },
    },
    { highWaterMark: 0 },
  );
}

/** An answer for another context's request: out of the routes once final. */
function sendRemote(result) {
  const r = routes.get(result.id);
  if (!r) return;
  if (result.progress === undefined) {
    routes.delete(result.id);
    const client = clients.get(r.ctx);
    client?.ids.delete(r.id);
    if (r.op === 'openReader' && result.value) client?.readers.add(result.value.reader);
  }
  // A leader leaving stops the puts of others that still read a stream: they go to the next one.
  if (closing && result.error?.name === 'WalnutClosedError') {
    remoteResult(r.ctx, { id: r.id, moved: true });
    return;
  }
  remoteResult(r.ctx, { ...result, id: r.id });
}

/** Queues a result for context `ctx`; those of one microtask go as one message. */
function remoteResult(ctx, result) {
  let box = remoteBoxes.get(ctx);
  if (!box) {
    box = [];
    remoteBoxes.set(ctx, box);
    queueMicrotask(() => {
      remoteBoxes.delete(ctx);
      member.to(ctx, { type: 'results', from: member.ctx, results: box });
    });
  }
  box.push(result);
}

/**
 * Context `ctx` is gone (closed, crashed, its page closed): its puts under way are aborted
 * (ABORT written, old values kept), its readers closed, its pulls ended.
 */
function clientGone(ctx) {
  const client = clients.get(ctx);
  if (!client) return;
  clients.delete(ctx);
  for (const local of client.ids.values()) {
    routes.delete(local);
    const task = tasks.get(local);
    if (task) stopTask(task, ABORTED);
  }
  for (const reader of client.readers) closeReader(reader);
  for (const [handle, e] of exportsUnderWay) {
    if (e.owner === ctx) {
      exportsUnderWay.delete(handle);
      if (!e.done) store.exportCancel(e.id);
    }
  }
  if (importUnderWay?.owner === ctx) {
    importUnderWay = null;
    store.importCancel();
  }
  for (const [handle, tx] of txs) {
    if (tx.owner === ctx) {
      txs.delete(handle);
      abortQuietly(tx.txn, true);
    }
  }
  for (const [key, resolve] of pulls) {
    if (key.startsWith(`${ctx}/`)) resolve({ error: { name: LEADER_CHANGED, message: 'the context writing this value is gone' } });
  }
  member.forget(ctx);
}

/**
 * The change a write made, told to every context once it is durable: the keys it put and
 * deleted, in the form they were given, and the LSN of its commit.
 * @param {Array<{ type: string, key: Uint8Array, isString?: boolean }>} ops
 */
function changeOf(ops) {
  const form = (op) => (op.isString ? utf8.decode(op.key) : op.key);
  // Change events are the default table's (a table's writes are not listed).
  const own = ops.filter((op) => !op.table);
  return {
    lsn: store.lastLsn,
    puts: own.filter((op) => op.type === 'put').map(form),
    deletes: own.filter((op) => op.type === 'delete').map(form),
  };
}

/**
 * Tells every context (this one's page included, if it listens) of changes now durable, in
 * commit order: one message for the group, its events numbered from `seq`.
 */
function emitChanges(changes) {
  changes.sort((a, b) => a.lsn - b.lsn);
  const message = { type: 'changes', from: member.ctx, seq: eventSeq + 1, changes };
  eventSeq += changes.length;
  if (clients.size > 0) member.broadcast(message);
  if (pageListens) self.postMessage(message);
}

/**
 * Wraps the core's store so that nothing calls into a crashed instance: once a call trapped
 * (WebAssembly.RuntimeError), every later call, from a task already under way too, throws the
 * crash's WalnutPoisonedError instead of reaching wasm (where wasm-bindgen would answer
 * "recursive use of an object detected": the trapped call never released the object).
 * @param {WalnutStore} core
 * @returns {WalnutStore}
 */
function guarded(core) {
  /** One wrapper per method, made once: the store is called on every request. */
  const wrappers = new Map();
  const wrap = (method) => (...args) => {
    if (crashed) throw crashedError();
    try {
      return core[method](...args);
    } catch (error) {
      if (error instanceof WebAssembly.RuntimeError) crashed ??= error;
      throw error;
    }
  };
  return new Proxy(core, {
    get(target, property) {
      const value = Reflect.get(target, property, target);
      if (typeof value !== 'function') return value; // chunkSize
      if (!wrappers.has(property)) wrappers.set(property, wrap(property));
      return wrappers.get(property);
    },
  });
}

/** A table id no table has: reads of a table not created yet find nothing. */
const NO_TABLE = 0xffffffff;

/**
 * The id a request on table `name` uses: undefined for the default table; for a named one,
 * created if `create` (a write), else NO_TABLE while it does not exist.
 * @param {string | undefined} name
 * @param {boolean} create
 */
function tableOf(name, create) {
  if (name === undefined) return undefined;
  const id = store.tableId(name);
  if (id !== undefined) return id;
  return create ? store.createTable(name) : NO_TABLE;
}

/**
 * Turns the table names of a write's operations into ids (creating the tables): an operation
 * without one is the request's table's. Returns the names by id, for the sequence numbers.
 */
function resolveTables(request) {
  const names = new Map([[0, '']]);
  let own;
  for (const op of request.ops) {
    if (typeof op.table === 'number') continue; // resolved already (a retried task)
    if (op.table === undefined) {
      // The request's own table, created only when an operation writes to it.
      if (own === undefined && request.table !== undefined) {
        own = tableOf(request.table, true);
        names.set(own, request.table);
      }
      op.table = own;
      continue;
    }
    const id = tableOf(op.table, true);
    names.set(id, op.table);
    op.table = id;
  }
  request.tableNames = names;
}

/** The sequence numbers the last write took: `[{ table, first, last }]`, tables by name. */
function seqsOf(names) {
  const flat = store.lastSeqs();
  const out = [];
  for (let i = 0; i + 2 < flat.length; i += 3) {
    out.push({ table: names?.get(flat[i]) ?? '', first: flat[i + 1], last: flat[i + 2] });
  }
  return out;
}

/** What a write resolves to: a batch, its sequence numbers; a lone put or append, its number. */
function writeValue_(request, fallback) {
  const seqs = seqsOf(request.tableNames);
  if (request.seqs) return seqs;
  const [op] = request.ops;
  if (request.ops.length === 1 && (op.type === 'put' || op.type === 'append')) {
    const name = request.tableNames?.get(op.table ?? 0) ?? '';
    return seqs.find((x) => x.table === name)?.last ?? 0;
  }
  return fallback;
}

/**
 * A table's queue entries from `from`, at most `limit`: `[{ seq, size, value }]` (values read
 * whole unless `sizes`).
 */
function readQueue(id, { table, from, limit, sizes }) {
  const tid = tableOf(table, false) ?? 0;
  if (sizes) {
    const flat = store.readQueue(tid, from, limit);
    const entries = [];
    for (let i = 0; i + 1 < flat.length; i += 2) entries.push({ seq: flat[i], size: flat[i + 1] });
    reply(id, entries);
    return;
  }
  // One buffer for the page of entries and their values, unpacked on the page.
  const packed = store.readQueueValues(tid, from, limit);
  reply(id, packed, [packed.buffer]);
}

/** @param {{ id: number, op: string } & Record<string, any>} request */
function dispatch(request) {
  const { id } = request;
  try {
    switch (request.op) {
      case 'cancel':
        cancel(request.target);
        return;
      case 'closeReader':
        closeReader(request.reader);
        return;
      case 'close':
        answer(id, closeStore());
        return;
    }
    if (crashed) throw crashedError();
    if (closing) throw named('WalnutClosedError', 'the store is closing');
    switch (request.op) {
      case 'write':
        write(request);
        return;
      case 'get':
        getValue(id, request.key, tableOf(request.table, false));
        return;
      case 'openReader': {
        const table = tableOf(request.table, false);
        const opened =
          request.seq === undefined ? store.openReader(request.key, table) : store.openEntry(table ?? 0, request.seq);
        if (opened) readers.add(opened.id);
        // Another context's (negative id) gets the id, its worker makes the handle.
        reply(id, opened && { reader: id > 0 ? readerHandle(member.ctx, opened.id) : opened.id, size: opened.size });
        return;
      }
      case 'read':
        readChunk(id, request.reader, request.buffer);
        return;
      case 'has':
        reply(id, store.has(request.key, tableOf(request.table, false)));
        return;
      case 'keys': {
        const packed = store.keys(request.options, tableOf(request.table, false));
        reply(id, packed, [packed.buffer]);
        return;
      }
      case 'tables':
        reply(id, store.tables());
        return;
      case 'tx':
        transact(request);
        return;
      case 'export':
        exportStep(request);
        return;
      case 'import':
        answer(id, importStep(request));
        return;
      case 'version': {
        const table = tableOf(request.table, false);
        reply(id, table === NO_TABLE ? null : (store.versionOf(request.key, table) ?? null));
        return;
      }
      case 'dropTable':
        reply(id, store.dropTable(request.name));
        return;
      case 'readQueue':
        readQueue(id, request);
        return;
      case 'changes': {
        const table = tableOf(request.table, false);
        const packed = table === undefined ? new Uint8Array(0) : store.changes(table, request.since, request.limit);
        reply(id, packed, [packed.buffer]);
        return;
      }
      case 'mark': {
        const table = tableOf(request.table, false);
        const { seq, strict } = request;
        const ticket =
          table === NO_TABLE
            ? absentMark(seq)
            : request.what === 'flushed'
              ? store.markFlushed(table, seq, strict)
              : store.deleteUpTo(table, seq, strict);
        acknowledge(request, { value: undefined, ticket, change: null });
        return;
      }
      case 'stats':
        // Negative ids stand for other contexts' requests (see serve).
        reply(id, { ...store.stats(), leader: id > 0, contexts: clients.size + 1 });
        return;
      case 'compact':
        keepInFlight(answer(id, compact()));
        return;
      case 'checkpoint':
        reply(id, store.checkpoint());
        return;
      default:
        throw named('WalnutInvalidArgumentError', `unknown request ${String(request.op)}`);
    }
  } catch (error) {
    if (request.op === 'write') cancelStreams(request.ops);
    fail(id, error);
  }
}

/**
 * Applies a put, delete or batch: a lone put of small bytes or a lone delete at once (unless an
 * earlier write to the same key is still running), everything else as a task.
 * @param {{ id: number, ops: Array<{ type: 'put' | 'delete', key: Uint8Array, isString?: boolean, value?: Uint8Array | Blob | ReadableStream }>, strict: boolean, progress: boolean }} request
 */
function write(request) {
  if (request.rid && answeredBefore(request)) return;
  resolveTables(request);
  if (request.clear || request.existing) {
    writeComputed(request);
    return;
  }
  if (request.checks) request.checks = versionChecks(request.checks);
  const [first] = request.ops;
  // Another context's small put goes in one call too, under its request id (putWithId, the
  // default table's); its other writes go as transactions under their request ids. Appends
  // go as transactions (their COMMIT numbers them).
  const single =
    request.txId === undefined &&
    request.ops.length === 1 &&
    first.type !== 'append' &&
    ((first.type === 'delete' && !request.rid) ||
      (first.value instanceof Uint8Array && first.value.length <= chunkSize && !(request.rid && first.table)));
  const keys = single && keyTails.size === 0 ? [] : request.ops.map((op) => keyIds.decode(op.key));
  const earlier = keys.map((key) => keyTails.get(key)).filter(Boolean);
  if (barrier) earlier.push(barrier);
  if (single && earlier.length === 0) {
    acknowledge(request, applySingle(request));
    return;
  }
  const task = newTask(request.ops);
  tasks.set(request.id, task);
  const applied = (async () => {
    await unlessStopped(task, Promise.all(earlier));
    movedIfClosing(request);
    return single ? applySingle(request) : await writeTransaction(request, task);
  })();
  const done = keepInFlight(
    applied.then(
      (result) => acknowledge(request, result),
      (error) => {
        cancelStreams(request.ops); // those it never read to the end
        if (error === ABORTED) send({ id: request.id, aborted: true });
        else fail(request.id, error);
      },
    ),
  );
  // A task stopped while queued answers at once; writes after it must still wait for the
  // writes before it, so the key's tail is both.
  const tail = earlier.length === 0 ? done : Promise.all([done, ...earlier]);
  for (const key of keys) keyTails.set(key, tail);
  done.then(() => tasks.delete(request.id));
  tail.then(() => {
    for (const key of keys) if (keyTails.get(key) === tail) keyTails.delete(key);
  });
}

/**
 * Sends another context's write that waited here for earlier writes to the next leader when
 * this one began to close meanwhile (its WalnutClosedError is answered `moved`, see sendRemote).
 * A write before it, to the same key or a clear() it waited for, may have been stopped and moved
 * too (a put still reading its stream): applied here, the later write would go first, and the
 * earlier one, applied by the next leader, would overwrite a write that had resolved.
 * @param {{ id: number }} request
 */
function movedIfClosing(request) {
  if (closing && request.id < 0) {
    throw named('WalnutClosedError', 'the leader is closing; the next leader applies this write');
  }
}

/**
 * A write whose operations are known only when it runs: clear() (deletes of every key) and
 * deleteMany() (`existing`: deletes of those of its keys that exist, once each). Its answer is
 * how many keys it deleted. clear() waits for every write under way, and every later write
 * waits for it (`barrier`); deleteMany() waits for the writes to its keys, as any write does.
 */
function writeComputed(request) {
  const keys = request.clear ? [...keyTails.keys()] : request.ops.map((op) => keyIds.decode(op.key));
  const earlier = [...new Set(keys.map((key) => keyTails.get(key)).filter(Boolean))];
  if (barrier) earlier.push(barrier);
  const task = newTask([]);
  tasks.set(request.id, task);
  const applied = (async () => {
    await unlessStopped(task, Promise.all(earlier));
    movedIfClosing(request);
    const own = tableOf(request.table, false);
    const ops = request.clear ? everyKey(own) : existingOnce(request.ops);
    if (ops.length === 0) return { value: 0, ticket: 0, change: null };
    return { ...(await writeTransaction({ ...request, ops }, task)), value: ops.length };
  })();
  const done = keepInFlight(
    applied.then(
      (result) => acknowledge(request, result),
      (error) => (error === ABORTED ? send({ id: request.id, aborted: true }) : fail(request.id, error)),
    ),
  );
  done.then(() => tasks.delete(request.id));
  if (request.clear) {
    barrier = done;
    done.then(() => {
      if (barrier === done) barrier = null;
    });
    return;
  }
  const tail = earlier.length === 0 ? done : Promise.all([done, ...earlier]);
  for (const key of keys) keyTails.set(key, tail);
  tail.then(() => {
    for (const key of keys) if (keyTails.get(key) === tail) keyTails.delete(key);
  });
}

/** A delete of every key of the store's table `table` (undefined: the default), as write operations. */
function everyKey(table) {
  if (table === NO_TABLE) return [];
  return unpackKeys(store.keys(undefined, table)).map(({ bytes, key }) => ({
    type: 'delete',
    key: bytes,
    isString: typeof key === 'string',
    table,
  }));
}

/**
 * The deletes among `ops` whose key exists, each key once.
 * @param {Array<{ type: 'delete', key: Uint8Array, isString: boolean }>} ops
 */
function existingOnce(ops) {
  const seen = new Set();
  return ops.filter((op) => {
    const id = keyIds.decode(op.key);
    if (seen.has(id)) return false;
    seen.add(id);
    return store.has(op.key, op.table);
  });
}

/**
 * A write's version checks (`[{ key, table, version }]`, version -1 for "absent") in the form
 * the core takes: `[tableId, key, version, ...]`. A check on a table that does not exist passes
 * only for "absent" (and is then dropped).
 */
function versionChecks(checks) {
  const flat = [];
  for (const { key, table, version } of checks) {
    const id = tableOf(table, false);
    if (id === NO_TABLE) {
      if (version !== -1) throw named('WalnutConflictError', `table ${table} does not exist, the check expects version ${version}`);
      continue;
    }
    flat.push(id ?? 0, key, version);
  }
  return flat;
}

// ----- export (docs/FORMAT.md section 12) -----

/** Exports under way, by handle: `{ id, owner }` (ids are this store's; a new leader knows none). */
const exportsUnderWay = new Map();

/**
 * One step of an export: `begin` takes the snapshot; `next` answers about 256 KiB of the file
 * (null at its end, when the export is finished); `cancel` gives it up.
 */
function exportStep(request) {
  const { id, action, handle } = request;
  if (action === 'begin') {
    const core = store.exportBegin();
    const h = `${txNonce}:e${core}`;
    exportsUnderWay.set(h, { id: core, owner: request.owner });
    return reply(id, h);
  }
  const e = exportsUnderWay.get(handle);
  if (action === 'cancel') {
    exportsUnderWay.delete(handle);
    if (e && !e.done) store.exportCancel(e.id);
    return reply(id, undefined);
  }
  if (!e) throw named(LEADER_CHANGED, 'the export was taken on a leader that is gone: export again');
  if (e.done) {
    exportsUnderWay.delete(handle);
    return reply(id, null);
  }
  const piece = store.exportNext(e.id, EXPORT_PIECE);
  // The core finished it with this piece (or before it): the next call answers the end.
  if (piece === undefined) {
    exportsUnderWay.delete(handle);
    return reply(id, null);
  }
  if (piece.length < EXPORT_PIECE) e.done = true;
  return reply(id, piece, [piece.buffer]);
}

/** Bytes of an export per answer (as the engine's, www/engine.js). */
const EXPORT_PIECE = 256 * 1024;

/** The import under way in this worker's store: `{ handle, owner }` (one at a time). */
let importUnderWay = null;

/**
 * One step of an import into this (empty) store: `begin` stages it (after topping the OPFS
 * pool up), `write` appends the page's next bytes, `finish` checks the whole file and installs
 * it (the pool topped up first: sealing the log and two checkpoints take free files), `cancel`
 * gives it up. A handle this worker did not give (a leader change) is refused: import again.
 * @returns {Promise<unknown>}
 */
async function importStep(request) {
  const { action, handle } = request;
  if (action === 'begin') {
    if (importUnderWay) throw named('WalnutInvalidArgumentError', 'store: an import is under way in this store');
    const begun = { handle: `${txNonce}:i${request.id}`, owner: request.owner };
    importUnderWay = begun;
    try {
      await store.refillPool();
      if (importUnderWay !== begun) throw named('WalnutClosedError', 'the store closed');
      store.importBegin();
    } catch (error) {
      if (importUnderWay === begun) importUnderWay = null;
      throw error;
    }
    return begun.handle;
  }
  const mine = importUnderWay && importUnderWay.handle === handle;
  if (action === 'cancel') {
    if (mine) {
      importUnderWay = null;
      store.importCancel();
    }
    return undefined;
  }
  if (!mine) throw named(LEADER_CHANGED, 'the import was begun on a leader that is gone: import again');
  try {
    if (action === 'write') return store.importWrite(request.bytes);
    importUnderWay = null;
    await store.refillPool();
    return store.importFinish();
  } catch (error) {
    importUnderWay = null;
    store.importCancel();
    throw error;
  }
}

// ----- interactive transactions (the core's txn.rs; common.js runs the callbacks) -----

/** Open transactions by handle: `{ txn, owner, layers }` (layers: the writes of each nesting level, for change events). */
const txs = new Map();
/** Makes handles unique across this worker's stores (a new leader knows none of the old ones). */
const txNonce = Math.random().toString(36).slice(2, 10);

function txOf(handle) {
  const tx = txs.get(handle);
  if (!tx) throw named('WalnutTransactionError', 'is not an open transaction: it ended, or the leader changed');
  return tx;
}

/**
 * One call of a transaction: begin, get, keys, put (bytes or a Blob, streamed in chunks),
 * delete, nest, end (a nested one: keep or roll back), commit, abort.
 */
function transact(request) {
  const { id, action } = request;
  switch (action) {
    case 'begin': {
      if (request.txId !== undefined) {
        const status = store.idStatus(utf8Encoder.encode(request.txId));
        if (status?.committed) {
          const value = { duplicate: true, version: status.lsn };
          // Strict: answered with the next group's flush, as a write that wrote nothing is (the
          // earlier commit under this id may have been relaxed, not yet flushed).
          if (request.strict) return acknowledge({ id, strict: true }, { value, ticket: 0, change: null });
          return reply(id, value);
        }
      }
      const txn = store.txBegin();
      const handle = `${txNonce}:${txn}`;
      txs.set(handle, { txn, owner: request.owner, layers: [[]] });
      return reply(id, { txn: handle });
    }
    // A read in a table that does not exist reads nothing, and is noted: the table's creation
    // with that key (or in that range) before the commit is a conflict.
    case 'get': {
      const table = tableOf(request.table, false);
      const tx = txOf(request.txn);
      if (table !== NO_TABLE) return reply(id, store.txGet(tx.txn, request.key, table));
      store.txNoteAbsent(tx.txn, request.table, request.key, undefined);
      return reply(id, undefined);
    }
    case 'keys': {
      const table = tableOf(request.table, false);
      const tx = txOf(request.txn);
      if (table === NO_TABLE) {
        store.txNoteAbsent(tx.txn, request.table, undefined, request.options);
        return reply(id, new Uint8Array(0));
      }
      const packed = store.txKeys(tx.txn, request.options, table);
      return reply(id, packed, [packed.buffer]);
    }
    case 'put': {
      const tx = txOf(request.txn);
      const table = tableOf(request.table, true);
      const { key, isString, value } = request;
      const op = { type: 'put', key, isString, table };
      if (value instanceof Uint8Array && value.length <= chunkSize) {
        store.txPut(tx.txn, key, isString, value, table);
        tx.layers.at(-1).push(op);
        return reply(id, undefined);
      }
      store.txnPut(tx.txn, key, isString, table);
      const task = newTask([]);
      const streamed = writeValue(value, task, async (chunk) => {
        store.txnChunk(tx.txn, chunk);
        await giveWay();
      }).then(() => {
        tx.layers.at(-1).push(op);
      });
      keepInFlight(answer(id, streamed));
      return undefined;
    }
    case 'delete': {
      const tx = txOf(request.txn);
      const table = tableOf(request.table, true);
      store.txnDelete(tx.txn, request.key, table);
      tx.layers.at(-1).push({ type: 'delete', key: request.key, isString: false, table });
      return reply(id, undefined);
    }
    case 'nest': {
      const tx = txOf(request.txn);
      const depth = store.txNest(tx.txn);
      tx.layers.push([]);
      return reply(id, depth);
    }
    case 'end': {
      const tx = txOf(request.txn);
      const depth = store.txEnd(tx.txn, Boolean(request.keep));
      const inner = tx.layers.pop() ?? [];
      if (request.keep) tx.layers.at(-1)?.push(...inner);
      return reply(id, depth);
    }
    case 'commit': {
      // Another context's COMMIT sent again after a leader change: made already if its
      // request id is remembered (then this transaction's writes are those it committed).
      if (!txs.has(request.txn) && request.rid && request.txId === undefined) {
        const status = store.idStatus(utf8Encoder.encode(request.rid));
        if (status) {
          const ticket = status.committed ? 0 : status.ticket;
          return acknowledge(request, { value: { applied: true, version: status.lsn }, ticket, change: null });
        }
      }
      const tx = txOf(request.txn);
      txs.delete(request.txn);
      const r = store.txCommit(tx.txn, request.strict, utf8Encoder.encode(request.txId ?? request.rid ?? ''));
      const ops = tx.layers.flat();
      if (!r.applied) return acknowledge(request, { value: { applied: false, version: r.lsn }, ticket: r.ticket, change: null });
      return acknowledge(request, { value: { applied: true, version: r.lsn }, ticket: r.ticket, change: changeOf(ops) });
    }
    case 'abort': {
      const tx = txs.get(request.txn);
      txs.delete(request.txn);
      if (tx) abortQuietly(tx.txn, true);
      return reply(id, undefined);
    }
    default:
      throw named('WalnutInvalidArgumentError', `unknown transaction call ${String(action)}`);
  }
}

/**
 * A write sent again after a leader change: if the store remembers its request id, it was
 * committed (or is queued) and is answered so, not applied again; a write whose stream the last
 * leader read to its end and did not commit cannot be made again (its data is gone).
 * @returns {boolean} whether the write is answered
 */
function answeredBefore(request) {
  const status = store.idStatus(utf8Encoder.encode(request.rid));
  // A batch under the caller's id was committed under that id, not the request's: found so, it
  // is answered as one made before (its stream, read by the last leader, cannot be read again).
  const made = !status && request.txId !== undefined ? store.idStatus(utf8Encoder.encode(request.txId)) : null;
  if (made) {
    cancelStreams(request.ops);
    const value = { applied: false, version: made.lsn, seqs: [] };
    acknowledge(request, { value, ticket: made.committed ? 0 : made.ticket, change: null });
    return true;
  }
  if (!status && !request.recheck) return false;
  cancelStreams(request.ops);
  // A clear() or deleteMany() committed by the last leader: how many keys it deleted is gone.
  const value =
    request.clear || request.existing ? NaN : isLoneDelete(request.ops) ? true : () => retriedValue(request);
  if (status) acknowledge(request, { value, ticket: status.committed ? 0 : status.ticket, change: null });
  else fail(request.id, named(LEADER_CHANGED, "the leader changed after this put's stream was read; it was not committed: try again"));
  return true;
}

/**
 * What a write answered from its request id resolves to, as writeValue_ would have answered the
 * first attempt: the sequence numbers its commit took, read back by the commit's LSN (called
 * once the commit is durable, so a queued one is applied by then). The store keeps them with the
 * commit id (compaction or deleteUpTo() since change nothing). For an id read from a checkpoint
 * older than format version 8 they are looked up in the entries still at that LSN (a put whose
 * entries were moved or deleted then resolves to 0); an id taken over from an export has none,
 * and such a put resolves to 0.
 */
function retriedValue(request) {
  const status = store.idStatus(utf8Encoder.encode(request.rid));
  const flat = status?.committed ? store.commitSeqs(status.lsn) : [];
  const names = new Map(store.tables().map((t) => [t.id, t.name]));
  const seqs = [];
  for (let i = 0; i + 2 < flat.length; i += 3) {
    seqs.push({ table: names.get(flat[i]) ?? '', first: flat[i + 1], last: flat[i + 2] });
  }
  if (request.seqs) return seqs;
  const [op] = request.ops;
  if (request.ops.length === 1 && (op.type === 'put' || op.type === 'append')) {
    const name = (typeof op.table === 'string' ? op.table : request.table) ?? '';
    return seqs.find((x) => x.table === name)?.last ?? 0;
  }
  return undefined;
}

/** @param {Array<{ type: string }>} ops */
function isLoneDelete(ops) {
  return ops.length === 1 && ops[0].type === 'delete';
}

/**
 * A write task's state, shared with cancel() and close(), which stop it.
 * @param {Array<{ value?: unknown }>} ops
 * @returns {{ stop: unknown, stopped: Promise<void>, onStop: () => void, unread: number, reader?: ReadableStreamDefaultReader }}
 *   `stop`: what the task throws once stopped (ABORTED, or close()'s WalnutClosedError), null
 *   while it runs; `stopped` settles then; `unread`: its stream values not yet read to the end
 */
function newTask(ops) {
  const task = { stop: null, unread: ops.filter((op) => op.value instanceof ReadableStream).length };
  task.stopped = new Promise((resolve) => (task.onStop = resolve));
  return task;
}

/**
 * Stops a write task: it throws `reason` at its next step; a read waiting on a slow source,
 * a wait behind earlier writes or for staging memory ends now.
 * @param {{ stop: unknown, onStop: () => void, reader?: ReadableStreamDefaultReader }} task
 * @param {unknown} reason ABORTED or an Error
 */
function stopTask(task, reason) {
  if (task.stop) return;
  task.stop = reason;
  task.onStop();
  task.reader?.cancel().catch(noop);
}

/** @param {{ stop: unknown }} task @throws its stop reason once it was stopped */
function throwIfStopped(task) {
  if (task.stop) throw task.stop;
}

/**
 * Waits for `promise`, unless the task is stopped first.
 * @param {{ stop: unknown, stopped: Promise<void> }} task
 * @param {Promise<unknown>} promise
 */
async function unlessStopped(task, promise) {
  await Promise.race([promise, task.stopped]);
  throwIfStopped(task);
}

/**
 * Cancels the streams among a write's values that no reader holds (never read), so that their
 * source stops (a fetch body releases its connection). A stream being read is cancelled through
 * its reader by writeValue; one read to its end is closed already.
 * @param {Array<{ value?: unknown }>} ops
 */
function cancelStreams(ops) {
  for (const { value } of ops) {
    if (value instanceof ReadableStream && !value.locked) value.cancel().catch(noop);
  }
}

/**
 * Writes a lone small put or a delete with the single-call methods, synchronously.
 * @returns {{ value: boolean | undefined, ticket: number }} for a delete, whether the key
 *   existed; the commit's ticket (0 when nothing was written)
 */
function applySingle(request) {
  const { id, ops, strict, progress, rid } = request;
  const [op] = ops;
  if (request.checks) store.checkVersions(request.checks); // in the same turn as the write
  if (op.type === 'delete') {
    const { existed, ticket } = store.delete(op.key, strict, op.table);
    // A batch of one delete resolves to its numbers (none when the key was absent).
    const value = request.seqs ? (existed ? seqsOf(request.tableNames) : []) : existed;
    return { value, ticket, change: existed ? changeOf(ops) : null };
  }
  if (rid) {
    const { committed, ticket } = store.putWithId(op.key, op.isString, op.value, strict, utf8Encoder.encode(rid));
    if (progress) send({ id, progress: op.value.length });
    const value = committed ? undefined : writeValue_(request, undefined);
    return { value, ticket: committed ? 0 : ticket, change: committed ? null : changeOf(ops) };
  }
  const ticket = store.put(op.key, op.isString, op.value, strict, op.table);
  if (progress) send({ id, progress: op.value.length });
  return { value: writeValue_(request, undefined), ticket, change: changeOf(ops) };
}

/**
 * Writes a transaction (a large put, or a batch) whose values are streamed in chunks of exactly
 * chunkSize bytes (the last one of each value shorter), giving way to other requests between
 * chunks.
 * @param {{ id: number, ops: Array<any>, strict: boolean, progress: boolean }} request
 * @param {ReturnType<typeof newTask>} task
 */
async function writeTransaction(request, task) {
  const { id, ops, strict, progress, rid } = request;
  // Another context's lone delete answers whether the key existed, as delete() does.
  if (rid && isLoneDelete(ops) && !store.has(ops[0].key, ops[0].table)) return { value: false, ticket: 0, change: null };
  const txn = store.begin();
  let written = 0;
  let reported = -1;
  const report = () => {
    if (progress && reported !== written) send({ id, progress: (reported = written) });
  };
  const writeChunk = async (chunk) => {
    store.txnChunk(txn, chunk);
    written += chunk.length;
    report();
    throwIfStopped(task);
    await giveWay();
  };
  try {
    for (const op of ops) {
      if (op.type === 'delete') {
        store.txnDelete(txn, op.key, op.table);
      } else {
        if (op.type === 'append') store.txnAppend(txn, op.table);
        else store.txnPut(txn, op.key, op.isString, op.table);
        await writeValue(op.value, task, writeChunk);
      }
    }
    throwIfStopped(task);
    report(); // values without any chunk (empty ones) get their one report here
    if (request.checks) store.checkVersions(request.checks); // in the same turn as the COMMIT
    if (request.txId !== undefined) {
      // A batch under the caller's id: applied once (see transaction()); a follower's retried
      // request is recognised by that id too.
      const idBytes = utf8Encoder.encode(request.txId);
      const earlier = store.idStatus(idBytes);
      if (earlier) {
        // Made before (committed, or queued: then this answer waits for that commit).
        abortQuietly(txn);
        const ticket = earlier.committed ? 0 : earlier.ticket;
        return { value: { applied: false, version: earlier.lsn, seqs: [] }, ticket, change: null };
      }
      const { ticket } = store.commitWithId(txn, strict, idBytes);
      return {
        value: { applied: true, version: store.lastLsn, seqs: seqsOf(request.tableNames) },
        ticket,
        change: changeOf(ops),
      };
    }
    const value = rid && isLoneDelete(ops) ? true : undefined;
    if (!rid) {
      const ticket = store.commit(txn, strict);
      return { value: writeValue_(request, value), ticket, change: changeOf(ops) };
    }
    const { committed, ticket } = store.commitWithId(txn, strict, utf8Encoder.encode(rid));
    return {
      value: committed ? value : writeValue_(request, value),
      ticket: committed ? 0 : ticket,
      change: committed ? null : changeOf(ops),
    };
  } catch (error) {
    abortQuietly(txn);
    throw error;
  }
}

/**
 * Cuts a value into chunks of chunkSize bytes (the last one shorter) and hands each to
 * `writeChunk`, reading Blobs and streams only as fast as the chunks are written, through a
 * staging buffer reserved from the shared budget (STAGING_BYTES).
 * @param {Uint8Array | Blob | ReadableStream} value
 * @param {ReturnType<typeof newTask>} task gets the reader, so that cancel() and close() can
 *   stop a read that waits on a slow source
 * @param {(chunk: Uint8Array) => Promise<void>} writeChunk
 */
async function writeValue(value, task, writeChunk) {
  if (value instanceof Uint8Array) {
    for (let offset = 0; offset < value.length; offset += chunkSize) {
      await writeChunk(value.subarray(offset, offset + chunkSize));
    }
    return;
  }
  // A Blob's size is known: a small one stages only its own bytes.
  const bytes = value instanceof Blob ? Math.min(value.size, chunkSize) : chunkSize;
  await reserveStaging(bytes, task);
  try {
    throwIfStopped(task);
    // A Blob is read into the staging buffer itself (a BYOB reader: the browser fills the
    // buffer it is lent, so reading a 1 GiB Blob allocates nothing per chunk and leaves no
    // garbage behind); where a Blob's stream is no byte stream, chunk by chunk as any stream.
    // (An empty Blob has nothing to lend a buffer for: a zero-length read is a TypeError.)
    const byob = value instanceof Blob && value.size > 0 ? byobReader(value) : null;
    const reader = byob ?? (value instanceof Blob ? value.stream() : value).getReader();
    task.reader = reader;
    // Once a stream has ended, its data is all in hand: close() lets the write finish.
    const ended = value instanceof ReadableStream ? () => task.unread-- : noop;
    try {
      if (byob) await writeLent(byob, allocateStaging(bytes), task, writeChunk);
      else await writeChunks(reader, allocateStaging(bytes), task, writeChunk, ended);
    } catch (error) {
      reader.cancel().catch(noop); // stop the source: nothing more will be read from it
      throw error;
    }
  } finally {
    releaseStaging(bytes);
  }
}

/**
 * A BYOB reader of `blob`'s bytes, or null where its stream is not a byte stream.
 * @param {Blob} blob
 * @returns {ReadableStreamBYOBReader | null}
 */
function byobReader(blob) {
  try {
    return blob.stream().getReader({ mode: 'byob' });
  } catch {
    return null;
  }
}

/**
 * Reads `reader` to its end into `staging`, lent to the browser for each read (each read
 * hands the same memory back in a new ArrayBuffer), writing each chunk as it fills and the
 * last, shorter one.
 * @param {ReadableStreamBYOBReader} reader
 * @param {Uint8Array} staging at most chunkSize bytes, its own whole ArrayBuffer
 * @param {{ stop: unknown }} task
 * @param {(chunk: Uint8Array) => Promise<void>} writeChunk
 */
async function writeLent(reader, staging, task, writeChunk) {
  const size = staging.length;
  let buffer = staging.buffer;
  let filled = 0;
  reading.add(reader);
  try {
    await readLent();
  } finally {
    reading.delete(reader);
  }
  if (filled > 0) await writeChunk(new Uint8Array(buffer, 0, filled));

  async function readLent() {
    for (;;) {
      const { done, value } = await reader.read(new Uint8Array(buffer, filled, size - filled)).catch((error) => {
        throw named('WalnutIoError', `reading the value failed: ${describeError(error)}`);
      });
      throwIfStopped(task);
      // A read cancelled from elsewhere ends without its buffer: what was read is not the value.
      if (done && !value) throw named('WalnutIoError', 'reading the value failed: its stream was cancelled');
      buffer = value.buffer;
      if (done) return;
      filled += value.byteLength;
      if (filled === size) {
        await writeChunk(new Uint8Array(buffer, 0, size)); // copied into wasm memory
        filled = 0;
      }
    }
  }
}

/**
 * Blob readers under way, held from a root: in Chromium a Blob's byte stream with a BYOB read
 * pending is otherwise reachable only from that read's promise, and a garbage collection then
 * collects it with its source, so the read never settles (a put under forced GC hung: see
 * www/engine.js, which reads Blobs the same way).
 */
const reading = new Set();

/**
 * Reads `reader` to its end, writing every full chunk (straight from the parts read when they
 * hold one, else gathered in `staging`) and the last, shorter one.
 * @param {ReadableStreamDefaultReader} reader
 * @param {Uint8Array} staging at most chunkSize bytes; a value smaller than a chunk fits in it
 * @param {{ stop: unknown }} task
 * @param {(chunk: Uint8Array) => Promise<void>} writeChunk
 * @param {() => void} ended called when the reader reports the end, before the last chunk
 */
async function writeChunks(reader, staging, task, writeChunk, ended) {
  let filled = 0;
  for (;;) {
    const { done, value: part } = await reader.read().catch((error) => {
      throw named('WalnutIoError', `reading the value failed: ${describeError(error)}`);
    });
    throwIfStopped(task); // a stopped task's read ends early: what it read is not the value
    if (done) {
      ended();
      break;
    }
    const bytes = asBytes(part);
    let offset = 0;
    if (filled > 0) {
      offset = Math.min(chunkSize - filled, bytes.length);
      staging.set(bytes.subarray(0, offset), filled);
      filled += offset;
      if (filled < chunkSize) continue;
      await writeChunk(staging); // copied into wasm memory: staging can be refilled
      filled = 0;
    }
    for (; bytes.length - offset >= chunkSize; offset += chunkSize) {
      await writeChunk(bytes.subarray(offset, offset + chunkSize));
    }
    staging.set(bytes.subarray(offset), 0);
    filled = bytes.length - offset;
  }
  if (filled > 0) await writeChunk(staging.subarray(0, filled));
}

/**
 * Reserves `bytes` of the staging budget, waiting (unless the task is stopped) while other
 * puts hold it. Any waiter that fits goes first, so a small Blob never waits behind a large
 * stream for memory it does not need.
 * @param {number} bytes
 * @param {ReturnType<typeof newTask>} task
 */
async function reserveStaging(bytes, task) {
  if (stagingInUse + bytes <= stagingLimit()) {
    stagingInUse += bytes;
    return;
  }
  const waiter = { bytes, granted: false, resume: noop };
  const granted = new Promise((resolve) => (waiter.resume = resolve));
  stagingWaiters.push(waiter);
  await Promise.race([granted, task.stopped]);
  if (waiter.granted) return; // a stopped task still releases it (writeValue's finally)
  stagingWaiters.splice(stagingWaiters.indexOf(waiter), 1);
  throwIfStopped(task);
}

/** @param {number} bytes returned to the staging budget; the waiters that now fit go on */
function releaseStaging(bytes) {
  stagingInUse -= bytes;
  for (let i = 0; i < stagingWaiters.length; ) {
    const waiter = stagingWaiters[i];
    if (stagingInUse + waiter.bytes > stagingLimit()) {
      i++;
      continue;
    }
    stagingInUse += waiter.bytes;
    waiter.granted = true;
    stagingWaiters.splice(i, 1);
    waiter.resume();
  }
}

/** The staging budget, bytes: STAGING_BYTES, or one chunk if that is larger. */
function stagingLimit() {
  return Math.max(STAGING_BYTES, chunkSize);
}

/**
 * @param {number} bytes
 * @returns {Uint8Array}
 * @throws {Error} WalnutIoError naming the size when the memory cannot be had
 */
function allocateStaging(bytes) {
  try {
    return new Uint8Array(bytes);
  } catch (error) {
    throw named(
      'WalnutIoError',
      `could not allocate ${bytes} bytes of memory to stage the value (${describeError(error)}); nothing was written`,
    );
  }
}

/**
 * @param {unknown} part a chunk read from a value's stream
 * @returns {Uint8Array}
 */
function asBytes(part) {
  if (part instanceof Uint8Array) return part;
  if (ArrayBuffer.isView(part)) return new Uint8Array(part.buffer, part.byteOffset, part.byteLength);
  if (part instanceof ArrayBuffer) return new Uint8Array(part);
  throw named('WalnutInvalidArgumentError', `value: the stream yielded a ${describe(part)}, not bytes`);
}

/**
 * Answers get(): a value of up to one chunk as bytes (the page makes the Blob: cheaper than
 * making it here and cloning it over), a larger one as a Blob built here, folding the chunks in
 * every FOLD_BYTES.
 * @param {number} id
 * @param {Uint8Array} key
 */
function getValue(id, key, table) {
  // A value of up to one chunk's size (every small value) comes whole in one call.
  const small = store.getUpTo(key, table, chunkSize);
  if (typeof small !== 'number') {
    reply(id, small, small ? [small.buffer] : []);
    return;
  }
  const opened = store.openReader(key, table);
  if (!opened) {
    reply(id, undefined);
    return;
  }
  const reading = (async () => {
    try {
      let blob = new Blob([]);
      let parts = [];
      let partBytes = 0;
      for (let chunk; (chunk = store.readNext(opened.id)) !== undefined; ) {
        parts.push(chunk);
        partBytes += chunk.length;
        if (partBytes >= FOLD_BYTES) {
          blob = new Blob([blob, ...parts]);
          parts = [];
          partBytes = 0;
        }
        await giveWay();
      }
      return new Blob([blob, ...parts]);
    } finally {
      if (!crashed) store.closeReader(opened.id);
    }
  })();
  keepInFlight(answer(id, reading));
}

/**
 * Answers one pull of a getStream() stream; closes the reader at the end or on error.
 * @param {number} id
 * @param {number} reader
 */
function readChunk(id, reader, buffer) {
  if (!readers.has(reader)) throw named('WalnutInvalidArgumentError', `reader ${reader} is not open`);
  let chunk;
  try {
    // A buffer the page handed back (see getStream) is read into and handed on again: a
    // stream read back with a BYOB reader allocates nothing per chunk on either side.
    if (buffer instanceof ArrayBuffer && buffer.byteLength >= chunkSize) {
      const got = store.readNextInto(reader, new Uint8Array(buffer));
      chunk = typeof got === 'number' ? new Uint8Array(buffer, 0, got) : got; // (a longer chunk comes as its own)
    } else {
      chunk = store.readNext(reader);
    }
  } catch (error) {
    closeReader(reader);
    throw error;
  }
  if (chunk === undefined) closeReader(reader);
  reply(id, chunk, chunk ? [chunk.buffer] : []);
}

/** @param {number} reader */
function closeReader(reader) {
  if (readers.delete(reader) && !crashed) store.closeReader(reader);
}

/** @param {number} target the id of the write request to cancel */
function cancel(target, closed = false) {
  const task = tasks.get(target);
  if (!task) return; // finished already: its result stands
  // A pending read then ends; the task sees the stop before committing.
  stopTask(task, closed ? closedBeforeEnd() : ABORTED);
}

/** A put given up by close() before its stream ended. */
function closedBeforeEnd() {
  return named('WalnutClosedError', "the store was closed before the value's stream ended; the old value is kept");
}

/**
 * Finishes the requests made before close (their results go out first), syncs and releases the
 * file. What it waits for: every write whose data is all in hand (bytes, Blobs, streams read to
 * their end), reads and compaction. A write with a stream not yet read to its end is aborted
 * instead (ABORT is written, the old value kept) and rejects with WalnutClosedError: its source
 * may never end, and close() must not wait on it. After a trap the instance is left alone:
 * stopping the worker releases the file, and close() rejects, as the store was not closed cleanly.
 */
async function closeStore() {
  closing = true;
  // Other contexts' puts still reading a stream go to the next leader (see sendRemote).
  for (const task of tasks.values()) {
    if (task.unread > 0) {
      stopTask(task, named('WalnutClosedError', "the store was closed before the value's stream ended; the old value is kept"));
    }
  }
  await Promise.all(inflight);
  commitGroup();
  if (importUnderWay) {
    importUnderWay = null;
    if (!crashed) store.importCancel();
  }
  try {
    // The closing checkpoint may need a file from the pool; let it refill first. A failed
    // refill only skips that checkpoint (the next open replays the log instead).
    if (!crashed) await store.refillPool().catch(noop);
    store.close();
  } catch (error) {
    if (!crashed) throw error;
    throw named(
      'WalnutPoisonedError',
      `the store was not closed cleanly: its WebAssembly instance crashed (${describeError(crashed)}); ` +
        'the next open recovers every acknowledged write',
    );
  } finally {
    readers.clear();
    member?.leave(); // another context may lead now
  }
}

/**
 * Answers a write: at once when relaxed, after the committer's flush when strict. Its change
 * event goes to every context once it is durable.
 * @param {{ id: number, strict: boolean }} request
 * @param {{ value: unknown, ticket: number, change: object | null }} applied
 */
function acknowledge({ id, strict }, { value, ticket, change }) {
  if (!strict) {
    reply(id, typeof value === 'function' ? value() : value);
    if (change) {
      undurableChanges.push(change);
      // Relaxed writes are flushed for their events within a second, with the next group or alone.
      relaxedFlush ??= setTimeout(scheduleGroup, RELAXED_EVENTS_MS);
    }
    return;
  }
  durableWaiters.push({ id, value, ticket, change });
  scheduleGroup();
}

/** Relaxed writes' change events wait at most this long for a flush, ms. */
const RELAXED_EVENTS_MS = 1000;
let relaxedFlush = null;

function scheduleGroup() {
  if (!groupCommitScheduled) {
    groupCommitScheduled = true;
    groupCommitChannel.port2.postMessage(null);
  }
}

/**
 * Group commit: the committer flushes once for every strict write applied so far, then each
 * write is answered with its own commit's outcome (a flush that failed earlier, asked for by a
 * read, a relaxed write, a checkpoint or a compaction step, fails exactly the commits it
 * carried, and is reported here to them). A write that wrote nothing (a delete of an absent
 * key, ticket 0) is answered with the group. Then the change events of what is now durable.
 */
function commitGroup() {
  groupCommitScheduled = false;
  clearTimeout(relaxedFlush);
  relaxedFlush = null;
  const group = durableWaiters;
  durableWaiters = [];
  const changes = undurableChanges;
  undurableChanges = [];
  if (group.length === 0 && changes.length === 0) return;
  let outcomes;
  try {
    if (crashed) throw crashedError();
    const tickets = group.filter((w) => w.ticket > 0);
    const failures = store.commitGroup(Float64Array.from(tickets, (w) => w.ticket));
    outcomes = new Map(tickets.map((w, i) => [w, failures[i]]));
    // Writes that wrote nothing (ticket 0) answer from what is in the store, relaxed writes
    // included: the flush above made that durable, unless it failed, which sync() reports
    // (nothing is flushed again when nothing was written since).
    if (tickets.length < group.length) {
      let unwritten;
      try {
        store.sync();
      } catch (error) {
        unwritten = error;
      }
      for (const w of group) if (w.ticket === 0) outcomes.set(w, unwritten);
    }
  } catch (error) {
    for (const { id } of group) fail(id, error);
    return;
  }
  for (const waiter of group) {
    const failure = outcomes.get(waiter);
    if (failure) {
      fail(waiter.id, failure);
    } else {
      // A retried write's answer is read once its commit is durable (see retriedValue).
      reply(waiter.id, typeof waiter.value === 'function' ? waiter.value() : waiter.value);
      if (waiter.change) changes.push(waiter.change);
    }
  }
  if (changes.length > 0 && member) emitChanges(changes);
}

/** Lets other requests run when this task has had the thread for SLICE_MS. */
async function giveWay() {
  if (performance.now() - sliceStart < SLICE_MS) return;
  await new Promise((resume) => {
    yieldResumers.push(resume);
    yieldChannel.port2.postMessage(null);
  });
  sliceStart = performance.now();
}

/**
 * Runs one compaction round step by step, handing the worker back to other requests after
 * every step (one chunk copied at most), so small puts are served while it runs.
 * @returns {Promise<number>} rounds finished (0 when there was nothing worth compacting)
 */
async function compact() {
  for (;;) {
    if (crashed) throw crashedError();
    const step = store.compactStep();
    if (step !== 'progress') return step === 'done' ? 1 : 0;
    sliceStart = -Infinity; // give way after every step, not only after a full slice
    await giveWay();
  }
}

/** Aborts `txn` (an interactive transaction's with `interactive`), reporting nothing but a trap. @param {number} txn */
function abortQuietly(txn, interactive = false) {
  if (crashed) return;
  try {
    if (interactive) store.txAbort(txn);
    else store.abort(txn);
  } catch (error) {
    // The error that made us abort is the one to report; a store that cannot write ABORT is
    // poisoned and recovery discards the transaction anyway. A trap still counts.
    if (error instanceof WebAssembly.RuntimeError) crashed ??= error;
  }
}

/**
 * Answers a request from a promise.
 * @param {number} id
 * @param {Promise<unknown>} promise
 * @returns {Promise<void>} settles (never rejects) once the answer is queued
 */
function answer(id, promise) {
  return promise.then(
    (value) => reply(id, value),
    (error) => fail(id, error),
  );
}

/**
 * Makes close() wait for `work`, which must never reject.
 * @param {Promise<void>} work
 */
function keepInFlight(work) {
  inflight.add(work);
  work.then(() => inflight.delete(work));
  return work;
}

/**
 * @param {number} id
 * @param {unknown} value
 * @param {Transferable[]} [transfer]
 */
function reply(id, value, transfer = []) {
  send({ id, value }, transfer);
}

/**
 * @param {number} id
 * @param {unknown} error
 */
function fail(id, error) {
  if (error instanceof WebAssembly.RuntimeError) crashed ??= error;
  send({ id, error: serializeError(error) });
}

/** Queues a result; results queued in one microtask go out as one message. */
function send(result, transfer = []) {
  if (result.id < 0) {
    sendRemote(result); // another context's request (see serve)
    return;
  }
  if (outbox.length === 0) queueMicrotask(flushOutbox);
  outbox.push(result);
  outboxTransfer.push(...transfer);
}

function flushOutbox() {
  if (outbox.length === 0) return; // sent already, ahead of a commit's events (commitIfAlone)
  const results = outbox;
  const transfer = outboxTransfer;
  outbox = [];
  outboxTransfer = [];
  self.postMessage({ results }, transfer);
}

/**
 * Turns anything thrown into `{ name, message }` with one of walnut's stable names.
 * @param {unknown} error
 */
function serializeError(error) {
  if (error instanceof WebAssembly.RuntimeError) {
    return serializeError(crashedError(error));
  }
  if (error instanceof Error && /^Walnut[A-Za-z]*Error$/.test(error.name)) {
    return { name: error.name, message: error.message };
  }
  return { name: 'WalnutIoError', message: describeError(error) };
}

/** The error every call gets once the wasm instance has trapped. */
function crashedError(trap = crashed) {
  return named(
    'WalnutPoisonedError',
    `the store's WebAssembly instance crashed (${describeError(trap)}); close it and open it again`,
  );
}

/**
 * @param {string} name
 * @param {string} message
 */
function named(name, message) {
  const error = new Error(message);
  error.name = name;
  return error;
}

/** @param {unknown} error */
function describeError(error) {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

/** @param {unknown} value */
function describe(value) {
  if (value === null) return 'null';
  if (typeof value !== 'object') return typeof value;
  return value.constructor?.name ?? 'object';
}

function noop() {}
