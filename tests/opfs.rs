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

fn lifecycle_options() -> Options {
    Options {
        chunk_size: 4096,
        segment_size: 16 << 10,
        checkpoint_bytes: 32 << 10,
        compaction_ratio: 0.5,
        ..Options::default()
    }
}

fn contents<V: walnut::Volume>(s: &Store<V>) -> Vec<(Vec<u8>, Vec<u8>)> {
    s.keys(&walnut::KeyRange::default())
        .unwrap()
        .into_iter()
        .map(|k| (k.key.clone(), s.get(&k.key).unwrap().unwrap()))
        .collect()
}

#[wasm_bindgen_test]
async fn the_opfs_pool_rotates_checkpoints_compacts_and_reopens_from_a_checkpoint() {
    use walnut::storage::opfs::OpfsVolume;
    let name = format!("volume-{}", js_sys::Date::now() as u64);
    let mut store = Store::open(OpfsVolume::open(&name, 2000).await.unwrap(), lifecycle_options()).unwrap();
    let mut model = std::collections::BTreeMap::new();
    for round in 0..40u32 {
        for k in 0..8u32 {
            let value: Vec<u8> = (0..1500 + k * 100).map(|i| (i ^ round ^ k) as u8).collect();
            store.put(format!("k{k}").as_bytes(), &value, Durability::Strict).unwrap();
            model.insert(format!("k{k}").into_bytes(), value);
        }
        // What the worker's background refill does between requests.
        store.volume().refill().await.unwrap();
    }
    let stats = store.stats();
    assert!(stats.compactions > 0 && stats.checkpoints > 0, "{stats:?}");
    assert!(stats.log_bytes < 6 * stats.live_bytes + (64 << 10), "the log stays bounded: {stats:?}");
    let expected: Vec<(Vec<u8>, Vec<u8>)> = model.into_iter().collect();
    assert_eq!(contents(&store), expected);
    store.close().unwrap();
    drop(store); // releases every handle

    let store = Store::open(OpfsVolume::open(&name, 2000).await.unwrap(), lifecycle_options()).unwrap();
    assert!(store.recovery().checkpoint.is_some(), "{:?}", store.recovery());
    assert_eq!(store.recovery().records, 0, "close checkpointed everything");
    assert_eq!(contents(&store), expected);
}

#[wasm_bindgen_test]
async fn a_single_file_store_is_adopted_by_the_pool_volume() {
    use walnut::storage::opfs::OpfsVolume;
    let name = format!("legacy-{}", js_sys::Date::now() as u64);
    let mut old = Store::open(OpfsStorage::open(&name, 2000).await.unwrap(), Options::default()).unwrap();
    old.put(b"kept", b"from the single-file layout", Durability::Strict).unwrap();
    old.close().unwrap();
    old.volume().close();

    let mut store = Store::open(OpfsVolume::open(&name, 2000).await.unwrap(), lifecycle_options()).unwrap();
    assert_eq!(store.get(b"kept").unwrap().unwrap(), b"from the single-file layout");
    for i in 0..30u32 {
        store.put(format!("n{i}").as_bytes(), &[7u8; 2000], Durability::Strict).unwrap();
        store.volume().refill().await.unwrap();
    }
    assert!(store.stats().segments > 1);
    store.close().unwrap();
    drop(store);
    let store = Store::open(OpfsVolume::open(&name, 2000).await.unwrap(), lifecycle_options()).unwrap();
    assert_eq!(store.get(b"kept").unwrap().unwrap(), b"from the single-file layout");
    assert_eq!(store.get(b"n29").unwrap().unwrap(), vec![7u8; 2000]);
}

#[wasm_bindgen_test]
async fn a_pool_run_dry_never_fails_a_write_or_the_close() {
    use walnut::storage::opfs::OpfsVolume;
    let name = format!("dry-{}", js_sys::Date::now() as u64);
    let opts = Options { segment_size: 16 << 10, chunk_size: 4096, checkpoint_bytes: 16 << 10, ..Options::default() };
    let mut store = Store::open(OpfsVolume::open(&name, 2000).await.unwrap(), opts.clone()).unwrap();
    // Many rotations with no chance for the background refill: the pool runs dry, the writer
    // stays in its tail segment, checkpoints wait.
    for i in 0..40u32 {
        store.put(format!("k{i}").as_bytes(), &[i as u8; 3000], Durability::Strict).unwrap();
    }
    store.close().unwrap();
    drop(store);
    let store = Store::open(OpfsVolume::open(&name, 2000).await.unwrap(), opts).unwrap();
    for i in 0..40u32 {
        assert_eq!(store.get(format!("k{i}").as_bytes()).unwrap().unwrap(), vec![i as u8; 3000]);
    }
}

/// Resolves after `ms` milliseconds (the worker's setTimeout).
async fn sleep(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        let global = js_sys::global();
        let set_timeout = js_sys::Reflect::get(&global, &"setTimeout".into()).unwrap();
        js_sys::Function::from(set_timeout).call2(&global, &resolve, &ms.into()).unwrap();
    });
    wasm_bindgen_futures::JsFuture::from(promise).await.unwrap();
}

