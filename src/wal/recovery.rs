//! Recovery on open: scan, truncate the torn tail, prove each committed chain, rebuild the
//! index.
//!
//! 1. Scan records forward from the file header, validating each: known kind, reserved bytes
//!    zero, a length that fits the kind and the file, the CRC, and an LSN exactly one above
//!    the previous record's. The first record failing any check starts the torn tail, which
//!    is cut off (raft-engine's `TolerateTailCorruption`; SynapseDB's tail truncation), or,
//!    in [`RecoveryMode::AbsoluteConsistency`], fails the open instead.
//! 2. Records of multi-record transactions are kept per open transaction. At a COMMIT, its
//!    chain is walked back to BEGIN (UnisonDB): every link must point strictly backwards and
//!    land on a record of the same transaction; the chain's record count, chunk count, value
//!    length and value CRC must equal what COMMIT states. A broken chain drops that one
//!    transaction and is reported; it never fails the open (UnisonDB failed the whole
//!    recovery, and did not check transaction ids or backward direction).
//! 3. Committed effects are applied in log order. Transactions without COMMIT are invisible.
//!
//! Memory: two read buffers of at most 1 MiB, plus, for each transaction still open at that
//! point of the scan, about 64 bytes per record and a copy of each key it writes.

use std::collections::{BTreeMap, HashMap};

use crc32fast::Hasher;

use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::format::{
    ikey_from_record, import_magic, loc, loc_offset, loc_segment, record_crc, split_put_one, split_seq, CommitPayload,
    FileHeader, HeaderError, Kind, RecordHeader, TableRecord, CHECKPOINT_MAGIC, FILE_HEADER_LEN, FLAG_STRING_KEY,
    FORMAT_VERSION, IMPORT_MAGIC, MAGIC, MAX_ID, MAX_KEY_LEN, MIN_READ_VERSION, RECORD_HEADER_LEN,
};
use crate::index::{ChunkLoc, Entry, Index, Op};
use crate::storage::{read_exact_at, write_all_at, FileId, Storage, Volume};
use crate::wal::checkpoint;
use crate::wal::log::note_chain;

/// What recovery does with an invalid record (raft-engine's recovery modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Cut the log at the first invalid record; everything committed before it survives.
    #[default]
    TolerateTailCorruption,
    /// Refuse to open ([`Error::Corruption`]) rather than cut anything.
    AbsoluteConsistency,
}

/// Why recovery dropped a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscardReason {
    /// An ABORT record ended it.
    Aborted,
    /// It has no COMMIT: the writer stopped (closed tab, crash) or the COMMIT was torn off.
    Incomplete,
    /// Its COMMIT's chain does not prove the transaction complete; the text says where.
    BrokenChain(String),
    /// Its COMMIT carries an id that an earlier commit carried. Not reported by this build:
    /// the writer refuses an id it remembers, so a second COMMIT under an id was written after
    /// the store forgot the first ([`crate::Options::id_retention`]) and was acknowledged;
    /// replay applies it (until 2026-11-28 it was discarded so, losing that commit).
    DuplicateId,
}

impl std::fmt::Display for DiscardReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DiscardReason::Aborted => write!(f, "aborted"),
            DiscardReason::Incomplete => write!(f, "incomplete: no COMMIT"),
            DiscardReason::BrokenChain(why) => write!(f, "broken chain: {why}"),
            DiscardReason::DuplicateId => write!(f, "its commit id was committed before"),
        }
    }
}

/// One dropped transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discarded {
    /// Transaction id.
    pub txn: u64,
    /// LSN of its first record seen.
    pub lsn: u64,
    pub reason: DiscardReason,
}

/// At most this many dropped transactions are listed ([`RecoveryReport::discarded_total`]
/// counts all of them), so a log of a million aborted uploads cannot blow up the report.
pub const MAX_REPORTED_DISCARDS: usize = 1000;

/// What recovery did, for the caller (raft-engine and tikv log the same facts).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecoveryReport {
    /// Committed transactions (and single-record puts/deletes) replayed.
    pub committed: u64,
    /// Dropped transactions, the first [`MAX_REPORTED_DISCARDS`] of them.
    pub discarded: Vec<Discarded>,
    /// All dropped transactions.
    pub discarded_total: u64,
    /// Bytes cut from the end of the log (including whole segments after the cut).
    pub bytes_truncated: u64,
    /// Location where the log was cut ([`crate::format::loc`]; the byte offset in a
    /// single-file store).
    pub truncated_at: Option<u64>,
    /// Why the first invalid record was invalid.
    pub tail_reason: Option<String>,
    /// Valid records scanned.
    pub records: u64,
    /// Log size after recovery, bytes (all segments).
    pub log_bytes: u64,
    /// Segments after recovery.
    pub segments: u64,
    /// The checkpoint recovery started from: its number and the LSN where replay began.
    pub checkpoint: Option<(u64, u64)>,
    /// Checkpoints passed over, and why (torn, corrupt, or needing a segment that is gone).
    pub checkpoints_rejected: Vec<String>,
    /// Files released: segments no longer needed (left by an interrupted compaction) and
    /// files whose creation was cut short before their header was written.
    pub segments_released: u64,
    /// Index entries of the checkpoint dropped because the log was cut before their data.
    pub entries_dropped: u64,
    /// Time spent, ms.
    pub millis: f64,
}

