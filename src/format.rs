//! The on-disk format, version 5. `docs/FORMAT.md` is the specification with byte diagrams;
//! every constant and offset here mirrors it. All integers are little-endian.
//!
//! A store is a set of files: log segments and checkpoints. A segment is a [`FileHeader`]
//! followed by records laid end to end. Each record is a
//! [`RecordHeader`] (36 bytes) and its payload. The record CRC32 (crc32fast, IEEE polynomial)
//! covers header bytes 4..36 and then the payload, so a torn or stale record never validates;
//! an all-zero region fails on the unknown kind 0 (SynapseDB's byte-sum "checksum" accepted
//! nine zero bytes as a record).

use crc32fast::Hasher;

/// First 8 bytes of every walnut log file.
pub const MAGIC: [u8; 8] = *b"WALNUTLG";
/// Format version written by this build. Version 3 added `index_lsn` to the checkpoint
/// header (replay from a checkpoint re-applies nothing it holds); version 4 lets a COMMIT carry
/// an id, remembered in checkpoints (a commit with a known id is not made again); version 5
/// adds tables (keys of named tables and queues in the [`TABLE_TAG`] key space, TABLE records)
/// and per-table sequence numbers (COMMIT, PUT_ONE and DELETE_ONE with [`FLAG_SEQ`]); version 6
/// adds ROLLBACK records (a nested transaction's abort: its records leave the chain); version 7
/// adds import staging files ([`IMPORT_MAGIC`]); version 8 keeps, with each commit id in a
/// checkpoint, the sequence numbers its commit took.
pub const FORMAT_VERSION: u16 = 8;
/// Oldest format version this build reads: a version 1 log is segment 0 of a version 2 store,
/// and a version 2 store opens as version 3 (its checkpoints replay as version 2 did).
pub const MIN_READ_VERSION: u16 = 1;
/// First 8 bytes of every checkpoint file.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"WALNUTCK";
/// First 8 bytes of an import's staged file until it is installed (version 7): the file is an
/// export whose magic is this instead of [`MAGIC`], which the import's last write puts in place
/// (docs/FORMAT.md, section 12). A write of [`MAGIC`] over it cut short leaves a mix of the two
/// (`WALNUTLM`): see [`import_magic`].
pub const IMPORT_MAGIC: [u8; 8] = *b"WALNUTIM";

/// Whether `magic` (a file's first 8 bytes) is that of an import not installed: [`IMPORT_MAGIC`],
/// or a prefix of [`MAGIC`] written over it (bytes `0..j` of `MAGIC`, `j..8` of `IMPORT_MAGIC`,
/// for some `j` below 8).
pub fn import_magic(magic: &[u8]) -> bool {
    magic.len() == 8 && (0..8).any(|j| magic.get(..j) == MAGIC.get(..j) && magic.get(j..) == IMPORT_MAGIC.get(j..))
}
/// Size of the checkpoint header this build writes (version 3), bytes.
pub const CHECKPOINT_HEADER_LEN: usize = 88;
/// Size of a version 2 checkpoint header, bytes (read, never written).
pub const CHECKPOINT_HEADER_LEN_V2: usize = 80;
/// Bits of a location that hold the offset within the segment.
pub const OFFSET_BITS: u32 = 40;
/// Largest segment size, bytes (offsets must fit in [`OFFSET_BITS`]).
pub const MAX_SEGMENT_LEN: u64 = 1 << OFFSET_BITS;
/// Largest segment number (the 24 bits above the offset).
pub const MAX_SEGMENT: u32 = (1 << (64 - OFFSET_BITS)) - 1;

/// A location in the log: `segment << 40 | offset`. Locations order as (segment, offset), so
/// "strictly backwards" is a plain comparison; a version 1 offset is a location in segment 0.
pub fn loc(segment: u32, offset: u64) -> u64 {
    (u64::from(segment) << OFFSET_BITS) | (offset & (MAX_SEGMENT_LEN - 1))
}

/// The segment number of a location.
pub fn loc_segment(l: u64) -> u32 {
    (l >> OFFSET_BITS) as u32
}

/// The byte offset of a location within its segment.
pub fn loc_offset(l: u64) -> u64 {
    l & (MAX_SEGMENT_LEN - 1)
}
/// Size of the file header in bytes.
pub const FILE_HEADER_LEN: usize = 32;
/// Size of a record header in bytes.
pub const RECORD_HEADER_LEN: usize = 36;
/// Largest key, bytes (a u16 length prefix in PUT_ONE).
pub const MAX_KEY_LEN: usize = u16::MAX as usize;
/// Largest chunk payload a writer may be configured for, bytes.
pub const MAX_CHUNK_LEN: usize = 64 << 20;
/// Largest payload any record may carry, bytes (a PUT_ONE of a maximal key and chunk).
/// Readers treat a larger length as corruption, which bounds what a chunk read allocates.
pub const MAX_PAYLOAD_LEN: usize = MAX_CHUNK_LEN + 2 + MAX_KEY_LEN;
/// Size of a COMMIT payload without an id, bytes.
pub const COMMIT_PAYLOAD_LEN: usize = 20;
/// Longest commit id, bytes (version 4: a COMMIT may end with `id_len u8 | id`).
pub const MAX_COMMIT_ID_LEN: usize = 128;
/// Largest LSN and transaction id, so that counting up never overflows. A record above it
/// is invalid; a file header whose `base_lsn` is 0 or above it is malformed.
pub const MAX_ID: u64 = (1 << 62) - 1;
/// Record flag: the key was given as a string (UTF-8); informs how `keys()` returns it.
pub const FLAG_STRING_KEY: u8 = 0x01;
/// Record flag (version 5): the key is an internal key of the table key space
/// ([`TABLE_TAG`], table, namespace, key); without it a key is the default table's, as in
/// version 4.
pub const FLAG_IKEY: u8 = 0x02;
/// Record flag (version 5): the record states sequence numbers: a PUT_ONE or DELETE_ONE payload
/// starts with its `seq u64`; a COMMIT carries a sequence block ([`CommitPayload`]).
pub const FLAG_SEQ: u8 = 0x04;
/// Record flags defined by this version; any other bit set makes the record invalid.
pub const KNOWN_FLAGS: u8 = FLAG_STRING_KEY | FLAG_IKEY | FLAG_SEQ;

