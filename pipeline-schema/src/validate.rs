//! The checks between values, once every job is read: each job is a build
//! or a script job, its stage exists, its `needs` name jobs that run,
//! `image: {job}` names a build job it needs, output variables do not
//! clash, and the jobs' dependencies have no cycle. Then the resolved
//! [`Pipeline`] is put together, with its DAG.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

use crate::decode::{Cx, Spanned};
use crate::error::ErrorKind;
use crate::model::{
    self, Build, Cache, DEFAULT_STAGE, DEFAULT_STAGES, DEFAULT_TIMEOUT, Dag, Image, Job, JobKind,
    Pipeline, RefFilter, Retry, RetryWhen, Rule, Script, Secret, SecretSource, Triggers, When,
};
use crate::resolve::{self, Instance, JobDef};
use crate::spec::{
    BranchFilterSpec, DefaultsSpec, ImageSpec, JobSpec, OnSpec, RetrySpec, SecretSpec, Secrets,
    Trigger, Variables, has_unknown_keys,
};
use crate::suggest::did_you_mean;

/// What the loader read, for the checks.
pub(crate) struct Input {
    pub path: PathBuf,
    pub files: Vec<PathBuf>,
    pub variables: Variables,
    pub stages: Option<Vec<String>>,
    pub defaults: DefaultsSpec,
    pub on: Option<OnSpec>,
    pub jobs: Vec<JobDef>,
}

/// The declared stages, each once.
pub(crate) fn stages(stages: Vec<Spanned<String>>, cx: &mut Cx) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for stage in stages {
        if stage.value.trim().is_empty() {
            cx.error(&stage.at, &stage.ctx, ErrorKind::Empty("a stage name"));
        } else if out.contains(&stage.value) {
            cx.error(
                &stage.at,
                &stage.ctx,
                ErrorKind::Repeated(stage.value.clone()),
            );
        } else {
            out.push(stage.value);
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Build,
    Script,
}

/// A job that runs, with its instances.
struct Planned<'a> {
    def: &'a JobDef,
    spec: &'a JobSpec,
    kind: Option<Kind>,
    stage: Option<usize>,
    /// Indices of its instances in the global list.
    instances: Vec<usize>,
    /// Each `needs` entry with the instances it names.
    needs: Option<Vec<(Spanned<String>, Vec<usize>)>>,
    image: Option<Image>,
}

/// What a job name refers to.
enum Target {
    /// Instances of a job that runs (one planned job).
    Instances(usize, Vec<usize>),
    /// A template, which never runs.
    Template,
    /// A job with errors of its own: no further error.
    Broken,
    Unknown,
}

