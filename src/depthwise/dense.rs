//! Dense (group 1) f32 convolution as an implicit matrix product over the phase planes of
//! [`super`]: every input channel is copied once into zero-padded phase planes, then each block
//! of output vectors accumulates `sum_k w[co][k] * plane_k[o]` over `k = (ci, ky, kx)`, where
//! `plane_k` is a pointer into the phase planes; no im2col buffer, no packing of activations,
//! the padding costs nothing. A 1x1, stride-1, unpadded convolution reads its input in place.
//!
//! The AVX-512 kernel keeps 8 output channels x 3 vectors of 16 outputs (24 accumulators) in
//! registers: per `k`, 3 loads, 8 broadcasts, 24 FMAs; the weights are prefetched (they stream
//! from memory once per inference). On small planes (at most 256 pixels: 14x14, 7x7) a 1x1
//! convolution runs with output channels in the lanes instead ([`CT`] channels x [`PT`] pixels
//! per tile), where vectors along the plane would be mostly empty. AVX2 runs 4 channels x 3
//! vectors of 8; the portable path one vector of 8 at a time.
//!
//! [`rewrite_dense`] swaps tract's `Conv` nodes for [`FastConv`] in the typed model, before
//! tract's declutter and `into_optimized()` lower them to einsum / im2col + matmul (folding a
//! zero `Pad` in front of one into its padding); [`super::rewrite`] then folds a following
//! ReLU / ReLU6 into it after optimisation.

// The kernels index accumulators by channel and vector together.
#![allow(clippy::needless_range_loop)]

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat};
use tract_onnx::tract_core::ops::nn::DataFormat;

use super::{Clip, Geometry, Isa, Job, PlaneSetup};

/// Output channels per weight block (the AVX-512 kernel's register rows).
const MR: usize = 8;
/// Output vectors per job group.
const NV: usize = 3;
/// Output channels per tile of [`pointwise_small`] (two vectors of 16).
const CT: usize = 32;
/// Output pixels per tile of [`pointwise_small`].
const PT: usize = 7;
/// Largest plane (pixels) a pointwise convolution runs channels-in-lanes (14x14 and 7x7 gain
/// there, 28x28 loses).
const SMALL_PLANE: usize = 256;

/// Weights repacked for the kernels: `[cout / MR][K][MR]` (zero rows past `cout`), `K =
/// cin * kh * kw` in `(ci, ky, kx)` order; bias padded the same way.
pub struct DenseWeights {
    cout: usize,
    k: usize,
    packed: Vec<f32>,
    bias: Vec<f32>,
    /// For [`pointwise_small`]: `[cout / CT][K][CT]` (zero rows past `cout`), bias padded.
    lanes: Option<(Vec<f32>, Vec<f32>)>,
}

impl DenseWeights {
    /// From an OIHW kernel (`cout * k` values) and `cout` biases.
    pub fn new(cout: usize, k: usize, kernel: &[f32], bias: &[f32]) -> DenseWeights {
        assert_eq!(kernel.len(), cout * k);
        assert_eq!(bias.len(), cout);
        let blocks = cout.div_ceil(MR);
        let mut packed = vec![0f32; blocks * k * MR];
        let mut padded_bias = vec![0f32; blocks * MR];
        for co in 0..cout {
            let (b, j) = (co / MR, co % MR);
            for t in 0..k {
                packed[(b * k + t) * MR + j] = kernel[co * k + t];
            }
            padded_bias[co] = bias[co];
        }
        DenseWeights {
            cout,
            k,
            packed,
            bias: padded_bias,
            lanes: None,
        }
    }

    /// Adds the channels-in-lanes packing [`pointwise_small`] reads.
    fn with_lanes(mut self, kernel: &[f32], bias: &[f32]) -> DenseWeights {
        let (cout, k) = (self.cout, self.k);
        let tiles = cout.div_ceil(CT);
        let mut packed = vec![0f32; tiles * k * CT];
        let mut padded_bias = vec![0f32; tiles * CT];
        for co in 0..cout {
            let (t, j) = (co / CT, co % CT);
            for kk in 0..k {
                packed[(t * k + kk) * CT + j] = kernel[co * k + kk];
            }
            padded_bias[co] = bias[co];
        }
        self.lanes = Some((packed, padded_bias));
        self
    }

    fn blocks(&self) -> usize {
        self.cout.div_ceil(MR)
    }
}

impl std::fmt::Debug for DenseWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DenseWeights({}x{})", self.cout, self.k)
    }
}

/// tract op: dense convolution of an f32 CHW (`rank == 3`) or NCHW (`rank == 4`) tensor with
/// weights held by the op; one input, one output; an optional fused clamp (ReLU, ReLU6).
#[derive(Debug, Clone)]
pub struct FastConv {
    /// The convolution over each input plane (`geo.c` is the input channel count).
    pub geo: Geometry,
    /// Output channels.
    pub cout: usize,
    /// 3 for CHW, 4 for NCHW.
    pub rank: usize,
    /// A clamp fused from a following ReLU / ReLU6.
    pub clip: Option<Clip>,
    weights: Arc<DenseWeights>,
}

impl PartialEq for FastConv {
    fn eq(&self, other: &Self) -> bool {
        self.geo == other.geo
            && self.cout == other.cout
            && self.rank == other.rank
            && self.clip == other.clip
            && (Arc::ptr_eq(&self.weights, &other.weights)
                || (self.weights.packed == other.weights.packed
                    && self.weights.bias == other.weights.bias))
    }
}

impl Eq for FastConv {}

impl std::hash::Hash for FastConv {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.geo.hash(state);
        self.cout.hash(state);
        self.rank.hash(state);
        self.clip.hash(state);
    }
}

