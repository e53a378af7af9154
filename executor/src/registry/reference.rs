//! Image references as Docker reads them: `busybox` is
//! `docker.io/library/busybox:latest`, `host:port/repo` and `localhost/repo`
//! name their registry, `@sha256:...` pins a digest (with or without a tag).
//! The grammar is Docker's (distribution's `reference` package), matched by
//! hand in `grammar` below; the result is oci-client's `Reference`. This file
//! adds errors that name the input and the `--registry-mirror` rewriting of
//! Docker Hub names.

use std::fmt;
use std::str::FromStr;

use oci_client::Reference;

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
        let parsed = grammar::parse(input).map_err(err)?;
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

/// Docker's reference grammar, matched without a regular expression.
///
/// oci-client's `Reference::try_from` matches the same grammar with oci-spec's
/// regular expression, whose Unicode `\w{0,127}` for the tag compiles to a
/// large automaton on first use: about 25 ms of every executor start (a
/// third of a warm, fully cached rebuild). The grammar is small and fixed,
/// so it is matched here by hand (ASCII `\w`, as Docker's Go regexp has it)
/// and the parts are handed to oci-client's constructors.
mod grammar {
    use oci_client::Reference;

    /// distribution's `NameTotalLengthMax`.
    const NAME_TOTAL_LENGTH_MAX: usize = 255;

    const FORMAT: &str = "expected `[host[:port]/]repository[:tag][@digest]` with a lowercase \
                          repository and a tag of letters, digits, '_', '.' and '-'";

