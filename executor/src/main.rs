//! The `executor` binary: parses arguments, installs logging, runs the
//! library, prints the error chain and maps the outcome to an exit status.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    // Before any thread starts: every mount this process makes (overlay
    // roots of RUN steps) lives in its own mount namespace and vanishes with
    // it, however it ends. Where namespaces are not allowed (a restricted
    // pod), builds without RUN still work; RUN says what is missing.
    let private_mounts = executor::sandbox::enter_private_mount_namespace();
    let args = cli::parse();
    cli::init_logging(args.verbosity, args.log_format);
    if let Err(e) = private_mounts {
        tracing::debug!("no private mount namespace: {e}");
    }
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            let error: &(dyn std::error::Error + 'static) = err.as_ref();
            let mut messages = executor::error_chain::messages(error).into_iter();
            eprintln!("error: {}", messages.next().unwrap_or_default());
            for cause in messages {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
