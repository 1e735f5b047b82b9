//! Store behaviour, every body run on every backend: memory and file natively, memory and
//! OPFS in a dedicated worker of headless Chromium and Firefox (`wasm-pack test`).

mod common;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_dedicated_worker);

use common::*;
use walnut::{
    BatchOp, DiscardReason, Durability, Error, KeyRange, MemoryStorage, Options, Outcome, RecoveryMode, Storage, Store,
};

const MIB: usize = 1 << 20;

fn roundtrip_sizes_around_the_chunk_size<B: Backend>() {
    let b = B::fresh();
    let chunk = 4096;
    let sizes = [0, 1, chunk - 1, chunk, chunk + 1, 3 * chunk + 7];
    let opts = Options { chunk_size: chunk, ..Options::default() };
    {
        let mut s = open(&b, opts.clone());
        for (i, &n) in sizes.iter().enumerate() {
            s.put(format!("k{n}").as_bytes(), &pattern(n, i as u64), Durability::Strict).unwrap();
        }
        for (i, &n) in sizes.iter().enumerate() {
            assert_eq!(s.get(format!("k{n}").as_bytes()).unwrap().unwrap(), pattern(n, i as u64), "size {n}");
        }
    }
    let s = open(&b, opts);
    assert_eq!(s.recovery().committed, sizes.len() as u64);
    for (i, &n) in sizes.iter().enumerate() {
        let v = s.get(format!("k{n}").as_bytes()).unwrap().unwrap();
        assert_eq!(v, pattern(n, i as u64), "size {n} after reopen");
        let e = s.entry(format!("k{n}").as_bytes()).unwrap().unwrap();
        assert_eq!(e.size, n as u64);
        assert_eq!(e.chunks.len(), n.div_ceil(chunk), "chunk count for size {n}");
    }
}

fn roundtrip_100_mib_streamed_in_chunks<B: Backend>() {
    let b = B::fresh();
    let value = pattern(100 * MIB, 7);
    {
        let mut s = open(&b, Options::default());
        let t = s.begin().unwrap();
        s.txn_put(t, b"big", false).unwrap();
        // Uneven pieces, as a stream delivers them; the store re-chunks at chunk_size.
        for piece in value.chunks(3 * MIB + 17) {
            s.txn_chunk(t, piece).unwrap();
        }
        s.commit(t, Durability::Strict).unwrap();
    }
    let s = open(&b, Options::default());
    let e = s.entry(b"big").unwrap().unwrap().clone();
    assert_eq!(e.size, value.len() as u64);
    assert!(e.chunks.iter().all(|c| c.len as usize <= MIB));
    let mut buf = Vec::new();
    let mut at = 0usize;
    for c in &e.chunks {
        s.read_chunk(c, &mut buf).unwrap();
        assert_eq!(&buf[..], &value[at..at + buf.len()], "chunk at value offset {at}");
        at += buf.len();
    }
    assert_eq!(at, value.len());
}

fn interleaved_transactions_both_commit<B: Backend>() {
    let b = B::fresh();
    let big = pattern(1000, 1);
    {
        let mut s = open(&b, small_chunks());
        let t1 = s.begin().unwrap();
        s.txn_put(t1, b"big", false).unwrap();
        for (i, piece) in big.chunks(100).enumerate() {
            s.txn_chunk(t1, piece).unwrap();
            // Small puts land between the big value's chunks and are visible at once.
            s.put(format!("small{i}").as_bytes(), b"x", Durability::Strict).unwrap();
            assert!(s.has(format!("small{i}").as_bytes()).unwrap());
            assert!(!s.has(b"big").unwrap(), "uncommitted value must be invisible");
        }
        let t2 = s.begin().unwrap();
        s.txn_put(t2, b"other", false).unwrap();
        s.txn_chunk(t2, b"second").unwrap();
        s.commit(t2, Durability::Strict).unwrap();
        s.commit(t1, Durability::Strict).unwrap();
        assert_eq!(s.get(b"big").unwrap().unwrap(), big);
    }
    let s = open(&b, small_chunks());
    assert_eq!(s.get(b"big").unwrap().unwrap(), big);
    assert_eq!(s.get(b"other").unwrap().unwrap(), b"second");
    assert_eq!(s.keys(&KeyRange::default()).unwrap().len(), 12);
    assert!(s.recovery().discarded.is_empty());
}

