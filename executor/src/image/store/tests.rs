//! The store's tests: the layout it keeps, blobs written and read back,
//! references, exports and extracted layers.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use oci_spec::image::MediaType;

use super::*;
use crate::image::digest::sha256_bytes;

const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    (dir, store)
}

fn tmp_files(store: &Store) -> Vec<PathBuf> {
    fs::read_dir(store.tmp_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

fn blob_files(store: &Store) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for alg in fs::read_dir(store.root().join("blobs")).unwrap() {
        for blob in fs::read_dir(alg.unwrap().path()).unwrap() {
            out.push(blob.unwrap().path());
        }
    }
    out
}

fn descriptor(media_type: MediaType, data: &[u8]) -> Descriptor {
    Descriptor::new(media_type, data.len() as u64, sha256_bytes(data))
}

#[test]
fn open_creates_an_oci_layout_and_reopens_it() {
    let (_dir, store) = store();
    let layout = fs::read_to_string(store.root().join("oci-layout")).unwrap();
    assert_eq!(layout, OCI_LAYOUT);
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(store.root().join("index.json")).unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["manifests"], serde_json::json!([]));
    assert!(store.root().join("blobs/sha256").is_dir());
    let again = Store::open(store.root()).unwrap();
    assert!(again.refs().unwrap().is_empty());
}

#[test]
fn open_rejects_another_layout_version() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("oci-layout"),
        r#"{"imageLayoutVersion":"2.0.0"}"#,
    )
    .unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("\"2.0.0\""), "{err}");
}

#[test]
fn open_removes_stale_temporary_files_only() {
    let (_dir, store) = store();
    let old = store.tmp_dir().join("other-old");
    let fresh = store.tmp_dir().join("other-fresh");
    File::create(&old)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(3 * 24 * 3600))
        .unwrap();
    File::create(&fresh).unwrap();
    Store::open(store.root()).unwrap();
    assert!(!old.exists());
    assert!(fresh.exists());
}

/// A download killed halfway leaves its partial blob (hundreds of MB): the
/// next open removes it at once, but never one still being written.
#[test]
fn open_removes_partial_blobs_of_dead_writers_only() {
    let (_dir, store) = store();
    let mut live = store.blob_writer().unwrap();
    live.write_all(b"still coming").unwrap();
    live.flush().unwrap();
    let dead = store.tmp_dir().join("blob-dead");
    fs::write(&dead, b"half a layer").unwrap();
    Store::open(store.root()).unwrap();
    assert!(!dead.exists(), "a partial blob nobody writes is removed");
    assert!(live.path().exists(), "one being written stays");
    let digest = sha256_bytes(b"still coming");
    live.commit(Some(&digest)).unwrap();
    assert_eq!(store.read_blob(&digest).unwrap(), b"still coming");
}

#[test]
fn put_and_read_blob_round_trip() {
    let (_dir, store) = store();
    let digest = store.put_bytes(b"hello").unwrap();
    assert_eq!(digest, sha256_bytes(b"hello"));
    let path = store.blob_path(&digest);
    assert_eq!(
        path,
        store.root().join("blobs/sha256").join(digest.hex()),
        "blobs live at blobs/<alg>/<hex>"
    );
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o644);
    assert!(store.has_blob(&digest));
    assert_eq!(store.read_blob(&digest).unwrap(), b"hello");
    assert_eq!(store.verify_blob(&digest).unwrap(), 5);
    let mut s = String::new();
    store
        .open_blob(&digest)
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    assert_eq!(s, "hello");
    // Putting it again is a no-op.
    assert_eq!(store.put_bytes(b"hello").unwrap(), digest);
    assert!(tmp_files(&store).is_empty());
}

#[test]
fn blob_writer_commits_with_expected_digest_and_size() {
    let (_dir, store) = store();
    // Larger than two of the chunks handed to writeback as they are
    // written, in writes that do not divide them.
    let len: u64 = 17_000_000;
    let data: Vec<u8> = (0..len).map(|i| u8::try_from(i % 251).unwrap()).collect();
    let expected = sha256_bytes(&data);
    let mut w = store.blob_writer().unwrap();
    w.expect_size(len);
    for chunk in data.chunks(4099) {
        w.write_all(chunk).unwrap();
    }
    assert_eq!(w.written(), len);
    let (digest, size) = w.commit(Some(&expected)).unwrap();
    assert_eq!((digest, size), (expected.clone(), len));
    assert_eq!(store.verify_blob(&expected).unwrap(), len);
    assert_eq!(store.read_blob(&expected).unwrap(), data);
}

