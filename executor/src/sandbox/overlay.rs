//! Overlay mounts: a stage's root filesystem made of its layers' extracted
//! directories (read-only lowers) and a fresh upper directory that collects
//! what a step changes. This module owns mounting and unmounting one
//! overlay; it knows nothing of images (the caller hands it directories).
//!
//! The mount is made so that the upper directory is a plain diff, readable
//! without overlayfs: `index=off` (no hard-link index in the work dir),
//! `metacopy=off` (a chmod copies the data up, never a metadata-only
//! inode), `redirect_dir=nofollow` (renaming a lower directory fails with
//! `EXDEV`, and `mv` and friends fall back to copying). An option this
//! kernel does not know is left out (its default then is the same, since
//! the feature predates the option), and logged.
//!
//! The new mount API (`fsopen`, `fsconfig("lowerdir+")` once per layer,
//! `fsmount`, `move_mount`) takes any number of layers: the legacy
//! `mount(2)` option string is limited to one page (4 KiB), about 60 layers
//! of store paths. Where the new API is missing (kernels before 6.8 lack
//! `lowerdir+`; before 5.2, `fsopen`), the legacy call is used, and a stack
//! too long for it fails with an error naming the number of layers.
//!
//! A directory may appear more than once in the lower list: an image may
//! hold one layer (one diffID, so one extracted directory) at several
//! positions, as when two steps write byte-identical changes. overlayfs
//! refuses a stack that names a directory twice (`ELOOP`), so only the
//! topmost occurrence is mounted. That gives the same merged view: every
//! path the repeated layer holds (file, directory, whiteout, opaque mark)
//! is decided at the top copy or above it, and a directory merged down
//! through the lower copy finds there only names the top copy already
//! showed.
//!
//! Mounts made here are ordinary mounts: the executor runs in its own
//! private mount namespace, so they vanish with it even on `SIGKILL`.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::CWD;
use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags,
};

/// The largest legacy `mount(2)` option string (one page, with its NUL).
const LEGACY_DATA_MAX: usize = 4095;

/// The options that keep the upper directory a plain diff. `index=on`
/// (where it can be had: not with `userxattr`) keeps hard links whole: a
/// file copied up for one of its names is the file all its names show, and
/// the copy carries `trusted.overlay.origin`, which tells a copy-up from a
/// file made anew (the snapshotter then adds the other names to the diff).
fn plain_diff_options(index: bool) -> [(&'static str, &'static str); 3] {
    [
        ("index", if index { "on" } else { "off" }),
        ("metacopy", "off"),
        // `off` still follows redirects where the module's
        // redirect_always_follow is set (the default), which `userxattr`
        // refuses; our layers never hold redirects, so neither making nor
        // following them is right everywhere.
        ("redirect_dir", "nofollow"),
    ]
}

/// The keys of [`plain_diff_options`].
const PLAIN_DIFF_KEYS: [&str; 3] = ["index", "metacopy", "redirect_dir"];

/// Options a kernel that does not know them may go without.
fn droppable(key: &str) -> bool {
    PLAIN_DIFF_KEYS.contains(&key) || key == "volatile"
}

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("cannot prepare the overlay directory {}", path.display())]
    Prepare {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "overlay path {} cannot be passed to the legacy mount call (it holds ',', ':', '\\' or a newline)\nhint: use a store path without those characters",
        path.display()
    )]
    LegacyPath { path: PathBuf },
    #[error(
        "an overlay of {layers} layers does not fit the legacy mount call's 4 KiB option string ({length} bytes) and this kernel lacks the new mount API's \"lowerdir+\"\nhint: use Linux 6.8 or later, a shorter --cache-dir path, or --snapshot-mode=full"
    )]
    TooManyLayers { layers: usize, length: usize },
    #[error("cannot mount an overlay of {layers} layers at {}{}", target.display(), kernel_says(log))]
    Mount {
        layers: usize,
        target: PathBuf,
        /// What the kernel logged on the filesystem context, if anything.
        log: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot unmount the overlay at {}", target.display())]
    Unmount {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn kernel_says(log: &str) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!(" (kernel: {log})")
    }
}

pub type Result<T, E = OverlayError> = std::result::Result<T, E>;

