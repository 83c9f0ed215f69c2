//! AVX-512F kernels of the Winograd transforms ([`crate::engine::ops::winograd`]): an input
//! row split into its column phases by permutes, and one row of 16 tiles of one channel
//! (`V = B^T d B`, or `Y = A^T M A` interleaved into the output rows) with every value in a
//! register. The portable transform (plain Rust over `[f32; 16]` blocks)
//! spent most of its time on its pointer arrays and the intermediate rows buffer, not on the
//! arithmetic; the operations and their order are the same, so the sums are the same to the
//! bit.

use std::arch::x86_64::*;

/// `c * x`.
#[inline(always)]
unsafe fn scale(c: f32, x: __m512) -> __m512 {
    unsafe { _mm512_mul_ps(_mm512_set1_ps(c), x) }
}

/// `B^T d` for F(2x2, 3x3), as `transform::bt2`.
#[inline(always)]
unsafe fn bt2(d: [__m512; 4]) -> [__m512; 4] {
    unsafe {
        [
            _mm512_sub_ps(d[0], d[2]),
            _mm512_add_ps(d[1], d[2]),
            _mm512_sub_ps(d[2], d[1]),
            _mm512_sub_ps(d[1], d[3]),
        ]
    }
}

/// `B^T d` for F(4x4, 3x3), as `transform::bt4`.
#[inline(always)]
unsafe fn bt4(d: [__m512; 6]) -> [__m512; 6] {
    unsafe {
        let t0 = _mm512_sub_ps(d[4], scale(4.0, d[2]));
        let t1 = _mm512_sub_ps(d[3], scale(4.0, d[1]));
        let t2 = _mm512_sub_ps(d[4], d[2]);
        let t3 = scale(2.0, _mm512_sub_ps(d[3], d[1]));
        [
            _mm512_add_ps(_mm512_sub_ps(scale(4.0, d[0]), scale(5.0, d[2])), d[4]),
            _mm512_add_ps(t0, t1),
            _mm512_sub_ps(t0, t1),
            _mm512_add_ps(t2, t3),
            _mm512_sub_ps(t2, t3),
            _mm512_add_ps(_mm512_sub_ps(scale(4.0, d[1]), scale(5.0, d[3])), d[5]),
        ]
    }
}

/// Where one row of tiles of one channel is read and written: the `m` column phases of the
/// padded plane (`phase_len` floats each, rows of `cols`), the first padded row of the tiles
/// (`m * ty`), and `V`'s first tile of the row for `xi = 0` (`xi` planes `xi_len` apart).
pub(crate) struct InputRow {
    pub(crate) phases: *const f32,
    pub(crate) phase_len: usize,
    pub(crate) cols: usize,
    pub(crate) first_row: usize,
    pub(crate) v: *mut f32,
    pub(crate) xi_len: usize,
}

macro_rules! input_row {
    ($name:ident, $m:literal, $a:literal, $bt:ident) => {
        /// One row of 16 tiles: tap `k` of padded row `first_row + r` is phase `k % m` at
        /// column `tile + k / m`; along the rows, then along the columns, then the `a * a`
        /// stores.
        ///
        /// # Safety
        /// AVX-512F; 16 floats readable at every tap's start (the phases' slack) and writable
        /// at every `V` plane's.
        #[target_feature(enable = "avx512f")]
        pub(crate) unsafe fn $name(row: &InputRow) {
            const M: usize = $m;
            const A: usize = $a;
            unsafe {
                let mut e = [[_mm512_setzero_ps(); A]; A];
                for r in 0..A {
                    let at = row.phases.add((row.first_row + r) * row.cols);
                    let d: [__m512; A] = std::array::from_fn(|k| {
                        _mm512_loadu_ps(at.add((k % M) * row.phase_len + k / M))
                    });
                    e[r] = $bt(d);
                }
                for j in 0..A {
                    let y = $bt(std::array::from_fn(|r| e[r][j]));
                    for i in 0..A {
                        _mm512_storeu_ps(row.v.add((i * A + j) * row.xi_len), y[i]);
                    }
                }
            }
        }
    };
}

