use std::sync::{Arc, Mutex, MutexGuard};

use super::Storage;
use crate::error::{Error, Result};

/// An in-memory file. Clones share the same bytes, so a test can keep one clone, drop the
/// store (a "crash": nothing more is written) and reopen on what is left, or edit the bytes
/// (cut, flip) before reopening.
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl MemoryStorage {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// A file holding `bytes`.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self { bytes: Arc::new(Mutex::new(bytes)) }
    }

    /// A copy of the current contents.
    pub fn to_vec(&self) -> Vec<u8> {
        self.lock().map(|b| b.clone()).unwrap_or_default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Vec<u8>>> {
        self.bytes.lock().map_err(|_| Error::io("lock", "memory storage mutex poisoned"))
    }
}

fn to_index(offset: u64) -> Result<usize> {
    usize::try_from(offset).map_err(|_| Error::io("seek", format!("offset {offset} out of range")))
}

impl MemoryStorage {
    /// Reads from `bytes` as a file would (short at the end).
    pub(crate) fn read_slice(bytes: &[u8], buf: &mut [u8], offset: u64) -> Result<usize> {
        let start = to_index(offset)?.min(bytes.len());
        let n = buf.len().min(bytes.len() - start);
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), bytes.get(start..start + n)) {
            dst.copy_from_slice(src);
        }
        Ok(n)
    }

    /// Writes into `bytes` as a file would (zero-filling any gap).
    pub(crate) fn write_slice(bytes: &mut Vec<u8>, buf: &[u8], offset: u64) -> Result<usize> {
        let start = to_index(offset)?;
        let end = start.checked_add(buf.len()).ok_or_else(|| Error::io("write", "offset overflow"))?;
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        if let Some(dst) = bytes.get_mut(start..end) {
            dst.copy_from_slice(buf);
        }
        Ok(buf.len())
    }
}

impl Storage for MemoryStorage {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        Self::read_slice(&self.lock()?, buf, offset)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<usize> {
        Self::write_slice(&mut *self.lock()?, buf, offset)
    }

    fn size(&self) -> Result<u64> {
        Ok(self.lock()?.len() as u64)
    }

    fn truncate(&mut self, len: u64) -> Result<()> {
        let len = to_index(len)?;
        self.lock()?.resize(len, 0);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}
