//! The append path (FlintDB's write path): small records gather in a batch buffer that goes
//! out in one positioned write; a record at or above the direct-write threshold first writes
//! out the buffer, then goes straight to the file without being copied into it. A storage
//! failure poisons the writer (redb's `CheckedBackend`): reads go on, writes fail until the
//! store is reopened.

use crc32fast::Hasher;

use crate::error::{Error, Result};
use crate::format::{record_crc, Kind, RecordHeader, RECORD_HEADER_LEN};
use crate::index::ChunkLoc;
use crate::storage::{read_exact_at, write_all_at, Storage};

/// Where an appended record landed.
pub(crate) struct Appended {
    /// File offset of the record, bytes.
    pub offset: u64,
    /// Its LSN.
    pub lsn: u64,
    /// CRC32 state of its payload (combined into COMMIT's value checksum).
    pub payload_crc: Hasher,
}

pub(crate) struct Writer<S> {
    storage: S,
    /// File offset where the next record goes; includes buffered bytes.
    tail: u64,
    /// Records not yet written, which belong at `buf_start`.
    buf: Vec<u8>,
    buf_start: u64,
    next_lsn: u64,
    batch_bytes: usize,
    direct_threshold: usize,
    /// Bytes written since the last flush.
    dirty: bool,
    poisoned: Option<Poison>,
}

/// The first storage failure, and whether the store may recover from it in place.
#[derive(Debug, Clone)]
struct Poison {
    cause: String,
    /// A write refused for quota left nothing unknown behind: what reached storage is
    /// re-read by recovery. A failed flush leaves durability unknown: only a reopen clears it.
    recoverable: bool,
}

impl<S: Storage> Writer<S> {
    pub fn new(storage: S, tail: u64, next_lsn: u64, batch_bytes: usize, direct_threshold: usize) -> Self {
        Writer {
            storage,
            tail,
            buf: Vec::with_capacity(batch_bytes.min(1 << 20)),
            buf_start: tail,
            next_lsn,
            batch_bytes,
            direct_threshold,
            dirty: false,
            poisoned: None,
        }
    }

    pub fn tail(&self) -> u64 {
        self.tail
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
            Some(p) => Err(Error::Poisoned { cause: p.cause.clone() }),
            None => Ok(()),
        }
    }

    /// Records the first storage failure; every later write is refused.
    fn poison(&mut self, e: Error) -> Error {
        if e.is_storage_failure() && self.poisoned.is_none() {
            let recoverable = matches!(e, Error::QuotaExceeded { .. });
            self.poisoned = Some(Poison { cause: e.to_string(), recoverable });
        }
        e
    }

    /// Starts over at `tail` after recovery re-read the log: drops the batch buffer and the
    /// poison.
    pub fn reset(&mut self, tail: u64, next_lsn: u64) {
        self.tail = tail;
        self.buf.clear();
        self.buf_start = tail;
        self.next_lsn = next_lsn;
        self.dirty = false;
        self.poisoned = None;
    }

    /// Appends one record whose payload is the concatenation of `parts`.
    pub fn append(&mut self, kind: Kind, flags: u8, txn: u64, prev: u64, parts: &[&[u8]]) -> Result<Appended> {
        self.check()?;
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let lsn = self.next_lsn;
        let offset = self.tail;
        let (header, payload_crc) = RecordHeader::encode(kind, flags, lsn, txn, prev, parts);
        if RECORD_HEADER_LEN + len >= self.direct_threshold {
            self.write_buffer()?;
            let mut at = offset;
            let r = write_all_at(&mut self.storage, &header, at).and_then(|()| {
                at += RECORD_HEADER_LEN as u64;
                for p in parts {
                    write_all_at(&mut self.storage, p, at)?;
                    at += p.len() as u64;
                }
                Ok(())
            });
            r.map_err(|e| self.poison(e))?;
            self.dirty = true;
            self.buf_start = at;
        } else {
            self.buf.extend_from_slice(&header);
            for p in parts {
                self.buf.extend_from_slice(p);
            }
            if self.buf.len() >= self.batch_bytes {
                self.write_buffer()?;
            }
        }
        self.tail = offset + (RECORD_HEADER_LEN + len) as u64;
        self.next_lsn += 1;
        Ok(Appended { offset, lsn, payload_crc })
    }

    /// Writes the batch buffer out in one positioned write (no flush).
    pub fn write_buffer(&mut self) -> Result<()> {
        self.check()?;
        if self.buf.is_empty() {
            return Ok(());
        }
        write_all_at(&mut self.storage, &self.buf, self.buf_start).map_err(|e| self.poison(e))?;
        self.buf_start += self.buf.len() as u64;
        self.buf.clear();
        self.dirty = true;
        Ok(())
    }

    /// Writes the buffer and makes everything durable.
    pub fn sync(&mut self) -> Result<()> {
        self.write_buffer()?;
        if self.dirty {
            // A failed flush leaves durability unknown: never recoverable in place.
            self.storage.flush().map_err(|e| {
                let e = self.poison(e);
                if let Some(p) = &mut self.poisoned {
                    p.recoverable = false;
                }
                e
            })?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Reads the value bytes of `loc` into `out`, re-checking the record's header and CRC
    /// (UnisonDB skipped this for the active segment). Only committed, written records are
    /// ever read.
    pub fn read_chunk(&self, loc: &ChunkLoc, out: &mut Vec<u8>) -> Result<()> {
        let mut hdr = [0u8; RECORD_HEADER_LEN];
        if !read_exact_at(&self.storage, &mut hdr, loc.record)? {
            return Err(Error::Corruption { offset: loc.record, detail: "record past end of log".into() });
        }
        let h = RecordHeader::decode(&hdr)
            .map_err(|e| Error::Corruption { offset: loc.record, detail: format!("bad record header: {e:?}") })?;
        let need = u64::from(loc.skip) + u64::from(loc.len);
        if need > u64::from(h.len) || !matches!(h.kind, Kind::Chunk | Kind::PutOne) {
            return Err(Error::Corruption { offset: loc.record, detail: "index points at the wrong record".into() });
        }
        out.clear();
        out.resize(h.len as usize, 0);
        if !read_exact_at(&self.storage, out, loc.record + RECORD_HEADER_LEN as u64)? {
            return Err(Error::Corruption { offset: loc.record, detail: "record past end of log".into() });
        }
        let mut pcrc = Hasher::new();
        pcrc.update(out);
        let computed = record_crc(&hdr, &pcrc);
        if computed != h.crc {
            return Err(Error::ChecksumMismatch { offset: loc.record, stored: h.crc, computed });
        }
        out.truncate((u64::from(loc.skip) + u64::from(loc.len)) as usize);
        out.drain(..loc.skip as usize);
        Ok(())
    }

    pub fn storage(&self) -> &S {
        &self.storage
    }

    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.storage
    }

    pub fn into_storage(self) -> S {
        self.storage
    }
}
