//! From the jobs as written to the jobs that run: `extends` merged on the
//! tree (so inherited values keep the marks of the text they came from),
//! each job read into its [`JobSpec`], and `parallel: matrix` expanded.

use crate::decode::{Ctx, Cx, Decode};
use crate::error::ErrorKind;
use crate::spec::{JobSpec, ParallelSpec};
use crate::suggest::did_you_mean;
use crate::yaml::{Mark, Node, deep_merge};

/// The most jobs one matrix may expand to (GitLab's limit).
pub(crate) const MAX_MATRIX_JOBS: usize = 200;
/// How deep `extends` may chain (GitLab's limit).
pub(crate) const MAX_EXTENDS_DEPTH: usize = 11;

/// A job as written under `jobs:`.
pub(crate) struct RawJob {
    pub name: String,
    /// The mark of its name.
    pub at: Mark,
    pub ctx: Ctx,
    pub node: Node,
}

/// A job with `extends` merged, read into its type.
pub(crate) struct JobDef {
    pub name: String,
    pub at: Mark,
    pub ctx: Ctx,
    /// The merged tree, for the marks of its keys.
    pub node: Node,
    pub spec: Option<JobSpec>,
    /// A name starting with `.`: it never runs.
    pub template: bool,
}

impl JobDef {
    /// How many jobs this one runs as: none for a template or a job that
    /// did not decode, one per matrix combination, else one.
    pub(crate) fn runs(&self) -> usize {
        match &self.spec {
            _ if self.template => 0,
            None => 0,
            Some(spec) => spec.parallel.as_ref().map_or(1, matrix_size),
        }
    }

    /// The mark and context of `key` in the job, or of the job itself.
    pub(crate) fn key_at(&self, key: &str) -> (Mark, Ctx) {
        match self.node.get(key) {
            Some(entry) => (entry.key_at.clone(), self.ctx.key(key, &entry.value)),
            None => (self.at.clone(), self.ctx.clone()),
        }
    }
}

/// Reads every job: each as written (so errors in templates are reported
/// where they are, once), then the merged ones.
pub(crate) fn jobs(raw: &[RawJob], cx: &mut Cx) -> Vec<JobDef> {
    let specs: Vec<Option<JobSpec>> = raw
        .iter()
        .map(|j| JobSpec::decode(&j.node, &j.ctx, cx))
        .collect();
    let mut extender = Extender {
        raw,
        specs: &specs,
        memo: vec![None; raw.len()],
        visiting: Vec::new(),
    };
    let mut merged = Vec::with_capacity(raw.len());
    for i in 0..raw.len() {
        merged.push(extender.resolve(i, cx));
    }
    raw.iter()
        .zip(specs)
        .zip(merged)
        .map(|((job, spec), node)| {
            let extends = spec.as_ref().is_some_and(|s| s.extends.is_some());
            let spec = if extends {
                JobSpec::decode(&node, &job.ctx, cx)
            } else {
                spec
            };
            JobDef {
                name: job.name.clone(),
                at: job.at.clone(),
                ctx: job.ctx.clone(),
                node,
                spec,
                template: job.name.starts_with('.'),
            }
        })
        .collect()
}

struct Extender<'a> {
    raw: &'a [RawJob],
    specs: &'a [Option<JobSpec>],
    memo: Vec<Option<Node>>,
    visiting: Vec<usize>,
}

