//! `executor.toml`, the server's configuration: where it listens and keeps
//! its state, its public URL (the link of every commit status), the
//! repositories it runs pipelines for (their forge, hook secret, forge
//! token, pipeline secrets, allowed events and fork policy), the tokens of
//! its runners and API clients, and its queue timings. Secrets are never
//! written in the file: each is a `{ env = "VAR" }` or `{ file = "PATH" }`
//! reference, read once at load into a [`Secret`] that never prints.
//! Errors name the file and, where the TOML parser gives one, the
//! line:column. This module reads and checks; it starts nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use crate::pipeline::IsolationMode;
use crate::server::forge::ForgeKind;

/// The configuration file `executor serve` reads by default.
pub const DEFAULT_FILE: &str = "executor.toml";

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{}: {message}", path.display(), position.map_or_else(String::new, |(l, c)| format!("{l}:{c}")))]
    Parse {
        path: PathBuf,
        position: Option<(usize, usize)>,
        message: String,
    },
    #[error("{}:{line}:{column}: {what}: environment variable {var} is not set", path.display())]
    UnsetVariable {
        path: PathBuf,
        line: usize,
        column: usize,
        what: String,
        var: String,
    },
    #[error("{}:{line}:{column}: {what}: cannot read {}", path.display(), file.display())]
    ReadSecret {
        path: PathBuf,
        line: usize,
        column: usize,
        what: String,
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// A secret value read from the environment or a file. Neither `Debug`
/// nor `Display` shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that needs it (a signature check, a
    /// request header, a job's environment).
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Where a secret is read from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SecretRef {
    /// An environment variable of the server.
    Env(String),
    /// A file's content, without its trailing line end.
    File(PathBuf),
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(var) => write!(f, "env {var}"),
            Self::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Option<Spanned<String>>,
    data_dir: Option<PathBuf>,
    database_url: Option<Spanned<SecretRef>>,
    base_url: Spanned<String>,
    #[serde(default)]
    queue: QueueFile,
    #[serde(default)]
    runner: RunnerFile,
    #[serde(default)]
    retention: RetentionFile,
    #[serde(default)]
    ui: UiFile,
    #[serde(default, rename = "repository")]
    repositories: Vec<RepositoryFile>,
    #[serde(default, rename = "runner_token")]
    runner_tokens: Vec<NamedToken>,
    #[serde(default, rename = "api_token")]
    api_tokens: Vec<NamedToken>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueFile {
    lease_seconds: Option<f64>,
    heartbeat_seconds: Option<f64>,
    requeue_interval_seconds: Option<f64>,
    max_attempts: Option<i64>,
    grace_seconds: Option<f64>,
    claim_wait_seconds: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionFile {
    log_days: Option<f64>,
    delivery_days: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UiFile {
    public: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunnerFile {
    cache_dir: Option<PathBuf>,
    work_dir: Option<PathBuf>,
    #[serde(default)]
    insecure_registries: Vec<String>,
    jobs: Option<usize>,
    isolation: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RepositoryFile {
    name: Spanned<String>,
    clone_url: String,
    forge: ForgeKind,
    api_url: Option<String>,
    webhook_secret: Spanned<SecretRef>,
    forge_token: Option<Spanned<SecretRef>>,
    #[serde(default)]
    secrets: BTreeMap<String, Spanned<SecretRef>>,
    events: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    allow_secrets_for_forks: bool,
    pipeline: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedToken {
    name: Spanned<String>,
    /// The token's SHA-256 (hex), so the file can hold it without holding
    /// the token...
    sha256: Option<Spanned<String>>,
    /// ... or a reference to the token.
    token: Option<Spanned<SecretRef>>,
}

/// The queue's timings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueSettings {
    /// How long a claim holds a run without a heartbeat.
    pub lease: Duration,
    /// How often a runner renews its lease (and learns of cancels).
    pub heartbeat: Duration,
    /// How often expired leases are looked for.
    pub requeue_interval: Duration,
    /// Attempts before a run whose runner keeps dying fails.
    pub max_attempts: i64,
    /// How long running work may go on after SIGTERM.
    pub grace: Duration,
    /// How long a runner's claim waits for work before answering none.
    pub claim_wait: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(60),
            heartbeat: Duration::from_secs(15),
            requeue_interval: Duration::from_secs(10),
            max_attempts: 3,
            grace: Duration::from_secs(300),
            claim_wait: Duration::from_secs(5),
        }
    }
}

/// How long what the store keeps is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Job logs of runs finished longer ago are deleted (default 30 days).
    pub logs: Duration,
    /// Delivery ids are forgotten after this (default 7 days): a
    /// redelivery later than that queues a new run.
    pub deliveries: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            logs: Duration::from_secs(30 * 86_400),
            deliveries: Duration::from_secs(7 * 86_400),
        }
    }
}

/// The in-process runners' machine settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunnerSettings {
    /// The local image store (default: the data dir's `cache`).
    pub cache_dir: Option<PathBuf>,
    /// Where runs keep their logs and scratch (default: the data dir's
    /// `work`).
    pub work_dir: Option<PathBuf>,
    /// Registries reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Jobs at once within one run (default: one per core).
    pub jobs: Option<usize>,
    /// How build jobs isolate RUN steps (default: namespaces).
    pub isolation: Option<IsolationMode>,
}

