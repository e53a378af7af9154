//! The overlay root's mount-point lower: a directory laid above a stage's
//! layers (never part of one) holding the mount points the sandbox needs
//! ([`sandbox::MOUNT_POINTS`]: `/proc`, `/sys`, `/dev`, the `/etc` files)
//! that the layers lack.
//!
//! Without it the sandbox makes them as stubs in the step's upper
//! directory and the step removes them before the upper becomes a layer:
//! about seven inodes made and deleted per RUN on an image without them
//! (busybox, distroless, `scratch`), on the file system whose inode
//! allocation is the largest part of a cold build's time. Here they are
//! made once per stage.
//!
//! Nothing of it may show in a layer. The sandbox mounts over each of its
//! entries, so a step never writes to them, with one exception: a step
//! that creates a file in `/etc` makes the overlay copy `/etc` up from the
//! topmost lower that has it, which is this one when it holds the `/etc`
//! files. Its `/etc` therefore mirrors the layers' own `/etc` (mode,
//! owner, times), made again after any layer with an `/etc` of its own
//! ([`touches`]); where that cannot hold (the
//! layers have no `/etc` directory, or theirs carries extended attributes)
//! the `/etc` files are left to the sandbox's stubs as before.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Timespec, Timestamps};

use super::view::RootView;
use crate::sandbox;

/// Makes `dir` hold what [`sandbox::MOUNT_POINTS`] the layers `lowers`
/// (bottom first) lack; returns it when it holds anything, to be mounted
/// as the topmost lower. Made again before a mount of the root whenever a
/// layer added since may change it ([`touches`]): what a step changed is
/// taken into account.
pub(super) fn lower(dir: &Path, lowers: &[PathBuf]) -> io::Result<Option<PathBuf>> {
    let view = RootView::layers(lowers);
    let mut any = false;
    for (name, _) in sandbox::MOUNT_POINTS.iter().filter(|(_, is_dir)| *is_dir) {
        if view.find(name).is_none() {
            ensure(&dir.join(name), true)?;
            any = true;
        }
    }
    let etc = dir.join("etc");
    let files: Vec<&str> = sandbox::MOUNT_POINTS
        .iter()
        .filter(|(name, is_dir)| !is_dir && view.find(name).is_none())
        .map(|(name, _)| *name)
        .collect();
    let layers_etc = view
        .find("etc")
        .filter(|found| found.metadata.is_dir() && !has_xattrs(&found.path));
    match layers_etc {
        Some(found) if !files.is_empty() => {
            for name in &files {
                ensure(&dir.join(name), false)?;
            }
            mirror(&found.metadata, &etc)?;
            any = true;
        }
        // The sandbox makes its stubs where this cannot stand in for them;
        // a mirror left from an earlier mount must not show then.
        _ => match fs::remove_dir_all(&etc) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        },
    }
    Ok(any.then(|| dir.to_path_buf()))
}

/// Whether the layer directory `dir` has anything at the first name of a
/// mount point (`proc`, `sys`, `dev`, `etc`): a file, a directory or a
/// whiteout there may change what [`lower`] makes; nothing there cannot.
pub(super) fn touches(dir: &Path) -> bool {
    sandbox::MOUNT_POINTS.iter().any(|(name, _)| {
        let first = name.split('/').next().unwrap_or(name);
        fs::symlink_metadata(dir.join(first))
            .map_or_else(|e| e.kind() != io::ErrorKind::NotFound, |_| true)
    })
}

/// `path` as an empty directory (0755) or file (0644), its parents made.
fn ensure(path: &Path, is_dir: bool) -> io::Result<()> {
    if fs::symlink_metadata(path).is_ok() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    if is_dir {
        fs::create_dir(path)
    } else {
        fs::File::create(path).map(drop)
    }
}

