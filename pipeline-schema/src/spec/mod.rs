//! The document types of `pipeline.yaml` version 1, as written: what each
//! key holds, read from the marked tree ([`Decode`]) and described to the
//! JSON Schema (`JsonSchema`, whose descriptions are these doc comments).
//!
//! Values are checked as far as they can be alone here (durations,
//! expressions, globs, variable names); references between jobs and stages
//! are checked in `validate.rs`, on the resolved jobs. Nearly every field is
//! optional here, `null` included (it reads as absent, so `extends` can
//! unset an inherited value); which keys a job needs is decided once
//! `extends` has merged them. The leaf values (names, durations,
//! expressions, globs, variables, commands) are in `values.rs`.

mod values;

use std::borrow::Cow;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

pub(crate) use values::{
    DurationSpec, ExprSpec, JOB_NAME, Lines, Patterns, StringMap, VARIABLE_NAME, Variables,
    Version, has_unknown_keys, is_job_name, named_entries,
};

use crate::decode::{Ctx, Cx, Decode, OneOrMany, Spanned, Text, choice};
use crate::error::ErrorKind;
use crate::model::{RetryWhen, When};
use crate::yaml::{Node, Value};

/// A struct of optional fields (named `$schema` in the JSON Schema): the
/// struct, its keys, its reader.
macro_rules! spec {
    (
        $(#[$meta:meta])*
        struct $name:ident as $schema:tt {
            $(
                $(#[$fmeta:meta])*
                $field:ident: $ty:ty => $key:literal,
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, JsonSchema)]
        #[schemars(rename = $schema, deny_unknown_fields)]
        pub(crate) struct $name {
            $(
                $(#[$fmeta])*
                #[schemars(rename = $key)]
                pub $field: Option<$ty>,
            )*
        }

        impl $name {
            /// The keys this mapping accepts.
            pub(crate) const KEYS: &'static [&'static str] = &[$($key),*];
        }

        impl Decode for $name {
            fn decode(node: &Node, ctx: &Ctx, cx: &mut Cx) -> Option<Self> {
                let fields = cx.fields(node, ctx, Self::KEYS)?;
                Some(Self { $($field: fields.opt($key, cx),)* })
            }
        }
    };
}

// A `pipeline.yaml` file, for the JSON Schema and its keys: the loader
// reads the top level key by key, since `include` and `extends` work on the
// tree before the jobs are read.
#[derive(Debug, Clone, JsonSchema)]
#[schemars(
    title = "pipeline.yaml",
    description = "An executor pipeline, version 1: jobs that build images and run commands in them, in a DAG.",
    deny_unknown_fields,
    extend("patternProperties" = { "^\\.": {} })
)]
#[allow(dead_code)] // read key by key by `load.rs`; the type is the schema
pub(crate) struct PipelineSpec {
    /// The version of this format: 1.
    version: Version,
    /// Variables of every job (a job's own `variables` win).
    variables: Option<Variables>,
    /// The stages, in order. A job without `needs` starts when every job of
    /// the earlier stages has finished. Default: build, test, deploy.
    stages: Option<Vec<String>>,
    /// Settings of jobs that do not set their own.
    defaults: Option<DefaultsSpec>,
    /// The events that run the pipeline; every event when absent.
    on: Option<OnSpec>,
    /// Other pipeline files (paths relative to this file) merged under this
    /// one: this file's keys win, mappings merge deeply.
    include: Option<OneOrMany<String>>,
    /// The jobs, by name. A name starting with `.` is a template: it never
    /// runs, jobs `extends` it. Top-level keys starting with `.` are ignored
    /// (a place for YAML anchors).
    jobs: Jobs,
}

impl PipelineSpec {
    pub(crate) const KEYS: &'static [&'static str] = &[
        "version",
        "variables",
        "stages",
        "defaults",
        "on",
        "include",
        "jobs",
    ];
}

/// The jobs mapping, for the schema.
#[derive(Debug, Clone)]
pub(crate) struct Jobs;

impl JsonSchema for Jobs {
    fn schema_name() -> Cow<'static, str> {
        "Jobs".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let job = generator.subschema_for::<JobSpec>();
        json_schema!({
            "type": "object",
            "propertyNames": { "pattern": JOB_NAME },
            "additionalProperties": job,
        })
    }
}

spec! {
    /// Settings of jobs that do not set their own.
    struct DefaultsSpec as "Defaults" {
        /// The image of script jobs without `image`.
        image: Spanned<String> => "image",
        /// The timeout of jobs without `timeout` (default 1h).
        timeout: DurationSpec => "timeout",
        /// The retries of jobs without `retry`.
        retry: RetrySpec => "retry",
    }
}

