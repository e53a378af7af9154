//! `executor run` end to end (issue 6): pipelines in git repositories the
//! tests make, run by the real binary against the real registry (script
//! jobs run in the busybox image pushed there; build jobs build FROM it and
//! push to it).
//!
//! What happened is read from what jobs leave behind, never from timing:
//!
//! - a coordinator ([`Coordinator`]) the tests run on 127.0.0.1, which
//!   script jobs (host network) call with busybox `wget` through the
//!   repository's `bin/` scripts: `bin/mark NAME` records an event in the
//!   order it happens, `bin/wait-for NAME SECS` waits until another job
//!   recorded NAME (or gives up and fails), `bin/count NAME` counts
//!   attempts;
//! - the summary table on stdout (each job's status), the exit status, the
//!   job logs in `.executor/runs/RUN_ID/JOB.log`;
//! - images in the registry (tags, digests, files unpacked with skopeo
//!   and umoci);
//! - the processes, mounts and scratch directories left after a timeout or
//!   Ctrl-C ([`Leftovers`]).
//!
//! Covered: the DAG (needs, stages, `needs: []`) and parallelism
//! (`--jobs`), a failing job and its dependants, `allow_failure`, `when:
//! on_failure|always`, `retry` (with `when`), `timeout`, `rules` under each
//! event (`--event`, `--branch`, `--tag`, `--var`, `--job` for manual
//! jobs), `on` filters, `rules: changes` (a commit, the working tree),
//! `parallel: matrix`, artifacts between jobs (into a build context too), a
//! script job in the image a build job made (local store and pushed, with
//! `EXECUTOR_<NAME>_IMAGE`/`_DIGEST`), secret masking (environment, file,
//! build secret), `--commit` (a path, abbreviated, git's HTTP and git://),
//! Ctrl-C, `--dry-run`, `executor validate`, `executor logs`, and
//! `examples/quickstart/run.sh`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::fs;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use executor_e2e::{
    GitDaemon, GitHttpServer, Leftovers, Registry, RegistryKind, executor_bin, git, git_commit,
    git_repo, ok, processes_with, unpack,
};

// ---------------------------------------------------------------------------
// The coordinator jobs report to.

#[derive(Default)]
struct Board {
    /// Every `mark` and `count`, in the order they came.
    events: Vec<String>,
    counts: BTreeMap<String, u32>,
}

/// A tiny HTTP server on 127.0.0.1 that script jobs call with `wget`:
/// `GET /mark/NAME` records NAME; `GET /wait/NAME/SECS` answers 200 once
/// NAME is recorded, 404 after SECS seconds without it; `GET /count/NAME`
/// records `NAME#N` and answers N, the number of times it was called.
struct Coordinator {
    host: String,
    board: Arc<(Mutex<Board>, Condvar)>,
    stop: Arc<AtomicBool>,
}

impl Coordinator {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port on 127.0.0.1");
        let host = listener.local_addr().expect("an address").to_string();
        let board = Arc::new((Mutex::new(Board::default()), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, stopped) = (Arc::clone(&board), Arc::clone(&stop));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let board = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let _ = answer(stream, &board);
                });
            }
        });
        Self { host, board, stop }
    }

    /// The events so far, in order.
    fn events(&self) -> Vec<String> {
        self.board.0.lock().unwrap().events.clone()
    }

    /// How many times `bin/count NAME` ran.
    fn count(&self, name: &str) -> u32 {
        self.board
            .0
            .lock()
            .unwrap()
            .counts
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    /// Forgets every event and count (between runs).
    fn clear(&self) {
        *self.board.0.lock().unwrap() = Board::default();
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(&self.host);
    }
}

fn answer(stream: TcpStream, board: &(Mutex<Board>, Condvar)) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or_default();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (lock, changed) = board;
    let (status, body) = match parts.as_slice() {
        ["mark", name] => {
            lock.lock().unwrap().events.push((*name).to_owned());
            changed.notify_all();
            ("200 OK", "ok".to_owned())
        }
        ["count", name] => {
            let mut board = lock.lock().unwrap();
            let n = {
                let n = board.counts.entry((*name).to_owned()).or_default();
                *n += 1;
                *n
            };
            board.events.push(format!("{name}#{n}"));
            changed.notify_all();
            ("200 OK", n.to_string())
        }
        ["wait", name, seconds] => {
            let deadline = Instant::now() + Duration::from_secs(seconds.parse().unwrap_or(0));
            let mut board = lock.lock().unwrap();
            loop {
                if board.events.iter().any(|e| e == name) {
                    break ("200 OK", "seen".to_owned());
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break ("404 Not Found", "not seen".to_owned());
                }
                board = changed.wait_timeout(board, left).unwrap().0;
            }
        }
        _ => ("400 Bad Request", format!("unknown request {path:?}")),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

// ---------------------------------------------------------------------------
// A repository with pipelines, a registry with busybox, a store.

/// The scripts jobs call the coordinator with, committed in `bin/`.
fn job_scripts(coordinator: &str) -> [(&'static str, String); 3] {
    [
        (
            "bin/mark",
            format!("#!/bin/sh\nexec wget -q -O /dev/null \"http://{coordinator}/mark/$1\"\n"),
        ),
        (
            "bin/wait-for",
            format!("#!/bin/sh\nexec wget -q -O /dev/null \"http://{coordinator}/wait/$1/$2\"\n"),
        ),
        (
            "bin/count",
            format!("#!/bin/sh\nexec wget -q -O - \"http://{coordinator}/count/$1\"\n"),
        ),
    ]
}

/// A registry with busybox, a coordinator, and a git repository (`repo/`,
/// on `main`) holding the pipeline files and `bin/` scripts, with a store
/// (`store/`) of its own.
struct Bed {
    registry: Registry,
    coordinator: Coordinator,
    dir: tempfile::TempDir,
}

impl Bed {
    /// `files` (pipelines among them) committed with `bin/`.
    fn new(files: &[(&str, &str)]) -> Self {
        let registry = Registry::start(RegistryKind::Anonymous);
        let _ = registry.push_busybox();
        let coordinator = Coordinator::start();
        let dir = tempfile::Builder::new()
            .prefix("executor-pipeline-")
            .tempdir()
            .expect("a temp dir");
        let bed = Self {
            registry,
            coordinator,
            dir,
        };
        fs::create_dir_all(bed.path("tmp")).unwrap();
        let repo = bed.repo();
        for (name, script) in job_scripts(&bed.coordinator.host) {
            let path = repo.join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, script).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        git_repo(&repo, files);
        bed
    }

    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `executor ARGS` in the repository, with no `EXECUTOR_*` variable of
    /// this machine and a docker config of its own.
    fn executor(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(executor_bin());
        cmd.args(args)
            .current_dir(self.repo())
            .env("DOCKER_CONFIG", self.path("docker-config"))
            // Its temporary files in the bed's own dir, where the tests
            // look for leftovers.
            .env("TMPDIR", self.path("tmp"))
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("EXECUTOR_") {
                cmd.env_remove(name);
            }
        }
        cmd
    }

    /// `executor run` with the bed's store and registry (`--var
    /// REGISTRY=HOST:PORT`, which the pipelines' images name) and `args`.
    fn run_command(&self, args: &[&str]) -> Command {
        let store = self.store().display().to_string();
        let registry = format!("REGISTRY={}", self.registry.host);
        let mut all = vec![
            "run",
            "--cache-dir",
            &store,
            "--insecure-registry",
            &self.registry.host,
            "--var",
            &registry,
        ];
        all.extend_from_slice(args);
        self.executor(&all)
    }

    /// Runs `executor run ARGS` in the repository.
    fn run(&self, args: &[&str]) -> Run {
        self.run_in(&self.repo(), args)
    }

    /// Runs `executor run ARGS` in `dir` (logs go under it, or under the
    /// repository around it).
    fn run_in(&self, dir: &Path, args: &[&str]) -> Run {
        let mut cmd = self.run_command(args);
        cmd.current_dir(dir);
        Run::new(&cmd.output().expect("executor runs"), dir)
    }
}

/// One `executor run`: its exit status, output, summary and logs.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    /// Where `.executor/runs` is.
    base: PathBuf,
}

