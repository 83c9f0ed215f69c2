//! The three embedded models: their manifests, their engines, and which one serves tags.

use std::collections::BTreeMap;
use std::sync::Arc;

use include_dir::{include_dir, Dir};
use serde::{Deserialize, Serialize};

use crate::digits::PlattParameters;
use crate::engine::{memory, Engine, EngineOptions, TractEngine};
use crate::error::{Error, Result};
use crate::model_files::ModelFile;
use crate::preprocess::ImagePreprocess;

/// `models/` as it was when the binary was built: ONNX files, manifests, labels.
pub static EMBEDDED: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/models");

/// The models every surface (routes, `tagger score --model`) accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelName {
    /// torchvision ResNet18 (official ImageNet weights, or the seeded stand-in).
    Resnet18,
    /// EfficientNet-Lite0 with real ImageNet weights.
    EfficientnetLite0,
    /// The scikit-learn digits SVC.
    Digits,
}

impl ModelName {
    /// Every model, in the order they are listed.
    pub const ALL: [ModelName; 3] = [
        ModelName::Resnet18,
        ModelName::EfficientnetLite0,
        ModelName::Digits,
    ];

    /// The name used in URLs, flags and manifests.
    pub fn name(self) -> &'static str {
        match self {
            ModelName::Resnet18 => "resnet18",
            ModelName::EfficientnetLite0 => "efficientnet_lite0",
            ModelName::Digits => "digits",
        }
    }
}

impl std::fmt::Display for ModelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ModelName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        ModelName::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| Error::UnknownModel(s.to_string()))
    }
}

/// What a model answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Task {
    /// Ranked ImageNet-1k categories for a photo.
    #[serde(rename = "imagenet-tags")]
    ImagenetTags,
    /// The digit 0..9 in a picture of a hand-drawn digit.
    #[serde(rename = "digits")]
    Digits,
}

impl Task {
    /// The name in manifests, answers, metrics and `tagger models`.
    pub fn name(self) -> &'static str {
        match self {
            Task::ImagenetTags => "imagenet-tags",
            Task::Digits => "digits",
        }
    }
}

/// Whether a model's weights are the real, published ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Weights {
    /// Published, trained weights: the answers mean something.
    Official,
    /// Seeded random weights with the official graph: the answers mean nothing.
    StandIn,
}

impl Weights {
    /// The name in answers, records, metrics and `tagger models`.
    pub fn name(self) -> &'static str {
        match self {
            Weights::Official => "official",
            Weights::StandIn => "stand-in",
        }
    }
}

/// An input or output of the ONNX graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorSpec {
    /// The graph's name for it.
    pub name: String,
    /// Its shape; `"N"` is the batch dimension.
    pub shape: Vec<serde_json::Value>,
}

/// Where the ONNX file is and what it looks like.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnnxInfo {
    /// File name inside the model's folder.
    pub file: String,
    /// sha256 of the file, checked by the test suite against the embedded bytes.
    pub sha256: String,
    /// ONNX opset.
    pub opset: u32,
    /// The graph input.
    pub input: TensorSpec,
    /// The graph output.
    pub output: TensorSpec,
}

/// The digits model's scikit-learn parameters needed at inference time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SvcInfo {
    /// Platt scaling per one-vs-one pair.
    #[serde(flatten)]
    pub platt: PlattParameters,
}

/// `models/<name>/model.json`: provenance, contract and verification of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The model's name.
    pub name: ModelName,
    /// What it answers.
    pub task: Task,
    /// One sentence for API users.
    pub description: String,
    /// Official or stand-in.
    pub weights: Weights,
    /// Where architecture and weights come from.
    pub source: String,
    /// Licence of the weights.
    pub license: String,
    /// Python packages (and versions) that produced the file.
    #[serde(default)]
    pub packages: BTreeMap<String, String>,
    /// The weight file the export read, with its sha256.
    #[serde(default)]
    pub weights_file: Option<serde_json::Value>,
    /// The ONNX file.
    pub onnx: OnnxInfo,
    /// Preprocessing parameters (see [`ImagePreprocess`] for image models).
    pub preprocess: serde_json::Value,
    /// Label file for image models.
    #[serde(default)]
    pub labels: Option<String>,
    /// What the export script verified, and its figures.
    #[serde(default)]
    pub verification: serde_json::Value,
    /// SVC parameters (digits only).
    #[serde(default)]
    pub svc: Option<SvcInfo>,
    /// The command that wrote this model.
    #[serde(default)]
    pub generated_by: Option<String>,
    /// The file this model was loaded from (`--model-file`); `None`: embedded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded_from: Option<String>,
}

