//! The digits model against scikit-learn, and the preprocessing modes on the evaluation
//! pictures (tests/fixtures/digits/eval: groups, and a tuning/held-out split drawn before any
//! tuning; only the held-out half is measured here).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

mod common;

use serde_json::Value;
use tagger::digits::{self, grid, DigitMode, DigitPath};
use tagger::image::resample::{resize, Filter};
use tagger::image::{decode, DecodeOptions, RgbPixels};
use tagger::models::Head;
use tagger::pipeline::read_digit;
use tagger::{LoadOptions, ModelName, Models};

fn fixtures() -> PathBuf {
    common::fixtures::path("digits")
}

fn models() -> &'static Models {
    static MODELS: OnceLock<Models> = OnceLock::new();
    MODELS.get_or_init(|| Models::load_embedded(&LoadOptions::default()).unwrap())
}

fn sklearn_samples() -> &'static [Value] {
    static SAMPLES: OnceLock<Vec<Value>> = OnceLock::new();
    SAMPLES.get_or_init(|| {
        let text = std::fs::read_to_string(fixtures().join("sklearn_digits.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    })
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

fn predict(features: &[f32]) -> usize {
    let model = models().get(ModelName::Digits).unwrap();
    digits::vote(&model.engine.run(&[1, 64], features.to_vec()).unwrap())
}

/// An 8x8 sample drawn as a picture: each cell a `scale` x `scale` square of grey, ink =
/// intensity (0 = white paper, 16 = black).
fn render(features: &[f32], scale: usize) -> RgbPixels {
    let side = 8 * scale;
    let mut data = Vec::with_capacity(side * side * 3);
    for y in 0..side {
        for x in 0..side {
            let v = features[(y / scale) * 8 + x / scale];
            let grey = 255 - (v * 255.0 / 16.0).round() as u8;
            data.extend([grey; 3]);
        }
    }
    RgbPixels {
        width: side,
        height: side,
        data,
    }
}

/// The sample as the challenge draws it (grey = 255 - 255 x / 16) at `side` x `side`: nearest
/// (Pillow's sample points) or bilinear (Pillow's filter) upscale.
fn upscaled(features: &[f32], side: usize, bilinear: bool) -> RgbPixels {
    let small = render(features, 1);
    if bilinear {
        return resize(&small, side, side, Filter::Bilinear);
    }
    let cell = |x: usize| (2 * x + 1) * 8 / (2 * side);
    let mut data = Vec::with_capacity(side * side * 3);
    for y in 0..side {
        for x in 0..side {
            data.extend_from_slice(&small.data[(cell(y) * 8 + cell(x)) * 3..][..3]);
        }
    }
    RgbPixels {
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
    // float32 sums over the ~3.3k support vectors drift ~1e-4 from libsvm's float64 (train.py
    // measures onnxruntime the same way); the digit is checked exactly above.
    assert!(
        max_decision <= 1e-3,
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
fn read_digit_end_to_end_on_rendered_pngs_gives_sklearns_digit_and_says_its_path() {
    // Through the public API, including PNG decoding: every 7th sample to keep it quick.
    for sample in sklearn_samples().iter().step_by(7) {
        let picture = render(&features_of(sample), 4);
        let mut png = Vec::new();
        image::RgbImage::from_raw(32, 32, picture.data)
            .unwrap()
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        for (mode, path) in [(DigitMode::Plain, "plain"), (DigitMode::Auto, "auto:grid")] {
            let reading = read_digit(models(), &png, mode, &DecodeOptions::default()).unwrap();
            assert_eq!(reading.digit as u64, sample["predict"].as_u64().unwrap());
            assert_eq!(reading.preprocess.name(), path);
            assert!((reading.probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-6);
        }
    }
}

#[test]
fn preprocess_names_parse_and_default_means_auto() {
    for (name, mode) in [
        ("auto", DigitMode::Auto),
        ("default", DigitMode::Auto),
        ("ink", DigitMode::Ink),
        ("plain", DigitMode::Plain),
    ] {
        assert_eq!(name.parse::<DigitMode>().unwrap(), mode);
    }
    assert!("fancy".parse::<DigitMode>().is_err());
    assert_eq!(DigitMode::default(), DigitMode::Auto);
    assert_eq!(
        serde_json::to_value(DigitPath::AutoInk).unwrap(),
        "auto:ink"
    );
}

/// One evaluation picture and its row of index.csv.
struct Picture {
    name: String,
    digit: usize,
    group: String,
    heldout: bool,
    image: RgbPixels,
}

fn evaluation_set() -> &'static [Picture] {
    static SET: OnceLock<Vec<Picture>> = OnceLock::new();
    SET.get_or_init(|| {
        let dir = fixtures().join("eval");
        let index = std::fs::read_to_string(dir.join("index.csv")).unwrap();
        let mut lines = index.lines();
        assert_eq!(
            lines.next().unwrap(),
            "name,digit,group,split,width,height,detail"
        );
        lines
            .map(|line| {
                let f: Vec<&str> = line.splitn(7, ',').collect();
                let bytes = std::fs::read(dir.join(f[0])).unwrap();
                Picture {
                    name: f[0].to_string(),
                    digit: f[1].parse().unwrap(),
                    group: f[2].to_string(),
                    heldout: match f[3] {
                        "heldout" => true,
                        "tune" => false,
                        other => panic!("split {other}"),
                    },
                    image: decode(&bytes, &DecodeOptions::default()).unwrap().rgb,
                }
            })
            .collect()
    })
}

const MODES: [DigitMode; 3] = [DigitMode::Plain, DigitMode::Ink, DigitMode::Auto];

/// Held-out accuracy per group and mode (index of MODES).
fn heldout_accuracy() -> &'static BTreeMap<String, (usize, [f64; 3])> {
    static TABLE: OnceLock<BTreeMap<String, (usize, [f64; 3])>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut right: BTreeMap<String, (usize, [usize; 3])> = BTreeMap::new();
        for p in evaluation_set().iter().filter(|p| p.heldout) {
            let entry = right.entry(p.group.clone()).or_default();
            entry.0 += 1;
            for (k, mode) in MODES.iter().enumerate() {
                entry.1[k] += usize::from(predict(&digits::features(&p.image, *mode)) == p.digit);
            }
        }
        let table: BTreeMap<String, (usize, [f64; 3])> = right
            .into_iter()
            .map(|(g, (n, r))| (g, (n, r.map(|r| r as f64 / n as f64))))
            .collect();
        println!(
            "held-out accuracy (%):\n| group | n | plain | ink | auto |\n|---|---|---|---|---|"
        );
        for (g, (n, a)) in &table {
            println!(
                "| {g} | {n} | {:.1} | {:.1} | {:.1} |",
                a[0] * 100.0,
                a[1] * 100.0,
                a[2] * 100.0
            );
        }
        table
    })
}

/// Floors for `auto` on the held-out half: scikit-learn's pictures as the issue demands, each
/// hand-drawn group at its measured figure (README, "Models") less about 4 points (2-3
/// pictures of 60).
const FLOORS: &[(&str, f64)] = &[
    ("sklearn", 0.99),
    ("pen", 0.96),      // measured 100.0%
    ("marker", 0.96),   // 100.0%
    ("pencil", 0.92),   // 96.7%
    ("font", 0.96),     // 100.0%
    ("photo", 0.92),    // 96.7%
    ("inverted", 0.96), // 100.0%
];

/// The issue's bar for the hand-drawn groups together (measured 98.9%).
const HAND_DRAWN_FLOOR: f64 = 0.90;

#[test]
fn auto_holds_its_floor_on_every_held_out_group() {
    let table = heldout_accuracy();
    assert_eq!(table.len(), FLOORS.len(), "groups: {:?}", table.keys());
    for (group, floor) in FLOORS {
        let (n, accuracy) = table[*group];
        assert!(n >= 60, "{group}: only {n} held-out pictures");
        assert!(
            accuracy[2] >= *floor,
            "{group}: auto {:.3} < floor {floor}",
            accuracy[2]
        );
    }
}

#[test]
fn auto_reads_the_held_out_hand_drawn_pictures_together_at_the_issue_bar() {
    let (mut n, mut right) = (0usize, 0.0f64);
    for (group, (count, accuracy)) in heldout_accuracy() {
        if group != "sklearn" {
            n += count;
            right += accuracy[2] * *count as f64;
        }
    }
    assert!(n >= 360, "only {n} held-out hand-drawn pictures");
    let accuracy = right / n as f64;
    assert!(
        accuracy >= HAND_DRAWN_FLOOR,
        "hand-drawn: auto {accuracy:.3} < {HAND_DRAWN_FLOOR}"
    );
}

#[test]
fn plain_is_still_the_challenge_contract_and_reads_the_sklearn_pictures() {
    // (The contract itself: plain_mode_recovers_every_dataset_sample_from_its_picture.) Area
    // averaging blurs bilinear and odd-size upscales a little: measured 98.7%.
    let (_, accuracy) = heldout_accuracy()["sklearn"];
    assert!(
        accuracy[0] >= 0.97,
        "plain on sklearn pictures: {accuracy:?}"
    );
}

#[test]
fn grid_detection_splits_the_evaluation_pictures_by_kind() {
    // Both halves: the detector's line was set on the tuning half, but it must hold on all.
    for p in evaluation_set() {
        let residual = grid::residual(&p.image);
        assert_eq!(
            residual <= grid::MAX_RESIDUAL,
            p.group == "sklearn",
            "{} ({}): residual {residual:.3}",
            p.name,
            p.group
        );
    }
}

#[test]
fn auto_reads_sklearn_pictures_at_every_size_as_grids() {
    // Every 9th dataset sample at sizes 8..256, nearest and bilinear: taken as a grid and read
    // as scikit-learn reads the 8x8 values.
    let sizes = [8, 9, 12, 15, 16, 24, 31, 32, 48, 64, 100, 128, 200, 256];
    for bilinear in [false, true] {
        for side in sizes {
            let (mut total, mut right) = (0, 0);
            for sample in sklearn_samples().iter().step_by(9) {
                let picture = upscaled(&features_of(sample), side, bilinear);
                let (features, path) = digits::read(&picture, DigitMode::Auto);
                assert_eq!(path, DigitPath::AutoGrid, "{side} px, bilinear {bilinear}");
                total += 1;
                right +=
                    usize::from(predict(&features) as u64 == sample["target"].as_u64().unwrap());
            }
            assert!(
                right * 100 >= total * 99,
                "{side} px, bilinear {bilinear}: {right}/{total}"
            );
        }
    }
}

#[test]
fn ink_features_equal_the_python_twins() {
    // models/digits/preprocess.py trains the SVC on augmented pictures read through its `ink`;
    // the Rust path must make the same features of the same pictures.
    let text = std::fs::read_to_string(fixtures().join("python_features.json")).unwrap();
    let expected: BTreeMap<String, Vec<f32>> = serde_json::from_str(&text).unwrap();
    let (mut same, mut worst) = (0, 0f32);
    for p in evaluation_set() {
        let want = &expected[&p.name];
        let got = digits::ink::features(&p.image);
        let diff: f32 = got.iter().zip(want).map(|(a, b)| (a - b).abs()).sum();
        same += usize::from(diff == 0.0);
        worst = worst.max(diff);
    }
    let n = evaluation_set().len();
    println!("ink features equal to Python's on {same}/{n} pictures; worst L1 difference {worst}");
    assert!(same * 100 >= n * 95, "{same}/{n} equal, worst {worst}");
}
