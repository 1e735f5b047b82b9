//! The in-memory index: an ordered map from key to where its value's chunks lie in the log.
//! Values stay in the log; memory grows with the number of keys and chunks, not with value
//! bytes: a key in the run costs its checkpoint entry (31 bytes, the key, 16 per chunk) and an
//! offset; one changed since the last checkpoint costs a map node besides.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;

use crate::format::{
    ikey, loc_segment, queue_key, split_feed, split_ikey, table_prefix, TableRecord, FEED_DELETE, NS_FEED, NS_KEYS,
    NS_QUEUE, RECORD_HEADER_LEN, TABLE_OP_DROP, TABLE_OP_STATE,
};
use crate::wal::checkpoint::Run;

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

impl ChunkLoc {
    /// Bytes of the record this piece lies in that its value keeps alive (header, key prefix
    /// and value bytes): what compaction would copy.
    pub fn record_bytes(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + u64::from(self.skip) + u64::from(self.len)
    }
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
    /// Remembers that the transaction with commit id `id` committed at `lsn`, taking the
    /// sequence numbers `seqs` (`(table, first, last)` per table it numbered).
    Id { id: Vec<u8>, lsn: u64, seqs: Vec<SeqRange> },
    /// A commit took table `table`'s sequence numbers up to `last`.
    Seq { table: u32, last: u64 },
    /// A TABLE record: a table's state (created, or its marks moved), or its drop.
    Table(TableRecord),
}

/// Whether internal key `key` is a change feed entry of a delete.
fn is_feed_delete(key: &[u8]) -> bool {
    let (table, ns, rest) = split_ikey(key);
    table != 0 && ns == NS_FEED && split_feed(rest).is_some_and(|(_, kind, ..)| kind == FEED_DELETE)
}

/// One table's state: HoraeDB's table unit, within walnut's one log and key space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableMeta {
    /// Table id; 0 is the default table (the store's own keys), named tables count from 1.
    pub id: u32,
    /// Name (empty for the default table).
    pub name: String,
    /// The sequence number the table's next write takes (1 for a new table).
    pub next_seq: u64,
    /// The last flushed sequence number persisted (HoraeDB's MaxSeq), 0 if none.
    pub flushed: u64,
    /// Queue entries at or below this sequence number are deleted (0: none).
    pub deleted_upto: u64,
}

impl TableMeta {
    fn new(id: u32, name: String) -> TableMeta {
        TableMeta { id, name, next_seq: 1, flushed: 0, deleted_upto: 0 }
    }

    /// Whether the table is as created: no write numbered yet, no mark set.
    pub fn is_new(&self) -> bool {
        self.next_seq == 1 && self.flushed == 0 && self.deleted_upto == 0
    }

    /// The TABLE record stating this table's state.
    pub fn record(&self) -> TableRecord {
        TableRecord {
            op: TABLE_OP_STATE,
            table: self.id,
            next_seq: self.next_seq,
            flushed: self.flushed,
            deleted_upto: self.deleted_upto,
            name: self.name.clone(),
        }
    }
}

/// The tables of a store: the default table (always there) and the named ones, with the id
/// the next table gets (ids are never reused, across drops too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    pub(crate) metas: BTreeMap<u32, TableMeta>,
    pub(crate) next_id: u32,
}

impl Default for Tables {
    fn default() -> Self {
        Tables { metas: BTreeMap::from([(0, TableMeta::new(0, String::new()))]), next_id: 1 }
    }
}

impl Tables {
    /// The table `id`, if it exists.
    pub fn get(&self, id: u32) -> Option<&TableMeta> {
        self.metas.get(&id)
    }

    /// The table named `name`, if it exists (a linear search: tables are few).
    pub fn by_name(&self, name: &str) -> Option<&TableMeta> {
        self.metas.values().find(|m| m.id != 0 && m.name == name)
    }

    /// Every table, the default one first, then by id.
    pub fn iter(&self) -> impl Iterator<Item = &TableMeta> {
        self.metas.values()
    }

    /// The id the next new table gets.
    pub fn next_id(&self) -> u32 {
        self.next_id
    }

