//! Broken backward chains, crafted record by record. Each drops exactly its own transaction,
//! says why, and leaves every other transaction, before or after it, intact.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::*;
use walnut::format::Kind;
use walnut::{DiscardReason, MemoryStorage, Options, Store};

/// Opens `log`, asserts that `good` (a PUT_ONE written before the damage) and `after` (one
/// written after it) both survive, that `k` is absent, and returns the drop reasons.
fn open_and_check(log: LogBuilder) -> Vec<String> {
    let s = Store::open(MemoryStorage::from_bytes(log.bytes), Options::default()).unwrap();
    assert_eq!(s.get(b"before").unwrap().as_deref(), Some(&b"ok"[..]), "earlier data survives");
    assert_eq!(s.get(b"after").unwrap().as_deref(), Some(&b"ok"[..]), "later data survives");
    assert_eq!(s.get(b"k").unwrap(), None, "the broken transaction is invisible");
    assert_eq!(s.recovery().bytes_truncated, 0, "a broken chain is not a torn tail");
    s.recovery()
        .discarded
        .iter()
        .map(|d| match &d.reason {
            DiscardReason::BrokenChain(why) => why.clone(),
            other => format!("{other}"),
        })
        .collect()
}

fn with_damage(build: impl FnOnce(&mut LogBuilder)) -> Vec<String> {
    let mut log = LogBuilder::new();
    log.put_one(100, b"before", b"ok");
    build(&mut log);
    log.put_one(101, b"after", b"ok");
    open_and_check(log)
}

#[test]
fn an_honest_chain_commits() {
    let mut log = LogBuilder::new();
    let b = log.record(Kind::Begin, 0, 1, 0, &[]);
    let p = log.record(Kind::Put, 0, 1, b, b"k");
    let c1 = log.record(Kind::Chunk, 0, 1, p, b"hello ");
    let c2 = log.record(Kind::Chunk, 0, 1, c1, b"world");
    log.commit(1, c2, LogBuilder::claims(3, &[b"hello ", b"world"]));
    let s = Store::open(MemoryStorage::from_bytes(log.bytes), Options::default()).unwrap();
    assert_eq!(s.get(b"k").unwrap().unwrap(), b"hello world");
    assert_eq!(s.recovery().committed, 1);
}

#[test]
fn a_link_that_does_not_point_backwards_is_refused() {
    let why = with_damage(|log| {
        let b = log.record(Kind::Begin, 0, 1, 0, &[]);
        let p = log.record(Kind::Put, 0, 1, b, b"k");
        // The chunk links to itself: a one-record cycle.
        let self_at = log.bytes.len() as u64;
        log.record(Kind::Chunk, 0, 1, self_at, b"x");
        let _ = p;
        log.commit(1, self_at, LogBuilder::claims(2, &[b"x"]));
    });
    assert_eq!(why.len(), 1);
    assert!(why[0].contains("does not point backwards"), "{why:?}");
}

#[test]
fn a_two_record_cycle_is_refused() {
    let why = with_damage(|log| {
        let b = log.record(Kind::Begin, 0, 1, 0, &[]);
        let p = log.record(Kind::Put, 0, 1, b, b"k");
        let a_at = log.bytes.len() as u64;
        let b_at = a_at + 36 + 1;
        log.record(Kind::Chunk, 0, 1, b_at, b"a"); // forward, to the next chunk
        log.record(Kind::Chunk, 0, 1, a_at, b"b"); // and back again
        let _ = p;
        log.commit(1, b_at, LogBuilder::claims(3, &[b"a", b"b"]));
    });
    assert!(why[0].contains("does not point backwards"), "{why:?}");
}

#[test]
fn a_link_onto_another_transactions_record_is_refused() {
    let mut log = LogBuilder::new();
    log.put_one(100, b"before", b"ok");
    let b1 = log.record(Kind::Begin, 0, 1, 0, &[]);
    let b2 = log.record(Kind::Begin, 0, 2, 0, &[]);
    let p2 = log.record(Kind::Put, 0, 2, b2, b"other");
    let c2 = log.record(Kind::Chunk, 0, 2, p2, b"theirs");
    // Transaction 1's PUT links onto transaction 2's chunk instead of its own BEGIN.
    let p1 = log.record(Kind::Put, 0, 1, c2, b"k");
    let _ = b1;
    log.commit(1, p1, LogBuilder::claims(1, &[]));
    log.commit(2, c2, LogBuilder::claims(2, &[b"theirs"]));
    log.put_one(101, b"after", b"ok");
    let bytes = log.bytes.clone();
    let why = open_and_check(log);
    assert!(why[0].contains("does not land on a record of this transaction"), "{why:?}");
    let s = Store::open(MemoryStorage::from_bytes(bytes), Options::default()).unwrap();
    assert_eq!(s.get(b"other").unwrap().unwrap(), b"theirs", "the other transaction is intact");
}

#[test]
fn a_link_into_the_middle_of_a_record_is_refused() {
    let why = with_damage(|log| {
        let b = log.record(Kind::Begin, 0, 1, 0, &[]);
        let p = log.record(Kind::Put, 0, 1, b, b"k");
        let c = log.record(Kind::Chunk, 0, 1, p + 5, b"x");
        log.commit(1, c, LogBuilder::claims(2, &[b"x"]));
    });
    assert!(why[0].contains("does not land on a record"), "{why:?}");
}

