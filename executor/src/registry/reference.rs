//! Image references as Docker reads them: `busybox` is
//! `docker.io/library/busybox:latest`, `host:port/repo` and `localhost/repo`
//! name their registry, `@sha256:...` pins a digest (with or without a tag).
//! Parsing is oci-spec's (Docker's own grammar); this file adds errors that
//! name the input and the `--registry-mirror` rewriting of Docker Hub names.

use std::fmt;
use std::str::FromStr;

use oci_client::{ParseError, Reference};

/// Docker Hub's registry name in normalised references.
pub const DOCKER_HUB: &str = "docker.io";

/// A parsed, normalised image reference (in serde: its text).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct ImageReference(Reference);

/// An image reference or a registry mirror that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct ReferenceError {
    pub input: String,
    pub reason: String,
}

impl ImageReference {
    /// Parses `input` with Docker's defaults (`docker.io`, `library/`,
    /// `latest` when neither a tag nor a digest is given).
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let err = |reason: &str| ReferenceError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() || input.contains(char::is_whitespace) {
            return Err(err("an image reference is a name without spaces"));
        }
        if input.contains("://") {
            return Err(err(
                "a reference names no scheme: write `host[:port]/repository[:tag]`",
            ));
        }
        // The part before the first `/` names a registry only when it looks
        // like a host, so an upper-case letter elsewhere is in the repository.
        let name_end = input.find('@').unwrap_or(input.len());
        let name = &input[..name_end];
        let (host, rest) = match name.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
                (Some(first), rest)
            }
            _ => (None, name),
        };
        let repo = rest.rsplit_once(':').map_or(
            rest,
            |(repo, tag)| {
                if tag.contains('/') { rest } else { repo }
            },
        );
        if repo.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(err("repository names must be lowercase"));
        }
        if host == Some("") {
            return Err(err("the registry host is empty"));
        }
        if let Some((_, digest)) = input.split_once('@') {
            let Some((algorithm, hex)) = digest.split_once(':') else {
                return Err(err("the digest is not `algorithm:hex`"));
            };
            let len = match algorithm {
                "sha256" => 64,
                "sha384" => 96,
                "sha512" => 128,
                _ => return Err(err("the digest algorithm is not supported")),
            };
            if hex.len() != len {
                return Err(err("the digest has the wrong length"));
            }
            if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(err("the digest is not lowercase hex"));
            }
        }
        let parsed = Reference::try_from(input).map_err(|e| {
            err(match e {
                ParseError::DigestInvalidFormat => "the digest is not `algorithm:hex`",
                ParseError::DigestInvalidLength => "the digest has the wrong length",
                ParseError::DigestUnsupported => "the digest algorithm is not supported",
                ParseError::NameContainsUppercase => "repository names must be lowercase",
                ParseError::NameEmpty => "the name is empty",
                ParseError::NameTooLong => "the name is longer than 255 characters",
                ParseError::TagInvalidFormat => "the tag is not valid",
                ParseError::ReferenceInvalidFormat => {
                    "expected `[host[:port]/]repository[:tag][@digest]` with a lowercase repository \
                     and a tag of letters, digits, '_', '.' and '-'"
                }
            })
        })?;
        if parsed.repository().is_empty() {
            return Err(err("the repository is empty"));
        }
        Ok(Self(parsed))
    }

    /// The registry as written in the normalised name (`docker.io` for Docker
    /// Hub).
    #[must_use]
    pub fn registry(&self) -> &str {
        self.0.registry()
    }

    /// The host the registry API is reached at (`index.docker.io` for Docker
    /// Hub, else the registry itself). Options and credentials are per host.
    #[must_use]
    pub fn host(&self) -> &str {
        self.0.resolve_registry()
    }

    #[must_use]
    pub fn repository(&self) -> &str {
        self.0.repository()
    }

    #[must_use]
    pub fn tag(&self) -> Option<&str> {
        self.0.tag()
    }

    #[must_use]
    pub fn digest(&self) -> Option<&str> {
        self.0.digest()
    }

    /// Whether this names an image on Docker Hub (the only registry that
    /// `--registry-mirror` applies to).
    #[must_use]
    pub fn is_docker_hub(&self) -> bool {
        matches!(
            self.registry(),
            DOCKER_HUB | "index.docker.io" | "registry-1.docker.io"
        )
    }

    /// `registry/repository`, without tag or digest.
    #[must_use]
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }

    /// The same repository with `tag` and no digest.
    #[must_use]
    pub fn with_tag(&self, tag: &str) -> Self {
        Self(Reference::with_tag(
            self.registry().to_string(),
            self.repository().to_string(),
            tag.to_string(),
        ))
    }

    /// The same repository pinned to `digest` (the tag is dropped).
    #[must_use]
    pub fn with_digest(&self, digest: &str) -> Self {
        Self(Reference::with_digest(
            self.registry().to_string(),
            self.repository().to_string(),
            digest.to_string(),
        ))
    }

    /// Another repository on the same registry, tag `latest`. Used to name
    /// a repository (for blob operations) rather than an image.
    #[must_use]
    pub fn with_repository(&self, repository: &str) -> Self {
        Self(Reference::with_tag(
            self.registry().to_string(),
            repository.to_string(),
            "latest".to_string(),
        ))
    }

    /// The same image on `mirror` (a host as given to `--registry-mirror`),
    /// keeping repository, tag and digest.
    #[must_use]
    pub fn on_registry(&self, mirror: &str) -> Self {
        let (registry, repository) = (mirror.to_string(), self.repository().to_string());
        Self(match (self.tag(), self.digest()) {
            (Some(tag), Some(digest)) => {
                Reference::with_tag_and_digest(registry, repository, tag.into(), digest.into())
            }
            (None, Some(digest)) => Reference::with_digest(registry, repository, digest.into()),
            (tag, None) => {
                Reference::with_tag(registry, repository, tag.unwrap_or("latest").into())
            }
        })
    }

    /// The references to try, in order, to pull this image: each mirror for
    /// a Docker Hub image, then the image itself.
    #[must_use]
    pub fn pull_candidates(&self, mirrors: &[String]) -> Vec<Self> {
        let mut out = Vec::new();
        if self.is_docker_hub() {
            out.extend(mirrors.iter().map(|m| self.on_registry(m)));
        }
        out.push(self.clone());
        out
    }

    /// The reference as oci-client takes it. A reference with both a tag
    /// and a digest is addressed by its digest.
    pub(crate) fn oci(&self) -> &Reference {
        &self.0
    }
}

