//! The `ink` path: a drawing or photo of a digit redrawn the way the training bitmaps were drawn
//! (UCI optdigits: black on white in a 32x32 frame, digit as tall as the frame, counted in 4x4
//! blocks). Steps, each measured on the tuning half of the evaluation pictures (README):
//! ink against the paper (either polarity, uneven light flattened), crop, deskew by image
//! moments, scale to the frame's height less [`MARGIN`] rows, centre by centre of mass,
//! threshold, even out the stroke width, count.

use super::picture::{darkness_map, limited, plain, sorted_at, Grey};
use crate::image::resample::{resize, Filter};
use crate::image::RgbPixels as RgbImage;

/// Side of the frame the training bitmaps were drawn in.
const FRAME: usize = 32;
/// Rows of paper above and below the digit in the frame.
pub const MARGIN: usize = 2;
/// Ink level (0 paper .. 1 ink) above which a pixel of the rescaled digit is ink.
const THRESHOLD: f64 = 0.35;
/// Mean stroke width (pixels of the frame) below which strokes are thickened once...
const MIN_STROKE: f64 = 2.2;
/// ... and above which they are thinned once.
const MAX_STROKE: f64 = 5.5;
/// Blocks per side for the paper (background) estimate.
const BLOCKS: usize = 4;
/// Share of each block's pixels assumed to be paper at least: its background is this quantile.
const PAPER_QUANTILE: f64 = 0.2;
/// The most shear deskewing applies (x per y).
const MAX_SHEAR: f64 = 0.6;

/// The 64 features of `image` read by its ink, or `plain` when it shows no ink.
pub fn features(image: &RgbImage) -> [f32; 64] {
    match ink_level(&limited(image)).and_then(|level| frame(&level)) {
        Some(bitmap) => counts(&bitmap),
        None => plain(image),
    }
}

/// Ink 0..=1 per pixel: polarity from the border (light chalk on a dark board is turned
/// around), the paper's uneven light taken out, scaled so the inkiest 1% is 1. `None` when
/// the picture has no ink to speak of.
pub fn ink_level(image: &RgbImage) -> Option<Grey> {
    let mut dark = darkness_map(image);
    let (w, h) = (dark.width, dark.height);
    let border: Vec<f64> = [0, h - 1]
        .iter()
        .flat_map(|&y| (0..w).map(move |x| (x, y)))
        .chain([0, w - 1].iter().flat_map(|&x| (0..h).map(move |y| (x, y))))
        .map(|(x, y)| dark.at(x, y))
        .collect();
    let paper = sorted_at(&border, 0.5);
    if paper - sorted_at(&dark.data, 0.01) > sorted_at(&dark.data, 0.99) - paper {
        dark.data.iter_mut().for_each(|v| *v = 1.0 - *v);
    }
    let background = background(&dark);
    let ink: Vec<f64> = dark
        .data
        .iter()
        .zip(&background)
        .map(|(d, b)| d - b)
        .collect();
    let top = sorted_at(&ink, 0.99);
    if top < 0.1 {
        return None;
    }
    Some(Grey {
        width: w,
        height: h,
        data: ink.iter().map(|v| (v / top).clamp(0.0, 1.0)).collect(),
    })
}

/// The paper's darkness at every pixel: a low quantile of each of `BLOCKS x BLOCKS` blocks,
/// interpolated bilinearly between block centres (shadows and light gradients are smooth; ink
/// rarely covers 80% of a block).
fn background(dark: &Grey) -> Vec<f64> {
    let (w, h) = (dark.width, dark.height);
    let mut blocks = [[0.0; BLOCKS]; BLOCKS];
    for (by, row) in blocks.iter_mut().enumerate() {
        for (bx, value) in row.iter_mut().enumerate() {
            let values: Vec<f64> = (by * h / BLOCKS..(by + 1) * h / BLOCKS)
                .flat_map(|y| (bx * w / BLOCKS..(bx + 1) * w / BLOCKS).map(move |x| (x, y)))
                .map(|(x, y)| dark.at(x, y))
                .collect();
            *value = if values.is_empty() {
                0.0
            } else {
                sorted_at(&values, PAPER_QUANTILE)
            };
        }
    }
    let axis = |i: usize, n: usize| {
        let f = ((i as f64 + 0.5) * BLOCKS as f64 / n as f64 - 0.5).clamp(0.0, (BLOCKS - 1) as f64);
        let k = (f as usize).min(BLOCKS - 2);
        (k, f - k as f64)
    };
    let mut out = Vec::with_capacity(w * h);
    for y in 0..h {
        let (y0, ty) = axis(y, h);
        for x in 0..w {
            let (x0, tx) = axis(x, w);
            out.push(
                blocks[y0][x0] * (1.0 - ty) * (1.0 - tx)
                    + blocks[y0][x0 + 1] * (1.0 - ty) * tx
                    + blocks[y0 + 1][x0] * ty * (1.0 - tx)
                    + blocks[y0 + 1][x0 + 1] * ty * tx,
            );
        }
    }
    out
}

