//! Reading a layer cache back as the tests' registry stored and served it:
//! the registry's own access log (what it sent, blob by blob), its storage
//! directory (manifests, tags, blobs; and removing a blob as garbage
//! collection would), an OCI layout used as `--cache-repo oci:PATH`, and a
//! build's `--metrics-file`.
//!
//! Layer bytes served are counted from the access log, which docker-registry
//! writes at any log level (`log.accesslog.disabled: false`, the harness's
//! setting) as Apache combined lines on its stdout, e.g.
//! `127.0.0.1 - - [..] "GET /v2/app/cache/blobs/sha256:.. HTTP/1.1" 200 1088038 "" "ua"`.
//! The line is written when the handler returns, before the response's last
//! bytes are flushed to the client, so once a client has read a blob its
//! line is in the log. Only `GET`s of blobs answered 200 or 206 count (a
//! `HEAD` downloads nothing), and only blobs that some stored manifest lists
//! under `layers`: so an image's config and a cache entry's JSON (the config
//! of its cache manifest) are not layer bytes, while a layer is one whether
//! it is fetched through the cache repository, the destination or the base.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::Registry;

/// A point in a registry's access log; what the registry served after it is
/// read with [`Registry::requests_since`] and friends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogMark(usize);

/// One line of the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request's path and query, as logged.
    pub path: String,
    pub status: u16,
    /// The response body's size as the registry wrote it.
    pub bytes: u64,
}

impl Request {
    /// `(repository, digest)` when this is a request for a blob
    /// (`/v2/REPO/blobs/DIGEST`).
    #[must_use]
    pub fn blob(&self) -> Option<(&str, &str)> {
        let rest = self.path.strip_prefix("/v2/")?;
        let (repo, digest) = rest.rsplit_once("/blobs/")?;
        let digest = digest.split('?').next().unwrap_or(digest);
        digest.starts_with("sha256:").then_some((repo, digest))
    }

    /// A blob's body went to the client: GET answered 200 or 206.
    #[must_use]
    pub fn is_blob_download(&self) -> bool {
        self.method == "GET" && matches!(self.status, 200 | 206) && self.blob().is_some()
    }

    /// The repository this request writes to, for a request that writes
    /// (PUT, POST, PATCH, DELETE under `/v2/REPO/`).
    #[must_use]
    pub fn written_repository(&self) -> Option<&str> {
        if !matches!(self.method.as_str(), "PUT" | "POST" | "PATCH" | "DELETE") {
            return None;
        }
        let rest = self.path.strip_prefix("/v2/")?;
        ["/blobs/", "/manifests/"]
            .iter()
            .filter_map(|marker| rest.find(marker).map(|at| &rest[..at]))
            .min_by_key(|repo| repo.len())
    }
}

/// Parses one access log line; `None` for the registry's other log lines.
fn parse_access_line(line: &str) -> Option<Request> {
    // `HOST - USER [DATE] "METHOD PATH PROTO" STATUS BYTES "REFERER" "UA"`
    let open = line.find("] \"")? + 3;
    let close = open + line[open..].find('"')?;
    let mut request = line[open..close].split(' ');
    let method = request.next()?.to_owned();
    let path = request.next()?.to_owned();
    if !request.next()?.starts_with("HTTP/") {
        return None;
    }
    let mut after = line[close + 1..].split_whitespace();
    let status = after.next()?.parse().ok()?;
    let bytes = after.next()?.parse().unwrap_or(0);
    Some(Request {
        method,
        path,
        status,
        bytes,
    })
}

impl Registry {
    fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// The registry's storage root (`storage.filesystem.rootdirectory`).
    #[must_use]
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    fn v2(&self) -> PathBuf {
        self.storage().join("docker/registry/v2")
    }

    /// The access log's end now.
    #[must_use]
    pub fn mark(&self) -> LogMark {
        LogMark(fs::read(self.log_path()).map_or(0, |log| log.len()))
    }

    /// Every request the registry logged after `mark`.
    #[must_use]
    pub fn requests_since(&self, mark: LogMark) -> Vec<Request> {
        let log = fs::read(self.log_path()).unwrap_or_default();
        let since = log.get(mark.0..).unwrap_or_default();
        String::from_utf8_lossy(since)
            .lines()
            .filter_map(parse_access_line)
            .collect()
    }

