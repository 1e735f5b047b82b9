//! The in-memory index: an ordered map from key to where its value's chunks lie in the log.
//! Values stay in the log; memory grows with the number of keys and chunks (16 bytes per
//! chunk), not with value bytes.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::format::{loc_segment, RECORD_HEADER_LEN};

/// Where one piece of a value lies: the record at location `record`, bytes
/// `skip..skip+len` of its payload. Reads re-check the record's CRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLoc {
    /// Location of the record ([`crate::format::loc`]: segment and offset).
    pub record: u64,
    /// Payload bytes before the value bytes (the key prefix of a PUT_ONE), bytes.
    pub skip: u32,
    /// Value bytes in this record.
    pub len: u32,
}

/// A committed value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    /// The value's pieces in order; empty for an empty value.
    pub chunks: Vec<ChunkLoc>,
    /// Value length, bytes.
    pub size: u64,
    /// Whether the key was last written as a string.
    pub string_key: bool,
    /// LSN of the COMMIT (or PUT_ONE) that wrote it.
    pub lsn: u64,
    /// Segments of the first and the last record that wrote it (BEGIN and COMMIT, or the
    /// PUT_ONE twice): every record of its transaction lies in this range.
    pub span: (u32, u32),
}

/// One effect of a committed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Sets `key` to `entry`.
    Put { key: Vec<u8>, entry: Entry },
    /// Removes `key`.
    Delete { key: Vec<u8> },
}

impl Op {
    pub(crate) fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// Which keys a scan returns. `start` is inclusive, `end` exclusive, both bytewise; `prefix`
/// keeps only keys that start with it; `limit` caps the count; `reverse` walks from the end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRange {
    pub prefix: Option<Vec<u8>>,
    pub start: Option<Vec<u8>>,
    pub end: Option<Vec<u8>>,
    pub limit: Option<usize>,
    pub reverse: bool,
}

/// A key returned by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub key: Vec<u8>,
    /// Whether the key was last written as a string.
    pub string_key: bool,
    /// Value length, bytes.
    pub size: u64,
}

/// The ordered map, with its running totals.
#[derive(Debug, Default)]
pub(crate) struct Index {
    map: BTreeMap<Vec<u8>, Entry>,
    live_bytes: u64,
    /// Bytes of the records live values use, per segment (header, key prefix and value of
    /// each chunk's record): what compaction would have to copy out of it. Counting whole
    /// records keeps a log of small values from looking mostly dead.
    segment_live: BTreeMap<u32, u64>,
    /// The sum of `segment_live`.
    live_record_bytes: u64,
    /// How many live entries begin in each segment: the lowest key bounds what may be released
    /// from the front of the log.
    first_segments: BTreeMap<u32, usize>,
}

impl Index {
    /// Builds an index from entries in ascending key order (a checkpoint's), in linear time.
    pub fn from_sorted(entries: Vec<(Vec<u8>, Entry)>) -> Index {
        let mut ix = Index::default();
        for (_, e) in &entries {
            ix.account(e, true);
        }
        ix.map = entries.into_iter().collect();
        ix
    }

    fn account(&mut self, e: &Entry, add: bool) {
        if add {
            self.live_bytes += e.size;
            *self.first_segments.entry(e.span.0).or_insert(0) += 1;
        } else {
            self.live_bytes -= e.size;
            if let Some(n) = self.first_segments.get_mut(&e.span.0) {
                *n -= 1;
                if *n == 0 {
                    self.first_segments.remove(&e.span.0);
                }
            }
        }
        for c in &e.chunks {
            let bytes = RECORD_HEADER_LEN as u64 + u64::from(c.skip) + u64::from(c.len);
            let seg = self.segment_live.entry(loc_segment(c.record)).or_insert(0);
            if add {
                *seg += bytes;
                self.live_record_bytes += bytes;
            } else {
                *seg -= bytes;
                self.live_record_bytes -= bytes;
                if *seg == 0 {
                    self.segment_live.remove(&loc_segment(c.record));
                }
            }
        }
    }

