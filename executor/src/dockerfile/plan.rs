//! The stage planner: typed instructions in, a stage graph out, with
//! BuildKit's variable scoping.
//!
//! Owns: splitting instructions into stages, global (meta) ARGs and their
//! expansion into FROM lines, BuildKit's predefined ARGs, `--build-arg`
//! values, stage names and indexes, dependencies between stages (`FROM
//! <stage>`, `COPY --from`, `RUN --mount=from=`), cycles, `--target` and the
//! set of stages a target needs, and [`Scope`]: the per-stage variable scope
//! the build engine drives instruction by instruction (ARG from its line on,
//! ENV winning over ARG). It must not read files or resolve images: a
//! stage's base image environment comes in from the caller.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::error::{Error, Errors, Position};
use super::instructions::{self, Instruction, Kind};
use super::parser::{self, Parsed};
use super::shell::{Env, Lex, ShellError};
use crate::platform::Platform;

/// Build arguments BuildKit accepts without an `ARG` declaration: they never
/// trigger the unused-argument warning.
pub const BUILTIN_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
    "SOURCE_DATE_EPOCH",
];

/// What the caller decides about a build.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: the stage to build; the last stage when `None`.
    pub target: Option<String>,
    /// The platform the build runs on (`BUILDPLATFORM`).
    pub build_platform: Platform,
    /// The platform the image is for (`TARGETPLATFORM`).
    pub target_platform: Platform,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            build_args: BTreeMap::new(),
            target: None,
            build_platform: Platform::host(),
            target_platform: Platform::host(),
        }
    }
}

/// Where a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "value", rename_all = "lowercase")]
pub enum Base {
    /// `FROM scratch`.
    Scratch,
    /// An image reference, expanded.
    Image(String),
    /// An earlier stage, by index.
    Stage(usize),
}

/// How one stage refers to another, or to an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "value", rename_all = "lowercase")]
pub enum Source {
    Stage(usize),
    Image(String),
}

/// One build stage.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub index: usize,
    /// The `AS` name, lower-cased.
    pub name: Option<String>,
    pub base: Base,
    /// `FROM --platform`, expanded and normalised.
    pub platform: Option<Platform>,
    /// The FROM instruction, expanded.
    pub from: Instruction,
    /// The stage's instructions after FROM, not yet expanded: expansion needs
    /// the base image's environment ([`Scope`]).
    pub instructions: Vec<Instruction>,
    /// Stages this one needs (its base, `COPY --from`, `RUN --mount=from`).
    pub depends_on: BTreeSet<usize>,
    /// Images this stage reads besides its base (`COPY --from=image`).
    pub images: BTreeSet<String>,
}

impl Stage {
    /// The name to show for this stage: its `AS` name or its index.
    #[must_use]
    pub fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.index.to_string())
    }
}

/// A global `ARG` (before the first FROM) after `--build-arg` values and
/// expansion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetaArg {
    pub key: String,
    pub value: Option<String>,
}

/// A finding that does not stop the build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// BuildKit's rule name when the warning is one of its checks.
    pub rule: &'static str,
    pub position: Position,
    pub message: String,
}

/// The plan of a Dockerfile build.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub parsed: Parsed,
    pub meta_args: Vec<MetaArg>,
    pub stages: Vec<Stage>,
    /// Index of the target stage.
    pub target: usize,
    /// The stages the target needs, itself included, in index order.
    pub needed: Vec<usize>,
    pub warnings: Vec<Warning>,
    /// Predefined and global variables visible to FROM lines.
    #[serde(skip)]
    pub globals: Vec<(String, String)>,
}

impl Plan {
    /// What a `--from=` value (already expanded) names, resolved as the plan
    /// resolved it: a stage by name or index, else an image.
    #[must_use]
    pub fn resolve_from(&self, reference: &str) -> Source {
        let names: BTreeMap<String, usize> = self
            .stages
            .iter()
            .filter_map(|s| s.name.clone().map(|n| (n, s.index)))
            .collect();
        resolve_reference(reference, &names, self.stages.len())
            .unwrap_or_else(|_| Source::Image(reference.to_string()))
    }
}