impl fmt::Debug for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exit status {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Run {
    fn new(output: &Output, dir: &Path) -> Self {
        let base = Command::new("git")
            .args(["rev-parse", "--show-toplevel"])
            .current_dir(dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map_or_else(
                || dir.to_path_buf(),
                |o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
            );
        let run = Self {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            base,
        };
        assert!(!run.stderr.contains("panicked"), "{run:?}");
        run
    }

    /// Asserts the exit status.
    fn exits(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "{self:?}");
        self
    }

    /// The run id, from the summary's `logs:` line.
    fn id(&self) -> String {
        let line = self
            .stdout
            .lines()
            .find(|l| l.starts_with("logs: "))
            .unwrap_or_else(|| panic!("no logs: line\n{self:?}"));
        line.rsplit_once("(executor logs ")
            .and_then(|(_, id)| id.strip_suffix(')'))
            .unwrap_or_else(|| panic!("no run id in {line:?}"))
            .to_owned()
    }

    /// The summary table's rows: job name to the rest of the row (status,
    /// attempts, duration, image).
    fn summary(&self) -> BTreeMap<String, String> {
        let lines: Vec<&str> = self.stdout.lines().collect();
        let header = lines
            .iter()
            .rposition(|l| l.starts_with("JOB ") && l.contains(" STATUS ") && l.contains("IMAGE"))
            .unwrap_or_else(|| panic!("no summary table\n{self:?}"));
        let status_at = lines[header].find("STATUS").unwrap();
        let mut rows = BTreeMap::new();
        for line in &lines[header + 1..] {
            if line.starts_with("logs: ") || line.len() < status_at {
                break;
            }
            let name = line[..status_at].trim_end().to_owned();
            rows.insert(name, line[status_at..].to_owned());
        }
        rows
    }

    /// `job`'s row in the summary, after its name.
    fn status(&self, job: &str) -> String {
        self.summary()
            .remove(job)
            .unwrap_or_else(|| panic!("no job {job:?} in the summary\n{self:?}"))
    }

    /// Asserts that `job`'s status starts with `expected`.
    fn has(&self, job: &str, expected: &str) -> &Self {
        let status = self.status(job);
        assert!(
            status.starts_with(expected),
            "{job}: {status:?}, expected {expected:?}\n{self:?}"
        );
        self
    }

    /// The jobs that succeeded.
    fn succeeded(&self) -> BTreeSet<String> {
        self.summary()
            .into_iter()
            .filter(|(_, s)| s.starts_with("succeeded"))
            .map(|(name, _)| name)
            .collect()
    }

    /// `.executor/runs/RUN_ID`.
    fn dir(&self) -> PathBuf {
        self.base.join(".executor/runs").join(self.id())
    }

    /// `job`'s log file.
    fn log(&self, job: &str) -> String {
        let path = self.dir().join(format!("{}.log", encode_job(job)));
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}\n{self:?}", path.display()))
    }
}

/// A job name as its log file is named (`executor::pipeline::logs`):
/// letters, digits, `-`, `_` and a `.` not first as they are, the rest
/// percent-encoded.
fn encode_job(job: &str) -> String {
    let mut out = String::new();
    for (i, byte) in job.bytes().enumerate() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' || (byte == b'.' && i > 0) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Where `name` is in `events`.
fn position(events: &[String], name: &str) -> usize {
    events
        .iter()
        .position(|e| e == name)
        .unwrap_or_else(|| panic!("no event {name:?} in {events:?}"))
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|&n| n.to_owned()).collect()
}

/// A number no other test of this run uses, to put in a command line and
/// find its processes by.
fn unique() -> u64 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seconds = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let n = u64::from(std::process::id()) * 100 + u64::from(NEXT.fetch_add(1, Ordering::Relaxed));
    // Nine digits: a valid `sleep` argument and unlikely anywhere else.
    100_000_000 + (n * 1000 + seconds % 1000) % 800_000_000
}

