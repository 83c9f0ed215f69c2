//! Pillow's `Image.resize` for 8-bit RGB, reproduced bit for bit.
//!
//! torchvision's `Resize` on a PIL image calls Pillow, so the reference pipeline's pixels come
//! from Pillow's `Resample.c`: f64 filter weights normalised per output pixel, converted to
//! 22-bit fixed point, a horizontal pass then a vertical pass, each rounded and clipped to u8.
//! `fast_image_resize` differs by one level on ~15% of pixels, which moves a trained network's
//! probabilities by up to 1e-2, so we port the algorithm instead.
//!
//! Both passes have SIMD kernels, chosen at run time (AVX-512, else AVX2, else the portable
//! code), that compute the same integer sums: Pillow accumulates `pixel * weight` in i32 with
//! 22-bit weights, too wide for 16-bit multiplies, so the kernels split each weight into parts
//! that fit (`hi * 2^11 + lo` as i16 for `vpmaddwd`/`vpdpwssd`, three i8 digits for
//! `vpdpbusd`) and recombine the parts' sums with shifts: the same i32 total, since wrapping
//! adds in any order end at the true sum, which fits. Without AVX-512 the vertical pass is the
//! scalar loop compiled once more for AVX2, which the compiler vectorises 8 lanes wide.

use std::sync::atomic::{AtomicU8, Ordering};

use super::RgbPixels;

/// Fixed-point precision of Pillow's 8-bit resampling (`32 - 8 - 2`).
const PRECISION_BITS: u32 = 22;

/// A resampling filter, as Pillow defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Pillow's `BILINEAR` (triangle, support 1): torchvision's default.
    Bilinear,
    /// Pillow's `BOX` (area averaging, support 0.5): used to shrink digits to 8x8.
    Box,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Box => 0.5,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }
}

/// Fixed-point weights of one output pixel: the first input index and one weight per input.
struct Taps {
    start: usize,
    weights: Vec<i32>,
}

/// Pillow's `precompute_coeffs` followed by `normalize_coeffs_8bpc`.
fn precompute(in_size: usize, out_size: usize, filter: Filter) -> Vec<Taps> {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter.support() * filter_scale;
    // Pillow multiplies by the reciprocal; dividing can differ in the last bit.
    let inverse_scale = 1.0 / filter_scale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // Pillow truncates `center -/+ support + 0.5` with a C int cast.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let raw: Vec<f64> = (xmin..xmax.max(xmin))
                .map(|x| filter.weight((x as f64 - center + 0.5) * inverse_scale))
                .collect();
            let total: f64 = raw.iter().sum();
            let weights = raw
                .iter()
                .map(|&w| {
                    let w = if total != 0.0 { w / total } else { w };
                    let scaled = w * f64::from(1u32 << PRECISION_BITS);
                    if w < 0.0 {
                        (scaled - 0.5) as i32
                    } else {
                        (scaled + 0.5) as i32
                    }
                })
                .collect();
            Taps {
                start: xmin,
                weights,
            }
        })
        .collect()
}

fn clip8(acc: i32) -> u8 {
    if acc >= (1 << PRECISION_BITS << 8) {
        255
    } else if acc <= 0 {
        0
    } else {
        (acc >> PRECISION_BITS) as u8
    }
}

/// Resizes `image` to `width` x `height` exactly as Pillow's `Image.resize(size, filter)`.
pub fn resize(image: &RgbPixels, width: usize, height: usize, filter: Filter) -> RgbPixels {
    assert!(width > 0 && height > 0, "resize target must be non-empty");
    if image.width == width && image.height == height {
        return image.clone();
    }
    let horizontal = precompute(image.width, width, filter);
    let vertical = precompute(image.height, height, filter);

    // Like Pillow, the horizontal pass only covers the rows the vertical pass will read.
    let first_row = vertical.first().map_or(0, |t| t.start);
    let last_row = vertical.last().map_or(0, |t| t.start + t.weights.len());
    let source = if width != image.width {
        horizontal_pass(image, &horizontal, first_row, last_row)
    } else {
        let rows = &image.data[first_row * image.width * 3..last_row * image.width * 3];
        RgbPixels {
            width: image.width,
            height: last_row - first_row,
            data: rows.to_vec(),
        }
    };
    if height != image.height {
        vertical_pass(&source, &vertical, first_row, height)
    } else {
        source
    }
}

/// What [`force_isa_for_benchmarks`] set: 0 for the best this CPU runs.
static FORCED_ISA: AtomicU8 = AtomicU8::new(0);
const FORCED_PORTABLE: u8 = 1;
#[cfg(target_arch = "x86_64")]
const FORCED_AVX2: u8 = 2;

/// For benchmarks (`examples/engine_bench.rs --resize`): every later resize of this process
/// runs on `isa` (`"portable"`, `"avx2"`, or `"best"` to undo), so a CPU with AVX-512 can time
/// the code an AVX2-only one runs. The bytes computed are the same on every instruction set
/// (the tests check it). Returns false, changing nothing, for an instruction set this CPU
/// lacks or a name it does not know.
#[doc(hidden)]
pub fn force_isa_for_benchmarks(isa: &str) -> bool {
    let forced = match isa {
        "best" => 0,
        "portable" => FORCED_PORTABLE,
        #[cfg(target_arch = "x86_64")]
        "avx2" if std::arch::is_x86_feature_detected!("avx2") => FORCED_AVX2,
        _ => return false,
    };
    FORCED_ISA.store(forced, Ordering::Relaxed);
    true
}

