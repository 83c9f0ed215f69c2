//! Each rewrite against tract's own ops on small models, and each op against its definition.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::cnn::conv::{Conv, KernelFormat};
use tract_onnx::tract_core::ops::cnn::{PaddingSpec, PoolSpec};
use tract_onnx::tract_core::ops::math::{max, min};
use tract_onnx::tract_core::ops::nn::DataFormat;

use super::*;
use crate::engine::ops::conv::dense;
use crate::engine::ops::testing::{close, pool_spec, random_geometry, run_plan, Rng};
use crate::engine::ops::winograd::winograd;
use crate::engine::ops::{Geometry, Isa};

/// A model holding one depthwise `Conv` (and a ReLU6 after it when `relu6`): its output
/// optimised by tract (its `DepthWiseConv`), then with ours after [`rewrite_typed`],
/// optimisation and [`rewrite_optimized`] (the engine's steps).
fn tract_vs_ours(g: &Geometry, fmt: DataFormat, relu6: bool, rng: &mut Rng) {
    let x_shape: TVec<usize> = match fmt {
        DataFormat::NCHW => tvec!(g.n, g.c, g.h, g.w),
        DataFormat::CHW => tvec!(g.c, g.h, g.w),
        _ => unreachable!(),
    };
    let x = rng.uniforms(-1.0, 1.0, x_shape.iter().product());
    let kernel = rng.uniforms(-1.0, 1.0, g.c * g.taps());
    let bias = rng.uniforms(-1.0, 1.0, g.c);
    let mut model = TypedModel::default();
    let xv = model.add_source("x", f32::fact(&*x_shape)).unwrap();
    let k = Tensor::from_shape(&[g.c, 1, g.kh, g.kw], &kernel).unwrap();
    let kv = model.add_const("k", k).unwrap();
    let bv = model
        .add_const("b", Tensor::from_shape(&[g.c], &bias).unwrap())
        .unwrap();
    let pool_spec = pool_spec(g, fmt, g.c, g.c);
    let conv = Conv {
        pool_spec,
        kernel_fmt: KernelFormat::OIHW,
        group: g.c,
        q_params: None,
    };
    let mut out = model.wire_node("dw", conv, &[xv, kv, bv]).unwrap();
    if relu6 {
        let ones = tvec![1usize; x_shape.len()];
        let zero = model
            .add_const("zero", Tensor::from_shape(&ones, &[0f32]).unwrap())
            .unwrap();
        let six = model
            .add_const("six", Tensor::from_shape(&ones, &[6f32]).unwrap())
            .unwrap();
        out = model
            .wire_node("relu6.max", max(), &[out[0], zero])
            .unwrap();
        out = model.wire_node("relu6.min", min(), &[out[0], six]).unwrap();
    }
    model.select_output_outlets(&out).unwrap();
    let mut ours = model.clone();
    let typed = rewrite_typed(&mut ours).unwrap();
    assert_eq!(typed.depthwise, 1, "{g:?} {fmt:?}: {typed:?}");
    let mut ours = ours.into_optimized().unwrap();
    let report = rewrite_optimized(&mut ours).unwrap();
    let model = model.into_decluttered().unwrap().into_optimized().unwrap();
    let names = |m: &TypedModel| {
        m.nodes
            .iter()
            .map(|n| n.op().name().to_string())
            .collect::<Vec<_>>()
    };
    assert!(
        names(&model).iter().any(|n| n == "DepthWiseConv"),
        "tract did not make a DepthWiseConv of {g:?}: {:?}",
        names(&model)
    );
    let input = Tensor::from_shape(&x_shape, &x).unwrap();
    let run = |m: TypedModel| run_plan(m, &input);
    let after = names(&ours);
    assert!(!after.iter().any(|n| n == "DepthWiseConv"), "{after:?}");
    // tract leaves Max and Min apart on some small tensors; only its chain is fused.
    if relu6 && names(&model).iter().any(|n| n == "OptBinChain(Max+Min)") {
        assert_eq!(report.fused_clips, 1, "{after:?}");
        assert!(
            !after.iter().any(|n| n.starts_with("OptBinChain")),
            "{after:?}"
        );
    }
    let want = run(model);
    let got = run(ours);
    close(&got, &want).unwrap_or_else(|e| panic!("{g:?} {fmt:?} relu6={relu6}: {e}"));
}

