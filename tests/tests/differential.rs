//! Differential tests: each Dockerfile here is built twice, by `executor
//! build` and by `buildah bud --isolation=chroot --format docker` (Debian's
//! buildah 1.28), and the two images must agree on the runtime config
//! (Env, Cmd, Entrypoint, WorkingDir, User, Labels, ExposedPorts, Volumes,
//! StopSignal, Healthcheck, Shell, OnBuild and the author) and on the file
//! tree (paths, file type, permission bits, owner, symlink targets, device
//! numbers, which names are hard links of one file, contents; mtimes are
//! ignored).
//!
//! Docker's BuildKit is the reference where the two differ. Where buildah
//! 1.28 is the one that departs from it, the case names the difference as a
//! [`Quirk`], which removes exactly that detail from the comparison; every
//! quirk says why.
//!
//! RUN is compared on the busybox base: shell and exec form, ENV and ARG in
//! its environment, USER (owners of what it writes, supplementary groups),
//! WORKDIR, SHELL, deleting and replacing files of lower layers, opaque
//! directories, hard links, symlinks, modes and owners, special files,
//! `--mount=type=bind|cache|tmpfs` and `--network=none`. What a RUN writes
//! must not depend on the tool: the commands print chosen values, never the
//! whole environment (buildah sets a random `HOSTNAME`). Dockerfiles of
//! well-known kinds (an official-image style service, a multi-stage build
//! carrying a binary and its libraries) build on the Debian base fixture,
//! with nothing downloaded.
//!
//! Left out because buildah 1.28 refuses them, so there is nothing to
//! compare against: COPY `--parents`, `--exclude` and `--link`, heredocs
//! (COPY reads `<<EOF` as a file name; RUN takes `<<EOF` as its command and
//! the body's lines as instructions: `Unknown instruction: "ECHO"`), ADD's
//! `--checksum`, `--unpack` and `--keep-git-dir`. Not compared here: RUN
//! `--mount=type=secret` and `type=ssh`. Left out because buildah 1.28 gets
//! them wrong: a
//! `--mount=type=tmpfs` on a directory that exists (its clean-up then
//! empties the whole root filesystem: the image has no files at all), and
//! `mknod` (its chroot isolation drops `CAP_MKNOD`, which BuildKit grants).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use executor_e2e::{
    Pod, PodImage, Registry, RegistryKind, TestUser, executor_bin, executor_for_anyone, open_dir,
};
use serde_json::{Map, Value};

/// The placeholder for the busybox base image's reference in a case's
/// Dockerfile.
const BUSYBOX: &str = "@BUSYBOX@";
/// The placeholder for the Debian base image's reference (pushed to the
/// test registry by the first case that names it).
const DEBIAN: &str = "@DEBIAN@";
/// The placeholder for an http URL of the busybox layer blob on the test
/// registry: ADD downloads it.
const BLOB_URL: &str = "@BLOB_URL@";
/// The placeholder for the image the `onbuild_base` case pushed, by the same
/// tool that builds the Dockerfile.
const ONBUILD_BASE: &str = "@ONBUILD_BASE@";
/// The placeholder for `--network=none` in a RUN: executor's Dockerfile gets
/// the flag, buildah's gets nothing. buildah 1.28 refuses the flag ("RUN
/// only supports the --mount flag") and, under chroot isolation, any network
/// but the host's (`bud --network=none` fails too), so its side runs with the
/// host's network. Such a case compares that the flag leaves no trace in the
/// image; that the network is gone is the RUN tests' business.
const NETWORK_NONE: &str = "@NETWORK_NONE@";

/// A known departure of buildah 1.28 from BuildKit, removed from the
/// comparison for one case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quirk {
    /// BuildKit gives a `FROM scratch` stage `/` as working directory
    /// (dockerfile2llb's `emptyImage`); buildah 1.28 leaves it unset (both
    /// set the default PATH). executor follows BuildKit, so its side drops
    /// exactly that value.
    ScratchDefaults,
    /// BuildKit puts the stage's SHELL in front of shell-form CMD and
    /// ENTRYPOINT (dispatchCmd's `withShell`); buildah 1.28 always uses
    /// `/bin/sh -c` there (openshift/imagebuilder#154). executor's side gets
    /// `/bin/sh -c` in place of exactly its SHELL prefix.
    ShellIgnoredForCmd,
    /// BuildKit's ENV replaces a variable the image has in place
    /// (dockerfile2llb's `addEnv`); buildah 1.28 removes it and appends it at
    /// the end. Both sides' Env are compared as sorted lists.
    EnvOverrideAppends,
    /// buildah 1.28's chroot isolation leaves the mount points it made in a
    /// RUN's layer: the empty directories `/dev`, `/proc`, `/sys` and `/run`
    /// (the last for `/run/.containerenv`, a file it does remove) and the
    /// empty files `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`
    /// (mode 0755), when the image had none of them. BuildKit removes the
    /// stubs it made for its mounts (`executor/stubs.go`,
    /// `MountStubsCleaner`), and executor leaves out every one its sandbox
    /// made. Each of these paths is dropped from buildah's tree when it is
    /// an empty directory or an empty file there and executor's image does
    /// not have it.
    RunStubs,
    /// buildah 1.28 removes a `RUN --mount` target it created but not the
    /// missing parent directories it created for it (`--mount=...,target=
    /// /mnt/a` leaves an empty `/mnt`); BuildKit's `MountStubsCleaner` walks
    /// up and removes those too, and so does executor. The listed
    /// directories are dropped from buildah's tree on the same terms as
    /// [`Quirk::RunStubs`]'s, deepest first.
    MountParents(&'static [&'static str]),
    /// `ln` of a file of a lower layer: buildah's vfs storage finds the old
    /// name unchanged (content, mode, owner: it ignores the link count), so
    /// its layer holds only the new name, as a plain file. An overlay upper
    /// directory holds both names, linked, because linking copied the old
    /// name up; executor's layer is that upper directory, as the diff of
    /// Docker's overlay2 driver is. For the listed paths, which names are
    /// links of one file is not compared (content, mode and owner are).
    LinkToLowerLayer(&'static [&'static str]),
    /// buildah 1.28 makes a VOLUME's directory in the image (in the next
    /// RUN's layer) when it is missing; BuildKit's VOLUME only records it
    /// in the config (dockerfile2llb's `dispatchVolume`), and so does
    /// executor. The listed directories are dropped from buildah's tree on
    /// the same terms as [`Quirk::RunStubs`]'s.
    VolumeDirectories(&'static [&'static str]),
    /// buildah 1.28 throws away what a RUN writes under a directory an
    /// earlier VOLUME named, as Docker's legacy builder did; BuildKit keeps
    /// it (the Dockerfile reference's notes on VOLUME), and so does
    /// executor. The listed paths are dropped from executor's tree where
    /// buildah's lacks them.
    VolumeWritesDiscarded(&'static [&'static str]),
}

/// The mount points buildah's chroot isolation leaves in a RUN's layer
/// ([`Quirk::RunStubs`]).
const BUILDAH_RUN_STUBS: &[&str] = &[
    "/dev",
    "/proc",
    "/sys",
    "/run",
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
];

/// One Dockerfile built by both tools.
struct Case {
    name: &'static str,
    dockerfile: &'static str,
    /// Context files, `(path, content)`; mode 0644 unless `setup` changes it.
    files: &'static [(&'static str, &'static str)],
    /// Makes what `files` cannot: modes, symlinks, archives.
    setup: Option<fn(&Path)>,
    build_args: &'static [&'static str],
    target: Option<&'static str>,
    quirks: &'static [Quirk],
    /// Push the result as this repository, for a later case's
    /// [`ONBUILD_BASE`].
    push_as: Option<&'static str>,
    /// Paths the result must have, so that the tools cannot agree on
    /// doing nothing (triggers not run, archives not extracted).
    expect: &'static [&'static str],
    /// executor's image must hold one layer (one diffID) more than once.
    repeats_a_layer: bool,
}

const CASE: Case = Case {
    name: "",
    dockerfile: "",
    files: &[],
    setup: None,
    build_args: &[],
    target: None,
    quirks: &[],
    push_as: None,
    expect: &[],
    repeats_a_layer: false,
};

/// The config fields compared (Docker's container config names).
const FIELDS: &[&str] = &[
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "Labels",
    "ExposedPorts",
    "Volumes",
    "StopSignal",
    "Healthcheck",
    "Shell",
    "OnBuild",
];

/// One file in an unpacked root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    /// A symlink's target.
    link: Option<String>,
    /// A device's `major:minor`.
    device: Option<(u32, u32)>,
    /// For a file with several names: the first of them in path order
    /// (the same for every name of that file).
    hard_link: Option<String>,
    /// A regular file's contents.
    content: Option<Vec<u8>>,
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:04o} {}:{}",
            self.kind, self.mode, self.uid, self.gid
        )?;
        if let Some(link) = &self.link {
            write!(f, " -> {link}")?;
        }
        if let Some((major, minor)) = self.device {
            write!(f, " {major}:{minor}")?;
        }
        if let Some(first) = &self.hard_link {
            write!(f, " (hard link of {first})")?;
        }
        if let Some(content) = &self.content {
            if content.len() <= 64 {
                write!(f, " {:?}", String::from_utf8_lossy(content))?;
            } else {
                write!(f, " ({} bytes)", content.len())?;
            }
        }
        Ok(())
    }
}

/// What a build produced, reduced to what is compared.
struct Built {
    config: Map<String, Value>,
    tree: BTreeMap<String, Entry>,
    /// The image's layers' diffIDs, bottom first.
    diff_ids: Vec<String>,
}

