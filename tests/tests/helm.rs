//! The Helm chart `helm/executor` and the CI examples (issue 16).
//!
//! The chart is rendered by the real Helm engine (PyPI's helm-python-sdk:
//! Helm's Go SDK as a C library, no helm binary) through
//! `tests/helm/chart.py`, in the virtual environment `.ci/run` makes
//! (`target/venv`, or `EXECUTOR_HELM_VENV`). Three things are checked:
//! the renders of `helm/executor/ci/*-values.yaml` lint, validate and keep
//! the chart's invariants, and the bad values of `tests/helm/bad-values/`
//! are refused naming the value; the rendered server and runner pods,
//! started as a runtime starts them (their command, arguments,
//! environment, ConfigMap, Secret and emptyDir mounts, in the default pod
//! of `executor_e2e::pod`), take a signed webhook, run it and push its
//! image; and the manifests and `executor` command lines of
//! `examples/ci/` validate and parse.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use executor::server::webhook::github_signature;
use executor_e2e::forge::request;
use executor_e2e::{
    GitHttpServer, Pod, PodImage, Registry, RegistryKind, RunningPod, executor_bin, free_port, git,
    git_repo,
};
use serde_json::{Value, json};

const HOOK_SECRET: &str = "helm-hook-s3cret";
const RUNNER_TOKEN: &str = "helm-runner-token";
/// The Secret the values name, and its keys.
const SECRET_NAME: &str = "executor-secrets";

/// The repository root (the checks run from there: `../shared` is the
/// fixtures beside the clone).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// The venv's Python, with helm-python-sdk and kubernetes-validate.
fn python() -> PathBuf {
    let venv = std::env::var_os("EXECUTOR_HELM_VENV")
        .map_or_else(|| root().join("target/venv"), PathBuf::from);
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: the chart's checks need a Python venv with PyPI's helm-python-sdk and \
         kubernetes-validate (.ci/run makes target/venv: python3 -m venv target/venv && \
         target/venv/bin/pip install helm-python-sdk kubernetes-validate; or set EXECUTOR_HELM_VENV)",
        python.display()
    );
    python
}

