//! The command line: the only layer that knows argh, `TAGGER_*` variables and exit codes.
//!
//! - [`args`]: every subcommand's flags (argh structs), documented in `--help`.
//! - [`config`]: flags, else `TAGGER_*` variables, else defaults, into each front-end's plain
//!   `Config` (`score::Config`, `healthcheck::Config`, ...).
//! - [`settings`]: that fallback for one option, and the parsers it shares.
//! - [`exit`]: exit codes and [`CliError`]; the one place a result becomes a code.
//!
//! [`main`] parses the command line, resolves the subcommand's `Config`, runs its front-end
//! and returns the exit code.

mod args;
mod config;
mod exit;
mod settings;

use argh::FromArgs;

pub use args::{Args, BenchArgs, Command, HealthcheckArgs, ModelsArgs, ScoreArgs, ServeArgs};
pub use exit::{CliError, EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
// `serve` still resolves its own flags (server::Config::from_args) with these.
pub use settings::{available_cores, optional_setting, setting};

/// Runs the process's command line; returns the exit code.
pub fn main() -> i32 {
    let argv: Vec<String> = std::env::args().collect();
    let command = argv
        .first()
        .map_or("tagger", |s| s.rsplit('/').next().unwrap_or(s));
    let rest: Vec<&str> = argv.iter().skip(1).map(String::as_str).collect();
    match Args::from_args(&[command], &rest) {
        Ok(args) => run(args),
        // `--help` is a success; anything else argh refused is a usage error.
        Err(early) => match early.status {
            Ok(()) => {
                println!("{}", early.output);
                EXIT_OK
            }
            Err(()) => {
                eprintln!("{}\nRun `{command} --help` for usage.", early.output);
                EXIT_USAGE
            }
        },
    }
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(args: Args) -> i32 {
    init_logging();
    dispatch(args.command).unwrap_or_else(CliError::report)
}

fn dispatch(command: Command) -> Result<i32, CliError> {
    match command {
        Command::Serve(args) => crate::server::Config::from_args(args).and_then(crate::server::run),
        Command::Score(args) => Ok(exit::score_code(crate::score::run(args.resolve()?)?)),
        Command::Healthcheck(args) => match crate::healthcheck::run(&args.resolve()?) {
            Ok(()) => Ok(EXIT_OK),
            Err(unhealthy) => {
                eprintln!("tagger healthcheck: {unhealthy}");
                Ok(EXIT_FAILURE)
            }
        },
        Command::Models(args) => {
            crate::catalog::run(&args.resolve()?)?;
            Ok(EXIT_OK)
        }
        Command::Bench(args) => {
            crate::bench::run(&args.resolve()?)?;
            Ok(EXIT_OK)
        }
    }
}

/// Logs to stderr at the level in `TAGGER_LOG`, else `RUST_LOG`, else `info`.
fn init_logging() {
    let spec = std::env::var("TAGGER_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_string());
    let mut builder = env_logger::Builder::new();
    // A second initialisation (tests calling `run` twice) is harmless.
    let _ = builder
        .parse_filters(&spec)
        .format_timestamp_millis()
        .try_init();
}