impl FastConv {
    /// The op for `geo` (input channels `geo.c`) and an OIHW kernel of `cout` filters.
    pub fn new(
        geo: Geometry,
        cout: usize,
        rank: usize,
        kernel: &[f32],
        bias: &[f32],
    ) -> TractResult<FastConv> {
        ensure!(geo.is_valid(), "invalid convolution geometry {geo:?}");
        ensure!(
            rank == 4 || (rank == 3 && geo.n == 1),
            "rank {rank} for {geo:?}"
        );
        ensure!(cout > 0);
        let k = geo.c * geo.taps();
        ensure!(
            kernel.len() == cout * k && bias.len() == cout,
            "weights for {geo:?}"
        );
        ensure!(geo.c * geo.sh * geo.sw * geo.phase_len() < u32::MAX as usize);
        let mut weights = DenseWeights::new(cout, k, kernel, bias);
        if pointwise_small_fits(&geo) {
            weights = weights.with_lanes(kernel, bias);
        }
        let weights = Arc::new(weights);
        Ok(FastConv {
            geo,
            cout,
            rank,
            clip: None,
            weights,
        })
    }

    pub(crate) fn shapes(&self) -> (TVec<usize>, TVec<usize>) {
        let g = &self.geo;
        if self.rank == 4 {
            (
                tvec!(g.n, g.c, g.h, g.w),
                tvec!(g.n, self.cout, g.oh(), g.ow()),
            )
        } else {
            (tvec!(g.c, g.h, g.w), tvec!(self.cout, g.oh(), g.ow()))
        }
    }
}

