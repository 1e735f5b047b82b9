//! Crash consistency, exhaustively on a small log: cut the log at every byte offset (every
//! record boundary and every torn offset inside a record) and flip every bit of every byte.
//! Each time, recovery must expose exactly the committed prefix: the state after the last
//! commit whose record lies wholly before the damage.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::collections::BTreeMap;

use common::*;
use walnut::format::FILE_HEADER_LEN;
use walnut::{Durability, Error, KeyRange, MemoryStorage, Store};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// A log with single-record puts and deletes, interleaved multi-chunk transactions, a batch,
/// an aborted and an abandoned transaction. Returns the bytes and, for each acknowledged
/// commit, the log length once it was durable and the state it left.
fn workload() -> (Vec<u8>, Vec<(u64, Model)>) {
    let mem = MemoryStorage::new();
    let mut s = Store::open(mem.clone(), small_chunks()).unwrap();
    let mut model = Model::new();
    let mut points = vec![(mem.to_vec().len() as u64, model.clone())];
    let mut ack = |s: &Store<MemoryStorage>, model: &Model| {
        let _ = s;
        points.push((mem.to_vec().len() as u64, model.clone()));
    };

    s.put(b"a", b"one", Durability::Strict).unwrap();
    model.insert(b"a".to_vec(), b"one".to_vec());
    ack(&s, &model);

    let big = pattern(150, 1);
    let t1 = s.begin().unwrap();
    s.txn_put(t1, b"big", false).unwrap();
    s.txn_chunk(t1, &big[..70]).unwrap();
    s.put(b"b", b"two", Durability::Strict).unwrap(); // lands between the chunks of t1
    model.insert(b"b".to_vec(), b"two".to_vec());
    ack(&s, &model);
    s.txn_chunk(t1, &big[70..]).unwrap();
    s.commit(t1, Durability::Strict).unwrap();
    model.insert(b"big".to_vec(), big.clone());
    ack(&s, &model);

    assert!(s.delete(b"a", Durability::Strict).unwrap());
    model.remove(&b"a"[..]);
    ack(&s, &model);

    let t2 = s.begin().unwrap();
    s.txn_put(t2, b"big", false).unwrap();
    s.txn_chunk(t2, &pattern(90, 2)).unwrap();
    s.abort(t2).unwrap();

    s.batch(
        &[walnut::BatchOp::Put { key: b"c", value: &pattern(80, 3) }, walnut::BatchOp::Delete { key: b"b" }],
        Durability::Strict,
    )
    .unwrap();
    model.insert(b"c".to_vec(), pattern(80, 3));
    model.remove(&b"b"[..]);
    ack(&s, &model);

    let t3 = s.begin().unwrap();
    s.txn_put(t3, b"big", false).unwrap();
    s.txn_chunk(t3, &pattern(64, 4)).unwrap();
    s.put(b"d", b"", Durability::Strict).unwrap();
    model.insert(b"d".to_vec(), Vec::new());
    ack(&s, &model);
    // t3 is never committed.
    drop(s);
    (mem.to_vec(), points)
}

fn state(s: &Store<MemoryStorage>) -> Model {
    s.keys(&KeyRange::default())
        .unwrap()
        .into_iter()
        .map(|k| {
            let v = s.get(&k.key).unwrap().unwrap();
            (k.key, v)
        })
        .collect()
}

/// The state after the last commit that ends at or before `limit` (the empty store, whose
/// first point is the bare file header, for a cut inside the header).
fn committed_before(points: &[(u64, Model)], limit: u64) -> &Model {
    &points.iter().rev().find(|(end, _)| *end <= limit).unwrap_or(&points[0]).1
}

#[test]
fn cut_at_every_byte_offset_exposes_exactly_the_committed_prefix() {
    let (log, points) = workload();
    let spans = record_spans(&log);
    assert_eq!(spans.last().unwrap().1, log.len() as u64, "workload log parses end to end");
    for cut in 0..=log.len() {
        let mem = MemoryStorage::from_bytes(log[..cut].to_vec());
        let s = Store::open(mem.clone(), small_chunks()).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        assert_eq!(&state(&s), committed_before(&points, cut as u64), "cut at {cut}");
        let boundary = spans.iter().map(|s| s.1).filter(|&e| e <= cut as u64).max().unwrap_or(FILE_HEADER_LEN as u64);
        let r = s.recovery();
        assert_eq!(r.log_bytes, boundary, "cut at {cut}: log kept up to the last whole record");
        if cut >= FILE_HEADER_LEN {
            assert_eq!(r.bytes_truncated, cut as u64 - boundary, "cut at {cut}");
        }
        assert_eq!(mem.to_vec().len() as u64, boundary, "cut at {cut}: torn bytes removed from the file");
    }
    println!("crash points: cut at every byte: {}", log.len() + 1);
}

