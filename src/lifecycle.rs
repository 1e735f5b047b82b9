//! The log's lifecycle: checkpoints and compaction.
//!
//! **Checkpoints** persist the index (key -> chunk locations) with the location where replay
//! must start: the earliest BEGIN of a transaction still open, else the log's end. Open reads
//! the newest valid checkpoint and replays only what follows (Bitcask's hint files). Two
//! checkpoint files are written in turn; each carries the segments it needs, so the pair is
//! also the manifest of live segments: a torn checkpoint leaves the previous one.
//!
//! **Compaction** empties the sealed segments with the most dead bytes (overwritten, deleted,
//! aborted, never committed): each live value touching one is copied to the log's end as a new
//! transaction, one chunk per step, and committed only if the value is still the current one.
//! Deletes recorded in a victim are written again while an older segment survives, so that a
//! full scan (the fallback when no checkpoint is usable) can never resurrect a deleted key.
//! Then a checkpoint is written and the victims are released. A crash at any point leaves
//! either the old set of segments (the previous checkpoint still names them) or the new one.
//!
//! Both work through a narrow interface, as raft-engine keeps its pipe log, memtable and purge
//! apart: the [`Log`] (writes, and the committer, which alone makes anything durable) and the
//! [`Index`] (what is committed). Neither flushes behind the committer's back: they ask it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::error::{Error, Result};
use crate::format::{
    ikey_from_record, loc_segment, split_seq, CheckpointHeader, Kind, RecordHeader, TableRecord, FILE_HEADER_LEN,
    RECORD_HEADER_LEN, TABLE_OP_DROP,
};
use crate::index::{ChunkLoc, Index};
use crate::storage::{read_exact_at, FileId, Storage, Volume};
use crate::wal::checkpoint;
use crate::wal::log::{Durability, Log, TxnId};
use crate::wal::recovery::SlotNeeds;

/// Dead fraction a segment needs to be taken by an explicit compaction: below it, the copy
/// would cost more than it frees.
const EAGER_DEAD_FRACTION: f64 = 0.05;

/// A compaction round in progress.
#[derive(Debug)]
struct Compaction {
    /// Segments being emptied.
    victims: BTreeSet<u32>,
    /// Keys whose values touch a victim, still to copy.
    queue: Vec<Vec<u8>>,
    /// Keys deleted in a victim that must stay deleted.
    tombstones: Vec<Vec<u8>>,
    /// Tables dropped by TABLE records of the victims (and not created since): their drops are
    /// written again, as tombstones are.
    dropped: Vec<u32>,
    /// Chains the victims cut (by their COMMIT's segment, sealed), forgotten once the round's
    /// tombstones (their deletes among them) are durable.
    settles: Vec<u32>,
    /// Whether the tables' states were written for this round.
    stated: bool,
    /// The value being copied.
    copy: Option<Copying>,
    /// The log's bytes when the round was planned: a round that ends with no fewer has
    /// converged (see `Lifecycle::converged_at`).
    log_bytes: u64,
}

#[derive(Debug)]
struct Copying {
    key: Vec<u8>,
    /// LSN of the value when its copy began: the copy commits only if it is still current.
    lsn: u64,
    chunks: Vec<ChunkLoc>,
    next: usize,
    txn: TxnId,
}

/// What one compaction step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactStep {
    /// Nothing to compact.
    Idle,
    /// Copied one chunk (or skipped a value that changed meanwhile); call again.
    Progress,
    /// Finished a round: the victims' space is released.
    Done,
}

/// What the lifecycle needs to know of the store's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub chunk_size: usize,
    pub checkpoint_bytes: u64,
    pub compaction_ratio: f64,
}

