//! The image config as a build changes it: what each config-only
//! Dockerfile instruction does to the config ([`crate::rootfs::config`]
//! holds the format) and to the history. No I/O: the build engine feeds it
//! expanded instructions and layer digests.

use std::time::Duration;

/// Image configs' dates are the storage layer's (`executor_cache::time`).
pub use executor_cache::time::rfc3339;

use crate::dockerfile::gopath;
use crate::dockerfile::instructions::{Command, Healthcheck, Instruction, Kind};

pub use crate::rootfs::config::{
    ContainerConfig, DEFAULT_PATH, HISTORY_COMMENT, HealthConfig, History, ImageConfig, RootFs,
};

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
    fn workdir_resolution() {
        assert_eq!(resolve_workdir("", "app"), "/app");
        assert_eq!(resolve_workdir("/a", "b/../c"), "/a/c");
        assert_eq!(resolve_workdir("/a", "/x//y/"), "/x/y");
    }
}
