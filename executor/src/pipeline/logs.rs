//! A run's logs: each job's full output kept in `.executor/runs/RUN_ID/JOB.log`
//! under a base directory (the project directory), where `executor logs`
//! finds them, and every line sent live to the run's [`EventSink`] as a
//! [`RunEvent::Log`] with its job and stream (the CLI prints them prefixed
//! by the job's name).
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
//! A [`JobLog`] is written through `&self` from any thread; its events go
//! out one whole line at a time.

use std::collections::hash_map::RandomState;
use std::fmt::{self, Write as _};
use std::fs::{self, File};
use std::hash::BuildHasher as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use executor_cache::time::civil_from_days;

use super::events::{EventSink, RunEvent, Stream};

/// What a secret becomes in logs (GitLab's word).
pub const MASK: &[u8] = b"[MASKED]";

/// A partial line longer than this is written without waiting for its end.
pub const LINE_LIMIT: usize = 64 * 1024;

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

/// One run's logs: creates each job's log, and sends every job's lines to
/// the run's sink.
pub struct RunLogs {
    id: RunId,
    dir: PathBuf,
    events: Arc<dyn EventSink>,
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
    /// The logs of run `id` under `base` (its directory is created), every
    /// line also sent to `events`. `job_names` is the order `executor
    /// logs` lists the jobs in.
    pub fn create(
        base: &Path,
        id: RunId,
        job_names: &[&str],
        events: Arc<dyn EventSink>,
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
        Ok(Self { id, dir, events })
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
        Ok(JobLog {
            name: name.to_owned(),
            path,
            masks: masks(secrets),
            events: Arc::clone(&self.events),
            state: Mutex::new(State {
                file: Some(io::BufWriter::new(file)),
                pending: [Vec::new(), Vec::new()],
                error: None,
            }),
        })
    }
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
    /// The start of a line whose end has not come yet, on stdout and on
    /// stderr.
    pending: [Vec<u8>; 2],
    /// The first write error, reported by [`JobLog::finish`].
    error: Option<io::Error>,
}

/// One job's log: its file and its lines' events.
pub struct JobLog {
    name: String,
    path: PathBuf,
    masks: Vec<Vec<u8>>,
    events: Arc<dyn EventSink>,
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

    /// Takes a chunk of the job's standard output: [`JobLog::write_to`].
    pub fn write(&self, chunk: &[u8]) {
        self.write_to(Stream::Stdout, chunk);
    }

    /// Takes a chunk of the job's `stream` (stdout or stderr): its complete
    /// lines are masked and written, the rest waits for the end of its
    /// line.
    pub fn write_to(&self, stream: Stream, chunk: &[u8]) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = pending_slot(stream);
        state.pending[slot].extend_from_slice(chunk);
        if let Some(end) = state.pending[slot].iter().rposition(|&b| b == b'\n') {
            let lines: Vec<u8> = state.pending[slot].drain(..=end).collect();
            self.emit(&mut state, stream, &lines);
        }
        if state.pending[slot].len() > LINE_LIMIT {
            // Keep back what could be the start of a secret.
            let keep = self
                .masks
                .first()
                .map_or(0, |longest| longest.len().saturating_sub(1));
            let cut = state.pending[slot].len() - keep;
            let piece: Vec<u8> = state.pending[slot].drain(..cut).collect();
            self.emit(&mut state, stream, &piece);
        }
    }

    /// Writes a line of the runner's own (a job's status, say), masked
    /// like the job's output, after any partial lines the job left.
    pub fn line(&self, text: &str) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.flush_pending(&mut state, true);
        let mut all = text.as_bytes().to_vec();
        all.push(b'\n');
        self.emit(&mut state, Stream::Runner, &all);
    }

    /// Writes the partial lines left, if any, and closes the file; reports
    /// the first error writing the file met. Later lines are still sent
    /// as events.
    pub fn finish(&self) -> Result<()> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.flush_pending(&mut state, false);
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

    /// Writes the partial line of each stream, ended (with `end_line`, as
    /// a line of the runner's follows) or as it is.
    fn flush_pending(&self, state: &mut State, end_line: bool) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let mut rest = std::mem::take(&mut state.pending[pending_slot(stream)]);
            if !rest.is_empty() {
                if end_line {
                    rest.push(b'\n');
                }
                self.emit(state, stream, &rest);
            }
        }
    }

    /// Masks `text` (whole lines, or a piece that must go out now) and
    /// writes it to the file and, line by line, as events.
    fn emit(&self, state: &mut State, stream: Stream, text: &[u8]) {
        let masked = mask(text, &self.masks);
        if let Some(file) = &mut state.file
            && let Err(e) = file.write_all(&masked)
            && state.error.is_none()
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot write the job's log");
            state.error = Some(e);
        }
        for piece in masked.split_inclusive(|&b| b == b'\n') {
            let piece = piece.strip_suffix(b"\n").unwrap_or(piece);
            self.events.event(&RunEvent::Log {
                job: self.name.clone(),
                stream,
                line: String::from_utf8_lossy(piece).into_owned(),
            });
        }
    }
}

