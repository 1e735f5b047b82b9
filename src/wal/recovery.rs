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

use std::collections::HashMap;

use crc32fast::Hasher;

use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::format::{
    record_crc, split_put_one, CommitPayload, FileHeader, HeaderError, Kind, RecordHeader, FILE_HEADER_LEN,
    FLAG_STRING_KEY, MAX_ID, MAX_KEY_LEN, RECORD_HEADER_LEN,
};
use crate::index::{ChunkLoc, Entry, Index, Op};
use crate::storage::{read_exact_at, write_all_at, Storage};

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
}

impl std::fmt::Display for DiscardReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DiscardReason::Aborted => write!(f, "aborted"),
            DiscardReason::Incomplete => write!(f, "incomplete: no COMMIT"),
            DiscardReason::BrokenChain(why) => write!(f, "broken chain: {why}"),
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
    /// Bytes cut from the end of the log.
    pub bytes_truncated: u64,
    /// File offset where the log was cut, bytes.
    pub truncated_at: Option<u64>,
    /// Why the first invalid record was invalid.
    pub tail_reason: Option<String>,
    /// Valid records scanned.
    pub records: u64,
    /// Log size after recovery, bytes.
    pub log_bytes: u64,
    /// Time spent, ms.
    pub millis: f64,
}

