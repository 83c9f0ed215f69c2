//! The whole server in-process with fake engines: panics become 500s and the server lives on.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use super::config::Config;
use super::shutdown::Shutdown;
use super::state::State;
use super::transport;
use crate::engine::Engine;
use crate::image::DecodeMode;
use crate::models::{embedded_manifest, head_for, Model, ModelName, Models};

/// An engine that panics or answers constant logits.
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
        queue_wait: Duration::ZERO,
        max_body_bytes: 1 << 20,
        max_pixels: 50_000_000,
        read_timeout: Some(Duration::from_secs(5)),
        write_timeout: Some(Duration::from_secs(5)),
        header_timeout: Some(Duration::from_secs(5)),
        keep_alive: Some(Duration::from_secs(5)),
        max_connections: 64,
        drain: Duration::from_secs(5),
        warm_up: true,
        tags_model: None,
        decode: DecodeMode::Exact,
        max_batch: 32,
        model_files: Vec::new(),
    }
}

/// Starts a server with fake models on an ephemeral port; returns its address and the switch
/// that stops it.
fn start_with(models: Models, config: Config) -> (SocketAddr, Arc<Shutdown>) {
    let listener = transport::bind(config.addr).unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Arc::new(Shutdown::manual());
    let state = Arc::new(State::new(config, shutdown.flag()));
    let _ = state.models.set(models);
    let stop = shutdown.clone();
    let pools = Arc::new(super::dispatch::Pools::new(2).unwrap());
    std::thread::spawn(move || transport::serve(state, pools, listener, &stop));
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
    let (addr, shutdown) = start_with(fake_models(true), config);
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
    let (addr, shutdown) = start_with(fake_models(false), test_config());
    let (status, text) = post(addr, "/v1/tags?top_k=2", CAT);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"class_id\":999"), "{text}");
    shutdown.trigger();
}

#[test]
fn accepted_connections_have_tcp_nodelay() {
    let (addr, shutdown) = start_with(fake_models(false), test_config());
    let mut client = TcpStream::connect(addr).unwrap();
    client
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 512];
    let n = client.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // The server's end of this connection, found through /proc: TCP_NODELAY is per socket,
    // so ask the kernel about the server side by its descriptor.
    let local = client.local_addr().unwrap();
    let found = server_socket_nodelay(local);
    assert_eq!(found, Some(true));
    shutdown.trigger();
}

/// TCP_NODELAY of this process's socket whose peer is `peer` (the server side of a test
/// connection), found by scanning our own descriptors.
fn server_socket_nodelay(peer: SocketAddr) -> Option<bool> {
    use std::os::fd::BorrowedFd;
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // SAFETY: the descriptor is only borrowed for two getsockopt calls while the test's
        // server (this process) keeps it open.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&borrowed);
        if socket.peer_addr().ok().and_then(|a| a.as_socket()) == Some(peer) {
            return socket.tcp_nodelay().ok();
        }
    }
    None
}