input_row!(input_row_f2, 2, 4, bt2);
input_row!(input_row_f4, 4, 6, bt4);

/// `A^T m` for F(2x2, 3x3), as `transform::at2`.
#[inline(always)]
unsafe fn at2(d: [__m512; 4]) -> [__m512; 2] {
    unsafe {
        [
            _mm512_add_ps(_mm512_add_ps(d[0], d[1]), d[2]),
            _mm512_sub_ps(_mm512_sub_ps(d[1], d[2]), d[3]),
        ]
    }
}

/// `A^T m` for F(4x4, 3x3), as `transform::at4`.
#[inline(always)]
unsafe fn at4(d: [__m512; 6]) -> [__m512; 4] {
    unsafe {
        let s = _mm512_add_ps(d[1], d[2]);
        let t = _mm512_sub_ps(d[1], d[2]);
        let s2 = _mm512_add_ps(d[3], d[4]);
        let t2 = _mm512_sub_ps(d[3], d[4]);
        [
            _mm512_add_ps(_mm512_add_ps(d[0], s), s2),
            _mm512_add_ps(t, scale(2.0, t2)),
            _mm512_add_ps(s, scale(4.0, s2)),
            _mm512_add_ps(_mm512_add_ps(t, scale(8.0, t2)), d[5]),
        ]
    }
}

/// Lanes `[a0 b0 a1 b1 ...]` of two vectors: the first 8 pairs, then the last 8.
#[inline(always)]
unsafe fn zip2(a: __m512, b: __m512) -> [__m512; 2] {
    unsafe {
        let lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        let hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
        [
            _mm512_permutex2var_ps(a, lo, b),
            _mm512_permutex2var_ps(a, hi, b),
        ]
    }
}

/// Lanes `[a0 b0 c0 d0 a1 b1 c1 d1 ...]` of four vectors, in four vectors.
#[inline(always)]
unsafe fn zip4(y: [__m512; 4]) -> [__m512; 4] {
    unsafe {
        let [ab_lo, ab_hi] = zip2(y[0], y[1]);
        let [cd_lo, cd_hi] = zip2(y[2], y[3]);
        // Pairs of pairs: (a_i b_i) from the first, (c_i d_i) from the second.
        let lo = _mm512_setr_epi32(0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23);
        let hi = _mm512_setr_epi32(8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31);
        [
            _mm512_permutex2var_ps(ab_lo, lo, cd_lo),
            _mm512_permutex2var_ps(ab_lo, hi, cd_lo),
            _mm512_permutex2var_ps(ab_hi, lo, cd_hi),
            _mm512_permutex2var_ps(ab_hi, hi, cd_hi),
        ]
    }
}

/// Where one row of 16 tiles of one output channel is read and written: `M`'s first tile of
/// the row for `xi = 0` (`xi` planes `xi_len` apart); the output plane's first row of the
/// tiles (rows of `ow`), the same row of the residual to add (null: none), how many of the
/// tiles' `m` rows are inside the plane; the bias and the clamp.
pub(crate) struct OutputRow {
    pub(crate) m: *const f32,
    pub(crate) xi_len: usize,
    pub(crate) out: *mut f32,
    pub(crate) skip: *const f32,
    pub(crate) ow: usize,
    pub(crate) rows: usize,
    pub(crate) bias: f32,
    pub(crate) lo: f32,
    pub(crate) hi: f32,
}