    pub fn apply(&mut self, op: Op) {
        match op {
            Op::Put { key, entry } => {
                self.account(&entry, true);
                if let Some(old) = self.map.insert(key, entry) {
                    self.account(&old, false);
                }
            }
            Op::Delete { key } => {
                if let Some(old) = self.map.remove(&key) {
                    self.account(&old, false);
                }
            }
        }
    }

    /// Drops entries with a chunk at or after location `end` (their data was cut off).
    pub fn retain_before(&mut self, end: u64) {
        let gone: Vec<Vec<u8>> =
            self.map.iter().filter(|(_, e)| e.chunks.iter().any(|c| c.record >= end)).map(|(k, _)| k.clone()).collect();
        for key in gone {
            self.apply(Op::Delete { key });
        }
    }

    /// Every entry in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Vec<u8>, &Entry)> {
        self.map.iter()
    }

    /// The oldest segment holding a record of a live value (None without values): nothing
    /// before it is needed to rebuild the live state.
    pub fn first_live_segment(&self) -> Option<u32> {
        self.first_segments.keys().next().copied()
    }

    /// Bytes of the records live values use, in all segments.
    pub fn live_record_bytes(&self) -> u64 {
        self.live_record_bytes
    }

    /// Bytes of the records live values use, per segment (segments without any are absent).
    pub fn segment_live(&self) -> &BTreeMap<u32, u64> {
        &self.segment_live
    }

    pub fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.map.get(key)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    pub fn scan(&self, r: &KeyRange) -> Vec<KeyInfo> {
        // The effective lower bound is the larger of `start` and `prefix`.
        let lower = match (&r.start, &r.prefix) {
            (Some(s), Some(p)) => Some(if s > p { s } else { p }),
            (Some(s), None) => Some(s),
            (None, p) => p.as_ref(),
        };
        let lo = lower.map_or(Bound::Unbounded, |k| Bound::Included(k.as_slice()));
        let hi = r.end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        if let (Bound::Included(l), Bound::Excluded(h)) = (lo, hi) {
            if l >= h {
                return Vec::new();
            }
        }
        let range = self.map.range::<[u8], _>((lo, hi));
        let prefix = r.prefix.as_deref().unwrap_or_default();
        let limit = r.limit.unwrap_or(usize::MAX);
        let info = |(k, e): (&Vec<u8>, &Entry)| KeyInfo { key: k.clone(), string_key: e.string_key, size: e.size };
        if r.reverse {
            range.rev().filter(|(k, _)| k.starts_with(prefix)).take(limit).map(info).collect()
        } else {
            range.take_while(|(k, _)| k.starts_with(prefix)).take(limit).map(info).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(ix: &mut Index, k: &str, size: u64) {
        ix.apply(Op::Put { key: k.as_bytes().to_vec(), entry: Entry { size, ..Entry::default() } });
    }
    fn keys(v: Vec<KeyInfo>) -> Vec<String> {
        v.into_iter().map(|i| String::from_utf8(i.key).unwrap_or_default()).collect()
    }

    #[test]
    fn scans_respect_prefix_bounds_limit_and_order() {
        let mut ix = Index::default();
        for k in ["a", "b/1", "b/2", "b/3", "c"] {
            put(&mut ix, k, 1);
        }
        let p = |s: &str| Some(s.as_bytes().to_vec());
        assert_eq!(keys(ix.scan(&KeyRange { prefix: p("b/"), ..Default::default() })), ["b/1", "b/2", "b/3"]);
        assert_eq!(
            keys(ix.scan(&KeyRange { prefix: p("b/"), reverse: true, limit: Some(2), ..Default::default() })),
            ["b/3", "b/2"]
        );
        assert_eq!(keys(ix.scan(&KeyRange { start: p("b/2"), end: p("c"), ..Default::default() })), ["b/2", "b/3"]);
        assert_eq!(keys(ix.scan(&KeyRange { start: p("c"), end: p("a"), ..Default::default() })), Vec::<String>::new());
        assert_eq!(ix.live_bytes(), 5);
        ix.apply(Op::Delete { key: b"a".to_vec() });
        put(&mut ix, "c", 10);
        assert_eq!((ix.len(), ix.live_bytes()), (4, 13));
    }
}
