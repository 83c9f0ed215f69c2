//! The engine with our ops against tract's own graph, on the real models.

use tagger::engine::ops::{FastConv, FastDepthwise, FastMaxPool};
use tagger::engine::rewrite::{rewrite_optimized, rewrite_typed};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::Op;

fn typed(name: &str, shape: &[usize]) -> TypedModel {
    let path = format!("{}/models/{name}/model.onnx", env!("CARGO_MANIFEST_DIR"));
    tract_onnx::onnx()
        .model_for_path(path)
        .unwrap()
        .with_input_fact(0, f32::fact(shape).into())
        .unwrap()
        .into_typed()
        .unwrap()
}

fn input(shape: &[usize]) -> Tensor {
    let mut s = 0x2545f4914f6cdd1du64;
    let data: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect();
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

/// Our graph (the engine's steps) against tract's: logits, and how many nodes run our ops.
fn same_logits(name: &str, shape: &[usize]) -> (usize, usize, usize) {
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
        count::<FastDepthwise>(&ours),
        count::<FastMaxPool>(&ours),
    )
}

#[test]
fn efficientnet_lite0_runs_every_convolution_on_our_ops() {
    // Stem, 15 expand, 16 project and the head convolution; 16 depthwise.
    assert_eq!(
        same_logits("efficientnet_lite0", &[1, 3, 224, 224]),
        (33, 16, 0)
    );
}

#[test]
fn efficientnet_lite0_batch_2_stays_correct() {
    assert_eq!(
        same_logits("efficientnet_lite0", &[2, 3, 224, 224]),
        (33, 16, 0)
    );
}

#[test]
fn resnet18_runs_its_convolutions_and_max_pool_on_our_ops() {
    assert_eq!(same_logits("resnet18", &[1, 3, 224, 224]), (20, 0, 1));
    assert_eq!(same_logits("resnet18", &[2, 3, 224, 224]), (20, 0, 1));
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
