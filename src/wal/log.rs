//! The log as transactions see it: the writer, the transactions being written, and the
//! committer, which owns the queue of commits waiting for their flush.
//!
//! **One owner of durability** (raft-engine's write barrier: writers join a group, one flush
//! serves the group, every member learns the group's one result). Every commit gets a
//! [`Ticket`]. A commit that must wait for a flush joins the committer's queue; whoever needs
//! bytes on storage (a strict commit, the group's `sync`, a read that must observe queued
//! commits, a checkpoint, a compaction step) asks the committer to flush, and the committer
//! alone settles the queue: a successful flush makes every queued commit durable and visible;
//! a failed one fails exactly the commits it carried, and records each one's failure under its
//! ticket, so the commit's own caller learns of it whoever asked for the flush.
//!
//! **Quota is a rollback, not a crash.** A write refused for lack of space leaves the log
//! exactly as it was before the first byte that was not written in full: the writer cuts the
//! tail segment back there and flushes the cut. Queued commits before the cut are intact
//! (and durable after that flush); commits at or after it are failed and gone, now and after
//! any crash; transactions with records after it are dropped, and their callers are told the
//! quota error, not a confusing "not open". Nothing is re-read and no segment is released, so
//! open readers keep their chunks.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Range;

use crc32fast::Hasher;

use crate::error::{Error, Result};
use crate::format::{
    feed_key, loc_segment, queue_key, record_key, split_ikey, CommitPayload, Kind, TableRecord, FEED_DELETE, FEED_PUT,
    FLAG_SEQ, FLAG_STRING_KEY, MAX_COMMIT_TABLES, MAX_KEY_LEN, NS_KEYS, NS_QUEUE,
};
use crate::index::{ChunkLoc, Entry, Index, Op};
use crate::storage::Volume;
use crate::wal::writer::{Writer, WriterInit};

/// Transaction id.
pub type TxnId = u64;

/// When a commit is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Acknowledged after the COMMIT record is flushed; visible from then on.
    #[default]
    Strict,
    /// Acknowledged and visible once the COMMIT is written to storage, without a flush: a
    /// crash may lose it (never half of it). It never overtakes a queued group commit: with
    /// one queued, it waits for the same flush.
    Relaxed,
    /// Strict, but the flush is shared (group commit): the commit is queued and becomes
    /// durable and visible at the next flush. Its caller acknowledges it once
    /// [`crate::Store::sync`] returns `Ok`, or once [`crate::Store::outcome`] of its ticket
    /// says [`Outcome::Committed`].
    Group,
}

/// Names one commit, to ask for its [`Outcome`]. Tickets count the commits made since the store
/// was opened, from 1; unlike LSNs they are never reused, even after a rollback cut the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(pub u64);

/// Where a commit stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// In the index, visible: durable for strict and group commits, written for relaxed ones.
    Committed,
    /// Written or buffered, waiting for the committer's next flush.
    Queued,
    /// Never to be visible. After a quota failure the commit is absent from the log, now and
    /// after any crash. After an I/O failure (a failed flush) it is not visible, but whether a
    /// reopen finds it is unknown (fsync gave no answer); the store is poisoned.
    Failed(Error),
}

/// Failure records kept for [`Outcome::Failed`]; each is one failed flush or rollback, so this
/// many are only reached by a caller that never asks. Older ones are forgotten: their tickets
/// then report failure whatever happened, never success.
const MAX_FAILURES: usize = 1024;

/// Transactions dropped by a rollback whose callers have not been told yet.
const MAX_DROPPED: usize = 1024;

/// A commit waiting for the committer's flush.
struct Queued {
    ticket: u64,
    lsn: u64,
    ops: Vec<Op>,
    /// Whether its caller waits for `sync` (group) rather than for its own call (strict, relaxed).
    group: bool,
}

/// The group-commit queue and the outcomes of the commits that left it.
struct Committer {
    /// Commits written (or buffered) and not yet durable, in LSN (and ticket) order. Changed
    /// only through [`Committer::push`], [`Committer::take_all`] and [`Committer::fail_from`],
    /// which keep the two maps below in step with it.
    queue: VecDeque<Queued>,
    /// The commit id of each queued commit that has one, with its ticket.
    queued_ids: HashMap<Vec<u8>, u64>,
    /// For each key a queued commit touches, the newest such commit: whether it puts the key,
    /// and its ticket. (A long queue of group commits from other tabs asks these per write: a
    /// scan of the queue made those writes quadratic.)
    queued_keys: HashMap<Vec<u8>, (bool, u64)>,
    /// The ticket the next commit gets.
    next_ticket: u64,
    /// Commits that failed, as ranges of tickets with their error, oldest first.
    failures: VecDeque<(Range<u64>, Error)>,
    /// Tickets below this whose failure record was forgotten ([`MAX_FAILURES`]).
    forgotten_below: u64,
    /// The first failure of group commits that [`Log::take_unreported`] has not handed out.
    unreported: Option<Error>,
}

impl Committer {
    fn push(&mut self, q: Queued) {
        self.index(&q);
        self.queue.push_back(q);
    }

