//! What one `executor build` is asked to do, resolved from flags and the
//! environment by the command layer.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::cache::CacheSettings;
use super::run::{Secret, SshAgent};
use crate::platform::Platform;
use crate::registry::ImageReference;
use crate::rootfs::SnapshotMode;
use crate::sandbox::{Profile, Seccomp, SeccompError, Security};

/// In serde too: a pipeline's build job hands its settings to the `executor
/// build` it starts as a file (`--settings-file`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[allow(clippy::struct_excessive_bools)]
pub struct Settings {
    /// `--context` as given: a directory, `tar://...`, `git://...`, an
    /// https git URL.
    pub context: String,
    pub context_sub_path: Option<String>,
    pub dockerfile: PathBuf,
    /// `--git` options, `KEY=VALUE`.
    pub git: Vec<String>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// `--label` values, applied after the Dockerfile's.
    pub labels: Vec<(String, String)>,
    pub destinations: Vec<ImageReference>,
    /// False with `--no-push`.
    pub push: bool,
    pub tar_path: Option<PathBuf>,
    pub oci_layout_path: Option<PathBuf>,
    pub digest_file: Option<PathBuf>,
    pub image_name_with_digest_file: Option<PathBuf>,
    pub image_name_tag_with_digest_file: Option<PathBuf>,
    pub platform: Platform,
    /// zstd instead of gzip.
    pub zstd: bool,
    pub compression_level: Option<i32>,
    /// Compression threads per layer; 0 for one per core.
    pub compression_threads: usize,
    pub insecure_push: bool,
    pub insecure_pull: bool,
    pub insecure_registries: Vec<String>,
    pub skip_tls_verify_push: bool,
    pub skip_tls_verify_pull: bool,
    pub skip_tls_verify_registries: Vec<String>,
    pub registry_certificates: Vec<(String, PathBuf)>,
    pub registry_mirrors: Vec<String>,
    pub push_retry: u32,
    pub image_download_retry: u32,
    /// `--registry-timeout`: seconds a registry request may go without
    /// moving before it fails (and is retried).
    #[serde(default = "default_registry_timeout")]
    pub registry_timeout_secs: u64,
    /// The local image store.
    pub cache_dir: PathBuf,
    /// How RUN steps are snapshotted.
    pub snapshot_mode: SnapshotMode,
    /// One layer per stage, after its base (kaniko's `--single-snapshot`).
    pub single_snapshot: bool,
    /// Image paths left out of every layer RUN writes (absolute).
    pub ignore_paths: Vec<PathBuf>,
    /// `--secret` values RUN steps may mount.
    pub secrets: Vec<Secret>,
    /// `--ssh` agents RUN steps may mount.
    pub ssh: Vec<SshAgent>,
    /// `SOURCE_DATE_EPOCH` (or 0 with `--reproducible`): the time the config
    /// and history record, and the latest file time a layer holds.
    pub source_date_epoch: Option<i64>,
    /// `--metrics-file`: the build's summary as JSON.
    pub metrics_file: Option<PathBuf>,
    /// `--cache-mount-max-size`: a RUN cache mount larger than this when a
    /// step takes it starts over empty.
    #[serde(default)]
    pub cache_mount_max_size: Option<u64>,
    /// `--cache`: the layer cache's settings; `None` without it.
    pub cache: Option<CacheSettings>,
    /// `--isolation`: how RUN steps are isolated.
    #[serde(default)]
    pub isolation: IsolationMode,
    /// `--force`: `--isolation=in-place` even where no container is seen.
    #[serde(default)]
    pub force: bool,
    /// `--security-opt`: RUN steps' seccomp profile and no_new_privs.
    #[serde(default)]
    pub security: SecurityOptions,
}

/// `--security-opt` values, as buildah takes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SecurityOptions {
    pub seccomp: SeccompOption,
    /// `no-new-privileges`: RUN steps cannot gain privileges through
    /// setuid or file-capability programs.
    #[serde(default)]
    pub no_new_privileges: bool,
}

/// `seccomp=...`: the filter RUN steps get.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SeccompOption {
    /// Docker's default profile.
    #[default]
    Default,
    /// `seccomp=unconfined`: none.
    Unconfined,
    /// `seccomp=PATH`: a Docker-format profile.
    Profile(PathBuf),
}

