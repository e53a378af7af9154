//! Parse + type + plan + expand time against Dockerfile size.
//!
//! Generates Dockerfiles of 1,250 to 20,000 lines with a realistic mix
//! (stages, ARG/ENV, COPY with flags, RUN with continuations and mounts,
//! heredocs, comments), takes the median of several runs of the whole
//! frontend for each, and prints the time per line: a linear frontend keeps
//! it flat. `cargo bench -p executor --bench dockerfile_parse`.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use executor::dockerfile::check;
use executor::dockerfile::parser;
use executor::dockerfile::plan::Options;

/// A Dockerfile of about `lines` lines.
fn dockerfile(lines: usize) -> String {
    let mut out = String::from("# syntax=docker/dockerfile:1\nARG BASE=debian:bookworm\n");
    let mut stage = 0;
    while out.lines().count() < lines {
        let _ = writeln!(out, "FROM ${{BASE}} AS stage{stage}");
        let _ = writeln!(out, "ARG VERSION=1.{stage}");
        for i in 0..8 {
            let _ = writeln!(out, "# step {i} of stage {stage}");
            let _ = writeln!(
                out,
                "ENV PATH_{i}=/opt/app{i}/bin:$PATH VERSION_{i}=${{VERSION}}-{i}"
            );
            let _ = writeln!(
                out,
                "COPY --chown=1000:1000 --chmod=0755 src/{i}/ /opt/app{i}/"
            );
            let _ = writeln!(
                out,
                "RUN --mount=type=cache,target=/var/cache/apt \\\n    apt-get update && \\\n    apt-get install -y pkg{i} && \\\n    rm -rf /var/lib/apt/lists/*"
            );
        }
        let _ = writeln!(
            out,
            "COPY <<EOF /etc/motd\nstage {stage} built from $BASE\nEOF"
        );
        if stage > 0 {
            let _ = writeln!(out, "COPY --from=stage{} /opt /opt", stage - 1);
        }
        let _ = writeln!(
            out,
            "WORKDIR /opt/app0\nCMD [\"/opt/app0/bin/run\", \"--stage\", \"{stage}\"]"
        );
        stage += 1;
    }
    out
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time<F: FnMut()>(runs: usize, mut f: F) -> Duration {
    let samples = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    median(samples)
}

fn main() {
    let opts = Options::default();
    println!(
        "{:>8} {:>12} {:>12} {:>14} {:>14}",
        "lines", "parse", "full check", "parse/line", "check/line"
    );
    let mut per_line = Vec::new();
    for target in [1_250, 2_500, 5_000, 10_000, 20_000] {
        let text = dockerfile(target);
        let lines = text.lines().count();
        let runs = 15;
        let parse = time(runs, || {
            black_box(parser::parse(black_box(&text)).expect("generated Dockerfile parses"));
        });
        let full = time(runs, || {
            let report = check::check(black_box(&text), &opts);
            assert!(report.is_ok(), "{:?}", report.errors.first());
            black_box(report);
        });
        #[allow(clippy::cast_precision_loss)]
        let (p, f) = (
            parse.as_nanos() as f64 / lines as f64,
            full.as_nanos() as f64 / lines as f64,
        );
        per_line.push(f);
        println!("{lines:>8} {parse:>12.2?} {full:>12.2?} {p:>11.0} ns {f:>11.0} ns");
    }
    let (min, max) = per_line
        .iter()
        .fold((f64::MAX, 0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    println!(
        "check time per line varies by a factor of {:.2} from 1,250 to 20,000 lines (1.0 = perfectly linear)",
        max / min
    );
}