/// Runs `cmd`; its stdout, or what went wrong.
fn run(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what}: {cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One test's shared parts: a registry holding busybox, a buildah store.
struct Bench {
    /// Where executor builds runs in a pod: its image.
    pod: Option<PodImage>,
    /// Where executor builds without root: the user, with a subordinate
    /// range, and the binary it runs.
    user: Option<(TestUser, PathBuf)>,
    registry: Registry,
    busybox: String,
    blob_url: String,
    dir: tempfile::TempDir,
}

impl Bench {
    fn new(place: Where) -> Self {
        let registry = Registry::start(RegistryKind::Anonymous);
        let busybox = registry.push_busybox();
        let mut inspect = Command::new("skopeo");
        inspect
            .args(["inspect", "--raw"])
            .args(registry.skopeo_args(""))
            .arg(format!("docker://{busybox}"));
        let manifest: Value =
            serde_json::from_str(&run(&mut inspect, "busybox manifest").unwrap()).unwrap();
        let layer = manifest["layers"][0]["digest"]
            .as_str()
            .expect("busybox has a layer");
        let blob_url = format!("http://{}/v2/busybox/blobs/{layer}", registry.host);
        let dir = tempfile::Builder::new()
            .prefix("executor-differential-")
            .tempdir()
            .unwrap();
        fs::write(
            dir.path().join("registries.conf"),
            "unqualified-search-registries = []\n",
        )
        .unwrap();
        let user = (place == Where::Rootless).then(|| {
            open_dir(dir.path());
            (TestUser::new(true), executor_for_anyone(dir.path()))
        });
        Self {
            pod: (place == Where::Pod).then(PodImage::executor),
            user,
            registry,
            busybox,
            blob_url,
            dir,
        }
    }

    /// `buildah` with this test's private storage.
    fn buildah(&self) -> Command {
        let mut cmd = Command::new("buildah");
        cmd.arg("--root")
            .arg(self.dir.path().join("buildah/root"))
            .arg("--runroot")
            .arg(self.dir.path().join("buildah/runroot"))
            .args(["--storage-driver", "vfs"])
            // No registries.conf from the host: short names and mirrors
            // must not come into play.
            .env(
                "REGISTRIES_CONFIG_PATH",
                self.dir.path().join("registries.conf"),
            )
            .env("BUILDAH_ISOLATION", "chroot");
        cmd
    }

    /// Writes `case`'s context for `tool` and returns its directory.
    fn context(&self, case: &Case, tool: &str) -> PathBuf {
        let dir = self.dir.path().join(case.name).join(tool);
        let context = dir.join("context");
        fs::create_dir_all(&context).unwrap();
        let base = |repo: &str| self.registry.reference(&format!("{tool}-{repo}:latest"));
        let mut dockerfile = case.dockerfile.to_owned();
        if dockerfile.contains(DEBIAN) {
            dockerfile = dockerfile.replace(DEBIAN, &self.registry.push_debian());
        }
        let dockerfile = dockerfile
            .replace(BUSYBOX, &self.busybox)
            .replace(BLOB_URL, &self.blob_url)
            .replace(ONBUILD_BASE, &base("onbuild-base"))
            .replace(
                &format!("{NETWORK_NONE} "),
                if tool == "executor" {
                    "--network=none "
                } else {
                    ""
                },
            );
        fs::write(context.join("Dockerfile"), dockerfile).unwrap();
        for (name, content) in case.files {
            let path = context.join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, content).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        }
        if let Some(setup) = case.setup {
            setup(&context);
        }
        dir
    }

    fn executor(&self, case: &Case) -> Result<Built, String> {
        let what = format!("case {}: executor", case.name);
        let dir = self.context(case, "executor");
        let layout = dir.join("layout");
        let mut cmd = Command::new(executor_bin());
        cmd.arg("build")
            .arg("--context")
            .arg(dir.join("context"))
            .arg("--cache-dir")
            .arg(dir.join("cache"))
            .arg("--oci-layout-path")
            .arg(&layout)
            .args(["--insecure-registry", &self.registry.host])
            .env("DOCKER_CONFIG", dir.join("docker-config"));
        match case.push_as {
            Some(repo) => cmd.args([
                "--destination",
                &self.registry.reference(&format!("executor-{repo}:latest")),
            ]),
            None => cmd.args(["--no-push", "--destination", "example.test/diff:latest"]),
        };
        for arg in case.build_args {
            cmd.args(["--build-arg", arg]);
        }
        if let Some(target) = case.target {
            cmd.args(["--target", target]);
        }
        match (&self.pod, &self.user) {
            (Some(image), _) => self.run_in_pod(image, &cmd, &dir, &what)?,
            (None, Some((user, bin))) => {
                user.give(&dir);
                run(&mut user.executor(bin, &cmd, &dir), &what)?;
            }
            (None, None) => {
                run(&mut cmd, &what)?;
            }
        }
        let config = layout_config(&layout);
        let mut compared = pick(&config["config"]);
        copy_author(&config, &mut compared);
        Ok(Built {
            config: compared,
            tree: unpack(&layout, &dir, &what)?,
            diff_ids: diff_ids(&config),
        })
    }

    /// `cmd` as `/kaniko/executor` in a fresh default pod of `image`.
    fn run_in_pod(
        &self,
        image: &PodImage,
        cmd: &Command,
        dir: &Path,
        what: &str,
    ) -> Result<(), String> {
        let mut argv = vec!["/kaniko/executor".to_string()];
        argv.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
        let pod = Pod {
            image,
            overlay: true,
            volumes: vec![self.dir.path().to_path_buf()],
            env: vec![(
                "DOCKER_CONFIG".into(),
                dir.join("docker-config").display().to_string(),
            )],
        };
        let ran = pod.run(&[argv]);
        if ran.statuses != [0] {
            return Err(format!(
                "{what}: failed in the pod: {:?}\n{}",
                ran.statuses, ran.stderr
            ));
        }
        if !ran.stderr.contains("RUN steps run in place") && ran.stderr.contains("RUN") {
            return Err(format!("{what}: did not build in place:\n{}", ran.stderr));
        }
        Ok(())
    }

    fn buildah_build(&self, case: &Case) -> Result<Built, String> {
        let what = format!("case {}: buildah", case.name);
        let dir = self.context(case, "buildah");
        let name = format!("localhost/diff-{}:latest", case.name);
        let mut cmd = self.buildah();
        cmd.args([
            "bud",
            "--isolation=chroot",
            "--format",
            "docker",
            "--tls-verify=false",
            "--quiet",
        ]);
        for arg in case.build_args {
            cmd.args(["--build-arg", arg]);
        }
        if let Some(target) = case.target {
            cmd.args(["--target", target]);
        }
        cmd.arg("-f")
            .arg(dir.join("context/Dockerfile"))
            .args(["-t", &name])
            .arg(dir.join("context"));
        // buildah 1.28 on this kernel now and then fails a RUN step with
        // "sealing memfd copy: Device or resource busy" (its memfd copy of
        // itself, for chroot isolation): a transient of the peer, not a
        // disagreement, so that build is tried once more (as the bench
        // does, tests/bench/vs_buildah.sh). Any other failure stands.
        if let Err(error) = run(&mut cmd, &what) {
            if !error.contains("sealing memfd copy: Device or resource busy") {
                return Err(error);
            }
            eprintln!(
                "{what}: buildah could not seal its memfd copy (a transient); building again"
            );
            run(&mut cmd, &what)?;
        }

        // The Docker-format config, with Healthcheck, Shell and OnBuild
        // (an OCI layout's config has none of them).
        let inspect: Value = serde_json::from_str(&run(
            self.buildah().args(["inspect", "--type", "image", &name]),
            &what,
        )?)
        .expect("buildah inspect prints JSON");
        let docker = &inspect["Docker"];
        let mut config = pick(&docker["config"]);
        copy_author(docker, &mut config);
        // buildah stamps its own version on every image.
        if let Some(Value::Object(labels)) = config.get_mut("Labels") {
            labels.remove("io.buildah.version");
            if labels.is_empty() {
                config.remove("Labels");
            }
        }

        if let Some(repo) = case.push_as {
            let reference = self.registry.reference(&format!("buildah-{repo}:latest"));
            run(
                self.buildah().args([
                    "push",
                    "--quiet",
                    "--tls-verify=false",
                    "--format",
                    "v2s2",
                    &name,
                    &format!("docker://{reference}"),
                ]),
                &what,
            )?;
        }
        let layout = dir.join("layout");
        run(
            self.buildah().args([
                "push",
                "--quiet",
                &name,
                &format!("oci:{}:example.test/diff:latest", layout.display()),
            ]),
            &what,
        )?;
        Ok(Built {
            config,
            tree: unpack(&layout, &dir, &what)?,
            diff_ids: diff_ids(&layout_config(&layout)),
        })
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).expect("a JSON file")
}

/// The one image in an OCI layout: its descriptor in `index.json`.
fn layout_image(layout: &Path) -> Value {
    let index = read_json(&layout.join("index.json"));
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 1, "one image in {}", layout.display());
    manifests[0].clone()
}

/// The config blob of the one image in an OCI layout.
fn layout_config(layout: &Path) -> Value {
    let blob = |digest: &Value| -> Value {
        let digest = digest.as_str().expect("a digest");
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        read_json(&layout.join("blobs/sha256").join(hex))
    };
    let manifest = blob(&layout_image(layout)["digest"]);
    blob(&manifest["config"]["digest"])
}

/// An image config's `rootfs.diff_ids`.
fn diff_ids(config: &Value) -> Vec<String> {
    config["rootfs"]["diff_ids"]
        .as_array()
        .expect("the config lists its layers")
        .iter()
        .map(|d| d.as_str().expect("a diffID").to_owned())
        .collect()
}

/// The compared fields of a container config, normalised: absent, null,
/// `""`, `[]` and `{}` all mean "not set"; a healthcheck's zero durations
/// are Docker's defaults, the same as leaving them out.
fn pick(config: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    for field in FIELDS {
        let mut value = config.get(*field).cloned().unwrap_or(Value::Null);
        if let (&"Healthcheck", Value::Object(h)) = (field, &mut value) {
            h.retain(|_, v| v != &Value::from(0) && !is_unset(v));
        }
        if !is_unset(&value) {
            out.insert((*field).to_string(), value);
        }
    }
    out
}

