//! Which context files a COPY or ADD reads, following BuildKit: the context
//! is seen as BuildKit's client sends it (filtered by `.dockerignore`: an
//! excluded path does not exist, except a directory holding a re-included
//! path), each source is cleaned as `path.Join("/", src)` (so an absolute
//! source is relative to the context root), wildcards are Go's
//! `filepath.Match` (`*`, `?`, `[...]`, `\` escapes) from the first path
//! component that has one (fsutil's `ResolveWildcards`, which stops at a
//! matching directory and never follows links while matching), and a
//! selected path is followed through its symlinks with the context's root
//! as `/` (continuity's `RootPath`, which fsutil's copier uses for a source
//! with `FollowLinks`): an absolute target is read from the root, and `..`
//! stops at the root, as in a chroot. So `current -> /opt/app-1.2` selects
//! `opt/app-1.2` of the same context or stage, never a file of the host.
//! Inside a selected directory nothing is followed: symlinks are entries
//! like any other, copied as they are.
//!
//! Where Docker would quietly reinterpret a path, this is an error instead:
//! a source that climbs out of the context (`../x`). A literal source that
//! does not exist is an error; a wildcard may match nothing as long as the
//! instruction selects something (as with kaniko and Docker's classic
//! builder).
//!
//! A root file system ([`Context::from_rootfs`], for `COPY --from`) is
//! read as Docker reads a stage: `..` in a source stops at its root too,
//! and files keep their owners.
//!
//! `COPY --exclude` patterns are `.dockerignore` patterns. They are matched
//! against each selected path relative to the context root, and, inside a
//! selected directory, against the path relative to that directory
//! (BuildKit's copier).

use std::collections::VecDeque;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{Context, Error, Result, gomatch, join_rel};
use crate::dockerfile::dockerignore::DockerIgnore;
use crate::dockerfile::gopath;

/// Owner under which context files are presented: BuildKit's client resets
/// uid and gid to 0 when it sends a local context, whatever the files'
/// owners on disk, so COPY without `--chown` gives root-owned files.
pub const CONTEXT_OWNER: (u32, u32) = (0, 0);

/// Most symlinks followed while resolving one path (Linux's limit).
const MAX_LINKS: usize = 40;

/// A path a COPY/ADD source selected.
#[derive(Debug, Clone)]
pub struct Selected {
    /// Which source pattern selected it.
    pub pattern_index: usize,
    /// Its path in the context as named or matched (`.` for the root); a
    /// destination takes this path's base name.
    pub rel: String,
    /// `rel` with every symlink followed (within the context).
    pub resolved: String,
    /// Where to read it.
    pub abs: PathBuf,
    /// Its metadata (never a symlink: links are followed).
    pub metadata: Metadata,
    /// Owner as the context presents it ([`CONTEXT_OWNER`]).
    pub uid: u32,
    pub gid: u32,
}

/// A path below a selected directory, as [`Context::walk`] yields it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its path in the context.
    pub rel: String,
    /// Its path relative to the selected directory.
    pub sub: String,
    /// Where to read it.
    pub abs: PathBuf,
    /// Its metadata, not following symlinks.
    pub metadata: Metadata,
    /// Owner as the context presents it ([`CONTEXT_OWNER`]).
    pub uid: u32,
    pub gid: u32,
}

