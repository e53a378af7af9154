//! The layer cache end to end (issue 5): `executor build --cache` against
//! the real registry, and against an OCI layout as `--cache-repo oci:PATH`.
//! Every build here starts on an empty local store of its own (a fresh
//! `--cache-dir`), as a CI pod does, so a hit can only come from the cache
//! repository. Each test checks two things:
//!
//! - what the cache did: every step's `cached` flag and the
//!   `steps_cached`/`steps_executed` counts from `--metrics-file`, and where
//!   it matters the layer bytes the registry served, from its own access log
//!   (the harness's `cache` module says what counts as a layer);
//! - the image it gave: unpacked with skopeo + umoci and its files read, its
//!   config's `rootfs.diff_ids` checked against its layers, and for a fully
//!   cached rebuild its manifest digest against the first build's.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use executor_e2e::{
    LogMark, Metrics, Project, Registry, RegistryKind, layout_cache_entries, ok, pull_image, unpack,
};
use sha2::{Digest as _, Sha256};

/// The Dockerfile of most tests. Its steps after FROM, as `--metrics-file`
/// lists them: [`STEPS`] of them.
fn dockerfile(base: &str) -> String {
    format!(
        "FROM {base}\n\
         ENV APP_HOME=/srv/app\n\
         WORKDIR /srv/app\n\
         COPY a.txt ./\n\
         RUN cat a.txt > run-1.txt && echo one >> run-1.txt\n\
         COPY . ./\n\
         ARG FLAVOUR=plain\n\
         RUN echo \"$FLAVOUR\" > flavour.txt && ls > listing.txt\n\
         CMD [\"cat\", \"/srv/app/flavour.txt\"]\n"
    )
}

const STEPS: usize = 8;
/// Indexes into the steps (FROM not counted).
const RUN_1: usize = 3;
const COPY_ALL: usize = 4;
const ARG: usize = 5;
const RUN_FLAVOUR: usize = 6;
/// A substring of each step's instruction, to check the metrics list the
/// steps in order.
const SHOWN: [&str; STEPS] = [
    "ENV APP_HOME",
    "WORKDIR /srv/app",
    "COPY a.txt",
    "cat a.txt > run-1.txt",
    "COPY . ./",
    "ARG FLAVOUR",
    "flavour.txt",
    "CMD",
];

const FILES: [(&str, &str); 4] = [
    ("a.txt", "alpha\n"),
    ("b.txt", "bravo\n"),
    ("notes.log", "log 1\n"),
    (".dockerignore", "*.log\n"),
];

/// `hits` steps from the cache, then misses to the end.
fn hits_then_misses(hits: usize) -> Vec<bool> {
    (0..STEPS).map(|i| i < hits).collect()
}

/// A registry with the busybox base, a project with [`dockerfile`] and
/// [`FILES`], and a counter naming each build's store and metrics file.
struct Bed {
    registry: Registry,
    base: String,
    project: Project,
    builds: AtomicUsize,
}

/// One finished build.
struct Built {
    /// Where it was pushed.
    reference: String,
    stderr: String,
    metrics: Metrics,
}

impl Built {
    /// Fails the test with `what` and the build's log unless the steps'
    /// `cached` flags are `expected` and the counts agree with them.
    fn assert_cached(&self, expected: &[bool], what: &str) {
        let steps = self.metrics.steps();
        for (i, (shown, _)) in steps.iter().enumerate() {
            assert!(
                SHOWN.get(i).is_none_or(|s| shown.contains(s)),
                "step {} is {shown:?}, expected {:?}:\n{:#}",
                i + 2,
                SHOWN.get(i),
                self.metrics.json
            );
        }
        assert_eq!(
            self.metrics.cached(),
            expected,
            "{what}: the steps' cached flags (FROM not counted), steps {steps:#?}\n{}",
            self.stderr
        );
        let hits = expected.iter().filter(|&&c| c).count() as u64;
        assert_eq!(
            (self.metrics.steps_cached(), self.metrics.steps_executed()),
            (hits, expected.len() as u64 - hits),
            "{what}: steps_cached, steps_executed:\n{:#}",
            self.metrics.json
        );
    }
}

impl Bed {
    fn new() -> Self {
        let registry = Registry::start(RegistryKind::Anonymous);
        let base = registry.push_busybox();
        let project = Project::new(&dockerfile(&base), &FILES);
        Self {
            registry,
            base,
            project,
            builds: AtomicUsize::new(0),
        }
    }

