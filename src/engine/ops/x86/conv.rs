//! AVX-512F and AVX2+FMA kernels of the dense convolution ([`crate::engine::ops::conv`]).

use std::arch::x86_64::*;

use crate::engine::ops::conv::{CT, KC, MR, PT};
use crate::engine::ops::planes::Job;

/// How far ahead (floats) the kernels prefetch their weights: 4 KB, 128 steps of `k`.
const WEIGHT_PREFETCH: usize = 1024;
/// The same for [`block3_single_vector`]: 1 KB ahead in each of its three weight streams
/// (4 KB measured 1.5-2% slower on ResNet18 on the Intel VM, 512 B to 2 KB the same).
const SINGLE_VECTOR_PREFETCH: usize = 256;
/// The same for [`pointwise_px`], which goes through its weights faster.
const LANES_PREFETCH: usize = 2048;

/// 8 output channels x up to 3 vectors of 16 (one per job of `group`): per `k`, 3 loads,
/// 8 broadcasts, 24 FMAs.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn block_avx512(
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
    // Whole vectors load without a mask: a masked load takes a slot on an FMA port too.
    let full = group.iter().all(|j| j.lanes == 16);
    macro_rules! run {
        ($r:literal, $v:literal, $w:expr, $b:expr, $o:expr) => {
            match (clip, full) {
                (false, false) => {
                    block_n_avx512::<$r, $v, false, false>(base, koff, $w, $b, lo, hi, group, $o)
                }
                (false, true) => {
                    block_n_avx512::<$r, $v, false, true>(base, koff, $w, $b, lo, hi, group, $o)
                }
                (true, false) => {
                    block_n_avx512::<$r, $v, true, false>(base, koff, $w, $b, lo, hi, group, $o)
                }
                (true, true) => {
                    block_n_avx512::<$r, $v, true, true>(base, koff, $w, $b, lo, hi, group, $o)
                }
            }
        };
    }
    unsafe {
        match group.len() {
            3 => run!(8, 3, weights, bias, o),
            2 => run!(8, 2, weights, bias, o),
            1 => run!(8, 1, weights, bias, o),
            // Four vectors (a 7x7 plane): two halves of four channels, 16 accumulators each.
            4 => {
                for h in [0, MR / 2] {
                    run!(4, 4, weights.add(h), &bias[h..], &outs[h..]);
                }
            }
            n => unreachable!("{n} jobs in a group"),
        }
    }
}

/// Up to `3 * MR` output channels (one to three blocks of weights, each `[k][MR]`) x one
/// vector of 16 outputs, no bias, no clamp: a product whose plane is one vector (a 7x7 plane's Winograd
/// F(2x2) tiles). One block of [`MR`] channels alone keeps 8 accumulators, too few to hide the
/// FMA latency, and reads its input vectors once per 8 channels; three keep 24 and read them
/// once per 24.
///
/// # Safety
/// AVX-512F; `koff` offsets into `base` hold the job's lanes; each block of weights holds
/// `koff.len() * MR` floats; `outs` holds `MR` rows per block, each with the job's outputs.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn block3_single_vector(
    base: *const f32,
    koff: &[u32],
    weights: &[*const f32],
    job: &Job,
    outs: &[*mut f32],
) {
    // A whole vector loads without a mask (see `block_avx512`).
    unsafe {
        match (weights.len(), job.lanes == 16) {
            (3, true) => blocks_single_vector::<3, true>(base, koff, weights, job, outs),
            (3, false) => blocks_single_vector::<3, false>(base, koff, weights, job, outs),
            (2, true) => blocks_single_vector::<2, true>(base, koff, weights, job, outs),
            (2, false) => blocks_single_vector::<2, false>(base, koff, weights, job, outs),
            (_, true) => blocks_single_vector::<1, true>(base, koff, weights, job, outs),
            (_, false) => blocks_single_vector::<1, false>(base, koff, weights, job, outs),
        }
    }
}

