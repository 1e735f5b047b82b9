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

use std::collections::BTreeSet;

use crate::error::{Error, Result};
use crate::format::{loc_segment, CheckpointHeader, Kind, RecordHeader, FILE_HEADER_LEN, RECORD_HEADER_LEN};
use crate::index::ChunkLoc;
use crate::storage::{read_exact_at, Storage, Volume};
use crate::store::{Durability, Store, TxnId};
use crate::wal::checkpoint;
use crate::wal::recovery::SlotNeeds;

/// Dead fraction a segment needs to be taken by an explicit [`Store::compact`]: below it, the
/// copy would cost more than it frees.
const EAGER_DEAD_FRACTION: f64 = 0.05;

/// A compaction round in progress.
#[derive(Debug)]
pub(crate) struct Compaction {
    /// Segments being emptied.
    victims: BTreeSet<u32>,
    /// Keys whose values touch a victim, still to copy.
    queue: Vec<Vec<u8>>,
    /// Keys deleted in a victim that must stay deleted.
    tombstones: Vec<Vec<u8>>,
    /// The value being copied.
    copy: Option<Copying>,
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

/// What one [`Store::compact_step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactStep {
    /// Nothing to compact.
    Idle,
    /// Copied one chunk (or skipped a value that changed meanwhile); call again.
    Progress,
    /// Finished a round: the victims' space is released.
    Done,
}

impl<V: Volume> Store<V> {
    /// Fraction of the log's bytes that no live value's records use (0.0..=1.0).
    pub fn dead_ratio(&self) -> f64 {
        let total = self.writer.log_bytes();
        if total == 0 {
            return 0.0;
        }
        1.0 - (self.index.live_record_bytes() as f64 / total as f64).min(1.0)
    }

    /// Writes a checkpoint now: syncs, persists the index into the older of the two checkpoint
    /// files, flushes it, then releases segments nothing needs any more.
    ///
    /// Errors: [`Error::Unsupported`] on a single-file store; storage errors. A failed
    /// checkpoint leaves the previous one in force.
    pub fn checkpoint(&mut self) -> Result<()> {
        self.writable()?;
        if !self.writer.volume().can_grow() {
            return Err(Error::Unsupported { detail: "a single-file store takes no checkpoints".into() });
        }
        self.sync()?;
        self.write_checkpoint(&BTreeSet::new())
    }

    /// Writes a checkpoint. It needs every segment from the oldest record of a live value (and
    /// from the replay point) on, except `releasing`: a finished compaction round's victims,
    /// which no live value touches any more. So outside compaction only a prefix of the log is
    /// ever released, and a delete released with it can only hide values released too: a full
    /// scan of what remains (the fallback when no checkpoint reads) rebuilds the same state.
    fn write_checkpoint(&mut self, releasing: &BTreeSet<u32>) -> Result<()> {
        let (replay_from, replay_lsn) =
            self.txns.values().map(|t| t.begin).min().unwrap_or((self.writer.tail(), self.writer.next_lsn()));
        let from_seg = loc_segment(replay_from);
        let keep_from = self.index.first_live_segment().map_or(from_seg, |s| s.min(from_seg));
        let needed: Vec<u32> =
            self.writer.segments().range(keep_from..).map(|(&s, _)| s).filter(|s| !releasing.contains(s)).collect();

        // The slot holding the older checkpoint (or a new one while there are fewer than two).
        let slot = if self.checkpoint_slots.len() < 2 {
            if !self.writer.volume().has_free() {
                // An OPFS pool run dry for a moment (it refills in the background): the
                // checkpoint waits for the next chance; the log alone stays complete.
                return Ok(());
            }
            let file = self.writer.volume_mut().create()?;
            self.checkpoint_slots.push(SlotNeeds { file, ..SlotNeeds::default() });
            self.checkpoint_slots.len() - 1
        } else {
            self.checkpoint_slots.iter().enumerate().min_by_key(|(_, s)| s.seq).map_or(0, |(i, _)| i)
        };
        let Some(id) = self.checkpoint_slots.get(slot).map(|s| s.file) else {
            return Err(Error::io("checkpoint", "no checkpoint slot"));
        };
        let seq = self.checkpoint_seq + 1;
        let header = CheckpointHeader { seq, replay_from, replay_lsn, next_txn: self.next_txn, ..Default::default() };
        // The slot's old checkpoint is overwritten: from here on only the other one counts.
        if let Some(s) = self.checkpoint_slots.get_mut(slot) {
            s.seq = 0;
        }
        let file = self.writer.volume_mut().file_mut(id)?;
        let run = checkpoint::write(file, header, &needed, &self.index)?;
        self.index.rebase(run);
        if let Some(s) = self.checkpoint_slots.get_mut(slot) {
            *s = SlotNeeds { file: id, seq, replay_segment: from_seg, segments: needed.clone() };
        }
        self.checkpoint_seq = seq;
        self.last_checkpoint_lsn = replay_lsn;
        self.checkpointed_at = self.writer.appended();
        self.checkpoints += 1;

        // Segments that neither checkpoint needs any more: give them back. (The other slot's
        // needs keep a fallback possible should this checkpoint ever fail to read.)
        let slots = &self.checkpoint_slots;
        let pins = &self.pins;
        let garbage: Vec<u32> = self
            .writer
            .segments()
            .keys()
            .copied()
            .filter(|&s| !slots.iter().any(|n| n.needs(s)) && !pins.contains_key(&s))
            .collect();
        for seg in garbage {
            self.writer.release_segment(seg)?;
        }
        Ok(())
    }

