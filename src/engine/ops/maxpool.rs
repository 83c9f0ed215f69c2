//! Max pooling on the plane loop of [`super::planes`]: `max` for the sum, -inf for the padding.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::planes::{run_planes, Reduce};
use super::{eval_f32, f32_output_facts, supported_taps, Geometry, Isa};

/// tract op: max pooling of an f32 CHW (`rank == 3`) or NCHW (`rank == 4`) tensor, the same
/// plane loop as [`FastDepthwise`] with `max` for the sum and -inf for the padding.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FastMaxPool {
    /// The pooling window (kernel, strides, padding) over each plane.
    pub geo: Geometry,
    /// 3 for CHW, 4 for NCHW.
    pub rank: usize,
}

impl FastMaxPool {
    /// The op for `geo` on a tensor of `rank` 3 (CHW, `geo.n == 1`) or 4 (NCHW).
    pub fn new(geo: Geometry, rank: usize) -> TractResult<FastMaxPool> {
        ensure!(geo.is_valid(), "invalid pooling geometry {geo:?}");
        ensure!(
            rank == 4 || (rank == 3 && geo.n == 1),
            "rank {rank} for {geo:?}"
        );
        ensure!(
            supported_taps(geo.taps()),
            "no kernel for {} taps",
            geo.taps()
        );
        Ok(FastMaxPool { geo, rank })
    }

    /// Input and output shapes.
    pub fn shapes(&self) -> (TVec<usize>, TVec<usize>) {
        self.geo.shapes(self.geo.c, self.rank)
    }
}

impl Op for FastMaxPool {
    fn name(&self) -> StaticName {
        "FastMaxPool".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let g = &self.geo;
        Ok(vec![format!(
            "c={} {}x{} stride {}x{} {}",
            g.c,
            g.kh,
            g.kw,
            g.sh,
            g.sw,
            g.describe_padding()
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for FastMaxPool {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let (input_shape, output_shape) = self.shapes();
        eval_f32("FastMaxPool", &x, &input_shape, &output_shape, |x, out| {
            let g = &self.geo;
            let plane = g.oh() * g.ow();
            let work = out.len() * g.taps();
            let isa = Isa::detect();
            tract_linalg::multithread::par_chunks_mut(out, plane, work, |first, chunk| {
                let planes = first..first + chunk.len() / plane;
                run_planes(Reduce::Max, g, x, &[], &[], None, isa, planes, chunk);
                Ok(())
            })
        })
    }
}

impl TypedOp for FastMaxPool {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let (input_shape, output_shape) = self.shapes();
        f32_output_facts(inputs, 1, &input_shape, &output_shape)
    }

    as_op!();
}

/// Max pooling of `x` (`n*c*h*w`, NCHW) into `out` (`n*c*oh*ow`); padding cells count as
/// -inf. Panics on wrong lengths, an invalid geometry or an unsupported tap count.
pub fn maxpool(g: &Geometry, x: &[f32], isa: Isa, out: &mut [f32]) {
    run_planes(Reduce::Max, g, x, &[], &[], None, isa, 0..g.n * g.c, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ops::testing::{random_geometry, reference_max, Rng};

    #[test]
    fn maxpool_matches_definition_on_random_shapes() {
        let mut rng = Rng::new(0x5151);
        for _ in 0..200 {
            let mut g = random_geometry(&mut rng);
            // Every window must see at least one input value.
            g.pad_top = g.pad_top.min(g.kh / 2);
            g.pad_left = g.pad_left.min(g.kw / 2);
            g.pad_bottom = g.pad_bottom.min(g.kh / 2);
            g.pad_right = g.pad_right.min(g.kw / 2);
            if !g.is_valid() {
                continue;
            }
            let x = rng.uniforms(-1.0, 1.0, g.n * g.c * g.h * g.w);
            let want = reference_max(&g, &x);
            for isa in Isa::available() {
                let mut got = vec![f32::NAN; want.len()];
                maxpool(&g, &x, isa, &mut got);
                assert_eq!(got, want, "{isa:?} {g:?}");
            }
        }
    }
}
