//! The inference engine behind a small trait, so the server, the CLI and post-processing can be
//! tested with fake models, and so tract stays out of everything else.
//!
//! - [`tract`]: [`TractEngine`], a tract plan optimised once for a fixed input shape;
//! - [`onnx_read`]: ONNX bytes into tract's model, copying the large weights once;
//! - [`rewrite`]: the graph passes that swap tract's convolutions and max-pools for ours;
//! - [`ops`]: our tract ops (dense and depthwise convolution, max-pool) and their kernels;
//! - [`memory`]: giving the loader's transient memory back to the kernel.

pub mod memory;
pub mod onnx_read;
pub mod ops;
pub mod rewrite;
pub mod tract;

pub use tract::TractEngine;

use crate::error::Result;

/// Runs one model on one input tensor.
pub trait Engine: Send + Sync {
    /// Runs the model on `input` (row-major, shape `shape`) and returns its first output,
    /// flattened.
    fn run(&self, shape: &[usize], input: Vec<f32>) -> Result<Vec<f32>>;
}

/// How [`TractEngine::load_with`] builds a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineOptions {
    /// Cores one inference may use (tract intra-op threads); 1 runs on the caller's thread.
    pub threads: usize,
    /// Run convolutions and max-pools on our ops ([`rewrite`]); `false` keeps tract's graph
    /// untouched (for comparisons).
    pub rewrite: bool,
    /// With `rewrite`, run the 3x3 stride-1 convolutions that gain from it by Winograd's
    /// algorithm ([`ops::FastWinograd`]); `false` keeps them on the direct [`ops::FastConv`]
    /// (for comparisons).
    pub winograd: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            threads: 1,
            rewrite: true,
            winograd: true,
        }
    }
}
