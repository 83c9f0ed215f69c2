//! `/metrics`: the Prometheus project's `prometheus-client` keeps the counters, gauges and
//! histograms and writes the OpenMetrics text format; the gauges that describe the server's
//! state now (queue, readiness, connections, memory) are read from it at each scrape.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::state::State;
use crate::models::ModelName;
use crate::pipeline::Timing;

/// What `/metrics` answers with.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the histogram buckets; `+Inf` is implied.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: &'static str,
    model: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: &'static str,
    task: &'static str,
    weights: &'static str,
    default_tags: &'static str,
    sha256: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Gauges set from the server's state at each scrape.
#[derive(Default)]
struct Now {
    in_flight: Gauge,
    queue_depth: Gauge,
    queue_capacity: Gauge,
    workers: Gauge,
    ready: Gauge,
    draining: Gauge,
    open_connections: Gauge,
    refused_connections: Counter,
    evicted_connections: Counter,
    resident_bytes: Gauge,
    start_time: Gauge<f64, AtomicU64>,
    model_info: Family<ModelLabels, Gauge>,
}

/// The server's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histograms<RouteLabels>,
    stages: Histograms<StageLabels>,
    now: Now,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: Histograms<RouteLabels> = Family::new_with_constructor(histogram);
        let stages: Histograms<StageLabels> = Family::new_with_constructor(histogram);
        let now = Now::default();
        registry.register(
            "tagger_requests",
            "Requests answered, by route template, method and status",
            requests.clone(),
        );
        registry.register(
            "tagger_request_duration_seconds",
            "Time from receiving a request to its answer being ready, by route",
            latency.clone(),
        );
        registry.register(
            "tagger_stage_duration_seconds",
            "Time per pipeline stage (decode, preprocess, inference) of successful inferences, \
             by model",
            stages.clone(),
        );
        let gauges: [(&str, &str, &Gauge); 8] = [
            (
                "tagger_requests_in_flight",
                "Inference requests running on a worker now",
                &now.in_flight,
            ),
            (
                "tagger_queue_depth",
                "Inference requests admitted and not yet on a worker (body upload or waiting)",
                &now.queue_depth,
            ),
            (
                "tagger_queue_capacity",
                "Inference requests admitted at most at once (workers + queue depth); beyond \
                 it: 503",
                &now.queue_capacity,
            ),
            (
                "tagger_workers",
                "Worker threads (requests inferred side by side)",
                &now.workers,
            ),
            (
                "tagger_ready",
                "1 when the models are loaded and the server is not draining",
                &now.ready,
            ),
            ("tagger_draining", "1 after SIGTERM/SIGINT", &now.draining),
            (
                "tagger_open_connections",
                "Client connections held open now (capped by --max-connections)",
                &now.open_connections,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory of the process",
                &now.resident_bytes,
            ),
        ];
        for (name, help, gauge) in gauges {
            registry.register(name, help, gauge.clone());
        }
        registry.register(
            "tagger_connections_refused",
            "Connections closed at once at the cap because every open connection carried a \
             request",
            now.refused_connections.clone(),
        );
        registry.register(
            "tagger_connections_evicted",
            "Idle or half-sent connections closed at the cap to make room for a new one",
            now.evicted_connections.clone(),
        );
        registry.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch",
            now.start_time.clone(),
        );
        registry.register(
            "tagger_model_info",
            "Loaded models: task, weights (official or stand-in), whether it serves /v1/tags by \
             default, ONNX sha256",
            now.model_info.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            stages,
            now,
        }
    }

    /// Counts one answered request.
    pub(crate) fn observe(
        &self,
        route: &'static str,
        method: &'static str,
        status: u16,
        elapsed: Duration,
        stages: Option<(ModelName, Timing)>,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { route })
            .observe(elapsed.as_secs_f64());
        if let Some((model, t)) = stages {
            for (stage, ms) in [
                ("decode", t.decode),
                ("preprocess", t.preprocess),
                ("inference", t.inference),
            ] {
                self.stages
                    .get_or_create(&StageLabels {
                        stage,
                        model: model.name(),
                    })
                    .observe(ms / 1e3);
            }
        }
    }
}

fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn as_gauge(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

/// Brings the state gauges up to date and writes the whole exposition.
pub(crate) fn render(state: &State) -> String {
    let now = &state.metrics.now;
    let admitted = state.admitted.load(Ordering::SeqCst);
    let running = state.running.load(Ordering::SeqCst);
    now.in_flight.set(as_gauge(running));
    now.queue_depth
        .set(as_gauge(admitted.saturating_sub(running)));
    now.queue_capacity.set(as_gauge(state.capacity()));
    now.workers.set(as_gauge(state.config.workers));
    now.ready.set(i64::from(state.ready()));
    now.draining
        .set(i64::from(state.draining.load(Ordering::SeqCst)));
    now.open_connections
        .set(as_gauge(state.open_connections.load(Ordering::SeqCst)));
    now.resident_bytes
        .set(as_gauge(resident_bytes().unwrap_or(0)));
    // Counters only go up: catch up with the totals the transport keeps.
    for (counter, total) in [
        (&now.refused_connections, &state.refused_connections),
        (&now.evicted_connections, &state.evicted_connections),
    ] {
        let total = total.load(Ordering::SeqCst);
        counter.inc_by(total.saturating_sub(counter.get()));
    }
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        - state.started.elapsed().as_secs_f64();
    now.start_time.set((start * 1e3).round() / 1e3);
    if let Some(models) = state.models.get() {
        for model in models.all() {
            let m = &model.manifest;
            let labels = ModelLabels {
                model: m.name.name(),
                task: m.task.name(),
                weights: m.weights.name(),
                default_tags: if m.name == models.default_tags() {
                    "true"
                } else {
                    "false"
                },
                sha256: m.onnx.sha256.clone(),
            };
            now.model_info.get_or_create(&labels).set(1);
        }
    }
    let mut out = String::with_capacity(8 << 10);
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &state.metrics.registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_cumulative_buckets_in_openmetrics_text() {
        let metrics = Metrics::new();
        metrics.observe("/v1/tags", "POST", 200, Duration::from_millis(2), None);
        metrics.observe("/v1/tags", "POST", 200, Duration::from_secs(100), None);
        let mut out = String::new();
        encode(&mut out, &metrics.registry).unwrap();
        for line in [
            "# TYPE tagger_requests counter\n",
            "tagger_requests_total{route=\"/v1/tags\",method=\"POST\",status=\"200\"} 2\n",
            "tagger_request_duration_seconds_bucket{le=\"0.001\",route=\"/v1/tags\"} 0\n",
            "tagger_request_duration_seconds_bucket{le=\"0.0025\",route=\"/v1/tags\"} 1\n",
            "tagger_request_duration_seconds_bucket{le=\"30.0\",route=\"/v1/tags\"} 1\n",
            "tagger_request_duration_seconds_bucket{le=\"+Inf\",route=\"/v1/tags\"} 2\n",
            "tagger_request_duration_seconds_count{route=\"/v1/tags\"} 2\n",
        ] {
            assert!(out.contains(line), "no {line:?} in\n{out}");
        }
        assert!(out.ends_with("# EOF\n"), "{out}");
    }
}
