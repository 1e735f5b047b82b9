//! The Origin Private File System backend: a `FileSystemSyncAccessHandle`, whose `read` and
//! `write` with `{ at }` are the browser's pread/pwrite. Exists only in dedicated workers.

use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    DedicatedWorkerGlobalScope, FileSystemDirectoryHandle, FileSystemFileHandle, FileSystemGetDirectoryOptions,
    FileSystemGetFileOptions, FileSystemReadWriteOptions, FileSystemSyncAccessHandle,
};

use super::Storage;
use crate::clock::now_ms;
use crate::error::{Error, Result};

/// Directory under the OPFS root that holds every walnut store.
pub const ROOT_DIR: &str = "walnut";
/// The log file inside a store's directory.
pub const LOG_FILE: &str = "wal.log";

/// A log file in OPFS, open through a sync access handle (which locks it against every
/// other handle until [`OpfsStorage::close`] or the worker's end).
#[derive(Debug)]
pub struct OpfsStorage {
    handle: FileSystemSyncAccessHandle,
}

/// Maps a browser exception to the core error, by its DOMException name.
fn map_js(op: &'static str, e: JsValue) -> Error {
    let (name, message) = super::js::error_parts(&e);
    match name.as_str() {
        "QuotaExceededError" => Error::quota(op, message),
        "NoModificationAllowedError" => Error::Locked { detail: message },
        _ => Error::io(op, format!("{name}: {message}")),
    }
}

async fn await_js<T: JsCast>(op: &'static str, p: js_sys::Promise) -> Result<T> {
    let v = JsFuture::from(p).await.map_err(|e| map_js(op, e))?;
    v.dyn_into::<T>().map_err(|v| Error::io(op, format!("unexpected value {v:?}")))
}

async fn sleep_ms(scope: &DedicatedWorkerGlobalScope, ms: i32) {
    let p = js_sys::Promise::new(&mut |resolve, _| {
        let _ = scope.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
    });
    let _ = JsFuture::from(p).await;
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c == '\\' || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "name",
            "must be 1..=200 characters, without '/', '\\' or control characters, and not '.' or '..'",
        ))
    }
}

impl OpfsStorage {
    /// Opens (creating if needed) `walnut/<name>/wal.log` in OPFS and takes its sync access
    /// handle. A handle held elsewhere (another tab, or a reloaded page's dying worker, which
    /// Chrome releases late: sqlite/sqlite-wasm#79) is retried with backoff for
    /// `lock_timeout_ms` milliseconds.
    ///
    /// Errors: [`Error::Unsupported`] outside a dedicated worker or without OPFS;
    /// [`Error::InvalidArgument`] for a bad `name`; [`Error::Locked`] when the retry runs out;
    /// [`Error::Io`] otherwise.
    pub async fn open(name: &str, lock_timeout_ms: u32) -> Result<OpfsStorage> {
        let scope = worker_scope()?;
        let dir = store_dir(&scope, name).await?;
        open_handle(&scope, &dir, LOG_FILE, name, lock_timeout_ms).await
    }

    /// Wraps a sync access handle opened elsewhere (a pool, a test).
    pub fn from_handle(handle: FileSystemSyncAccessHandle) -> Self {
        OpfsStorage { handle }
    }

    /// The underlying handle.
    pub fn handle(&self) -> &FileSystemSyncAccessHandle {
        &self.handle
    }

    /// Releases the handle (and with it the file's lock). Later I/O fails.
    pub fn close(&self) {
        self.handle.close();
    }

    fn at(offset: u64) -> FileSystemReadWriteOptions {
        let o = FileSystemReadWriteOptions::new();
        o.set_at(offset as f64);
        o
    }
}

impl Storage for OpfsStorage {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let n = self.handle.read_with_u8_array_and_options(buf, &Self::at(offset)).map_err(|e| map_js("read", e))?;
        if !(0.0..=buf.len() as f64).contains(&n) || n.fract() != 0.0 {
            return Err(Error::io("read", format!("absurd read count {n} for {} bytes", buf.len())));
        }
        Ok(n as usize)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<usize> {
        let n = self.handle.write_with_u8_array_and_options(buf, &Self::at(offset)).map_err(|e| map_js("write", e))?;
        // At quota, Chrome has returned 0xFFFFFFF8 and Firefox a short count instead of
        // throwing (rhashimoto/wa-sqlite#336): any count but the full one is a quota failure.
        if n != buf.len() as f64 {
            return Err(Error::QuotaExceeded {
                op: "write",
                detail: format!("write of {} bytes at offset {offset} reported {n} bytes written", buf.len()),
            });
        }
        Ok(buf.len())
    }

    fn size(&self) -> Result<u64> {
        let n = self.handle.get_size().map_err(|e| map_js("size", e))?;
        if n < 0.0 || n.fract() != 0.0 {
            return Err(Error::io("size", format!("absurd size {n}")));
        }
        Ok(n as u64)
    }

