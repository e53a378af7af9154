//! Cache keys: what a build step's key is made of, and how it is encoded.
//!
//! A key is the sha256 of a versioned, framed encoding of the parent step's
//! key and the step's typed inputs ([`Step`]). Every part is written as a
//! type byte, its length as a big-endian u64 and its bytes, lists with their
//! count and options with a presence byte, so two different inputs never
//! encode to the same bytes. Files enter a key only as a [`TreeHash`]: path,
//! type, mode, owner, link target, xattrs and content, never mtime.
//!
//! This module must not read Dockerfiles, resolve variables or select
//! files: the build engine does that and hands it resolved values. It must
//! never be given a secret's value, which is why [`MountSpec`] has no field
//! to hold one. Changing what is encoded, or how, changes every key: bump
//! [`VERSION`] when doing so (the golden test fails until then).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// The first bytes of every key's encoding; bump it when the encoding of
/// any step changes, so that old cache entries become misses.
pub const VERSION: &str = "executor-cache-key/1";

/// The first bytes of a [`TreeHash`]'s encoding.
const TREE_VERSION: &str = "executor-cache-tree/1";

/// A digest string that is not `sha256:` and 64 lower-case hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a sha256 digest: expected sha256:<64 lower-case hex digits>")]
pub struct ParseDigestError {
    /// The string that failed to parse.
    pub input: String,
}

/// 64 lower-case hex digits, the only spelling [`fmt::Display`] produces.
fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex, &mut out).ok()?;
    Some(out)
}

macro_rules! sha256_newtype {
    ($name:ident) => {
        impl $name {
            /// The raw 32 digest bytes.
            #[must_use]
            pub fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// The raw 32 digest bytes.
            #[must_use]
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// The 64 lower-case hex digits, without the `sha256:` prefix.
            #[must_use]
            pub fn hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "sha256:{}", self.hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }

        impl FromStr for $name {
            type Err = ParseDigestError;

            /// Parses the [`fmt::Display`] form, `sha256:<64 hex digits>`.
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.strip_prefix("sha256:")
                    .and_then(parse_hex)
                    .map(Self)
                    .ok_or_else(|| ParseDigestError {
                        input: s.to_owned(),
                    })
            }
        }
    };
}

/// A build step's cache key: the sha256 of its [`key`] encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key([u8; 32]);

sha256_newtype!(Key);

impl Key {
    /// The tag a registry store files this key's entry under: the 64 hex
    /// digits, a valid OCI tag (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`).
    #[must_use]
    pub fn tag(&self) -> String {
        self.hex()
    }

    /// The key a registry store's tag (from [`Key::tag`]) stands for.
    pub fn from_tag(tag: &str) -> Result<Self, ParseDigestError> {
        parse_hex(tag).map(Self).ok_or_else(|| ParseDigestError {
            input: tag.to_owned(),
        })
    }
}

/// The content hash of a set of files (see [`TreeHasher`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TreeHash([u8; 32]);

sha256_newtype!(TreeHash);

/// Type bytes of the encoding's parts.
mod part {
    pub const STR: u8 = 1;
    pub const BYTES: u8 = 2;
    pub const U64: u8 = 3;
    pub const BOOL: u8 = 4;
    pub const LIST: u8 = 5;
    pub const OPTION: u8 = 6;
    pub const DIGEST: u8 = 7;
}

/// The framed encoding keys are hashed from: a version prefix, then parts,
/// each a type byte, a big-endian u64 length and the bytes. A list is a
/// part holding its count followed by its items; an option a part holding
/// a presence byte followed by the value when present. Nothing can be
/// written unframed, so no two different sequences of calls give the same
/// bytes.
#[derive(Debug, Clone)]
pub struct KeyEncoder {
    buf: Vec<u8>,
}

impl Default for KeyEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyEncoder {
    /// An encoder that has written the [`VERSION`] prefix.
    #[must_use]
    pub fn new() -> Self {
        Self::with_prefix(VERSION)
    }

    fn with_prefix(prefix: &str) -> Self {
        Self {
            buf: prefix.as_bytes().to_vec(),
        }
    }

    fn part(&mut self, ty: u8, bytes: &[u8]) {
        self.buf.push(ty);
        self.buf
            .extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        self.buf.extend_from_slice(bytes);
    }

