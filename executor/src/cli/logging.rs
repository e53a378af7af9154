//! The tracing subscriber: logs go to stderr, as text or JSON; `RUST_LOG`
//! overrides the level chosen with `-v`.

use tracing_subscriber::EnvFilter;

use super::{LogFormat, Verbosity};

/// Installs the global subscriber. Call once, from `main`.
pub fn init(verbosity: Verbosity, format: LogFormat) {
    let level = match verbosity {
        Verbosity::Trace => "trace",
        Verbosity::Debug => "debug",
        Verbosity::Info => "info",
        Verbosity::Warn => "warn",
        Verbosity::Error | Verbosity::Fatal | Verbosity::Panic => "error",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| executor::progress::Stderr)
        .with_target(false);
    let result = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.with_ansi(false).without_time().try_init(),
        LogFormat::Color => builder.with_ansi(true).without_time().try_init(),
    };
    // A second call (tests) keeps the first subscriber.
    let _ = result;
}
