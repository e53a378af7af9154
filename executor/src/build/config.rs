//! The image config as a build changes it: Docker's image config format (the
//! OCI config plus Docker's `Healthcheck`, `OnBuild` and `Shell`, as BuildKit
//! writes it), and what each config-only Dockerfile instruction does to it
//! and to the history. No I/O: the build engine feeds it expanded
//! instructions and layer digests.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Image configs' dates are the storage layer's (`executor_cache::time`).
pub use executor_cache::time::rfc3339;

use crate::dockerfile::gopath;
use crate::dockerfile::instructions::{Command, Healthcheck, Instruction, Kind};
use crate::platform::Platform;

/// Docker's default `PATH`, used when an image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The `comment` of history entries this builder writes.
pub const HISTORY_COMMENT: &str = "executor.dockerfile.v0";

/// The image config (`application/vnd.oci.image.config.v1+json`). Fields
/// this builder does not know are kept as they came from the base image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    pub architecture: String,
    pub os: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default)]
    pub config: ContainerConfig,
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The runtime defaults of the image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(
        default,
        skip_serializing_if = "BTreeSet::is_empty",
        with = "set_as_object"
    )]
    pub exposed_ports: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        default,
        skip_serializing_if = "BTreeSet::is_empty",
        with = "set_as_object"
    )]
    pub volumes: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub args_escaped: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_build: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shell: Vec<String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Go's `map[string]struct{}`: a set written as `{"key": {}}`.
mod set_as_object {
    use std::collections::{BTreeMap, BTreeSet};

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Empty {}

    pub fn serialize<S: Serializer>(set: &BTreeSet<String>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(set.iter().map(|k| (k, Empty {})))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeSet<String>, D::Error> {
        let map: Option<BTreeMap<String, serde_json::Value>> = Option::deserialize(d)?;
        Ok(map.unwrap_or_default().into_keys().collect())
    }
}

/// Docker's `HealthConfig`: durations in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub interval: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_period: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_interval: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u64,
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

impl Default for RootFs {
    fn default() -> Self {
        Self {
            kind: "layers".to_string(),
            diff_ids: Vec::new(),
        }
    }
}

/// One history entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

impl ImageConfig {
    /// The config of `FROM scratch` for `platform`: BuildKit gives it the
    /// default `PATH` and `/` as working directory.
    #[must_use]
    pub fn scratch(platform: &Platform) -> Self {
        Self {
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            variant: platform.variant.clone(),
            config: ContainerConfig {
                env: vec![format!("PATH={DEFAULT_PATH}")],
                working_dir: "/".to_string(),
                ..ContainerConfig::default()
            },
            ..Self::default()
        }
    }

    /// Reads a base image's config.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The config as canonical JSON bytes (stable field order), for a blob.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// The value of an environment variable in the config.
    #[must_use]
    pub fn env_var(&self, key: &str) -> Option<&str> {
        self.config
            .env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix(key)?.strip_prefix('='))
    }

    /// The environment as pairs, for expanding the stage's instructions.
    #[must_use]
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        self.config
            .env
            .iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (e.clone(), String::new()),
            })
            .collect()
    }

    /// Sets `key=value` in the environment, replacing an earlier value in
    /// place as Docker does.
    pub fn set_env(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        if let Some(slot) = self
            .config
            .env
            .iter_mut()
            .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
        {
            *slot = entry;
        } else {
            self.config.env.push(entry);
        }
    }

    /// The shell for shell-form commands: `SHELL`, else `/bin/sh -c`.
    #[must_use]
    pub fn shell(&self) -> Vec<String> {
        if self.config.shell.is_empty() {
            vec!["/bin/sh".to_string(), "-c".to_string()]
        } else {
            self.config.shell.clone()
        }
    }

    /// Appends a history entry.
    pub fn add_history(&mut self, created_by: String, empty_layer: bool, created: Option<&str>) {
        self.history.push(History {
            created: created.map(str::to_string),
            created_by: Some(created_by),
            author: None,
            comment: Some(HISTORY_COMMENT.to_string()),
            empty_layer,
        });
    }

    /// Records a layer: its diffID in `rootfs` and a history entry.
    pub fn add_layer(&mut self, diff_id: &str, created_by: String, created: Option<&str>) {
        self.rootfs.diff_ids.push(diff_id.to_string());
        self.add_history(created_by, false, created);
    }
}

/// The per-stage state Docker keeps besides the config: whether CMD was set
/// in this stage (ENTRYPOINT resets an inherited CMD, not one set here).
#[derive(Debug, Clone, Copy, Default)]
pub struct StageFlags {
    pub cmd_set: bool,
}

