//! The append path (FlintDB's write path): small records gather in a batch buffer that goes
//! out in one positioned write; a record at or above the direct-write threshold first writes
//! out the buffer, then goes straight to the file without being copied into it. A storage
//! failure poisons the writer (redb's `CheckedBackend`): reads go on, writes fail until the
//! store is reopened.
//!
//! The log is a run of segments on a [`Volume`]. When a record would carry the tail segment
//! past `segment_size`, the writer flushes that segment (so damage in a sealed segment can
//! never be a torn tail) and starts the next from a new file, whose header names its segment
//! number and base LSN. A record is never split across segments.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};

use crc32fast::Hasher;

use crate::error::{Error, Result};
use crate::format::{
    loc, loc_offset, loc_segment, record_crc, FileHeader, Kind, RecordHeader, FILE_HEADER_LEN, MAX_ID, MAX_SEGMENT,
    MAX_SEGMENT_LEN, RECORD_HEADER_LEN,
};
use crate::index::ChunkLoc;
use crate::storage::{read_exact_at, write_all_at, FileId, Storage, Volume};

/// Bytes of a block of the read cache: reads of small values load the aligned block holding
/// the record, so that values written together are read with one storage read (as SQLite's
/// page cache serves rows of one page), not two per value (header, then payload).
pub(crate) const READ_BLOCK: u64 = 16 << 10;
/// Bytes the read cache holds at most (FIFO eviction).
pub(crate) const READ_CACHE_BYTES: usize = 8 << 20;

/// Blocks of the log that no write will change again: whole blocks of sealed segments (the
/// last one possibly short), and whole blocks of the tail segment below the bytes known
/// written (`buf_start`; a rollback only cuts from there on). Segment numbers are never
/// reused, so a cached block never goes stale; a released segment's blocks are dropped.
#[derive(Default)]
struct ReadCache {
    blocks: HashMap<(u32, u64), Vec<u8>>,
    order: VecDeque<(u32, u64)>,
    bytes: usize,
}

impl ReadCache {
    fn insert(&mut self, key: (u32, u64), block: Vec<u8>) {
        self.bytes += block.len();
        if self.blocks.insert(key, block).is_none() {
            self.order.push_back(key);
        }
        while self.bytes > READ_CACHE_BYTES {
            let Some(old) = self.order.pop_front() else { break };
            if let Some(b) = self.blocks.remove(&old) {
                self.bytes -= b.len();
            }
        }
    }

    fn forget_segment(&mut self, seg: u32) {
        self.blocks.retain(|&(s, _), _| s != seg);
        self.order.retain(|&(s, _)| s != seg);
        self.bytes = self.blocks.values().map(Vec::len).sum();
    }
}

/// Where an appended record landed.
pub(crate) struct Appended {
    /// Location of the record ([`loc`]).
    pub offset: u64,
    /// Its LSN.
    pub lsn: u64,
    /// CRC32 state of its payload (combined into COMMIT's value checksum).
    pub payload_crc: Hasher,
}

pub(crate) struct Writer<V: Volume> {
    volume: V,
    /// Segment number -> file.
    segments: BTreeMap<u32, FileId>,
    /// The segment being appended to.
    tail_seg: u32,
    /// Offset in the tail segment where the next record goes; includes buffered bytes.
    tail: u64,
    /// Rotate before a record would carry the tail segment past this size, bytes.
    segment_size: u64,
    /// Records not yet written, which belong at `buf_start` of the tail segment. Every byte
    /// before `buf_start` was written (each write's full count checked); nothing from it on
    /// is known to be on storage.
    buf: Vec<u8>,
    buf_start: u64,
    /// LSN of the record at `buf_start`.
    buf_lsn: u64,
    next_lsn: u64,
    batch_bytes: usize,
    direct_threshold: usize,
    /// Bytes written since the last flush.
    dirty: bool,
    /// Record bytes appended since open.
    appended: u64,
    /// Flushes of the tail by [`Writer::sync`] since open.
    flushes: u64,
    /// Total size of the sealed segments, bytes (they no longer change).
    sealed_bytes: u64,
    poisoned: Option<Poison>,
    /// Blocks of the log read for small values (see [`ReadCache`]).
    cache: RefCell<ReadCache>,
    /// A file a failed rotation could not give back (its release failed too): it may hold the
    /// header of a segment that never began, so the next rotation writes its header over that
    /// one rather than create another file that a census would find claiming the same segment.
    spare: Option<FileId>,
}

