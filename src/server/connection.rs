//! One connection's life: wait for a request without hyper, serve it with hyper, take the socket
//! back, and wait again.
//!
//! hyper keeps an 8 KiB read buffer and an 8 KiB write buffer for as long as its connection
//! lives. Between requests they hold nothing, so a connection idling between requests (or one
//! that has not sent a byte yet) owns only its socket, its [`ConnState`] and a small task: the
//! wait for the next request is ours ([`wait_for_request`], with the header or keep-alive
//! timeout, the cap's eviction and the drain), and each request gets a fresh hyper connection
//! that is taken apart as soon as its answer is written ([`serve_with_hyper`]). Bytes hyper had
//! already read past that answer (a pipelined request) are handed to the next hyper connection
//! first, so keep-alive and pipelining look to the client exactly as one long hyper connection.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};

use super::config::Config;
use super::dispatch::{self, Pools};
use super::state::State;

/// Largest request head (request line and headers) hyper reads; beyond it hyper answers a bare
/// 431 itself. Twice our limit ([`super::dispatch::MAX_HEAD_BYTES`]), so a head between the
/// two gets our JSON 431 instead.
const HYPER_MAX_HEAD_BYTES: usize = 2 * super::dispatch::MAX_HEAD_BYTES;
/// Most header fields hyper parses; beyond it hyper answers a bare 431 (twice our limit).
const HYPER_MAX_HEADERS: usize = 2 * super::dispatch::MAX_HEADERS;

/// Milliseconds since `epoch`, plus one (so 0 can mean "never").
pub(super) fn stamp(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64 + 1
}

/// One connection's state, shared by its task, its I/O wrapper, its requests and the registry.
pub(crate) struct ConnState {
    epoch: Instant,
    /// Requests on this connection whose answer is not yet handed to hyper (0 or 1).
    busy: AtomicUsize,
    /// When it last started waiting for a request head (accept, or the end of a request).
    pub(super) waiting_since: AtomicU64,
    /// When the first byte of the next head arrived (0: none yet).
    head_started: AtomicU64,
    /// Requests answered so far (the first head has the header timeout from the start; later
    /// ones the keep-alive time).
    served: AtomicU64,
    /// When a write started to block (0: not blocked).
    write_blocked: AtomicU64,
    /// An answer that keeps the connection open (the request's body read whole) was handed to
    /// hyper and not yet flushed to the socket.
    answer_unflushed: AtomicBool,
    /// hyper has written its last answer whole and waits for the next head: its connection
    /// can be taken apart without losing anything.
    between_requests: AtomicBool,
    /// Wakes the watchdog when the state changes.
    changed: Notify,
    /// Closes the connection at once (eviction).
    pub(super) evict: Notify,
}

impl ConnState {
    pub(super) fn new(epoch: Instant) -> ConnState {
        ConnState {
            epoch,
            busy: AtomicUsize::new(0),
            waiting_since: AtomicU64::new(stamp(epoch)),
            head_started: AtomicU64::new(0),
            served: AtomicU64::new(0),
            write_blocked: AtomicU64::new(0),
            answer_unflushed: AtomicBool::new(false),
            between_requests: AtomicBool::new(false),
            changed: Notify::new(),
            evict: Notify::new(),
        }
    }

    /// A request head has arrived (hyper called the service).
    pub(crate) fn request_started(&self) {
        self.busy.fetch_add(1, Ordering::SeqCst);
        self.head_started.store(0, Ordering::SeqCst);
        self.answer_unflushed.store(false, Ordering::SeqCst);
        self.between_requests.store(false, Ordering::SeqCst);
        self.changed.notify_one();
    }

    /// The answer is handed to hyper: the connection waits for its next head, unless the
    /// answer closes it (`keeps_connection` false: then hyper closes it once written).
    pub(crate) fn request_finished(&self, keeps_connection: bool) {
        self.served.fetch_add(1, Ordering::SeqCst);
        self.waiting_since
            .store(stamp(self.epoch), Ordering::SeqCst);
        self.answer_unflushed
            .store(keeps_connection, Ordering::SeqCst);
        self.busy.fetch_sub(1, Ordering::SeqCst);
        self.changed.notify_one();
    }

