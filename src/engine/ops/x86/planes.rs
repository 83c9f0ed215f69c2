//! AVX-512F and AVX2+FMA kernels of the plane loop ([`crate::engine::ops::planes`]).

use std::arch::x86_64::*;

use crate::engine::ops::planes::{deinterleave_tail, fill_fn, plane_loop, Job};
use crate::engine::ops::UNROLL;

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
    pub(crate) fn planes_avx512, taps_avx512, fill_avx512, copy_avx512
);

plane_loop!(
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn planes_avx2, taps_avx2, fill_avx2, copy_avx2
);

plane_loop!(
    #[target_feature(enable = "avx512f")]
    pub(crate) fn maxpool_avx512, max_avx512, fill_avx512, copy_avx512
);

plane_loop!(
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn maxpool_avx2, max_avx2, fill_avx2, copy_avx2
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
    // The weights stay scalars, broadcast by each FMA from memory: 25 weight vectors do not fit
    // in registers next to the accumulators, and spilling them costs 25 vector stores a plane.
    let wv = |t: usize| _mm512_set1_ps(w[t]);
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
                    even[u] = _mm512_fmadd_ps(wv(t), x, even[u]);
                    let x = _mm512_loadu_ps(src[t + 1].add(at[u]));
                    odd[u] = _mm512_fmadd_ps(wv(t + 1), x, odd[u]);
                }
                t += 2;
            }
            if t < T {
                for u in 0..UNROLL {
                    let x = _mm512_loadu_ps(src[t].add(at[u]));
                    even[u] = _mm512_fmadd_ps(wv(t), x, even[u]);
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
            acc[t % 4] = _mm512_fmadd_ps(wv(t), x, acc[t % 4]);
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
            let e = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(e)));
            let o = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(o)));
            _mm256_storeu_ps(even.as_mut_ptr().add(i), e);
            _mm256_storeu_ps(odd.as_mut_ptr().add(i), o);
            i += 8;
        }
    }
    deinterleave_tail(src, even, odd, i);
}

/// Stride-1 depthwise planes with a `K`x`K` kernel (`T = K * K` taps), [`ROWS`] output rows at
/// a time: each input row vector is loaded once per column shift and feeds every output row of
/// the block it belongs to (`(ROWS + K - 1) * K` loads for `ROWS * K * K` FMAs, against one load
/// per FMA in [`taps_avx512`]).
///
/// # Safety
/// AVX-512F; `scratch` two planes' worth as sized by the plane setup, their padding cleared
/// (row vectors read up to 15 floats past a row, inside the phase plane's slack); `out` holds
/// `planes.len()` output planes.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn planes_rows_avx512<const K: usize, const T: usize, const CLIP: bool>(
    args: &crate::engine::ops::planes::PlaneArgs,
    planes: std::ops::Range<usize>,
    out: &mut [f32],
    scratch: &mut [f32],
) {
    let setup = args.setup;
    let g = &setup.geo;
    assert!(T == K * K && g.kh == K && g.kw == K && g.sh == 1 && g.sw == 1);
    let (oh, ow, wq) = (setup.oh, setup.ow, setup.wq);
    let in_plane = g.h * g.w;
    let out_plane = oh * ow;
    assert!(out.len() >= planes.len() * out_plane);
    let (lo, hi) = (_mm512_set1_ps(args.lo), _mm512_set1_ps(args.hi));
    // Two scratch planes, taking turns: the next plane is copied in before this one is
    // computed, so the kernel's loads never wait on the copy's stores still in flight (on small
    // planes that wait cost as much as the FMAs).
    let half = scratch.len() / 2;
    assert!(half >= setup.phase_len);
    let (first, second) = scratch.split_at_mut(half);
    let buffers = [first, second];
    let count = planes.len();
    if count > 0 {
        let src = &args.x[planes.start * in_plane..][..in_plane];
        unsafe { fill_avx512(setup, src, buffers[0]) };
    }
    let mut ch = planes.start % g.c;
    for (ix, plane) in planes.enumerate() {
        if ix + 1 < count {
            let src = &args.x[(plane + 1) * in_plane..][..in_plane];
            unsafe { fill_avx512(setup, src, buffers[(ix + 1) % 2]) };
        }
        let scratch = &*buffers[ix % 2];
        // Scalars, broadcast by each FMA from memory: 25 weight vectors would not stay in
        // registers next to the accumulators, and spilling them costs 25 vector stores a plane.
        let wv: &[f32; T] = args.kernel[ch * T..][..T].try_into().unwrap();
        let b = _mm512_set1_ps(args.bias[ch]);
        let rows = Rows {
            base: scratch.as_ptr(),
            wq,
            dst: out[ix * out_plane..].as_mut_ptr(),
            ow,
            b,
            lo,
            hi,
        };
        let mut x0 = 0;
        while x0 < ow {
            let mask = ((1u32 << (ow - x0).min(16)) - 1) as __mmask16;
            let mut y0 = 0;
            unsafe {
                while y0 + ROWS <= oh {
                    rows_block::<K, T, ROWS, CLIP>(&rows, wv, y0, x0, mask);
                    y0 += ROWS;
                }
                match oh - y0 {
                    3 => rows_block::<K, T, 3, CLIP>(&rows, wv, y0, x0, mask),
                    2 => rows_block::<K, T, 2, CLIP>(&rows, wv, y0, x0, mask),
                    1 => rows_block::<K, T, 1, CLIP>(&rows, wv, y0, x0, mask),
                    _ => {}
                }
            }
            x0 += 16;
        }
        ch += 1;
        if ch == g.c {
            ch = 0;
        }
    }
}