    fn truncate(&mut self, len: u64) -> Result<()> {
        self.handle.truncate_with_f64(len as f64).map_err(|e| map_js("truncate", e))
    }

    fn flush(&mut self) -> Result<()> {
        self.handle.flush().map_err(|e| map_js("flush", e))
    }
}

/// Pre-opened, empty files waiting to become segments or checkpoints.
#[derive(Debug, Default)]
struct Pool {
    free: Vec<(String, OpfsStorage)>,
    next_name: u32,
    /// Refills asked for and not finished. Counted from the moment [`OpfsVolume::refill`] is
    /// called, not from the future's first poll: the writes of one burst (a `putMany` of
    /// thousands) each ask, before any refill has run, and must start only one.
    refills: usize,
    /// Files a refill is opening now: counted with `free` so that refills running together
    /// open only the files the pool lacks.
    opening: usize,
    /// The volume was closed: a refill under way closes what it opens, and stops.
    closed: bool,
}

/// A refill's hold on the pool's counts, given back however the refill ends (finished, failed,
/// or its future dropped unfinished).
struct RefillGuard {
    pool: std::rc::Rc<std::cell::RefCell<Pool>>,
    /// It has a file being opened (counted in `Pool::opening`).
    opening: std::cell::Cell<bool>,
}

impl Drop for RefillGuard {
    fn drop(&mut self) {
        let mut p = self.pool.borrow_mut();
        p.refills -= 1;
        if self.opening.get() {
            p.opening -= 1;
        }
    }
}

/// Free files the pool keeps ready, so a rotation and a checkpoint never wait.
pub const POOL_MIN_FREE: usize = 3;

/// A store's files in OPFS: `walnut/<name>/NNNNNNNN.wal` (and `wal.log`, the single file of a
/// store created before format version 2). Creating a file and opening its sync access handle
/// are asynchronous, while the engine writes synchronously, so this volume keeps a pool of
/// pre-opened empty files ([`POOL_MIN_FREE`]) that [`Volume::create`] hands out at once and
/// [`OpfsVolume::refill`] tops up in the background (SQLite's `opfs-sahpool` VFS does the
/// same). A file's role lives in its header, never in its name.
#[derive(Debug)]
pub struct OpfsVolume {
    dir: FileSystemDirectoryHandle,
    files: std::collections::BTreeMap<super::FileId, (String, OpfsStorage)>,
    next_id: super::FileId,
    pool: std::rc::Rc<std::cell::RefCell<Pool>>,
}

async fn open_handle(
    scope: &DedicatedWorkerGlobalScope,
    dir: &FileSystemDirectoryHandle,
    file: &str,
    store: &str,
    lock_timeout_ms: u32,
) -> Result<OpfsStorage> {
    let file_opts = FileSystemGetFileOptions::new();
    file_opts.set_create(true);
    let handle: FileSystemFileHandle = await_js("open", dir.get_file_handle_with_options(file, &file_opts)).await?;
    let deadline = now_ms() + f64::from(lock_timeout_ms);
    let mut backoff = 20;
    loop {
        match await_js::<FileSystemSyncAccessHandle>("open", handle.create_sync_access_handle()).await {
            Ok(handle) => return Ok(OpfsStorage { handle }),
            Err(Error::Locked { detail }) => {
                let left = deadline - now_ms();
                if left <= 0.0 {
                    return Err(Error::Locked {
                        detail: format!(
                            "store `{store}` is open elsewhere (another tab or worker); gave up after {lock_timeout_ms} ms: {detail}"
                        ),
                    });
                }
                sleep_ms(scope, backoff.min(left.ceil() as i32)).await;
                backoff = (backoff * 2).min(250);
            }
            Err(e) => return Err(e),
        }
    }
}

fn worker_scope() -> Result<DedicatedWorkerGlobalScope> {
    js_sys::global().dyn_into::<DedicatedWorkerGlobalScope>().map_err(|_| Error::Unsupported {
        detail:
            "OPFS sync access handles exist only in dedicated workers; open walnut from its worker (www/walnut.js does)"
                .into(),
    })
}

async fn store_dir(scope: &DedicatedWorkerGlobalScope, name: &str) -> Result<FileSystemDirectoryHandle> {
    check_name(name)?;
    let root: FileSystemDirectoryHandle = await_js("open", scope.navigator().storage().get_directory()).await?;
    let dir_opts = FileSystemGetDirectoryOptions::new();
    dir_opts.set_create(true);
    let walnut: FileSystemDirectoryHandle =
        await_js("open", root.get_directory_handle_with_options(ROOT_DIR, &dir_opts)).await?;
    await_js("open", walnut.get_directory_handle_with_options(name, &dir_opts)).await
}