    /// The blob downloads (GET, 200 or 206) after `mark`.
    #[must_use]
    pub fn blob_downloads_since(&self, mark: LogMark) -> Vec<Request> {
        self.requests_since(mark)
            .into_iter()
            .filter(Request::is_blob_download)
            .collect()
    }

    /// The layer blobs downloaded after `mark` (see the module's doc for
    /// what counts as a layer).
    #[must_use]
    pub fn layer_downloads_since(&self, mark: LogMark) -> Vec<Request> {
        let layers = self.layer_digests();
        self.blob_downloads_since(mark)
            .into_iter()
            .filter(|r| r.blob().is_some_and(|(_, d)| layers.contains(d)))
            .collect()
    }

    /// The bytes of layer blobs the registry served after `mark`.
    #[must_use]
    pub fn layer_bytes_served_since(&self, mark: LogMark) -> u64 {
        self.layer_downloads_since(mark)
            .iter()
            .map(|r| r.bytes)
            .sum()
    }

    /// The requests after `mark` that wrote to `repo` (blob uploads and
    /// mounts, manifest puts, deletes).
    #[must_use]
    pub fn writes_to_since(&self, repo: &str, mark: LogMark) -> Vec<Request> {
        self.requests_since(mark)
            .into_iter()
            .filter(|r| r.written_repository() == Some(repo))
            .collect()
    }

    /// Every repository stored here (nested names included), sorted.
    #[must_use]
    pub fn repositories(&self) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            let Ok(entries) = fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if !path.is_dir() || entry.file_name().to_string_lossy().starts_with('_') {
                    continue;
                }
                if path.join("_manifests").is_dir() {
                    let name = path.strip_prefix(root).expect("below the root");
                    out.push(name.display().to_string());
                }
                walk(root, &path, out);
            }
        }
        let root = self.v2().join("repositories");
        let mut out = Vec::new();
        walk(&root, &root, &mut out);
        out.sort();
        out
    }

    /// The blob `digest` as stored, when it is.
    #[must_use]
    pub fn stored_blob(&self, digest: &str) -> Option<Vec<u8>> {
        let hex = digest.strip_prefix("sha256:")?;
        fs::read(
            self.v2()
                .join("blobs/sha256")
                .join(hex.get(..2)?)
                .join(hex)
                .join("data"),
        )
        .ok()
    }

    /// The digests of every manifest stored in `repo` (tagged or not).
    #[must_use]
    pub fn stored_manifests(&self, repo: &str) -> Vec<String> {
        let dir = self
            .v2()
            .join("repositories")
            .join(repo)
            .join("_manifests/revisions/sha256");
        let Ok(entries) = fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut digests: Vec<String> = entries
            .flatten()
            .map(|e| format!("sha256:{}", e.file_name().to_string_lossy()))
            .collect();
        digests.sort();
        digests
    }

    /// The manifest `repo:tag` points at, as (digest, bytes), read from the
    /// storage.
    #[must_use]
    pub fn stored_tag(&self, repo: &str, tag: &str) -> Option<(String, Vec<u8>)> {
        let link = self
            .v2()
            .join("repositories")
            .join(repo)
            .join("_manifests/tags")
            .join(tag)
            .join("current/link");
        let digest = fs::read_to_string(link).ok()?.trim().to_owned();
        let bytes = self.stored_blob(&digest)?;
        Some((digest, bytes))
    }

    /// Every digest some stored manifest (any repository, tagged or not)
    /// lists under `layers`.
    #[must_use]
    pub fn layer_digests(&self) -> BTreeSet<String> {
        let mut layers = BTreeSet::new();
        for repo in self.repositories() {
            for manifest in self.stored_manifests(&repo) {
                let Some(bytes) = self.stored_blob(&manifest) else {
                    continue;
                };
                let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                    continue;
                };
                for layer in value["layers"].as_array().into_iter().flatten() {
                    if let Some(digest) = layer["digest"].as_str() {
                        layers.insert(digest.to_owned());
                    }
                }
            }
        }
        layers
    }

    /// Removes blob `digest` as garbage collection after a delete would:
    /// its data, and its link in every repository, so that no repository
    /// serves it any more (HEAD and GET answer 404). Returns whether it was
    /// stored.
    pub fn remove_blob(&self, digest: &str) -> bool {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        let data = self.v2().join("blobs/sha256").join(&hex[..2]).join(hex);
        let existed = data.is_dir();
        let _ = fs::remove_dir_all(&data);
        for repo in self.repositories() {
            let link = self
                .v2()
                .join("repositories")
                .join(&repo)
                .join("_layers/sha256")
                .join(hex);
            let _ = fs::remove_dir_all(link);
        }
        existed
    }

    /// The cache entries stored in the registry repository `repo`, one per
    /// tag (see [`CacheEntry`]).
    #[must_use]
    pub fn cache_entries(&self, repo: &str) -> Vec<CacheEntry> {
        let mut tags = self.stored_tags(repo);
        tags.sort();
        tags.into_iter()
            .map(|tag| {
                let (_, manifest) = self
                    .stored_tag(repo, &tag)
                    .unwrap_or_else(|| panic!("{repo}:{tag} has no stored manifest"));
                CacheEntry::read(tag, &manifest, |digest| self.stored_blob(digest))
            })
            .collect()
    }

    /// The tags of `repo`, from the storage (empty when there is no such
    /// repository).
    #[must_use]
    pub fn stored_tags(&self, repo: &str) -> Vec<String> {
        let dir = self
            .v2()
            .join("repositories")
            .join(repo)
            .join("_manifests/tags");
        let Ok(entries) = fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut tags: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        tags.sort();
        tags
    }
}

