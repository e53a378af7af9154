//! The commit a pipeline run works on, and where its files are.
//!
//! Two ways, as `executor run` offers them:
//! - [`Checkout::working_tree`]: the repository around a path, as a
//!   developer has it: HEAD's commit describes the run, and the files are
//!   the working tree as they are, uncommitted changes included.
//! - [`Checkout::clone_commit`]: a fresh clone of one commit, as CI has it:
//!   `rev` (a branch, a tag or a commit id) fetched with git2 (libgit2),
//!   shallow (depth 2: the commit and its parent, for `rules: changes`)
//!   where the transport allows it and in full where it
//!   does not (libgit2's local transport, for one, cannot fetch shallow;
//!   most servers refuse a commit that is not a ref's tip by id), then
//!   checked out detached. The checkout keeps its `.git`, with `origin`
//!   set, so jobs can run git commands as in GitLab CI.
//!
//! Credentials for a clone come from the environment as for `executor
//! build`'s git contexts (`GIT_USERNAME`, `GIT_PASSWORD`, `GIT_TOKEN`).
//! Nothing here runs jobs or reads `pipeline.yaml`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use git2::build::CheckoutBuilder;
use git2::{AutotagOption, Commit, ErrorCode, FetchOptions, Oid, RemoteCallbacks, Repository};

use crate::context::git::Head;
use crate::context::source::GitCredentials;

/// GitLab's `CI_COMMIT_SHORT_SHA` length.
pub const SHORT_SHA_LEN: usize = 8;

/// Where a commit fetched by id is kept in a clone.
const LOCAL_COMMIT: &str = "refs/executor/commit";

/// libgit2's `GIT_FETCH_DEPTH_UNSHALLOW`.
const UNSHALLOW: i32 = i32::MAX;

#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error(
        "{} is not inside a git repository\nhint: run it in a git working tree, or pass --repo PATH_OR_URL --commit REV",
        path.display()
    )]
    NotARepository {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("the git repository at {} has no working tree (it is bare)\nhint: pass --repo {} --commit REV to run one of its commits", path.display(), path.display())]
    Bare { path: PathBuf },
    #[error("the git repository at {} has no commit yet\nhint: commit something first (git commit)", path.display())]
    NoCommit { path: PathBuf },
    #[error("git repository {}: no such directory\nhint: give an existing local path or an https://, http://, git:// or file:// URL", path.display())]
    NoSuchPath { path: PathBuf },
    #[error("git repository {repo}: {action} failed{hint}")]
    Git {
        repo: String,
        action: String,
        hint: &'static str,
        #[source]
        source: git2::Error,
    },
    #[error(
        "git repository {repo}: no branch, tag or commit {rev:?}\nhint: give a branch or tag the repository has, or a commit id (at least 4 hexadecimal digits)"
    )]
    RevNotFound { repo: String, rev: String },
    #[error(
        "git repository {repo}: cannot clone into {}: it is not an empty directory\nhint: give a new or empty directory",
        into.display()
    )]
    NotEmpty { repo: String, into: PathBuf },
    #[error("git repository {repo}: cannot prepare {}", path.display())]
    Io {
        repo: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

type Result<T, E = CheckoutError> = std::result::Result<T, E>;

/// The ref a checkout was asked for, when it was a branch or a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitRef {
    /// A branch, by its short name (`main`, `feature/x`).
    Branch(String),
    /// A tag, by its short name (`v1.2.0`).
    Tag(String),
}

impl GitRef {
    /// The short name, branch or tag.
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            Self::Branch(name) | Self::Tag(name) => name,
        }
    }
}

/// A commit and the directory holding its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    /// The files: the repository's working tree, or the fresh clone.
    pub dir: PathBuf,
    /// The commit id, 40 hexadecimal digits.
    pub sha: String,
    /// The branch or tag, when known: HEAD's branch (or the tag on a
    /// detached HEAD) for a working tree, the `rev` asked for when it
    /// named one for a clone.
    pub git_ref: Option<GitRef>,
    /// The full commit message.
    pub message: String,
    /// Where the repository comes from: the clone's source, or the working
    /// tree's `origin` remote (else its directory); credentials removed.
    pub repository_url: String,
}

