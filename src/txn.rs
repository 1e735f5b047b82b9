//! Interactive transactions (SynapseDB's half of the design): BEGIN, reads and writes, nested
//! transactions as a stack of layers, and COMMIT or ABORT, with optimistic concurrency
//! control and commit ids; and conditional writes (compare-and-set on a key's version).
//!
//! A transaction is one log transaction: its puts (streamed values too) and deletes are
//! written as its records while it runs, invisible to everyone else until its COMMIT. A nested
//! transaction is a savepoint on that log transaction: committing it keeps its records (they
//! merge into the parent), aborting it writes a ROLLBACK (format version 6) that takes its
//! records off the chain, so recovery never applies them. Nothing nested is visible before the
//! outermost COMMIT, which is the only commit point.
//!
//! Concurrency control is optimistic (Kung and Robinson, 1981) and serializable: every key a
//! transaction reads is remembered with its version, every range with the keys and versions
//! it held. At COMMIT, with every earlier commit applied, each must be unchanged; otherwise
//! the transaction aborts with [`Error::Conflict`] and its caller runs it again. Reads also
//! re-check what was read before whenever anything committed in between, so a transaction
//! never sees two states at once (no read of a value and of another written after it).
//!
//! A version is the LSN of the record that made a key's current value ([`Entry::lsn`]); an
//! absent key has none. Compaction moving a value gives it a new version, so a check may
//! fail spuriously (rarely: only values in segments being compacted move); it never passes
//! wrongly.

use crate::error::{Error, Result};
use crate::format::{ikey, split_ikey};
use crate::index::{Entry, KeyInfo, KeyRange, Op};
use crate::storage::Volume;
use crate::store::{check_id, Durability, IdCommit, Store, TxnId};
use crate::wal::log::Savepoint;

/// Deepest nesting of transactions: the outermost is depth 1.
pub const MAX_TX_DEPTH: usize = 32;

/// Keys with their versions, in key order: what a range held.
type Versions = Vec<(Vec<u8>, u64)>;

/// An interactive transaction's bookkeeping (its writes are in the log transaction).
#[derive(Debug, Default)]
pub(crate) struct Tx {
    /// Savepoints of the nested transactions open inside it, innermost last.
    layers: Vec<Savepoint>,
    /// Keys read (internal keys) with the version each had.
    reads: Vec<(Vec<u8>, Option<u64>)>,
    /// Ranges scanned: the table, the range as asked (without its limit) and what it held.
    ranges: Vec<(u32, KeyRange, Versions)>,
    /// `Log::applied` when the reads were last checked.
    checked_at: u64,
    /// Reads in tables that did not exist: the table's name and the key read, or the range
    /// listed. Once such a table exists, the key must still be absent and the range empty.
    absent: Vec<(String, AbsentRead)>,
}

/// What a transaction read in a table that did not exist (see [`Store::tx_note_absent`]).
#[derive(Debug, Clone)]
pub enum AbsentRead {
    Key(Vec<u8>),
    Range(KeyRange),
}

/// A transaction's read of one key: its value's entry (committed, or the transaction's own
/// write) and its version (`None` for the transaction's own write or an absent key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxRead {
    pub entry: Entry,
    /// The committed version read; `None` when the value is the transaction's own write.
    pub version: Option<u64>,
}

/// How [`Store::tx_commit`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxCommit {
    /// Committed; its COMMIT's LSN (the version of every value it wrote) and the ticket to
    /// settle (see [`Store::commit`]).
    Applied { lsn: u64, ticket: crate::store::Ticket },
    /// A commit with the same id was made before: nothing was written (see [`IdCommit`]).
    Duplicate(crate::store::IdStatus),
}

impl<V: Volume> Store<V> {
    fn tx(&mut self, txn: TxnId) -> Result<&mut Tx> {
        self.txs.get_mut(&txn).ok_or_else(|| Error::Transaction { txn, detail: "is not an open transaction".into() })
    }

    /// Begins an interactive transaction (writes BEGIN) and returns its id. Use the `tx_*`
    /// calls with it, and end it with [`Store::tx_commit`] or [`Store::tx_abort`]. Streamed
    /// values go in with [`Store::txn_put_in`] and [`Store::txn_chunk`] on the same id.
    pub fn tx_begin(&mut self) -> Result<TxnId> {
        self.live()?;
        self.settle()?;
        let txn = self.begin()?;
        let checked_at = self.log.applied();
        self.txs.insert(txn, Tx { checked_at, ..Tx::default() });
        Ok(txn)
    }

    /// Whether `txn` is an interactive transaction still open.
    pub fn tx_open(&self, txn: TxnId) -> bool {
        self.txs.contains_key(&txn)
    }

