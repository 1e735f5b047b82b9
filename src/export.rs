//! Export: a consistent snapshot of a store written as one valid walnut log (docs/FORMAT.md,
//! section 12), compacted: a file header, every table's state, then every live value (keys,
//! queue entries and change-feed entries, under their internal keys, so sequence numbers are
//! kept) as a transaction of its own, and the remembered commit ids. A `.walnut` file is so
//! both the backup format and something `Store::open` reads (as a single-file store), and
//! importing one is checking it and installing it as a store's first segment.
//!
//! The snapshot is taken at [`Export::begin`]: the index's entries are listed and their chunks
//! pinned (compaction leaves them), so the store keeps serving reads and writes while the
//! export is produced piece by piece, in memory of one chunk (plus the list of entries).

use crc32fast::Hasher;

use crate::error::{Error, Result};
use crate::format::{
    record_key, CommitPayload, FileHeader, Kind, RecordHeader, TableRecord, FILE_HEADER_LEN, IMPORT_MAGIC, MAGIC,
    MAX_SEGMENT_LEN, RECORD_HEADER_LEN, TABLE_OP_DROP,
};
use crate::index::Entry;
use crate::storage::overlay::Overlay;
use crate::storage::{FileId, Storage, Volume};
use crate::store::Store;
use crate::wal::log::key_flags;

/// An export under way (see the module documentation).
#[derive(Debug)]
pub struct Export {
    entries: Vec<(Vec<u8>, Entry)>,
    tables: Vec<TableRecord>,
    ids: Vec<Vec<u8>>,
    /// What comes next: the header, then tables, entries, ids, by index.
    step: Step,
    lsn: u64,
    txn: u64,
    offset: u64,
    /// Bytes produced so far.
    written: u64,
    done: bool,
    /// The value being written, record by record.
    value: Option<Value>,
}

/// A value's transaction under way in an export.
#[derive(Debug)]
struct Value {
    txn: u64,
    /// Location of its last record.
    prev: u64,
    /// Its next chunk.
    chunk: usize,
    commit: CommitPayload,
    crc: Hasher,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Header,
    Tables(usize),
    Entries(usize),
    Ids(usize),
    Mark,
    End,
}

/// The commit id of the empty transaction that ends every export: `walnut-export/1/<values>`,
/// the number of live values it holds. An import requires it, so an export cut at a record
/// boundary (which reads as a valid, shorter log) is refused.
pub fn end_mark(values: usize) -> String {
    format!("{END_MARK_PREFIX}1/{values}")
}

/// The prefix of export end marks; commit ids may not start with it.
pub const END_MARK_PREFIX: &str = "walnut-export/";

impl Export {
    /// Takes the snapshot: settles queued commits, lists every live entry, every table (and
    /// the drop of the highest id ever given, so ids are never reused after an import) and
    /// every remembered commit id, and pins the entries' chunks.
    pub fn begin<V: Volume>(store: &mut Store<V>) -> Result<Export> {
        store.settle()?;
        let mut entries: Vec<(Vec<u8>, Entry)> =
            store.index.iter().map(|(k, e)| (k.to_vec(), e.into_owned())).collect();
        // Each table's change feed before its keys: a feed entry of a delete is applied while
        // its key is absent, so it keeps the string-key flag its record states (applied after
        // the key, it would take the key's current one).
        entries.sort_by_key(|(k, _)| {
            let (table, ns, _) = crate::format::split_ikey(k);
            (table, ns != crate::format::NS_FEED)
        });
        for (_, e) in &entries {
            store.pin(&e.chunks);
        }
        // Every table's state, the default table's too (its sequence numbers go on).
        let tables = store.index.tables().statement(true);
        // (Not the end marks of exports this store was imported from.)
        let ids = store
            .index
            .ids()
            .iter()
            .filter(|(id, _)| !id.starts_with(END_MARK_PREFIX.as_bytes()))
            .map(|(id, _)| id.to_vec())
            .collect();
        Ok(Export {
            entries,
            tables,
            ids,
            step: Step::Header,
            lsn: 1,
            txn: 1,
            offset: 0,
            written: 0,
            done: false,
            value: None,
        })
    }

