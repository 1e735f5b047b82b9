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
//!
//! Tables (HoraeDB's half): the model keeps each table `tN` as marker keys beside the default
//! table's (`k...`): `[1, N, key]` its keys, `[2, N, seq]` its queue entries, `[3, N]` its last,
//! flushed and deleted-up-to sequence numbers, `[4, N, seq]` its change feed. So every check
//! above covers them too (after a crash, numbers never go back, acknowledged entries above the
//! deleted mark are there, nothing at or below it reappears, the feed is the model's), and each
//! write's number is checked: the next of its table, gapless.
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
use crate::error::Error;
use crate::index::KeyRange;
use crate::store::{BatchOp, Durability, IdCommit, IdStatus, Options, Outcome, Store, Ticket};
use crate::txn::TxCommit;

/// Tables the harness uses: `t0`..`t2`.
pub const TABLES: u8 = 3;

fn tname(n: u8) -> String {
    format!("t{n}")
}

fn tkey(n: u8, key: u8) -> Vec<u8> {
    vec![1, n, b'k', key]
}

fn qkey(n: u8, seq: u64) -> Vec<u8> {
    let mut k = vec![2, n];
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn mkey(n: u8) -> Vec<u8> {
    vec![3, n]
}

/// A change feed entry of table `n`: `[4, n, seq]` -> `delete | size | key`.
fn fkey(n: u8, seq: u64) -> Vec<u8> {
    let mut k = vec![4, n];
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn feed_value(delete: bool, size: u64, key: &[u8]) -> Vec<u8> {
    let mut v = vec![u8::from(delete)];
    v.extend_from_slice(&size.to_be_bytes());
    v.extend_from_slice(key);
    v
}

/// A table's (last, flushed, deleted-up-to) in model `m`, if it exists there.
fn meta_of(m: &Model, n: u8) -> Option<(u64, u64, u64)> {
    let v = m.get(&mkey(n))?;
    let at = |i: usize| u64::from_le_bytes(v[i * 8..i * 8 + 8].try_into().unwrap());
    Some((at(0), at(1), at(2)))
}

fn meta_bytes(last: u64, flushed: u64, deleted: u64) -> Vec<u8> {
    [last, flushed, deleted].iter().flat_map(|x| x.to_le_bytes()).collect()
}

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

/// Interactive transactions the harness keeps open at once, at most.
pub const TX_SLOTS: usize = 2;

/// An interactive transaction of the harness, as the model sees it.
#[derive(Debug)]
struct ModelTx {
    txn: crate::store::TxnId,
    /// Its writes, per layer (the outermost first).
    layers: Vec<Effect>,
    /// Committed values it read (a key's own write excluded), in order, each with the key's
    /// count of writes ([`Harness::writes`]) when it was read.
    reads: Vec<(Vec<u8>, Option<Vec<u8>>, u64)>,
    /// `Stats::values_moved` when it began: a move since may make it conflict spuriously.
    moved: u64,
}

impl ModelTx {
    /// Its own last write to `k`, if it made one: `Some(None)` a delete.
    fn own(&self, k: &[u8]) -> Option<Option<Vec<u8>>> {
        self.layers.iter().flatten().rev().find(|(ek, _)| ek == k).map(|(_, v)| v.clone())
    }
}

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
    /// Creates table `t{table}` (below [`TABLES`]); a no-op if it exists.
    CreateTable {
        table: u8,
    },
    DropTable {
        table: u8,
    },
    PutIn {
        table: u8,
        key: u8,
        len: usize,
        durability: Durability,
    },
    DeleteIn {
        table: u8,
        key: u8,
        durability: Durability,
    },
    /// Appends a value of `len` bytes to the table's queue.
    Append {
        table: u8,
        len: usize,
        durability: Durability,
    },
    /// A batch across tables: `(table, Some(key), Some(len))` puts, `(table, Some(key), None)`
    /// deletes, `(table, None, len)` appends; table [`TABLES`] is the default table.
    BatchIn {
        ops: Vec<(u8, Option<u8>, Option<usize>)>,
        durability: Durability,
    },
    /// Marks the table flushed up to its last sequence number minus `back`.
    MarkFlushed {
        table: u8,
        back: u8,
        durability: Durability,
    },
    /// Deletes the table's queue up to its last sequence number minus `back`.
    DeleteUpTo {
        table: u8,
        back: u8,
        durability: Durability,
    },
    /// Reads the table's queue from sequence number `from`.
    ReadQueue {
        table: u8,
        from: u8,
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
    /// Begins an interactive transaction in `slot` (below [`TX_SLOTS`]) if the slot is free.
    TxBegin {
        slot: usize,
    },
    /// Reads `key` in the slot's transaction: its own write, else the committed value.
    TxGet {
        slot: usize,
        key: u8,
    },
    /// Puts (`len` Some) or deletes `key` in the slot's transaction.
    TxWrite {
        slot: usize,
        key: u8,
        len: Option<usize>,
    },
    /// Opens a nested transaction in the slot's transaction.
    TxNest {
        slot: usize,
    },
    /// Ends the innermost nested transaction: commits it into its parent (`keep`) or aborts it.
    TxEnd {
        slot: usize,
        keep: bool,
    },
    /// Commits the slot's transaction (under commit id `id` below [`IDS`], if given).
    TxCommit {
        slot: usize,
        id: Option<u8>,
        durability: Durability,
    },
    TxAbort {
        slot: usize,
    },
    /// Puts `key` if its version is the one just read (`stale`: one that is not).
    PutIf {
        key: u8,
        len: usize,
        stale: bool,
        durability: Durability,
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
    /// The store's export imported into a new, empty store (`Import`), with a power cut after
    /// `cut` of the import's operations if given (its recovery is the empty store or the whole
    /// import): what it holds is what the model says is visible.
    ExportImport {
        cut: Option<u16>,
        seed: u64,
    },
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
    // The ids it remembers, each marked with its place among them, oldest first (the order
    // its retention forgets them in).
    let ours: Vec<Vec<u8>> = (0..IDS).map(id_bytes).collect();
    let remembered = s.index.ids().iter().filter(|(id, _)| ours.iter().any(|o| o == id)).map(|(id, _)| id.to_vec());
    for (rank, id) in remembered.enumerate() {
        if let Some(n) = ours.iter().position(|o| *o == id) {
            m.insert(id_marker(n as u8), vec![rank as u8]);
        }
    }
    for t in s.tables().into_iter().filter(|t| t.id != 0) {
        let n: u8 = t.name[1..].parse().unwrap();
        m.insert(mkey(n), meta_bytes(t.last_seq, t.flushed_seq, t.deleted_upto));
        for k in s.keys_in(t.id, &KeyRange::default()).unwrap() {
            let mut key = vec![1, n];
            key.extend_from_slice(&k.key);
            m.insert(key, s.get_in(t.id, &k.key).unwrap().unwrap());
        }
        for (seq, e) in s.read(t.id, 0, None).unwrap() {
            m.insert(qkey(n, seq), s.value_of(&e).unwrap());
        }
        for c in s.changes(t.id, 0, None).unwrap() {
            m.insert(fkey(n, c.seq), feed_value(c.delete, c.size, &c.key));
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
    /// Interactive transactions committed, rejected for a conflict (at a read or the commit),
    /// and answered as duplicates of a committed id.
    pub tx_commits: u64,
    pub tx_conflicts: u64,
    pub tx_duplicates: u64,
    /// Exports imported into a new store (whole, or cut by a power cut and recovered).
    pub imports: u64,
    pub imports_cut: u64,
    /// Batches retried under a committed id whose answer (the numbers the first commit took,
    /// `Store::commit_seqs`) was checked.
    pub retries_checked: u64,
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
    txs: [Option<ModelTx>; TX_SLOTS],
    counter: u64,
    /// Commits that wrote each key (a delete of an absent key not counted), failed ones
    /// included: the store checks a transaction's reads by version (the LSN of the key's last
    /// write), so a key rewritten with equal bytes (two empty values) has changed for it.
    writes: BTreeMap<Vec<u8>, u64>,
    lsn_floor: u64,
    /// The sequence numbers each commit under a harness id took when it was applied, every
    /// one of them: a crash may keep an older commit under the id and lose a newer one (the
    /// store had forgotten the id in between), so a retry answers with one of these.
    id_seqs: BTreeMap<u8, Vec<Vec<crate::index::SeqRange>>>,
    /// Id markers given so far (see [`Harness::id_stamp`]).
    id_stamps: u64,
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
            txs: Default::default(),
            counter: 0,
            writes: BTreeMap::new(),
            lsn_floor: 0,
            id_seqs: BTreeMap::new(),
            id_stamps: 0,
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
        self.ids_remembered(m)
    }

    /// Records the numbers the commit just made under harness id `id` took.
    fn note_seqs(&mut self, id: u8) {
        let mut taken = self.store.last_seqs().to_vec();
        taken.sort_unstable();
        self.id_seqs.entry(id).or_default().push(taken);
    }

    /// A new commit's id marker: a stamp above every earlier one (and above the places a
    /// reopened store's markers give, below 256), so that markers order as commits did.
    fn id_stamp(&mut self) -> Vec<u8> {
        self.id_stamps += 1;
        (256 + self.id_stamps).to_be_bytes().to_vec()
    }

    /// `m` with its id markers as the store keeps them: the newest
    /// [`Options::id_retention`] in commit order, each marked with its place among them (the
    /// store forgets the oldest id as it applies a commit under a new one).
    fn ids_remembered(&self, mut m: Model) -> Model {
        let stamp = |v: &[u8]| v.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b));
        let mut ids: Vec<(u64, Vec<u8>)> =
            m.iter().filter(|(k, _)| k.starts_with(&[0, b'i'])).map(|(k, v)| (stamp(v), k.clone())).collect();
        ids.sort();
        let forget = ids.len().saturating_sub(self.options.id_retention);
        for (i, (_, k)) in ids.into_iter().enumerate() {
            if i < forget {
                m.remove(&k);
            } else {
                m.insert(k, vec![(i - forget) as u8]);
            }
        }
        m
    }

    /// Whether the store refuses commit id `id` now: remembered among the applied commits, or
    /// carried by a queued one.
    fn id_known(&self, id: u8) -> bool {
        let marker = id_marker(id);
        self.visible().contains_key(&marker)
            || self
                .unflushed
                .iter()
                .any(|(e, s)| matches!(s, Standing::Queued(_)) && e.iter().any(|(k, _)| *k == marker))
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
        let before = self.with_queued();
        for (k, v) in &effect {
            if v.is_some() || before.contains_key(k) {
                *self.writes.entry(k.clone()).or_default() += 1;
            }
        }
        match d {
            Durability::Group => self.unflushed.push((effect, Standing::Queued(self.store.last_ticket()))),
            Durability::Relaxed if queue_was_empty => self.unflushed.push((effect, Standing::Visible)),
            Durability::Strict | Durability::Relaxed => {
                self.unflushed.push((effect, Standing::Visible));
                self.all_flushed();
            }
        }
    }

    /// Whether a key `tx` read was written since (perhaps with equal bytes): its reads may
    /// then conflict, though only a changed value obliges them to.
    fn rewritten(&self, tx: &ModelTx) -> bool {
        tx.reads.iter().any(|(k, _, at)| self.writes.get(k).copied().unwrap_or(0) != *at)
    }

    /// The state a crash (or an unclean close) may leave: the durable state plus some
    /// prefix of the commits since, failed ones excluded.
    fn assert_prefix(&self, got: &Model, what: &str) {
        let mut candidate = self.durable.clone();
        let mut matched = *got == self.ids_remembered(candidate.clone());
        for (effect, _) in &self.unflushed {
            apply(&mut candidate, effect);
            matched |= *got == self.ids_remembered(candidate.clone());
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
        self.txs = Default::default();
        self.lsn_floor = self.store.stats().next_lsn;
    }

    /// Asks the committer to flush what is queued (as the table marks do first); whether
    /// nothing is queued any more.
    fn settled(&mut self) -> bool {
        // Queued commits become visible (a relaxed one written alone is visible already, and
        // no more durable than before).
        let ok = self.store.settle().is_ok();
        self.poll();
        ok && self.unflushed.iter().all(|(_, s)| matches!(s, Standing::Visible))
    }

    /// A write to table `n` that took numbers up to `last` (`count` of them): they must follow
    /// the last number of the table in the model (queued commits included), gaplessly. Returns
    /// `effect` with the table's last number moved.
    ///
    /// A group commit can fail within its own call (its maintenance step's flush met a full
    /// disk, failing it with the commits queued before it): its numbers were then never
    /// taken, the rollback hands them out again, and there is nothing to check.
    fn numbered(&mut self, n: u8, last: u64, count: u64, mut effect: Effect) -> Effect {
        self.poll();
        if matches!(self.store.outcome(self.store.last_ticket()), Outcome::Failed(_)) {
            return effect;
        }
        let m = self.with_queued();
        let (before, flushed, deleted) = meta_of(&m, n).unwrap_or_else(|| {
            // Applied within this effect (a table created in the same batch is not possible).
            panic!("t{n} took numbers but the model has no such table")
        });
        assert_eq!(last, before + count, "t{n}: numbers {}..={last} do not follow {before}", last + 1 - count);
        effect.push((mkey(n), Some(meta_bytes(last, flushed, deleted))));
        effect
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
                let known = self.id_known(id);
                match self.store.batch_with_id(&batch, &id_bytes(id), durability) {
                    Ok(IdCommit::Duplicate(_)) => {
                        assert!(known, "batch id {id} is new, yet reported as a duplicate");
                        // A retry answers with the numbers the first commit took, whatever
                        // compaction, checkpoints and reopens did since.
                        if let (Some(IdStatus::Committed { lsn }), Some(taken)) =
                            (self.store.id_status(&id_bytes(id)), self.id_seqs.get(&id))
                        {
                            let got = self.store.commit_seqs(lsn);
                            assert!(
                                taken.contains(&got),
                                "the numbers batch id {id} took: {got:?}, not one of {taken:?}"
                            );
                            self.counts.retries_checked += 1;
                        }
                    }
                    Ok(IdCommit::Applied(_)) => {
                        assert!(!known, "batch id {id} was committed before, yet applied again");
                        self.note_seqs(id);
                        effect.push((id_marker(id), Some(self.id_stamp())));
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
                    let effect: Effect = self
                        .with_queued()
                        .into_keys()
                        .filter(|k| k.first() == Some(&b'k'))
                        .map(|k| (k, None))
                        .collect();
                    assert_eq!(n, effect.len() as u64, "clear() counts every committed key");
                    if n > 0 {
                        self.committed(effect, durability, true);
                    }
                }
            }
            Op::CreateTable { table: n } => {
                let exists = self.store.table(&tname(n)).is_some();
                if self.store.create_table(&tname(n)).is_ok() && !exists {
                    self.committed(vec![(mkey(n), Some(meta_bytes(0, 0, 0)))], Durability::Strict, queue_was_empty);
                }
            }
            Op::DropTable { table: n } => {
                if self.settled() {
                    let existed = self.store.table(&tname(n)).is_some();
                    if let Ok(dropped) = self.store.drop_table(&tname(n)) {
                        assert_eq!(dropped, existed, "drop_table's answer");
                        let gone: Effect = self
                            .with_queued()
                            .into_keys()
                            .filter(|k| matches!(k.as_slice(), [1..=4, t, ..] if *t == n))
                            .map(|k| (k, None))
                            .collect();
                        if dropped {
                            self.committed(gone, Durability::Strict, true);
                        }
                    }
                }
            }
            Op::PutIn { table: n, key: k, len, durability } => {
                let v = self.value(len);
                if let Some(id) = self.store.table(&tname(n)).map(|t| t.id) {
                    if let Ok(seq) = self.store.put_in(id, &[b'k', k], false, &v, durability) {
                        let change = (fkey(n, seq), Some(feed_value(false, v.len() as u64, &[b'k', k])));
                        let effect = self.numbered(n, seq, 1, vec![(tkey(n, k), Some(v)), change]);
                        self.committed(effect, durability, queue_was_empty);
                    }
                }
            }
            Op::DeleteIn { table: n, key: k, durability } => {
                if let Some(id) = self.store.table(&tname(n)).map(|t| t.id) {
                    let flushes_first = durability != Durability::Group && !queue_was_empty;
                    if let Ok(existed) = self.store.delete_in(id, &[b'k', k], durability) {
                        if flushes_first {
                            self.poll();
                        }
                        if existed {
                            let seq = self.store.last_seqs().first().map_or(0, |s| s.2);
                            let change = (fkey(n, seq), Some(feed_value(true, 0, &[b'k', k])));
                            let effect = self.numbered(n, seq, 1, vec![(tkey(n, k), None), change]);
                            self.committed(effect, durability, queue_was_empty || flushes_first);
                        }
                    }
                }
            }
            Op::Append { table: n, len, durability } => {
                let v = self.value(len);
                if let Some(id) = self.store.table(&tname(n)).map(|t| t.id) {
                    if let Ok(seq) = self.store.append(id, &v, durability) {
                        let effect = self.numbered(n, seq, 1, vec![(qkey(n, seq), Some(v))]);
                        self.committed(effect, durability, queue_was_empty);
                    }
                }
            }
            Op::BatchIn { ref ops, durability } => {
                // The default table takes no appends here (its queue is not modelled).
                let ids: Option<Vec<u32>> = ops
                    .iter()
                    .map(|&(n, key, _)| match n >= TABLES {
                        true => key.map(|_| 0),
                        false => self.store.table(&tname(n)).map(|t| t.id),
                    })
                    .collect();
                if let Some(ids) = ids {
                    let values: Vec<Option<Vec<u8>>> =
                        ops.iter().map(|&(_, _, len)| len.map(|l| self.value(l))).collect();
                    let keys: Vec<Option<[u8; 2]>> = ops.iter().map(|&(_, k, _)| k.map(|k| [b'k', k])).collect();
                    let batch: Vec<BatchOp<'_>> = ids
                        .iter()
                        .zip(&keys)
                        .zip(&values)
                        .map(|((&table, key), value)| match (key, value) {
                            (Some(key), Some(value)) => BatchOp::PutIn { table, key, value },
                            (Some(key), None) => BatchOp::DeleteIn { table, key },
                            (None, value) => BatchOp::Append { table, value: value.as_deref().unwrap_or_default() },
                        })
                        .collect();
                    if self.store.batch(&batch, durability).is_ok() {
                        let seqs = self.store.last_seqs().to_vec();
                        let mut effect = Effect::new();
                        let mut taken: Vec<(u8, u64)> = Vec::new();
                        for (i, &(n, key, _)) in ops.iter().enumerate() {
                            if n >= TABLES {
                                effect.push((vec![b'k', key.unwrap_or(0)], values[i].clone()));
                                continue;
                            }
                            let first = seqs.iter().find(|s| s.0 == ids[i]).map(|s| s.1).unwrap();
                            let k = taken.iter().filter(|(t, _)| *t == n).count() as u64;
                            taken.push((n, first + k));
                            let seq = first + k;
                            match key {
                                Some(key) => {
                                    effect.push((tkey(n, key), values[i].clone()));
                                    let size = values[i].as_ref().map_or(0, |v| v.len() as u64);
                                    let change = feed_value(values[i].is_none(), size, &[b'k', key]);
                                    effect.push((fkey(n, seq), Some(change)));
                                }
                                None => effect.push((qkey(n, seq), Some(values[i].clone().unwrap_or_default()))),
                            }
                        }
                        for n in 0..TABLES {
                            let mine: Vec<u64> = taken.iter().filter(|(t, _)| *t == n).map(|t| t.1).collect();
                            if let (Some(&first), Some(&last)) = (mine.first(), mine.last()) {
                                effect = self.numbered(n, last, last - first + 1, effect);
                            }
                        }
                        self.committed(effect, durability, queue_was_empty);
                    }
                }
            }
            Op::MarkFlushed { table: n, back, durability } => {
                if self.settled() {
                    if let (Some(id), Some((last, flushed, deleted))) =
                        (self.store.table(&tname(n)).map(|t| t.id), meta_of(&self.visible(), n))
                    {
                        let seq = last.saturating_sub(u64::from(back));
                        match self.store.mark_flushed(id, seq, durability) {
                            Ok(()) => {
                                assert!(seq >= flushed, "the flushed mark went back");
                                let effect = vec![(mkey(n), Some(meta_bytes(last, seq, deleted)))];
                                self.committed(effect, durability, true);
                            }
                            Err(crate::Error::InvalidArgument { .. }) => {
                                assert!(
                                    seq < flushed,
                                    "mark_flushed({seq}) refused with flushed {flushed}, last {last}"
                                )
                            }
                            Err(_) => {}
                        }
                    }
                }
            }
            Op::DeleteUpTo { table: n, back, durability } => {
                if self.settled() {
                    let model = self.visible();
                    if let (Some(id), Some((last, flushed, deleted))) =
                        (self.store.table(&tname(n)).map(|t| t.id), meta_of(&model, n))
                    {
                        let seq = last.saturating_sub(u64::from(back));
                        if self.store.delete_up_to(id, seq, durability).is_ok() && seq > deleted {
                            let mut effect: Effect = model
                                .keys()
                                .filter(|k| {
                                    matches!(k.as_slice(), [2 | 4, t, ..] if *t == n)
                                        && u64::from_be_bytes(k[2..10].try_into().unwrap()) <= seq
                                })
                                .map(|k| (k.clone(), None))
                                .collect();
                            effect.push((mkey(n), Some(meta_bytes(last, flushed, seq))));
                            self.committed(effect, durability, true);
                        }
                    }
                }
            }
            Op::ReadQueue { table: n, from } => {
                let _ = self.store.settle();
                self.poll();
                if let Some(id) = self.store.table(&tname(n)).map(|t| t.id) {
                    let got: Vec<(u64, Vec<u8>)> = self
                        .store
                        .read(id, u64::from(from), None)
                        .unwrap()
                        .into_iter()
                        .map(|(seq, e)| (seq, self.store.value_of(&e).unwrap()))
                        .collect();
                    let want: Vec<(u64, Vec<u8>)> = self
                        .visible()
                        .into_iter()
                        .filter(|(k, _)| matches!(k.as_slice(), [2, t, ..] if *t == n))
                        .map(|(k, v)| (u64::from_be_bytes(k[2..10].try_into().unwrap()), v))
                        .filter(|(seq, _)| *seq >= u64::from(from))
                        .collect();
                    assert_eq!(got, want, "read(t{n}, from {from})");
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
            Op::TxBegin { slot } => {
                if self.txs[slot].is_none() {
                    if let Ok(txn) = self.store.tx_begin() {
                        self.poll(); // beginning settles queued commits
                        let moved = self.store.stats().values_moved;
                        self.txs[slot] = Some(ModelTx { txn, layers: vec![Vec::new()], reads: Vec::new(), moved });
                    }
                }
            }
            Op::TxGet { slot, key: k } => {
                let Some(tx) = self.txs[slot].take() else { return self.after(op) };
                let got = self.store.tx_get(tx.txn, 0, &key(k));
                self.poll();
                let now = self.visible();
                // What it read before must still stand, else the read fails (a move may too).
                let stale = tx.reads.iter().any(|(rk, rv, _)| now.get(rk) != rv.as_ref());
                let moved = self.store.stats().values_moved != tx.moved;
                match got {
                    Ok(v) => {
                        assert!(!stale, "a transaction read on after a value it read changed");
                        let mut tx = tx;
                        match tx.own(&key(k)) {
                            Some(own) => assert_eq!(v, own, "a transaction reads its own write of {k}"),
                            None => {
                                assert_eq!(v, now.get(&key(k)).cloned(), "a transaction reads the committed {k}");
                                let at = self.writes.get(&key(k)).copied().unwrap_or(0);
                                tx.reads.push((key(k), v, at));
                            }
                        }
                        self.txs[slot] = Some(tx);
                    }
                    Err(Error::Conflict { .. }) => {
                        self.counts.tx_conflicts += 1;
                        let rewritten = self.rewritten(&tx);
                        assert!(stale || moved || rewritten, "a read conflicted although nothing it read changed");
                        let _ = self.store.tx_abort(tx.txn);
                    }
                    Err(_) => {
                        let _ = self.store.tx_abort(tx.txn);
                    }
                }
            }
            Op::TxWrite { slot, key: k, len } => {
                let v = len.map(|l| self.value(l));
                let Some(mut tx) = self.txs[slot].take() else { return self.after(op) };
                let r = match &v {
                    Some(v) => self.store.tx_put(tx.txn, 0, &key(k), false, v),
                    None => self.store.tx_delete(tx.txn, 0, &key(k)),
                };
                if r.is_ok() {
                    if let Some(layer) = tx.layers.last_mut() {
                        layer.push((key(k), v));
                    }
                    self.txs[slot] = Some(tx);
                } else {
                    let _ = self.store.tx_abort(tx.txn);
                }
            }
            Op::TxNest { slot } => {
                let Some(mut tx) = self.txs[slot].take() else { return self.after(op) };
                match self.store.tx_nest(tx.txn) {
                    Ok(depth) => {
                        tx.layers.push(Vec::new());
                        assert_eq!(depth, tx.layers.len());
                        self.txs[slot] = Some(tx);
                    }
                    Err(Error::InvalidArgument { .. }) => self.txs[slot] = Some(tx),
                    Err(_) => {
                        let _ = self.store.tx_abort(tx.txn);
                    }
                }
            }
            Op::TxEnd { slot, keep } => {
                let Some(mut tx) = self.txs[slot].take() else { return self.after(op) };
                if tx.layers.len() > 1 {
                    let r = if keep { self.store.tx_release(tx.txn) } else { self.store.tx_rollback(tx.txn) };
                    match r {
                        Ok(depth) => {
                            let inner = tx.layers.pop().unwrap_or_default();
                            if keep {
                                if let Some(parent) = tx.layers.last_mut() {
                                    parent.extend(inner);
                                }
                            }
                            assert_eq!(depth, tx.layers.len());
                            self.txs[slot] = Some(tx);
                        }
                        Err(_) => {
                            let _ = self.store.tx_abort(tx.txn);
                        }
                    }
                } else {
                    self.txs[slot] = Some(tx);
                }
            }
            Op::TxCommit { slot, id, durability } => {
                let Some(tx) = self.txs[slot].take() else { return self.after(op) };
                let r = self.store.tx_commit(tx.txn, id.map(id_bytes).as_deref(), durability);
                // The check ran with every queued commit applied (a failed one is gone).
                self.poll();
                let now = self.visible();
                let stale = tx.reads.iter().any(|(rk, rv, _)| now.get(rk) != rv.as_ref());
                let moved = self.store.stats().values_moved != tx.moved;
                let known = id.is_some_and(|i| self.id_known(i));
                match r {
                    Ok(TxCommit::Applied { .. }) => {
                        self.counts.tx_commits += 1;
                        assert!(!stale, "a transaction committed although a value it read had changed");
                        assert!(!known, "transaction id {id:?} was committed before, yet applied again");
                        let mut effect: Effect = tx.layers.into_iter().flatten().collect();
                        if let Some(i) = id {
                            effect.push((id_marker(i), Some(self.id_stamp())));
                            self.note_seqs(i);
                        }
                        self.committed(effect, durability, true);
                    }
                    Ok(TxCommit::Duplicate(_)) => {
                        self.counts.tx_duplicates += 1;
                        assert!(!stale, "validation comes before the id check");
                        assert!(known, "transaction id {id:?} is new, yet reported as a duplicate");
                    }
                    Err(Error::Conflict { .. }) => {
                        self.counts.tx_conflicts += 1;
                        assert!(
                            stale || moved || self.rewritten(&tx),
                            "a transaction conflicted although nothing it read was written"
                        );
                    }
                    Err(_) => {}
                }
            }
            Op::TxAbort { slot } => {
                if let Some(tx) = self.txs[slot].take() {
                    let _ = self.store.tx_abort(tx.txn);
                }
            }
            Op::PutIf { key: k, len, stale, durability } => {
                let v = self.value(len);
                if let Ok(version) = self.store.version_of(0, &key(k)) {
                    self.poll();
                    let asked = if stale { Some(version.map_or(1, |x| x + 1)) } else { version };
                    let checks = [(0, &key(k)[..], asked)];
                    match self.store.check_versions(&checks) {
                        Ok(()) => {
                            assert!(!stale, "a check of a version the key does not have passed");
                            if self.store.put(&key(k), &v, durability).is_ok() {
                                self.committed(vec![(key(k), Some(v))], durability, true);
                            }
                        }
                        Err(Error::Conflict { .. }) => assert!(stale, "the key's own version failed its check"),
                        Err(_) => {}
                    }
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
            Op::ExportImport { cut, seed } => {
                // An export settles queued commits (as a flush would) before its snapshot.
                let Ok(mut export) = crate::export::Export::begin(&mut self.store) else {
                    self.poll();
                    self.after(op);
                    return;
                };
                self.poll();
                let mut bytes = Vec::new();
                let read = loop {
                    match export.next(&self.store) {
                        Ok(Some(piece)) => bytes.extend_from_slice(&piece),
                        Ok(None) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                };
                export.finish(&mut self.store);
                if read.is_err() {
                    // Only a store already failing (poisoned) may fail to read its own export.
                    assert!(self.store.stats().poisoned, "export failed on a healthy store: {read:?}");
                    self.after(op);
                    return;
                }
                let mut fresh = Store::open(CrashVolume::default(), self.options.clone()).unwrap();
                // Tables the new store created and dropped first: whatever recovers the import
                // gives the next table an id above theirs and the export's.
                let dropped = (seed % 4) as u32;
                for t in 0..dropped {
                    let name = format!("dropped {t}");
                    fresh.create_table(&name).unwrap();
                    fresh.drop_table(&name).unwrap();
                }
                let next_table = self.store.index.tables().next_id().max(dropped + 1);
                let before = fresh.volume().cut.used();
                if let Some(n) = cut {
                    fresh.volume().cut.after(u64::from(n));
                }
                let done = (|| {
                    let mut i = crate::export::Import::begin(&mut fresh)?;
                    for piece in bytes.chunks(97) {
                        i.write(&mut fresh, piece)?;
                    }
                    i.finish(&mut fresh)
                })();
                let want = self.visible();
                let cut_short = fresh.volume().cut.used() - before < u64::from(cut.unwrap_or(u16::MAX));
                if cut.is_some() && !cut_short {
                    let image = fresh.volume().crash_image(seed);
                    let mut back = Store::open(CrashVolume::from_image(image), self.options.clone()).unwrap();
                    let got = state(&back);
                    assert!(got == want || got.is_empty(), "an import cut by a power cut recovered part of it");
                    if !got.is_empty() {
                        assert_eq!(back.create_table("probe").unwrap(), next_table, "a dropped table's id given again");
                    }
                    self.counts.imports_cut += 1;
                } else {
                    assert!(done.is_ok(), "the import of a healthy export failed: {done:?}");
                    assert_eq!(state(&fresh), want, "the export, imported, holds what the store holds");
                    assert_eq!(fresh.create_table("probe").unwrap(), next_table, "a dropped table's id given again");
                    self.counts.imports += 1;
                }
            }
            Op::Reopen => {
                self.counts.reopens += 1;
                let closed = self.store.close();
                self.poll();
                if closed.is_ok() {
                    self.all_flushed();
                }
                let image = self.store.volume().live_image();
                let store = Store::open(CrashVolume::from_image(image.clone()), self.options.clone()).unwrap();
                let got = state(&store);
                if closed.is_ok() {
                    assert_eq!(got, self.visible(), "a clean close and reopen keeps everything");
                    assert_eq!(store.recovery().bytes_truncated, 0, "a clean close leaves no torn tail");
                    // The fallback when neither checkpoint reads: a full scan of the segments
                    // the checkpoints kept rebuilds the same state.
                    let segments = image
                        .iter()
                        .filter(|(_, f)| !f.starts_with(&crate::format::CHECKPOINT_MAGIC))
                        .map(|(&id, f)| (id, f.clone()))
                        .collect();
                    let full = Store::open(CrashVolume::from_image(segments), self.options.clone()).unwrap();
                    // Commit ids are the exception: those whose COMMITs went with the released
                    // prefix or a compaction's victims live only in the checkpoints (documented
                    // in docs/FORMAT.md, "Full scan").
                    let no_ids =
                        |m: Model| m.into_iter().filter(|(k, _)| !k.starts_with(&[0, b'i'])).collect::<Model>();
                    let (got, want) = (no_ids(state(&full)), no_ids(self.visible()));
                    if got != want {
                        let diff: Vec<_> = got
                            .keys()
                            .chain(want.keys())
                            .collect::<std::collections::BTreeSet<_>>()
                            .into_iter()
                            .filter(|k| got.get(*k) != want.get(*k))
                            .map(|k| (k, got.get(k).map(Vec::len), want.get(k).map(Vec::len)))
                            .collect();
                        panic!("a full scan without the checkpoints differs at (key, got len, model len): {diff:?}");
                    }
                    // Table ids are never given again: the next table created gets the same id
                    // after a full scan as after normal recovery (a copy of it, here).
                    let mut full = full;
                    let mut normal = Store::open(CrashVolume::from_image(image.clone()), self.options.clone()).unwrap();
                    assert_eq!(
                        full.create_table("probe").ok(),
                        normal.create_table("probe").ok(),
                        "the next table's id after a full scan"
                    );
                } else {
                    self.assert_prefix(&got, "after a failed close");
                }
                self.reopened(store);
                return;
            }
        }
        self.after(op);
    }

    /// The check after every operation: the store holds what the model says is visible.
    fn after(&mut self, op: &Op) {
        self.poll();
        assert_eq!(state(&self.store), self.visible(), "after {op:?}");
    }
}