impl Context {
    /// Select the files COPY/ADD `sources` name (in order; a wildcard's
    /// matches in name order), leaving out what `excludes` (`--exclude`)
    /// match.
    pub fn select(&self, sources: &[String], excludes: &[String]) -> Result<Vec<Selected>> {
        let excludes = parse_excludes(excludes)?;
        let mut selected = Vec::new();
        for (index, pattern) in sources.iter().enumerate() {
            let cleaned = gopath::clean(&format!("/{pattern}"));
            // A rooted path cannot climb: `/../x` is `/x`. In a root file
            // system `..` stops at the root, as in Docker.
            let lexical = gopath::clean(pattern);
            if !self.rootfs && (lexical == ".." || lexical.starts_with("../")) {
                return Err(Error::OutsideContext {
                    pattern: pattern.clone(),
                });
            }
            let rel = match cleaned.trim_start_matches('/') {
                "" => ".".to_owned(),
                rel => rel.to_owned(),
            };
            let (literal, wild) = split_wildcards(&rel);
            let mut found = Vec::new();
            if wild.is_empty() {
                let (resolved, metadata) =
                    self.resolve(&rel, pattern)?
                        .ok_or_else(|| Error::NotFound {
                            pattern: pattern.clone(),
                        })?;
                found.push((rel.clone(), resolved, metadata));
            } else {
                gomatch::check_pattern(&wild).map_err(|reason| Error::BadPattern {
                    pattern: pattern.clone(),
                    reason: reason.to_owned(),
                })?;
                if let Some((base, metadata)) = self.resolve(&literal, pattern)?
                    && metadata.is_dir()
                {
                    let limit = if wild.contains('[') {
                        usize::MAX
                    } else {
                        wild.split('/').count()
                    };
                    let mut matches = Vec::new();
                    self.match_below(&base, "", &wild, limit, &mut matches)?;
                    for sub in matches {
                        let named = join(&literal, &sub);
                        let (resolved, metadata) = self
                            .resolve(&join(&base, &sub), pattern)?
                            .ok_or_else(|| Error::NotFound {
                                pattern: named.clone(),
                            })?;
                        found.push((named, resolved, metadata));
                    }
                }
            }
            for (rel, resolved, metadata) in found {
                if rel != "." && excludes.as_ref().is_some_and(|x| x.is_excluded(&rel)) {
                    continue;
                }
                let abs = join_rel(self.root(), &resolved);
                let (uid, gid) = self.owner(&metadata);
                selected.push(Selected {
                    pattern_index: index,
                    rel,
                    resolved,
                    abs,
                    metadata,
                    uid,
                    gid,
                });
            }
        }
        if selected.is_empty() {
            return Err(Error::NoSourceFiles {
                patterns: sources.to_vec(),
            });
        }
        Ok(selected)
    }

