//! Git build contexts: fetch one ref or commit of a repository with git2
//! (libgit2) and check it out, as kaniko's `git://` contexts and Docker's
//! git URLs do. The fetch is shallow (depth 1) where the server allows it
//! and falls back to a full fetch otherwise (libgit2's local transport, for
//! one, cannot fetch shallow), and when the commit asked for is not the tip
//! of the ref. Submodules are cloned on request. The repository lives
//! outside the checkout, so the context never contains `.git` (as with
//! BuildKit's git contexts).

use std::fs;
use std::path::Path;

use git2::build::CheckoutBuilder;
use git2::{
    AutotagOption, CertificateCheckStatus, Cred, CredentialType, Direction, ErrorCode,
    FetchOptions, Oid, RemoteCallbacks, Repository, RepositoryInitOptions, SubmoduleUpdateOptions,
};

use super::Error;
use super::source::{GitOptions, GitSource, is_commit_id};

/// Where the fetched ref is kept in the scratch repository.
const LOCAL_REF: &str = "refs/executor/context";
/// Where a commit fetched by id is kept.
const LOCAL_COMMIT: &str = "refs/executor/commit";
/// libgit2's `GIT_FETCH_DEPTH_UNSHALLOW`.
const UNSHALLOW: i32 = i32::MAX;

/// Clone `source` into `worktree`, keeping the repository in `gitdir`.
/// Returns the commit checked out (full hexadecimal id).
pub(crate) fn clone(
    source: &GitSource,
    options: &GitOptions,
    gitdir: &Path,
    worktree: &Path,
) -> Result<String, Error> {
    let url = source.url(options.pull_method);
    let shown = redact(&url);
    let git_error = |action: String| {
        let shown = shown.clone();
        move |source: git2::Error| Error::Git {
            url: shown,
            action,
            hint: hint_for(&source),
            source,
        }
    };
    let repo = Repository::init_opts(
        gitdir,
        RepositoryInitOptions::new()
            .bare(false)
            .workdir_path(worktree)
            .mkpath(true),
    )
    .map_err(git_error("creating the local repository".to_owned()))?;
    let mut remote = repo
        .remote("origin", &url)
        .map_err(git_error("adding the remote".to_owned()))?;

    let heads = list_heads(&mut remote, callbacks(options))
        .map_err(|(what, e)| git_error(what.to_owned())(e))?;
    let asked = source.reference.as_deref().or(options.branch.as_deref());
    let want = resolve_ref(&heads, asked).ok_or_else(|| Error::GitRef {
        url: shown.clone(),
        reason: format!(
            "no ref {:?} on the remote (looked for it as a ref, a branch and a tag)",
            asked.unwrap_or("HEAD")
        ),
    })?;
    tracing::debug!(url = %shown, want = ?want, commit = ?source.commit, "fetching git context");

    let fetch = |remote: &mut git2::Remote<'_>, specs: &[String], depth: Option<i32>| {
        let mut fetch_options = FetchOptions::new();
        fetch_options
            .remote_callbacks(callbacks(options))
            .download_tags(AutotagOption::None)
            .update_fetchhead(false);
        if let Some(depth) = depth {
            fetch_options.depth(depth);
        }
        remote.fetch(specs, Some(&mut fetch_options), None)
    };
    // Fetch shallow, else in full; report the full fetch's error.
    let fetch_shallow_first =
        |remote: &mut git2::Remote<'_>, specs: &[String]| match fetch(remote, specs, Some(1)) {
            Ok(()) => Ok(()),
            Err(error) if error.code() == ErrorCode::Auth => Err(error),
            Err(error) => {
                tracing::debug!(url = %shown, %error, "shallow fetch refused; fetching in full");
                fetch(remote, specs, None)
            }
        };

    let ref_spec = match &want {
        Want::Ref(name) => Some(format!("+{name}:{LOCAL_REF}")),
        Want::Commit(_) => None,
    };
    if let Some(spec) = &ref_spec {
        // A commit that is the ref's tip comes with a shallow fetch.
        let tip_is_wanted = source.commit.as_deref().is_none_or(|commit| {
            let peeled = format!("{}^{{}}", spec_source(spec));
            heads.iter().any(|(name, oid, _)| {
                (name == spec_source(spec) || *name == peeled)
                    && oid.to_string().starts_with(commit)
            })
        });
        if tip_is_wanted {
            fetch_shallow_first(&mut remote, std::slice::from_ref(spec))
        } else {
            // The commit may be below the tip: fetch the ref in full.
            fetch(&mut remote, std::slice::from_ref(spec), None)
        }
        .map_err(git_error(format!("fetching {spec}")))?;
    }

    let wanted_commit = source.commit.as_deref().or(match &want {
        Want::Commit(commit) => Some(commit.as_str()),
        Want::Ref(_) => None,
    });
    let commit_id = if let Some(commit) = wanted_commit {
        let mut found = find_commit(&repo, commit);
        if found.is_none() && commit.len() >= 40 {
            let spec = format!("+{commit}:{LOCAL_COMMIT}");
            if let Err(error) = fetch_shallow_first(&mut remote, &[spec]) {
                tracing::debug!(%error, "the server refused to fetch {commit} by id");
            }
            found = find_commit(&repo, commit);
        }
        if found.is_none() && !(options.single_branch && ref_spec.is_some()) {
            let mut specs: Vec<String> = ref_spec.iter().cloned().collect();
            specs.push("+refs/heads/*:refs/remotes/origin/*".to_owned());
            specs.push("+refs/tags/*:refs/tags/*".to_owned());
            let depth = repo.is_shallow().then_some(UNSHALLOW);
            fetch(&mut remote, &specs, depth)
                .map_err(git_error("fetching all branches and tags".to_owned()))?;
            found = find_commit(&repo, commit);
        }
        found.ok_or_else(|| Error::GitRef {
            url: shown.clone(),
            reason: format!("commit {commit} not found"),
        })?
    } else {
        repo.find_reference(LOCAL_REF)
            .and_then(|r| r.peel_to_commit())
            .map_err(git_error("reading the fetched ref".to_owned()))?
            .id()
    };

    let commit = repo
        .find_commit(commit_id)
        .map_err(git_error(format!("reading commit {commit_id}")))?;
    repo.checkout_tree(commit.as_object(), Some(CheckoutBuilder::new().force()))
        .map_err(git_error(format!("checking out {commit_id}")))?;
    repo.set_head_detached(commit_id)
        .map_err(git_error(format!("checking out {commit_id}")))?;
    if options.recurse_submodules {
        update_submodules(&repo, options, &shown, 0)?;
    }
    remove_gitlink(worktree).map_err(|source| Error::Io {
        path: worktree.join(".git"),
        source,
    })?;
    tracing::info!(url = %shown, commit = %commit_id, "checked out git context");
    Ok(commit_id.to_string())
}

