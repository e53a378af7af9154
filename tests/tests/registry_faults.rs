//! Builds through a faulty network: a real registry behind the harness's
//! fault-injecting proxy (drops, stalls, 5xx answers, truncated bodies).
//! Every build pulls its base image, looks up and writes cache entries and
//! pushes through the proxy; each either succeeds with a correct image
//! (checked straight from the registry with skopeo and umoci) or fails
//! with one clear error, and the registry never holds a manifest whose
//! blobs are missing. A stalled connection times out and is retried.
//!
//! `seeded_fault_trials` runs `EXECUTOR_FAULT_TRIALS` trials (20 unless
//! set; the full run is 200, see the README's test section).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use executor_e2e::{Fault, FaultProxy, Mode, Project, Registry, RegistryKind, unpack};

/// `--registry-timeout` of these builds, in seconds.
const TIMEOUT: u64 = 2;

/// A build that has not ended after this long is taken as hung (stalls
/// are held for 4 timeouts; retries wait at most a few seconds).
const HUNG: Duration = Duration::from_secs(240);

/// Runs `cmd`, killing it if it runs past [`HUNG`]; `None` then.
fn run_bounded(cmd: &mut Command) -> Option<Output> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("executor runs");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("the build's status").is_some() {
            return Some(child.wait_with_output().expect("the build's output"));
        }
        if start.elapsed() > HUNG {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn registry_flags(extra: &[&str]) -> Vec<String> {
    let mut flags: Vec<String> = [
        "--insecure",
        "--insecure-pull",
        "--registry-timeout",
        &TIMEOUT.to_string(),
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    flags.extend(extra.iter().map(ToString::to_string));
    flags
}

fn stall_time() -> Duration {
    Duration::from_secs(TIMEOUT * 4)
}

/// The image pushed as `reference` (read from the registry itself) holds
/// `content` at /trial.txt and /copy.txt on the busybox base; `None` when
/// it does, else what is wrong.
fn image_problem(
    registry: &Registry,
    reference: &str,
    content: &str,
    into: &Path,
) -> Option<String> {
    let rootfs = unpack(registry, reference, into);
    for file in ["trial.txt", "copy.txt"] {
        match std::fs::read_to_string(rootfs.join(file)) {
            Ok(text) if text == content => {}
            other => {
                return Some(format!(
                    "{reference}: /{file} is {other:?}, not {content:?}"
                ));
            }
        }
    }
    if !rootfs.join("bin/busybox").is_file() {
        return Some(format!("{reference}: no /bin/busybox"));
    }
    None
}

#[derive(Default)]
struct Tally {
    successes: u32,
    clean_failures: Vec<String>,
    other: Vec<String>,
    faults: BTreeMap<&'static str, u32>,
    stalled_successes: u32,
}

#[test]
fn seeded_fault_trials() {
    let trials: u64 = std::env::var("EXECUTOR_FAULT_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let registry = Registry::start(RegistryKind::Anonymous);
    let _ = registry.push_busybox();
    let proxy = FaultProxy::start(&registry.host, stall_time());
    let base = proxy.reference("busybox:latest");
    let cache_repo = proxy.reference("cache");
    let project = Project::new(
        &format!("FROM {base}\nCOPY trial.txt /trial.txt\nRUN cat /trial.txt > /copy.txt\n"),
        &[],
    );
    let mut tally = Tally::default();
    let mut checked = BTreeSet::new();
    for trial in 0..trials {
        // Trials come in pairs with the same content: the second finds the
        // first's cache entries (when it wrote them) and pulls them.
        let content = format!("content {}\n", trial / 2);
        project.write("trial.txt", &content);
        let tag = format!("app:trial-{trial}");
        let destination = proxy.reference(&tag);
        let store = project.path(&format!("store-{trial}"));
        // Retries from none to kaniko's default 3, and up to 7 faults: some
        // builds get through, some fail.
        let retries = (trial % 4).to_string();
        let mut flags = registry_flags(&[
            "--cache",
            "--cache-repo",
            &cache_repo,
            "--push-retry",
            &retries,
            "--image-download-retry",
            &retries,
        ]);
        flags.extend(["-d".to_string(), destination.clone()]);
        let args: Vec<&str> = flags.iter().map(String::as_str).collect();
        let mut cmd = project.build_in(&store, &args);

        proxy.set_mode(Mode::Random {
            seed: trial,
            percent: 35,
            budget: u32::try_from(1 + trial % 7).unwrap_or(1),
        });
        let output = run_bounded(&mut cmd);
        let injected = proxy.injected();
        proxy.set_mode(Mode::Clean);
        for fault in &injected {
            *tally.faults.entry(fault.kind()).or_default() += 1;
        }
        let _ = std::fs::remove_dir_all(&store);
        let label = format!("trial {trial} (faults {injected:?})");
        let Some(output) = output else {
            tally.other.push(format!("{label}: hung for {HUNG:?}"));
            continue;
        };
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        match output.status.code() {
            Some(0) => {
                let direct = registry.reference(&tag);
                let digest = registry.digest_of(&direct);
                if stdout.trim() != format!("{destination}@{digest}") {
                    tally.other.push(format!(
                        "{label}: printed {stdout:?}, the registry has {digest}"
                    ));
                } else if let Some(problem) = image_problem(
                    &registry,
                    &direct,
                    &content,
                    &project.path(&format!("unpack-{trial}")),
                ) {
                    tally.other.push(format!("{label}: {problem}"));
                } else {
                    tally.successes += 1;
                    if injected.iter().any(|f| matches!(f, Fault::Stall { .. })) {
                        tally.stalled_successes += 1;
                    }
                }
                let _ = std::fs::remove_dir_all(project.path(&format!("unpack-{trial}")));
            }
            Some(1) => {
                let errors: Vec<&str> =
                    stderr.lines().filter(|l| l.starts_with("error:")).collect();
                if errors.len() == 1
                    && errors[0].contains(&proxy.host)
                    && !stderr.contains("panicked")
                {
                    tally
                        .clean_failures
                        .push(format!("trial {trial}: {}", errors[0]));
                } else {
                    tally
                        .other
                        .push(format!("{label}: an unclear failure:\n{stderr}"));
                }
            }
            code => tally
                .other
                .push(format!("{label}: exit status {code:?}:\n{stderr}")),
        }
        for problem in registry.manifest_problems(&mut checked) {
            tally.other.push(format!("after {label}: {problem}"));
        }
    }
    eprintln!(
        "fault trials: {trials}: {} successes, {} clean failures, {} other; faults injected: {:?}; successes through a stall: {}",
        tally.successes,
        tally.clean_failures.len(),
        tally.other.len(),
        tally.faults,
        tally.stalled_successes
    );
    for failure in &tally.clean_failures {
        eprintln!("  {failure}");
    }
    assert!(tally.other.is_empty(), "{}", tally.other.join("\n\n"));
    // The proxy did inject, and builds got through faults.
    assert!(tally.faults.values().sum::<u32>() > 0, "{:?}", tally.faults);
    assert!(tally.successes > 0, "no trial succeeded");
}

#[test]
fn a_stalled_registry_times_out_and_the_build_goes_on() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let _ = registry.push_busybox();
    let proxy = FaultProxy::start(&registry.host, stall_time());
    let project = Project::new(
        &format!("FROM {}\nCOPY f /f\n", proxy.reference("busybox:latest")),
        &[("f", "x")],
    );
    // The registry accepts the first connection and never answers; then
    // one that stops in the middle of an answer.
    proxy.set_mode(Mode::Script(vec![
        Fault::Stall {
            upstream: false,
            after: 0,
        },
        Fault::Stall {
            upstream: false,
            after: 300,
        },
    ]));
    let destination = proxy.reference("stalled:1");
    let flags = registry_flags(&["-d", &destination]);
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let output = run_bounded(&mut project.build(&args)).expect("the build does not hang");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(proxy.injected().len(), 2, "{stderr}");
    // Our watch's words, or reqwest's for the requests it times itself.
    assert!(
        stderr.contains(&format!(
            "the registry sent or took nothing for {TIMEOUT} s"
        )) || stderr.contains("operation timed out"),
        "{stderr}"
    );
    assert!(stderr.contains("retrying"), "{stderr}");
    let direct = registry.reference("stalled:1");
    let rootfs = unpack(&registry, &direct, &project.path("unpacked"));
    assert_eq!(std::fs::read_to_string(rootfs.join("f")).unwrap(), "x");
}

#[test]
fn slow_transfers_that_keep_moving_do_not_time_out() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let _ = registry.push_busybox();
    let proxy = FaultProxy::start(&registry.host, stall_time());
    // Downloads at 256 KB/s: the busybox layer (1 MB) and then 1.5 MB that
    // gzip cannot shrink each take two to three times the idle timeout,
    // with bytes moving every few milliseconds.
    let mut noise = Vec::with_capacity(1_500_000);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    while noise.len() < 1_500_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.extend_from_slice(&x.to_le_bytes());
    }
    let project = Project::new(
        &format!(
            "FROM {}\nCOPY noise /noise\n",
            proxy.reference("busybox:latest")
        ),
        &[],
    );
    project.write("noise", &noise);
    proxy.set_mode(Mode::Throttle {
        bytes_per_sec: 256 * 1024,
    });
    // Built on the slowly pulled base and pushed...
    let destination = proxy.reference("slow:1");
    let flags = registry_flags(&[
        "-d",
        &destination,
        "--push-retry",
        "0",
        "--image-download-retry",
        "0",
    ]);
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let output = run_bounded(&mut project.build(&args)).expect("the build does not hang");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("retrying"), "{stderr}");
    // ...then pulled back slowly as the base of another.
    let next = Project::new(&format!("FROM {destination}\nCOPY f /f\n"), &[("f", "y")]);
    let flags = registry_flags(&["--no-push", "--image-download-retry", "0"]);
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let output = run_bounded(&mut next.build(&args)).expect("the build does not hang");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let rootfs = unpack(
        &registry,
        &registry.reference("slow:1"),
        &project.path("unpacked"),
    );
    assert_eq!(std::fs::read(rootfs.join("noise")).unwrap(), noise);
}
