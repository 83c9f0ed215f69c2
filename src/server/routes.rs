//! The route table, routing, query parameters, and the handlers.
//!
//! [`ROUTES`] is the single list of what the server answers: the router matches against it
//! and a test checks that `/openapi.json` documents exactly these paths, methods and query
//! parameters.

use std::str::FromStr;

use bytes::Bytes;
use serde_json::{json, Value};

use super::body::{self, BodyInfo, BodyKind};
use super::error::ServerError;
use super::reply::Reply;
use super::state::State;
use super::{metrics, multipart, openapi, page, v2};
use crate::digits::DigitMode;
use crate::error::Error;
use crate::image::{DecodeMode, DecodeOptions};
use crate::models::{Head, Model, ModelName, Models, Weights};
use crate::pipeline::{self, ClassifyOptions, MAX_TOP_K};

/// One route: its path template (`{name}` matches one segment), methods and query parameters.
#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    /// Path template as written in the OpenAPI document.
    pub path: &'static str,
    /// Methods (GET routes also answer HEAD).
    pub methods: &'static [&'static str],
    /// Query parameters the route accepts; any other is a 400. The handlers check the same
    /// lists (`TAGS_QUERY`, ...); this copy is what the OpenAPI test compares the document with.
    #[cfg_attr(not(test), allow(dead_code))]
    pub query: &'static [&'static str],
}

/// Query parameters of `POST /v1/tags`.
const TAGS_QUERY: &[&str] = &["model", "top_k", "min_confidence", "decode"];
/// Query parameters of `POST /v1/digits`.
const DIGITS_QUERY: &[&str] = &["preprocess", "decode"];
/// Query parameters of an ImageNet model's `predict`.
const PREDICT_TAGS_QUERY: &[&str] = &["top_k", "min_confidence", "decode"];

/// Every route the server answers.
pub const ROUTES: &[RouteSpec] = &[
    RouteSpec {
        path: "/v1/tags",
        methods: &["POST"],
        query: TAGS_QUERY,
    },
    RouteSpec {
        path: "/v1/digits",
        methods: &["POST"],
        query: DIGITS_QUERY,
    },
    RouteSpec {
        path: "/v1/models",
        methods: &["GET"],
        query: &[],
    },
    RouteSpec {
        path: "/v1/models/{name}",
        methods: &["GET"],
        query: &[],
    },
    RouteSpec {
        path: "/v1/models/{name}/predict",
        methods: &["POST"],
        query: &["top_k", "min_confidence", "decode", "preprocess"],
    },
    RouteSpec {
        path: "/healthz",
        methods: &["GET"],
        query: &[],
    },
    RouteSpec {
        path: "/readyz",
        methods: &["GET"],
        query: &[],
    },
    RouteSpec {
        path: "/metrics",
        methods: &["GET"],
        query: &[],
    },
    RouteSpec {
        path: "/openapi.json",
        methods: &["GET"],
        query: &[],
    },
    RouteSpec {
        path: "/",
        methods: &["GET"],
        query: &[],
    },
    // Open Inference Protocol (KServe v2); see `v2`.
    RouteSpec {
        path: "/v2",
        methods: &["GET"],
        query: &[],
    },
    RouteSpec {
        path: "/v2/health/live",
        methods: &["GET"],
        query: &[],
    },
    RouteSpec {
        path: "/v2/health/ready",
        methods: &["GET"],
        query: &[],
    },
    RouteSpec {
        path: "/v2/models/{name}",
        methods: &["GET"],
        query: &[],
    },
    RouteSpec {
        path: "/v2/models/{name}/versions/{version}",
        methods: &["GET"],
        query: &[],
    },
    RouteSpec {
        path: "/v2/models/{name}/ready",
        methods: &["GET"],
        query: &[],
    },
    RouteSpec {
        path: "/v2/models/{name}/versions/{version}/ready",
        methods: &["GET"],
        query: &[],
    },
    RouteSpec {
        path: "/v2/models/{name}/infer",
        methods: &["POST"],
        query: &[],
    },
    RouteSpec {
        path: "/v2/models/{name}/versions/{version}/infer",
        methods: &["POST"],
        query: &[],
    },
];

/// What a matched request asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Endpoint {
    Tags,
    Digits,
    Models,
    Model(String),
    Predict(String),
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
    /// `GET /`: the try-it page.
    Page,
    V2Server,
    V2Live,
    V2Ready,
    /// `/v2/models/{name}[/versions/{version}]`.
    V2Model(String, Option<String>),
    V2ModelReady(String, Option<String>),
    V2Infer(String, Option<String>),
}

