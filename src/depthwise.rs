//! Fast f32 convolution ops for CNNs, plugged into tract's graph: a depthwise convolution (the
//! point of this module), and on the same plane machinery a max-pool and, in [`dense`], a dense
//! convolution.
//!
//! tract 0.23.9 runs depthwise convolutions through a generic scalar loop on x86 (its vectorised
//! kernels exist for arm64 and wasm only); on EfficientNet-Lite0 that is 60% of the time for a
//! few percent of the FLOPs. [`rewrite`] walks a model after `into_optimized()` and replaces every
//! `DepthWiseConv` node it supports (f32, CHW/NCHW, any kernel size with 9 or 25 taps, dilation
//! 1, explicit or valid padding, any stride) by [`FastDepthwise`], keeping the node's inputs
//! (data, kernel `[C, 1, kh*kw]`, bias of `C` values) and its output fact; likewise `OptMaxPool`
//! by [`FastMaxPool`]. When a replaced convolution's only consumer is a ReLU6
//! (`OptBinChain(Max+Min)` against two scalar constants) or a ReLU (`OptMaxByScalar`), the clamp
//! is folded into it and that node leaves the graph. Everything else stays with tract.
//! [`dense::rewrite_dense`] runs earlier, on the typed model, for the group-1 convolutions.
//!
//! The kernel, per (batch, channel) plane:
//! 1. copy the plane into scratch with the padding around it (zeros; -inf for the max-pool); for
//!    stride `s` the padded plane is split into `s*s` phase planes (rows and columns by their
//!    index modulo `s`), so every tap of a strided convolution becomes a contiguous read;
//! 2. compute `out = bias + sum_t w_t * src_t[o]` (or `max_t src_t[o]`) over runs of outputs,
//!    where each tap `t` is a pointer into one phase plane: either one output row at a time, or,
//!    for small planes, the whole plane at once over the phase width (the extra columns are
//!    computed and dropped), whichever needs fewer vectors; vectors are taken four at a time
//!    (across rows when rows are short) with two partial sums each, eight FMA chains in flight;
//! 3. clamp (if an activation was fused) and store.
//!
//! Step 2 uses AVX-512F or AVX2+FMA when the CPU has them (runtime detection) and a portable
//! loop otherwise. Products are fused multiply-adds on the SIMD paths, so results may differ
//! from tract's (separate multiply and add) in the last bits. The loops run under tract's
//! executor: a plan with intra-op threads splits the planes across them.

// The SIMD kernels index several arrays (sources, weights, accumulators) by one tap or lane
// index; iterators would hide that they move together.
#![allow(clippy::needless_range_loop)]

use std::fmt;

pub mod dense;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::OptMaxPool;
use tract_onnx::tract_core::ops::nn::DataFormat;

/// Where a depthwise convolution reads and writes: one spatial 2-D convolution per channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// Batch size (1 for a batchless CHW tensor).
    pub n: usize,
    /// Channels (= groups = output channels).
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Vertical stride.
    pub sh: usize,
    /// Horizontal stride.
    pub sw: usize,
    /// Zero rows above the input.
    pub pad_top: usize,
    /// Zero columns left of the input.
    pub pad_left: usize,
    /// Zero rows below the input.
    pub pad_bottom: usize,
    /// Zero columns right of the input.
    pub pad_right: usize,
}

impl Geometry {
    fn padded_h(&self) -> usize {
        self.h + self.pad_top + self.pad_bottom
    }

    fn padded_w(&self) -> usize {
        self.w + self.pad_left + self.pad_right
    }

    /// Whether the geometry describes a convolution with at least one output.
    pub fn is_valid(&self) -> bool {
        self.n > 0
            && self.c > 0
            && self.h > 0
            && self.w > 0
            && self.kh > 0
            && self.kw > 0
            && self.sh > 0
            && self.sw > 0
            && self.padded_h() >= self.kh
            && self.padded_w() >= self.kw
    }

    /// Output height.
    pub fn oh(&self) -> usize {
        (self.padded_h() - self.kh) / self.sh + 1
    }

    /// Output width.
    pub fn ow(&self) -> usize {
        (self.padded_w() - self.kw) / self.sw + 1
    }

    /// Rows of one phase plane.
    fn hq(&self) -> usize {
        self.padded_h().div_ceil(self.sh)
    }

    /// Columns of one phase plane: also the row pitch of the flat output layout.
    fn wq(&self) -> usize {
        self.padded_w().div_ceil(self.sw)
    }

    /// Floats per phase plane, with room for the vector reads past the last row.
    fn phase_len(&self) -> usize {
        (self.hq() * self.wq() + self.kw + 2 * LANES_MAX * UNROLL).next_multiple_of(16)
    }

    fn taps(&self) -> usize {
        self.kh * self.kw
    }
}

/// Widest vector any path uses, in f32 lanes.
const LANES_MAX: usize = 16;
/// Output vectors in flight on the SIMD paths; each keeps two partial sums (even and odd
/// taps), so eight FMA chains hide the FMA latency.
const UNROLL: usize = 4;

/// Which instruction set runs the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// AVX-512F, 16 lanes.
    Avx512,
    /// AVX2 with FMA, 8 lanes.
    Avx2,
    /// Plain Rust the compiler vectorises for the baseline target.
    Portable,
}

impl Isa {
    /// The best instruction set this CPU has.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// Every instruction set this CPU can run, best first (for tests and benchmarks).
    pub fn available() -> Vec<Isa> {
        let mut all = vec![];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                all.push(Isa::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                all.push(Isa::Avx2);
            }
        }
        all.push(Isa::Portable);
        all
    }

    fn lanes(self) -> usize {
        match self {
            Isa::Avx512 => 16,
            Isa::Avx2 => 8,
            Isa::Portable => 8,
        }
    }
}

/// Tap counts with a compiled kernel (3x3 and 5x5, or 1x9 / 9x1).
fn supported_taps(taps: usize) -> bool {
    matches!(taps, 9 | 25)
}

/// A clamp applied to every output (a fused ReLU6), bounds kept as bits so the op is `Eq`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Clip {
    lo: u32,
    hi: u32,
}

impl Clip {
    /// `min(max(x, lo), hi)`.
    pub fn new(lo: f32, hi: f32) -> Clip {
        Clip {
            lo: lo.to_bits(),
            hi: hi.to_bits(),
        }
    }

    /// The lower bound.
    pub fn lo(&self) -> f32 {
        f32::from_bits(self.lo)
    }

    /// The upper bound.
    pub fn hi(&self) -> f32 {
        f32::from_bits(self.hi)
    }
}

impl fmt::Debug for Clip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "clip({}, {})", self.lo(), self.hi())
    }
}

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

    fn shapes(&self) -> (TVec<usize>, TVec<usize>) {
        (self.input_shape(), self.output_shape())
    }

    fn input_shape(&self) -> TVec<usize> {
        let g = &self.geo;
        if self.rank == 4 {
            tvec!(g.n, g.c, g.h, g.w)
        } else {
            tvec!(g.c, g.h, g.w)
        }
    }

    fn output_shape(&self) -> TVec<usize> {
        let g = &self.geo;
        if self.rank == 4 {
            tvec!(g.n, g.c, g.oh(), g.ow())
        } else {
            tvec!(g.c, g.oh(), g.ow())
        }
    }
}