/// First byte of every internal key outside the default table's own keys (HoraeDB's
/// `table_id | sequence_num` log key, folded into walnut's one ordered key space). A default
/// table key that starts with this byte is kept escaped as table 0's.
pub const TABLE_TAG: u8 = 0xFF;
/// Namespace byte of a table's ordered keys.
pub const NS_KEYS: u8 = 0;
/// Namespace byte of a table's queue: the key is the entry's sequence number, u64 big-endian.
pub const NS_QUEUE: u8 = 1;
/// Namespace byte of a table's change feed: `seq (u64 BE) | kind (u8) | size (u64 BE) | key`,
/// one entry per put or delete of a named table, kept until `deleteUpTo` passes it.
pub const NS_FEED: u8 = 2;
/// Change feed kind: a put.
pub const FEED_PUT: u8 = 1;
/// Change feed kind: a delete.
pub const FEED_DELETE: u8 = 2;
/// Bytes of a feed key between the table prefix and the user key: seq, kind, size.
pub const FEED_FIXED_LEN: usize = 17;
/// Bytes before the user key in a table-space key: tag, table id (u32 big-endian), namespace.
pub const TABLE_PREFIX_LEN: usize = 6;
/// Largest key of a named table, bytes: its change feed key (prefix, seq, kind, size and the
/// key) must fit in [`MAX_KEY_LEN`], as every index key must (a checkpoint stores key lengths
/// as u16).
pub const MAX_TABLE_KEY_LEN: usize = MAX_KEY_LEN - TABLE_PREFIX_LEN - FEED_FIXED_LEN;
/// Largest default-table key that starts with [`TABLE_TAG`] (kept escaped), bytes.
pub const MAX_ESCAPED_KEY_LEN: usize = MAX_KEY_LEN - TABLE_PREFIX_LEN;
/// Largest table name, bytes of UTF-8.
pub const MAX_TABLE_NAME_LEN: usize = 255;
/// Size of a TABLE payload before the name, bytes.
pub const TABLE_PAYLOAD_LEN: usize = 30;
/// TABLE record operation: the table's state (created, or marks moved).
pub const TABLE_OP_STATE: u8 = 1;
/// TABLE record operation: the table is dropped.
pub const TABLE_OP_DROP: u8 = 2;
/// Largest number of tables one COMMIT states sequence numbers for.
pub const MAX_COMMIT_TABLES: usize = 255;

/// The prefix of table `table`'s namespace `ns` in the internal key space.
pub fn table_prefix(table: u32, ns: u8) -> [u8; TABLE_PREFIX_LEN] {
    let t = table.to_be_bytes();
    [TABLE_TAG, t[0], t[1], t[2], t[3], ns]
}

/// The internal key of `key` in table `table`: the key itself for a default-table key that
/// does not start with [`TABLE_TAG`], else the table prefix and the key.
pub fn ikey(table: u32, key: &[u8]) -> Vec<u8> {
    if table == 0 && key.first() != Some(&TABLE_TAG) {
        return key.to_vec();
    }
    let mut k = Vec::with_capacity(TABLE_PREFIX_LEN + key.len());
    k.extend_from_slice(&table_prefix(table, NS_KEYS));
    k.extend_from_slice(key);
    k
}

