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

/// Queues a group commit of `a`, fills the disk, runs `fail` (which must fail at the full
/// disk), frees the disk: the group's own sync must hear of the failure and the put of `a` must
/// be failed and absent.
fn a_quota_failure_reaches_the_group(fail: impl FnOnce(&mut Store<CrashVolume>) -> walnut::Result<()>) {
    let v = CrashVolume::default();
    let quota = v.quota.clone();
    let mut s = Store::open(v, small()).unwrap();
    s.put(b"a", b"group", Durability::Group).unwrap();
    let a = s.last_ticket();
    quota.set(true);
    assert!(fail(&mut s).is_err());
    quota.set(false);
    let synced = s.sync();
    assert!(synced.is_err(), "the group's own sync must hear of the failure");
    assert!(matches!(s.outcome(a), Outcome::Failed(walnut::Error::QuotaExceeded { .. })), "{:?}", s.outcome(a));
    assert_outcome_holds(&s, &synced, a, b"a", b"group");
}

#[test]
fn a_quota_failure_taken_by_a_relaxed_write_is_not_hidden_from_the_group() {
    // The relaxed write may not overtake the group: it flushes it, and the flush fails.
    a_quota_failure_reaches_the_group(|s| s.put(b"b", b"relaxed", Durability::Relaxed));
}

#[test]
fn a_quota_failure_taken_by_a_checkpoint_is_not_hidden_from_the_group() {
    a_quota_failure_reaches_the_group(|s| s.checkpoint());
}