    /// Live values in the snapshot, and how many have been written.
    pub fn progress(&self) -> (usize, usize) {
        let at = match self.step {
            Step::Header | Step::Tables(_) => 0,
            Step::Entries(i) => i,
            Step::Ids(_) | Step::Mark | Step::End => self.entries.len(),
        };
        (at, self.entries.len())
    }

    /// Bytes produced so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The next piece of the file (the header or one record: at most one chunk of a value),
    /// or `None` at the end. Errors: reading a value failed (a damaged record): the export is not valid.
    pub fn next<V: Volume>(&mut self, store: &Store<V>) -> Result<Option<Vec<u8>>> {
        let mut out = Vec::new();
        match self.step {
            Step::Header => {
                out.extend_from_slice(&FileHeader { base_lsn: 1, segment: 0 }.encode());
                self.offset = FILE_HEADER_LEN as u64;
                self.step = Step::Tables(0);
            }
            Step::Tables(i) => match self.tables.get(i).map(TableRecord::encode) {
                Some(t) => {
                    let txn = self.fresh_txn();
                    self.record(&mut out, Kind::Table, 0, txn, 0, &[&t]);
                    self.step = Step::Tables(i + 1);
                }
                None => self.step = Step::Entries(0),
            },
            Step::Entries(i) => {
                let Some((key, entry)) = self.entries.get(i) else {
                    self.step = Step::Ids(0);
                    return self.next(store);
                };
                let (key, string_key, chunks) = (key.clone(), entry.string_key, entry.chunks.len());
                // One piece per record of the value: memory holds one chunk at a time.
                match self.value.take() {
                    None => {
                        let txn = self.fresh_txn();
                        let begin = self.record(&mut out, Kind::Begin, 0, txn, 0, &[]);
                        let prev = self.record(
                            &mut out,
                            Kind::Put,
                            key_flags(string_key) | record_key(&key),
                            txn,
                            begin,
                            &[&key],
                        );
                        let c = CommitPayload { records: 1, ..CommitPayload::default() };
                        self.value = Some(Value { txn, prev, chunk: 0, commit: c, crc: Hasher::new() });
                    }
                    Some(mut v) if v.chunk < chunks => {
                        let mut buf = Vec::new();
                        if let Some(loc) = self.entries.get(i).and_then(|(_, e)| e.chunks.get(v.chunk)) {
                            store.read_chunk(loc, &mut buf)?;
                        }
                        v.prev = self.record(&mut out, Kind::Chunk, 0, v.txn, v.prev, &[&buf]);
                        v.crc.update(&buf);
                        v.commit.records += 1;
                        v.commit.chunks += 1;
                        v.commit.value_bytes += buf.len() as u64;
                        v.chunk += 1;
                        self.value = Some(v);
                    }
                    Some(v) => {
                        let c = CommitPayload { value_crc: v.crc.finalize(), ..v.commit };
                        self.record(&mut out, Kind::Commit, 0, v.txn, v.prev, &[&c.encode()]);
                        self.step = Step::Entries(i + 1);
                    }
                }
            }
            Step::Ids(i) => match self.ids.get(i) {
                Some(id) => {
                    // An empty transaction under the id: recovery remembers it.
                    let id = id.clone();
                    let txn = self.fresh_txn();
                    let begin = self.record(&mut out, Kind::Begin, 0, txn, 0, &[]);
                    let payload = CommitPayload::default().encode_with_id(Some(&id));
                    self.record(&mut out, Kind::Commit, 0, txn, begin, &[&payload]);
                    self.step = Step::Ids(i + 1);
                }
                None => self.step = Step::Mark,
            },
            Step::Mark => {
                let id = end_mark(self.entries.len());
                let txn = self.fresh_txn();
                let begin = self.record(&mut out, Kind::Begin, 0, txn, 0, &[]);
                let payload = CommitPayload::default().encode_with_id(Some(id.as_bytes()));
                self.record(&mut out, Kind::Commit, 0, txn, begin, &[&payload]);
                self.step = Step::End;
            }
            Step::End => {
                self.done = true;
                return Ok(None);
            }
        }
        self.written += out.len() as u64;
        Ok(Some(out))
    }

    /// Releases the snapshot's pins (call once done, or when giving up).
    pub fn finish<V: Volume>(self, store: &mut Store<V>) {
        for (_, e) in &self.entries {
            store.unpin(&e.chunks);
        }
    }

