//! `tagger models` and `tagger bench` run as processes: what they print, and their exit codes.

mod common;

use common::process::{run, stderr, stdout, tagger};
use serde_json::Value;

#[test]
fn models_lists_every_embedded_model_and_the_default_tagging_model() {
    let output = run(&["models", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let body: Value = serde_json::from_str(&stdout(&output)).unwrap();
    let models = body["models"].as_array().unwrap();
    let names: Vec<&str> = models.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["resnet18", "efficientnet_lite0", "digits"]);
    for m in models {
        assert!(
            ["official", "stand-in"].contains(&m["weights"].as_str().unwrap()),
            "{m}"
        );
        assert_eq!(m["onnx"]["sha256"].as_str().unwrap().len(), 64, "{m}");
    }
    // The default serves tags with real weights.
    let default = body["default_tags_model"].as_str().unwrap();
    let manifest = models.iter().find(|m| m["name"] == default).unwrap();
    assert_eq!(manifest["task"], "imagenet-tags");
    assert_eq!(manifest["weights"], "official");

    // The table says the same, one row per model.
    let table = stdout(&run(&["models"]));
    for m in models {
        let row = table
            .lines()
            .find(|l| l.starts_with(m["name"].as_str().unwrap()))
            .unwrap_or_else(|| panic!("no row for {}:\n{table}", m["name"]));
        assert!(row.contains(m["weights"].as_str().unwrap()), "{row}");
        assert!(
            row.contains(&m["onnx"]["sha256"].as_str().unwrap()[..16]),
            "{row}"
        );
    }
    assert!(
        table.contains(&format!("default tagging model: {default}")),
        "{table}"
    );
}

#[test]
fn models_takes_the_tagging_model_from_the_flag_or_the_environment() {
    let default_of = |output: std::process::Output| -> String {
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let body: Value = serde_json::from_str(&stdout(&output)).unwrap();
        body["default_tags_model"].as_str().unwrap().to_string()
    };
    assert_eq!(
        default_of(run(&["models", "--json", "--tags-model", "resnet18"])),
        "resnet18"
    );
    let from_env = tagger()
        .args(["models", "--json"])
        .env("TAGGER_TAGS_MODEL", "resnet18")
        .output()
        .unwrap();
    assert_eq!(default_of(from_env), "resnet18");

    // Not an ImageNet model, not a model, not a flag: usage errors that say why.
    for args in [
        &["models", "--tags-model", "digits"][..],
        &["models", "--tags-model", "nope"],
        &["models", "--bogus"],
    ] {
        let output = run(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
        assert!(!stderr(&output).is_empty(), "{args:?}");
    }
    let output = tagger()
        .arg("models")
        .env("TAGGER_TAGS_MODEL", "digits")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("ImageNet"), "{}", stderr(&output));
}

#[test]
fn bench_times_every_stage_of_every_model() {
    let output = run(&["bench", "--runs", "1", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let figures: Vec<Value> = serde_json::from_str(&stdout(&output)).unwrap();
    let what: Vec<&str> = figures
        .iter()
        .map(|f| f["what"].as_str().unwrap())
        .collect();
    for expected in [
        "resnet18: load + optimise",
        "efficientnet_lite0: load + optimise",
        "digits: load + optimise",
        "decode 451x300 exact",
        "decode 12MP fast",
        "efficientnet_lite0: preprocess 451x300 exact",
        "resnet18: inference batch 1, 1 thread",
        "resnet18: inference batch 8, 1 thread, per image",
        "digits: inference only",
    ] {
        assert!(what.contains(&expected), "no `{expected}` in {what:?}");
    }
    for f in &figures {
        let median = f["median_ms"].as_f64().unwrap();
        assert!(median > 0.0 && median.is_finite(), "{f}");
    }

    let output = run(&["bench", "--runs", "1", "--image", "/nonexistent/photo.jpg"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("/nonexistent/photo.jpg"),
        "{}",
        stderr(&output)
    );
}