impl Op for FastConv {
    fn name(&self) -> StaticName {
        "FastConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let g = &self.geo;
        Ok(vec![format!(
            "{}->{} {}x{} stride {}x{} pad t{} l{} b{} r{} on {}x{}{}",
            g.c,
            self.cout,
            g.kh,
            g.kw,
            g.sh,
            g.sw,
            g.pad_top,
            g.pad_left,
            g.pad_bottom,
            g.pad_right,
            g.h,
            g.w,
            self.clip.map(|c| format!(" {c:?}")).unwrap_or_default()
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for FastConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let (input_shape, output_shape) = self.shapes();
        ensure!(
            x.datum_type() == f32::datum_type(),
            "FastConv runs f32 only"
        );
        ensure!(
            x.shape() == &*input_shape,
            "FastConv expected {input_shape:?}, got {:?}",
            x.shape()
        );
        let x = x.try_as_plain_ram()?.as_slice::<f32>()?;
        let mut output = unsafe { Tensor::uninitialized::<f32>(&output_shape)? };
        {
            let mut view = output.try_as_plain_ram_mut()?;
            let out = view.as_slice_mut::<f32>()?;
            conv_threaded(self, x, Isa::detect(), out)?;
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for FastConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let (input_shape, output_shape) = self.shapes();
        ensure!(inputs.len() == 1);
        ensure!(inputs[0].datum_type == f32::datum_type());
        ensure!(inputs[0].shape.as_concrete() == Some(&*input_shape));
        Ok(tvec!(f32::fact(&*output_shape)))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let g = &self.geo;
        let fma = g.n * self.cout * g.oh() * g.ow() * g.c * g.taps();
        Ok(tvec!((Cost::FMA(f32::datum_type()), fma.into())))
    }

    as_op!();
}

/// Dense convolution of `x` (`n*cin*h*w`, NCHW) by `op` into `out` (`n*cout*oh*ow`), on `isa`.
pub fn dense(op: &FastConv, x: &[f32], isa: Isa, out: &mut [f32]) {
    conv_threaded(op, x, isa, out).unwrap()
}

/// What the kernels need for one batch item.
struct Prepared<'a> {
    op: &'a FastConv,
    setup: PlaneSetup,
    /// `K` offsets into the scratch: input channel `ci`'s phase planes plus the tap offset.
    koff: Vec<u32>,
    /// The jobs of one plane.
    jobs: Vec<Job>,
    lo: f32,
    hi: f32,
}

fn conv_threaded(op: &FastConv, x: &[f32], isa: Isa, out: &mut [f32]) -> TractResult<()> {
    let g = &op.geo;
    let (oh, ow) = (g.oh(), g.ow());
    assert_eq!(x.len(), g.n * g.c * g.h * g.w);
    assert_eq!(out.len(), g.n * op.cout * oh * ow);
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && op.weights.lanes.is_some() {
        return pointwise_small(op, x, out);
    }
    let setup = PlaneSetup::new(g, isa.lanes());
    // A 1x1, stride 1, unpadded convolution reads its input where it is: no scratch, no copy.
    let direct = g.taps() == 1
        && g.sh == 1
        && g.sw == 1
        && g.pad_top + g.pad_left + g.pad_bottom + g.pad_right == 0;
    let channel_len = if direct {
        g.h * g.w
    } else {
        g.sh * g.sw * setup.phase_len
    };
    let mut koff = Vec::with_capacity(g.c * g.taps());
    for ci in 0..g.c {
        for &t in &setup.tap_offsets {
            koff.push((ci * channel_len + if direct { 0 } else { t }) as u32);
        }
    }
    // Flat (whole plane over the phase width) when that needs fewer vectors than row by row;
    // written straight into the output when the phase width is the output width, else into
    // `flat_out` and copied. The copy is cheap next to the products over `K`.
    let lanes = isa.lanes();
    let flat = (oh * setup.wq).div_ceil(lanes) < oh * ow.div_ceil(lanes);
    let copy = flat && setup.wq != ow;
    let jobs = if flat {
        super::jobs(1, oh * setup.wq, 0, 0, lanes)
    } else {
        super::jobs(oh, ow, setup.wq, ow, lanes)
    };
    let (lo, hi) = op.clip.map(|c| (c.lo(), c.hi())).unwrap_or((0.0, 0.0));
    let flat_len = (oh * setup.wq).next_multiple_of(super::LANES_MAX);
    let prepared = Prepared {
        op,
        setup,
        koff,
        jobs,
        lo,
        hi,
    };
    let blocks = op.weights.blocks();
    let spare_len = if copy { 0 } else { MR * flat_len.max(oh * ow) };
    let staging = if copy {
        blocks * MR * flat_len
    } else {
        spare_len
    };
    let scratch_len = if direct { 0 } else { g.c * channel_len };
    super::with_buffers(scratch_len, staging, |scratch, staging| {
        for ci in 0..scratch_len / channel_len.max(1) {
            // The padding cells stay zero: the fills below overwrite only the interior.
            super::clear_padding(
                &prepared.setup,
                &mut scratch[ci * channel_len..][..channel_len],
                0.0,
            );
        }
        run_batch(&prepared, isa, x, out, scratch, staging, copy, flat_len)
    })
}

/// Whether a convolution takes the channels-in-lanes path: 1x1, stride 1, no padding, a small
/// plane (7x7 in EfficientNet-Lite0's last stages), where vectors along the plane would be
/// mostly empty.
fn pointwise_small_fits(g: &Geometry) -> bool {
    g.kh == 1
        && g.kw == 1
        && g.sh == 1
        && g.sw == 1
        && g.pad_top + g.pad_left + g.pad_bottom + g.pad_right == 0
        && g.h * g.w <= SMALL_PLANE
}

/// A small-plane pointwise convolution with output channels in the vector lanes: tiles of
/// [`CT`] channels x [`PT`] pixels, per input channel two weight vectors and [`PT`] broadcast
/// inputs (read straight from `x`, no scratch), results scattered to the channel planes.
#[cfg(target_arch = "x86_64")]
fn pointwise_small(op: &FastConv, x: &[f32], out: &mut [f32]) -> TractResult<()> {
    let g = &op.geo;
    let (p, k) = (g.h * g.w, g.c);
    let (packed, bias) = op.weights.lanes.as_ref().unwrap();
    let tiles = op.cout.div_ceil(CT);
    let (lo, hi) = op.clip.map(|c| (c.lo(), c.hi())).unwrap_or((0.0, 0.0));
    let clip = op.clip.is_some();
    for n in 0..g.n {
        let xn = x[n * k * p..][..k * p].as_ptr() as usize;
        let on = out[n * op.cout * p..][..op.cout * p].as_mut_ptr() as usize;
        let work = op.cout * p * k;
        tract_linalg::multithread::par_chunks_mut(&mut vec![(); tiles], 1, work, |first, ts| {
            for t in first..first + ts.len() {
                let valid = (op.cout - t * CT).min(CT);
                // Safety: AVX-512F detected (the caller checked the `Isa`); tile `t` writes only
                // its own channels' planes.
                unsafe {
                    x86::pointwise_tile(
                        xn as *const f32,
                        p,
                        k,
                        packed[t * k * CT..][..k * CT].as_ptr(),
                        &bias[t * CT..][..CT],
                        valid,
                        (on as *mut f32).add(t * CT * p),
                        clip,
                        lo,
                        hi,
                    )
                };
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// Every batch item of [`conv_threaded`]: `staging` holds the flat planes (`copy`) or the
/// outputs of the channels past `cout`.
#[allow(clippy::too_many_arguments)]
fn run_batch(
    prepared: &Prepared,
    isa: Isa,
    x: &[f32],
    out: &mut [f32],
    scratch: &mut [f32],
    staging: &mut [f32],
    copy: bool,
    flat_len: usize,
) -> TractResult<()> {
    let op = prepared.op;
    let g = &op.geo;
    let (oh, ow, wq) = (g.oh(), g.ow(), prepared.setup.wq);
    let channel_len = g.sh * g.sw * prepared.setup.phase_len;
    let direct = scratch.is_empty();
    let blocks = op.weights.blocks();
    let (flat_out, spare) = if copy {
        (staging, &mut [][..])
    } else {
        (&mut [][..], staging)
    };
    let in_plane = g.h * g.w;
    let out_plane = oh * ow;
    for n in 0..g.n {
        let src = &x[n * g.c * in_plane..][..g.c * in_plane];
        for ci in 0..if direct { 0 } else { g.c } {
            let plane = &src[ci * in_plane..][..in_plane];
            let dst = &mut scratch[ci * channel_len..][..channel_len];
            // Safety: the features were detected for this `Isa`.
            unsafe {
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => super::x86::fill_avx512(&prepared.setup, plane, dst),
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => super::x86::fill_avx2(&prepared.setup, plane, dst),
                    _ => super::fill_portable(&prepared.setup, plane, dst),
                }
            }
        }
        let out_n = &mut out[n * op.cout * out_plane..][..op.cout * out_plane];
        // Where output channel `co` goes: its plane (row layout), its flat plane, or the spare.
        let targets: Vec<usize> = (0..blocks * MR)
            .map(|co| {
                if copy {
                    flat_out.as_mut_ptr() as usize + co * flat_len * 4
                } else if co < op.cout {
                    out_n.as_mut_ptr() as usize + co * out_plane * 4
                } else {
                    spare.as_mut_ptr() as usize + (co % MR) * flat_len.max(out_plane) * 4
                }
            })
            .collect();
        let base = if direct {
            src.as_ptr()
        } else {
            scratch.as_ptr()
        } as usize;
        let work = op.cout * out_plane * g.c * g.taps();
        let p = &prepared;
        tract_linalg::multithread::par_chunks_mut(&mut vec![(); blocks], 1, work, |first, bs| {
            // Safety: each block writes its own channels' planes; the scratch is read-only here.
            unsafe {
                run_blocks(
                    p,
                    isa,
                    base as *const f32,
                    &targets,
                    first..first + bs.len(),
                )
            };
            Ok(())
        })?;
        if copy {
            for co in 0..op.cout {
                let plane = &flat_out[co * flat_len..][..flat_len];
                let dst = &mut out_n[co * out_plane..][..out_plane];
                for oy in 0..oh {
                    dst[oy * ow..][..ow].copy_from_slice(&plane[oy * wq..][..ow]);
                }
            }
        }
    }
    Ok(())
}

/// Weight blocks `blocks`, each over every job: blocks outer, so the block's weights stay in
/// L1 and its stores go to `MR` planes at a time (the inputs come again from L2 for each).
///
/// # Safety
/// `base` is the filled scratch; `targets[co]` (addresses) writable planes for every job.
unsafe fn run_blocks(
    p: &Prepared,
    isa: Isa,
    base: *const f32,
    targets: &[usize],
    blocks: std::ops::Range<usize>,
) {
    let w = &p.op.weights;
    let k = w.k;
    let clip = p.op.clip;
    let (lo, hi) = (p.lo, p.hi);
    for b in blocks {
        let weights = w.packed[b * k * MR..][..k * MR].as_ptr();
        let bias = &w.bias[b * MR..][..MR];
        let mut outs = [std::ptr::null_mut::<f32>(); MR];
        for j in 0..MR {
            outs[j] = targets[b * MR + j] as *mut f32;
        }
        // Four vectors (a 7x7 plane) go together, as two halves of four channels.
        let per_group = if isa == Isa::Avx512 && p.jobs.len() == 4 {
            4
        } else {
            NV
        };
        for group in p.jobs.chunks(per_group) {
            unsafe {
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => x86::block_avx512(
                        base,
                        &p.koff,
                        weights,
                        bias,
                        clip.is_some(),
                        lo,
                        hi,
                        group,
                        &outs,
                    ),
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => {
                        for half in 0..2 {
                            let h = half * MR / 2;
                            let (w, b, o) = (weights.add(h), &bias[h..], &outs[h..]);
                            x86::block_avx2(base, &p.koff, w, b, clip.is_some(), lo, hi, group, o)
                        }
                    }
                    _ => block_portable(base, &p.koff, weights, bias, clip, group, &outs),
                }
            }
        }
    }
}

/// One weight block over one job group, eight lanes at a time (the jobs were cut for eight);
/// multiply then add.
#[allow(clippy::needless_range_loop)]
unsafe fn block_portable(
    base: *const f32,
    koff: &[u32],
    weights: *const f32,
    bias: &[f32],
    clip: Option<Clip>,
    group: &[Job],
    outs: &[*mut f32; MR],
) {
    const L: usize = 8;
    for job in group {
        let mut acc = [[0f32; L]; MR];
        for j in 0..MR {
            acc[j] = [bias[j]; L];
        }
        let n = (job.lanes as usize).min(L);
        for (t, &off) in koff.iter().enumerate() {
            let mut x = [0f32; L];
            let src =
                unsafe { std::slice::from_raw_parts(base.add(off as usize + job.inp as usize), n) };
            x[..n].copy_from_slice(src);
            for j in 0..MR {
                let wj = unsafe { *weights.add(t * MR + j) };
                for l in 0..L {
                    acc[j][l] += wj * x[l];
                }
            }
        }
        for j in 0..MR {
            let mut a = acc[j];
            if let Some(c) = clip {
                for v in &mut a {
                    *v = v.max(c.lo()).min(c.hi());
                }
            }
            unsafe { std::ptr::copy_nonoverlapping(a.as_ptr(), outs[j].add(job.out as usize), n) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Job, CT, MR, PT};

    /// How far ahead (floats) the kernels prefetch their weights: 4 KB, 128 steps of `k`.
    const WEIGHT_PREFETCH: usize = 1024;
    /// The same for [`pointwise_px`], which goes through its weights faster.
    const LANES_PREFETCH: usize = 2048;

    /// 8 output channels x up to 3 vectors of 16 (one per job of `group`): per `k`, 3 loads,
    /// 8 broadcasts, 24 FMAs.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn block_avx512(
        base: *const f32,
        koff: &[u32],
        weights: *const f32,
        bias: &[f32],
        clip: bool,
        lo: f32,
        hi: f32,
        group: &[Job],
        outs: &[*mut f32; MR],
    ) {
        let o = &outs[..];
        unsafe {
            match (group.len(), clip) {
                (3, false) => {
                    block_n_avx512::<8, 3, false>(base, koff, weights, bias, lo, hi, group, o)
                }
                (3, true) => {
                    block_n_avx512::<8, 3, true>(base, koff, weights, bias, lo, hi, group, o)
                }
                (2, false) => {
                    block_n_avx512::<8, 2, false>(base, koff, weights, bias, lo, hi, group, o)
                }
                (2, true) => {
                    block_n_avx512::<8, 2, true>(base, koff, weights, bias, lo, hi, group, o)
                }
                (1, false) => {
                    block_n_avx512::<8, 1, false>(base, koff, weights, bias, lo, hi, group, o)
                }
                (1, true) => {
                    block_n_avx512::<8, 1, true>(base, koff, weights, bias, lo, hi, group, o)
                }
                // Four vectors (a 7x7 plane): two halves of four channels, 16 accumulators each.
                (4, c) => {
                    for h in [0, MR / 2] {
                        let (w, b, o) = (weights.add(h), &bias[h..], &outs[h..]);
                        if c {
                            block_n_avx512::<4, 4, true>(base, koff, w, b, lo, hi, group, o)
                        } else {
                            block_n_avx512::<4, 4, false>(base, koff, w, b, lo, hi, group, o)
                        }
                    }
                }
                (n, _) => unreachable!("{n} jobs in a group"),
            }
        }
    }

    /// `R` output channels (weights at a stride of [`MR`]) x `V` vectors of 16.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn block_n_avx512<const R: usize, const V: usize, const CLIP: bool>(
        base: *const f32,
        koff: &[u32],
        weights: *const f32,
        bias: &[f32],
        lo: f32,
        hi: f32,
        group: &[Job],
        outs: &[*mut f32],
    ) {
        debug_assert!(group.len() == V && outs.len() >= R && bias.len() >= R);
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); V]; R];
            for j in 0..R {
                let b = _mm512_set1_ps(bias[j]);
                for v in 0..V {
                    acc[j][v] = b;
                }
            }
            let mut at = [0usize; V];
            let mut lanes = [0 as __mmask16; V];
            for v in 0..V {
                at[v] = group[v].inp as usize;
                lanes[v] = ((1u32 << group[v].lanes) - 1) as __mmask16;
            }
            let mut w = weights;
            for &k in koff {
                // The weights stream from memory once per inference (ResNet18's are 46 MB): ask
                // for them well ahead, the hardware prefetcher misses this stream.
                _mm_prefetch::<_MM_HINT_T0>(w.add(WEIGHT_PREFETCH) as *const i8);
                let p = base.add(k as usize);
                let mut x = [_mm512_setzero_ps(); V];
                for v in 0..V {
                    // Masked: read straight from the input tensor, a row's last vector must not
                    // run past its end.
                    x[v] = _mm512_maskz_loadu_ps(lanes[v], p.add(at[v]));
                }
                for j in 0..R {
                    let wj = _mm512_set1_ps(*w.add(j));
                    for v in 0..V {
                        acc[j][v] = _mm512_fmadd_ps(wj, x[v], acc[j][v]);
                    }
                }
                w = w.add(MR);
            }
            let (lov, hiv) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
            for j in 0..R {
                for v in 0..V {
                    let mut r = acc[j][v];
                    if CLIP {
                        r = _mm512_min_ps(_mm512_max_ps(r, lov), hiv);
                    }
                    let mask = ((1u32 << group[v].lanes) - 1) as __mmask16;
                    _mm512_mask_storeu_ps(outs[j].add(group[v].out as usize), mask, r);
                }
            }
        }
    }

    /// One tile of [`super::pointwise_small`]: [`CT`] output channels over every pixel of the
    /// plane, [`PT`] pixels at a time.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pointwise_tile(
        x: *const f32,
        p: usize,
        k: usize,
        weights: *const f32,
        bias: &[f32],
        valid: usize,
        out: *mut f32,
        clip: bool,
        lo: f32,
        hi: f32,
    ) {
        let mut p0 = 0;
        unsafe {
            while p0 < p {
                let n = (p - p0).min(PT);
                macro_rules! go {
                    ($n:literal) => {
                        if clip {
                            pointwise_px::<$n, true>(x, p, k, weights, bias, valid, out, p0, lo, hi)
                        } else {
                            pointwise_px::<$n, false>(
                                x, p, k, weights, bias, valid, out, p0, lo, hi,
                            )
                        }
                    };
                }
                match n {
                    7 => go!(7),
                    6 => go!(6),
                    5 => go!(5),
                    4 => go!(4),
                    3 => go!(3),
                    2 => go!(2),
                    _ => go!(1),
                }
                p0 += n;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn pointwise_px<const N: usize, const CLIP: bool>(
        x: *const f32,
        p: usize,
        k: usize,
        weights: *const f32,
        bias: &[f32],
        valid: usize,
        out: *mut f32,
        p0: usize,
        lo: f32,
        hi: f32,
    ) {
        unsafe {
            let b0 = _mm512_loadu_ps(bias.as_ptr());
            let b1 = _mm512_loadu_ps(bias.as_ptr().add(16));
            let mut acc = [[b0; N], [b1; N]];
            let mut w = weights;
            let mut xp = x.add(p0);
            for _ in 0..k {
                _mm_prefetch::<_MM_HINT_T0>(w.add(LANES_PREFETCH) as *const i8);
                let w0 = _mm512_loadu_ps(w);
                let w1 = _mm512_loadu_ps(w.add(16));
                for q in 0..N {
                    let xb = _mm512_set1_ps(*xp.add(q));
                    acc[0][q] = _mm512_fmadd_ps(w0, xb, acc[0][q]);
                    acc[1][q] = _mm512_fmadd_ps(w1, xb, acc[1][q]);
                }
                w = w.add(CT);
                xp = xp.add(p);
            }
            let (lov, hiv) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
            let index = _mm512_mullo_epi32(
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                _mm512_set1_epi32(p as i32),
            );
            for j in 0..2 {
                let lanes = valid.saturating_sub(16 * j).min(16);
                if lanes == 0 {
                    continue;
                }
                let mask = ((1u32 << lanes) - 1) as __mmask16;
                for q in 0..N {
                    let mut v = acc[j][q];
                    if CLIP {
                        v = _mm512_min_ps(_mm512_max_ps(v, lov), hiv);
                    }
                    let at = out.add(16 * j * p + p0 + q);
                    _mm512_mask_i32scatter_ps::<4>(at as _, mask, index, v);
                }
            }
        }
    }

    /// 4 output channels (half a block: the weights keep their stride of 8) x up to 3
    /// vectors of 8.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn block_avx2(
        base: *const f32,
        koff: &[u32],
        weights: *const f32,
        bias: &[f32],
        clip: bool,
        lo: f32,
        hi: f32,
        group: &[Job],
        outs: &[*mut f32],
    ) {
        unsafe {
            match (group.len(), clip) {
                (3, false) => {
                    block_n_avx2::<3, false>(base, koff, weights, bias, lo, hi, group, outs)
                }
                (3, true) => {
                    block_n_avx2::<3, true>(base, koff, weights, bias, lo, hi, group, outs)
                }
                (2, false) => {
                    block_n_avx2::<2, false>(base, koff, weights, bias, lo, hi, group, outs)
                }
                (2, true) => {
                    block_n_avx2::<2, true>(base, koff, weights, bias, lo, hi, group, outs)
                }
                (1, false) => {
                    block_n_avx2::<1, false>(base, koff, weights, bias, lo, hi, group, outs)
                }
                (1, true) => {
                    block_n_avx2::<1, true>(base, koff, weights, bias, lo, hi, group, outs)
                }
                (n, _) => unreachable!("{n} jobs in a group"),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block_n_avx2<const V: usize, const CLIP: bool>(
        base: *const f32,
        koff: &[u32],
        weights: *const f32,
        bias: &[f32],
        lo: f32,
        hi: f32,
        group: &[Job],
        outs: &[*mut f32],
    ) {
        const R: usize = MR / 2;
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); V]; R];
            for j in 0..R {
                let b = _mm256_set1_ps(bias[j]);
                for v in 0..V {
                    acc[j][v] = b;
                }
            }
            let mut at = [0usize; V];
            let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let mut lanes = [iota; V];
            for v in 0..V {
                at[v] = group[v].inp as usize;
                lanes[v] = _mm256_cmpgt_epi32(_mm256_set1_epi32(group[v].lanes as i32), iota);
            }
            let mut w = weights;
            for &k in koff {
                _mm_prefetch::<_MM_HINT_T0>(w.add(WEIGHT_PREFETCH) as *const i8);
                let p = base.add(k as usize);
                let mut x = [_mm256_setzero_ps(); V];
                for v in 0..V {
                    x[v] = _mm256_maskload_ps(p.add(at[v]), lanes[v]);
                }
                for j in 0..R {
                    let wj = _mm256_broadcast_ss(&*w.add(j));
                    for v in 0..V {
                        acc[j][v] = _mm256_fmadd_ps(wj, x[v], acc[j][v]);
                    }
                }
                w = w.add(MR);
            }
            let (lov, hiv) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
            let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            for j in 0..R {
                for v in 0..V {
                    let mut r = acc[j][v];
                    if CLIP {
                        r = _mm256_min_ps(_mm256_max_ps(r, lov), hiv);
                    }
                    let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(group[v].lanes as i32), iota);
                    _mm256_maskstore_ps(outs[j].add(group[v].out as usize), mask, r);
                }
            }
        }
    }
}

/// What [`rewrite_dense`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DenseReport {
    /// `Conv` nodes now running [`FastConv`].
    pub replaced: usize,
    /// Zero `Pad` nodes folded into them.
    pub folded_pads: usize,
    /// Group-1 `Conv` nodes left to tract, with the reason.
    pub skipped: Vec<(String, String)>,
}