/// Gives `to` the mode, owner and times `from` has.
fn mirror(from: &fs::Metadata, to: &Path) -> io::Result<()> {
    rustix::fs::chownat(
        rustix::fs::CWD,
        to,
        Some(rustix::fs::Uid::from_raw(from.uid())),
        Some(rustix::fs::Gid::from_raw(from.gid())),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    rustix::fs::chmod(to, rustix::fs::Mode::from_raw_mode(from.mode() & 0o7777))?;
    let time = |seconds: i64, nanos: i64| Timespec {
        tv_sec: seconds,
        tv_nsec: nanos,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        to,
        &Timestamps {
            last_access: time(from.atime(), from.atime_nsec()),
            last_modification: time(from.mtime(), from.mtime_nsec()),
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

fn has_xattrs(path: &Path) -> bool {
    rustix::fs::llistxattr(path, &mut [0u8; 1]).map_or(true, |len| len > 0)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::sandbox::tests::list;

    #[test]
    fn holds_what_the_layers_lack_and_mirrors_their_etc() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("base");
        fs::create_dir_all(base.join("etc")).unwrap();
        fs::create_dir_all(base.join("proc")).unwrap();
        fs::write(base.join("etc/hostname"), "image\n").unwrap();
        fs::set_permissions(base.join("etc"), fs::Permissions::from_mode(0o750)).unwrap();
        let stamp = Timestamps {
            last_access: Timespec {
                tv_sec: 1_000_000_000,
                tv_nsec: 5,
            },
            last_modification: Timespec {
                tv_sec: 1_200_000_000,
                tv_nsec: 7,
            },
        };
        rustix::fs::utimensat(rustix::fs::CWD, base.join("etc"), &stamp, AtFlags::empty()).unwrap();
        let dir = tmp.path().join("mount-points");
        let lowers = vec![base.clone()];

        let got = lower(&dir, &lowers).unwrap();
        assert_eq!(got.as_deref(), Some(dir.as_path()));
        assert_eq!(
            list(&dir),
            ["dev", "etc", "etc/hosts", "etc/resolv.conf", "sys"]
        );
        let (mirror, original) = (
            fs::metadata(dir.join("etc")).unwrap(),
            fs::metadata(base.join("etc")).unwrap(),
        );
        assert_eq!(mirror.mode() & 0o7777, 0o750);
        assert_eq!(mirror.mtime(), original.mtime());
        assert_eq!(mirror.mtime_nsec(), original.mtime_nsec());
        assert_eq!(
            (mirror.uid(), mirror.gid()),
            (original.uid(), original.gid())
        );

        // A later layer changes /etc: the mirror follows it.
        let step = tmp.path().join("step");
        fs::create_dir_all(step.join("etc")).unwrap();
        fs::set_permissions(step.join("etc"), fs::Permissions::from_mode(0o755)).unwrap();
        let lowers = vec![base.clone(), step.clone()];
        lower(&dir, &lowers).unwrap();
        let mirror = fs::metadata(dir.join("etc")).unwrap();
        assert_eq!(mirror.mode() & 0o7777, 0o755);
        assert_eq!(
            mirror.mtime(),
            fs::metadata(step.join("etc")).unwrap().mtime()
        );
    }

    #[test]
    fn a_layer_touches_the_mount_points_with_anything_at_their_first_names() {
        let tmp = tempfile::tempdir().unwrap();
        let layer = tmp.path();
        fs::create_dir_all(layer.join("work/etc")).unwrap();
        fs::write(layer.join("devices"), "").unwrap();
        assert!(!touches(layer), "nothing at /proc, /sys, /dev or /etc");
        for name in ["proc", "sys", "dev", "etc"] {
            // A whiteout (overlay's 0/0 character device) removing it.
            let at = layer.join(name);
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &at,
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::empty(),
                0,
            )
            .unwrap();
            assert!(touches(layer), "{name}");
            fs::remove_file(&at).unwrap();
        }
        std::os::unix::fs::symlink("/elsewhere", layer.join("etc")).unwrap();
        assert!(touches(layer), "a symlink at /etc");
    }

    #[test]
    fn leaves_the_etc_files_to_the_sandbox_where_it_cannot_mirror() {
        let tmp = tempfile::tempdir().unwrap();
        // No /etc in the layers at all.
        let base = tmp.path().join("base");
        fs::create_dir_all(&base).unwrap();
        let dir = tmp.path().join("mount-points");
        lower(&dir, std::slice::from_ref(&base)).unwrap();
        assert_eq!(list(&dir), ["dev", "proc", "sys"]);

        // Layers with everything: nothing to hold.
        let full = tmp.path().join("full");
        for (name, is_dir) in sandbox::MOUNT_POINTS {
            ensure(&full.join(name), is_dir).unwrap();
        }
        let empty = tmp.path().join("none");
        assert_eq!(lower(&empty, std::slice::from_ref(&full)).unwrap(), None);

        // A mirror made for earlier layers goes when /etc is gone.
        let with_etc = tmp.path().join("with-etc");
        fs::create_dir_all(with_etc.join("etc")).unwrap();
        let dir = tmp.path().join("again");
        lower(&dir, std::slice::from_ref(&with_etc)).unwrap();
        assert!(dir.join("etc/hosts").is_file());
        lower(&dir, &[base]).unwrap();
        assert!(!dir.join("etc").exists());
    }
}