/// Where a stream's partial line waits (the runner's lines never wait).
fn pending_slot(stream: Stream) -> usize {
    match stream {
        Stream::Stdout | Stream::Runner => 0,
        Stream::Stderr => 1,
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

    /// The log events a run sent, as `JOB | LINE` lines.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<(String, Stream, String)>>>);

    impl EventSink for Captured {
        fn event(&self, event: &RunEvent) {
            if let RunEvent::Log { job, stream, line } = event {
                self.0
                    .lock()
                    .unwrap()
                    .push((job.clone(), *stream, line.clone()));
            }
        }
    }

    impl Captured {
        fn text(&self) -> String {
            let mut text = String::new();
            for (job, _, line) in self.0.lock().unwrap().iter() {
                let _ = writeln!(text, "{job} | {line}");
            }
            text
        }
    }

    fn run(base: &Path, names: &[&str]) -> (RunLogs, Captured) {
        let captured = Captured::default();
        let logs = RunLogs::create(
            base,
            RunId::at(1_700_000_000_123, 0xabc),
            names,
            Arc::new(captured.clone()),
        )
        .unwrap();
        (logs, captured)
    }

    #[test]
    fn jobs_are_listed_in_the_runs_order() {
        let base = tempfile::tempdir().unwrap();
        let (logs, _) = run(base.path(), &["zeta", "alpha", "mid"]);
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
        let (_logs, _) = run(base.path(), &["a"]);
        let ignore = fs::read_to_string(base.path().join(".executor/.gitignore")).unwrap();
        assert!(ignore.lines().any(|l| l == "*"), "{ignore}");
        // A .gitignore the user wrote there is theirs.
        fs::write(base.path().join(".executor/.gitignore"), "runs/\n").unwrap();
        let (_logs, _) = run(base.path(), &["a"]);
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
        let (logs, live) = run(base.path(), &["build", "test"]);
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
            "build | compiling\ntest | ok 1\nbuild | linking done\ntest | no newline at the end\n"
        );
    }

    #[test]
    fn each_stream_keeps_its_own_partial_line() {
        let base = tempfile::tempdir().unwrap();
        let (logs, live) = run(base.path(), &["b"]);
        let job = logs.job("b", &[]).unwrap();
        job.write_to(Stream::Stdout, b"half of ");
        job.write_to(Stream::Stderr, b"warning: x\n");
        job.write_to(Stream::Stdout, b"a line\n");
        job.line("job succeeded");
        job.finish().unwrap();
        let events = live.0.lock().unwrap().clone();
        let event = |stream, text: &str| ("b".to_owned(), stream, text.to_owned());
        assert_eq!(
            events,
            [
                event(Stream::Stderr, "warning: x"),
                event(Stream::Stdout, "half of a line"),
                event(Stream::Runner, "job succeeded"),
            ]
        );
    }

    #[test]
    fn secrets_are_masked_even_when_split_across_chunks() {
        let base = tempfile::tempdir().unwrap();
        let (logs, live) = run(base.path(), &["deploy"]);
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
        let (logs, _) = run(base.path(), &["j"]);
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
        let (logs, live) = run(base.path(), &refs);
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
                RunLogs::create(base.path(), id.clone(), &[], Arc::new(|_: &RunEvent| {})).unwrap();
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