/// Names of the store's files, in order (the legacy single file first).
async fn list_files(dir: &FileSystemDirectoryHandle) -> Result<Vec<String>> {
    let iter = dir.keys();
    let mut names = Vec::new();
    loop {
        let next = iter.next().map_err(|e| map_js("open", e))?;
        let step = JsFuture::from(next).await.map_err(|e| map_js("open", e))?;
        let done = js_sys::Reflect::get(&step, &"done".into()).map_err(|e| map_js("open", e))?;
        if done.is_truthy() {
            break;
        }
        let value = js_sys::Reflect::get(&step, &"value".into()).map_err(|e| map_js("open", e))?;
        if let Some(name) = value.as_string() {
            if name == LOG_FILE || pool_number(&name).is_some() {
                names.push(name);
            }
        }
    }
    names.sort_by_key(|n| pool_number(n).map_or(0, |k| u64::from(k) + 1));
    Ok(names)
}

/// Runs futures concurrently and returns their outputs in order (the futures crate's
/// `join_all`, through JS promises: each runs on the browser's event loop as it is polled).
async fn join_all<T: 'static>(futures: Vec<impl std::future::Future<Output = T> + 'static>) -> Vec<T> {
    let slots: Vec<std::rc::Rc<std::cell::RefCell<Option<T>>>> = futures.iter().map(|_| Default::default()).collect();
    let promises = js_sys::Array::new();
    for (future, slot) in futures.into_iter().zip(&slots) {
        let slot = slot.clone();
        promises.push(&wasm_bindgen_futures::future_to_promise(async move {
            *slot.borrow_mut() = Some(future.await);
            Ok(JsValue::UNDEFINED)
        }));
    }
    // The futures never reject (their outcomes are values), so neither does this.
    let _ = JsFuture::from(js_sys::Promise::all(&promises)).await;
    slots.into_iter().filter_map(|s| s.borrow_mut().take()).collect()
}

/// The file whose handle is the store's lock: the first one every store has.
const LOCK_FILE: &str = "00000000.wal";

fn pool_number(name: &str) -> Option<u32> {
    let n = name.strip_suffix(".wal")?;
    (n.len() == 8 && n.bytes().all(|b| b.is_ascii_digit())).then(|| n.parse().ok()).flatten()
}