/// [`block3_single_vector`] for `B` blocks.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn blocks_single_vector<const B: usize, const FULL: bool>(
    base: *const f32,
    koff: &[u32],
    weights: &[*const f32],
    job: &Job,
    outs: &[*mut f32],
) {
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); MR]; B];
        let lanes = ((1u32 << job.lanes) - 1) as __mmask16;
        let at = job.inp as usize;
        for (i, &k) in koff.iter().enumerate() {
            for w in &weights[..B] {
                _mm_prefetch::<_MM_HINT_T0>(w.add(i * MR + SINGLE_VECTOR_PREFETCH) as *const i8);
            }
            let x = if FULL {
                _mm512_loadu_ps(base.add(k as usize + at))
            } else {
                _mm512_maskz_loadu_ps(lanes, base.add(k as usize + at))
            };
            for b in 0..B {
                let w = weights[b].add(i * MR);
                for j in 0..MR {
                    let wj = _mm512_set1_ps(*w.add(j));
                    acc[b][j] = _mm512_fmadd_ps(wj, x, acc[b][j]);
                }
            }
        }
        for b in 0..B {
            for j in 0..MR {
                _mm512_mask_storeu_ps(outs[b * MR + j].add(job.out as usize), lanes, acc[b][j]);
            }
        }
    }
}

/// The last `T` (1 to [`TAIL_TILES`]) pixels of a product's plane, [`MR`] output channels
/// with the channels in the lanes: per input channel one load of the block's `MR` weights
/// (low lanes), one broadcast and one FMA per pixel. A vector along the plane would compute 16
/// lanes for these `T` and keep `MR` accumulators busy for each (a 49-tile plane spent a
/// quarter of its product time on its 49th tile). Four partial sums (input channels modulo 4)
/// hide the FMA latency when `T` is small. No bias, no clamp: Winograd products start at 0.
///
/// # Safety
/// AVX-512F; `base + koff[ci] + at + t` readable for `t < T`; `weights` holds
/// `koff.len() * MR` floats; `outs[j] + at + t` writable for `j < MR`, `t < T`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn tail_pixels_avx512(
    base: *const f32,
    koff: &[u32],
    weights: *const f32,
    at: usize,
    tail: usize,
    outs: &[*mut f32; MR],
) {
    unsafe {
        match tail {
            1 => tail_n_avx512::<1>(base, koff, weights, at, outs),
            2 => tail_n_avx512::<2>(base, koff, weights, at, outs),
            3 => tail_n_avx512::<3>(base, koff, weights, at, outs),
            4 => tail_n_avx512::<4>(base, koff, weights, at, outs),
            n => unreachable!("{n} tail pixels"),
        }
    }
}

/// `MR` (8) floats at `p` in the low lanes, zeros above: a 256-bit load, which zeroes the
/// upper half by itself (a masked 512-bit load takes a slot on an FMA port too).
#[inline(always)]
unsafe fn low_half(p: *const f32) -> __m512 {
    const { assert!(MR == 8) };
    unsafe { _mm512_zextps256_ps512(_mm256_loadu_ps(p)) }
}

/// Most pixels [`tail_pixels_avx512`] takes (past them a vector along the plane is as cheap).
pub(crate) const TAIL_TILES: usize = 4;

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn tail_n_avx512<const T: usize>(
    base: *const f32,
    koff: &[u32],
    weights: *const f32,
    at: usize,
    outs: &[*mut f32; MR],
) {
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); T]; 4];
        let mut chunks = koff.chunks_exact(4);
        let mut ci = 0;
        for ks in &mut chunks {
            for c in 0..4 {
                let w = low_half(weights.add((ci + c) * MR));
                let p = base.add(ks[c] as usize + at);
                for t in 0..T {
                    acc[c][t] = _mm512_fmadd_ps(w, _mm512_set1_ps(*p.add(t)), acc[c][t]);
                }
            }
            ci += 4;
        }
        for (c, &k) in chunks.remainder().iter().enumerate() {
            let w = low_half(weights.add((ci + c) * MR));
            let p = base.add(k as usize + at);
            for t in 0..T {
                acc[c][t] = _mm512_fmadd_ps(w, _mm512_set1_ps(*p.add(t)), acc[c][t]);
            }
        }
        for t in 0..T {
            let sum = _mm512_add_ps(
                _mm512_add_ps(acc[0][t], acc[1][t]),
                _mm512_add_ps(acc[2][t], acc[3][t]),
            );
            let mut lanes = [0f32; 16];
            _mm512_storeu_ps(lanes.as_mut_ptr(), sum);
            for j in 0..MR {
                *outs[j].add(at + t) = lanes[j];
            }
        }
    }
}

