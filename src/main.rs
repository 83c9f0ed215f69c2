//! The `tagger` binary: the command-line layer ([`tagger::cli`]) parses, runs and decides the
//! exit code.

fn main() {
    std::process::exit(tagger::cli::main());
}
