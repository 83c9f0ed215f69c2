//! `tagger serve`: the HTTP service.
//!
//! Threads and queues, from the socket inwards:
//! - tiny_http accepts connections and parses request heads on its own threads.
//! - The dispatcher (the thread that called [`run`]) takes each request from tiny_http, routes
//!   it, validates its query and headers, and admits inference work against a bounded counter
//!   (`workers + queue_depth`; beyond it: 503 at once). It never reads or writes a socket, so
//!   one slow client can never stall it.
//! - The `http` pool answers cheap routes and errors, and reads request bodies.
//! - The `worker` pool (`--workers` threads) decodes, preprocesses and runs inference, one
//!   single-threaded tract plan per request: throughput comes from requests side by side.
//!
//! Models load in the background after the socket is bound: `/healthz` answers at once,
//! `/readyz` turns 200 (and systemd gets `READY=1`) when they are loaded. On SIGTERM/SIGINT
//! `/readyz` turns 503, the listener closes, admitted requests finish (up to `--drain-secs`),
//! and the process exits 0.

mod batch;
mod body;
mod metrics;
mod multipart;
mod notify;
mod openapi;
mod page;
mod reply;
mod routes;
mod shutdown;
mod sockets;
mod v2;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::cli::{self, CliError, ServeArgs, EXIT_OK};
use crate::error::Error;
use crate::image::DecodeMode;
use crate::model_files::ModelFile;
use crate::models::{embedded_manifest, LoadOptions, ModelName, Models, Task, Weights};

pub use routes::{RouteSpec, ROUTES};

use reply::{error_reply_for, Reply};
use shutdown::Shutdown;

/// The server's settings, resolved from flags, `TAGGER_*` variables and defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen.
    pub addr: SocketAddr,
    /// Requests decoded and inferred at once.
    pub workers: usize,
    /// Cores one inference may use.
    pub inference_threads: usize,
    /// Admitted requests beyond `workers` before 503.
    pub queue_depth: usize,
    /// Largest request body.
    pub max_body_bytes: u64,
    /// Largest image, checked from its header.
    pub max_pixels: u64,
    /// Per-read receive timeout on connections (`None`: none).
    pub read_timeout: Option<Duration>,
    /// Per-write send timeout on connections (`None`: none).
    pub write_timeout: Option<Duration>,
    /// How long admitted requests get after SIGTERM.
    pub drain: Duration,
    /// The model for `/v1/tags` without `?model=`; `None`: the library's choice.
    pub tags_model: Option<ModelName>,
    /// Default JPEG decoding.
    pub decode: DecodeMode,
    /// Most images in one request (multipart files, v2 batch); 413 beyond.
    pub max_batch: usize,
    /// Model files that replace embedded models, read and verified at start-up.
    pub model_files: Vec<ModelFile>,
}

fn seconds(secs: u64) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(secs))
}

