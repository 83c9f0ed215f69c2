//! From a parsed request to an answer: routing, admission, reading the body, handing the work
//! to a worker, and writing the [`Reply`] as an HTTP response, with the access log and the
//! metrics.
//!
//! Runs on the I/O runtime and never blocks it: cheap routes and errors are answered inline
//! (microseconds), bodies are read asynchronously, and decoding plus inference run on the
//! `worker` pool (plain synchronous code, one request per thread) while this future waits.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};

use super::body::{self, BodyInfo};
use super::connection::ConnState;
use super::error::ServerError;
use super::reply::{error_reply_for, Reply};
use super::routes::{self, Endpoint};
use super::state::State;
use super::Failure;
use crate::models::Model;

/// An unwanted body (a request answered with an error before its body was read) is read and
/// thrown away up to this size, so that the connection can serve its next request; a longer
/// one closes the connection instead.
const DISCARD_LIMIT: u64 = 64 << 10;
/// ...and for at most this long.
const DISCARD_TIME: Duration = Duration::from_secs(2);

/// Largest request head (request line and headers): beyond it, `431 header_too_large`.
pub(crate) const MAX_HEAD_BYTES: usize = 16 << 10;
/// Most header fields in one request: beyond it, `431 header_too_large`.
pub(crate) const MAX_HEADERS: usize = 64;

/// The thread pool requests are decoded and inferred on.
pub(crate) struct Pools {
    worker: rayon::ThreadPool,
}

impl Pools {
    pub(crate) fn new(workers: usize) -> Result<Pools, Failure> {
        let worker = rayon::ThreadPoolBuilder::new()
            .num_threads(workers)
            .thread_name(|i| format!("tagger-worker-{i}"))
            // Handlers catch their own panics; this is the backstop that keeps rayon from
            // aborting.
            .panic_handler(|_| log::error!("a job panicked outside its handler"))
            .build()
            .map_err(|e| Failure(format!("starting the worker pool: {e}")))?;
        Ok(Pools { worker })
    }

    /// Runs `model` once on every worker thread (a blank input), so that the first requests do
    /// not pay the first run's lazy set-up and page faults (Lite0's first request on a cold
    /// worker: 18 ms against 12 warm; before the engine's own ops, 40 against 11), which made
    /// the first seconds after start-up the tail of the latency distribution.
    pub(crate) fn warm_up(&self, model: &Model) {
        let shape = model.input_shape();
        self.worker.broadcast(|_| {
            let input = vec![0.0; shape.iter().product()];
            if let Err(e) = model.engine.run(&shape, input) {
                log::warn!("warming up {} failed: {e}", model.name().name());
            }
        });
    }
}

/// What the access log and the metrics need about one request.
pub(crate) struct Ctx {
    pub(crate) id: String,
    pub(crate) start: Instant,
    pub(crate) method: &'static str,
    /// The request target as sent (path and query), for the log.
    pub(crate) target: String,
    /// The route template, or `unmatched`, for the metrics.
    pub(crate) route: &'static str,
    pub(crate) remote: SocketAddr,
}

/// Counts a request in progress (for the connection's watchdog and the drain) until dropped,
/// also when hyper drops the request's future because the client left.
struct InProgress {
    state: Arc<State>,
    conn: Arc<ConnState>,
    /// The answer leaves the connection open for the next request.
    keeps_connection: bool,
}

