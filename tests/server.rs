//! `tagger serve` over real sockets: the real binary on an ephemeral port.
//!
//! Every route, every error status, raw and multipart bodies, keep-alive, 32 concurrent
//! clients, the bounded queue (503), read timeouts (408), SIGTERM drain with a request in
//! flight, systemd notifications, the OpenAPI document against the route table, the metrics,
//! the `healthcheck` command and the flags.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{fixture, image, multipart, request, Conn, Server};
use serde_json::Value;

/// ImageNet classes a correct tagger gives the chelsea photo: tabby, tiger cat, Egyptian cat.
const CAT_CLASSES: [u64; 3] = [281, 282, 285];

fn top_class(answer: &Value) -> u64 {
    answer["tags"][0]["class_id"].as_u64().expect("a top tag")
}

/// Opens a connection and starts a JPEG upload to `path`, sending only its first `sent` bytes:
/// the request is admitted and holds its slot until the rest arrives (or the read times out).
fn post_partial(server: &Server, path: &str, jpeg: &[u8], sent: usize) -> Conn {
    let mut conn = server.connect();
    conn.send_head(
        "POST",
        path,
        &[("Content-Type", "image/jpeg")],
        Some(jpeg.len()),
    );
    conn.send(&jpeg[..sent]);
    conn
}

fn assert_tags(answer: &Value, max: usize) {
    let tags = answer["tags"].as_array().expect("tags");
    assert!(!tags.is_empty() && tags.len() <= max, "{answer}");
    let confidences: Vec<f64> = tags
        .iter()
        .map(|t| t["confidence"].as_f64().unwrap())
        .collect();
    assert!(
        confidences.windows(2).all(|w| w[0] >= w[1]),
        "descending: {answer}"
    );
    assert!(tags.iter().all(|t| t["label"].is_string()));
}

