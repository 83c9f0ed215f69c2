//! Image bytes to upright 8-bit RGB pixels, exactly as the Python reference pipeline sees them.
//!
//! The reference is Pillow: `Image.open`, optionally `draft('RGB', (256, 256))` for JPEG,
//! `ImageOps.exif_transpose` ([`super::exif`]), then `convert('RGB')`; images with transparency
//! are composited on white (`(c*a + 255*(255-a) + 127) / 255`), because a transparent background
//! means "no content" to a person while Pillow's plain `convert('RGB')` would expose whatever
//! colour the encoder left under alpha 0. JPEG goes through libjpeg-turbo, the library Pillow
//! links.

use std::io::Cursor;

use super::exif::{exif_orientation, orient};
use super::RgbPixels;
use crate::error::{Error, Result};

/// The container formats we decode, recognised by their magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// JPEG (baseline, progressive, grayscale, CMYK), decoded by libjpeg-turbo.
    Jpeg,
    /// PNG (8/16-bit, palette, alpha).
    Png,
    /// GIF (first frame).
    Gif,
    /// Windows BMP.
    Bmp,
    /// TIFF.
    Tiff,
    /// WebP (lossy and lossless).
    WebP,
}

impl ImageFormat {
    /// Lower-case name used in API responses and logs.
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpeg",
            ImageFormat::Png => "png",
            ImageFormat::Gif => "gif",
            ImageFormat::Bmp => "bmp",
            ImageFormat::Tiff => "tiff",
            ImageFormat::WebP => "webp",
        }
    }

    /// Recognises a format from the first bytes of a file; `None` if it is none of ours.
    pub fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
        let starts = |magic: &[u8]| bytes.starts_with(magic);
        if starts(&[0xFF, 0xD8, 0xFF]) {
            Some(ImageFormat::Jpeg)
        } else if starts(b"\x89PNG\r\n\x1a\n") {
            Some(ImageFormat::Png)
        } else if starts(b"GIF87a") || starts(b"GIF89a") {
            Some(ImageFormat::Gif)
        } else if starts(b"BM") && bytes.len() >= 26 {
            Some(ImageFormat::Bmp)
        } else if starts(b"II*\0") || starts(b"MM\0*") {
            Some(ImageFormat::Tiff)
        } else if bytes.len() >= 12 && starts(b"RIFF") && &bytes[8..12] == b"WEBP" {
            Some(ImageFormat::WebP)
        } else {
            None
        }
    }
}

/// How much of a JPEG to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecodeMode {
    /// Full-resolution decode: the torchvision reference pipeline (default).
    #[default]
    Exact,
    /// JPEG only: libjpeg-turbo's DCT-domain downscale by 1/2, 1/4 or 1/8 so the image stays at
    /// least 256 px on each side, like Pillow's `Image.draft('RGB', (256, 256))`. Much faster
    /// on phone photos; probabilities move by up to a few hundredths.
    Fast,
}

impl DecodeMode {
    /// The name used on the command line and in query strings.
    pub fn name(self) -> &'static str {
        match self {
            DecodeMode::Exact => "exact",
            DecodeMode::Fast => "fast",
        }
    }
}

impl std::str::FromStr for DecodeMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "exact" => Ok(DecodeMode::Exact),
            "fast" => Ok(DecodeMode::Fast),
            _ => Err(Error::bad_parameter(
                "decode",
                format!("`{s}` is not one of exact, fast"),
            )),
        }
    }
}

/// Decoding options.
#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions {
    /// Exact or fast (reduced DCT scale) JPEG decoding.
    pub mode: DecodeMode,
    /// Images whose header announces more pixels are refused before any pixel is decoded.
    pub max_pixels: u64,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            mode: DecodeMode::Exact,
            max_pixels: 50_000_000,
        }
    }
}

/// A decoded image and what the client should know about it.
#[derive(Debug, Clone)]
pub struct DecodedImage {
    /// Upright RGB pixels (possibly reduced in `fast` mode).
    pub rgb: RgbPixels,
    /// The container format.
    pub format: ImageFormat,
    /// Full-resolution upright width.
    pub width: usize,
    /// Full-resolution upright height.
    pub height: usize,
}

/// Decodes `bytes` into upright RGB pixels, refusing oversized images from their header.
pub fn decode(bytes: &[u8], options: &DecodeOptions) -> Result<DecodedImage> {
    if bytes.is_empty() {
        return Err(Error::EmptyImage);
    }
    let format =
        ImageFormat::sniff(bytes).ok_or_else(|| Error::UnsupportedFormat(describe(bytes)))?;
    let (rgb, (full_width, full_height)) = match format {
        ImageFormat::Jpeg => decode_jpeg(bytes, options)?,
        _ => {
            let rgb = decode_other(bytes, format, options.max_pixels)?;
            let size = (rgb.width, rgb.height);
            (rgb, size)
        }
    };
    let orientation = exif_orientation(bytes);
    let rgb = orient(rgb, orientation);
    let (width, height) = if orientation >= 5 {
        (full_height, full_width)
    } else {
        (full_width, full_height)
    };
    Ok(DecodedImage {
        rgb,
        format,
        width,
        height,
    })
}

