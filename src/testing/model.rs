//! A model checker for a store on a [`CrashVolume`] (the `testing` feature): operations of
//! every kind (puts, deletes, batches, streamed transactions, syncs, reads that settle, explicit
//! checkpoints and compaction, a disk that fills and frees, crashes, reopens) run against a
//! store and a model of what it must hold, checked after every step. Property tests generate
//! the operations (`tests/model.rs`), and so does a fuzzer (`fuzz/fuzz_targets/ops.rs`), from
//! the same oracle.
//!
//! What it checks after every step: the visible state is the model's; a commit acknowledged (a
//! strict or relaxed write that returned, a group commit once `sync()` returned `Ok` or its
//! ticket says committed) is present with its exact bytes in every state a crash leaves; a
//! commit reported failed is absent from all of them; `sync()` never returns `Ok` while a group
//! commit it should have reported has failed; nothing partial is ever visible; after a crash the
//! state is the durable one plus a prefix of the later commits, and the LSN has not gone back.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "an oracle reports a broken invariant by panicking, as assert! does"
)]

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;

use super::{pattern, CrashVolume};
use crate::index::KeyRange;
use crate::store::{BatchOp, Durability, IdCommit, IdStatus, Options, Outcome, Store, Ticket};

/// Keys and values.
type Model = BTreeMap<Vec<u8>, Vec<u8>>;
/// The effects of one commit: `None` deletes.
type Effect = Vec<(Vec<u8>, Option<Vec<u8>>)>;

fn apply(model: &mut Model, effect: &Effect) {
    for (k, v) in effect {
        match v {
            Some(v) => model.insert(k.clone(), v.clone()),
            None => model.remove(k),
        };
    }
}

/// Streamed transactions the harness keeps open at once, at most.
pub const SLOTS: usize = 4;

/// Commit ids the harness uses: few, so that batches retry ids often.
pub const IDS: u8 = 4;

/// The batch that writes `effect`: a put for each `(key, Some(value))`, a delete for each
/// `(key, None)`, in order.
pub fn batch_ops(effect: &[(Vec<u8>, Option<Vec<u8>>)]) -> Vec<BatchOp<'_>> {
    effect
        .iter()
        .map(|(k, v)| match v {
            Some(v) => BatchOp::Put { key: k, value: v },
            None => BatchOp::Delete { key: k },
        })
        .collect()
}

/// A commit id of the harness.
fn id_bytes(id: u8) -> Vec<u8> {
    format!("batch-{id}").into_bytes()
}

/// The model keeps "commit id `id` is committed" as this key (no store key starts with 0).
fn id_marker(id: u8) -> Vec<u8> {
    vec![0, b'i', id]
}

/// One step. Keys are `k` followed by the key byte; values are fresh bytes of `len`.
#[derive(Debug, Clone)]
pub enum Op {
    Put {
        key: u8,
        len: usize,
        durability: Durability,
    },
    Delete {
        key: u8,
        durability: Durability,
    },
    Batch {
        ops: Vec<(u8, Option<usize>)>,
        durability: Durability,
    },
    /// A batch under commit id `id` (below [`IDS`]): applied once, a no-op when retried.
    BatchId {
        ops: Vec<(u8, Option<usize>)>,
        id: u8,
        durability: Durability,
    },
    /// Deletes every key in one transaction.
    Clear {
        durability: Durability,
    },
    /// Begins a streamed value of `key` in `slot` (if the slot is free).
    Begin {
        slot: usize,
        key: u8,
    },
    Chunk {
        slot: usize,
        len: usize,
    },
    Commit {
        slot: usize,
        durability: Durability,
    },
    Abort {
        slot: usize,
    },
    Sync,
    /// A read that must see queued commits (the page's read path): settle, then get.
    Read {
        key: u8,
    },
    Checkpoint,
    Compact,
    CompactStep,
    /// The disk fills (`true`) or frees.
    Quota(bool),
    /// The disk fills after this many more writes: the failure lands inside an operation.
    FillAfter(u8),
    /// A power cut now, then a reopen of what it left.
    Crash {
        seed: u64,
    },
    /// A close, then a reopen of the files as they are.
    Reopen,
}

/// The options the harness opens stores with: small chunks, buffer and segments, frequent
/// automatic checkpoints and compaction, so short sequences cross every boundary.
pub fn options() -> Options {
    Options {
        chunk_size: 64,
        direct_write_threshold: 120,
        batch_bytes: 300,
        segment_size: 4096,
        checkpoint_bytes: 4096,
        compaction_ratio: 0.3,
        ..Options::default()
    }
}

