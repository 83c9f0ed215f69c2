//! Dense (group 1) f32 convolution as an implicit matrix product over the phase planes of
//! [`super::planes`]: every input channel is copied once into zero-padded phase planes, then each
//! block of output vectors accumulates `sum_k w[co][k] * plane_k[o]` over `k = (ci, ky, kx)`,
//! where `plane_k` is a pointer into the phase planes; no im2col buffer, no packing of
//! activations, the padding costs nothing. A 1x1, stride-1, unpadded convolution reads its input
//! in place.
//!
//! The AVX-512 kernel keeps 8 output channels x 3 vectors of 16 outputs (24 accumulators) in
//! registers: per `k`, 3 loads, 8 broadcasts, 24 FMAs; the weights are prefetched (they stream
//! from memory once per inference). On small planes (at most 256 pixels: 14x14, 7x7) a 1x1
//! convolution runs with output channels in the lanes instead ([`CT`] channels x [`PT`] pixels
//! per tile), where vectors along the plane would be mostly empty. AVX2 runs 4 channels x 3
//! vectors of 8; the portable path one vector of 8 at a time.

// The kernels index accumulators by channel and vector together.
#![allow(clippy::needless_range_loop)]

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::aligned::AlignedBuf;
use super::planes::{Job, PlaneSetup};
use super::{describe_clip, eval_f32, f32_output_facts, Clip, Geometry, Isa};

/// Output channels per weight block (the AVX-512 kernel's register rows).
pub(crate) const MR: usize = 8;
/// Output vectors per job group.
const NV: usize = 3;
/// Output channels per tile of [`pointwise_small`] (two vectors of 16).
pub(crate) const CT: usize = 32;
/// Most output pixels per run of [`pointwise_small`]: 2 x 12 accumulators, per input channel
/// 2 weight loads and 12 broadcasts for 24 FMAs.
pub(crate) const PT: usize = 12;
/// Most input channels per pass of [`pointwise_small`]'s tiles (their weights: 16 KB, half of
/// L1); the passes of one tile split the input channels evenly.
pub(crate) const KC: usize = 128;
/// Largest plane (pixels) a pointwise convolution runs channels-in-lanes (14x14 and 7x7 gain
/// there, 28x28 loses).
const SMALL_PLANE: usize = 256;

/// Weights repacked for the kernels, in the one layout the op's instruction set reads (a
/// second copy of ResNet18's or Lite0's weights would cost 12 MB of resident memory for
/// nothing): `[cout / MR][K][MR]` (zero rows past `cout`), `K = cin * kh * kw` in `(ci, ky,
/// kx)` order, bias padded the same way; or, for [`pointwise_small`] on AVX-512, only `lanes`.
pub struct DenseWeights {
    cout: usize,
    k: usize,
    /// The block layout; empty when `lanes` holds the weights.
    packed: Vec<f32>,
    bias: Vec<f32>,
    /// For [`pointwise_small`]: `[cout / CT][K][CT]` (zero rows past `cout`), bias padded.
    /// On cache lines: the kernel loads two whole vectors of weights per input channel.
    lanes: Option<(AlignedBuf, Vec<f32>)>,
}

impl DenseWeights {
    /// From an OIHW kernel (`cout * k` values) and `cout` biases, in the block layout.
    pub fn new(cout: usize, k: usize, kernel: &[f32], bias: &[f32]) -> DenseWeights {
        assert_eq!(kernel.len(), cout * k);
        assert_eq!(bias.len(), cout);
        let (packed, padded_bias) = pack(cout, k, MR, kernel, bias);
        DenseWeights {
            cout,
            k,
            packed,
            bias: padded_bias,
            lanes: None,
        }
    }

    /// From an OIHW kernel, in the channels-in-lanes layout [`pointwise_small`] reads only.
    fn new_lanes(cout: usize, k: usize, kernel: &[f32], bias: &[f32]) -> DenseWeights {
        assert_eq!(kernel.len(), cout * k);
        assert_eq!(bias.len(), cout);
        DenseWeights {
            cout,
            k,
            packed: Vec::new(),
            bias: Vec::new(),
            lanes: Some({
                let (packed, bias) = pack(cout, k, CT, kernel, bias);
                (AlignedBuf::from_slice(&packed), bias)
            }),
        }
    }

