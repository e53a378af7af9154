//! A stage's root filesystem read without mounting it: the stack of its
//! layers' extracted directories (overlay form: whiteouts are 0:0
//! character devices, opaque directories carry `trusted.overlay.opaque` or
//! `user.overlay.opaque`), looked up from the top down as overlayfs would
//! merge them, or one plain directory (full and in-place roots, `COPY
//! --link`'s empty root). COPY, ADD and WORKDIR read what they need of the
//! image (where a path leads, a directory's metadata, `/etc/passwd`)
//! through it, so a build without RUN mounts nothing.
//!
//! It reads image paths only: following an image's symlinks is the
//! caller's (`build::copy` resolves component by component through
//! [`RootView::read_link`]). It never writes.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::FileTypeExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Component, Path, PathBuf};

use crate::image::upper;

/// One layer of a view: a directory, and for a COPY whose files were not
/// copied (see [`StageRoot`](super::StageRoot)'s pending layers), where
/// the regular files missing from it are.
#[derive(Debug, Clone, Copy)]
struct ViewLayer<'a> {
    dir: &'a Path,
    content: Option<&'a HashMap<PathBuf, PathBuf>>,
}

/// A root filesystem as a stack of directories, bottom first.
#[derive(Debug, Clone)]
pub struct RootView<'a> {
    layers: Vec<ViewLayer<'a>>,
    /// Whether whiteouts and opaque markers are honoured (the store's
    /// extracted layers) or the directories are plain trees.
    overlay: bool,
}

/// What a path leads to in a view.
#[derive(Debug)]
pub struct Found {
    /// The file on this machine that is (or stands for) it.
    pub path: PathBuf,
    /// Not following a symlink.
    pub metadata: fs::Metadata,
}

impl<'a> RootView<'a> {
    /// A plain directory tree.
    #[must_use]
    pub fn dir(root: &'a Path) -> Self {
        Self {
            layers: vec![ViewLayer {
                dir: root,
                content: None,
            }],
            overlay: false,
        }
    }

    /// Extracted layers in overlay form, bottom first (none: an empty
    /// root).
    #[must_use]
    pub fn layers(dirs: &'a [PathBuf]) -> Self {
        Self {
            layers: dirs
                .iter()
                .map(|dir| ViewLayer { dir, content: None })
                .collect(),
            overlay: true,
        }
    }

    /// Adds a layer on top whose regular files may be missing from `dir`:
    /// `content` maps the path such a file would have below `dir` to the
    /// file that stands for it (content and type; its owner and mode are
    /// the layer's business, not a view's).
    #[must_use]
    pub fn with_layer(mut self, dir: &'a Path, content: &'a HashMap<PathBuf, PathBuf>) -> Self {
        self.layers.push(ViewLayer {
            dir,
            content: Some(content),
        });
        self
    }

    /// The entry at `image_path` (absolute or not; `.` and `..` are taken
    /// lexically, symlinks on the way are not followed), or `None` when
    /// the image has nothing there.
    #[must_use]
    pub fn find(&self, image_path: &str) -> Option<Found> {
        let parts = components(image_path);
        for layer in self.layers.iter().rev() {
            let mut path = layer.dir.to_path_buf();
            if parts.is_empty() {
                let metadata = fs::symlink_metadata(&path).ok()?;
                return Some(Found { path, metadata });
            }
            // A directory on the way that is opaque in this layer hides
            // what the layers below hold under it.
            let mut hides_below = false;
            for (n, part) in parts.iter().enumerate() {
                path.push(part);
                let Ok(metadata) = fs::symlink_metadata(&path) else {
                    // A file the layer has but its directory lacks.
                    match layer.content.and_then(|files| files.get(&path)) {
                        Some(file) if n + 1 == parts.len() => {
                            let metadata = fs::metadata(file).ok()?;
                            return Some(Found {
                                path: file.clone(),
                                metadata,
                            });
                        }
                        Some(_) => return None,
                        None => break,
                    }
                };
                if self.overlay && is_whiteout(&metadata) {
                    return None;
                }
                if n + 1 == parts.len() {
                    return Some(Found { path, metadata });
                }
                if !metadata.is_dir() {
                    // A file (or symlink) here: nothing below it, in this
                    // layer or under it.
                    return None;
                }
                hides_below |= self.overlay && upper::is_opaque(&path);
            }
            if hides_below {
                return None;
            }
        }
        None
    }

    /// The target of the symlink at `image_path`; `None` when it is not
    /// one (or not there).
    #[must_use]
    pub fn read_link(&self, image_path: &str) -> Option<PathBuf> {
        let found = self.find(image_path)?;
        if !found.metadata.file_type().is_symlink() {
            return None;
        }
        fs::read_link(&found.path).ok()
    }

