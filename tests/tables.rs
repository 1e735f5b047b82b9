//! Tables with sequence numbers (HoraeDB's half of the design): namespaces in one log, per-table
//! sequence numbers, queues, the flushed mark, delete-up-to and drop, through reopens,
//! checkpoints, compaction and power cuts at every operation.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::collections::BTreeMap;

use common::{crash_seeds, pattern, segments_of, without_checkpoints, CrashVolume};
use walnut::storage::{MemoryVolume, Volume};
use walnut::{BatchOp, Durability, KeyRange, Options, Store};

const S: Durability = Durability::Strict;

fn small() -> Options {
    Options { chunk_size: 256, segment_size: 4096, checkpoint_bytes: 0, compaction_ratio: 1.0, ..Options::default() }
}

fn reopen(s: Store<MemoryVolume>, opts: &Options) -> Store<MemoryVolume> {
    let v = s.into_volume();
    Store::open(v, opts.clone()).unwrap()
}

/// Everything a table holds: (name, last seq, flushed, deleted up to, keys and values, queue,
/// change feed as (seq, delete, key, size, current)).
type TableState = (String, u64, u64, u64, Vec<(Vec<u8>, Vec<u8>)>, Vec<(u64, Vec<u8>)>, Vec<Feed>);
type Feed = (u64, bool, Vec<u8>, u64, bool);

fn state<V: Volume>(s: &Store<V>) -> Vec<TableState> {
    s.tables()
        .into_iter()
        .map(|t| {
            let keys = s
                .keys_in(t.id, &KeyRange::default())
                .unwrap()
                .into_iter()
                .map(|k| {
                    let v = s.get_in(t.id, &k.key).unwrap().unwrap();
                    (k.key, v)
                })
                .collect();
            let queue =
                s.read(t.id, 0, None).unwrap().into_iter().map(|(seq, e)| (seq, s.value_of(&e).unwrap())).collect();
            let feed = s
                .changes(t.id, 0, None)
                .unwrap()
                .into_iter()
                .map(|c| (c.seq, c.delete, c.key, c.size, c.current))
                .collect();
            (t.name, t.last_seq, t.flushed_seq, t.deleted_upto, keys, queue, feed)
        })
        .collect()
}

#[test]
fn tables_are_namespaces_with_their_own_ordered_keys() {
    let opts = small();
    let mut s = Store::open(MemoryVolume::default(), opts.clone()).unwrap();
    let a = s.create_table("a").unwrap();
    let b = s.create_table("b").unwrap();
    assert_eq!((a, b), (1, 2));
    assert_eq!(s.create_table("a").unwrap(), a, "creating an existing table returns it");
    s.put(b"k", b"default", S).unwrap();
    s.put_in(a, b"k", false, b"in a", S).unwrap();
    s.put_in(b, b"k", false, b"in b", S).unwrap();
    // Default-table keys that start with the table tag stay the default table's.
    let tagged: &[u8] = &[0xFF, 0, 0, 0, 1, 0, b'k'];
    s.put(tagged, b"tagged", S).unwrap();
    s.put(&[0xFF], b"ff", S).unwrap();
    let reopened = |s: Store<MemoryVolume>| reopen(s, &opts);
    let mut s = Some(s);
    for round in 0..2 {
        let s = match round {
            0 => s.as_ref().unwrap(),
            _ => {
                let r = reopened(s.take().unwrap());
                s = Some(r);
                s.as_ref().unwrap()
            }
        };
        assert_eq!(s.get(b"k").unwrap().unwrap(), b"default");
        assert_eq!(s.get_in(a, b"k").unwrap().unwrap(), b"in a");
        assert_eq!(s.get_in(b, b"k").unwrap().unwrap(), b"in b");
        assert_eq!(s.get(tagged).unwrap().unwrap(), b"tagged");
        let keys: Vec<Vec<u8>> = s.keys(&KeyRange::default()).unwrap().into_iter().map(|k| k.key).collect();
        assert_eq!(keys, vec![b"k".to_vec(), vec![0xFF], tagged.to_vec()], "the default table alone, in order");
        let rev: Vec<Vec<u8>> = s
            .keys(&KeyRange { reverse: true, limit: Some(2), ..KeyRange::default() })
            .unwrap()
            .into_iter()
            .map(|k| k.key)
            .collect();
        assert_eq!(rev, vec![tagged.to_vec(), vec![0xFF]]);
        let in_a: Vec<Vec<u8>> = s.keys_in(a, &KeyRange::default()).unwrap().into_iter().map(|k| k.key).collect();
        assert_eq!(in_a, vec![b"k".to_vec()]);
    }
}

#[test]
fn every_write_takes_the_next_sequence_number_of_its_table() {
    on_every_volume!(numbers_body, small());
}