/// How long [`Overlay::unmount`] tries again an overlay found busy.
const BUSY_FOR: std::time::Duration = std::time::Duration::from_secs(2);

/// An overlay mounted at its target; unmounted on drop (lazily, if busy).
#[derive(Debug)]
pub struct Overlay {
    target: PathBuf,
    /// The empty lower directory made for a stack without layers.
    empty_lower: Option<PathBuf>,
    mounted: bool,
}

impl Overlay {
    /// Mounts an overlay at `target` of `lowers` (bottom first: the base
    /// layer first), with `upper` collecting the changes and `work` as
    /// overlayfs' work directory (empty, on the upper's filesystem). With
    /// no lowers, an empty directory beside `work` (`<work>.lower`) serves
    /// as the one lower overlayfs needs, removed on unmount. A directory
    /// named more than once is mounted at its topmost position only.
    pub fn mount(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<Overlay> {
        let mut overlay = Overlay {
            target: target.to_path_buf(),
            empty_lower: None,
            mounted: false,
        };
        let mut lowers = topmost_occurrences(lowers);
        if lowers.is_empty() {
            let mut name = work.as_os_str().to_owned();
            name.push(".lower");
            let empty = PathBuf::from(name);
            match fs::create_dir(&empty) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(source) => {
                    return Err(OverlayError::Prepare {
                        path: empty,
                        source,
                    });
                }
            }
            overlay.empty_lower = Some(empty.clone());
            lowers.push(empty);
        }
        let userxattr = in_user_namespace();
        let mut index = !userxattr;
        loop {
            match mount_new_api(&lowers, upper, work, target, userxattr, index) {
                Ok(()) => break,
                Err(NewApi::Unavailable(why)) => {
                    tracing::debug!(reason = %why, "new mount API unavailable; using mount(2)");
                    mount_legacy(&lowers, upper, work, target, userxattr, index)?;
                    break;
                }
                // The index needs file handles of the lower and upper
                // file systems: without it, hard links split on copy-up.
                Err(NewApi::Failed(e)) if index => {
                    tracing::debug!(error = %e, "overlay refused index=on; mounting without it");
                    index = false;
                }
                Err(NewApi::Failed(e)) => return Err(e),
            }
        }
        overlay.mounted = true;
        tracing::debug!(target = %target.display(), layers = lowers.len(), "overlay mounted");
        Ok(overlay)
    }

    /// Where the merged view is.
    #[must_use]
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Unmounts the overlay; an error if it stays busy (a process has a
    /// file open in it), after which the drop detaches it.
    ///
    /// Busy is tried again for up to [`BUSY_FOR`]: a child the executor
    /// forks (a sandbox's pid 1 before it closes what it inherited, a
    /// command before its `exec`) holds a copy of every descriptor another
    /// thread had open at that moment, one in this overlay included, for
    /// as long as it takes to close them.
    pub fn unmount(mut self) -> Result<()> {
        let started = std::time::Instant::now();
        let mut pause = std::time::Duration::from_micros(200);
        let result = loop {
            match rustix::mount::unmount(&self.target, UnmountFlags::NOFOLLOW) {
                Err(rustix::io::Errno::BUSY) if started.elapsed() < BUSY_FOR => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_millis(50));
                }
                result => break result,
            }
        };
        match result {
            Ok(()) => {
                self.mounted = false;
                self.remove_empty_lower();
                Ok(())
            }
            Err(e) => Err(OverlayError::Unmount {
                target: self.target.clone(),
                source: e.into(),
            }),
        }
    }

    fn remove_empty_lower(&mut self) {
        if let Some(empty) = self.empty_lower.take()
            && let Err(err) = fs::remove_dir(&empty)
        {
            tracing::debug!(path = %empty.display(), %err, "cannot remove the empty lower directory");
        }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if self.mounted {
            self.mounted = false;
            if let Err(err) = rustix::mount::unmount(&self.target, UnmountFlags::NOFOLLOW) {
                tracing::debug!(target = %self.target.display(), %err, "overlay busy; detaching it");
                if let Err(err) = rustix::mount::unmount(
                    &self.target,
                    UnmountFlags::NOFOLLOW | UnmountFlags::DETACH,
                ) {
                    tracing::warn!(target = %self.target.display(), %err, "cannot unmount the overlay");
                }
            }
        }
        self.remove_empty_lower();
    }
}

