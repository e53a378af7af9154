//! Pipeline variables: the predefined ones, with GitLab CI's names, and
//! the expansion of `$VAR` and `${VAR}` in variable values (and wherever
//! else the runner expands them: destinations, image names...).
//!
//! Expansion is GitLab Runner's (`JobVariables.Expand`, Go's `os.Expand`):
//! one pass, each reference replaced by the raw value of the last
//! definition of that name; an unknown name expands to nothing; `$$` is a
//! literal `$`; a `$` not followed by a name stays as it is, as do `$1`,
//! `$*`, `$#`, `$@`, `$!`, `$?` (the shell's, left for the shell). Written
//! here rather than taken from a crate because no crate has exactly these
//! rules (the Dockerfile's word expansion has BuildKit's, with modifiers
//! and quotes).

use std::fmt;
use std::str::FromStr;

use super::checkout::Checkout;

/// Variables in order of precedence: a later definition of a name wins.
pub type Variables = Vec<(String, String)>;

/// The event a pipeline runs for (`CI_PIPELINE_SOURCE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PipelineSource {
    /// Commits pushed to a branch.
    #[default]
    Push,
    /// A tag pushed.
    Tag,
    /// A pull (merge) request opened or updated.
    PullRequest,
    /// Started by hand (`executor run` without an event, a button).
    Manual,
}

impl PipelineSource {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Push => "push",
            Self::Tag => "tag",
            Self::PullRequest => "pull_request",
            Self::Manual => "manual",
        }
    }
}

impl fmt::Display for PipelineSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid event {0:?}\nhint: use push, tag, pull_request or manual")]
pub struct InvalidSource(pub String);

impl FromStr for PipelineSource {
    type Err = InvalidSource;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "push" => Ok(Self::Push),
            "tag" => Ok(Self::Tag),
            "pull_request" => Ok(Self::PullRequest),
            "manual" => Ok(Self::Manual),
            other => Err(InvalidSource(other.to_owned())),
        }
    }
}

/// What the predefined variables say about a run. Made from a checkout
/// with [`Predefined::new`]; its fields may be changed before use (the
/// branch or tag given on the command line, a pipeline id of the caller's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Predefined {
    /// The commit id, 40 hexadecimal digits.
    pub sha: String,
    /// The branch the commit is on, if known.
    pub branch: Option<String>,
    /// The tag the commit is, if known.
    pub tag: Option<String>,
    pub message: String,
    pub pipeline_id: String,
    pub source: PipelineSource,
    /// Where jobs see the checkout (`CI_PROJECT_DIR`).
    pub project_dir: String,
    pub project_name: String,
    pub repository_url: String,
}

impl Predefined {
    /// The variables of a run of `checkout` for `source`, with the checkout
    /// at `/builds/NAME` in jobs (GitLab's default).
    #[must_use]
    pub fn new(checkout: &Checkout, pipeline_id: &str, source: PipelineSource) -> Self {
        let project_name = checkout.project_name();
        Self {
            sha: checkout.sha.clone(),
            branch: checkout.branch().map(str::to_owned),
            tag: checkout.tag().map(str::to_owned),
            message: checkout.message.clone(),
            pipeline_id: pipeline_id.to_owned(),
            source,
            project_dir: default_project_dir(&project_name),
            project_name,
            repository_url: checkout.repository_url.clone(),
        }
    }

    /// `CI_COMMIT_REF_NAME`: the tag for a tag pipeline, else the branch,
    /// else the tag, else the commit id.
    #[must_use]
    pub fn ref_name(&self) -> &str {
        let tag_first = self.source == PipelineSource::Tag;
        let (first, second) = if tag_first {
            (&self.tag, &self.branch)
        } else {
            (&self.branch, &self.tag)
        };
        first.as_deref().or(second.as_deref()).unwrap_or(&self.sha)
    }

