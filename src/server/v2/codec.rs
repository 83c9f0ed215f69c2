//! The Open Inference Protocol's REST wire format, as pure functions over bytes: an inference
//! request (JSON tensors, and the binary tensor data extension) in, an inference response out.
//!
//! Binary tensor data extension (Triton's `extension_binary_data.md`): when the request carries
//! `Inference-Header-Content-Length: L`, the body is `L` bytes of JSON followed by the raw
//! tensors, in input order, each `parameters.binary_data_size` bytes long. Numbers are
//! little-endian; a `BYTES` tensor is a sequence of elements, each a 4-byte little-endian
//! length then that many bytes. Outputs asked for with `binary_data` come back the same way,
//! and the response carries its own `Inference-Header-Content-Length`.

use std::fmt;

use serde_json::{json, Map, Value};

/// Why a request body is not a valid inference request.
#[derive(Debug, Clone, PartialEq)]
pub struct CodecError(pub String);

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad<T>(message: impl Into<String>) -> Result<T, CodecError> {
    Err(CodecError(message.into()))
}

/// The element values of one input tensor, as the models need them.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// `BYTES`: one byte string per element.
    Bytes(Vec<Vec<u8>>),
    /// Any numeric datatype, converted to `f32` (what every model here takes).
    Numbers(Vec<f32>),
}

/// One input of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct InputTensor {
    pub name: String,
    /// As sent (`BYTES`, `FP32`, `INT64`, ...).
    pub datatype: String,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

/// One output the client asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestedOutput {
    pub name: String,
    /// `parameters.binary_data` (else the request's `binary_data_output`).
    pub binary: bool,
    /// `parameters.classification`: top-K strings instead of the tensor.
    pub classification: Option<usize>,
}

/// A parsed `POST .../infer` body.
#[derive(Debug, Clone, PartialEq)]
pub struct InferRequest {
    pub id: Option<String>,
    pub inputs: Vec<InputTensor>,
    /// Empty: every output, binary per [`InferRequest::binary_data_output`].
    pub outputs: Vec<RequestedOutput>,
    /// Request-level `parameters.binary_data_output`.
    pub binary_data_output: bool,
    /// Request-level `parameters` (for options such as `decode`).
    pub parameters: Map<String, Value>,
}

/// The element values of one output tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputData {
    Fp32(Vec<f32>),
    Int64(Vec<i64>),
    Bytes(Vec<Vec<u8>>),
}

impl OutputData {
    fn datatype(&self) -> &'static str {
        match self {
            OutputData::Fp32(_) => "FP32",
            OutputData::Int64(_) => "INT64",
            OutputData::Bytes(_) => "BYTES",
        }
    }

    fn to_json(&self) -> Value {
        match self {
            OutputData::Fp32(v) => json!(v),
            OutputData::Int64(v) => json!(v),
            OutputData::Bytes(v) => Value::Array(
                v.iter()
                    .map(|b| json!(String::from_utf8_lossy(b)))
                    .collect(),
            ),
        }
    }

    fn to_binary(&self) -> Vec<u8> {
        match self {
            OutputData::Fp32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            OutputData::Int64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            OutputData::Bytes(v) => {
                let mut out = Vec::new();
                for element in v {
                    out.extend_from_slice(&(element.len() as u32).to_le_bytes());
                    out.extend_from_slice(element);
                }
                out
            }
        }
    }
}

/// One output of a response.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: OutputData,
    /// Sent as binary data after the JSON header.
    pub binary: bool,
}

/// Bytes per element of the numeric datatypes we accept (`None`: not accepted).
fn element_size(datatype: &str) -> Option<usize> {
    match datatype {
        "FP32" | "INT32" | "UINT32" => Some(4),
        "FP64" | "INT64" | "UINT64" => Some(8),
        "UINT8" | "INT8" => Some(1),
        "FP16" | "INT16" | "UINT16" => Some(2),
        _ => None,
    }
}

