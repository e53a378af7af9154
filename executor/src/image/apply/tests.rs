//! Tests for layer apply: every entry type, whiteouts across layers, and a
//! malicious corpus (plus a randomized one) that checks nothing outside the
//! root changes. They run as root (CI does), as layer apply does in a build.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use super::confined::Resolver;
use super::{ApplyError, ApplyOptions, ApplyStats, apply_with};

const RESOLVERS: [Resolver; 2] = [Resolver::Openat2, Resolver::Walk];

/// A layer built in memory, with raw names where the `tar` crate would
/// refuse them.
struct Layer {
    builder: tar::Builder<Vec<u8>>,
    /// Where each header starts, for the randomized test's mutations.
    headers: Vec<usize>,
}

impl Layer {
    fn new() -> Self {
        Self {
            builder: tar::Builder::new(Vec::new()),
            headers: Vec::new(),
        }
    }

    fn header(kind: EntryType, mode: u32) -> Header {
        let mut header = Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_mtime(1_600_000_000);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(0);
        header
    }

    fn append(&mut self, header: &Header, data: &[u8]) {
        self.headers.push(self.builder.get_ref().len());
        self.builder.append(header, data).unwrap();
    }

    /// A GNU long name (`L`) or long link (`K`) entry.
    fn long(&mut self, kind: EntryType, value: &[u8]) {
        let mut header = Self::header(kind, 0);
        header.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        let mut data = value.to_vec();
        data.push(0);
        header.set_size(data.len() as u64);
        header.set_cksum();
        self.append(&header, &data);
    }

    /// Appends `header` named `name` (raw bytes, GNU long names past 100).
    fn raw(
        &mut self,
        mut header: Header,
        name: &[u8],
        link: Option<&[u8]>,
        data: &[u8],
    ) -> &mut Self {
        if name.len() > 100 {
            self.long(EntryType::GNULongName, name);
            header.as_old_mut().name.copy_from_slice(&name[..100]);
        } else {
            header.as_old_mut().name[..name.len()].copy_from_slice(name);
        }
        if let Some(link) = link {
            if link.len() > 100 {
                self.long(EntryType::GNULongLink, link);
                header.as_old_mut().linkname.copy_from_slice(&link[..100]);
            } else {
                header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
            }
        }
        header.set_size(data.len() as u64);
        header.set_cksum();
        self.append(&header, data);
        self
    }

    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        self.headers.push(self.builder.get_ref().len());
        self.builder
            .append_pax_extensions(records.iter().copied())
            .unwrap();
        self
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.raw(
            Self::header(EntryType::Regular, 0o644),
            name.as_bytes(),
            None,
            data,
        )
    }

    fn file_with(
        &mut self,
        name: &str,
        data: &[u8],
        mode: u32,
        owner: (u64, u64),
        mtime: u64,
    ) -> &mut Self {
        let mut header = Self::header(EntryType::Regular, mode);
        header.set_uid(owner.0);
        header.set_gid(owner.1);
        header.set_mtime(mtime);
        self.raw(header, name.as_bytes(), None, data)
    }

    fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.raw(
            Self::header(EntryType::Directory, mode),
            name.as_bytes(),
            None,
            b"",
        )
    }

    fn dir_with(&mut self, name: &str, mode: u32, mtime: u64) -> &mut Self {
        let mut header = Self::header(EntryType::Directory, mode);
        header.set_mtime(mtime);
        self.raw(header, name.as_bytes(), None, b"")
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(
            Self::header(EntryType::Symlink, 0o777),
            name.as_bytes(),
            Some(target.as_bytes()),
            b"",
        )
    }

    fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(
            Self::header(EntryType::Link, 0o644),
            name.as_bytes(),
            Some(target.as_bytes()),
            b"",
        )
    }

    fn node(&mut self, name: &str, kind: EntryType, major: u32, minor: u32) -> &mut Self {
        let mut header = Self::header(kind, 0o666);
        header.set_device_major(major).unwrap();
        header.set_device_minor(minor).unwrap();
        self.raw(header, name.as_bytes(), None, b"")
    }

    fn finish(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

/// A root to apply layers to, next to things that must never change: a
/// sentinel file and a directory `outside` (with a file `secret`).
struct Bed {
    _tmp: tempfile::TempDir,
    top: PathBuf,
    root: PathBuf,
    outside: PathBuf,
    before: BTreeMap<PathBuf, String>,
}

impl Bed {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().to_path_buf();
        let root = top.join("root");
        let outside = top.join("outside");
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir_all(outside.join("dir")).unwrap();
        std::fs::write(outside.join("secret"), "secret").unwrap();
        std::fs::write(top.join("sentinel"), "sentinel").unwrap();
        let before = snapshot(&top);
        Self {
            _tmp: tmp,
            top,
            root,
            outside,
            before,
        }
    }

    fn apply(&self, layer: &[u8], resolver: Resolver) -> Result<ApplyStats, ApplyError> {
        apply_with(layer, &self.root, &privileged(), resolver)
    }

    fn apply_opts(
        &self,
        layer: &[u8],
        opts: &ApplyOptions,
        resolver: Resolver,
    ) -> Result<ApplyStats, ApplyError> {
        apply_with(layer, &self.root, opts, resolver)
    }

    fn at(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }

    /// The absolute path of `outside`, as text for symlink targets.
    fn outside_abs(&self) -> String {
        self.outside.to_str().unwrap().to_owned()
    }

    /// Where `outside` lands when a layer names it under the root.
    fn outside_in_root(&self) -> PathBuf {
        self.root.join(self.outside.strip_prefix("/").unwrap())
    }

    /// Nothing next to the root changed: same entries, same contents, same
    /// modes, owners, link counts and times.
    fn assert_confined(&self, context: &str) {
        let now = snapshot(&self.top);
        assert_eq!(
            now, self.before,
            "something outside the root changed ({context})"
        );
    }
}