/// Checkpoint slots, the compaction round under way, and the segments readers pin.
#[derive(Debug, Default)]
pub(crate) struct Lifecycle {
    /// Checkpoint files and what the checkpoint each holds needs.
    slots: Vec<SlotNeeds>,
    /// Number of the newest checkpoint written or seen.
    seq: u64,
    /// LSN where replay would start from the last checkpoint (0: none yet).
    pub last_checkpoint_lsn: u64,
    /// `writer.appended()` when the last checkpoint was written.
    checkpointed_at: u64,
    /// Checkpoints written since open.
    pub checkpoints: u64,
    compaction: Option<Compaction>,
    /// Compaction rounds finished since open.
    pub compactions: u64,
    /// Values copied and committed by compaction since open.
    pub moved: u64,
    /// Segments open readers still read from, with their reader counts: never released.
    pins: BTreeMap<u32, usize>,
    /// `appended()` at the end of the last round that left the log no smaller: eager
    /// compaction stops there until something else is written. (Segments of small copied
    /// values count their BEGIN, PUT and COMMIT records as dead, so they would be planned
    /// again forever; so would segments an export or a reader pins.)
    converged_at: Option<u64>,
    /// Segment holding the last restatement of every table's state (see
    /// `restate_tables_before_release`); `None` since open.
    stated_segment: Option<u32>,
}

impl Lifecycle {
    pub fn new(slots: Vec<SlotNeeds>, seq: u64, last_checkpoint_lsn: u64) -> Self {
        Lifecycle { slots, seq, last_checkpoint_lsn, ..Lifecycle::default() }
    }

    /// Keeps the segments of `chunks` from being released until [`Lifecycle::unpin`].
    pub fn pin(&mut self, chunks: &[ChunkLoc]) {
        for seg in segments_of(chunks) {
            *self.pins.entry(seg).or_insert(0) += 1;
        }
    }

    /// Undoes one [`Lifecycle::pin`] of the same chunks.
    pub fn unpin(&mut self, chunks: &[ChunkLoc]) {
        for seg in segments_of(chunks) {
            if let Some(n) = self.pins.get_mut(&seg) {
                *n -= 1;
                if *n == 0 {
                    // A segment free to go again: compaction may plan it.
                    self.converged_at = None;
                    self.pins.remove(&seg);
                }
            }
        }
    }

    /// Whether anything (an export, a reader) pins a segment.
    pub fn pinned(&self) -> bool {
        !self.pins.is_empty()
    }

    /// The checkpoint slots' files.
    pub fn slot_files(&self) -> Vec<FileId> {
        self.slots.iter().map(|s| s.file).collect()
    }

    /// Forgets the checkpoint slots and hands back their files (an import removes them; the
    /// next checkpoint starts a new slot).
    pub fn take_slot_files(&mut self) -> Vec<FileId> {
        std::mem::take(&mut self.slots).into_iter().map(|s| s.file).collect()
    }

    /// Whether the log grew since the last checkpoint.
    pub fn checkpoint_stale<V: Volume>(&self, log: &Log<V>) -> bool {
        log.writer().appended() > self.checkpointed_at
    }

    /// Writes a checkpoint now: asks the committer to flush, persists the index into the older
    /// of the two checkpoint files, flushes it, then releases segments nothing needs any more.
    ///
    /// Errors: [`Error::Unsupported`] on a single-file store; [`Error::Io`] (op
    /// `"checkpoint"`) when no file is free for a checkpoint slot yet (an OPFS pool refilling);
    /// storage errors. A failed checkpoint leaves the previous one in force.
    pub fn checkpoint<V: Volume>(&mut self, log: &mut Log<V>, index: &mut Index) -> Result<()> {
        self.checkpoint_restating(log, index, true)
    }

    /// A checkpoint of a store an import is about to replace ([`crate::Store`]'s
    /// `install_import`): as [`Life::checkpoint`], but the tables' states are not restated
    /// before the prefix goes, so the log can be left with only a header-only tail segment.
    /// The import brings its own tables; a power cut before it is installed recovers a new,
    /// empty store (its numbers start over, as any new store's).
    pub fn checkpoint_emptied<V: Volume>(&mut self, log: &mut Log<V>, index: &mut Index) -> Result<()> {
        self.checkpoint_restating(log, index, false)
    }

