//! Pictures as darkness maps, and the challenge's `plain` reduction to 8x8.

use crate::image::resample::{resize, Filter};
use crate::image::RgbPixels as RgbImage;

/// Longest side the `grid` and `ink` paths look at: bigger pictures are area-averaged down
/// first (a digit needs no more, and percentiles over millions of pixels cost time).
pub const MAX_SIDE: usize = 512;

/// A single-channel picture of values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Grey {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height` values.
    pub data: Vec<f64>,
}

impl Grey {
    /// The value at column `x`, row `y`.
    pub fn at(&self, x: usize, y: usize) -> f64 {
        self.data[y * self.width + x]
    }
}

/// Darkness of one pixel in 0..=1: `sqrt(sum over channels ((255 - c) / 255)^2) / sqrt(3)`.
pub fn darkness(px: &[u8]) -> f64 {
    let sum: f64 = px
        .iter()
        .map(|&c| ((255.0 - f64::from(c)) / 255.0).powi(2))
        .sum();
    sum.sqrt() / 3f64.sqrt()
}

/// The darkness of every pixel.
pub fn darkness_map(image: &RgbImage) -> Grey {
    Grey {
        width: image.width,
        height: image.height,
        data: image.data.chunks_exact(3).map(darkness).collect(),
    }
}

/// The element of rank `floor((n - 1) q)` of `values` (the Python twin's `sorted_at`).
pub fn sorted_at(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    let rank = ((sorted.len() - 1) as f64 * q) as usize;
    let (_, value, _) = sorted.select_nth_unstable_by(rank, f64::total_cmp);
    *value
}

/// The picture itself, or area-averaged down to [`MAX_SIDE`] on its longer side.
pub fn limited(image: &RgbImage) -> std::borrow::Cow<'_, RgbImage> {
    let longest = image.width.max(image.height);
    if longest <= MAX_SIDE {
        return std::borrow::Cow::Borrowed(image);
    }
    let side = |n: usize| ((n * MAX_SIDE + longest / 2) / longest).max(1);
    std::borrow::Cow::Owned(resize(
        image,
        side(image.width),
        side(image.height),
        Filter::Box,
    ))
}

/// The challenge's contract: area-average to 8x8, white is 0 and black is 16.
pub fn plain(image: &RgbImage) -> [f32; 64] {
    let small = resize(image, 8, 8, Filter::Box);
    let mut out = [0f32; 64];
    for (value, px) in out.iter_mut().zip(small.data.chunks_exact(3)) {
        *value = (16.0 * darkness(px)).round() as f32;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_maps_white_to_0_and_black_to_16() {
        let mut image = RgbImage {
            width: 16,
            height: 16,
            data: vec![255; 16 * 16 * 3],
        };
        image.data[..16 * 2 * 3].fill(0); // top two rows black = first 8x8 row
        let f = plain(&image);
        assert!(f[..8].iter().all(|&v| v == 16.0));
        assert!(f[8..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn sorted_at_takes_the_lower_rank() {
        let v = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(sorted_at(&v, 0.0), 1.0);
        assert_eq!(sorted_at(&v, 0.5), 3.0);
        assert_eq!(sorted_at(&v, 0.99), 4.0);
        assert_eq!(sorted_at(&v, 1.0), 5.0);
    }

    #[test]
    fn big_pictures_are_limited_to_max_side() {
        let image = RgbImage {
            width: 2000,
            height: 1000,
            data: vec![200; 2000 * 1000 * 3],
        };
        let small = limited(&image);
        assert_eq!((small.width, small.height), (512, 256));
    }
}
