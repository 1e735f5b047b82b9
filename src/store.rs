//! The key-value store: the public face of the log ([`crate::wal::log`]), the index
//! ([`crate::index`]) and the log's lifecycle ([`crate::lifecycle`]).
//!
//! A value is visible only once its COMMIT is written and, for strict durability, flushed.
//! Several transactions may be open at once; their records interleave in the log, so a
//! 1 GiB upload never blocks a 100-byte put. Only the committer (inside the log) makes
//! commits durable: every path that needs bytes on storage asks it, and a commit's outcome is
//! kept under its [`Ticket`] whoever asked for the flush that settled it.

use crate::error::{Error, Result};
use crate::format::{
    feed_key, ikey, loc_offset, loc_segment, queue_key, split_feed, table_prefix, TableRecord, FEED_DELETE,
    MAX_CHUNK_LEN, MAX_ESCAPED_KEY_LEN, MAX_KEY_LEN, MAX_SEGMENT_LEN, MAX_TABLE_KEY_LEN, MAX_TABLE_NAME_LEN, NS_FEED,
    NS_KEYS, NS_QUEUE, TABLE_OP_DROP, TABLE_PREFIX_LEN, TABLE_TAG,
};
use crate::format::{FILE_HEADER_LEN, MAGIC, MAX_COMMIT_ID_LEN};
use crate::index::{ChunkLoc, Entry, Index, KeyInfo, KeyRange, TableMeta, DEFAULT_ID_RETENTION};
use crate::lifecycle::{dead_ratio, CompactStep, Lifecycle, Settings};
use crate::storage::{FileId, Storage, Volume};
use crate::wal::log::Log;
pub use crate::wal::log::{Durability, Outcome, Ticket, TxnId};
use crate::wal::recovery::{recover, Recovered, RecoveryMode, RecoveryReport};
use crate::wal::writer::{Writer, WriterInit};

/// Store configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Largest CHUNK payload, bytes; large values are split into chunks of this size.
    /// Default 1 MiB (UnisonDB's default); 1..=64 MiB.
    pub chunk_size: usize,
    /// Records of at least this many bytes bypass the batch buffer and are written straight to
    /// storage (FlintDB's `FLINTDB_WAL_DIRECT_WRITE_THRESHOLD`). Default 64 KiB.
    pub direct_write_threshold: usize,
    /// The batch buffer is written out when it holds this many bytes. Default 1 MiB.
    pub batch_bytes: usize,
    /// What recovery does with an invalid record.
    pub recovery_mode: RecoveryMode,
    /// A segment is sealed and the next begun when a record would carry it past this size,
    /// bytes. Default 64 MiB. Ignored on a single-file store.
    pub segment_size: u64,
    /// A checkpoint is written at the first sync after this many bytes of log since the last
    /// one (and at close), bytes. Default 64 MiB. 0 disables automatic checkpoints.
    pub checkpoint_bytes: u64,
    /// Compaction starts by itself when dead bytes make up at least this fraction of the log
    /// (0.0..=1.0; default 0.5) and the log spans more than two segments. Each commit then
    /// copies at most one chunk, so no put waits for more than one chunk write.
    pub compaction_ratio: f64,
    /// Commit ids remembered (the retention window of [`Store::commit_with_id`]): a commit
    /// whose id is among the newest this many is not made again. Default 10,000; at most
    /// 1,000,000. Each costs its id's bytes and about 80 bytes of memory.
    pub id_retention: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            chunk_size: 1 << 20,
            direct_write_threshold: 64 << 10,
            batch_bytes: 1 << 20,
            recovery_mode: RecoveryMode::default(),
            segment_size: 64 << 20,
            checkpoint_bytes: 64 << 20,
            compaction_ratio: 0.5,
            id_retention: DEFAULT_ID_RETENTION,
        }
    }
}

impl Options {
    /// Checks the ranges; errors name the field.
    pub fn validate(&self) -> Result<()> {
        if self.chunk_size == 0 || self.chunk_size > MAX_CHUNK_LEN {
            return Err(Error::invalid(
                "chunkSize",
                format!("must be 1..={MAX_CHUNK_LEN} bytes, got {}", self.chunk_size),
            ));
        }
        if self.direct_write_threshold == 0 {
            return Err(Error::invalid("directWriteThreshold", "must be at least 1 byte"));
        }
        if self.batch_bytes == 0 || self.batch_bytes > MAX_CHUNK_LEN {
            return Err(Error::invalid("batchBytes", format!("must be 1..={MAX_CHUNK_LEN} bytes")));
        }
        if self.segment_size < 4096 || self.segment_size > MAX_SEGMENT_LEN / 2 {
            return Err(Error::invalid("segmentSize", format!("must be 4096..={} bytes", MAX_SEGMENT_LEN / 2)));
        }
        if !(0.0..=1.0).contains(&self.compaction_ratio) {
            return Err(Error::invalid("compactionRatio", "must be between 0 and 1"));
        }
        if self.id_retention > MAX_ID_RETENTION {
            return Err(Error::invalid("idRetention", format!("must be at most {MAX_ID_RETENTION} ids")));
        }
        Ok(())
    }
}

/// Counters for `stats()`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Stats {
    /// Live index entries: the keys of every table, their queue entries and change feed entries.
    pub keys: u64,
    /// Sum of live value lengths, bytes.
    pub live_bytes: u64,
    /// Log size including buffered records, bytes.
    pub log_bytes: u64,
    /// LSN the next record will get.
    pub next_lsn: u64,
    /// Transactions begun and not yet committed or aborted.
    pub open_transactions: u64,
    /// Group commits waiting for [`Store::sync`].
    pub pending_commits: u64,
    /// Flushes of the log since open: each makes every commit written before it durable, so
    /// strict writes committed together (group commit) share one.
    pub flushes: u64,
    /// Whether an I/O error has stopped writes until reopen.
    pub poisoned: bool,
    /// Times the log was rolled back to its written prefix after a quota failure (the
    /// commits it carried failed; writes went on without a reopen).
    pub recoveries_in_place: u64,
    /// Log segments.
    pub segments: u64,
    /// Fraction of the log's bytes that no live value uses (0.0..=1.0).
    pub dead_ratio: f64,
    /// LSN where replay would start from the last checkpoint (0: none yet).
    pub last_checkpoint_lsn: u64,
    /// Checkpoints written since open.
    pub checkpoints: u64,
    /// Compaction rounds finished since open.
    pub compactions: u64,
    /// Values compaction moved (copied and committed) since open: each move gives the value a
    /// new version, so a transaction or conditional write that read the old one conflicts.
    pub values_moved: u64,
}

/// What [`Store::check_values`] read.
#[derive(Debug, Default)]
pub struct ValueCheck {
    /// Live values read (keys, queue entries, change-feed entries).
    pub values: u64,
    /// Value bytes read.
    pub bytes: u64,
    /// Values that could not be read.
    pub failed: u64,
    /// The first of them: internal key and error.
    pub failures: Vec<(Vec<u8>, Error)>,
}

/// Largest [`Options::id_retention`].
pub const MAX_ID_RETENTION: usize = 1_000_000;