impl SecurityOptions {
    /// Parses `--security-opt` values: `seccomp=unconfined`,
    /// `seccomp=PATH` (a Docker-format JSON profile), `no-new-privileges`
    /// (also `=true` or `=false`, or with a `:` as Docker writes it).
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Self, String> {
        let mut options = SecurityOptions::default();
        for value in values {
            let value = value.as_ref();
            let (key, setting) = match value.split_once(['=', ':']) {
                Some((key, setting)) => (key, Some(setting)),
                None => (value, None),
            };
            match (key, setting) {
                ("seccomp", Some("unconfined")) => options.seccomp = SeccompOption::Unconfined,
                ("seccomp", Some(path)) if !path.is_empty() => {
                    options.seccomp = SeccompOption::Profile(PathBuf::from(path));
                }
                ("no-new-privileges", None | Some("true")) => options.no_new_privileges = true,
                ("no-new-privileges", Some("false")) => options.no_new_privileges = false,
                _ => {
                    return Err(format!(
                        "invalid --security-opt {value:?}\nhint: expected seccomp=unconfined, seccomp=PATH (a Docker-format profile) or no-new-privileges"
                    ));
                }
            }
        }
        Ok(options)
    }

    /// What the sandbox gets: the profile read and checked.
    pub fn resolve(&self) -> Result<Security, SeccompError> {
        let seccomp = match &self.seccomp {
            SeccompOption::Default => Seccomp::Default,
            SeccompOption::Unconfined => Seccomp::Unconfined,
            SeccompOption::Profile(path) => Seccomp::Profile(Arc::new(Profile::load(path)?)),
        };
        Ok(Security {
            seccomp,
            no_new_privileges: self.no_new_privileges,
        })
    }
}

/// How RUN steps are isolated (`--isolation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum IsolationMode {
    /// Namespaces where they can be made, else in place inside a
    /// container, else the namespaces' error.
    #[default]
    Auto,
    /// Fresh namespaces and `pivot_root` (needs CAP_SYS_ADMIN or a user
    /// namespace).
    Namespace,
    /// kaniko's model: in the executor's own root (a container only).
    InPlace,
}

fn default_registry_timeout() -> u64 {
    crate::registry::DEFAULT_TIMEOUT.as_secs()
}

/// `SOURCE_DATE_EPOCH` that does not read as whole seconds since 1970.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid SOURCE_DATE_EPOCH {0:?}: expected whole seconds since 1970-01-01")]
pub struct SourceDateEpochError(pub String);

/// [`Settings::source_date_epoch`]: `SOURCE_DATE_EPOCH` from a build arg,
/// else this process's environment; 0 with `reproducible` and neither.
pub fn source_date_epoch(
    build_args: &BTreeMap<String, String>,
    reproducible: bool,
) -> Result<Option<i64>, SourceDateEpochError> {
    let value = build_args
        .get("SOURCE_DATE_EPOCH")
        .cloned()
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok())
        .filter(|v| !v.is_empty());
    match value {
        Some(v) => match v.trim().parse::<i64>() {
            Ok(secs) if secs >= 0 => Ok(Some(secs)),
            _ => Err(SourceDateEpochError(v)),
        },
        None => Ok(reproducible.then_some(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_options_read_as_buildah_takes_them() {
        let parse = |values: &[&str]| SecurityOptions::parse(values);
        assert_eq!(parse(&[]), Ok(SecurityOptions::default()));
        assert_eq!(
            parse(&["seccomp=unconfined", "no-new-privileges"]),
            Ok(SecurityOptions {
                seccomp: SeccompOption::Unconfined,
                no_new_privileges: true,
            })
        );
        assert_eq!(
            parse(&["seccomp=/etc/profile.json", "no-new-privileges:true"]),
            Ok(SecurityOptions {
                seccomp: SeccompOption::Profile("/etc/profile.json".into()),
                no_new_privileges: true,
            })
        );
        assert_eq!(
            parse(&["no-new-privileges", "no-new-privileges=false"]),
            Ok(SecurityOptions::default())
        );
        for wrong in [
            "seccomp",
            "seccomp=",
            "label=disable",
            "no-new-privileges=yes",
        ] {
            let message = parse(&[wrong]).unwrap_err();
            assert!(
                message.starts_with(&format!("invalid --security-opt {wrong:?}\nhint: ")),
                "{message}"
            );
        }
    }

    #[test]
    fn a_profile_option_is_read_when_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("profile.json");
        std::fs::write(&path, r#"{"defaultAction": "SCMP_ACT_ALLOW"}"#).unwrap();
        let options = SecurityOptions {
            seccomp: SeccompOption::Profile(path.clone()),
            no_new_privileges: false,
        };
        assert!(matches!(
            options.resolve().unwrap().seccomp,
            Seccomp::Profile(_)
        ));
        std::fs::remove_file(&path).unwrap();
        let err = options.resolve().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot read the seccomp profile {}", path.display())
        );
        assert_eq!(
            SecurityOptions::default().resolve().unwrap(),
            Security::default()
        );
    }
}