fn uncommitted_transaction_is_dropped_and_reported<B: Backend>() {
    let b = B::fresh();
    {
        let mut s = open(&b, small_chunks());
        s.put(b"k", b"old", Durability::Strict).unwrap();
        let t = s.begin().unwrap();
        s.txn_put(t, b"k", false).unwrap();
        s.txn_chunk(t, &pattern(500, 3)).unwrap();
        s.put(b"after", b"1", Durability::Strict).unwrap();
        // Dropped without COMMIT: the tab closed mid-upload.
    }
    let s = open(&b, small_chunks());
    assert_eq!(s.get(b"k").unwrap().unwrap(), b"old");
    assert_eq!(s.get(b"after").unwrap().unwrap(), b"1");
    let r = s.recovery();
    assert_eq!(r.discarded.len(), 1);
    assert_eq!(r.discarded[0].reason, DiscardReason::Incomplete);
    assert_eq!(r.bytes_truncated, 0, "a clean log with an abandoned transaction is not torn");
}

fn abort_keeps_the_old_value_and_is_reported<B: Backend>() {
    let b = B::fresh();
    {
        let mut s = open(&b, small_chunks());
        s.put(b"k", b"old", Durability::Strict).unwrap();
        let t = s.begin().unwrap();
        s.txn_put(t, b"k", false).unwrap();
        s.txn_chunk(t, &pattern(300, 4)).unwrap();
        s.abort(t).unwrap();
        assert!(matches!(s.commit(t, Durability::Strict), Err(Error::Transaction { .. })));
        assert_eq!(s.get(b"k").unwrap().unwrap(), b"old");
        s.sync().unwrap();
    }
    let s = open(&b, small_chunks());
    assert_eq!(s.get(b"k").unwrap().unwrap(), b"old");
    assert_eq!(s.recovery().discarded[0].reason, DiscardReason::Aborted);
}

fn group_commit_is_visible_only_after_sync<B: Backend>() {
    let b = B::fresh();
    {
        let mut s = open(&b, Options::default());
        let flushes = s.stats().flushes;
        for i in 0..10u8 {
            s.put(&[b'g', i], &[i], Durability::Group).unwrap();
        }
        assert!(s.has_pending());
        assert!(!s.has(b"g\x00").unwrap(), "a group commit is invisible before its flush");
        assert!(s.delete(b"g\x03", Durability::Group).unwrap(), "delete sees queued puts");
        assert_eq!(s.stats().flushes, flushes, "nothing flushed before sync");
        s.sync().unwrap();
        assert_eq!(s.stats().flushes, flushes + 1, "eleven group commits, one flush");
        s.sync().unwrap();
        assert_eq!(s.stats().flushes, flushes + 1, "a sync with nothing written flushes nothing");
        assert_eq!(s.keys(&KeyRange::default()).unwrap().len(), 9);
        s.put(b"lost", b"never synced", Durability::Group).unwrap();
        // Dropped before sync: the record never left the batch buffer.
        std::mem::forget(s);
    }
    let s = open(&b, Options::default());
    assert_eq!(s.keys(&KeyRange::default()).unwrap().len(), 9);
    assert!(!s.has(b"lost").unwrap());
    assert!(!s.has(b"g\x03").unwrap());
}

fn relaxed_commit_does_not_overtake_queued_group_commits<B: Backend>() {
    let b = B::fresh();
    let mut s = open(&b, Options::default());
    s.put(b"k", b"group", Durability::Group).unwrap();
    s.put(b"k", b"relaxed", Durability::Relaxed).unwrap();
    assert_eq!(s.get(b"k").unwrap().unwrap(), b"relaxed");
    drop(s);
    assert_eq!(open(&b, Options::default()).get(b"k").unwrap().unwrap(), b"relaxed");
}

fn delete_batch_and_scans<B: Backend>() {
    let b = B::fresh();
    {
        let mut s = open(&b, small_chunks());
        s.put(b"a", b"1", Durability::Strict).unwrap();
        s.put_flagged(b"b/1", true, b"22", Durability::Strict).unwrap();
        s.batch(
            &[
                BatchOp::Put { key: b"b/2", value: &pattern(200, 9) },
                BatchOp::Delete { key: b"a" },
                BatchOp::Put { key: b"c", value: b"" },
            ],
            Durability::Strict,
        )
        .unwrap();
        assert!(!s.delete(b"zzz", Durability::Strict).unwrap());
        assert!(s.delete(b"c", Durability::Strict).unwrap());
    }
    let s = open(&b, small_chunks());
    let all = s.keys(&KeyRange::default()).unwrap();
    assert_eq!(all.iter().map(|k| k.key.as_slice()).collect::<Vec<_>>(), [&b"b/1"[..], b"b/2"]);
    assert!(all[0].string_key && !all[1].string_key);
    assert_eq!((all[0].size, all[1].size), (2, 200));
    assert_eq!(s.get(b"b/2").unwrap().unwrap(), pattern(200, 9));
    assert_eq!(s.stats().live_bytes, 202);
}

