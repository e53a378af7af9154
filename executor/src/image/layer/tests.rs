//! Layer writing's tests: deterministic bytes whatever the order, the
//! threads or the compression, the tar headers other tools read, and the
//! entries of directory trees and overlay upper directories.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::fs::Mode;

use super::format::BLOCK;
use super::*;
use crate::image::digest::sha256_bytes;
use std::os::unix::fs::{PermissionsExt, symlink};

fn write_to_vec(
    entries: Vec<LayerEntry>,
    compression: Compression,
    threads: usize,
    options: &WriteOptions,
) -> (LayerInfo, Vec<u8>) {
    let mut out = Vec::new();
    let info = write_layer(entries, compression, None, threads, &mut out, options).unwrap();
    (info, out)
}

fn tar_of(entries: Vec<LayerEntry>) -> Vec<u8> {
    write_to_vec(
        entries,
        Compression::Uncompressed,
        1,
        &WriteOptions::default(),
    )
    .1
}

/// Sets a path's times without following a final symlink.
fn set_mtime(path: &Path, secs: u64) {
    let t = rustix::fs::Timespec {
        tv_sec: i64::try_from(secs).unwrap(),
        tv_nsec: 0,
    };
    let times = rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

fn make_tree(root: &Path, mtime: u64, reverse: bool) {
    let mut files: Vec<(&str, &[u8])> = vec![
        ("a.txt", b"alpha"),
        ("b/c.txt", b"charlie"),
        ("b/d/e.bin", &[0u8, 1, 2, 3, 255]),
        ("z", b""),
    ];
    if reverse {
        files.reverse();
    }
    for (path, data) in files {
        let path = root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, data).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    }
    symlink("../a.txt", root.join("b/link")).unwrap();
    for dir in ["b/d", "b", "."] {
        fs::set_permissions(root.join(dir), fs::Permissions::from_mode(0o755)).unwrap();
    }
    // Every entry, the link and the root included: two trees made in
    // different seconds must still be the same tree.
    for path in [
        "a.txt",
        "b/c.txt",
        "b/d/e.bin",
        "z",
        "b/link",
        "b/d",
        "b",
        ".",
    ] {
        set_mtime(&root.join(path), mtime);
    }
}

fn digest_of_dir(dir: &Path, compression: Compression, options: &WriteOptions) -> LayerInfo {
    let entries = layer_from_dir(dir).unwrap();
    write_to_vec(entries, compression, 2, options).0
}

#[test]
fn same_tree_gives_the_same_digest_whatever_the_order() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    make_tree(a.path(), 1_600_000_000, false);
    make_tree(b.path(), 1_600_000_000, true);
    for compression in [
        Compression::Gzip,
        Compression::Zstd,
        Compression::Uncompressed,
    ] {
        let options = WriteOptions::default();
        let first = digest_of_dir(a.path(), compression, &options);
        assert_eq!(first, digest_of_dir(a.path(), compression, &options));
        assert_eq!(first, digest_of_dir(b.path(), compression, &options));
        // The order entries are given in does not matter either.
        let mut entries = layer_from_dir(a.path()).unwrap();
        entries.reverse();
        let shuffled = write_to_vec(entries, compression, 2, &options).0;
        assert_eq!(first, shuffled);
    }
}

#[test]
fn source_date_epoch_clamps_mtimes() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    make_tree(a.path(), 1_600_000_000, false);
    make_tree(b.path(), 1_700_000_000, false);
    let plain = WriteOptions::default();
    let clamped = WriteOptions {
        source_date_epoch: Some(1_500_000_000),
    };
    let da = digest_of_dir(a.path(), Compression::Gzip, &plain);
    let db = digest_of_dir(b.path(), Compression::Gzip, &plain);
    assert_ne!(da.diff_id, db.diff_id, "mtimes are part of the layer");
    let ca = digest_of_dir(a.path(), Compression::Gzip, &clamped);
    let cb = digest_of_dir(b.path(), Compression::Gzip, &clamped);
    assert_eq!(ca, cb);
    // Times before the epoch are kept.
    let mut early = LayerEntry::new("x", EntryKind::Dir);
    early.mtime = 1_000;
    let tar = write_to_vec(vec![early], Compression::Uncompressed, 1, &clamped).1;
    let mut archive = tar::Archive::new(&tar[..]);
    let entry = archive.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(entry.header().mtime().unwrap(), 1_000);
}