/// Output rows per block of [`planes_rows_avx512`]: four accumulator chains, with 25 weights
/// and a loaded row in registers.
const ROWS: usize = 4;

/// What the row blocks of one plane share.
struct Rows {
    /// The padded input plane (stride 1: a single phase).
    base: *const f32,
    /// Its row pitch.
    wq: usize,
    /// The output plane.
    dst: *mut f32,
    /// Output width (the output row pitch).
    ow: usize,
    b: __m512,
    lo: __m512,
    hi: __m512,
}

/// Output rows `y0..y0 + R`, columns `x0..` under `mask`: input row `y0 + iy`, shifted by `kx`,
/// feeds output row `y0 + r` through weight `(iy - r, kx)`. Blocks of fewer than [`ROWS`] rows
/// keep two sums per row (even and odd input rows), so that at least four FMA chains overlap.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn rows_block<const K: usize, const T: usize, const R: usize, const CLIP: bool>(
    rows: &Rows,
    wv: &[f32; T],
    y0: usize,
    x0: usize,
    mask: __mmask16,
) {
    let mut acc = [rows.b; R];
    let mut odd = [_mm512_setzero_ps(); R];
    let split = R < ROWS;
    for iy in 0..R + K - 1 {
        let row = unsafe { rows.base.add((y0 + iy) * rows.wq + x0) };
        for kx in 0..K {
            let v = unsafe { _mm512_loadu_ps(row.add(kx)) };
            for r in 0..R {
                if iy >= r && iy - r < K {
                    let w = _mm512_set1_ps(wv[(iy - r) * K + kx]);
                    if split && iy % 2 == 1 {
                        odd[r] = _mm512_fmadd_ps(w, v, odd[r]);
                    } else {
                        acc[r] = _mm512_fmadd_ps(w, v, acc[r]);
                    }
                }
            }
        }
    }
    for r in 0..R {
        let mut v = if split {
            _mm512_add_ps(acc[r], odd[r])
        } else {
            acc[r]
        };
        if CLIP {
            v = _mm512_min_ps(_mm512_max_ps(v, rows.lo), rows.hi);
        }
        unsafe { _mm512_mask_storeu_ps(rows.dst.add((y0 + r) * rows.ow + x0), mask, v) };
    }
}
