//! A build job: its `build:` spec, with the job's variables expanded,
//! turned into what the build needs, and nothing outside the project let
//! through. The context and the Dockerfile are resolved after expansion and
//! through symlinks, and must stay inside the job's checkout: a pipeline
//! (someone's pull request) must not build, and push, a directory of the
//! machine that runs it, nor have a file of it read as a Dockerfile.

use std::io;
use std::path::{Component, Path, PathBuf};

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

#[cfg(test)]
mod tests {
    use super::*;

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
