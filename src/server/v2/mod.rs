//! Open Inference Protocol (KServe v2) REST, beside `/v1` on the same port.
//!
//! - [`codec`]: the wire format (JSON tensors, binary tensor data, classification strings),
//!   pure functions over bytes.
//! - [`handlers`]: metadata, health and inference for the three models.
//!
//! Spec: KServe's `docs/predict-api/v2/required_api.md`; Triton's
//! `docs/protocol/extension_binary_data.md` and `extension_classification.md`.

pub(crate) mod codec;
pub(crate) mod handlers;

pub(crate) use handlers::{
    error_reply, health, infer, model, model_metadata, server_metadata, InferLimits,
};