    /// A UTF-8 string.
    pub fn str(&mut self, s: &str) {
        self.part(part::STR, s.as_bytes());
    }

    /// Raw bytes (a path, an xattr value).
    pub fn bytes(&mut self, b: &[u8]) {
        self.part(part::BYTES, b);
    }

    /// An integer, as 8 big-endian bytes.
    pub fn u64(&mut self, n: u64) {
        self.part(part::U64, &n.to_be_bytes());
    }

    /// A flag, as one byte 0 or 1.
    pub fn bool(&mut self, b: bool) {
        self.part(part::BOOL, &[u8::from(b)]);
    }

    /// A sha256 digest's 32 bytes.
    pub fn digest(&mut self, d: &[u8; 32]) {
        self.part(part::DIGEST, d);
    }

    /// A list: its count, then each item as `item` writes it.
    pub fn list<T>(&mut self, items: &[T], mut item: impl FnMut(&mut Self, &T)) {
        self.part(part::LIST, &(items.len() as u64).to_be_bytes());
        for i in items {
            item(self, i);
        }
    }

    /// An option: a presence byte, then the value as `value` writes it.
    pub fn option<T: ?Sized>(&mut self, v: Option<&T>, value: impl FnOnce(&mut Self, &T)) {
        self.part(part::OPTION, &[u8::from(v.is_some())]);
        if let Some(v) = v {
            value(self, v);
        }
    }

    /// An optional string.
    pub fn opt_str(&mut self, s: Option<&str>) {
        self.option(s, Self::str);
    }

    /// A list of strings.
    pub fn strs(&mut self, items: &[String]) {
        self.list(items, |e, s| e.str(s));
    }

    /// Name/value pairs, sorted first so that the caller's order (say, a
    /// hash map's) never changes the key.
    pub fn sorted_pairs(&mut self, pairs: &[(String, String)]) {
        let mut sorted: Vec<&(String, String)> = pairs.iter().collect();
        sorted.sort();
        self.list(&sorted, |e, (name, value)| {
            e.str(name);
            e.str(value);
        });
    }

    /// The key: the sha256 of everything written.
    #[must_use]
    pub fn finish(self) -> Key {
        Key(Sha256::digest(&self.buf).into())
    }
}

/// What a `FROM` starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseRef {
    /// An image, by the digest of its platform-specific manifest
    /// (`sha256:...`), never by tag.
    Image { manifest_digest: String },
    /// An earlier stage of the same build, by the key of its last step.
    Stage(Key),
    /// `FROM scratch`.
    Scratch,
}

/// A `RUN --mount`, resolved by the engine (defaults filled in). It holds
/// what identifies a mount, never a secret's or SSH agent's content: there
/// is deliberately no field that could carry one. The content of a bind
/// mount's source enters the key through [`RunStep::bind_sources`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSpec {
    Bind {
        target: String,
        /// The stage or image the source is taken from; `None`: the context.
        from: Option<String>,
        source: String,
        readwrite: bool,
    },
    /// A cache mount: its content is, by design, not part of the key.
    Cache {
        target: String,
        id: String,
        sharing: String,
        from: Option<String>,
        source: String,
        readonly: bool,
        mode: u32,
        uid: u64,
        gid: u64,
    },
    Tmpfs {
        target: String,
        size: Option<u64>,
    },
    /// A secret, by id only. Its value must never reach a key: a key is
    /// pushed as a tag, and one can be tried against guesses.
    Secret {
        id: String,
        /// The file it is mounted at, if not `/run/secrets/<id>`.
        target: Option<String>,
        /// The environment variable it is exposed as, if any.
        env: Option<String>,
        required: bool,
        mode: u32,
        uid: u64,
        gid: u64,
    },
    /// An SSH agent socket, by id only.
    Ssh {
        id: String,
        target: Option<String>,
        required: bool,
        mode: u32,
        uid: u64,
        gid: u64,
    },
}