/// Parses an inference request; `header_length` is `Inference-Header-Content-Length`.
pub fn parse_request(
    body: &[u8],
    header_length: Option<usize>,
) -> Result<InferRequest, CodecError> {
    let (header, mut binary) = match header_length {
        Some(n) if n > body.len() => {
            return bad(format!(
                "Inference-Header-Content-Length is {n} but the body has only {} bytes",
                body.len()
            ))
        }
        Some(n) => body.split_at(n),
        None => (body, &[][..]),
    };
    let root: Value = serde_json::from_slice(header)
        .map_err(|e| CodecError(format!("the inference request is not valid JSON: {e}")))?;
    let Value::Object(root) = root else {
        return bad("the inference request must be a JSON object");
    };
    let parameters = match root.get("parameters") {
        Some(Value::Object(p)) => p.clone(),
        None | Some(Value::Null) => Map::new(),
        Some(_) => return bad("`parameters` must be an object"),
    };
    let binary_data_output = parameters
        .get("binary_data_output")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let id = match root.get("id") {
        Some(Value::String(s)) => Some(s.clone()),
        None | Some(Value::Null) => None,
        Some(_) => return bad("`id` must be a string"),
    };
    let Some(Value::Array(raw_inputs)) = root.get("inputs") else {
        return bad("the inference request needs an `inputs` array");
    };
    let mut inputs = Vec::with_capacity(raw_inputs.len());
    for raw in raw_inputs {
        inputs.push(parse_input(raw, &mut binary)?);
    }
    if !binary.is_empty() {
        return bad(format!(
            "{} bytes of binary data follow the JSON header but no input claims them (set \
             parameters.binary_data_size on each binary input)",
            binary.len()
        ));
    }
    let outputs = match root.get("outputs") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(raw)) => raw
            .iter()
            .map(|o| parse_requested_output(o, binary_data_output))
            .collect::<Result<_, _>>()?,
        Some(_) => return bad("`outputs` must be an array"),
    };
    Ok(InferRequest {
        id,
        inputs,
        outputs,
        binary_data_output,
        parameters,
    })
}

fn parse_input(raw: &Value, binary: &mut &[u8]) -> Result<InputTensor, CodecError> {
    let name = raw["name"]
        .as_str()
        .ok_or_else(|| CodecError("every input needs a `name`".into()))?
        .to_string();
    let datatype = raw["datatype"]
        .as_str()
        .ok_or_else(|| CodecError(format!("input `{name}` needs a `datatype`")))?
        .to_string();
    let shape: Vec<usize> = raw["shape"]
        .as_array()
        .ok_or_else(|| CodecError(format!("input `{name}` needs a `shape` array")))?
        .iter()
        .map(|d| d.as_u64().map(|d| d as usize))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            CodecError(format!(
                "input `{name}`: `shape` must hold non-negative integers"
            ))
        })?;
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| CodecError(format!("input `{name}`: shape {shape:?} is too large")))?;
    let binary_size = raw["parameters"]["binary_data_size"].as_u64();
    let data = match binary_size {
        Some(size) => {
            let size = size as usize;
            if size > binary.len() {
                return bad(format!(
                    "input `{name}` claims {size} bytes of binary data; only {} remain",
                    binary.len()
                ));
            }
            let (mine, rest) = binary.split_at(size);
            *binary = rest;
            decode_binary(&name, &datatype, mine)?
        }
        None => decode_json(&name, &datatype, &raw["data"])?,
    };
    let elements = match &data {
        TensorData::Bytes(v) => v.len(),
        TensorData::Numbers(v) => v.len(),
    };
    if elements != count {
        return bad(format!(
            "input `{name}`: shape {shape:?} needs {count} elements, the data has {elements}"
        ));
    }
    Ok(InputTensor {
        name,
        datatype,
        shape,
        data,
    })
}

