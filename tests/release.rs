//! Releases that fail, and ids at their limit: the store keeps opening and keeps every
//! acknowledged write (each case found by a review of the import's switch, 2026-11-28, and
//! failing before its fix).
#![cfg(not(target_arch = "wasm32"))]

use std::cell::Cell;
use std::collections::BTreeMap;

use walnut::storage::{FileId, MapVolume, Volume};
use walnut::{Durability, MemoryStorage, Options, Storage, Store};

const S: Durability = Durability::Strict;

thread_local! {
    /// The next flush of a header-only file (a new segment's) fails with a full disk.
    static FAIL_HEADER_FLUSH: Cell<bool> = const { Cell::new(false) };
}

/// A memory file whose flush can fail (the bytes stay written, as after a failed fsync).
#[derive(Debug, Clone)]
struct FlakyFile(MemoryStorage);

impl Storage for FlakyFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> walnut::Result<usize> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> walnut::Result<usize> {
        self.0.write_at(buf, offset)
    }
    fn size(&self) -> walnut::Result<u64> {
        self.0.size()
    }
    fn truncate(&mut self, len: u64) -> walnut::Result<()> {
        self.0.truncate(len)
    }
    fn flush(&mut self) -> walnut::Result<()> {
        if self.0.size()? == 32 && FAIL_HEADER_FLUSH.with(|f| f.replace(false)) {
            return Err(walnut::Error::quota("flush", "injected: disk full"));
        }
        self.0.flush()
    }
}

/// Releases fail while `failing_releases` > 0 and leave the file listed, as the volume
/// contract says (src/storage/volume.rs, `Volume::release`).
#[derive(Debug)]
struct Flaky {
    inner: MapVolume<FlakyFile>,
    failing_releases: Cell<u32>,
    /// Set: the next release first records the files as they are (a power cut just before it).
    snapshot_next_release: Cell<bool>,
    snapshot: std::cell::RefCell<Option<BTreeMap<FileId, Vec<u8>>>>,
}

impl Flaky {
    fn new() -> Self {
        Flaky {
            inner: MapVolume::with(|| FlakyFile(MemoryStorage::new())),
            failing_releases: Cell::new(0),
            snapshot_next_release: Cell::new(false),
            snapshot: std::cell::RefCell::new(None),
        }
    }
}

impl Volume for Flaky {
    type File = FlakyFile;
    fn ids(&self) -> Vec<FileId> {
        self.inner.ids()
    }
    fn file(&self, id: FileId) -> walnut::Result<&FlakyFile> {
        self.inner.file(id)
    }
    fn file_mut(&mut self, id: FileId) -> walnut::Result<&mut FlakyFile> {
        self.inner.file_mut(id)
    }
    fn create(&mut self) -> walnut::Result<FileId> {
        self.inner.create()
    }
    fn release(&mut self, id: FileId) -> walnut::Result<()> {
        if self.snapshot_next_release.replace(false) {
            *self.snapshot.borrow_mut() = Some(image(&self.inner));
        }
        if self.failing_releases.get() > 0 && self.inner.file(id).is_ok() {
            self.failing_releases.set(self.failing_releases.get() - 1);
            return Err(walnut::Error::io("release", "EIO"));
        }
        self.inner.release(id)
    }
}

fn image(v: &MapVolume<FlakyFile>) -> BTreeMap<FileId, Vec<u8>> {
    v.files().iter().map(|(&id, f)| (id, f.0.to_vec())).collect()
}

fn volume_of(image: BTreeMap<FileId, Vec<u8>>) -> walnut::MemoryVolume {
    let mut v = walnut::MemoryVolume::default();
    v.set_files(image.into_iter().map(|(id, b)| (id, MemoryStorage::from_bytes(b))).collect());
    v
}

fn small() -> Options {
    Options { chunk_size: 256, segment_size: 4096, checkpoint_bytes: 0, compaction_ratio: 1.0, ..Options::default() }
}