/// The first storage failure, and whether the store may recover from it in place.
#[derive(Debug, Clone)]
struct Poison {
    cause: Error,
    /// A write refused for quota left nothing unknown behind: what reached storage is
    /// re-read by recovery. A failed flush leaves durability unknown: only a reopen clears it.
    recoverable: bool,
}

/// Where the writer starts: the segments, the tail, the sizes.
pub(crate) struct WriterInit {
    pub segments: BTreeMap<u32, FileId>,
    pub tail_seg: u32,
    pub tail: u64,
    pub next_lsn: u64,
    pub segment_size: u64,
    pub batch_bytes: usize,
    pub direct_threshold: usize,
}

impl<V: Volume> Writer<V> {
    pub fn new(volume: V, init: WriterInit) -> Self {
        let mut w = Writer {
            volume,
            segments: BTreeMap::new(),
            tail_seg: 0,
            tail: 0,
            segment_size: 0,
            buf: Vec::new(),
            buf_start: 0,
            buf_lsn: 0,
            next_lsn: 0,
            batch_bytes: 0,
            direct_threshold: 0,
            dirty: false,
            appended: 0,
            flushes: 0,
            sealed_bytes: 0,
            poisoned: None,
            cache: RefCell::new(ReadCache::default()),
            spare: None,
        };
        w.reset(init);
        w
    }

    /// Starts over where `init` says, on the same volume (a store reloaded after recovery ran
    /// again on it: an import installed): nothing buffered, not poisoned, the cache empty.
    pub fn reset(&mut self, init: WriterInit) {
        let WriterInit { segments, tail_seg, tail, next_lsn, segment_size, batch_bytes, direct_threshold } = init;
        self.segments = segments;
        self.tail_seg = tail_seg;
        self.tail = tail;
        self.segment_size = segment_size.min(MAX_SEGMENT_LEN);
        self.buf = Vec::with_capacity(batch_bytes.min(1 << 20));
        self.buf_start = tail;
        self.buf_lsn = next_lsn;
        self.next_lsn = next_lsn;
        self.batch_bytes = batch_bytes;
        self.direct_threshold = direct_threshold;
        self.dirty = false;
        self.appended = 0;
        self.poisoned = None;
        self.cache = RefCell::new(ReadCache::default());
        self.spare = None;
        self.recompute_sealed();
    }

    /// Seals the tail segment and starts the next one now, if the tail holds any record (an
    /// import empties a store so: every earlier segment can then be released).
    pub fn rotate_if_used(&mut self) -> Result<()> {
        if self.tail > FILE_HEADER_LEN as u64 {
            self.check()?;
            self.rotate()?;
        }
        Ok(())
    }

    fn recompute_sealed(&mut self) {
        self.sealed_bytes = self
            .segments
            .iter()
            .filter(|(&s, _)| s != self.tail_seg)
            .filter_map(|(_, &id)| self.volume.file(id).and_then(|f| f.size()).ok())
            .sum();
    }

    /// Record bytes appended since open.
    pub fn appended(&self) -> u64 {
        self.appended
    }

    /// Location where the next record goes.
    pub fn tail(&self) -> u64 {
        loc(self.tail_seg, self.tail)
    }

    /// Total bytes of all segments, including buffered records.
    pub fn log_bytes(&self) -> u64 {
        self.sealed_bytes + self.tail
    }

    /// Segment numbers, oldest first.
    pub fn segments(&self) -> &BTreeMap<u32, FileId> {
        &self.segments
    }

    /// The segment being appended to.
    pub fn tail_segment(&self) -> u32 {
        self.tail_seg
    }

    /// Size of a sealed segment, bytes.
    pub fn segment_len(&self, seg: u32) -> u64 {
        if seg == self.tail_seg {
            return self.tail;
        }
        self.segments.get(&seg).and_then(|&id| self.volume.file(id).and_then(|f| f.size()).ok()).unwrap_or(0)
    }

    /// Gives a sealed segment's file back to the volume. If the release fails, the segment
    /// stays the log's (its file still listed), so the next checkpoint gives it back before any
    /// later segment: a full scan never meets a later segment's deletes without the values
    /// they hide released first.
    pub fn release_segment(&mut self, seg: u32) -> Result<()> {
        if seg == self.tail_seg {
            return Ok(());
        }
        if let Some(&id) = self.segments.get(&seg) {
            let size = self.volume.file(id).and_then(|f| f.size()).unwrap_or(0);
            self.volume.release(id)?;
            self.segments.remove(&seg);
            self.cache.borrow_mut().forget_segment(seg);
            self.sealed_bytes = self.sealed_bytes.saturating_sub(size);
        }
        Ok(())
    }