/// `R` output channels (weights at a stride of [`MR`]) x `V` vectors of 16.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn block_n_avx512<const R: usize, const V: usize, const CLIP: bool, const FULL: bool>(
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
                // Masked unless whole: read straight from the input tensor, a row's last
                // vector must not run past its end.
                x[v] = if FULL {
                    _mm512_loadu_ps(p.add(at[v]))
                } else {
                    _mm512_maskz_loadu_ps(lanes[v], p.add(at[v]))
                };
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

/// Where the 1x1 kernel reads input channel `c` of pixel `i` (floats from `x`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Input {
    /// Channel planes: `c * channel_stride + i` (a whole plane, or a band of rows of a larger
    /// one).
    Planes { channel_stride: usize },
    /// Tiles of [`CT`] channels, pixel-major, as the channels-in-lanes depthwise step writes
    /// them: `(c / CT) * tile_stride + i * CT + c % CT`.
    Tiles { tile_stride: usize },
}

/// [`CT`] output channels of a 1x1 convolution over `p` pixels (`x`: `k` input channels of `p`
/// pixels laid out as `input` says) into `partial`
/// (`p * CT` floats, pixel-major: the channels of a pixel side by side; with `rows = Some((w,
/// pitch))` pixel `i` at `(i / w) * pitch + i % w`, rows of `w` pixels straight into a wider
/// zero-bordered buffer, runs never crossing a row), in runs of at most
/// [`PT`] pixels of nearly equal length (49 pixels go as 10+10+10+10+9, not 12+12+12+12+1: a
/// short run pays the weight loads for few FMAs). The input channels go in even passes of at
/// most [`KC`], every run through one pass before the next, the partial sums parked in
/// `partial`: a pass's weights come from memory once and then from L1 for the other runs,
/// instead of the whole tile's weights (up to 147 KB for 1152 inputs) streaming from memory
/// during the first run. The last pass parks its clamped sums too.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn pointwise_passes(
    x: *const f32,
    p: usize,
    k: usize,
    input: Input,
    halves: usize,
    weights: *const f32,
    bias: &[f32],
    clip: bool,
    lo: f32,
    hi: f32,
    partial: &mut [f32],
    rows: Option<(usize, usize)>,
) {
    // Segments of pixels a run stays within, and where a segment's sums park.
    let (segments, seg_len, seg_pitch) = match rows {
        Some((w, pitch)) => {
            assert!(p.is_multiple_of(w) && pitch >= w);
            (p / w, w, pitch)
        }
        None => (1, p, p),
    };
    assert!(partial.len() >= ((segments - 1) * seg_pitch + seg_len) * CT);
    assert!(halves == 1 || halves == 2);
    let (tiled, stride) = match input {
        Input::Planes { channel_stride } => {
            assert!(channel_stride >= p);
            (false, channel_stride)
        }
        Input::Tiles { tile_stride } => {
            assert!(tile_stride >= p * CT && rows.is_none());
            (true, tile_stride)
        }
    };
    // One vector of channels (a partial last tile, 16 of 32 channels valid) takes twice the
    // pixels a run: the same 24 accumulators.
    let runs = seg_len.div_ceil(PT * (3 - halves));
    let (short, longer) = (seg_len / runs, seg_len % runs);
    let part = partial.as_mut_ptr();
    // Only the two-vector FMAs share a broadcast.
    let reg = halves == 2 && super::intel();
    let passes = k.div_ceil(KC);
    let per_pass = k.div_ceil(passes);
    unsafe {
        let mut k0 = 0;
        while k0 < k {
            let kc = (k - k0).min(per_pass);
            let pass = Pass {
                x: if tiled {
                    x.add(k0 / CT * stride + k0 % CT)
                } else {
                    x.add(k0 * stride)
                },
                stride,
                lane: k0 % CT,
                kc,
                weights: weights.add(k0 * CT),
                first: k0 == 0,
                last: k0 + kc == k,
            };
            for seg in 0..segments {
                let mut at = 0;
                for run in 0..runs {
                    let n = short + (run < longer) as usize;
                    let p0 = seg * seg_len + at;
                    let park = part.add((seg * seg_pitch + at) * CT);
                    macro_rules! go {
                        ($h:literal, $($n:literal)*) => {
                            match (n, clip, reg, tiled) {
                                $(
                                    ($n, true, false, false) => pointwise_px::<$n, $h, true, false, false>(&pass, bias, p0, lo, hi, park),
                                    ($n, false, false, false) => pointwise_px::<$n, $h, false, false, false>(&pass, bias, p0, lo, hi, park),
                                    ($n, true, true, false) => pointwise_px::<$n, $h, true, true, false>(&pass, bias, p0, lo, hi, park),
                                    ($n, false, true, false) => pointwise_px::<$n, $h, false, true, false>(&pass, bias, p0, lo, hi, park),
                                    ($n, true, false, true) => pointwise_px::<$n, $h, true, false, true>(&pass, bias, p0, lo, hi, park),
                                    ($n, false, false, true) => pointwise_px::<$n, $h, false, false, true>(&pass, bias, p0, lo, hi, park),
                                    ($n, true, true, true) => pointwise_px::<$n, $h, true, true, true>(&pass, bias, p0, lo, hi, park),
                                    ($n, false, true, true) => pointwise_px::<$n, $h, false, true, true>(&pass, bias, p0, lo, hi, park),
                                )*
                                _ => unreachable!("a run of {n} pixels"),
                            }
                        };
                    }
                    if halves == 2 {
                        go!(2, 1 2 3 4 5 6 7 8 9 10 11 12)
                    } else {
                        go!(1, 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24)
                    }
                    at += n;
                }
            }
            k0 += kc;
        }
    }
}

