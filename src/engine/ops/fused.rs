//! A 1x1 convolution and the depthwise convolution that is its only consumer, as one op (the
//! expansion and the depthwise step of an inverted-residual block on a large plane).
//!
//! Run apart, the expansion writes its whole output (96 planes of 112x112 in
//! EfficientNet-Lite0's second block: 4.8 MB, far past L2) and the depthwise step reads it back
//! from memory. Here the expansion runs one weight block ([`MR`] channels) at a time into a
//! buffer that stays in L2, and the depthwise step consumes those planes at once; the
//! expansion's output never exists whole. Same kernels, same arithmetic, so the same results
//! as the two ops apart.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::conv::{BlockRunner, FastConv, MR};
use super::depthwise::FastDepthwise;
use super::planes::depthwise_planes;
use super::{eval_f32, f32_output_facts, Isa};

/// tract op: [`FastConv`] (a 1x1, stride-1, unpadded convolution on the block path) followed by
/// [`FastDepthwise`] on its output. Inputs: the convolution's input, the depthwise kernel and
/// bias (as [`FastDepthwise`] takes them).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FusedConvDepthwise {
    /// The 1x1 convolution, its clamp included.
    pub conv: FastConv,
    /// The depthwise convolution on the convolution's output, its clamp included.
    pub dw: FastDepthwise,
}

impl FusedConvDepthwise {
    /// The fused op, if `conv` streams by blocks ([`BlockRunner`]) and `dw` reads exactly its
    /// output.
    pub fn new(conv: FastConv, dw: FastDepthwise) -> Option<FusedConvDepthwise> {
        BlockRunner::new(&conv, Isa::detect())?;
        if conv.shapes().1 != dw.input_shape() {
            return None;
        }
        Some(FusedConvDepthwise { conv, dw })
    }
}

impl Op for FusedConvDepthwise {
    fn name(&self) -> StaticName {
        "FusedConvDepthwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let mut info = self.conv.info()?;
        info.extend(self.dw.info()?);
        Ok(info)
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for FusedConvDepthwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x, kernel, bias) = args_3!(inputs);
        let g = &self.dw.geo;
        let kernel = kernel.cast_to::<f32>()?;
        let kernel = kernel.try_as_plain_ram()?.as_slice::<f32>()?;
        let bias = bias.cast_to::<f32>()?;
        let bias = bias.try_as_plain_ram()?.as_slice::<f32>()?;
        ensure!(kernel.len() == g.c * g.taps() && bias.len() == g.c);
        let input_shape = self.conv.shapes().0;
        let output_shape = self.dw.output_shape();
        eval_f32(
            "FusedConvDepthwise",
            &x,
            &input_shape,
            &output_shape,
            |x, out| fused(self, x, kernel, bias, Isa::detect(), out),
        )
    }
}

impl TypedOp for FusedConvDepthwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        f32_output_facts(inputs, 3, &self.conv.shapes().0, &self.dw.output_shape())
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let mut cost = self.conv.cost(&inputs[..1])?;
        cost.extend(self.dw.cost(inputs)?);
        Ok(cost)
    }

    as_op!();
}

thread_local! {
    /// The expansion's planes of one weight block, reused across calls on this thread.
    static BLOCK_PLANES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(vec![]) };
}

