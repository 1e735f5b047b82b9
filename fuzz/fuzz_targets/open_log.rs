//! Opens a store on arbitrary bytes. Recovery must never panic, loop or allocate without
//! bound; whatever opens must answer reads and accept a write that then survives a reopen.
//! The same bytes read as an export (`.walnut` file): the import check must refuse or accept
//! without panicking, and what it accepts must export to bytes it accepts again; an import of
//! the bytes into an open, empty store (`Import`) must agree with the check, and leave the store
//! empty and usable when it refuses.
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
    let accepted = walnut::export::verify_export(MemoryStorage::from_bytes(data.to_vec())).is_ok();
    let mut target = Store::open(walnut::MemoryVolume::default(), options()).expect("a new store");
    let mut import = walnut::export::Import::begin(&mut target).expect("an empty store takes an import");
    for piece in data.chunks(37) {
        import.write(&mut target, piece).expect("a memory volume takes the bytes");
    }
    match import.finish(&mut target) {
        Ok(_) => assert!(accepted, "the import installed a file the check refuses"),
        Err(_) => {
            assert!(!accepted, "the import refused a file the check accepts");
            assert_eq!(target.stats().keys, 0, "a refused import changes nothing");
            target.put(b"after", b"a refused import", Durability::Strict).expect("the store takes writes");
        }
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
