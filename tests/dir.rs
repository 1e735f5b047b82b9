//! A store directory on the native file system (`DirVolume`): file names, free files, and the
//! `LOCK` file it shares with Node's volume (www/volume-node.js).
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::process::{Command, Stdio};

use common::pattern;
use walnut::{DirVolume, Durability, Error, KeyRange, Options, Store};

fn small() -> Options {
    Options { chunk_size: 1024, segment_size: 8192, checkpoint_bytes: 0, compaction_ratio: 1.0, ..Options::default() }
}

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut n: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    n.sort();
    n
}

#[test]
fn files_are_named_as_on_opfs_and_released_ones_are_emptied_and_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    {
        let mut s = Store::open(DirVolume::open(&dir).unwrap(), small()).unwrap();
        for i in 0..40u64 {
            s.put(format!("k{}", i % 4).as_bytes(), &pattern(900, i), Durability::Strict).unwrap();
        }
        assert!(s.stats().segments > 2, "{:?}", s.stats());
        assert_eq!(s.compact().unwrap(), 1);
        let all = names(&dir);
        assert!(all.contains(&"LOCK".to_string()), "{all:?}");
        assert!(all.iter().filter(|n| *n != "LOCK").all(|n| n.len() == 12 && n.ends_with(".wal")), "{all:?}");
        // Compaction released segments: their files are empty, kept for the next segments.
        let empty =
            all.iter().filter(|n| n.ends_with(".wal") && std::fs::metadata(dir.join(n)).unwrap().len() == 0).count();
        assert!(empty > 0, "{all:?}");
        let before = all.len();
        for i in 0..6u64 {
            s.put(b"more", &pattern(3000, i), Durability::Strict).unwrap();
        }
        assert_eq!(names(&dir).len(), before, "new segments reuse the emptied files");
    }
    assert!(!dir.join("LOCK").exists(), "closing releases the lock");
    let s = Store::open(DirVolume::open(&dir).unwrap(), small()).unwrap();
    assert_eq!(s.keys(&KeyRange::default()).unwrap().len(), 5);
    assert_eq!(s.get(b"k3").unwrap().unwrap(), pattern(900, 39));
}

#[test]
fn a_directory_of_version_0_1_names_still_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    {
        let mut s = Store::open(DirVolume::open(&dir).unwrap(), small()).unwrap();
        for i in 0..12u64 {
            s.put(format!("k{i}").as_bytes(), &pattern(1500, i), Durability::Strict).unwrap();
        }
    }
    // Rename to the names version 0.1 gave: `<n>.wal`.
    for n in names(&dir) {
        if let Some(id) = n.strip_suffix(".wal").and_then(|d| d.parse::<u32>().ok()) {
            std::fs::rename(dir.join(&n), dir.join(format!("{id}.wal"))).unwrap();
        }
    }
    let s = Store::open(DirVolume::open(&dir).unwrap(), small()).unwrap();
    assert_eq!(s.get(b"k11").unwrap().unwrap(), pattern(1500, 11));
    drop(s);
    // Two names for one file are refused, rather than one of them silently ignored.
    std::fs::write(dir.join("00000000.wal"), b"x").unwrap();
    let e = DirVolume::open(&dir).unwrap_err();
    assert!(e.to_string().contains("both name file 0"), "{e}");
}

#[test]
fn a_second_open_is_refused_until_the_first_closes() {
    let tmp = tempfile::tempdir().unwrap();
    let first = DirVolume::open(tmp.path()).unwrap();
    let e = DirVolume::open(tmp.path()).unwrap_err();
    assert!(matches!(e, Error::Locked { .. }), "{e:?}");
    assert!(e.to_string().contains(&format!("process {}", std::process::id())), "{e}");
    drop(first);
    DirVolume::open(tmp.path()).unwrap();
}

/// The LOCK text a process writes (the format of www/volume-node.js).
fn lock_text(pid: u32, start: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    format!("walnut-lock 1\npid {pid}\nstart {start}\nhost {}\n", host.trim())
}

fn start_of(pid: u32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 2..].split(' ').nth(19).unwrap().to_string()
}

#[test]
fn a_lock_held_by_a_live_process_is_refused_and_taken_over_once_it_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let mut holder = Command::new("sleep").arg("60").stdout(Stdio::null()).spawn().unwrap();
    let pid = holder.id();
    std::fs::write(tmp.path().join("LOCK"), lock_text(pid, &start_of(pid))).unwrap();
    let e = DirVolume::open(tmp.path()).unwrap_err();
    assert!(matches!(e, Error::Locked { .. }), "{e:?}");
    assert!(e.to_string().contains(&format!("process {pid}")), "{e}");
    holder.kill().unwrap();
    holder.wait().unwrap();
    let v = DirVolume::open(tmp.path()).expect("the holder is gone: its lock is stale");
    let text = std::fs::read_to_string(tmp.path().join("LOCK")).unwrap();
    assert!(text.contains(&format!("pid {}\n", std::process::id())), "{text}");
    drop(v);
}

#[test]
fn a_lock_naming_a_reused_pid_is_stale() {
    // The pid runs, but it is another process than the one that wrote the lock (its start
    // time differs): the writer is gone.
    let tmp = tempfile::tempdir().unwrap();
    let mut other = Command::new("sleep").arg("60").stdout(Stdio::null()).spawn().unwrap();
    std::fs::write(tmp.path().join("LOCK"), lock_text(other.id(), "1")).unwrap();
    let opened = DirVolume::open(tmp.path());
    other.kill().unwrap();
    other.wait().unwrap();
    opened.expect("a lock whose pid belongs to a later process is stale");
}

#[test]
fn a_lock_of_another_host_is_never_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("LOCK"), "walnut-lock 1\npid 1\nstart 5\nhost elsewhere.example\n").unwrap();
    let e = DirVolume::open(tmp.path()).unwrap_err();
    assert!(e.to_string().contains("on host elsewhere.example"), "{e}");
    assert!(tmp.path().join("LOCK").exists());
}
