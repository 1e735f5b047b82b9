//! The wasm-bindgen binding used by `www/worker.js`; its contract is `docs/WORKER_API.md`.
//! Options, stats and reports cross with serde-wasm-bindgen; errors become JS `Error`s whose
//! `name` is [`Error::js_name`].

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

use crate::error::Error;
use crate::format::{loc_offset, loc_segment};
use crate::index::{ChunkLoc, Entry, KeyInfo, KeyRange};
use crate::storage::host::{check_host, close_host, HostVolume};
use crate::storage::opfs::OpfsVolume;
use crate::store::{Durability, IdCommit, IdStatus, Options, Outcome, Store, Ticket, TxnId};
use crate::txn::{AbsentRead, TxCommit};

fn js_err(e: Error) -> JsValue {
    let err = js_sys::Error::new(&e.to_string());
    err.set_name(e.js_name());
    err.into()
}

type JsResult<T> = Result<T, JsValue>;

fn serializer() -> serde_wasm_bindgen::Serializer {
    serde_wasm_bindgen::Serializer::new().serialize_missing_as_null(true).serialize_maps_as_objects(true)
}

fn to_js<T: Serialize>(v: &T) -> JsResult<JsValue> {
    v.serialize(&serializer()).map_err(|e| js_err(Error::io("serialize", e.to_string())))
}

/// A sequence number from JS: an integer 0..=2^53-1 (the error names `seq`).
fn seq_arg(seq: f64) -> Result<u64, Error> {
    if seq >= 0.0 && seq.fract() == 0.0 && seq <= 9_007_199_254_740_991.0 {
        Ok(seq as u64)
    } else {
        Err(Error::invalid("seq", format!("must be a sequence number (an integer >= 0), got {seq}")))
    }
}

/// A table as `tables()` lists it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsTable {
    id: u32,
    name: String,
    last_seq: f64,
    flushed_seq: f64,
    deleted_up_to: f64,
}

fn durability(strict: bool) -> Durability {
    if strict {
        Durability::Group
    } else {
        Durability::Relaxed
    }
}

fn txn_id(txn: f64) -> Result<TxnId, Error> {
    if txn >= 1.0 && txn.fract() == 0.0 && txn <= 9_007_199_254_740_991.0 {
        Ok(txn as TxnId)
    } else {
        Err(Error::invalid("txn", format!("must be a transaction id from begin(), got {txn}")))
    }
}

/// A ticket as JS holds it: a commit's number (below 2^53: one per commit since open).
fn ticket_js(t: Ticket) -> f64 {
    t.0 as f64
}

/// `open()`'s options as JS numbers: each is checked here against its own range, so an error
/// names the parameter and the limit (serde's "expected u32" named neither).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OpenOptions {
    chunk_size: Option<f64>,
    direct_write_threshold: Option<f64>,
    lock_timeout_ms: Option<f64>,
    segment_size: Option<f64>,
    checkpoint_bytes: Option<f64>,
    compaction_ratio: Option<f64>,
    id_retention: Option<f64>,
}

/// An integer option within `min..=max`, or an error naming `param`.
fn integer(value: Option<f64>, param: &'static str, min: u64, max: u64) -> Result<Option<u64>, Error> {
    let Some(v) = value else { return Ok(None) };
    if v.fract() != 0.0 || !(min as f64..=max as f64).contains(&v) {
        return Err(Error::invalid(param, format!("must be an integer from {min} to {max}, got {v}")));
    }
    Ok(Some(v as u64))
}

/// `open()`'s options, checked: the store's [`Options`] and the lock timeout (ms).
fn open_options(options: JsValue) -> Result<(Options, u32), Error> {
    let o: OpenOptions = if options.is_undefined() || options.is_null() {
        OpenOptions::default()
    } else {
        serde_wasm_bindgen::from_value(options).map_err(|e| Error::invalid("options", e.to_string()))?
    };
    let d = Options::default();
    let max_chunk = crate::format::MAX_CHUNK_LEN as u64;
    let options = Options {
        chunk_size: integer(o.chunk_size, "chunkSize", 1, max_chunk)?.map_or(d.chunk_size, |v| v as usize),
        direct_write_threshold: integer(o.direct_write_threshold, "directWriteThreshold", 1, u64::from(u32::MAX))?
            .map_or(d.direct_write_threshold, |v| v as usize),
        segment_size: integer(o.segment_size, "segmentSize", 4096, crate::format::MAX_SEGMENT_LEN / 2)?
            .unwrap_or(d.segment_size),
        checkpoint_bytes: integer(o.checkpoint_bytes, "checkpointBytes", 0, 1 << 53)?.unwrap_or(d.checkpoint_bytes),
        compaction_ratio: o.compaction_ratio.unwrap_or(d.compaction_ratio),
        id_retention: integer(o.id_retention, "idRetention", 0, crate::store::MAX_ID_RETENTION as u64)?
            .map_or(d.id_retention, |v| v as usize),
        ..d
    };
    options.validate()?;
    let lock = integer(o.lock_timeout_ms, "lockTimeout", 0, u64::from(u32::MAX))?.map_or(5000, |v| v as u32);
    Ok((options, lock))
}

/// A location in the log as JS gets it: `{ segment, offset }` (a packed location passes 2^53
/// beyond segment 8,192, and would not survive as a JS number).
#[derive(Serialize)]
struct JsLocation {
    segment: u32,
    offset: u64,
}