/// A parsed entry of a tar as the `tar` crate reads it.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    path: Vec<u8>,
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    link: Option<Vec<u8>>,
    device: Option<(u32, u32)>,
    pax: Vec<String>,
    xattrs: Vec<(String, Vec<u8>)>,
    data: Vec<u8>,
}

fn read_back(tar: &[u8]) -> Vec<Seen> {
    let mut archive = tar::Archive::new(tar);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header().clone();
        let ustar = header.as_ustar().expect("USTAR headers");
        assert_eq!(ustar.username_bytes(), b"", "uname is empty");
        assert_eq!(ustar.groupname_bytes(), b"", "gname is empty");
        let kind = header.entry_type();
        let device = if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
            Some((
                header.device_major().unwrap().unwrap(),
                header.device_minor().unwrap().unwrap(),
            ))
        } else {
            assert_eq!(ustar.dev_major, [0; 8], "no device numbers");
            assert_eq!(ustar.dev_minor, [0; 8], "no device numbers");
            None
        };
        let mut pax = Vec::new();
        let mut xattrs = Vec::new();
        if let Some(exts) = entry.pax_extensions().unwrap() {
            for ext in exts {
                let ext = ext.unwrap();
                let key = ext.key().unwrap().to_owned();
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    xattrs.push((name.to_owned(), ext.value_bytes().to_vec()));
                }
                pax.push(key);
            }
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        out.push(Seen {
            path: entry.path_bytes().into_owned(),
            kind,
            mode: header.mode().unwrap(),
            uid: entry.header().uid().unwrap(),
            gid: entry.header().gid().unwrap(),
            mtime: header.mtime().unwrap(),
            link: entry.link_name_bytes().map(std::borrow::Cow::into_owned),
            device,
            pax,
            xattrs,
            data,
        });
    }
    out
}

fn seen(path: &str, kind: tar::EntryType, mode: u32) -> Seen {
    Seen {
        path: path.as_bytes().to_vec(),
        kind,
        mode,
        uid: 0,
        gid: 0,
        mtime: 0,
        link: None,
        device: None,
        pax: vec![],
        xattrs: vec![],
        data: vec![],
    }
}