/// A durable, ordered key-value store on a [`Volume`] of files, or on one
/// [`crate::Storage`] (a one-file volume: a single segment, no checkpoints).
pub struct Store<V: Volume> {
    pub(crate) log: Log<V>,
    pub(crate) index: Index,
    life: Lifecycle,
    pub(crate) options: Options,
    report: RecoveryReport,
    closed: bool,
    /// What the closing checkpoint did (see [`Store::closing_checkpoint`]).
    close_checkpoint: Option<Result<()>>,
    /// The ticket whose outcome decides the last write call (see [`Store::last_ticket`]).
    last_ticket: Ticket,
    /// The LSN of the last commit made (see [`Store::last_lsn`]).
    last_lsn: u64,
    /// Interactive transactions under way, by their log transaction id (see `txn.rs`).
    pub(crate) txs: std::collections::HashMap<TxnId, crate::txn::Tx>,
    /// The staged file of the import under way ([`crate::export::Import`]), if any.
    pub(crate) importing: Option<FileId>,
}

impl<V: Volume> Store<V> {
    /// Opens the store on `volume`, running recovery (see [`crate::wal::recovery`]); the
    /// report is then available from [`Store::recovery`].
    ///
    /// Errors: [`Error::InvalidArgument`] for bad options; [`Error::Corruption`] or
    /// [`Error::ChecksumMismatch`] if the file is not a walnut log of this version (it is then
    /// left untouched); [`Error::Io`] from storage.
    pub fn open(mut volume: V, options: Options) -> Result<Self> {
        options.validate()?;
        let mut r = recover(&mut volume, options.recovery_mode)?;
        let (init, next_txn) = Self::writer_init(&volume, &options, &mut r);
        let mut writer = Writer::new(volume, init);
        // What recovery exposes is durable from here on: a previous holder (a closed tab, a
        // killed process) may have written records it never flushed, and whoever answers for
        // them now (a new leader: "already committed") must not lose them to a power cut.
        writer.flush_tail()?;
        let mut store = Store {
            log: Log::new(writer, next_txn),
            index: Index::default(),
            life: Lifecycle::new(Vec::new(), 0, 0),
            options,
            report: RecoveryReport::default(),
            closed: false,
            close_checkpoint: None,
            last_ticket: Ticket(0),
            last_lsn: 0,
            txs: std::collections::HashMap::new(),
            importing: None,
        };
        store.take_recovered(r);
        Ok(store)
    }

    /// Where the writer starts after recovery `r` on `volume`, and the next transaction id.
    fn writer_init(volume: &V, options: &Options, r: &mut Recovered) -> (WriterInit, TxnId) {
        let segment_size = if volume.can_grow() { options.segment_size } else { u64::MAX };
        let init = WriterInit {
            segments: std::mem::take(&mut r.segments),
            tail_seg: loc_segment(r.tail),
            tail: loc_offset(r.tail),
            next_lsn: r.next_lsn,
            segment_size,
            batch_bytes: options.batch_bytes,
            direct_threshold: options.direct_write_threshold,
        };
        (init, r.next_txn)
    }

    /// Takes what recovery found as this store's state (the writer already placed).
    fn take_recovered(&mut self, r: Recovered) {
        let last_checkpoint_lsn = r.report.checkpoint.map_or(0, |c| c.1);
        self.index = r.index;
        self.index.ids_mut().set_retention(self.options.id_retention);
        self.log.set_chains(r.chains, r.unknown_chains);
        self.life = Lifecycle::new(r.checkpoint_slots, r.checkpoint_seq, last_checkpoint_lsn);
        self.report = r.report;
        self.last_lsn = 0;
        self.txs.clear();
        self.importing = None;
    }

    /// Runs recovery again on this store's volume, as a new open would, and carries on from what
    /// it finds (an import has just installed its file: [`crate::export::Import`]). Only for a
    /// store with nothing queued and no transaction open. On failure the store is closed.
    ///
    /// Errors: as [`Store::open`].
    pub(crate) fn reload(&mut self) -> Result<()> {
        let mut r = match recover(self.log.writer_mut().volume_mut(), self.options.recovery_mode) {
            Ok(r) => r,
            Err(e) => {
                self.closed = true;
                return Err(e);
            }
        };
        let (init, next_txn) = Self::writer_init(self.log.writer().volume(), &self.options, &mut r);
        self.log.reset(init, next_txn);
        if let Err(e) = self.log.writer_mut().flush_tail() {
            self.closed = true;
            return Err(e);
        }
        self.take_recovered(r);
        Ok(())
    }

    /// Why this store cannot take an import, if it cannot: it must hold no entry (key, queue
    /// or change-feed entry) and no named table, and have no transaction open, no commit
    /// queued and nothing pinned (an export, a reader).
    pub(crate) fn import_refusal(&self) -> Option<String> {
        if self.index.iter().next().is_some() {
            return Some("the store holds values: import into an empty store".into());
        }
        if self.index.tables().iter().any(|m| m.id != 0) {
            return Some("the store has tables: import into an empty store".into());
        }
        if !self.txs.is_empty() || self.log.oldest_open().is_some() {
            return Some("a transaction or a write is under way in the store".into());
        }
        if self.life.pinned() {
            return Some("an export or a read is under way in the store".into());
        }
        None
    }

