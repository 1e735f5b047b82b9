//! Checkpoints: the index persisted, so that open reads it and replays only the log after it
//! (Bitcask's hint files are the classic form). A checkpoint file is an 80-byte
//! [`CheckpointHeader`] and a body: the segment numbers it needs, then every index entry in
//! key order (docs/FORMAT.md, "Checkpoint"). Two checkpoint files are used in turn, so a torn
//! write of one leaves the other: the pair is also the manifest of live segments.

use crc32fast::Hasher;

use crate::error::Result;
use crate::format::{
    loc_segment, CheckpointHeader, CHECKPOINT_HEADER_LEN, CHECKPOINT_MAGIC, FLAG_STRING_KEY, MAX_KEY_LEN,
};
use crate::index::{ChunkLoc, Entry, Index};
use crate::storage::{read_exact_at, write_all_at, Storage};

/// A decoded, validated checkpoint.
#[derive(Debug)]
pub(crate) struct Checkpoint {
    pub header: CheckpointHeader,
    pub segments: Vec<u32>,
    pub entries: Vec<(Vec<u8>, Entry)>,
}

/// Bytes gathered before each write of the body.
const PIECE: usize = 1 << 20;

struct BodyWriter<'a, F> {
    file: &'a mut F,
    at: u64,
    buf: Vec<u8>,
    crc: Hasher,
}

impl<F: Storage> BodyWriter<'_, F> {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= PIECE {
            self.drain()?;
        }
        Ok(())
    }

    fn drain(&mut self) -> Result<()> {
        write_all_at(self.file, &self.buf, self.at)?;
        self.crc.update(&self.buf);
        self.at += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}

/// Writes a checkpoint of `index` into `file` and flushes it. `header` supplies seq, replay
/// position and next txn; the body fields are filled in here.
///
/// Order matters for a crash at any byte: the header is first overwritten in place by one with
/// the same magic but no valid CRC (the first 8 bytes never change, so a torn first page can
/// never make the file unrecognizable), then the file is cut to the header, the body written
/// and flushed, and the real header written and flushed last.
pub(crate) fn write<F: Storage>(
    file: &mut F,
    mut header: CheckpointHeader,
    segments: &[u32],
    index: &Index,
) -> Result<()> {
    let mut invalid = [0u8; CHECKPOINT_HEADER_LEN];
    if let Some(magic) = invalid.get_mut(..8) {
        magic.copy_from_slice(&CHECKPOINT_MAGIC);
    }
    write_all_at(file, &invalid, 0)?;
    file.truncate(CHECKPOINT_HEADER_LEN as u64)?;
    let mut w = BodyWriter {
        file: &mut *file,
        at: CHECKPOINT_HEADER_LEN as u64,
        buf: Vec::with_capacity(PIECE),
        crc: Hasher::new(),
    };
    for s in segments {
        w.put(&s.to_le_bytes())?;
    }
    let mut entries = 0u64;
    for (key, e) in index.iter() {
        w.put(&(key.len() as u16).to_le_bytes())?;
        w.put(key)?;
        w.put(&[if e.string_key { FLAG_STRING_KEY } else { 0 }])?;
        w.put(&e.size.to_le_bytes())?;
        w.put(&e.lsn.to_le_bytes())?;
        w.put(&e.span.0.to_le_bytes())?;
        w.put(&e.span.1.to_le_bytes())?;
        w.put(&(e.chunks.len() as u32).to_le_bytes())?;
        for c in &e.chunks {
            w.put(&c.record.to_le_bytes())?;
            w.put(&c.skip.to_le_bytes())?;
            w.put(&c.len.to_le_bytes())?;
        }
        entries += 1;
    }
    w.drain()?;
    header.entries = entries;
    header.body_len = w.at - CHECKPOINT_HEADER_LEN as u64;
    header.body_crc = w.crc.finalize();
    header.segments = segments.len() as u32;
    // The body is durable before the header that vouches for it is written.
    file.flush()?;
    write_all_at(file, &header.encode(), 0)?;
    file.flush()
}

