//! The mount points of this process's mount namespace, as
//! `/proc/self/mountinfo` lists them (its fifth field, with the kernel's
//! octal escapes for space, tab, newline and backslash undone). Read only:
//! mounting and unmounting are the callers' business.

use std::fs;
use std::path::{Path, PathBuf};

/// The mount points at or below `dir` (absolute, as the kernel names them;
/// `dir` should be canonical). Empty when mountinfo cannot be read.
#[must_use]
pub fn mount_points_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape(field)))
        .filter(|point| point.starts_with(dir))
        .collect()
}

/// mountinfo's octal escapes (`\040` for a space...).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|digits| u8::from_str_radix(digits, 8).ok());
        if bytes[i] == b'\\'
            && let Some(value) = octal
        {
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_undone() {
        assert_eq!(unescape(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/odd\\"), "/odd\\");
    }

    #[test]
    fn proc_is_a_mount_point_under_the_root() {
        assert!(mount_points_under(Path::new("/")).contains(&PathBuf::from("/proc")));
        assert!(mount_points_under(Path::new("/no/such/dir")).is_empty());
    }
}