/// The internal key of table `table`'s queue entry `seq`.
pub fn queue_key(table: u32, seq: u64) -> Vec<u8> {
    let mut k = table_prefix(table, NS_QUEUE).to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The internal key of table `table`'s change feed entry `seq`: a put (`FEED_PUT`) of a value
/// of `size` bytes, or a delete, of `key`.
pub fn feed_key(table: u32, seq: u64, kind: u8, size: u64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(TABLE_PREFIX_LEN + FEED_FIXED_LEN + key.len());
    k.extend_from_slice(&table_prefix(table, NS_FEED));
    k.extend_from_slice(&seq.to_be_bytes());
    k.push(kind);
    k.extend_from_slice(&size.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// A feed key's rest (after the table prefix): `(seq, kind, size, key)`, or `None` if malformed.
pub fn split_feed(rest: &[u8]) -> Option<(u64, u8, u64, &[u8])> {
    let seq = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let kind = *rest.get(8)?;
    let size = u64::from_be_bytes(rest.get(9..17)?.try_into().ok()?);
    let key = rest.get(FEED_FIXED_LEN..)?;
    (!key.is_empty() && (kind == FEED_PUT || kind == FEED_DELETE)).then_some((seq, kind, size, key))
}

/// An internal key's table, namespace and the rest (the user key, or a queue entry's
/// big-endian sequence number; empty for an append whose number its COMMIT gives).
pub fn split_ikey(ik: &[u8]) -> (u32, u8, &[u8]) {
    match ik {
        [TABLE_TAG, a, b, c, d, ns, rest @ ..] => (u32::from_be_bytes([*a, *b, *c, *d]), *ns, rest),
        _ => (0, NS_KEYS, ik),
    }
}

/// How a record carries internal key `ik`: its flag bits ([`FLAG_IKEY`] or none) and bytes.
pub fn record_key(ik: &[u8]) -> u8 {
    if ik.first() == Some(&TABLE_TAG) {
        FLAG_IKEY
    } else {
        0
    }
}

/// The internal key a record's key bytes stand for, or `None` if they are malformed: with
/// [`FLAG_IKEY`], a table-space key with a known namespace; without it, a default-table key
/// (escaped if it starts with [`TABLE_TAG`], as a version 4 record may).
pub fn ikey_from_record(flags: u8, key: &[u8]) -> Option<Vec<u8>> {
    if flags & FLAG_IKEY == 0 {
        let ik = ikey(0, key);
        return (!key.is_empty() && ik.len() <= MAX_KEY_LEN).then_some(ik);
    }
    match split_ikey(key) {
        (_, NS_KEYS, rest) if key.first() == Some(&TABLE_TAG) && !rest.is_empty() => {
            // Table 0's escaped keys are exactly those that start with the tag.
            (split_ikey(key).0 != 0 || rest.first() == Some(&TABLE_TAG)).then(|| key.to_vec())
        }
        (_, NS_QUEUE, rest) if key.first() == Some(&TABLE_TAG) && (rest.is_empty() || rest.len() == 8) => {
            Some(key.to_vec())
        }
        (t, NS_FEED, rest) if t != 0 && key.first() == Some(&TABLE_TAG) && split_feed(rest).is_some() => {
            Some(key.to_vec())
        }
        _ => None,
    }
}

/// A TABLE record: one table's state, or its drop (docs/FORMAT.md, "TABLE").
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableRecord {
    /// [`TABLE_OP_STATE`] or [`TABLE_OP_DROP`].
    pub op: u8,
    /// Table id (0: the default table).
    pub table: u32,
    /// The sequence number the table's next write takes.
    pub next_seq: u64,
    /// The table's flushed sequence number (HoraeDB's MaxSeq).
    pub flushed: u64,
    /// Queue entries at or below this sequence number are deleted.
    pub deleted_upto: u64,
    /// The table's name (empty for the default table and in a drop).
    pub name: String,
}

impl TableRecord {
    /// Encodes: `op u8 | table u32 | next_seq u64 | flushed u64 | deleted_upto u64 | name_len u8
    /// | name`.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(TABLE_PAYLOAD_LEN + self.name.len());
        b.push(self.op);
        b.extend_from_slice(&self.table.to_le_bytes());
        b.extend_from_slice(&self.next_seq.to_le_bytes());
        b.extend_from_slice(&self.flushed.to_le_bytes());
        b.extend_from_slice(&self.deleted_upto.to_le_bytes());
        b.push(self.name.len().min(MAX_TABLE_NAME_LEN) as u8);
        b.extend_from_slice(self.name.as_bytes().get(..self.name.len().min(MAX_TABLE_NAME_LEN)).unwrap_or_default());
        b
    }

    /// Decodes; `None` unless the payload is well formed (known op, name length matching, name
    /// UTF-8, marks within `next_seq`).
    pub fn decode(b: &[u8]) -> Option<TableRecord> {
        let op = *b.first()?;
        let name_len = usize::from(*b.get(TABLE_PAYLOAD_LEN - 1)?);
        let name = std::str::from_utf8(b.get(TABLE_PAYLOAD_LEN..)?).ok()?;
        let r = TableRecord {
            op,
            table: u32_at(b, 1)?,
            next_seq: u64_at(b, 5)?,
            flushed: u64_at(b, 13)?,
            deleted_upto: u64_at(b, 21)?,
            name: name.to_string(),
        };
        let ok = name.len() == name_len
            && match op {
                TABLE_OP_STATE => {
                    r.next_seq >= 1
                        && r.next_seq <= MAX_ID
                        && r.flushed < r.next_seq
                        && r.deleted_upto < r.next_seq
                        && (r.table != 0 || name.is_empty())
                }
                TABLE_OP_DROP => {
                    r.table != 0 && name.is_empty() && r.next_seq == 0 && r.flushed == 0 && r.deleted_upto == 0
                }
                _ => false,
            };
        ok.then_some(r)
    }
}

// File header offsets (docs/FORMAT.md, "File header").
const FH_MAGIC: usize = 0;
const FH_VERSION: usize = 8;
const FH_HEADER_LEN: usize = 10;
const FH_FLAGS: usize = 12;
const FH_BASE_LSN: usize = 16;
const FH_SEGMENT: usize = 24;
const FH_CRC: usize = 28;

// Record header offsets (docs/FORMAT.md, "Record header").
const RH_CRC: usize = 0;
const RH_LEN: usize = 4;
const RH_KIND: usize = 8;
const RH_FLAGS: usize = 9;
const RH_RESERVED: usize = 10;
const RH_LSN: usize = 12;
const RH_TXN: usize = 20;
const RH_PREV: usize = 28;

/// Record types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Anchors a transaction. Empty payload; `prev` = 0.
    Begin = 0x01,
    /// Starts a value for a key inside a transaction. Payload = key.
    Put = 0x02,
    /// One chunk of the current value (UnisonDB's PREPARE). Payload = value bytes.
    Chunk = 0x03,
    /// Deletes a key inside a transaction. Payload = key.
    Delete = 0x04,
    /// Commits; payload = [`CommitPayload`]. `prev` = the transaction's last record.
    Commit = 0x05,
    /// Aborts; empty payload. `prev` = the transaction's last record.
    Abort = 0x06,
    /// A whole put in one self-committed record. Payload = key length u16 | key | value.
    PutOne = 0x07,
    /// A whole delete in one self-committed record. Payload = key.
    DeleteOne = 0x08,
    /// A table's state or drop, self-committed (version 5). Payload = [`TableRecord`].
    Table = 0x09,
    /// Rolls an open transaction back to an earlier record of it (version 6: the abort of a
    /// nested transaction, SynapseDB's inner ABORT). Payload = `to u64` ([`ROLLBACK_PAYLOAD_LEN`]
    /// bytes): the offset of the record the chain resumes from (BEGIN's, or a record of the
    /// transaction before the nested one began). `prev` = the transaction's last record. The
    /// records after `to` up to this one, and this one, are off the chain: the transaction's
    /// next record links to `to`.
    Rollback = 0x0A,
}

/// Size of a ROLLBACK payload, bytes.
pub const ROLLBACK_PAYLOAD_LEN: usize = 8;

impl Kind {
    /// Decodes a type byte.
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            0x01 => Kind::Begin,
            0x02 => Kind::Put,
            0x03 => Kind::Chunk,
            0x04 => Kind::Delete,
            0x05 => Kind::Commit,
            0x06 => Kind::Abort,
            0x07 => Kind::PutOne,
            0x08 => Kind::DeleteOne,
            0x09 => Kind::Table,
            0x0A => Kind::Rollback,
            _ => return None,
        })
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}
fn put(dst: &mut [u8], at: usize, src: &[u8]) {
    if let Some(d) = dst.get_mut(at..at + src.len()) {
        d.copy_from_slice(src);
    }
}

