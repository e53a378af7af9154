//! Unprivileged users of this machine, made for one test with `useradd`
//! (the tests run as root), with or without a subordinate id range in
//! `/etc/subuid` and `/etc/subgid`, and removed when the test ends, failed
//! or not: `userdel`, then every line of the two files naming the user
//! (lines a test wrote itself included).

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{executor_bin, ok};

/// `useradd`, `usermod`, `userdel` and the tests' own edits of
/// `/etc/subuid` rewrite shared files: one at a time in a test binary.
static ACCOUNTS: Mutex<()> = Mutex::new(());

fn accounts() -> std::sync::MutexGuard<'static, ()> {
    ACCOUNTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A user made for one test; removed on drop.
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// The subordinate uids and gids (the same numbers), `(first, count)`.
    pub range: Option<(u32, u32)>,
}

/// The subordinate files.
pub const SUBID_FILES: [&str; 2] = ["/etc/subuid", "/etc/subgid"];

impl TestUser {
    /// A new user with a group of its own and no home directory; with a
    /// range of 65536 subordinate ids when `with_range`, and none at all
    /// otherwise.
    #[must_use]
    pub fn new(with_range: bool) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let name = format!("executor-t{pid}-{n}");
        let range = with_range.then(|| (200_000_000 + (pid % 1000) * 300_000 + n * 65536, 65536));
        let _accounts = accounts();
        let mut useradd = Command::new("useradd");
        useradd.args([
            "--no-create-home",
            "--user-group",
            "--shell",
            "/bin/sh",
            "-K",
            "SUB_UID_COUNT=0",
            "-K",
            "SUB_GID_COUNT=0",
            &name,
        ]);
        ok(&mut useradd);
        // From here on the user exists: dropping removes it.
        let mut user = Self {
            uid: id(&name, "-u"),
            gid: id(&name, "-g"),
            name,
            range: None,
        };
        if let Some((first, count)) = range {
            let ids = format!("{first}-{}", first + count - 1);
            ok(Command::new("usermod")
                .args(["--add-subuids", &ids, "--add-subgids", &ids])
                .arg(&user.name));
            user.range = Some((first, count));
        }
        user
    }

    /// Adds `line` to `file` (one of [`SUBID_FILES`]); removed on drop
    /// when it names this user.
    pub fn add_subid_line(&self, file: &str, line: &str) {
        let _accounts = accounts();
        let mut text = fs::read_to_string(file).unwrap_or_default();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(line);
        text.push('\n');
        fs::write(file, text).expect("a subordinate id file");
    }

    /// `cmd` run as this user (real and effective ids, its groups), with
    /// `home` as `HOME`.
    #[must_use]
    pub fn command(&self, cmd: &Command, home: &Path) -> Command {
        let mut wrapped = crate::wrapped(
            &[
                "setpriv",
                "--reuid",
                &self.name,
                "--regid",
                &self.name,
                "--init-groups",
                "--",
            ],
            cmd,
        );
        wrapped.env("HOME", home);
        wrapped
    }

    /// `cmd`'s arguments and environment given to `program` (an executor
    /// this user can run: [`executor_for_anyone`]), run as this user with
    /// `home` as `HOME`.
    #[must_use]
    pub fn executor(&self, program: &Path, cmd: &Command, home: &Path) -> Command {
        let mut own = Command::new(program);
        own.args(cmd.get_args());
        for (key, value) in cmd.get_envs() {
            match value {
                Some(value) => own.env(key, value),
                None => own.env_remove(key),
            };
        }
        self.command(&own, home)
    }

    /// Gives `path` and everything below it to this user.
    pub fn give(&self, path: &Path) {
        ok(Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", self.uid, self.gid))
            .arg(path));
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _accounts = accounts();
        match Command::new("userdel").arg(&self.name).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "userdel {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("cannot run userdel {}: {e}", self.name),
        }
        // userdel removes the entries it can parse; a test's malformed
        // ones stay, and the numeric ones name a uid it does not check.
        let prefixes = [format!("{}:", self.name), format!("{}:", self.uid)];
        for file in SUBID_FILES {
            let Ok(text) = fs::read_to_string(file) else {
                continue;
            };
            let mut kept = String::new();
            for line in text.lines() {
                if !prefixes.iter().any(|p| line.trim_start().starts_with(p)) {
                    kept.push_str(line);
                    kept.push('\n');
                }
            }
            if kept != text
                && let Err(e) = fs::write(file, kept)
            {
                eprintln!("cannot clean {file} of {}: {e}", self.name);
            }
        }
    }
}

/// `id FLAG name`, a number.
fn id(name: &str, flag: &str) -> u32 {
    let out = Command::new("id")
        .arg(flag)
        .arg(name)
        .output()
        .expect("id runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("id {flag} {name}: {out:?}"))
}

/// The executor binary as any user can run it: the workspace's own when
/// every directory above it lets others in and the file lets them run it
/// (a target dir under a private home does not), else a copy in `dir`.
#[must_use]
pub fn executor_for_anyone(dir: &Path) -> PathBuf {
    let bin = executor_bin();
    let open = |path: &Path, bits: u32| {
        fs::metadata(path).is_ok_and(|meta| meta.permissions().mode() & bits == bits)
    };
    if open(&bin, 0o005) && bin.ancestors().skip(1).all(|dir| open(dir, 0o001)) {
        return bin;
    }
    let copy = dir.join("executor");
    fs::copy(&bin, &copy).expect("a copy of the executor binary");
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).expect("chmod");
    copy
}

/// Lets every user through `dir` (a temp dir is 0700): the test's user
/// then reaches what it was given below it.
pub fn open_dir(dir: &Path) {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod");
}