    /// The OIHW kernel and the biases back from whichever layout is held.
    fn unpacked(&self) -> (Vec<f32>, Vec<f32>) {
        let (packed, bias, rows) = match &self.lanes {
            Some((packed, bias)) => (packed.as_slice(), bias, CT),
            None => (&self.packed[..], &self.bias, MR),
        };
        let mut kernel = vec![0f32; self.cout * self.k];
        for co in 0..self.cout {
            let (b, j) = (co / rows, co % rows);
            for t in 0..self.k {
                kernel[co * self.k + t] = packed[(b * self.k + t) * rows + j];
            }
        }
        (kernel, bias[..self.cout].to_vec())
    }

    fn blocks(&self) -> usize {
        self.cout.div_ceil(MR)
    }
}

impl FastConv {
    /// The weights and biases in the channels-in-lanes layout (`[cout / CT][K][CT]`, `[cout /
    /// CT][CT]`), when the op holds them so (a small-plane pointwise convolution on AVX-512).
    pub(crate) fn lanes_weights(&self) -> Option<(&[f32], &[f32])> {
        self.weights
            .lanes
            .as_ref()
            .map(|(w, b)| (w.as_slice(), b.as_slice()))
    }

    /// This op with its weights in the channels-in-lanes layout, for a fused op that runs the
    /// channels-in-lanes kernel on any plane: a 1x1, stride-1, unpadded convolution on AVX-512.
    pub(crate) fn with_lanes_weights(self) -> Option<FastConv> {
        if self.weights.lanes.is_some() {
            return Some(self);
        }
        if !reads_in_place(&self.geo) || Isa::detect() != Isa::Avx512 {
            return None;
        }
        let (kernel, bias) = self.weights.unpacked();
        let weights = Arc::new(DenseWeights::new_lanes(
            self.cout,
            self.weights.k,
            &kernel,
            &bias,
        ));
        Some(FastConv { weights, ..self })
    }
}

/// An OIHW kernel as `[cout / rows][K][rows]` (zero rows past `cout`) and the biases padded
/// to whole blocks of `rows`.
fn pack(cout: usize, k: usize, rows: usize, kernel: &[f32], bias: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let blocks = cout.div_ceil(rows);
    let mut packed = vec![0f32; blocks * k * rows];
    let mut padded_bias = vec![0f32; blocks * rows];
    for co in 0..cout {
        let (b, j) = (co / rows, co % rows);
        for t in 0..k {
            packed[(b * k + t) * rows + j] = kernel[co * k + t];
        }
        padded_bias[co] = bias[co];
    }
    (packed, padded_bias)
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
                    && self.weights.bias == other.weights.bias
                    && self.weights.lanes == other.weights.lanes))
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
    /// The op for `geo` (input channels `geo.c`) and an OIHW kernel of `cout` filters, its
    /// weights packed for this CPU's kernels.
    pub fn new(
        geo: Geometry,
        cout: usize,
        rank: usize,
        kernel: &[f32],
        bias: &[f32],
    ) -> TractResult<FastConv> {
        FastConv::for_isa(geo, cout, rank, kernel, bias, Isa::detect())
    }

    /// [`FastConv::new`] with the weights packed for `isa`'s kernels.
    pub fn for_isa(
        geo: Geometry,
        cout: usize,
        rank: usize,
        kernel: &[f32],
        bias: &[f32],
        isa: Isa,
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
        let weights = Arc::new(if lanes_layout(&geo, isa) {
            DenseWeights::new_lanes(cout, k, kernel, bias)
        } else {
            DenseWeights::new(cout, k, kernel, bias)
        });
        Ok(FastConv {
            geo,
            cout,
            rank,
            clip: None,
            weights,
        })
    }

    /// Input and output shapes.
    pub fn shapes(&self) -> (TVec<usize>, TVec<usize>) {
        self.geo.shapes(self.cout, self.rank)
    }
}

