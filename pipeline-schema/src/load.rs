//! Loading a pipeline: the files (the pipeline file and its `include`s,
//! merged into one tree), the top level, then the jobs (`resolve.rs`) and
//! the checks between them (`validate.rs`). Every error is collected; the
//! result is a [`Pipeline`] only when there is none.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::decode::{Ctx, Cx, Decode, Fields, OneOrMany, Spanned};
use crate::error::{Error, ErrorKind, Errors};
use crate::model::Pipeline;
use crate::resolve::{self, RawJob};
use crate::spec::{DefaultsSpec, OnSpec, PipelineSpec, Variables, Version, is_job_name};
use crate::validate;
use crate::yaml::{self, Mark, Node, Value, deep_merge};

/// How deep `include` may nest.
const MAX_INCLUDE_DEPTH: usize = 32;

/// The most bytes of YAML a pipeline may be, its included files counted: a
/// large pipeline is tens of kilobytes, and parsing costs many times the
/// size in memory.
pub(crate) const MAX_PIPELINE_BYTES: u64 = 1 << 20;

/// The most jobs a pipeline may have, after matrix expansion.
pub(crate) const MAX_JOBS: usize = 1000;

/// Loads the pipeline at `path`; `text`, when given, is its content (the
/// file is then not read, but includes are still read relative to it).
pub(crate) fn load(path: &Path, text: Option<&str>) -> Result<Pipeline, Errors> {
    let mut loader = Loader::default();
    let pipeline = loader
        .file(path, text, None)
        .and_then(|root| loader.pipeline(path, &root));
    let mut errors = loader.cx.errors;
    sort_and_dedup(&mut errors, &loader.files);
    match pipeline {
        Some(p) if errors.is_empty() => Ok(p),
        _ => Err(Errors(errors)),
    }
}

#[derive(Default)]
struct Loader {
    cx: Cx,
    /// The bytes of YAML read so far, included files counted.
    bytes: u64,
    /// Every file read, in order.
    files: Vec<Arc<Path>>,
    /// The include chain being read, for cycles.
    chain: Vec<(PathBuf, PathBuf)>,
}

impl Loader {
    /// Reads one file and what it includes into one tree (included files
    /// first, this file's keys over them).
    fn file(
        &mut self,
        path: &Path,
        text: Option<&str>,
        from: Option<&Spanned<String>>,
    ) -> Option<Node> {
        let is_main = from.is_none();
        let left = MAX_PIPELINE_BYTES.saturating_sub(self.bytes);
        let read = match text {
            Some(t) => Ok(t.to_string()),
            None => read_at_most(path, left),
        };
        let failure = match read {
            Ok(text) if text.len() as u64 <= left => {
                self.bytes += text.len() as u64;
                Ok(text)
            }
            Ok(_) => Err(ErrorKind::PipelineTooLarge {
                path: path.to_path_buf(),
                max: MAX_PIPELINE_BYTES,
            }),
            Err(source) => Err(ErrorKind::Read {
                path: path.to_path_buf(),
                source,
            }),
        };
        let text = match failure {
            Ok(text) => text,
            Err(kind) => {
                match from {
                    Some(inc) => {
                        self.cx.error(&inc.at, &inc.ctx, kind);
                    }
                    None => self.cx.errors.push(Error::new(None, String::new(), kind)),
                }
                return None;
            }
        };
        let file: Arc<Path> = Arc::from(path);
        self.files.push(file.clone());
        let (root, yaml_errors) = yaml::parse(&text, &file);
        for e in yaml_errors {
            let mut error = Error::new(Some(e.at.location()), e.path, e.kind).with_hint(e.hint);
            error.via = e.via.as_ref().map(Mark::location);
            self.cx.errors.push(error);
        }
        let start = Mark {
            file: file.clone(),
            line: 1,
            column: 1,
        };
        let Some(mut root) = root else {
            if text.trim().is_empty() || !self.has_errors_in(&file) {
                self.cx
                    .error(&start, &Ctx::default(), ErrorKind::Empty("a pipeline file"))
                    .hint = Some(if is_main {
                    "start with `version: 1` and `jobs:`".to_string()
                } else {
                    "an included file holds top-level keys, such as `jobs:`".to_string()
                });
            }
            return None;
        };
        let ctx = Ctx::root(&root);
        if root.entries().is_none() {
            self.cx
                .type_error(&root, &ctx, "a mapping of top-level keys");
            return None;
        }
        match root.get("version") {
            Some(entry) => {
                let _ = Version::decode(
                    &entry.value,
                    &ctx.key("version", &entry.value),
                    &mut self.cx,
                );
            }
            None if is_main => {
                self.cx
                    .error(&root.at, &ctx, ErrorKind::MissingKey("version"))
                    .hint = Some("start the file with `version: 1`".to_string());
            }
            None => {}
        }

        let include = root.take("include");
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        self.chain.push((canonical, path.to_path_buf()));
        let mut included: Option<Node> = None;
        if let Some(entry) = include {
            let inc_ctx = ctx.key("include", &entry.value);
            let names = match &entry.value.value {
                Value::Null => None,
                _ => OneOrMany::<Spanned<String>>::decode(&entry.value, &inc_ctx, &mut self.cx),
            };
            for inc in names.map(|n| n.0).unwrap_or_default() {
                let Some(child) = self.include(path, &inc) else {
                    continue;
                };
                included = Some(match included {
                    None => child,
                    Some(base) => deep_merge(base, child),
                });
            }
        }
        self.chain.pop();
        Some(match included {
            Some(base) => deep_merge(base, root),
            None => root,
        })
    }

