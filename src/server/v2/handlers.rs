//! The Open Inference Protocol routes: server and model metadata, health, and inference.
//!
//! Every handler has the server's usual shape (what the request asked for plus the in-memory
//! body -> [`Reply`]); the dispatcher knows nothing of the protocol.

use std::str::FromStr;

use rayon::prelude::*;
use serde_json::{json, Value};

use super::codec::{self, InferRequest, InputTensor, OutputData, OutputTensor, TensorData};
use crate::digits::{self, DigitMode, CLASSES};
use crate::error::Error;
use crate::image::{self, DecodeMode, DecodeOptions};
use crate::models::{Head, Model, ModelName, Models};
use crate::pipeline;
use crate::server::error::ServerError;
use crate::server::reply::Reply;

/// The only model version there is; `/versions/1` paths are accepted, others are a 404.
pub const VERSION: &str = "1";

/// `platform` in model metadata (Triton's name for an ONNX model).
const PLATFORM: &str = "onnx_onnxv1";

/// The extensions this server speaks (`GET /v2`).
const EXTENSIONS: [&str; 2] = ["binary_tensor_data", "classification"];

/// A v2 error: `{"error": "..."}` with the status `/v1` would give the same error.
pub(crate) fn error_reply(error: &ServerError) -> Reply {
    let reply = Reply::json(error.http_status(), &json!({ "error": error.to_string() }));
    let reply = Reply {
        allow: error.allow(),
        ..reply
    };
    if error.retry_later() {
        reply.retry_after()
    } else {
        reply
    }
}

/// `GET /v2`.
pub(crate) fn server_metadata() -> Reply {
    Reply::json(
        200,
        &json!({
            "name": "tagger",
            "version": env!("CARGO_PKG_VERSION"),
            "extensions": EXTENSIONS,
        }),
    )
}

/// `GET /v2/health/live` and `/v2/health/ready`: the status is the answer, the body is empty
/// (as the protocol says); not ready is a 503 like `/readyz`.
pub(crate) fn health(ok: bool) -> Reply {
    let reply = Reply::text(if ok { 200 } else { 503 }, "text/plain", Vec::new());
    if ok {
        reply
    } else {
        reply.retry_after()
    }
}

/// The model a v2 path names, at the one version there is.
pub(crate) fn model<'m>(
    models: &'m Models,
    name: &str,
    version: Option<&str>,
) -> Result<&'m Model, ServerError> {
    let model = models.get(ModelName::from_str(name)?)?;
    match version {
        None | Some(VERSION) => Ok(model),
        Some(other) => Err(ServerError::NotFound(format!(
            "/v2/models/{name}/versions/{other} (the only version is {VERSION})"
        ))),
    }
}

/// What one input or output looks like in model metadata.
fn tensor_meta(name: &str, datatype: &str, shape: &[i64]) -> Value {
    json!({ "name": name, "datatype": datatype, "shape": shape })
}

/// The input and output descriptions of a model (`-1`: any batch size).
fn signature(model: &Model) -> (Vec<Value>, Vec<Value>) {
    match &model.head {
        Head::Tags { labels, .. } => {
            let mut shape: Vec<i64> = model.input_shape().iter().map(|&d| d as i64).collect();
            shape[0] = -1;
            (
                vec![
                    tensor_meta("image", "BYTES", &[-1]),
                    tensor_meta("input", "FP32", &shape),
                ],
                vec![tensor_meta(
                    "probabilities",
                    "FP32",
                    &[-1, labels.len() as i64],
                )],
            )
        }
        Head::Digits { .. } => (
            vec![
                tensor_meta("image", "BYTES", &[-1]),
                tensor_meta("features", "FP32", &[-1, 64]),
            ],
            vec![
                tensor_meta("digit", "INT64", &[-1]),
                tensor_meta("probabilities", "FP32", &[-1, CLASSES as i64]),
            ],
        ),
    }
}