/// A rotation whose new segment's header flush fails for a full disk gives the file back. If
/// that release fails too, the file stays listed with the header of segment N+1 in it; the
/// quota failure is rolled back and the store goes on. Its next rotation wrote segment N+1
/// again, in another file, and the store no longer opened ("segment 1 appears twice"). The
/// writer now reuses that file for the next rotation, and a census releases a header-only file
/// whose segment another file claims.
#[test]
fn a_rotation_whose_flush_and_release_fail_leaves_a_store_that_opens() {
    let mut s = Store::open(Flaky::new(), small()).unwrap();
    let value = vec![7u8; 1500];
    // Fill segment 0 up to the edge of a rotation.
    s.put(b"a", &value, S).unwrap();
    s.put(b"b", &value, S).unwrap();
    let files = s.volume().ids().len();
    FAIL_HEADER_FLUSH.with(|f| f.set(true));
    s.volume().failing_releases.set(1);
    let e = s.put(b"c", &value, S).unwrap_err();
    println!("the put that needed a rotation: {e}");
    assert!(matches!(e, walnut::Error::QuotaExceeded { .. }), "{e}");
    assert_eq!(s.volume().ids().len(), files + 1, "the new segment's file stayed listed");
    // The disk has room again: the store goes on (the quota failure was rolled back).
    for i in 0..6u8 {
        s.put(&[b'k', i], &value, S).unwrap();
    }
    assert_eq!(s.get(b"k\x05").unwrap().as_deref(), Some(&value[..]));
    let want: Vec<_> = (0..6u8).map(|i| s.get(&[b'k', i]).unwrap()).collect();
    let volume = s.into_volume();
    let files = image(&volume.inner);
    let back = Store::open(volume, small());
    assert!(back.is_ok(), "the store does not open: {:?}", back.err());
    let back = back.unwrap();
    let got: Vec<_> = (0..6u8).map(|i| back.get(&[b'k', i]).unwrap()).collect();
    assert!(got == want, "acknowledged puts lost");
    // The census on its own: two files claiming one segment, one of them header-only (the
    // leftover of a failed rotation), as a crash could leave them.
    let (&last, _) = files
        .iter()
        .max_by_key(|(_, f)| {
            let head: Option<[u8; 32]> = f.get(..32).and_then(|h| h.try_into().ok());
            head.and_then(|h| walnut::format::FileHeader::decode(&h).ok()).map_or(0, |h| h.segment)
        })
        .unwrap();
    let mut stale = files[&last][..32].to_vec();
    let mut files = files;
    let spare = files.keys().max().unwrap() + 1;
    stale.truncate(32);
    files.insert(spare, stale);
    let back = Store::open(volume_of(files), small()).expect("a header-only duplicate is released");
    assert_eq!(back.recovery().segments_released, 1);
    let got: Vec<_> = (0..6u8).map(|i| back.get(&[b'k', i]).unwrap()).collect();
    assert!(got == want, "acknowledged puts lost");
}

/// The writer keeps a failed rotation's file (header of segment N+1, base LSN L) and goes on
/// appending to segment N. A power cut before its next rotation or checkpoint leaves that file
/// the only claimant of N+1, its base LSN behind the log's end: AbsoluteConsistency refused
/// the store, and TolerateTailCorruption reported a 32-byte cut, though every write was
/// flushed and nothing was torn (found by review). Such a file is released in every mode now,
/// reported as released, not as a cut.
#[test]
fn a_failed_rotations_file_left_by_a_power_cut_is_released_in_every_mode() {
    let mut s = Store::open(Flaky::new(), small()).unwrap();
    let value = vec![7u8; 1500];
    s.put(b"a", &value, S).unwrap();
    s.put(b"b", &value, S).unwrap();
    FAIL_HEADER_FLUSH.with(|f| f.set(true));
    s.volume().failing_releases.set(1);
    s.put(b"c", &value, S).unwrap_err();
    s.put(b"d", b"small", S).unwrap(); // acknowledged, in segment N, after the spare's base LSN
    let image = image(&s.volume().inner); // a power cut now (every write above was flushed)
    for mode in [walnut::RecoveryMode::AbsoluteConsistency, walnut::RecoveryMode::TolerateTailCorruption] {
        let back = Store::open(volume_of(image.clone()), Options { recovery_mode: mode, ..small() });
        let back = back.unwrap_or_else(|e| panic!("{mode:?}: the store does not open: {e}"));
        let r = back.recovery();
        assert_eq!((r.bytes_truncated, r.segments_released), (0, 1), "{mode:?}: {r:?}");
        assert_eq!(back.get(b"d").unwrap().as_deref(), Some(&b"small"[..]), "{mode:?}");
        assert_eq!(back.get(b"b").unwrap().as_deref(), Some(&value[..]), "{mode:?}");
    }
}