    /// Writes a checkpoint if `checkpoint_bytes` of log have been appended since the last.
    /// Best effort: a failure leaves the previous checkpoint in force and is retried later.
    pub(crate) fn checkpoint_if_due(&mut self) {
        let every = self.options.checkpoint_bytes;
        if every > 0
            && self.writer.volume().can_grow()
            && !self.writer.is_poisoned()
            && self.writer.appended() - self.checkpointed_at >= every
        {
            let _ = self.write_checkpoint(&BTreeSet::new());
        }
    }

    /// After a commit: one compaction step if compaction is under way or due. Never more than
    /// one chunk copy, so no put waits longer than that.
    pub(crate) fn maintain(&mut self) {
        if self.compaction.is_some() || self.compaction_due() {
            let _ = self.compact_step_inner(false);
        }
    }

    fn compaction_due(&self) -> bool {
        self.writer.volume().can_grow()
            && self.writer.segments().len() > 2
            && self.dead_ratio() >= self.options.compaction_ratio
    }

    /// Runs compaction to the end: every sealed segment holding dead bytes is emptied and
    /// released. Returns the rounds run (0 if there was nothing to do).
    pub fn compact(&mut self) -> Result<u64> {
        let mut rounds = 0;
        loop {
            match self.compact_step_inner(true)? {
                CompactStep::Idle => return Ok(rounds),
                CompactStep::Progress => {}
                CompactStep::Done => rounds += 1,
            }
            if rounds > 0 && self.compaction.is_none() {
                return Ok(rounds);
            }
        }
    }

    /// One step of compaction: plans a round if none is under way and compaction is due (or
    /// there are any dead bytes in sealed segments), else copies one chunk.
    pub fn compact_step(&mut self) -> Result<CompactStep> {
        self.compact_step_inner(true)
    }

    fn compact_step_inner(&mut self, eager: bool) -> Result<CompactStep> {
        self.writable()?;
        if self.compaction.is_none() {
            if !self.writer.volume().can_grow() || !(eager || self.compaction_due()) {
                return Ok(CompactStep::Idle);
            }
            match self.plan(eager)? {
                Some(c) => self.compaction = Some(c),
                None => return Ok(CompactStep::Idle),
            }
        }
        let Some(mut c) = self.compaction.take() else { return Ok(CompactStep::Idle) };
        let r = self.advance(&mut c);
        match r {
            Ok(CompactStep::Done) => {
                self.compactions += 1;
                Ok(CompactStep::Done)
            }
            Ok(step) => {
                self.compaction = Some(c);
                Ok(step)
            }
            Err(e) => {
                if let Some(copy) = c.copy.take() {
                    let _ = self.abort(copy.txn);
                }
                Err(e)
            }
        }
    }