    /// The records that state every table again later in the log (a restatement before a
    /// release, a compaction round's statement, an export): each table's TABLE STATE, the
    /// default table's only if `with_new_default` or it has numbered a write or holds a mark;
    /// then, if the highest id ever given belongs to a table dropped since, a TABLE DROP of it,
    /// so that a full scan of what follows gives no table that id again (its own DROP may be
    /// released).
    pub fn statement(&self, with_new_default: bool) -> Vec<TableRecord> {
        let mut out: Vec<TableRecord> =
            self.iter().filter(|m| with_new_default || m.id != 0 || !m.is_new()).map(TableMeta::record).collect();
        let last = self.next_id.saturating_sub(1);
        if last > 0 && self.get(last).is_none() {
            out.push(TableRecord { op: TABLE_OP_DROP, table: last, ..TableRecord::default() });
        }
        out
    }
}

/// Default of [`crate::Options::id_retention`]: commit ids remembered.
pub const DEFAULT_ID_RETENTION: usize = 10_000;

/// Sequence numbers a commit took in one table: `(table, first, last)`.
pub(crate) type SeqRange = (u32, u64, u64);

/// Ids of committed transactions, the newest [`Ids::retention`] of them, each with its COMMIT's
/// LSN: a commit with an id remembered here is not made again (SynapseDB's persistent dedupe of
/// transaction ids). Kept in checkpoints and rebuilt by replay, so it holds across restarts.
#[derive(Debug, Clone)]
pub(crate) struct Ids {
    /// Each id's COMMIT LSN and the sequence numbers that commit took (`(table, first, last)`;
    /// empty when it took none, or when it is not known: an id read from a checkpoint older
    /// than version 8, or from an export).
    by_id: HashMap<Vec<u8>, (u64, Vec<SeqRange>)>,
    /// In commit order (oldest first): which to forget first.
    order: VecDeque<Vec<u8>>,
    retention: usize,
    /// How many of them are export end marks ([`crate::export::END_MARK_PREFIX`]), which the
    /// retention does not count: an import's end mark must not push out the oldest id the
    /// export carried (a write retried under it would then be made again).
    marks: usize,
}

/// Unbounded until the store sets its retention ([`Ids::set_retention`]): recovery keeps every
/// id it reads.
impl Default for Ids {
    fn default() -> Self {
        Ids { by_id: HashMap::new(), order: VecDeque::new(), retention: usize::MAX, marks: 0 }
    }
}

impl Ids {
    /// The LSN of the COMMIT that carried `id`, if it is remembered.
    pub fn get(&self, id: &[u8]) -> Option<u64> {
        self.by_id.get(id).map(|e| e.0)
    }

    /// The sequence numbers the commit at `lsn` took, if an id remembered came with it
    /// (empty if none is known). Walks every id: for the rare retried write.
    pub fn seqs_at(&self, lsn: u64) -> &[SeqRange] {
        self.by_id.values().find(|e| e.0 == lsn).map_or(&[], |e| e.1.as_slice())
    }

    /// Remembers `id`, committed at `lsn` with the numbers `seqs`, forgetting the oldest
    /// beyond the retention. An id committed again (replay meeting a commit the store made
    /// after it forgot the first) takes the newest place, as it did in the store.
    pub fn insert(&mut self, id: Vec<u8>, lsn: u64, seqs: Vec<SeqRange>) {
        if self.by_id.insert(id.clone(), (lsn, seqs)).is_some() {
            self.order.retain(|o| *o != id);
        } else if is_end_mark(&id) {
            self.marks += 1;
        }
        self.order.push_back(id);
        self.trim();
    }

    /// Forgets the oldest ids beyond the retention, end marks not counted (nor forgotten).
    fn trim(&mut self) {
        while self.order.len().saturating_sub(self.marks) > self.retention {
            // The oldest id that is not an end mark (at most a few marks come before it).
            let Some(at) = self.order.iter().position(|id| !is_end_mark(id)) else { break };
            if let Some(old) = self.order.remove(at) {
                self.by_id.remove(&old);
            }
        }
    }