/// Replaces the group-1 f32 `Conv` nodes of a typed model by [`FastConv`] (weights and bias
/// must be constants). Call on the model `into_typed()` returns, before any decluttering:
/// tract's declutter turns 1x1 convolutions into `EinSum` + `Add`.
pub fn rewrite_dense(model: &mut TypedModel) -> TractResult<DenseReport> {
    let mut report = DenseReport::default();
    let candidates: Vec<usize> = model
        .nodes
        .iter()
        .filter(|n| n.op_as::<Conv>().is_some_and(|c| c.group == 1))
        .map(|n| n.id)
        .collect();
    for id in candidates {
        let node = model.node(id);
        match dense_for_node(model, node) {
            Ok(mut op) => {
                let mut input = node.inputs[0];
                if let Some((padded_from, pads)) = foldable_pad(model, input) {
                    op.geo.h -= pads[0] + pads[1];
                    op.geo.w -= pads[2] + pads[3];
                    op.geo.pad_top += pads[0];
                    op.geo.pad_bottom += pads[1];
                    op.geo.pad_left += pads[2];
                    op.geo.pad_right += pads[3];
                    input = padded_from;
                    report.folded_pads += 1;
                }
                let mut patch = TypedModelPatch::default();
                let tap = patch.tap_model(model, input)?;
                let wire = patch.wire_node(&node.name, op, &[tap])?;
                patch.shunt_outside(model, OutletId::new(id, 0), wire[0])?;
                patch.obliterate(id)?;
                patch.apply(model)?;
                report.replaced += 1;
            }
            Err(e) => report.skipped.push((node.name.clone(), format!("{e:#}"))),
        }
    }
    if report.replaced > 0 {
        model.compact()?;
    }
    Ok(report)
}

