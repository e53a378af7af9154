//! The test bed of the `executor serve` tests (`tests/server.rs`,
//! `tests/web_ui.rs`): the busybox image in a registry, a repository
//! holding a pipeline on a git HTTP server, a recording forge API, the
//! server's configuration and secrets, and the server and runner
//! processes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use executor::server::webhook::github_signature;
use serde_json::{Value, json};

use crate::forge::{Answer, Forge, request};
use crate::{GitHttpServer, Registry, RegistryKind, executor_bin, free_port, git, git_repo};

pub const HOOK_SECRET: &str = "hook-s3cret";
pub const DEPLOY_SECRET: &str = "deploy-value-s3cret";
pub const RUNNER_TOKEN: &str = "runner-token-1";
pub const API_TOKEN: &str = "api-token-1";
pub const REPO: &str = "acme/app";

/// Waits until `ready` gives a value, or fails the test after three
/// minutes saying what it waited for.
pub fn wait_for<T>(what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(value) = ready() {
            return value;
        }
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub struct Bed {
    pub dir: tempfile::TempDir,
    pub registry: Registry,
    pub git: GitHttpServer,
    pub forge: Forge,
    /// The work tree whose bare clone the git server serves.
    pub work: PathBuf,
}

impl Bed {
    /// A repository `acme/app` holding `jobs` (its `jobs:` entries, in
    /// the registry's busybox image), served over git HTTP.
    #[must_use]
    pub fn new(jobs: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::start(RegistryKind::Anonymous);
        let _ = registry.push_busybox();
        let git_server = GitHttpServer::start();
        let work = dir.path().join("work");
        let pipeline = format!(
            "version: 1\ndefaults:\n  image: {}/busybox:latest\njobs:\n{jobs}",
            registry.host
        );
        git_repo(&work, &[("pipeline.yaml", &pipeline)]);
        let bed = Self {
            dir,
            registry,
            git: git_server,
            forge: Forge::start(),
            work,
        };
        bed.publish();
        for (name, value) in [
            ("hook", HOOK_SECRET),
            ("forge-token", "forge-token-value"),
            ("deploy", DEPLOY_SECRET),
            ("runner-token", RUNNER_TOKEN),
            ("api-token", API_TOKEN),
        ] {
            fs::write(bed.dir.path().join(name), value).unwrap();
        }
        bed
    }

    /// (Re)publishes the work tree to the git server.
    pub fn publish(&self) {
        let bare = self.git.repos().join("app.git");
        let _ = fs::remove_dir_all(&bare);
        git(
            self.dir.path(),
            &[
                "clone",
                "-q",
                "--bare",
                &self.work.display().to_string(),
                &bare.display().to_string(),
            ],
        );
    }

    pub fn head(&self) -> String {
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// Writes `executor.toml` for a server on a free port; `database` is a
    /// PostgreSQL URL or `None` for SQLite in `data`.
    pub fn config(
        &self,
        name: &str,
        forge: &str,
        database: Option<&str>,
        data: &str,
    ) -> (PathBuf, String) {
        self.config_with(name, forge, database, data, "")
    }

    /// [`Bed::config`] with `extra` (TOML tables) at its end.
    pub fn config_with(
        &self,
        name: &str,
        forge: &str,
        database: Option<&str>,
        data: &str,
        extra: &str,
    ) -> (PathBuf, String) {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let database = database.map_or_else(String::new, |url| {
            fs::write(self.dir.path().join("database-url"), url).unwrap();
            "database_url = { file = \"database-url\" }\n".to_owned()
        });
        let text = format!(
            r#"listen = "{listen}"
data_dir = "{data}"
{database}base_url = "http://ci.example.test"

[queue]
lease_seconds = 3
heartbeat_seconds = 0.5
requeue_interval_seconds = 0.5
grace_seconds = 60
claim_wait_seconds = 1

[runner]
cache_dir = "cache"
insecure_registries = ["{registry}"]
jobs = 2

[[repository]]
name = "{REPO}"
clone_url = "{clone}"
forge = "{forge}"
api_url = "{api}"
webhook_secret = {{ file = "hook" }}
forge_token = {{ file = "forge-token" }}
secrets = {{ DEPLOY_TOKEN = {{ file = "deploy" }} }}

[[runner_token]]
name = "runner"
token = {{ file = "runner-token" }}

[[api_token]]
name = "admin"
token = {{ file = "api-token" }}
{extra}"#,
            registry = self.registry.host,
            clone = self.git.url("app.git"),
            api = self.forge.url(),
        );
        let path = self.dir.path().join(name);
        fs::write(&path, text).unwrap();
        (path, listen)
    }

    /// Starts `executor serve` with `config` and `runners` runners; waits
    /// until it answers.
    pub fn serve(&self, config: &Path, listen: &str, runners: usize) -> Server {
        let child = Command::new(executor_bin())
            .args(["serve", "--config"])
            .arg(config)
            .args(["--runners", &runners.to_string()])
            .env("TMPDIR", self.dir.path())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let server = Server {
            host: listen.to_owned(),
            child,
        };
        wait_for("the server to answer /healthz", || {
            request(&server.host, "GET", "/healthz", &[], b"").filter(|a| a.status == 200)
        });
        server
    }

    /// Starts `executor runner` against `server`.
    pub fn runner(&self, server: &Server) -> Child {
        self.runner_command(server).spawn().unwrap()
    }

    pub fn runner_command(&self, server: &Server) -> Command {
        let mut command = Command::new(executor_bin());
        command
            .args([
                "runner",
                "--server",
                &format!("http://{}", server.host),
                "--token-file",
            ])
            .arg(self.dir.path().join("runner-token"))
            .args(["--cache-dir"])
            .arg(self.dir.path().join("runner-cache"))
            .args(["--insecure-registry", &self.registry.host, "--grace", "60"])
            .env("TMPDIR", self.dir.path())
            .stdin(Stdio::null());
        command
    }

    /// The GitHub push fixture for `commit` on `main`, rewritten to this
    /// bed's repository.
    pub fn github_push(&self, commit: &str) -> Vec<u8> {
        let mut payload = fixture("github/push/with-new-branch.payload.json");
        payload["ref"] = json!("refs/heads/main");
        payload["after"] = json!(commit);
        payload["head_commit"]["id"] = json!(commit);
        payload["head_commit"]["message"] = json!("change");
        payload["repository"]["full_name"] = json!(REPO);
        payload["repository"]["clone_url"] = json!(self.git.url("app.git"));
        serde_json::to_vec(&payload).unwrap()
    }
}

/// A webhook fixture (`shared/fixtures/webhooks`, or
/// `EXECUTOR_WEBHOOK_FIXTURES`).
pub fn fixture(path: &str) -> Value {
    let base = std::env::var_os("EXECUTOR_WEBHOOK_FIXTURES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/webhooks"),
        PathBuf::from,
    );
    let file = base.join(path);
    let bytes = fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    serde_json::from_slice(&bytes).unwrap()
}

pub struct Server {
    pub host: String,
    pub child: Child,
}

impl Server {
    #[must_use]
    pub fn get(&self, path: &str) -> Answer {
        request(&self.host, "GET", path, &[], b"").expect("the server answers")
    }

    #[must_use]
    pub fn github(
        &self,
        delivery: &str,
        event: &str,
        body: &[u8],
        signature: Option<&str>,
    ) -> Answer {
        let signed = github_signature(HOOK_SECRET.as_bytes(), body);
        let mut headers = vec![
            ("X-GitHub-Event", event),
            ("X-GitHub-Delivery", delivery),
            ("Content-Type", "application/json"),
        ];
        match signature {
            Some("") => {}
            Some(signature) => headers.push(("X-Hub-Signature-256", signature)),
            None => headers.push(("X-Hub-Signature-256", &signed)),
        }
        request(&self.host, "POST", "/hooks/github", &headers, body).expect("the server answers")
    }

    #[must_use]
    pub fn run(&self, id: i64) -> Value {
        self.get(&format!("/api/runs/{id}")).json()
    }

    /// Waits until run `id` is finished; answers it.
    #[must_use]
    pub fn finished(&self, id: i64) -> Value {
        wait_for(&format!("run {id} to finish"), || {
            let run = self.run(id);
            let status = run["status"].as_str().unwrap_or_default();
            (!matches!(status, "queued" | "running")).then_some(run)
        })
    }

    #[must_use]
    pub fn runs(&self) -> Vec<Value> {
        self.get("/api/runs").json()["runs"]
            .as_array()
            .unwrap()
            .clone()
    }

    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
