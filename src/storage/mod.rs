//! The storage port: one small trait with the shape of the browser's
//! `FileSystemSyncAccessHandle` (offset reads and writes, size, truncate, flush).
//!
//! The engine never touches files directly (redb's `StorageBackend`, raft-engine's
//! `FileSystem`). Backends: [`MemoryStorage`], [`FileStorage`] (native, positioned I/O),
//! `OpfsStorage` and `HostVolume`
//! (wasm32 only: OPFS, and files a JS host keeps, such as Node's fs or a Durable Object).

mod memory;
pub mod volume;
pub use memory::MemoryStorage;
#[cfg(not(target_arch = "wasm32"))]
pub use volume::DirVolume;
pub use volume::{FileId, MapVolume, MemoryVolume, Volume};

#[cfg(not(target_arch = "wasm32"))]
mod file;
pub mod overlay;
#[cfg(not(target_arch = "wasm32"))]
pub use file::FileStorage;

#[cfg(target_arch = "wasm32")]
pub mod host;
#[cfg(target_arch = "wasm32")]
mod js;
#[cfg(target_arch = "wasm32")]
pub mod opfs;

use crate::error::{Error, Result};

/// A byte-addressed file, written and read at explicit offsets (pwrite/pread; no seek).
///
/// Implementations report what the medium did; the engine checks it: a `write_at` that
/// returns anything but `buf.len()` is an error ([`write_all_at`]).
pub trait Storage {
    /// Reads up to `buf.len()` bytes at byte `offset`; returns the count read, which is short
    /// only at the end of the file (0 at or past it).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize>;
    /// Writes `buf` at byte `offset`, extending the file if needed; returns the count the
    /// medium reports written.
    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<usize>;
    /// Current size in bytes.
    fn size(&self) -> Result<u64>;
    /// Sets the size to `len` bytes (cuts or zero-extends).
    fn truncate(&mut self, len: u64) -> Result<()>;
    /// Makes every write so far durable.
    fn flush(&mut self) -> Result<()>;
}

impl<S: Storage + ?Sized> Storage for Box<S> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        (**self).read_at(buf, offset)
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<usize> {
        (**self).write_at(buf, offset)
    }
    fn size(&self) -> Result<u64> {
        (**self).size()
    }
    fn truncate(&mut self, len: u64) -> Result<()> {
        (**self).truncate(len)
    }
    fn flush(&mut self) -> Result<()> {
        (**self).flush()
    }
}

/// Writes all of `buf` at `offset`, or fails: a short count (Firefox at quota) or an absurd
/// one (Chrome at quota has returned 0xFFFFFFF8) is an error, never silently accepted.
pub fn write_all_at<S: Storage + ?Sized>(s: &mut S, buf: &[u8], offset: u64) -> Result<()> {
    let n = s.write_at(buf, offset)?;
    if n == buf.len() {
        Ok(())
    } else if n < buf.len() {
        Err(Error::io("write", format!("short write: {n} of {} bytes at offset {offset}", buf.len())))
    } else {
        Err(Error::io("write", format!("absurd write count {n} for {} bytes at offset {offset}", buf.len())))
    }
}

/// Fills `buf` from `offset`, looping over short reads; `Ok(false)` if the file ends first.
pub fn read_exact_at<S: Storage + ?Sized>(s: &S, buf: &mut [u8], offset: u64) -> Result<bool> {
    let mut done = 0usize;
    while done < buf.len() {
        let Some(rest) = buf.get_mut(done..) else { break };
        let n = s.read_at(rest, offset + done as u64)?;
        if n == 0 {
            return Ok(false);
        }
        if n > rest.len() {
            return Err(Error::io("read", format!("absurd read count {n} for {} bytes", rest.len())));
        }
        done += n;
    }
    Ok(true)
}