fn is_unset(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

fn copy_author(image: &Value, into: &mut Map<String, Value>) {
    if let Some(author) = image.get("author").filter(|a| !is_unset(a)) {
        into.insert("author".to_string(), author.clone());
    }
}

/// Unpacks the one image of `layout` as root (owners kept) and walks it.
fn unpack(layout: &Path, dir: &Path, what: &str) -> Result<BTreeMap<String, Entry>, String> {
    let image = layout_image(layout);
    let tag = image["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .expect("the image has a name in the layout");
    let bundle = dir.join("bundle");
    run(
        Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:{tag}", layout.display()))
            .arg(&bundle),
        what,
    )?;
    let rootfs = bundle.join("rootfs");
    let mut tree = BTreeMap::new();
    let mut inodes = BTreeMap::new();
    walk(&rootfs, &rootfs, &mut tree, &mut inodes);
    // Every name of a file with several: the first name (paths are walked
    // in no particular order, `inodes` keeps them sorted).
    for names in inodes
        .values()
        .filter(|names: &&Vec<String>| names.len() > 1)
    {
        let mut sorted = names.clone();
        sorted.sort();
        for name in names {
            if let Some(entry) = tree.get_mut(name) {
                entry.hard_link = Some(sorted[0].clone());
            }
        }
    }
    Ok(tree)
}

/// Adds every entry under `dir` to `tree`, and the names of each regular
/// file with more than one link to `inodes` (by device and inode).
fn walk(
    root: &Path,
    dir: &Path,
    tree: &mut BTreeMap<String, Entry>,
    inodes: &mut BTreeMap<(u64, u64), Vec<String>>,
) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = fs::symlink_metadata(&path).unwrap();
        let file_type = meta.file_type();
        let name = format!("/{}", path.strip_prefix(root).unwrap().display());
        let (mut link, mut content, mut device) = (None, None, None);
        let kind = if file_type.is_symlink() {
            link = Some(fs::read_link(&path).unwrap().display().to_string());
            "symlink"
        } else if file_type.is_dir() {
            "dir"
        } else if file_type.is_file() {
            content = Some(fs::read(&path).unwrap());
            if meta.nlink() > 1 {
                inodes
                    .entry((meta.dev(), meta.ino()))
                    .or_default()
                    .push(name.clone());
            }
            "file"
        } else if file_type.is_fifo() {
            "fifo"
        } else if file_type.is_socket() {
            "socket"
        } else {
            let rdev = meta.rdev();
            // glibc's gnu_dev_major/gnu_dev_minor.
            let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
            let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
            device = Some((
                u32::try_from(major).unwrap_or(u32::MAX),
                u32::try_from(minor).unwrap_or(u32::MAX),
            ));
            if file_type.is_char_device() {
                "char device"
            } else {
                "block device"
            }
        };
        tree.insert(
            name,
            Entry {
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                link,
                device,
                hard_link: None,
                content,
            },
        );
        if file_type.is_dir() {
            walk(root, &path, tree, inodes);
        }
    }
}

/// Takes `case`'s quirks out of the comparison.
fn apply_quirks(case: &Case, executor: &mut Built, buildah: &mut Built) {
    for quirk in case.quirks {
        match quirk {
            Quirk::ScratchDefaults => {
                if executor.config.get("WorkingDir") == Some(&Value::from("/")) {
                    executor.config.remove("WorkingDir");
                }
            }
            Quirk::ShellIgnoredForCmd => {
                let Some(Value::Array(shell)) = executor.config.get("Shell").cloned() else {
                    continue;
                };
                for field in ["Cmd", "Entrypoint"] {
                    if let Some(Value::Array(args)) = executor.config.get_mut(field) {
                        if args.starts_with(&shell) {
                            args.splice(..shell.len(), [Value::from("/bin/sh"), Value::from("-c")]);
                        }
                    }
                }
            }
            Quirk::EnvOverrideAppends => {
                for side in [&mut executor.config, &mut buildah.config] {
                    if let Some(Value::Array(env)) = side.get_mut("Env") {
                        env.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
                    }
                }
            }
            Quirk::RunStubs => drop_stubs(BUILDAH_RUN_STUBS, executor, buildah),
            Quirk::MountParents(parents) | Quirk::VolumeDirectories(parents) => {
                drop_stubs(parents, executor, buildah);
            }
            Quirk::VolumeWritesDiscarded(paths) => {
                for path in *paths {
                    if !buildah.tree.contains_key(*path) {
                        executor.tree.remove(*path);
                    }
                }
            }
            Quirk::LinkToLowerLayer(paths) => {
                for side in [&mut executor.tree, &mut buildah.tree] {
                    for path in *paths {
                        if let Some(entry) = side.get_mut(*path) {
                            entry.hard_link = None;
                        }
                    }
                }
            }
        }
    }
}

/// Drops each of `paths` from buildah's tree where it is an empty directory
/// or an empty regular file and executor's tree lacks it, deepest first (so
/// a parent whose only child was a stub goes too).
fn drop_stubs(paths: &[&str], executor: &Built, buildah: &mut Built) {
    let mut paths = paths.to_vec();
    paths.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
    for path in paths {
        if executor.tree.contains_key(path) {
            continue;
        }
        let prefix = format!("{path}/");
        let has_children = buildah
            .tree
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(p, _)| p.starts_with(&prefix));
        let empty = match buildah.tree.get(path) {
            Some(e) if e.kind == "dir" => !has_children,
            Some(e) if e.kind == "file" => e.content.as_ref().is_some_and(Vec::is_empty),
            _ => false,
        };
        if empty {
            buildah.tree.remove(path);
        }
    }
}

/// How many file differences one case lists.
const MAX_FILE_DIFFERENCES: usize = 40;

/// A readable list of the differences between the two builds, empty when
/// they agree.
fn differences(executor: &Built, buildah: &Built) -> String {
    let mut out = String::new();
    let keys: std::collections::BTreeSet<&String> = executor
        .config
        .keys()
        .chain(buildah.config.keys())
        .collect();
    for key in keys {
        let (e, b) = (executor.config.get(key), buildah.config.get(key));
        if e != b {
            let show =
                |v: Option<&Value>| v.map_or_else(|| "(unset)".to_string(), Value::to_string);
            let _ = writeln!(
                out,
                "  config {key}:\n    executor: {}\n    buildah:  {}",
                show(e),
                show(b)
            );
        }
    }
    let paths: std::collections::BTreeSet<&String> =
        executor.tree.keys().chain(buildah.tree.keys()).collect();
    let mut shown = 0;
    for path in paths {
        if shown == MAX_FILE_DIFFERENCES {
            let _ = writeln!(out, "  (more file differences not shown)");
            break;
        }
        if executor.tree.get(path) != buildah.tree.get(path) {
            shown += 1;
        }
        match (executor.tree.get(path), buildah.tree.get(path)) {
            (Some(e), Some(b)) if e == b => {}
            (Some(e), Some(b)) => {
                let _ = writeln!(out, "  file {path}:\n    executor: {e}\n    buildah:  {b}");
            }
            (Some(e), None) => {
                let _ = writeln!(out, "  file {path}: only executor has it: {e}");
            }
            (None, Some(b)) => {
                let _ = writeln!(out, "  file {path}: only buildah has it: {b}");
            }
            (None, None) => unreachable!(),
        }
    }
    out
}

/// Where executor builds: on this machine (namespaces), or in a default
/// pod (in place, see `in_place.rs`), or on this machine as a user without
/// root that has a subordinate id range (`rootless.rs` of the sandbox).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Where {
    Host,
    Pod,
    Rootless,
}

