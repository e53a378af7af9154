//! RUN on the Debian base (`debootstrap --variant=minbase bookworm`, made
//! by `tests/fixtures/debian-base.sh`; see the harness's `debian` module),
//! end to end against the real registry: file capabilities set with
//! `setcap` survive in the layer and in the next build, users made with
//! `useradd`/`groupadd`, the dpkg database, a big lower directory deleted;
//! and the Flask example built on a python image that `apt-get` installs,
//! which is the only test here that needs the Debian mirror and PyPI.

use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use executor_e2e::{DEFAULT_PATH, Project, Registry, RegistryKind, pull_image, unpack};

/// A registry with the Debian base pushed; the base's reference.
fn bed() -> (Registry, String) {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_debian();
    (registry, base)
}

/// Builds `project` and pushes it as `debian-run/NAME:1`; returns the
/// reference.
fn push(registry: &Registry, project: &Project, name: &str, args: &[&str]) -> String {
    let reference = registry.reference(&format!("debian-run/{name}:1"));
    let mut all = vec!["-d", &reference, "--insecure-registry", &registry.host];
    all.extend_from_slice(args);
    project.ok(&all);
    reference
}

fn read(rootfs: &Path, path: &str) -> String {
    fs::read_to_string(rootfs.join(path)).unwrap_or_else(|e| panic!("/{path} in the image: {e}"))
}