fn numbers_body<V: Volume>(reopen: &mut dyn FnMut(Option<Store<V>>) -> Store<V>) {
    let mut s = reopen(None);
    let t = s.create_table("t").unwrap();
    let u = s.create_table("u").unwrap();
    assert_eq!(s.put_in(t, b"a", false, b"1", S).unwrap(), 1);
    assert_eq!(s.put_in(t, b"b", false, &pattern(1000, 1), S).unwrap(), 2, "a streamed put");
    assert!(s.delete_in(t, b"a", S).unwrap());
    assert_eq!(s.last_seqs(), &[(t, 3, 3)]);
    assert_eq!(s.append(u, b"q1", S).unwrap(), 1);
    s.batch(
        &[
            BatchOp::PutIn { table: t, key: b"c", value: b"3" },
            BatchOp::Append { table: u, value: b"q2" },
            BatchOp::DeleteIn { table: t, key: b"b" },
            BatchOp::Append { table: u, value: &pattern(700, 2) },
        ],
        S,
    )
    .unwrap();
    assert_eq!(s.last_seqs(), &[(t, 4, 5), (u, 2, 3)], "a batch spanning tables: per table, in order");
    let before = state(&s);
    let s = reopen(Some(s));
    assert_eq!(state(&s), before, "replay numbers every write as the live store did");
    let info: Vec<(String, u64)> = s.tables().into_iter().map(|t| (t.name, t.last_seq)).collect();
    assert_eq!(info, [("".to_string(), 0), ("t".into(), 5), ("u".into(), 3)]);
    let q: Vec<(u64, usize)> = s.read(u, 2, None).unwrap().into_iter().map(|(n, e)| (n, e.size as usize)).collect();
    assert_eq!(q, [(2, 2), (3, 700)]);
}

#[test]
fn a_queue_emptied_by_delete_up_to_goes_on_above_every_number_after_reopen() {
    on_every_volume!(emptied_body, small());
}

fn emptied_body<V: Volume>(reopen: &mut dyn FnMut(Option<Store<V>>) -> Store<V>) {
    for checkpoint in [false, true] {
        let mut s = reopen(None);
        let name = if checkpoint { "outbox2" } else { "outbox" };
        let q = s.create_table(name).unwrap();
        for i in 0..5u64 {
            assert_eq!(s.append(q, &pattern(50, i), S).unwrap(), i + 1);
        }
        s.mark_flushed(q, 5, S).unwrap();
        s.delete_up_to(q, 5, S).unwrap();
        assert!(s.read(q, 0, None).unwrap().is_empty());
        if checkpoint {
            s.checkpoint().unwrap();
        }
        let mut s = reopen(Some(s));
        let t = s.table(name).unwrap();
        assert_eq!((t.last_seq, t.flushed_seq, t.deleted_upto), (5, 5, 5), "checkpoint: {checkpoint}");
        assert!(s.read(q, 0, None).unwrap().is_empty(), "nothing at or below the mark comes back");
        assert_eq!(s.append(q, b"next", S).unwrap(), 6);
    }
}

#[test]
fn marks_refuse_numbers_out_of_range_and_name_the_parameter() {
    let mut s = Store::open(MemoryVolume::default(), small()).unwrap();
    let q = s.create_table("q").unwrap();
    s.append(q, b"x", S).unwrap();
    for r in [s.mark_flushed(q, 2, S), s.delete_up_to(q, 2, S)] {
        assert!(matches!(r, Err(walnut::Error::InvalidArgument { param, .. }) if param == "seq"), "{r:?}");
    }
    s.mark_flushed(q, 1, S).unwrap();
    let back = s.mark_flushed(q, 0, S);
    assert!(matches!(back, Err(walnut::Error::InvalidArgument { .. })), "the flushed mark never goes back");
    let none = s.put_in(9, b"k", false, b"v", S);
    assert!(matches!(none, Err(walnut::Error::InvalidArgument { param, .. }) if param == "table"), "{none:?}");
    let name = s.create_table("");
    assert!(matches!(name, Err(walnut::Error::InvalidArgument { param, .. }) if param == "name"), "{name:?}");
}

#[test]
fn a_dropped_table_is_gone_at_once_and_its_id_is_never_given_again() {
    let opts = small();
    let mut s = Store::open(MemoryVolume::default(), opts.clone()).unwrap();
    let t = s.create_table("t").unwrap();
    for i in 0..20u64 {
        s.put_in(t, format!("k{i}").as_bytes(), false, &pattern(100, i), S).unwrap();
        s.append(t, &pattern(30, i), S).unwrap();
    }
    let log_before = s.stats().next_lsn;
    assert!(s.drop_table("t").unwrap());
    assert_eq!(s.stats().next_lsn, log_before + 1, "one record");
    assert!(s.table("t").is_none() && s.keys_in(t, &KeyRange::default()).unwrap().is_empty());
    assert!(!s.drop_table("t").unwrap());
    let mut s = reopen(s, &opts);
    assert!(s.table("t").is_none());
    assert_eq!(s.create_table("t").unwrap(), t + 1, "a new table of the same name has a new id");
    assert!(s.keys_in(t + 1, &KeyRange::default()).unwrap().is_empty());
    s.compact().unwrap();
    let s = reopen(s, &opts);
    assert_eq!(s.tables().len(), 2);
}