/// `GET /v2/models/{name}`.
pub(crate) fn model_metadata(model: &Model) -> Reply {
    let (inputs, outputs) = signature(model);
    Reply::json(
        200,
        &json!({
            "name": model.name(),
            "versions": [VERSION],
            "platform": PLATFORM,
            "inputs": inputs,
            "outputs": outputs,
        }),
    )
}

/// How an inference request is served.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InferLimits {
    /// Default decoding (a request's `parameters.decode` overrides the mode).
    pub decode: DecodeOptions,
    /// Most samples in one request (413 beyond).
    pub max_batch: usize,
}

/// `POST /v2/models/{name}/infer`: the body as received, `Inference-Header-Content-Length`.
pub(crate) fn infer(
    model: &Model,
    header_length: Option<usize>,
    body: &[u8],
    limits: InferLimits,
) -> Result<Reply, ServerError> {
    let request = codec::parse_request(body, header_length)
        .map_err(|e| Error::bad_parameter("inputs", e.0))?;
    let input = single_input(model, &request)?;
    let batch = input.shape.first().copied().unwrap_or(0);
    if batch > limits.max_batch {
        return Err(ServerError::TooManyImages {
            count: batch,
            limit: limits.max_batch,
        });
    }
    let mut decode = limits.decode;
    if let Some(mode) = request.parameters.get("decode").and_then(Value::as_str) {
        decode.mode = DecodeMode::from_str(mode)?;
    }
    let samples = samples(model, input)?;
    let computed = match &model.head {
        Head::Tags { .. } => run_tags(model, &samples, &decode)?,
        Head::Digits { .. } => {
            let mode = match request.parameters.get("preprocess").and_then(Value::as_str) {
                Some(m) => DigitMode::from_str(m)?,
                None => DigitMode::Auto,
            };
            run_digits(model, &samples, &decode, mode)?
        }
    };
    let outputs = select_outputs(model, &request, computed, samples.len())?;
    let (body, header) =
        codec::encode_response(model.name().name(), request.id.as_deref(), &outputs);
    Ok(match header {
        Some(length) => Reply::text(200, "application/octet-stream", body)
            .with_header("Inference-Header-Content-Length", length.to_string()),
        None => Reply::raw_json(200, body),
    })
}

/// The one input of the request, checked against what the model takes.
fn single_input<'r>(model: &Model, request: &'r InferRequest) -> Result<&'r InputTensor, Error> {
    let (accepted, _) = signature(model);
    let names: Vec<&str> = accepted.iter().filter_map(|v| v["name"].as_str()).collect();
    let [input] = request.inputs.as_slice() else {
        return Err(Error::bad_parameter(
            "inputs",
            format!(
                "{} takes exactly one input, one of: {}",
                model.name(),
                names.join(", ")
            ),
        ));
    };
    if !names.contains(&input.name.as_str()) {
        return Err(Error::bad_parameter(
            "inputs",
            format!(
                "{} has no input `{}`; its inputs are {}",
                model.name(),
                input.name,
                names.join(", ")
            ),
        ));
    }
    let expected_type = |ok: bool, wanted: &str| {
        if ok {
            Ok(())
        } else {
            Err(Error::bad_parameter(
                "inputs",
                format!(
                    "input `{}` must be {wanted}, not {}",
                    input.name, input.datatype
                ),
            ))
        }
    };
    match input.name.as_str() {
        "image" => expected_type(input.datatype == "BYTES", "BYTES")?,
        "input" => expected_type(input.datatype == "FP32", "FP32")?,
        _ => expected_type(
            matches!(input.datatype.as_str(), "FP32" | "INT64"),
            "FP32 or INT64",
        )?,
    }
    Ok(input)
}

