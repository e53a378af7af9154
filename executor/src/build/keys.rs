//! Cache keys: how an expanded Dockerfile instruction becomes the typed
//! step the cache crate keys (`executor_cache::Step`). The functions at the
//! top only arrange values; the engine's methods at the bottom gather what
//! needs the file system or a registry (the content hash of the files a
//! COPY selects, the identity of a `--from` source, an ADD URL's content).
//! A step whose inputs have no identity gets no key: it is never looked up
//! nor filed.
//!
//! What is left out of a key on purpose: an `ARG`'s value (it reaches every
//! later key that can depend on it: RUN through the build args in scope,
//! other instructions through their expansion), so that a changed build arg
//! misses the cache only from the first step that uses it.

use std::fs;

use executor_cache::{CopyStep, KeyEncoder, MountSpec, RunStep, Step, TreeHash};

use super::add;
use super::config::ImageConfig;
use super::copy::Source;
use super::engine::{Built, Engine};
use super::error::{Result, io_at};
use crate::dockerfile::instructions::{
    self, Add, Command, CopyArgs, Instruction, Kind, Mount, MountKind, NetworkMode, Run,
    SecurityMode, Sharing,
};
use crate::dockerfile::plan::{self, Scope};
use crate::registry::ImageReference;

/// A config-only instruction (and WORKDIR, whose directory follows from
/// the steps before it): its canonical spelling, an ARG by its names only.
#[must_use]
pub fn config_step(instruction: &Instruction) -> Step {
    let canonical = match &instruction.kind {
        Kind::Arg(arg) => {
            let names: Vec<&str> = arg.args.iter().map(|d| d.key.as_str()).collect();
            format!("ARG {}", names.join(" "))
        }
        _ => instruction.display(),
    };
    Step::Config { canonical }
}

/// The identity of something a step reads that its key names rather than
/// hashes: a stage by its last key, an image by its manifest digest, a
/// fetched URL by its content.
#[must_use]
pub fn identity(kind: &str, id: &str) -> TreeHash {
    let mut e = KeyEncoder::new();
    e.str("identity");
    e.str(kind);
    e.str(id);
    TreeHash::from_bytes(*e.finish().as_bytes())
}

/// Several hashes as one, in order.
#[must_use]
pub fn combine(parts: &[TreeHash]) -> TreeHash {
    let mut e = KeyEncoder::new();
    e.str("combined");
    e.list(parts, |e, t| e.digest(t.as_bytes()));
    TreeHash::from_bytes(*e.finish().as_bytes())
}

/// A RUN in the config it runs with: `args` are the build args in scope,
/// `bind_sources` the content (or identity) of each bind mount's source,
/// in mount order.
#[must_use]
pub fn run_step(
    run: &Run,
    config: &ImageConfig,
    args: &[(String, String)],
    bind_sources: Vec<TreeHash>,
) -> Step {
    let (command, shell_form) = match &run.command {
        Command::Exec(words) => (words.clone(), false),
        Command::Shell(line) => (vec![line.clone()], true),
    };
    let network = match run.network {
        None | Some(NetworkMode::Default) => "default",
        Some(NetworkMode::None) => "none",
        Some(NetworkMode::Host) => "host",
    };
    let security = match run.security {
        None | Some(SecurityMode::Sandbox) => "",
        Some(SecurityMode::Insecure) => "+insecure",
    };
    Step::Run(RunStep {
        command,
        shell_form,
        env: config.env_pairs(),
        args: args.to_vec(),
        user: config.config.user.clone(),
        workdir: config.config.working_dir.clone(),
        shell: config.shell(),
        network: format!("{network}{security}"),
        mounts: run.mounts.iter().map(mount_spec).collect(),
        bind_sources,
        heredocs: run
            .heredocs
            .iter()
            .map(|h| (h.name.clone(), h.content.clone()))
            .collect(),
    })
}

