//! Loads the models on a background thread after the socket is bound, so `/healthz` answers at
//! once; warms every worker up; logs what serves what and tells systemd `READY=1` when done.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::dispatch::Pools;
use super::notify;
use super::state::State;
use crate::models::{LoadOptions, Models, Weights};

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
            match Models::load_with_files(&options, &state.config.model_files) {
                Ok(models) => {
                    log_models(&models);
                    if state.config.warm_up {
                        let start = Instant::now();
                        pools.warm_up(&models);
                        // The warm-up runs' activations are free again: give them back (15 MB
                        // at ready; the first requests then cost 12-19 ms instead of 12-14,
                        // still far from a cold run's 40).
                        crate::engine::memory::trim_heap();
                        log::info!(
                            "workers warmed up in {:.0} ms",
                            start.elapsed().as_secs_f64() * 1e3
                        );
                    } else {
                        log::info!("warm-up skipped (--no-warm-up): the first runs are cold");
                    }
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
