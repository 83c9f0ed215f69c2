//! A 1x1 convolution and the depthwise convolution that is its only consumer, as one op,
//! channels in the vector lanes throughout (on AVX-512: EfficientNet-Lite0's expansion and
//! depthwise steps on 14x14 and 7x7, and on the larger planes where it gains, [`lanes_gain`]).
//!
//! The channels-in-lanes 1x1 kernel computes [`CT`] output channels at a time pixel-major;
//! apart, they were gathered into channel planes and the depthwise step copied each plane
//! into padded phase planes, with most lanes empty on a 7x7 plane (a 5x5 depthwise there ran at
//! a quarter of the rate it reaches on 28x28). Here each tile of [`CT`] channels stays
//! pixel-major, band of output rows by band: the expansion's rows go into a zero-bordered
//! `[rows][wp][CT]` buffer, the depthwise step convolves 16 channels a vector (one weight
//! vector and one input vector per tap and pixel, strides free), and only its output is
//! transposed into channel planes. The expansion's output never exists whole. Off AVX-512
//! (where the rewrite does not form this op) [`fused_lanes`] runs the two ops apart.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::aligned::AlignedBuf;
use super::conv::{dense, pointwise_small_fits, FastConv, CT};
use super::depthwise::{depthwise, FastDepthwise};
use super::projection::Projection;
use super::{eval_f32, f32_output_facts, Geometry, Isa};

/// The depthwise geometry as the lane kernel reads it: the padded row width and the output.
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct LaneGeometry {
    pub(crate) wp: usize,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) sh: usize,
    pub(crate) sw: usize,
}

#[cfg(target_arch = "x86_64")]
impl LaneGeometry {
    fn new(g: &Geometry) -> LaneGeometry {
        LaneGeometry {
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

/// Whether the pair runs faster channels in lanes than as [`super::FusedConvDepthwise`]
/// (planes in lanes): on planes up to 28x28, and for a strided depthwise step (whose output, a
/// quarter of the pixels, costs less to transpose back into planes, and whose phase-plane
/// copies cost more). Measured with layer_bench (warm, us, planes -> lanes): 16->96 3x3/2 on
/// 112 634 -> 531, 24->144 5x5/2 on 56 380 -> 293, 40->240 3x3/2 on 28 204 -> 154, 40->240
/// 5x5/1 on 28 285 -> 265; but 24->144 3x3/1 on 56 360 -> 399.
fn lanes_gain(conv: &Geometry, dw: &Geometry) -> bool {
    pointwise_small_fits(conv) || dw.sh * dw.sw > 1 || dw.h * dw.w <= LANES_PLANE
}

/// Largest plane a stride-1 pair runs channels in lanes (28x28).
const LANES_PLANE: usize = 28 * 28;

/// The depthwise weights by tiles of [`CT`] channels: `[c / CT][taps][CT]` and `[c / CT][CT]`,
/// zero past `c`.
#[derive(Clone, PartialEq)]
struct LaneDepthwiseWeights {
    /// On cache lines: the kernel loads a whole vector of weights per tap.
    kernel: AlignedBuf,
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
            kernel: AlignedBuf::from_slice(&packed),
            bias: padded_bias,
        }
    }

    /// The channel-major kernel and the biases of `c` channels back.
    fn unpacked(&self, c: usize, taps: usize) -> (Vec<f32>, Vec<f32>) {
        let mut kernel = vec![0f32; c * taps];
        for ch in 0..c {
            let (t, j) = (ch / CT, ch % CT);
            for tap in 0..taps {
                kernel[ch * taps + tap] = self.kernel.as_slice()[(t * taps + tap) * CT + j];
            }
        }
        (kernel, self.bias[..c].to_vec())
    }
}

/// tract op: a 1x1 [`FastConv`] holding channels-in-lanes weights (AVX-512) followed by a
/// [`FastDepthwise`] on its output; the depthwise weights are held by the op. One input, the
/// convolution's.
#[derive(Clone)]
pub struct FusedLanesConvDepthwise {
    /// The 1x1 convolution, its clamp included.
    pub conv: FastConv,
    /// The depthwise convolution on its output, its clamp included.
    pub dw: FastDepthwise,
    weights: Arc<LaneDepthwiseWeights>,
    /// The 1x1 projection on the depthwise output (and the skip connection after it), when
    /// fused too ([`FusedLanesConvDepthwise::with_projection`]): the op's output is then the
    /// projection's.
    pub project: Option<Projection>,
}

impl std::fmt::Debug for FusedLanesConvDepthwise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FusedLanesConvDepthwise({:?}, {:?}", self.conv, self.dw)?;
        if let Some(p) = &self.project {
            write!(f, ", {p:?}")?;
        }
        write!(f, ")")
    }
}

