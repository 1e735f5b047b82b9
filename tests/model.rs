//! Model-based crash testing (sled's and redb's fuzzers): random sequences of puts (small and
//! multi-chunk), deletes, batches, aborts, interleaved streamed writes, syncs, crashes and clean
//! reopens, checked against a `BTreeMap` model after every step.
//!
//! The crash model ([`CrashStorage`]): bytes written since the last flush may each be lost,
//! kept or torn per 4 KiB page. The log is sequential, so whatever survives, recovery must
//! expose the durable state plus some prefix of the commits made since the last flush: every
//! strict commit present with its exact bytes, no value partial, the LSN never going back.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::collections::BTreeMap;

use common::pattern;
use proptest::prelude::*;
use walnut::testing::CrashStorage;
use walnut::{BatchOp, Durability, KeyRange, Options, Store};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;
/// The effects of one commit: `None` deletes.
type Effect = Vec<(Vec<u8>, Option<Vec<u8>>)>;

#[derive(Debug, Clone)]
enum Op {
    Put { key: u8, len: usize, durability: Durability },
    Delete { key: u8, durability: Durability },
    Batch { ops: Vec<(u8, Option<usize>)> },
    Begin { slot: usize, key: u8 },
    Chunk { slot: usize, len: usize },
    Commit { slot: usize, durability: Durability },
    Abort { slot: usize },
    Sync,
    Crash { seed: u64 },
    Reopen,
}

fn durability() -> impl Strategy<Value = Durability> {
    prop_oneof![Just(Durability::Strict), Just(Durability::Relaxed), Just(Durability::Group)]
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u8..6;
    let len = prop_oneof![0usize..40, 60usize..300];
    prop_oneof![
        6 => (key.clone(), len.clone(), durability()).prop_map(|(key, len, durability)| Op::Put { key, len, durability }),
        2 => (key.clone(), durability()).prop_map(|(key, durability)| Op::Delete { key, durability }),
        1 => proptest::collection::vec((key.clone(), proptest::option::of(0usize..150)), 1..4).prop_map(|ops| Op::Batch { ops }),
        2 => (0usize..2, key).prop_map(|(slot, key)| Op::Begin { slot, key }),
        4 => (0usize..2, 1usize..200).prop_map(|(slot, len)| Op::Chunk { slot, len }),
        2 => (0usize..2, durability()).prop_map(|(slot, durability)| Op::Commit { slot, durability }),
        1 => (0usize..2).prop_map(|slot| Op::Abort { slot }),
        2 => Just(Op::Sync),
        2 => any::<u64>().prop_map(|seed| Op::Crash { seed }),
        1 => Just(Op::Reopen),
    ]
}

fn options() -> Options {
    // Small chunks and buffer so that short sequences cross every boundary.
    Options { chunk_size: 64, direct_write_threshold: 120, batch_bytes: 300, ..Options::default() }
}

fn apply(model: &mut Model, effect: &Effect) {
    for (k, v) in effect {
        match v {
            Some(v) => model.insert(k.clone(), v.clone()),
            None => model.remove(k),
        };
    }
}

fn state(s: &Store<CrashStorage>) -> Model {
    s.keys(&KeyRange::default())
        .unwrap()
        .into_iter()
        .map(|k| (k.key.clone(), s.get(&k.key).unwrap().unwrap()))
        .collect()
}

/// A streamed transaction in progress: (txn, key, value so far).
type Streaming = (u64, Vec<u8>, Vec<u8>);

struct Harness {
    storage: CrashStorage,
    store: Store<CrashStorage>,
    /// State guaranteed to survive a crash.
    durable: Model,
    /// Commits since the last flush, in log order (relaxed ones already visible, group ones
    /// not yet).
    unflushed: Vec<(Effect, bool)>,
    /// Streamed transactions in progress.
    slots: [Option<Streaming>; 2],
    counter: u64,
    /// The next LSN once the last flush completed: it must never go back.
    lsn_floor: u64,
}