spec! {
    /// The events that run the pipeline. An event not listed does not.
    struct OnSpec as "On" {
        /// A push to a branch: `true`, or filters.
        push: Trigger<BranchFilterSpec> => "push",
        /// A tag pushed: `true`, or filters.
        tag: Trigger<TagFilterSpec> => "tag",
        /// A pull (merge) request: `true`, or filters on its target branch.
        pull_request: Trigger<BranchFilterSpec> => "pull_request",
        /// A run started by hand (`executor run --event manual`).
        manual: bool => "manual",
    }
}

spec! {
    /// Which branches and changed paths an event must have.
    struct BranchFilterSpec as "BranchFilter" {
        /// Branch globs (`main`, `release/**`, `!release/old`).
        branches: Patterns => "branches",
        /// Path globs: the event counts when a changed file matches.
        paths: Patterns => "paths",
    }
}

spec! {
    /// Which tags run the pipeline.
    struct TagFilterSpec as "TagFilter" {
        /// Tag globs (`v*`, `!v*-rc*`).
        tags: Patterns => "tags",
    }
}

/// An event: on (`true`), off (`false`), or on with filters.
#[derive(Debug, Clone)]
pub(crate) enum Trigger<T> {
    Enabled(bool),
    Filtered(T),
}

impl<T: Decode> Decode for Trigger<T> {
    fn decode(node: &Node, ctx: &Ctx, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::Map(_) => T::decode(node, ctx, cx).map(Trigger::Filtered),
            Value::Scalar(s) if s.plain => bool::decode(node, ctx, cx).map(Trigger::Enabled),
            _ => {
                cx.type_error(node, ctx, "true, false or a mapping of filters");
                None
            }
        }
    }
}

impl<T: JsonSchema> JsonSchema for Trigger<T> {
    fn schema_name() -> Cow<'static, str> {
        format!("Trigger_{}", T::schema_name()).into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let filter = generator.subschema_for::<T>();
        json_schema!({ "anyOf": [{ "type": "boolean" }, filter] })
    }
}

spec! {
    /// A job: exactly one of `build` (an image build) or `script` (commands
    /// run in `image`), and when and how it runs.
    struct JobSpec as "Job" {
        /// Its stage (default `test`).
        stage: Spanned<String> => "stage",
        /// The jobs it waits for, across stages; `[]` starts at once. Without
        /// `needs`, it waits for every job of the earlier stages.
        needs: Vec<Spanned<String>> => "needs",
        /// Its variables (over the pipeline's).
        variables: Variables => "variables",
        /// When it runs: the first rule whose `if` and `changes` match
        /// decides; no rule matching leaves the job out.
        rules: Vec<RuleSpec> => "rules",
        /// Its failure does not fail the pipeline nor its dependants.
        allow_failure: bool => "allow_failure",
        /// How long it may run (default: `defaults.timeout`, or 1h).
        timeout: DurationSpec => "timeout",
        /// How many times a failed run is retried, and for which failures.
        retry: RetrySpec => "retry",
        /// Secrets as environment variables, masked in logs, from the
        /// environment or files of the machine running the job.
        secrets: Secrets => "secrets",
        /// Runs the job once for each combination of variable values.
        parallel: ParallelSpec => "parallel",
        /// Jobs (usually templates, `.name`) whose keys this one inherits:
        /// mappings merge deeply, this job's keys win, later names win.
        extends: OneOrMany<Spanned<String>> => "extends",
        /// Builds an image from a Dockerfile.
        build: BuildSpec => "build",
        /// Commands run in `image`, in one shell, stopping at the first
        /// failure.
        script: Lines => "script",
        /// Commands run before `script`, in the same shell.
        before_script: Lines => "before_script",
        /// Commands run after `script`, even when it failed.
        after_script: Lines => "after_script",
        /// The image a script job runs in: a reference, or `{job: NAME}` for
        /// the image build job NAME (one of `needs`) made.
        image: Spanned<ImageSpec> => "image",
        /// Files handed to the jobs that need this one.
        artifacts: ArtifactsSpec => "artifacts",
    }
}

spec! {
    /// One rule.
    struct RuleSpec as "Rule" {
        /// A condition over variables.
        if_: Spanned<ExprSpec> => "if",
        /// Path globs: true when a changed file matches (always true when the
        /// changed files are not known).
        changes: Patterns => "changes",
        /// What the job does when the rule matches (default `on_success`).
        when: When => "when",
    }
}