fn torn_tail_is_truncated_and_writes_go_on<B: Backend>() {
    let b = B::fresh();
    {
        let mut s = open(&b, small_chunks());
        s.put(b"k", b"v1", Durability::Strict).unwrap();
    }
    let clean = b.bytes();
    let mut torn = clean.clone();
    torn.extend_from_slice(&pattern(53, 5)); // garbage after the last commit
    b.set_bytes(&torn);
    {
        let mut s = open(&b, small_chunks());
        let r = s.recovery().clone();
        assert_eq!((r.bytes_truncated, r.truncated_at), (53, Some(clean.len() as u64)));
        assert!(r.tail_reason.is_some());
        assert_eq!(b.bytes(), clean, "the tail is cut off the file itself");
        s.put(b"k", b"v2", Durability::Strict).unwrap();
    }
    let s = open(&b, small_chunks());
    assert_eq!(s.get(b"k").unwrap().unwrap(), b"v2");
    assert_eq!(s.recovery().bytes_truncated, 0);
}

fn a_replayed_record_at_the_tail_is_refused_by_its_lsn<B: Backend>() {
    let b = B::fresh();
    {
        let mut s = open(&b, small_chunks());
        s.put(b"k", b"v1", Durability::Strict).unwrap();
        s.put(b"k", b"v2", Durability::Strict).unwrap();
    }
    let mut bytes = b.bytes();
    let spans = record_spans(&bytes);
    let (start, end) = spans[0];
    let first = bytes[start as usize..end as usize].to_vec();
    bytes.extend_from_slice(&first); // a valid, CRC-correct record of v1 appended again
    b.set_bytes(&bytes);
    let s = open(&b, small_chunks());
    assert_eq!(s.get(b"k").unwrap().unwrap(), b"v2");
    assert!(s.recovery().tail_reason.as_deref().unwrap().contains("LSN"));
}

fn absolute_consistency_refuses_instead_of_cutting<B: Backend>() {
    let b = B::fresh();
    drop(open(&b, small_chunks()));
    let mut bytes = b.bytes();
    bytes.extend_from_slice(b"garbage!");
    b.set_bytes(&bytes);
    let strict = Options { recovery_mode: RecoveryMode::AbsoluteConsistency, ..small_chunks() };
    assert!(matches!(Store::open(b.storage(), strict), Err(Error::Corruption { .. })));
    assert_eq!(b.bytes(), bytes, "nothing is cut in AbsoluteConsistency mode");
}

fn a_foreign_file_is_refused_and_left_untouched<B: Backend>() {
    let b = B::fresh();
    let foreign = b"SQLite format 3\0 and then some more bytes of someone else's file".to_vec();
    b.set_bytes(&foreign);
    assert!(matches!(Store::open(b.storage(), Options::default()), Err(Error::Corruption { .. })));
    let mut future = walnut::format::FileHeader { base_lsn: 1, segment: 0 }.encode().to_vec();
    future[8] = 9; // a later format version
    b.set_bytes(&future);
    let e = Store::open(b.storage(), Options::default()).err().unwrap();
    assert!(e.to_string().contains("version 9"), "{e}");
    assert_eq!(b.bytes(), future);
}