    /// Replaces the files of this empty store by the import staged in volume file `file`
    /// (an export whose magic is [`crate::format::IMPORT_MAGIC`]), then reloads (see
    /// [`Store::reload`]).
    ///
    /// Every state a power cut can leave recovers to this empty store or to the import, never
    /// to a mix and never to an older state (each step below keeps that true):
    /// 1. If the log holds records (an emptied store): seal the tail segment, then checkpoint
    ///    twice, so both checkpoint slots need only the new, header-only tail segment and every
    ///    other segment is released (recovery: the empty index, then nothing to replay).
    /// 2. Release every file the log no longer knows (one whose release failed earlier;
    ///    recovery: the checkpoints still in force), then the checkpoint files (recovery: a full
    ///    scan of a header-only segment), then the last segment (recovery: no file at all, a
    ///    new store). The staged file is then the volume's only file.
    /// 3. Write [`crate::format::MAGIC`] over the staged file's magic and flush: it is now
    ///    segment 0 (a write of it cut short is still an import not installed).
    ///
    /// Errors: [`Error::InvalidArgument`] (parameter `store`) if the store is not empty
    /// ([`Store::import_refusal`]); [`Error::Io`] (op `"import"`) if no file is free for step 1
    /// (an OPFS pool refilling: try again); storage errors. A failure in step 1 leaves the store
    /// as it was, the staged file the caller's; a later one gives the staged file back and
    /// reloads what the files then hold (the empty store; closed if even that fails).
    pub(crate) fn install_import(&mut self, file: FileId) -> Result<()> {
        self.live()?;
        // A quota failure rolled back earlier (an earlier import's seal, say) is cleared here,
        // as a write would clear it.
        self.log.writable()?;
        self.settle()?;
        if let Some(why) = self.import_refusal() {
            return Err(Error::invalid("store", why));
        }
        let w = self.log.writer();
        if w.segments().len() > 1 || w.segment_len(w.tail_segment()) > FILE_HEADER_LEN as u64 {
            // A rotation without a free file would poison the writer: refuse first.
            if !w.volume().has_free() {
                return Err(Error::io(
                    "import",
                    "no file is free to seal the log yet (the OPFS pool refills); try again",
                ));
            }
            self.log.writer_mut().rotate_if_used()?;
            self.life.checkpoint_emptied(&mut self.log, &mut self.index)?;
            self.life.checkpoint_emptied(&mut self.log, &mut self.index)?;
        }
        let w = self.log.writer();
        if w.segments().len() != 1 || w.segment_len(w.tail_segment()) > FILE_HEADER_LEN as u64 {
            return Err(Error::io("import", "the store's log could not be emptied (a segment is still needed)"));
        }
        let steps = |s: &mut Self| -> Result<()> {
            // Files the log no longer knows (a release that failed) go first, while both
            // checkpoints still say the header-only tail is all there is: once the checkpoint
            // files are gone, a full scan would read such a file, and once the magic is
            // written, it would lie beside the import's segment 0.
            let slots = s.life.slot_files();
            let tail: Vec<FileId> = s.log.writer().segments().values().copied().collect();
            let volume = s.log.writer_mut().volume_mut();
            for id in volume.ids() {
                if id != file && !slots.contains(&id) && !tail.contains(&id) {
                    volume.release(id)?;
                }
            }
            for id in s.life.take_slot_files() {
                s.log.writer_mut().volume_mut().release(id)?;
            }
            for id in tail {
                s.log.writer_mut().volume_mut().release(id)?;
            }
            let f = s.log.writer_mut().volume_mut().file_mut(file)?;
            crate::storage::write_all_at(f, &MAGIC, 0)?;
            f.flush()
        };
        let r = steps(self);
        if r.is_err() {
            // Not installed (or not known to be): the staged file goes, so what reloads is the
            // empty store, in every recovery mode.
            let _ = self.log.writer_mut().volume_mut().release(file);
        }
        self.importing = None;
        let reloaded = self.reload();
        r.and(reloaded)
    }

