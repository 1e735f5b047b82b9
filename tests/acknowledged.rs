//! No acknowledged write lost: the ways a commit that was answered as durable could go missing,
//! each reproduced as it was found.
//!
//! The contract every test here checks: a group commit is acknowledged when the committer's
//! `sync()` returns `Ok` (or its own outcome says durable); from then on it survives any crash
//! with its exact bytes. A commit whose flush failed for lack of space is reported failed and
//! is absent, now and after any crash ("failed" never means "maybe").
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{pattern, CrashVolume};
use walnut::{Durability, Options, Outcome, Store, Ticket};

fn small() -> Options {
    Options { chunk_size: 1024, segment_size: 8192, checkpoint_bytes: 0, compaction_ratio: 1.0, ..Options::default() }
}

/// The value of `key` in every state a crash now could leave (a few crash seeds), and in the
/// running store.
fn everywhere(s: &Store<CrashVolume>, key: &[u8]) -> Vec<Option<Vec<u8>>> {
    let mut seen = vec![s.get(key).unwrap()];
    for seed in 0..4 {
        let image = s.volume().crash_image(seed);
        let reopened = Store::open(CrashVolume::from_image(image), small()).unwrap();
        seen.push(reopened.get(key).unwrap());
    }
    seen
}

/// A group commit of `key` = `value` stands as its ticket says: committed (then `sync()` may
/// only have returned `Ok` if every commit did) and everywhere, or failed and nowhere.
fn assert_outcome_holds(s: &Store<CrashVolume>, synced: &walnut::Result<()>, ticket: Ticket, key: &[u8], value: &[u8]) {
    let seen = everywhere(s, key);
    let lens = seen.iter().map(|v| v.as_ref().map(Vec::len)).collect::<Vec<_>>();
    match s.outcome(ticket) {
        Outcome::Committed => {
            assert!(
                seen.iter().all(|v| v.as_deref() == Some(value)),
                "{key:?} was acknowledged, but is missing: {lens:?}"
            )
        }
        Outcome::Failed(e) => {
            assert!(synced.is_err(), "sync() returned Ok, but {key:?} failed ({e})");
            assert!(seen.iter().all(Option::is_none), "{key:?} was failed ({e}), but is there: {lens:?}");
        }
        Outcome::Queued => panic!("{key:?} is still queued after sync()"),
    }
}

#[test]
fn a_quota_failure_taken_by_a_relaxed_write_is_not_hidden_from_the_group() {
    let v = CrashVolume::default();
    let quota = v.quota.clone();
    let mut s = Store::open(v, small()).unwrap();
    s.put(b"a", b"group", Durability::Group).unwrap();
    let a = s.last_ticket();
    quota.set(true);
    // The relaxed write may not overtake the group: it flushes it, and the flush fails.
    assert!(s.put(b"b", b"relaxed", Durability::Relaxed).is_err());
    quota.set(false);
    let synced = s.sync();
    assert!(synced.is_err(), "the group's own sync must hear of the failure");
    assert!(matches!(s.outcome(a), Outcome::Failed(walnut::Error::QuotaExceeded { .. })), "{:?}", s.outcome(a));
    assert_outcome_holds(&s, &synced, a, b"a", b"group");
}

#[test]
fn a_quota_failure_taken_by_a_checkpoint_is_not_hidden_from_the_group() {
    let v = CrashVolume::default();
    let quota = v.quota.clone();
    let mut s = Store::open(v, small()).unwrap();
    s.put(b"a", b"group", Durability::Group).unwrap();
    let a = s.last_ticket();
    quota.set(true);
    assert!(s.checkpoint().is_err());
    quota.set(false);
    let synced = s.sync();
    assert!(synced.is_err(), "the group's own sync must hear of the failure");
    assert!(matches!(s.outcome(a), Outcome::Failed(walnut::Error::QuotaExceeded { .. })), "{:?}", s.outcome(a));
    assert_outcome_holds(&s, &synced, a, b"a", b"group");
}

