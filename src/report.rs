//! `tagger models`: what the binary carries.

use crate::cli::{CliError, ModelsArgs};

/// Prints the embedded models.
pub fn models_command(_args: ModelsArgs) -> Result<i32, CliError> {
    Err(CliError::Failure("models is not implemented yet".into()))
}
