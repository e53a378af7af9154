//! A run's logs: live on the terminal, each line prefixed by its job's
//! name (padded, coloured on a terminal), and each job's full output kept
//! in `.executor/runs/RUN_ID/JOB.log` under a base directory (the project
//! directory), where `executor logs` finds them.
//!
//! Secrets are masked: every occurrence of a secret value (of each of its
//! lines, for a value of several lines) becomes `[MASKED]`, in the live
//! output and in the file alike. Output is masked a complete line at a
//! time, so a secret split across two chunks of a job's output is still
//! found; a partial line waits for the rest of its line, and is written
//! when the job's log is finished (or, past [`LINE_LIMIT`], in pieces that
//! keep the longest secret's length minus one byte back, so no secret is
//! ever cut in two).
//!
//! A [`JobLog`] is written through `&self` from any thread; the terminal
//! is shared by every job of a run, one whole line at a time.

use std::collections::hash_map::RandomState;
use std::fmt::{self, Write as _};
use std::fs::{self, File};
use std::hash::BuildHasher as _;
use std::io::{self, IsTerminal as _, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use executor_cache::time::civil_from_days;

/// What a secret becomes in logs (GitLab's word).
pub const MASK: &[u8] = b"[MASKED]";

/// A partial line longer than this is written without waiting for its end.
pub const LINE_LIMIT: usize = 64 * 1024;

/// The colours job names cycle through (ANSI: cyan, yellow, green,
/// magenta, blue, red, bright variants).
const COLOURS: [&str; 12] = [
    "36", "33", "32", "35", "34", "31", "96", "93", "92", "95", "94", "91",
];

#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("cannot create the log {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the log {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "invalid run id {0:?}\nhint: run ids look like 20250102-150405-123-0a1b2c; `executor logs` with no id shows the latest run"
    )]
    InvalidRunId(String),
    #[error("no runs in {}\nhint: `executor run` keeps each run's logs there", dir.display())]
    NoRuns { dir: PathBuf },
    #[error("no run {id} in {}\nhint: the latest run is {latest}", dir.display())]
    NoRun {
        id: String,
        dir: PathBuf,
        latest: String,
    },
    #[error("run {run} has no job {job:?}\nhint: its jobs are: {}", jobs.join(", "))]
    NoJob {
        run: RunId,
        job: String,
        jobs: Vec<String>,
    },
}

type Result<T, E = LogsError> = std::result::Result<T, E>;

/// A run's id: its start time (UTC, to the millisecond) and a random
/// suffix, `YYYYMMDD-HHMMSS-mmm-rrrrrr`, so ids sort by time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(String);

