//! PostgreSQL for the tests: a throwaway cluster from Debian's `postgresql`
//! package (`initdb` into a temp dir, `postgres` on a free 127.0.0.1 port
//! with its socket in that dir), started once per test binary and shared by
//! its tests, each of which gets a database of its own.
//!
//! `initdb` refuses to run as root, so as root both run as the `postgres`
//! user (through `setpriv`, which execs in place) with the temp dir handed
//! to it. A test binary never runs destructors of its statics, so a small
//! watcher shell started with the cluster stops it (fast shutdown) and
//! removes its dir once the test process is gone.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::free_port;

/// The cluster this test binary shares.
struct Cluster {
    port: u16,
    /// Held, never waited for: they outlive the tests by design.
    _postgres: Child,
    _watcher: Child,
    bin: PathBuf,
    next_database: AtomicU32,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// A new empty database on the shared cluster (started on first use);
/// answers its URL, `postgres://postgres@127.0.0.1:PORT/NAME`.
#[must_use]
pub fn postgres_database() -> String {
    let cluster = CLUSTER.get_or_init(Cluster::start);
    let name = format!(
        "test_{}",
        cluster.next_database.fetch_add(1, Ordering::SeqCst)
    );
    let port = cluster.port.to_string();
    let out = Command::new(cluster.bin.join("createdb"))
        .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", &name])
        .stdin(Stdio::null())
        .output()
        .expect("createdb runs");
    assert!(
        out.status.success(),
        "createdb {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("postgres://postgres@127.0.0.1:{port}/{name}")
}

/// The directory holding `initdb` and `postgres`: `$EXECUTOR_PG_BIN`, or
/// the newest `/usr/lib/postgresql/*/bin` (Debian's layout).
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("EXECUTOR_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).expect(
        "PostgreSQL's initdb under /usr/lib/postgresql/*/bin\n\
         hint: apt-get install postgresql (or set EXECUTOR_PG_BIN)",
    )
}

/// The uid and gid of user `name`, from /etc/passwd.
fn user_ids(name: &str) -> (u32, u32) {
    let passwd = fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&name) && fields.len() > 3)
        .and_then(|fields| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
        .unwrap_or_else(|| panic!("user {name} in /etc/passwd (the postgresql package makes it)"))
}

/// `program` as the `postgres` user when this process is root.
fn as_postgres(program: &Path, root: bool) -> Command {
    if root {
        let mut command = Command::new("setpriv");
        command
            .args([
                "--reuid",
                "postgres",
                "--regid",
                "postgres",
                "--init-groups",
                "--",
            ])
            .arg(program);
        command
    } else {
        Command::new(program)
    }
}

impl Cluster {
    fn start() -> Self {
        let bin = bin_dir();
        let root = rustix::process::geteuid().is_root();
        // /tmp, not $TMPDIR: the postgres user must be able to reach it
        let dir = tempfile::Builder::new()
            .prefix("executor-postgres-")
            .tempdir_in("/tmp")
            .expect("a temp dir for PostgreSQL")
            .keep();
        if root {
            let (uid, gid) = user_ids("postgres");
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the cluster dir");
        }
        let data = dir.join("data");
        let out = as_postgres(&bin.join("initdb"), root)
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb {} failed: {}",
            data.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let log_path = dir.join("postgres.log");
        let log = fs::File::create(&log_path).expect("the cluster's log file");
        let mut child = as_postgres(&bin.join("postgres"), root)
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&dir)
            .args(["-p", &port.to_string()])
            // throwaway data: no durability, room for every test's pool
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=400"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("postgres starts");
        let watcher = Command::new("sh")
            .arg("-c")
            .arg(
                "while kill -0 \"$1\" 2>/dev/null; do sleep 0.2; done; kill -INT \"$2\"; \
                 while kill -0 \"$2\" 2>/dev/null; do sleep 0.1; done; rm -rf \"$3\"",
            )
            .arg("postgres-watcher")
            .arg(std::process::id().to_string())
            .arg(child.id().to_string())
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the cluster's watcher starts");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .expect("pg_isready runs");
            if ready.success() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "postgres exited ({status}): {}",
                    fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "postgres on port {port} not ready within 60 s: {}",
                fs::read_to_string(&log_path).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Cluster {
            port,
            _postgres: child,
            _watcher: watcher,
            bin,
            next_database: AtomicU32::new(0),
        }
    }
}