#[test]
fn debian_base_image_is_usable_as_a_base() {
    let (registry, base) = bed();
    let config = registry.raw_config(&base);
    assert_eq!(
        config["config"]["Env"],
        serde_json::json!([format!("PATH={DEFAULT_PATH}")])
    );
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["bash"]));
    // Pushed once per registry.
    assert_eq!(registry.push_debian(), base);

    let project = Project::new(
        &format!("FROM {base}\nCOPY hello /hello\n"),
        &[("hello", "hi\n")],
    );
    let reference = push(&registry, &project, "copy", &[]);
    let rootfs = unpack(&registry, &reference, &project.path("unpacked"));
    assert!(read(&rootfs, "etc/debian_version").starts_with("12."));
    assert_eq!(read(&rootfs, "hello"), "hi\n");
    assert!(rootfs.join("usr/sbin/setcap").is_file());
    assert!(
        fs::symlink_metadata(rootfs.join("bin"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "bookworm has a merged /usr"
    );
}

/// `security.capability` for `cap_net_raw+ep`: `vfs_cap_data` revision 2,
/// effective, permitted bit 13.
fn is_cap_net_raw_ep(value: &[u8]) -> bool {
    let word = |i: usize| {
        value
            .get(i * 4..i * 4 + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let (Some(magic), Some(permitted)) = (word(0), word(1)) else {
        return false;
    };
    let revision = magic & 0xff00_0000;
    (revision == 0x0200_0000 || revision == 0x0300_0000) && magic & 1 == 1 && permitted == 1 << 13
}

#[test]
fn file_capabilities_survive_in_the_layer_and_the_next_build() {
    let (registry, base) = bed();
    let project = Project::new(
        &format!(
            "FROM {base}\n\
             RUN cp /bin/true /usr/local/bin/captest && setcap cap_net_raw+ep /usr/local/bin/captest\n"
        ),
        &[],
    );
    let with_cap = push(&registry, &project, "setcap", &[]);

    // The RUN's layer records the xattr as a PAX record.
    let image = pull_image(&registry, &with_cap, &project.path("pulled"));
    assert_eq!(image.layers.len(), 2);
    let records = image
        .pax_records(1, "usr/local/bin/captest")
        .expect("captest in the RUN's layer");
    let cap = records
        .get("SCHILY.xattr.security.capability")
        .unwrap_or_else(|| panic!("no security.capability record: {records:?}"));
    assert!(is_cap_net_raw_ep(cap), "{cap:02x?}");
    // umoci applies it when unpacking; the host's getcap reads it back.
    let rootfs = unpack(&registry, &with_cap, &project.path("unpacked-setcap"));
    let out = std::process::Command::new("getcap")
        .arg(rootfs.join("usr/local/bin/captest"))
        .output()
        .expect("getcap runs (the Debian package libcap2-bin)");
    let getcap = String::from_utf8_lossy(&out.stdout);
    assert!(getcap.contains("cap_net_raw=ep"), "{getcap:?}");

    // A build FROM it sees the capability on the file.
    project.write(
        "Next.Dockerfile",
        format!("FROM {with_cap}\nRUN getcap /usr/local/bin/captest > /getcap.txt\n"),
    );
    let next = push(&registry, &project, "getcap", &["-f", "Next.Dockerfile"]);
    let rootfs = unpack(&registry, &next, &project.path("unpacked"));
    let getcap = read(&rootfs, "getcap.txt");
    assert!(getcap.contains("cap_net_raw=ep"), "{getcap:?}");
}

#[test]
fn users_made_with_useradd_and_groupadd() {
    let (registry, base) = bed();
    let project = Project::new(
        &format!(
            "FROM {base}\n\
             RUN groupadd -g 3000 devs && useradd -m -u 3001 -G devs -s /bin/bash alice\n\
             USER alice\n\
             WORKDIR /home/alice/work\n\
             RUN id > id.txt && echo \"$HOME\" > home.txt\n\
             USER alice:devs\n\
             RUN touch by-group.txt\n"
        ),
        &[],
    );
    let reference = push(&registry, &project, "users", &[]);
    let rootfs = unpack(&registry, &reference, &project.path("unpacked"));
    let id = read(&rootfs, "home/alice/work/id.txt");
    assert!(id.starts_with("uid=3001(alice) gid=3001(alice)"), "{id}");
    assert!(id.contains("3000(devs)"), "{id}");
    assert_eq!(read(&rootfs, "home/alice/work/home.txt"), "/home/alice\n");
    assert!(read(&rootfs, "etc/passwd").contains("alice:x:3001:3001::/home/alice:/bin/bash"));
    assert!(read(&rootfs, "etc/group").contains("devs:x:3000:alice"));
    let home = fs::metadata(rootfs.join("home/alice")).unwrap();
    assert_eq!((home.uid(), home.gid()), (3001, 3001));
    let work = fs::metadata(rootfs.join("home/alice/work")).unwrap();
    assert_eq!((work.uid(), work.gid()), (3001, 3001));
    let by_group = fs::metadata(rootfs.join("home/alice/work/by-group.txt")).unwrap();
    assert_eq!((by_group.uid(), by_group.gid()), (3001, 3000));
}

#[test]
fn dpkg_database_and_a_deleted_lower_directory() {
    let (registry, base) = bed();
    let project = Project::new(
        &format!(
            "FROM {base}\n\
             RUN dpkg-query -W -f '${{Package}}\\n' > /packages.txt && dpkg --audit > /audit.txt\n\
             RUN rm -rf /usr/share/doc /usr/share/man && mkdir /usr/share/man\n"
        ),
        &[],
    );
    let reference = push(&registry, &project, "dpkg", &[]);
    let rootfs = unpack(&registry, &reference, &project.path("unpacked"));
    let packages = read(&rootfs, "packages.txt");
    for package in ["bash", "dpkg", "apt", "libcap2-bin"] {
        assert!(
            packages.lines().any(|p| p == package),
            "{package}: {packages}"
        );
    }
    assert_eq!(read(&rootfs, "audit.txt"), "");
    assert!(rootfs.join("var/lib/dpkg/status").is_file());
    assert!(!rootfs.join("usr/share/doc").exists());
    assert_eq!(
        fs::read_dir(rootfs.join("usr/share/man")).unwrap().count(),
        0
    );
    // The base has no /etc/hosts, so neither has the image.
    assert!(fs::symlink_metadata(rootfs.join("etc/hosts")).is_err());

    // A deleted directory is one whiteout, a replaced one an opaque marker:
    // the layer stays small whatever the directory held.
    let image = pull_image(&registry, &reference, &project.path("pulled"));
    let paths = image.layer_paths(2);
    assert!(paths.iter().any(|p| p == "usr/share/.wh.doc"), "{paths:?}");
    assert!(
        paths.iter().any(|p| p == "usr/share/man/.wh..wh..opq"),
        "{paths:?}"
    );
    assert!(paths.len() < 10, "{paths:?}");
}

/// The CA certificates this machine trusts beyond Debian's (an
/// intercepting proxy's, say), as (file name, PEM), for images that must
/// reach the network through the same proxy.
fn extra_ca_certificates() -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = fs::read_dir("/usr/local/share/ca-certificates") else {
        return Vec::new();
    };
    let mut certs: Vec<_> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".crt"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).expect("a CA certificate"),
            )
        })
        .collect();
    certs.sort();
    certs
}

/// The `site-packages`/`dist-packages` directory below `rootfs` that holds
/// `package`.
fn python_package(rootfs: &Path, package: &str) -> Option<PathBuf> {
    for lib in ["usr/local/lib", "usr/lib"] {
        let Ok(entries) = fs::read_dir(rootfs.join(lib)) else {
            continue;
        };
        for entry in entries.flatten() {
            if !entry.file_name().to_string_lossy().starts_with("python3") {
                continue;
            }
            for packages in ["dist-packages", "site-packages"] {
                let dir = entry.path().join(packages).join(package);
                if dir.join("__init__.py").is_file() {
                    return Some(dir);
                }
            }
        }
    }
    None
}