#[test]
fn compaction_keeps_queues_marks_and_numbers() {
    let opts = Options { compaction_ratio: 0.3, ..small() };
    let mut s = Store::open(MemoryVolume::default(), opts.clone()).unwrap();
    let q = s.create_table("q").unwrap();
    let k = s.create_table("k").unwrap();
    for round in 0..30u64 {
        s.append(q, &pattern(120, round), S).unwrap();
        s.put_in(k, format!("x{}", round % 4).as_bytes(), false, &pattern(200, round), S).unwrap();
        if round % 5 == 4 {
            s.delete_up_to(q, round - 2, S).unwrap();
            s.mark_flushed(q, round - 2, S).unwrap();
        }
    }
    s.compact().unwrap();
    assert!(s.stats().compactions > 0);
    let before = state(&s);
    let s = reopen(s, &opts);
    assert_eq!(state(&s), before);
    let v = without_checkpoints(s.into_volume());
    let s = Store::open(v, opts.clone()).unwrap();
    assert_eq!(state(&s), before);
}

/// A power cut at every operation of appends, a `delete_up_to` and a `mark_flushed`, a
/// compaction, and a `drop_table`: after each, the store holds one of the states an
/// acknowledged call left (sequence numbers included: they never go back or repeat), and
/// nothing at or below a completed mark comes back.
#[test]
fn a_crash_at_every_operation_of_delete_up_to_compaction_and_drop_table() {
    let opts = Options { checkpoint_bytes: 1 << 20, compaction_ratio: 0.2, ..small() };
    let run = |cut: Option<u64>| {
        let mut s = Store::open(CrashVolume::default(), opts.clone()).unwrap();
        if let Some(n) = cut {
            s.volume().cut.after(n);
        }
        // Acknowledged states are read from the run without a cut only: after a cut, writes
        // that return are not kept, so the live store cannot be read back.
        let uncut = cut.is_none();
        let mut acks: Vec<(u64, Vec<TableState>)> = vec![(0, state(&s))];
        let mut ack = |s: &Store<CrashVolume>| {
            if uncut {
                acks.push((s.volume().cut.used(), state(s)));
            }
        };
        let Ok(q) = s.create_table("q") else { return (s, acks) };
        ack(&s);
        let Ok(t) = s.create_table("t") else { return (s, acks) };
        ack(&s);
        // A table nothing is ever written to: only its TABLE records name it.
        if s.create_table("idle").is_err() {
            return (s, acks);
        }
        ack(&s);
        for i in 0..10u64 {
            let len = if i == 4 { 700 } else { 200 + 10 * i as usize };
            if s.append(q, &pattern(len, i), S).is_err() {
                return (s, acks);
            }
            ack(&s);
            if s.put_in(t, b"k", false, &pattern(300, i), S).is_err() {
                return (s, acks);
            }
            ack(&s);
        }
        if s.delete_up_to(q, 6, S).is_err() {
            return (s, acks);
        }
        ack(&s);
        if s.mark_flushed(q, 6, S).is_err() {
            return (s, acks);
        }
        ack(&s);
        let segments = s.stats().segments;
        if s.compact().is_err() {
            return (s, acks);
        }
        if uncut {
            let st = s.stats();
            assert!(segments > 2 && st.compactions == 1 && st.segments < segments, "{segments} -> {st:?}");
        }
        ack(&s);
        if s.append(q, b"after", S).is_err() {
            return (s, acks);
        }
        ack(&s);
        if s.drop_table("t").is_err() {
            return (s, acks);
        }
        ack(&s);
        (s, acks)
    };
    let (s, acks) = run(None);
    assert_eq!(acks.len(), 29, "every step ran");
    let total = s.volume().cut.used();
    drop(s);
    let mut tried = 0;
    let seeds = crash_seeds(&[5, 6]);
    for cut in 0..=total {
        let (s, _) = run(Some(cut));
        let first_possible = acks.iter().rposition(|(ops, _)| *ops <= cut).unwrap_or(0);
        for &seed in &seeds {
            let image = s.volume().crash_image(seed);
            let mut r = Store::open(CrashVolume::from_image(image.clone()), opts.clone())
                .unwrap_or_else(|e| panic!("cut at op {cut}, seed {seed}: {e}"));
            let got = state(&r);
            // Without its checkpoints, a full scan of the segments left finds the same state:
            // compaction restated what the released segments held.
            let full = Store::open(CrashVolume::from_image(segments_of(&image)), opts.clone()).unwrap();
            assert_eq!(state(&full), got, "cut at op {cut}, seed {seed}: a full scan differs");
            assert!(
                acks[first_possible..].iter().any(|(_, m)| *m == got),
                "cut at op {cut} of {total}, seed {seed}: not a state acknowledged at or after op {first_possible}: {got:?}"
            );
            // The next number continues above every one handed out.
            if let Some(q) = r.table("q") {
                assert_eq!(r.append(q.id, b"probe", S).unwrap(), q.last_seq + 1);
            }
            tried += 1;
        }
    }
    println!("crash points: tables: {tried} ({} ops x {} seeds)", total + 1, seeds.len());
}

