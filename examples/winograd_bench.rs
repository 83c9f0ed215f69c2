//! Per-layer timing of ResNet18's 3x3 stride-1 convolution shapes: the direct dense convolution
//! ([`FastConv`]) against Winograd F(2x2) and F(4x4) ([`FastWinograd`]), thread CPU time,
//! median of `--runs` (default 30), one thread, each layer called again and again (its weights
//! stay in cache, unlike in a whole model: `engine_bench` has the final word); and the time
//! the rewrite spends at load transforming one layer's filters.
//!
//! ```text
//! cargo run --release --example winograd_bench -- [--runs N]
//! ```

use tagger::engine::ops::conv::dense;
use tagger::engine::ops::{winograd, FastConv, FastWinograd, Geometry, Isa, Tile};

/// The calling thread's CPU time in milliseconds.
fn cpu_now() -> f64 {
    tagger::engine::tract::thread_cpu_time().as_secs_f64() * 1e3
}

fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut v: Vec<f64> = (0..runs)
        .map(|_| {
            let t = cpu_now();
            f();
            cpu_now() - t
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[runs / 2]
}

fn main() {
    let mut runs = 30;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => runs = it.next().unwrap().parse().unwrap(),
            other => panic!("unknown argument {other}"),
        }
    }
    let isa = Isa::detect();
    println!("# ResNet18 3x3 stride-1 layers, ms per call (thread CPU time, median of {runs}, {isa:?})\n");
    println!("| cin=cout @ hw | direct | F2 | F4 | load: F2 filters | load: F4 filters |");
    println!("|---|---|---|---|---|---|");
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move |n: usize, scale: f32| -> Vec<f32> {
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    };
    for (c, hw) in [(64, 56), (128, 28), (256, 14), (512, 7)] {
        let g = Geometry::square(1, c, hw, hw, 3, 1, 1);
        let x = rand(c * hw * hw, 1.0);
        let k = rand(c * c * 9, 0.05);
        let b = rand(c, 0.1);
        let mut out = vec![0f32; c * hw * hw];
        let direct = FastConv::new(g, c, 4, &k, &b).unwrap();
        let t_direct = median_ms(runs, || dense(&direct, &x, isa, &mut out));
        let mut row = format!("| {c} @ {hw}x{hw} | {t_direct:.3} |");
        for tile in [Tile::F2, Tile::F4] {
            let op = FastWinograd::new(g, c, 4, tile, &k, &b).unwrap();
            let t = median_ms(runs, || winograd(&op, &x, None, isa, &mut out));
            row += &format!(" {t:.3} ({:.2}x) |", t / t_direct);
        }
        // What the rewrite pays at load: the filter transform (and packing) of one layer.
        for tile in [Tile::F2, Tile::F4] {
            let t = median_ms(5, || {
                std::hint::black_box(FastWinograd::new(g, c, 4, tile, &k, &b).unwrap());
            });
            row += &format!(" {t:.2} |");
        }
        println!("{row}");
    }
}
