//! AVX-512F kernel of the channels-in-lanes depthwise convolution
//! ([`crate::engine::ops::fused_lanes`]): 16 channels in the lanes of one vector, so a tap is
//! one weight vector and one input vector per output pixel, whatever the plane size or the
//! stride (no phase planes, no lane left empty on a 7x7 plane).

use std::arch::x86_64::*;

use crate::engine::ops::conv::CT;
use crate::engine::ops::fused_lanes::LaneGeometry;

/// Most output pixels of one row in flight: 8 accumulators, one weight vector per tap shared
/// by all of them.
const RUN: usize = 8;

/// The depthwise convolution of `halves` (1 or 2) groups of 16 channels of one tile:
/// `padded` is `[hp][wp][CT]` (the expansion's output with zero borders), `weights`
/// `[taps][CT]`, `bias` `[CT]`; the clamped sums go to `out`, `[oh * ow][CT]` (pixel-major).
///
/// # Safety
/// AVX-512F; the buffers hold the sizes above for `g`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn depthwise_lanes<const CLIP: bool>(
    g: &LaneGeometry,
    padded: *const f32,
    weights: *const f32,
    bias: *const f32,
    halves: usize,
    lo: f32,
    hi: f32,
    out: *mut f32,
) {
    // Rows cut into runs of nearly equal length (14 as 7 + 7).
    let runs = g.ow.div_ceil(RUN);
    let (short, longer) = (g.ow / runs, g.ow % runs);
    unsafe {
        for half in 0..halves {
            let h = half * 16;
            for oy in 0..g.oh {
                let mut ox = 0;
                for run in 0..runs {
                    let n = short + (run < longer) as usize;
                    let at = Run { oy, ox, h };
                    let a = (g, &at, padded, weights, bias, lo, hi, out);
                    macro_rules! go {
                        ($n:literal) => {
                            match (g.sw, g.kw) {
                                (1, 3) => run_lanes_s1::<$n, 3, CLIP>(a),
                                (1, 5) => run_lanes_s1::<$n, 5, CLIP>(a),
                                (2, 3) => run_lanes_s2::<$n, 3, CLIP>(a),
                                (2, 5) => run_lanes_s2::<$n, 5, CLIP>(a),
                                _ => run_lanes::<$n, CLIP>(
                                    g, &at, padded, weights, bias, lo, hi, out,
                                ),
                            }
                        };
                    }
                    match n {
                        8 => go!(8),
                        7 => go!(7),
                        6 => go!(6),
                        5 => go!(5),
                        4 => go!(4),
                        3 => go!(3),
                        2 => go!(2),
                        _ => go!(1),
                    }
                    ox += n;
                }
            }
        }
    }
}

/// Where one run starts: output row, first output column, first lane of the tile.
struct Run {
    oy: usize,
    ox: usize,
    h: usize,
}

/// The `N` sums of a run, clamped to `lo..=hi` when `CLIP`, stored at the run's pixels.
///
/// # Safety
/// AVX-512F; the run's `N` pixels of 16 lanes lie inside `out`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store_run<const N: usize, const CLIP: bool>(
    g: &LaneGeometry,
    at: &Run,
    acc: &[__m512; N],
    lo: f32,
    hi: f32,
    out: *mut f32,
) {
    unsafe {
        let (lov, hiv) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
        let dst = out.add((at.oy * g.ow + at.ox) * CT + at.h);
        for (q, &sum) in acc.iter().enumerate() {
            let v = if CLIP {
                _mm512_min_ps(_mm512_max_ps(sum, lov), hiv)
            } else {
                sum
            };
            _mm512_storeu_ps(dst.add(q * CT), v);
        }
    }
}