impl Checkout {
    /// The repository whose working tree holds `path`, at HEAD, files as
    /// they are (uncommitted changes too).
    pub fn working_tree(path: &Path) -> Result<Self> {
        let repo = Repository::discover(path).map_err(|source| CheckoutError::NotARepository {
            path: path.to_path_buf(),
            source,
        })?;
        let dir = repo
            .workdir()
            .ok_or_else(|| CheckoutError::Bare {
                path: repo.path().to_path_buf(),
            })?
            .to_path_buf();
        let dir = dir.canonicalize().unwrap_or(dir);
        let shown = dir.display().to_string();
        let git_error = |action: &str| {
            let (repo, action) = (shown.clone(), action.to_owned());
            move |source: git2::Error| CheckoutError::Git {
                repo,
                action,
                hint: "",
                source,
            }
        };
        let head = match repo.head() {
            Ok(head) => head,
            Err(e) if matches!(e.code(), ErrorCode::UnbornBranch | ErrorCode::NotFound) => {
                return Err(CheckoutError::NoCommit { path: dir });
            }
            Err(e) => return Err(git_error("reading HEAD")(e)),
        };
        let commit = head
            .peel_to_commit()
            .map_err(git_error("reading HEAD's commit"))?;
        let git_ref = if head.is_branch() {
            head.shorthand()
                .ok()
                .map(|name| GitRef::Branch(name.to_owned()))
        } else {
            tag_pointing_at(&repo, commit.id()).map(GitRef::Tag)
        };
        let repository_url = repo
            .find_remote("origin")
            .ok()
            .and_then(|remote| remote.url().ok().map(redact))
            .unwrap_or_else(|| shown.clone());
        Ok(Self {
            sha: commit.id().to_string(),
            message: message(&commit),
            git_ref,
            repository_url,
            dir,
        })
    }

    /// Clones `rev` of `repo` (a path or a URL) into `into` (created, or
    /// empty) and checks it out detached. `rev` is a branch, a tag, a full
    /// ref name (`refs/heads/x`), `HEAD`, or a commit id (4 to 40
    /// hexadecimal digits; refs are preferred when a name is both).
    pub fn clone_commit(repo: &str, rev: &str, into: &Path) -> Result<Self> {
        if !is_url(repo) && !Path::new(repo).exists() {
            return Err(CheckoutError::NoSuchPath {
                path: PathBuf::from(repo),
            });
        }
        let url = source_url(repo);
        let shown = redact(&url);
        let io_error = |path: &Path| {
            let (repo, path) = (shown.clone(), path.to_path_buf());
            move |source| CheckoutError::Io { repo, path, source }
        };
        fs::create_dir_all(into).map_err(io_error(into))?;
        if fs::read_dir(into).map_err(io_error(into))?.next().is_some() {
            return Err(CheckoutError::NotEmpty {
                repo: shown,
                into: into.to_path_buf(),
            });
        }
        let git_error = |action: String| {
            let repo = shown.clone();
            move |source: git2::Error| CheckoutError::Git {
                repo,
                hint: hint_for(&source),
                action,
                source,
            }
        };
        let local = Repository::init(into).map_err(git_error("creating the clone".into()))?;
        let mut remote = local
            .remote("origin", &url)
            .map_err(git_error("adding the remote".into()))?;
        let heads = crate::context::git::list_heads(&mut remote, callbacks())
            .map_err(|(what, e)| git_error(what.into())(e))?;
        let want = resolve_rev(&heads, rev).ok_or_else(|| CheckoutError::RevNotFound {
            repo: shown.clone(),
            rev: rev.to_owned(),
        })?;
        tracing::debug!(repo = %shown, rev, ?want, "cloning");
        let commit_id = match &want {
            Want::Ref {
                name, local: dst, ..
            } => {
                let spec = format!("+{name}:{dst}");
                fetch_shallow_first(&mut remote, &spec, &shown)
                    .map_err(git_error(format!("fetching {name}")))?;
                local
                    .find_reference(dst)
                    .and_then(|r| r.peel_to_commit())
                    .map_err(git_error(format!("reading {name}")))?
                    .id()
            }
            Want::Commit(id) => fetch_commit(&local, &mut remote, &heads, id, &shown)
                .map_err(git_error(format!("fetching commit {id}")))?
                .ok_or_else(|| CheckoutError::RevNotFound {
                    repo: shown.clone(),
                    rev: rev.to_owned(),
                })?,
        };
        let commit = local
            .find_commit(commit_id)
            .map_err(git_error(format!("reading commit {commit_id}")))?;
        local
            .checkout_tree(commit.as_object(), Some(CheckoutBuilder::new().force()))
            .map_err(git_error(format!("checking out {commit_id}")))?;
        local
            .set_head_detached(commit_id)
            .map_err(git_error(format!("checking out {commit_id}")))?;
        tracing::info!(repo = %shown, commit = %commit_id, "checked out");
        let dir = into.canonicalize().unwrap_or_else(|_| into.to_path_buf());
        Ok(Self {
            dir,
            sha: commit_id.to_string(),
            git_ref: match want {
                Want::Ref { git_ref, .. } => git_ref,
                Want::Commit(_) => None,
            },
            message: message(&commit),
            repository_url: shown,
        })
    }