impl Op for FastDepthwise {
    fn name(&self) -> StaticName {
        "FastDepthwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let g = &self.geo;
        Ok(vec![format!(
            "{}x{} stride {}x{} pad t{} l{} b{} r{} c={} {}x{}{}",
            g.kh,
            g.kw,
            g.sh,
            g.sw,
            g.pad_top,
            g.pad_left,
            g.pad_bottom,
            g.pad_right,
            g.c,
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

impl EvalOp for FastDepthwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x, kernel, bias) = args_3!(inputs);
        ensure!(
            x.datum_type() == f32::datum_type(),
            "FastDepthwise runs f32 only"
        );
        ensure!(
            x.shape() == &*self.input_shape(),
            "FastDepthwise expected {:?}, got {:?}",
            self.input_shape(),
            x.shape()
        );
        let g = &self.geo;
        let x = x.try_as_plain_ram()?.as_slice::<f32>()?;
        let kernel = kernel.cast_to::<f32>()?;
        let kernel = kernel.try_as_plain_ram()?.as_slice::<f32>()?;
        let bias = bias.cast_to::<f32>()?;
        let bias = bias.try_as_plain_ram()?.as_slice::<f32>()?;
        ensure!(kernel.len() == g.c * g.taps() && bias.len() == g.c);
        let mut output = unsafe { Tensor::uninitialized::<f32>(&self.output_shape())? };
        {
            let mut view = output.try_as_plain_ram_mut()?;
            let out = view.as_slice_mut::<f32>()?;
            depthwise_threaded(g, x, kernel, bias, self.clip, Isa::detect(), out)?;
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for FastDepthwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 3);
        ensure!(inputs[0].datum_type == f32::datum_type());
        ensure!(inputs[0].shape.as_concrete() == Some(&*self.input_shape()));
        Ok(tvec!(f32::fact(&*self.output_shape())))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let g = &self.geo;
        let fma = g.n * g.c * g.oh() * g.ow() * g.taps();
        Ok(tvec!((Cost::FMA(f32::datum_type()), fma.into())))
    }

    as_op!();
}

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

    fn shapes(&self) -> (TVec<usize>, TVec<usize>) {
        FastDepthwise {
            geo: self.geo,
            rank: self.rank,
            clip: None,
        }
        .shapes()
    }
}

impl Op for FastMaxPool {
    fn name(&self) -> StaticName {
        "FastMaxPool".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let g = &self.geo;
        Ok(vec![format!(
            "{}x{} stride {}x{} pad t{} l{} b{} r{} c={} {}x{}",
            g.kh, g.kw, g.sh, g.sw, g.pad_top, g.pad_left, g.pad_bottom, g.pad_right, g.c, g.h, g.w
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for FastMaxPool {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let (input_shape, output_shape) = self.shapes();
        ensure!(
            x.datum_type() == f32::datum_type(),
            "FastMaxPool runs f32 only"
        );
        ensure!(
            x.shape() == &*input_shape,
            "FastMaxPool expected {input_shape:?}, got {:?}",
            x.shape()
        );
        let x = x.try_as_plain_ram()?.as_slice::<f32>()?;
        let mut output = unsafe { Tensor::uninitialized::<f32>(&output_shape)? };
        {
            let mut view = output.try_as_plain_ram_mut()?;
            let out = view.as_slice_mut::<f32>()?;
            let g = &self.geo;
            let plane = g.oh() * g.ow();
            let work = out.len() * g.taps();
            let isa = Isa::detect();
            tract_linalg::multithread::par_chunks_mut(out, plane, work, |first, chunk| {
                let planes = first..first + chunk.len() / plane;
                run_planes(Reduce::Max, g, x, &[], &[], None, isa, planes, chunk);
                Ok(())
            })?;
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for FastMaxPool {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let (input_shape, output_shape) = self.shapes();
        ensure!(inputs.len() == 1);
        ensure!(inputs[0].datum_type == f32::datum_type());
        ensure!(inputs[0].shape.as_concrete() == Some(&*input_shape));
        Ok(tvec!(f32::fact(&*output_shape)))
    }

    as_op!();
}

/// Max pooling of `x` (`n*c*h*w`, NCHW) into `out` (`n*c*oh*ow`); padding cells count as
/// -inf. Panics on wrong lengths, an invalid geometry or an unsupported tap count.
pub fn maxpool(g: &Geometry, x: &[f32], isa: Isa, out: &mut [f32]) {
    run_planes(Reduce::Max, g, x, &[], &[], None, isa, 0..g.n * g.c, out)
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

/// What every plane of one call shares.
struct PlaneSetup {
    geo: Geometry,
    oh: usize,
    ow: usize,
    wq: usize,
    phase_len: usize,
    /// Compute the whole plane as one run over the phase width, then copy the rows out.
    flat: bool,
    /// The output vectors of one plane.
    jobs: Vec<Job>,
    /// Where tap `t = ky * kw + kx` reads in the scratch, for output 0.
    tap_offsets: Vec<usize>,
    /// Where input row `y` goes in the scratch: for stride 1 its start; for stride 2 where
    /// its even and its odd columns start (see `plane_loop!`).
    row_dst: Vec<(usize, usize)>,
}

impl PlaneSetup {
    fn new(g: &Geometry, lanes: usize) -> PlaneSetup {
        let (oh, ow, wq) = (g.oh(), g.ow(), g.wq());
        let phase_len = g.phase_len();
        // Whole plane at once (over the phase width, extra columns computed and dropped, then
        // a copy) or row by row (a partial vector at the end of every row): fewer vector FMAs
        // wins.
        let flat_cost = (oh * wq).div_ceil(lanes) * g.taps() + 2 * (oh * ow).div_ceil(lanes);
        let row_cost = oh * ow.div_ceil(lanes) * g.taps();
        let flat = flat_cost < row_cost;
        let jobs = if flat {
            jobs(1, oh * wq, 0, 0, lanes)
        } else {
            jobs(oh, ow, wq, ow, lanes)
        };
        // Tap (ky, kx) reads phase (ky % sh, kx % sw) at offset (ky / sh) * wq + kx / sw.
        let mut tap_offsets = Vec::with_capacity(g.taps());
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let phase = (ky % g.sh) * g.sw + kx % g.sw;
                tap_offsets.push(phase * phase_len + (ky / g.sh) * wq + kx / g.sw);
            }
        }
        let row_dst = (0..g.h)
            .map(|y| {
                let yp = y + g.pad_top;
                let (ry, qy) = (yp % g.sh, yp / g.sh);
                let row_base = ry * g.sw * phase_len + qy * wq;
                if g.sw == 2 {
                    // Input column x sits at padded column x + pad_left, in phase
                    // (x + pad_left) % 2 at index (x + pad_left) / 2.
                    let (even_phase, odd_phase) = if g.pad_left.is_multiple_of(2) {
                        (0, 1)
                    } else {
                        (1, 0)
                    };
                    (
                        row_base + even_phase * phase_len + g.pad_left / 2,
                        row_base + odd_phase * phase_len + g.pad_left.div_ceil(2),
                    )
                } else {
                    (row_base + g.pad_left, 0)
                }
            })
            .collect();
        PlaneSetup {
            geo: *g,
            oh,
            ow,
            wq,
            phase_len,
            flat,
            jobs,
            tap_offsets,
            row_dst,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn depthwise_planes(
    g: &Geometry,
    x: &[f32],
    kernel: &[f32],
    bias: &[f32],
    clip: Option<Clip>,
    isa: Isa,
    planes: std::ops::Range<usize>,
    out: &mut [f32],
) {
    assert_eq!(kernel.len(), g.c * g.taps());
    assert_eq!(bias.len(), g.c);
    run_planes(Reduce::Conv, g, x, kernel, bias, clip, isa, planes, out)
}

/// What a plane loop computes over the taps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reduce {
    /// `bias + sum_t w_t * x_t`, padding 0.
    Conv,
    /// `max_t x_t`, padding -inf.
    Max,
}

#[allow(clippy::too_many_arguments)]
fn run_planes(
    reduce: Reduce,
    g: &Geometry,
    x: &[f32],
    kernel: &[f32],
    bias: &[f32],
    clip: Option<Clip>,
    isa: Isa,
    planes: std::ops::Range<usize>,
    out: &mut [f32],
) {
    assert!(g.is_valid() && supported_taps(g.taps()));
    assert_eq!(x.len(), g.n * g.c * g.h * g.w);
    assert!(planes.end <= g.n * g.c);
    assert_eq!(out.len(), planes.len() * g.oh() * g.ow());
    assert!(g.phase_len() * g.sh * g.sw < u32::MAX as usize);
    let setup = PlaneSetup::new(g, isa.lanes());
    let pad = match reduce {
        Reduce::Conv => 0.0,
        Reduce::Max => f32::NEG_INFINITY,
    };
    let scratch_len = g.sh * g.sw * setup.phase_len;
    let flat_len = if setup.flat {
        (setup.oh * setup.wq).next_multiple_of(LANES_MAX)
    } else {
        0
    };
    let (lo, hi) = clip.map(|c| (c.lo(), c.hi())).unwrap_or((0.0, 0.0));
    let no_weights;
    let (kernel, bias) = match reduce {
        Reduce::Conv => (kernel, bias),
        Reduce::Max => {
            no_weights = vec![0f32; g.c * g.taps()];
            (&no_weights[..], &no_weights[..g.c])
        }
    };
    let args = PlaneArgs {
        setup: &setup,
        x,
        kernel,
        bias,
        lo,
        hi,
    };
    let clip = clip.is_some();
    with_buffers(scratch_len, flat_len, |scratch, flat_out| {
        // The padding cells keep this value: every plane overwrites only the interior.
        clear_padding(&setup, scratch, pad);
        let bufs = (scratch, flat_out);
        match g.taps() {
            9 => planes_for::<9>(reduce, isa, clip, &args, planes, out, bufs),
            25 => planes_for::<25>(reduce, isa, clip, &args, planes, out, bufs),
            n => unreachable!("no kernel for {n} taps"),
        }
    })
}

/// Sets every cell of one channel's phase planes that the fill does not write (padding, unused
/// phase cells, the slack past the last row) to `value`: the scratch is reused from call to
/// call and from geometry to geometry, so only the fill's cells may hold anything else.
fn clear_padding(setup: &PlaneSetup, phases: &mut [f32], value: f32) {
    let g = &setup.geo;
    let (wq, phase_len) = (setup.wq, setup.phase_len);
    let hq = g.hq();
    for ry in 0..g.sh {
        // Input rows y landing in phase row `ry`: (y + pad_top) % sh == ry, at (y + pad_top) / sh.
        let first_y = (ry + g.sh - g.pad_top % g.sh) % g.sh;
        let rows = if first_y < g.h {
            let r0 = (first_y + g.pad_top) / g.sh;
            r0..r0 + (g.h - first_y).div_ceil(g.sh)
        } else {
            0..0
        };
        for rx in 0..g.sw {
            let first_x = (rx + g.sw - g.pad_left % g.sw) % g.sw;
            let cols = if first_x < g.w {
                let c0 = (first_x + g.pad_left) / g.sw;
                c0..c0 + (g.w - first_x).div_ceil(g.sw)
            } else {
                0..0
            };
            let plane = &mut phases[(ry * g.sw + rx) * phase_len..][..phase_len];
            for qy in 0..hq {
                let row = &mut plane[qy * wq..][..wq];
                if rows.contains(&qy) && !cols.is_empty() {
                    row[..cols.start].fill(value);
                    row[cols.end..].fill(value);
                } else {
                    row.fill(value);
                }
            }
            plane[hq * wq..].fill(value);
        }
    }
}

thread_local! {
    /// Scratch and output staging reused across calls on this thread (fresh zeroed megabytes on
    /// every call cost page faults and memsets; a profile put them at several percent).
    static BUFFERS: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const { std::cell::RefCell::new((vec![], vec![])) };
}

/// Runs `f` on this thread's reusable buffers, grown to `a` and `b` floats (contents
/// unspecified), or on fresh ones when they are already in use.
fn with_buffers<R>(a: usize, b: usize, f: impl FnOnce(&mut [f32], &mut [f32]) -> R) -> R {
    BUFFERS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => {
            let (x, y) = &mut *bufs;
            if x.len() < a {
                x.resize(a, 0.0);
            }
            if y.len() < b {
                y.resize(b, 0.0);
            }
            f(&mut x[..a], &mut y[..b])
        }
        Err(_) => f(&mut vec![0.0; a], &mut vec![0.0; b]),
    })
}

/// The inputs of a run of planes.
struct PlaneArgs<'a> {
    setup: &'a PlaneSetup,
    x: &'a [f32],
    kernel: &'a [f32],
    bias: &'a [f32],
    lo: f32,
    hi: f32,
}

#[allow(clippy::too_many_arguments)]
fn planes_for<const T: usize>(
    reduce: Reduce,
    isa: Isa,
    clip: bool,
    args: &PlaneArgs,
    planes: std::ops::Range<usize>,
    out: &mut [f32],
    (scratch, flat_out): (&mut [f32], &mut [f32]),
) {
    let (p, o, s, f) = (planes, out, scratch, flat_out);
    // Safety: the x86 paths run only on an `Isa` detected on this CPU; the buffers were sized
    // by `PlaneSetup` for its jobs.
    unsafe {
        match (reduce, isa, clip) {
            #[cfg(target_arch = "x86_64")]
            (Reduce::Conv, Isa::Avx512, false) => x86::planes_avx512::<T, false>(args, p, o, s, f),
            #[cfg(target_arch = "x86_64")]
            (Reduce::Conv, Isa::Avx512, true) => x86::planes_avx512::<T, true>(args, p, o, s, f),
            #[cfg(target_arch = "x86_64")]
            (Reduce::Conv, Isa::Avx2, false) => x86::planes_avx2::<T, false>(args, p, o, s, f),
            #[cfg(target_arch = "x86_64")]
            (Reduce::Conv, Isa::Avx2, true) => x86::planes_avx2::<T, true>(args, p, o, s, f),
            (Reduce::Conv, _, false) => planes_portable::<T, false>(args, p, o, s, f),
            (Reduce::Conv, _, true) => planes_portable::<T, true>(args, p, o, s, f),
            #[cfg(target_arch = "x86_64")]
            (Reduce::Max, Isa::Avx512, _) => x86::maxpool_avx512::<T, false>(args, p, o, s, f),
            #[cfg(target_arch = "x86_64")]
            (Reduce::Max, Isa::Avx2, _) => x86::maxpool_avx2::<T, false>(args, p, o, s, f),
            (Reduce::Max, _, _) => maxpool_portable::<T, false>(args, p, o, s, f),
        }
    }
}

/// Copies one input plane into its phase planes in `scratch` (the padding cells are left
/// alone), stamped out once per instruction set so that the row copies inline.
macro_rules! fill_fn {
    ($(#[$attr:meta])* $vis:vis fn $name:ident, $copy:ident, $deinterleave:ident) => {
        $(#[$attr])*
        #[inline]
        $vis unsafe fn $name(setup: &$crate::depthwise::PlaneSetup, src: &[f32], scratch: &mut [f32]) {
            let g = &setup.geo;
            let (wq, phase_len) = (setup.wq, setup.phase_len);
            for (y, &(at, odd_at)) in setup.row_dst.iter().enumerate() {
                let row = &src[y * g.w..][..g.w];
                if g.sw == 1 {
                    unsafe { $copy(row, &mut scratch[at..][..g.w]) };
                } else if g.sw == 2 {
                    let (even, odd) = $crate::depthwise::split_two(
                        scratch,
                        at,
                        g.w.div_ceil(2),
                        odd_at,
                        g.w / 2,
                    );
                    unsafe { $deinterleave(row, even, odd) };
                } else {
                    let yp = y + g.pad_top;
                    let (ry, qy) = (yp % g.sh, yp / g.sh);
                    for (x, v) in row.iter().enumerate() {
                        let xp = x + g.pad_left;
                        let phase = ry * g.sw + xp % g.sw;
                        scratch[phase * phase_len + qy * wq + xp / g.sw] = *v;
                    }
                }
            }
        }
    };
}

/// The per-plane loop, stamped out once per instruction set so that the copies and the kernel
/// inline into it (a function call per short row costs more than the row):
/// 1. copy the plane into the phase planes of `scratch` (the padding cells stay as they are);
/// 2. run the taps over the jobs, into the output or (flat) into `flat_out`;
/// 3. (flat) copy the output rows out of `flat_out`.
macro_rules! plane_loop {
    ($(#[$attr:meta])* $vis:vis fn $name:ident, $taps:ident, $fill:ident, $copy:ident) => {
        $(#[$attr])*
        $vis unsafe fn $name<const T: usize, const CLIP: bool>(
            args: &$crate::depthwise::PlaneArgs,
            planes: std::ops::Range<usize>,
            out: &mut [f32],
            scratch: &mut [f32],
            flat_out: &mut [f32],
        ) {
            let setup = args.setup;
            let g = &setup.geo;
            let (oh, ow, wq) = (setup.oh, setup.ow, setup.wq);
            let in_plane = g.h * g.w;
            let out_plane = oh * ow;
            let mut ch = planes.start % g.c;
            for (ix, plane) in planes.enumerate() {
                let src = &args.x[plane * in_plane..][..in_plane];
                unsafe { $fill(setup, src, scratch) };
                let base = scratch.as_ptr();
                let mut srcs = [std::ptr::null::<f32>(); T];
                let mut w = [0f32; T];
                let weights = &args.kernel[ch * T..][..T];
                for t in 0..T {
                    srcs[t] = unsafe { base.add(setup.tap_offsets[t]) };
                    w[t] = weights[t];
                }
                let dst = &mut out[ix * out_plane..][..out_plane];
                let target = if setup.flat { flat_out.as_mut_ptr() } else { dst.as_mut_ptr() };
                unsafe {
                    $taps::<T, CLIP>(&srcs, &w, args.bias[ch], args.lo, args.hi, target, &setup.jobs)
                };
                if setup.flat {
                    for oy in 0..oh {
                        unsafe { $copy(&flat_out[oy * wq..][..ow], &mut dst[oy * ow..][..ow]) };
                    }
                }
                ch += 1;
                if ch == g.c {
                    ch = 0;
                }
            }
        }
    };
}

fill_fn!(fn fill_portable, copy_portable, deinterleave_portable);
plane_loop!(fn planes_portable, taps_portable, fill_portable, copy_portable);
plane_loop!(fn maxpool_portable, max_portable, fill_portable, copy_portable);

/// One output vector: its offset into every tap's source, its offset into the output, and
/// how many of its lanes are outputs.
#[derive(Debug, Clone, Copy, Default)]
struct Job {
    inp: u32,
    out: u32,
    lanes: u32,
}

/// The vectors of `lanes` lanes covering `rows` runs of `len` outputs (run `r` reads at
/// `r * in_pitch`, writes at `r * out_pitch`), row-major. The kernels take them [`UNROLL`] at a
/// time regardless of rows, so short rows still fill every accumulator.
fn jobs(rows: usize, len: usize, in_pitch: usize, out_pitch: usize, lanes: usize) -> Vec<Job> {
    let mut jobs = Vec::with_capacity(rows * len.div_ceil(lanes));
    for r in 0..rows {
        for col in (0..len).step_by(lanes) {
            jobs.push(Job {
                inp: (r * in_pitch + col) as u32,
                out: (r * out_pitch + col) as u32,
                lanes: lanes.min(len - col) as u32,
            });
        }
    }
    jobs
}

/// Two disjoint mutable ranges of one slice.
fn split_two(
    s: &mut [f32],
    a_at: usize,
    a_len: usize,
    b_at: usize,
    b_len: usize,
) -> (&mut [f32], &mut [f32]) {
    if a_at < b_at {
        assert!(a_at + a_len <= b_at);
        let (lo, hi) = s.split_at_mut(b_at);
        (&mut lo[a_at..][..a_len], &mut hi[..b_len])
    } else {
        assert!(b_at + b_len <= a_at);
        let (lo, hi) = s.split_at_mut(a_at);
        (&mut hi[..a_len], &mut lo[b_at..][..b_len])
    }
}

#[inline]
pub(crate) unsafe fn copy_portable(src: &[f32], dst: &mut [f32]) {
    dst.copy_from_slice(src);
}

/// `even[i] = src[2i]`, `odd[i] = src[2i + 1]`.
#[inline]
unsafe fn deinterleave_portable(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    deinterleave_tail(src, even, odd, 0);
}

/// [`deinterleave_portable`] from pair `from` on.
#[inline]
fn deinterleave_tail(src: &[f32], even: &mut [f32], odd: &mut [f32], from: usize) {
    assert!(even.len() == src.len().div_ceil(2) && odd.len() == src.len() / 2);
    for i in from..odd.len() {
        even[i] = src[2 * i];
        odd[i] = src[2 * i + 1];
    }
    if even.len() > odd.len() {
        even[odd.len()] = src[2 * odd.len()];
    }
}

/// `out[job.out + l] = clip(bias + sum_t w[t] * src[t][job.inp + l])` for every job and
/// `l < job.lanes`: the portable kernel, eight independent lanes the compiler vectorises for
/// the baseline target (SSE2 on x86-64, NEON on aarch64); multiply then add, as tract does.
///
/// # Safety (all kernels)
/// `src[t] + job.inp + l` readable for `l < 16`, `out + job.out + l` writable for
/// `l < job.lanes`.
#[inline]
unsafe fn taps_portable<const T: usize, const CLIP: bool>(
    src: &[*const f32; T],
    w: &[f32; T],
    bias: f32,
    lo: f32,
    hi: f32,
    out: *mut f32,
    jobs: &[Job],
) {
    const L: usize = 8;
    for job in jobs {
        let mut acc = [bias; L];
        for t in 0..T {
            let s = unsafe { std::slice::from_raw_parts(src[t].add(job.inp as usize), L) };
            for l in 0..L {
                acc[l] += w[t] * s[l];
            }
        }
        if CLIP {
            for a in &mut acc {
                *a = a.max(lo).min(hi);
            }
        }
        let n = (job.lanes as usize).min(L);
        unsafe { std::ptr::copy_nonoverlapping(acc.as_ptr(), out.add(job.out as usize), n) };
    }
}

/// `out[job.out + l] = max_t src[t][job.inp + l]`: the portable max-pool kernel (same
/// signature as the convolution kernels; weights, bias and clip unused).
#[inline]
unsafe fn max_portable<const T: usize, const CLIP: bool>(
    src: &[*const f32; T],
    _w: &[f32; T],
    _bias: f32,
    _lo: f32,
    _hi: f32,
    out: *mut f32,
    jobs: &[Job],
) {
    const L: usize = 8;
    for job in jobs {
        let mut acc = [f32::NEG_INFINITY; L];
        for t in 0..T {
            let s = unsafe { std::slice::from_raw_parts(src[t].add(job.inp as usize), L) };
            for l in 0..L {
                acc[l] = if s[l] > acc[l] { s[l] } else { acc[l] };
            }
        }
        let n = (job.lanes as usize).min(L);
        unsafe { std::ptr::copy_nonoverlapping(acc.as_ptr(), out.add(job.out as usize), n) };
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{deinterleave_tail, Job, UNROLL};

    fill_fn!(
        #[target_feature(enable = "avx512f")]
        pub(crate) fn fill_avx512, copy_avx512, deinterleave_avx512
    );

    fill_fn!(
        #[target_feature(enable = "avx2,fma")]
        pub(crate) fn fill_avx2, copy_avx2, deinterleave_avx2
    );

    plane_loop!(
        #[target_feature(enable = "avx512f")]
        pub(super) fn planes_avx512, taps_avx512, fill_avx512, copy_avx512
    );

    plane_loop!(
        #[target_feature(enable = "avx2,fma")]
        pub(super) fn planes_avx2, taps_avx2, fill_avx2, copy_avx2
    );

    plane_loop!(
        #[target_feature(enable = "avx512f")]
        pub(super) fn maxpool_avx512, max_avx512, fill_avx512, copy_avx512
    );

    plane_loop!(
        #[target_feature(enable = "avx2,fma")]
        pub(super) fn maxpool_avx2, max_avx2, fill_avx2, copy_avx2
    );

    /// `out[job.out + l] = max_t src[t][job.inp + l]`, 16 lanes, [`UNROLL`] jobs at a time.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn max_avx512<const T: usize, const CLIP: bool>(
        src: &[*const f32; T],
        _w: &[f32; T],
        _bias: f32,
        _lo: f32,
        _hi: f32,
        out: *mut f32,
        jobs: &[Job],
    ) {
        let mut groups = jobs.chunks_exact(UNROLL);
        for group in &mut groups {
            let mut at = [0usize; UNROLL];
            for u in 0..UNROLL {
                at[u] = group[u].inp as usize;
            }
            let mut acc = [_mm512_set1_ps(f32::NEG_INFINITY); UNROLL];
            for t in 0..T {
                for u in 0..UNROLL {
                    let x = unsafe { _mm512_loadu_ps(src[t].add(at[u])) };
                    acc[u] = _mm512_max_ps(x, acc[u]);
                }
            }
            for u in 0..UNROLL {
                let mask = ((1u32 << group[u].lanes) - 1) as __mmask16;
                unsafe { _mm512_mask_storeu_ps(out.add(group[u].out as usize), mask, acc[u]) };
            }
        }
        for job in groups.remainder() {
            let mut acc = _mm512_set1_ps(f32::NEG_INFINITY);
            for t in 0..T {
                acc = _mm512_max_ps(
                    unsafe { _mm512_loadu_ps(src[t].add(job.inp as usize)) },
                    acc,
                );
            }
            let mask = ((1u32 << job.lanes) - 1) as __mmask16;
            unsafe { _mm512_mask_storeu_ps(out.add(job.out as usize), mask, acc) };
        }
    }

    /// `out[job.out + l] = max_t src[t][job.inp + l]`, 8 lanes, [`UNROLL`] jobs at a time.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn max_avx2<const T: usize, const CLIP: bool>(
        src: &[*const f32; T],
        _w: &[f32; T],
        _bias: f32,
        _lo: f32,
        _hi: f32,
        out: *mut f32,
        jobs: &[Job],
    ) {
        let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        for job in jobs {
            let mut acc = _mm256_set1_ps(f32::NEG_INFINITY);
            for t in 0..T {
                acc = _mm256_max_ps(
                    unsafe { _mm256_loadu_ps(src[t].add(job.inp as usize)) },
                    acc,
                );
            }
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(job.lanes as i32), iota);
            unsafe { _mm256_maskstore_ps(out.add(job.out as usize), mask, acc) };
        }
    }

    /// 16 lanes, [`UNROLL`] jobs at a time, two partial sums (even and odd taps) per job: eight
    /// FMA chains in flight. The jobs left over go one at a time with four partial sums.
    /// Stores are masked to each job's lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn taps_avx512<const T: usize, const CLIP: bool>(
        src: &[*const f32; T],
        w: &[f32; T],
        bias: f32,
        lo: f32,
        hi: f32,
        out: *mut f32,
        jobs: &[Job],
    ) {
        let mut wv = [_mm512_setzero_ps(); T];
        for t in 0..T {
            wv[t] = _mm512_set1_ps(w[t]);
        }
        let b = _mm512_set1_ps(bias);
        let zero = _mm512_setzero_ps();
        let (lov, hiv) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
        let store = |job: &Job, mut v: __m512| {
            if CLIP {
                v = _mm512_min_ps(_mm512_max_ps(v, lov), hiv);
            }
            let mask = ((1u32 << job.lanes) - 1) as __mmask16;
            unsafe { _mm512_mask_storeu_ps(out.add(job.out as usize), mask, v) };
        };
        let mut groups = jobs.chunks_exact(UNROLL);
        for group in &mut groups {
            let mut at = [0usize; UNROLL];
            for u in 0..UNROLL {
                at[u] = group[u].inp as usize;
            }
            let mut even = [b; UNROLL];
            let mut odd = [zero; UNROLL];
            unsafe {
                let mut t = 0;
                while t + 1 < T {
                    for u in 0..UNROLL {
                        let x = _mm512_loadu_ps(src[t].add(at[u]));
                        even[u] = _mm512_fmadd_ps(wv[t], x, even[u]);
                        let x = _mm512_loadu_ps(src[t + 1].add(at[u]));
                        odd[u] = _mm512_fmadd_ps(wv[t + 1], x, odd[u]);
                    }
                    t += 2;
                }
                if t < T {
                    for u in 0..UNROLL {
                        let x = _mm512_loadu_ps(src[t].add(at[u]));
                        even[u] = _mm512_fmadd_ps(wv[t], x, even[u]);
                    }
                }
            }
            for u in 0..UNROLL {
                store(&group[u], _mm512_add_ps(even[u], odd[u]));
            }
        }
        for job in groups.remainder() {
            let at = job.inp as usize;
            let mut acc = [b, zero, zero, zero];
            for t in 0..T {
                let x = unsafe { _mm512_loadu_ps(src[t].add(at)) };
                acc[t % 4] = _mm512_fmadd_ps(wv[t], x, acc[t % 4]);
            }
            let v = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
            store(job, v);
        }
    }

    /// 8 lanes, [`UNROLL`] jobs at a time with two partial sums each, then the rest one at a
    /// time with four; masked stores.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn taps_avx2<const T: usize, const CLIP: bool>(
        src: &[*const f32; T],
        w: &[f32; T],
        bias: f32,
        lo: f32,
        hi: f32,
        out: *mut f32,
        jobs: &[Job],
    ) {
        let b = _mm256_set1_ps(bias);
        let zero = _mm256_setzero_ps();
        let (lov, hiv) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
        let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let store = |job: &Job, mut v: __m256| {
            if CLIP {
                v = _mm256_min_ps(_mm256_max_ps(v, lov), hiv);
            }
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(job.lanes as i32), iota);
            unsafe { _mm256_maskstore_ps(out.add(job.out as usize), mask, v) };
        };
        let mut groups = jobs.chunks_exact(UNROLL);
        for group in &mut groups {
            let mut at = [0usize; UNROLL];
            for u in 0..UNROLL {
                at[u] = group[u].inp as usize;
            }
            let mut even = [b; UNROLL];
            let mut odd = [zero; UNROLL];
            unsafe {
                let mut t = 0;
                while t + 1 < T {
                    let w0 = _mm256_broadcast_ss(&w[t]);
                    let w1 = _mm256_broadcast_ss(&w[t + 1]);
                    for u in 0..UNROLL {
                        let x = _mm256_loadu_ps(src[t].add(at[u]));
                        even[u] = _mm256_fmadd_ps(w0, x, even[u]);
                        let x = _mm256_loadu_ps(src[t + 1].add(at[u]));
                        odd[u] = _mm256_fmadd_ps(w1, x, odd[u]);
                    }
                    t += 2;
                }
                if t < T {
                    let w0 = _mm256_broadcast_ss(&w[t]);
                    for u in 0..UNROLL {
                        let x = _mm256_loadu_ps(src[t].add(at[u]));
                        even[u] = _mm256_fmadd_ps(w0, x, even[u]);
                    }
                }
            }
            for u in 0..UNROLL {
                store(&group[u], _mm256_add_ps(even[u], odd[u]));
            }
        }
        for job in groups.remainder() {
            let at = job.inp as usize;
            let mut acc = [b, zero, zero, zero];
            for t in 0..T {
                let x = unsafe { _mm256_loadu_ps(src[t].add(at)) };
                acc[t % 4] = _mm256_fmadd_ps(_mm256_broadcast_ss(&w[t]), x, acc[t % 4]);
            }
            let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            store(job, v);
        }
    }

    /// `dst.copy_from_slice(src)` (same lengths), the tail through masked moves.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn copy_avx512(src: &[f32], dst: &mut [f32]) {
        assert_eq!(src.len(), dst.len());
        let n = src.len();
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
        let mut i = 0;
        unsafe {
            while i + 16 <= n {
                _mm512_storeu_ps(d.add(i), _mm512_loadu_ps(s.add(i)));
                i += 16;
            }
            if i < n {
                let mask = ((1u32 << (n - i)) - 1) as __mmask16;
                _mm512_mask_storeu_ps(d.add(i), mask, _mm512_maskz_loadu_ps(mask, s.add(i)));
            }
        }
    }

    /// `dst.copy_from_slice(src)` (same lengths), eight at a time, the tail masked.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn copy_avx2(src: &[f32], dst: &mut [f32]) {
        assert_eq!(src.len(), dst.len());
        let n = src.len();
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
        let mut i = 0;
        unsafe {
            while i + 8 <= n {
                _mm256_storeu_ps(d.add(i), _mm256_loadu_ps(s.add(i)));
                i += 8;
            }
            if i < n {
                let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((n - i) as i32), iota);
                _mm256_maskstore_ps(d.add(i), mask, _mm256_maskload_ps(s.add(i), mask));
            }
        }
    }

