//! What `--context` and `--git` say, as kaniko reads them: a directory
//! (`PATH`, `dir://PATH`), a tarball (`tar://PATH`, `tar://stdin`) or a git
//! repository (`git://HOST/REPO#REF#COMMIT`, `https://HOST/REPO.git#REF`,
//! `http://...`). This file only parses text; it must not touch the file
//! system or the network.
//!
//! Like kaniko, a `git://` context names the repository without saying how
//! to reach it: it is fetched over https unless the pull method (kaniko's
//! `GIT_PULL_METHOD`) says `http`, or `git` for the git daemon protocol (an
//! addition; kaniko has no way to use `git://` servers).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Errors in a `--context` or `--git` value. Each names the value as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error(
        "unsupported build context {context:?}: unknown prefix {prefix:?}\nhint: use a directory, dir://PATH, tar://PATH, tar://stdin, git://HOST/REPO#REF#COMMIT or https://HOST/REPO.git#REF"
    )]
    UnknownPrefix { context: String, prefix: String },
    #[error(
        "unsupported build context {context:?}: {what} contexts are not supported\nhint: fetch it first and pass the file with tar://PATH"
    )]
    Unsupported { context: String, what: &'static str },
    #[error("invalid build context {context:?}: {reason}")]
    Invalid { context: String, reason: String },
    #[error("invalid --git option {option:?}: {reason}")]
    GitOption { option: String, reason: String },
}

type Result<T, E = SourceError> = std::result::Result<T, E>;

/// Where the build context comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextSource {
    /// A directory on this machine, used in place.
    Dir(PathBuf),
    /// A tar archive, plain or gzip-compressed, extracted to a temporary
    /// directory.
    Tar(PathBuf),
    /// A tar archive (plain or gzip) read from standard input.
    TarStdin,
    /// A git repository, cloned at one commit.
    Git(GitSource),
}

/// A git context: the repository and what to check out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    /// How the repository was named.
    pub location: GitLocation,
    /// The ref to fetch: a full ref (`refs/heads/main`, `refs/pull/1/head`,
    /// `refs/tags/v1`), a branch or tag name, or a commit id. `None`: the
    /// `--git branch=` option, else the remote's default branch.
    pub reference: Option<String>,
    /// The commit to check out (kaniko's third `#` part): hexadecimal, at
    /// least 4 digits; a full id can be fetched on its own.
    pub commit: Option<String>,
    /// Docker's `#REF:DIR`: the context is this directory of the checkout.
    pub subdir: Option<String>,
}

/// The repository part of a git context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitLocation {
    /// kaniko's `git://HOST/REPO`: the scheme comes from the pull method.
    Kaniko(String),
    /// A URL with its scheme (`https://...`, `http://...`, and `file://...`
    /// for local repositories).
    Url(String),
}

/// The transport for kaniko-style `git://` contexts (kaniko's
/// `GIT_PULL_METHOD`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullMethod {
    #[default]
    Https,
    Http,
    /// The git daemon protocol, `git://` (not in kaniko).
    Git,
}

impl FromStr for PullMethod {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "https" => Ok(Self::Https),
            "http" => Ok(Self::Http),
            "git" => Ok(Self::Git),
            other => Err(format!(
                "unknown git pull method {other:?} (expected https, http or git)"
            )),
        }
    }
}

impl PullMethod {
    fn scheme(self) -> &'static str {
        match self {
            Self::Https => "https",
            Self::Http => "http",
            Self::Git => "git",
        }
    }
}

impl GitSource {
    /// A git URL as ADD takes it (BuildKit): `https://HOST/REPO.git#REF[:DIR]`,
    /// `git://HOST/REPO#REF`, `ssh://...` or `git@HOST:REPO#REF`. Unlike a
    /// kaniko `git://` context, the URL is fetched as written.
    pub fn from_url(url: &str) -> Result<Self> {
        let (scheme, rest) = match url.split_once("://") {
            Some((scheme, rest)) => (Some(scheme), rest),
            None => (None, url),
        };
        parse_git(url, rest, |repo| {
            GitLocation::Url(match scheme {
                Some(scheme) => format!("{scheme}://{repo}"),
                None => repo,
            })
        })
    }