    /// Parses `input` (not empty, no whitespace: the caller checked) into
    /// a normalised reference, or says what is wrong with it.
    pub(super) fn parse(input: &str) -> Result<Reference, &'static str> {
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest)),
            None => (input, None),
        };
        if let Some(digest) = digest {
            check_digest(digest)?;
        }
        // A `:` after the last `/` starts the tag; one before it is a port.
        let (name, tag) = match rest.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
            _ => (rest, None),
        };
        if let Some(tag) = tag
            && !is_tag(tag)
        {
            return Err(FORMAT);
        }
        if !is_name(name) {
            return Err(if name.is_empty() {
                "the name is empty"
            } else {
                FORMAT
            });
        }
        let (registry, repository) = split_domain(name);
        if repository.len() > NAME_TOTAL_LENGTH_MAX {
            return Err("the name is longer than 255 characters");
        }
        let (tag, digest) = (tag.map(str::to_string), digest.map(str::to_string));
        Ok(match (tag, digest) {
            (Some(tag), Some(digest)) => {
                Reference::with_tag_and_digest(registry, repository, tag, digest)
            }
            (None, Some(digest)) => Reference::with_digest(registry, repository, digest),
            (tag, None) => {
                Reference::with_tag(registry, repository, tag.unwrap_or_else(|| "latest".into()))
            }
        })
    }

    /// `algorithm:hex` with a known algorithm and its length of lowercase hex
    /// (the grammar allows any algorithm; registries know these three).
    fn check_digest(digest: &str) -> Result<(), &'static str> {
        let Some((algorithm, hex)) = digest.split_once(':') else {
            return Err("the digest is not `algorithm:hex`");
        };
        let len = match algorithm {
            "sha256" => 64,
            "sha384" => 96,
            "sha512" => 128,
            _ => return Err("the digest algorithm is not supported"),
        };
        if hex.len() != len {
            return Err("the digest has the wrong length");
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err("the digest is not lowercase hex");
        }
        Ok(())
    }

    /// `[\w][\w.-]{0,127}`.
    fn is_tag(tag: &str) -> bool {
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let bytes = tag.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= 128
            && word(bytes[0])
            && bytes[1..]
                .iter()
                .all(|&b| word(b) || b == b'.' || b == b'-')
    }

    /// `(domain/)?path-component(/path-component)*`: the first component may
    /// be a domain (with a port) or a path component, as the regexp's
    /// optional group allows either.
    fn is_name(name: &str) -> bool {
        if name.split('/').all(is_path_component) {
            return true;
        }
        match name.split_once('/') {
            Some((domain, path)) => is_domain(domain) && path.split('/').all(is_path_component),
            None => false,
        }
    }

    /// `[a-z0-9]+((\.|_|__|-*)[a-z0-9]+)*`.
    fn is_path_component(part: &str) -> bool {
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let bytes = part.as_bytes();
        let mut i = 0;
        loop {
            // One or more alphanumerics.
            let start = i;
            while i < bytes.len() && alnum(bytes[i]) {
                i += 1;
            }
            if i == start {
                return false;
            }
            if i == bytes.len() {
                return true;
            }
            // A separator: `.`, `_`, `__` or a run of `-`.
            match bytes[i] {
                b'.' => i += 1,
                b'_' => {
                    i += if bytes.get(i + 1) == Some(&b'_') {
                        2
                    } else {
                        1
                    }
                }
                b'-' => {
                    while i < bytes.len() && bytes[i] == b'-' {
                        i += 1;
                    }
                }
                _ => return false,
            }
        }
    }

    /// `label(.label)*(:[0-9]+)?`, a label being `[a-zA-Z0-9]` or
    /// `[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`.
    fn is_domain(domain: &str) -> bool {
        let (host, port) = match domain.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (domain, None),
        };
        let label = |l: &str| {
            let b = l.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
        };
        host.split('.').all(label)
            && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    }

    /// distribution's `splitDockerDomain`: the first component names the
    /// registry when it has a `.` or `:` or is `localhost`; else Docker
    /// Hub, whose official images are under `library/`.
    fn split_domain(name: &str) -> (String, String) {
        let (mut domain, mut rest) = match name.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_string(), rest.to_string())
            }
            _ => (super::DOCKER_HUB.to_string(), name.to_string()),
        };
        if domain == "index.docker.io" {
            super::DOCKER_HUB.clone_into(&mut domain);
        }
        if domain == super::DOCKER_HUB && !rest.contains('/') {
            rest = format!("library/{rest}");
        }
        (domain, rest)
    }
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
    fn the_grammar_is_dockers() {
        for ok in [
            "a",
            "a_b/c__d/e---f/g.h",
            "my-registry.example:443/a/b",
            "localhost:5000/x:Tag_1.0-rc",
            "0.0.0.0/x",
            "x:a",
        ] {
            parse(ok);
        }
        for bad in [
            "a..b",
            "a___b",
            "-a",
            "a-",
            "a/",
            "/a",
            "a//b",
            "host:/a",
            "-host.example/a",
            "a:.tag",
            "a:-tag",
            "x@sha256",
        ] {
            assert!(ImageReference::parse(bad).is_err(), "{bad}");
        }
        let long_tag = "t".repeat(128);
        parse(&format!("a:{long_tag}"));
        assert!(ImageReference::parse(&format!("a:{long_tag}t")).is_err());
        let long_name = "a".repeat(250);
        assert!(ImageReference::parse(&format!("host.example/{long_name}/bcdef")).is_err());
        parse(&format!("host.example/{long_name}/bcde"));
    }

    /// The hand-written grammar accepts what oci-spec's regular expression
    /// accepts (ASCII inputs) and normalises them the same way.
    #[test]
    fn the_grammar_agrees_with_oci_specs_regexp() {
        let alphabet = b"ab0Z.-_:/@";
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut accepted = 0;
        for _ in 0..200_000 {
            let len = usize::try_from(next() % 12).unwrap() + 1;
            let input: String = (0..len)
                .map(|_| char::from(alphabet[usize::try_from(next() % 10).unwrap()]))
                .collect();
            if input.contains('@') {
                continue;
            }
            let ours = grammar::parse(&input).map(|r| r.whole());
            let theirs = Reference::try_from(input.as_str()).map(|r| r.whole());
            assert_eq!(
                ours.is_ok(),
                theirs.is_ok(),
                "{input:?}: {ours:?} / {theirs:?}"
            );
            if let (Ok(ours), Ok(theirs)) = (ours, theirs) {
                assert_eq!(ours, theirs, "{input:?}");
                accepted += 1;
            }
        }
        assert!(accepted > 1000, "only {accepted} inputs were references");
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
