//! The pipeline runner's parts, end to end, before `executor run` drives
//! them: through the `executor` library against the real registry (the
//! busybox base pushed there), real git repositories (a local path and git
//! over HTTP) and the `executor logs` command.
//!
//! Covered: a script job in an image from the registry (its output with
//! each command echoed, variables and secrets in its environment, the
//! checkout mounted read-write at `CI_PROJECT_DIR`), a failing command's
//! status and `after_script` after it, a timeout that kills the job's
//! whole process tree and leaves no process, mount or scratch directory,
//! secrets masked in the live output and the log file, checkouts of exact
//! commits, and `executor logs` printing a run's logs.
//!
//! The script jobs mount overlays in this test process's mount namespace,
//! so they run one at a time ([`serial`]): a check for leftover mounts must
//! not see another test's.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use executor::image::store::Store;
use executor::pipeline::checkout::{Checkout, GitRef};
use executor::pipeline::events::{EventSink, RunEvent};
use executor::pipeline::logs::{RunId, RunLogs};
use executor::pipeline::script::{JobImage, JobOutcome, ScriptError, ScriptJob, ScriptStatus};
use executor::pipeline::vars::{PipelineSource, Predefined, expand_all};
use executor::registry::RegistryOptions;
use executor::rootfs::remote::Remote;
use executor::sandbox::Status;
use executor_e2e::{
    GitHttpServer, Leftovers, Registry, RegistryKind, executor_bin, git, git_commit, git_repo,
};

/// One script job at a time in this process (see the module's doc).
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A registry with the busybox base, a store, and the job's checkout: a
/// git repository with one commit.
struct Bed {
    registry: Registry,
    base: String,
    dir: tempfile::TempDir,
}

impl Bed {
    fn new() -> Self {
        let registry = Registry::start(RegistryKind::Anonymous);
        let base = registry.push_busybox();
        let dir = tempfile::Builder::new()
            .prefix("executor-runner-")
            .tempdir()
            .expect("a temp dir");
        git_repo(
            &dir.path().join("app"),
            &[("README", "hello from the checkout\n")],
        );
        Self {
            registry,
            base,
            dir,
        }
    }

    fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn checkout(&self) -> Checkout {
        Checkout::working_tree(&self.dir.path().join("app")).expect("the repository")
    }

    /// A job running `script` in the busybox image, with the predefined
    /// variables of a push pipeline of the checkout.
    fn job(&self, name: &str, script: &[&str]) -> ScriptJob {
        let checkout = self.checkout();
        let predefined = Predefined::new(&checkout, "1", PipelineSource::Push);
        let mut job = ScriptJob::new(
            JobImage::Reference(self.base.clone()),
            strings(script),
            checkout.dir.clone(),
            &predefined.project_dir,
        );
        job.variables = predefined.job(name, "1");
        job
    }

    /// Runs `job`, its output to `output`.
    fn run_with(&self, job: &ScriptJob, output: &dyn Fn(&[u8])) -> Result<JobOutcome, ScriptError> {
        let store = Store::open(self.store_dir()).expect("the store");
        let remote = Remote::from_options(RegistryOptions {
            insecure: vec![self.registry.host.clone()],
            ..RegistryOptions::default()
        })
        .expect("a registry client");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        executor::pipeline::run_script(job, &store, &remote, runtime.handle(), output)
    }