/// Everything under `top` but `top/root`, described.
fn snapshot(top: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![top.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path == top.join("root") {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let detail = if meta.is_dir() {
                todo.push(path.clone());
                "dir".to_owned()
            } else if meta.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&path).unwrap().display())
            } else {
                String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned()
            };
            let line = format!(
                "{:o} {}:{} n{} m{}.{} {detail}",
                meta.mode(),
                meta.uid(),
                meta.gid(),
                meta.nlink(),
                meta.mtime(),
                meta.mtime_nsec()
            );
            out.insert(path, line);
        }
    }
    out
}

fn privileged() -> ApplyOptions {
    assert!(
        rustix::process::geteuid().is_root(),
        "layer apply tests run as root, as CI does"
    );
    ApplyOptions {
        root_is_privileged: true,
        preserve_ownership: true,
        ignore_paths: Vec::new(),
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn lmeta(path: &Path) -> std::fs::Metadata {
    std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

fn lgetxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 1024];
    let n = rustix::fs::lgetxattr(path, name, &mut buf[..]).ok()?;
    buf.truncate(n);
    Some(buf)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

// ---------------------------------------------------------------------------
// Formats and entry types.

#[test]
fn detects_gzip_zstd_bzip2_xz_and_plain_tar_from_the_first_bytes() {
    let mut layer = Layer::new();
    layer.dir("etc/", 0o755).file("etc/hostname", b"box\n");
    let tar = layer.finish();
    let encodings = [
        ("plain", tar.clone()),
        ("gzip", gzip(&tar)),
        ("zstd", zstd::encode_all(tar.as_slice(), 3).unwrap()),
        ("bzip2", {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            e.write_all(&tar).unwrap();
            e.finish().unwrap()
        }),
        ("xz", {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(&tar).unwrap();
            e.finish().unwrap()
        }),
    ];
    for (what, data) in encodings {
        let bed = Bed::new();
        let stats = bed.apply(&data, Resolver::Openat2).unwrap();
        assert_eq!(read(&bed.at("etc/hostname")), "box\n", "{what}");
        assert_eq!(
            stats,
            ApplyStats {
                entries: 2,
                bytes: 4,
                whiteouts: 0
            },
            "{what}"
        );
    }
    let bed = Bed::new();
    // A corrupt xz stream is a read error.
    let xz = [0xfd, b'7', b'z', b'X', b'Z', 0, 1, 2, 3];
    let err = bed.apply(&xz, Resolver::Openat2).unwrap_err();
    assert!(matches!(err, ApplyError::Read(_)), "{err}");
    // An empty stream is an empty layer.
    assert_eq!(
        bed.apply(b"", Resolver::Openat2).unwrap(),
        ApplyStats::default()
    );
    // A corrupt gzip stream is a read error, not a panic.
    let mut bad = gzip(&tar);
    let middle = bad.len() / 2;
    bad[middle] ^= 0xff;
    assert!(bed.apply(&bad, Resolver::Openat2).is_err());
}

#[test]
fn decompress_hands_back_the_tar_stream() {
    let mut layer = Layer::new();
    layer.file("a", b"hello");
    let tar = layer.finish();
    for data in [
        tar.clone(),
        gzip(&tar),
        zstd::encode_all(tar.as_slice(), 1).unwrap(),
    ] {
        let mut out = Vec::new();
        super::decompress(data.as_slice())
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, tar);
    }
}

#[test]
fn files_get_mode_owner_and_times_after_their_data() {
    let bed = Bed::new();
    let mut layer = Layer::new();
    layer
        .file_with(
            "usr/bin/tool",
            b"#!/bin/sh\n",
            0o4755,
            (1234, 5678),
            1_500_000_000,
        )
        .file_with("usr/bin/locked", b"x", 0o400, (0, 0), 1_500_000_001)
        .pax(&[("mtime", b"1600000000.5"), ("atime", b"1700000000.25")])
        .file("precise", b"");
    let stats = bed.apply(&layer.finish(), Resolver::Openat2).unwrap();
    assert_eq!(stats.bytes, 11);

    let tool = lmeta(&bed.at("usr/bin/tool"));
    assert_eq!(
        tool.permissions().mode() & 0o7777,
        0o4755,
        "setuid kept after chown"
    );
    assert_eq!((tool.uid(), tool.gid()), (1234, 5678));
    assert_eq!(tool.mtime(), 1_500_000_000);
    assert_eq!(read(&bed.at("usr/bin/tool")), "#!/bin/sh\n");
    assert_eq!(
        lmeta(&bed.at("usr/bin/locked")).permissions().mode() & 0o7777,
        0o400
    );

    let precise = lmeta(&bed.at("precise"));
    assert_eq!(
        (precise.mtime(), precise.mtime_nsec()),
        (1_600_000_000, 500_000_000)
    );
    assert_eq!(
        (precise.atime(), precise.atime_nsec()),
        (1_700_000_000, 250_000_000)
    );

    // Parents the layer does not list are made 0755.
    assert_eq!(lmeta(&bed.at("usr")).permissions().mode() & 0o7777, 0o755);
    bed.assert_confined("files");
}

#[test]
fn without_preserve_ownership_files_belong_to_the_applier() {
    let bed = Bed::new();
    let mut layer = Layer::new();
    layer.file_with("f", b"x", 0o644, (1234, 5678), 1);
    let opts = ApplyOptions {
        preserve_ownership: false,
        ..privileged()
    };
    bed.apply_opts(&layer.finish(), &opts, Resolver::Openat2)
        .unwrap();
    assert_eq!(lmeta(&bed.at("f")).uid(), 0);
}

#[test]
fn directories_get_mode_and_mtime_after_their_contents() {
    let bed = Bed::new();
    let mut layer = Layer::new();
    layer
        .dir_with("tmp/", 0o1777, 1_400_000_000)
        .file("tmp/a", b"a")
        .dir_with("ro/", 0o555, 1_400_000_001)
        .file("ro/inside", b"still written")
        .dir("ro/sub/", 0o700);
    bed.apply(&layer.finish(), Resolver::Openat2).unwrap();
    let tmp = lmeta(&bed.at("tmp"));
    assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
    assert_eq!(tmp.mtime(), 1_400_000_000);
    let ro = lmeta(&bed.at("ro"));
    assert_eq!(ro.permissions().mode() & 0o7777, 0o555);
    assert_eq!(ro.mtime(), 1_400_000_001);
    assert_eq!(read(&bed.at("ro/inside")), "still written");
}

#[test]
fn symlinks_are_created_as_written() {
    let bed = Bed::new();
    let mut layer = Layer::new();
    let mut header = Layer::header(EntryType::Symlink, 0o777);
    header.set_uid(42);
    header.set_gid(43);
    header.set_mtime(1_300_000_000);
    layer
        .symlink("rel", "../x/y")
        .symlink("abs", "/etc/passwd")
        .raw(header, b"owned", Some(b"target"), b"");
    bed.apply(&layer.finish(), Resolver::Openat2).unwrap();
    assert_eq!(
        std::fs::read_link(bed.at("rel")).unwrap(),
        Path::new("../x/y")
    );
    assert_eq!(
        std::fs::read_link(bed.at("abs")).unwrap(),
        Path::new("/etc/passwd")
    );
    let owned = lmeta(&bed.at("owned"));
    assert!(owned.file_type().is_symlink());
    assert_eq!(
        (owned.uid(), owned.gid(), owned.mtime()),
        (42, 43, 1_300_000_000)
    );
}

#[test]
fn hard_links_share_an_inode_with_earlier_entries() {
    let bed = Bed::new();
    let mut lower = Layer::new();
    lower
        .file("a", b"data")
        .hardlink("b", "a")
        .symlink("s", "a");
    bed.apply(&lower.finish(), Resolver::Openat2).unwrap();
    let mut upper = Layer::new();
    upper
        .hardlink("dir/c", "/a")
        .hardlink("hs", "s")
        .hardlink("b", "a");
    bed.apply(&upper.finish(), Resolver::Openat2).unwrap();
    let ino = lmeta(&bed.at("a")).ino();
    assert_eq!(lmeta(&bed.at("b")).ino(), ino);
    assert_eq!(lmeta(&bed.at("dir/c")).ino(), ino);
    assert_eq!(lmeta(&bed.at("a")).nlink(), 3);
    // A hard link to a symlink links the symlink, as link(2) does.
    let hs = lmeta(&bed.at("hs"));
    assert!(hs.file_type().is_symlink());
    assert_eq!(hs.ino(), lmeta(&bed.at("s")).ino());
}

#[test]
fn device_nodes_and_fifos() {
    let mut layer = Layer::new();
    layer
        .node("dev/null", EntryType::Char, 1, 3)
        .node("dev/loop9", EntryType::Block, 7, 9)
        .node("run/pipe", EntryType::Fifo, 0, 0);
    let layer = layer.finish();

    let bed = Bed::new();
    bed.apply(&layer, Resolver::Openat2).unwrap();
    let null = lmeta(&bed.at("dev/null"));
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    assert_eq!(null.permissions().mode() & 0o7777, 0o666);
    let loop9 = lmeta(&bed.at("dev/loop9"));
    assert!(loop9.file_type().is_block_device());
    assert_eq!(loop9.rdev(), rustix::fs::makedev(7, 9));
    assert!(lmeta(&bed.at("run/pipe")).file_type().is_fifo());

    // Not running as root: devices are skipped, fifos need no privilege.
    let bed = Bed::new();
    let opts = ApplyOptions {
        root_is_privileged: false,
        ..privileged()
    };
    bed.apply_opts(&layer, &opts, Resolver::Openat2).unwrap();
    assert!(!exists(&bed.at("dev/null")));
    assert!(!exists(&bed.at("dev/loop9")));
    assert!(lmeta(&bed.at("run/pipe")).file_type().is_fifo());
}

/// A v2 `security.capability` value (effective; CAP_DAC_OVERRIDE and
/// CAP_FOWNER permitted): its mask byte is 0x0a, a newline, which the `tar`
/// crate's own PAX reader would split on.
const CAPABILITY: [u8; 20] = [
    0x01, 0, 0, 0x02, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn xattr_layer() -> Vec<u8> {
    let mut layer = Layer::new();
    layer
        .pax(&[
            ("SCHILY.xattr.security.capability", &CAPABILITY[..]),
            ("SCHILY.xattr.trusted.note", b"t"),
            ("SCHILY.xattr.user.comment", b"hello"),
        ])
        .file_with("bin/ping", b"ELF", 0o755, (1000, 1000), 1)
        .pax(&[("SCHILY.xattr.user.dir", b"d")])
        .dir("data/", 0o755)
        .pax(&[("SCHILY.xattr.trusted.link", b"l")])
        .symlink("link", "bin/ping");
    layer.finish()
}

#[test]
fn xattrs_including_security_capability_survive_chown() {
    let bed = Bed::new();
    bed.apply(&xattr_layer(), Resolver::Openat2).unwrap();
    let ping = bed.at("bin/ping");
    assert_eq!(lmeta(&ping).uid(), 1000);
    assert_eq!(
        lgetxattr(&ping, "security.capability").as_deref(),
        Some(&CAPABILITY[..])
    );
    assert_eq!(lgetxattr(&ping, "trusted.note").as_deref(), Some(&b"t"[..]));
    assert_eq!(
        lgetxattr(&ping, "user.comment").as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(
        lgetxattr(&bed.at("data"), "user.dir").as_deref(),
        Some(&b"d"[..])
    );
    assert_eq!(
        lgetxattr(&bed.at("link"), "trusted.link").as_deref(),
        Some(&b"l"[..])
    );
}

#[test]
fn unprivileged_apply_skips_trusted_xattrs_but_keeps_capabilities() {
    let bed = Bed::new();
    let opts = ApplyOptions {
        root_is_privileged: false,
        ..privileged()
    };
    bed.apply_opts(&xattr_layer(), &opts, Resolver::Openat2)
        .unwrap();
    let ping = bed.at("bin/ping");
    assert_eq!(
        lgetxattr(&ping, "security.capability").as_deref(),
        Some(&CAPABILITY[..])
    );
    assert_eq!(lgetxattr(&ping, "trusted.note"), None);
    assert_eq!(
        lgetxattr(&ping, "user.comment").as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(lgetxattr(&bed.at("link"), "trusted.link"), None);
}

// ---------------------------------------------------------------------------
// Layers on layers.

#[test]
fn whiteouts_delete_what_lower_layers_put_there() {
    for resolver in RESOLVERS {
        let bed = Bed::new();
        let mut lower = Layer::new();
        lower
            .file("a/b/c", b"c")
            .file("a/d", b"d")
            .file("e", b"e")
            .symlink("a/link", "/a/d");
        // A deep tree, removed without recursion.
        lower.file(&format!("{}leaf", "deep/".repeat(300)), b"leaf");
        bed.apply(&lower.finish(), resolver).unwrap();

        let mut upper = Layer::new();
        upper
            .file("a/.wh.b", b"")
            .file(".wh.e", b"")
            .file("a/.wh.link", b"")
            .file(".wh.deep", b"")
            .file("a/.wh.never-there", b"");
        let stats = bed.apply(&upper.finish(), resolver).unwrap();
        assert_eq!(stats.whiteouts, 5);
        assert!(!exists(&bed.at("a/b")));
        assert!(!exists(&bed.at("e")));
        assert!(!exists(&bed.at("a/link")));
        assert!(!exists(&bed.at("deep")));
        assert_eq!(read(&bed.at("a/d")), "d", "the link's target stays");
        assert!(!exists(&bed.at("a/.wh.b")), "whiteouts are not files");
        bed.assert_confined("whiteouts");
    }
}

#[test]
fn opaque_directories_keep_only_this_layers_entries() {
    for resolver in RESOLVERS {
        let bed = Bed::new();
        let mut lower = Layer::new();
        lower
            .file("d/old", b"old")
            .file("d/sub/lower", b"lower")
            .file("d/gone/x", b"x")
            .file("other/keep", b"keep");
        bed.apply(&lower.finish(), resolver).unwrap();

        let mut upper = Layer::new();
        upper
            .dir("d/", 0o755)
            .file("d/early", b"before the marker")
            .dir("d/sub/", 0o755)
            .file("d/sub/new", b"new")
            .file("d/.wh..wh..opq", b"")
            .file("d/late", b"after the marker");
        let stats = bed.apply(&upper.finish(), resolver).unwrap();
        assert_eq!(stats.whiteouts, 1);
        assert!(!exists(&bed.at("d/old")));
        assert!(!exists(&bed.at("d/gone")));
        assert!(
            !exists(&bed.at("d/sub/lower")),
            "lower content of a kept dir goes too"
        );
        assert_eq!(read(&bed.at("d/early")), "before the marker");
        assert_eq!(read(&bed.at("d/sub/new")), "new");
        assert_eq!(read(&bed.at("d/late")), "after the marker");
        assert_eq!(read(&bed.at("other/keep")), "keep");
        bed.assert_confined("opaque");
    }
}

#[test]
fn entries_replace_entries_of_another_type() {
    let bed = Bed::new();
    let mut lower = Layer::new();
    lower
        .file("d/x", b"x")
        .file("f", b"f")
        .file("keep/old", b"old")
        .file("target", b"T")
        .symlink("s", "target")
        .symlink("sd", "keep");
    bed.apply(&lower.finish(), Resolver::Openat2).unwrap();

    let mut upper = Layer::new();
    upper
        .file("d", b"now a file")
        .dir("f/", 0o755)
        .dir("keep/", 0o700)
        .file("s", b"new")
        .dir("sd/", 0o755);
    bed.apply(&upper.finish(), Resolver::Openat2).unwrap();
    assert_eq!(read(&bed.at("d")), "now a file");
    assert!(lmeta(&bed.at("f")).is_dir());
    assert_eq!(read(&bed.at("keep/old")), "old", "a dir over a dir merges");
    assert_eq!(lmeta(&bed.at("keep")).permissions().mode() & 0o7777, 0o700);
    assert!(lmeta(&bed.at("s")).is_file(), "the symlink is replaced");
    assert_eq!(read(&bed.at("s")), "new");
    assert_eq!(read(&bed.at("target")), "T", "not written through");
    assert!(
        lmeta(&bed.at("sd")).is_dir(),
        "a dir over a symlink replaces it"
    );
    assert!(exists(&bed.at("keep/old")));
}

/// The parent directory kept from one entry to the next (see `Applier`)
/// serves only entries in the same directory: once the layer has
/// replaced or deleted the directory, an entry in it goes through the
/// symlink that took its name, confined to the root, or lands in a new
/// directory.
#[test]
fn a_parent_replaced_within_the_layer_is_looked_up_again() {
    for resolver in RESOLVERS {
        let bed = Bed::new();
        let mut layer = Layer::new();
        layer
            .file("a/x", b"x")
            .symlink("a", &bed.outside_abs())
            .file("a/y", b"y")
            .file("b/x", b"x")
            .file(".wh.b", b"")
            .file("b/y", b"y")
            .file("c/x", b"x")
            .file("c", b"now a file");
        bed.apply(&layer.finish(), resolver).unwrap();
        assert!(lmeta(&bed.at("a")).file_type().is_symlink(), "{resolver:?}");
        assert_eq!(read(&bed.outside_in_root().join("y")), "y", "{resolver:?}");
        assert!(!exists(&bed.outside_in_root().join("x")), "{resolver:?}");
        assert!(!exists(&bed.at("b/x")), "{resolver:?}");
        assert_eq!(read(&bed.at("b/y")), "y", "{resolver:?}");
        assert_eq!(read(&bed.at("c")), "now a file", "{resolver:?}");
        bed.assert_confined(&format!("{resolver:?}"));
    }
}

/// Entries are given the layer's owner even where they are made with it
/// already (root's files, as root: no chown then), except in a setgid
/// directory, whose group new entries take as made.
#[test]
fn entries_in_a_setgid_directory_get_the_layers_group() {
    let bed = Bed::new();
    let shared = bed.at("shared");
    std::fs::create_dir(&shared).unwrap();
    std::os::unix::fs::chown(&shared, Some(0), Some(4321)).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o2775)).unwrap();
    let mut layer = Layer::new();
    layer
        .file_with("shared/file", b"f", 0o644, (0, 0), 1_500_000_000)
        .symlink("shared/link", "file")
        .file_with("plain", b"p", 0o644, (0, 0), 1_500_000_000);
    bed.apply(&layer.finish(), Resolver::Openat2).unwrap();
    for name in ["shared/file", "shared/link", "plain"] {
        let meta = lmeta(&bed.at(name));
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{name}");
    }
}

#[test]
fn ignore_paths_are_left_alone() {
    let bed = Bed::new();
    let opts = ApplyOptions {
        ignore_paths: vec![PathBuf::from("/proc"), PathBuf::from("/var/run/secrets/")],
        ..privileged()
    };
    let mut lower = Layer::new();
    lower
        .file("var/run/secrets/token", b"token")
        .file("var/run/other", b"other")
        .file("var/lib/x", b"x");
    bed.apply(&lower.finish(), Resolver::Openat2).unwrap();
    std::fs::create_dir(bed.at("proc")).unwrap();
    std::fs::write(bed.at("proc/status"), "host").unwrap();

    let mut upper = Layer::new();
    upper
        .file("proc/cpuinfo", b"from the layer")
        .file("proc/.wh.status", b"")
        .file(".wh.var", b"");
    bed.apply_opts(&upper.finish(), &opts, Resolver::Openat2)
        .unwrap();
    assert!(!exists(&bed.at("proc/cpuinfo")));
    assert_eq!(read(&bed.at("proc/status")), "host");
    assert_eq!(read(&bed.at("var/run/secrets/token")), "token");
    assert!(!exists(&bed.at("var/run/other")));
    assert!(!exists(&bed.at("var/lib")));

    let mut opaque_root = Layer::new();
    opaque_root.file(".wh..wh..opq", b"").file("new", b"n");
    bed.apply_opts(&opaque_root.finish(), &opts, Resolver::Openat2)
        .unwrap();
    assert_eq!(read(&bed.at("proc/status")), "host");
    assert_eq!(read(&bed.at("var/run/secrets/token")), "token");
    assert_eq!(read(&bed.at("new")), "n");
}

#[test]
fn long_names_through_gnu_and_pax_headers() {
    let bed = Bed::new();
    let deep = format!("{}file", "directory-name/".repeat(20));
    let mut layer = Layer::new();
    layer.file(&deep, b"gnu");
    let pax_name = format!("{}pax", "another-directory/".repeat(15));
    layer
        .pax(&[("path", pax_name.as_bytes())])
        .file("short-name-in-header", b"pax");
    let link_target = format!("/{deep}");
    layer
        .pax(&[("linkpath", link_target.as_bytes())])
        .symlink("long-link", "x");
    bed.apply(&layer.finish(), Resolver::Openat2).unwrap();
    assert_eq!(read(&bed.at(&deep)), "gnu");
    assert_eq!(read(&bed.at(&pax_name)), "pax");
    assert!(!exists(&bed.at("short-name-in-header")));
    assert_eq!(
        std::fs::read_link(bed.at("long-link")).unwrap(),
        PathBuf::from(link_target)
    );
}

/// A reader that counts what is taken from it.
struct Counting<R> {
    inner: R,
    taken: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.taken += n as u64;
        Ok(n)
    }
}

#[test]
fn reads_the_stream_to_its_end() {
    let bed = Bed::new();
    let mut layer = Layer::new();
    layer.file("a", b"a");
    let mut data = layer.finish();
    data.extend_from_slice(&[0u8; 10_000]);
    let mut reader = Counting {
        inner: data.as_slice(),
        taken: 0,
    };
    apply_with(&mut reader, &bed.root, &privileged(), Resolver::Openat2).unwrap();
    assert_eq!(reader.taken, data.len() as u64);
}

// ---------------------------------------------------------------------------
// The malicious corpus: each case checks the outcome and that nothing next
// to the root changed, with both path resolvers.

fn assert_refused(result: Result<ApplyStats, ApplyError>, entry: &str) {
    match result {
        Err(err @ (ApplyError::Refused { .. } | ApplyError::HardLink { .. })) => {
            assert!(err.to_string().contains(entry), "{err} names {entry}");
        }
        other => panic!("expected {entry} to be refused, got {other:?}"),
    }
}

#[test]
fn dotdot_names_are_refused() {
    for resolver in RESOLVERS {
        for name in ["../../etc/x", "a/../../x", "..", "a/b/../c"] {
            let bed = Bed::new();
            let mut layer = Layer::new();
            layer.file(name, b"pwned");
            assert_refused(bed.apply(&layer.finish(), resolver), name);
            bed.assert_confined(name);
        }
    }
}

#[test]
fn absolute_names_are_rooted() {
    for resolver in RESOLVERS {
        let bed = Bed::new();
        let outside_file = format!("{}/planted", bed.outside_abs());
        let mut layer = Layer::new();
        layer
            .file("/abs/path", b"inside")
            .file("//double", b"inside")
            .file(&outside_file, b"inside");
        bed.apply(&layer.finish(), resolver).unwrap();
        assert_eq!(read(&bed.at("abs/path")), "inside");
        assert_eq!(read(&bed.at("double")), "inside");
        assert_eq!(read(&bed.outside_in_root().join("planted")), "inside");
        bed.assert_confined("absolute names");
    }
}

#[test]
fn absolute_symlinks_are_followed_inside_the_root() {
    for resolver in RESOLVERS {
        let bed = Bed::new();
        let unique = format!("executor-apply-test-{}", std::process::id());
        let mut layer = Layer::new();
        layer
            .symlink("link", &bed.outside_abs())
            .file("link/secret", b"pwned")
            .file("link/dir/new", b"pwned")
            .symlink("etc-link", "/etc")
            .file(&format!("etc-link/{unique}"), b"pwned");
        bed.apply(&layer.finish(), resolver).unwrap();
        assert_eq!(read(&bed.outside_in_root().join("secret")), "pwned");
        assert_eq!(read(&bed.outside_in_root().join("dir/new")), "pwned");
        assert_eq!(read(&bed.at(&format!("etc/{unique}"))), "pwned");
        assert!(!Path::new("/etc").join(&unique).exists());
        bed.assert_confined("absolute symlink");
    }
}

#[test]
fn escaping_relative_symlinks_stop_at_the_root() {
    for resolver in RESOLVERS {
        let bed = Bed::new();
        let mut layer = Layer::new();
        let unique = format!("executor-apply-test-{}", std::process::id());
        layer
            .symlink("a", "../../..")
            .file(&format!("a/{unique}"), b"at the root")
            .dir("deep/er/", 0o755)
            .symlink("deep/er/up", "../../../../../outside")
            .file("deep/er/up/secret", b"pwned");
        bed.apply(&layer.finish(), resolver).unwrap();
        assert_eq!(read(&bed.at(&unique)), "at the root");
        assert!(!Path::new("/").join(&unique).exists());
        assert_eq!(read(&bed.at("outside/secret")), "pwned");
        bed.assert_confined("relative symlink");
    }
}

#[test]
fn symlink_then_file_in_one_layer_replaces_the_symlink() {
    for resolver in RESOLVERS {
        let bed = Bed::new();
        let secret = format!("{}/secret", bed.outside_abs());
        let mut layer = Layer::new();
        layer
            .symlink("x", &secret)
            .file("x", b"new")
            .dir("d/", 0o755)
            .file("d/f", b"f")
            .symlink("d", &bed.outside_abs())
            .file("d/g", b"through the swapped dir")
            .symlink("y", &secret)
            .hardlink("z", "y")
            .symlink("w", &secret)
            .dir("w/", 0o755);
        bed.apply(&layer.finish(), resolver).unwrap();
        assert!(lmeta(&bed.at("x")).is_file());
        assert_eq!(read(&bed.at("x")), "new");
        assert!(lmeta(&bed.at("d")).file_type().is_symlink());
        assert_eq!(
            read(&bed.outside_in_root().join("g")),
            "through the swapped dir"
        );
        assert!(lmeta(&bed.at("z")).file_type().is_symlink());
        assert!(lmeta(&bed.at("w")).is_dir());
        bed.assert_confined("symlink then file");
    }
}

/// Builds a layer for a given bed (whose outside path it may name).
type MakeLayer = Box<dyn Fn(&Bed) -> Layer>;

#[test]
fn hard_links_cannot_reach_outside_the_root() {
    for resolver in RESOLVERS {
        let secret = |bed: &Bed| format!("{}/secret", bed.outside_abs());
        let cases: Vec<(&str, MakeLayer)> = vec![
            (
                "/etc/passwd",
                Box::new(|_| {
                    let mut l = Layer::new();
                    l.hardlink("h", "/etc/passwd");
                    l
                }),
            ),
            (
                "../outside/secret",
                Box::new(|_| {
                    let mut l = Layer::new();
                    l.hardlink("h", "../outside/secret");
                    l
                }),
            ),
            (
                "outside/secret",
                Box::new(move |bed| {
                    let mut l = Layer::new();
                    l.hardlink("h", &secret(bed));
                    l
                }),
            ),
            (
                "l/secret",
                Box::new(|bed| {
                    let mut l = Layer::new();
                    l.symlink("l", &bed.outside_abs()).hardlink("h", "l/secret");
                    l
                }),
            ),
            (
                "up/outside/secret",
                Box::new(|_| {
                    let mut l = Layer::new();
                    l.symlink("up", "../../..")
                        .hardlink("h", "up/outside/secret");
                    l
                }),
            ),
            (
                "dir",
                Box::new(|_| {
                    let mut l = Layer::new();
                    l.dir("dir/", 0o755).hardlink("h", "dir");
                    l
                }),
            ),
        ];
        for (target, layer) in &cases {
            let bed = Bed::new();
            let result = bed.apply(&layer(&bed).finish(), resolver);
            assert_refused(result, target);
            assert!(!exists(&bed.at("h")), "{target}");
            bed.assert_confined(target);
        }

        // With an /etc/passwd under the root, the link goes to that one.
        let bed = Bed::new();
        let mut layer = Layer::new();
        layer
            .file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n")
            .hardlink("h", "/etc/passwd");
        bed.apply(&layer.finish(), resolver).unwrap();
        let linked = lmeta(&bed.at("h"));
        assert_eq!(linked.ino(), lmeta(&bed.at("etc/passwd")).ino());
        assert_ne!(linked.ino(), lmeta(Path::new("/etc/passwd")).ino());
        bed.assert_confined("hard link to the root's own /etc/passwd");
    }
}

#[test]
fn whiteouts_naming_no_file_are_refused() {
    for resolver in RESOLVERS {
        for name in ["a/.wh...", "a/.wh..", "a/.wh.", ".wh..."] {
            let bed = Bed::new();
            let mut layer = Layer::new();
            layer.file("a/keep", b"keep").file(name, b"");
            assert_refused(bed.apply(&layer.finish(), resolver), name);
            assert_eq!(read(&bed.at("a/keep")), "keep");
            bed.assert_confined(name);
        }
    }
}

#[test]
fn whiteouts_through_symlinks_stay_inside() {
    for resolver in RESOLVERS {
        let bed = Bed::new();
        let mut layer = Layer::new();
        layer
            .symlink("l", &bed.outside_abs())
            .file("l/.wh.secret", b"")
            .file("l/.wh.dir", b"")
            .symlink("m", "../../outside")
            .file("m/.wh..wh..opq", b"")
            .symlink("n", "/")
            .file("n/.wh.sentinel", b"");
        bed.apply(&layer.finish(), resolver).unwrap();
        assert!(lmeta(&bed.at("l")).file_type().is_symlink());
        bed.assert_confined("whiteouts through symlinks");
    }
}

#[test]
fn symlink_loops_are_errors() {
    for resolver in RESOLVERS {
        let bed = Bed::new();
        let mut layer = Layer::new();
        layer.symlink("a", "b").symlink("b", "a").file("a/x", b"x");
        let err = bed.apply(&layer.finish(), resolver).unwrap_err();
        assert!(matches!(err, ApplyError::Entry { .. }), "{err}");
        assert!(err.to_string().contains("a/x"), "{err}");
        bed.assert_confined("loop");
    }
}

#[test]
fn huge_pax_size_ends_as_truncated() {
    for resolver in RESOLVERS {
        let bed = Bed::new();
        let mut layer = Layer::new();
        layer
            .pax(&[("size", b"99999999999999")])
            .file("big", b"tiny")
            .file("after", b"after");
        let err = bed.apply(&layer.finish(), resolver).unwrap_err();
        assert!(matches!(err, ApplyError::Truncated { .. }), "{err}");
        assert!(err.to_string().contains("big"), "{err}");
        bed.assert_confined("huge PAX size");

        let mut layer = Layer::new();
        layer
            .pax(&[("size", b"999999999999999999999999")])
            .file("bigger", b"tiny");
        assert_refused(bed.apply(&layer.finish(), resolver), "bigger");
        bed.assert_confined("PAX size past u64");
    }
}

/// A tar prefix followed by zeros, up to `limit` bytes, counting what is
/// taken: a stand-in for a bomb that decompresses without end.
struct Endless {
    prefix: Vec<u8>,
    limit: u64,
    taken: u64,
}

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.limit - self.taken;
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        for (i, b) in buf[..n].iter_mut().enumerate() {
            let at = usize::try_from(self.taken).unwrap() + i;
            *b = self.prefix.get(at).copied().unwrap_or(0);
        }
        self.taken += n as u64;
        Ok(n)
    }
}