/// The source side of a `+SRC:DST` refspec.
fn spec_source(spec: &str) -> &str {
    let spec = spec.strip_prefix('+').unwrap_or(spec);
    spec.split_once(':').map_or(spec, |(src, _)| src)
}

/// What to fetch.
#[derive(Debug)]
enum Want {
    /// An advertised ref, by its full name.
    Ref(String),
    /// A commit id given where a ref was expected.
    Commit(String),
}

/// Find what the user named among the advertised refs: `HEAD` (following
/// its symref), a full ref, `refs/heads/NAME`, `refs/tags/NAME`, else a
/// commit id.
fn resolve_ref(heads: &[Head], asked: Option<&str>) -> Option<Want> {
    let advertised = |name: &str| heads.iter().any(|(n, _, _)| n == name);
    match asked {
        None | Some("HEAD") => {
            let (_, _, target) = heads.iter().find(|(n, _, _)| n == "HEAD")?;
            match target {
                Some(target) if advertised(target) => Some(Want::Ref(target.clone())),
                _ => Some(Want::Ref("HEAD".to_owned())),
            }
        }
        Some(name) => {
            let candidates = if name.starts_with("refs/") {
                vec![name.to_owned()]
            } else {
                vec![
                    format!("refs/heads/{name}"),
                    format!("refs/tags/{name}"),
                    name.to_owned(),
                ]
            };
            candidates
                .into_iter()
                .find(|c| advertised(c))
                .map(Want::Ref)
                .or_else(|| is_commit_id(name).then(|| Want::Commit(name.to_ascii_lowercase())))
        }
    }
}

fn find_commit(repo: &Repository, id: &str) -> Option<Oid> {
    repo.revparse_single(id)
        .and_then(|object| object.peel_to_commit())
        .map(|commit| commit.id())
        .ok()
}

fn callbacks(options: &GitOptions) -> RemoteCallbacks<'static> {
    let mut callbacks = credential_callbacks(options.credentials.clone());
    if options.insecure_skip_tls {
        callbacks.certificate_check(|_, _| Ok(CertificateCheckStatus::CertificateOk));
    }
    callbacks
}