/// Polls `/metrics` until a line equals `needle` (e.g. a request has been admitted).
fn wait_for_metric(server: &Server, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = server.get("/metrics").text();
        if text.lines().any(|l| l == needle) {
            return;
        }
        assert!(Instant::now() < deadline, "never saw {needle}:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn tags_digits_models_health_docs_and_metrics() {
    let server = Server::ready(&["--workers", "2"]);
    let cat = image("chelsea.jpg");

    // Default model, raw body: official EfficientNet-Lite0, a cat, no warning.
    let r = server.post("/v1/tags", "image/jpeg", &cat);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert!(r.header("X-Request-Id").is_some_and(|id| id.len() >= 8));
    let answer = r.json();
    assert_eq!(answer["model"], "efficientnet_lite0");
    assert_eq!(answer["weights"], "official");
    assert!(answer.get("warning").is_none(), "{answer}");
    assert!(CAT_CLASSES.contains(&top_class(&answer)), "{answer}");
    assert_tags(&answer, 5);
    assert_eq!(answer["image"]["width"], 451);
    assert_eq!(answer["image"]["height"], 300);
    assert_eq!(answer["image"]["format"], "jpeg");
    for stage in ["decode", "preprocess", "inference"] {
        assert!(answer["timing_ms"][stage].as_f64().unwrap() >= 0.0);
    }

    // ResNet18 stand-in: the answer says its tags mean nothing.
    let r = server.post("/v1/tags?model=resnet18", "application/octet-stream", &cat);
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = r.json();
    assert_eq!(answer["model"], "resnet18");
    assert_eq!(answer["weights"], "stand-in");
    assert!(answer["warning"].as_str().unwrap().contains("stand-in"));

    // Query parameters.
    let r = server.post("/v1/tags?top_k=2&decode=fast", "image/jpeg", &cat);
    let answer = r.json();
    assert_eq!(answer["tags"].as_array().unwrap().len(), 2, "{answer}");
    assert!(CAT_CLASSES.contains(&top_class(&answer)), "{answer}");
    let r = server.post("/v1/tags?min_confidence=0.999", "image/jpeg", &cat);
    assert_eq!(r.status, 200);
    assert!(r.json()["tags"].as_array().unwrap().is_empty());

    // No Content-Type: read as raw bytes.
    let r = request(server.addr, "POST", "/v1/tags?top_k=1", &[], &cat);
    assert_eq!(r.status, 200, "{}", r.text());

    // Multipart: the `image` field wins over an earlier file part; else the first file part.
    let (ct, body) = multipart(&[
        ("note", None, b"hello"),
        ("thumbnail", Some("x.png"), b"not this one"),
        ("image", Some("cat.jpg"), &cat),
    ]);
    let r = server.post("/v1/tags", &ct, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(CAT_CLASSES.contains(&top_class(&r.json())));
    let (ct, body) = multipart(&[("note", None, b"hi"), ("upload", Some("cat.jpg"), &cat)]);
    let r = server.post("/v1/tags", &ct, &body);
    assert_eq!(r.status, 200, "{}", r.text());

    // Digits, raw and multipart.
    let mut right = 0;
    for d in [2, 3, 5, 8] {
        let png = fixture(&format!("digits/eval/{d}_000.png"));
        let r = server.post("/v1/digits", "image/png", &png);
        assert_eq!(r.status, 200, "{}", r.text());
        let answer = r.json();
        assert_eq!(answer["model"], "digits");
        let p: Vec<f64> = answer["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(p.len(), 10);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-6, "{answer}");
        let digit = answer["digit"].as_u64().unwrap() as usize;
        assert_eq!(answer["confidence"].as_f64().unwrap(), p[digit]);
        right += usize::from(digit == d);
    }
    assert!(right >= 3, "{right} of 4 digits read");
    let png = fixture("digits/eval/8_000.png");
    let (ct, body) = multipart(&[("image", Some("8.png"), &png)]);
    let r = server.post("/v1/digits?preprocess=plain", &ct, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["preprocess"], "plain");

    // The generic predict route, both kinds of model.
    let r = server.post(
        "/v1/models/efficientnet_lite0/predict?top_k=1",
        "image/jpeg",
        &cat,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["tags"].as_array().unwrap().len(), 1);
    let r = server.post(
        "/v1/models/digits/predict?preprocess=default",
        "image/png",
        &png,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "digits");

    // Models.
    let models = server.get("/v1/models").json();
    assert_eq!(models["default_tags_model"], "efficientnet_lite0");
    let list = models["models"].as_array().unwrap();
    let names: BTreeSet<&str> = list.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["resnet18", "efficientnet_lite0", "digits"])
    );
    for m in list {
        assert!(m["onnx"]["sha256"].as_str().unwrap().len() == 64, "{m}");
        assert!(m["description"].is_string() && m["source"].is_string());
        assert!(m["label_count"].as_u64().unwrap() >= 10);
        assert_eq!(
            m["default_for_tags"],
            m["name"] == "efficientnet_lite0",
            "{m}"
        );
    }
    let resnet = server.get("/v1/models/resnet18").json();
    assert_eq!(resnet["weights"], "stand-in");
    assert!(resnet["warning"].is_string());
    assert_eq!(resnet["label_count"], 1000);
    assert_eq!(server.get("/v1/models/digits").json()["label_count"], 10);

    // Health.
    let r = server.get("/healthz");
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (200, Some("alive"))
    );
    let r = server.get("/readyz");
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (200, Some("ready"))
    );
    let mut conn = server.connect();
    let r = conn.request("HEAD", "/healthz", &[], b"");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());

    // The OpenAPI document: exactly the router's paths, methods and query parameters.
    let doc = server.get("/openapi.json").json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let paths = doc["paths"].as_object().unwrap();
    // src/server/openapi.rs checks the document against the route table; here, the router
    // behind the served document knows every documented path (with a model name filled in): a
    // wrong method is a 405 there, not a 404, with an `Allow` header.
    for template in paths.keys() {
        let path = template.replace("{name}", "digits");
        let r = request(server.addr, "OPTIONS", &path, &[], b"");
        assert_eq!(r.status, 405, "{path}");
        assert!(r.header("Allow").is_some(), "{path}: no Allow");
    }
    assert_eq!(
        doc["components"]["parameters"]["model"]["schema"]["default"],
        "efficientnet_lite0"
    );

    // Metrics after all this.
    let r = server.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(r
        .header("Content-Type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = r.text();
    for needle in [
        "tagger_requests_total{route=\"/v1/tags\",method=\"POST\",status=\"200\"}",
        "tagger_requests_total{route=\"/v1/digits\",method=\"POST\",status=\"200\"}",
        "tagger_requests_total{route=\"/v1/models/{name}/predict\",method=\"OPTIONS\",status=\"405\"}",
        "tagger_request_duration_seconds_bucket{le=\"+Inf\",route=\"/v1/tags\"}",
        "tagger_stage_duration_seconds_count{stage=\"inference\",model=\"efficientnet_lite0\"}",
        "tagger_stage_duration_seconds_count{stage=\"decode\",model=\"digits\"}",
        "tagger_requests_in_flight 0",
        "tagger_queue_depth 0",
        "tagger_workers 2",
        "tagger_ready 1",
        "tagger_model_info{model=\"resnet18\",task=\"imagenet-tags\",weights=\"stand-in\",default_tags=\"false\"",
        "tagger_model_info{model=\"efficientnet_lite0\",task=\"imagenet-tags\",weights=\"official\",default_tags=\"true\"",
        "process_resident_memory_bytes ",
    ] {
        assert!(text.contains(needle), "missing {needle}:\n{text}");
    }
    let tags_ok: u64 = text
        .lines()
        .find(|l| {
            l.starts_with(
                "tagger_requests_total{route=\"/v1/tags\",method=\"POST\",status=\"200\"}",
            )
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap();
    assert_eq!(tags_ok, 7, "{text}");

    // One access-log line per request, with the id the client saw.
    let r = request(
        server.addr,
        "GET",
        "/healthz",
        &[("X-Request-Id", "trace-abc.123")],
        b"",
    );
    assert_eq!(r.header("X-Request-Id"), Some("trace-abc.123"));
    std::thread::sleep(Duration::from_millis(100));
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("GET /healthz 200") && l.contains("id=trace-abc.123")),
        "{log}"
    );
    assert!(
        log.contains("/v1/tags is served by efficientnet_lite0"),
        "{log}"
    );
    assert!(log.contains("resnet18 carries stand-in weights"), "{log}");
}

#[test]
fn every_error_status_and_no_5xx_from_bad_input() {
    let server = Server::ready(&["--max-pixels", "1000000", "--max-body-bytes", "1048576"]);
    let addr = server.addr;
    let cat = image("chelsea.jpg");
    let mut statuses = Vec::new();
    let mut check = |r: common::Response, status: u16, code: &str| {
        assert_eq!(r.status, status, "{}", r.text());
        assert_eq!(r.code(), code, "{}", r.text());
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        statuses.push(r.status);
        r
    };

    // 400: undecodable, empty, bad or unknown query values, wrong model, bad multipart.
    let r = check(
        server.post("/v1/tags", "image/jpeg", &image("corrupt_truncated.jpg")),
        400,
        "undecodable_image",
    );
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("decoded"));
    check(
        server.post("/v1/tags", "image/jpeg", b""),
        400,
        "empty_image",
    );
    let r = check(
        server.post("/v1/tags?top_k=9", "image/jpeg", &cat),
        400,
        "bad_parameter",
    );
    assert!(r.text().contains("top_k"), "{}", r.text());
    let r = check(
        server.post("/v1/tags?top_k=abc", "image/jpeg", &cat),
        400,
        "bad_parameter",
    );
    assert!(r.text().contains("top_k"), "{}", r.text());
    let r = check(
        server.post("/v1/tags?min_confidence=2", "image/jpeg", &cat),
        400,
        "bad_parameter",
    );
    assert!(r.text().contains("min_confidence"));
    check(
        server.post("/v1/tags?decode=blurry", "image/jpeg", &cat),
        400,
        "bad_parameter",
    );
    let r = check(
        server.post("/v1/tags?topk=3", "image/jpeg", &cat),
        400,
        "bad_parameter",
    );
    assert!(r.text().contains("topk"));
    check(
        server.post("/v1/digits?preprocess=fancy", "image/png", &cat),
        400,
        "bad_parameter",
    );
    check(
        server.post("/v1/models/digits/predict?top_k=1", "image/png", &cat),
        400,
        "bad_parameter",
    );
    check(
        server.post("/v1/tags?model=digits", "image/jpeg", &cat),
        400,
        "wrong_model_task",
    );
    let (ct, body) = multipart(&[("note", None, b"no file here")]);
    check(server.post("/v1/tags", &ct, &body), 400, "bad_multipart");
    check(
        server.post("/v1/tags", "multipart/form-data", &cat),
        400,
        "bad_multipart",
    );

    // 404: route and model.
    check(server.get("/nope"), 404, "not_found");
    check(server.get("/v1/models/nope"), 404, "unknown_model");
    check(
        server.post("/v1/tags?model=nope", "image/jpeg", &cat),
        404,
        "unknown_model",
    );
    check(
        server.post("/v1/models/nope/predict", "image/jpeg", &cat),
        404,
        "unknown_model",
    );

    // 405 with Allow.
    let r = check(server.get("/v1/tags"), 405, "method_not_allowed");
    assert_eq!(r.header("Allow"), Some("POST"));
    let r = check(
        server.post("/healthz", "image/jpeg", b"x"),
        405,
        "method_not_allowed",
    );
    assert_eq!(r.header("Allow"), Some("GET, HEAD"));
    let r = check(
        request(addr, "DELETE", "/v1/models/digits", &[], b""),
        405,
        "method_not_allowed",
    );
    assert_eq!(r.header("Allow"), Some("GET, HEAD"));

    // 413 from Content-Length alone: the head is enough, no body is ever sent.
    let mut conn = Conn::open(addr);
    conn.send_head(
        "POST",
        "/v1/tags",
        &[("Content-Type", "image/jpeg")],
        Some(2 << 20),
    );
    check(conn.read_response(false).unwrap(), 413, "payload_too_large");
    // A client that waits for 100-continue is refused before it sends anything.
    let mut conn = Conn::open(addr);
    conn.send_head(
        "POST",
        "/v1/tags",
        &[("Content-Type", "image/jpeg"), ("Expect", "100-continue")],
        Some(2 << 20),
    );
    check(conn.read_response(false).unwrap(), 413, "payload_too_large");
    // 413 while reading a chunked body that declares no length.
    let mut conn = Conn::open(addr);
    conn.send_head(
        "POST",
        "/v1/tags",
        &[
            ("Content-Type", "image/jpeg"),
            ("Transfer-Encoding", "chunked"),
        ],
        None,
    );
    let chunk = vec![0xAB; 256 << 10];
    for _ in 0..5 {
        conn.send(format!("{:x}\r\n", chunk.len()).as_bytes());
        conn.send(&chunk);
        conn.send(b"\r\n");
    }
    conn.send(b"0\r\n\r\n");
    check(conn.read_response(false).unwrap(), 413, "payload_too_large");
    // An absurd Content-Length: answered, and the server lives on.
    let mut conn = Conn::open(addr);
    conn.send_head(
        "POST",
        "/v1/tags",
        &[("Content-Type", "image/jpeg")],
        Some(100_000_000_000_000),
    );
    conn.send(b"abc");
    check(conn.read_response(false).unwrap(), 413, "payload_too_large");

    // 415: media type, and bytes in no image format.
    check(
        server.post("/v1/tags", "text/plain", &cat),
        415,
        "unsupported_media_type",
    );
    check(
        server.post("/v1/tags", "application/x-www-form-urlencoded", &cat),
        415,
        "unsupported_media_type",
    );
    check(
        server.post("/v1/tags", "image/jpeg", &image("not_an_image.jpg")),
        415,
        "unsupported_format",
    );

    // 422: 1600x1067 is over --max-pixels 1000000, refused from the header.
    let r = check(
        server.post("/v1/tags", "image/jpeg", &image("big.jpg")),
        422,
        "image_too_large",
    );
    assert!(r.text().contains("1600x1067"), "{}", r.text());

    // Chunked bodies within the limit work.
    let mut conn = Conn::open(addr);
    conn.send_head(
        "POST",
        "/v1/tags?top_k=1",
        &[
            ("Content-Type", "image/jpeg"),
            ("Transfer-Encoding", "chunked"),
        ],
        None,
    );
    for part in cat.chunks(10_000) {
        conn.send(format!("{:x}\r\n", part.len()).as_bytes());
        conn.send(part);
        conn.send(b"\r\n");
    }
    conn.send(b"0\r\n\r\n");
    let r = conn.read_response(false).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    // An insane X-Request-Id is replaced.
    let r = request(addr, "GET", "/healthz", &[("X-Request-Id", "a b\"c")], b"");
    assert_ne!(r.header("X-Request-Id"), Some("a b\"c"));

    assert!(statuses.iter().all(|&s| s < 500), "{statuses:?}");
    // Still healthy, and the healthcheck command agrees.
    assert_eq!(server.get("/readyz").status, 200);
    let healthcheck = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tagger"))
            .arg("healthcheck")
            .args(args)
            .env_remove("TAGGER_ADDR")
            .output()
            .unwrap()
            .status
            .code()
    };
    let port = addr.port().to_string();
    assert_eq!(
        healthcheck(&["--addr", &format!("0.0.0.0:{port}")]),
        Some(0)
    );
    assert_eq!(
        healthcheck(&["--addr", &format!("127.0.0.1:{port}"), "--path", "/nope"]),
        Some(1)
    );
    assert_eq!(healthcheck(&["--addr", "127.0.0.1:1"]), Some(1));
    assert_eq!(healthcheck(&["--addr", "not an address"]), Some(2));
}