fn bad_arguments_are_named_and_change_nothing<B: Backend>() {
    let b = B::fresh();
    let mut s = open(&b, small_chunks());
    s.put(b"k", b"v", Durability::Strict).unwrap();
    let before = b.bytes();
    let named = |e: Error| match e {
        Error::InvalidArgument { param, .. } => param,
        other => panic!("expected InvalidArgument, got {other:?}"),
    };
    assert_eq!(named(s.put(b"", b"v", Durability::Strict).unwrap_err()), "key");
    assert_eq!(named(s.put(&vec![1; 70_000], b"v", Durability::Strict).unwrap_err()), "key");
    assert_eq!(named(s.delete(b"", Durability::Strict).unwrap_err()), "key");
    let bad = Options { chunk_size: 0, ..Options::default() };
    assert_eq!(named(Store::open(MemoryStorage::new(), bad).err().unwrap()), "chunkSize");
    assert!(matches!(s.txn_chunk(999, b"x"), Err(Error::Transaction { txn: 999, .. })));
    let t = s.begin().unwrap();
    assert!(matches!(s.txn_chunk(t, b"x"), Err(Error::Transaction { .. })), "chunk before put");
    s.abort(t).unwrap();
    s.sync().unwrap();
    assert_eq!(s.get(b"k").unwrap().unwrap(), b"v");
    // Only the BEGIN/ABORT of the misused transaction reached the log.
    assert_eq!(record_spans(&b.bytes()).len(), record_spans(&before).len() + 2);
    s.close().unwrap();
    assert_eq!(s.put(b"k", b"v", Durability::Strict), Err(Error::Closed));
    assert_eq!(s.get(b"k"), Err(Error::Closed));
}

fn a_commit_id_is_applied_once_even_across_a_reopen<B: Backend>() {
    use walnut::{IdCommit, IdStatus};
    let b = B::fresh();
    let mut s = open(&b, small_chunks());
    let batch = [BatchOp::Put { key: b"balance", value: b"100" }];
    assert!(matches!(s.batch_with_id(&batch, b"deposit-7", Durability::Strict).unwrap(), IdCommit::Applied(_)));
    let again = [BatchOp::Put { key: b"balance", value: b"200" }];
    assert!(matches!(
        s.batch_with_id(&again, b"deposit-7", Durability::Strict).unwrap(),
        IdCommit::Duplicate(IdStatus::Committed { .. })
    ));
    // A streamed transaction under an id that is taken is aborted, and writes nothing.
    let t = s.begin().unwrap();
    s.txn_put(t, b"balance", false).unwrap();
    s.txn_chunk(t, b"300").unwrap();
    assert!(matches!(s.commit_with_id(t, b"deposit-7", Durability::Strict).unwrap(), IdCommit::Duplicate(_)));
    assert_eq!(s.stats().open_transactions, 0);
    for bad in [&b""[..], &[b'x'; 129][..]] {
        assert!(matches!(
            s.batch_with_id(&again, bad, Durability::Strict),
            Err(Error::InvalidArgument { param: "id", .. })
        ));
    }
    assert_eq!(s.get(b"balance").unwrap().as_deref(), Some(&b"100"[..]));
    // One put under an id, in one call: applied once, its string flag kept.
    assert!(matches!(
        s.put_with_id(b"note", true, b"first", b"note-1", Durability::Strict).unwrap(),
        IdCommit::Applied(_)
    ));
    assert!(matches!(
        s.put_with_id(b"note", true, b"again", b"note-1", Durability::Strict).unwrap(),
        IdCommit::Duplicate(IdStatus::Committed { .. })
    ));
    let note = s.keys(&KeyRange { prefix: Some(b"note".to_vec()), ..KeyRange::default() }).unwrap();
    assert!(note[0].string_key && note[0].size == 5, "{note:?}");
    drop(s);
    let mut s = open(&b, small_chunks());
    assert!(matches!(
        s.put_with_id(b"note", true, b"later", b"note-1", Durability::Strict).unwrap(),
        IdCommit::Duplicate(_)
    ));
    assert!(matches!(s.id_status(b"deposit-7"), Some(IdStatus::Committed { .. })), "remembered after a reopen");
    assert!(matches!(s.batch_with_id(&again, b"deposit-7", Durability::Strict).unwrap(), IdCommit::Duplicate(_)));
    assert_eq!(s.get(b"balance").unwrap().as_deref(), Some(&b"100"[..]));
}

fn clear_deletes_every_key_at_once_and_counts_them<B: Backend>() {
    let b = B::fresh();
    {
        let mut s = open(&b, small_chunks());
        assert_eq!(s.clear(Durability::Strict).unwrap(), 0, "an empty store");
        assert_eq!(s.stats().next_lsn, 1, "clearing an empty store writes nothing");
        for i in 0..20u64 {
            s.put(format!("k{i:02}").as_bytes(), &pattern(50 + i as usize * 10, i), Durability::Strict).unwrap();
        }
        // A queued group commit counts: it is flushed, then cleared with the rest.
        s.put(b"queued", b"q", Durability::Group).unwrap();
        assert_eq!(s.clear(Durability::Strict).unwrap(), 21);
        assert!(s.keys(&KeyRange::default()).unwrap().is_empty());
        s.put(b"after", b"1", Durability::Strict).unwrap();
    }
    let s = open(&b, small_chunks());
    let keys: Vec<Vec<u8>> = s.keys(&KeyRange::default()).unwrap().into_iter().map(|k| k.key).collect();
    assert_eq!(keys, [b"after".to_vec()], "the clear and the write after it survive a reopen");
    assert_eq!(s.stats().live_bytes, 1);
}