/// `N` output pixels of one row, 16 channels: per tap one weight load and `N` FMAs.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn run_lanes<const N: usize, const CLIP: bool>(
    g: &LaneGeometry,
    at: &Run,
    padded: *const f32,
    weights: *const f32,
    bias: *const f32,
    lo: f32,
    hi: f32,
    out: *mut f32,
) {
    unsafe {
        let b = _mm512_loadu_ps(bias.add(at.h));
        let mut acc = [b; N];
        let step = g.sw * CT;
        for ky in 0..g.kh {
            let row = padded.add(((at.oy * g.sh + ky) * g.wp + at.ox * g.sw) * CT + at.h);
            let wrow = weights.add(ky * g.kw * CT + at.h);
            for kx in 0..g.kw {
                let w = _mm512_loadu_ps(wrow.add(kx * CT));
                let src = row.add(kx * CT);
                for q in 0..N {
                    acc[q] = _mm512_fmadd_ps(w, _mm512_loadu_ps(src.add(q * step)), acc[q]);
                }
            }
        }
        store_run::<N, CLIP>(g, at, &acc, lo, hi, out);
    }
}

/// The arguments of [`run_lanes`] as one tuple.
type RunArgs<'a> = (
    &'a LaneGeometry,
    &'a Run,
    *const f32,
    *const f32,
    *const f32,
    f32,
    f32,
    *mut f32,
);

/// [`run_lanes`] for stride 1 and `KW` taps a row: the `N + KW - 1` input vectors of a kernel
/// row are loaded once and shared by the `KW` taps (pixel `q` at tap `kx` is pixel `q + 1` at
/// tap `kx - 1`), so a 5x5 kernel loads 12 vectors a row for 40 FMAs instead of 40.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn run_lanes_s1<const N: usize, const KW: usize, const CLIP: bool>(
    (g, at, padded, weights, bias, lo, hi, out): RunArgs,
) {
    unsafe {
        let b = _mm512_loadu_ps(bias.add(at.h));
        let mut acc = [b; N];
        for ky in 0..g.kh {
            let row = padded.add(((at.oy * g.sh + ky) * g.wp + at.ox) * CT + at.h);
            let wrow = weights.add(ky * KW * CT + at.h);
            let mut xs = [_mm512_setzero_ps(); RUN + 4];
            for i in 0..N + KW - 1 {
                xs[i] = _mm512_loadu_ps(row.add(i * CT));
            }
            for kx in 0..KW {
                let w = _mm512_loadu_ps(wrow.add(kx * CT));
                for q in 0..N {
                    acc[q] = _mm512_fmadd_ps(w, xs[q + kx], acc[q]);
                }
            }
        }
        store_run::<N, CLIP>(g, at, &acc, lo, hi, out);
    }
}

/// [`run_lanes_s1`] at stride 2: pixel `q` at tap `kx` reads column `2q + kx`, so a kernel
/// row's `2N + KW - 2` input vectors serve its `N * KW` FMAs (3x3, 8 pixels: 17 loads, not 24).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn run_lanes_s2<const N: usize, const KW: usize, const CLIP: bool>(
    (g, at, padded, weights, bias, lo, hi, out): RunArgs,
) {
    unsafe {
        let b = _mm512_loadu_ps(bias.add(at.h));
        let mut acc = [b; N];
        for ky in 0..g.kh {
            let row = padded.add(((at.oy * g.sh + ky) * g.wp + 2 * at.ox) * CT + at.h);
            let wrow = weights.add(ky * KW * CT + at.h);
            let mut xs = [_mm512_setzero_ps(); 2 * RUN + 3];
            for i in 0..2 * N + KW - 2 {
                xs[i] = _mm512_loadu_ps(row.add(i * CT));
            }
            for kx in 0..KW {
                let w = _mm512_loadu_ps(wrow.add(kx * CT));
                for q in 0..N {
                    acc[q] = _mm512_fmadd_ps(w, xs[2 * q + kx], acc[q]);
                }
            }
        }
        store_run::<N, CLIP>(g, at, &acc, lo, hi, out);
    }
}