/// BuildKit's predefined platform ARGs.
#[must_use]
pub fn platform_args(build: &Platform, target: &Platform) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (prefix, p) in [("BUILD", build), ("TARGET", target)] {
        out.push((format!("{prefix}PLATFORM"), p.to_string()));
        out.push((format!("{prefix}OS"), p.os.clone()));
        out.push((format!("{prefix}ARCH"), p.architecture.clone()));
        out.push((
            format!("{prefix}VARIANT"),
            p.variant.clone().unwrap_or_default(),
        ));
    }
    out
}

/// Parses, types and plans a Dockerfile. Every error found is returned, not
/// only the first.
pub fn plan(text: &str, opts: &Options) -> Result<Plan, Errors> {
    let parsed = parser::parse(text)?;
    plan_parsed(parsed, opts)
}

/// Plans an already parsed Dockerfile.
pub fn plan_parsed(parsed: Parsed, opts: &Options) -> Result<Plan, Errors> {
    let (plan, errors) = plan_lenient(parsed, opts);
    if errors.is_empty() {
        Ok(plan)
    } else {
        Err(Errors(errors))
    }
}

/// Plans as far as the errors allow and returns the plan with every error
/// found: instructions that did not type are left out, an unknown target
/// falls back to the last stage. For linting; a build needs [`plan`].
pub fn plan_lenient(parsed: Parsed, opts: &Options) -> (Plan, Vec<Error>) {
    let (typed, mut errors) = instructions::parse(&parsed);
    let mut warnings: Vec<Warning> = parsed
        .warnings
        .iter()
        .map(|w| Warning {
            rule: "NoEmptyContinuation",
            position: w.position,
            message: w.message.clone(),
        })
        .collect();

    // Split into the global ARGs and the stages.
    let mut globals_raw = Vec::new();
    let mut groups: Vec<(Instruction, Vec<Instruction>)> = Vec::new();
    for instruction in typed {
        match (&instruction.kind, groups.last_mut()) {
            (Kind::From(_), _) => groups.push((instruction, Vec::new())),
            (_, Some((_, body))) => body.push(instruction),
            (Kind::Arg(_), None) => globals_raw.push(instruction),
            (_, None) => errors.push(Error::new(
                instruction.start,
                format!(
                    "{} instruction before the first FROM: only ARG may come before FROM",
                    instruction.keyword()
                ),
            )),
        }
    }
    if groups.is_empty() && errors.is_empty() {
        let position = parsed
            .nodes
            .first()
            .map_or(Position::new(1, 1), |n| n.start);
        errors.push(
            Error::new(position, "no build stage in the Dockerfile")
                .with_hint("add a FROM instruction, e.g. `FROM scratch`"),
        );
    }

    // Global ARGs: predefined platform args, then each declared ARG with its
    // `--build-arg` value or its expanded default.
    let lex = Lex::new(parsed.escape);
    let mut globals = platform_args(&opts.build_platform, &opts.target_platform);
    let mut meta_args = Vec::new();
    for instruction in &globals_raw {
        let Kind::Arg(arg) = &instruction.kind else {
            continue;
        };
        for def in &arg.args {
            let value = if let Some(v) = opts.build_args.get(&def.key) {
                Some(v.clone())
            } else if let Some(default) = &def.value {
                match lex.process_word(default, &globals) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        errors.push(shell_error(&parsed, instruction, default, &e));
                        None
                    }
                }
            } else {
                None
            };
            if let Some(v) = &value {
                set_var(&mut globals, &def.key, v);
            }
            meta_args.push(MetaArg {
                key: def.key.clone(),
                value,
            });
        }
    }

    // Stages: expand FROM with the globals, resolve names.
    let mut stages: Vec<Stage> = Vec::new();
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for (index, (mut from, body)) in groups.into_iter().enumerate() {
        if let Err(e) = from.expand(&|w| lex.process_word(w, &globals)) {
            errors.push(e);
        }
        let Kind::From(f) = &from.kind else {
            unreachable!("stages start with FROM")
        };
        if let Some(name) = &f.stage_name {
            if let Some(prev) = names.insert(name.clone(), index) {
                errors.push(Error::new(
                    parsed.locate_last_in(from.start, from.end_line, name),
                    format!("duplicate stage name {name:?}: stage {prev} already has it"),
                ));
            }
            if matches!(name.as_str(), "scratch" | "context") {
                warnings.push(Warning {
                    rule: "ReservedStageName",
                    position: from.start,
                    message: format!("{name:?} is a reserved stage name"),
                });
            }
        }
        let platform = match &f.platform {
            Some(p) => match p.parse::<Platform>() {
                Ok(p) => Some(p),
                Err(e) => {
                    errors.push(Error::new(
                        parsed.locate_in(from.start, from.end_line, "--platform"),
                        e.to_string(),
                    ));
                    None
                }
            },
            None => None,
        };
        let base = if f.image.is_empty() {
            errors.push(
                Error::new(from.start, "base name should not be blank")
                    .with_hint("a FROM line's image expanded to nothing: check the ARG it uses"),
            );
            Base::Scratch
        } else if f.image.eq_ignore_ascii_case("scratch") {
            Base::Scratch
        } else if let Some(&i) = names
            .get(&f.image.to_ascii_lowercase())
            .filter(|&&i| i < index)
        {
            Base::Stage(i)
        } else {
            Base::Image(f.image.clone())
        };
        let name = f.stage_name.clone();
        stages.push(Stage {
            index,
            name,
            base,
            platform,
            from,
            instructions: body,
            depends_on: BTreeSet::new(),
            images: BTreeSet::new(),
        });
    }

    // Dependencies from COPY --from and RUN --mount=from. The reference is
    // expanded with the globals only when it needs it; a per-stage value
    // would need the base image, which is the build engine's business.
    for index in 0..stages.len() {
        let mut deps = BTreeSet::new();
        let mut images = BTreeSet::new();
        if let Base::Stage(i) = stages[index].base {
            deps.insert(i);
        }
        for instruction in &stages[index].instructions {
            for reference in stage_references(instruction) {
                let reference = lex
                    .process_word(&reference, &globals)
                    .unwrap_or_else(|_| reference.clone());
                match resolve_reference(&reference, &names, stages.len()) {
                    Ok(Source::Stage(i)) => {
                        if i == index {
                            errors.push(Error::new(
                                parsed.locate_in(
                                    instruction.start,
                                    instruction.end_line,
                                    &reference,
                                ),
                                format!(
                                    "stage {} refers to itself in {reference:?}",
                                    stages[index].label()
                                ),
                            ));
                        } else {
                            deps.insert(i);
                        }
                    }
                    Ok(Source::Image(image)) => {
                        images.insert(image);
                    }
                    Err(message) => errors.push(Error::new(
                        parsed.locate_in(instruction.start, instruction.end_line, &reference),
                        message,
                    )),
                }
            }
        }
        stages[index].depends_on = deps;
        stages[index].images = images;
    }
    if let Some(cycle) = find_cycle(&stages) {
        let labels: Vec<String> = cycle.iter().map(|&i| stages[i].label()).collect();
        errors.push(
            Error::new(
                stages[cycle[0]].from.start,
                format!(
                    "circular dependency between stages: {}",
                    labels.join(" -> ")
                ),
            )
            .with_hint("a stage may only use stages that do not use it in turn"),
        );
    }

    let target = match &opts.target {
        None => stages.len().saturating_sub(1),
        Some(t) => {
            if let Some(&i) = names.get(&t.to_ascii_lowercase()) {
                i
            } else {
                let mut e = Error::new(
                    Position::new(1, 1),
                    format!("target stage {t:?} could not be found"),
                );
                if let Some(best) =
                    super::suggest::nearest(t, names.keys().map(String::as_str), false)
                {
                    e = e.with_hint(format!("did you mean {best:?}?"));
                } else if !names.is_empty() {
                    let all: Vec<&str> = names.keys().map(String::as_str).collect();
                    e = e.with_hint(format!("stages with names: {}", all.join(", ")));
                }
                errors.push(e);
                stages.len().saturating_sub(1)
            }
        }
    };

    errors.sort_by_key(|e| e.position);
    let needed = needed_stages(&stages, target);
    if errors.is_empty() {
        unused_build_args(&stages, &needed, &globals_raw, opts, &mut warnings);
    }
    let plan = Plan {
        parsed,
        meta_args,
        stages,
        target,
        needed,
        warnings,
        globals,
    };
    (plan, errors)
}

