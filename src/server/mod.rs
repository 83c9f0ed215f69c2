//! `tagger serve`: the HTTP service.
//!
//! From the socket inwards:
//! - [`transport`]: one small tokio runtime doing only I/O (accept, read, write, timers); the
//!   listener, the connection cap, the drain.
//! - [`connection`]: one connection's life: waits for each request without hyper (an idle
//!   connection holds no hyper buffers), serves it with a fresh hyper HTTP/1.1 connection, takes
//!   the socket back; the header, keep-alive and write timeouts.
//! - [`dispatch`]: routes each request, answers cheap routes and errors inline, admits
//!   inference work against a bounded counter (`workers + queue_depth`; beyond it: 503 at
//!   once), reads the body, and waits for the worker.
//! - The `worker` pool (`--workers` threads) decodes, preprocesses and runs inference, one
//!   single-threaded tract plan per request: throughput comes from requests side by side.
//! - [`routes`]: the route table and the handlers (state + query + body bytes -> [`reply`]);
//!   nothing there knows the HTTP library. Beside `/v1`: [`v2`] (Open Inference Protocol),
//!   [`multipart`] and [`batch`] (several images per request), [`page`] (`GET /`).
//!
//! Models load in the background after the socket is bound ([`loader`]): `/healthz` answers at
//! once, `/readyz` turns 200 (and systemd gets `READY=1`) when they are loaded and every worker
//! has run each once (so the first requests are as fast as the rest). On
//! SIGTERM/SIGINT `/readyz` turns 503, the listener closes, admitted requests finish (up to
//! `--drain-secs`), and the process exits 0.

mod batch;
mod body;
mod config;
mod connection;
mod dispatch;
mod error;
mod loader;
mod metrics;
mod multipart;
mod notify;
mod openapi;
mod page;
mod reply;
mod routes;
mod shutdown;
mod state;
mod transport;
mod v2;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Instant;

pub(crate) use config::default_max_connections;
pub use config::Config;

/// Why the server could not start or keep serving (the command line exits 1).
#[derive(Debug)]
pub struct Failure(pub String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Runs the server until SIGTERM/SIGINT and the drain; returns the exit code.
pub fn run(config: Config) -> Result<(), Failure> {
    let exec = Instant::now();
    let shutdown = shutdown::Shutdown::install()
        .map_err(|e| Failure(format!("installing signal handlers: {e}")))?;
    let listener = transport::bind(config.addr)
        .map_err(|e| Failure(format!("cannot listen on {}: {e}", config.addr)))?;
    let state = Arc::new(state::State::new(config, shutdown.flag()));
    // Created here, before the I/O thread lowers its priority (threads inherit it); the loader
    // warms every worker up before the server reports ready.
    let pools = Arc::new(dispatch::Pools::new(state.config.workers)?);
    loader::spawn_loader(state.clone(), pools.clone(), exec);
    transport::serve(state, pools, listener, &shutdown)
}