#[test]
fn huge_extension_headers_are_refused_after_a_bounded_read() {
    for kind in [
        EntryType::XHeader,
        EntryType::GNULongName,
        EntryType::GNULongLink,
    ] {
        let bed = Bed::new();
        let mut layer = Layer::new();
        layer.file("first", b"ok");
        let mut header = Header::new_ustar();
        if kind != EntryType::XHeader {
            header = Header::new_gnu();
        }
        header.set_entry_type(kind);
        header.set_size(1 << 40);
        header.set_cksum();
        layer.append(&header, b"");
        let mut reader = Endless {
            prefix: layer.builder.into_inner().unwrap(),
            limit: 256 << 20,
            taken: 0,
        };
        let err = apply_with(&mut reader, &bed.root, &privileged(), Resolver::Openat2).unwrap_err();
        assert!(
            matches!(&err, ApplyError::HeadersTooLarge { after, .. } if after == "first"),
            "{kind:?}: {err}"
        );
        assert!(
            reader.taken < 8 << 20,
            "{kind:?}: read {} bytes",
            reader.taken
        );
        assert_eq!(read(&bed.at("first")), "ok");
        bed.assert_confined("huge header");
    }
}

#[test]
fn overlong_names_are_refused() {
    for resolver in RESOLVERS {
        let bed = Bed::new();
        let long_path = "ab/".repeat(1500);
        let long_component = "c".repeat(300);
        for name in [long_path.as_str(), long_component.as_str()] {
            let mut layer = Layer::new();
            layer.file(name, b"x");
            assert_refused(bed.apply(&layer.finish(), resolver), &name[..50]);
        }
        let mut layer = Layer::new();
        layer.hardlink("h", &long_path);
        assert_refused(bed.apply(&layer.finish(), resolver), "h");
        // Long but within the limits: applied.
        let fine = format!("{}end", "0123456789/".repeat(300));
        let mut layer = Layer::new();
        layer.file(&fine, b"deep");
        bed.apply(&layer.finish(), resolver).unwrap();
        assert_eq!(read(&bed.at(&fine)), "deep");
        bed.assert_confined("long names");
    }
}