/// One cache entry as a store holds it: the manifest filed under the key's
/// tag (or ref name), and the entry JSON that manifest's config points at.
#[derive(Debug, Clone)]
pub struct CacheEntry {
    /// The tag (or `org.opencontainers.image.ref.name`): the key's 64 hex
    /// digits.
    pub tag: String,
    pub manifest: serde_json::Value,
    /// The entry JSON (`None` when its blob is not stored).
    pub entry: Option<serde_json::Value>,
}

impl CacheEntry {
    fn read(tag: String, manifest: &[u8], blob: impl Fn(&str) -> Option<Vec<u8>>) -> CacheEntry {
        let manifest: serde_json::Value =
            serde_json::from_slice(manifest).expect("a cache manifest is JSON");
        let entry = manifest["config"]["digest"]
            .as_str()
            .and_then(blob)
            .map(|bytes| serde_json::from_slice(&bytes).expect("a cache entry is JSON"));
        CacheEntry {
            tag,
            manifest,
            entry,
        }
    }

    /// The `created_by` of the last history entry of the config the step
    /// produced: the step's instruction as the build shows it.
    #[must_use]
    pub fn instruction(&self) -> Option<&str> {
        self.entry.as_ref()?["config"]["history"]
            .as_array()?
            .last()?["created_by"]
            .as_str()
    }

    /// The digest of the step's layer, when it wrote one.
    #[must_use]
    pub fn layer_digest(&self) -> Option<&str> {
        self.manifest["layers"].as_array()?.first()?["digest"].as_str()
    }
}

/// The cache entries of the OCI layout `layout` (`--cache-repo oci:PATH`):
/// one per manifest its `index.json` names.
#[must_use]
pub fn layout_cache_entries(layout: &Path) -> Vec<CacheEntry> {
    let Ok(index) = fs::read(layout.join("index.json")) else {
        return Vec::new();
    };
    let index: serde_json::Value = serde_json::from_slice(&index).expect("index.json is JSON");
    let blob = |digest: &str| {
        let (alg, hex) = digest.split_once(':')?;
        fs::read(layout.join("blobs").join(alg).join(hex)).ok()
    };
    let mut entries: Vec<CacheEntry> = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|descriptor| {
            let tag = descriptor["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let digest = descriptor["digest"].as_str().expect("a manifest digest");
            let manifest =
                blob(digest).unwrap_or_else(|| panic!("{}: no blob {digest}", layout.display()));
            CacheEntry::read(tag, &manifest, blob)
        })
        .collect();
    entries.sort_by(|a, b| a.tag.cmp(&b.tag));
    entries
}

