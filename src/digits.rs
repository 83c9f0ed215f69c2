//! Everything specific to the digits SVC: turning a picture into the 8x8 feature vector the
//! scikit-learn model was trained on, and turning its one-vs-one decision values into a digit
//! and probabilities exactly as libsvm (inside scikit-learn) does.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::image::resample::{resize, Filter};
use crate::image::RgbPixels as RgbImage;

/// Number of classes (digits 0..=9).
pub const CLASSES: usize = 10;
/// Number of one-vs-one pairs, in libsvm order (0,1), (0,2), ..., (8,9).
pub const PAIRS: usize = CLASSES * (CLASSES - 1) / 2;

/// How a picture becomes the 64 features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DigitMode {
    /// Find the ink, crop to it, redraw it black on white in a 32x32 frame the way the
    /// training bitmaps were drawn, then `plain`. Chosen because photos of hand-drawn digits
    /// rarely fill the frame (accuracy of both modes: README, "Models").
    #[default]
    Default,
    /// The original contract: shrink the whole picture to 8x8 by area averaging, then map
    /// darkness to 0..16.
    Plain,
}

impl DigitMode {
    /// The name used in query strings.
    pub fn name(self) -> &'static str {
        match self {
            DigitMode::Default => "default",
            DigitMode::Plain => "plain",
        }
    }
}

impl std::str::FromStr for DigitMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "default" => Ok(DigitMode::Default),
            "plain" => Ok(DigitMode::Plain),
            _ => Err(Error::bad_parameter(
                "preprocess",
                format!("`{s}` is not one of default, plain"),
            )),
        }
    }
}

/// Side of the bitmap the training data was drawn on (UCI optdigits: 32x32, counted in 4x4
/// blocks, which is exactly what `plain` computes on a black-and-white 32x32 picture).
const FRAME: usize = 32;
/// Rows of paper above and below the ink in `default` mode. Chosen by the evaluation in
/// `tests/digits.rs` (`ink_margin_is_the_best_of_the_sweep`).
pub const INK_MARGIN: usize = 2;
/// Ink level (0 paper .. 1 darkest ink) above which a pixel of the rescaled digit is ink.
const INK_THRESHOLD: f64 = 0.3;
/// The training bitmaps are ~30% ink (10th percentile 26%); thinner pen strokes are thickened
/// once when they cover less than this.
const MIN_INK_COVERAGE: f64 = 0.2;

/// The 64 features (row-major 8x8, each 0..=16) for `image`.
pub fn features(image: &RgbImage, mode: DigitMode) -> [f32; 64] {
    match mode {
        DigitMode::Plain => plain(image),
        DigitMode::Default => {
            ink_normalised(image, INK_MARGIN).map_or_else(|| plain(image), |im| plain(&im))
        }
    }
}

/// Darkness of one pixel in 0..=1: `sqrt(sum over channels ((255 - c) / 255)^2) / sqrt(3)`.
fn darkness(px: &[u8]) -> f64 {
    let sum: f64 = px
        .iter()
        .map(|&c| ((255.0 - f64::from(c)) / 255.0).powi(2))
        .sum();
    sum.sqrt() / 3f64.sqrt()
}

/// The seed's contract: area-average to 8x8, white is 0 and black is 16.
pub fn plain(image: &RgbImage) -> [f32; 64] {
    let small = resize(image, 8, 8, Filter::Box);
    let mut out = [0f32; 64];
    for (value, px) in out.iter_mut().zip(small.data.chunks_exact(3)) {
        *value = (16.0 * darkness(px)).round() as f32;
    }
    out
}

/// Redraws the digit in `image` the way the training data was drawn: ink found against the
/// paper, cropped, scaled to fill the 32x32 frame's height less `margin` rows top and bottom,
/// centred, made black on white, strokes thickened if thin. `None` when there is no ink.
pub fn ink_normalised(image: &RgbImage, margin: usize) -> Option<RgbImage> {
    let (w, h) = (image.width, image.height);
    let dark: Vec<f64> = image.data.chunks_exact(3).map(darkness).collect();
    // Paper is what the border shows; ink is the darkest percentile.
    let mut border: Vec<f64> = (0..w)
        .flat_map(|x| [dark[x], dark[(h - 1) * w + x]])
        .chain((0..h).flat_map(|y| [dark[y * w], dark[y * w + w - 1]]))
        .collect();
    border.sort_by(f64::total_cmp);
    let paper = border[border.len() / 2];
    let mut sorted = dark.clone();
    sorted.sort_by(f64::total_cmp);
    let ink = sorted[(sorted.len() - 1) * 99 / 100];
    if ink - paper < 0.1 {
        return None;
    }
    let level = |i: usize| ((dark[i] - paper) / (ink - paper)).clamp(0.0, 1.0);
    let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
    for y in 0..h {
        for x in 0..w {
            if level(y * w + x) > 0.5 {
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
            }
        }
    }
    // The crop as a grey picture (ink black), rescaled with Pillow's bilinear filter.
    let (crop_w, crop_h) = (x1 - x0, y1 - y0);
    let mut crop = RgbImage {
        width: crop_w,
        height: crop_h,
        data: Vec::with_capacity(crop_w * crop_h * 3),
    };
    for y in y0..y1 {
        for x in x0..x1 {
            crop.data
                .extend([(255.0 * (1.0 - level(y * w + x))).round() as u8; 3]);
        }
    }
    let out_h = FRAME - 2 * margin;
    let out_w = ((crop_w as f64 * out_h as f64 / crop_h as f64).round() as usize).clamp(1, FRAME);
    let scaled = resize(&crop, out_w, out_h, Filter::Bilinear);
    let (left, top) = ((FRAME - out_w) / 2, (FRAME - out_h) / 2);
    let mut bitmap = vec![false; FRAME * FRAME];
    for y in 0..out_h {
        for x in 0..out_w {
            bitmap[(top + y) * FRAME + left + x] =
                darkness(&scaled.data[(y * out_w + x) * 3..][..3]) > INK_THRESHOLD;
        }
    }
    if bitmap.iter().filter(|&&b| b).count() < (MIN_INK_COVERAGE * (FRAME * FRAME) as f64) as usize
    {
        bitmap = dilate(&bitmap);
    }
    let data = bitmap
        .iter()
        .flat_map(|&b| [if b { 0 } else { 255 }; 3])
        .collect();
    Some(RgbImage {
        width: FRAME,
        height: FRAME,
        data,
    })
}

