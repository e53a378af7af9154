//! Registry credentials from Docker's `config.json`: `auths` entries (`auth`
//! as base64 `user:password`, `username`/`password`, `identitytoken`,
//! `registrytoken`), `credHelpers` and `credsStore` run as
//! `docker-credential-NAME get` with the server on stdin; anonymous when
//! nothing matches.
//!
//! Hand-written rather than on the `docker_credential` crate: that crate
//! reads one fixed location (kaniko also looks in `/kaniko/.docker`), runs
//! helpers from the inherited `PATH` only, and cannot tell a helper's
//! "credentials not found" (anonymous access) from a broken helper without
//! string matching on its own error type; the file format itself is small.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use base64::Engine as _;
use serde::Deserialize;
use tokio::io::AsyncWriteExt as _;

/// The key Docker stores Docker Hub credentials under.
pub const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

/// Where kaniko's image keeps its config; searched last.
pub const KANIKO_DOCKER_CONFIG: &str = "/kaniko/.docker/config.json";

/// What to present to a registry.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Credential {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken`, or a helper's `<token>`
    /// user), exchanged at the token endpoint for an access token.
    IdentityToken(String),
    /// A bearer token sent as it is (`registrytoken`).
    RegistryToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anonymous => f.write_str("Anonymous"),
            Self::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Self::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
            Self::RegistryToken(_) => f.write_str("RegistryToken(<redacted>)"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read docker config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("docker config {path} is not valid JSON")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("docker config {path}: the `auth` entry for {server} is not base64 `user:password`")]
    BadAuthField { path: PathBuf, server: String },
    #[error("credential helper docker-credential-{helper} for {server} could not be run")]
    HelperSpawn {
        helper: String,
        server: String,
        #[source]
        source: std::io::Error,
    },
    #[error("credential helper docker-credential-{helper} failed for {server}: {output}")]
    HelperFailed {
        helper: String,
        server: String,
        output: String,
    },
    #[error(
        "credential helper docker-credential-{helper} printed no credentials JSON for {server}"
    )]
    HelperOutput {
        helper: String,
        server: String,
        #[source]
        source: serde_json::Error,
    },
}

type Result<T> = std::result::Result<T, AuthError>;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: HashMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperResponse {
    username: String,
    secret: String,
}

/// Credentials for registry hosts, from one docker `config.json` (or none).
#[derive(Debug, Default)]
pub struct Keychain {
    path: Option<PathBuf>,
    /// The files looked for when none existed ([`Keychain::first_of`]).
    searched: Vec<PathBuf>,
    config: ConfigFile,
    helper_path: Option<OsString>,
}

/// The config files searched, in order: `$DOCKER_CONFIG/config.json`,
/// `~/.docker/config.json`, `/kaniko/.docker/config.json`.
#[must_use]
pub fn config_candidates(docker_config: Option<&Path>, home: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(dir) = docker_config {
        out.push(dir.join("config.json"));
    }
    if let Some(home) = home {
        out.push(home.join(".docker").join("config.json"));
    }
    out.push(PathBuf::from(KANIKO_DOCKER_CONFIG));
    out
}

impl Keychain {
    /// No credentials: every registry is accessed anonymously.
    #[must_use]
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// The first existing file of [`config_candidates`] for this process's
    /// `DOCKER_CONFIG` and `HOME`; anonymous when there is none. Like the
    /// Docker CLI, one file is used, not a merge of several.
    pub fn from_env() -> Result<Self> {
        let docker_config = std::env::var_os("DOCKER_CONFIG").map(PathBuf::from);
        let home = std::env::var_os("HOME").map(PathBuf::from);
        Self::first_of(&config_candidates(
            docker_config.as_deref(),
            home.as_deref(),
        ))
    }

    /// The first of `paths` that exists; anonymous when none does.
    pub fn first_of(paths: &[PathBuf]) -> Result<Self> {
        match paths.iter().find(|p| p.is_file()) {
            Some(path) => Self::from_file(path),
            None => Ok(Self {
                searched: paths.to_vec(),
                ..Self::anonymous()
            }),
        }
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config = if bytes.iter().all(u8::is_ascii_whitespace) {
            ConfigFile::default()
        } else {
            serde_json::from_slice(&bytes).map_err(|source| AuthError::Parse {
                path: path.to_path_buf(),
                source,
            })?
        };
        tracing::debug!(path = %path.display(), "using docker config");
        Ok(Self {
            path: Some(path.to_path_buf()),
            searched: Vec::new(),
            config,
            helper_path: None,
        })
    }

