//! The input (`B^T d B`) and output (`A^T M A`) transforms of [`super::FastWinograd`].
//!
//! Each runs one channel at a time, one row of tiles at a time, as two passes of a 1-D
//! transform (along the rows, then along the columns) over whole vectors of [`RUN`] tiles: the
//! input's padded plane is first split into `m` column phases so that every tap of a row of
//! tiles is a contiguous run. The 1-D transforms are plain Rust on `[f32; 16]` blocks, which
//! the compiler turns into one vector per value inside the `target_feature` entry points. On
//! AVX-512, where a row of tiles is one vector (every ResNet18 layer), the row goes through
//! [`crate::engine::ops::x86::winograd`] instead, every value in a register and the output
//! tiles interleaved into the plane's rows by permutes (7-9% of ResNet18; same operations,
//! same sums to the bit).

// The transforms index several rows by one tile index; iterators would hide that.
#![allow(clippy::needless_range_loop)]

use tract_onnx::prelude::TractResult;

use super::{FastWinograd, Layout, RUN};
use crate::engine::ops::{Geometry, Isa};

/// `V[xi][ci][tile] = (B^T d B)[xi]` for every tile `d` of every input channel of `x`.
pub(super) fn input(
    g: &Geometry,
    lay: &Layout,
    x: &[f32],
    isa: Isa,
    v: &mut [f32],
) -> TractResult<()> {
    let xis = lay.a * lay.a;
    assert!(v.len() >= xis * lay.xi_len(g.c));
    let v_addr = v.as_mut_ptr() as usize;
    let work = g.c * xis * lay.tiles;
    tract_linalg::multithread::par_chunks_mut(&mut vec![(); g.c], 1, work, |first, cs| {
        let mut phases = vec![0f32; lay.m * lay.phase_len];
        let mut rows = vec![0f32; lay.a * lay.a * lay.run];
        for ci in first..first + cs.len() {
            let plane = &x[ci * g.h * g.w..][..g.h * g.w];
            let args = (g, lay, plane, ci, v_addr as *mut f32);
            // Safety: channel `ci` writes only its own planes `V[xi][ci]` (and their slack);
            // the features were detected for this `Isa`.
            unsafe {
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => input_avx512(args, &mut phases, &mut rows),
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => input_avx2(args, &mut phases, &mut rows),
                    _ => input_channel::<false>(args, &mut phases, &mut rows),
                }
            }
        }
        Ok(())
    })
}