/// A short description of unrecognised bytes, for the error message.
fn describe(bytes: &[u8]) -> String {
    let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let text = bytes
        .iter()
        .take(64)
        .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
    if text {
        format!("looks like text, starts with {}", head.join(" "))
    } else {
        format!("starts with bytes {}", head.join(" "))
    }
}

fn undecodable(e: impl std::fmt::Display) -> Error {
    Error::Undecodable(e.to_string())
}

fn check_pixels(width: u64, height: u64, limit: u64) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(Error::Undecodable(format!(
            "the header announces an empty {width}x{height} image"
        )));
    }
    if width.saturating_mul(height) > limit {
        return Err(Error::ImageTooLarge {
            width,
            height,
            limit,
        });
    }
    Ok(())
}

/// Pillow's `draft('RGB', (256, 256))` scale: the largest of 1/8, 1/4, 1/2 that keeps both
/// sides at least 256 px.
pub fn draft_scale(width: usize, height: usize) -> usize {
    let fits = (width / 256).min(height / 256);
    [8, 4, 2].into_iter().find(|&s| fits >= s).unwrap_or(1)
}

/// Decodes a JPEG; also returns its full-resolution size, which `fast` mode does not decode.
fn decode_jpeg(bytes: &[u8], options: &DecodeOptions) -> Result<(RgbPixels, (usize, usize))> {
    let mut decompressor =
        turbojpeg::Decompressor::new().map_err(|e| Error::Internal(e.to_string()))?;
    let header = decompressor.read_header(bytes).map_err(undecodable)?;
    check_pixels(
        header.width as u64,
        header.height as u64,
        options.max_pixels,
    )?;
    let scale = match options.mode {
        DecodeMode::Exact => 1,
        DecodeMode::Fast => draft_scale(header.width, header.height),
    };
    let factor = turbojpeg::ScalingFactor::new(1, scale);
    decompressor
        .set_scaling_factor(factor)
        .map_err(undecodable)?;
    let full_size = (header.width, header.height);
    let header = header.scaled(factor);
    let (width, height) = (header.width, header.height);
    let (format, channels) = match header.colorspace {
        turbojpeg::Colorspace::Gray => (turbojpeg::PixelFormat::GRAY, 1),
        turbojpeg::Colorspace::CMYK | turbojpeg::Colorspace::YCCK => {
            (turbojpeg::PixelFormat::CMYK, 4)
        }
        _ => (turbojpeg::PixelFormat::RGB, 3),
    };
    let mut pixels = vec![0u8; width * height * channels];
    let image = turbojpeg::Image {
        pixels: &mut pixels[..],
        width,
        pitch: width * channels,
        height,
        format,
    };
    decompressor.decompress(bytes, image).map_err(undecodable)?;
    let data = match channels {
        1 => pixels.iter().flat_map(|&v| [v, v, v]).collect(),
        // Pillow reads 4-channel JPEGs as Adobe-inverted CMYK ("CMYK;I").
        4 => pixels
            .chunks_exact(4)
            .flat_map(|p| cmyk_to_rgb([255 - p[0], 255 - p[1], 255 - p[2], 255 - p[3]]))
            .collect(),
        _ => pixels,
    };
    Ok((
        RgbPixels {
            width,
            height,
            data,
        },
        full_size,
    ))
}

/// Pillow's `cmyk2rgb`.
fn cmyk_to_rgb([c, m, y, k]: [u8; 4]) -> [u8; 3] {
    let not_k = 255 - i32::from(k);
    let channel = |v: u8| {
        let t = i32::from(v) * not_k + 128;
        let scaled = ((t >> 8) + t) >> 8;
        (not_k - scaled).clamp(0, 255) as u8
    };
    [channel(c), channel(m), channel(y)]
}

fn decode_other(bytes: &[u8], format: ImageFormat, max_pixels: u64) -> Result<RgbPixels> {
    use ::image::ImageDecoder;
    let image_format = match format {
        ImageFormat::Png => ::image::ImageFormat::Png,
        ImageFormat::Gif => ::image::ImageFormat::Gif,
        ImageFormat::Bmp => ::image::ImageFormat::Bmp,
        ImageFormat::Tiff => ::image::ImageFormat::Tiff,
        ImageFormat::WebP => ::image::ImageFormat::WebP,
        ImageFormat::Jpeg => unreachable!("JPEG is decoded by libjpeg-turbo"),
    };
    let mut reader = ::image::ImageReader::with_format(Cursor::new(bytes), image_format);
    let mut limits = ::image::Limits::default();
    // Room for the decoded image plus a 16-bit RGBA copy; the pixel check below is the real gate.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).max(64 << 20));
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(image_error)?;
    let (width, height) = decoder.dimensions();
    check_pixels(u64::from(width), u64::from(height), max_pixels)?;
    let decoded = ::image::DynamicImage::from_decoder(decoder).map_err(image_error)?;
    Ok(to_rgb(decoded))
}

