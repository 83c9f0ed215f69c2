//! The server's settings as a plain [`Config`] that [`super::run`] takes (the command line
//! resolves it from flags, `TAGGER_*` variables and defaults), and the default connection cap.

use std::net::SocketAddr;
use std::time::Duration;

use crate::image::DecodeMode;
use crate::model_files::ModelFile;
use crate::models::ModelName;

/// The server's settings.
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
    /// How long a request beyond `workers + queue_depth` waits for a slot before 503.
    pub queue_wait: Duration,
    /// Largest request body.
    pub max_body_bytes: u64,
    /// Largest image, checked from its header.
    pub max_pixels: u64,
    /// Time for a whole request body to arrive (`None`: no limit).
    pub read_timeout: Option<Duration>,
    /// Time a response write may make no progress (`None`: no limit).
    pub write_timeout: Option<Duration>,
    /// Time for a request head to arrive once a connection is open or its first byte is sent
    /// (`None`: no limit).
    pub header_timeout: Option<Duration>,
    /// Time a connection may sit idle between requests (`None`: no limit).
    pub keep_alive: Option<Duration>,
    /// Connections held open at once; beyond it the idlest is closed to make room.
    pub max_connections: usize,
    /// How long admitted requests get after SIGTERM.
    pub drain: Duration,
    /// Run each model once on every worker before reporting ready.
    pub warm_up: bool,
    /// The model for `/v1/tags` without `?model=`; `None`: the library's choice.
    pub tags_model: Option<ModelName>,
    /// Default JPEG decoding.
    pub decode: DecodeMode,
    /// Most images in one request (multipart files, v2 batch); 413 beyond.
    pub max_batch: usize,
    /// Model files that replace embedded models, read and verified at start-up.
    pub model_files: Vec<ModelFile>,
}

/// File descriptors kept for the process itself (listener, epoll, logs, the notify socket,
/// `/proc` reads) when the connection cap is derived from `RLIMIT_NOFILE`.
const FD_HEADROOM: usize = 64;

/// The default connection cap: the soft `RLIMIT_NOFILE` less a headroom of 64 descriptors or a
/// tenth, whichever is more, so accepting can never run the process out of descriptors.
pub(crate) fn default_max_connections() -> usize {
    let soft = open_files_limit().unwrap_or(1024).min(1 << 20);
    soft.saturating_sub(FD_HEADROOM.max(soft / 10)).max(1)
}

/// The soft `RLIMIT_NOFILE`.
pub(crate) fn open_files_limit() -> Option<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; no other memory is touched.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    ok.then(|| usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_leaves_headroom_under_the_fd_limit() {
        let limit = open_files_limit().unwrap().min(1 << 20);
        let cap = default_max_connections();
        assert!(cap >= 1);
        if limit > 2 * FD_HEADROOM {
            assert!(cap + FD_HEADROOM <= limit, "{cap} vs {limit}");
        }
    }
}
