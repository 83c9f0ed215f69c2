//! A small-plane 1x1 convolution summed over its plane: EfficientNet-Lite0's head convolution
//! (320 -> 1280 on 7x7, ReLU6) and the sum of the global average pool after it, as one op.
//!
//! Apart, the convolution transposed its 1280 x 49 sums into channel planes for tract's
//! `Reduce<Sum>` to read back; here each tile of channels is summed over the pixels where the
//! channels-in-lanes kernel leaves it (pixel-major, one vector add per pixel), and the 1280
//! sums are the op's output. The division by the pixel count stays tract's.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::conv::{dense, pointwise_small_fits, FastConv, CHUNK_PIXELS};
use super::{eval_f32, f32_output_facts, Isa};

/// tract op: a [`FastConv`] (1x1, channels-in-lanes weights) whose output is summed over its
/// plane: input `[n, cin, h, w]`, output `[n, cout, 1, 1]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PooledConv {
    /// The convolution, its clamp included.
    pub conv: FastConv,
}

impl PooledConv {
    /// The op, if `conv` is a 1x1 NCHW convolution on a plane the channels-in-lanes kernel
    /// sums in one chunk, holding its weights in that kernel's layout (AVX-512).
    pub fn new(conv: FastConv) -> Option<PooledConv> {
        let g = &conv.geo;
        let fits = conv.rank == 4
            && pointwise_small_fits(g)
            && g.h * g.w <= CHUNK_PIXELS
            && conv.lanes_weights().is_some();
        fits.then_some(PooledConv { conv })
    }

    /// Input and output shapes.
    pub fn shapes(&self) -> (TVec<usize>, TVec<usize>) {
        let (input, _) = self.conv.shapes();
        (input, tvec!(self.conv.geo.n, self.conv.cout, 1, 1))
    }
}

impl Op for PooledConv {
    fn name(&self) -> StaticName {
        "PooledConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let mut info = self.conv.info()?;
        info.push("summed over the plane".into());
        Ok(info)
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for PooledConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let (input_shape, output_shape) = self.shapes();
        eval_f32("PooledConv", &x, &input_shape, &output_shape, |x, out| {
            pooled(self, x, Isa::detect(), out)
        })
    }
}

impl TypedOp for PooledConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let (input_shape, output_shape) = self.shapes();
        f32_output_facts(inputs, 1, &input_shape, &output_shape)
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        self.conv.cost(inputs)
    }

    as_op!();
}

/// The convolution of `x` (`n * cin * h * w`) summed over each output plane into `out` (`n *
/// cout`): on AVX-512 straight from the kernel's pixel-major sums, elsewhere the convolution's
/// planes summed.
pub fn pooled(op: &PooledConv, x: &[f32], isa: Isa, out: &mut [f32]) -> TractResult<()> {
    let g = &op.conv.geo;
    let (p, k, cout) = (g.h * g.w, g.c, op.conv.cout);
    assert_eq!(x.len(), g.n * k * p);
    assert_eq!(out.len(), g.n * cout);
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        for n in 0..g.n {
            super::conv::pointwise_lanes(
                &op.conv,
                &x[n * k * p..][..k * p],
                super::x86::conv::Input::Planes { channel_stride: p },
                super::conv::Store::PixelSums,
                &mut out[n * cout..][..cout],
            )?;
        }
        return Ok(());
    }
    let mut planes = vec![0f32; g.n * cout * p];
    dense(&op.conv, x, isa, &mut planes);
    for (sum, plane) in out.iter_mut().zip(planes.chunks_exact(p)) {
        *sum = plane.iter().sum();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ops::testing::{pointwise_reference, Rng};
    use crate::engine::ops::{Clip, Geometry};

    /// Against the definition (the 1x1 convolution, then each plane summed), on every
    /// instruction set: partial tiles and half-empty vectors, several input passes, a batch
    /// of two, a clamp or none.
    #[test]
    fn pooled_conv_matches_definition() {
        if Isa::detect() != Isa::Avx512 {
            // Only AVX-512 holds the channels-in-lanes weights the op needs.
            let g = Geometry::pointwise(1, 8, 7, 7);
            let conv = FastConv::new(g, 8, 4, &[0.1; 64], &[0.0; 8]).unwrap();
            assert!(PooledConv::new(conv).is_none());
            return;
        }
        let mut rng = Rng::new(0x900_1ed);
        for (n, cin, cout, h, w) in [
            (1, 320, 1280, 7, 7),
            (2, 45, 70, 5, 9),
            (1, 300, 17, 16, 16),
            (1, 3, 40, 1, 1),
        ] {
            let g = Geometry::pointwise(n, cin, h, w);
            let x = rng.uniforms(-1.0, 1.0, n * cin * h * w);
            let wts = rng.uniforms(-0.2, 0.2, cout * cin);
            let bias = rng.uniforms(-1.0, 1.0, cout);
            for clip in [None, Some(Clip::new(0.0, 0.5))] {
                let mut conv = FastConv::new(g, cout, 4, &wts, &bias).unwrap();
                conv.clip = clip;
                let planes = pointwise_reference(&g, cout, &x, &wts, &bias, clip);
                let want: Vec<f32> = planes.chunks_exact(h * w).map(|p| p.iter().sum()).collect();
                let op = PooledConv::new(conv).expect("a small plane on AVX-512");
                for isa in Isa::available() {
                    let mut got = vec![f32::NAN; want.len()];
                    pooled(&op, &x, isa, &mut got).unwrap();
                    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (a - b).abs() <= 2e-5 * b.abs().max(1.0) * (h * w) as f32,
                            "{isa:?} {g:?} -> {cout} {clip:?} at {i}: {a} vs {b}"
                        );
                    }
                }
            }
        }
        // A plane past one chunk of pixels is left to the convolution and tract's sum.
        let big = Geometry::pointwise(1, 4, 17, 17);
        let conv = FastConv::new(big, 4, 4, &[0.1; 16], &[0.0; 4]).unwrap();
        assert!(PooledConv::new(conv).is_none());
    }
}
