//! OPFS specifics, in a dedicated worker of a real browser (`wasm-pack test --headless`).
#![cfg(target_arch = "wasm32")]

use walnut::storage::opfs::OpfsStorage;
use walnut::{Durability, Error, Options, Store};
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_dedicated_worker);

async fn fresh(name: &str) -> OpfsStorage {
    let mut s = OpfsStorage::open(name, 2000).await.unwrap();
    walnut::Storage::truncate(&mut s, 0).unwrap();
    s
}

#[wasm_bindgen_test]
async fn values_persist_through_a_new_handle() {
    let name = "opfs-persist";
    let mut store = Store::open(fresh(name).await, Options { chunk_size: 4096, ..Options::default() }).unwrap();
    let big: Vec<u8> = (0..50_000u32).map(|i| (i * 7) as u8).collect();
    store.put(b"small", b"hello", Durability::Strict).unwrap();
    store.put(b"big", &big, Durability::Strict).unwrap();
    let t = store.begin().unwrap();
    store.txn_put(t, b"small", false).unwrap();
    store.txn_chunk(t, b"never committed").unwrap();
    store.sync().unwrap();
    store.storage().close(); // the worker goes away mid-transaction

    let again = OpfsStorage::open(name, 2000).await.unwrap();
    let store = Store::open(again, Options { chunk_size: 4096, ..Options::default() }).unwrap();
    assert_eq!(store.get(b"small").unwrap().unwrap(), b"hello");
    assert_eq!(store.get(b"big").unwrap().unwrap(), big);
    assert_eq!(store.recovery().discarded.len(), 1, "the open transaction is reported");
    store.storage().close();
}

#[wasm_bindgen_test]
async fn a_held_store_is_locked_for_a_second_opener_after_the_bounded_retry() {
    let name = "opfs-locked";
    let holder = fresh(name).await;
    let start = js_sys::Date::now();
    let err = OpfsStorage::open(name, 300).await.expect_err("second open must fail");
    let waited = js_sys::Date::now() - start;
    assert!(matches!(err, Error::Locked { .. }), "{err:?}");
    assert_eq!(err.js_name(), "WalnutLockedError");
    assert!(waited >= 250.0, "retried for the timeout before giving up ({waited} ms)");
    // The holder is unaffected.
    let mut store = Store::open(holder, Options::default()).unwrap();
    store.put(b"k", b"v", Durability::Strict).unwrap();
    assert_eq!(store.get(b"k").unwrap().unwrap(), b"v");
    store.storage().close();
    let reopened = OpfsStorage::open(name, 300).await.expect("released handle can be taken");
    reopened.close();
}

#[wasm_bindgen_test]
async fn bad_store_names_are_refused_by_name() {
    for bad in ["", "a/b", "..", "x\u{0}y"] {
        match OpfsStorage::open(bad, 10).await {
            Err(Error::InvalidArgument { param: "name", .. }) => {}
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}
