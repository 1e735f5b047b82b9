//! Golden logs (lsm-tree's `test_fixture/`, some deliberately corrupt): committed files under
//! `tests/fixtures/v<N>/`, one directory per format version, that this and every later build
//! must read exactly as recorded here. They also seed the fuzzer (`make fuzz`).
//!
//! If the format changes, `fixtures_are_what_this_build_writes` fails: bump `FORMAT_VERSION`,
//! keep every older directory readable (add it to `LEGACY`), and write the new one with
//! `WALNUT_WRITE_FIXTURES=1 cargo test --test golden`.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::PathBuf;

use common::{pattern, record_spans, LogBuilder};
use walnut::format::Kind;
use walnut::{DiscardReason, Durability, KeyRange, MemoryStorage, MemoryVolume, Options, Store, Volume};

fn options() -> Options {
    Options { chunk_size: 64, direct_write_threshold: 120, batch_bytes: 300, ..Options::default() }
}

/// A log with every record kind: single puts, an interleaved multi-chunk transaction, a
/// delete, a batch, an abort and an abandoned transaction.
fn valid() -> Vec<u8> {
    let mem = MemoryStorage::new();
    let mut s = Store::open(mem.clone(), options()).unwrap();
    s.put_flagged(b"greeting", true, b"hello", Durability::Strict).unwrap();
    let t = s.begin().unwrap();
    s.txn_put(t, b"big", false).unwrap();
    s.txn_chunk(t, &pattern(100, 1)).unwrap();
    s.put(b"small", b"between chunks", Durability::Strict).unwrap();
    s.txn_chunk(t, &pattern(60, 2)).unwrap();
    s.commit(t, Durability::Strict).unwrap();
    s.delete(b"small", Durability::Strict).unwrap();
    s.batch(
        &[walnut::BatchOp::Put { key: b"b1", value: b"one" }, walnut::BatchOp::Put { key: b"b2", value: b"two" }],
        Durability::Strict,
    )
    .unwrap();
    let a = s.begin().unwrap();
    s.txn_put(a, b"greeting", true).unwrap();
    s.txn_chunk(a, b"aborted").unwrap();
    s.abort(a).unwrap();
    let open = s.begin().unwrap();
    s.txn_put(open, b"big", false).unwrap();
    s.txn_chunk(open, &pattern(64, 3)).unwrap();
    s.sync().unwrap();
    drop(s);
    mem.to_vec()
}

