//! `USER` values (`name`, `uid`, `name:group`, `uid:gid` ...) resolved
//! through the root's own `/etc/passwd` and `/etc/group`, as runc's
//! `GetExecUser` does for Docker: with no explicit group, the user's
//! passwd group is the primary one and every group listing the user is a
//! supplementary one; with an explicit group there are no other
//! supplementary groups. The primary group is always in the list. The files are read through [`super::path::resolve`], so a
//! symlinked `/etc` never leads out of the root.

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
    let inside = Path::new("/etc").join(file);
    let read = |resolved: path::Resolved| -> io::Result<String> {
        if !resolved.missing.is_empty() {
            return Ok(String::new());
        }
        let bytes = fs::read(root.join(&resolved.inner))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
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
    let passwd = passwd(&read_etc(root, "passwd")?);
    let (uid, mut gid, name) = if let Ok(uid) = user_part.parse::<u32>() {
        match passwd.iter().find(|entry| entry.uid == uid) {
            Some(entry) => (uid, entry.gid, Some(entry.name.as_str())),
            None => (uid, 0, None),
        }
    } else {
        let entry = passwd
            .iter()
            .find(|entry| entry.name == user_part)
            .ok_or_else(|| UserError::UnknownUser {
                name: user_part.to_owned(),
            })?;
        (entry.uid, entry.gid, Some(entry.name.as_str()))
    };
    let mut supplementary = Vec::new();
    match group_part {
        Some(group) => {
            gid = if let Ok(gid) = group.parse::<u32>() {
                gid
            } else {
                groups(&read_etc(root, "group")?)
                    .iter()
                    .find(|entry| entry.name == group)
                    .ok_or_else(|| UserError::UnknownGroup {
                        name: group.to_owned(),
                    })?
                    .gid
            };
        }
        None => {
            if let Some(name) = name {
                for entry in groups(&read_etc(root, "group")?) {
                    if entry.members.iter().any(|member| member == name)
                        && !supplementary.contains(&entry.gid)
                    {
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
