//! The key-value store: transactions over the log, the index, group commit.
//!
//! A value is visible only once its COMMIT is written and, for strict durability, flushed.
//! Several transactions may be open at once; their records interleave in the log, so a
//! 1 GiB upload never blocks a 100-byte put. Checkpoints and compaction live in
//! [`crate::lifecycle`].

use std::collections::HashMap;

use crc32fast::Hasher;

use crate::error::{Error, Result};
use crate::format::MAX_SEGMENT_LEN;
use crate::format::{CommitPayload, Kind, FLAG_STRING_KEY, MAX_CHUNK_LEN, MAX_KEY_LEN};
use crate::index::{ChunkLoc, Entry, Index, KeyInfo, KeyRange, Op};
use crate::lifecycle::Compaction;
use crate::storage::Volume;
use crate::wal::recovery::{recover, RecoveryMode, RecoveryReport, SlotNeeds};
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
    /// crash may lose it (never half of it).
    Relaxed,
    /// Strict, but the flush is shared: the commit is queued and becomes durable and visible
    /// at the next [`Store::sync`] (group commit). Callers acknowledge after that `sync`.
    Group,
}

/// Store configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Largest CHUNK payload, bytes; large values are split into chunks of this size.
    /// Default 1 MiB (UnisonDB's default); 1..=64 MiB.
    pub chunk_size: usize,
    /// Records of at least this many bytes bypass the batch buffer and are written straight to
    /// storage (FlintDB's `FLINTDB_WAL_DIRECT_WRITE_THRESHOLD`). Default 64 KiB.
    pub direct_write_threshold: usize,
    /// The batch buffer is written out when it holds this many bytes. Default 1 MiB.
    pub batch_bytes: usize,
    /// What recovery does with an invalid record.
    pub recovery_mode: RecoveryMode,
    /// A segment is sealed and the next begun when a record would carry it past this size,
    /// bytes. Default 64 MiB. Ignored on a single-file store.
    pub segment_size: u64,
    /// A checkpoint is written at the first sync after this many bytes of log since the last
    /// one (and at close), bytes. Default 64 MiB. 0 disables automatic checkpoints.
    pub checkpoint_bytes: u64,
    /// Compaction starts by itself when dead bytes make up at least this fraction of the log
    /// (0.0..=1.0; default 0.5) and the log spans more than two segments. Each commit then
    /// copies at most one chunk, so no put waits for more than one chunk write.
    pub compaction_ratio: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            chunk_size: 1 << 20,
            direct_write_threshold: 64 << 10,
            batch_bytes: 1 << 20,
            recovery_mode: RecoveryMode::default(),
            segment_size: 64 << 20,
            checkpoint_bytes: 64 << 20,
            compaction_ratio: 0.5,
        }
    }
}

impl Options {
    /// Checks the ranges; errors name the field.
    pub fn validate(&self) -> Result<()> {
        if self.chunk_size == 0 || self.chunk_size > MAX_CHUNK_LEN {
            return Err(Error::invalid(
                "chunkSize",
                format!("must be 1..={MAX_CHUNK_LEN} bytes, got {}", self.chunk_size),
            ));
        }
        if self.direct_write_threshold == 0 {
            return Err(Error::invalid("directWriteThreshold", "must be at least 1 byte"));
        }
        if self.batch_bytes == 0 || self.batch_bytes > MAX_CHUNK_LEN {
            return Err(Error::invalid("batchBytes", format!("must be 1..={MAX_CHUNK_LEN} bytes")));
        }
        if self.segment_size < 4096 || self.segment_size > MAX_SEGMENT_LEN / 2 {
            return Err(Error::invalid("segmentSize", format!("must be 4096..={} bytes", MAX_SEGMENT_LEN / 2)));
        }
        if !(0.0..=1.0).contains(&self.compaction_ratio) {
            return Err(Error::invalid("compactionRatio", "must be between 0 and 1"));
        }
        Ok(())
    }
}

