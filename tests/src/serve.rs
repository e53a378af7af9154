//! Servers the tests start on 127.0.0.1 besides the registry: `busybox
//! httpd` for files (ADD URLs), git's smart HTTP protocol (`git
//! http-backend`) and `git daemon`; plus git repositories made with the
//! `git` command.

// These run commands for their effect; their output is there when a test
// wants it.
#![allow(clippy::must_use_candidate)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// Runs `git` with a fixed identity in `dir`; returns stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Executor Tests",
            "-c",
            "user.email=tests@executor.invalid",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "protocol.file.allow=always",
        ])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("git runs (the Debian package git)");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Makes a work tree at `dir` with `files` committed on `main`; returns the
/// commit id.
pub fn git_repo(dir: &Path, files: &[(&str, &str)]) -> String {
    std::fs::create_dir_all(dir).expect("repo dir");
    git(dir, &["init", "-q"]);
    git_commit(dir, files, "files")
}

/// Writes `files` into the work tree `dir` and commits them all; returns
/// the commit id.
pub fn git_commit(dir: &Path, files: &[(&str, &str)], message: &str) -> String {
    for (name, content) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("dir");
        std::fs::write(path, content).expect("file");
    }
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "--allow-empty", "-m", message]);
    git(dir, &["rev-parse", "HEAD"])
}

fn wait_listening(host: &str, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect(host).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on {host} within 30 s");
}

/// `busybox httpd` serving the files below `root()` on 127.0.0.1 (with
/// `Last-Modified` from their mtimes).
pub struct HttpServer {
    pub host: String,
    dir: tempfile::TempDir,
    child: Child,
}

impl HttpServer {
    #[must_use]
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("executor-httpd-")
            .tempdir()
            .expect("a temp dir");
        let www = dir.path().join("www");
        std::fs::create_dir_all(&www).expect("www");
        let host = format!("127.0.0.1:{}", free_port());
        let mut child = Command::new("busybox")
            .args(["httpd", "-f", "-p", &host, "-h"])
            .arg(&www)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("busybox httpd starts (the Debian package busybox-static)");
        wait_listening(&host, &mut child, "busybox httpd");
        Self { host, dir, child }
    }

    /// Where served files go: `root()/a/b` is `url("a/b")`.
    #[must_use]
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("www")
    }

    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.host)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// git's smart HTTP protocol on 127.0.0.1: every request runs `git
/// http-backend` (git's own server, as a CGI program) on the bare
/// repositories below `repos()`. This type only carries bytes between the
/// socket and the CGI program: it reads the request, and answers with
/// `Content-Length` (libgit2 cannot read a response that ends with the
/// connection, which is what `busybox httpd` sends for CGI output).
pub struct GitHttpServer {
    pub host: String,
    dir: tempfile::TempDir,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl GitHttpServer {
    #[must_use]
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("executor-git-http-")
            .tempdir()
            .expect("a temp dir");
        let repos = dir.path().join("repos");
        std::fs::create_dir_all(&repos).expect("repos");
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port on 127.0.0.1");
        let host = listener.local_addr().expect("an address").to_string();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let exec_path = Command::new("git")
            .arg("--exec-path")
            .output()
            .expect("git runs");
        let backend = PathBuf::from(String::from_utf8_lossy(&exec_path.stdout).trim())
            .join("git-http-backend");
        let stopped = stop.clone();
        let root = repos.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (backend, root) = (backend.clone(), root.clone());
                std::thread::spawn(move || {
                    let _ = serve_cgi(stream, &backend, &root);
                });
            }
        });
        Self { host, dir, stop }
    }

    /// Where bare repositories go.
    #[must_use]
    pub fn repos(&self) -> PathBuf {
        self.dir.path().join("repos")
    }

    /// The URL of the bare repository `repos()/NAME`.
    #[must_use]
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.host)
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.host);
    }
}

/// One HTTP request through `git http-backend`.
fn serve_cgi(stream: TcpStream, backend: &Path, root: &Path) -> std::io::Result<()> {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if let Some(length) = header("content-length") {
        let length: usize = length.parse().unwrap_or(0);
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
    } else if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut cgi = Command::new(backend);
    cgi.env_clear()
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (name, var) in [
        ("content-type", "CONTENT_TYPE"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "GIT_PROTOCOL"),
    ] {
        if let Some(value) = header(name) {
            cgi.env(var, value);
        }
    }
    let mut child = cgi.spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = std::thread::spawn(move || stdin.write_all(&body));
    let output = child.wait_with_output()?;
    let _ = writer.join();
    let out = output.stdout;
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let (head, payload) = match split {
        Some((i, n)) => (
            String::from_utf8_lossy(&out[..i]).into_owned(),
            &out[i + n..],
        ),
        None => (String::new(), &out[..]),
    };
    let mut status = "200 OK".to_owned();
    let mut response = Vec::new();
    for line in head.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(value) = line.strip_prefix("Status:") {
            value.trim().clone_into(&mut status);
        } else {
            response.extend_from_slice(line.as_bytes());
            response.extend_from_slice(b"\r\n");
        }
    }
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        payload.len()
    )?;
    stream.write_all(&response)?;
    stream.write_all(b"\r\n")?;
    stream.write_all(payload)?;
    stream.flush()
}

/// `git daemon` exporting every repository below `base`.
pub struct GitDaemon {
    pub host: String,
    child: Child,
}

impl GitDaemon {
    #[must_use]
    pub fn start(base: &Path) -> Self {
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let mut child = Command::new("git")
            .args([
                "daemon",
                "--export-all",
                "--reuseaddr",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon starts (the Debian package git)");
        wait_listening(&host, &mut child, "git daemon");
        Self { host, child }
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