/// A build's `--metrics-file`.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub json: serde_json::Value,
}

impl Metrics {
    /// Reads the metrics file `path`.
    #[must_use]
    pub fn read(path: &Path) -> Metrics {
        let bytes =
            fs::read(path).unwrap_or_else(|e| panic!("the metrics file {}: {e}", path.display()));
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("the metrics file {} is not JSON: {e}", path.display()));
        Metrics { json }
    }

    fn count(&self, field: &str) -> u64 {
        self.json[field]
            .as_u64()
            .unwrap_or_else(|| panic!("metrics field {field}: {:#}", self.json))
    }

    #[must_use]
    pub fn steps_cached(&self) -> u64 {
        self.count("steps_cached")
    }

    #[must_use]
    pub fn steps_executed(&self) -> u64 {
        self.count("steps_executed")
    }

    #[must_use]
    pub fn bytes_downloaded(&self) -> u64 {
        self.count("bytes_downloaded")
    }

    #[must_use]
    pub fn bytes_uploaded(&self) -> u64 {
        self.count("bytes_uploaded")
    }

    /// The image's manifest digest.
    #[must_use]
    pub fn digest(&self) -> String {
        self.json["digest"]
            .as_str()
            .unwrap_or_else(|| panic!("metrics digest: {:#}", self.json))
            .to_owned()
    }

    /// Each step's instruction and whether it came from the cache, in the
    /// order the file lists them (stage, then step).
    #[must_use]
    pub fn steps(&self) -> Vec<(String, bool)> {
        self.json["steps"]
            .as_array()
            .unwrap_or_else(|| panic!("metrics steps: {:#}", self.json))
            .iter()
            .map(|s| {
                (
                    s["instruction"].as_str().unwrap_or_default().to_owned(),
                    s["cached"]
                        .as_bool()
                        .unwrap_or_else(|| panic!("a step's cached flag: {s}")),
                )
            })
            .collect()
    }

    /// The steps' `cached` flags, in order.
    #[must_use]
    pub fn cached(&self) -> Vec<bool> {
        self.steps().into_iter().map(|(_, cached)| cached).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_lines_are_parsed_and_other_lines_skipped() {
        let get = parse_access_line(
            r#"127.0.0.1 - - [30/Nov/2026:05:24:45 +0000] "GET /v2/app/cache/blobs/sha256:e998 HTTP/1.1" 200 1088038 "" "skopeo/1.9.3""#,
        )
        .unwrap();
        assert_eq!(get.method, "GET");
        assert_eq!(get.status, 200);
        assert_eq!(get.bytes, 1_088_038);
        assert_eq!(get.blob(), Some(("app/cache", "sha256:e998")));
        assert!(get.is_blob_download());

        let head = parse_access_line(
            r#"127.0.0.1 - executor [30/Nov/2026:05:24:45 +0000] "HEAD /v2/app/blobs/sha256:e998 HTTP/1.1" 200 0 "" "x""#,
        )
        .unwrap();
        assert!(!head.is_blob_download());

        let put = parse_access_line(
            r#"127.0.0.1 - - [30/Nov/2026:05:24:45 +0000] "PUT /v2/app/cache/blobs/uploads/22bb?_state=x&digest=sha256%3Ae9 HTTP/1.1" 201 0 "" "x""#,
        )
        .unwrap();
        assert_eq!(put.written_repository(), Some("app/cache"));
        let manifest = parse_access_line(
            r#"127.0.0.1 - - [30/Nov/2026:05:24:45 +0000] "PUT /v2/app/manifests/latest HTTP/1.1" 201 0 "" "x""#,
        )
        .unwrap();
        assert_eq!(manifest.written_repository(), Some("app"));

        assert!(
            parse_access_line(
                r#"time="2026-11-30T05:24:45Z" level=error msg="response completed with error" http.request.method=HEAD"#
            )
            .is_none()
        );
    }
}