#[wasm_bindgen_test]
async fn an_opener_waiting_for_the_lock_sees_the_files_the_holder_made_meanwhile() {
    use std::cell::RefCell;
    use std::rc::Rc;
    use walnut::storage::opfs::OpfsVolume;
    let name = format!("waiter-{}", js_sys::Date::now() as u64);
    let mut holder = Store::open(OpfsVolume::open(&name, 2000).await.unwrap(), lifecycle_options()).unwrap();
    holder.put(b"first", b"before the second opener came", Durability::Strict).unwrap();

    // A second opener starts and waits for the lock.
    let slot: Rc<RefCell<Option<walnut::Result<OpfsVolume>>>> = Rc::default();
    let (waiter_slot, waiter_name) = (slot.clone(), name.clone());
    wasm_bindgen_futures::spawn_local(async move {
        let v = OpfsVolume::open(&waiter_name, 10_000).await;
        *waiter_slot.borrow_mut() = Some(v);
    });
    sleep(100).await;
    assert!(slot.borrow().is_none(), "the second opener waits while the store is held");

    // Meanwhile the holder rotates through segments in files its pool creates now.
    let mut model = std::collections::BTreeMap::new();
    for i in 0..40u32 {
        let value = vec![i as u8; 3000];
        holder.put(format!("k{i}").as_bytes(), &value, Durability::Strict).unwrap();
        model.insert(format!("k{i}"), value);
        holder.volume().refill().await.unwrap();
    }
    assert!(holder.stats().segments > 3, "{:?}", holder.stats());
    holder.close().unwrap();
    drop(holder); // releases the lock

    let volume = loop {
        if let Some(v) = slot.borrow_mut().take() {
            break v.expect("the waiter opens once the holder is gone");
        }
        sleep(20).await;
    };
    let store = Store::open(volume, lifecycle_options()).unwrap();
    assert_eq!(store.get(b"first").unwrap().unwrap(), b"before the second opener came");
    for (k, v) in model {
        assert_eq!(store.get(k.as_bytes()).unwrap().as_ref(), Some(&v), "{k}");
    }
}

/// Makes the next `getSize()` of a sync access handle whose file is not empty throw (once).
fn fail_next_size_of_a_written_file() {
    js_sys::Function::new_no_args(
        r#"
        const proto = FileSystemSyncAccessHandle.prototype;
        const original = proto.getSize;
        proto.getSize = function () {
          const size = original.call(this);
          if (size > 0) {
            proto.getSize = original;
            throw new DOMException('injected getSize failure', 'InvalidStateError');
          }
          return size;
        };
        "#,
    )
    .call0(&wasm_bindgen::JsValue::NULL)
    .unwrap();
}