struct Fixture {
    name: &'static str,
    bytes: Vec<u8>,
    /// Keys and values recovery must expose.
    expect: Vec<(&'static [u8], Vec<u8>)>,
    discarded: usize,
    truncated: bool,
}

fn fixtures() -> Vec<Fixture> {
    let valid = valid();
    let kinds: Vec<(u64, u64, Kind)> = record_spans(&valid)
        .into_iter()
        .map(|(st, end)| (st, end, Kind::from_u8(valid[st as usize + 8]).unwrap()))
        .collect();
    let nth = |kind: Kind, n: usize| *kinds.iter().filter(|r| r.2 == kind).nth(n).unwrap();
    let full = || {
        vec![
            (&b"b1"[..], b"one".to_vec()),
            (&b"b2"[..], b"two".to_vec()),
            (&b"big"[..], [pattern(100, 1), pattern(60, 2)].concat()),
            (&b"greeting"[..], b"hello".to_vec()),
        ]
    };
    // Torn: cut in the middle of the big value's COMMIT.
    let (commit_start, commit_end, _) = nth(Kind::Commit, 0);
    let torn = valid[..(commit_start + (commit_end - commit_start) / 2) as usize].to_vec();
    // Corrupt: one bit flipped in the batch's first chunk (the big value had three).
    let mut corrupt = valid.clone();
    let batch_chunk = nth(Kind::Chunk, 3).0 as usize + 40;
    corrupt[batch_chunk] ^= 0x10;
    // Garbage tail after a clean log.
    let mut garbage = valid.clone();
    garbage.extend_from_slice(&pattern(77, 9));
    // Broken chain: a transaction whose chunk links onto another transaction's record.
    let mut b = LogBuilder::new();
    b.put_one(1, b"kept", b"yes");
    let b2 = b.record(Kind::Begin, 0, 2, 0, &[]);
    let p2 = b.record(Kind::Put, 0, 2, b2, b"lost");
    let b3 = b.record(Kind::Begin, 0, 3, 0, &[]);
    let c2 = b.record(Kind::Chunk, 0, 2, b3, b"value");
    let _ = p2;
    b.commit(2, c2, LogBuilder::claims(2, &[b"value"]));
    b.record(Kind::Abort, 0, 3, b3, &[]);
    b.put_one(4, b"after", b"yes");

    vec![
        Fixture { name: "valid", bytes: valid.clone(), expect: full(), discarded: 2, truncated: false },
        Fixture {
            name: "torn-commit",
            bytes: torn,
            expect: vec![(&b"greeting"[..], b"hello".to_vec()), (&b"small"[..], b"between chunks".to_vec())],
            discarded: 1,
            truncated: true,
        },
        Fixture {
            name: "bit-flip",
            bytes: corrupt,
            expect: vec![
                (&b"big"[..], [pattern(100, 1), pattern(60, 2)].concat()),
                (&b"greeting"[..], b"hello".to_vec()),
            ],
            discarded: 1,
            truncated: true,
        },
        Fixture { name: "garbage-tail", bytes: garbage, expect: full(), discarded: 2, truncated: true },
        Fixture {
            name: "broken-chain",
            bytes: b.bytes,
            expect: vec![(&b"after"[..], b"yes".to_vec()), (&b"kept"[..], b"yes".to_vec())],
            discarded: 2,
            truncated: false,
        },
    ]
}

/// Fixture directories of older format versions, which every build must still read. Their
/// logs were written by the same scenarios as today's, so the same expectations hold.
const LEGACY: &[&str] = &["v1", "v2", "v3", "v4", "v5", "v6", "v7"];

/// Every (key, value) the store holds, in key order.
fn contents<V: Volume>(s: &Store<V>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let keys = s.keys(&KeyRange::default()).unwrap();
    let mut pairs = Vec::with_capacity(keys.len());
    for k in keys {
        let v = s.get(&k.key).unwrap().unwrap();
        pairs.push((k.key, v));
    }
    pairs
}

fn dir_of(version: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(version)
}

fn dir() -> PathBuf {
    dir_of(&format!("v{}", walnut::format::FORMAT_VERSION))
}

#[test]
fn fixtures_are_what_this_build_writes() {
    let write = std::env::var_os("WALNUT_WRITE_FIXTURES").is_some();
    for f in fixtures() {
        let path = dir().join(format!("{}.wal", f.name));
        if write {
            std::fs::create_dir_all(dir()).unwrap();
            std::fs::write(&path, &f.bytes).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(committed == f.bytes, "{} differs from what this build writes: the format changed", f.name);
    }
}

#[test]
fn committed_fixtures_recover_as_recorded() {
    let dirs: Vec<PathBuf> = std::iter::once(dir()).chain(LEGACY.iter().map(|v| dir_of(v))).collect();
    for (dir, f) in dirs.iter().flat_map(|d| fixtures().into_iter().map(move |f| (d, f))) {
        let path = dir.join(format!("{}.wal", f.name));
        let bytes = std::fs::read(&path).unwrap();
        let s = Store::open(MemoryStorage::from_bytes(bytes), options()).unwrap();
        let got = contents(&s);
        let want: Vec<(Vec<u8>, Vec<u8>)> = f.expect.iter().map(|(k, v)| (k.to_vec(), v.clone())).collect();
        assert_eq!(got, want, "{}", path.display());
        let r = s.recovery();
        assert_eq!(r.discarded.len(), f.discarded, "{}: {:?}", f.name, r.discarded);
        assert_eq!(r.bytes_truncated > 0, f.truncated, "{}", f.name);
        if f.name == "broken-chain" {
            assert!(matches!(&r.discarded[0].reason, DiscardReason::BrokenChain(w) if w.contains("does not land")));
        }
    }
}

fn store_options() -> Options {
    Options { chunk_size: 1024, segment_size: 8192, checkpoint_bytes: 0, compaction_ratio: 1.0, ..Options::default() }
}

/// A multi-file store: overwrites across segments, deletes, a streamed value, a checkpoint
/// (which releases segment 0), then a put and a delete that only the log holds. Returns its
/// files and the state recovery must expose.
/// Keys and values, in key order.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

fn store() -> (MemoryVolume, Pairs) {
    let mut s = Store::open(MemoryVolume::default(), store_options()).unwrap();
    let mut model = std::collections::BTreeMap::new();
    for r in 0..3u64 {
        for i in 0..10u64 {
            let (k, v) = (format!("key-{i}").into_bytes(), pattern(500 + i as usize * 10, r * 100 + i));
            s.put(&k, &v, Durability::Strict).unwrap();
            model.insert(k, v);
        }
    }
    s.delete(b"key-3", Durability::Strict).unwrap();
    model.remove(&b"key-3"[..]);
    let t = s.begin().unwrap();
    s.txn_put(t, b"streamed", false).unwrap();
    s.txn_chunk(t, &pattern(3000, 77)).unwrap();
    s.commit(t, Durability::Strict).unwrap();
    model.insert(b"streamed".to_vec(), pattern(3000, 77));
    s.checkpoint().unwrap();
    s.put(b"after", b"checkpoint", Durability::Strict).unwrap();
    model.insert(b"after".to_vec(), b"checkpoint".to_vec());
    s.delete(b"key-4", Durability::Strict).unwrap();
    model.remove(&b"key-4"[..]);
    let v = s.volume().clone();
    drop(s);
    (v, model.into_iter().collect())
}

/// The store's files, `<id>.wal`, in `dir`.
fn read_store(dir: &std::path::Path) -> std::collections::BTreeMap<u32, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .map(|p| {
            let id = p.file_stem().unwrap().to_str().unwrap().parse().unwrap();
            (id, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// Checks that the committed store fixture in `dir` is byte for byte what this build writes (the
/// files of `v`), writing it first with `WALNUT_WRITE_FIXTURES=1`; returns it as a volume.
fn store_fixture(dir: &std::path::Path, v: &MemoryVolume) -> MemoryVolume {
    if std::env::var_os("WALNUT_WRITE_FIXTURES").is_some() {
        std::fs::create_dir_all(dir).unwrap();
        for (id, f) in v.files() {
            std::fs::write(dir.join(format!("{id}.wal")), f.to_vec()).unwrap();
        }
    }
    let written: std::collections::BTreeMap<u32, Vec<u8>> = v.files().iter().map(|(&id, f)| (id, f.to_vec())).collect();
    let committed = read_store(dir);
    assert!(committed == written, "{} differs from what this build writes: the format changed", dir.display());
    let mut fixture = MemoryVolume::default();
    fixture.set_files(committed.into_iter().map(|(id, b)| (id, MemoryStorage::from_bytes(b))).collect());
    fixture
}

/// The committed store fixture in `dir`, as a volume.
fn committed_volume(dir: &std::path::Path) -> MemoryVolume {
    let mut v = MemoryVolume::default();
    v.set_files(read_store(dir).into_iter().map(|(id, b)| (id, MemoryStorage::from_bytes(b))).collect());
    v
}

#[test]
fn the_store_fixture_is_what_this_build_writes() {
    let (v, _) = store();
    store_fixture(&dir().join("store"), &v);
}

/// Stores of every version since checkpoints exist (version 2 wrote its checkpoint header in
/// 80 bytes, without `index_lsn`; version 3 without commit ids) open to the same state, from
/// their checkpoint. `v7/store-before-table-0-restated`: what version 7 wrote before a
/// checkpoint releasing the prefix restated the default table too (same records, one fewer).
#[test]
fn committed_store_fixtures_recover_as_recorded() {
    let (_, want) = store();
    let current = format!("v{}/store", walnut::format::FORMAT_VERSION);
    for version in ["v2/store", "v3/store", "v7/store-before-table-0-restated", current.as_str()] {
        let files = read_store(&dir_of(version));
        let mut v = MemoryVolume::default();
        v.set_files(files.into_iter().map(|(id, b)| (id, MemoryStorage::from_bytes(b))).collect());
        let s = Store::open(v, store_options()).unwrap();
        assert!(s.recovery().checkpoint.is_some(), "{version}: {:?}", s.recovery());
        assert!(s.recovery().checkpoints_rejected.is_empty(), "{version}: {:?}", s.recovery());
        let got = contents(&s);
        assert_eq!(got, want, "{version}");
    }
}

/// Version 4: commit ids, one held only by a checkpoint and one only by the log, survive a
/// reopen from the committed files; a retried id is not applied again.
#[test]
fn commit_ids_survive_in_the_checkpoint_and_in_the_log() {
    let dir = dir().join("ids");
    let build = || {
        let mut s = Store::open(MemoryVolume::default(), store_options()).unwrap();
        let put = |v: &'static [u8]| [walnut::BatchOp::Put { key: b"counter", value: v }];
        s.batch_with_id(&put(b"1"), b"sync-batch-1", Durability::Strict).unwrap();
        s.checkpoint().unwrap();
        s.batch_with_id(&put(b"2"), b"sync-batch-2", Durability::Strict).unwrap();
        let v = s.volume().clone();
        drop(s); // no closing checkpoint: batch 2's id is only in the log
        v
    };
    let fixtures = [store_fixture(&dir, &build()), committed_volume(&dir_of("v4").join("ids"))];
    for v in fixtures {
        let mut s = Store::open(v, store_options()).unwrap();
        assert!(s.recovery().checkpoint.is_some());
        for id in [&b"sync-batch-1"[..], b"sync-batch-2"] {
            assert!(
                matches!(s.id_status(id), Some(walnut::IdStatus::Committed { .. })),
                "{:?}",
                String::from_utf8_lossy(id)
            );
        }
        let again = s.batch_with_id(
            &[walnut::BatchOp::Put { key: b"counter", value: b"1" }],
            b"sync-batch-1",
            Durability::Strict,
        );
        assert!(matches!(again, Ok(walnut::IdCommit::Duplicate(_))), "{again:?}");
        assert_eq!(s.get(b"counter").unwrap().as_deref(), Some(&b"2"[..]), "the retried batch was not applied again");
    }
}

/// Version 5: tables with sequence numbers. A store with two tables, keys in each, a queue with
/// a streamed entry, flushed and deleted-up-to marks, a dropped table, a default-table key that
/// starts with the table tag, a checkpoint, then writes only the log holds: every later build
/// reads it to the same tables, keys, queue, marks and next numbers.
#[test]
fn the_tables_fixture_recovers_as_recorded() {
    let build = || {
        let mut s = Store::open(MemoryVolume::default(), store_options()).unwrap();
        let q = s.create_table("outbox").unwrap();
        let gone = s.create_table("gone").unwrap();
        s.put_in(gone, b"k", false, b"v", Durability::Strict).unwrap();
        for i in 0..4u64 {
            s.append(q, &pattern(100 + i as usize, i), Durability::Strict).unwrap();
        }
        let t = s.begin().unwrap();
        s.txn_append(t, q).unwrap();
        s.txn_chunk(t, &pattern(3000, 9)).unwrap();
        s.commit(t, Durability::Strict).unwrap();
        s.put_in(q, b"state", true, b"kept", Durability::Strict).unwrap();
        s.put(&[0xFF, 1], b"tagged default key", Durability::Strict).unwrap();
        s.mark_flushed(q, 2, Durability::Strict).unwrap();
        s.delete_up_to(q, 2, Durability::Strict).unwrap();
        s.drop_table("gone").unwrap();
        s.checkpoint().unwrap();
        s.append(q, b"after the checkpoint", Durability::Strict).unwrap();
        s.mark_flushed(q, 3, Durability::Strict).unwrap();
        let v = s.volume().clone();
        drop(s); // no closing checkpoint: the last writes are only in the log
        v
    };
    // This build's own directory, and every older one that has the fixture.
    let current = format!("v{}", walnut::format::FORMAT_VERSION);
    let fixtures = [
        (current.clone(), store_fixture(&dir_of(&current).join("tables"), &build())),
        ("v5".to_string(), committed_volume(&dir_of("v5").join("tables"))),
    ];
    for (version, v) in fixtures {
        let mut s = Store::open(v, store_options()).unwrap();
        assert!(s.recovery().checkpoint.is_some(), "{version}");
        let tables: Vec<(String, u64, u64, u64)> =
            s.tables().into_iter().map(|t| (t.name, t.last_seq, t.flushed_seq, t.deleted_upto)).collect();
        assert_eq!(tables, [("".into(), 1, 0, 0), ("outbox".into(), 7, 3, 2)], "{version}");
        let q = s.table("outbox").unwrap().id;
        let queue: Vec<(u64, Vec<u8>)> =
            s.read(q, 0, None).unwrap().into_iter().map(|(n, e)| (n, s.value_of(&e).unwrap())).collect();
        let want: Vec<(u64, Vec<u8>)> = vec![
            (3, pattern(102, 2)),
            (4, pattern(103, 3)),
            (5, pattern(3000, 9)),
            (7, b"after the checkpoint".to_vec()),
        ];
        assert_eq!(queue, want, "{version}");
        assert_eq!(s.get_in(q, b"state").unwrap().as_deref(), Some(&b"kept"[..]));
        let feed: Vec<(u64, bool, Vec<u8>, u64, bool)> =
            s.changes(q, 0, None).unwrap().into_iter().map(|c| (c.seq, c.delete, c.key, c.size, c.current)).collect();
        assert_eq!(feed, [(6, false, b"state".to_vec(), 4, true)], "{version}: the change feed");
        assert_eq!(s.get(&[0xFF, 1]).unwrap().as_deref(), Some(&b"tagged default key"[..]));
        assert!(s.table("gone").is_none());
        assert_eq!(s.append(q, b"next", Durability::Strict).unwrap(), 8, "{version}: numbers go on");
        assert_eq!(s.create_table("again").unwrap(), 3, "{version}: ids are never reused");
    }
}

/// Version 6: a nested transaction rolled back inside a committed one (a ROLLBACK record,
/// with a streamed value and a write of another table in the rolled-back part), under a commit
/// id; then a transaction left open with a rollback of its own. Every later build reads it to
/// the committed part only, with the id remembered.
#[test]
fn the_nested_transaction_fixture_recovers_as_recorded() {
    let build = || {
        let mut s = Store::open(MemoryVolume::default(), store_options()).unwrap();
        let t1 = s.create_table("t1").unwrap();
        let t = s.tx_begin().unwrap();
        s.tx_put(t, 0, b"kept", false, b"outer").unwrap();
        s.tx_nest(t).unwrap();
        s.txn_put_in(t, 0, b"rolled-back", false).unwrap();
        s.txn_chunk(t, &pattern(2500, 4)).unwrap();
        s.tx_put(t, t1, b"k", false, b"rolled back too").unwrap();
        s.tx_rollback(t).unwrap();
        s.tx_nest(t).unwrap();
        s.tx_put(t, t1, b"k", false, b"inner, kept").unwrap();
        s.tx_release(t).unwrap();
        s.tx_commit(t, Some(b"nested-1"), Durability::Strict).unwrap();
        let open = s.tx_begin().unwrap();
        s.tx_nest(open).unwrap();
        s.tx_put(open, 0, b"never", false, b"x").unwrap();
        s.tx_rollback(open).unwrap();
        s.tx_put(open, 0, b"never", false, b"y").unwrap();
        s.sync().unwrap();
        let v = s.volume().clone();
        drop(s);
        v
    };
    let current = format!("v{}", walnut::format::FORMAT_VERSION);
    let v = store_fixture(&dir_of(&current).join("nested"), &build());
    let s = Store::open(v, store_options()).unwrap();
    assert_eq!(contents(&s), vec![(b"kept".to_vec(), b"outer".to_vec())], "{current}");
    let t1 = s.table("t1").unwrap();
    assert_eq!(s.get_in(t1.id, b"k").unwrap().as_deref(), Some(&b"inner, kept"[..]), "{current}");
    assert_eq!(t1.last_seq, 1, "{current}: the rolled-back write took no number");
    assert!(matches!(s.id_status(b"nested-1"), Some(walnut::IdStatus::Committed { .. })));
    let discarded: Vec<_> = s.recovery().discarded.iter().map(|d| d.reason.clone()).collect();
    assert_eq!(discarded, [walnut::DiscardReason::Incomplete], "{current}: only the open transaction");
}

/// docs/FORMAT.md section 8 lists, byte for byte, the log of a few calls and the checkpoint
/// `close()` writes: every line of those listings must be what this build writes
/// (`WALNUT_PRINT_EXAMPLE=1` prints them).
#[test]
fn the_worked_example_in_format_md_is_what_this_build_writes() {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ");
    let v = MemoryVolume::default();
    let mut s = Store::open(v, Options { chunk_size: 4, ..Options::default() }).unwrap();
    let t = s.begin().unwrap();
    s.txn_put(t, b"img", true).unwrap();
    s.txn_chunk(t, b"ABCD").unwrap();
    s.put_flagged(b"k", true, b"v", Durability::Strict).unwrap();
    s.txn_chunk(t, b"EFGHIJ").unwrap();
    s.commit(t, Durability::Strict).unwrap();
    s.close().unwrap();
    let v = s.into_volume();
    let files: Vec<Vec<u8>> = v.files().values().map(|f| f.to_vec()).collect();
    let log = files.iter().find(|f| f.starts_with(b"WALNUTLG")).unwrap();
    let ck = files.iter().find(|f| f.starts_with(b"WALNUTCK")).unwrap();
    let mut lines = vec![format!("  0 header   {}", hex(&log[..32]))];
    let names =
        ["", "BEGIN", "PUT", "CHUNK", "DELETE", "COMMIT", "ABORT", "PUT_ONE", "DELETE_ONE", "TABLE", "ROLLBACK"];
    for (at, end) in record_spans(log) {
        let (at, end) = (at as usize, end as usize);
        let h = &log[at..at + 36];
        let fields = [&h[0..4], &h[4..8], &h[8..12], &h[12..20], &h[20..28], &h[28..36]];
        let fields: Vec<String> = fields.iter().map(|f| hex(f)).collect();
        lines.push(format!("{at:>3} {:<8} {}", names[usize::from(h[8])], fields.join(" | ")));
        if end > at + 36 {
            lines.push(format!("    payload  {}", hex(&log[at + 36..end])));
        }
    }
    for (at, len) in [
        (0usize, 8usize),
        (16, 8),
        (24, 8),
        (32, 8),
        (40, 8),
        (48, 8),
        (56, 8),
        (64, 4),
        (68, 4),
        (72, 8),
        (80, 4),
        (84, 4),
    ] {
        lines.push(hex(&ck[at..at + len]));
    }
    if std::env::var_os("WALNUT_PRINT_EXAMPLE").is_some() {
        println!("log {} bytes, checkpoint {} bytes", log.len(), ck.len());
        println!("{}", lines.join("\n"));
        println!("checkpoint body: {}", hex(&ck[88..]));
    }
    let doc = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/FORMAT.md")).unwrap();
    for line in &lines {
        assert!(doc.contains(line.as_str()), "docs/FORMAT.md section 8 lacks: {line}");
    }
}