impl OpfsVolume {
    /// Opens the store `name`: every file of `walnut/<name>/`, each through a sync access
    /// handle (retried while another holder has it, for `lock_timeout_ms`), and fills the pool.
    /// The lock is the handle of `00000000.wal`, taken first (and created if absent, also in a
    /// store made by version 1, where it joins the pool); the directory is listed after it.
    ///
    /// Errors: as [`OpfsStorage::open`].
    pub async fn open(name: &str, lock_timeout_ms: u32) -> Result<OpfsVolume> {
        let scope = worker_scope()?;
        let dir = store_dir(&scope, name).await?;
        let mut v = OpfsVolume {
            dir: dir.clone(),
            files: std::collections::BTreeMap::new(),
            next_id: 0,
            pool: Default::default(),
        };
        let mut next_name = 0;
        // The lock: the store's first file (created with the store, never deleted) waits out
        // a handle held elsewhere (another tab, a dying worker). Only then is the directory
        // listed, so no file the previous holder created meanwhile is missed; the rest belong
        // to the same holder and open all at once: opening a sync access handle takes
        // milliseconds, and a store has half a dozen files or more.
        let lock = open_handle(&scope, &dir, LOCK_FILE, name, lock_timeout_ms).await?;
        let names = match list_files(&dir).await {
            Ok(names) => names,
            Err(e) => {
                lock.close();
                return Err(e);
            }
        };
        let mut opened = Vec::with_capacity(names.len());
        let mut names: Vec<String> = names.into_iter().filter(|n| n != LOCK_FILE).collect();
        names.insert(0, LOCK_FILE.to_string());
        opened.push(Ok(lock));
        let rest: Vec<_> = names
            .iter()
            .skip(1)
            .map(|f| {
                let (scope, dir, file, store) = (scope.clone(), dir.clone(), f.clone(), name.to_string());
                async move { open_handle(&scope, &dir, &file, &store, lock_timeout_ms).await }
            })
            .collect();
        opened.extend(join_all(rest).await);
        // Every handle that opened joins the volume before anything can fail, so that a
        // failure (here or below) closes them all, and with them the lock.
        let mut failure = None;
        for (file, storage) in names.into_iter().zip(opened) {
            let storage = match storage {
                Ok(s) => s,
                Err(e) => {
                    failure.get_or_insert(e);
                    continue;
                }
            };
            next_name = next_name.max(pool_number(&file).map_or(0, |n| n + 1));
            match storage.size() {
                Ok(0) => v.pool.borrow_mut().free.push((file, storage)),
                Ok(_) => {
                    v.files.insert(v.next_id, (file, storage));
                    v.next_id += 1;
                }
                Err(e) => {
                    storage.close();
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failure {
            v.close(); // every handle that did open
            return Err(e);
        }
        v.pool.borrow_mut().next_name = next_name;
        if let Err(e) = v.refill().await {
            v.close();
            return Err(e);
        }
        Ok(v)
    }

    /// Whether the pool is below [`POOL_MIN_FREE`] and no refill is under way (or asked for).
    pub fn needs_refill(&self) -> bool {
        let p = self.pool.borrow();
        p.free.len() < POOL_MIN_FREE && p.refills == 0
    }

    /// Free files in the pool now (pre-opened, empty), not counting those being opened.
    pub fn free_files(&self) -> usize {
        self.pool.borrow().free.len()
    }

    /// Tops the pool up to [`POOL_MIN_FREE`] free files; resolves once it is full (or the
    /// volume closed). The future owns what it needs, so it can run in the background
    /// (`wasm_bindgen_futures::spawn_local`) while the store works. Refills running together
    /// share the work: each opens a file only while the free files and those being opened fall
    /// short, and one that finds the rest being opened by another waits for them.
    pub fn refill(&self) -> impl std::future::Future<Output = Result<()>> + 'static {
        let pool = self.pool.clone();
        let dir = self.dir.clone();
        // Counted now: see `Pool::refills`.
        pool.borrow_mut().refills += 1;
        let guard = RefillGuard { pool: pool.clone(), opening: std::cell::Cell::new(false) };
        async move {
            let guard = guard; // the future owns it whole (not only the fields it touches)
            let scope = worker_scope()?;
            loop {
                let name = {
                    let mut p = pool.borrow_mut();
                    if p.closed || p.free.len() >= POOL_MIN_FREE {
                        return Ok(());
                    }
                    if p.free.len() + p.opening >= POOL_MIN_FREE {
                        None // another refill is opening the rest
                    } else {
                        p.opening += 1;
                        p.next_name += 1;
                        Some(format!("{:08}.wal", p.next_name - 1))
                    }
                };
                let Some(name) = name else {
                    sleep_ms(&scope, 5).await;
                    continue;
                };
                guard.opening.set(true);
                let opened = open_handle(&scope, &dir, &name, "pool", 1000).await;
                guard.opening.set(false);
                let mut p = pool.borrow_mut();
                p.opening -= 1;
                let storage = opened?;
                if p.closed {
                    // Closed meanwhile (a store closed, then opened again in this worker):
                    // the handle would keep the file from the next opener.
                    storage.close();
                    return Ok(());
                }
                p.free.push((name, storage));
            }
        }
    }

    /// Closes every handle (in use and pooled), releasing the store's lock. A refill under way
    /// closes the handle it is opening as soon as it has it.
    pub fn close(&self) {
        for (_, f) in self.files.values() {
            f.close();
        }
        let mut pool = self.pool.borrow_mut();
        pool.closed = true;
        for (_, f) in &pool.free {
            f.close();
        }
    }
}

/// Dropping the volume (a failed open, a store freed from JS) releases its handles, and with
/// them the store's lock; closing a closed handle does nothing.
impl Drop for OpfsVolume {
    fn drop(&mut self) {
        self.close();
    }
}

impl super::Volume for OpfsVolume {
    type File = OpfsStorage;

    fn ids(&self) -> Vec<super::FileId> {
        self.files.keys().copied().collect()
    }

    fn file(&self, id: super::FileId) -> Result<&OpfsStorage> {
        self.files.get(&id).map(|f| &f.1).ok_or_else(|| Error::io("open", format!("no file {id}")))
    }

    fn file_mut(&mut self, id: super::FileId) -> Result<&mut OpfsStorage> {
        self.files.get_mut(&id).map(|f| &mut f.1).ok_or_else(|| Error::io("open", format!("no file {id}")))
    }

    fn create(&mut self) -> Result<super::FileId> {
        let Some(file) = self.pool.borrow_mut().free.pop() else {
            return Err(Error::io("create", "no pre-opened OPFS file is free yet; the pool refills in the background"));
        };
        let id = self.next_id;
        self.next_id += 1;
        self.files.insert(id, file);
        Ok(id)
    }

    fn release(&mut self, id: super::FileId) -> Result<()> {
        let (_, file) = self.files.get_mut(&id).ok_or_else(|| Error::io("release", format!("no file {id}")))?;
        file.truncate(0)?;
        file.flush()?;
        if let Some(released) = self.files.remove(&id) {
            self.pool.borrow_mut().free.push(released);
        }
        Ok(())
    }

    fn has_free(&self) -> bool {
        !self.pool.borrow().free.is_empty()
    }
}
