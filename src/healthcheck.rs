//! `tagger healthcheck`: the container HEALTHCHECK (scratch images have no curl).

use crate::cli::{CliError, HealthcheckArgs};

/// Probes the server; exit 0 when it answers 200.
pub fn run(_args: HealthcheckArgs) -> Result<i32, CliError> {
    Err(CliError::Failure(
        "healthcheck is not implemented yet".into(),
    ))
}
