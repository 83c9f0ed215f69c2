//! The engine with our ops against tract's own graph, on the real models.

mod common;

use common::rng::Rng;
use tagger::engine::ops::{
    FastConv, FastDepthwise, FastMaxPool, FastWinograd, FusedConvDepthwise,
    FusedLanesConvDepthwise, Isa, PooledConv,
};
use tagger::engine::rewrite::{rewrite_optimized, rewrite_typed};
use tagger::models::{embedded_manifest, embedded_onnx};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::Op;

/// The embedded model `name` (the bytes the binary carries), typed for `shape`.
fn typed(name: &str, shape: &[usize]) -> TypedModel {
    let manifest = embedded_manifest(name.parse().unwrap()).unwrap();
    let mut onnx = embedded_onnx(&manifest).unwrap();
    tract_onnx::onnx()
        .model_for_read(&mut onnx)
        .unwrap()
        .with_input_fact(0, f32::fact(shape).into())
        .unwrap()
        .into_typed()
        .unwrap()
}

fn input(shape: &[usize]) -> Tensor {
    let data = Rng::new(0x2545f4914f6cdd1d).uniforms(-2.0, 2.0, shape.iter().product());
    Tensor::from_shape(shape, &data).unwrap()
}

fn run(model: TypedModel, x: &Tensor) -> Vec<f32> {
    let plan = model.into_runnable().unwrap();
    let out = plan.run(tvec!(x.clone().into_tvalue())).unwrap();
    out[0]
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

fn count<O: Op>(model: &TypedModel) -> usize {
    model.nodes.iter().filter(|n| n.op_is::<O>()).count()
}

/// How many nodes run our ops: direct dense, Winograd, depthwise, max-pool, fused dense +
/// depthwise pairs on planes and channels in lanes, of the latter those with the block's
/// projection fused in and with its residual `Add` too, and 1x1 convolutions fused with the
/// global average pool's sum.
type Counts = (
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
);

/// Our graph (the engine's steps) against tract's: logits, and the [`Counts`].
fn same_logits(name: &str, shape: &[usize]) -> Counts {
    let typed = typed(name, shape);
    let plain = typed.clone().into_optimized().unwrap();
    let mut ours = typed;
    let report = rewrite_typed(&mut ours).unwrap();
    assert!(report.skipped.is_empty(), "{report:?}");
    let mut ours = ours.into_optimized().unwrap();
    rewrite_optimized(&mut ours).unwrap();
    let x = input(shape);
    let (want, got) = (run(plain, &x), run(ours.clone(), &x));
    let diff = want
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(diff < 1e-4, "{name} {shape:?}: max |diff| {diff}");
    (
        count::<FastConv>(&ours),
        count::<FastWinograd>(&ours),
        count::<FastDepthwise>(&ours),
        count::<FastMaxPool>(&ours),
        count::<FusedConvDepthwise>(&ours),
        count::<FusedLanesConvDepthwise>(&ours),
        projections(&ours, false),
        projections(&ours, true),
        count::<PooledConv>(&ours),
    )
}

/// Fused channels-in-lanes nodes holding a projection (`residual`: one with its skip
/// connection).
fn projections(model: &TypedModel, residual: bool) -> usize {
    model
        .nodes
        .iter()
        .filter_map(|n| n.op_as::<FusedLanesConvDepthwise>()?.project.as_ref())
        .filter(|p| p.residual || !residual)
        .count()
}

/// EfficientNet-Lite0's op counts: the expand and depthwise convolutions of the five blocks on
/// planes past 16x16 (112x112 to 28x28) run as fused pairs; on AVX-512 (where 1x1 convolutions
/// can run channels in lanes) so do the ten on 14x14 and 7x7, and all the large ones but the
/// stride-1 pair on 56x56 run channels in lanes too, each with its block's projection and, in
/// the 8 blocks of those 14 that keep their shape, the residual `Add`: 3 dense (stem, the first
/// and third blocks' projections), 1 depthwise (the first block has no expansion), 1 + 14
/// pairs, and the head convolution with the pool's sum. Elsewhere 28 dense, 11 depthwise and 5
/// pairs.
fn lite0_counts() -> Counts {
    if Isa::detect() == Isa::Avx512 {
        (3, 0, 1, 0, 1, 14, 14, 8, 1)
    } else {
        (28, 0, 11, 0, 5, 0, 0, 0, 0)
    }
}

#[test]
fn efficientnet_lite0_runs_every_convolution_on_our_ops() {
    // Stem, 15 expand, 16 project and the head convolution; 16 depthwise.
    assert_eq!(
        same_logits("efficientnet_lite0", &[1, 3, 224, 224]),
        lite0_counts()
    );
}

#[test]
fn efficientnet_lite0_batch_2_stays_correct() {
    assert_eq!(
        same_logits("efficientnet_lite0", &[2, 3, 224, 224]),
        lite0_counts()
    );
}

#[test]
fn resnet18_runs_its_convolutions_and_max_pool_on_our_ops() {
    // 13 of the 20 convolutions are 3x3 stride 1 with 64 channels or more: Winograd; the stem,
    // three 3x3 stride-2 and three 1x1 downsampling convolutions stay direct.
    assert_eq!(
        same_logits("resnet18", &[1, 3, 224, 224]),
        (7, 13, 0, 1, 0, 0, 0, 0, 0)
    );
    assert_eq!(
        same_logits("resnet18", &[2, 3, 224, 224]),
        (7, 13, 0, 1, 0, 0, 0, 0, 0)
    );
}

#[test]
fn our_ops_give_the_same_logits_on_several_threads() {
    for name in ["efficientnet_lite0", "resnet18"] {
        let shape = [1, 3, 224, 224];
        let mut model = typed(name, &shape);
        rewrite_typed(&mut model).unwrap();
        let mut model = model.into_optimized().unwrap();
        rewrite_optimized(&mut model).unwrap();
        let x = input(&shape);
        let single = run(model.clone(), &x);
        let options = RunOptions {
            executor: Some(tract_linalg::multithread::Executor::multithread(3)),
            ..Default::default()
        };
        let plan = model.into_runnable_with_options(&options).unwrap();
        let out = plan.run(tvec!(x.clone().into_tvalue())).unwrap();
        let multi: Vec<f32> = out[0]
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect();
        let diff = single
            .iter()
            .zip(&multi)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-5, "{name}: {diff}");
    }
}