/// Builds every case with both tools and fails with every difference.
fn compare(cases: &[Case], place: Where) {
    let bench = Bench::new(place);
    let mut failures = String::new();
    for case in cases {
        // The two tools run at once: they share nothing but the registry.
        let (executor, buildah) = std::thread::scope(|scope| {
            let executor = scope.spawn(|| bench.executor(case));
            let buildah = bench.buildah_build(case);
            (executor.join().expect("the executor thread"), buildah)
        });
        let (mut executor, mut buildah) = match (executor, buildah) {
            (Ok(e), Ok(b)) => (e, b),
            (e, b) => {
                for error in [e.err(), b.err()].into_iter().flatten() {
                    let _ = writeln!(failures, "case {}: build failed:\n{error}", case.name);
                }
                continue;
            }
        };
        for path in case.expect {
            if !executor.tree.contains_key(*path) {
                let _ = writeln!(
                    failures,
                    "case {}: executor's image lacks {path}",
                    case.name
                );
            }
        }
        apply_quirks(case, &mut executor, &mut buildah);
        let mut distinct = executor.diff_ids.clone();
        distinct.sort();
        distinct.dedup();
        if case.repeats_a_layer && distinct.len() == executor.diff_ids.len() {
            let _ = writeln!(
                failures,
                "case {}: executor's image holds no layer twice: {:?}",
                case.name, executor.diff_ids
            );
        }
        let diff = differences(&executor, &buildah);
        if !diff.is_empty() {
            let _ = write!(failures, "case {}:\n{diff}", case.name);
        }
    }
    assert!(
        failures.is_empty(),
        "executor and buildah disagree:\n{failures}"
    );
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn config_instructions() {
    compare(
        &[
            Case {
                name: "env_label_maintainer",
                dockerfile: "FROM @BUSYBOX@\n\
                ENV A=1 B=\"two words\" C='single $A'\n\
                ENV D ${A}-x\n\
                ENV E=$B\n\
                LABEL a=b \"with space\"=\"v w\" multi=\"one\\\n  two\"\n\
                LABEL a=override empty=\"\"\n\
                MAINTAINER Jane Doe <jane@example.test>\n",
                ..CASE
            },
            Case {
                name: "env_override_keeps_position",
                dockerfile: "FROM @BUSYBOX@\n\
                ENV A=1 B=2\n\
                ENV A=3 PATH=/opt/bin:$PATH\n",
                quirks: &[Quirk::EnvOverrideAppends],
                ..CASE
            },
            Case {
                name: "args_global_stage_and_cli",
                dockerfile: "ARG BASE=@BUSYBOX@\n\
                ARG GLOBAL=global-default\n\
                ARG UNUSED=x\n\
                FROM $BASE\n\
                ARG GLOBAL\n\
                ARG LOCAL=local-default\n\
                ARG FROM_CLI=cli-default\n\
                ARG NO_DEFAULT\n\
                ENV G=$GLOBAL L=$LOCAL C=$FROM_CLI N=x${NO_DEFAULT}x U=x${UNUSED}x\n\
                LABEL g=$GLOBAL l=\"${LOCAL:-none}\" n=\"${NO_DEFAULT:-fallback}\"\n\
                ENV LOCAL=env-wins\n\
                ARG LOCAL=arg-loses\n\
                LABEL after=$LOCAL\n",
                build_args: &["FROM_CLI=from-cli", "NO_DEFAULT=given"],
                ..CASE
            },
            Case {
                name: "user_and_workdir",
                dockerfile: "FROM @BUSYBOX@\n\
                WORKDIR /a/b/c\n\
                WORKDIR d\n\
                WORKDIR ../e\n\
                ENV W=/from/env\n\
                WORKDIR $W\n\
                USER nobody\n\
                WORKDIR /as/nobody\n\
                WORKDIR /tmp\n\
                USER 1000:1000\n",
                ..CASE
            },
            Case {
                name: "expose_volume_stopsignal",
                dockerfile: "FROM @BUSYBOX@\n\
                ENV PORT=9000\n\
                EXPOSE 80 443/tcp 53/udp $PORT\n\
                EXPOSE 80/tcp 7000-7002\n\
                VOLUME /data\n\
                VOLUME [\"/v1\", \"/v2\"] \n\
                VOLUME /v3 /v4\n\
                STOPSIGNAL SIGINT\n",
                ..CASE
            },
            Case {
                name: "healthcheck_cmd",
                dockerfile: "FROM @BUSYBOX@\n\
                HEALTHCHECK --interval=5s --timeout=3s --start-period=2s --retries=4 \\\n  \
                CMD wget -q -O- http://localhost/ || exit 1\n",
                ..CASE
            },
            Case {
                name: "healthcheck_exec_then_none",
                dockerfile: "FROM @BUSYBOX@ AS exec\n\
                HEALTHCHECK CMD [\"/bin/true\"]\n\
                FROM exec\n\
                HEALTHCHECK NONE\n",
                ..CASE
            },
            Case {
                name: "shell_and_shell_forms",
                dockerfile: "FROM @BUSYBOX@\n\
                SHELL [\"/bin/sh\", \"-ec\"]\n\
                CMD echo \"hello $HOME\"\n\
                ENTRYPOINT exec /bin/sh\n\
                HEALTHCHECK CMD true\n",
                quirks: &[Quirk::ShellIgnoredForCmd],
                ..CASE
            },
            Case {
                name: "entrypoint_resets_inherited_cmd",
                // busybox's Cmd is /bin/sh: ENTRYPOINT drops it, as no CMD was
                // given in this stage.
                dockerfile: "FROM @BUSYBOX@\nENTRYPOINT [\"/bin/echo\"]\n",
                ..CASE
            },
            Case {
                name: "cmd_before_entrypoint_is_kept",
                dockerfile: "FROM @BUSYBOX@\nCMD [\"hi\"]\nENTRYPOINT [\"/bin/echo\"]\n",
                ..CASE
            },
            Case {
                name: "cmd_after_entrypoint_and_stage_inheritance",
                dockerfile: "FROM @BUSYBOX@ AS parent\n\
                ENTRYPOINT [\"/bin/echo\"]\n\
                CMD [\"from\", \"parent\"]\n\
                ENV FROM_PARENT=1\n\
                FROM parent\n\
                LABEL child=1\n",
                ..CASE
            },
            Case {
                name: "entrypoint_in_child_resets_parent_cmd",
                dockerfile: "FROM @BUSYBOX@ AS parent\n\
                CMD [\"parent\"]\n\
                FROM parent\n\
                ENTRYPOINT [\"/bin/echo\"]\n",
                ..CASE
            },
        ],
        Where::Host,
    );
}

/// Context files most COPY/ADD cases use.
const FILES: &[(&str, &str)] = &[
    ("a.txt", "a\n"),
    ("b.txt", "b\n"),
    ("c.txt", "c\n"),
    ("x.md", "# x\n"),
    ("dir/one", "one\n"),
    ("dir/sub/two", "two\n"),
];

/// Modes and symlinks `files` cannot give: an executable, a private
/// directory, a sticky world-writable one, symlinks nested and at the top.
fn modes_and_links(context: &Path) {
    fs::write(context.join("run.sh"), "#!/bin/sh\necho run\n").unwrap();
    chmod(&context.join("run.sh"), 0o755);
    chmod(&context.join("dir/sub"), 0o700);
    fs::create_dir_all(context.join("dir/sticky")).unwrap();
    chmod(&context.join("dir/sticky"), 0o1777);
    std::os::unix::fs::symlink("one", context.join("dir/link-to-one")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", context.join("dir/absolute-link")).unwrap();
    std::os::unix::fs::symlink("a.txt", context.join("link-to-a")).unwrap();
}

/// Archives for ADD: a gzipped tar and a plain tar with owners, modes,
/// nested directories and a symlink, and a gzipped file that is no tar.
fn archives(context: &Path) {
    let src = context.parent().unwrap().join("archive-src");
    fs::create_dir_all(src.join("top/nested")).unwrap();
    fs::write(src.join("top/file"), "in the archive\n").unwrap();
    fs::write(src.join("top/nested/private"), "secret\n").unwrap();
    chmod(&src.join("top/nested/private"), 0o600);
    fs::write(src.join("top/tool"), "#!/bin/sh\n").unwrap();
    chmod(&src.join("top/tool"), 0o755);
    std::os::unix::fs::symlink("file", src.join("top/link")).unwrap();
    let tar = |name: &str, extra: &[&str]| {
        run(
            Command::new("tar")
                .args(extra)
                .arg("-cf")
                .arg(context.join(name))
                .args(["--owner=1000", "--group=1000", "--sort=name", "-C"])
                .arg(&src)
                .arg("top"),
            "making an archive",
        )
        .unwrap();
    };
    tar("archive.tar.gz", &["-z"]);
    tar("archive.tar", &[]);
    run(
        Command::new("sh").arg("-c").arg(format!(
            "printf 'not a tar\\n' | gzip -n > {}",
            context.join("plain.gz").display()
        )),
        "making a gzipped file",
    )
    .unwrap();
}

#[test]
fn copy_and_add() {
    compare(
        &[
            Case {
                name: "copy_wildcards_directories_and_slashes",
                dockerfile: "FROM @BUSYBOX@\n\
                COPY *.txt /globbed/\n\
                COPY [ab].txt /class/\n\
                COPY ?.md /single/\n\
                COPY dir /dir-no-slash\n\
                COPY dir/ /dir-slash/\n\
                COPY dir /tmp\n\
                COPY a.txt /renamed\n\
                COPY a.txt b.txt /multi/\n\
                COPY a.txt /new/deep/dir/\n\
                COPY run.sh link-to-a /top-level/\n\
                COPY dir/sub/ /sub-contents\n\
                WORKDIR /work\n\
                COPY a.txt .\n\
                COPY dir/sub ./relative/\n\
                COPY b.txt named\n",
                files: FILES,
                setup: Some(modes_and_links),
                expect: &["/top-level/link-to-a", "/work/named"],
                ..CASE
            },
            Case {
                name: "copy_onto_existing_paths",
                dockerfile: "FROM @BUSYBOX@\n\
                COPY a.txt /etc/\n\
                COPY b.txt /etc/passwd-copy\n\
                COPY dir/ /etc/\n\
                COPY c.txt /renamed\n\
                COPY a.txt /renamed\n",
                files: FILES,
                setup: Some(modes_and_links),
                ..CASE
            },
            Case {
                name: "copy_chown_with_names_and_ids",
                dockerfile: "FROM @BUSYBOX@\n\
                ARG OWNER=nobody\n\
                COPY --chown=nobody:nogroup a.txt /owned/deep/a.txt\n\
                COPY --chown=nobody dir/ /owned-dir/\n\
                COPY --chown=65534:0 a.txt /numeric\n\
                COPY --chown=nobody:0 a.txt /mixed\n\
                COPY --chown=root:nogroup b.txt /tmp/\n\
                COPY --chown=$OWNER c.txt /from-arg/\n\
                COPY --chown=1234 c.txt /unnamed-id\n",
                files: FILES,
                setup: Some(modes_and_links),
                ..CASE
            },
            Case {
                name: "copy_chmod",
                dockerfile: "FROM @BUSYBOX@\n\
                COPY --chmod=0755 a.txt /exec\n\
                COPY --chmod=600 a.txt b.txt /private/\n\
                COPY --chmod=0750 dir/ /dir/\n\
                COPY --chown=nobody:nogroup --chmod=0640 c.txt /both\n",
                files: FILES,
                setup: Some(modes_and_links),
                ..CASE
            },
            Case {
                name: "add_local_archives",
                dockerfile: "FROM @BUSYBOX@\n\
                ADD archive.tar.gz /gz/\n\
                ADD archive.tar /plain\n\
                ADD archive.tar.gz /tmp\n\
                ADD plain.gz /not-extracted/\n\
                ADD a.txt dir /added/\n\
                ADD --chown=nobody:nogroup b.txt /added-owned/\n\
                ADD --chmod=0700 c.txt /added-private\n",
                files: FILES,
                setup: Some(archives),
                expect: &[
                    "/gz/top/nested/private",
                    "/plain/top/link",
                    "/tmp/top/file",
                    "/not-extracted/plain.gz",
                ],
                ..CASE
            },
            Case {
                name: "add_url",
                // Named after the URL's last segment, never extracted.
                dockerfile: "FROM @BUSYBOX@\n\
                ADD @BLOB_URL@ /downloaded/\n\
                ADD @BLOB_URL@ /downloaded-as\n\
                ADD --chown=nobody:nogroup @BLOB_URL@ /owned/\n\
                ADD --chmod=0644 @BLOB_URL@ /readable\n",
                expect: &["/downloaded-as", "/readable"],
                ..CASE
            },
            Case {
                name: "workdir_keeps_existing_parents",
                dockerfile: "FROM @BUSYBOX@\n\
                COPY dir/ /s/\n\
                WORKDIR /s/sticky/new\n\
                USER nobody\n\
                WORKDIR /s/sub/as-nobody\n\
                WORKDIR /tmp/a/b\n",
                files: FILES,
                setup: Some(modes_and_links),
                ..CASE
            },
            Case {
                name: "env_in_destinations",
                dockerfile: "FROM @BUSYBOX@\n\
                ENV D=/dst NAME=renamed\n\
                COPY a.txt $D/\n\
                WORKDIR $D\n\
                COPY b.txt ${NAME}.txt\n\
                COPY c.txt sub/\n",
                files: FILES,
                ..CASE
            },
            Case {
                name: "dockerignore",
                dockerfile: "FROM @BUSYBOX@\nCOPY . /ctx/\n",
                files: &[
                    (
                        ".dockerignore",
                        "*.log\n!keep.log\nsecret/\n**/*.tmp\ndocs/*.md\n!docs/README.md\n",
                    ),
                    ("app.log", "no"),
                    ("keep.log", "yes"),
                    ("secret/key", "no"),
                    ("deep/er/x.tmp", "no"),
                    ("deep/er/x.txt", "yes"),
                    ("docs/guide.md", "no"),
                    ("docs/README.md", "yes"),
                    ("ok.txt", "yes"),
                ],
                expect: &["/ctx/keep.log", "/ctx/docs/README.md"],
                ..CASE
            },
        ],
        Where::Host,
    );
}

#[test]
fn stages_targets_and_onbuild() {
    compare(
        &[
            Case {
                name: "multi_stage_copy_from",
                dockerfile: "FROM @BUSYBOX@ AS build\n\
                COPY --chown=nobody:nogroup a.txt /out/a.txt\n\
                COPY dir/ /out/dir/\n\
                FROM scratch AS unused\n\
                COPY b.txt /b\n\
                FROM build AS derived\n\
                COPY c.txt /out/c.txt\n\
                FROM scratch\n\
                COPY --from=build /out/ /copied/\n\
                COPY --from=0 /bin/busybox /busybox\n\
                COPY --from=derived /out/c.txt /out/a.txt /two/\n\
                COPY --from=@BUSYBOX@ /etc/passwd /passwd\n\
                COPY --from=build /bin/sh /sh\n\
                COPY --from=build --chown=1:1 /out/dir /owned/\n\
                CMD [\"/busybox\"]\n",
                files: FILES,
                setup: Some(modes_and_links),
                quirks: &[Quirk::ScratchDefaults],
                ..CASE
            },
            Case {
                name: "target_stage_with_build_arg",
                dockerfile: "ARG FLAVOUR=plain\n\
                FROM @BUSYBOX@ AS first\n\
                ARG FLAVOUR\n\
                ENV STAGE=first FLAVOUR=$FLAVOUR\n\
                COPY a.txt /a\n\
                FROM first AS second\n\
                ENV STAGE=second\n\
                LABEL flavour=$FLAVOUR\n\
                COPY b.txt /b\n\
                FROM scratch\n\
                COPY --from=second /a /final\n",
                files: FILES,
                build_args: &["FLAVOUR=spicy"],
                target: Some("second"),
                quirks: &[Quirk::EnvOverrideAppends],
                ..CASE
            },
            Case {
                name: "scratch_only",
                dockerfile: "FROM scratch\n\
                COPY a.txt dir /\n\
                ENTRYPOINT [\"/one\"]\n",
                files: FILES,
                quirks: &[Quirk::ScratchDefaults],
                ..CASE
            },
            Case {
                name: "onbuild_base",
                dockerfile: "FROM @BUSYBOX@\n\
                ONBUILD COPY a.txt /onbuild/\n\
                ONBUILD ENV TRIGGERED=yes\n\
                ONBUILD LABEL trigger=1\n\
                ONBUILD WORKDIR /onbuild/work\n\
                LABEL base=1\n\
                CMD [\"base\"]\n",
                files: FILES,
                push_as: Some("onbuild-base"),
                ..CASE
            },
            Case {
                name: "onbuild_child",
                dockerfile: "FROM @ONBUILD_BASE@\n\
                COPY b.txt .\n\
                LABEL child=1\n",
                files: FILES,
                expect: &["/onbuild/a.txt", "/onbuild/work/b.txt"],
                ..CASE
            },
            Case {
                name: "onbuild_through_a_stage",
                // The triggers run in the stage FROM the base; a stage FROM that
                // stage inherits the result, not the triggers.
                dockerfile: "FROM @ONBUILD_BASE@ AS child\n\
                FROM child\n\
                COPY c.txt /\n",
                files: FILES,
                expect: &["/onbuild/a.txt", "/c.txt"],
                ..CASE
            },
        ],
        Where::Host,
    );
}

#[test]
fn run_commands_and_environment() {
    compare(RUN_COMMANDS, Where::Host);
}

const RUN_COMMANDS: &[Case] = &[
    Case {
        name: "run_shell_form",
        dockerfile: "FROM @BUSYBOX@\n\
                RUN echo hello > /hello && mkdir -p /a/b && printf 'x\\ny\\n' | sort -r > /a/b/sorted\n\
                RUN set -e; for i in 1 2 3; do echo \"line $i\" >> /a/lines; done; echo \"$0\" > /a/argv0\n\
                RUN echo 'single '\"'\"'quoted'\"'\"' \"double\" \\$dollar' > /a/quotes \\\n\
                && echo continued \\\n\
                lines > /a/continued\n",
        quirks: &[Quirk::RunStubs],
        expect: &["/a/argv0", "/a/continued"],
        ..CASE
    },
    Case {
        name: "run_exec_form",
        dockerfile: "FROM @BUSYBOX@\n\
                ENV GREETING=hi\n\
                RUN [\"/bin/sh\", \"-c\", \"echo exec $GREETING > /exec\"]\n\
                RUN [\"mkdir\", \"-p\", \"/looked-up/in/path\"]\n\
                RUN [\"/bin/touch\", \"/not $GREETING expanded\"]\n\
                RUN [ \"sh\", \"-c\", \"printf '%s|' \\\"$@\\\" > /args\", \"argv0\", \"one\", \"two words\" ]\n",
        quirks: &[Quirk::RunStubs],
        expect: &["/not $GREETING expanded", "/args"],
        ..CASE
    },
    Case {
        name: "run_env_and_args",
        dockerfile: "ARG GLOBAL=global\n\
                FROM @BUSYBOX@\n\
                ARG GLOBAL\n\
                ARG FROM_CLI=default\n\
                ARG WITH_DEFAULT=set-in-file\n\
                ENV FROM_ENV=env-value PATH=/opt/tools:$PATH\n\
                RUN mkdir -p /opt/tools && printf '#!/bin/sh\\necho tool ran\\n' > /opt/tools/mytool && chmod 755 /opt/tools/mytool\n\
                RUN echo \"$GLOBAL $FROM_CLI $WITH_DEFAULT $FROM_ENV ${UNDECLARED:-unset}\" > /vars && mytool > /tool-output\n\
                ENV WITH_DEFAULT=env-wins\n\
                RUN echo \"$WITH_DEFAULT\" > /env-wins && echo \"$PATH\" > /path\n\
                ARG LATE=late\n\
                RUN echo \"$LATE\" > /late\n",
        build_args: &["FROM_CLI=from-cli"],
        quirks: &[Quirk::RunStubs, Quirk::EnvOverrideAppends],
        expect: &["/vars", "/tool-output"],
        ..CASE
    },
    Case {
        name: "run_as_user",
        // Owners of what each USER writes; `id` shows the supplementary groups:
        // those listing the user in /etc/group when USER names no group (runc's
        // GetExecUser), and always the primary group (BuildKit since
        // moby/buildkit#3651, CVE-2023-25173; buildah since CVE-2022-2990).
        dockerfile: "FROM @BUSYBOX@\n\
                RUN id > /id-root && echo 'staff:x:50:nobody' >> /etc/group && mkdir -p /home/nobody /shared && chown nobody:nogroup /home/nobody && chmod 1777 /shared\n\
                USER nobody\n\
                RUN id > /home/nobody/id && touch /home/nobody/file && mkdir /home/nobody/dir && touch /shared/by-nobody\n\
                USER nobody:root\n\
                RUN id > /shared/id-nobody-root && touch /shared/nobody-root\n\
                USER 1000:1000\n\
                RUN id > /shared/id-numeric && mkdir /shared/numeric-dir\n\
                USER 0\n\
                RUN touch /shared/by-root\n",
        quirks: &[Quirk::RunStubs],
        expect: &["/home/nobody/id", "/shared/numeric-dir"],
        ..CASE
    },
    Case {
        name: "workdir_missing_and_run",
        // The second RUN removes its own working directory: the next RUN
        // must get it back (runc creates a missing cwd, so does buildah).
        dockerfile: "FROM @BUSYBOX@\n\
                WORKDIR /made/by/workdir\n\
                RUN pwd > here && touch relative\n\
                WORKDIR /gone\n\
                RUN cd / && rmdir /gone\n\
                RUN pwd > /pwd-after-rmdir\n\
                USER nobody\n\
                WORKDIR /tmp\n\
                RUN pwd > /dev/null\n",
        quirks: &[Quirk::RunStubs],
        expect: &["/made/by/workdir/here", "/pwd-after-rmdir"],
        ..CASE
    },
    Case {
        name: "shell_then_run",
        // The SHELL's script records each command it is given, proving that
        // shell-form RUN went through it and exec form did not.
        dockerfile: "FROM @BUSYBOX@\n\
                SHELL [\"/bin/sh\", \"-c\", \"echo \\\"$0\\\" >> /shell-saw; eval \\\"$0\\\"\"]\n\
                RUN touch /one\n\
                RUN echo two > /two\n\
                SHELL [\"/bin/sh\", \"-euc\"]\n\
                RUN echo \"strict $HOME\" > /strict || true\n\
                RUN [\"/bin/sh\", \"-c\", \"echo exec ignores shell > /exec\"]\n",
        quirks: &[Quirk::RunStubs],
        expect: &["/shell-saw", "/strict"],
        ..CASE
    },
    Case {
        name: "run_writes_nothing",
        // Empty layers: no stub, no /tmp entry, nothing of the sandbox.
        dockerfile: "FROM @BUSYBOX@\n\
                RUN true\n\
                RUN echo to the log only && ls / > /dev/null\n\
                RUN touch /tmp/x && rm /tmp/x\n",
        quirks: &[Quirk::RunStubs],
        ..CASE
    },
    Case {
        name: "run_network_none",
        // See NETWORK_NONE: buildah's side runs with the host's network.
        dockerfile: "FROM @BUSYBOX@\n\
                RUN @NETWORK_NONE@ echo offline > /offline && cat /etc/hosts /etc/resolv.conf > /dev/null\n\
                RUN @NETWORK_NONE@ touch /tmp/also-offline\n\
                RUN echo online again > /online\n",
        quirks: &[Quirk::RunStubs],
        expect: &["/offline", "/tmp/also-offline"],
        ..CASE
    },
    Case {
        name: "multi_stage_run_and_copy_from",
        dockerfile: "FROM @BUSYBOX@ AS build\n\
                RUN mkdir -p /out/bin && echo '#!/bin/sh' > /out/bin/tool && chmod 755 /out/bin/tool && ln -s tool /out/bin/alias\n\
                RUN echo built > /out/stamp && chown nobody /out/stamp\n\
                FROM build AS derived\n\
                RUN rm /out/stamp && echo derived > /out/derived\n\
                FROM @BUSYBOX@\n\
                RUN mkdir /app && echo final > /app/final\n\
                COPY --from=build /out/ /app/\n\
                COPY --from=derived /out/derived /app/\n\
                RUN ls -R /app > /app/listing\n",
        quirks: &[Quirk::RunStubs],
        expect: &["/app/bin/alias", "/app/listing"],
        ..CASE
    },
];

#[test]
fn run_filesystem_changes() {
    compare(RUN_FILESYSTEM, Where::Host);
}

const RUN_FILESYSTEM: &[Case] = &[
    Case {
        name: "delete_base_files",
        dockerfile: "FROM @BUSYBOX@\n\
                RUN rm /etc/group /bin/vi /bin/wget && rmdir /home\n\
                RUN rm /etc/passwd && echo 'root:x:0:0:root:/root:/bin/sh' > /etc/passwd.new\n",
        quirks: &[Quirk::RunStubs],
        ..CASE
    },
    Case {
        name: "rm_rf_and_recreate_directory",
        dockerfile: "FROM @BUSYBOX@\n\
                RUN mkdir -p /d/sub /keep && echo 1 > /d/sub/a && echo 2 > /d/b && echo 3 > /keep/k\n\
                RUN rm -rf /d && mkdir -p /d/other && echo 4 > /d/other/c\n\
                RUN rm -rf /root && mkdir -m 0750 /root && echo new > /root/.profile\n\
                RUN rm -rf /keep/* && echo 5 > /keep/new\n",
        quirks: &[Quirk::RunStubs],
        ..CASE
    },
    Case {
        name: "file_replaced_by_directory_and_back",
        dockerfile: "FROM @BUSYBOX@\n\
                RUN echo f > /x && mkdir /y && touch /y/inner\n\
                RUN rm /x && mkdir /x && touch /x/in && rm -rf /y && echo now-a-file > /y\n\
                RUN rm /bin/vi && mkdir /bin/vi && touch /bin/vi/inside && rm -rf /home && echo file > /home\n",
        quirks: &[Quirk::RunStubs],
        ..CASE
    },
    Case {
        name: "successive_runs_modify",
        dockerfile: "FROM @BUSYBOX@\n\
                RUN mkdir /w && echo a > /w/a && echo b > /w/b && echo c > /w/c && mkdir /w/d\n\
                RUN echo a2 >> /w/a && rm /w/b && chmod 600 /w/c && touch /w/d/new\n\
                RUN mv /w/a /w/e && echo b-again > /w/b && rm -r /w/d\n\
                RUN cp /w/e /w/a && rm /w/e && chown nobody /w/c\n",
        quirks: &[Quirk::RunStubs],
        ..CASE
    },
    Case {
        name: "chmod_chown_base_files",
        dockerfile: "FROM @BUSYBOX@\n\
                RUN chmod 600 /etc/passwd && chown nobody:nogroup /etc/group && chmod 1777 /home && chown 1:2 /root\n\
                RUN chmod 0700 /tmp && chown -h nobody /bin/ls\n",
        quirks: &[Quirk::RunStubs],
        ..CASE
    },
    Case {
        name: "setuid_and_sticky_bits",
        dockerfile: "FROM @BUSYBOX@\n\
                RUN printf '#!/bin/sh\\n' > /suid && chmod 4755 /suid && cp /suid /sgid && chmod 2755 /sgid && mkdir -m 2775 /sgid-dir && mkdir -m 1777 /sticky\n\
                RUN chmod 4755 /bin/busybox && chmod 6711 /suid\n",
        quirks: &[Quirk::RunStubs],
        ..CASE
    },
    Case {
        name: "symlinks",
        dockerfile: "FROM @BUSYBOX@\n\
                RUN ln -s /etc/passwd /abs && mkdir /rel && ln -s ../etc /rel/etc-dir && ln -s missing /dangling && ln -s /bin/sh /sh-link\n\
                RUN ln -sf ls /bin/cat && rm /bin/vi && echo 'not a link' > /bin/vi\n\
                RUN rm /abs && ln -s /etc/group /abs && ln -s /rel/etc-dir/passwd /through-link\n",
        quirks: &[Quirk::RunStubs],
        ..CASE
    },
    Case {
        name: "hard_links",
        // Names of one file made in one RUN stay one file in the image.
        dockerfile: "FROM @BUSYBOX@\n\
                RUN echo data > /f && ln /f /hl && mkdir /d && ln /f /d/hl2\n\
                RUN echo new > /g && ln /g /g2 && ln /g /tmp/g3\n",
        quirks: &[Quirk::RunStubs],
        expect: &["/d/hl2", "/tmp/g3"],
        ..CASE
    },
    Case {
        name: "hard_link_to_a_lower_layer_file",
        // A link to a file of the base: the base's name is unchanged, the new
        // name has its content.
        dockerfile: "FROM @BUSYBOX@\n\
                RUN ln /etc/passwd /passwd-hard\n",
        quirks: &[
            Quirk::RunStubs,
            Quirk::LinkToLowerLayer(&["/etc/passwd", "/passwd-hard"]),
        ],
        expect: &["/passwd-hard"],
        ..CASE
    },
    Case {
        name: "hard_link_written_in_a_later_run",
        // A later RUN appends to one name of a file with two: both names
        // see the write, on buildah's vfs storage as on executor's
        // overlay (index=on; the snapshotter links the other name in).
        dockerfile: "FROM @BUSYBOX@\n\
                RUN echo data > /f && ln /f /hl\n\
                RUN echo changed >> /f\n",
        quirks: &[Quirk::RunStubs],
        expect: &["/hl"],
        ..CASE
    },
    Case {
        name: "special_files",
        // FIFOs only: buildah's chroot isolation cannot mknod (module doc).
        dockerfile: "FROM @BUSYBOX@\n\
                RUN mkfifo /fifo && mkfifo -m 0600 /tmp/private-fifo && mkdir /sockets\n\
                RUN rm /fifo && mkfifo -m 0640 /fifo\n",
        quirks: &[Quirk::RunStubs],
        expect: &["/fifo"],
        ..CASE
    },
    Case {
        name: "files_in_tmp",
        dockerfile: "FROM @BUSYBOX@\n\
                RUN touch /tmp/marker && echo y > /tmp/y && mkdir /tmp/sub\n\
                RUN rm /tmp/y && echo z > /tmp/sub/z\n",
        quirks: &[Quirk::RunStubs],
        ..CASE
    },
    Case {
        name: "mkdir_deep_trees",
        dockerfile: "FROM @BUSYBOX@\n\
                RUN mkdir -p /deep/$(seq -s / 1 40) && echo bottom > /deep/$(seq -s / 1 40)/file\n\
                RUN mkdir -p -m 0700 /private/a/b && for i in $(seq 1 150); do mkdir -p /wide/d$((i % 15)); echo $i > /wide/d$((i % 15))/f$i; done\n",
        quirks: &[Quirk::RunStubs],
        expect: &["/wide/d0/f150"],
        ..CASE
    },
    Case {
        name: "large_file",
        // 50 MB of text and 16 MiB of zeros, compared byte for byte.
        dockerfile: "FROM @BUSYBOX@\n\
                RUN yes 0123456789abcdef | head -c 50000000 > /big && dd if=/dev/zero of=/zeros bs=1M count=16 2>/dev/null\n\
                RUN echo tail >> /big\n",
        quirks: &[Quirk::RunStubs],
        expect: &["/big"],
        ..CASE
    },
];

#[test]
fn run_mounts() {
    compare(RUN_MOUNTS, Where::Host);
}

const RUN_MOUNTS: &[Case] = &[
    Case {
        name: "run_mount_bind",
        // Context (file and whole), another stage, an image, a read-write
        // bind whose writes must stay out of the image (buildah 1.28 writes
        // them through to the context directory, which is not compared).
        dockerfile: "FROM @BUSYBOX@ AS build\n\
                RUN mkdir /out && echo from-stage > /out/f\n\
                FROM @BUSYBOX@\n\
                RUN --mount=type=bind,source=a.txt,target=/mnt/a cp /mnt/a /from-context\n\
                RUN --mount=type=bind,from=build,source=/out,target=/src cp /src/f /from-stage\n\
                RUN --mount=type=bind,target=/ctx cat /ctx/dir/one > /from-context-dir\n\
                RUN --mount=type=bind,source=dir,target=/etc/extra ls /etc/extra > /listing\n\
                RUN --mount=type=bind,target=/ctx,rw touch /ctx/discarded && ls /ctx > /rw-listing\n\
                RUN --mount=type=bind,from=@BUSYBOX@,source=/etc,target=/base-etc cp /base-etc/passwd /from-image\n",
        files: FILES,
        quirks: &[Quirk::RunStubs, Quirk::MountParents(&["/mnt"])],
        expect: &["/from-context", "/from-stage", "/from-image", "/rw-listing"],
        ..CASE
    },
    Case {
        name: "run_mount_cache",
        // One cache id under two targets: the second RUN sees the first's
        // file. buildah keeps caches under /var/tmp between runs, so the first
        // RUN empties it first. uid, gid and mode apply to the cache's root.
        dockerfile: "FROM @BUSYBOX@\n\
                RUN --mount=type=cache,target=/cache,id=executor-diff-cache rm -rf /cache/* && echo cached > /cache/f && cp /cache/f /from-cache\n\
                RUN --mount=type=cache,target=/elsewhere,id=executor-diff-cache cp /elsewhere/f /seen-again\n\
                RUN --mount=type=cache,target=/var/cache/apt touch /var/cache/apt/pkg\n\
                RUN --mount=type=cache,target=/owned,uid=65534,gid=65534,mode=0700 stat -c '%u:%g %a' /owned > /owned-stat\n",
        quirks: &[
            Quirk::RunStubs,
            Quirk::MountParents(&["/var", "/var/cache"]),
        ],
        expect: &["/seen-again", "/owned-stat"],
        ..CASE
    },
    Case {
        name: "run_mount_tmpfs",
        // Only on missing targets: a tmpfs over an existing directory (say
        // /tmp) makes buildah 1.28 empty the whole image (module doc).
        dockerfile: "FROM @BUSYBOX@\n\
                RUN --mount=type=tmpfs,target=/scratch echo x > /scratch/f && cp /scratch/f /from-tmpfs\n\
                RUN --mount=type=tmpfs,target=/deep/er/scratch touch /deep/er/scratch/gone && ls /deep/er > /deep-listing\n",
        quirks: &[Quirk::RunStubs, Quirk::MountParents(&["/deep", "/deep/er"])],
        expect: &["/from-tmpfs", "/deep-listing"],
        ..CASE
    },
];

/// One layer several times in one image: steps whose changes are
/// byte-identical give one diffID, which Docker, BuildKit and buildah all
/// stack again (a diffID may appear any number of times in an image).
/// Layers in between change what the repeated layer holds, which its second
/// copy must bring back. One case is pushed: the registry gets one blob
/// twice in a manifest.
#[test]
fn repeated_layers() {
    compare(
        &[
            Case {
                name: "repeated_copy_of_the_context",
                dockerfile: "FROM scratch\n\
                COPY . /\n\
                COPY b.txt /a.txt\n\
                COPY c.txt /dir/one\n\
                COPY . /\n\
                COPY c.txt /\n",
                files: FILES,
                quirks: &[Quirk::ScratchDefaults],
                repeats_a_layer: true,
                push_as: Some("repeated"),
                ..CASE
            },
            Case {
                name: "repeated_copy_of_a_stage_root",
                dockerfile: "FROM @BUSYBOX@ AS build\n\
                RUN mkdir -p /out/sub && echo built > /out/sub/f && ln -s sub/f /out/link\n\
                FROM scratch AS files\n\
                COPY --from=build /out/ /\n\
                FROM scratch AS twice\n\
                COPY --from=files / /\n\
                COPY --from=files / /\n\
                FROM @BUSYBOX@\n\
                COPY --from=twice / /opt/\n\
                RUN rm -r /opt/sub /opt/link && echo other > /opt/link\n\
                COPY --from=twice / /opt/\n",
                quirks: &[Quirk::RunStubs],
                expect: &["/opt/sub/f", "/opt/link"],
                repeats_a_layer: true,
                ..CASE
            },
            Case {
                name: "repeated_run_after_a_volume",
                dockerfile: "FROM @BUSYBOX@\n\
                VOLUME /data\n\
                RUN mkdir -p /same && dd if=/dev/zero of=/same/file bs=1k count=4 2>/dev/null\n\
                RUN sleep 1 && mkdir -p /same && dd if=/dev/zero of=/same/file bs=1k count=4 2>/dev/null\n",
                // File times clamped to 0: the two RUNs (a second apart)
                // write the same bytes.
                build_args: &["SOURCE_DATE_EPOCH=0"],
                quirks: &[Quirk::RunStubs, Quirk::VolumeDirectories(&["/data"])],
                expect: &["/same/file"],
                repeats_a_layer: true,
                ..CASE
            },
        ],
        Where::Host,
    );
}

/// A context whose links point out of it: an absolute one and one climbing
/// above the root, both to a directory that is in the context, and a link
/// inside a copied directory.
fn links_out_of_the_context(context: &Path) {
    fs::create_dir_all(context.join("sub/deeper")).unwrap();
    fs::write(context.join("sub/s"), "s\n").unwrap();
    fs::write(context.join("sub/deeper/d"), "d\n").unwrap();
    std::os::unix::fs::symlink("/sub", context.join("abslink")).unwrap();
    std::os::unix::fs::symlink("../../sub", context.join("uplink")).unwrap();
    fs::create_dir_all(context.join("dir")).unwrap();
    std::os::unix::fs::symlink("/sub/s", context.join("dir/inner")).unwrap();
}

/// Symlinks on the way to a COPY source are followed inside the stage's or
/// the context's root, as in a chroot (an absolute target from the root,
/// `..` stopping there); symlinks inside a copied directory are copied as
/// they are.
#[test]
fn symlinks_in_sources() {
    compare(
        &[
            Case {
                name: "copy_from_a_stage_through_absolute_links",
                dockerfile: "FROM @BUSYBOX@ AS stage\n\
                RUN mkdir -p /opt/real /opt/app-1.2/bin /usr/share/zoneinfo/Europe \\\n  \
                && echo real > /opt/real/f && echo app > /opt/app-1.2/bin/run \\\n  \
                && echo zone > /usr/share/zoneinfo/Europe/Paris \\\n  \
                && ln -s /usr/share/zoneinfo/Europe/Paris /etc/localtime \\\n  \
                && ln -s /opt/real/f /flink && ln -s /opt/app-1.2 /opt/current \\\n  \
                && ln -s ../../../../opt/real /opt/up && ln -s /opt/real/f /opt/app-1.2/bin/inner\n\
                FROM scratch\n\
                COPY --from=stage /flink /y\n\
                COPY --from=stage /etc/localtime /etc/localtime\n\
                COPY --from=stage /opt/current/ /app/\n\
                COPY --from=stage /opt/current /app2\n\
                COPY --from=stage /opt/up/f /up-f\n\
                COPY --from=stage /opt/cur* /wild/\n",
                quirks: &[Quirk::ScratchDefaults],
                expect: &[
                    "/y",
                    "/etc/localtime",
                    "/app/bin/run",
                    "/app/bin/inner",
                    "/up-f",
                ],
                ..CASE
            },
            Case {
                name: "copy_from_the_context_through_links_out_of_it",
                dockerfile: "FROM scratch\n\
                COPY abslink/ /x/\n\
                COPY uplink /u/\n\
                COPY abslink/s uplink/deeper/d /files/\n\
                COPY dir/ /d/\n",
                setup: Some(links_out_of_the_context),
                quirks: &[Quirk::ScratchDefaults],
                expect: &["/x/s", "/u/deeper/d", "/files/s", "/files/d", "/d/inner"],
                ..CASE
            },
        ],
        Where::Host,
    );
}

/// Users and groups that are ids need no `/etc/passwd`: BuildKit reads
/// `root` as 0 and numbers as themselves (a `FROM scratch` image has no
/// files to look names up in). A named user's files get its passwd group.
#[test]
fn users_without_passwd() {
    compare(
        &[
            Case {
                name: "user_root_on_scratch",
                dockerfile: "FROM scratch\n\
                USER root\n\
                WORKDIR /w\n\
                USER root:root\n\
                WORKDIR /x\n\
                COPY --chown=0 b.txt /w/\n\
                COPY --chown=1000:50 c.txt /w/\n\
                USER 1000:1000\n\
                WORKDIR /as-1000\n\
                USER 1001\n\
                WORKDIR /as-1001\n",
                files: FILES,
                quirks: &[Quirk::ScratchDefaults],
                expect: &["/w/c.txt", "/x", "/as-1000", "/as-1001"],
                ..CASE
            },
            Case {
                name: "chown_to_a_named_user_takes_its_group",
                dockerfile: "FROM @BUSYBOX@\n\
                RUN echo 'app:x:1000:1001::/home/app:/bin/sh' >> /etc/passwd \\\n  \
                && echo 'appgroup:x:1001:' >> /etc/group\n\
                COPY --chown=app a.txt /owned-by-app\n\
                COPY --chown=app:root b.txt /app-and-root\n\
                USER app\n\
                WORKDIR /app-work\n",
                files: FILES,
                quirks: &[Quirk::RunStubs],
                expect: &["/owned-by-app", "/app-work"],
                ..CASE
            },
        ],
        Where::Host,
    );
}

/// The entrypoint script of [`debian_images`]' service.
const ENTRYPOINT_SCRIPT: &[(&str, &str)] =
    &[("docker-entrypoint.sh", "#!/bin/sh\nset -e\nexec \"$@\"\n")];

/// Dockerfiles of well-known kinds on the Debian base, with what minbase
/// has (no package downloads): an official-image style service (system
/// user and group, `set -eux` RUNs under a bash SHELL, an entrypoint
/// script and its compatibility link, VOLUME, WORKDIR), a multi-stage
/// build that carries a binary, its libraries (a wildcard over versioned
/// `.so` links) and the loader through merged-/usr links into another
/// image, where it runs, a Python-style app copied as its user, and
/// copies into Debian's linked directories.
#[test]
fn debian_images() {
    compare(
        &[
            Case {
                name: "official_image_style_service",
                dockerfile: "FROM @DEBIAN@\n\
                ARG DEBIAN_FRONTEND=noninteractive\n\
                ENV LANG C.UTF-8\n\
                ENV APP_HOME=/var/lib/app\n\
                SHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]\n\
                RUN set -eux; \\\n  \
                    groupadd -r -g 999 app; \\\n  \
                    useradd -r -g app -u 999 -d \"$APP_HOME\" -s /usr/sbin/nologin app; \\\n  \
                    mkdir -p \"$APP_HOME\" /docker-entrypoint.d; \\\n  \
                    chown -R app:app \"$APP_HOME\"; chmod 1777 /docker-entrypoint.d; \\\n  \
                    id app | tee /id.txt\n\
                COPY --chown=app:app docker-entrypoint.sh /usr/local/bin/\n\
                RUN chmod +x /usr/local/bin/docker-entrypoint.sh \\\n  \
                    && ln -s usr/local/bin/docker-entrypoint.sh / # backwards compat\n\
                VOLUME /var/lib/app\n\
                WORKDIR $APP_HOME\n\
                USER app\n\
                RUN touch made-by-app && ls -ln > listing.txt\n\
                EXPOSE 6379\n\
                STOPSIGNAL SIGTERM\n\
                ENTRYPOINT [\"docker-entrypoint.sh\"]\n\
                CMD [\"app-server\"]\n",
                files: ENTRYPOINT_SCRIPT,
                quirks: &[
                    Quirk::RunStubs,
                    Quirk::VolumeWritesDiscarded(&[
                        "/var/lib/app/made-by-app",
                        "/var/lib/app/listing.txt",
                    ]),
                ],
                expect: &[
                    "/docker-entrypoint.sh",
                    "/var/lib/app/made-by-app",
                    "/id.txt",
                ],
                ..CASE
            },
            Case {
                name: "binary_and_libraries_from_a_build_stage",
                dockerfile: "FROM @DEBIAN@ AS build\n\
                RUN mkdir -p /out/bin && cp /usr/sbin/getcap /out/bin/\n\
                FROM @BUSYBOX@\n\
                COPY --from=build /out/bin/getcap /usr/local/bin/\n\
                COPY --from=build /usr/lib/x86_64-linux-gnu/libcap.so* /lib/x86_64-linux-gnu/\n\
                COPY --from=build /lib/x86_64-linux-gnu/libc.so.6 /lib/x86_64-linux-gnu/\n\
                COPY --from=build /lib64/ld-linux-x86-64.so.2 /lib64/\n\
                RUN /usr/local/bin/getcap -v /bin/busybox > /getcap.out\n",
                quirks: &[Quirk::RunStubs],
                expect: &["/getcap.out", "/lib64/ld-linux-x86-64.so.2"],
                ..CASE
            },
            Case {
                // A Python web app's usual shape, without pip: an unprivileged
                // user with a home, the app copied to its WORKDIR as that user,
                // the user's HOME in a RUN.
                name: "python_style_app",
                dockerfile: "FROM @DEBIAN@\n\
                ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1\n\
                WORKDIR /app\n\
                RUN useradd --create-home --uid 10001 --shell /bin/bash appuser\n\
                COPY requirements*.txt ./\n\
                COPY --chown=appuser:appuser . .\n\
                USER appuser\n\
                ENV PATH=/home/appuser/.local/bin:$PATH\n\
                RUN mkdir -p ~/.local/bin && echo \"$HOME\" > ~/.local/home.txt && id > ~/.local/id.txt\n\
                EXPOSE 8000\n\
                HEALTHCHECK --interval=30s CMD [\"true\"]\n\
                CMD [\"python3\", \"-m\", \"app\"]\n",
                files: &[
                    ("requirements.txt", "flask==3.0.0\n"),
                    ("app/__init__.py", ""),
                    ("app/__main__.py", "print('hello')\n"),
                    ("app/__pycache__/junk.pyc", "junk"),
                    (".dockerignore", "**/__pycache__\n*.pyc\n.git\n"),
                ],
                quirks: &[Quirk::RunStubs, Quirk::EnvOverrideAppends],
                expect: &["/app/app/__main__.py", "/home/appuser/.local/home.txt"],
                ..CASE
            },
            Case {
                // Debian's /bin, /sbin and /lib are links into /usr, /var/run
                // one to /run: what COPY, ADD and WORKDIR make there lands at
                // the link's target, and the links stay links.
                name: "copy_through_merged_usr_links",
                dockerfile: "FROM @DEBIAN@ AS stage\n\
                RUN mkdir -p /out/lib && echo lib > /out/lib/libextra.so.1\n\
                FROM @DEBIAN@\n\
                COPY a.txt /bin/\n\
                COPY b.txt /sbin/b-tool\n\
                COPY dir/ /lib/extra/\n\
                COPY --from=stage /out/lib/ /lib/x86_64-linux-gnu/\n\
                ADD archive.tar /lib/from-archive/\n\
                WORKDIR /bin/work\n\
                WORKDIR /var/run/app\n",
                files: FILES,
                setup: Some(archives),
                expect: &[
                    "/usr/bin/a.txt",
                    "/usr/sbin/b-tool",
                    "/usr/lib/extra/one",
                    "/usr/lib/x86_64-linux-gnu/libextra.so.1",
                    "/usr/lib/from-archive/top/file",
                    "/usr/bin/work",
                    "/run/app",
                ],
                ..CASE
            },
        ],
        Where::Host,
    );
}

/// The comparison itself: each kind of difference is reported, and a quirk
/// hides only its own detail.
/// The RUN cases again, executor building in a default pod (no
/// CAP_SYS_ADMIN, RuntimeDefault seccomp): `auto` builds them in place,
/// and the images must agree with buildah's as the namespace builds do.
#[test]
fn run_cases_in_a_default_pod() {
    compare(&run_cases(), Where::Pod);
}

/// The RUN cases again, executor building as a user without root that has
/// a subordinate id range in /etc/subuid and /etc/subgid: the build runs
/// as root of a user namespace mapping that range, so USER, chown and the
/// base's owners keep the image's own ids, and the images must agree with
/// buildah's as the root builds do. buildah runs as root here, as in every
/// case: rootless buildah 1.28 needs a user session (XDG_RUNTIME_DIR) and
/// its own storage configuration, and root's is the reference the other
/// places are held to.
#[test]
fn run_cases_without_root() {
    compare(&run_cases(), Where::Rootless);
}

/// Every RUN case (commands, file system changes, mounts).
fn run_cases() -> Vec<Case> {
    [RUN_COMMANDS, RUN_FILESYSTEM, RUN_MOUNTS]
        .iter()
        .flat_map(|cases| cases.iter())
        .map(|case| Case { ..*case })
        .collect()
}

#[test]
fn differences_are_reported() {
    let file = |mode, content: &str| Entry {
        kind: "file",
        mode,
        uid: 0,
        gid: 0,
        link: None,
        device: None,
        hard_link: None,
        content: Some(content.as_bytes().to_vec()),
    };
    let built = |config: Value, tree: &[(&str, Entry)]| Built {
        config: pick(&config),
        tree: tree
            .iter()
            .map(|(p, e)| ((*p).to_string(), e.clone()))
            .collect(),
        diff_ids: Vec::new(),
    };
    let base = || {
        built(
            serde_json::json!({"Env": ["A=1"], "Cmd": [], "Labels": {}, "WorkingDir": "/"}),
            &[("/f", file(0o644, "x"))],
        )
    };
    assert_eq!(differences(&base(), &base()), "");
    // null, empty and absent are the same; a zero healthcheck field too.
    let same = built(
        serde_json::json!({"Env": ["A=1"], "Cmd": null, "WorkingDir": "/", "Volumes": {}}),
        &[("/f", file(0o644, "x"))],
    );
    assert_eq!(differences(&base(), &same), "");

    for (other, expected) in [
        (
            built(
                serde_json::json!({"Env": ["A=2"], "WorkingDir": "/"}),
                &[("/f", file(0o644, "x"))],
            ),
            "config Env",
        ),
        (
            built(
                serde_json::json!({"Env": ["A=1"], "WorkingDir": "/", "User": "nobody"}),
                &[("/f", file(0o644, "x"))],
            ),
            "config User",
        ),
        (
            built(
                serde_json::json!({"Env": ["A=1"], "WorkingDir": "/"}),
                &[("/f", file(0o600, "x"))],
            ),
            "file /f",
        ),
        (
            built(
                serde_json::json!({"Env": ["A=1"], "WorkingDir": "/"}),
                &[("/f", file(0o644, "y"))],
            ),
            "file /f",
        ),
        (
            built(
                serde_json::json!({"Env": ["A=1"], "WorkingDir": "/"}),
                &[("/f", file(0o644, "x")), ("/g", file(0o644, ""))],
            ),
            "file /g: only buildah has it",
        ),
    ] {
        let diff = differences(&base(), &other);
        assert!(diff.contains(expected), "{expected:?} not in {diff:?}");
    }

    // The scratch quirk drops executor's WorkingDir "/" and nothing else.
    let case = Case {
        quirks: &[Quirk::ScratchDefaults],
        ..CASE
    };
    let mut executor = base();
    let mut buildah = built(
        serde_json::json!({"Env": ["A=1"], "User": "x"}),
        &[("/f", file(0o644, "x"))],
    );
    apply_quirks(&case, &mut executor, &mut buildah);
    assert_eq!(
        differences(&executor, &buildah),
        "  config User:\n    executor: (unset)\n    buildah:  \"x\"\n"
    );

    // The stub quirks drop buildah's empty stubs that executor lacks, and
    // only those: not a stub with content, not one executor has too.
    let dir = || Entry {
        kind: "dir",
        content: None,
        ..file(0o755, "")
    };
    let case = Case {
        quirks: &[Quirk::RunStubs, Quirk::MountParents(&["/mnt", "/mnt/deep"])],
        ..CASE
    };
    let mut executor = built(
        serde_json::json!({}),
        &[("/f", file(0o644, "x")), ("/sys", dir())],
    );
    let mut buildah = built(
        serde_json::json!({}),
        &[
            ("/f", file(0o644, "x")),
            ("/dev", dir()),
            ("/proc", dir()),
            ("/proc/kept", file(0o644, "")),
            ("/sys", dir()),
            ("/etc/hosts", file(0o755, "")),
            ("/etc/resolv.conf", file(0o755, "nameserver 1.1.1.1\n")),
            ("/mnt", dir()),
            ("/mnt/deep", dir()),
        ],
    );
    apply_quirks(&case, &mut executor, &mut buildah);
    let left: Vec<&str> = buildah.tree.keys().map(String::as_str).collect();
    assert_eq!(
        left,
        ["/etc/resolv.conf", "/f", "/proc", "/proc/kept", "/sys"]
    );
}
