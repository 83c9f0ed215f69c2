//! The server's error enum: what only HTTP can go wrong (routing, bodies, admission, timeouts),
//! plus the library's [`crate::Error`] for everything about images and models. Each variant
//! knows its status and its stable `code`; the edge ([`super::reply::error_reply`]) turns it
//! into the JSON error body.

use std::fmt;

/// Everything a request can fail with, as the client sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ServerError {
    /// An image or model error from the library (keeps its own status and code).
    Core(crate::Error),
    /// No route for this path.
    NotFound(String),
    /// The route exists but not for this method; carries the allowed methods.
    MethodNotAllowed(&'static str),
    /// The request body is larger than the configured limit.
    PayloadTooLarge {
        /// The configured limit in bytes.
        limit: u64,
    },
    /// A request carries more images (multipart parts, v2 batch elements) than `--max-batch`.
    TooManyImages {
        /// Images in the request.
        count: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The request head is over the limit of bytes or of header fields.
    HeadTooLarge {
        /// The limit on the head's bytes.
        max_bytes: usize,
        /// The limit on header fields.
        max_fields: usize,
    },
    /// The request's content type is not one we accept for this route.
    UnsupportedMediaType(String),
    /// The whole body did not arrive within `--read-timeout-secs`.
    RequestTimeout {
        /// Bytes received before the deadline.
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
    /// A handler panicked: a bug, never the client's fault.
    Panicked(String),
}

/// The status a core error is answered with: the client's fault (4xx) for everything about the
/// image, the parameters or the model asked for; 500 only for a bug or an engine failure.
pub(crate) fn core_status(error: &crate::Error) -> u16 {
    use crate::Error;
    match error {
        Error::EmptyImage | Error::Undecodable(_) | Error::BadParameter { .. } => 400,
        Error::WrongTask { .. } => 400,
        Error::UnknownModel(_) => 404,
        Error::UnsupportedFormat(_) => 415,
        Error::ImageTooLarge { .. } => 422,
        Error::Internal(_) => 500,
    }
}

impl From<crate::Error> for ServerError {
    fn from(e: crate::Error) -> Self {
        ServerError::Core(e)
    }
}

impl ServerError {
    /// The HTTP status this error is answered with.
    pub(crate) fn http_status(&self) -> u16 {
        match self {
            ServerError::Core(e) => core_status(e),
            ServerError::IncompleteBody(_) | ServerError::BadMultipart(_) => 400,
            ServerError::NotFound(_) => 404,
            ServerError::MethodNotAllowed(_) => 405,
            ServerError::RequestTimeout { .. } => 408,
            ServerError::PayloadTooLarge { .. } | ServerError::TooManyImages { .. } => 413,
            ServerError::UnsupportedMediaType(_) => 415,
            ServerError::HeadTooLarge { .. } => 431,
            ServerError::Panicked(_) => 500,
            ServerError::NotReady | ServerError::QueueFull | ServerError::Draining => 503,
        }
    }

    /// A stable, machine-readable code (documented in the README and the OpenAPI document).
    pub(crate) fn code(&self) -> &'static str {
        match self {
            ServerError::Core(e) => e.code(),
            ServerError::NotFound(_) => "not_found",
            ServerError::MethodNotAllowed(_) => "method_not_allowed",
            ServerError::PayloadTooLarge { .. } => "payload_too_large",
            ServerError::TooManyImages { .. } => "too_many_images",
            ServerError::UnsupportedMediaType(_) => "unsupported_media_type",
            ServerError::HeadTooLarge { .. } => "header_too_large",
            ServerError::RequestTimeout { .. } => "request_timeout",
            ServerError::IncompleteBody(_) => "incomplete_body",
            ServerError::BadMultipart(_) => "bad_multipart",
            ServerError::NotReady => "not_ready",
            ServerError::QueueFull => "queue_full",
            ServerError::Draining => "shutting_down",
            ServerError::Panicked(_) => "internal_error",
        }
    }

    /// Whether the client should be told to retry (`Retry-After`).
    pub(crate) fn retry_later(&self) -> bool {
        matches!(
            self,
            ServerError::NotReady | ServerError::QueueFull | ServerError::Draining
        )
    }

    /// `Allow` for a 405.
    pub(crate) fn allow(&self) -> Option<&'static str> {
        match self {
            ServerError::MethodNotAllowed(allow) => Some(allow),
            _ => None,
        }
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Core(e) => e.fmt(f),
            ServerError::NotFound(path) => {
                write!(f, "no route for `{path}`; see GET /openapi.json")
            }
            ServerError::MethodNotAllowed(allow) => {
                write!(f, "method not allowed; allowed: {allow}")
            }
            ServerError::PayloadTooLarge { limit } => {
                write!(f, "the request body is over the limit of {limit} bytes")
            }
            ServerError::TooManyImages { count, limit } => write!(
                f,
                "the request carries {count} images; the limit is {limit} per request \
                 (--max-batch); split it into several requests"
            ),
            ServerError::HeadTooLarge {
                max_bytes,
                max_fields,
            } => write!(
                f,
                "the request head is over the limit of {max_bytes} bytes or {max_fields} header \
                 fields"
            ),
            ServerError::UnsupportedMediaType(ct) => write!(
                f,
                "unsupported Content-Type `{ct}`; send the image raw (image/* or \
                 application/octet-stream) or as multipart/form-data with a file field `image`"
            ),
            ServerError::RequestTimeout { received } => write!(
                f,
                "the request body did not arrive in time ({received} bytes received); the \
                 server waits --read-timeout-secs for a whole body"
            ),
            ServerError::IncompleteBody(why) => write!(f, "incomplete request body: {why}"),
            ServerError::BadMultipart(why) => write!(f, "bad multipart/form-data body: {why}"),
            ServerError::NotReady => write!(
                f,
                "the models are still loading; retry in a moment (GET /readyz turns 200 when ready)"
            ),
            ServerError::QueueFull => write!(f, "the server is busy: the work queue is full"),
            ServerError::Draining => write!(f, "the server is shutting down"),
            ServerError::Panicked(why) => write!(f, "internal error: {why}"),
        }
    }
}

impl std::error::Error for ServerError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes() {
        let cases = [
            (ServerError::NotFound("/x".into()), 404, "not_found"),
            (
                ServerError::MethodNotAllowed("POST"),
                405,
                "method_not_allowed",
            ),
            (
                ServerError::RequestTimeout { received: 3 },
                408,
                "request_timeout",
            ),
            (
                ServerError::PayloadTooLarge { limit: 1 },
                413,
                "payload_too_large",
            ),
            (
                ServerError::TooManyImages { count: 3, limit: 2 },
                413,
                "too_many_images",
            ),
            (
                ServerError::HeadTooLarge {
                    max_bytes: 1,
                    max_fields: 1,
                },
                431,
                "header_too_large",
            ),
            (ServerError::QueueFull, 503, "queue_full"),
            (ServerError::Draining, 503, "shutting_down"),
            (
                ServerError::Core(crate::Error::EmptyImage),
                400,
                "empty_image",
            ),
        ];
        for (e, status, code) in cases {
            assert_eq!((e.http_status(), e.code()), (status, code), "{e}");
        }
        assert!(ServerError::NotReady.retry_later());
        assert_eq!(ServerError::MethodNotAllowed("POST").allow(), Some("POST"));
    }
}
