//! EfficientNet-Lite0's convolution layers (and ResNet18's that are not Winograd) one by one,
//! on our kernels alone: the median thread CPU time of many runs per layer (steadier than a
//! whole-model profile on a shared machine).
//!
//! ```text
//! cargo run --release --example layer_bench -- [--runs N] [--filter TEXT] [--cold]
//! ```
//!
//! `--cold`: before every timed run, write 64 MB elsewhere (not timed), so the weights and the
//! input come from memory as they do inside a whole model, not from the cache of the last run.

use tagger::engine::ops::conv::{dense, FastConv};
use tagger::engine::ops::fused::{fused, FusedConvDepthwise};
use tagger::engine::ops::fused_lanes::{fused_lanes, FusedLanesConvDepthwise};
use tagger::engine::ops::{depthwise, Clip, FastDepthwise, Geometry, Isa};
use tagger::engine::tract::thread_cpu_time as thread_cpu;

/// (kind, cin, cout, size, kernel, stride): "pw" dense 1x1, "dw" depthwise (cin = cout), "fx"
/// a 1x1 expansion `cin -> cout` and a depthwise `kernel` / `stride` on it, fused (the engine's
/// `FusedConvDepthwise`, as the rewrite forms it on planes past 16x16); "fl" the same pair
/// channels in lanes (`FusedLanesConvDepthwise`, AVX-512 only; "n/a" where it does not gain);
/// "stem" and "rn" a dense `kernel x kernel` convolution (Lite0's stem with its asymmetric
/// padding at stride 2; ResNet18's with `kernel / 2` zeros on every side).
const LAYERS: &[(&str, usize, usize, usize, usize, usize)] = &[
    ("fx", 16, 96, 112, 3, 2),
    ("fl", 16, 96, 112, 3, 2),
    ("fx", 24, 144, 56, 3, 1),
    ("fl", 24, 144, 56, 3, 1),
    ("fx", 24, 144, 56, 5, 2),
    ("fl", 24, 144, 56, 5, 2),
    ("fx", 40, 240, 28, 5, 1),
    ("fl", 40, 240, 28, 5, 1),
    ("fx", 40, 240, 28, 3, 2),
    ("fl", 40, 240, 28, 3, 2),
    ("fl", 80, 480, 14, 3, 1),
    ("fl", 112, 672, 14, 5, 2),
    ("fl", 192, 1152, 7, 5, 1),
    ("stem", 3, 32, 224, 3, 2),
    ("dw", 32, 32, 112, 3, 1),
    ("pw", 32, 16, 112, 1, 1),
    ("pw", 16, 96, 112, 1, 1),
    ("dw", 96, 96, 112, 3, 2),
    ("pw", 96, 24, 56, 1, 1),
    ("pw", 24, 144, 56, 1, 1),
    ("dw", 144, 144, 56, 3, 1),
    ("pw", 144, 24, 56, 1, 1),
    ("dw", 144, 144, 56, 5, 2),
    ("pw", 144, 40, 28, 1, 1),
    ("pw", 40, 240, 28, 1, 1),
    ("dw", 240, 240, 28, 5, 1),
    ("pw", 240, 40, 28, 1, 1),
    ("dw", 240, 240, 28, 3, 2),
    ("pw", 240, 80, 14, 1, 1),
    ("pw", 80, 480, 14, 1, 1),
    ("dw", 480, 480, 14, 3, 1),
    ("pw", 480, 80, 14, 1, 1),
    ("dw", 480, 480, 14, 5, 1),
    ("pw", 480, 112, 14, 1, 1),
    ("pw", 112, 672, 14, 1, 1),
    ("dw", 672, 672, 14, 5, 1),
    ("pw", 672, 112, 14, 1, 1),
    ("dw", 672, 672, 14, 5, 2),
    ("pw", 672, 192, 7, 1, 1),
    ("pw", 192, 1152, 7, 1, 1),
    ("dw", 1152, 1152, 7, 5, 1),
    ("pw", 1152, 192, 7, 1, 1),
    ("dw", 1152, 1152, 7, 3, 1),
    ("pw", 1152, 320, 7, 1, 1),
    ("pw", 320, 1280, 7, 1, 1),
    // ResNet18's convolutions that are not Winograd (symmetric padding).
    ("rn", 3, 64, 224, 7, 2),
    ("rn", 64, 128, 56, 3, 2),
    ("rn", 128, 256, 28, 3, 2),
    ("rn", 256, 512, 14, 3, 2),
];