impl RunId {
    /// A new id for a run starting now.
    #[must_use]
    pub fn new() -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let random = RandomState::new().hash_one((now, std::process::id()));
        let millis = i64::try_from(now.as_millis()).unwrap_or(i64::MAX);
        Self::at(millis, random)
    }

    /// The id of a run started `unix_millis` after the epoch, with the low
    /// 24 bits of `random` as its suffix.
    #[must_use]
    pub fn at(unix_millis: i64, random: u64) -> Self {
        let seconds = unix_millis.div_euclid(1000);
        let millis = unix_millis.rem_euclid(1000);
        let (days, secs) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
        let (year, month, day) = civil_from_days(days);
        Self(format!(
            "{year:04}{month:02}{day:02}-{:02}{:02}{:02}-{millis:03}-{:06x}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            random & 0xff_ffff
        ))
    }

    /// An id as `executor logs` is given it.
    pub fn parse(value: &str) -> Result<Self> {
        let shape = [8, 6, 3, 6];
        let parts: Vec<&str> = value.split('-').collect();
        let valid = parts.len() == shape.len()
            && parts.iter().zip(shape).all(|(part, len)| {
                part.len() == len && part.bytes().all(|b| b.is_ascii_hexdigit())
            })
            && parts[..3]
                .iter()
                .all(|part| part.bytes().all(|b| b.is_ascii_digit()));
        if valid {
            Ok(Self(value.to_owned()))
        } else {
            Err(LogsError::InvalidRunId(value.to_owned()))
        }
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for RunId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where runs' logs live under `base`: `base/.executor/runs`.
#[must_use]
pub fn runs_dir(base: &Path) -> PathBuf {
    base.join(".executor").join("runs")
}

/// The log file of `job` in run `run` (job names are kept readable;
/// characters other than letters, digits, `-`, `_` and a `.` not first
/// are percent-encoded).
#[must_use]
pub fn log_path(base: &Path, run: &RunId, job: &str) -> PathBuf {
    runs_dir(base)
        .join(run.as_str())
        .join(format!("{}.log", encode_job(job)))
}

fn encode_job(job: &str) -> String {
    let mut out = String::with_capacity(job.len());
    for (i, byte) in job.bytes().enumerate() {
        let plain = byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_';
        if plain || (byte == b'.' && i > 0) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

fn decode_job(encoded: &str) -> String {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The runs under `base`, oldest first (none when there is no runs
/// directory).
pub fn runs(base: &Path) -> Result<Vec<RunId>> {
    let dir = runs_dir(base);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(LogsError::Read { path: dir, source }),
    };
    let mut ids: Vec<RunId> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|entry| RunId::parse(entry.file_name().to_str()?).ok())
        .collect();
    ids.sort();
    Ok(ids)
}

/// The latest run under `base`.
pub fn latest_run(base: &Path) -> Result<RunId> {
    runs(base)?.pop().ok_or_else(|| LogsError::NoRuns {
        dir: runs_dir(base),
    })
}

/// The jobs with a log in run `run`, by name.
pub fn jobs(base: &Path, run: &RunId) -> Result<Vec<String>> {
    let dir = runs_dir(base).join(run.as_str());
    let entries = fs::read_dir(&dir).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => LogsError::NoRun {
            id: run.to_string(),
            dir: runs_dir(base),
            latest: latest_run(base).map_or_else(|_| "none".into(), |id| id.to_string()),
        },
        _ => LogsError::Read {
            path: dir.clone(),
            source,
        },
    })?;
    let mut jobs: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            let stem = name.to_str()?.strip_suffix(".log")?;
            Some(decode_job(stem))
        })
        .collect();
    jobs.sort();
    // In the order the run gave (its pipeline's), when it says.
    if let Ok(order) = fs::read_to_string(dir.join(ORDER_FILE)) {
        let position = |job: &String| order.lines().position(|line| line == job);
        jobs.sort_by_key(|job| position(job).unwrap_or(usize::MAX));
    }
    Ok(jobs)
}

/// The file of a run's directory listing its jobs in the run's order.
const ORDER_FILE: &str = "jobs.txt";

/// Where live output goes, shared by every job of a run.
struct Live {
    sink: Mutex<Box<dyn Write + Send>>,
    colour: bool,
    width: usize,
}

/// One run's logs: creates each job's log and shares the terminal.
pub struct RunLogs {
    id: RunId,
    dir: PathBuf,
    live: Arc<Live>,
}