/// What a loaded model needs beyond its engine, by task.
#[derive(Clone)]
pub enum Head {
    /// An ImageNet classifier.
    Tags {
        /// Resize, crop and normalisation.
        preprocess: ImagePreprocess,
        /// Category names by class id.
        labels: Arc<[String]>,
    },
    /// The digits SVC.
    Digits {
        /// Platt scaling parameters.
        platt: PlattParameters,
    },
}

/// A model ready to answer requests.
pub struct Model {
    /// Its manifest, as embedded.
    pub manifest: Manifest,
    /// Task-specific parameters.
    pub head: Head,
    /// The inference engine.
    pub engine: Box<dyn Engine>,
}

impl Model {
    /// The model's name.
    pub fn name(&self) -> ModelName {
        self.manifest.name
    }

    /// The input shape for one sample, batch included.
    pub fn input_shape(&self) -> Vec<usize> {
        self.head.input_shape()
    }
}

impl Head {
    /// The engine's input shape for one sample, batch included.
    pub fn input_shape(&self) -> Vec<usize> {
        match self {
            Head::Tags { preprocess, .. } => vec![1, 3, preprocess.crop, preprocess.crop],
            Head::Digits { .. } => vec![1, 64],
        }
    }
}

/// Reads a file embedded under `models/`.
pub fn embedded_file(path: &str) -> Result<&'static [u8]> {
    EMBEDDED
        .get_file(path)
        .map(|f| f.contents())
        .ok_or_else(|| Error::Internal(format!("models/{path} is not embedded in this binary")))
}

/// Reads and parses `models/<name>/model.json`.
pub fn embedded_manifest(name: ModelName) -> Result<Manifest> {
    let bytes = embedded_file(&format!("{name}/model.json"))?;
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Internal(format!("models/{name}/model.json: {e}")))
}

/// Every embedded model's manifest, in [`ModelName::ALL`] order.
pub fn embedded_manifests() -> Result<Vec<Manifest>> {
    ModelName::ALL.into_iter().map(embedded_manifest).collect()
}

/// The embedded ONNX bytes a manifest describes.
pub fn embedded_onnx(manifest: &Manifest) -> Result<&'static [u8]> {
    embedded_file(&format!("{}/{}", manifest.name, manifest.onnx.file))
}

/// Builds the task-specific head of a model from its manifest and the embedded labels.
pub fn head_for(manifest: &Manifest) -> Result<Head> {
    let name = manifest.name;
    match manifest.task {
        Task::ImagenetTags => {
            let preprocess: ImagePreprocess =
                serde_json::from_value(manifest.preprocess.clone())
                    .map_err(|e| Error::Internal(format!("{name}: preprocess: {e}")))?;
            let file = manifest.labels.as_deref().unwrap_or("labels.txt");
            let text = std::str::from_utf8(embedded_file(file)?)
                .map_err(|e| Error::Internal(format!("{file}: {e}")))?;
            let labels: Arc<[String]> = text.lines().map(str::to_string).collect();
            Ok(Head::Tags { preprocess, labels })
        }
        Task::Digits => {
            let svc = manifest
                .svc
                .clone()
                .ok_or_else(|| Error::Internal(format!("{name}: no svc section")))?;
            Ok(Head::Digits { platt: svc.platt })
        }
    }
}

/// How to load the embedded models.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Cores one inference may use (tract intra-op threads); 1 runs on the caller's thread.
    pub threads_per_inference: usize,
    /// Which model serves `/v1/tags` by default; `None` picks the best real model.
    pub tags_model: Option<ModelName>,
    /// Run convolutions and max-pools on the engine's own ops (see [`crate::engine::rewrite`]);
    /// `false` leaves tract's graph as tract optimises it, for comparisons.
    pub engine_rewrite: bool,
}