fn image_error(e: ::image::ImageError) -> Error {
    match e {
        ::image::ImageError::Limits(l) => Error::Undecodable(format!("decoder limit: {l}")),
        ::image::ImageError::Unsupported(u) => Error::UnsupportedFormat(u.to_string()),
        other => Error::Undecodable(other.to_string()),
    }
}

/// Composites one channel over white: `(c*a + 255*(255-a) + 127) / 255`.
fn over_white(c: u8, a: u8) -> u8 {
    let (c, a) = (u32::from(c), u32::from(a));
    ((c * a + 255 * (255 - a) + 127) / 255) as u8
}

/// Pillow's conversions to RGB: 16-bit RGB keeps the high byte (Pillow's `RGB;16B` raw mode),
/// 16-bit grayscale is clipped at 255 (Pillow's `I;16` to `RGB`), alpha goes over white.
fn to_rgb(image: ::image::DynamicImage) -> RgbPixels {
    use ::image::DynamicImage as D;
    let (width, height) = (image.width() as usize, image.height() as usize);
    let data: Vec<u8> = match image {
        D::ImageLuma8(im) => im.into_raw().into_iter().flat_map(|v| [v, v, v]).collect(),
        D::ImageLumaA8(im) => im
            .into_raw()
            .chunks_exact(2)
            .flat_map(|p| [over_white(p[0], p[1]); 3])
            .collect(),
        D::ImageRgb8(im) => im.into_raw(),
        D::ImageRgba8(im) => im
            .into_raw()
            .chunks_exact(4)
            .flat_map(|p| {
                [
                    over_white(p[0], p[3]),
                    over_white(p[1], p[3]),
                    over_white(p[2], p[3]),
                ]
            })
            .collect(),
        D::ImageLuma16(im) => im
            .into_raw()
            .into_iter()
            .flat_map(|v| [v.min(255) as u8; 3])
            .collect(),
        D::ImageLumaA16(im) => im
            .into_raw()
            .chunks_exact(2)
            .flat_map(|p| [over_white((p[0] >> 8) as u8, (p[1] >> 8) as u8); 3])
            .collect(),
        D::ImageRgb16(im) => im.into_raw().into_iter().map(|v| (v >> 8) as u8).collect(),
        D::ImageRgba16(im) => im
            .into_raw()
            .chunks_exact(4)
            .flat_map(|p| {
                let a = (p[3] >> 8) as u8;
                [0, 1, 2].map(|c| over_white((p[c] >> 8) as u8, a))
            })
            .collect(),
        other => {
            let rgba = other.to_rgba8();
            rgba.into_raw()
                .chunks_exact(4)
                .flat_map(|p| {
                    [
                        over_white(p[0], p[3]),
                        over_white(p[1], p[3]),
                        over_white(p[2], p[3]),
                    ]
                })
                .collect()
        }
    };
    RgbPixels {
        width,
        height,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_every_format_and_rejects_text() {
        assert_eq!(
            ImageFormat::sniff(&[0xFF, 0xD8, 0xFF, 0xE0]),
            Some(ImageFormat::Jpeg)
        );
        assert_eq!(
            ImageFormat::sniff(b"\x89PNG\r\n\x1a\n...."),
            Some(ImageFormat::Png)
        );
        assert_eq!(ImageFormat::sniff(b"GIF89a"), Some(ImageFormat::Gif));
        assert_eq!(ImageFormat::sniff(b"II*\0"), Some(ImageFormat::Tiff));
        assert_eq!(
            ImageFormat::sniff(b"RIFF\0\0\0\0WEBPVP8 "),
            Some(ImageFormat::WebP)
        );
        assert_eq!(ImageFormat::sniff(b"hello world"), None);
        assert!(matches!(
            decode(b"hello", &DecodeOptions::default()),
            Err(Error::UnsupportedFormat(_))
        ));
        assert_eq!(
            decode(b"", &DecodeOptions::default()).unwrap_err(),
            Error::EmptyImage
        );
    }

    #[test]
    fn draft_scale_keeps_256_pixels() {
        assert_eq!(draft_scale(451, 300), 1);
        assert_eq!(draft_scale(600, 520), 2);
        assert_eq!(draft_scale(3000, 2000), 4);
        assert_eq!(draft_scale(4032, 3024), 8);
        assert_eq!(draft_scale(100, 5000), 1);
    }

    #[test]
    fn alpha_composites_over_white() {
        assert_eq!(over_white(0, 0), 255);
        assert_eq!(over_white(10, 255), 10);
        assert_eq!(over_white(0, 128), 127);
    }

    #[test]
    fn cmyk_conversion_is_pillows() {
        assert_eq!(cmyk_to_rgb([0, 0, 0, 0]), [255, 255, 255]);
        assert_eq!(cmyk_to_rgb([255, 255, 255, 255]), [0, 0, 0]);
        assert_eq!(cmyk_to_rgb([255, 0, 0, 0]), [0, 255, 255]);
    }
}
