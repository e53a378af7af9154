//! Fuzzes `tar://` build contexts: the input is the archive (plain tar or
//! gzip) given as `tar://FILE`, extracted by `Context::prepare` into a
//! scratch directory, then, when it holds a Dockerfile, selected and walked
//! as `COPY . .` and `COPY * /` do (symlinks resolved inside the context,
//! `.dockerignore` applied). Nothing may panic or hang, nothing outside the
//! scratch directory may change (a canary tree sits next to it), and the
//! scratch directory is empty again once the context is dropped.
#![no_main]

use std::fs;

use libfuzzer_sys::fuzz_target;

use executor::context::{Context, ContextSource, PrepareOptions};
use executor_fuzz::Sandbox;

fuzz_target!(|data: &[u8]| {
    let sandbox = Sandbox::new();
    let archive = sandbox.inside.join("context.tar");
    fs::write(&archive, data).expect("archive file");
    let scratch = sandbox.inside.join("scratch");
    fs::create_dir(&scratch).expect("scratch directory");
    let options = PrepareOptions {
        scratch_dir: Some(scratch.clone()),
        ..PrepareOptions::default()
    };
    let source = ContextSource::Tar(archive);
    if let Ok(context) = Context::prepare(&source, &options) {
        for sources in [vec![".".to_string()], vec!["*".to_string()]] {
            let Ok(selected) = context.select(&sources, &["*.tmp".to_string()]) else {
                continue;
            };
            for one in &selected {
                let Ok(walk) = context.walk(one, &[]) else {
                    continue;
                };
                for entry in walk {
                    if entry.is_err() {
                        break;
                    }
                }
            }
        }
        sandbox.assert_confined("the tar:// context");
    }
    sandbox.assert_confined("extracting the tar:// context");
    sandbox.unlock();
    let left = fs::read_dir(&scratch).expect("scratch directory").count();
    assert_eq!(left, 0, "the context left files in its scratch directory");
});