every_backend!(
    a_commit_id_is_applied_once_even_across_a_reopen,
    clear_deletes_every_key_at_once_and_counts_them,
    roundtrip_sizes_around_the_chunk_size,
    roundtrip_100_mib_streamed_in_chunks,
    interleaved_transactions_both_commit,
    uncommitted_transaction_is_dropped_and_reported,
    abort_keeps_the_old_value_and_is_reported,
    group_commit_is_visible_only_after_sync,
    relaxed_commit_does_not_overtake_queued_group_commits,
    delete_batch_and_scans,
    torn_tail_is_truncated_and_writes_go_on,
    a_replayed_record_at_the_tail_is_refused_by_its_lsn,
    absolute_consistency_refuses_instead_of_cutting,
    a_foreign_file_is_refused_and_left_untouched,
    bad_arguments_are_named_and_change_nothing,
);

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn write_faults_poison_the_writer_and_reopen_recovers_what_was_acknowledged() {
    for fault in [Fault::FailWrite(3), Fault::ShortWrite(3), Fault::AbsurdWrite(3), Fault::FailFlush(3)] {
        let mem = MemoryStorage::new();
        let mut s = Store::open(FaultyStorage::new(mem.clone(), fault), Options::default()).unwrap();
        let mut acked = Vec::new();
        let mut failed = None;
        for i in 0..10u8 {
            match s.put(&[i], &[i; 10], Durability::Strict) {
                Ok(()) => acked.push(i),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let e = failed.unwrap_or_else(|| panic!("{fault:?} never fired"));
        assert!(matches!(e, Error::Io { .. }), "{fault:?}: {e:?}");
        assert!(matches!(s.put(b"later", b"x", Durability::Strict), Err(Error::Poisoned { .. })), "{fault:?}");
        assert!(matches!(s.begin(), Err(Error::Poisoned { .. })));
        assert!(s.stats().poisoned);
        for &i in &acked {
            assert_eq!(s.get(&[i]).unwrap().unwrap(), vec![i; 10], "reads go on after {fault:?}");
        }
        drop(s);
        let mut s = Store::open(mem.clone(), Options::default()).unwrap();
        for &i in &acked {
            assert_eq!(s.get(&[i]).unwrap().unwrap(), vec![i; 10], "acknowledged put {i} lost after {fault:?}");
        }
        s.put(b"later", b"x", Durability::Strict).unwrap();
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_file_shorter_than_its_header_starts_anew() {
    let mem = MemoryStorage::from_bytes(b"WALN".to_vec());
    let s = Store::open(mem.clone(), Options::default()).unwrap();
    assert_eq!(s.recovery().bytes_truncated, 4);
    assert_eq!(mem.size().unwrap(), walnut::format::FILE_HEADER_LEN as u64);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_full_disk_fails_writes_keeps_data_readable_and_writes_again_once_space_is_freed() {
    let mem = MemoryStorage::new();
    let faulty = FaultyStorage::new(mem.clone(), Fault::None);
    let mut s = Store::open(faulty.clone(), Options::default()).unwrap();
    s.put(b"old", b"kept", Durability::Strict).unwrap();
    faulty.set_fault(Fault::QuotaFrom(0));
    let e = s.put(b"new", &pattern(200_000, 1), Durability::Strict).unwrap_err();
    assert!(matches!(e, Error::QuotaExceeded { .. }), "{e:?}");
    assert_eq!(e.js_name(), "WalnutQuotaExceededError");
    assert_eq!(s.get(b"old").unwrap().unwrap(), b"kept", "reads go on");
    assert!(matches!(s.put(b"x", b"y", Durability::Strict), Err(Error::QuotaExceeded { .. })), "still full");
    faulty.set_fault(Fault::None); // space freed elsewhere
    s.put(b"new", b"fits now", Durability::Strict).unwrap();
    assert!(!s.stats().poisoned);
    assert!(s.stats().recoveries_in_place >= 1);
    drop(s);
    let s = Store::open(mem, Options::default()).unwrap();
    assert_eq!(s.get(b"old").unwrap().unwrap(), b"kept");
    assert_eq!(s.get(b"new").unwrap().unwrap(), b"fits now");
    assert_eq!(s.get(b"x").unwrap(), None);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn group_commits_queued_at_a_quota_failure_are_failed_and_gone_and_writes_go_on() {
    let mem = MemoryStorage::new();
    let faulty = FaultyStorage::new(mem.clone(), Fault::None);
    let mut s = Store::open(faulty.clone(), Options::default()).unwrap();
    s.put(b"a", b"1", Durability::Group).unwrap();
    let a = s.last_ticket();
    s.put(b"b", b"2", Durability::Group).unwrap();
    let b = s.last_ticket();
    faulty.set_fault(Fault::QuotaFrom(0));
    // A streamed value fills the disk while a and b wait for their group flush.
    let t = s.begin().unwrap();
    s.txn_put(t, b"big", false).unwrap();
    assert!(matches!(s.txn_chunk(t, &pattern(300_000, 2)), Err(Error::QuotaExceeded { .. })));
    for ticket in [a, b] {
        assert!(matches!(s.outcome(ticket), Outcome::Failed(Error::QuotaExceeded { .. })), "{:?}", s.outcome(ticket));
    }
    // The log was rolled back to what was written: writes go on (buffered until space frees).
    s.put(b"c", b"3", Durability::Group).unwrap();
    let c = s.last_ticket();
    faulty.set_fault(Fault::None);
    assert!(matches!(s.sync(), Err(Error::QuotaExceeded { .. })), "the group's sync reports the failure of a and b");
    assert_eq!(s.outcome(c), Outcome::Committed);
    assert!(s.sync().is_ok(), "reported once");
    assert!(
        matches!(s.txn_chunk(t, b"more"), Err(Error::QuotaExceeded { .. })),
        "the upload was dropped, and its caller hears why"
    );
    s.abort(t).unwrap();
    s.put(b"d", b"4", Durability::Strict).unwrap();
    let expect = |s: &Store<_>| {
        for k in [&b"a"[..], b"b", b"big"] {
            assert_eq!(s.get(k).unwrap(), None, "{:?} was failed", k);
        }
        assert_eq!(s.get(b"c").unwrap().unwrap(), b"3");
        assert_eq!(s.get(b"d").unwrap().unwrap(), b"4");
    };
    expect(&s);
    drop(s);
    expect(&Store::open(FaultyStorage::new(mem, Fault::None), Options::default()).unwrap());
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_failed_flush_poisons_until_reopen_even_when_the_disk_recovers() {
    let mem = MemoryStorage::new();
    let faulty = FaultyStorage::new(mem.clone(), Fault::None);
    let mut s = Store::open(faulty.clone(), Options::default()).unwrap();
    faulty.set_fault(Fault::FailFlush(0));
    assert!(matches!(s.put(b"k", b"v", Durability::Strict), Err(Error::Io { op: "flush", .. })));
    faulty.set_fault(Fault::None);
    assert!(matches!(s.put(b"k", b"v", Durability::Strict), Err(Error::Poisoned { .. })));
    assert!(matches!(s.sync(), Err(Error::Poisoned { .. })));
    drop(s);
    let mut s = Store::open(mem, Options::default()).unwrap();
    s.put(b"k", b"v", Durability::Strict).unwrap();
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn errors_keep_their_source_and_the_operation_that_failed() {
    use std::error::Error as _;
    let mem = MemoryStorage::new();
    let faulty = FaultyStorage::new(mem, Fault::None);
    let mut s = Store::open(faulty.clone(), Options::default()).unwrap();
    faulty.set_fault(Fault::FailFlush(0));
    let first = s.put(b"k", b"v", Durability::Strict).unwrap_err();
    assert!(matches!(first, Error::Io { op: "flush", .. }), "{first:?}");
    let later = s.put(b"k", b"v", Durability::Strict).unwrap_err();
    let Error::Poisoned { cause } = &later else { panic!("{later:?}") };
    assert_eq!(**cause, first, "the poison remembers the error itself");
    assert_eq!(later.source().map(|e| e.to_string()), Some(first.to_string()));
    // A native I/O error is kept as the source of the walnut error.
    let file = tempfile::NamedTempFile::new().unwrap();
    let e = walnut::DirVolume::open(file.path().join("store")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    let io = e.source().and_then(|s| s.downcast_ref::<std::io::Error>()).expect("an io::Error source");
    assert_eq!(io.kind(), std::io::ErrorKind::NotADirectory);
}
