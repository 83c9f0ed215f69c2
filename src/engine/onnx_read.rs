//! Reading ONNX bytes into tract's `InferenceModel` with one copy of the weights.
//!
//! tract's own readers (`model_for_read`) copy the whole file into a `Vec`, decode it with
//! prost (which copies every initializer's `raw_data` into another `Vec`), then copy each
//! initializer again into an aligned tensor: three fresh copies of ResNet18's 45 MB, and on a
//! VM every fresh page is a page fault (about 3 µs each; together most of the start-up time).
//!
//! Here the protobuf is decoded from a copy of the file *without* the large f32 `raw_data`
//! payloads of the main graph's initializers ([`strip_weights`], a few kilobytes), tract parses
//! that, and each of those weights is copied once, straight from the ONNX bytes, into the
//! tensor tract's constant holds. While tract parses, a stripped initializer carries an empty
//! placeholder of a shape no other initializer has (`[0, k]`), so the graph tract builds has
//! the same nodes, names and edges as from the whole file; the placeholder's constant is then
//! given the real tensor. Whatever this path cannot vouch for (a layout it does not handle, a
//! placeholder tract merged with another constant, two equal weights that tract would have
//! shared) falls back to tract's reading of the whole file, so the model is always the one the
//! bytes describe.

use std::ops::Range;
use std::sync::Arc;

use prost::Message;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_hir::infer::InferenceFact;
use tract_onnx::tract_hir::ops::konst::Const;

#[cfg(test)]
mod tests;

/// Initializers smaller than this stay in the protobuf: copying them twice costs nothing.
const MIN_STRIPPED_BYTES: usize = 64 * 1024;

/// ONNX `TensorProto.DataType.FLOAT`.
const ONNX_FLOAT: u64 = 1;

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

/// The ONNX bytes without some initializers' `raw_data`, and where those payloads are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stripped {
    /// The protobuf, re-encoded without the payloads (every other byte as it was).
    pub proto: Vec<u8>,
    /// The payloads removed, in initializer order.
    pub weights: Vec<StrippedWeight>,
}

/// One initializer whose `raw_data` was left out of [`Stripped::proto`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrippedWeight {
    /// Its index in the main graph's `initializer` list.
    pub initializer: usize,
    /// Its `raw_data` inside the original bytes.
    pub bytes: Range<usize>,
}

/// Re-encodes `onnx` without the `raw_data` of the main graph's f32 initializers of at least
/// [`MIN_STRIPPED_BYTES`]. `None`: the file does not have the one `graph` field this handles
/// (protobuf would merge several). An initializer is kept whole unless it has exactly one
/// `raw_data` and an explicit FLOAT type, and no segment or external data.
pub fn strip_weights(onnx: &[u8]) -> Result<Option<Stripped>, String> {
    const GRAPH: u64 = 7;
    const INITIALIZER: u64 = 5;
    let model = fields(onnx)?;
    let graphs: Vec<&Field> = model.iter().filter(|f| f.number == GRAPH).collect();
    let [graph] = graphs[..] else {
        return Ok(None);
    };
    if graph.wire != LEN {
        return Ok(None);
    }
    let mut weights = vec![];
    let mut new_graph = Vec::with_capacity(4096);
    let mut index = 0;
    for field in fields(&onnx[graph.payload.clone()])? {
        let (start, end) = (
            graph.payload.start + field.start,
            graph.payload.start + field.end,
        );
        if field.number != INITIALIZER || field.wire != LEN {
            new_graph.extend_from_slice(&onnx[start..end]);
            continue;
        }
        let payload =
            graph.payload.start + field.payload.start..graph.payload.start + field.payload.end;
        match strip_tensor(&onnx[payload.clone()])? {
            Some((tensor, raw)) => {
                write_len_field(&mut new_graph, INITIALIZER, &tensor);
                weights.push(StrippedWeight {
                    initializer: index,
                    bytes: payload.start + raw.start..payload.start + raw.end,
                });
            }
            None => new_graph.extend_from_slice(&onnx[start..end]),
        }
        index += 1;
    }
    let mut proto = Vec::with_capacity(new_graph.len() + 1024);
    for field in &model {
        if field.number == GRAPH {
            write_len_field(&mut proto, GRAPH, &new_graph);
        } else {
            proto.extend_from_slice(&onnx[field.start..field.end]);
        }
    }
    Ok(Some(Stripped { proto, weights }))
}

/// A `TensorProto` re-encoded without its `raw_data`, and where that payload was in it.
type StrippedTensor = (Vec<u8>, Range<usize>);

/// The tensor without its `raw_data`, if it is one to strip.
fn strip_tensor(tensor: &[u8]) -> Result<Option<StrippedTensor>, String> {
    const DATA_TYPE: u64 = 2;
    const SEGMENT: u64 = 3;
    const RAW_DATA: u64 = 9;
    const EXTERNAL_DATA: u64 = 13;
    const DATA_LOCATION: u64 = 14;
    let fields = fields(tensor)?;
    let raw: Vec<&Field> = fields.iter().filter(|f| f.number == RAW_DATA).collect();
    let data_type = fields
        .iter()
        .rfind(|f| f.number == DATA_TYPE && f.wire == VARINT)
        .map(|f| read_varint(tensor, &mut f.payload.start.clone()));
    let [raw] = raw[..] else {
        return Ok(None);
    };
    if raw.wire != LEN
        || raw.payload.len() < MIN_STRIPPED_BYTES
        || data_type != Some(Some(ONNX_FLOAT))
        || fields
            .iter()
            .any(|f| matches!(f.number, SEGMENT | EXTERNAL_DATA | DATA_LOCATION))
    {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(tensor.len() - raw.payload.len());
    for field in fields.iter().filter(|f| f.number != RAW_DATA) {
        out.extend_from_slice(&tensor[field.start..field.end]);
    }
    Ok(Some((out, raw.payload.clone())))
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

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

/// One protobuf field: its number, wire type, the byte range of the whole field (key
/// included) and of its payload (for `LEN`, the bytes after the length).
#[derive(Debug)]
struct Field {
    number: u64,
    wire: u8,
    start: usize,
    end: usize,
    payload: Range<usize>,
}

/// The top-level fields of a protobuf message, or why it is not one.
fn fields(buf: &[u8]) -> Result<Vec<Field>, String> {
    let mut out = vec![];
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let key = read_varint(buf, &mut pos).ok_or("truncated key")?;
        let (number, wire) = (key >> 3, (key & 7) as u8);
        let payload = match wire {
            VARINT => {
                let begin = pos;
                read_varint(buf, &mut pos).ok_or("truncated varint")?;
                begin..pos
            }
            I64 => pos..pos + 8,
            I32 => pos..pos + 4,
            LEN => {
                let len = read_varint(buf, &mut pos).ok_or("truncated length")?;
                let len = usize::try_from(len).map_err(|_| "length overflows")?;
                pos..pos.checked_add(len).ok_or("length overflows")?
            }
            other => return Err(format!("wire type {other} (groups are not handled)")),
        };
        if payload.end > buf.len() {
            return Err("field runs past the end".into());
        }
        pos = payload.end;
        out.push(Field {
            number,
            wire,
            start,
            end: pos,
            payload,
        });
    }
    Ok(out)
}

/// Reads a base-128 varint at `*pos`, advancing it; `None` if truncated or too long.
fn read_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Writes a length-delimited field.
fn write_len_field(out: &mut Vec<u8>, number: u64, payload: &[u8]) {
    write_varint(out, (number << 3) | u64::from(LEN));
    write_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}