    /// `even[i] = src[2i]`, `odd[i] = src[2i + 1]`, the last (fewer than 32) values through
    /// masked loads and stores.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn deinterleave_avx512(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
        assert!(even.len() == src.len().div_ceil(2) && odd.len() == src.len() / 2);
        let evens_ix = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odds_ix = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        let (s, e, o) = (src.as_ptr(), even.as_mut_ptr(), odd.as_mut_ptr());
        let mut i = 0;
        unsafe {
            while i + 16 <= odd.len() {
                let a = _mm512_loadu_ps(s.add(2 * i));
                let b = _mm512_loadu_ps(s.add(2 * i + 16));
                _mm512_storeu_ps(e.add(i), _mm512_permutex2var_ps(a, evens_ix, b));
                _mm512_storeu_ps(o.add(i), _mm512_permutex2var_ps(a, odds_ix, b));
                i += 16;
            }
            let rest = src.len() - 2 * i;
            if rest > 0 {
                let bits = |n: usize| ((1u32 << n.min(16)) - 1) as __mmask16;
                let a = _mm512_maskz_loadu_ps(bits(rest), s.add(2 * i));
                let b = _mm512_maskz_loadu_ps(bits(rest.saturating_sub(16)), s.add(2 * i + 16));
                let ev = _mm512_permutex2var_ps(a, evens_ix, b);
                let od = _mm512_permutex2var_ps(a, odds_ix, b);
                _mm512_mask_storeu_ps(e.add(i), bits(rest.div_ceil(2)), ev);
                _mm512_mask_storeu_ps(o.add(i), bits(rest / 2), od);
            }
        }
    }

