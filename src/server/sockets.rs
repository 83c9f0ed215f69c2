//! What tiny_http 0.12 cannot do with the sockets it owns: receive timeouts on connections,
//! prompt service of new connections, and closing one connection.
//!
//! Receive timeouts: tiny_http sets none. Linux copies `SO_RCVTIMEO` (like `TCP_NODELAY` and
//! `SO_SNDTIMEO`) from the listening socket to each accepted one, so setting it on the
//! listener bounds every read of every connection from its first byte: a silent client, a
//! stalled body, an idle keep-alive connection are cut off after the timeout. But on a
//! listening socket `SO_RCVTIMEO` also bounds `accept()`, and tiny_http's accept thread stops
//! at its first error. Should that happen anyway (the process was frozen longer than the
//! timeout), the dispatcher restarts tiny_http on the same socket.
//!
//! Prompt service: tiny_http hands each new connection to its thread pool, which can lose the
//! wake-up when several connections arrive at once (it counts a thread that is already waking
//! as still idle); the connection then waits until another connection closes or an idle thread
//! times out, seconds later. Measured here: 8 clients connecting together, one waited 7.4 s for
//! its first answer.
//!
//! [`AcceptKeeper`] covers both: it connects to the listener (and resets the connection at
//! once) every 200 ms, or every third of the receive timeout if that is shorter. Each such
//! connection makes `accept()` return, and makes the pool start a thread or wake one, which
//! then also takes any connection left waiting.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the keeper connects at most.
const NUDGE: Duration = Duration::from_millis(200);

/// The thread that connects to the listener periodically; stops when dropped.
pub(crate) struct AcceptKeeper {
    stop: Arc<AtomicBool>,
}

impl AcceptKeeper {
    /// Connects to `listen` every 200 ms, or every `read_timeout / 3` if shorter.
    pub(crate) fn start(listen: SocketAddr, read_timeout: Option<Duration>) -> AcceptKeeper {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let target = loopback(listen);
        let every = read_timeout
            .map_or(NUDGE, |t| (t / 3).min(NUDGE))
            .max(Duration::from_millis(20));
        let spawned = std::thread::Builder::new()
            .name("tagger-accept".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(every);
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Err(e) = nudge(target, every) {
                        log::debug!("accept keeper: connecting to {target}: {e}");
                    }
                }
            });
        if let Err(e) = spawned {
            log::warn!("accept keeper: {e}");
        }
        AcceptKeeper { stop }
    }
}

/// Connects and resets at once (no TIME_WAIT): tiny_http accepts it, reads an error, and
/// drops it without a request or a log line.
fn nudge(target: SocketAddr, timeout: Duration) -> std::io::Result<()> {
    let stream = TcpStream::connect_timeout(&target, timeout)?;
    socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
    Ok(())
}

impl Drop for AcceptKeeper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The address to connect to for a listener bound to `listen` (wildcards: the loopback).
fn loopback(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
        IpAddr::V6(ip) if ip.is_unspecified() => Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Whether `addr` is the local end of a connection accepted by a listener bound to `listen`.
fn accepted_on(addr: SocketAddr, listen: SocketAddr) -> bool {
    addr.port() == listen.port() && (listen.ip().is_unspecified() || addr.ip() == listen.ip())
}

/// Calls `f` for every socket this process has open.
fn for_each_socket(mut f: impl FnMut(&socket2::SockRef<'_>)) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|link| link.to_string_lossy().starts_with("socket:["));
        if !is_socket {
            continue;
        }
        // SAFETY: `fd` was an open socket a moment ago. If it has been closed since, the calls
        // `f` makes fail with EBADF; if the number was reused, `f` acts on the new descriptor
        // only when it is the connection the caller looks for (see `shutdown_connection`).
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        f(&socket2::SockRef::from(&borrowed));
    }
}

/// The socket's peer, when it is a connection accepted on `listen`.
fn accepted_peer(socket: &socket2::SockRef<'_>, listen: SocketAddr) -> Option<SocketAddr> {
    let local = socket.local_addr().ok()?.as_socket()?;
    if !accepted_on(local, listen) {
        return None;
    }
    socket.peer_addr().ok()?.as_socket()
}

/// Shuts down (both directions) the connection from `peer` accepted on `listen`. The caller
/// holds the connection open, so the 4-tuple names exactly one live socket.
pub(crate) fn shutdown_connection(listen: SocketAddr, peer: SocketAddr) -> bool {
    let mut done = false;
    for_each_socket(|socket| {
        if accepted_peer(socket, listen) == Some(peer) {
            done |= socket.shutdown(std::net::Shutdown::Both).is_ok();
        }
    });
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;
    use std::time::Instant;

    #[test]
    fn accepted_sockets_inherit_the_listener_timeouts() {
        // What the server relies on: Linux copies SO_RCVTIMEO and TCP_NODELAY to accepted
        // sockets, and SO_RCVTIMEO also bounds accept() (hence the keeper).
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        socket.set_tcp_nodelay(true).unwrap();
        socket
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        socket.listen(8).unwrap();
        let listener: TcpListener = socket.into();
        let start = Instant::now();
        let err = listener.accept().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
        assert!(start.elapsed() < Duration::from_secs(2));
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut accepted, _) = listener.accept().unwrap();
        assert!(accepted.nodelay().unwrap());
        let mut buf = [0u8; 1];
        let err = accepted.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    }

    #[test]
    fn the_keeper_keeps_accept_from_timing_out() {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        socket
            .bind(&"0.0.0.0:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        socket.listen(8).unwrap();
        let listener: TcpListener = socket.into();
        let addr = listener.local_addr().unwrap();
        let _keeper = AcceptKeeper::start(addr, Some(Duration::from_millis(300)));
        let start = Instant::now();
        for _ in 0..5 {
            listener.accept().expect("accept never times out");
        }
        assert!(start.elapsed() >= Duration::from_millis(400));
    }

    #[test]
    fn a_connection_is_found_by_its_peer_and_shut_down() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).unwrap();
        let (_accepted, peer) = listener.accept().unwrap();
        assert!(shutdown_connection(addr, peer));
        let mut buf = [0u8; 1];
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(
            client.read(&mut buf).unwrap(),
            0,
            "the client sees the close"
        );
    }

    #[test]
    fn matching_the_local_address() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert!(accepted_on(lo, any));
        assert!(accepted_on(lo, lo));
        assert!(!accepted_on("127.0.0.1:8081".parse().unwrap(), any));
        assert!(!accepted_on("10.0.0.1:8080".parse().unwrap(), lo));
    }
}