    fn checkpoint_restating<V: Volume>(&mut self, log: &mut Log<V>, index: &mut Index, restate: bool) -> Result<()> {
        if !log.writer().volume().can_grow() {
            return Err(Error::Unsupported { detail: "a single-file store takes no checkpoints".into() });
        }
        if self.write_checkpoint(log, index, &BTreeSet::new(), restate)? {
            Ok(())
        } else {
            Err(Error::io(
                "checkpoint",
                "no file is free for a checkpoint yet (the OPFS pool refills in the background); try again",
            ))
        }
    }

    /// Writes a checkpoint if `checkpoint_bytes` of log have been appended since the last.
    /// Best effort: a failure leaves the previous checkpoint in force and is retried later
    /// (a flush failure is recorded by the committer against the commits it carried).
    pub fn checkpoint_if_due<V: Volume>(&mut self, log: &mut Log<V>, index: &mut Index, settings: &Settings) {
        let every = settings.checkpoint_bytes;
        let w = log.writer();
        if every > 0 && w.volume().can_grow() && !w.is_poisoned() && w.appended() - self.checkpointed_at >= every {
            let _ = self.write_checkpoint(log, index, &BTreeSet::new(), true);
        }
    }

    /// Writes a checkpoint; `Ok(false)` if no file could be had for a new slot. It needs every
    /// segment from the oldest record of a live value (and from the replay point, and from the
    /// BEGIN of every transaction that deletes and commits in what is kept:
    /// [`Log::chain_floor`]) on, except `releasing`: a finished compaction round's victims,
    /// which no live value touches any more. With `restate`, the tables' states are restated
    /// first when the prefix goes past the last restatement (`restate_tables_before_release`;
    /// a compaction round's checkpoints too: its own statement, written at its start, may lie
    /// in the prefix they release by then). So outside compaction only a prefix
    /// of the log is ever released, and a delete released with it can only hide values
    /// released too: a plain delete hides values written before it, a transaction's the
    /// values committed before its COMMIT, which is released with it. A full scan of what
    /// remains (the fallback when no checkpoint reads) rebuilds the same state.
    ///
    /// The committer flushes first, so the index holds every commit below the log's end: the
    /// checkpoint's `index_lsn`. Records of transactions still open lie between the replay
    /// point and there; replay re-reads them but applies nothing below `index_lsn`.
    fn write_checkpoint<V: Volume>(
        &mut self,
        log: &mut Log<V>,
        index: &mut Index,
        releasing: &BTreeSet<u32>,
        restate: bool,
    ) -> Result<bool> {
        log.flush(index)?;
        if restate {
            self.restate_tables_before_release(log, index)?;
        }
        let w = log.writer();
        let index_lsn = w.next_lsn();
        let (replay_from, replay_lsn) = log.oldest_open().unwrap_or((w.tail(), index_lsn));
        let from_seg = loc_segment(replay_from);
        let keep_from = keep_from(log, index);
        let needed: Vec<u32> =
            w.segments().range(keep_from..).map(|(&s, _)| s).filter(|s| !releasing.contains(s)).collect();

        // The slot holding the older checkpoint (or a new one while there are fewer than two).
        let slot = if self.slots.len() < 2 {
            if !log.writer().volume().has_free() {
                return Ok(false);
            }
            let file = log.writer_mut().volume_mut().create()?;
            self.slots.push(SlotNeeds { file, ..SlotNeeds::default() });
            self.slots.len() - 1
        } else {
            self.slots.iter().enumerate().min_by_key(|(_, s)| s.seq).map_or(0, |(i, _)| i)
        };
        let Some(id) = self.slots.get(slot).map(|s| s.file) else {
            return Err(Error::io("checkpoint", "no checkpoint slot"));
        };
        let seq = self.seq + 1;
        let header = CheckpointHeader {
            seq,
            replay_from,
            replay_lsn,
            next_txn: log.next_txn(),
            index_lsn,
            ..Default::default()
        };
        // The slot's old checkpoint is overwritten: from here on only the other one counts.
        if let Some(s) = self.slots.get_mut(slot) {
            s.seq = 0;
        }
        let file = log.writer_mut().volume_mut().file_mut(id)?;
        let run = checkpoint::write(file, header, &needed, index)?;
        index.rebase(run);
        if let Some(s) = self.slots.get_mut(slot) {
            *s = SlotNeeds { file: id, seq, replay_segment: from_seg, segments: needed };
        }
        self.seq = seq;
        self.last_checkpoint_lsn = replay_lsn;
        self.checkpointed_at = log.writer().appended();
        self.checkpoints += 1;

        // Segments that neither checkpoint needs any more: give them back. (The other slot's
        // needs keep a fallback possible should this checkpoint ever fail to read.)
        let garbage: Vec<u32> = log
            .writer()
            .segments()
            .keys()
            .copied()
            .filter(|&s| !self.slots.iter().any(|n| n.needs(s)) && !self.pins.contains_key(&s))
            .collect();
        for seg in garbage {
            log.writer_mut().release_segment(seg)?;
        }
        log.writer_mut().release_spare();
        if let Some(&first) = log.writer().segments().keys().next() {
            log.forget_chains_below(first);
        }
        Ok(true)
    }

