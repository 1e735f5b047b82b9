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
    /// On error the file stays in [`Volume::ids`], whatever it then holds, so that it can be
    /// released again (an import's switch releases every file but its own).
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

    /// The files, taken out of the volume.
    pub fn into_files(self) -> BTreeMap<FileId, F> {
        self.files
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

/// A volume of native files in one directory: the same files as a store in OPFS or in Node
/// (`www/volume-node.js`), so a store directory moves between them byte for byte. Files are
/// named `NNNNNNNN.wal` (eight digits; `<n>.wal`, as version 0.1 named them, is read too);
/// empty files are free and reused; a released file is emptied and kept. The directory is
/// locked by a `LOCK` file naming the holder (see [`DirLock`]).
#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug)]
pub struct DirVolume {
    dir: std::path::PathBuf,
    files: BTreeMap<FileId, super::FileStorage>,
    free: Vec<(FileId, super::FileStorage)>,
    next: FileId,
    _lock: DirLock,
}

/// The file id a name stands for: `NNNNNNNN.wal`, or the canonical `<n>.wal` of version 0.1
/// (not `007.wal` or `+7.wal`, so that a name and its id map to each other).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn file_id(name: &str) -> Option<FileId> {
    let n = name.strip_suffix(".wal")?;
    if !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let id = n.parse::<FileId>().ok()?;
    (n.len() == 8 || id.to_string() == n).then_some(id)
}

#[cfg(not(target_arch = "wasm32"))]
impl DirVolume {
    /// Opens the store directory `dir` (created if needed): takes its lock, then opens every
    /// file.
    ///
    /// Errors: [`Error::Locked`] if a live process holds the directory; [`Error::Io`] if the
    /// directory cannot be read, a file cannot be opened, or two names stand for one file.
    pub fn open(dir: impl Into<std::path::PathBuf>) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        let lock = DirLock::take(&dir)?;
        let mut v = DirVolume { dir, files: BTreeMap::new(), free: Vec::new(), next: 0, _lock: lock };
        let mut names = BTreeMap::new();
        for entry in std::fs::read_dir(&v.dir)? {
            let path = entry?.path();
            let Some(id) = path.file_name().and_then(|n| n.to_str()).and_then(file_id) else { continue };
            if let Some(other) = names.insert(id, path.clone()) {
                return Err(Error::io(
                    "open",
                    format!("{} and {} both name file {id}; remove the empty one", other.display(), path.display()),
                ));
            }
        }
        for (id, path) in names {
            let file = super::FileStorage::open(&path)?;
            v.next = v.next.max(id.saturating_add(1));
            if file.size()? == 0 {
                v.free.push((id, file));
            } else {
                v.files.insert(id, file);
            }
        }
        Ok(v)
    }

    fn path(&self, id: FileId) -> std::path::PathBuf {
        self.dir.join(format!("{id:08}.wal"))
    }

    /// Makes a created name durable (a new segment's name must survive a power cut as its
    /// records do).
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
        let (id, file) = match self.free.pop() {
            Some(free) => free,
            None => {
                let id = self.next;
                let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(self.path(id))?;
                self.next += 1;
                self.sync_dir()?;
                (id, super::FileStorage::from_file(file))
            }
        };
        self.files.insert(id, file);
        Ok(id)
    }
    fn release(&mut self, id: FileId) -> Result<()> {
        let file = self.files.get_mut(&id).ok_or_else(|| no_such(id))?;
        file.truncate(0).and_then(|()| file.flush())?;
        if let Some(file) = self.files.remove(&id) {
            self.free.push((id, file));
        }
        Ok(())
    }
}