impl PartialEq for FusedLanesConvDepthwise {
    fn eq(&self, other: &Self) -> bool {
        self.conv == other.conv
            && self.dw == other.dw
            && self.project == other.project
            && (Arc::ptr_eq(&self.weights, &other.weights) || self.weights == other.weights)
    }
}

impl Eq for FusedLanesConvDepthwise {}

impl std::hash::Hash for FusedLanesConvDepthwise {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.conv.hash(state);
        self.dw.hash(state);
        self.project.hash(state);
    }
}

impl FusedLanesConvDepthwise {
    /// The fused op, if `conv` holds channels-in-lanes weights and `dw` reads exactly its
    /// output; `kernel` (`c * taps`, channel-major) and `bias` (`c`) are the depthwise weights.
    pub fn new(
        conv: FastConv,
        dw: FastDepthwise,
        kernel: &[f32],
        bias: &[f32],
    ) -> Option<FusedLanesConvDepthwise> {
        if !lanes_gain(&conv.geo, &dw.geo) {
            return None;
        }
        FusedLanesConvDepthwise::on_any_plane(conv, dw, kernel, bias)
    }

    /// [`FusedLanesConvDepthwise::new`] whether or not the pair gains from it.
    fn on_any_plane(
        conv: FastConv,
        dw: FastDepthwise,
        kernel: &[f32],
        bias: &[f32],
    ) -> Option<FusedLanesConvDepthwise> {
        let conv = conv.with_lanes_weights()?;
        let g = &dw.geo;
        if conv.shapes().1 != dw.input_shape()
            || kernel.len() != g.c * g.taps()
            || bias.len() != g.c
        {
            return None;
        }
        let weights = Arc::new(LaneDepthwiseWeights::new(g.c, g.taps(), kernel, bias));
        Some(FusedLanesConvDepthwise {
            conv,
            dw,
            weights,
            project: None,
        })
    }

    /// This op with the 1x1 convolution `conv` on its output fused in (and, with `residual`,
    /// the addition of the op's input to the result), if `conv` is a pointwise convolution
    /// of the depthwise output and the shapes agree.
    pub fn with_projection(
        self,
        conv: FastConv,
        residual: bool,
    ) -> Option<FusedLanesConvDepthwise> {
        if self.project.is_some() {
            return None;
        }
        let project = Projection::new(conv, &self.dw.geo, &self.conv.shapes().0, residual)?;
        Some(FusedLanesConvDepthwise {
            project: Some(project),
            ..self
        })
    }

    /// The op's output shape: the projection's when fused, else the depthwise step's.
    pub fn output_shape(&self) -> TVec<usize> {
        match &self.project {
            Some(p) => p.conv.shapes().1,
            None => self.dw.output_shape(),
        }
    }
}

impl Op for FusedLanesConvDepthwise {
    fn name(&self) -> StaticName {
        "FusedLanesConvDepthwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let mut info = self.conv.info()?;
        info.extend(self.dw.info()?);
        if let Some(p) = &self.project {
            info.extend(p.conv.info()?);
            if p.residual {
                info.push("+ input".into());
            }
        }
        Ok(info)
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for FusedLanesConvDepthwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let input_shape = self.conv.shapes().0;
        let output_shape = self.output_shape();
        eval_f32(
            "FusedLanesConvDepthwise",
            &x,
            &input_shape,
            &output_shape,
            |x, out| fused_lanes(self, x, Isa::detect(), out),
        )
    }
}

impl TypedOp for FusedLanesConvDepthwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        f32_output_facts(inputs, 1, &self.conv.shapes().0, &self.output_shape())
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let mut cost = self.conv.cost(inputs)?;
        let g = &self.dw.geo;
        let fma = g.n * g.c * g.oh() * g.ow() * g.taps();
        cost.push((Cost::FMA(f32::datum_type()), fma.into()));
        if let Some(p) = &self.project {
            let facts =
                f32_output_facts(inputs, 1, &self.conv.shapes().0, &self.dw.output_shape())?;
            cost.extend(p.conv.cost(&[&facts[0]])?);
        }
        Ok(cost)
    }

    as_op!();
}

