//! Open Inference Protocol (KServe v2) REST against the real binary: metadata, health, JSON
//! tensors, the binary tensor data extension, classification, batches, errors in the
//! protocol's `{"error": "..."}` shape. (tests/clients/triton_client.py drives the same routes
//! with tritonclient from CI.)

mod common;

use common::{image, Server};
use serde_json::{json, Value};

/// A `[1,64]` feature vector of a "1" in scikit-learn's digits layout (values 0..16).
const ONE: [i64; 64] = [
    0, 0, 0, 12, 13, 5, 0, 0, 0, 0, 0, 11, 16, 9, 0, 0, 0, 0, 3, 15, 16, 6, 0, 0, 0, 7, 15, 16, 16,
    2, 0, 0, 0, 0, 1, 16, 16, 3, 0, 0, 0, 0, 1, 16, 16, 6, 0, 0, 0, 0, 1, 16, 16, 6, 0, 0, 0, 0, 0,
    11, 16, 10, 0, 0,
];

const CATS: [u64; 3] = [281, 282, 285];

fn post_json(server: &Server, path: &str, body: &Value) -> common::Response {
    server.post(path, "application/json", body.to_string().as_bytes())
}

/// A binary-data request: JSON header, then each image as a BYTES element.
fn binary_request(header: &Value, images: &[&[u8]]) -> (Vec<u8>, String) {
    let mut body = header.to_string().into_bytes();
    let length = body.len();
    for image in images {
        body.extend_from_slice(&(image.len() as u32).to_le_bytes());
        body.extend_from_slice(image);
    }
    (body, length.to_string())
}

fn bytes_size(images: &[&[u8]]) -> usize {
    images.iter().map(|i| 4 + i.len()).sum()
}

/// Splits a binary-data response into its JSON header and binary part.
fn split(response: &common::Response) -> (Value, Vec<u8>) {
    let length: usize = response
        .header("Inference-Header-Content-Length")
        .expect("Inference-Header-Content-Length")
        .parse()
        .unwrap();
    (
        serde_json::from_slice(&response.body[..length]).unwrap(),
        response.body[length..].to_vec(),
    )
}

fn bytes_elements(mut data: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let n = u32::from_le_bytes(data[..4].try_into().unwrap()) as usize;
        out.push(String::from_utf8(data[4..4 + n].to_vec()).unwrap());
        data = &data[4 + n..];
    }
    out
}

#[test]
fn metadata_and_health() {
    let server = Server::ready(&[]);
    let meta = server.get("/v2");
    assert_eq!(meta.status, 200);
    assert_eq!(
        meta.json()["extensions"],
        json!(["binary_tensor_data", "classification"])
    );
    for path in [
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/digits/ready",
    ] {
        let r = server.get(path);
        assert_eq!((r.status, r.body.len()), (200, 0), "{path}");
    }
    assert_eq!(
        server.get("/v2/models/resnet18/versions/1/ready").status,
        200
    );
    let m = server.get("/v2/models/efficientnet_lite0").json();
    assert_eq!(m["platform"], "onnx_onnxv1");
    assert_eq!(m["versions"], json!(["1"]));
    assert_eq!(
        m["inputs"],
        json!([
            {"name": "image", "datatype": "BYTES", "shape": [-1]},
            {"name": "input", "datatype": "FP32", "shape": [-1, 3, 224, 224]}
        ])
    );
    let d = server.get("/v2/models/digits/versions/1").json();
    assert_eq!(
        d["outputs"],
        json!([
            {"name": "digit", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}
        ])
    );
    // Errors: the protocol's shape, /v1's statuses.
    let r = server.get("/v2/models/nope");
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].as_str().unwrap().contains("nope"));
    let r = server.get("/v2/models/digits/versions/2");
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].as_str().unwrap().contains("version"));
    let r = server.get("/v2/models/digits/infer");
    assert_eq!((r.status, r.header("Allow")), (405, Some("POST")));
    assert!(r.json()["error"].is_string());
    assert_eq!(server.get("/v2/nothing").status, 404);
    assert!(server.get("/v2/nothing").json()["error"].is_string());
}

#[test]
fn json_tensors_digits_and_classification() {
    let server = Server::ready(&[]);
    let request = json!({
        "id": "abc",
        "inputs": [{"name": "features", "datatype": "INT64", "shape": [2, 64],
                    "data": [ONE.to_vec(), ONE.to_vec()]}],
        "outputs": [{"name": "digit"},
                    {"name": "probabilities", "parameters": {"classification": 2}}]
    });
    let r = post_json(&server, "/v2/models/digits/infer", &request);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["id"], "abc");
    assert_eq!(v["model_name"], "digits");
    assert_eq!(v["outputs"][0]["data"], json!([1, 1]));
    assert_eq!(v["outputs"][1]["shape"], json!([2, 2]));
    let top = v["outputs"][1]["data"][0].as_str().unwrap();
    assert!(top.ends_with(":1:1"), "{top}");
    // No outputs named: all of them, as JSON.
    let request = json!({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 64],
                                    "data": ONE.to_vec()}]});
    let v = post_json(&server, "/v2/models/digits/versions/1/infer", &request).json();
    let names: Vec<&str> = v["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["digit", "probabilities"]);
    let p: f64 = v["outputs"][1]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .sum();
    assert!((p - 1.0).abs() < 1e-3, "{p}");
}

