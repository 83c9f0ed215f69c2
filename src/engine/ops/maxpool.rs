//! Max pooling on the plane loop of [`super::planes`]: `max` for the sum, -inf for the padding;
//! on AVX-512 a 3x3 window at stride 2 (ResNet's) runs straight from the input rows
//! ([`super::x86::maxpool`]).

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
                pool_planes(g, x, isa, planes, chunk);
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
    pool_planes(g, x, isa, 0..g.n * g.c, out)
}

/// Planes `planes` of `x` pooled into `out` (those planes' outputs).
fn pool_planes(g: &Geometry, x: &[f32], isa: Isa, planes: std::ops::Range<usize>, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && super::x86::maxpool::fits(g) {
        assert!(g.is_valid());
        assert_eq!(x.len(), g.n * g.c * g.h * g.w);
        let (plane_in, plane_out) = (g.h * g.w, g.oh() * g.ow());
        assert!(planes.end <= g.n * g.c && out.len() == planes.len() * plane_out);
        let mut row = vec![0f32; super::x86::maxpool::row_len(g.w)];
        for (p, out) in planes.zip(out.chunks_exact_mut(plane_out)) {
            // Safety: AVX-512F detected for this `Isa`; `g` fits; the slices are a plane each.
            unsafe {
                super::x86::maxpool::pool3s2_avx512(
                    g,
                    &x[p * plane_in..][..plane_in],
                    &mut row,
                    out,
                )
            };
        }
        return;
    }
    run_planes(Reduce::Max, g, x, &[], &[], None, isa, planes, out)
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

    /// The 3x3 stride-2 windows (AVX-512 reads them straight from the rows): ResNet's stem
    /// plane and odd, narrow and wide ones (past one vector of outputs), every padding of 0 or 1
    /// on each side, on every ISA.
    #[test]
    fn stride_two_windows_match_definition() {
        let mut rng = Rng::new(0x3a3a);
        for (h, w) in [(112, 112), (7, 9), (3, 3), (4, 70), (35, 33), (9, 4)] {
            for pads in 0..16 {
                let bit = |i: usize| (pads >> i) & 1;
                let g = Geometry {
                    pad_top: bit(0),
                    pad_left: bit(1),
                    pad_bottom: bit(2),
                    pad_right: bit(3),
                    ..Geometry::square(2, 3, h, w, 3, 2, 0)
                };
                if !g.is_valid() {
                    continue;
                }
                let x = rng.uniforms(-1.0, 1.0, g.n * g.c * h * w);
                let want = reference_max(&g, &x);
                for isa in Isa::available() {
                    let mut got = vec![f32::NAN; want.len()];
                    maxpool(&g, &x, isa, &mut got);
                    assert_eq!(got, want, "{isa:?} {g:?}");
                }
            }
        }
    }
}
