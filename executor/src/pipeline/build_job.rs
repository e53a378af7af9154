//! A build job: its `build:` spec, with the job's variables expanded,
//! turned into the build's [`Settings`] (the typed contract between a
//! pipeline and a build: the `executor build` a job starts reads them from a
//! file, never from flags), with this machine's store, platform and
//! registry settings. Nothing outside the project is let through: the
//! context and the Dockerfile are resolved after expansion and through
//! symlinks, and must stay inside the job's checkout, so a pipeline
//! (someone's pull request) can neither build, and push, a directory of the
//! machine that runs it, nor have a file of it read as a Dockerfile. The
//! job then runs the build in a child process (`child.rs`) and hands
//! its image (by digest, pushed or in the local store) to the jobs that
//! need it.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use pipeline_schema::Build;

use super::child::{ChildEnd, run_child};
use super::failure::{ChildError, JobFailure};
use super::schedule::{Attempt, JobAttempt, Outputs, RunContext};
use super::script::JobImage;
use super::vars::{self, Variables};
use crate::build::settings::{SourceDateEpochError, source_date_epoch};
use crate::build::{
    CacheRepo, CacheSettings, IsolationMode, Secret, SecretSource, SecurityOptions, Settings,
    SnapshotMode,
};
use crate::image::digest::Digest;
use crate::platform::{Platform, PlatformError};
use crate::registry::{ImageReference, ReferenceError, RegistryOptions};

/// `--cache-ttl`'s default (kaniko's, two weeks), for a `cache:` without
/// `ttl`.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(336 * 60 * 60);

/// What this machine gives every build job, whatever the pipeline says.
#[derive(Debug, Clone, Copy)]
pub struct Machine<'a> {
    /// The local store.
    pub store: &'a Path,
    /// The platform built for when the job names none.
    pub platform: &'a Platform,
    pub registry: &'a RegistryOptions,
    /// RUN steps' seccomp profile and no_new_privs.
    pub security: &'a SecurityOptions,
    /// How RUN steps are isolated (in place only where jobs run one at a
    /// time: they would share the root).
    pub isolation: IsolationMode,
}

/// A `build:` value that does not make a build, once expanded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("job {job}: invalid destination {value:?}")]
    Destination {
        job: String,
        value: String,
        #[source]
        source: ReferenceError,
    },
    #[error("job {job}: invalid platform {value:?}")]
    Platform {
        job: String,
        value: String,
        #[source]
        source: PlatformError,
    },
    #[error("job {job}: invalid cache repository {value:?}: {reason}")]
    CacheRepo {
        job: String,
        value: String,
        reason: String,
    },
    #[error("job {job}: cannot tell the build's time")]
    SourceDateEpoch {
        job: String,
        #[source]
        source: SourceDateEpochError,
    },
}

/// The environment variable the build reads secret `index` of the job
/// from (its value never goes in the settings file).
#[must_use]
pub fn secret_variable(index: usize) -> String {
    format!("EXECUTOR_JOB_SECRET_{index}")
}