/// The stage references an instruction makes: `COPY --from`, `RUN
/// --mount=from=`.
fn stage_references(instruction: &Instruction) -> Vec<String> {
    match &instruction.kind {
        Kind::Copy(c) => c.args.from.iter().cloned().collect(),
        Kind::Add(a) => a.args.from.iter().cloned().collect(),
        Kind::Run(r) => r.mounts.iter().filter_map(|m| m.from.clone()).collect(),
        _ => Vec::new(),
    }
}

/// Resolves `--from=` as BuildKit does: a stage name, else a stage index
/// (which must exist), else an image reference.
fn resolve_reference(
    reference: &str,
    names: &BTreeMap<String, usize>,
    count: usize,
) -> Result<Source, String> {
    if let Some(&i) = names.get(&reference.to_ascii_lowercase()) {
        return Ok(Source::Stage(i));
    }
    if let Ok(i) = reference.parse::<i64>() {
        return match usize::try_from(i) {
            Ok(i) if i < count => Ok(Source::Stage(i)),
            _ => Err(format!(
                "stage index {reference} out of bounds: the Dockerfile has {count} stages (0 to {})",
                count.saturating_sub(1)
            )),
        };
    }
    Ok(Source::Image(reference.to_string()))
}

fn find_cycle(stages: &[Stage]) -> Option<Vec<usize>> {
    // Iterative DFS with colours; returns the stages on the first cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Colour {
        White,
        Grey,
        Black,
    }
    let mut colour = vec![Colour::White; stages.len()];
    for root in 0..stages.len() {
        if colour[root] != Colour::White {
            continue;
        }
        let mut stack: Vec<(usize, Vec<usize>)> =
            vec![(root, stages[root].depends_on.iter().copied().collect())];
        colour[root] = Colour::Grey;
        while let Some((node, pending)) = stack.last_mut() {
            let node = *node;
            if let Some(next) = pending.pop() {
                match colour.get(next).copied() {
                    Some(Colour::White) => {
                        colour[next] = Colour::Grey;
                        stack.push((next, stages[next].depends_on.iter().copied().collect()));
                    }
                    Some(Colour::Grey) => {
                        let mut cycle: Vec<usize> = stack.iter().map(|(n, _)| *n).collect();
                        let start = cycle.iter().position(|&n| n == next).unwrap_or(0);
                        cycle.drain(..start);
                        cycle.push(next);
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                colour[node] = Colour::Black;
                stack.pop();
            }
        }
    }
    None
}

fn needed_stages(stages: &[Stage], target: usize) -> Vec<usize> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if i < stages.len() && seen.insert(i) {
            todo.extend(stages[i].depends_on.iter().copied());
        }
    }
    seen.into_iter().collect()
}

