//! Opens a store on arbitrary bytes. Recovery must never panic, loop or allocate without
//! bound; whatever opens must answer reads and accept a write that then survives a reopen.
//! The same bytes read as an export (`.walnut` file): the import check must refuse or accept
//! without panicking, and what it accepts must export to bytes it accepts again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walnut::{Durability, KeyRange, MemoryStorage, Options, Store};

fn options() -> Options {
    Options { chunk_size: 64, direct_write_threshold: 120, batch_bytes: 300, ..Options::default() }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(mut imported) = walnut::export::verify_export(MemoryStorage::from_bytes(data.to_vec())) {
        let mut e = walnut::export::Export::begin(&mut imported).expect("export of a checked store");
        let mut bytes = Vec::new();
        while let Some(piece) = e.next(&imported).expect("values of a checked store read") {
            bytes.extend_from_slice(&piece);
        }
        e.finish(&mut imported);
        walnut::export::verify_export(MemoryStorage::from_bytes(bytes)).expect("an export is accepted");
    }
    let mem = MemoryStorage::from_bytes(data.to_vec());
    let Ok(mut store) = Store::open(mem.clone(), options()) else { return };
    let keys = store.keys(&KeyRange::default()).expect("keys on an open store");
    for k in &keys {
        // A value may fail its CRC on read only if the bytes changed underneath; here they
        // did not, so every committed value must read back whole.
        let v = store.get(&k.key).expect("committed value reads back").expect("listed key present");
        assert_eq!(v.len() as u64, k.size);
    }
    store.put(b"fuzz-probe", b"written after recovery", Durability::Strict).expect("store takes writes");
    drop(store);
    let again = Store::open(mem, options()).expect("reopen after a clean write");
    assert_eq!(again.keys(&KeyRange::default()).expect("keys").len(), keys.len() + usize::from(!keys.iter().any(|k| k.key == b"fuzz-probe")));
    assert_eq!(again.recovery().bytes_truncated, 0, "recovery left a clean log");
});