    /// `even[i] = src[2i]`, `odd[i] = src[2i + 1]`: eight pairs at a time, then scalar.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn deinterleave_avx2(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
        assert!(even.len() == src.len().div_ceil(2) && odd.len() == src.len() / 2);
        let mut i = 0;
        unsafe {
            while i + 8 <= odd.len() {
                let a = _mm256_loadu_ps(src.as_ptr().add(2 * i));
                let b = _mm256_loadu_ps(src.as_ptr().add(2 * i + 8));
                // Per 128-bit lane: [a0 a2 b0 b2 | a4 a6 b4 b6], then order the 64-bit pairs.
                let e = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
                let o = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
                let e =
                    _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(e)));
                let o =
                    _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(o)));
                _mm256_storeu_ps(even.as_mut_ptr().add(i), e);
                _mm256_storeu_ps(odd.as_mut_ptr().add(i), o);
                i += 8;
            }
        }
        deinterleave_tail(src, even, odd, i);
    }
}

/// What [`rewrite`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewriteReport {
    /// `DepthWiseConv` nodes now running [`FastDepthwise`].
    pub replaced: usize,
    /// ReLU / ReLU6 nodes folded into them or into [`dense::FastConv`] nodes.
    pub fused_clips: usize,
    /// `OptMaxPool` nodes now running [`FastMaxPool`].
    pub maxpools: usize,
    /// `DepthWiseConv` nodes left to tract, with the reason.
    pub skipped: Vec<(String, String)>,
}

