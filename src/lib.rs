//! tagger: automatic ImageNet tags for photos and hand-drawn digit reading, with every model
//! embedded in the binary and every answer equal to the Python reference pipeline.
//!
//! The library is what the `tagger` binary's `serve` and `score` commands call:
//! [`pipeline::classify`] and [`pipeline::read_digit`] over [`models::Models`]. The engine
//! ([`engine`]) knows nothing of HTTP or folders.

pub mod bench;
pub mod catalog;
pub mod cli;
pub mod digits;
pub mod engine;
pub mod error;
pub mod healthcheck;
pub mod image;
pub mod model_files;
pub mod models;
pub mod pipeline;
pub mod preprocess;
pub mod score;
pub mod server;

pub use error::{Error, Result};
pub use models::{LoadOptions, ModelName, Models};
pub use pipeline::{classify, read_digit, ClassifyOptions};