#[test]
fn unsupported_entry_types_and_bad_numbers_are_refused() {
    let bed = Bed::new();
    let mut layer = Layer::new();
    layer.raw(
        Layer::header(EntryType::new(b'V'), 0o644),
        b"volume",
        None,
        b"",
    );
    assert_refused(bed.apply(&layer.finish(), Resolver::Openat2), "volume");

    let mut layer = Layer::new();
    let mut header = Layer::header(EntryType::Regular, 0o644);
    header.as_old_mut().mode = *b"zzzzzzz\0";
    layer.raw(header, b"bad-mode", None, b"");
    assert_refused(bed.apply(&layer.finish(), Resolver::Openat2), "bad-mode");

    let mut layer = Layer::new();
    layer.pax(&[("uid", b"4294967295")]).file("bad-owner", b"");
    assert_refused(bed.apply(&layer.finish(), Resolver::Openat2), "bad-owner");

    let mut layer = Layer::new();
    layer.pax(&[("path", b"a\0b")]).file("nul", b"");
    assert_refused(bed.apply(&layer.finish(), Resolver::Openat2), "a");
    bed.assert_confined("bad headers");
}

// ---------------------------------------------------------------------------
// Randomized: generated and mutated layers must never panic nor change
// anything outside the root.

/// xorshift64*: a small deterministic generator, so a failure names a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