/// What a config-only instruction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The config changed; no layer.
    Config,
    /// The instruction needs a layer or a process; the engine handles it.
    NotConfigOnly,
}

/// Applies a config-only instruction (already expanded) to `image`, with the
/// history entry Docker writes. `created` is the history time.
pub fn apply(
    image: &mut ImageConfig,
    flags: &mut StageFlags,
    instruction: &Instruction,
    created: Option<&str>,
) -> Applied {
    let created_by = instruction.display();
    match &instruction.kind {
        Kind::Env(pairs) => {
            for kv in &pairs.0 {
                image.set_env(&kv.key, &kv.value);
            }
        }
        Kind::Label(pairs) => {
            for kv in &pairs.0 {
                image.config.labels.insert(kv.key.clone(), kv.value.clone());
            }
        }
        Kind::Maintainer(name) => image.author = Some(name.clone()),
        Kind::User(user) => image.config.user.clone_from(user),
        Kind::Expose(ports) => {
            for port in ports {
                let key = if port.contains('/') {
                    let (p, proto) = port.split_once('/').unwrap_or((port, "tcp"));
                    format!("{p}/{}", proto.to_ascii_lowercase())
                } else {
                    format!("{port}/tcp")
                };
                image.config.exposed_ports.insert(key);
            }
        }
        Kind::Volume(paths) => {
            for path in paths {
                image.config.volumes.insert(path.clone());
            }
        }
        Kind::StopSignal(signal) => image.config.stop_signal.clone_from(signal),
        Kind::Shell(shell) => image.config.shell.clone_from(shell),
        Kind::Cmd(command) => {
            image.config.cmd = Some(command_vector(image, command));
            image.config.args_escaped = false;
            flags.cmd_set = true;
        }
        Kind::Entrypoint(command) => {
            image.config.entrypoint = Some(command_vector(image, command));
            image.config.args_escaped = false;
            // Docker: an ENTRYPOINT resets a CMD inherited from the base; a
            // CMD set earlier in this stage stays.
            if !flags.cmd_set {
                image.config.cmd = None;
            }
        }
        Kind::Healthcheck(check) => {
            image.config.healthcheck = Some(health_config(check));
        }
        Kind::Onbuild(onbuild) => image.config.on_build.push(onbuild.expression.clone()),
        Kind::Arg(_) => {}
        Kind::Workdir(dir) => {
            image.config.working_dir = resolve_workdir(&image.config.working_dir, dir);
            // WORKDIR also creates the directory: the engine adds the layer
            // and the history entry.
            return Applied::NotConfigOnly;
        }
        Kind::From(_) | Kind::Run(_) | Kind::Copy(_) | Kind::Add(_) => {
            return Applied::NotConfigOnly;
        }
    }
    image.add_history(created_by, true, created);
    Applied::Config
}

/// An absolute, cleaned WORKDIR: relative paths are relative to the current
/// one, as Docker does.
#[must_use]
pub fn resolve_workdir(current: &str, dir: &str) -> String {
    if dir.starts_with('/') {
        gopath::clean(dir)
    } else {
        let base = if current.is_empty() { "/" } else { current };
        gopath::clean(&format!("{base}/{dir}"))
    }
}

/// Exec form as is; shell form wrapped in the image's shell.
fn command_vector(image: &ImageConfig, command: &Command) -> Vec<String> {
    match command {
        Command::Exec(args) => args.clone(),
        Command::Shell(line) => {
            let mut argv = image.shell();
            argv.push(line.clone());
            argv
        }
    }
}

