//! BuildKit's own Dockerfile test data, run against our frontend.
//!
//! Reads `$EXECUTOR_CONFORMANCE_DIR`, or `../shared/conformance/buildkit-dockerfile`
//! next to the project root. Every case found runs: parser dumps byte for
//! byte, negative cases, the line-number case, every `A`/`U` row of
//! `envVarTest` and every row of `wordsTest`. The folder missing is a
//! failure, never a skip. Ends with `conformance: N passed, M failed`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use executor::dockerfile::parser;
use executor::dockerfile::shell::Lex;

#[derive(Default)]
struct Tally {
    passed: usize,
    failed: Vec<String>,
}

impl Tally {
    fn check(&mut self, name: String, result: Result<(), String>) {
        match result {
            Ok(()) => self.passed += 1,
            Err(why) => {
                eprintln!("FAIL {name}\n{why}\n");
                self.failed.push(name);
            }
        }
    }
}

fn data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("EXECUTOR_CONFORMANCE_DIR") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/buildkit-dockerfile")
}

fn read_text(path: &Path) -> Result<String, String> {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Sorted sub-directories of `dir`.
fn case_dirs(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    Ok(dirs)
}

fn parser_cases(root: &Path, tally: &mut Tally) -> Result<(), String> {
    let dir = root.join("parser/testfiles");
    for case in case_dirs(&dir)? {
        let name = format!(
            "parser/{}",
            case.file_name().unwrap_or_default().to_string_lossy()
        );
        let result = (|| {
            let text = read_text(&case.join("Dockerfile"))?;
            let expected = read_text(&case.join("result"))?;
            let parsed = parser::parse(&text)
                .map_err(|e| format!("parse error: {}", e.render("Dockerfile")))?;
            let got = parsed.dump();
            if got == expected {
                Ok(())
            } else {
                Err(format!("--- expected\n{expected}--- got\n{got}"))
            }
        })();
        tally.check(name, result);
    }
    Ok(())
}

fn negative_cases(root: &Path, tally: &mut Tally) -> Result<(), String> {
    let dir = root.join("parser/testfiles-negative");
    for case in case_dirs(&dir)? {
        let name = format!(
            "negative/{}",
            case.file_name().unwrap_or_default().to_string_lossy()
        );
        let result = read_text(&case.join("Dockerfile")).and_then(|text| {
            match std::panic::catch_unwind(|| parser::parse(&text)) {
                Ok(Err(_)) => Ok(()),
                Ok(Ok(p)) => Err(format!("parsed without error:\n{}", p.dump())),
                Err(_) => Err("panicked".to_string()),
            }
        });
        tally.check(name, result);
    }
    Ok(())
}

fn line_case(root: &Path, tally: &mut Tally) {
    let result = (|| {
        let text = read_text(&root.join("parser/testfile-line/Dockerfile"))?;
        let parsed = parser::parse(&text).map_err(|e| e.to_string())?;
        let spans: Vec<(usize, usize)> = parsed
            .nodes
            .iter()
            .map(|n| (n.start.line, n.end_line))
            .collect();
        let expected = vec![(5, 5), (11, 12), (17, 31)];
        if spans != expected {
            return Err(format!("expected spans {expected:?}, got {spans:?}"));
        }
        let whole = (spans.first().map(|s| s.0), spans.last().map(|s| s.1));
        if whole != (Some(5), Some(31)) {
            return Err(format!("expected the file to span 5-31, got {whole:?}"));
        }
        Ok(())
    })();
    tally.check("parser/testfile-line".to_string(), result);
}

fn env_var_cases(root: &Path, tally: &mut Tally) -> Result<(), String> {
    let path = root.join("shell/envVarTest");
    let text = read_text(&path)?;
    let env: BTreeMap<String, String> = [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let lex = Lex::new('\\');
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let name = format!("envVarTest:{}", n + 1);
        let fields: Vec<&str> = line.splitn(3, '|').map(str::trim).collect();
        let [platform, input, expected] = fields[..] else {
            tally.check(name, Err(format!("malformed row {line:?}")));
            continue;
        };
        if platform != "A" && platform != "U" {
            continue;
        }
        let got = std::panic::catch_unwind(|| lex.process_word(input, &env));
        let result = match (got, expected) {
            (Err(_), _) => Err(format!("{input:?} panicked")),
            (Ok(Err(_)), "error") => Ok(()),
            (Ok(Ok(word)), "error") => {
                Err(format!("{input:?} expanded to {word:?}, expected an error"))
            }
            (Ok(Err(e)), _) => Err(format!(
                "{input:?} failed ({}), expected {expected:?}",
                e.message
            )),
            (Ok(Ok(word)), _) if word == expected => Ok(()),
            (Ok(Ok(word)), _) => Err(format!(
                "{input:?} expanded to {word:?}, expected {expected:?}"
            )),
        };
        tally.check(name, result);
    }
    Ok(())
}

fn words_cases(root: &Path, tally: &mut Tally) -> Result<(), String> {
    let path = root.join("shell/wordsTest");
    let text = read_text(&path)?;
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let lex = Lex::new('\\');
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(assignment) = line.strip_prefix("ENV ") {
            if let Some((k, v)) = assignment.split_once('=') {
                env.insert(k.to_string(), v.to_string());
            }
            continue;
        }
        let name = format!("wordsTest:{}", n + 1);
        let Some((input, expected)) = line.split_once('|') else {
            tally.check(name, Err(format!("malformed row {line:?}")));
            continue;
        };
        let input = input.trim();
        let expected: Vec<String> = expected
            .trim_start_matches(' ')
            .split(',')
            .map(str::to_string)
            .collect();
        let got = std::panic::catch_unwind(|| lex.process_words(input, &env));
        let got = match got {
            Err(_) => {
                tally.check(name, Err(format!("{input:?} panicked")));
                continue;
            }
            Ok(Ok(words)) => words,
            Ok(Err(_)) => vec!["error".to_string()],
        };
        let result = if got == expected {
            Ok(())
        } else {
            Err(format!("{input:?} gave {got:?}, expected {expected:?}"))
        };
        tally.check(name, result);
    }
    Ok(())
}

fn main() -> ExitCode {
    let root = data_dir();
    let mut tally = Tally::default();
    if root.is_dir() {
        let groups: [(&str, Result<(), String>); 4] = [
            ("parser/testfiles", parser_cases(&root, &mut tally)),
            (
                "parser/testfiles-negative",
                negative_cases(&root, &mut tally),
            ),
            ("shell/envVarTest", env_var_cases(&root, &mut tally)),
            ("shell/wordsTest", words_cases(&root, &mut tally)),
        ];
        for (group, result) in groups {
            if let Err(e) = result {
                eprintln!("FAIL {group}: {e}");
                tally.failed.push(group.to_string());
            }
        }
        line_case(&root, &mut tally);
    } else {
        eprintln!(
            "conformance data not found at {}\nhint: set EXECUTOR_CONFORMANCE_DIR or lay out ../shared next to the project root",
            root.display()
        );
        tally.failed.push("data folder".to_string());
    }
    if !tally.failed.is_empty() {
        eprintln!("failed cases:");
        for name in &tally.failed {
            eprintln!("  {name}");
        }
    }
    println!(
        "conformance: {} passed, {} failed",
        tally.passed,
        tally.failed.len()
    );
    if tally.failed.is_empty() && tally.passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
