//! Native benchmarks of the core, each beside its physical limit measured in the same run:
//! the same bytes written with plain positioned writes to the same backend.
//!
//! - `append/<backend>/<size>`: walnut puts of one value size (relaxed: the write path without
//!   a flush) vs `raw` positioned writes of the same bytes. Throughput in bytes.
//! - `durable_put/file`: 128-byte strict puts (one flush each) vs raw write + fdatasync.
//! - `recovery/<log>`: open (full scan, CRC of every byte, index rebuild) of a 64 MiB log of
//!   1 MiB chunks and of a log of 100k small puts. Throughput in log bytes.
//!
//! `make bench` runs them; ratios are printed by criterion side by side.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use walnut::storage::write_all_at;
use walnut::{Durability, FileStorage, MemoryStorage, Options, Storage, Store};

fn value(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn file() -> (tempfile::TempDir, FileStorage) {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStorage::open(dir.path().join("wal.log")).unwrap();
    (dir, s)
}

/// An empty storage of the named backend (the temporary directory lives as long as it).
fn fresh(backend: &str) -> (Option<tempfile::TempDir>, Box<dyn Storage>) {
    if backend == "memory" {
        (None, Box::new(MemoryStorage::new()))
    } else {
        let (d, s) = file();
        (Some(d), Box::new(s))
    }
}

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    for size in [128usize, 4096, 64 << 10, 1 << 20] {
        let v = value(size);
        let per_iter = if size >= 1 << 20 { 16 } else { (4 << 20) / size };
        g.throughput(Throughput::Bytes((size * per_iter) as u64));
        for backend in ["memory", "file"] {
            g.bench_with_input(BenchmarkId::new(format!("{backend}/walnut"), size), &size, |b, _| {
                b.iter_batched(
                    || fresh(backend),
                    |(_dir, storage)| {
                        let mut s = Store::open(storage, Options::default()).unwrap();
                        for i in 0..per_iter {
                            s.put(&(i as u64).to_be_bytes(), &v, Durability::Relaxed).unwrap();
                        }
                        black_box(s.stats());
                    },
                    criterion::BatchSize::PerIteration,
                )
            });
            g.bench_with_input(BenchmarkId::new(format!("{backend}/raw"), size), &size, |b, _| {
                b.iter_batched(
                    || fresh(backend),
                    |(_dir, mut storage)| {
                        let mut at = 0u64;
                        for _ in 0..per_iter {
                            write_all_at(&mut storage, &v, at).unwrap();
                            at += v.len() as u64;
                        }
                    },
                    criterion::BatchSize::PerIteration,
                )
            });
        }
    }
    g.finish();
}

fn durable_put(c: &mut Criterion) {
    let mut g = c.benchmark_group("durable_put");
    g.throughput(Throughput::Elements(1));
    let v = value(128);
    let (_d, storage) = file();
    let mut s = Store::open(storage, Options::default()).unwrap();
    let mut i = 0u64;
    g.bench_function("file/walnut", |b| {
        b.iter(|| {
            i += 1;
            s.put(&i.to_be_bytes(), &v, Durability::Strict).unwrap();
        })
    });
    let (_d2, mut raw) = file();
    let mut at = 0u64;
    g.bench_function("file/raw", |b| {
        b.iter(|| {
            write_all_at(&mut raw, &v, at).unwrap();
            raw.flush().unwrap();
            at += v.len() as u64;
        })
    });
    g.finish();
}

fn recovery(c: &mut Criterion) {
    let mut g = c.benchmark_group("recovery");
    g.sample_size(10);
    let chunked = MemoryStorage::new();
    {
        let mut s = Store::open(chunked.clone(), Options::default()).unwrap();
        let v = value(1 << 20);
        for i in 0..8u64 {
            let t = s.begin().unwrap();
            s.txn_put(t, &i.to_be_bytes(), false).unwrap();
            for _ in 0..8 {
                s.txn_chunk(t, &v).unwrap();
            }
            s.commit(t, Durability::Relaxed).unwrap();
        }
    }
    let small = MemoryStorage::new();
    {
        let mut s = Store::open(small.clone(), Options::default()).unwrap();
        let v = value(128);
        for i in 0..100_000u64 {
            s.put(&i.to_be_bytes(), &v, Durability::Relaxed).unwrap();
        }
    }
    for (name, log) in [("64MiB_in_1MiB_chunks", chunked), ("100k_puts_of_128B", small)] {
        let bytes = log.to_vec();
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let s = Store::open(MemoryStorage::from_bytes(bytes.clone()), Options::default()).unwrap();
                black_box(s.stats().keys)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, append, durable_put, recovery);
criterion_main!(benches);