/// Counters for `stats()`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Stats {
    /// Live keys.
    pub keys: u64,
    /// Sum of live value lengths, bytes.
    pub live_bytes: u64,
    /// Log size including buffered records, bytes.
    pub log_bytes: u64,
    /// LSN the next record will get.
    pub next_lsn: u64,
    /// Transactions begun and not yet committed or aborted.
    pub open_transactions: u64,
    /// Group commits waiting for [`Store::sync`].
    pub pending_commits: u64,
    /// Whether an I/O error has stopped writes until reopen.
    pub poisoned: bool,
    /// Times the store recovered in place after a quota failure.
    pub recoveries_in_place: u64,
    /// Log segments.
    pub segments: u64,
    /// Fraction of the log's bytes that no live value uses (0.0..=1.0).
    pub dead_ratio: f64,
    /// LSN where replay would start from the last checkpoint (0: none yet).
    pub last_checkpoint_lsn: u64,
    /// Checkpoints written since open.
    pub checkpoints: u64,
    /// Compaction rounds finished since open.
    pub compactions: u64,
}

/// A transaction being written.
pub(crate) struct OpenTxn {
    /// Location and LSN of its BEGIN (a checkpoint replays from the earliest open BEGIN).
    pub begin: (u64, u64),
    /// Location of its last record (the next record's backward link).
    last: u64,
    commit: CommitPayload,
    value_crc: Hasher,
    ops: Vec<Op>,
}

/// A durable, ordered key-value store on a [`Volume`] of files, or on one
/// [`crate::Storage`] (a one-file volume: a single segment, no checkpoints).
pub struct Store<V: Volume> {
    pub(crate) writer: Writer<V>,
    pub(crate) index: Index,
    pub(crate) txns: HashMap<TxnId, OpenTxn>,
    /// Group commits written but not yet flushed, in commit order.
    pending: Vec<(u64, Vec<Op>)>,
    pub(crate) next_txn: TxnId,
    pub(crate) options: Options,
    report: RecoveryReport,
    closed: bool,
    recoveries_in_place: u64,
    /// Checkpoint files and what the checkpoint each holds needs.
    pub(crate) checkpoint_slots: Vec<SlotNeeds>,
    pub(crate) checkpoint_seq: u64,
    pub(crate) last_checkpoint_lsn: u64,
    /// `writer.appended()` when the last checkpoint was written.
    pub(crate) checkpointed_at: u64,
    pub(crate) checkpoints: u64,
    pub(crate) compaction: Option<Compaction>,
    pub(crate) compactions: u64,
    /// Segments open readers still read from, with their reader counts: never released.
    pub(crate) pins: std::collections::BTreeMap<u32, usize>,
}

fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid("key", "must not be empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Error::invalid("key", format!("is {} bytes; the limit is {MAX_KEY_LEN}", key.len())));
    }
    Ok(())
}

fn key_flags(string_key: bool) -> u8 {
    if string_key {
        FLAG_STRING_KEY
    } else {
        0
    }
}

impl<V: Volume> Store<V> {
    /// Opens the store on `storage`, running recovery (see [`crate::wal::recovery`]); the
    /// report is then available from [`Store::recovery`].
    ///
    /// Errors: [`Error::InvalidArgument`] for bad options; [`Error::Corruption`] or
    /// [`Error::ChecksumMismatch`] if the file is not a walnut log of this version (it is then
    /// left untouched); [`Error::Io`] from storage.
    pub fn open(mut volume: V, options: Options) -> Result<Self> {
        options.validate()?;
        let r = recover(&mut volume, options.recovery_mode)?;
        let segment_size = if volume.can_grow() { options.segment_size } else { u64::MAX };
        let last_checkpoint_lsn = r.report.checkpoint.map_or(0, |c| c.1);
        let checkpoint_seq = r.checkpoint_seq;
        let writer = Writer::new(
            volume,
            WriterInit {
                segments: r.segments,
                tail_seg: crate::format::loc_segment(r.tail),
                tail: crate::format::loc_offset(r.tail),
                next_lsn: r.next_lsn,
                segment_size,
                batch_bytes: options.batch_bytes,
                direct_threshold: options.direct_write_threshold,
            },
        );
        Ok(Store {
            writer,
            index: r.index,
            txns: HashMap::new(),
            pending: Vec::new(),
            next_txn: r.next_txn,
            options,
            report: r.report,
            closed: false,
            recoveries_in_place: 0,
            checkpoint_slots: r.checkpoint_slots,
            checkpoint_seq,
            last_checkpoint_lsn,
            checkpointed_at: 0,
            checkpoints: 0,
            compaction: None,
            compactions: 0,
            pins: std::collections::BTreeMap::new(),
        })
    }