/// The 32-byte header at offset 0 of a log segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileHeader {
    /// LSN of the first record in this segment.
    pub base_lsn: u64,
    /// Segment number: 0 for the first, one more for each next (always 0 in version 1).
    pub segment: u32,
}

/// Why a file header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Not a walnut log.
    BadMagic,
    /// A walnut log of another format version.
    UnsupportedVersion(u16),
    /// Fields do not match the stored CRC.
    Checksum { stored: u32, computed: u32 },
    /// Header length or flags this version does not know.
    Malformed(&'static str),
}

impl FileHeader {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; FILE_HEADER_LEN] {
        let mut b = [0u8; FILE_HEADER_LEN];
        put(&mut b, FH_MAGIC, &MAGIC);
        put(&mut b, FH_VERSION, &FORMAT_VERSION.to_le_bytes());
        put(&mut b, FH_HEADER_LEN, &(FILE_HEADER_LEN as u16).to_le_bytes());
        put(&mut b, FH_FLAGS, &0u32.to_le_bytes());
        put(&mut b, FH_BASE_LSN, &self.base_lsn.to_le_bytes());
        put(&mut b, FH_SEGMENT, &self.segment.to_le_bytes());
        let crc = crc32fast::hash(b.get(..FH_CRC).unwrap_or_default());
        put(&mut b, FH_CRC, &crc.to_le_bytes());
        b
    }

    /// Decodes and validates a header (magic, version, CRC).
    pub fn decode(b: &[u8; FILE_HEADER_LEN]) -> Result<FileHeader, HeaderError> {
        if b.get(FH_MAGIC..FH_MAGIC + 8) != Some(&MAGIC[..]) {
            return Err(HeaderError::BadMagic);
        }
        let version = u16_at(b, FH_VERSION).unwrap_or(0);
        if !(MIN_READ_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(HeaderError::UnsupportedVersion(version));
        }
        let stored = u32_at(b, FH_CRC).unwrap_or(0);
        let computed = crc32fast::hash(b.get(..FH_CRC).unwrap_or_default());
        if stored != computed {
            return Err(HeaderError::Checksum { stored, computed });
        }
        if u16_at(b, FH_HEADER_LEN) != Some(FILE_HEADER_LEN as u16) {
            return Err(HeaderError::Malformed("header length"));
        }
        if u32_at(b, FH_FLAGS) != Some(0) {
            return Err(HeaderError::Malformed("unknown header flags"));
        }
        let base_lsn = u64_at(b, FH_BASE_LSN).unwrap_or(0);
        if base_lsn == 0 || base_lsn > MAX_ID {
            return Err(HeaderError::Malformed("base LSN out of range"));
        }
        let segment = u32_at(b, FH_SEGMENT).unwrap_or(0);
        if (version == 1 && segment != 0) || segment > MAX_SEGMENT {
            return Err(HeaderError::Malformed("segment number out of range"));
        }
        Ok(FileHeader { base_lsn, segment })
    }
}

/// The fixed part of a record (36 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// CRC32 over header bytes 4..36 then the payload.
    pub crc: u32,
    /// Payload length, bytes.
    pub len: u32,
    /// Record type.
    pub kind: Kind,
    /// Flag bits ([`FLAG_STRING_KEY`]).
    pub flags: u8,
    /// Log sequence number: the first record's is the file header's `base_lsn`, each next
    /// record's is one more.
    pub lsn: u64,
    /// Transaction id.
    pub txn: u64,
    /// File offset of the previous record of the same transaction (the backward link), or 0.
    pub prev: u64,
}

/// Why 36 bytes are not a record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordHeaderError {
    /// The type byte is not a known [`Kind`] (0 included, so zeroed space never parses).
    UnknownKind(u8),
    /// Reserved bytes or flag bits are set.
    Reserved,
    /// Length above [`MAX_PAYLOAD_LEN`], or wrong for the kind.
    BadLength(u32),
}

