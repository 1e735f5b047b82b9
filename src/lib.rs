//! walnut: a durable key-value store for web apps and edge workers.
//!
//! A chunked, backward-linked write-ahead log (UnisonDB) written with positioned writes
//! through a batch buffer (FlintDB) onto any [`Storage`] with the shape of the browser's
//! `FileSystemSyncAccessHandle`. Opening a store runs recovery, which exposes only committed
//! values. The on-disk format is specified in `docs/FORMAT.md`.
//!
//! ```
//! use walnut::{Durability, MemoryStorage, Options, Store};
//! let mut store = Store::open(MemoryStorage::new(), Options::default())?;
//! store.put(b"greeting", b"hello", Durability::Strict)?;
//! assert_eq!(store.get(b"greeting")?.as_deref(), Some(&b"hello"[..]));
//! # Ok::<(), walnut::Error>(())
//! ```
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod clock;
pub mod error;
pub mod export;
pub mod format;
pub mod index;
pub mod lifecycle;
pub mod storage;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod txn;
pub mod wal;

#[cfg(target_arch = "wasm32")]
pub mod wasm;

pub use error::{Error, Result};
pub use index::{ChunkLoc, Entry, KeyInfo, KeyRange};
pub use lifecycle::CompactStep;
#[cfg(not(target_arch = "wasm32"))]
pub use storage::{DirVolume, FileStorage};
pub use storage::{MemoryStorage, MemoryVolume, Storage, Volume};
pub use store::{
    BatchOp, Change, Durability, IdCommit, IdStatus, Options, Outcome, Stats, Store, TableInfo, Ticket, TxnId,
    ValueCheck,
};
pub use txn::{AbsentRead, TxCommit, TxRead, MAX_TX_DEPTH};
pub use wal::recovery::{DiscardReason, Discarded, RecoveryMode, RecoveryReport};