#[test]
fn every_single_bit_flip_exposes_a_committed_prefix() {
    let (log, points) = workload();
    let spans = record_spans(&log);
    let mut tried = 0;
    for byte in 0..log.len() {
        for bit in 0..8 {
            let mut bad = log.clone();
            bad[byte] ^= 1 << bit;
            tried += 1;
            let opened = Store::open(MemoryStorage::from_bytes(bad), small_chunks());
            if byte < FILE_HEADER_LEN {
                assert!(
                    matches!(opened, Err(Error::Corruption { .. } | Error::ChecksumMismatch { .. })),
                    "flip in the file header at {byte}.{bit} must refuse to open"
                );
                continue;
            }
            let s = opened.unwrap_or_else(|e| panic!("flip at {byte}.{bit}: {e}"));
            let (start, _) = *spans.iter().find(|(st, end)| (*st..*end).contains(&(byte as u64))).unwrap();
            assert_eq!(&state(&s), committed_before(&points, start), "flip at {byte}.{bit}");
            assert_eq!(s.recovery().truncated_at, Some(start), "flip at {byte}.{bit} cuts at its record");
        }
    }
    println!("crash points: every bit flipped: {tried}");
}

#[test]
fn recovery_after_a_cut_accepts_new_writes_that_survive() {
    let (log, points) = workload();
    for cut in (FILE_HEADER_LEN..=log.len()).step_by(7) {
        let mem = MemoryStorage::from_bytes(log[..cut].to_vec());
        let mut s = Store::open(mem.clone(), small_chunks()).unwrap();
        let lsn_before = s.stats().next_lsn;
        s.put(b"new", &pattern(100, 9), Durability::Strict).unwrap();
        assert!(s.stats().next_lsn > lsn_before);
        drop(s);
        let s = Store::open(mem, small_chunks()).unwrap();
        let mut expect = committed_before(&points, cut as u64).clone();
        expect.insert(b"new".to_vec(), pattern(100, 9));
        assert_eq!(state(&s), expect, "cut at {cut}, then a new put");
    }
}

mod arbitrary_bytes {
    use super::*;
    use proptest::prelude::*;
    use walnut::format::FileHeader;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Any bytes after a valid header: recovery never panics, never fails the open, and
        /// leaves a log that reopens to the same state.
        #[test]
        fn recovery_never_panics_after_a_valid_header(tail in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut bytes = FileHeader { base_lsn: 1, segment: 0 }.encode().to_vec();
            bytes.extend_from_slice(&tail);
            let mem = MemoryStorage::from_bytes(bytes);
            let s = Store::open(mem.clone(), small_chunks()).unwrap();
            let first = state(&s);
            drop(s);
            let again = Store::open(mem, small_chunks()).unwrap();
            prop_assert_eq!(again.recovery().bytes_truncated, 0);
            prop_assert_eq!(state(&again), first);
        }

        /// Arbitrary whole files: an error or a store, never a panic.
        #[test]
        fn recovery_never_panics_on_any_file(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Store::open(MemoryStorage::from_bytes(bytes), small_chunks());
        }

        /// Records spliced from a real log in random order and with random damage.
        #[test]
        fn recovery_never_panics_on_spliced_records(picks in proptest::collection::vec((0usize..64, any::<u8>(), 0usize..4096), 0..24)) {
            let (log, _) = workload();
            let spans = record_spans(&log);
            let mut bytes = log[..FILE_HEADER_LEN].to_vec();
            for (i, flip, at) in picks {
                let (s, e) = spans[i % spans.len()];
                let mut rec = log[s as usize..e as usize].to_vec();
                let n = rec.len();
                rec[at % n] ^= flip;
                bytes.extend_from_slice(&rec);
            }
            let _ = Store::open(MemoryStorage::from_bytes(bytes), small_chunks());
        }
    }
}