/// Decodes raw binary tensor data.
fn decode_binary(name: &str, datatype: &str, mut bytes: &[u8]) -> Result<TensorData, CodecError> {
    if datatype == "BYTES" {
        let mut elements = Vec::new();
        while !bytes.is_empty() {
            let Some((length, rest)) = bytes.split_first_chunk::<4>() else {
                return bad(format!(
                    "input `{name}`: a BYTES element length is cut short"
                ));
            };
            let length = u32::from_le_bytes(*length) as usize;
            if length > rest.len() {
                return bad(format!(
                    "input `{name}`: a BYTES element claims {length} bytes; only {} remain",
                    rest.len()
                ));
            }
            elements.push(rest[..length].to_vec());
            bytes = &rest[length..];
        }
        return Ok(TensorData::Bytes(elements));
    }
    let size = element_size(datatype)
        .ok_or_else(|| CodecError(format!("input `{name}`: unsupported datatype {datatype}")))?;
    if !bytes.len().is_multiple_of(size) {
        return bad(format!(
            "input `{name}`: {} bytes is not a whole number of {datatype} elements",
            bytes.len()
        ));
    }
    let numbers = bytes
        .chunks_exact(size)
        .map(|c| number_from_le(datatype, c))
        .collect();
    Ok(TensorData::Numbers(numbers))
}

fn number_from_le(datatype: &str, c: &[u8]) -> f32 {
    let b = |n: usize| -> [u8; 8] {
        let mut a = [0u8; 8];
        a[..n].copy_from_slice(&c[..n]);
        a
    };
    match datatype {
        "FP32" => f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
        "FP64" => f64::from_le_bytes(b(8)) as f32,
        "INT64" => i64::from_le_bytes(b(8)) as f32,
        "UINT64" => u64::from_le_bytes(b(8)) as f32,
        "INT32" => i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32,
        "UINT32" => u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32,
        "INT16" => i16::from_le_bytes([c[0], c[1]]) as f32,
        "UINT16" => u16::from_le_bytes([c[0], c[1]]) as f32,
        "FP16" => half_to_f32(u16::from_le_bytes([c[0], c[1]])),
        "INT8" => c[0] as i8 as f32,
        _ => c[0] as f32,
    }
}

/// IEEE 754 half precision to single.
fn half_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((h >> 10) & 0x1f);
    let fraction = f32::from(h & 0x3ff);
    sign * match exponent {
        0 => fraction * 2f32.powi(-24),
        31 if fraction == 0.0 => f32::INFINITY,
        31 => f32::NAN,
        e => (1.0 + fraction / 1024.0) * 2f32.powi(e - 15),
    }
}

/// Decodes `data` as JSON (flat or nested row-major arrays).
fn decode_json(name: &str, datatype: &str, data: &Value) -> Result<TensorData, CodecError> {
    if data.is_null() {
        return bad(format!(
            "input `{name}` has neither `data` nor parameters.binary_data_size"
        ));
    }
    let mut flat = Vec::new();
    flatten(data, &mut flat);
    if datatype == "BYTES" {
        let elements = flat
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone().into_bytes()),
                _ => bad(format!(
                    "input `{name}`: BYTES elements in JSON must be strings"
                )),
            })
            .collect::<Result<_, _>>()?;
        return Ok(TensorData::Bytes(elements));
    }
    if element_size(datatype).is_none() {
        return bad(format!("input `{name}`: unsupported datatype {datatype}"));
    }
    let numbers = flat
        .into_iter()
        .map(|v| match (v.as_f64(), v.as_bool()) {
            (Some(x), _) => Ok(x as f32),
            (None, Some(b)) => Ok(f32::from(u8::from(b))),
            _ => bad(format!(
                "input `{name}`: {datatype} elements must be numbers"
            )),
        })
        .collect::<Result<_, _>>()?;
    Ok(TensorData::Numbers(numbers))
}

fn flatten<'v>(value: &'v Value, out: &mut Vec<&'v Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        other => out.push(other),
    }
}

