//! A volume kept by JavaScript: any object with the methods of [`VolumeHost`] (Node's `fs`,
//! a Durable Object's SQL pages, a test's memory). The core calls it synchronously, as it
//! calls a `FileSystemSyncAccessHandle`; the hosts live in `www/` (`volume-node.js`,
//! `volume-do.js`) and their contract is `docs/HOSTS.md`.
//!
//! The host owns naming, locking and durability of its medium: `flush` must not return before
//! every write to that file so far would survive a crash (Node: `fdatasync`; a Durable
//! Object: its SQL transaction, confirmed before the output gate opens).

use std::collections::BTreeMap;

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use super::{FileId, Storage, Volume};
use crate::error::{Error, Result};

#[wasm_bindgen(typescript_custom_section)]
const VOLUME_HOST_TS: &str = r#"
/** A volume kept by JavaScript; see docs/HOSTS.md. Offsets and sizes are bytes. */
export interface VolumeHost {
  /** Ids of the files that hold data (not the empty ones), in any order. */
  list(): ArrayLike<number>;
  /** Reads into `into` at `offset`; returns the count read (short only at the end). */
  read(id: number, offset: number, into: Uint8Array): number;
  /** Writes `data` at `offset`, extending the file; returns the count written. */
  write(id: number, offset: number, data: Uint8Array): number;
  /** The file's size in bytes. */
  size(id: number): number;
  /** Cuts or zero-extends the file to `len` bytes. */
  truncate(id: number, len: number): void;
  /** Returns once every write to the file so far survives a crash. */
  flush(id: number): void;
  /** A new empty file's id. */
  create(): number;
  /** The file's contents are no longer needed. If it throws, the file stays in use (not
   *  handed out by `create()`), to be released again. */
  release(id: number): void;
  /** The store is closed: release the lock and every resource. */
  close(): void;
}
"#;

#[wasm_bindgen]
extern "C" {
    /// A JS object with the methods of the `VolumeHost` interface above.
    #[wasm_bindgen(typescript_type = "VolumeHost")]
    #[derive(Clone, Debug)]
    pub type VolumeHost;

    #[wasm_bindgen(method, catch)]
    fn list(this: &VolumeHost) -> std::result::Result<JsValue, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn read(this: &VolumeHost, id: u32, offset: f64, into: &mut [u8]) -> std::result::Result<JsValue, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn write(this: &VolumeHost, id: u32, offset: f64, data: &[u8]) -> std::result::Result<JsValue, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn size(this: &VolumeHost, id: u32) -> std::result::Result<JsValue, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn truncate(this: &VolumeHost, id: u32, len: f64) -> std::result::Result<(), JsValue>;
    #[wasm_bindgen(method, catch)]
    fn flush(this: &VolumeHost, id: u32) -> std::result::Result<(), JsValue>;
    #[wasm_bindgen(method, catch)]
    fn create(this: &VolumeHost) -> std::result::Result<JsValue, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn release(this: &VolumeHost, id: u32) -> std::result::Result<(), JsValue>;
    #[wasm_bindgen(method, catch)]
    fn close(this: &VolumeHost) -> std::result::Result<(), JsValue>;
}

/// Maps what a host threw to the core error. Quota: a `QuotaExceededError` (the DOM's name),
/// or Node's `ENOSPC` / `EDQUOT` code, or SQLite's "database or disk is full".
fn map_host(op: &'static str, e: &JsValue) -> Error {
    let (name, message) = super::js::error_parts(e);
    let code = js_sys::Reflect::get(e, &"code".into()).ok().and_then(|c| c.as_string()).unwrap_or_default();
    if name == "QuotaExceededError"
        || code == "ENOSPC"
        || code == "EDQUOT"
        || message.contains("SQLITE_FULL")
        || message.contains("database or disk is full")
    {
        Error::quota(op, message)
    } else if name.is_empty() {
        Error::io(op, message)
    } else {
        Error::io(op, format!("{name}: {message}"))
    }
}

/// A count or size the host returned: a whole number from 0 to `max`, or an I/O error.
fn count(op: &'static str, v: std::result::Result<JsValue, JsValue>, max: f64) -> Result<u64> {
    let v = v.map_err(|e| map_host(op, &e))?;
    match v.as_f64() {
        Some(n) if (0.0..=max).contains(&n) && n.fract() == 0.0 => Ok(n as u64),
        _ => Err(Error::io(op, format!("the volume host returned {v:?}, not a count from 0 to {max}"))),
    }
}

