//! Checkpoints: the index persisted, so that open reads it and replays only the log after it
//! (Bitcask's hint files are the classic form). A checkpoint file is an 88-byte
//! [`CheckpointHeader`] and a body: the segment numbers it needs, then every index entry in
//! key order (docs/FORMAT.md, "Checkpoint"). Two checkpoint files are used in turn, so a torn
//! write of one leaves the other: the pair is also the manifest of live segments.
//!
//! A body, once read and checked, is not decoded into a map: it becomes the index's [`Run`],
//! searched in place (as an LSM tree searches an SSTable), under a map of the writes made
//! since. Opening a store therefore costs one read, one CRC and one pass over the body that
//! allocates nothing per entry; a value's entry is decoded when it is read.

use crc32fast::Hasher;

use crate::error::Result;
use crate::format::{ikey, TableRecord, MAX_COMMIT_ID_LEN, TABLE_OP_STATE, TABLE_TAG};
use crate::format::{
    loc_segment, CheckpointHeader, CHECKPOINT_HEADER_LEN, CHECKPOINT_HEADER_LEN_V2, CHECKPOINT_MAGIC, FLAG_STRING_KEY,
};
use crate::index::{ChunkLoc, Entry, Ids, Index, Item, Op, TableMeta, Tables, Totals};
use crate::storage::{read_exact_at, write_all_at, Storage};

/// A checkpoint file's header and segment list: enough to choose among checkpoints, and to
/// know which segments one keeps alive, without reading its body.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub header: CheckpointHeader,
    /// The segments it needs, as listed (strictly ascending). Read without the body's CRC:
    /// trusted only to keep segments alive, never to release any.
    pub segments: Vec<u32>,
}

/// Index entries in checkpoint-body encoding, in strictly ascending key order: a whole
/// checkpoint body (segment list included) and where each entry starts in it. Built only
/// from bodies that passed [`parse`] or that [`encode_body`] wrote, so every offset holds a
/// well-formed entry; the accessors still never panic, whatever the bytes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Run {
    body: Vec<u8>,
    offsets: Vec<usize>,
}

/// An entry as it lies in a body, borrowed.
struct Raw<'a> {
    key: &'a [u8],
    flags: u8,
    size: u64,
    lsn: u64,
    span: (u32, u32),
    /// `nchunks` chunks of [`CHUNK_LEN`] bytes.
    chunks: &'a [u8],
    /// Offset just past the entry.
    end: usize,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at.checked_add(2)?)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// Bytes of an entry after its key: flags, size, lsn, first_seg, last_seg, nchunks.
const ENTRY_FIXED: usize = 1 + 8 + 8 + 4 + 4 + 4;

/// The entry at `off` of `body`, or `None` if it does not fit.
fn raw_at(body: &[u8], off: usize) -> Option<Raw<'_>> {
    let key_len = usize::from(u16_at(body, off)?);
    let k = off.checked_add(2)?;
    let f = k.checked_add(key_len)?;
    let key = body.get(k..f)?;
    let c = f.checked_add(ENTRY_FIXED)?;
    let fixed = body.get(f..c)?;
    let nchunks = usize::try_from(u32_at(fixed, 25)?).ok()?;
    let end = c.checked_add(nchunks.checked_mul(CHUNK_LEN)?)?;
    Some(Raw {
        key,
        flags: *fixed.first()?,
        size: u64_at(fixed, 1)?,
        lsn: u64_at(fixed, 9)?,
        span: (u32_at(fixed, 17)?, u32_at(fixed, 21)?),
        chunks: body.get(c..end)?,
        end,
    })
}

impl Raw<'_> {
    fn chunks(&self) -> impl Iterator<Item = ChunkLoc> + '_ {
        self.chunks.chunks_exact(CHUNK_LEN).map(|c| ChunkLoc {
            record: u64_at(c, 0).unwrap_or_default(),
            skip: u32_at(c, 8).unwrap_or_default(),
            len: u32_at(c, 12).unwrap_or_default(),
        })
    }

    fn entry(&self) -> Entry {
        Entry {
            chunks: self.chunks().collect(),
            size: self.size,
            string_key: self.flags & FLAG_STRING_KEY != 0,
            lsn: self.lsn,
            span: self.span,
        }
    }
}

