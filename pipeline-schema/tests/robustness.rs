//! No input makes loading panic: every prefix of the test pipelines, and
//! pipelines with characters swapped for YAML's syntax characters, load to
//! a pipeline or to errors.

use std::fmt::Write as _;
use std::path::Path;

use pipeline_schema::Pipeline;

fn texts() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut out = Vec::new();
    for dir in ["valid", "broken"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("the test data is listed") {
            let path = entry.expect("the test data is listed").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path).expect("the test data is read");
                out.push((path.display().to_string(), text));
            }
        }
    }
    out
}

/// Loads and renders, which must not panic; errors must have text.
fn load(name: &str, text: &str) {
    if let Err(errors) = Pipeline::parse(name, text) {
        assert!(!errors.is_empty());
        for e in &errors {
            assert!(!e.to_string().is_empty());
        }
    }
}

#[test]
fn every_prefix_loads_or_fails_cleanly() {
    for (name, text) in texts() {
        for (i, _) in text.char_indices() {
            load(&name, &text[..i]);
        }
    }
}

#[test]
fn syntax_characters_in_odd_places_load_or_fail_cleanly() {
    const SYNTAX: &[char] = &[
        '[', ']', '{', '}', ':', '-', '&', '*', '!', '|', '>', '\'', '"', '%', '@', '`', '#', '\t',
        '\n', '$', '(', ')', '/',
    ];
    // A fixed linear congruential sequence: the same cases every run.
    let mut seed: u64 = 0x5eed;
    let mut next = |n: usize| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        usize::try_from(seed >> 33).unwrap_or(0) % n.max(1)
    };
    for (name, text) in texts() {
        let chars: Vec<char> = text.chars().collect();
        for _ in 0..300 {
            let mut mutated = chars.clone();
            for _ in 0..=next(3) {
                let at = next(mutated.len());
                let c = SYNTAX[next(SYNTAX.len())];
                if !mutated.is_empty() {
                    mutated[at] = c;
                }
            }
            let mutated: String = mutated.into_iter().collect();
            load(&name, &mutated);
        }
    }
}

#[test]
fn deep_nesting_and_alias_bombs_are_errors() {
    // Flow collections hit the parser's own limit, block ones ours.
    let flow = format!(
        "version: 1\njobs: {}{}\n",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let errors = Pipeline::parse("flow.yaml", &flow).unwrap_err();
    assert!(
        errors.to_string().contains("recursion limit exceeded"),
        "{errors}"
    );
    let mut block = String::from("version: 1\n");
    for depth in 0..300 {
        let _ = writeln!(block, "{}k:", " ".repeat(depth));
    }
    let errors = Pipeline::parse("block.yaml", &block).unwrap_err();
    assert!(
        errors.to_string().contains("nest deeper than 128"),
        "{errors}"
    );

    let mut bomb = String::from("version: 1\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..9 {
        let p = i - 1;
        let refs = vec![format!("*a{p}"); 10].join(", ");
        let _ = writeln!(bomb, "a{i}: &a{i} [{refs}]");
    }
    let errors = Pipeline::parse("bomb.yaml", &bomb).unwrap_err();
    assert!(
        errors.to_string().contains("aliases expand to more than"),
        "{errors}"
    );

    let expr = format!(
        "version: 1\njobs:\n  a:\n    script: [a]\n    rules:\n      - if: '{}$A{}'\n",
        "(".repeat(100_000),
        ")".repeat(100_000)
    );
    let errors = Pipeline::parse("expr.yaml", &expr).unwrap_err();
    assert!(
        errors.to_string().contains("nested deeper than"),
        "{errors}"
    );
}

/// The first error's text, for a pipeline that must fail.
fn first_error(result: Result<Pipeline, pipeline_schema::Errors>) -> String {
    let errors = result.expect_err("the pipeline is refused");
    errors.into_iter().next().expect("an error").to_string()
}

/// A pipeline of `count` jobs, each `body` (indented under the job).
fn jobs(count: usize, body: &str) -> String {
    let mut text = String::from("version: 1\njobs:\n");
    for i in 0..count {
        let _ = writeln!(text, "  job-{i}:\n{body}");
    }
    text
}

/// Huge files and job counts are refused up front (a 16 MB pipeline of
/// 300,000 jobs took minutes and half a gigabyte), naming the file.
#[test]
fn oversized_pipelines_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // One huge scalar.
    let big = dir.path().join("big.yaml");
    let mut text = String::from("version: 1\nvariables:\n  X: ");
    text.push_str(&"x".repeat(2 << 20));
    text.push_str("\njobs:\n  a:\n    image: alpine\n    script: [true]\n");
    std::fs::write(&big, &text).unwrap();
    let message = first_error(Pipeline::load(&big));
    assert!(
        message.contains(&format!("{} is too large", big.display())),
        "{message}"
    );
    assert!(message.contains("1048576 bytes"), "{message}");

    // Included files count: two of 600 KiB each are too much together.
    let main = dir.path().join("main.yaml");
    let filler = |name: &str| format!("variables:\n  {name}: {}\n", "y".repeat(600 << 10));
    std::fs::write(dir.path().join("one.yaml"), filler("ONE")).unwrap();
    std::fs::write(dir.path().join("two.yaml"), filler("TWO")).unwrap();
    std::fs::write(
        &main,
        "version: 1\ninclude: [one.yaml, two.yaml]\njobs:\n  a:\n    image: alpine\n    script: [true]\n",
    )
    .unwrap();
    let message = first_error(Pipeline::load(&main));
    assert!(
        message.contains(&format!(
            "{} is too large",
            dir.path().join("two.yaml").display()
        )),
        "{message}"
    );

    // Too many jobs, written out or by matrices.
    let body = "    image: alpine\n    script: [true]";
    let message = first_error(Pipeline::parse("many.yaml", &jobs(1001, body)));
    assert!(
        message.contains("has 1001 jobs, more than 1000"),
        "{message}"
    );
    let values: Vec<String> = (0..150).map(|i| i.to_string()).collect();
    let matrix = format!(
        "{body}\n    parallel:\n      matrix:\n        - V: [{}]",
        values.join(", ")
    );
    let message = first_error(Pipeline::parse("matrix.yaml", &jobs(7, &matrix)));
    assert!(
        message.contains("has 1050 jobs, more than 1000"),
        "{message}"
    );
    // At the limits, fine.
    assert!(Pipeline::parse("fine.yaml", &jobs(1000, body)).is_ok());
}