/// The smallest box holding every value above `level`: `(x0, y0, x1, y1)`, ends exclusive.
fn bounding_box(grey: &Grey, level: f64) -> Option<(usize, usize, usize, usize)> {
    let (mut x0, mut y0, mut x1, mut y1) = (grey.width, grey.height, 0, 0);
    for y in 0..grey.height {
        for x in 0..grey.width {
            if grey.at(x, y) > level {
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
            }
        }
    }
    (x1 > x0).then_some((x0, y0, x1, y1))
}

fn crop(grey: &Grey, (x0, y0, x1, y1): (usize, usize, usize, usize)) -> Grey {
    Grey {
        width: x1 - x0,
        height: y1 - y0,
        data: (y0..y1)
            .flat_map(|y| (x0..x1).map(move |x| (x, y)))
            .map(|(x, y)| grey.at(x, y))
            .collect(),
    }
}

/// Rows sheared so the ink's principal axis is vertical: `x' = x - s (y - cy)` with
/// `s = mu11 / mu02` (second-order central moments), at most [`MAX_SHEAR`]; linear
/// interpolation along each row, the result widened to hold it.
fn deskewed(level: &Grey) -> Grey {
    let (w, h) = (level.width, level.height);
    let (mut m, mut sx, mut sy) = (0.0, 0.0, 0.0);
    for y in 0..h {
        for x in 0..w {
            let v = level.at(x, y);
            (m, sx, sy) = (m + v, sx + v * x as f64, sy + v * y as f64);
        }
    }
    let (cx, cy) = (sx / m, sy / m);
    let (mut mu11, mut mu02) = (0.0, 0.0);
    for y in 0..h {
        for x in 0..w {
            let v = level.at(x, y);
            let (dx, dy) = (x as f64 - cx, y as f64 - cy);
            mu11 += v * dx * dy;
            mu02 += v * dy * dy;
        }
    }
    let (mu11, mu02) = (mu11 / m, mu02 / m);
    let shear = if mu02 > 0.0 {
        (mu11 / mu02).clamp(-MAX_SHEAR, MAX_SHEAR)
    } else {
        0.0
    };
    let pad = (shear.abs() * h as f64 / 2.0).ceil() as usize + 1;
    let out_w = w + 2 * pad;
    let at = |x: i64, y: usize| {
        if (0..w as i64).contains(&x) {
            level.at(x as usize, y)
        } else {
            0.0
        }
    };
    let mut data = Vec::with_capacity(out_w * h);
    for y in 0..h {
        let shift = shear * (y as f64 - cy);
        for xo in 0..out_w {
            let src = xo as f64 - pad as f64 + shift;
            let x0 = src.floor();
            let t = src - x0;
            let x0 = x0 as i64;
            data.push(at(x0, y) * (1.0 - t) + at(x0 + 1, y) * t);
        }
    }
    Grey {
        width: out_w,
        height: h,
        data,
    }
}

/// The ink redrawn in the 32x32 frame as a bitmap (true = ink), `None` when there is none.
fn frame(level: &Grey) -> Option<Vec<bool>> {
    let cropped = crop(level, bounding_box(level, 0.5)?);
    let sheared = deskewed(&cropped);
    let peak = sheared.data.iter().copied().fold(0.0, f64::max);
    let cropped = crop(&sheared, bounding_box(&sheared, 0.5 * peak)?);
    let (cw, ch) = (cropped.width, cropped.height);
    let out_h = FRAME - 2 * MARGIN;
    let out_w = ((cw as f64 * out_h as f64 / ch as f64).round_ties_even() as usize).clamp(1, FRAME);
    // Scaled as a grey picture with Pillow's bilinear filter (the Python twin's resize).
    let picture = RgbImage {
        width: cw,
        height: ch,
        data: cropped
            .data
            .iter()
            .flat_map(|&v| [(255.0 * (1.0 - v)).round_ties_even() as u8; 3])
            .collect(),
    };
    let scaled = darkness_map(&resize(&picture, out_w, out_h, Filter::Bilinear));
    let mass: f64 = scaled.data.iter().sum();
    let cx = if mass > 0.0 {
        (0..out_h)
            .flat_map(|y| (0..out_w).map(move |x| (x, y)))
            .map(|(x, y)| scaled.at(x, y) * x as f64)
            .sum::<f64>()
            / mass
    } else {
        (out_w - 1) as f64 / 2.0
    };
    // Centre of mass on the frame's centre, horizontally (vertically the digit fills it).
    let left = ((FRAME - 1) as f64 / 2.0 - cx)
        .round_ties_even()
        .clamp(0.0, (FRAME - out_w) as f64) as usize;
    let top = (FRAME - out_h) / 2;
    let mut bitmap = vec![false; FRAME * FRAME];
    for y in 0..out_h {
        for x in 0..out_w {
            bitmap[(top + y) * FRAME + left + x] = scaled.at(x, y) > THRESHOLD;
        }
    }
    Some(even_stroke(bitmap))
}

