//! The transport: listener, accept loop, connection cap, timeouts and graceful shutdown.
//!
//! One small tokio runtime (a single thread, `tagger-io`) does only I/O: it accepts, reads
//! request heads and bodies, writes answers and runs the timers. HTTP/1.1 is hyper's `http1`
//! server connection, one per request ([`super::connection`]): a slow client costs a socket
//! and a few kilobytes, an idle one about 2 KB, never a thread.
//!
//! Limits, each enforced here, in [`super::connection`] or in [`super::dispatch`]:
//! - `--max-connections`: at the cap, the connection that has waited longest for a complete
//!   request head (or idled longest between requests) is closed to make room; only when every
//!   connection carries a request is a new one refused (closed with a bare 503).
//! - `--header-timeout-secs`: a head must arrive within it of the connection's start (or of its
//!   first byte on a kept-alive connection); `--keep-alive-secs`: the idle time between
//!   requests; `--write-timeout-secs`: the time a write may make no progress. A watchdog per
//!   connection closes it when one passes (only between requests, or on a stalled write).
//! - accept errors (EMFILE, ENFILE, ECONNABORTED, ...) back off briefly and go on, logged at
//!   most once a second: nothing a client does stops the accept loop.
//! - On SIGTERM/SIGINT the listener closes at once, requests in progress finish (up to
//!   `--drain-secs`), then every connection is shut down gracefully and the process exits 0.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::connection::{serve_connection, ConnState, Served};
use super::dispatch::Pools;
use super::notify;
use super::shutdown::Shutdown;
use super::state::State;
use super::Failure;

/// How long connections get to finish writing once the drain is over.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Creates the listening socket (`SO_REUSEADDR`, dual-stack for `[::]`, a 1024 backlog).
pub(crate) fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // `[::]:8080` also takes IPv4 clients.
        let _ = socket.set_only_v6(false);
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Serves on `listener` until a shutdown is requested and drained; returns the exit code.
pub(crate) fn serve(
    state: Arc<State>,
    pools: Arc<Pools>,
    listener: std::net::TcpListener,
    shutdown: &Shutdown,
) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .thread_name("tagger-io")
        .build()
        .map_err(|e| Failure(format!("starting the I/O runtime: {e}")))?;
    // The workers were created before: threads inherit their creator's niceness.
    yield_to_workers();
    runtime.block_on(run(state, pools, listener, shutdown))
}

/// How much lower the I/O thread's scheduling priority is than the workers'.
const IO_NICENESS: i32 = 5;

/// Lowers this (the I/O) thread's priority: when clients flood an overloaded server on the same
/// cores, inference keeps most of the CPU, and closed-loop clients hammering it with requests
/// that get 503 are slowed by their own answers instead of starving the workers. Without
/// contention nothing changes (an idle core runs whichever thread is ready).
fn yield_to_workers() {
    // SAFETY: nice() changes only the calling thread's niceness on Linux; a failure (e.g. a
    // limit) leaves it as it was, which is harmless.
    unsafe {
        libc::nice(IO_NICENESS);
    }
}

