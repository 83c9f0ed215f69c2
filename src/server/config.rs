//! The server's settings: flags, then `TAGGER_*` variables, then defaults, resolved once into a
//! plain [`Config`] that [`super::run`] takes.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::cli::{self, CliError, ServeArgs};
use crate::image::DecodeMode;
use crate::model_files::ModelFile;
use crate::models::{embedded_manifest, ModelName, Task};

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
    /// The model for `/v1/tags` without `?model=`; `None`: the library's choice.
    pub tags_model: Option<ModelName>,
    /// Default JPEG decoding.
    pub decode: DecodeMode,
    /// Most images in one request (multipart files, v2 batch); 413 beyond.
    pub max_batch: usize,
    /// Model files that replace embedded models, read and verified at start-up.
    pub model_files: Vec<ModelFile>,
}

fn seconds(secs: u64) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(secs))
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

impl Config {
    /// Resolves flags, then `TAGGER_*` variables, then defaults; a bad value is a usage error.
    pub fn from_args(args: ServeArgs) -> Result<Config, CliError> {
        let addr_text = cli::setting(args.addr, "TAGGER_ADDR", "127.0.0.1:8080".to_string())?;
        let addr = resolve_addr(&addr_text)?;
        let positive = |value: usize, flag: &str| {
            if value == 0 {
                Err(CliError::Usage(format!("--{flag} must be at least 1")))
            } else {
                Ok(value)
            }
        };
        let workers = positive(
            cli::setting(args.workers, "TAGGER_WORKERS", cli::available_cores())?,
            "workers",
        )?;
        let inference_threads = positive(
            cli::setting(args.inference_threads, "TAGGER_INFERENCE_THREADS", 1)?,
            "inference-threads",
        )?;
        let queue_depth = cli::setting(args.queue_depth, "TAGGER_QUEUE_DEPTH", 64)?;
        let max_body_bytes = cli::setting(args.max_body_bytes, "TAGGER_MAX_BODY_BYTES", 20 << 20)?;
        let max_pixels = cli::setting(args.max_pixels, "TAGGER_MAX_PIXELS", 50_000_000)?;
        if max_body_bytes == 0 || max_pixels == 0 {
            return Err(CliError::Usage(
                "--max-body-bytes and --max-pixels must be at least 1".into(),
            ));
        }
        let timeout = |flag: Option<u64>, env: &str, default: u64| {
            cli::setting(flag, env, default).map(seconds)
        };
        let read_timeout = timeout(args.read_timeout_secs, "TAGGER_READ_TIMEOUT_SECS", 30)?;
        let write_timeout = timeout(args.write_timeout_secs, "TAGGER_WRITE_TIMEOUT_SECS", 30)?;
        let header_timeout = timeout(args.header_timeout_secs, "TAGGER_HEADER_TIMEOUT_SECS", 10)?;
        let keep_alive = timeout(args.keep_alive_secs, "TAGGER_KEEP_ALIVE_SECS", 15)?;
        let max_connections = positive(
            cli::setting(
                args.max_connections,
                "TAGGER_MAX_CONNECTIONS",
                default_max_connections(),
            )?,
            "max-connections",
        )?;
        let drain = Duration::from_secs(cli::setting(args.drain_secs, "TAGGER_DRAIN_SECS", 25)?);
        let tags_model = cli::optional_setting(args.tags_model, "TAGGER_TAGS_MODEL")?;
        if let Some(name) = tags_model {
            let manifest = embedded_manifest(name).map_err(|e| CliError::Failure(e.to_string()))?;
            if manifest.task != Task::ImagenetTags {
                return Err(CliError::Usage(format!(
                    "--tags-model {name}: not an ImageNet model (resnet18 or efficientnet_lite0)"
                )));
            }
        }
        let decode = cli::setting(args.decode, "TAGGER_DECODE", DecodeMode::Exact)?;
        let max_batch = positive(
            cli::setting(args.max_batch, "TAGGER_MAX_BATCH", 32)?,
            "max-batch",
        )?;
        let model_files = crate::model_files::from_flags_or_env(&args.model_file)
            .map_err(|e| CliError::Usage(e.to_string()))?;
        Ok(Config {
            addr,
            workers,
            inference_threads,
            queue_depth,
            max_body_bytes,
            max_pixels,
            read_timeout,
            write_timeout,
            header_timeout,
            keep_alive,
            max_connections,
            drain,
            tags_model,
            decode,
            max_batch,
            model_files,
        })
    }
}

fn resolve_addr(text: &str) -> Result<SocketAddr, CliError> {
    let usage = |why: String| CliError::Usage(format!("--addr {text:?}: {why}"));
    text.to_socket_addrs()
        .map_err(|e| usage(format!("{e} (expected HOST:PORT, e.g. 0.0.0.0:8080)")))?
        .next()
        .ok_or_else(|| usage("resolves to no address".into()))
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