#[wasm_bindgen_test]
async fn an_open_that_fails_part_way_releases_every_handle_and_so_the_lock() {
    use walnut::storage::opfs::OpfsVolume;
    let name = format!("open-fails-{}", js_sys::Date::now() as u64);
    let mut store = Store::open(OpfsVolume::open(&name, 2000).await.unwrap(), lifecycle_options()).unwrap();
    store.put(b"k", b"v", Durability::Strict).unwrap();
    store.close().unwrap();
    drop(store);
    fail_next_size_of_a_written_file();
    match OpfsVolume::open(&name, 2000).await {
        Err(Error::Io { op: "size", .. }) => {}
        other => panic!("{:?}", other.map(|_| "opened")),
    }
    // Had any handle stayed open, this would wait out the lock and fail with Locked.
    let store = Store::open(OpfsVolume::open(&name, 300).await.unwrap(), lifecycle_options()).unwrap();
    assert_eq!(store.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
}

/// Transactions on OPFS: a nested one rolled back around a streamed value, an id remembered,
/// a conflict between two interleaved ones; reopened without a closing checkpoint (the handle
/// dropped as a closed tab drops it), recovery applies exactly the committed part.
#[wasm_bindgen_test]
async fn nested_transactions_and_ids_survive_a_reopen_on_opfs() {
    use walnut::storage::opfs::OpfsVolume;
    let name = format!("tx-{}", js_sys::Date::now() as u64);
    let mut s = Store::open(OpfsVolume::open(&name, 2000).await.unwrap(), lifecycle_options()).unwrap();
    s.put(b"n", b"0", Durability::Strict).unwrap();
    let t = s.tx_begin().unwrap();
    s.tx_put(t, 0, b"n", false, b"1").unwrap();
    s.tx_nest(t).unwrap();
    s.txn_put_in(t, 0, b"streamed", false).unwrap();
    for i in 0..8u8 {
        s.txn_chunk(t, &[i; 3000]).unwrap();
    }
    s.tx_rollback(t).unwrap();
    s.tx_nest(t).unwrap();
    s.tx_put(t, 0, b"kept", false, b"inner").unwrap();
    s.tx_release(t).unwrap();
    s.tx_commit(t, Some(b"opfs-1"), Durability::Strict).unwrap();
    let (a, b) = (s.tx_begin().unwrap(), s.tx_begin().unwrap());
    s.tx_get(a, 0, b"n").unwrap();
    s.tx_get(b, 0, b"n").unwrap();
    s.tx_put(a, 0, b"n", false, b"a").unwrap();
    s.tx_put(b, 0, b"n", false, b"b").unwrap();
    s.tx_commit(a, None, Durability::Strict).unwrap();
    assert!(matches!(s.tx_commit(b, None, Durability::Strict), Err(walnut::Error::Conflict { .. })));
    s.volume().close(); // no closing checkpoint: recovery scans the log
    drop(s);
    let s = Store::open(OpfsVolume::open(&name, 2000).await.unwrap(), lifecycle_options()).unwrap();
    assert_eq!(s.get(b"n").unwrap().as_deref(), Some(&b"a"[..]));
    assert_eq!(s.get(b"kept").unwrap().as_deref(), Some(&b"inner"[..]));
    assert_eq!(s.get(b"streamed").unwrap(), None, "the rolled-back layer never appears");
    assert!(s.id_status(b"opfs-1").is_some());
}

#[wasm_bindgen_test]
async fn an_import_into_an_emptied_opfs_store_replaces_its_log_and_reopens() {
    use walnut::export::{Export, Import};
    use walnut::storage::opfs::OpfsVolume;
    // The export: made on a memory volume.
    let mut src = Store::open(walnut::MemoryVolume::default(), lifecycle_options()).unwrap();
    let big: Vec<u8> = (0..40_000u32).map(|i| (i * 11) as u8).collect();
    src.put(b"big", &big, Durability::Strict).unwrap();
    let q = src.create_table("q").unwrap();
    src.append(q, b"entry", Durability::Strict).unwrap();
    let mut e = Export::begin(&mut src).unwrap();
    let mut file = Vec::new();
    while let Some(piece) = e.next(&src).unwrap() {
        file.extend_from_slice(&piece);
    }
    e.finish(&mut src);

    let name = format!("import-{}", js_sys::Date::now() as u64);
    let mut s = Store::open(OpfsVolume::open(&name, 2000).await.unwrap(), lifecycle_options()).unwrap();
    for k in 0..20u8 {
        s.put(&[b'o', k], &[k; 3000], Durability::Strict).unwrap();
    }
    for k in 0..20u8 {
        s.delete(&[b'o', k], Durability::Strict).unwrap();
    }
    s.volume().refill().await.unwrap();
    let mut i = Import::begin(&mut s).unwrap();
    for piece in file.chunks(5000) {
        i.write(&mut s, piece).unwrap();
    }
    s.volume().refill().await.unwrap();
    let done = i.finish(&mut s).unwrap();
    assert_eq!(done.bytes, file.len() as u64);
    assert_eq!(s.get(b"big").unwrap(), Some(big.clone()));
    assert_eq!(s.get(b"o\x03").unwrap(), None);
    s.put(b"after", b"import", Durability::Strict).unwrap();
    s.volume().close();
    drop(s);
    let s = Store::open(OpfsVolume::open(&name, 2000).await.unwrap(), lifecycle_options()).unwrap();
    assert_eq!(s.get(b"big").unwrap(), Some(big));
    assert_eq!(s.get(b"after").unwrap().as_deref(), Some(&b"import"[..]));
    assert_eq!(s.read(s.table("q").unwrap().id, 0, None).unwrap().len(), 1);
}

#[wasm_bindgen_test]
async fn refills_asked_together_open_only_the_files_the_pool_lacks() {
    use walnut::storage::opfs::{OpfsVolume, POOL_MIN_FREE};
    use walnut::Volume;
    let name = format!("burst-{}", js_sys::Date::now() as u64);
    let mut volume = OpfsVolume::open(&name, 2000).await.unwrap();
    assert_eq!(volume.free_files(), POOL_MIN_FREE);
    volume.create().unwrap();
    volume.create().unwrap();
    // What the store does after each write of a burst (a putMany of thousands): it asks for a
    // refill while the pool is short, before any refill it asked for has run.
    let mut asked = 0;
    for _ in 0..50 {
        if volume.needs_refill() {
            asked += 1;
            let refill = volume.refill();
            wasm_bindgen_futures::spawn_local(async move {
                refill.await.unwrap();
            });
        }
    }
    assert_eq!(asked, 1, "one refill for the whole burst");
    // An explicit refill beside it (the worker's before close()) shares the work, and resolves
    // once the pool is full.
    volume.refill().await.unwrap();
    assert_eq!(volume.free_files(), POOL_MIN_FREE);
    sleep(100).await;
    assert_eq!(volume.free_files(), POOL_MIN_FREE, "no refill opened more than the pool lacked");
    assert!(!volume.needs_refill());
    volume.close();
    drop(volume);
    // The store's directory holds the two files taken and the pool's, nothing else: reopened,
    // every empty file is a free one.
    let again = OpfsVolume::open(&name, 2000).await.unwrap();
    assert_eq!(again.free_files(), 2 + POOL_MIN_FREE);
}