impl RecordHeader {
    /// Builds a header for `payload`, computing its CRC; returns the encoded bytes and the
    /// payload's own CRC32 (which COMMIT's value checksum is combined from).
    pub fn encode(
        kind: Kind,
        flags: u8,
        lsn: u64,
        txn: u64,
        prev: u64,
        payload: &[&[u8]],
    ) -> ([u8; RECORD_HEADER_LEN], Hasher) {
        let len: usize = payload.iter().map(|p| p.len()).sum();
        let mut b = [0u8; RECORD_HEADER_LEN];
        put(&mut b, RH_LEN, &(len as u32).to_le_bytes());
        put(&mut b, RH_KIND, &[kind as u8]);
        put(&mut b, RH_FLAGS, &[flags]);
        put(&mut b, RH_RESERVED, &0u16.to_le_bytes());
        put(&mut b, RH_LSN, &lsn.to_le_bytes());
        put(&mut b, RH_TXN, &txn.to_le_bytes());
        put(&mut b, RH_PREV, &prev.to_le_bytes());
        let mut payload_crc = Hasher::new();
        for p in payload {
            payload_crc.update(p);
        }
        let crc = record_crc(&b, &payload_crc);
        put(&mut b, RH_CRC, &crc.to_le_bytes());
        (b, payload_crc)
    }

    /// Decodes the structure of a header. The CRC is checked by the caller once the payload
    /// is read ([`record_crc`]).
    pub fn decode(b: &[u8; RECORD_HEADER_LEN]) -> Result<RecordHeader, RecordHeaderError> {
        let kind_byte = b.get(RH_KIND).copied().unwrap_or(0);
        let kind = Kind::from_u8(kind_byte).ok_or(RecordHeaderError::UnknownKind(kind_byte))?;
        let flags = b.get(RH_FLAGS).copied().unwrap_or(0);
        if flags & !KNOWN_FLAGS != 0 || u16_at(b, RH_RESERVED) != Some(0) {
            return Err(RecordHeaderError::Reserved);
        }
        let len = u32_at(b, RH_LEN).unwrap_or(u32::MAX);
        // Bytes a sequence number adds in front of a one-record commit's payload.
        let seq = if flags & FLAG_SEQ != 0 { 8 } else { 0 };
        let l = len as usize;
        let len_ok = match kind {
            Kind::Begin | Kind::Abort | Kind::Chunk if flags & (FLAG_SEQ | FLAG_IKEY) != 0 => false,
            Kind::Rollback => flags == 0 && l == ROLLBACK_PAYLOAD_LEN,
            Kind::Put | Kind::Delete if flags & FLAG_SEQ != 0 => false,
            Kind::Commit | Kind::Table if flags & (FLAG_IKEY | FLAG_STRING_KEY) != 0 => false,
            Kind::Table if flags != 0 => false,
            Kind::Begin | Kind::Abort => len == 0,
            Kind::Commit => {
                // A sequence block may be empty (n = 0: a commit that writes nothing, or only
                // to tables that are gone), as FORMAT.md section 6 allows.
                let base = COMMIT_PAYLOAD_LEN + if seq > 0 { 1 } else { 0 };
                let most = COMMIT_PAYLOAD_LEN + if seq > 0 { 1 + 12 * MAX_COMMIT_TABLES } else { 0 };
                (base..=most + 1 + MAX_COMMIT_ID_LEN).contains(&l)
            }
            Kind::Put | Kind::Delete => (1..=MAX_KEY_LEN).contains(&l),
            Kind::DeleteOne => (seq + 1..=seq + MAX_KEY_LEN).contains(&l),
            Kind::Chunk => l <= MAX_CHUNK_LEN,
            Kind::PutOne => (seq + 3..=seq + MAX_PAYLOAD_LEN).contains(&l),
            Kind::Table => (TABLE_PAYLOAD_LEN..=TABLE_PAYLOAD_LEN + MAX_TABLE_NAME_LEN).contains(&l),
        };
        if !len_ok {
            return Err(RecordHeaderError::BadLength(len));
        }
        Ok(RecordHeader {
            crc: u32_at(b, RH_CRC).unwrap_or(0),
            len,
            kind,
            flags,
            lsn: u64_at(b, RH_LSN).unwrap_or(0),
            txn: u64_at(b, RH_TXN).unwrap_or(0),
            prev: u64_at(b, RH_PREV).unwrap_or(0),
        })
    }

    /// Total record size on disk, bytes.
    pub fn record_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + u64::from(self.len)
    }
}

/// The record CRC from the encoded header (its bytes 4..36) and the payload's CRC32 state:
/// crc32(header[4..36] ‖ payload), combined without re-reading the payload.
pub fn record_crc(header: &[u8; RECORD_HEADER_LEN], payload_crc: &Hasher) -> u32 {
    let mut h = Hasher::new();
    h.update(header.get(RH_LEN..).unwrap_or_default());
    h.combine(payload_crc);
    h.finalize()
}

/// The header of a checkpoint file (88 bytes; 80 in version 2); the body follows
/// (docs/FORMAT.md, "Checkpoint").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckpointHeader {
    /// Checkpoint number; the valid checkpoint with the highest wins.
    pub seq: u64,
    /// Location where replay starts: the earliest BEGIN of a transaction open at the
    /// checkpoint, else the log's end.
    pub replay_from: u64,
    /// LSN of the record at `replay_from`.
    pub replay_lsn: u64,
    /// Transaction id the next transaction gets.
    pub next_txn: u64,
    /// Index entries in the body.
    pub entries: u64,
    /// Body length, bytes.
    pub body_len: u64,
    /// CRC32 of the body.
    pub body_crc: u32,
    /// Segment numbers listed at the start of the body: the segments this checkpoint needs.
    pub segments: u32,
    /// The body holds the effects of every record with an LSN below this one, and of none
    /// above (the checkpoint's LSN, RocksDB's and HoraeDB's flushed sequence). Replay from
    /// `replay_from` re-reads the records of transactions open at the checkpoint but applies
    /// only records at or above it. Version 2 headers lack it: read as `replay_lsn`.
    pub index_lsn: u64,
    /// Commit ids listed after the entries (version 4; 0 before).
    pub ids: u32,
    /// Format version of the header as read (written: always [`FORMAT_VERSION`]).
    pub version: u16,
}