/// The lock of a store directory: a `LOCK` file holding `walnut-lock 1`, then `pid <pid>`,
/// `start <ticks>` (the process's start time, field 22 of `/proc/<pid>/stat`, empty where
/// unknown) and `host <name>` lines: the format `www/volume-node.js` writes, so a Node process
/// and a native one exclude each other. A lock whose holder is gone (no such process on this
/// host, or another process under its pid) is stale and taken over; checking needs `/proc`, so
/// elsewhere a lock of another process is taken as live. Removed when dropped.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug)]
pub struct DirLock {
    path: std::path::PathBuf,
}

#[cfg(not(target_arch = "wasm32"))]
impl DirLock {
    /// The lock file's name in a store directory.
    pub const FILE: &'static str = "LOCK";
    const MAGIC: &'static str = "walnut-lock 1";

    /// Takes the lock of `dir`, or fails with [`Error::Locked`] naming the holder.
    pub fn take(dir: &std::path::Path) -> Result<DirLock> {
        use std::io::Write;
        let path = dir.join(Self::FILE);
        let pid = std::process::id();
        let me =
            format!("{}\npid {pid}\nstart {}\nhost {}\n", Self::MAGIC, start_time(pid).unwrap_or_default(), hostname());
        for _ in 0..8 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    f.write_all(me.as_bytes())?;
                    f.sync_all()?;
                    return Ok(DirLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            let holder = parse_lock(&text);
            let live = match &holder {
                Some((pid, start, host)) => lock_holder_alive(*pid, start, host),
                // Being written this instant, or its writer died between creating and writing it.
                None => std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .map(|t| t.elapsed().map_or(true, |age| age.as_secs() < 5))
                    .unwrap_or(false),
            };
            if live {
                let who = holder.map_or("another process".to_string(), |(pid, _, host)| {
                    if host == hostname() {
                        format!("process {pid}")
                    } else {
                        format!("process {pid} on host {host}")
                    }
                });
                return Err(Error::Locked {
                    detail: format!(
                        "store directory {} is open in {who} (if that process is gone for good, delete {})",
                        dir.display(),
                        path.display()
                    ),
                });
            }
            // Stale: removed only if it still reads the same (another opener may have taken
            // it meanwhile).
            if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
                let _ = std::fs::remove_file(&path);
            }
        }
        Err(Error::Locked { detail: format!("could not take {} (contended)", path.display()) })
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `(pid, start, host)` of a lock file's text, or `None` if it is not one (yet).
#[cfg(not(target_arch = "wasm32"))]
fn parse_lock(text: &str) -> Option<(u32, String, String)> {
    let mut lines = text.lines();
    if lines.next()? != DirLock::MAGIC {
        return None;
    }
    let (mut pid, mut start, mut host) = (None, String::new(), String::new());
    for line in lines {
        let (k, v) = line.split_once(' ').unwrap_or((line, ""));
        match k {
            "pid" => pid = v.parse().ok().filter(|&p| p > 0),
            "start" => start = v.to_string(),
            "host" => host = v.to_string(),
            _ => {}
        }
    }
    Some((pid?, start, host))
}

/// Whether the process a lock names runs: same host, and (where `/proc` tells) a process with
/// that pid started at that time.
#[cfg(not(target_arch = "wasm32"))]
fn lock_holder_alive(pid: u32, start: &str, host: &str) -> bool {
    if host != hostname() {
        return true; // another machine's process: cannot tell
    }
    if pid == std::process::id() {
        // This process takes a directory's lock once per open; a lock naming it is left by a
        // dead process whose pid came round again, or by an open of this process that is
        // still open (a second open of one directory, refused).
        return start_time(pid).as_deref() == Some(start) && std::path::Path::new("/proc").exists();
    }
    if !std::path::Path::new("/proc/self/stat").exists() {
        return true; // no /proc: cannot tell
    }
    match start_time(pid) {
        None => false,
        Some(now) => start.is_empty() || now == start,
    }
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot), if there is one.
#[cfg(not(target_arch = "wasm32"))]
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    rest.split(' ').nth(19).map(str::to_string)
}

#[cfg(not(target_arch = "wasm32"))]
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}