/// A `RUN`, as the engine resolved it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunStep {
    /// The command after variable expansion: exec form's arguments, or
    /// shell form's one string.
    pub command: Vec<String>,
    pub shell_form: bool,
    /// The environment in scope; order does not matter.
    pub env: Vec<(String, String)>,
    /// The build args in scope (declared with `ARG` and given a value);
    /// order does not matter.
    pub args: Vec<(String, String)>,
    pub user: String,
    pub workdir: String,
    /// The `SHELL` in effect.
    pub shell: Vec<String>,
    /// `default`, `none` or `host`.
    pub network: String,
    pub mounts: Vec<MountSpec>,
    /// The content of each bind mount's source, in the order of the bind
    /// mounts in `mounts`.
    pub bind_sources: Vec<TreeHash>,
}

/// A `COPY`, or an `ADD` of local files or a git repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyStep {
    /// Exactly the files the instruction selected (after `.dockerignore`
    /// and `--exclude`), as [`TreeHasher`] or [`hash_dir`] hashed them.
    pub files: TreeHash,
    /// `ADD` (local archives are unpacked) rather than `COPY`.
    pub add: bool,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub from: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub excludes: Vec<String>,
    pub dest: String,
}

/// What identifies an `ADD`ed URL's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlContent {
    /// The `--checksum` given: the key needs no download.
    Checksum(String),
    /// No checksum given: the digest (`sha256:...`) of the fetched bytes.
    Fetched(String),
}

/// One build step, typed; the engine's resolution of an instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    From {
        base: BaseRef,
    },
    /// An instruction that changes only the config (`ENV`, `LABEL`,
    /// `WORKDIR`, ...), in its canonical spelling.
    Config {
        canonical: String,
    },
    Run(RunStep),
    Copy(CopyStep),
    AddUrl {
        url: String,
        content: UrlContent,
        chown: Option<String>,
        chmod: Option<String>,
        dest: String,
    },
}

/// The key of `step` run on top of the step keyed `parent` (`None` for a
/// stage's first step).
#[must_use]
pub fn key(parent: Option<&Key>, step: &Step) -> Key {
    let mut e = KeyEncoder::new();
    e.option(parent, |e, k| e.digest(k.as_bytes()));
    encode_step(&mut e, step);
    e.finish()
}

/// Every field is destructured, so a field added to a step does not
/// compile until it is encoded (or knowingly ignored).
fn encode_step(e: &mut KeyEncoder, step: &Step) {
    match step {
        Step::From { base } => {
            e.str("from");
            match base {
                BaseRef::Image { manifest_digest } => {
                    e.str("image");
                    e.str(manifest_digest);
                }
                BaseRef::Stage(key) => {
                    e.str("stage");
                    e.digest(key.as_bytes());
                }
                BaseRef::Scratch => e.str("scratch"),
            }
        }
        Step::Config { canonical } => {
            e.str("config");
            e.str(canonical);
        }
        Step::Run(RunStep {
            command,
            shell_form,
            env,
            args,
            user,
            workdir,
            shell,
            network,
            mounts,
            bind_sources,
        }) => {
            e.str("run");
            e.strs(command);
            e.bool(*shell_form);
            e.sorted_pairs(env);
            e.sorted_pairs(args);
            e.str(user);
            e.str(workdir);
            e.strs(shell);
            e.str(network);
            e.list(mounts, encode_mount);
            e.list(bind_sources, |e, t| e.digest(t.as_bytes()));
        }
        Step::Copy(CopyStep {
            files,
            add,
            chown,
            chmod,
            from,
            link,
            parents,
            excludes,
            dest,
        }) => {
            e.str("copy");
            e.digest(files.as_bytes());
            e.bool(*add);
            e.opt_str(chown.as_deref());
            e.opt_str(chmod.as_deref());
            e.opt_str(from.as_deref());
            e.bool(*link);
            e.bool(*parents);
            e.strs(excludes);
            e.str(dest);
        }
        Step::AddUrl {
            url,
            content,
            chown,
            chmod,
            dest,
        } => {
            e.str("add-url");
            e.str(url);
            match content {
                UrlContent::Checksum(c) => {
                    e.str("checksum");
                    e.str(c);
                }
                UrlContent::Fetched(d) => {
                    e.str("fetched");
                    e.str(d);
                }
            }
            e.opt_str(chown.as_deref());
            e.opt_str(chmod.as_deref());
            e.str(dest);
        }
    }
}