/// `tests/helm/chart.py ARGS` from the repository root.
fn chart_py(args: &[&str]) -> Output {
    Command::new(python())
        .arg("tests/helm/chart.py")
        .args(args)
        .current_dir(root())
        .stdin(Stdio::null())
        .output()
        .expect("the venv's python runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_chart_lints_renders_validates_and_refuses_bad_values() {
    let out = chart_py(&[
        "check",
        "helm/executor",
        "../shared/fixtures/kubernetes/keda",
        "tests/helm/bad-values",
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // The matrix the issue names, each rendered; at least ten refusals.
    for file in [
        "default-values.yaml",
        "postgres-replicas-values.yaml",
        "keda-values.yaml",
        "ingress-tls-values.yaml",
        "namespace-isolation-values.yaml",
    ] {
        assert!(
            stdout.contains(&format!("ok ci/{file}: ")),
            "{file}:\n{stdout}"
        );
    }
    let refused = stdout.lines().filter(|l| l.contains(" refused: ")).count();
    assert!(
        refused >= 10,
        "{refused} bad values files refused:\n{stdout}"
    );
}

// ---------------------------------------------------------------------------
// The rendered pods, run.

/// The chart rendered with `values` (over its defaults), as JSON.
fn render(values: &Value) -> Vec<Value> {
    let out = chart_py(&["render", "helm/executor", &values.to_string()]);
    assert!(out.status.success(), "render: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("the render as JSON")
}

fn find<'a>(docs: &'a [Value], kind: &str, suffix: &str) -> &'a Value {
    docs.iter()
        .find(|d| {
            d["kind"] == kind
                && d["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .ends_with(suffix)
        })
        .unwrap_or_else(|| panic!("no {kind} named *{suffix} in the render"))
}

/// A container of a rendered pod, as a runtime would start it here.
struct Container {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    /// (host directory, path in the container).
    mounts: Vec<(PathBuf, String)>,
    cwd: String,
    /// The path and port of each httpGet probe.
    probes: Vec<(String, u16)>,
}

/// Reads the pod spec `spec` as the kubelet would: ConfigMaps from the
/// render, the Secret `SECRET_NAME` from `secret`, emptyDirs and claims as
/// fresh directories under `dir`. Fails on what the pod harness cannot
/// give (a securityContext asking for more than a default pod).
fn container(spec: &Value, docs: &[Value], secret: &BTreeMap<&str, &str>, dir: &Path) -> Container {
    let c = &spec["containers"][0];
    assert_no_more_than_a_default_pod(spec, c);
    let secret_value = |reference: &Value| -> String {
        assert_eq!(
            reference["name"], SECRET_NAME,
            "a Secret the test does not have: {reference}"
        );
        let key = reference["key"].as_str().expect("a key");
        (*secret
            .get(key)
            .unwrap_or_else(|| panic!("no key {key} in the Secret")))
        .to_owned()
    };
    let mut volumes: BTreeMap<String, PathBuf> = BTreeMap::new();
    for volume in spec["volumes"].as_array().expect("volumes") {
        let name = volume["name"].as_str().expect("a volume name");
        let path = dir.join(name);
        fs::create_dir_all(&path).unwrap();
        if let Some(map) = volume.get("configMap") {
            let wanted = map["name"].as_str().unwrap();
            let config = docs
                .iter()
                .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == wanted)
                .unwrap_or_else(|| {
                    panic!("the pod mounts ConfigMap {wanted}, which the chart does not make")
                });
            for (key, value) in config["data"].as_object().expect("data") {
                fs::write(path.join(key), value.as_str().unwrap()).unwrap();
            }
        } else if let Some(s) = volume.get("secret") {
            assert_eq!(
                s["secretName"], SECRET_NAME,
                "a Secret the test does not have: {s}"
            );
            match s.get("items") {
                Some(items) => {
                    for item in items.as_array().unwrap() {
                        let value = secret_value(&json!({"name": SECRET_NAME, "key": item["key"]}));
                        fs::write(path.join(item["path"].as_str().unwrap()), value).unwrap();
                    }
                }
                None => {
                    for (key, value) in secret {
                        fs::write(path.join(key), value).unwrap();
                    }
                }
            }
        } else {
            assert!(
                volume.get("emptyDir").is_some()
                    || volume.get("ephemeral").is_some()
                    || volume.get("persistentVolumeClaim").is_some(),
                "a volume the test cannot give: {volume}"
            );
        }
        volumes.insert(name.to_owned(), path);
    }
    let mounts = c["volumeMounts"]
        .as_array()
        .expect("volume mounts")
        .iter()
        .map(|m| {
            assert!(m.get("subPath").is_none(), "subPath is not emulated: {m}");
            let name = m["name"].as_str().unwrap();
            let host = volumes
                .get(name)
                .unwrap_or_else(|| panic!("mount of a missing volume {name}"));
            (host.clone(), m["mountPath"].as_str().unwrap().to_owned())
        })
        .collect();
    let env = c["env"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| {
                    let value = match e.get("value") {
                        Some(v) => v.as_str().expect("a string value").to_owned(),
                        None => secret_value(&e["valueFrom"]["secretKeyRef"]),
                    };
                    (e["name"].as_str().unwrap().to_owned(), value)
                })
                .collect()
        })
        .unwrap_or_default();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s.as_str().expect("a string").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut argv = strings(&c["command"]);
    assert!(!argv.is_empty(), "the container names its command");
    argv.extend(strings(&c["args"]));
    let port_of = |port: &Value| -> u16 {
        match port.as_str() {
            Some(name) => c["ports"]
                .as_array()
                .and_then(|ports| ports.iter().find(|p| p["name"] == name))
                .and_then(|p| p["containerPort"].as_u64())
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or_else(|| panic!("no container port named {name}")),
            None => u16::try_from(port.as_u64().expect("a port")).expect("a port"),
        }
    };
    let probes = ["startupProbe", "livenessProbe", "readinessProbe"]
        .iter()
        .filter_map(|p| c.get(*p))
        .map(|p| {
            (
                p["httpGet"]["path"]
                    .as_str()
                    .expect("an httpGet probe")
                    .to_owned(),
                port_of(&p["httpGet"]["port"]),
            )
        })
        .collect();
    Container {
        argv,
        env,
        mounts,
        // The image's WORKDIR.
        cwd: c["workingDir"].as_str().unwrap_or("/workspace").to_owned(),
        probes,
    }
}