/// Replaces the `DepthWiseConv` nodes of an optimised model that [`FastDepthwise`] supports
/// (folding a ReLU6 that is their only consumer), and the `OptMaxPool` nodes that
/// [`FastMaxPool`] supports. Other nodes are left alone.
pub fn rewrite(model: &mut TypedModel) -> TractResult<RewriteReport> {
    let mut report = RewriteReport::default();
    let pools: Vec<usize> = model
        .nodes
        .iter()
        .filter(|n| n.op_is::<OptMaxPool>())
        .map(|n| n.id)
        .collect();
    for id in pools {
        let node = model.node(id);
        let Some(op) = maxpool_for_node(model, node)? else {
            continue;
        };
        let patch = TypedModelPatch::replace_single_op(model, node, &node.inputs, op)?;
        patch.apply(model)?;
        report.maxpools += 1;
    }
    let candidates: Vec<usize> = model
        .nodes
        .iter()
        .filter(|n| n.op().name() == "DepthWiseConv")
        .map(|n| n.id)
        .collect();
    for id in candidates {
        let node = model.node(id);
        let op = match op_for_node(model, node) {
            Ok(op) => op,
            Err(e) => {
                report.skipped.push((node.name.clone(), format!("{e:#}")));
                continue;
            }
        };
        let clip_node = fusable_clip(model, node)?;
        let mut patch = TypedModelPatch::default();
        let inputs = patch.taps(model, &node.inputs)?;
        let (op, replaced_outlet) = match clip_node {
            Some((clip_id, clip)) => (
                FastDepthwise {
                    clip: Some(clip),
                    ..op
                },
                OutletId::new(clip_id, 0),
            ),
            None => (op, OutletId::new(id, 0)),
        };
        let fused = op.clip.is_some();
        let wire = patch.wire_node(&node.name, op, &inputs)?;
        patch.shunt_outside(model, replaced_outlet, wire[0])?;
        patch.obliterate(id)?;
        if fused {
            patch.obliterate(replaced_outlet.node)?;
        }
        patch.apply(model)?;
        report.replaced += 1;
        report.fused_clips += fused as usize;
    }
    let convs: Vec<usize> = model
        .nodes
        .iter()
        .filter(|n| {
            n.op_as::<dense::FastConv>()
                .is_some_and(|c| c.clip.is_none())
        })
        .map(|n| n.id)
        .collect();
    for id in convs {
        let node = model.node(id);
        let Some((clip_id, clip)) = fusable_clip(model, node)? else {
            continue;
        };
        let mut op = node.op_as::<dense::FastConv>().unwrap().clone();
        op.clip = Some(clip);
        let mut patch = TypedModelPatch::default();
        let inputs = patch.taps(model, &node.inputs)?;
        let wire = patch.wire_node(&node.name, op, &inputs)?;
        patch.shunt_outside(model, OutletId::new(clip_id, 0), wire[0])?;
        patch.obliterate(id)?;
        patch.obliterate(clip_id)?;
        patch.apply(model)?;
        report.fused_clips += 1;
    }
    if report.replaced + report.maxpools + report.fused_clips > 0 {
        model.compact()?;
    }
    Ok(report)
}