/// The fused convolutions of `x` (`n * cin * h * w`) into `out` (the depthwise output), the
/// weight blocks split across tract's current executor.
pub fn fused(
    op: &FusedConvDepthwise,
    x: &[f32],
    kernel: &[f32],
    bias: &[f32],
    isa: Isa,
    out: &mut [f32],
) -> TractResult<()> {
    let runner = BlockRunner::new(&op.conv, isa).context("convolution does not stream")?;
    let g = op.dw.geo;
    let (cin, plane) = (op.conv.geo.c, g.h * g.w);
    let out_plane = g.oh() * g.ow();
    let taps = g.taps();
    assert_eq!(x.len(), g.n * cin * plane);
    assert_eq!(out.len(), g.n * g.c * out_plane);
    let blocks = runner.blocks();
    let work = op.conv.cout * plane * cin + out.len() * taps;
    for n in 0..g.n {
        let xn = &x[n * cin * plane..][..cin * plane];
        let on = out[n * g.c * out_plane..][..g.c * out_plane].as_mut_ptr() as usize;
        tract_linalg::multithread::par_chunks_mut(&mut vec![(); blocks], 1, work, |first, bs| {
            BLOCK_PLANES.with(|cell| {
                let mut fresh = vec![];
                let mut held = cell.try_borrow_mut();
                let planes = match held.as_deref_mut() {
                    Ok(v) => v,
                    Err(_) => &mut fresh,
                };
                if planes.len() < MR * plane {
                    planes.resize(MR * plane, 0.0);
                }
                for b in first..first + bs.len() {
                    runner.run(xn, b, planes);
                    let c0 = b * MR;
                    let count = (g.c - c0).min(MR);
                    let sub = super::Geometry {
                        n: 1,
                        c: count,
                        ..g
                    };
                    // Safety: block `b` writes only its own channels' output planes.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(
                            (on as *mut f32).add(c0 * out_plane),
                            count * out_plane,
                        )
                    };
                    depthwise_planes(
                        &sub,
                        &planes[..count * plane],
                        &kernel[c0 * taps..][..count * taps],
                        &bias[c0..][..count],
                        op.dw.clip,
                        isa,
                        0..count,
                        dst,
                    );
                }
            });
            Ok(())
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tract_onnx::tract_core::ops::cnn::conv::{Conv, KernelFormat};
    use tract_onnx::tract_core::ops::nn::DataFormat;

    use super::*;
    use crate::engine::ops::testing::{pool_spec, relu6, run_plan, Rng};
    use crate::engine::ops::Geometry;
    use crate::engine::rewrite::{rewrite_optimized, rewrite_typed};

    /// A tract `Conv` of `cin -> cout` channels in `group` groups.
    fn conv(cin: usize, cout: usize, group: usize, g: &Geometry) -> Conv {
        Conv {
            pool_spec: pool_spec(g, DataFormat::NCHW, cin, cout),
            kernel_fmt: KernelFormat::OIHW,
            group,
            q_params: None,
        }
    }

    /// `x -> 1x1 conv (cin -> g.c) (-> ReLU6) -> depthwise g (-> ReLU6)` on a plane past the
    /// channels-in-lanes size: tract's plan against the engine's (which must fuse the pair),
    /// and [`fused`] on every instruction set against tract.
    fn pair_vs_tract(rng: &mut Rng, cin: usize, g: Geometry, relu_between: bool, relu_after: bool) {
        let pw = Geometry::pointwise(g.n, cin, g.h, g.w);
        let shape = [g.n, cin, g.h, g.w];
        let x = rng.uniforms(-1.0, 1.0, shape.iter().product());
        let w1 = rng.uniforms(-0.5, 0.5, g.c * cin);
        let b1 = rng.uniforms(-1.0, 1.0, g.c);
        let w2 = rng.uniforms(-1.0, 1.0, g.c * g.taps());
        let b2 = rng.uniforms(-1.0, 1.0, g.c);
        let mut model = TypedModel::default();
        let src = model.add_source("x", f32::fact(shape)).unwrap();
        let k1 = model
            .add_const("k1", Tensor::from_shape(&[g.c, cin, 1, 1], &w1).unwrap())
            .unwrap();
        let bias1 = model
            .add_const("b1", Tensor::from_shape(&[g.c], &b1).unwrap())
            .unwrap();
        let k2 = model
            .add_const(
                "k2",
                Tensor::from_shape(&[g.c, 1, g.kh, g.kw], &w2).unwrap(),
            )
            .unwrap();
        let bias2 = model
            .add_const("b2", Tensor::from_shape(&[g.c], &b2).unwrap())
            .unwrap();
        let mut y = model
            .wire_node("expand", conv(cin, g.c, 1, &pw), &[src, k1, bias1])
            .unwrap()[0];
        if relu_between {
            y = relu6(&mut model, "r1", y);
        }
        y = model
            .wire_node("dw", conv(g.c, g.c, g.c, &g), &[y, k2, bias2])
            .unwrap()[0];
        if relu_after {
            y = relu6(&mut model, "r2", y);
        }
        model.select_output_outlets(&[y]).unwrap();
        let mut ours = model.clone();
        rewrite_typed(&mut ours).unwrap();
        let mut ours = ours.into_optimized().unwrap();
        let report = rewrite_optimized(&mut ours).unwrap();
        // tract leaves Max and Min apart on some tensors: then the clamp stays between the two
        // convolutions and nothing is fused.
        let clamp_left = ours.nodes.iter().any(|n| n.op().name().contains("Max"));
        let names: Vec<_> = ours.nodes.iter().map(|n| n.op().name()).collect();
        if !(relu_between && clamp_left) {
            assert_eq!(
                report.fused_pairs + report.fused_lanes_pairs,
                1,
                "{g:?}: {report:?} {names:?}"
            );
        }
        let input = Tensor::from_shape(&shape, &x).unwrap();
        let run = |m: TypedModel| run_plan(m, &input);
        let want = run(model.into_optimized().unwrap());
        let check = |got: &[f32], what: &str| {
            assert_eq!(got.len(), want.len());
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                    "{what} {g:?} cin {cin} at {i}: {a} vs {b}"
                );
            }
        };
        check(&run(ours), "plan");
        // The fused function itself on every instruction set.
        let mut conv_op = FastConv::new(pw, g.c, 4, &w1, &b1).unwrap();
        conv_op.clip = relu_between.then(|| super::super::Clip::new(0.0, 6.0));
        let clip = relu_after.then(|| super::super::Clip::new(0.0, 6.0));
        let dw = FastDepthwise::new(g, 4, clip).unwrap();
        let op = FusedConvDepthwise { conv: conv_op, dw };
        for isa in Isa::available() {
            if BlockRunner::new(&op.conv, isa).is_none() {
                continue;
            }
            let mut out = vec![f32::NAN; want.len()];
            fused(&op, &x, &w2, &b2, isa, &mut out).unwrap();
            check(&out, &format!("{isa:?}"));
        }
    }

    fn geometry(
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        k: usize,
        s: usize,
        pads: [usize; 4],
    ) -> Geometry {
        Geometry {
            n,
            c,
            h,
            w,
            kh: k,
            kw: k,
            sh: s,
            sw: s,
            pad_top: pads[0],
            pad_left: pads[1],
            pad_bottom: pads[2],
            pad_right: pads[3],
        }
    }

    #[test]
    fn fused_pair_matches_tract() {
        let mut rng = Rng::new(0xf05e_d0d0);
        // EfficientNet-Lite0-like: 3x3 stride 2 with TF padding, 5x5 stride 1 and 2.
        pair_vs_tract(
            &mut rng,
            16,
            geometry(1, 24, 34, 34, 3, 2, [0, 0, 1, 1]),
            true,
            true,
        );
        pair_vs_tract(
            &mut rng,
            24,
            geometry(1, 20, 28, 28, 5, 1, [2, 2, 2, 2]),
            true,
            true,
        );
        pair_vs_tract(
            &mut rng,
            40,
            geometry(1, 17, 29, 23, 5, 2, [1, 1, 2, 2]),
            false,
            true,
        );
        // Batch 2, odd channel counts (a partial last block), odd sizes.
        pair_vs_tract(
            &mut rng,
            7,
            geometry(2, 13, 19, 21, 3, 1, [1, 1, 1, 1]),
            true,
            false,
        );
    }

    #[test]
    fn fused_pair_on_random_shapes() {
        let mut rng = Rng::new(0x0dd_f05e);
        for _ in 0..12 {
            let k = [3, 5][rng.below(2)];
            let s = 1 + rng.below(2);
            let pads = [rng.below(k), rng.below(k), rng.below(k), rng.below(k)];
            let (h, w) = (17 + rng.below(20), 17 + rng.below(20));
            let (n, cin, c) = (1 + rng.below(2), 1 + rng.below(30), 1 + rng.below(30));
            let g = geometry(n, c, h, w, k, s, pads);
            let (between, after) = (rng.below(2) == 1, rng.below(2) == 1);
            pair_vs_tract(&mut rng, cin, g, between, after);
        }
    }
}
