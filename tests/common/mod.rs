//! Support shared by the integration tests (each test file says `mod common;`):
//! - [`process`]: the binary under test as a child process, with a clean environment.
//! - [`server`]: `tagger serve` on an ephemeral port and a raw HTTP/1.1 client.
//! - [`fixtures`]: files under `tests/fixtures/`, scratch folders, the seeded [`rng::Rng`].
//! - [`assert`]: assertions with messages that say what differed.

// Each test file uses its own subset of these helpers.
#![allow(dead_code, unused_imports)]

pub mod assert;
pub mod fixtures;
pub mod process;
pub mod rng;
pub mod server;

pub use fixtures::{fixture, image};
pub use server::{multipart, raise_own_fd_limit, request, try_request, Conn, Response, Server};