impl fmt::Debug for RunLogs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunLogs")
            .field("id", &self.id)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl RunLogs {
    /// The logs of run `id` under `base` (its directory is created), live
    /// output on stdout (coloured when stdout is a terminal and `NO_COLOR`
    /// is not set). `job_names` sets the width job names are padded to,
    /// and the order `executor logs` lists the jobs in.
    pub fn create(base: &Path, id: RunId, job_names: &[&str]) -> Result<Self> {
        let colour = io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Self::with_output(base, id, job_names, Box::new(io::stdout()), colour)
    }

    /// [`RunLogs::create`] with live output to `sink`.
    pub fn with_output(
        base: &Path,
        id: RunId,
        job_names: &[&str],
        sink: Box<dyn Write + Send>,
        colour: bool,
    ) -> Result<Self> {
        let dir = runs_dir(base).join(id.as_str());
        fs::create_dir_all(&dir).map_err(|source| LogsError::Create {
            path: dir.clone(),
            source,
        })?;
        let order = dir.join(ORDER_FILE);
        let mut listed = job_names.join("\n");
        listed.push('\n');
        fs::write(&order, listed).map_err(|source| LogsError::Create {
            path: order.clone(),
            source,
        })?;
        // `.executor/` sits in the user's working tree: git is told to
        // leave it out, as pytest and others do with their caches.
        let ignore = base.join(".executor/.gitignore");
        if !ignore.exists() {
            fs::write(
                &ignore,
                "# made by executor run: its logs stay out of git\n*\n",
            )
            .map_err(|source| LogsError::Create {
                path: ignore.clone(),
                source,
            })?;
        }
        let width = job_names
            .iter()
            .map(|name| name.chars().count())
            .max()
            .unwrap_or(0);
        Ok(Self {
            id,
            dir,
            live: Arc::new(Live {
                sink: Mutex::new(sink),
                colour,
                width,
            }),
        })
    }

    #[must_use]
    pub fn id(&self) -> &RunId {
        &self.id
    }

    /// The run's directory, `.executor/runs/RUN_ID`.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new log for job `name` (its file created, or emptied: a retried
    /// job's log holds its last attempt unless the caller writes a line
    /// between attempts), masking `secrets`.
    pub fn job(&self, name: &str, secrets: &[String]) -> Result<JobLog> {
        let path = self.dir.join(format!("{}.log", encode_job(name)));
        let file = File::create(&path).map_err(|source| LogsError::Create {
            path: path.clone(),
            source,
        })?;
        let colour = colour_of(name);
        let padded = format!("{name:<width$}", width = self.live.width);
        let prefix = if self.live.colour {
            format!("\x1b[{colour}m{padded}\x1b[0m | ")
        } else {
            format!("{padded} | ")
        };
        Ok(JobLog {
            name: name.to_owned(),
            path,
            prefix: prefix.into_bytes(),
            masks: masks(secrets),
            live: Arc::clone(&self.live),
            state: Mutex::new(State {
                file: Some(io::BufWriter::new(file)),
                pending: Vec::new(),
                error: None,
            }),
        })
    }
}

/// A job's colour, from a stable hash of its name (FNV-1a), so a job keeps
/// its colour from run to run.
fn colour_of(name: &str) -> &'static str {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    let index = usize::try_from(hash % COLOURS.len() as u64).unwrap_or(0);
    COLOURS[index]
}

/// The byte strings masked for `secrets`: each value's non-empty lines,
/// longest first (so a secret holding another is masked whole).
fn masks(secrets: &[String]) -> Vec<Vec<u8>> {
    let mut masks: Vec<Vec<u8>> = secrets
        .iter()
        .flat_map(|secret| secret.split('\n'))
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .filter(|line| !line.is_empty())
        .map(|line| line.as_bytes().to_vec())
        .collect();
    masks.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    masks.dedup();
    masks
}