#[test]
fn tar_reads_back_with_exactly_the_expected_headers() {
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("content");
    fs::write(&content, b"#!/bin/sh\necho hi\n").unwrap();
    let long_dir = "d".repeat(120);
    let long_name = format!("{long_dir}/{}", "n".repeat(120));
    let long_target = format!("/{}", "t".repeat(150));

    let mut file = LayerEntry::new("usr/bin/hello", EntryKind::File(content.clone()));
    file.mode = 0o104_755; // file type bits are dropped, setuid kept
    file.uid = 1000;
    file.gid = 1001;
    file.mtime = 1_700_000_000;
    file.xattrs
        .insert("security.capability".into(), vec![1, 0, 0, 2, 0, 0x20]);
    file.xattrs.insert("user.note".into(), b"hi".to_vec());
    let mut big_ids = LayerEntry::new("srv", EntryKind::Dir);
    big_ids.uid = 3_000_000;
    big_ids.gid = 3_000_001;
    big_ids.mode = 0o1777;
    let entries = vec![
        file,
        LayerEntry::new(
            "usr/bin/hello-link",
            EntryKind::Hardlink("/usr/bin/hello".into()),
        ),
        LayerEntry::new("usr/bin/sh", EntryKind::Symlink("hello".into())),
        LayerEntry::new("usr", EntryKind::Dir),
        LayerEntry::new("usr/bin", EntryKind::Dir),
        LayerEntry::new("dev/null", EntryKind::CharDevice(1, 3)),
        LayerEntry::new("dev/sda", EntryKind::BlockDevice(8, 0)),
        LayerEntry::new("run/fifo", EntryKind::Fifo),
        LayerEntry::new("etc/gone", EntryKind::Whiteout),
        LayerEntry::new("var/cache", EntryKind::OpaqueWhiteout),
        LayerEntry::new("var/cache", EntryKind::Dir),
        LayerEntry::new(long_name.clone(), EntryKind::File(content.clone())),
        LayerEntry::new("long-link", EntryKind::Symlink(long_target.clone().into())),
        LayerEntry::new("caf\u{e9}", EntryKind::Dir),
        big_ids,
    ];
    let got = read_back(&tar_of(entries));
    let data = b"#!/bin/sh\necho hi\n".to_vec();
    let reg = tar::EntryType::Regular;
    let expected = vec![
        Seen {
            pax: vec!["path".into()],
            ..seen("caf\u{e9}/", tar::EntryType::Directory, 0o755)
        },
        Seen {
            pax: vec!["path".into()],
            data: data.clone(),
            ..seen(&long_name, reg, 0o644)
        },
        Seen {
            device: Some((1, 3)),
            ..seen("dev/null", tar::EntryType::Char, 0o644)
        },
        Seen {
            device: Some((8, 0)),
            ..seen("dev/sda", tar::EntryType::Block, 0o644)
        },
        seen("etc/.wh.gone", reg, 0o644),
        Seen {
            link: Some(long_target.clone().into_bytes()),
            pax: vec!["linkpath".into()],
            ..seen("long-link", tar::EntryType::Symlink, 0o777)
        },
        seen("run/fifo", tar::EntryType::Fifo, 0o644),
        Seen {
            uid: 3_000_000,
            gid: 3_000_001,
            pax: vec!["gid".into(), "uid".into()],
            ..seen("srv/", tar::EntryType::Directory, 0o1777)
        },
        seen("usr/", tar::EntryType::Directory, 0o755),
        seen("usr/bin/", tar::EntryType::Directory, 0o755),
        Seen {
            uid: 1000,
            gid: 1001,
            mtime: 1_700_000_000,
            pax: vec![
                "SCHILY.xattr.security.capability".into(),
                "SCHILY.xattr.user.note".into(),
            ],
            xattrs: vec![
                ("security.capability".into(), vec![1, 0, 0, 2, 0, 0x20]),
                ("user.note".into(), b"hi".to_vec()),
            ],
            data,
            ..seen("usr/bin/hello", reg, 0o4755)
        },
        Seen {
            link: Some(b"usr/bin/hello".to_vec()),
            ..seen("usr/bin/hello-link", tar::EntryType::Link, 0o644)
        },
        Seen {
            link: Some(b"hello".to_vec()),
            ..seen("usr/bin/sh", tar::EntryType::Symlink, 0o777)
        },
        seen("var/cache/", tar::EntryType::Directory, 0o755),
        seen("var/cache/.wh..wh..opq", reg, 0o644),
    ];
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(g, e, "entry {}", String::from_utf8_lossy(&e.path));
    }
}

#[test]
fn names_up_to_255_bytes_use_the_ustar_prefix_not_pax() {
    let name = format!("{}/{}", "p".repeat(150), "n".repeat(99));
    let tar = tar_of(vec![LayerEntry::new(name.clone(), EntryKind::Dir)]);
    let header = tar::Header::from_byte_slice(&tar[..BLOCK]);
    assert_eq!(
        header.entry_type(),
        tar::EntryType::Directory,
        "no PAX header"
    );
    assert_eq!(header.path_bytes().as_ref(), format!("{name}/").as_bytes());
    assert_eq!(tar.len(), 3 * BLOCK, "one header and the two end blocks");
}

