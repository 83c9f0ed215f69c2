//! `tagger bench`: per-stage timings.

use crate::cli::{BenchArgs, CliError};

/// Runs the benchmark and prints the figures.
pub fn run(_args: BenchArgs) -> Result<i32, CliError> {
    Err(CliError::Failure("bench is not implemented yet".into()))
}