/// The state recovery hands to the store.
pub(crate) struct Recovered {
    pub index: Index,
    pub report: RecoveryReport,
    /// Segment number -> file.
    pub segments: BTreeMap<u32, FileId>,
    /// Location where the next record goes.
    pub tail: u64,
    pub next_lsn: u64,
    pub next_txn: u64,
    /// Checkpoint files and what the valid checkpoint each holds needs (seq 0 if none).
    pub checkpoint_slots: Vec<SlotNeeds>,
    /// The highest checkpoint number any checkpoint header carries (0: none): the next
    /// checkpoint is numbered above it, chosen or not.
    pub checkpoint_seq: u64,
    /// Chain floors of the COMMITs read whole (see `Log::chain_floor`).
    pub chains: BTreeMap<u32, u32>,
    /// The segments (first, last) holding COMMITs not read whole (below the replay point, or
    /// with a BEGIN before it): `first` is the checkpoint's first needed segment, which its
    /// writer chose below every floor it knew.
    pub unknown_chains: Option<(u32, u32)>,
}

/// A checkpoint file and the segments its checkpoint needs: those it lists and every segment
/// from its replay point on. A segment either slot needs is never released, so a torn or
/// corrupt newest checkpoint can always fall back to the other.
#[derive(Debug, Clone, Default)]
pub(crate) struct SlotNeeds {
    pub file: FileId,
    pub seq: u64,
    pub replay_segment: u32,
    pub segments: Vec<u32>,
}

impl SlotNeeds {
    pub fn needs(&self, seg: u32) -> bool {
        self.seq > 0 && (seg >= self.replay_segment || self.segments.binary_search(&seg).is_ok())
    }
}

/// A record of an open transaction, as scanned.
#[derive(Debug, Clone)]
struct Scanned {
    offset: u64,
    prev: u64,
    kind: Kind,
    flags: u8,
    len: u32,
    payload_crc: Hasher,
    /// The key, for PUT and DELETE.
    key: Option<Vec<u8>>,
}

struct ScanTxn {
    txn: u64,
    begin: u64,
    lsn: u64,
    records: Vec<Scanned>,
    /// Set when the transaction is already known bad; reported once, at its end.
    broken: Option<String>,
}

/// Payload read granularity: whole records up to this size are read in one call; larger
/// ones stream through the buffer, so memory stays bounded whatever the chunk size.
const READ_PIECE: usize = 1 << 20;

struct Scanner<'a, S> {
    storage: &'a S,
    size: u64,
    /// The payload's first piece (all of it unless the record exceeds [`READ_PIECE`]).
    buf: Vec<u8>,
    /// Where the rest of a large payload streams through.
    scratch: Vec<u8>,
}

impl<S: Storage> Scanner<'_, S> {
    /// Reads and validates the record at `offset`. `Ok(Err(reason))` = invalid (the tail
    /// starts here); `Err` = the storage itself failed. On success `self.buf` holds the
    /// payload's first piece, which contains every key and COMMIT payload whole.
    fn record(&mut self, offset: u64, expect_lsn: u64) -> Result<Result<(RecordHeader, Hasher), String>> {
        let mut hb = [0u8; RECORD_HEADER_LEN];
        if offset + RECORD_HEADER_LEN as u64 > self.size || !read_exact_at(self.storage, &mut hb, offset)? {
            return Ok(Err("incomplete record header".into()));
        }
        let h = match RecordHeader::decode(&hb) {
            Ok(h) => h,
            Err(e) => return Ok(Err(format!("invalid record header: {e:?}"))),
        };
        if offset + h.record_len() > self.size {
            return Ok(Err(format!("record of {} bytes runs past the end of the log", h.record_len())));
        }
        let mut pcrc = Hasher::new();
        let mut at = offset + RECORD_HEADER_LEN as u64;
        let len = h.len as usize;
        let first = len.min(READ_PIECE);
        self.buf.clear();
        self.buf.resize(first, 0);
        if !read_exact_at(self.storage, &mut self.buf, at)? {
            return Ok(Err("record runs past the end of the log".into()));
        }
        pcrc.update(&self.buf);
        at += first as u64;
        let mut left = len - first;
        while left > 0 {
            let n = left.min(READ_PIECE);
            self.scratch.resize(n, 0);
            if !read_exact_at(self.storage, &mut self.scratch, at)? {
                return Ok(Err("record runs past the end of the log".into()));
            }
            pcrc.update(&self.scratch);
            at += n as u64;
            left -= n;
        }
        let computed = record_crc(&hb, &pcrc);
        if computed != h.crc {
            return Ok(Err(format!("checksum mismatch: stored {:#010x}, computed {computed:#010x}", h.crc)));
        }
        if h.lsn != expect_lsn {
            return Ok(Err(format!("LSN {} where {expect_lsn} was expected", h.lsn)));
        }
        if h.lsn > MAX_ID || h.txn > MAX_ID {
            return Ok(Err(format!("LSN {} or transaction id {} above the limit {MAX_ID}", h.lsn, h.txn)));
        }
        Ok(Ok((h, pcrc)))
    }
}