impl InProgress {
    fn new(state: Arc<State>, conn: Arc<ConnState>) -> InProgress {
        state.open_requests.fetch_add(1, Ordering::SeqCst);
        conn.request_started();
        InProgress {
            state,
            conn,
            keeps_connection: false,
        }
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.conn.request_finished(self.keeps_connection);
        self.state.open_requests.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Holds an admission slot until dropped (also if the client leaves mid-body).
struct Admitted(Arc<State>);

impl Admitted {
    /// Takes a slot, or `None` when `workers + queue depth` requests are already admitted.
    fn take(state: &Arc<State>) -> Option<Admitted> {
        if state.admitted.fetch_add(1, Ordering::SeqCst) >= state.capacity() {
            state.admitted.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Admitted(state.clone()))
    }

    /// Takes a slot, waiting up to `--queue-wait-ms` for one to be freed; `None` (503) after.
    ///
    /// Why wait: a closed-loop client answered 503 at once sends its next request at once, so
    /// the surplus of an overload turns into a storm of requests that each cost the I/O thread
    /// (and the client, on the same machine) a body to read and an answer to write, CPU taken
    /// from the workers. Held back for a bounded time instead, a surplus request costs nothing
    /// while it waits, most get a slot, and each connection gets at most one 503 per wait.
    async fn wait_for(state: &Arc<State>) -> Option<Admitted> {
        if let Some(slot) = Admitted::take(state) {
            return Some(slot);
        }
        let deadline = tokio::time::Instant::now() + state.config.queue_wait;
        loop {
            let freed = state.slot_freed.notified();
            let mut freed = std::pin::pin!(freed);
            // Registered before looking again, so a slot freed in between is not missed.
            freed.as_mut().enable();
            if let Some(slot) = Admitted::take(state) {
                return Some(slot);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return None;
            }
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::SeqCst);
        self.0.slot_freed.notify_one();
    }
}

/// hyper's service: answers one request. Never fails (every error is an answer).
pub(crate) async fn handle(
    state: Arc<State>,
    pools: Arc<Pools>,
    conn: Arc<ConnState>,
    remote: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut in_progress = InProgress::new(state.clone(), conn);
    let target = request
        .uri()
        .path_and_query()
        .map_or_else(|| request.uri().to_string(), |p| p.as_str().to_string());
    let method = routes::method_name(request.method().as_str());
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let (route, resolved) = routes::resolve(method, &path);
    let incoming_id = text(
        request.headers(),
        header::HeaderName::from_static("x-request-id"),
    );
    let ctx = Ctx {
        id: state.ids.for_request(incoming_id),
        start: Instant::now(),
        method,
        target,
        route,
        remote,
    };
    let (reply, keep_alive) = match resolved {
        // Closed after the answer, as hyper does with the heads it refuses itself.
        _ if head_too_large(&request) => (
            Err(ServerError::HeadTooLarge {
                max_bytes: MAX_HEAD_BYTES,
                max_fields: MAX_HEADERS,
            }),
            false,
        ),
        Err(e) => refuse(request, e).await,
        Ok(endpoint) if !endpoint.is_inference() => {
            let reply = guarded(&ctx, || routes::cheap(&state, &endpoint, &query));
            // GET routes take no body; one sent anyway is discarded like an error's.
            let keep_alive = discard_body(request).await;
            (reply, keep_alive)
        }
        Ok(endpoint) => infer(&state, &pools, &ctx, &endpoint, &query, request).await,
    };
    in_progress.keeps_connection = keep_alive;
    Ok(finish(&state, &ctx, reply, keep_alive))
}

/// An inference request: checks, admission, the body, then the worker.
async fn infer(
    state: &Arc<State>,
    pools: &Pools,
    ctx: &Ctx,
    endpoint: &Endpoint,
    query: &str,
    request: Request<Incoming>,
) -> (Result<Reply, ServerError>, bool) {
    let headers = request.headers();
    let declared = declared_length(headers);
    let info = BodyInfo {
        content_type: text(headers, header::CONTENT_TYPE),
        declared,
        inference_header_length: text(
            headers,
            header::HeaderName::from_static("inference-header-content-length"),
        ),
    };
    let job = match routes::prepare(state, endpoint, query, &info) {
        Ok(job) => job,
        Err(e) => return refuse(request, e).await,
    };
    // Admission: beyond `workers + queue depth` in progress, a bounded wait, then 503.
    let Some(slot) = Admitted::wait_for(state).await else {
        return refuse(request, ServerError::QueueFull).await;
    };
    let deadline = state
        .config
        .read_timeout
        .map(|t| tokio::time::Instant::now() + t);
    let limit = state.config.max_body_bytes;
    let bytes = match body::read_limited(request.into_body(), declared, limit, deadline).await {
        Ok(bytes) => bytes,
        // The rest of the body is unread: close the connection.
        Err(e) => return (Err(e), false),
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job_state = state.clone();
    let job_ctx = (ctx.id.clone(), ctx.method, ctx.target.clone());
    pools.worker.spawn(move || {
        let state = job_state;
        state.running.fetch_add(1, Ordering::SeqCst);
        let (id, method, target) = job_ctx;
        let reply = guarded_parts(&id, method, &target, || routes::infer(&state, &job, bytes));
        state.running.fetch_sub(1, Ordering::SeqCst);
        drop(slot);
        let _ = tx.send(reply);
    });
    match rx.await {
        Ok(reply) => (reply, true),
        Err(_) => (
            Err(crate::Error::Internal("the worker dropped the request".into()).into()),
            false,
        ),
    }
}

/// Answers `error` to a request whose body was not read: a small body is discarded so the
/// connection lives on; a large, slow or endless one closes it.
async fn refuse(
    request: Request<Incoming>,
    error: ServerError,
) -> (Result<Reply, ServerError>, bool) {
    let keep_alive = discard_body(request).await;
    (Err(error), keep_alive)
}

async fn discard_body(request: Request<Incoming>) -> bool {
    let deadline = tokio::time::Instant::now() + DISCARD_TIME;
    body::discard(request.into_body(), DISCARD_LIMIT, deadline).await
}

/// Whether the head is over [`MAX_HEAD_BYTES`] (counted as sent on the wire: request line,
/// `name: value` lines and CRLFs) or [`MAX_HEADERS`].
fn head_too_large(request: &Request<Incoming>) -> bool {
    let headers = request.headers();
    if headers.len() > MAX_HEADERS {
        return true;
    }
    let line = request.method().as_str().len() + request.uri().to_string().len() + 12;
    let fields: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    line + fields + 2 > MAX_HEAD_BYTES
}

/// A header's value as text, if sent and printable.
fn text(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `Content-Length`, if sent (hyper has already refused a malformed or conflicting one).
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    text(headers, header::CONTENT_LENGTH).and_then(|v| v.trim().parse().ok())
}

/// Runs a handler, turning a panic into a logged 500.
fn guarded<T>(ctx: &Ctx, f: impl FnOnce() -> Result<T, ServerError>) -> Result<T, ServerError> {
    guarded_parts(&ctx.id, ctx.method, &ctx.target, f)
}

fn guarded_parts<T>(
    id: &str,
    method: &str,
    target: &str,
    f: impl FnOnce() -> Result<T, ServerError>,
) -> Result<T, ServerError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            log::error!(
                "request {method} {} (id {id}) panicked: {why}",
                target.escape_debug()
            );
            Err(ServerError::Panicked(format!(
                "the request handler failed unexpectedly (request id {id}); this is a bug, not \
                 a problem with the request"
            )))
        }
    }
}

