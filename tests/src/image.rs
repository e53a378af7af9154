//! Reading pushed images back: every blob of an image as the registry
//! serves it (manifest, config, layers decompressed), and an unpacked root
//! filesystem as a comparable listing.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::Path;
use std::process::Command;

use sha2::{Digest as _, Sha256};

use crate::{Registry, project::ok};

/// An image downloaded blob by blob from a registry.
#[derive(Debug)]
pub struct PulledImage {
    /// The manifest, as served.
    pub manifest: Vec<u8>,
    /// The config blob, as served.
    pub config: Vec<u8>,
    /// The layer blobs as served (compressed), in manifest order.
    pub blobs: Vec<Vec<u8>>,
    /// The layers decompressed: tar archives, in manifest order.
    pub layers: Vec<Vec<u8>>,
}

impl PulledImage {
    /// Every byte the registry served for the image, and every layer
    /// decompressed: what a leak check must search.
    pub fn everything(&self) -> impl Iterator<Item = &[u8]> {
        [self.manifest.as_slice(), self.config.as_slice()]
            .into_iter()
            .chain(self.blobs.iter().map(Vec::as_slice))
            .chain(self.layers.iter().map(Vec::as_slice))
    }

    /// The paths of layer `index`'s entries (as in the tar, without a
    /// leading `./` or `/`).
    #[must_use]
    pub fn layer_paths(&self, index: usize) -> Vec<String> {
        let mut archive = tar::Archive::new(self.layers[index].as_slice());
        archive
            .entries()
            .expect("a layer tar")
            .map(|entry| {
                let entry = entry.expect("a layer tar entry");
                let path = entry.path().expect("an entry path").display().to_string();
                path.trim_start_matches("./")
                    .trim_start_matches('/')
                    .to_owned()
            })
            .collect()
    }

    /// The PAX records of the entry `path` in layer `index` (`None` when the
    /// layer has no such entry).
    #[must_use]
    pub fn pax_records(&self, index: usize, path: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let mut archive = tar::Archive::new(self.layers[index].as_slice());
        for entry in archive.entries().expect("a layer tar") {
            let mut entry = entry.expect("a layer tar entry");
            let name = entry.path().expect("an entry path").display().to_string();
            if name.trim_start_matches("./").trim_start_matches('/') != path {
                continue;
            }
            let mut records = BTreeMap::new();
            if let Some(extensions) = entry.pax_extensions().expect("PAX records") {
                for record in extensions {
                    let record = record.expect("a PAX record");
                    records.insert(
                        record.key().expect("a UTF-8 PAX key").to_owned(),
                        record.value_bytes().to_vec(),
                    );
                }
            }
            return Some(records);
        }
        None
    }
}

fn decompress(blob: &[u8]) -> Vec<u8> {
    if blob.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(blob)
            .read_to_end(&mut out)
            .expect("a gzip layer");
        out
    } else if blob.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::decode_all(blob).expect("a zstd layer")
    } else {
        blob.to_vec()
    }
}

/// Downloads `reference` blob by blob (`skopeo copy` to a `dir:`, which
/// keeps the manifest and blobs exactly as served and checks their
/// digests) into `into`.
#[must_use]
pub fn pull_image(registry: &Registry, reference: &str, into: &Path) -> PulledImage {
    let dir = into.join("pulled");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(into).expect("the pull dir");
    ok(Command::new("skopeo")
        .args(["copy", "--quiet"])
        .args(registry.skopeo_args("src-"))
        .arg(format!("docker://{reference}"))
        .arg(format!("dir:{}", dir.display())));
    let manifest = fs::read(dir.join("manifest.json")).expect("the pulled manifest");
    let parsed: serde_json::Value = serde_json::from_slice(&manifest).expect("a JSON manifest");
    let blob = |digest: &serde_json::Value| {
        let digest = digest.as_str().expect("a digest");
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        fs::read(dir.join(hex)).unwrap_or_else(|e| panic!("blob {digest}: {e}"))
    };
    let config = blob(&parsed["config"]["digest"]);
    let blobs: Vec<Vec<u8>> = parsed["layers"]
        .as_array()
        .expect("manifest layers")
        .iter()
        .map(|layer| blob(&layer["digest"]))
        .collect();
    let layers = blobs.iter().map(|b| decompress(b)).collect();
    PulledImage {
        manifest,
        config,
        blobs,
        layers,
    }
}

/// One entry of an unpacked tree, as [`tree`] lists it: what a layer
/// records, without times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// `file`, `dir`, `symlink`, `char`, `block`, `fifo` or `socket`.
    pub kind: &'static str,
    /// Permission bits with setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// sha256 of a file's content.
    pub content: Option<String>,
    /// A symlink's target.
    pub link: Option<String>,
    /// A device's number.
    pub rdev: Option<u64>,
    /// How many names a file has in the tree (hard links).
    pub nlink: Option<u64>,
}

/// Every entry below `root` (paths relative to it), with type, mode,
/// owner, content hash, link target and device number; not times.
#[must_use]
pub fn tree(root: &Path) -> BTreeMap<String, Node> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Node>) {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("a dir entry").path())
            .collect();
        entries.sort();
        for path in entries {
            let meta = fs::symlink_metadata(&path).expect("entry metadata");
            let t = meta.file_type();
            let kind = if t.is_dir() {
                "dir"
            } else if t.is_symlink() {
                "symlink"
            } else if t.is_file() {
                "file"
            } else if t.is_char_device() {
                "char"
            } else if t.is_block_device() {
                "block"
            } else if t.is_fifo() {
                "fifo"
            } else {
                "socket"
            };
            let node = Node {
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                content: t
                    .is_file()
                    .then(|| hex::encode(Sha256::digest(fs::read(&path).expect("file content")))),
                link: t.is_symlink().then(|| {
                    fs::read_link(&path)
                        .expect("a link target")
                        .display()
                        .to_string()
                }),
                rdev: (t.is_char_device() || t.is_block_device()).then(|| meta.rdev()),
                nlink: t.is_file().then(|| meta.nlink()),
            };
            let relative = path
                .strip_prefix(root)
                .expect("below the root")
                .display()
                .to_string();
            out.insert(relative, node);
            if t.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

impl Registry {
    /// The tags of `repo` here (empty when the repository does not exist).
    #[must_use]
    pub fn tags(&self, repo: &str) -> Vec<String> {
        let out = Command::new("skopeo")
            .arg("list-tags")
            .args(self.skopeo_args(""))
            .arg(format!("docker://{}", self.reference(repo)))
            .output()
            .expect("skopeo runs");
        if !out.status.success() {
            return Vec::new();
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("skopeo JSON");
        v["Tags"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}