fn dense_for_node(model: &TypedModel, node: &TypedNode) -> TractResult<FastConv> {
    let conv = node.op_as::<Conv>().context("not a Conv")?;
    let spec = &conv.pool_spec;
    ensure!(
        conv.group == 1 && conv.q_params.is_none(),
        "grouped or quantized"
    );
    ensure!(
        conv.kernel_fmt == KernelFormat::OIHW,
        "kernel format {:?}",
        conv.kernel_fmt
    );
    ensure!(node.inputs.len() == 3, "{} inputs", node.inputs.len());
    let x = model.outlet_fact(node.inputs[0])?;
    let kernel = model.outlet_fact(node.inputs[1])?;
    let bias = model.outlet_fact(node.inputs[2])?;
    ensure!(
        x.datum_type == f32::datum_type() && !x.is_exotic(),
        "input {x:?}"
    );
    let _ = (kernel, bias);
    let kernel = const_value(model, node.inputs[1], 4).context("kernel is not a constant")?;
    let bias = const_value(model, node.inputs[2], 4).context("bias is not a constant")?;
    ensure!(kernel.datum_type() == f32::datum_type() && bias.datum_type() == f32::datum_type());
    let shape = x.shape.as_concrete().context("symbolic input shape")?;
    let out_shape = node.outputs[0]
        .fact
        .shape
        .as_concrete()
        .context("symbolic output")?;
    let rank = shape.len();
    ensure!(
        matches!(
            (spec.data_format, rank),
            (DataFormat::NCHW, 4) | (DataFormat::CHW, 3)
        ),
        "{:?} with rank {rank}",
        spec.data_format
    );
    ensure!(
        spec.kernel_shape.len() == 2,
        "{} spatial axes",
        spec.kernel_shape.len()
    );
    ensure!(spec.dilations().iter().all(|&d| d == 1), "dilations");
    let (n, c, h, w) = if rank == 4 {
        (shape[0], shape[1], shape[2], shape[3])
    } else {
        (1, shape[0], shape[1], shape[2])
    };
    let cout = spec.output_channels;
    ensure!(
        kernel.shape() == [cout, c, spec.kernel_shape[0], spec.kernel_shape[1]],
        "kernel {:?}",
        kernel.shape()
    );
    let pads = spec.computed_padding(&[h, w]);
    let strides = spec.strides();
    let geo = Geometry {
        n,
        c,
        h,
        w,
        kh: spec.kernel_shape[0],
        kw: spec.kernel_shape[1],
        sh: strides[0],
        sw: strides[1],
        pad_top: pads[0].pad_before,
        pad_left: pads[1].pad_before,
        pad_bottom: pads[0].pad_after,
        pad_right: pads[1].pad_after,
    };
    let kernel_values = kernel.try_as_plain_ram()?.as_slice::<f32>()?;
    let bias_values: Vec<f32> = match bias.len() {
        1 => vec![bias.cast_to_scalar::<f32>()?; cout],
        l if l == cout => bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec(),
        l => bail!("{l} biases for {cout} channels"),
    };
    let op = FastConv::new(geo, cout, rank, kernel_values, &bias_values)?;
    ensure!(
        op.shapes().1.as_slice() == out_shape,
        "output {out_shape:?} vs {:?}",
        op.shapes().1
    );
    Ok(op)
}

