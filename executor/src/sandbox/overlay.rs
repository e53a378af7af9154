//! Overlay mounts: a stage's root filesystem made of its layers' extracted
//! directories (read-only lowers) and a fresh upper directory that collects
//! what a step changes. This module owns mounting and unmounting one
//! overlay; it knows nothing of images (the caller hands it directories).
//!
//! The mount is made so that the upper directory is a plain diff, readable
//! without overlayfs: `index=off` (no hard-link index in the work dir),
//! `metacopy=off` (a chmod copies the data up, never a metadata-only
//! inode), `redirect_dir=off` (renaming a lower directory fails with
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
//! Mounts made here are ordinary mounts: the executor runs in its own
//! private mount namespace, so they vanish with it even on `SIGKILL`.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::CWD;
use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags,
};

/// The largest legacy `mount(2)` option string (one page, with its NUL).
const LEGACY_DATA_MAX: usize = 4095;

/// The options that keep the upper directory a plain diff.
const PLAIN_DIFF_OPTIONS: [(&str, &str); 3] = [
    ("index", "off"),
    ("metacopy", "off"),
    ("redirect_dir", "off"),
];

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
    /// as the one lower overlayfs needs, removed on unmount.
    pub fn mount(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<Overlay> {
        let mut overlay = Overlay {
            target: target.to_path_buf(),
            empty_lower: None,
            mounted: false,
        };
        let mut lowers = lowers.to_vec();
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
        match mount_new_api(&lowers, upper, work, target, userxattr) {
            Ok(()) => {}
            Err(NewApi::Unavailable(why)) => {
                tracing::debug!(reason = %why, "new mount API unavailable; using mount(2)");
                mount_legacy(&lowers, upper, work, target, userxattr)?;
            }
            Err(NewApi::Failed(e)) => return Err(e),
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

    /// Unmounts the overlay (an error if it is busy: a process still has a
    /// file open in it).
    pub fn unmount(mut self) -> Result<()> {
        self.mounted = false;
        let result = rustix::mount::unmount(&self.target, UnmountFlags::NOFOLLOW).map_err(|e| {
            OverlayError::Unmount {
                target: self.target.clone(),
                source: e.into(),
            }
        });
        self.remove_empty_lower();
        result
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

/// Whether overlay mounts work here, with `scratch` (a directory on the
/// filesystem that will hold upper directories) for a tiny trial overlay:
/// one lower file is deleted and one file created through the merged view,
/// and everything is removed afterwards.
#[must_use]
pub fn supported(scratch: &Path) -> bool {
    match try_overlay(scratch) {
        Ok(()) => true,
        Err(err) => {
            tracing::info!(scratch = %scratch.display(), error = %err, "overlay mounts are not available");
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
    for (key, value) in PLAIN_DIFF_OPTIONS {
        if let Err(e) = rustix::mount::fsconfig_set_string(fs_fd, key, value) {
            tracing::debug!(option = key, error = %e, log = %read_log(fs_fd), "overlay option refused; left out");
        }
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
    let mut options: Vec<(&str, &str)> = PLAIN_DIFF_OPTIONS.to_vec();
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
            Err(Errno::INVAL)
                if options
                    .iter()
                    .any(|(k, _)| PLAIN_DIFF_OPTIONS.iter().any(|(p, _)| p == k)) =>
            {
                let i = options
                    .iter()
                    .rposition(|(k, _)| PLAIN_DIFF_OPTIONS.iter().any(|(p, _)| p == k))
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
