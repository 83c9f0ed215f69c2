//! torchvision's `Resize(256) -> CenterCrop(224) -> ToTensor -> Normalize`, reproduced exactly.

use serde::{Deserialize, Serialize};

use crate::image::resample::{resize, Filter};
use crate::image::RgbPixels;

/// How pixel values in 0..=1 become network inputs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "normalize", rename_all = "lowercase")]
pub enum Normalize {
    /// `(x - mean) / std` per channel (torchvision's `Normalize`, ResNet18).
    Imagenet {
        /// Per-channel mean.
        mean: [f32; 3],
        /// Per-channel standard deviation.
        std: [f32; 3],
    },
    /// `(255 * x - 127) / 128` (EfficientNet-Lite's TF-Lite convention).
    Tflite,
}

/// The preprocessing of an image model, as recorded in its manifest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ImagePreprocess {
    /// Target length of the shorter side (`Resize(256)`).
    pub resize: usize,
    /// Side of the centre crop (`CenterCrop(224)`).
    pub crop: usize,
    /// Normalisation after scaling to 0..=1.
    #[serde(flatten)]
    pub normalize: Normalize,
}

/// torchvision's output size for `Resize(size)`: the shorter side becomes `size`, the longer
/// side `int(size * long / short)` (truncated, as Python's `int()` does).
pub fn resized_size(width: usize, height: usize, size: usize) -> (usize, usize) {
    let long_side = |long: usize, short: usize| (size as f64 * long as f64 / short as f64) as usize;
    if width <= height {
        (size, long_side(height, width))
    } else {
        (long_side(width, height), size)
    }
}

/// torchvision's `CenterCrop` offset: `int(round((length - crop) / 2.0))`, where Python rounds
/// halves to even.
pub fn crop_offset(length: usize, crop: usize) -> usize {
    let excess = length - crop;
    let half = excess / 2;
    if excess % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

impl ImagePreprocess {
    /// Turns RGB pixels into the model's `[1, 3, crop, crop]` input, channel-planar.
    pub fn tensor(&self, image: &RgbPixels) -> Vec<f32> {
        let (width, height) = resized_size(image.width, image.height, self.resize);
        let resized = resize(image, width, height, Filter::Bilinear);
        let crop = self.crop;
        let (left, top) = (crop_offset(width, crop), crop_offset(height, crop));
        let mut tensor = vec![0f32; 3 * crop * crop];
        for y in 0..crop {
            let row = &resized.data[((top + y) * width + left) * 3..][..crop * 3];
            for (x, px) in row.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    // The same f32 operations, in the same order, as torch: x / 255, then
                    // normalise. Any reordering changes the last bit.
                    let scaled = f32::from(px[c]) / 255.0;
                    tensor[c * crop * crop + y * crop + x] = match self.normalize {
                        Normalize::Imagenet { mean, std } => (scaled - mean[c]) / std[c],
                        Normalize::Tflite => (scaled * 255.0 - 127.0) / 128.0,
                    };
                }
            }
        }
        tensor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resized_size_follows_torchvision() {
        assert_eq!(resized_size(451, 300, 256), (384, 256));
        assert_eq!(resized_size(300, 451, 256), (256, 384));
        assert_eq!(resized_size(3000, 2000, 256), (384, 256));
        assert_eq!(resized_size(7, 5, 256), (358, 256));
        assert_eq!(resized_size(256, 256, 256), (256, 256));
    }

    #[test]
    fn crop_offset_rounds_half_to_even() {
        assert_eq!(crop_offset(256, 224), 16);
        assert_eq!(crop_offset(341, 224), 58); // 58.5 -> 58
        assert_eq!(crop_offset(343, 224), 60); // 59.5 -> 60
        assert_eq!(crop_offset(224, 224), 0);
        assert_eq!(crop_offset(225, 224), 0); // 0.5 -> 0
    }

    #[test]
    fn tensor_is_planar_and_normalised() {
        let image = RgbPixels {
            width: 300,
            height: 300,
            data: [255u8, 0, 128].repeat(300 * 300),
        };
        let tflite = ImagePreprocess {
            resize: 256,
            crop: 224,
            normalize: Normalize::Tflite,
        };
        let t = tflite.tensor(&image);
        let plane = 224 * 224;
        assert_eq!(t.len(), 3 * plane);
        assert_eq!(
            (t[0], t[plane], t[2 * plane]),
            (1.0, -127.0 / 128.0, 1.0 / 128.0)
        );
    }
}
