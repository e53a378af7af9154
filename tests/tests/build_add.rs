//! ADD through the CLI against the real registry: local archives of every
//! format Docker extracts (detected by content), extraction confined to the
//! destination, URLs served by `busybox httpd` (checksum, mode, mtime, not
//! unpacked), git URLs over smart HTTP (`git http-backend`) and the git
//! daemon protocol. Results are read back with skopeo and umoci.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::process::Command;
use std::time::{Duration, SystemTime};

use executor_e2e::{
    GitDaemon, GitHttpServer, HttpServer, Project, Registry, RegistryKind, git, git_commit,
    git_repo, unpack,
};

/// A tar holding `dir/hello.txt` ("hello from FORMAT") and a symlink.
fn tar_bytes(format: &str) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let content = format!("hello from {format}\n");
    let mut header = tar::Header::new_ustar();
    header.set_size(content.len() as u64);
    header.set_mode(0o640);
    header.set_uid(1234);
    header.set_gid(5678);
    header.set_mtime(1_000_000_000);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, "dir/hello.txt", content.as_bytes())
        .unwrap();
    let mut link = tar::Header::new_ustar();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    link.set_mode(0o777);
    link.set_uid(0);
    link.set_gid(0);
    link.set_mtime(0);
    builder
        .append_link(&mut link, "dir/link", "hello.txt")
        .unwrap();
    builder.into_inner().unwrap()
}

/// A tar whose entry tries to leave the directory it is extracted to
/// through a symlink to `/`.
fn escaping_tar() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut link = tar::Header::new_ustar();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    link.set_mode(0o777);
    link.set_uid(0);
    link.set_gid(0);
    link.set_mtime(0);
    builder.append_link(&mut link, "root", "/").unwrap();
    let mut file = tar::Header::new_ustar();
    file.set_uid(0);
    file.set_gid(0);
    file.set_mtime(0);
    file.set_size(3);
    file.set_mode(0o644);
    file.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut file, "root/through-link", &b"bad"[..])
        .unwrap();
    builder.into_inner().unwrap()
}

/// A tar with a `../` entry.
fn dotdot_tar() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    // The tar crate refuses to write `..` through set_path: write the name
    // field by hand.
    let mut dotdot = tar::Header::new_old();
    let name = b"../../dotdot-escape";
    dotdot.as_old_mut().name[..name.len()].copy_from_slice(name);
    dotdot.set_size(3);
    dotdot.set_mode(0o644);
    dotdot.set_uid(0);
    dotdot.set_gid(0);
    dotdot.set_mtime(0);
    dotdot.set_entry_type(tar::EntryType::Regular);
    dotdot.set_cksum();
    builder.append(&dotdot, &b"bad"[..]).unwrap();
    builder.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn bzip2(data: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn sha256(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn add_extracts_every_archive_format_by_content_and_confines_it() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let project = Project::new(
        "FROM scratch\n\
         ADD a.tar.gz /gz/\n\
         ADD b.tar.bz2 /bz2/\n\
         ADD c.tar.xz /xz/\n\
         ADD d.tar.zst /zst/\n\
         ADD e.tar /tar/\n\
         ADD named-wrong.txt /renamed/\n\
         ADD --unpack=false kept.tar.gz /kept/\n\
         ADD fake.tar.gz /fake/\n\
         ADD escape.tar /confined/\n\
         ADD --chown=42:43 e.tar /owned/new/\n",
        &[("fake.tar.gz", "this is not an archive\n")],
    );
    project.write("a.tar.gz", gzip(&tar_bytes("gzip")));
    project.write("b.tar.bz2", bzip2(&tar_bytes("bzip2")));
    project.write("c.tar.xz", xz(&tar_bytes("xz")));
    project.write(
        "d.tar.zst",
        zstd::encode_all(&tar_bytes("zstd")[..], 3).unwrap(),
    );
    project.write("e.tar", tar_bytes("tar"));
    // Detected by content, not by name.
    project.write("named-wrong.txt", xz(&tar_bytes("xz by content")));
    project.write("kept.tar.gz", gzip(&tar_bytes("kept")));
    project.write("escape.tar", escaping_tar());
    let destination = registry.reference("add/archives:1");
    project.ok(&["--destination", &destination, "--insecure"]);

    let rootfs = unpack(&registry, &destination, project.dir.path());
    for (dir, format) in [
        ("gz", "gzip"),
        ("bz2", "bzip2"),
        ("xz", "xz"),
        ("zst", "zstd"),
        ("tar", "tar"),
        ("renamed", "xz by content"),
    ] {
        let file = rootfs.join(dir).join("dir/hello.txt");
        assert_eq!(
            fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display())),
            format!("hello from {format}\n")
        );
        let meta = fs::metadata(&file).unwrap();
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid(), meta.gid(), meta.mtime()),
            (0o640, 1234, 5678, 1_000_000_000),
            "{dir}: the archive's metadata is kept"
        );
        assert_eq!(
            fs::read_link(rootfs.join(dir).join("dir/link")).unwrap(),
            std::path::Path::new("hello.txt")
        );
    }
    // --chown owns what the archive held and the directories it created.
    for path in [
        "owned",
        "owned/new",
        "owned/new/dir",
        "owned/new/dir/hello.txt",
    ] {
        let meta = fs::symlink_metadata(rootfs.join(path)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (42, 43), "{path}");
    }
    assert!(
        rootfs.join("kept/kept.tar.gz").is_file(),
        "--unpack=false copies the archive as a file"
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("fake/fake.tar.gz")).unwrap(),
        "this is not an archive\n"
    );
    // The symlink to / is the destination's root: nothing left /confined/.
    assert_eq!(
        fs::read_to_string(rootfs.join("confined/through-link")).unwrap(),
        "bad"
    );
    assert!(!rootfs.join("through-link").exists());
    assert!(!std::path::Path::new("/through-link").exists());

    // A `../` entry is refused (as Docker does), naming the archive.
    project.write("dotdot.tar", dotdot_tar());
    project.write("Dockerfile", "FROM scratch\nADD dotdot.tar /confined/\n");
    let stderr = project.fails(&["--no-push"]);
    assert!(stderr.contains("dotdot.tar"), "{stderr}");
    assert!(stderr.contains("Dockerfile:2"), "{stderr}");
    assert!(!project.path("dotdot-escape").exists());
    assert!(!project.cache().join("dotdot-escape").exists());
}