    /// Before a checkpoint that lets the log's prefix go (segments below the oldest live value
    /// and the replay point): the TABLE records there may be the only statement of a table's
    /// name, marks and next sequence number, and a full scan of what remains (the fallback
    /// when no checkpoint reads) must still find them. So every table's state is restated in
    /// the tail first, unless the last restatement still lies in what is kept. Costs one
    /// small record per table (a record header, [`crate::format::TABLE_PAYLOAD_LEN`] bytes and its name) each
    /// time the prefix moves past it; nothing for a store whose only table is the default one,
    /// untouched (no write numbered, no mark).
    fn restate_tables_before_release<V: Volume>(&mut self, log: &mut Log<V>, index: &mut Index) -> Result<()> {
        let keep_from = keep_from(log, index);
        let releases_prefix = log.writer().segments().keys().next().is_some_and(|&s| s < keep_from);
        let stated_in_kept = self.stated_segment.is_some_and(|s| s >= keep_from);
        if !releases_prefix || stated_in_kept {
            return Ok(());
        }
        // Every named table, and the default one once it has numbered a write or holds a
        // mark: its numbers must not start over either. And the highest id's drop, if it was
        // dropped: a full scan must not give that id again.
        let states = index.tables().statement(false);
        if states.is_empty() {
            return Ok(());
        }
        // The segment the restatement starts in: its records may run into the next ones (the
        // tail fills), and it is kept whole only while this one is.
        let first = log.writer().tail_segment();
        for r in &states {
            log.table_copy(r)?;
        }
        // Counted once written out: a full disk's rollback cuts what is not.
        log.flush(index)?;
        self.stated_segment = Some(first);
        Ok(())
    }

    /// After a commit: one compaction step if compaction is under way or due (never more than
    /// one chunk copy, so no put waits longer than that), then a checkpoint if one is due.
    pub fn maintain<V: Volume>(&mut self, log: &mut Log<V>, index: &mut Index, settings: &Settings) {
        if self.compaction.is_some() || compaction_due(log, index, settings) {
            let _ = self.compact_step(log, index, settings, false);
        }
        self.checkpoint_if_due(log, index, settings);
    }

    /// Runs compaction to the end: every sealed segment holding dead bytes is emptied and
    /// released. Returns the rounds run (0 if there was nothing to do).
    pub fn compact<V: Volume>(&mut self, log: &mut Log<V>, index: &mut Index, settings: &Settings) -> Result<u64> {
        let mut rounds = 0;
        loop {
            match self.compact_step(log, index, settings, true)? {
                CompactStep::Idle => return Ok(rounds),
                CompactStep::Progress => {}
                CompactStep::Done => rounds += 1,
            }
            if rounds > 0 && self.compaction.is_none() {
                return Ok(rounds);
            }
        }
    }