    /// Runs `job`; its outcome and output.
    fn run(&self, job: &ScriptJob) -> (JobOutcome, String) {
        let output = std::cell::RefCell::new(Vec::new());
        let outcome = self
            .run_with(job, &|chunk| output.borrow_mut().extend_from_slice(chunk))
            .unwrap_or_else(|e| panic!("the job could not run: {e}"));
        let output = String::from_utf8(output.into_inner()).expect("UTF-8 output");
        (outcome, output)
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn a_script_job_runs_in_the_registrys_image_with_its_checkout_and_variables() {
    let _serial = serial();
    let bed = Bed::new();
    let mut job = bed.job(
        "unit tests",
        &[
            "pwd",
            "cat README",
            "echo \"$CI_JOB_NAME on $CI_COMMIT_BRANCH at $CI_COMMIT_SHORT_SHA\"",
            "echo \"$GREETING, token ${DEPLOY_TOKEN}\"",
            "echo made by the job > built.txt",
        ],
    );
    job.before_script = strings(&["echo preparing"]);
    job.variables
        .push(("GREETING".into(), "hello from $CI_COMMIT_BRANCH".into()));
    job.variables = expand_all(&job.variables);
    job.secrets = vec![("DEPLOY_TOKEN".into(), "tok-4242".into())];
    let (outcome, output) = bed.run(&job);
    assert_eq!(outcome.script, ScriptStatus::Succeeded, "{output}");
    let checkout = bed.checkout();
    assert_eq!(
        output,
        format!(
            "$ echo preparing\npreparing\n$ pwd\n/builds/app\n$ cat README\nhello from the checkout\n\
             $ echo \"$CI_JOB_NAME on $CI_COMMIT_BRANCH at $CI_COMMIT_SHORT_SHA\"\n\
             unit tests on main at {}\n\
             $ echo \"$GREETING, token ${{DEPLOY_TOKEN}}\"\nhello from main, token tok-4242\n\
             $ echo made by the job > built.txt\n",
            &checkout.sha[..8]
        )
    );
    assert_eq!(
        fs::read_to_string(checkout.dir.join("built.txt")).expect("the job's file"),
        "made by the job\n"
    );
}

#[test]
fn a_failing_command_fails_the_job_and_after_script_runs_after_it() {
    let _serial = serial();
    let bed = Bed::new();
    let mut job = bed.job(
        "failing",
        &["echo step one", "test -e no-such-file", "echo never"],
    );
    job.after_script = strings(&["echo after on $CI_COMMIT_REF_NAME", "exit 7"]);
    let (outcome, output) = bed.run(&job);
    assert_eq!(outcome.script, ScriptStatus::Failed(Status::Exited(1)));
    assert!(!outcome.success());
    // after_script failing does not change the job's result.
    assert_eq!(
        outcome.after_script,
        Some(ScriptStatus::Failed(Status::Exited(7)))
    );
    assert_eq!(
        output,
        "$ echo step one\nstep one\n$ test -e no-such-file\nRunning after_script\n\
         $ echo after on $CI_COMMIT_REF_NAME\nafter on main\n$ exit 7\n"
    );
}

#[test]
fn a_timeout_kills_the_jobs_whole_process_tree() {
    let _serial = serial();
    let bed = Bed::new();
    let leftovers = Leftovers::before(&bed.store_dir()).owning(bed.dir.path());
    let marker = 100_000_000 + u64::from(std::process::id());
    let mut job = bed.job(
        "slow",
        &[
            &format!("(sleep {marker} &); echo started"),
            &format!("sleep {marker}"),
        ],
    );
    job.timeout = Some(Duration::from_secs(2));
    let (outcome, output) = bed.run(&job);
    assert_eq!(
        outcome.script,
        ScriptStatus::TimedOut(Duration::from_secs(2))
    );
    assert!(output.contains("\nstarted\n"), "{output}");
    leftovers.assert_none(&format!("sleep {marker}"));
    let scratch: Vec<String> = fs::read_dir(bed.store_dir().join("tmp"))
        .expect("the store's tmp")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("job-"))
        .collect();
    assert!(scratch.is_empty(), "{scratch:?}");
}

/// A sink the test reads back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<String>>);

impl EventSink for Captured {
    fn event(&self, event: &RunEvent) {
        if let RunEvent::Log { job, line, .. } = event {
            let mut text = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            let _ = writeln!(text, "{job} | {line}");
        }
    }
}

#[test]
fn secrets_are_masked_in_the_live_output_and_the_log_file() {
    let _serial = serial();
    let bed = Bed::new();
    let secret = "s3cr3t-value-77";
    let mut job = bed.job(
        "deploy",
        &[
            "echo \"token=$TOKEN\"",
            // The secret in two writes, with a pause between them.
            "printf %s \"$HEAD\"; sleep 0.2; printf '%s twice\\n' \"$TAIL\"",
            "printf \"no newline $TOKEN\"",
        ],
    );
    job.secrets = vec![("TOKEN".into(), secret.into())];
    job.variables.push(("HEAD".into(), "s3cr3t-".into()));
    job.variables.push(("TAIL".into(), "value-77".into()));
    let live = Captured::default();
    let logs = RunLogs::create(
        bed.dir.path(),
        RunId::new(),
        &["deploy", "x"],
        Arc::new(live.clone()),
    )
    .expect("the run's logs");
    let log = logs
        .job("deploy", &[secret.to_owned()])
        .expect("the job's log");
    let outcome = bed
        .run_with(&job, &|chunk| log.write(chunk))
        .expect("the job runs");
    assert!(outcome.success());
    log.line("job succeeded");
    log.finish().expect("the log is written");
    let file = fs::read_to_string(log.path()).expect("the log file");
    assert_eq!(
        file,
        "$ echo \"token=$TOKEN\"\ntoken=[MASKED]\n\
         $ printf %s \"$HEAD\"; sleep 0.2; printf '%s twice\\n' \"$TAIL\"\n[MASKED] twice\n\
         $ printf \"no newline $TOKEN\"\nno newline [MASKED]\njob succeeded\n"
    );
    let live = live.0.lock().expect("the live output").clone();
    assert!(!live.contains("s3cr3t"), "{live}");
    assert!(live.contains("deploy | token=[MASKED]\n"), "{live}");
    assert!(live.contains("deploy | no newline [MASKED]\n"), "{live}");
}

/// A repository with three commits on `main` and a tag on the second.
fn history(dir: &Path) -> Vec<String> {
    let mut shas = vec![git_repo(dir, &[("file", "one\n")])];
    shas.push(git_commit(dir, &[("file", "two\n")], "second"));
    git(dir, &["tag", "v2"]);
    shas.push(git_commit(dir, &[("file", "three\n")], "third"));
    shas
}

#[test]
fn a_checkout_is_the_exact_commit_from_a_path_or_over_http() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let repo = dir.path().join("repo");
    let shas = history(&repo);
    let server = GitHttpServer::start();
    git(
        dir.path(),
        &[
            "clone",
            "-q",
            "--bare",
            repo.to_str().expect("UTF-8"),
            server.repos().join("app.git").to_str().expect("UTF-8"),
        ],
    );
    let url = server.url("app.git");
    let sources = [repo.to_string_lossy().into_owned(), url.clone()];
    for (n, source) in sources.iter().enumerate() {
        let cases = [
            (shas[1].as_str(), &shas[1], None, "two\n"),
            (
                "main",
                &shas[2],
                Some(GitRef::Branch("main".into())),
                "three\n",
            ),
            ("v2", &shas[1], Some(GitRef::Tag("v2".into())), "two\n"),
            (&shas[0][..10], &shas[0], None, "one\n"),
        ];
        for (m, (rev, sha, git_ref, content)) in cases.into_iter().enumerate() {
            let into = dir.path().join(format!("checkout-{n}-{m}"));
            let checkout = Checkout::clone_commit(source, rev, &into)
                .unwrap_or_else(|e| panic!("{source} {rev}: {e}"));
            assert_eq!(&checkout.sha, sha, "{source} {rev}");
            assert_eq!(checkout.git_ref, git_ref, "{source} {rev}");
            assert_eq!(checkout.repository_url, *source);
            assert_eq!(git(&into, &["rev-parse", "HEAD"]), *sha, "{source} {rev}");
            assert_eq!(
                fs::read_to_string(into.join("file")).expect("the file"),
                content
            );
        }
    }
    // Over HTTP a branch's tip comes shallow: the commit and its parent
    // (which `rules: changes` compares it with), not the third commit.
    let into = dir.path().join("shallow");
    Checkout::clone_commit(&url, "main", &into).expect("a clone");
    assert_eq!(git(&into, &["rev-list", "--count", "HEAD"]), "2");

