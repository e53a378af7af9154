//! A build job's process: `executor build` (this same binary) in a process
//! group of its own, so that a timeout or a cancelled run ends it whole,
//! its stdout and stderr line by line into the job's log.

use std::io::{self, BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::events::Stream;
use super::failure::ChildError;
use super::logs::JobLog;

/// How a build job's process ended.
pub(super) enum ChildEnd {
    Exited(i32),
    TimedOut,
}

/// Runs `exe args` in a process group of its own with `env` added, each
/// output line into `log`; after `timeout`, or once `cancel` is cancelled,
/// the group is sent SIGTERM, then SIGKILL ten seconds later.
pub(super) fn run_child(
    exe: &Path,
    args: &[String],
    env: &[(String, String)],
    timeout: Duration,
    log: &JobLog,
    cancel: &CancellationToken,
) -> Result<ChildEnd, ChildError> {
    use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
    let mut command = Command::new(exe);
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(source) => {
            return Err(ChildError::Start {
                exe: exe.to_path_buf(),
                source,
            });
        }
    };
    let pgid = i32::try_from(child.id()).unwrap_or(0);
    let streams = [
        child
            .stdout
            .take()
            .map(|s| (Stream::Stdout, Box::new(s) as Box<dyn io::Read + Send>)),
        child
            .stderr
            .take()
            .map(|s| (Stream::Stderr, Box::new(s) as Box<dyn io::Read + Send>)),
    ];
    let log = Arc::new(log);
    let started = Instant::now();
    let mut timed_out = false;
    let result = std::thread::scope(|scope| {
        for (name, stream) in streams.into_iter().flatten() {
            let log = Arc::clone(&log);
            scope.spawn(move || {
                let mut reader = BufReader::new(stream);
                let mut line = Vec::new();
                while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                    log.write_to(name, &line);
                    line.clear();
                }
            });
        }
        let mut term_sent: Option<Instant> = None;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
            if started.elapsed() >= timeout && term_sent.is_none() {
                timed_out = true;
                kill_group(pgid, libc::SIGTERM);
                term_sent = Some(Instant::now());
            }
            if cancel.is_cancelled() && term_sent.is_none() {
                kill_group(pgid, libc::SIGTERM);
                term_sent = Some(Instant::now());
            }
            if term_sent.is_some_and(|t| t.elapsed() >= Duration::from_secs(10)) {
                kill_group(pgid, libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    match result {
        _ if timed_out => Ok(ChildEnd::TimedOut),
        Ok(status) => Ok(ChildEnd::Exited(
            status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        )),
        Err(source) => Err(ChildError::Wait(source)),
    }
}

fn kill_group(pgid: i32, signal: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pgid) {
        let signal = rustix::process::Signal::from_named_raw(signal);
        if let Some(signal) = signal {
            let _ = rustix::process::kill_process_group(pid, signal);
        }
    }
}
