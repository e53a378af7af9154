//! `USER` and `--chown` values (`name`, `uid`, `name:group`, `uid:gid`
//! ...) resolved through the root's own `/etc/passwd` and `/etc/group`.
//! The files are read through [`super::path::resolve`], so a symlinked
//! `/etc` never leads out of the root.
//!
//! A part that is `root` or a number is an id, as BuildKit parses it
//! (`parseUID` in `client/llb/fileop.go` and `executor/oci/user.go`): such
//! a part needs no file, so `root` works in an image without
//! `/etc/passwd` (`FROM scratch`). Two rules, as BuildKit has two:
//! - a process's user ([`resolve`]), as runc's `GetExecUser` does for
//!   BuildKit's RUN: `uid:gid` both ids is taken as is (BuildKit's
//!   `ParseUIDGID` fast path); otherwise a name is looked up, a number
//!   without an entry is fine. With no explicit group, the user's passwd
//!   group is the primary one and every group listing the user is a
//!   supplementary one; with an explicit group there are no other
//!   supplementary groups. The primary group is always in the list. So a
//!   lone `root` needs the passwd entry here, as in BuildKit.
//! - the owner of files a COPY `--chown` or a WORKDIR makes
//!   ([`file_owner`]), as BuildKit's file operations do (`readUser` in
//!   `solver/llbsolver/file/user_linux.go`): an id user is `id:id`, a named
//!   one takes its passwd uid and group; a group part replaces the group.
//!
//! A name that no file lists is an error naming it, where BuildKit's file
//! operations quietly use root instead (Docker documents the error).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::User;
use super::path;

/// Why a `USER` value cannot be resolved.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("unable to find user {name}: no matching entries in /etc/passwd of the root")]
    UnknownUser { name: String },
    #[error("unable to find group {name}: no matching entries in /etc/group of the root")]
    UnknownGroup { name: String },
    #[error(
        "unable to find user {name}: the image has no /etc/passwd\nhint: use a numeric uid, or root"
    )]
    NoPasswd { name: String },
    #[error(
        "unable to find group {name}: the image has no /etc/group\nhint: use a numeric gid, or root"
    )]
    NoGroupFile { name: String },
    #[error(
        "invalid user {value:?}\nhint: write a name or uid, optionally followed by :group or :gid"
    )]
    Invalid { value: String },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

type Result<T, E = UserError> = std::result::Result<T, E>;

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Reads `/etc/<file>` of the root; a missing file reads as empty.
fn read_etc(root: &Path, file: &str) -> Result<String> {
    Ok(read_etc_if_any(root, file)?.unwrap_or_default())
}

/// Reads `/etc/<file>` of the root; `None` when the root has none.
fn read_etc_if_any(root: &Path, file: &str) -> Result<Option<String>> {
    let inside = Path::new("/etc").join(file);
    let read = |resolved: path::Resolved| -> io::Result<Option<String>> {
        if !resolved.missing.is_empty() {
            return Ok(None);
        }
        match fs::read(root.join(&resolved.inner)) {
            Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    };
    path::resolve(root, &inside)
        .and_then(read)
        .map_err(|source| UserError::Read {
            path: root.join(inside.strip_prefix("/").unwrap_or(&inside)),
            source,
        })
}

fn passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            Some(PasswdEntry {
                name: (*fields.first()?).to_owned(),
                uid: fields.get(2)?.trim().parse().ok()?,
                gid: fields.get(3)?.trim().parse().ok()?,
                home: fields.get(5).map_or_else(String::new, |h| (*h).to_owned()),
            })
        })
        .collect()
}

