//! Reading ONNX bytes into tract's `InferenceModel` with one copy of the weights.
//!
//! tract's own readers (`model_for_read`) copy the whole file into a `Vec`, decode it with
//! prost (which copies every initializer's `raw_data` into another `Vec`), then copy each
//! initializer again into an aligned tensor: three fresh copies of ResNet18's 45 MB, and on a
//! VM every fresh page is a page fault (about 3 µs each; together most of the start-up time).
//!
//! Here the protobuf is decoded from a copy of the file *without* the large f32 `raw_data`
//! payloads of the main graph's initializers ([`strip_weights`], `strip.rs`; a few kilobytes),
//! tract parses that, and each of those weights is copied once, straight from the ONNX bytes,
//! into the tensor tract's constant holds. While tract parses, a stripped initializer carries
//! an empty placeholder of a shape no other initializer has (`[0, k]`), so the graph tract
//! builds has the same nodes, names and edges as from the whole file; the placeholder's
//! constant is then given the real tensor. Whatever this path cannot vouch for (a layout it
//! does not handle, a placeholder tract merged with another constant, two equal weights that
//! tract would have shared) falls back to tract's reading of the whole file, so the model is
//! always the one the bytes describe.

use std::sync::Arc;

use prost::Message;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_hir::infer::InferenceFact;
use tract_onnx::tract_hir::ops::konst::Const;

mod strip;
#[cfg(test)]
mod tests;

pub use strip::{strip_weights, Stripped, StrippedWeight};

/// A parsed model and how it was read.
pub struct ReadModel {
    /// The model, as tract's `model_for_read` would have built it.
    pub model: InferenceModel,
    /// Initializers copied once, straight from the ONNX bytes; 0 when tract read the whole
    /// file itself.
    pub weights_in_place: usize,
}

/// Parses ONNX bytes into an `InferenceModel`, copying large f32 weights only once.
pub fn read(onnx: &[u8]) -> TractResult<ReadModel> {
    match strip_weights(onnx) {
        Ok(Some(stripped)) if !stripped.weights.is_empty() => {
            match read_stripped(onnx, &stripped) {
                Ok(model) => {
                    return Ok(ReadModel {
                        model,
                        weights_in_place: stripped.weights.len(),
                    })
                }
                Err(e) => log::debug!(
                    "reading the weights in place failed ({e:#}); tract reads the whole file"
                ),
            }
        }
        Ok(_) => {}
        Err(e) => log::debug!("protobuf layout not handled ({e}); tract reads the whole file"),
    }
    let proto = ModelProto::decode(onnx)?;
    Ok(ReadModel {
        model: tract_onnx::onnx().model_for_proto_model(&proto)?,
        weights_in_place: 0,
    })
}

/// The protobuf of ONNX bytes without the large weights' payloads (their initializers keep
/// name, type and dimensions): for reading the graph's structure without copying the weights.
pub fn decode_without_weights(onnx: &[u8]) -> TractResult<ModelProto> {
    match strip_weights(onnx) {
        Ok(Some(stripped)) => Ok(ModelProto::decode(stripped.proto.as_slice())?),
        _ => Ok(ModelProto::decode(onnx)?),
    }
}

/// Parses the stripped protobuf with placeholders, then gives each placeholder's constant the
/// weight copied from `onnx`.
fn read_stripped(onnx: &[u8], stripped: &Stripped) -> TractResult<InferenceModel> {
    let mut proto = ModelProto::decode(stripped.proto.as_slice())?;
    let graph = proto.graph.as_mut().context("no graph")?;
    let mut weights = Vec::with_capacity(stripped.weights.len());
    for (k, weight) in stripped.weights.iter().enumerate() {
        let init = graph
            .initializer
            .get_mut(weight.initializer)
            .context("initializer index")?;
        let dims = init
            .dims
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| format_err!("dimension {d}")))
            .collect::<TractResult<Vec<usize>>>()?;
        weights.push((init.name.clone(), dims, weight.bytes.clone()));
        // An empty tensor of a shape unique to this placeholder: tract's parser merges equal
        // constants, and no two placeholders (nor, checked below, anything else) are equal.
        init.dims = vec![0, k as i64 + 1];
        init.float_data.clear();
    }
    // tract's parser gives equal initializers one shared constant; placeholders would not.
    for (i, (name, dims, bytes)) in weights.iter().enumerate() {
        for (other, other_dims, other_bytes) in &weights[..i] {
            ensure!(
                dims != other_dims || onnx[bytes.clone()] != onnx[other_bytes.clone()],
                "initializers {other} and {name} are equal"
            );
        }
    }
    let parsed = tract_onnx::onnx().parse(&proto, None)?;
    ensure!(
        parsed.unresolved_inputs.is_empty(),
        "could not resolve inputs at top-level: {:?}",
        parsed.unresolved_inputs
    );
    let mut model = parsed.model;
    for (k, (name, dims, bytes)) in weights.into_iter().enumerate() {
        let outlet = *parsed
            .outlets_by_name
            .get(&name)
            .with_context(|| format!("initializer {name} has no node"))?;
        let shared = parsed
            .outlets_by_name
            .iter()
            .any(|(other, o)| o.node == outlet.node && *other != name);
        ensure!(
            !shared,
            "the placeholder of {name} was merged with another constant"
        );
        let node = model.node_mut(outlet.node);
        let placeholder = node.op_as::<Const>().map(|c| c.val().shape().to_vec());
        ensure!(
            placeholder.as_deref() == Some(&[0, k + 1][..]),
            "the node of {name} is not its placeholder"
        );
        let tensor = Arc::new(weight_tensor(&dims, &onnx[bytes])?);
        node.outputs[0].fact = InferenceFact::from(TypedFact::try_from(tensor.clone())?);
        node.op = Const::new(tensor)?.into();
    }
    Ok(model)
}

/// An f32 tensor of shape `dims` holding `bytes` (ONNX's `raw_data`: little-endian, as tract's
/// own loader reads it), its fresh pages mapped in one go before the copy.
fn weight_tensor(dims: &[usize], bytes: &[u8]) -> TractResult<Tensor> {
    let len = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .context("shape overflows")?;
    ensure!(
        len.checked_mul(4) == Some(bytes.len()),
        "{} bytes of raw data for shape {dims:?}",
        bytes.len()
    );
    // Safety: every byte is written by the copy below before the tensor is read.
    let mut tensor = unsafe { Tensor::uninitialized::<f32>(dims)? };
    let data = tensor.as_bytes_mut();
    super::memory::populate_for_write(data);
    data.copy_from_slice(bytes);
    Ok(tensor)
}