    /// The run's variables: `CI=true`, `CI_COMMIT_SHA`,
    /// `CI_COMMIT_SHORT_SHA` (8 digits), `CI_COMMIT_REF_NAME`,
    /// `CI_COMMIT_REF_SLUG`, `CI_COMMIT_BRANCH` (not for tag and pull
    /// request pipelines, as in GitLab), `CI_COMMIT_TAG` (tag pipelines
    /// only), `CI_COMMIT_MESSAGE`, `CI_COMMIT_TITLE`, `CI_PIPELINE_ID`,
    /// `CI_PIPELINE_SOURCE`, `CI_PROJECT_DIR`, `CI_PROJECT_NAME`,
    /// `CI_REPOSITORY_URL`.
    #[must_use]
    pub fn pipeline(&self) -> Variables {
        let short = self.sha.get(..8).unwrap_or(&self.sha);
        let title = self.message.lines().next().unwrap_or_default();
        let mut vars: Variables = vec![
            ("CI".into(), "true".into()),
            ("CI_COMMIT_SHA".into(), self.sha.clone()),
            ("CI_COMMIT_SHORT_SHA".into(), short.to_owned()),
            ("CI_COMMIT_REF_NAME".into(), self.ref_name().to_owned()),
            ("CI_COMMIT_REF_SLUG".into(), slug(self.ref_name())),
        ];
        if let Some(branch) = &self.branch
            && !matches!(
                self.source,
                PipelineSource::Tag | PipelineSource::PullRequest
            )
        {
            vars.push(("CI_COMMIT_BRANCH".into(), branch.clone()));
        }
        if let Some(tag) = &self.tag
            && self.source == PipelineSource::Tag
        {
            vars.push(("CI_COMMIT_TAG".into(), tag.clone()));
        }
        vars.extend([
            ("CI_COMMIT_MESSAGE".into(), self.message.clone()),
            ("CI_COMMIT_TITLE".into(), title.to_owned()),
            ("CI_PIPELINE_ID".into(), self.pipeline_id.clone()),
            ("CI_PIPELINE_SOURCE".into(), self.source.as_str().into()),
            ("CI_PROJECT_DIR".into(), self.project_dir.clone()),
            ("CI_PROJECT_NAME".into(), self.project_name.clone()),
            ("CI_REPOSITORY_URL".into(), self.repository_url.clone()),
        ]);
        vars
    }

    /// The run's variables and the job's: `CI_JOB_NAME`, `CI_JOB_ID`.
    #[must_use]
    pub fn job(&self, job_name: &str, job_id: &str) -> Variables {
        let mut vars = self.pipeline();
        vars.push(("CI_JOB_NAME".into(), job_name.to_owned()));
        vars.push(("CI_JOB_ID".into(), job_id.to_owned()));
        vars
    }
}

/// GitLab's default project directory in jobs: `/builds/NAME`.
#[must_use]
pub fn default_project_dir(project_name: &str) -> String {
    let name: String = project_name
        .chars()
        .map(|c| if c == '/' || c.is_control() { '_' } else { c })
        .collect();
    match name.as_str() {
        "" | "." | ".." => "/builds/project".into(),
        _ => format!("/builds/{name}"),
    }
}

/// GitLab's `CI_COMMIT_REF_SLUG`: lower case, every character but `a-z`
/// and `0-9` replaced by `-`, at most 63 bytes, no `-` at either end.
#[must_use]
pub fn slug(value: &str) -> String {
    let replaced: String = value
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    replaced.trim_matches('-').to_owned()
}

/// The value of the last definition of `name`.
#[must_use]
pub fn lookup<'a>(vars: &'a [(String, String)], name: &str) -> Option<&'a str> {
    vars.iter()
        .rev()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// Expands `$NAME`, `${NAME}` and `$$` in `value` against `vars` (see the
/// module's rules).
#[must_use]
pub fn expand(value: &str, vars: &[(String, String)]) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        let (name, used) = reference(after);
        match name {
            Reference::Dollar => out.push('$'),
            Reference::Name(name) => out.push_str(lookup(vars, name).unwrap_or_default()),
            Reference::Literal => out.push_str(&rest[dollar..=dollar + used]),
        }
        rest = &after[used..];
    }
    out.push_str(rest);
    out
}

/// What follows a `$`.
enum Reference<'a> {
    /// `$$`.
    Dollar,
    Name(&'a str),
    /// Left as it is: `$` with `used` more bytes.
    Literal,
}

