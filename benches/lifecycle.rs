//! The log lifecycle, measured natively (`cargo bench --bench lifecycle`, part of `make bench`):
//!
//! - open time from a checkpoint against the number of keys (10k, 100k, 1M), beside a full
//!   scan of the same log (the store without its checkpoints): the ratio is what checkpoints buy;
//! - open time against history (100 MiB and 2 GiB written over a fixed working set): flat when
//!   checkpoints and compaction do their job;
//! - space: log size over live bytes after 2 GiB of overwrites of a 100 MiB working set, with
//!   automatic compaction, and after an explicit `compact()`.
//!
//! Results go to stdout as a table and to `bench/out/lifecycle.json`. Stores live in memory
//! (`MemoryVolume`) so the figures measure walnut, not the disk. `LIFECYCLE_QUICK=1` shrinks
//! every size by 10x.

use std::time::Instant;

use walnut::storage::{MemoryVolume, Volume};
use walnut::{Durability, Options, Store};

const MIB: usize = 1 << 20;

fn quick() -> bool {
    std::env::var_os("LIFECYCLE_QUICK").is_some()
}

fn scale(n: usize) -> usize {
    if quick() {
        n / 10
    } else {
        n
    }
}

/// Median open time in ms over `rounds` opens of clones of `v`, and the records replayed.
fn open_ms(v: &MemoryVolume, rounds: usize) -> (f64, u64, usize) {
    let mut times = Vec::new();
    let mut records = 0;
    let mut keys = 0;
    for _ in 0..rounds {
        let copy = deep_copy(v);
        let t = Instant::now();
        let s = Store::open(copy, Options::default()).expect("open");
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        records = s.recovery().records;
        keys = s.stats().keys as usize;
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], records, keys)
}

/// A volume with the same bytes in new files (opening may release or truncate files).
fn deep_copy(v: &MemoryVolume) -> MemoryVolume {
    let mut out = MemoryVolume::default();
    out.set_files(v.files().iter().map(|(&id, f)| (id, walnut::MemoryStorage::from_bytes(f.to_vec()))).collect());
    out
}

/// The same volume without its checkpoint files: what a full scan costs.
fn without_checkpoints(v: &MemoryVolume) -> MemoryVolume {
    let mut out = MemoryVolume::default();
    out.set_files(
        v.files()
            .iter()
            .filter(|(_, f)| !f.to_vec().starts_with(b"WALNUTCK"))
            .map(|(&id, f)| (id, walnut::MemoryStorage::from_bytes(f.to_vec())))
            .collect(),
    );
    out
}

fn value(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) ^ seed) as u8).collect()
}

struct Row {
    what: String,
    keys: usize,
    history_mib: f64,
    log_mib: f64,
    open_checkpoint_ms: f64,
    open_full_scan_ms: f64,
    replayed: u64,
}

fn by_keys(n: usize) -> Row {
    let mut s = Store::open(MemoryVolume::default(), Options::default()).expect("open");
    for i in 0..n {
        s.put(format!("key-{i:08}").as_bytes(), &value(128, i), Durability::Relaxed).expect("put");
    }
    let history = s.stats().log_bytes as f64 / MIB as f64;
    let v = s.into_volume();
    let (ck, replayed, keys) = open_ms(&v, 5);
    let (scan, _, _) = open_ms(&without_checkpoints(&v), 3);
    let log = v.ids().iter().map(|&id| v.file(id).map(|f| f.to_vec().len()).unwrap_or(0)).sum::<usize>();
    Row {
        what: format!("{n} keys of 128 B"),
        keys,
        history_mib: history,
        log_mib: log as f64 / MIB as f64,
        open_checkpoint_ms: ck,
        open_full_scan_ms: scan,
        replayed,
    }
}

/// Overwrites a working set of `live` bytes (4 KiB values) until `history` bytes were written.
fn by_history(live: usize, history: usize) -> (Row, f64, f64) {
    let mut s = Store::open(MemoryVolume::default(), Options::default()).expect("open");
    let keys = live / (4 << 10);
    let mut written = 0;
    let mut round = 0;
    while written < history {
        for i in 0..keys {
            s.put(format!("key-{i:08}").as_bytes(), &value(4 << 10, i + round), Durability::Relaxed).expect("put");
        }
        written += keys * (4 << 10);
        round += 1;
    }
    s.sync().expect("sync");
    let st = s.stats();
    let auto_ratio = st.log_bytes as f64 / st.live_bytes as f64;
    s.compact().expect("compact");
    let st = s.stats();
    let compacted_ratio = st.log_bytes as f64 / st.live_bytes as f64;
    let v = s.into_volume();
    let (ck, replayed, n) = open_ms(&v, 5);
    let (scan, _, _) = open_ms(&without_checkpoints(&v), 3);
    let log = v.ids().iter().map(|&id| v.file(id).map(|f| f.to_vec().len()).unwrap_or(0)).sum::<usize>();
    let row = Row {
        what: format!("{} MiB live, {} MiB written", live / MIB, history / MIB),
        keys: n,
        history_mib: history as f64 / MIB as f64,
        log_mib: log as f64 / MIB as f64,
        open_checkpoint_ms: ck,
        open_full_scan_ms: scan,
        replayed,
    };
    (row, auto_ratio, compacted_ratio)
}

fn main() {
    // `cargo bench` passes `--bench`; this harness takes no arguments.
    let mut rows = Vec::new();
    for n in [10_000, 100_000, 1_000_000] {
        rows.push(by_keys(scale(n)));
        eprintln!("done: {}", rows.last().map_or("", |r| r.what.as_str()));
    }
    let mut space = Vec::new();
    for history in [100 * MIB, 2048 * MIB] {
        let (row, auto, compacted) = by_history(scale(100 * MIB), scale(history));
        eprintln!("done: {}", row.what);
        space.push((row.what.clone(), auto, compacted));
        rows.push(row);
    }

    println!("\nOpen time (median ms; MemoryVolume, native release build)\n");
    println!("| store | keys | written MiB | log MiB | open from checkpoint | full scan | ratio | records replayed |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.0} | {:.1} | {:.1} ms | {:.1} ms | {:.1}x | {} |",
            r.what,
            r.keys,
            r.history_mib,
            r.log_mib,
            r.open_checkpoint_ms,
            r.open_full_scan_ms,
            r.open_full_scan_ms / r.open_checkpoint_ms,
            r.replayed
        );
    }
    println!("\nSpace: log bytes / live bytes\n");
    println!("| workload | with automatic compaction | after compact() |");
    println!("|---|---:|---:|");
    for (what, auto, compacted) in &space {
        println!("| {what} | {auto:.2} | {compacted:.2} |");
    }

    let json_rows: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                r#"{{"store":"{}","keys":{},"writtenMiB":{:.1},"logMiB":{:.2},"openCheckpointMs":{:.3},"openFullScanMs":{:.3},"replayed":{}}}"#,
                r.what, r.keys, r.history_mib, r.log_mib, r.open_checkpoint_ms, r.open_full_scan_ms, r.replayed
            )
        })
        .collect();
    let json_space: Vec<String> = space
        .iter()
        .map(|(w, a, c)| format!(r#"{{"workload":"{w}","autoRatio":{a:.3},"compactedRatio":{c:.3}}}"#))
        .collect();
    let json = format!(r#"{{"open":[{}],"space":[{}]}}"#, json_rows.join(","), json_space.join(","));
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/out");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(out.join("lifecycle.json"), json);
}