#[test]
fn blob_writer_supports_sha512() {
    let (_dir, store) = store();
    let expected = Digest::of(Algorithm::Sha512, b"abc");
    let mut w = store.blob_writer_with(Algorithm::Sha512).unwrap();
    w.write_all(b"abc").unwrap();
    w.commit(Some(&expected)).unwrap();
    assert!(
        store
            .root()
            .join("blobs/sha512")
            .join(expected.hex())
            .is_file()
    );
    assert_eq!(store.read_blob(&expected).unwrap(), b"abc");
    // A sha256 writer cannot check a sha512 digest.
    let w = store.blob_writer().unwrap();
    let err = w.commit(Some(&expected)).unwrap_err();
    assert!(matches!(err, StoreError::AlgorithmMismatch { .. }), "{err}");
}

#[test]
fn dropped_writer_leaves_nothing() {
    let (_dir, store) = store();
    let mut w = store.blob_writer().unwrap();
    w.write_all(&vec![1u8; 300_000]).unwrap();
    assert_eq!(
        tmp_files(&store).len(),
        1,
        "the write goes to a temporary file"
    );
    drop(w);
    assert!(tmp_files(&store).is_empty());
    assert!(blob_files(&store).is_empty());
}

#[test]
fn failed_commit_leaves_no_blob_and_no_temporary_file() {
    let (_dir, store) = store();
    let wrong = sha256_bytes(b"something else");
    let mut w = store.blob_writer().unwrap();
    w.write_all(b"partial download").unwrap();
    let err = w.commit(Some(&wrong)).unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }));
    assert!(
        err.to_string().contains(&wrong.to_string()),
        "the error names the digest: {err}"
    );
    assert!(!store.has_blob(&wrong));
    assert!(!store.has_blob(&sha256_bytes(b"partial download")));
    assert!(tmp_files(&store).is_empty());
    assert!(blob_files(&store).is_empty());
}

#[test]
fn size_is_enforced_while_writing_and_at_commit() {
    let (_dir, store) = store();
    let mut w = store.blob_writer().unwrap();
    w.expect_size(4);
    let err = w.write_all(b"12345").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    drop(w);

    let mut w = store.blob_writer().unwrap();
    w.expect_size(10);
    w.write_all(b"1234").unwrap();
    let err = w.commit(None).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SizeMismatch {
                expected: 10,
                actual: 4
            }
        ),
        "{err}"
    );
    assert!(tmp_files(&store).is_empty());
    assert!(blob_files(&store).is_empty());
}

#[test]
fn corrupt_blob_is_detected_reported_and_removed() {
    let (_dir, store) = store();
    let digest = store.put_bytes(b"original content").unwrap();
    let path = store.blob_path(&digest);
    // Same size, different bytes: only hashing can tell.
    fs::write(&path, b"0riginal content").unwrap();
    let err = store.read_blob(&digest).unwrap_err();
    assert!(matches!(
        err,
        StoreError::Layout(LayoutError::Corrupt { .. })
    ));
    assert!(err.to_string().contains(&digest.to_string()), "{err}");
    assert!(!path.exists(), "the corrupt blob is removed");
    let err = store.read_blob(&digest).unwrap_err();
    assert!(
        matches!(err, StoreError::Layout(LayoutError::BlobNotFound { .. })),
        "{err}"
    );
    assert!(err.to_string().contains(&digest.to_string()), "{err}");

    // A truncated blob, found by verify_blob; put_bytes repairs it.
    let digest = store.put_bytes(b"another blob").unwrap();
    fs::write(store.blob_path(&digest), b"another").unwrap();
    let err = store.verify_blob(&digest).unwrap_err();
    assert!(
        matches!(err, StoreError::Layout(LayoutError::Corrupt { .. })),
        "{err}"
    );
    assert!(!store.has_blob(&digest));
    fs::write(store.blob_path(&digest), b"another").unwrap();
    store.put_bytes(b"another blob").unwrap();
    assert_eq!(store.read_blob(&digest).unwrap(), b"another blob");
}