    pub(super) fn is_busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst) > 0
    }

    /// hyper flushed its whole write buffer to the socket. hyper flushes the socket only once
    /// its buffer is empty, and our answers are always one whole buffer (`Full`), so after the
    /// service returned a keep-alive answer (its request's body read whole) this means the
    /// answer is out and hyper is back to reading heads. (If the client asked to close, hyper
    /// closes in the same poll, before we could take the connection apart.)
    fn flushed(&self) {
        if self.answer_unflushed.swap(false, Ordering::SeqCst) && !self.is_busy() {
            self.between_requests.store(true, Ordering::SeqCst);
        }
    }

    /// When the watchdog must close this connection, if nothing changes before.
    fn deadline(&self, config: &Config) -> Option<u64> {
        let ms = |d: Duration| d.as_millis() as u64;
        let blocked = self.write_blocked.load(Ordering::SeqCst);
        let write = (blocked != 0)
            .then_some(config.write_timeout)
            .flatten()
            .map(|t| blocked + ms(t));
        let idle = if self.is_busy() {
            None
        } else {
            let head = self.head_started.load(Ordering::SeqCst);
            if head != 0 {
                config.header_timeout.map(|t| head + ms(t))
            } else if self.served.load(Ordering::SeqCst) == 0 {
                config
                    .header_timeout
                    .map(|t| self.waiting_since.load(Ordering::SeqCst) + ms(t))
            } else {
                config
                    .keep_alive
                    .map(|t| self.waiting_since.load(Ordering::SeqCst) + ms(t))
            }
        };
        match (write, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Sleeps until `deadline` (forever without one).
    async fn sleep_until(&self, deadline: Option<u64>) {
        match deadline {
            Some(at) => {
                let at = self.epoch + Duration::from_millis(at);
                tokio::time::sleep_until(at.into()).await
            }
            None => std::future::pending().await,
        }
    }

    fn passed(&self, config: &Config) -> bool {
        self.deadline(config)
            .is_some_and(|at| at <= stamp(self.epoch))
    }
}

/// What a connection needs besides its socket.
pub(super) struct Served {
    pub(super) peer: SocketAddr,
    pub(super) conn: Arc<ConnState>,
    pub(super) state: Arc<State>,
    pub(super) pools: Arc<Pools>,
    /// Turns true at the end of the drain: every connection shuts down gracefully.
    pub(super) closing: watch::Receiver<bool>,
}

/// Serves one connection until it ends, is evicted, or a timeout passes.
pub(super) async fn serve_connection(mut stream: TcpStream, mut it: Served) {
    let mut unread = Bytes::new();
    loop {
        if *it.closing.borrow() {
            return lingering_close(stream).await;
        }
        if unread.is_empty() {
            match wait_for_request(&stream, &mut it).await {
                Waited::Readable => {}
                Waited::Closing => return lingering_close(stream).await,
                Waited::Gone => return,
            }
        }
        match serve_with_hyper(stream, unread, &mut it).await {
            Outcome::Idle { socket, rest } => (stream, unread) = (socket, rest),
            Outcome::Close(socket) => return lingering_close(socket).await,
            Outcome::Drop => return,
        }
    }
}

enum Waited {
    /// The client sent the start of its next request.
    Readable,
    /// The drain is over: close gracefully.
    Closing,
    /// Timed out, evicted, closed by the client, or the socket failed: close at once.
    Gone,
}

/// Waits, without hyper, until the client sends its next request.
async fn wait_for_request(stream: &TcpStream, it: &mut Served) -> Waited {
    let config = &it.state.config;
    let mut first = [0u8; 1];
    loop {
        if *it.closing.borrow() {
            return Waited::Closing;
        }
        let deadline = it.conn.deadline(config);
        tokio::select! {
            // A peek, not `readable()`: readiness can be reported without a byte to read
            // (e.g. right after accept), and a false alarm would build a hyper connection.
            peeked = stream.peek(&mut first) => {
                return match peeked {
                    Ok(1..) => Waited::Readable,
                    // The client closed (or the socket failed) between requests.
                    Ok(0) | Err(_) => Waited::Gone,
                };
            }
            _ = it.conn.evict.notified() => {
                log::debug!("connection from {} closed to make room at the connection cap", it.peer);
                return Waited::Gone;
            }
            changed = it.closing.changed() => {
                if changed.is_err() {
                    return Waited::Closing;
                }
            }
            _ = it.conn.sleep_until(deadline) => {
                if it.conn.passed(config) {
                    log::debug!("connection from {} timed out", it.peer);
                    return Waited::Gone;
                }
            }
        }
    }
}

enum Outcome {
    /// hyper answered and is waiting for the next head: the socket, and what hyper had read
    /// of that head.
    Idle { socket: TcpStream, rest: Bytes },
    /// The connection ends (hyper or the client closes it, or the drain is over).
    Close(TcpStream),
    /// Timed out or evicted: closed at once.
    Drop,
}

/// Serves requests with one hyper connection until it is between requests again.
async fn serve_with_hyper(stream: TcpStream, unread: Bytes, it: &mut Served) -> Outcome {
    let conn = &it.conn;
    conn.between_requests.store(false, Ordering::SeqCst);
    let io = TokioIo::new(Tracked {
        inner: stream,
        unread,
        conn: conn.clone(),
    });
    let service = {
        let (state, pools, conn, peer) =
            (it.state.clone(), it.pools.clone(), conn.clone(), it.peer);
        service_fn(move |request| {
            // Boxed so the connection can be polled without pinning it (see below).
            Box::pin(dispatch::handle(
                state.clone(),
                pools.clone(),
                conn.clone(),
                peer,
                request,
            ))
        })
    };
    // Boxed: the idle task then holds a pointer, not hyper's whole connection state.
    let mut http = Box::new(
        http1::Builder::new()
            // Our watchdog times heads (hyper's own timer would also run between requests).
            .header_read_timeout(None)
            .max_header_size(HYPER_MAX_HEAD_BYTES)
            .max_headers(HYPER_MAX_HEADERS)
            .keep_alive(true)
            .serve_connection(io, service),
    );
    let config = &it.state.config;
    // Graceful shutdown: hyper finishes the request in progress, then stops. Asked for either
    // to close (end of the drain) or to take the idle connection apart.
    let mut closing = false;
    let mut detaching = false;
    let mut ended_cleanly = false;
    loop {
        let deadline = conn.deadline(config);
        tokio::select! {
            // Without shutdown: hyper hands the socket back.
            done = std::future::poll_fn(|cx| match http.poll_without_shutdown(cx) {
                Poll::Ready(result) => Poll::Ready(Some(result)),
                Poll::Pending if !detaching && conn.between_requests.load(Ordering::SeqCst) => {
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            }) => match done {
                Some(result) => {
                    match result {
                        Ok(()) => ended_cleanly = true,
                        Err(e) => log::debug!("connection from {}: {e}", it.peer),
                    }
                    break;
                }
                None => {
                    // Idle: hyper closes its side at once (nothing is in progress).
                    detaching = true;
                    Pin::new(&mut *http).graceful_shutdown();
                }
            },
            _ = conn.evict.notified() => {
                log::debug!("connection from {} closed to make room at the connection cap", it.peer);
                return Outcome::Drop;
            }
            _ = conn.changed.notified() => {}
            changed = it.closing.changed(), if !closing => {
                closing = true;
                if changed.is_ok() {
                    Pin::new(&mut *http).graceful_shutdown();
                }
            }
            _ = conn.sleep_until(deadline) => {
                if conn.passed(config) {
                    log::debug!("connection from {} timed out", it.peer);
                    return Outcome::Drop;
                }
            }
        }
    }
    let parts = (*http).into_parts();
    let Tracked { inner, unread, .. } = parts.io.into_inner();
    if !(detaching && ended_cleanly) || closing || *it.closing.borrow() {
        return Outcome::Close(inner);
    }
    // Copied, so the idle connection does not keep hyper's 8 KiB read buffer alive.
    let rest = match (parts.read_buf.is_empty(), unread.is_empty()) {
        (true, true) => Bytes::new(),
        _ => Bytes::from([&parts.read_buf[..], &unread[..]].concat()),
    };
    Outcome::Idle {
        socket: inner,
        rest,
    }
}

/// Most bytes read and thrown away while closing a connection.
const LINGER_BYTES: usize = 64 << 10;
/// Longest wait for the client to close its side.
const LINGER_TIME: Duration = Duration::from_secs(1);

/// Closes a connection the way clients can read its last answer: send FIN, then read what the
/// client still sends (a body we refused, a pipelined request) until it closes, up to a small
/// bound. Closing with unread data would send a reset, and a reset can destroy the answer the
/// client has not read yet.
async fn lingering_close(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if stream.shutdown().await.is_err() {
        return;
    }
    // On the heap: an array here would make every connection's task 4 KiB larger.
    let mut buf = vec![0u8; 4096];
    let mut seen = 0;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while seen < LINGER_BYTES {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen += n,
            }
        }
    })
    .await;
}