/// Kills, when dropped, every process whose command line holds one of its
/// markers: what a failing test would otherwise leave running (a build
/// job's `executor build` is in a process group of its own).
struct Reaper(Vec<String>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for marker in &self.0 {
            for (pid, _) in processes_with(marker) {
                if let Some(pid) = i32::try_from(pid)
                    .ok()
                    .and_then(rustix::process::Pid::from_raw)
                {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
    }
}

/// Asserts that no run left a scratch directory (`run-*`, `job-*`,
/// `build-*`) in the store's `tmp/`.
fn assert_no_scratch(store: &Path) {
    let left: Vec<String> = fs::read_dir(store.join("tmp"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| ["run-", "job-", "build-"].iter().any(|p| n.starts_with(p)))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "scratch left in {}/tmp: {left:?}",
        store.display()
    );
}

// ---------------------------------------------------------------------------
// The DAG and parallelism.

const DAG: &str = r"version: 1
stages: [one, two]
defaults:
  image: $REGISTRY/busybox:latest
jobs:
  a:
    stage: one
    script: [bin/mark a-start, bin/mark a-end]
  b:
    stage: one
    needs: [a]
    script: [bin/mark b-start, bin/mark b-end]
  c:
    stage: one
    needs: [a]
    script: [bin/mark c-start, bin/mark c-end]
  d:
    stage: one
    needs: [b, c]
    script: [bin/mark d-start, bin/mark d-end]
  e:
    stage: two
    script: [bin/mark e-start, bin/mark e-end]
  f:
    stage: two
    needs: []
    script: [bin/mark f-start, bin/mark f-end]
";

#[test]
fn a_job_starts_only_after_its_needs_and_earlier_stages_finished() {
    let bed = Bed::new(&[("pipeline.yaml", DAG)]);
    let run = bed.run(&["--jobs", "3"]);
    run.exits(0);
    assert_eq!(
        run.succeeded(),
        set(&["a", "b", "c", "d", "e", "f"]),
        "{run:?}"
    );
    let events = bed.coordinator.events();
    assert_eq!(events.len(), 12, "{events:?}");
    // needs, and for e (no needs, stage two) every job of stage one.
    let waits: [(&str, &[&str]); 5] = [
        ("b", &["a"]),
        ("c", &["a"]),
        ("d", &["b", "c"]),
        ("e", &["a", "b", "c", "d"]),
        ("f", &[]),
    ];
    for (job, needs) in waits {
        let start = position(&events, &format!("{job}-start"));
        assert!(start < position(&events, &format!("{job}-end")));
        for need in needs {
            assert!(
                position(&events, &format!("{need}-end")) < start,
                "{job} started before {need} ended: {events:?}"
            );
        }
    }

    // --job: that job and what it needs, nothing else.
    bed.coordinator.clear();
    let run = bed.run(&["--job", "d"]);
    run.exits(0)
        .has("e", "skipped: not selected with --job")
        .has("f", "skipped: not selected with --job");
    assert_eq!(run.succeeded(), set(&["a", "b", "c", "d"]), "{run:?}");
    assert_eq!(bed.coordinator.events().len(), 8);
    let out = bed.run_command(&["--job", "nope"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--job nope: pipeline.yaml has no such job (it has: a, b, c, d, e, f)"),
        "{stderr}"
    );
}

/// Two independent jobs, each recording that it is up and then waiting (up
/// to `$WAIT` seconds) to see the other up.
const TWO_AT_ONCE: &str = r#"version: 1
defaults:
  image: $REGISTRY/busybox:latest
jobs:
  x:
    script:
      - bin/mark x-up
      - if bin/wait-for y-up "$WAIT"; then bin/mark x-saw-y; fi
  y:
    script:
      - bin/mark y-up
      - if bin/wait-for x-up "$WAIT"; then bin/mark y-saw-x; fi
"#;

#[test]
fn jobs_2_runs_independent_jobs_at_once_and_jobs_1_one_at_a_time() {
    let bed = Bed::new(&[("pipeline.yaml", TWO_AT_ONCE)]);

    // --jobs 2: each sees the other running; neither could finish its
    // wait otherwise (the wait is only a guard against a hang).
    bed.run(&["--jobs", "2", "--var", "WAIT=300"]).exits(0);
    let events: BTreeSet<String> = bed.coordinator.events().into_iter().collect();
    assert!(
        events.contains("x-saw-y") && events.contains("y-saw-x"),
        "the two jobs did not run at once: {events:?}"
    );

    // --jobs 1: the first job gives up waiting for the second, which only
    // starts once the first has finished, and then sees it.
    bed.coordinator.clear();
    bed.run(&["--jobs", "1", "--var", "WAIT=2"]).exits(0);
    let events = bed.coordinator.events();
    let (first, second) = if events[0] == "x-up" {
        ("x", "y")
    } else {
        ("y", "x")
    };
    assert_eq!(
        events,
        [
            format!("{first}-up"),
            format!("{second}-up"),
            format!("{second}-saw-{first}")
        ],
        "--jobs 1 ran the two jobs at once"
    );
}

// ---------------------------------------------------------------------------
// Failures: dependants, allow_failure, when, retry, timeout.

const FAILING: &str = r#"version: 1
defaults:
  image: $REGISTRY/busybox:latest
jobs:
  broken:
    script: [bin/mark broken, "exit 3", bin/mark not-reached]
    after_script: [bin/mark after-script]
  after-broken:
    needs: [broken]
    script: [bin/mark after-broken]
  after-after:
    needs: [after-broken]
    script: [bin/mark after-after]
  on-failure:
    needs: [broken]
    rules: [{when: on_failure}]
    script: [bin/mark on-failure]
  always:
    needs: [after-broken]
    rules: [{when: always}]
    script: [bin/mark always]
  independent:
    needs: []
    script: [bin/mark independent]
  after-independent:
    needs: [independent]
    script: [bin/mark after-independent]
  only-on-failure:
    needs: [independent]
    rules: [{when: on_failure}]
    script: [bin/mark only-on-failure]
"#;

const ALLOWED: &str = r"version: 1
defaults:
  image: $REGISTRY/busybox:latest
jobs:
  flaky:
    allow_failure: true
    script: [bin/mark flaky, exit 1]
  next:
    needs: [flaky]
    script: [bin/mark next]
";

#[test]
fn a_failing_job_skips_its_dependants_and_fails_the_run_unless_it_may_fail() {
    let bed = Bed::new(&[("failing.yaml", FAILING), ("allowed.yaml", ALLOWED)]);

    let run = bed.run(&["failing.yaml", "--jobs", "2"]);
    run.exits(1)
        .has("broken", "failed: the script")
        .has("after-broken", "skipped: a job it needs failed")
        .has("after-after", "skipped: a job it needs failed")
        .has("on-failure", "succeeded")
        .has("always", "succeeded")
        .has("independent", "succeeded")
        .has("after-independent", "succeeded")
        .has(
            "only-on-failure",
            "skipped: on_failure, and nothing it needs failed",
        );
    let events: BTreeSet<String> = bed.coordinator.events().into_iter().collect();
    assert_eq!(
        events,
        set(&[
            "broken",
            "after-script",
            "on-failure",
            "always",
            "independent",
            "after-independent"
        ])
    );
    let log = run.log("broken");
    assert!(log.contains("$ exit 3"), "{log}");
    assert!(log.contains("job failed:"), "{log}");
    assert!(!log.contains("not-reached"), "{log}");

    bed.coordinator.clear();
    let run = bed.run(&["allowed.yaml"]);
    run.exits(0)
        .has("flaky", "failed (allowed): the script")
        .has("next", "succeeded");
    assert_eq!(bed.coordinator.events(), ["flaky", "next"]);
}

#[test]
fn retry_runs_a_failed_job_again_on_a_fresh_checkout_and_timeout_kills_it_whole() {
    let marker = unique();
    let pipeline = format!(
        r#"version: 1
defaults:
  image: $REGISTRY/busybox:latest
jobs:
  flaky:
    retry: {{max: 2, when: [script_failure]}}
    script:
      - test ! -e from-an-earlier-attempt
      - touch from-an-earlier-attempt
      - n=$(bin/count flaky)
      - test "$n" -ge 2
  not-retried:
    retry: {{max: 2, when: [timeout]}}
    allow_failure: true
    script: [bin/count not-retried, exit 1]
  slow:
    timeout: 3s
    retry: {{max: 1, when: [timeout]}}
    script: [bin/count slow, sleep {marker}]
  after-slow:
    needs: [slow]
    script: [bin/mark after-slow]
  slow-build:
    timeout: 3s
    build:
      context: slow
      args: {{BASE: $REGISTRY/busybox:latest}}
      push: false
"#
    );
    let build_marker = unique();
    let bed = Bed::new(&[
        ("pipeline.yaml", &pipeline),
        (
            "slow/Dockerfile",
            &format!("ARG BASE\nFROM $BASE\nRUN sleep {build_marker}\n"),
        ),
    ]);
    let _reaper = Reaper(vec![
        bed.dir.path().display().to_string(),
        format!("sleep {marker}"),
        format!("sleep {build_marker}"),
    ]);
    let leftovers = Leftovers::before(&bed.store()).owning(bed.dir.path());
    let run = bed.run(&["--jobs", "4"]);
    run.exits(1)
        .has("slow-build", "failed: timed out after 3s")
        .has("flaky", "succeeded (2 attempts)")
        .has("not-retried", "failed (allowed): the script")
        .has("slow", "failed: timed out after 3s (2 attempts)")
        .has("after-slow", "skipped: a job it needs failed");
    assert_eq!(bed.coordinator.count("flaky"), 2);
    assert_eq!(bed.coordinator.count("not-retried"), 1);
    assert_eq!(bed.coordinator.count("slow"), 2);
    assert!(!bed.coordinator.events().contains(&"after-slow".into()));
    let log = run.log("flaky");
    assert!(log.contains("retrying (attempt 2 of 3)"), "{log}");
    let log = run.log("slow");
    assert!(log.contains(&format!("$ sleep {marker}")), "{log}");
    assert!(log.contains("timed out after 3s"), "{log}");
    // Both attempts' sleeps were killed with their sandboxes, the build's
    // with its process group.
    leftovers.assert_none(&format!("sleep {marker}"));
    leftovers.assert_none(&format!("sleep {build_marker}"));
    assert_no_scratch(&bed.store());
}

// ---------------------------------------------------------------------------
// rules, on, changes.

const RULES: &str = r#"version: 1
defaults:
  image: $REGISTRY/busybox:latest
jobs:
  every-event:
    script:
      - echo "source=$CI_PIPELINE_SOURCE ref=$CI_COMMIT_REF_NAME branch=$CI_COMMIT_BRANCH tag=$CI_COMMIT_TAG"
  push-only:
    rules: [{if: '$CI_PIPELINE_SOURCE == "push"'}]
    script: [bin/mark push-only]
  main-only:
    rules: [{if: '$CI_COMMIT_BRANCH == "main"'}]
    script: [bin/mark main-only]
  release-tags:
    rules: [{if: '$CI_COMMIT_TAG =~ /^v[0-9]+\./'}]
    script: [bin/mark release-tags]
  pull-requests:
    rules: [{if: '$CI_PIPELINE_SOURCE == "pull_request"'}]
    script: [bin/mark pull-requests]
  manual-source:
    rules: [{if: '$CI_PIPELINE_SOURCE == "manual"'}]
    script: [bin/mark manual-source]
  deploy:
    rules:
      - if: '$DEPLOY == "yes" && $CI_COMMIT_BRANCH != "dev"'
    script: [bin/mark deploy]
  by-hand:
    rules: [{when: manual}]
    script: [bin/mark by-hand]
  never:
    rules: [{when: never}]
    script: [bin/mark never]
"#;

#[test]
fn rules_decide_each_job_for_each_event_branch_tag_and_variable() {
    let bed = Bed::new(&[("pipeline.yaml", RULES)]);
    let all = [
        "every-event",
        "push-only",
        "main-only",
        "release-tags",
        "pull-requests",
        "manual-source",
        "deploy",
        "by-hand",
        "never",
    ];
    let cases: [(&[&str], &[&str], &str); 7] = [
        (
            &["--var", "DEPLOY=yes"],
            &["every-event", "push-only", "main-only", "deploy"],
            "source=push ref=main branch=main tag=",
        ),
        (
            &["--event", "push", "--branch", "dev", "--var", "DEPLOY=yes"],
            &["every-event", "push-only"],
            "source=push ref=dev branch=dev tag=",
        ),
        (
            &["--tag", "v1.2.0"],
            &["every-event", "release-tags"],
            "source=tag ref=v1.2.0 branch= tag=v1.2.0",
        ),
        (
            &["--event", "tag", "--tag", "nightly"],
            &["every-event"],
            "source=tag ref=nightly branch= tag=nightly",
        ),
        (
            &["--event", "pull_request", "--branch", "feature/x"],
            &["every-event", "pull-requests"],
            "source=pull_request ref=feature/x branch= tag=",
        ),
        (
            &["--event", "manual"],
            &["every-event", "manual-source", "main-only"],
            "source=manual ref=main branch=main tag=",
        ),
        (
            &["--job", "by-hand", "--job", "every-event"],
            &["every-event", "by-hand"],
            "source=push ref=main branch=main tag=",
        ),
    ];
    for (args, ran, line) in cases {
        bed.coordinator.clear();
        let mut all_args = vec!["--jobs", "4"];
        all_args.extend_from_slice(args);
        let run = bed.run(&all_args);
        run.exits(0);
        assert_eq!(run.succeeded(), set(ran), "{args:?}\n{run:?}");
        let marked: BTreeSet<String> = bed.coordinator.events().into_iter().collect();
        let ran_marking: BTreeSet<String> = set(ran)
            .into_iter()
            .filter(|j| j != "every-event")
            .collect();
        assert_eq!(marked, ran_marking, "{args:?}");
        let log = run.log("every-event");
        assert!(log.contains(line), "{args:?}: {line:?} not in\n{log}");
        for job in all.iter().filter(|j| !ran.contains(j)) {
            let status = run.status(job);
            let expected = if args.contains(&"--job") {
                "skipped: not selected with --job"
            } else if *job == "by-hand" {
                "skipped: manual: run it with --job"
            } else {
                "skipped: its rules exclude it"
            };
            assert!(status.starts_with(expected), "{args:?} {job}: {status}");
        }
    }
}

const ON: &str = r#"version: 1
defaults:
  image: $REGISTRY/busybox:latest
on:
  push:
    branches: [main, "release/**"]
    paths: ["src/**"]
  tag:
    tags: ["v*"]
jobs:
  job:
    script: [bin/mark ran]
"#;

#[test]
fn on_filters_events_branches_tags_and_changed_paths() {
    let bed = Bed::new(&[("pipeline.yaml", ON)]);
    let repo = bed.repo();
    // HEAD changes src/: the push filter's paths match.
    git_commit(&repo, &[("src/app.txt", "v1\n")], "src");
    let cases: [(&[&str], bool); 8] = [
        (&[], true),
        (&["--branch", "release/1.0"], true),
        (&["--branch", "dev"], false),
        (&["--tag", "v2.0"], true),
        (&["--tag", "nightly"], false),
        (&["--event", "pull_request"], false),
        (&["--event", "manual"], false),
        (&["--event", "push", "--branch", "release/1.0/x"], true),
    ];
    for (args, runs) in cases {
        bed.coordinator.clear();
        let run = bed.run(args);
        run.exits(0);
        if runs {
            run.has("job", "succeeded");
            assert_eq!(bed.coordinator.events(), ["ran"], "{args:?}");
        } else {
            run.has("job", "skipped: the pipeline does not run on this event");
            assert!(
                run.stdout.contains("the pipeline does not run on"),
                "{run:?}"
            );
            assert!(bed.coordinator.events().is_empty(), "{args:?}");
        }
    }
    // A commit that changes docs/ only does not run it on main.
    git_commit(&repo, &[("docs/readme.md", "docs\n")], "docs");
    bed.coordinator.clear();
    bed.run(&[])
        .exits(0)
        .has("job", "skipped: the pipeline does not run on this event");
    assert!(bed.coordinator.events().is_empty());
}

const CHANGES: &str = r#"version: 1
defaults:
  image: $REGISTRY/busybox:latest
jobs:
  src:
    rules: [{changes: ["src/**"]}]
    script: [bin/mark src]
  docs:
    rules: [{changes: ["docs/*.md"]}]
    script: [bin/mark docs]
  either:
    rules: [{changes: ["src/**", "docs/**"]}]
    script: [bin/mark either]
  neither:
    rules: [{changes: ["other/**"]}]
    script: [bin/mark neither]
"#;

#[test]
fn rules_changes_match_the_paths_the_commit_or_the_working_tree_changed() {
    let bed = Bed::new(&[("pipeline.yaml", CHANGES)]);
    let repo = bed.repo();
    let src = git_commit(&repo, &[("src/app.txt", "v1\n")], "src");
    let docs = git_commit(&repo, &[("docs/readme.md", "docs\n")], "docs");
    let ran = |args: &[&str]| {
        let mut all = vec!["--jobs", "4"];
        all.extend_from_slice(args);
        let run = bed.run(&all);
        run.exits(0);
        for job in ["src", "docs", "either", "neither"] {
            if !run.succeeded().contains(job) {
                run.has(job, "skipped: its rules exclude it");
            }
        }
        run.succeeded()
    };
    // The working tree: HEAD (docs) against its parent.
    assert_eq!(ran(&[]), set(&["docs", "either"]));
    // Clones of each commit, by sha.
    assert_eq!(ran(&["--commit", &docs]), set(&["docs", "either"]));
    assert_eq!(ran(&["--commit", &src]), set(&["src", "either"]));
    // Uncommitted changes count in a working tree.
    fs::write(repo.join("src/app.txt"), "v2\n").unwrap();
    assert_eq!(ran(&[]), set(&["src", "docs", "either"]));
}

// ---------------------------------------------------------------------------
// Matrix, artifacts.

const MATRIX: &str = r#"version: 1
defaults:
  image: $REGISTRY/busybox:latest
jobs:
  test:
    variables:
      ARCH: none
    parallel:
      matrix:
        - OS: [alpine, debian]
          ARCH: [amd64, arm64]
        - OS: [plan9]
    script:
      - echo "job=$CI_JOB_NAME os=$OS arch=$ARCH"
      - bin/mark "$OS-$ARCH"
  report:
    needs: [test]
    script: [bin/mark report]
"#;

#[test]
fn a_matrix_runs_every_instance_with_its_variables_before_what_needs_it() {
    let bed = Bed::new(&[("pipeline.yaml", MATRIX)]);
    let run = bed.run(&["--jobs", "2"]);
    run.exits(0);
    let instances = [
        ("test: [alpine, amd64]", "alpine", "amd64"),
        ("test: [alpine, arm64]", "alpine", "arm64"),
        ("test: [debian, amd64]", "debian", "amd64"),
        ("test: [debian, arm64]", "debian", "arm64"),
        ("test: [plan9]", "plan9", "none"),
    ];
    let mut expected: Vec<&str> = instances.iter().map(|(name, _, _)| *name).collect();
    expected.push("report");
    assert_eq!(run.succeeded(), set(&expected), "{run:?}");
    let events = bed.coordinator.events();
    assert_eq!(events.len(), 6, "{events:?}");
    let report = position(&events, "report");
    for (name, os, arch) in instances {
        let log = run.log(name);
        assert!(
            log.contains(&format!("job={name} os={os} arch={arch}")),
            "{name}: {log}"
        );
        assert!(position(&events, &format!("{os}-{arch}")) < report);
    }
}

const ARTIFACTS: &str = r#"version: 1
stages: [build, test]
defaults:
  image: $REGISTRY/busybox:latest
jobs:
  produce:
    stage: build
    script:
      - mkdir -p out/sub
      - echo report > out/report.txt
      - echo deep > out/sub/deep.txt
      - echo junk > junk.txt
    artifacts:
      paths: ["out/"]
  consume:
    stage: test
    needs: [produce]
    script:
      - test "$(cat out/report.txt)" = report
      - test "$(cat out/sub/deep.txt)" = deep
      - test ! -e junk.txt
      - bin/mark consume
  by-stage:
    stage: test
    script: [test -e out/report.txt, bin/mark by-stage]
  without:
    stage: test
    needs: []
    script: [test ! -e out, bin/mark without]
"#;

#[test]
fn artifacts_go_to_the_jobs_that_need_their_job_and_no_others() {
    let bed = Bed::new(&[("pipeline.yaml", ARTIFACTS)]);
    let run = bed.run(&["--jobs", "2"]);
    run.exits(0);
    assert_eq!(
        run.succeeded(),
        set(&["produce", "consume", "by-stage", "without"]),
        "{run:?}"
    );
    assert!(run.log("produce").contains("artifacts: 2 files kept"));
    // Jobs work on copies: the working tree has none of it.
    assert!(!bed.repo().join("out").exists());
    assert!(!bed.repo().join("junk.txt").exists());
    assert_no_scratch(&bed.store());
}

// ---------------------------------------------------------------------------
// Build jobs and the images they make.

const IMAGES: &str = r#"version: 1
stages: [prepare, build, test]
defaults:
  image: $REGISTRY/busybox:latest
jobs:
  notes:
    stage: prepare
    script: [mkdir -p app/gen, echo "from an artifact" > app/gen/notes.txt]
    artifacts:
      paths: [app/gen/]
  local-app:
    stage: build
    needs: [notes]
    build:
      context: app
      args:
        BASE: $REGISTRY/busybox:latest
        GREETING: local-$CI_COMMIT_SHORT_SHA
      destinations: [$REGISTRY/local-app:$CI_COMMIT_SHORT_SHA]
      push: false
  pushed-app:
    stage: build
    needs: [notes]
    build:
      context: app
      args:
        BASE: $REGISTRY/busybox:latest
        GREETING: pushed-$CI_COMMIT_SHORT_SHA
      destinations:
        - $REGISTRY/app:$CI_COMMIT_SHORT_SHA
        - $REGISTRY/app:latest
  check-local:
    stage: test
    needs: [local-app]
    image: {job: local-app}
    script:
      - test "$(cat /greeting)" = "local-$CI_COMMIT_SHORT_SHA"
      - echo "image=$EXECUTOR_LOCAL_APP_IMAGE digest=$EXECUTOR_LOCAL_APP_DIGEST"
  check-pushed:
    stage: test
    needs: [pushed-app]
    image: {job: pushed-app}
    script:
      - test "$(cat /greeting)" = "pushed-$CI_COMMIT_SHORT_SHA"
      - test "$(cat /notes.txt)" = "from an artifact"
      - echo "image=$EXECUTOR_PUSHED_APP_IMAGE digest=$EXECUTOR_PUSHED_APP_DIGEST"
"#;

const APP_DOCKERFILE: &str = "ARG BASE\n\
FROM $BASE\n\
ARG GREETING\n\
COPY gen/notes.txt /notes.txt\n\
RUN echo \"$GREETING\" > /greeting\n";

/// The `image=... digest=...` line a job printed.
fn image_and_digest(log: &str) -> (String, String) {
    let line = log
        .lines()
        .find(|l| l.starts_with("image="))
        .unwrap_or_else(|| panic!("no image= line in\n{log}"));
    let (image, digest) = line.split_once(" digest=").expect("image= digest=");
    (image["image=".len()..].to_owned(), digest.to_owned())
}

#[test]
fn script_jobs_run_in_the_images_build_jobs_made_pushed_or_not() {
    // The build context is the app/ directory; app/gen/notes.txt comes from
    // the notes job's artifacts, restored over the build job's checkout.
    let bed = Bed::new(&[
        ("pipeline.yaml", IMAGES),
        ("app/Dockerfile", APP_DOCKERFILE),
    ]);
    let short = &git(&bed.repo(), &["rev-parse", "HEAD"])[..8];
    // Registry settings from the environment, as `executor build` takes
    // them (comma-separated), for script jobs' pulls and build jobs alike.
    let store = bed.store().display().to_string();
    let registry = format!("REGISTRY={}", bed.registry.host);
    let mut cmd = bed.executor(&[
        "run",
        "--cache-dir",
        &store,
        "--var",
        &registry,
        "--jobs",
        "2",
    ]);
    cmd.env(
        "EXECUTOR_INSECURE_REGISTRY",
        format!("elsewhere.invalid:5000,{}", bed.registry.host),
    );
    let run = Run::new(&cmd.output().unwrap(), &bed.repo());
    run.exits(0);
    assert_eq!(
        run.succeeded(),
        set(&[
            "notes",
            "local-app",
            "pushed-app",
            "check-local",
            "check-pushed"
        ]),
        "{run:?}"
    );

    // Unpushed: in the local store only, named by digest.
    let (image, digest) = image_and_digest(&run.log("check-local"));
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    assert_eq!(image, digest);
    assert!(run.status("local-app").contains(&digest), "{run:?}");
    assert!(bed.registry.tags("local-app").is_empty());

    // Pushed: both tags, the variables naming it by digest.
    let (image, digest) = image_and_digest(&run.log("check-pushed"));
    let tags: BTreeSet<String> = bed.registry.tags("app").into_iter().collect();
    assert_eq!(tags, set(&["latest", short]));
    let reference = bed.registry.reference(&format!("app:{short}"));
    assert_eq!(bed.registry.digest_of(&reference), digest);
    assert_eq!(image, format!("{}/app@{digest}", bed.registry.host));
    assert!(run.status("pushed-app").contains(&image), "{run:?}");
    let rootfs = unpack(&bed.registry, &reference, &bed.path("unpacked"));
    assert_eq!(
        fs::read_to_string(rootfs.join("greeting")).unwrap(),
        format!("pushed-{short}\n")
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("notes.txt")).unwrap(),
        "from an artifact\n"
    );
    // The base came from the bed's registry: the image is busybox's plus
    // this build's layers.
    assert!(rootfs.join("bin/busybox").is_file());
}

// ---------------------------------------------------------------------------
// Paths out of the project.

/// A build job cannot build, or read as its Dockerfile, anything outside
/// the project, whichever way the path gets there: a variable (absolute or
/// `..`, expanded after the pipeline was checked), a committed symlink, an
/// absolute `dockerfile` (written as it is, the pipeline is refused; through
/// a variable, the job), a Dockerfile that is a symlink out. Each is refused
/// before anything is read, naming the job (or the file's line) and the
/// value; what the file outside holds shows nowhere.
#[test]
fn build_jobs_never_reach_outside_the_project() {
    let marker = format!("OUTSIDE-{}-CONTENT", unique());
    let outside = tempfile::Builder::new()
        .prefix("executor-outside-")
        .tempdir()
        .unwrap();
    let dir = outside.path().display().to_string();
    fs::write(
        outside.path().join("Dockerfile"),
        format!("FROM scratch\n{marker} and more\nCOPY . /\n"),
    )
    .unwrap();
    fs::write(outside.path().join("data.txt"), &marker).unwrap();
    let dockerfile = format!("{dir}/Dockerfile");
    let pipeline = format!(
        r"version: 1
jobs:
  var-absolute:
    variables: {{CTX: {dir}}}
    build: {{context: $CTX, push: false}}
  var-parent:
    variables: {{CTX: ../../{name}}}
    build: {{context: $CTX, push: false}}
  symlink-context:
    build: {{context: linked, push: false}}
  absolute-dockerfile:
    variables: {{DF: {dockerfile}}}
    build: {{context: app, dockerfile: $DF, push: false}}
  symlink-dockerfile:
    build: {{context: app, dockerfile: Evil.dockerfile, push: false}}
",
        name = outside.path().file_name().unwrap().to_string_lossy()
    );
    let literal = format!(
        "version: 1\njobs:\n  literal:\n    build: {{context: app, dockerfile: {dockerfile}, push: false}}\n"
    );
    let bed = Bed::new(&[
        ("pipeline.yaml", &pipeline),
        ("literal.yaml", &literal),
        ("app/Dockerfile", "FROM scratch\n"),
    ]);
    // `repo/` is two levels below the temp dir `outside` is in.
    assert_eq!(bed.dir.path().parent(), outside.path().parent());
    std::os::unix::fs::symlink(outside.path(), bed.repo().join("linked")).unwrap();
    std::os::unix::fs::symlink(&dockerfile, bed.repo().join("app/Evil.dockerfile")).unwrap();
    git_commit(&bed.repo(), &[], "symlinks out");
    let run = bed.run(&["--jobs", "1"]);
    run.exits(1);
    let parent = format!(
        "../../{}",
        outside.path().file_name().unwrap().to_string_lossy()
    );
    for (job, what, value) in [
        ("var-absolute", "context", dir.as_str()),
        ("var-parent", "context", parent.as_str()),
        ("symlink-context", "context", "linked"),
        ("absolute-dockerfile", "dockerfile", dockerfile.as_str()),
        ("symlink-dockerfile", "dockerfile", "Evil.dockerfile"),
    ] {
        let refusal = format!("job {job}: the build {what} {value:?} is outside the project");
        run.has(job, &format!("failed: {refusal}"));
        assert!(run.log(job).contains(&refusal), "{}", run.log(job));
        assert!(!run.log(job).contains(&marker), "{}", run.log(job));
    }
    assert!(!run.stdout.contains(&marker), "{run:?}");
    assert!(!run.stderr.contains(&marker), "{run:?}");
    assert_no_scratch(&bed.store());

    let out = bed.run_command(&["literal.yaml"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "literal.yaml:4:39: jobs.literal.build.dockerfile: `{dockerfile}` must be a relative path inside the repository"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains(&marker), "{stderr}");
}

// ---------------------------------------------------------------------------
// Secrets.

#[test]
fn secrets_reach_jobs_and_builds_but_never_the_output_or_the_logs() {
    let token = format!("tok-{}-sEcReT", unique());
    let key = format!("key-{}-PRIVATE", unique());
    let bed_files = tempfile::tempdir().unwrap();
    let key_file = bed_files.path().join("deploy.key");
    fs::write(&key_file, &key).unwrap();
    let pipeline = format!(
        r#"version: 1
defaults:
  image: $REGISTRY/busybox:latest
jobs:
  deploy:
    secrets:
      TOKEN: {{env: PIPELINE_TEST_TOKEN}}
      KEY: {{file: {key_file}}}
    script:
      - echo "token=$TOKEN"
      - echo "key=$KEY"
      - test "${{#TOKEN}}" -eq {token_len}
      - test "$KEY" = "$(printf '%s' "$KEY")"
  built:
    build:
      context: secret
      args: {{BASE: $REGISTRY/busybox:latest}}
      push: false
      secrets:
        npm: {{env: PIPELINE_TEST_TOKEN}}
  missing:
    allow_failure: true
    secrets:
      NOPE: {{env: PIPELINE_TEST_NOT_SET}}
    script: [bin/mark missing]
"#,
        key_file = key_file.display(),
        token_len = token.len()
    );
    let bed = Bed::new(&[
        ("pipeline.yaml", &pipeline),
        (
            "secret/Dockerfile",
            "ARG BASE\nFROM $BASE\nRUN --mount=type=secret,id=npm echo \"npm=$(cat /run/secrets/npm)\"\n",
        ),
    ]);
    let mut cmd = bed.run_command(&["--jobs", "2"]);
    cmd.env("PIPELINE_TEST_TOKEN", &token)
        .env_remove("PIPELINE_TEST_NOT_SET");
    let run = Run::new(&cmd.output().unwrap(), &bed.repo());
    run.exits(0)
        .has("deploy", "succeeded")
        .has("built", "succeeded")
        .has(
            "missing",
            "failed (allowed): secret NOPE: the environment variable PIPELINE_TEST_NOT_SET is not set on this machine",
        );
    assert!(bed.coordinator.events().is_empty());
    for secret in [&token, &key] {
        assert!(!run.stdout.contains(secret.as_str()), "{run:?}");
        assert!(!run.stderr.contains(secret.as_str()), "{run:?}");
        for job in ["deploy", "built", "missing"] {
            assert!(!run.log(job).contains(secret.as_str()), "{}", run.log(job));
        }
    }
    let deploy = run.log("deploy");
    assert!(deploy.contains("token=[MASKED]"), "{deploy}");
    assert!(deploy.contains("key=[MASKED]"), "{deploy}");
    assert!(run.stdout.contains(" | token=[MASKED]"), "{run:?}");
    // The build masks its secrets in its own output before the run's log
    // sees them.
    let built = run.log("built");
    assert!(built.contains("npm=****"), "{built}");
}

// ---------------------------------------------------------------------------
// --commit.

/// The pipeline of each commit: a job named after the commit printing the
/// file it sees and the commit it runs; for the first commit, in the image
/// its build job makes from its Dockerfile.
fn commit_pipeline(job: &str) -> String {
    let mut pipeline = format!(
        "version: 1\n\
         defaults:\n  image: $REGISTRY/busybox:latest\n\
         jobs:\n  {job}:\n    script:\n      - echo \"version=$(cat version.txt) sha=$CI_COMMIT_SHA branch=$CI_COMMIT_BRANCH url=$CI_REPOSITORY_URL\"\n"
    );
    if job == "first" {
        pipeline.push_str(
            "      - test \"$(cat /version)\" = one\n\
             \x20   needs: [first-image]\n\
             \x20   image: {job: first-image}\n\
             \x20 first-image:\n\
             \x20   build:\n\
             \x20     args: {BASE: $REGISTRY/busybox:latest}\n\
             \x20     push: false\n",
        );
    }
    pipeline
}

const VERSION_DOCKERFILE: &str = "ARG BASE\nFROM $BASE\nCOPY version.txt /version\n";

#[test]
fn commit_clones_that_exact_commit_from_a_path_http_or_git_daemon() {
    let bed = Bed::new(&[
        ("pipeline.yaml", &commit_pipeline("first")),
        ("version.txt", "one"),
        ("Dockerfile", VERSION_DOCKERFILE),
    ]);
    let repo = bed.repo();
    let first = git(&repo, &["rev-parse", "HEAD"]);
    let second = git_commit(
        &repo,
        &[
            ("pipeline.yaml", &commit_pipeline("second")),
            ("version.txt", "two"),
            ("Dockerfile", "FROM scratch\nCOPY version.txt /version\n"),
        ],
        "second",
    );
    // The working tree holds a third version, uncommitted.
    fs::write(repo.join("version.txt"), "three").unwrap();
    fs::write(repo.join("Dockerfile"), "FROM scratch\nCOPY nothing /\n").unwrap();

    let line = |run: &Run, job: &str| {
        run.exits(0).has(job, "succeeded");
        let jobs = if job == "first" { 2 } else { 1 };
        assert_eq!(run.succeeded().len(), jobs, "{run:?}");
        run.log(job)
            .lines()
            .find(|l| l.starts_with("version="))
            .unwrap_or_else(|| panic!("{run:?}"))
            .to_owned()
    };

    // The working tree, as it is.
    let run = bed.run(&[]);
    let seen = line(&run, "second");
    assert!(
        seen.starts_with(&format!("version=three sha={second} branch=main")),
        "{seen}"
    );

    // The first commit from this repository, by sha and abbreviated: its
    // pipeline and files (the build job's Dockerfile too), whatever the
    // working tree holds.
    for rev in [&first[..], &first[..10]] {
        let run = bed.run(&["--commit", rev]);
        let seen = line(&run, "first");
        assert!(
            seen.starts_with(&format!("version=one sha={first} branch= ")),
            "{seen}"
        );
    }
    assert_eq!(
        fs::read_to_string(repo.join("version.txt")).unwrap(),
        "three"
    );

    // Over git's HTTP protocol, from a directory outside any repository.
    let server = GitHttpServer::start();
    git(
        bed.dir.path(),
        &[
            "clone",
            "-q",
            "--bare",
            &repo.display().to_string(),
            &server.repos().join("project.git").display().to_string(),
        ],
    );
    let url = server.url("project.git");
    let elsewhere = bed.path("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    let run = bed.run_in(&elsewhere, &["--repo", &url, "--commit", &first]);
    let seen = line(&run, "first");
    assert_eq!(seen, format!("version=one sha={first} branch= url={url}"));
    assert!(elsewhere.join(".executor/runs").join(run.id()).is_dir());
    let run = bed.run_in(&elsewhere, &["--repo", &url, "--commit", "main"]);
    let seen = line(&run, "second");
    assert_eq!(
        seen,
        format!("version=two sha={second} branch=main url={url}")
    );

    // And from git daemon.
    let daemon = GitDaemon::start(&server.repos());
    let url = format!("git://{}/project.git", daemon.host);
    let run = bed.run_in(&elsewhere, &["--repo", &url, "--commit", &first]);
    let seen = line(&run, "first");
    assert_eq!(seen, format!("version=one sha={first} branch= url={url}"));
}

// ---------------------------------------------------------------------------
// Ctrl-C.

/// `executor run` in the background, in a process group of its own (as a
/// shell runs a foreground job: Ctrl-C signals the whole group), its
/// output in files.
struct Background<'b> {
    bed: &'b Bed,
    child: std::process::Child,
}

impl<'b> Background<'b> {
    fn start(bed: &'b Bed, args: &[&str]) -> Self {
        let stdout = fs::File::create(bed.path("stdout")).unwrap();
        let stderr = fs::File::create(bed.path("stderr")).unwrap();
        let child = bed
            .run_command(args)
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .expect("executor starts");
        Self { bed, child }
    }

    fn stdout(&self) -> String {
        fs::read_to_string(self.bed.path("stdout")).unwrap()
    }

    fn stderr(&self) -> String {
        fs::read_to_string(self.bed.path("stderr")).unwrap()
    }

    /// Waits (up to 5 minutes) until `done` holds while the run goes on.
    fn wait_until(&mut self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(300);
        while !done() {
            let exited = self.child.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "{what}: not so ({exited:?})\n{}\n{}",
                self.stdout(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGINT to the run's process group.
    fn interrupt(&self) {
        let group = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process_group(group, rustix::process::Signal::INT).expect("SIGINT");
    }

    /// Waits (up to a minute) for the run to end.
    fn finish(mut self) -> Run {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "executor run still running a minute after SIGINT\n{}\n{}",
                self.stdout(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let run = Run {
            code: status.code(),
            stdout: self.stdout(),
            stderr: self.stderr(),
            base: self.bed.repo(),
        };
        assert!(!run.stderr.contains("panicked"), "{run:?}");
        run
    }

    /// Ctrl-C, and the run's end.
    fn ctrl_c(self) -> Run {
        self.interrupt();
        self.finish()
    }
}

impl Drop for Background<'_> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ctrl_c_stops_every_job_cancels_the_rest_and_leaves_nothing() {
    let (script_marker, build_marker) = (unique(), unique());
    let pipeline = format!(
        r"version: 1
defaults:
  image: $REGISTRY/busybox:latest
jobs:
  sleeper:
    script: [bin/mark sleeper, sleep {script_marker}]
  builder:
    build:
      context: slow
      args: {{BASE: $REGISTRY/busybox:latest}}
      push: false
  later:
    needs: [sleeper]
    script: [bin/mark later]
"
    );
    let bed = Bed::new(&[
        ("pipeline.yaml", &pipeline),
        (
            "slow/Dockerfile",
            &format!("ARG BASE\nFROM $BASE\nRUN sleep {build_marker}\n"),
        ),
    ]);
    let _reaper = Reaper(vec![
        bed.dir.path().display().to_string(),
        format!("sleep {script_marker}"),
        format!("sleep {build_marker}"),
    ]);
    let leftovers = Leftovers::before(&bed.store()).owning(bed.dir.path());
    let mut run = Background::start(&bed, &["--jobs", "2"]);
    let sleeps = [
        format!("sleep {script_marker}"),
        format!("sleep {build_marker}"),
    ];
    run.wait_until("the two jobs are running", || {
        sleeps.iter().all(|s| !processes_with(s).is_empty())
    });
    let run = run.ctrl_c();
    run.exits(130)
        .has("sleeper", "canceled")
        .has("builder", "canceled")
        .has("later", "canceled");
    assert_eq!(bed.coordinator.events(), ["sleeper"]);
    for sleep in &sleeps {
        leftovers.assert_none(sleep);
    }
    assert_no_scratch(&bed.store());
}

/// A FIFO a job reads its secret from: the job blocks there until the test
/// writes (the directory holding it is the first value).
fn secret_gate() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("gate");
    ok(Command::new("mkfifo").arg(&fifo));
    (dir, fifo)
}

/// The gate opened for writing, once a job has it open for reading.
fn gate_writer(fifo: &Path) -> Option<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo)
        .ok()
}

/// A job still starting when Ctrl-C comes (here reading a secret from a
/// FIFO, as it could be fetching its image) does not go on to run.
#[test]
fn ctrl_c_also_stops_a_job_that_was_still_starting() {
    let marker = unique();
    let (_gate, fifo) = secret_gate();
    let pipeline = format!(
        r"version: 1
defaults:
  image: $REGISTRY/busybox:latest
jobs:
  starting:
    secrets:
      GATE: {{file: {fifo}}}
    script: [bin/mark started, sleep {marker}]
",
        fifo = fifo.display()
    );
    let bed = Bed::new(&[("pipeline.yaml", &pipeline)]);
    let _reaper = Reaper(vec![format!("sleep {marker}")]);
    let leftovers = Leftovers::before(&bed.store()).owning(bed.dir.path());
    let mut run = Background::start(&bed, &[]);
    // The job is reading the FIFO once it can be opened for writing.
    let mut writer = None;
    run.wait_until("the job is reading its secret", || {
        writer = gate_writer(&fifo);
        writer.is_some()
    });
    run.interrupt();
    run.wait_until("the run saw SIGINT", || {
        fs::read_to_string(bed.path("stderr")).is_ok_and(|e| e.contains("SIGINT"))
    });
    // Now the job gets its secret, and could go on.
    let mut writer = writer.unwrap();
    writer.write_all(b"open sesame").unwrap();
    drop(writer);
    let run = run.finish();
    run.exits(130).has("starting", "canceled");
    assert!(bed.coordinator.events().is_empty());
    leftovers.assert_none(&format!("sleep {marker}"));
    assert_no_scratch(&bed.store());
}

/// A second Ctrl-C quits at once, even with a job that does not end (here
/// one blocked reading its secret from a FIFO nobody writes): the first
/// stopped every running job, script and build alike.
#[test]
fn a_second_ctrl_c_quits_at_once() {
    let (script_marker, build_marker) = (unique(), unique());
    let (_gate, fifo) = secret_gate();
    let pipeline = format!(
        r"version: 1
defaults:
  image: $REGISTRY/busybox:latest
jobs:
  stuck:
    secrets:
      GATE: {{file: {fifo}}}
    script: [bin/mark stuck]
  sleeper:
    script: [sleep {script_marker}]
  builder:
    build:
      context: slow
      args: {{BASE: $REGISTRY/busybox:latest}}
      push: false
",
        fifo = fifo.display()
    );
    let bed = Bed::new(&[
        ("pipeline.yaml", &pipeline),
        (
            "slow/Dockerfile",
            &format!("ARG BASE\nFROM $BASE\nRUN sleep {build_marker}\n"),
        ),
    ]);
    let sleeps = [
        format!("sleep {script_marker}"),
        format!("sleep {build_marker}"),
    ];
    let builds = format!("--settings-file {}", bed.store().display());
    let _reaper = Reaper(vec![sleeps[0].clone(), sleeps[1].clone(), builds.clone()]);
    let leftovers = Leftovers::before(&bed.store()).owning(bed.dir.path());
    let mut run = Background::start(&bed, &["--jobs", "3"]);
    let mut writer = None;
    run.wait_until("every job runs", || {
        writer = writer.take().or_else(|| gate_writer(&fifo));
        writer.is_some() && sleeps.iter().all(|s| !processes_with(s).is_empty())
    });
    run.interrupt();
    run.wait_until("the running jobs and the build are gone", || {
        sleeps.iter().all(|s| processes_with(s).is_empty()) && processes_with(&builds).is_empty()
    });
    // `stuck` still waits for its secret: the run cannot end by itself.
    run.interrupt();
    let run = run.finish();
    run.exits(130);
    assert!(run.stderr.contains("stopping at once"), "{run:?}");
    assert!(bed.coordinator.events().is_empty());
    for sleep in &sleeps {
        leftovers.assert_none(sleep);
    }
    drop(writer);
}

// ---------------------------------------------------------------------------
// --dry-run, validate, logs.

#[test]
fn dry_run_prints_the_plan_validate_checks_and_logs_prints_the_runs_logs() {
    let bed = Bed::new(&[("pipeline.yaml", DAG), ("rules.yaml", RULES)]);

    let out = bed.run_command(&["--dry-run"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let short = &git(&bed.repo(), &["rev-parse", "HEAD"])[..8];
    let plan: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        plan,
        [
            format!("pipeline.yaml on push main ({short}): 6 jobs").as_str(),
            "  a [one, script]: runs",
            "  b [one, script] after a: runs",
            "  c [one, script] after a: runs",
            "  d [one, script] after b, c: runs",
            "  e [two, script] after a, b, c, d: runs",
            "  f [two, script]: runs",
        ],
        "{stdout}"
    );
    let out = bed
        .run_command(&["rules.yaml", "--dry-run", "--tag", "v1.0"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("  release-tags [test, script]: runs"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  by-hand [test, script]: skipped: manual: run it with --job"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  main-only [test, script]: skipped: its rules exclude it"),
        "{stdout}"
    );
    // Nothing ran, no run was recorded.
    assert!(bed.coordinator.events().is_empty());
    assert!(!bed.repo().join(".executor").exists());

    let out = bed.executor(&["validate"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "pipeline.yaml: valid (6 jobs)\n"
    );
    let out = bed.executor(&["validate", "rules.yaml"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "rules.yaml: valid (9 jobs)\n"
    );
    fs::write(
        bed.repo().join("broken.yaml"),
        "version: 1\njobs:\n  a:\n    script: [true]\n    needs: [b]\n",
    )
    .unwrap();
    let out = bed.executor(&["validate", "broken.yaml"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("broken.yaml:5:"), "{stderr}");
    // executor run refuses it the same way, before running anything.
    let out = bed.run_command(&["broken.yaml"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("broken.yaml:5:"), "{stderr}");
    assert!(!bed.repo().join(".executor").exists());

    // Two runs; `executor logs` shows the latest, or one job of any.
    let first = bed.run(&["--jobs", "2"]);
    first.exits(0);
    let second = bed.run(&["rules.yaml", "--jobs", "2"]);
    second.exits(0);
    let out = bed.executor(&["logs"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("==> every-event <=="), "{stdout}");
    assert!(stdout.contains(&second.log("every-event")), "{stdout}");
    assert!(!stdout.contains("==> a <=="), "{stdout}");
    let out = bed.executor(&["logs", &first.id(), "d"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), first.log("d"));
    assert!(first.log("d").contains("$ bin/mark d-start"));
    let out = bed
        .executor(&["logs", &first.id(), "nope"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("has no job \"nope\""), "{stderr}");
}

// ---------------------------------------------------------------------------
// What `executor run` prints.

const OUTPUT: &str = r#"version: 1
stages: [test, deploy]
defaults:
  image: $REGISTRY/busybox:latest
jobs:
  hello:
    stage: test
    script:
      - echo "hello from $CI_JOB_NAME"
      - echo "to stderr" >&2
  may-fail:
    stage: test
    needs: [hello]
    allow_failure: true
    script: [echo about to fail, exit 3]
  never:
    stage: test
    rules: [{when: never}]
    script: [echo never]
  deploy:
    stage: deploy
    script: [echo deployed]
"#;

/// What changes from run to run in `executor run`'s output: the bed's
/// paths, the registry's port, run ids, commits, digests, durations.
fn output_filters(bed: &Bed) -> Vec<(String, String)> {
    vec![
        (
            regex_quote(&bed.dir.path().display().to_string()),
            "[BED]".into(),
        ),
        (regex_quote(&bed.registry.host), "[REGISTRY]".into()),
        (r"\d{8}-\d{6}-\d{3}-[0-9a-f]{6}".into(), "[RUN_ID]".into()),
        (r"sha256:[0-9a-f]{64}".into(), "[DIGEST]".into()),
        (r"\b[0-9a-f]{40}\b".into(), "[SHA]".into()),
        (r"\(([0-9a-f]{8})\)".into(), "([SHORT_SHA])".into()),
        // Durations, the summary's columns kept as wide.
        (r"\b\d\.\d\ds\b".into(), "N.NNs".into()),
        (r"\b\d\d\.\d\ds\b".into(), " N.NNs".into()),
    ]
}

/// `text` matching itself in a regex.
fn regex_quote(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The live lines, the summary, a dry run's plan and a run that cannot
/// start, as `executor run` prints them (snapshots, with what changes from
/// run to run filtered out).
#[test]
fn run_output_stays_as_it_is() {
    let bed = Bed::new(&[("pipeline.yaml", OUTPUT)]);
    let run = bed.run(&["--jobs", "1"]);
    run.exits(0);
    let dry = bed.run_command(&["--dry-run"]).output().unwrap();
    assert!(dry.status.success());
    let missing = bed.run_command(&["missing.yaml"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
    let filters = output_filters(&bed);
    let filters: Vec<(&str, &str)> = filters
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    insta::with_settings!({ filters => filters }, {
        insta::assert_snapshot!("run_stdout", run.stdout);
        insta::assert_snapshot!("dry_run_stdout", String::from_utf8_lossy(&dry.stdout));
        insta::assert_snapshot!("missing_pipeline_stderr", String::from_utf8_lossy(&missing.stderr));
    });
}

// ---------------------------------------------------------------------------
// The examples.

/// Copies `from` into `to`, recursively.
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn examples_quickstart_run_sh_builds_and_tests_its_image() {
    // run.sh puts busybox in examples/quickstart/rootfs: it runs in a copy
    // of the examples it uses, committed in a repository of its own.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    for example in ["quickstart", "busybox-base"] {
        copy_dir(
            &root.join("examples").join(example),
            &repo.join("examples").join(example),
        );
    }
    fs::copy(
        root.join("examples/common.sh"),
        repo.join("examples/common.sh"),
    )
    .unwrap();
    fs::write(
        repo.join(".gitignore"),
        ".executor/\nexamples/quickstart/rootfs/\n",
    )
    .unwrap();
    git_repo(&repo, &[]);
    let store = dir.path().join("store");
    let out = Command::new("bash")
        .arg(repo.join("examples/quickstart/run.sh"))
        .arg("--cache-dir")
        .arg(&store)
        .env("EXECUTOR", executor_bin())
        .env("NO_COLOR", "1")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("bash runs");
    let run = Run::new(&out, &repo);
    run.exits(0)
        .has("image", "succeeded")
        .has("test", "succeeded");
    assert!(run.status("image").contains("sha256:"), "{run:?}");
    assert!(
        run.log("test").contains("hello from executor"),
        "{}",
        run.log("test")
    );
    // The pipeline passes `executor validate` too.
    let out = Command::new(executor_bin())
        .args(["validate", "examples/quickstart/pipeline.yaml"])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "examples/quickstart/pipeline.yaml: valid (2 jobs)\n"
    );
}