    /// The first 8 digits of the commit id (GitLab's `CI_COMMIT_SHORT_SHA`).
    #[must_use]
    pub fn short_sha(&self) -> &str {
        self.sha.get(..SHORT_SHA_LEN).unwrap_or(&self.sha)
    }

    /// The branch, when the checkout is of one.
    #[must_use]
    pub fn branch(&self) -> Option<&str> {
        match &self.git_ref {
            Some(GitRef::Branch(name)) => Some(name),
            _ => None,
        }
    }

    /// The tag, when the checkout is of one.
    #[must_use]
    pub fn tag(&self) -> Option<&str> {
        match &self.git_ref {
            Some(GitRef::Tag(name)) => Some(name),
            _ => None,
        }
    }

    /// The branch or tag name, when known.
    #[must_use]
    pub fn ref_name(&self) -> Option<&str> {
        self.git_ref.as_ref().map(GitRef::name)
    }

    /// The directory's last component: GitLab's `CI_PROJECT_NAME`, for the
    /// default project directory `/builds/NAME`.
    #[must_use]
    pub fn project_name(&self) -> String {
        let from_url = self
            .repository_url
            .trim_end_matches('/')
            .rsplit(['/', ':'])
            .next()
            .map(|name| name.trim_end_matches(".git"))
            .filter(|name| !name.is_empty());
        let from_dir = self.dir.file_name().and_then(|name| name.to_str());
        from_url.or(from_dir).unwrap_or("project").to_owned()
    }
}

/// The commit's message, lossy UTF-8.
fn message(commit: &Commit<'_>) -> String {
    String::from_utf8_lossy(commit.message_bytes()).into_owned()
}

/// A tag whose target is `commit` (the first by name), for a detached HEAD.
fn tag_pointing_at(repo: &Repository, commit: Oid) -> Option<String> {
    let mut names: Vec<String> = repo
        .references_glob("refs/tags/*")
        .ok()?
        .filter_map(Result::ok)
        .filter(|r| r.peel_to_commit().is_ok_and(|c| c.id() == commit))
        .filter_map(|r| r.shorthand().ok().map(str::to_owned))
        .collect();
    names.sort();
    names.into_iter().next()
}

/// What to fetch for `rev`.
#[derive(Debug)]
enum Want {
    /// An advertised ref: its full name, where the clone keeps it, and the
    /// branch or tag it is.
    Ref {
        name: String,
        local: String,
        git_ref: Option<GitRef>,
    },
    /// A commit id (lower case), full or abbreviated.
    Commit(String),
}