    fn index(&mut self, q: &Queued) {
        for op in &q.ops {
            match op {
                Op::Id { id, .. } => {
                    self.queued_ids.insert(id.clone(), q.ticket);
                }
                Op::Put { key, .. } => {
                    self.queued_keys.insert(key.clone(), (true, q.ticket));
                }
                Op::Delete { key } => {
                    self.queued_keys.insert(key.clone(), (false, q.ticket));
                }
                Op::Seq { .. } | Op::Table(_) => {}
            }
        }
    }

    /// Empties the queue, oldest first.
    fn take_all(&mut self) -> VecDeque<Queued> {
        self.queued_ids.clear();
        self.queued_keys.clear();
        std::mem::take(&mut self.queue)
    }

    fn ticket(&mut self) -> u64 {
        let t = self.next_ticket;
        self.next_ticket += 1;
        t
    }

    fn outcome(&self, ticket: u64) -> Outcome {
        if ticket == 0 || ticket >= self.next_ticket {
            return Outcome::Failed(Error::invalid("ticket", format!("{ticket} names no commit of this store")));
        }
        if self.queue.binary_search_by_key(&ticket, |q| q.ticket).is_ok() {
            return Outcome::Queued;
        }
        if let Some((_, e)) = self.failures.iter().find(|(r, _)| r.contains(&ticket)) {
            return Outcome::Failed(e.clone());
        }
        if ticket < self.forgotten_below {
            return Outcome::Failed(Error::io("commit", "the outcome of this commit is no longer known"));
        }
        Outcome::Committed
    }

    /// Fails every queued commit from position `from` of the queue on with `e`.
    fn fail_from(&mut self, from: usize, e: &Error) {
        if from >= self.queue.len() {
            return;
        }
        let failed: Vec<Queued> = self.queue.drain(from..).collect();
        // Rare (a failed flush): the maps are rebuilt from what stays queued.
        self.queued_ids.clear();
        self.queued_keys.clear();
        let kept = std::mem::take(&mut self.queue);
        for q in &kept {
            self.index(q);
        }
        self.queue = kept;
        let (Some(first), Some(last)) = (failed.first(), failed.last()) else { return };
        if failed.iter().any(|q| q.group) && self.unreported.is_none() {
            self.unreported = Some(e.clone());
        }
        self.failures.push_back((first.ticket..last.ticket + 1, e.clone()));
        while self.failures.len() > MAX_FAILURES {
            if let Some((r, _)) = self.failures.pop_front() {
                self.forgotten_below = self.forgotten_below.max(r.end);
            }
        }
    }
}

/// A transaction being written.
pub(crate) struct OpenTxn {
    /// Location and LSN of its BEGIN (a checkpoint replays from the earliest open BEGIN).
    pub begin: (u64, u64),
    /// Location of its last record (the next record's backward link).
    last: u64,
    /// Location of the last record written for it of any kind, a ROLLBACK included (which
    /// `last` does not follow): a rollback that cuts at or below it takes the transaction.
    high: u64,
    commit: CommitPayload,
    value_crc: Hasher,
    ops: Vec<Op>,
}

/// An open transaction's state at a point: what [`Log::rollback_to`] returns it to.
#[derive(Debug, Clone)]
pub struct Savepoint {
    last: u64,
    commit: CommitPayload,
    value_crc: Hasher,
    ops: usize,
    /// The last PUT's chunk count and size then: chunks a later CHUNK adds to that PUT are
    /// rolled back with the rest.
    put: Option<(usize, u64)>,
}

/// Checks a key's length; the error names the parameter `key`.
pub(crate) fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid("key", "must not be empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Error::invalid("key", format!("is {} bytes; the limit is {MAX_KEY_LEN}", key.len())));
    }
    Ok(())
}

pub(crate) fn key_flags(string_key: bool) -> u8 {
    if string_key {
        FLAG_STRING_KEY
    } else {
        0
    }
}

/// The writer, the open transactions and the committer. Every mutating call that meets a
/// quota failure rolls the log back before it returns (see the module docs).
pub(crate) struct Log<V: Volume> {
    writer: Writer<V>,
    txns: HashMap<TxnId, OpenTxn>,
    /// Transactions a rollback dropped, with the error their callers get (bounded).
    dropped: HashMap<TxnId, Error>,
    next_txn: TxnId,
    committer: Committer,
    /// Rollbacks after quota failures since open.
    rollbacks: u64,
    /// Commits applied to the index since open (a generation: it changes whenever what is
    /// visible may have; LSNs cannot serve, as a quota rollback hands cut LSNs out again).
    applied: u64,
    /// The sequence number each table's next commit takes, for tables that queued commits
    /// took numbers from (the others: the index's). Emptied when the queue is applied;
    /// rebuilt after a rollback failed queued commits (their numbers are handed out again).
    next_seq: HashMap<u32, u64>,
    /// The sequence numbers the last commit written took: (table, first, last).
    last_seqs: Vec<(u32, u64, u64)>,
    /// Chain floors: for each segment holding the COMMIT of a transaction that deletes and
    /// began in an earlier segment, the lowest such BEGIN's segment. See [`Log::chain_floor`].
    chains: BTreeMap<u32, u32>,
    /// Segments (first, last) holding COMMITs recovery did not read whole, whose floors are not
    /// known: every segment from `first` stays while `last` is kept, until compaction reads
    /// them ([`Log::resolve_unknown_chains`]).
    unknown_chains: Option<(u32, u32)>,
}

