//! Reproducible images: `--reproducible` and `SOURCE_DATE_EPOCH` give the
//! same manifest digest for the same inputs, built from different
//! checkouts (file times differ), into different stores, with different
//! numbers of compression threads, and under a different wall clock
//! (`faketime`, Debian's package of libfaketime).

use executor_e2e::{Project, Registry, RegistryKind};

fn dockerfile(base: &str) -> String {
    format!(
        "FROM {base}\n\
         ENV APP=1\n\
         COPY app.txt /srv/app.txt\n\
         RUN echo built > /srv/built && mkdir -p /var/lib/app && touch /var/lib/app/state\n\
         CMD [\"cat\", \"/srv/app.txt\"]\n"
    )
}

/// Builds a fresh checkout of the same inputs with `args`; returns the
/// manifest digest and the config.
fn build(
    registry: &Registry,
    base: &str,
    tag: &str,
    args: &[&str],
    faketime: Option<&str>,
) -> (String, serde_json::Value) {
    let project = Project::new(&dockerfile(base), &[("app.txt", "hello\n")]);
    let destination = registry.reference(&format!("repro/app:{tag}"));
    let digest_file = project.arg("digest");
    let mut full_args = vec![
        "-d",
        &destination,
        "--insecure-registry",
        &registry.host,
        "--digest-file",
        &digest_file,
    ];
    full_args.extend_from_slice(args);
    let cmd = project.build(&full_args);
    let mut cmd = match faketime {
        None => cmd,
        Some(at) => executor_e2e::wrapped(&["faketime", at], &cmd),
    };
    executor_e2e::ok(&mut cmd);
    let digest = std::fs::read_to_string(project.path("digest")).unwrap();
    (digest, registry.raw_config(&destination))
}

#[test]
fn reproducible_builds_give_one_digest_whatever_the_clock() {
    let registry = Registry::start(RegistryKind::Anonymous);
    let base = registry.push_busybox();
    let (first, config) = build(&registry, &base, "a", &["--reproducible"], None);
    let (second, _) = build(
        &registry,
        &base,
        "b",
        &["--reproducible", "--compression-threads", "1"],
        Some("2031-05-05 12:00:00"),
    );
    assert_eq!(first, second);
    assert_eq!(config["created"], "1970-01-01T00:00:00Z");
    let history = config["history"].as_array().unwrap();
    let own = &history[history.len() - 4..];
    assert!(
        own.iter().all(|h| h["created"] == "1970-01-01T00:00:00Z"),
        "{own:#?}"
    );

    // SOURCE_DATE_EPOCH as a build arg: its time, the same digest twice.
    let epoch = ["--build-arg", "SOURCE_DATE_EPOCH=1700000000"];
    let (third, config) = build(&registry, &base, "c", &epoch, None);
    let (fourth, _) = build(
        &registry,
        &base,
        "d",
        &[epoch[0], epoch[1], "--compression-threads", "3"],
        Some("2029-01-01 00:00:00"),
    );
    assert_eq!(third, fourth);
    assert_ne!(third, first);
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");

    // Without either, the clock shows (which also shows faketime works).
    let (plain, config) = build(&registry, &base, "e", &[], Some("2030-01-01 00:00:00"));
    assert_ne!(plain, first);
    let created = config["created"].as_str().unwrap();
    assert!(created.starts_with("2030-01-01T00:00:0"), "{created}");
}

#[test]
fn an_invalid_source_date_epoch_is_refused() {
    let project = Project::new("FROM scratch\nCOPY f /f\n", &[("f", "x")]);
    let stderr = project.fails(&["--no-push", "--build-arg", "SOURCE_DATE_EPOCH=yesterday"]);
    assert!(
        stderr.contains("invalid SOURCE_DATE_EPOCH \"yesterday\""),
        "{stderr}"
    );
}
