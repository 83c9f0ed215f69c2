//! The inference engine behind a small trait, so the server, the CLI and post-processing can be
//! tested with fake models, and so tract stays out of everything else.

use std::sync::Arc;

use tract_onnx::prelude::*;

use crate::error::{Error, Result};

/// Runs one model on one input tensor.
pub trait Engine: Send + Sync {
    /// Runs the model on `input` (row-major, shape `shape`) and returns its first output,
    /// flattened.
    fn run(&self, shape: &[usize], input: Vec<f32>) -> Result<Vec<f32>>;
}

type Plan = Arc<TypedRunnableModel>;

/// A tract plan optimised once for a fixed input shape.
///
/// `run` takes `&self` and keeps no state between calls, so one plan serves every worker
/// thread at once: each call gets its own activations, which is how throughput comes from
/// requests running side by side.
pub struct TractEngine {
    plan: Plan,
    shape: Vec<usize>,
}

impl TractEngine {
    /// Loads an ONNX model, fixes its input to `shape`, optimises it, and makes it runnable on
    /// `threads` cores per call (1: the calling thread only).
    ///
    /// Dense convolutions run on [`crate::depthwise::dense::FastConv`] (swapped in before tract
    /// optimises), and after tract's optimisation the depthwise convolutions and max-pools it
    /// supports run on [`crate::depthwise::FastDepthwise`] / [`crate::depthwise::FastMaxPool`],
    /// with a following ReLU / ReLU6 folded in; set `TAGGER_ENGINE_REWRITE=0` to keep tract's
    /// graph untouched (for comparisons).
    pub fn load(onnx: &[u8], shape: &[usize], threads: usize) -> Result<TractEngine> {
        let internal = |e: TractError| Error::Internal(format!("loading model: {e:#}"));
        let rewrite = std::env::var("TAGGER_ENGINE_REWRITE").as_deref() != Ok("0");
        let mut model = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(onnx))
            .map_err(internal)?
            .with_input_fact(0, f32::fact(shape).into())
            .map_err(internal)?
            .into_typed()
            .map_err(internal)?;
        if rewrite {
            // Before tract lowers convolutions to im2col / einsum + matmul.
            let dense = crate::depthwise::dense::rewrite_dense(&mut model).map_err(internal)?;
            log::debug!(
                "dense rewrite: {} replaced, left to tract {:?}",
                dense.replaced,
                dense.skipped
            );
        }
        let mut model = model.into_optimized().map_err(internal)?;
        if rewrite {
            let report = crate::depthwise::rewrite(&mut model).map_err(internal)?;
            log::debug!(
                "depthwise rewrite: {} replaced, {} activations fused, {} max-pools, left to tract {:?}",
                report.replaced,
                report.fused_clips,
                report.maxpools,
                report.skipped
            );
        }
        let options = RunOptions {
            executor: (threads > 1)
                .then(|| tract_linalg::multithread::Executor::multithread(threads)),
            ..Default::default()
        };
        let plan = model
            .into_runnable_with_options(&options)
            .map_err(internal)?;
        Ok(TractEngine {
            plan,
            shape: shape.to_vec(),
        })
    }
}

impl Engine for TractEngine {
    fn run(&self, shape: &[usize], input: Vec<f32>) -> Result<Vec<f32>> {
        if shape != self.shape.as_slice() {
            return Err(Error::Internal(format!(
                "input shape {shape:?} does not match the plan's {:?}",
                self.shape
            )));
        }
        let internal = |e: TractError| Error::Internal(format!("inference: {e:#}"));
        let tensor = Tensor::from_shape(shape, &input).map_err(internal)?;
        let outputs = self.plan.run(tvec!(tensor.into())).map_err(internal)?;
        let output = outputs[0].to_plain_array_view::<f32>().map_err(internal)?;
        Ok(output.iter().copied().collect())
    }
}