#[test]
fn set_ref_replaces_and_get_ref_finds() {
    let (_dir, store) = store();
    let one = descriptor(MediaType::ImageManifest, b"one");
    let two = descriptor(MediaType::ImageManifest, b"two");
    assert_eq!(store.get_ref("app:latest").unwrap(), None);
    store.set_ref("app:latest", &one).unwrap();
    store.set_ref("base:1", &one).unwrap();
    store.set_ref("app:latest", &two).unwrap();
    let got = store.get_ref("app:latest").unwrap().unwrap();
    assert_eq!(got.digest(), two.digest());
    assert_eq!(ref_name(&got), Some("app:latest"));
    assert_eq!(store.refs().unwrap().len(), 2);
    assert!(store.remove_ref("base:1").unwrap());
    assert!(!store.remove_ref("base:1").unwrap());
    assert_eq!(store.refs().unwrap().len(), 1);
    assert!(matches!(
        store.set_ref("", &one),
        Err(StoreError::EmptyRefName)
    ));
}

#[test]
fn concurrent_set_ref_loses_no_update_and_readers_see_whole_files() {
    let (_dir, store) = store();
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let store = store.clone();
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut reads = 0;
            while !done.load(Ordering::Relaxed) {
                store.refs().expect("index.json is always complete");
                reads += 1;
            }
            reads
        })
    };
    let writers: Vec<_> = (0..8)
        .map(|t| {
            // Each thread opens its own Store, as separate processes would.
            let store = Store::open(store.root()).unwrap();
            std::thread::spawn(move || {
                for i in 0..20 {
                    let d = descriptor(MediaType::ImageManifest, format!("{t}/{i}").as_bytes());
                    store.set_ref(&format!("img-{t}:{i}"), &d).unwrap();
                    // Everyone also fights over one shared name.
                    store.set_ref("shared", &d).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    let refs = store.refs().unwrap();
    assert_eq!(refs.len(), 8 * 20 + 1);
    for t in 0..8 {
        for i in 0..20 {
            let d = store.get_ref(&format!("img-{t}:{i}")).unwrap().unwrap();
            assert_eq!(
                d.digest(),
                descriptor(MediaType::ImageManifest, format!("{t}/{i}").as_bytes()).digest()
            );
        }
    }
    let leftovers: Vec<_> = fs::read_dir(store.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// Stores a one-layer image and returns (manifest descriptor, blobs).
fn sample_image(store: &Store) -> (Descriptor, Vec<Digest>) {
    let layer = b"pretend this is a gzipped tar".to_vec();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer_d = store.put_bytes(&layer).unwrap();
    let config_d = store.put_bytes(config).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_d.to_string(),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer_d.to_string(),
            "size": layer.len(),
        }, {
            "mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "digest": sha256_bytes(b"foreign").to_string(),
            "size": 7,
            "urls": ["https://example.invalid/foreign"],
        }],
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let manifest_d = store.put_bytes(&manifest).unwrap();
    let mut desc = descriptor(MediaType::ImageManifest, &manifest);
    let mut ann = std::collections::HashMap::new();
    ann.insert(ANNOTATION_REF_NAME.to_owned(), "app:1".to_owned());
    desc.set_annotations(Some(ann));
    (desc, vec![manifest_d, config_d, layer_d])
}

fn check_exported(out: &Path, blobs: &[Digest]) {
    assert_eq!(
        fs::read_to_string(out.join("oci-layout")).unwrap(),
        OCI_LAYOUT
    );
    let exported = Store::open(out).unwrap();
    let refs = exported.refs().unwrap();
    assert_eq!(refs.len(), 1);
    assert_eq!(ref_name(&refs[0]), Some("app:1"));
    for d in blobs {
        exported.verify_blob(d).unwrap();
    }
    let count = fs::read_dir(out.join("blobs/sha256")).unwrap().count();
    assert_eq!(
        count,
        blobs.len(),
        "only the image's blobs, no temporary files"
    );
}

#[test]
fn export_layout_shares_no_inode_with_the_store() {
    let (dir, store) = store();
    let (manifest, blobs) = sample_image(&store);
    store.put_bytes(b"unrelated").unwrap();
    let out = dir.path().join("layout");
    store
        .export_layout(&out, std::slice::from_ref(&manifest))
        .unwrap();
    for d in &blobs {
        let a = fs::metadata(store.blob_path(d)).unwrap();
        let b = fs::metadata(out.join("blobs/sha256").join(d.hex())).unwrap();
        assert_ne!((a.dev(), a.ino()), (b.dev(), b.ino()), "{d} is hard-linked");
    }
    // Editing an exported blob in place leaves the store's.
    let first = out.join("blobs/sha256").join(blobs[0].hex());
    let len = fs::metadata(&first).unwrap().len();
    fs::write(&first, vec![b'x'; usize::try_from(len).unwrap()]).unwrap();
    store.verify_blob(&blobs[0]).unwrap();
    // Exporting again, into the existing layout, is idempotent.
    fs::remove_file(&first).unwrap();
    store.export_layout(&out, &[manifest]).unwrap();
    check_exported(&out, &blobs);
}

#[test]
fn export_layout_reports_a_missing_blob() {
    let (dir, store) = store();
    let (manifest, blobs) = sample_image(&store);
    fs::remove_file(store.blob_path(&blobs[2])).unwrap();
    let err = store
        .export_layout(&dir.path().join("layout"), &[manifest])
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Layout(LayoutError::BlobNotFound { .. })),
        "{err}"
    );
    assert!(err.to_string().contains(&blobs[2].to_string()), "{err}");
}

/// A gzip layer with a whiteout, an opaque directory and a file.
fn sample_layer(store: &Store) -> (Digest, Digest) {
    use crate::image::layer::{Compression, EntryKind, LayerEntry, WriteOptions, write_layer};
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("f");
    fs::write(&file, "content").unwrap();
    let entries = vec![
        LayerEntry::new("etc", EntryKind::Dir),
        LayerEntry::new("etc/gone", EntryKind::Whiteout),
        LayerEntry::new("etc/file", EntryKind::File(file)),
        LayerEntry::new("var", EntryKind::Dir),
        LayerEntry::new("var", EntryKind::OpaqueWhiteout),
    ];
    let mut blob = Vec::new();
    let info = write_layer(
        entries,
        Compression::Gzip,
        None,
        1,
        &mut blob,
        &WriteOptions::default(),
    )
    .unwrap();
    assert_eq!(store.put_bytes(&blob).unwrap(), info.digest);
    (info.diff_id, info.digest)
}

#[test]
fn extracted_layer_is_extracted_once_in_overlay_form() {
    let (_dir, store) = store();
    let (diff_id, blob) = sample_layer(&store);
    let paths: Vec<PathBuf> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| store.extracted_layer(&diff_id, &blob).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let path = store.layer_path(&diff_id);
    assert!(paths.iter().all(|p| *p == path), "{paths:?}");
    assert_eq!(
        fs::read_to_string(path.join("etc/file")).unwrap(),
        "content"
    );
    let whiteout = fs::symlink_metadata(path.join("etc/gone")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &whiteout.file_type()
    ));
    assert_eq!(whiteout.rdev(), 0);
    let xattrs = crate::image::layer::read_xattrs(&path.join("var")).unwrap();
    assert_eq!(xattrs["trusted.overlay.opaque"], b"y");
    // Nothing left in tmp/, one directory in layers/.
    assert!(tmp_files(&store).is_empty(), "{:?}", tmp_files(&store));
    let layers: Vec<_> = fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| !n.to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(layers.len(), 1);
}

#[test]
fn extracted_layer_rejects_a_blob_that_does_not_match_its_diff_id() {
    let (_dir, store) = store();
    let (_, blob) = sample_layer(&store);
    let wrong = sha256_bytes(b"not this layer");
    // A leftover of an interrupted extraction of that layer is removed.
    let leftover = store.tmp_dir().join(format!("layer-{}.stale", wrong.hex()));
    fs::create_dir(&leftover).unwrap();
    let err = store.extracted_layer(&wrong, &blob).unwrap_err();
    assert!(matches!(err, StoreError::DiffIdMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&wrong.to_string()), "{err}");
    assert!(!store.layer_path(&wrong).exists());
    assert!(tmp_files(&store).is_empty(), "{:?}", tmp_files(&store));
    // A blob that is not a layer at all.
    let junk = store.put_bytes(b"\x1f\x8b junk that is not gzip").unwrap();
    let err = store.extracted_layer(&wrong, &junk).unwrap_err();
    assert!(matches!(err, StoreError::Extract { .. }), "{err}");
    assert!(!store.layer_path(&wrong).exists());
    assert!(tmp_files(&store).is_empty(), "{:?}", tmp_files(&store));
}

/// A layer blob damaged on disk (same size, other bytes) is never
/// extracted, and is removed so that the next build fetches it again.
#[test]
fn a_damaged_layer_blob_is_removed_not_used() {
    let (_dir, store) = store();
    let (diff_id, blob) = sample_layer(&store);
    let path = store.blob_path(&blob);
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    store.extracted_layer(&diff_id, &blob).unwrap_err();
    assert!(!store.layer_path(&diff_id).exists());
    assert!(!path.exists(), "the damaged blob is removed");
    assert!(tmp_files(&store).is_empty(), "{:?}", tmp_files(&store));
}

/// Damages the blob `digest` in place: same size, one byte changed.
fn damage(store: &Store, digest: &Digest) {
    let path = store.blob_path(digest);
    let mut bytes = fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
}

/// A stored blob is sound when whole, or when its extracted layer is
/// there (overlay roots read that); one damaged in place is removed (to be
/// downloaded again), one of another size left for the download.
#[test]
fn has_sound_blob_hashes_what_is_not_extracted_and_removes_damage() {
    let (_dir, store) = store();
    let (diff_id, blob) = sample_layer(&store);
    let size = fs::metadata(store.blob_path(&blob)).unwrap().len();
    assert!(store.has_sound_blob(&blob, size, Some(&diff_id)));
    assert!(!store.has_sound_blob(&blob, size + 1, None));
    assert!(store.blob_path(&blob).exists());

    store.extracted_layer(&diff_id, &blob).unwrap();
    damage(&store, &blob);
    // Hashed once per process: this one found it whole.
    assert!(store.has_sound_blob(&blob, size, None));
    // The next build's.
    let next = Store::open(store.root()).unwrap();
    assert!(next.has_sound_blob(&blob, size, Some(&diff_id)));
    assert!(!next.has_sound_blob(&blob, size, None));
    assert!(
        !next.blob_path(&blob).exists(),
        "the damaged blob is removed"
    );
    assert!(!next.has_sound_blob(&blob, size, Some(&diff_id)));
}

/// A layer applied straight from its blob (full and in-place roots) is
/// hashed as it streams: a damaged blob is reported and removed.
#[test]
fn apply_blob_checks_the_blob_and_removes_a_damaged_one() {
    let (dir, store) = store();
    let (_, blob) = sample_layer(&store);
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let opts = crate::image::apply::ApplyOptions::default();
    let stats = store.apply_blob(&blob, &root, &opts).unwrap();
    assert!(stats.entries > 0);
    assert_eq!(
        fs::read_to_string(root.join("etc/file")).unwrap(),
        "content"
    );

    damage(&store, &blob);
    let again = dir.path().join("again");
    fs::create_dir(&again).unwrap();
    let err = store.apply_blob(&blob, &again, &opts).unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&blob.to_string()), "{err}");
    assert!(
        !store.blob_path(&blob).exists(),
        "the damaged blob is removed"
    );
}

