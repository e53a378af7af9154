//! Typed Dockerfile instructions: the second layer of BuildKit's Dockerfile
//! frontend (`frontend/dockerfile/instructions`). It turns the parser's raw
//! [`Node`](super::parser::Node)s into [`Instruction`] values: every
//! keyword's arguments and flags checked with BuildKit's rules and error
//! conditions (BuildKit's `bflag` flag parser, `RUN --mount`, `--network` and
//! `--security`, HEALTHCHECK durations, ONBUILD restrictions), and it knows
//! which fields BuildKit expands with build arguments and environment
//! variables ([`Instruction::expand`]).
//!
//! It must not resolve anything: no stage lookup, no ARG/ENV scoping, no
//! image, platform or path handling. Those belong to the stage planner, which
//! hands [`Instruction::expand`] an expander bound to the right scope. It never
//! panics on any input and recurses at most one level (an ONBUILD trigger).

mod display;
mod duration;
mod expand;
mod flags;
mod mount;
mod parse;

use std::time::Duration;

use serde::Serialize;

use super::error::Position;
pub use super::parser::Heredoc;

pub use duration::{format_go_duration, parse_go_duration};
pub use expand::{WordExpander, WordsExpander};
pub use parse::{parse, parse_node};

/// One typed instruction with where it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instruction {
    #[serde(flatten)]
    pub kind: Kind,
    /// Where the keyword starts.
    pub start: Position,
    pub end_line: usize,
    /// The logical line as written (continuations joined), trimmed.
    pub original: String,
    /// Where the raw text of each expandable field was written, so that an
    /// expansion error can point at it. Filled by [`parse_node`]; may be empty.
    #[serde(skip)]
    pub locations: Vec<Location>,
}

/// The position of a piece of raw instruction text in the Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub text: String,
    pub position: Position,
}

/// What an instruction says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "instruction", rename_all = "UPPERCASE")]
pub enum Kind {
    From(From),
    Arg(Arg),
    Env(#[serde(serialize_with = "as_pairs")] KeyValues),
    Label(#[serde(serialize_with = "as_pairs")] KeyValues),
    Maintainer(#[serde(serialize_with = "as_name")] String),
    Workdir(#[serde(serialize_with = "as_path")] String),
    User(#[serde(serialize_with = "as_user")] String),
    Copy(Copy),
    Add(Add),
    Run(Run),
    Cmd(Command),
    Entrypoint(Command),
    Expose(#[serde(serialize_with = "as_ports")] Vec<String>),
    Volume(#[serde(serialize_with = "as_paths")] Vec<String>),
    StopSignal(#[serde(serialize_with = "as_signal")] String),
    Healthcheck(Healthcheck),
    Shell(#[serde(serialize_with = "as_shell")] Vec<String>),
    Onbuild(Onbuild),
}

/// `FROM [--platform=P] image [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct From {
    pub image: String,
    /// Lower-cased and validated (`^[a-z][a-z0-9-_.]*$`).
    pub stage_name: Option<String>,
    /// `--platform`; an empty value counts as absent, as in BuildKit.
    pub platform: Option<String>,
}

/// `ARG name[=value] ...`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Arg {
    pub args: Vec<ArgDef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgDef {
    pub key: String,
    pub value: Option<String>,
}

/// ENV and LABEL pairs, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValues(pub Vec<KeyValue>);

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// A command line: shell form (run through the SHELL) or JSON exec form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "form", content = "command", rename_all = "lowercase")]
pub enum Command {
    Shell(String),
    Exec(Vec<String>),
}

/// `RUN [--mount=...] [--network=...] [--security=...] command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Run {
    pub command: Command,
    /// Heredoc bodies as the parser read them (not chomped; see
    /// [`Heredoc::chomp`]).
    pub heredocs: Vec<Heredoc>,
    /// Parsed mounts. Before [`Instruction::expand`], a mount whose options
    /// hold a `$` keeps those values raw and is validated only when expanded,
    /// as BuildKit does.
    pub mounts: Vec<Mount>,
    pub network: Option<NetworkMode>,
    pub security: Option<SecurityMode>,
    /// The `--mount` values as written, re-parsed by [`Instruction::expand`].
    #[serde(skip)]
    pub mount_specs: Vec<String>,
}

/// The arguments COPY and ADD share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyArgs {
    /// Source paths (and URLs for ADD), heredoc sources excluded.
    pub sources: Vec<String>,
    pub dest: String,
    /// Heredoc sources (`COPY <<EOF /dest`).
    pub heredocs: Vec<HeredocFile>,
    /// `--from` (COPY only); empty counts as absent.
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    /// `--parents` (COPY only).
    pub parents: bool,
    /// `--exclude`, repeatable.
    pub exclude: Vec<String>,
}

/// A file written from a heredoc by COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeredocFile {
    /// The delimiter, used as the file name.
    pub name: String,
    /// The body, leading tabs removed for `<<-`.
    pub content: String,
    /// The delimiter was unquoted: variables in `content` are to be expanded
    /// (BuildKit `ExpandRaw`, done by the planner).
    pub expand: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Copy {
    #[serde(flatten)]
    pub args: CopyArgs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Add {
    #[serde(flatten)]
    pub args: CopyArgs,
    pub checksum: Option<String>,
    /// `--keep-git-dir`, only when given.
    pub keep_git_dir: Option<bool>,
    /// `--unpack`, only when given.
    pub unpack: Option<bool>,
}

/// HEALTHCHECK, as Docker stores it in the image config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "UPPERCASE")]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE` (Docker stores `Test: ["NONE"]`).
    None,
    Check {
        /// `["CMD", args...]` for exec form, `["CMD-SHELL", command]` for shell
        /// form.
        test: Vec<String>,
        /// `None` when not given or zero (Docker's "inherit").
        #[serde(serialize_with = "as_go_duration")]
        interval: Option<Duration>,
        #[serde(serialize_with = "as_go_duration")]
        timeout: Option<Duration>,
        #[serde(serialize_with = "as_go_duration")]
        start_period: Option<Duration>,
        #[serde(serialize_with = "as_go_duration")]
        start_interval: Option<Duration>,
        retries: Option<u32>,
    },
}

/// `ONBUILD trigger`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Onbuild {
    /// The trigger text as Docker stores it in the image config: the line
    /// without `ONBUILD`, heredoc bodies appended.
    pub expression: String,
    pub trigger: Box<Instruction>,
}

/// One `RUN --mount`, with BuildKit's defaults filled in: read-only except for
/// cache and tmpfs; cache `sharing` shared and `id` the cleaned target; secret
/// `id` from `source` or the target's base name and `target`
/// `/run/secrets/<id>` (unless `env` is set); ssh `id` `default` and `target`
/// `/run/buildkit/ssh_agent.<n>`. `mode`, `uid`, `gid` stay `None` when not
/// given (BuildKit then uses 0400 for secrets, 0600 for ssh, 0755 for cache
/// directories, and uid/gid 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: MountKind,
    pub target: Option<String>,
    pub source: Option<String>,
    pub from: Option<String>,
    pub read_only: bool,
    pub id: Option<String>,
    pub sharing: Option<Sharing>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub required: bool,
    /// Secret as an environment variable (`env=NAME`); empty means the
    /// default name.
    pub env: Option<String>,
    /// tmpfs size in bytes; 0 means unlimited.
    pub size: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    Shared,
    Private,
    Locked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    Default,
    None,
    Host,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecurityMode {
    Sandbox,
    Insecure,
}

impl MountKind {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Bind => "bind",
            Self::Cache => "cache",
            Self::Tmpfs => "tmpfs",
            Self::Secret => "secret",
            Self::Ssh => "ssh",
        }
    }
}

impl Sharing {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::Private => "private",
            Self::Locked => "locked",
        }
    }
}

impl NetworkMode {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::None => "none",
            Self::Host => "host",
        }
    }
}