    /// Keeps at most `n` ids (the newest).
    pub fn set_retention(&mut self, n: usize) {
        self.retention = n;
        self.trim();
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// The ids with their LSNs, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], u64)> {
        self.iter_with_seqs().map(|(id, lsn, _)| (id, lsn))
    }

    /// The ids with their LSNs and the numbers their commits took, oldest first.
    pub fn iter_with_seqs(&self) -> impl Iterator<Item = (&[u8], u64, &[SeqRange])> {
        self.order.iter().map(|id| {
            let (lsn, seqs) = self.by_id.get(id).map_or((0, &[][..]), |e| (e.0, e.1.as_slice()));
            (id.as_slice(), lsn, seqs)
        })
    }

    /// Forgets ids committed at or after `lsn` (their COMMIT was cut off).
    fn retain_below(&mut self, lsn: u64) {
        self.by_id.retain(|_, e| e.0 < lsn);
        let by_id = &self.by_id;
        self.order.retain(|id| by_id.contains_key(id));
        self.marks = self.order.iter().filter(|id| is_end_mark(id)).count();
    }
}

/// Whether `id` is an export's end mark.
fn is_end_mark(id: &[u8]) -> bool {
    id.starts_with(crate::export::END_MARK_PREFIX.as_bytes())
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

/// What the index counts, kept as entries come and go.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Totals {
    /// Sum of the live values' sizes, bytes.
    pub live_bytes: u64,
    /// Bytes of the records live values use, per segment (header, key prefix and value of
    /// each chunk's record): what compaction would have to copy out of it. Counting whole
    /// records keeps a log of small values from looking mostly dead.
    pub segment_live: BTreeMap<u32, u64>,
    /// The sum of `segment_live`.
    pub live_record_bytes: u64,
    /// How many live entries begin in each segment: the lowest key bounds what may be released
    /// from the front of the log.
    pub first_segments: BTreeMap<u32, usize>,
}

impl Totals {
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
            let bytes = c.record_bytes();
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
}

/// The ordered map from key to entry, in two layers, as an LSM tree keeps a memtable over a
/// sorted run: the [`Run`] of the last checkpoint read or written, searched in place, and
/// above it a map of what changed since (a put, or `None` for a key of the run deleted).
/// Opening from a checkpoint thus builds no map; each checkpoint folds the map into a new run.
#[derive(Debug, Default)]
pub(crate) struct Index {
    run: Run,
    overlay: BTreeMap<Vec<u8>, Option<Entry>>,
    len: usize,
    totals: Totals,
    /// Commit ids of the transactions committed most recently.
    ids: Ids,
    tables: Tables,
}

/// One entry of [`Index::items`]: entry `i` of the run, or one from the map above it.
pub(crate) enum Item<'a> {
    Run(usize),
    Fresh(&'a [u8], &'a Entry),
}

/// Merges the run's entries `run` (a range of indices) with the map's `over`, in key order
/// or (`reverse`) against it; the map wins ties, and its deletions hide the run's entry.
struct Merge<'a, O> {
    index: &'a Index,
    run: std::ops::Range<usize>,
    over: O,
    reverse: bool,
    next_run: Option<usize>,
    next_over: Option<(&'a Vec<u8>, &'a Option<Entry>)>,
}

impl<'a, O> Merge<'a, O>
where
    O: DoubleEndedIterator<Item = (&'a Vec<u8>, &'a Option<Entry>)>,
{
    fn new(index: &'a Index, mut run: std::ops::Range<usize>, mut over: O, reverse: bool) -> Self {
        let (next_run, next_over) =
            if reverse { (run.next_back(), over.next_back()) } else { (run.next(), over.next()) };
        Merge { index, run, over, reverse, next_run, next_over }
    }

    fn advance_run(&mut self) {
        self.next_run = if self.reverse { self.run.next_back() } else { self.run.next() };
    }

    fn advance_over(&mut self) {
        self.next_over = if self.reverse { self.over.next_back() } else { self.over.next() };
    }
}