/// `lowers` (bottom first) with every directory that appears again higher
/// up left out, so that each is kept at its topmost position. Two paths are
/// one directory when they name the same inode (a path that cannot be read
/// is kept: mounting it reports the error).
fn topmost_occurrences(lowers: &[PathBuf]) -> Vec<PathBuf> {
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<PathBuf> = lowers
        .iter()
        .rev()
        .filter(|lower| match fs::metadata(lower) {
            Ok(meta) => seen.insert((meta.dev(), meta.ino())),
            Err(_) => true,
        })
        .cloned()
        .collect();
    kept.reverse();
    kept
}

/// Whether overlay mounts work here, with `scratch` (a directory on the
/// filesystem that will hold upper directories) for a tiny trial overlay:
/// one lower file is deleted and one file created through the merged view,
/// and everything is removed afterwards.
#[must_use]
pub fn supported(scratch: &Path) -> bool {
    if !super::has_private_mounts() {
        tracing::debug!(
            "overlay mounts are not used: this process has no mount namespace of its own, so they could outlive it"
        );
        return false;
    }
    match try_overlay(scratch) {
        Ok(()) => true,
        Err(err) => {
            tracing::debug!(scratch = %scratch.display(), error = %err, "overlay mounts are not available");
            false
        }
    }
}

fn try_overlay(scratch: &Path) -> io::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("overlay-probe-")
        .tempdir_in(scratch)?;
    let [lower, upper, work, merged] =
        ["lower", "upper", "work", "merged"].map(|d| dir.path().join(d));
    for d in [&lower, &upper, &work, &merged] {
        fs::create_dir(d)?;
    }
    fs::write(lower.join("old"), b"lower")?;
    let overlay = Overlay::mount(std::slice::from_ref(&lower), &upper, &work, &merged)
        .map_err(io::Error::other)?;
    fs::remove_file(merged.join("old"))?;
    fs::write(merged.join("new"), b"upper")?;
    overlay.unmount().map_err(io::Error::other)?;
    if !upper.join("new").is_file() {
        return Err(io::Error::other(
            "a file written to the overlay is missing from its upper directory",
        ));
    }
    Ok(())
}

/// Set once a kernel refused a recycled work directory.
static RECYCLING_REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes the work directory `work` of an unmounted overlay ready for the
/// next mount (with another upper directory), and says whether it did:
/// false when there is none yet, or recycling was refused before (then the
/// caller makes a fresh one). Mounting makes `work/work` anew (and, with
/// `volatile`, `work/work/incompat/volatile/dirty`, which a mount refuses
/// to find), so that goes; the hard-link index (`work/index`) stays but is
/// emptied, and its marks of the last upper and lower roots removed, which
/// the kernel sets again for the new ones. Two fewer directories made per
/// mount than a fresh work directory.
#[must_use]
pub fn recycle_work_dir(work: &Path) -> bool {
    if RECYCLING_REFUSED.load(std::sync::atomic::Ordering::Relaxed) || !work.is_dir() {
        return false;
    }
    let scratch = work.join("work");
    if let Err(err) = fs::remove_dir_all(&scratch)
        && err.kind() != io::ErrorKind::NotFound
    {
        tracing::debug!(path = %scratch.display(), %err, "cannot recycle the overlay work directory");
        return false;
    }
    let index = work.join("index");
    if index.is_dir() {
        let emptied = fs::read_dir(&index)
            .and_then(|mut entries| entries.try_for_each(|entry| fs::remove_file(entry?.path())));
        if let Err(err) = emptied {
            tracing::debug!(path = %index.display(), %err, "cannot recycle the overlay index");
            return false;
        }
        for name in ["trusted.overlay.upper", "trusted.overlay.origin"] {
            match rustix::fs::lremovexattr(&index, name) {
                Ok(()) | Err(Errno::NODATA) => {}
                Err(err) => {
                    tracing::debug!(path = %index.display(), %err, "cannot recycle the overlay index");
                    return false;
                }
            }
        }
    }
    true
}