/// Records in `chains` (see [`Log::chain_floor`]) a transaction that deletes, whose records
/// span segments `span` (its BEGIN's, its COMMIT's).
pub(crate) fn note_chain(chains: &mut BTreeMap<u32, u32>, (begin, commit): (u32, u32)) {
    if begin < commit {
        let floor = chains.entry(commit).or_insert(begin);
        *floor = (*floor).min(begin);
    }
}

/// Gives `ops` (a transaction's writes, in chain order) their sequence numbers from `bases`
/// (table, first number), as a COMMIT states them: the k-th write to a table takes `first + k`;
/// a queue append (a queue key without its number) gets its key. Returns the ops followed by one
/// [`Op::Seq`] per table, and (table, first, last) for each table.
///
/// A numbered commit (`numbered`: written with [`FLAG_SEQ`]) states a base for every table
/// that existed when it was written: its writes to any other table (dropped meanwhile) are
/// left out. An unnumbered one (before version 5, or compaction's copies) keeps every write.
///
/// Each numbered put or delete of a named table's key also gets its change feed entry, written
/// by the commit at `lsn` whose records span segments `span`.
pub(crate) fn assign_seqs(
    ops: Vec<Op>,
    bases: &[(u32, u64)],
    numbered: bool,
    lsn: u64,
    span: (u32, u32),
) -> (Vec<Op>, Vec<(u32, u64, u64)>) {
    let mut next: Vec<(u32, u64, u64)> = bases.iter().map(|&(t, first)| (t, first, first)).collect();
    let mut out = Vec::with_capacity(ops.len() + bases.len());
    for mut op in ops {
        let mut feed = None;
        if let Op::Put { key, .. } | Op::Delete { key } = &mut op {
            let (table, ns, rest) = split_ikey(key);
            let append = ns == NS_QUEUE && rest.is_empty();
            match next.iter_mut().find(|(t, _, _)| *t == table) {
                Some(slot) => {
                    if append {
                        *key = queue_key(table, slot.2);
                    }
                    feed = Some(slot.2);
                    slot.2 += 1;
                }
                None if numbered => continue,
                None => {}
            }
        }
        // A delete's feed entry goes first: it takes the string-key flag of the entry it removes.
        let change = feed.and_then(|seq| feed_op(&op, seq, lsn, span));
        if matches!(op, Op::Delete { .. }) {
            out.extend(change);
            out.push(op);
        } else {
            out.push(op);
            out.extend(change);
        }
    }
    let mut taken = Vec::new();
    for (table, first, end) in next {
        if end > first {
            out.push(Op::Seq { table, last: end - 1 });
            taken.push((table, first, end - 1));
        }
    }
    (out, taken)
}

/// The change feed entry of `op` (a put or delete of a named table's key) numbered `seq`,
/// committed at `lsn` in segments `span`; `None` for any other op.
pub(crate) fn feed_op(op: &Op, seq: u64, lsn: u64, span: (u32, u32)) -> Option<Op> {
    let (key, kind, size, string_key) = match op {
        Op::Put { key, entry } => (key, FEED_PUT, entry.size, entry.string_key),
        Op::Delete { key } => (key, FEED_DELETE, 0, false),
        _ => return None,
    };
    let (table, ns, user_key) = split_ikey(key);
    if table == 0 || ns != NS_KEYS {
        return None;
    }
    let entry = Entry { chunks: Vec::new(), size: 0, string_key, lsn, span };
    Some(Op::Put { key: feed_key(table, seq, kind, size, user_key), entry })
}

impl<V: Volume> Log<V> {
    pub fn new(writer: Writer<V>, next_txn: TxnId) -> Self {
        Log {
            writer,
            txns: HashMap::new(),
            dropped: HashMap::new(),
            next_txn,
            committer: Committer {
                queue: VecDeque::new(),
                queued_ids: HashMap::new(),
                queued_keys: HashMap::new(),
                next_ticket: 1,
                failures: VecDeque::new(),
                forgotten_below: 0,
                unreported: None,
            },
            rollbacks: 0,
            applied: 0,
            next_seq: HashMap::new(),
            last_seqs: Vec::new(),
            chains: BTreeMap::new(),
            unknown_chains: None,
        }
    }

    /// Starts over on the same volume after recovery ran on it again (an import installed):
    /// the writer where `init` says, no transaction open. Tickets and the `applied` counter run
    /// on (a ticket handed out before never names a later commit). Only for a log with no
    /// commit queued.
    pub fn reset(&mut self, init: WriterInit, next_txn: TxnId) {
        self.writer.reset(init);
        self.txns.clear();
        self.dropped.clear();
        self.next_txn = next_txn;
        self.applied += 1;
        self.next_seq.clear();
        self.last_seqs.clear();
        self.chains.clear();
        self.unknown_chains = None;
    }