impl Decode for When {
    fn decode(node: &Node, ctx: &Ctx, cx: &mut Cx) -> Option<Self> {
        choice(
            node,
            ctx,
            cx,
            &[
                ("on_success", When::OnSuccess),
                ("on_failure", When::OnFailure),
                ("always", When::Always),
                ("never", When::Never),
                ("manual", When::Manual),
            ],
        )
    }
}

impl JsonSchema for When {
    fn schema_name() -> Cow<'static, str> {
        "When".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "on_success: when its dependencies succeeded; on_failure: when one failed; always; never; manual: when started by hand.",
            "enum": ["on_success", "on_failure", "always", "never", "manual"],
        })
    }
}

impl Decode for RetryWhen {
    fn decode(node: &Node, ctx: &Ctx, cx: &mut Cx) -> Option<Self> {
        choice(
            node,
            ctx,
            cx,
            &[
                ("always", RetryWhen::Always),
                ("script_failure", RetryWhen::ScriptFailure),
                ("timeout", RetryWhen::Timeout),
                ("system_failure", RetryWhen::SystemFailure),
            ],
        )
    }
}

impl JsonSchema for RetryWhen {
    fn schema_name() -> Cow<'static, str> {
        "RetryWhen".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "script_failure: the commands or the build failed; timeout: the job ran out of time; system_failure: the job could not run (an image pull, the sandbox); always: any of these.",
            "enum": ["always", "script_failure", "timeout", "system_failure"],
        })
    }
}

/// The most retries a job may ask for.
pub(crate) const MAX_RETRIES: u32 = 10;

/// `retry: 2` or `retry: {max: 2, when: [script_failure]}`.
#[derive(Debug, Clone)]
pub(crate) struct RetrySpec {
    pub max: u32,
    pub when: Option<Vec<RetryWhen>>,
}

spec! {
    /// Retries with the failures they are for.
    struct RetryMapSpec as "RetryPolicy" {
        /// How many times to retry (0 to 10).
        max: u32 => "max",
        /// The failures to retry (default `always`).
        when: OneOrMany<RetryWhen> => "when",
    }
}

impl Decode for RetrySpec {
    fn decode(node: &Node, ctx: &Ctx, cx: &mut Cx) -> Option<Self> {
        let (max, when, max_node) = match &node.value {
            Value::Map(_) => {
                let full = RetryMapSpec::decode(node, ctx, cx)?;
                let max_node = node.get("max").map_or(node, |e| &e.value);
                (full.max.unwrap_or(0), full.when.map(|w| w.0), max_node)
            }
            _ => (u32::decode(node, ctx, cx)?, None, node),
        };
        if max > MAX_RETRIES {
            let max_ctx = if std::ptr::eq(max_node, node) {
                ctx.clone()
            } else {
                ctx.key("max", max_node)
            };
            cx.error(
                &max_node.at,
                &max_ctx,
                ErrorKind::Range(max.to_string(), "a number of retries from 0 to 10"),
            );
            return None;
        }
        Some(Self { max, when })
    }
}

impl JsonSchema for RetrySpec {
    fn schema_name() -> Cow<'static, str> {
        "Retry".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let full = generator.subschema_for::<RetryMapSpec>();
        json_schema!({
            "anyOf": [
                { "type": "integer", "minimum": 0, "maximum": MAX_RETRIES },
                full,
            ],
        })
    }
}

/// Secrets by variable name.
#[derive(Debug, Clone, Default)]
pub(crate) struct Secrets(pub Vec<(Spanned<String>, SecretSpec)>);

/// Where a secret's value comes from.
#[derive(Debug, Clone)]
pub(crate) enum SecretSpec {
    Env(String),
    File(String),
}

spec! {
    /// A secret's source: exactly one of `env` or `file`.
    struct SecretSourceSpec as "SecretSource" {
        /// An environment variable of the machine running the job.
        env: String => "env",
        /// A file on the machine running the job (its whole content).
        file: String => "file",
    }
}

