//! Runs every example under `examples/` that talks to a server (the curl invocations, the
//! Python client, the JavaScript client) against the real binary, so the examples cannot rot.

mod common;

use std::process::Command;

use common::Server;
use serde_json::Value;

fn run(program: &str, args: &[&str], server: &Server) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("TAGGER_URL", format!("http://{}", server.addr))
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// What each curl example must show; every example listed by `curl.sh --list` needs one.
fn check_curl_example(name: &str, out: &str) {
    let cat_ids = [281, 282, 285];
    match name {
        "tags_raw" => {
            let v = json(out);
            assert_eq!(v["model"], "efficientnet_lite0");
            assert!(
                cat_ids.contains(&v["tags"][0]["class_id"].as_u64().unwrap()),
                "{out}"
            );
        }
        "tags_multipart" => {
            let v = json(out);
            let tags = v["tags"].as_array().unwrap();
            assert!(!tags.is_empty() && tags.len() <= 3, "{out}");
            assert!(
                tags.iter()
                    .all(|t| t["confidence"].as_f64().unwrap() >= 0.1),
                "{out}"
            );
        }
        "tags_resnet18_fast" => {
            let v = json(out);
            assert_eq!(v["model"], "resnet18");
            assert!(v["warning"].as_str().unwrap().contains("stand-in"), "{out}");
        }
        "digits_raw" => assert_eq!(json(out)["digit"], 7, "{out}"),
        "digits_multipart_plain" => assert!(json(out)["digit"].is_u64(), "{out}"),
        "predict_generic" => assert_eq!(json(out)["tags"].as_array().unwrap().len(), 2, "{out}"),
        "tags_batch" => {
            let v = json(out);
            let results = v["results"].as_array().unwrap();
            assert_eq!(results.len(), 2, "{out}");
            assert!(cat_ids.contains(&results[0]["tags"][0]["class_id"].as_u64().unwrap()));
        }
        "v2_server" => assert_eq!(json(out)["extensions"][1], "classification", "{out}"),
        "v2_ready" => assert_eq!(out.trim(), "200"),
        "v2_metadata" => assert_eq!(json(out)["platform"], "onnx_onnxv1", "{out}"),
        "v2_infer_json" => {
            let v = json(out);
            assert_eq!(v["outputs"][0]["data"][0], 1, "{out}");
            assert!(
                v["outputs"][1]["data"][0]
                    .as_str()
                    .unwrap()
                    .ends_with(":1:1"),
                "{out}"
            );
        }
        "v2_infer_binary" => {
            let v = json(out);
            let top = v["outputs"][0]["data"][0].as_str().unwrap();
            let index: u64 = top.split(':').nth(1).unwrap().parse().unwrap();
            assert!(cat_ids.contains(&index), "{out}");
        }
        "page" => {
            assert!(out.contains("<title>tagger"), "{out}");
            assert!(out
                .to_lowercase()
                .contains("content-security-policy: default-src 'none'"));
        }
        "models_list" => {
            let text = out.to_string();
            for name in ["resnet18", "efficientnet_lite0", "digits"] {
                assert!(text.contains(name), "{out}");
            }
        }
        "models_one" => assert!(out.contains("\"digits\""), "{out}"),
        "healthz" | "readyz" => assert!(json(out).is_object(), "{out}"),
        "metrics" => assert!(out.contains("tagger_requests_total"), "{out}"),
        "openapi" => assert!(out.contains("openapi"), "{out}"),
        "error_not_an_image" => {
            assert!(out.trim_end().ends_with("HTTP 415"), "{out}");
            assert!(out.contains("unsupported_format"), "{out}");
        }
        "error_bad_parameter" => {
            assert!(out.trim_end().ends_with("HTTP 400"), "{out}");
            assert!(out.contains("top_k"), "{out}");
        }
        other => panic!("examples/curl.sh has an example `{other}` that this test does not check"),
    }
}

#[test]
fn every_curl_example_works_against_a_live_server() {
    let server = Server::ready(&[]);
    let names = run("bash", &["examples/curl.sh", "--list"], &server);
    let names: Vec<&str> = names.lines().collect();
    assert!(names.len() >= 21, "{names:?}");
    for name in names {
        let out = run("bash", &["examples/curl.sh", name], &server);
        check_curl_example(name, &out);
    }
}

#[test]
fn python_and_javascript_clients_work() {
    let server = Server::ready(&[]);
    let tags = run(
        "python3",
        &[
            "examples/client.py",
            "--multipart",
            "examples/images/cat.jpg",
        ],
        &server,
    );
    assert!(tags.contains("cat"), "{tags}");
    let digit = run(
        "python3",
        &[
            "examples/client.py",
            "--digits",
            "examples/images/digit.png",
        ],
        &server,
    );
    assert!(digit.starts_with("digit 7"), "{digit}");
    let batch = run(
        "python3",
        &[
            "examples/client.py",
            "examples/images/cat.jpg",
            "examples/images/digit.png",
        ],
        &server,
    );
    assert_eq!(batch.matches("== ").count(), 2, "{batch}");
    assert!(batch.contains("cat"), "{batch}");
    let batch = run(
        "node",
        &[
            "examples/client.mjs",
            "examples/images/cat.jpg",
            "examples/images/digit.png",
        ],
        &server,
    );
    assert_eq!(batch.matches("== ").count(), 2, "{batch}");
    let tags = run(
        "node",
        &["examples/client.mjs", "examples/images/cat.jpg"],
        &server,
    );
    assert!(tags.contains("cat"), "{tags}");
    let digit = run(
        "node",
        &[
            "examples/client.mjs",
            "examples/images/digit.png",
            "--digits",
        ],
        &server,
    );
    assert!(digit.starts_with("digit 7"), "{digit}");
}