    /// Gives back the file a failed rotation kept (see the field), if any: a checkpoint
    /// tries, so that a store closed before its next rotation leaves no such file. If the
    /// release fails again, the file stays the spare.
    pub fn release_spare(&mut self) {
        if let Some(id) = self.spare {
            if self.volume.release(id).is_ok() {
                self.spare = None;
            }
        }
    }

    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// Whether the writer is poisoned by a failure that recovery in place can clear.
    pub fn is_recoverable(&self) -> bool {
        self.poisoned.as_ref().is_some_and(|p| p.recoverable)
    }

    /// Fails with [`Error::Poisoned`] once a write has failed.
    pub fn check(&self) -> Result<()> {
        match &self.poisoned {
            Some(p) => Err(Error::Poisoned { cause: Box::new(p.cause.clone()) }),
            None => Ok(()),
        }
    }

    /// Records the first storage failure; every later write is refused.
    fn poison(&mut self, e: Error) -> Error {
        if e.is_storage_failure() && self.poisoned.is_none() {
            let recoverable = matches!(e, Error::QuotaExceeded { .. });
            self.poisoned = Some(Poison { cause: e.clone(), recoverable });
        }
        e
    }

    /// The error that poisoned the writer, if any.
    pub fn poison_cause(&self) -> Option<&Error> {
        self.poisoned.as_ref().map(|p| &p.cause)
    }

    /// Where the log stops being known written: the location and LSN of the first record not
    /// yet written in full (the log's end when nothing is buffered).
    pub fn unwritten(&self) -> (u64, u64) {
        (loc(self.tail_seg, self.buf_start), self.buf_lsn)
    }

    /// After a write refused for quota: cuts the tail segment back to the last byte known
    /// written, flushes the cut, and clears the poison, so the log is exactly the records
    /// written before the failure and appending can go on. Returns where the log now ends
    /// (location and next LSN): every record at or after it is gone.
    ///
    /// Errors: the cut or its flush failing poisons the writer for good (reopen to recover).
    pub fn rollback(&mut self) -> Result<(u64, u64)> {
        let (cut, lsn) = self.unwritten();
        let offset = self.buf_start;
        let r = self.tail_file().and_then(|f| {
            f.truncate(offset)?;
            f.flush()
        });
        if let Err(e) = r {
            let e = self.poison(e);
            if let Some(p) = &mut self.poisoned {
                p.recoverable = false;
            }
            return Err(e);
        }
        self.appended = self.appended.saturating_sub(self.tail - offset);
        self.tail = offset;
        self.buf.clear();
        self.next_lsn = lsn;
        self.dirty = false;
        self.poisoned = None;
        Ok((cut, lsn))
    }

    fn tail_file(&mut self) -> Result<&mut V::File> {
        let id = *self.segments.get(&self.tail_seg).ok_or_else(|| Error::io("write", "tail segment has no file"))?;
        self.volume.file_mut(id)
    }

    /// Seals the tail segment (written out and flushed) and starts the next one. All or
    /// nothing: if the new segment's file or header fails, the tail stays where it was (the
    /// new file given back) and the writer is poisoned by the error.
    fn rotate(&mut self) -> Result<()> {
        self.sync()?;
        if self.tail_seg >= MAX_SEGMENT {
            return Err(Error::io("write", "segment numbers exhausted"));
        }
        let id = match self.spare.take() {
            Some(id) => id,
            None => self.volume.create().map_err(|e| self.poison(e))?,
        };
        let seg = self.tail_seg + 1;
        // The header is made durable before any record goes in: a segment header that fails
        // its check can then only belong to a file whose creation was cut short.
        let header = FileHeader { base_lsn: self.next_lsn, segment: seg }.encode();
        let r = self.volume.file_mut(id).and_then(|f| {
            write_all_at(f, &header, 0)?;
            f.flush()
        });
        if let Err(e) = r {
            if self.volume.release(id).is_err() {
                self.spare = Some(id);
            }
            return Err(self.poison(e));
        }
        self.sealed_bytes += self.tail;
        self.tail_seg = seg;
        self.segments.insert(seg, id);
        self.buf.clear();
        self.buf_start = FILE_HEADER_LEN as u64;
        self.buf_lsn = self.next_lsn;
        self.tail = FILE_HEADER_LEN as u64;
        Ok(())
    }

