//! COPY and ADD as steps: their sources gathered (the build context with
//! `.dockerignore`, another stage or image, heredocs, ADD's URLs and git
//! repositories, local archives ADD extracts) into a staging tree that
//! becomes the step's layer. Placing files (ownership, modes, `--parents`,
//! the destination's rules) is `copy.rs`'s; fetching URLs is `add.rs`'s.

use std::fs;
use std::io;
use std::path::Path;

use super::add;
use super::copy::{self, Source, TreeEntry};
use super::engine::Engine;
use super::error::{Result, StepError, io_at};
use super::stage::{Job, StageState};
use crate::context::Context;
use crate::dockerfile::instructions::{self, Add, CopyArgs, Instruction};
use crate::dockerfile::plan::Scope;
use crate::dockerfile::shell::Lex;
use crate::image::apply::{self, ApplyOptions};
use crate::rootfs::{RootView, SnapshotMode};

impl Engine<'_> {
    /// COPY and ADD.
    pub(super) fn copy(
        &self,
        job: &Job<'_>,
        result: &mut StageState,
        instruction: &Instruction,
        args: &CopyArgs,
        add: Option<&Add>,
    ) -> Result<()> {
        let (scope, created) = (job.scope, job.created);
        let keyword = if add.is_some() { "ADD" } else { "COPY" };
        let chown = args
            .chown
            .as_deref()
            .map(|c| copy::resolve_chown(c, &result.view(), &self.work))
            .transpose()
            .map_err(|e| self.step_error(instruction, e))?;
        let chmod = args
            .chmod
            .as_deref()
            .map(copy::parse_chmod)
            .transpose()
            .map_err(|e| self.step_error(instruction, e))?;
        let mut copy_opts = copy::Options {
            instruction: keyword,
            chown,
            chmod,
            parents: args.parents,
            workdir: result.config.config.working_dir.clone(),
            from_context: args.from.is_none(),
        };

        let scratch = self.new_dir(&format!("stage-{}/sources", job.index))?;
        let mut sources = Vec::new();
        // Heredoc sources are files named by their delimiter.
        for heredoc in &args.heredocs {
            let content = self.heredoc_content(heredoc, scope, instruction)?;
            let path = scratch.join(&heredoc.name);
            fs::write(&path, content).map_err(io_at(&path))?;
            sources.push(Source {
                path,
                rel: heredoc.name.clone(),
                entries: None,
            });
        }
        let (remote, local): (Vec<&String>, Vec<&String>) = args
            .sources
            .iter()
            .partition(|s| add.is_some() && add::is_remote(s));
        // URLs downloaded for the key are not downloaded again.
        if job.fetched.is_empty() {
            for url in remote {
                sources.push(self.fetch_remote(url, add, &scratch, instruction)?);
            }
        } else {
            sources.extend(job.fetched.iter().cloned());
        }
        // Heredocs and downloads, as opposed to the context's files.
        let elsewhere = sources.len();
        let patterns: Vec<String> = local.into_iter().cloned().collect();
        if !patterns.is_empty() {
            match &args.from {
                None => {
                    sources.extend(self.context_sources(
                        &self.context,
                        &patterns,
                        &args.exclude,
                        instruction,
                    )?);
                }
                Some(from) => {
                    let root = self.source_root(job.built, from, instruction)?;
                    let other = Context::from_rootfs(root.path())?;
                    sources.extend(self.context_sources(
                        &other,
                        &patterns,
                        &args.exclude,
                        instruction,
                    )?);
                    copy_opts.from_context = false;
                }
            }
        }

        let staging = self.new_dir(&format!("stage-{}/staging", job.index))?;
        // Files from the build context need not be copied when nothing
        // mounts this root (no RUN in the build): the layer is written
        // straight from them, and the stage reads them where they are
        // (heredocs and downloads live in `scratch`, which the next COPY
        // empties: those are copied). A --chown owner is checked by giving
        // it to the copies (a rootless build's user namespace may not map
        // it, even where this process is root in it): those are copied too.
        let mut staging = if self.mode() == SnapshotMode::Overlay
            && !self.has_run()
            && !self.settings.single_snapshot
            && args.from.is_none()
            && elsewhere == 0
            && chown.is_none()
        {
            copy::Staging::placeholders(staging)
        } else {
            copy::Staging::copies(staging)
        };
        // Context files are extracted unless --unpack=false; downloads and
        // heredocs (in `scratch`) only with --unpack=true, as BuildKit does.
        let unpack = add.map(|a| a.unpack);
        let (archives, plain): (Vec<_>, Vec<_>) =
            sources
                .into_iter()
                .enumerate()
                .partition(|(n, s): &(usize, Source)| {
                    let wanted = match unpack {
                        None | Some(Some(false)) => false,
                        Some(Some(true)) => true,
                        Some(None) => *n >= elsewhere,
                    };
                    wanted
                        && args.from.is_none()
                        && s.path.is_file()
                        && add::is_local_archive(&s.path)
                });
        let archives: Vec<Source> = archives.into_iter().map(|(_, s)| s).collect();
        let plain: Vec<Source> = plain.into_iter().map(|(_, s)| s).collect();
        // `--link` makes a layer independent of what is below it, as
        // BuildKit does: the copy sees an empty root (no symlink in the image
        // is followed, no existing directory lends its metadata, a
        // destination without a trailing slash is not looked up), and the
        // layer is then laid over the stage like any other.
        let empty_root;
        let copy_root = if args.link {
            empty_root = self.new_dir(&format!("stage-{}/link-root", job.index))?;
            RootView::dir(&empty_root)
        } else {
            result.view()
        };
        if !plain.is_empty() {
            copy::copy(&plain, &args.dest, &copy_root, &mut staging, &copy_opts)
                .map_err(|e| self.step_error(instruction, e))?;
        }
        let extracts = !archives.is_empty();
        for archive in archives {
            let (dest, _) = copy::destination(&args.dest, &copy_opts.workdir);
            let dest = copy::resolve_image_path(&copy_root, &dest, true);
            let target = copy::under(&staging.dir, &dest);
            // Directories the image has keep their metadata; missing ones
            // take --chown's owner, as COPY's do.
            copy::make_dir(&copy_root, &staging.dir, &dest, chown.unwrap_or((0, 0)))
                .map_err(|e| self.step_error(instruction, e))?;
            let file = fs::File::open(&archive.path).map_err(io_at(&archive.path))?;
            apply::apply_layer(
                io::BufReader::new(file),
                &target,
                &ApplyOptions {
                    root_is_privileged: rustix::process::geteuid().is_root(),
                    preserve_ownership: chown.is_none(),
                    ignore_paths: Vec::new(),
                },
            )
            .map_err(|source| {
                self.step_error(
                    instruction,
                    StepError::Extract {
                        archive: archive.rel.clone(),
                        source,
                    },
                )
            })?;
            // --chown applies to what the archive held, as in BuildKit.
            if let Some((uid, gid)) = chown {
                chown_tree(&target, uid, gid)?;
            }
        }
        if extracts {
            staging.drop_overwritten();
        }
        // The sources' listing (100,000 files: tens of megabytes) is not
        // held while the layer is written.
        drop((copy_root, plain));
        self.commit_layer(result, staging, instruction.display(), created)
    }

    /// A COPY heredoc's file content: expanded unless its delimiter was
    /// quoted.
    pub(super) fn heredoc_content(
        &self,
        heredoc: &instructions::HeredocFile,
        scope: &Scope<'_>,
        instruction: &Instruction,
    ) -> Result<String> {
        if !heredoc.expand {
            return Ok(heredoc.content.clone());
        }
        let lex = Lex {
            raw_quotes: true,
            raw_escapes: true,
            ..Lex::new(self.plan.parsed.escape)
        };
        lex.process_word(&heredoc.content, scope)
            .map_err(|e| self.step_error(instruction, e.message))
    }

    /// Downloads (or clones) one of ADD's URLs into a new directory below
    /// `dir`, checked against `--checksum` when given.
    pub(super) fn fetch_remote(
        &self,
        url: &str,
        add: Option<&Add>,
        dir: &Path,
        instruction: &Instruction,
    ) -> Result<Source> {
        let (checksum, keep_git_dir) = add.map_or((None, false), |a| {
            (a.checksum.as_deref(), a.keep_git_dir == Some(true))
        });
        add::fetch(url, checksum, keep_git_dir, dir, self.runtime)
            .map_err(|e| self.step_error(instruction, e))
    }

    /// Selected files of `ctx` as copy sources.
    pub(super) fn context_sources(
        &self,
        ctx: &Context,
        patterns: &[String],
        excludes: &[String],
        instruction: &Instruction,
    ) -> Result<Vec<Source>> {
        let selected = ctx
            .select(patterns, excludes)
            .map_err(|e| self.step_error(instruction, e))?;
        let mut out = Vec::with_capacity(selected.len());
        for item in selected {
            let entries = if item.metadata.is_dir() {
                let mut list = Vec::new();
                for entry in ctx
                    .walk(&item, excludes)
                    .map_err(|e| self.step_error(instruction, e))?
                {
                    let entry = entry.map_err(|e| self.step_error(instruction, e))?;
                    list.push(TreeEntry {
                        sub: entry.sub,
                        abs: entry.abs,
                        metadata: entry.metadata,
                    });
                }
                Some(list)
            } else {
                None
            };
            out.push(Source {
                path: item.abs,
                rel: item.rel,
                entries,
            });
        }
        Ok(out)
    }
}

/// Gives everything below `dir` (not `dir` itself) the owner `uid:gid`,
/// without following symlinks.
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(io_at(dir))? {
        let path = entry.map_err(io_at(dir))?.path();
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(io_at(&path))?;
        if fs::symlink_metadata(&path).map_err(io_at(&path))?.is_dir() {
            chown_tree(&path, uid, gid)?;
        }
    }
    Ok(())
}
