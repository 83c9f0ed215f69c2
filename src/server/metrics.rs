//! `/metrics` in the Prometheus text format (0.0.4), written by hand: a few counters and
//! histograms behind one mutex, touched once per request.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::state::State;
use crate::models::{ModelName, Weights};
use crate::pipeline::Timing;

/// Upper bounds (seconds) of the histogram buckets; `+Inf` is implied.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default, Clone)]
struct Histogram {
    /// Non-cumulative counts per bucket; the last slot is `+Inf`.
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        let slot = BUCKETS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(BUCKETS.len());
        self.counts[slot] += 1;
        self.sum += seconds;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count;
            let le = BUCKETS.get(i).map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Default)]
struct Inner {
    /// (route, method, status) -> count.
    requests: BTreeMap<(&'static str, &'static str, u16), u64>,
    /// route -> request latency.
    latency: BTreeMap<&'static str, Histogram>,
    /// (stage, model) -> stage latency.
    stages: BTreeMap<(&'static str, ModelName), Histogram>,
}

/// The server's counters.
#[derive(Default)]
pub(crate) struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        Metrics::default()
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
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *inner.requests.entry((route, method, status)).or_default() += 1;
        inner
            .latency
            .entry(route)
            .or_default()
            .observe(elapsed.as_secs_f64());
        if let Some((model, t)) = stages {
            for (stage, ms) in [
                ("decode", t.decode),
                ("preprocess", t.preprocess),
                ("inference", t.inference),
            ] {
                inner
                    .stages
                    .entry((stage, model))
                    .or_default()
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

/// The whole exposition.
pub(crate) fn render(state: &State) -> String {
    let mut out = String::with_capacity(8 << 10);
    let (requests, latency, stages) = {
        let inner = state
            .metrics
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        (
            inner.requests.clone(),
            inner.latency.clone(),
            inner.stages.clone(),
        )
    };

    out.push_str(
        "# HELP tagger_requests_total Requests answered, by route template, method and status.\n",
    );
    out.push_str("# TYPE tagger_requests_total counter\n");
    for ((route, method, status), n) in &requests {
        let _ = writeln!(
            out,
            "tagger_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
        );
    }

    out.push_str("# HELP tagger_request_duration_seconds Time from receiving a request to its answer being ready, by route.\n");
    out.push_str("# TYPE tagger_request_duration_seconds histogram\n");
    for (route, h) in &latency {
        h.render(
            &mut out,
            "tagger_request_duration_seconds",
            &format!("route=\"{route}\""),
        );
    }

    out.push_str("# HELP tagger_stage_duration_seconds Time per pipeline stage (decode, preprocess, inference) of successful inferences, by model.\n");
    out.push_str("# TYPE tagger_stage_duration_seconds histogram\n");
    for ((stage, model), h) in &stages {
        h.render(
            &mut out,
            "tagger_stage_duration_seconds",
            &format!("stage=\"{stage}\",model=\"{model}\""),
        );
    }

    let admitted = state.admitted.load(Ordering::SeqCst);
    let running = state.running.load(Ordering::SeqCst);
    let gauges: [(&str, &str, String); 8] = [
        (
            "tagger_requests_in_flight",
            "Inference requests running on a worker now.",
            running.to_string(),
        ),
        (
            "tagger_queue_depth",
            "Inference requests admitted and not yet on a worker (body upload or waiting).",
            admitted.saturating_sub(running).to_string(),
        ),
        (
            "tagger_queue_capacity",
            "Inference requests admitted at most at once (workers + queue depth); beyond it: 503.",
            state.capacity().to_string(),
        ),
        (
            "tagger_workers",
            "Worker threads (requests inferred side by side).",
            state.config.workers.to_string(),
        ),
        (
            "tagger_ready",
            "1 when the models are loaded and the server is not draining.",
            u8::from(state.ready()).to_string(),
        ),
        (
            "tagger_draining",
            "1 after SIGTERM/SIGINT.",
            u8::from(state.draining.load(Ordering::SeqCst)).to_string(),
        ),
        (
            "tagger_open_connections",
            "Client connections held open now (capped by --max-connections).",
            state.open_connections.load(Ordering::SeqCst).to_string(),
        ),
        (
            "process_resident_memory_bytes",
            "Resident memory of the process.",
            resident_bytes().unwrap_or(0).to_string(),
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    }
    for (name, help, value) in [
        (
            "tagger_connections_refused_total",
            "Connections closed at once at the cap because every open connection carried a request.",
            state.refused_connections.load(Ordering::SeqCst),
        ),
        (
            "tagger_connections_evicted_total",
            "Idle or half-sent connections closed at the cap to make room for a new one.",
            state.evicted_connections.load(Ordering::SeqCst),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        - state.started.elapsed().as_secs_f64();
    let _ = writeln!(
        out,
        "# HELP process_start_time_seconds Start time of the process since the Unix epoch.\n\
         # TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {start:.3}"
    );

    out.push_str("# HELP tagger_model_info Loaded models: task, weights (official or stand-in), whether it serves /v1/tags by default, ONNX sha256.\n");
    out.push_str("# TYPE tagger_model_info gauge\n");
    if let Some(models) = state.models.get() {
        for model in models.all() {
            let m = &model.manifest;
            let weights = match m.weights {
                Weights::Official => "official",
                Weights::StandIn => "stand-in",
            };
            let task = serde_json::to_value(m.task)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "tagger_model_info{{model=\"{}\",task=\"{task}\",weights=\"{weights}\",\
                 default_tags=\"{}\",sha256=\"{}\"}} 1",
                m.name,
                m.name == models.default_tags(),
                m.onnx.sha256
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::default();
        h.observe(0.002);
        h.observe(0.002);
        h.observe(100.0);
        let mut out = String::new();
        h.render(&mut out, "x", "a=\"b\"");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.001\"} 0\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.0025\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"30\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count{a=\"b\"} 3\n"), "{out}");
    }
}