    /// Appends one record whose payload is the concatenation of `parts`.
    pub fn append(&mut self, kind: Kind, flags: u8, txn: u64, prev: u64, parts: &[&[u8]]) -> Result<Appended> {
        self.check()?;
        if self.next_lsn > MAX_ID || txn > MAX_ID {
            // Recovery refuses such a record: it must never be written, let alone acknowledged.
            return Err(Error::io("write", "the log's LSNs or transaction ids are exhausted (2^62)"));
        }
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let rec_len = (RECORD_HEADER_LEN + len) as u64;
        if self.tail + rec_len > self.segment_size && self.tail > FILE_HEADER_LEN as u64 && self.volume.has_free() {
            self.rotate()?;
        }
        if self.tail + rec_len >= MAX_SEGMENT_LEN {
            return Err(Error::io("write", "the log file reached its 1 TiB limit"));
        }
        let lsn = self.next_lsn;
        let offset = self.tail;
        let (header, payload_crc) = RecordHeader::encode(kind, flags, lsn, txn, prev, parts);
        if RECORD_HEADER_LEN + len >= self.direct_threshold {
            self.write_buffer()?;
            let mut at = offset;
            let r = self.tail_file().and_then(|file| {
                write_all_at(file, &header, at)?;
                at += RECORD_HEADER_LEN as u64;
                for p in parts {
                    write_all_at(file, p, at)?;
                    at += p.len() as u64;
                }
                Ok(())
            });
            r.map_err(|e| self.poison(e))?;
            self.dirty = true;
            self.buf_start = at;
            self.buf_lsn = lsn + 1;
        } else {
            if self.buf.is_empty() {
                self.buf_lsn = lsn;
            }
            self.buf.extend_from_slice(&header);
            for p in parts {
                self.buf.extend_from_slice(p);
            }
        }
        self.tail = offset + rec_len;
        self.appended += rec_len;
        self.next_lsn += 1;
        // A full buffer goes out now, the record's LSN counted first: what was written is then
        // exactly the records below `next_lsn` (a rollback must never hand out a written LSN).
        if self.buf.len() >= self.batch_bytes {
            self.write_buffer()?;
        }
        Ok(Appended { offset: loc(self.tail_seg, offset), lsn, payload_crc })
    }

    /// Writes the batch buffer out in one positioned write (no flush).
    pub fn write_buffer(&mut self) -> Result<()> {
        self.check()?;
        if self.buf.is_empty() {
            return Ok(());
        }
        let (buf_start, buf) = (self.buf_start, std::mem::take(&mut self.buf));
        let r = self.tail_file().and_then(|file| write_all_at(file, &buf, buf_start));
        self.buf = buf;
        r.map_err(|e| self.poison(e))?;
        self.buf_start += self.buf.len() as u64;
        self.buf.clear();
        self.buf_lsn = self.next_lsn;
        self.dirty = true;
        Ok(())
    }

    /// Flushes the tail segment whatever this writer wrote: after recovery, what it exposes is
    /// made durable (a previous holder may have written records it never flushed, and a new
    /// leader answers for them).
    pub fn flush_tail(&mut self) -> Result<()> {
        self.tail_file().and_then(|f| f.flush()).map_err(|e| {
            let e = self.poison(e);
            if let Some(p) = &mut self.poisoned {
                p.recoverable = false;
            }
            e
        })
    }

    /// Writes the buffer and makes everything durable.
    pub fn sync(&mut self) -> Result<()> {
        self.write_buffer()?;
        if self.dirty {
            // A failed flush leaves durability unknown: never recoverable in place.
            self.tail_file().and_then(|f| f.flush()).map_err(|e| {
                let e = self.poison(e);
                if let Some(p) = &mut self.poisoned {
                    p.recoverable = false;
                }
                e
            })?;
            self.dirty = false;
            self.flushes += 1;
        }
        Ok(())
    }

    /// Flushes of the tail by [`Writer::sync`] since open (group commits and the flushes reads,
    /// checkpoints and compaction ask for); a sync with nothing written since the last one
    /// flushes nothing and is not counted.
    pub fn flushes(&self) -> u64 {
        self.flushes
    }

