//! Progress bars for blob transfers when stderr is a terminal, and the
//! stderr writer logs go through so their lines print above the bars instead
//! of through them. Off unless [`enable`] is called (the command line does,
//! for text logs); without it every function here is a no-op.

use std::io::{self, IsTerminal as _, Write};
use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

static BARS: OnceLock<MultiProgress> = OnceLock::new();

/// Turns bars on if stderr is a terminal.
pub fn enable() {
    if io::stderr().is_terminal() {
        BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
    }
}

/// A byte-count bar labelled `label` (e.g. `pull sha256:1a2b3c4d5e6f`), or
/// `None` when bars are off. Clear it with `finish_and_clear` when done.
#[must_use]
pub fn bar(label: String, total: u64) -> Option<ProgressBar> {
    let bars = BARS.get()?;
    let style = ProgressStyle::with_template(
        "{msg:>24} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let bar = bars.add(
        ProgressBar::new(total)
            .with_style(style)
            .with_message(label),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    Some(bar)
}

/// The label of a blob's bar: the action and a short digest.
#[must_use]
pub fn blob_label(action: &str, digest: &str) -> String {
    let short: String = digest.chars().take(7 + 12).collect();
    format!("{action} {short}")
}

/// Stderr for log lines: with bars on, each write is printed above them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match BARS.get() {
            Some(bars) => bars.suspend(|| io::stderr().write_all(buf).map(|()| buf.len())),
            None => io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}