    /// `--cache=true --cache-repo HOST/app/cache`.
    fn cache_repo(&self) -> String {
        self.registry.reference("app/cache")
    }

    /// `executor build` pushing to `destination` (`REPO:TAG` on the test
    /// registry) with `args`, on an empty store of its own, writing a
    /// metrics file; and that file's path.
    fn command(&self, destination: &str, args: &[&str]) -> (Command, String, std::path::PathBuf) {
        let n = self.builds.fetch_add(1, Ordering::SeqCst);
        let store = self.project.path(&format!("store-{n}"));
        let metrics = self.project.path(&format!("metrics-{n}.json"));
        let reference = self.registry.reference(destination);
        let mut all = vec![
            "-d",
            &reference,
            "--insecure-registry",
            &self.registry.host,
            "--metrics-file",
            metrics.to_str().expect("a UTF-8 path"),
        ];
        all.extend_from_slice(args);
        let cmd = self.project.build_in(&store, &all);
        (cmd, reference, metrics)
    }

    /// Builds as [`Bed::command`] says; the build must succeed.
    fn build(&self, destination: &str, args: &[&str]) -> Built {
        let (mut cmd, reference, metrics) = self.command(destination, args);
        let stderr = ok(&mut cmd);
        Built {
            reference,
            stderr,
            metrics: Metrics::read(&metrics),
        }
    }

    /// Two builds at once (two `executor` processes), pushing to
    /// `destinations` with the same `args`; both must succeed.
    fn race(&self, destinations: [&str; 2], args: &[&str]) -> [Built; 2] {
        let started = destinations.map(|destination| {
            let (mut cmd, reference, metrics) = self.command(destination, args);
            let child = cmd
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("executor starts");
            (child, reference, metrics)
        });
        started.map(|(child, reference, metrics)| {
            let out = child.wait_with_output().expect("executor runs");
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(
                out.status.success(),
                "the racing build to {reference} failed ({}):\n{stderr}",
                out.status
            );
            Built {
                reference,
                stderr,
                metrics: Metrics::read(&metrics),
            }
        })
    }

    /// Checks that no layer blob was served after `mark`.
    fn assert_no_layer_served(&self, mark: LogMark, what: &str) {
        let layers = self.registry.layer_downloads_since(mark);
        assert!(
            layers.is_empty() && self.registry.layer_bytes_served_since(mark) == 0,
            "{what}: the registry served layers: {layers:#?}\nall blob downloads: {:#?}",
            self.registry.blob_downloads_since(mark)
        );
    }

    /// Unpacks `reference` and checks it is the image [`dockerfile`] makes
    /// from the context as it is now, with `flavour`; and that its config's
    /// diff_ids are its layers'. `base_marker`: the content of
    /// `/etc/base-marker`, which only the second base has.
    fn check_image(&self, built: &Built, flavour: &str, base_marker: Option<&str>) {
        let reference = &built.reference;
        let into = self.project.path(&format!(
            "unpacked-{}",
            self.builds.fetch_add(1, Ordering::SeqCst)
        ));
        check_diff_ids(&self.registry, reference, &into);
        let config = self.registry.raw_config(reference);
        let c = &config["config"];
        assert_eq!(c["Cmd"], serde_json::json!(["cat", "/srv/app/flavour.txt"]));
        assert_eq!(c["WorkingDir"], "/srv/app");
        assert!(
            c["Env"]
                .as_array()
                .is_some_and(|env| env.iter().any(|e| e == "APP_HOME=/srv/app")),
            "{c}"
        );
        assert_eq!(
            self.registry.digest_of(reference),
            built.metrics.digest(),
            "the pushed manifest is the one the metrics name"
        );

        let rootfs = unpack(&self.registry, reference, &into);
        let read = |path: &str| {
            fs::read_to_string(rootfs.join(path))
                .unwrap_or_else(|e| panic!("/{path} in {reference}: {e}"))
        };
        assert!(rootfs.join("bin/busybox").is_file(), "the base's files");
        assert_eq!(read("srv/app/a.txt"), "alpha\n");
        assert_eq!(read("srv/app/run-1.txt"), "alpha\none\n");
        let b = fs::read_to_string(self.project.context().join("b.txt")).expect("b.txt");
        assert_eq!(read("srv/app/b.txt"), b);
        assert_eq!(read("srv/app/flavour.txt"), format!("{flavour}\n"));
        assert!(
            !rootfs.join("srv/app/notes.log").exists(),
            ".dockerignore keeps notes.log out"
        );
        let listing = read("srv/app/listing.txt");
        for name in ["a.txt", "b.txt", "run-1.txt", "flavour.txt", "Dockerfile"] {
            assert!(listing.lines().any(|l| l == name), "{name}: {listing}");
        }
        match base_marker {
            Some(marker) => assert_eq!(read("etc/base-marker"), marker),
            None => assert!(!rootfs.join("etc/base-marker").exists()),
        }
    }
}