fn import_into<V: Volume>(s: &mut Store<V>, bytes: &[u8]) -> walnut::Result<walnut::export::Imported> {
    let mut i = walnut::export::Import::begin(s)?;
    i.write(s, bytes)?;
    i.finish(s)
}

fn export_bytes<V: Volume>(s: &mut Store<V>) -> Vec<u8> {
    let mut e = walnut::export::Export::begin(s).unwrap();
    let mut out = Vec::new();
    while let Some(piece) = e.next(s).unwrap() {
        out.extend_from_slice(&piece);
    }
    e.finish(s);
    out
}

/// An import whose seal (install_import step 1, `rotate_if_used`) failed the same way: the
/// new segment's header flush failed for a full disk and its release failed, so that file,
/// holding the header of segment T+1, stayed listed, forgotten by the log. The retry's step 1
/// sealed the log again, into another file with the header of segment T+1. A power cut
/// before step 2 released the forgotten file, or step 2's release of it failing, left a store
/// that never opened again ("segment T+1 appears twice"), whatever the recovery mode. And the
/// retry alone failed with the quota poison (install_import never cleared it).
#[test]
fn an_import_retried_after_its_seal_failed_leaves_a_store_that_opens() {
    // The retry after a checkpoint (which cleared the quota poison), as the review ran it,
    // then the retry alone.
    import_retried_after_its_seal_failed(true);
    import_retried_after_its_seal_failed(false);
}

