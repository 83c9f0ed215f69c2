//! Model files at run time: `--model-file NAME=PATH` replaces an embedded model with an ONNX
//! file and the manifest next to it, so a host installs official or retrained weights without
//! a rebuild.
//!
//! `PATH` is the ONNX file; its manifest is `model.json` in the same folder (the layout
//! `models/<name>/export.py` writes), with the schema of `models/*/model.json`. Everything is
//! checked before the server binds its socket: the files exist, the manifest parses and names
//! the model, the task is the embedded model's task (the routes depend on it), the file is the
//! one the manifest describes (name and sha256), and the ONNX graph has the manifest's input
//! and output. Any failure is a start-up error (exit 2).

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::models::{embedded_manifest, Manifest, ModelName};

/// The environment variable that lists model files (comma-separated `NAME=PATH`).
pub const ENV: &str = "TAGGER_MODEL_FILES";

/// A model file, verified. Its bytes are not kept: the loader reads them again
/// ([`ModelFile::read_verified`]) and drops them once the engine has its own copy.
#[derive(Debug, Clone)]
pub struct ModelFile {
    /// The model it replaces.
    pub name: ModelName,
    /// The ONNX file as given.
    pub path: PathBuf,
    /// Its manifest, `loaded_from` set to the path.
    pub manifest: Manifest,
}

impl ModelFile {
    /// The ONNX bytes, checked again against the manifest's sha256 (the file may have changed
    /// since start-up).
    pub fn read_verified(&self) -> Result<Vec<u8>, ModelFileError> {
        let onnx = std::fs::read(&self.path).map_err(|e| ModelFileError::Unreadable {
            path: self.path.clone(),
            why: e.to_string(),
        })?;
        check_sha256(&self.path, &onnx, &self.manifest)?;
        Ok(onnx)
    }
}

fn check_sha256(path: &Path, onnx: &[u8], manifest: &Manifest) -> Result<(), ModelFileError> {
    let sha256 = hex(&Sha256::digest(onnx));
    if sha256.eq_ignore_ascii_case(&manifest.onnx.sha256) {
        return Ok(());
    }
    Err(ModelFileError::Mismatch {
        path: path.to_path_buf(),
        why: format!(
            "sha256 is {sha256}, the manifest says {} (corrupt or not this model's file)",
            manifest.onnx.sha256
        ),
    })
}

/// Why a model file cannot be used.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelFileError {
    /// Not `NAME=PATH`, or an unknown name, or a model given twice.
    Spec(String),
    /// A file that cannot be read.
    Unreadable { path: PathBuf, why: String },
    /// The manifest does not parse or does not fit.
    Manifest { path: PathBuf, why: String },
    /// The ONNX file is not the one the manifest describes (corrupt, truncated, swapped).
    Mismatch { path: PathBuf, why: String },
}

impl fmt::Display for ModelFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelFileError::Spec(why) => write!(f, "--model-file: {why}"),
            ModelFileError::Unreadable { path, why } => {
                write!(f, "--model-file: cannot read {}: {why}", path.display())
            }
            ModelFileError::Manifest { path, why } => {
                write!(f, "--model-file: manifest {}: {why}", path.display())
            }
            ModelFileError::Mismatch { path, why } => write!(
                f,
                "--model-file: {} does not match its manifest: {why}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for ModelFileError {}

/// Every `NAME=PATH`, from the flags or else `TAGGER_MODEL_FILES`, read and verified.
pub fn from_flags_or_env(flags: &[String]) -> Result<Vec<ModelFile>, ModelFileError> {
    let specs: Vec<String> = if flags.is_empty() {
        std::env::var(ENV)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    } else {
        flags.to_vec()
    };
    let mut files: Vec<ModelFile> = Vec::new();
    for spec in &specs {
        let (name, path) = parse_spec(spec)?;
        if files.iter().any(|f| f.name == name) {
            return Err(ModelFileError::Spec(format!("{name} is given twice")));
        }
        files.push(load(name, &path)?);
    }
    Ok(files)
}

/// Splits `NAME=PATH`.
pub fn parse_spec(spec: &str) -> Result<(ModelName, PathBuf), ModelFileError> {
    let Some((name, path)) = spec.split_once('=') else {
        return Err(ModelFileError::Spec(format!(
            "`{spec}` is not NAME=PATH (e.g. resnet18=/opt/tagger/resnet18/model.onnx)"
        )));
    };
    let name: ModelName = name
        .trim()
        .parse()
        .map_err(|e: crate::Error| ModelFileError::Spec(e.to_string()))?;
    if path.is_empty() {
        return Err(ModelFileError::Spec(format!("`{spec}` has no path")));
    }
    Ok((name, PathBuf::from(path)))
}

/// Reads and verifies one model file and its manifest.
pub fn load(name: ModelName, path: &Path) -> Result<ModelFile, ModelFileError> {
    let unreadable = |path: &Path, e: std::io::Error| ModelFileError::Unreadable {
        path: path.to_path_buf(),
        why: e.to_string(),
    };
    let manifest_path = path
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("model.json");
    let manifest_bytes =
        std::fs::read(&manifest_path).map_err(|e| unreadable(&manifest_path, e))?;
    let onnx = std::fs::read(path).map_err(|e| unreadable(path, e))?;
    let bad_manifest = |why: String| ModelFileError::Manifest {
        path: manifest_path.clone(),
        why,
    };
    let mut manifest: Manifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| bad_manifest(e.to_string()))?;
    if manifest.name != name {
        return Err(bad_manifest(format!(
            "it describes {}, not {name}",
            manifest.name
        )));
    }
    let embedded = embedded_manifest(name).map_err(|e| bad_manifest(e.to_string()))?;
    if manifest.task != embedded.task {
        return Err(bad_manifest(format!(
            "task {:?}, but {name} must be {:?}",
            manifest.task, embedded.task
        )));
    }
    let mismatch = |why: String| ModelFileError::Mismatch {
        path: path.to_path_buf(),
        why,
    };
    let file_name = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
    if manifest.onnx.file != file_name {
        return Err(mismatch(format!(
            "the manifest describes `{}`, not `{file_name}`",
            manifest.onnx.file
        )));
    }
    check_sha256(path, &onnx, &manifest)?;
    check_graph(&onnx, &manifest).map_err(mismatch)?;
    manifest.loaded_from = Some(path.display().to_string());
    Ok(ModelFile {
        name,
        path: path.to_path_buf(),
        manifest,
    })
}

