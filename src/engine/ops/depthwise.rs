//! Depthwise convolution: one spatial 2-D convolution per channel, on the plane loop of
//! [`super::planes`] (any kernel with 9 or 25 taps, any stride, explicit padding), with a
//! following ReLU / ReLU6 fused as a clamp.
//!
//! Per (batch, channel) plane: copy the plane into zero-padded phase planes, compute
//! `out = bias + sum_t w_t * src_t[o]` over runs of outputs (each tap a pointer into one phase
//! plane), clamp and store.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::planes::depthwise_planes;
use super::{describe_clip, eval_f32, f32_output_facts, supported_taps, Clip, Geometry, Isa};

/// tract op: depthwise convolution of an f32 CHW (`rank == 3`) or NCHW (`rank == 4`) tensor.
///
/// Inputs: data, kernel (`C * kh * kw` values, channel-major, row-major taps), bias (`C`
/// values); any shapes with those volumes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FastDepthwise {
    /// The convolution.
    pub geo: Geometry,
    /// 3 for CHW, 4 for NCHW.
    pub rank: usize,
    /// A clamp fused from a following ReLU6.
    pub clip: Option<Clip>,
}

impl FastDepthwise {
    /// The op for `geo` on a tensor of `rank` 3 (CHW, `geo.n == 1`) or 4 (NCHW).
    pub fn new(geo: Geometry, rank: usize, clip: Option<Clip>) -> TractResult<FastDepthwise> {
        ensure!(geo.is_valid(), "invalid depthwise geometry {geo:?}");
        ensure!(
            rank == 4 || (rank == 3 && geo.n == 1),
            "rank {rank} for {geo:?}"
        );
        ensure!(
            supported_taps(geo.taps()),
            "no kernel for {} taps",
            geo.taps()
        );
        Ok(FastDepthwise { geo, rank, clip })
    }

    /// Input and output shapes.
    pub fn shapes(&self) -> (TVec<usize>, TVec<usize>) {
        self.geo.shapes(self.geo.c, self.rank)
    }

    /// The input shape.
    pub fn input_shape(&self) -> TVec<usize> {
        self.shapes().0
    }

    /// The output shape.
    pub fn output_shape(&self) -> TVec<usize> {
        self.shapes().1
    }
}

impl Op for FastDepthwise {
    fn name(&self) -> StaticName {
        "FastDepthwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let g = &self.geo;
        Ok(vec![format!(
            "c={} {}x{} stride {}x{} {}{}",
            g.c,
            g.kh,
            g.kw,
            g.sh,
            g.sw,
            g.describe_padding(),
            describe_clip(self.clip)
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for FastDepthwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x, kernel, bias) = args_3!(inputs);
        let g = &self.geo;
        let kernel = kernel.cast_to::<f32>()?;
        let kernel = kernel.try_as_plain_ram()?.as_slice::<f32>()?;
        let bias = bias.cast_to::<f32>()?;
        let bias = bias.try_as_plain_ram()?.as_slice::<f32>()?;
        ensure!(kernel.len() == g.c * g.taps() && bias.len() == g.c);
        let (input_shape, output_shape) = (self.input_shape(), self.output_shape());
        eval_f32(
            "FastDepthwise",
            &x,
            &input_shape,
            &output_shape,
            |x, out| depthwise_threaded(g, x, kernel, bias, self.clip, Isa::detect(), out),
        )
    }
}

impl TypedOp for FastDepthwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let (input_shape, output_shape) = self.shapes();
        f32_output_facts(inputs, 3, &input_shape, &output_shape)
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let g = &self.geo;
        let fma = g.n * g.c * g.oh() * g.ow() * g.taps();
        Ok(tvec!((Cost::FMA(f32::datum_type()), fma.into())))
    }

    as_op!();
}

