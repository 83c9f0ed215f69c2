//! [`FastWinograd`] against the definition of a dense convolution in f64, on every instruction
//! set and both packings of the products (its whole-graph test against tract's `Conv` is in
//! the rewrite's tests).

use super::*;
use crate::engine::ops::testing::Rng;

/// Dense convolution straight from the definition, in f64 (NCHW, OIHW).
fn reference(
    g: &Geometry,
    cout: usize,
    x: &[f32],
    k: &[f32],
    b: &[f32],
    clip: Option<Clip>,
) -> Vec<f64> {
    let (oh, ow) = (g.oh(), g.ow());
    let mut out = Vec::with_capacity(g.n * cout * oh * ow);
    for n in 0..g.n {
        for co in 0..cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = b[co] as f64;
                    for ci in 0..g.c {
                        for ky in 0..g.kh {
                            for kx in 0..g.kw {
                                let iy = (oy + ky) as isize - g.pad_top as isize;
                                let ix = (ox + kx) as isize - g.pad_left as isize;
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                let v = x[((n * g.c + ci) * g.h + iy as usize) * g.w + ix as usize];
                                let w = k[((co * g.c + ci) * g.kh + ky) * g.kw + kx];
                                acc += v as f64 * w as f64;
                            }
                        }
                    }
                    if let Some(c) = clip {
                        acc = acc.max(c.lo() as f64).min(c.hi() as f64);
                    }
                    out.push(acc);
                }
            }
        }
    }
    out
}

/// The largest error of the op on every ISA, relative to the largest magnitude
/// of the terms of each output's sum (what f32 rounding scales with).
fn max_error(g: Geometry, cout: usize, tile: Tile, clip: Option<Clip>, rng: &mut Rng) -> f64 {
    let x = rng.uniforms(-1.0, 1.0, g.n * g.c * g.h * g.w);
    // Filters of ResNet-like scale: sum of |w| over one output around 1..3.
    let scale = 1.0 / (g.c as f32 * 9.0).sqrt();
    let k = rng.uniforms(-scale, scale, cout * g.c * 9);
    let b = rng.uniforms(-0.5, 0.5, cout);
    let want = reference(&g, cout, &x, &k, &b, clip);
    let mut worst = 0f64;
    let mut op = FastWinograd::new(g, cout, 4, tile, &k, &b).unwrap();
    op.clip = clip;
    for isa in Isa::available() {
        let mut out = vec![f32::NAN; want.len()];
        winograd(&op, &x, None, isa, &mut out);
        for (i, (&o, &w)) in out.iter().zip(&want).enumerate() {
            let e = (o as f64 - w).abs();
            assert!(
                e.is_finite(),
                "{tile:?} {isa:?} {g:?} -> {cout} at {i}: {o} vs {w}"
            );
            worst = worst.max(e);
        }
    }
    worst
}

fn random_geometry(rng: &mut Rng) -> Geometry {
    loop {
        let pad = |rng: &mut Rng| rng.below(3);
        let g = Geometry {
            n: 1 + rng.below(2),
            c: 1 + rng.below(20),
            h: 1 + rng.below(17),
            w: 1 + rng.below(17),
            kh: 3,
            kw: 3,
            sh: 1,
            sw: 1,
            pad_top: pad(rng),
            pad_left: pad(rng),
            pad_bottom: pad(rng),
            pad_right: pad(rng),
        };
        if g.is_valid() {
            return g;
        }
    }
}

#[test]
fn matches_the_definition_on_random_shapes() {
    let mut rng = Rng::new(0x3a3b_3c3d);
    for case in 0..60 {
        let g = random_geometry(&mut rng);
        let cout = 1 + rng.below(40);
        let tile = if case % 2 == 0 { Tile::F2 } else { Tile::F4 };
        let clip = match rng.below(3) {
            0 => None,
            1 => Some(Clip::new(0.0, f32::INFINITY)),
            _ => Some(Clip::new(0.0, 6.0)),
        };
        let e = max_error(g, cout, tile, clip, &mut rng);
        assert!(e < 1e-5, "{tile:?} {g:?} -> {cout}: error {e:e}");
    }
}

/// ResNet18's four 3x3 stride-1 shapes (pad 1), and the error each tile makes there; the F4
/// bound is what the parity suite's 1e-4 on the logits leaves room for.
#[test]
fn resnet18_shapes_stay_accurate() {
    let mut rng = Rng::new(18);
    for (c, hw) in [(64, 56), (128, 28), (256, 14), (512, 7)] {
        let g = Geometry::square(1, c, hw, hw, 3, 1, 1);
        for (tile, bound) in [(Tile::F2, 2e-6), (Tile::F4, 5e-5)] {
            let e = max_error(g, c, tile, Some(Clip::new(0.0, f32::INFINITY)), &mut rng);
            eprintln!("{c}x{hw}x{hw} {tile:?}: max error {e:.2e}");
            assert!(e < bound, "{tile:?} {c}@{hw}: error {e:e}");
        }
    }
}

