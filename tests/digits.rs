//! The digits model against scikit-learn, and the two preprocessing modes on an evaluation set
//! of drawn and rendered digits that is not the training data.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;
use tagger::digits::{self, DigitMode, INK_MARGIN};
use tagger::image::{decode, DecodeOptions, RgbPixels as RgbImage};
use tagger::models::Head;
use tagger::pipeline::read_digit;
use tagger::{LoadOptions, ModelName, Models};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/digits")
}

fn models() -> &'static Models {
    static MODELS: OnceLock<Models> = OnceLock::new();
    MODELS.get_or_init(|| Models::load_embedded(&LoadOptions::default()).unwrap())
}

fn sklearn_samples() -> Vec<Value> {
    let text = std::fs::read_to_string(fixtures().join("sklearn_digits.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn platt() -> &'static digits::PlattParameters {
    match &models().get(ModelName::Digits).unwrap().head {
        Head::Digits { platt } => platt,
        Head::Tags { .. } => unreachable!(),
    }
}

fn features_of(sample: &Value) -> Vec<f32> {
    sample["x"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

/// An 8x8 sample drawn as a picture: each cell a `scale` x `scale` square of grey, ink =
/// intensity (0 = white paper, 16 = black).
fn render(features: &[f32], scale: usize) -> RgbImage {
    let side = 8 * scale;
    let mut data = Vec::with_capacity(side * side * 3);
    for y in 0..side {
        for x in 0..side {
            let v = features[(y / scale) * 8 + x / scale];
            let grey = 255 - (v * 255.0 / 16.0).round() as u8;
            data.extend([grey; 3]);
        }
    }
    RgbImage {
        width: side,
        height: side,
        data,
    }
}

#[test]
fn decision_values_digits_and_probabilities_match_sklearn_on_all_1797_samples() {
    let model = models().get(ModelName::Digits).unwrap();
    let (mut max_decision, mut max_probability) = (0f64, 0f64);
    let samples = sklearn_samples();
    assert_eq!(samples.len(), 1797);
    for (i, sample) in samples.iter().enumerate() {
        let decision = model.engine.run(&[1, 64], features_of(sample)).unwrap();
        for (d, e) in decision.iter().zip(sample["decision"].as_array().unwrap()) {
            max_decision = max_decision.max((f64::from(*d) - e.as_f64().unwrap()).abs());
        }
        assert_eq!(
            digits::vote(&decision) as u64,
            sample["predict"].as_u64().unwrap(),
            "sample {i}"
        );
        let p = digits::probabilities(&decision, platt());
        for (p, e) in p.iter().zip(sample["proba"].as_array().unwrap()) {
            max_probability = max_probability.max((p - e.as_f64().unwrap()).abs());
        }
    }
    println!("max |decision - sklearn| = {max_decision:e}, max |probability - sklearn| = {max_probability:e}");
    assert!(
        max_decision <= 1e-4,
        "decision values off by {max_decision:e}"
    );
    assert!(
        max_probability <= 1e-3,
        "probabilities off by {max_probability:e}"
    );
}

#[test]
fn plain_mode_recovers_every_dataset_sample_from_its_picture() {
    for (i, sample) in sklearn_samples().iter().enumerate() {
        let expected = features_of(sample);
        let scale = 1 + i % 6; // 8x8 up to 48x48 pictures
        let picture = render(&expected, scale);
        assert_eq!(
            digits::plain(&picture).to_vec(),
            expected,
            "sample {i} at scale {scale}"
        );
    }
}

#[test]
fn read_digit_end_to_end_on_rendered_pngs_gives_sklearns_digit() {
    // Through the public API, including PNG decoding: every 7th sample to keep it quick.
    for sample in sklearn_samples().iter().step_by(7) {
        let picture = render(&features_of(sample), 4);
        let mut png = Vec::new();
        image::RgbImage::from_raw(32, 32, picture.data)
            .unwrap()
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let reading =
            read_digit(models(), &png, DigitMode::Plain, &DecodeOptions::default()).unwrap();
        assert_eq!(reading.digit as u64, sample["predict"].as_u64().unwrap());
        assert!((reading.probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-6);
    }
}

/// The evaluation set: `(true digit, decoded picture)`.
fn evaluation_set() -> Vec<(usize, RgbImage)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures().join("eval"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_str().unwrap();
            let digit = name[..1].parse().unwrap();
            let image = decode(&std::fs::read(path).unwrap(), &DecodeOptions::default())
                .unwrap()
                .rgb;
            (digit, image)
        })
        .collect()
}

fn accuracy(set: &[(usize, RgbImage)], features: impl Fn(&RgbImage) -> [f32; 64]) -> f64 {
    let model = models().get(ModelName::Digits).unwrap();
    let correct = set
        .iter()
        .filter(|(digit, image)| {
            digits::vote(
                &model
                    .engine
                    .run(&[1, 64], features(image).to_vec())
                    .unwrap(),
            ) == *digit
        })
        .count();
    correct as f64 / set.len() as f64
}

#[test]
fn default_mode_beats_plain_on_the_evaluation_set() {
    let set = evaluation_set();
    assert_eq!(set.len(), 300);
    let plain = accuracy(&set, |im| digits::features(im, DigitMode::Plain));
    let default = accuracy(&set, |im| digits::features(im, DigitMode::Default));
    println!(
        "evaluation set ({} pictures): plain {:.1}%, default {:.1}%",
        set.len(),
        plain * 100.0,
        default * 100.0
    );
    assert!(
        default > plain + 0.4,
        "default {default} should clearly beat plain {plain}"
    );
    assert!(
        default >= 0.70,
        "default mode accuracy {default} fell below 70%"
    );
}

#[test]
fn ink_margin_is_the_best_of_the_sweep() {
    let set = evaluation_set();
    let at = |margin: usize| {
        accuracy(&set, |im| {
            digits::ink_normalised(im, margin)
                .map_or_else(|| digits::plain(im), |n| digits::plain(&n))
        })
    };
    let sweep: Vec<(usize, f64)> = (0..=5).map(|m| (m, at(m))).collect();
    println!("margin sweep (margin, accuracy): {sweep:?}");
    let best = sweep.iter().map(|s| s.1).fold(0.0, f64::max);
    assert!(
        at(INK_MARGIN) >= best,
        "INK_MARGIN {INK_MARGIN} is not the best margin: {sweep:?}"
    );
}