impl Decode for Secrets {
    fn decode(node: &Node, ctx: &Ctx, cx: &mut Cx) -> Option<Self> {
        let entries = named_entries(node, ctx, cx)?;
        let mut out = Vec::new();
        for (name, value, value_ctx) in entries {
            let Some(source) = SecretSourceSpec::decode(value, &value_ctx, cx) else {
                continue;
            };
            match (source.env, source.file) {
                (Some(env), None) => out.push((name, SecretSpec::Env(env))),
                (None, Some(file)) => out.push((name, SecretSpec::File(file))),
                // An unknown key (reported) may be a misspelt source.
                _ if has_unknown_keys(value, SecretSourceSpec::KEYS) => {}
                _ => {
                    cx.error(&value.at, &value_ctx, ErrorKind::SecretSource)
                        .hint = Some(format!(
                        "write `{}: {{env: HOST_VARIABLE}}` or `{}: {{file: /path}}`",
                        name.value, name.value
                    ));
                }
            }
        }
        Some(Self(out))
    }
}

impl JsonSchema for Secrets {
    fn schema_name() -> Cow<'static, str> {
        "Secrets".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let source = generator.subschema_for::<SecretSourceSpec>();
        json_schema!({
            "type": "object",
            "propertyNames": { "pattern": VARIABLE_NAME },
            "additionalProperties": {
                "allOf": [source],
                "oneOf": [{ "required": ["env"] }, { "required": ["file"] }],
            },
        })
    }
}

/// `parallel: {matrix: [...]}`.
#[derive(Debug, Clone)]
pub(crate) struct ParallelSpec {
    pub matrix: Vec<MatrixEntry>,
    pub at: crate::yaml::Mark,
    pub ctx: Ctx,
}

/// One entry of a matrix: variables, each with one or more values.
#[derive(Debug, Clone, Default)]
pub(crate) struct MatrixEntry(pub Vec<(Spanned<String>, Vec<String>)>);

impl Decode for ParallelSpec {
    fn decode(node: &Node, ctx: &Ctx, cx: &mut Cx) -> Option<Self> {
        let fields = cx.fields(node, ctx, &["matrix"])?;
        let Some((matrix_node, matrix_ctx)) = fields.get("matrix") else {
            cx.error(&node.at, ctx, ErrorKind::MissingKey("matrix"));
            return None;
        };
        let matrix = Vec::<MatrixEntry>::decode(matrix_node, &matrix_ctx, cx)?;
        if matrix.is_empty() {
            cx.error(&matrix_node.at, &matrix_ctx, ErrorKind::Empty("a matrix"));
            return None;
        }
        Some(Self {
            matrix,
            at: matrix_node.at.clone(),
            ctx: matrix_ctx,
        })
    }
}

impl Decode for MatrixEntry {
    fn decode(node: &Node, ctx: &Ctx, cx: &mut Cx) -> Option<Self> {
        let entries = named_entries(node, ctx, cx)?;
        if entries.is_empty() {
            cx.error(&node.at, ctx, ErrorKind::Empty("a matrix entry"));
            return None;
        }
        let mut out = Vec::new();
        for (name, value, value_ctx) in entries {
            let Some(OneOrMany(values)) = OneOrMany::<Text>::decode(value, &value_ctx, cx) else {
                continue;
            };
            if values.is_empty() {
                cx.error(
                    &value.at,
                    &value_ctx,
                    ErrorKind::Empty("a matrix variable's values"),
                );
                continue;
            }
            out.push((name, values.into_iter().map(|Text(t)| t).collect()));
        }
        Some(Self(out))
    }
}

impl JsonSchema for ParallelSpec {
    fn schema_name() -> Cow<'static, str> {
        "Parallel".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let value = generator.subschema_for::<OneOrMany<Text>>();
        json_schema!({
            "type": "object",
            "additionalProperties": false,
            "required": ["matrix"],
            "properties": {
                "matrix": {
                    "description": "Each entry gives every combination of its variables' values; the job runs once per combination, named `job: [value, ...]`.",
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "minProperties": 1,
                        "propertyNames": { "pattern": VARIABLE_NAME },
                        "additionalProperties": value,
                    },
                },
            },
        })
    }
}

spec! {
    /// An image build, as `executor build` does it.
    struct BuildSpec as "Build" {
        /// The build context directory, relative to the repository root
        /// (default `.`).
        context: String => "context",
        /// The Dockerfile, relative to the context (default `Dockerfile`).
        dockerfile: String => "dockerfile",
        /// The stage to build (default: the last).
        target: String => "target",
        /// Build arguments (`ARG`), values may use variables.
        args: Variables => "args",
        /// Labels of the image.
        labels: StringMap => "labels",
        /// Tags to push, with variables (`registry/app:$CI_COMMIT_SHORT_SHA`).
        destinations: Vec<String> => "destinations",
        /// Push the destinations (default true); false, or no destinations,
        /// keeps the image in the local store.
        push: bool => "push",
        /// The platform to build for, `os/arch[/variant]` (default: this
        /// machine's).
        platform: String => "platform",
        /// The layer cache in a registry repository.
        cache: CacheSpec => "cache",
        /// Build secrets (`RUN --mount=type=secret,id=NAME`), by id.
        secrets: Secrets => "secrets",
        /// Reproducible layers and config: times clamped to
        /// SOURCE_DATE_EPOCH (the commit time by default).
        reproducible: bool => "reproducible",
    }
}

