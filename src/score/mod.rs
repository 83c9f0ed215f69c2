//! `tagger score`: batch scoring of files and folders.

use crate::cli::{CliError, ScoreArgs};

/// Scores every image under the given paths; returns the exit code.
pub fn run(_args: ScoreArgs) -> Result<i32, CliError> {
    Err(CliError::Failure("score is not implemented yet".into()))
}