/// The config's `rootfs.diff_ids` are the sha256 of the image's layers
/// decompressed, one for one: an image put together from cache entries
/// whose layers and config disagree fails here.
fn check_diff_ids(registry: &Registry, reference: &str, into: &Path) {
    let image = pull_image(registry, reference, into);
    let config: serde_json::Value = serde_json::from_slice(&image.config).expect("config JSON");
    let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
        .as_array()
        .expect("rootfs.diff_ids")
        .iter()
        .map(|d| d.as_str().expect("a diff_id").to_owned())
        .collect();
    let layers: Vec<String> = image
        .layers
        .iter()
        .map(|layer| format!("sha256:{}", hex::encode(Sha256::digest(layer))))
        .collect();
    assert_eq!(diff_ids, layers, "{reference}: diff_ids against its layers");
    let history = config["history"].as_array().expect("history");
    let non_empty = history
        .iter()
        .filter(|h| h["empty_layer"] != serde_json::json!(true))
        .count();
    assert_eq!(
        non_empty,
        layers.len(),
        "{reference}: history entries with a layer:\n{history:#?}"
    );
}

/// `--cache=true --cache-repo REPO`.
fn cache_args(repo: &str) -> [&str; 3] {
    ["--cache=true", "--cache-repo", repo]
}

#[test]
fn no_change_hits_every_step_downloads_no_layer_and_gives_the_same_digest() {
    let bed = Bed::new();
    let cache = bed.cache_repo();
    let first = bed.build("app:1", &cache_args(&cache));
    first.assert_cached(&[false; STEPS], "a cold cache");
    bed.check_image(&first, "plain", None);

    let mark = bed.registry.mark();
    let again = bed.build("again/app:1", &cache_args(&cache));
    again.assert_cached(&[true; STEPS], "nothing changed");
    bed.assert_no_layer_served(mark, "a fully cached rebuild on an empty store");
    assert_eq!(
        again.metrics.digest(),
        first.metrics.digest(),
        "a fully cached rebuild gives the first build's digest"
    );
    assert_eq!(
        bed.registry.digest_of(&again.reference),
        first.metrics.digest()
    );
    bed.check_image(&again, "plain", None);
}

#[test]
fn a_changed_file_used_by_a_copy_misses_from_that_copy_on() {
    let bed = Bed::new();
    let cache = bed.cache_repo();
    let first = bed.build("app:1", &cache_args(&cache));
    first.assert_cached(&[false; STEPS], "a cold cache");

    bed.project.write("b.txt", "bravo, changed\n");
    let changed = bed.build("app:2", &cache_args(&cache));
    changed.assert_cached(&hits_then_misses(COPY_ALL), "b.txt changed");
    assert_ne!(changed.metrics.digest(), first.metrics.digest());
    bed.check_image(&changed, "plain", None);
}

#[test]
fn a_changed_file_excluded_by_dockerignore_hits_every_step() {
    let bed = Bed::new();
    let cache = bed.cache_repo();
    let first = bed.build("app:1", &cache_args(&cache));
    first.assert_cached(&[false; STEPS], "a cold cache");

    bed.project.write("notes.log", "log 2, ignored\n");
    bed.project.write("more.log", "a new ignored file\n");
    let mark = bed.registry.mark();
    let again = bed.build("app:2", &cache_args(&cache));
    again.assert_cached(&[true; STEPS], "only files .dockerignore excludes changed");
    bed.assert_no_layer_served(mark, "a fully cached rebuild");
    assert_eq!(again.metrics.digest(), first.metrics.digest());
    bed.check_image(&again, "plain", None);
}

#[test]
fn a_changed_build_arg_used_by_a_later_run_hits_until_that_run() {
    let bed = Bed::new();
    let cache = bed.cache_repo();
    let first = bed.build("app:1", &cache_args(&cache));
    first.assert_cached(&[false; STEPS], "a cold cache");

    let mut args = cache_args(&cache).to_vec();
    args.extend(["--build-arg", "FLAVOUR=spicy"]);
    let spicy = bed.build("app:2", &args);
    spicy.assert_cached(
        &hits_then_misses(RUN_FLAVOUR),
        "FLAVOUR changed, declared and used just before the last RUN",
    );
    assert!(spicy.metrics.cached()[ARG], "the ARG step itself hits");
    bed.check_image(&spicy, "spicy", None);

    // The first value's entries are still there.
    let plain = bed.build("app:3", &cache_args(&cache));
    plain.assert_cached(&[true; STEPS], "FLAVOUR back to its default");
    assert_eq!(plain.metrics.digest(), first.metrics.digest());
}

