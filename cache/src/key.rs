//! Cache keys: what a build step's key is made of, and how it is encoded.
//!
//! A key is the sha256 of a versioned, framed encoding of the parent step's
//! key and the step's typed inputs ([`Step`]). Every part is written as a
//! type byte, its length as a big-endian u64 and its bytes, lists with their
//! count and options with a presence byte, so two different inputs never
//! encode to the same bytes. Files enter a key only as a [`TreeHash`] (see
//! `tree.rs`): path, type, mode, owner, link target, xattrs and content,
//! never mtime.
//!
//! This module must not read Dockerfiles, resolve variables or select
//! files: the build engine does that and hands it resolved values. It must
//! never be given a secret's value, which is why [`MountSpec`] has no field
//! to hold one. Changing what is encoded, or how, changes every key: bump
//! [`VERSION`] when doing so (the golden test fails until then).

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// The first bytes of every key's encoding; bump it when the encoding of
/// any step changes, so that old cache entries become misses.
pub const VERSION: &str = "executor-cache-key/3";

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

        /// As its [`fmt::Display`] form, `sha256:<64 hex digits>`.
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        /// From its [`fmt::Display`] form; any other spelling is an error.
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// Checks that `s` is `sha256:` and 64 lower-case hex digits, the only
/// digests the cache writes or accepts.
pub(crate) fn check_digest(s: &str) -> Result<(), ParseDigestError> {
    match s.strip_prefix("sha256:").and_then(parse_hex) {
        Some(_) => Ok(()),
        None => Err(ParseDigestError {
            input: s.to_owned(),
        }),
    }
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

/// The content hash of a set of files (see [`crate::TreeHasher`] and
/// [`crate::selection_hash`]).
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
    pub(crate) buf: Vec<u8>,
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

    pub(crate) fn with_prefix(prefix: &str) -> Self {
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
    /// Heredoc bodies the command reads, `(delimiter, body)`, as written.
    pub heredocs: Vec<(String, String)>,
}

/// A `COPY`, or an `ADD` of local files or a git repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyStep {
    /// Exactly the files the instruction selected (after `.dockerignore`
    /// and `--exclude`), as [`crate::TreeHasher`] or [`crate::hash_dir`] hashed them.
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
    /// The instruction as expanded, flags and sources included: what the
    /// fields above do not spell out (`--unpack`, `--keep-git-dir`, the
    /// source patterns of a `--from` copy) still reaches the key.
    pub canonical: String,
    /// Heredoc sources, `(file name, body after expansion)`.
    pub heredocs: Vec<(String, String)>,
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
            heredocs,
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
            e.list(heredocs, |e, (name, body)| {
                e.str(name);
                e.str(body);
            });
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
            canonical,
            heredocs,
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
            e.str(canonical);
            e.list(heredocs, |e, (name, body)| {
                e.str(name);
                e.str(body);
            });
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

#[cfg(test)]
mod tests {
    use super::*;

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
            heredocs: vec![],
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
            canonical: "COPY . /app/".into(),
            heredocs: vec![],
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
            "sha256:74eec925ee84b502e79c66c939c96bf4091b20ae73e272e4f9f7d222ae3eed14"
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
        assert_eq!(serde_json::to_string(&key).unwrap(), format!("\"{shown}\""));
        assert_eq!(
            serde_json::from_str::<Key>(&format!("\"{shown}\"")).unwrap(),
            key
        );
        assert!(serde_json::from_str::<Key>(&format!("\"{tag}\"")).is_err());
        assert!(serde_json::from_str::<Key>("1").is_err());
        assert_eq!(
            "x".parse::<Key>().unwrap_err().to_string(),
            "\"x\" is not a sha256 digest: expected sha256:<64 lower-case hex digits>"
        );
    }
}