impl Config {
    /// Resolves flags, then `TAGGER_*` variables, then defaults; a bad value is a usage error.
    pub fn from_args(args: ServeArgs) -> Result<Config, CliError> {
        let addr_text = cli::setting(args.addr, "TAGGER_ADDR", "127.0.0.1:8080".to_string())?;
        let addr = resolve_addr(&addr_text)?;
        let positive = |value: usize, flag: &str| {
            if value == 0 {
                Err(CliError::Usage(format!("--{flag} must be at least 1")))
            } else {
                Ok(value)
            }
        };
        let workers = positive(
            cli::setting(args.workers, "TAGGER_WORKERS", cli::available_cores())?,
            "workers",
        )?;
        let inference_threads = positive(
            cli::setting(args.inference_threads, "TAGGER_INFERENCE_THREADS", 1)?,
            "inference-threads",
        )?;
        let queue_depth = cli::setting(args.queue_depth, "TAGGER_QUEUE_DEPTH", 64)?;
        let max_body_bytes = cli::setting(args.max_body_bytes, "TAGGER_MAX_BODY_BYTES", 20 << 20)?;
        let max_pixels = cli::setting(args.max_pixels, "TAGGER_MAX_PIXELS", 50_000_000)?;
        if max_body_bytes == 0 || max_pixels == 0 {
            return Err(CliError::Usage(
                "--max-body-bytes and --max-pixels must be at least 1".into(),
            ));
        }
        let read_timeout = seconds(cli::setting(
            args.read_timeout_secs,
            "TAGGER_READ_TIMEOUT_SECS",
            30,
        )?);
        let write_timeout = seconds(cli::setting(
            args.write_timeout_secs,
            "TAGGER_WRITE_TIMEOUT_SECS",
            30,
        )?);
        let drain = Duration::from_secs(cli::setting(args.drain_secs, "TAGGER_DRAIN_SECS", 25)?);
        let tags_model = cli::optional_setting(args.tags_model, "TAGGER_TAGS_MODEL")?;
        if let Some(name) = tags_model {
            let manifest = embedded_manifest(name).map_err(|e| CliError::Failure(e.to_string()))?;
            if manifest.task != Task::ImagenetTags {
                return Err(CliError::Usage(format!(
                    "--tags-model {name}: not an ImageNet model (resnet18 or efficientnet_lite0)"
                )));
            }
        }
        let decode = cli::setting(args.decode, "TAGGER_DECODE", DecodeMode::Exact)?;
        let max_batch = positive(
            cli::setting(args.max_batch, "TAGGER_MAX_BATCH", 32)?,
            "max-batch",
        )?;
        let model_files = crate::model_files::from_flags_or_env(&args.model_file)
            .map_err(|e| CliError::Usage(e.to_string()))?;
        Ok(Config {
            addr,
            workers,
            inference_threads,
            queue_depth,
            max_body_bytes,
            max_pixels,
            read_timeout,
            write_timeout,
            drain,
            tags_model,
            decode,
            max_batch,
            model_files,
        })
    }
}

fn resolve_addr(text: &str) -> Result<SocketAddr, CliError> {
    let usage = |why: String| CliError::Usage(format!("--addr {text:?}: {why}"));
    text.to_socket_addrs()
        .map_err(|e| usage(format!("{e} (expected HOST:PORT, e.g. 0.0.0.0:8080)")))?
        .next()
        .ok_or_else(|| usage("resolves to no address".into()))
}

/// Everything the request handlers share.
pub(crate) struct State {
    pub(crate) config: Config,
    /// Set once by the loader thread.
    pub(crate) models: OnceLock<Models>,
    /// Why loading failed, if it did.
    load_error: Mutex<Option<String>>,
    /// SIGTERM/SIGINT seen: `/readyz` is 503 and new inference work is refused. This is the
    /// flag the signal handler sets, so it turns at once, not at the dispatcher's next turn.
    pub(crate) draining: Arc<AtomicBool>,
    /// Inference requests admitted and not yet answered (reading body, queued or running).
    pub(crate) admitted: AtomicUsize,
    /// Inference requests running on a worker.
    pub(crate) running: AtomicUsize,
    /// Every request taken from tiny_http and not yet answered (the drain waits for these).
    open: AtomicUsize,
    pub(crate) metrics: metrics::Metrics,
    pub(crate) started: Instant,
    /// `/openapi.json` with this server's defaults, once the models are loaded.
    pub(crate) openapi: OnceLock<Vec<u8>>,
    /// The bound address.
    local: OnceLock<SocketAddr>,
    ids: RequestIds,
}