#[test]
fn replaces_tract_depthwise_on_random_shapes() {
    let mut rng = Rng::new(7);
    for case in 0..60 {
        let mut g = random_geometry(&mut rng);
        // With one channel a depthwise convolution is a dense one, and is rewritten as such.
        g.c = g.c.max(2);
        let fmt = if case % 2 == 0 {
            DataFormat::NCHW
        } else {
            g.n = 1;
            DataFormat::CHW
        };
        tract_vs_ours(&g, fmt, case % 3 == 0, &mut rng);
    }
}

#[test]
fn replaces_tract_depthwise_with_batch() {
    let mut rng = Rng::new(11);
    let g = Geometry {
        n: 3,
        c: 24,
        h: 28,
        w: 28,
        kh: 5,
        kw: 5,
        sh: 2,
        sw: 2,
        pad_top: 1,
        pad_left: 1,
        pad_bottom: 2,
        pad_right: 2,
    };
    tract_vs_ours(&g, DataFormat::NCHW, true, &mut rng);
    tract_vs_ours(
        &Geometry {
            sh: 1,
            sw: 1,
            pad_top: 2,
            pad_left: 2,
            ..g
        },
        DataFormat::NCHW,
        false,
        &mut rng,
    );
}

#[test]
fn leaves_unsupported_kernels_to_tract() {
    let mut model = TypedModel::default();
    let xv = model.add_source("x", f32::fact([1, 4, 10, 10])).unwrap();
    let kv = model
        .add_const("k", Tensor::zero::<f32>(&[4, 1, 7, 7]).unwrap())
        .unwrap();
    let bv = model
        .add_const("b", Tensor::zero::<f32>(&[4]).unwrap())
        .unwrap();
    let conv = Conv {
        pool_spec: PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec!(7, 7),
            padding: PaddingSpec::Valid,
            dilations: None,
            strides: None,
            input_channels: 4,
            output_channels: 4,
        },
        kernel_fmt: KernelFormat::OIHW,
        group: 4,
        q_params: None,
    };
    let out = model.wire_node("dw", conv, &[xv, kv, bv]).unwrap();
    model.select_output_outlets(&out).unwrap();
    let report = rewrite_typed(&mut model).unwrap();
    assert_eq!(report.depthwise, 0);
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    assert!(report.skipped[0].1.contains("7x7"), "{report:?}");
}

#[test]
fn replaces_tract_maxpool() {
    use tract_onnx::tract_core::ops::cnn::MaxPool;
    let mut rng = Rng::new(3);
    for (n, c, size, k, s, pad) in [
        (1, 64, 112, 3, 2, 1),
        (2, 5, 17, 3, 2, 1),
        (1, 3, 9, 5, 1, 2),
        (3, 4, 8, 3, 1, 0),
    ] {
        let shape = [n, c, size, size];
        let x = rng.uniforms(-1.0, 1.0, shape.iter().product());
        let mut model = TypedModel::default();
        let xv = model.add_source("x", f32::fact(shape)).unwrap();
        let pool = MaxPool {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec!(k, k),
                padding: PaddingSpec::Explicit(tvec!(pad, pad), tvec!(pad, pad)),
                dilations: None,
                strides: Some(tvec!(s, s)),
                input_channels: c,
                output_channels: c,
            },
            with_index_outputs: None,
        };
        let out = model.wire_node("pool", pool, &[xv]).unwrap();
        model.select_output_outlets(&out).unwrap();
        let model = model.into_optimized().unwrap();
        let mut ours = model.clone();
        let report = rewrite_optimized(&mut ours).unwrap();
        assert_eq!(
            report.maxpools,
            1,
            "{:?}",
            model
                .nodes
                .iter()
                .map(|n| n.op().name())
                .collect::<Vec<_>>()
        );
        let input = Tensor::from_shape(&shape, &x).unwrap();
        let run = |m: TypedModel| run_plan(m, &input);
        assert_eq!(run(ours), run(model));
    }
}