    /// Everything below a selected directory (nothing for a file), depth
    /// first in name order, parents before children; `.dockerignore` and
    /// `excludes` applied (an excluded directory appears only when
    /// something below it is re-included). Symlinks are not followed.
    pub fn walk(&self, selected: &Selected, excludes: &[String]) -> Result<Walk<'_>> {
        let mut walk = Walk {
            context: self,
            excludes: parse_excludes(excludes)?,
            stack: Vec::new(),
            ready: VecDeque::new(),
        };
        if selected.metadata.is_dir() {
            walk.stack.push(Level {
                rel: selected.resolved.clone(),
                sub: String::new(),
                names: read_sorted(&selected.abs)?.into_iter(),
                pending: None,
            });
        }
        Ok(walk)
    }

    /// Follow `rel` (cleaned, relative) through symlinks inside the root.
    /// `None`: it does not exist in the context as Docker sends it.
    fn resolve(&self, rel: &str, pattern: &str) -> Result<Option<(String, Metadata)>> {
        let visible = |rel: &str, meta: &Metadata| self.visible(rel, meta);
        match resolve_core(self.root(), rel, &visible)? {
            Resolution::Found(resolved, metadata) => Ok(Some((resolved, metadata))),
            Resolution::Missing => Ok(None),
            Resolution::Loop => Err(Error::SymlinkLoop {
                pattern: pattern.to_owned(),
            }),
        }
    }

    /// The owner a file is presented with.
    fn owner(&self, metadata: &Metadata) -> (u32, u32) {
        if self.rootfs {
            (metadata.uid(), metadata.gid())
        } else {
            CONTEXT_OWNER
        }
    }

    /// Whether `rel` exists in the context as BuildKit's client sends it.
    fn visible(&self, rel: &str, meta: &Metadata) -> Result<bool> {
        let Some(ignore) = self.ignore() else {
            return Ok(true);
        };
        if rel == "." || !ignore.is_excluded(rel) {
            return Ok(true);
        }
        if !meta.is_dir() || !ignore.may_include_below(rel) {
            return Ok(false);
        }
        self.has_visible_below(rel)
    }

    fn has_visible_below(&self, dir: &str) -> Result<bool> {
        for name in read_sorted(&join_rel(self.root(), dir))? {
            let rel = join(dir, &name);
            let Some(meta) = lstat(&join_rel(self.root(), &rel))? else {
                continue;
            };
            if self.visible(&rel, &meta)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// fsutil's `resolveWildcards`: paths below `base` (relative to it)
    /// matching `pattern`, not descending into a match or past `limit`
    /// components.
    fn match_below(
        &self,
        base: &str,
        dir: &str,
        pattern: &str,
        limit: usize,
        out: &mut Vec<String>,
    ) -> Result<()> {
        let depth = if dir.is_empty() {
            1
        } else {
            dir.split('/').count() + 1
        };
        for name in read_sorted(&join_rel(self.root(), &join(base, dir)))? {
            let sub = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            let rel = join(base, &sub);
            let Some(meta) = lstat(&join_rel(self.root(), &rel))? else {
                continue;
            };
            let ignore = self.ignore();
            let excluded = ignore.is_some_and(|i| i.is_excluded(&rel));
            let descend_hidden =
                excluded && meta.is_dir() && ignore.is_some_and(|i| i.may_include_below(&rel));
            if excluded && !descend_hidden {
                continue;
            }
            if gomatch::matches(pattern, &sub).unwrap_or(false) {
                if !excluded || self.has_visible_below(&rel)? {
                    out.push(sub);
                }
                continue;
            }
            if meta.is_dir() && depth < limit {
                self.match_below(base, &sub, pattern, limit, out)?;
            }
        }
        Ok(())
    }
}

/// The entries below a selected directory; see [`Context::walk`].
pub struct Walk<'a> {
    context: &'a Context,
    excludes: Option<DockerIgnore>,
    stack: Vec<Level>,
    ready: VecDeque<Entry>,
}

struct Level {
    rel: String,
    sub: String,
    names: std::vec::IntoIter<String>,
    /// This directory, when it is hidden and shown only if something below
    /// it is.
    pending: Option<Entry>,
}

impl Iterator for Walk<'_> {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        loop {
            if let Some(entry) = self.ready.pop_front() {
                return Some(Ok(entry));
            }
            let level = self.stack.last_mut()?;
            let Some(name) = level.names.next() else {
                self.stack.pop();
                continue;
            };
            let rel = join(&level.rel, &name);
            let sub = if level.sub.is_empty() {
                name
            } else {
                format!("{}/{name}", level.sub)
            };
            match self.visit(rel, sub) {
                Ok(()) => {}
                Err(error) => {
                    self.stack.clear();
                    return Some(Err(error));
                }
            }
        }
    }
}

impl Walk<'_> {
    fn visit(&mut self, rel: String, sub: String) -> Result<()> {
        let abs = join_rel(self.context.root(), &rel);
        let Some(metadata) = lstat(&abs)? else {
            return Ok(());
        };
        let ignore = self.context.ignore();
        let ignored = ignore.is_some_and(|i| i.is_excluded(&rel));
        let excluded = self.excludes.as_ref().is_some_and(|x| x.is_excluded(&sub));
        let (uid, gid) = self.context.owner(&metadata);
        let is_dir = metadata.is_dir();
        let entry = Entry {
            rel,
            sub,
            abs,
            metadata,
            uid,
            gid,
        };
        if !ignored && !excluded {
            for level in &mut self.stack {
                if let Some(pending) = level.pending.take() {
                    self.ready.push_back(pending);
                }
            }
            if is_dir {
                self.stack.push(Level {
                    rel: entry.rel.clone(),
                    sub: entry.sub.clone(),
                    names: read_sorted(&entry.abs)?.into_iter(),
                    pending: None,
                });
            }
            self.ready.push_back(entry);
        } else if is_dir
            && (!ignored || ignore.is_some_and(|i| i.may_include_below(&entry.rel)))
            && (!excluded
                || self
                    .excludes
                    .as_ref()
                    .is_some_and(|x| x.may_include_below(&entry.sub)))
        {
            self.stack.push(Level {
                rel: entry.rel.clone(),
                sub: entry.sub.clone(),
                names: read_sorted(&entry.abs)?.into_iter(),
                pending: Some(entry),
            });
        }
        Ok(())
    }
}