/// One sample of a batch.
enum Sample<'a> {
    /// Encoded image bytes.
    Image(&'a [u8]),
    /// A preprocessed tensor for one sample.
    Tensor(&'a [f32]),
}

/// Splits the input along its first (batch) dimension, checking the rest of its shape.
fn samples<'a>(model: &Model, input: &'a InputTensor) -> Result<Vec<Sample<'a>>, Error> {
    let per_sample: Vec<usize> = model.input_shape()[1..].to_vec();
    match &input.data {
        TensorData::Bytes(images) => {
            if input.shape.len() != 1 {
                return Err(Error::bad_parameter(
                    "inputs",
                    format!(
                        "input `image` has shape [N] (one encoded image per element), not {:?}",
                        input.shape
                    ),
                ));
            }
            Ok(images.iter().map(|b| Sample::Image(b)).collect())
        }
        TensorData::Numbers(values) => {
            if input.shape.len() != per_sample.len() + 1 || input.shape[1..] != per_sample[..] {
                let mut wanted = vec!["N".to_string()];
                wanted.extend(per_sample.iter().map(usize::to_string));
                return Err(Error::bad_parameter(
                    "inputs",
                    format!(
                        "input `{}` has shape [{}], not {:?}",
                        input.name,
                        wanted.join(", "),
                        input.shape
                    ),
                ));
            }
            let size: usize = per_sample.iter().product();
            Ok(values.chunks_exact(size).map(Sample::Tensor).collect())
        }
    }
}

/// What the model computed for the batch, before outputs are chosen.
enum Computed {
    /// Softmax probabilities per sample (ImageNet models).
    Tags(Vec<Vec<f32>>),
    /// Digit and probabilities per sample.
    Digits(Vec<(usize, [f64; CLASSES])>),
}