/// What one channel's input transform reads and where it writes: the geometry, the layout, the
/// channel's plane, its index and the start of `V`.
type InputArgs<'a> = (&'a Geometry, &'a Layout, &'a [f32], usize, *mut f32);

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn input_avx512(args: InputArgs, phases: &mut [f32], rows: &mut [f32]) {
    unsafe { input_channel::<true>(args, phases, rows) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn input_avx2(args: InputArgs, phases: &mut [f32], rows: &mut [f32]) {
    unsafe { input_channel::<false>(args, phases, rows) }
}

/// # Safety
/// `V` (at `args.4`) holds `a * a` planes of `Layout::xi_len(c)` floats; no other thread
/// writes channel `ci`'s.
#[inline(always)]
unsafe fn input_channel<const AVX512: bool>(args: InputArgs, phases: &mut [f32], rows: &mut [f32]) {
    unsafe {
        if args.1.m == 2 {
            input_m::<2, 4, AVX512>(args, phases, rows, bt2)
        } else {
            input_m::<4, 6, AVX512>(args, phases, rows, bt4)
        }
    }
}

#[inline(always)]
unsafe fn input_m<const M: usize, const A: usize, const AVX512: bool>(
    (g, lay, plane, ci, v): InputArgs,
    phases: &mut [f32],
    rows: &mut [f32],
    bt: impl Fn([f32; A]) -> [f32; A] + Copy,
) {
    let (cols, tx_n, run, phase_len) = (lay.cols, lay.tiles_x, lay.run, lay.phase_len);
    assert!(phases.len() >= M * phase_len && rows.len() >= A * A * run);
    phases.fill(0.0);
    // The column phases of the input rows (the padding cells stay zero).
    #[cfg(target_arch = "x86_64")]
    if AVX512 {
        for y in 0..g.h {
            // Safety: AVX-512F (the caller's `AVX512`); row `y + pad_top` of every phase
            // holds `cols` floats.
            unsafe {
                crate::engine::ops::x86::winograd::split_row(
                    M,
                    plane[y * g.w..][..g.w].as_ptr(),
                    g.w,
                    g.pad_left,
                    phases.as_mut_ptr().add((y + g.pad_top) * cols),
                    phase_len,
                    cols,
                )
            };
        }
    } else {
        split_phases::<M>(g, lay, plane, phases);
    }
    #[cfg(not(target_arch = "x86_64"))]
    split_phases::<M>(g, lay, plane, phases);
    let ph = phases.as_ptr();
    let rp = rows.as_mut_ptr();
    let xi_len = lay.xi_len(g.c);
    // AVX-512, one vector of tiles per row: the whole tile row in registers.
    #[cfg(target_arch = "x86_64")]
    if AVX512 && run == RUN {
        for ty in 0..lay.tiles_y {
            let row = crate::engine::ops::x86::winograd::InputRow {
                phases: ph,
                phase_len,
                cols,
                first_row: M * ty,
                v: v.wrapping_add(ci * lay.stride + ty * tx_n),
                xi_len,
            };
            // Safety: AVX-512F (the caller's `AVX512`); the phases' slack covers a run, a
            // run past the row's tiles lands in the next row's tiles or the plane's slack.
            unsafe {
                if M == 2 {
                    crate::engine::ops::x86::winograd::input_row_f2(&row)
                } else {
                    crate::engine::ops::x86::winograd::input_row_f4(&row)
                }
            }
        }
        return;
    }
    for ty in 0..lay.tiles_y {
        // Along the rows: rows[r][j] = B^T over the taps of input row M * ty + r; tap k of
        // tile tx is padded column M * tx + k, phase k % M at index tx + k / M.
        for r in 0..A {
            let py = M * ty + r;
            let src: [*const f32; A] =
                std::array::from_fn(|k| ph.wrapping_add((k % M) * phase_len + py * cols + k / M));
            let dst: [*mut f32; A] = std::array::from_fn(|j| rp.wrapping_add((r * A + j) * run));
            // Safety: the phase planes have `run + 1` floats of slack past the last row; the
            // rows buffer holds `A * A * run`.
            unsafe { transform_runs::<A, A>(src, dst, run, bt) };
        }
        // Along the columns: V[i * A + j] = B^T over r of rows[r][j].
        for j in 0..A {
            let src: [*const f32; A] =
                std::array::from_fn(|r| rp.wrapping_add((r * A + j) * run) as *const f32);
            let dst: [*mut f32; A] = std::array::from_fn(|i| {
                v.wrapping_add((i * A + j) * xi_len + ci * lay.stride + ty * tx_n)
            });
            // Safety: a run past the last tile row's `tiles_x` lands in the plane's slack
            // (`stride - tiles >= RUN`); past an earlier row's, in the next row's tiles, which
            // the next `ty` overwrites.
            unsafe { transform_runs::<A, A>(src, dst, run, bt) };
        }
    }
}

/// The input rows into the `M` column phases, one value at a time: padded column
/// `x + pad_left` goes to phase `(x + pad_left) % M`, index `(x + pad_left) / M`.
fn split_phases<const M: usize>(g: &Geometry, lay: &Layout, plane: &[f32], phases: &mut [f32]) {
    let (cols, phase_len) = (lay.cols, lay.phase_len);
    for q in 0..M {
        // Input columns landing in phase q: (x + pad_left) % M == q, from index
        // (x + pad_left) / M.
        let x0 = (q + M - g.pad_left % M) % M;
        if x0 >= g.w {
            continue;
        }
        let i0 = (x0 + g.pad_left) / M;
        let count = (g.w - x0).div_ceil(M);
        for y in 0..g.h {
            let src = &plane[y * g.w + x0..][..(count - 1) * M + 1];
            let dst = &mut phases[q * phase_len + (y + g.pad_top) * cols + i0..][..count];
            for (i, d) in dst.iter_mut().enumerate() {
                *d = src[i * M];
            }
        }
    }
}

/// `dst[o][t] = f(src[..][t])[o]` for `t < run` (a multiple of [`RUN`]), a vector of [`RUN`]
/// at a time; the first `O` outputs of `f` are kept.
///
/// # Safety
/// Every `src[k]` readable and every `dst[o]` writable for `run` floats.
#[inline(always)]
unsafe fn transform_runs<const A: usize, const O: usize>(
    src: [*const f32; A],
    dst: [*mut f32; O],
    run: usize,
    f: impl Fn([f32; A]) -> [f32; A],
) {
    debug_assert!(run.is_multiple_of(RUN));
    for at in (0..run).step_by(RUN) {
        let x: [[f32; RUN]; A] = std::array::from_fn(|k| unsafe {
            src[k].add(at).cast::<[f32; RUN]>().read_unaligned()
        });
        let mut y = [[0f32; RUN]; O];
        for l in 0..RUN {
            let r = f(std::array::from_fn(|k| x[k][l]));
            for o in 0..O {
                y[o][l] = r[o];
            }
        }
        for o in 0..O {
            unsafe { dst[o].add(at).cast::<[f32; RUN]>().write_unaligned(y[o]) };
        }
    }
}

/// `out = A^T M A + bias`, clamped, for every tile of every output channel.
pub(super) fn output(
    op: &FastWinograd,
    lay: &Layout,
    m: &[f32],
    isa: Isa,
    out: &mut [f32],
    skip: Option<&[f32]>,
) -> TractResult<()> {
    let g = &op.geo;
    let (oh, ow) = (g.oh(), g.ow());
    assert!(m.len() >= lay.a * lay.a * lay.xi_len(op.weights.cout_padded()));
    assert_eq!(out.len(), op.cout * oh * ow);
    assert_eq!(skip.map_or(out.len(), |s| s.len()), out.len());
    let out_addr = out.as_mut_ptr() as usize;
    let work = op.cout * lay.a * lay.a * lay.tiles;
    tract_linalg::multithread::par_chunks_mut(&mut vec![(); op.cout], 1, work, |first, cs| {
        let mut cols = vec![0f32; lay.m * lay.a * lay.run];
        let mut rows = vec![0f32; lay.m * lay.run];
        for co in first..first + cs.len() {
            // Safety: channel `co` writes only its own plane.
            let plane = unsafe {
                std::slice::from_raw_parts_mut((out_addr as *mut f32).add(co * oh * ow), oh * ow)
            };
            let skip = skip.map(|s| &s[co * oh * ow..][..oh * ow]);
            let args = (op, lay, m, co, skip);
            // Safety: the features were detected for this `Isa`.
            unsafe {
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => output_avx512(args, &mut cols, &mut rows, plane),
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => output_avx2(args, &mut cols, &mut rows, plane),
                    _ => output_channel(args, &mut cols, &mut rows, plane),
                }
            }
        }
        Ok(())
    })
}

/// The range every output is clamped to: the fused clamp's, or all of `f32` without one.
fn clamp_range(op: &FastWinograd) -> (f32, f32) {
    op.clip
        .map(|c| (c.lo(), c.hi()))
        .unwrap_or((f32::NEG_INFINITY, f32::INFINITY))
}

/// What one channel's output transform reads: the op, the layout, `M`, the channel, and the
/// channel's plane of the residual the op adds (if it fuses one).
type OutputArgs<'a> = (
    &'a FastWinograd,
    &'a Layout,
    &'a [f32],
    usize,
    Option<&'a [f32]>,
);

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn output_avx512(args: OutputArgs, cols: &mut [f32], rows: &mut [f32], plane: &mut [f32]) {
    let (op, lay, m, co, skip) = args;
    if lay.run != RUN {
        return output_channel(args, cols, rows, plane);
    }
    // One vector of tiles per row: the whole tile row in registers.
    let g = &op.geo;
    let (oh, ow) = (g.oh(), g.ow());
    let xi_len = lay.xi_len(op.weights.cout_padded());
    assert!(m.len() >= lay.a * lay.a * xi_len && co < op.weights.cout_padded());
    assert_eq!(plane.len(), oh * ow);
    let (lo, hi) = clamp_range(op);
    for ty in 0..lay.tiles_y {
        let first_row = lay.m * ty * ow;
        let row = crate::engine::ops::x86::winograd::OutputRow {
            m: m.as_ptr().wrapping_add(co * lay.stride + ty * lay.tiles_x),
            xi_len,
            out: plane.as_mut_ptr().wrapping_add(first_row),
            skip: skip.map_or(std::ptr::null(), |s| s.as_ptr().wrapping_add(first_row)),
            ow,
            rows: (oh - lay.m * ty).min(lay.m),
            bias: op.weights.bias[co],
            lo,
            hi,
        };
        // Safety: AVX-512F (this function's feature); every `M` plane has `RUN` floats of
        // slack past its last tile; the rows written (and read from the residual, the same
        // shape) are inside the plane (`ow <= 16 * m` since the row of tiles is one vector).
        unsafe {
            if lay.m == 2 {
                crate::engine::ops::x86::winograd::output_row_f2(&row)
            } else {
                crate::engine::ops::x86::winograd::output_row_f4(&row)
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn output_avx2(args: OutputArgs, cols: &mut [f32], rows: &mut [f32], plane: &mut [f32]) {
    output_channel(args, cols, rows, plane)
}

#[inline(always)]
fn output_channel(args: OutputArgs, cols: &mut [f32], rows: &mut [f32], plane: &mut [f32]) {
    if args.1.m == 2 {
        output_m::<2, 4>(args, cols, rows, plane, at2)
    } else {
        output_m::<4, 6>(args, cols, rows, plane, at4)
    }
}

/// One output channel, a row of tiles at a time: along the columns of `M` into
/// `cols[i][j]`, then along the rows into `rows[q]` for each output row `i`, plus the bias and
/// the residual, clamped, interleaved into the output row.
#[inline(always)]
fn output_m<const M: usize, const A: usize>(
    (op, lay, m, co, skip): OutputArgs,
    cols: &mut [f32],
    rows: &mut [f32],
    plane: &mut [f32],
    at: impl Fn([f32; A]) -> [f32; A] + Copy,
) {
    let g = &op.geo;
    let (oh, ow) = (g.oh(), g.ow());
    let (tx_n, run, stride) = (lay.tiles_x, lay.run, lay.stride);
    let xi_len = lay.xi_len(op.weights.cout_padded());
    // Every run below reads at most `(A * A - 1) * xi_len + co * stride + tiles + RUN` floats.
    assert!(m.len() >= A * A * xi_len && co < op.weights.cout_padded());
    assert!(cols.len() >= M * A * run && rows.len() >= M * run);
    let bias = op.weights.bias[co];
    let (lo, hi) = clamp_range(op);
    let (mp, cp, rp) = (m.as_ptr(), cols.as_mut_ptr(), rows.as_mut_ptr());
    for ty in 0..lay.tiles_y {
        let first = co * stride + ty * tx_n;
        for j in 0..A {
            let src: [*const f32; A] =
                std::array::from_fn(|r| mp.wrapping_add((r * A + j) * xi_len + first));
            let dst: [*mut f32; M] = std::array::from_fn(|i| cp.wrapping_add((i * A + j) * run));
            // Safety: a run stays inside the channel's plane and its slack (`stride`); the
            // cols buffer holds `M * A * run`.
            unsafe { transform_runs::<A, M>(src, dst, run, at) };
        }
        for i in 0..M {
            let oy = M * ty + i;
            if oy >= oh {
                break;
            }
            let src: [*const f32; A] =
                std::array::from_fn(|j| cp.wrapping_add((i * A + j) * run) as *const f32);
            let dst: [*mut f32; M] = std::array::from_fn(|q| rp.wrapping_add(q * run));
            // Safety: as above; the rows buffer holds `M * run`.
            unsafe { transform_runs::<A, M>(src, dst, run, at) };
            let row = &mut plane[oy * ow..][..ow];
            let ys: [&[f32]; M] = std::array::from_fn(|q| &rows[q * run..][..tx_n]);
            // The tiles' outputs in row order, plus the bias (then the residual: the unfused
            // graph's rounding).
            let y = |ox: usize| ys[ox % M][ox / M] + bias;
            match skip {
                None => {
                    // Whole tiles, then the columns of a last partial one.
                    let full = ow / M;
                    for (tx, px) in row.chunks_exact_mut(M).take(full).enumerate() {
                        for q in 0..M {
                            px[q] = (ys[q][tx] + bias).max(lo).min(hi);
                        }
                    }
                    for ox in full * M..ow {
                        row[ox] = y(ox).max(lo).min(hi);
                    }
                }
                Some(skip) => {
                    let skip = &skip[oy * ow..][..ow];
                    for (ox, px) in row.iter_mut().enumerate() {
                        *px = (y(ox) + skip[ox]).max(lo).min(hi);
                    }
                }
            }
        }
    }
}

/// `B^T d` for F(2x2, 3x3).
#[inline(always)]
fn bt2(d: [f32; 4]) -> [f32; 4] {
    [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]
}

/// `B^T d` for F(4x4, 3x3).
#[inline(always)]
fn bt4(d: [f32; 6]) -> [f32; 6] {
    let t0 = d[4] - 4.0 * d[2];
    let t1 = d[3] - 4.0 * d[1];
    let t2 = d[4] - d[2];
    let t3 = 2.0 * (d[3] - d[1]);
    [
        4.0 * d[0] - 5.0 * d[2] + d[4],
        t0 + t1,
        t0 - t1,
        t2 + t3,
        t2 - t3,
        4.0 * d[1] - 5.0 * d[3] + d[5],
    ]
}

/// `A^T m` for F(2x2, 3x3) (the first 2 of the 4 values).
#[inline(always)]
fn at2(d: [f32; 4]) -> [f32; 4] {
    [d[0] + d[1] + d[2], d[1] - d[2] - d[3], 0.0, 0.0]
}

/// `A^T m` for F(4x4, 3x3) (the first 4 of the 6 values).
#[inline(always)]
fn at4(d: [f32; 6]) -> [f32; 6] {
    let s = d[1] + d[2];
    let t = d[1] - d[2];
    let s2 = d[3] + d[4];
    let t2 = d[3] - d[4];
    [
        d[0] + s + s2,
        t + 2.0 * t2,
        s + 4.0 * s2,
        t + 8.0 * t2 + d[5],
        0.0,
        0.0,
    ]
}