#[test]
fn a_new_base_digest_under_the_same_tag_misses_every_step() {
    let bed = Bed::new();
    let cache = bed.cache_repo();
    let first = bed.build("app:1", &cache_args(&cache));
    first.assert_cached(&[false; STEPS], "a cold cache");
    let old_base = bed.registry.digest_of(&bed.base);

    // Another image pushed as busybox:latest.
    let rebase = Project::new(
        &format!("FROM {}\nCOPY marker /etc/base-marker\n", bed.base),
        &[("marker", "second base\n")],
    );
    rebase.ok(&["-d", &bed.base, "--insecure-registry", &bed.registry.host]);
    assert_ne!(bed.registry.digest_of(&bed.base), old_base);

    let rebased = bed.build("app:2", &cache_args(&cache));
    rebased.assert_cached(&[false; STEPS], "the base's digest changed");
    bed.check_image(&rebased, "plain", Some("second base\n"));
}

#[test]
fn an_entry_older_than_the_ttl_misses() {
    let bed = Bed::new();
    let cache = bed.cache_repo();
    let first = bed.build("app:1", &cache_args(&cache));
    first.assert_cached(&[false; STEPS], "a cold cache");
    assert!(!bed.registry.stored_tags("app/cache").is_empty());

    // Entries record their time in whole seconds: 3 s later they are at
    // least 2 s old.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let mut args = cache_args(&cache).to_vec();
    args.extend(["--cache-ttl", "1s"]);
    let expired = bed.build("app:2", &args);
    expired.assert_cached(&[false; STEPS], "every entry is older than --cache-ttl 1s");
    bed.check_image(&expired, "plain", None);

    // Within a TTL they hit.
    let mut args = cache_args(&cache).to_vec();
    args.extend(["--cache-ttl", "1h"]);
    let fresh = bed.build("app:3", &args);
    fresh.assert_cached(
        &[true; STEPS],
        "the entries are younger than --cache-ttl 1h",
    );
}

#[test]
fn a_deleted_cache_blob_is_a_miss_with_a_warning_and_the_build_succeeds() {
    let bed = Bed::new();
    let cache = bed.cache_repo();
    let first = bed.build("app:1", &cache_args(&cache));
    first.assert_cached(&[false; STEPS], "a cold cache");

    let entries = bed.registry.cache_entries("app/cache");
    let run_1 = entries
        .iter()
        .find(|e| e.instruction().is_some_and(|i| i.contains(SHOWN[RUN_1])))
        .unwrap_or_else(|| panic!("no cache entry for the first RUN among {entries:#?}"));
    let layer = run_1
        .layer_digest()
        .unwrap_or_else(|| panic!("the first RUN's entry has a layer: {run_1:#?}"));
    assert!(bed.registry.remove_blob(layer), "{layer} was stored");

    // Pushed to a repository of its own, which never had the blob.
    let again = bed.build("again/app:1", &cache_args(&cache));
    assert!(
        again
            .stderr
            .lines()
            .any(|l| l.contains("WARN") && l.contains("cache") && l.contains(&run_1.tag)),
        "a WARN line naming the cache and the entry's key {}:\n{}",
        run_1.tag,
        again.stderr
    );
    let cached = again.metrics.cached();
    assert_eq!(
        cached[..RUN_1],
        [true; RUN_1],
        "the steps before the broken entry hit:\n{}",
        again.stderr
    );
    assert!(
        !cached[RUN_1],
        "the entry whose layer is gone is a miss:\n{}",
        again.stderr
    );
    bed.check_image(&again, "plain", None);
}

#[test]
fn two_builds_racing_on_one_cache_repo_both_succeed() {
    let bed = Bed::new();
    let cache = bed.cache_repo();
    let [one, two] = bed.race(["race/one:1", "race/two:1"], &cache_args(&cache));
    bed.check_image(&one, "plain", None);
    bed.check_image(&two, "plain", None);

    // Whichever writer won each key, the cache left behind is whole.
    let mark = bed.registry.mark();
    let after = bed.build("race/after:1", &cache_args(&cache));
    after.assert_cached(&[true; STEPS], "after the race");
    bed.assert_no_layer_served(mark, "a fully cached build after the race");
    bed.check_image(&after, "plain", None);
}