    /// Nesting depth of `txn` (1: no nested transaction open).
    pub fn tx_depth(&self, txn: TxnId) -> Option<usize> {
        self.txs.get(&txn).map(|t| t.layers.len() + 1)
    }

    /// Checks what `txn` read against the committed state (every queued commit applied).
    fn tx_validate(&mut self, txn: TxnId) -> Result<()> {
        self.settle()?;
        let now = self.log.applied();
        let tx = self.txs.remove(&txn).ok_or_else(|| Error::Transaction { txn, detail: "is not open".into() })?;
        let r = self.check_reads(&tx);
        // Only a check that passed moves the mark: after a conflict every later read (and the
        // commit) checks again and fails, so the transaction never goes on with two states.
        let checked_at = if r.is_ok() { now } else { tx.checked_at };
        self.txs.insert(txn, Tx { checked_at, ..tx });
        r
    }

    fn check_reads(&self, tx: &Tx) -> Result<()> {
        for (ik, version) in &tx.reads {
            let now = self.index.get(ik).map(|e| e.lsn);
            if now != *version {
                let (table, _, key) = split_ikey(ik);
                return Err(Error::Conflict {
                    detail: format!("key {} of table {table} changed since the transaction read it", show(key)),
                });
            }
        }
        for (name, read) in &tx.absent {
            let Some(meta) = self.index.tables().by_name(name) else { continue };
            let present = match read {
                AbsentRead::Key(key) => self.index.get(&ikey(meta.id, key)).is_some(),
                AbsentRead::Range(range) => !self.committed_range(meta.id, range).is_empty(),
            };
            if present {
                return Err(Error::Conflict {
                    detail: format!("table {name:?} was created and written since the transaction read it absent"),
                });
            }
        }
        for (table, range, held) in &tx.ranges {
            if self.committed_range(*table, range) != *held {
                return Err(Error::Conflict {
                    detail: format!("keys in a range of table {table} changed since the transaction listed them"),
                });
            }
        }
        Ok(())
    }

    /// The committed keys of `range` in `table` with their versions (no limit).
    fn committed_range(&self, table: u32, range: &KeyRange) -> Versions {
        let all = KeyRange { limit: None, ..range.clone() };
        self.versions_of(table, &self.scan_table(table, &all))
    }

    /// The versions of `keys` (scanned from `table`), in their order.
    fn versions_of(&self, table: u32, keys: &[KeyInfo]) -> Versions {
        keys.iter().map(|k| (k.key.clone(), self.index.get(&ikey(table, &k.key)).map_or(0, |e| e.lsn))).collect()
    }

    /// Before a read: if anything committed since the last check, what was read must still hold.
    fn tx_before_read(&mut self, txn: TxnId) -> Result<()> {
        self.live()?;
        // A transaction a quota rollback dropped has lost its writes: it cannot read on.
        self.log.txn_alive(txn)?;
        self.settle()?;
        if self.tx(txn)?.checked_at != self.log.applied() {
            self.tx_validate(txn)?;
        }
        Ok(())
    }

    /// The transaction's own last write to internal key `ik`: `Some(Some(entry))` a put,
    /// `Some(None)` a delete, `None` if it did not write the key.
    fn own_write(&self, txn: TxnId, ik: &[u8]) -> Option<Option<Entry>> {
        self.log.pending(txn)?.iter().rev().find_map(|op| match op {
            Op::Put { key, entry } if key == ik => Some(Some(entry.clone())),
            Op::Delete { key } if key == ik => Some(None),
            _ => None,
        })
    }

    /// Reads `key` of `table` in `txn`: the transaction's own write if it made one, else the
    /// committed value, whose version is remembered for the commit's check.
    ///
    /// Errors: [`Error::Conflict`] if something read before changed meanwhile (the
    /// transaction cannot commit: abort and retry); as [`Store::get_in`].
    pub fn tx_read(&mut self, txn: TxnId, table: u32, key: &[u8]) -> Result<Option<TxRead>> {
        self.tx_before_read(txn)?;
        let ik = self.ik(table, key)?;
        if let Some(own) = self.own_write(txn, &ik) {
            // Its records may still be in the batch buffer: written out so they read back.
            self.log.write_out()?;
            return Ok(own.map(|entry| TxRead { entry, version: None }));
        }
        let entry = self.index.get(&ik).map(|e| e.into_owned());
        let version = entry.as_ref().map(|e| e.lsn);
        self.tx(txn)?.reads.push((ik, version));
        Ok(entry.map(|entry| TxRead { entry, version }))
    }