    /// One step of compaction: plans a round if none is under way and compaction is due (or,
    /// `eager`, there are any dead bytes in sealed segments), else copies one chunk.
    pub fn compact_step<V: Volume>(
        &mut self,
        log: &mut Log<V>,
        index: &mut Index,
        settings: &Settings,
        eager: bool,
    ) -> Result<CompactStep> {
        log.writable()?;
        if self.compaction.is_none() {
            if !log.writer().volume().can_grow() || !(eager || compaction_due(log, index, settings)) {
                return Ok(CompactStep::Idle);
            }
            if self.converged_at == Some(log.writer().appended()) {
                return Ok(CompactStep::Idle);
            }
            let mut planned = plan(log, index, settings, eager, &self.pins)?;
            // Queued commits are not in the index yet: a segment they lie in looks dead. When a
            // round is to begin, they are applied first and the plan made again, so that no
            // such segment becomes a victim (the round would copy its values and then fail at
            // its end: "still in use"). Only then: a flush here for every commit while nothing
            // can be compacted would undo group commit.
            if planned.is_some() && log.queued() > 0 {
                log.flush(index)?;
                planned = plan(log, index, settings, eager, &self.pins)?;
            }
            match planned {
                Some(c) => self.compaction = Some(c),
                None => return Ok(CompactStep::Idle),
            }
        }
        let Some(mut c) = self.compaction.take() else { return Ok(CompactStep::Idle) };
        match self.advance(&mut c, log, index, settings) {
            Ok(CompactStep::Done) => {
                self.compactions += 1;
                let after = log.writer().log_bytes();
                self.converged_at = (after >= c.log_bytes).then(|| log.writer().appended());
                Ok(CompactStep::Done)
            }
            Ok(step) => {
                self.compaction = Some(c);
                Ok(step)
            }
            Err(e) => {
                // The round is abandoned; a later one plans afresh from what is committed.
                if let Some(copy) = c.copy.take() {
                    let _ = log.abort(copy.txn);
                }
                Err(e)
            }
        }
    }