fn parse_requested_output(
    raw: &Value,
    default_binary: bool,
) -> Result<RequestedOutput, CodecError> {
    let name = raw["name"]
        .as_str()
        .ok_or_else(|| CodecError("every requested output needs a `name`".into()))?
        .to_string();
    let parameters = &raw["parameters"];
    let binary = parameters["binary_data"]
        .as_bool()
        .unwrap_or(default_binary);
    let classification = match &parameters["classification"] {
        Value::Null => None,
        v => match v.as_u64() {
            Some(k) if k >= 1 => Some(k as usize),
            _ => {
                return bad(format!(
                    "output `{name}`: parameters.classification must be a positive integer"
                ))
            }
        },
    };
    Ok(RequestedOutput {
        name,
        binary,
        classification,
    })
}

/// The top `count` of each row of `values` (`rows` x `columns`) as Triton's classification
/// strings `"<value>:<index>[:<label>]"`, highest first (ties: lower index first).
pub fn classify(
    values: &[f32],
    columns: usize,
    count: usize,
    label: impl Fn(usize) -> Option<String>,
) -> Vec<Vec<u8>> {
    let count = count.min(columns);
    let mut out = Vec::new();
    for row in values.chunks_exact(columns) {
        let mut ranked: Vec<(usize, f32)> = row.iter().copied().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        for (index, value) in ranked.into_iter().take(count) {
            let text = match label(index) {
                Some(l) => format!("{value}:{index}:{l}"),
                None => format!("{value}:{index}"),
            };
            out.push(text.into_bytes());
        }
    }
    out
}

