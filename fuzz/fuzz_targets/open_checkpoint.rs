//! Opens a store whose newest checkpoint holds damaged bytes under a header that vouches for
//! them (right length, right CRC), so that only the body's structure checks stand between the
//! bytes and the index, which is that body searched in place. The input edits a real body
//! (xor at positions, a cut, other entry and segment counts) or replaces it. Nothing may
//! panic, loop or allocate without bound; whatever opens must answer every read it lists.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use walnut::format::{CheckpointHeader, CHECKPOINT_HEADER_LEN, CHECKPOINT_MAGIC};
use walnut::storage::MemoryVolume;
use walnut::{Durability, KeyRange, MemoryStorage, Options, Store};

fn options() -> Options {
    Options { chunk_size: 256, segment_size: 4096, checkpoint_bytes: 0, compaction_ratio: 1.0, ..Options::default() }
}

/// A store over several segments, checkpointed: its files, the checkpoint's file id, header
/// and body.
fn base() -> &'static (Vec<(u32, Vec<u8>)>, u32, CheckpointHeader, Vec<u8>) {
    static BASE: OnceLock<(Vec<(u32, Vec<u8>)>, u32, CheckpointHeader, Vec<u8>)> = OnceLock::new();
    BASE.get_or_init(|| {
        let mut s = Store::open(MemoryVolume::default(), options()).expect("a new store");
        for i in 0..24u32 {
            let value: Vec<u8> = (0..(i * 97) % 900).map(|b| (b ^ i) as u8).collect();
            s.put_flagged(format!("key-{:02}", i * 7 % 24).as_bytes(), i % 2 == 0, &value, Durability::Strict)
                .expect("put");
        }
        s.delete(b"key-03", Durability::Strict).expect("delete");
        s.checkpoint().expect("checkpoint");
        let files: Vec<(u32, Vec<u8>)> = s.volume().files().iter().map(|(&id, f)| (id, f.to_vec())).collect();
        let (id, bytes) =
            files.iter().find(|(_, b)| b.starts_with(&CHECKPOINT_MAGIC)).expect("a checkpoint file").clone();
        let head: &[u8; CHECKPOINT_HEADER_LEN] = bytes[..CHECKPOINT_HEADER_LEN].try_into().expect("a whole header");
        let header = CheckpointHeader::decode(head).expect("a valid header");
        (files, id, header, bytes[CHECKPOINT_HEADER_LEN..].to_vec())
    })
}

fuzz_target!(|data: &[u8]| {
    let (files, ck_id, header, body) = base();
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut h = *header;
    let body = if mode & 1 == 1 {
        rest.to_vec()
    } else {
        // Edits of the real body: [entries delta, segments delta], then (pos u16, xor u8)...,
        // and with mode bit 1 a cut at the last edit's position.
        let mut b = body.clone();
        let (deltas, edits) = rest.split_at(rest.len().min(2));
        if let [de, ds] = *deltas {
            h.entries = h.entries.saturating_add_signed(i64::from(de as i8)).min(1 << 20);
            h.segments = h.segments.saturating_add_signed(i32::from(ds as i8)) % 64;
        }
        let mut last = 0;
        for e in edits.chunks_exact(3) {
            let pos = usize::from(u16::from_le_bytes([e[0], e[1]])) % b.len().max(1);
            if let Some(byte) = b.get_mut(pos) {
                *byte ^= e[2];
            }
            last = pos;
        }
        if mode & 2 == 2 {
            b.truncate(last);
        }
        b
    };
    h.body_len = body.len() as u64;
    h.body_crc = crc32fast::hash(&body);
    let mut ck = h.encode().to_vec();
    ck.extend_from_slice(&body);

    let mut volume = MemoryVolume::default();
    volume.set_files(
        files
            .iter()
            .map(|(id, bytes)| (*id, MemoryStorage::from_bytes(if id == ck_id { ck.clone() } else { bytes.clone() })))
            .collect(),
    );
    let Ok(mut store) = Store::open(volume, options()) else { return };
    let keys = store.keys(&KeyRange::default()).expect("keys on an open store");
    for k in &keys {
        // A structurally valid but wrong entry may point at the wrong record: an error, then.
        let _ = store.get(&k.key);
        let _ = store.has(&k.key);
    }
    let _ = store.keys(&KeyRange { reverse: true, limit: Some(5), ..KeyRange::default() });
    let _ = store.put(b"fuzz-probe", b"after open", Durability::Strict);
    let _ = store.compact();
    let _ = store.checkpoint();
    let volume = store.into_volume();
    let _ = Store::open(volume, options());
});