impl Op for FastConv {
    fn name(&self) -> StaticName {
        "FastConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let g = &self.geo;
        Ok(vec![format!(
            "{}->{} {}x{} stride {}x{} {}{}",
            g.c,
            self.cout,
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

impl EvalOp for FastConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let (input_shape, output_shape) = self.shapes();
        eval_f32("FastConv", &x, &input_shape, &output_shape, |x, out| {
            conv_threaded(self, x, Isa::detect(), out)
        })
    }
}

impl TypedOp for FastConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let (input_shape, output_shape) = self.shapes();
        f32_output_facts(inputs, 1, &input_shape, &output_shape)
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let g = &self.geo;
        let fma = g.n * self.cout * g.oh() * g.ow() * g.c * g.taps();
        Ok(tvec!((Cost::FMA(f32::datum_type()), fma.into())))
    }

    as_op!();
}

/// Dense convolution of `x` (`n*cin*h*w`, NCHW) by `op` into `out` (`n*cout*oh*ow`), on `isa`
/// (the weights repacked first when `op` holds them for another instruction set's kernels).
pub fn dense(op: &FastConv, x: &[f32], isa: Isa, out: &mut [f32]) {
    if op.weights.lanes.is_some() == lanes_layout(&op.geo, isa) {
        return conv_threaded(op, x, isa, out).unwrap();
    }
    let (kernel, bias) = op.weights.unpacked();
    let mut repacked = FastConv::for_isa(op.geo, op.cout, op.rank, &kernel, &bias, isa).unwrap();
    repacked.clip = op.clip;
    conv_threaded(&repacked, x, isa, out).unwrap()
}

/// What the kernels need for one batch item.
struct Prepared<'a> {
    op: &'a FastConv,
    setup: PlaneSetup,
    /// `K` offsets into the scratch: input channel `ci`'s phase planes plus the tap offset.
    koff: Vec<u32>,
    /// The jobs of one plane.
    jobs: Vec<Job>,
}

/// Whether `isa` runs the convolution `g` channels-in-lanes ([`pointwise_small`]), so its
/// weights are packed that way.
fn lanes_layout(g: &Geometry, isa: Isa) -> bool {
    isa == Isa::Avx512 && pointwise_small_fits(&unfolded(g, isa).unwrap_or(*g))
}

/// The convolution `g` as a 1x1, stride-1, unpadded one over its input unfolded by [`unfold`]
/// (one plane per input channel and tap), where that runs faster than the phase planes:
/// - a strided, unpadded 1x1 convolution (ResNet's downsampling shortcuts): copying out the
///   pixels at the stride (a quarter of the input at stride 2) costs less than the phase
///   planes, which copy all of it, and the stride-1 convolution reads them in place, or
///   channels in the lanes on a small plane;
/// - on AVX-512, any other convolution onto a small plane (ResNet18's stride-2 3x3 onto 14x14
///   and 7x7): vectors along such a plane are partly empty (7 of 16 lanes per row of 7, or a
///   wasted column per row run flat), while the channels-in-lanes kernel fills every lane;
///   the copy (`taps` planes per input channel, 2.25x the input at stride 2) costs a few
///   percent of the products.
fn unfolded(g: &Geometry, isa: Isa) -> Option<Geometry> {
    let strided = g.sh > 1 || g.sw > 1;
    let shortcut = g.taps() == 1 && strided && g.unpadded();
    let small = isa == Isa::Avx512 && g.taps() > 1 && g.oh() * g.ow() <= SMALL_PLANE;
    (shortcut || small).then(|| Geometry::pointwise(g.n, g.c * g.taps(), g.oh(), g.ow()))
}

/// `x` (NCHW over `g`) unfolded: for every batch item, input channel `ci` and tap
/// `t = ky * kw + kx`, in that order (the order of an OIHW kernel's `K`), the `oh * ow` plane
/// of the pixels the outputs read through that tap, zeros where it falls in the padding.
fn unfold(g: &Geometry, isa: Isa, x: &[f32]) -> Vec<f32> {
    let (oh, ow) = (g.oh(), g.ow());
    let mut unfolded = Vec::with_capacity(g.n * g.c * g.taps() * oh * ow);
    if g.taps() == 1 && g.unpadded() {
        // Tap 0 is the pixel at the stride: picked straight from the input.
        for plane in x.chunks_exact(g.h * g.w) {
            for oy in 0..oh {
                let row = &plane[oy * g.sh * g.w..][..g.w];
                unfolded.extend(row.iter().step_by(g.sw).take(ow));
            }
        }
        return unfolded;
    }
    // Through one channel's phase planes (zero-padded, split by the stride), where every tap's
    // pixels are rows of `ow` at the phase width apart.
    let setup = PlaneSetup::new(g, isa.lanes());
    let mut phases = vec![0f32; g.sh * g.sw * setup.phase_len];
    super::planes::clear_padding(&setup, &mut phases, 0.0);
    for plane in x.chunks_exact(g.h * g.w) {
        fill_phases(isa, &setup, plane, &mut phases);
        for &tap in &setup.tap_offsets {
            for oy in 0..oh {
                unfolded.extend_from_slice(&phases[tap + oy * setup.wq..][..ow]);
            }
        }
    }
    unfolded
}