fn header_error(at: u64, e: HeaderError) -> Error {
    match e {
        HeaderError::BadMagic => Error::Corruption { at, detail: "not a walnut log (bad magic)".into() },
        HeaderError::UnsupportedVersion(v) => Error::Corruption {
            at,
            detail: format!("format version {v} is not supported (this build reads versions {MIN_READ_VERSION} to {FORMAT_VERSION})"),
        },
        HeaderError::Checksum { stored, computed } => Error::ChecksumMismatch { at, stored, computed },
        HeaderError::Malformed(what) => Error::Corruption { at, detail: format!("file header: {what}") },
    }
}

/// What each file of the volume is, by its header.
#[derive(Default)]
struct Census {
    segments: BTreeMap<u32, (FileId, FileHeader)>,
    checkpoints: Vec<FileId>,
    /// Files too short to hold a header: a creation cut short. (id, size)
    stubs: Vec<(FileId, u64)>,
    /// Import staged files never installed ([`IMPORT_MAGIC`]).
    imports: Vec<FileId>,
    /// Header-only files whose segment number another file also claims: a rotation that
    /// failed (its header's flush), whose file could not be given back either, then a later
    /// rotation to the same number. They hold no record.
    stale: Vec<FileId>,
}

/// Whether the first bytes of a file are a header that was never written: zeros, or a torn
/// prefix of a magic followed by zeros. Such a file was never flushed: a segment's header is
/// flushed before any record goes in and never rewritten, and a checkpoint's magic never
/// changes once written. So on a volume that can grow it holds nothing and is released, as is
/// a segment no longer than its header whose header fails its check.
fn unfinished(head: &[u8]) -> bool {
    let written = head.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let prefix = head.get(..written).unwrap_or_default();
    written <= 8 && ours(prefix)
}

/// Whether `prefix` (at most 8 bytes) begins one of walnut's magics: a log's, a checkpoint's
/// or an import's staged file's.
fn ours(prefix: &[u8]) -> bool {
    MAGIC.starts_with(prefix) || CHECKPOINT_MAGIC.starts_with(prefix) || IMPORT_MAGIC.starts_with(prefix)
}

fn census<V: Volume>(volume: &V) -> Result<Census> {
    let mut c = Census::default();
    let can_grow = volume.can_grow();
    for id in volume.ids() {
        let f = volume.file(id)?;
        let size = f.size()?;
        let mut head = [0u8; FILE_HEADER_LEN];
        let n = usize::try_from(size).unwrap_or(usize::MAX).min(FILE_HEADER_LEN);
        if !read_exact_at(f, head.get_mut(..n).unwrap_or_default(), 0)? {
            return Err(Error::io("read", "file shorter than its size"));
        }
        let magic = head.get(..n.min(8)).unwrap_or_default();
        let ours = ours(magic);
        let torn_header = can_grow
            && size <= FILE_HEADER_LEN as u64
            && head.starts_with(&MAGIC)
            && FileHeader::decode(&head).is_err();
        if can_grow && size >= 8 && import_magic(magic) {
            // An import not installed (its file's magic not yet, or not wholly, written):
            // never anything acknowledged, so released in every mode.
            c.imports.push(id);
        } else if (size < FILE_HEADER_LEN as u64 && ours) || (can_grow && unfinished(&head)) || torn_header {
            c.stubs.push((id, size));
        } else if magic == CHECKPOINT_MAGIC {
            if !can_grow {
                return Err(Error::Corruption { at: 0, detail: "this file is a checkpoint, not a log".into() });
            }
            c.checkpoints.push(id);
        } else {
            let h = FileHeader::decode(&head).map_err(|e| header_error(0, e))?;
            if let Some(&(other, oh)) = c.segments.get(&h.segment) {
                // Two files claim one segment. Only a header-only one can be a rotation's
                // leftover (see `Census::stale`); of two such, the older one (lower base LSN).
                let other_size = volume.file(other)?.size()?;
                let header_only = |size: u64| can_grow && size == FILE_HEADER_LEN as u64;
                let (keep, drop) = match (header_only(size), header_only(other_size)) {
                    (true, true) if h.base_lsn > oh.base_lsn => ((id, h), other),
                    (true, _) => ((other, oh), id),
                    (false, true) => ((id, h), other),
                    (false, false) => {
                        return Err(Error::Corruption {
                            at: 0,
                            detail: format!("segment {} appears twice", h.segment),
                        });
                    }
                };
                c.stale.push(drop);
                c.segments.insert(h.segment, keep);
            } else {
                c.segments.insert(h.segment, (id, h));
            }
        }
    }
    Ok(c)
}

/// The scan's state across records and segments.
struct Replay {
    index: Index,
    /// The index already holds the effects of every record below this LSN (the checkpoint's
    /// `index_lsn`; 1 on a full scan): such records are read only to rebuild the chains of
    /// transactions open at the checkpoint, never applied again.
    index_lsn: u64,
    open: HashMap<u64, ScanTxn>,
    max_txn: u64,
    report: RecoveryReport,
    /// Chain floors of the COMMITs read (see `Recovered::chains`).
    chains: BTreeMap<u32, u32>,
    /// The floor of a COMMIT whose BEGIN lies below the replay point.
    unknown_floor: u32,
    /// The last segment holding such a COMMIT (0: none).
    unknown_to: u32,
}

impl Replay {
    fn discard(&mut self, txn: u64, lsn: u64, reason: DiscardReason) {
        self.report.discarded_total += 1;
        if self.report.discarded.len() < MAX_REPORTED_DISCARDS {
            self.report.discarded.push(Discarded { txn, lsn, reason });
        }
    }