impl Endpoint {
    /// Routes that run a model on a worker; the others are answered from the http pool.
    pub(crate) fn is_inference(&self) -> bool {
        matches!(
            self,
            Endpoint::Tags | Endpoint::Digits | Endpoint::Predict(_) | Endpoint::V2Infer(..)
        )
    }
}

/// The method as a static string (for labels and logs); extension methods are `OTHER`.
pub(crate) fn method_name(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == method)
        .unwrap_or("OTHER")
}

/// Matches `path` against a template; `Some(captures)` (one per `{...}`) on a match.
fn matches(template: &str, path: &str) -> Option<Vec<String>> {
    let mut captures = Vec::new();
    let mut t = template.split('/');
    let mut p = path.split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(captures),
            (Some(var), Some(segment))
                if var.starts_with('{') && var.ends_with('}') && !segment.is_empty() =>
            {
                captures.push(percent_decode(segment).ok()?);
            }
            (Some(a), Some(b)) if a == b => {}
            _ => return None,
        }
    }
}

/// Finds the route; 404 when no path matches, 405 (with `Allow`) when the method does not.
/// The template comes back in both cases (`unmatched` for a 404), for the metrics.
pub(crate) fn resolve(method: &str, path: &str) -> (&'static str, Result<Endpoint, ServerError>) {
    for spec in ROUTES {
        let Some(mut captures) = matches(spec.path, path) else {
            continue;
        };
        let get = spec.methods.contains(&"GET");
        let allowed = spec.methods.contains(&method) || (get && method == "HEAD");
        if !allowed {
            let allow = if get { "GET, HEAD" } else { "POST" };
            return (spec.path, Err(ServerError::MethodNotAllowed(allow)));
        }
        let version = (captures.len() > 1).then(|| captures.remove(1));
        let name = captures.into_iter().next().unwrap_or_default();
        let endpoint = match spec.path {
            "/v1/tags" => Endpoint::Tags,
            "/v1/digits" => Endpoint::Digits,
            "/v1/models" => Endpoint::Models,
            "/v1/models/{name}" => Endpoint::Model(name),
            "/v1/models/{name}/predict" => Endpoint::Predict(name),
            "/healthz" => Endpoint::Healthz,
            "/readyz" => Endpoint::Readyz,
            "/metrics" => Endpoint::Metrics,
            "/openapi.json" => Endpoint::OpenApi,
            "/" => Endpoint::Page,
            "/v2" => Endpoint::V2Server,
            "/v2/health/live" => Endpoint::V2Live,
            "/v2/health/ready" => Endpoint::V2Ready,
            "/v2/models/{name}" | "/v2/models/{name}/versions/{version}" => {
                Endpoint::V2Model(name, version)
            }
            "/v2/models/{name}/ready" | "/v2/models/{name}/versions/{version}/ready" => {
                Endpoint::V2ModelReady(name, version)
            }
            "/v2/models/{name}/infer" | "/v2/models/{name}/versions/{version}/infer" => {
                Endpoint::V2Infer(name, version)
            }
            other => unreachable!("route {other} has no endpoint"),
        };
        return (spec.path, Ok(endpoint));
    }
    ("unmatched", Err(ServerError::NotFound(path.to_string())))
}

/// Decodes `%XX` escapes and `+` (as a space, query-string style).
fn percent_decode(s: &str) -> Result<String, ()> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(())?;
                let hex = std::str::from_utf8(hex).map_err(|_| ())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| ())
}

