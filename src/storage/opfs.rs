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

/// The `name` and `message` of a thrown JS value.
pub(crate) fn js_error_parts(e: &JsValue) -> (String, String) {
    if let Some(d) = e.dyn_ref::<web_sys::DomException>() {
        return (d.name(), d.message());
    }
    if let Some(err) = e.dyn_ref::<js_sys::Error>() {
        return (err.name().into(), err.message().into());
    }
    (String::new(), e.as_string().unwrap_or_else(|| format!("{e:?}")))
}

/// Maps a browser exception to the core error, by its DOMException name.
fn map_js(op: &'static str, e: JsValue) -> Error {
    let (name, message) = js_error_parts(&e);
    match name.as_str() {
        "QuotaExceededError" => Error::QuotaExceeded { detail: message },
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
        check_name(name)?;
        let scope = js_sys::global().dyn_into::<DedicatedWorkerGlobalScope>().map_err(|_| Error::Unsupported {
            detail: "OPFS sync access handles exist only in dedicated workers; open walnut from its worker (www/walnut.js does)".into(),
        })?;
        let storage = scope.navigator().storage();
        let root: FileSystemDirectoryHandle = await_js("open", storage.get_directory()).await?;
        let dir_opts = FileSystemGetDirectoryOptions::new();
        dir_opts.set_create(true);
        let walnut: FileSystemDirectoryHandle =
            await_js("open", root.get_directory_handle_with_options(ROOT_DIR, &dir_opts)).await?;
        let dir: FileSystemDirectoryHandle =
            await_js("open", walnut.get_directory_handle_with_options(name, &dir_opts)).await?;
        let file_opts = FileSystemGetFileOptions::new();
        file_opts.set_create(true);
        let file: FileSystemFileHandle =
            await_js("open", dir.get_file_handle_with_options(LOG_FILE, &file_opts)).await?;

        let deadline = now_ms() + f64::from(lock_timeout_ms);
        let mut backoff = 20;
        loop {
            match await_js::<FileSystemSyncAccessHandle>("open", file.create_sync_access_handle()).await {
                Ok(handle) => return Ok(OpfsStorage { handle }),
                Err(Error::Locked { detail }) => {
                    let left = deadline - now_ms();
                    if left <= 0.0 {
                        return Err(Error::Locked {
                            detail: format!(
                                "store `{name}` is open elsewhere (another tab or worker); gave up after {lock_timeout_ms} ms: {detail}"
                            ),
                        });
                    }
                    sleep_ms(&scope, backoff.min(left.ceil() as i32)).await;
                    backoff = (backoff * 2).min(250);
                }
                Err(e) => return Err(e),
            }
        }
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
