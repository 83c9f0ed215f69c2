//! Images: bytes to upright RGB pixels ([`decode`], with the EXIF orientation of [`exif`]) and
//! Pillow's resampling filters ([`resample`]), over the crate's one pixel type, [`RgbPixels`].
//!
//! The pixel type is ours (not `image::RgbImage`): a plain `width`, `height` and interleaved
//! bytes that every stage (decode, resample, preprocess, digits) reads without conversion.

mod decode;
mod exif;
pub mod resample;

pub use decode::{decode, DecodeMode, DecodeOptions, DecodedImage, ImageFormat};

/// An 8-bit RGB image, rows top to bottom, pixels interleaved `RGBRGB...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbPixels {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height * 3` bytes.
    pub data: Vec<u8>,
}

impl RgbPixels {
    /// The `[r, g, b]` at column `x`, row `y`.
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }
}