#[test]
fn add_url_streams_checks_the_checksum_and_keeps_last_modified() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let http = HttpServer::start();
    let served = http.root().join("files/tool.sh");
    fs::create_dir_all(served.parent().unwrap()).unwrap();
    // Big enough to arrive in many chunks.
    let body = "line of text\n".repeat(20_000);
    fs::write(&served, &body).unwrap();
    let modified = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    fs::File::options()
        .write(true)
        .open(&served)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    let archive = http.root().join("files/pkg.tar.gz");
    fs::write(&archive, gzip(&tar_bytes("remote"))).unwrap();
    let checksum = format!("sha256:{}", sha256(&served));

    let project = Project::new(
        &format!(
            "FROM scratch\n\
             ADD --checksum={checksum} {} /opt/\n\
             ADD {} /dl/\n\
             ADD --chmod=0755 {} /bin/tool\n",
            http.url("files/tool.sh"),
            http.url("files/pkg.tar.gz"),
            http.url("files/tool.sh?version=2"),
        ),
        &[],
    );
    let destination = registry.reference("add/url:1");
    project.ok(&["--destination", &destination, "--insecure"]);
    let rootfs = unpack(&registry, &destination, project.dir.path());
    let file = rootfs.join("opt/tool.sh");
    assert_eq!(fs::read_to_string(&file).unwrap(), body);
    let meta = fs::metadata(&file).unwrap();
    assert_eq!(
        meta.mode() & 0o7777,
        0o600,
        "downloads are 0600 as in Docker"
    );
    assert_eq!(meta.mtime(), 1_600_000_000, "mtime from Last-Modified");
    assert_eq!(
        fs::metadata(rootfs.join("bin/tool")).unwrap().mode() & 0o7777,
        0o755
    );
    assert!(
        rootfs.join("dl/pkg.tar.gz").is_file(),
        "a downloaded archive is not extracted"
    );

    // A wrong checksum fails the build, naming the URL; nothing is pushed.
    let wrong = format!("sha256:{}", "0".repeat(64));
    project.write(
        "Dockerfile",
        format!(
            "FROM scratch\nADD --checksum={wrong} {} /opt/\n",
            http.url("files/tool.sh")
        ),
    );
    let bad = registry.reference("add/url:bad");
    let stderr = project.fails(&["--destination", &bad, "--insecure"]);
    assert!(stderr.contains("checksum mismatch"), "{stderr}");
    assert!(stderr.contains(&http.url("files/tool.sh")), "{stderr}");
    assert!(stderr.contains(&checksum), "the actual digest: {stderr}");
    assert!(stderr.contains("Dockerfile:2"), "{stderr}");
    // A missing file is an error naming the URL and the status.
    project.write(
        "Dockerfile",
        format!("FROM scratch\nADD {} /opt/\n", http.url("files/missing")),
    );
    let stderr = project.fails(&["--destination", &bad, "--insecure"]);
    assert!(stderr.contains(&http.url("files/missing")), "{stderr}");
    assert!(stderr.contains("404"), "{stderr}");
    let out = Command::new("skopeo")
        .arg("inspect")
        .args(registry.skopeo_args(""))
        .arg(format!("docker://{bad}"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "a failed build pushed {bad}");
}

