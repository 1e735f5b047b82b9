//! Test doubles for walnut and for applications built on it (the `testing` feature; not part
//! of the default build): backends that fail on purpose, the way real media and browsers do.
//!
//! - [`FaultyStorage`] fails one chosen operation: an error, a short count (Firefox at quota),
//!   an absurd count (Chrome at quota returned 0xFFFFFFF8), a disk that stays full. redb's
//!   fuzzer counts down to an I/O failure the same way.
//! - [`CrashStorage`] models what a flush guarantees: bytes written since the last flush may
//!   be lost, kept, or torn at any byte, chosen per 4 KiB page by a seed (redb's
//!   `crash_consistency` test separates live from durable bytes the same way).
//! - [`CrashVolume`] is a volume of [`CrashStorage`] files with a power switch and a disk
//!   that can fill: the power cut after the Nth mutating operation (write, flush, truncate,
//!   file create or release) across every file, after which operations succeed but change
//!   nothing, as if the machine had died while the program ran on; and a quota switch that
//!   fails every write as a full disk does. [`CrashVolume::crash_image`] then applies the
//!   crash model to what was not flushed.
//! - [`model`] checks a store on a [`CrashVolume`] against a model through any sequence of
//!   operations, faults and crashes.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::storage::{MemoryStorage, Storage, Volume};

pub mod model;

/// Deterministic bytes (xorshift), different for each seed, so failures reproduce.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Which operation fails, counted from 0 over the life of the [`FaultyStorage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Never fail.
    None,
    /// The Nth write returns an I/O error and writes nothing.
    FailWrite(u64),
    /// The Nth write writes half its bytes and reports that count.
    ShortWrite(u64),
    /// The Nth write writes nothing and reports 0xFFFF_FFF8 bytes.
    AbsurdWrite(u64),
    /// The Nth write fails with [`Error::QuotaExceeded`], and so does every later write until
    /// [`FaultyStorage::set_fault`] lifts it (a full disk that stays full).
    QuotaFrom(u64),
    /// The Nth flush fails.
    FailFlush(u64),
    /// The Nth truncate fails.
    FailTruncate(u64),
}

#[derive(Debug, Default)]
struct Counts {
    writes: u64,
    flushes: u64,
    truncates: u64,
}

/// Wraps a storage and fails the operation [`Fault`] names. Clones share the counters.
#[derive(Debug, Clone)]
pub struct FaultyStorage<S> {
    inner: S,
    fault: Arc<Mutex<(Fault, Counts)>>,
}

impl<S: Storage> FaultyStorage<S> {
    /// Wraps `inner`; `fault` fires when its count comes up.
    pub fn new(inner: S, fault: Fault) -> Self {
        FaultyStorage { inner, fault: Arc::new(Mutex::new((fault, Counts::default()))) }
    }

    /// Replaces the fault and resets the counters (e.g. `Fault::None` once space is freed).
    pub fn set_fault(&self, fault: Fault) {
        if let Ok(mut f) = self.fault.lock() {
            *f = (fault, Counts::default());
        }
    }

    /// Counts one operation of a kind; returns the fault in force and the operation's index.
    fn tick(&self, count: fn(&mut Counts) -> &mut u64) -> Result<(Fault, u64)> {
        let mut st: MutexGuard<'_, (Fault, Counts)> =
            self.fault.lock().map_err(|_| Error::io("lock", "fault state poisoned"))?;
        let n = count(&mut st.1);
        *n += 1;
        let index = *n - 1;
        Ok((st.0, index))
    }
}

impl<S: Storage> Storage for FaultyStorage<S> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        self.inner.read_at(buf, offset)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<usize> {
        let (fault, n) = self.tick(|c| &mut c.writes)?;
        match fault {
            Fault::FailWrite(k) if k == n => Err(Error::io("write", "injected write failure")),
            Fault::ShortWrite(k) if k == n => self.inner.write_at(buf.get(..buf.len() / 2).unwrap_or_default(), offset),
            Fault::AbsurdWrite(k) if k == n => Ok(0xFFFF_FFF8),
            Fault::QuotaFrom(k) if n >= k => Err(Error::quota("write", "injected: quota exhausted")),
            _ => self.inner.write_at(buf, offset),
        }
    }

    fn size(&self) -> Result<u64> {
        self.inner.size()
    }

    fn truncate(&mut self, len: u64) -> Result<()> {
        let (fault, n) = self.tick(|c| &mut c.truncates)?;
        match fault {
            Fault::FailTruncate(k) if k == n => Err(Error::io("truncate", "injected truncate failure")),
            _ => self.inner.truncate(len),
        }
    }

    fn flush(&mut self) -> Result<()> {
        let (fault, n) = self.tick(|c| &mut c.flushes)?;
        match fault {
            Fault::FailFlush(k) if k == n => Err(Error::io("flush", "injected flush failure")),
            _ => self.inner.flush(),
        }
    }
}