/// One input plane into its phase planes `dst` (whose padding cells stay as they are).
fn fill_phases(isa: Isa, setup: &PlaneSetup, plane: &[f32], dst: &mut [f32]) {
    // Safety: the features were detected for this `Isa`.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => super::x86::planes::fill_avx512(setup, plane, dst),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => super::x86::planes::fill_avx2(setup, plane, dst),
            _ => super::planes::fill_portable(setup, plane, dst),
        }
    }
}

fn conv_threaded(op: &FastConv, x: &[f32], isa: Isa, out: &mut [f32]) -> TractResult<()> {
    let g = &op.geo;
    let (oh, ow) = (g.oh(), g.ow());
    assert_eq!(x.len(), g.n * g.c * g.h * g.w);
    assert_eq!(out.len(), g.n * op.cout * oh * ow);
    if let Some(inner) = unfolded(g, isa) {
        let unfolded = unfold(g, isa, x);
        let inner = FastConv {
            geo: inner,
            ..op.clone()
        };
        return conv_threaded(&inner, &unfolded, isa, out);
    }
    #[cfg(target_arch = "x86_64")]
    if op.weights.lanes.is_some() {
        ensure!(
            isa == Isa::Avx512,
            "weights packed for AVX-512 run on {isa:?}"
        );
        return pointwise_small(op, x, out);
    }
    let setup = PlaneSetup::new(g, isa.lanes());
    // A 1x1, stride 1, unpadded convolution reads its input where it is: no scratch, no copy.
    let direct = reads_in_place(g);
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
        super::planes::jobs(1, oh * setup.wq, 0, 0, lanes)
    } else {
        super::planes::jobs(oh, ow, setup.wq, ow, lanes)
    };
    let flat_len = (oh * setup.wq).next_multiple_of(super::LANES_MAX);
    let prepared = Prepared {
        op,
        setup,
        koff,
        jobs,
    };
    let blocks = op.weights.blocks();
    let spare_len = if copy { 0 } else { MR * flat_len.max(oh * ow) };
    let staging = if copy {
        blocks * MR * flat_len
    } else {
        spare_len
    };
    let scratch_len = if direct { 0 } else { g.c * channel_len };
    super::planes::with_buffers(scratch_len, staging, |scratch, staging| {
        for ci in 0..scratch_len / channel_len.max(1) {
            // The padding cells stay zero: the fills below overwrite only the interior.
            super::planes::clear_padding(
                &prepared.setup,
                &mut scratch[ci * channel_len..][..channel_len],
                0.0,
            );
        }
        run_batch(&prepared, isa, x, out, scratch, staging, copy, flat_len)
    })
}

/// A 1x1, stride-1, unpadded convolution: it reads its input in place (no phase planes).
fn reads_in_place(g: &Geometry) -> bool {
    g.taps() == 1 && g.sh == 1 && g.sw == 1 && g.unpadded()
}

/// A dense convolution run one weight block ([`MR`] output channels) at a time into a small
/// buffer, for [`super::fused`]: only 1x1, stride-1, unpadded convolutions on the block path
/// (not channels-in-lanes), which read their input in place.
pub(crate) struct BlockRunner<'a> {
    prepared: Prepared<'a>,
    isa: Isa,
}