/// Finds `rev` among the advertised refs: `HEAD` (its branch, when it
/// points at one), a full ref name, a branch, a tag; else a commit id.
fn resolve_rev(heads: &[Head], rev: &str) -> Option<Want> {
    let advertised = |name: &str| heads.iter().any(|(n, _, _)| n == name);
    let name = if rev == "HEAD" {
        let (_, _, target) = heads.iter().find(|(n, _, _)| n == "HEAD")?;
        target
            .clone()
            .filter(|t| advertised(t))
            .unwrap_or_else(|| "HEAD".into())
    } else if rev.starts_with("refs/") {
        rev.to_owned()
    } else if advertised(&format!("refs/heads/{rev}")) {
        format!("refs/heads/{rev}")
    } else if advertised(&format!("refs/tags/{rev}")) {
        format!("refs/tags/{rev}")
    } else {
        return is_commit_id(rev).then(|| Want::Commit(rev.to_ascii_lowercase()));
    };
    if !advertised(&name) {
        return is_commit_id(rev).then(|| Want::Commit(rev.to_ascii_lowercase()));
    }
    let (local, git_ref) = if let Some(branch) = name.strip_prefix("refs/heads/") {
        (
            format!("refs/remotes/origin/{branch}"),
            Some(GitRef::Branch(branch.to_owned())),
        )
    } else if let Some(tag) = name.strip_prefix("refs/tags/") {
        (name.clone(), Some(GitRef::Tag(tag.to_owned())))
    } else {
        (LOCAL_COMMIT.to_owned(), None)
    };
    Some(Want::Ref {
        name,
        local,
        git_ref,
    })
}

fn is_commit_id(rev: &str) -> bool {
    (4..=40).contains(&rev.len()) && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

fn fetch(
    remote: &mut git2::Remote<'_>,
    specs: &[String],
    depth: Option<i32>,
) -> Result<(), git2::Error> {
    let mut options = FetchOptions::new();
    options
        .remote_callbacks(callbacks())
        .download_tags(AutotagOption::None)
        .update_fetchhead(false);
    if let Some(depth) = depth {
        options.depth(depth);
    }
    remote.fetch(specs, Some(&mut options), None)
}

/// Fetches `spec` at depth 2 (the commit and its parent, which `rules:
/// changes` and `on` path filters compare it with), else in full (the full
/// fetch's error is the one reported).
fn fetch_shallow_first(
    remote: &mut git2::Remote<'_>,
    spec: &str,
    shown: &str,
) -> Result<(), git2::Error> {
    let specs = [spec.to_owned()];
    match fetch(remote, &specs, Some(2)) {
        Ok(()) => Ok(()),
        Err(error) if error.code() == ErrorCode::Auth => Err(error),
        Err(error) => {
            tracing::debug!(repo = %shown, %error, "shallow fetch refused; fetching in full");
            fetch(remote, &specs, None)
        }
    }
}

/// Fetches the commit `id` (full or abbreviated): through the ref whose
/// tip it is, else by id (full ids only; many servers refuse), else with
/// every branch and tag in full. `None` when it is nowhere.
fn fetch_commit(
    local: &Repository,
    remote: &mut git2::Remote<'_>,
    heads: &[Head],
    id: &str,
    shown: &str,
) -> Result<Option<Oid>, git2::Error> {
    if let Some((name, _, _)) = heads
        .iter()
        .filter(|(name, _, _)| name != "HEAD" && !name.ends_with("^{}"))
        .find(|(_, oid, _)| oid.to_string().starts_with(id))
    {
        fetch_shallow_first(remote, &format!("+{name}:{LOCAL_COMMIT}"), shown)?;
        if let Some(oid) = find_commit(local, id) {
            return Ok(Some(oid));
        }
    }
    if id.len() == 40 {
        if let Err(error) = fetch_shallow_first(remote, &format!("+{id}:{LOCAL_COMMIT}"), shown) {
            tracing::debug!(repo = %shown, %error, "the server refused to send {id} by id");
        } else if let Some(oid) = find_commit(local, id) {
            return Ok(Some(oid));
        }
    }
    let specs = [
        "+refs/heads/*:refs/remotes/origin/*".to_owned(),
        "+refs/tags/*:refs/tags/*".to_owned(),
    ];
    let depth = local.is_shallow().then_some(UNSHALLOW);
    fetch(remote, &specs, depth)?;
    Ok(find_commit(local, id))
}

fn find_commit(repo: &Repository, id: &str) -> Option<Oid> {
    repo.revparse_single(id)
        .and_then(|object| object.peel_to_commit())
        .map(|commit| commit.id())
        .ok()
}

/// A URL as given; a local path made absolute (libgit2 opens it with its
/// local transport).
fn source_url(repo: &str) -> String {
    if is_url(repo) {
        return repo.to_owned();
    }
    Path::new(repo).canonicalize().map_or_else(
        |_| repo.to_owned(),
        |path| path.to_string_lossy().into_owned(),
    )
}

/// Whether `repo` is a URL (`scheme://...`, or scp-like `user@host:path`)
/// rather than a local path.
fn is_url(repo: &str) -> bool {
    repo.contains("://")
        || repo
            .split_once(':')
            .is_some_and(|(host, _)| host.contains('@') && !host.contains('/'))
}

fn callbacks() -> RemoteCallbacks<'static> {
    crate::context::git::credential_callbacks(GitCredentials::from_env())
}

