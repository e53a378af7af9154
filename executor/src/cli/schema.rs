//! `executor schema`: prints the JSON Schema of `pipeline.yaml`, for
//! editors (`# yaml-language-server: $schema=...`) and other tools.

use std::io::Write as _;
use std::process::ExitCode;

pub fn run() -> anyhow::Result<ExitCode> {
    match std::io::stdout()
        .lock()
        .write_all(pipeline_schema::json_schema().as_bytes())
    {
        // `executor schema | head` is not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}