#[test]
fn workers_warm_up_before_ready_unless_told_not_to() {
    // Default: every worker runs the models that serve requests naming none (the default tags
    // model, digits) once before /readyz turns 200; the others are left to their first request.
    for (args, warmed, cold) in [
        (&[][..], ["efficientnet_lite0", "digits"], "resnet18"),
        (
            &["--tags-model", "resnet18"][..],
            ["resnet18", "digits"],
            "efficientnet_lite0",
        ),
    ] {
        let server = Server::ready(&[&["--workers", "2"], args].concat());
        let log = server.log();
        let ready = log.find("ready: models loaded").expect("ready logged");
        for name in warmed {
            let at = log
                .find(&format!("workers warmed up on {name} in"))
                .unwrap_or_else(|| panic!("{name} warmed up: {log}"));
            assert!(at < ready, "{log}");
        }
        assert!(!log.contains(&format!("warmed up on {cold}")), "{log}");
        assert!(
            log.contains(&format!(
                "not warmed up (only requests naming them reach them): {cold};"
            )),
            "{log}"
        );
    }
    // --no-warm-up (or TAGGER_NO_WARM_UP=1): ready once loaded; the first request still right.
    for (args, env) in [
        (&["--no-warm-up"][..], &[][..]),
        (&[][..], &[("TAGGER_NO_WARM_UP", "1")][..]),
    ] {
        let cold = Server::ready_with_env(args, env);
        let log = cold.log();
        assert!(log.contains("warm-up skipped"), "{log}");
        assert!(!log.contains("workers warmed up"), "{log}");
        let r = cold.post("/v1/tags", "image/jpeg", &image("chelsea.jpg"));
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(CAT_CLASSES.contains(&top_class(&r.json())));
    }
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let server = Server::ready(&[]);
    let cat = image("chelsea.jpg");
    let mut conn = server.connect();
    for i in 0..3 {
        let r = conn.post("/v1/tags?top_k=1", "image/jpeg", &cat);
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert!(CAT_CLASSES.contains(&top_class(&r.json())));
        // Errors, with and without a body, leave the connection usable.
        assert_eq!(conn.get("/nope").status, 404);
        assert_eq!(conn.post("/v1/tags", "text/plain", b"hello").status, 415);
        assert_eq!(
            conn.post("/v1/tags?top_k=0", "image/jpeg", &cat).status,
            400
        );
        assert_eq!(conn.get("/healthz").status, 200);
    }
    // Pipelined: two requests sent back to back, answered in order.
    let mut two = Vec::new();
    for path in ["/v1/tags?top_k=2", "/v1/tags?top_k=1"] {
        two.extend_from_slice(
            format!(
                "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\n\
                 Content-Length: {}\r\n\r\n",
                cat.len()
            )
            .as_bytes(),
        );
        two.extend_from_slice(&cat);
    }
    conn.send(&two);
    let first = conn.read_response(false).unwrap();
    let second = conn.read_response(false).unwrap();
    assert_eq!(first.json()["tags"].as_array().unwrap().len(), 2);
    assert_eq!(second.json()["tags"].as_array().unwrap().len(), 1);
}