    /// Moves the round forward by one chunk, one skipped value, or the closing steps.
    fn advance<V: Volume>(
        &mut self,
        c: &mut Compaction,
        log: &mut Log<V>,
        index: &mut Index,
        settings: &Settings,
    ) -> Result<CompactStep> {
        if !c.stated {
            // Every table's state, restated before the first copy: a full scan of what remains
            // after the victims go finds every table's name, marks and next sequence number
            // ahead of the copies of its values (copies take no numbers, and a write to a
            // table not yet stated would not land). Queued group commits first: a mark still
            // in the committer's queue is not in the index yet, and a statement without it,
            // written after it, would outlive it once the victims go.
            log.flush(index)?;
            let states = index.tables().statement(true);
            let first = log.writer().tail_segment();
            for r in &states {
                log.table_copy(r)?;
            }
            // Once written out it is the last restatement: the round's checkpoints restate
            // again only if they release the segment it starts in. (Not before: a full disk's
            // rollback cuts what is not written out yet, and a statement cut back states
            // nothing.)
            log.flush(index)?;
            self.stated_segment = Some(first);
            c.stated = true;
        }
        loop {
            // A value overwritten or deleted since its copy began: its old records are dead, and
            // their segments may be released already (by a checkpoint, a dead prefix). The
            // copy is stale: it stops here, not at a read of a segment that is gone.
            let stale = c.copy.as_ref().is_some_and(|copy| index.get(&copy.key).is_none_or(|e| e.lsn != copy.lsn));
            if let Some(copy) = c.copy.take_if(|_| stale) {
                log.abort(copy.txn)?;
                return Ok(CompactStep::Progress);
            }
            if let Some(copy) = &mut c.copy {
                if let Some(&chunk) = copy.chunks.get(copy.next) {
                    copy.next += 1;
                    let txn = copy.txn;
                    let mut buf = Vec::with_capacity(chunk.len as usize);
                    log.read_chunk(&chunk, &mut buf)?;
                    log.txn_chunk(txn, &buf, settings.chunk_size)?;
                    return Ok(CompactStep::Progress);
                }
                let Some(copy) = c.copy.take() else { continue };
                // Queued commits are not in the index yet: the committer flushes them first,
                // so a copy never lands after (and so overrides) a newer write.
                log.flush(index)?;
                if index.get(&copy.key).is_some_and(|e| e.lsn == copy.lsn) {
                    // Relaxed: the round's flush makes every copy durable before any victim
                    // is released.
                    log.commit(copy.txn, Durability::Relaxed, None, false, index)?;
                    self.moved += 1;
                } else {
                    log.abort(copy.txn)?; // overwritten or deleted meanwhile: the copy is stale
                }
                return Ok(CompactStep::Progress);
            }
            let Some(key) = c.queue.pop() else { break };
            let Some(entry) = index.get(&key) else { continue };
            if !touches(entry.span, &c.victims) {
                continue; // rewritten elsewhere meanwhile
            }
            let (lsn, chunks, string_key) = (entry.lsn, entry.chunks.clone(), entry.string_key);
            let txn = log.begin()?;
            if let Err(e) = log.txn_put(txn, &key, string_key) {
                let _ = log.abort(txn);
                return Err(e);
            }
            c.copy = Some(Copying { key, lsn, chunks, next: 0, txn });
        }
        // As for copies: no tombstone may land after a queued put of its key.
        log.flush(index)?;
        for key in std::mem::take(&mut c.tombstones) {
            if !index.contains(&key) {
                log.tombstone(&key)?;
            }
        }
        // The drops the victims held, restated past them (as tombstones are).
        for t in std::mem::take(&mut c.dropped) {
            if index.tables().get(t).is_none() {
                log.table_copy(&TableRecord { op: TABLE_OP_DROP, table: t, ..TableRecord::default() })?;
            }
        }
        let still_used = index.spans().any(|(_, span)| touches(span, &c.victims));
        if still_used {
            return Err(Error::io("compact", "a victim segment is still in use"));
        }
        // Two checkpoints (each flushes first, so the copies and tombstones are durable before
        // any victim goes): after the second, neither slot needs the victims, which the second
        // checkpoint releases.
        for _ in 0..2 {
            if !self.write_checkpoint(log, index, &c.victims, true)? {
                return Err(Error::io("compact", "no file is free for a checkpoint yet; try again"));
            }
        }
        // The deletes of the chains the victims cut are durable at the log's end now: those
        // chains need not be kept whole any more.
        log.forget_chains(&c.settles);
        Ok(CompactStep::Done)
    }
}

/// The first segment a checkpoint written now needs: that of the oldest record of a live value,
/// or of the replay point (the oldest open transaction's BEGIN, else the tail) if earlier, or
/// lower still to keep the chain of every COMMIT kept whole ([`Log::chain_floor`]).
fn keep_from<V: Volume>(log: &Log<V>, index: &Index) -> u32 {
    let from_seg = log.oldest_open().map_or(log.writer().tail_segment(), |(at, _)| loc_segment(at));
    log.chain_floor(index.first_live_segment().map_or(from_seg, |s| s.min(from_seg)))
}

/// Fraction of the log's bytes that no live value's records use (0.0..=1.0).
pub(crate) fn dead_ratio<V: Volume>(log: &Log<V>, index: &Index) -> f64 {
    let total = log.writer().log_bytes();
    if total == 0 {
        return 0.0;
    }
    // Values of queued commits and open transactions are not in the index yet, but not dead.
    let live = index.live_record_bytes() + log.pending_value_bytes();
    1.0 - (live as f64 / total as f64).min(1.0)
}

fn compaction_due<V: Volume>(log: &Log<V>, index: &Index, settings: &Settings) -> bool {
    let w = log.writer();
    w.volume().can_grow() && w.segments().len() > 2 && dead_ratio(log, index) >= settings.compaction_ratio
}

