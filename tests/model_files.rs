//! `--model-file NAME=PATH` against the real binary: a copy of an embedded model serves and is
//! reported as loaded from its file; a corrupt, missing or mismatched file stops start-up with
//! exit 2 and a clear message.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::Server;

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models");

/// A fresh folder holding a copy of `models/<name>/` (manifest and ONNX file).
fn copy_model(name: &str, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tagger-test-{}-{tag}/{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["model.json", "model.onnx"] {
        std::fs::copy(Path::new(MODELS).join(name).join(file), dir.join(file)).unwrap();
    }
    dir
}

/// Runs `tagger ARGS` to completion: (exit code, stdout, stderr).
fn tagger(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tagger"));
    command
        .args(args)
        .stdin(Stdio::null())
        .env_remove("TAGGER_MODEL_FILES");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_copy_of_an_embedded_model_serves_and_says_where_it_came_from() {
    let dir = copy_model("digits", "copy");
    let onnx = dir.join("model.onnx");
    let spec = format!("digits={}", onnx.display());
    let server = Server::ready(&["--model-file", &spec]);
    assert!(
        server.log().contains(&format!("from {}", onnx.display())),
        "{}",
        server.log()
    );
    let models = server.get("/v1/models").json();
    for m in models["models"].as_array().unwrap() {
        let expected = if m["name"] == "digits" {
            onnx.display().to_string()
        } else {
            "embedded".to_string()
        };
        assert_eq!(m["loaded_from"], expected.as_str(), "{m}");
    }
    let digit = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/images/digit.png"
    ))
    .unwrap();
    assert_eq!(
        server.post("/v1/digits", "image/png", &digit).json()["digit"],
        7
    );
    drop(server);

    // The environment variable, and `tagger models`.
    let server = Server::ready_with_env(&[], &[("TAGGER_MODEL_FILES", spec.as_str())]);
    assert_eq!(
        server.get("/v1/models/digits").json()["loaded_from"],
        onnx.display().to_string()
    );
    drop(server);
    let (code, stdout, _) = tagger(&["models", "--model-file", &spec], &[]);
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains(&format!("digits loaded from {}", onnx.display())),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

#[test]
fn corrupt_missing_or_mismatched_files_stop_start_up_with_exit_2() {
    let dir = copy_model("digits", "bad");
    let onnx = dir.join("model.onnx");
    let serve = |spec: &str| {
        tagger(
            &["serve", "--addr", "127.0.0.1:0", "--model-file", spec],
            &[],
        )
    };

    // A model under another model's name.
    let (code, _, stderr) = serve(&format!("resnet18={}", onnx.display()));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("describes digits, not resnet18"),
        "{stderr}"
    );
    // Missing.
    let (code, _, stderr) = serve(&format!("digits={}/missing.onnx", dir.display()));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("cannot read"), "{stderr}");
    // Not NAME=PATH.
    let (code, _, stderr) = serve("digits");
    assert_eq!(code, Some(2), "{stderr}");
    // Corrupted: one byte flipped in the middle.
    let mut bytes = std::fs::read(&onnx).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&onnx, &bytes).unwrap();
    let spec = format!("digits={}", onnx.display());
    let (code, _, stderr) = serve(&spec);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("sha256") && stderr.contains("corrupt"),
        "{stderr}"
    );
    let (code, _, stderr) = tagger(&["models"], &[("TAGGER_MODEL_FILES", spec.as_str())]);
    assert_eq!(code, Some(2), "{stderr}");
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}