impl Harness {
    fn visible(&self) -> Model {
        let mut m = self.durable.clone();
        for (effect, visible) in &self.unflushed {
            if *visible {
                apply(&mut m, effect);
            }
        }
        m
    }

    fn flushed(&mut self) {
        for (effect, _) in std::mem::take(&mut self.unflushed) {
            apply(&mut self.durable, &effect);
        }
        self.lsn_floor = self.store.stats().next_lsn;
    }

    fn value(&mut self, len: usize) -> Vec<u8> {
        self.counter += 1;
        pattern(len, self.counter)
    }

    /// Records a commit under `d`: strict ones are flushed on return; a relaxed one flushes
    /// queued group commits with it (it may not overtake them).
    fn committed(&mut self, effect: Effect, d: Durability) {
        match d {
            Durability::Strict => {
                self.unflushed.push((effect, true));
                self.flushed();
            }
            Durability::Relaxed if self.unflushed.iter().any(|(_, v)| !v) => {
                self.unflushed.push((effect, true));
                self.flushed();
            }
            Durability::Relaxed => self.unflushed.push((effect, true)),
            Durability::Group => self.unflushed.push((effect, false)),
        }
    }

    fn run(&mut self, op: &Op) {
        let key = |k: u8| vec![b'k', k];
        match *op {
            Op::Put { key: k, len, durability } => {
                let v = self.value(len);
                self.store.put(&key(k), &v, durability).unwrap();
                self.committed(vec![(key(k), Some(v))], durability);
            }
            Op::Delete { key: k, durability } => {
                let mut expected = self.durable.clone();
                for (e, _) in &self.unflushed {
                    apply(&mut expected, e);
                }
                let existed = self.store.delete(&key(k), durability).unwrap();
                assert_eq!(existed, expected.contains_key(&key(k)), "delete's answer counts queued commits");
                if existed {
                    self.committed(vec![(key(k), None)], durability);
                }
            }
            Op::Batch { ref ops } => {
                let values: Vec<(Vec<u8>, Option<Vec<u8>>)> =
                    ops.iter().map(|&(k, len)| (key(k), len.map(|l| self.value(l)))).collect();
                let batch: Vec<BatchOp> = values
                    .iter()
                    .map(|(k, v)| match v {
                        Some(v) => BatchOp::Put { key: k, value: v },
                        None => BatchOp::Delete { key: k },
                    })
                    .collect();
                self.store.batch(&batch, Durability::Strict).unwrap();
                self.committed(values, Durability::Strict);
            }
            Op::Begin { slot, key: k } => {
                if self.slots[slot].is_none() {
                    let t = self.store.begin().unwrap();
                    self.store.txn_put(t, &key(k), false).unwrap();
                    self.slots[slot] = Some((t, key(k), Vec::new()));
                }
            }
            Op::Chunk { slot, len } => {
                let v = self.value(len);
                if let Some((t, _, so_far)) = &mut self.slots[slot] {
                    self.store.txn_chunk(*t, &v).unwrap();
                    so_far.extend_from_slice(&v);
                }
            }
            Op::Commit { slot, durability } => {
                if let Some((t, k, v)) = self.slots[slot].take() {
                    self.store.commit(t, durability).unwrap();
                    self.committed(vec![(k, Some(v))], durability);
                }
            }
            Op::Abort { slot } => {
                if let Some((t, _, _)) = self.slots[slot].take() {
                    self.store.abort(t).unwrap();
                }
            }
            Op::Sync => {
                self.store.sync().unwrap();
                self.flushed();
            }
            Op::Crash { seed } => {
                let survived = self.storage.crashed(seed);
                self.store = Store::open(survived.clone(), options()).unwrap();
                self.storage = survived;
                let got = state(&self.store);
                // Any prefix of the unflushed commits, and nothing else.
                let mut candidate = self.durable.clone();
                let mut matched = got == candidate;
                for (effect, _) in &self.unflushed {
                    apply(&mut candidate, effect);
                    matched |= got == candidate;
                }
                assert!(matched, "after crash {seed}: {got:?} is not the durable state plus a prefix of later commits");
                assert!(self.store.stats().next_lsn >= self.lsn_floor, "LSN went backwards after crash {seed}");
                self.durable = got;
                self.unflushed.clear();
                self.slots = [None, None];
                self.lsn_floor = self.store.stats().next_lsn;
            }
            Op::Reopen => {
                self.store.close().unwrap();
                self.flushed();
                self.store = Store::open(self.storage.clone(), options()).unwrap();
                self.slots = [None, None];
                assert_eq!(state(&self.store), self.durable, "a clean reopen keeps everything");
                assert_eq!(self.store.recovery().bytes_truncated, 0, "a clean close leaves no torn tail");
            }
        }
        assert_eq!(state(&self.store), self.visible(), "after {op:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_the_model_through_crashes(ops in proptest::collection::vec(op(), 1..80)) {
        let storage = CrashStorage::new();
        let store = Store::open(storage.clone(), options()).unwrap();
        let mut h = Harness {
            storage,
            store,
            durable: Model::new(),
            unflushed: Vec::new(),
            slots: [None, None],
            counter: 0,
            lsn_floor: 0,
        };
        for op in &ops {
            h.run(op);
        }
        // The store still takes writes at the end.
        h.run(&Op::Put { key: 9, len: 100, durability: Durability::Strict });
    }
}

/// The model at scale: a store on a volume of files with small segments, automatic
/// checkpoints and automatic compaction, four streamed transactions interleaved, reads that ask
/// the committer to flush between group commits (the page's read path), explicit checkpoints
/// and compaction, a disk that fills up and frees at random, crashes at any point and clean
/// reopens. After every step: the visible state is the model's; a commit acknowledged (a strict
/// or relaxed write that returned, a group commit once `sync()` returned `Ok` or its ticket
/// says committed) is present with its exact bytes in every crash state; a commit reported
/// failed is absent from all of them; `sync()` never returns `Ok` while a group commit it
/// should have reported has failed; nothing partial is ever visible.
mod on_a_volume {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::common::{pattern, CrashVolume};
    use super::{apply, Effect, Model};
    use proptest::prelude::*;
    use walnut::{BatchOp, Durability, KeyRange, Options, Outcome, Store, Ticket};