/// The fused convolutions of `x` (`n * cin * h * w`) into `out` (the op's output): on AVX-512
/// tile by tile, the tiles split across tract's current executor; on other instruction sets
/// the ops one after the other.
pub fn fused_lanes(
    op: &FusedLanesConvDepthwise,
    x: &[f32],
    isa: Isa,
    out: &mut [f32],
) -> TractResult<()> {
    let g = op.dw.geo;
    assert_eq!(x.len(), g.n * op.conv.geo.c * g.h * g.w);
    assert_eq!(out.len(), op.output_shape().iter().product::<usize>());
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        return tiles_avx512(op, x, out);
    }
    let mut expanded = vec![0f32; g.n * g.c * g.h * g.w];
    dense(&op.conv, x, isa, &mut expanded);
    let (kernel, bias) = op.weights.unpacked(g.c, g.taps());
    let Some(project) = &op.project else {
        depthwise(&g, &expanded, &kernel, &bias, op.dw.clip, isa, out);
        return Ok(());
    };
    let mut dw_out = vec![0f32; g.n * g.c * g.oh() * g.ow()];
    depthwise(&g, &expanded, &kernel, &bias, op.dw.clip, isa, &mut dw_out);
    dense(&project.conv, &dw_out, isa, out);
    if project.residual {
        out.iter_mut().zip(x).for_each(|(o, x)| *o += x);
    }
    Ok(())
}

/// Output pixels per band of rows (at least one row): a band's expansion output and its
/// padded rows (`[rows][wp][CT]`, 72 KB each on 112x112) stay in L2. layer_bench, 16->96
/// 3x3/2 on 112 (us): 64 pixels 628, 128 pixels 618, 256 pixels 648, 512 778, 1024 1011;
/// 24->144 5x5/2 on 56: 348, 330, 324, 328, 331.
#[cfg(target_arch = "x86_64")]
const BAND_PIXELS: usize = 128;