#[test]
fn a_quota_failure_inside_automatic_compaction_is_not_hidden_from_the_group() {
    let opts = Options { compaction_ratio: 0.3, ..small() };
    let v = CrashVolume::default();
    let quota = v.quota.clone();
    let mut s = Store::open(v, opts).unwrap();
    // Overwrites: dead bytes pass the ratio over several segments, so every commit runs a
    // compaction step.
    for round in 0..12 {
        for i in 0..8u64 {
            s.put(format!("k{i}").as_bytes(), &pattern(300, round * 100 + i), Durability::Relaxed).unwrap();
        }
    }
    s.sync().unwrap();
    assert!(s.stats().dead_ratio >= 0.3 && s.stats().segments > 2, "{:?}", s.stats());
    quota.set(true);
    let mut acked = Vec::new();
    for i in 0..12u64 {
        let (k, v) = (format!("g{i}").into_bytes(), pattern(200, 9000 + i));
        if s.put(&k, &v, Durability::Group).is_ok() {
            acked.push((s.last_ticket(), k, v));
        }
    }
    quota.set(false);
    assert!(!acked.is_empty(), "group commits are buffered, so they are taken");
    let synced = s.sync();
    assert!(synced.is_err(), "a compaction step's failed flush carried the group: its sync must say so");
    let failed = acked.iter().filter(|(t, _, _)| matches!(s.outcome(*t), Outcome::Failed(_))).count();
    assert!(failed > 0, "the disk was full: some group commit failed");
    for (t, k, v) in &acked {
        assert_outcome_holds(&s, &synced, *t, k, v);
    }
}

#[test]
fn a_checkpoint_taken_while_a_transaction_is_open_keeps_every_commit_before_it() {
    let mut s = Store::open(walnut::MemoryVolume::default(), small()).unwrap();
    s.put(b"k", b"old", Durability::Strict).unwrap();
    let a = s.begin().unwrap();
    s.txn_put(a, b"k", false).unwrap();
    s.txn_chunk(a, b"A's value").unwrap();
    let b = s.begin().unwrap(); // never commits: the checkpoint replays from its BEGIN
    s.txn_put(b, b"x", false).unwrap();
    s.txn_chunk(b, b"B's value").unwrap();
    s.delete(b"k", Durability::Strict).unwrap();
    s.commit(a, Durability::Strict).unwrap();
    assert_eq!(s.get(b"k").unwrap().unwrap(), b"A's value");
    s.checkpoint().unwrap();
    let crashed = s.volume().clone();
    drop(s); // a crash: B stays open

    let s = Store::open(crashed, small()).unwrap();
    assert!(s.recovery().checkpoint.is_some());
    assert_eq!(s.get(b"k").unwrap().as_deref(), Some(&b"A's value"[..]), "{:?}", s.recovery());
    assert_eq!(s.get(b"x").unwrap(), None);
    let reasons: Vec<_> = s.recovery().discarded.iter().map(|d| (d.txn, d.reason.clone())).collect();
    assert_eq!(reasons, [(b, walnut::DiscardReason::Incomplete)], "only B is discarded, and not as broken");
}

#[test]
fn a_reader_keeps_its_segments_across_a_quota_rollback() {
    let v = CrashVolume::default();
    let quota = v.quota.clone();
    let mut s = Store::open(v, small()).unwrap();
    let old = pattern(20_000, 1);
    s.put(b"big", &old, Durability::Strict).unwrap();
    let entry = s.entry(b"big").unwrap().unwrap();
    s.pin(&entry.chunks); // a stream opened on the old value
    s.put(b"big", &pattern(20_000, 2), Durability::Strict).unwrap(); // its segments are now dead
    s.checkpoint().unwrap(); // which keeps them for the reader
    quota.set(true);
    assert!(matches!(s.put(b"x", &pattern(9000, 3), Durability::Strict), Err(walnut::Error::QuotaExceeded { .. })));
    quota.set(false);
    s.checkpoint().unwrap();
    let mut read = Vec::new();
    let mut buf = Vec::new();
    for c in &entry.chunks {
        s.read_chunk(c, &mut buf).unwrap();
        read.extend_from_slice(&buf);
    }
    assert!(read == old, "the stream reads the value it opened, whole");
    s.unpin(&entry.chunks);
}