fn import_retried_after_its_seal_failed(checkpoint_first: bool) {
    let mut src = Store::open(walnut::MemoryVolume::default(), small()).unwrap();
    src.put(b"imported", b"v", S).unwrap();
    let bytes = export_bytes(&mut src);

    let mut s = Store::open(Flaky::new(), small()).unwrap();
    s.put(b"old", b"x", S).unwrap();
    s.delete(b"old", S).unwrap(); // emptied: the tail holds records, so step 1 seals it
    let mut i = walnut::export::Import::begin(&mut s).unwrap();
    i.write(&mut s, &bytes).unwrap();
    FAIL_HEADER_FLUSH.with(|f| f.set(true));
    s.volume().failing_releases.set(1);
    let e = i.finish(&mut s).unwrap_err();
    println!("first import: {e}");
    assert_eq!(s.volume().failing_releases.get(), 0, "the rotation's release failed");
    // The disk has room again.
    if !checkpoint_first {
        let r = import_into(&mut s, &bytes);
        assert!(r.is_ok(), "the retry alone: {r:?}");
        let back = Store::open(volume_of(image(&s.into_volume().inner)), small()).unwrap();
        assert_eq!(back.get(b"imported").unwrap().as_deref(), Some(&b"v"[..]));
        return;
    }
    s.checkpoint().unwrap();
    // The retry: a power cut just before its first release of step 2, or that release failing.
    s.volume().snapshot_next_release.set(true);
    s.volume().failing_releases.set(1);
    let r = import_into(&mut s, &bytes);
    println!("retried import: {r:?}");
    let cut = s.volume().snapshot.borrow_mut().take().expect("a release in the retry");
    let after_cut = Store::open(volume_of(cut), small());
    println!("a power cut before step 2's first release, reopened: {:?}", after_cut.as_ref().err());
    let reopened = Store::open(volume_of(image(&s.into_volume().inner)), small());
    println!("after step 2's release failed, reopened: {:?}", reopened.as_ref().err());
    assert!(after_cut.is_ok() && reopened.is_ok(), "the store does not open");
    // Then the import goes through, and the store reopens with it.
    let mut s = reopened.unwrap();
    if s.get(b"imported").unwrap().is_none() {
        import_into(&mut s, &bytes).unwrap();
    }
    assert_eq!(s.get(b"imported").unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(s.get(b"old").unwrap(), None);
}

/// A checkpoint's release of a dead prefix segment fails: the volume keeps the file (listed,
/// its records intact). The log forgot it, and the next checkpoint released the segments after
/// it, the delete of `x` with them: a full scan (both checkpoints unreadable) replayed the
/// kept file, and the deleted key came back. A segment whose release failed stays the log's
/// now, and goes first at the next checkpoint.
#[test]
fn a_failed_release_of_a_prefix_segment_never_lets_a_full_scan_resurrect_a_deleted_key() {
    use walnut::testing::CrashVolume;
    let mut s = Store::open(CrashVolume::default(), small()).unwrap();
    let v = vec![1u8; 1500];
    s.put(b"x", &v, S).unwrap(); // segment 0
    s.put(b"y", &v, S).unwrap();
    s.put(b"z", &v, S).unwrap(); // segment 1
    s.delete(b"x", S).unwrap();
    s.put(b"y", &v, S).unwrap();
    for i in 0..4u8 {
        s.put(b"z", &[i; 1500], S).unwrap(); // segments 2..
        s.put(b"y", &[i; 1500], S).unwrap();
    }
    assert!(s.stats().segments >= 3, "{:?}", s.stats());
    s.volume().failing_releases.set(1);
    let e = s.checkpoint().unwrap_err(); // segment 0's release fails
    println!("checkpoint: {e}");
    s.checkpoint().unwrap(); // releases segment 1 (the delete of x)
    assert_eq!(s.get(b"x").unwrap(), None);
    let image = s.volume().live_image();
    let back = Store::open(CrashVolume::from_image(image.clone()), small()).unwrap();
    assert_eq!(back.get(b"x").unwrap(), None, "by checkpoint");
    let scanned: BTreeMap<u32, Vec<u8>> =
        image.into_iter().filter(|(_, f)| !f.starts_with(&walnut::format::CHECKPOINT_MAGIC)).collect();
    let full = Store::open(CrashVolume::from_image(scanned), small()).unwrap();
    assert_eq!(full.get(b"x").unwrap().map(|v| v.len()), None, "a full scan resurrected the deleted key x");
}

/// An export (crafted: a whole log, recovered in full) whose last transaction id is the largest
/// valid one, `MAX_ID`.
fn export_ending_at_max_txn() -> Vec<u8> {
    use walnut::format::{CommitPayload, FileHeader, Kind, RecordHeader, MAX_ID};
    let mut file = FileHeader { base_lsn: 1, segment: 0 }.encode().to_vec();
    let begin = file.len() as u64;
    let (h, _) = RecordHeader::encode(Kind::Begin, 0, 1, MAX_ID, 0, &[]);
    file.extend_from_slice(&h);
    let payload = CommitPayload::default().encode_with_id(Some(walnut::export::end_mark(0).as_bytes()));
    let (h, _) = RecordHeader::encode(Kind::Commit, 0, 2, MAX_ID, begin, &[&payload]);
    file.extend_from_slice(&h);
    file.extend_from_slice(&payload);
    file
}

/// The import's TABLE DROP was written with the next transaction id, `MAX_ID + 1`, which
/// recovery refuses: in TolerateTailCorruption the import succeeded, the reload cut the DROP
/// away, and the dropped table's id was given again. Such an export is refused now, the store
/// left as it was.
#[test]
fn an_export_ending_at_the_largest_txn_id_is_refused() {
    let mut s = Store::open(walnut::MemoryVolume::default(), small()).unwrap();
    assert_eq!(s.create_table("gone").unwrap(), 1);
    assert!(s.drop_table("gone").unwrap());
    let bytes = export_ending_at_max_txn();
    let whole = Store::open(MemoryStorage::from_bytes(bytes.clone()), small()).unwrap();
    assert_eq!(whole.recovery().bytes_truncated, 0, "recovery keeps the whole log");
    let e = import_into(&mut s, &bytes).unwrap_err();
    assert!(matches!(e, walnut::Error::Corruption { .. }), "{e}");
    s.put(b"after", b"v", S).unwrap();
    assert_eq!(s.create_table("new").unwrap(), 2, "the dropped table's id is not given again");
}

/// The same in AbsoluteConsistency: the reload refused the DROP the import wrote itself (no
/// crash, no torn tail), the import failed with the store closed, and the store never opened
/// again.
#[test]
fn an_export_ending_at_the_largest_txn_id_leaves_a_store_that_opens() {
    let opts = Options { recovery_mode: walnut::RecoveryMode::AbsoluteConsistency, ..small() };
    let mut s = Store::open(walnut::MemoryVolume::default(), opts.clone()).unwrap();
    assert_eq!(s.create_table("gone").unwrap(), 1);
    assert!(s.drop_table("gone").unwrap());
    let r = import_into(&mut s, &export_ending_at_max_txn());
    println!("import: {r:?}");
    let reopened = Store::open(s.into_volume(), opts);
    assert!(reopened.is_ok(), "the store does not open: {:?}", reopened.err());
}

/// A log whose last transaction id is `MAX_ID` (such an export, once imported): the store's
/// next writes took ids above it, which recovery refuses, so a strict put was acknowledged,
/// then lost on reopen. The writer refuses them now.
#[test]
fn a_write_past_the_largest_txn_id_is_refused_not_lost() {
    let file = MemoryStorage::from_bytes(export_ending_at_max_txn());
    let mut s = Store::open(file.clone(), small()).unwrap();
    let r = s.put(b"k", b"v", S);
    assert!(r.is_err(), "a put past the id limit was acknowledged");
    drop(s);
    let back = Store::open(file, small()).unwrap();
    assert_eq!(back.get(b"k").unwrap(), None);
}

/// An export (crafted) that carries, besides its end mark, another commit id with the end
/// marks' prefix: such ids are never forgotten by the retention, so an import refuses it (found
/// by review, 2026-11-28).
#[test]
fn an_export_carrying_another_reserved_id_is_refused() {
    use walnut::format::{CommitPayload, FileHeader, Kind, RecordHeader};
    let mut file = FileHeader { base_lsn: 1, segment: 0 }.encode().to_vec();
    let mut lsn = 1;
    for (txn, id) in [(1u64, "walnut-export/not-a-mark".to_string()), (2, walnut::export::end_mark(0))] {
        let begin = file.len() as u64;
        let (h, _) = RecordHeader::encode(Kind::Begin, 0, lsn, txn, 0, &[]);
        file.extend_from_slice(&h);
        let payload = CommitPayload::default().encode_with_id(Some(id.as_bytes()));
        let (h, _) = RecordHeader::encode(Kind::Commit, 0, lsn + 1, txn, begin, &[&payload]);
        file.extend_from_slice(&h);
        file.extend_from_slice(&payload);
        lsn += 2;
    }
    let whole = Store::open(MemoryStorage::from_bytes(file.clone()), small()).unwrap();
    assert_eq!(whole.recovery().bytes_truncated, 0, "recovery keeps the whole log");
    let mut s = Store::open(walnut::MemoryVolume::default(), small()).unwrap();
    let e = import_into(&mut s, &file).unwrap_err();
    assert!(matches!(&e, walnut::Error::Corruption { detail, .. } if detail.contains("reserved")), "{e}");
    s.put(b"after", b"v", S).unwrap();
}