/// Every tile of [`CT`] channels, band of output rows by band: the expansion's passes over the
/// input rows the band needs (those the previous band computed are kept) parked straight in
/// the zero-bordered rows (runs cut at row ends: measured faster even on 7- and 14-pixel rows
/// than longer runs and a copy, e.g. 112->672 5x5/2 on 14x14 290 -> 278 us), the depthwise
/// convolution into a pixel-major output, transposed into the output's channel planes.
#[cfg(target_arch = "x86_64")]
fn tiles_avx512(op: &FusedLanesConvDepthwise, x: &[f32], out: &mut [f32]) -> TractResult<()> {
    use super::x86::{conv as xconv, lanes};
    use super::Clip;
    let g = op.dw.geo;
    let lg = LaneGeometry::new(&g);
    let (cin, plane, out_plane) = (op.conv.geo.c, g.h * g.w, lg.oh * lg.ow);
    let (packed, conv_bias) = op.conv.lanes_weights().context("no lanes weights")?;
    let (clo, chi) = Clip::bounds(op.conv.clip);
    let (dlo, dhi) = Clip::bounds(op.dw.clip);
    let taps = g.taps();
    let tiles = g.c.div_ceil(CT);
    let band = (BAND_PIXELS / lg.ow).clamp(1, lg.oh);
    // Padded rows one band reads.
    let cap = (band - 1) * g.sh + g.kh;
    let pitch = lg.wp * CT;
    let work = g.c * plane * cin + g.c * out_plane * taps;
    // With a projection, the depthwise output stays in tiles (`[tiles][out_plane][CT]`) for
    // it; without, it is transposed into the output's planes.
    let tiled_len = tiles * out_plane * CT;
    // Safety: the depthwise step writes the lanes of every valid channel before the projection
    // reads them; the lanes past `g.c` are never read.
    let mut tiled_tensor = op
        .project
        .as_ref()
        .map(|_| unsafe { Tensor::uninitialized_aligned::<f32>(&[tiled_len], 64) })
        .transpose()?;
    // Where the tiles start (`None`: no projection).
    let tiled = match tiled_tensor.as_mut() {
        Some(t) => Some(
            t.try_as_plain_ram_mut()?
                .as_slice_mut::<f32>()?
                .as_mut_ptr() as usize,
        ),
        None => None,
    };
    let out_len = op.output_shape()[1..].iter().product::<usize>();
    for n in 0..g.n {
        let xn = x[n * cin * plane..][..cin * plane].as_ptr() as usize;
        let on = match tiled {
            Some(t) => t,
            None => out[n * out_len..][..out_len].as_mut_ptr() as usize,
        };
        tract_linalg::multithread::par_chunks_mut(&mut vec![(); tiles], 1, work, |first, ts| {
            // The band's depthwise output, pixel-major (unused when it goes to the tiles).
            let mut partial = AlignedBuf::zeros(if tiled.is_some() {
                0
            } else {
                band * lg.ow * CT
            });
            let partial = partial.as_mut_slice();
            // The left and right borders stay zero: rows are filled in their interior, zeroed
            // whole, or moved whole.
            let mut rows = AlignedBuf::zeros(cap * pitch);
            let rows = rows.as_mut_slice();
            for t in first..first + ts.len() {
                let valid = (g.c - t * CT).min(CT);
                let halves = valid.div_ceil(16);
                let dw_kernel = op.weights.kernel.as_slice()[t * taps * CT..][..taps * CT].as_ptr();
                let dw_bias = op.weights.bias[t * CT..][..CT].as_ptr();
                let conv_weights = packed[t * cin * CT..][..cin * CT].as_ptr();
                // Padded rows held: row `i` of `rows` is padded row `held.start + i`.
                let mut held = 0..0;
                for oy0 in (0..lg.oh).step_by(band) {
                    let oy1 = (oy0 + band).min(lg.oh);
                    let need = oy0 * g.sh..(oy1 - 1) * g.sh + g.kh;
                    let mut r = need.start;
                    if held.end > need.start {
                        let kept = held.end - need.start;
                        let from = (need.start - held.start) * pitch;
                        rows.copy_within(from..from + kept * pitch, 0);
                        r = held.end;
                    }
                    while r < need.end {
                        let at = (r - need.start) * pitch;
                        if r < g.pad_top || r >= g.pad_top + g.h {
                            rows[at..at + pitch].fill(0.0);
                            r += 1;
                            continue;
                        }
                        let count = need.end.min(g.pad_top + g.h) - r;
                        let y0 = r - g.pad_top;
                        let interior = at + g.pad_left * CT;
                        // Safety: AVX-512F detected (the caller checked the `Isa`); `rows` holds
                        // `cap` padded rows, the interior of `count` from `interior` on.
                        unsafe {
                            xconv::pointwise_passes(
                                (xn as *const f32).add(y0 * g.w),
                                count * g.w,
                                cin,
                                xconv::Input::Planes {
                                    channel_stride: plane,
                                },
                                halves,
                                conv_weights,
                                &conv_bias[t * CT..][..CT],
                                op.conv.clip.is_some(),
                                clo,
                                chi,
                                &mut rows[interior..],
                                Some((g.w, lg.wp)),
                            );
                        }
                        r += count;
                    }
                    held = need;
                    let bg = LaneGeometry {
                        oh: oy1 - oy0,
                        ..lg
                    };
                    let dst = if tiled.is_some() {
                        (on as *mut f32).wrapping_add((t * out_plane + oy0 * lg.ow) * CT)
                    } else {
                        partial.as_mut_ptr()
                    };
                    // Safety: as above; the band's outputs fit `partial` or its rows of the
                    // tile; tile `t` writes only its own channels.
                    unsafe {
                        if op.dw.clip.is_some() {
                            lanes::depthwise_lanes::<true>(
                                &bg,
                                rows.as_ptr(),
                                dw_kernel,
                                dw_bias,
                                halves,
                                dlo,
                                dhi,
                                dst,
                            )
                        } else {
                            lanes::depthwise_lanes::<false>(
                                &bg,
                                rows.as_ptr(),
                                dw_kernel,
                                dw_bias,
                                halves,
                                dlo,
                                dhi,
                                dst,
                            )
                        }
                        if tiled.is_none() {
                            xconv::partial_to_planes(
                                partial.as_ptr(),
                                (oy1 - oy0) * lg.ow,
                                valid,
                                (on as *mut f32).add(t * CT * out_plane + oy0 * lg.ow),
                                out_plane,
                                None,
                            );
                        }
                    }
                }
            }
            Ok(())
        })?;
        if let (Some(project), Some(t)) = (&op.project, tiled) {
            let skip = project
                .residual
                .then(|| &x[n * cin * plane..][..cin * plane]);
            // Safety: the tensor behind `t` holds `tiled_len` floats and lives to the end of
            // the function; the tiles above wrote every lane the projection reads.
            let t = unsafe { std::slice::from_raw_parts(t as *const f32, tiled_len) };
            super::projection::project_tiles(project, t, skip, &mut out[n * out_len..][..out_len])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