    /// Takes recovery's chain floors (see [`Log::chain_floor`]).
    pub fn set_chains(&mut self, chains: BTreeMap<u32, u32>, unknown: Option<(u32, u32)>) {
        self.chains = chains;
        self.unknown_chains = unknown;
    }

    /// The segments whose COMMITs' floors are not known (see [`Log::unknown_chains`]).
    pub fn unknown_chains(&self) -> Option<(u32, u32)> {
        self.unknown_chains
    }

    /// Replaces the unknown floors with `found` (COMMIT segment, BEGIN segment): those of the
    /// transactions that delete, read from the segments in [`Log::unknown_chains`].
    pub fn resolve_unknown_chains(&mut self, found: &[(u32, u32)]) {
        for &(commit, begin) in found {
            note_chain(&mut self.chains, (begin, commit));
        }
        self.unknown_chains = None;
    }

    /// The first segment a suffix of the log that starts at segment `from` must keep so that
    /// every COMMIT in it keeps its whole chain, down to its BEGIN (`from` itself, or lower).
    ///
    /// A transaction's DELETE takes effect at its COMMIT, after every write committed before
    /// it, though its record may lie segments earlier. A full scan (the fallback when no
    /// checkpoint reads) proves a COMMIT only by its whole chain: had the DELETE's segment
    /// gone, it would drop the COMMIT and bring back the puts of that key committed in between.
    /// (A transaction that only puts needs no floor: a value of it still live keeps its whole
    /// chain anyway, and one overwritten since may be dropped.) Compaction, which releases
    /// segments from the middle of the log, writes tombstones instead (lifecycle.rs).
    pub fn chain_floor(&self, mut from: u32) -> u32 {
        loop {
            let unknown = self.unknown_chains.filter(|&(_, last)| last >= from).map(|(first, _)| first);
            match self.chains.range(from..).map(|(_, &f)| f).chain(unknown).min() {
                Some(floor) if floor < from => from = floor,
                _ => return from,
            }
        }
    }

    /// Forgets the chain floors of COMMITs in segments below `first` (released).
    pub fn forget_chains_below(&mut self, first: u32) {
        self.chains = self.chains.split_off(&first);
        self.unknown_chains = self.unknown_chains.filter(|&(_, last)| last >= first);
    }

    /// The chains (COMMIT segment, floor) with a segment among `segments`: releasing it would
    /// cut them, and a full scan drop their COMMITs.
    pub fn chains_meeting(&self, segments: &BTreeSet<u32>) -> Vec<(u32, u32)> {
        self.chains.iter().filter(|&(&c, &f)| segments.range(f..=c).next().is_some()).map(|(&c, &f)| (c, f)).collect()
    }

    /// Forgets the chain floors of the COMMITs in `segments`: their transactions' deletes are
    /// written again at the log's end (compaction's tombstones), so their chains may go.
    pub fn forget_chains(&mut self, segments: &[u32]) {
        for c in segments {
            self.chains.remove(c);
        }
    }

    /// The sequence number table `table`'s next commit takes; `None` if the table does not exist.
    fn seq_of(&self, table: u32, index: &Index) -> Option<u64> {
        let meta = index.tables().get(table)?;
        Some(self.next_seq.get(&table).copied().unwrap_or(meta.next_seq))
    }

    /// The sequence numbers the last commit written took: (table, first, last) per table.
    pub fn last_seqs(&self) -> &[(u32, u64, u64)] {
        &self.last_seqs
    }

    /// Hands out the numbers `taken` (table, first, last) describes.
    fn take_seqs(&mut self, taken: &[(u32, u64, u64)]) {
        for &(table, _, last) in taken {
            self.next_seq.insert(table, last + 1);
        }
    }

    /// Rebuilds [`Log::next_seq`] from what is still queued (after a rollback failed some).
    fn rebuild_seqs(&mut self) {
        self.next_seq.clear();
        for q in &self.committer.queue {
            for op in &q.ops {
                if let Op::Seq { table, last } = op {
                    self.next_seq.insert(*table, last + 1);
                }
            }
        }
    }

    /// Applies every queued commit to `index`, oldest first; the index is then current, so the
    /// log's own sequence numbers are dropped.
    fn apply_queue(&mut self, index: &mut Index) {
        for q in self.committer.take_all() {
            q.ops.into_iter().for_each(|op| index.apply(op));
            self.applied += 1;
        }
        self.next_seq.clear();
    }

    pub fn writer(&self) -> &Writer<V> {
        &self.writer
    }

    pub fn writer_mut(&mut self) -> &mut Writer<V> {
        &mut self.writer
    }

    pub fn into_writer(self) -> Writer<V> {
        self.writer
    }

    pub fn next_txn(&self) -> TxnId {
        self.next_txn
    }