/// A cursor over a body that fails (with `None`) instead of reading past its end.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// Size of an entry with a one-byte key and no chunks: bounds how many entries a body holds.
const MIN_ENTRY: usize = 2 + 1 + 1 + 8 + 8 + 4 + 4 + 4;
const CHUNK_LEN: usize = 16;

/// Reads and validates the checkpoint in `file`. `Ok(Err(why))` if it is not a valid
/// checkpoint (torn, corrupt, inconsistent); `Err` only if storage fails.
pub(crate) fn read<F: Storage>(file: &F) -> Result<Result<Checkpoint, String>> {
    let size = file.size()?;
    let mut hb = [0u8; CHECKPOINT_HEADER_LEN];
    if size < CHECKPOINT_HEADER_LEN as u64 || !read_exact_at(file, &mut hb, 0)? {
        return Ok(Err("checkpoint header incomplete".into()));
    }
    let Some(h) = CheckpointHeader::decode(&hb) else { return Ok(Err("checkpoint header invalid".into())) };
    if h.body_len > size - CHECKPOINT_HEADER_LEN as u64 {
        return Ok(Err("checkpoint body incomplete".into()));
    }
    let Ok(len) = usize::try_from(h.body_len) else { return Ok(Err("checkpoint body too large".into())) };
    let mut body = vec![0u8; len];
    if !read_exact_at(file, &mut body, CHECKPOINT_HEADER_LEN as u64)? {
        return Ok(Err("checkpoint body incomplete".into()));
    }
    if crc32fast::hash(&body) != h.body_crc {
        return Ok(Err("checkpoint body checksum mismatch".into()));
    }
    Ok(decode_body(&h, &body).ok_or_else(|| "checkpoint body malformed".to_string()))
}

fn decode_body(h: &CheckpointHeader, body: &[u8]) -> Option<Checkpoint> {
    let mut c = Cursor(body);
    let nseg = usize::try_from(h.segments).ok()?;
    if nseg.checked_mul(4)? > body.len() {
        return None;
    }
    let mut segments = Vec::with_capacity(nseg);
    for _ in 0..nseg {
        segments.push(c.u32()?);
    }
    if !segments.windows(2).all(|w| w[0] < w[1]) {
        return None;
    }
    let n = usize::try_from(h.entries).ok()?;
    if n > body.len() / MIN_ENTRY + 1 {
        return None;
    }
    let mut entries: Vec<(Vec<u8>, Entry)> = Vec::with_capacity(n);
    for _ in 0..n {
        let key_len = usize::from(c.u16()?);
        if key_len == 0 || key_len > MAX_KEY_LEN {
            return None;
        }
        let key = c.take(key_len)?.to_vec();
        if entries.last().is_some_and(|(prev, _)| *prev >= key) {
            return None; // keys must ascend strictly
        }
        let flags = c.u8()?;
        let size = c.u64()?;
        let lsn = c.u64()?;
        let span = (c.u32()?, c.u32()?);
        if span.0 > span.1 || segments.binary_search(&span.0).is_err() || segments.binary_search(&span.1).is_err() {
            return None;
        }
        let nchunks = usize::try_from(c.u32()?).ok()?;
        if nchunks.checked_mul(CHUNK_LEN)? > c.0.len() {
            return None;
        }
        let mut chunks = Vec::with_capacity(nchunks);
        let mut total = 0u64;
        for _ in 0..nchunks {
            let chunk = ChunkLoc { record: c.u64()?, skip: c.u32()?, len: c.u32()? };
            let seg = loc_segment(chunk.record);
            if chunk.len == 0 || seg < span.0 || seg > span.1 || segments.binary_search(&seg).is_err() {
                return None;
            }
            total += u64::from(chunk.len);
            chunks.push(chunk);
        }
        if total != size || flags & !FLAG_STRING_KEY != 0 {
            return None;
        }
        entries.push((key, Entry { chunks, size, string_key: flags & FLAG_STRING_KEY != 0, lsn, span }));
    }
    if !c.0.is_empty() {
        return None;
    }
    Some(Checkpoint { header: *h, segments, entries })
}