/// The [`FastMaxPool`] equivalent to a tract `OptMaxPool` node, if it has one: f32 CHW/NCHW,
/// two spatial axes, no index output, dilation 1, a 3x3 or 5x5 window.
fn maxpool_for_node(model: &TypedModel, node: &TypedNode) -> TractResult<Option<FastMaxPool>> {
    let Some(op) = node.op_as::<OptMaxPool>() else {
        return Ok(None);
    };
    let spec = &op.pool_spec;
    let x = model.outlet_fact(node.inputs[0])?;
    let (Some(shape), Some(out_shape)) = (
        x.shape.as_concrete(),
        node.outputs[0].fact.shape.as_concrete(),
    ) else {
        return Ok(None);
    };
    let rank = shape.len();
    let fmt_ok = matches!(
        (spec.data_format, rank),
        (DataFormat::NCHW, 4) | (DataFormat::CHW, 3)
    );
    if !fmt_ok
        || op.with_index_outputs.is_some()
        || node.outputs.len() != 1
        || node.inputs.len() != 1
        || x.datum_type != f32::datum_type()
        || x.is_exotic()
        || spec.kernel_shape.len() != 2
        || spec.dilations().iter().any(|&d| d != 1)
    {
        return Ok(None);
    }
    let (n, c, h, w) = if rank == 4 {
        (shape[0], shape[1], shape[2], shape[3])
    } else {
        (1, shape[0], shape[1], shape[2])
    };
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
    if !geo.is_valid() || !supported_taps(geo.taps()) {
        return Ok(None);
    }
    let op = FastMaxPool::new(geo, rank)?;
    if op.shapes().1.as_slice() != out_shape {
        return Ok(None);
    }
    Ok(Some(op))
}