    /// The content of the regular file at `image_path` (not following a
    /// final symlink); `None` when there is none.
    pub fn read(&self, image_path: &str) -> io::Result<Option<Vec<u8>>> {
        match self.find(image_path) {
            Some(found) if found.metadata.is_file() => fs::read(&found.path).map(Some),
            _ => Ok(None),
        }
    }

    /// The one directory of a plain view (see [`RootView::dir`]).
    #[must_use]
    pub fn plain_dir(&self) -> Option<&'a Path> {
        match self.layers.as_slice() {
            [only] if !self.overlay && only.content.is_none() => Some(only.dir),
            _ => None,
        }
    }
}

/// The normal components of an image path, `..` taken lexically (never
/// above the root).
fn components(image_path: &str) -> Vec<String> {
    let mut parts: Vec<String> = Vec::new();
    for component in Path::new(image_path).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    parts
}

/// An overlay whiteout: a character device 0:0.
fn is_whiteout(metadata: &fs::Metadata) -> bool {
    metadata.file_type().is_char_device() && metadata.rdev() == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::upper::whiteout;

    fn opaque(path: &Path) {
        rustix::fs::lsetxattr(
            path,
            "trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
    }

    /// Three layers: the base has `/etc/passwd`, `/old/a`, `/keep/k`,
    /// `/gone/g` and the link `/bin -> usr/bin`; the middle deletes
    /// `/gone`, makes `/old` opaque with `/old/b` and replaces `/keep` by
    /// a file; the top adds `/usr/bin/tool`.
    fn stack() -> (tempfile::TempDir, Vec<PathBuf>) {
        let dir = tempfile::tempdir().unwrap();
        let layers: Vec<PathBuf> = ["base", "middle", "top"]
            .iter()
            .map(|n| dir.path().join(n))
            .collect();
        let [base, middle, top] = [&layers[0], &layers[1], &layers[2]];
        for d in ["etc", "old", "keep", "gone", "usr/bin"] {
            fs::create_dir_all(base.join(d)).unwrap();
        }
        fs::write(base.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        for f in ["old/a", "keep/k", "gone/g"] {
            fs::write(base.join(f), f).unwrap();
        }
        std::os::unix::fs::symlink("usr/bin", base.join("bin")).unwrap();
        fs::create_dir_all(middle.join("old")).unwrap();
        opaque(&middle.join("old"));
        fs::write(middle.join("old/b"), "b").unwrap();
        fs::write(middle.join("keep"), "now a file").unwrap();
        whiteout(&middle.join("gone"));
        fs::create_dir_all(top.join("usr/bin")).unwrap();
        fs::write(top.join("usr/bin/tool"), "tool").unwrap();
        (dir, layers)
    }

    #[test]
    fn layers_merge_as_overlayfs_does() {
        let (_dir, layers) = stack();
        let view = RootView::layers(&layers);
        assert_eq!(
            view.read("/etc/passwd").unwrap().unwrap(),
            b"root:x:0:0::/root:/bin/sh\n"
        );
        assert!(view.find("/gone").is_none(), "whited out");
        assert!(view.find("/gone/g").is_none(), "below a whiteout");
        assert!(view.find("/old/a").is_none(), "hidden by the opaque dir");
        assert_eq!(view.read("/old/b").unwrap().unwrap(), b"b");
        assert!(view.find("/keep").unwrap().metadata.is_file());
        assert!(view.find("/keep/k").is_none(), "below a file");
        assert_eq!(view.read_link("/bin").unwrap(), Path::new("usr/bin"));
        assert!(view.read_link("/etc").is_none());
        // Directories merge: the base's /usr/bin, the top's tool in it.
        assert_eq!(view.read("/usr/bin/tool").unwrap().unwrap(), b"tool");
        assert_eq!(
            view.find("/usr/bin").unwrap().path,
            layers[2].join("usr/bin")
        );
        assert!(view.find("/").unwrap().metadata.is_dir());
        assert!(view.read("/nothing").unwrap().is_none());
        // A plain directory honours no whiteout: the device is a file.
        let plain = RootView::dir(&layers[1]);
        assert!(plain.find("/gone").is_some());
        assert_eq!(plain.plain_dir(), Some(layers[1].as_path()));
        assert!(view.plain_dir().is_none());
    }

    #[test]
    fn missing_files_are_read_where_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let (staging, context) = (dir.path().join("staging"), dir.path().join("context"));
        fs::create_dir_all(staging.join("etc")).unwrap();
        fs::create_dir_all(&context).unwrap();
        fs::write(context.join("group"), "staff:x:50:\n").unwrap();
        let files = HashMap::from([(staging.join("etc/group"), context.join("group"))]);
        let view = RootView::layers(&[]).with_layer(&staging, &files);
        assert_eq!(view.read("/etc/group").unwrap().unwrap(), b"staff:x:50:\n");
        assert!(view.find("/etc/group").unwrap().metadata.is_file());
        assert!(view.find("/etc/group/x").is_none(), "below a file");
        assert!(view.read("/etc").unwrap().is_none(), "a directory");
    }
}