/// Encodes a response: the body, and the JSON header's length when any output is binary
/// (sent as `Inference-Header-Content-Length`).
pub fn encode_response(
    model_name: &str,
    id: Option<&str>,
    outputs: &[OutputTensor],
) -> (Vec<u8>, Option<usize>) {
    let mut binary = Vec::new();
    let json_outputs: Vec<Value> = outputs
        .iter()
        .map(|o| {
            let mut value = json!({
                "name": o.name,
                "datatype": o.data.datatype(),
                "shape": o.shape,
            });
            if o.binary {
                let bytes = o.data.to_binary();
                value["parameters"] = json!({ "binary_data_size": bytes.len() });
                binary.extend_from_slice(&bytes);
            } else {
                value["data"] = o.data.to_json();
            }
            value
        })
        .collect();
    let mut root = json!({
        "model_name": model_name,
        "model_version": "1",
        "outputs": json_outputs,
    });
    if let Some(id) = id {
        root["id"] = json!(id);
    }
    let mut body = serde_json::to_vec(&root).unwrap_or_default();
    if outputs.iter().any(|o| o.binary) {
        let header = body.len();
        body.extend_from_slice(&binary);
        (body, Some(header))
    } else {
        (body, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_element(data: &[u8]) -> Vec<u8> {
        let mut out = (data.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn json_tensors_flat_or_nested() {
        let body = br#"{"id":"7","inputs":[{"name":"features","datatype":"INT64","shape":[2,2],
            "data":[[1,2],[3,4]]}],"outputs":[{"name":"digit"}]}"#;
        let request = parse_request(body, None).unwrap();
        assert_eq!(request.id.as_deref(), Some("7"));
        assert_eq!(request.inputs[0].shape, vec![2, 2]);
        assert_eq!(
            request.inputs[0].data,
            TensorData::Numbers(vec![1.0, 2.0, 3.0, 4.0])
        );
        assert_eq!(
            request.outputs,
            vec![RequestedOutput {
                name: "digit".into(),
                binary: false,
                classification: None
            }]
        );
        let body =
            br#"{"inputs":[{"name":"image","datatype":"BYTES","shape":[1],"data":["abc"]}]}"#;
        let request = parse_request(body, None).unwrap();
        assert_eq!(
            request.inputs[0].data,
            TensorData::Bytes(vec![b"abc".to_vec()])
        );
    }

    #[test]
    fn binary_inputs_follow_the_header_in_order() {
        let mut images = bytes_element(b"\xff\xd8first");
        images.extend(bytes_element(b"second"));
        let floats: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        let header = format!(
            r#"{{"inputs":[{{"name":"image","datatype":"BYTES","shape":[2],"parameters":{{"binary_data_size":{}}}}},
            {{"name":"x","datatype":"FP32","shape":[1,2],"parameters":{{"binary_data_size":8}}}}],
            "outputs":[{{"name":"probabilities","parameters":{{"classification":3,"binary_data":true}}}}]}}"#,
            images.len()
        );
        let mut body = header.clone().into_bytes();
        body.extend(&images);
        body.extend(&floats);
        let request = parse_request(&body, Some(header.len())).unwrap();
        assert_eq!(
            request.inputs[0].data,
            TensorData::Bytes(vec![b"\xff\xd8first".to_vec(), b"second".to_vec()])
        );
        assert_eq!(request.inputs[1].data, TensorData::Numbers(vec![1.5, -2.0]));
        assert_eq!(request.outputs[0].classification, Some(3));
        assert!(request.outputs[0].binary);
        // The header length past the body, a short element, left-over bytes: 400s with reasons.
        assert!(parse_request(&body, Some(body.len() + 1)).is_err());
        let mut short = header.clone().into_bytes();
        short.extend(&images[..images.len() - 1]);
        let e = parse_request(&short, Some(header.len())).unwrap_err();
        assert!(e.0.contains("`image` claims"), "{e}");
        let mut extra = body.clone();
        extra.push(1);
        let e = parse_request(&extra, Some(header.len())).unwrap_err();
        assert!(e.0.contains("no input claims them"), "{e}");
    }

    #[test]
    fn shape_and_data_must_agree() {
        let body = br#"{"inputs":[{"name":"f","datatype":"FP32","shape":[1,64],"data":[1,2]}]}"#;
        let e = parse_request(body, None).unwrap_err();
        assert!(e.0.contains("64 elements"), "{e}");
        let body = br#"{"inputs":[{"name":"f","datatype":"COMPLEX","shape":[1],"data":[1]}]}"#;
        assert!(parse_request(body, None).unwrap_err().0.contains("COMPLEX"));
        assert!(parse_request(b"{", None).is_err());
        assert!(parse_request(br#"{"inputs":3}"#, None).is_err());
    }

    #[test]
    fn other_numeric_datatypes_convert() {
        let data: Vec<u8> = [3i64, 16].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(
            decode_binary("f", "INT64", &data).unwrap(),
            TensorData::Numbers(vec![3.0, 16.0])
        );
        assert_eq!(half_to_f32(0x3c00), 1.0);
        assert_eq!(half_to_f32(0xc000), -2.0);
        assert!(decode_binary("f", "FP32", &[0, 0, 0]).is_err());
    }

    #[test]
    fn classification_strings_rank_by_value() {
        let rows = [0.1f32, 0.7, 0.2, 0.5, 0.25, 0.25];
        let label = |i: usize| (i == 1).then(|| "one".to_string());
        let out = classify(&rows, 3, 2, label);
        let text: Vec<String> = out
            .iter()
            .map(|b| String::from_utf8(b.clone()).unwrap())
            .collect();
        assert_eq!(text, ["0.7:1:one", "0.2:2", "0.5:0", "0.25:1:one"]);
    }

    #[test]
    fn responses_put_binary_outputs_after_the_header() {
        let outputs = [
            OutputTensor {
                name: "digit".into(),
                shape: vec![1],
                data: OutputData::Int64(vec![7]),
                binary: false,
            },
            OutputTensor {
                name: "labels".into(),
                shape: vec![1, 1],
                data: OutputData::Bytes(vec![b"0.9:7:7".to_vec()]),
                binary: true,
            },
        ];
        let (body, header) = encode_response("digits", Some("x"), &outputs);
        let header = header.unwrap();
        let json: Value = serde_json::from_slice(&body[..header]).unwrap();
        assert_eq!(json["outputs"][0]["data"], json!([7]));
        assert_eq!(json["outputs"][1]["parameters"]["binary_data_size"], 11);
        assert_eq!(json["id"], "x");
        assert_eq!(&body[header..], bytes_element(b"0.9:7:7").as_slice());
        let (body, header) = encode_response("digits", None, &outputs[..1]);
        assert!(header.is_none());
        assert!(serde_json::from_slice::<Value>(&body).is_ok());
    }
}
