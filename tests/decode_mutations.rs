//! Hostile images on the stable toolchain: 2000 mutated fixtures (bit flips,
//! truncations, splices, overwritten header bytes) through the path the server runs before
//! inference: decode -> ImageNet preprocessing -> digit features. None may panic; errors are
//! the expected answer. The same path is the `cargo fuzz` target in fuzz/.

use std::path::Path;

mod common;

use common::rng::Rng;

use tagger::digits::{self, DigitMode};
use tagger::image::{self, DecodeMode, DecodeOptions};
use tagger::preprocess::{ImagePreprocess, Normalize};

/// What the fuzz target does with one input (its length's parity picks the decode mode).
fn exercise(bytes: &[u8]) -> bool {
    let options = DecodeOptions {
        mode: if bytes.len().is_multiple_of(2) {
            DecodeMode::Exact
        } else {
            DecodeMode::Fast
        },
        max_pixels: 4_000_000,
    };
    let Ok(decoded) = image::decode(bytes, &options) else {
        return false;
    };
    let preprocess = ImagePreprocess {
        resize: 256,
        crop: 224,
        normalize: Normalize::Tflite,
    };
    assert_eq!(preprocess.tensor(&decoded.rgb).len(), 3 * 224 * 224);
    for mode in [DigitMode::Auto, DigitMode::Ink, DigitMode::Plain] {
        let features = digits::features(&decoded.rgb, mode);
        assert!(features.iter().all(|f| f.is_finite()));
    }
    true
}

fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(out.len());
        match rng.below(5) {
            // Bit flips, mostly in the first kilobyte where headers and tables live.
            0 | 1 => {
                let i = if rng.below(2) == 0 { at.min(1023) } else { at };
                if let Some(b) = out.get_mut(i) {
                    *b ^= 1 << rng.below(8);
                }
            }
            // Overwrite with extreme values (sizes, counts, offsets).
            2 => {
                let value = [0x00, 0xFF, 0x7F, 0x80][rng.below(4)];
                let end = (at + 1 + rng.below(4)).min(out.len());
                out[at..end].fill(value);
            }
            3 => out.truncate(at.max(1)),
            // A splice of another image.
            _ => {
                let from = rng.below(other.len());
                let end = (from + 1 + rng.below(256)).min(other.len());
                out.splice(at..at, other[from..end].iter().copied());
            }
        }
    }
    out
}

fn images() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images");
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn two_thousand_mutated_fixtures_decode_or_fail_cleanly() {
    let images = images();
    assert!(images.len() >= 20);
    let mut rng = Rng::new(0x5EED_1234_ABCD_0001);
    let (mut decoded, mut total) = (0, 0);
    for round in 0..2000 {
        let image = &images[round % images.len()];
        let other = &images[rng.below(images.len())];
        let input = mutate(&mut rng, image, other);
        decoded += usize::from(exercise(&input));
        total += 1;
    }
    // The mutations must not be so destructive that nothing decodes (or the test would only
    // exercise the format sniffer).
    assert!(decoded > total / 10, "{decoded} of {total} decoded");
}