#[test]
fn adopt_layer_renames_and_drops_the_loser() {
    let (_dir, store) = store();
    let diff_id = sha256_bytes(b"some layer");
    let make = |text: &str| {
        let dir = tempfile::Builder::new()
            .prefix("upper-")
            .tempdir_in(store.tmp_dir())
            .unwrap()
            .keep();
        fs::write(dir.join("file"), text).unwrap();
        dir
    };
    let first = make("first");
    let path = store.adopt_layer(&diff_id, &first).unwrap();
    assert_eq!(path, store.layer_path(&diff_id));
    assert!(!first.exists());
    let second = make("second");
    assert_eq!(store.adopt_layer(&diff_id, &second).unwrap(), path);
    assert!(!second.exists(), "the losing copy is removed");
    assert_eq!(fs::read_to_string(path.join("file")).unwrap(), "first");
    // Another filesystem cannot be renamed in.
    let elsewhere = tempfile::tempdir_in("/dev/shm").unwrap();
    let err = store
        .adopt_layer(&sha256_bytes(b"other"), elsewhere.path())
        .unwrap_err();
    assert!(err.to_string().contains("hint:"), "{err}");
}

/// Layers hold setuid files and device nodes, scratch holds secrets: the
/// store is its owner's only, and a store made before is fixed on open.
#[test]
fn the_store_is_private_to_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let dirs = [
        "",
        "blobs",
        "blobs/sha256",
        "layers",
        "layers/sha256",
        "tmp",
    ];
    let store = Store::open(&root).unwrap();
    for d in dirs {
        assert_eq!(mode(&root.join(d)), 0o700, "new store: {d:?}");
    }
    drop(store);
    // An older store, world-readable throughout.
    fs::create_dir_all(root.join("cache-mounts/x")).unwrap();
    for d in dirs.iter().chain(&["cache-mounts"]) {
        fs::set_permissions(root.join(d), fs::Permissions::from_mode(0o755)).unwrap();
    }
    Store::open(&root).unwrap();
    for d in dirs.iter().chain(&["cache-mounts"]) {
        assert_eq!(mode(&root.join(d)), 0o700, "reopened store: {d:?}");
    }
    // What is inside a cache mount is the build's own.
    assert_eq!(mode(&root.join("cache-mounts/x")), 0o755);
}