/// The state recovery hands to the store.
pub(crate) struct Recovered {
    pub index: Index,
    pub report: RecoveryReport,
    /// Where the next record goes.
    pub tail: u64,
    pub next_lsn: u64,
    pub next_txn: u64,
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

/// Runs recovery over `storage`, creating the file header on an empty file.
pub(crate) fn recover<S: Storage>(storage: &mut S, mode: RecoveryMode) -> Result<Recovered> {
    let started = now_ms();
    let size = storage.size()?;
    let mut report = RecoveryReport::default();

    // A file shorter than its header holds no record: a creation cut short. Start it anew.
    if size < FILE_HEADER_LEN as u64 {
        if size > 0 {
            if mode == RecoveryMode::AbsoluteConsistency {
                return Err(Error::Corruption { offset: 0, detail: "file shorter than its header".into() });
            }
            report.bytes_truncated = size;
            report.truncated_at = Some(0);
            report.tail_reason = Some("file shorter than its header".into());
            storage.truncate(0)?;
        }
        let header = FileHeader { base_lsn: 1, segment: 0 };
        write_all_at(storage, &header.encode(), 0)?;
        storage.flush()?;
        report.log_bytes = FILE_HEADER_LEN as u64;
        report.millis = now_ms() - started;
        return Ok(Recovered {
            index: Index::default(),
            report,
            tail: FILE_HEADER_LEN as u64,
            next_lsn: 1,
            next_txn: 1,
        });
    }

    let mut hb = [0u8; FILE_HEADER_LEN];
    if !read_exact_at(storage, &mut hb, 0)? {
        return Err(Error::Corruption { offset: 0, detail: "file header unreadable".into() });
    }
    let header = FileHeader::decode(&hb).map_err(|e| match e {
        HeaderError::BadMagic => Error::Corruption { offset: 0, detail: "not a walnut log (bad magic)".into() },
        HeaderError::UnsupportedVersion(v) => Error::Corruption {
            offset: 0,
            detail: format!("format version {v} is not supported (this build reads version 1)"),
        },
        HeaderError::Checksum { stored, computed } => Error::ChecksumMismatch { offset: 0, stored, computed },
        HeaderError::Malformed(what) => Error::Corruption { offset: 0, detail: format!("file header: {what}") },
    })?;

    let mut index = Index::default();
    let mut open: HashMap<u64, ScanTxn> = HashMap::new();
    let mut max_txn = 0u64;
    let mut offset = FILE_HEADER_LEN as u64;
    let mut lsn = header.base_lsn;
    let mut scanner = Scanner { storage: &*storage, size, buf: Vec::new(), scratch: Vec::new() };
    let discard = |report: &mut RecoveryReport, txn: u64, lsn: u64, reason: DiscardReason| {
        report.discarded_total += 1;
        if report.discarded.len() < MAX_REPORTED_DISCARDS {
            report.discarded.push(Discarded { txn, lsn, reason });
        }
    };

    while offset < size {
        let (h, pcrc) = match scanner.record(offset, lsn)? {
            Ok(r) => r,
            Err(reason) => {
                report.tail_reason = Some(reason);
                break;
            }
        };
        report.records += 1;
        max_txn = max_txn.max(h.txn);
        let payload = &scanner.buf;
        match h.kind {
            Kind::Begin => {
                if let Some(old) = open.remove(&h.txn) {
                    discard(
                        &mut report,
                        h.txn,
                        old.lsn,
                        DiscardReason::BrokenChain("transaction id begun twice".into()),
                    );
                }
                let broken = (h.prev != 0).then(|| "BEGIN links to a record".to_string());
                open.insert(h.txn, ScanTxn { txn: h.txn, begin: offset, lsn: h.lsn, records: Vec::new(), broken });
            }
            Kind::Put | Kind::Chunk | Kind::Delete => {
                if let Some(t) = open.get_mut(&h.txn) {
                    let key = (h.kind != Kind::Chunk).then(|| payload.clone());
                    t.records.push(Scanned {
                        offset,
                        prev: h.prev,
                        kind: h.kind,
                        flags: h.flags,
                        len: h.len,
                        payload_crc: pcrc,
                        key,
                    });
                }
                // A record of a transaction never begun (its BEGIN was cut, or the id is
                // bogus) cannot become visible: its COMMIT will find no chain.
            }
            Kind::Commit => match open.remove(&h.txn) {
                Some(t) => match prove_chain(&t, offset, &h, payload) {
                    Ok(ops) => {
                        for op in ops {
                            index.apply(with_lsn(op, h.lsn));
                        }
                        report.committed += 1;
                    }
                    Err(why) => discard(&mut report, h.txn, t.lsn, DiscardReason::BrokenChain(why)),
                },
                None => discard(&mut report, h.txn, h.lsn, DiscardReason::BrokenChain("COMMIT without BEGIN".into())),
            },
            Kind::Abort => {
                if let Some(t) = open.remove(&h.txn) {
                    discard(&mut report, h.txn, t.lsn, DiscardReason::Aborted);
                }
            }
            // The payload in `buf` may be only its first piece: the value length comes from
            // the header.
            Kind::PutOne => match split_put_one(payload) {
                Some((key, _)) if h.prev == 0 => {
                    let skip = (2 + key.len()) as u32;
                    let len = h.len - skip;
                    let chunks = if len == 0 { Vec::new() } else { vec![ChunkLoc { record: offset, skip, len }] };
                    let entry =
                        Entry { chunks, size: u64::from(len), string_key: h.flags & FLAG_STRING_KEY != 0, lsn: h.lsn };
                    index.apply(Op::Put { key: key.to_vec(), entry });
                    report.committed += 1;
                }
                _ => discard(&mut report, h.txn, h.lsn, DiscardReason::BrokenChain("malformed PUT_ONE".into())),
            },
            Kind::DeleteOne => {
                if h.prev == 0 {
                    index.apply(Op::Delete { key: payload.clone() });
                    report.committed += 1;
                } else {
                    discard(&mut report, h.txn, h.lsn, DiscardReason::BrokenChain("malformed DELETE_ONE".into()));
                }
            }
        }
        offset += h.record_len();
        lsn += 1;
    }

    let mut left: Vec<ScanTxn> = open.into_values().collect();
    left.sort_by_key(|t| t.begin);
    for t in left {
        discard(&mut report, t.txn, t.lsn, DiscardReason::Incomplete);
    }

    if offset < size {
        if mode == RecoveryMode::AbsoluteConsistency {
            return Err(Error::Corruption {
                offset,
                detail: report.tail_reason.unwrap_or_else(|| "invalid record".into()),
            });
        }
        report.bytes_truncated = size - offset;
        report.truncated_at = Some(offset);
        storage.truncate(offset)?;
        storage.flush()?;
    }
    report.log_bytes = offset;
    report.millis = now_ms() - started;
    Ok(Recovered { index, report, tail: offset, next_lsn: lsn, next_txn: max_txn + 1 })
}

fn with_lsn(op: Op, lsn: u64) -> Op {
    match op {
        Op::Put { key, mut entry } => {
            entry.lsn = lsn;
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
    let c = CommitPayload::decode(payload).ok_or("COMMIT payload malformed")?;
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
    Ok(ops)
}
