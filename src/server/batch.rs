//! Several images in one `/v1` request: `{"results": [...]}` in the order of the parts, each
//! entry today's single-image answer or `{"error": {...}}` for that image alone.

use rayon::prelude::*;
use serde_json::{json, Value};

use super::error::ServerError;
use super::multipart::ImagePart;
use super::reply::Reply;
use super::routes::{infer_one, Work};
use crate::models::Models;

/// Runs each image side by side on the current pool (the worker pool: a batch's images share
/// the cores like separate requests would) and answers them together.
pub(crate) fn answer(
    models: &Models,
    work: &Work,
    images: &[ImagePart],
    max_batch: usize,
) -> Result<Reply, ServerError> {
    if images.len() > max_batch {
        return Err(ServerError::TooManyImages {
            count: images.len(),
            limit: max_batch,
        });
    }
    let results: Vec<Value> = images
        .par_iter()
        .map(|image| entry(infer_one(models, work, &image.bytes)))
        .collect();
    Ok(Reply::json(200, &json!({ "results": results })))
}

/// One image's entry: its answer, or its error as `{"error": {"code", "message"}}`.
fn entry(result: Result<Reply, ServerError>) -> Value {
    match result {
        Ok(reply) => serde_json::from_slice(&reply.body).unwrap_or(Value::Null),
        Err(e) => json!({ "error": { "code": e.code(), "message": e.to_string() } }),
    }
}