/// 3x3 dilation of a `FRAME` x `FRAME` bitmap.
fn dilate(bitmap: &[bool]) -> Vec<bool> {
    let n = FRAME as isize;
    let on = |x: isize, y: isize| {
        (0..n).contains(&x) && (0..n).contains(&y) && bitmap[(y * n + x) as usize]
    };
    (0..n * n)
        .map(|i| {
            let (x, y) = (i % n, i / n);
            (-1..=1).any(|dy| (-1..=1).any(|dx| on(x + dx, y + dy)))
        })
        .collect()
}

/// Platt-scaling parameters of the shipped SVC (`probA_`, `probB_`), from its manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlattParameters {
    /// libsvm's `probA` per pair.
    pub prob_a: Vec<f64>,
    /// libsvm's `probB` per pair.
    pub prob_b: Vec<f64>,
}

/// The digit scikit-learn's `predict` gives: one-vs-one votes, ties to the lower digit.
pub fn vote(decision: &[f32]) -> usize {
    let mut votes = [0usize; CLASSES];
    for ((i, j), &d) in pairs().zip(decision) {
        votes[if d > 0.0 { i } else { j }] += 1;
    }
    // max_by_key keeps the last maximum, so search from the right-hand end reversed.
    (0..CLASSES).rev().max_by_key(|&c| votes[c]).unwrap_or(0)
}

fn pairs() -> impl Iterator<Item = (usize, usize)> {
    (0..CLASSES).flat_map(|i| (i + 1..CLASSES).map(move |j| (i, j)))
}

/// libsvm's `sigmoid_predict`.
fn sigmoid(decision: f64, a: f64, b: f64) -> f64 {
    let f = decision * a + b;
    if f >= 0.0 {
        (-f).exp() / (1.0 + (-f).exp())
    } else {
        1.0 / (1.0 + f.exp())
    }
}

/// scikit-learn's `predict_proba`: libsvm's Platt scaling per pair, then pairwise coupling
/// (`multiclass_probability` in libsvm's svm.cpp).
pub fn probabilities(decision: &[f32], platt: &PlattParameters) -> [f64; CLASSES] {
    const MIN_PROB: f64 = 1e-7;
    let k = CLASSES;
    let mut r = [[0f64; CLASSES]; CLASSES];
    for (p, (i, j)) in pairs().enumerate() {
        let prob = sigmoid(f64::from(decision[p]), platt.prob_a[p], platt.prob_b[p]);
        r[i][j] = prob.clamp(MIN_PROB, 1.0 - MIN_PROB);
        r[j][i] = 1.0 - r[i][j];
    }
    let mut q = [[0f64; CLASSES]; CLASSES];
    for t in 0..k {
        for j in 0..t {
            q[t][t] += r[j][t] * r[j][t];
            q[t][j] = q[j][t];
        }
        for j in t + 1..k {
            q[t][t] += r[j][t] * r[j][t];
            q[t][j] = -r[j][t] * r[t][j];
        }
    }
    let mut p = [1.0 / k as f64; CLASSES];
    let mut qp = [0f64; CLASSES];
    let eps = 0.005 / k as f64;
    for _ in 0..100.max(k) {
        let mut pqp = 0.0;
        for t in 0..k {
            qp[t] = (0..k).map(|j| q[t][j] * p[j]).sum();
            pqp += p[t] * qp[t];
        }
        let max_error = qp.iter().map(|&v| (v - pqp).abs()).fold(0.0, f64::max);
        if max_error < eps {
            break;
        }
        for t in 0..k {
            let diff = (-qp[t] + pqp) / q[t][t];
            p[t] += diff;
            pqp = (pqp + diff * (diff * q[t][t] + 2.0 * qp[t])) / (1.0 + diff) / (1.0 + diff);
            for j in 0..k {
                qp[j] = (qp[j] + diff * q[t][j]) / (1.0 + diff);
                p[j] /= 1.0 + diff;
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn votes_follow_libsvm_pair_order_and_ties_go_low() {
        // Every pair decided for the lower class: 0 wins all nine of its pairs.
        assert_eq!(vote(&[1.0; PAIRS]), 0);
        // Every pair decided for the higher class: 9 wins.
        assert_eq!(vote(&[-1.0; PAIRS]), 9);
    }

    #[test]
    fn probabilities_sum_to_one() {
        let platt = PlattParameters {
            prob_a: vec![-2.0; PAIRS],
            prob_b: vec![0.1; PAIRS],
        };
        let decision: Vec<f32> = (0..PAIRS).map(|p| (p as f32 * 0.37).sin()).collect();
        let p = probabilities(&decision, &platt);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(p.iter().all(|&v| v > 0.0));
    }

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
    fn blank_paper_has_no_ink() {
        let image = RgbImage {
            width: 20,
            height: 20,
            data: vec![240; 20 * 20 * 3],
        };
        assert!(ink_normalised(&image, INK_MARGIN).is_none());
        assert_eq!(features(&image, DigitMode::Default), plain(&image));
    }
}