    fn fresh_txn(&mut self) -> u64 {
        let t = self.txn;
        self.txn += 1;
        t
    }

    /// Appends one record to `out`; returns its location (its offset: segment 0).
    fn record(&mut self, out: &mut Vec<u8>, kind: Kind, flags: u8, txn: u64, prev: u64, payload: &[&[u8]]) -> u64 {
        let at = self.offset;
        let (h, _) = RecordHeader::encode(kind, flags, self.lsn, txn, prev, payload);
        out.extend_from_slice(&h);
        payload.iter().for_each(|p| out.extend_from_slice(p));
        self.lsn += 1;
        self.offset += (RECORD_HEADER_LEN + payload.iter().map(|p| p.len()).sum::<usize>()) as u64;
        at
    }
}

/// An import into an open, empty store, in steps (`db.import()` on every runtime). The file is
/// written into a new file of the store's volume as it arrives, with [`IMPORT_MAGIC`] in place
/// of its magic: the staged file is so an import not installed, which recovery releases in
/// every mode (a power cut or a closed tab leaves the store as it was). Its first 32 bytes (the
/// file header) are written, and flushed, once they are all in hand and before anything else,
/// so a cut leaves either too little to be a file or a whole staged header.
/// [`Import::finish`] checks the whole file ([`verify_export`], on a copy-on-write view with
/// the real magic) and only then installs it ([`Store`]'s `install_import`: each step of the
/// switch recovers to the empty store or to the import, never a mix; the last writes the
/// magic). One import at a time per store; the store remembers it, so an `Import` is refused
/// by any other store, or by the same store once reopened or after another import finished.
/// Memory: the header and what one `write` is given. (docs/FORMAT.md, section 12.)
#[derive(Debug)]
pub struct Import {
    file: FileId,
    /// The file's first bytes, until the header is whole.
    header: Vec<u8>,
    written: u64,
}

/// What an import installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    /// Live entries (keys, queue and change-feed entries) the store now holds.
    pub values: u64,
    /// Bytes of the file imported.
    pub bytes: u64,
}

impl Import {
    /// Starts an import into `store`, which must be empty (no entry and no named table; commit
    /// ids it remembers are replaced by the export's) with nothing under way.
    ///
    /// Errors: [`Error::InvalidArgument`] (parameter `store`) if it is not empty or an import is
    /// under way in it; [`Error::Unsupported`] on a single-file store (import into a store
    /// directory); [`Error::Io`] (op `"import"`) if the volume has no free file at once (an OPFS
    /// pool refilling: try again); [`Error::Closed`].
    pub fn begin<V: Volume>(store: &mut Store<V>) -> Result<Import> {
        store.live()?;
        if store.importing.is_some() {
            return Err(Error::invalid("store", "an import is under way in this store"));
        }
        if let Some(why) = store.import_refusal() {
            return Err(Error::invalid("store", why));
        }
        let volume = store.log.writer_mut().volume_mut();
        if !volume.can_grow() {
            return Err(Error::Unsupported { detail: "a single-file store cannot take an import".into() });
        }
        if !volume.has_free() {
            return Err(Error::io("import", "no file is free for the import yet (the OPFS pool refills); try again"));
        }
        let file = volume.create()?;
        store.importing = Some(file);
        Ok(Import { file, header: Vec::with_capacity(FILE_HEADER_LEN), written: 0 })
    }

    /// Bytes received so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Fails unless this import is the one under way in `store`.
    fn check<V: Volume>(&self, store: &Store<V>) -> Result<()> {
        store.live()?;
        if store.importing != Some(self.file) {
            return Err(Error::invalid(
                "import",
                "this import is not under way in this store (another store, or reopened)",
            ));
        }
        Ok(())
    }