#[test]
fn no_push_cache_looks_up_but_writes_nothing() {
    let bed = Bed::new();
    let cache = bed.cache_repo();
    let mut args = cache_args(&cache).to_vec();
    args.push("--no-push-cache");

    let mark = bed.registry.mark();
    let cold = bed.build("app:1", &args);
    cold.assert_cached(&[false; STEPS], "nothing was ever written");
    let writes = bed.registry.writes_to_since("app/cache", mark);
    assert!(writes.is_empty(), "--no-push-cache wrote: {writes:#?}");
    assert!(bed.registry.stored_tags("app/cache").is_empty());
    assert!(
        !bed.registry
            .repositories()
            .iter()
            .any(|r| r.ends_with("cache")),
        "{:?}",
        bed.registry.repositories()
    );
    bed.check_image(&cold, "plain", None);

    // Filled by a build that writes, then read without writing.
    bed.build("app:2", &cache_args(&cache));
    let tags = bed.registry.stored_tags("app/cache");
    assert!(!tags.is_empty());
    bed.project.write("b.txt", "bravo, changed\n");
    let mark = bed.registry.mark();
    let changed = bed.build("app:3", &args);
    changed.assert_cached(&hits_then_misses(COPY_ALL), "b.txt changed");
    let writes = bed.registry.writes_to_since("app/cache", mark);
    assert!(writes.is_empty(), "--no-push-cache wrote: {writes:#?}");
    assert_eq!(bed.registry.stored_tags("app/cache"), tags);
    bed.check_image(&changed, "plain", None);
}

