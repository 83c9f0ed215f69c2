//! Every flag of every subcommand (argh), with its `TAGGER_*` variable and default in its help
//! text; [`super::config`] turns each into its front-end's plain `Config`.

use argh::FromArgs;

use crate::image::DecodeMode;
use crate::models::ModelName;

#[derive(FromArgs, Debug)]
/// Automatic ImageNet tags for photos and hand-drawn digit reading, all models embedded.
///
/// Exit codes: 0 success; 1 runtime failure (score: some files failed; healthcheck: not
/// ready); 2 usage error. Logging: TAGGER_LOG or RUST_LOG (error, warn, info, debug).
pub struct Args {
    #[argh(subcommand)]
    /// what to do
    pub command: Command,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
/// The subcommands.
pub enum Command {
    /// Run the HTTP service.
    Serve(ServeArgs),
    /// Score folders of photos.
    Score(ScoreArgs),
    /// Probe a running server's /readyz.
    Healthcheck(HealthcheckArgs),
    /// Describe the embedded models.
    Models(ModelsArgs),
    /// Time each pipeline stage.
    Bench(BenchArgs),
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "serve")]
/// Run the HTTP service (routes: README or GET /openapi.json).
pub struct ServeArgs {
    /// address to listen on [env TAGGER_ADDR, default 127.0.0.1:8080]
    #[argh(option)]
    pub addr: Option<String>,
    /// requests decoded and inferred at once [env TAGGER_WORKERS, default: number of cores]
    #[argh(option)]
    pub workers: Option<usize>,
    /// cores one inference may use [env TAGGER_INFERENCE_THREADS, default 1]
    #[argh(option)]
    pub inference_threads: Option<usize>,
    /// requests waiting for a worker before 503 [env TAGGER_QUEUE_DEPTH, default 64]
    #[argh(option)]
    pub queue_depth: Option<usize>,
    /// milliseconds a request beyond workers + queue depth waits for a free slot before 503;
    /// 0: 503 at once [env TAGGER_QUEUE_WAIT_MS, default 500]
    #[argh(option)]
    pub queue_wait_ms: Option<u64>,
    /// largest request body in bytes [env TAGGER_MAX_BODY_BYTES, default 20971520]
    #[argh(option)]
    pub max_body_bytes: Option<u64>,
    /// largest image in pixels, checked before decoding [env TAGGER_MAX_PIXELS, default 50000000]
    #[argh(option)]
    pub max_pixels: Option<u64>,
    /// seconds a whole request body may take to arrive (a slower upload gets 408); 0: none
    /// [env TAGGER_READ_TIMEOUT_SECS, default 30]
    #[argh(option)]
    pub read_timeout_secs: Option<u64>,
    /// seconds a response write may make no progress before the connection is closed; 0: none
    /// [env TAGGER_WRITE_TIMEOUT_SECS, default 30]
    #[argh(option)]
    pub write_timeout_secs: Option<u64>,
    /// seconds a request head (method, path, headers) may take to arrive, from the connection's
    /// start or the head's first byte; 0: none [env TAGGER_HEADER_TIMEOUT_SECS, default 10]
    #[argh(option)]
    pub header_timeout_secs: Option<u64>,
    /// seconds an idle keep-alive connection is kept between requests; 0: none
    /// [env TAGGER_KEEP_ALIVE_SECS, default 15]
    #[argh(option)]
    pub keep_alive_secs: Option<u64>,
    /// connections held open at once; at the cap the idlest is closed to make room [env
    /// TAGGER_MAX_CONNECTIONS, default: the open-files limit less a headroom, said at start-up]
    #[argh(option)]
    pub max_connections: Option<usize>,
    /// seconds admitted requests get to finish after SIGTERM/SIGINT (a second signal exits
    /// at once) [env TAGGER_DRAIN_SECS, default 25]
    #[argh(option)]
    pub drain_secs: Option<u64>,
    /// report ready as soon as the models are loaded, without first running the models that
    /// serve requests naming none (the default tags model, digits) once on every worker (the
    /// first requests then pay the cold first runs) [env TAGGER_NO_WARM_UP=1, default: warm up]
    #[argh(switch)]
    pub no_warm_up: bool,
    /// model for /v1/tags without ?model= [env TAGGER_TAGS_MODEL, default: best real model]
    #[argh(option)]
    pub tags_model: Option<ModelName>,
    /// default JPEG decoding, exact or fast [env TAGGER_DECODE, default exact]
    #[argh(option)]
    pub decode: Option<DecodeMode>,
    /// most images in one request (multipart files, /v2 batch); 413 beyond [env
    /// TAGGER_MAX_BATCH, default 32]
    #[argh(option)]
    pub max_batch: Option<usize>,
    /// replace an embedded model with an ONNX file and the model.json next to it, NAME=PATH;
    /// repeatable [env TAGGER_MODEL_FILES, comma-separated; default: every model embedded]
    #[argh(option)]
    pub model_file: Vec<String>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "score")]