#[test]
fn flask_example_needs_debian_mirror_and_pypi() {
    let (registry, base) = bed();

    // The python base: Debian's python3 and pip from the mirror.
    let python = Project::new(
        &format!(
            "FROM {base}\n\
             COPY ca-certificates/ /usr/local/share/ca-certificates/\n\
             RUN apt-get update && apt-get install -y python3 python3-pip\n"
        ),
        &[("ca-certificates/.keep", "")],
    );
    for (name, pem) in extra_ca_certificates() {
        python.write(&format!("ca-certificates/{name}"), pem);
    }
    let python_ref = push(&registry, &python, "python", &[]);

    // The example's pipeline, run on the repository's working tree as it
    // is: build (with the registry cache), the app's tests inside the
    // image, and on main the push of :SHA and :latest.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let example = root.join("examples/flask-app");
    let image = registry.reference("debian-run/flask-app");
    let run = |branch: &str| {
        let out = python
            .executor()
            .current_dir(&root)
            .args([
                "run",
                "examples/flask-app/pipeline.yaml",
                "--branch",
                branch,
            ])
            .args(["--var", &format!("REGISTRY={}", registry.host)])
            .args(["--var", &format!("BASE={python_ref}")])
            .args(["--var", &format!("IMAGE={image}")])
            .arg("--cache-dir")
            .arg(python.cache())
            .args(["--insecure-registry", &registry.host])
            .output()
            .expect("executor runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "executor run failed:\n{text}");
        text
    };
    let out = run("feature");
    assert!(
        out.lines()
            .any(|l| l.starts_with("test ") && l.trim_end().ends_with("| OK")),
        "the app's tests did not pass:\n{out}"
    );
    assert!(
        registry.tags("debian-run/flask-app").is_empty(),
        "a pipeline off main pushed:\n{out}"
    );
    let out = run("main");
    let sha = executor_e2e::git(&root, &["rev-parse", "--short=8", "HEAD"]);
    let mut tags = registry.tags("debian-run/flask-app");
    tags.sort();
    assert_eq!(tags, vec![sha.clone(), "latest".to_string()], "{out}");
    // The release job rebuilds what the image job built: every step comes
    // from the cache.
    assert!(
        out.lines()
            .any(|l| l.starts_with("release") && l.contains(" 0 steps executed")),
        "{out}"
    );
    let flask_ref = format!("{image}:latest");
    assert_eq!(
        registry.digest_of(&flask_ref),
        registry.digest_of(&format!("{image}:{sha}"))
    );
    let config = registry.raw_config(&flask_ref);
    let c = &config["config"];
    assert_eq!(c["Cmd"], serde_json::json!(["python3", "app.py"]));
    assert_eq!(c["WorkingDir"], "/app");
    assert!(c["ExposedPorts"]["5000/tcp"].is_object(), "{c}");

    let rootfs = unpack(&registry, &flask_ref, &python.path("unpacked"));
    assert_eq!(
        read(&rootfs, "app/app.py"),
        fs::read_to_string(example.join("app.py")).unwrap()
    );
    assert_eq!(read(&rootfs, "app/requirements.txt"), "flask\n");
    let flask = python_package(&rootfs, "flask").expect("flask installed by pip");
    assert!(flask.join("app.py").is_file(), "{}", flask.display());
    // --no-cache-dir: no pip cache in the image.
    assert!(!rootfs.join("root/.cache/pip").exists());

    // Flask imports inside the image, run by the sandbox.
    let check = Project::new(
        &format!(
            "FROM {flask_ref}\n\
             RUN python3 -c \"import flask; print(flask.__version__)\" > /version\n\
             RUN python3 -c \"import app; print(sorted(r.rule for r in app.app.url_map.iter_rules()))\" > /routes\n"
        ),
        &[],
    );
    let checked = push(&registry, &check, "flask-check", &[]);
    let rootfs = unpack(&registry, &checked, &check.path("unpacked"));
    let version = read(&rootfs, "version");
    assert!(
        version.trim().split('.').count() >= 2
            && version.chars().next().is_some_and(|c| c.is_ascii_digit()),
        "{version:?}"
    );
    let routes = read(&rootfs, "routes");
    assert!(
        routes.contains("'/'") && routes.contains("'/healthz'"),
        "{routes}"
    );
}