#[test]
fn a_chain_that_skips_a_chunk_fails_the_count() {
    let why = with_damage(|log| {
        let b = log.record(Kind::Begin, 0, 1, 0, &[]);
        let p = log.record(Kind::Put, 0, 1, b, b"k");
        log.record(Kind::Chunk, 0, 1, p, b"first");
        let c2 = log.record(Kind::Chunk, 0, 1, p, b"second"); // skips "first"
        log.commit(1, c2, LogBuilder::claims(3, &[b"first", b"second"]));
    });
    assert!(why[0].contains("chain holds 2 records, COMMIT states 3"), "{why:?}");
}

#[test]
fn a_value_checksum_mismatch_is_refused() {
    let why = with_damage(|log| {
        let b = log.record(Kind::Begin, 0, 1, 0, &[]);
        let p = log.record(Kind::Put, 0, 1, b, b"k");
        let c = log.record(Kind::Chunk, 0, 1, p, b"actual");
        let mut claims = LogBuilder::claims(2, &[b"actual"]);
        claims.value_crc ^= 1;
        log.commit(1, c, claims);
    });
    assert!(why[0].contains("value checksum"), "{why:?}");
}

#[test]
fn a_length_mismatch_is_refused() {
    let why = with_damage(|log| {
        let b = log.record(Kind::Begin, 0, 1, 0, &[]);
        let p = log.record(Kind::Put, 0, 1, b, b"k");
        let c = log.record(Kind::Chunk, 0, 1, p, b"actual");
        let mut claims = LogBuilder::claims(2, &[b"actual"]);
        claims.value_bytes += 1;
        log.commit(1, c, claims);
    });
    assert!(why[0].contains("bytes"), "{why:?}");
}

#[test]
fn a_commit_without_begin_is_refused() {
    let why = with_damage(|log| {
        log.commit(1, 40, LogBuilder::claims(0, &[]));
    });
    assert!(why[0].contains("COMMIT without BEGIN"), "{why:?}");
}

#[test]
fn a_chunk_before_any_put_is_refused() {
    let why = with_damage(|log| {
        let b = log.record(Kind::Begin, 0, 1, 0, &[]);
        let c = log.record(Kind::Chunk, 0, 1, b, b"orphan");
        let p = log.record(Kind::Put, 0, 1, c, b"k");
        log.commit(1, p, LogBuilder::claims(2, &[b"orphan"]));
    });
    assert!(why[0].contains("belongs to no PUT"), "{why:?}");
}

#[test]
fn a_begin_with_a_link_is_refused() {
    let why = with_damage(|log| {
        let b = log.record(Kind::Begin, 0, 1, 32, &[]);
        let p = log.record(Kind::Put, 0, 1, b, b"k");
        log.commit(1, p, LogBuilder::claims(1, &[]));
    });
    assert_eq!(why, ["BEGIN links to a record"], "reported once, not again at its COMMIT");
}

#[test]
fn a_record_the_chain_skips_is_refused() {
    let why = with_damage(|log| {
        let b = log.record(Kind::Begin, 0, 1, 0, &[]);
        log.record(Kind::Put, 0, 1, b, b"a"); // on no chain
        let p = log.record(Kind::Put, 0, 1, b, b"k");
        log.commit(1, p, LogBuilder::claims(1, &[]));
    });
    assert!(why[0].contains("1 records of this transaction are not on its chain"), "{why:?}");
}

#[test]
fn ids_at_the_top_of_the_range_end_the_log_without_overflow() {
    for (lsn_bump, txn) in [(false, u64::MAX), (false, walnut::format::MAX_ID + 1), (true, 5)] {
        let mut log = LogBuilder::new();
        log.put_one(1, b"before", b"ok");
        if lsn_bump {
            log.next_lsn = u64::MAX;
        }
        log.put_one(txn, b"k", b"v");
        let s = Store::open(MemoryStorage::from_bytes(log.bytes), Options::default()).unwrap();
        assert_eq!(s.get(b"before").unwrap().unwrap(), b"ok");
        assert_eq!(s.get(b"k").unwrap(), None);
        assert!(s.recovery().truncated_at.is_some());
    }
}

#[test]
fn garbage_after_a_commit_is_cut_and_the_commit_stays() {
    let mut log = LogBuilder::new();
    let b = log.record(Kind::Begin, 0, 1, 0, &[]);
    let p = log.record(Kind::Put, 0, 1, b, b"k");
    let c = log.record(Kind::Chunk, 0, 1, p, b"v");
    log.commit(1, c, LogBuilder::claims(2, &[b"v"]));
    let clean = log.bytes.len() as u64;
    // A second COMMIT for the same transaction with a wrong LSN, then zeroes (fjall's
    // journal tests append repeated markers and garbage the same way).
    let repeat = log.bytes[(clean as usize - 56)..].to_vec();
    log.bytes.extend_from_slice(&repeat);
    log.bytes.extend_from_slice(&[0; 100]);
    let s = Store::open(MemoryStorage::from_bytes(log.bytes), Options::default()).unwrap();
    assert_eq!(s.get(b"k").unwrap().unwrap(), b"v");
    assert_eq!(s.recovery().truncated_at, Some(clean));
    assert_eq!(s.recovery().bytes_truncated, 156);
}