/// A repository the server runs pipelines for.
#[derive(Debug, Clone)]
pub struct Repository {
    /// `owner/name` as the forge names it (GitLab: the full path).
    pub name: String,
    pub clone_url: String,
    pub forge: ForgeKind,
    /// The forge's API, for commit statuses.
    pub api_url: Option<String>,
    pub webhook_secret: Secret,
    /// Without one, no statuses are sent.
    pub forge_token: Option<Secret>,
    /// Secrets the pipeline's `secrets: - env: NAME` read, by name.
    pub secrets: BTreeMap<String, Secret>,
    /// The events that may queue a run.
    pub events: Vec<pipeline_schema::EventKind>,
    /// Whether pull requests from forks get the secrets and may push.
    pub allow_secrets_for_forks: bool,
    /// The pipeline file in the repository.
    pub pipeline: PathBuf,
}

/// A token and its name; the token kept as its SHA-256 only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHash {
    pub name: String,
    /// Lower-case hex.
    pub sha256: String,
}

impl TokenHash {
    /// The hash of `token`, as stored and compared.
    #[must_use]
    pub fn of(token: &str) -> String {
        hex::encode(Sha256::digest(token.as_bytes()))
    }
}

/// The runs pages' settings (`[ui]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UiSettings {
    /// Anyone may read the pages and the API's reads (the default); when
    /// false, reading needs an API token too (a bearer header, or the
    /// pages' sign-in cookie). Writes always need one.
    pub public: bool,
}

/// The configuration, secrets read.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: Option<Secret>,
    /// The server's public URL, without a trailing slash.
    pub base_url: String,
    pub queue: QueueSettings,
    pub retention: Retention,
    pub ui: UiSettings,
    pub runner: RunnerSettings,
    pub repositories: Vec<Repository>,
    pub runner_tokens: Vec<TokenHash>,
    pub api_tokens: Vec<TokenHash>,
}

