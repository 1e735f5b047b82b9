use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::Storage;
use crate::error::Result;

/// A native file written with positioned I/O (`pwrite`/`pread` through
/// [`std::os::unix::fs::FileExt`]; never a seek), flushed with `fdatasync`.
#[derive(Debug)]
pub struct FileStorage {
    file: File,
}

impl FileStorage {
    /// Opens `path` for reading and writing, creating it if absent.
    ///
    /// Errors: [`crate::Error::Io`] if the file cannot be opened.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        Ok(Self { file })
    }

    /// Wraps a file opened for reading and writing.
    pub fn from_file(file: File) -> Self {
        Self { file }
    }
}

impl Storage for FileStorage {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        loop {
            match self.file.read_at(buf, offset) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => return Ok(r?),
            }
        }
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<usize> {
        // pwrite may legitimately write less than asked (signals, RLIMIT_FSIZE); finish the
        // job here and report the total, so the engine's count check sees the real outcome.
        let mut done = 0usize;
        while let Some(rest) = buf.get(done..).filter(|r| !r.is_empty()) {
            match self.file.write_at(rest, offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(done)
    }

    fn size(&self) -> Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn truncate(&mut self, len: u64) -> Result<()> {
        Ok(self.file.set_len(len)?)
    }

    fn flush(&mut self) -> Result<()> {
        Ok(self.file.sync_data()?)
    }
}