#[test]
fn a_version_4_store_opens_with_its_tagged_keys_in_the_default_table() {
    // The committed v4 store fixture reads as before (tests/golden.rs); here: a key starting
    // with the tag, written by the v4 encoding (no flag), is the default table's.
    let mut model = BTreeMap::new();
    let mut s = Store::open(MemoryVolume::default(), small()).unwrap();
    for k in [&[0xFFu8, 1][..], &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 9], b"plain"] {
        s.put(k, k, S).unwrap();
        model.insert(k.to_vec(), k.to_vec());
    }
    s.checkpoint().unwrap();
    let s = reopen(s, &small());
    let got: BTreeMap<Vec<u8>, Vec<u8>> = s
        .keys(&KeyRange::default())
        .unwrap()
        .into_iter()
        .map(|k| {
            let v = s.get(&k.key).unwrap().unwrap();
            (k.key, v)
        })
        .collect();
    assert_eq!(got, model);
}

#[test]
fn the_change_feed_lists_every_put_and_delete_until_delete_up_to_passes_it() {
    let opts = Options { compaction_ratio: 0.2, ..small() };
    let mut s = Store::open(MemoryVolume::default(), opts.clone()).unwrap();
    let t = s.create_table("docs").unwrap();
    s.put_in(t, b"a", true, b"one", S).unwrap(); // 1
    s.put_in(t, b"b", false, &pattern(700, 1), S).unwrap(); // 2, streamed
    s.append(t, b"queued", S).unwrap(); // 3, not in the feed
    s.put_in(t, b"a", true, b"two!", S).unwrap(); // 4
    s.delete_in(t, b"b", S).unwrap(); // 5
    s.batch(&[BatchOp::PutIn { table: t, key: b"c", value: b"3" }, BatchOp::DeleteIn { table: t, key: b"a" }], S)
        .unwrap(); // 6, 7
    let feed = |s: &Store<MemoryVolume>, since| -> Vec<(u64, bool, Vec<u8>, u64, bool)> {
        s.changes(t, since, None).unwrap().into_iter().map(|c| (c.seq, c.delete, c.key, c.size, c.current)).collect()
    };
    let want = vec![
        (1, false, b"a".to_vec(), 3, false),
        (2, false, b"b".to_vec(), 700, false),
        (4, false, b"a".to_vec(), 4, false),
        (5, true, b"b".to_vec(), 0, true),
        (6, false, b"c".to_vec(), 1, true),
        (7, true, b"a".to_vec(), 0, true),
    ];
    assert_eq!(feed(&s, 0), want);
    assert_eq!(feed(&s, 4), want[3..].to_vec(), "since is exclusive");
    assert_eq!(s.changes(t, 0, Some(2)).unwrap().len(), 2);
    assert!(s.changes(0, 0, None).unwrap().is_empty(), "the default table keeps no feed");
    assert!(s.changes(t, 0, None).unwrap()[0].string_key);
    let s = reopen(s, &opts);
    assert_eq!(feed(&s, 0), want, "replayed");
    let mut s = s;
    s.checkpoint().unwrap();
    let mut s = reopen(s, &opts);
    assert_eq!(feed(&s, 0), want, "from a checkpoint");
    s.delete_up_to(t, 4, S).unwrap();
    assert_eq!(feed(&s, 0), want[3..].to_vec(), "delete_up_to trims the feed");
    for i in 0..40u64 {
        s.put_in(t, b"c", false, &pattern(300, i), S).unwrap();
    }
    s.compact().unwrap();
    let before = feed(&s, 0);
    assert_eq!(before.len(), 3 + 40);
    let s = reopen(s, &opts);
    assert_eq!(feed(&s, 0), before, "compaction keeps the feed");
    let s = Store::open(without_checkpoints(s.into_volume()), opts.clone()).unwrap();
    assert_eq!(feed(&s, 0), before, "and a full scan finds it");
}