impl Config {
    /// Reads and checks `path`, reading every secret it refers to.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Checks `text` as the content of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let file: File = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            position: e.span().map(|span| line_column(text, span.start)),
            message: e.message().trim_end().to_owned(),
        })?;
        Reader { path, text }.config(file)
    }

    /// The repository named `name` (any case).
    #[must_use]
    pub fn repository(&self, name: &str) -> Option<&Repository> {
        self.repositories
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(name))
    }

    /// What `--check-config` prints: every setting, secrets by where they
    /// come from only.
    #[must_use]
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}: valid", self.path.display());
        let _ = writeln!(out, "listen: {}", self.listen);
        let _ = writeln!(out, "base URL: {}", self.base_url);
        match &self.database_url {
            Some(_) => {
                let _ = writeln!(out, "database: PostgreSQL (URL from a secret)");
            }
            None => {
                let _ = writeln!(out, "database: SQLite in {}", self.data_dir.display());
            }
        }
        let q = &self.queue;
        let _ = writeln!(
            out,
            "queue: lease {:?}, heartbeat {:?}, {} attempts, grace {:?}",
            q.lease, q.heartbeat, q.max_attempts, q.grace
        );
        let _ = writeln!(
            out,
            "retention: logs {} days, delivery ids {} days",
            self.retention.logs.as_secs() / 86_400,
            self.retention.deliveries.as_secs() / 86_400
        );
        for repo in &self.repositories {
            let events: Vec<&str> = repo.events.iter().map(|e| e.as_str()).collect();
            let _ = writeln!(
                out,
                "repository {} ({}): clone {}, events {}, {} secret(s){}, statuses {}, forks {}",
                repo.name,
                repo.forge,
                repo.clone_url,
                events.join(","),
                repo.secrets.len(),
                if repo.secrets.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({})",
                        repo.secrets.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                },
                if repo.forge_token.is_some() {
                    "on"
                } else {
                    "off (no forge_token)"
                },
                if repo.allow_secrets_for_forks {
                    "get secrets"
                } else {
                    "get no secrets"
                }
            );
        }
        let names = |tokens: &[TokenHash]| {
            tokens
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "runs pages and API reads: {}",
            if self.ui.public {
                "public"
            } else {
                "API token"
            }
        );
        let _ = writeln!(out, "runner tokens: {}", names(&self.runner_tokens));
        let _ = writeln!(out, "API tokens: {}", names(&self.api_tokens));
        out
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Reads the secrets and checks the values of one file.
struct Reader<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Reader<'_> {
    fn at(&self, span: &Range<usize>) -> (usize, usize) {
        line_column(self.text, span.start)
    }

    fn invalid(&self, span: &Range<usize>, message: String) -> ConfigError {
        let (line, column) = self.at(span);
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line,
            column,
            message,
        }
    }

    fn secret(&self, what: &str, spec: &Spanned<SecretRef>) -> Result<Secret> {
        let (line, column) = self.at(&spec.span());
        match spec.get_ref() {
            SecretRef::Env(var) => {
                std::env::var(var)
                    .map(Secret)
                    .map_err(|_| ConfigError::UnsetVariable {
                        path: self.path.to_path_buf(),
                        line,
                        column,
                        what: what.to_owned(),
                        var: var.clone(),
                    })
            }
            SecretRef::File(file) => {
                let base = self.path.parent().unwrap_or(Path::new("."));
                std::fs::read_to_string(base.join(file))
                    .map(|v| Secret(v.trim_end_matches(['\n', '\r']).to_owned()))
                    .map_err(|source| ConfigError::ReadSecret {
                        path: self.path.to_path_buf(),
                        line,
                        column,
                        what: what.to_owned(),
                        file: file.clone(),
                        source,
                    })
            }
        }
    }

    fn tokens(&self, kind: &str, tokens: &[NamedToken]) -> Result<Vec<TokenHash>> {
        let mut out: Vec<TokenHash> = Vec::new();
        for token in tokens {
            let name = token.name.get_ref().trim();
            if name.is_empty() {
                return Err(self.invalid(&token.name.span(), format!("{kind} name is empty")));
            }
            if out.iter().any(|t| t.name == name) {
                return Err(self.invalid(
                    &token.name.span(),
                    format!("{kind} {name:?} is defined twice"),
                ));
            }
            let sha256 = match (&token.sha256, &token.token) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(self.invalid(
                        &token.name.span(),
                        format!("{kind} {name:?}: give either sha256 or token"),
                    ));
                }
                (Some(sha256), None) => {
                    let hex = sha256.get_ref().to_ascii_lowercase();
                    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(self.invalid(
                            &sha256.span(),
                            format!("{kind} {name:?}: sha256 must be 64 hexadecimal digits"),
                        ));
                    }
                    hex
                }
                (None, Some(reference)) => {
                    let value = self.secret(&format!("{kind} {name:?}"), reference)?;
                    if value.expose().is_empty() {
                        return Err(
                            self.invalid(&reference.span(), format!("{kind} {name:?} is empty"))
                        );
                    }
                    TokenHash::of(value.expose())
                }
            };
            out.push(TokenHash {
                name: name.to_owned(),
                sha256,
            });
        }
        Ok(out)
    }

    fn repository(&self, repo: &RepositoryFile) -> Result<Repository> {
        let name = repo.name.get_ref().trim().to_owned();
        if name.is_empty() {
            return Err(self.invalid(&repo.name.span(), "repository name is empty".into()));
        }
        let events = match &repo.events {
            None => vec![
                pipeline_schema::EventKind::Push,
                pipeline_schema::EventKind::Tag,
                pipeline_schema::EventKind::PullRequest,
                pipeline_schema::EventKind::Manual,
            ],
            Some(list) => list
                .iter()
                .map(|e| {
                    e.get_ref()
                        .parse::<pipeline_schema::EventKind>()
                        .map_err(|_| {
                            self.invalid(
                                &e.span(),
                                format!(
                                    "repository {name:?}: unknown event {:?} (expected push, tag, pull_request or manual)",
                                    e.get_ref()
                                ),
                            )
                        })
                })
                .collect::<Result<_>>()?,
        };
        let api_url = repo
            .api_url
            .clone()
            .or_else(|| repo.forge.public_api_url().map(str::to_owned));
        let forge_token = repo
            .forge_token
            .as_ref()
            .map(|t| self.secret(&format!("repository {name:?} forge_token"), t))
            .transpose()?;
        if forge_token.is_some() && api_url.is_none() {
            return Err(self.invalid(
                &repo.name.span(),
                format!(
                    "repository {name:?}: a {} forge needs api_url (https://HOST/api/v1) to send statuses",
                    repo.forge
                ),
            ));
        }
        let secrets = repo
            .secrets
            .iter()
            .map(|(key, spec)| {
                self.secret(&format!("repository {name:?} secret {key}"), spec)
                    .map(|v| (key.clone(), v))
            })
            .collect::<Result<_>>()?;
        Ok(Repository {
            webhook_secret: self.secret(
                &format!("repository {name:?} webhook_secret"),
                &repo.webhook_secret,
            )?,
            clone_url: repo.clone_url.clone(),
            forge: repo.forge,
            api_url,
            forge_token,
            secrets,
            events,
            allow_secrets_for_forks: repo.allow_secrets_for_forks,
            pipeline: repo
                .pipeline
                .clone()
                .unwrap_or_else(|| PathBuf::from(pipeline_schema::DEFAULT_FILE)),
            name,
        })
    }

    fn config(&self, file: File) -> Result<Config> {
        let listen = match &file.listen {
            Some(listen) => listen.get_ref().parse().map_err(|_| {
                self.invalid(
                    &listen.span(),
                    format!(
                        "listen {:?} is not an address and port (e.g. 0.0.0.0:8080)",
                        listen.get_ref()
                    ),
                )
            })?,
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };
        let base_url = file.base_url.get_ref().trim_end_matches('/').to_owned();
        if url::Url::parse(&base_url).is_err() {
            return Err(self.invalid(
                &file.base_url.span(),
                format!("base_url {base_url:?} is not a URL"),
            ));
        }
        let mut repositories: Vec<Repository> = Vec::new();
        for repo in &file.repositories {
            let resolved = self.repository(repo)?;
            if repositories
                .iter()
                .any(|r| r.name.eq_ignore_ascii_case(&resolved.name))
            {
                return Err(self.invalid(
                    &repo.name.span(),
                    format!("repository {:?} is defined twice", resolved.name),
                ));
            }
            repositories.push(resolved);
        }
        let seconds = |v: Option<f64>, default: Duration| {
            v.filter(|s| s.is_finite() && *s > 0.0)
                .map_or(default, Duration::from_secs_f64)
        };
        let defaults = QueueSettings::default();
        let q = &file.queue;
        let queue = QueueSettings {
            lease: seconds(q.lease_seconds, defaults.lease),
            heartbeat: seconds(q.heartbeat_seconds, defaults.heartbeat),
            requeue_interval: seconds(q.requeue_interval_seconds, defaults.requeue_interval),
            max_attempts: q
                .max_attempts
                .filter(|n| *n > 0)
                .unwrap_or(defaults.max_attempts),
            grace: seconds(q.grace_seconds, defaults.grace),
            claim_wait: seconds(q.claim_wait_seconds, defaults.claim_wait),
        };
        let days = |v: Option<f64>, default: Duration| {
            v.filter(|d| d.is_finite() && *d > 0.0)
                .map_or(default, |d| Duration::from_secs_f64(d * 86_400.0))
        };
        let retention = Retention {
            logs: days(file.retention.log_days, Retention::default().logs),
            deliveries: days(
                file.retention.delivery_days,
                Retention::default().deliveries,
            ),
        };
        let database_url = file
            .database_url
            .as_ref()
            .map(|d| self.secret("database_url", d))
            .transpose()?;
        let isolation = file
            .runner
            .isolation
            .as_ref()
            .map(|value| match value.get_ref().as_str() {
                "auto" => Ok(IsolationMode::Auto),
                "namespace" => Ok(IsolationMode::Namespace),
                "in-place" => Ok(IsolationMode::InPlace),
                other => Err(self.invalid(
                    &value.span(),
                    format!("runner isolation {other:?} is not auto, namespace or in-place"),
                )),
            })
            .transpose()?;
        let base = self.path.parent().unwrap_or(Path::new("."));
        Ok(Config {
            path: self.path.to_path_buf(),
            listen,
            data_dir: base.join(
                file.data_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("executor-data")),
            ),
            database_url,
            base_url,
            queue,
            retention,
            ui: UiSettings {
                public: file.ui.public.unwrap_or(true),
            },
            runner: RunnerSettings {
                cache_dir: file.runner.cache_dir.map(|d| base.join(d)),
                work_dir: file.runner.work_dir.map(|d| base.join(d)),
                insecure_registries: file.runner.insecure_registries,
                jobs: file.runner.jobs,
                isolation,
            },
            repositories,
            runner_tokens: self.tokens("runner token", &file.runner_tokens)?,
            api_tokens: self.tokens("API token", &file.api_tokens)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "127.0.0.1:9000"
base_url = "https://ci.example.com/"

[queue]
lease_seconds = 2

[[repository]]
name = "acme/app"
clone_url = "https://github.com/acme/app.git"
forge = "github"
webhook_secret = { file = "hook" }
forge_token = { file = "token" }
events = ["push", "pull_request"]
secrets = { DEPLOY = { file = "deploy" } }

[[runner_token]]
name = "r1"
sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
"#;

    /// A directory holding the secret files GOOD refers to.
    fn secrets_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, value) in [
            ("hook", "hook-s3cret\n"),
            ("token", "forge-s3cret"),
            ("deploy", "deploy-s3cret"),
        ] {
            std::fs::write(dir.path().join(name), value).unwrap();
        }
        dir
    }

    #[test]
    fn a_good_file_resolves_and_its_summary_shows_no_secret() {
        let dir = secrets_dir();
        let config = Config::parse(&dir.path().join("executor.toml"), GOOD).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(config.base_url, "https://ci.example.com");
        assert_eq!(config.queue.lease, Duration::from_secs(2));
        let repo = config.repository("ACME/app").unwrap();
        assert_eq!(repo.webhook_secret.expose(), "hook-s3cret");
        assert_eq!(repo.api_url.as_deref(), Some("https://api.github.com"));
        assert_eq!(repo.secrets["DEPLOY"].expose(), "deploy-s3cret");
        assert!(!repo.allow_secrets_for_forks);
        assert_eq!(config.runner_tokens[0].sha256, TokenHash::of("test"));
        let summary = config.summary();
        let debug = format!("{config:?}");
        for secret in ["hook-s3cret", "forge-s3cret", "deploy-s3cret"] {
            assert!(!summary.contains(secret), "{summary}");
            assert!(!debug.contains(secret), "{debug}");
        }
        assert!(
            summary.contains("repository acme/app (github)"),
            "{summary}"
        );
    }

    #[test]
    fn the_pages_are_public_unless_configured_private() {
        let dir = secrets_dir();
        let path = dir.path().join("executor.toml");
        let config = Config::parse(&path, GOOD).unwrap();
        assert!(config.ui.public);
        assert!(
            config
                .summary()
                .contains("runs pages and API reads: public")
        );
        let private = format!("{GOOD}\n[ui]\npublic = false\n");
        let config = Config::parse(&path, &private).unwrap();
        assert!(!config.ui.public);
        assert!(
            config
                .summary()
                .contains("runs pages and API reads: API token")
        );
        let typo = format!("{GOOD}\n[ui]\npublik = false\n");
        assert!(Config::parse(&path, &typo).is_err());
    }

    #[test]
    fn errors_name_the_file_line_and_column() {
        let dir = secrets_dir();
        let path = dir.path().join("executor.toml");
        let shown = path.display().to_string();
        let bad = GOOD.replace("forge = \"github\"", "forge = \"gitbucket\"");
        let err = Config::parse(&path, &bad).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{shown}:11:9: ")), "{err}");
        let unset = GOOD.replace(
            "{ file = \"token\" }",
            "{ env = \"EXECUTOR_CONFIG_TEST_SURELY_UNSET\" }",
        );
        let err = Config::parse(&path, &unset).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{shown}:13:15: repository \"acme/app\" forge_token: environment variable EXECUTOR_CONFIG_TEST_SURELY_UNSET is not set"
            )
        );
        let event = GOOD.replace("\"pull_request\"]", "\"merge\"]");
        let err = Config::parse(&path, &event).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{shown}:14:19: ")), "{err}");
    }

    #[test]
    fn runner_isolation_is_read_and_a_bad_one_named() {
        let dir = secrets_dir();
        let path = dir.path().join("executor.toml");
        let with = |value: &str| {
            GOOD.replace(
                "[queue]",
                &format!("[runner]\nisolation = \"{value}\"\n\n[queue]"),
            )
        };
        let config = Config::parse(&path, &with("in-place")).unwrap();
        assert_eq!(config.runner.isolation, Some(IsolationMode::InPlace));
        assert_eq!(Config::parse(&path, GOOD).unwrap().runner.isolation, None);
        let err = Config::parse(&path, &with("chroot"))
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with(
                "executor.toml:6:13: runner isolation \"chroot\" is not auto, namespace or in-place"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_repository_defined_twice_is_refused() {
        let dir = secrets_dir();
        let start = GOOD.find("[[repository]]").unwrap();
        let end = GOOD.find("[[runner_token]]").unwrap();
        let twice = format!("{GOOD}\n{}", &GOOD[start..end]);
        let err = Config::parse(&dir.path().join("x.toml"), &twice).unwrap_err();
        assert!(err.to_string().contains("defined twice"), "{err}");
    }
}