#[test]
fn the_cache_repo_defaults_to_the_destination_repo_slash_cache() {
    let bed = Bed::new();
    let first = bed.build("team/app:1", &["--cache=true"]);
    first.assert_cached(&[false; STEPS], "a cold cache");
    assert_eq!(
        bed.registry.repositories(),
        ["busybox", "team/app", "team/app/cache"],
        "the cache went to team/app/cache"
    );

    // One entry per step, in the contract's format.
    let entries = bed.registry.cache_entries("team/app/cache");
    assert_eq!(entries.len(), STEPS, "{entries:#?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs();
    for e in &entries {
        let m = &e.manifest;
        assert!(
            e.tag.len() == 64 && e.tag.bytes().all(|b| b.is_ascii_hexdigit()),
            "a tag is the key's hex: {}",
            e.tag
        );
        assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
        assert_eq!(
            m["artifactType"],
            "application/vnd.executor.cache.step.v1+json"
        );
        assert_eq!(
            m["config"]["mediaType"],
            "application/vnd.executor.cache.step.v1+json"
        );
        let entry = e.entry.as_ref().expect("the entry blob is stored");
        assert_eq!(entry["version"], 1, "{entry:#}");
        assert_eq!(entry["key"], format!("sha256:{}", e.tag));
        let written = entry["written"].as_u64().expect("written is unix seconds");
        assert!(written <= now && now - written < 3600, "{written} vs {now}");
        assert!(entry["config"]["rootfs"].is_object(), "{entry:#}");
        let layers = m["layers"].as_array().expect("layers");
        match entry["layer"].as_object() {
            None => assert!(layers.is_empty(), "{m:#}"),
            Some(layer) => {
                assert_eq!(layers.len(), 1, "{m:#}");
                assert_eq!(layer["digest"], layers[0]["digest"]);
                assert_eq!(layer["size"], layers[0]["size"]);
                assert!(
                    layer["diffID"]
                        .as_str()
                        .is_some_and(|d| d.starts_with("sha256:")),
                    "{entry:#}"
                );
            }
        }
    }
    let with_layer = entries
        .iter()
        .filter(|e| e.layer_digest().is_some())
        .count();
    assert!(
        with_layer >= 4,
        "COPY, RUN, COPY, RUN write layers: {entries:#?}"
    );

    // And the default is where a rebuild looks.
    let mark = bed.registry.mark();
    let again = bed.build("team/app:2", &["--cache=true"]);
    again.assert_cached(&[true; STEPS], "nothing changed");
    bed.assert_no_layer_served(mark, "a fully cached rebuild");
    assert_eq!(again.metrics.digest(), first.metrics.digest());
}

// --- the same with --cache-repo oci:PATH ---------------------------------------

/// `--cache=true --cache-repo oci:PATH` with `PATH` in the bed's temp dir.
fn oci_cache(bed: &Bed) -> (String, std::path::PathBuf) {
    let layout = bed.project.path("oci-cache");
    (format!("oci:{}", layout.display()), layout)
}

#[test]
fn oci_layout_cache_no_change_hits_every_step_with_no_layer_from_the_registry() {
    let bed = Bed::new();
    let (cache, layout) = oci_cache(&bed);
    let first = bed.build("app:1", &cache_args(&cache));
    first.assert_cached(&[false; STEPS], "a cold cache");
    let entries = layout_cache_entries(&layout);
    assert_eq!(entries.len(), STEPS, "{entries:#?}");
    assert!(
        entries
            .iter()
            .all(|e| e.tag.len() == 64 && e.entry.is_some()),
        "{entries:#?}"
    );
    assert!(
        !bed.registry
            .repositories()
            .iter()
            .any(|r| r.ends_with("cache")),
        "an OCI layout cache writes nothing to the registry: {:?}",
        bed.registry.repositories()
    );

    let mark = bed.registry.mark();
    let again = bed.build("again/app:1", &cache_args(&cache));
    again.assert_cached(&[true; STEPS], "nothing changed");
    bed.assert_no_layer_served(mark, "a fully cached rebuild from an OCI layout");
    assert_eq!(again.metrics.digest(), first.metrics.digest());
    bed.check_image(&again, "plain", None);
}

#[test]
fn oci_layout_cache_a_changed_copy_source_misses_from_that_copy_on() {
    let bed = Bed::new();
    let (cache, _) = oci_cache(&bed);
    let first = bed.build("app:1", &cache_args(&cache));
    first.assert_cached(&[false; STEPS], "a cold cache");

    bed.project.write("b.txt", "bravo, changed\n");
    let changed = bed.build("app:2", &cache_args(&cache));
    changed.assert_cached(&hits_then_misses(COPY_ALL), "b.txt changed");
    bed.check_image(&changed, "plain", None);
}

#[test]
fn oci_layout_cache_two_builds_racing_both_succeed() {
    let bed = Bed::new();
    let (cache, layout) = oci_cache(&bed);
    let [one, two] = bed.race(["race/one:1", "race/two:1"], &cache_args(&cache));
    bed.check_image(&one, "plain", None);
    bed.check_image(&two, "plain", None);
    let entries = layout_cache_entries(&layout);
    assert_eq!(
        entries.len(),
        STEPS,
        "one index entry per key, whoever wrote it last: {entries:#?}"
    );

    let after = bed.build("race/after:1", &cache_args(&cache));
    after.assert_cached(&[true; STEPS], "after the race");
    bed.check_image(&after, "plain", None);
}

// --- steps without a key ------------------------------------------------------

/// A RUN whose bind mount reads a stage that has no key (its COPY is not
/// cached with `--cache-copy-layers=false`) has no key either, so it never
/// hits: its identity was once the stage's name and the build's time, which
/// `--reproducible` fixes, so a second build reused the first one's layer
/// for a changed file.
#[test]
fn a_run_reading_a_stage_without_a_key_never_hits_even_when_reproducible() {
    let bed = Bed::new();
    bed.project.write(
        "Dockerfile",
        format!(
            "FROM {base} AS files\n\
             COPY a.txt /a.txt\n\
             FROM {base}\n\
             RUN --mount=type=bind,from=files,source=/a.txt,target=/in cat /in > /out.txt\n",
            base = bed.base
        ),
    );
    let (cache, _) = oci_cache(&bed);
    let args = [
        "--cache=true",
        "--cache-repo",
        &cache,
        "--cache-copy-layers=false",
        "--reproducible",
    ];
    let first = bed.build("unkeyed:1", &args);
    bed.project.write("a.txt", "alpha, changed\n");
    let second = bed.build("unkeyed:2", &args);
    for built in [&first, &second] {
        let steps = built.metrics.steps();
        assert!(
            steps.iter().all(|(_, cached)| !cached),
            "no step has a key to hit: {steps:#?}\n{}",
            built.stderr
        );
    }
    let into = bed.project.path("unpacked-unkeyed");
    let rootfs = unpack(&bed.registry, &second.reference, &into);
    assert_eq!(
        fs::read_to_string(rootfs.join("out.txt")).expect("/out.txt"),
        "alpha, changed\n",
        "the RUN read the changed file:\n{}",
        second.stderr
    );
}