/// A parsed query string.
#[derive(Debug, Default)]
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    /// Parses `a=1&b=2`; a repeated parameter or a bad escape is a 400.
    pub(crate) fn parse(query: &str) -> Result<Query, Error> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for part in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            let name = percent_decode(name)
                .map_err(|_| Error::bad_parameter("query", "bad %-escape in a parameter name"))?;
            let value = percent_decode(value)
                .map_err(|_| Error::bad_parameter(&name, "bad %-escape in the value"))?;
            if pairs.iter().any(|(n, _)| *n == name) {
                return Err(Error::bad_parameter(&name, "given more than once"));
            }
            pairs.push((name, value));
        }
        Ok(Query(pairs))
    }

    /// Refuses parameters this route does not take (a typo would otherwise go unnoticed).
    fn only(&self, allowed: &[&str], route: &str) -> Result<(), Error> {
        match self.0.iter().find(|(n, _)| !allowed.contains(&n.as_str())) {
            Some((name, _)) => Err(Error::bad_parameter(
                name,
                format!(
                    "unknown parameter for {route}; it accepts {}",
                    if allowed.is_empty() {
                        "none".to_string()
                    } else {
                        allowed.join(", ")
                    }
                ),
            )),
            None => Ok(()),
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Parses a parameter with its type's `FromStr`, naming it in the error.
    fn parse_value<T: FromStr>(&self, name: &str, what: &str) -> Result<Option<T>, Error> {
        self.get(name)
            .map(|v| {
                v.trim()
                    .parse()
                    .map_err(|_| Error::bad_parameter(name, format!("`{v}` is not {what}")))
            })
            .transpose()
    }
}

/// Inference work, settled before the body is read.
#[derive(Debug)]
pub(crate) enum Work {
    Tags {
        model: ModelName,
        options: ClassifyOptions,
    },
    Digits {
        mode: DigitMode,
        decode: DecodeOptions,
    },
    /// Open Inference Protocol inference.
    V2 {
        model: ModelName,
        /// `Inference-Header-Content-Length` (binary tensor data extension).
        header_length: Option<usize>,
        limits: v2::InferLimits,
    },
}

/// An admitted inference request: what to run and how to read the body.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) work: Work,
    /// Raw, or multipart (which may carry several images).
    pub(crate) body: BodyKind,
    /// Most images in one request.
    pub(crate) max_batch: usize,
}

fn decode_options(state: &State, query: &Query) -> Result<DecodeOptions, Error> {
    let mode = match query.get("decode") {
        Some(v) => DecodeMode::from_str(v)?,
        None => state.config.decode,
    };
    Ok(DecodeOptions {
        mode,
        max_pixels: state.config.max_pixels,
    })
}

fn tags_work(state: &State, model: ModelName, query: &Query) -> Result<Work, Error> {
    let options = ClassifyOptions {
        top_k: query
            .parse_value("top_k", &format!("an integer in 1..={MAX_TOP_K}"))?
            .unwrap_or(MAX_TOP_K),
        min_confidence: query
            .parse_value("min_confidence", "a number in 0..=1")?
            .unwrap_or(0.0),
        decode: decode_options(state, query)?,
    };
    options.validate()?;
    Ok(Work::Tags { model, options })
}

fn digits_work(state: &State, query: &Query) -> Result<Work, Error> {
    let mode = match query.get("preprocess") {
        Some(v) => DigitMode::from_str(v)?,
        None => DigitMode::Auto,
    };
    Ok(Work::Digits {
        mode,
        decode: decode_options(state, query)?,
    })
}

/// Checks everything that can be checked before reading the body: readiness, query, model,
/// media type, declared length. No I/O.
pub(crate) fn prepare(
    state: &State,
    endpoint: &Endpoint,
    query: &str,
    body: &BodyInfo<'_>,
) -> Result<Job, ServerError> {
    if state.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(ServerError::Draining);
    }
    let models = state.models.get().ok_or(ServerError::NotReady)?;
    let query = Query::parse(query)?;
    let work = match endpoint {
        Endpoint::Tags => {
            query.only(TAGS_QUERY, "/v1/tags")?;
            let model = match query.get("model") {
                Some(name) => ModelName::from_str(name)?,
                None => models.default_tags(),
            };
            match models.get(model)?.head {
                Head::Tags { .. } => tags_work(state, model, &query)?,
                Head::Digits { .. } => {
                    return Err(Error::WrongTask {
                        model: model.to_string(),
                        needed: "an ImageNet model (for digits: POST /v1/digits)",
                    }
                    .into())
                }
            }
        }
        Endpoint::Digits => {
            query.only(DIGITS_QUERY, "/v1/digits")?;
            digits_work(state, &query)?
        }
        Endpoint::Predict(name) => {
            let model = ModelName::from_str(name)?;
            let route = format!("/v1/models/{model}/predict");
            match models.get(model)?.head {
                Head::Tags { .. } => {
                    query.only(PREDICT_TAGS_QUERY, &route)?;
                    tags_work(state, model, &query)?
                }
                Head::Digits { .. } => {
                    query.only(DIGITS_QUERY, &route)?;
                    digits_work(state, &query)?
                }
            }
        }
        Endpoint::V2Infer(name, version) => {
            query.only(&[], "/v2/models/{name}/infer")?;
            let model = v2::model(models, name, version.as_deref())?.name();
            let header_length = inference_header_length(body.inference_header_length)?;
            Work::V2 {
                model,
                header_length,
                limits: v2::InferLimits {
                    decode: decode_options(state, &query)?,
                    max_batch: state.config.max_batch,
                },
            }
        }
        other => unreachable!("{other:?} is not an inference route"),
    };
    body::check_declared_length(body, state.config.max_body_bytes)?;
    // A v2 body is JSON (or JSON and binary tensors) whatever its Content-Type says.
    let kind = match &work {
        Work::V2 { .. } => BodyKind::Raw,
        _ => body::kind(body)?,
    };
    Ok(Job {
        work,
        body: kind,
        max_batch: state.config.max_batch,
    })
}