/// `text` with every occurrence of each mask replaced by [`MASK`].
#[must_use]
pub fn mask(text: &[u8], masks: &[Vec<u8>]) -> Vec<u8> {
    if masks.is_empty() {
        return text.to_vec();
    }
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    'scan: while i < text.len() {
        for secret in masks {
            if text[i..].starts_with(secret) {
                out.extend_from_slice(MASK);
                i += secret.len();
                continue 'scan;
            }
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

struct State {
    /// `None` once finished.
    file: Option<io::BufWriter<File>>,
    /// The start of a line whose end has not come yet.
    pending: Vec<u8>,
    /// The first write error, reported by [`JobLog::finish`].
    error: Option<io::Error>,
}

/// One job's log: its file and its share of the live output.
pub struct JobLog {
    name: String,
    path: PathBuf,
    prefix: Vec<u8>,
    masks: Vec<Vec<u8>>,
    live: Arc<Live>,
    state: Mutex<State>,
}

impl fmt::Debug for JobLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobLog")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl JobLog {
    /// The job's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The log file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes a chunk of the job's output: its complete lines are masked
    /// and written, the rest waits for the end of its line.
    pub fn write(&self, chunk: &[u8]) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.pending.extend_from_slice(chunk);
        if let Some(end) = state.pending.iter().rposition(|&b| b == b'\n') {
            let lines: Vec<u8> = state.pending.drain(..=end).collect();
            self.emit(&mut state, &lines);
        }
        if state.pending.len() > LINE_LIMIT {
            // Keep back what could be the start of a secret.
            let keep = self
                .masks
                .first()
                .map_or(0, |longest| longest.len().saturating_sub(1));
            let cut = state.pending.len() - keep;
            let piece: Vec<u8> = state.pending.drain(..cut).collect();
            self.emit(&mut state, &piece);
        }
    }

    /// Writes a line of the runner's own (a job's status, say), masked
    /// like the job's output, after any partial line the job left.
    pub fn line(&self, text: &str) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut all = std::mem::take(&mut state.pending);
        if !all.is_empty() {
            all.push(b'\n');
        }
        all.extend_from_slice(text.as_bytes());
        all.push(b'\n');
        self.emit(&mut state, &all);
    }

    /// Writes the partial line left, if any, and closes the file; reports
    /// the first error writing the file met. Later writes go to the live
    /// output only.
    pub fn finish(&self) -> Result<()> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let rest = std::mem::take(&mut state.pending);
        if !rest.is_empty() {
            self.emit(&mut state, &rest);
        }
        if let Some(mut file) = state.file.take()
            && let Err(e) = file.flush()
        {
            state.error.get_or_insert(e);
        }
        match state.error.take() {
            Some(source) => Err(LogsError::Write {
                path: self.path.clone(),
                source,
            }),
            None => Ok(()),
        }
    }

    /// Masks `text` (whole lines, or a piece that must go out now) and
    /// writes it to the file and, line by line with the prefix, to the
    /// live output.
    fn emit(&self, state: &mut State, text: &[u8]) {
        let masked = mask(text, &self.masks);
        if let Some(file) = &mut state.file
            && let Err(e) = file.write_all(&masked)
            && state.error.is_none()
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot write the job's log");
            state.error = Some(e);
        }
        let mut live = Vec::with_capacity(masked.len() + self.prefix.len() * 2);
        for piece in masked.split_inclusive(|&b| b == b'\n') {
            let piece = piece.strip_suffix(b"\n").unwrap_or(piece);
            live.extend_from_slice(&self.prefix);
            live.extend_from_slice(piece.strip_suffix(b"\r").unwrap_or(piece));
            live.push(b'\n');
        }
        let mut sink = self
            .live
            .sink
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // The terminal going away must not stop the job; its log file has
        // everything.
        let _ = sink.write_all(&live).and_then(|()| sink.flush());
    }
}

impl Drop for JobLog {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::warn!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn run(base: &Path, names: &[&str], colour: bool) -> (RunLogs, Captured) {
        let captured = Captured::default();
        let logs = RunLogs::with_output(
            base,
            RunId::at(1_700_000_000_123, 0xabc),
            names,
            Box::new(captured.clone()),
            colour,
        )
        .unwrap();
        (logs, captured)
    }

    #[test]
    fn jobs_are_listed_in_the_runs_order() {
        let base = tempfile::tempdir().unwrap();
        let (logs, _) = run(base.path(), &["zeta", "alpha", "mid"], false);
        for name in ["alpha", "mid", "zeta"] {
            logs.job(name, &[]).unwrap().finish().unwrap();
        }
        assert_eq!(
            jobs(base.path(), logs.id()).unwrap(),
            vec!["zeta", "alpha", "mid"]
        );
    }