fn encode_mount(e: &mut KeyEncoder, mount: &MountSpec) {
    let owner = |e: &mut KeyEncoder, mode: u32, uid: u64, gid: u64| {
        e.u64(u64::from(mode));
        e.u64(uid);
        e.u64(gid);
    };
    match mount {
        MountSpec::Bind {
            target,
            from,
            source,
            readwrite,
        } => {
            e.str("bind");
            e.str(target);
            e.opt_str(from.as_deref());
            e.str(source);
            e.bool(*readwrite);
        }
        MountSpec::Cache {
            target,
            id,
            sharing,
            from,
            source,
            readonly,
            mode,
            uid,
            gid,
        } => {
            e.str("cache");
            e.str(target);
            e.str(id);
            e.str(sharing);
            e.opt_str(from.as_deref());
            e.str(source);
            e.bool(*readonly);
            owner(e, *mode, *uid, *gid);
        }
        MountSpec::Tmpfs { target, size } => {
            e.str("tmpfs");
            e.str(target);
            e.option(size.as_ref(), |e, s| e.u64(*s));
        }
        MountSpec::Secret {
            id,
            target,
            env,
            required,
            mode,
            uid,
            gid,
        } => {
            e.str("secret");
            e.str(id);
            e.opt_str(target.as_deref());
            e.opt_str(env.as_deref());
            e.bool(*required);
            owner(e, *mode, *uid, *gid);
        }
        MountSpec::Ssh {
            id,
            target,
            required,
            mode,
            uid,
            gid,
        } => {
            e.str("ssh");
            e.str(id);
            e.opt_str(target.as_deref());
            e.bool(*required);
            owner(e, *mode, *uid, *gid);
        }
    }
}

/// The type of a [`TreeEntry`], with what the type needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File {
        content_sha256: [u8; 32],
    },
    Dir,
    Symlink {
        target: PathBuf,
    },
    /// A hard link to an earlier path of the same tree.
    Hardlink {
        target: PathBuf,
    },
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
}

/// One file of a tree. There is no mtime: it is not an input of a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    /// Relative to the tree's root, `/`-separated.
    pub path: PathBuf,
    pub kind: EntryKind,
    /// Permission bits, with setuid, setgid and sticky (`& 0o7777`).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// Hashes a set of files fed in any order: [`TreeHasher::finish`] sorts
/// them by path, so the walk order of a file system does not matter.
#[derive(Debug, Clone, Default)]
pub struct TreeHasher {
    /// (path bytes, the entry's framed encoding).
    entries: Vec<(Vec<u8>, Vec<u8>)>,
}

impl TreeHasher {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, entry: &TreeEntry) {
        let path = entry.path.as_os_str().as_bytes().to_vec();
        let mut e = KeyEncoder::with_prefix("");
        e.bytes(&path);
        match &entry.kind {
            EntryKind::File { content_sha256 } => {
                e.str("file");
                e.digest(content_sha256);
            }
            EntryKind::Dir => e.str("dir"),
            EntryKind::Symlink { target } => {
                e.str("symlink");
                e.bytes(target.as_os_str().as_bytes());
            }
            EntryKind::Hardlink { target } => {
                e.str("hardlink");
                e.bytes(target.as_os_str().as_bytes());
            }
            EntryKind::CharDevice { major, minor } => {
                e.str("char-device");
                e.u64(u64::from(*major));
                e.u64(u64::from(*minor));
            }
            EntryKind::BlockDevice { major, minor } => {
                e.str("block-device");
                e.u64(u64::from(*major));
                e.u64(u64::from(*minor));
            }
            EntryKind::Fifo => e.str("fifo"),
        }
        e.u64(u64::from(entry.mode & 0o7777));
        e.u64(entry.uid);
        e.u64(entry.gid);
        let xattrs: Vec<(&String, &Vec<u8>)> = entry.xattrs.iter().collect();
        e.list(&xattrs, |e, (name, value)| {
            e.str(name);
            e.bytes(value);
        });
        self.entries.push((path, e.buf));
    }

    /// The hash of every entry added, sorted by path.
    #[must_use]
    pub fn finish(mut self) -> TreeHash {
        self.entries.sort_unstable();
        let mut e = KeyEncoder::with_prefix(TREE_VERSION);
        e.list(&self.entries, |e, (_, encoded)| {
            e.buf.extend_from_slice(encoded);
        });
        TreeHash(e.finish().0)
    }
}

