//! `tagger models`: what the binary carries, which weights each model has, and which model
//! serves tags (without loading any model into the engine).

use crate::error::Result;
use crate::models::{choose_tags_model, embedded_manifests, ModelName, Weights};

/// What to print.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The manifests as JSON instead of a table.
    pub json: bool,
    /// The tagging model asked for; `None`: the library's choice.
    pub tags_model: Option<ModelName>,
}

/// Prints the embedded models.
pub fn run(config: &Config) -> Result<()> {
    let manifests = embedded_manifests()?;
    let default_tags = choose_tags_model(&manifests.iter().collect::<Vec<_>>(), config.tags_model)?;
    if config.json {
        let body = serde_json::json!({ "default_tags_model": default_tags, "models": manifests });
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
    println!("\ndefault tagging model: {default_tags}");
    if manifests.iter().any(|m| m.weights == Weights::StandIn) {
        println!(
            "stand-in weights are seeded random: their tags mean nothing (README, \"Models\")."
        );
    }
    Ok(())
}