    #[test]
    fn git_is_told_to_leave_the_logs_out() {
        let base = tempfile::tempdir().unwrap();
        let (_logs, _) = run(base.path(), &["a"], false);
        let ignore = fs::read_to_string(base.path().join(".executor/.gitignore")).unwrap();
        assert!(ignore.lines().any(|l| l == "*"), "{ignore}");
        // A .gitignore the user wrote there is theirs.
        fs::write(base.path().join(".executor/.gitignore"), "runs/\n").unwrap();
        let (_logs, _) = run(base.path(), &["a"], false);
        assert_eq!(
            fs::read_to_string(base.path().join(".executor/.gitignore")).unwrap(),
            "runs/\n"
        );
    }

    #[test]
    fn run_ids_sort_by_time_and_parse_back() {
        let id = RunId::at(1_700_000_000_123, 0x1234_5678_9abc);
        assert_eq!(id.as_str(), "20231114-221320-123-789abc");
        assert_eq!(RunId::parse(id.as_str()).unwrap(), id);
        assert_eq!(RunId::at(0, 0).as_str(), "19700101-000000-000-000000");
        assert_eq!(
            RunId::at(951_825_600_000, 1).as_str(),
            "20000229-120000-000-000001"
        );
        let earlier = RunId::at(1_700_000_000_122, 0x00ff_ffff);
        assert!(earlier < id);
        let fresh = RunId::new();
        assert!(RunId::parse(fresh.as_str()).is_ok(), "{fresh}");
        assert!(fresh > id);
        for bad in [
            "",
            "latest",
            "../x",
            "20231114-221320-123",
            "2023111x-221320-123-789abc",
        ] {
            let err = RunId::parse(bad).unwrap_err();
            assert!(err.to_string().contains("hint: "), "{err}");
        }
    }

    #[test]
    fn each_job_has_its_log_and_live_lines_carry_its_name() {
        let base = tempfile::tempdir().unwrap();
        let (logs, live) = run(base.path(), &["build", "test"], false);
        let build = logs.job("build", &[]).unwrap();
        let test = logs.job("test", &[]).unwrap();
        build.write(b"compiling\nlinking");
        test.write(b"ok 1\n");
        build.write(b" done\n");
        build.finish().unwrap();
        test.write(b"no newline at the end");
        test.finish().unwrap();
        assert_eq!(
            fs::read_to_string(logs.dir().join("build.log")).unwrap(),
            "compiling\nlinking done\n"
        );
        assert_eq!(
            fs::read_to_string(log_path(base.path(), logs.id(), "test")).unwrap(),
            "ok 1\nno newline at the end"
        );
        assert_eq!(
            live.text(),
            "build | compiling\ntest  | ok 1\nbuild | linking done\ntest  | no newline at the end\n"
        );
    }

    #[test]
    fn names_are_coloured_on_a_terminal() {
        let base = tempfile::tempdir().unwrap();
        let (logs, live) = run(base.path(), &["a"], true);
        let job = logs.job("a", &[]).unwrap();
        job.write(b"x\n");
        let text = live.text();
        assert!(text.starts_with("\x1b["), "{text:?}");
        assert!(text.ends_with("a\x1b[0m | x\n"), "{text:?}");
        // The file has no colour.
        drop(job);
        assert_eq!(fs::read_to_string(logs.dir().join("a.log")).unwrap(), "x\n");
    }

