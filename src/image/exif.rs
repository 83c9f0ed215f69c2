//! The EXIF Orientation tag and the transposes it asks for (Pillow's `ImageOps.exif_transpose`):
//! a phone photo taken sideways is tagged, not rotated, and a person expects it upright.

use std::io::Cursor;

use super::RgbPixels;

/// The EXIF Orientation tag (1..=8), or 1 when absent or unreadable.
pub(super) fn exif_orientation(bytes: &[u8]) -> u32 {
    let Ok(exif) = exif::Reader::new().read_from_container(&mut Cursor::new(bytes)) else {
        return 1;
    };
    exif.get_field(exif::Tag::Orientation, exif::In::PRIMARY)
        .and_then(|field| field.value.get_uint(0))
        .filter(|o| (1..=8).contains(o))
        .unwrap_or(1)
}

/// Applies an EXIF orientation like `ImageOps.exif_transpose`.
pub(super) fn orient(image: RgbPixels, orientation: u32) -> RgbPixels {
    let (w, h) = (image.width, image.height);
    // Each arm maps an output (x, y) to the input pixel it shows.
    let source: Box<dyn Fn(usize, usize) -> (usize, usize)> = match orientation {
        2 => Box::new(|x, y| (w - 1 - x, y)),
        3 => Box::new(|x, y| (w - 1 - x, h - 1 - y)),
        4 => Box::new(|x, y| (x, h - 1 - y)),
        5 => Box::new(|x, y| (y, x)),
        6 => Box::new(|x, y| (y, h - 1 - x)),
        7 => Box::new(|x, y| (w - 1 - y, h - 1 - x)),
        8 => Box::new(|x, y| (w - 1 - y, x)),
        _ => return image,
    };
    let (out_w, out_h) = if orientation >= 5 { (h, w) } else { (w, h) };
    let mut data = Vec::with_capacity(image.data.len());
    for y in 0..out_h {
        for x in 0..out_w {
            let (sx, sy) = source(x, y);
            data.extend_from_slice(&image.pixel(sx, sy));
        }
    }
    RgbPixels {
        width: out_w,
        height: out_h,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(width: usize, height: usize) -> RgbPixels {
        let data = (0..width * height).flat_map(|i| [i as u8, 0, 0]).collect();
        RgbPixels {
            width,
            height,
            data,
        }
    }

    #[test]
    fn orientations_match_pillow_transposes() {
        // 3 wide, 2 high: values 0 1 2 / 3 4 5.
        let image = numbered(3, 2);
        let red = |o| {
            orient(image.clone(), o)
                .data
                .iter()
                .step_by(3)
                .copied()
                .collect::<Vec<u8>>()
        };
        assert_eq!(red(1), [0, 1, 2, 3, 4, 5]);
        assert_eq!(red(2), [2, 1, 0, 5, 4, 3]); // FLIP_LEFT_RIGHT
        assert_eq!(red(3), [5, 4, 3, 2, 1, 0]); // ROTATE_180
        assert_eq!(red(4), [3, 4, 5, 0, 1, 2]); // FLIP_TOP_BOTTOM
        assert_eq!(red(5), [0, 3, 1, 4, 2, 5]); // TRANSPOSE
        assert_eq!(red(6), [3, 0, 4, 1, 5, 2]); // ROTATE_270 (clockwise 90)
        assert_eq!(red(7), [5, 2, 4, 1, 3, 0]); // TRANSVERSE
        assert_eq!(red(8), [2, 5, 1, 4, 0, 3]); // ROTATE_90 (counter-clockwise)
    }
}