/// [`depthwise`] over the planes, split across tract's current executor (several threads only
/// when the plan runs with a multithreaded executor and the work is large enough).
fn depthwise_threaded(
    g: &Geometry,
    x: &[f32],
    kernel: &[f32],
    bias: &[f32],
    clip: Option<Clip>,
    isa: Isa,
    out: &mut [f32],
) -> TractResult<()> {
    let plane = g.oh() * g.ow();
    let total = out.len();
    let fma = total * g.taps();
    tract_linalg::multithread::par_chunks_mut(out, plane, fma, |first, chunk| {
        let planes = first..first + chunk.len() / plane;
        depthwise_planes(g, x, kernel, bias, clip, isa, planes, chunk);
        Ok(())
    })
}

/// Depthwise convolution of `x` (`n*c*h*w`, NCHW) into `out` (`n*c*oh*ow`).
///
/// `kernel` holds `c * kh * kw` values, `bias` `c`. Panics on wrong lengths, an invalid
/// geometry or an unsupported tap count.
pub fn depthwise(
    g: &Geometry,
    x: &[f32],
    kernel: &[f32],
    bias: &[f32],
    clip: Option<Clip>,
    isa: Isa,
    out: &mut [f32],
) {
    let planes = 0..g.n * g.c;
    depthwise_planes(g, x, kernel, bias, clip, isa, planes, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ops::testing::{close, random_geometry, reference, Rng};

    #[test]
    fn kernel_matches_definition_on_random_shapes() {
        let mut rng = Rng::new(0x9e3779b97f4a7c15);
        for case in 0..300 {
            let mut g = random_geometry(&mut rng);
            if case % 7 == 0 {
                g.sw = 3; // strides past two take the scalar phase copy
            }
            let x = rng.uniforms(-1.0, 1.0, g.n * g.c * g.h * g.w);
            let k = rng.uniforms(-1.0, 1.0, g.c * g.taps());
            let b = rng.uniforms(-1.0, 1.0, g.c);
            let clip = (case % 3 == 0).then(|| Clip::new(0.0, 0.5));
            let want = reference(&g, &x, &k, &b, clip);
            for isa in Isa::available() {
                let mut got = vec![f32::NAN; want.len()];
                depthwise(&g, &x, &k, &b, clip, isa, &mut got);
                close(&got, &want).unwrap_or_else(|e| panic!("{isa:?} {g:?} {clip:?}: {e}"));
            }
        }
    }

    #[test]
    fn kernel_matches_definition_on_lite0_layers() {
        let mut rng = Rng::new(42);
        // (c, size, k, stride, pad before, pad after) of every EfficientNet-Lite0 depthwise layer.
        let layers = [
            (32, 112, 3, 1, 1, 1),
            (96, 112, 3, 2, 0, 1),
            (144, 56, 3, 1, 1, 1),
            (144, 56, 5, 2, 1, 2),
            (240, 28, 5, 1, 2, 2),
            (240, 28, 3, 2, 0, 1),
            (480, 14, 3, 1, 1, 1),
            (480, 14, 5, 1, 2, 2),
            (672, 14, 5, 2, 1, 2),
            (1152, 7, 5, 1, 2, 2),
            (1152, 7, 3, 1, 1, 1),
        ];
        for (c, size, k, s, before, after) in layers {
            let g = Geometry::square(1, c, size, size, k, s, before).with_pad_after(after);
            let x = rng.uniforms(-1.0, 1.0, g.c * g.h * g.w);
            let kernel = rng.uniforms(-1.0, 1.0, g.c * g.taps());
            let b = rng.uniforms(-1.0, 1.0, g.c);
            let want = reference(&g, &x, &kernel, &b, None);
            for isa in Isa::available() {
                let mut got = vec![f32::NAN; want.len()];
                depthwise(&g, &x, &kernel, &b, None, isa, &mut got);
                close(&got, &want).unwrap_or_else(|e| panic!("{isa:?} {g:?}: {e}"));
            }
        }
    }
}