/// `cache: {repo, ttl}`.
#[derive(Debug, Clone)]
pub(crate) struct CacheSpec {
    pub repo: String,
    pub ttl: Option<Duration>,
}

impl Decode for CacheSpec {
    fn decode(node: &Node, ctx: &Ctx, cx: &mut Cx) -> Option<Self> {
        let fields = cx.fields(node, ctx, &["repo", "ttl"])?;
        let repo = fields.req::<String>("repo", cx);
        let ttl = fields.opt::<DurationSpec>("ttl", cx).map(|d| d.0);
        Some(Self { repo: repo?, ttl })
    }
}

impl JsonSchema for CacheSpec {
    fn schema_name() -> Cow<'static, str> {
        "Cache".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let duration = generator.subschema_for::<DurationSpec>();
        json_schema!({
            "type": "object",
            "additionalProperties": false,
            "required": ["repo"],
            "properties": {
                "repo": {
                    "description": "The repository holding cached layers (`registry/app/cache`).",
                    "type": "string",
                },
                "ttl": {
                    "description": "How long a cached layer is used (default 2 weeks).",
                    "allOf": [duration],
                },
            },
        })
    }
}

/// `image: REF` or `image: {job: NAME}`.
#[derive(Debug, Clone)]
pub(crate) enum ImageSpec {
    Reference(String),
    Job(Spanned<String>),
}

impl Decode for ImageSpec {
    fn decode(node: &Node, ctx: &Ctx, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::Scalar(s) => {
                if s.text.trim().is_empty() {
                    cx.error(&node.at, ctx, ErrorKind::Empty("an image reference"));
                    return None;
                }
                Some(Self::Reference(s.text.clone()))
            }
            Value::Map(_) => {
                let fields = cx.fields(node, ctx, &["job"])?;
                fields.req::<Spanned<String>>("job", cx).map(Self::Job)
            }
            _ => {
                cx.type_error(node, ctx, "an image reference or `{job: NAME}`");
                None
            }
        }
    }
}

impl JsonSchema for ImageSpec {
    fn schema_name() -> Cow<'static, str> {
        "Image".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                { "type": "string", "description": "An image reference (`alpine:3.20`, `registry/app@sha256:...`)." },
                {
                    "type": "object",
                    "description": "The image a build job of `needs` made.",
                    "additionalProperties": false,
                    "required": ["job"],
                    "properties": { "job": { "type": "string" } },
                },
            ],
        })
    }
}

spec! {
    /// Files handed on.
    struct ArtifactsSpec as "Artifacts" {
        /// Paths and globs relative to the repository root.
        paths: Vec<Spanned<String>> => "paths",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys the reader accepts are the keys the schema lists.
    #[test]
    fn reader_keys_match_the_schema() {
        fn properties<T: JsonSchema>() -> Vec<String> {
            let schema = schemars::schema_for!(T);
            let mut keys: Vec<String> = schema
                .get("properties")
                .and_then(|p| p.as_object())
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default();
            keys.sort();
            keys
        }
        fn sorted(keys: &[&str]) -> Vec<String> {
            let mut keys: Vec<String> = keys.iter().map(|k| (*k).to_string()).collect();
            keys.sort();
            keys
        }
        assert_eq!(properties::<PipelineSpec>(), sorted(PipelineSpec::KEYS));
        assert_eq!(properties::<JobSpec>(), sorted(JobSpec::KEYS));
        assert_eq!(properties::<BuildSpec>(), sorted(BuildSpec::KEYS));
        assert_eq!(properties::<RuleSpec>(), sorted(RuleSpec::KEYS));
        assert_eq!(properties::<DefaultsSpec>(), sorted(DefaultsSpec::KEYS));
        assert_eq!(properties::<OnSpec>(), sorted(OnSpec::KEYS));
        assert_eq!(properties::<RetryMapSpec>(), sorted(RetryMapSpec::KEYS));
        assert_eq!(properties::<CacheSpec>(), sorted(&["repo", "ttl"]));
        assert_eq!(properties::<ParallelSpec>(), sorted(&["matrix"]));
    }
}