impl SecurityMode {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Sandbox => "sandbox",
            Self::Insecure => "insecure",
        }
    }
}

impl Instruction {
    /// The keyword in upper case, e.g. `"COPY"`.
    #[must_use]
    pub fn keyword(&self) -> &'static str {
        self.kind.keyword()
    }
}

impl Kind {
    /// The keyword in upper case, e.g. `"COPY"`.
    #[must_use]
    pub fn keyword(&self) -> &'static str {
        match self {
            Self::From(_) => "FROM",
            Self::Arg(_) => "ARG",
            Self::Env(_) => "ENV",
            Self::Label(_) => "LABEL",
            Self::Maintainer(_) => "MAINTAINER",
            Self::Workdir(_) => "WORKDIR",
            Self::User(_) => "USER",
            Self::Copy(_) => "COPY",
            Self::Add(_) => "ADD",
            Self::Run(_) => "RUN",
            Self::Cmd(_) => "CMD",
            Self::Entrypoint(_) => "ENTRYPOINT",
            Self::Expose(_) => "EXPOSE",
            Self::Volume(_) => "VOLUME",
            Self::StopSignal(_) => "STOPSIGNAL",
            Self::Healthcheck(_) => "HEALTHCHECK",
            Self::Shell(_) => "SHELL",
            Self::Onbuild(_) => "ONBUILD",
        }
    }
}

/// Every instruction keyword, lower case, sorted (BuildKit's
/// `allInstructionNames`).
pub const KEYWORDS: [&str; 18] = [
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

macro_rules! named_field_serializer {
    ($($fn_name:ident => $field:literal),* $(,)?) => {$(
        fn $fn_name<S: serde::Serializer, T: Serialize>(value: &T, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeStruct as _;
            let mut st = s.serialize_struct("Value", 1)?;
            st.serialize_field($field, value)?;
            st.end()
        }
    )*};
}

// Internally tagged enums cannot hold bare strings or sequences; these put
// them under a named field instead (`{"instruction":"USER","user":"app"}`).
named_field_serializer! {
    as_pairs => "pairs",
    as_name => "name",
    as_path => "path",
    as_user => "user",
    as_ports => "ports",
    as_paths => "paths",
    as_signal => "signal",
    as_shell => "shell",
}

/// Durations serialize as Go formats them (`"1m30s"`), as Docker prints them.
#[allow(clippy::ref_option)] // serde's `serialize_with` passes `&Option<T>`
fn as_go_duration<S: serde::Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(d) => s.serialize_some(&format_go_duration(*d)),
        None => s.serialize_none(),
    }
}