/// `--exclude` patterns as a matcher (`None` when there are none).
fn parse_excludes(excludes: &[String]) -> Result<Option<DockerIgnore>> {
    if excludes.is_empty() {
        return Ok(None);
    }
    let mut text = String::new();
    for pattern in excludes {
        // One pattern per line; a leading '#' is a character here, not a
        // comment.
        if pattern.trim_start().starts_with('#') {
            text.push('\\');
        }
        text.push_str(&pattern.replace(['\n', '\r'], " "));
        text.push('\n');
    }
    DockerIgnore::parse(&text).map(Some).map_err(Error::Exclude)
}

enum Resolution {
    Found(String, Metadata),
    Missing,
    Loop,
}

/// continuity's `RootPath` for a cleaned relative path: every symlink on
/// the way is followed with the root as `/` (an absolute target starts
/// again from the root, `..` stops at it). `visible` decides which paths
/// exist (the `.dockerignore` view).
fn resolve_core(
    root: &Path,
    rel: &str,
    visible: &dyn Fn(&str, &Metadata) -> Result<bool>,
) -> Result<Resolution> {
    let mut done: Vec<String> = Vec::new();
    let mut todo: VecDeque<String> = rel
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_owned)
        .collect();
    let mut links = 0;
    while let Some(component) = todo.pop_front() {
        if component == "." || component.is_empty() {
            continue;
        }
        if component == ".." {
            done.pop();
            continue;
        }
        let candidate = if done.is_empty() {
            component.clone()
        } else {
            format!("{}/{component}", done.join("/"))
        };
        let Some(meta) = lstat(&root.join(&candidate))? else {
            return Ok(Resolution::Missing);
        };
        if meta.is_symlink() {
            if !visible(&candidate, &meta)? {
                return Ok(Resolution::Missing);
            }
            links += 1;
            if links > MAX_LINKS {
                return Ok(Resolution::Loop);
            }
            let target_path = fs::read_link(root.join(&candidate)).map_err(|source| Error::Io {
                path: root.join(&candidate),
                source,
            })?;
            let target = target_path.to_str().ok_or_else(|| Error::NonUtf8 {
                path: root.join(&candidate),
            })?;
            if target.starts_with('/') {
                done.clear();
            }
            for part in target.split('/').rev() {
                todo.push_front(part.to_owned());
            }
            continue;
        }
        if !todo.is_empty() && !meta.is_dir() {
            return Ok(Resolution::Missing);
        }
        done.push(component);
    }
    let resolved = if done.is_empty() {
        ".".to_owned()
    } else {
        done.join("/")
    };
    let Some(meta) = lstat(&join_rel(root, &resolved))? else {
        return Ok(Resolution::Missing);
    };
    if !visible(&resolved, &meta)? {
        return Ok(Resolution::Missing);
    }
    Ok(Resolution::Found(resolved, meta))
}

/// Resolve `rel` inside `root` following symlinks within it, with no
/// `.dockerignore` view (for the Dockerfile, as BuildKit's client follows
/// it): `None` when it is missing.
pub(super) fn resolve_in_root(root: &Path, rel: &str) -> Result<Option<String>> {
    Ok(match resolve_core(root, rel, &|_, _| Ok(true))? {
        Resolution::Found(resolved, _) => Some(resolved),
        Resolution::Missing | Resolution::Loop => None,
    })
}