/// Page size of the crash model, bytes: the unit a crash keeps, loses or tears.
pub const CRASH_PAGE: usize = 4096;

#[derive(Debug, Default)]
struct CrashState {
    /// What survives any crash: the bytes as of the last flush.
    durable: Vec<u8>,
    /// What reads see now.
    live: Vec<u8>,
    /// Pages written since the last flush.
    dirty: BTreeSet<usize>,
}

/// An in-memory file that remembers what was flushed. [`CrashStorage::crash`] returns the
/// bytes a power cut could leave. Clones share the file.
#[derive(Debug, Clone, Default)]
pub struct CrashStorage {
    state: Arc<Mutex<CrashState>>,
}

/// A small deterministic generator (splitmix64), so a seed names one crash exactly.
#[derive(Debug, Clone)]
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl CrashStorage {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// A file whose `bytes` are already durable.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        let st = CrashState { durable: bytes.clone(), live: bytes, dirty: BTreeSet::new() };
        CrashStorage { state: Arc::new(Mutex::new(st)) }
    }

    fn lock(&self) -> Result<MutexGuard<'_, CrashState>> {
        self.state.lock().map_err(|_| Error::io("lock", "crash storage mutex poisoned"))
    }

    /// The bytes as reads see them now.
    pub fn live(&self) -> Vec<u8> {
        self.lock().map(|s| s.live.clone()).unwrap_or_default()
    }

    /// The bytes a crash now could leave, chosen by `seed`: each page written since the last
    /// flush is lost (its durable bytes), kept (its live bytes) or torn (live bytes up to a
    /// random byte, durable after); the file's length is the durable or the live one.
    pub fn crash(&self, seed: u64) -> Vec<u8> {
        let Ok(st) = self.lock() else { return Vec::new() };
        let mut rng = SplitMix(seed);
        let len = if rng.next() % 2 == 0 { st.live.len() } else { st.durable.len() };
        let mut out = st.durable.clone();
        out.resize(st.live.len().max(st.durable.len()), 0);
        for &page in &st.dirty {
            let start = page * CRASH_PAGE;
            let end = (start + CRASH_PAGE).min(st.live.len());
            if start >= end {
                continue;
            }
            let keep_to = match rng.next() % 3 {
                0 => start,
                1 => end,
                _ => start + (rng.next() as usize % (end - start)),
            };
            if let (Some(dst), Some(src)) = (out.get_mut(start..keep_to), st.live.get(start..keep_to)) {
                dst.copy_from_slice(src);
            }
        }
        out.truncate(len);
        out
    }

    /// The bytes of crashes that keep only the durable bytes but for one page written since the
    /// last flush, torn after each of its first `head` bytes in turn (a short write at the start
    /// of a page, such as a file header's, torn at every byte). The file keeps its live length.
    pub fn torn_heads(&self, head: usize) -> Vec<Vec<u8>> {
        let Ok(st) = self.lock() else { return Vec::new() };
        let mut out = Vec::new();
        for &page in &st.dirty {
            let start = page * CRASH_PAGE;
            let end = (start + head).min(st.live.len());
            for keep_to in start..end {
                let mut bytes = st.durable.clone();
                bytes.resize(st.live.len(), 0);
                if let (Some(dst), Some(src)) = (bytes.get_mut(start..=keep_to), st.live.get(start..=keep_to)) {
                    dst.copy_from_slice(src);
                }
                out.push(bytes);
            }
        }
        out
    }

    /// What survives a crash that loses every write since the last flush.
    fn crash_durable(&self) -> Vec<u8> {
        self.lock().map(|s| s.durable.clone()).unwrap_or_default()
    }

    /// Crashes with `seed` and returns a fresh, fully durable file holding what survived.
    pub fn crashed(&self, seed: u64) -> CrashStorage {
        CrashStorage::from_bytes(self.crash(seed))
    }
}

