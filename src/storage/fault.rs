//! Backends that fail on purpose, for tests of walnut and of applications built on it.
//!
//! - [`FaultyStorage`] fails one chosen operation the way real media and browsers do: an error,
//!   a short count (Firefox at quota), an absurd count (Chrome at quota returned 0xFFFFFFF8).
//!   redb's fuzzer counts down to an I/O failure the same way.
//! - [`CrashStorage`] models what a flush guarantees: bytes written since the last flush may
//!   be lost, kept, or torn at any byte, chosen per 4 KiB page by a seed (redb's
//!   `crash_consistency` test separates live from durable bytes the same way).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{MemoryStorage, Storage};
use crate::error::{Error, Result};

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
            Fault::QuotaFrom(k) if n >= k => Err(Error::QuotaExceeded { detail: "injected: quota exhausted".into() }),
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