    /// Applies one valid record found at location `at`.
    fn record(&mut self, at: u64, h: &RecordHeader, pcrc: Hasher, payload: &[u8]) {
        self.report.records += 1;
        self.max_txn = self.max_txn.max(h.txn);
        if h.lsn < self.index_lsn {
            // Held by the checkpoint already. Ends of transactions only close them; records of
            // transactions still open at the checkpoint build their chains.
            match h.kind {
                Kind::Commit => {
                    // Begun before the replay point: what it holds and where is not known.
                    match self.open.remove(&h.txn) {
                        Some(t) if !t.records.iter().any(|r| r.kind == Kind::Delete) => {}
                        Some(t) => note_chain(&mut self.chains, (loc_segment(t.begin), loc_segment(at))),
                        None => self.unknown_to = self.unknown_to.max(loc_segment(at)),
                    }
                    return;
                }
                Kind::Abort => {
                    self.open.remove(&h.txn);
                    return;
                }
                Kind::PutOne | Kind::DeleteOne | Kind::Table => return,
                Kind::Begin | Kind::Put | Kind::Chunk | Kind::Delete | Kind::Rollback => {}
            }
        }
        match h.kind {
            Kind::Begin => {
                if let Some(old) = self.open.remove(&h.txn) {
                    self.discard(h.txn, old.lsn, DiscardReason::BrokenChain("transaction id begun twice".into()));
                }
                let broken = (h.prev != 0).then(|| "BEGIN links to a record".to_string());
                self.open.insert(h.txn, ScanTxn { txn: h.txn, begin: at, lsn: h.lsn, records: Vec::new(), broken });
            }
            Kind::Put | Kind::Chunk | Kind::Delete => {
                // A record of a transaction never begun (its BEGIN was cut, or the id is
                // bogus) cannot become visible: its COMMIT will find no chain.
                if let Some(t) = self.open.get_mut(&h.txn) {
                    let key = if h.kind == Kind::Chunk {
                        None
                    } else {
                        match ikey_from_record(h.flags, payload) {
                            Some(k) => Some(k),
                            None => {
                                t.broken.get_or_insert_with(|| format!("malformed key at offset {at}"));
                                None
                            }
                        }
                    };
                    t.records.push(Scanned {
                        offset: at,
                        prev: h.prev,
                        kind: h.kind,
                        flags: h.flags,
                        len: h.len,
                        payload_crc: pcrc,
                        key,
                    });
                }
            }
            Kind::Commit => match self.open.remove(&h.txn) {
                // A COMMIT under an id replay remembers is applied all the same: the store that
                // wrote it refused ids it remembered, so it had forgotten this one (its
                // retention), and acknowledged the commit. Replay keeps every id until the end.
                Some(t) => match prove_chain(&t, at, h, payload) {
                    Ok(ops) => {
                        let span = (loc_segment(t.begin), loc_segment(at));
                        if ops.iter().any(|op| matches!(op, Op::Delete { .. })) {
                            note_chain(&mut self.chains, span);
                        }
                        for op in ops {
                            self.index.apply(with_lsn(op, h.lsn, span));
                        }
                        self.report.committed += 1;
                    }
                    Err(why) => self.discard(h.txn, t.lsn, DiscardReason::BrokenChain(why)),
                },
                None => self.discard(h.txn, h.lsn, DiscardReason::BrokenChain("COMMIT without BEGIN".into())),
            },
            Kind::Rollback => {
                // A nested transaction's abort: the records after `to` leave the chain (they
                // are dropped here, so the COMMIT's chain must hold exactly the rest).
                if let Some(t) = self.open.get_mut(&h.txn) {
                    let last = t.records.last().map_or(t.begin, |r| r.offset);
                    let to = payload.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
                    match to {
                        Some(to)
                            if h.prev == last
                                && (to == t.begin || t.records.binary_search_by_key(&to, |r| r.offset).is_ok()) =>
                        {
                            t.records.retain(|r| r.offset <= to);
                        }
                        _ => {
                            t.broken.get_or_insert_with(|| format!("ROLLBACK at offset {at} does not fit its chain"));
                        }
                    }
                }
            }
            Kind::Abort => {
                if let Some(t) = self.open.remove(&h.txn) {
                    self.discard(h.txn, t.lsn, DiscardReason::Aborted);
                }
            }
            // The payload may be only its first piece: the value length comes from the header.
            Kind::PutOne => {
                let parsed = split_seq(h.flags, payload).and_then(|(seq, rest)| {
                    let (key, _) = split_put_one(rest)?;
                    Some((seq, payload.len() - rest.len(), key, ikey_from_record(h.flags, key)?))
                });
                match parsed {
                    Some((seq, head, key, ik)) if h.prev == 0 => {
                        let skip = (head + 2 + key.len()) as u32;
                        let len = h.len - skip;
                        let chunks = if len == 0 { Vec::new() } else { vec![ChunkLoc { record: at, skip, len }] };
                        let seg = loc_segment(at);
                        let entry = Entry {
                            chunks,
                            size: u64::from(len),
                            string_key: h.flags & FLAG_STRING_KEY != 0,
                            lsn: h.lsn,
                            span: (seg, seg),
                        };
                        let table = crate::format::split_ikey(&ik).0;
                        if seq > 0 && table != 0 {
                            self.index.apply(implied_table(table));
                        }
                        let put = Op::Put { key: ik, entry };
                        let change =
                            (seq > 0).then(|| crate::wal::log::feed_op(&put, seq, h.lsn, (seg, seg))).flatten();
                        self.index.apply(put);
                        if let Some(change) = change {
                            self.index.apply(change);
                        }
                        if seq > 0 {
                            self.index.apply(Op::Seq { table, last: seq });
                        }
                        self.report.committed += 1;
                    }
                    _ => self.discard(h.txn, h.lsn, DiscardReason::BrokenChain("malformed PUT_ONE".into())),
                }
            }
            Kind::DeleteOne => {
                let parsed =
                    split_seq(h.flags, payload).and_then(|(seq, key)| Some((seq, ikey_from_record(h.flags, key)?)));
                match parsed {
                    Some((seq, ik)) if h.prev == 0 => {
                        let table = crate::format::split_ikey(&ik).0;
                        if seq > 0 && table != 0 {
                            self.index.apply(implied_table(table));
                        }
                        let delete = Op::Delete { key: ik };
                        let seg = loc_segment(at);
                        let change =
                            (seq > 0).then(|| crate::wal::log::feed_op(&delete, seq, h.lsn, (seg, seg))).flatten();
                        if let Some(change) = change {
                            self.index.apply(change); // first: it takes the removed entry's string-key flag
                        }
                        self.index.apply(delete);
                        if seq > 0 {
                            self.index.apply(Op::Seq { table, last: seq });
                        }
                        self.report.committed += 1;
                    }
                    _ => self.discard(h.txn, h.lsn, DiscardReason::BrokenChain("malformed DELETE_ONE".into())),
                }
            }
            Kind::Table => match TableRecord::decode(payload) {
                Some(r) if h.prev == 0 => {
                    self.index.apply(Op::Table(r));
                    self.report.committed += 1;
                }
                _ => self.discard(h.txn, h.lsn, DiscardReason::BrokenChain("malformed TABLE".into())),
            },
        }
    }
}

