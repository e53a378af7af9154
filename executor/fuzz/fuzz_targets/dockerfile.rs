//! Fuzzes the whole Dockerfile frontend: parse, type, plan and expand (what
//! `executor dockerfile check` does), with the input's first line also used
//! as a `--build-arg` and a `--target`, plus word expansion of the input as
//! a single word and as words. Nothing may panic or hang.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;

use executor::dockerfile::plan::Options;
use executor::dockerfile::shell::Lex;
use executor::dockerfile::{check, dockerignore};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let first = text.lines().next().unwrap_or_default();

    let mut opts = Options::default();
    if let Some((k, v)) = first.split_once('=') {
        opts.build_args.insert(k.to_string(), v.to_string());
    }
    let _ = check::check(&text, &opts);
    opts.target = Some(first.chars().take(32).collect());
    let _ = check::check(&text, &opts);

    let env: BTreeMap<String, String> = [("A", "a b"), ("PWD", "/home"), ("E", "")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for escape in ['\\', '`'] {
        let lex = Lex::new(escape);
        let _ = lex.process_word(&text, &env);
        let _ = lex.process_words(&text, &env);
    }

    if let Ok(ignore) = dockerignore::DockerIgnore::parse(&text) {
        for line in text.lines().take(8) {
            let _ = ignore.is_excluded(line);
            let _ = ignore.may_include_below(line);
        }
    }
});