    /// Writes the file's next `bytes` (any length) into the staged file.
    ///
    /// Errors: [`Error::InvalidArgument`] (parameter `source`) past [`MAX_SEGMENT_LEN`] bytes,
    /// (parameter `import`) if this import is not the one under way in `store`; storage errors
    /// ([`Error::QuotaExceeded`] at quota). After an error, [`Import::cancel`].
    pub fn write<V: Volume>(&mut self, store: &mut Store<V>, bytes: &[u8]) -> Result<()> {
        self.check(store)?;
        let end = self.written.saturating_add(bytes.len() as u64);
        if end > MAX_SEGMENT_LEN {
            return Err(Error::invalid("source", format!("an export is at most {MAX_SEGMENT_LEN} bytes")));
        }
        let mut rest = bytes;
        let mut at = self.written;
        if self.header.len() < FILE_HEADER_LEN {
            let take = (FILE_HEADER_LEN - self.header.len()).min(rest.len());
            let (head, tail) = rest.split_at(take);
            self.header.extend_from_slice(head);
            rest = tail;
            at += take as u64;
            if self.header.len() == FILE_HEADER_LEN {
                let mut staged = self.header.clone();
                if let Some(m) = staged.get_mut(..8) {
                    m.copy_from_slice(&IMPORT_MAGIC);
                }
                let f = store.log.writer_mut().volume_mut().file_mut(self.file)?;
                crate::storage::write_all_at(f, &staged, 0)?;
                f.flush()?;
            }
        }
        if !rest.is_empty() {
            let f = store.log.writer_mut().volume_mut().file_mut(self.file)?;
            crate::storage::write_all_at(f, rest, at)?;
        }
        self.written = end;
        Ok(())
    }

    /// Checks the whole file and installs it (see the type's documentation). The store then
    /// holds the export's tables, values, sequence numbers and commit ids.
    ///
    /// Errors: [`Error::Corruption`] naming the byte offset where the file is cut or damaged
    /// (or what is missing), [`Error::InvalidArgument`] (parameter `store`) if the store was
    /// written meanwhile, (parameter `import`) if this import is not the one under way in
    /// `store`; storage errors. The import is then given up. A failure before the switch leaves
    /// the store as it was; one during it leaves the store empty and new (its default table's
    /// numbers and the commit ids it remembered gone), or closed if it could not even be
    /// reloaded (the next open recovers the empty store).
    pub fn finish<V: Volume>(self, store: &mut Store<V>) -> Result<Imported> {
        self.check(store)?;
        let next_table = store.index.tables().next_id();
        let checked = (|| {
            if self.header.len() < FILE_HEADER_LEN {
                return Err(Error::Corruption { at: 0, detail: "the export is shorter than its header".into() });
            }
            if self.header.get(..8) != Some(&MAGIC[..]) {
                return Err(Error::Corruption { at: 0, detail: "not a walnut export (bad magic)".into() });
            }
            let f = store.log.writer_mut().volume_mut().file_mut(self.file)?;
            f.flush()?;
            let mut view = Overlay::new(&*f, self.written);
            view.write_at(&MAGIC, 0)?;
            let mut verified = verify_export(view)?;
            let values = verified.stats().keys;
            let statement = table_id_statement(&mut verified, next_table, self.written)?;
            drop(verified);
            if !statement.is_empty() {
                crate::storage::write_all_at(f, &statement, self.written)?;
                f.flush()?;
            }
            Ok(values)
        })();
        let values = match checked {
            Ok(v) => v,
            Err(e) => {
                self.cancel(store);
                return Err(e);
            }
        };
        match store.install_import(self.file) {
            Ok(()) => Ok(Imported { values, bytes: self.written }),
            Err(e) => {
                // Not installed: the store gave the staged file back, or left it for the cancel.
                if store.importing == Some(self.file) {
                    self.cancel(store);
                }
                Err(e)
            }
        }
    }

    /// Gives the import up: the staged file goes back to the volume, emptied. Best effort (a
    /// failure leaves it to the next recovery, which releases it). Nothing if this import is
    /// not the one under way in `store`.
    pub fn cancel<V: Volume>(self, store: &mut Store<V>) {
        if store.importing == Some(self.file) {
            store.importing = None;
            let _ = store.log.writer_mut().volume_mut().release(self.file);
        }
    }
}