async fn run(
    state: Arc<State>,
    pools: Arc<Pools>,
    listener: std::net::TcpListener,
    shutdown: &Shutdown,
) -> Result<(), Failure> {
    let failure = |e: io::Error| Failure(format!("listener: {e}"));
    let listener = TcpListener::from_std(listener).map_err(failure)?;
    let local = listener.local_addr().map_err(failure)?;
    let config = &state.config;
    log::info!("listening on http://{local}");
    log::info!(
        "{} workers x {} inference thread(s), queue depth {}, body limit {} bytes, pixel limit \
         {}, decode {}, max connections {} (open-files limit {}), timeouts: header {:?}, body \
         {:?}, keep-alive {:?}, write {:?}, drain {:?}",
        config.workers,
        config.inference_threads,
        config.queue_depth,
        config.max_body_bytes,
        config.max_pixels,
        config.decode.name(),
        config.max_connections,
        super::config::open_files_limit().map_or("unknown".into(), |n| n.to_string()),
        config.header_timeout,
        config.read_timeout,
        config.keep_alive,
        config.write_timeout,
        config.drain
    );
    let connections = Arc::new(Connections::new(state.clone()));
    let (stop_accepting, stop_rx) = watch::channel(false);
    let acceptor = tokio::spawn(accept_loop(
        listener,
        state.clone(),
        pools,
        connections.clone(),
        stop_rx,
    ));
    loop {
        tokio::time::sleep(Duration::from_millis(25)).await;
        if shutdown.requested() {
            break;
        }
        let failed = state
            .load_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(e) = failed {
            return Err(Failure(format!("loading the models: {e}")));
        }
    }

    // Drain: /readyz is already 503 (the signal handler set the flag). Close the listener
    // before telling systemd, so no connection is accepted after STOPPING=1.
    let _ = stop_accepting.send(true);
    let _ = acceptor.await;
    notify::notify("STOPPING=1\nSTATUS=draining");
    let deadline = Instant::now() + config.drain;
    log::info!(
        "shutdown signal: /readyz is 503, listener closed; draining {} request(s) for up to {:?}",
        state.open_requests.load(Ordering::SeqCst),
        config.drain
    );
    while state.open_requests.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let unanswered = state.open_requests.load(Ordering::SeqCst);
    // Connections finish writing what they have, then close; idle ones close at once.
    connections.close_all();
    let closing = (Instant::now() + CLOSE_GRACE).min(deadline.max(Instant::now()));
    while state.open_connections.load(Ordering::SeqCst) > 0 && Instant::now() < closing {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if unanswered == 0 {
        log::info!("drained: exiting");
    } else {
        log::warn!("drain deadline passed with {unanswered} request(s) unanswered: exiting");
    }
    Ok(())
}

/// Accepts until told to stop; then drops (closes) the listener.
async fn accept_loop(
    listener: TcpListener,
    state: Arc<State>,
    pools: Arc<Pools>,
    connections: Arc<Connections>,
    mut stop: watch::Receiver<bool>,
) {
    let mut last_complaint: Option<Instant> = None;
    let mut suppressed = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                connections.admit(stream, peer, &state, &pools);
            }
            Err(e) => {
                // EMFILE/ENFILE (out of descriptors), ENOBUFS/ENOMEM, ECONNABORTED (the client
                // left before accept): back off briefly and go on. Never fatal: the listener
                // is ours and stays valid.
                let now = Instant::now();
                if last_complaint.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
                    let also = if suppressed > 0 {
                        format!(" ({suppressed} more since the last report)")
                    } else {
                        String::new()
                    };
                    log::warn!("accepting a connection failed: {e}{also}; backing off briefly");
                    last_complaint = Some(now);
                    suppressed = 0;
                } else {
                    suppressed += 1;
                }
                let pause = match e.raw_os_error() {
                    Some(libc::ECONNABORTED) | Some(libc::EINTR) => Duration::ZERO,
                    _ => Duration::from_millis(20),
                };
                if !pause.is_zero() {
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }
}

/// The open connections, for the cap and for the final graceful close.
struct Connections {
    state: Arc<State>,
    epoch: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<ConnState>>>,
    /// Set at the end of the drain: every connection shuts down gracefully.
    closing: watch::Sender<bool>,
}

/// A bare answer for a connection refused at the cap (it never reached hyper).
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
Retry-After: 1\r\nConnection: close\r\nContent-Length: 96\r\n\r\n\
{\"error\":{\"code\":\"too_many_connections\",\"message\":\"every connection is busy; retry later\"}}\n";

impl Connections {
    fn new(state: Arc<State>) -> Connections {
        Connections {
            state,
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            closing: watch::channel(false).0,
        }
    }

    /// Registers a new connection and starts serving it, making room at the cap; refuses it
    /// when every open connection carries a request.
    fn admit(
        self: &Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        state: &Arc<State>,
        pools: &Arc<Pools>,
    ) {
        // Small answers go out at once (no Nagle / delayed-ACK stall).
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(ConnState::new(self.epoch));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            if open.len() >= state.config.max_connections {
                let idlest = open
                    .iter()
                    .filter(|(_, c)| !c.is_busy())
                    .min_by_key(|(_, c)| c.waiting_since.load(Ordering::SeqCst))
                    .map(|(id, _)| *id);
                match idlest {
                    Some(victim) => {
                        if let Some(victim) = open.remove(&victim) {
                            victim.evict.notify_one();
                            self.state
                                .evicted_connections
                                .fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    None => {
                        drop(open);
                        self.state
                            .refused_connections
                            .fetch_add(1, Ordering::SeqCst);
                        // Best effort, never waits: the socket buffer takes this at once.
                        let _ = stream.try_write(REFUSED);
                        return;
                    }
                }
            }
            open.insert(id, conn.clone());
            self.state
                .open_connections
                .store(open.len(), Ordering::SeqCst);
        }
        let served = Served {
            peer,
            conn,
            state: state.clone(),
            pools: pools.clone(),
            closing: self.closing.subscribe(),
        };
        let this = self.clone();
        let fut = async move {
            serve_connection(stream, served).await;
            this.forget(id);
        };
        tokio::spawn(fut);
    }

    fn forget(&self, id: u64) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.remove(&id);
        self.state
            .open_connections
            .store(open.len(), Ordering::SeqCst);
    }

    fn close_all(&self) {
        let _ = self.closing.send(true);
    }
}