/// A constant zero `Pad` on the two spatial axes only producing `outlet` for one consumer: its
/// input, and the padding (top, bottom, left, right) a convolution can take over.
fn foldable_pad(model: &TypedModel, outlet: OutletId) -> Option<(OutletId, [usize; 4])> {
    use tract_onnx::tract_core::ops::array::{Pad, PadMode};
    let node = model.node(outlet.node);
    let pad = node.op_as::<Pad>()?;
    let PadMode::Constant(value) = &pad.mode else {
        return None;
    };
    if !value.is_zero().ok()? || model.outlet_successors(outlet).len() != 1 {
        return None;
    }
    if model.outputs.contains(&outlet) {
        return None;
    }
    let rank = pad.pads.len();
    if rank < 3 || pad.pads[..rank - 2].iter().any(|&(a, b)| a != 0 || b != 0) {
        return None;
    }
    let (top, bottom) = pad.pads[rank - 2];
    let (left, right) = pad.pads[rank - 1];
    Some((node.inputs[0], [top, bottom, left, right]))
}

/// The value of `outlet` if it is a constant, or computed from constants alone within `depth`
/// nodes (the ONNX importer routes a convolution's bias through a `Cast` that tract folds only
/// when it declutters).
fn const_value(model: &TypedModel, outlet: OutletId, depth: usize) -> Option<Arc<Tensor>> {
    let fact = model.outlet_fact(outlet).ok()?;
    if let Some(k) = &fact.konst {
        return Some(k.clone());
    }
    let node = model.node(outlet.node);
    if depth == 0 || node.inputs.is_empty() {
        return None;
    }
    let inputs = node
        .inputs
        .iter()
        .map(|i| const_value(model, *i, depth - 1).map(|t| t.into_tvalue()))
        .collect::<Option<TVec<TValue>>>()?;
    let outputs = node.op.eval_out_of_plan(inputs).ok()??;
    outputs
        .get(outlet.slot)
        .map(|v| v.clone().into_arc_tensor())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::cnn::{PaddingSpec, PoolSpec};

    fn rng_vec(seed: &mut u64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                (*seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn tract_vs_ours(
        seed: &mut u64,
        n: usize,
        cin: usize,
        cout: usize,
        h: usize,
        w: usize,
        k: (usize, usize),
        s: (usize, usize),
        pads: ([usize; 2], [usize; 2]),
    ) {
        tract_vs_ours_padded(seed, n, cin, cout, h, w, k, s, pads, None)
    }

    #[allow(clippy::too_many_arguments)]
    fn tract_vs_ours_padded(
        seed: &mut u64,
        n: usize,
        cin: usize,
        cout: usize,
        h: usize,
        w: usize,
        k: (usize, usize),
        s: (usize, usize),
        pads: ([usize; 2], [usize; 2]),
        pad_op: Option<[usize; 4]>,
    ) {
        use tract_onnx::tract_core::ops::array::{Pad, PadMode};
        let x = rng_vec(seed, n * cin * h * w);
        let kernel = rng_vec(seed, cout * cin * k.0 * k.1);
        let bias = rng_vec(seed, cout);
        let mut model = TypedModel::default();
        let mut xv = model.add_source("x", f32::fact([n, cin, h, w])).unwrap();
        let (mut ch, mut cw) = (h, w);
        if let Some([t, b, l, r]) = pad_op {
            let pad = Pad::new(
                vec![(0, 0), (0, 0), (t, b), (l, r)],
                PadMode::Constant(tensor0(0f32).into_arc_tensor()),
            );
            xv = model.wire_node("pad", pad, &[xv]).unwrap()[0];
            (ch, cw) = (h + t + b, w + l + r);
        }
        let _ = (ch, cw);
        let kv = model
            .add_const(
                "k",
                Tensor::from_shape(&[cout, cin, k.0, k.1], &kernel).unwrap(),
            )
            .unwrap();
        let bv = model
            .add_const("b", Tensor::from_shape(&[cout], &bias).unwrap())
            .unwrap();
        let conv = Conv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec!(k.0, k.1),
                padding: PaddingSpec::Explicit(
                    pads.0.iter().copied().collect(),
                    pads.1.iter().copied().collect(),
                ),
                dilations: None,
                strides: Some(tvec!(s.0, s.1)),
                input_channels: cin,
                output_channels: cout,
            },
            kernel_fmt: KernelFormat::OIHW,
            group: 1,
            q_params: None,
        };
        let out = model.wire_node("conv", conv, &[xv, kv, bv]).unwrap();
        model.select_output_outlets(&out).unwrap();
        let mut ours = model.clone();
        let report = rewrite_dense(&mut ours).unwrap();
        assert_eq!(report.replaced, 1, "{report:?}");
        assert_eq!(report.folded_pads, pad_op.is_some() as usize, "{report:?}");
        let op = ours
            .nodes
            .iter()
            .find_map(|n| n.op_as::<FastConv>())
            .unwrap()
            .clone();
        let input = Tensor::from_shape(&[n, cin, h, w], &x).unwrap();
        let plan = model.into_optimized().unwrap().into_runnable().unwrap();
        let want: Vec<f32> = plan.run(tvec!(input.clone().into_tvalue())).unwrap()[0]
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect();
        let plan = ours.into_optimized().unwrap().into_runnable().unwrap();
        let got: Vec<f32> = plan.run(tvec!(input.into_tvalue())).unwrap()[0]
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect();
        let tol = 1e-5 * (cin * k.0 * k.1) as f32;
        let check = |got: &[f32], what: &str| {
            assert_eq!(got.len(), want.len());
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= tol * w.abs().max(1.0),
                    "{what} {op:?} at {i}: {g} vs {w}"
                );
            }
        };
        check(&got, "plan");
        for isa in Isa::available() {
            let mut out = vec![f32::NAN; want.len()];
            dense(&op, &x, isa, &mut out);
            check(&out, &format!("{isa:?}"));
        }
    }

    #[test]
    fn dense_matches_tract() {
        let mut seed = 0x1234_5678_9abc_def1u64;
        // ResNet18-like, EfficientNet-Lite0-like, odd sizes, strides and paddings.
        tract_vs_ours(
            &mut seed,
            1,
            3,
            16,
            30,
            30,
            (7, 7),
            (2, 2),
            ([3, 3], [3, 3]),
        );
        tract_vs_ours(
            &mut seed,
            1,
            3,
            32,
            24,
            24,
            (3, 3),
            (2, 2),
            ([0, 0], [1, 1]),
        );
        tract_vs_ours(
            &mut seed,
            1,
            16,
            24,
            14,
            14,
            (3, 3),
            (1, 1),
            ([1, 1], [1, 1]),
        );
        tract_vs_ours(&mut seed, 2, 8, 16, 9, 11, (3, 3), (2, 2), ([1, 1], [1, 1]));
        tract_vs_ours(&mut seed, 1, 24, 40, 7, 7, (1, 1), (1, 1), ([0, 0], [0, 0]));
        tract_vs_ours(
            &mut seed,
            1,
            16,
            20,
            12,
            12,
            (1, 1),
            (2, 2),
            ([0, 0], [0, 0]),
        );
        tract_vs_ours(&mut seed, 3, 5, 13, 17, 6, (5, 3), (1, 2), ([2, 0], [1, 2]));
        tract_vs_ours(
            &mut seed,
            1,
            64,
            64,
            56,
            56,
            (3, 3),
            (1, 1),
            ([1, 1], [1, 1]),
        );
    }

    #[test]
    fn dense_matches_tract_on_random_shapes() {
        let mut seed = 0x0dd5_eed5u64;
        let mut pick = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for _ in 0..25 {
            let k = [(1, 1), (3, 3), (5, 5), (7, 7), (3, 1)][pick(5)];
            let s = (1 + pick(2), 1 + pick(2));
            let pads = ([pick(k.0), pick(k.1)], [pick(k.0), pick(k.1)]);
            let (h, w) = (k.0 + pick(20), k.1 + pick(20));
            let (n, cin, cout) = (1 + pick(2), 1 + pick(12), 1 + pick(20));
            let mut s2 = pick(1 << 30) as u64 | 1;
            tract_vs_ours(&mut s2, n, cin, cout, h, w, k, s, pads);
        }
    }

    #[test]
    fn dense_folds_a_zero_pad() {
        let mut seed = 77;
        // EfficientNet-Lite0's stem: Pad (0, 1, 0, 1), then a valid 3x3 stride 2.
        tract_vs_ours_padded(
            &mut seed,
            1,
            3,
            32,
            32,
            32,
            (3, 3),
            (2, 2),
            ([0, 0], [0, 0]),
            Some([0, 1, 0, 1]),
        );
        tract_vs_ours_padded(
            &mut seed,
            2,
            4,
            8,
            9,
            10,
            (3, 3),
            (1, 1),
            ([1, 0], [0, 1]),
            Some([2, 1, 0, 3]),
        );
    }
}
