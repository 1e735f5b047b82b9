//! The one error type of the core.
//!
//! "Key absent" is never an error: lookups return `Ok(None)` (sled's habit of keeping outcomes
//! apart from failures). Every variant maps to a stable JS error name ([`Error::js_name`]).

use std::fmt;
use std::sync::Arc;

/// Result alias used throughout the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in walnut.
///
/// `#[non_exhaustive]`: match with a wildcard arm; new failure kinds may be added.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The storage backend failed (`op` is `"read"`, `"write"`, `"flush"`, `"truncate"`,
    /// `"size"` or `"open"`), including short or absurd write counts. `source`: the platform's
    /// own error where there is one (a native `std::io::Error`), for
    /// [`std::error::Error::source`].
    Io { op: &'static str, detail: String, source: Option<Source> },
    /// Bytes read from storage do not form what the format requires (bad magic, unknown
    /// version, a record pointing outside the log...). `at` is the location
    /// ([`crate::format::loc`]: segment and byte offset in it; a file offset in a single-file
    /// store).
    Corruption { at: u64, detail: String },
    /// A record's stored CRC32 differs from the CRC32 of the bytes read back; `at` as for
    /// [`Error::Corruption`].
    ChecksumMismatch { at: u64, stored: u32, computed: u32 },
    /// An earlier I/O error left the writer in an unknown state: writes are refused until the
    /// store is reopened (which recovers everything acknowledged). Reads keep working.
    /// (redb's `PreviousIo`, fjall's `Poisoned`.) `cause` is that first error, also
    /// [`std::error::Error::source`].
    Poisoned { cause: Box<Error> },
    /// The storage quota is exhausted (a browser `QuotaExceededError`, or a short/absurd write
    /// count, which is how Chrome and Firefox report quota on sync access handles). `op` is the
    /// operation refused (`"write"`, `"create"`...).
    QuotaExceeded { op: &'static str, detail: String },
    /// Another holder has the log open (OPFS `NoModificationAllowedError`), and the bounded
    /// retry ran out.
    Locked { detail: String },
    /// A caller passed a bad argument; `param` names it.
    InvalidArgument { param: &'static str, detail: String },
    /// The store was closed.
    Closed,
    /// A transaction id that is not open, or an operation out of order within a transaction.
    Transaction { txn: u64, detail: String },
    /// The environment cannot host the store (e.g. OPFS outside a dedicated worker).
    Unsupported { detail: String },
    /// An optimistic transaction or a conditional write lost a race: a key or range it read
    /// (or a version it was given) changed before it could commit. Nothing was written; read
    /// again and retry. `detail` names the key's table and says what changed.
    Conflict { detail: String },
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(param: &'static str, detail: impl Into<String>) -> Self {
        Error::InvalidArgument { param, detail: detail.into() }
    }

    /// Shorthand for [`Error::Io`] without a source.
    pub fn io(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Io { op, detail: detail.into(), source: None }
    }

    /// Shorthand for [`Error::QuotaExceeded`].
    pub fn quota(op: &'static str, detail: impl Into<String>) -> Self {
        Error::QuotaExceeded { op, detail: detail.into() }
    }

    /// The stable name this error carries as a JS `Error.name`. Documented in README.md;
    /// never renamed.
    pub fn js_name(&self) -> &'static str {
        match self {
            Error::Io { .. } => "WalnutIoError",
            Error::Corruption { .. } => "WalnutCorruptionError",
            Error::ChecksumMismatch { .. } => "WalnutChecksumError",
            Error::Poisoned { .. } => "WalnutPoisonedError",
            Error::QuotaExceeded { .. } => "WalnutQuotaExceededError",
            Error::Locked { .. } => "WalnutLockedError",
            Error::InvalidArgument { .. } => "WalnutInvalidArgumentError",
            Error::Closed => "WalnutClosedError",
            Error::Transaction { .. } => "WalnutTransactionError",
            Error::Unsupported { .. } => "WalnutUnsupportedError",
            Error::Conflict { .. } => "WalnutConflictError",
        }
    }

    /// Whether this error means the storage itself failed (and so poisons the writer).
    pub(crate) fn is_storage_failure(&self) -> bool {
        matches!(self, Error::Io { .. } | Error::QuotaExceeded { .. })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { op, detail, .. } => write!(f, "storage {op} failed: {detail}"),
            Error::Corruption { at, detail } => {
                write!(f, "log corrupt at {}: {detail}", Location(*at))
            }
            Error::ChecksumMismatch { at, stored, computed } => {
                write!(f, "checksum mismatch at {}: stored {stored:#010x}, computed {computed:#010x}", Location(*at))
            }
            Error::Poisoned { cause } => {
                write!(f, "store refuses writes after an earlier I/O error ({cause}); reopen it to recover")
            }
            Error::QuotaExceeded { op, detail } => write!(f, "storage quota exceeded ({op}): {detail}"),
            Error::Locked { detail } => write!(f, "store is locked by another holder: {detail}"),
            Error::InvalidArgument { param, detail } => {
                write!(f, "invalid argument `{param}`: {detail}")
            }
            Error::Closed => write!(f, "store is closed"),
            Error::Transaction { txn, detail } => write!(f, "transaction {txn}: {detail}"),
            Error::Unsupported { detail } => write!(f, "unsupported environment: {detail}"),
            Error::Conflict { detail } => write!(f, "conflict: {detail}; nothing was written"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source: Some(s), .. } => Some(&*s.0),
            Error::Poisoned { cause } => Some(&**cause),
            _ => None,
        }
    }
}

/// The platform error under an [`Error::Io`]. Shared, so errors stay cheap to clone; compared
/// by its text, so errors stay comparable.
#[derive(Clone)]
pub struct Source(pub Arc<dyn std::error::Error + Send + Sync>);

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl PartialEq for Source {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_string() == other.0.to_string()
    }
}

impl Eq for Source {}

/// A location as people read it: "segment 3, offset 4096".
struct Location(u64);

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (segment, offset) = (crate::format::loc_segment(self.0), crate::format::loc_offset(self.0));
        write!(f, "segment {segment}, offset {offset}")
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::StorageFull {
            Error::quota("io", e.to_string())
        } else {
            Error::Io { op: "io", detail: e.to_string(), source: Some(Source(Arc::new(e))) }
        }
    }
}