impl<'a, O> Iterator for Merge<'a, O>
where
    O: DoubleEndedIterator<Item = (&'a Vec<u8>, &'a Option<Entry>)>,
{
    type Item = Item<'a>;

    fn next(&mut self) -> Option<Item<'a>> {
        loop {
            let order = match (self.next_run, self.next_over) {
                (None, None) => return None,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(i), Some((key, _))) => {
                    let o = self.index.run.key(i).cmp(key.as_slice());
                    if self.reverse {
                        o.reverse()
                    } else {
                        o
                    }
                }
            };
            if order.is_le() {
                let i = self.next_run;
                self.advance_run();
                if order.is_lt() {
                    return i.map(Item::Run);
                }
            }
            let (key, slot) = self.next_over?;
            self.advance_over();
            if let Some(e) = slot {
                return Some(Item::Fresh(key, e));
            }
        }
    }
}

impl Index {
    /// An index of the entries of `run`, which `totals` counts (a checkpoint's, as read).
    pub fn from_run(run: Run, totals: Totals, ids: Ids, tables: Tables) -> Index {
        Index { len: run.len(), run, overlay: BTreeMap::new(), totals, ids, tables }
    }

    /// The tables and their sequence marks.
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// Removes every entry whose internal key starts with `prefix`.
    fn remove_prefix(&mut self, prefix: &[u8], upto: Option<&[u8]>) {
        let r = KeyRange { prefix: Some(prefix.to_vec()), end: upto.map(<[u8]>::to_vec), ..KeyRange::default() };
        for info in self.scan(&r) {
            self.apply_unchecked(Op::Delete { key: info.key });
        }
    }

    /// The commit ids remembered.
    pub fn ids(&self) -> &Ids {
        &self.ids
    }

    pub fn ids_mut(&mut self) -> &mut Ids {
        &mut self.ids
    }

    /// Replaces both layers by `run`, which holds the same entries (the checkpoint just
    /// written from this index): the map above it empties.
    pub fn rebase(&mut self, run: Run) {
        debug_assert_eq!(run.len(), self.len);
        self.run = run;
        self.overlay.clear();
    }

    pub(crate) fn run(&self) -> &Run {
        &self.run
    }

    /// Entries in the map above the run (puts and deletions).
    pub(crate) fn overlay_len(&self) -> usize {
        self.overlay.len()
    }

    /// Whether a put or delete of internal key `key` lands: its table exists and, for a queue
    /// entry, its sequence number is complete and above the table's deleted mark.
    fn lands(&self, key: &[u8]) -> bool {
        let (table, ns, rest) = split_ikey(key);
        let Some(meta) = self.tables.get(table) else { return false };
        match ns {
            NS_KEYS => true,
            NS_QUEUE => rest.try_into().map(u64::from_be_bytes).is_ok_and(|seq| seq > meta.deleted_upto),
            NS_FEED => split_feed(rest).is_some_and(|(seq, ..)| seq > meta.deleted_upto),
            _ => false,
        }
    }

    pub fn apply(&mut self, op: Op) {
        match op {
            Op::Put { key, .. } | Op::Delete { key } if !self.lands(&key) => {}
            Op::Put { key, mut entry } if is_feed_delete(&key) => {
                // A delete's change: the key given as the removed value's was (string or bytes).
                let (table, _, rest) = split_ikey(&key);
                if let Some((_, _, _, user_key)) = split_feed(rest) {
                    if let Some(e) = self.get(&ikey(table, user_key)) {
                        entry.string_key = e.string_key;
                    }
                }
                self.apply_unchecked(Op::Put { key, entry });
            }
            Op::Seq { table, last } => {
                if let Some(m) = self.tables.metas.get_mut(&table) {
                    m.next_seq = m.next_seq.max(last.saturating_add(1));
                }
            }
            Op::Table(r) if r.op == TABLE_OP_DROP => {
                self.tables.next_id = self.tables.next_id.max(r.table.saturating_add(1));
                if self.tables.metas.remove(&r.table).is_some() {
                    let p = table_prefix(r.table, NS_KEYS);
                    self.remove_prefix(&p[..p.len() - 1], None);
                }
            }
            Op::Table(r) => {
                self.tables.next_id = self.tables.next_id.max(r.table.saturating_add(1));
                let m = self.tables.metas.entry(r.table).or_insert_with(|| TableMeta::new(r.table, r.name.clone()));
                if !r.name.is_empty() {
                    m.name = r.name;
                }
                m.next_seq = m.next_seq.max(r.next_seq);
                m.flushed = m.flushed.max(r.flushed);
                let upto = r.deleted_upto;
                if upto > m.deleted_upto {
                    m.deleted_upto = upto;
                    let end = queue_key(r.table, upto.saturating_add(1));
                    self.remove_prefix(&table_prefix(r.table, NS_QUEUE), Some(&end));
                    let mut end = table_prefix(r.table, NS_FEED).to_vec();
                    end.extend_from_slice(&upto.saturating_add(1).to_be_bytes());
                    self.remove_prefix(&table_prefix(r.table, NS_FEED), Some(&end));
                }
            }
            op => self.apply_unchecked(op),
        }
    }