fn hint_for(error: &git2::Error) -> &'static str {
    if error.code() == ErrorCode::Auth || error.message().contains("401") {
        "\nhint: set GIT_USERNAME and GIT_PASSWORD, or GIT_TOKEN"
    } else if error.message().contains("unsupported URL protocol") {
        "\nhint: give a local path or an https://, http://, git:// or file:// URL"
    } else {
        ""
    }
}

/// The URL without any user name or password in it.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// Runs git in `dir` with a fixed identity; returns its stdout.
    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args([
                "-c",
                "user.name=Executor Tests",
                "-c",
                "user.email=tests@executor.invalid",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(dir)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A repository with three commits on main (`one`, `two`, `three`),
    /// tag `v1` on `two`, branch `side` with one commit of its own.
    struct Repo {
        dir: tempfile::TempDir,
        shas: Vec<String>,
        side: String,
    }

    fn repo() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        git(path, &["init", "-q"]);
        let mut shas = Vec::new();
        for (n, name) in ["one", "two", "three"].iter().enumerate() {
            fs::write(path.join("file"), name).unwrap();
            git(path, &["add", "-A"]);
            git(
                path,
                &["commit", "-q", "-m", &format!("commit {name}\n\nbody {n}")],
            );
            shas.push(git(path, &["rev-parse", "HEAD"]));
            if *name == "two" {
                git(path, &["tag", "v1"]);
            }
        }
        git(path, &["checkout", "-q", "-b", "side", &shas[0]]);
        fs::write(path.join("side"), "side").unwrap();
        git(path, &["add", "-A"]);
        git(path, &["commit", "-q", "-m", "on the side"]);
        let side = git(path, &["rev-parse", "HEAD"]);
        git(path, &["checkout", "-q", "main"]);
        Repo { dir, shas, side }
    }

    #[test]
    fn the_working_tree_is_heads_commit_with_local_changes() {
        let repo = repo();
        let sub = repo.dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        fs::write(repo.dir.path().join("file"), "uncommitted").unwrap();
        let checkout = Checkout::working_tree(&sub).unwrap();
        assert_eq!(checkout.dir, repo.dir.path().canonicalize().unwrap());
        assert_eq!(checkout.sha, repo.shas[2]);
        assert_eq!(checkout.short_sha(), &repo.shas[2][..8]);
        assert_eq!(checkout.branch(), Some("main"));
        assert_eq!(checkout.tag(), None);
        assert_eq!(checkout.message, "commit three\n\nbody 2\n");
        assert_eq!(
            checkout.repository_url,
            repo.dir
                .path()
                .canonicalize()
                .unwrap()
                .display()
                .to_string()
        );
        assert_eq!(
            fs::read_to_string(checkout.dir.join("file")).unwrap(),
            "uncommitted"
        );
    }

    #[test]
    fn a_detached_head_on_a_tag_names_the_tag_and_origin_is_the_url() {
        let repo = repo();
        git(repo.dir.path(), &["checkout", "-q", "v1"]);
        git(
            repo.dir.path(),
            &[
                "remote",
                "add",
                "origin",
                "https://user:pw@git.example/team/app.git",
            ],
        );
        let checkout = Checkout::working_tree(repo.dir.path()).unwrap();
        assert_eq!(checkout.sha, repo.shas[1]);
        assert_eq!(checkout.git_ref, Some(GitRef::Tag("v1".into())));
        assert_eq!(checkout.ref_name(), Some("v1"));
        assert_eq!(checkout.repository_url, "https://git.example/team/app.git");
        assert_eq!(checkout.project_name(), "app");
    }

    #[test]
    fn outside_a_repository_or_before_a_commit_is_an_error_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let err = Checkout::working_tree(dir.path()).unwrap_err();
        assert!(matches!(err, CheckoutError::NotARepository { .. }), "{err}");
        assert!(err.to_string().contains("hint: "), "{err}");
        git(dir.path(), &["init", "-q"]);
        let err = Checkout::working_tree(dir.path()).unwrap_err();
        assert!(matches!(err, CheckoutError::NoCommit { .. }), "{err}");
    }

    #[test]
    fn a_clone_checks_out_a_branch_a_tag_or_a_commit_exactly() {
        let repo = repo();
        let source = repo.dir.path().to_str().unwrap();
        let cases: [(&str, &str, Option<GitRef>); 6] = [
            ("main", &repo.shas[2], Some(GitRef::Branch("main".into()))),
            ("side", &repo.side, Some(GitRef::Branch("side".into()))),
            ("v1", &repo.shas[1], Some(GitRef::Tag("v1".into()))),
            ("HEAD", &repo.shas[2], Some(GitRef::Branch("main".into()))),
            (&repo.shas[0], &repo.shas[0], None),
            (&repo.shas[1][..7], &repo.shas[1], None),
        ];
        for (rev, sha, git_ref) in cases {
            let into = tempfile::tempdir().unwrap();
            let dir = into.path().join("checkout");
            let checkout = Checkout::clone_commit(source, rev, &dir).unwrap();
            assert_eq!(checkout.sha, sha, "{rev}");
            assert_eq!(checkout.git_ref, git_ref, "{rev}");
            assert_eq!(git(&dir, &["rev-parse", "HEAD"]), sha, "{rev}");
            // Detached, clean, the commit's files.
            let output = Command::new("git")
                .args(["symbolic-ref", "-q", "HEAD"])
                .current_dir(&dir)
                .output()
                .unwrap();
            assert!(!output.status.success(), "{rev}: HEAD is not detached");
            assert_eq!(git(&dir, &["status", "--porcelain"]), "", "{rev}");
            let expected = git(repo.dir.path(), &["show", &format!("{sha}:file")]);
            assert_eq!(fs::read_to_string(dir.join("file")).unwrap(), expected);
            assert_eq!(dir.join("side").exists(), rev == "side", "{rev}");
            assert_eq!(checkout.repository_url, source);
        }
    }

    #[test]
    fn a_clone_of_an_unknown_rev_names_the_repo_and_the_rev() {
        let repo = repo();
        let source = repo.dir.path().to_str().unwrap();
        for rev in ["nope", "feedfacefeedfacefeedfacefeedfacefeedface"] {
            let into = tempfile::tempdir().unwrap();
            let err = Checkout::clone_commit(source, rev, into.path()).unwrap_err();
            let message = err.to_string();
            assert!(
                matches!(err, CheckoutError::RevNotFound { .. }),
                "{message}"
            );
            assert!(
                message.contains(source) && message.contains(rev),
                "{message}"
            );
        }
        let into = tempfile::tempdir().unwrap();
        fs::write(into.path().join("x"), "").unwrap();
        let err = Checkout::clone_commit(source, "main", into.path()).unwrap_err();
        assert!(matches!(err, CheckoutError::NotEmpty { .. }), "{err}");
        let into = tempfile::tempdir().unwrap();
        let missing = repo.dir.path().join("missing");
        let err =
            Checkout::clone_commit(missing.to_str().unwrap(), "main", into.path()).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