fn location(l: u64) -> JsLocation {
    JsLocation { segment: loc_segment(l), offset: loc_offset(l) }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeysOptions {
    #[serde(with = "serde_bytes", default)]
    prefix: Option<Vec<u8>>,
    #[serde(with = "serde_bytes", default)]
    start: Option<Vec<u8>>,
    #[serde(with = "serde_bytes", default)]
    end: Option<Vec<u8>>,
    limit: Option<usize>,
    reverse: Option<bool>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsDiscarded {
    txn: u64,
    lsn: u64,
    reason: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsRecovery {
    committed: u64,
    discarded: Vec<JsDiscarded>,
    discarded_total: u64,
    bytes_truncated: u64,
    truncated_at: Option<JsLocation>,
    tail_reason: Option<String>,
    log_bytes: u64,
    records: u64,
    segments: u64,
    checkpoint_seq: Option<u64>,
    checkpoint_lsn: Option<u64>,
    checkpoints_rejected: Vec<String>,
    segments_released: u64,
    entries_dropped: u64,
    millis: f64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsStats {
    keys: u64,
    live_bytes: u64,
    log_bytes: u64,
    next_lsn: u64,
    open_transactions: u64,
    pending_commits: u64,
    flushes: u64,
    poisoned: bool,
    chunk_size: usize,
    segments: u64,
    dead_ratio: f64,
    last_checkpoint_lsn: u64,
    checkpoints: u64,
    compactions: u64,
}

/// Where a commit id stands, for JS: committed already, or queued under a ticket.
#[derive(Serialize)]
struct JsIdStatus {
    committed: bool,
    ticket: f64,
    /// The COMMIT's LSN once committed (0 while queued).
    lsn: f64,
}

fn id_status_js(status: IdStatus) -> JsIdStatus {
    match status {
        IdStatus::Committed { lsn } => JsIdStatus { committed: true, ticket: 0.0, lsn: lsn as f64 },
        IdStatus::Queued(t) => JsIdStatus { committed: false, ticket: ticket_js(t), lsn: 0.0 },
    }
}

#[derive(Serialize)]
struct JsDeleted {
    existed: bool,
    ticket: f64,
}

#[derive(Serialize)]
struct JsCleared {
    count: f64,
    ticket: f64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsReader {
    id: u32,
    size: u64,
}

struct Reader {
    chunks: Vec<ChunkLoc>,
    next: usize,
}

/// The volume a store is on: OPFS in a dedicated worker, or files a JS host keeps (Node's fs,
/// a Durable Object's SQL pages).
enum Backend {
    Opfs(Store<OpfsVolume>),
    Host(Store<HostVolume>),
}

/// Runs `$e` with `$s` bound to the store, whatever its volume.
macro_rules! store {
    ($self:ident, |$s:ident| $e:expr) => {
        match &$self.store {
            Backend::Opfs($s) => $e,
            Backend::Host($s) => $e,
        }
    };
    ($self:ident, mut |$s:ident| $e:expr) => {
        match &mut $self.store {
            Backend::Opfs($s) => $e,
            Backend::Host($s) => $e,
        }
    };
}

/// A scan's range from JS options (`{ prefix, start, end, limit, reverse }`, all optional).
fn key_range(options: JsValue) -> JsResult<KeyRange> {
    let o: KeysOptions = if options.is_undefined() || options.is_null() {
        KeysOptions::default()
    } else {
        serde_wasm_bindgen::from_value(options).map_err(|e| js_err(Error::invalid("options", e.to_string())))?
    };
    Ok(KeyRange { prefix: o.prefix, start: o.start, end: o.end, limit: o.limit, reverse: o.reverse.unwrap_or(false) })
}

/// Keys packed into one buffer (one object and one buffer per key cost more than the scan):
/// for each key, `key_len` (u32 LE), `flags` (u8, bit 0: the key was written as a string),
/// `size` (the value's length in bytes, f64 LE), then the key bytes.
fn pack_keys(keys: Vec<KeyInfo>) -> js_sys::Uint8Array {
    let mut out = Vec::with_capacity(keys.iter().map(|k| 13 + k.key.len()).sum());
    for k in keys {
        // Keys are at most MAX_KEY_LEN (65535) bytes.
        out.extend_from_slice(&(k.key.len() as u32).to_le_bytes());
        out.push(u8::from(k.string_key));
        out.extend_from_slice(&(k.size as f64).to_le_bytes());
        out.extend_from_slice(&k.key);
    }
    js_sys::Uint8Array::from(&out[..])
}

/// How a transaction's commit ended, for JS.
#[derive(Serialize)]
struct JsTxCommit {
    applied: bool,
    ticket: f64,
    lsn: f64,
}

/// What an import installed, for JS.
#[derive(Serialize)]
struct JsImported {
    values: f64,
    bytes: f64,
}

/// A store, for the dedicated worker (on OPFS) or a host's volume. See `docs/WORKER_API.md`.
#[wasm_bindgen]
pub struct WalnutStore {
    store: Backend,
    readers: HashMap<u32, Reader>,
    next_reader: u32,
    buf: Vec<u8>,
    /// Exports under way, by id (see `exportBegin`).
    exports: HashMap<u32, crate::export::Export>,
    /// The import under way (see `importBegin`).
    import: Option<crate::export::Import>,
}

impl WalnutStore {
    fn new(store: Backend) -> WalnutStore {
        WalnutStore {
            store,
            readers: HashMap::new(),
            next_reader: 1,
            buf: Vec::new(),
            exports: HashMap::new(),
            import: None,
        }
    }
}

#[wasm_bindgen]
impl WalnutStore {
    /// Opens or creates the store `name` in OPFS and runs recovery. Options:
    /// `{ chunkSize?: bytes, directWriteThreshold?: bytes, lockTimeoutMs?: ms,
    ///    segmentSize?: bytes, checkpointBytes?: bytes, compactionRatio?: 0..=1 }`.
    pub async fn open(name: String, options: JsValue) -> JsResult<WalnutStore> {
        let (options, lock_timeout_ms) = open_options(options).map_err(js_err)?;
        let volume = OpfsVolume::open(&name, lock_timeout_ms).await.map_err(js_err)?;
        // On failure the volume is dropped with the store, which closes its handles.
        Store::open(volume, options).map(|s| WalnutStore::new(Backend::Opfs(s))).map_err(js_err)
    }

    /// Opens or creates the store whose files `host` keeps (a `VolumeHost`: see
    /// `docs/HOSTS.md`) and runs recovery, synchronously. Options as for `open`
    /// (`lockTimeoutMs` is the host's business and ignored here).
    ///
    /// Errors: `WalnutInvalidArgumentError` naming `host` when a method is missing, else as
    /// `open`. A failed open closes the host.
    #[wasm_bindgen(js_name = openHost)]
    pub fn open_host(host: JsValue, options: JsValue) -> JsResult<WalnutStore> {
        let host = check_host(&host).map_err(js_err)?;
        let opened = open_options(options).and_then(|(options, _)| {
            let volume = HostVolume::open(host.clone())?;
            Store::open(volume, options)
        });
        match opened {
            Ok(s) => Ok(WalnutStore::new(Backend::Host(s))),
            Err(e) => {
                // The open failed: its error is the one to report, not a failed close's.
                let _ = close_host(&host);
                Err(js_err(e))
            }
        }
    }

    /// Chunk size in force, bytes.
    #[wasm_bindgen(getter, js_name = chunkSize)]
    pub fn chunk_size(&self) -> usize {
        store!(self, |s| s.options()).chunk_size
    }

    /// The recovery report of this open.
    pub fn recovery(&self) -> JsResult<JsValue> {
        let r = store!(self, |s| s.recovery());
        to_js(&JsRecovery {
            committed: r.committed,
            discarded: r
                .discarded
                .iter()
                .map(|d| JsDiscarded { txn: d.txn, lsn: d.lsn, reason: d.reason.to_string() })
                .collect(),
            discarded_total: r.discarded_total,
            bytes_truncated: r.bytes_truncated,
            truncated_at: r.truncated_at.map(location),
            tail_reason: r.tail_reason.clone(),
            log_bytes: r.log_bytes,
            records: r.records,
            segments: r.segments,
            checkpoint_seq: r.checkpoint.map(|c| c.0),
            checkpoint_lsn: r.checkpoint.map(|c| c.1),
            checkpoints_rejected: r.checkpoints_rejected.clone(),
            segments_released: r.segments_released,
            entries_dropped: r.entries_dropped,
            millis: r.millis,
        })
    }

    /// Counters.
    pub fn stats(&self) -> JsResult<JsValue> {
        let s = store!(self, |s| s.stats());
        to_js(&JsStats {
            keys: s.keys,
            live_bytes: s.live_bytes,
            log_bytes: s.log_bytes,
            next_lsn: s.next_lsn,
            open_transactions: s.open_transactions,
            pending_commits: s.pending_commits,
            flushes: s.flushes,
            poisoned: s.poisoned,
            chunk_size: store!(self, |s| s.options()).chunk_size,
            segments: s.segments,
            dead_ratio: s.dead_ratio,
            last_checkpoint_lsn: s.last_checkpoint_lsn,
            checkpoints: s.checkpoints,
            compactions: s.compactions,
        })
    }

    /// Whole-value put; `strict` queues it for the committer (group commit: see
    /// `commitGroup`). Returns its ticket.
    /// In table `table` (a table id; absent: the default table); the sequence number it took
    /// is in `lastSeqs()`.
    pub fn put(
        &mut self,
        key: &[u8],
        key_is_string: bool,
        value: &[u8],
        strict: bool,
        table: Option<u32>,
    ) -> JsResult<f64> {
        let r = store!(self, mut |s| s.put_in(table.unwrap_or(0), key, key_is_string, value, durability(strict)));
        let ticket = store!(self, |s| s.last_ticket());
        self.written(r.map(|_| ticket_js(ticket)))
    }

    /// Appends `value` to table `table`'s queue under its next sequence number (in
    /// `lastSeqs()`); returns the ticket.
    pub fn append(&mut self, table: u32, value: &[u8], strict: bool) -> JsResult<f64> {
        let r = store!(self, mut |s| s.append(table, value, durability(strict)));
        let ticket = store!(self, |s| s.last_ticket());
        self.written(r.map(|_| ticket_js(ticket)))
    }

    /// The sequence numbers the commit at LSN `lsn` took, per table: `[table, first, last, ...]`
    /// (see `Store::commit_seqs`; `idStatus()` gives a remembered commit's LSN).
    #[wasm_bindgen(js_name = commitSeqs)]
    pub fn commit_seqs(&self, lsn: f64) -> Vec<f64> {
        store!(self, |s| s
            .commit_seqs(lsn as u64)
            .iter()
            .flat_map(|&(t, a, b)| [f64::from(t), a as f64, b as f64])
            .collect())
    }

    /// The sequence numbers the last write took, per table: `[table, first, last, ...]`.
    #[wasm_bindgen(js_name = lastSeqs)]
    pub fn last_seqs(&self) -> Vec<f64> {
        store!(self, |s| s.last_seqs().iter().flat_map(|&(t, a, b)| [f64::from(t), a as f64, b as f64]).collect())
    }

    /// Creates table `name` (flushed) or finds it; returns its id.
    #[wasm_bindgen(js_name = createTable)]
    pub fn create_table(&mut self, name: &str) -> JsResult<u32> {
        let r = store!(self, mut |s| s.create_table(name));
        self.written(r)
    }

    /// The id of table `name`, or `undefined`.
    #[wasm_bindgen(js_name = tableId)]
    pub fn table_id(&self, name: &str) -> Option<u32> {
        store!(self, |s| s.table(name).map(|t| t.id))
    }

    /// Drops table `name` (flushed); whether it existed.
    #[wasm_bindgen(js_name = dropTable)]
    pub fn drop_table(&mut self, name: &str) -> JsResult<bool> {
        self.settle();
        let r = store!(self, mut |s| s.drop_table(name));
        self.written(r)
    }

    /// Every table: `[{ id, name, lastSeq, flushedSeq, deletedUpTo }]`, the default table
    /// (id 0, name "") first. Settled first, as reads are.
    pub fn tables(&mut self) -> JsResult<JsValue> {
        self.settle();
        let tables: Vec<JsTable> = store!(self, |s| s.tables())
            .into_iter()
            .map(|t| JsTable {
                id: t.id,
                name: t.name,
                last_seq: t.last_seq as f64,
                flushed_seq: t.flushed_seq as f64,
                deleted_up_to: t.deleted_upto as f64,
            })
            .collect();
        to_js(&tables)
    }

    /// Persists table `table`'s flushed sequence number; returns the ticket.
    #[wasm_bindgen(js_name = markFlushed)]
    pub fn mark_flushed(&mut self, table: u32, seq: f64, strict: bool) -> JsResult<f64> {
        let seq = seq_arg(seq).map_err(js_err)?;
        let r = store!(self, mut |s| s.mark_flushed(table, seq, durability(strict)));
        let ticket = store!(self, |s| s.last_ticket());
        self.written(r.map(|()| ticket_js(ticket)))
    }

    /// Deletes table `table`'s queue entries at or below `seq`; returns the ticket (0 when
    /// the mark was there already and nothing was written).
    #[wasm_bindgen(js_name = deleteUpTo)]
    pub fn delete_up_to(&mut self, table: u32, seq: f64, strict: bool) -> JsResult<f64> {
        let seq = seq_arg(seq).map_err(js_err)?;
        let before = store!(self, |s| s.last_lsn());
        let r = store!(self, mut |s| s.delete_up_to(table, seq, durability(strict)));
        let wrote = store!(self, |s| s.last_lsn()) != before;
        let ticket = if wrote { ticket_js(store!(self, |s| s.last_ticket())) } else { 0.0 };
        self.written(r.map(|()| ticket))
    }

    /// Table `table`'s queue from `from`, at most `limit` entries: packed `[seq, size, ...]`
    /// (f64 pairs); the values are read with `openEntry`.
    #[wasm_bindgen(js_name = readQueue)]
    pub fn read_queue(&mut self, table: u32, from: f64, limit: Option<u32>) -> JsResult<Vec<f64>> {
        self.settle();
        let from = if from <= 0.0 { 0 } else { seq_arg(from).map_err(js_err)? };
        let entries = store!(self, |s| s.read(table, from, limit.map(|l| l as usize))).map_err(js_err)?;
        Ok(entries.iter().flat_map(|(seq, e)| [*seq as f64, e.size as f64]).collect())
    }

    /// Table `table`'s queue from `from`, at most `limit` entries, with their values, packed in
    /// one buffer (one call and one copy for a page of entries): per entry `seq` (f64 LE),
    /// `size` (f64 LE, bytes), then the value's bytes. Values are read whole: bound the memory
    /// with `limit` (or read large entries with `openEntry`).
    #[wasm_bindgen(js_name = readQueueValues)]
    pub fn read_queue_values(&mut self, table: u32, from: f64, limit: Option<u32>) -> JsResult<js_sys::Uint8Array> {
        self.settle();
        let from = if from <= 0.0 { 0 } else { seq_arg(from).map_err(js_err)? };
        let entries = store!(self, |s| s.read(table, from, limit.map(|l| l as usize))).map_err(js_err)?;
        let total: u64 = entries.iter().map(|(_, e)| 16 + e.size).sum();
        let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        for (seq, e) in &entries {
            out.extend_from_slice(&(*seq as f64).to_le_bytes());
            out.extend_from_slice(&(e.size as f64).to_le_bytes());
            for loc in &e.chunks {
                store!(self, |s| s.read_chunk(loc, &mut self.buf)).map_err(js_err)?;
                out.extend_from_slice(&self.buf);
            }
        }
        Ok(js_sys::Uint8Array::from(&out[..]))
    }

    /// Table `table`'s change feed after `since`, at most `limit` changes, packed: per change
    /// `seq` (f64 LE), `flags` (u8: bit 0 a delete, bit 1 current, bit 2 the key was a string),
    /// `size` (f64 LE), `key_len` (u32 LE), the key.
    pub fn changes(&mut self, table: u32, since: f64, limit: Option<u32>) -> JsResult<js_sys::Uint8Array> {
        self.settle();
        let since = if since <= 0.0 { 0 } else { seq_arg(since).map_err(js_err)? };
        let changes = store!(self, |s| s.changes(table, since, limit.map(|l| l as usize))).map_err(js_err)?;
        let mut out = Vec::with_capacity(changes.iter().map(|c| 21 + c.key.len()).sum());
        for c in changes {
            out.extend_from_slice(&(c.seq as f64).to_le_bytes());
            out.push(u8::from(c.delete) | u8::from(c.current) << 1 | u8::from(c.string_key) << 2);
            out.extend_from_slice(&(c.size as f64).to_le_bytes());
            out.extend_from_slice(&(c.key.len() as u32).to_le_bytes());
            out.extend_from_slice(&c.key);
        }
        Ok(js_sys::Uint8Array::from(&out[..]))
    }

    /// Opens a reader on table `table`'s queue entry `seq` (as `openReader`), or `undefined`.
    #[wasm_bindgen(js_name = openEntry)]
    pub fn open_entry(&mut self, table: u32, seq: f64) -> JsResult<JsValue> {
        let seq = seq_arg(seq).map_err(js_err)?;
        let key = crate::format::queue_key(table, seq);
        self.open_at(&key[crate::format::TABLE_PREFIX_LEN..], None, Some((table, seq)))
    }

    /// After every call that may write: tops the pool up, and turns the result into JS.
    fn written<T>(&self, r: Result<T, Error>) -> JsResult<T> {
        self.refill_pool();
        r.map_err(js_err)
    }

    /// Tops up the pool of pre-opened OPFS files in the background when it runs low, so that
    /// segment rotation and checkpoints never wait for the asynchronous file creation.
    fn refill_pool(&self) {
        let Backend::Opfs(store) = &self.store else { return };
        let volume = store.volume();
        if volume.needs_refill() {
            let refill = volume.refill();
            wasm_bindgen_futures::spawn_local(async move {
                // A failed refill leaves the pool short; the writer then keeps appending to
                // its tail segment, and the next write tries again.
                let _ = refill.await;
            });
        }
    }

    /// One step of compaction (at most one chunk copied): `"idle"` when there is nothing to
    /// compact, `"progress"`, or `"done"` when a round finished and released its segments.
    /// The worker calls it in a loop, giving way to other requests between steps, so no put
    /// waits for more than one chunk copy. (Compaction also runs by itself, one step per
    /// commit, once dead bytes pass `compactionRatio` of the log.)
    #[wasm_bindgen(js_name = compactStep)]
    pub fn compact_step(&mut self) -> JsResult<String> {
        let r = store!(self, mut |s| s.compact_step());
        Ok(match self.written(r)? {
            crate::CompactStep::Idle => "idle",
            crate::CompactStep::Progress => "progress",
            crate::CompactStep::Done => "done",
        }
        .to_string())
    }

    /// Tops the pool of pre-opened OPFS files up; resolves once it is full. The worker awaits
    /// it before `close()`, so the closing checkpoint can always get its file.
    #[wasm_bindgen(js_name = refillPool)]
    pub fn refill_pool_now(&self) -> js_sys::Promise {
        let Backend::Opfs(store) = &self.store else { return js_sys::Promise::resolve(&JsValue::UNDEFINED) };
        let refill = store.volume().refill();
        wasm_bindgen_futures::future_to_promise(
            async move { refill.await.map(|()| JsValue::UNDEFINED).map_err(js_err) },
        )
    }

    /// Writes a checkpoint now, so the next open replays nothing before it.
    pub fn checkpoint(&mut self) -> JsResult<()> {
        let r = store!(self, mut |s| s.checkpoint());
        self.written(r)
    }

    /// Deletes `key`: `{ existed, ticket }`, whether it existed (counting queued commits) and
    /// the ticket whose outcome decides the delete (its own commit's; a queued delete's when
    /// that one already removes the key; 0 when nothing does: the key was absent).
    pub fn delete(&mut self, key: &[u8], strict: bool, table: Option<u32>) -> JsResult<JsValue> {
        let r = store!(self, mut |s| s.delete_in(table.unwrap_or(0), key, durability(strict)));
        let ticket = ticket_js(store!(self, mut |s| s.last_ticket()));
        self.written(r).and_then(|existed| to_js(&JsDeleted { existed, ticket }))
    }

    /// Deletes every key in one transaction: `{ count, ticket }`, how many keys it deleted and
    /// the ticket of its commit (0 when the store was empty and nothing was written).
    pub fn clear(&mut self, strict: bool) -> JsResult<JsValue> {
        let r = store!(self, mut |s| s.clear(durability(strict)));
        let ticket = ticket_js(store!(self, |s| s.last_ticket()));
        self.written(r).and_then(|count| to_js(&JsCleared { count: count as f64, ticket }))
    }

    /// Begins a transaction; returns its id.
    pub fn begin(&mut self) -> JsResult<f64> {
        let r = store!(self, mut |s| s.begin());
        self.written(r.map(|t| t as f64))
    }

    /// Starts a value for `key` in `txn`.
    #[wasm_bindgen(js_name = txnPut)]
    pub fn txn_put(&mut self, txn: f64, key: &[u8], key_is_string: bool, table: Option<u32>) -> JsResult<()> {
        let r =
            txn_id(txn).and_then(|txn| store!(self, mut |s| s.txn_put_in(txn, table.unwrap_or(0), key, key_is_string)));
        self.written(r)
    }

    /// Starts a queue entry of table `table` in `txn` (a streamed append; its number is in
    /// `lastSeqs()` after the commit).
    #[wasm_bindgen(js_name = txnAppend)]
    pub fn txn_append(&mut self, txn: f64, table: u32) -> JsResult<()> {
        let r = txn_id(txn).and_then(|txn| store!(self, mut |s| s.txn_append(txn, table)));
        self.written(r)
    }

    /// Appends a chunk to the current value of `txn`. (A long upload rotates segments: the
    /// pool is topped up here too, so it never runs dry under one.)
    #[wasm_bindgen(js_name = txnChunk)]
    pub fn txn_chunk(&mut self, txn: f64, data: &[u8]) -> JsResult<()> {
        let r = txn_id(txn).and_then(|txn| store!(self, mut |s| s.txn_chunk(txn, data)));
        self.written(r)
    }

    /// Deletes `key` in `txn`.
    #[wasm_bindgen(js_name = txnDelete)]
    pub fn txn_delete(&mut self, txn: f64, key: &[u8], table: Option<u32>) -> JsResult<()> {
        let r = txn_id(txn).and_then(|txn| store!(self, mut |s| s.txn_delete_in(txn, table.unwrap_or(0), key)));
        self.written(r)
    }

    /// Commits `txn`; `strict` queues it for the committer. Returns its ticket.
    pub fn commit(&mut self, txn: f64, strict: bool) -> JsResult<f64> {
        let r = txn_id(txn).and_then(|txn| store!(self, mut |s| s.commit(txn, durability(strict))));
        self.written(r.map(ticket_js))
    }

    /// Commits `txn` under commit id `id` (1..=128 bytes): `{ committed, ticket }`. A new
    /// commit: `committed` false and its ticket. An id committed before: nothing is written,
    /// `txn` is aborted, `committed` true. An id queued before: `committed` false and that
    /// commit's ticket (its outcome is this one's).
    #[wasm_bindgen(js_name = commitWithId)]
    pub fn commit_with_id(&mut self, txn: f64, strict: bool, id: &[u8]) -> JsResult<JsValue> {
        let r = txn_id(txn).and_then(|txn| store!(self, mut |s| s.commit_with_id(txn, id, durability(strict))));
        let status = match self.written(r)? {
            IdCommit::Applied(t) => JsIdStatus { committed: false, ticket: ticket_js(t), lsn: 0.0 },
            IdCommit::Duplicate(status) => id_status_js(status),
        };
        to_js(&status)
    }

    /// A whole-value put under commit id `id`, in one call: `{ committed, ticket }` as
    /// `commitWithId` answers (the multi-tab leader writes another context's small puts so).
    #[wasm_bindgen(js_name = putWithId)]
    pub fn put_with_id(
        &mut self,
        key: &[u8],
        key_is_string: bool,
        value: &[u8],
        strict: bool,
        id: &[u8],
    ) -> JsResult<JsValue> {
        let r = store!(self, mut |s| s.put_with_id(key, key_is_string, value, id, durability(strict)));
        let status = match self.written(r)? {
            IdCommit::Applied(t) => JsIdStatus { committed: false, ticket: ticket_js(t), lsn: 0.0 },
            IdCommit::Duplicate(status) => id_status_js(status),
        };
        to_js(&status)
    }

    /// Begins an interactive transaction (see `txn.rs`); returns its id. Its streamed puts use
    /// `txnPut`/`txnChunk` with the same id.
    #[wasm_bindgen(js_name = txBegin)]
    pub fn tx_begin(&mut self) -> JsResult<f64> {
        let r = store!(self, mut |s| s.tx_begin());
        self.written(r.map(|t| t as f64))
    }

    /// The value of `key` as transaction `txn` sees it (its own write, else the committed
    /// value, remembered for the commit's check), or `undefined`. Throws `WalnutConflictError`
    /// if something it read before changed.
    #[wasm_bindgen(js_name = txGet)]
    pub fn tx_get(&mut self, txn: f64, key: &[u8], table: Option<u32>) -> JsResult<Option<js_sys::Uint8Array>> {
        let r = txn_id(txn).and_then(|txn| store!(self, mut |s| s.tx_get(txn, table.unwrap_or(0), key)));
        Ok(self.written(r)?.map(|v| js_sys::Uint8Array::from(&v[..])))
    }

    /// Keys of transaction `txn`'s view, packed as `keys` packs them; the range is remembered
    /// for the commit's check.
    #[wasm_bindgen(js_name = txKeys)]
    pub fn tx_keys(&mut self, txn: f64, options: JsValue, table: Option<u32>) -> JsResult<js_sys::Uint8Array> {
        let range = key_range(options)?;
        let r = txn_id(txn).and_then(|txn| store!(self, mut |s| s.tx_keys(txn, table.unwrap_or(0), &range)));
        Ok(pack_keys(self.written(r)?))
    }

    /// Notes that transaction `txn` read key `key` (or, without one, the range `options`) in
    /// table `name`, which does not exist: creating it and writing there before the commit
    /// makes the commit conflict. See `Store::tx_note_absent`.
    #[wasm_bindgen(js_name = txNoteAbsent)]
    pub fn tx_note_absent(&mut self, txn: f64, name: &str, key: Option<Vec<u8>>, options: JsValue) -> JsResult<()> {
        let read = match key {
            Some(key) => AbsentRead::Key(key),
            None => AbsentRead::Range(key_range(options)?),
        };
        let r = txn_id(txn).and_then(|txn| store!(self, mut |s| s.tx_note_absent(txn, name, read)));
        self.written(r)
    }

    /// Puts a whole value in transaction `txn`.
    #[wasm_bindgen(js_name = txPut)]
    pub fn tx_put(
        &mut self,
        txn: f64,
        key: &[u8],
        key_is_string: bool,
        value: &[u8],
        table: Option<u32>,
    ) -> JsResult<()> {
        let r = txn_id(txn)
            .and_then(|txn| store!(self, mut |s| s.tx_put(txn, table.unwrap_or(0), key, key_is_string, value)));
        self.written(r)
    }

    /// Opens a nested transaction in `txn`; returns the depth.
    #[wasm_bindgen(js_name = txNest)]
    pub fn tx_nest(&mut self, txn: f64) -> JsResult<u32> {
        let r = txn_id(txn).and_then(|txn| store!(self, mut |s| s.tx_nest(txn)));
        self.written(r.map(|d| d as u32))
    }

    /// Ends the innermost nested transaction of `txn`: commits it into its parent (`keep`) or
    /// rolls it back. Returns the depth left.
    #[wasm_bindgen(js_name = txEnd)]
    pub fn tx_end(&mut self, txn: f64, keep: bool) -> JsResult<u32> {
        let r =
            txn_id(txn).and_then(|txn| store!(self, mut |s| if keep { s.tx_release(txn) } else { s.tx_rollback(txn) }));
        self.written(r.map(|d| d as u32))
    }

    /// Commits transaction `txn` (under commit id `id` if not empty): `{ applied, ticket, lsn }`.
    /// Applied: `ticket` to settle and `lsn` its version. A duplicate id: `applied` false,
    /// nothing written, `lsn` the earlier commit's (0 while it is queued, under `ticket`).
    /// Throws `WalnutConflictError` (the transaction is aborted) if something it read changed.
    #[wasm_bindgen(js_name = txCommit)]
    pub fn tx_commit(&mut self, txn: f64, strict: bool, id: &[u8]) -> JsResult<JsValue> {
        let id = (!id.is_empty()).then_some(id);
        let r = txn_id(txn).and_then(|txn| store!(self, mut |s| s.tx_commit(txn, id, durability(strict))));
        let out = match self.written(r)? {
            TxCommit::Applied { lsn, ticket } => {
                JsTxCommit { applied: true, ticket: ticket_js(ticket), lsn: lsn as f64 }
            }
            TxCommit::Duplicate(IdStatus::Committed { lsn }) => {
                JsTxCommit { applied: false, ticket: 0.0, lsn: lsn as f64 }
            }
            TxCommit::Duplicate(IdStatus::Queued(t)) => JsTxCommit { applied: false, ticket: ticket_js(t), lsn: 0.0 },
        };
        to_js(&out)
    }

    /// Aborts transaction `txn` and everything nested in it.
    #[wasm_bindgen(js_name = txAbort)]
    pub fn tx_abort(&mut self, txn: f64) -> JsResult<()> {
        let r = txn_id(txn).and_then(|txn| store!(self, mut |s| s.tx_abort(txn)));
        self.written(r)
    }

    /// The version of `key` (the LSN of the record that made its value), or `undefined` if
    /// absent. Settled first.
    #[wasm_bindgen(js_name = versionOf)]
    pub fn version_of(&mut self, key: &[u8], table: Option<u32>) -> JsResult<Option<f64>> {
        let r = store!(self, mut |s| s.version_of(table.unwrap_or(0), key));
        Ok(self.written(r)?.map(|v| v as f64))
    }

    /// Checks versions: `checks` is `[table, key, version]` triples flattened into an array
    /// (`version` -1: the key must be absent). Throws `WalnutConflictError` naming the first
    /// key that differs. Settled first.
    #[wasm_bindgen(js_name = checkVersions)]
    pub fn check_versions(&mut self, checks: js_sys::Array) -> JsResult<()> {
        let mut owned: Vec<(u32, Vec<u8>, Option<u64>)> = Vec::new();
        let n = checks.length();
        let mut i = 0;
        while i + 2 < n {
            let table = checks.get(i).as_f64().unwrap_or(-1.0);
            let key = js_sys::Uint8Array::new(&checks.get(i + 1)).to_vec();
            let version = checks.get(i + 2).as_f64().unwrap_or(-2.0);
            if !(0.0..=f64::from(u32::MAX)).contains(&table) || table.fract() != 0.0 {
                return Err(js_err(Error::invalid("checks", "a table id is not a whole number")));
            }
            let version = match version {
                -1.0 => None,
                v if v >= 0.0 && v.fract() == 0.0 && v <= 9_007_199_254_740_991.0 => Some(v as u64),
                _ => return Err(js_err(Error::invalid("checks", "a version must be a whole number or null"))),
            };
            owned.push((table as u32, key, version));
            i += 3;
        }
        let borrowed: Vec<(u32, &[u8], Option<u64>)> = owned.iter().map(|(t, k, v)| (*t, &k[..], *v)).collect();
        let r = store!(self, mut |s| s.check_versions(&borrowed));
        self.written(r)
    }

    /// Begins an export (docs/FORMAT.md section 12): the snapshot is taken now and its values
    /// pinned; returns its id for `exportNext`. Settled first.
    #[wasm_bindgen(js_name = exportBegin)]
    pub fn export_begin(&mut self) -> JsResult<u32> {
        let e = store!(self, mut |s| crate::export::Export::begin(s)).map_err(js_err)?;
        let id = self.next_reader;
        self.next_reader = self.next_reader.wrapping_add(1).max(1);
        self.exports.insert(id, e);
        Ok(id)
    }

    /// The next bytes of export `id`: its records up to about `max_bytes` (at least one), or
    /// `undefined` at its end, when the export is finished (its pins released). One copy out of
    /// wasm per call, however many records it holds.
    #[wasm_bindgen(js_name = exportNext)]
    pub fn export_next(&mut self, id: u32, max_bytes: u32) -> JsResult<Option<js_sys::Uint8Array>> {
        let Some(mut e) = self.exports.remove(&id) else {
            return Err(js_err(Error::invalid("export", format!("no export {id} is under way"))));
        };
        let mut out: Vec<u8> = Vec::new();
        let mut ended = false;
        while out.len() < max_bytes.max(1) as usize {
            match store!(self, |s| e.next(s)) {
                Ok(Some(piece)) => out.extend_from_slice(&piece),
                Ok(None) => {
                    ended = true;
                    break;
                }
                Err(err) => {
                    store!(self, mut |s| e.finish(s));
                    return Err(js_err(err));
                }
            }
        }
        if ended {
            store!(self, mut |s| e.finish(s));
        } else {
            self.exports.insert(id, e);
        }
        Ok((!out.is_empty()).then(|| js_sys::Uint8Array::from(&out[..])))
    }

    /// Gives up export `id` (its pins are released).
    #[wasm_bindgen(js_name = exportCancel)]
    pub fn export_cancel(&mut self, id: u32) {
        if let Some(e) = self.exports.remove(&id) {
            store!(self, mut |s| e.finish(s));
        }
    }

    /// Starts an import of an export file into this store, which must be empty (see
    /// `walnut::export::Import`). One at a time. On OPFS, `await refillPool()` first if it
    /// throws `WalnutIoError` for want of a free file.
    ///
    /// Errors: `WalnutInvalidArgumentError` naming `store` (not empty, or an import under way).
    #[wasm_bindgen(js_name = importBegin)]
    pub fn import_begin(&mut self) -> JsResult<()> {
        if self.import.is_some() {
            return Err(js_err(Error::invalid("store", "an import is under way in this store")));
        }
        self.import = Some(store!(self, mut |s| crate::export::Import::begin(s)).map_err(js_err)?);
        Ok(())
    }

    /// The import's next bytes (any length). On an error the import is given up.
    #[wasm_bindgen(js_name = importWrite)]
    pub fn import_write(&mut self, bytes: &[u8]) -> JsResult<()> {
        let Some(mut i) = self.import.take() else {
            return Err(js_err(Error::invalid("import", "no import is under way")));
        };
        match store!(self, mut |s| i.write(s, bytes)) {
            Ok(()) => {
                self.import = Some(i);
                Ok(())
            }
            Err(e) => {
                store!(self, mut |s| i.cancel(s));
                Err(js_err(e))
            }
        }
    }

    /// Checks the whole file and installs it: returns `{ values, bytes }` (entries now held,
    /// bytes imported). Errors: `WalnutCorruptionError` naming the offset where the file is cut
    /// or damaged, `WalnutInvalidArgumentError` naming `store` if it was written meanwhile; the
    /// store is then as it was. Open value readers end (their values are gone).
    #[wasm_bindgen(js_name = importFinish)]
    pub fn import_finish(&mut self) -> JsResult<JsValue> {
        let Some(i) = self.import.take() else {
            return Err(js_err(Error::invalid("import", "no import is under way")));
        };
        let done = store!(self, mut |s| i.finish(s)).map_err(js_err)?;
        self.readers.clear();
        to_js(&JsImported { values: done.values as f64, bytes: done.bytes as f64 })
    }

    /// Gives the import under way up (nothing if none).
    #[wasm_bindgen(js_name = importCancel)]
    pub fn import_cancel(&mut self) {
        if let Some(i) = self.import.take() {
            store!(self, mut |s| i.cancel(s));
        }
    }

    /// Checks that this store, opened on an export file, holds the whole export (see
    /// `walnut::export::check_import`): throws `WalnutCorruptionError` naming the offset where it
    /// is cut or damaged.
    #[wasm_bindgen(js_name = checkImport)]
    pub fn check_import(&self) -> JsResult<()> {
        store!(self, |s| crate::export::check_import(s)).map_err(js_err)
    }

    /// Where the commit with id `id` stands: `undefined` if unknown, else `{ committed, ticket }`
    /// as [`WalnutStore::commit_with_id`] answers for a duplicate.
    #[wasm_bindgen(js_name = idStatus)]
    pub fn id_status(&self, id: &[u8]) -> JsResult<JsValue> {
        match store!(self, |s| s.id_status(id)) {
            Some(status) => to_js(&id_status_js(status)),
            None => Ok(JsValue::UNDEFINED),
        }
    }

    /// The LSN of the last commit made (the version it wrote; change events carry it).
    #[wasm_bindgen(getter, js_name = lastLsn)]
    pub fn last_lsn(&self) -> f64 {
        store!(self, |s| s.last_lsn()) as f64
    }

    /// Aborts `txn` (writes ABORT). A transaction a quota rollback dropped aborts quietly.
    pub fn abort(&mut self, txn: f64) -> JsResult<()> {
        let r = txn_id(txn).and_then(|txn| store!(self, mut |s| s.abort(txn)));
        self.written(r)
    }

    /// Whether commits wait for the committer.
    #[wasm_bindgen(js_name = hasPending)]
    pub fn has_pending(&self) -> bool {
        store!(self, |s| s.has_pending())
    }

    /// The committer's flush (group commit): flushes once, then returns, for each ticket in
    /// `tickets` (from `put`, `delete` or `commit`), `undefined` if that commit is durable or
    /// the error that failed it. A failure that another call's flush met (a relaxed write, a
    /// read, a checkpoint, a compaction step) is reported here, to the commits it failed.
    #[wasm_bindgen(js_name = commitGroup)]
    pub fn commit_group(&mut self, tickets: &[f64]) -> js_sys::Array {
        let flushed = store!(self, mut |s| s.sync());
        self.refill_pool();
        tickets
            .iter()
            .map(|&t| {
                let outcome = if t >= 1.0 && t.fract() == 0.0 && t < 9_007_199_254_740_992.0 {
                    store!(self, mut |s| s.outcome(Ticket(t as u64)))
                } else {
                    Outcome::Failed(Error::invalid("tickets", format!("{t} is not a ticket")))
                };
                match outcome {
                    Outcome::Committed => JsValue::UNDEFINED,
                    Outcome::Failed(e) => js_err(e),
                    Outcome::Queued => {
                        js_err(flushed.clone().err().unwrap_or_else(|| Error::io("sync", "left queued")))
                    }
                }
            })
            .collect()
    }

    /// Flushes: makes every commit so far durable (relaxed ones too). Throws if this flush
    /// failed, or an earlier one failed commits that no `commitGroup` or `sync` reported yet.
    pub fn sync(&mut self) -> JsResult<()> {
        let r = store!(self, mut |s| s.sync());
        self.written(r)
    }

    /// Reads observe every earlier commit: the committer flushes queued commits first. Its
    /// failure is not the read's: it stays with the commits it failed (see `commitGroup`),
    /// and the read sees what is committed.
    fn settle(&mut self) {
        let _ = store!(self, mut |s| s.settle());
        self.refill_pool();
    }

    /// Whether `key` has a committed value.
    pub fn has(&mut self, key: &[u8], table: Option<u32>) -> JsResult<bool> {
        self.settle();
        store!(self, mut |s| s.has_in(table.unwrap_or(0), key)).map_err(js_err)
    }

    /// The whole value of `key` (settled first, as every read), or `undefined`. Holds the
    /// value in wasm memory and copies it out once: for values up to a few chunks; walk larger
    /// ones with `openReader`.
    pub fn get(&mut self, key: &[u8], table: Option<u32>) -> JsResult<Option<js_sys::Uint8Array>> {
        self.settle();
        let Some(entry) = store!(self, |s| s.entry_in(table.unwrap_or(0), key)).map_err(js_err)? else {
            return Ok(None);
        };
        self.value_bytes(&entry).map(Some)
    }

    /// `entry`'s value, copied out of wasm memory once: a value of one chunk (every small
    /// value) is read into the reused buffer; longer ones are gathered first.
    fn value_bytes(&mut self, entry: &Entry) -> JsResult<js_sys::Uint8Array> {
        if let [loc] = entry.chunks[..] {
            store!(self, |s| s.read_chunk(&loc, &mut self.buf)).map_err(js_err)?;
            return Ok(js_sys::Uint8Array::from(&self.buf[..]));
        }
        let value = store!(self, |s| s.value_of(entry)).map_err(js_err)?;
        Ok(js_sys::Uint8Array::from(&value[..]))
    }

    /// A small get in one call (the page's `get()` of a small value crosses into wasm once
    /// instead of three times): the value of `key` as a `Uint8Array` if it is at most `max`
    /// bytes long, its size in bytes (a number) if it is longer (walk it with `openReader`),
    /// or `undefined` if absent. Settled first, as every read.
    #[wasm_bindgen(js_name = getUpTo)]
    pub fn get_up_to(&mut self, key: &[u8], table: Option<u32>, max: f64) -> JsResult<JsValue> {
        self.settle();
        let Some(entry) = store!(self, |s| s.entry_in(table.unwrap_or(0), key)).map_err(js_err)? else {
            return Ok(JsValue::UNDEFINED);
        };
        if entry.size as f64 > max {
            return Ok(JsValue::from_f64(entry.size as f64));
        }
        Ok(self.value_bytes(&entry)?.into())
    }

    /// Snapshots the value's chunk locations: `{ id, size }`, or `undefined` if absent.
    #[wasm_bindgen(js_name = openReader)]
    pub fn open_reader(&mut self, key: &[u8], table: Option<u32>) -> JsResult<JsValue> {
        self.open_at(key, table, None)
    }

    /// A reader on `key` of `table`, or on queue entry `entry` (table, seq).
    fn open_at(&mut self, key: &[u8], table: Option<u32>, entry: Option<(u32, u64)>) -> JsResult<JsValue> {
        self.settle();
        let found = match entry {
            Some((t, seq)) => store!(self, |s| s.read(t, seq, Some(1)))
                .map_err(js_err)?
                .into_iter()
                .find(|(n, _)| *n == seq)
                .map(|(_, e)| e),
            None => store!(self, mut |s| s.entry_in(table.unwrap_or(0), key)).map_err(js_err)?,
        };
        let Some(entry) = found else { return Ok(JsValue::UNDEFINED) };
        let (chunks, size) = (entry.chunks.clone(), entry.size);
        store!(self, mut |s| s.pin(&chunks));
        let id = self.next_reader;
        self.next_reader = self.next_reader.wrapping_add(1).max(1);
        self.readers.insert(id, Reader { chunks, next: 0 });
        to_js(&JsReader { id, size })
    }

    /// The reader's next chunk (CRC-checked), or `undefined` at the end (which also closes it).
    #[wasm_bindgen(js_name = readNext)]
    pub fn read_next(&mut self, id: u32) -> JsResult<Option<js_sys::Uint8Array>> {
        if !self.next_chunk(id)? {
            return Ok(None);
        }
        Ok(Some(js_sys::Uint8Array::from(&self.buf[..])))
    }

    /// As `readNext`, into `target` instead of a new buffer, so that a stream read back with
    /// a BYOB reader reuses its buffers (one copy, out of wasm memory; nothing allocated): the
    /// chunk's length in bytes (a number), written from `target[0]`; the chunk as a new
    /// `Uint8Array` if it is longer than `target` (chunks keep the size they were written with,
    /// which may exceed today's `chunkSize`); or `undefined` at the end (which also closes the
    /// reader).
    #[wasm_bindgen(js_name = readNextInto)]
    pub fn read_next_into(&mut self, id: u32, target: &js_sys::Uint8Array) -> JsResult<JsValue> {
        if !self.next_chunk(id)? {
            return Ok(JsValue::UNDEFINED);
        }
        let len = self.buf.len() as u32;
        if len > target.length() {
            return Ok(js_sys::Uint8Array::from(&self.buf[..]).into());
        }
        target.subarray(0, len).copy_from(&self.buf);
        Ok(JsValue::from_f64(f64::from(len)))
    }

    /// Reads reader `id`'s next chunk into `self.buf`: false at the end (the reader closed).
    fn next_chunk(&mut self, id: u32) -> JsResult<bool> {
        let reader = self
            .readers
            .get_mut(&id)
            .ok_or_else(|| js_err(Error::invalid("id", format!("reader {id} is not open"))))?;
        let Some(loc) = reader.chunks.get(reader.next).copied() else {
            self.close_reader(id);
            return Ok(false);
        };
        reader.next += 1;
        store!(self, mut |s| s.read_chunk(&loc, &mut self.buf)).map_err(js_err)?;
        Ok(true)
    }

    /// Drops a reader.
    #[wasm_bindgen(js_name = closeReader)]
    pub fn close_reader(&mut self, id: u32) {
        if let Some(reader) = self.readers.remove(&id) {
            store!(self, mut |s| s.unpin(&reader.chunks));
        }
    }

    /// Keys in bytewise order, packed into one buffer (one object and one buffer per key cost
    /// more than the scan): for each key, `key_len` (u32 LE), `flags` (u8, bit 0: the key was
    /// written as a string), `size` (the value's length in bytes, f64 LE), then the key bytes.
    pub fn keys(&mut self, options: JsValue, table: Option<u32>) -> JsResult<js_sys::Uint8Array> {
        self.settle();
        let range = key_range(options)?;
        let keys = store!(self, mut |s| s.keys_in(table.unwrap_or(0), &range)).map_err(js_err)?;
        Ok(pack_keys(keys))
    }

    /// Syncs queued commits and releases the OPFS handle.
    pub fn close(&mut self) -> JsResult<()> {
        let r = store!(self, mut |s| s.close());
        self.readers.clear();
        let released = match &self.store {
            Backend::Opfs(s) => {
                s.volume().close();
                Ok(())
            }
            Backend::Host(s) => s.volume().close(),
        };
        r.and(released).map_err(js_err)
    }
}