/// The ONNX graph parses and has the manifest's input and output (a protobuf read without
/// the weights' payloads; the engine loads them later).
fn check_graph(onnx: &[u8], manifest: &Manifest) -> Result<(), String> {
    let proto = crate::engine::onnx_read::decode_without_weights(onnx)
        .map_err(|e| format!("not an ONNX model: {e}"))?;
    let graph = proto.graph.ok_or("the ONNX model has no graph")?;
    let has =
        |list: &[tract_onnx::pb::ValueInfoProto], name: &str| list.iter().any(|v| v.name == name);
    if !has(&graph.input, &manifest.onnx.input.name) {
        return Err(format!(
            "the graph has no input `{}`",
            manifest.onnx.input.name
        ));
    }
    if !has(&graph.output, &manifest.onnx.output.name) {
        return Err(format!(
            "the graph has no output `{}`",
            manifest.onnx.output.name
        ));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{embedded_file, embedded_manifest};

    /// A copy of the embedded digits model in a fresh folder; returns the ONNX path.
    fn copy_digits(dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let manifest = embedded_manifest(ModelName::Digits).unwrap();
        std::fs::write(
            dir.join("model.json"),
            embedded_file("digits/model.json").unwrap(),
        )
        .unwrap();
        let onnx = dir.join(&manifest.onnx.file);
        std::fs::write(&onnx, embedded_file("digits/model.onnx").unwrap()).unwrap();
        onnx
    }

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("tagger-model-files-{}-{name}", std::process::id()))
    }

    #[test]
    fn a_copy_of_an_embedded_model_loads() {
        let dir = temp("copy");
        let onnx = copy_digits(&dir);
        let file = load(ModelName::Digits, &onnx).unwrap();
        assert_eq!(
            file.manifest.loaded_from.as_deref(),
            Some(onnx.to_str().unwrap())
        );
        assert_eq!(file.read_verified().unwrap(), std::fs::read(&onnx).unwrap());
        // Changed after start-up: refused when the loader reads it again.
        std::fs::write(&onnx, b"changed").unwrap();
        assert!(file.read_verified().is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn corrupt_missing_or_mismatched_files_are_refused() {
        let dir = temp("bad");
        let onnx = copy_digits(&dir);
        // Another model's name.
        let e = load(ModelName::Resnet18, &onnx).unwrap_err();
        assert!(matches!(e, ModelFileError::Manifest { .. }), "{e}");
        // One flipped byte.
        let mut bytes = std::fs::read(&onnx).unwrap();
        bytes[1000] ^= 0xff;
        std::fs::write(&onnx, &bytes).unwrap();
        let e = load(ModelName::Digits, &onnx).unwrap_err();
        assert!(e.to_string().contains("sha256"), "{e}");
        // Missing.
        let e = load(ModelName::Digits, &dir.join("nope.onnx")).unwrap_err();
        assert!(matches!(e, ModelFileError::Unreadable { .. }), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn specs_are_name_equals_path() {
        assert_eq!(
            parse_spec("digits=/a/model.onnx").unwrap(),
            (ModelName::Digits, PathBuf::from("/a/model.onnx"))
        );
        for bad in ["digits", "mnist=/a", "digits="] {
            assert!(parse_spec(bad).is_err(), "{bad}");
        }
    }
}