/// What the store holds: its keys and values, and which of the harness's commit ids it
/// remembers as committed.
fn state(s: &Store<CrashVolume>) -> Model {
    let mut m: Model = s
        .keys(&KeyRange::default())
        .unwrap()
        .into_iter()
        .map(|k| (k.key.clone(), s.get(&k.key).unwrap().unwrap()))
        .collect();
    for id in 0..IDS {
        if matches!(s.id_status(&id_bytes(id)), Some(IdStatus::Committed { .. })) {
            m.insert(id_marker(id), Vec::new());
        }
    }
    m
}

/// A commit since the last flush the model knows of.
#[derive(Debug)]
enum Standing {
    /// Visible (a relaxed commit written, or a commit whose flush the model has not seen).
    Visible,
    /// Queued for the committer.
    Queued(Ticket),
}

/// A streamed transaction in progress: (txn, key, value so far).
type Streaming = (u64, Vec<u8>, Vec<u8>);

/// What a run of the harness went through, for the figures of a soak run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Crashes (each one a crash image recovered and checked).
    pub crashes: u64,
    /// Clean or failed closes followed by a reopen.
    pub reopens: u64,
    /// Group commits whose tickets the store reported failed.
    pub failed_commits: u64,
    /// Rollbacks after quota failures, checkpoints and compaction rounds (summed over every
    /// store the run opened).
    pub rollbacks: u64,
    pub checkpoints: u64,
    pub compactions: u64,
}

/// A store and its model.
pub struct Harness {
    store: Store<CrashVolume>,
    options: Options,
    quota: Rc<Cell<bool>>,
    /// State guaranteed to survive a crash.
    durable: Model,
    /// Commits since then, in log order.
    unflushed: Vec<(Effect, Standing)>,
    /// A group commit failed and no `sync()` has reported it yet.
    unreported: bool,
    slots: [Option<Streaming>; SLOTS],
    counter: u64,
    lsn_floor: u64,
    counts: Counts,
}

impl Harness {
    /// A store on an empty [`CrashVolume`] opened with `options`.
    pub fn new(options: Options) -> Self {
        let v = CrashVolume::default();
        let quota = v.quota.clone();
        Harness {
            store: Store::open(v, options.clone()).unwrap(),
            options,
            quota,
            durable: Model::new(),
            unflushed: Vec::new(),
            unreported: false,
            slots: Default::default(),
            counter: 0,
            lsn_floor: 0,
            counts: Counts::default(),
        }
    }

    /// What the run went through so far.
    pub fn counts(&self) -> Counts {
        let st = self.store.stats();
        Counts {
            rollbacks: self.counts.rollbacks + st.recoveries_in_place,
            checkpoints: self.counts.checkpoints + st.checkpoints,
            compactions: self.counts.compactions + st.compactions,
            ..self.counts
        }
    }

    fn visible(&self) -> Model {
        let mut m = self.durable.clone();
        for (effect, standing) in &self.unflushed {
            if matches!(standing, Standing::Visible) {
                apply(&mut m, effect);
            }
        }
        m
    }

    /// The durable state with every commit since applied, queued ones included.
    fn with_queued(&self) -> Model {
        let mut m = self.durable.clone();
        for (effect, _) in &self.unflushed {
            apply(&mut m, effect);
        }
        m
    }

    fn value(&mut self, len: usize) -> Vec<u8> {
        self.counter += 1;
        pattern(len, self.counter)
    }

    /// Learns what the committer did with queued commits. A queued commit that became
    /// committed was flushed, and with it everything before it; one that failed is gone.
    fn poll(&mut self) {
        let mut flushed_to = None;
        let mut i = 0;
        while i < self.unflushed.len() {
            if let Standing::Queued(t) = self.unflushed[i].1 {
                match self.store.outcome(t) {
                    Outcome::Committed => {
                        self.unflushed[i].1 = Standing::Visible;
                        flushed_to = Some(i);
                    }
                    Outcome::Failed(_) => {
                        self.counts.failed_commits += 1;
                        self.unreported = true;
                        self.unflushed.remove(i);
                        continue;
                    }
                    Outcome::Queued => {
                        assert!(flushed_to.is_none(), "a commit is queued behind one that was flushed");
                    }
                }
            }
            i += 1;
        }
        if let Some(to) = flushed_to {
            for (effect, _) in self.unflushed.drain(..=to) {
                apply(&mut self.durable, &effect);
            }
        }
    }