fn random_layer(rng: &mut Rng, outside: &str) -> (Vec<u8>, Vec<usize>) {
    let secret = format!("{outside}/secret");
    let pieces = [
        "a",
        "b",
        "l",
        ".",
        "",
        ".wh.a",
        ".wh.l",
        ".wh..wh..opq",
        outside,
        "outside",
        "secret",
    ];
    // Refused outright, so rarer: most layers should get far.
    let rare = ["..", ".wh...", ".wh."];
    let targets = [
        "/",
        "..",
        "../..",
        "../../..",
        "../../../outside",
        outside,
        &secret,
        "a",
        "l",
        "l/..",
        ".",
        "b/a",
    ];
    let name = |rng: &mut Rng| {
        let depth = 1 + rng.below(4);
        let mut parts: Vec<&str> = (0..depth)
            .map(|_| {
                if rng.below(40) == 0 {
                    rng.pick(&rare)
                } else {
                    rng.pick(&pieces)
                }
            })
            .collect();
        if rng.below(4) == 0 {
            parts.insert(0, "");
        }
        parts.join("/")
    };
    let mut layer = Layer::new();
    for _ in 0..=rng.below(12) {
        let path = name(rng);
        match rng.below(9) {
            0 | 1 => {
                layer.file(&path, b"data");
            }
            2 => {
                layer.dir(&path, 0o755);
            }
            3 => {
                let target = rng.pick(&targets);
                layer.symlink(&path, target);
            }
            4 => {
                let target = if rng.below(2) == 0 {
                    name(rng)
                } else {
                    rng.pick(&targets).to_owned()
                };
                layer.hardlink(&path, &target);
            }
            5 => {
                let kind = [EntryType::Fifo, EntryType::Char, EntryType::Block][rng.below(3)];
                layer.node(&path, kind, 1, 3);
            }
            6 => {
                let size = ["4", "0", "99999999999", "x"][rng.below(4)];
                let pax_path = name(rng);
                layer
                    .pax(&[
                        ("path", pax_path.as_bytes()),
                        ("size", size.as_bytes()),
                        ("SCHILY.xattr.user.x", b"\n\n"),
                    ])
                    .file(&path, b"data");
            }
            7 => {
                let target = rng.pick(&targets);
                layer
                    .pax(&[("linkpath", target.as_bytes())])
                    .symlink(&path, "x");
            }
            _ => {
                let target = if rng.below(10) == 0 {
                    rng.pick(&rare)
                } else {
                    rng.pick(&pieces)
                };
                layer.file(&format!("{path}/.wh.{target}"), b"");
            }
        }
    }
    let headers = layer.headers.clone();
    (layer.finish(), headers)
}