/// The environment variable that turns the engine rewrite off (`0`) for every surface.
pub const ENGINE_REWRITE_ENV: &str = "TAGGER_ENGINE_REWRITE";

impl Default for LoadOptions {
    /// One core per inference, the best real tagging model, and the engine rewrite unless
    /// `TAGGER_ENGINE_REWRITE=0`: this is where the server, `tagger score` and the tests read
    /// that variable (the engine itself takes it as an explicit option).
    fn default() -> Self {
        LoadOptions {
            threads_per_inference: 1,
            tags_model: None,
            engine_rewrite: std::env::var(ENGINE_REWRITE_ENV).as_deref() != Ok("0"),
        }
    }
}

/// All models of the binary, loaded, plus the default tagging model.
pub struct Models {
    models: Vec<Model>,
    default_tags: ModelName,
}

impl Models {
    /// Loads and optimises every embedded model (in parallel: start-up time is what a
    /// Kubernetes readiness probe waits for).
    pub fn load_embedded(options: &LoadOptions) -> Result<Models> {
        Models::load_with_files(options, &[])
    }

    /// Like [`Models::load_embedded`], with some models replaced by verified model files.
    pub fn load_with_files(options: &LoadOptions, files: &[ModelFile]) -> Result<Models> {
        Models::load_then(options, files, |_, _| {})
    }

    /// Like [`Models::load_with_files`], calling `loaded(model, by_default)` on each model's
    /// loader thread as soon as that model is ready, while the others may still load (the
    /// server warms its workers up there). `by_default`: a request reaches the model without
    /// naming it ([`Models::serves_by_default`]).
    pub fn load_then(
        options: &LoadOptions,
        files: &[ModelFile],
        loaded: impl Fn(&Model, bool) + Sync,
    ) -> Result<Models> {
        let engine = EngineOptions {
            threads: options.threads_per_inference.max(1),
            rewrite: options.engine_rewrite,
            ..EngineOptions::default()
        };
        // The manifests alone settle the defaults, before any model loads.
        let manifests = ModelName::ALL
            .into_iter()
            .map(|name| match files.iter().find(|f| f.name == name) {
                Some(f) => Ok(f.manifest.clone()),
                None => embedded_manifest(name),
            })
            .collect::<Result<Vec<Manifest>>>()?;
        let default_tags =
            choose_tags_model(&manifests.iter().collect::<Vec<_>>(), options.tags_model)?;
        let loaded = &loaded;
        let models: Vec<Result<Model>> = std::thread::scope(|scope| {
            let handles: Vec<_> = ModelName::ALL
                .into_iter()
                .map(|name| {
                    let file = files.iter().find(|f| f.name == name);
                    scope.spawn(move || {
                        let model = load_one_from(name, &engine, file)?;
                        loaded(&model, serves_by_default(&model.manifest, default_tags));
                        Ok(model)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::Internal("model loader panicked".into())))
                })
                .collect()
        });
        let models: Vec<Model> = models.into_iter().collect::<Result<_>>()?;
        release_loader_memory(&models);
        Models::new(models, options.tags_model)
    }

    /// Assembles models (real or fake) and settles the default tagging model: the requested
    /// one, else ResNet18 when it has official weights, else EfficientNet-Lite0.
    pub fn new(models: Vec<Model>, tags_model: Option<ModelName>) -> Result<Models> {
        let manifests: Vec<&Manifest> = models.iter().map(|m| &m.manifest).collect();
        let default_tags = choose_tags_model(&manifests, tags_model)?;
        Ok(Models {
            models,
            default_tags,
        })
    }

    /// The model of that name.
    pub fn get(&self, name: ModelName) -> Result<&Model> {
        self.models
            .iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| Error::UnknownModel(name.to_string()))
    }

    /// Every loaded model.
    pub fn all(&self) -> &[Model] {
        &self.models
    }

    /// The model that answers `/v1/tags` when the request names none.
    pub fn default_tags(&self) -> ModelName {
        self.default_tags
    }

    /// Whether a request reaches `model` without naming it.
    pub fn serves_by_default(&self, model: &Model) -> bool {
        serves_by_default(&model.manifest, self.default_tags)
    }
}

/// The default tagging model, and the digits model (the only one of its task), serve requests
/// that name no model; any other model only those that ask for it (`?model=`, `/v2/models/..`).
fn serves_by_default(manifest: &Manifest, default_tags: ModelName) -> bool {
    manifest.name == default_tags || manifest.task == Task::Digits
}