#[test]
fn binary_images_batch_and_binary_outputs() {
    let server = Server::ready(&[]);
    let cat = image("chelsea.jpg");
    let coffee = image("coffee.jpg");
    let images: [&[u8]; 2] = [&cat, &coffee];
    let header = json!({
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [2],
                    "parameters": {"binary_data_size": bytes_size(&images)}}],
        "outputs": [{"name": "probabilities",
                     "parameters": {"classification": 3, "binary_data": true}}]
    });
    let (body, length) = binary_request(&header, &images);
    let r = common::request(
        server.addr,
        "POST",
        "/v2/models/efficientnet_lite0/infer",
        &[
            ("Content-Type", "application/octet-stream"),
            ("Inference-Header-Content-Length", &length),
        ],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let (json, binary) = split(&r);
    let out = &json["outputs"][0];
    assert_eq!(
        (out["datatype"].as_str(), &out["shape"]),
        (Some("BYTES"), &json!([2, 3]))
    );
    assert_eq!(out["parameters"]["binary_data_size"], binary.len());
    let labels = bytes_elements(&binary);
    assert_eq!(labels.len(), 6);
    let cat_index: u64 = labels[0].split(':').nth(1).unwrap().parse().unwrap();
    assert!(CATS.contains(&cat_index), "{labels:?}");
    assert!(labels[3].contains(":967:espresso"), "{labels:?}");
    // The same answers as /v1/tags.
    let v1 = server.post("/v1/tags", "image/jpeg", &cat).json();
    let score: f64 = labels[0].split(':').next().unwrap().parse().unwrap();
    assert!((score - v1["tags"][0]["confidence"].as_f64().unwrap()).abs() < 1e-6);

    // FP32 probabilities as binary data: 1000 little-endian floats per image.
    let header = json!({
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                    "parameters": {"binary_data_size": bytes_size(&images[..1])}}],
        "parameters": {"binary_data_output": true}
    });
    let (body, length) = binary_request(&header, &images[..1]);
    let r = common::request(
        server.addr,
        "POST",
        "/v2/models/efficientnet_lite0/infer",
        &[("Inference-Header-Content-Length", &length)],
        &body,
    );
    let (json, binary) = split(&r);
    assert_eq!(json["outputs"][0]["shape"], json!([1, 1000]));
    let p: Vec<f32> = binary
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(p.len(), 1000);
    let best = (0..1000).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
    assert!(CATS.contains(&(best as u64)), "{best}");
}

#[test]
fn preprocessed_tensors_and_errors() {
    let server = Server::ready(&["--max-batch", "2", "--max-body-bytes", "2000000"]);
    // FP32 [1,3,224,224] for clients that preprocess themselves.
    let request = json!({
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 224, 224],
                    "data": vec![0.0f32; 3 * 224 * 224]}],
        "outputs": [{"name": "probabilities", "parameters": {"classification": 1}}]
    });
    let r = post_json(&server, "/v2/models/resnet18/infer", &request);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["outputs"][0]["shape"], json!([1, 1]));

    let error = |r: common::Response, status: u16, needle: &str| {
        assert_eq!(r.status, status, "{}", r.text());
        let message = r.json()["error"].as_str().unwrap().to_string();
        assert!(message.contains(needle), "{message}");
    };
    let features = |shape: Value, data: Value| json!({"inputs": [{"name": "features", "datatype": "FP32", "shape": shape, "data": data}]});
    let path = "/v2/models/digits/infer";
    error(
        post_json(&server, path, &features(json!([1, 63]), json!(vec![0; 63]))),
        400,
        "[N, 64]",
    );
    error(
        post_json(&server, path, &features(json!([1, 64]), json!([1, 2]))),
        400,
        "64 elements",
    );
    error(
        post_json(
            &server,
            path,
            &features(json!([3, 64]), json!(vec![0; 192])),
        ),
        413,
        "limit is 2",
    );
    error(
        post_json(
            &server,
            path,
            &json!({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1], "data": [1]}]}),
        ),
        400,
        "no input `pixels`",
    );
    error(
        post_json(
            &server,
            "/v2/models/efficientnet_lite0/infer",
            &json!({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["not an image"]}]}),
        ),
        415,
        "unsupported image format",
    );
    let mut req = features(json!([1, 64]), json!(ONE.to_vec()));
    req["outputs"] = json!([{"name": "logits"}]);
    error(post_json(&server, path, &req), 400, "no output `logits`");
    error(
        server.post(path, "application/json", b"{not json"),
        400,
        "not valid JSON",
    );
    let r = common::request(
        server.addr,
        "POST",
        path,
        &[("Inference-Header-Content-Length", "999")],
        b"{}",
    );
    error(r, 400, "Inference-Header-Content-Length");
    // Over --max-body-bytes: refused from Content-Length before reading.
    let mut conn = server.connect();
    conn.send_head(
        "POST",
        path,
        &[("Content-Type", "application/json")],
        Some(3_000_000),
    );
    error(conn.read_response(false).unwrap(), 413, "limit");
}