fn mutate(rng: &mut Rng, data: &mut Vec<u8>, headers: &[usize]) {
    match rng.below(5) {
        0 => {}
        1 => {
            let cut = rng.below(data.len() + 1);
            data.truncate(cut);
        }
        _ => {
            for _ in 0..=rng.below(8) {
                let at = if rng.below(2) == 0 && !headers.is_empty() {
                    // In a header, where names, sizes and types are.
                    headers[rng.below(headers.len())] + rng.below(512)
                } else {
                    rng.below(data.len())
                };
                if let Some(byte) = data.get_mut(at) {
                    *byte = match rng.below(4) {
                        0 => b'/',
                        1 => b'.',
                        2 => 0,
                        _ => u8::try_from(rng.below(256)).unwrap(),
                    };
                }
            }
            // Mostly fix the checksums, so mutations get past them.
            if rng.below(4) != 0 {
                for &at in headers {
                    if let Some(block) = data.get_mut(at..at + 512) {
                        let mut header = Header::new_old();
                        header.as_mut_bytes().copy_from_slice(block);
                        header.set_cksum();
                        block.copy_from_slice(header.as_bytes());
                    }
                }
            }
        }
    }
}

#[test]
fn randomized_layers_never_escape_the_root_nor_panic() {
    let iterations: u64 = std::env::var("APPLY_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(250);
    let host_names = ["a", "b", "l", "secret", "outside"];
    let host_before: Vec<bool> = host_names
        .iter()
        .map(|n| Path::new("/etc").join(n).exists() || Path::new("/").join(n).exists())
        .collect();
    for resolver in RESOLVERS {
        for seed in 1..=iterations {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let bed = Bed::new();
            let layers = 1 + rng.below(3);
            for _ in 0..layers {
                let (mut data, headers) = random_layer(&mut rng, &bed.outside_abs());
                mutate(&mut rng, &mut data, &headers);
                if rng.below(5) == 0 {
                    data = gzip(&data);
                }
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    bed.apply(&data, resolver)
                }));
                assert!(outcome.is_ok(), "seed {seed} ({resolver:?}) panicked");
            }
            bed.assert_confined(&format!("seed {seed}, {resolver:?}"));
        }
    }
    let host_after: Vec<bool> = host_names
        .iter()
        .map(|n| Path::new("/etc").join(n).exists() || Path::new("/").join(n).exists())
        .collect();
    assert_eq!(host_before, host_after, "files appeared in / or /etc");
}
