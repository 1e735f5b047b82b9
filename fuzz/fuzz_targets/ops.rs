//! Drives the model checker (`walnut::testing::model`) with operations decoded from arbitrary
//! bytes: puts, deletes and batches of every durability, four interleaved streamed values,
//! syncs, reads that settle queued commits, checkpoints, compaction, a disk that fills and
//! frees, crashes and reopens, and tables: creates, drops, puts and deletes in tables, queue
//! appends, batches across tables, flushed marks, delete-up-to and queue reads; and interactive
//! transactions: two at once, reads, writes, nesting, commits under ids, aborts, and
//! put-if-version. The oracle panics on any broken promise: an acknowledged commit
//! missing after a crash, a failed one present, a `sync()` that returned `Ok` over a failure,
//! anything partial visible, the LSN going back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walnut::testing::model::{options, Harness, Op, IDS, SLOTS, TABLES, TX_SLOTS};
use walnut::Durability;

/// At most this many operations per input, so each run stays short.
const MAX_OPS: usize = 300;

fn durability(b: u8) -> Durability {
    match b % 4 {
        0 => Durability::Strict,
        1 => Durability::Relaxed,
        _ => Durability::Group,
    }
}

/// Three bytes an operation: its kind, and two arguments.
fn decode(data: &[u8]) -> Vec<Op> {
    data.chunks(3)
        .take(MAX_OPS)
        .map(|c| {
            let (kind, a, b) = (c[0], c.get(1).copied().unwrap_or(0), c.get(2).copied().unwrap_or(0));
            let key = a % 6;
            let slot = usize::from(a) % SLOTS;
            let len = if b & 0x80 == 0 { usize::from(b % 40) } else { 60 + usize::from(b) * 2 };
            let table = b % TABLES;
            let tx = usize::from(b) % TX_SLOTS;
            match kind % 38 {
                30 => Op::TxBegin { slot: tx },
                31 | 32 => Op::TxGet { slot: tx, key },
                33 => Op::TxWrite { slot: tx, key, len: (b & 0x40 == 0).then_some(usize::from(a) % 150) },
                34 => Op::TxNest { slot: tx },
                35 => Op::TxEnd { slot: tx, keep: a & 1 == 1 },
                36 if a % 5 == 4 => Op::TxAbort { slot: tx },
                36 => Op::TxCommit { slot: tx, id: (a & 2 == 2).then_some(a % IDS), durability: durability(a >> 2) },
                37 => Op::PutIf { key, len: usize::from(a) % 150, stale: b & 1 == 1, durability: durability(b >> 1) },
                21 => Op::CreateTable { table },
                22 => Op::DropTable { table },
                23 => Op::PutIn { table, key, len: usize::from(a) % 150, durability: durability(b >> 2) },
                24 => Op::DeleteIn { table, key, durability: durability(b >> 2) },
                25 => Op::Append { table, len: usize::from(a) % 150, durability: durability(b >> 2) },
                26 => Op::BatchIn {
                    ops: vec![
                        (table, None, Some(usize::from(a) % 100)),
                        ((b >> 2) % (TABLES + 1), Some(key), (a & 1 == 0).then_some(usize::from(b) % 70)),
                    ],
                    durability: durability(a >> 4),
                },
                27 => Op::MarkFlushed { table, back: a % 4, durability: durability(a >> 2) },
                28 => Op::DeleteUpTo { table, back: a % 4, durability: durability(a >> 2) },
                29 => Op::ReadQueue { table, from: a % 12 },
                20 => Op::BatchId {
                    ops: vec![(key, Some(len)), (b % 6, (b & 1 == 0).then_some(usize::from(a) % 150))],
                    id: b % IDS,
                    durability: durability(kind),
                },
                0..=4 => Op::Put { key, len, durability: durability(kind / 20) },
                5 | 6 => Op::Delete { key, durability: durability(b) },
                7 => Op::Batch {
                    ops: vec![(key, Some(len)), (b % 6, (b & 1 == 0).then_some(usize::from(a) % 150))],
                    durability: durability(kind / 20),
                },
                8 => Op::Begin { slot, key: b % 6 },
                9 | 10 => Op::Chunk { slot, len: 1 + usize::from(b) % 200 },
                11 => Op::Commit { slot, durability: durability(b) },
                12 if b % 8 == 7 => Op::Clear { durability: durability(a) },
                12 => Op::Abort { slot },
                13 => Op::Sync,
                14 => Op::Read { key },
                15 => Op::Checkpoint,
                16 => {
                    if b & 1 == 0 {
                        Op::CompactStep
                    } else {
                        Op::Compact
                    }
                }
                17 => {
                    if a & 2 == 0 {
                        Op::Quota(a & 1 == 1)
                    } else {
                        Op::FillAfter(b % 8)
                    }
                }
                18 => Op::Crash { seed: u64::from(a) << 8 | u64::from(b) },
                _ => Op::Reopen,
            }
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let mut h = Harness::new(options());
    for op in decode(data) {
        h.run(&op);
    }
    h.run(&Op::Quota(false));
    h.run(&Op::Put { key: 9, len: 100, durability: Durability::Strict });
});