#[test]
fn pipelined_split_and_closing_requests_keep_their_order_and_framing() {
    let server = Server::ready(&[]);
    let mut conn = server.connect();
    // Twenty heads in one write, and the start of a twenty-first: answered in order, and the
    // split head completes when its rest arrives (each request gets a fresh hyper connection;
    // what one had read ahead is handed to the next).
    let mut burst = Vec::new();
    for i in 0..20 {
        burst.extend_from_slice(
            format!("GET /healthz HTTP/1.1\r\nHost: t\r\nX-Request-Id: p{i}\r\n\r\n").as_bytes(),
        );
    }
    burst.extend_from_slice(b"GET /v1/models HTTP/1.1\r\nX-Request-Id: split\r\nHo");
    conn.send(&burst);
    for i in 0..20 {
        let r = conn.read_response(false).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("X-Request-Id"), Some(format!("p{i}").as_str()));
    }
    std::thread::sleep(Duration::from_millis(300));
    conn.send(b"st: t\r\n\r\n");
    let r = conn.read_response(false).unwrap();
    assert_eq!((r.status, r.header("X-Request-Id")), (200, Some("split")));
    // Idle between requests, then served again.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(conn.get("/healthz").status, 200);
    // `Connection: close` from the client: answered, then closed.
    let r = conn.request("GET", "/healthz", &[("Connection", "close")], b"");
    assert_eq!(r.status, 200);
    assert!(
        conn.read_response(false).is_err(),
        "still open after Connection: close"
    );
    // HTTP/1.0: closed after the answer unless it asks for keep-alive.
    let mut old = server.connect();
    old.send(b"GET /healthz HTTP/1.0\r\n\r\n");
    assert_eq!(old.read_response(false).unwrap().status, 200);
    assert!(old.read_response(false).is_err(), "HTTP/1.0 left open");
    let mut old = server.connect();
    for _ in 0..2 {
        old.send(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let r = old.read_response(false).unwrap();
        assert_eq!(r.status, 200);
    }
}

