/**
 * walnut's multi-tab protocol: every page, iframe and worker of an origin that opens a store
 * uses it at once. It runs in each context's own walnut worker (worker.js). docs/MULTITAB.md
 * describes the messages, the states and what happens on each failure.
 *
 * - Leadership: the Web Lock `walnut:<store>`. Its holder, the leader, opens the store's OPFS
 *   files and serves every context. Every context asks for it when it opens the store; the
 *   browser grants it to one at a time and releases it when its holder closes or dies.
 * - Liveness: each context holds the Web Lock `walnut:<store>:alive:<context>` while it has the
 *   store open. A follower asks for its leader's, the leader for each client's: granted when the
 *   holder is gone, this is how death is learnt, without timeouts.
 * - Messages: BroadcastChannel `walnut:<store>` (hello, leader, change events) and one inbox per
 *   context, `walnut:<store>:to:<context>` (requests, results, stream pulls).
 *
 * What the peers got wrong and this design keeps from happening (PGlite #1109, #850, #863):
 * a message sent while no leader listens is never lost, because a follower keeps every call until
 * a leader has answered it and sends it again to the next one; a leader's announcement that is
 * missed costs nothing, because followers keep saying hello until one answers; re-election needs
 * nothing from the dead leader, because the lock queue elects and the alive lock tells.
 */

/** How long a follower waits between hellos, doubling up to the maximum, ms. */
const HELLO_MS = 25;
const HELLO_MAX_MS = 400;

/** A write whose stream a dead leader read part of cannot be sent again: this is its error. */
export const LEADER_CHANGED = 'WalnutLeaderChangedError';

/**
 * The names a store's contexts meet under.
 * @param {string} store
 */
export function names(store) {
  const base = `walnut:${store}`;
  return {
    leadership: base,
    alive: (ctx) => `${base}:alive:${ctx}`,
    control: base,
    inbox: (ctx) => `${base}:to:${ctx}`,
  };
}

/**
 * Holds a Web Lock until `release()` is called or the context dies.
 * @param {string} name
 * @param {{ signal?: AbortSignal, ifAvailable?: boolean }} [options]
 * @returns {{ granted: Promise<boolean>, release: () => void }} `granted` resolves true once
 *   held, false if the request was aborted (or, with ifAvailable, the lock was taken)
 */
export function holdLock(name, options = {}) {
  let release;
  const released = new Promise((resolve) => (release = resolve));
  const granted = new Promise((resolve) => {
    navigator.locks
      .request(name, options, (lock) => {
        resolve(lock !== null);
        return lock === null ? undefined : released;
      })
      .catch(() => resolve(false)); // aborted
  });
  return { granted, release };
}

/**
 * Resolves when the holder of lock `name` is gone (closed or dead); the lock is let go at once,
 * so every waiter learns it. Aborting `signal` stops waiting (resolves false).
 * @param {string} name
 * @param {AbortSignal} signal
 * @returns {Promise<boolean>}
 */
export function whenGone(name, signal) {
  return navigator.locks.request(name, { signal }, () => true).catch(() => false);
}

/**
 * A context's membership in a store's group: its channels, its alive lock, its place in the
 * leadership queue. The worker decides what to do as leader or follower; this class carries the
 * messages and tells it when things change.
 */
export class Member {
  /**
   * @param {string} store
   * @param {{
   *   onLeadership: () => void,
   *   onControl: (message: any) => void,
   *   onInbox: (message: any) => void,
   * }} hooks called when leadership is granted, and for every message of either channel
   */
  constructor(store, hooks) {
    this.store = store;
    this.ctx = crypto.randomUUID();
    this.names = names(store);
    this.hooks = hooks;
    /** Aborts the leadership request and every wait on another context's lock, at close. */
    this.closing = new AbortController();
    this.alive = null;
    this.leadership = null;
    this.control = null;
    this.inbox = null;
    /** @type {Map<string, BroadcastChannel>} inboxes of other contexts, opened as needed */
    this.outboxes = new Map();
  }

  /** Takes the alive lock, opens the channels and joins the leadership queue. */
  async join() {
    this.alive = holdLock(this.names.alive(this.ctx));
    await this.alive.granted; // a fresh name: granted at once
    this.control = new BroadcastChannel(this.names.control);
    this.control.onmessage = ({ data }) => this.hooks.onControl(data);
    this.inbox = new BroadcastChannel(this.names.inbox(this.ctx));
    this.inbox.onmessage = ({ data }) => this.hooks.onInbox(data);
    this.requeue();
  }

  /** Takes a place in the leadership queue (again, after giving leadership back). */
  requeue() {
    this.leadership = holdLock(this.names.leadership, { signal: this.closing.signal });
    this.leadership.granted.then((held) => held && this.hooks.onLeadership());
  }

  /** Sends `message` to context `ctx`'s inbox. */
  to(ctx, message) {
    let channel = this.outboxes.get(ctx);
    if (!channel) {
      channel = new BroadcastChannel(this.names.inbox(ctx));
      this.outboxes.set(ctx, channel);
    }
    channel.postMessage(message);
  }

  /** Forgets the outbox of a context that is gone. */
  forget(ctx) {
    this.outboxes.get(ctx)?.close();
    this.outboxes.delete(ctx);
  }

  /** Sends `message` to every other context of the store. */
  broadcast(message) {
    this.control?.postMessage(message);
  }

  /**
   * Resolves true when context `ctx` is gone, false if this member closed first.
   * @param {string} ctx
   */
  whenGone(ctx) {
    return whenGone(this.names.alive(ctx), this.closing.signal);
  }

  /**
   * Says hello until `answered()` says a leader has answered, backing off; sends a hello at
   * once when `nudge()` is called (a leader announced itself).
   * @param {() => boolean} answered
   */
  seekLeader(answered) {
    let wait = HELLO_MS;
    let timer = null;
    const hello = () => {
      clearTimeout(timer);
      if (answered() || this.closing.signal.aborted) return;
      this.broadcast({ type: 'hello', from: this.ctx });
      timer = setTimeout(hello, wait);
      wait = Math.min(wait * 2, HELLO_MAX_MS);
    };
    hello();
    return { nudge: () => ((wait = HELLO_MS), hello()), stop: () => clearTimeout(timer) };
  }

  /** Leaves the group: gives up leadership (held or queued), the alive lock and the channels. */
  leave() {
    this.closing.abort();
    this.leadership?.release();
    this.alive?.release();
    this.control?.close();
    this.inbox?.close();
    for (const channel of this.outboxes.values()) channel.close();
    this.outboxes.clear();
  }
}
