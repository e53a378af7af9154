//! Which isolation a build's RUN steps get (`--isolation`), and, in place,
//! which paths of the executor's own root the build must leave alone.
//!
//! `auto` (the default) takes namespaces where the probe can make them, in
//! place inside a container where it cannot, and otherwise namespaces all
//! the same, so that the first RUN fails with their error and its hint. It
//! probes the first time the build asks, once: a build without RUN never
//! does, nor one outside a container whose RUN steps all come from the
//! cache.
//! `in-place` outside a container is refused unless `--force`: it would
//! overwrite the machine's own root (see [`sandbox::container`]).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::error::{BuildError, Result};
use super::run::SecretSource;
use super::settings::{IsolationMode, Settings};
use crate::rootfs::InPlace;
use crate::sandbox::{
    self, Isolation, KillSwitch, Outcome, SandboxError, SharedRoot, Spec, Unavailable,
};

/// The isolation `settings` ask for, on this machine.
pub(super) fn choose(settings: &Settings) -> Result<Box<dyn Isolation>> {
    match settings.isolation {
        IsolationMode::Namespace => Ok(Box::new(sandbox::Namespaces)),
        IsolationMode::InPlace => {
            match sandbox::container::detect() {
                Some(sign) => tracing::debug!("in a container: {sign}"),
                None if settings.force => tracing::warn!(
                    "--force: building in place in this machine's own root file system, which no container sign marks as disposable"
                ),
                None => return Err(BuildError::OutsideContainer),
            }
            Ok(Box::new(sandbox::InPlace))
        }
        IsolationMode::Auto => Ok(Box::new(Auto::default())),
    }
}

/// `--isolation=auto`: the probe, and the isolation it picks, made the
/// first time the build asks for either.
#[derive(Default)]
struct Auto {
    chosen: OnceLock<(Box<dyn Isolation>, std::result::Result<(), Unavailable>)>,
}

impl Auto {
    fn chosen(&self) -> &(Box<dyn Isolation>, std::result::Result<(), Unavailable>) {
        self.chosen.get_or_init(|| match sandbox::probe() {
            Ok(()) => (Box::new(sandbox::Namespaces), Ok(())),
            Err(unavailable) => match sandbox::container::detect() {
                Some(sign) => {
                    tracing::info!(
                        "RUN steps run in place, in this container's own root file system (namespaces: {}; container: {sign})",
                        unavailable.what
                    );
                    (Box::new(sandbox::InPlace), Ok(()))
                }
                None => (Box::new(sandbox::Namespaces), Err(unavailable)),
            },
        })
    }
}

impl Isolation for Auto {
    fn run(&self, spec: &Spec, kill: &KillSwitch) -> std::result::Result<Outcome, SandboxError> {
        self.chosen().0.run(spec, kill)
    }

    /// The probe's answer (not probed again).
    fn available(&self) -> std::result::Result<(), Unavailable> {
        self.chosen().1.clone()
    }

    /// Outside a container auto never builds in place, so the probe is
    /// not made for this question: a build whose RUN steps all come from
    /// the cache then makes none.
    fn shared_root(&self) -> Option<SharedRoot> {
        if self.chosen.get().is_none() && sandbox::container::detect().is_none() {
            return None;
        }
        self.chosen().0.shared_root()
    }
}

/// Where in-place stages are built: `shared` and the build's own paths —
/// the store (with the build's scratch space), the context, the
/// Dockerfile, `--ignore-path`s, secret files and registry certificates.
pub(super) fn place(shared: SharedRoot, settings: &Settings, context_root: &Path) -> InPlace {
    let mut protected = shared.protected;
    protected.push(settings.cache_dir.clone());
    protected.push(context_root.to_path_buf());
    protected.push(settings.dockerfile.clone());
    protected.extend(settings.ignore_paths.iter().cloned());
    protected.extend(settings.secrets.iter().filter_map(|s| match &s.source {
        SecretSource::File(path) => Some(path.clone()),
        SecretSource::Env(_) => None,
    }));
    protected.extend(
        settings
            .registry_certificates
            .iter()
            .map(|(_, p)| p.clone()),
    );
    let root = shared.root;
    let protected = protected
        .into_iter()
        .filter_map(|path| within(&root, &path))
        .collect();
    InPlace { root, protected }
}

/// `path` (made absolute, symlinks resolved where it exists) as an
/// absolute path within `root`; `None` outside it.
fn within(root: &Path, path: &Path) -> Option<PathBuf> {
    let absolute = path
        .canonicalize()
        .ok()
        .or_else(|| std::env::current_dir().ok().map(|cwd| cwd.join(path)))?;
    let rel = absolute.strip_prefix(root).ok()?;
    Some(Path::new("/").join(rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_paths_are_taken_within_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("store")).unwrap();
        assert_eq!(within(&root, &root.join("store")), Some("/store".into()));
        assert_eq!(within(&root, Path::new("/elsewhere/x")), None);
        assert_eq!(
            within(&root, &root.join("not/yet")),
            Some(PathBuf::from("/not/yet"))
        );
    }
}