    /// What recovery found when this store was opened.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.report
    }

    /// The options in force.
    pub fn options(&self) -> &Options {
        &self.options
    }

    fn settings(&self) -> Settings {
        Settings {
            chunk_size: self.options.chunk_size,
            checkpoint_bytes: self.options.checkpoint_bytes,
            compaction_ratio: self.options.compaction_ratio,
        }
    }

    pub(crate) fn live(&self) -> Result<()> {
        if self.closed {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// After a commit: due maintenance (a compaction step, a checkpoint) takes its turn.
    /// Its failures are its own: a flush it asked for settles the commits it carried, under
    /// their tickets.
    pub(crate) fn maintain(&mut self) {
        let settings = self.settings();
        self.life.maintain(&mut self.log, &mut self.index, &settings);
    }

    // ----- transactions -----

    /// Begins a transaction (writes BEGIN) and returns its id.
    pub fn begin(&mut self) -> Result<TxnId> {
        self.live()?;
        self.log.begin()
    }

    /// Starts a value for `key` in `txn`; the following [`Store::txn_chunk`] calls fill it.
    /// `string_key` only records how `keys()` should hand the key back.
    ///
    /// Errors: [`Error::Transaction`] if `txn` is not open; the quota error that dropped it, if
    /// a rollback after a quota failure did.
    pub fn txn_put(&mut self, txn: TxnId, key: &[u8], string_key: bool) -> Result<()> {
        self.txn_put_in(txn, 0, key, string_key)
    }

    /// [`Store::txn_put`] into table `table` (0: the default table).
    ///
    /// Errors: [`Error::InvalidArgument`] (param `table`) if there is no such table; as
    /// [`Store::txn_put`].
    pub fn txn_put_in(&mut self, txn: TxnId, table: u32, key: &[u8], string_key: bool) -> Result<()> {
        self.live()?;
        let key = self.ik(table, key)?;
        self.log.txn_put(txn, &key, string_key)
    }

    /// Starts a queue entry of table `table` in `txn` (a streamed append): the following
    /// [`Store::txn_chunk`] calls fill it, and its COMMIT gives it the table's next sequence
    /// number ([`Store::last_seqs`] after the commit tells which).
    pub fn txn_append(&mut self, txn: TxnId, table: u32) -> Result<()> {
        self.live()?;
        self.table_meta(table)?;
        self.log.txn_put(txn, &table_prefix(table, NS_QUEUE), false)
    }

    /// Appends `data` to the value begun by the last [`Store::txn_put`] of `txn`, as one or
    /// more CHUNK records of at most `chunk_size` bytes.
    ///
    /// Errors: [`Error::Transaction`] if no put is in progress in `txn`.
    pub fn txn_chunk(&mut self, txn: TxnId, data: &[u8]) -> Result<()> {
        self.live()?;
        self.log.txn_chunk(txn, data, self.options.chunk_size)
    }

    /// Deletes `key` in `txn`.
    pub fn txn_delete(&mut self, txn: TxnId, key: &[u8]) -> Result<()> {
        self.txn_delete_in(txn, 0, key)
    }

    /// [`Store::txn_delete`] in table `table`.
    pub fn txn_delete_in(&mut self, txn: TxnId, table: u32, key: &[u8]) -> Result<()> {
        self.live()?;
        let key = self.ik(table, key)?;
        self.log.txn_delete(txn, &key)
    }

    /// Commits `txn`: writes COMMIT (record count, chunk count, value length and CRC) linked
    /// to its last record, and settles it as `durability` asks. Returns its ticket: with
    /// [`Durability::Group`] the commit is queued, and [`Store::outcome`] of the ticket (or
    /// [`Store::sync`]) says when it is durable and visible.
    pub fn commit(&mut self, txn: TxnId, durability: Durability) -> Result<Ticket> {
        self.live()?;
        let ticket = self.log.commit(txn, durability, None, true, &mut self.index)?;
        self.committed(ticket);
        self.maintain();
        Ok(ticket)
    }

    /// Commits `txn` under commit id `id` (1..=128 bytes), unless a commit with that id was
    /// made before (within [`Options::id_retention`]): then nothing is written, `txn` is aborted,
    /// and the answer says where that commit stands. A retried commit is so applied at most once,
    /// across restarts too (ids are in the COMMIT record and in checkpoints): a sync engine that
    /// applies a server's batch under the batch's id can apply it again after a crash safely.
    ///
    /// Errors: [`Error::InvalidArgument`] (param `id`) for an empty or longer id; as
    /// [`Store::commit`].
    pub fn commit_with_id(&mut self, txn: TxnId, id: &[u8], durability: Durability) -> Result<IdCommit> {
        self.live()?;
        check_id(id)?;
        if let Some(status) = self.id_status(id) {
            self.log.abort(txn)?;
            return Ok(IdCommit::Duplicate(status));
        }
        let ticket = self.log.commit(txn, durability, Some(id), true, &mut self.index)?;
        self.committed(ticket);
        self.maintain();
        Ok(IdCommit::Applied(ticket))
    }

    /// Where the commit with id `id` stands: committed (at an LSN), queued for the committer
    /// (its ticket), or `None` if no commit with that id is remembered.
    pub fn id_status(&self, id: &[u8]) -> Option<IdStatus> {
        match self.log.queued_id(id) {
            Some(ticket) => Some(IdStatus::Queued(ticket)),
            None => self.index.ids().get(id).map(|lsn| IdStatus::Committed { lsn }),
        }
    }

    /// Aborts `txn`: writes ABORT, so recovery reports it; its values never appear.
    pub fn abort(&mut self, txn: TxnId) -> Result<()> {
        self.live()?;
        self.log.abort(txn)
    }

    // ----- the committer -----

    /// Group commit, for the committer: flushes once, making every queued commit durable and
    /// visible. Returns `Ok` only if every group commit made before this call is durable:
    /// `Err` if this flush failed, or if an earlier flush that someone else asked for (a
    /// strict or relaxed write, a checkpoint, a compaction step, a read) failed group commits
    /// that no `sync` has reported yet. Use [`Store::outcome`] to tell which commits failed.
    pub fn sync(&mut self) -> Result<()> {
        self.live()?;
        let flushed = self.log.flush(&mut self.index);
        if flushed.is_ok() {
            let settings = self.settings();
            self.life.checkpoint_if_due(&mut self.log, &mut self.index, &settings);
        }
        let unreported = self.log.take_unreported();
        flushed.and(unreported.map_or(Ok(()), Err))
    }

    /// For a read that must observe every commit made before it: asks the committer to flush
    /// queued commits, without taking their failure from their own callers (it stays under
    /// their tickets and with the next [`Store::sync`]). Returns the flush's own result.
    pub fn settle(&mut self) -> Result<()> {
        self.live()?;
        if self.log.queued() == 0 {
            return Ok(());
        }
        self.log.flush(&mut self.index)
    }

    /// Where the commit `ticket` stands: queued, committed (visible; durable unless it was
    /// relaxed), or failed and why. Failures are remembered for the last 1,024 failed flushes.
    pub fn outcome(&self, ticket: Ticket) -> Outcome {
        self.log.outcome(ticket)
    }

    /// The ticket whose outcome decides the last write call (put, delete, batch, commit): the
    /// ticket of the commit it made; for a delete that wrote nothing because a queued group
    /// commit already deletes the key, that commit's ticket (if it fails, the key is still
    /// there, and this delete failed with it); `Ticket(0)` if nothing decides it (a delete of a
    /// key that was absent). With [`Durability::Group`], ask [`Store::outcome`] about it.
    pub fn last_ticket(&self) -> Ticket {
        self.last_ticket
    }

    /// The LSN of the last commit this store made (its COMMIT, PUT_ONE or DELETE_ONE record;
    /// 0 before the first): the version it wrote, which change events carry.
    pub fn last_lsn(&self) -> u64 {
        self.last_lsn
    }

    /// Notes the commit just appended (the writer's last record) as the last one.
    pub(crate) fn committed(&mut self, ticket: Ticket) {
        self.last_ticket = ticket;
        self.last_lsn = self.log.writer().next_lsn().saturating_sub(1);
    }

    /// Whether commits wait for the committer's flush.
    pub fn has_pending(&self) -> bool {
        self.log.queued() > 0
    }

    // ----- one-call operations -----

    /// Puts a whole value. Values up to `chunk_size` take one self-committed PUT_ONE record;
    /// larger ones a BEGIN/PUT/CHUNK.../COMMIT transaction.
    pub fn put(&mut self, key: &[u8], value: &[u8], durability: Durability) -> Result<()> {
        self.put_flagged(key, false, value, durability)
    }

    /// [`Store::put`], recording whether the key was given as a string.
    pub fn put_flagged(&mut self, key: &[u8], string_key: bool, value: &[u8], durability: Durability) -> Result<()> {
        self.put_in(0, key, string_key, value, durability).map(drop)
    }

    /// Puts a whole value under `key` in table `table`; returns the sequence number it took.
    ///
    /// Errors: [`Error::InvalidArgument`] (param `table`) if there is no such table, (param
    /// `key`) for an empty or too long key; as [`Store::put`].
    pub fn put_in(
        &mut self,
        table: u32,
        key: &[u8],
        string_key: bool,
        value: &[u8],
        durability: Durability,
    ) -> Result<u64> {
        self.live()?;
        let key = &self.ik(table, key)?;
        self.write_value(table, key, string_key, value, durability)
    }

    /// Stores `value` as table `table`'s next queue entry; returns its sequence number.
    /// A value above `chunk_size` is written as a transaction, as [`Store::put`] does.
    pub fn append(&mut self, table: u32, value: &[u8], durability: Durability) -> Result<u64> {
        self.live()?;
        self.table_meta(table)?;
        self.write_value(table, &table_prefix(table, NS_QUEUE), false, value, durability)
    }

    /// Writes internal key `key` (of `table`), in one record or a transaction; returns the
    /// sequence number the write took.
    fn write_value(
        &mut self,
        table: u32,
        key: &[u8],
        string_key: bool,
        value: &[u8],
        durability: Durability,
    ) -> Result<u64> {
        if value.len() > self.options.chunk_size {
            crate::wal::log::check_key(key)?;
            let txn = self.log.begin()?;
            let r = self
                .log
                .txn_put(txn, key, string_key)
                .and_then(|()| self.log.txn_chunk(txn, value, self.options.chunk_size))
                .and_then(|()| self.commit(txn, durability));
            if r.is_err() {
                let _ = self.log.abort(txn);
            }
            r?;
            return Ok(self.seq_taken(table));
        }
        let ticket = self.log.put_one(key, string_key, value, durability, &mut self.index)?;
        let seq = self.seq_taken(table);
        self.committed(ticket);
        self.maintain();
        Ok(seq)
    }

    /// The last sequence number the last commit written took in `table` (0 if none).
    fn seq_taken(&self, table: u32) -> u64 {
        self.log.last_seqs().iter().find(|s| s.0 == table).map_or(0, |s| s.2)
    }

    /// The sequence numbers the last commit written took, per table: (table, first, last).
    /// Known once the commit is written (a group commit's numbers are final if it commits).
    pub fn last_seqs(&self) -> &[(u32, u64, u64)] {
        self.log.last_seqs()
    }

    /// The sequence numbers the commit at `lsn` took, per table: `(table, first, last)` (the
    /// answer to a write retried under a commit id that was made already, [`Store::id_status`]).
    /// Kept with the commit's id (checkpoints too, format version 8), so compaction moving its
    /// entries and [`Store::delete_up_to`] deleting them leave the answer as it was. Tables
    /// dropped since are absent.
    ///
    /// For an id whose numbers are not kept (read from a checkpoint older than version 8), they
    /// are found from the commit's queue and change-feed entries still at that LSN: then
    /// tables whose entries were deleted, or moved by compaction, are absent too. That walk
    /// reads each table's queue and feed backwards from their ends to the commit (cheap for a
    /// recent one). An id taken over from an export has none: the export carries each id as an
    /// empty commit of its own, so the answer is empty (a retried put then resolves to 0).
    pub fn commit_seqs(&self, lsn: u64) -> Vec<(u32, u64, u64)> {
        let kept = self.index.ids().seqs_at(lsn);
        if !kept.is_empty() {
            let tables = self.index.tables();
            let mut out: Vec<(u32, u64, u64)> = kept.iter().copied().filter(|s| tables.get(s.0).is_some()).collect();
            out.sort_unstable();
            return out;
        }
        self.seqs_by_entries(lsn)
    }

    /// [`Store::commit_seqs`] from the entries still at `lsn`.
    fn seqs_by_entries(&self, lsn: u64) -> Vec<(u32, u64, u64)> {
        const PAGE: usize = 256;
        let mut out = Vec::new();
        for meta in self.index.tables().iter() {
            let mut seqs: Vec<u64> = Vec::new();
            for ns in [NS_QUEUE, NS_FEED] {
                let prefix = table_prefix(meta.id, ns).to_vec();
                // The first key past the namespace (its tag byte + 1): the walk starts there.
                let mut end = Some(table_prefix(meta.id, ns + 1).to_vec());
                'pages: loop {
                    let r = KeyRange {
                        prefix: Some(prefix.clone()),
                        end: end.clone(),
                        limit: Some(PAGE),
                        reverse: true,
                        ..KeyRange::default()
                    };
                    let page = self.index.scan(&r);
                    for info in &page {
                        let Some(e) = self.index.get(&info.key) else { continue };
                        if e.lsn < lsn {
                            break 'pages; // numbers only grow with LSNs: the commit is passed
                        }
                        let seq = info.key.get(TABLE_PREFIX_LEN..TABLE_PREFIX_LEN + 8).and_then(|b| b.try_into().ok());
                        if let (true, Some(seq)) = (e.lsn == lsn, seq) {
                            seqs.push(u64::from_be_bytes(seq));
                        }
                    }
                    match page.last() {
                        Some(last) if page.len() == PAGE => end = Some(last.key.clone()),
                        _ => break,
                    }
                }
            }
            if let (Some(&first), Some(&last)) = (seqs.iter().min(), seqs.iter().max()) {
                out.push((meta.id, first, last));
            }
        }
        out
    }

    /// Deletes `key` with one self-committed record; returns whether it existed, counting
    /// queued group commits. A key that does not exist writes nothing. When a queued commit
    /// decides the answer, a strict or relaxed delete first asks the committer to flush it (so
    /// it never answers on the strength of a commit that may yet fail); a group delete that
    /// writes nothing because a queued delete already removes the key shares that delete's
    /// outcome ([`Store::last_ticket`]).
    pub fn delete(&mut self, key: &[u8], durability: Durability) -> Result<bool> {
        self.delete_in(0, key, durability)
    }

    /// [`Store::delete`] in table `table`; the delete takes a sequence number when it writes
    /// ([`Store::last_seqs`]).
    pub fn delete_in(&mut self, table: u32, key: &[u8], durability: Durability) -> Result<bool> {
        self.live()?;
        let key = &self.ik(table, key)?;
        self.log.writable()?;
        if durability != Durability::Group && self.log.queued_touch(key).is_some() {
            // Its failure stays with the commits it failed; this delete goes on from what is
            // committed.
            let _ = self.log.flush(&mut self.index);
            self.log.writable()?;
        }
        let existed = match self.log.queued_touch(key) {
            Some((put, ticket)) => {
                self.last_ticket = ticket;
                put
            }
            None => {
                self.last_ticket = Ticket(0);
                self.index.contains(key)
            }
        };
        if !existed {
            return Ok(false);
        }
        let ticket = self.log.delete_one(key, durability, &mut self.index)?;
        self.committed(ticket);
        self.maintain();
        Ok(true)
    }

    /// Writes several puts and deletes in one transaction: all or none become visible.
    pub fn batch(&mut self, ops: &[BatchOp<'_>], durability: Durability) -> Result<()> {
        self.batch_inner(ops, None, durability).map(drop)
    }

    /// [`Store::batch`] under commit id `id`: if a commit with that id was made before, nothing
    /// is written (see [`Store::commit_with_id`]).
    pub fn batch_with_id(&mut self, ops: &[BatchOp<'_>], id: &[u8], durability: Durability) -> Result<IdCommit> {
        self.live()?;
        check_id(id)?;
        if let Some(status) = self.id_status(id) {
            return Ok(IdCommit::Duplicate(status));
        }
        self.batch_inner(ops, Some(id), durability)
    }

    /// [`Store::put_flagged`] under commit id `id`, as one BEGIN/PUT/CHUNK.../COMMIT
    /// transaction (a PUT_ONE record has no room for an id): applied at most once, as
    /// [`Store::commit_with_id`]. The multi-tab leader writes another context's small puts so,
    /// in one call.
    pub fn put_with_id(
        &mut self,
        key: &[u8],
        string_key: bool,
        value: &[u8],
        id: &[u8],
        durability: Durability,
    ) -> Result<IdCommit> {
        self.live()?;
        check_id(id)?;
        let key = &self.ik(0, key)?;
        if let Some(status) = self.id_status(id) {
            return Ok(IdCommit::Duplicate(status));
        }
        let txn = self.log.begin()?;
        let r = self
            .log
            .txn_put(txn, key, string_key)
            .and_then(|()| self.log.txn_chunk(txn, value, self.options.chunk_size))
            .and_then(|()| self.commit_with_id(txn, id, durability));
        if r.is_err() {
            let _ = self.log.abort(txn);
        }
        r
    }

    fn batch_inner(&mut self, ops: &[BatchOp<'_>], id: Option<&[u8]>, durability: Durability) -> Result<IdCommit> {
        self.live()?;
        let mut keyed = Vec::with_capacity(ops.len());
        for op in ops {
            keyed.push(match *op {
                BatchOp::Put { key, value } => (self.ik(0, key)?, Some(value)),
                BatchOp::Delete { key } => (self.ik(0, key)?, None),
                BatchOp::PutIn { table, key, value } => (self.ik(table, key)?, Some(value)),
                BatchOp::DeleteIn { table, key } => (self.ik(table, key)?, None),
                BatchOp::Append { table, value } => {
                    self.table_meta(table)?;
                    (table_prefix(table, NS_QUEUE).to_vec(), Some(value))
                }
            });
        }
        let txn = self.log.begin()?;
        let chunk = self.options.chunk_size;
        let r = keyed.iter().try_for_each(|(key, value)| match value {
            Some(value) => self.log.txn_put(txn, key, false).and_then(|()| self.log.txn_chunk(txn, value, chunk)),
            None => self.log.txn_delete(txn, key),
        });
        let r = r.and_then(|()| match id {
            Some(id) => self.commit_with_id(txn, id, durability),
            None => self.commit(txn, durability).map(IdCommit::Applied),
        });
        if r.is_err() {
            let _ = self.log.abort(txn);
        }
        r
    }

    /// Deletes every key in one transaction (after a crash, all or none are gone); returns how
    /// many it deleted. Queued group commits are flushed first (a failure stays with them), so
    /// what is cleared is every committed key. An empty store writes nothing
    /// ([`Store::last_ticket`] is then `Ticket(0)`). The Durable Objects storage API's
    /// `deleteAll`, idb-keyval's `clear`. Holds every key in memory while it runs.
    pub fn clear(&mut self, durability: Durability) -> Result<u64> {
        self.live()?;
        self.log.writable()?;
        if self.log.queued() > 0 {
            let _ = self.log.flush(&mut self.index);
            self.log.writable()?;
        }
        self.last_ticket = Ticket(0);
        let keys = self.scan_table(0, &KeyRange::default());
        if keys.is_empty() {
            return Ok(0);
        }
        let ops: Vec<BatchOp<'_>> = keys.iter().map(|k| BatchOp::Delete { key: &k.key }).collect();
        self.batch(&ops, durability)?;
        Ok(keys.len() as u64)
    }

    // ----- reads -----

    /// The committed value's location, or `None` if `key` is absent.
    pub fn entry(&self, key: &[u8]) -> Result<Option<Entry>> {
        self.entry_in(0, key)
    }

    /// [`Store::entry`] in table `table` (`None` for a table that does not exist).
    pub fn entry_in(&self, table: u32, key: &[u8]) -> Result<Option<Entry>> {
        self.live()?;
        Ok(self.index.get(&ikey(table, key)).map(std::borrow::Cow::into_owned))
    }

    /// Keeps the segments holding `chunks` from being released until [`Store::unpin`]: a
    /// reader that walks a value's chunks over time (a stream) pins them first, so compaction
    /// cannot free what it has yet to read. Pins are counted.
    pub fn pin(&mut self, chunks: &[ChunkLoc]) {
        self.life.pin(chunks);
    }

    /// Undoes one [`Store::pin`] of the same chunks. A segment freed of its last pin is
    /// released by the next checkpoint.
    pub fn unpin(&mut self, chunks: &[ChunkLoc]) {
        self.life.unpin(chunks);
    }

    /// Whether `key` has a committed value.
    pub fn has(&self, key: &[u8]) -> Result<bool> {
        self.has_in(0, key)
    }

    /// [`Store::has`] in table `table`.
    pub fn has_in(&self, table: u32, key: &[u8]) -> Result<bool> {
        self.live()?;
        Ok(self.index.contains(&ikey(table, key)))
    }

    /// Reads one piece of a value into `out` (replacing its contents), re-checking the
    /// record's CRC. Errors: [`Error::ChecksumMismatch`], [`Error::Corruption`], [`Error::Io`].
    pub fn read_chunk(&self, loc: &ChunkLoc, out: &mut Vec<u8>) -> Result<()> {
        self.live()?;
        self.log.read_chunk(loc, out)
    }

    /// The whole value of `key`, or `None`. Holds the value in memory: for large values,
    /// walk [`Store::entry`]'s chunks with [`Store::read_chunk`] instead.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get_in(0, key)
    }

    /// [`Store::get`] in table `table`.
    pub fn get_in(&self, table: u32, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let Some(entry) = self.entry_in(table, key)? else { return Ok(None) };
        self.value_of(&entry).map(Some)
    }

    /// The whole value `entry` points to.
    pub fn value_of(&self, entry: &Entry) -> Result<Vec<u8>> {
        let mut value = Vec::with_capacity(usize::try_from(entry.size).unwrap_or(0));
        let mut buf = Vec::new();
        for loc in &entry.chunks {
            self.log.read_chunk(loc, &mut buf)?;
            value.extend_from_slice(&buf);
        }
        Ok(value)
    }

    /// Reads every live value (every key of every table, queue entry and change-feed entry)
    /// chunk by chunk, checking each record's CRC as every read does: the `walnut verify`
    /// tool's deep check. Returns how many values and bytes it read, and each value that could
    /// not be read (its internal key and the error), at most `max_failures` of them.
    pub fn check_values(&self, max_failures: usize) -> Result<ValueCheck> {
        self.live()?;
        let mut check = ValueCheck::default();
        let mut buf = Vec::new();
        for (key, entry) in self.index.iter() {
            check.values += 1;
            for loc in &entry.chunks {
                match self.log.read_chunk(loc, &mut buf) {
                    Ok(()) => check.bytes += buf.len() as u64,
                    Err(e) => {
                        check.failed += 1;
                        if check.failures.len() < max_failures {
                            check.failures.push((key.to_vec(), e));
                        }
                        break;
                    }
                }
            }
        }
        Ok(check)
    }

    /// Keys in bytewise order, as `range` selects.
    pub fn keys(&self, range: &KeyRange) -> Result<Vec<KeyInfo>> {
        self.keys_in(0, range)
    }

    /// [`Store::keys`] of table `table` (empty for a table that does not exist).
    pub fn keys_in(&self, table: u32, range: &KeyRange) -> Result<Vec<KeyInfo>> {
        self.live()?;
        Ok(self.scan_table(table, range))
    }

    /// Table `table`'s queue entries from sequence number `from` on, at most `limit` (`None`:
    /// all), in sequence order: each entry's number and where its value lies. Entries at or
    /// below the table's deleted mark are gone.
    pub fn read(&self, table: u32, from: u64, limit: Option<usize>) -> Result<Vec<(u64, Entry)>> {
        self.live()?;
        let r = KeyRange {
            prefix: Some(table_prefix(table, NS_QUEUE).to_vec()),
            start: Some(queue_key(table, from)),
            limit,
            ..KeyRange::default()
        };
        let mut out = Vec::new();
        for info in self.index.scan(&r) {
            let seq = info.key.get(TABLE_PREFIX_LEN..).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes);
            if let (Some(seq), Some(e)) = (seq, self.index.get(&info.key)) {
                out.push((seq, e.into_owned()));
            }
        }
        Ok(out)
    }

    /// Table `table`'s change feed after sequence number `since`, at most `limit` changes, in
    /// sequence order: every put and delete of its keys (not its queue appends), with its
    /// number, its key and the value's size, kept until [`Store::delete_up_to`] passes it. A
    /// change is `current` when it made the key's present state (its value, or its absence): a
    /// later change to the key, or a later clear, makes it not current. Finding that out reads the
    /// feed from `since` to its end (cheap for a reader that keeps up).
    pub fn changes(&self, table: u32, since: u64, limit: Option<usize>) -> Result<Vec<Change>> {
        self.live()?;
        let prefix = table_prefix(table, NS_FEED);
        let r = KeyRange {
            prefix: Some(prefix.to_vec()),
            start: Some(feed_key(table, since.saturating_add(1), 0, 0, &[])),
            ..KeyRange::default()
        };
        let mut tail: Vec<Change> = Vec::new();
        for info in self.index.scan(&r) {
            let Some((seq, kind, size, key)) = info.key.get(TABLE_PREFIX_LEN..).and_then(split_feed) else { continue };
            tail.push(Change {
                seq,
                delete: kind == FEED_DELETE,
                key: key.to_vec(),
                string_key: info.string_key,
                size,
                current: false,
            });
        }
        // From the end: the first change met for each key is its latest.
        let mut seen = std::collections::HashSet::new();
        for c in tail.iter_mut().rev() {
            if seen.insert(c.key.clone()) {
                c.current = self.index.contains(&ikey(table, &c.key)) != c.delete;
            }
        }
        tail.truncate(limit.unwrap_or(usize::MAX));
        Ok(tail)
    }

    /// The internal key of `key` in `table`, checked: the table exists, the key is not empty
    /// and fits.
    pub(crate) fn ik(&self, table: u32, key: &[u8]) -> Result<Vec<u8>> {
        self.table_meta(table)?;
        let k = ikey(table, key);
        if key.is_empty() {
            return Err(Error::invalid("key", "must not be empty"));
        }
        let limit = if table != 0 {
            MAX_TABLE_KEY_LEN
        } else if k.len() != key.len() {
            MAX_ESCAPED_KEY_LEN
        } else {
            MAX_KEY_LEN
        };
        if key.len() > limit {
            return Err(Error::invalid("key", format!("is {} bytes; the limit is {limit}", key.len())));
        }
        Ok(k)
    }

    pub(crate) fn table_meta(&self, table: u32) -> Result<&TableMeta> {
        self.index
            .tables()
            .get(table)
            .ok_or_else(|| Error::invalid("table", format!("no table has id {table} (dropped?)")))
    }

    /// The keys of table `table` that `range` selects, as the caller gave them. The default
    /// table's keys lie in two parts of the key space: as they are, and (those starting with
    /// the table tag) escaped; a scan walks both in order.
    pub(crate) fn scan_table(&self, table: u32, range: &KeyRange) -> Vec<KeyInfo> {
        let strip = |mut v: Vec<KeyInfo>| {
            for i in &mut v {
                i.key.drain(..TABLE_PREFIX_LEN.min(i.key.len()));
            }
            v
        };
        let p = table_prefix(table, NS_KEYS);
        let with = |k: &Option<Vec<u8>>| k.as_ref().map(|k| [&p[..], k].concat());
        let tabled = KeyRange {
            prefix: Some([&p[..], range.prefix.as_deref().unwrap_or_default()].concat()),
            start: with(&range.start),
            end: with(&range.end),
            limit: range.limit,
            reverse: range.reverse,
        };
        if table != 0 {
            return strip(self.index.scan(&tabled));
        }
        // The default table: its plain keys (below the tag), then its escaped ones.
        let tag = vec![TABLE_TAG];
        let plain = KeyRange {
            end: Some(match &range.end {
                Some(e) if e.as_slice() < tag.as_slice() => e.clone(),
                _ => tag,
            }),
            ..range.clone()
        };
        let limit = range.limit.unwrap_or(usize::MAX);
        let (first, second) = if range.reverse { (&tabled, &plain) } else { (&plain, &tabled) };
        let escaped = |r: &KeyRange| strip(self.index.scan(r));
        let mut out = if range.reverse { escaped(first) } else { self.index.scan(first) };
        if out.len() < limit {
            let rest = KeyRange { limit: Some(limit - out.len()), ..second.clone() };
            out.extend(if range.reverse { self.index.scan(&rest) } else { escaped(&rest) });
        }
        out
    }

    // ----- tables -----

    /// The table named `name`, if it exists.
    pub fn table(&self, name: &str) -> Option<TableInfo> {
        self.index.tables().by_name(name).map(|m| self.info(m))
    }

    /// Every table, the default one (id 0, no name) first.
    pub fn tables(&self) -> Vec<TableInfo> {
        self.index.tables().iter().map(|m| self.info(m)).collect()
    }

    fn info(&self, m: &TableMeta) -> TableInfo {
        TableInfo {
            id: m.id,
            name: m.name.clone(),
            last_seq: m.next_seq - 1,
            flushed_seq: m.flushed,
            deleted_upto: m.deleted_upto,
        }
    }

    /// Creates the table `name` (durably: a TABLE record, flushed) and returns its id, or
    /// returns the id of the table of that name if there is one. Ids count from 1 and are
    /// never reused.
    ///
    /// Errors: [`Error::InvalidArgument`] (param `name`) for an empty name or one longer than
    /// 255 bytes of UTF-8.
    pub fn create_table(&mut self, name: &str) -> Result<u32> {
        self.live()?;
        if name.is_empty() || name.len() > MAX_TABLE_NAME_LEN {
            return Err(Error::invalid("name", format!("must be 1 to {MAX_TABLE_NAME_LEN} bytes of UTF-8")));
        }
        if let Some(m) = self.index.tables().by_name(name) {
            return Ok(m.id);
        }
        let id = self.index.tables().next_id();
        if id == u32::MAX {
            return Err(Error::invalid("name", "no table ids are left"));
        }
        let meta = TableMeta { id, name: name.to_string(), next_seq: 1, flushed: 0, deleted_upto: 0 };
        self.table_write(meta.record(), Durability::Strict)?;
        Ok(id)
    }

    /// Drops table `name` with one TABLE record, flushed (as a creation is: a write to the
    /// table after the call must not land in it): its keys, queue and marks are gone at once
    /// (its records are reclaimed by compaction); its id is never given again, an import's
    /// included (the import states the store's highest id). Only an import whose switch failed
    /// part way, or a power cut in the middle of that switch, leaves a new, empty store whose
    /// ids start over (docs/FORMAT.md, section 12). Returns whether it existed.
    pub fn drop_table(&mut self, name: &str) -> Result<bool> {
        self.live()?;
        let Some(id) = self.index.tables().by_name(name).map(|m| m.id) else { return Ok(false) };
        self.table_write(TableRecord { op: TABLE_OP_DROP, table: id, ..TableRecord::default() }, Durability::Strict)?;
        Ok(true)
    }

    /// Persists `seq` as table `table`'s flushed sequence number (HoraeDB's MaxSeq), with one
    /// TABLE record in the log: after a crash it reads back as the last one acknowledged.
    ///
    /// Errors: [`Error::InvalidArgument`] (param `seq`) above the table's last sequence number
    /// or below its flushed one.
    pub fn mark_flushed(&mut self, table: u32, seq: u64, durability: Durability) -> Result<()> {
        let mut m = self.settled_meta(table)?;
        if seq < m.flushed || seq >= m.next_seq {
            return Err(Error::invalid(
                "seq",
                format!("must lie between the flushed {} and the last {}; got {seq}", m.flushed, m.next_seq - 1),
            ));
        }
        m.flushed = seq;
        self.table_write(m.record(), durability)
    }

    /// Deletes table `table`'s queue entries at or below `seq`, at once, with one TABLE record;
    /// their records are reclaimed by compaction. Sequence numbers go on above every number
    /// handed out. A `seq` at or below the current mark changes nothing.
    ///
    /// Errors: [`Error::InvalidArgument`] (param `seq`) above the table's last sequence number.
    pub fn delete_up_to(&mut self, table: u32, seq: u64, durability: Durability) -> Result<()> {
        let mut m = self.settled_meta(table)?;
        if seq >= m.next_seq {
            return Err(Error::invalid("seq", format!("is above the table's last sequence number {}", m.next_seq - 1)));
        }
        if seq <= m.deleted_upto {
            return Ok(());
        }
        m.deleted_upto = seq;
        self.table_write(m.record(), durability)
    }

    /// Table `table`'s state once every queued commit is applied.
    fn settled_meta(&mut self, table: u32) -> Result<TableMeta> {
        self.live()?;
        self.log.writable()?;
        if self.log.queued() > 0 {
            let _ = self.log.flush(&mut self.index);
            self.log.writable()?;
        }
        self.table_meta(table).cloned()
    }

    fn table_write(&mut self, rec: TableRecord, durability: Durability) -> Result<()> {
        let ticket = self.log.table(rec, durability, &mut self.index)?;
        self.committed(ticket);
        self.maintain();
        Ok(())
    }

    /// Fraction of the log's bytes that no live value's records use (0.0..=1.0).
    pub fn dead_ratio(&self) -> f64 {
        dead_ratio(&self.log, &self.index)
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        let w = self.log.writer();
        Stats {
            keys: self.index.len() as u64,
            live_bytes: self.index.live_bytes(),
            log_bytes: w.log_bytes(),
            next_lsn: w.next_lsn(),
            open_transactions: self.log.open_transactions() as u64,
            pending_commits: self.log.queued() as u64,
            flushes: w.flushes(),
            poisoned: w.is_poisoned(),
            recoveries_in_place: self.log.rollbacks(),
            segments: w.segments().len() as u64,
            dead_ratio: self.dead_ratio(),
            last_checkpoint_lsn: self.life.last_checkpoint_lsn,
            checkpoints: self.life.checkpoints,
            compactions: self.life.compactions,
            values_moved: self.life.moved,
        }
    }

    // ----- the lifecycle -----

    /// Writes a checkpoint now: asks the committer to flush, persists the index into the older
    /// of the two checkpoint files, flushes it, then releases segments nothing needs any more.
    ///
    /// Errors: [`Error::Unsupported`] on a single-file store; [`Error::Io`] with op
    /// `"checkpoint"` when no file is free for it yet (an OPFS pool refilling: try again);
    /// storage errors. A failed checkpoint leaves the previous one in force.
    pub fn checkpoint(&mut self) -> Result<()> {
        self.live()?;
        self.log.writable()?;
        self.life.checkpoint(&mut self.log, &mut self.index)
    }

    /// Runs compaction to the end: every sealed segment holding dead bytes is emptied and
    /// released. Returns the rounds run (0 if there was nothing to do).
    pub fn compact(&mut self) -> Result<u64> {
        self.live()?;
        let settings = self.settings();
        self.life.compact(&mut self.log, &mut self.index, &settings)
    }

    /// One step of compaction: plans a round if none is under way (taking any sealed segment
    /// with dead bytes), else copies one chunk.
    pub fn compact_step(&mut self) -> Result<CompactStep> {
        self.live()?;
        let settings = self.settings();
        self.life.compact_step(&mut self.log, &mut self.index, &settings, true)
    }

    /// Flushes queued commits, writes a checkpoint if the log grew since the last one (so the
    /// next open is fast), and closes. Open transactions are left without COMMIT, so they
    /// are discarded by the next recovery. Every later call fails with [`Error::Closed`].
    ///
    /// Errors: the flush's failure (the commits it carried failed). A closing checkpoint that
    /// cannot be written does not fail the close (nothing acknowledged depends on it: the next
    /// open replays the log instead); [`Store::closing_checkpoint`] tells whether it was written.
    pub fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        // A poisoned store cannot flush; what it must still say is whether group commits failed
        // that no sync has reported.
        let r =
            if self.log.writer().is_poisoned() { self.log.take_unreported().map_or(Ok(()), Err) } else { self.sync() };
        self.close_checkpoint =
            if r.is_ok() && self.log.writer().volume().can_grow() && self.life.checkpoint_stale(&self.log) {
                Some(self.life.checkpoint(&mut self.log, &mut self.index))
            } else {
                None
            };
        self.closed = true;
        r
    }

    /// After [`Store::close`]: `None` if no closing checkpoint was needed (or the close
    /// failed first), else whether it was written (its error if not: the next open then
    /// replays the log since the previous checkpoint, and loses nothing).
    pub fn closing_checkpoint(&self) -> Option<&Result<()>> {
        self.close_checkpoint.as_ref()
    }

    /// Closes and hands back the volume (for tests that reopen it).
    pub fn into_volume(mut self) -> V {
        let _ = self.close();
        self.log.into_writer().into_volume()
    }

    /// The volume (on a single-file store: the storage), read-only.
    pub fn volume(&self) -> &V {
        self.log.writer().volume()
    }
}