fn nanos(d: Option<Duration>) -> u64 {
    d.map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn health_config(check: &Healthcheck) -> HealthConfig {
    match check {
        Healthcheck::None => HealthConfig {
            test: vec!["NONE".to_string()],
            ..HealthConfig::default()
        },
        Healthcheck::Check {
            test,
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
        } => HealthConfig {
            test: test.clone(),
            interval: nanos(*interval),
            timeout: nanos(*timeout),
            start_period: nanos(*start_period),
            start_interval: nanos(*start_interval),
            retries: retries.map_or(0, u64::from),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::plan::{Options, expand_all, plan};

    /// Applies every config-only instruction of the last stage to a scratch
    /// config.
    fn build(text: &str) -> ImageConfig {
        let opts = Options::default();
        let p = plan(text, &opts).unwrap();
        let stages = expand_all(&p, &opts);
        assert!(stages.errors.is_empty(), "{:?}", stages.errors);
        let mut image = ImageConfig::scratch(&"linux/amd64".parse().unwrap());
        let mut flags = StageFlags::default();
        for instruction in &stages.stages.last().unwrap().instructions[1..] {
            apply(
                &mut image,
                &mut flags,
                instruction,
                Some("2024-01-01T00:00:00Z"),
            );
        }
        image
    }

    #[test]
    fn env_replaces_in_place_and_label_user_workdir() {
        let image = build(
            "FROM scratch\nENV A=1 PATH=/x\nENV A=2\nLABEL a=b \"c d\"=e\nUSER app\nWORKDIR /srv\nWORKDIR sub/../data\n",
        );
        assert_eq!(image.config.env, ["PATH=/x", "A=2"]);
        assert_eq!(image.config.labels["a"], "b");
        assert_eq!(image.config.labels["c d"], "e");
        assert_eq!(image.config.user, "app");
        assert_eq!(image.config.working_dir, "/srv/data");
        assert_eq!(image.env_var("A"), Some("2"));
    }

    #[test]
    fn cmd_and_entrypoint_reset_rules() {
        let mut base = build("FROM scratch\nCMD [\"base\"]\n");
        let mut flags = StageFlags::default();
        // A new stage on this base: ENTRYPOINT resets the inherited CMD.
        let p = plan("FROM scratch\nENTRYPOINT [\"ep\"]\n", &Options::default()).unwrap();
        let ep = &p.stages[0].instructions[0];
        apply(&mut base, &mut flags, ep, None);
        assert_eq!(base.config.cmd, None);
        assert_eq!(
            base.config.entrypoint.as_deref(),
            Some(&["ep".to_string()][..])
        );
        // CMD then ENTRYPOINT in one stage: CMD stays.
        let image = build("FROM scratch\nCMD [\"c\"]\nENTRYPOINT run me\n");
        assert_eq!(image.config.cmd.as_deref(), Some(&["c".to_string()][..]));
        assert_eq!(
            image.config.entrypoint.as_deref(),
            Some(
                &[
                    "/bin/sh".to_string(),
                    "-c".to_string(),
                    "run me".to_string()
                ][..]
            )
        );
        let image = build("FROM scratch\nSHELL [\"/bin/bash\", \"-ec\"]\nCMD echo hi\n");
        assert_eq!(
            image.config.cmd.as_deref(),
            Some(
                &[
                    "/bin/bash".to_string(),
                    "-ec".to_string(),
                    "echo hi".to_string()
                ][..]
            )
        );
    }

    #[test]
    fn ports_volumes_signal_health_onbuild() {
        let image = build(
            "FROM scratch\nEXPOSE 80 53/UDP\nVOLUME [\"/data\", \"/b\"]\nSTOPSIGNAL SIGTERM\nHEALTHCHECK --interval=5s --retries=2 CMD curl -f x\nONBUILD RUN echo hi\n",
        );
        assert!(image.config.exposed_ports.contains("80/tcp"));
        assert!(image.config.exposed_ports.contains("53/udp"));
        assert!(image.config.volumes.contains("/b"));
        assert_eq!(image.config.stop_signal, "SIGTERM");
        let hc = image.config.healthcheck.as_ref().unwrap();
        assert_eq!(hc.test, ["CMD-SHELL", "curl -f x"]);
        assert_eq!(hc.interval, 5_000_000_000);
        assert_eq!(hc.retries, 2);
        assert_eq!(image.config.on_build, ["RUN echo hi"]);
        let json: serde_json::Value = serde_json::from_slice(&image.to_json().unwrap()).unwrap();
        assert_eq!(
            json["config"]["ExposedPorts"]["80/tcp"],
            serde_json::json!({})
        );
        assert_eq!(json["config"]["Healthcheck"]["Interval"], 5_000_000_000u64);
        assert_eq!(json["history"][0]["empty_layer"], true);
        assert_eq!(json["history"][0]["comment"], HISTORY_COMMENT);
    }

    #[test]
    fn base_config_round_trips_unknown_fields() {
        let base = br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["sh"],"Custom":1},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]},"history":[{"created_by":"x"}],"os.features":["a"]}"#;
        let image = ImageConfig::from_json(base).unwrap();
        assert_eq!(image.config.extra["Custom"], 1);
        let again: serde_json::Value = serde_json::from_slice(&image.to_json().unwrap()).unwrap();
        assert_eq!(again["os.features"][0], "a");
        assert_eq!(again["config"]["Custom"], 1);
        assert_eq!(again["rootfs"]["diff_ids"][0], "sha256:aa");
    }

    #[test]
    fn workdir_resolution() {
        assert_eq!(resolve_workdir("", "app"), "/app");
        assert_eq!(resolve_workdir("/a", "b/../c"), "/a/c");
        assert_eq!(resolve_workdir("/a", "/x//y/"), "/x/y");
    }
}