/// Logs and counts the answer, and makes it an HTTP response.
fn finish(
    state: &State,
    ctx: &Ctx,
    reply: Result<Reply, ServerError>,
    keep_alive: bool,
) -> Response<Full<Bytes>> {
    let reply = reply.unwrap_or_else(|e| error_reply_for(&ctx.target, &e));
    let elapsed = ctx.start.elapsed();
    let status = reply.status;
    let length = reply.body.len();
    state
        .metrics
        .observe(ctx.route, ctx.method, status, elapsed, reply.stages);
    log::info!(
        target: "tagger::access",
        "{} {} {} {}B {:.2}ms id={} from={}",
        ctx.method,
        truncate(&ctx.target, 256).escape_debug(),
        status,
        length,
        elapsed.as_secs_f64() * 1e3,
        ctx.id,
        ctx.remote
    );
    response(reply, &ctx.id, keep_alive)
}

/// The HTTP response for a reply: always `Content-Length` (never chunked), one buffer.
fn response(reply: Reply, request_id: &str, keep_alive: bool) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(reply.content_type),
    );
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert(header::HeaderName::from_static("x-request-id"), id);
    }
    headers.insert(
        header::SERVER,
        HeaderValue::from_static(concat!("tagger/", env!("CARGO_PKG_VERSION"))),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(allow) = reply.allow {
        headers.insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    if reply.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if !keep_alive {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    for (name, value) in &reply.headers {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    response
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
