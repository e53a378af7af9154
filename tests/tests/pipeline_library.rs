//! Pipelines run through the `executor` library, as a server runs them:
//! several at once in one process, each with its own cancellation token,
//! against the real registry (the busybox base pushed there) and real git
//! repositories.
//!
//! What happened is read from the runs' reports, the processes left and a
//! gate the tests hold: a script job calls it with busybox `wget` and waits
//! until the test answers, so a job is known to be running, never guessed
//! from time.

use std::fs;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use executor::pipeline::CancellationToken;
use executor::pipeline::events::{EventSink, JobReport, RunEvent, Stream};
use executor::pipeline::run::{self, JobStatus, RunOptions, RunReport};
use executor::platform::Platform;
use executor::registry::RegistryOptions;
use executor_e2e::{Leftovers, Registry, RegistryKind, git_repo, processes_with};

/// Waits until `ready` holds, or fails the test after two minutes saying
/// what it waited for.
fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A git repository below `dir` holding a pipeline of `jobs` (its `jobs:`
/// entries) in the registry's busybox image.
fn project(dir: &Path, name: &str, jobs: &str) -> PathBuf {
    let repo = dir.join(name);
    let pipeline =
        format!("version: 1\ndefaults:\n  image: $REGISTRY/busybox:latest\njobs:\n{jobs}");
    git_repo(&repo, &[("pipeline.yaml", &pipeline)]);
    repo
}

/// `executor run`'s options for the pipeline in `repo`, against `registry`.
fn options(repo: &Path, store: &Path, registry: &Registry) -> RunOptions {
    RunOptions {
        pipeline: repo.join("pipeline.yaml"),
        repo: None,
        commit: None,
        event: None,
        branch: None,
        tag: None,
        vars: vec![("REGISTRY".to_owned(), registry.host.clone())],
        only: Vec::new(),
        parallel: 2,
        dry_run: false,
        store: store.to_path_buf(),
        platform: Platform::host(),
        registry: RegistryOptions {
            insecure: vec![registry.host.clone()],
            ..RegistryOptions::default()
        },
        logs_base: repo.to_path_buf(),
        secrets: None,
        allow_push: true,
        security: executor::build::SecurityOptions::default(),
        isolation: executor::build::IsolationMode::Namespace,
    }
}

/// Every event of a run, in the order they came.
#[derive(Default)]
struct Recorder(Mutex<Vec<RunEvent>>);

impl EventSink for Recorder {
    fn event(&self, event: &RunEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

impl Recorder {
    fn events(&self) -> Vec<RunEvent> {
        self.0.lock().unwrap().clone()
    }

    /// The log lines of `job`, from its events.
    fn lines(&self, job: &str) -> Vec<(Stream, String)> {
        self.events()
            .into_iter()
            .filter_map(|event| match event {
                RunEvent::Log {
                    job: j,
                    stream,
                    line,
                } if j == job => Some((stream, line)),
                _ => None,
            })
            .collect()
    }

    /// The reports of the jobs that finished, in the order they did.
    fn finished(&self) -> Vec<JobReport> {
        self.events()
            .into_iter()
            .filter_map(|event| match event {
                RunEvent::JobFinished(report) => Some(report),
                _ => None,
            })
            .collect()
    }
}

/// Each job's name and status, in the report's order.
fn statuses(report: &RunReport) -> Vec<(String, JobStatus)> {
    report
        .jobs
        .iter()
        .map(|job| (job.name.clone(), job.status.clone()))
        .collect()
}

#[test]
fn two_runs_at_once_one_cancelled_mid_job_and_the_other_completes() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let _ = registry.push_busybox();
    let dir = tempfile::Builder::new()
        .prefix("executor-library-")
        .tempdir()
        .unwrap();
    let gate = TcpListener::bind("127.0.0.1:0").unwrap();
    gate.set_nonblocking(true).unwrap();
    let gate_host = gate.local_addr().unwrap().to_string();
    let marker = format!("{}", 100_000_000 + std::process::id() % 800_000_000);
    let cancelled = project(
        dir.path(),
        "cancelled",
        &format!(
            "  long:\n    script: [sleep {marker}]\n\
             \x20 after:\n    needs: [long]\n    script: [echo never]\n"
        ),
    );
    let completes = project(
        dir.path(),
        "completes",
        &format!(
            "  gated:\n    script: ['wget -q -O - http://{gate_host}/open']\n\
             \x20 next:\n    needs: [gated]\n    script: [echo next ran]\n\
             \x20 side:\n    script: [echo side ran]\n"
        ),
    );
    // One store, as one server has.
    let store = dir.path().join("store");
    fs::create_dir_all(&store).unwrap();
    let leftovers = Leftovers::before(&store).owning(dir.path());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (cancel_one, keep_other) = (CancellationToken::new(), CancellationToken::new());
    let (one, other) = (
        options(&cancelled, &store, &registry),
        options(&completes, &store, &registry),
    );
    let (recorder_one, recorder_other) =
        (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
    let (events_one, events_other): (Arc<dyn EventSink>, Arc<dyn EventSink>) =
        (recorder_one.clone(), recorder_other.clone());
    let (first, second) = std::thread::scope(|scope| {
        let first = scope.spawn(|| {
            run::run(&one, runtime.handle(), &cancel_one, &events_one).map_err(|e| e.to_string())
        });
        let second = scope.spawn(|| {
            run::run(&other, runtime.handle(), &keep_other, &events_other)
                .map_err(|e| e.to_string())
        });
        // Both runs are mid-job: `long` sleeps, `gated` waits at the gate.
        let mut waiting: Option<TcpStream> = None;
        wait_until("the gated job calls the gate", || {
            waiting = gate.accept().ok().map(|(stream, _)| stream);
            waiting.is_some()
        });
        wait_until("the long job sleeps", || {
            !processes_with(&format!("sleep {marker}")).is_empty()
        });
        cancel_one.cancel();
        let first = first.join().unwrap();
        // The other run's job is still waiting; now it may go on.
        let stream = waiting.unwrap();
        stream.set_nonblocking(false).unwrap();
        let mut request = String::new();
        BufReader::new(&stream).read_line(&mut request).unwrap();
        assert!(request.starts_with("GET /open "), "{request:?}");
        (&stream)
            .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nopen\n")
            .unwrap();
        drop(stream);
        (first, second.join().unwrap())
    });

    let first = first.expect("the cancelled run started");
    assert!(first.interrupted);
    assert!(!first.success());
    assert_eq!(
        statuses(&first),
        [
            ("long".to_owned(), JobStatus::Canceled),
            ("after".to_owned(), JobStatus::Canceled),
        ]
    );
    let second = second.expect("the other run started");
    assert!(!second.interrupted);
    assert!(second.success(), "{:?}", second.jobs);
    let mut done = statuses(&second);
    done.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        done,
        [
            ("gated".to_owned(), JobStatus::Succeeded),
            ("next".to_owned(), JobStatus::Succeeded),
            ("side".to_owned(), JobStatus::Succeeded),
        ]
    );
    for job in &second.jobs {
        assert_eq!(job.attempts, 1, "{job:?}");
    }
    let log = |run: &RunReport, repo: &Path, job: &str| {
        repo.join(".executor/runs")
            .join(run.id.as_str())
            .join(format!("{job}.log"))
    };
    let read = |path: PathBuf| fs::read_to_string(path).unwrap();
    assert!(read(log(&second, &completes, "gated")).contains("open"));
    assert!(read(log(&second, &completes, "next")).contains("next ran"));
    // Canceled before it started: it never had a log.
    assert!(!log(&first, &cancelled, "after").exists());

    // What each run reported as it went: its own jobs only.
    let events = recorder_other.events();
    assert!(
        matches!(&events[0], RunEvent::Planned(plan) if plan.jobs.len() == 3),
        "{events:?}"
    );
    assert!(
        matches!(&events[1], RunEvent::RunStarted { id, .. } if *id == second.id),
        "{events:?}"
    );
    assert!(
        matches!(events.last(), Some(RunEvent::RunFinished { report, .. }) if *report == second),
        "{events:?}"
    );
    let mut finished = recorder_other.finished();
    finished.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(finished, {
        let mut jobs = second.jobs.clone();
        jobs.sort_by(|a, b| a.name.cmp(&b.name));
        jobs
    });
    for job in ["gated", "next", "side"] {
        let started: Vec<u32> = events
            .iter()
            .filter_map(|event| match event {
                RunEvent::JobStarted { job: j, attempt } if j == job => Some(*attempt),
                _ => None,
            })
            .collect();
        assert_eq!(started, [1], "{job}: {events:?}");
    }
    let next = recorder_other.lines("next");
    assert!(
        next.contains(&(Stream::Stdout, "next ran".to_owned())),
        "{next:?}"
    );
    assert_eq!(
        next.last(),
        Some(&(Stream::Runner, "job succeeded".to_owned()))
    );
    assert!(recorder_other.lines("long").is_empty());
    let cancelled_finished = recorder_one.finished();
    assert_eq!(cancelled_finished.len(), 2, "{cancelled_finished:?}");
    assert!(
        cancelled_finished
            .iter()
            .all(|r| r.status == JobStatus::Canceled)
    );
    assert!(recorder_one.lines("gated").is_empty());
    leftovers.assert_none(&format!("sleep {marker}"));
}