/// A mount with BuildKit's defaults filled in (see [`Mount`]).
fn mount_spec(m: &Mount) -> MountSpec {
    let target = m.target.clone().unwrap_or_default();
    let owner = |default_mode: u32| {
        (
            m.mode.unwrap_or(default_mode),
            u64::from(m.uid.unwrap_or(0)),
            u64::from(m.gid.unwrap_or(0)),
        )
    };
    match m.kind {
        MountKind::Bind => MountSpec::Bind {
            target,
            from: m.from.clone(),
            source: m.source.clone().unwrap_or_default(),
            readwrite: !m.read_only,
        },
        MountKind::Cache => {
            let (mode, uid, gid) = owner(0o755);
            MountSpec::Cache {
                id: m.id.clone().unwrap_or_else(|| target.clone()),
                target,
                sharing: match m.sharing {
                    None | Some(Sharing::Shared) => "shared",
                    Some(Sharing::Private) => "private",
                    Some(Sharing::Locked) => "locked",
                }
                .to_string(),
                from: m.from.clone(),
                source: m.source.clone().unwrap_or_default(),
                readonly: m.read_only,
                mode,
                uid,
                gid,
            }
        }
        MountKind::Tmpfs => MountSpec::Tmpfs {
            target,
            size: m.size,
        },
        MountKind::Secret => {
            let (mode, uid, gid) = owner(0o400);
            MountSpec::Secret {
                id: m.id.clone().unwrap_or_default(),
                target: m.target.clone(),
                env: m.env.clone(),
                required: m.required,
                mode,
                uid,
                gid,
            }
        }
        MountKind::Ssh => {
            let (mode, uid, gid) = owner(0o600);
            MountSpec::Ssh {
                id: m.id.clone().unwrap_or_else(|| "default".to_string()),
                target: m.target.clone(),
                required: m.required,
                mode,
                uid,
                gid,
            }
        }
    }
}

/// A COPY or ADD: `files` is the content of what it reads (the selected
/// context files, fetched URLs), `from` the identity of a `--from` source,
/// `heredocs` its heredoc files after expansion.
#[must_use]
pub fn copy_step(
    instruction: &Instruction,
    args: &CopyArgs,
    add: Option<&Add>,
    files: TreeHash,
    from: Option<String>,
    heredocs: Vec<(String, String)>,
) -> Step {
    Step::Copy(CopyStep {
        files,
        add: add.is_some(),
        chown: args.chown.clone(),
        chmod: args.chmod.clone(),
        from,
        link: args.link,
        parents: args.parents,
        excludes: args.exclude.clone(),
        dest: args.dest.clone(),
        canonical: instruction.display(),
        heredocs,
    })
}

// --- what the keys hash, gathered by the engine ------------------------------