    #[derive(Debug, Clone)]
    enum Op {
        Put { key: u8, len: usize, durability: Durability },
        Delete { key: u8, durability: Durability },
        Batch { ops: Vec<(u8, Option<usize>)>, durability: Durability },
        Begin { slot: usize, key: u8 },
        Chunk { slot: usize, len: usize },
        Commit { slot: usize, durability: Durability },
        Abort { slot: usize },
        Sync,
        Read { key: u8 },
        Checkpoint,
        Compact,
        CompactStep,
        Quota(bool),
        Crash { seed: u64 },
        Reopen,
    }

    const SLOTS: usize = 4;

    fn durability() -> impl Strategy<Value = Durability> {
        prop_oneof![1 => Just(Durability::Strict), 1 => Just(Durability::Relaxed), 2 => Just(Durability::Group)]
    }

    fn op() -> impl Strategy<Value = Op> {
        let key = 0u8..5;
        let len = prop_oneof![0usize..40, 60usize..300];
        prop_oneof![
            8 => (key.clone(), len, durability()).prop_map(|(key, len, durability)| Op::Put { key, len, durability }),
            3 => (key.clone(), durability()).prop_map(|(key, durability)| Op::Delete { key, durability }),
            1 => (proptest::collection::vec((key.clone(), proptest::option::of(0usize..150)), 1..4), durability())
                .prop_map(|(ops, durability)| Op::Batch { ops, durability }),
            3 => (0..SLOTS, key.clone()).prop_map(|(slot, key)| Op::Begin { slot, key }),
            4 => (0..SLOTS, 1usize..200).prop_map(|(slot, len)| Op::Chunk { slot, len }),
            3 => (0..SLOTS, durability()).prop_map(|(slot, durability)| Op::Commit { slot, durability }),
            1 => (0..SLOTS).prop_map(|slot| Op::Abort { slot }),
            3 => Just(Op::Sync),
            2 => key.prop_map(|key| Op::Read { key }),
            3 => Just(Op::Checkpoint),
            1 => Just(Op::Compact),
            1 => Just(Op::CompactStep),
            2 => any::<bool>().prop_map(Op::Quota),
            3 => any::<u64>().prop_map(|seed| Op::Crash { seed }),
            1 => Just(Op::Reopen),
        ]
    }

