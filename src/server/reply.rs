//! Answers and errors as the client receives them.
//!
//! Every error body is `{"error": {"code": "...", "message": "..."}}` with the status and code
//! of its [`ServerError`]. Nothing here knows the HTTP library: [`super::dispatch`] writes a
//! `Reply` out.

use serde::Serialize;
use serde_json::json;

use super::error::ServerError;
use crate::error::Error;
use crate::models::ModelName;
use crate::pipeline::Timing;

/// A response about to be written.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: Vec<u8>,
    /// `Allow` (405).
    pub(crate) allow: Option<&'static str>,
    /// Send `Retry-After: 1` (503).
    pub(crate) retry_after: bool,
    /// Per-stage timings of an inference, for the metrics.
    pub(crate) stages: Option<(ModelName, Timing)>,
    /// Route-specific headers (`Inference-Header-Content-Length`, `Content-Security-Policy`).
    pub(crate) headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub(crate) fn text(status: u16, content_type: &'static str, body: Vec<u8>) -> Reply {
        Reply {
            status,
            content_type,
            body,
            allow: None,
            retry_after: false,
            stages: None,
            headers: Vec::new(),
        }
    }

    pub(crate) fn raw_json(status: u16, body: Vec<u8>) -> Reply {
        Reply::text(status, "application/json", body)
    }

    pub(crate) fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Reply {
        match serde_json::to_vec(value) {
            Ok(body) => Reply::raw_json(status, body),
            Err(e) => error_reply(&Error::Internal(format!("serialising the answer: {e}")).into()),
        }
    }

    pub(crate) fn with_stages(mut self, model: ModelName, timing: Timing) -> Reply {
        self.stages = Some((model, timing));
        self
    }

    pub(crate) fn with_header(mut self, name: &'static str, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }

    pub(crate) fn retry_after(mut self) -> Reply {
        self.retry_after = true;
        self
    }
}

/// The answer to an error in the shape of the route's protocol: `/v2` (Open Inference
/// Protocol) errors are `{"error": "..."}`, every other route's as [`error_reply`].
pub(crate) fn error_reply_for(target: &str, error: &ServerError) -> Reply {
    if target == "/v2" || target.starts_with("/v2/") || target.starts_with("/v2?") {
        super::v2::error_reply(error)
    } else {
        error_reply(error)
    }
}

/// The answer to an error: `{"error": {"code", "message"}}` with its status, `Allow` for 405
/// and `Retry-After` when retrying helps.
pub(crate) fn error_reply(error: &ServerError) -> Reply {
    let body = json!({ "error": { "code": error.code(), "message": error.to_string() } });
    Reply {
        allow: error.allow(),
        retry_after: error.retry_later(),
        ..Reply::json(error.http_status(), &body)
    }
}
