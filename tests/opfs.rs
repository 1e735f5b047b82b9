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
    store.volume().close(); // the worker goes away mid-transaction

    let again = OpfsStorage::open(name, 2000).await.unwrap();
    let store = Store::open(again, Options { chunk_size: 4096, ..Options::default() }).unwrap();
    assert_eq!(store.get(b"small").unwrap().unwrap(), b"hello");
    assert_eq!(store.get(b"big").unwrap().unwrap(), big);
    assert_eq!(store.recovery().discarded.len(), 1, "the open transaction is reported");
    store.volume().close();
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
    store.volume().close();
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

/// Installs (once) a shim over `FileSystemSyncAccessHandle.prototype.write` that fails writes
/// reaching past `self.__walnutQuota.limit` the way browsers do at quota: `throw` a
/// QuotaExceededError DOMException, `short` (write what fits, report that: Firefox), or
/// `absurd` (write nothing, report 0xFFFFFFF8: Chrome).
fn quota_shim(mode: &str, limit: f64) {
    let install = js_sys::Function::new_with_args(
        "mode, limit",
        r#"
        const proto = FileSystemSyncAccessHandle.prototype;
        if (!proto.__walnutOriginalWrite) {
          const original = proto.write;
          proto.__walnutOriginalWrite = original;
          proto.write = function (buffer, options) {
            const q = self.__walnutQuota;
            const at = (options && options.at) || 0;
            if (q && at + buffer.byteLength > q.limit) {
              if (q.mode === 'throw') throw new DOMException('quota exceeded (shim)', 'QuotaExceededError');
              if (q.mode === 'short') {
                const fits = Math.max(0, q.limit - at);
                return original.call(this, buffer.subarray(0, fits), options);
              }
              if (q.mode === 'absurd') return 0xFFFFFFF8;
            }
            return original.call(this, buffer, options);
          };
        }
        self.__walnutQuota = mode === 'off' ? null : { mode, limit };
        "#,
    );
    install.call2(&wasm_bindgen::JsValue::NULL, &mode.into(), &limit.into()).unwrap();
}

#[wasm_bindgen_test]
async fn at_quota_puts_fail_by_name_data_stays_readable_and_writes_resume() {
    for mode in ["throw", "short", "absurd"] {
        let name = format!("opfs-quota-{mode}");
        let storage = fresh(&name).await;
        let mut store = Store::open(storage, Options { chunk_size: 16 << 10, ..Options::default() }).unwrap();
        let old: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        store.put(b"old", &old, Durability::Strict).unwrap();
        store.put(b"spare", b"x", Durability::Strict).unwrap();
        let used = store.stats().log_bytes as f64;
        quota_shim(mode, used + 2_000.0);

        let big = vec![7u8; 100_000];
        let err = store.put(b"new", &big, Durability::Strict).unwrap_err();
        assert!(matches!(err, Error::QuotaExceeded { .. }), "{mode}: {err:?}");
        assert_eq!(err.js_name(), "WalnutQuotaExceededError");
        assert_eq!(store.get(b"old").unwrap().unwrap(), old, "{mode}: earlier data stays readable");
        assert_eq!(store.get(b"new").unwrap(), None, "{mode}: nothing partial");

        // Still under the limit: a delete (a small record) goes through, and so does a small put.
        assert!(store.delete(b"spare", Durability::Strict).unwrap(), "{mode}");
        store.put(b"small", b"fits", Durability::Strict).unwrap();
        quota_shim("off", 0.0);
        store.put(b"new", &big, Durability::Strict).unwrap();
        let storage_handle = store.volume().handle().clone();
        drop(store);

        let store = Store::open(OpfsStorage::from_handle(storage_handle), Options::default()).unwrap();
        assert_eq!(store.get(b"old").unwrap().unwrap(), old, "{mode}");
        assert_eq!(store.get(b"new").unwrap().unwrap(), big, "{mode}");
        assert_eq!(store.get(b"small").unwrap().unwrap(), b"fits", "{mode}");
        assert_eq!(store.get(b"spare").unwrap(), None, "{mode}");
        store.volume().close();
    }
}
