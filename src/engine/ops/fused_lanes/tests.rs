use tract_onnx::tract_core::ops::cnn::conv::{Conv, KernelFormat};
use tract_onnx::tract_core::ops::nn::DataFormat;

use super::*;
use crate::engine::ops::testing::{
    pointwise_reference, pool_spec, reference, relu6, run_plan, Rng,
};
use crate::engine::ops::Clip;
use crate::engine::rewrite::{rewrite_optimized, rewrite_typed};

/// Within `tol` (relative, absolute below 1).
fn check(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= tol * b.abs().max(1.0),
            "{what} at {i}: {a} vs {b}"
        );
    }
}

/// A depthwise geometry on a small plane (up to 16x16) or, with `large`, up to 48x48.
fn lanes_geometry(rng: &mut Rng, large: bool) -> Geometry {
    loop {
        let k = [3, 5][rng.below(2)];
        let s = 1 + rng.below(2);
        let g = Geometry {
            n: 1 + rng.below(2),
            c: 1 + rng.below(80),
            h: 1 + rng.below(if large { 48 } else { 16 }),
            w: 1 + rng.below(if large { 48 } else { 16 }),
            kh: k,
            kw: k,
            sh: s,
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

/// The op on every instruction set against the definitions chained (1x1 then depthwise, each
/// clamped or not), on random planes (a third past 16x16: several bands): odd sizes and paddings, strides 1 and 2, channel
/// counts that leave partial tiles and half-empty vectors, input counts past one pass.
#[test]
fn fused_lanes_matches_definition_on_random_shapes() {
    let mut rng = Rng::new(0x5a11_f05e);
    let mut fused_cases = 0;
    for case in 0..60 {
        // Every third case on a plane past 16x16: several bands of rows.
        let g = lanes_geometry(&mut rng, case % 3 == 2);
        let cin = [1 + rng.below(40), 100 + rng.below(200)][case % 2];
        let pw = Geometry::pointwise(g.n, cin, g.h, g.w);
        let x = rng.uniforms(-1.0, 1.0, g.n * cin * g.h * g.w);
        let w1 = rng.uniforms(-0.2, 0.2, g.c * cin);
        let b1 = rng.uniforms(-1.0, 1.0, g.c);
        let w2 = rng.uniforms(-1.0, 1.0, g.c * g.taps());
        let b2 = rng.uniforms(-1.0, 1.0, g.c);
        let c1 = (rng.below(2) == 1).then(|| Clip::new(0.0, 0.6));
        let c2 = (rng.below(2) == 1).then(|| Clip::new(0.0, 0.6));
        let mid = pointwise_reference(&pw, g.c, &x, &w1, &b1, c1);
        let want = reference(&g, &mid, &w2, &b2, c2);
        for isa in Isa::available() {
            let Ok(mut conv) = FastConv::for_isa(pw, g.c, 4, &w1, &b1, isa) else {
                panic!("{pw:?}")
            };
            conv.clip = c1;
            let dw = FastDepthwise::new(g, 4, c2).unwrap();
            // Off AVX-512 the convolution holds block weights: no fused op to build.
            let Some(op) = FusedLanesConvDepthwise::on_any_plane(conv, dw, &w2, &b2) else {
                assert_ne!(isa, Isa::Avx512, "{g:?}");
                continue;
            };
            fused_cases += 1;
            for run_isa in Isa::available() {
                let mut got = vec![f32::NAN; want.len()];
                fused_lanes(&op, &x, run_isa, &mut got).unwrap();
                check(&got, &want, 2e-5, &format!("{run_isa:?} {g:?} cin {cin}"));
            }
        }
    }
    if Isa::detect() == Isa::Avx512 {
        assert!(fused_cases >= 60);
    }
}

/// The op with a projection fused (and a residual when the shapes allow one) against the
/// definitions chained, on every instruction set: random planes up to 48x48 (several chunks
/// of pixels), projections to channel counts that leave partial tiles and half-empty
/// vectors, input counts past one pass, a clamp or none.
#[test]
fn fused_lanes_projection_matches_definition_on_random_shapes() {
    let mut rng = Rng::new(0x9e0_1ec7);
    let (mut fused_cases, mut residual_cases) = (0, 0);
    for case in 0..48 {
        let g = lanes_geometry(&mut rng, case % 2 == 1);
        let same_plane = g.oh() == g.h && g.ow() == g.w;
        let cin = 1 + rng.below(60);
        let residual = same_plane && rng.below(3) > 0;
        let cout = if residual { cin } else { 1 + rng.below(100) };
        let pw = Geometry::pointwise(g.n, cin, g.h, g.w);
        let project_geo = Geometry::pointwise(g.n, g.c, g.oh(), g.ow());
        let x = rng.uniforms(-1.0, 1.0, g.n * cin * g.h * g.w);
        let w1 = rng.uniforms(-0.2, 0.2, g.c * cin);
        let b1 = rng.uniforms(-1.0, 1.0, g.c);
        let w2 = rng.uniforms(-1.0, 1.0, g.c * g.taps());
        let b2 = rng.uniforms(-1.0, 1.0, g.c);
        let w3 = rng.uniforms(-0.2, 0.2, cout * g.c);
        let b3 = rng.uniforms(-1.0, 1.0, cout);
        let c3 = (rng.below(3) == 0).then(|| Clip::new(-0.5, 0.5));
        let six = Some(Clip::new(0.0, 6.0));
        let mid = pointwise_reference(&pw, g.c, &x, &w1, &b1, six);
        let dw_out = reference(&g, &mid, &w2, &b2, six);
        let mut want = pointwise_reference(&project_geo, cout, &dw_out, &w3, &b3, c3);
        if residual {
            want.iter_mut().zip(&x).for_each(|(w, x)| *w += x);
        }
        for isa in Isa::available() {
            let mut conv = FastConv::for_isa(pw, g.c, 4, &w1, &b1, isa).unwrap();
            conv.clip = six;
            let dw = FastDepthwise::new(g, 4, six).unwrap();
            let Some(op) = FusedLanesConvDepthwise::on_any_plane(conv, dw, &w2, &b2) else {
                assert_ne!(isa, Isa::Avx512, "{g:?}");
                continue;
            };
            let mut project = FastConv::for_isa(project_geo, cout, 4, &w3, &b3, isa).unwrap();
            project.clip = c3;
            let op = op.with_projection(project, residual).expect("a projection");
            assert_eq!(op.output_shape().iter().product::<usize>(), want.len());
            fused_cases += 1;
            residual_cases += residual as usize;
            for run_isa in Isa::available() {
                let mut got = vec![f32::NAN; want.len()];
                fused_lanes(&op, &x, run_isa, &mut got).unwrap();
                let what = format!(
                    "{run_isa:?} {g:?} {cin}->{}->{cout} residual {residual}",
                    g.c
                );
                check(&got, &want, 2e-5, &what);
            }
        }
    }
    if Isa::detect() == Isa::Avx512 {
        assert!(
            fused_cases >= 48 && residual_cases >= 8,
            "{fused_cases} {residual_cases}"
        );
    }
}

/// A projection is refused where it does not read the depthwise output as a pointwise
/// convolution, or a residual where the shapes differ.
#[test]
fn projection_needs_a_pointwise_conv_of_the_depthwise_output() {
    if Isa::detect() != Isa::Avx512 {
        return;
    }
    let g = Geometry::square(1, 48, 14, 14, 3, 2, 1);
    let (cin, cout) = (16, 24);
    let pw = Geometry::pointwise(1, cin, 14, 14);
    let conv = FastConv::new(pw, g.c, 4, &vec![0.1; g.c * cin], &vec![0.0; g.c]).unwrap();
    let dw = FastDepthwise::new(g, 4, None).unwrap();
    let op = FusedLanesConvDepthwise::on_any_plane(conv, dw, &vec![0.1; g.c * 9], &vec![0.0; g.c])
        .unwrap();
    let project = |geo: Geometry| {
        FastConv::new(
            geo,
            cout,
            4,
            &vec![0.1; cout * geo.c * geo.taps()],
            &vec![0.0; cout],
        )
        .unwrap()
    };
    let on_output = Geometry::pointwise(1, g.c, g.oh(), g.ow());
    assert!(op
        .clone()
        .with_projection(project(on_output), false)
        .is_some());
    // The stride halves the plane: the input cannot be added to the output.
    assert!(op
        .clone()
        .with_projection(project(on_output), true)
        .is_none());
    // A plane or channel count other than the depthwise output's, a 3x3 kernel.
    let wrong_plane = Geometry::pointwise(1, g.c, 14, 14);
    assert!(op
        .clone()
        .with_projection(project(wrong_plane), false)
        .is_none());
    let wrong_channels = Geometry::pointwise(1, g.c + 1, g.oh(), g.ow());
    assert!(op
        .clone()
        .with_projection(project(wrong_channels), false)
        .is_none());
    let three = Geometry::square(1, g.c, g.oh(), g.ow(), 3, 1, 1);
    assert!(op.with_projection(project(three), false).is_none());
}

/// `x -> 1x1 conv -> ReLU6 -> depthwise g -> ReLU6` as tract's `Conv` ops:
/// the engine's plan (which must fuse the pair on AVX-512) against tract's.
/// With `project`, then a 1x1 projection to that many channels, and the residual `Add` of `x`
/// where the shapes match: the rewrite must fold both into the fused op.
fn pair_vs_tract(rng: &mut Rng, cin: usize, g: Geometry, project: Option<usize>) {
    let conv = |ci: usize, co: usize, group: usize, geo: &Geometry| Conv {
        pool_spec: pool_spec(geo, DataFormat::NCHW, ci, co),
        kernel_fmt: KernelFormat::OIHW,
        group,
        q_params: None,
    };
    let pw = Geometry::pointwise(g.n, cin, g.h, g.w);
    let shape = [g.n, cin, g.h, g.w];
    let x = rng.uniforms(-1.0, 1.0, shape.iter().product());
    let mut model = TypedModel::default();
    let src = model.add_source("x", f32::fact(shape)).unwrap();
    let mut konst = |name: &str, shape: &[usize], lo: f32, hi: f32| {
        let values = rng.uniforms(lo, hi, shape.iter().product());
        model
            .add_const(name, Tensor::from_shape(shape, &values).unwrap())
            .unwrap()
    };
    let k1 = konst("k1", &[g.c, cin, 1, 1], -0.3, 0.3);
    let b1 = konst("b1", &[g.c], -1.0, 1.0);
    let k2 = konst("k2", &[g.c, 1, g.kh, g.kw], -1.0, 1.0);
    let b2 = konst("b2", &[g.c], -1.0, 1.0);
    let projection = project.map(|cout| {
        let k3 = konst("k3", &[cout, g.c, 1, 1], -0.3, 0.3);
        (cout, k3, konst("b3", &[cout], -1.0, 1.0))
    });
    let y = model
        .wire_node("expand", conv(cin, g.c, 1, &pw), &[src, k1, b1])
        .unwrap()[0];
    let y = relu6(&mut model, "r1", y);
    let y = model
        .wire_node("dw", conv(g.c, g.c, g.c, &g), &[y, k2, b2])
        .unwrap()[0];
    let mut y = relu6(&mut model, "r2", y);
    let residual = project == Some(cin) && g.oh() == g.h && g.ow() == g.w;
    if let Some((cout, k3, b3)) = projection {
        let on = Geometry::pointwise(g.n, g.c, g.oh(), g.ow());
        y = model
            .wire_node("project", conv(g.c, cout, 1, &on), &[y, k3, b3])
            .unwrap()[0];
        if residual {
            y = model
                .wire_node("add", tract_onnx::tract_core::ops::math::add(), &[y, src])
                .unwrap()[0];
        }
    }
    model.select_output_outlets(&[y]).unwrap();
    let mut ours = model.clone();
    rewrite_typed(&mut ours).unwrap();
    let mut ours = ours.into_optimized().unwrap();
    let report = rewrite_optimized(&mut ours).unwrap();
    let names: Vec<_> = ours.nodes.iter().map(|n| n.op().name()).collect();
    let clamp_left = names.iter().any(|n| n.contains("Max"));
    if Isa::detect() == Isa::Avx512 && !clamp_left {
        assert_eq!(report.fused_lanes_pairs, 1, "{g:?}: {report:?} {names:?}");
        let projections = project.is_some() as usize;
        assert_eq!(
            report.fused_projections, projections,
            "{report:?} {names:?}"
        );
        assert_eq!(
            report.fused_residuals, residual as usize,
            "{report:?} {names:?}"
        );
        assert_eq!(ours.nodes.len(), 2, "{names:?}");
    }
    let input = Tensor::from_shape(&shape, &x).unwrap();
    let run = |m: TypedModel| run_plan(m, &input);
    let want = run(model.into_optimized().unwrap());
    check(&run(ours), &want, 1e-4, &format!("plan {g:?} cin {cin}"));
}

#[test]
fn fused_lanes_pair_matches_tract() {
    let mut rng = Rng::new(0x1e_0f05e);
    // EfficientNet-Lite0's 14x14 and 7x7 blocks (fewer channels), then odd ones.
    let square = |n, c, size, k, s, before, after| {
        Geometry::square(n, c, size, size, k, s, before).with_pad_after(after)
    };
    pair_vs_tract(&mut rng, 80, square(1, 96, 14, 3, 1, 1, 1), None);
    pair_vs_tract(&mut rng, 112, square(1, 136, 14, 5, 2, 1, 2), None);
    pair_vs_tract(&mut rng, 192, square(1, 200, 7, 5, 1, 2, 2), None);
    pair_vs_tract(&mut rng, 33, square(2, 45, 9, 3, 2, 0, 1), None);
    pair_vs_tract(&mut rng, 7, square(1, 17, 5, 5, 1, 2, 2), None);
    // Past 16x16, where it gains: strided (several bands, rows parked in place), 28x28 stride 1.
    pair_vs_tract(&mut rng, 16, square(1, 40, 34, 3, 2, 0, 1), None);
    pair_vs_tract(&mut rng, 24, square(1, 48, 28, 5, 1, 2, 2), None);
}

/// Whole inverted-residual blocks: the projection after the pair, and the residual `Add`
/// where the block keeps its shape, fold into the one fused op.
#[test]
fn fused_lanes_block_with_projection_matches_tract() {
    let mut rng = Rng::new(0xb10c_f05e);
    let square = |n, c, size, k, s, before, after| {
        Geometry::square(n, c, size, size, k, s, before).with_pad_after(after)
    };
    // Lite0-like: a residual 14x14 block, a strided one, a 7x7 one and a 28x28 one.
    pair_vs_tract(&mut rng, 40, square(1, 240, 14, 3, 1, 1, 1), Some(40));
    pair_vs_tract(&mut rng, 40, square(1, 240, 14, 5, 2, 1, 2), Some(80));
    pair_vs_tract(&mut rng, 56, square(1, 200, 7, 5, 1, 2, 2), Some(56));
    pair_vs_tract(&mut rng, 24, square(1, 144, 28, 5, 1, 2, 2), Some(24));
    // Odd: a batch of two, a projection to a half-empty tile without a residual.
    pair_vs_tract(&mut rng, 13, square(2, 45, 9, 3, 1, 1, 1), Some(13));
    pair_vs_tract(&mut rng, 13, square(1, 45, 9, 3, 1, 1, 1), Some(21));
}