fn lstat(path: &Path) -> Result<Option<Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(source) => Err(Error::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The names in a directory, sorted (byte order, as Go's `filepath.Walk`).
fn read_sorted(dir: &Path) -> Result<Vec<String>> {
    let io_error = |source| Error::Io {
        path: dir.to_owned(),
        source,
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error)? {
        let entry = entry.map_err(io_error)?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| Error::NonUtf8 { path: entry.path() })?;
        names.push(name);
    }
    names.sort_unstable();
    Ok(names)
}

/// `dir/name` for context-relative paths, `.` being the root.
fn join(dir: &str, name: &str) -> String {
    match (dir, name) {
        ("." | "", _) => name.to_owned(),
        (_, "." | "") => dir.to_owned(),
        _ => format!("{dir}/{name}"),
    }
}

/// fsutil's `containsWildcards`: `*`, `?` or `[` not escaped by `\`.
fn contains_wildcards(name: &str) -> bool {
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'*' | b'?' | b'[' => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

/// fsutil's `splitWildcards`: the components before the first one with a
/// wildcard, and the rest (empty when there is no wildcard).
fn split_wildcards(rel: &str) -> (String, String) {
    let parts: Vec<&str> = rel.split('/').collect();
    match parts.iter().position(|p| contains_wildcards(p)) {
        None => (rel.to_owned(), String::new()),
        Some(0) => (".".to_owned(), rel.to_owned()),
        Some(i) => (parts[..i].join("/"), parts[i..].join("/")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn splits_at_the_first_wildcard() {
        assert_eq!(split_wildcards("a/b/c"), ("a/b/c".into(), String::new()));
        assert_eq!(split_wildcards("*.go"), (".".into(), "*.go".into()));
        assert_eq!(
            split_wildcards("src/*/x.go"),
            ("src".into(), "*/x.go".into())
        );
        assert_eq!(
            split_wildcards("a\\*b/c"),
            ("a\\*b/c".into(), String::new())
        );
        assert_eq!(split_wildcards("a/[xy]/z"), ("a".into(), "[xy]/z".into()));
    }

    struct Tree(tempfile::TempDir);

    impl Tree {
        fn new() -> Self {
            let outer = tempfile::tempdir().unwrap();
            fs::create_dir(outer.path().join("ctx")).unwrap();
            fs::write(outer.path().join("secret"), "outside").unwrap();
            Self(outer)
        }

        fn root(&self) -> PathBuf {
            self.0.path().join("ctx")
        }

        fn file(&self, rel: &str, content: &str) -> &Self {
            let path = self.root().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
            self
        }

        fn link(&self, rel: &str, target: &str) -> &Self {
            let path = self.root().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            symlink(target, path).unwrap();
            self
        }

        fn context(&self, ignore: &str) -> Context {
            let ignore = (!ignore.is_empty()).then(|| DockerIgnore::parse(ignore).unwrap());
            Context::from_dir(&self.root(), ignore).unwrap()
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn select(context: &Context, sources: &[&str], excludes: &[&str]) -> Result<Vec<String>> {
        Ok(context
            .select(&strings(sources), &strings(excludes))?
            .into_iter()
            .map(|s| {
                if s.rel == s.resolved {
                    format!("{}:{}", s.pattern_index, s.rel)
                } else {
                    format!("{}:{}->{}", s.pattern_index, s.rel, s.resolved)
                }
            })
            .collect())
    }

    fn walk(context: &Context, source: &str, excludes: &[&str]) -> Vec<String> {
        let selected = context.select(&strings(&[source]), &[]).unwrap();
        context
            .walk(&selected[0], &strings(excludes))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                if e.metadata.is_dir() {
                    format!("{}/", e.sub)
                } else {
                    e.sub
                }
            })
            .collect()
    }

    fn sample() -> Tree {
        let tree = Tree::new();
        tree.file("a.txt", "a")
            .file("b.txt", "b")
            .file("c.md", "c")
            .file("src/main.go", "package main")
            .file("src/util/util.go", "package util")
            .file("src/util/util_test.go", "package util")
            .file("src/README.md", "readme")
            .file("docs/x.md", "x")
            .file("weird[1].txt", "w")
            .file("star*.txt", "s")
            .link("link-to-src", "src")
            .link("src/up", "../a.txt")
            .link("abs", "/etc/passwd")
            .link("escape", "../secret")
            .link("deep/escape", "../../secret")
            .link("dangling", "nope")
            .link("loop1", "loop2")
            .link("loop2", "loop1");
        tree
    }

    #[test]
    fn selects_literal_paths() {
        let tree = sample();
        let context = tree.context("");
        assert_eq!(select(&context, &["a.txt"], &[]).unwrap(), ["0:a.txt"]);
        assert_eq!(
            select(&context, &["./src/../a.txt"], &[]).unwrap(),
            ["0:a.txt"]
        );
        assert_eq!(
            select(&context, &["/src/main.go"], &[]).unwrap(),
            ["0:src/main.go"]
        );
        assert_eq!(select(&context, &["."], &[]).unwrap(), ["0:."]);
        assert_eq!(select(&context, &["/"], &[]).unwrap(), ["0:."]);
        assert_eq!(select(&context, &["src/"], &[]).unwrap(), ["0:src"]);
        assert_eq!(
            select(&context, &["b.txt", "a.txt"], &[]).unwrap(),
            ["0:b.txt", "1:a.txt"]
        );
        // Symlinks on the way are followed inside the context.
        assert_eq!(
            select(&context, &["link-to-src"], &[]).unwrap(),
            ["0:link-to-src->src"]
        );
        assert_eq!(
            select(&context, &["link-to-src/util/util.go"], &[]).unwrap(),
            ["0:link-to-src/util/util.go->src/util/util.go"]
        );
        assert_eq!(
            select(&context, &["src/up"], &[]).unwrap(),
            ["0:src/up->a.txt"]
        );
        // BuildKit takes a path without wildcards literally, backslash and all.
        assert_eq!(
            select(&context, &["star*.txt"], &[]).unwrap(),
            ["0:star*.txt"]
        );
        assert!(matches!(
            context.select(&strings(&["star\\*.txt"]), &[]),
            Err(Error::NotFound { .. })
        ));
    }

    #[test]
    fn selects_wildcards() {
        let tree = sample();
        let context = tree.context("");
        assert_eq!(
            select(&context, &["*.txt"], &[]).unwrap(),
            ["0:a.txt", "0:b.txt", "0:star*.txt", "0:weird[1].txt"]
        );
        assert_eq!(select(&context, &["?.md"], &[]).unwrap(), ["0:c.md"]);
        assert_eq!(
            select(&context, &["[ab].txt"], &[]).unwrap(),
            ["0:a.txt", "0:b.txt"]
        );
        assert_eq!(
            select(&context, &["weird[[]1].txt"], &[]).unwrap(),
            ["0:weird[1].txt"]
        );
        assert_eq!(
            select(&context, &["star\\*.t?t"], &[]).unwrap(),
            ["0:star*.txt"]
        );
        assert_eq!(
            select(&context, &["src/*/*.go"], &[]).unwrap(),
            ["0:src/util/util.go", "0:src/util/util_test.go"]
        );
        // A matching directory is selected whole, not descended into.
        assert_eq!(
            select(&context, &["s*"], &[]).unwrap(),
            ["0:src", "0:star*.txt"]
        );
        // The literal prefix follows symlinks; a matched link is followed.
        assert_eq!(
            select(&context, &["link-to-src/*.go"], &[]).unwrap(),
            ["0:link-to-src/main.go->src/main.go"]
        );
        assert_eq!(
            select(&context, &["src/u?"], &[]).unwrap(),
            ["0:src/up->a.txt"]
        );
        // A wildcard that matches nothing is fine next to one that does.
        assert_eq!(
            select(&context, &["*.nothing", "c.md"], &[]).unwrap(),
            ["1:c.md"]
        );
    }

    #[test]
    fn excludes_apply_to_matches_and_below() {
        let tree = sample();
        let context = tree.context("");
        assert_eq!(
            select(&context, &["*.txt"], &["a*", "weird*"]).unwrap(),
            ["0:b.txt", "0:star*.txt"]
        );
        assert_eq!(
            walk(&context, "src", &[]),
            [
                "README.md",
                "main.go",
                "up",
                "util/",
                "util/util.go",
                "util/util_test.go"
            ]
        );
        let selected = context.select(&strings(&["src"]), &[]).unwrap();
        let names: Vec<String> = context
            .walk(&selected[0], &strings(&["*.md", "**/*_test.go"]))
            .unwrap()
            .map(|e| e.unwrap().sub)
            .collect();
        assert_eq!(names, ["main.go", "up", "util", "util/util.go"]);
        // An excluded directory appears only with something re-included in it.
        let names: Vec<String> = context
            .walk(&selected[0], &strings(&["util", "!util/util.go"]))
            .unwrap()
            .map(|e| e.unwrap().sub)
            .collect();
        assert_eq!(
            names,
            ["README.md", "main.go", "up", "util", "util/util.go"]
        );
        let err = context
            .select(&strings(&["a.txt"]), &strings(&["["]))
            .unwrap_err();
        assert!(
            err.to_string().starts_with("invalid --exclude pattern"),
            "{err}"
        );
    }

    #[test]
    fn dockerignore_hides_files_from_selection_and_walks() {
        let tree = sample();
        let context = tree.context("*.md\nsrc/util\n!src/util/util.go\ndocs\nlink-to-src\n");
        assert!(matches!(
            context.select(&strings(&["c.md"]), &[]),
            Err(Error::NotFound { .. })
        ));
        assert_eq!(
            select(&context, &["*.*"], &[]).unwrap(),
            ["0:a.txt", "0:b.txt", "0:star*.txt", "0:weird[1].txt"]
        );
        assert!(matches!(
            context.select(&strings(&["do*"]), &[]),
            Err(Error::NoSourceFiles { .. })
        ));
        // The excluded directory holding a re-included file is there.
        assert_eq!(
            select(&context, &["src/util"], &[]).unwrap(),
            ["0:src/util"]
        );
        assert_eq!(
            select(&context, &["src/u*"], &[]).unwrap(),
            ["0:src/up->a.txt", "0:src/util"]
        );
        assert_eq!(
            walk(&context, "src", &[]),
            // `*.md` is for the root only: src/README.md stays.
            ["README.md", "main.go", "up", "util/", "util/util.go"]
        );
        // A symlink that is ignored does not lead anywhere.
        assert!(matches!(
            context.select(&strings(&["link-to-src/main.go"]), &[]),
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            context.select(&strings(&["docs"]), &[]),
            Err(Error::NotFound { .. })
        ));
    }

    #[test]
    fn sources_may_not_leave_the_context() {
        let tree = sample();
        let context = tree.context("");
        for pattern in ["../secret", "src/../../secret", "..", "../*"] {
            let err = context.select(&strings(&[pattern]), &[]).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("forbidden path outside the build context: {pattern}")
            );
        }
        let err = context.select(&strings(&["loop1"]), &[]).unwrap_err();
        assert!(matches!(err, Error::SymlinkLoop { .. }), "{err}");
    }

    /// BuildKit follows a source's links with the context as `/`: an
    /// absolute target is read from the context's root, and `..` stops
    /// there; what the link names in the context is what is copied, never
    /// a file of the host.
    #[test]
    fn links_out_of_the_context_resolve_inside_it() {
        let tree = sample();
        tree.file("secret", "inside")
            .file("etc/passwd", "the context's")
            .file("sub/s", "s")
            .link("abslink", "/sub")
            .link("via/abs", "/sub/s");
        let context = tree.context("");
        assert_eq!(
            select(&context, &["abs", "escape", "deep/escape"], &[]).unwrap(),
            [
                "0:abs->etc/passwd",
                "1:escape->secret",
                "2:deep/escape->secret"
            ]
        );
        assert_eq!(
            select(&context, &["esc*", "abslink/", "via/abs"], &[]).unwrap(),
            ["0:escape->secret", "1:abslink->sub", "2:via/abs->sub/s"]
        );
        let selected = context.select(&strings(&["escape"]), &[]).unwrap();
        assert_eq!(fs::read_to_string(&selected[0].abs).unwrap(), "inside");
        // Inside a selected directory, links are entries, not followed.
        assert!(walk(&context, "deep", &[]).contains(&"escape".to_owned()));
        // Where the link's target is missing from the context, so is the
        // source (the host's file of that name does not count).
        let bare = Tree::new();
        bare.link("escape", "../secret").link("abs", "/etc/passwd");
        let context = bare.context("");
        for pattern in ["escape", "abs"] {
            assert!(
                matches!(
                    context.select(&strings(&[pattern]), &[]),
                    Err(Error::NotFound { .. })
                ),
                "{pattern}"
            );
        }
    }

    #[test]
    fn root_file_systems_resolve_links_inside_like_docker() {
        let tree = Tree::new();
        tree.file("usr/bin/python3", "python")
            .file("etc/alternatives/placeholder", "")
            .link("etc/alternatives/python", "/usr/bin/python3")
            .link("usr/bin/python", "/etc/alternatives/python")
            .link("bin", "usr/bin")
            .link("up", "../../../usr/bin");
        let rootfs = Context::from_rootfs(&tree.root()).unwrap();
        assert_eq!(
            select(&rootfs, &["/bin/python"], &[]).unwrap(),
            ["0:bin/python->usr/bin/python3"]
        );
        // `..` stops at the root, as in the image.
        assert_eq!(
            select(&rootfs, &["../usr/bin/python3"], &[]).unwrap(),
            ["0:usr/bin/python3"]
        );
        assert_eq!(
            select(&rootfs, &["up/python3"], &[]).unwrap(),
            ["0:up/python3->usr/bin/python3"]
        );
        // Files keep their owners (not root: chown works as root, and the
        // files are the test user's otherwise).
        let _ = std::os::unix::fs::lchown(tree.root().join("usr"), Some(1234), Some(4321));
        let selected = rootfs.select(&strings(&["usr"]), &[]).unwrap();
        assert_ne!(selected[0].metadata.uid(), 0);
        assert_eq!(
            (selected[0].uid, selected[0].gid),
            (selected[0].metadata.uid(), selected[0].metadata.gid())
        );
        // The same tree as a build context resolves those links alike, but
        // refuses `..` in a source and presents files as root's.
        let context = tree.context("");
        assert_eq!(
            select(&context, &["/bin/python"], &[]).unwrap(),
            ["0:bin/python->usr/bin/python3"]
        );
        assert!(matches!(
            context.select(&strings(&["../usr/bin/python3"]), &[]),
            Err(Error::OutsideContext { .. })
        ));
        assert_eq!(context.select(&strings(&["usr"]), &[]).unwrap()[0].uid, 0);
    }

    #[test]
    fn missing_sources_are_errors_naming_them() {
        let tree = sample();
        let context = tree.context("");
        let err = context.select(&strings(&["nope.txt"]), &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "file not found in build context or excluded by .dockerignore: stat nope.txt: file does not exist"
        );
        let err = context.select(&strings(&["dangling"]), &[]).unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
        let err = context
            .select(&strings(&["*.nothing", "nodir/*"]), &[])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "no source files were specified: \"*.nothing\", \"nodir/*\" matched no file in the build context"
        );
        let err = context
            .select(&strings(&["*.txt"]), &strings(&["*"]))
            .unwrap_err();
        assert!(matches!(err, Error::NoSourceFiles { .. }), "{err}");
        let err = context.select(&strings(&["a[.txt"]), &[]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid source pattern \"a[.txt\""),
            "{err}"
        );
    }
}