    /// The URL to fetch from.
    #[must_use]
    pub fn url(&self, method: PullMethod) -> String {
        match &self.location {
            GitLocation::Kaniko(rest) => format!("{}://{rest}", method.scheme()),
            GitLocation::Url(url) => url.clone(),
        }
    }
}

/// Username and password (or token) for git over http(s).
#[derive(Clone, PartialEq, Eq)]
pub struct GitCredentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for GitCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl GitCredentials {
    /// kaniko's variables: `GIT_TOKEN` (sent as the user name with an empty
    /// password, as kaniko does, or as the password when `GIT_USERNAME` is
    /// set too), else `GIT_USERNAME` and `GIT_PASSWORD`.
    #[must_use]
    pub fn from_env() -> Option<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self::from_values(var("GIT_USERNAME"), var("GIT_PASSWORD"), var("GIT_TOKEN"))
    }

    fn from_values(
        username: Option<String>,
        password: Option<String>,
        token: Option<String>,
    ) -> Option<Self> {
        match (username, password, token) {
            (Some(username), _, Some(token)) => Some(Self {
                username,
                password: token,
            }),
            (None, _, Some(token)) => Some(Self {
                username: token,
                password: String::new(),
            }),
            (None, None, None) => None,
            (username, password, None) => Some(Self {
                username: username.unwrap_or_default(),
                password: password.unwrap_or_default(),
            }),
        }
    }
}

/// kaniko's `--git` options, plus how to reach and log in to the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitOptions {
    /// `branch=NAME`: the branch to check out when the context names no ref.
    pub branch: Option<String>,
    /// `single-branch=true`: never fetch more than the one ref, even when
    /// the commit asked for is not on it.
    pub single_branch: bool,
    /// `recurse-submodules=true`: clone the submodules too, recursively.
    pub recurse_submodules: bool,
    /// `insecure-skip-tls=true`: do not verify the server's certificate.
    pub insecure_skip_tls: bool,
    /// The transport for `git://HOST/REPO` contexts.
    pub pull_method: PullMethod,
    /// Credentials for http(s).
    pub credentials: Option<GitCredentials>,
}

