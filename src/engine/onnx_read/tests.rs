use tract_onnx::pb::{
    tensor_shape_proto, type_proto, GraphProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

use super::strip::{write_len_field, MIN_STRIPPED_BYTES};
use super::*;
use crate::models::{embedded_manifest, embedded_onnx, ModelName};

/// tract's own reading of the whole file.
fn tract_reading(onnx: &[u8]) -> InferenceModel {
    tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(onnx))
        .unwrap()
}

/// The same graph: nodes (name, op, inputs, output facts) in the same order, and equal
/// constants, value for value.
fn assert_same_model(ours: &InferenceModel, theirs: &InferenceModel) {
    assert_eq!(ours.nodes().len(), theirs.nodes().len());
    for (a, b) in ours.nodes().iter().zip(theirs.nodes()) {
        assert_eq!(a.name, b.name);
        assert_eq!(a.inputs, b.inputs, "{}", a.name);
        assert_eq!(a.op.name(), b.op.name(), "{}", a.name);
        match (a.op_as::<Const>(), b.op_as::<Const>()) {
            (Some(x), Some(y)) => assert_eq!(x.val(), y.val(), "{}", a.name),
            (None, None) => assert_eq!(format!("{:?}", a.op), format!("{:?}", b.op)),
            _ => panic!("{}: one is a constant, the other not", a.name),
        }
        let facts = |n: &tract_onnx::tract_hir::infer::InferenceNode| {
            n.outputs
                .iter()
                .map(|o| format!("{:?}", o.fact))
                .collect::<Vec<_>>()
        };
        assert_eq!(facts(a), facts(b), "{}", a.name);
    }
    assert_eq!(ours.inputs, theirs.inputs);
    assert_eq!(ours.outputs, theirs.outputs);
}

fn embedded(name: ModelName) -> &'static [u8] {
    embedded_onnx(&embedded_manifest(name).unwrap()).unwrap()
}

#[test]
fn stripped_protobuf_plus_the_payloads_is_the_original() {
    for name in ModelName::ALL {
        let onnx = embedded(name);
        let stripped = strip_weights(onnx).unwrap().unwrap();
        assert!(
            stripped.proto.len() < 1 << 20,
            "{name}: {}",
            stripped.proto.len()
        );
        let mut restored = ModelProto::decode(stripped.proto.as_slice()).unwrap();
        let graph = restored.graph.as_mut().unwrap();
        for weight in &stripped.weights {
            let init = &mut graph.initializer[weight.initializer];
            assert!(init.raw_data.is_empty());
            init.raw_data = onnx[weight.bytes.clone()].to_vec();
        }
        assert!(
            restored == ModelProto::decode(onnx).unwrap(),
            "{name}: restored protobuf differs"
        );
    }
}

#[test]
fn embedded_models_read_in_place_equal_tracts_reading() {
    for name in ModelName::ALL {
        let onnx = embedded(name);
        let read = read(onnx).unwrap();
        if name != ModelName::Digits {
            // Every convolution's kernel at least.
            assert!(
                read.weights_in_place >= 18,
                "{name}: {}",
                read.weights_in_place
            );
        }
        assert_same_model(&read.model, &tract_reading(onnx));
    }
}