#[test]
fn a_named_table_refuses_keys_whose_change_feed_entry_would_not_fit_and_checkpoints_stay_readable() {
    // A table key's feed key is 23 bytes longer; every index key must fit a u16 length (the
    // checkpoint's). A review found a 65,529-byte table key made every later checkpoint
    // unreadable, so a reopen fell back to a full scan.
    let opts = small();
    let mut s = Store::open(MemoryVolume::default(), opts.clone()).unwrap();
    let t = s.create_table("t").unwrap();
    let max = walnut::format::MAX_TABLE_KEY_LEN;
    let r = s.put_in(t, &vec![b'k'; max + 1], false, b"v", S);
    assert!(matches!(r, Err(walnut::Error::InvalidArgument { param, .. }) if param == "key"), "{r:?}");
    s.put_in(t, &vec![b'k'; max], false, b"v", S).unwrap();
    s.put(&vec![0xFF; walnut::format::MAX_ESCAPED_KEY_LEN], b"tagged", S).unwrap();
    s.checkpoint().unwrap();
    let s = reopen(s, &opts);
    assert!(s.recovery().checkpoint.is_some(), "the checkpoint is readable: {:?}", s.recovery());
    assert_eq!(s.get_in(t, &vec![b'k'; max]).unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(s.changes(t, 0, None).unwrap().len(), 1);
}

/// Without a readable checkpoint, the full scan of what the checkpoints kept must still find
/// every table: a checkpoint releasing the log's prefix (its values all dead) must not take the
/// only TABLE records of a table with it (found by review).
#[test]
fn a_full_scan_after_checkpoints_released_the_prefix_finds_every_table_and_its_marks() {
    let opts = small();
    let mut s = Store::open(MemoryVolume::default(), opts.clone()).unwrap();
    let q = s.create_table("q").unwrap();
    for i in 0..5u64 {
        s.append(q, &pattern(50, i), S).unwrap();
    }
    s.mark_flushed(q, 5, S).unwrap();
    s.delete_up_to(q, 5, S).unwrap();
    for i in 0..40u64 {
        s.put(b"x", &pattern(300, i), S).unwrap();
    }
    s.checkpoint().unwrap();
    s.checkpoint().unwrap();
    let before = state(&s);
    let segments_before = s.stats().segments;
    let v = s.into_volume();
    let s = Store::open(without_checkpoints(v), opts.clone()).unwrap();
    assert!(s.recovery().checkpoint.is_none(), "the full scan ran");
    assert!(segments_before < 8, "the checkpoints released the prefix ({segments_before} segments left)");
    assert_eq!(state(&s), before);
    let mut s = s;
    assert_eq!(s.append(q, b"next", S).unwrap(), 6, "numbers go on above every one handed out");
}

/// Five entries appended to the default table's queue (numbers 1..=5 checked), flushed and
/// deleted up to 5; then table "q" with 40 entries of 300 bytes, deleted up to `q_upto`.
fn default_queue_consumed_then_queue_q(s: &mut Store<MemoryVolume>, q_upto: u64) {
    for i in 0..5u64 {
        assert_eq!(s.append(0, &pattern(50, i), S).unwrap(), i + 1);
    }
    s.mark_flushed(0, 5, S).unwrap();
    s.delete_up_to(0, 5, S).unwrap();
    let q = s.create_table("q").unwrap();
    for i in 0..40u64 {
        s.append(q, &pattern(300, i), S).unwrap();
    }
    s.delete_up_to(q, q_upto, S).unwrap();
}

/// The default table (id 0) numbers its queue entries too: a checkpoint releasing the prefix
/// that held its only statement must restate it as it does a named table's, or a full scan
/// starts its numbers over and hands out again ones a reader already consumed (found by a
/// review, open since; only when no checkpoint reads).
#[test]
fn a_full_scan_after_checkpoints_released_the_prefix_keeps_the_default_tables_numbers() {
    // No compaction: it restates every table itself; here only the checkpoints release.
    let opts = Options { compaction_ratio: 1.0, ..small() };
    let mut s = Store::open(MemoryVolume::default(), opts.clone()).unwrap();
    // Later writes go to another table's queue and are deleted too, but its last: every
    // record of the default table lies in the prefix the checkpoints release.
    default_queue_consumed_then_queue_q(&mut s, 39);
    s.checkpoint().unwrap();
    s.checkpoint().unwrap();
    let before = state(&s);
    let stats = s.stats();
    assert_eq!(stats.compactions, 0);
    let v = s.into_volume();
    let s = Store::open(without_checkpoints(v), opts.clone()).unwrap();
    assert!(s.recovery().checkpoint.is_none(), "the full scan ran");
    assert!(stats.segments < 8, "the checkpoints released the prefix ({} segments left)", stats.segments);
    assert_eq!(state(&s), before);
    let mut s = s;
    assert_eq!(s.append(0, b"next", S).unwrap(), 6, "numbers go on above every one handed out");
}

/// Compaction restates every table before its first copy; a group `delete_up_to` still queued
/// in the committer must be in that statement, or a full scan after the victims go brings the
/// deleted entries back (found by review).
#[test]
fn compaction_states_tables_after_the_queued_group_commits() {
    const G: Durability = Durability::Group;
    let opts = small();
    let mut s = Store::open(MemoryVolume::default(), opts.clone()).unwrap();
    let q = s.create_table("q").unwrap();
    for i in 0..4u64 {
        s.append(q, &pattern(100, i), S).unwrap();
    }
    let mut n = 0;
    while s.stats().segments < 2 {
        s.put(format!("live{n}").as_bytes(), &pattern(200, n), S).unwrap();
        n += 1;
    }
    for i in 0..12u64 {
        s.put(b"x", &pattern(200, i), S).unwrap();
    }
    s.delete_up_to(q, 4, G).unwrap();
    let segs = s.stats().segments;
    let mut i = 0;
    while s.stats().segments == segs {
        s.put(b"y", &pattern(200, i), G).unwrap();
        i += 1;
    }
    assert!(s.has_pending(), "the delete_up_to is still queued");
    s.compact().unwrap();
    let before = state(&s);
    assert!(before.iter().all(|t| t.5.is_empty()), "the queue was emptied");
    let s = reopen(s, &opts);
    assert_eq!(state(&s), before);
    let s = Store::open(without_checkpoints(s.into_volume()), opts.clone()).unwrap();
    assert_eq!(state(&s), before, "the full scan brought deleted entries back");
}

/// A write retried under a commit id made already answers with the numbers the first attempt
/// took (a follower's write sent again after a leader change): read back from the queue and
/// the change feed by the commit's LSN, across a reopen.
#[test]
fn the_numbers_a_commit_took_are_found_again_by_its_lsn() {
    let opts = small();
    let mut s = Store::open(MemoryVolume::default(), opts.clone()).unwrap();
    let a = s.create_table("a").unwrap();
    let b = s.create_table("b").unwrap();
    for i in 0..300u64 {
        s.append(a, &pattern(10, i), S).unwrap(); // more than a page of entries after the commit
    }
    let ops = [
        BatchOp::PutIn { table: b, key: b"k1", value: b"v" },
        BatchOp::PutIn { table: b, key: b"k2", value: b"w" },
        BatchOp::DeleteIn { table: b, key: b"k1" },
        BatchOp::Append { table: a, value: b"x" },
    ];
    s.batch_with_id(&ops, b"retry-me", S).unwrap();
    let mut taken = s.last_seqs().to_vec();
    taken.sort();
    assert_eq!(taken, vec![(a, 301, 301), (b, 1, 3)]);
    for i in 0..300u64 {
        s.append(a, &pattern(10, i), S).unwrap();
        s.put_in(b, b"later", false, b"z", S).unwrap();
    }
    let lsn = match s.id_status(b"retry-me") {
        Some(walnut::IdStatus::Committed { lsn }) => lsn,
        other => panic!("the id is not remembered as committed: {other:?}"),
    };
    assert_eq!(s.commit_seqs(lsn), taken);
    let s = reopen(s, &opts);
    assert_eq!(s.commit_seqs(lsn), taken, "after a reopen");
}

/// Compaction copies queue and change-feed entries under new LSNs, so the numbers a commit
/// took could not be found by its LSN once they were moved: a write retried under its commit id
/// answered 0 (`retriedValue` in www/worker.js). The numbers are kept with the commit id now,
/// in checkpoints too, and deleting the entries (`delete_up_to`) does not take them either.
#[test]
fn the_numbers_a_commit_took_outlive_compaction_and_deletion() {
    let opts = small();
    let mut s = Store::open(MemoryVolume::default(), opts.clone()).unwrap();
    let a = s.create_table("a").unwrap();
    let b = s.create_table("b").unwrap();
    s.append(a, b"first", S).unwrap();
    let ops = [BatchOp::Append { table: a, value: b"x" }, BatchOp::PutIn { table: b, key: b"k", value: b"v" }];
    s.batch_with_id(&ops, b"retry-me", S).unwrap();
    let mut taken = s.last_seqs().to_vec();
    taken.sort();
    assert_eq!(taken, vec![(a, 2, 2), (b, 1, 1)]);
    let lsn = match s.id_status(b"retry-me") {
        Some(walnut::IdStatus::Committed { lsn }) => lsn,
        other => panic!("the id is not remembered as committed: {other:?}"),
    };
    // Everything after it is overwritten, so compaction moves the commit's entries.
    for round in 0..4u64 {
        for k in 0..40u64 {
            s.put(format!("k{k}").as_bytes(), &pattern(200, round * 100 + k), S).unwrap();
        }
        s.compact().unwrap();
        s.checkpoint().unwrap();
    }
    let first = s
        .volume()
        .ids()
        .into_iter()
        .filter_map(|id| {
            let f = s.volume().file(id).unwrap();
            let mut head = [0u8; walnut::format::FILE_HEADER_LEN];
            walnut::storage::read_exact_at(f, &mut head, 0).ok()?;
            walnut::format::FileHeader::decode(&head).ok().map(|h| h.segment)
        })
        .min();
    assert!(first > Some(0), "compaction released segment 0, where the commit was written: {first:?}");
    assert!(s.stats().values_moved > 0);
    assert_eq!(s.commit_seqs(lsn), taken, "after compaction");
    s.delete_up_to(a, 2, S).unwrap();
    assert_eq!(s.commit_seqs(lsn), taken, "after its queue entry was deleted");
    let s = reopen(s, &opts);
    assert!(s.recovery().checkpoint.is_some());
    assert_eq!(s.commit_seqs(lsn), taken, "after a reopen");
}

/// A restatement of the tables' states may cross a segment boundary (the tail fills after the
/// first records): the next checkpoint must not take it for wholly kept and release the
/// segment holding its first records, or a full scan loses those tables' states (found by a
/// review: the default table's numbers and marks came back as 0, 0, 0 for 67 paddings of
/// 4,200). Padding moves where the restatement falls, byte by byte (every third).
#[test]
fn a_restatement_across_a_segment_boundary_is_kept_whole() {
    let lost = paddings_a_full_scan_loses(
        |s| {
            default_queue_consumed_then_queue_q(s, 40);
            s.put(b"pad0", &pattern(3000, 8), S).unwrap();
            s.delete(b"pad0", S).unwrap();
        },
        |s| {
            s.checkpoint().unwrap();
            s.checkpoint().unwrap();
        },
    );
    assert!(lost.is_empty(), "a full scan lost table states with {} paddings: {lost:?}", lost.len());
}

/// A compaction round states every table at its start, then its checkpoints release the victims
/// and the dead prefix. When that statement crosses a segment boundary (or the tail moves on
/// during the round), the segment holding its first records is part of that prefix: a full
/// scan then loses a table that nothing else in the log names, an empty one (found by a
/// review). Padding moves where the round's statement falls, byte by byte (every third).
#[test]
fn a_compaction_rounds_statement_of_an_empty_table_outlives_the_round() {
    let lost = paddings_a_full_scan_loses(
        |s| {
            s.create_table("empty").unwrap();
            for i in 0..30u64 {
                s.put(b"x", &pattern(300, i), S).unwrap();
            }
            s.delete(b"x", S).unwrap();
        },
        |s| {
            s.compact().unwrap();
            assert!(s.table("empty").is_some());
        },
    );
    assert!(lost.is_empty(), "a full scan lost the empty table with {} paddings: {lost:?}", lost.len());
}

/// The paddings (0 to 4,200 bytes, every third) after which a full scan finds another state than
/// the store had: `prepare` fills a new store, a value of the padding's length is put and
/// deleted (moving where later records fall, byte by byte), `release` lets segments go, and
/// the store is reopened without its checkpoints.
fn paddings_a_full_scan_loses(
    prepare: impl Fn(&mut Store<MemoryVolume>),
    release: impl Fn(&mut Store<MemoryVolume>),
) -> Vec<usize> {
    let opts = Options { compaction_ratio: 1.0, ..small() };
    let mut lost = Vec::new();
    for pad in (0..4200usize).step_by(3) {
        let mut s = Store::open(MemoryVolume::default(), opts.clone()).unwrap();
        prepare(&mut s);
        if pad > 0 {
            s.put(b"pad", &pattern(pad, 9), S).unwrap();
            s.delete(b"pad", S).unwrap();
        }
        release(&mut s);
        let before = state(&s);
        let s = Store::open(without_checkpoints(s.into_volume()), opts.clone()).unwrap();
        assert!(s.recovery().checkpoint.is_none(), "the full scan ran");
        if state(&s) != before {
            lost.push(pad);
        }
    }
    lost
}

/// A compaction round's statement of the tables, cut back by a full disk before it was written
/// out, is no statement: the checkpoints after must not take it for the last one and release
/// the prefix holding the only record of an empty table. The round takes its first step
/// (the statement, and the first chunk of a copy, still buffered); a put then meets a full
/// disk, whose rollback cuts both; the round is abandoned. A value written in the same tail
/// segment then keeps it, and two checkpoints release everything below it.
#[test]
fn a_statement_a_full_disk_cut_back_is_not_counted() {
    let opts = Options { compaction_ratio: 1.0, ..small() };
    let mut s = Store::open(CrashVolume::default(), opts.clone()).unwrap();
    s.create_table("empty").unwrap();
    s.put(b"live", b"v", S).unwrap(); // the log is not all dead: no round runs by itself
    for i in 0..30u64 {
        s.put(b"x", &pattern(300, i), S).unwrap();
    }
    s.delete(b"x", S).unwrap();
    let segments = s.stats().segments;
    assert!(segments >= 3);
    assert_eq!(s.compact_step().unwrap(), walnut::CompactStep::Progress);
    s.volume().quota.set(true);
    assert!(s.put(b"refused", b"v", S).is_err());
    s.volume().quota.set(false);
    while let Ok(step) = s.compact_step() {
        assert_ne!(step, walnut::CompactStep::Done, "the round's copy was dropped by the rollback");
    }
    s.put(b"live", b"w", S).unwrap(); // overwritten: nothing below the tail segment is live
    assert_eq!(s.stats().segments, segments, "everything since the round lies in its tail segment");
    s.checkpoint().unwrap();
    s.checkpoint().unwrap();
    assert_eq!(s.stats().segments, 1, "the checkpoints released the prefix");
    let before = state(&s);
    assert!(before.iter().any(|t| t.0 == "empty"));
    let s = Store::open(CrashVolume::from_image(segments_of(&s.volume().live_image())), opts.clone()).unwrap();
    assert!(s.recovery().checkpoint.is_none(), "the full scan ran");
    assert_eq!(state(&s), before, "the full scan lost the empty table");
}

/// Table ids are never given again, also after a full scan: the checkpoints keep the next id,
/// a full scan finds it from the TABLE records left. Once the prefix holding a dropped table's
/// records (its DROP included) is released, by checkpoints or by a compaction round, the
/// restatement must say the highest id was dropped, or the next table created after a full
/// scan takes it, and a write to the dropped table's id lands in the new one (found by a
/// review; older than the restatements).
#[test]
fn a_full_scan_never_gives_a_dropped_tables_id_again() {
    let opts = Options { compaction_ratio: 1.0, ..small() };
    for by_compaction in [false, true] {
        let mut s = Store::open(CrashVolume::default(), opts.clone()).unwrap();
        assert_eq!(s.create_table("a").unwrap(), 1);
        assert_eq!(s.create_table("b").unwrap(), 2);
        assert!(s.drop_table("b").unwrap());
        if by_compaction {
            s.put(b"live", b"v", S).unwrap(); // nothing is released without the round
        }
        for i in 0..40u64 {
            s.put(b"x", &pattern(300, i), S).unwrap();
        }
        let segments = s.stats().segments;
        if by_compaction {
            s.compact().unwrap();
        } else {
            s.checkpoint().unwrap();
            s.checkpoint().unwrap();
        }
        assert!(s.stats().segments < segments, "the records of table b were released");
        let image = s.volume().live_image();
        drop(s);
        let mut full = Store::open(CrashVolume::from_image(segments_of(&image)), opts.clone()).unwrap();
        let mut normal = Store::open(CrashVolume::from_image(image), opts.clone()).unwrap();
        assert!(full.recovery().checkpoint.is_none(), "the full scan ran");
        assert_eq!(state(&full), state(&normal));
        assert_eq!(normal.create_table("c").unwrap(), 3);
        assert_eq!(full.create_table("c").unwrap(), 3, "compaction: {by_compaction}: the dropped table's id again");
        assert!(full.put_in(2, b"k", false, b"v", S).is_err(), "a write to the dropped table's id lands nowhere");
    }
}

/// With `id_retention` 2, id X is forgotten after two more ids, then committed again (it is new
/// to the store then, and acknowledged). Replay kept every id until the end, so it met X's
/// second COMMIT with the first still remembered and discarded it as a duplicate: an
/// acknowledged write lost at the next open (found by review; the id also kept its old place,
/// so a checkpoint listed the ids out of LSN order, which its reader refuses). Every COMMIT in
/// the log was accepted by the store that wrote it, so replay applies each, and an id committed
/// again takes the newest place, as it did in the store.
#[test]
fn an_id_committed_again_after_retention_forgot_it_survives_a_reopen() {
    let opts = Options { id_retention: 2, ..small() };
    let mut s = Store::open(MemoryVolume::default(), opts.clone()).unwrap();
    let q = s.create_table("q").unwrap();
    for id in [&b"X"[..], b"Y", b"Z", b"X"] {
        let r = s.batch_with_id(&[BatchOp::Append { table: q, value: id }], id, S).unwrap();
        assert!(matches!(r, walnut::IdCommit::Applied(_)), "{r:?}");
    }
    let lsn = |s: &Store<MemoryVolume>, id: &[u8]| match s.id_status(id) {
        Some(walnut::IdStatus::Committed { lsn }) => Some(lsn),
        _ => None,
    };
    let x = lsn(&s, b"X");
    assert!(x.is_some() && lsn(&s, b"Y").is_none(), "X (newest) and Z remembered, Y forgotten");
    let queue = |s: &Store<MemoryVolume>| -> Vec<(u64, Vec<u8>)> {
        s.read(q, 0, None).unwrap().into_iter().map(|(seq, e)| (seq, s.value_of(&e).unwrap())).collect()
    };
    let before = queue(&s);
    assert_eq!(before.len(), 4);
    // A crash (no close, no checkpoint): replay from the files as they are.
    let back = Store::open(s.volume().clone(), opts.clone()).unwrap();
    assert!(back.recovery().discarded.is_empty(), "{:?}", back.recovery().discarded);
    assert_eq!(queue(&back), before, "every acknowledged batch after a reopen by replay");
    assert_eq!(lsn(&back, b"X"), x, "X, the newest id, remembered");
    assert_eq!(lsn(&back, b"Y"), None);
    // Through a checkpoint too: the ids listed in LSN order, so it reads.
    let mut back = back;
    back.checkpoint().unwrap();
    let again = Store::open(back.volume().clone(), opts).unwrap();
    assert!(again.recovery().checkpoint.is_some(), "{:?}", again.recovery().checkpoints_rejected);
    assert_eq!(queue(&again), before);
    assert_eq!(lsn(&again, b"X"), x);
}
