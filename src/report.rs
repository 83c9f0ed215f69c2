//! `tagger models`: what the binary carries, which weights each model has, and which model
//! serves tags.

use crate::cli::{optional_setting, CliError, ModelsArgs, EXIT_OK};
use crate::models::{choose_tags_model, embedded_manifest, ModelName, Task, Weights};

/// Prints the embedded models without loading them into the engine.
pub fn models_command(args: ModelsArgs) -> Result<i32, CliError> {
    let tags_model = optional_setting(args.tags_model, "TAGGER_TAGS_MODEL")?;
    let files = crate::model_files::from_flags_or_env(&args.model_file)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let manifests = ModelName::ALL
        .into_iter()
        .map(|name| match files.iter().find(|f| f.name == name) {
            Some(file) => Ok(file.manifest.clone()),
            None => embedded_manifest(name),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let default_tags = choose_tags_model(&manifests.iter().collect::<Vec<_>>(), tags_model)?;
    if args.json {
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
        return Ok(EXIT_OK);
    }
    println!(
        "{:<20} {:<14} {:<10} {:<18} source",
        "model", "task", "weights", "onnx sha256"
    );
    for m in &manifests {
        let task = match m.task {
            Task::ImagenetTags => "imagenet-tags",
            Task::Digits => "digits",
        };
        let weights = match m.weights {
            Weights::Official => "official",
            Weights::StandIn => "STAND-IN",
        };
        println!(
            "{:<20} {:<14} {:<10} {:<18} {}",
            m.name.name(),
            task,
            weights,
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
    Ok(EXIT_OK)
}