const CK_SEQ: usize = 16;
const CK_REPLAY_FROM: usize = 24;
const CK_REPLAY_LSN: usize = 32;
const CK_NEXT_TXN: usize = 40;
const CK_ENTRIES: usize = 48;
const CK_BODY_LEN: usize = 56;
const CK_BODY_CRC: usize = 64;
const CK_SEGMENTS: usize = 68;
const CK_INDEX_LSN: usize = 72;
/// Version 3: reserved (0); version 4: the count of commit ids.
const CK_IDS: usize = 80;
const CK_CRC: usize = 84;
// Version 2: no `index_lsn`; reserved and CRC sit 8 bytes earlier.
const CK2_RESERVED: usize = 72;
const CK2_CRC: usize = 76;

impl CheckpointHeader {
    /// Size of this header on disk, bytes: where the body starts.
    pub fn header_len(&self) -> usize {
        if self.version == 2 {
            CHECKPOINT_HEADER_LEN_V2
        } else {
            CHECKPOINT_HEADER_LEN
        }
    }

    /// Encodes the header in the current version ([`CHECKPOINT_HEADER_LEN`] bytes).
    pub fn encode(&self) -> [u8; CHECKPOINT_HEADER_LEN] {
        let mut b = [0u8; CHECKPOINT_HEADER_LEN];
        put(&mut b, 0, &CHECKPOINT_MAGIC);
        put(&mut b, FH_VERSION, &FORMAT_VERSION.to_le_bytes());
        put(&mut b, FH_HEADER_LEN, &(CHECKPOINT_HEADER_LEN as u16).to_le_bytes());
        put(&mut b, FH_FLAGS, &0u32.to_le_bytes());
        put(&mut b, CK_SEQ, &self.seq.to_le_bytes());
        put(&mut b, CK_REPLAY_FROM, &self.replay_from.to_le_bytes());
        put(&mut b, CK_REPLAY_LSN, &self.replay_lsn.to_le_bytes());
        put(&mut b, CK_NEXT_TXN, &self.next_txn.to_le_bytes());
        put(&mut b, CK_ENTRIES, &self.entries.to_le_bytes());
        put(&mut b, CK_BODY_LEN, &self.body_len.to_le_bytes());
        put(&mut b, CK_BODY_CRC, &self.body_crc.to_le_bytes());
        put(&mut b, CK_SEGMENTS, &self.segments.to_le_bytes());
        put(&mut b, CK_INDEX_LSN, &self.index_lsn.to_le_bytes());
        put(&mut b, CK_IDS, &self.ids.to_le_bytes());
        let crc = crc32fast::hash(b.get(..CK_CRC).unwrap_or_default());
        put(&mut b, CK_CRC, &crc.to_le_bytes());
        b
    }

    /// Decodes and validates magic, version (2 to 8), header length, CRC and ranges from the
    /// first bytes of a checkpoint file (at least the header's length); `None` if any fails.
    pub fn decode(b: &[u8]) -> Option<CheckpointHeader> {
        let version = u16_at(b, FH_VERSION)?;
        let (len, crc_at) = match version {
            2 => (CHECKPOINT_HEADER_LEN_V2, CK2_CRC),
            3..=FORMAT_VERSION => (CHECKPOINT_HEADER_LEN, CK_CRC),
            _ => return None,
        };
        // Version 2's reserved field, and version 3's (where version 4 counts ids), are 0.
        let reserved_ok = match version {
            2 => u32_at(b, CK2_RESERVED) == Some(0),
            3 => u32_at(b, CK_IDS) == Some(0),
            _ => true,
        };
        if b.get(..8) != Some(&CHECKPOINT_MAGIC[..])
            || usize::from(u16_at(b, FH_HEADER_LEN)?) != len
            || u32_at(b, FH_FLAGS) != Some(0)
            || !reserved_ok
            || u32_at(b, crc_at) != Some(crc32fast::hash(b.get(..crc_at)?))
        {
            return None;
        }
        let replay_lsn = u64_at(b, CK_REPLAY_LSN)?;
        let h = CheckpointHeader {
            seq: u64_at(b, CK_SEQ)?,
            replay_from: u64_at(b, CK_REPLAY_FROM)?,
            replay_lsn,
            next_txn: u64_at(b, CK_NEXT_TXN)?,
            entries: u64_at(b, CK_ENTRIES)?,
            body_len: u64_at(b, CK_BODY_LEN)?,
            body_crc: u32_at(b, CK_BODY_CRC)?,
            segments: u32_at(b, CK_SEGMENTS)?,
            index_lsn: if version == 2 { replay_lsn } else { u64_at(b, CK_INDEX_LSN)? },
            ids: if version >= 4 { u32_at(b, CK_IDS)? } else { 0 },
            version,
        };
        (h.seq >= 1
            && h.replay_lsn >= 1
            && h.replay_lsn <= h.index_lsn
            && h.index_lsn <= MAX_ID
            && h.next_txn <= MAX_ID)
            .then_some(h)
    }
}

/// What a COMMIT states about its transaction, so recovery can prove the chain complete
/// (fjall's journal `End(checksum)`; UnisonDB's commit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitPayload {
    /// Records strictly between BEGIN and COMMIT on the chain.
    pub records: u32,
    /// CHUNK records among them.
    pub chunks: u32,
    /// Sum of the CHUNK payload lengths, bytes.
    pub value_bytes: u64,
    /// CRC32 of the CHUNK payloads concatenated in chain order.
    pub value_crc: u32,
}

