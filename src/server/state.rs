//! What every request handler shares: the settings, the models, the counters, request ids.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use super::config::Config;
use super::metrics;
use crate::models::Models;

/// Everything the request handlers share.
pub(crate) struct State {
    pub(crate) config: Config,
    /// Set once by the loader thread.
    pub(crate) models: OnceLock<Models>,
    /// Why loading failed, if it did.
    pub(crate) load_error: Mutex<Option<String>>,
    /// SIGTERM/SIGINT seen: `/readyz` is 503 and new inference work is refused. This is the
    /// flag the signal handler sets, so it turns at once.
    pub(crate) draining: Arc<AtomicBool>,
    /// Inference requests admitted and not yet answered (reading body, queued or running).
    pub(crate) admitted: AtomicUsize,
    /// Wakes a request waiting for an admission slot when one is freed.
    pub(crate) slot_freed: tokio::sync::Notify,
    /// Inference requests running on a worker.
    pub(crate) running: AtomicUsize,
    /// Requests whose head has arrived and whose answer is not ready yet (the drain waits
    /// for these).
    pub(crate) open_requests: AtomicUsize,
    /// Connections held now.
    pub(crate) open_connections: AtomicUsize,
    /// Connections closed at accept because every connection held carried a request.
    pub(crate) refused_connections: AtomicU64,
    /// Idle connections closed to make room for a new one at the cap.
    pub(crate) evicted_connections: AtomicU64,
    pub(crate) metrics: metrics::Metrics,
    pub(crate) started: Instant,
    /// `/openapi.json` with this server's defaults, once the models are loaded.
    pub(crate) openapi: OnceLock<Vec<u8>>,
    pub(crate) ids: RequestIds,
}

impl State {
    pub(crate) fn new(config: Config, draining: Arc<AtomicBool>) -> State {
        State {
            config,
            models: OnceLock::new(),
            load_error: Mutex::new(None),
            draining,
            admitted: AtomicUsize::new(0),
            slot_freed: tokio::sync::Notify::new(),
            running: AtomicUsize::new(0),
            open_requests: AtomicUsize::new(0),
            open_connections: AtomicUsize::new(0),
            refused_connections: AtomicU64::new(0),
            evicted_connections: AtomicU64::new(0),
            metrics: metrics::Metrics::new(),
            started: Instant::now(),
            openapi: OnceLock::new(),
            ids: RequestIds::new(),
        }
    }

    /// Inference requests that may be admitted at once.
    pub(crate) fn capacity(&self) -> usize {
        self.config.workers + self.config.queue_depth
    }

    /// Models loaded and not draining.
    pub(crate) fn ready(&self) -> bool {
        self.models.get().is_some() && !self.draining.load(Ordering::SeqCst)
    }
}

/// Request ids: the client's `X-Request-Id` when it is sane, else 16 random-looking hex digits.
pub(crate) struct RequestIds {
    keys: RandomState,
    counter: AtomicU64,
}

impl RequestIds {
    fn new() -> RequestIds {
        RequestIds {
            keys: RandomState::new(),
            counter: AtomicU64::new(0),
        }
    }

    /// The id of a request that sent `incoming` as its `X-Request-Id`.
    pub(crate) fn for_request(&self, incoming: Option<&str>) -> String {
        match incoming {
            Some(id) if is_sane_id(id) => id.to_string(),
            _ => {
                let mut hasher = self.keys.build_hasher();
                hasher.write_u64(self.counter.fetch_add(1, Ordering::Relaxed));
                format!("{:016x}", hasher.finish())
            }
        }
    }
}

/// 1 to 128 characters from a conservative set (no spaces, quotes or control characters).
fn is_sane_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_checked() {
        assert!(is_sane_id("abc-123_x.y:z"));
        assert!(!is_sane_id(""));
        assert!(!is_sane_id("has space"));
        assert!(!is_sane_id(&"x".repeat(129)));
        let ids = RequestIds::new();
        assert_eq!(ids.for_request(Some("trace-1")), "trace-1");
        let made = ids.for_request(Some("a b"));
        assert_eq!(made.len(), 16);
        assert_ne!(made, ids.for_request(None));
    }
}