impl Run {
    /// Entries in the run.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    fn raw(&self, i: usize) -> Option<Raw<'_>> {
        raw_at(&self.body, *self.offsets.get(i)?)
    }

    /// The key of entry `i` (empty if out of range).
    pub fn key(&self, i: usize) -> &[u8] {
        self.raw(i).map_or(&[], |r| r.key)
    }

    /// Entry `i`, decoded (a default entry if out of range).
    pub fn entry(&self, i: usize) -> Entry {
        self.raw(i).map(|r| r.entry()).unwrap_or_default()
    }

    /// Whether entry `i`'s key was written as a string, and its value's size, bytes.
    pub fn info(&self, i: usize) -> (bool, u64) {
        self.raw(i).map_or((false, 0), |r| (r.flags & FLAG_STRING_KEY != 0, r.size))
    }

    /// Entry `i`'s segments of first and last record ([`Entry::span`]), without decoding it.
    pub fn span(&self, i: usize) -> (u32, u32) {
        self.raw(i).map_or((0, 0), |r| r.span)
    }

    /// Entry `i`'s bytes, as encoded: entries lie end to end, so it ends where the next
    /// begins (the last, where the body does).
    fn encoded(&self, i: usize) -> &[u8] {
        let end = self.offsets.get(i + 1).copied().unwrap_or(self.body.len());
        self.offsets.get(i).and_then(|&off| self.body.get(off..end)).unwrap_or_default()
    }

    /// The index of `key`, or where it would go (binary search).
    pub fn find(&self, key: &[u8]) -> std::result::Result<usize, usize> {
        let at = self.lower_bound(key);
        if at < self.len() && self.key(at) == key {
            Ok(at)
        } else {
            Err(at)
        }
    }

    /// The first entry whose key is not below `key`.
    pub fn lower_bound(&self, key: &[u8]) -> usize {
        self.offsets.partition_point(|&off| raw_at(&self.body, off).map_or(&[][..], |r| r.key) < key)
    }
}

/// Bytes of one chunk location in an entry.
const CHUNK_LEN: usize = 16;

/// Size of an entry with a one-byte key and no chunks: bounds how many entries a body holds.
const MIN_ENTRY: usize = 2 + 1 + ENTRY_FIXED;

/// Bytes handed to each write of the body.
const PIECE: usize = 1 << 20;

fn encode_entry(out: &mut Vec<u8>, key: &[u8], e: &Entry) {
    // Keys are at most MAX_KEY_LEN (u16::MAX) bytes: `check_key` refuses longer ones.
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key);
    out.push(if e.string_key { FLAG_STRING_KEY } else { 0 });
    out.extend_from_slice(&e.size.to_le_bytes());
    out.extend_from_slice(&e.lsn.to_le_bytes());
    out.extend_from_slice(&e.span.0.to_le_bytes());
    out.extend_from_slice(&e.span.1.to_le_bytes());
    out.extend_from_slice(&(e.chunks.len() as u32).to_le_bytes());
    for c in &e.chunks {
        out.extend_from_slice(&c.record.to_le_bytes());
        out.extend_from_slice(&c.skip.to_le_bytes());
        out.extend_from_slice(&c.len.to_le_bytes());
    }
}

/// The body of a checkpoint of `index` that needs `segments`: the segment list, then every
/// entry in key order. Entries of the index's run that no later write replaced are copied as
/// they are. Returns the body as a run, which the index adopts once it is durable.
pub(crate) fn encode_body(segments: &[u32], index: &Index) -> Run {
    let mut body = Vec::with_capacity(index.run().body.len() + 4 * segments.len() + 64 * index.overlay_len());
    for s in segments {
        body.extend_from_slice(&s.to_le_bytes());
    }
    let mut offsets = Vec::with_capacity(index.len());
    for item in index.items() {
        offsets.push(body.len());
        match item {
            Item::Run(i) => body.extend_from_slice(index.run().encoded(i)),
            Item::Fresh(key, e) => encode_entry(&mut body, key, e),
        }
    }
    Run { body, offsets }
}