impl<'a> BlockRunner<'a> {
    /// The runner for `op` on `isa`, if `op` reads its input in place and its plane is too
    /// large for the channels-in-lanes path (whatever `isa`, so that which nodes fuse does not
    /// depend on the CPU).
    pub(crate) fn new(op: &'a FastConv, isa: Isa) -> Option<BlockRunner<'a>> {
        let g = &op.geo;
        if !reads_in_place(g) || pointwise_small_fits(g) {
            return None;
        }
        let setup = PlaneSetup::new(g, isa.lanes());
        let plane = g.h * g.w;
        let koff = (0..g.c).map(|ci| (ci * plane) as u32).collect();
        let lanes = isa.lanes();
        // Rows are whole planes' rows (the phase width is the width): flat when it needs fewer
        // vectors, never a copy.
        let jobs = if plane.div_ceil(lanes) < g.h * g.w.div_ceil(lanes) {
            super::planes::jobs(1, plane, 0, 0, lanes)
        } else {
            super::planes::jobs(g.h, g.w, g.w, g.w, lanes)
        };
        Some(BlockRunner {
            prepared: Prepared {
                op,
                setup,
                koff,
                jobs,
            },
            isa,
        })
    }

    /// Weight blocks.
    pub(crate) fn blocks(&self) -> usize {
        self.prepared.op.weights.blocks()
    }

    /// Output channels `block * MR..` (at most [`MR`], fewer in the last block) of one batch item
    /// `x` (`cin` planes) into `planes` (`MR` planes of `h * w`, the channels past `cout`
    /// computed on zero weights).
    pub(crate) fn run(&self, x: &[f32], block: usize, planes: &mut [f32]) {
        let g = &self.prepared.op.geo;
        let plane = g.h * g.w;
        assert_eq!(x.len(), g.c * plane);
        assert!(block < self.blocks() && planes.len() >= MR * plane);
        let mut targets = vec![0usize; self.blocks() * MR];
        for j in 0..MR {
            targets[block * MR + j] = planes.as_mut_ptr() as usize + j * plane * 4;
        }
        // Safety: `x` holds every plane `koff` points into, the jobs read within a plane (masked
        // on the SIMD paths); each target holds a whole plane.
        unsafe {
            run_blocks(
                &self.prepared,
                self.isa,
                x.as_ptr(),
                &targets,
                block..block + 1,
            )
        }
    }
}

/// Whether a convolution takes the channels-in-lanes path: 1x1, stride 1, no padding, a small
/// plane (7x7 in EfficientNet-Lite0's last stages), where vectors along the plane would be
/// mostly empty.
pub(crate) fn pointwise_small_fits(g: &Geometry) -> bool {
    g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.unpadded() && g.h * g.w <= SMALL_PLANE
}

/// A small-plane pointwise convolution with output channels in the vector lanes: tiles of
/// [`CT`] channels x [`PT`] pixels, per input channel two weight vectors and [`PT`] broadcast
/// inputs (read straight from `x`, no scratch), results transposed into the channel planes.
#[cfg(target_arch = "x86_64")]
fn pointwise_small(op: &FastConv, x: &[f32], out: &mut [f32]) -> TractResult<()> {
    let g = &op.geo;
    let (p, k) = (g.h * g.w, g.c);
    for n in 0..g.n {
        pointwise_lanes(
            op,
            &x[n * k * p..][..k * p],
            super::x86::conv::Input::Planes { channel_stride: p },
            Store::Planes { skip: None },
            &mut out[n * op.cout * p..][..op.cout * p],
        )?;
    }
    Ok(())
}

/// Output pixels per work item of [`pointwise_lanes`]: the item's partial sums (`[pixels][CT]`,
/// 32 KB) stay in L1/L2 while the input channels go by in passes.
pub(crate) const CHUNK_PIXELS: usize = 256;

/// Where [`pointwise_lanes`] puts its sums.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Store<'a> {
    /// Into `cout` planes of `p`, plus `skip` (the same shape: a residual block's input) when
    /// given.
    Planes { skip: Option<&'a [f32]> },
    /// Each channel's sum over its `p` pixels into `cout` floats (a global average pool's
    /// sum); `p` at most [`CHUNK_PIXELS`].
    PixelSums,
}

/// `op` (holding channels-in-lanes weights) on one batch item `x` (`op.geo.c` channels of `p`
/// pixels, laid out as `input` says) into `out` as `store` says; the work split by tiles of
/// [`CT`] output channels and chunks of pixels across tract's current executor. AVX-512F only
/// (the caller checked).
#[cfg(target_arch = "x86_64")]
pub(crate) fn pointwise_lanes(
    op: &FastConv,
    x: &[f32],
    input: super::x86::conv::Input,
    store: Store,
    out: &mut [f32],
) -> TractResult<()> {
    use super::x86::conv::{partial_sums, partial_to_planes, pointwise_passes, Input};
    let (k, p, cout) = (op.geo.c, op.geo.h * op.geo.w, op.cout);
    let (floats, pixel_stride) = match input {
        Input::Planes { channel_stride } => ((k - 1) * channel_stride + p, 1),
        Input::Tiles { tile_stride } => (k.div_ceil(CT) * tile_stride, CT),
    };
    assert!(x.len() >= floats);
    match store {
        Store::Planes { skip } => {
            assert_eq!(out.len(), cout * p);
            assert_eq!(skip.map_or(out.len(), |s| s.len()), out.len());
        }
        Store::PixelSums => assert!(out.len() == cout && p <= CHUNK_PIXELS),
    }
    let (packed, bias) = op.weights.lanes.as_ref().context("no lanes weights")?;
    let packed = packed.as_slice();
    let (lo, hi) = Clip::bounds(op.clip);
    let chunks = p.div_ceil(CHUNK_PIXELS);
    let chunk = p.div_ceil(chunks);
    let dst = out.as_mut_ptr() as usize;
    let items = cout.div_ceil(CT) * chunks;
    let work = cout * p * k;
    tract_linalg::multithread::par_chunks_mut(&mut vec![(); items], 1, work, |first, is| {
        let mut partial = AlignedBuf::zeros(chunk * CT);
        let partial = partial.as_mut_slice();
        for item in first..first + is.len() {
            let (t, c) = (item / chunks, item % chunks);
            let p0 = c * chunk;
            let pixels = chunk.min(p - p0);
            let valid = (cout - t * CT).min(CT);
            let at = t * CT * p + p0;
            // Safety: AVX-512F (the caller checked); `x` holds `k` channels of `p` pixels as
            // `input` says, the item reads pixels `p0..p0 + pixels` of them; item `(t, c)`
            // writes only its own channels' pixels of `out`.
            unsafe {
                pointwise_passes(
                    x.as_ptr().add(p0 * pixel_stride),
                    pixels,
                    k,
                    input,
                    valid.div_ceil(16),
                    packed[t * k * CT..][..k * CT].as_ptr(),
                    &bias[t * CT..][..CT],
                    op.clip.is_some(),
                    lo,
                    hi,
                    partial,
                    None,
                );
                match store {
                    Store::PixelSums => partial_sums(
                        partial.as_ptr(),
                        pixels,
                        valid,
                        (dst as *mut f32).add(t * CT),
                    ),
                    Store::Planes { skip } => partial_to_planes(
                        partial.as_ptr(),
                        pixels,
                        valid,
                        (dst as *mut f32).add(at),
                        p,
                        skip.map(|s| s[at..].as_ptr()),
                    ),
                }
            }
        }
        Ok(())
    })
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
            fill_phases(isa, &prepared.setup, plane, dst);
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
    let (lo, hi) = Clip::bounds(clip);
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
                    Isa::Avx512 => super::x86::conv::block_avx512(
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
                            super::x86::conv::block_avx2(
                                base,
                                &p.koff,
                                w,
                                b,
                                clip.is_some(),
                                lo,
                                hi,
                                group,
                                o,
                            )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ops::testing::{pointwise_reference, Rng};

    /// Every output within 1e-5 of the definition's (relative past magnitude 1).
    fn assert_close(got: &[f32], want: &[f32], case: &str) {
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                "{case} at {i}: {a} vs {b}"
            );
        }
    }