    /// Looks up `docker-credential-*` helpers on this `PATH` instead of the
    /// process's own.
    #[must_use]
    pub fn with_helper_path(mut self, path: impl Into<OsString>) -> Self {
        self.helper_path = Some(path.into());
        self
    }

    /// The config file in use, if any.
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Where credentials were looked for, for messages: the config file in
    /// use, or the files searched when none exists.
    #[must_use]
    pub fn describe(&self) -> String {
        match &self.path {
            Some(path) => path.display().to_string(),
            None if self.searched.is_empty() => "no docker config".to_string(),
            None => {
                let names: Vec<String> = self
                    .searched
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                format!("{} (none exists)", names.join(", "))
            }
        }
    }

    /// The credential for a registry host (`host[:port]`, `docker.io` and
    /// `index.docker.io` both meaning Docker Hub). Docker's order: a
    /// `credHelpers` entry for the server, then an `auths` entry, then
    /// `credsStore`, then anonymous.
    pub async fn credential(&self, host: &str) -> Result<Credential> {
        let server = server_key(host);
        if let Some(helper) = self
            .config
            .cred_helpers
            .get(&server)
            .or_else(|| self.config.cred_helpers.get(host))
            .filter(|h| !h.is_empty())
        {
            return self.run_helper(helper, &server).await;
        }
        if let Some(entry) = self.auth_entry(&server)
            && let Some(credential) = self.entry_credential(entry, &server)?
        {
            return Ok(credential);
        }
        if let Some(store) = self.config.creds_store.as_deref().filter(|s| !s.is_empty()) {
            return self.run_helper(store, &server).await;
        }
        Ok(Credential::Anonymous)
    }

    fn auth_entry(&self, server: &str) -> Option<&AuthEntry> {
        if let Some(entry) = self.config.auths.get(server) {
            return Some(entry);
        }
        let wanted = normalize_host(server);
        // Sorted, so that two keys for one host resolve the same way each run.
        let mut keys: Vec<&String> = self.config.auths.keys().collect();
        keys.sort();
        keys.into_iter()
            .find(|k| normalize_host(k) == wanted)
            .and_then(|k| self.config.auths.get(k))
    }

    fn entry_credential(&self, entry: &AuthEntry, server: &str) -> Result<Option<Credential>> {
        if let Some(token) = entry.identitytoken.as_deref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::IdentityToken(token.to_string())));
        }
        if let Some(token) = entry.registrytoken.as_deref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::RegistryToken(token.to_string())));
        }
        if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
            let bad = || AuthError::BadAuthField {
                path: self.path.clone().unwrap_or_default(),
                server: server.to_string(),
            };
            let engine = base64::engine::GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                base64::engine::GeneralPurposeConfig::new()
                    .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
            );
            let decoded = engine.decode(auth.trim()).map_err(|_| bad())?;
            let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
            let (username, password) = decoded.split_once(':').ok_or_else(bad)?;
            return Ok(Some(Credential::Basic {
                username: username.to_string(),
                password: password.to_string(),
            }));
        }
        if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
            return Ok(Some(Credential::Basic {
                username: username.clone(),
                password: password.clone(),
            }));
        }
        Ok(None)
    }

    async fn run_helper(&self, helper: &str, server: &str) -> Result<Credential> {
        let program = format!("docker-credential-{helper}");
        let mut cmd = tokio::process::Command::new(&program);
        cmd.arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(path) = &self.helper_path {
            // On Unix the child's PATH is also where the program is looked up.
            cmd.env("PATH", path);
        }
        let spawn_err = |source| AuthError::HelperSpawn {
            helper: helper.to_string(),
            server: server.to_string(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn_err)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(server.as_bytes())
                .await
                .map_err(spawn_err)?;
        }
        let output = child.wait_with_output().await.map_err(spawn_err)?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            let text = format!(
                "{}{}",
                stdout.trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
            // The helper protocol's answer for "nothing stored for this server".
            if text.contains("credentials not found") {
                tracing::debug!(helper, server, "credential helper has no credentials");
                return Ok(Credential::Anonymous);
            }
            return Err(AuthError::HelperFailed {
                helper: helper.to_string(),
                server: server.to_string(),
                output: text,
            });
        }
        let response: HelperResponse =
            serde_json::from_str(&stdout).map_err(|source| AuthError::HelperOutput {
                helper: helper.to_string(),
                server: server.to_string(),
                source,
            })?;
        Ok(if response.username == "<token>" {
            Credential::IdentityToken(response.secret)
        } else if response.username.is_empty() && response.secret.is_empty() {
            Credential::Anonymous
        } else {
            Credential::Basic {
                username: response.username,
                password: response.secret,
            }
        })
    }
}