/// A remote ref: its name, the commit it points at, and the ref a
/// symbolic one (`HEAD`) names.
pub(crate) type Head = (String, Oid, Option<String>);

/// The refs `remote` advertises, connecting with `callbacks`; on failure,
/// what was being done (`connecting`, `listing refs`) and git's error.
pub(crate) fn list_heads(
    remote: &mut git2::Remote<'_>,
    callbacks: RemoteCallbacks<'static>,
) -> std::result::Result<Vec<Head>, (&'static str, git2::Error)> {
    let connection = remote
        .connect_auth(Direction::Fetch, Some(callbacks), None)
        .map_err(|e| ("connecting", e))?;
    Ok(connection
        .list()
        .map_err(|e| ("listing refs", e))?
        .iter()
        .map(|head| {
            (
                head.name().to_owned(),
                head.oid(),
                head.symref_target().map(str::to_owned),
            )
        })
        .collect())
}

/// Callbacks answering a server's request for credentials with
/// `credentials` (user and password or token) once: a refusal is an
/// authentication error, not a loop. Shared with `executor run`'s clones.
pub(crate) fn credential_callbacks(
    credentials: Option<super::source::GitCredentials>,
) -> RemoteCallbacks<'static> {
    let mut callbacks = RemoteCallbacks::new();
    let mut attempts = 0;
    callbacks.credentials(move |_url, _username, allowed| {
        attempts += 1;
        match &credentials {
            // libgit2 asks again when the server refuses: do not loop.
            Some(_) if attempts > 1 => Err(git2::Error::new(
                ErrorCode::Auth,
                git2::ErrorClass::Http,
                "the server refused the credentials",
            )),
            Some(c) if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) => {
                Cred::userpass_plaintext(&c.username, &c.password)
            }
            _ => Err(git2::Error::new(
                ErrorCode::Auth,
                git2::ErrorClass::Http,
                "the server asks for credentials",
            )),
        }
    });
    callbacks
}

fn update_submodules(
    repo: &Repository,
    options: &GitOptions,
    shown: &str,
    depth: usize,
) -> Result<(), Error> {
    if depth > 16 {
        return Err(Error::GitRef {
            url: shown.to_owned(),
            reason: "submodules nested more than 16 deep".to_owned(),
        });
    }
    let workdir = repo.workdir().unwrap_or_else(|| repo.path()).to_owned();
    let list_error = |source: git2::Error| Error::Git {
        url: shown.to_owned(),
        action: "listing submodules".to_owned(),
        hint: hint_for(&source),
        source,
    };
    // Relative submodule URLs are relative to the superproject's remote;
    // libgit2 mangles `file:///` URLs when it resolves them, so resolve
    // them here, into the repository's config (never into `.gitmodules`,
    // which is context content).
    let base = repo
        .find_remote("origin")
        .ok()
        .and_then(|remote| remote.url().ok().map(str::to_owned));
    if let Some(base) = base {
        let mut config = repo.config().map_err(list_error)?;
        for submodule in repo.submodules().map_err(list_error)? {
            if let (Ok(name), Ok(Some(url))) = (submodule.name(), submodule.url())
                && (url.starts_with("./") || url.starts_with("../"))
            {
                config
                    .set_str(
                        &format!("submodule.{name}.url"),
                        &resolve_relative_url(&base, url),
                    )
                    .map_err(list_error)?;
            }
        }
    }
    let submodules = repo.submodules().map_err(list_error)?;
    for mut submodule in submodules {
        let name = submodule.name().unwrap_or("?").to_owned();
        let sub_url = submodule
            .url()
            .ok()
            .flatten()
            .map(redact)
            .unwrap_or_default();
        let error = |action: &str| {
            let action = format!("{action} submodule {name} ({sub_url})");
            move |source: git2::Error| Error::Git {
                url: shown.to_owned(),
                action,
                hint: hint_for(&source),
                source,
            }
        };
        let mut fetch_options = FetchOptions::new();
        fetch_options.remote_callbacks(callbacks(options));
        let mut update = SubmoduleUpdateOptions::new();
        update.fetch(fetch_options);
        submodule
            .update(true, Some(&mut update))
            .map_err(error("cloning"))?;
        let sub_repo = submodule.open().map_err(error("opening"))?;
        update_submodules(&sub_repo, options, shown, depth + 1)?;
        let path = workdir.join(submodule.path());
        remove_gitlink(&path).map_err(|source| Error::Io {
            path: path.join(".git"),
            source,
        })?;
    }
    Ok(())
}