/// The record that keeps table ids the store gave before an import from being given again:
/// a TABLE DROP of `next_table - 1` (the store's highest id) when the export's next id is
/// below `next_table`, as the bytes to append to the staged file at `end` (its length); empty
/// when none is needed. Written through `verified` (the store opened on the checked view of
/// the staged file), so its LSN and transaction id follow the export's last ones. The staged
/// file takes it, flushed, before the switch writes its magic: the import and the id are
/// installed together or not at all (docs/FORMAT.md, section 12).
///
/// Errors: storage errors of the view.
fn table_id_statement<S: Storage>(verified: &mut Store<S>, next_table: u32, end: u64) -> Result<Vec<u8>> {
    if verified.index.tables().next_id() >= next_table {
        return Ok(Vec::new());
    }
    let rec = TableRecord { op: TABLE_OP_DROP, table: next_table - 1, ..TableRecord::default() };
    verified.log.table(rec, crate::wal::log::Durability::Strict, &mut verified.index)?;
    let size = verified.volume().size()?;
    let mut out = vec![0; usize::try_from(size.saturating_sub(end)).unwrap_or(0)];
    if !crate::storage::read_exact_at(verified.volume(), &mut out, end)? {
        return Err(Error::io("import", "the staged file's view is shorter than its size"));
    }
    Ok(out)
}

/// The highest next LSN or transaction id an export may have (half of [`crate::format::MAX_ID`]).
const IMPORT_ID_LIMIT: u64 = 1 << 61;

/// Checks that `file` is a whole export: recovery keeps every record (no torn or damaged tail,
/// no broken or incomplete transaction), every value reads back with its CRC, and the end mark
/// is there with the number of values the file holds. Returns the store it opens (a single-file
/// store over `file`, which recovery may have written to: pass a copy-on-write view).
///
/// Errors: [`Error::Corruption`] naming the location (segment 0, byte offset) where the file is
/// cut or damaged, or what is missing.
pub fn verify_export<S: crate::storage::Storage>(file: S) -> Result<Store<S>> {
    let store = Store::open(file, crate::store::Options::default())?;
    check_import(&store)?;
    Ok(store)
}

/// [`verify_export`]'s checks on a store already opened on an export (a store directory whose
/// only segment is the export file, as the hosts' imports make): recovery kept every record,
/// every value reads back, and the end mark is there.
///
/// Errors: [`Error::Corruption`] naming the location where the file is cut or damaged, or what
/// is missing.
pub fn check_import<V: Volume>(store: &Store<V>) -> Result<()> {
    let r = store.recovery();
    // No store gets near the id limit (2^62; at a million records a second, 146,000 years):
    // an export that does was made up, and the store importing it could write little before
    // its ids ran out.
    let (next_lsn, next_txn) = (store.stats().next_lsn, store.log.next_txn());
    if next_lsn > IMPORT_ID_LIMIT || next_txn > IMPORT_ID_LIMIT {
        return Err(Error::Corruption {
            at: r.log_bytes,
            detail: format!(
                "the export's LSNs or transaction ids reach {} (above 2^61): not an export a store wrote",
                next_lsn.max(next_txn)
            ),
        });
    }
    if r.bytes_truncated > 0 {
        let at = r.truncated_at.unwrap_or(0);
        return Err(Error::Corruption {
            at,
            detail: format!(
                "the export is cut or damaged here ({} bytes after it unreadable: {})",
                r.bytes_truncated,
                r.tail_reason.as_deref().unwrap_or("invalid record")
            ),
        });
    }
    if let Some(d) = r.discarded.first() {
        return Err(Error::Corruption {
            at: 0,
            detail: format!("transaction {} (LSN {}) of the export: {}", d.txn, d.lsn, d.reason),
        });
    }
    let check = store.check_values(1)?;
    if let Some((_, e)) = check.failures.first() {
        return Err(e.clone());
    }
    let mark = end_mark(usize::try_from(check.values).unwrap_or(usize::MAX));
    // Ids with the end marks' prefix are reserved (the retention never forgets them): an
    // export carries its own mark and no other.
    if let Some((id, lsn)) =
        store.index.ids().iter().find(|(id, _)| id.starts_with(END_MARK_PREFIX.as_bytes()) && *id != mark.as_bytes())
    {
        return Err(Error::Corruption {
            at: r.log_bytes,
            detail: format!(
                "the export carries commit id {:?} (LSN {lsn}), reserved for end marks",
                String::from_utf8_lossy(id)
            ),
        });
    }
    if store.id_status(mark.as_bytes()).is_none() {
        return Err(Error::Corruption {
            at: r.log_bytes,
            detail: format!("the export ends early: no end mark for its {} values (a file cut short?)", check.values),
        });
    }
    Ok(())
}
