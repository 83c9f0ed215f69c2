//! The phase-plane machinery every op of [`super`] runs on, and the portable kernels.
//!
//! 1. copy a (batch, channel) plane into scratch with the padding around it (zeros; -inf for the
//!    max-pool); for stride `s` the padded plane is split into `s*s` phase planes (rows and
//!    columns by their index modulo `s`), so every tap of a strided window becomes a contiguous
//!    read;
//! 2. reduce over the taps along runs of outputs, where each tap `t` is a pointer into one phase
//!    plane: either one output row at a time, or, for small planes, the whole plane at once over
//!    the phase width (the extra columns are computed and dropped), whichever needs fewer
//!    vectors; vectors are taken four at a time (across rows when rows are short) with two
//!    partial sums each, eight FMA chains in flight;
//! 3. clamp (if an activation was fused) and store.

// The kernels index several arrays (sources, weights, accumulators) by one tap or lane index;
// iterators would hide that they move together.
#![allow(clippy::needless_range_loop)]

#[cfg(target_arch = "x86_64")]
use super::x86;
use super::{supported_taps, Clip, Geometry, Isa, LANES_MAX};

/// What every plane of one call shares.
pub(crate) struct PlaneSetup {
    pub(crate) geo: Geometry,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
    pub(crate) wq: usize,
    pub(crate) phase_len: usize,
    /// Compute the whole plane as one run over the phase width, then copy the rows out.
    pub(crate) flat: bool,
    /// The output vectors of one plane.
    pub(crate) jobs: Vec<Job>,
    /// Where tap `t = ky * kw + kx` reads in the scratch, for output 0.
    pub(crate) tap_offsets: Vec<usize>,
    /// Where input row `y` goes in the scratch: for stride 1 its start; for stride 2 where
    /// its even and its odd columns start (see `plane_loop!`).
    pub(crate) row_dst: Vec<(usize, usize)>,
}

