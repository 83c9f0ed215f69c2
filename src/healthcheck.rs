//! `tagger healthcheck`: the container HEALTHCHECK (scratch images have no curl).
//!
//! One HTTP/1.1 `GET` over a plain `TcpStream` to the server's own address (`--addr`, else
//! `TAGGER_ADDR`, which the server reads too); exit 0 when the answer is 200, 1 otherwise
//! (refused, timed out, any other status). A listen address of `0.0.0.0` or `[::]` is probed
//! on the loopback.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::cli::{setting, CliError, HealthcheckArgs, EXIT_FAILURE, EXIT_OK};

/// Probes the server; exit 0 when it answers 200.
pub fn run(args: HealthcheckArgs) -> Result<i32, CliError> {
    let addr = setting(args.addr, "TAGGER_ADDR", "127.0.0.1:8080".to_string())?;
    let path = setting(args.path, "TAGGER_HEALTHCHECK_PATH", "/readyz".to_string())?;
    let secs = setting(args.timeout_secs, "TAGGER_HEALTHCHECK_TIMEOUT_SECS", 3)?;
    if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(CliError::Usage(format!(
            "--path {path:?}: expected an absolute path such as /readyz"
        )));
    }
    let timeout = Duration::from_secs(secs.max(1));
    let target = probe_address(&addr)?;
    match probe(target, &path, timeout) {
        Ok(200) => Ok(EXIT_OK),
        Ok(status) => {
            eprintln!("tagger healthcheck: http://{target}{path} answered {status}");
            Ok(EXIT_FAILURE)
        }
        Err(e) => {
            eprintln!("tagger healthcheck: http://{target}{path}: {e}");
            Ok(EXIT_FAILURE)
        }
    }
}

/// The address to connect to: the listen address, with a wildcard IP replaced by loopback.
fn probe_address(addr: &str) -> Result<SocketAddr, CliError> {
    let mut resolved = addr
        .to_socket_addrs()
        .map_err(|e| CliError::Usage(format!("--addr {addr:?}: {e} (expected HOST:PORT)")))?
        .next()
        .ok_or_else(|| CliError::Usage(format!("--addr {addr:?} resolves to no address")))?;
    match resolved.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => resolved.set_ip(Ipv4Addr::LOCALHOST.into()),
        IpAddr::V6(ip) if ip.is_unspecified() => resolved.set_ip(Ipv6Addr::LOCALHOST.into()),
        _ => {}
    }
    Ok(resolved)
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
        assert_eq!(
            probe_address("0.0.0.0:8080").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(probe_address("[::]:9").unwrap(), "[::1]:9".parse().unwrap());
        assert_eq!(
            probe_address("10.1.2.3:80").unwrap(),
            "10.1.2.3:80".parse().unwrap()
        );
        assert!(matches!(probe_address("nonsense"), Err(CliError::Usage(_))));
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