    /// After a flush known to have succeeded: nothing is queued, everything is durable.
    fn all_flushed(&mut self) {
        self.poll();
        assert!(
            self.unflushed.iter().all(|(_, s)| matches!(s, Standing::Visible)),
            "a commit is still queued after a successful flush"
        );
        for (effect, _) in std::mem::take(&mut self.unflushed) {
            apply(&mut self.durable, &effect);
        }
    }

    /// After a call that ends on a flush (`sync()`, `checkpoint()`: a strict commit may be
    /// followed by a compaction step's unflushed records), the next LSN is durable.
    fn lsn_durable(&mut self) {
        self.lsn_floor = self.store.stats().next_lsn;
    }

    /// Records a commit that returned `Ok` under `d`; `queue_was_empty` as it stood before.
    fn committed(&mut self, effect: Effect, d: Durability, queue_was_empty: bool) {
        match d {
            Durability::Group => self.unflushed.push((effect, Standing::Queued(self.store.last_ticket()))),
            Durability::Relaxed if queue_was_empty => self.unflushed.push((effect, Standing::Visible)),
            Durability::Strict | Durability::Relaxed => {
                self.unflushed.push((effect, Standing::Visible));
                self.all_flushed();
            }
        }
    }

    /// The state a crash (or an unclean close) may leave: the durable state plus some
    /// prefix of the commits since, failed ones excluded.
    fn assert_prefix(&self, got: &Model, what: &str) {
        let mut candidate = self.durable.clone();
        let mut matched = *got == candidate;
        for (effect, _) in &self.unflushed {
            apply(&mut candidate, effect);
            matched |= *got == candidate;
        }
        assert!(matched, "{what}: {got:?} is not the durable state {:?} plus a prefix of later commits", self.durable);
    }

    fn reopened(&mut self, store: Store<CrashVolume>) {
        self.counts = self.counts();
        self.quota = store.volume().quota.clone();
        self.store = store;
        self.durable = state(&self.store);
        self.unflushed.clear();
        self.unreported = false;
        self.slots = Default::default();
        self.lsn_floor = self.store.stats().next_lsn;
    }

