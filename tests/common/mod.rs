//! Test support shared by the native suites: backends every test body runs on (okaywal's
//! habit), a storage wrapper that fails on purpose, and a builder of raw logs for crafting
//! broken chains.
#![allow(dead_code)]

#[cfg(not(target_arch = "wasm32"))]
use std::path::PathBuf;

use walnut::format::{CommitPayload, FileHeader, Kind, RecordHeader, FILE_HEADER_LEN, RECORD_HEADER_LEN};
#[cfg(not(target_arch = "wasm32"))]
use walnut::FileStorage;
use walnut::{MemoryStorage, Options, Storage, Store};

/// A place a log lives, which can be reopened, read and rewritten as raw bytes.
pub trait Backend {
    type S: Storage;
    fn fresh() -> Self;
    fn storage(&self) -> Self::S;
    fn bytes(&self) -> Vec<u8>;
    fn set_bytes(&self, bytes: &[u8]);
}

pub struct Mem(MemoryStorage);

impl Backend for Mem {
    type S = MemoryStorage;
    fn fresh() -> Self {
        Mem(MemoryStorage::new())
    }
    fn storage(&self) -> MemoryStorage {
        self.0.clone()
    }
    fn bytes(&self) -> Vec<u8> {
        self.0.to_vec()
    }
    fn set_bytes(&self, bytes: &[u8]) {
        let mut s = self.0.clone();
        s.truncate(0).unwrap();
        s.write_at(bytes, 0).unwrap();
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub struct Disk {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

#[cfg(not(target_arch = "wasm32"))]
impl Backend for Disk {
    type S = FileStorage;
    fn fresh() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.log");
        Disk { _dir: dir, path }
    }
    fn storage(&self) -> FileStorage {
        FileStorage::open(&self.path).unwrap()
    }
    fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap_or_default()
    }
    fn set_bytes(&self, bytes: &[u8]) {
        std::fs::write(&self.path, bytes).unwrap();
    }
}

/// Runs each named generic test body on every backend: memory and file natively; memory
/// and OPFS in the browser (in a dedicated worker).
#[cfg(not(target_arch = "wasm32"))]
#[macro_export]
macro_rules! every_backend {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $( #[test] fn $name() { super::$name::<$crate::common::Mem>() } )*
        }
        mod file {
            $( #[test] fn $name() { super::$name::<$crate::common::Disk>() } )*
        }
    };
}

/// Runs generic body `$body` (a function taking `reopen`) on each multi-file volume: a store in
/// memory and one in a directory (the native `DirVolume`), opened with `$opts`. `reopen(None)`
/// opens the store (empty the first time), `reopen(Some(s))` closes `s` and opens its files again.
#[cfg(not(target_arch = "wasm32"))]
#[macro_export]
macro_rules! on_every_volume {
    ($body:ident, $opts:expr) => {{
        let opts = $opts;
        $body::<walnut::storage::MemoryVolume>(&mut |s: Option<walnut::Store<walnut::storage::MemoryVolume>>| {
            let v = s.map(walnut::Store::into_volume).unwrap_or_default();
            walnut::Store::open(v, opts.clone()).unwrap()
        });
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        $body::<walnut::DirVolume>(&mut |s: Option<walnut::Store<walnut::DirVolume>>| {
            drop(s);
            walnut::Store::open(walnut::DirVolume::open(&dir).unwrap(), opts.clone()).unwrap()
        });
    }};
}

#[cfg(target_arch = "wasm32")]
#[macro_export]
macro_rules! every_backend {
    ($($name:ident),* $(,)?) => {
        mod memory {
            use wasm_bindgen_test::wasm_bindgen_test;
            $( #[wasm_bindgen_test] fn $name() { super::$name::<$crate::common::Mem>() } )*
        }
        mod opfs {
            use wasm_bindgen_test::wasm_bindgen_test;
            $( #[wasm_bindgen_test] async fn $name() {
                $crate::common::opfs::prepare(stringify!($name)).await;
                super::$name::<$crate::common::opfs::Opfs>()
            } )*
        }
    };
}

/// OPFS as a test backend. The sync access handle is opened (async) before the synchronous
/// test body runs, and every "reopen" goes through the same handle, as a crash-and-restart
/// of the same worker would.
#[cfg(target_arch = "wasm32")]
pub mod opfs {
    use std::cell::RefCell;

    use walnut::storage::opfs::OpfsStorage;
    use walnut::Storage;

    thread_local! {
        static PREPARED: RefCell<Option<OpfsStorage>> = const { RefCell::new(None) };
    }

    /// Opens `walnut/test-<name>/wal.log`, emptied, for the next [`super::Backend::fresh`].
    pub async fn prepare(name: &str) {
        let mut s = OpfsStorage::open(&format!("test-{name}"), 2000).await.unwrap();
        s.truncate(0).unwrap();
        s.flush().unwrap();
        PREPARED.with(|p| *p.borrow_mut() = Some(s));
    }

    pub struct Opfs(OpfsStorage);