/// An ONNX model `y = x + w` with `w` an f32 initializer of `len` values `0, 1, 2, ...`, and
/// extra initializers.
fn add_model(len: usize, extra: Vec<TensorProto>) -> ModelProto {
    let dim = |d: i64| tensor_shape_proto::Dimension {
        value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
        ..Default::default()
    };
    let value = |name: &str| ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: 1,
                shape: Some(TensorShapeProto {
                    dim: vec![dim(1), dim(len as i64)],
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let weights: Vec<u8> = (0..len).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let mut initializer = vec![TensorProto {
        name: "w".into(),
        dims: vec![1, len as i64],
        data_type: 1,
        raw_data: weights,
        ..Default::default()
    }];
    initializer.extend(extra);
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(GraphProto {
            name: "add".into(),
            node: vec![NodeProto {
                op_type: "Add".into(),
                name: "add".into(),
                input: vec!["x".into(), "w".into()],
                output: vec!["y".into()],
                ..Default::default()
            }],
            initializer,
            input: vec![value("x")],
            output: vec![value("y")],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn run_add(model: InferenceModel, len: usize) -> Vec<f32> {
    let plan = model.into_optimized().unwrap().into_runnable().unwrap();
    let x = Tensor::from_shape(&[1, len], &vec![0.5f32; len]).unwrap();
    let y = plan.run(tvec!(x.into())).unwrap();
    y[0].to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

#[test]
fn a_weight_read_in_place_has_its_values() {
    let len = 20_000;
    let onnx = add_model(len, vec![]).encode_to_vec();
    let read = read(&onnx).unwrap();
    assert_eq!(read.weights_in_place, 1);
    assert_same_model(&read.model, &tract_reading(&onnx));
    let y = run_add(read.model, len);
    assert!(y.iter().enumerate().all(|(i, &v)| v == i as f32 + 0.5));
}

#[test]
fn small_or_non_float_initializers_stay_in_the_protobuf() {
    let small = add_model(1000, vec![]).encode_to_vec();
    assert!(strip_weights(&small).unwrap().unwrap().weights.is_empty());
    assert_eq!(read(&small).unwrap().weights_in_place, 0);
    let ints = TensorProto {
        name: "unused_ints".into(),
        dims: vec![100_000],
        data_type: 6, // INT32
        raw_data: vec![0; 400_000],
        ..Default::default()
    };
    let onnx = add_model(20_000, vec![ints]).encode_to_vec();
    let stripped = strip_weights(&onnx).unwrap().unwrap();
    assert_eq!(stripped.weights.len(), 1);
    assert_eq!(stripped.weights[0].initializer, 0);
}

#[test]
fn a_placeholder_tract_would_merge_falls_back_to_tracts_reading() {
    // An empty initializer of the first placeholder's shape: tract's parser would merge the
    // two constants, so the weights cannot be read in place.
    let twin = TensorProto {
        name: "empty".into(),
        dims: vec![0, 1],
        data_type: 1,
        ..Default::default()
    };
    let len = 20_000;
    let onnx = add_model(len, vec![twin]).encode_to_vec();
    let read = read(&onnx).unwrap();
    assert_eq!(read.weights_in_place, 0);
    assert_same_model(&read.model, &tract_reading(&onnx));
    let y = run_add(read.model, len);
    assert!(y.iter().enumerate().all(|(i, &v)| v == i as f32 + 0.5));
}

#[test]
fn layouts_it_does_not_handle_are_left_to_tract() {
    let onnx = add_model(20_000, vec![]).encode_to_vec();
    // A second `graph` field (protobuf would merge the two).
    let mut twice = onnx.clone();
    let graph = add_model(10, vec![]).graph.unwrap().encode_to_vec();
    write_len_field(&mut twice, 7, &graph);
    assert_eq!(strip_weights(&twice), Ok(None));
    // Truncated.
    assert!(strip_weights(&onnx[..onnx.len() - 7]).is_err());
    assert!(read(&onnx[..onnx.len() - 7]).is_err());
}

#[test]
fn the_structure_decodes_without_the_weights() {
    for name in ModelName::ALL {
        let onnx = embedded(name);
        let mut whole = ModelProto::decode(onnx).unwrap();
        let light = decode_without_weights(onnx).unwrap();
        for init in &mut whole.graph.as_mut().unwrap().initializer {
            if init.raw_data.len() >= MIN_STRIPPED_BYTES && init.data_type == 1 {
                init.raw_data.clear();
            }
        }
        assert!(light == whole, "{name}");
    }
    assert!(decode_without_weights(b"\xff\xff").is_err());
}

#[test]
fn equal_weights_are_left_to_tract_which_shares_them() {
    let len = 20_000;
    let mut twin = add_model(len, vec![]).graph.unwrap().initializer.remove(0);
    twin.name = "w_again".into();
    let onnx = add_model(len, vec![twin]).encode_to_vec();
    assert_eq!(strip_weights(&onnx).unwrap().unwrap().weights.len(), 2);
    let read = read(&onnx).unwrap();
    assert_eq!(read.weights_in_place, 0);
    assert_same_model(&read.model, &tract_reading(&onnx));
}