/// Checks a commit id's length; the error names the parameter `id`.
pub(crate) fn check_id(id: &[u8]) -> Result<()> {
    if !(1..=MAX_COMMIT_ID_LEN).contains(&id.len()) {
        return Err(Error::invalid("id", format!("must be 1 to {MAX_COMMIT_ID_LEN} bytes, got {}", id.len())));
    }
    if id.starts_with(crate::export::END_MARK_PREFIX.as_bytes()) {
        return Err(Error::invalid(
            "id",
            format!("ids starting with {:?} are walnut's own", crate::export::END_MARK_PREFIX),
        ));
    }
    Ok(())
}

/// Where a commit with an id stands ([`Store::id_status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdStatus {
    /// Committed; its COMMIT's LSN (the version it wrote).
    Committed { lsn: u64 },
    /// Queued for the committer: its outcome is [`Store::outcome`] of this ticket.
    Queued(Ticket),
}

/// What [`Store::commit_with_id`] or [`Store::batch_with_id`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdCommit {
    /// Committed now, under this ticket.
    Applied(Ticket),
    /// A commit with the same id was made before: nothing was written.
    Duplicate(IdStatus),
}

/// One operation of [`Store::batch`]: in the default table, or in table `table`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOp<'a> {
    Put {
        key: &'a [u8],
        value: &'a [u8],
    },
    Delete {
        key: &'a [u8],
    },
    PutIn {
        table: u32,
        key: &'a [u8],
        value: &'a [u8],
    },
    DeleteIn {
        table: u32,
        key: &'a [u8],
    },
    /// A queue entry of `table`, numbered by the commit.
    Append {
        table: u32,
        value: &'a [u8],
    },
}

/// A change of a table's change feed ([`Store::changes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The sequence number the write took.
    pub seq: u64,
    /// A delete (else a put).
    pub delete: bool,
    /// The key, as given.
    pub key: Vec<u8>,
    /// Whether the key was given as a string.
    pub string_key: bool,
    /// The value's size, bytes (0 for a delete).
    pub size: u64,
    /// Whether this change made the key's present state (no later change to it).
    pub current: bool,
}

/// A table as [`Store::tables`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// Table id: 0 for the default table.
    pub id: u32,
    /// Name (empty for the default table).
    pub name: String,
    /// The last sequence number a visible write to it took (0: none yet). Group commits still
    /// queued are not counted: [`Store::last_seqs`] tells a writer the numbers it took.
    pub last_seq: u64,
    /// The flushed sequence number last persisted ([`Store::mark_flushed`]).
    pub flushed_seq: u64,
    /// Queue entries at or below this are deleted ([`Store::delete_up_to`]).
    pub deleted_upto: u64,
}