#[test]
fn a_quota_failure_inside_automatic_compaction_is_not_hidden_from_the_group() {
    let opts = Options { compaction_ratio: 0.3, ..small() };
    let v = CrashVolume::default();
    let quota = v.quota.clone();
    let mut s = Store::open(v, opts).unwrap();
    // Overwrites: dead bytes pass the ratio over several segments, so every commit runs a
    // compaction step. (Rounds until then: how many depends on the record sizes.)
    for round in 0..64 {
        for i in 0..8u64 {
            s.put(format!("k{i}").as_bytes(), &pattern(300, round * 100 + i), Durability::Relaxed).unwrap();
        }
        s.sync().unwrap();
        if round >= 11 && s.stats().dead_ratio >= 0.3 && s.stats().segments > 2 {
            break;
        }
    }
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

/// Small buffer, low direct-write threshold: records spill the buffer and large ones bypass it.
fn spilling() -> Options {
    Options {
        chunk_size: 4096,
        direct_write_threshold: 1000,
        batch_bytes: 200,
        segment_size: 1 << 20,
        checkpoint_bytes: 0,
        compaction_ratio: 1.0,
        ..Options::default()
    }
}

fn reopen_with(image: std::collections::BTreeMap<u32, Vec<u8>>, o: Options) -> Store<CrashVolume> {
    Store::open(CrashVolume::from_image(image), o).unwrap()
}

#[test]
fn a_strict_put_after_a_rollback_that_follows_a_buffer_spill_survives() {
    let v = CrashVolume::default();
    let quota = v.quota.clone();
    let mut s = Store::open(v, spilling()).unwrap();
    s.put(b"a", &pattern(300, 1), Durability::Strict).unwrap(); // spills the buffer
    quota.set(true);
    let r = s.put(b"b", &pattern(2000, 2), Durability::Strict); // a direct write, refused
    assert!(matches!(r, Err(walnut::Error::QuotaExceeded { .. })), "{r:?}");
    quota.set(false);
    s.put(b"c", b"acknowledged", Durability::Strict).unwrap();
    for image in [s.volume().live_image(), s.volume().crash_image(0)] {
        let r = reopen_with(image, spilling());
        assert_eq!(r.get(b"c").unwrap().as_deref(), Some(&b"acknowledged"[..]), "{:?}", r.recovery());
        assert_eq!(r.get(b"a").unwrap(), Some(pattern(300, 1)));
    }
}

#[test]
fn a_group_commit_written_before_a_failed_direct_write_keeps_its_true_outcome() {
    let v = CrashVolume::default();
    let quota = v.quota.clone();
    let mut s = Store::open(v, spilling()).unwrap();
    s.put(b"a", &pattern(300, 1), Durability::Group).unwrap(); // spills: written in full
    let a = s.last_ticket();
    quota.set(true);
    assert!(s.put(b"b", &pattern(2000, 2), Durability::Strict).is_err());
    quota.set(false);
    let synced = s.sync();
    assert_outcome_holds(&s, &synced, a, b"a", &pattern(300, 1));
    assert_eq!(s.outcome(a), Outcome::Committed, "it was written before the failure, and the rollback kept it");
}

#[test]
fn writes_after_a_cut_below_the_checkpoints_index_lsn_survive_the_next_recovery() {
    let o = spilling();
    let mut s = Store::open(CrashVolume::default(), o.clone()).unwrap();
    let t = s.begin().unwrap(); // stays open: the checkpoint replays from its BEGIN
    s.txn_put(t, b"open", false).unwrap();
    s.put(b"p1", b"one", Durability::Strict).unwrap();
    s.put(b"p2", b"two", Durability::Strict).unwrap();
    s.put(b"p3", b"three", Durability::Strict).unwrap();
    let at = s.entry(b"p2").unwrap().unwrap().chunks[0].record;
    s.checkpoint().unwrap();
    let mut image = s.volume().live_image();
    drop(s);
    let segment = image.values_mut().find(|b| b.starts_with(b"WALNUTLG")).unwrap();
    segment[walnut::format::loc_offset(at) as usize + 40] ^= 0xFF; // damage p2: the log is cut there
    let mut s = reopen_with(image, o.clone());
    assert!(s.recovery().truncated_at.is_some(), "{:?}", s.recovery());
    assert_eq!(s.get(b"p1").unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(s.get(b"p2").unwrap(), None);
    s.put(b"after", b"acknowledged", Durability::Strict).unwrap();
    let image = s.volume().crash_image(0);
    drop(s);
    let r = reopen_with(image, o);
    assert_eq!(r.get(b"after").unwrap().as_deref(), Some(&b"acknowledged"[..]), "{:?}", r.recovery());
    assert_eq!(r.get(b"p1").unwrap().as_deref(), Some(&b"one"[..]));
}

#[test]
fn a_strict_delete_answered_by_a_queued_delete_waits_for_it() {
    let v = CrashVolume::default();
    let quota = v.quota.clone();
    let mut s = Store::open(v, spilling()).unwrap();
    s.put(b"k", b"v", Durability::Strict).unwrap();
    s.delete(b"k", Durability::Group).unwrap();
    // The disk fills before the group's flush: the queued delete fails with it.
    quota.set(true);
    let strict = s.delete(b"k", Durability::Strict);
    quota.set(false);
    if strict.is_ok() {
        assert_eq!(s.get(b"k").unwrap(), None, "a strict delete returned Ok, yet k is there");
        for seed in 0..4 {
            let c = reopen_with(s.volume().crash_image(seed), spilling());
            assert_eq!(c.get(b"k").unwrap(), None, "a strict delete returned Ok, crash image {seed} still has k");
        }
    }
    // With room, a strict delete that only a queued delete answers waits for that delete.
    s.delete(b"k", Durability::Group).unwrap();
    assert!(!s.delete(b"k", Durability::Strict).unwrap() || s.get(b"k").unwrap().is_none());
    for seed in 0..4 {
        let c = reopen_with(s.volume().crash_image(seed), spilling());
        assert_eq!(c.get(b"k").unwrap(), None, "crash image {seed} still has k after a strict delete returned");
    }
}

#[test]
fn a_group_delete_answered_by_a_queued_delete_shares_its_outcome() {
    let v = CrashVolume::default();
    let quota = v.quota.clone();
    let mut s = Store::open(v, spilling()).unwrap();
    s.put(b"k", b"v", Durability::Strict).unwrap();
    assert!(s.delete(b"k", Durability::Group).unwrap());
    let first = s.last_ticket();
    s.put(b"other", b"x", Durability::Group).unwrap(); // a later commit, on another key
    assert!(!s.delete(b"k", Durability::Group).unwrap(), "the key is deleted, counting queued commits");
    let second = s.last_ticket();
    assert_eq!(second, first, "the second delete's outcome is the queued delete's");
    quota.set(true);
    assert!(s.sync().is_err());
    quota.set(false);
    assert!(matches!(s.outcome(second), Outcome::Failed(_)), "k is still there: the second delete failed too");
    assert_eq!(s.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
}

#[test]
fn close_reports_a_group_failure_no_sync_reported_even_when_poisoned() {
    let faulty = walnut::testing::FaultyStorage::new(walnut::MemoryStorage::new(), walnut::testing::Fault::None);
    let mut s = Store::open(faulty.clone(), Options::default()).unwrap();
    s.put(b"g", b"group", Durability::Group).unwrap();
    faulty.set_fault(walnut::testing::Fault::FailFlush(0));
    assert!(s.put(b"r", b"relaxed", Durability::Relaxed).is_err()); // its flush fails: poisoned
    faulty.set_fault(walnut::testing::Fault::None);
    assert!(s.close().is_err(), "close must not report success over the failed group commit");
}

#[test]
fn what_recovery_exposes_is_flushed_before_open_returns() {
    let storage = walnut::testing::CrashStorage::new();
    let mut s = Store::open(storage.clone(), Options::default()).unwrap();
    s.put(b"k", b"written by a holder that never flushed", Durability::Relaxed).unwrap();
    drop(s); // the holder goes (a closed tab): its bytes are written, not flushed
    let s = Store::open(storage.clone(), Options::default()).unwrap();
    assert!(s.get(b"k").unwrap().is_some(), "recovery exposes it");
    // A new leader answers for it now ("already committed"): no power cut may take it back.
    for seed in 0..16 {
        let r = Store::open(storage.crashed(seed), Options::default()).unwrap();
        assert!(r.get(b"k").unwrap().is_some(), "crash {seed} lost what open exposed");
    }
}
