//! Max pooling 3x3 at stride 2 (ResNet's stem: 64 planes of 112x112) straight from the input
//! rows: per output row the maximum down the window's rows, then across each output's three
//! columns with the even and odd lanes picked apart by permutes. No phase planes: the input is
//! read once, where the general plane loop first copies all of it.

use std::arch::x86_64::*;

/// Whether [`pool3s2_avx512`] computes `g`: a 3x3 window at stride 2 with at most one padding
/// row or column on each side.
pub(crate) fn fits(g: &super::super::Geometry) -> bool {
    g.kh == 3
        && g.kw == 3
        && g.sh == 2
        && g.sw == 2
        && g.pad_top.max(g.pad_left).max(g.pad_bottom).max(g.pad_right) <= 1
}

/// Floats of the row buffer [`pool3s2_avx512`] needs for planes `w` wide.
pub(crate) fn row_len(w: usize) -> usize {
    w + 64
}

/// One plane `x` (`h x w`) pooled into `out` (`oh x ow` of `g`), padding counted as -inf.
/// `row` (at least [`row_len`] floats) holds each output row's column maxima.
///
/// # Safety
/// AVX-512F; `g` [`fits`]; `x` holds `h * w` floats and `out` `oh * ow`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn pool3s2_avx512(
    g: &super::super::Geometry,
    x: &[f32],
    row: &mut [f32],
    out: &mut [f32],
) {
    let (h, w, oh, ow) = (g.h, g.w, g.oh(), g.ow());
    assert!(x.len() >= h * w && out.len() >= oh * ow && row.len() >= row_len(w));
    // `row[1 + c]` is column `c`'s maximum; the cells before and after are the padding.
    row.fill(f32::NEG_INFINITY);
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let (xp, rp, op) = (x.as_ptr(), row.as_mut_ptr(), out.as_mut_ptr());
    unsafe {
        for oy in 0..oh {
            // The window's rows inside the plane (at least one: the padding is at most 1).
            let top = (2 * oy).saturating_sub(g.pad_top);
            let bottom = (2 * oy + 3 - g.pad_top).min(h);
            for c in (0..w).step_by(16) {
                let mask = lanes(w - c);
                // Whole vectors load without a mask (a masked load also takes an ALU slot).
                let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
                for r in top..bottom {
                    let v = if w - c >= 16 {
                        _mm512_loadu_ps(xp.add(r * w + c))
                    } else {
                        _mm512_maskz_loadu_ps(mask, xp.add(r * w + c))
                    };
                    m = _mm512_max_ps(m, v);
                }
                _mm512_mask_storeu_ps(rp.add(1 + c), mask, m);
            }
            // Output `ox` takes columns `2 ox - pad_left + {0, 1, 2}`: row cells from
            // `2 ox + 1 - pad_left`.
            let first = rp.add(1 - g.pad_left);
            for o in (0..ow).step_by(16) {
                let at = first.add(2 * o);
                let (a, b) = (_mm512_loadu_ps(at), _mm512_loadu_ps(at.add(16)));
                let (a2, b2) = (_mm512_loadu_ps(at.add(2)), _mm512_loadu_ps(at.add(18)));
                let left = _mm512_permutex2var_ps(a, even, b);
                let mid = _mm512_permutex2var_ps(a, odd, b);
                let right = _mm512_permutex2var_ps(a2, even, b2);
                let m = _mm512_max_ps(_mm512_max_ps(left, mid), right);
                _mm512_mask_storeu_ps(op.add(oy * ow + o), lanes(ow - o), m);
            }
        }
    }
}

/// The first `n` lanes (all 16 from 16 on).
#[inline(always)]
fn lanes(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}