/// A tar of one file, `path`, holding `content`.
fn tar_of(path: &str, content: &[u8]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, path, content).unwrap();
    tar.into_inner().unwrap()
}

/// A layer blob of two gzip members of the same length (the store's own
/// layers have one per block) is extracted whole: inflating it in one
/// buffer, which reads the first member only, must not pass for the
/// layer even though the last member's length is the buffer's.
#[test]
fn a_layer_of_gzip_members_of_one_length_is_extracted_whole() {
    use flate2::{Compression as Level, write::GzEncoder};
    let (_dir, store) = store();
    let content = vec![b'x'; 1024];
    let tar = tar_of("file", &content);
    assert_eq!(tar.len() % 2, 0);
    let (first, last) = tar.split_at(tar.len() / 2);
    let mut blob = Vec::new();
    for half in [first, last] {
        let mut member = GzEncoder::new(Vec::new(), Level::default());
        member.write_all(half).unwrap();
        blob.extend(member.finish().unwrap());
    }
    let digest = store.put_bytes(&blob).unwrap();
    let diff_id = sha256_bytes(&tar);
    let path = store.extracted_layer(&diff_id, &digest).unwrap();
    assert_eq!(fs::read(path.join("file")).unwrap(), content);
}

/// A layer of one gzip member (as registries serve them) is extracted,
/// and checked against its diffID.
#[test]
fn a_layer_of_one_gzip_member_is_extracted_and_checked() {
    use flate2::{Compression as Level, write::GzEncoder};
    let (_dir, store) = store();
    let content = b"hello\n".to_vec();
    let tar = tar_of("etc/greeting", &content);
    let mut member = GzEncoder::new(Vec::new(), Level::default());
    member.write_all(&tar).unwrap();
    let blob = member.finish().unwrap();
    let digest = store.put_bytes(&blob).unwrap();
    let wrong = sha256_bytes(b"another tar");
    let err = store.extracted_layer(&wrong, &digest).unwrap_err();
    assert!(matches!(err, StoreError::DiffIdMismatch { .. }), "{err}");
    assert!(!store.layer_path(&wrong).exists());
    let path = store.extracted_layer(&sha256_bytes(&tar), &digest).unwrap();
    assert_eq!(fs::read(path.join("etc/greeting")).unwrap(), content);
    // The next process hashes the blob before it trusts it: one damaged
    // in place (the gzip header's mtime, which no CRC covers) is removed.
    let mut damaged = blob.clone();
    damaged[4] ^= 0xff;
    let other = tempfile::tempdir().unwrap();
    let next = Store::open(other.path()).unwrap();
    let stored = next.put_bytes(&blob).unwrap();
    let next = Store::open(other.path()).unwrap();
    fs::write(next.blob_path(&stored), &damaged).unwrap();
    let err = next
        .extracted_layer(&sha256_bytes(&tar), &stored)
        .unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    assert!(
        !next.blob_path(&stored).exists(),
        "the damaged blob is removed"
    );
}