    let err = Checkout::clone_commit(&url, "no-such-branch", &dir.path().join("x"))
        .expect_err("an unknown rev");
    let message = err.to_string();
    assert!(
        message.contains(&url) && message.contains("no-such-branch"),
        "{message}"
    );
}

#[test]
fn executor_logs_prints_a_runs_logs() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let project = dir.path().join("app");
    git_repo(&project, &[("README", "x\n")]);
    let write_run = |id: &RunId, jobs: &[(&str, &str)]| {
        let logs = RunLogs::create(&project, id.clone(), &[], Arc::new(|_: &RunEvent| {}))
            .expect("the run's logs");
        for (job, text) in jobs {
            let log = logs.job(job, &[]).expect("a job's log");
            log.write(text.as_bytes());
            log.finish().expect("the log is written");
        }
    };
    let older = RunId::at(1_700_000_000_000, 2);
    write_run(&older, &[("build", "old build\n")]);
    let newer = RunId::at(1_700_000_000_001, 1);
    write_run(
        &newer,
        &[("build", "compiling\ndone\n"), ("test: [a, 1/2]", "ok")],
    );
    let logs = |cwd: &Path, args: &[&str]| {
        let out = Command::new(executor_bin())
            .arg("logs")
            .args(args)
            .current_dir(cwd)
            .env_remove("EXECUTOR_PROJECT_DIR")
            .output()
            .expect("executor runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The latest run, from anywhere in the working tree.
    let sub = project.join("sub");
    fs::create_dir_all(&sub).expect("a subdirectory");
    let (code, stdout, stderr) = logs(&sub, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout,
        "==> build <==\ncompiling\ndone\n\n==> test: [a, 1/2] <==\nok\n"
    );
    // One job, of the latest run or of a run by id.
    let (_, stdout, _) = logs(&project, &["test: [a, 1/2]"]);
    assert_eq!(stdout, "ok\n");
    let (_, stdout, _) = logs(dir.path(), &["-C", "app", older.as_str(), "build"]);
    assert_eq!(stdout, "old build\n");
    // Errors name what is missing and what there is.
    let (code, _, stderr) = logs(&project, &[older.as_str(), "deploy"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("no job \"deploy\"") && stderr.contains("hint: its jobs are: build"),
        "{stderr}"
    );
    let (code, _, stderr) = logs(dir.path(), &[]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no runs in"), "{stderr}");
}