/// The [`FastDepthwise`] equivalent to a tract `DepthWiseConv` node, or why there is none.
///
/// tract's op keeps its geometry private; its `info()` prints the patch
/// (`input: 112,112 kernel: 3,3 strides: 2,2 dil: 1,1 pad: Explicit([0, 0], [1, 1])`) and its
/// `Debug` the data format (`input_shape: CHW 96,112,112 ...`). Both are parsed, then checked
/// against the node's facts: input and output shapes, kernel and bias volumes.
fn op_for_node(model: &TypedModel, node: &TypedNode) -> TractResult<FastDepthwise> {
    ensure!(node.inputs.len() == 3, "{} inputs", node.inputs.len());
    let x = model.outlet_fact(node.inputs[0])?;
    let kernel = model.outlet_fact(node.inputs[1])?;
    let bias = model.outlet_fact(node.inputs[2])?;
    let output = &node.outputs[0].fact;
    ensure!(
        x.datum_type == f32::datum_type(),
        "datum type {:?}",
        x.datum_type
    );
    ensure!(
        kernel.datum_type == f32::datum_type() && bias.datum_type == f32::datum_type(),
        "kernel/bias not f32"
    );
    ensure!(!x.is_exotic() && !kernel.is_exotic(), "exotic input");
    let debug = format!("{:?}", node.op);
    let fmt = debug
        .split("input_shape: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .context("no data format in the op's Debug")?;
    ensure!(fmt == "NCHW" || fmt == "CHW", "data format {fmt}");
    let info = node.op().info()?.join(" ");
    let spec = parse_patch_info(&info).with_context(|| format!("parsing {info:?}"))?;
    let shape = x.shape.as_concrete().context("symbolic input shape")?;
    let out_shape = output
        .shape
        .as_concrete()
        .context("symbolic output shape")?;
    let rank = shape.len();
    ensure!(
        (fmt == "NCHW" && rank == 4) || (fmt == "CHW" && rank == 3),
        "{fmt} with rank {rank}"
    );
    let (n, c, h, w) = if rank == 4 {
        (shape[0], shape[1], shape[2], shape[3])
    } else {
        (1, shape[0], shape[1], shape[2])
    };
    ensure!(
        spec.input == [h, w],
        "patch input {:?} vs {:?}",
        spec.input,
        shape
    );
    ensure!(spec.dilations == [1, 1], "dilations {:?}", spec.dilations);
    let geo = Geometry {
        n,
        c,
        h,
        w,
        kh: spec.kernel[0],
        kw: spec.kernel[1],
        sh: spec.strides[0],
        sw: spec.strides[1],
        pad_top: spec.pad_before[0],
        pad_left: spec.pad_before[1],
        pad_bottom: spec.pad_after[0],
        pad_right: spec.pad_after[1],
    };
    ensure!(geo.is_valid(), "geometry {geo:?}");
    ensure!(supported_taps(geo.taps()), "{}x{} kernel", geo.kh, geo.kw);
    let op = FastDepthwise::new(geo, rank, None)?;
    ensure!(
        out_shape == &*op.output_shape(),
        "output {:?} vs computed {:?}",
        out_shape,
        op.output_shape()
    );
    ensure!(
        kernel
            .shape
            .as_concrete()
            .map(|s| s.iter().product::<usize>())
            == Some(c * geo.taps()),
        "kernel shape {:?}",
        kernel.shape
    );
    ensure!(
        bias.shape
            .as_concrete()
            .map(|s| s.iter().product::<usize>())
            == Some(c),
        "bias shape {:?}",
        bias.shape
    );
    Ok(op)
}

/// The ReLU6 (`OptBinChain(Max+Min)` with two scalar constants) or ReLU (`OptMaxByScalar`
/// with a scalar constant) that is the only consumer of `node`'s output, if any, and its
/// bounds.
fn fusable_clip(model: &TypedModel, node: &TypedNode) -> TractResult<Option<(usize, Clip)>> {
    if model.outputs.contains(&OutletId::new(node.id, 0)) {
        return Ok(None);
    }
    let Some(succ) = model.single_succ(node.id)? else {
        return Ok(None);
    };
    let name = succ.op().name();
    let arity = match name.as_ref() {
        "OptBinChain(Max+Min)" => 3,
        "OptMaxByScalar" => 2,
        _ => return Ok(None),
    };
    if succ.inputs.len() != arity || succ.inputs[0] != OutletId::new(node.id, 0) {
        return Ok(None);
    }
    let scalar = |outlet: OutletId| -> Option<f32> {
        let fact = model.outlet_fact(outlet).ok()?;
        let konst = fact.konst.as_ref()?;
        if konst.len() != 1 || konst.datum_type() != f32::datum_type() {
            return None;
        }
        konst.cast_to_scalar::<f32>().ok()
    };
    let hi = if arity == 3 {
        scalar(succ.inputs[2])
    } else {
        Some(f32::INFINITY)
    };
    let (Some(lo), Some(hi)) = (scalar(succ.inputs[1]), hi) else {
        return Ok(None);
    };
    if lo.partial_cmp(&hi).is_none_or(|o| o.is_gt())
        || succ.outputs[0].fact.shape != node.outputs[0].fact.shape
    {
        return Ok(None);
    }
    Ok(Some((succ.id, Clip::new(lo, hi))))
}

#[derive(Debug, PartialEq)]
struct PatchInfo {
    input: Vec<usize>,
    kernel: Vec<usize>,
    strides: Vec<usize>,
    dilations: Vec<usize>,
    pad_before: Vec<usize>,
    pad_after: Vec<usize>,
}

/// Parses tract's `PatchSpec` Debug for two spatial axes.
fn parse_patch_info(info: &str) -> TractResult<PatchInfo> {
    fn list(s: &str) -> TractResult<Vec<usize>> {
        s.split(',')
            .map(|v| {
                v.trim()
                    .parse::<usize>()
                    .map_err(|e| format_err!("{v:?}: {e}"))
            })
            .collect()
    }
    fn field<'a>(info: &'a str, name: &str) -> TractResult<&'a str> {
        let rest = info
            .split(&format!("{name}: "))
            .nth(1)
            .with_context(|| format!("no {name}"))?;
        Ok(rest.split_whitespace().next().unwrap_or(""))
    }
    let input = list(field(info, "input")?)?;
    let kernel = list(field(info, "kernel")?)?;
    let strides = list(field(info, "strides")?)?;
    let dilations = list(field(info, "dil")?)?;
    let pad = info.split("pad: ").nth(1).context("no pad")?.trim();
    let (pad_before, pad_after) = if pad == "Valid" {
        (vec![0; input.len()], vec![0; input.len()])
    } else if let Some(inner) = pad
        .strip_prefix("Explicit(")
        .and_then(|s| s.strip_suffix(')'))
    {
        let parts: Vec<&str> = inner.split("], [").collect();
        ensure!(parts.len() == 2, "padding {pad}");
        let before = list(parts[0].trim_start_matches('['))?;
        let after = list(parts[1].trim_end_matches(']'))?;
        (before, after)
    } else {
        bail!("padding {pad}")
    };
    for v in [
        &input,
        &kernel,
        &strides,
        &dilations,
        &pad_before,
        &pad_after,
    ] {
        ensure!(v.len() == 2, "{} spatial axes", v.len());
    }
    Ok(PatchInfo {
        input,
        kernel,
        strides,
        dilations,
        pad_before,
        pad_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tract_patch_info() {
        let p = parse_patch_info(
            "input: 112,112 kernel: 3,3 strides: 2,2 dil: 1,1 pad: Explicit([0, 0], [1, 1])",
        )
        .unwrap();
        assert_eq!(p.input, [112, 112]);
        assert_eq!(p.kernel, [3, 3]);
        assert_eq!(p.strides, [2, 2]);
        assert_eq!(p.dilations, [1, 1]);
        assert_eq!(p.pad_before, [0, 0]);
        assert_eq!(p.pad_after, [1, 1]);
        let p =
            parse_patch_info("input: 7,9 kernel: 5,5 strides: 1,1 dil: 1,1 pad: Valid").unwrap();
        assert_eq!(p.pad_before, [0, 0]);
        assert!(parse_patch_info("input: 7 kernel: 5 strides: 1 dil: 1 pad: Valid").is_err());
        assert!(
            parse_patch_info("input: 7,7 kernel: 5,5 strides: 1,1 dil: 1,1 pad: SameUpper")
                .is_err()
        );
    }

    use tract_onnx::tract_core::ops::cnn::conv::{Conv, KernelFormat};
    use tract_onnx::tract_core::ops::cnn::{PaddingSpec, PoolSpec};
    use tract_onnx::tract_core::ops::math::{max, min};
    use tract_onnx::tract_core::ops::nn::DataFormat;

    /// Deterministic pseudo-random numbers (xorshift), uniform in [-1, 1).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn f32(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }

        fn vec(&mut self, n: usize) -> Vec<f32> {
            (0..n).map(|_| self.f32()).collect()
        }
    }

    fn close(got: &[f32], want: &[f32]) -> Result<(), String> {
        if got.len() != want.len() {
            return Err(format!("{} values, want {}", got.len(), want.len()));
        }
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            if (g - w).abs() > 1e-5 * w.abs().max(1.0) {
                return Err(format!("at {i}: {g} vs {w}"));
            }
        }
        Ok(())
    }

    /// Straight from the definition, in f64.
    fn reference(g: &Geometry, x: &[f32], k: &[f32], b: &[f32], clip: Option<Clip>) -> Vec<f32> {
        let (oh, ow) = (g.oh(), g.ow());
        let mut out = vec![];
        for plane in 0..g.n * g.c {
            let ch = plane % g.c;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = b[ch] as f64;
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            let iy = (oy * g.sh + ky) as isize - g.pad_top as isize;
                            let ix = (ox * g.sw + kx) as isize - g.pad_left as isize;
                            if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                continue;
                            }
                            let v = x[plane * g.h * g.w + iy as usize * g.w + ix as usize];
                            acc += v as f64 * k[(ch * g.kh + ky) * g.kw + kx] as f64;
                        }
                    }
                    let mut v = acc as f32;
                    if let Some(c) = clip {
                        v = v.max(c.lo()).min(c.hi());
                    }
                    out.push(v);
                }
            }
        }
        out
    }

    fn random_geometry(rng: &mut Rng) -> Geometry {
        loop {
            let k = if rng.below(2) == 0 { 3 } else { 5 };
            let g = Geometry {
                n: 1 + rng.below(3),
                c: 1 + rng.below(20),
                h: 1 + rng.below(40),
                w: 1 + rng.below(40),
                kh: k,
                kw: k,
                sh: 1 + rng.below(2),
                sw: 1 + rng.below(2),
                pad_top: rng.below(k),
                pad_left: rng.below(k),
                pad_bottom: rng.below(k),
                pad_right: rng.below(k),
            };
            if g.is_valid() {
                return g;
            }
        }
    }

    #[test]
    fn kernel_matches_definition_on_random_shapes() {
        let mut rng = Rng(0x9e3779b97f4a7c15);
        for case in 0..300 {
            let mut g = random_geometry(&mut rng);
            if case % 7 == 0 {
                g.sw = 3; // strides past two take the scalar phase copy
            }
            let x = rng.vec(g.n * g.c * g.h * g.w);
            let k = rng.vec(g.c * g.taps());
            let b = rng.vec(g.c);
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
        let mut rng = Rng(42);
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
            let g = Geometry {
                n: 1,
                c,
                h: size,
                w: size,
                kh: k,
                kw: k,
                sh: s,
                sw: s,
                pad_top: before,
                pad_left: before,
                pad_bottom: after,
                pad_right: after,
            };
            let x = rng.vec(g.c * g.h * g.w);
            let kernel = rng.vec(g.c * g.taps());
            let b = rng.vec(g.c);
            let want = reference(&g, &x, &kernel, &b, None);
            for isa in Isa::available() {
                let mut got = vec![f32::NAN; want.len()];
                depthwise(&g, &x, &kernel, &b, None, isa, &mut got);
                close(&got, &want).unwrap_or_else(|e| panic!("{isa:?} {g:?}: {e}"));
            }
        }
    }

    /// A model holding one depthwise `Conv` (and a ReLU6 after it when `relu6`), optimised by
    /// tract: its output with tract's `DepthWiseConv`, then with ours after [`rewrite`].
    fn tract_vs_ours(g: &Geometry, fmt: DataFormat, relu6: bool, rng: &mut Rng) {
        let x_shape: TVec<usize> = match fmt {
            DataFormat::NCHW => tvec!(g.n, g.c, g.h, g.w),
            DataFormat::CHW => tvec!(g.c, g.h, g.w),
            _ => unreachable!(),
        };
        let x = rng.vec(x_shape.iter().product());
        let kernel = rng.vec(g.c * g.taps());
        let bias = rng.vec(g.c);
        let mut model = TypedModel::default();
        let xv = model.add_source("x", f32::fact(&*x_shape)).unwrap();
        let k = Tensor::from_shape(&[g.c, 1, g.kh, g.kw], &kernel).unwrap();
        let kv = model.add_const("k", k).unwrap();
        let bv = model
            .add_const("b", Tensor::from_shape(&[g.c], &bias).unwrap())
            .unwrap();
        let pool_spec = PoolSpec {
            data_format: fmt,
            kernel_shape: tvec!(g.kh, g.kw),
            padding: PaddingSpec::Explicit(
                tvec!(g.pad_top, g.pad_left),
                tvec!(g.pad_bottom, g.pad_right),
            ),
            dilations: None,
            strides: Some(tvec!(g.sh, g.sw)),
            input_channels: g.c,
            output_channels: g.c,
        };
        let conv = Conv {
            pool_spec,
            kernel_fmt: KernelFormat::OIHW,
            group: g.c,
            q_params: None,
        };
        let mut out = model.wire_node("dw", conv, &[xv, kv, bv]).unwrap();
        if relu6 {
            let ones = tvec![1usize; x_shape.len()];
            let zero = model
                .add_const("zero", Tensor::from_shape(&ones, &[0f32]).unwrap())
                .unwrap();
            let six = model
                .add_const("six", Tensor::from_shape(&ones, &[6f32]).unwrap())
                .unwrap();
            out = model
                .wire_node("relu6.max", max(), &[out[0], zero])
                .unwrap();
            out = model.wire_node("relu6.min", min(), &[out[0], six]).unwrap();
        }
        model.select_output_outlets(&out).unwrap();
        let model = model.into_decluttered().unwrap().into_optimized().unwrap();
        let names = |m: &TypedModel| {
            m.nodes
                .iter()
                .map(|n| n.op().name().to_string())
                .collect::<Vec<_>>()
        };
        assert!(
            names(&model).iter().any(|n| n == "DepthWiseConv"),
            "tract did not make a DepthWiseConv of {g:?}: {:?}",
            names(&model)
        );
        let input = Tensor::from_shape(&x_shape, &x).unwrap();
        let run = |m: TypedModel| -> Vec<f32> {
            let plan = m.into_runnable().unwrap();
            let out = plan.run(tvec!(input.clone().into_tvalue())).unwrap();
            out[0]
                .to_plain_array_view::<f32>()
                .unwrap()
                .iter()
                .copied()
                .collect()
        };
        let mut ours = model.clone();
        let report = rewrite(&mut ours).unwrap();
        assert_eq!(report.replaced, 1, "{g:?} {fmt:?}: {report:?}");
        let after = names(&ours);
        assert!(!after.iter().any(|n| n == "DepthWiseConv"), "{after:?}");
        // tract leaves Max and Min apart on some small tensors; only its chain is fused.
        if relu6 && names(&model).iter().any(|n| n == "OptBinChain(Max+Min)") {
            assert_eq!(report.fused_clips, 1, "{after:?}");
            assert!(
                !after.iter().any(|n| n.starts_with("OptBinChain")),
                "{after:?}"
            );
        }
        let want = run(model);
        let got = run(ours);
        close(&got, &want).unwrap_or_else(|e| panic!("{g:?} {fmt:?} relu6={relu6}: {e}"));
    }

    #[test]
    fn replaces_tract_depthwise_on_random_shapes() {
        let mut rng = Rng(7);
        for case in 0..60 {
            let mut g = random_geometry(&mut rng);
            let fmt = if case % 2 == 0 {
                DataFormat::NCHW
            } else {
                g.n = 1;
                DataFormat::CHW
            };
            tract_vs_ours(&g, fmt, case % 3 == 0, &mut rng);
        }
    }

    #[test]
    fn replaces_tract_depthwise_with_batch() {
        let mut rng = Rng(11);
        let g = Geometry {
            n: 3,
            c: 24,
            h: 28,
            w: 28,
            kh: 5,
            kw: 5,
            sh: 2,
            sw: 2,
            pad_top: 1,
            pad_left: 1,
            pad_bottom: 2,
            pad_right: 2,
        };
        tract_vs_ours(&g, DataFormat::NCHW, true, &mut rng);
        tract_vs_ours(
            &Geometry {
                sh: 1,
                sw: 1,
                pad_top: 2,
                pad_left: 2,
                ..g
            },
            DataFormat::NCHW,
            false,
            &mut rng,
        );
    }

    #[test]
    fn leaves_unsupported_kernels_to_tract() {
        let mut model = TypedModel::default();
        let xv = model.add_source("x", f32::fact([1, 4, 10, 10])).unwrap();
        let kv = model
            .add_const("k", Tensor::zero::<f32>(&[4, 1, 7, 7]).unwrap())
            .unwrap();
        let bv = model
            .add_const("b", Tensor::zero::<f32>(&[4]).unwrap())
            .unwrap();
        let conv = Conv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec!(7, 7),
                padding: PaddingSpec::Valid,
                dilations: None,
                strides: None,
                input_channels: 4,
                output_channels: 4,
            },
            kernel_fmt: KernelFormat::OIHW,
            group: 4,
            q_params: None,
        };
        let out = model.wire_node("dw", conv, &[xv, kv, bv]).unwrap();
        model.select_output_outlets(&out).unwrap();
        let mut model = model.into_optimized().unwrap();
        let report = rewrite(&mut model).unwrap();
        assert_eq!(report.replaced, 0);
        assert_eq!(report.skipped.len(), 1, "{report:?}");
    }

    fn reference_max(g: &Geometry, x: &[f32]) -> Vec<f32> {
        let mut out = vec![];
        for plane in 0..g.n * g.c {
            for oy in 0..g.oh() {
                for ox in 0..g.ow() {
                    let mut m = f32::NEG_INFINITY;
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            let iy = (oy * g.sh + ky) as isize - g.pad_top as isize;
                            let ix = (ox * g.sw + kx) as isize - g.pad_left as isize;
                            if iy >= 0 && ix >= 0 && iy < g.h as isize && ix < g.w as isize {
                                m = m.max(x[plane * g.h * g.w + iy as usize * g.w + ix as usize]);
                            }
                        }
                    }
                    out.push(m);
                }
            }
        }
        out
    }

    #[test]
    fn maxpool_matches_definition_on_random_shapes() {
        let mut rng = Rng(0x5151);
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
            let x = rng.vec(g.n * g.c * g.h * g.w);
            let want = reference_max(&g, &x);
            for isa in Isa::available() {
                let mut got = vec![f32::NAN; want.len()];
                maxpool(&g, &x, isa, &mut got);
                assert_eq!(got, want, "{isa:?} {g:?}");
            }
        }
    }

    #[test]
    fn replaces_tract_maxpool() {
        use tract_onnx::tract_core::ops::cnn::MaxPool;
        let mut rng = Rng(3);
        for (n, c, size, k, s, pad) in [
            (1, 64, 112, 3, 2, 1),
            (2, 5, 17, 3, 2, 1),
            (1, 3, 9, 5, 1, 2),
            (3, 4, 8, 3, 1, 0),
        ] {
            let shape = [n, c, size, size];
            let x = rng.vec(shape.iter().product());
            let mut model = TypedModel::default();
            let xv = model.add_source("x", f32::fact(shape)).unwrap();
            let pool = MaxPool {
                pool_spec: PoolSpec {
                    data_format: DataFormat::NCHW,
                    kernel_shape: tvec!(k, k),
                    padding: PaddingSpec::Explicit(tvec!(pad, pad), tvec!(pad, pad)),
                    dilations: None,
                    strides: Some(tvec!(s, s)),
                    input_channels: c,
                    output_channels: c,
                },
                with_index_outputs: None,
            };
            let out = model.wire_node("pool", pool, &[xv]).unwrap();
            model.select_output_outlets(&out).unwrap();
            let model = model.into_optimized().unwrap();
            let mut ours = model.clone();
            let report = rewrite(&mut ours).unwrap();
            assert_eq!(
                report.maxpools,
                1,
                "{:?}",
                model
                    .nodes
                    .iter()
                    .map(|n| n.op().name())
                    .collect::<Vec<_>>()
            );
            let input = Tensor::from_shape(&shape, &x).unwrap();
            let run = |m: TypedModel| -> Vec<f32> {
                let plan = m.into_runnable().unwrap();
                let out = plan.run(tvec!(input.clone().into_tvalue())).unwrap();
                out[0]
                    .to_plain_array_view::<f32>()
                    .unwrap()
                    .iter()
                    .copied()
                    .collect()
            };
            assert_eq!(run(ours), run(model));
        }
    }
}