    /// Runs `op` on the store and the model, and checks every invariant (panics on a broken
    /// one).
    pub fn run(&mut self, op: &Op) {
        let key = |k: u8| vec![b'k', k];
        let queue_was_empty = !self.store.has_pending();
        match *op {
            Op::Put { key: k, len, durability } => {
                let v = self.value(len);
                if self.store.put(&key(k), &v, durability).is_ok() {
                    self.committed(vec![(key(k), Some(v))], durability, queue_was_empty);
                }
            }
            Op::Delete { key: k, durability } => {
                // A strict or relaxed delete whose answer a queued commit decides asks the
                // committer to flush first, and answers from what then stands; a group delete
                // answers counting the queued commits.
                let touched = self
                    .unflushed
                    .iter()
                    .any(|(e, s)| matches!(s, Standing::Queued(_)) && e.iter().any(|(ek, _)| *ek == key(k)));
                let flushes_first = durability != Durability::Group && touched;
                let before = self.with_queued();
                if let Ok(existed) = self.store.delete(&key(k), durability) {
                    let expected = if flushes_first {
                        self.poll();
                        self.with_queued()
                    } else {
                        before
                    };
                    assert_eq!(existed, expected.contains_key(&key(k)), "delete's answer counts queued commits");
                    if existed {
                        self.committed(vec![(key(k), None)], durability, queue_was_empty || flushes_first);
                    }
                    if durability == Durability::Strict {
                        // Returned: the key is gone for good, whatever is still queued.
                        self.poll();
                        let pending = self
                            .unflushed
                            .iter()
                            .any(|(e, s)| matches!(s, Standing::Queued(_)) && e.iter().any(|(ek, _)| *ek == key(k)));
                        assert!(
                            !pending && !self.visible().contains_key(&key(k)),
                            "a strict delete of {k} returned, but a queued commit still decides it"
                        );
                    }
                }
            }
            Op::Batch { ref ops, durability } => {
                let values: Effect = ops.iter().map(|&(k, len)| (key(k), len.map(|l| self.value(l)))).collect();
                let batch = batch_ops(&values);
                if self.store.batch(&batch, durability).is_ok() {
                    self.committed(values, durability, queue_was_empty);
                }
            }
            Op::BatchId { ref ops, id, durability } => {
                let mut effect: Effect = ops.iter().map(|&(k, len)| (key(k), len.map(|l| self.value(l)))).collect();
                let batch = batch_ops(&effect);
                let known = self.with_queued().contains_key(&id_marker(id));
                match self.store.batch_with_id(&batch, &id_bytes(id), durability) {
                    Ok(IdCommit::Duplicate(_)) => assert!(known, "batch id {id} is new, yet reported as a duplicate"),
                    Ok(IdCommit::Applied(_)) => {
                        assert!(!known, "batch id {id} was committed before, yet applied again");
                        effect.push((id_marker(id), Some(Vec::new())));
                        self.committed(effect, durability, queue_was_empty);
                    }
                    Err(_) => {}
                }
            }
            Op::Clear { durability } => {
                // Queued commits are flushed first; what then stands is what is cleared.
                let flushes = !queue_was_empty;
                let cleared = self.store.clear(durability);
                if flushes {
                    self.poll();
                }
                if let Ok(n) = cleared {
                    let effect: Effect =
                        self.with_queued().into_keys().filter(|k| k.first() != Some(&0)).map(|k| (k, None)).collect();
                    assert_eq!(n, effect.len() as u64, "clear() counts every committed key");
                    if n > 0 {
                        self.committed(effect, durability, true);
                    }
                }
            }
            Op::Begin { slot, key: k } => {
                if self.slots[slot].is_none() {
                    if let Ok(t) = self.store.begin() {
                        if self.store.txn_put(t, &key(k), false).is_ok() {
                            self.slots[slot] = Some((t, key(k), Vec::new()));
                        } else {
                            let _ = self.store.abort(t);
                        }
                    }
                }
            }
            Op::Chunk { slot, len } => {
                let v = self.value(len);
                if let Some((t, _, so_far)) = &mut self.slots[slot] {
                    let t = *t;
                    if self.store.txn_chunk(t, &v).is_ok() {
                        so_far.extend_from_slice(&v);
                    } else {
                        // As the worker does: a transaction whose write failed is aborted.
                        let _ = self.store.abort(t);
                        self.slots[slot] = None;
                    }
                }
            }
            Op::Commit { slot, durability } => {
                if let Some((t, k, v)) = self.slots[slot].take() {
                    if self.store.commit(t, durability).is_ok() {
                        self.committed(vec![(k, Some(v))], durability, queue_was_empty);
                    } else {
                        let _ = self.store.abort(t);
                    }
                }
            }
            Op::Abort { slot } => {
                if let Some((t, _, _)) = self.slots[slot].take() {
                    let _ = self.store.abort(t);
                }
            }
            Op::Sync => match self.store.sync() {
                Ok(()) => {
                    self.poll();
                    assert!(!self.unreported, "sync() returned Ok although a group commit had failed");
                    self.all_flushed();
                    self.lsn_durable();
                }
                Err(_) => {
                    self.poll();
                    self.unreported = false;
                }
            },
            Op::Read { key: k } => {
                let _ = self.store.settle();
                self.poll();
                assert_eq!(self.store.get(&key(k)).unwrap(), self.visible().get(&key(k)).cloned());
            }
            Op::Checkpoint => {
                if self.store.checkpoint().is_ok() {
                    self.all_flushed();
                    self.lsn_durable();
                }
            }
            Op::Compact => {
                let _ = self.store.compact();
            }
            Op::CompactStep => {
                let _ = self.store.compact_step();
            }
            Op::Quota(full) => self.quota.set(full),
            Op::FillAfter(writes) => self.store.volume().fill_after(u64::from(writes)),
            Op::Crash { seed } => {
                self.poll();
                let image = self.store.volume().crash_image(seed);
                let store = Store::open(CrashVolume::from_image(image), self.options.clone()).unwrap();
                self.counts.crashes += 1;
                self.assert_prefix(&state(&store), &format!("after crash {seed}"));
                assert!(store.stats().next_lsn >= self.lsn_floor, "LSN went backwards after crash {seed}");
                self.reopened(store);
                return;
            }
            Op::Reopen => {
                self.counts.reopens += 1;
                let closed = self.store.close();
                self.poll();
                if closed.is_ok() {
                    self.all_flushed();
                }
                let image = self.store.volume().live_image();
                let store = Store::open(CrashVolume::from_image(image), self.options.clone()).unwrap();
                let got = state(&store);
                if closed.is_ok() {
                    assert_eq!(got, self.visible(), "a clean close and reopen keeps everything");
                    assert_eq!(store.recovery().bytes_truncated, 0, "a clean close leaves no torn tail");
                } else {
                    self.assert_prefix(&got, "after a failed close");
                }
                self.reopened(store);
                return;
            }
        }
        self.poll();
        assert_eq!(state(&self.store), self.visible(), "after {op:?}");
    }
}