    fn include(&mut self, from_file: &Path, inc: &Spanned<String>) -> Option<Node> {
        let relative = Path::new(&inc.value);
        if relative.is_absolute() || inc.value.trim().is_empty() {
            self.cx
                .error(&inc.at, &inc.ctx, ErrorKind::OutsidePath(inc.value.clone()))
                .hint = Some("an include is a path relative to the including file".to_string());
            return None;
        }
        let path = from_file.parent().unwrap_or(Path::new("")).join(relative);
        let canonical = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if let Some(i) = self.chain.iter().position(|(c, _)| *c == canonical) {
            let mut names: Vec<String> = self.chain[i..]
                .iter()
                .map(|(_, p)| p.display().to_string())
                .collect();
            names.push(path.display().to_string());
            self.cx.error(
                &inc.at,
                &inc.ctx,
                ErrorKind::IncludeCycle(names.join(" -> ")),
            );
            return None;
        }
        if self.chain.len() >= MAX_INCLUDE_DEPTH {
            self.cx.error(
                &inc.at,
                &inc.ctx,
                ErrorKind::IncludeDepth(MAX_INCLUDE_DEPTH),
            );
            return None;
        }
        self.file(&path, None, Some(inc))
    }

    fn has_errors_in(&self, file: &Arc<Path>) -> bool {
        self.cx
            .errors
            .iter()
            .any(|e| e.location.as_ref().is_some_and(|l| l.file == **file))
    }

    /// The top level of the merged tree, then the jobs.
    fn pipeline(&mut self, path: &Path, root: &Node) -> Option<Pipeline> {
        let ctx = Ctx::root(root);
        for entry in root.entries().unwrap_or_default() {
            // `.name` keys are a place for anchors; `version` was read per
            // file; `include` was taken out.
            if !entry.key.starts_with('.') && !PipelineSpec::KEYS.contains(&entry.key.as_str()) {
                self.cx.unknown_key(entry, &ctx, PipelineSpec::KEYS);
            }
        }
        let fields = Fields::new(root, ctx.clone());
        let cx = &mut self.cx;
        let variables = fields.opt::<Variables>("variables", cx).unwrap_or_default();
        let stages = fields.opt::<Vec<Spanned<String>>>("stages", cx);
        let defaults = fields
            .opt::<DefaultsSpec>("defaults", cx)
            .unwrap_or_default();
        let on = fields.opt::<OnSpec>("on", cx);
        let stages = stages.map(|s| validate::stages(s, cx));

        let Some(jobs_entry) = root.get("jobs") else {
            cx.error(&root.at, &ctx, ErrorKind::MissingKey("jobs"));
            return None;
        };
        let (jobs_node, jobs_ctx) = (&jobs_entry.value, ctx.key("jobs", &jobs_entry.value));
        let Some(entries) = jobs_node.entries() else {
            cx.type_error(jobs_node, &jobs_ctx, "a mapping of job names to jobs");
            return None;
        };
        if entries.is_empty() {
            cx.error(&jobs_node.at, &jobs_ctx, ErrorKind::Empty("`jobs`"));
            return None;
        }
        if entries.len() > MAX_JOBS {
            // Before resolving them: that is what costs.
            cx.error(
                &jobs_node.at,
                &jobs_ctx,
                ErrorKind::TooManyJobs {
                    count: entries.len(),
                    max: MAX_JOBS,
                },
            );
            return None;
        }
        let mut raw = Vec::new();
        for entry in entries {
            let job_ctx = jobs_ctx.key(&entry.key, &entry.value);
            if !is_job_name(&entry.key) {
                cx.error(&entry.key_at, &job_ctx, ErrorKind::JobName(entry.key.clone()))
                    .hint = Some(
                    "a job name is letters, digits, `_`, `-` and `.`; a name starting with `.` is a template"
                        .to_string(),
                );
                continue;
            }
            raw.push(RawJob {
                name: entry.key.clone(),
                at: entry.key_at.clone(),
                ctx: job_ctx,
                node: entry.value.clone(),
            });
        }
        let jobs = resolve::jobs(&raw, cx);
        let count: usize = jobs.iter().map(resolve::JobDef::runs).sum();
        if count > MAX_JOBS {
            cx.error(
                &jobs_node.at,
                &jobs_ctx,
                ErrorKind::TooManyJobs {
                    count,
                    max: MAX_JOBS,
                },
            )
            .hint = Some("matrix jobs count once per combination".to_string());
            return None;
        }
        let files = self.files.iter().map(|f| f.to_path_buf()).collect();
        validate::pipeline(
            &validate::Input {
                path: path.to_path_buf(),
                files,
                variables,
                stages,
                defaults,
                on,
                jobs,
            },
            &mut self.cx,
        )
    }
}

/// The file at `path` as text, reading at most `limit + 1` bytes (more
/// than `limit` means too large: the caller says so).
fn read_at_most(path: &Path, limit: u64) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(limit.saturating_add(1))
        .read_to_string(&mut text)?;
    Ok(text)
}

/// Sorts errors by file (in reading order), line and column, and drops
/// repeats: a template's error is found again in each job extending it.
fn sort_and_dedup(errors: &mut Vec<Error>, files: &[Arc<Path>]) {
    let key = |e: &Error| {
        e.location.as_ref().map(|l| {
            let file = files
                .iter()
                .position(|f| **f == *l.file)
                .unwrap_or(usize::MAX);
            (file, l.line, l.column)
        })
    };
    let mut seen = std::collections::HashSet::new();
    errors.retain(|e| seen.insert((e.location.clone(), e.kind.to_string(), e.hint.clone())));
    errors.sort_by_key(key);
}