/// The first `valid` channels of pixel-major sums (`part`: `p * CT` floats) into `p` floats of
/// channel planes `plane_stride` apart at `out`, plus the same floats of `residual` (laid out
/// as `out`) when given (a residual block's skip connection): blocks of 16 pixels x 16 channels transposed
/// in registers ([`transpose16`]), each channel's 16 pixels one contiguous store. (One gather
/// per channel and 16 pixels cost 24 cycles each on this Zen 4: a third of a 56x56 fused
/// block's time.)
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn partial_to_planes(
    part: *const f32,
    p: usize,
    valid: usize,
    out: *mut f32,
    plane_stride: usize,
    residual: Option<*const f32>,
) {
    unsafe {
        for half in 0..valid.div_ceil(16) {
            let channels = (valid - 16 * half).min(16);
            let mut q = 0;
            while q < p {
                let pixels = (p - q).min(16);
                let mut rows = [_mm512_setzero_ps(); 16];
                for (i, row) in rows.iter_mut().enumerate().take(pixels) {
                    *row = _mm512_loadu_ps(part.add((q + i) * CT + 16 * half));
                }
                let cols = transpose16(rows);
                let mask = ((1u32 << pixels) - 1) as __mmask16;
                let at = 16 * half * plane_stride + q;
                for (j, col) in cols.iter().enumerate().take(channels) {
                    let mut v = *col;
                    if let Some(r) = residual {
                        let skip = _mm512_maskz_loadu_ps(mask, r.add(at + j * plane_stride));
                        v = _mm512_add_ps(v, skip);
                    }
                    _mm512_mask_storeu_ps(out.add(at + j * plane_stride), mask, v);
                }
                q += 16;
            }
        }
    }
}