    /// Notes that `txn` read `read` (a key, or a range) in table `name`, which does not exist
    /// (so it read nothing): if the table is created and that key or range written before the
    /// commit, the commit (or a later read) fails with [`Error::Conflict`]. The table itself is
    /// not created.
    pub fn tx_note_absent(&mut self, txn: TxnId, name: &str, read: AbsentRead) -> Result<()> {
        self.tx_before_read(txn)?;
        if let Some(meta) = self.index.tables().by_name(name) {
            // It exists now: the read is a plain one (nothing was read yet, so nothing to check).
            let id = meta.id;
            return match read {
                AbsentRead::Key(key) => self.tx_read(txn, id, &key).map(drop),
                AbsentRead::Range(range) => self.tx_keys(txn, id, &range).map(drop),
            };
        }
        self.tx(txn)?.absent.push((name.to_string(), read));
        Ok(())
    }

    /// [`Store::tx_read`]'s whole value.
    pub fn tx_get(&mut self, txn: TxnId, table: u32, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.tx_read(txn, table, key)? {
            Some(r) => self.value_of(&r.entry).map(Some),
            None => Ok(None),
        }
    }

    /// The keys of `table` in `range` as `txn` sees them (its own writes over the committed
    /// state). The whole range (without its limit) is remembered for the commit's check: a
    /// key added to it or removed from it meanwhile is a conflict (no phantoms).
    pub fn tx_keys(&mut self, txn: TxnId, table: u32, range: &KeyRange) -> Result<Vec<KeyInfo>> {
        self.tx_before_read(txn)?;
        self.table_meta(table)?;
        let all = KeyRange { limit: None, ..range.clone() };
        let scanned = self.scan_table(table, &all);
        let held = self.versions_of(table, &scanned);
        let mut keys: std::collections::BTreeMap<Vec<u8>, KeyInfo> =
            scanned.into_iter().map(|k| (k.key.clone(), k)).collect();
        let whole = KeyRange { limit: None, reverse: false, ..range.clone() };
        for op in self.log.pending(txn).unwrap_or_default() {
            let (ik, put) = match op {
                Op::Put { key, entry } => (key, Some(entry)),
                Op::Delete { key } => (key, None),
                _ => continue,
            };
            let Some(user) = user_key(table, ik) else { continue };
            if !in_range(&whole, &user) {
                continue;
            }
            match put {
                Some(e) => {
                    keys.insert(user.clone(), KeyInfo { key: user, string_key: e.string_key, size: e.size });
                }
                None => {
                    keys.remove(&user);
                }
            }
        }
        self.tx(txn)?.ranges.push((table, all, held));
        let limit = range.limit.unwrap_or(usize::MAX);
        let out: Vec<KeyInfo> = if range.reverse {
            keys.into_values().rev().take(limit).collect()
        } else {
            keys.into_values().take(limit).collect()
        };
        Ok(out)
    }

    /// Puts a whole value in `txn` (its records are written now, visible at COMMIT).
    pub fn tx_put(&mut self, txn: TxnId, table: u32, key: &[u8], string_key: bool, value: &[u8]) -> Result<()> {
        self.tx(txn)?;
        self.txn_put_in(txn, table, key, string_key)?;
        self.txn_chunk(txn, value)
    }

    /// Deletes `key` of `table` in `txn` (visible at COMMIT).
    pub fn tx_delete(&mut self, txn: TxnId, table: u32, key: &[u8]) -> Result<()> {
        self.tx(txn)?;
        self.txn_delete_in(txn, table, key)
    }

    /// Opens a nested transaction inside `txn`; returns the new depth. Its writes merge into
    /// the parent at [`Store::tx_release`] and vanish at [`Store::tx_rollback`].
    ///
    /// Errors: [`Error::InvalidArgument`] (param `depth`) past [`MAX_TX_DEPTH`].
    pub fn tx_nest(&mut self, txn: TxnId) -> Result<usize> {
        self.live()?;
        let depth = self.tx(txn)?.layers.len() + 1;
        if depth >= MAX_TX_DEPTH {
            return Err(Error::invalid("depth", format!("transactions nest at most {MAX_TX_DEPTH} deep")));
        }
        let sp = self.log.savepoint(txn)?;
        self.tx(txn)?.layers.push(sp);
        Ok(depth + 1)
    }

    /// Commits the innermost nested transaction of `txn` into its parent; returns the depth left.
    pub fn tx_release(&mut self, txn: TxnId) -> Result<usize> {
        let tx = self.tx(txn)?;
        if tx.layers.pop().is_none() {
            return Err(Error::Transaction { txn, detail: "has no nested transaction open".into() });
        }
        Ok(tx.layers.len() + 1)
    }

