//! The `tagger` binary: parse the command line, run, exit with the documented code.

use argh::FromArgs;
use tagger::cli::{self, Args};

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let command = argv
        .first()
        .map_or("tagger", |s| s.rsplit('/').next().unwrap_or(s));
    let rest: Vec<&str> = argv.iter().skip(1).map(String::as_str).collect();
    let args = match Args::from_args(&[command], &rest) {
        Ok(args) => args,
        Err(early) => {
            // `--help` is a success; anything else argh refused is a usage error.
            let code = match early.status {
                Ok(()) => {
                    println!("{}", early.output);
                    cli::EXIT_OK
                }
                Err(()) => {
                    eprintln!("{}\nRun `{command} --help` for usage.", early.output);
                    cli::EXIT_USAGE
                }
            };
            std::process::exit(code);
        }
    };
    std::process::exit(cli::run(args));
}
