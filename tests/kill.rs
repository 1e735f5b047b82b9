//! Crash tests that really crash (sled's `test_crash_recovery`): the test re-runs itself as a
//! child process that writes to a file-backed store and prints each acknowledged commit; the
//! parent kills it with SIGKILL at a varying moment, reopens the store and checks that every
//! acknowledged value is present with its exact bytes and that no value is partial.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::pattern;
use walnut::{DirVolume, Durability, FileStorage, KeyRange, Options, Store, Volume};

const CHILD_ENV: &str = "WALNUT_KILL_CHILD";

fn options() -> Options {
    Options { chunk_size: 16 << 10, ..Options::default() }
}

/// A store directory rotates segments and takes checkpoints every few hundred KiB.
fn dir_options() -> Options {
    Options { segment_size: 512 << 10, checkpoint_bytes: 768 << 10, compaction_ratio: 0.3, ..options() }
}

/// What the child writes to: one file, or a directory (whose lock a killed child leaves).
#[derive(Clone, Copy)]
enum Target {
    File,
    Dir,
}

impl Target {
    fn test_name(self) -> &'static str {
        match self {
            Target::File => "a_killed_writer_loses_nothing_acknowledged",
            Target::Dir => "a_killed_writer_of_a_directory_loses_nothing_and_its_lock_is_taken_over",
        }
    }
}

/// Key `i` always holds `value(i)`; a partial value cannot pass for a whole one.
fn value(i: u64) -> Vec<u8> {
    let len = if i % 3 == 0 { 200_000 + (i as usize % 7) * 10_000 } else { 100 + i as usize % 50 };
    pattern(len, i)
}

fn key(i: u64) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

/// The child: writes forever, large values streamed in chunks with small puts landing between
/// them, and reports each commit only once it is durable.
fn child<V: Volume>(mut s: Store<V>) {
    let out = std::io::stdout();
    let mut i = s.keys(&KeyRange::default()).unwrap().len() as u64 + 1_000_000;
    loop {
        let v = value(i);
        if v.len() > 100_000 {
            let t = s.begin().unwrap();
            s.txn_put(t, &key(i), false).unwrap();
            for (n, piece) in v.chunks(50_000).enumerate() {
                s.txn_chunk(t, piece).unwrap();
                let small = i + 1 + n as u64;
                // Only small ids that value() makes small, so each key keeps one value.
                if small % 3 != 0 {
                    s.put(&key(small), &value(small), Durability::Strict).unwrap();
                    writeln!(out.lock(), "ack {small}").unwrap();
                }
            }
            s.commit(t, Durability::Strict).unwrap();
            writeln!(out.lock(), "ack {i}").unwrap();
            i += 1 + v.chunks(50_000).count() as u64;
        } else {
            s.put(&key(i), &v, Durability::Strict).unwrap();
            writeln!(out.lock(), "ack {i}").unwrap();
            i += 1;
        }
    }
}

#[test]
fn a_killed_writer_loses_nothing_acknowledged() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        child(Store::open(FileStorage::open(path).unwrap(), options()).unwrap());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal.log");
    kill_rounds(Target::File, &path, || Store::open(FileStorage::open(&path).unwrap(), options()).unwrap());
}

#[test]
fn a_killed_writer_of_a_directory_loses_nothing_and_its_lock_is_taken_over() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        child(Store::open(DirVolume::open(path).unwrap(), dir_options()).unwrap());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    kill_rounds(Target::Dir, &path, || {
        let s = Store::open(DirVolume::open(&path).unwrap(), dir_options()).unwrap();
        // The killed child's LOCK was stale, and was taken over; the directory is locked again.
        assert!(path.join("LOCK").exists());
        assert!(matches!(DirVolume::open(&path), Err(walnut::Error::Locked { .. })));
        s
    });
}

/// Runs the child on `path` eight times, killing it with SIGKILL after a varying number of
/// acknowledged commits; after each kill, `reopen` must show every acknowledged value whole,
/// and no value partial.
fn kill_rounds<V: Volume>(target: Target, path: &std::path::Path, reopen: impl Fn() -> Store<V>) {
    let mut acked_total = Vec::new();
    for (round, kill_after) in [3usize, 17, 40, 1, 64, 9, 120, 25].into_iter().enumerate() {
        let mut proc = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", target.test_name(), "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(proc.stdout.take().unwrap()).lines();
        let mut acked = Vec::new();
        while acked.len() < kill_after {
            let line = lines.next().expect("child stopped early").unwrap();
            if let Some(n) = line.strip_prefix("ack ") {
                acked.push(n.parse::<u64>().unwrap());
            }
        }
        proc.kill().unwrap();
        proc.wait().unwrap();
        // Acks already in the pipe when the child died were acknowledged too.
        acked.extend(
            lines.map_while(Result::ok).filter_map(|l| l.strip_prefix("ack ").and_then(|n| n.parse::<u64>().ok())),
        );
        acked_total.extend(acked);

        let s = reopen();
        for &i in &acked_total {
            assert_eq!(s.get(&key(i)).unwrap().as_deref(), Some(&value(i)[..]), "round {round}: acked {i} lost");
        }
        for k in s.keys(&KeyRange::default()).unwrap() {
            let i: u64 = std::str::from_utf8(&k.key[4..]).unwrap().parse().unwrap();
            assert_eq!(s.get(&k.key).unwrap().unwrap(), value(i), "round {round}: value {i} is partial or wrong");
        }
    }
    let what = match target {
        Target::File => "a file",
        Target::Dir => "a directory",
    };
    println!("crash points: SIGKILL of {what}: 8 ({} acknowledged commits checked)", acked_total.len());
}
