//! Each subcommand's flags, `TAGGER_*` variables and defaults resolved into its front-end's
//! plain `Config`: the front-ends never see argh or the environment. A bad value is a usage
//! error (exit 2) before any work starts.

use std::path::PathBuf;
use std::time::Duration;

use super::args::{BenchArgs, HealthcheckArgs, ModelsArgs, ScoreArgs, ServeArgs};
use super::settings::{
    at_least_one, available_cores, optional_setting, setting, socket_addr, switch,
};
use super::CliError;
use crate::image::{DecodeMode, DecodeOptions};
use crate::models::{choose_tags_model, embedded_manifests, ModelName};
use crate::pipeline::{self, ClassifyOptions};
use crate::score::{OutputFormat, Shard};
use crate::{bench, catalog, healthcheck, score, server};

/// Where `serve` listens and `healthcheck` probes when neither `--addr` nor `TAGGER_ADDR` says.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";

/// `--tags-model`, else `TAGGER_TAGS_MODEL`, checked by the core's one rule for which models
/// may serve tags (an embedded ImageNet model).
pub fn tags_model(flag: Option<ModelName>) -> Result<Option<ModelName>, CliError> {
    let Some(name) = optional_setting(flag, "TAGGER_TAGS_MODEL")? else {
        return Ok(None);
    };
    let manifests = embedded_manifests()?;
    choose_tags_model(&manifests.iter().collect::<Vec<_>>(), Some(name))?;
    Ok(Some(name))
}

/// A number of seconds as a limit; 0: none.
fn seconds(secs: u64) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(secs))
}

impl ServeArgs {
    /// `serve`'s settings.
    pub fn resolve(self) -> Result<server::Config, CliError> {
        let addr = setting(self.addr, "TAGGER_ADDR", DEFAULT_ADDR.to_string())?;
        let timeout =
            |flag: Option<u64>, env: &str, default: u64| setting(flag, env, default).map(seconds);
        let defaults = DecodeOptions::default();
        Ok(server::Config {
            addr: socket_addr("addr", &addr)?,
            workers: at_least_one(
                setting(self.workers, "TAGGER_WORKERS", available_cores())?,
                "workers",
            )?,
            inference_threads: at_least_one(
                setting(self.inference_threads, "TAGGER_INFERENCE_THREADS", 1)?,
                "inference-threads",
            )?,
            queue_depth: setting(self.queue_depth, "TAGGER_QUEUE_DEPTH", 64)?,
            queue_wait: Duration::from_millis(setting(
                self.queue_wait_ms,
                "TAGGER_QUEUE_WAIT_MS",
                500,
            )?),
            max_body_bytes: at_least_one(
                setting(self.max_body_bytes, "TAGGER_MAX_BODY_BYTES", 20 << 20)?,
                "max-body-bytes",
            )?,
            max_pixels: at_least_one(
                setting(self.max_pixels, "TAGGER_MAX_PIXELS", defaults.max_pixels)?,
                "max-pixels",
            )?,
            read_timeout: timeout(self.read_timeout_secs, "TAGGER_READ_TIMEOUT_SECS", 30)?,
            write_timeout: timeout(self.write_timeout_secs, "TAGGER_WRITE_TIMEOUT_SECS", 30)?,
            header_timeout: timeout(self.header_timeout_secs, "TAGGER_HEADER_TIMEOUT_SECS", 10)?,
            keep_alive: timeout(self.keep_alive_secs, "TAGGER_KEEP_ALIVE_SECS", 15)?,
            max_connections: at_least_one(
                setting(
                    self.max_connections,
                    "TAGGER_MAX_CONNECTIONS",
                    server::default_max_connections(),
                )?,
                "max-connections",
            )?,
            drain: Duration::from_secs(setting(self.drain_secs, "TAGGER_DRAIN_SECS", 25)?),
            warm_up: !switch(self.no_warm_up, "TAGGER_NO_WARM_UP")?,
            tags_model: tags_model(self.tags_model)?,
            decode: setting(self.decode, "TAGGER_DECODE", DecodeMode::default())?,
            max_batch: at_least_one(
                setting(self.max_batch, "TAGGER_MAX_BATCH", 32)?,
                "max-batch",
            )?,
            model_files: crate::model_files::from_flags_or_env(&self.model_file)
                .map_err(|e| CliError::Usage(e.to_string()))?,
        })
    }
}