    /// Reads the value bytes of `loc` into `out`, re-checking the record's header and CRC
    /// (UnisonDB skipped this for the active segment). Only committed, written records are
    /// ever read.
    pub fn read_chunk(&self, loc: &ChunkLoc, out: &mut Vec<u8>) -> Result<()> {
        let seg = loc_segment(loc.record);
        let offset = loc_offset(loc.record);
        let id = *self.segments.get(&seg).ok_or_else(|| Error::Corruption {
            at: loc.record,
            detail: format!("index points into segment {seg}, which is gone"),
        })?;
        let file = self.volume.file(id)?;
        let small = RECORD_HEADER_LEN as u64 + u64::from(loc.skip) + u64::from(loc.len) <= READ_BLOCK / 2;
        if small && self.read_cached(loc, seg, file, out)? {
            return Ok(());
        }
        let mut hdr = [0u8; RECORD_HEADER_LEN];
        if !read_exact_at(file, &mut hdr, offset)? {
            return Err(Error::Corruption { at: loc.record, detail: "record past end of log".into() });
        }
        let h = RecordHeader::decode(&hdr)
            .map_err(|e| Error::Corruption { at: loc.record, detail: format!("bad record header: {e:?}") })?;
        let need = u64::from(loc.skip) + u64::from(loc.len);
        if need > u64::from(h.len) || !matches!(h.kind, Kind::Chunk | Kind::PutOne) {
            return Err(Error::Corruption { at: loc.record, detail: "index points at the wrong record".into() });
        }
        out.clear();
        out.resize(h.len as usize, 0);
        if !read_exact_at(file, out, offset + RECORD_HEADER_LEN as u64)? {
            return Err(Error::Corruption { at: loc.record, detail: "record past end of log".into() });
        }
        let mut pcrc = Hasher::new();
        pcrc.update(out);
        let computed = record_crc(&hdr, &pcrc);
        if computed != h.crc {
            return Err(Error::ChecksumMismatch { at: loc.record, stored: h.crc, computed });
        }
        out.truncate((u64::from(loc.skip) + u64::from(loc.len)) as usize);
        out.drain(..loc.skip as usize);
        Ok(())
    }

    /// Reads the record of `loc` from the cached block that holds it whole, loading that block
    /// if it may be cached. Returns `false` (nothing read) when the record is not in one
    /// cacheable block: the caller reads it directly. Checks as [`Writer::read_chunk`] does.
    fn read_cached(&self, loc: &ChunkLoc, seg: u32, file: &V::File, out: &mut Vec<u8>) -> Result<bool> {
        let offset = loc_offset(loc.record);
        let index = offset / READ_BLOCK;
        let start = index * READ_BLOCK;
        let mut cache = self.cache.borrow_mut();
        if !cache.blocks.contains_key(&(seg, index)) {
            // Stable bytes only: the tail segment's whole blocks below what is known written.
            let end = if seg == self.tail_seg {
                if start + READ_BLOCK > self.buf_start {
                    return Ok(false);
                }
                start + READ_BLOCK
            } else {
                (start + READ_BLOCK).min(file.size()?)
            };
            if end <= start {
                return Ok(false);
            }
            let mut block = vec![0u8; (end - start) as usize];
            if !read_exact_at(file, &mut block, start)? {
                return Ok(false);
            }
            cache.insert((seg, index), block);
        }
        let Some(block) = cache.blocks.get(&(seg, index)) else { return Ok(false) };
        let rel = (offset - start) as usize;
        let Some(hdr) =
            block.get(rel..rel + RECORD_HEADER_LEN).and_then(|b| <[u8; RECORD_HEADER_LEN]>::try_from(b).ok())
        else {
            return Ok(false);
        };
        let h = RecordHeader::decode(&hdr)
            .map_err(|e| Error::Corruption { at: loc.record, detail: format!("bad record header: {e:?}") })?;
        let need = u64::from(loc.skip) + u64::from(loc.len);
        if need > u64::from(h.len) || !matches!(h.kind, Kind::Chunk | Kind::PutOne) {
            return Err(Error::Corruption { at: loc.record, detail: "index points at the wrong record".into() });
        }
        let from = rel + RECORD_HEADER_LEN;
        let Some(payload) = block.get(from..from + h.len as usize) else { return Ok(false) };
        let mut pcrc = Hasher::new();
        pcrc.update(payload);
        let computed = record_crc(&hdr, &pcrc);
        if computed != h.crc {
            return Err(Error::ChecksumMismatch { at: loc.record, stored: h.crc, computed });
        }
        out.clear();
        out.extend_from_slice(payload.get(loc.skip as usize..need as usize).unwrap_or_default());
        Ok(true)
    }

    pub fn volume(&self) -> &V {
        &self.volume
    }

    pub fn volume_mut(&mut self) -> &mut V {
        &mut self.volume
    }

    pub fn into_volume(self) -> V {
        self.volume
    }
}
