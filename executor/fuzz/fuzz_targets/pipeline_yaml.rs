//! Fuzzes `pipeline.yaml` loading: the input is the pipeline file's text,
//! loaded and validated as `executor validate` and `executor run` do
//! (includes read relative to it, from a directory holding only two small
//! files to include), its errors rendered, and a valid pipeline's job order,
//! rules and triggers evaluated. Nothing may panic or hang, whatever the
//! anchors, merge keys, matrices or expressions.
#![no_main]

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

use pipeline_schema::{Event, EventKind, Pipeline};

/// Where the pipeline file is: `$TMPDIR/executor-fuzz-pipeline/`, made on
/// first use with the files it may include, the same for every process (a
/// temporary directory of each process's own would stay behind: statics
/// are never dropped).
fn pipeline_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join("executor-fuzz-pipeline");
        fs::create_dir_all(dir.join("ci")).expect("include directory");
        for (name, text) in [
            (
                "ci/jobs.yaml",
                "jobs:\n  lint:\n    image: alpine\n    script: [\"true\"]\n",
            ),
            (
                "ci/vars.yaml",
                "variables:\n  A: a\n.base: &base\n  image: alpine\n",
            ),
        ] {
            let path = dir.join(name);
            if fs::read_to_string(&path).ok().as_deref() != Some(text) {
                fs::write(&path, text).expect("include file");
            }
        }
        dir.join("pipeline.yaml")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Pipeline::parse(pipeline_path(), text) {
        Ok(pipeline) => {
            let vars: BTreeMap<String, String> = pipeline.variables().clone();
            let changed = ["src/main.rs".to_string(), "docs/x.md".to_string()];
            let changed: &[String] = &changed;
            for job in pipeline.topological_order() {
                let _ = job.decide(&vars, Some(changed));
                let _ = job.decide(&vars, None);
                let _ = job.image_variable();
            }
            for kind in [EventKind::Push, EventKind::Tag, EventKind::PullRequest] {
                let event = Event {
                    kind,
                    git_ref: Some("main"),
                    changed_paths: Some(changed),
                };
                let _ = pipeline.triggers().matches(&event);
            }
        }
        Err(errors) => {
            let _ = errors.to_string();
            let _ = errors.summary();
        }
    }
});