impl CommitPayload {
    /// Encodes to [`COMMIT_PAYLOAD_LEN`] bytes.
    pub fn encode(&self) -> [u8; COMMIT_PAYLOAD_LEN] {
        let mut b = [0u8; COMMIT_PAYLOAD_LEN];
        put(&mut b, 0, &self.records.to_le_bytes());
        put(&mut b, 4, &self.chunks.to_le_bytes());
        put(&mut b, 8, &self.value_bytes.to_le_bytes());
        put(&mut b, 16, &self.value_crc.to_le_bytes());
        b
    }

    /// Encodes, followed by `id` if there is one: `id_len u8 | id` (1..=[`MAX_COMMIT_ID_LEN`]
    /// bytes; the caller checks the length).
    pub fn encode_with_id(&self, id: Option<&[u8]>) -> Vec<u8> {
        let mut b = self.encode().to_vec();
        if let Some(id) = id {
            b.push(id.len() as u8);
            b.extend_from_slice(id);
        }
        b
    }

    /// Decodes; `None` if `b` is not exactly [`COMMIT_PAYLOAD_LEN`] bytes.
    pub fn decode(b: &[u8]) -> Option<CommitPayload> {
        if b.len() != COMMIT_PAYLOAD_LEN {
            return None;
        }
        Some(CommitPayload {
            records: u32_at(b, 0)?,
            chunks: u32_at(b, 4)?,
            value_bytes: u64_at(b, 8)?,
            value_crc: u32_at(b, 16)?,
        })
    }

    /// Encodes with a sequence block (version 5, [`FLAG_SEQ`]): `n u8 | n x (table u32 |
    /// first_seq u64)` after the fixed part, then `id`. The transaction's k-th write to a table
    /// (in chain order) takes that table's `first_seq + k`. At most [`MAX_COMMIT_TABLES`]
    /// tables (the caller checks).
    pub fn encode_with_seqs(&self, seqs: &[(u32, u64)], id: Option<&[u8]>) -> Vec<u8> {
        let mut b = self.encode().to_vec();
        b.push(seqs.len().min(MAX_COMMIT_TABLES) as u8);
        for (table, first) in seqs.iter().take(MAX_COMMIT_TABLES) {
            b.extend_from_slice(&table.to_le_bytes());
            b.extend_from_slice(&first.to_le_bytes());
        }
        if let Some(id) = id {
            b.push(id.len() as u8);
            b.extend_from_slice(id);
        }
        b
    }

    /// Decodes a COMMIT payload whose header has `flags`: the fixed part, the sequence block
    /// (with [`FLAG_SEQ`]: tables distinct, first numbers in 1..=[`MAX_ID`]) and the id.
    #[allow(clippy::type_complexity)]
    pub fn decode_full(flags: u8, b: &[u8]) -> Option<(CommitPayload, Vec<(u32, u64)>, Option<&[u8]>)> {
        if flags & FLAG_SEQ == 0 {
            let (c, id) = CommitPayload::decode_with_id(b)?;
            return Some((c, Vec::new(), id));
        }
        let c = CommitPayload::decode(b.get(..COMMIT_PAYLOAD_LEN)?)?;
        let n = usize::from(*b.get(COMMIT_PAYLOAD_LEN)?);
        let mut seqs = Vec::with_capacity(n);
        let mut at = COMMIT_PAYLOAD_LEN + 1;
        for _ in 0..n {
            let (table, first) = (u32_at(b, at)?, u64_at(b, at + 4)?);
            if first == 0 || first > MAX_ID || seqs.iter().any(|&(t, _)| t == table) {
                return None;
            }
            seqs.push((table, first));
            at += 12;
        }
        let id = match b.get(at..)? {
            [] => None,
            [n, id @ ..] if usize::from(*n) == id.len() && (1..=MAX_COMMIT_ID_LEN).contains(&id.len()) => Some(id),
            _ => return None,
        };
        Some((c, seqs, id))
    }

    /// Decodes a COMMIT payload with or without an id; `None` unless it is exactly
    /// [`COMMIT_PAYLOAD_LEN`] bytes, or that and `id_len u8 | id` with `id_len` 1..=128.
    pub fn decode_with_id(b: &[u8]) -> Option<(CommitPayload, Option<&[u8]>)> {
        let c = CommitPayload::decode(b.get(..COMMIT_PAYLOAD_LEN)?)?;
        match b.get(COMMIT_PAYLOAD_LEN..)? {
            [] => Some((c, None)),
            [n, id @ ..] if usize::from(*n) == id.len() && (1..=MAX_COMMIT_ID_LEN).contains(&id.len()) => {
                Some((c, Some(id)))
            }
            _ => None,
        }
    }
}

/// Splits a one-record commit's payload whose header has `flags` into its sequence number (0
/// without [`FLAG_SEQ`]) and the rest.
pub fn split_seq(flags: u8, payload: &[u8]) -> Option<(u64, &[u8])> {
    if flags & FLAG_SEQ == 0 {
        return Some((0, payload));
    }
    let seq = u64_at(payload, 0)?;
    (1..=MAX_ID).contains(&seq).then_some((seq, payload.get(8..)?))
}

