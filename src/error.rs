//! The error type of the library and the CLI (the server adds its own HTTP-only errors in
//! `server::error`).
//!
//! Every variant has a stable machine-readable `code`, which the server's answers and the batch
//! CLI's records both carry. Which HTTP status each variant gets is the server's business
//! (`server::error`): the core says what went wrong with the image or the model, nothing more.

use std::fmt;

/// Everything that can go wrong between receiving bytes and returning an answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// The request carried no image bytes at all.
    EmptyImage,
    /// The bytes are not in any format we decode (the message names what was seen).
    UnsupportedFormat(String),
    /// The bytes claim a supported format but cannot be decoded (corrupt or truncated).
    Undecodable(String),
    /// The image header announces more pixels than the configured limit; nothing was decoded.
    ImageTooLarge {
        /// Width announced by the header.
        width: u64,
        /// Height announced by the header.
        height: u64,
        /// The configured limit in pixels.
        limit: u64,
    },
    /// A query parameter or option has a value we do not accept.
    BadParameter {
        /// The parameter's name as the client spelled it.
        name: String,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// No model of that name is embedded.
    UnknownModel(String),
    /// The model exists but cannot answer this kind of request (e.g. digits asked for tags).
    WrongTask {
        /// The model asked for.
        model: String,
        /// What the route needs.
        needed: &'static str,
    },
    /// A bug or an engine failure: never caused by the client's input.
    Internal(String),
}

/// Shorthand used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A stable, machine-readable code (documented in the README and the OpenAPI document).
    pub fn code(&self) -> &'static str {
        match self {
            Error::EmptyImage => "empty_image",
            Error::UnsupportedFormat(_) => "unsupported_format",
            Error::Undecodable(_) => "undecodable_image",
            Error::ImageTooLarge { .. } => "image_too_large",
            Error::BadParameter { .. } => "bad_parameter",
            Error::UnknownModel(_) => "unknown_model",
            Error::WrongTask { .. } => "wrong_model_task",
            Error::Internal(_) => "internal_error",
        }
    }

    /// Builds a [`Error::BadParameter`].
    pub fn bad_parameter(name: &str, message: impl Into<String>) -> Error {
        Error::BadParameter {
            name: name.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::EmptyImage => write!(f, "the request contains no image bytes"),
            Error::UnsupportedFormat(what) => write!(
                f,
                "unsupported image format ({what}); send JPEG, PNG, WebP, GIF, BMP or TIFF"
            ),
            Error::Undecodable(why) => write!(f, "the image cannot be decoded: {why}"),
            Error::ImageTooLarge {
                width,
                height,
                limit,
            } => write!(
                f,
                "the image is {width}x{height} = {} pixels, over the limit of {limit} pixels",
                width * height
            ),
            Error::BadParameter { name, message } => write!(f, "parameter `{name}`: {message}"),
            Error::UnknownModel(name) => write!(
                f,
                "no model named `{name}`; the models are resnet18, efficientnet_lite0 and digits"
            ),
            Error::WrongTask { model, needed } => {
                write!(
                    f,
                    "model `{model}` cannot be used here: this route needs {needed}"
                )
            }
            Error::Internal(why) => write!(f, "internal error: {why}"),
        }
    }
}

impl std::error::Error for Error {}
