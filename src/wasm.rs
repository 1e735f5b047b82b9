//! The wasm-bindgen binding used by `www/worker.js`; its contract is `docs/WORKER_API.md`.
//! Options, stats and reports cross with serde-wasm-bindgen; errors become JS `Error`s whose
//! `name` is [`Error::js_name`].

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

use crate::error::Error;
use crate::index::{ChunkLoc, KeyRange};
use crate::storage::opfs::OpfsVolume;
use crate::store::{Durability, Options, Store, TxnId};

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

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OpenOptions {
    chunk_size: Option<usize>,
    direct_write_threshold: Option<usize>,
    lock_timeout_ms: Option<u32>,
    segment_size: Option<u64>,
    checkpoint_bytes: Option<u64>,
    compaction_ratio: Option<f64>,
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
    truncated_at: Option<u64>,
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
    poisoned: bool,
    chunk_size: usize,
    segments: u64,
    dead_ratio: f64,
    last_checkpoint_lsn: u64,
    checkpoints: u64,
    compactions: u64,
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

/// A store on OPFS, for the dedicated worker. See `docs/WORKER_API.md`.
#[wasm_bindgen]
pub struct WalnutStore {
    store: Store<OpfsVolume>,
    readers: HashMap<u32, Reader>,
    next_reader: u32,
    buf: Vec<u8>,
}

#[wasm_bindgen]
impl WalnutStore {
    /// Opens or creates the store `name` in OPFS and runs recovery. Options:
    /// `{ chunkSize?: bytes, directWriteThreshold?: bytes, lockTimeoutMs?: ms,
    ///    segmentSize?: bytes, checkpointBytes?: bytes, compactionRatio?: 0..=1 }`.
    pub async fn open(name: String, options: JsValue) -> JsResult<WalnutStore> {
        let o: OpenOptions = if options.is_undefined() || options.is_null() {
            OpenOptions::default()
        } else {
            serde_wasm_bindgen::from_value(options).map_err(|e| js_err(Error::invalid("options", e.to_string())))?
        };
        let d = Options::default();
        let options = Options {
            chunk_size: o.chunk_size.unwrap_or(d.chunk_size),
            direct_write_threshold: o.direct_write_threshold.unwrap_or(d.direct_write_threshold),
            segment_size: o.segment_size.unwrap_or(d.segment_size),
            checkpoint_bytes: o.checkpoint_bytes.unwrap_or(d.checkpoint_bytes),
            compaction_ratio: o.compaction_ratio.unwrap_or(d.compaction_ratio),
            ..d
        };
        options.validate().map_err(js_err)?;
        let volume = OpfsVolume::open(&name, o.lock_timeout_ms.unwrap_or(5000)).await.map_err(js_err)?;
        match Store::open(volume, options) {
            Ok(store) => Ok(WalnutStore { store, readers: HashMap::new(), next_reader: 1, buf: Vec::new() }),
            // The volume was dropped with the failed open, which closed its handles.
            Err(e) => Err(js_err(e)),
        }
    }

    /// Chunk size in force, bytes.
    #[wasm_bindgen(getter, js_name = chunkSize)]
    pub fn chunk_size(&self) -> usize {
        self.store.options().chunk_size
    }

    /// The recovery report of this open.
    pub fn recovery(&self) -> JsResult<JsValue> {
        let r = self.store.recovery();
        to_js(&JsRecovery {
            committed: r.committed,
            discarded: r
                .discarded
                .iter()
                .map(|d| JsDiscarded { txn: d.txn, lsn: d.lsn, reason: d.reason.to_string() })
                .collect(),
            discarded_total: r.discarded_total,
            bytes_truncated: r.bytes_truncated,
            truncated_at: r.truncated_at,
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
        let s = self.store.stats();
        to_js(&JsStats {
            keys: s.keys,
            live_bytes: s.live_bytes,
            log_bytes: s.log_bytes,
            next_lsn: s.next_lsn,
            open_transactions: s.open_transactions,
            pending_commits: s.pending_commits,
            poisoned: s.poisoned,
            chunk_size: self.store.options().chunk_size,
            segments: s.segments,
            dead_ratio: s.dead_ratio,
            last_checkpoint_lsn: s.last_checkpoint_lsn,
            checkpoints: s.checkpoints,
            compactions: s.compactions,
        })
    }

    /// Whole-value put; `strict` defers visibility to the next `sync()` (group commit).
    pub fn put(&mut self, key: &[u8], key_is_string: bool, value: &[u8], strict: bool) -> JsResult<()> {
        let r = self.store.put_flagged(key, key_is_string, value, durability(strict)).map_err(js_err);
        self.refill_pool();
        r
    }

    /// Tops up the pool of pre-opened OPFS files in the background when it runs low, so that
    /// segment rotation and checkpoints never wait for the asynchronous file creation.
    fn refill_pool(&self) {
        let volume = self.store.volume();
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
        let r = self.store.compact_step().map_err(js_err);
        self.refill_pool();
        Ok(match r? {
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
        let refill = self.store.volume().refill();
        wasm_bindgen_futures::future_to_promise(
            async move { refill.await.map(|()| JsValue::UNDEFINED).map_err(js_err) },
        )
    }

    /// Writes a checkpoint now, so the next open replays nothing before it.
    pub fn checkpoint(&mut self) -> JsResult<()> {
        let r = self.store.checkpoint().map_err(js_err);
        self.refill_pool();
        r
    }

    /// Deletes `key`; returns whether it existed.
    pub fn delete(&mut self, key: &[u8], strict: bool) -> JsResult<bool> {
        self.store.delete(key, durability(strict)).map_err(js_err)
    }

    /// Begins a transaction; returns its id.
    pub fn begin(&mut self) -> JsResult<f64> {
        self.store.begin().map(|t| t as f64).map_err(js_err)
    }

    /// Starts a value for `key` in `txn`.
    #[wasm_bindgen(js_name = txnPut)]
    pub fn txn_put(&mut self, txn: f64, key: &[u8], key_is_string: bool) -> JsResult<()> {
        let txn = txn_id(txn).map_err(js_err)?;
        self.store.txn_put(txn, key, key_is_string).map_err(js_err)
    }

    /// Appends a chunk to the current value of `txn`.
    #[wasm_bindgen(js_name = txnChunk)]
    pub fn txn_chunk(&mut self, txn: f64, data: &[u8]) -> JsResult<()> {
        let txn = txn_id(txn).map_err(js_err)?;
        self.store.txn_chunk(txn, data).map_err(js_err)
    }

    /// Deletes `key` in `txn`.
    #[wasm_bindgen(js_name = txnDelete)]
    pub fn txn_delete(&mut self, txn: f64, key: &[u8]) -> JsResult<()> {
        let txn = txn_id(txn).map_err(js_err)?;
        self.store.txn_delete(txn, key).map_err(js_err)
    }

    /// Commits `txn`; `strict` defers visibility to the next `sync()`.
    pub fn commit(&mut self, txn: f64, strict: bool) -> JsResult<()> {
        let txn = txn_id(txn).map_err(js_err)?;
        let r = self.store.commit(txn, durability(strict)).map(drop).map_err(js_err);
        self.refill_pool();
        r
    }

    /// Aborts `txn` (writes ABORT).
    pub fn abort(&mut self, txn: f64) -> JsResult<()> {
        let txn = txn_id(txn).map_err(js_err)?;
        self.store.abort(txn).map_err(js_err)
    }

    /// Whether group commits wait for `sync()`.
    #[wasm_bindgen(js_name = hasPending)]
    pub fn has_pending(&self) -> bool {
        self.store.has_pending()
    }

    /// Writes, flushes once, and makes every queued commit visible.
    pub fn sync(&mut self) -> JsResult<()> {
        let r = self.store.sync().map_err(js_err);
        self.refill_pool();
        r
    }

    /// Reads observe every earlier commit: flush queued group commits first.
    fn settle(&mut self) -> JsResult<()> {
        if self.store.has_pending() {
            self.store.sync().map_err(js_err)?;
        }
        Ok(())
    }

    /// Whether `key` has a committed value.
    pub fn has(&mut self, key: &[u8]) -> JsResult<bool> {
        self.settle()?;
        self.store.has(key).map_err(js_err)
    }

    /// Snapshots the value's chunk locations: `{ id, size }`, or `undefined` if absent.
    #[wasm_bindgen(js_name = openReader)]
    pub fn open_reader(&mut self, key: &[u8]) -> JsResult<JsValue> {
        self.settle()?;
        let Some(entry) = self.store.entry(key).map_err(js_err)? else { return Ok(JsValue::UNDEFINED) };
        let (chunks, size) = (entry.chunks.clone(), entry.size);
        self.store.pin(&chunks);
        let id = self.next_reader;
        self.next_reader = self.next_reader.wrapping_add(1).max(1);
        self.readers.insert(id, Reader { chunks, next: 0 });
        to_js(&JsReader { id, size })
    }

    /// The reader's next chunk (CRC-checked), or `undefined` at the end (which also closes it).
    #[wasm_bindgen(js_name = readNext)]
    pub fn read_next(&mut self, id: u32) -> JsResult<Option<js_sys::Uint8Array>> {
        let reader = self
            .readers
            .get_mut(&id)
            .ok_or_else(|| js_err(Error::invalid("id", format!("reader {id} is not open"))))?;
        let Some(loc) = reader.chunks.get(reader.next).copied() else {
            self.close_reader(id);
            return Ok(None);
        };
        reader.next += 1;
        self.store.read_chunk(&loc, &mut self.buf).map_err(js_err)?;
        Ok(Some(js_sys::Uint8Array::from(&self.buf[..])))
    }

    /// Drops a reader.
    #[wasm_bindgen(js_name = closeReader)]
    pub fn close_reader(&mut self, id: u32) {
        if let Some(reader) = self.readers.remove(&id) {
            self.store.unpin(&reader.chunks);
        }
    }

    /// Keys in bytewise order, packed into one buffer (one object and one buffer per key cost
    /// more than the scan): for each key, `key_len` (u32 LE), `flags` (u8, bit 0: the key was
    /// written as a string), `size` (the value's length in bytes, f64 LE), then the key bytes.
    pub fn keys(&mut self, options: JsValue) -> JsResult<js_sys::Uint8Array> {
        self.settle()?;
        let o: KeysOptions = if options.is_undefined() || options.is_null() {
            KeysOptions::default()
        } else {
            serde_wasm_bindgen::from_value(options).map_err(|e| js_err(Error::invalid("options", e.to_string())))?
        };
        let range = KeyRange {
            prefix: o.prefix,
            start: o.start,
            end: o.end,
            limit: o.limit,
            reverse: o.reverse.unwrap_or(false),
        };
        let keys = self.store.keys(&range).map_err(js_err)?;
        let mut out = Vec::with_capacity(keys.iter().map(|k| 13 + k.key.len()).sum());
        for k in keys {
            // Keys are at most MAX_KEY_LEN (65535) bytes.
            out.extend_from_slice(&(k.key.len() as u32).to_le_bytes());
            out.push(u8::from(k.string_key));
            out.extend_from_slice(&(k.size as f64).to_le_bytes());
            out.extend_from_slice(&k.key);
        }
        Ok(js_sys::Uint8Array::from(&out[..]))
    }

    /// Syncs queued commits and releases the OPFS handle.
    pub fn close(&mut self) -> JsResult<()> {
        let r = self.store.close();
        self.readers.clear();
        self.store.volume().close();
        r.map_err(js_err)
    }
}