impl Storage for CrashStorage {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let st = self.lock()?;
        MemoryStorage::read_slice(&st.live, buf, offset)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<usize> {
        let mut st = self.lock()?;
        let n = MemoryStorage::write_slice(&mut st.live, buf, offset)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX) / CRASH_PAGE;
        let end = (usize::try_from(offset).unwrap_or(usize::MAX).saturating_add(buf.len()).max(1) - 1) / CRASH_PAGE;
        st.dirty.extend(start..=end);
        Ok(n)
    }

    fn size(&self) -> Result<u64> {
        Ok(self.lock()?.live.len() as u64)
    }

    fn truncate(&mut self, len: u64) -> Result<()> {
        let mut st = self.lock()?;
        let len = usize::try_from(len).map_err(|_| Error::io("truncate", "length out of range"))?;
        if len > st.live.len() {
            let from = st.live.len() / CRASH_PAGE;
            st.dirty.extend(from..=len / CRASH_PAGE);
        }
        st.live.resize(len, 0);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let mut st = self.lock()?;
        st.durable = st.live.clone();
        st.dirty.clear();
        Ok(())
    }
}

/// The power switch of a [`CrashVolume`]: cut after the Nth mutating operation (write, flush,
/// truncate, create or release) across all its files. Clones share the count.
#[derive(Debug, Clone, Default)]
pub struct Cut {
    budget: Rc<Cell<Option<u64>>>,
    used: Rc<Cell<u64>>,
}

impl Cut {
    /// Whether the next operation still happens.
    fn take(&self) -> bool {
        let n = self.used.get();
        self.used.set(n + 1);
        self.budget.get().is_none_or(|b| n < b)
    }
    /// Cuts the power after `ops` more operations from now.
    pub fn after(&self, ops: u64) {
        self.budget.set(Some(self.used.get() + ops));
    }
    /// Mutating operations so far.
    pub fn used(&self) -> u64 {
        self.used.get()
    }
}

/// A file of a [`CrashVolume`].
#[derive(Debug)]
pub struct CrashFile {
    inner: CrashStorage,
    cut: Cut,
    quota: Rc<Cell<bool>>,
    fill_after: Rc<Cell<Option<u64>>>,
}

impl Storage for CrashFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<usize> {
        if let Some(n) = self.fill_after.get() {
            self.fill_after.set(n.checked_sub(1));
            if n == 0 {
                self.quota.set(true);
            }
        }
        if self.quota.get() {
            return Err(Error::quota("write", "injected: disk full"));
        }
        if self.cut.take() {
            self.inner.write_at(buf, offset)
        } else {
            Ok(buf.len())
        }
    }
    fn size(&self) -> Result<u64> {
        self.inner.size()
    }
    fn truncate(&mut self, len: u64) -> Result<()> {
        if self.cut.take() {
            self.inner.truncate(len)
        } else {
            Ok(())
        }
    }
    fn flush(&mut self) -> Result<()> {
        if self.cut.take() {
            self.inner.flush()
        } else {
            Ok(())
        }
    }
}

/// A volume of [`CrashFile`]s: a power switch ([`CrashVolume::cut`]), a full-disk switch
/// ([`CrashVolume::quota`]), and the images a crash or a clean stop leaves.
#[derive(Debug, Default)]
pub struct CrashVolume {
    files: BTreeMap<u32, CrashFile>,
    /// Files whose creation or release happened after the cut: gone, or still there, on disk.
    ghosts: BTreeSet<u32>,
    released_after_cut: BTreeMap<u32, CrashStorage>,
    next: u32,
    pub cut: Cut,
    /// While set, every write fails with `QuotaExceeded` (a full disk); truncates and
    /// flushes still work, as they do on a full disk.
    pub quota: Rc<Cell<bool>>,
    /// Writes left before the disk fills (see [`CrashVolume::fill_after`]).
    fill_after: Rc<Cell<Option<u64>>>,
    /// While above 0, each release fails (`Io`, op `"release"`), counting down, and leaves the
    /// file as it was, still listed: a release that failed.
    pub failing_releases: Cell<u32>,
}

