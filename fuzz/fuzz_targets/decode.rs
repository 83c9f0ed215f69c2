//! Hostile image bytes through everything the server does before inference: sniffing and
//! decoding (exact and fast), the ImageNet preprocessing, and both digit feature extractions.
//! Any panic, abort or out-of-memory is a finding; errors are the expected answer.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tagger::digits::{self, DigitMode};
use tagger::image::{self, DecodeMode, DecodeOptions};
use tagger::preprocess::{ImagePreprocess, Normalize};

fuzz_target!(|data: &[u8]| {
    // The length's parity picks the decode mode, as `?decode=` would (the bytes stay whole, so
    // the fixture images work as seeds); a small pixel limit keeps every run fast, and the
    // server's limit is checked the same way.
    let bytes = data;
    let mode = if data.len() % 2 == 0 {
        DecodeMode::Exact
    } else {
        DecodeMode::Fast
    };
    let options = DecodeOptions {
        mode,
        max_pixels: 4_000_000,
    };
    let Ok(decoded) = image::decode(bytes, &options) else {
        return;
    };
    let preprocess = ImagePreprocess {
        resize: 256,
        crop: 224,
        normalize: Normalize::Tflite,
    };
    let tensor = preprocess.tensor(&decoded.rgb);
    assert_eq!(tensor.len(), 3 * 224 * 224);
    for mode in [DigitMode::Auto, DigitMode::Ink, DigitMode::Plain] {
        let features = digits::features(&decoded.rgb, mode);
        assert!(features.iter().all(|f| f.is_finite() && (0.0..=16.0).contains(f)));
    }
});