    /// Applies a put or delete of `key` as it is, whatever table its key names (the v4 key
    /// migration moves keys that would not land).
    pub(crate) fn apply_unchecked(&mut self, op: Op) {
        match op {
            Op::Put { key, entry } => {
                self.totals.account(&entry, true);
                // The replaced entry: the map's (taken, not copied), else the run's.
                let old = match self.overlay.get_mut(&key) {
                    Some(slot) => slot.replace(entry),
                    None => {
                        let old = self.run.find(&key).ok().map(|i| self.run.entry(i));
                        self.overlay.insert(key, Some(entry));
                        old
                    }
                };
                match old {
                    Some(old) => self.totals.account(&old, false),
                    None => self.len += 1,
                }
            }
            Op::Delete { key } => {
                let old = match self.overlay.get_mut(&key) {
                    Some(slot) => slot.take(),
                    None => self.run.find(&key).ok().map(|i| self.run.entry(i)),
                };
                let Some(old) = old else { return };
                self.totals.account(&old, false);
                self.len -= 1;
                if self.run.find(&key).is_ok() {
                    self.overlay.insert(key, None);
                } else {
                    self.overlay.remove(&key);
                }
            }
            Op::Id { id, lsn, seqs } => self.ids.insert(id, lsn, seqs),
            op @ (Op::Seq { .. } | Op::Table(_)) => self.apply(op),
        }
    }

    /// Drops entries with a chunk at or after location `end`, or written by a record at or
    /// after LSN `end_lsn`: their data or their COMMIT was cut off, so a full scan of what is
    /// left would not have them either.
    pub fn retain_before(&mut self, end: u64, end_lsn: u64) {
        let gone: Vec<Vec<u8>> = self
            .iter()
            .filter(|(_, e)| e.lsn >= end_lsn || e.chunks.iter().any(|c| c.record >= end))
            .map(|(k, _)| k.to_vec())
            .collect();
        for key in gone {
            self.apply_unchecked(Op::Delete { key });
        }
        self.ids.retain_below(end_lsn);
    }

