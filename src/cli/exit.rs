//! Exit codes, and the one place a failure becomes one.
//!
//! - 0: success (for `score`: every file scored; for `healthcheck`: ready).
//! - 1: a runtime failure (for `score`: at least one file failed; for `healthcheck`: not
//!   ready).
//! - 2: a usage error (unknown flag, bad value in a flag or a `TAGGER_*` variable).

/// Exit code: everything worked.
pub const EXIT_OK: i32 = 0;
/// Exit code: a runtime failure, or some files failed to score.
pub const EXIT_FAILURE: i32 = 1;
/// Exit code: bad command line or configuration.
pub const EXIT_USAGE: i32 = 2;

/// Why a subcommand failed; decides the exit code.
#[derive(Debug)]
pub enum CliError {
    /// Bad flag or environment value: exit 2.
    Usage(String),
    /// Anything else: exit 1.
    Failure(String),
}

impl CliError {
    /// Says why on stderr and returns the exit code.
    pub fn report(self) -> i32 {
        let (message, code) = match self {
            CliError::Usage(message) => (message, EXIT_USAGE),
            CliError::Failure(message) => (message, EXIT_FAILURE),
        };
        eprintln!("tagger: {message}");
        code
    }
}

/// A bad parameter or model name is the user's to fix (exit 2); anything else is a failure.
impl From<crate::Error> for CliError {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::BadParameter { .. } | crate::Error::UnknownModel(_) => {
                CliError::Usage(e.to_string())
            }
            other => CliError::Failure(other.to_string()),
        }
    }
}

impl From<crate::score::Error> for CliError {
    fn from(e: crate::score::Error) -> Self {
        match e {
            crate::score::Error::Model(e) => e.into(),
            crate::score::Error::Output(message) => CliError::Failure(message),
        }
    }
}

/// `score`'s exit code: 1 when any file failed (each has its error record), else 0. A reader
/// that went away (`| head`) is not a failure.
pub fn score_code(ending: crate::score::Ending) -> i32 {
    match ending {
        crate::score::Ending::Complete { failed } if failed > 0 => EXIT_FAILURE,
        crate::score::Ending::Complete { .. } | crate::score::Ending::ReaderGone => EXIT_OK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_parameters_are_usage_errors_and_the_rest_failures() {
        let usage = CliError::from(crate::Error::bad_parameter("top_k", "9 is not in 1..=5"));
        assert!(matches!(usage, CliError::Usage(_)));
        let failure = CliError::from(crate::Error::Internal("engine".into()));
        assert!(matches!(failure, CliError::Failure(_)));
        let output = CliError::from(crate::score::Error::Output("disk full".into()));
        assert!(matches!(output, CliError::Failure(_)));
    }

    #[test]
    fn score_fails_when_a_file_failed() {
        use crate::score::Ending;
        assert_eq!(score_code(Ending::Complete { failed: 0 }), EXIT_OK);
        assert_eq!(score_code(Ending::Complete { failed: 2 }), EXIT_FAILURE);
        assert_eq!(score_code(Ending::ReaderGone), EXIT_OK);
    }
}