/// Writes a checkpoint of `index` into `file` and flushes it. `header` supplies seq, replay
/// position and next txn; the body fields are filled in here. Returns the body as a run (see
/// [`encode_body`]).
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
) -> Result<Run> {
    let run = encode_body(segments, index);
    let mut ids = encode_ids(index.ids());
    encode_tables(&mut ids, index.tables());
    let mut invalid = [0u8; CHECKPOINT_HEADER_LEN];
    if let Some(magic) = invalid.get_mut(..8) {
        magic.copy_from_slice(&CHECKPOINT_MAGIC);
    }
    write_all_at(file, &invalid, 0)?;
    file.truncate(CHECKPOINT_HEADER_LEN as u64)?;
    let mut at = CHECKPOINT_HEADER_LEN as u64;
    let mut crc = Hasher::new();
    for piece in run.body.chunks(PIECE).chain(std::iter::once(&ids[..])) {
        write_all_at(file, piece, at)?;
        crc.update(piece);
        at += piece.len() as u64;
    }
    header.entries = run.len() as u64;
    header.body_len = (run.body.len() + ids.len()) as u64;
    header.body_crc = crc.finalize();
    header.segments = segments.len() as u32;
    header.ids = index.ids().len() as u32;
    // The body is durable before the header that vouches for it is written.
    file.flush()?;
    write_all_at(file, &header.encode(), 0)?;
    file.flush()?;
    Ok(run)
}

/// The commit ids of a body, after its entries: for each, oldest first, `lsn u64 | id_len u8 |
/// id | n u8` and (version 8) `n` times `table u32 | first u64 | last u64`, the sequence
/// numbers its commit took (`n` = 0 when none, or more than 255 tables: then unknown, and
/// found again from the queues and feeds).
fn encode_ids(ids: &Ids) -> Vec<u8> {
    let mut out = Vec::new();
    for (id, lsn, seqs) in ids.iter_with_seqs() {
        out.extend_from_slice(&lsn.to_le_bytes());
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        let seqs = u8::try_from(seqs.len()).map_or(&[][..], |_| seqs);
        out.push(seqs.len() as u8);
        for &(table, first, last) in seqs {
            out.extend_from_slice(&table.to_le_bytes());
            out.extend_from_slice(&first.to_le_bytes());
            out.extend_from_slice(&last.to_le_bytes());
        }
    }
    out
}

/// Bytes of one sequence range of a commit id (version 8): `table u32 | first u64 | last u64`.
const ID_SEQ_LEN: usize = 20;

/// The tables section (version 5), after the ids: `next_table_id u32 | n u32`, then each table
/// as a TABLE payload ([`TableRecord`], op STATE), the default table first.
fn encode_tables(out: &mut Vec<u8>, tables: &Tables) {
    out.extend_from_slice(&tables.next_id().to_le_bytes());
    out.extend_from_slice(&(tables.iter().count() as u32).to_le_bytes());
    for m in tables.iter() {
        out.extend_from_slice(&m.record().encode());
    }
}

/// Parses the tables section from `off` to the end of `body`; `None` unless it fills it exactly,
/// ids ascend, the default table is first, every id is below `next_table_id`, no name twice.
fn parse_tables(body: &[u8], mut off: usize) -> Option<Tables> {
    let next_id = u32_at(body, off)?;
    let n = usize::try_from(u32_at(body, off.checked_add(4)?)?).ok()?;
    off = off.checked_add(8)?;
    if n == 0 || n > body.len().saturating_sub(off) / crate::format::TABLE_PAYLOAD_LEN {
        return None;
    }
    let mut metas = std::collections::BTreeMap::new();
    for i in 0..n {
        let name_len = usize::from(*body.get(off.checked_add(crate::format::TABLE_PAYLOAD_LEN - 1)?)?);
        let end = off.checked_add(crate::format::TABLE_PAYLOAD_LEN + name_len)?;
        let r = TableRecord::decode(body.get(off..end)?)?;
        let last = metas.keys().next_back().copied();
        if r.op != TABLE_OP_STATE
            || (i == 0) != (r.table == 0)
            || last.is_some_and(|l| r.table <= l)
            || r.table >= next_id
            || metas.values().any(|m: &TableMeta| m.id != 0 && m.name == r.name)
        {
            return None;
        }
        metas.insert(
            r.table,
            TableMeta {
                id: r.table,
                name: r.name,
                next_seq: r.next_seq,
                flushed: r.flushed,
                deleted_upto: r.deleted_upto,
            },
        );
        off = end;
    }
    (off == body.len()).then_some(Tables { metas, next_id })
}