    #[test]
    fn weights_are_held_in_one_layout_and_unpack_to_the_kernel() {
        let mut rng = Rng::new(0x1a7e5);
        let (cout, k) = (45, 37);
        let kernel = rng.uniforms(-1.0, 1.0, cout * k);
        let bias = rng.uniforms(-1.0, 1.0, cout);
        let blocks = DenseWeights::new(cout, k, &kernel, &bias);
        let lanes = DenseWeights::new_lanes(cout, k, &kernel, &bias);
        assert!(blocks.lanes.is_none() && !blocks.packed.is_empty());
        assert!(lanes.packed.is_empty() && lanes.bias.is_empty());
        for w in [&blocks, &lanes] {
            assert_eq!(w.unpacked(), (kernel.clone(), bias.clone()));
        }
    }

    /// Strided 1x1 convolutions (ResNet's shortcuts) run as stride-1 ones on the pixels at
    /// the stride: against the definition, on small planes (channels in lanes) and larger
    /// ones (in place), odd sizes, strides 2 and 3.
    #[test]
    fn strided_pointwise_matches_definition() {
        let mut rng = Rng::new(0x5d0e);
        for (n, cin, cout, h, w, s) in [
            (1, 64, 40, 56, 56, 2),
            (1, 129, 33, 14, 14, 2),
            (2, 40, 70, 13, 15, 2),
            (1, 17, 9, 11, 10, 3),
        ] {
            let g = Geometry {
                sh: s,
                sw: s,
                ..Geometry::pointwise(n, cin, h, w)
            };
            let (oh, ow) = (g.oh(), g.ow());
            let x = rng.uniforms(-1.0, 1.0, n * cin * h * w);
            let wts = rng.uniforms(-0.2, 0.2, cout * cin);
            let bias = rng.uniforms(-1.0, 1.0, cout);
            // The definition: every output pixel reads input pixel (s * oy, s * ox).
            let picked: Vec<f32> = x
                .chunks_exact(h * w)
                .flat_map(|p| {
                    (0..oh).flat_map(move |oy| (0..ow).map(move |ox| p[s * oy * w + s * ox]))
                })
                .collect();
            let want = pointwise_reference(
                &Geometry::pointwise(n, cin, oh, ow),
                cout,
                &picked,
                &wts,
                &bias,
                None,
            );
            for isa in Isa::available() {
                let op = FastConv::for_isa(g, cout, 4, &wts, &bias, isa).unwrap();
                let mut got = vec![f32::NAN; want.len()];
                dense(&op, &x, isa, &mut got);
                assert_close(&got, &want, &format!("{isa:?} {g:?} -> {cout}"));
            }
        }
    }