macro_rules! output_row {
    ($name:ident, $m:literal, $a:literal, $at:ident, $zip:expr) => {
        /// One row of 16 tiles: along the columns of `M`, then along the rows, then the `m`
        /// outputs of each tile interleaved into the output rows, plus the bias, plus the
        /// residual, clamped.
        ///
        /// # Safety
        /// AVX-512F; 16 floats readable at every `M` plane's start; `rows` output rows of
        /// `ow` (at most `16 * m`) writable, and as many readable at `skip` unless it is null.
        #[target_feature(enable = "avx512f")]
        pub(crate) unsafe fn $name(row: &OutputRow) {
            const M: usize = $m;
            const A: usize = $a;
            unsafe {
                let mut c = [[_mm512_setzero_ps(); A]; M];
                for j in 0..A {
                    let d: [__m512; A] = std::array::from_fn(|r| {
                        _mm512_loadu_ps(row.m.add((r * A + j) * row.xi_len))
                    });
                    let y = $at(d);
                    for i in 0..M {
                        c[i][j] = y[i];
                    }
                }
                let (bias, lo, hi) = (
                    _mm512_set1_ps(row.bias),
                    _mm512_set1_ps(row.lo),
                    _mm512_set1_ps(row.hi),
                );
                for i in 0..row.rows {
                    let pixels: [__m512; M] = $zip($at(c[i]));
                    let out = row.out.add(i * row.ow);
                    for (n, &p) in pixels.iter().enumerate() {
                        let left = row.ow.saturating_sub(16 * n).min(16);
                        if left == 0 {
                            break;
                        }
                        let mask = ((1u32 << left) - 1) as __mmask16;
                        let mut v = _mm512_add_ps(p, bias);
                        if !row.skip.is_null() {
                            let at = row.skip.add(i * row.ow + 16 * n);
                            v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, at));
                        }
                        let v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
                        _mm512_mask_storeu_ps(out.add(16 * n), mask, v);
                    }
                }
            }
        }
    };
}

output_row!(output_row_f2, 2, 4, at2, |y: [__m512; 2]| zip2(y[0], y[1]));
output_row!(output_row_f4, 4, 6, at4, zip4);

/// Lanes `lo..hi` (clamped to `0..=16`) set.
#[inline(always)]
fn lane_mask(lo: isize, hi: isize) -> __mmask16 {
    let (lo, hi) = (lo.clamp(0, 16), hi.clamp(0, 16));
    if hi <= lo {
        0
    } else {
        (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as __mmask16
    }
}

/// One input row into the `m` column phases (padded column `x + pad_left` of the row goes to
/// phase `(x + pad_left) % m`, index `(x + pad_left) / m`), 16 indices of every phase at a
/// time: `m` masked loads (zeros outside the row: the padding), then permutes. Writes the
/// first `cols` indices of each phase's row, the padding cells as zeros.
///
/// # Safety
/// AVX-512F; `src` holds `w` floats; `dst + q * phase_len` holds `cols` floats for `q < m`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn split_row(
    m: usize,
    src: *const f32,
    w: usize,
    pad_left: usize,
    dst: *mut f32,
    phase_len: usize,
    cols: usize,
) {
    unsafe {
        for chunk in 0..cols.div_ceil(16) {
            let at = chunk * 16;
            let store = lane_mask(0, cols as isize - at as isize);
            // Source column of lane 0 of the chunk's first vector.
            let x0 = (at * m) as isize - pad_left as isize;
            let load = |v: usize| {
                let first = x0 + 16 * v as isize;
                let mask = lane_mask(-first, w as isize - first);
                _mm512_maskz_loadu_ps(mask, src.wrapping_offset(first))
            };
            if m == 2 {
                let (a, b) = (load(0), load(1));
                let even =
                    _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
                let odd =
                    _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
                _mm512_mask_storeu_ps(dst.add(at), store, _mm512_permutex2var_ps(a, even, b));
                _mm512_mask_storeu_ps(
                    dst.add(phase_len + at),
                    store,
                    _mm512_permutex2var_ps(a, odd, b),
                );
            } else {
                debug_assert_eq!(m, 4);
                let (a, b, c, d) = (load(0), load(1), load(2), load(3));
                for q in 0..4i32 {
                    // Elements q, q + 4, ..., q + 28 of a pair of vectors, in the low 8 lanes.
                    let idx = _mm512_setr_epi32(
                        q,
                        q + 4,
                        q + 8,
                        q + 12,
                        q + 16,
                        q + 20,
                        q + 24,
                        q + 28,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                    );
                    let lo = _mm512_permutex2var_ps(a, idx, b);
                    let hi = _mm512_permutex2var_ps(c, idx, d);
                    let phase = _mm512_shuffle_f32x4::<0x44>(lo, hi);
                    _mm512_mask_storeu_ps(dst.add(q as usize * phase_len + at), store, phase);
                }
            }
        }
    }
}