impl FromStr for ImageReference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for ImageReference {
    type Error = ReferenceError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<ImageReference> for String {
    fn from(reference: ImageReference) -> Self {
        reference.to_string()
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Validates a `--registry-mirror` value: `host[:port]`, an `https://` or
/// `http://` prefix and a trailing `/` are accepted and dropped.
pub fn parse_mirror(input: &str) -> Result<String, ReferenceError> {
    let err = |reason: &str| ReferenceError {
        input: input.to_string(),
        reason: reason.to_string(),
    };
    let host = input
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    if host.is_empty() {
        return Err(err("a registry mirror is a host[:port]"));
    }
    if host.contains('/') {
        return Err(err(
            "a registry mirror is a host[:port]; a path after the host is not supported",
        ));
    }
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    if let Some(port) = port
        && port.parse::<u16>().is_err()
    {
        return Err(err("the mirror's port is not a number from 0 to 65535"));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if !name.split('.').all(label_ok) {
        return Err(err("the mirror's host is not a valid host name"));
    }
    Ok(host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ImageReference {
        ImageReference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn docker_defaults() {
        for (input, normalised) in [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("user/app:v1", "docker.io/user/app:v1"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            (
                "index.docker.io/busybox",
                "docker.io/library/busybox:latest",
            ),
            ("index.docker.io/user/app", "docker.io/user/app:latest"),
            ("gcr.io/project/app", "gcr.io/project/app:latest"),
            ("localhost/app", "localhost/app:latest"),
            ("localhost:5000/app:1", "localhost:5000/app:1"),
            ("127.0.0.1:5000/a/b/c:t", "127.0.0.1:5000/a/b/c:t"),
            (
                "Registry.Example.com/app",
                "Registry.Example.com/app:latest",
            ),
        ] {
            assert_eq!(parse(input).to_string(), normalised, "{input}");
        }
    }

    #[test]
    fn parts() {
        let r = parse("localhost:5000/team/app:v2");
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.host(), "localhost:5000");
        assert_eq!(r.repository(), "team/app");
        assert_eq!(r.tag(), Some("v2"));
        assert_eq!(r.digest(), None);
        assert_eq!(r.name(), "localhost:5000/team/app");
        let hub = parse("busybox");
        assert_eq!(hub.registry(), "docker.io");
        assert_eq!(hub.host(), "index.docker.io");
        assert!(hub.is_docker_hub());
        assert!(!r.is_docker_hub());
    }

    #[test]
    fn digests() {
        let r = parse(&format!("busybox@{DIGEST}"));
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(DIGEST));
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{DIGEST}"));
        let both = parse(&format!("host:1/app:v1@{DIGEST}"));
        assert_eq!(both.tag(), Some("v1"));
        assert_eq!(both.digest(), Some(DIGEST));
        assert_eq!(both.to_string(), format!("host:1/app:v1@{DIGEST}"));
        assert_eq!(both.with_tag("v2").to_string(), "host:1/app:v2");
        assert_eq!(
            both.with_digest(DIGEST).to_string(),
            format!("host:1/app@{DIGEST}")
        );
    }

    #[test]
    fn errors_name_the_input_and_the_reason() {
        for (input, reason) in [
            ("", "without spaces"),
            ("Busybox", "lowercase"),
            ("host:5000/App:v1", "lowercase"),
            ("busybox:", "expected"),
            ("busybox@sha256:abc", "length"),
            (
                "busybox@md5:0123456789abcdef0123456789abcdef",
                "not supported",
            ),
            ("https://host/app", "no scheme"),
            ("bad name", "without spaces"),
            ("app:tag!", "expected"),
            (" busybox", "without spaces"),
        ] {
            let e = ImageReference::parse(input).expect_err(input);
            assert_eq!(e.input, input);
            assert!(e.reason.contains(reason), "{input}: {}", e.reason);
            assert!(e.to_string().starts_with("invalid image reference"));
        }
        // An upper-case tag is fine, as in Docker.
        assert_eq!(parse("app:V1").tag(), Some("V1"));
    }

    #[test]
    fn mirrors_apply_to_docker_hub_only() {
        let mirrors = vec!["mirror.example:5000".to_string(), "m2.example".to_string()];
        let hub = parse("busybox:1.36");
        let tried: Vec<String> = hub
            .pull_candidates(&mirrors)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            tried,
            [
                "mirror.example:5000/library/busybox:1.36",
                "m2.example/library/busybox:1.36",
                "docker.io/library/busybox:1.36",
            ]
        );
        let pinned = parse(&format!("busybox@{DIGEST}")).on_registry("m.example");
        assert_eq!(
            pinned.to_string(),
            format!("m.example/library/busybox@{DIGEST}")
        );
        let other = parse("gcr.io/p/app");
        assert_eq!(other.pull_candidates(&mirrors), vec![other.clone()]);
    }

    #[test]
    fn mirror_values() {
        assert_eq!(parse_mirror("mirror.gcr.io").unwrap(), "mirror.gcr.io");
        assert_eq!(
            parse_mirror("https://Mirror.example:5000/").unwrap(),
            "mirror.example:5000"
        );
        for bad in ["", "host/path", "host:port", "-bad.example", "a..b"] {
            let e = parse_mirror(bad).expect_err(bad);
            assert_eq!(e.input, bad);
        }
    }
}
