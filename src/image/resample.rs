//! Pillow's `Image.resize` for 8-bit RGB, reproduced bit for bit.
//!
//! torchvision's `Resize` on a PIL image calls Pillow, so the reference pipeline's pixels come
//! from Pillow's `Resample.c`: f64 filter weights normalised per output pixel, converted to
//! 22-bit fixed point, a horizontal pass then a vertical pass, each rounded and clipped to u8.
//! `fast_image_resize` differs by one level on ~15% of pixels, which moves a trained network's
//! probabilities by up to 1e-2, so we port the algorithm instead.

use super::RgbPixels as RgbImage;

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
pub fn resize(image: &RgbImage, width: usize, height: usize, filter: Filter) -> RgbImage {
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
        RgbImage {
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

fn horizontal_pass(image: &RgbImage, taps: &[Taps], first_row: usize, last_row: usize) -> RgbImage {
    let out_width = taps.len();
    let mut data = Vec::with_capacity(out_width * (last_row - first_row) * 3);
    for row in image
        .data
        .chunks_exact(image.width * 3)
        .take(last_row)
        .skip(first_row)
    {
        for tap in taps {
            let pixels = row[tap.start * 3..].chunks_exact(3);
            let mut acc = [1i32 << (PRECISION_BITS - 1); 3];
            for (px, &w) in pixels.zip(&tap.weights) {
                acc[0] += i32::from(px[0]) * w;
                acc[1] += i32::from(px[1]) * w;
                acc[2] += i32::from(px[2]) * w;
            }
            data.extend(acc.map(clip8));
        }
    }
    RgbImage {
        width: out_width,
        height: last_row - first_row,
        data,
    }
}

fn vertical_pass(
    image: &RgbImage,
    taps: &[Taps],
    row_offset: usize,
    out_height: usize,
) -> RgbImage {
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
    RgbImage {
        width: image.width,
        height: out_height,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(width: usize, height: usize) -> RgbImage {
        let data = (0..width * height * 3)
            .map(|i| (i * 7 % 256) as u8)
            .collect();
        RgbImage {
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
        let image = RgbImage {
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
        let mut image = RgbImage {
            width: 2,
            height: 2,
            data: vec![0; 12],
        };
        image.data[0..3].copy_from_slice(&[255, 255, 255]);
        image.data[9..12].copy_from_slice(&[255, 255, 255]);
        assert_eq!(resize(&image, 1, 1, Filter::Box).data, vec![128, 128, 128]);
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
