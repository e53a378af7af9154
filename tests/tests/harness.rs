//! The harness itself: each registry variant starts, takes the busybox base
//! image and serves it back to skopeo.

use executor_e2e::{Registry, RegistryKind};

fn pushes_and_inspects(kind: RegistryKind) {
    let registry = Registry::start(kind);
    let reference = registry.push_busybox();
    let config = registry.inspect_config(&reference);
    assert_eq!(config["os"], "linux", "{config}");
    assert_eq!(config["config"]["Cmd"][0], "/bin/sh", "{config}");
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().map(Vec::len),
        Some(1),
        "{config}"
    );
}

#[test]
fn anonymous_registry_serves_busybox() {
    pushes_and_inspects(RegistryKind::Anonymous);
}

#[test]
fn basic_auth_registry_serves_busybox() {
    pushes_and_inspects(RegistryKind::Basic);
}

#[test]
fn basic_auth_registry_refuses_anonymous_pushes() {
    let registry = Registry::start(RegistryKind::Basic);
    let layout = executor_e2e::busybox_layout();
    let out = std::process::Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!("docker://{}", registry.reference("busybox:latest")))
        .output()
        .expect("skopeo runs");
    assert!(!out.status.success(), "an anonymous push must be refused");
}

#[test]
fn tls_registry_serves_busybox() {
    pushes_and_inspects(RegistryKind::Tls);
}
