//! The binary under test as a child process, with a clean environment.

use std::process::{Command, Output};

/// `tagger` with no `TAGGER_*` variable inherited from the caller's environment, so that a
/// developer's shell or CI settings cannot change what a test sees.
pub fn tagger() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tagger"));
    for (key, _) in std::env::vars() {
        if key.starts_with("TAGGER_") {
            command.env_remove(key);
        }
    }
    command
}

/// Runs `tagger ARGS` to completion.
pub fn run(args: &[&str]) -> Output {
    tagger().args(args).output().expect("running tagger")
}

/// The child's stdout, which must be UTF-8.
pub fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8")
}

/// The child's stderr, lossily.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