/// Parses `n` commit ids from `body` at `off`, as checkpoint format `version` wrote them;
/// `None` unless they fit, each 1..= [`MAX_COMMIT_ID_LEN`] bytes, their LSNs strictly
/// ascending, no id twice, each sequence range `first <= last`. Returns them and where they
/// end.
fn parse_ids(body: &[u8], mut off: usize, n: usize, version: u16) -> Option<(Ids, usize)> {
    if n > body.len().saturating_sub(off) / 10 {
        return None;
    }
    let mut ids = Ids::default();
    let mut last = 0u64;
    for _ in 0..n {
        let lsn = u64_at(body, off)?;
        let len = usize::from(*body.get(off.checked_add(8)?)?);
        let start = off.checked_add(9)?;
        let id = body.get(start..start.checked_add(len)?)?;
        if !(1..=MAX_COMMIT_ID_LEN).contains(&len) || lsn <= last || ids.get(id).is_some() {
            return None;
        }
        off = start + len;
        let mut seqs = Vec::new();
        if version >= 8 {
            let k = usize::from(*body.get(off)?);
            off = off.checked_add(1)?;
            for _ in 0..k {
                let (table, first, end) = (u32_at(body, off)?, u64_at(body, off + 4)?, u64_at(body, off + 12)?);
                if first > end {
                    return None;
                }
                seqs.push((table, first, end));
                off = off.checked_add(ID_SEQ_LEN)?;
            }
        }
        ids.insert(id.to_vec(), lsn, seqs);
        last = lsn;
    }
    Some((ids, off))
}

/// Reads and checks the header of the checkpoint in `file` and its segment list (not the
/// rest of the body, nor its CRC). `Ok(Err(why))` if it is not a valid checkpoint header;
/// `Err` only if storage fails.
pub(crate) fn read_head<F: Storage>(file: &F) -> Result<Result<Head, String>> {
    let size = file.size()?;
    let mut hb = [0u8; CHECKPOINT_HEADER_LEN];
    let n = usize::try_from(size).unwrap_or(usize::MAX).min(CHECKPOINT_HEADER_LEN);
    let head = hb.get_mut(..n).unwrap_or_default();
    if size < CHECKPOINT_HEADER_LEN_V2 as u64 || !read_exact_at(file, head, 0)? {
        return Ok(Err("checkpoint header incomplete".into()));
    }
    let Some(header) = CheckpointHeader::decode(head) else { return Ok(Err("checkpoint header invalid".into())) };
    let body_at = header.header_len() as u64;
    if size < body_at || header.body_len > size - body_at {
        return Ok(Err("checkpoint body incomplete".into()));
    }
    let list = u64::from(header.segments) * 4;
    if list > header.body_len {
        return Ok(Err("checkpoint body malformed".into()));
    }
    let Ok(list) = usize::try_from(list) else { return Ok(Err("checkpoint body too large".into())) };
    let mut bytes = vec![0u8; list];
    if !read_exact_at(file, &mut bytes, body_at)? {
        return Ok(Err("checkpoint body incomplete".into()));
    }
    let Some(segments) = segment_list(&bytes) else { return Ok(Err("checkpoint body malformed".into())) };
    Ok(Ok(Head { header, segments }))
}

/// A segment list: u32s, strictly ascending.
fn segment_list(bytes: &[u8]) -> Option<Vec<u32>> {
    let segments: Vec<u32> = bytes.chunks_exact(4).map(|b| u32_at(b, 0).unwrap_or_default()).collect();
    segments.windows(2).all(|w| w[0] < w[1]).then_some(segments)
}