impl Engine<'_> {
    /// The identity of a `--from` source for a key: a stage by its last
    /// key, an image by its manifest digest (resolved, not downloaded).
    /// `None` when the stage has no key.
    pub(super) fn source_identity(
        &self,
        built: &Built,
        from: &str,
        instruction: &Instruction,
    ) -> Result<Option<String>> {
        if let plan::Source::Stage(i) = self.plan.resolve_from(from) {
            return Ok(built
                .get(&i)
                .and_then(|stage| stage.key)
                .map(|key| format!("stage:{key}")));
        }
        let reference = ImageReference::parse(from).map_err(|e| self.step_error(instruction, e))?;
        let image = self
            .images
            .resolve(&reference, &self.settings.platform, &self.store)?;
        Ok(Some(format!("image:{}", image.digest)))
    }

    /// The content hash of `patterns` selected from the build context, as
    /// COPY (and a RUN bind mount) would read them.
    pub(super) fn context_hash(
        &self,
        patterns: &[String],
        excludes: &[String],
        instruction: &Instruction,
    ) -> Result<TreeHash> {
        let selected = self
            .context
            .select(patterns, excludes)
            .map_err(|e| self.step_error(instruction, e))?;
        let digest = self
            .context
            .content_hash(&selected, excludes)
            .map_err(|e| self.step_error(instruction, e))?;
        Ok(TreeHash::from_bytes(digest.0))
    }

    /// A RUN's key step: its command and environment, and what its bind
    /// mounts read; `None` when a mount reads a `--from` stage that has no
    /// key (the step then has none either, and is neither looked up nor
    /// filed).
    pub(super) fn run_key(
        &self,
        built: &Built,
        instruction: &Instruction,
        r: &instructions::Run,
        config: &ImageConfig,
        scope: &Scope<'_>,
    ) -> Result<Option<executor_cache::Step>> {
        let mut bind_sources = Vec::new();
        for mount in r
            .mounts
            .iter()
            .filter(|m| m.kind == instructions::MountKind::Bind)
        {
            let source = mount.source.clone().unwrap_or_else(|| "/".to_string());
            let hash = match &mount.from {
                None => self.context_hash(&[source], &[], instruction)?,
                Some(from) => match self.source_identity(built, from, instruction)? {
                    Some(id) => identity("source", &format!("{id}:{source}")),
                    // A stage without a key: what the step reads has no
                    // identity, so the step has no key and never hits.
                    None => return Ok(None),
                },
            };
            bind_sources.push(hash);
        }
        Ok(Some(run_step(r, config, scope.args(), bind_sources)))
    }

    /// A COPY's or ADD's key step, `None` when what it reads has no
    /// identity (a `--from` stage that was not keyed). ADD's URLs without
    /// `--checksum` are downloaded for their content's hash, into
    /// `fetched`: the step, if it executes, copies those bytes.
    pub(super) fn copy_key(
        &self,
        index: usize,
        built: &Built,
        instruction: &Instruction,
        (args, add): (&CopyArgs, Option<&Add>),
        scope: &Scope<'_>,
        fetched: &mut Vec<Source>,
    ) -> Result<Option<executor_cache::Step>> {
        let mut heredocs = Vec::new();
        for heredoc in &args.heredocs {
            heredocs.push((
                heredoc.name.clone(),
                self.heredoc_content(heredoc, scope, instruction)?,
            ));
        }
        let (remote, local): (Vec<&String>, Vec<&String>) = args
            .sources
            .iter()
            .partition(|s| add.is_some() && add::is_remote(s));
        let mut parts = Vec::new();
        // A URL is known by its checksum when given, else by its content,
        // fetched now, once: the step copies what was hashed.
        let checksum = add.and_then(|a| a.checksum.as_deref());
        if let Some(checksum) = checksum {
            parts.extend(remote.iter().map(|_| identity("checksum", checksum)));
        } else if !remote.is_empty() {
            let dir = self.work.join(format!("stage-{index}/fetched"));
            fs::create_dir_all(&dir).map_err(io_at(&dir))?;
            for url in remote {
                let source = self.fetch_remote(url, add, &dir, instruction)?;
                // A download is a file alone in its directory; a git
                // repository a directory.
                let tree = if source.path.is_dir() {
                    source.path.clone()
                } else {
                    source.path.parent().unwrap_or(&dir).to_path_buf()
                };
                parts.push(executor_cache::hash_dir(&tree).map_err(io_at(&tree))?);
                fetched.push(source);
            }
        }
        let patterns: Vec<String> = local.into_iter().cloned().collect();
        let from = match &args.from {
            None => {
                if !patterns.is_empty() {
                    parts.push(self.context_hash(&patterns, &args.exclude, instruction)?);
                }
                None
            }
            Some(from) => match self.source_identity(built, from, instruction)? {
                Some(id) => Some(id),
                None => return Ok(None),
            },
        };
        Ok(Some(copy_step(
            instruction,
            args,
            add,
            combine(&parts),
            from,
            heredocs,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::parser;

    fn instruction(line: &str) -> Instruction {
        let parsed = parser::parse(line).unwrap();
        crate::dockerfile::instructions::parse_node(&parsed.nodes[0], &parsed).unwrap()
    }

    fn key_of(line: &str, value: Option<&str>) -> executor_cache::Key {
        let mut i = instruction(line);
        if let Kind::Arg(arg) = &mut i.kind {
            arg.args[0].value = value.map(str::to_string);
        }
        executor_cache::key(None, &config_step(&i))
    }

    #[test]
    fn an_arg_value_is_not_in_its_key_but_other_instructions_are_spelled_out() {
        assert_eq!(key_of("ARG V", Some("1")), key_of("ARG V", Some("2")));
        assert_ne!(key_of("ARG V", None), key_of("ARG W", None));
        assert_ne!(key_of("ENV V=1", None), key_of("ENV V=2", None));
        assert_ne!(key_of("LABEL a=b", None), key_of("LABEL a=c", None));
    }

    #[test]
    fn identities_and_combinations_differ_by_every_part() {
        assert_ne!(identity("stage", "a"), identity("image", "a"));
        assert_ne!(identity("stage", "ab"), identity("stagea", "b"));
        let (a, b) = (identity("x", "1"), identity("x", "2"));
        assert_ne!(combine(&[a, b]), combine(&[b, a]));
        assert_ne!(combine(&[a]), combine(&[a, a]));
    }

    #[test]
    fn a_secret_mount_enters_a_run_key_by_id_only() {
        let i = instruction("RUN --mount=type=secret,id=token,env=TOKEN make");
        let Kind::Run(run) = &i.kind else {
            panic!("a RUN");
        };
        let Step::Run(step) = run_step(run, &ImageConfig::default(), &[], Vec::new()) else {
            panic!("a run step");
        };
        assert_eq!(
            step.mounts,
            vec![MountSpec::Secret {
                id: "token".into(),
                target: None,
                env: Some("TOKEN".into()),
                required: false,
                mode: 0o400,
                uid: 0,
                gid: 0,
            }]
        );
    }
}
