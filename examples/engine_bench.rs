//! Engine benchmark: tract with our ops vs plain tract vs onnxruntime, per model, in one run.
//!
//! ```text
//! cargo run --release --example engine_bench -- [--runs N] [--models lite0,resnet18]
//!     [--python /tmp/venv/bin/python] [--no-ort] [--no-latency] [--no-profile] [--isa]
//!     [--threads] [--resize] [--cpu-time]
//! ```
//!
//! - Latency: batch 1, one thread, median of `--runs` runs after 10 warm-ups each: the two
//!   tract engines loaded through `TractEngine::load_with` (`rewrite: false` for plain
//!   tract) and onnxruntime (1 intra-op thread, all graph optimisations, in a Python child that
//!   runs on request and times itself) on the same input, taking turns of 4 runs (the first of
//!   each turn, cold from the others' cache traffic, not counted).
//! - `--cpu-time`: the latency table in thread CPU time instead of wall time (onnxruntime's
//!   one intra-op thread runs on its caller, timed with `time.thread_time()`): preemption by
//!   other processes on a shared machine then stays out of the figures.
//! - Profile (`--no-profile` skips): per-op time from tract's plan, timed around every node's
//!   eval, before and after the rewrite, by op and for the depthwise nodes one by one.
//! - `--isa`: the depthwise kernel alone on EfficientNet-Lite0's layers, per instruction set.
//! - `--threads`: single-threaded plans vs intra-op threads at 1, 2 and 8 concurrent callers.
//! - `--resize`: the exact preprocessing (Pillow resize, crop, normalise) of a 12 MP and a 1 MP
//!   photo on the best resample instruction set, then on the AVX2 and portable code a lesser CPU
//!   runs; wall and thread CPU time (CPU time moves less when other processes share the cores).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tagger::engine::ops::{depthwise, Geometry, Isa};
use tagger::engine::rewrite::{rewrite_optimized, rewrite_typed};
use tagger::engine::tract::thread_cpu_time as thread_cpu;
use tagger::engine::{Engine, EngineOptions, TractEngine};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::{SimplePlan, SimpleState};

const SHAPE: [usize; 4] = [1, 3, 224, 224];

/// The origin of [`profile`]'s wall-clock readings.
static START: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

struct Args {
    runs: usize,
    models: Vec<String>,
    python: String,
    ort: bool,
    profile: bool,
    isa: bool,
    threads: bool,
    latency: bool,
    resize: bool,
    cpu_time: bool,
}

fn args() -> Args {
    let mut a = Args {
        runs: 50,
        models: vec!["efficientnet_lite0".into(), "resnet18".into()],
        python: "/tmp/venv/bin/python".into(),
        ort: true,
        profile: true,
        isa: false,
        threads: false,
        latency: true,
        resize: false,
        cpu_time: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--runs" => a.runs = it.next().unwrap().parse().unwrap(),
            "--models" => {
                a.models = it
                    .next()
                    .unwrap()
                    .split(',')
                    .map(|m| match m {
                        "lite0" => "efficientnet_lite0".to_string(),
                        other => other.to_string(),
                    })
                    .collect()
            }
            "--python" => a.python = it.next().unwrap(),
            "--no-ort" => a.ort = false,
            "--no-profile" => a.profile = false,
            "--isa" => a.isa = true,
            "--threads" => a.threads = true,
            "--resize" => a.resize = true,
            "--cpu-time" => a.cpu_time = true,
            "--no-latency" => a.latency = false,
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn model_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("models/{name}/model.onnx"))
}