    fn options() -> Options {
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

    fn state(s: &Store<CrashVolume>) -> Model {
        s.keys(&KeyRange::default())
            .unwrap()
            .into_iter()
            .map(|k| (k.key.clone(), s.get(&k.key).unwrap().unwrap()))
            .collect()
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

    struct Harness {
        store: Store<CrashVolume>,
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
    }

    impl Harness {
        fn new() -> Self {
            let v = CrashVolume::default();
            let quota = v.quota.clone();
            Harness {
                store: Store::open(v, options()).unwrap(),
                quota,
                durable: Model::new(),
                unflushed: Vec::new(),
                unreported: false,
                slots: Default::default(),
                counter: 0,
                lsn_floor: 0,
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
            assert!(
                matched,
                "{what}: {got:?} is not the durable state {:?} plus a prefix of later commits",
                self.durable
            );
        }

        fn reopened(&mut self, store: Store<CrashVolume>) {
            self.quota = Rc::new(Cell::new(false));
            self.store = store;
            self.durable = state(&self.store);
            self.unflushed.clear();
            self.unreported = false;
            self.slots = Default::default();
            self.lsn_floor = self.store.stats().next_lsn;
        }

        fn run(&mut self, op: &Op) {
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
                    let mut expected = self.durable.clone();
                    for (e, _) in &self.unflushed {
                        apply(&mut expected, e);
                    }
                    if let Ok(existed) = self.store.delete(&key(k), durability) {
                        assert_eq!(existed, expected.contains_key(&key(k)), "delete's answer counts queued commits");
                        if existed {
                            self.committed(vec![(key(k), None)], durability, queue_was_empty);
                        }
                    }
                }
                Op::Batch { ref ops, durability } => {
                    let values: Effect = ops.iter().map(|&(k, len)| (key(k), len.map(|l| self.value(l)))).collect();
                    let batch: Vec<BatchOp> = values
                        .iter()
                        .map(|(k, v)| match v {
                            Some(v) => BatchOp::Put { key: k, value: v },
                            None => BatchOp::Delete { key: k },
                        })
                        .collect();
                    if self.store.batch(&batch, durability).is_ok() {
                        self.committed(values, durability, queue_was_empty);
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
                Op::Crash { seed } => {
                    self.poll();
                    let image = self.store.volume().crash_image(seed);
                    let store = Store::open(CrashVolume::from_image(image), options()).unwrap();
                    self.assert_prefix(&state(&store), &format!("after crash {seed}"));
                    assert!(store.stats().next_lsn >= self.lsn_floor, "LSN went backwards after crash {seed}");
                    self.reopened(store);
                    return;
                }
                Op::Reopen => {
                    let closed = self.store.close();
                    self.poll();
                    if closed.is_ok() {
                        self.all_flushed();
                    }
                    let image = self.store.volume().live_image();
                    let store = Store::open(CrashVolume::from_image(image), options()).unwrap();
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

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, max_shrink_iters: 4000, ..ProptestConfig::default() })]

        #[test]
        fn a_store_on_a_volume_matches_the_model_through_quota_faults_and_crashes(ops in proptest::collection::vec(op(), 1..120)) {
            let mut h = Harness::new();
            for op in &ops {
                h.run(op);
            }
            // The store still takes writes at the end, once the disk has room.
            h.run(&Op::Quota(false));
            h.run(&Op::Put { key: 9, len: 100, durability: Durability::Strict });
        }
    }
}