#[test]
fn thirty_two_concurrent_clients_are_all_answered_correctly() {
    let server = Server::ready(&["--workers", "2"]);
    let cat = image("chelsea.jpg");
    let digit = fixture("digits/eval/8_000.png");
    let addr = server.addr;
    let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..32)
            .map(|i| {
                let (cat, digit) = (&cat, &digit);
                scope.spawn(move || -> Result<(), String> {
                    let mut conn = Conn::try_open(addr).map_err(|e| e.to_string())?;
                    for round in 0..2 {
                        let r = if (i + round) % 4 == 3 {
                            conn.post("/v1/digits", "image/png", digit)
                        } else {
                            conn.post("/v1/tags", "image/jpeg", cat)
                        };
                        if r.status != 200 {
                            return Err(format!("client {i}: {} {}", r.status, r.text()));
                        }
                        let answer = r.json();
                        let ok = if answer["model"] == "digits" {
                            answer["digit"].as_u64().is_some()
                        } else {
                            CAT_CLASSES.contains(&top_class(&answer))
                        };
                        if !ok {
                            return Err(format!("client {i}: wrong answer {answer}"));
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let failures: Vec<_> = results.into_iter().filter_map(Result::err).collect();
    assert!(failures.is_empty(), "{failures:#?}");
    let metrics = server.get("/metrics").text();
    assert!(metrics.contains("tagger_requests_in_flight 0"), "{metrics}");
    assert!(metrics.contains("tagger_queue_depth 0"), "{metrics}");
}

#[test]
fn a_full_queue_answers_503_at_once_and_cheap_routes_stay_up() {
    let server = Server::ready(&[
        "--workers",
        "1",
        "--queue-depth",
        "0",
        "--queue-wait-ms",
        "0",
        "--read-timeout-secs",
        "2",
    ]);
    let cat = image("chelsea.jpg");
    // Client A is admitted (the only slot) and holds it by sending half its body.
    let mut a = post_partial(&server, "/v1/tags?top_k=1", &cat, cat.len() / 2);
    wait_for_metric(&server, "tagger_queue_depth 1");

    let start = Instant::now();
    let r = server.post("/v1/tags", "image/jpeg", &cat);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.code(), "queue_full");
    assert_eq!(r.header("Retry-After"), Some("1"));
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    let r = server.post("/v1/digits", "image/png", &fixture("digits/eval/8_000.png"));
    assert_eq!(r.status, 503);
    // Cheap routes answer while the inference capacity is taken.
    for path in ["/healthz", "/readyz", "/v1/models", "/openapi.json"] {
        assert_eq!(server.get(path).status, 200, "{path}");
    }
    let metrics = server.get("/metrics").text();
    assert!(metrics.contains("tagger_queue_depth 1"), "{metrics}");
    assert!(metrics.contains("tagger_queue_capacity 1"), "{metrics}");
    assert!(
        metrics
            .contains("tagger_requests_total{route=\"/v1/tags\",method=\"POST\",status=\"503\"} 1"),
        "{metrics}"
    );

    // A finishes and gets its answer; the slot is free again.
    a.send(&cat[cat.len() / 2..]);
    let r = a.read_response(false).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = server.post("/v1/tags", "image/jpeg", &cat);
    assert_eq!(r.status, 200, "{}", r.text());

    // A client that stalls mid-body gets 408 after --read-timeout-secs and frees its slot.
    let mut stalled = post_partial(&server, "/v1/tags", &cat, 1000);
    let start = Instant::now();
    let r = stalled.read_response(false).unwrap();
    assert_eq!(r.status, 408, "{}", r.text());
    assert_eq!(r.code(), "request_timeout");
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );
    let r = server.post("/v1/tags", "image/jpeg", &cat);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn beyond_capacity_a_request_waits_queue_wait_ms_for_a_slot_then_503() {
    let server = Server::ready(&[
        "--workers",
        "1",
        "--queue-depth",
        "0",
        "--queue-wait-ms",
        "700",
    ]);
    let cat = image("chelsea.jpg");
    let mut a = post_partial(&server, "/v1/tags?top_k=1", &cat, cat.len() / 2);
    wait_for_metric(&server, "tagger_queue_depth 1");
    // Nothing frees the only slot: 503 after the wait, not before, and not much after.
    let start = Instant::now();
    let r = server.post("/v1/tags", "image/jpeg", &cat);
    let waited = start.elapsed();
    assert_eq!(
        (r.status, r.code().as_str()),
        (503, "queue_full"),
        "{}",
        r.text()
    );
    assert_eq!(r.header("Retry-After"), Some("1"));
    assert!(
        waited >= Duration::from_millis(650) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    // A slot freed during the wait admits the waiting request.
    let addr = server.addr;
    let waiting = std::thread::spawn(move || {
        let mut conn = Conn::open(addr);
        conn.post("/v1/tags?top_k=1", "image/jpeg", &image("chelsea.jpg"))
    });
    std::thread::sleep(Duration::from_millis(200));
    a.send(&cat[cat.len() / 2..]);
    assert_eq!(a.read_response(false).unwrap().status, 200);
    let r = waiting.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn sigterm_drains_the_request_in_flight_then_exits_0() {
    let dir = std::env::temp_dir().join(format!("tagger-server-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket_path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&socket_path);
    let notify = UnixDatagram::bind(&socket_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut server = Server::ready_with_env(
        &["--drain-secs", "20"],
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())],
    );
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).contains("READY=1"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );

    let cat = image("chelsea.jpg");
    // A request in flight: admitted, half its body sent.
    let mut in_flight = post_partial(&server, "/v1/tags", &cat, cat.len() / 2);
    wait_for_metric(&server, "tagger_queue_depth 1");
    // An idle keep-alive connection, opened before the signal.
    let mut idle = server.connect();
    assert_eq!(idle.get("/readyz").status, 200);

    server.sigterm();
    let n = notify.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    // /readyz turns 503 at once; new inference work is refused.
    let r = idle.get("/readyz");
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["status"], "draining");
    let r = idle.post("/v1/tags", "image/jpeg", &cat);
    assert_eq!((r.status, r.code().as_str()), (503, "shutting_down"));
    // No new connections (the listener is closed before STOPPING=1 is sent).
    assert!(
        Conn::try_open(server.addr)
            .and_then(|mut c| c.try_request("GET", "/healthz", &[], b""))
            .is_err(),
        "a new connection was served after SIGTERM"
    );
    assert!(server.wait_exit(Duration::from_millis(500)).is_none());

    // The request in flight completes with a real answer.
    in_flight.send(&cat[cat.len() / 2..]);
    let r = in_flight.read_response(false).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(CAT_CLASSES.contains(&top_class(&r.json())));
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("the server exits after the drain");
    assert_eq!(status.code(), Some(0), "{}", server.log());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn flags_are_documented_and_bad_values_are_usage_errors() {
    let tagger = env!("CARGO_BIN_EXE_tagger");
    let help = Command::new(tagger)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    // Each option's description (which may wrap) names its variable and its default.
    let options: Vec<&str> = help
        .split("\n  --")
        .skip(1)
        .filter(|o| !o.starts_with("help"))
        .collect();
    assert!(options.len() >= 11, "{help}");
    for option in options {
        let flat = option.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains("env TAGGER_") && flat.contains("default"),
            "--{flat}"
        );
    }
    for (args, env) in [
        (vec!["--workers", "0"], vec![]),
        (vec!["--addr", "nonsense"], vec![]),
        (vec!["--tags-model", "digits"], vec![]),
        (vec!["--decode", "blurry"], vec![]),
        (vec![], vec![("TAGGER_QUEUE_DEPTH", "lots")]),
    ] {
        let out = Command::new(tagger)
            .arg("serve")
            .args(&args)
            .envs(env.iter().copied())
            .env("TAGGER_ADDR", "127.0.0.1:0")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {out:?}");
    }
}

#[test]
fn a_busy_port_fails_with_status_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_tagger"))
        .args(["serve", "--addr", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let mut stderr = std::io::stderr();
    let _ = stderr.flush();
}
