//! The protobuf of an ONNX file re-encoded without its large weights' payloads: the few
//! protobuf wire-format rules this needs (fields, varints, lengths), and which initializers to
//! strip.

use std::ops::Range;

/// Initializers smaller than this stay in the protobuf: copying them twice costs nothing.
pub(super) const MIN_STRIPPED_BYTES: usize = 64 * 1024;

/// ONNX `TensorProto.DataType.FLOAT`.
const ONNX_FLOAT: u64 = 1;

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
/// `MIN_STRIPPED_BYTES` (64 KiB). `None`: the file does not have the one `graph` field this
/// handles (protobuf would merge several). An initializer is kept whole unless it has exactly
/// one `raw_data` and an explicit FLOAT type, and no segment or external data.
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
pub(super) fn write_len_field(out: &mut Vec<u8>, number: u64, payload: &[u8]) {
    write_varint(out, (number << 3) | u64::from(LEN));
    write_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}