/// Where the log must be cut: a segment, the offset in it (0 = the whole segment), and why.
struct Cut {
    segment: u32,
    offset: u64,
    reason: String,
}

/// Where a scan stopped: the location after the last valid record, the next expected LSN,
/// and the cut, if the scan stopped at an invalid record or segment.
struct ScanEnd {
    tail: u64,
    lsn: u64,
    cut: Option<Cut>,
}

/// Scans the log from location `start`, expecting LSN `lsn` there, through the following
/// segments, handing each valid record to `replay`, until the log ends or a record or segment
/// fails its checks (recovery steps 5 and 6 of docs/FORMAT.md, section 10). Reads only.
fn scan<V: Volume>(
    volume: &V,
    segments: &BTreeMap<u32, (FileId, FileHeader)>,
    start: u64,
    mut lsn: u64,
    full_scan: bool,
    replay: &mut Replay,
) -> Result<ScanEnd> {
    let start_seg = loc_segment(start);
    let mut tail = start;
    let mut prev_seg: Option<u32> = None;
    let mut buf = Vec::new();
    let mut scratch = Vec::new();
    for (&seg, &(id, header)) in segments.range(start_seg..) {
        let mut offset = if seg == start_seg { loc_offset(start) } else { FILE_HEADER_LEN as u64 };
        if let Some(prev) = prev_seg {
            let gap = seg != prev + 1;
            let lsn_ok = if full_scan { header.base_lsn >= lsn } else { header.base_lsn == lsn };
            if (gap && !full_scan) || !lsn_ok {
                let why = if gap {
                    format!("segment {} is missing", prev + 1)
                } else {
                    format!("segment {seg} starts at LSN {} where {lsn} was expected", header.base_lsn)
                };
                return Ok(ScanEnd { tail, lsn, cut: Some(Cut { segment: seg, offset: 0, reason: why }) });
            }
            lsn = header.base_lsn;
        }
        let file = volume.file(id)?;
        let size = file.size()?;
        let mut scanner =
            Scanner { storage: file, size, buf: std::mem::take(&mut buf), scratch: std::mem::take(&mut scratch) };
        while offset < size {
            match scanner.record(offset, lsn)? {
                Ok((h, pcrc)) => {
                    replay.record(loc(seg, offset), &h, pcrc, &scanner.buf);
                    offset += h.record_len();
                    lsn += 1;
                }
                Err(reason) => {
                    return Ok(ScanEnd {
                        tail: loc(seg, offset),
                        lsn,
                        cut: Some(Cut { segment: seg, offset, reason }),
                    });
                }
            }
        }
        (buf, scratch) = (scanner.buf, scanner.scratch);
        tail = loc(seg, offset);
        prev_seg = Some(seg);
    }
    Ok(ScanEnd { tail, lsn, cut: None })
}

