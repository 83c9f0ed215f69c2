//! The library's two answers: `classify` (photo to ranked tags) and `read_digit` (picture to
//! digit). Both run decode -> preprocess -> inference -> post-processing and time each stage.

use std::time::Instant;

use serde::Serialize;

use crate::digits::{self, DigitMode, DigitPath};
use crate::error::{Error, Result};
use crate::image::{self, DecodeOptions, ImageFormat};
use crate::models::{Head, Model, ModelName, Models, Weights};

/// The most tags an answer carries.
pub const MAX_TOP_K: usize = 5;

/// Options of [`classify`].
#[derive(Debug, Clone, Copy)]
pub struct ClassifyOptions {
    /// How many tags at most (1..=5).
    pub top_k: usize,
    /// Tags below this confidence are left out (0..=1).
    pub min_confidence: f64,
    /// Decoding mode and pixel limit.
    pub decode: DecodeOptions,
}

impl Default for ClassifyOptions {
    fn default() -> Self {
        ClassifyOptions {
            top_k: MAX_TOP_K,
            min_confidence: 0.0,
            decode: DecodeOptions::default(),
        }
    }
}

impl ClassifyOptions {
    /// Checks the ranges, naming the offending parameter.
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_TOP_K).contains(&self.top_k) {
            return Err(Error::bad_parameter(
                "top_k",
                format!("{} is not in 1..={MAX_TOP_K}", self.top_k),
            ));
        }
        if !(0.0..=1.0).contains(&self.min_confidence) {
            return Err(Error::bad_parameter(
                "min_confidence",
                format!("{} is not in 0..=1", self.min_confidence),
            ));
        }
        Ok(())
    }
}

/// One ranked category.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tag {
    /// Human-readable ImageNet category.
    pub label: String,
    /// Index in the model's 1000 outputs (torchvision order).
    pub class_id: usize,
    /// Softmax probability.
    pub confidence: f64,
}

/// What the client sent, as decoded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageInfo {
    /// Upright width in pixels.
    pub width: usize,
    /// Upright height in pixels.
    pub height: usize,
    /// Container format.
    pub format: &'static str,
}

/// Milliseconds spent in each stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Timing {
    /// Decoding the image bytes.
    pub decode: f64,
    /// Resizing, cropping, normalising.
    pub preprocess: f64,
    /// Running the network.
    pub inference: f64,
}

/// The answer of [`classify`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Classification {
    /// The model that answered.
    pub model: ModelName,
    /// Whether its weights are official.
    pub weights: Weights,
    /// At most `top_k` tags, by descending confidence (ties: lower class id first).
    pub tags: Vec<Tag>,
    /// The decoded image.
    pub image: ImageInfo,
    /// Per-stage time.
    pub timing_ms: Timing,
    /// Present when the answer should not be trusted (stand-in weights).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// The answer of [`read_digit`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DigitReading {
    /// Always `digits`.
    pub model: ModelName,
    /// The digit scikit-learn's `predict` gives (one-vs-one votes).
    pub digit: usize,
    /// `probabilities[digit]`.
    pub confidence: f64,
    /// scikit-learn's `predict_proba`, index = digit.
    pub probabilities: [f64; digits::CLASSES],
    /// How the picture was read: `plain`, `ink`, `auto:grid` or `auto:ink`.
    pub preprocess: DigitPath,
    /// The decoded image.
    pub image: ImageInfo,
    /// Per-stage time.
    pub timing_ms: Timing,
}

/// The message carried by every answer from a model with stand-in weights.
pub fn stand_in_warning(model: ModelName) -> String {
    format!(
        "{model} carries stand-in weights (seeded random, not trained): these tags mean nothing. \
         Install the official weights (README, \"Models\") or use efficientnet_lite0."
    )
}