/// The key Docker uses for a registry host: Docker Hub's legacy URL, else
/// the host itself.
#[must_use]
pub fn server_key(host: &str) -> String {
    if is_docker_hub_host(host) {
        DOCKER_HUB_SERVER.to_string()
    } else {
        host.to_string()
    }
}

fn is_docker_hub_host(host: &str) -> bool {
    matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io" | DOCKER_HUB_SERVER
    )
}

/// A config key reduced to its host, as Docker's `ConvertToHostname` does
/// (`https://host:5000/v2/` is `host:5000`), with Docker Hub's names folded.
fn normalize_host(key: &str) -> String {
    let stripped = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = stripped.split('/').next().unwrap_or(stripped);
    if is_docker_hub_host(host) {
        "index.docker.io".to_string()
    } else {
        host.to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn keychain(json: &str) -> (tempfile::TempDir, Keychain) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, json).unwrap();
        let keychain = Keychain::from_file(&path).unwrap();
        (dir, keychain)
    }

    fn basic(u: &str, p: &str) -> Credential {
        Credential::Basic {
            username: u.into(),
            password: p.into(),
        }
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[tokio::test]
    async fn auths_entries() {
        let json = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "registry.example:5000": {{"username": "u", "password": "p"}},
                "https://old.example/v2/": {{"auth": "{}"}},
                "token.example": {{"auth": "", "identitytoken": "refresh"}},
                "bearer.example": {{"registrytoken": "access"}},
                "empty.example": {{}}
            }}}}"#,
            b64("hub:secret:with:colons"),
            b64("old:pw")
        );
        let (_d, k) = keychain(&json);
        assert_eq!(
            k.credential("index.docker.io").await.unwrap(),
            basic("hub", "secret:with:colons")
        );
        assert_eq!(
            k.credential("docker.io").await.unwrap(),
            basic("hub", "secret:with:colons")
        );
        assert_eq!(
            k.credential("registry.example:5000").await.unwrap(),
            basic("u", "p")
        );
        assert_eq!(
            k.credential("old.example").await.unwrap(),
            basic("old", "pw")
        );
        assert_eq!(
            k.credential("token.example").await.unwrap(),
            Credential::IdentityToken("refresh".into())
        );
        assert_eq!(
            k.credential("bearer.example").await.unwrap(),
            Credential::RegistryToken("access".into())
        );
        assert_eq!(
            k.credential("empty.example").await.unwrap(),
            Credential::Anonymous
        );
        assert_eq!(
            k.credential("other.example").await.unwrap(),
            Credential::Anonymous
        );
        // Another port is another registry.
        assert_eq!(
            k.credential("registry.example:6000").await.unwrap(),
            Credential::Anonymous
        );
    }

    #[tokio::test]
    async fn bad_files_are_errors_naming_the_file() {
        let (_d, k) = keychain(r#"{"auths": {"h.example": {"auth": "!!!"}}}"#);
        let e = k.credential("h.example").await.unwrap_err();
        assert!(matches!(e, AuthError::BadAuthField { .. }), "{e}");
        assert!(e.to_string().contains("config.json"), "{e}");
        assert!(e.to_string().contains("h.example"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, "{not json").unwrap();
        let e = Keychain::from_file(&path).unwrap_err();
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");

        std::fs::write(&path, "").unwrap();
        let k = Keychain::from_file(&path).unwrap();
        assert_eq!(k.credential("h").await.unwrap(), Credential::Anonymous);
    }

    #[test]
    fn search_order() {
        let c = config_candidates(Some(Path::new("/dc")), Some(Path::new("/home/u")));
        assert_eq!(
            c,
            [
                PathBuf::from("/dc/config.json"),
                PathBuf::from("/home/u/.docker/config.json"),
                PathBuf::from(KANIKO_DOCKER_CONFIG),
            ]
        );
        let dir = tempfile::tempdir().unwrap();
        let home_cfg = dir.path().join("home/.docker/config.json");
        std::fs::create_dir_all(home_cfg.parent().unwrap()).unwrap();
        std::fs::write(&home_cfg, "{}").unwrap();
        let k = Keychain::first_of(&config_candidates(
            Some(&dir.path().join("missing")),
            Some(&dir.path().join("home")),
        ))
        .unwrap();
        assert_eq!(k.path(), Some(home_cfg.as_path()));
        let none = Keychain::first_of(&[dir.path().join("nope.json")]).unwrap();
        assert_eq!(none.path(), None);
    }

    /// Writes `docker-credential-test`, which answers for `known.example`
    /// and Docker Hub, records what it read on stdin, and says "credentials
    /// not found" for anything else.
    fn fake_helper(dir: &Path) {
        let script = format!(
            r#"#!/bin/sh
[ "$1" = get ] || exit 3
read -r server
echo "$server" >> "{log}"
case "$server" in
  known.example) echo '{{"ServerURL":"known.example","Username":"helper-user","Secret":"helper-pass"}}' ;;
  https://index.docker.io/v1/) echo '{{"ServerURL":"x","Username":"<token>","Secret":"hub-refresh"}}' ;;
  broken.example) echo 'boom' >&2; exit 1 ;;
  *) echo 'credentials not found in native keychain'; exit 1 ;;
esac
"#,
            log = dir.join("helper.log").display()
        );
        let path = dir.join("docker-credential-test");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn helper_path(dir: &Path) -> OsString {
        let mut p = OsString::from(dir);
        p.push(":/usr/bin:/bin");
        p
    }

    #[tokio::test]
    async fn creds_store_and_helpers() {
        let helpers = tempfile::tempdir().unwrap();
        fake_helper(helpers.path());
        let (_d, k) = keychain(
            r#"{"credsStore": "test",
                "credHelpers": {"helped.example": "test", "missing.example": "nonexistent"},
                "auths": {"plain.example": {"username": "a", "password": "b"}}}"#,
        );
        let k = k.with_helper_path(helper_path(helpers.path()));
        assert_eq!(
            k.credential("known.example").await.unwrap(),
            basic("helper-user", "helper-pass")
        );
        assert_eq!(
            k.credential("index.docker.io").await.unwrap(),
            Credential::IdentityToken("hub-refresh".into())
        );
        // `auths` wins over `credsStore`.
        assert_eq!(
            k.credential("plain.example").await.unwrap(),
            basic("a", "b")
        );
        // The helper's "not found" is anonymous access.
        assert_eq!(
            k.credential("unknown.example").await.unwrap(),
            Credential::Anonymous
        );
        // credHelpers entries go to their helper with the host on stdin.
        assert_eq!(
            k.credential("helped.example").await.unwrap(),
            Credential::Anonymous
        );
        let e = k.credential("broken.example").await.unwrap_err();
        assert!(e.to_string().contains("boom"), "{e}");
        assert!(e.to_string().contains("docker-credential-test"), "{e}");
        let e = k.credential("missing.example").await.unwrap_err();
        assert!(matches!(e, AuthError::HelperSpawn { .. }), "{e}");
        let log = std::fs::read_to_string(helpers.path().join("helper.log")).unwrap();
        assert_eq!(
            log.lines().collect::<Vec<_>>(),
            [
                "known.example",
                "https://index.docker.io/v1/",
                "unknown.example",
                "helped.example",
                "broken.example"
            ]
        );
    }
}
