//! Copy-on-write views of files: every write lands in memory over a base that is only read.
//! Recovery can so run on a store, a damaged one included, to see what it would keep and
//! discard, without touching a byte of it (the `walnut` CLI's `inspect`, `verify`, `ls`, `get`
//! and `cat-log`, on native files), and an import checks the file it staged before installing
//! it ([`crate::export::Import`], on any storage).

#[cfg(not(target_arch = "wasm32"))]
use std::collections::BTreeMap;
#[cfg(not(target_arch = "wasm32"))]
use std::path::Path;

#[cfg(not(target_arch = "wasm32"))]
use super::volume::{file_id, FileId, MapVolume};
use super::Storage;
#[cfg(not(target_arch = "wasm32"))]
use crate::error::Error;
use crate::error::Result;

/// What a view reads through to: positioned reads only.
pub trait ReadAt {
    /// Reads up to `buf.len()` bytes at byte `offset` (short only at the end; 0 past it).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize>;
}

#[cfg(not(target_arch = "wasm32"))]
impl ReadAt for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        loop {
            match std::os::unix::fs::FileExt::read_at(self, buf, offset) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                r => return Ok(r?),
            }
        }
    }
}

/// Any storage, borrowed, read through.
impl<S: Storage> ReadAt for &S {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        S::read_at(self, buf, offset)
    }
}

/// A base read through, with writes kept in memory (copy-on-write); without a base, all memory.
#[derive(Debug)]
pub struct Overlay<B> {
    base: Option<B>,
    /// The base's length (what lies past it, or past a truncation, is not read from it).
    base_len: u64,
    size: u64,
    /// Written bytes, by offset, applied in order on reads (later writes win).
    writes: Vec<(u64, Vec<u8>)>,
}

impl<B> Default for Overlay<B> {
    fn default() -> Self {
        Overlay { base: None, base_len: 0, size: 0, writes: Vec::new() }
    }
}

impl<B: ReadAt> Overlay<B> {
    /// A view of `base`, whose first `len` bytes are read from it.
    pub fn new(base: B, len: u64) -> Self {
        Overlay { base: Some(base), base_len: len, size: len, writes: Vec::new() }
    }
}

/// A native file read from disk with writes kept in memory.
#[cfg(not(target_arch = "wasm32"))]
pub type OverlayFile = Overlay<std::fs::File>;

#[cfg(not(target_arch = "wasm32"))]
impl Overlay<std::fs::File> {
    /// A view of the file at `path`, opened for reading only.
    ///
    /// Errors: [`Error::Io`] if it cannot be opened or measured.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        Ok(Overlay::new(file, len))
    }
}

impl<B: ReadAt> Storage for Overlay<B> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        if offset >= self.size {
            return Ok(0);
        }
        let n = usize::try_from((self.size - offset).min(buf.len() as u64)).unwrap_or(buf.len());
        let out = buf.get_mut(..n).unwrap_or_default();
        out.fill(0);
        if let Some(base) = &self.base {
            let from_base = usize::try_from(self.base_len.saturating_sub(offset).min(n as u64)).unwrap_or(0);
            let mut done = 0;
            while done < from_base {
                let Some(rest) = out.get_mut(done..from_base) else { break };
                match base.read_at(rest, offset + done as u64)? {
                    0 => break,
                    k => done += k,
                }
            }
        }
        for (at, bytes) in &self.writes {
            let (start, end) = (*at, *at + bytes.len() as u64);
            let (lo, hi) = (start.max(offset), end.min(offset + n as u64));
            if lo < hi {
                let src = bytes.get((lo - start) as usize..(hi - start) as usize).unwrap_or_default();
                if let Some(dst) = out.get_mut((lo - offset) as usize..(hi - offset) as usize) {
                    dst.copy_from_slice(src);
                }
            }
        }
        Ok(n)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<usize> {
        self.writes.push((offset, buf.to_vec()));
        self.size = self.size.max(offset + buf.len() as u64);
        Ok(buf.len())
    }

    fn size(&self) -> Result<u64> {
        Ok(self.size)
    }

    fn truncate(&mut self, len: u64) -> Result<()> {
        self.size = len;
        self.base_len = self.base_len.min(len);
        for (at, bytes) in &mut self.writes {
            bytes.truncate(usize::try_from(len.saturating_sub(*at)).unwrap_or(usize::MAX));
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// A read-only view of the store directory `dir`: its files (`NNNNNNNN.wal`), none of them
/// ever written; recovery's changes stay in memory. Takes no lock, so a store another process
/// is writing may look torn: inspect a store that is closed.
///
/// Errors: [`Error::Io`] if `dir` cannot be read or a file opened; if two names stand for one file.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_only_dir(dir: impl AsRef<Path>) -> Result<MapVolume<OverlayFile>> {
    let dir = dir.as_ref();
    let mut files: BTreeMap<FileId, OverlayFile> = BTreeMap::new();
    let mut names: BTreeMap<FileId, std::path::PathBuf> = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(id) = path.file_name().and_then(|n| n.to_str()).and_then(file_id) else { continue };
        if let Some(other) = names.insert(id, path.clone()) {
            return Err(Error::io("open", format!("{} and {} both name file {id}", other.display(), path.display())));
        }
    }
    for (id, path) in names {
        let f = OverlayFile::open(&path)?;
        if f.size > 0 {
            files.insert(id, f);
        }
    }
    let mut v = MapVolume::with(OverlayFile::default);
    v.set_files(files);
    Ok(v)
}