/// A fixed pseudo-random input in [-2, 2).
fn input() -> Vec<f32> {
    let mut s = 0x2545f4914f6cdd1du64;
    (0..SHAPE.iter().product::<usize>())
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn load(onnx: &[u8], rewrite: bool, threads: usize) -> TractEngine {
    TractEngine::load_with(
        onnx,
        &SHAPE,
        &EngineOptions {
            threads,
            rewrite,
            ..EngineOptions::default()
        },
    )
    .unwrap()
}

/// onnxruntime in a Python child, driven one run at a time so that its runs interleave with
/// tract's (the machine is shared: load drifts, and interleaving spreads it over all three).
struct Ort {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    dir: PathBuf,
    version: String,
}

impl Ort {
    fn start(python: &str, model: &std::path::Path, x: &[f32], cpu_time: bool) -> Option<Ort> {
        use std::io::BufRead;
        let dir = std::env::temp_dir().join(format!("engine_bench_{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(dir.join("input.f32"), bytes).ok()?;
        let script = r#"
import sys, time
import numpy as np, onnxruntime as ort
model, inp, out = sys.argv[1], sys.argv[2], sys.argv[3]
clock = time.thread_time if sys.argv[4] == "cpu" else time.perf_counter
so = ort.SessionOptions()
so.intra_op_num_threads = 1
so.inter_op_num_threads = 1
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
x = np.fromfile(inp, dtype=np.float32).reshape(1, 3, 224, 224)
name = s.get_inputs()[0].name
print(ort.__version__, flush=True)
for line in sys.stdin:
    if line.strip() == "q":
        break
    t = clock()
    y = s.run(None, {name: x})[0]
    print((clock() - t) * 1e3, flush=True)
y.astype(np.float32).tofile(out)
"#;
        let mut child = std::process::Command::new(python)
            .arg("-c")
            .arg(script)
            .arg(model)
            .arg(dir.join("input.f32"))
            .arg(dir.join("logits.f32"))
            .arg(if cpu_time { "cpu" } else { "wall" })
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .ok()?;
        let stdin = child.stdin.take()?;
        let mut stdout = std::io::BufReader::new(child.stdout.take()?);
        let mut version = String::new();
        stdout.read_line(&mut version).ok()?;
        if version.trim().is_empty() {
            return None;
        }
        Some(Ort {
            child,
            stdin,
            stdout,
            dir,
            version: version.trim().to_string(),
        })
    }

    /// One inference, timed inside Python (ms).
    fn run(&mut self) -> f64 {
        use std::io::{BufRead, Write};
        writeln!(self.stdin, "r").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().parse().unwrap()
    }

    /// Stops the child; the logits of its last run.
    fn finish(mut self) -> Vec<f32> {
        use std::io::Write;
        let _ = writeln!(self.stdin, "q");
        let _ = self.stdin.flush();
        let _ = self.child.wait();
        let logits = std::fs::read(self.dir.join("logits.f32"))
            .unwrap_or_default()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let _ = std::fs::remove_dir_all(&self.dir);
        logits
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Per-node eval time (ms per run) of an optimised model, over `runs` runs after 5 warm-ups: wall
/// time, or with `cpu_time` the thread's CPU time (steadier on a shared machine).
fn profile(
    model: &TypedModel,
    x: &[f32],
    runs: usize,
    cpu_time: bool,
) -> Vec<(String, String, f64)> {
    let now = || {
        if cpu_time {
            thread_cpu()
        } else {
            START.elapsed()
        }
    };
    let plan = SimplePlan::new(model.clone()).unwrap();
    let mut state = SimpleState::new(&plan).unwrap();
    let tensor = Tensor::from_shape(&SHAPE, x).unwrap();
    let mut times = vec![Duration::ZERO; model.nodes.len()];
    for run in 0..runs + 5 {
        state
            .run_plan_with_eval(
                tvec!(tensor.clone().into_tvalue()),
                |ctx, op_state, node, inputs| {
                    let t = now();
                    let r = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                    if run >= 5 {
                        times[node.id] += now() - t;
                    }
                    r
                },
            )
            .unwrap();
    }
    model
        .nodes
        .iter()
        .map(|n| {
            (
                n.name.clone(),
                n.op().name().to_string(),
                ms(times[n.id]) / runs as f64,
            )
        })
        .collect()
}

fn print_profiles(before: &[(String, String, f64)], after: &[(String, String, f64)]) {
    let by_op = |p: &[(String, String, f64)]| {
        let mut m: BTreeMap<String, (usize, f64)> = BTreeMap::new();
        for (_, op, t) in p {
            let e = m.entry(op.clone()).or_default();
            e.0 += 1;
            e.1 += t;
        }
        m
    };
    let (b, a) = (by_op(before), by_op(after));
    let total = |m: &BTreeMap<String, (usize, f64)>| m.values().map(|v| v.1).sum::<f64>();
    let (tb, ta) = (total(&b), total(&a));
    let mut ops: Vec<&String> = b.keys().chain(a.keys()).collect();
    ops.sort();
    ops.dedup();
    ops.sort_by(|x, y| {
        let t = |k: &String| {
            b.get(k).map(|v| v.1).unwrap_or(0.0) + a.get(k).map(|v| v.1).unwrap_or(0.0)
        };
        t(y).partial_cmp(&t(x)).unwrap()
    });
    println!("| op | plain tract: nodes | ms | % | with our ops: nodes | ms | % |");
    println!("|---|---|---|---|---|---|---|");
    for op in ops {
        let cell = |m: &BTreeMap<String, (usize, f64)>, tot: f64| match m.get(op) {
            Some((n, t)) => format!("{n} | {t:.3} | {:.1}", 100.0 * t / tot),
            None => "- | - | -".to_string(),
        };
        if b.get(op).map(|v| v.1).unwrap_or(0.0) + a.get(op).map(|v| v.1).unwrap_or(0.0) < 0.0005 {
            continue;
        }
        println!("| {op} | {} | {} |", cell(&b, tb), cell(&a, ta));
    }
    println!("| **total (sum of nodes)** | | {tb:.3} | | | {ta:.3} | |");
    let dw_before: Vec<_> = before
        .iter()
        .filter(|(_, op, _)| op == "DepthWiseConv")
        .collect();
    if !dw_before.is_empty() {
        println!();
        println!("| depthwise node | tract DepthWiseConv ms | FastDepthwise ms (+ReLU6) |");
        println!("|---|---|---|");
        for (name, _, t) in dw_before {
            let ours = after
                .iter()
                .find(|(n, op, _)| n == name && op == "FastDepthwise")
                .map(|(_, _, t)| format!("{t:.3}"))
                .unwrap_or_else(|| {
                    // Not a node of its own: still tract's, or fused with the 1x1 before it.
                    let left_to_tract = after
                        .iter()
                        .any(|(n, op, _)| n == name && op == "DepthWiseConv");
                    if left_to_tract {
                        "(tract)"
                    } else {
                        "(fused with its expansion)"
                    }
                    .into()
                });
            println!("| {name} | {t:.3} | {ours} |");
        }
    }
}

fn latency_table(a: &Args, x: &[f32]) {
    println!(
        "## Latency ({}): batch 1, 1 thread, median of {} runs after 10 warm-ups; the three engines take turns of 4 runs (the first of each turn not counted)",
        if a.cpu_time { "thread CPU time" } else { "wall time" },
        a.runs.div_ceil(3) * 3
    );
    println!();
    let mut rows = vec![];
    let mut notes = vec![];
    for name in &a.models {
        let path = model_path(name);
        let onnx = std::fs::read(&path).unwrap();
        let ours = load(&onnx, true, 1);
        let plain = load(&onnx, false, 1);
        let mut ort = if a.ort {
            Ort::start(&a.python, &path, x, a.cpu_time)
        } else {
            None
        };
        let run = |e: &TractEngine| {
            // The input vector is made before the clock starts, as onnxruntime's numpy input
            // is: the engine's own copy into a tensor is timed, the harness's is not.
            let input = x.to_vec();
            let (t, c) = (Instant::now(), thread_cpu());
            let out = e.run(&SHAPE, input).unwrap();
            let spent = if a.cpu_time {
                thread_cpu() - c
            } else {
                t.elapsed()
            };
            (ms(spent), out)
        };
        for _ in 0..10 {
            run(&ours);
            run(&plain);
            if let Some(o) = ort.as_mut() {
                o.run();
            }
        }
        let (mut t_ours, mut t_plain, mut t_ort) = (vec![], vec![], vec![]);
        let (mut y_ours, mut y_plain) = (vec![], vec![]);
        // Turns of BURST runs each, the first of every turn not recorded (it pays for the
        // caches the other engines just took).
        const BURST: usize = 4;
        let rounds = a.runs.div_ceil(BURST - 1);
        for i in 0..rounds {
            // Rotate who goes first, so drift falls on all three.
            for turn in 0..3 {
                for b in 0..BURST {
                    match (i + turn) % 3 {
                        0 => {
                            let (t, y) = run(&ours);
                            if b > 0 {
                                t_ours.push(t);
                            }
                            y_ours = y;
                        }
                        1 => {
                            let (t, y) = run(&plain);
                            if b > 0 {
                                t_plain.push(t);
                            }
                            y_plain = y;
                        }
                        _ => {
                            if let Some(o) = ort.as_mut() {
                                let t = o.run();
                                if b > 0 {
                                    t_ort.push(t);
                                }
                            }
                        }
                    }
                }
            }
        }
        let min = |v: &[f64]| v.iter().cloned().fold(f64::INFINITY, f64::min);
        let ort_cell = ort.map(|o| {
            let version = o.version.clone();
            let logits = o.finish();
            (version, logits, median(t_ort.clone()), min(&t_ort))
        });
        notes.push(format!(
            "{name}: max |ours - plain tract| = {:.2e}{}",
            max_abs_diff(&y_ours, &y_plain),
            ort_cell
                .as_ref()
                .map(|(v, logits, _, _)| format!(
                    ", max |ours - onnxruntime {v}| = {:.2e}",
                    max_abs_diff(&y_ours, logits)
                ))
                .unwrap_or_default()
        ));
        rows.push((
            name.clone(),
            median(t_ours.clone()),
            min(&t_ours),
            median(t_plain.clone()),
            min(&t_plain),
            ort_cell.map(|(_, _, m, n)| (m, n)),
        ));
    }
    println!("| model | tract + our ops ms (min) | plain tract ms (min) | onnxruntime ms (min) | ours / plain | ours / ort | plain / ort |");
    println!("|---|---|---|---|---|---|---|");
    for (name, m_ours, n_ours, m_plain, n_plain, ort) in rows {
        let (ort_cell, r_ours, r_plain) = match ort {
            Some((m, n)) => (
                format!("{m:.2} ({n:.2})"),
                format!("{:.2}x", m_ours / m),
                format!("{:.2}x", m_plain / m),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "| {name} | {m_ours:.2} ({n_ours:.2}) | {m_plain:.2} ({n_plain:.2}) | {ort_cell} | {:.2}x | {r_ours} | {r_plain} |",
            m_ours / m_plain
        );
    }
    println!();
    for n in notes {
        println!("- {n}");
    }
    println!();
}

fn profiles(a: &Args, x: &[f32]) {
    for name in &a.models {
        let onnx = std::fs::read(model_path(name)).unwrap();
        let typed = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(&onnx))
            .unwrap()
            .with_input_fact(0, f32::fact(SHAPE).into())
            .unwrap()
            .into_typed()
            .unwrap();
        let plain = typed.clone().into_optimized().unwrap();
        // What `TractEngine::load` does.
        let mut ours = typed;
        let typed_report = rewrite_typed(&mut ours).unwrap();
        let mut ours = ours.into_optimized().unwrap();
        let report = rewrite_optimized(&mut ours).unwrap();
        let runs = 20;
        let before = profile(&plain, x, runs, a.cpu_time);
        let after = profile(&ours, x, runs, a.cpu_time);
        println!(
            "## Per-op profile, {name} ({} ms per run, mean of {runs} runs, 1 thread; rewrite: {} dense conv ({} of them Winograd), {} depthwise ({} Pad folded), {} max-pool replaced, {} ReLU/ReLU6 fused, {} residual adds fused into Winograd, {} conv+depthwise pairs fused ({} channels in lanes, {} with their projection, {} with its residual add), {} fused with a pool's sum, {} convolutions left to tract)",
            if a.cpu_time { "thread CPU" } else { "wall" },
            typed_report.dense + typed_report.winograd,
            typed_report.winograd,
            typed_report.depthwise,
            typed_report.folded_pads,
            report.maxpools,
            report.fused_clips,
            report.winograd_residuals,
            report.fused_pairs + report.fused_lanes_pairs,
            report.fused_lanes_pairs,
            report.fused_projections,
            report.fused_residuals,
            report.pooled,
            typed_report.skipped.len(),
        );
        println!();
        print_profiles(&before, &after);
        println!();
        if std::env::var("ENGINE_BENCH_MATMUL").is_ok() {
            matmul_table(&ours, &after);
        }
    }
}

/// Every matrix product of the model: shape, kernel, time and FMA rate.
fn matmul_table(model: &TypedModel, times: &[(String, String, f64)]) {
    println!("| node | product | ms | GFMA/s |");
    println!("|---|---|---|---|");
    let mut total = (0.0, 0.0);
    for node in &model.nodes {
        let info = node.op().info().unwrap_or_default().join(" ");
        let (mult, fma) = if node.op().name() == "OptMatMul" {
            let Some(mult) = info.split("Mult: ").nth(1) else {
                continue;
            };
            let dims: Vec<usize> = mult
                .split_whitespace()
                .take(3)
                .filter_map(|d| d.split(':').nth(1).and_then(|v| v.parse().ok()))
                .collect();
            (
                mult.split(" with").next().unwrap_or("").to_string(),
                dims.iter().product::<usize>() as f64,
            )
        } else if [
            "FastConv",
            "FastWinograd",
            "FastDepthwise",
            "FusedConvDepthwise",
            "FusedLanesConvDepthwise",
        ]
        .contains(&&*node.op().name())
        {
            let facts = model.node_input_facts(node.id).unwrap();
            let cost = node.op.cost(&facts).unwrap();
            let fma = cost
                .iter()
                .map(|(_, d)| d.to_i64().unwrap_or(0) as usize)
                .sum::<usize>() as f64;
            (info.clone(), fma)
        } else {
            continue;
        };
        let t = times
            .iter()
            .find(|(n, _, _)| *n == node.name)
            .map(|x| x.2)
            .unwrap_or(0.0);
        // The packing node feeding it, if any.
        let pack: f64 = node
            .inputs
            .iter()
            .filter(|i| model.node(i.node).op().name() == "OptMatMulPack")
            .map(|i| {
                times
                    .iter()
                    .find(|(n, _, _)| *n == model.node(i.node).name)
                    .map(|x| x.2)
                    .unwrap_or(0.0)
            })
            .sum();
        total.0 += t + pack;
        total.1 += fma;
        println!(
            "| {} | {} | {t:.3} + pack {pack:.3} | {:.1} |",
            node.name,
            mult,
            fma / (t + pack) / 1e6
        );
    }
    println!(
        "| total | | {:.3} | {:.1} |",
        total.0,
        total.1 / total.0 / 1e6
    );
    println!();
}

/// The depthwise kernel alone on EfficientNet-Lite0's 16 layers, per instruction set.
fn isa_bench() {
    let layers = [
        (32, 112, 3, 1, 1, 1),
        (96, 112, 3, 2, 0, 1),
        (144, 56, 3, 1, 1, 1),
        (144, 56, 5, 2, 1, 2),
        (240, 28, 5, 1, 2, 2),
        (240, 28, 3, 2, 0, 1),
        (480, 14, 3, 1, 1, 1),
        (480, 14, 3, 1, 1, 1),
        (480, 14, 5, 1, 2, 2),
        (672, 14, 5, 1, 2, 2),
        (672, 14, 5, 1, 2, 2),
        (672, 14, 5, 2, 1, 2),
        (1152, 7, 5, 1, 2, 2),
        (1152, 7, 5, 1, 2, 2),
        (1152, 7, 5, 1, 2, 2),
        (1152, 7, 3, 1, 1, 1),
    ];
    println!("## Depthwise kernel alone, EfficientNet-Lite0's 16 layers (ms, fastest of 30: the machine is shared)");
    println!();
    println!("| isa | total ms | per layer ms |");
    println!("|---|---|---|");
    for isa in Isa::available() {
        let mut total = 0.0;
        let mut per_layer = vec![];
        for &(c, size, k, s, before, after) in &layers {
            let g = Geometry::square(1, c, size, size, k, s, before).with_pad_after(after);
            let x: Vec<f32> = (0..c * size * size).map(|i| (i % 7) as f32 * 0.1).collect();
            let kernel: Vec<f32> = (0..c * k * k).map(|i| (i % 5) as f32 * 0.1).collect();
            let bias = vec![0.5; c];
            let mut out = vec![0.0; c * g.oh() * g.ow()];
            let mut ts = vec![];
            for i in 0..35 {
                let t = Instant::now();
                depthwise(&g, &x, &kernel, &bias, None, isa, &mut out);
                if i >= 5 {
                    ts.push(ms(t.elapsed()));
                }
            }
            let t = ts.iter().cloned().fold(f64::INFINITY, f64::min);
            per_layer.push(format!("{t:.3}"));
            total += t;
        }
        println!("| {isa:?} | {total:.3} | {} |", per_layer.join(" "));
    }
    println!();
}

/// `callers` threads each running `engine` in a loop for `dur`: images/s and median latency.
fn throughput(engine: &Arc<TractEngine>, x: &[f32], callers: usize, dur: Duration) -> (f64, f64) {
    let start = Instant::now();
    let handles: Vec<_> = (0..callers)
        .map(|_| {
            let engine = engine.clone();
            let x = x.to_vec();
            std::thread::spawn(move || {
                let mut lat = vec![];
                while start.elapsed() < dur {
                    let t = Instant::now();
                    engine.run(&SHAPE, x.clone()).unwrap();
                    lat.push(ms(t.elapsed()));
                }
                lat
            })
        })
        .collect();
    let lat: Vec<f64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let secs = start.elapsed().as_secs_f64();
    (lat.len() as f64 / secs, median(lat))
}

fn threads_bench(a: &Args, x: &[f32]) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    const REPEATS: usize = 5;
    println!(
        "## Threads: N callers sharing one plan, single-threaded vs intra-op threads ({cores} cores; {REPEATS} cells of 2 s each taken in rotation, best img/s and best p50 ms: other work on the machine only ever lowers a cell)"
    );
    println!();
    println!("| model | intra-op threads | c=1 img/s (p50 ms) | c=2 | c=8 |");
    println!("|---|---|---|---|---|");
    for name in &a.models {
        let onnx = std::fs::read(model_path(name)).unwrap();
        let configs = [1, cores.max(2)];
        let engines: Vec<Arc<TractEngine>> = configs
            .iter()
            .map(|&t| Arc::new(load(&onnx, true, t)))
            .collect();
        for e in &engines {
            for _ in 0..5 {
                e.run(&SHAPE, x.to_vec()).unwrap();
            }
        }
        let concurrency = [1, 2, 8];
        let mut cells = vec![vec![vec![]; concurrency.len()]; configs.len()];
        for rep in 0..REPEATS {
            for i in 0..configs.len() * concurrency.len() {
                let i = (i + rep) % (configs.len() * concurrency.len());
                let (e, c) = (i / concurrency.len(), i % concurrency.len());
                let r = throughput(&engines[e], x, concurrency[c], Duration::from_secs(2));
                cells[e][c].push(r);
            }
        }
        for (e, threads) in configs.iter().enumerate() {
            let row: Vec<String> = cells[e]
                .iter()
                .map(|runs| {
                    let ips = runs.iter().map(|r| r.0).fold(0.0, f64::max);
                    let p50 = runs.iter().map(|r| r.1).fold(f64::INFINITY, f64::min);
                    format!("{ips:.1} ({p50:.1})")
                })
                .collect();
            println!("| {name} | {threads} | {} |", row.join(" | "));
        }
    }
    println!();
}

fn main() {
    let a = args();
    let x = input();
    println!(
        "# engine_bench (tract-onnx 0.23.9, depthwise kernel ISA: {:?})",
        Isa::detect()
    );
    println!();
    if a.latency {
        latency_table(&a, &x);
    }
    if a.profile {
        profiles(&a, &x);
    }
    if a.isa {
        isa_bench();
    }
    if a.threads {
        threads_bench(&a, &x);
    }
    if a.resize {
        resize_bench(a.runs);
    }
}

fn resize_bench(runs: usize) {
    use tagger::image::RgbPixels;
    use tagger::preprocess::{ImagePreprocess, Normalize};
    // Smooth content with noise on top, so no tap multiplies a constant.
    let photo = |w: usize, h: usize| {
        let mut s = 0x2545f4914f6cdd1du64;
        let data = (0..w * h * 3)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let (x, y) = ((i / 3) % w, (i / 3) / w);
                ((x * 255 / w + y * 255 / h) / 2) as u8 ^ ((s >> 60) as u8)
            })
            .collect();
        RgbPixels {
            width: w,
            height: h,
            data,
        }
    };
    let pre = ImagePreprocess {
        resize: 256,
        crop: 224,
        normalize: Normalize::Tflite,
    };
    println!("## Exact preprocessing (Pillow bilinear resize to 256, crop 224, normalise), median of {runs} runs");
    println!();
    println!("| photo | resample ISA | wall ms | thread CPU ms |");
    println!("|---|---|---|---|");
    for (label, w, h) in [
        ("12 MP 4000x3000", 4000, 3000),
        ("1 MP 1155x866", 1155, 866),
    ] {
        let image = photo(w, h);
        // The best instruction set first, then the ones a lesser CPU would run.
        for isa in ["best", "avx2", "portable"] {
            if !tagger::image::resample::force_isa_for_benchmarks(isa) {
                continue;
            }
            let (mut wall, mut cpu) = (vec![], vec![]);
            for i in 0..runs + 3 {
                let (t, c) = (Instant::now(), thread_cpu());
                std::hint::black_box(pre.tensor(&image));
                if i >= 3 {
                    wall.push(ms(t.elapsed()));
                    cpu.push(ms(thread_cpu() - c));
                }
            }
            println!(
                "| {label} | {isa} | {:.2} | {:.2} |",
                median(wall),
                median(cpu)
            );
        }
    }
    tagger::image::resample::force_isa_for_benchmarks("best");
    println!();
}