    /// What recovery found when this store was opened.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.report
    }

    /// The options in force.
    pub fn options(&self) -> &Options {
        &self.options
    }

    pub(crate) fn live(&self) -> Result<()> {
        if self.closed {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Checks that writes may proceed. After a quota failure (a write refused, nothing
    /// unknown left behind) the store recovers in place, once no group commit is waiting:
    /// those must first be failed by [`Store::sync`], never acknowledged by a later one.
    pub(crate) fn writable(&mut self) -> Result<()> {
        self.live()?;
        if self.writer.is_recoverable() && self.pending.is_empty() {
            self.recover_in_place()?;
        }
        self.writer.check()
    }

    /// Re-runs recovery on the same storage: cuts whatever a failed write left at the tail and
    /// rebuilds the index from what is on storage. Open transactions are dropped (their
    /// callers' next call fails with [`Error::Transaction`]).
    fn recover_in_place(&mut self) -> Result<()> {
        let r = recover(self.writer.volume_mut(), self.options.recovery_mode)?;
        self.writer.reset(r.segments, r.tail, r.next_lsn);
        self.index = r.index;
        self.txns.clear();
        self.compaction = None;
        self.checkpoint_slots = r.checkpoint_slots;
        self.checkpoint_seq = self.checkpoint_seq.max(r.checkpoint_seq);
        self.next_txn = self.next_txn.max(r.next_txn);
        self.recoveries_in_place += 1;
        Ok(())
    }

    // ----- transactions -----

    /// Begins a transaction (writes BEGIN) and returns its id.
    pub fn begin(&mut self) -> Result<TxnId> {
        self.writable()?;
        let txn = self.next_txn;
        let a = self.writer.append(Kind::Begin, 0, txn, 0, &[])?;
        self.next_txn += 1;
        self.txns.insert(
            txn,
            OpenTxn {
                begin: (a.offset, a.lsn),
                last: a.offset,
                commit: CommitPayload::default(),
                value_crc: Hasher::new(),
                ops: Vec::new(),
            },
        );
        Ok(txn)
    }

    fn open_txn(&mut self, txn: TxnId) -> Result<&mut OpenTxn> {
        self.txns.get_mut(&txn).ok_or_else(|| Error::Transaction { txn, detail: "is not open".into() })
    }

    /// Appends a record to `txn`, linking it to the transaction's previous record.
    fn txn_append(&mut self, txn: TxnId, kind: Kind, flags: u8, parts: &[&[u8]]) -> Result<(u64, Hasher)> {
        self.writable()?;
        let prev = self.open_txn(txn)?.last;
        let a = self.writer.append(kind, flags, txn, prev, parts)?;
        let t = self.open_txn(txn)?;
        t.last = a.offset;
        t.commit.records += 1;
        Ok((a.offset, a.payload_crc))
    }

    /// Starts a value for `key` in `txn`; the following [`Store::txn_chunk`] calls fill it.
    /// `string_key` only records how `keys()` should hand the key back.
    pub fn txn_put(&mut self, txn: TxnId, key: &[u8], string_key: bool) -> Result<()> {
        check_key(key)?;
        self.txn_append(txn, Kind::Put, key_flags(string_key), &[key])?;
        let entry = Entry { string_key, ..Entry::default() };
        self.open_txn(txn)?.ops.push(Op::Put { key: key.to_vec(), entry });
        Ok(())
    }

    /// Appends `data` to the value begun by the last [`Store::txn_put`] of `txn`, as one or
    /// more CHUNK records of at most `chunk_size` bytes.
    ///
    /// Errors: [`Error::Transaction`] if no put is in progress in `txn`.
    pub fn txn_chunk(&mut self, txn: TxnId, data: &[u8]) -> Result<()> {
        if !matches!(self.open_txn(txn)?.ops.last(), Some(Op::Put { .. })) {
            return Err(Error::Transaction { txn, detail: "a chunk needs a put in progress".into() });
        }
        for piece in data.chunks(self.options.chunk_size) {
            let (offset, pcrc) = self.txn_append(txn, Kind::Chunk, 0, &[piece])?;
            let t = self.open_txn(txn)?;
            t.commit.chunks += 1;
            t.commit.value_bytes += piece.len() as u64;
            t.value_crc.combine(&pcrc);
            if let Some(Op::Put { entry, .. }) = t.ops.last_mut() {
                entry.chunks.push(ChunkLoc { record: offset, skip: 0, len: piece.len() as u32 });
                entry.size += piece.len() as u64;
            }
        }
        Ok(())
    }

    /// Deletes `key` in `txn`.
    pub fn txn_delete(&mut self, txn: TxnId, key: &[u8]) -> Result<()> {
        check_key(key)?;
        self.txn_append(txn, Kind::Delete, 0, &[key])?;
        self.open_txn(txn)?.ops.push(Op::Delete { key: key.to_vec() });
        Ok(())
    }

    /// Commits `txn`: writes COMMIT (record count, chunk count, value length and CRC) linked
    /// to its last record. Returns the COMMIT's LSN. With [`Durability::Group`] the effects
    /// become visible at the next [`Store::sync`].
    pub fn commit(&mut self, txn: TxnId, durability: Durability) -> Result<u64> {
        let lsn = self.commit_quiet(txn, durability)?;
        self.maintain();
        Ok(lsn)
    }

    /// [`Store::commit`] without the maintenance turn (compaction commits its copies so).
    pub(crate) fn commit_quiet(&mut self, txn: TxnId, durability: Durability) -> Result<u64> {
        self.writable()?;
        let mut t = self.txns.remove(&txn).ok_or_else(|| Error::Transaction { txn, detail: "is not open".into() })?;
        t.commit.value_crc = t.value_crc.clone().finalize();
        let a = self.writer.append(Kind::Commit, 0, txn, t.last, &[&t.commit.encode()])?;
        let span = (crate::format::loc_segment(t.begin.0), crate::format::loc_segment(a.offset));
        for op in &mut t.ops {
            if let Op::Put { entry, .. } = op {
                entry.span = span;
            }
        }
        self.settle_commit(a.lsn, t.ops, durability)?;
        Ok(a.lsn)
    }

    /// Makes a written commit durable/visible as `durability` asks, then lets due
    /// maintenance (a compaction step, a checkpoint) take its turn.
    fn settle(&mut self, lsn: u64, ops: Vec<Op>, durability: Durability) -> Result<()> {
        self.settle_commit(lsn, ops, durability)?;
        self.maintain();
        Ok(())
    }

    fn settle_commit(&mut self, lsn: u64, mut ops: Vec<Op>, durability: Durability) -> Result<()> {
        for op in &mut ops {
            if let Op::Put { entry, .. } = op {
                entry.lsn = lsn;
            }
        }
        match durability {
            Durability::Relaxed if self.pending.is_empty() => {
                self.writer.write_buffer()?;
                ops.into_iter().for_each(|op| self.index.apply(op));
                Ok(())
            }
            // A relaxed commit must not overtake queued group commits: flush them together.
            Durability::Strict | Durability::Relaxed => {
                self.pending.push((lsn, ops));
                self.sync()
            }
            Durability::Group => {
                self.pending.push((lsn, ops));
                Ok(())
            }
        }
    }

    /// Aborts `txn`: writes ABORT, so recovery reports it; its values never appear.
    pub fn abort(&mut self, txn: TxnId) -> Result<()> {
        self.live()?;
        let t = self.txns.remove(&txn).ok_or_else(|| Error::Transaction { txn, detail: "is not open".into() })?;
        // Without an ABORT record the transaction is still invisible; a poisoned writer just
        // cannot say so in the log.
        if !self.writer.is_poisoned() {
            self.writer.append(Kind::Abort, 0, txn, t.last, &[])?;
        }
        Ok(())
    }

    /// Writes the batch buffer, flushes once, then makes every queued group commit visible
    /// (group commit). On error the store is poisoned and the queued commits are not
    /// acknowledged.
    pub fn sync(&mut self) -> Result<()> {
        self.live()?;
        if let Err(e) = self.writer.sync() {
            self.pending.clear();
            if self.writer.is_recoverable() {
                // The queued commits are failed by this error; now the store may go on.
                let _ = self.recover_in_place();
            }
            return Err(e);
        }
        for (_, ops) in std::mem::take(&mut self.pending) {
            ops.into_iter().for_each(|op| self.index.apply(op));
        }
        self.checkpoint_if_due();
        Ok(())
    }

    /// Whether group commits wait for [`Store::sync`].
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    // ----- one-call operations -----

    /// Puts a whole value. Values up to `chunk_size` take one self-committed PUT_ONE record;
    /// larger ones a BEGIN/PUT/CHUNK.../COMMIT transaction.
    pub fn put(&mut self, key: &[u8], value: &[u8], durability: Durability) -> Result<()> {
        self.put_flagged(key, false, value, durability)
    }

    /// [`Store::put`], recording whether the key was given as a string.
    pub fn put_flagged(&mut self, key: &[u8], string_key: bool, value: &[u8], durability: Durability) -> Result<()> {
        check_key(key)?;
        self.writable()?;
        if value.len() > self.options.chunk_size {
            let txn = self.begin()?;
            let r = self
                .txn_put(txn, key, string_key)
                .and_then(|()| self.txn_chunk(txn, value))
                .and_then(|()| self.commit(txn, durability));
            if r.is_err() {
                let _ = self.abort(txn);
            }
            return r.map(drop);
        }
        let txn = self.next_txn;
        let len = (key.len() as u16).to_le_bytes();
        let a = self.writer.append(Kind::PutOne, key_flags(string_key), txn, 0, &[&len, key, value])?;
        self.next_txn += 1;
        let chunks = if value.is_empty() {
            Vec::new()
        } else {
            vec![ChunkLoc { record: a.offset, skip: 2 + key.len() as u32, len: value.len() as u32 }]
        };
        let seg = crate::format::loc_segment(a.offset);
        let entry = Entry { chunks, size: value.len() as u64, string_key, lsn: a.lsn, span: (seg, seg) };
        self.settle(a.lsn, vec![Op::Put { key: key.to_vec(), entry }], durability)
    }

    /// Deletes `key` with one self-committed record; returns whether it existed, counting
    /// queued group commits.
    pub fn delete(&mut self, key: &[u8], durability: Durability) -> Result<bool> {
        check_key(key)?;
        self.writable()?;
        let existed = match self.pending.iter().rev().flat_map(|(_, ops)| ops.iter().rev()).find(|op| op.key() == key) {
            Some(Op::Put { .. }) => true,
            Some(Op::Delete { .. }) => false,
            None => self.index.contains(key),
        };
        if !existed {
            return Ok(false);
        }
        let txn = self.next_txn;
        let a = self.writer.append(Kind::DeleteOne, 0, txn, 0, &[key])?;
        self.next_txn += 1;
        self.settle(a.lsn, vec![Op::Delete { key: key.to_vec() }], durability)?;
        Ok(true)
    }

    /// Appends a DELETE_ONE for a key that is already absent (compaction keeping a delete).
    pub(crate) fn write_tombstone(&mut self, key: &[u8]) -> Result<()> {
        let txn = self.next_txn;
        self.writer.append(Kind::DeleteOne, 0, txn, 0, &[key])?;
        self.next_txn += 1;
        Ok(())
    }

    /// Writes several puts and deletes in one transaction: all or none become visible.
    pub fn batch(&mut self, ops: &[BatchOp<'_>], durability: Durability) -> Result<()> {
        for op in ops {
            check_key(op.key())?;
        }
        let txn = self.begin()?;
        let r = ops
            .iter()
            .try_for_each(|op| match op {
                BatchOp::Put { key, value } => self.txn_put(txn, key, false).and_then(|()| self.txn_chunk(txn, value)),
                BatchOp::Delete { key } => self.txn_delete(txn, key),
            })
            .and_then(|()| self.commit(txn, durability));
        if r.is_err() {
            let _ = self.abort(txn);
        }
        r.map(drop)
    }

    // ----- reads -----

    /// The committed value's location, or `None` if `key` is absent.
    pub fn entry(&self, key: &[u8]) -> Result<Option<Entry>> {
        self.live()?;
        Ok(self.index.get(key).map(std::borrow::Cow::into_owned))
    }

    /// Keeps the segments holding `chunks` from being released until [`Store::unpin`]: a
    /// reader that walks a value's chunks over time (a stream) pins them first, so compaction
    /// cannot free what it has yet to read. Pins are counted.
    pub fn pin(&mut self, chunks: &[ChunkLoc]) {
        for seg in segments_of(chunks) {
            *self.pins.entry(seg).or_insert(0) += 1;
        }
    }

    /// Undoes one [`Store::pin`] of the same chunks. A segment freed of its last pin is
    /// released by the next checkpoint.
    pub fn unpin(&mut self, chunks: &[ChunkLoc]) {
        for seg in segments_of(chunks) {
            if let Some(n) = self.pins.get_mut(&seg) {
                *n -= 1;
                if *n == 0 {
                    self.pins.remove(&seg);
                }
            }
        }
    }

    /// Whether `key` has a committed value.
    pub fn has(&self, key: &[u8]) -> Result<bool> {
        self.live()?;
        Ok(self.index.contains(key))
    }

    /// Reads one piece of a value into `out` (replacing its contents), re-checking the
    /// record's CRC. Errors: [`Error::ChecksumMismatch`], [`Error::Corruption`], [`Error::Io`].
    pub fn read_chunk(&self, loc: &ChunkLoc, out: &mut Vec<u8>) -> Result<()> {
        self.live()?;
        self.writer.read_chunk(loc, out)
    }

    /// The whole value of `key`, or `None`. Holds the value in memory: for large values,
    /// walk [`Store::entry`]'s chunks with [`Store::read_chunk`] instead.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let Some(entry) = self.entry(key)? else { return Ok(None) };
        let mut value = Vec::with_capacity(usize::try_from(entry.size).unwrap_or(0));
        let mut buf = Vec::new();
        for loc in &entry.chunks {
            self.writer.read_chunk(loc, &mut buf)?;
            value.extend_from_slice(&buf);
        }
        Ok(Some(value))
    }

    /// Keys in bytewise order, as `range` selects.
    pub fn keys(&self, range: &KeyRange) -> Result<Vec<KeyInfo>> {
        self.live()?;
        Ok(self.index.scan(range))
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        Stats {
            keys: self.index.len() as u64,
            live_bytes: self.index.live_bytes(),
            log_bytes: self.writer.log_bytes(),
            next_lsn: self.writer.next_lsn(),
            open_transactions: self.txns.len() as u64,
            pending_commits: self.pending.len() as u64,
            poisoned: self.writer.is_poisoned(),
            recoveries_in_place: self.recoveries_in_place,
            segments: self.writer.segments().len() as u64,
            dead_ratio: self.dead_ratio(),
            last_checkpoint_lsn: self.last_checkpoint_lsn,
            checkpoints: self.checkpoints,
            compactions: self.compactions,
        }
    }

    /// Syncs queued commits, writes a checkpoint if the log grew since the last one (so the
    /// next open is fast), and closes. Open transactions are left without COMMIT, so they
    /// are discarded by the next recovery. Every later call fails with [`Error::Closed`].
    pub fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        let r = if self.writer.is_poisoned() {
            Ok(())
        } else {
            self.sync().and_then(|()| {
                if self.writer.volume().can_grow() && self.writer.appended() > self.checkpointed_at {
                    self.checkpoint()
                } else {
                    Ok(())
                }
            })
        };
        self.closed = true;
        self.txns.clear();
        r
    }

    /// Closes and hands back the volume (for tests that reopen it).
    pub fn into_volume(mut self) -> V {
        let _ = self.close();
        self.writer.into_volume()
    }

    /// The volume (on a single-file store: the storage), read-only.
    pub fn volume(&self) -> &V {
        self.writer.volume()
    }
}

/// The distinct segments a value's chunks lie in.
fn segments_of(chunks: &[ChunkLoc]) -> std::collections::BTreeSet<u32> {
    chunks.iter().map(|c| crate::format::loc_segment(c.record)).collect()
}

/// One operation of [`Store::batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOp<'a> {
    Put { key: &'a [u8], value: &'a [u8] },
    Delete { key: &'a [u8] },
}

impl BatchOp<'_> {
    fn key(&self) -> &[u8] {
        match self {
            BatchOp::Put { key, .. } | BatchOp::Delete { key } => key,
        }
    }
}