/// Reads the body of the checkpoint whose head is `head`, checks its CRC and structure, and
/// returns the index it holds. `Ok(Err(why))` if the body is not valid; `Err` only if
/// storage fails.
pub(crate) fn load<F: Storage>(file: &F, head: &Head) -> Result<Result<Index, String>> {
    let h = &head.header;
    let Ok(len) = usize::try_from(h.body_len) else { return Ok(Err("checkpoint body too large".into())) };
    let mut body = vec![0u8; len];
    if !read_exact_at(file, &mut body, h.header_len() as u64)? {
        return Ok(Err("checkpoint body incomplete".into()));
    }
    if crc32fast::hash(&body) != h.body_crc {
        return Ok(Err("checkpoint body checksum mismatch".into()));
    }
    Ok(parse(h, body).ok_or_else(|| "checkpoint body malformed".to_string()))
}

/// Checks a body's structure (docs/FORMAT.md section 7) in one pass, totting up what the
/// index counts as it goes; `None` if any check fails.
fn parse(h: &CheckpointHeader, body: Vec<u8>) -> Option<Index> {
    let nseg = usize::try_from(h.segments).ok()?;
    let segments = segment_list(body.get(..nseg.checked_mul(4)?)?)?;
    let n = usize::try_from(h.entries).ok()?;
    if n > body.len() / MIN_ENTRY + 1 {
        return None;
    }
    // Per listed segment: live entries that begin there, and live record bytes.
    let mut first = vec![0usize; nseg];
    let mut live = vec![0u64; nseg];
    let mut live_bytes = 0u64;
    let mut offsets = Vec::with_capacity(n);
    let mut off = nseg * 4;
    let mut prev: &[u8] = &[];
    for _ in 0..n {
        let r = raw_at(&body, off)?;
        if r.key.is_empty() || (!offsets.is_empty() && prev >= r.key) {
            return None; // keys must ascend strictly
        }
        if r.flags & !FLAG_STRING_KEY != 0 || r.span.0 > r.span.1 {
            return None;
        }
        let first_at = segments.binary_search(&r.span.0).ok()?;
        segments.binary_search(&r.span.1).ok()?;
        let mut total = 0u64;
        for c in r.chunks() {
            let seg = loc_segment(c.record);
            if c.len == 0 || seg < r.span.0 || seg > r.span.1 {
                return None;
            }
            let at = segments.binary_search(&seg).ok()?;
            let slot = live.get_mut(at)?;
            *slot = slot.saturating_add(c.record_bytes());
            total += u64::from(c.len);
        }
        if total != r.size {
            return None;
        }
        live_bytes = live_bytes.saturating_add(r.size);
        *first.get_mut(first_at)? += 1;
        offsets.push(off);
        prev = r.key;
        off = r.end;
    }
    let (ids, ids_end) = parse_ids(&body, off, usize::try_from(h.ids).ok()?, h.version)?;
    let tables = if h.version >= 5 {
        parse_tables(&body, ids_end)?
    } else if ids_end == body.len() {
        Tables::default()
    } else {
        return None;
    };
    // Before version 5 a key starting with the table tag was a default-table key as it is;
    // now such keys live escaped (format::ikey). They sort last: the last key tells.
    let escape = h.version < 5
        && offsets.last().is_some_and(|&o| raw_at(&body, o).is_some_and(|r| r.key.first() == Some(&TABLE_TAG)));
    let mut body = body;
    body.truncate(off); // the run is the segment list and the entries
    let body = body;
    let totals = Totals {
        live_bytes,
        live_record_bytes: live.iter().fold(0u64, |a, &b| a.saturating_add(b)),
        segment_live: segments.iter().zip(&live).filter(|(_, &b)| b > 0).map(|(&s, &b)| (s, b)).collect(),
        first_segments: segments.iter().zip(&first).filter(|(_, &n)| n > 0).map(|(&s, &n)| (s, n)).collect(),
    };
    let index = Index::from_run(Run { body, offsets }, totals, ids, tables);
    if escape {
        return escaped(index);
    }
    Some(index)
}