/// BuildKit warns about `--build-arg` values no stage declares.
fn unused_build_args(
    stages: &[Stage],
    needed: &[usize],
    globals_raw: &[Instruction],
    opts: &Options,
    warnings: &mut Vec<Warning>,
) {
    let mut declared = BTreeSet::new();
    let all_args = globals_raw
        .iter()
        .chain(needed.iter().flat_map(|&i| stages[i].instructions.iter()));
    for instruction in all_args {
        if let Kind::Arg(arg) = &instruction.kind {
            declared.extend(arg.args.iter().map(|d| d.key.clone()));
        }
    }
    let unused: Vec<&str> = opts
        .build_args
        .keys()
        .map(String::as_str)
        .filter(|k| !declared.contains(*k) && !BUILTIN_ARGS.contains(k))
        .collect();
    if !unused.is_empty() {
        warnings.push(Warning {
            rule: "UnusedBuildArgs",
            position: Position::new(1, 1),
            message: format!(
                "one or more build args were not consumed: [{}]",
                unused.join(" ")
            ),
        });
    }
}

fn shell_error(parsed: &Parsed, instruction: &Instruction, text: &str, e: &ShellError) -> Error {
    Error::new(
        parsed.locate_in(instruction.start, instruction.end_line, text),
        format!("cannot expand {text:?}: {}", e.message),
    )
}