#[allow(clippy::too_many_arguments)]
fn dense_vs_tract(
    seed: &mut Rng,
    n: usize,
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    k: (usize, usize),
    s: (usize, usize),
    pads: ([usize; 2], [usize; 2]),
) {
    conv_vs_tract(seed, n, cin, cout, h, w, k, s, pads, None, false)
}

/// One group-1 `Conv` (after a zero `Pad` when `pad_op`) rewritten onto [`FastConv`], or onto
/// [`FastWinograd`] with `winograd` (which the shape must then take), against tract's plan:
/// the rewritten plan, and the op on every instruction set.
#[allow(clippy::too_many_arguments)]
fn conv_vs_tract(
    seed: &mut Rng,
    n: usize,
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    k: (usize, usize),
    s: (usize, usize),
    pads: ([usize; 2], [usize; 2]),
    pad_op: Option<[usize; 4]>,
    winograd_on: bool,
) {
    use tract_onnx::tract_core::ops::array::{Pad, PadMode};
    let x = seed.uniforms(-1.0, 1.0, n * cin * h * w);
    let kernel = seed.uniforms(-1.0, 1.0, cout * cin * k.0 * k.1);
    let bias = seed.uniforms(-1.0, 1.0, cout);
    let mut model = TypedModel::default();
    let mut xv = model.add_source("x", f32::fact([n, cin, h, w])).unwrap();
    let (mut ch, mut cw) = (h, w);
    if let Some([t, b, l, r]) = pad_op {
        let pad = Pad::new(
            vec![(0, 0), (0, 0), (t, b), (l, r)],
            PadMode::Constant(tensor0(0f32).into_arc_tensor()),
        );
        xv = model.wire_node("pad", pad, &[xv]).unwrap()[0];
        (ch, cw) = (h + t + b, w + l + r);
    }
    let _ = (ch, cw);
    let kv = model
        .add_const(
            "k",
            Tensor::from_shape(&[cout, cin, k.0, k.1], &kernel).unwrap(),
        )
        .unwrap();
    let bv = model
        .add_const("b", Tensor::from_shape(&[cout], &bias).unwrap())
        .unwrap();
    let conv = Conv {
        pool_spec: PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec!(k.0, k.1),
            padding: PaddingSpec::Explicit(
                pads.0.iter().copied().collect(),
                pads.1.iter().copied().collect(),
            ),
            dilations: None,
            strides: Some(tvec!(s.0, s.1)),
            input_channels: cin,
            output_channels: cout,
        },
        kernel_fmt: KernelFormat::OIHW,
        group: 1,
        q_params: None,
    };
    let out = model.wire_node("conv", conv, &[xv, kv, bv]).unwrap();
    model.select_output_outlets(&out).unwrap();
    let mut ours = model.clone();
    let options = RewriteOptions {
        winograd: winograd_on,
    };
    let report = rewrite_typed_with(&mut ours, &options).unwrap();
    assert_eq!(report.dense, !winograd_on as usize, "{report:?}");
    assert_eq!(report.winograd, winograd_on as usize, "{report:?}");
    assert_eq!(report.folded_pads, pad_op.is_some() as usize, "{report:?}");
    let op = ours
        .nodes
        .iter()
        .find_map(|n| n.op_as::<FastConv>())
        .cloned();
    let wino = ours
        .nodes
        .iter()
        .find_map(|n| n.op_as::<FastWinograd>())
        .cloned();
    let input = Tensor::from_shape(&[n, cin, h, w], &x).unwrap();
    let want = run_plan(model.into_optimized().unwrap(), &input);
    let got = run_plan(ours.into_optimized().unwrap(), &input);
    let tol = 1e-5 * (cin * k.0 * k.1) as f32;
    let check = |got: &[f32], what: &str| {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= tol * w.abs().max(1.0),
                "{what} {op:?} at {i}: {g} vs {w}"
            );
        }
    };
    check(&got, "plan");
    for isa in Isa::available() {
        let mut out = vec![f32::NAN; want.len()];
        match (&op, &wino) {
            (Some(op), None) => dense(op, &x, isa, &mut out),
            (None, Some(op)) => winograd(op, &x, None, isa, &mut out),
            _ => unreachable!("one convolution op"),
        }
        check(&out, &format!("{isa:?}"));
    }
}

