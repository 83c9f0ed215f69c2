//! The one error type of the library, the server and the CLI.
//!
//! Every variant knows the HTTP status and the stable machine-readable `code` a client receives,
//! so the server never has to guess how to answer and the batch CLI reports the same codes.

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
    /// No route for this path.
    NotFound(String),
    /// The route exists but not for this method; carries the allowed methods.
    MethodNotAllowed(&'static str),
    /// The request body is larger than the configured limit.
    PayloadTooLarge {
        /// The configured limit in bytes.
        limit: u64,
    },
    /// A request carries more images (or samples) than `--max-batch`.
    TooManyImages {
        /// Images in the request.
        count: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The request's content type is not one we accept for this route.
    UnsupportedMediaType(String),
    /// The request body stopped arriving before the read timeout.
    RequestTimeout {
        /// Bytes received before the client went quiet.
        received: usize,
    },
    /// The body ended before its `Content-Length`, or the connection failed while reading.
    IncompleteBody(String),
    /// A `multipart/form-data` body that cannot be parsed or has no file part.
    BadMultipart(String),
    /// The models are still loading; the client should retry shortly.
    NotReady,
    /// Too many requests are queued; the client should retry later.
    QueueFull,
    /// The server is shutting down and takes no new work.
    Draining,
    /// A bug or an engine failure: never caused by the client's input.
    Internal(String),
}

/// Shorthand used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The HTTP status this error is answered with.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::EmptyImage | Error::Undecodable(_) | Error::BadParameter { .. } => 400,
            Error::IncompleteBody(_) | Error::BadMultipart(_) => 400,
            Error::RequestTimeout { .. } => 408,
            Error::WrongTask { .. } => 400,
            Error::UnknownModel(_) | Error::NotFound(_) => 404,
            Error::MethodNotAllowed(_) => 405,
            Error::PayloadTooLarge { .. } | Error::TooManyImages { .. } => 413,
            Error::UnsupportedFormat(_) | Error::UnsupportedMediaType(_) => 415,
            Error::ImageTooLarge { .. } => 422,
            Error::NotReady | Error::QueueFull | Error::Draining => 503,
            Error::Internal(_) => 500,
        }
    }

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
            Error::NotFound(_) => "not_found",
            Error::MethodNotAllowed(_) => "method_not_allowed",
            Error::PayloadTooLarge { .. } => "payload_too_large",
            Error::TooManyImages { .. } => "too_many_images",
            Error::UnsupportedMediaType(_) => "unsupported_media_type",
            Error::RequestTimeout { .. } => "request_timeout",
            Error::IncompleteBody(_) => "incomplete_body",
            Error::BadMultipart(_) => "bad_multipart",
            Error::NotReady => "not_ready",
            Error::QueueFull => "queue_full",
            Error::Draining => "shutting_down",
            Error::Internal(_) => "internal_error",
        }
    }

    /// Whether the client should be told to retry (`Retry-After`).
    pub fn retry_later(&self) -> bool {
        matches!(self, Error::NotReady | Error::QueueFull | Error::Draining)
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
            Error::NotFound(path) => write!(f, "no route for `{path}`; see GET /openapi.json"),
            Error::MethodNotAllowed(allow) => write!(f, "method not allowed; allowed: {allow}"),
            Error::PayloadTooLarge { limit } => {
                write!(f, "the request body is over the limit of {limit} bytes")
            }
            Error::TooManyImages { count, limit } => write!(
                f,
                "the request carries {count} images; the limit is {limit} per request \
                 (--max-batch); split it into several requests"
            ),
            Error::UnsupportedMediaType(ct) => write!(
                f,
                "unsupported Content-Type `{ct}`; send the image raw (image/* or \
                 application/octet-stream) or as multipart/form-data with a file field `image`"
            ),
            Error::RequestTimeout { received } => write!(
                f,
                "the request body stopped arriving (after {received} bytes); the server waits \
                 --read-timeout-secs per read"
            ),
            Error::IncompleteBody(why) => write!(f, "incomplete request body: {why}"),
            Error::BadMultipart(why) => write!(f, "bad multipart/form-data body: {why}"),
            Error::NotReady => write!(
                f,
                "the models are still loading; retry in a moment (GET /readyz turns 200 when ready)"
            ),
            Error::QueueFull => write!(f, "the server is busy: the work queue is full"),
            Error::Draining => write!(f, "the server is shutting down"),
            Error::Internal(why) => write!(f, "internal error: {why}"),
        }
    }
}

impl std::error::Error for Error {}
