//! `tagger serve`: the HTTP service.

use crate::cli::{CliError, ServeArgs};

/// Runs the server until SIGTERM/SIGINT; returns the exit code.
pub fn run(_args: ServeArgs) -> Result<i32, CliError> {
    Err(CliError::Failure("serve is not implemented yet".into()))
}