/// Stops [`recycle_work_dir`] for the rest of the process.
pub fn refuse_recycling() {
    RECYCLING_REFUSED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether an overlay mounted here keeps a hard-linked lower file whole
/// when a step writes one of its names (`index=on`): not in a user
/// namespace, where `userxattr` rules the index out (the build then copies
/// such files up whole beforehand: `image::upper::LinkedCopies`).
#[must_use]
pub fn keeps_hard_links() -> bool {
    !in_user_namespace()
}

/// Whether this process is in a user namespace other than the initial one
/// (then overlayfs needs `userxattr`, and `trusted.*` xattrs are out of
/// reach).
fn in_user_namespace() -> bool {
    match fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => {
            let fields: Vec<&str> = map.split_whitespace().collect();
            fields != ["0", "0", "4294967295"]
        }
        Err(_) => false,
    }
}

enum NewApi {
    /// The new API (or `lowerdir+`) is not there: use the legacy call.
    Unavailable(Errno),
    Failed(OverlayError),
}

fn mount_new_api(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
    userxattr: bool,
    index: bool,
) -> Result<(), NewApi> {
    let failed = |fs_fd: Option<&rustix::fd::OwnedFd>, e: Errno| {
        NewApi::Failed(OverlayError::Mount {
            layers: lowers.len(),
            target: target.to_path_buf(),
            log: fs_fd.map(read_log).unwrap_or_default(),
            source: e.into(),
        })
    };
    let fs_fd = match rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) {
        Ok(fd) => fd,
        Err(e @ (Errno::NOSYS | Errno::PERM)) => return Err(NewApi::Unavailable(e)),
        Err(e) => return Err(failed(None, e)),
    };
    let fs_fd = &fs_fd;
    let set = |key: &str, value: &Path| {
        rustix::mount::fsconfig_set_string(fs_fd, key, value).map_err(|e| failed(Some(fs_fd), e))
    };
    // Lowers top first, as overlayfs stacks them.
    for (i, lower) in lowers.iter().rev().enumerate() {
        match rustix::mount::fsconfig_set_string(fs_fd, "lowerdir+", lower.as_path()) {
            Ok(()) => {}
            // Before 6.8: no "lowerdir+".
            Err(e @ Errno::INVAL) if i == 0 && read_log(fs_fd).contains("lowerdir+") => {
                return Err(NewApi::Unavailable(e));
            }
            Err(e) => return Err(failed(Some(fs_fd), e)),
        }
    }
    set("upperdir", upper)?;
    set("workdir", work)?;
    for (key, value) in plain_diff_options(index) {
        if let Err(e) = rustix::mount::fsconfig_set_string(fs_fd, key, value) {
            tracing::debug!(option = key, error = %e, log = %read_log(fs_fd), "overlay option refused; left out");
        }
    }
    // `volatile` (Linux 5.10): unmounting does not sync the whole upper
    // file system, a stall of up to a second per step on a busy disk; the
    // upper directory is build scratch (a fresh one every mount).
    if let Err(e) = rustix::mount::fsconfig_set_flag(fs_fd, "volatile") {
        tracing::debug!(error = %e, "overlay option volatile refused; left out");
    }
    if userxattr {
        rustix::mount::fsconfig_set_flag(fs_fd, "userxattr").map_err(|e| failed(Some(fs_fd), e))?;
    }
    rustix::mount::fsconfig_create(fs_fd).map_err(|e| failed(Some(fs_fd), e))?;
    let mnt = rustix::mount::fsmount(
        fs_fd,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::empty(),
    )
    .map_err(|e| failed(Some(fs_fd), e))?;
    rustix::mount::move_mount(
        &mnt,
        "",
        CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| failed(Some(fs_fd), e))
}

/// The messages the kernel logged on a filesystem context, one per line
/// (`e overlay: ...`), joined with "; ".
fn read_log(fs_fd: &rustix::fd::OwnedFd) -> String {
    let mut file = fs::File::from(match fs_fd.try_clone() {
        Ok(fd) => fd,
        Err(_) => return String::new(),
    });
    let mut lines = Vec::new();
    let mut buf = [0u8; 1024];
    // Each read returns one message; ENODATA when there are no more.
    for _ in 0..32 {
        match file.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => lines.push(String::from_utf8_lossy(&buf[..n]).trim().to_owned()),
        }
    }
    lines.join("; ")
}