fn groups(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            Some(GroupEntry {
                name: (*fields.first()?).to_owned(),
                gid: fields.get(2)?.trim().parse().ok()?,
                members: fields
                    .get(3)
                    .map(|list| {
                        list.split(',')
                            .map(str::trim)
                            .filter(|member| !member.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The home directory of `uid` in the root's `/etc/passwd` (`None` when
/// the uid has no entry or an empty one): the `HOME` a command gets when
/// the image sets none, as runc gives it.
pub fn home(root: &Path, uid: u32) -> Result<Option<String>> {
    Ok(passwd(&read_etc(root, "passwd")?)
        .into_iter()
        .find(|entry| entry.uid == uid)
        .map(|entry| entry.home)
        .filter(|home| !home.is_empty()))
}

/// A part of a user value that is an id without any lookup: `root` (0) or
/// a number.
fn id_of(part: &str) -> Option<u32> {
    if part == "root" {
        Some(0)
    } else {
        part.parse().ok()
    }
}

/// The passwd entry named `name`, or why there is none.
fn named_user(root: &Path, name: &str) -> Result<PasswdEntry> {
    let text = read_etc_if_any(root, "passwd")?.ok_or_else(|| UserError::NoPasswd {
        name: name.to_owned(),
    })?;
    passwd(&text)
        .into_iter()
        .find(|entry| entry.name == name)
        .ok_or_else(|| UserError::UnknownUser {
            name: name.to_owned(),
        })
}

/// The gid of the group named `name`, or why there is none.
fn named_group(root: &Path, name: &str) -> Result<u32> {
    let text = read_etc_if_any(root, "group")?.ok_or_else(|| UserError::NoGroupFile {
        name: name.to_owned(),
    })?;
    groups(&text)
        .into_iter()
        .find(|entry| entry.name == name)
        .map(|entry| entry.gid)
        .ok_or_else(|| UserError::UnknownGroup {
            name: name.to_owned(),
        })
}

/// `value` split at its first `:` into a user part (never empty) and a
/// group part, which is `None` when absent or empty (`user:`).
fn split_user(value: &str) -> Result<(&str, Option<&str>)> {
    let (user_part, group_part) = match value.split_once(':') {
        Some((user_part, group_part)) => (user_part, Some(group_part)),
        None => (value, None),
    };
    if user_part.is_empty() {
        return Err(UserError::Invalid {
            value: value.to_owned(),
        });
    }
    Ok((user_part, group_part.filter(|g| !g.is_empty())))
}

/// The owner (`uid`, `gid`) of the files a COPY `--chown=value` or a
/// WORKDIR under `USER value` makes: an id user is `id:id`, a named one
/// has its passwd uid and group; a group part (`:name`, `:gid`, `:root`)
/// replaces the group, and an empty one (`user:`) leaves it.
pub fn file_owner(root: &Path, value: &str) -> Result<(u32, u32)> {
    let (user_part, group_part) = split_user(value)?;
    let (uid, gid) = if let Some(id) = id_of(user_part) {
        (id, id)
    } else {
        let entry = named_user(root, user_part)?;
        (entry.uid, entry.gid)
    };
    let gid = match group_part {
        None => gid,
        Some(group) => match id_of(group) {
            Some(id) => id,
            None => named_group(root, group)?,
        },
    };
    Ok((uid, gid))
}

/// Resolves `user` (`name|uid[:group|gid]`) through the root's files.
pub fn resolve(root: &Path, user: &str) -> Result<User> {
    let invalid = || UserError::Invalid {
        value: user.to_owned(),
    };
    let (user_part, group_part) = match user.split_once(':') {
        Some((user_part, group_part)) => (user_part, Some(group_part)),
        None => (user, None),
    };
    if user_part.is_empty() || group_part.is_some_and(str::is_empty) {
        return Err(invalid());
    }
    // Both parts ids: no file is read (BuildKit's ParseUIDGID).
    if let (Some(uid), Some(gid)) = (id_of(user_part), group_part.and_then(id_of)) {
        return Ok(User {
            uid,
            gid,
            groups: vec![gid],
        });
    }
    let (uid, mut gid, name) = if let Ok(uid) = user_part.parse::<u32>() {
        match passwd(&read_etc(root, "passwd")?)
            .into_iter()
            .find(|entry| entry.uid == uid)
        {
            Some(entry) => (uid, entry.gid, Some(entry.name)),
            None => (uid, 0, None),
        }
    } else {
        let entry = named_user(root, user_part)?;
        (entry.uid, entry.gid, Some(entry.name))
    };
    let mut supplementary = Vec::new();
    match group_part {
        Some(group) => {
            gid = match group.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => named_group(root, group)?,
            };
        }
        None => {
            if let Some(name) = name {
                for entry in groups(&read_etc(root, "group")?) {
                    if entry.members.contains(&name) && !supplementary.contains(&entry.gid) {
                        supplementary.push(entry.gid);
                    }
                }
            }
        }
    }
    // The primary group is always among the groups too, as BuildKit and
    // buildah do since CVE-2023-25173 / CVE-2022-2990 (a process must not
    // keep the privileges of a group it was never given by leaving it out).
    if !supplementary.contains(&gid) {
        supplementary.insert(0, gid);
    }
    Ok(User {
        uid,
        gid,
        groups: supplementary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("real-etc")).unwrap();
        std::os::unix::fs::symlink("/real-etc", dir.path().join("etc")).unwrap();
        fs::write(
            dir.path().join("real-etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\n# comment\nalice:x:1000:1000::/home/alice:/bin/sh\nbob:x:1001:1001::/:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("real-etc/group"),
            "root:x:0:\nalice:x:1000:\nwheel:x:10:alice,bob\naudio:x:29:bob\nvideo:x:44: alice \n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn homes_come_from_passwd() {
        let root = root();
        assert_eq!(
            home(root.path(), 1000).unwrap().as_deref(),
            Some("/home/alice")
        );
        assert_eq!(home(root.path(), 1001).unwrap().as_deref(), Some("/"));
        assert_eq!(home(root.path(), 4242).unwrap(), None);
    }

    #[test]
    fn names_and_supplementary_groups() {
        let root = root();
        let user = resolve(root.path(), "alice").unwrap();
        assert_eq!(
            user,
            User {
                uid: 1000,
                gid: 1000,
                groups: vec![1000, 10, 44]
            }
        );
        let user = resolve(root.path(), "1001").unwrap();
        assert_eq!(user.gid, 1001);
        assert_eq!(user.groups, vec![1001, 10, 29]);
    }

    #[test]
    fn explicit_groups_replace_the_supplementary_ones_but_stay_in_the_list() {
        let root = root();
        let user = resolve(root.path(), "alice:audio").unwrap();
        assert_eq!(
            user,
            User {
                uid: 1000,
                gid: 29,
                groups: vec![29]
            }
        );
        assert_eq!(resolve(root.path(), "bob:7").unwrap().gid, 7);
    }

    #[test]
    fn unknown_numeric_ids_are_fine() {
        let root = root();
        assert_eq!(
            resolve(root.path(), "4242").unwrap(),
            User {
                uid: 4242,
                gid: 0,
                groups: vec![0]
            }
        );
        assert_eq!(resolve(root.path(), "4242:99").unwrap().gid, 99);
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(resolve(empty.path(), "5:6").unwrap().uid, 5);
    }

    #[test]
    fn root_and_numbers_need_no_files() {
        let empty = tempfile::tempdir().unwrap();
        let root = empty.path();
        // A process: both parts ids, or a lone number.
        for (value, uid, gid) in [("root:root", 0, 0), ("root:0", 0, 0), ("7:root", 7, 0)] {
            assert_eq!(
                resolve(root, value).unwrap(),
                User {
                    uid,
                    gid,
                    groups: vec![gid]
                },
                "{value}"
            );
        }
        assert_eq!(resolve(root, "0").unwrap().uid, 0);
        // A lone name, even root, is looked up (runc's GetExecUser).
        let err = resolve(root, "root").unwrap_err();
        assert!(matches!(err, UserError::NoPasswd { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "unable to find user root: the image has no /etc/passwd\nhint: use a numeric uid, or root"
        );
        assert!(matches!(
            resolve(root, "root:wheel"),
            Err(UserError::NoPasswd { .. })
        ));

        // Files: an id user is id:id; root is an id.
        for (value, owner) in [
            ("root", (0, 0)),
            ("root:root", (0, 0)),
            ("0", (0, 0)),
            ("1000", (1000, 1000)),
            ("1000:root", (1000, 0)),
            ("root:50", (0, 50)),
            ("1000:", (1000, 1000)),
        ] {
            assert_eq!(file_owner(root, value).unwrap(), owner, "{value}");
        }
        for value in ["nobody", "1000:staff", "root:wheel"] {
            let err = file_owner(root, value).unwrap_err();
            assert!(
                matches!(
                    err,
                    UserError::NoPasswd { .. } | UserError::NoGroupFile { .. }
                ),
                "{value}: {err}"
            );
        }
        assert!(matches!(
            file_owner(root, ":0"),
            Err(UserError::Invalid { .. })
        ));
    }

    #[test]
    fn file_owners_take_a_named_users_passwd_group() {
        let root = root();
        let root = root.path();
        assert_eq!(file_owner(root, "alice").unwrap(), (1000, 1000));
        fs::write(
            root.join("real-etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/:/bin/sh\n",
        )
        .unwrap();
        assert_eq!(file_owner(root, "app").unwrap(), (1000, 1001));
        assert_eq!(file_owner(root, "app:").unwrap(), (1000, 1001));
        assert_eq!(file_owner(root, "app:audio").unwrap(), (1000, 29));
        assert_eq!(file_owner(root, "app:7").unwrap(), (1000, 7));
        assert!(matches!(
            file_owner(root, "ghost"),
            Err(UserError::UnknownUser { .. })
        ));
        assert!(matches!(
            file_owner(root, "app:ghosts"),
            Err(UserError::UnknownGroup { .. })
        ));
    }

    #[test]
    fn unknown_names_are_errors_naming_them() {
        let root = root();
        let err = resolve(root.path(), "mallory").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to find user mallory: no matching entries in /etc/passwd of the root"
        );
        let err = resolve(root.path(), "alice:nogroup").unwrap_err();
        assert!(err.to_string().contains("group nogroup"), "{err}");
        assert!(matches!(
            resolve(root.path(), ":1"),
            Err(UserError::Invalid { .. })
        ));
    }
}