impl CrashVolume {
    /// A volume holding `files` (already durable).
    pub fn from_image(files: BTreeMap<u32, Vec<u8>>) -> Self {
        let mut v = CrashVolume { next: files.keys().next_back().map_or(0, |k| k + 1), ..CrashVolume::default() };
        for (id, bytes) in files {
            v.files.insert(
                id,
                CrashFile {
                    inner: CrashStorage::from_bytes(bytes),
                    cut: v.cut.clone(),
                    quota: v.quota.clone(),
                    fill_after: v.fill_after.clone(),
                },
            );
        }
        v
    }

    /// The disk fills after `writes` more writes succeed: the next one fails with
    /// `QuotaExceeded`, and so does every later one until [`CrashVolume::quota`] is cleared. A
    /// failure can so land on any write of an operation.
    pub fn fill_after(&self, writes: u64) {
        self.quota.set(false);
        self.fill_after.set(Some(writes));
    }

    /// The files as they are now (what a clean close leaves, or a reopen without a crash).
    pub fn live_image(&self) -> BTreeMap<u32, Vec<u8>> {
        self.files.iter().filter(|(id, _)| !self.ghosts.contains(id)).map(|(&id, f)| (id, f.inner.live())).collect()
    }

    /// Crash images in which every file is as durable as it is, but for one page of one file
    /// torn after each of its first `head` bytes ([`CrashStorage::torn_heads`]).
    pub fn torn_images(&self, head: usize) -> Vec<BTreeMap<u32, Vec<u8>>> {
        let base: BTreeMap<u32, Vec<u8>> = self
            .files
            .iter()
            .filter(|(id, _)| !self.ghosts.contains(id))
            .map(|(&id, f)| (id, f.inner.crash_durable()))
            .chain(self.released_after_cut.iter().map(|(&id, f)| (id, f.crash_durable())))
            .collect();
        let mut out = Vec::new();
        for (&id, f) in &self.files {
            for torn in f.inner.torn_heads(head) {
                let mut image = base.clone();
                image.insert(id, torn);
                out.push(image);
            }
        }
        out
    }

    /// The files as a crash now would leave them.
    pub fn crash_image(&self, seed: u64) -> BTreeMap<u32, Vec<u8>> {
        let mut out = BTreeMap::new();
        for (id, f) in &self.files {
            if !self.ghosts.contains(id) {
                out.insert(*id, f.inner.crash(seed ^ u64::from(*id)));
            }
        }
        for (id, f) in &self.released_after_cut {
            out.insert(*id, f.crash(seed ^ u64::from(*id)));
        }
        out
    }
}

impl Volume for CrashVolume {
    type File = CrashFile;
    fn ids(&self) -> Vec<u32> {
        self.files.keys().copied().collect()
    }
    fn file(&self, id: u32) -> Result<&CrashFile> {
        self.files.get(&id).ok_or_else(|| Error::io("open", format!("no file {id}")))
    }
    fn file_mut(&mut self, id: u32) -> Result<&mut CrashFile> {
        self.files.get_mut(&id).ok_or_else(|| Error::io("open", format!("no file {id}")))
    }
    fn create(&mut self) -> Result<u32> {
        let id = self.next;
        self.next += 1;
        if !self.cut.take() {
            self.ghosts.insert(id);
        }
        self.files.insert(
            id,
            CrashFile {
                inner: CrashStorage::new(),
                cut: self.cut.clone(),
                quota: self.quota.clone(),
                fill_after: self.fill_after.clone(),
            },
        );
        Ok(id)
    }
    fn release(&mut self, id: u32) -> Result<()> {
        if !self.files.contains_key(&id) {
            return Err(Error::io("release", format!("no file {id}")));
        }
        if self.failing_releases.get() > 0 {
            self.failing_releases.set(self.failing_releases.get() - 1);
            return Err(Error::io("release", "EIO"));
        }
        let f = self.files.remove(&id).ok_or_else(|| Error::io("release", format!("no file {id}")))?;
        if !self.cut.take() && !self.ghosts.contains(&id) {
            self.released_after_cut.insert(id, f.inner);
        }
        Ok(())
    }
}