/// Runs every sample side by side on the current pool (the worker pool); the first failure
/// fails the request, naming the element.
fn run_each<T: Send>(
    samples: &[Sample<'_>],
    run: impl Fn(&Sample<'_>) -> Result<T, Error> + Sync + Send,
) -> Result<Vec<T>, Error> {
    let results: Vec<Result<T, Error>> = samples.par_iter().map(run).collect();
    let mut out = Vec::with_capacity(results.len());
    for (index, result) in results.into_iter().enumerate() {
        match result {
            Ok(value) => out.push(value),
            Err(e) if samples.len() > 1 => return Err(with_element(e, index)),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Names the failing batch element in the message, keeping the status.
fn with_element(error: Error, index: usize) -> Error {
    match error {
        Error::Undecodable(why) => Error::Undecodable(format!("element {index}: {why}")),
        Error::UnsupportedFormat(why) => {
            Error::UnsupportedFormat(format!("element {index}: {why}"))
        }
        Error::BadParameter { name, message } => Error::BadParameter {
            name,
            message: format!("element {index}: {message}"),
        },
        other => other,
    }
}

fn run_tags(
    model: &Model,
    samples: &[Sample<'_>],
    decode: &DecodeOptions,
) -> Result<Computed, Error> {
    let Head::Tags { preprocess, .. } = &model.head else {
        unreachable!("run_tags on a digits model")
    };
    let shape = model.input_shape();
    let probabilities = run_each(samples, |sample| {
        let tensor = match sample {
            Sample::Image(bytes) => preprocess.tensor(&image::decode(bytes, decode)?.rgb),
            Sample::Tensor(values) => values.to_vec(),
        };
        let logits = model.engine.run(&shape, tensor)?;
        Ok(pipeline::softmax(&logits)
            .into_iter()
            .map(|p| p as f32)
            .collect())
    })?;
    Ok(Computed::Tags(probabilities))
}

fn run_digits(
    model: &Model,
    samples: &[Sample<'_>],
    decode: &DecodeOptions,
    mode: DigitMode,
) -> Result<Computed, Error> {
    let Head::Digits { platt } = &model.head else {
        unreachable!("run_digits on an ImageNet model")
    };
    let shape = model.input_shape();
    let readings = run_each(samples, |sample| {
        let features = match sample {
            Sample::Image(bytes) => {
                digits::features(&image::decode(bytes, decode)?.rgb, mode).to_vec()
            }
            Sample::Tensor(values) => values.to_vec(),
        };
        let decision = model.engine.run(&shape, features)?;
        if decision.len() != digits::PAIRS {
            return Err(Error::Internal(format!(
                "digits model returned {} values, not {}",
                decision.len(),
                digits::PAIRS
            )));
        }
        Ok((
            digits::vote(&decision),
            digits::probabilities(&decision, platt),
        ))
    })?;
    Ok(Computed::Digits(readings))
}

/// The computed values as output rows, and each probability column's label.
struct Rows {
    /// `[batch, columns]`, row-major.
    probabilities: Vec<f32>,
    /// The digit per sample (digits only).
    digit: Option<Vec<i64>>,
    label: Box<dyn Fn(usize) -> Option<String>>,
}

fn rows(computed: Computed, model: &Model) -> Rows {
    match (computed, &model.head) {
        (Computed::Tags(rows), Head::Tags { labels, .. }) => {
            let labels = labels.clone();
            Rows {
                probabilities: rows.concat(),
                digit: None,
                label: Box::new(move |i: usize| labels.get(i).cloned()),
            }
        }
        (Computed::Digits(readings), _) => Rows {
            probabilities: readings
                .iter()
                .flat_map(|(_, p)| p.iter().map(|&x| x as f32))
                .collect(),
            digit: Some(readings.iter().map(|(d, _)| *d as i64).collect()),
            label: Box::new(|i: usize| Some(i.to_string())),
        },
        _ => unreachable!("a model's computation matches its head"),
    }
}

/// The outputs the request asked for (all of them when it named none).
fn select_outputs(
    model: &Model,
    request: &InferRequest,
    computed: Computed,
    batch: usize,
) -> Result<Vec<OutputTensor>, Error> {
    let Rows {
        probabilities,
        digit,
        label,
    } = rows(computed, model);
    let columns = probabilities.len().checked_div(batch).unwrap_or(0);
    let requested = if request.outputs.is_empty() {
        let mut all = vec![codec::RequestedOutput {
            name: "probabilities".into(),
            binary: request.binary_data_output,
            classification: None,
        }];
        if digit.is_some() {
            all.insert(
                0,
                codec::RequestedOutput {
                    name: "digit".into(),
                    binary: request.binary_data_output,
                    classification: None,
                },
            );
        }
        all
    } else {
        request.outputs.clone()
    };
    let mut outputs = Vec::new();
    for wanted in requested {
        let tensor = match (wanted.name.as_str(), wanted.classification, &digit) {
            ("probabilities", Some(count), _) => {
                let count = count.min(columns);
                OutputTensor {
                    name: wanted.name.clone(),
                    shape: vec![batch, count],
                    data: OutputData::Bytes(codec::classify(
                        &probabilities,
                        columns.max(1),
                        count,
                        &label,
                    )),
                    binary: wanted.binary,
                }
            }
            ("probabilities", None, _) => OutputTensor {
                name: wanted.name.clone(),
                shape: vec![batch, columns],
                data: OutputData::Fp32(probabilities.clone()),
                binary: wanted.binary,
            },
            ("digit", None, Some(digits)) => OutputTensor {
                name: wanted.name.clone(),
                shape: vec![batch],
                data: OutputData::Int64(digits.clone()),
                binary: wanted.binary,
            },
            ("digit", Some(_), Some(_)) => {
                return Err(Error::bad_parameter(
                    "outputs",
                    "classification applies to `probabilities`, not `digit`",
                ))
            }
            (other, _, _) => {
                let (_, declared) = signature(model);
                let names: Vec<&str> = declared.iter().filter_map(|v| v["name"].as_str()).collect();
                return Err(Error::bad_parameter(
                    "outputs",
                    format!(
                        "{} has no output `{other}`; its outputs are {}",
                        model.name(),
                        names.join(", ")
                    ),
                ));
            }
        };
        outputs.push(tensor);
    }
    Ok(outputs)
}