/// Each of the first `valid` channels of pixel-major sums (`part`: `p * CT` floats) summed over
/// the `p` pixels, in pixel order, into `out[..valid]`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn partial_sums(part: *const f32, p: usize, valid: usize, out: *mut f32) {
    unsafe {
        for half in 0..valid.div_ceil(16) {
            let mut acc = _mm512_setzero_ps();
            for q in 0..p {
                acc = _mm512_add_ps(acc, _mm512_loadu_ps(part.add(q * CT + 16 * half)));
            }
            let channels = (valid - 16 * half).min(16);
            let mask = ((1u32 << channels) - 1) as __mmask16;
            _mm512_mask_storeu_ps(out.add(16 * half), mask, acc);
        }
    }
}

/// The 16x16 transpose of `r` (`r[i][j]` -> `result[j][i]`): unpack pairs of rows, shuffle
/// within 128-bit lanes, then two rounds of 128-bit lane shuffles; 64 shuffles in all.
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
    let mut t = [_mm512_setzero_ps(); 16];
    for k in 0..8 {
        t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
    // u[4m + c], lane L: rows 4m..4m+4 of column 4L + c.
    let mut u = [_mm512_setzero_ps(); 16];
    for m in 0..4 {
        let b = 4 * m;
        u[b] = _mm512_shuffle_ps::<0x44>(t[b], t[b + 2]);
        u[b + 1] = _mm512_shuffle_ps::<0xEE>(t[b], t[b + 2]);
        u[b + 2] = _mm512_shuffle_ps::<0x44>(t[b + 1], t[b + 3]);
        u[b + 3] = _mm512_shuffle_ps::<0xEE>(t[b + 1], t[b + 3]);
    }
    // Column 4L + c gathers lane L of u[c], u[4 + c], u[8 + c], u[12 + c].
    let mut out = [_mm512_setzero_ps(); 16];
    for c in 0..4 {
        let x0 = _mm512_shuffle_f32x4::<0x88>(u[c], u[4 + c]);
        let x1 = _mm512_shuffle_f32x4::<0xDD>(u[c], u[4 + c]);
        let y0 = _mm512_shuffle_f32x4::<0x88>(u[8 + c], u[12 + c]);
        let y1 = _mm512_shuffle_f32x4::<0xDD>(u[8 + c], u[12 + c]);
        out[c] = _mm512_shuffle_f32x4::<0x88>(x0, y0);
        out[8 + c] = _mm512_shuffle_f32x4::<0xDD>(x0, y0);
        out[4 + c] = _mm512_shuffle_f32x4::<0x88>(x1, y1);
        out[12 + c] = _mm512_shuffle_f32x4::<0xDD>(x1, y1);
    }
    out
}

/// One pass of [`pointwise_tile`] over `kc` input channels.
struct Pass {
    /// The pass's first input channel.
    x: *const f32,
    /// [`Input::Planes`]: floats from one input channel of a pixel to the next;
    /// [`Input::Tiles`]: from one tile to the next.
    stride: usize,
    /// [`Input::Tiles`]: the first input channel's lane in its tile.
    lane: usize,
    kc: usize,
    /// The pass's weights, `[kc][CT]`.
    weights: *const f32,
    /// Start from the bias (else from the partial sums).
    first: bool,
    /// Clamp the sums (the last pass).
    last: bool,
}

/// `N` pixels from `p0` x `16 * H` channels (`H` of the tile's two vectors) through one pass:
/// the accumulators start from the bias or the parked partial sums (`park[q * CT..]`) and go
/// back there (clamped after the last pass). `TILED`: the input is [`Input::Tiles`].
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn pointwise_px<
    const N: usize,
    const H: usize,
    const CLIP: bool,
    const REG: bool,
    const TILED: bool,
