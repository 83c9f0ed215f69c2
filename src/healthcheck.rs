//! `tagger healthcheck`: the container HEALTHCHECK (scratch images have no curl).
//!
//! One HTTP/1.1 `GET` over a plain `TcpStream` to the server's own address; healthy when the
//! answer is 200, unhealthy otherwise (refused, timed out, any other status). A listen address
//! of `0.0.0.0` or `[::]` is probed on the loopback.

use std::fmt;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// What to probe.
#[derive(Debug, Clone)]
pub struct Config {
    /// The server's listen address (a wildcard IP is probed on the loopback).
    pub addr: SocketAddr,
    /// The path to `GET`, e.g. `/readyz`.
    pub path: String,
    /// The whole exchange's time limit.
    pub timeout: Duration,
}

/// Why the server is not healthy.
#[derive(Debug)]
pub struct Unhealthy {
    url: String,
    why: String,
}

impl fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.url, self.why)
    }
}

/// Probes the server: `Ok` when it answers 200.
pub fn run(config: &Config) -> Result<(), Unhealthy> {
    let target = probe_address(config.addr);
    let unhealthy = |why: String| Unhealthy {
        url: format!("http://{target}{}", config.path),
        why,
    };
    match probe(target, &config.path, config.timeout) {
        Ok(200) => Ok(()),
        Ok(status) => Err(unhealthy(format!("answered {status}"))),
        Err(e) => Err(unhealthy(e.to_string())),
    }
}

/// The address to connect to: the listen address, with a wildcard IP replaced by loopback.
fn probe_address(mut addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => addr.set_ip(Ipv4Addr::LOCALHOST.into()),
        IpAddr::V6(ip) if ip.is_unspecified() => addr.set_ip(Ipv6Addr::LOCALHOST.into()),
        _ => {}
    }
    addr
}

/// Sends the GET and returns the status code; the whole exchange fits in `timeout`.
fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<u16> {
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))
    };
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_write_timeout(Some(left()?))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: tagger-healthcheck\r\n\
         Connection: close\r\n\r\n"
    )?;
    // The status line is all we need: "HTTP/1.1 200 OK".
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 64];
    while !head.contains(&b'\n') && head.len() < 1024 {
        stream.set_read_timeout(Some(left()?))?;
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    parse_status(&head).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "not an HTTP answer: {:?}",
                String::from_utf8_lossy(&head[..head.len().min(40)])
            ),
        )
    })
}

fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn wildcard_addresses_probe_the_loopback() {
        let probed = |addr: &str| probe_address(addr.parse().unwrap());
        assert_eq!(probed("0.0.0.0:8080"), "127.0.0.1:8080".parse().unwrap());
        assert_eq!(probed("[::]:9"), "[::1]:9".parse().unwrap());
        assert_eq!(probed("10.1.2.3:80"), "10.1.2.3:80".parse().unwrap());
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            parse_status(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
    }

    #[test]
    fn a_server_that_never_answers_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let start = Instant::now();
        let err = probe(addr, "/readyz", Duration::from_millis(300)).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(3), "{err}");
        drop(listener);
    }
}