/// The [`TreeHash`] of everything under `dir`, `dir` itself included as
/// `.`. Symlinks are recorded, not followed; a file's content is hashed
/// as it streams; a file hard-linked to an earlier path (in sorted order)
/// is recorded as a [`EntryKind::Hardlink`] to it; sockets are left out
/// (no layer can hold one), and so are `security.selinux`, which belongs to
/// the host, and xattrs whose names are not UTF-8, which layers leave out.
pub fn hash_dir(dir: &Path) -> io::Result<TreeHash> {
    let mut found = Vec::new();
    walk(dir, Path::new(""), &mut found)?;
    found.sort_by(|a, b| a.0.as_os_str().as_bytes().cmp(b.0.as_os_str().as_bytes()));
    let mut first_links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut hasher = TreeHasher::new();
    for (rel, meta) in found {
        let full = if rel.as_os_str().is_empty() {
            dir.to_owned()
        } else {
            dir.join(&rel)
        };
        let ft = meta.file_type();
        if ft.is_socket() {
            continue;
        }
        let earlier = if !ft.is_dir() && meta.nlink() > 1 {
            match first_links.entry((meta.dev(), meta.ino())) {
                std::collections::hash_map::Entry::Occupied(first) => Some(first.get().clone()),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(rel.clone());
                    None
                }
            }
        } else {
            None
        };
        let kind = if let Some(target) = earlier {
            EntryKind::Hardlink { target }
        } else if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_symlink() {
            EntryKind::Symlink {
                target: fs::read_link(&full)?,
            }
        } else if ft.is_file() {
            EntryKind::File {
                content_sha256: sha256_file(&full)?,
            }
        } else if ft.is_fifo() {
            EntryKind::Fifo
        } else if ft.is_char_device() || ft.is_block_device() {
            let (major, minor) = (
                rustix::fs::major(meta.rdev()),
                rustix::fs::minor(meta.rdev()),
            );
            if ft.is_char_device() {
                EntryKind::CharDevice { major, minor }
            } else {
                EntryKind::BlockDevice { major, minor }
            }
        } else {
            continue;
        };
        let path = if rel.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            rel
        };
        hasher.add(&TreeEntry {
            path,
            kind,
            mode: meta.mode() & 0o7777,
            uid: u64::from(meta.uid()),
            gid: u64::from(meta.gid()),
            xattrs: read_xattrs(&full)?,
        });
    }
    Ok(hasher.finish())
}

/// `dir/rel` and everything under it, not following symlinks.
fn walk(dir: &Path, rel: &Path, out: &mut Vec<(PathBuf, Metadata)>) -> io::Result<()> {
    let full = dir.join(rel);
    let meta = fs::symlink_metadata(&full)?;
    let is_dir = meta.is_dir();
    out.push((rel.to_owned(), meta));
    if is_dir {
        for child in fs::read_dir(&full)? {
            walk(dir, &rel.join(child?.file_name()), out)?;
        }
    }
    Ok(())
}

fn sha256_file(path: &Path) -> io::Result<[u8; 32]> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(hasher.finalize().into()),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Every xattr of `path` (not following symlinks) but `security.selinux`;
/// none where the file system has no xattrs.
fn read_xattrs(path: &Path) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut list = Vec::new();
    loop {
        let len = match rustix::fs::llistxattr_query(path) {
            Ok(0) | Err(rustix::io::Errno::NOTSUP) => return Ok(out),
            Ok(len) => len,
            Err(e) => return Err(e.into()),
        };
        list.resize(len, 0);
        match rustix::fs::llistxattr(path, &mut list[..]) {
            Ok(n) => {
                list.truncate(n);
                break;
            }
            Err(rustix::io::Errno::RANGE) => {}
            Err(e) => return Err(e.into()),
        }
    }
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        // layers leave out names that are not UTF-8, so no image has them
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        if name == "security.selinux" {
            continue;
        }
        if let Some(value) = read_xattr(path, name)? {
            out.insert(name.to_owned(), value);
        }
    }
    Ok(out)
}