/// The largest offset or size a host may report: below 2^53, where JS numbers stay exact.
const MAX_JS: f64 = 9_007_199_254_740_991.0;

/// One file of a [`HostVolume`].
#[derive(Debug)]
pub struct HostFile {
    host: VolumeHost,
    id: u32,
}

impl Storage for HostFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let len = buf.len() as f64;
        count("read", self.host.read(self.id, offset as f64, buf), len).map(|n| n as usize)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<usize> {
        // A count above the buffer's length is absurd; [`super::write_all_at`] refuses a short one.
        let n = count("write", self.host.write(self.id, offset as f64, buf), MAX_JS)?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn size(&self) -> Result<u64> {
        count("size", self.host.size(self.id), MAX_JS)
    }

    fn truncate(&mut self, len: u64) -> Result<()> {
        self.host.truncate(self.id, len as f64).map_err(|e| map_host("truncate", &e))
    }

    fn flush(&mut self) -> Result<()> {
        self.host.flush(self.id).map_err(|e| map_host("flush", &e))
    }
}

/// A volume whose files a [`VolumeHost`] keeps.
#[derive(Debug)]
pub struct HostVolume {
    host: VolumeHost,
    files: BTreeMap<FileId, HostFile>,
}

impl HostVolume {
    /// Lists the host's files.
    ///
    /// Errors: [`Error::Io`] if `list()` throws or returns something other than whole numbers
    /// below 2^32.
    pub fn open(host: VolumeHost) -> Result<HostVolume> {
        let listed = host.list().map_err(|e| map_host("open", &e))?;
        let bad = || Error::io("open", format!("the volume host's list() returned {listed:?}, not file ids"));
        let ids: js_sys::Array = js_sys::Array::from(&listed);
        if !listed.is_object() {
            return Err(bad());
        }
        let mut files = BTreeMap::new();
        for v in ids.iter() {
            let id = match v.as_f64() {
                Some(n) if (0.0..=f64::from(u32::MAX)).contains(&n) && n.fract() == 0.0 => n as u32,
                _ => return Err(bad()),
            };
            files.insert(id, HostFile { host: host.clone(), id });
        }
        Ok(HostVolume { host, files })
    }

    /// Tells the host the store is closed (it releases its lock). Errors: [`Error::Io`].
    pub fn close(&self) -> Result<()> {
        close_host(&self.host)
    }
}

impl Volume for HostVolume {
    type File = HostFile;

    fn ids(&self) -> Vec<FileId> {
        self.files.keys().copied().collect()
    }

    fn file(&self, id: FileId) -> Result<&HostFile> {
        self.files.get(&id).ok_or_else(|| Error::io("open", format!("no file {id}")))
    }

    fn file_mut(&mut self, id: FileId) -> Result<&mut HostFile> {
        self.files.get_mut(&id).ok_or_else(|| Error::io("open", format!("no file {id}")))
    }

    fn create(&mut self) -> Result<FileId> {
        let id = count("create", self.host.create(), f64::from(u32::MAX))? as u32;
        if self.files.contains_key(&id) {
            return Err(Error::io("create", format!("the volume host's create() returned file {id}, which is in use")));
        }
        self.files.insert(id, HostFile { host: self.host.clone(), id });
        Ok(id)
    }

    fn release(&mut self, id: FileId) -> Result<()> {
        if !self.files.contains_key(&id) {
            return Err(Error::io("release", format!("no file {id}")));
        }
        // If it throws, the file stays ours (listed), to be released again: the host must not
        // hand its id out meanwhile (the store still names it).
        self.host.release(id).map_err(|e| map_host("release", &e))?;
        self.files.remove(&id);
        Ok(())
    }
}

/// Tells `host` the store is closed (also when opening failed). Errors: [`Error::Io`].
pub fn close_host(host: &VolumeHost) -> Result<()> {
    host.close().map_err(|e| map_host("close", &e))
}

/// `v` as a [`VolumeHost`] if it is an object with every method of one; else an error naming
/// the first method missing.
pub fn check_host(v: &JsValue) -> Result<VolumeHost> {
    if !v.is_object() {
        return Err(Error::invalid("host", "must be an object with the methods of VolumeHost"));
    }
    for m in ["list", "read", "write", "size", "truncate", "flush", "create", "release", "close"] {
        let f = js_sys::Reflect::get(v, &m.into()).unwrap_or(JsValue::UNDEFINED);
        if !f.is_function() {
            return Err(Error::invalid("host", format!("has no method `{m}` (see docs/HOSTS.md)")));
        }
    }
    Ok(v.clone().unchecked_into())
}