/// `Inference-Header-Content-Length`, the JSON part's length in a binary-data v2 request.
fn inference_header_length(value: Option<&str>) -> Result<Option<usize>, Error> {
    value
        .map(|v| {
            v.trim().parse().map_err(|_| {
                Error::bad_parameter(
                    "Inference-Header-Content-Length",
                    format!("`{v}` is not a byte count"),
                )
            })
        })
        .transpose()
}

/// Runs the model over the whole request body (on a worker thread).
pub(crate) fn infer(state: &State, job: &Job, body: Bytes) -> Result<Reply, ServerError> {
    let models: &Models = state.models.get().ok_or(ServerError::NotReady)?;
    let bytes = &body[..];
    if let Work::V2 {
        model,
        header_length,
        limits,
    } = &job.work
    {
        return v2::infer(models.get(*model)?, *header_length, bytes, *limits);
    }
    if let BodyKind::Multipart(boundary) = &job.body {
        let mut images = multipart::images(body.clone(), boundary)?;
        if images.len() > 1 {
            return super::batch::answer(models, &job.work, &images, job.max_batch);
        }
        let image = images.remove(0);
        return infer_one(models, &job.work, &image.bytes);
    }
    infer_one(models, &job.work, bytes)
}

/// Runs the model on one image.
pub(crate) fn infer_one(models: &Models, work: &Work, bytes: &[u8]) -> Result<Reply, ServerError> {
    match work {
        Work::Tags { model, options } => {
            let answer = pipeline::classify(models, *model, bytes, options)?;
            Ok(Reply::json(200, &answer).with_stages(answer.model, answer.timing_ms))
        }
        Work::Digits { mode, decode } => {
            let answer = pipeline::read_digit(models, bytes, *mode, decode)?;
            Ok(Reply::json(200, &answer).with_stages(answer.model, answer.timing_ms))
        }
        Work::V2 { .. } => unreachable!("v2 inference is answered by v2::infer"),
    }
}

/// Answers the cheap routes (no model run).
pub(crate) fn cheap(
    state: &State,
    endpoint: &Endpoint,
    _query: &str,
) -> Result<Reply, ServerError> {
    match endpoint {
        Endpoint::Healthz => Ok(Reply::json(
            200,
            &json!({ "status": "alive", "uptime_s": state.started.elapsed().as_secs_f64() }),
        )),
        Endpoint::Readyz => {
            let draining = state.draining.load(std::sync::atomic::Ordering::SeqCst);
            let status = if draining {
                "draining"
            } else if state.models.get().is_none() {
                "loading"
            } else {
                "ready"
            };
            let code = if state.ready() { 200 } else { 503 };
            let reply = Reply::json(code, &json!({ "status": status }));
            Ok(if code == 503 {
                reply.retry_after()
            } else {
                reply
            })
        }
        Endpoint::Metrics => Ok(Reply::text(
            200,
            metrics::CONTENT_TYPE,
            metrics::render(state).into_bytes(),
        )),
        Endpoint::OpenApi => Ok(Reply::raw_json(200, openapi::document(state))),
        Endpoint::Page => Ok(page::index()),
        Endpoint::V2Server => Ok(v2::server_metadata()),
        Endpoint::V2Live => Ok(v2::health(true)),
        Endpoint::V2Ready => Ok(v2::health(state.ready())),
        Endpoint::V2Model(name, version) => {
            let models = state.models.get().ok_or(ServerError::NotReady)?;
            Ok(v2::model_metadata(v2::model(
                models,
                name,
                version.as_deref(),
            )?))
        }
        Endpoint::V2ModelReady(name, version) => {
            // An unknown model is a 404 even while loading.
            ModelName::from_str(name)?;
            match state.models.get() {
                Some(models) => {
                    v2::model(models, name, version.as_deref())?;
                    Ok(v2::health(state.ready()))
                }
                None => Ok(v2::health(false)),
            }
        }
        Endpoint::Models => {
            let models = state.models.get().ok_or(ServerError::NotReady)?;
            let list: Vec<Value> = models.all().iter().map(|m| model_json(models, m)).collect();
            Ok(Reply::json(
                200,
                &json!({ "default_tags_model": models.default_tags(), "models": list }),
            ))
        }
        Endpoint::Model(name) => {
            let models = state.models.get().ok_or(ServerError::NotReady)?;
            let model = models.get(ModelName::from_str(name)?)?;
            Ok(Reply::json(200, &model_json(models, model)))
        }
        other => unreachable!("{other:?} is an inference route"),
    }
}

