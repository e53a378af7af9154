//! Every example under `examples/` is exercised: `examples/run.sh` (the
//! README's first command) runs end to end with this workspace's binary:
//! its own registry, the busybox base from Debian's package, hello-httpd
//! built FROM it, pushed, and checked with skopeo and umoci.

use std::path::Path;
use std::process::Command;

use executor_e2e::executor_bin;

#[test]
fn examples_run_sh_builds_pushes_and_checks_hello_httpd() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = tempfile::tempdir().unwrap();
    let result = Command::new("bash")
        .arg(root.join("examples/run.sh"))
        .env("EXECUTOR", executor_bin())
        .env("EXECUTOR_EXAMPLES_OUT", out.path())
        .output()
        .expect("bash runs");
    let stderr = String::from_utf8_lossy(&result.stderr);
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "examples/run.sh failed:\n{stderr}\n{stdout}"
    );
    assert!(
        stderr.contains("config: ok") || stdout.contains("config: ok"),
        "{stdout}"
    );
    assert!(stderr.contains("files: ok"), "{stderr}");
    let image = std::fs::read_to_string(out.path().join("hello-httpd.image")).unwrap();
    assert!(image.contains("/examples/hello-httpd@sha256:"), "{image}");
    assert!(out.path().join("hello-httpd.tar").is_file());
}