/// A server on 127.0.0.1 that answers every request with a new body
/// (`body 1`, `body 2` ...): a URL whose content changes between two
/// downloads, which `busybox httpd` cannot be made to serve.
struct ChangingServer {
    port: u16,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl ChangingServer {
    fn start() -> Self {
        use std::io::{BufRead as _, BufReader};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let port = listener.local_addr().expect("its address").port();
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().expect("the stream"));
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                let body = format!("body {n}");
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self { port, requests }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// With the layer cache, an `ADD <url>` without `--checksum` is keyed by
/// the content downloaded: that one download is what the step copies, so a
/// URL whose content changes is never filed under another content's key.
#[test]
fn add_url_without_checksum_is_downloaded_once_for_its_key_and_its_copy() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let server = ChangingServer::start();
    let project = Project::new(
        &format!("FROM scratch\nADD {} /data.txt\n", server.url("data.txt")),
        &[],
    );
    let cache = format!("oci:{}", project.path("oci-cache").display());
    let destination = registry.reference("add/changing:1");
    let stderr = project.ok(&[
        "--destination",
        &destination,
        "--insecure",
        "--cache=true",
        "--cache-repo",
        &cache,
    ]);
    assert_eq!(server.requests(), 1, "one download:\n{stderr}");
    let rootfs = unpack(&registry, &destination, &project.path("unpacked"));
    assert_eq!(
        fs::read_to_string(rootfs.join("data.txt")).unwrap(),
        "body 1",
        "the image holds the content the step was keyed by"
    );
}

#[test]
fn add_git_url_over_http_and_the_git_daemon() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let http = GitHttpServer::start();
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let v1 = git_repo(
        &tree,
        &[("README", "version 1\n"), ("sub/inner.txt", "inner 1\n")],
    );
    git(&tree, &["tag", "v1"]);
    git_commit(
        &tree,
        &[("README", "version 2\n"), ("sub/inner.txt", "inner 2\n")],
        "second",
    );
    let bare = http.repos().join("repo.git");
    git(
        work.path(),
        &[
            "clone",
            "-q",
            "--bare",
            tree.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    git(&bare, &["update-server-info"]);
    let daemon = GitDaemon::start(&http.repos());
    let daemon_url = format!("git://{}/repo.git", daemon.host);

    let project = Project::new(
        &format!(
            "FROM scratch\n\
             ADD {url}#v1 /v1/\n\
             ADD {url} /head/\n\
             ADD --keep-git-dir=true {url}#main /kept/\n\
             ADD {daemon_url}#main:sub /daemon-sub/\n",
            url = http.url("repo.git"),
        ),
        &[],
    );
    let destination = registry.reference("add/git:1");
    project.ok(&["--destination", &destination, "--insecure"]);
    let rootfs = unpack(&registry, &destination, project.dir.path());
    assert_eq!(
        fs::read_to_string(rootfs.join("v1/README")).unwrap(),
        "version 1\n"
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("v1/sub/inner.txt")).unwrap(),
        "inner 1\n"
    );
    assert!(!rootfs.join("v1/.git").exists(), "no .git by default");
    assert_eq!(
        fs::read_to_string(rootfs.join("head/README")).unwrap(),
        "version 2\n"
    );
    assert!(!rootfs.join("head/.git").exists());
    assert_eq!(
        fs::read_to_string(rootfs.join("kept/README")).unwrap(),
        "version 2\n"
    );
    assert!(
        rootfs.join("kept/.git").is_dir(),
        "--keep-git-dir keeps the repository"
    );
    // The kept repository is a working git repository at the commit.
    let kept_head = git(&rootfs.join("kept"), &["rev-parse", "HEAD"]);
    assert_eq!(kept_head, git(&tree, &["rev-parse", "HEAD"]));
    assert_ne!(kept_head, v1);
    assert_eq!(
        fs::read_to_string(rootfs.join("daemon-sub/inner.txt")).unwrap(),
        "inner 2\n"
    );
    assert!(!rootfs.join("daemon-sub/README").exists());

    // An unknown ref is an error naming it.
    project.write(
        "Dockerfile",
        format!(
            "FROM scratch\nADD {}#no-such-branch /x/\n",
            http.url("repo.git")
        ),
    );
    let stderr = project.fails(&["--no-push"]);
    assert!(stderr.contains("no-such-branch"), "{stderr}");
}