#[test]
fn gzip_and_zstd_decompress_to_the_diff_id() {
    let dir = tempfile::tempdir().unwrap();
    make_tree(dir.path(), 1_600_000_000, false);
    let entries = layer_from_dir(dir.path()).unwrap();
    let options = WriteOptions::default();
    let (plain, tar) = write_to_vec(entries.clone(), Compression::Uncompressed, 1, &options);
    assert_eq!(plain.digest, plain.diff_id);
    assert_eq!(plain.diff_id, sha256_bytes(&tar));
    assert_eq!(plain.size, tar.len() as u64);
    assert_eq!(plain.media_type.to_string(), MEDIA_TYPE_TAR);

    let (gz, gz_bytes) = write_to_vec(entries.clone(), Compression::Gzip, 2, &options);
    assert_eq!(gz.media_type.to_string(), MEDIA_TYPE_TAR_GZIP);
    assert_eq!(gz.digest, sha256_bytes(&gz_bytes));
    assert_eq!(gz.size, gz_bytes.len() as u64);
    assert_eq!(gz.uncompressed_size, tar.len() as u64);
    // A gzip member per block: a standard multi-member reader (Go's
    // compress/gzip, GNU gzip, flate2's MultiGzDecoder) reads them all.
    let mut unzipped = Vec::new();
    flate2::read::MultiGzDecoder::new(&gz_bytes[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(sha256_bytes(&unzipped), plain.diff_id);
    assert_eq!(gz.diff_id, plain.diff_id);

    let (zst, zst_bytes) = write_to_vec(entries, Compression::Zstd, 2, &options);
    assert_eq!(zst.media_type.to_string(), MEDIA_TYPE_TAR_ZSTD);
    assert_eq!(zst.digest, sha256_bytes(&zst_bytes));
    let unzstd = zstd::stream::decode_all(&zst_bytes[..]).unwrap();
    assert_eq!(sha256_bytes(&unzstd), plain.diff_id);
    assert_eq!(zst.diff_id, plain.diff_id);
    assert_ne!(gz.digest, zst.digest);

    let descriptor = zst.descriptor();
    assert_eq!(descriptor.size(), zst.size);
    assert_eq!(descriptor.digest().to_string(), zst.digest.to_string());
}

/// Semi-compressible bytes: words from a small alphabet.
fn text(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let word_len = 2 + (x % 9) as usize;
        for i in 0..word_len {
            out.push(b'a' + ((x >> (8 + i * 3)) % 16) as u8);
        }
        out.push(if x.is_multiple_of(11) { b'\n' } else { b' ' });
    }
    out.truncate(len);
    out
}

#[test]
fn compressed_digests_do_not_depend_on_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    // Several gzip blocks (128 KiB) and several zstd jobs (level 1 jobs
    // are 2 MiB: four times its window).
    let big = dir.path().join("big");
    fs::write(&big, text(9 << 20, 7)).unwrap();
    let entries = vec![LayerEntry::new("big", EntryKind::File(big))];
    for compression in [Compression::Gzip, Compression::Zstd] {
        let digests: Vec<_> = [1, 2, 3]
            .iter()
            .map(|&threads| {
                let mut out = Vec::new();
                write_layer(
                    entries.clone(),
                    compression,
                    Some(1),
                    threads,
                    &mut out,
                    &WriteOptions::default(),
                )
                .unwrap()
                .digest
            })
            .collect();
        assert_eq!(digests[0], digests[1], "{compression}: 1 and 2 threads");
        assert_eq!(digests[0], digests[2], "{compression}: 1 and 3 threads");
    }
}

/// Takes `room` bytes, then fails as a full disk does.
struct FullAfter {
    room: usize,
}

impl std::io::Write for FullAfter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.room == 0 {
            return Err(std::io::Error::from_raw_os_error(28));
        }
        let n = buf.len().min(self.room);
        self.room -= n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A full disk while writing a layer is an error (the disk's), never a
/// panic in the compressor, whenever the disk fills: early in the stream
/// (gzp reports it to a later write), or near its end (reported when the
/// stream is finished).
#[test]
fn a_full_output_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    fs::write(&big, text(4 << 20, 3)).unwrap();
    let entries = vec![LayerEntry::new("big", EntryKind::File(big))];
    for compression in [Compression::Gzip, Compression::Zstd] {
        for room in [0, 10, 200 << 10, 1 << 20] {
            for threads in [1, 2] {
                let err = write_layer(
                    entries.clone(),
                    compression,
                    Some(1),
                    threads,
                    FullAfter { room },
                    &WriteOptions::default(),
                )
                .unwrap_err();
                let LayerError::Write(io) = &err else {
                    panic!("{compression}, room {room}: {err:?}");
                };
                assert_eq!(
                    io.raw_os_error(),
                    Some(28),
                    "{compression}, room {room}: {io:?}"
                );
            }
        }
    }
}