impl Extender<'_> {
    /// Job `i`'s tree with what it extends merged under it, GitLab's way:
    /// the parents in order (a later one wins), then the job's own keys.
    fn resolve(&mut self, i: usize, cx: &mut Cx) -> Node {
        if let Some(node) = &self.memo[i] {
            return node.clone();
        }
        let mut node = self.raw[i].node.clone();
        node.take("extends");
        let parents = self.specs[i]
            .as_ref()
            .and_then(|s| s.extends.clone())
            .map(|e| e.0)
            .unwrap_or_default();
        if !parents.is_empty() {
            self.visiting.push(i);
            let mut base: Option<Node> = None;
            for parent in &parents {
                let Some(j) = self.raw.iter().position(|r| r.name == parent.value) else {
                    let hint =
                        did_you_mean(&parent.value, self.raw.iter().map(|r| r.name.as_str()));
                    cx.error(
                        &parent.at,
                        &parent.ctx,
                        ErrorKind::UnknownJob(parent.value.clone()),
                    )
                    .hint = hint;
                    continue;
                };
                if let Some(start) = self.visiting.iter().position(|&v| v == j) {
                    let mut names: Vec<&str> = self.visiting[start..]
                        .iter()
                        .map(|&v| self.raw[v].name.as_str())
                        .collect();
                    names.push(&self.raw[j].name);
                    cx.error(
                        &parent.at,
                        &parent.ctx,
                        ErrorKind::ExtendsCycle(names.join(" -> ")),
                    );
                    continue;
                }
                if self.visiting.len() > MAX_EXTENDS_DEPTH {
                    cx.error(
                        &parent.at,
                        &parent.ctx,
                        ErrorKind::ExtendsDepth(MAX_EXTENDS_DEPTH),
                    );
                    continue;
                }
                let inherited = self.resolve(j, cx);
                base = Some(match base {
                    None => inherited,
                    Some(b) => deep_merge(b, inherited),
                });
            }
            self.visiting.pop();
            if let Some(base) = base {
                node = deep_merge(base, node);
            }
        }
        self.memo[i] = Some(node.clone());
        node
    }
}

/// One run of a job: its name and its matrix values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Instance {
    pub name: String,
    pub matrix: Vec<(String, String)>,
}

/// How many runs `parallel`'s matrix expands to.
fn matrix_size(parallel: &ParallelSpec) -> usize {
    parallel
        .matrix
        .iter()
        .map(|entry| {
            entry
                .0
                .iter()
                .fold(1usize, |n, (_, values)| n.saturating_mul(values.len()))
        })
        .fold(0usize, usize::saturating_add)
}

/// The runs of a job: one without a matrix; for a matrix, every
/// combination of each entry's values, named `job: [v1, v2]`. `None` when
/// the matrix is too large or repeats a combination.
pub(crate) fn expand(
    name: &str,
    parallel: Option<&ParallelSpec>,
    cx: &mut Cx,
) -> Option<Vec<Instance>> {
    let Some(parallel) = parallel else {
        return Some(vec![Instance {
            name: name.to_string(),
            matrix: Vec::new(),
        }]);
    };
    let total = matrix_size(parallel);
    if total > MAX_MATRIX_JOBS {
        cx.error(
            &parallel.at,
            &parallel.ctx,
            ErrorKind::MatrixTooLarge(total),
        );
        return None;
    }
    let mut out: Vec<Instance> = Vec::with_capacity(total);
    let mut ok = true;
    for entry in &parallel.matrix {
        let mut combinations: Vec<Vec<(String, String)>> = vec![Vec::new()];
        for (variable, values) in &entry.0 {
            combinations = combinations
                .into_iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.push((variable.value.clone(), v.clone()));
                        c
                    })
                })
                .collect();
        }
        for matrix in combinations {
            let values: Vec<&str> = matrix.iter().map(|(_, v)| v.as_str()).collect();
            let instance = Instance {
                name: format!("{name}: [{}]", values.join(", ")),
                matrix,
            };
            let mut sorted = instance.matrix.clone();
            sorted.sort();
            let repeated = out.iter().any(|o| {
                let mut other = o.matrix.clone();
                other.sort();
                other == sorted
            });
            if repeated || out.iter().any(|o| o.name == instance.name) {
                cx.error(
                    &parallel.at,
                    &parallel.ctx,
                    ErrorKind::MatrixRepeated(instance.name.clone()),
                );
                ok = false;
                continue;
            }
            out.push(instance);
        }
    }
    ok.then_some(out)
}
