//! Test helpers shared by the ops' and the rewrite's unit tests: deterministic random data,
//! random geometries, and the definitions (in f64) the kernels are checked against.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::cnn::{PaddingSpec, PoolSpec};
use tract_onnx::tract_core::ops::math::{max, min};
use tract_onnx::tract_core::ops::nn::DataFormat;

use super::{Clip, Geometry};

pub(crate) use crate::test_rng::Rng;

/// `got` within 1e-5 (relative, absolute below 1) of `want`.
pub(crate) fn close(got: &[f32], want: &[f32]) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{} values, want {}", got.len(), want.len()));
    }
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if (g - w).abs() > 1e-5 * w.abs().max(1.0) {
            return Err(format!("at {i}: {g} vs {w}"));
        }
    }
    Ok(())
}

/// Straight from the definition, in f64.
pub(crate) fn reference(
    g: &Geometry,
    x: &[f32],
    k: &[f32],
    b: &[f32],
    clip: Option<Clip>,
) -> Vec<f32> {
    let (oh, ow) = (g.oh(), g.ow());
    let mut out = vec![];
    for plane in 0..g.n * g.c {
        let ch = plane % g.c;
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = b[ch] as f64;
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        let iy = (oy * g.sh + ky) as isize - g.pad_top as isize;
                        let ix = (ox * g.sw + kx) as isize - g.pad_left as isize;
                        if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                            continue;
                        }
                        let v = x[plane * g.h * g.w + iy as usize * g.w + ix as usize];
                        acc += v as f64 * k[(ch * g.kh + ky) * g.kw + kx] as f64;
                    }
                }
                let mut v = acc as f32;
                if let Some(c) = clip {
                    v = v.max(c.lo()).min(c.hi());
                }
                out.push(v);
            }
        }
    }
    out
}

/// A valid geometry with a 3x3 or 5x5 kernel, stride 1 or 2, any padding up to the kernel.
pub(crate) fn random_geometry(rng: &mut Rng) -> Geometry {
    loop {
        let k = if rng.below(2) == 0 { 3 } else { 5 };
        let g = Geometry {
            n: 1 + rng.below(3),
            c: 1 + rng.below(20),
            h: 1 + rng.below(40),
            w: 1 + rng.below(40),
            kh: k,
            kw: k,
            sh: 1 + rng.below(2),
            sw: 1 + rng.below(2),
            pad_top: rng.below(k),
            pad_left: rng.below(k),
            pad_bottom: rng.below(k),
            pad_right: rng.below(k),
        };
        if g.is_valid() {
            return g;
        }
    }
}

/// Max pooling straight from the definition; padding cells are left out.
pub(crate) fn reference_max(g: &Geometry, x: &[f32]) -> Vec<f32> {
    let mut out = vec![];
    for plane in 0..g.n * g.c {
        for oy in 0..g.oh() {
            for ox in 0..g.ow() {
                let mut m = f32::NEG_INFINITY;
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        let iy = (oy * g.sh + ky) as isize - g.pad_top as isize;
                        let ix = (ox * g.sw + kx) as isize - g.pad_left as isize;
                        if iy >= 0 && ix >= 0 && iy < g.h as isize && ix < g.w as isize {
                            m = m.max(x[plane * g.h * g.w + iy as usize * g.w + ix as usize]);
                        }
                    }
                }
                out.push(m);
            }
        }
    }
    out
}

/// tract's `PoolSpec` for `g` (`cin -> cout` channels in `format`): how the tests build the
/// tract op ours must equal.
pub(crate) fn pool_spec(g: &Geometry, format: DataFormat, cin: usize, cout: usize) -> PoolSpec {
    PoolSpec {
        data_format: format,
        kernel_shape: tvec!(g.kh, g.kw),
        padding: PaddingSpec::Explicit(
            tvec!(g.pad_top, g.pad_left),
            tvec!(g.pad_bottom, g.pad_right),
        ),
        dilations: None,
        strides: Some(tvec!(g.sh, g.sw)),
        input_channels: cin,
        output_channels: cout,
    }
}

/// A 1x1 convolution straight from the definition, in f64, rounded to f32 and clamped.
pub(crate) fn pointwise_reference(
    g: &Geometry,
    cout: usize,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    clip: Option<Clip>,
) -> Vec<f32> {
    let p = g.h * g.w;
    let mut out = vec![0f32; g.n * cout * p];
    for n in 0..g.n {
        for co in 0..cout {
            for px in 0..p {
                let mut acc = b[co] as f64;
                for ci in 0..g.c {
                    acc += w[co * g.c + ci] as f64 * x[(n * g.c + ci) * p + px] as f64;
                }
                let mut v = acc as f32;
                if let Some(c) = clip {
                    v = v.max(c.lo()).min(c.hi());
                }
                out[(n * cout + co) * p + px] = v;
            }
        }
    }
    out
}

/// Runs `model` once on `input` and returns its first output's values.
pub(crate) fn run_plan(model: TypedModel, input: &Tensor) -> Vec<f32> {
    let plan = model.into_runnable().unwrap();
    plan.run(tvec!(input.clone().into_tvalue())).unwrap()[0]
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

/// Wires `min(max(x, 0), 6)` after `x` in `model`, as an ONNX ReLU6 (`Clip`) reaches tract.
pub(crate) fn relu6(model: &mut TypedModel, name: &str, x: OutletId) -> OutletId {
    let zero = model
        .add_const(format!("{name}.0"), tensor4(&[[[[0f32]]]]))
        .unwrap();
    let six = model
        .add_const(format!("{name}.6"), tensor4(&[[[[6f32]]]]))
        .unwrap();
    let x = model
        .wire_node(format!("{name}.max"), max(), &[x, zero])
        .unwrap()[0];
    model
        .wire_node(format!("{name}.min"), min(), &[x, six])
        .unwrap()[0]
}
