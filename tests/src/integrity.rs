//! What a test registry holds, checked through its HTTP API (with `curl`,
//! straight to the registry, never through a proxy): every manifest of
//! every repository (tagged or not) is served, and every blob and child
//! manifest it names is there in the same repository.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use crate::{Registry, RegistryKind};

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

impl Registry {
    fn curl(&self, args: &[&str], path: &str) -> (u16, Vec<u8>) {
        assert_eq!(
            self.kind,
            RegistryKind::Anonymous,
            "the API checks speak plain HTTP without credentials"
        );
        let out = Command::new("curl")
            .args(["-sS", "-o", "-", "-w", "\n%{http_code}"])
            .args(args)
            .arg(format!("http://{}{path}", self.host))
            .stdin(Stdio::null())
            .output()
            .expect("curl runs (.ci/run installs it)");
        assert!(
            out.status.success(),
            "curl {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut body = out.stdout;
        let split = body
            .iter()
            .rposition(|b| *b == b'\n')
            .expect("curl's status line");
        let status = String::from_utf8_lossy(&body[split + 1..])
            .trim()
            .parse()
            .expect("an HTTP status");
        body.truncate(split);
        (status, body)
    }

    /// Every repository, from `GET /v2/_catalog`.
    #[must_use]
    pub fn catalog(&self) -> Vec<String> {
        let (status, body) = self.curl(&[], "/v2/_catalog?n=1000");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let value: serde_json::Value = serde_json::from_slice(&body).expect("catalog JSON");
        value["repositories"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What is wrong with the manifests the registry holds, one line each
    /// (empty when nothing is). Manifests in `checked` (`repo@digest`) are
    /// skipped, and every manifest found whole is added to it: a manifest
    /// never changes, and nothing here deletes blobs.
    pub fn manifest_problems(&self, checked: &mut BTreeSet<String>) -> Vec<String> {
        let mut problems = Vec::new();
        for repo in self.catalog() {
            for digest in self.stored_manifests(&repo) {
                let key = format!("{repo}@{digest}");
                if checked.contains(&key) {
                    continue;
                }
                let before = problems.len();
                self.check_manifest(&repo, &digest, &mut problems);
                if problems.len() == before {
                    checked.insert(key);
                }
            }
        }
        problems
    }

    fn check_manifest(&self, repo: &str, digest: &str, problems: &mut Vec<String>) {
        let accept = format!("Accept: {ACCEPT}");
        let (status, body) = self.curl(&["-H", &accept], &format!("/v2/{repo}/manifests/{digest}"));
        if status != 200 {
            problems.push(format!("{repo}@{digest}: the manifest answers {status}"));
            return;
        }
        let Ok(manifest) = serde_json::from_slice::<serde_json::Value>(&body) else {
            problems.push(format!("{repo}@{digest}: the manifest is not JSON"));
            return;
        };
        let digests = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|d| d["digest"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        for child in digests(&manifest["manifests"]) {
            let (status, _) = self.curl(
                &["-I", "-H", &accept],
                &format!("/v2/{repo}/manifests/{child}"),
            );
            if status != 200 {
                problems.push(format!(
                    "{repo}@{digest}: its manifest {child} answers {status}"
                ));
            }
        }
        let mut blobs = digests(&manifest["layers"]);
        if let Some(config) = manifest["config"]["digest"].as_str() {
            blobs.push(config.to_owned());
        }
        for blob in blobs {
            let (status, _) = self.curl(&["-I"], &format!("/v2/{repo}/blobs/{blob}"));
            if status != 200 {
                problems.push(format!("{repo}@{digest}: its blob {blob} answers {status}"));
            }
        }
    }
}
