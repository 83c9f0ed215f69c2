//! tagger: automatic ImageNet tags for photos and hand-drawn digit reading, with every model
//! embedded in the binary and every answer equal to the Python reference pipeline.
//!
//! The library exports the core: [`pipeline::classify`] and [`pipeline::read_digit`] over
//! [`models::Models`], and the stages they run ([`image`], [`preprocess`], [`digits`],
//! [`engine`]); none of it knows HTTP, folders or the command line. The front-ends (one per
//! subcommand) and the command-line layer are crate-private: the binary reaches them through
//! [`cli::main`] alone. README, "Development", draws the layers.

// The core.
pub mod digits;
pub mod engine;
pub mod error;
pub mod image;
pub mod model_files;
pub mod models;
pub mod pipeline;
pub mod preprocess;

// Front-ends, one per subcommand: each takes a plain Config built by the command-line layer.
mod bench;
mod catalog;
mod healthcheck;
mod score;
mod server;

// The command-line layer: the binary's only way in.
pub mod cli;

/// The test suite's one seeded random generator, shared with the integration tests.
#[cfg(test)]
#[path = "../tests/common/rng.rs"]
pub(crate) mod test_rng;

pub use error::{Error, Result};
pub use models::{LoadOptions, ModelName, Models};
pub use pipeline::{classify, read_digit, ClassifyOptions};