    /// Aborts the innermost nested transaction of `txn`: its writes are rolled back (a
    /// ROLLBACK record) and the parent goes on. What it read stays in the read set (the
    /// parent's next steps may depend on why it failed). Returns the depth left.
    pub fn tx_rollback(&mut self, txn: TxnId) -> Result<usize> {
        self.live()?;
        let Some(sp) = self.tx(txn)?.layers.last().cloned() else {
            return Err(Error::Transaction { txn, detail: "has no nested transaction open".into() });
        };
        if let Err(e) = self.log.rollback_to(txn, &sp) {
            // Its writes could not be taken off the chain: the whole transaction is aborted,
            // never committed with them.
            let _ = self.tx_abort(txn);
            return Err(e);
        }
        let tx = self.tx(txn)?;
        tx.layers.pop();
        Ok(tx.layers.len() + 1)
    }

    /// Commits `txn` (every nested transaction still open commits with it): with every queued
    /// commit applied, checks that nothing it read changed, then writes COMMIT under `id` (if
    /// given) as `durability` asks. Nothing of it is visible before this.
    ///
    /// Errors: [`Error::Conflict`] when something it read changed (the transaction is aborted:
    /// run it again); [`Error::InvalidArgument`] (param `id`) for a bad id; as [`Store::commit`]
    /// (the transaction is then aborted).
    pub fn tx_commit(&mut self, txn: TxnId, id: Option<&[u8]>, durability: Durability) -> Result<TxCommit> {
        self.live()?;
        if let Some(id) = id {
            check_id(id)?;
        }
        let tx = self.txs.remove(&txn).ok_or_else(|| Error::Transaction { txn, detail: "is not open".into() })?;
        let checked = self.settle().and_then(|()| self.check_reads(&tx));
        if let Err(e) = checked {
            let _ = self.abort(txn);
            return Err(e);
        }
        let r = match id {
            Some(id) => self.commit_with_id(txn, id, durability),
            None => self.commit(txn, durability).map(IdCommit::Applied),
        };
        match r {
            Ok(IdCommit::Applied(ticket)) => Ok(TxCommit::Applied { lsn: self.last_lsn(), ticket }),
            Ok(IdCommit::Duplicate(status)) => Ok(TxCommit::Duplicate(status)),
            Err(e) => {
                let _ = self.abort(txn);
                Err(e)
            }
        }
    }

    /// Aborts `txn` and every nested transaction in it: ABORT is written, nothing is visible.
    pub fn tx_abort(&mut self, txn: TxnId) -> Result<()> {
        self.txs.remove(&txn);
        self.abort(txn)
    }

    // ----- conditional writes -----

    /// The version of `key` in `table`: the LSN of the record that made its current value, or
    /// `None` if it is absent (every queued commit applied first).
    pub fn version_of(&mut self, table: u32, key: &[u8]) -> Result<Option<u64>> {
        self.live()?;
        self.settle()?;
        let ik = self.ik(table, key)?;
        Ok(self.index.get(&ik).map(|e| e.lsn))
    }

    /// Checks versions: each `(table, key, version)` must be the key's current version
    /// (`None`: the key must be absent). Every queued commit is applied first.
    ///
    /// Errors: [`Error::Conflict`] naming the first key that differs.
    pub fn check_versions(&mut self, checks: &[(u32, &[u8], Option<u64>)]) -> Result<()> {
        self.live()?;
        self.settle()?;
        for &(table, key, version) in checks {
            let ik = self.ik(table, key)?;
            let now = self.index.get(&ik).map(|e| e.lsn);
            if now != version {
                let say = |v: Option<u64>| v.map_or("absent".to_string(), |v| format!("version {v}"));
                return Err(Error::Conflict {
                    detail: format!(
                        "key {} of table {table} is {}, the check expects {}",
                        show(key),
                        say(now),
                        say(version)
                    ),
                });
            }
        }
        Ok(())
    }
}

/// A key as an error message shows it: as text if it is printable, else in hex (at most 64
/// bytes of either).
fn show(key: &[u8]) -> String {
    let cut = &key[..key.len().min(64)];
    let more = if key.len() > 64 { "…" } else { "" };
    match std::str::from_utf8(cut) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => format!("{s:?}{more}"),
        _ => format!("0x{}{more}", cut.iter().map(|b| format!("{b:02x}")).collect::<String>()),
    }
}

/// The user key of internal key `ik` if it is a key of `table` (not a queue or feed entry,
/// not another table's).
fn user_key(table: u32, ik: &[u8]) -> Option<Vec<u8>> {
    let p = crate::format::table_prefix(table, crate::format::NS_KEYS);
    if table == 0 && ik.first() != Some(&crate::format::TABLE_TAG) {
        return Some(ik.to_vec());
    }
    ik.strip_prefix(&p[..]).map(<[u8]>::to_vec)
}

/// Whether user key `k` is in `r` (prefix, start inclusive, end exclusive).
fn in_range(r: &KeyRange, k: &[u8]) -> bool {
    r.prefix.as_deref().is_none_or(|p| k.starts_with(p))
        && r.start.as_deref().is_none_or(|s| k >= s)
        && r.end.as_deref().is_none_or(|e| k < e)
}