impl ScoreArgs {
    /// `score`'s settings.
    pub fn resolve(self) -> Result<score::Config, CliError> {
        if self.paths.is_empty() {
            return Err(CliError::Usage(
                "score: name at least one file or folder (e.g. `tagger score ./photos`)".into(),
            ));
        }
        let defaults = DecodeOptions::default();
        let classify = ClassifyOptions {
            top_k: setting(self.top_k, "TAGGER_TOP_K", pipeline::MAX_TOP_K)?,
            min_confidence: setting(self.min_confidence, "TAGGER_MIN_CONFIDENCE", 0.0)?,
            decode: DecodeOptions {
                mode: setting(self.decode, "TAGGER_DECODE", defaults.mode)?,
                max_pixels: setting(self.max_pixels, "TAGGER_MAX_PIXELS", defaults.max_pixels)?,
            },
        };
        classify.validate()?;
        let jobs = at_least_one(
            setting(self.jobs, "TAGGER_JOBS", available_cores())?,
            "jobs",
        )?;
        Ok(score::Config {
            paths: self.paths,
            model: optional_setting(self.model, "TAGGER_MODEL")?,
            tags_model: tags_model(self.tags_model)?,
            classify,
            format: setting(self.format, "TAGGER_FORMAT", OutputFormat::Jsonl)?,
            jobs,
            output: optional_setting(self.output, "TAGGER_OUTPUT")?.map(PathBuf::from),
            shard: setting(self.shard, "TAGGER_SHARD", Shard::ALL)?,
            recursive: !switch(self.no_recursive, "TAGGER_NO_RECURSIVE")?,
            digits_preprocess: setting(
                self.digits_preprocess,
                "TAGGER_DIGITS_PREPROCESS",
                crate::digits::DigitMode::Auto,
            )?,
        })
    }
}

impl HealthcheckArgs {
    /// `healthcheck`'s settings; `TAGGER_ADDR` is the variable the server reads too.
    pub fn resolve(self) -> Result<healthcheck::Config, CliError> {
        let addr = setting(self.addr, "TAGGER_ADDR", DEFAULT_ADDR.to_string())?;
        let path = setting(self.path, "TAGGER_HEALTHCHECK_PATH", "/readyz".to_string())?;
        let secs = setting(self.timeout_secs, "TAGGER_HEALTHCHECK_TIMEOUT_SECS", 3)?;
        if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(CliError::Usage(format!(
                "--path {path:?}: expected an absolute path such as /readyz"
            )));
        }
        Ok(healthcheck::Config {
            addr: socket_addr("addr", &addr)?,
            path,
            timeout: Duration::from_secs(secs.max(1)),
        })
    }
}

impl ModelsArgs {
    /// `models`' settings.
    pub fn resolve(self) -> Result<catalog::Config, CliError> {
        Ok(catalog::Config {
            json: self.json,
            tags_model: tags_model(self.tags_model)?,
            model_files: crate::model_files::from_flags_or_env(&self.model_file)
                .map_err(|e| CliError::Usage(e.to_string()))?,
        })
    }
}

impl BenchArgs {
    /// `bench`'s settings; `--image` is read here, so a missing file fails before any timing.
    pub fn resolve(self) -> Result<bench::Config, CliError> {
        let extra_photo = match self.image {
            Some(path) => {
                let bytes = std::fs::read(&path)
                    .map_err(|e| CliError::Failure(format!("--image {path}: {e}")))?;
                Some((path, bytes))
            }
            None => None,
        };
        Ok(bench::Config {
            runs: self.runs,
            extra_photo,
            json: self.json,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_imagenet_models_serve_tags() {
        assert_eq!(
            tags_model(Some(ModelName::EfficientnetLite0)).unwrap(),
            Some(ModelName::EfficientnetLite0)
        );
        assert!(matches!(
            tags_model(Some(ModelName::Digits)),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn healthcheck_paths_must_be_absolute() {
        let args = |path: &str| HealthcheckArgs {
            addr: Some("0.0.0.0:8080".into()),
            path: Some(path.into()),
            timeout_secs: Some(1),
        };
        let config = args("/readyz").resolve().unwrap();
        assert_eq!(config.addr, "0.0.0.0:8080".parse().unwrap());
        assert!(matches!(args("readyz").resolve(), Err(CliError::Usage(_))));
        assert!(matches!(args("/a b").resolve(), Err(CliError::Usage(_))));
    }
}