fn mount_legacy(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
    userxattr: bool,
    index: bool,
) -> Result<()> {
    let check = |path: &Path| {
        let bytes = path.as_os_str().as_bytes();
        if bytes.iter().any(|b| b",:\\\n".contains(b)) {
            Err(OverlayError::LegacyPath {
                path: path.to_path_buf(),
            })
        } else {
            Ok(())
        }
    };
    let mut data = b"lowerdir=".to_vec();
    for (i, lower) in lowers.iter().rev().enumerate() {
        check(lower)?;
        if i > 0 {
            data.push(b':');
        }
        data.extend_from_slice(lower.as_os_str().as_bytes());
    }
    for (key, path) in [("upperdir", upper), ("workdir", work)] {
        check(path)?;
        data.extend_from_slice(format!(",{key}=").as_bytes());
        data.extend_from_slice(path.as_os_str().as_bytes());
    }
    let base_len = data.len();
    let mut options: Vec<(&str, &str)> = plain_diff_options(index).to_vec();
    options.push(("volatile", "")); // as in mount_new_api
    if userxattr {
        options.push(("userxattr", ""));
    }
    let with_options = |options: &[(&str, &str)]| {
        let mut data = data.clone();
        for (key, value) in options {
            data.push(b',');
            data.extend_from_slice(key.as_bytes());
            if !value.is_empty() {
                data.push(b'=');
                data.extend_from_slice(value.as_bytes());
            }
        }
        data
    };
    if with_options(&options).len() > LEGACY_DATA_MAX {
        return Err(OverlayError::TooManyLayers {
            layers: lowers.len(),
            length: base_len,
        });
    }
    loop {
        let data = CString::new(with_options(&options)).expect("paths hold no NUL byte");
        match rustix::mount::mount(
            "overlay",
            target,
            "overlay",
            MountFlags::empty(),
            data.as_c_str(),
        ) {
            Ok(()) => return Ok(()),
            // An option this kernel does not know: leave the last
            // plain-diff one out and retry (userxattr stays: it is needed).
            Err(Errno::INVAL) if options.iter().any(|(k, _)| droppable(k)) => {
                let i = options
                    .iter()
                    .rposition(|(k, _)| droppable(k))
                    .expect("checked above");
                tracing::debug!(option = options[i].0, "overlay option refused; left out");
                options.remove(i);
            }
            Err(e) => {
                return Err(OverlayError::Mount {
                    layers: lowers.len(),
                    target: target.to_path_buf(),
                    log: String::new(),
                    source: e.into(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use std::path::{Path, PathBuf};

    use super::{Overlay, OverlayError, mount_legacy, supported};
    use crate::image::apply::{ApplyOptions, WhiteoutMode, apply_layer_with};
    use crate::image::layer::{
        Compression, EntryKind, LayerEntry, WriteOptions, layer_from_dir, write_layer,
    };

    fn tar_of(entries: Vec<LayerEntry>) -> Vec<u8> {
        let mut out = Vec::new();
        write_layer(
            entries,
            Compression::Uncompressed,
            None,
            1,
            &mut out,
            &WriteOptions::default(),
        )
        .unwrap();
        out
    }

    /// Appends a hard link entry to an uncompressed layer (write_layer
    /// refuses links to files that are not in the layer).
    fn with_hardlink(mut tar: Vec<u8>, name: &str, target: &str) -> Vec<u8> {
        tar.truncate(tar.len() - 1024);
        let mut header = tar::Header::new_ustar();
        header.set_path(name).unwrap();
        header.set_link_name(target).unwrap();
        header.set_entry_type(tar::EntryType::Link);
        header.set_size(0);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        tar.extend_from_slice(header.as_bytes());
        tar.extend_from_slice(&[0u8; 1024]);
        tar
    }

    fn extract(layer: &[u8], dir: &Path, lowers: Vec<PathBuf>) {
        fs::create_dir(dir).unwrap();
        let opts = ApplyOptions {
            root_is_privileged: true,
            preserve_ownership: true,
            ignore_paths: Vec::new(),
        };
        apply_layer_with(layer, dir, &opts, &WhiteoutMode::overlay(lowers)).unwrap();
    }

    fn dirs(root: &Path, names: &[&str]) -> Vec<PathBuf> {
        names
            .iter()
            .map(|n| {
                let d = root.join(n);
                fs::create_dir_all(&d).unwrap();
                d
            })
            .collect()
    }

    #[test]
    fn overlay_form_layers_hide_and_show_the_right_files() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        for (path, data) in [
            ("etc/gone", "deleted above"),
            ("etc/kept", "kept"),
            ("var/cache/old", "hidden by the opaque dir"),
            ("var/cache/sub/deep", "hidden too"),
            ("bin/tool", "the tool"),
        ] {
            let path = src.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, data).unwrap();
        }
        let base_dir = tmp.path().join("base");
        extract(
            &tar_of(layer_from_dir(&src).unwrap()),
            &base_dir,
            Vec::new(),
        );

        let new_file = tmp.path().join("new-file");
        fs::write(&new_file, "in the opaque dir").unwrap();
        let layer = tar_of(vec![
            LayerEntry::new("etc", EntryKind::Dir),
            LayerEntry::new("etc/gone", EntryKind::Whiteout),
            LayerEntry::new("var", EntryKind::Dir),
            LayerEntry::new("var/cache", EntryKind::Dir),
            LayerEntry::new("var/cache", EntryKind::OpaqueWhiteout),
            LayerEntry::new("var/cache/new", EntryKind::File(new_file)),
            LayerEntry::new("bin", EntryKind::Dir),
        ]);
        // A hard link to a file of the layer below.
        let layer = with_hardlink(layer, "bin/tool-link", "bin/tool");
        // Not a file of the layer: refused without lower dirs.
        let refused = tmp.path().join("refused");
        fs::create_dir(&refused).unwrap();
        let err = apply_layer_with(
            &layer[..],
            &refused,
            &ApplyOptions {
                root_is_privileged: true,
                preserve_ownership: true,
                ignore_paths: Vec::new(),
            },
            &WhiteoutMode::overlay(Vec::new()),
        )
        .unwrap_err();
        assert!(err.to_string().contains("bin/tool-link"), "{err}");

        let top = tmp.path().join("top");
        extract(&layer, &top, vec![base_dir.clone()]);
        let whiteout = fs::symlink_metadata(top.join("etc/gone")).unwrap();
        assert!(whiteout.file_type().is_char_device());
        assert_eq!(whiteout.rdev(), 0);
        let opaque = crate::image::layer::read_xattrs(&top.join("var/cache")).unwrap();
        assert_eq!(opaque["trusted.overlay.opaque"], b"y");
        assert_eq!(
            fs::read_to_string(top.join("bin/tool-link")).unwrap(),
            "the tool"
        );

        let [upper, work, merged] = dirs(tmp.path(), &["upper", "work", "merged"])
            .try_into()
            .unwrap();
        let overlay = Overlay::mount(&[base_dir, top], &upper, &work, &merged).unwrap();
        let read = |p: &str| fs::read_to_string(merged.join(p)).ok();
        assert_eq!(read("etc/gone"), None);
        assert_eq!(read("etc/kept").as_deref(), Some("kept"));
        assert_eq!(read("var/cache/old"), None);
        assert!(!merged.join("var/cache/sub").exists());
        assert_eq!(read("var/cache/new").as_deref(), Some("in the opaque dir"));
        assert_eq!(read("bin/tool").as_deref(), Some("the tool"));
        assert_eq!(read("bin/tool-link").as_deref(), Some("the tool"));
        let mut listed: Vec<_> = fs::read_dir(merged.join("var/cache"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        listed.sort();
        assert_eq!(listed, ["new"]);
        overlay.unmount().unwrap();
        assert!(!merged.join("etc").exists(), "unmounted");
    }

    /// Every path under `root`: its kind and, for a file or symlink, its
    /// content or target.
    fn listing(root: &Path) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut dirs = vec![root.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                let meta = fs::symlink_metadata(&path).unwrap();
                let what = if meta.is_dir() {
                    dirs.push(path);
                    "dir".to_owned()
                } else if meta.file_type().is_symlink() {
                    format!("-> {}", fs::read_link(&path).unwrap().display())
                } else {
                    fs::read_to_string(&path).unwrap()
                };
                out.push((rel, what));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_layer_repeated_in_the_stack_mounts_as_applying_every_layer_in_turn() {
        let tmp = tempfile::tempdir().unwrap();
        let content = tmp.path().join("content");
        fs::create_dir(&content).unwrap();
        let file = |name: &str, data: &str| {
            let path = content.join(name);
            fs::write(&path, data).unwrap();
            EntryKind::File(path)
        };
        let base = tar_of(vec![
            LayerEntry::new("gone", file("base-gone", "base")),
            LayerEntry::new("d", EntryKind::Dir),
            LayerEntry::new("d/base", file("base-d", "base")),
        ]);
        // The repeated layer: adds to d, writes f, deletes gone.
        let repeated = tar_of(vec![
            LayerEntry::new("d", EntryKind::Dir),
            LayerEntry::new("d/x", file("rep-x", "repeated")),
            LayerEntry::new("d/y", file("rep-y", "repeated")),
            LayerEntry::new("f", file("rep-f", "repeated")),
            LayerEntry::new("gone", EntryKind::Whiteout),
            LayerEntry::new("link", EntryKind::Symlink("d/x".into())),
        ]);
        // Layers in between that undo the repeated one's work.
        let changes = tar_of(vec![
            LayerEntry::new("d", EntryKind::Dir),
            LayerEntry::new("d/x", EntryKind::Whiteout),
            LayerEntry::new("d/z", file("mid-z", "between")),
            LayerEntry::new("f", file("mid-f", "between")),
            LayerEntry::new("gone", file("mid-gone", "back")),
            LayerEntry::new("link", EntryKind::Whiteout),
        ]);
        let opaque = tar_of(vec![
            LayerEntry::new("d", EntryKind::Dir),
            LayerEntry::new("d", EntryKind::OpaqueWhiteout),
            LayerEntry::new("d/w", file("opq-w", "opaque")),
        ]);
        let replaced = tar_of(vec![
            LayerEntry::new("d", file("rpl-d", "a file now")),
            LayerEntry::new("f", EntryKind::Dir),
            LayerEntry::new("f/inside", file("rpl-f", "dir now")),
        ]);
        let layers = [
            ("base", &base),
            ("repeated", &repeated),
            ("changes", &changes),
            ("opaque", &opaque),
            ("replaced", &replaced),
        ];
        let mut extracted = std::collections::BTreeMap::new();
        for (name, layer) in layers {
            let dir = tmp.path().join(format!("layer-{name}"));
            extract(layer, &dir, Vec::new());
            extracted.insert(name, (dir, layer));
        }
        for (i, middle) in [
            &["changes"][..],
            &["opaque"],
            &["replaced"],
            &["changes", "opaque"],
            &["replaced", "changes"],
        ]
        .into_iter()
        .enumerate()
        {
            let stack: Vec<&str> = ["base", "repeated"]
                .into_iter()
                .chain(middle.iter().copied())
                .chain(["repeated"])
                .collect();
            let applied = tmp.path().join(format!("applied-{i}"));
            fs::create_dir(&applied).unwrap();
            for name in &stack {
                crate::image::apply::apply_layer(
                    &extracted[name].1[..],
                    &applied,
                    &ApplyOptions {
                        root_is_privileged: true,
                        preserve_ownership: true,
                        ignore_paths: Vec::new(),
                    },
                )
                .unwrap();
            }
            let lowers: Vec<PathBuf> = stack.iter().map(|n| extracted[n].0.clone()).collect();
            let [upper, work, merged] = dirs(
                tmp.path(),
                &[
                    &format!("upper-{i}"),
                    &format!("work-{i}"),
                    &format!("merged-{i}"),
                ],
            )
            .try_into()
            .unwrap();
            let overlay = Overlay::mount(&lowers, &upper, &work, &merged).unwrap();
            assert_eq!(listing(&merged), listing(&applied), "stack {stack:?}");
            overlay.unmount().unwrap();
        }
    }

    #[test]
    fn three_hundred_layers_mount() {
        let tmp = tempfile::tempdir().unwrap();
        // Long names: the legacy option string could not hold them.
        let lowers: Vec<PathBuf> = (0..300)
            .map(|i| {
                let d = tmp.path().join(format!("layer-{i:03}-{}", "x".repeat(40)));
                fs::create_dir(&d).unwrap();
                fs::write(d.join(format!("f{i}")), i.to_string()).unwrap();
                fs::write(d.join("top"), i.to_string()).unwrap();
                d
            })
            .collect();
        let [upper, work, merged] = dirs(tmp.path(), &["upper", "work", "merged"])
            .try_into()
            .unwrap();
        let err = mount_legacy(&lowers, &upper, &work, &merged, false, false).unwrap_err();
        assert!(
            matches!(err, OverlayError::TooManyLayers { layers: 300, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("300 layers"), "{err}");

        let overlay = Overlay::mount(&lowers, &upper, &work, &merged).unwrap();
        assert_eq!(fs::read_to_string(merged.join("f0")).unwrap(), "0");
        assert_eq!(fs::read_to_string(merged.join("f299")).unwrap(), "299");
        // Bottom first: the last lower is on top.
        assert_eq!(fs::read_to_string(merged.join("top")).unwrap(), "299");
        overlay.unmount().unwrap();
    }

    #[test]
    fn a_stack_without_layers_mounts_and_drop_unmounts() {
        let tmp = tempfile::tempdir().unwrap();
        let [upper, work, merged] = dirs(tmp.path(), &["upper", "work", "merged"])
            .try_into()
            .unwrap();
        {
            let overlay = Overlay::mount(&[], &upper, &work, &merged).unwrap();
            assert_eq!(overlay.target(), merged);
            fs::write(merged.join("hello"), "hi").unwrap();
        }
        assert_eq!(fs::read_to_string(upper.join("hello")).unwrap(), "hi");
        assert!(!merged.join("hello").exists(), "unmounted on drop");
        assert!(
            !tmp.path().join("work.lower").exists(),
            "empty lower removed"
        );
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(merged.to_str().unwrap()));
    }

    #[test]
    fn a_file_held_open_for_a_moment_delays_the_unmount_one_held_on_fails_it() {
        let tmp = tempfile::tempdir().unwrap();
        let [upper, work, merged] = dirs(tmp.path(), &["upper", "work", "merged"])
            .try_into()
            .unwrap();
        let mounted =
            |target: &Path| !super::super::mountinfo::mount_points_under(target).is_empty();
        // As a child forked meanwhile holds a copy of a descriptor another
        // thread has open in the overlay, until it closes what it inherited.
        let overlay = Overlay::mount(&[], &upper, &work, &merged).unwrap();
        let held = fs::File::create(merged.join("held")).unwrap();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            drop(held);
        });
        overlay.unmount().unwrap();
        closer.join().unwrap();
        assert!(!mounted(&merged));
        assert!(upper.join("held").is_file());

        // Held on: the unmount fails, and the drop detaches it.
        let [upper, work, merged] = dirs(tmp.path(), &["upper2", "work2", "merged2"])
            .try_into()
            .unwrap();
        let overlay = Overlay::mount(&[], &upper, &work, &merged).unwrap();
        let held = fs::File::create(merged.join("held")).unwrap();
        let err = overlay.unmount().unwrap_err();
        assert!(matches!(err, OverlayError::Unmount { .. }), "{err}");
        assert!(!mounted(&merged), "detached");
        drop(held);
    }

    #[test]
    fn legacy_mount_works_for_a_short_stack() {
        let tmp = tempfile::tempdir().unwrap();
        let [lower, upper, work, merged] = dirs(tmp.path(), &["lower", "upper", "work", "merged"])
            .try_into()
            .unwrap();
        fs::write(lower.join("a"), "a").unwrap();
        mount_legacy(&[lower], &upper, &work, &merged, false, true).unwrap();
        let overlay = Overlay {
            target: merged.clone(),
            empty_lower: None,
            mounted: true,
        };
        assert_eq!(fs::read_to_string(merged.join("a")).unwrap(), "a");
        overlay.unmount().unwrap();
    }

    #[test]
    fn overlay_works_here_and_the_probe_cleans_up() {
        let tmp = tempfile::tempdir().unwrap();
        super::try_overlay(tmp.path()).unwrap();
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn no_overlay_without_a_mount_namespace_of_its_own() {
        // The test process shares the host's mounts (it never entered a
        // namespace of its own): a mount here could outlive it.
        assert!(!super::super::has_private_mounts());
        let tmp = tempfile::tempdir().unwrap();
        assert!(!supported(tmp.path()));
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
    }
}
