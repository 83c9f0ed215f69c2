//! [`TractEngine`]: an ONNX model loaded, rewritten onto our ops and optimised by tract.

use std::sync::Arc;

use tract_onnx::prelude::*;

use super::{onnx_read, rewrite, Engine, EngineOptions};
use crate::error::{Error, Result};

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
    /// [`TractEngine::load_with`] with our ops and `threads` cores per call.
    pub fn load(onnx: &[u8], shape: &[usize], threads: usize) -> Result<TractEngine> {
        let options = EngineOptions {
            threads,
            ..EngineOptions::default()
        };
        TractEngine::load_with(onnx, shape, &options)
    }

    /// Loads an ONNX model, fixes its input to `shape`, optimises it, and makes it runnable on
    /// `options.threads` cores per call (1: the calling thread only).
    ///
    /// With `options.rewrite`, convolutions run on [`super::ops::FastConv`] and
    /// [`super::ops::FastDepthwise`] (swapped in before tract optimises), max-pools on
    /// [`super::ops::FastMaxPool`], with a following ReLU / ReLU6 folded in (after tract's
    /// optimisation); see [`rewrite`].
    pub fn load_with(onnx: &[u8], shape: &[usize], options: &EngineOptions) -> Result<TractEngine> {
        let internal = |e: TractError| Error::Internal(format!("loading model: {e:#}"));
        let mut stages = Stages::start();
        let parsed = onnx_read::read(onnx).map_err(internal)?;
        stages.lap("parse");
        let parsed_weights = parsed.weights_in_place;
        let mut model = parsed
            .model
            .with_input_fact(0, f32::fact(shape).into())
            .map_err(internal)?
            .into_typed()
            .map_err(internal)?;
        stages.lap("type");
        if options.rewrite {
            let rewrite_options = rewrite::RewriteOptions {
                winograd: options.winograd,
            };
            let report =
                rewrite::rewrite_typed_with(&mut model, &rewrite_options).map_err(internal)?;
            log::debug!(
                "engine rewrite: {} dense ({} Winograd), {} depthwise, {} pads folded, left to tract {:?}",
                report.dense + report.winograd,
                report.winograd,
                report.depthwise,
                report.folded_pads,
                report.skipped
            );
        }
        stages.lap("rewrite");
        let mut model = model.into_optimized().map_err(internal)?;
        stages.lap("optimise");
        if options.rewrite {
            let report = rewrite::rewrite_optimized(&mut model).map_err(internal)?;
            log::debug!(
                "engine rewrite: {} activations fused, {} residual adds fused into Winograd, {} max-pools, {} conv+depthwise pairs fused ({} channels in lanes, {} with their projection, {} with its residual add), {} convolutions fused with a pool's sum",
                report.fused_clips,
                report.winograd_residuals,
                report.maxpools,
                report.fused_pairs + report.fused_lanes_pairs,
                report.fused_lanes_pairs,
                report.fused_projections,
                report.fused_residuals,
                report.pooled
            );
        }
        let run_options = RunOptions {
            executor: (options.threads > 1)
                .then(|| tract_linalg::multithread::Executor::multithread(options.threads)),
            ..Default::default()
        };
        let plan = model
            .into_runnable_with_options(&run_options)
            .map_err(internal)?;
        stages.lap("fuse + plan");
        log::debug!(
            "engine load {shape:?}: {stages} ({} weights read in place)",
            parsed_weights
        );
        Ok(TractEngine {
            plan,
            shape: shape.to_vec(),
        })
    }
}

/// Wall and CPU time of each loading stage, for the debug log (where start-up time goes). The
/// CPU time is the loading thread's own: on a shared machine the wall time also counts the
/// time other processes held the core.
struct Stages {
    last: (std::time::Instant, std::time::Duration),
    laps: Vec<(&'static str, std::time::Duration, std::time::Duration)>,
}

impl Stages {
    fn start() -> Stages {
        Stages {
            last: (std::time::Instant::now(), thread_cpu_time()),
            laps: vec![],
        }
    }

    fn lap(&mut self, name: &'static str) {
        let now = (std::time::Instant::now(), thread_cpu_time());
        self.laps
            .push((name, now.0 - self.last.0, now.1.saturating_sub(self.last.1)));
        self.last = now;
    }
}

impl std::fmt::Display for Stages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, wall, cpu)) in self.laps.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            let ms = |d: &std::time::Duration| d.as_secs_f64() * 1e3;
            write!(f, "{sep}{name} {:.1} ms (cpu {:.1})", ms(wall), ms(cpu))?;
        }
        Ok(())
    }
}

/// CPU time the calling thread has used (zero where unknown); the benchmarks time with it too.
pub fn thread_cpu_time() -> std::time::Duration {
    #[cfg(unix)]
    {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // Safety: clock_gettime writes one timespec, which `t` is.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } == 0 {
            return std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32);
        }
    }
    std::time::Duration::ZERO
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