#[test]
fn winograd_matches_tract() {
    let mut seed = Rng::new(0x3c0f_fee5);
    // F(4x4) from 28x28 up, F(2x2) below; output channels not a multiple of any block; a
    // batch of 2; a folded zero Pad; ResNet18's layer-4 shape.
    conv_vs_tract(
        &mut seed,
        1,
        64,
        72,
        30,
        29,
        (3, 3),
        (1, 1),
        ([1, 0], [1, 2]),
        None,
        true,
    );
    conv_vs_tract(
        &mut seed,
        1,
        64,
        64,
        14,
        14,
        (3, 3),
        (1, 1),
        ([1, 1], [1, 1]),
        None,
        true,
    );
    conv_vs_tract(
        &mut seed,
        2,
        64,
        72,
        7,
        9,
        (3, 3),
        (1, 1),
        ([1, 1], [1, 1]),
        None,
        true,
    );
    conv_vs_tract(
        &mut seed,
        1,
        65,
        70,
        17,
        15,
        (3, 3),
        (1, 1),
        ([0, 2], [1, 0]),
        None,
        true,
    );
    conv_vs_tract(
        &mut seed,
        1,
        64,
        96,
        13,
        12,
        (3, 3),
        (1, 1),
        ([0, 0], [0, 0]),
        Some([1, 1, 1, 1]),
        true,
    );
    conv_vs_tract(
        &mut seed,
        1,
        512,
        512,
        7,
        7,
        (3, 3),
        (1, 1),
        ([1, 1], [1, 1]),
        None,
        true,
    );
}

#[test]
fn winograd_only_where_it_gains() {
    let geo = |c: usize, hw: usize, s: usize| Geometry::square(1, c, hw, hw, 3, s, 1);
    assert_eq!(winograd_tile(&geo(64, 56, 1), 64), Some(Tile::F4));
    assert_eq!(winograd_tile(&geo(128, 28, 1), 128), Some(Tile::F4));
    assert_eq!(winograd_tile(&geo(256, 14, 1), 256), Some(Tile::F2));
    assert_eq!(winograd_tile(&geo(512, 7, 1), 512), Some(Tile::F2));
    assert_eq!(winograd_tile(&geo(64, 56, 2), 128), None);
    assert_eq!(winograd_tile(&geo(16, 56, 1), 16), None);
    assert_eq!(winograd_tile(&geo(512, 3, 1), 512), None);
}

#[test]
fn dense_matches_tract() {
    let mut seed = Rng::new(0x1234_5678_9abc_def1);
    // ResNet18-like, EfficientNet-Lite0-like, odd sizes, strides and paddings.
    dense_vs_tract(
        &mut seed,
        1,
        3,
        16,
        30,
        30,
        (7, 7),
        (2, 2),
        ([3, 3], [3, 3]),
    );
    dense_vs_tract(
        &mut seed,
        1,
        3,
        32,
        24,
        24,
        (3, 3),
        (2, 2),
        ([0, 0], [1, 1]),
    );
    dense_vs_tract(
        &mut seed,
        1,
        16,
        24,
        14,
        14,
        (3, 3),
        (1, 1),
        ([1, 1], [1, 1]),
    );
    dense_vs_tract(&mut seed, 2, 8, 16, 9, 11, (3, 3), (2, 2), ([1, 1], [1, 1]));
    dense_vs_tract(&mut seed, 1, 24, 40, 7, 7, (1, 1), (1, 1), ([0, 0], [0, 0]));
    dense_vs_tract(
        &mut seed,
        1,
        16,
        20,
        12,
        12,
        (1, 1),
        (2, 2),
        ([0, 0], [0, 0]),
    );
    dense_vs_tract(&mut seed, 3, 5, 13, 17, 6, (5, 3), (1, 2), ([2, 0], [1, 2]));
    dense_vs_tract(
        &mut seed,
        1,
        64,
        64,
        56,
        56,
        (3, 3),
        (1, 1),
        ([1, 1], [1, 1]),
    );
    // Onto small planes (AVX-512 unfolds the input and runs channels in the lanes): ResNet18's
    // stride-2 3x3 onto 7x7 (K = 2304: many input passes) with output channels past a tile,
    // and onto 14x13 with asymmetric padding.
    dense_vs_tract(
        &mut seed,
        1,
        256,
        72,
        14,
        14,
        (3, 3),
        (2, 2),
        ([1, 1], [1, 1]),
    );
    dense_vs_tract(
        &mut seed,
        2,
        40,
        33,
        28,
        25,
        (3, 3),
        (2, 2),
        ([0, 1], [1, 1]),
    );
}

