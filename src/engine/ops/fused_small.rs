//! A 1x1 convolution on a small plane and the depthwise convolution that is its only consumer,
//! as one op, channels in the vector lanes throughout (the expansion and the depthwise step of
//! EfficientNet-Lite0's blocks on 14x14 and 7x7).
//!
//! The small-plane 1x1 convolution already computes [`CT`] output channels at a time
//! pixel-major (channels in lanes, `conv::pointwise_small`); apart, it then gathered them into
//! channel planes and the depthwise step copied each plane into padded phase planes, with most
//! lanes empty on a 7x7 plane (a 5x5 depthwise there ran at a quarter of the rate it reaches on
//! 28x28). Here each tile of [`CT`] channels stays pixel-major: copied into a zero-bordered
//! `[hp][wp][CT]` buffer (in L1), convolved with 16 channels a vector (one weight vector and one
//! input vector per tap and pixel, strides free), and only the depthwise output goes to channel
//! planes. The expansion's output never exists whole. Off AVX-512 (where the convolution does
//! not hold channels-in-lanes weights and the rewrite does not form this op) [`fused_small`]
//! runs the two ops apart.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::conv::{dense, FastConv, CT};
use super::depthwise::{depthwise, FastDepthwise};
use super::{eval_f32, f32_output_facts, Geometry, Isa};

/// The depthwise geometry as the lane kernels read it: the padded buffer's sizes and where its
/// interior starts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LaneGeometry {
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) top: usize,
    pub(crate) left: usize,
    pub(crate) hp: usize,
    pub(crate) wp: usize,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) sh: usize,
    pub(crate) sw: usize,
}

impl LaneGeometry {
    fn new(g: &Geometry) -> LaneGeometry {
        LaneGeometry {
            h: g.h,
            w: g.w,
            top: g.pad_top,
            left: g.pad_left,
            hp: g.padded_h(),
            wp: g.padded_w(),
            oh: g.oh(),
            ow: g.ow(),
            kh: g.kh,
            kw: g.kw,
            sh: g.sh,
            sw: g.sw,
        }
    }
}

/// The depthwise weights by tiles of [`CT`] channels: `[c / CT][taps][CT]` and `[c / CT][CT]`,
/// zero past `c`.
#[derive(Clone, PartialEq)]
struct LaneDepthwiseWeights {
    kernel: Vec<f32>,
    bias: Vec<f32>,
}

impl LaneDepthwiseWeights {
    fn new(c: usize, taps: usize, kernel: &[f32], bias: &[f32]) -> LaneDepthwiseWeights {
        let tiles = c.div_ceil(CT);
        let mut packed = vec![0f32; tiles * taps * CT];
        let mut padded_bias = vec![0f32; tiles * CT];
        for ch in 0..c {
            let (t, j) = (ch / CT, ch % CT);
            for tap in 0..taps {
                packed[(t * taps + tap) * CT + j] = kernel[ch * taps + tap];
            }
            padded_bias[ch] = bias[ch];
        }
        LaneDepthwiseWeights {
            kernel: packed,
            bias: padded_bias,
        }
    }

    /// The channel-major kernel and the biases of `c` channels back.
    fn unpacked(&self, c: usize, taps: usize) -> (Vec<f32>, Vec<f32>) {
        let mut kernel = vec![0f32; c * taps];
        for ch in 0..c {
            let (t, j) = (ch / CT, ch % CT);
            for tap in 0..taps {
                kernel[ch * taps + tap] = self.kernel[(t * taps + tap) * CT + j];
            }
        }
        (kernel, self.bias[..c].to_vec())
    }
}

/// tract op: a channels-in-lanes [`FastConv`] (1x1, small plane, AVX-512) followed by a
/// [`FastDepthwise`] on its output; the depthwise weights are held by the op. One input, the
/// convolution's.
#[derive(Clone)]
pub struct FusedSmallConvDepthwise {
    /// The 1x1 convolution, its clamp included.
    pub conv: FastConv,
    /// The depthwise convolution on its output, its clamp included.
    pub dw: FastDepthwise,
    weights: Arc<LaneDepthwiseWeights>,
}

impl std::fmt::Debug for FusedSmallConvDepthwise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FusedSmallConvDepthwise({:?}, {:?})", self.conv, self.dw)
    }
}

impl PartialEq for FusedSmallConvDepthwise {
    fn eq(&self, other: &Self) -> bool {
        self.conv == other.conv
            && self.dw == other.dw
            && (Arc::ptr_eq(&self.weights, &other.weights) || self.weights == other.weights)
    }
}

impl Eq for FusedSmallConvDepthwise {}

impl std::hash::Hash for FusedSmallConvDepthwise {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.conv.hash(state);
        self.dw.hash(state);
    }
}

impl FusedSmallConvDepthwise {
    /// The fused op, if `conv` holds channels-in-lanes weights and `dw` reads exactly its
    /// output; `kernel` (`c * taps`, channel-major) and `bias` (`c`) are the depthwise weights.
    pub fn new(
        conv: FastConv,
        dw: FastDepthwise,
        kernel: &[f32],
        bias: &[f32],
    ) -> Option<FusedSmallConvDepthwise> {
        conv.lanes_weights()?;
        let g = &dw.geo;
        if conv.shapes().1 != dw.input_shape()
            || kernel.len() != g.c * g.taps()
            || bias.len() != g.c
        {
            return None;
        }
        let weights = Arc::new(LaneDepthwiseWeights::new(g.c, g.taps(), kernel, bias));
        Some(FusedSmallConvDepthwise { conv, dw, weights })
    }
}