#[test]
fn invalid_entries_are_refused() {
    let cases: Vec<(Vec<LayerEntry>, &str)> = vec![
        (
            vec![LayerEntry::new("a/../b", EntryKind::Dir)],
            "`..` is not allowed",
        ),
        (vec![LayerEntry::new("/", EntryKind::Dir)], "empty path"),
        (
            vec![
                LayerEntry::new("a", EntryKind::Dir),
                LayerEntry::new("./a/", EntryKind::Fifo),
            ],
            "appears more than once",
        ),
        (
            vec![LayerEntry::new("a/.wh.b", EntryKind::Fifo)],
            "reserved for whiteouts",
        ),
        (
            vec![LayerEntry::new(
                "link",
                EntryKind::Hardlink("missing".into()),
            )],
            "not a non-directory entry",
        ),
        (
            vec![
                LayerEntry::new("a", EntryKind::Hardlink("b".into())),
                LayerEntry::new("b", EntryKind::Fifo),
            ],
            "sorts before it",
        ),
        (
            vec![
                LayerEntry::new("d", EntryKind::Dir),
                LayerEntry::new("l", EntryKind::Hardlink("d".into())),
            ],
            "not a non-directory entry",
        ),
        (
            vec![LayerEntry {
                xattrs: [("user.a=b".to_owned(), vec![])].into(),
                ..LayerEntry::new("x", EntryKind::Dir)
            }],
            "invalid xattr name",
        ),
        (
            vec![LayerEntry::new(
                "f",
                EntryKind::File("/nonexistent/file".into()),
            )],
            "cannot read /nonexistent/file",
        ),
        (
            vec![LayerEntry::new("f", EntryKind::File("/dev/null".into()))],
            "/dev/null is not a regular file",
        ),
    ];
    for (entries, message) in cases {
        let err = write_layer(
            entries,
            Compression::Gzip,
            None,
            1,
            io::sink(),
            &WriteOptions::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains(message), "{err} lacks {message:?}");
    }
    let err = write_layer(
        vec![],
        Compression::Gzip,
        Some(10),
        1,
        io::sink(),
        &WriteOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "compression level 10 is out of range for gzip (0 to 9)"
    );
}

#[test]
fn empty_layer_is_two_zero_blocks() {
    let (info, tar) = write_to_vec(
        vec![],
        Compression::Uncompressed,
        1,
        &WriteOptions::default(),
    );
    assert_eq!(tar, vec![0u8; 1024]);
    assert_eq!(info.size, 1024);
}