/// One layer on fixed inputs, writing into the output it is given.
type Layer = Box<dyn FnMut(&mut [f32])>;

fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

fn main() {
    let mut runs = 200;
    let mut filter = String::new();
    let mut cold = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => runs = it.next().unwrap().parse().unwrap(),
            "--filter" => filter = it.next().unwrap(),
            "--cold" => cold = true,
            other => panic!("unknown argument {other}"),
        }
    }
    let isa = Isa::detect();
    let clip = Some(Clip::new(0.0, 6.0));
    println!("| layer | us (median of {runs}, thread CPU) | GFMA/s |");
    println!("|---|---|---|");
    let mut total = 0.0;
    for &(kind, cin, cout, size, k, s) in LAYERS {
        let pad = (k - 1) / 2;
        let (pt, pb) = if kind == "rn" {
            (pad, pad)
        } else if s == 2 {
            (pad.saturating_sub(1), pad)
        } else {
            (pad, pad)
        };
        let name = format!("{kind} {cin}->{cout} {k}x{k}/{s} on {size}");
        if !name.contains(&filter) {
            continue;
        }
        let g = Geometry::square(1, cin, size, size, k, s, pt).with_pad_after(pb);
        let x = values(cin * size * size, 1);
        let (oh, ow) = (g.oh(), g.ow());
        let mut out = vec![0f32; cout * oh * ow];
        let fma = match kind {
            "dw" => cout * oh * ow * k * k,
            "fx" | "fl" => cout * size * size * cin + cout * oh * ow * k * k,
            _ => cout * oh * ow * k * k * cin,
        } as f64;
        let mut run: Layer = if kind == "fl" {
            let pw = Geometry::pointwise(g.n, g.c, g.h, g.w);
            let mut conv =
                FastConv::new(pw, cout, 4, &values(cout * cin, 2), &values(cout, 3)).unwrap();
            conv.clip = clip;
            let dw = FastDepthwise::new(Geometry { c: cout, ..g }, 4, clip).unwrap();
            let (w, b) = (values(cout * k * k, 4), values(cout, 5));
            let Some(op) = FusedLanesConvDepthwise::new(conv, dw, &w, &b) else {
                println!("| {name} | n/a | |");
                continue;
            };
            Box::new(move |out| fused_lanes(&op, &x, isa, out).unwrap())
        } else if kind == "fx" {
            let pw = Geometry::pointwise(g.n, g.c, g.h, g.w);
            let mut conv =
                FastConv::new(pw, cout, 4, &values(cout * cin, 2), &values(cout, 3)).unwrap();
            conv.clip = clip;
            let dw = FastDepthwise::new(Geometry { c: cout, ..g }, 4, clip).unwrap();
            let op = FusedConvDepthwise::new(conv, dw).unwrap();
            let (w, b) = (values(cout * k * k, 4), values(cout, 5));
            Box::new(move |out| fused(&op, &x, &w, &b, isa, out).unwrap())
        } else if kind == "dw" {
            let w = values(cin * k * k, 2);
            let b = values(cin, 3);
            Box::new(move |out| depthwise(&g, &x, &w, &b, clip, isa, out))
        } else {
            let w = values(cout * cin * k * k, 2);
            let b = values(cout, 3);
            let mut op = FastConv::new(g, cout, 4, &w, &b).unwrap();
            op.clip = if kind == "pw" && cin > cout {
                None
            } else {
                clip
            };
            Box::new(move |out| dense(&op, &x, isa, out))
        };
        for _ in 0..10 {
            run(&mut out);
        }
        let mut evict = vec![0u8; if cold { 64 << 20 } else { 0 }];
        let mut times: Vec<f64> = (0..runs)
            .map(|r| {
                for b in evict.iter_mut().step_by(64) {
                    *b = b.wrapping_add(r as u8);
                }
                let t = thread_cpu();
                run(&mut out);
                (thread_cpu() - t).as_secs_f64() * 1e6
            })
            .collect();
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let us = times[runs / 2];
        total += us;
        println!("| {name} | {us:.1} | {:.1} |", fma / us / 1e3);
    }
    println!("| total | {total:.1} | |");
}