/// Chooses the victims and what must move out of them.
fn plan<V: Volume>(
    log: &mut Log<V>,
    index: &Index,
    settings: &Settings,
    eager: bool,
    pins: &BTreeMap<u32, usize>,
) -> Result<Option<Compaction>> {
    let w = log.writer();
    // Sealed segments that hold no record of a transaction still open.
    let open_from = log.oldest_open().map_or(u32::MAX, |(at, _)| loc_segment(at));
    let tail_seg = w.tail_segment();
    // Asked for explicitly, compaction takes any segment at least 5% dead.
    let threshold = if eager { EAGER_DEAD_FRACTION } else { settings.compaction_ratio };
    let live = index.segment_live();
    let mut victims = BTreeSet::new();
    for &seg in w.segments().keys() {
        // A pinned segment (an open reader's, an export's) cannot be released: compacting it
        // would copy its values for nothing, and plan it again every round.
        if seg >= tail_seg || seg >= open_from || pins.contains_key(&seg) {
            continue;
        }
        let size = w.segment_len(seg).saturating_sub(FILE_HEADER_LEN as u64);
        let used = live.get(&seg).copied().unwrap_or(0);
        let dead = size.saturating_sub(used);
        if size > 0 && dead > 0 && dead as f64 / size as f64 >= threshold {
            victims.insert(seg);
        }
    }
    if victims.is_empty() {
        return Ok(None);
    }
    let queue: Vec<Vec<u8>> =
        index.spans().filter(|&(_, span)| touches(span, &victims)).map(|(k, _)| k.to_vec()).collect();
    let oldest_kept = w.segments().keys().find(|s| !victims.contains(s)).copied();
    let mut tombstones = BTreeSet::new();
    let mut dropped = BTreeSet::new();
    // Keys of dropped tables need none: their drop hides them.
    let live_table = |k: &Vec<u8>| index.tables().get(crate::format::split_ikey(k).0).is_some();
    for &seg in &victims {
        let deleted = deleted_keys(log, seg)?;
        // A plain delete (or drop) only hides values written before it: only a surviving
        // older segment could hold one. A transaction's DELETE takes effect at its COMMIT, so
        // it hides the puts of its key committed before that, which any segment kept may
        // hold (a full scan drops a COMMIT whose chain a round released).
        let older_kept = oldest_kept.is_some_and(|o| o < seg);
        let keys = deleted.in_txn.into_iter().chain(deleted.plain.into_iter().filter(|_| older_kept));
        tombstones.extend(keys.filter(|k| !index.contains(k) && live_table(k)));
        if older_kept {
            dropped.extend(deleted.drops.into_iter().filter(|t| index.tables().get(*t).is_none()));
        }
    }
    // A victim anywhere in the chain of a transaction that deletes (its BEGIN, its COMMIT, a
    // record between) makes a full scan drop that COMMIT, with the DELETEs it kept: the
    // transactions' DELETEs of every segment of such a chain are written again too. The
    // chain floors (`Log::chain_floor`) give the ranges; a sealed COMMIT segment's range is
    // then settled and forgotten, so the prefix may go.
    // Floors recovery could not know (COMMITs below its replay point): read them now, once,
    // rather than restate every delete of that part of the log round after round.
    if let Some((first, last)) = log.unknown_chains().filter(|&(f, l)| victims.range(f..=l).next().is_some()) {
        let found = chains_in(log, first, last)?;
        log.resolve_unknown_chains(&found);
    }
    let w = log.writer();
    let cut = log.chains_meeting(&victims);
    let ranges: BTreeSet<u32> = cut
        .iter()
        .flat_map(|&(c, f)| w.segments().range(f..=c).map(|(&s, _)| s))
        .filter(|s| !victims.contains(s))
        .collect();
    for seg in ranges {
        tombstones.extend(deleted_keys(log, seg)?.in_txn.into_iter().filter(|k| !index.contains(k) && live_table(k)));
    }
    let settles = cut.iter().map(|&(c, _)| c).filter(|&c| c < tail_seg).collect();
    Ok(Some(Compaction {
        victims,
        queue,
        tombstones: tombstones.into_iter().collect(),
        dropped: dropped.into_iter().collect(),
        settles,
        stated: false,
        copy: None,
        log_bytes: w.log_bytes(),
    }))
}