/// What job `job`'s `build:` asks for, `vars` expanded in each value: the
/// build of `paths`, its digest written to `digest_file`, `secret_ids`
/// (the job's secrets, in order) readable by RUN from the variables
/// [`secret_variable`] names, and this machine's settings for the rest.
pub fn settings(
    job: &str,
    build: &Build,
    vars: &Variables,
    paths: BuildPaths,
    digest_file: PathBuf,
    secret_ids: &[&str],
    machine: Machine<'_>,
) -> Result<Settings, SettingsError> {
    let expand = |s: &str| vars::expand(s, vars);
    let build_args: BTreeMap<String, String> = build
        .args
        .iter()
        .map(|(k, v)| (k.clone(), expand(v)))
        .collect();
    let destinations = build
        .destinations
        .iter()
        .map(|d| {
            let value = expand(d);
            ImageReference::parse(&value).map_err(|source| SettingsError::Destination {
                job: job.to_owned(),
                value,
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let platform = match &build.platform {
        Some(p) => {
            let value = expand(p);
            value
                .parse::<Platform>()
                .map_err(|source| SettingsError::Platform {
                    job: job.to_owned(),
                    value,
                    source,
                })?
        }
        None => machine.platform.clone(),
    };
    let cache = match &build.cache {
        Some(cache) => {
            let value = expand(&cache.repo);
            let repo = CacheRepo::parse(&value).map_err(|reason| SettingsError::CacheRepo {
                job: job.to_owned(),
                value,
                reason,
            })?;
            Some(CacheSettings {
                repo: Some(repo),
                // Whole seconds, at least one, as `--cache-ttl` took them.
                ttl: cache.ttl.map_or(DEFAULT_CACHE_TTL, |ttl| {
                    Duration::from_secs(ttl.as_secs().max(1))
                }),
                copy_layers: true,
                run_layers: true,
                push: true,
            })
        }
        None => None,
    };
    let source_date_epoch =
        source_date_epoch(&build_args, build.reproducible).map_err(|source| {
            SettingsError::SourceDateEpoch {
                job: job.to_owned(),
                source,
            }
        })?;
    let registry = machine.registry;
    Ok(Settings {
        context: paths.context.display().to_string(),
        context_sub_path: None,
        dockerfile: paths.dockerfile,
        git: Vec::new(),
        build_args,
        target: build.target.as_deref().map(expand),
        labels: build
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), expand(v)))
            .collect(),
        destinations,
        push: build.pushes(),
        tar_path: None,
        oci_layout_path: None,
        digest_file: Some(digest_file),
        image_name_with_digest_file: None,
        image_name_tag_with_digest_file: None,
        platform,
        zstd: false,
        compression_level: None,
        compression_threads: 0,
        insecure_push: registry.push.insecure,
        insecure_pull: registry.pull.insecure,
        insecure_registries: registry.insecure.clone(),
        skip_tls_verify_push: registry.push.skip_tls_verify,
        skip_tls_verify_pull: registry.pull.skip_tls_verify,
        skip_tls_verify_registries: registry.skip_tls_verify.clone(),
        registry_certificates: registry.certificates.clone(),
        registry_mirrors: registry.mirrors.clone(),
        push_retry: registry.push.retries,
        image_download_retry: registry.pull.retries,
        registry_timeout_secs: registry.timeout.as_secs(),
        cache_dir: machine.store.to_path_buf(),
        snapshot_mode: SnapshotMode::default(),
        single_snapshot: false,
        ignore_paths: Vec::new(),
        secrets: secret_ids
            .iter()
            .enumerate()
            .map(|(i, id)| Secret {
                id: (*id).to_owned(),
                source: SecretSource::Env(secret_variable(i)),
            })
            .collect(),
        ssh: Vec::new(),
        isolation: machine.isolation,
        force: false,
        security: machine.security.clone(),
        source_date_epoch,
        metrics_file: None,
        cache_mount_max_size: None,
        cache,
    })
}

/// A build job's path that is refused.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("job {job}: the build {what} {value:?} is outside the project")]
    Outside {
        job: String,
        what: &'static str,
        value: String,
    },
    #[error("job {job}: the build {what} {value:?} is not in the project")]
    Missing {
        job: String,
        what: &'static str,
        value: String,
        #[source]
        source: io::Error,
    },
}

/// A build job's context and Dockerfile, resolved inside its project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildPaths {
    pub context: PathBuf,
    pub dockerfile: PathBuf,
}

/// Resolves `context` (relative to `project`) and `dockerfile` (relative
/// to the context), both already expanded, for job `job`: each must be
/// relative, and lead, once `..` and symlinks are followed, to an existing
/// path inside `project`. The errors name the job and the value, never what
/// the path holds.
pub fn resolve_paths(
    job: &str,
    project: &Path,
    context: &str,
    dockerfile: &str,
) -> Result<BuildPaths, PathError> {
    let root = project
        .canonicalize()
        .map_err(|source| PathError::Missing {
            job: job.to_owned(),
            what: "project",
            value: project.display().to_string(),
            source,
        })?;
    let context = inside(job, &root, &root, "context", context)?;
    let dockerfile = inside(job, &root, &context, "dockerfile", dockerfile)?;
    Ok(BuildPaths {
        context,
        dockerfile,
    })
}