/// The pod harness runs root with Docker's default capabilities,
/// `no_new_privs` and RuntimeDefault's seccomp refusals: a pod asking for
/// more (or less) is not what it runs.
fn assert_no_more_than_a_default_pod(spec: &Value, c: &Value) {
    let sc = &c["securityContext"];
    let pod = &spec["securityContext"];
    assert_ne!(spec["hostUsers"], false, "hostUsers: false is not emulated");
    assert_ne!(sc["privileged"], true);
    assert!(
        sc["capabilities"]["add"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "added capabilities are not emulated: {sc}"
    );
    assert_eq!(
        sc["allowPrivilegeEscalation"], false,
        "no_new_privs is what the harness sets"
    );
    let seccomp = sc["seccompProfile"]["type"]
        .as_str()
        .or_else(|| pod["seccompProfile"]["type"].as_str());
    assert_eq!(seccomp, Some("RuntimeDefault"));
    for user in [&sc["runAsUser"], &pod["runAsUser"]] {
        assert!(
            user.is_null() || *user == 0,
            "the harness runs root: {user}"
        );
    }
}

impl Container {
    fn start(&self, image: &PodImage) -> RunningPod {
        let pod = Pod {
            image,
            overlay: true,
            volumes: Vec::new(),
            env: self.env.clone(),
        };
        pod.spawn(&self.mounts, &self.cwd, self.argv.clone())
    }
}

/// Waits until `ready` gives a value; fails naming `what` after five
/// minutes, or at once when `pod` exited.
fn wait_for<T>(what: &str, pod: &mut RunningPod, mut ready: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(value) = ready() {
            return value;
        }
        assert!(
            !pod.exited(),
            "the pod exited while waiting for {what}:\n{}",
            pod.output()
        );
        assert!(
            Instant::now() < deadline,
            "gave up waiting for {what}:\n{}",
            pod.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The GitHub push fixture for `commit` of `clone_url` as `acme/app`.
fn github_push(commit: &str, clone_url: &str) -> Vec<u8> {
    let file = root().join("../shared/fixtures/webhooks/github/push/with-new-branch.payload.json");
    let mut payload: Value = serde_json::from_slice(
        &fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display())),
    )
    .unwrap();
    payload["ref"] = json!("refs/heads/main");
    payload["after"] = json!(commit);
    payload["head_commit"]["id"] = json!(commit);
    payload["repository"]["full_name"] = json!("acme/app");
    payload["repository"]["clone_url"] = json!(clone_url);
    serde_json::to_vec(&payload).unwrap()
}

/// A repository `acme/app` on the tests' git server whose pipeline builds
/// a Dockerfile with RUN and pushes it to the tests' registry, and the
/// executor image.
struct Bed {
    registry: Registry,
    git: GitHttpServer,
    dir: tempfile::TempDir,
    commit: String,
    destination: String,
    image: PodImage,
    /// The server's port on 127.0.0.1.
    port: u16,
}

impl Bed {
    fn new() -> Self {
        let registry = Registry::start(RegistryKind::Anonymous);
        let base = registry.push_busybox();
        let git_server = GitHttpServer::start();
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("app");
        let destination = registry.reference("app:helm");
        let commit = git_repo(
            &work,
            &[
                (
                    "pipeline.yaml",
                    &format!(
                        "version: 1\njobs:\n  image:\n    build:\n      context: .\n      destinations: [\"{destination}\"]\n"
                    ),
                ),
                (
                    "Dockerfile",
                    &format!("FROM {base}\nRUN echo built in a pod of the chart > /built\n"),
                ),
            ],
        );
        git(
            dir.path(),
            &[
                "clone",
                "-q",
                "--bare",
                work.to_str().unwrap(),
                git_server.repos().join("app.git").to_str().unwrap(),
            ],
        );
        Self {
            registry,
            git: git_server,
            dir,
            commit,
            destination,
            image: PodImage::executor(),
            port: free_port(),
        }
    }

    /// The values of the test: this bed's repository, registry and port,
    /// `runners` runners in the server, and `pool` as `runners`.
    fn values(&self, runners: usize, pool: &Value) -> Value {
        json!({
            "server": {
                "baseUrl": "http://ci.example.test",
                "port": self.port,
                "runners": runners,
                "insecureRegistries": [self.registry.host],
                "queue": {"leaseSeconds": 10, "heartbeatSeconds": 1, "requeueIntervalSeconds": 1, "claimWaitSeconds": 1},
            },
            "secret": {"name": SECRET_NAME},
            "repositories": [{
                "name": "acme/app",
                "cloneUrl": self.git.url("app.git"),
                "forge": "github",
                "webhookSecretKey": "hook",
            }],
            "longestJobTimeoutSeconds": 600,
            "runners": pool,
        })
    }

    /// Starts the rendered server pod; waits until each of its probes
    /// answers 200.
    fn start_server(&self, docs: &[Value]) -> RunningPod {
        let spec = &find(docs, "Deployment", "-server")["spec"]["template"]["spec"];
        let server = container(spec, docs, &secret(), &self.dir.path().join("server"));
        let mut pod = server.start(&self.image);
        assert!(!server.probes.is_empty(), "the server has no probe");
        for (path, port) in &server.probes {
            let host = format!("127.0.0.1:{port}");
            wait_for(&format!("the probe {path}"), &mut pod, || {
                request(&host, "GET", path, &[], b"").filter(|a| a.status == 200)
            });
        }
        pod
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Posts a signed GitHub push of the commit; the run's id.
    fn push(&self, server: &RunningPod) -> i64 {
        let body = github_push(&self.commit, &self.git.url("app.git"));
        let signature = github_signature(HOOK_SECRET.as_bytes(), &body);
        let answer = request(
            &self.host(),
            "POST",
            "/hooks/github",
            &[
                ("X-GitHub-Event", "push"),
                ("X-GitHub-Delivery", "helm-1"),
                ("Content-Type", "application/json"),
                ("X-Hub-Signature-256", &signature),
            ],
            &body,
        )
        .expect("the server answers");
        assert_eq!(answer.status, 202, "{}\n{}", answer.body, server.output());
        answer.json()["run_id"].as_i64().expect("a run id")
    }

    /// Waits until run `id` finished; checks that it succeeded and pushed
    /// the image its RUN made; then stops the server as Kubernetes does
    /// (SIGTERM), which drains and exits 0.
    fn check_run_and_stop(&self, id: i64, mut server: RunningPod, runner_output: &str) {
        let host = self.host();
        let run = wait_for(&format!("run {id} to finish"), &mut server, || {
            let run = request(&host, "GET", &format!("/api/runs/{id}"), &[], b"")?.json();
            (!matches!(run["status"].as_str(), Some("queued" | "running"))).then_some(run)
        });
        let log = request(
            &host,
            "GET",
            &format!("/api/runs/{id}/jobs/image/log"),
            &[],
            b"",
        )
        .map(|a| a.body)
        .unwrap_or_default();
        assert_eq!(
            run["status"],
            "succeeded",
            "{run}\n{log}\n{runner_output}\n{}",
            server.output()
        );
        let config = self.registry.inspect_config(&self.destination);
        assert!(
            config["history"]
                .to_string()
                .contains("echo built in a pod of the chart"),
            "{config}"
        );
        server.terminate();
        let stopped = server.wait();
        assert_eq!(stopped.statuses, [0], "{}", stopped.stderr);
    }
}

/// The Secret `SECRET_NAME` of the tests.
fn secret() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([("hook", HOOK_SECRET), ("runner-token", RUNNER_TOKEN)])
}

/// The small setup (the chart's defaults: one server with a runner in its
/// process), its server pod started from the render alone: a signed push
/// queues a run that the server's runner builds in place and pushes.
#[test]
fn the_rendered_server_pod_runs_a_webhook_build_in_process() {
    let bed = Bed::new();
    let docs = render(&bed.values(1, &json!({"enabled": false})));
    let server = bed.start_server(&docs);
    let id = bed.push(&server);
    bed.check_run_and_stop(id, server, "");
}

/// The server pod and the runner pod of the KEDA mode (`executor runner
/// --once`), started from the render alone: a signed push queues a run,
/// the runner pod claims it, builds a Dockerfile with RUN in place, pushes
/// the image and exits 0.
#[test]
fn the_rendered_server_and_runner_pods_take_a_webhook_build_and_push() {
    let bed = Bed::new();
    let docs = render(&bed.values(
        0,
        &json!({
            "enabled": true,
            "mode": "keda",
            "tokenKey": "runner-token",
            // The Service's name does not resolve here; the port does.
            "serverUrl": format!("http://{}", bed.host()),
            "insecureRegistries": [bed.registry.host],
        }),
    ));
    let server = bed.start_server(&docs);
    let id = bed.push(&server);
    let spec = &find(&docs, "ScaledJob", "-runner")["spec"]["jobTargetRef"]["template"]["spec"];
    let runner = container(spec, &docs, &secret(), &bed.dir.path().join("runner"));
    assert!(
        runner.argv.iter().any(|a| a == "--once"),
        "{:?}",
        runner.argv
    );
    // --once: the runner exits after its run.
    let ran = runner.start(&bed.image).wait();
    assert_eq!(ran.statuses, [0], "{}", ran.stderr);
    bed.check_run_and_stop(id, server, &ran.stderr);
}

// ---------------------------------------------------------------------------
// examples/ci/

/// The `executor` command lines of `examples/ci/`, as `chart.py commands`
/// finds them.
fn example_commands() -> Vec<(String, Vec<String>)> {
    let out = chart_py(&["commands", "examples/ci"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: Vec<(String, Vec<String>)> =
        serde_json::from_slice(&out.stdout).expect("the command lines as JSON");
    list
}

/// Every Kubernetes manifest of `examples/ci/` validates, and every
/// `executor` command line in the examples parses with this executor: run
/// with a context that does not exist (and `--no-push`: no registry is
/// asked first), each fails at the context (exit 1, naming it), never at
/// its flags (clap's exit 2).
#[test]
fn the_ci_examples_validate_and_their_command_lines_parse() {
    let manifests: Vec<String> = fs::read_dir(root().join("examples/ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml") || p.ends_with("Jenkinsfile"))
        .map(|p| p.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    assert_eq!(manifests.len(), 4, "{manifests:?}");
    let mut args = vec!["validate"];
    args.extend(manifests.iter().map(String::as_str));
    let out = chart_py(&args);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let commands = example_commands();
    let sources: std::collections::BTreeSet<&str> =
        commands.iter().map(|(s, _)| s.as_str()).collect();
    for example in [
        "Jenkinsfile",
        ".gitlab-ci.yml",
        "github-actions.yml",
        "tekton-task.yaml",
        "argo-workflow-template.yaml",
        "kubernetes-job.yaml",
    ] {
        assert!(
            sources.contains(example),
            "no executor command line found in {example}: {sources:?}"
        );
    }
    let scratch = tempfile::tempdir().unwrap();
    let missing = scratch.path().join("no-such-context").display().to_string();
    for (source, argv) in &commands {
        assert_eq!(argv[0], "/kaniko/executor", "{source}: {argv:?}");
        // Each example's context is its CI's checkout: here, one that does
        // not exist, so the build stops there.
        let mut args: Vec<String> = Vec::new();
        let mut contexts = 0;
        for arg in &argv[1..] {
            if args.last().is_some_and(|a| a == "--context") {
                args.push(missing.clone());
                contexts += 1;
            } else if arg.starts_with("--context=") {
                args.push(format!("--context={missing}"));
                contexts += 1;
            } else {
                args.push(arg.clone());
            }
        }
        assert_eq!(contexts, 1, "{source}: one --context: {argv:?}");
        // Nothing reaches a registry: no push-access check first.
        args.push("--no-push".into());
        let out = Command::new(executor_bin())
            .args(&args)
            .env("DOCKER_CONFIG", scratch.path())
            .env("EXECUTOR_CACHE_DIR", scratch.path().join("cache"))
            .current_dir(scratch.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{source}: {args:?}\n{stderr}");
        assert!(
            stderr.contains("no-such-context"),
            "{source}: {args:?} failed elsewhere:\n{stderr}"
        );
    }
}