    #[test]
    fn secrets_are_masked_even_when_split_across_chunks() {
        let base = tempfile::tempdir().unwrap();
        let (logs, live) = run(base.path(), &["deploy"], false);
        let secrets = vec![
            "hunter2-token".to_owned(),
            "-----BEGIN KEY-----\nc2VjcmV0\n-----END KEY-----\n".to_owned(),
            String::new(),
        ];
        let job = logs.job("deploy", &secrets).unwrap();
        job.write(b"token is hunt");
        job.write(b"er2-token, again hunter2-token\nkey: c2Vj");
        job.write(b"cmV0\r\n");
        job.line("job failed with hunter2-token");
        job.write(b"tail hunter2-tok");
        job.write(b"en");
        job.finish().unwrap();
        let file = fs::read_to_string(logs.dir().join("deploy.log")).unwrap();
        assert_eq!(
            file,
            "token is [MASKED], again [MASKED]\nkey: [MASKED]\r\njob failed with [MASKED]\ntail [MASKED]"
        );
        let live = live.text();
        assert!(
            !live.contains("hunter2") && !live.contains("c2VjcmV0"),
            "{live}"
        );
        assert_eq!(live.matches("[MASKED]").count(), 5, "{live}");
    }

    #[test]
    fn a_long_partial_line_goes_out_without_cutting_a_secret() {
        let base = tempfile::tempdir().unwrap();
        let (logs, _) = run(base.path(), &["j"], false);
        let job = logs.job("j", &["0123456789".to_owned()]).unwrap();
        let filler = vec![b'x'; LINE_LIMIT - 5];
        job.write(&filler);
        job.write(b"0123456789 and more");
        job.finish().unwrap();
        let file = fs::read(logs.dir().join("j.log")).unwrap();
        let mut expected = filler;
        expected.extend_from_slice(b"[MASKED] and more");
        assert_eq!(file, expected);
    }

    #[test]
    fn logs_are_written_from_many_threads_a_line_at_a_time() {
        let base = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..4).map(|n| format!("job-{n}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let (logs, live) = run(base.path(), &refs, false);
        std::thread::scope(|scope| {
            for name in &names {
                let job = logs.job(name, &[]).unwrap();
                scope.spawn(move || {
                    for n in 0..200 {
                        job.write(format!("line {n} of ").as_bytes());
                        job.write(format!("{name}\n").as_bytes());
                    }
                });
            }
        });
        let live = live.text();
        assert_eq!(live.lines().count(), 800);
        for line in live.lines() {
            let (prefix, text) = line.split_once(" | ").unwrap();
            assert!(text.ends_with(&format!("of {prefix}")), "{line}");
        }
        for name in &names {
            let file = fs::read_to_string(logs.dir().join(format!("{name}.log"))).unwrap();
            assert_eq!(file.lines().count(), 200);
        }
    }

    #[test]
    fn runs_and_jobs_are_found_again() {
        let base = tempfile::tempdir().unwrap();
        assert!(matches!(
            latest_run(base.path()),
            Err(LogsError::NoRuns { .. })
        ));
        let older = RunId::at(1_000, 1);
        let newer = RunId::at(2_000, 0);
        for id in [&newer, &older] {
            let logs =
                RunLogs::with_output(base.path(), id.clone(), &[], Box::new(io::sink()), false)
                    .unwrap();
            for name in ["test: [linux, 1/2]", ".hidden", "build"] {
                logs.job(name, &[]).unwrap().line(name);
            }
        }
        fs::create_dir_all(runs_dir(base.path()).join("not-a-run")).unwrap();
        assert_eq!(
            runs(base.path()).unwrap(),
            vec![older.clone(), newer.clone()]
        );
        assert_eq!(latest_run(base.path()).unwrap(), newer);
        let jobs = jobs(base.path(), &older).unwrap();
        assert_eq!(jobs, vec![".hidden", "build", "test: [linux, 1/2]"]);
        for job in &jobs {
            let path = log_path(base.path(), &older, job);
            assert_eq!(fs::read_to_string(&path).unwrap(), format!("{job}\n"));
            let file = path.file_name().unwrap().to_str().unwrap();
            assert!(!file.starts_with('.') && !file.contains('/'), "{file}");
        }
        let missing = RunId::at(3_000, 0);
        let err = super::jobs(base.path(), &missing).unwrap_err();
        assert!(err.to_string().contains(newer.as_str()), "{err}");
    }
}