impl PlaneSetup {
    pub(crate) fn new(g: &Geometry, lanes: usize) -> PlaneSetup {
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
pub(crate) fn depthwise_planes(
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
pub(crate) enum Reduce {
    /// `bias + sum_t w_t * x_t`, padding 0.
    Conv,
    /// `max_t x_t`, padding -inf.
    Max,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn run_planes(
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
    let rows_kernel = cfg!(target_arch = "x86_64")
        && reduce == Reduce::Conv
        && isa == Isa::Avx512
        && g.sh == 1
        && g.sw == 1
        && g.kh == g.kw;
    // Two channels' phase planes for the row kernel ([`x86::planes::planes_rows_avx512`]).
    let channel_scratch = g.sh * g.sw * setup.phase_len;
    let scratch_len = channel_scratch * if rows_kernel { 2 } else { 1 };
    let flat_len = if setup.flat {
        (setup.oh * setup.wq).next_multiple_of(LANES_MAX)
    } else {
        0
    };
    let (lo, hi) = Clip::bounds(clip);
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
        for channel in scratch.chunks_exact_mut(channel_scratch) {
            clear_padding(&setup, channel, pad);
        }
        #[cfg(target_arch = "x86_64")]
        if rows_kernel {
            // Safety: AVX-512F was detected for this `Isa`; the scratch holds two channels'
            // phase planes as sized by `setup`, their padding cleared.
            unsafe {
                match (g.kh, clip) {
                    (3, false) => {
                        x86::planes::planes_rows_avx512::<3, 9, false>(&args, planes, out, scratch)
                    }
                    (3, true) => {
                        x86::planes::planes_rows_avx512::<3, 9, true>(&args, planes, out, scratch)
                    }
                    (5, false) => {
                        x86::planes::planes_rows_avx512::<5, 25, false>(&args, planes, out, scratch)
                    }
                    (5, true) => {
                        x86::planes::planes_rows_avx512::<5, 25, true>(&args, planes, out, scratch)
                    }
                    (k, _) => unreachable!("no kernel for {k}x{k}"),
                }
            }
            return;
        }
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
pub(crate) fn clear_padding(setup: &PlaneSetup, phases: &mut [f32], value: f32) {
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
pub(crate) fn with_buffers<R>(
    a: usize,
    b: usize,
    f: impl FnOnce(&mut [f32], &mut [f32]) -> R,
) -> R {
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
pub(crate) struct PlaneArgs<'a> {
    pub(crate) setup: &'a PlaneSetup,
    pub(crate) x: &'a [f32],
    pub(crate) kernel: &'a [f32],
    pub(crate) bias: &'a [f32],
    pub(crate) lo: f32,
    pub(crate) hi: f32,
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
            (Reduce::Conv, Isa::Avx512, false) => {
                x86::planes::planes_avx512::<T, false>(args, p, o, s, f)
            }
            #[cfg(target_arch = "x86_64")]
            (Reduce::Conv, Isa::Avx512, true) => {
                x86::planes::planes_avx512::<T, true>(args, p, o, s, f)
            }
            #[cfg(target_arch = "x86_64")]
            (Reduce::Conv, Isa::Avx2, false) => {
                x86::planes::planes_avx2::<T, false>(args, p, o, s, f)
            }
            #[cfg(target_arch = "x86_64")]
            (Reduce::Conv, Isa::Avx2, true) => {
                x86::planes::planes_avx2::<T, true>(args, p, o, s, f)
            }
            (Reduce::Conv, _, false) => planes_portable::<T, false>(args, p, o, s, f),
            (Reduce::Conv, _, true) => planes_portable::<T, true>(args, p, o, s, f),
            #[cfg(target_arch = "x86_64")]
            (Reduce::Max, Isa::Avx512, _) => {
                x86::planes::maxpool_avx512::<T, false>(args, p, o, s, f)
            }
            #[cfg(target_arch = "x86_64")]
            (Reduce::Max, Isa::Avx2, _) => x86::planes::maxpool_avx2::<T, false>(args, p, o, s, f),
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
        $vis unsafe fn $name(setup: &$crate::engine::ops::planes::PlaneSetup, src: &[f32], scratch: &mut [f32]) {
            let g = &setup.geo;
            let (wq, phase_len) = (setup.wq, setup.phase_len);
            for (y, &(at, odd_at)) in setup.row_dst.iter().enumerate() {
                let row = &src[y * g.w..][..g.w];
                if g.sw == 1 {
                    unsafe { $copy(row, &mut scratch[at..][..g.w]) };
                } else if g.sw == 2 {
                    let (even, odd) = $crate::engine::ops::planes::split_two(
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
            args: &$crate::engine::ops::planes::PlaneArgs,
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

pub(crate) use {fill_fn, plane_loop};

fill_fn!(pub(crate) fn fill_portable, copy_portable, deinterleave_portable);
plane_loop!(fn planes_portable, taps_portable, fill_portable, copy_portable);
plane_loop!(fn maxpool_portable, max_portable, fill_portable, copy_portable);

/// One output vector: its offset into every tap's source, its offset into the output, and
/// how many of its lanes are outputs.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Job {
    pub(crate) inp: u32,
    pub(crate) out: u32,
    pub(crate) lanes: u32,
}

/// The vectors of `lanes` lanes covering `rows` runs of `len` outputs (run `r` reads at
/// `r * in_pitch`, writes at `r * out_pitch`), row-major. The kernels take them [`UNROLL`] at a
/// time regardless of rows, so short rows still fill every accumulator.
pub(crate) fn jobs(
    rows: usize,
    len: usize,
    in_pitch: usize,
    out_pitch: usize,
    lanes: usize,
) -> Vec<Job> {
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
pub(crate) fn split_two(
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
pub(crate) unsafe fn deinterleave_portable(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    deinterleave_tail(src, even, odd, 0);
}

/// [`deinterleave_portable`] from pair `from` on.
#[inline]
pub(crate) fn deinterleave_tail(src: &[f32], even: &mut [f32], odd: &mut [f32], from: usize) {
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
pub(crate) unsafe fn taps_portable<const T: usize, const CLIP: bool>(
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
pub(crate) unsafe fn max_portable<const T: usize, const CLIP: bool>(
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