/// Splits a PUT_ONE payload (after its sequence number) into (key, value); `None` if the key
/// length does not fit.
pub fn split_put_one(payload: &[u8]) -> Option<(&[u8], &[u8])> {
    let key_len = usize::from(u16_at(payload, 0)?);
    if key_len == 0 {
        return None;
    }
    let key = payload.get(2..2 + key_len)?;
    let value = payload.get(2 + key_len..)?;
    Some((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_pack_segment_and_offset_in_order() {
        let a = loc(3, 100);
        assert_eq!((loc_segment(a), loc_offset(a)), (3, 100));
        assert!(loc(2, MAX_SEGMENT_LEN - 1) < loc(3, 0));
        assert_eq!(loc(0, 77), 77, "a version 1 offset is a location in segment 0");
    }

    #[test]
    fn checkpoint_header_roundtrips_and_rejects_damage() {
        let h = CheckpointHeader {
            seq: 4,
            replay_from: loc(2, 40),
            replay_lsn: 9,
            next_txn: 12,
            entries: 3,
            body_len: 99,
            body_crc: 7,
            segments: 2,
            index_lsn: 11,
            ids: 5,
            version: FORMAT_VERSION,
        };
        let b = h.encode();
        assert_eq!(CheckpointHeader::decode(&b), Some(h));
        assert_eq!(h.header_len(), CHECKPOINT_HEADER_LEN);
        for i in 0..CHECKPOINT_HEADER_LEN {
            let mut bad = b;
            bad[i] ^= 0x40;
            assert_eq!(CheckpointHeader::decode(&bad), None, "flip in byte {i}");
        }
        // An index LSN below the replay LSN cannot be.
        let below = CheckpointHeader { index_lsn: 8, ..h }.encode();
        assert_eq!(CheckpointHeader::decode(&below), None);
    }

    #[test]
    fn a_version_2_checkpoint_header_reads_with_its_replay_lsn_as_index_lsn() {
        // Laid out as version 2 wrote it: 80 bytes, reserved at 72, CRC at 76.
        let mut b = [0u8; CHECKPOINT_HEADER_LEN_V2];
        put(&mut b, 0, &CHECKPOINT_MAGIC);
        put(&mut b, FH_VERSION, &2u16.to_le_bytes());
        put(&mut b, FH_HEADER_LEN, &(CHECKPOINT_HEADER_LEN_V2 as u16).to_le_bytes());
        put(&mut b, CK_SEQ, &5u64.to_le_bytes());
        put(&mut b, CK_REPLAY_FROM, &loc(1, 32).to_le_bytes());
        put(&mut b, CK_REPLAY_LSN, &40u64.to_le_bytes());
        put(&mut b, CK_NEXT_TXN, &9u64.to_le_bytes());
        let crc = crc32fast::hash(&b[..CK2_CRC]);
        put(&mut b, CK2_CRC, &crc.to_le_bytes());
        let h = CheckpointHeader::decode(&b).unwrap();
        assert_eq!((h.seq, h.replay_lsn, h.index_lsn, h.version, h.header_len()), (5, 40, 40, 2, 80));
        for i in 0..CHECKPOINT_HEADER_LEN_V2 {
            let mut bad = b;
            bad[i] ^= 0x40;
            assert_eq!(CheckpointHeader::decode(&bad), None, "flip in byte {i}");
        }
    }

    #[test]
    fn file_header_roundtrips_and_rejects_damage() {
        let h = FileHeader { base_lsn: 7, segment: 0 };
        let b = h.encode();
        assert_eq!(FileHeader::decode(&b), Ok(h));
        let mut bad = b;
        bad[17] ^= 1;
        assert!(matches!(FileHeader::decode(&bad), Err(HeaderError::Checksum { .. })));
        let mut bad = b;
        bad[0] = b'X';
        assert_eq!(FileHeader::decode(&bad), Err(HeaderError::BadMagic));
        let mut bad = b;
        bad[8] = (FORMAT_VERSION + 1) as u8;
        assert_eq!(FileHeader::decode(&bad), Err(HeaderError::UnsupportedVersion(FORMAT_VERSION + 1)));
        for (base_lsn, segment) in [(0, 0), (MAX_ID + 1, 0), (1, MAX_SEGMENT + 1)] {
            let out_of_range = FileHeader { base_lsn, segment }.encode();
            assert!(
                matches!(FileHeader::decode(&out_of_range), Err(HeaderError::Malformed(_))),
                "{base_lsn} {segment}"
            );
        }
    }

    #[test]
    fn record_header_roundtrips_and_crc_covers_payload() {
        let (b, pcrc) = RecordHeader::encode(Kind::Chunk, 0, 9, 4, 100, &[b"ab", b"cd"]);
        let h = RecordHeader::decode(&b).expect("valid header");
        assert_eq!((h.kind, h.len, h.lsn, h.txn, h.prev), (Kind::Chunk, 4, 9, 4, 100));
        assert_eq!(pcrc.clone().finalize(), crc32fast::hash(b"abcd"));
        assert_eq!(h.crc, record_crc(&b, &pcrc));
        let mut whole = b[4..].to_vec();
        whole.extend_from_slice(b"abcd");
        assert_eq!(h.crc, crc32fast::hash(&whole), "CRC is over header[4..] then payload");
    }

    #[test]
    fn zeroes_never_parse_as_a_record() {
        assert_eq!(RecordHeader::decode(&[0; RECORD_HEADER_LEN]), Err(RecordHeaderError::UnknownKind(0)));
    }

    #[test]
    fn commit_payload_roundtrips() {
        let c = CommitPayload { records: 3, chunks: 2, value_bytes: 1 << 33, value_crc: 0xdead_beef };
        assert_eq!(CommitPayload::decode(&c.encode()), Some(c));
        assert_eq!(CommitPayload::decode(&[0; 19]), None);
    }

    #[test]
    fn put_one_split_checks_bounds() {
        assert_eq!(split_put_one(&[2, 0, b'k', b'y', b'v']), Some((&b"ky"[..], &b"v"[..])));
        assert_eq!(split_put_one(&[5, 0, b'k']), None);
        assert_eq!(split_put_one(&[0, 0, b'k']), None);
    }
}