/// Runs recovery over `volume`: census of its files, the newest usable checkpoint, replay of
/// the log after it across segments, the torn tail cut, garbage segments released. An empty
/// volume gets segment 0.
pub(crate) fn recover<V: Volume>(volume: &mut V, mode: RecoveryMode) -> Result<Recovered> {
    let started = now_ms();
    let mut report = RecoveryReport::default();
    let can_grow = volume.can_grow();
    let c = census(volume)?;

    for &id in c.imports.iter().chain(&c.stale) {
        volume.release(id)?;
        report.segments_released += 1;
    }
    // Files too short for a header hold nothing: a creation cut short.
    for &(id, size) in &c.stubs {
        if can_grow {
            if mode == RecoveryMode::AbsoluteConsistency && size >= FILE_HEADER_LEN as u64 {
                return Err(Error::Corruption {
                    at: 0,
                    detail: format!("file {id} has no valid header ({size} bytes); refusing to release it"),
                });
            }
            volume.release(id)?;
            report.segments_released += 1;
        } else if size > 0 {
            if mode == RecoveryMode::AbsoluteConsistency {
                return Err(Error::Corruption { at: 0, detail: "file shorter than its header".into() });
            }
            report.bytes_truncated = size;
            report.truncated_at = Some(0);
            report.tail_reason = Some("file shorter than its header".into());
            volume.file_mut(id)?.truncate(0)?;
        }
    }
    if c.segments.is_empty() && !c.checkpoints.is_empty() {
        return Err(Error::Corruption {
            at: 0,
            detail: "checkpoints without any log segment: refusing to start an empty store over them".into(),
        });
    }
    if c.segments.is_empty() {
        let id = if can_grow { volume.create()? } else { c.stubs.first().map_or(0, |s| s.0) };
        let f = volume.file_mut(id)?;
        write_all_at(f, &FileHeader { base_lsn: 1, segment: 0 }.encode(), 0)?;
        f.flush()?;
        report.log_bytes = FILE_HEADER_LEN as u64;
        report.segments = 1;
        report.millis = now_ms() - started;
        let checkpoint_slots = c.checkpoints.iter().map(|&id| SlotNeeds { file: id, ..SlotNeeds::default() }).collect();
        return Ok(Recovered {
            index: Index::default(),
            report,
            segments: BTreeMap::from([(0, id)]),
            tail: loc(0, FILE_HEADER_LEN as u64),
            next_lsn: 1,
            next_txn: 1,
            checkpoint_slots,
            checkpoint_seq: 0,
            chains: BTreeMap::new(),
            unknown_chains: None,
        });
    }

    // The newest valid checkpoint whose segments are all here. Headers first (with their
    // segment lists): a body is read only for the checkpoint being tried, so an open reads
    // one body, not both.
    let mut slots = Vec::new();
    let mut heads = Vec::new();
    for &id in &c.checkpoints {
        match checkpoint::read_head(volume.file(id)?)? {
            Ok(head) => {
                slots.push(SlotNeeds {
                    file: id,
                    seq: head.header.seq,
                    replay_segment: loc_segment(head.header.replay_from),
                    segments: head.segments.clone(),
                });
                heads.push((id, head));
            }
            Err(why) => {
                slots.push(SlotNeeds { file: id, ..SlotNeeds::default() });
                report.checkpoints_rejected.push(why);
            }
        }
    }
    heads.sort_by_key(|(_, head)| std::cmp::Reverse(head.header.seq));
    let checkpoint_seq = heads.first().map_or(0, |(_, head)| head.header.seq);
    // A checkpoint passed over is no fallback: its slot keeps no segment alive and is the
    // next one overwritten (an unusable newest must not outrank a valid older one).
    let forget = |slots: &mut Vec<SlotNeeds>, id| {
        if let Some(slot) = slots.iter_mut().find(|s| s.file == id) {
            *slot = SlotNeeds { file: id, ..SlotNeeds::default() };
        }
    };
    // Replay from the newest usable, valid checkpoint; a checkpoint whose index is ahead of the
    // log (the log ends, or was cut, below its `index_lsn`) holds effects the log has lost and
    // would make new records look held by it: it is passed over too, and the next one tried
    // (at the end, a full scan).
    let mut heads = heads.into_iter();
    let (replay, end, ck_next_txn, full_scan, start_seg) = loop {
        let mut chosen = None;
        for (id, head) in heads.by_ref() {
            let from = head.header.replay_from;
            let usable = head.segments.iter().all(|s| c.segments.contains_key(s))
                && c.segments.get(&loc_segment(from)).is_some_and(|&(id, _)| {
                    volume
                        .file(id)
                        .and_then(|f| f.size())
                        .is_ok_and(|size| (FILE_HEADER_LEN as u64..=size).contains(&loc_offset(from)))
                });
            if !usable {
                forget(&mut slots, id);
                report
                    .checkpoints_rejected
                    .push(format!("checkpoint {} needs a segment that is gone", head.header.seq));
                continue;
            }
            match checkpoint::load(volume.file(id)?, &head)? {
                Ok(index) => {
                    let first_needed = head.segments.first().copied().unwrap_or(u32::MAX);
                    chosen = Some((id, head.header, index, first_needed));
                    break;
                }
                Err(why) => {
                    forget(&mut slots, id);
                    report.checkpoints_rejected.push(why);
                }
            }
        }
        let (first_seg, first_header) = c.segments.iter().next().map(|(&s, &(_, h))| (s, h)).unwrap_or_default();
        let attempt = report.clone();
        let (replay, start, lsn, next_txn, ck) = match chosen {
            Some((id, h, index, first_needed)) => {
                report.checkpoint = Some((h.seq, h.replay_lsn));
                let replay = Replay {
                    index,
                    index_lsn: h.index_lsn,
                    open: HashMap::new(),
                    max_txn: 0,
                    report,
                    chains: BTreeMap::new(),
                    unknown_floor: first_needed.min(loc_segment(h.replay_from)),
                    unknown_to: 0,
                };
                (replay, h.replay_from, h.replay_lsn, h.next_txn, Some((id, h.seq, h.index_lsn)))
            }
            None => {
                let replay = Replay {
                    index: Index::default(),
                    index_lsn: 0,
                    open: HashMap::new(),
                    max_txn: 0,
                    report,
                    chains: BTreeMap::new(),
                    unknown_floor: first_seg,
                    unknown_to: 0,
                };
                (replay, loc(first_seg, FILE_HEADER_LEN as u64), first_header.base_lsn, 1, None)
            }
        };
        let mut replay = replay;
        let end = scan(volume, &c.segments, start, lsn, ck.is_none(), &mut replay)?;
        match ck {
            Some((id, seq, index_lsn)) if end.lsn < index_lsn => {
                report = attempt;
                forget(&mut slots, id);
                report.checkpoints_rejected.push(format!(
                    "checkpoint {seq} holds the log up to LSN {index_lsn}, but the log ends at LSN {}",
                    end.lsn
                ));
            }
            _ => break (replay, end, next_txn, ck.is_none(), loc_segment(start)),
        }
    };
    let ScanEnd { tail, lsn, cut } = end;
    let Replay { mut index, open, max_txn, mut report, chains, unknown_floor, unknown_to, .. } = replay;
    // The COMMITs below the replay point (in its segment too), and those after it whose BEGIN
    // lies before it, were not read whole: what the checkpoint kept for their chains stays
    // kept (see `Log::chain_floor`) until compaction reads that part of the log or the part
    // that must be kept starts above it.
    let last = start_seg.max(unknown_to);
    let unknown_chains = (!full_scan && unknown_floor < last).then_some((unknown_floor, last));
    let mut left: Vec<ScanTxn> = open.into_values().collect();
    left.sort_by_key(|t| t.begin);
    for t in left {
        report.discarded_total += 1;
        if report.discarded.len() < MAX_REPORTED_DISCARDS {
            report.discarded.push(Discarded { txn: t.txn, lsn: t.lsn, reason: DiscardReason::Incomplete });
        }
    }

    let mut segments: BTreeMap<u32, FileId> = c.segments.iter().map(|(&s, &(id, _))| (s, id)).collect();
    // A header-only last segment that starts below where the segment before it ends: what a
    // rotation leaves when its header's flush failed and its file could not be given back (the
    // writer kept appending to the segment before it). It holds no record, so nothing is cut:
    // released in every mode.
    let stale = cut.as_ref().and_then(|k| {
        let last = *c.segments.keys().next_back()?;
        let &(id, h) = c.segments.get(&k.segment)?;
        let header_only = volume.file(id).and_then(|f| f.size()).ok() == Some(FILE_HEADER_LEN as u64);
        (can_grow
            && k.offset == 0
            && k.segment == last
            && k.segment > 0
            && c.segments.contains_key(&(k.segment - 1))
            && h.base_lsn < lsn
            && header_only)
            .then_some((k.segment, id))
    });
    let cut = match stale {
        Some((seg, id)) => {
            volume.release(id)?;
            segments.remove(&seg);
            report.segments_released += 1;
            None
        }
        None => cut,
    };
    if let Some(cut) = cut {
        if mode == RecoveryMode::AbsoluteConsistency {
            return Err(Error::Corruption { at: loc(cut.segment, cut.offset), detail: cut.reason });
        }
        report.truncated_at = Some(if cut.offset == 0 { tail } else { loc(cut.segment, cut.offset) });
        report.tail_reason = Some(cut.reason);
        // Later segments go first, newest first, and the cut segment is cut last: a crash
        // part way leaves a log that ends where it ended, or earlier, never a cut segment
        // followed by later ones (which a full scan would read across the gap).
        let later: Vec<u32> = segments.range(cut.segment..).map(|(&s, _)| s).rev().collect();
        for seg in later {
            let Some(&id) = segments.get(&seg) else { continue };
            let size = volume.file(id)?.size()?;
            if seg == cut.segment && cut.offset > 0 {
                report.bytes_truncated += size.saturating_sub(cut.offset);
                let f = volume.file_mut(id)?;
                f.truncate(cut.offset)?;
                f.flush()?;
            } else {
                report.bytes_truncated += size;
                volume.release(id)?;
                segments.remove(&seg);
            }
        }
        // A checkpoint's entries whose data or COMMIT lay past the cut are gone with it.
        let before = index.len();
        index.retain_before(tail, lsn);
        report.entries_dropped = (before - index.len()) as u64;
    }
    if !full_scan {
        // The rule checkpoints release by (lifecycle.rs, `write_checkpoint`): segments below the
        // oldest record of a live value and the replay point that no valid checkpoint needs,
        // such as an interrupted compaction's victims.
        let keep_from = index.first_live_segment().map_or(start_seg, |s| s.min(start_seg));
        let garbage: Vec<u32> =
            segments.range(..keep_from).map(|(&s, _)| s).filter(|s| !slots.iter().any(|n| n.needs(*s))).collect();
        for seg in garbage {
            if let Some(id) = segments.remove(&seg) {
                volume.release(id)?;
                report.segments_released += 1;
            }
        }
    }
    report.segments = segments.len() as u64;
    report.log_bytes = 0;
    for &id in segments.values() {
        report.log_bytes += volume.file(id)?.size()?;
    }
    report.millis = now_ms() - started;
    Ok(Recovered {
        index,
        report,
        segments,
        tail,
        next_lsn: lsn,
        next_txn: (max_txn + 1).max(ck_next_txn),
        checkpoint_slots: slots,
        checkpoint_seq,
        chains,
        unknown_chains,
    })
}