#[test]
fn layer_from_dir_reads_the_tree_without_following_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("secret"), b"s").unwrap();
    fs::write(root.join("bin/tool"), b"tool").unwrap();
    fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::hard_link(root.join("bin/tool"), root.join("bin/a-alias")).unwrap();
    fs::hard_link(root.join("bin/tool"), root.join("zz-alias")).unwrap();
    symlink(&outside, root.join("escape")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo").as_path(),
        rustix::fs::FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    rustix::fs::lsetxattr(
        root.join("bin/tool").as_path(),
        "user.origin",
        b"test",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    set_mtime(&root.join("bin/tool"), 1_234_567_890);

    let entries = layer_from_dir(&root).unwrap();
    let summary: Vec<(String, EntryKind)> = entries
        .iter()
        .map(|e| (e.path.display().to_string(), e.kind.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("bin".into(), EntryKind::Dir),
            (
                "bin/a-alias".into(),
                EntryKind::File(root.join("bin/a-alias"))
            ),
            ("bin/tool".into(), EntryKind::Hardlink("bin/a-alias".into())),
            ("escape".into(), EntryKind::Symlink(outside.clone())),
            ("fifo".into(), EntryKind::Fifo),
            ("zz-alias".into(), EntryKind::Hardlink("bin/a-alias".into())),
        ]
    );
    let tool = &entries[1];
    assert_eq!(tool.mode, 0o4755);
    assert_eq!(tool.mtime, 1_234_567_890);
    assert_eq!(
        tool.xattrs.get("user.origin").map(Vec::as_slice),
        Some(&b"test"[..])
    );
    assert_eq!(entries[4].mode, 0o600);
    let meta = fs::metadata(root.join("bin")).unwrap();
    assert_eq!(
        (entries[0].uid, entries[0].gid),
        (u64::from(meta.uid()), u64::from(meta.gid()))
    );

    // The tree writes, and hard links read back as links.
    let seen = read_back(&tar_of(entries));
    assert_eq!(seen[2].kind, tar::EntryType::Link);
    assert_eq!(seen[2].link.as_deref(), Some(&b"bin/a-alias"[..]));
    assert_eq!(seen[1].data, b"tool");
    assert_eq!(
        seen[1].xattrs,
        vec![("user.origin".into(), b"test".to_vec())]
    );
}

#[test]
fn device_nodes_become_device_entries() {
    let meta = fs::symlink_metadata("/dev/null").unwrap();
    let (entry, _) = entry_for(Path::new("/dev/null"), "dev/null".into(), &meta, false)
        .unwrap()
        .unwrap();
    assert_eq!(entry.kind, EntryKind::CharDevice(1, 3));
    assert_eq!(entry.mode, 0o666);
}

/// Needs CAP_MKNOD to make the 0:0 character device overlayfs uses as
/// a whiteout.
#[test]
fn overlay_upper_whiteouts_become_oci_whiteouts() {
    let dir = tempfile::tempdir().unwrap();
    let upper = dir.path();
    fs::create_dir_all(upper.join("etc/opaque")).unwrap();
    fs::write(upper.join("etc/opaque/new"), b"n").unwrap();
    rustix::fs::lsetxattr(
        upper.join("etc/opaque").as_path(),
        "user.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        upper.join("etc/deleted").as_path(),
        rustix::fs::FileType::CharacterDevice,
        Mode::from_raw_mode(0o000),
        0,
    )
    .expect("mknod of a 0:0 whiteout (needs CAP_MKNOD)");
    let entries = layer_from_overlay_upper(upper).unwrap();
    let kinds: Vec<(String, EntryKind)> = entries
        .iter()
        .map(|e| (e.path.display().to_string(), e.kind.clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("etc".into(), EntryKind::Dir),
            ("etc/deleted".into(), EntryKind::Whiteout),
            ("etc/opaque".into(), EntryKind::Dir),
            ("etc/opaque".into(), EntryKind::OpaqueWhiteout),
            (
                "etc/opaque/new".into(),
                EntryKind::File(upper.join("etc/opaque/new"))
            ),
        ]
    );
    assert!(
        entries[2].xattrs.is_empty(),
        "overlay xattrs are not copied"
    );
    let names: Vec<_> = read_back(&tar_of(entries))
        .into_iter()
        .map(|s| String::from_utf8(s.path).unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "etc/",
            "etc/.wh.deleted",
            "etc/opaque/",
            "etc/opaque/.wh..wh..opq",
            "etc/opaque/new"
        ]
    );
    // A plain walk keeps the device.
    let plain = layer_from_dir(upper).unwrap();
    assert_eq!(plain[1].kind, EntryKind::CharDevice(0, 0));
}

fn vm_hwm_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Writes a 200 MB sparse file as a gzip and a zstd layer in a fresh
/// process (so that other tests' allocations do not count) and checks
/// that the peak resident memory grew by less than 64 MB.
#[test]
fn writing_a_large_layer_streams() {
    let exe = std::env::current_exe().unwrap();
    let output = std::process::Command::new(exe)
        .args([
            "image::layer::tests::large_layer_memory_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
    // The harness prints the line after "test <name> ... ".
    let at = stdout
        .find("peak memory growth")
        .unwrap_or_else(|| panic!("the child test did not run:\n{stdout}"));
    println!("{}", stdout[at..].lines().next().unwrap_or_default());
}

#[test]
#[ignore = "run in its own process by writing_a_large_layer_streams"]
fn large_layer_memory_child() {
    let dir = tempfile::tempdir().unwrap();
    let sparse = dir.path().join("sparse");
    File::create(&sparse)
        .unwrap()
        .set_len(200 * 1000 * 1000)
        .unwrap();
    let entries = vec![LayerEntry::new("sparse", EntryKind::File(sparse))];
    let before = vm_hwm_kib();
    // Two threads whatever the machine, so the bound does not depend on
    // its core count; gzip at level 1 only to keep the debug build fast.
    for (compression, level) in [(Compression::Zstd, None), (Compression::Gzip, Some(1))] {
        let info = write_layer(
            entries.clone(),
            compression,
            level,
            2,
            io::sink(),
            &WriteOptions::default(),
        )
        .unwrap();
        // One header, the data (a multiple of 512 bytes) and the end blocks.
        assert_eq!(info.uncompressed_size, 512 + 200 * 1000 * 1000 + 1024);
    }
    let growth = vm_hwm_kib().saturating_sub(before);
    println!("peak memory growth: {growth} KiB");
    assert!(growth < 64 * 1024, "peak memory grew by {growth} KiB");
}