/// Git's resolution of a relative submodule URL (`../lib.git`) against the
/// superproject's remote URL, taken as a directory: each `../` drops one
/// component (never the scheme and host), `./` none.
fn resolve_relative_url(base: &str, relative: &str) -> String {
    let mut base = base.trim_end_matches('/').to_owned();
    let floor = base.find("://").map_or(0, |i| {
        let after = i + 3;
        base[after..]
            .find('/')
            .map_or(base.len(), |slash| after + slash)
    });
    let mut rest = relative;
    loop {
        if let Some(tail) = rest.strip_prefix("./") {
            rest = tail;
        } else if let Some(tail) = rest.strip_prefix("../") {
            rest = tail;
            if let Some(slash) = base.rfind('/').filter(|&slash| slash >= floor) {
                base.truncate(slash);
            }
        } else {
            break;
        }
    }
    format!("{base}/{rest}")
}

/// Remove the `.git` file libgit2 may leave in a checkout whose repository
/// lives elsewhere (a directory named `.git` would be repository content
/// of its own and is left alone).
fn remove_gitlink(worktree: &Path) -> std::io::Result<()> {
    let gitlink = worktree.join(".git");
    match fs::symlink_metadata(&gitlink) {
        Ok(meta) if meta.is_file() => fs::remove_file(gitlink),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn hint_for(error: &git2::Error) -> &'static str {
    if error.code() == ErrorCode::Auth || error.message().contains("401") {
        "\nhint: set GIT_USERNAME and GIT_PASSWORD, or GIT_TOKEN"
    } else if error.message().contains("unsupported URL protocol") {
        "\nhint: git contexts support https://, http://, git:// and file:// URLs"
    } else {
        ""
    }
}

/// The URL without any user name or password in it, for messages.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_relative_submodule_urls() {
        let table = [
            (
                "https://host/org/app.git",
                "../lib.git",
                "https://host/org/lib.git",
            ),
            (
                "https://host/org/app.git/",
                "../lib.git",
                "https://host/org/lib.git",
            ),
            ("https://host/org/app", "./lib", "https://host/org/app/lib"),
            (
                "https://host/org/app.git",
                "../../other/lib.git",
                "https://host/other/lib.git",
            ),
            (
                "https://host/app.git",
                "../../../lib.git",
                "https://host/lib.git",
            ),
            (
                "file:///srv/git/app.git",
                "../lib.git",
                "file:///srv/git/lib.git",
            ),
        ];
        for (base, relative, expected) in table {
            assert_eq!(
                resolve_relative_url(base, relative),
                expected,
                "{base} {relative}"
            );
        }
    }

    #[test]
    fn redacts_credentials() {
        assert_eq!(redact("https://u:p@host/r.git"), "https://***@host/r.git");
        assert_eq!(redact("https://host/r@x.git"), "https://host/r@x.git");
        assert_eq!(redact("host/r.git"), "host/r.git");
    }

    #[test]
    fn resolves_refs_like_git() {
        let oid = Oid::ZERO_SHA1;
        let heads = vec![
            ("HEAD".to_owned(), oid, Some("refs/heads/main".to_owned())),
            ("refs/heads/main".to_owned(), oid, None),
            ("refs/heads/v1".to_owned(), oid, None),
            ("refs/tags/v1".to_owned(), oid, None),
            ("refs/tags/v2".to_owned(), oid, None),
            ("refs/pull/3/head".to_owned(), oid, None),
        ];
        let name = |asked| match resolve_ref(&heads, asked) {
            Some(Want::Ref(name)) => name,
            Some(Want::Commit(id)) => format!("commit {id}"),
            None => "none".to_owned(),
        };
        assert_eq!(name(None), "refs/heads/main");
        assert_eq!(name(Some("HEAD")), "refs/heads/main");
        assert_eq!(name(Some("main")), "refs/heads/main");
        // A branch wins over a tag of the same name, as in git.
        assert_eq!(name(Some("v1")), "refs/heads/v1");
        assert_eq!(name(Some("v2")), "refs/tags/v2");
        assert_eq!(name(Some("refs/pull/3/head")), "refs/pull/3/head");
        assert_eq!(name(Some("refs/heads/nope")), "none");
        assert_eq!(name(Some("nope")), "none");
        assert_eq!(name(Some("ABCDEF1")), "commit abcdef1");
    }
}
