//! The `walnut` command-line tool against the committed fixture stores: golden outputs for
//! every read-only subcommand (`WALNUT_WRITE_FIXTURES=1` rewrites them), `--json` that parses,
//! a damaged store that `verify` reports (exit 1) without changing a byte, and `compact` and
//! `checkpoint` on a copy.
#![cfg(not(target_arch = "wasm32"))]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use walnut::{DirVolume, Durability, Options, Store};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn walnut(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_walnut")).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// Checks `actual` against `tests/fixtures/cli/<name>.txt`, writing it first with
/// `WALNUT_WRITE_FIXTURES=1`.
fn golden(name: &str, actual: &str) {
    let path = fixtures().join("cli").join(format!("{name}.txt"));
    if std::env::var_os("WALNUT_WRITE_FIXTURES").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(actual, want, "{name} differs from {}", path.display());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.clone(), std::fs::read(p).unwrap()))
        .collect();
    v.sort();
    v
}

#[test]
fn read_only_subcommands_print_what_the_fixtures_hold() {
    let v6 = fixtures().join("v6");
    for (name, store) in [("store", v6.join("store")), ("tables", v6.join("tables")), ("nested", v6.join("nested"))] {
        let before = snapshot(&store);
        let s = store.to_str().unwrap();
        for (cmd, args) in [
            ("inspect", vec!["inspect", s]),
            ("verify", vec!["verify", s]),
            ("ls", vec!["ls", s]),
            ("cat-log", vec!["cat-log", s]),
        ] {
            let o = walnut(&args);
            assert!(o.status.code().is_some_and(|c| c <= 1), "{cmd} {name}: {}", String::from_utf8_lossy(&o.stderr));
            golden(&format!("{name}-{cmd}"), &text(&o));
            let j = walnut(&[&["--json"], &args[..]].concat());
            let out = text(&j);
            for l in out.lines().filter(|l| !l.is_empty()) {
                serde_json::from_str::<serde_json::Value>(l)
                    .unwrap_or_else(|e| panic!("{cmd} --json {name}: {e}: {l}"));
            }
        }
        assert_eq!(snapshot(&store), before, "{name}: the read-only subcommands changed no byte");
    }
    // A table's keys, a value to stdout and to a file, a key and a table that do not exist.
    let tables = v6.join("tables");
    let t = tables.to_str().unwrap();
    golden("tables-ls-outbox", &text(&walnut(&["ls", t, "--table", "outbox"])));
    let o = walnut(&["get", t, "state", "--table", "outbox"]);
    assert_eq!((o.status.code(), o.stdout.as_slice()), (Some(0), &b"kept"[..]));
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("value");
    let o = walnut(&["get", fixtures().join("v6/store").to_str().unwrap(), "streamed", "-o", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    let s =
        Store::open(walnut::storage::overlay::read_only_dir(fixtures().join("v6/store")).unwrap(), Options::default())
            .unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), s.get(b"streamed").unwrap().unwrap(), "get -o writes the value whole");
    assert_eq!(walnut(&["get", t, "absent"]).status.code(), Some(4));
    assert_eq!(walnut(&["ls", t, "--table", "nope"]).status.code(), Some(4));
    assert_eq!(walnut(&["inspect", tmp.path().join("missing").to_str().unwrap()]).status.code(), Some(3));
    // A single-file store (format version 1).
    let one = fixtures().join("v1/valid.wal");
    golden("v1-valid-ls", &text(&walnut(&["ls", one.to_str().unwrap()])));
}

