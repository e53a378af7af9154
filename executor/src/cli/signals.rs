//! The signals that stop a command (SIGINT, SIGTERM), for the commands
//! that clean up before they exit (`build`, `run`).

use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGINT and SIGTERM, listened to from when this is made.
pub struct StopSignals {
    int: Signal,
    term: Signal,
}

impl StopSignals {
    /// Listens to both; `None` when a handler cannot be installed.
    pub fn new() -> Option<Self> {
        Some(Self {
            int: signal(SignalKind::interrupt()).ok()?,
            term: signal(SignalKind::terminate()).ok()?,
        })
    }

    /// Waits for the next of them; returns its name.
    pub async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}
