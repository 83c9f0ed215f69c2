//! `tagger models`: what the binary carries, which weights each model has, and which model
//! serves tags (without loading any model into the engine).

use crate::error::Result;
use crate::model_files::ModelFile;
use crate::models::{choose_tags_model, embedded_manifest, ModelName, Weights};

/// What to print.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The manifests as JSON instead of a table.
    pub json: bool,
    /// The tagging model asked for; `None`: the library's choice.
    pub tags_model: Option<ModelName>,
    /// Verified model files (`--model-file`) that replace embedded models.
    pub model_files: Vec<ModelFile>,
}

/// Prints the models: embedded, or from their `--model-file`.
pub fn run(config: &Config) -> Result<()> {
    let manifests = ModelName::ALL
        .into_iter()
        .map(
            |name| match config.model_files.iter().find(|f| f.name == name) {
                Some(file) => Ok(file.manifest.clone()),
                None => embedded_manifest(name),
            },
        )
        .collect::<Result<Vec<_>>>()?;
    let default_tags = choose_tags_model(&manifests.iter().collect::<Vec<_>>(), config.tags_model)?;
    if config.json {
        let models: Vec<serde_json::Value> = manifests
            .iter()
            .map(|m| {
                let mut value = serde_json::to_value(m).unwrap_or_default();
                value["loaded_from"] =
                    serde_json::json!(m.loaded_from.as_deref().unwrap_or("embedded"));
                value
            })
            .collect();
        let body = serde_json::json!({ "default_tags_model": default_tags, "models": models });
        println!(
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        );
        return Ok(());
    }
    println!(
        "{:<20} {:<14} {:<10} {:<18} source",
        "model", "task", "weights", "onnx sha256"
    );
    for m in &manifests {
        println!(
            "{:<20} {:<14} {:<10} {:<18} {}",
            m.name.name(),
            m.task.name(),
            m.weights.name(),
            &m.onnx.sha256[..16],
            m.source
        );
    }
    for m in &manifests {
        if let Some(path) = &m.loaded_from {
            println!("{} loaded from {path} (sha256 verified)", m.name.name());
        }
    }
    if manifests.iter().all(|m| m.loaded_from.is_none()) {
        println!("(every model is embedded in the binary; --model-file NAME=PATH replaces one)");
    }
    println!("\ndefault tagging model: {default_tags}");
    if manifests.iter().any(|m| m.weights == Weights::StandIn) {
        println!(
            "stand-in weights are seeded random: their tags mean nothing (README, \"Models\")."
        );
    }
    Ok(())
}