/// Mean stroke width of a frame bitmap: ink area over half its boundary length.
fn stroke_width(bitmap: &[bool]) -> f64 {
    let at = |x: usize, y: usize| bitmap[y * FRAME + x];
    let area = bitmap.iter().filter(|&&b| b).count();
    let mut edges = 0;
    for i in 0..FRAME {
        for j in 0..FRAME - 1 {
            edges += usize::from(at(j, i) != at(j + 1, i)) + usize::from(at(i, j) != at(i, j + 1));
        }
        edges += [at(0, i), at(FRAME - 1, i), at(i, 0), at(i, FRAME - 1)]
            .iter()
            .filter(|&&b| b)
            .count();
    }
    2.0 * area as f64 / edges.max(1) as f64
}

/// Thin strokes thickened once (3x3 dilation), thick ones thinned once (cross erosion) when
/// that keeps at least half the ink: the training bitmaps' strokes are a few pixels wide.
fn even_stroke(bitmap: Vec<bool>) -> Vec<bool> {
    let width = stroke_width(&bitmap);
    let n = FRAME as isize;
    let on = |b: &[bool], x: isize, y: isize| {
        (0..n).contains(&x) && (0..n).contains(&y) && b[(y * n + x) as usize]
    };
    if width < MIN_STROKE {
        (0..n * n)
            .map(|i| {
                let (x, y) = (i % n, i / n);
                (-1..=1).any(|dy| (-1..=1).any(|dx| on(&bitmap, x + dx, y + dy)))
            })
            .collect()
    } else if width > MAX_STROKE {
        let eroded: Vec<bool> = (0..n * n)
            .map(|i| {
                let (x, y) = (i % n, i / n);
                [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)]
                    .iter()
                    .all(|&(dx, dy)| on(&bitmap, x + dx, y + dy))
            })
            .collect();
        let count = |b: &[bool]| b.iter().filter(|&&v| v).count();
        if 2 * count(&eroded) >= count(&bitmap) {
            eroded
        } else {
            bitmap
        }
    } else {
        bitmap
    }
}

/// Ink pixels per 4x4 block of the frame: the 64 features.
fn counts(bitmap: &[bool]) -> [f32; 64] {
    let mut out = [0f32; 64];
    for (i, &b) in bitmap.iter().enumerate() {
        let (x, y) = (i % FRAME, i / FRAME);
        out[(y / 4) * 8 + x / 4] += f32::from(u8::from(b));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_paper_has_no_ink_and_reads_plain() {
        let image = RgbImage {
            width: 20,
            height: 20,
            data: vec![240; 20 * 20 * 3],
        };
        assert!(ink_level(&image).is_none());
        assert_eq!(features(&image), plain(&image));
    }

    #[test]
    fn a_bar_is_redrawn_as_tall_as_the_frame_and_centred() {
        // A black vertical bar, 6 px wide, on white: 4 blocks of ink per row, in the middle.
        let (w, h) = (40, 60);
        let mut data = vec![255u8; w * h * 3];
        for y in 10..50 {
            for x in 17..23 {
                data[(y * w + x) * 3..][..3].fill(0);
            }
        }
        let f = features(&RgbImage {
            width: w,
            height: h,
            data,
        });
        for row in f.chunks(8) {
            assert!(row.iter().sum::<f32>() > 0.0, "{f:?}");
            assert_eq!(row[0] + row[7], 0.0, "{f:?}");
        }
    }

    #[test]
    fn stroke_width_of_a_solid_bar() {
        let mut b = vec![false; FRAME * FRAME];
        for y in 4..28 {
            for x in 14..18 {
                b[y * FRAME + x] = true;
            }
        }
        // 4 x 24: area 96, boundary 56 -> 2 * 96 / 56 = w L / (w + L), near 4 for long strokes.
        let w = stroke_width(&b);
        assert!((w - 96.0 / 28.0).abs() < 1e-12, "{w}");
    }
}
