//! `tagger bench`: per-stage medians for every model, on a 451x300 photo and a 12 MP one, and
//! the time to load and optimise each model. Figures, not pass/fail: the README quotes them.

use std::time::Instant;

use serde::Serialize;

use crate::digits::{self, DigitMode};
use crate::engine::{Engine, EngineOptions, TractEngine};
use crate::error::{Error, Result};
use crate::image::resample::{resize, Filter};
use crate::image::{decode, DecodeMode, DecodeOptions, RgbPixels};
use crate::models::{embedded_onnx, load_one, Head, LoadOptions, ModelName};

/// The 451x300 photo every figure in the README uses (scikit-image's `chelsea`).
const CAT_JPEG: &[u8] = include_bytes!("../examples/images/cat.jpg");
/// A hand-drawn digit from the evaluation set.
const DIGIT_PNG: &[u8] = include_bytes!("../examples/images/digit.png");

/// What to time.
#[derive(Debug, Clone)]
pub struct Config {
    /// Runs per measurement.
    pub runs: usize,
    /// A JPEG to time besides the built-in ones: (label, bytes).
    pub extra_photo: Option<(String, Vec<u8>)>,
    /// JSON instead of a table.
    pub json: bool,
}

/// One measured figure.
#[derive(Debug, Serialize)]
pub struct Figure {
    /// What was timed.
    pub what: String,
    /// Median milliseconds.
    pub median_ms: f64,
    /// Fastest run.
    pub min_ms: f64,
    /// Slowest run.
    pub max_ms: f64,
    /// Runs.
    pub runs: usize,
}

fn time(what: impl Into<String>, runs: usize, mut f: impl FnMut()) -> Figure {
    f(); // warm-up: first-touch allocations, lazy initialisation
    let mut samples: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    Figure {
        what: what.into(),
        median_ms: samples[samples.len() / 2],
        min_ms: samples[0],
        max_ms: samples[samples.len() - 1],
        runs: samples.len(),
    }
}

/// A 4000x3000 JPEG (q90) made from the cat photo: stands in for a phone photo.
fn phone_photo() -> Result<Vec<u8>> {
    let cat = decode(CAT_JPEG, &DecodeOptions::default())?.rgb;
    let big = resize(&cat, 4000, 3000, Filter::Bilinear);
    let image = turbojpeg::Image {
        pixels: &big.data[..],
        width: big.width,
        pitch: big.width * 3,
        height: big.height,
        format: turbojpeg::PixelFormat::RGB,
    };
    turbojpeg::compress(image, 90, turbojpeg::Subsamp::Sub2x2)
        .map(|buf| buf.to_vec())
        .map_err(|e| Error::Internal(format!("encoding the 12 MP test photo: {e}")))
}

/// Runs the benchmark and prints the figures.
pub fn run(config: &Config) -> Result<()> {
    let runs = config.runs;
    let mut photos = vec![
        ("451x300".to_string(), CAT_JPEG.to_vec()),
        ("12MP".to_string(), phone_photo()?),
    ];
    photos.extend(config.extra_photo.clone());
    let mut figures = Vec::new();
    // TAGGER_ENGINE_REWRITE=0 benchmarks tract's own graph, as it does for the server.
    let rewrite = LoadOptions::default().engine_rewrite;
    let load = |onnx: &[u8], shape: &[usize], threads: usize| {
        TractEngine::load_with(
            onnx,
            shape,
            &EngineOptions {
                threads,
                rewrite,
                ..EngineOptions::default()
            },
        )
    };

    for name in ModelName::ALL {
        let start = Instant::now();
        let model = load_one(
            name,
            &EngineOptions {
                threads: 1,
                rewrite,
                ..EngineOptions::default()
            },
        )?;
        figures.push(Figure {
            what: format!("{name}: load + optimise"),
            median_ms: start.elapsed().as_secs_f64() * 1e3,
            min_ms: f64::NAN,
            max_ms: f64::NAN,
            runs: 1,
        });
        let (engine, shape) = (&model.engine, model.input_shape());
        let onnx = embedded_onnx(&model.manifest)?;

        match &model.head {
            Head::Tags { preprocess, .. } => {
                for (label, bytes) in &photos {
                    for mode in [DecodeMode::Exact, DecodeMode::Fast] {
                        let options = DecodeOptions {
                            mode,
                            ..Default::default()
                        };
                        let rgb = decode(bytes, &options)?.rgb;
                        if name == ModelName::Resnet18 {
                            // Decoding does not depend on the model: time it once.
                            figures.push(time(
                                format!("decode {label} {}", mode.name()),
                                runs,
                                || {
                                    decode(bytes, &options).unwrap();
                                },
                            ));
                        }
                        figures.push(time(
                            format!("{name}: preprocess {label} {}", mode.name()),
                            runs,
                            || {
                                preprocess.tensor(&rgb);
                            },
                        ));
                    }
                }
                let tensor = preprocess.tensor(&decode(CAT_JPEG, &DecodeOptions::default())?.rgb);
                figures.push(time(
                    format!("{name}: inference batch 1, 1 thread"),
                    runs,
                    || {
                        engine.run(&shape, tensor.clone()).unwrap();
                    },
                ));
                let two = load(onnx, &shape, 2)?;
                figures.push(time(
                    format!("{name}: inference batch 1, 2 threads"),
                    runs,
                    || {
                        two.run(&shape, tensor.clone()).unwrap();
                    },
                ));
                if name == ModelName::Resnet18 {
                    let batch_shape = [8, shape[1], shape[2], shape[3]];
                    let eight = load(onnx, &batch_shape, 1)?;
                    let batch: Vec<f32> = tensor
                        .iter()
                        .copied()
                        .cycle()
                        .take(tensor.len() * 8)
                        .collect();
                    let mut figure = time(
                        format!("{name}: inference batch 8, 1 thread, per image"),
                        runs.div_ceil(4),
                        || {
                            eight.run(&batch_shape, batch.clone()).unwrap();
                        },
                    );
                    for v in [
                        &mut figure.median_ms,
                        &mut figure.min_ms,
                        &mut figure.max_ms,
                    ] {
                        *v /= 8.0;
                    }
                    figures.push(figure);
                }
            }
            Head::Digits { platt } => {
                let rgb: RgbPixels = decode(DIGIT_PNG, &DecodeOptions::default())?.rgb;
                for mode in [DigitMode::Auto, DigitMode::Plain] {
                    figures.push(time(
                        format!(
                            "digits: decode + preprocess ({}) + inference + probabilities",
                            mode.name()
                        ),
                        runs,
                        || {
                            let rgb = decode(DIGIT_PNG, &DecodeOptions::default()).unwrap().rgb;
                            let decision = engine
                                .run(&shape, digits::features(&rgb, mode).to_vec())
                                .unwrap();
                            digits::probabilities(&decision, platt);
                        },
                    ));
                }
                figures.push(time("digits: inference only", runs, || {
                    engine
                        .run(&shape, digits::features(&rgb, DigitMode::Plain).to_vec())
                        .unwrap();
                }));
            }
        }
    }

    if config.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&figures).unwrap_or_default()
        );
    } else {
        println!(
            "{:<64} {:>10} {:>10} {:>10}",
            "stage", "median ms", "min ms", "max ms"
        );
        for f in &figures {
            println!(
                "{:<64} {:>10.2} {:>10.2} {:>10.2}",
                f.what, f.median_ms, f.min_ms, f.max_ms
            );
        }
    }
    Ok(())
}