fn set_var(vars: &mut Vec<(String, String)>, key: &str, value: &str) {
    if let Some(slot) = vars.iter_mut().find(|(k, _)| k == key) {
        slot.1 = value.to_string();
    } else {
        vars.push((key.to_string(), value.to_string()));
    }
}

/// The variables of one stage while it is built: its environment (the base
/// image's ENV, then the stage's ENV instructions) and its ARGs, declared
/// from their line on. ENV wins over ARG of the same name, as in Docker.
#[derive(Debug, Clone)]
pub struct Scope<'a> {
    lex: Lex,
    env: Vec<(String, String)>,
    args: Vec<(String, String)>,
    build_args: &'a BTreeMap<String, String>,
    meta_args: &'a [MetaArg],
    globals: &'a [(String, String)],
    /// Variables looked up but not defined since the last
    /// [`Scope::take_undefined`].
    undefined: RefCell<BTreeSet<String>>,
}

impl<'a> Scope<'a> {
    /// A scope for `stage`, whose base has environment `base_env`.
    #[must_use]
    pub fn new(plan: &'a Plan, opts: &'a Options, base_env: Vec<(String, String)>) -> Self {
        Self {
            lex: Lex::new(plan.parsed.escape),
            env: base_env,
            args: Vec::new(),
            build_args: &opts.build_args,
            meta_args: &plan.meta_args,
            globals: &plan.globals,
            undefined: RefCell::new(BTreeSet::new()),
        }
    }

    /// The variables that expansions since the last call used without them
    /// being defined (as ENV, or as an ARG in scope).
    pub fn take_undefined(&self) -> BTreeSet<String> {
        self.undefined.take()
    }

    fn expand_word(&self, word: &str) -> Result<String, ShellError> {
        let (out, matches) = self.lex.process_word_with_matches(word, self)?;
        self.undefined.borrow_mut().extend(matches.unmatched);
        Ok(out)
    }

    /// The stage's environment as the image config will hold it.
    #[must_use]
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// The ARGs in scope with their values.
    #[must_use]
    pub fn args(&self) -> &[(String, String)] {
        &self.args
    }

