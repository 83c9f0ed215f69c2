//! Loads the models on a background thread after the socket is bound, so `/healthz` answers at
//! once; warms every worker up on the models that serve by default; logs what serves what and
//! tells systemd `READY=1` when done.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::dispatch::Pools;
use super::notify;
use super::state::State;
use crate::models::{LoadOptions, Model, Models, Weights};

/// Loads the models on a background thread, then logs what serves what and notifies systemd.
pub(crate) fn spawn_loader(state: Arc<State>, pools: Arc<Pools>, exec: Instant) {
    std::thread::Builder::new()
        .name("tagger-loader".into())
        .spawn(move || {
            let options = LoadOptions {
                threads_per_inference: state.config.inference_threads,
                tags_model: state.config.tags_model,
                ..LoadOptions::default()
            };
            let warm_up = state.config.warm_up;
            // Each model that serves requests naming none is warmed up on every worker as soon
            // as it is loaded, while the others still load. The rest warm up on their first
            // requests: warming ResNet18 too cost each worker a 25-30 ms run before ready (on
            // two cores, a third of the start-up), for first runs measured only 0-15% slower
            // than its median.
            let loaded = |model: &Model, by_default: bool| {
                if warm_up && by_default {
                    let start = Instant::now();
                    pools.warm_up(model);
                    log::info!(
                        "workers warmed up on {} in {:.0} ms",
                        model.name().name(),
                        start.elapsed().as_secs_f64() * 1e3
                    );
                }
            };
            match Models::load_then(&options, &state.config.model_files, loaded) {
                Ok(models) => {
                    log_models(&models);
                    if !warm_up {
                        log::info!("warm-up skipped (--no-warm-up): the first runs are cold");
                    }
                    let cold: Vec<&str> = models
                        .all()
                        .iter()
                        .filter(|m| warm_up && !models.serves_by_default(m))
                        .map(|m| m.name().name())
                        .collect();
                    if !cold.is_empty() {
                        log::info!(
                            "not warmed up (only requests naming them reach them): {}; their \
                             first run on each worker is cold",
                            cold.join(", ")
                        );
                    }
                    crate::engine::memory::release_code_pages();
                    let _ = state.models.set(models);
                    log::info!(
                        "ready: models loaded {:.0} ms after start",
                        exec.elapsed().as_secs_f64() * 1e3
                    );
                    if !state.draining.load(Ordering::SeqCst) {
                        notify::notify("READY=1\nSTATUS=serving");
                    }
                }
                Err(e) => {
                    log::error!("loading the models failed: {e}");
                    *state.load_error.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(e.to_string());
                }
            }
        })
        .expect("spawning the model loader thread");
}

fn log_models(models: &Models) {
    for model in models.all() {
        let m = &model.manifest;
        let weights = match m.weights {
            Weights::Official => "official",
            Weights::StandIn => "STAND-IN",
        };
        log::info!(
            "model {}: {:?} weights {}, onnx sha256 {}, from {}, source: {}",
            m.name,
            m.task,
            weights,
            m.onnx.sha256,
            m.loaded_from.as_deref().unwrap_or("the binary (embedded)"),
            m.source
        );
        if m.weights == Weights::StandIn {
            log::warn!(
                "model {} carries stand-in weights (seeded random): its tags mean nothing; every \
                 answer from it carries a `warning`",
                m.name
            );
        }
    }
    log::info!(
        "/v1/tags is served by {} unless a request names ?model=",
        models.default_tags()
    );
}
