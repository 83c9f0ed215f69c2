//! `tagger serve` against hostile clients: the real binary under `RLIMIT_NOFILE` 1024 (as in
//! the README's container run), real sockets on loopback. Each test is bounded in count and
//! time (a few seconds) and stops its own clients.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::rng::Rng;
use common::{image, raise_own_fd_limit, Conn, Server};

/// The README's container limit.
const NOFILE: Option<u64> = Some(1024);

/// Reads whatever arrives until the server closes or `timeout` passes.
fn read_all(stream: &mut TcpStream, timeout: Duration) -> Vec<u8> {
    let _ = stream.set_read_timeout(Some(timeout));
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// The status code of a raw response, if it starts like one.
fn status_of(response: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(response.get(..12)?).ok()?;
    text.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()
}

fn assert_photo_tagged(server: &Server, within: Duration) {
    let start = Instant::now();
    let r = server.post("/v1/tags?top_k=1", "image/jpeg", &image("chelsea.jpg"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        start.elapsed() < within,
        "a photo took {:?} (limit {within:?})",
        start.elapsed()
    );
}

fn assert_healthz(server: &Server, within: Duration) {
    let start = Instant::now();
    assert_eq!(server.get("/healthz").status, 200);
    assert!(
        start.elapsed() < within,
        "/healthz took {:?} (limit {within:?})",
        start.elapsed()
    );
}

#[test]
fn a_thousand_5_gb_declarations_are_refused_and_their_sockets_freed() {
    let server = Server::start_limited(&["--workers", "2"], &[], NOFILE);
    server.wait_ready();
    let baseline = server.fd_count();
    let addr = server.addr;
    let head = "POST /v1/tags HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\n\
                Content-Length: 5000000000\r\n\r\n";
    let statuses: Vec<Option<u16>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(move || {
                    (0..125)
                        .map(|_| {
                            let mut s = TcpStream::connect(addr).ok()?;
                            s.write_all(head.as_bytes()).ok()?;
                            s.write_all(&[b'x'; 100]).ok()?;
                            status_of(&read_all(&mut s, Duration::from_secs(5)))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let refused = statuses.iter().filter(|s| **s == Some(413)).count();
    assert_eq!(refused, 1000, "{:?}", &statuses[..20]);
    // The descriptors come back (nothing parked, nothing leaked).
    let deadline = Instant::now() + Duration::from_secs(2);
    while server.fd_count() > baseline + 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        server.fd_count() <= baseline + 4,
        "{} descriptors open, {baseline} before",
        server.fd_count()
    );
    assert_photo_tagged(&server, Duration::from_secs(5));
}

#[test]
fn two_thousand_half_sent_heads_cannot_starve_real_clients() {
    assert!(
        raise_own_fd_limit() >= 2300,
        "the test needs 2300 descriptors"
    );
    let mut server = Server::start_limited(
        &["--workers", "2", "--header-timeout-secs", "2"],
        &[],
        NOFILE,
    );
    server.wait_ready();
    assert!(
        server
            .log()
            .lines()
            .any(|l| l.contains("max connections 922 (open-files limit 1024)")),
        "{}",
        server.log()
    );
    let mut attackers = Vec::new();
    for _ in 0..2000 {
        let mut s = TcpStream::connect(server.addr).expect("connecting");
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ");
        attackers.push(s);
    }
    let opened = Instant::now();
    // During the attack: answered at once.
    assert_healthz(&server, Duration::from_secs(2));
    assert_photo_tagged(&server, Duration::from_secs(2));
    assert!(server.metric("tagger_connections_evicted_total") >= 1000.0);
    assert!(server.metric("tagger_open_connections") <= 922.0);
    // Each one still held is cut at the header timeout (2 s after it was accepted).
    std::thread::sleep(Duration::from_millis(3000).saturating_sub(opened.elapsed()));
    let still_open = attackers
        .iter_mut()
        .filter(|s| {
            let _ = s.set_nonblocking(true);
            let mut socket: &TcpStream = s;
            matches!(socket.read(&mut [0u8; 64]), Err(e) if e.kind() == ErrorKind::WouldBlock)
        })
        .count();
    assert_eq!(
        still_open, 0,
        "half-sent heads still open after the header timeout"
    );
    drop(attackers);
    assert!(server.alive());
    assert_healthz(&server, Duration::from_secs(1));
    assert_photo_tagged(&server, Duration::from_secs(2));
    assert!(server.metric("tagger_open_connections") <= 2.0);
}

#[test]
fn connections_carrying_requests_are_never_evicted() {
    let server = Server::start_limited(&["--workers", "1", "--max-connections", "2"], &[], NOFILE);
    server.wait_ready();
    let cat = image("chelsea.jpg");
    let start_upload = || {
        let mut conn = server.connect();
        conn.send_head(
            "POST",
            "/v1/tags?top_k=1",
            &[("Content-Type", "image/jpeg")],
            Some(cat.len()),
        );
        conn.send(&cat[..1000]);
        conn
    };
    let mut a = start_upload();
    let mut b = start_upload();
    std::thread::sleep(Duration::from_millis(200));
    // Both carry a request: a third connection is refused, not either of them closed.
    let mut third = TcpStream::connect(server.addr).unwrap();
    let _ = third.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    let answer = read_all(&mut third, Duration::from_secs(5));
    assert_eq!(status_of(&answer), Some(503), "{answer:?}");
    for conn in [&mut a, &mut b] {
        conn.send(&cat[1000..]);
        let r = conn.read_response(false).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // Now both are idle between requests: a new client gets room.
    assert_eq!(server.metric("tagger_connections_refused_total"), 1.0);
}

#[test]
fn trickling_bodies_get_408_and_health_stays_fast() {
    let server =
        Server::start_limited(&["--workers", "2", "--read-timeout-secs", "2"], &[], NOFILE);
    server.wait_ready();
    let addr = server.addr;
    let started = Instant::now();
    let trickles: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || -> (Option<u16>, Duration) {
                let mut s = TcpStream::connect(addr).unwrap();
                let _ = s.write_all(
                    b"POST /v1/tags HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\n\
                      Content-Length: 1000000\r\n\r\n",
                );
                let start = Instant::now();
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut buf = [0u8; 4096];
                while start.elapsed() < Duration::from_secs(8) {
                    let _ = s.write_all(&[0xAB; 1024]);
                    match s.read(&mut buf) {
                        Ok(0) => return (None, start.elapsed()),
                        Ok(n) => return (status_of(&buf[..n]), start.elapsed()),
                        Err(_) => continue,
                    }
                }
                (None, start.elapsed())
            })
        })
        .collect();
    // While they trickle: /healthz within 1 s, every time.
    while started.elapsed() < Duration::from_millis(1800) {
        assert_healthz(&server, Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(100));
    }
    for t in trickles {
        let (status, after) = t.join().unwrap();
        assert_eq!(status, Some(408), "after {after:?}");
        assert!(
            after >= Duration::from_millis(1500) && after < Duration::from_secs(6),
            "{after:?}"
        );
    }
    assert_photo_tagged(&server, Duration::from_secs(5));
}

#[test]
fn new_connections_do_not_wait_for_each_other() {
    let server = Server::start_limited(&["--workers", "2"], &[], NOFILE);
    server.wait_ready();
    let addr = server.addr;
    let digit = common::fixture("digits/eval/8_000.png");
    let barrier = Arc::new(Barrier::new(8));
    // Eight connections at once: four stall halfway through their request, four send theirs
    // whole; the whole ones are answered at once, whatever the stalled ones do.
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let (barrier, digit) = (barrier.clone(), digit.clone());
            std::thread::spawn(move || -> Result<Duration, String> {
                barrier.wait();
                let mut conn = Conn::try_open(addr).map_err(|e| e.to_string())?;
                let start = Instant::now();
                if i % 2 == 0 {
                    conn.send_head(
                        "POST",
                        "/v1/digits",
                        &[("Content-Type", "image/png")],
                        Some(digit.len()),
                    );
                    conn.send(&digit[..digit.len() / 2]);
                    std::thread::sleep(Duration::from_millis(1500));
                    conn.send(&digit[digit.len() / 2..]);
                } else {
                    conn.send_head(
                        "POST",
                        "/v1/digits",
                        &[("Content-Type", "image/png")],
                        Some(digit.len()),
                    );
                    conn.send(&digit);
                }
                let r = conn.read_response(false).map_err(|e| e.to_string())?;
                if r.status != 200 {
                    return Err(format!("client {i}: {} {}", r.status, r.text()));
                }
                Ok(start.elapsed())
            })
        })
        .collect();
    let times: Vec<Duration> = clients
        .into_iter()
        .map(|c| c.join().unwrap().unwrap())
        .collect();
    for (i, t) in times.iter().enumerate() {
        if i % 2 == 1 {
            assert!(
                *t < Duration::from_secs(1),
                "client {i} waited {t:?}: {times:?}"
            );
        } else {
            assert!(*t >= Duration::from_millis(1500), "{times:?}");
        }
    }
}

#[test]
fn sigterm_with_eight_requests_in_flight_answers_all_then_exits_0() {
    let mut server = Server::start_limited(&["--workers", "2", "--drain-secs", "10"], &[], NOFILE);
    server.wait_ready();
    let cat = image("chelsea.jpg");
    let mut in_flight: Vec<Conn> = (0..8)
        .map(|_| {
            let mut conn = server.connect();
            conn.send_head(
                "POST",
                "/v1/tags?top_k=1",
                &[("Content-Type", "image/jpeg")],
                Some(cat.len()),
            );
            conn.send(&cat[..cat.len() / 2]);
            conn
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric("tagger_queue_depth") < 8.0 {
        assert!(Instant::now() < deadline, "the uploads were never admitted");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.sigterm();
    let signalled = Instant::now();
    std::thread::sleep(Duration::from_millis(200));
    for conn in &mut in_flight {
        conn.send(&cat[cat.len() / 2..]);
    }
    for conn in &mut in_flight {
        let r = conn.read_response(false).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("exits within the drain deadline");
    assert_eq!(status.code(), Some(0), "{}", server.log());
    assert!(signalled.elapsed() < Duration::from_secs(10));
}

#[test]
fn oversized_heads_get_431() {
    let server = Server::start_limited(&[], &[], NOFILE);
    server.wait_ready();
    // Over 16 KiB or 64 fields: our JSON error, then the connection is closed.
    let mut conn = server.connect();
    let long = "x".repeat(20 << 10);
    let r = conn.request("GET", "/healthz", &[("X-Long", &long)], b"");
    assert_eq!((r.status, r.code().as_str()), (431, "header_too_large"));
    assert!(conn.read_response(false).is_err(), "left open after a 431");
    let many: Vec<(String, String)> = (0..100)
        .map(|i| (format!("X-H{i}"), "1".to_string()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut conn = server.connect();
    let r = conn.request("GET", "/healthz", &many, b"");
    assert_eq!((r.status, r.code().as_str()), (431, "header_too_large"));
    // Over twice that, hyper stops reading and answers a bare 431 itself.
    let mut conn = server.connect();
    let huge = "x".repeat(40 << 10);
    let r = conn.request("GET", "/healthz", &[("X-Long", &huge)], b"");
    assert_eq!(r.status, 431);
    // Just under the limits: served.
    let mut conn = server.connect();
    let r = conn.request("GET", "/healthz", &[("X-Long", &"x".repeat(15 << 10))], b"");
    assert_eq!(r.status, 200);
    assert_healthz(&server, Duration::from_secs(1));
}

/// Valid requests the fuzzer starts from (cheap routes and small bodies, so 10,000 of them
/// run in seconds).
fn seeds() -> Vec<Vec<u8>> {
    let png = image("tiny.png");
    let with_body = |head: &str, body: &[u8]| {
        let mut v = head.replace("{len}", &body.len().to_string()).into_bytes();
        v.extend_from_slice(body);
        v
    };
    let chunked = {
        let mut v = b"POST /v1/digits HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n\
                      Transfer-Encoding: chunked\r\n\r\n"
            .to_vec();
        for part in png.chunks(50) {
            v.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            v.extend_from_slice(part);
            v.extend_from_slice(b"\r\n");
        }
        v.extend_from_slice(b"0\r\n\r\n");
        v
    };
    let (ct, form) = common::multipart(&[("image", Some("d.png"), &png)]);
    vec![
        b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
        b"GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec(),
        b"GET /v1/models/digits HTTP/1.1\r\nHost: t\r\nX-Request-Id: abc\r\n\r\n".to_vec(),
        b"HEAD /metrics HTTP/1.0\r\n\r\n".to_vec(),
        b"GET /nope?x=%zz HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
        with_body(
            "POST /v1/digits?preprocess=plain HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n\
             Content-Length: {len}\r\n\r\n",
            &png,
        ),
        with_body(
            "POST /v1/tags HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n\
             Content-Length: {len}\r\n\r\n",
            b"GIF89a not really",
        ),
        with_body(
            &format!(
                "POST /v1/models/digits/predict HTTP/1.1\r\nHost: t\r\nContent-Type: {ct}\r\n\
                 Content-Length: {{len}}\r\n\r\n"
            ),
            &form,
        ),
        chunked,
    ]
}

/// One random change: flip, insert, delete, truncate, splice a hostile token, or repeat a span.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    const TOKENS: [&[u8]; 14] = [
        b"\r\n",
        b"\r\n\r\n",
        b"\n",
        b"\0",
        b":",
        b" ",
        b"Content-Length: 99999999999999999999\r\n",
        b"Content-Length: -1\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"ffffffffffffffff\r\n",
        b"Expect: 100-continue\r\n",
        b"HTTP/9.9",
        b"%",
    ];
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(6) {
            0 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] ^= 1 << rng.below(8);
            }
            1 => out.insert(at, rng.next_u64() as u8),
            2 if at < out.len() => {
                let end = (at + 1 + rng.below(16)).min(out.len());
                out.drain(at..end);
            }
            3 => out.truncate(at),
            4 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                out.splice(at..at, token.iter().copied());
            }
            _ if at < out.len() => {
                let end = (at + 1 + rng.below(64)).min(out.len());
                let span = out[at..end].to_vec();
                out.splice(at..at, span);
            }
            _ => {}
        }
    }
    out
}

#[test]
fn ten_thousand_random_and_mutated_requests_cause_no_5xx_and_no_crash() {
    let mut server = Server::start_limited(
        &["--workers", "2", "--header-timeout-secs", "2"],
        &[],
        NOFILE,
    );
    server.wait_ready();
    let addr: SocketAddr = server.addr;
    let seeds = Arc::new(seeds());
    let seed = 0x7A66_E5ED ^ std::process::id() as u64;
    let results: Vec<(u64, Vec<u16>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8u64)
            .map(|w| {
                let seeds = seeds.clone();
                scope.spawn(move || {
                    let mut rng = Rng::new(seed.wrapping_add(w.wrapping_mul(0x9E37_79B9)) | 1);
                    let mut statuses = Vec::new();
                    for i in 0..1250 {
                        let input = if i % 10 == 0 {
                            (0..rng.below(300)).map(|_| rng.next_u64() as u8).collect()
                        } else {
                            let base = rng.below(seeds.len());
                            mutate(&mut rng, &seeds[base])
                        };
                        let Ok(mut s) = TcpStream::connect(addr) else {
                            continue;
                        };
                        let _ = s.write_all(&input);
                        // End of input: the server answers what it has, or closes.
                        let _ = s.shutdown(Shutdown::Write);
                        let answer = read_all(&mut s, Duration::from_secs(5));
                        // Pipelined or 100-continue answers: every status line counts.
                        let mut rest = &answer[..];
                        while let Some(at) = find(rest, b"HTTP/1.") {
                            if let Some(status) = status_of(&rest[at..]) {
                                statuses.push(status);
                            }
                            rest = &rest[at + 7..];
                        }
                    }
                    (w, statuses)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let statuses: Vec<u16> = results.into_iter().flat_map(|(_, s)| s).collect();
    let bad: Vec<u16> = statuses
        .iter()
        .copied()
        .filter(|&s| s >= 500 && s != 503)
        .collect();
    assert!(bad.is_empty(), "seed {seed:#x}: 5xx answers {bad:?}");
    assert!(statuses.len() > 5000, "only {} answers", statuses.len());
    assert!(
        statuses.contains(&200) && statuses.contains(&400),
        "{statuses:?}"
    );
    assert!(server.alive(), "{}", server.log());
    assert_healthz(&server, Duration::from_secs(1));
    assert_photo_tagged(&server, Duration::from_secs(5));
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