    /// Chooses the victims and what must move out of them.
    fn plan(&mut self, eager: bool) -> Result<Option<Compaction>> {
        // Sealed segments that hold no record of a transaction still open.
        let open_from = self.txns.values().map(|t| loc_segment(t.begin.0)).min().unwrap_or(u32::MAX);
        let tail_seg = self.writer.tail_segment();
        // Asked for explicitly, compaction takes any segment at least 5% dead.
        let threshold = if eager { EAGER_DEAD_FRACTION } else { self.options.compaction_ratio };
        let live = self.index.segment_live();
        let mut victims = BTreeSet::new();
        for &seg in self.writer.segments().keys() {
            if seg >= tail_seg || seg >= open_from {
                continue;
            }
            let size = self.writer.segment_len(seg).saturating_sub(FILE_HEADER_LEN as u64);
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
            self.index.spans().filter(|&(_, span)| touches(span, &victims)).map(|(k, _)| k.to_vec()).collect();
        let oldest_kept = self.writer.segments().keys().find(|s| !victims.contains(s)).copied();
        let mut tombstones = BTreeSet::new();
        for &seg in &victims {
            // Only a surviving older segment could hold a value the delete must keep hidden.
            if oldest_kept.is_some_and(|o| o < seg) {
                tombstones.extend(self.deleted_keys(seg)?.into_iter().filter(|k| !self.index.contains(k)));
            }
        }
        Ok(Some(Compaction { victims, queue, tombstones: tombstones.into_iter().collect(), copy: None }))
    }

    /// Keys deleted by records of segment `seg` (read from its record headers and keys).
    fn deleted_keys(&self, seg: u32) -> Result<Vec<Vec<u8>>> {
        let Some(&id) = self.writer.segments().get(&seg) else { return Ok(Vec::new()) };
        let file = self.writer.volume().file(id)?;
        let size = file.size()?;
        let mut keys = Vec::new();
        let mut at = FILE_HEADER_LEN as u64;
        let mut hb = [0u8; RECORD_HEADER_LEN];
        while at + RECORD_HEADER_LEN as u64 <= size && read_exact_at(file, &mut hb, at)? {
            let Ok(h) = RecordHeader::decode(&hb) else { break };
            if matches!(h.kind, Kind::Delete | Kind::DeleteOne) {
                let mut key = vec![0u8; h.len as usize];
                if !read_exact_at(file, &mut key, at + RECORD_HEADER_LEN as u64)? {
                    break;
                }
                keys.push(key);
            }
            at += h.record_len();
        }
        Ok(keys)
    }

    /// Moves the round forward by one chunk, one skipped value, or the closing steps.
    fn advance(&mut self, c: &mut Compaction) -> Result<CompactStep> {
        loop {
            if let Some(copy) = &mut c.copy {
                if let Some(&chunk) = copy.chunks.get(copy.next) {
                    copy.next += 1;
                    let txn = copy.txn;
                    let mut buf = Vec::with_capacity(chunk.len as usize);
                    self.read_chunk(&chunk, &mut buf)?;
                    self.txn_chunk(txn, &buf)?;
                    return Ok(CompactStep::Progress);
                }
                let Some(copy) = c.copy.take() else { continue };
                // Group commits waiting for their flush are not in the index yet: flush them
                // first, so a copy never lands after (and so overrides) a newer write.
                self.sync()?;
                if self.index.get(&copy.key).is_some_and(|e| e.lsn == copy.lsn) {
                    self.commit_compaction(copy.txn)?;
                } else {
                    self.abort(copy.txn)?; // overwritten or deleted meanwhile: the copy is stale
                }
                return Ok(CompactStep::Progress);
            }
            let Some(key) = c.queue.pop() else { break };
            let Some(entry) = self.index.get(&key) else { continue };
            if !touches(entry.span, &c.victims) {
                continue; // rewritten elsewhere meanwhile
            }
            let (lsn, chunks, string_key) = (entry.lsn, entry.chunks.clone(), entry.string_key);
            let txn = self.begin()?;
            self.txn_put(txn, &key, string_key)?;
            c.copy = Some(Copying { key, lsn, chunks, next: 0, txn });
        }
        // As for copies: no tombstone may land after a queued put of its key.
        self.sync()?;
        for key in std::mem::take(&mut c.tombstones) {
            if !self.index.contains(&key) {
                self.write_tombstone(&key)?;
            }
        }
        // The copies and tombstones are durable in the checkpoint's sync; then the victims go.
        self.sync()?;
        let still_used = self.index.spans().any(|(_, span)| touches(span, &c.victims));
        if still_used {
            return Err(Error::io("compact", "a victim segment is still in use"));
        }
        // Two checkpoints: after the second, neither slot needs the victims, which the
        // second checkpoint releases.
        self.write_checkpoint(&c.victims)?;
        self.write_checkpoint(&c.victims)?;
        Ok(CompactStep::Done)
    }

    fn commit_compaction(&mut self, txn: TxnId) -> Result<()> {
        // Relaxed: the round's sync makes every copy durable before any victim is released.
        self.commit_quiet(txn, Durability::Relaxed).map(drop)
    }
}

/// Whether a value whose records span segments `span` has any record in one of `segments`.
fn touches(span: (u32, u32), segments: &BTreeSet<u32>) -> bool {
    segments.range(span.0..=span.1).next().is_some()
}