#[test]
fn dense_matches_tract_on_random_shapes() {
    let mut rng = Rng::new(0x0dd5_eed5);
    let mut pick = |n: usize| rng.below(n);
    for _ in 0..25 {
        let k = [(1, 1), (3, 3), (5, 5), (7, 7), (3, 1)][pick(5)];
        let s = (1 + pick(2), 1 + pick(2));
        let pads = ([pick(k.0), pick(k.1)], [pick(k.0), pick(k.1)]);
        let (h, w) = (k.0 + pick(20), k.1 + pick(20));
        let (n, cin, cout) = (1 + pick(2), 1 + pick(12), 1 + pick(20));
        let mut s2 = Rng::new(pick(1 << 30) as u64);
        dense_vs_tract(&mut s2, n, cin, cout, h, w, k, s, pads);
    }
}

#[test]
fn pointwise_matches_tract_over_several_input_passes() {
    // Small planes take the channels-in-lanes path, whose tiles go through the input channels
    // in passes of `KC`: several passes, a partial last pass and tile, odd plane sizes.
    let mut seed = Rng::new(0x5eed_0c0c);
    for (n, cin, cout, h, w) in [
        (1, 150, 40, 9, 7),
        (2, 200, 33, 7, 7),
        (1, 64, 32, 5, 5),
        (1, 129, 70, 14, 14),
        (1, 1152, 192, 7, 7),
    ] {
        dense_vs_tract(
            &mut seed,
            n,
            cin,
            cout,
            h,
            w,
            (1, 1),
            (1, 1),
            ([0, 0], [0, 0]),
        );
    }
}

#[test]
fn dense_folds_a_zero_pad() {
    let mut seed = Rng::new(77);
    // EfficientNet-Lite0's stem: Pad (0, 1, 0, 1), then a valid 3x3 stride 2.
    conv_vs_tract(
        &mut seed,
        1,
        3,
        32,
        32,
        32,
        (3, 3),
        (2, 2),
        ([0, 0], [0, 0]),
        Some([0, 1, 0, 1]),
        false,
    );
    conv_vs_tract(
        &mut seed,
        2,
        4,
        8,
        9,
        10,
        (3, 3),
        (1, 1),
        ([1, 0], [0, 1]),
        Some([2, 1, 0, 3]),
        false,
    );
}