impl State {
    fn new(config: Config, shutdown: &Shutdown) -> State {
        State {
            config,
            models: OnceLock::new(),
            load_error: Mutex::new(None),
            draining: shutdown.flag(),
            admitted: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            metrics: metrics::Metrics::new(),
            started: Instant::now(),
            openapi: OnceLock::new(),
            local: OnceLock::new(),
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
struct RequestIds {
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

    fn for_request(&self, request: &tiny_http::Request) -> String {
        let incoming = request
            .headers()
            .iter()
            .find(|h| h.field.equiv("X-Request-Id"))
            .map(|h| h.value.as_str());
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

/// What the access log and the metrics need about one request.
pub(crate) struct Ctx {
    pub(crate) id: String,
    pub(crate) start: Instant,
    pub(crate) method: &'static str,
    /// The request target as sent (path and query), for the log.
    pub(crate) target: String,
    /// The route template, or `unmatched`, for the metrics.
    pub(crate) route: &'static str,
    pub(crate) remote: Option<SocketAddr>,
}

/// Runs the server until SIGTERM/SIGINT; returns the exit code.
pub fn run(args: ServeArgs) -> Result<i32, CliError> {
    let exec = Instant::now();
    let config = Config::from_args(args)?;
    let shutdown = Shutdown::install()
        .map_err(|e| CliError::Failure(format!("installing signal handlers: {e}")))?;
    let listener = bind(&config)
        .map_err(|e| CliError::Failure(format!("cannot listen on {}: {e}", config.addr)))?;
    let state = Arc::new(State::new(config, &shutdown));
    let server = Server::start(state.clone(), listener)?;
    spawn_loader(state, exec);
    server.run(&shutdown)
}

/// Creates the listening socket with what accepted sockets inherit on Linux: TCP_NODELAY (no
/// Nagle / delayed-ACK stall on small responses) and the receive and send timeouts (see
/// [`sockets`] for why the receive timeout needs an [`sockets::AcceptKeeper`]).
fn bind(config: &Config) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(config.addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if config.addr.is_ipv6() {
        // `[::]:8080` also takes IPv4 clients.
        let _ = socket.set_only_v6(false);
    }
    socket.set_tcp_nodelay(true)?;
    socket.set_read_timeout(config.read_timeout)?;
    socket.set_write_timeout(config.write_timeout)?;
    socket.bind(&config.addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Loads the models on a background thread, then logs what serves what and notifies systemd.
fn spawn_loader(state: Arc<State>, exec: Instant) {
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

/// A running tiny_http server plus our pools.
struct Server {
    state: Arc<State>,
    http: tiny_http::Server,
    /// A second handle on the listening socket, to shut it down when draining.
    listener: TcpListener,
    local: SocketAddr,
    http_pool: rayon::ThreadPool,
    worker_pool: Arc<rayon::ThreadPool>,
    _keeper: Option<sockets::AcceptKeeper>,
    /// tiny_http servers whose accept thread stopped: their open connections still deliver.
    retired: Vec<tiny_http::Server>,
    restarts: Vec<Instant>,
}

fn pool(name: &'static str, threads: usize) -> Result<rayon::ThreadPool, CliError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(move |i| format!("tagger-{name}-{i}"))
        // Handlers catch their own panics; this is the backstop that keeps rayon from aborting.
        .panic_handler(|_| log::error!("a job panicked outside its handler"))
        .build()
        .map_err(|e| CliError::Failure(format!("starting the {name} pool: {e}")))
}

impl Server {
    fn start(state: Arc<State>, listener: TcpListener) -> Result<Server, CliError> {
        let failure = |e: std::io::Error| CliError::Failure(format!("listener: {e}"));
        let local = listener.local_addr().map_err(failure)?;
        let handle = listener.try_clone().map_err(failure)?;
        let _ = state.local.set(local);
        let http = tiny_http::Server::from_listener(listener, None)
            .map_err(|e| CliError::Failure(format!("starting the HTTP server: {e}")))?;
        let keeper = Some(sockets::AcceptKeeper::start(
            local,
            state.config.read_timeout,
        ));
        // Mostly idle; sized so that a few slow clients (uploads, drains) cannot starve the
        // cheap routes.
        let http_pool = pool("http", (4 * state.config.workers).max(16))?;
        let worker_pool = Arc::new(pool("worker", state.config.workers)?);
        log::info!("listening on http://{local}");
        log::info!(
            "{} workers x {} inference thread(s), queue depth {}, body limit {} bytes, pixel \
             limit {}, decode {}, read/write timeouts {:?}/{:?}, drain {:?}",
            state.config.workers,
            state.config.inference_threads,
            state.config.queue_depth,
            state.config.max_body_bytes,
            state.config.max_pixels,
            state.config.decode.name(),
            state.config.read_timeout,
            state.config.write_timeout,
            state.config.drain
        );
        Ok(Server {
            state,
            http,
            listener: handle,
            local,
            http_pool,
            worker_pool,
            _keeper: keeper,
            retired: Vec::new(),
            restarts: Vec::new(),
        })
    }

    /// The dispatch loop: returns when drained, or with an error when the listener failed.
    fn run(mut self, shutdown: &Shutdown) -> Result<i32, CliError> {
        let mut deadline: Option<Instant> = None;
        loop {
            if deadline.is_none() && shutdown.requested() {
                deadline = Some(self.begin_drain());
            }
            if let Some(deadline) = deadline {
                let open = self.state.open.load(Ordering::SeqCst);
                if open == 0 {
                    log::info!("drained: exiting");
                    return Ok(EXIT_OK);
                }
                if Instant::now() >= deadline {
                    log::warn!("drain deadline passed with {open} request(s) unanswered: exiting");
                    return Ok(EXIT_OK);
                }
            }
            if let Some(e) = self
                .state
                .load_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
            {
                return Err(CliError::Failure(format!("loading the models: {e}")));
            }
            for old in &self.retired {
                while let Ok(Some(request)) = old.try_recv() {
                    self.dispatch(request);
                }
            }
            match self.http.recv_timeout(Duration::from_millis(50)) {
                Ok(Some(request)) => self.dispatch(request),
                Ok(None) => {}
                Err(e) if deadline.is_some() => {
                    log::debug!("listener closed for the drain: {e}");
                }
                Err(e) => self.restart_http(e)?,
            }
        }
    }

    /// tiny_http's accept thread stops at its first `accept()` error (a timeout after the
    /// process was frozen, EMFILE): start a fresh tiny_http on the same socket, keep reading
    /// the old one's open connections, and give up (exit 1) if it keeps failing.
    fn restart_http(&mut self, error: std::io::Error) -> Result<(), CliError> {
        let now = Instant::now();
        self.restarts
            .retain(|t| now.duration_since(*t) < Duration::from_secs(60));
        if self.restarts.len() >= 5 {
            return Err(CliError::Failure(format!(
                "the listener on {} keeps failing: {error}",
                self.local
            )));
        }
        self.restarts.push(now);
        log::warn!("tiny_http stopped accepting ({error}); restarting it on the same socket");
        let listener = self
            .listener
            .try_clone()
            .map_err(|e| CliError::Failure(format!("listener: {e}")))?;
        let fresh = tiny_http::Server::from_listener(listener, None)
            .map_err(|e| CliError::Failure(format!("restarting the HTTP server: {e}")))?;
        let old = std::mem::replace(&mut self.http, fresh);
        self.retired.push(old);
        Ok(())
    }

    /// `/readyz` is already 503 (the signal handler set the flag): close the listener, tell
    /// systemd, and give admitted requests until the deadline.
    fn begin_drain(&self) -> Instant {
        // Wakes tiny_http's accept() with an error and refuses new connections; requests on
        // open connections are still answered (inference: 503 shutting_down).
        if let Err(e) = socket2::SockRef::from(&self.listener).shutdown(std::net::Shutdown::Both) {
            log::warn!("closing the listener: {e}");
        }
        notify::notify("STOPPING=1\nSTATUS=draining");
        let open = self.state.open.load(Ordering::SeqCst);
        log::info!(
            "shutdown signal: /readyz is 503, listener closed; draining {open} request(s) for \
             up to {:?}",
            self.state.config.drain
        );
        Instant::now() + self.state.config.drain
    }

    /// Routes one request and hands it to a pool; never touches the socket itself.
    fn dispatch(&self, request: tiny_http::Request) {
        let state = &self.state;
        state.open.fetch_add(1, Ordering::SeqCst);
        let target = request.url().to_string();
        let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
        let method = routes::method_name(request.method());
        let (route, resolved) = routes::resolve(method, path);
        let ctx = Ctx {
            id: state.ids.for_request(&request),
            start: Instant::now(),
            method,
            target: target.clone(),
            route,
            remote: request.remote_addr().copied(),
        };
        let endpoint = match resolved {
            Ok(endpoint) => endpoint,
            Err(e) => return self.answer(request, ctx, Err(e)),
        };
        if !endpoint.is_inference() {
            let state = state.clone();
            let query = query.to_string();
            self.http_pool.spawn(move || {
                let reply = guarded(&ctx, || routes::cheap(&state, &endpoint, &query));
                finish(&state, request, &ctx, reply);
            });
            return;
        }
        let job = match routes::prepare(state, &endpoint, query, &request) {
            Ok(job) => job,
            Err(e) => return self.answer(request, ctx, Err(e)),
        };
        // Admission: the only place work is counted in; every path below counts it out once.
        if state.admitted.fetch_add(1, Ordering::SeqCst) >= state.capacity() {
            state.admitted.fetch_sub(1, Ordering::SeqCst);
            return self.answer(request, ctx, Err(crate::Error::QueueFull.into()));
        }
        let state = state.clone();
        let workers = self.worker_pool.clone();
        self.http_pool.spawn(move || {
            let mut request = request;
            let bytes = guarded(&ctx, || {
                body::read_image(&mut request, state.config.max_body_bytes, &job.body)
            });
            let bytes = match bytes {
                Ok(bytes) => bytes,
                Err(e) => {
                    state.admitted.fetch_sub(1, Ordering::SeqCst);
                    return finish(&state, request, &ctx, Err(e));
                }
            };
            workers.spawn(move || {
                state.running.fetch_add(1, Ordering::SeqCst);
                let reply = guarded(&ctx, || match state.models.get() {
                    Some(models) => routes::infer(models, &job, &bytes),
                    None => Err(Error::NotReady),
                });
                state.running.fetch_sub(1, Ordering::SeqCst);
                state.admitted.fetch_sub(1, Ordering::SeqCst);
                drop(bytes);
                finish(&state, request, &ctx, reply);
            });
        });
    }

    /// Answers from the http pool (writing, and tiny_http's draining of an unread body, may
    /// block on the client).
    fn answer(&self, request: tiny_http::Request, ctx: Ctx, reply: Result<Reply, Error>) {
        let state = self.state.clone();
        self.http_pool
            .spawn(move || finish(&state, request, &ctx, reply));
    }
}

/// Runs a handler, turning a panic into a logged 500.
fn guarded<T>(ctx: &Ctx, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            log::error!(
                "request {} {} (id {}) panicked: {why}",
                ctx.method,
                ctx.target.escape_debug(),
                ctx.id
            );
            Err(Error::Internal(format!(
                "the request handler failed unexpectedly (request id {}); this is a bug, \
                 not a problem with the request",
                ctx.id
            )))
        }
    }
}

/// Declared bodies above this (and above the body limit) are never drained: see
/// [`answer_and_close`].
const UNDRAINABLE_BODY: u64 = 1 << 30;

/// Writes the answer, then logs it and counts it.
fn finish(state: &State, request: tiny_http::Request, ctx: &Ctx, reply: Result<Reply, Error>) {
    let reply = reply.unwrap_or_else(|e| error_reply_for(&ctx.target, &e));
    let elapsed = ctx.start.elapsed();
    let status = reply.status;
    let bytes = reply.body.len();
    state
        .metrics
        .observe(ctx.route, ctx.method, status, elapsed, reply.stages);
    let declared = request.body_length().map_or(0, |n| n as u64);
    if declared > UNDRAINABLE_BODY.max(state.config.max_body_bytes) {
        // Such a body was refused, never read.
        answer_and_close(state, request, ctx, reply, declared);
    } else if let Err(e) = request.respond(reply.into_response(&ctx.id)) {
        log::debug!("writing the answer to request {}: {e}", ctx.id);
    }
    log::info!(
        target: "tagger::access",
        "{} {} {} {}B {:.2}ms id={} from={}",
        ctx.method,
        truncate(&ctx.target, 256).escape_debug(),
        status,
        bytes,
        elapsed.as_secs_f64() * 1e3,
        ctx.id,
        ctx.remote.map_or_else(|| "-".to_string(), |a| a.to_string())
    );
    state.open.fetch_sub(1, Ordering::SeqCst);
}

/// Answers a request whose huge body was not read, then closes its connection.
///
/// When a request is dropped, tiny_http 0.12 discards the unread rest of its body by
/// allocating a buffer of the size the client declared (`vec![0; remaining]` in
/// `EqualReader::drop`): one request declaring `Content-Length: 100000000000000` aborts the
/// process. So such a request is never dropped: the answer goes out through `upgrade` (the
/// only way to write it without dropping the body reader; clients ignore the `Upgrade` header
/// on a non-101 status and read the body to the close), the connection is shut down, and the
/// request's reader and writer are leaked. Cost: one parked tiny_http connection thread and its
/// two file descriptors per such request; the fix is a tiny_http whose drain reads through a
/// fixed buffer (upstream pull request #290).
fn answer_and_close(
    state: &State,
    request: tiny_http::Request,
    ctx: &Ctx,
    reply: Reply,
    declared: u64,
) {
    use std::io::Write;
    let peer = request.remote_addr().copied();
    let (response, body) = reply.into_head(&ctx.id);
    let mut stream = request.upgrade("none", response);
    let _ = stream.write_all(&body).and_then(|()| stream.flush());
    let closed = match (state.local.get(), peer) {
        (Some(&local), Some(peer)) => sockets::shutdown_connection(local, peer),
        _ => false,
    };
    log::warn!(
        "request {} declared a {declared}-byte body: answered without reading it and {} the \
         connection (its tiny_http thread stays parked: tiny_http 0.12 cannot discard a body \
         that large)",
        ctx.id,
        if closed { "closed" } else { "could not close" }
    );
    std::mem::forget(stream);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use crate::engine::Engine;
    use crate::models::{head_for, Model};

    /// An engine that panics, sleeps or answers constant logits.
    struct FakeEngine {
        panic: bool,
        outputs: usize,
    }

    impl Engine for FakeEngine {
        fn run(&self, _shape: &[usize], _input: Vec<f32>) -> crate::Result<Vec<f32>> {
            if self.panic {
                panic!("fake engine exploded");
            }
            Ok((0..self.outputs).map(|i| i as f32 / 100.0).collect())
        }
    }

    fn fake_models(panic: bool) -> Models {
        let models = [ModelName::EfficientnetLite0, ModelName::Digits]
            .into_iter()
            .map(|name| {
                let manifest = embedded_manifest(name).unwrap();
                let head = head_for(&manifest).unwrap();
                let outputs = if name == ModelName::Digits { 45 } else { 1000 };
                Model {
                    manifest,
                    head,
                    engine: Box::new(FakeEngine { panic, outputs }),
                }
            })
            .collect();
        Models::new(models, None).unwrap()
    }

    fn test_config() -> Config {
        Config {
            addr: "127.0.0.1:0".parse().unwrap(),
            workers: 1,
            inference_threads: 1,
            queue_depth: 4,
            max_body_bytes: 1 << 20,
            max_pixels: 50_000_000,
            read_timeout: Some(Duration::from_secs(5)),
            write_timeout: Some(Duration::from_secs(5)),
            drain: Duration::from_secs(5),
            tags_model: None,
            decode: DecodeMode::Exact,
            max_batch: 32,
            model_files: Vec::new(),
        }
    }

    /// Starts a server with fake models on an ephemeral port; returns its address and the
    /// switch that stops it.
    fn start(models: Models) -> (SocketAddr, Arc<Shutdown>) {
        start_with(models, test_config(), true)
    }

    fn start_with(models: Models, config: Config, keeper: bool) -> (SocketAddr, Arc<Shutdown>) {
        let listener = bind(&config).unwrap();
        let shutdown = Arc::new(Shutdown::manual());
        let state = Arc::new(State::new(config, &shutdown));
        let _ = state.models.set(models);
        let mut server = Server::start(state, listener).unwrap();
        if !keeper {
            server._keeper = None;
        }
        let addr = server.local;
        let stop = shutdown.clone();
        std::thread::spawn(move || server.run(&stop));
        (addr, shutdown)
    }

    fn post(addr: SocketAddr, path: &str, body: &[u8]) -> (u16, String) {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        )
        .unwrap();
        s.write_all(body).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = out[9..12].parse().unwrap();
        (status, out)
    }

    const CAT: &[u8] = include_bytes!("../../tests/fixtures/images/chelsea.jpg");

    #[test]
    fn a_panicking_engine_is_answered_500_and_the_server_lives_on() {
        // One admission slot: a panic that leaked it would turn the next request into a 503.
        let config = Config {
            queue_depth: 0,
            ..test_config()
        };
        let (addr, shutdown) = start_with(fake_models(true), config, true);
        for _ in 0..3 {
            let (status, text) = post(addr, "/v1/tags", CAT);
            assert_eq!(status, 500, "{text}");
            assert!(text.contains("\"internal_error\""), "{text}");
            assert!(text.contains("request id"), "{text}");
        }
        let (status, text) = post(addr, "/v1/tags", b"not an image");
        assert_eq!(status, 415, "{text}");
        shutdown.trigger();
    }

    #[test]
    fn fake_models_answer_through_the_whole_stack() {
        let (addr, shutdown) = start(fake_models(false));
        let (status, text) = post(addr, "/v1/tags?top_k=2", CAT);
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("\"class_id\":999"), "{text}");
        shutdown.trigger();
    }

    fn get(stream: &mut TcpStream, path: &str) -> String {
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn tiny_http_is_restarted_when_accept_times_out() {
        // Without the keeper, the listener's receive timeout makes accept() fail every 300 ms.
        let config = Config {
            read_timeout: Some(Duration::from_millis(300)),
            ..test_config()
        };
        let (addr, shutdown) = start_with(fake_models(false), config, false);
        let mut early = TcpStream::connect(addr).unwrap();
        assert!(get(&mut early, "/healthz").starts_with("HTTP/1.1 200"));
        std::thread::sleep(Duration::from_millis(700));
        // A new connection is served by the restarted tiny_http...
        let mut late = TcpStream::connect(addr).unwrap();
        assert!(get(&mut late, "/healthz").starts_with("HTTP/1.1 200"));
        // ...and a connection opened before (now idle past its own timeout) was closed.
        let mut buf = [0u8; 16];
        assert_eq!(early.read(&mut buf).unwrap_or(0), 0);
        shutdown.trigger();
    }

    #[test]
    fn request_ids_are_checked() {
        assert!(is_sane_id("abc-123_x.y:z"));
        assert!(!is_sane_id(""));
        assert!(!is_sane_id("has space"));
        assert!(!is_sane_id(&"x".repeat(129)));
    }
}