/// A model's manifest plus what an API user needs to call it.
pub(crate) fn model_json(models: &Models, model: &Model) -> Value {
    let name = model.name();
    let mut value = serde_json::to_value(&model.manifest).unwrap_or_else(|_| json!({}));
    let (label_count, routes) = match &model.head {
        Head::Tags { labels, .. } => (
            labels.len(),
            vec![
                format!("POST /v1/tags?model={name}"),
                format!("POST /v1/models/{name}/predict"),
            ],
        ),
        Head::Digits { .. } => (
            crate::digits::CLASSES,
            vec![
                "POST /v1/digits".to_string(),
                format!("POST /v1/models/{name}/predict"),
            ],
        ),
    };
    if let Value::Object(map) = &mut value {
        map.insert(
            "default_for_tags".into(),
            json!(name == models.default_tags()),
        );
        map.insert("label_count".into(), json!(label_count));
        map.insert(
            "loaded_from".into(),
            json!(model.manifest.loaded_from.as_deref().unwrap_or("embedded")),
        );
        map.insert("input_shape".into(), json!(model.input_shape()));
        map.insert("routes".into(), json!(routes));
        if model.manifest.weights == Weights::StandIn {
            map.insert("warning".into(), json!(pipeline::stand_in_warning(name)));
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_matches_templates_and_refuses_the_rest() {
        let (route, endpoint) = resolve("POST", "/v1/models/digits/predict");
        assert_eq!(endpoint.unwrap(), Endpoint::Predict("digits".into()));
        assert_eq!(route, "/v1/models/{name}/predict");
        assert_eq!(resolve("HEAD", "/healthz").1.unwrap(), Endpoint::Healthz);
        let (route, e) = resolve("GET", "/v1/tags");
        let e = e.unwrap_err();
        assert_eq!(
            (route, e),
            ("/v1/tags", ServerError::MethodNotAllowed("POST"))
        );
        let e = resolve("DELETE", "/v1/models").1.unwrap_err();
        assert_eq!(e, ServerError::MethodNotAllowed("GET, HEAD"));
        assert_eq!(method_name("PATCH"), "PATCH");
        assert_eq!(method_name("BREW"), "OTHER");
        assert_eq!(resolve("GET", "/").1.unwrap(), Endpoint::Page);
        let (route, endpoint) = resolve("POST", "/v2/models/digits/versions/1/infer");
        assert_eq!(route, "/v2/models/{name}/versions/{version}/infer");
        assert_eq!(
            endpoint.unwrap(),
            Endpoint::V2Infer("digits".into(), Some("1".into()))
        );
        assert_eq!(
            resolve("GET", "/v2/models/resnet18").1.unwrap(),
            Endpoint::V2Model("resnet18".into(), None)
        );
        for path in [
            "/v1/models/",
            "/nope",
            "/v1/tags/x",
            "//",
            "/v2/models//ready",
        ] {
            let (route, e) = resolve("GET", path);
            assert_eq!(
                (route, e.unwrap_err().http_status()),
                ("unmatched", 404),
                "{path}"
            );
        }
    }

    #[test]
    fn queries_are_decoded_and_checked() {
        let q = Query::parse("model=resnet18&min_confidence=0%2E5&x=a+b").unwrap();
        assert_eq!(q.get("min_confidence"), Some("0.5"));
        assert_eq!(q.get("x"), Some("a b"));
        let e = q.only(TAGS_QUERY, "/v1/tags").unwrap_err();
        assert!(e.to_string().contains("`x`"), "{e}");
        assert!(Query::parse("a=1&a=2").is_err());
        assert!(Query::parse("a=%zz").is_err());
        let q = Query::parse("top_k=abc").unwrap();
        let e = q.parse_value::<usize>("top_k", "an integer").unwrap_err();
        assert!(e.to_string().contains("top_k"), "{e}");
    }
}