/// A residual block's tail: `x -> conv3x3 -> (+ skip) [-> ReLU]`, where `skip` is the block's
/// input or a 1x1 stride-2 shortcut of it (a strided block). Tract's plan against ours (the
/// Add and the ReLU folded into the Winograd op), both operand orders.
fn residual_vs_tract(
    seed: &mut Rng,
    (n, cin, cout, h): (usize, usize, usize, usize),
    strided: bool,
    skip_first: bool,
    relu: bool,
) {
    use tract_onnx::tract_core::ops::math::add;
    let conv = |model: &mut TypedModel, seed: &mut Rng, name: &str, x, cin, k: usize, s| {
        let kernel = seed.uniforms(-0.3, 0.3, cout * cin * k * k);
        let bias = seed.uniforms(-1.0, 1.0, cout);
        let kv = model
            .add_const(
                format!("{name}.k"),
                Tensor::from_shape(&[cout, cin, k, k], &kernel).unwrap(),
            )
            .unwrap();
        let bv = model
            .add_const(
                format!("{name}.b"),
                Tensor::from_shape(&[cout], &bias).unwrap(),
            )
            .unwrap();
        // The plane's size does not enter the spec.
        let g = Geometry::square(1, cin, k, k, k, s, k / 2);
        let op = Conv {
            pool_spec: pool_spec(&g, DataFormat::NCHW, cin, cout),
            kernel_fmt: KernelFormat::OIHW,
            group: 1,
            q_params: None,
        };
        model.wire_node(name, op, &[x, kv, bv]).unwrap()[0]
    };
    let x = seed.uniforms(-1.0, 1.0, n * cin * h * h);
    let mut model = TypedModel::default();
    let xv = model.add_source("x", f32::fact([n, cin, h, h])).unwrap();
    // The block's first convolution brings the plane to the second one's size and channels.
    let (s, mid) = if strided {
        (2, "conv1.s2")
    } else {
        (1, "conv1")
    };
    let y = conv(&mut model, seed, mid, xv, cin, 3, s);
    let skip = if strided {
        conv(&mut model, seed, "shortcut", xv, cin, 1, 2)
    } else {
        assert_eq!(cin, cout);
        xv
    };
    let y = conv(&mut model, seed, "conv2", y, cout, 3, 1);
    let operands = if skip_first { [skip, y] } else { [y, skip] };
    let mut out = model.wire_node("add", add(), &operands).unwrap();
    if relu {
        let zero = model.add_const("zero", tensor4(&[[[[0f32]]]])).unwrap();
        out = model.wire_node("relu", max(), &[out[0], zero]).unwrap();
    }
    model.select_output_outlets(&out).unwrap();
    let mut ours = model.clone();
    rewrite_typed(&mut ours).unwrap();
    let mut ours = ours.into_optimized().unwrap();
    let report = rewrite_optimized(&mut ours).unwrap();
    let case =
        format!("{n}x{cin}->{cout} on {h} strided {strided} skip_first {skip_first} relu {relu}");
    assert_eq!(report.winograd_residuals, 1, "{case}: {report:?}");
    let fused = ours
        .nodes
        .iter()
        .find_map(|n| n.op_as::<FastWinograd>().filter(|w| w.residual))
        .unwrap_or_else(|| panic!("{case}: no residual Winograd op"));
    assert_eq!(fused.clip.is_some(), relu, "{case}");
    assert!(
        !ours.nodes.iter().any(|n| n.op().name().contains("Add")),
        "{case}"
    );
    let input = Tensor::from_shape(&[n, cin, h, h], &x).unwrap();
    let want = run_plan(model.into_optimized().unwrap(), &input);
    let got = run_plan(ours, &input);
    assert!(
        want.iter().any(|&v| v < 0.0) != relu,
        "{case}: the ReLU clamps something"
    );
    let tol = 1e-5 * (cout * 9) as f32;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= tol * w.abs().max(1.0),
            "{case} at {i}: {g} vs {w}"
        );
    }
}

#[test]
fn winograd_fuses_the_residual_add_and_relu() {
    let mut seed = Rng::new(0x4e51_d0a1);
    // F(4x4) on 28x28, F(2x2) on 14x14 and 7x7 (one vector of tiles per row: the register
    // output transform), a batch of 2 on a 66x66 plane (17 tiles a row: the general path).
    // Winograd takes 64 channels and more.
    residual_vs_tract(&mut seed, (1, 64, 64, 28), false, false, true);
    residual_vs_tract(&mut seed, (1, 64, 64, 14), false, true, true);
    residual_vs_tract(&mut seed, (1, 64, 64, 7), false, false, false);
    residual_vs_tract(&mut seed, (2, 64, 64, 66), false, true, true);
    // Strided blocks: the shortcut is another convolution's output; output channels past a
    // whole block.
    residual_vs_tract(&mut seed, (1, 16, 64, 28), true, false, true);
    residual_vs_tract(&mut seed, (1, 16, 68, 14), true, true, false);
}