    /// Commits applied to the index since open.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    pub fn open_transactions(&self) -> usize {
        self.txns.len()
    }

    /// Bytes of the records holding the values of commits waiting for the committer's flush
    /// and of transactions still open: not live in the index yet, and not dead either (they
    /// become live when applied or committed; an abort makes an open one's dead). Compaction's
    /// trigger and `dead_ratio` count them as live. Walks their chunk lists (a value of N
    /// chunks: N steps), after every commit.
    pub fn pending_value_bytes(&self) -> u64 {
        fn of(ops: &[Op]) -> u64 {
            ops.iter()
                .map(|op| match op {
                    Op::Put { entry, .. } => entry.chunks.iter().map(ChunkLoc::record_bytes).sum(),
                    _ => 0,
                })
                .sum()
        }
        let queued: u64 = self.committer.queue.iter().map(|q| of(&q.ops)).sum();
        queued + self.txns.values().map(|t| of(&t.ops)).sum::<u64>()
    }

    /// Location and LSN of the earliest BEGIN of a transaction still open.
    pub fn oldest_open(&self) -> Option<(u64, u64)> {
        self.txns.values().map(|t| t.begin).min()
    }

    pub fn rollbacks(&self) -> u64 {
        self.rollbacks
    }

    /// Commits waiting for the committer's flush.
    pub fn queued(&self) -> usize {
        self.committer.queue.len()
    }

    /// The newest queued commit that touches `key`: whether it puts (`true`) or deletes it, and
    /// its ticket. `None` if no queued commit touches `key`.
    pub fn queued_touch(&self, key: &[u8]) -> Option<(bool, Ticket)> {
        self.committer.queued_keys.get(key).map(|&(put, ticket)| (put, Ticket(ticket)))
    }

    /// The ticket of the queued commit that carries commit id `id`, if one does.
    pub fn queued_id(&self, id: &[u8]) -> Option<Ticket> {
        self.committer.queued_ids.get(id).map(|&ticket| Ticket(ticket))
    }

    pub fn outcome(&self, ticket: Ticket) -> Outcome {
        self.committer.outcome(ticket.0)
    }

    /// The first failure of group commits not yet handed out, which is then forgotten.
    pub fn take_unreported(&mut self) -> Option<Error> {
        self.committer.unreported.take()
    }

    /// Fails with [`Error::Poisoned`] while the writer refuses writes.
    pub fn writable(&mut self) -> Result<()> {
        if self.writer.is_recoverable() {
            self.after_failure();
        }
        self.writer.check()
    }

    /// Passes `r` through; on a storage failure, settles what it broke first (see
    /// [`Log::after_failure`]).
    fn io<T>(&mut self, r: Result<T>) -> Result<T> {
        if r.is_err() && self.writer.is_poisoned() {
            self.after_failure();
        }
        r
    }

    /// After the writer failed: a quota failure is rolled back (the log cut to what was
    /// written in full and the cut flushed); queued commits past the cut fail with the quota
    /// error, and transactions with records past it are dropped with it. Any other failure (or
    /// a failed rollback) leaves the writer poisoned until reopen, and fails every queued commit.
    fn after_failure(&mut self) {
        let Some(cause) = self.writer.poison_cause().cloned() else { return };
        if !self.writer.is_recoverable() {
            self.committer.fail_from(0, &cause);
            self.rebuild_seqs();
            return;
        }
        match self.writer.rollback() {
            Ok((cut, cut_lsn)) => {
                self.rollbacks += 1;
                let from = self.committer.queue.iter().position(|q| q.lsn >= cut_lsn).unwrap_or(usize::MAX);
                self.committer.fail_from(from, &cause);
                self.rebuild_seqs();
                let gone: Vec<TxnId> = self.txns.iter().filter(|(_, t)| t.high >= cut).map(|(&id, _)| id).collect();
                for txn in gone {
                    self.txns.remove(&txn);
                    self.remember_dropped(txn, cause.clone());
                }
            }
            Err(e) => {
                self.committer.fail_from(0, &e);
                self.rebuild_seqs();
            }
        }
    }

    fn remember_dropped(&mut self, txn: TxnId, e: Error) {
        if self.dropped.len() >= MAX_DROPPED {
            if let Some(&oldest) = self.dropped.keys().min() {
                self.dropped.remove(&oldest);
            }
        }
        self.dropped.insert(txn, e);
    }

    fn open_txn(&mut self, txn: TxnId) -> Result<&mut OpenTxn> {
        if let Some(e) = self.dropped.get(&txn) {
            return Err(e.clone());
        }
        self.txns.get_mut(&txn).ok_or_else(|| Error::Transaction { txn, detail: "is not open".into() })
    }

    fn append(&mut self, kind: Kind, flags: u8, txn: TxnId, prev: u64, parts: &[&[u8]]) -> Result<(u64, u64, Hasher)> {
        self.writable()?;
        let r = self.writer.append(kind, flags, txn, prev, parts).map(|a| (a.offset, a.lsn, a.payload_crc));
        self.io(r)
    }

    // ----- transactions -----

    /// Begins a transaction (writes BEGIN) and returns its id.
    pub fn begin(&mut self) -> Result<TxnId> {
        let txn = self.next_txn;
        let (at, lsn, _) = self.append(Kind::Begin, 0, txn, 0, &[])?;
        self.next_txn += 1;
        self.txns.insert(
            txn,
            OpenTxn {
                begin: (at, lsn),
                last: at,
                high: at,
                commit: CommitPayload::default(),
                value_crc: Hasher::new(),
                ops: Vec::new(),
            },
        );
        Ok(txn)
    }

    /// Appends a record to `txn`, linked to the transaction's previous record.
    fn txn_append(&mut self, txn: TxnId, kind: Kind, flags: u8, parts: &[&[u8]]) -> Result<(u64, Hasher)> {
        let prev = self.open_txn(txn)?.last;
        let (at, _, crc) = self.append(kind, flags, txn, prev, parts)?;
        let t = self.open_txn(txn)?;
        t.last = at;
        t.high = at;
        t.commit.records += 1;
        Ok((at, crc))
    }

    /// Writes a PUT of internal key `key` (a table-space key, or a queue key without its
    /// number for an append, which its COMMIT numbers).
    pub fn txn_put(&mut self, txn: TxnId, key: &[u8], string_key: bool) -> Result<()> {
        check_key(key)?;
        self.open_txn(txn)?;
        self.txn_append(txn, Kind::Put, key_flags(string_key) | record_key(key), &[key])?;
        let entry = Entry { string_key, ..Entry::default() };
        self.open_txn(txn)?.ops.push(Op::Put { key: key.to_vec(), entry });
        Ok(())
    }

    pub fn txn_chunk(&mut self, txn: TxnId, data: &[u8], chunk_size: usize) -> Result<()> {
        if !matches!(self.open_txn(txn)?.ops.last(), Some(Op::Put { .. })) {
            return Err(Error::Transaction { txn, detail: "a chunk needs a put in progress".into() });
        }
        for piece in data.chunks(chunk_size.max(1)) {
            let (at, pcrc) = self.txn_append(txn, Kind::Chunk, 0, &[piece])?;
            let t = self.open_txn(txn)?;
            t.commit.chunks += 1;
            t.commit.value_bytes += piece.len() as u64;
            t.value_crc.combine(&pcrc);
            if let Some(Op::Put { entry, .. }) = t.ops.last_mut() {
                entry.chunks.push(ChunkLoc { record: at, skip: 0, len: piece.len() as u32 });
                entry.size += piece.len() as u64;
            }
        }
        Ok(())
    }

    pub fn txn_delete(&mut self, txn: TxnId, key: &[u8]) -> Result<()> {
        check_key(key)?;
        self.open_txn(txn)?;
        self.txn_append(txn, Kind::Delete, record_key(key), &[key])?;
        self.open_txn(txn)?.ops.push(Op::Delete { key: key.to_vec() });
        Ok(())
    }

    /// Where `txn` stands now, to roll back to later ([`Log::rollback_to`]): a nested
    /// transaction's start (SynapseDB's layer stack).
    pub fn savepoint(&mut self, txn: TxnId) -> Result<Savepoint> {
        let t = self.open_txn(txn)?;
        let put = match t.ops.last() {
            Some(Op::Put { entry, .. }) => Some((entry.chunks.len(), entry.size)),
            _ => None,
        };
        Ok(Savepoint { last: t.last, commit: t.commit, value_crc: t.value_crc.clone(), ops: t.ops.len(), put })
    }

    /// Rolls `txn` back to `sp`: writes a ROLLBACK (version 6) naming the record the chain
    /// resumes from, so every record written since `sp` leaves the chain, and forgets their
    /// effects. Nothing is written if nothing was written since. The records stay in the log
    /// (off the chain) until compaction or a release takes their segment.
    pub fn rollback_to(&mut self, txn: TxnId, sp: &Savepoint) -> Result<()> {
        let last = self.open_txn(txn)?.last;
        if last == sp.last {
            return Ok(());
        }
        let (at, _, _) = self.append(Kind::Rollback, 0, txn, last, &[&sp.last.to_le_bytes()])?;
        let t = self.open_txn(txn)?;
        t.high = at;
        t.last = sp.last;
        t.commit = sp.commit;
        t.value_crc = sp.value_crc.clone();
        t.ops.truncate(sp.ops);
        if let (Some((chunks, size)), Some(Op::Put { entry, .. })) = (sp.put, t.ops.last_mut()) {
            entry.chunks.truncate(chunks);
            entry.size = size;
        }
        Ok(())
    }

    /// Writes the batch buffer out (no flush), so that records still in it can be read back.
    pub fn write_out(&mut self) -> Result<()> {
        let r = self.writer.write_buffer();
        self.io(r)
    }

    /// Whether `txn` is still open: the error it was dropped with (a quota rollback took its
    /// records), or [`Error::Transaction`] if it is not open.
    pub fn txn_alive(&mut self, txn: TxnId) -> Result<()> {
        self.open_txn(txn).map(drop)
    }

    /// The effects `txn` has written so far, in order (a transaction reading its own writes).
    pub fn pending(&self, txn: TxnId) -> Option<&[Op]> {
        self.txns.get(&txn).map(|t| t.ops.as_slice())
    }

    /// Writes `txn`'s COMMIT (carrying `id`, if given: the caller checked it is new) and
    /// settles it as `durability` asks. A transaction whose COMMIT cannot be written is gone (its
    /// caller's abort then succeeds quietly).
    ///
    /// With `seqs`, the commit takes the next sequence numbers of the tables it writes to (every
    /// commit of a caller); without, it takes none (compaction's copies keep theirs).
    pub fn commit(
        &mut self,
        txn: TxnId,
        durability: Durability,
        id: Option<&[u8]>,
        seqs: bool,
        index: &mut Index,
    ) -> Result<Ticket> {
        self.writable()?;
        let mut t = match self.txns.remove(&txn) {
            Some(t) => t,
            None => {
                return Err(self
                    .open_txn(txn)
                    .err()
                    .unwrap_or(Error::Transaction { txn, detail: "is not open".into() }))
            }
        };
        t.commit.value_crc = t.value_crc.clone().finalize();
        let mut bases: Vec<(u32, u64)> = Vec::new();
        if seqs {
            for op in &t.ops {
                if let Op::Put { key, .. } | Op::Delete { key } = op {
                    let table = split_ikey(key).0;
                    if !bases.iter().any(|&(b, _)| b == table) {
                        if let Some(first) = self.seq_of(table, index) {
                            bases.push((table, first));
                        }
                    }
                }
            }
            if bases.len() > MAX_COMMIT_TABLES {
                self.txns.insert(txn, t);
                return Err(Error::invalid("ops", format!("a commit may write to at most {MAX_COMMIT_TABLES} tables")));
            }
        }
        let payload = if seqs { t.commit.encode_with_seqs(&bases, id) } else { t.commit.encode_with_id(id) };
        let flags = if seqs { FLAG_SEQ } else { 0 };
        let r = self.writer.append(Kind::Commit, flags, txn, t.last, &[&payload]);
        let (at, lsn) = match self.io(r) {
            Ok(a) => (a.offset, a.lsn),
            Err(e) => {
                self.remember_dropped(txn, e.clone());
                return Err(e);
            }
        };
        let span = (loc_segment(t.begin.0), loc_segment(at));
        if t.ops.iter().any(|op| matches!(op, Op::Delete { .. })) {
            note_chain(&mut self.chains, span);
        }
        for op in &mut t.ops {
            if let Op::Put { entry, .. } = op {
                entry.span = span;
                entry.lsn = lsn;
            }
        }
        let (mut ops, taken) = assign_seqs(std::mem::take(&mut t.ops), &bases, seqs, lsn, span);
        self.take_seqs(&taken);
        if let Some(id) = id {
            ops.push(Op::Id { id: id.to_vec(), lsn, seqs: taken.clone() });
        }
        if seqs {
            // (A copy's commit, made by maintenance inside a caller's call, must not hide the
            // caller's numbers.)
            self.last_seqs = taken;
        }
        self.settle(lsn, ops, durability, index)
    }

    /// Aborts `txn`: writes ABORT, so recovery reports it. A transaction already dropped by a
    /// rollback, or poisoned out of writing, is invisible without one.
    pub fn abort(&mut self, txn: TxnId) -> Result<()> {
        if self.dropped.remove(&txn).is_some() {
            return Ok(());
        }
        let t = self.txns.remove(&txn).ok_or_else(|| Error::Transaction { txn, detail: "is not open".into() })?;
        if self.writer.is_poisoned() {
            return Ok(());
        }
        let r = self.writer.append(Kind::Abort, 0, txn, t.last, &[]);
        self.io(r).map(drop)
    }

    // ----- one-record commits -----

    /// A whole value of at most one chunk in one self-committed PUT_ONE record.
    pub fn put_one(
        &mut self,
        key: &[u8],
        string_key: bool,
        value: &[u8],
        durability: Durability,
        index: &mut Index,
    ) -> Result<Ticket> {
        let (table, ns, rest) = split_ikey(key);
        let seq = self.seq_of(table, index);
        // An append's key is its sequence number, known here: the record carries it whole.
        let full;
        let key = match seq {
            Some(seq) if ns == NS_QUEUE && rest.is_empty() => {
                full = queue_key(table, seq);
                &full[..]
            }
            _ => key,
        };
        check_key(key)?;
        let txn = self.next_txn;
        let len = (key.len() as u16).to_le_bytes();
        let seq_bytes = seq.unwrap_or(0).to_le_bytes();
        let (flags, head): (u8, &[u8]) = if seq.is_some() { (FLAG_SEQ, &seq_bytes) } else { (0, &[]) };
        let flags = flags | key_flags(string_key) | record_key(key);
        let (at, lsn, _) = self.append(Kind::PutOne, flags, txn, 0, &[head, &len, key, value])?;
        self.next_txn += 1;
        let chunks = if value.is_empty() {
            Vec::new()
        } else {
            vec![ChunkLoc { record: at, skip: (head.len() + 2 + key.len()) as u32, len: value.len() as u32 }]
        };
        let seg = loc_segment(at);
        let entry = Entry { chunks, size: value.len() as u64, string_key, lsn, span: (seg, seg) };
        let mut ops = vec![Op::Put { key: key.to_vec(), entry }];
        self.one_seq(table, seq, &mut ops, lsn, (seg, seg));
        self.settle(lsn, ops, durability, index)
    }

    /// Records that a one-record commit took `seq` (if any) of `table`.
    fn one_seq(&mut self, table: u32, seq: Option<u64>, ops: &mut Vec<Op>, lsn: u64, span: (u32, u32)) {
        self.last_seqs.clear();
        if let Some(seq) = seq {
            if let Some(change) = ops.first().and_then(|op| feed_op(op, seq, lsn, span)) {
                // A delete's feed entry goes first (see assign_seqs).
                if matches!(ops.first(), Some(Op::Delete { .. })) {
                    ops.insert(0, change);
                } else {
                    ops.push(change);
                }
            }
            ops.push(Op::Seq { table, last: seq });
            self.take_seqs(&[(table, seq, seq)]);
            self.last_seqs.push((table, seq, seq));
        }
    }

    /// A delete in one self-committed DELETE_ONE record.
    pub fn delete_one(&mut self, key: &[u8], durability: Durability, index: &mut Index) -> Result<Ticket> {
        check_key(key)?;
        let table = split_ikey(key).0;
        let seq = self.seq_of(table, index);
        let txn = self.next_txn;
        let seq_bytes = seq.unwrap_or(0).to_le_bytes();
        let (flags, head): (u8, &[u8]) = if seq.is_some() { (FLAG_SEQ, &seq_bytes) } else { (0, &[]) };
        let (at, lsn, _) = self.append(Kind::DeleteOne, flags | record_key(key), txn, 0, &[head, key])?;
        self.next_txn += 1;
        let mut ops = vec![Op::Delete { key: key.to_vec() }];
        let seg = loc_segment(at);
        self.one_seq(table, seq, &mut ops, lsn, (seg, seg));
        self.settle(lsn, ops, durability, index)
    }

    /// A DELETE_ONE for a key that is already absent from the index (compaction keeping a
    /// delete alive). Takes no sequence number. Written, not flushed: the caller flushes.
    pub fn tombstone(&mut self, key: &[u8]) -> Result<()> {
        let txn = self.next_txn;
        self.append(Kind::DeleteOne, record_key(key), txn, 0, &[key])?;
        self.next_txn += 1;
        Ok(())
    }

    /// A TABLE record, self-committed and settled as `durability` asks.
    pub fn table(&mut self, rec: TableRecord, durability: Durability, index: &mut Index) -> Result<Ticket> {
        let txn = self.next_txn;
        let (_, lsn, _) = self.append(Kind::Table, 0, txn, 0, &[&rec.encode()])?;
        self.next_txn += 1;
        self.last_seqs.clear();
        self.settle(lsn, vec![Op::Table(rec)], durability, index)
    }

    /// A TABLE record restating what the index already holds (compaction keeping a table's
    /// state or drop alive). Written, not flushed: the caller flushes.
    pub fn table_copy(&mut self, rec: &TableRecord) -> Result<()> {
        let txn = self.next_txn;
        self.append(Kind::Table, 0, txn, 0, &[&rec.encode()])?;
        self.next_txn += 1;
        Ok(())
    }

    // ----- the committer -----

    /// Settles a written commit: a relaxed one with nothing queued is written out and applied
    /// at once; every other joins the queue, and a strict (or a relaxed one that may not
    /// overtake the queue) waits for the committer's flush and returns its own outcome.
    fn settle(&mut self, lsn: u64, ops: Vec<Op>, durability: Durability, index: &mut Index) -> Result<Ticket> {
        let ticket = self.committer.ticket();
        let relaxed_alone = durability == Durability::Relaxed && self.committer.queue.is_empty();
        self.committer.push(Queued { ticket, lsn, ops, group: durability == Durability::Group });
        if relaxed_alone {
            let r = self.writer.write_buffer();
            self.io(r)?;
            self.apply_queue(index);
            return Ok(Ticket(ticket));
        }
        if durability == Durability::Group {
            return Ok(Ticket(ticket));
        }
        let flushed = self.flush(index);
        match self.committer.outcome(ticket) {
            Outcome::Committed => Ok(Ticket(ticket)),
            Outcome::Failed(e) => Err(e),
            Outcome::Queued => Err(flushed.err().unwrap_or_else(|| Error::io("commit", "commit left queued"))),
        }
    }

    /// The committer's flush: writes the buffer and flushes once. On success every queued
    /// commit is durable and applied to `index` in commit order. On failure the commits it
    /// carried are failed and recorded under their tickets (a quota failure first rolls the
    /// log back; queued commits written in full before the cut are durable then, and applied).
    pub fn flush(&mut self, index: &mut Index) -> Result<()> {
        self.writable()?;
        let r = self.writer.sync();
        let r = self.io(r);
        if r.is_ok() || !self.writer.is_poisoned() {
            // Flushed, or rolled back and the rollback flushed what remains queued.
            self.apply_queue(index);
        }
        r
    }

    /// Reads the value bytes of `loc` into `out`, re-checking the record's CRC.
    pub fn read_chunk(&self, loc: &ChunkLoc, out: &mut Vec<u8>) -> Result<()> {
        self.writer.read_chunk(loc, out)
    }
}