    /// Expands `instruction` in this scope, then applies what it declares
    /// (ARG, ENV) to the scope.
    pub fn apply(&mut self, instruction: &mut Instruction, parsed: &Parsed) -> Result<(), Error> {
        if let Kind::Arg(arg) = &mut instruction.kind {
            for def in &mut arg.args {
                let value = if let Some(v) = self.build_args.get(&def.key) {
                    Some(v.clone())
                } else if let Some(default) = &def.value {
                    let v = self.expand_word(default).map_err(|e| {
                        Error::new(
                            parsed.locate_in(instruction.start, instruction.end_line, default),
                            format!("cannot expand {default:?}: {}", e.message),
                        )
                    })?;
                    Some(v)
                } else {
                    // Declared without a default: the global value, or the
                    // predefined one (`ARG TARGETARCH`).
                    self.meta_args
                        .iter()
                        .rev()
                        .find(|m| m.key == def.key)
                        .and_then(|m| m.value.clone())
                        .or_else(|| {
                            self.globals
                                .iter()
                                .find(|(k, _)| *k == def.key)
                                .map(|(_, v)| v.clone())
                        })
                };
                if let Some(v) = &value {
                    set_var(&mut self.args, &def.key, v);
                }
                def.value = value;
            }
            return Ok(());
        }
        let scope: &Self = self;
        instruction.expand(&|w| scope.expand_word(w))?;
        if let Kind::Env(kvs) = &instruction.kind {
            for kv in &kvs.0 {
                set_var(&mut self.env, &kv.key, &kv.value);
            }
        }
        Ok(())
    }
}

impl Env for Scope<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .or_else(|| self.args.iter().rev().find(|(k, _)| k == name))
            .map(|(_, v)| v.as_str())
    }
}

/// A stage with every instruction expanded, for `dockerfile check`.
#[derive(Debug, Clone, Serialize)]
pub struct ExpandedStage {
    pub index: usize,
    pub name: Option<String>,
    pub base: Base,
    pub platform: Option<Platform>,
    pub needed: bool,
    pub depends_on: BTreeSet<usize>,
    pub instructions: Vec<Instruction>,
    /// The ENV the stage ends with (unknown base image ENV not included).
    pub env: Vec<(String, String)>,
}

/// Every stage expanded, with what expansion found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Expansion {
    pub stages: Vec<ExpandedStage>,
    pub errors: Vec<Error>,
    pub warnings: Vec<Warning>,
}

/// Expands every stage of `plan` as far as possible without base images:
/// stages based on an image start from an empty environment; stages based on
/// a stage start from that stage's environment. Collects every error, and an
/// `UndefinedVar` warning where a variable is used undefined and that is
/// certain without the base image (the stage's chain starts from scratch, or
/// the variable is a global ARG not redeclared in the stage).
#[must_use]
pub fn expand_all(plan: &Plan, opts: &Options) -> Expansion {
    let mut out = Expansion::default();
    let globals: BTreeSet<&str> = plan.meta_args.iter().map(|m| m.key.as_str()).collect();
    let mut from_scratch: Vec<bool> = Vec::with_capacity(plan.stages.len());
    for stage in &plan.stages {
        let (base_env, scratch) = match stage.base {
            Base::Stage(i) => (
                out.stages.get(i).map(|s| s.env.clone()).unwrap_or_default(),
                from_scratch.get(i).copied().unwrap_or(false),
            ),
            Base::Scratch => (Vec::new(), true),
            Base::Image(_) => (Vec::new(), false),
        };
        from_scratch.push(scratch);
        let mut scope = Scope::new(plan, opts, base_env);
        let mut instructions = vec![stage.from.clone()];
        for instruction in &stage.instructions {
            let mut instruction = instruction.clone();
            if let Err(e) = scope.apply(&mut instruction, &plan.parsed) {
                out.errors.push(e);
            }
            for name in scope.take_undefined() {
                let global = globals.contains(name.as_str());
                if !(scratch || global) {
                    continue;
                }
                let message = if global {
                    format!(
                        "usage of undefined variable '${name}': the global ARG {name} is not in scope inside a stage; declare `ARG {name}` after FROM to use it"
                    )
                } else {
                    format!("usage of undefined variable '${name}'")
                };
                out.warnings.push(Warning {
                    rule: "UndefinedVar",
                    position: locate_variable(&plan.parsed, &instruction, &name),
                    message,
                });
            }
            instructions.push(instruction);
        }
        out.stages.push(ExpandedStage {
            index: stage.index,
            name: stage.name.clone(),
            base: stage.base.clone(),
            platform: stage.platform.clone(),
            needed: plan.needed.contains(&stage.index),
            depends_on: stage.depends_on.clone(),
            instructions,
            env: scope.env().to_vec(),
        });
    }
    out
}