    /// Every entry in key order, each either in the run or in the map.
    pub(crate) fn items(&self) -> impl Iterator<Item = Item<'_>> {
        Merge::new(self, 0..self.run.len(), self.overlay.iter(), false)
    }

    /// Every entry in key order (run entries decoded as they come).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Cow<'_, Entry>)> {
        self.items().map(|item| match item {
            Item::Run(i) => (self.run.key(i), Cow::Owned(self.run.entry(i))),
            Item::Fresh(k, e) => (k, Cow::Borrowed(e)),
        })
    }

    /// Every entry's key and span ([`Entry::span`]), in key order, decoding nothing else.
    pub fn spans(&self) -> impl Iterator<Item = (&[u8], (u32, u32))> {
        self.items().map(|item| match item {
            Item::Run(i) => (self.run.key(i), self.run.span(i)),
            Item::Fresh(k, e) => (k, e.span),
        })
    }

    /// The oldest segment holding a record of a live value (None without values): nothing
    /// before it is needed to rebuild the live state.
    pub fn first_live_segment(&self) -> Option<u32> {
        self.totals.first_segments.keys().next().copied()
    }

    /// Bytes of the records live values use, in all segments.
    pub fn live_record_bytes(&self) -> u64 {
        self.totals.live_record_bytes
    }

    /// Bytes of the records live values use, per segment (segments without any are absent).
    pub fn segment_live(&self) -> &BTreeMap<u32, u64> {
        &self.totals.segment_live
    }

    /// The entry of `key`: borrowed from the map, or decoded from the run.
    pub fn get(&self, key: &[u8]) -> Option<Cow<'_, Entry>> {
        match self.overlay.get(key) {
            Some(slot) => slot.as_ref().map(Cow::Borrowed),
            None => self.run.find(key).ok().map(|i| Cow::Owned(self.run.entry(i))),
        }
    }

    /// Whether `key` has an entry (decoding nothing).
    pub fn contains(&self, key: &[u8]) -> bool {
        match self.overlay.get(key) {
            Some(slot) => slot.is_some(),
            None => self.run.find(key).is_ok(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn live_bytes(&self) -> u64 {
        self.totals.live_bytes
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
        let run_lo = lower.map_or(0, |k| self.run.lower_bound(k));
        let run_hi = r.end.as_deref().map_or(self.run.len(), |k| self.run.lower_bound(k));
        let over = self.overlay.range::<[u8], _>((lo, hi));
        let merged = Merge::new(self, run_lo..run_hi.max(run_lo), over, r.reverse);
        let prefix = r.prefix.as_deref().unwrap_or_default();
        let limit = r.limit.unwrap_or(usize::MAX);
        let info = |item: Item<'_>| {
            let (key, (string_key, size)) = match item {
                Item::Run(i) => (self.run.key(i), self.run.info(i)),
                Item::Fresh(k, e) => (k, (e.string_key, e.size)),
            };
            KeyInfo { key: key.to_vec(), string_key, size }
        };
        fn key_of<'a>(ix: &'a Index, item: &Item<'a>) -> &'a [u8] {
            match *item {
                Item::Run(i) => ix.run.key(i),
                Item::Fresh(k, _) => k,
            }
        }
        if r.reverse {
            merged.filter(|it| key_of(self, it).starts_with(prefix)).take(limit).map(info).collect()
        } else {
            merged.take_while(|it| key_of(self, it).starts_with(prefix)).take(limit).map(info).collect()
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

    /// proptest is a native-only dev-dependency.
    #[cfg(not(target_arch = "wasm32"))]
    mod two_layers {
        use super::*;
        use crate::format::{loc, CheckpointHeader};
        use crate::storage::MemoryStorage;
        use crate::wal::checkpoint;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Step {
            Put(u8, Entry),
            Delete(u8),
            /// Fold the map into a run: encoded in memory (false) or written to a file and read back.
            Checkpoint(bool),
            Scan(Option<u8>, Option<u8>, Option<u8>, Option<usize>, bool),
        }

        fn key_of(k: u8) -> Vec<u8> {
            // Keys sharing prefixes, of different lengths: "a", "ab", "abb", "b", ...
            let base = [b'a', b'b', b'c'][usize::from(k % 3)];
            std::iter::once(base).chain(std::iter::repeat_n(b'b', usize::from(k / 3 % 4))).collect()
        }

        fn entry() -> impl Strategy<Value = Entry> {
            (
                0u32..4,
                0u32..2,
                proptest::collection::vec((0u32..2, 1u32..100, 0u32..20, 32u64..5000), 0..3),
                any::<bool>(),
            )
                .prop_map(|(first, extra, chunks, string_key)| {
                    let span = (first, first + extra);
                    let chunks: Vec<ChunkLoc> = chunks
                        .into_iter()
                        .map(|(s, len, skip, off)| ChunkLoc { record: loc(span.0 + s.min(extra), off), skip, len })
                        .collect();
                    let size = chunks.iter().map(|c| u64::from(c.len)).sum();
                    Entry { chunks, size, string_key, lsn: u64::from(first) * 7 + size, span }
                })
        }

        fn step() -> impl Strategy<Value = Step> {
            let k = 0u8..12;
            prop_oneof![
                4 => (k.clone(), entry()).prop_map(|(k, e)| Step::Put(k, e)),
                2 => k.clone().prop_map(Step::Delete),
                1 => any::<bool>().prop_map(Step::Checkpoint),
                2 => (proptest::option::of(k.clone()), proptest::option::of(k.clone()), proptest::option::of(k), proptest::option::of(0usize..4), any::<bool>())
                    .prop_map(|(p, s, e, l, r)| Step::Scan(p, s, e, l, r)),
            ]
        }

        fn model_scan(model: &BTreeMap<Vec<u8>, Entry>, r: &KeyRange) -> Vec<KeyInfo> {
            let keep = |k: &Vec<u8>| {
                r.prefix.as_ref().is_none_or(|p| k.starts_with(p))
                    && r.start.as_ref().is_none_or(|s| k >= s)
                    && r.end.as_ref().is_none_or(|e| k < e)
            };
            let info = |(k, e): (&Vec<u8>, &Entry)| KeyInfo { key: k.clone(), string_key: e.string_key, size: e.size };
            let all: Vec<KeyInfo> = if r.reverse {
                model.iter().rev().filter(|(k, _)| keep(k)).map(info).collect()
            } else {
                model.iter().filter(|(k, _)| keep(k)).map(info).collect()
            };
            all.into_iter().take(r.limit.unwrap_or(usize::MAX)).collect()
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

            /// The two-layer index (a run under a map) behaves as one ordered map, through puts,
            /// deletes, checkpoints folding the map into a run, and runs read back from a file.
            #[test]
            fn two_layers_match_one_map(steps in proptest::collection::vec(step(), 1..60)) {
                let segments: Vec<u32> = (0..6).collect();
                let mut ix = Index::default();
                let mut model: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
                for step in steps {
                    match step {
                        Step::Put(k, e) => {
                            ix.apply(Op::Put { key: key_of(k), entry: e.clone() });
                            model.insert(key_of(k), e);
                        }
                        Step::Delete(k) => {
                            ix.apply(Op::Delete { key: key_of(k) });
                            model.remove(&key_of(k));
                        }
                        Step::Checkpoint(false) => {
                            let run = checkpoint::encode_body(&segments, &ix);
                            ix.rebase(run);
                            prop_assert_eq!(ix.overlay_len(), 0);
                        }
                        Step::Checkpoint(true) => {
                            let mut file = MemoryStorage::new();
                            let header = CheckpointHeader { seq: 1, replay_from: loc(0, 32), replay_lsn: 1, index_lsn: 1, ..Default::default() };
                            checkpoint::write(&mut file, header, &segments, &ix).map_err(|e| TestCaseError::fail(e.to_string()))?;
                            let head = checkpoint::read_head(&file).map_err(|e| TestCaseError::fail(e.to_string()))?;
                            let head = head.map_err(TestCaseError::fail)?;
                            let loaded = checkpoint::load(&file, &head).map_err(|e| TestCaseError::fail(e.to_string()))?;
                            ix = loaded.map_err(TestCaseError::fail)?;
                        }
                        Step::Scan(p, s, e, limit, reverse) => {
                            let r = KeyRange { prefix: p.map(key_of), start: s.map(key_of), end: e.map(key_of), limit, reverse };
                            prop_assert_eq!(ix.scan(&r), model_scan(&model, &r));
                        }
                    }
                    prop_assert_eq!(ix.len(), model.len());
                    let listed: Vec<(Vec<u8>, Entry)> = ix.iter().map(|(k, e)| (k.to_vec(), e.into_owned())).collect();
                    let expected: Vec<(Vec<u8>, Entry)> = model.iter().map(|(k, e)| (k.clone(), e.clone())).collect();
                    prop_assert_eq!(listed, expected);
                    let mut totals = Totals::default();
                    for e in model.values() {
                        totals.account(e, true);
                    }
                    prop_assert_eq!(&ix.totals, &totals);
                    for k in 0..12 {
                        let got = ix.get(&key_of(k)).map(Cow::into_owned);
                        prop_assert_eq!(got.as_ref(), model.get(&key_of(k)));
                        prop_assert_eq!(ix.contains(&key_of(k)), model.contains_key(&key_of(k)));
                    }
                }
            }
        }
    }
}