pub(crate) fn pipeline(input: &Input, cx: &mut Cx) -> Option<Pipeline> {
    let stage_names: Vec<String> = input
        .stages
        .clone()
        .unwrap_or_else(|| DEFAULT_STAGES.iter().map(ToString::to_string).collect());

    // The jobs that run, and their instances.
    let mut planned: Vec<Planned<'_>> = Vec::new();
    let mut instances: Vec<(usize, Instance)> = Vec::new();
    for def in input.jobs.iter().filter(|d| !d.template) {
        let Some(spec) = &def.spec else { continue };
        let Some(runs) = resolve::expand(&def.name, spec.parallel.as_ref(), cx) else {
            continue;
        };
        let p = planned.len();
        let indices = (instances.len()..instances.len() + runs.len()).collect();
        instances.extend(runs.into_iter().map(|r| (p, r)));
        planned.push(Planned {
            def,
            spec,
            kind: None,
            stage: None,
            instances: indices,
            needs: None,
            image: None,
        });
    }

    let find = |name: &str, planned: &[Planned<'_>]| -> Target {
        if let Some(p) = planned.iter().position(|p| p.def.name == name) {
            return Target::Instances(p, planned[p].instances.clone());
        }
        if let Some(i) = instances.iter().position(|(_, inst)| inst.name == name) {
            return Target::Instances(instances[i].0, vec![i]);
        }
        match input.jobs.iter().find(|d| d.name == name) {
            Some(d) if d.template => Target::Template,
            Some(_) => Target::Broken,
            None => Target::Unknown,
        }
    };
    let runnable_names: Vec<&str> = planned.iter().map(|p| p.def.name.as_str()).collect();

    for p in &mut planned {
        p.kind = kind(p.def, p.spec, cx);
        p.stage = stage(p.def, p.spec, &stage_names, cx);
        check_paths(p.def, p.spec, cx);
    }
    for i in 0..planned.len() {
        let needs = planned[i].spec.needs.as_ref().map(|needs| {
            let mut out: Vec<(Spanned<String>, Vec<usize>)> = Vec::new();
            for need in needs {
                if out.iter().any(|(n, _)| n.value == need.value) {
                    cx.error(&need.at, &need.ctx, ErrorKind::Repeated(need.value.clone()));
                    continue;
                }
                match find(&need.value, &planned) {
                    Target::Instances(_, targets) => out.push((need.clone(), targets)),
                    Target::Template => {
                        cx.error(&need.at, &need.ctx, ErrorKind::Template(need.value.clone()));
                    }
                    Target::Broken => {}
                    Target::Unknown => {
                        let hint = did_you_mean(&need.value, runnable_names.iter().copied());
                        cx.error(
                            &need.at,
                            &need.ctx,
                            ErrorKind::UnknownJob(need.value.clone()),
                        )
                        .hint = hint;
                    }
                }
            }
            out
        });
        planned[i].needs = needs;
    }
    for i in 0..planned.len() {
        let image = image(i, &planned, &find, &runnable_names, &instances, cx);
        planned[i].image = image;
    }
    check_outputs(&planned, &instances, cx);

    // Dependencies, by instance.
    let dependencies: Vec<Vec<usize>> = instances
        .iter()
        .map(|(p, _)| match &planned[*p].needs {
            Some(needs) => {
                let mut deps: Vec<usize> = Vec::new();
                for (_, targets) in needs {
                    for t in targets {
                        if !deps.contains(t) {
                            deps.push(*t);
                        }
                    }
                }
                deps
            }
            None => match planned[*p].stage {
                Some(own) => instances
                    .iter()
                    .enumerate()
                    .filter(|(_, (q, _))| planned[*q].stage.is_some_and(|s| s < own))
                    .map(|(j, _)| j)
                    .collect(),
                None => Vec::new(),
            },
        })
        .collect();
    report_cycles(&planned, &instances, &dependencies, &stage_names, cx);

    if !cx.errors.is_empty() {
        return None;
    }
    let jobs: Vec<Job> = instances
        .iter()
        .enumerate()
        .map(|(i, (p, inst))| {
            job(
                &planned[*p],
                inst,
                &dependencies[i],
                &instances,
                input,
                &stage_names,
            )
        })
        .collect();
    let dag = dag(&planned, &instances, dependencies);
    Some(Pipeline {
        path: input.path.clone(),
        files: input.files.clone(),
        variables: input
            .variables
            .0
            .iter()
            .map(|(k, v)| (k.value.clone(), v.clone()))
            .collect(),
        stages: stage_names,
        triggers: triggers(input.on.as_ref()),
        jobs,
        dag,
    })
}