/// The socket as hyper sees it: first the bytes an earlier hyper connection had read but not
/// used (`unread`), then the socket; noting what the watchdog needs (when a head's first byte
/// arrives, when a write starts to block) and when an answer has been flushed.
struct Tracked {
    inner: TcpStream,
    unread: Bytes,
    conn: Arc<ConnState>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = if self.unread.is_empty() {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        } else {
            let n = self.unread.len().min(buf.remaining());
            buf.put_slice(&self.unread[..n]);
            self.unread.advance(n);
            Poll::Ready(Ok(()))
        };
        if buf.filled().len() > before
            && !self.conn.is_busy()
            && self.conn.head_started.load(Ordering::SeqCst) == 0
        {
            let now = stamp(self.conn.epoch);
            self.conn.head_started.store(now, Ordering::SeqCst);
            self.conn.changed.notify_one();
        }
        result
    }
}

impl Tracked {
    fn note_write<T>(&self, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        let blocked = &self.conn.write_blocked;
        if result.is_pending() {
            if blocked.load(Ordering::SeqCst) == 0 {
                blocked.store(stamp(self.conn.epoch), Ordering::SeqCst);
                self.conn.changed.notify_one();
            }
        } else if blocked.load(Ordering::SeqCst) != 0 {
            blocked.store(0, Ordering::SeqCst);
        }
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_write(result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_write(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        if let Poll::Ready(Ok(())) = result {
            self.conn.flushed();
        }
        self.note_write(result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