/// One xattr's value; `None` if it disappeared meanwhile.
fn read_xattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    loop {
        let len = match rustix::fs::lgetxattr_query(path, name) {
            Ok(len) => len,
            Err(rustix::io::Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut value = vec![0u8; len];
        match rustix::fs::lgetxattr(path, name, &mut value[..]) {
            Ok(n) => {
                value.truncate(n);
                return Ok(Some(value));
            }
            Err(rustix::io::Errno::RANGE) => {}
            Err(rustix::io::Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::time::{Duration, SystemTime};

    fn run(command: &[&str]) -> RunStep {
        RunStep {
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            shell_form: false,
            env: vec![],
            args: vec![],
            user: "root".into(),
            workdir: "/".into(),
            shell: vec!["/bin/sh".into(), "-c".into()],
            network: "default".into(),
            mounts: vec![],
            bind_sources: vec![],
        }
    }

    fn copy() -> CopyStep {
        CopyStep {
            files: TreeHash::from_bytes([7; 32]),
            add: false,
            chown: None,
            chmod: None,
            from: None,
            link: false,
            parents: false,
            excludes: vec![],
            dest: "/app/".into(),
        }
    }

    fn k(step: &Step) -> Key {
        key(None, step)
    }

    #[test]
    fn list_items_do_not_run_together() {
        assert_ne!(
            k(&Step::Run(run(&["ab", "c"]))),
            k(&Step::Run(run(&["a", "bc"])))
        );
        assert_ne!(k(&Step::Run(run(&["a"]))), k(&Step::Run(run(&["a", ""]))));
    }

    #[test]
    fn some_empty_is_not_none() {
        let with = |chown: Option<&str>| {
            k(&Step::Copy(CopyStep {
                chown: chown.map(str::to_owned),
                ..copy()
            }))
        };
        assert_ne!(with(Some("")), with(None));
        assert_ne!(with(Some("1")), with(None));
    }

    #[test]
    fn pairs_do_not_run_together() {
        let with = |name: &str, value: &str| {
            k(&Step::Run(RunStep {
                env: vec![(name.into(), value.into())],
                ..run(&["true"])
            }))
        };
        assert_ne!(with("a", "b=c"), with("a=b", "c"));
    }

    #[test]
    fn env_and_args_are_not_interchangeable() {
        let env = RunStep {
            env: vec![("A".into(), "1".into())],
            ..run(&["true"])
        };
        let arg = RunStep {
            args: vec![("A".into(), "1".into())],
            ..run(&["true"])
        };
        assert_ne!(k(&Step::Run(env)), k(&Step::Run(arg)));
    }

    #[test]
    fn env_order_does_not_matter() {
        let a = RunStep {
            env: vec![("A".into(), "1".into()), ("B".into(), "2".into())],
            ..run(&["true"])
        };
        let b = RunStep {
            env: vec![("B".into(), "2".into()), ("A".into(), "1".into())],
            ..run(&["true"])
        };
        assert_eq!(k(&Step::Run(a)), k(&Step::Run(b)));
    }

    #[test]
    fn every_run_input_counts() {
        let base = run(&["make"]);
        let secret = |id: &str| MountSpec::Secret {
            id: id.into(),
            target: None,
            env: None,
            required: false,
            mode: 0o400,
            uid: 0,
            gid: 0,
        };
        let variants = [
            RunStep {
                shell_form: true,
                ..base.clone()
            },
            RunStep {
                user: "1000".into(),
                ..base.clone()
            },
            RunStep {
                workdir: "/src".into(),
                ..base.clone()
            },
            RunStep {
                shell: vec!["/bin/bash".into(), "-c".into()],
                ..base.clone()
            },
            RunStep {
                network: "none".into(),
                ..base.clone()
            },
            RunStep {
                mounts: vec![secret("npm")],
                ..base.clone()
            },
            RunStep {
                mounts: vec![secret("pip")],
                ..base.clone()
            },
            RunStep {
                bind_sources: vec![TreeHash::from_bytes([1; 32])],
                ..base.clone()
            },
        ];
        let mut keys: Vec<Key> = variants.into_iter().map(|r| k(&Step::Run(r))).collect();
        keys.push(k(&Step::Run(base)));
        let count = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), count);
    }

    #[test]
    fn add_url_checksum_and_fetched_differ() {
        let add = |content| {
            k(&Step::AddUrl {
                url: "https://example.com/a.tgz".into(),
                content,
                chown: None,
                chmod: None,
                dest: "/".into(),
            })
        };
        let digest = format!("sha256:{}", "0".repeat(64));
        assert_ne!(
            add(UrlContent::Checksum(digest.clone())),
            add(UrlContent::Fetched(digest))
        );
    }

    #[test]
    fn chained_from_the_parent() {
        let step = Step::Config {
            canonical: "ENV A=1".into(),
        };
        let p1 = k(&Step::From {
            base: BaseRef::Scratch,
        });
        let p2 = k(&Step::From {
            base: BaseRef::Image {
                manifest_digest: format!("sha256:{}", "a".repeat(64)),
            },
        });
        assert_ne!(key(Some(&p1), &step), key(Some(&p2), &step));
        assert_ne!(key(Some(&p1), &step), key(None, &step));
        assert_eq!(key(Some(&p1), &step), key(Some(&p1), &step));
    }

    #[test]
    fn deterministic() {
        let step = Step::Run(RunStep {
            env: vec![("PATH".into(), "/bin".into())],
            ..run(&["echo", "hi"])
        });
        assert_eq!(k(&step), k(&step.clone()));
    }

    /// The key of a fixed step. If this fails the encoding changed: every
    /// cache entry anyone has pushed becomes unreachable, so bump `VERSION`
    /// and update the literal on purpose.
    #[test]
    fn golden_key() {
        let step = Step::Run(RunStep {
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            args: vec![("VERSION".into(), "1.2".into())],
            mounts: vec![MountSpec::Secret {
                id: "token".into(),
                target: None,
                env: Some("TOKEN".into()),
                required: true,
                mode: 0o400,
                uid: 0,
                gid: 0,
            }],
            ..run(&["make", "install"])
        });
        assert_eq!(
            key(None, &step).to_string(),
            "sha256:75106c96279ad22043a6467a16ce9f9d415ae69d0a2c892fb8be5b72ebf1d905"
        );
    }

    #[test]
    fn key_display_parse_and_tag() {
        let key = k(&Step::Config {
            canonical: "LABEL a=b".into(),
        });
        let shown = key.to_string();
        assert!(shown.starts_with("sha256:"));
        assert_eq!(shown.parse::<Key>(), Ok(key));
        let tag = key.tag();
        assert_eq!(tag.len(), 64);
        assert!(tag.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(Key::from_tag(&tag), Ok(key));
        for bad in [
            "",
            "sha256:",
            &tag,
            &format!("sha512:{tag}"),
            &format!("sha256:{}", tag.to_uppercase()),
            &format!("sha256:{}", &tag[1..]),
            &format!("sha256:{tag}0"),
        ] {
            assert!(bad.parse::<Key>().is_err(), "{bad:?} parsed");
        }
        assert_eq!(
            "x".parse::<Key>().unwrap_err().to_string(),
            "\"x\" is not a sha256 digest: expected sha256:<64 lower-case hex digits>"
        );
    }

    fn entry(path: &str, kind: EntryKind) -> TreeEntry {
        TreeEntry {
            path: path.into(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            xattrs: BTreeMap::new(),
        }
    }

    fn file(path: &str, content: &[u8]) -> TreeEntry {
        entry(
            path,
            EntryKind::File {
                content_sha256: Sha256::digest(content).into(),
            },
        )
    }

    fn tree(entries: &[TreeEntry]) -> TreeHash {
        let mut h = TreeHasher::new();
        for e in entries {
            h.add(e);
        }
        h.finish()
    }

    #[test]
    fn tree_ignores_order() {
        let a = file("a", b"1");
        let b = file("b/c", b"2");
        let d = entry("b", EntryKind::Dir);
        assert_eq!(tree(&[a.clone(), b.clone(), d.clone()]), tree(&[b, d, a]));
    }

    #[test]
    fn tree_sees_every_attribute() {
        let base = {
            let mut e = file("a", b"1");
            e.xattrs.insert("user.x".into(), b"1".to_vec());
            e
        };
        let link = |target: &str| {
            entry(
                "l",
                EntryKind::Symlink {
                    target: target.into(),
                },
            )
        };
        let h = |e: TreeEntry| tree(&[e]);
        let reference = h(base.clone());
        let changed = [
            TreeEntry {
                mode: 0o755,
                ..base.clone()
            },
            TreeEntry {
                uid: 1,
                ..base.clone()
            },
            TreeEntry {
                gid: 1,
                ..base.clone()
            },
            TreeEntry {
                path: "b".into(),
                ..base.clone()
            },
            TreeEntry {
                kind: file("a", b"2").kind,
                ..base.clone()
            },
            TreeEntry {
                xattrs: BTreeMap::from([("user.x".into(), b"2".to_vec())]),
                ..base.clone()
            },
            TreeEntry {
                xattrs: BTreeMap::new(),
                ..base.clone()
            },
            TreeEntry {
                kind: EntryKind::Hardlink { target: "z".into() },
                ..base.clone()
            },
        ];
        for c in changed {
            assert_ne!(h(c.clone()), reference, "{c:?}");
        }
        assert_ne!(h(link("x")), h(link("y")));
        assert_ne!(
            h(entry("l", EntryKind::Hardlink { target: "x".into() })),
            h(link("x"))
        );
        assert_ne!(
            h(entry("d", EntryKind::CharDevice { major: 1, minor: 3 })),
            h(entry("d", EntryKind::BlockDevice { major: 1, minor: 3 }))
        );
        assert_ne!(tree(&[]), tree(&[entry("d", EntryKind::Dir)]));
    }

    fn set_mtime(path: &Path, secs: u64) {
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
            .unwrap();
    }

    #[test]
    fn hash_dir_ignores_mtime_and_sees_mode_content_and_links() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir(root.join("sub")).unwrap();
        fs::write(root.join("sub/a"), b"hello").unwrap();
        fs::write(root.join("b"), b"world").unwrap();
        symlink("sub/a", root.join("link")).unwrap();
        let first = hash_dir(root).unwrap();

        set_mtime(&root.join("sub/a"), 1_000_000);
        assert_eq!(hash_dir(root).unwrap(), first, "mtime changed the hash");

        fs::set_permissions(root.join("sub/a"), fs::Permissions::from_mode(0o600)).unwrap();
        let chmodded = hash_dir(root).unwrap();
        assert_ne!(chmodded, first, "chmod did not change the hash");

        fs::write(root.join("b"), b"World").unwrap();
        let edited = hash_dir(root).unwrap();
        assert_ne!(edited, chmodded, "new content did not change the hash");

        fs::remove_file(root.join("link")).unwrap();
        symlink("b", root.join("link")).unwrap();
        let relinked = hash_dir(root).unwrap();
        assert_ne!(relinked, edited, "new link target did not change the hash");

        fs::hard_link(root.join("b"), root.join("c")).unwrap();
        let linked = hash_dir(root).unwrap();
        fs::remove_file(root.join("c")).unwrap();
        fs::copy(root.join("b"), root.join("c")).unwrap();
        fs::set_permissions(root.join("c"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(root.join("b"), fs::Permissions::from_mode(0o644)).unwrap();
        assert_ne!(
            hash_dir(root).unwrap(),
            linked,
            "a hard link hashed as a copy"
        );
    }

    /// Two trees with the same files, written in a different order with
    /// different times, hash alike; hard links point at the first path.
    #[test]
    fn hash_dir_matches_hand_fed_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::write(root.join("b"), b"x").unwrap();
        fs::hard_link(root.join("b"), root.join("a")).unwrap();
        fs::set_permissions(root.join("a"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
        let meta = fs::metadata(root).unwrap();
        let (uid, gid) = (u64::from(meta.uid()), u64::from(meta.gid()));
        let owned = |mut e: TreeEntry, mode: u32| {
            e.uid = uid;
            e.gid = gid;
            e.mode = mode;
            e
        };
        let expected = tree(&[
            owned(entry(".", EntryKind::Dir), 0o755),
            owned(file("a", b"x"), 0o640),
            owned(
                entry("b", EntryKind::Hardlink { target: "a".into() }),
                0o640,
            ),
        ]);
        assert_eq!(hash_dir(root).unwrap(), expected);
    }
}