/// The model that serves tags: `requested` if it is an ImageNet model, else ResNet18 when it
/// has official weights, else EfficientNet-Lite0 when it does, else any ImageNet model.
pub fn choose_tags_model(
    manifests: &[&Manifest],
    requested: Option<ModelName>,
) -> Result<ModelName> {
    let tagger = |name: ModelName| {
        manifests
            .iter()
            .find(|m| m.name == name && m.task == Task::ImagenetTags)
    };
    match requested {
        Some(name) if tagger(name).is_some() => Ok(name),
        Some(name) => Err(Error::bad_parameter(
            "tags-model",
            format!("`{name}` is not an embedded ImageNet model"),
        )),
        None => [ModelName::Resnet18, ModelName::EfficientnetLite0]
            .into_iter()
            .find(|&name| tagger(name).is_some_and(|m| m.weights == Weights::Official))
            .or_else(|| {
                manifests
                    .iter()
                    .find(|m| m.task == Task::ImagenetTags)
                    .map(|m| m.name)
            })
            .ok_or_else(|| Error::Internal("no ImageNet model is loaded".into())),
    }
}

/// Gives back what loading needed and serving does not: the resident pages of the embedded
/// ONNX files (tract holds its own copy of every weight) and the heap the parsers freed.
fn release_loader_memory(models: &[Model]) {
    for model in models {
        if let Ok(onnx) = embedded_onnx(&model.manifest) {
            memory::release_file_pages(onnx);
        }
    }
    memory::trim_heap();
}

/// Loads and optimises one embedded model, as start-up does.
pub fn load_one(name: ModelName, options: &EngineOptions) -> Result<Model> {
    load_one_from(name, options, None)
}

/// Like [`load_one`], from a verified model file (`--model-file`) when there is one; its
/// bytes are read again (and checked again) here and dropped once the engine has them.
pub fn load_one_from(
    name: ModelName,
    options: &EngineOptions,
    file: Option<&ModelFile>,
) -> Result<Model> {
    let manifest = match file {
        Some(f) => f.manifest.clone(),
        None => embedded_manifest(name)?,
    };
    let head = head_for(&manifest)?;
    let engine = match file {
        Some(f) => {
            let onnx = f
                .read_verified()
                .map_err(|e| Error::Internal(e.to_string()))?;
            TractEngine::load_with(&onnx, &head.input_shape(), options)?
        }
        None => TractEngine::load_with(embedded_onnx(&manifest)?, &head.input_shape(), options)?,
    };
    Ok(Model {
        manifest,
        head,
        engine: Box::new(engine),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifests() -> Vec<Manifest> {
        ModelName::ALL
            .into_iter()
            .map(|n| embedded_manifest(n).unwrap())
            .collect()
    }

    #[test]
    fn official_resnet18_takes_over_tagging() {
        let mut all = manifests();
        all[0].weights = Weights::StandIn;
        assert_eq!(
            choose_tags_model(&all.iter().collect::<Vec<_>>(), None),
            Ok(ModelName::EfficientnetLite0)
        );
        all[0].weights = Weights::Official;
        assert_eq!(
            choose_tags_model(&all.iter().collect::<Vec<_>>(), None),
            Ok(ModelName::Resnet18)
        );
    }

    #[test]
    fn weights_and_tasks_have_one_spelling() {
        for weights in [Weights::Official, Weights::StandIn] {
            assert_eq!(serde_json::to_value(weights).unwrap(), weights.name());
        }
        for task in [Task::ImagenetTags, Task::Digits] {
            assert_eq!(serde_json::to_value(task).unwrap(), task.name());
        }
    }

    #[test]
    fn requested_tags_model_must_be_an_imagenet_model() {
        let all = manifests();
        let refs: Vec<&Manifest> = all.iter().collect();
        assert_eq!(
            choose_tags_model(&refs, Some(ModelName::Resnet18)),
            Ok(ModelName::Resnet18)
        );
        assert_eq!(
            choose_tags_model(&refs, Some(ModelName::Digits))
                .unwrap_err()
                .code(),
            "bad_parameter"
        );
    }
}