/// Calls `each` with the location (in segment `seg`) and header of every record of that
/// segment, in order, up to the first that does not read or decode (the torn tail, or the
/// writer's tail being written).
fn each_record<V: Volume>(
    log: &Log<V>,
    seg: u32,
    mut each: impl FnMut(&<V as Volume>::File, u64, &RecordHeader) -> Result<()>,
) -> Result<()> {
    let w = log.writer();
    let Some(&id) = w.segments().get(&seg) else { return Ok(()) };
    let file = w.volume().file(id)?;
    let size = file.size()?;
    let mut at = FILE_HEADER_LEN as u64;
    let mut hb = [0u8; RECORD_HEADER_LEN];
    while at + RECORD_HEADER_LEN as u64 <= size && read_exact_at(file, &mut hb, at)? {
        let Ok(h) = RecordHeader::decode(&hb) else { break };
        each(file, at, &h)?;
        at += h.record_len();
    }
    Ok(())
}

/// The chains of the transactions that delete, COMMIT in segments `first..=last` and began
/// in an earlier one there: (COMMIT segment, BEGIN segment), read from the record headers.
/// A transaction whose BEGIN is gone had its chain cut, and its deletes restated, by the
/// compaction round that took it.
fn chains_in<V: Volume>(log: &Log<V>, first: u32, last: u32) -> Result<Vec<(u32, u32)>> {
    let segments: Vec<u32> = log.writer().segments().range(first..=last).map(|(&s, _)| s).collect();
    let mut begins: HashMap<u64, u32> = HashMap::new();
    let mut deleting: HashSet<u64> = HashSet::new();
    let mut found = Vec::new();
    for seg in segments {
        each_record(log, seg, |_, _, h| {
            match h.kind {
                Kind::Begin => {
                    begins.insert(h.txn, seg);
                }
                Kind::Delete => {
                    deleting.insert(h.txn);
                }
                Kind::Commit => {
                    if let Some(begin) = begins.remove(&h.txn).filter(|&b| b < seg && deleting.contains(&h.txn)) {
                        found.push((seg, begin));
                    }
                    deleting.remove(&h.txn);
                }
                Kind::Abort => {
                    begins.remove(&h.txn);
                    deleting.remove(&h.txn);
                }
                _ => {}
            }
            Ok(())
        })?;
    }
    Ok(found)
}

/// What the records of one segment delete (read from their headers and keys).
#[derive(Default)]
struct Deleted {
    /// Internal keys of plain deletes (DELETE_ONE).
    plain: Vec<Vec<u8>>,
    /// Internal keys of transactions' DELETEs (committed, aborted or open alike).
    in_txn: Vec<Vec<u8>>,
    /// Tables that TABLE records drop.
    drops: Vec<u32>,
}

/// What the records of segment `seg` delete.
fn deleted_keys<V: Volume>(log: &Log<V>, seg: u32) -> Result<Deleted> {
    let mut out = Deleted::default();
    each_record(log, seg, |file, at, h| {
        if matches!(h.kind, Kind::Delete | Kind::DeleteOne | Kind::Table) {
            let mut payload = vec![0u8; h.len as usize];
            if !read_exact_at(file, &mut payload, at + RECORD_HEADER_LEN as u64)? {
                return Ok(());
            }
            if h.kind == Kind::Table {
                if let Some(r) = TableRecord::decode(&payload).filter(|r| r.op == TABLE_OP_DROP) {
                    out.drops.push(r.table);
                }
            } else if let Some(ik) = split_seq(h.flags, &payload).and_then(|(_, key)| ikey_from_record(h.flags, key)) {
                if h.kind == Kind::Delete {
                    out.in_txn.push(ik);
                } else {
                    out.plain.push(ik);
                }
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// Whether a value whose records span segments `span` has any record in one of `segments`.
fn touches(span: (u32, u32), segments: &BTreeSet<u32>) -> bool {
    segments.range(span.0..=span.1).next().is_some()
}

/// The distinct segments a value's chunks lie in.
fn segments_of(chunks: &[ChunkLoc]) -> BTreeSet<u32> {
    chunks.iter().map(|c| loc_segment(c.record)).collect()
}
