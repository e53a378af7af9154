//! The invariants of ARCHITECTURE.md that reading the source can check:
//! which modules may import which, where `unsafe` may appear, and that the
//! library crates deny printing. Test code (`tests.rs`, `tests/`
//! directories and everything after a top-level `#[cfg(test)]`) is left out:
//! tests may reach across layers to build their fixtures.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// Every non-test source file below `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if name != "tests" {
                    pending.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") && name != "tests.rs" {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// A file's code: comments removed, and nothing from its first top-level
/// `#[cfg(test)]` on.
fn code(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        let line = line.split("//").next().unwrap_or_default();
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The paths a file names below `crate::`, as their first two segments
/// (`build::Settings`, `rootfs::remote`); `crate::{a::b, c}` groups are
/// opened.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let compact: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    let mut paths = BTreeSet::new();
    let mut rest = compact.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        collect(rest, "", &mut paths);
    }
    paths
}

/// Adds the paths that start at `text` (after `prefix::`) to `paths`.
fn collect(text: &str, prefix: &str, paths: &mut BTreeSet<String>) {
    if let Some(group) = text.strip_prefix('{') {
        // Split the group's top-level items.
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    collect(&group[start..i], prefix, paths);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    collect(&group[start..i], prefix, paths);
                    start = i + 1;
                }
                _ => {}
            }
        }
        return;
    }
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':' || c == '{'))
        .unwrap_or(text.len());
    let item = &text[..end];
    let (head, tail) = match item.split_once("::") {
        Some((head, tail)) => (head, tail),
        None => (item, ""),
    };
    if head.is_empty() {
        return;
    }
    if prefix.is_empty() {
        if tail.starts_with('{') {
            collect(&text[head.len() + 2..], head, paths);
        } else {
            let second = tail.split("::").next().unwrap_or_default();
            paths.insert(if second.is_empty() {
                head.to_owned()
            } else {
                format!("{head}::{second}")
            });
        }
    } else {
        paths.insert(format!("{prefix}::{head}"));
    }
}

/// Every `crate::` path a module's non-test code names, with the file.
fn imports_of(module: &str) -> Vec<(PathBuf, String)> {
    let dir = Path::new(SRC).join(module);
    let files = if dir.is_dir() {
        sources(&dir)
    } else {
        vec![Path::new(SRC).join(format!("{module}.rs"))]
    };
    let mut found = Vec::new();
    for file in files {
        for path in crate_paths(&code(&file)) {
            found.push((file.clone(), path));
        }
    }
    found
}

fn assert_never_imports(module: &str, forbidden: &[&str]) {
    let bad: Vec<String> = imports_of(module)
        .into_iter()
        .filter(|(_, path)| {
            let head = path.split("::").next().unwrap_or_default();
            forbidden.contains(&head)
        })
        .map(|(file, path)| format!("{}: crate::{path}", file.display()))
        .collect();
    assert!(
        bad.is_empty(),
        "`{module}` must not import {forbidden:?} (ARCHITECTURE.md, Invariants):\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_parser_extracts_crate_paths_from_groups_and_paths() {
    let paths = crate_paths(
        "use crate::{build::{Settings, CacheRepo}, image::store};\n\
         let x = crate::rootfs::remote::Remote::new();\nuse crate::platform;",
    );
    let expected: BTreeSet<String> = [
        "build::Settings",
        "build::CacheRepo",
        "image::store",
        "rootfs::remote",
        "platform",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(paths, expected);
}

#[test]
fn lower_layers_never_import_higher_ones() {
    let above_rootfs = ["build", "rootfs", "pipeline", "server"];
    for module in ["dockerfile", "context", "registry", "image", "sandbox"] {
        assert_never_imports(module, &above_rootfs);
    }
    assert_never_imports("rootfs", &["build", "pipeline", "server"]);
    assert_never_imports("build", &["pipeline", "server"]);
    assert_never_imports("pipeline", &["server"]);
    assert_never_imports("server", &["build", "rootfs"]);
}

#[test]
fn pipelines_use_only_the_builds_settings() {
    // What a build job hands the `executor build` child: the typed
    // settings and the types they hold; never the engine.
    let allowed = [
        "build::settings",
        "build::Settings",
        "build::CacheRepo",
        "build::CacheSettings",
        "build::Secret",
        "build::SecretSource",
        "build::SshAgent",
        "build::SnapshotMode",
        "build::IsolationMode",
        "build::SecurityOptions",
        "build::SeccompOption",
    ];
    let bad: Vec<String> = imports_of("pipeline")
        .into_iter()
        .filter(|(_, path)| path.starts_with("build") && !allowed.contains(&path.as_str()))
        .map(|(file, path)| format!("{}: crate::{path}", file.display()))
        .collect();
    assert!(
        bad.is_empty(),
        "pipeline reaches into the build engine:\n{}",
        bad.join("\n")
    );
}

#[test]
fn unsafe_code_lives_in_the_sandbox_only() {
    let sandbox = Path::new(SRC).join("sandbox");
    let bad: Vec<String> = sources(Path::new(SRC))
        .into_iter()
        .filter(|file| !file.starts_with(&sandbox))
        .filter(|file| {
            let code = code(file);
            code.contains("unsafe {") || code.contains("unsafe fn") || code.contains("unsafe impl")
        })
        .map(|file| file.display().to_string())
        .collect();
    assert!(bad.is_empty(), "unsafe outside sandbox/: {bad:?}");
}

#[test]
fn the_library_crates_deny_printing() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for lib in [
        "executor/src/lib.rs",
        "cache/src/lib.rs",
        "pipeline-schema/src/lib.rs",
    ] {
        let text = fs::read_to_string(root.join(lib)).unwrap();
        for lint in ["clippy::print_stdout", "clippy::print_stderr"] {
            assert!(text.contains(lint), "{lib} does not deny {lint}");
        }
    }
}