/// A state record for a table known only from a write that proves it existed: merged into
/// what is known (names and marks only ever come from real state records).
fn implied_table(table: u32) -> Op {
    Op::Table(TableRecord { op: crate::format::TABLE_OP_STATE, table, next_seq: 1, ..TableRecord::default() })
}

fn with_lsn(op: Op, lsn: u64, span: (u32, u32)) -> Op {
    match op {
        Op::Put { key, mut entry } => {
            entry.lsn = lsn;
            entry.span = span;
            Op::Put { key, entry }
        }
        d => d,
    }
}

/// Walks a COMMIT's chain back to BEGIN and returns the transaction's effects in order, or
/// why the chain does not prove the transaction complete.
fn prove_chain(t: &ScanTxn, commit_at: u64, h: &RecordHeader, payload: &[u8]) -> Result<Vec<Op>, String> {
    if let Some(why) = &t.broken {
        return Err(why.clone());
    }
    let (c, bases, id) = CommitPayload::decode_full(h.flags, payload).ok_or("COMMIT payload malformed")?;
    let mut chain: Vec<&Scanned> = Vec::new();
    let (mut from, mut link) = (commit_at, h.prev);
    while link != t.begin {
        if link >= from {
            return Err(format!("link at offset {from} to {link} does not point backwards"));
        }
        let r =
            t.records.binary_search_by_key(&link, |r| r.offset).ok().and_then(|i| t.records.get(i)).ok_or_else(
                || format!("link at offset {from} to {link} does not land on a record of this transaction"),
            )?;
        chain.push(r);
        from = link;
        link = r.prev;
    }
    if u64::try_from(chain.len()).ok() != Some(u64::from(c.records)) {
        return Err(format!("chain holds {} records, COMMIT states {}", chain.len(), c.records));
    }
    // Every record of the transaction must be on its chain: a valid record the chain skips
    // (a lost link, a stale copy) would otherwise vanish without a word.
    if chain.len() != t.records.len() {
        return Err(format!("{} records of this transaction are not on its chain", t.records.len() - chain.len()));
    }
    chain.reverse();

    let mut ops: Vec<Op> = Vec::new();
    let (mut chunks, mut bytes, mut crc) = (0u32, 0u64, Hasher::new());
    for r in chain {
        match (r.kind, &r.key) {
            (Kind::Put, Some(key)) if key.len() <= MAX_KEY_LEN => ops.push(Op::Put {
                key: key.clone(),
                entry: Entry { string_key: r.flags & FLAG_STRING_KEY != 0, ..Entry::default() },
            }),
            (Kind::Delete, Some(key)) => ops.push(Op::Delete { key: key.clone() }),
            (Kind::Chunk, _) => {
                let Some(Op::Put { entry, .. }) = ops.last_mut() else {
                    return Err(format!("chunk at offset {} belongs to no PUT", r.offset));
                };
                if r.len > 0 {
                    entry.chunks.push(ChunkLoc { record: r.offset, skip: 0, len: r.len });
                }
                entry.size += u64::from(r.len);
                chunks += 1;
                bytes += u64::from(r.len);
                crc.combine(&r.payload_crc);
            }
            _ => return Err(format!("unexpected record at offset {}", r.offset)),
        }
    }
    if chunks != c.chunks || bytes != c.value_bytes {
        return Err(format!(
            "chain holds {chunks} chunks / {bytes} bytes, COMMIT states {} / {}",
            c.chunks, c.value_bytes
        ));
    }
    let computed = crc.finalize();
    if computed != c.value_crc {
        return Err(format!("value checksum {computed:#010x}, COMMIT states {:#010x}", c.value_crc));
    }
    let numbered = h.flags & crate::format::FLAG_SEQ != 0;
    let span = (loc_segment(t.begin), loc_segment(commit_at));
    let (ops, taken) = crate::wal::log::assign_seqs(ops, &bases, numbered, h.lsn, span);
    // The tables this commit proves existed: those it numbers, or (a copy, unnumbered) those
    // it copies into. A full scan may meet them before their state record (released with
    // compaction's victims and restated later): they are implied here, named later.
    let mut tables: Vec<u32> = bases.iter().map(|b| b.0).collect();
    if !numbered {
        for op in &ops {
            if let Op::Put { key, .. } = op {
                tables.push(crate::format::split_ikey(key).0);
            }
        }
    }
    tables.sort_unstable();
    tables.dedup();
    let mut ops: Vec<Op> = tables.into_iter().filter(|&t| t != 0).map(implied_table).chain(ops).collect();
    if let Some(id) = id {
        ops.push(Op::Id { id: id.to_vec(), lsn: h.lsn, seqs: taken });
    }
    Ok(ops)
}