/// `value` relative to `base` (inside `root`), resolved, if it is inside
/// `root`. Checked by its words first (an absolute path, `..` above
/// `root`), so whether something exists outside the project is never told;
/// then through symlinks.
fn inside(
    job: &str,
    root: &Path,
    base: &Path,
    what: &'static str,
    value: &str,
) -> Result<PathBuf, PathError> {
    let outside = || PathError::Outside {
        job: job.to_owned(),
        what,
        value: value.to_owned(),
    };
    let path = Path::new(value);
    if value.is_empty() || path.has_root() {
        return Err(outside());
    }
    let mut lexical = base.to_path_buf();
    for component in path.components() {
        match component {
            Component::Normal(part) => lexical.push(part),
            Component::ParentDir => {
                if !lexical.pop() {
                    return Err(outside());
                }
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err(outside()),
        }
    }
    if !lexical.starts_with(root) {
        return Err(outside());
    }
    let resolved = lexical
        .canonicalize()
        .map_err(|source| PathError::Missing {
            job: job.to_owned(),
            what,
            value: value.to_owned(),
            source,
        })?;
    if resolved.starts_with(root) {
        Ok(resolved)
    } else {
        Err(outside())
    }
}

impl RunContext<'_> {
    /// A build job: `executor build` in a child process of its own group,
    /// reading the job's settings from a file in `job_dir`, its output into
    /// the job's log, killed whole on timeout or when the job is cancelled.
    pub(super) fn build_job(
        &self,
        attempt: &JobAttempt<'_>,
        build: &Build,
        checkout_dir: &Path,
        job_dir: &Path,
    ) -> Result<Attempt, JobFailure> {
        let JobAttempt {
            job,
            vars,
            secrets,
            log,
            cancel,
            ..
        } = *attempt;
        let expand = |s: &str| vars::expand(s, vars);
        fs::create_dir_all(job_dir).map_err(|source| JobFailure::CreateDir {
            path: job_dir.to_path_buf(),
            source,
        })?;
        let digest_file = job_dir.join("digest");
        // Both resolved here, inside the checkout, and passed absolute: the
        // Dockerfile is the context's (given as written, `executor build`
        // would first look for it from its own working directory).
        let paths = resolve_paths(
            &job.name,
            checkout_dir,
            &expand(&build.context),
            &expand(&build.dockerfile),
        )?;
        let ids: Vec<&str> = secrets.iter().map(|(id, _)| id.as_str()).collect();
        let machine = Machine {
            store: self.store.root(),
            platform: &self.options.platform,
            registry: &self.options.registry,
            security: &self.options.security,
            isolation: self.options.isolation,
        };
        let mut settings = settings(
            &job.name,
            build,
            vars,
            paths,
            digest_file.clone(),
            &ids,
            machine,
        )?;
        // A fork's run builds without pushing.
        settings.push &= self.options.allow_push;
        let settings_file = job_dir.join("settings.json");
        serde_json::to_vec_pretty(&settings)
            .map_err(io::Error::other)
            .and_then(|json| fs::write(&settings_file, json))
            .map_err(|source| JobFailure::WriteSettings {
                path: settings_file.clone(),
                source,
            })?;
        let env: Vec<(String, String)> = secrets
            .iter()
            .enumerate()
            .map(|(i, (_, value))| (secret_variable(i), value.clone()))
            .collect();
        let args = vec![
            "build".to_owned(),
            "--settings-file".to_owned(),
            settings_file.display().to_string(),
        ];
        let exe = std::env::current_exe().map_err(ChildError::Executable)?;
        log.line(&format!(
            "executor build of {} ({})",
            settings.context,
            settings.dockerfile.display()
        ));
        match run_child(&exe, &args, &env, job.timeout, log, cancel)? {
            ChildEnd::Exited(0) => {}
            ChildEnd::Exited(code) => return Err(JobFailure::BuildExited(code)),
            ChildEnd::TimedOut => return Err(JobFailure::TimedOut(job.timeout)),
        }
        let digest = fs::read_to_string(&digest_file)
            .map_err(|source| JobFailure::NoDigest {
                path: digest_file.clone(),
                source,
            })?
            .trim()
            .parse::<Digest>()
            .map_err(|source| JobFailure::BadDigest {
                path: digest_file.clone(),
                source,
            })?;
        // Pushed: others pull it by digest (its layers may be only in the
        // registry, taken from the cache); else it is in the local store.
        let (image_ref, image) = match settings.destinations.first() {
            Some(destination) if settings.push => {
                let reference = format!("{}@{digest}", destination.name());
                (reference.clone(), JobImage::Reference(reference))
            }
            _ => (digest.to_string(), JobImage::Stored(digest.clone())),
        };
        let outputs = Outputs {
            variables: vec![
                (job.image_variable(), image_ref.clone()),
                (job.digest_variable(), digest.to_string()),
            ],
            image: Some(image),
            artifacts: None,
        };
        Ok(Attempt::Succeeded(
            outputs,
            Some(image_ref),
            Some(digest.to_string()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::TransferOptions;

    /// Every field of `build:` set, each value through a variable.
    #[test]
    fn every_field_of_the_build_spec_reaches_the_settings() {
        let var = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let vars = vec![
            var("REG", "registry.test:5000"),
            var("TAG", "v1"),
            var("STAGE", "final"),
            var("ARCH", "arm64"),
        ];
        let build = Build {
            context: "app".into(),
            dockerfile: "Dockerfile".into(),
            target: Some("$STAGE".into()),
            args: [("VERSION".to_owned(), "$TAG".to_owned())].into(),
            labels: [("org.test.tag".to_owned(), "tag-$TAG".to_owned())].into(),
            destinations: vec!["$REG/app:$TAG".into(), "$REG/app:latest".into()],
            push: true,
            platform: Some("linux/$ARCH".into()),
            cache: Some(pipeline_schema::Cache {
                repo: "$REG/app/cache".into(),
                ttl: Some(Duration::from_millis(90_500)),
            }),
            secrets: vec![],
            reproducible: true,
        };
        let registry = RegistryOptions {
            insecure: vec!["registry.test:5000".into()],
            skip_tls_verify: vec!["other.test".into()],
            certificates: vec![("ca.test".into(), PathBuf::from("/ca.pem"))],
            mirrors: vec!["mirror.test".into()],
            pull: TransferOptions {
                insecure: true,
                skip_tls_verify: true,
                retries: 7,
            },
            push: TransferOptions {
                insecure: true,
                skip_tls_verify: false,
                retries: 9,
            },
            ..RegistryOptions::default()
        };
        let paths = BuildPaths {
            context: PathBuf::from("/checkout/app"),
            dockerfile: PathBuf::from("/checkout/app/Dockerfile"),
        };
        let host = Platform::host();
        let machine = Machine {
            store: Path::new("/store"),
            platform: &host,
            registry: &registry,
            security: &SecurityOptions::default(),
            isolation: IsolationMode::Namespace,
        };
        let settings = settings(
            "image",
            &build,
            &vars,
            paths,
            PathBuf::from("/scratch/digest"),
            &["npm", "TOKEN"],
            machine,
        )
        .unwrap();
        let reference = |r: &str| ImageReference::parse(r).unwrap();
        let expected = Settings {
            context: "/checkout/app".into(),
            context_sub_path: None,
            dockerfile: PathBuf::from("/checkout/app/Dockerfile"),
            git: vec![],
            build_args: [("VERSION".to_owned(), "v1".to_owned())].into(),
            target: Some("final".into()),
            labels: vec![("org.test.tag".into(), "tag-v1".into())],
            destinations: vec![
                reference("registry.test:5000/app:v1"),
                reference("registry.test:5000/app:latest"),
            ],
            push: true,
            tar_path: None,
            oci_layout_path: None,
            digest_file: Some(PathBuf::from("/scratch/digest")),
            image_name_with_digest_file: None,
            image_name_tag_with_digest_file: None,
            platform: "linux/arm64".parse().unwrap(),
            zstd: false,
            compression_level: None,
            compression_threads: 0,
            insecure_push: true,
            insecure_pull: true,
            insecure_registries: vec!["registry.test:5000".into()],
            skip_tls_verify_push: false,
            skip_tls_verify_pull: true,
            skip_tls_verify_registries: vec!["other.test".into()],
            registry_certificates: vec![("ca.test".into(), PathBuf::from("/ca.pem"))],
            registry_mirrors: vec!["mirror.test".into()],
            push_retry: 9,
            image_download_retry: 7,
            registry_timeout_secs: 60,
            cache_dir: PathBuf::from("/store"),
            snapshot_mode: SnapshotMode::Overlay,
            single_snapshot: false,
            ignore_paths: vec![],
            secrets: vec![
                Secret {
                    id: "npm".into(),
                    source: SecretSource::Env("EXECUTOR_JOB_SECRET_0".into()),
                },
                Secret {
                    id: "TOKEN".into(),
                    source: SecretSource::Env("EXECUTOR_JOB_SECRET_1".into()),
                },
            ],
            ssh: vec![],
            isolation: IsolationMode::Namespace,
            force: false,
            security: SecurityOptions::default(),
            source_date_epoch: Some(0),
            metrics_file: None,
            cache_mount_max_size: None,
            cache: Some(CacheSettings {
                repo: Some(CacheRepo::Registry(reference(
                    "registry.test:5000/app/cache",
                ))),
                ttl: Duration::from_secs(90),
                copy_layers: true,
                run_layers: true,
                push: true,
            }),
        };
        assert_eq!(settings, expected);
        // What the child reads is what was written.
        let json = serde_json::to_string(&settings).unwrap();
        assert_eq!(serde_json::from_str::<Settings>(&json).unwrap(), expected);

        // Without push, platform or cache: the machine's platform, nothing
        // pushed, no cache.
        let plain = Build {
            push: false,
            platform: None,
            cache: None,
            reproducible: false,
            ..build
        };
        let paths = BuildPaths {
            context: PathBuf::from("/c"),
            dockerfile: PathBuf::from("/c/Dockerfile"),
        };
        let settings = settings_of(&plain, &vars, paths, machine);
        assert!(!settings.push);
        assert_eq!(settings.platform, host);
        assert_eq!(settings.cache, None);
    }

    fn settings_of(
        build: &Build,
        vars: &Variables,
        paths: BuildPaths,
        machine: Machine<'_>,
    ) -> Settings {
        settings("j", build, vars, paths, PathBuf::from("/d"), &[], machine).unwrap()
    }

    #[test]
    fn values_that_make_no_build_name_the_job_and_the_value() {
        let build = |f: &dyn Fn(&mut Build)| {
            let mut build = Build {
                context: ".".into(),
                dockerfile: "Dockerfile".into(),
                target: None,
                args: BTreeMap::new(),
                labels: BTreeMap::new(),
                destinations: vec![],
                push: false,
                platform: None,
                cache: None,
                secrets: vec![],
                reproducible: false,
            };
            f(&mut build);
            build
        };
        let host = Platform::host();
        let registry = RegistryOptions::default();
        let machine = Machine {
            store: Path::new("/store"),
            platform: &host,
            registry: &registry,
            security: &SecurityOptions::default(),
            isolation: IsolationMode::Namespace,
        };
        let vars = vec![("BAD".to_owned(), "Not A Reference".to_owned())];
        let error = |b: &Build| {
            let paths = BuildPaths {
                context: PathBuf::from("/c"),
                dockerfile: PathBuf::from("/c/Dockerfile"),
            };
            settings("j", b, &vars, paths, PathBuf::from("/d"), &[], machine)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            error(&build(&|b| b.destinations = vec!["$BAD".into()])),
            "job j: invalid destination \"Not A Reference\""
        );
        assert_eq!(
            error(&build(&|b| b.platform = Some("$BAD".into()))),
            "job j: invalid platform \"Not A Reference\""
        );
    }

    fn project() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("project");
        std::fs::create_dir_all(project.join("app/sub")).unwrap();
        std::fs::write(project.join("app/Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(project.join("Dockerfile.shared"), "FROM scratch\n").unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        std::fs::write(dir.path().join("outside/Dockerfile"), "FROM scratch\n").unwrap();
        (dir, project)
    }

    fn refused(result: Result<BuildPaths, PathError>) -> String {
        match result {
            Err(e @ PathError::Outside { .. }) => e.to_string(),
            other => panic!("not refused as outside: {other:?}"),
        }
    }

    #[test]
    fn paths_inside_the_project_resolve() {
        let (_dir, project) = project();
        let root = project.canonicalize().unwrap();
        let paths = resolve_paths("j", &project, "app/sub/..", "Dockerfile").unwrap();
        assert_eq!(paths.context, root.join("app"));
        assert_eq!(paths.dockerfile, root.join("app/Dockerfile"));
        let paths = resolve_paths("j", &project, "app", "../Dockerfile.shared").unwrap();
        assert_eq!(paths.dockerfile, root.join("Dockerfile.shared"));
    }

    #[test]
    fn absolute_parent_and_symlinked_paths_out_of_the_project_are_refused() {
        let (dir, project) = project();
        let outside = dir.path().join("outside");
        let abs = outside.display().to_string();
        assert_eq!(
            refused(resolve_paths("j", &project, &abs, "Dockerfile")),
            format!("job j: the build context {abs:?} is outside the project")
        );
        refused(resolve_paths("j", &project, "../outside", "Dockerfile"));
        refused(resolve_paths(
            "j",
            &project,
            "app/../../outside",
            "Dockerfile",
        ));
        // Not told apart from a path that exists.
        refused(resolve_paths(
            "j",
            &project,
            "../nothing-there",
            "Dockerfile",
        ));
        let df = outside.join("Dockerfile").display().to_string();
        assert_eq!(
            refused(resolve_paths("j", &project, "app", &df)),
            format!("job j: the build dockerfile {df:?} is outside the project")
        );
        refused(resolve_paths(
            "j",
            &project,
            "app",
            "../../outside/Dockerfile",
        ));
        std::os::unix::fs::symlink(&outside, project.join("link")).unwrap();
        refused(resolve_paths("j", &project, "link", "Dockerfile"));
        std::os::unix::fs::symlink(outside.join("Dockerfile"), project.join("app/Evil")).unwrap();
        refused(resolve_paths("j", &project, "app", "Evil"));
    }
}