    impl super::Backend for Opfs {
        type S = OpfsStorage;
        fn fresh() -> Self {
            Opfs(PREPARED.with(|p| p.borrow_mut().take()).expect("prepare() runs first"))
        }
        fn storage(&self) -> OpfsStorage {
            OpfsStorage::from_handle(self.0.handle().clone())
        }
        fn bytes(&self) -> Vec<u8> {
            let mut b = vec![0; self.0.size().unwrap() as usize];
            assert!(walnut::storage::read_exact_at(&self.0, &mut b, 0).unwrap());
            b
        }
        fn set_bytes(&self, bytes: &[u8]) {
            let mut s = self.storage();
            s.truncate(0).unwrap();
            walnut::storage::write_all_at(&mut s, bytes, 0).unwrap();
            s.flush().unwrap();
        }
    }

    impl Drop for Opfs {
        fn drop(&mut self) {
            self.0.close();
        }
    }
}

pub fn small_chunks() -> Options {
    Options { chunk_size: 64, direct_write_threshold: 100, batch_bytes: 256, ..Options::default() }
}

pub fn open<B: Backend>(b: &B, options: Options) -> Store<B::S> {
    Store::open(b.storage(), options).unwrap()
}

/// Crash seeds for a suite: `WALNUT_CRASH_SEEDS=n` (the soak run) gives seeds 1 to n, else
/// `default`.
pub fn crash_seeds(default: &[u64]) -> Vec<u64> {
    match std::env::var("WALNUT_CRASH_SEEDS").ok().and_then(|v| v.parse::<u64>().ok()) {
        Some(n) => (1..=n).collect(),
        None => default.to_vec(),
    }
}

#[allow(unused_imports)]
pub use walnut::testing::{pattern, CrashStorage, CrashVolume, Fault, FaultyStorage};

/// Builds raw logs record by record, with full control of links, LSNs and COMMIT claims.
pub struct LogBuilder {
    pub bytes: Vec<u8>,
    pub next_lsn: u64,
}

impl Default for LogBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LogBuilder {
    pub fn new() -> Self {
        LogBuilder { bytes: FileHeader { base_lsn: 1, segment: 0 }.encode().to_vec(), next_lsn: 1 }
    }

    /// Appends a record; returns its offset.
    pub fn record(&mut self, kind: Kind, flags: u8, txn: u64, prev: u64, payload: &[u8]) -> u64 {
        let at = self.bytes.len() as u64;
        let (h, _) = RecordHeader::encode(kind, flags, self.next_lsn, txn, prev, &[payload]);
        self.bytes.extend_from_slice(&h);
        self.bytes.extend_from_slice(payload);
        self.next_lsn = self.next_lsn.wrapping_add(1);
        at
    }

    /// A committed single-record put.
    pub fn put_one(&mut self, txn: u64, key: &[u8], value: &[u8]) -> u64 {
        let mut p = (key.len() as u16).to_le_bytes().to_vec();
        p.extend_from_slice(key);
        p.extend_from_slice(value);
        self.record(Kind::PutOne, 0, txn, 0, &p)
    }

    /// The COMMIT payload that honestly describes `chunks`.
    pub fn claims(records: u32, chunks: &[&[u8]]) -> CommitPayload {
        let mut all = Vec::new();
        chunks.iter().for_each(|c| all.extend_from_slice(c));
        CommitPayload {
            records,
            chunks: chunks.len() as u32,
            value_bytes: all.len() as u64,
            value_crc: crc32fast::hash(&all),
        }
    }

    pub fn commit(&mut self, txn: u64, prev: u64, c: CommitPayload) -> u64 {
        self.record(Kind::Commit, 0, txn, prev, &c.encode())
    }
}

/// Offsets where each record of a valid log starts, and where it ends.
pub fn record_spans(bytes: &[u8]) -> Vec<(u64, u64)> {
    let mut spans = Vec::new();
    let mut at = FILE_HEADER_LEN;
    while at + RECORD_HEADER_LEN <= bytes.len() {
        let h: [u8; RECORD_HEADER_LEN] = bytes[at..at + RECORD_HEADER_LEN].try_into().unwrap();
        let Ok(h) = RecordHeader::decode(&h) else { break };
        let end = at + h.record_len() as usize;
        if end > bytes.len() {
            break;
        }
        spans.push((at as u64, end as u64));
        at = end;
    }
    spans
}

/// Deletes the checkpoint files: recovery then scans every segment that remains.
#[cfg(not(target_arch = "wasm32"))]
pub fn without_checkpoints(mut v: walnut::storage::MemoryVolume) -> walnut::storage::MemoryVolume {
    let files = v
        .files()
        .iter()
        .filter(|(_, f)| !f.to_vec().starts_with(&walnut::format::CHECKPOINT_MAGIC))
        .map(|(id, f)| (*id, f.clone()))
        .collect::<std::collections::BTreeMap<_, _>>();
    assert!(files.len() < v.files().len(), "the store had checkpoints");
    v.set_files(files);
    v
}

/// The files of a crash or live image but its checkpoints: what a full scan reads.
pub fn segments_of(image: &std::collections::BTreeMap<u32, Vec<u8>>) -> std::collections::BTreeMap<u32, Vec<u8>> {
    image
        .iter()
        .filter(|(_, f)| !f.starts_with(&walnut::format::CHECKPOINT_MAGIC))
        .map(|(&id, f)| (id, f.clone()))
        .collect()
}