/// A version 4 index whose keys starting with the table tag are moved to their escaped
/// internal keys (the run is rebuilt in the map; the next checkpoint writes it in version 5).
/// `None` if such a key would outgrow the format's key length.
fn escaped(mut index: Index) -> Option<Index> {
    let moved: Vec<(Vec<u8>, Entry)> = index
        .iter()
        .filter(|(k, _)| k.first() == Some(&TABLE_TAG))
        .map(|(k, e)| (k.to_vec(), e.into_owned()))
        .collect();
    for (key, entry) in moved {
        let ik = ikey(0, &key);
        if ik.len() > crate::format::MAX_KEY_LEN {
            return None;
        }
        index.apply_unchecked(Op::Delete { key });
        index.apply_unchecked(Op::Put { key: ik, entry });
    }
    Some(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::loc;
    use crate::index::{KeyRange, Op};
    use crate::storage::MemoryStorage;

    /// A small index with several keys, chunk counts and segments.
    fn sample() -> (Index, Vec<u32>) {
        let mut ix = Index::default();
        for (i, key) in ["a", "ab", "b", "bcd", "c"].iter().enumerate() {
            let i = i as u32;
            let chunks: Vec<ChunkLoc> = (0..i % 3)
                .map(|c| ChunkLoc { record: loc(1 + (i + c) % 2, 100 + u64::from(c)), skip: c, len: 5 })
                .collect();
            let size = chunks.iter().map(|c| u64::from(c.len)).sum();
            let entry = Entry { chunks, size, string_key: i % 2 == 0, lsn: u64::from(i) + 1, span: (1, 2) };
            ix.apply(Op::Put { key: key.as_bytes().to_vec(), entry });
        }
        (ix, vec![1, 2, 3])
    }

    /// A checkpoint file holding `body` under a header that vouches for it (right length and
    /// CRC) and says it lists `ids` commit ids, so that only the structure checks stand between
    /// the bytes and the index.
    fn file_with(body: &[u8], entries: u64, segments: u32, ids: u32) -> MemoryStorage {
        let header = CheckpointHeader {
            seq: 1,
            replay_from: loc(1, 32),
            replay_lsn: 1,
            next_txn: 1,
            entries,
            body_len: body.len() as u64,
            body_crc: crc32fast::hash(body),
            segments,
            index_lsn: 1,
            ids,
            version: crate::format::FORMAT_VERSION,
        };
        let mut bytes = header.encode().to_vec();
        bytes.extend_from_slice(body);
        MemoryStorage::from_bytes(bytes)
    }

    /// Everything an index answers, read in full (nothing here may panic).
    fn exercise(ix: &Index) {
        let keys: Vec<Vec<u8>> = ix.iter().map(|(k, _)| k.to_vec()).collect();
        for k in &keys {
            assert!(ix.get(k).is_some() && ix.contains(k));
        }
        let _ = ix.scan(&KeyRange { reverse: true, ..KeyRange::default() });
        let _ = ix.scan(&KeyRange { prefix: Some(b"b".to_vec()), ..KeyRange::default() });
        let _ = ix.spans().count();
        let _ = encode_body(&[1, 2, 3], ix);
    }

    #[test]
    fn a_written_checkpoint_loads_back_as_the_same_index() {
        let (mut ix, segments) = sample();
        for (n, id) in [&b"first"[..], b"x", &[0xFF; MAX_COMMIT_ID_LEN]].into_iter().enumerate() {
            ix.apply(Op::Id { id: id.to_vec(), lsn: 10 + n as u64, seqs: vec![(n as u32, 1, n as u64 + 1)] });
        }
        let mut file = MemoryStorage::new();
        let header = CheckpointHeader {
            seq: 4,
            replay_from: loc(2, 40),
            replay_lsn: 9,
            next_txn: 3,
            index_lsn: 9,
            ..Default::default()
        };
        write(&mut file, header, &segments, &ix).unwrap();
        let head = read_head(&file).unwrap().unwrap();
        assert_eq!((head.header.seq, head.segments.clone()), (4, segments));
        let loaded = load(&file, &head).unwrap().unwrap();
        let a: Vec<_> = ix.iter().map(|(k, e)| (k.to_vec(), e.into_owned())).collect();
        let b: Vec<_> = loaded.iter().map(|(k, e)| (k.to_vec(), e.into_owned())).collect();
        assert_eq!(a, b);
        assert_eq!(
            (loaded.len(), loaded.live_bytes(), loaded.segment_live()),
            (ix.len(), ix.live_bytes(), ix.segment_live())
        );
        assert_eq!(head.header.ids, 3);
        let ids = |ix: &Index| {
            ix.ids().iter_with_seqs().map(|(id, lsn, seqs)| (id.to_vec(), lsn, seqs.to_vec())).collect::<Vec<_>>()
        };
        assert_eq!(ids(&loaded), ids(&ix), "the commit ids, in commit order, with their numbers");
        assert_eq!(loaded.ids().seqs_at(12), &[(2, 1, 3)]);
        // Every bit of the ids section flipped, under a CRC fixed up: refused or loaded, never
        // a panic (a flipped LSN order or length is refused).
        let bytes = file.to_vec();
        let body_at = CHECKPOINT_HEADER_LEN;
        let ids_at = body_at + loaded.run().body.len();
        for at in ids_at..bytes.len() {
            for bit in 0..8 {
                let mut body = bytes[body_at..].to_vec();
                body[at - body_at] ^= 1 << bit;
                let f = file_with(&body, head.header.entries, head.header.segments, 3);
                if let Ok(Ok(head)) = read_head(&f) {
                    let _ = load(&f, &head).unwrap();
                }
            }
        }
    }

    /// A version 7 ids section (no numbers after each id) reads as it did, its ids' numbers
    /// unknown; the same bytes read as version 8 are refused or read otherwise, never a panic.
    #[test]
    fn a_version_7_ids_section_reads_without_numbers() {
        let mut v7 = Vec::new();
        for (lsn, id) in [(5u64, &b"a"[..]), (9, b"retry-me")] {
            v7.extend_from_slice(&lsn.to_le_bytes());
            v7.push(id.len() as u8);
            v7.extend_from_slice(id);
        }
        let (ids, end) = parse_ids(&v7, 0, 2, 7).unwrap();
        assert_eq!(end, v7.len());
        let got: Vec<_> = ids.iter_with_seqs().map(|(id, lsn, s)| (id.to_vec(), lsn, s.len())).collect();
        assert_eq!(got, vec![(b"a".to_vec(), 5, 0), (b"retry-me".to_vec(), 9, 0)]);
        let _ = parse_ids(&v7, 0, 2, 8);
        // Version 8: a range whose first number is above its last is refused.
        let mut v8 = 5u64.to_le_bytes().to_vec();
        v8.extend_from_slice(&[1, b'a', 1]);
        v8.extend_from_slice(&3u32.to_le_bytes());
        v8.extend_from_slice(&7u64.to_le_bytes());
        v8.extend_from_slice(&6u64.to_le_bytes());
        assert!(parse_ids(&v8, 0, 1, 8).is_none());
        let n = v8.len();
        v8[n - 8..].copy_from_slice(&7u64.to_le_bytes());
        let (ids, _) = parse_ids(&v8, 0, 1, 8).unwrap();
        assert_eq!(ids.seqs_at(5), &[(3, 7, 7)]);
    }

    /// Every bit flip and every cut of a valid body, under a header with the right CRC: the
    /// body is refused as malformed, or it loads into an index that answers without panicking.
    #[test]
    fn any_body_that_passes_its_crc_is_refused_or_answers() {
        let (ix, segments) = sample();
        let run = encode_body(&segments, &ix);
        let body = run.body.clone();
        let (entries, nseg) = (run.len() as u64, segments.len() as u32);
        let mut refused = 0;
        let mut check = |bytes: &[u8]| {
            let file = file_with(bytes, entries, nseg, 0);
            let loaded = match read_head(&file).unwrap() {
                Ok(head) => load(&file, &head).unwrap(),
                Err(why) => Err(why),
            };
            match loaded {
                Ok(index) => exercise(&index),
                Err(why) => {
                    assert!(why.contains("malformed"), "{why}");
                    refused += 1;
                }
            }
        };
        for bit in 0..body.len() * 8 {
            let mut b = body.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            check(&b);
        }
        for cut in 0..body.len() {
            check(&body[..cut]);
        }
        assert!(refused > body.len(), "most damage is caught by the structure checks ({refused})");
    }
}
