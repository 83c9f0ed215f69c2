//! Everything specific to the digits SVC: turning a picture into the 8x8 feature vector the
//! scikit-learn model was trained on, and its one-vs-one decision values into a digit.
//!
//! - [`picture`]: darkness, the challenge's `plain` 8x8 reduction, percentiles
//! - [`grid`]: is this picture an upscaled 8x8 grid (the challenge's own examples)? Its values
//! - [`ink`]: a drawing or photo redrawn the way the training bitmaps were drawn
//! - [`svc`]: votes and probabilities exactly as libsvm computes them
//!
//! `models/digits/preprocess.py` is the Python twin of `grid` and `ink` (the SVC is trained on
//! augmented pictures read through it); `tests/digits.rs` holds both to the same features.

pub mod grid;
pub mod ink;
pub mod picture;
pub mod svc;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::image::RgbPixels as RgbImage;

pub use picture::plain;
pub use svc::{probabilities, vote, PlattParameters};

/// Number of classes (digits 0..=9).
pub const CLASSES: usize = 10;
/// Number of one-vs-one pairs, in libsvm order (0,1), (0,2), ..., (8,9).
pub const PAIRS: usize = CLASSES * (CLASSES - 1) / 2;

/// How a picture becomes the 64 features (the `preprocess` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DigitMode {
    /// An 8x8 grid (scikit-learn's digits drawn at any size, as the challenge ships them) is
    /// read from its 8x8 values (`plain` for whole-factor upscales), anything else by its ink.
    /// Right on both kinds (README, "Models").
    #[default]
    Auto,
    /// Find the ink (either polarity, under uneven light), crop, deskew, redraw it in the 32x32
    /// frame the training bitmaps were drawn in, even out the stroke width, count 4x4 blocks.
    Ink,
    /// The challenge's contract: shrink the whole picture to 8x8 by area averaging, then map
    /// darkness to 0..16.
    Plain,
}

impl DigitMode {
    /// The name used in query strings.
    pub fn name(self) -> &'static str {
        match self {
            DigitMode::Auto => "auto",
            DigitMode::Ink => "ink",
            DigitMode::Plain => "plain",
        }
    }
}

impl std::str::FromStr for DigitMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            // `default` was the name of the default before `auto`; it still means the default.
            "auto" | "default" => Ok(DigitMode::Auto),
            "ink" => Ok(DigitMode::Ink),
            "plain" => Ok(DigitMode::Plain),
            _ => Err(Error::bad_parameter(
                "preprocess",
                format!("`{s}` is not one of auto, ink, plain"),
            )),
        }
    }
}

/// The way a picture was actually read: the mode, and for `auto` the path it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigitPath {
    /// `preprocess=plain`.
    Plain,
    /// `preprocess=ink`.
    Ink,
    /// `auto` found an 8x8 grid and read its values.
    AutoGrid,
    /// `auto` found a drawing and read its ink.
    AutoInk,
}

impl DigitPath {
    /// The name in answers (`"preprocess"`).
    pub fn name(self) -> &'static str {
        match self {
            DigitPath::Plain => "plain",
            DigitPath::Ink => "ink",
            DigitPath::AutoGrid => "auto:grid",
            DigitPath::AutoInk => "auto:ink",
        }
    }
}

impl Serialize for DigitPath {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// The 64 features (row-major 8x8, each 0..=16) for `image`, and the path that made them.
pub fn read(image: &RgbImage, mode: DigitMode) -> ([f32; 64], DigitPath) {
    match mode {
        DigitMode::Plain => (plain(image), DigitPath::Plain),
        DigitMode::Ink => (ink::features(image), DigitPath::Ink),
        DigitMode::Auto => match grid::features(image) {
            Some(features) => (features, DigitPath::AutoGrid),
            None => (ink::features(image), DigitPath::AutoInk),
        },
    }
}

/// The 64 features for `image` (see [`read`]).
pub fn features(image: &RgbImage, mode: DigitMode) -> [f32; 64] {
    read(image, mode).0
}