#[test]
fn pad_zero_and_tiny_planes() {
    let mut rng = Rng::new(7);
    for (h, w, pads) in [
        (3, 3, [0; 4]),
        (4, 9, [0; 4]),
        (1, 1, [1; 4]),
        (2, 5, [2, 0, 1, 2]),
    ] {
        let g = Geometry {
            n: 1,
            c: 3,
            h,
            w,
            kh: 3,
            kw: 3,
            sh: 1,
            sw: 1,
            pad_top: pads[0],
            pad_left: pads[1],
            pad_bottom: pads[2],
            pad_right: pads[3],
        };
        for tile in [Tile::F2, Tile::F4] {
            let e = max_error(g, 9, tile, None, &mut rng);
            assert!(e < 1e-5, "{tile:?} {g:?}: error {e:e}");
        }
    }
}

/// Rows of more than 16 tiles (F(2x2) past 32 columns, F(4x4) past 64) take the transforms'
/// general path, a vector of tiles at a time; up to 16 tiles the AVX-512 path keeps a whole
/// row in registers. Both, with odd widths, paddings and a clamp.
#[test]
fn rows_of_more_than_one_vector_of_tiles() {
    let mut rng = Rng::new(0x71e5);
    for (h, w, pad_left, pad_right) in [(6, 40, 1, 1), (5, 33, 0, 2), (7, 70, 1, 0), (9, 31, 1, 1)]
    {
        let g = Geometry {
            n: 1,
            c: 5,
            h,
            w,
            kh: 3,
            kw: 3,
            sh: 1,
            sw: 1,
            pad_top: 1,
            pad_left,
            pad_bottom: 1,
            pad_right,
        };
        for tile in [Tile::F2, Tile::F4] {
            let e = max_error(g, 11, tile, Some(Clip::new(0.0, 6.0)), &mut rng);
            assert!(e < 1e-5, "{tile:?} {g:?}: error {e:e}");
        }
    }
}

/// A fused residual is added to the convolution's output (bias included) before the clamp,
/// as the unfused graph rounds: equal to the bit to the op without it plus the residual, then
/// clamped, on every ISA; rows of tiles in registers and on the general path, a batch of 2,
/// odd sizes, channels past a whole block.
#[test]
fn residual_is_added_before_the_clamp() {
    let mut rng = Rng::new(0x5e51_d0a1);
    for (n, c, cout, h, w) in [(1, 6, 13, 7, 7), (2, 5, 8, 14, 15), (1, 4, 9, 9, 70)] {
        let g = Geometry::square(n, c, h, w, 3, 1, 1);
        let x = rng.uniforms(-1.0, 1.0, n * c * h * w);
        let k = rng.uniforms(-0.5, 0.5, cout * c * 9);
        let b = rng.uniforms(-0.5, 0.5, cout);
        let skip = rng.uniforms(-2.0, 2.0, n * cout * h * w);
        for (tile, clip) in [
            (Tile::F2, Some(Clip::new(0.0, f32::INFINITY))),
            (Tile::F4, Some(Clip::new(-0.5, 1.0))),
            (Tile::F2, None),
        ] {
            let plain = FastWinograd::new(g, cout, 4, tile, &k, &b).unwrap();
            let fused = FastWinograd {
                residual: true,
                clip,
                ..plain.clone()
            };
            let (lo, hi) = clip.map_or((f32::NEG_INFINITY, f32::INFINITY), |c| (c.lo(), c.hi()));
            for isa in Isa::available() {
                let mut y = vec![f32::NAN; skip.len()];
                winograd(&plain, &x, None, isa, &mut y);
                let want: Vec<f32> = y
                    .iter()
                    .zip(&skip)
                    .map(|(y, s)| (y + s).max(lo).min(hi))
                    .collect();
                let mut got = vec![f32::NAN; skip.len()];
                winograd(&fused, &x, Some(&skip), isa, &mut got);
                let case = format!("{isa:?} {tile:?} {clip:?} {g:?} -> {cout}");
                for (i, (a, e)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(a.to_bits(), e.to_bits(), "{case} at {i}: {a} vs {e}");
                }
            }
        }
    }
}

/// The F(2x2) filter transform without `G2`'s zeros and ones gives the general product's
/// values exactly (zeros compared by value: only their sign may differ), with and without AVX2,
/// for channel counts that fill and that do not fill the last block of [`MR`] filters.
#[test]
fn f2_filter_transform_equals_the_general_product() {
    let mut rng = Rng::new(22);
    for (cin, cout) in [(1, 1), (3, 8), (5, 13), (64, 64), (17, 70)] {
        let kernel = rng.uniforms(-2.0, 2.0, cout * cin * 9);
        let len = 16 * cout.div_ceil(MR) * cin * MR;
        let mut general = vec![f32::NAN; len];
        transform_filters(&G2, (cin, cout, &kernel, &mut general));
        let mut special = vec![f32::NAN; len];
        transform_filters_f2((cin, cout, &kernel, &mut special));
        assert!(
            general.iter().zip(&special).all(|(a, b)| a == b),
            "{cin} -> {cout}"
        );
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            let mut vectors = vec![f32::NAN; len];
            // Safety: AVX2 detected just above.
            unsafe { transform_filters_f2_avx2((cin, cout, &kernel, &mut vectors)) };
            assert!(general.iter().zip(&vectors).all(|(a, b)| a == b));
        }
    }
}