#[test]
fn verify_reports_damage_with_exit_1_and_never_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    copy_dir(&fixtures().join("v6/store"), &dir);
    // Flip a byte of the last record of the newest segment (after the checkpoint's replay
    // point: recovery would cut it) and one inside a live value's chunk in the oldest (before
    // it: recovery does not read it, the value check does).
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| std::fs::read(p).unwrap().starts_with(&walnut::format::MAGIC))
        .collect();
    segments.sort();
    let newest = segments.last().unwrap();
    let mut bytes = std::fs::read(newest).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x20;
    std::fs::write(newest, &bytes).unwrap();
    let at = {
        let s = Store::open(walnut::storage::overlay::read_only_dir(&dir).unwrap(), Options::default()).unwrap();
        s.entry(b"streamed").unwrap().unwrap().chunks[0].record
    };
    let holder = segments
        .iter()
        .find(|p| {
            let b = std::fs::read(p).unwrap();
            let h: [u8; walnut::format::FILE_HEADER_LEN] = b[..walnut::format::FILE_HEADER_LEN].try_into().unwrap();
            walnut::format::FileHeader::decode(&h).unwrap().segment == walnut::format::loc_segment(at)
        })
        .unwrap();
    let mut bytes = std::fs::read(holder).unwrap();
    bytes[walnut::format::loc_offset(at) as usize + walnut::format::RECORD_HEADER_LEN + 10] ^= 0x20;
    std::fs::write(holder, &bytes).unwrap();
    let before = snapshot(&dir);
    let o = walnut(&["verify", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("would cut") && out.contains("unreadable value") && out.contains("DAMAGED"), "{out}");
    let j = walnut(&["--json", "verify", dir.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(v["bytes_truncated"].as_u64().unwrap() > 0 && v["values_unreadable"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(snapshot(&dir), before, "verify wrote nothing");
    // cat-log stops at the damage and says so.
    let log = text(&walnut(&["cat-log", dir.to_str().unwrap()]));
    assert!(log.contains("BAD") || log.contains("Checksum") || log.contains("invalid"), "{log}");
}

#[test]
fn compact_and_checkpoint_rewrite_a_copy_that_reads_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    {
        let opts = Options { segment_size: 4096, checkpoint_bytes: 0, compaction_ratio: 1.0, ..Options::default() };
        let mut s = Store::open(DirVolume::open(&dir).unwrap(), opts).unwrap();
        for round in 0..6u8 {
            for k in 0..10u8 {
                s.put(&[b'k', k], &vec![round; 700], Durability::Strict).unwrap();
            }
        }
    }
    let read = |dir: &Path| {
        let s = Store::open(walnut::storage::overlay::read_only_dir(dir).unwrap(), Options::default()).unwrap();
        (0..10u8).map(|k| s.get(&[b'k', k]).unwrap()).collect::<Vec<_>>()
    };
    let want = read(&dir);
    let o = walnut(&["--json", "compact", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["rounds"].as_u64().unwrap() >= 1 && v["log_bytes_after"].as_u64() < v["log_bytes_before"].as_u64(),
        "{v}"
    );
    assert_eq!(read(&dir), want);
    let o = walnut(&["checkpoint", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(read(&dir), want);
    let v: serde_json::Value =
        serde_json::from_slice(&walnut(&["--json", "verify", dir.to_str().unwrap()]).stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    // A store held by a live process is refused (exit 3), not written.
    let held = DirVolume::open(&dir).unwrap();
    let o = walnut(&["compact", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    drop(held);
}

#[test]
fn export_and_import_round_trip_and_a_cut_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("tables.walnut");
    let src = fixtures().join("v6/tables");
    let o = walnut(&["--json", "export", src.to_str().unwrap(), "-o", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let into = tmp.path().join("restored");
    let o = walnut(&["import", file.to_str().unwrap(), into.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    for args in [vec!["ls"], vec!["ls", "--table", "outbox"]] {
        let a = text(&walnut(&[&args[..1], &[src.to_str().unwrap()], &args[1..]].concat()));
        let b = text(&walnut(&[&args[..1], &[into.to_str().unwrap()], &args[1..]].concat()));
        assert_eq!(a, b, "{args:?}");
    }
    let tables = |p: &Path| {
        let v: serde_json::Value =
            serde_json::from_slice(&walnut(&["--json", "inspect", p.to_str().unwrap()]).stdout).unwrap();
        v["tables"].clone()
    };
    assert_eq!(tables(&into), tables(&src), "tables and their sequence marks travel");
    // The export file is itself a log the tools read.
    assert_eq!(text(&walnut(&["ls", file.to_str().unwrap()])), text(&walnut(&["ls", src.to_str().unwrap()])));
    // Cut short: refused, naming the offset; nothing is created.
    let bytes = std::fs::read(&file).unwrap();
    let cut = tmp.path().join("cut.walnut");
    std::fs::write(&cut, &bytes[..bytes.len() - 30]).unwrap();
    let target = tmp.path().join("never");
    let o = walnut(&["import", cut.to_str().unwrap(), target.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("offset"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!target.exists(), "a refused import creates nothing");
    // Into a directory that holds something: refused.
    assert_eq!(walnut(&["import", file.to_str().unwrap(), into.to_str().unwrap()]).status.code(), Some(3));
}

/// Found by review: paths that are not stores, an export into its own store, a held store, an
/// import into `.`, and temporary names that belonged to the user.
#[test]
fn the_tool_refuses_what_is_not_a_store_and_never_touches_what_it_did_not_make() {
    let tmp = tempfile::tempdir().unwrap();
    let not_store = tmp.path().join("notastore");
    std::fs::create_dir(&not_store).unwrap();
    std::fs::write(not_store.join("readme.txt"), "hello").unwrap();
    let empty = tmp.path().join("empty.wal");
    std::fs::write(&empty, b"").unwrap();
    for p in [&not_store, &empty] {
        let o = walnut(&["verify", p.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(3), "{}: {}", p.display(), text(&o));
    }
    let out = tmp.path().join("x.walnut");
    assert_eq!(walnut(&["export", not_store.to_str().unwrap(), "-o", out.to_str().unwrap()]).status.code(), Some(3));
    assert!(!out.exists());
    // An export into its own store directory is refused; one of a held store too.
    let dir = tmp.path().join("store");
    copy_dir(&fixtures().join("v6/store"), &dir);
    let before = snapshot(&dir);
    let o = walnut(&["export", dir.to_str().unwrap(), "-o", dir.join("9.wal").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(snapshot(&dir), before, "nothing written into the store");
    let held = DirVolume::open(&dir).unwrap();
    assert_eq!(walnut(&["export", dir.to_str().unwrap(), "-o", out.to_str().unwrap()]).status.code(), Some(3));
    drop(held);
    // A user's directory with the name an older build used for its temporary one is left alone.
    let o = walnut(&["export", dir.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let precious = tmp.path().join("prod.import.partial");
    std::fs::create_dir(&precious).unwrap();
    std::fs::write(precious.join("notes.txt"), "precious").unwrap();
    let o = walnut(&["import", out.to_str().unwrap(), tmp.path().join("prod.v2").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(precious.join("notes.txt")).unwrap(), "precious");
    // Import into "." is refused, and leaves nothing.
    let cwd = tmp.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_walnut"))
        .args(["import", out.to_str().unwrap(), "."])
        .current_dir(&cwd)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(std::fs::read_dir(&cwd).unwrap().count(), 0, "nothing left in the directory");
    assert_eq!(
        std::fs::read_dir(tmp.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with('.'))
            .count(),
        0,
        "no temporary left"
    );
}