/// Exactly one of `build` or `script`, and no script keys on a build job.
fn kind(def: &JobDef, spec: &JobSpec, cx: &mut Cx) -> Option<Kind> {
    match (&spec.build, &spec.script) {
        (Some(_), Some(_)) => {
            let (at, ctx) = def.key_at("script");
            cx.error(&at, &ctx, ErrorKind::BothKinds(def.name.clone())).hint = Some(
                "a job builds an image (`build`) or runs commands (`script`); to run commands in the image, add a script job with `needs` and `image: {job: ...}`"
                    .to_string(),
            );
            None
        }
        // A misspelt `script:` is already reported as an unknown key, a
        // `script:` or `build:` that did not read as an error of its own.
        (None, None)
            if has_unknown_keys(&def.node, JobSpec::KEYS)
                || def.node.get("script").is_some()
                || def.node.get("build").is_some() =>
        {
            None
        }
        (None, None) => {
            cx.error(&def.at, &def.ctx, ErrorKind::NeitherKind(def.name.clone()))
                .hint =
                Some("add `build:` to build an image or `script:` to run commands".to_string());
            None
        }
        (Some(_), None) => {
            let script_keys: [(&'static str, bool); 5] = [
                ("image", spec.image.is_some()),
                ("before_script", spec.before_script.is_some()),
                ("after_script", spec.after_script.is_some()),
                ("artifacts", spec.artifacts.is_some()),
                ("secrets", spec.secrets.is_some()),
            ];
            for (key, present) in script_keys {
                if present {
                    let (at, ctx) = def.key_at(key);
                    let hint = match key {
                        "secrets" => {
                            Some("a build job takes its secrets under `build.secrets`".to_string())
                        }
                        "image" => {
                            Some("a build job's base image is its Dockerfile's FROM".to_string())
                        }
                        _ => None,
                    };
                    cx.error(
                        &at,
                        &ctx,
                        ErrorKind::ScriptOnly {
                            key,
                            job: def.name.clone(),
                        },
                    )
                    .hint = hint;
                }
            }
            Some(Kind::Build)
        }
        (None, Some(script)) => {
            if script.0.is_empty() {
                let (at, ctx) = def.key_at("script");
                cx.error(&at, &ctx, ErrorKind::Empty("`script`"));
            }
            Some(Kind::Script)
        }
    }
}

fn stage(def: &JobDef, spec: &JobSpec, stages: &[String], cx: &mut Cx) -> Option<usize> {
    let Some(stage) = &spec.stage else {
        let found = stages.iter().position(|s| s == DEFAULT_STAGE);
        if found.is_none() {
            cx.error(
                &def.at,
                &def.ctx,
                ErrorKind::UnknownStage(DEFAULT_STAGE.to_string()),
            )
            .hint = Some(format!(
                "a job without `stage` is in stage `{DEFAULT_STAGE}`, which `stages` does not list; give the job a `stage`"
            ));
        }
        return found;
    };
    let found = stages.iter().position(|s| *s == stage.value);
    if found.is_none() {
        let hint = did_you_mean(&stage.value, stages.iter().map(String::as_str))
            .unwrap_or_else(|| format!("the stages are {}", stages.join(", ")));
        cx.error(
            &stage.at,
            &stage.ctx,
            ErrorKind::UnknownStage(stage.value.clone()),
        )
        .hint = Some(hint);
    }
    found
}

/// Paths that must stay inside the repository: artifacts, the context,
/// the Dockerfile (relative to the context, so `..` may still be inside:
/// only an absolute one is refused here). The runner checks them again
/// once `$VAR`s are expanded and symlinks followed.
fn check_paths(def: &JobDef, spec: &JobSpec, cx: &mut Cx) {
    let outside = |p: &str| {
        let path = Path::new(p);
        p.trim().is_empty()
            || path.is_absolute()
            || path.components().any(|c| c == Component::ParentDir)
    };
    for path in spec.artifacts.iter().flat_map(|a| a.paths.iter().flatten()) {
        if outside(&path.value) {
            cx.error(
                &path.at,
                &path.ctx,
                ErrorKind::OutsidePath(path.value.clone()),
            );
        }
    }
    let (Some(spec), Some(build)) = (spec.build.as_ref(), def.node.get("build")) else {
        return;
    };
    let refused = [
        ("context", spec.context.as_ref().filter(|c| outside(c))),
        (
            "dockerfile",
            spec.dockerfile
                .as_ref()
                .filter(|d| Path::new(d.as_str()).is_absolute()),
        ),
    ];
    for (key, value) in refused {
        let Some(value) = value else {
            continue;
        };
        if let Some(entry) = build.value.get(key) {
            let ctx = def.ctx.key("build", &build.value).key(key, &entry.value);
            cx.error(&entry.value.at, &ctx, ErrorKind::OutsidePath(value.clone()));
        }
    }
}

/// `image: {job: X}`: X is a build job this job needs, one instance.
fn image(
    i: usize,
    planned: &[Planned<'_>],
    find: &dyn Fn(&str, &[Planned<'_>]) -> Target,
    runnable_names: &[&str],
    instances: &[(usize, Instance)],
    cx: &mut Cx,
) -> Option<Image> {
    let p = &planned[i];
    if p.kind == Some(Kind::Build) {
        return None;
    }
    match p.spec.image.as_ref().map(|s| &s.value) {
        Some(ImageSpec::Reference(r)) => Some(Image::Reference(r.clone())),
        Some(ImageSpec::Job(job)) => {
            let (q, targets) = match find(&job.value, planned) {
                Target::Instances(q, targets) => (q, targets),
                Target::Template => {
                    cx.error(&job.at, &job.ctx, ErrorKind::Template(job.value.clone()));
                    return None;
                }
                Target::Broken => return None,
                Target::Unknown => {
                    let hint = did_you_mean(&job.value, runnable_names.iter().copied());
                    cx.error(&job.at, &job.ctx, ErrorKind::UnknownJob(job.value.clone()))
                        .hint = hint;
                    return None;
                }
            };
            // Needed: named in `needs`, itself or through its matrix job.
            let needed = p.needs.as_ref().is_some_and(|needs| {
                needs
                    .iter()
                    .any(|(_, needed)| targets.iter().all(|t| needed.contains(t)))
            });
            // A `needs` entry that named no job (reported) may be this one.
            let needs_failed =
                p.needs.as_ref().map(Vec::len) != p.spec.needs.as_ref().map(Vec::len);
            if needs_failed {
                return None;
            }
            if !needed {
                cx.error(
                    &job.at,
                    &job.ctx,
                    ErrorKind::ImageNotNeeded(job.value.clone()),
                )
                .hint = Some(format!("add `{}` to this job's `needs`", job.value));
                return None;
            }
            if planned[q].kind == Some(Kind::Script) {
                cx.error(&job.at, &job.ctx, ErrorKind::NotBuildJob(job.value.clone()));
                return None;
            }
            if targets.len() > 1 {
                let example = &instances[targets[0]].1.name;
                cx.error(
                    &job.at,
                    &job.ctx,
                    ErrorKind::AmbiguousImage {
                        job: job.value.clone(),
                        count: targets.len(),
                    },
                )
                .hint = Some(format!("name one of them, such as `{example}`"));
                return None;
            }
            targets
                .first()
                .map(|&t| Image::Job(instances[t].1.name.clone()))
        }
        None => None,
    }
}

/// Two build jobs whose names give the same `EXECUTOR_<NAME>_IMAGE`.
fn check_outputs(planned: &[Planned<'_>], instances: &[(usize, Instance)], cx: &mut Cx) {
    let mut seen: HashMap<String, &str> = HashMap::new();
    for (p, inst) in instances {
        if planned[*p].kind != Some(Kind::Build) {
            continue;
        }
        let variable = model::image_variable(&inst.name);
        match seen.get(&variable) {
            Some(first) => {
                let def = planned[*p].def;
                cx.error(
                    &def.at,
                    &def.ctx,
                    ErrorKind::OutputClash {
                        first: (*first).to_string(),
                        second: inst.name.clone(),
                        variable,
                    },
                )
                .hint = Some("rename one of them: NAME in EXECUTOR_<NAME>_IMAGE is the job name upper-cased, other characters as `_`".to_string());
            }
            None => {
                seen.insert(variable, &inst.name);
            }
        }
    }
}

/// Reports each cycle of the dependency graph once, by job names.
fn report_cycles(
    planned: &[Planned<'_>],
    instances: &[(usize, Instance)],
    dependencies: &[Vec<usize>],
    stages: &[String],
    cx: &mut Cx,
) {
    let mut reported: HashSet<Vec<usize>> = HashSet::new();
    for cycle in cycles(dependencies) {
        // By planned job, starting at the first in file order.
        let mut jobs: Vec<usize> = cycle.iter().map(|&i| instances[i].0).collect();
        jobs.dedup();
        if jobs.len() > 1 && jobs.first() == jobs.last() {
            jobs.pop();
        }
        let start = jobs
            .iter()
            .enumerate()
            .min_by_key(|(_, p)| **p)
            .map_or(0, |(i, _)| i);
        jobs.rotate_left(start);
        if !reported.insert(jobs.clone()) {
            continue;
        }
        let mut names: Vec<&str> = jobs.iter().map(|&p| planned[p].def.name.as_str()).collect();
        names.push(names[0]);
        let text = names.join(" -> ");
        let from = &planned[jobs[0]];
        let to = jobs.get(1).copied().unwrap_or(jobs[0]);
        let explicit = from.needs.as_ref().and_then(|needs| {
            needs
                .iter()
                .find(|(_, targets)| targets.iter().any(|t| instances[*t].0 == to))
        });
        match explicit {
            Some((need, _)) => {
                let implicit = jobs.iter().find(|&&p| planned[p].needs.is_none());
                let hint = implicit.map(|&p| implicit_hint(&planned[p], stages));
                cx.error(&need.at, &need.ctx, ErrorKind::Cycle(text)).hint = hint;
            }
            None => {
                cx.error(&from.def.at, &from.def.ctx, ErrorKind::Cycle(text))
                    .hint = Some(implicit_hint(from, stages));
            }
        }
    }
}

fn implicit_hint(p: &Planned<'_>, stages: &[String]) -> String {
    let stage = p
        .stage
        .and_then(|s| stages.get(s))
        .map_or("?", String::as_str);
    format!(
        "`{}` has no `needs`, so it waits for every job of the stages before `{stage}`",
        p.def.name
    )
}

/// The cycles a depth-first search meets, each as the nodes along it.
fn cycles(dependencies: &[Vec<usize>]) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Color {
        White,
        Grey,
        Black,
    }
    let n = dependencies.len();
    let mut color = vec![Color::White; n];
    let mut found = Vec::new();
    for root in 0..n {
        if color[root] != Color::White {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        color[root] = Color::Grey;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&dep) = dependencies[node].get(*next) {
                *next += 1;
                match color[dep] {
                    Color::White => {
                        color[dep] = Color::Grey;
                        stack.push((dep, 0));
                    }
                    Color::Grey => {
                        if found.len() < 20 {
                            let start = stack.iter().position(|(v, _)| *v == dep).unwrap_or(0);
                            found.push(stack[start..].iter().map(|(v, _)| *v).collect());
                        }
                    }
                    Color::Black => {}
                }
            } else {
                color[node] = Color::Black;
                stack.pop();
            }
        }
    }
    found
}

/// Kahn's algorithm; ready jobs by stage, then file order.
fn dag(
    planned: &[Planned<'_>],
    instances: &[(usize, Instance)],
    dependencies: Vec<Vec<usize>>,
) -> Dag {
    let n = instances.len();
    let mut dependants = vec![Vec::new(); n];
    let mut missing: Vec<usize> = dependencies.iter().map(Vec::len).collect();
    for (i, deps) in dependencies.iter().enumerate() {
        for &d in deps {
            dependants[d].push(i);
        }
    }
    let rank = |i: usize| (planned[instances[i].0].stage.unwrap_or(0), i);
    let mut ready: BinaryHeap<Reverse<(usize, usize)>> = (0..n)
        .filter(|&i| missing[i] == 0)
        .map(|i| Reverse(rank(i)))
        .collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse((_, i))) = ready.pop() {
        order.push(i);
        for &d in &dependants[i] {
            missing[d] -= 1;
            if missing[d] == 0 {
                ready.push(Reverse(rank(d)));
            }
        }
    }
    Dag {
        order,
        dependencies,
        dependants,
    }
}

fn job(
    p: &Planned<'_>,
    inst: &Instance,
    dependencies: &[usize],
    instances: &[(usize, Instance)],
    input: &Input,
    stages: &[String],
) -> Job {
    let spec = p.spec;
    let mut variables: BTreeMap<String, String> = BTreeMap::new();
    let layers = [Some(&input.variables), spec.variables.as_ref()];
    for layer in layers.into_iter().flatten() {
        for (k, v) in &layer.0 {
            variables.insert(k.value.clone(), v.clone());
        }
    }
    for (k, v) in &inst.matrix {
        variables.insert(k.clone(), v.clone());
    }
    let name_of = |i: &usize| instances[*i].1.name.clone();
    let needs = p.needs.as_ref().map(|needs| {
        let mut names: Vec<String> = Vec::new();
        for (_, targets) in needs {
            for t in targets {
                let name = name_of(t);
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names
    });
    let kind = match (&spec.build, p.kind) {
        (Some(b), Some(Kind::Build)) => JobKind::Build(Build {
            context: b.context.clone().unwrap_or_else(|| ".".to_string()),
            dockerfile: b
                .dockerfile
                .clone()
                .unwrap_or_else(|| "Dockerfile".to_string()),
            target: b.target.clone(),
            args: b
                .args
                .iter()
                .flat_map(|a| &a.0)
                .map(|(k, v)| (k.value.clone(), v.clone()))
                .collect(),
            labels: b.labels.iter().flat_map(|l| l.0.clone()).collect(),
            destinations: b.destinations.clone().unwrap_or_default(),
            push: b.push.unwrap_or(true),
            platform: b.platform.clone(),
            cache: b.cache.as_ref().map(|c| Cache {
                repo: c.repo.clone(),
                ttl: c.ttl,
            }),
            secrets: secrets(b.secrets.as_ref()),
            reproducible: b.reproducible.unwrap_or(false),
        }),
        _ => JobKind::Script(Script {
            image: p.image.clone().or_else(|| {
                input
                    .defaults
                    .image
                    .as_ref()
                    .map(|i| Image::Reference(i.value.clone()))
            }),
            before_script: spec.before_script.clone().map(|l| l.0).unwrap_or_default(),
            script: spec.script.clone().map(|l| l.0).unwrap_or_default(),
            after_script: spec.after_script.clone().map(|l| l.0).unwrap_or_default(),
            artifacts: spec
                .artifacts
                .iter()
                .flat_map(|a| a.paths.iter().flatten())
                .map(|p| p.value.clone())
                .collect(),
        }),
    };
    Job {
        name: inst.name.clone(),
        base_name: p.def.name.clone(),
        matrix: inst.matrix.clone(),
        stage: p
            .stage
            .and_then(|s| stages.get(s))
            .cloned()
            .unwrap_or_else(|| DEFAULT_STAGE.to_string()),
        needs,
        depends_on: dependencies.iter().map(name_of).collect(),
        variables,
        rules: spec
            .rules
            .iter()
            .flatten()
            .map(|r| Rule {
                condition: r.if_.as_ref().map(|e| e.value.0.clone()),
                changes: r.changes.as_ref().map(|c| c.0.clone()),
                when: r.when.unwrap_or(When::OnSuccess),
            })
            .collect(),
        allow_failure: spec.allow_failure.unwrap_or(false),
        timeout: spec
            .timeout
            .or(input.defaults.timeout)
            .map_or(DEFAULT_TIMEOUT, |d| d.0),
        retry: retry(spec.retry.as_ref().or(input.defaults.retry.as_ref())),
        secrets: secrets(spec.secrets.as_ref()),
        kind,
    }
}

fn retry(spec: Option<&RetrySpec>) -> Retry {
    spec.map_or_else(Retry::default, |r| Retry {
        max: r.max,
        when: r.when.clone().unwrap_or_else(|| vec![RetryWhen::Always]),
    })
}

fn secrets(spec: Option<&Secrets>) -> Vec<Secret> {
    spec.iter()
        .flat_map(|s| &s.0)
        .map(|(name, source)| Secret {
            name: name.value.clone(),
            source: match source {
                SecretSpec::Env(v) => SecretSource::Env(v.clone()),
                SecretSpec::File(f) => SecretSource::File(PathBuf::from(f)),
            },
        })
        .collect()
}

fn branch_trigger(t: Option<&Trigger<BranchFilterSpec>>) -> Option<RefFilter> {
    match t? {
        Trigger::Enabled(false) => None,
        Trigger::Enabled(true) => Some(RefFilter::default()),
        Trigger::Filtered(f) => Some(RefFilter {
            refs: f.branches.as_ref().map(|p| p.0.clone()),
            paths: f.paths.as_ref().map(|p| p.0.clone()),
        }),
    }
}

fn triggers(on: Option<&OnSpec>) -> Triggers {
    let Some(on) = on else {
        return Triggers::all();
    };
    Triggers {
        push: branch_trigger(on.push.as_ref()),
        tag: match on.tag.as_ref() {
            None | Some(Trigger::Enabled(false)) => None,
            Some(Trigger::Enabled(true)) => Some(RefFilter::default()),
            Some(Trigger::Filtered(f)) => Some(RefFilter {
                refs: f.tags.as_ref().map(|p| p.0.clone()),
                paths: None,
            }),
        },
        pull_request: branch_trigger(on.pull_request.as_ref()),
        manual: on.manual.unwrap_or(false),
    }
}