>(
    pass: &Pass,
    bias: &[f32],
    p0: usize,
    lo: f32,
    hi: f32,
    park: *mut f32,
) {
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); N]; H];
        for q in 0..N {
            for j in 0..H {
                acc[j][q] = if pass.first {
                    _mm512_loadu_ps(bias.as_ptr().add(16 * j))
                } else {
                    _mm512_loadu_ps(park.add(q * CT + 16 * j))
                };
            }
        }
        let mut w = pass.weights;
        // Floats from one pixel's input to the next.
        let ps = if TILED { CT } else { 1 };
        let mut xp = pass.x.add(p0 * ps);
        let mut lane = pass.lane;
        for _ in 0..pass.kc {
            _mm_prefetch::<_MM_HINT_T0>(w.add(LANES_PREFETCH) as *const i8);
            let w0 = _mm512_loadu_ps(w);
            // On AMD, each pixel's input as the broadcast operand of both FMAs (`{1to16}`),
            // not broadcast once into a register: measured on Zen 4 on Lite0's 7x7 layers
            // (layer_bench), 192->1152 239 -> 217 us, 1152->320 364 -> 320 us, 320->1280 429
            // -> 380 us; the 14x14 ones unchanged. The compiler never folds a broadcast used
            // twice. On Intel (`REG`), the other way round: two broadcast loads per pixel
            // outrun its two vector load ports (an Emerald Rapids Xeon, family 6 model 207: whole
            // Lite0 5.88 -> 5.65 ms, fastest of 200 runs, A/B alternating).
            if H == 2 {
                let w1 = _mm512_loadu_ps(w.add(16));
                for q in 0..N {
                    let xq = xp.add(q * ps);
                    if REG {
                        std::arch::asm!(
                            "vbroadcastss {t}, dword ptr [{x}]",
                            "vfmadd231ps {a}, {w}, {t}",
                            "vfmadd231ps {b}, {v}, {t}",
                            a = inout(zmm_reg) acc[0][q],
                            b = inout(zmm_reg) acc[1][q],
                            w = in(zmm_reg) w0,
                            v = in(zmm_reg) w1,
                            x = in(reg) xq,
                            t = out(zmm_reg) _,
                            options(pure, readonly, nostack, preserves_flags),
                        );
                    } else {
                        std::arch::asm!(
                            "vfmadd231ps {a}, {w}, dword ptr [{x}]{{1to16}}",
                            "vfmadd231ps {b}, {v}, dword ptr [{x}]{{1to16}}",
                            a = inout(zmm_reg) acc[0][q],
                            b = inout(zmm_reg) acc[1][q],
                            w = in(zmm_reg) w0,
                            v = in(zmm_reg) w1,
                            x = in(reg) xq,
                            options(pure, readonly, nostack, preserves_flags),
                        );
                    }
                }
            } else {
                for q in 0..N {
                    let xq = xp.add(q * ps);
                    std::arch::asm!(
                        "vfmadd231ps {a}, {w}, dword ptr [{x}]{{1to16}}",
                        a = inout(zmm_reg) acc[0][q],
                        w = in(zmm_reg) w0,
                        x = in(reg) xq,
                        options(pure, readonly, nostack, preserves_flags),
                    );
                }
            }
            w = w.add(CT);
            if TILED {
                // The next channel: the next lane, or lane 0 of the next tile.
                lane += 1;
                xp = xp.add(if lane == CT {
                    pass.stride - (CT - 1)
                } else {
                    1
                });
                lane %= CT;
            } else {
                xp = xp.add(pass.stride);
            }
        }
        let (lov, hiv) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
        for q in 0..N {
            for j in 0..H {
                let mut v = acc[j][q];
                if CLIP && pass.last {
                    v = _mm512_min_ps(_mm512_max_ps(v, lov), hiv);
                }
                _mm512_storeu_ps(park.add(q * CT + 16 * j), v);
            }
        }
    }
}

/// 4 output channels (half a block: the weights keep their stride of 8) x up to 3
/// vectors of 8.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn block_avx2(
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
            (3, false) => block_n_avx2::<3, false>(base, koff, weights, bias, lo, hi, group, outs),
            (3, true) => block_n_avx2::<3, true>(base, koff, weights, bias, lo, hi, group, outs),
            (2, false) => block_n_avx2::<2, false>(base, koff, weights, bias, lo, hi, group, outs),
            (2, true) => block_n_avx2::<2, true>(base, koff, weights, bias, lo, hi, group, outs),
            (1, false) => block_n_avx2::<1, false>(base, koff, weights, bias, lo, hi, group, outs),
            (1, true) => block_n_avx2::<1, true>(base, koff, weights, bias, lo, hi, group, outs),
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