/// The instruction sets a pass can run on; every one computes the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512 F/BW/VL with VBMI (byte permutes) and VNNI (`vpdpwssd`): Ice Lake, Zen 4 and later.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    /// Every instruction set this CPU runs, the fastest last.
    #[cfg(test)]
    fn available() -> Vec<Isa> {
        #[allow(unused_mut)]
        let mut isas = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                isas.push(Isa::Avx2);
            }
            if x86::avx512::detected() {
                isas.push(Isa::Avx512);
            }
        }
        isas
    }

    fn best() -> Isa {
        match FORCED_ISA.load(Ordering::Relaxed) {
            FORCED_PORTABLE => return Isa::Portable,
            #[cfg(target_arch = "x86_64")]
            FORCED_AVX2 => return Isa::Avx2,
            _ => {}
        }
        #[cfg(target_arch = "x86_64")]
        {
            if x86::avx512::detected() {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }
}

fn horizontal_pass(
    image: &RgbPixels,
    taps: &[Taps],
    first_row: usize,
    last_row: usize,
) -> RgbPixels {
    horizontal_with(Isa::best(), image, taps, first_row, last_row)
}

/// The horizontal pass on `isa`, which this CPU must run (see [`Isa::available`]).
fn horizontal_with(
    isa: Isa,
    image: &RgbPixels,
    taps: &[Taps],
    first_row: usize,
    last_row: usize,
) -> RgbPixels {
    #[cfg(target_arch = "x86_64")]
    let simd = |kernel: &dyn Fn(&mut [u8])| {
        let mut data = vec![0u8; taps.len() * (last_row - first_row) * 3];
        kernel(&mut data);
        RgbPixels {
            width: taps.len(),
            height: last_row - first_row,
            data,
        }
    };
    match isa {
        Isa::Portable => horizontal_portable(image, taps, first_row, last_row),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            let plan = x86::SplitTaps::new(taps);
            // Safety: the caller checked that the CPU has AVX2.
            simd(&|out| unsafe {
                x86::horizontal_avx2(image, taps, &plan, first_row, last_row, out)
            })
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            let plan = x86::avx512::WideTaps::new(taps);
            // Safety: the caller checked that the CPU has the AVX-512 subsets.
            simd(&|out| unsafe { x86::avx512::horizontal(image, &plan, first_row, last_row, out) })
        }
    }
}

/// The horizontal pass as Pillow writes it: the reference the SIMD kernel must equal.
fn horizontal_portable(
    image: &RgbPixels,
    taps: &[Taps],
    first_row: usize,
    last_row: usize,
) -> RgbPixels {
    let out_width = taps.len();
    let mut data = Vec::with_capacity(out_width * (last_row - first_row) * 3);
    for row in image
        .data
        .chunks_exact(image.width * 3)
        .take(last_row)
        .skip(first_row)
    {
        for tap in taps {
            data.extend(horizontal_pixel(row, tap));
        }
    }
    RgbPixels {
        width: out_width,
        height: last_row - first_row,
        data,
    }
}

/// One output pixel of the horizontal pass: `row` is one RGB row of the input.
#[inline]
fn horizontal_pixel(row: &[u8], tap: &Taps) -> [u8; 3] {
    let pixels = row[tap.start * 3..].chunks_exact(3);
    let mut acc = [1i32 << (PRECISION_BITS - 1); 3];
    for (px, &w) in pixels.zip(&tap.weights) {
        acc[0] += i32::from(px[0]) * w;
        acc[1] += i32::from(px[1]) * w;
        acc[2] += i32::from(px[2]) * w;
    }
    acc.map(clip8)
}

fn vertical_pass(
    image: &RgbPixels,
    taps: &[Taps],
    row_offset: usize,
    out_height: usize,
) -> RgbPixels {
    vertical_with(Isa::best(), image, taps, row_offset, out_height)
}

/// The vertical pass on `isa`, which this CPU must run (see [`Isa::available`]).
fn vertical_with(
    isa: Isa,
    image: &RgbPixels,
    taps: &[Taps],
    row_offset: usize,
    out_height: usize,
) -> RgbPixels {
    match isa {
        Isa::Portable => vertical_portable(image, taps, row_offset, out_height),
        // Safety: the caller checked that the CPU has AVX2.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::vertical_avx2(image, taps, row_offset, out_height) },
        // Safety: the caller checked that the CPU has the AVX-512 subsets.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::avx512::vertical(image, taps, row_offset, out_height) },
    }
}

