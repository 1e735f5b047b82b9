//! A volume: the set of files a store keeps (log segments and checkpoints), addressed by
//! [`FileId`]. The engine creates and releases files only through this trait, synchronously:
//! OPFS creates files asynchronously, so its volume hands out files from a pool of pre-opened
//! sync access handles (SQLite's `opfs-sahpool` does the same) and refills the pool in the
//! background. A file's role lives in its own header, never in its name, so any file of the
//! pool can become any segment.
//!
//! Every [`Storage`] is also a one-file volume that cannot grow: a store on it keeps a single
//! segment and takes no checkpoints.

use std::collections::BTreeMap;

use super::{MemoryStorage, Storage};
use crate::error::{Error, Result};

/// Identifies a file of a volume for as long as the volume lives.
pub type FileId = u32;

/// A set of files.
pub trait Volume {
    /// The files' type.
    type File: Storage;
    /// Ids of every file, in a stable order.
    fn ids(&self) -> Vec<FileId>;
    /// The file `id`. Errors: [`Error::Io`] if there is none.
    fn file(&self, id: FileId) -> Result<&Self::File>;
    /// The file `id`, for writing.
    fn file_mut(&mut self, id: FileId) -> Result<&mut Self::File>;
    /// A new empty file, without waiting. Errors: [`Error::Unsupported`] for a volume that
    /// cannot grow; [`Error::QuotaExceeded`]; [`Error::Io`] (e.g. a pool run dry).
    fn create(&mut self) -> Result<FileId>;
    /// Gives file `id` back: its contents are no longer needed (a pool empties and keeps it).
    fn release(&mut self, id: FileId) -> Result<()>;
    /// Whether [`Volume::create`] can work: a store on a volume that cannot grow keeps one
    /// segment and takes no checkpoints.
    fn can_grow(&self) -> bool {
        true
    }
    /// Whether [`Volume::create`] would succeed now. A pool of pre-opened files may run dry
    /// for a moment; the writer then keeps appending to the tail segment past its target size
    /// rather than wait.
    fn has_free(&self) -> bool {
        true
    }
}

fn no_such(id: FileId) -> Error {
    Error::io("open", format!("volume has no file {id}"))
}

impl<S: Storage> Volume for S {
    type File = S;
    fn ids(&self) -> Vec<FileId> {
        vec![0]
    }
    fn file(&self, id: FileId) -> Result<&S> {
        if id == 0 {
            Ok(self)
        } else {
            Err(no_such(id))
        }
    }
    fn file_mut(&mut self, id: FileId) -> Result<&mut S> {
        if id == 0 {
            Ok(self)
        } else {
            Err(no_such(id))
        }
    }
    fn create(&mut self) -> Result<FileId> {
        Err(Error::Unsupported { detail: "a single-file store cannot add segments or checkpoints".into() })
    }
    fn release(&mut self, _id: FileId) -> Result<()> {
        Err(Error::Unsupported { detail: "a single-file store cannot release files".into() })
    }
    fn can_grow(&self) -> bool {
        false
    }
    fn has_free(&self) -> bool {
        false
    }
}

/// Files kept in a map; the shared implementation of the memory and test volumes.
#[derive(Debug, Clone)]
pub struct MapVolume<F> {
    files: BTreeMap<FileId, F>,
    next: FileId,
    make: fn() -> F,
}

impl<F: Storage> MapVolume<F> {
    /// An empty volume whose new files come from `make`.
    pub fn with(make: fn() -> F) -> Self {
        MapVolume { files: BTreeMap::new(), next: 0, make }
    }

    /// The files, for tests that damage or inspect them.
    pub fn files(&self) -> &BTreeMap<FileId, F> {
        &self.files
    }

    /// Replaces the files (e.g. with what a crash left).
    pub fn set_files(&mut self, files: BTreeMap<FileId, F>) {
        self.next = files.keys().next_back().map_or(0, |k| k + 1);
        self.files = files;
    }
}

impl<F: Storage> Volume for MapVolume<F> {
    type File = F;
    fn ids(&self) -> Vec<FileId> {
        self.files.keys().copied().collect()
    }
    fn file(&self, id: FileId) -> Result<&F> {
        self.files.get(&id).ok_or_else(|| no_such(id))
    }
    fn file_mut(&mut self, id: FileId) -> Result<&mut F> {
        self.files.get_mut(&id).ok_or_else(|| no_such(id))
    }
    fn create(&mut self) -> Result<FileId> {
        let id = self.next;
        self.next += 1;
        self.files.insert(id, (self.make)());
        Ok(id)
    }
    fn release(&mut self, id: FileId) -> Result<()> {
        self.files.remove(&id).map(drop).ok_or_else(|| no_such(id))
    }
}

/// A volume in memory. Clones share the files' bytes, so a test can drop a store and reopen on
/// what is left.
pub type MemoryVolume = MapVolume<MemoryStorage>;

impl Default for MemoryVolume {
    fn default() -> Self {
        MapVolume::with(MemoryStorage::new)
    }
}

/// A volume of native files in one directory, named `<n>.wal`.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug)]
pub struct DirVolume {
    dir: std::path::PathBuf,
    files: BTreeMap<FileId, super::FileStorage>,
}

#[cfg(not(target_arch = "wasm32"))]
impl DirVolume {
    /// Opens every `<n>.wal` in `dir`, creating the directory if needed.
    ///
    /// Errors: [`Error::Io`] if the directory cannot be read or a file cannot be opened.
    pub fn open(dir: impl Into<std::path::PathBuf>) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            // Only canonical names (`7.wal`, not `007.wal` or `+7.wal`), so that a name and
            // its id always map to each other.
            let id = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".wal"))
                .and_then(|n| n.parse::<FileId>().ok().filter(|id| id.to_string() == n));
            if let Some(id) = id {
                files.insert(id, super::FileStorage::open(&path)?);
            }
        }
        Ok(DirVolume { dir, files })
    }

    fn path(&self, id: FileId) -> std::path::PathBuf {
        self.dir.join(format!("{id}.wal"))
    }

    /// Makes a created or removed name durable (a new segment's name must survive a power
    /// cut as its records do).
    fn sync_dir(&self) -> Result<()> {
        Ok(std::fs::File::open(&self.dir)?.sync_all()?)
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Volume for DirVolume {
    type File = super::FileStorage;
    fn ids(&self) -> Vec<FileId> {
        self.files.keys().copied().collect()
    }
    fn file(&self, id: FileId) -> Result<&super::FileStorage> {
        self.files.get(&id).ok_or_else(|| no_such(id))
    }
    fn file_mut(&mut self, id: FileId) -> Result<&mut super::FileStorage> {
        self.files.get_mut(&id).ok_or_else(|| no_such(id))
    }
    fn create(&mut self) -> Result<FileId> {
        let id = self.files.keys().next_back().map_or(0, |k| k + 1);
        let file = super::FileStorage::open(self.path(id))?;
        self.files.insert(id, file);
        self.sync_dir()?;
        Ok(id)
    }
    fn release(&mut self, id: FileId) -> Result<()> {
        self.files.remove(&id).ok_or_else(|| no_such(id))?;
        std::fs::remove_file(self.path(id))?;
        self.sync_dir()
    }
}