/// Where `$name` or `${name` is written in an instruction.
fn locate_variable(parsed: &Parsed, instruction: &Instruction, name: &str) -> Position {
    for needle in [format!("${{{name}"), format!("${name}")] {
        let at = parsed.locate_in(instruction.start, instruction.end_line, &needle);
        if at != instruction.start {
            return at;
        }
    }
    instruction.start
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(args: &[(&str, &str)]) -> Options {
        Options {
            build_args: args
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
            target: None,
            build_platform: "linux/amd64".parse().unwrap(),
            target_platform: "linux/arm64".parse().unwrap(),
        }
    }

    /// Plans and expands; returns the display of every instruction per stage.
    fn expanded(text: &str, opts: &Options) -> Vec<Vec<String>> {
        let plan = plan(text, opts).unwrap();
        let out = expand_all(&plan, opts);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        out.stages
            .iter()
            .map(|s| s.instructions.iter().map(Instruction::display).collect())
            .collect()
    }

    #[test]
    fn global_args_apply_to_from_only_unless_redeclared() {
        let text =
            "ARG IMG=alpine\nARG TAG=3\nFROM $IMG:$TAG\nLABEL a=\"$TAG\"\nARG TAG\nLABEL b=$TAG\n";
        let stages = expanded(text, &opts(&[]));
        assert_eq!(stages[0][0], "FROM alpine:3");
        assert_eq!(stages[0][1], "LABEL a=\"\"");
        assert_eq!(stages[0][3], "LABEL b=3");
        let stages = expanded(text, &opts(&[("TAG", "4")]));
        assert_eq!(stages[0][0], "FROM alpine:4");
        assert_eq!(stages[0][3], "LABEL b=4");
    }

    #[test]
    fn build_args_not_declared_globally_do_not_reach_from() {
        let stages = expanded("FROM img:${TAG:-default}\n", &opts(&[("TAG", "x")]));
        assert_eq!(stages[0][0], "FROM img:default");
    }

    #[test]
    fn stage_arg_applies_from_its_line_and_env_wins() {
        let text = "FROM a\nWORKDIR /$V\nARG V=1\nWORKDIR /$V\nENV V=env\nARG V=2\nWORKDIR /$V\n";
        let stages = expanded(text, &opts(&[]));
        assert_eq!(stages[0][1], "WORKDIR /");
        assert_eq!(stages[0][3], "WORKDIR /1");
        assert_eq!(stages[0][6], "WORKDIR /env");
    }

    #[test]
    fn env_values_on_one_line_see_the_previous_values() {
        let text = "FROM a\nENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc\n";
        let plan = plan(text, &opts(&[])).unwrap();
        let out = expand_all(&plan, &opts(&[]));
        let env: Vec<(String, String)> = out.stages[0].env.clone();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("def"), Some("hello"));
        assert_eq!(get("ghi"), Some("bye"));
    }

    #[test]
    fn predefined_platform_args() {
        let text = "FROM --platform=$BUILDPLATFORM a AS build\nARG TARGETARCH\nARG BUILDOS\nENV T=$TARGETARCH B=$BUILDOS P=$TARGETPLATFORM\n";
        let plan = plan(text, &opts(&[])).unwrap();
        assert_eq!(
            plan.stages[0].platform.as_ref().map(ToString::to_string),
            Some("linux/amd64".to_string())
        );
        let out = expand_all(&plan, &opts(&[]));
        let env = &out.stages[0].env;
        assert_eq!(env[0], ("T".to_string(), "arm64".to_string()));
        assert_eq!(env[1], ("B".to_string(), "linux".to_string()));
        // TARGETPLATFORM was not declared in the stage.
        assert_eq!(env[2], ("P".to_string(), String::new()));
    }

    #[test]
    fn stages_inherit_env_but_not_args_from_their_base_stage() {
        let text = "FROM a AS base\nARG A=1\nENV E=2\nFROM base\nLABEL x=$A y=$E\n";
        let stages = expanded(text, &opts(&[]));
        assert_eq!(stages[1][1], "LABEL x=\"\" y=2");
    }

    #[test]
    fn target_and_needed_stages() {
        let text = "FROM a AS one\nFROM b AS two\nCOPY --from=one /x /x\nFROM c AS three\nRUN --mount=from=0,target=/m true\nFROM two\n";
        let mut o = opts(&[]);
        let p = plan(text, &o).unwrap();
        assert_eq!(p.target, 3);
        assert_eq!(p.needed, vec![0, 1, 3]);
        assert_eq!(p.stages[3].base, Base::Stage(1));
        o.target = Some("THREE".to_string());
        let p = plan(text, &o).unwrap();
        assert_eq!(p.target, 2);
        assert_eq!(p.needed, vec![0, 2]);
        // `--from=` values resolve as the plan resolved them.
        assert_eq!(p.resolve_from("One"), Source::Stage(0));
        assert_eq!(p.resolve_from("2"), Source::Stage(2));
        assert_eq!(
            p.resolve_from("busybox:1"),
            Source::Image("busybox:1".into())
        );
    }

    #[test]
    fn copy_from_unknown_name_is_an_image() {
        let p = plan("FROM a\nCOPY --from=nginx:latest /a /b\n", &opts(&[])).unwrap();
        assert!(p.stages[0].images.contains("nginx:latest"));
        assert!(p.stages[0].depends_on.is_empty());
    }

    #[test]
    fn from_a_later_stage_name_is_an_image() {
        let p = plan("FROM later\nFROM b AS later\n", &opts(&[])).unwrap();
        assert_eq!(p.stages[0].base, Base::Image("later".to_string()));
    }

    #[test]
    fn graph_errors() {
        let err = plan("FROM a AS x\nCOPY --from=x /a /a\n", &opts(&[])).unwrap_err();
        assert!(err.0[0].message.contains("refers to itself"), "{err}");
        let err = plan("FROM a\nCOPY --from=-1 /a /a\n", &opts(&[])).unwrap_err();
        assert!(err.0[0].message.contains("out of bounds"), "{err}");
        let err = plan("ENV a=b\nFROM a\n", &opts(&[])).unwrap_err();
        assert!(err.0[0].message.contains("before the first FROM"), "{err}");
        let err = plan("ARG A\n", &opts(&[])).unwrap_err();
        assert!(err.0[0].message.contains("no build stage"), "{err}");
        let err = plan("ARG A\nFROM ${A}\n", &opts(&[])).unwrap_err();
        assert!(err.0[0].message.contains("should not be blank"), "{err}");
    }

    #[test]
    fn unused_build_args_warn_except_builtins() {
        let p = plan(
            "FROM a AS x\nARG USED\nFROM b\n",
            &opts(&[("USED", "1"), ("HTTP_PROXY", "p"), ("EXTRA", "2")]),
        )
        .unwrap();
        // USED is declared only in a stage the target does not need.
        assert_eq!(p.warnings.len(), 1);
        assert!(
            p.warnings[0].message.contains("[EXTRA USED]"),
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn undefined_variables_warn_only_when_certain() {
        let o = opts(&[]);
        let p = plan("FROM scratch\nWORKDIR $NOPE\n", &o).unwrap();
        let out = expand_all(&p, &o);
        assert_eq!(out.warnings.len(), 1);
        assert_eq!(out.warnings[0].rule, "UndefinedVar");
        assert_eq!(out.warnings[0].position, Position::new(2, 9));
        // From an image, the variable may come from its ENV.
        let p = plan("FROM alpine\nWORKDIR $NOPE\n", &o).unwrap();
        assert!(expand_all(&p, &o).warnings.is_empty());
    }
}