/// The vertical pass, row by row (inlined into an AVX2 copy by [`x86::vertical_avx2`]).
#[inline(always)]
fn vertical_portable(
    image: &RgbPixels,
    taps: &[Taps],
    row_offset: usize,
    out_height: usize,
) -> RgbPixels {
    let stride = image.width * 3;
    let mut data = Vec::with_capacity(stride * out_height);
    // Whole rows at a time: the inner loop runs over contiguous bytes and vectorises.
    let mut acc = vec![0i32; stride];
    for tap in taps {
        acc.fill(1 << (PRECISION_BITS - 1));
        let rows = image.data[(tap.start - row_offset) * stride..].chunks_exact(stride);
        for (row, &w) in rows.zip(&tap.weights) {
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += i32::from(p) * w;
            }
        }
        data.extend(acc.iter().map(|&a| clip8(a)));
    }
    RgbPixels {
        width: image.width,
        height: out_height,
        data,
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{horizontal_pixel, RgbPixels, Taps, PRECISION_BITS};

    /// Low bits of each weight in the `lo` half of the split.
    const SPLIT_BITS: u32 = 11;

    /// The horizontal taps laid out for [`horizontal_avx2`]: taps in chunks of four, each chunk
    /// one vector of sixteen i16 weights per half of the split (`hi`, then `lo`), laid out to
    /// face the pixels as `shuffle` places them: lanes 0..8 `[w0, w1] x 3 channels, 0, 0`,
    /// lanes 8..16 the same for `w2, w3`; taps past the end weigh 0.
    pub(super) struct SplitTaps {
        /// Per output pixel: its first chunk in `weights` and its number of chunks.
        chunks: Vec<(u32, u32)>,
        /// Per output pixel: bytes past its first input byte that its vector loads read.
        read_len: Vec<usize>,
        /// `[hi, lo]` weight vectors, chunk after chunk.
        weights: Vec<[[i16; 16]; 2]>,
    }

    impl SplitTaps {
        pub(super) fn new(taps: &[Taps]) -> SplitTaps {
            let mut chunks = Vec::with_capacity(taps.len());
            let mut read_len = Vec::with_capacity(taps.len());
            let mut weights = vec![];
            for tap in taps {
                let n = tap.weights.len().div_ceil(4);
                chunks.push((weights.len() as u32, n as u32));
                // The last chunk loads 16 bytes from 12 * (n - 1).
                read_len.push(if n == 0 { 0 } else { 12 * (n - 1) + 16 });
                for c in 0..n {
                    let mut vectors = [[0i16; 16]; 2];
                    for j in 0..4 {
                        let w = tap.weights.get(4 * c + j).copied().unwrap_or(0);
                        // w = hi * 2^11 + lo with 0 <= lo < 2^11; |w| <= 2^22 keeps hi in i16.
                        let (hi, lo) = (w >> SPLIT_BITS, w & ((1 << SPLIT_BITS) - 1));
                        let (half, slot) = (j / 2, j % 2);
                        for ch in 0..3 {
                            vectors[0][8 * half + 2 * ch + slot] = hi as i16;
                            vectors[1][8 * half + 2 * ch + slot] = lo as i16;
                        }
                    }
                    weights.push(vectors);
                }
            }
            SplitTaps {
                chunks,
                read_len,
                weights,
            }
        }
    }

    /// The horizontal pass over rows `first_row..last_row` of `image` into `out` (`taps.len()`
    /// RGB pixels per row), equal to [`super::horizontal_portable`] byte for byte. Rows go in
    /// fours, which share each weight load (12 MP: 6.5-6.8 -> 5.5-5.6 ms against pairs), then
    /// in pairs, which share the final reduction. A pixel whose vector loads
    /// would run past the end of the image (the last pixels of the last row) is computed by the
    /// scalar code.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn horizontal_avx2(
        image: &RgbPixels,
        taps: &[Taps],
        plan: &SplitTaps,
        first_row: usize,
        last_row: usize,
        out: &mut [u8],
    ) {
        let stride = image.width * 3;
        let out_stride = taps.len() * 3;
        assert_eq!(out.len(), out_stride * (last_row - first_row));
        assert_eq!(plan.chunks.len(), taps.len());
        // Four rows at a time while four remain (they share each weight load), then pairs.
        let quads = (last_row - first_row) / 4;
        let (quad_out, out) = out.split_at_mut(quads * 4 * out_stride);
        for (quad, out_rows) in quad_out.chunks_mut(4 * out_stride).enumerate() {
            let y = first_row + 4 * quad;
            let rows: [&[u8]; 4] = std::array::from_fn(|i| &image.data[(y + i) * stride..]);
            let (out_ab, out_cd) = out_rows.split_at_mut(2 * out_stride);
            let (out_a, out_b) = out_ab.split_at_mut(out_stride);
            let (out_c, out_d) = out_cd.split_at_mut(out_stride);
            for (x, tap) in taps.iter().enumerate() {
                let px = if tap.start * 3 + plan.read_len[x] <= rows[3].len() {
                    pixel_quad(rows, tap, plan, x)
                } else {
                    rows.map(|row| pixel(row, tap, plan, x))
                };
                out_a[3 * x..3 * x + 3].copy_from_slice(&px[0]);
                out_b[3 * x..3 * x + 3].copy_from_slice(&px[1]);
                out_c[3 * x..3 * x + 3].copy_from_slice(&px[2]);
                out_d[3 * x..3 * x + 3].copy_from_slice(&px[3]);
            }
        }
        let first_row = first_row + 4 * quads;
        for (pair, out_rows) in out.chunks_mut(2 * out_stride).enumerate() {
            let y = first_row + 2 * pair;
            let row_a = &image.data[y * stride..];
            if out_rows.len() < 2 * out_stride {
                for (x, tap) in taps.iter().enumerate() {
                    let px = pixel(row_a, tap, plan, x);
                    out_rows[3 * x..3 * x + 3].copy_from_slice(&px);
                }
                continue;
            }
            let row_b = &image.data[(y + 1) * stride..];
            let (out_a, out_b) = out_rows.split_at_mut(out_stride);
            for (x, tap) in taps.iter().enumerate() {
                let (a, b) = if tap.start * 3 + plan.read_len[x] <= row_b.len() {
                    pixel_pair(row_a, row_b, tap, plan, x)
                } else {
                    (pixel(row_a, tap, plan, x), pixel(row_b, tap, plan, x))
                };
                out_a[3 * x..3 * x + 3].copy_from_slice(&a);
                out_b[3 * x..3 * x + 3].copy_from_slice(&b);
            }
        }
    }

    /// Pixels (R, G, B) of taps 0 and 1 as i16 pairs `[R0, R1, G0, G1, B0, B1, 0, 0]` in the
    /// low half of the vector, of taps 2 and 3 in the high half (-1: a zero byte).
    #[target_feature(enable = "avx2")]
    #[inline]
    fn shuffle() -> __m256i {
        _mm256_setr_epi8(
            0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1, //
            6, -1, 9, -1, 7, -1, 10, -1, 8, -1, 11, -1, -1, -1, -1, -1,
        )
    }

    /// Four taps' pixels from `src` (16 bytes read, 12 used), laid out by [`shuffle`].
    ///
    /// # Safety
    /// `src..src + 16` readable.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn load_pixels(src: *const u8, shuffle: __m256i) -> __m256i {
        let bytes = _mm256_broadcastsi128_si256(_mm_loadu_si128(src as *const __m128i));
        _mm256_shuffle_epi8(bytes, shuffle)
    }

    /// `(hi << 11) + lo + rounding`, then Pillow's clip8 (shift, saturate to 0..=255) per i32
    /// lane, then packed to bytes (lane `i` of each 128-bit half in byte `i` of that half).
    #[target_feature(enable = "avx2")]
    #[inline]
    fn finish(hi: __m256i, lo: __m256i) -> __m256i {
        let round = _mm256_set1_epi32(1 << (PRECISION_BITS - 1));
        let acc = _mm256_add_epi32(
            _mm256_add_epi32(_mm256_slli_epi32::<{ SPLIT_BITS as i32 }>(hi), lo),
            round,
        );
        let v = _mm256_srai_epi32::<{ PRECISION_BITS as i32 }>(acc);
        let v = _mm256_packus_epi32(v, v);
        _mm256_packus_epi16(v, v)
    }

    /// The first three bytes of a 128-bit vector.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn rgb(v: __m128i) -> [u8; 3] {
        let [r, g, b, _] = (_mm_cvtsi128_si32(v) as u32).to_le_bytes();
        [r, g, b]
    }

    /// Output pixel `x` of one row (scalar when its loads would leave the image).
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn pixel(row: &[u8], tap: &Taps, plan: &SplitTaps, x: usize) -> [u8; 3] {
        let start = tap.start * 3;
        if start + plan.read_len[x] > row.len() {
            return horizontal_pixel(row, tap);
        }
        let (first, n) = plan.chunks[x];
        let weights = plan.weights.as_ptr().add(first as usize) as *const __m256i;
        let shuffle = shuffle();
        let mut src = row.as_ptr().add(start);
        let mut hi = _mm256_setzero_si256();
        let mut lo = _mm256_setzero_si256();
        for c in 0..n as usize {
            let pixels = load_pixels(src, shuffle);
            hi = _mm256_add_epi32(
                hi,
                _mm256_madd_epi16(pixels, _mm256_loadu_si256(weights.add(2 * c))),
            );
            lo = _mm256_add_epi32(
                lo,
                _mm256_madd_epi16(pixels, _mm256_loadu_si256(weights.add(2 * c + 1))),
            );
            src = src.add(12);
        }
        // Taps 0-1 in the low half, 2-3 in the high half: add the halves.
        let hi = _mm256_add_epi32(hi, _mm256_permute2x128_si256::<0x01>(hi, hi));
        let lo = _mm256_add_epi32(lo, _mm256_permute2x128_si256::<0x01>(lo, lo));
        rgb(_mm256_castsi256_si128(finish(hi, lo)))
    }

    /// Output pixel `x` of four rows at once (every row's loads must stay inside the image):
    /// [`pixel_pair`] twice over, with each weight vector loaded once for the four.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn pixel_quad(rows: [&[u8]; 4], tap: &Taps, plan: &SplitTaps, x: usize) -> [[u8; 3]; 4] {
        let start = tap.start * 3;
        let (first, n) = plan.chunks[x];
        let weights = plan.weights.as_ptr().add(first as usize) as *const __m256i;
        let shuffle = shuffle();
        let mut src = rows.map(|row| row.as_ptr().add(start));
        let mut hi = [_mm256_setzero_si256(); 4];
        let mut lo = [_mm256_setzero_si256(); 4];
        for c in 0..n as usize {
            let w_hi = _mm256_loadu_si256(weights.add(2 * c));
            let w_lo = _mm256_loadu_si256(weights.add(2 * c + 1));
            for r in 0..4 {
                let p = load_pixels(src[r], shuffle);
                hi[r] = _mm256_add_epi32(hi[r], _mm256_madd_epi16(p, w_hi));
                lo[r] = _mm256_add_epi32(lo[r], _mm256_madd_epi16(p, w_lo));
                src[r] = src[r].add(12);
            }
        }
        let mut out = [[0u8; 3]; 4];
        for half in 0..2 {
            let (a, b) = (2 * half, 2 * half + 1);
            // Low half: row a's taps 0-1 + 2-3; high half: row b's.
            let h = _mm256_add_epi32(
                _mm256_permute2x128_si256::<0x20>(hi[a], hi[b]),
                _mm256_permute2x128_si256::<0x31>(hi[a], hi[b]),
            );
            let l = _mm256_add_epi32(
                _mm256_permute2x128_si256::<0x20>(lo[a], lo[b]),
                _mm256_permute2x128_si256::<0x31>(lo[a], lo[b]),
            );
            let v = finish(h, l);
            out[a] = rgb(_mm256_castsi256_si128(v));
            out[b] = rgb(_mm256_extracti128_si256::<1>(v));
        }
        out
    }

    /// Output pixel `x` of two rows at once (both rows' loads must stay inside the image).
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn pixel_pair(
        row_a: &[u8],
        row_b: &[u8],
        tap: &Taps,
        plan: &SplitTaps,
        x: usize,
    ) -> ([u8; 3], [u8; 3]) {
        let start = tap.start * 3;
        let (first, n) = plan.chunks[x];
        let weights = plan.weights.as_ptr().add(first as usize) as *const __m256i;
        let shuffle = shuffle();
        let mut src_a = row_a.as_ptr().add(start);
        let mut src_b = row_b.as_ptr().add(start);
        let [mut hi_a, mut lo_a, mut hi_b, mut lo_b] = [_mm256_setzero_si256(); 4];
        for c in 0..n as usize {
            let w_hi = _mm256_loadu_si256(weights.add(2 * c));
            let w_lo = _mm256_loadu_si256(weights.add(2 * c + 1));
            let a = load_pixels(src_a, shuffle);
            let b = load_pixels(src_b, shuffle);
            hi_a = _mm256_add_epi32(hi_a, _mm256_madd_epi16(a, w_hi));
            lo_a = _mm256_add_epi32(lo_a, _mm256_madd_epi16(a, w_lo));
            hi_b = _mm256_add_epi32(hi_b, _mm256_madd_epi16(b, w_hi));
            lo_b = _mm256_add_epi32(lo_b, _mm256_madd_epi16(b, w_lo));
            src_a = src_a.add(12);
            src_b = src_b.add(12);
        }
        // Low half: row a's taps 0-1 + 2-3; high half: row b's.
        let hi = _mm256_add_epi32(
            _mm256_permute2x128_si256::<0x20>(hi_a, hi_b),
            _mm256_permute2x128_si256::<0x31>(hi_a, hi_b),
        );
        let lo = _mm256_add_epi32(
            _mm256_permute2x128_si256::<0x20>(lo_a, lo_b),
            _mm256_permute2x128_si256::<0x31>(lo_a, lo_b),
        );
        let v = finish(hi, lo);
        (
            rgb(_mm256_castsi256_si128(v)),
            rgb(_mm256_extracti128_si256::<1>(v)),
        )
    }

    /// [`super::vertical_portable`] compiled for AVX2 (the row loop vectorises 8 lanes wide).
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn vertical_avx2(
        image: &RgbPixels,
        taps: &[Taps],
        row_offset: usize,
        out_height: usize,
    ) -> RgbPixels {
        super::vertical_portable(image, taps, row_offset, out_height)
    }

    /// The AVX-512 kernels: the same integer sums as the AVX2 ones with VNNI's multiply-and-
    /// accumulate instructions and masked loads, which never touch the bytes they leave out, so
    /// no pixel needs a scalar fallback at the edges. The horizontal pass multiplies u8 pixels
    /// by i8 digits of the weights (`vpdpbusd`, 8 taps of 2 rows per vector, three digits); the
    /// vertical pass pairs rows as i16 with the weights split as in AVX2 (`vpdpwssd`).
    pub(super) mod avx512 {
        use std::arch::x86_64::*;

        use super::super::{RgbPixels, Taps, PRECISION_BITS};
        use super::SPLIT_BITS;

        /// Whether this CPU has every AVX-512 subset the kernels use.
        pub(in super::super) fn detected() -> bool {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512vbmi")
                && std::arch::is_x86_feature_detected!("avx512vnni")
        }

        /// Taps per chunk: eight RGB pixels (24 bytes) of one row fill 256 bits as u8 quads,
        /// so one 512-bit vector holds a chunk of two rows.
        const CHUNK: usize = 8;

        /// Where `vpermb` takes each byte from: 128-bit lane `l` of each 256-bit half (one row
        /// each) holds taps `4l..4l + 4` as `[R R R R, G G G G, B B B B, 0 0 0 0]`, so one
        /// `vpdpbusd` i32 lane sums one channel of four taps. Byte 63 is always zero (each
        /// half's load reads at most 24 bytes).
        const PERMUTE: [u8; 64] = {
            let mut idx = [63u8; 64];
            let mut half = 0;
            while half < 2 {
                let mut l = 0;
                while l < 2 {
                    let mut ch = 0;
                    while ch < 3 {
                        let mut j = 0;
                        while j < 4 {
                            idx[32 * half + 16 * l + 4 * ch + j] =
                                (32 * half + 3 * (4 * l + j) + ch) as u8;
                            j += 1;
                        }
                        ch += 1;
                    }
                    l += 1;
                }
                half += 1;
            }
            idx
        };

        /// Digits of a weight: `w = d2 * 2^16 + d1 * 2^8 + d0` with every digit in i8 (d0, d1
        /// balanced in -128..=127), so `vpdpbusd` (u8 pixel times i8 weight) can multiply;
        /// the sum `(S2 << 16) + (S1 << 8) + S0` of the digits' sums is Pillow's integer.
        fn digits(w: i32) -> [i8; 3] {
            let d0 = w as u8 as i8;
            let rest = (w - i32::from(d0)) >> 8;
            let d1 = rest as u8 as i8;
            let d2 = (rest - i32::from(d1)) >> 8;
            let d2 = i8::try_from(d2).expect("|weight| <= 2^22 leaves the top digit in i8");
            debug_assert_eq!(
                (i32::from(d2) << 16) + (i32::from(d1) << 8) + i32::from(d0),
                w
            );
            [d0, d1, d2]
        }

        /// The horizontal taps laid out for [`horizontal`]: per output pixel, chunks of eight
        /// taps, each three digit vectors (see [`digits`]) of one row's half facing the pixels
        /// as [`PERMUTE`] places them (taps past the end weigh 0) and the mask of the bytes
        /// its loads read.
        pub(in super::super) struct WideTaps {
            /// Per output pixel: its first input byte, first chunk and number of chunks.
            pixels: Vec<(usize, u32, u32)>,
            /// `[d0, d1, d2]` weight half-vectors, chunk after chunk.
            weights: Vec<[[i8; 32]; 3]>,
            /// Per chunk: the bytes of its taps (all 24, or fewer in a pixel's last chunk).
            masks: Vec<u32>,
        }

        impl WideTaps {
            pub(in super::super) fn new(taps: &[Taps]) -> WideTaps {
                let mut pixels = Vec::with_capacity(taps.len());
                let (mut weights, mut masks) = (vec![], vec![]);
                for tap in taps {
                    let n = tap.weights.len().div_ceil(CHUNK);
                    pixels.push((tap.start * 3, weights.len() as u32, n as u32));
                    for c in 0..n {
                        let mut vectors = [[0i8; 32]; 3];
                        let used = (tap.weights.len() - CHUNK * c).min(CHUNK);
                        for j in 0..used {
                            let d = digits(tap.weights[CHUNK * c + j]);
                            let (lane, slot) = (j / 4, j % 4);
                            for ch in 0..3 {
                                for (v, &digit) in vectors.iter_mut().zip(&d) {
                                    v[16 * lane + 4 * ch + slot] = digit;
                                }
                            }
                        }
                        weights.push(vectors);
                        masks.push((1u32 << (3 * used)) - 1);
                    }
                }
                WideTaps {
                    pixels,
                    weights,
                    masks,
                }
            }
        }

        /// Rows that share each weight load: four vectors of two rows (a multiple of 4, the
        /// rows of one reduction).
        const ROWS: usize = 8;

        /// The horizontal pass over rows `first_row..last_row` of `image` into `out`
        /// (`plan`'s output pixels per row), equal to [`super::super::horizontal_portable`]
        /// byte for byte. Rows go eight at a time; a last group of fewer repeats its last row
        /// (computed and written again, the same bytes).
        ///
        /// # Safety
        /// The CPU must have the subsets [`detected`] checks.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni")]
        pub(in super::super) unsafe fn horizontal(
            image: &RgbPixels,
            plan: &WideTaps,
            first_row: usize,
            last_row: usize,
            out: &mut [u8],
        ) {
            let stride = image.width * 3;
            let out_stride = plan.pixels.len() * 3;
            assert_eq!(out.len(), out_stride * (last_row - first_row));
            assert!(last_row <= image.height && image.data.len() == stride * image.height);
            for &(start, first, n) in &plan.pixels {
                // Every load stays inside its row: the masks cover the taps' bytes only.
                let last = (first + n) as usize;
                assert!(last <= plan.weights.len());
                if n > 0 {
                    let last_bytes = plan.masks[last - 1].count_ones() as usize;
                    assert!(start + CHUNK * 3 * (n as usize - 1) + last_bytes <= stride);
                }
            }
            let idx = _mm512_loadu_si512(PERMUTE.as_ptr() as *const _);
            let rows = last_row - first_row;
            // One pointer for all writes (rows repeated in the last group write the same bytes).
            let out_base = out.as_mut_ptr();
            for r in (0..rows).step_by(ROWS) {
                let row = |k: usize| (r + k).min(rows - 1);
                let src: [*const u8; ROWS] =
                    std::array::from_fn(|k| image.data.as_ptr().add((first_row + row(k)) * stride));
                let dst: [*mut u8; ROWS] =
                    std::array::from_fn(|k| out_base.add(row(k) * out_stride));
                for (x, &(start, first, n)) in plan.pixels.iter().enumerate() {
                    let mut acc = [[_mm512_setzero_si512(); 3]; ROWS / 2];
                    for c in 0..n as usize {
                        let chunk = first as usize + c;
                        let w = plan.weights.as_ptr().add(chunk) as *const __m256i;
                        let w =
                            [0, 1, 2].map(|d| _mm512_broadcast_i64x4(_mm256_loadu_si256(w.add(d))));
                        let mask = *plan.masks.get_unchecked(chunk);
                        let offset = start + CHUNK * 3 * c;
                        for (q, acc) in acc.iter_mut().enumerate() {
                            let p = load_pixels(
                                src[2 * q].add(offset),
                                src[2 * q + 1].add(offset),
                                mask,
                                idx,
                            );
                            for d in 0..3 {
                                acc[d] = _mm512_dpbusd_epi32(acc[d], p, w[d]);
                            }
                        }
                    }
                    for g in 0..ROWS / 4 {
                        // [row 0 lanes 0-1, row 1 lanes 0-1] and the same for rows 2, 3: add
                        // the lanes of each row, so that lane k of `sums` is row k's total.
                        let a = combine_digits(acc[2 * g]);
                        let b = combine_digits(acc[2 * g + 1]);
                        let sums = _mm512_add_epi32(
                            _mm512_shuffle_i64x2::<0x88>(a, b),
                            _mm512_shuffle_i64x2::<0xDD>(a, b),
                        );
                        // Row k's RGB in bytes 4k..4k + 3: shifted down, stored 3 bytes wide.
                        let dst = &dst[4 * g..4 * g + 4];
                        let bytes = clip8(sums);
                        _mm_mask_storeu_epi8(dst[0].add(3 * x) as *mut i8, 0b111, bytes);
                        let b1 = _mm_srli_si128::<4>(bytes);
                        _mm_mask_storeu_epi8(dst[1].add(3 * x) as *mut i8, 0b111, b1);
                        let b2 = _mm_srli_si128::<8>(bytes);
                        _mm_mask_storeu_epi8(dst[2].add(3 * x) as *mut i8, 0b111, b2);
                        let b3 = _mm_srli_si128::<12>(bytes);
                        _mm_mask_storeu_epi8(dst[3].add(3 * x) as *mut i8, 0b111, b3);
                    }
                }
            }
        }

        /// Eight taps' pixels from `a` (low half) and `b` (high half), the bytes in `mask`
        /// read from each, laid out by [`PERMUTE`].
        ///
        /// # Safety
        /// The bytes of `a` and `b` selected by `mask` readable.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
        #[inline]
        unsafe fn load_pixels(a: *const u8, b: *const u8, mask: u32, idx: __m512i) -> __m512i {
            let low = _mm256_maskz_loadu_epi8(mask, a as *const i8);
            let high = _mm256_maskz_loadu_epi8(mask, b as *const i8);
            let bytes = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(low), high);
            _mm512_permutexvar_epi8(idx, bytes)
        }

        /// `(S2 << 16) + (S1 << 8) + S0`: Pillow's sum `pixel * weight`, lane by lane. The
        /// adds wrap, and wrapping adds in any order end at the true total, which fits in i32.
        #[target_feature(enable = "avx512f")]
        #[inline]
        fn combine_digits([s0, s1, s2]: [__m512i; 3]) -> __m512i {
            let high = _mm512_add_epi32(_mm512_slli_epi32::<8>(s2), s1);
            _mm512_add_epi32(_mm512_slli_epi32::<8>(high), s0)
        }

        /// `(hi << 11) + lo`: Pillow's sum `pixel * weight`, lane by lane, from the two halves
        /// of the weights' split (wrapping adds, as in [`combine_digits`]).
        #[target_feature(enable = "avx512f")]
        #[inline]
        fn combine(hi: __m512i, lo: __m512i) -> __m512i {
            _mm512_add_epi32(_mm512_slli_epi32::<{ SPLIT_BITS }>(hi), lo)
        }

        /// Pillow's clip8 of each i32 lane (rounding added, shifted, saturated to 0..=255),
        /// narrowed to one byte per lane.
        #[target_feature(enable = "avx512f")]
        #[inline]
        fn clip8(sums: __m512i) -> __m128i {
            let acc = _mm512_add_epi32(sums, _mm512_set1_epi32(1 << (PRECISION_BITS - 1)));
            let shifted = _mm512_srai_epi32::<{ PRECISION_BITS }>(acc);
            _mm512_cvtusepi32_epi8(_mm512_max_epi32(shifted, _mm512_setzero_si512()))
        }

        /// `((hi << 11) + lo + round) >> 22`, lane by lane.
        #[target_feature(enable = "avx512f")]
        #[inline]
        fn shifted(hi: __m512i, lo: __m512i, round: __m512i) -> __m512i {
            _mm512_srai_epi32::<{ PRECISION_BITS }>(_mm512_add_epi32(combine(hi, lo), round))
        }

        /// Two weights as one i32 of i16 pairs: `first` in the low half, facing the first row.
        fn pair(first: i32, second: i32) -> i32 {
            (u32::from(second as i16 as u16) << 16 | u32::from(first as i16 as u16)) as i32
        }

        /// [`super::super::vertical_portable`] over 32 columns at a time: rows go in pairs,
        /// interleaved as i16 pairs so one `vpdpwssd` lane sums two rows of one column.
        ///
        /// # Safety
        /// The CPU must have the subsets [`detected`] checks.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
        pub(in super::super) unsafe fn vertical(
            image: &RgbPixels,
            taps: &[Taps],
            row_offset: usize,
            out_height: usize,
        ) -> RgbPixels {
            let stride = image.width * 3;
            assert_eq!(taps.len(), out_height);
            assert_eq!(image.data.len(), stride * image.height);
            let mut data = vec![0u8; stride * out_height];
            let mut pairs: Vec<(__m512i, __m512i)> = vec![];
            let round = _mm512_set1_epi32(1 << (PRECISION_BITS - 1));
            for (tap, out_row) in taps.iter().zip(data.chunks_exact_mut(stride)) {
                let first = tap.start - row_offset;
                let n = tap.weights.len();
                assert!(first + n <= image.height);
                pairs.clear();
                for two in tap.weights.chunks(2) {
                    let (w0, w1) = (two[0], two.get(1).copied().unwrap_or(0));
                    let low = (1 << SPLIT_BITS) - 1;
                    pairs.push((
                        _mm512_set1_epi32(pair(w0 >> SPLIT_BITS, w1 >> SPLIT_BITS)),
                        _mm512_set1_epi32(pair(w0 & low, w1 & low)),
                    ));
                }
                let base = image.data.as_ptr().add(first * stride);
                let mut col = 0;
                while col < stride {
                    let len = (stride - col).min(32);
                    let mask = if len == 32 {
                        u32::MAX
                    } else {
                        (1u32 << len) - 1
                    };
                    let zero = _mm512_setzero_si512();
                    let [mut hi_l, mut hi_h, mut lo_l, mut lo_h] = [zero; 4];
                    for (k, &(w_hi, w_lo)) in pairs.iter().enumerate() {
                        let row = base.add(2 * k * stride + col);
                        let a =
                            _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(mask, row as *const i8));
                        let b = if 2 * k + 1 < n {
                            let next = row.add(stride) as *const i8;
                            _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(mask, next))
                        } else {
                            zero
                        };
                        let (l, h) = (_mm512_unpacklo_epi16(a, b), _mm512_unpackhi_epi16(a, b));
                        hi_l = _mm512_dpwssd_epi32(hi_l, l, w_hi);
                        hi_h = _mm512_dpwssd_epi32(hi_h, h, w_hi);
                        lo_l = _mm512_dpwssd_epi32(lo_l, l, w_lo);
                        lo_h = _mm512_dpwssd_epi32(lo_h, h, w_lo);
                    }
                    // The unpacks split each 128-bit lane's 8 columns 4 + 4; packing the two
                    // halves back puts them in order again (and saturates negatives to 0).
                    let words =
                        _mm512_packus_epi32(shifted(hi_l, lo_l, round), shifted(hi_h, lo_h, round));
                    let bytes = _mm512_cvtusepi16_epi8(words);
                    _mm256_mask_storeu_epi8(out_row.as_mut_ptr().add(col) as *mut i8, mask, bytes);
                    col += 32;
                }
            }
            RgbPixels {
                width: image.width,
                height: out_height,
                data,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(width: usize, height: usize) -> RgbPixels {
        let data = (0..width * height * 3)
            .map(|i| (i * 7 % 256) as u8)
            .collect();
        RgbPixels {
            width,
            height,
            data,
        }
    }

    #[test]
    fn same_size_is_a_copy() {
        let image = gradient(5, 4);
        assert_eq!(resize(&image, 5, 4, Filter::Bilinear), image);
    }

    #[test]
    fn constant_image_stays_constant() {
        let image = RgbPixels {
            width: 37,
            height: 23,
            data: vec![200; 37 * 23 * 3],
        };
        for (w, h) in [(8, 8), (256, 159), (3, 50)] {
            let out = resize(&image, w, h, Filter::Bilinear);
            assert_eq!((out.width, out.height), (w, h));
            assert!(out.data.iter().all(|&v| v == 200));
        }
    }

    #[test]
    fn box_filter_averages_exact_blocks() {
        // 2x2 blocks of 0 and 255 average to 127.5, which Pillow rounds half up to 128.
        let mut image = RgbPixels {
            width: 2,
            height: 2,
            data: vec![0; 12],
        };
        image.data[0..3].copy_from_slice(&[255, 255, 255]);
        image.data[9..12].copy_from_slice(&[255, 255, 255]);
        assert_eq!(resize(&image, 1, 1, Filter::Box).data, vec![128, 128, 128]);
    }

    /// Noise, so that every tap's pixel matters.
    fn noise(width: usize, height: usize, seed: u64) -> RgbPixels {
        let data = crate::test_rng::Rng::new(seed).bytes(width * height * 3);
        RgbPixels {
            width,
            height,
            data,
        }
    }

    #[test]
    fn dispatched_passes_equal_pillows_scalar_code() {
        // Shrinking (many taps), near 1 (two or three), enlarging (weights up to 1.0), odd
        // sizes, one-pixel images, both filters; also saturated and black images.
        let cases = [
            (4000, 7, 384, 5),
            (1155, 9, 341, 9),
            (451, 30, 384, 256),
            (300, 11, 256, 7),
            (7, 5, 358, 256),
            (1, 3, 5, 2),
            (17, 1, 3, 1),
            (33, 33, 33, 31),
            (256, 3, 255, 3),
            (640, 13, 8, 8),
        ];
        for (i, &(w, h, ow, oh)) in cases.iter().enumerate() {
            for image in [
                noise(w, h, 0x9e37_79b9 + i as u64),
                RgbPixels {
                    width: w,
                    height: h,
                    data: vec![255; w * h * 3],
                },
            ] {
                for filter in [Filter::Bilinear, Filter::Box] {
                    check_every_isa(&image, ow, oh, filter);
                }
            }
        }
    }

    /// Both passes on every instruction set this CPU runs, against the portable code.
    fn check_every_isa(image: &RgbPixels, ow: usize, oh: usize, filter: Filter) {
        let (w, h) = (image.width, image.height);
        let horizontal = precompute(w, ow, filter);
        let vertical = precompute(h, oh, filter);
        let first = vertical.first().map_or(0, |t| t.start);
        let last = vertical.last().map_or(0, |t| t.start + t.weights.len());
        let want = horizontal_portable(image, &horizontal, first, last);
        let want_v = vertical_portable(&want, &vertical, first, oh);
        for isa in Isa::available() {
            let got = horizontal_with(isa, image, &horizontal, first, last);
            assert_eq!(got, want, "{isa:?} horizontal {w}x{h} -> {ow} {filter:?}");
            assert_eq!(
                vertical_with(isa, &want, &vertical, first, oh),
                want_v,
                "{isa:?} vertical {w}x{h} -> {oh} {filter:?}"
            );
        }
    }

    /// The benchmarks' switch picks the pass the public `resize` runs, which computes the same
    /// bytes; an unknown name changes nothing; "best" undoes it.
    #[test]
    fn forcing_an_isa_for_benchmarks_changes_the_code_not_the_bytes() {
        let image = gradient(97, 61);
        let want = resize(&image, 40, 33, Filter::Bilinear);
        assert!(!force_isa_for_benchmarks("sse9"));
        assert_eq!(Isa::best(), Isa::available().pop().unwrap());
        assert!(force_isa_for_benchmarks("portable"));
        assert_eq!(Isa::best(), Isa::Portable);
        assert_eq!(resize(&image, 40, 33, Filter::Bilinear), want);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            assert!(force_isa_for_benchmarks("avx2"));
            assert_eq!(Isa::best(), Isa::Avx2);
            assert_eq!(resize(&image, 40, 33, Filter::Bilinear), want);
        }
        assert!(force_isa_for_benchmarks("best"));
        assert_eq!(Isa::best(), Isa::available().pop().unwrap());
    }

    #[test]
    fn every_isa_equals_pillows_scalar_code_on_many_sizes() {
        // Odd widths (row ends at every offset of a 32-byte block and an 8-tap chunk), ratios
        // from 1/60 to 40x, one-row and one-column images; two seeds of noise per size.
        let sizes = [1, 2, 3, 5, 8, 11, 16, 31, 33, 47, 64, 97, 130, 257, 600];
        let mut rng = crate::test_rng::Rng::new(0x5eed);
        let mut pick = |n: usize| {
            let b = rng.bytes(2);
            (usize::from(b[0]) << 8 | usize::from(b[1])) % n
        };
        for &w in &sizes {
            for &ow in &sizes {
                let (h, oh) = (sizes[pick(sizes.len())], sizes[pick(sizes.len())]);
                let image = noise(w, h, (w * 1000 + ow) as u64);
                let filter = if pick(4) == 0 {
                    Filter::Box
                } else {
                    Filter::Bilinear
                };
                check_every_isa(&image, ow, oh, filter);
            }
        }
        for (w, h, ow, oh) in [(6000, 9, 100, 2), (3, 4000, 1, 67), (2, 2, 80, 80)] {
            check_every_isa(&noise(w, h, 7), ow, oh, Filter::Bilinear);
        }
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (input, output) in [(451, 256), (300, 256), (3000, 341), (7, 256)] {
            for tap in precompute(input, output, Filter::Bilinear) {
                let sum: i32 = tap.weights.iter().sum();
                assert!((sum - (1 << PRECISION_BITS)).abs() <= tap.weights.len() as i32);
            }
        }
    }
}