impl GitOptions {
    /// Apply one `--git` value: `key=value` pairs separated by commas. The
    /// flag may be given several times; later values win.
    pub fn apply(&mut self, value: &str) -> Result<()> {
        for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let error = |reason: String| SourceError::GitOption {
                option: pair.to_owned(),
                reason,
            };
            let Some((key, val)) = pair.split_once('=') else {
                return Err(error("expected key=value".to_owned()));
            };
            let flag = || parse_bool(val).ok_or_else(|| error(format!("{val:?} is not a boolean")));
            match key.trim() {
                "branch" if val.is_empty() => return Err(error("empty branch name".to_owned())),
                "branch" => self.branch = Some(val.to_owned()),
                "single-branch" => self.single_branch = flag()?,
                "recurse-submodules" => self.recurse_submodules = flag()?,
                "insecure-skip-tls" => self.insecure_skip_tls = flag()?,
                other => {
                    return Err(error(format!(
                        "unknown key {other:?} (expected branch, single-branch, recurse-submodules or insecure-skip-tls)"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Fill what kaniko reads from the environment: `GIT_PULL_METHOD`
    /// (`https`, `http`, `git`) and the credentials (see
    /// [`GitCredentials::from_env`]). Values already set are kept.
    pub fn with_env(mut self) -> Result<Self> {
        if let Ok(method) = std::env::var("GIT_PULL_METHOD")
            && !method.is_empty()
        {
            self.pull_method = method.parse().map_err(|reason| SourceError::GitOption {
                option: format!("GIT_PULL_METHOD={method}"),
                reason,
            })?;
        }
        if self.credentials.is_none() {
            self.credentials = GitCredentials::from_env();
        }
        Ok(self)
    }
}

impl FromStr for GitOptions {
    type Err = SourceError;

    fn from_str(s: &str) -> Result<Self> {
        let mut options = Self::default();
        options.apply(s)?;
        Ok(options)
    }
}

/// Go's `strconv.ParseBool`, which kaniko uses for these options.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

impl FromStr for ContextSource {
    type Err = SourceError;

    /// Parse a `--context` value. An empty value is the current directory.
    fn from_str(context: &str) -> Result<Self> {
        let invalid = |reason: &str| SourceError::Invalid {
            context: context.to_owned(),
            reason: reason.to_owned(),
        };
        let Some((prefix, rest)) = context.split_once("://") else {
            return Ok(Self::Dir(PathBuf::from(if context.is_empty() {
                "."
            } else {
                context
            })));
        };
        match prefix {
            "dir" if rest.is_empty() => Err(invalid("no directory after dir://")),
            "dir" => Ok(Self::Dir(PathBuf::from(rest))),
            "tar" if rest.is_empty() => Err(invalid("no file after tar://")),
            "tar" if rest == "stdin" => Ok(Self::TarStdin),
            "tar" => Ok(Self::Tar(PathBuf::from(rest))),
            "git" => parse_git(context, rest, GitLocation::Kaniko).map(Self::Git),
            "https" | "http" => {
                let repo = rest.split('#').next().unwrap_or_default();
                if repo
                    .trim_end_matches('/')
                    .to_ascii_lowercase()
                    .ends_with(".git")
                {
                    parse_git(context, rest, |repo| {
                        GitLocation::Url(format!("{prefix}://{repo}"))
                    })
                    .map(Self::Git)
                } else {
                    Err(SourceError::Unsupported {
                        context: context.to_owned(),
                        what: "remote tarball (an http(s) URL not ending in .git)",
                    })
                }
            }
            "file" => parse_git(context, rest, |repo| {
                GitLocation::Url(format!("file://{repo}"))
            })
            .map(Self::Git),
            "gs" => Err(SourceError::Unsupported {
                context: context.to_owned(),
                what: "Google Cloud Storage",
            }),
            "s3" => Err(SourceError::Unsupported {
                context: context.to_owned(),
                what: "S3",
            }),
            other => Err(SourceError::UnknownPrefix {
                context: context.to_owned(),
                prefix: format!("{other}://"),
            }),
        }
    }
}

/// `REPO[#REF[:DIR][#COMMIT]]` after the scheme.
fn parse_git(
    context: &str,
    rest: &str,
    location: impl FnOnce(String) -> GitLocation,
) -> Result<GitSource> {
    let invalid = |reason: String| SourceError::Invalid {
        context: context.to_owned(),
        reason,
    };
    let mut parts = rest.split('#');
    let repo = parts.next().unwrap_or_default();
    let reference = parts.next();
    let commit = parts.next();
    if parts.next().is_some() {
        return Err(invalid("too many '#': expected REPO#REF#COMMIT".to_owned()));
    }
    if repo.is_empty() || repo.starts_with('/') && !context.starts_with("file://") {
        return Err(invalid("no host and repository before '#'".to_owned()));
    }
    if repo.chars().any(char::is_whitespace) {
        return Err(invalid("white space in the repository URL".to_owned()));
    }
    let (reference, subdir) = match reference.filter(|r| !r.is_empty()) {
        None => (None, None),
        Some(fragment) => match fragment.split_once(':') {
            Some((reference, dir)) => (
                Some(reference).filter(|r| !r.is_empty()),
                Some(dir).filter(|d| !d.is_empty() && *d != "/" && *d != "."),
            ),
            None => (Some(fragment), None),
        },
    };
    if let Some(reference) = reference
        && !valid_ref(reference)
    {
        return Err(invalid(format!("{reference:?} is not a valid git ref")));
    }
    let commit = match commit.filter(|c| !c.is_empty()) {
        None => None,
        Some(commit) if is_commit_id(commit) => Some(commit.to_ascii_lowercase()),
        Some(commit) => {
            return Err(invalid(format!(
                "{commit:?} is not a commit id (4 to 64 hexadecimal digits)"
            )));
        }
    };
    Ok(GitSource {
        location: location(repo.to_owned()),
        reference: reference.map(str::to_owned),
        commit,
        subdir: subdir.map(str::to_owned),
    })
}

/// A ref name as given after '#': a full ref, a short name or a commit id.
fn valid_ref(reference: &str) -> bool {
    let full = if reference.starts_with("refs/") || reference == "HEAD" {
        reference.to_owned()
    } else {
        format!("refs/heads/{reference}")
    };
    git2::Reference::is_valid_name(&full)
}

/// Hexadecimal, 4 to 64 digits (SHA-1 and SHA-256 object ids, abbreviated
/// or not).
pub(crate) fn is_commit_id(s: &str) -> bool {
    (4..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(
        location: GitLocation,
        reference: Option<&str>,
        commit: Option<&str>,
        subdir: Option<&str>,
    ) -> ContextSource {
        ContextSource::Git(GitSource {
            location,
            reference: reference.map(str::to_owned),
            commit: commit.map(str::to_owned),
            subdir: subdir.map(str::to_owned),
        })
    }

    fn kaniko(repo: &str) -> GitLocation {
        GitLocation::Kaniko(repo.to_owned())
    }

    fn url(url: &str) -> GitLocation {
        GitLocation::Url(url.to_owned())
    }

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn parses_every_kind_of_context() {
        let with_commit = format!("git://github.com/org/repo.git#refs/heads/dev#{SHA}");
        let table: Vec<(&str, ContextSource)> = vec![
            ("", ContextSource::Dir(".".into())),
            (".", ContextSource::Dir(".".into())),
            (
                "/workspace/app",
                ContextSource::Dir("/workspace/app".into()),
            ),
            ("dir:///workspace", ContextSource::Dir("/workspace".into())),
            ("dir://rel/dir", ContextSource::Dir("rel/dir".into())),
            ("tar://ctx.tar.gz", ContextSource::Tar("ctx.tar.gz".into())),
            (
                "tar:///tmp/ctx.tar",
                ContextSource::Tar("/tmp/ctx.tar".into()),
            ),
            ("tar://stdin", ContextSource::TarStdin),
            (
                "git://github.com/org/repo.git",
                git(kaniko("github.com/org/repo.git"), None, None, None),
            ),
            (
                "git://github.com/org/repo#refs/heads/main",
                git(
                    kaniko("github.com/org/repo"),
                    Some("refs/heads/main"),
                    None,
                    None,
                ),
            ),
            (
                &with_commit,
                git(
                    kaniko("github.com/org/repo.git"),
                    Some("refs/heads/dev"),
                    Some(SHA),
                    None,
                ),
            ),
            (
                "git://github.com/org/repo.git#main",
                git(kaniko("github.com/org/repo.git"), Some("main"), None, None),
            ),
            (
                "git://github.com/org/repo.git#refs/pull/12/head",
                git(
                    kaniko("github.com/org/repo.git"),
                    Some("refs/pull/12/head"),
                    None,
                    None,
                ),
            ),
            (
                "git://host/repo.git##ABCDEF12",
                git(kaniko("host/repo.git"), None, Some("abcdef12"), None),
            ),
            (
                "https://github.com/org/repo.git",
                git(url("https://github.com/org/repo.git"), None, None, None),
            ),
            (
                "https://github.com/org/repo.git#v1.2.3",
                git(
                    url("https://github.com/org/repo.git"),
                    Some("v1.2.3"),
                    None,
                    None,
                ),
            ),
            (
                "https://github.com/org/repo.git#main:docker/app",
                git(
                    url("https://github.com/org/repo.git"),
                    Some("main"),
                    None,
                    Some("docker/app"),
                ),
            ),
            (
                "https://github.com/org/repo.git#:sub",
                git(
                    url("https://github.com/org/repo.git"),
                    None,
                    None,
                    Some("sub"),
                ),
            ),
            (
                "http://git.local:8080/repo.git#dev",
                git(
                    url("http://git.local:8080/repo.git"),
                    Some("dev"),
                    None,
                    None,
                ),
            ),
            (
                "file:///srv/git/repo.git#main",
                git(url("file:///srv/git/repo.git"), Some("main"), None, None),
            ),
        ];
        for (input, expected) in table {
            assert_eq!(input.parse::<ContextSource>(), Ok(expected), "{input}");
        }
    }

    #[test]
    fn rejects_bad_contexts_naming_them() {
        let table = [
            ("s3://bucket/ctx.tar.gz", "S3 contexts are not supported"),
            (
                "gs://bucket/ctx.tar.gz",
                "Google Cloud Storage contexts are not supported",
            ),
            ("https://example.com/ctx.tar.gz", "remote tarball"),
            ("ftp://host/x", "unknown prefix \"ftp://\""),
            ("tar://", "no file after tar://"),
            ("dir://", "no directory after dir://"),
            ("git://", "no host and repository"),
            ("git://#main", "no host and repository"),
            ("git://host/repo.git#main#abc#def", "too many '#'"),
            ("git://host/repo.git#main#xyz", "\"xyz\" is not a commit id"),
            ("git://host/repo.git#main#abc", "\"abc\" is not a commit id"),
            (
                "git://host/repo.git#bad..ref",
                "\"bad..ref\" is not a valid git ref",
            ),
            ("git://host/my repo.git", "white space"),
        ];
        for (input, message) in table {
            let err = input.parse::<ContextSource>().unwrap_err().to_string();
            assert!(err.contains(message), "{input}: {err}");
            assert!(err.contains(&format!("{input:?}")), "{input}: {err}");
        }
    }

    #[test]
    fn kaniko_git_contexts_use_the_pull_method() {
        let ContextSource::Git(source) = "git://github.com/org/repo.git#main".parse().unwrap()
        else {
            panic!("not git");
        };
        assert_eq!(
            source.url(PullMethod::Https),
            "https://github.com/org/repo.git"
        );
        assert_eq!(
            source.url(PullMethod::Http),
            "http://github.com/org/repo.git"
        );
        assert_eq!(source.url(PullMethod::Git), "git://github.com/org/repo.git");
        let ContextSource::Git(source) = "http://h/r.git".parse().unwrap() else {
            panic!("not git");
        };
        assert_eq!(source.url(PullMethod::Https), "http://h/r.git");
    }

    #[test]
    fn git_options() {
        let options: GitOptions = "branch=dev,single-branch=true,recurse-submodules=T"
            .parse()
            .unwrap();
        assert_eq!(options.branch.as_deref(), Some("dev"));
        assert!(options.single_branch);
        assert!(options.recurse_submodules);
        assert!(!options.insecure_skip_tls);

        let mut options = GitOptions::default();
        options.apply("recurse-submodules=true").unwrap();
        options
            .apply("recurse-submodules=0, insecure-skip-tls=1")
            .unwrap();
        assert!(!options.recurse_submodules);
        assert!(options.insecure_skip_tls);

        for (input, message) in [
            ("branch", "expected key=value"),
            ("depth=1", "unknown key \"depth\""),
            ("single-branch=yes", "\"yes\" is not a boolean"),
            ("branch=", "empty branch name"),
        ] {
            let err = input.parse::<GitOptions>().unwrap_err().to_string();
            assert!(err.contains(message), "{input}: {err}");
            assert!(err.starts_with("invalid --git option"), "{err}");
        }
    }

    #[test]
    fn credentials_follow_kaniko() {
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(GitCredentials::from_values(None, None, None), None);
        assert_eq!(
            GitCredentials::from_values(s("u"), s("p"), None),
            Some(GitCredentials {
                username: "u".into(),
                password: "p".into()
            })
        );
        assert_eq!(
            GitCredentials::from_values(None, None, s("tok")),
            Some(GitCredentials {
                username: "tok".into(),
                password: String::new()
            })
        );
        assert_eq!(
            GitCredentials::from_values(s("oauth2"), s("ignored"), s("tok")),
            Some(GitCredentials {
                username: "oauth2".into(),
                password: "tok".into()
            })
        );
        let debug = format!(
            "{:?}",
            GitCredentials {
                username: "u".into(),
                password: "secret".into()
            }
        );
        assert!(!debug.contains("secret"));
    }
}