impl Op for FusedSmallConvDepthwise {
    fn name(&self) -> StaticName {
        "FusedSmallConvDepthwise".into()
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

impl EvalOp for FusedSmallConvDepthwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let input_shape = self.conv.shapes().0;
        let output_shape = self.dw.output_shape();
        eval_f32(
            "FusedSmallConvDepthwise",
            &x,
            &input_shape,
            &output_shape,
            |x, out| fused_small(self, x, Isa::detect(), out),
        )
    }
}

impl TypedOp for FusedSmallConvDepthwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        f32_output_facts(inputs, 1, &self.conv.shapes().0, &self.dw.output_shape())
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let mut cost = self.conv.cost(inputs)?;
        let g = &self.dw.geo;
        let fma = g.n * g.c * g.oh() * g.ow() * g.taps();
        cost.push((Cost::FMA(f32::datum_type()), fma.into()));
        Ok(cost)
    }

    as_op!();
}

/// The fused convolutions of `x` (`n * cin * h * w`) into `out` (the depthwise output): on
/// AVX-512 tile by tile, the tiles split across tract's current executor; on other instruction
/// sets the two ops one after the other.
pub fn fused_small(
    op: &FusedSmallConvDepthwise,
    x: &[f32],
    isa: Isa,
    out: &mut [f32],
) -> TractResult<()> {
    let g = op.dw.geo;
    assert_eq!(x.len(), g.n * op.conv.geo.c * g.h * g.w);
    assert_eq!(out.len(), g.n * g.c * g.oh() * g.ow());
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        return tiles_avx512(op, x, out);
    }
    let mut expanded = vec![0f32; g.n * g.c * g.h * g.w];
    dense(&op.conv, x, isa, &mut expanded);
    let (kernel, bias) = op.weights.unpacked(g.c, g.taps());
    depthwise(&g, &expanded, &kernel, &bias, op.dw.clip, isa, out);
    Ok(())
}

/// Every tile of [`CT`] channels: the expansion's passes into a pixel-major buffer, copied into
/// the zero-bordered one, the depthwise convolution into a pixel-major output, gathered into
/// the output's channel planes.
#[cfg(target_arch = "x86_64")]
fn tiles_avx512(op: &FusedSmallConvDepthwise, x: &[f32], out: &mut [f32]) -> TractResult<()> {
    use super::x86::{conv as xconv, lanes};
    use super::Clip;
    let g = op.dw.geo;
    let lg = LaneGeometry::new(&g);
    let (cin, p, op_) = (op.conv.geo.c, g.h * g.w, lg.oh * lg.ow);
    let (packed, conv_bias) = op.conv.lanes_weights().context("no lanes weights")?;
    let (clo, chi) = Clip::bounds(op.conv.clip);
    let (dlo, dhi) = Clip::bounds(op.dw.clip);
    let taps = g.taps();
    let tiles = g.c.div_ceil(CT);
    let work = g.c * p * cin + g.c * op_ * taps;
    for n in 0..g.n {
        let xn = x[n * cin * p..][..cin * p].as_ptr() as usize;
        let on = out[n * g.c * op_..][..g.c * op_].as_mut_ptr() as usize;
        tract_linalg::multithread::par_chunks_mut(&mut vec![(); tiles], 1, work, |first, ts| {
            let mut partial = vec![0f32; p.max(op_) * CT];
            // The borders stay zero: every tile overwrites only the interior.
            let mut padded = vec![0f32; lg.hp * lg.wp * CT];
            for t in first..first + ts.len() {
                let valid = (g.c - t * CT).min(CT);
                let dw_kernel = op.weights.kernel[t * taps * CT..][..taps * CT].as_ptr();
                let dw_bias = op.weights.bias[t * CT..][..CT].as_ptr();
                // Safety: AVX-512F detected (the caller checked the `Isa`); the buffers are
                // sized for this geometry; tile `t` writes only its own channels' planes.
                unsafe {
                    xconv::pointwise_passes(
                        xn as *const f32,
                        p,
                        cin,
                        false,
                        valid.div_ceil(16),
                        packed[t * cin * CT..][..cin * CT].as_ptr(),
                        &conv_bias[t * CT..][..CT],
                        op.conv.clip.is_some(),
                        clo,
                        chi,
                        &mut partial,
                    );
                    let halves = valid.div_ceil(16);
                    lanes::pad_lanes(&lg, partial.as_ptr(), padded.as_mut_ptr());
                    let dst = partial.as_mut_ptr();
                    if op.dw.clip.is_some() {
                        lanes::depthwise_lanes::<true>(
                            &lg,
                            padded.as_ptr(),
                            dw_kernel,
                            dw_bias,
                            halves,
                            dlo,
                            dhi,
                            dst,
                        )
                    } else {
                        lanes::depthwise_lanes::<false>(
                            &lg,
                            padded.as_ptr(),
                            dw_kernel,
                            dw_bias,
                            halves,
                            dlo,
                            dhi,
                            dst,
                        )
                    }
                    xconv::partial_to_planes(
                        partial.as_ptr(),
                        op_,
                        valid,
                        (on as *mut f32).add(t * CT * op_),
                    );
                }
            }
            Ok(())
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