/// Score photos and folders; one record per file streams to stdout (or --output) in input
/// order. Folders are walked recursively in byte order of names; images are recognised by
/// content (files named *.jpg etc. that are not images are reported, other non-images skipped);
/// symlink loops and unreadable files are reported, never fatal. A summary goes to stderr, and
/// a progress bar when stderr is a terminal.
///
/// Exit codes: 0 every file scored; 1 some files failed (each has an error record); 2 usage
/// error. A closed stdout (| head) exits 0.
pub struct ScoreArgs {
    /// files or folders to score
    #[argh(positional)]
    pub paths: Vec<String>,
    /// resnet18, efficientnet_lite0 or digits [env TAGGER_MODEL, default: the tagging model]
    #[argh(option)]
    pub model: Option<ModelName>,
    /// tags per image, 1..=5 [env TAGGER_TOP_K, default 5]
    #[argh(option)]
    pub top_k: Option<usize>,
    /// leave out tags below this, 0..=1 [env TAGGER_MIN_CONFIDENCE, default 0]
    #[argh(option)]
    pub min_confidence: Option<f64>,
    /// jsonl, csv or table [env TAGGER_FORMAT, default jsonl]
    #[argh(option)]
    pub format: Option<crate::score::OutputFormat>,
    /// images processed at once, one core each [env TAGGER_JOBS, default: number of cores]
    #[argh(option)]
    pub jobs: Option<usize>,
    /// write results to this file (complete files only: written aside, then renamed)
    /// [env TAGGER_OUTPUT, default: stdout]
    #[argh(option)]
    pub output: Option<String>,
    /// score only shard I of N, 0-based, e.g. 0/4; split by a hash of each path relative to
    /// its argument, the same on every machine [env TAGGER_SHARD, default 0/1]
    #[argh(option)]
    pub shard: Option<crate::score::Shard>,
    /// do not descend into sub-folders [env TAGGER_NO_RECURSIVE=1]
    #[argh(switch)]
    pub no_recursive: bool,
    /// JPEG decoding, exact or fast [env TAGGER_DECODE, default exact]
    #[argh(option)]
    pub decode: Option<DecodeMode>,
    /// largest image in pixels [env TAGGER_MAX_PIXELS, default 50000000]
    #[argh(option)]
    pub max_pixels: Option<u64>,
    /// tagging model used when --model is not given [env TAGGER_TAGS_MODEL]
    #[argh(option)]
    pub tags_model: Option<ModelName>,
    /// digits model only: auto, ink or plain [env TAGGER_DIGITS_PREPROCESS, default auto]
    #[argh(option)]
    pub digits_preprocess: Option<crate::digits::DigitMode>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "healthcheck")]
/// Exit 0 if the server at --addr answers 200 on /readyz, 1 otherwise (for HEALTHCHECK).
pub struct HealthcheckArgs {
    /// server address; 0.0.0.0 and [::] probe the loopback [env TAGGER_ADDR, default
    /// 127.0.0.1:8080]
    #[argh(option)]
    pub addr: Option<String>,
    /// path to probe [env TAGGER_HEALTHCHECK_PATH, default /readyz]
    #[argh(option)]
    pub path: Option<String>,
    /// seconds before giving up [env TAGGER_HEALTHCHECK_TIMEOUT_SECS, default 3]
    #[argh(option)]
    pub timeout_secs: Option<u64>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "models")]
/// Print the embedded models: weights (official or stand-in), provenance, default tagging model.
pub struct ModelsArgs {
    /// print the manifests as JSON
    #[argh(switch)]
    pub json: bool,
    /// tagging model [env TAGGER_TAGS_MODEL]
    #[argh(option)]
    pub tags_model: Option<ModelName>,
    /// a model file that replaces an embedded model, NAME=PATH; repeatable [env
    /// TAGGER_MODEL_FILES, comma-separated; default: every model embedded]
    #[argh(option)]
    pub model_file: Vec<String>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "bench")]
/// Time decode, preprocess and inference per model (medians), and model load at start-up.
pub struct BenchArgs {
    /// runs per measurement [default 30]
    #[argh(option, default = "30")]
    pub runs: usize,
    /// a JPEG to time besides the built-in 451x300 and 12 MP ones
    #[argh(option)]
    pub image: Option<String>,
    /// print JSON instead of a table
    #[argh(switch)]
    pub json: bool,
}