    #[test]
    fn pointwise_matches_definition_on_small_and_large_planes() {
        let mut rng = Rng::new(0xc0ffee);
        // Small planes (channels in lanes: several input passes, partial tiles and runs) and
        // planes past them (the block path), with and without a clamp.
        for (n, cin, cout, h, w) in [
            (1, 300, 45, 7, 7),
            (2, 129, 33, 5, 9),
            (1, 1152, 40, 3, 3),
            (1, 20, 70, 16, 16),
            (1, 17, 13, 17, 19),
        ] {
            let g = Geometry::pointwise(n, cin, h, w);
            let x = rng.uniforms(-1.0, 1.0, n * cin * h * w);
            let wts = rng.uniforms(-0.2, 0.2, cout * cin);
            let bias = rng.uniforms(-1.0, 1.0, cout);
            for clip in [None, Some(Clip::new(0.0, 0.5))] {
                let mut op = FastConv::new(g, cout, 4, &wts, &bias).unwrap();
                op.clip = clip;
                let want = pointwise_reference(&g, cout, &x, &wts, &bias, clip);
                // The channels-in-lanes kernel both ways: broadcast into a register (Intel)
                // and folded into the FMAs (AMD).
                #[cfg(target_arch = "x86_64")]
                let ways = [1, 2];
                #[cfg(not(target_arch = "x86_64"))]
                let ways = [0];
                for way in ways {
                    #[cfg(target_arch = "x86_64")]
                    super::super::x86::FORCE_BROADCAST
                        .store(way, std::sync::atomic::Ordering::Relaxed);
                    for isa in Isa::available() {
                        let mut got = vec![f32::NAN; want.len()];
                        dense(&op, &x, isa, &mut got);
                        let case = format!("{isa:?} way {way} {g:?} -> {cout} {clip:?}");
                        assert_close(&got, &want, &case);
                    }
                }
                #[cfg(target_arch = "x86_64")]
                super::super::x86::FORCE_BROADCAST.store(0, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}