/// The reference at the start of `after` (the text after a `$`) and how
/// many bytes of it it takes.
fn reference(after: &str) -> (Reference<'_>, usize) {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = after.chars();
    match chars.next() {
        Some('$') => (Reference::Dollar, 1),
        Some('{') => match after[1..].find('}') {
            Some(end) if end > 0 && after[1..=end].chars().all(is_name) => {
                (Reference::Name(&after[1..=end]), end + 2)
            }
            // `${}`, `${a-b}`, an unterminated `${`: literal.
            _ => (Reference::Literal, 0),
        },
        Some(c) if c.is_ascii_digit() || "*#@!?-".contains(c) => (Reference::Literal, 1),
        Some(c) if is_name(c) => {
            let end = after.find(|c: char| !is_name(c)).unwrap_or(after.len());
            (Reference::Name(&after[..end]), end)
        }
        _ => (Reference::Literal, 0),
    }
}

/// Every value expanded once against the raw values of `vars` (GitLab
/// Runner's order: a value may use a variable defined after it), then one
/// entry per name, its last definition, in the order names first appear.
#[must_use]
pub fn expand_all(vars: &[(String, String)]) -> Variables {
    let mut out: Variables = Vec::new();
    for (name, value) in vars {
        let value = expand(value, vars);
        match out.iter_mut().find(|(key, _)| key == name) {
            Some(slot) => slot.1 = value,
            None => out.push((name.clone(), value)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::checkout::GitRef;

    fn vars(pairs: &[(&str, &str)]) -> Variables {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn references_expand_like_gitlab_runner() {
        let vars = vars(&[
            ("A", "apple"),
            ("B_2", "banana"),
            ("A", "avocado"),
            ("EMPTY", ""),
        ]);
        let cases = [
            ("$A", "avocado"),
            ("${A}", "avocado"),
            ("x${A}y", "xavocadoy"),
            ("$A-$B_2", "avocado-banana"),
            ("$Ax", ""),
            ("${A}x", "avocadox"),
            ("$UNKNOWN.", "."),
            ("$$A", "$A"),
            ("$$$A", "$avocado"),
            ("cost: 5$", "cost: 5$"),
            ("$ a", "$ a"),
            ("$1 $* $# $@ $! $? $-", "$1 $* $# $@ $! $? $-"),
            ("${}", "${}"),
            ("${A", "${A"),
            ("${A-b}", "${A-b}"),
            ("a$EMPTY.b", "a.b"),
            ("é$A€", "éavocado€"),
            ("", ""),
        ];
        for (input, expected) in cases {
            assert_eq!(expand(input, &vars), expected, "{input:?}");
        }
    }

    #[test]
    fn all_values_expand_once_against_the_raw_values() {
        let expanded = expand_all(&vars(&[
            ("IMAGE", "$REGISTRY/app:$TAG"),
            ("REGISTRY", "registry.example"),
            ("TAG", "${CI_COMMIT_SHORT_SHA}"),
            ("CI_COMMIT_SHORT_SHA", "0123abcd"),
            ("REGISTRY", "mirror.example"),
            ("PRICE", "$$5"),
        ]));
        assert_eq!(
            expanded,
            vars(&[
                // One level: $TAG is the raw `${CI_COMMIT_SHORT_SHA}`.
                ("IMAGE", "mirror.example/app:${CI_COMMIT_SHORT_SHA}"),
                ("REGISTRY", "mirror.example"),
                ("TAG", "0123abcd"),
                ("CI_COMMIT_SHORT_SHA", "0123abcd"),
                ("PRICE", "$5"),
            ])
        );
    }

    fn checkout(git_ref: Option<GitRef>) -> Checkout {
        Checkout {
            dir: "/work/app".into(),
            sha: "0123456789abcdef0123456789abcdef01234567".into(),
            git_ref,
            message: "Fix the build\n\nIt was broken.\n".into(),
            repository_url: "https://git.example/team/app.git".into(),
        }
    }

    #[test]
    fn a_push_pipeline_has_the_branch_and_no_tag() {
        let predefined = Predefined::new(
            &checkout(Some(GitRef::Branch("Feature/Login".into()))),
            "42",
            PipelineSource::Push,
        );
        let job = predefined.job("unit tests", "7");
        let expected = vars(&[
            ("CI", "true"),
            ("CI_COMMIT_SHA", "0123456789abcdef0123456789abcdef01234567"),
            ("CI_COMMIT_SHORT_SHA", "01234567"),
            ("CI_COMMIT_REF_NAME", "Feature/Login"),
            ("CI_COMMIT_REF_SLUG", "feature-login"),
            ("CI_COMMIT_BRANCH", "Feature/Login"),
            ("CI_COMMIT_MESSAGE", "Fix the build\n\nIt was broken.\n"),
            ("CI_COMMIT_TITLE", "Fix the build"),
            ("CI_PIPELINE_ID", "42"),
            ("CI_PIPELINE_SOURCE", "push"),
            ("CI_PROJECT_DIR", "/builds/app"),
            ("CI_PROJECT_NAME", "app"),
            ("CI_REPOSITORY_URL", "https://git.example/team/app.git"),
            ("CI_JOB_NAME", "unit tests"),
            ("CI_JOB_ID", "7"),
        ]);
        assert_eq!(job, expected);
    }

    #[test]
    fn tag_and_pull_request_pipelines_follow_gitlab() {
        let mut predefined = Predefined::new(
            &checkout(Some(GitRef::Tag("v1.0".into()))),
            "1",
            PipelineSource::Tag,
        );
        let vars = predefined.pipeline();
        assert_eq!(lookup(&vars, "CI_COMMIT_TAG"), Some("v1.0"));
        assert_eq!(lookup(&vars, "CI_COMMIT_REF_NAME"), Some("v1.0"));
        assert_eq!(lookup(&vars, "CI_COMMIT_BRANCH"), None);
        assert_eq!(lookup(&vars, "CI_PIPELINE_SOURCE"), Some("tag"));

        // A tag known from the checkout, in a push pipeline: no CI_COMMIT_TAG.
        predefined.source = PipelineSource::Push;
        assert_eq!(lookup(&predefined.pipeline(), "CI_COMMIT_TAG"), None);

        predefined.source = PipelineSource::PullRequest;
        predefined.branch = Some("topic".into());
        let vars = predefined.pipeline();
        assert_eq!(lookup(&vars, "CI_COMMIT_BRANCH"), None);
        assert_eq!(lookup(&vars, "CI_COMMIT_REF_NAME"), Some("topic"));
        assert_eq!(lookup(&vars, "CI_PIPELINE_SOURCE"), Some("pull_request"));

        // No ref at all: the commit id names it.
        let predefined = Predefined::new(&checkout(None), "1", PipelineSource::Manual);
        let vars = predefined.pipeline();
        assert_eq!(
            lookup(&vars, "CI_COMMIT_REF_NAME"),
            Some("0123456789abcdef0123456789abcdef01234567")
        );
        assert_eq!(lookup(&vars, "CI_COMMIT_BRANCH"), None);
        assert_eq!(lookup(&vars, "CI_COMMIT_TAG"), None);
    }

    #[test]
    fn sources_parse_and_print() {
        for source in [
            PipelineSource::Push,
            PipelineSource::Tag,
            PipelineSource::PullRequest,
            PipelineSource::Manual,
        ] {
            assert_eq!(source.as_str().parse::<PipelineSource>(), Ok(source));
        }
        let err = "merge_request".parse::<PipelineSource>().unwrap_err();
        assert!(err.to_string().contains("hint: "), "{err}");
    }

    #[test]
    fn slugs_and_project_dirs() {
        assert_eq!(slug("Feature/Login_2"), "feature-login-2");
        assert_eq!(slug("--x--"), "x");
        assert_eq!(slug(&"a".repeat(70)).len(), 63);
        assert_eq!(default_project_dir("app"), "/builds/app");
        assert_eq!(default_project_dir(".."), "/builds/project");
        assert_eq!(default_project_dir("a/b"), "/builds/a_b");
    }
}