fn millis(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

fn timed_decode(bytes: &[u8], options: &DecodeOptions) -> Result<(image::DecodedImage, f64)> {
    let start = Instant::now();
    let decoded = image::decode(bytes, options)?;
    Ok((decoded, millis(start)))
}

fn image_info(width: usize, height: usize, format: ImageFormat) -> ImageInfo {
    ImageInfo {
        width,
        height,
        format: format.name(),
    }
}

/// Tags a photo with `model`'s ImageNet categories.
pub fn classify(
    models: &Models,
    model: ModelName,
    bytes: &[u8],
    options: &ClassifyOptions,
) -> Result<Classification> {
    options.validate()?;
    let model = models.get(model)?;
    let Head::Tags { preprocess, labels } = &model.head else {
        return Err(Error::WrongTask {
            model: model.name().to_string(),
            needed: "an ImageNet model",
        });
    };
    let (decoded, decode_ms) = timed_decode(bytes, &options.decode)?;

    let start = Instant::now();
    let tensor = preprocess.tensor(&decoded.rgb);
    let preprocess_ms = millis(start);

    let start = Instant::now();
    let logits = model.engine.run(&model.input_shape(), tensor)?;
    let inference_ms = millis(start);

    let tags = top_k(&softmax(&logits), options.top_k)
        .into_iter()
        .filter(|&(_, confidence)| confidence >= options.min_confidence)
        .map(|(class_id, confidence)| Tag {
            label: labels
                .get(class_id)
                .cloned()
                .unwrap_or_else(|| format!("class {class_id}")),
            class_id,
            confidence,
        })
        .collect();
    let warning = warn_if_stand_in(model);
    Ok(Classification {
        model: model.name(),
        weights: model.manifest.weights,
        tags,
        image: image_info(decoded.width, decoded.height, decoded.format),
        timing_ms: Timing {
            decode: decode_ms,
            preprocess: preprocess_ms,
            inference: inference_ms,
        },
        warning,
    })
}

fn warn_if_stand_in(model: &Model) -> Option<String> {
    (model.manifest.weights == Weights::StandIn).then(|| {
        let warning = stand_in_warning(model.name());
        log_stand_in_once(model.name(), &warning);
        warning
    })
}

/// Logs `warning` (a model's stand-in warning) at most once per process and model, so a batch
/// of a million files or a busy server does not repeat it per answer; every answer still
/// carries it. Returns whether this call logged it.
pub fn log_stand_in_once(model: ModelName, warning: &str) -> bool {
    use std::sync::atomic::{AtomicBool, Ordering};
    static LOGGED: [AtomicBool; ModelName::ALL.len()] =
        [const { AtomicBool::new(false) }; ModelName::ALL.len()];
    let index = ModelName::ALL.iter().position(|&m| m == model).unwrap_or(0);
    let first = !LOGGED[index].swap(true, Ordering::Relaxed);
    if first {
        log::warn!("{warning}");
    }
    first
}

/// Reads the hand-drawn digit in a picture.
pub fn read_digit(
    models: &Models,
    bytes: &[u8],
    mode: DigitMode,
    decode_options: &DecodeOptions,
) -> Result<DigitReading> {
    let model = models.get(ModelName::Digits)?;
    let Head::Digits { platt } = &model.head else {
        return Err(Error::WrongTask {
            model: model.name().to_string(),
            needed: "the digits model",
        });
    };
    let (decoded, decode_ms) = timed_decode(bytes, decode_options)?;

    let start = Instant::now();
    let (features, path) = digits::read(&decoded.rgb, mode);
    let preprocess_ms = millis(start);

    let start = Instant::now();
    let decision = model.engine.run(&model.input_shape(), features.to_vec())?;
    let inference_ms = millis(start);
    if decision.len() != digits::PAIRS {
        return Err(Error::Internal(format!(
            "digits model returned {} values, not {}",
            decision.len(),
            digits::PAIRS
        )));
    }
    let digit = digits::vote(&decision);
    let probabilities = digits::probabilities(&decision, platt);
    Ok(DigitReading {
        model: ModelName::Digits,
        digit,
        confidence: probabilities[digit],
        probabilities,
        preprocess: path,
        image: image_info(decoded.width, decoded.height, decoded.format),
        timing_ms: Timing {
            decode: decode_ms,
            preprocess: preprocess_ms,
            inference: inference_ms,
        },
    })
}

/// Softmax in f64 (the reference computes it in float64 from float32 logits).
pub fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exps: Vec<f64> = logits.iter().map(|&l| (f64::from(l) - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The `k` largest probabilities as `(class_id, probability)`, descending; ties go to the
/// lower class id.
pub fn top_k(probabilities: &[f64], k: usize) -> Vec<(usize, f64)> {
    let mut ranked: Vec<(usize, f64)> = probabilities.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(k);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_is_stable_and_sums_to_one() {
        let p = softmax(&[1000.0, 1000.0, -1000.0]);
        assert!((p[0] - 0.5).abs() < 1e-12 && (p[1] - 0.5).abs() < 1e-12 && p[2] < 1e-300);
    }

    #[test]
    fn top_k_breaks_ties_by_lower_class_id() {
        let ranked = top_k(&[0.1, 0.3, 0.3, 0.05, 0.25], 3);
        assert_eq!(ranked, vec![(1, 0.3), (2, 0.3), (4, 0.25)]);
    }

    #[test]
    fn options_are_range_checked() {
        let bad_k = ClassifyOptions {
            top_k: 6,
            ..Default::default()
        };
        assert_eq!(bad_k.validate().unwrap_err().code(), "bad_parameter");
        let bad_conf = ClassifyOptions {
            min_confidence: 1.5,
            ..Default::default()
        };
        assert!(bad_conf
            .validate()
            .unwrap_err()
            .to_string()
            .contains("min_confidence"));
        assert!(ClassifyOptions::default().validate().is_ok());
    }
}
