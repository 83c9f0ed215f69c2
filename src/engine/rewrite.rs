//! The graph passes that put the engine's ops ([`super::ops`]) into a tract model.
//!
//! [`rewrite_typed`] runs on the model `into_typed()` returns, before tract declutters it (its
//! declutter turns 1x1 convolutions into `EinSum` + `Add`, its optimiser the rest into im2col /
//! matmul or its scalar `DepthWiseConv`): every f32 `Conv` becomes a [`FastConv`] (group 1; a
//! [`FastWinograd`] for the 3x3 stride-1 ones [`winograd_tile`] picks) or a [`FastDepthwise`]
//! (one group per channel), with a zero `Pad` in front of it folded into its padding. The
//! geometry is read from tract's public `Conv` (`pool_spec`, `group`,
//! `kernel_fmt`) and checked against the node's facts, so a tract upgrade that changes them
//! fails the engine tests instead of silently leaving convolutions to tract.
//!
//! [`rewrite_optimized`] runs after `into_optimized()`: `OptMaxPool` nodes become [`FastMaxPool`],
//! and a ReLU6 (`OptBinChain(Max+Min)` against two scalar constants) or ReLU (`OptMaxByScalar`)
//! that is the only consumer of one of our convolutions is folded into it as a clamp (tract only
//! forms those chains while optimising); a residual `Add` (with the ReLU tract chains after it)
//! that is the only consumer of a [`FastWinograd`] is folded into that op's output transform; then
//! a [`FastDepthwise`] fed by a 1x1 [`FastConv`] becomes one [`FusedLanesConvDepthwise`] where that
//! gains (AVX-512, constant depthwise weights), else one [`FusedConvDepthwise`]; a 1x1 [`FastConv`]
//! after a [`FusedLanesConvDepthwise`] (the block's projection), with the residual `Add` after it,
//! is folded into that op too, and a small-plane 1x1 [`FastConv`] summed over its plane by a
//! `Reduce<Sum>` (a global average pool) becomes one [`PooledConv`]. Everything else stays with
//! tract.

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, OptMaxPool};
use tract_onnx::tract_core::ops::nn::DataFormat;

use super::ops::winograd::winograd_fits;
use super::ops::{
    supported_taps, Clip, FastConv, FastDepthwise, FastMaxPool, FastWinograd, FusedConvDepthwise,
    FusedLanesConvDepthwise, Geometry, PooledConv, Tile,
};

#[cfg(test)]
mod tests;

/// What [`rewrite_typed`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypedReport {
    /// Group-1 `Conv` nodes now running [`FastConv`].
    pub dense: usize,
    /// Group-1 `Conv` nodes now running [`FastWinograd`].
    pub winograd: usize,
    /// Depthwise `Conv` nodes now running [`FastDepthwise`].
    pub depthwise: usize,
    /// Zero `Pad` nodes folded into them.
    pub folded_pads: usize,
    /// `Conv` nodes left to tract, with the reason.
    pub skipped: Vec<(String, String)>,
}

/// What [`rewrite_optimized`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OptimizedReport {
    /// ReLU / ReLU6 nodes folded into a [`FastConv`], [`FastWinograd`] or [`FastDepthwise`].
    pub fused_clips: usize,
    /// `OptMaxPool` nodes now running [`FastMaxPool`].
    pub maxpools: usize,
    /// [`FastConv`] + [`FastDepthwise`] pairs now running as one [`FusedConvDepthwise`].
    pub fused_pairs: usize,
    /// [`FastConv`] + [`FastDepthwise`] pairs now running channels in lanes as one
    /// [`FusedLanesConvDepthwise`].
    pub fused_lanes_pairs: usize,
    /// 1x1 [`FastConv`] projections fused into the [`FusedLanesConvDepthwise`] before them.
    pub fused_projections: usize,
    /// Of those, the ones whose residual `Add` (of the block's input) came along.
    pub fused_residuals: usize,
    /// Small-plane 1x1 [`FastConv`]s and the `Reduce<Sum>` over their plane, now one
    /// [`PooledConv`].
    pub pooled: usize,
    /// Residual `Add`s (and the ReLU after them) folded into the [`FastWinograd`] before them.
    pub winograd_residuals: usize,
}

/// Which of the engine's ops [`rewrite_typed_with`] may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewriteOptions {
    /// Run the 3x3 stride-1 convolutions that gain from it on [`FastWinograd`]
    /// ([`winograd_tile`]).
    pub winograd: bool,
}

impl Default for RewriteOptions {
    fn default() -> Self {
        RewriteOptions { winograd: true }
    }
}

/// [`rewrite_typed_with`] the default options (Winograd where it gains).
pub fn rewrite_typed(model: &mut TypedModel) -> TractResult<TypedReport> {
    rewrite_typed_with(model, &RewriteOptions::default())
}

/// The Winograd tile for a dense convolution, or `None` where the direct [`FastConv`] is as
/// fast. Measured on ResNet18 in the whole model (`examples/engine_bench.rs`, AVX-512, thread
/// CPU time): F(4x4) on 56x56 and 28x28; F(2x2) on 14x14 (1 ms faster over the model than
/// F(4x4), whose 36 matrices stream 2.25x the weights of F(2x2)'s 16 from memory, and
/// fewer tiles fill fewer vectors) and on 7x7 (2.5-3 ms faster than the direct convolution;
/// F(4x4) there pads 7 outputs to 8). Below 64 channels each way the direct convolution stays
/// (not measured: the transforms cost the same per tile while the products shrink).
pub fn winograd_tile(geo: &Geometry, cout: usize) -> Option<Tile> {
    if !winograd_fits(geo) || geo.c < 64 || cout < 64 {
        return None;
    }
    let (oh, ow) = (geo.oh(), geo.ow());
    if oh.min(ow) >= 28 {
        Some(Tile::F4)
    } else if oh.min(ow) >= 6 {
        Some(Tile::F2)
    } else {
        None
    }
}

/// Replaces the f32 `Conv` nodes of a typed model that [`FastConv`] / [`FastWinograd`] (group
/// 1, constant weights and bias) or [`FastDepthwise`] (one group per channel, 9 or 25 taps)
/// support. Call on the model `into_typed()` returns, before any decluttering.
pub fn rewrite_typed_with(
    model: &mut TypedModel,
    options: &RewriteOptions,
) -> TractResult<TypedReport> {
    let mut report = TypedReport::default();
    let candidates: Vec<usize> = model
        .nodes
        .iter()
        .filter(|n| n.op_is::<Conv>())
        .map(|n| n.id)
        .collect();
    for id in candidates {
        let node = model.node(id);
        let conv = node.op_as::<Conv>().unwrap();
        let result = if conv.group == 1 {
            dense_for_node(model, node, options)
        } else {
            depthwise_for_node(model, node).map(|(op, bias)| Replacement::Depthwise(op, bias))
        };
        let replacement = match result {
            Ok(r) => r,
            Err(e) => {
                report.skipped.push((node.name.clone(), format!("{e:#}")));
                continue;
            }
        };
        let mut input = node.inputs[0];
        let folded = foldable_pad(model, input);
        let mut patch = TypedModelPatch::default();
        let wire = match replacement {
            Replacement::Dense(mut op) => {
                if let Some((from, pads)) = folded {
                    op.geo = with_pads(op.geo, pads);
                    input = from;
                }
                let tap = patch.tap_model(model, input)?;
                report.dense += 1;
                patch.wire_node(&node.name, op, &[tap])?
            }
            Replacement::Winograd(mut op) => {
                if let Some((from, pads)) = folded {
                    op.geo = with_pads(op.geo, pads);
                    input = from;
                }
                let tap = patch.tap_model(model, input)?;
                report.winograd += 1;
                patch.wire_node(&node.name, op, &[tap])?
            }
            Replacement::Depthwise(mut op, bias) => {
                if let Some((from, pads)) = folded {
                    op.geo = with_pads(op.geo, pads);
                    input = from;
                }
                let x = patch.tap_model(model, input)?;
                let kernel = patch.tap_model(model, node.inputs[1])?;
                let bias = match bias {
                    Some(values) => patch.add_const(format!("{}.bias", node.name), values)?,
                    None => patch.tap_model(model, node.inputs[2])?,
                };
                report.depthwise += 1;
                patch.wire_node(&node.name, op, &[x, kernel, bias])?
            }
        };
        report.folded_pads += folded.is_some() as usize;
        patch.shunt_outside(model, OutletId::new(id, 0), wire[0])?;
        patch.obliterate(id)?;
        patch.apply(model)?;
    }
    if report.dense + report.winograd + report.depthwise > 0 {
        model.compact()?;
    }
    Ok(report)
}

/// What replaces one `Conv`: a dense op, or a depthwise op with the biases it needs as a new
/// constant (`None`: the node's own bias input has one per channel).
enum Replacement {
    Dense(FastConv),
    Winograd(FastWinograd),
    Depthwise(FastDepthwise, Option<Tensor>),
}

/// `geo` reading the input of a folded zero `Pad` (top, bottom, left, right) instead of its
/// output.
fn with_pads(mut geo: Geometry, pads: [usize; 4]) -> Geometry {
    geo.h -= pads[0] + pads[1];
    geo.w -= pads[2] + pads[3];
    geo.pad_top += pads[0];
    geo.pad_bottom += pads[1];
    geo.pad_left += pads[2];
    geo.pad_right += pads[3];
    geo
}

/// Replaces the `OptMaxPool` nodes of an optimised model that [`FastMaxPool`] supports, folds
/// into each [`FastConv`] / [`FastWinograd`] / [`FastDepthwise`] the ReLU or ReLU6 that is its
/// only consumer (into a [`FastWinograd`] also a residual `Add` and its ReLU), and fuses the
/// pairs and chains described in the module's documentation. Other nodes are left alone.
pub fn rewrite_optimized(model: &mut TypedModel) -> TractResult<OptimizedReport> {
    let mut report = OptimizedReport::default();
    let pools: Vec<usize> = model
        .nodes
        .iter()
        .filter(|n| n.op_is::<OptMaxPool>())
        .map(|n| n.id)
        .collect();
    for id in pools {
        let node = model.node(id);
        let Some(op) = maxpool_for_node(model, node)? else {
            continue;
        };
        let patch = TypedModelPatch::replace_single_op(model, node, &node.inputs, op)?;
        patch.apply(model)?;
        report.maxpools += 1;
    }
    let convs: Vec<usize> = model
        .nodes
        .iter()
        .filter(|n| {
            n.op_as::<FastConv>().is_some_and(|c| c.clip.is_none())
                || n.op_as::<FastWinograd>().is_some_and(|c| c.clip.is_none())
                || n.op_as::<FastDepthwise>().is_some_and(|c| c.clip.is_none())
        })
        .map(|n| n.id)
        .collect();
    for id in convs {
        let node = model.node(id);
        let Some((clip_id, clip)) = fusable_clip(model, node)? else {
            continue;
        };
        let op: Box<dyn TypedOp> = if let Some(conv) = node.op_as::<FastConv>() {
            let mut conv = conv.clone();
            conv.clip = Some(clip);
            Box::new(conv)
        } else if let Some(conv) = node.op_as::<FastWinograd>() {
            let mut conv = conv.clone();
            conv.clip = Some(clip);
            Box::new(conv)
        } else {
            let dw = node.op_as::<FastDepthwise>().unwrap();
            Box::new(FastDepthwise {
                clip: Some(clip),
                ..dw.clone()
            })
        };
        let (name, inputs) = (node.name.clone(), node.inputs.clone());
        replace_chain(model, &name, op, &inputs, &[id, clip_id])?;
        report.fused_clips += 1;
    }
    report.winograd_residuals = fuse_winograd_residuals(model)?;
    (report.fused_pairs, report.fused_lanes_pairs) = fuse_conv_depthwise(model)?;
    (report.fused_projections, report.fused_residuals) = fuse_projections(model)?;
    report.pooled = fuse_pooled(model)?;
    if report.maxpools
        + report.fused_clips
        + report.winograd_residuals
        + report.fused_pairs
        + report.fused_lanes_pairs
        + report.pooled
        > 0
    {
        model.compact()?;
    }
    Ok(report)
}

/// Folds into each [`FastWinograd`] without a clamp the residual `Add` that is its only
/// consumer (ResNet's shortcut: the other operand has the output's shape), with the ReLU
/// tract chained after it (`OptBinChain(Add+Max)` against a scalar constant) or without one
/// (`OptAddUnicast`); the sum then never makes a trip through memory of its own. Returns how
/// many.
fn fuse_winograd_residuals(model: &mut TypedModel) -> TractResult<usize> {
    let convs: Vec<usize> = model
        .nodes
        .iter()
        .filter(|n| {
            n.op_as::<FastWinograd>()
                .is_some_and(|c| c.clip.is_none() && !c.residual)
        })
        .map(|n| n.id)
        .collect();
    let mut fused = 0;
    for id in convs {
        let node = model.node(id);
        let Some((add_id, skip, clip)) = residual_after(model, node)? else {
            continue;
        };
        let mut op = node.op_as::<FastWinograd>().unwrap().clone();
        op.residual = true;
        op.clip = clip;
        let (name, x) = (node.name.clone(), node.inputs[0]);
        replace_chain(model, &name, op, &[x, skip], &[id, add_id])?;
        fused += 1;
    }
    Ok(fused)
}

/// The node that is the only consumer of `conv`'s output and adds to it another f32 tensor of
/// its shape, then clamps the sum from below by a scalar constant or not at all: the node, the
/// other operand, the clamp.
fn residual_after(
    model: &TypedModel,
    conv: &TypedNode,
) -> TractResult<Option<(usize, OutletId, Option<Clip>)>> {
    use tract_linalg::multithread::BShare;
    use tract_linalg::BinOp;
    use tract_onnx::tract_core::ops::binary::{OptBinChain, OptBinUnicast};
    use tract_onnx::tract_core::ops::math::Add;
    let out = OutletId::new(conv.id, 0);
    if model.outputs.contains(&out) {
        return Ok(None);
    }
    let Some(succ) = model.single_succ(conv.id)? else {
        return Ok(None);
    };
    let clip = if let Some(chain) = succ.op_as::<OptBinChain>() {
        // `max(a + b, c)`: input 0 is `a`, input `i + 1` step `i`'s operand.
        let [add, max] = &chain.steps[..] else {
            return Ok(None);
        };
        let add_then_max = add.linalg_op == BinOp::Add
            && add.share == BShare::Lockstep
            && max.linalg_op == BinOp::Max
            && max.share == BShare::PerBlock;
        let lo = succ.inputs.get(2).and_then(|&c| scalar_const(model, c));
        match lo {
            Some(lo) if add_then_max && succ.inputs.len() == 3 && !lo.is_nan() => {
                Some(Clip::new(lo, f32::INFINITY))
            }
            _ => return Ok(None),
        }
    } else if succ
        .op_as::<OptBinUnicast>()
        .is_some_and(|u| u.binop.is::<Add>() && succ.inputs.len() == 2)
    {
        None
    } else {
        return Ok(None);
    };
    let skip = match succ.inputs[..2] {
        [a, b] if a == out && b != out => b,
        [a, b] if b == out && a != out => a,
        _ => return Ok(None),
    };
    let shape = &conv.outputs[0].fact.shape;
    let skip_fact = model.outlet_fact(skip)?;
    let fits = skip_fact.datum_type == f32::datum_type()
        && skip_fact.shape == *shape
        && succ.outputs[0].fact.shape == *shape
        && succ.outputs[0].fact.datum_type == f32::datum_type();
    Ok(fits.then_some((succ.id, skip, clip)))
}

/// Replaces each [`FastDepthwise`] whose input is a [`FastConv`] with no other consumer by one
/// fused op: [`FusedConvDepthwise`] when the convolution runs by weight blocks (a plane too
/// large for the channels-in-lanes path), [`FusedLanesConvDepthwise`] when it runs channels in
/// lanes and the depthwise weights are constants; returns how many of each.
fn fuse_conv_depthwise(model: &mut TypedModel) -> TractResult<(usize, usize)> {
    let depthwise: Vec<usize> = model
        .nodes
        .iter()
        .filter(|n| n.op_is::<FastDepthwise>())
        .map(|n| n.id)
        .collect();
    let (mut fused, mut small) = (0, 0);
    for id in depthwise {
        let node = model.node(id);
        let dw = node.op_as::<FastDepthwise>().unwrap().clone();
        let producer = model.node(node.inputs[0].node);
        let Some(conv) = producer.op_as::<FastConv>() else {
            continue;
        };
        if model.outputs.contains(&node.inputs[0])
            || model.outlet_successors(node.inputs[0]).len() != 1
        {
            continue;
        }
        let (conv_id, x) = (producer.id, producer.inputs[0]);
        let (name, inputs) = (node.name.clone(), node.inputs.clone());
        let chain = [conv_id, id];
        if let Some(op) = lanes_pair(model, node, conv, &dw)? {
            replace_chain(model, &name, op, &[x], &chain)?;
            small += 1;
        } else if let Some(op) = FusedConvDepthwise::new(conv.clone(), dw) {
            replace_chain(model, &name, op, &[x, inputs[1], inputs[2]], &chain)?;
            fused += 1;
        }
    }
    Ok((fused, small))
}

/// Folds into each [`FusedLanesConvDepthwise`] the 1x1 [`FastConv`] that is its only consumer
/// (an inverted-residual block's projection), and the `Add` of the block's input to the
/// projection when that `Add` is the projection's only consumer; returns how many projections
/// and how many of those with their `Add`.
fn fuse_projections(model: &mut TypedModel) -> TractResult<(usize, usize)> {
    let fused: Vec<usize> = model
        .nodes
        .iter()
        .filter(|n| n.op_is::<FusedLanesConvDepthwise>())
        .map(|n| n.id)
        .collect();
    let (mut projections, mut residuals) = (0, 0);
    for id in fused {
        let node = model.node(id);
        let op = node.op_as::<FusedLanesConvDepthwise>().unwrap().clone();
        if model.outputs.contains(&OutletId::new(id, 0)) {
            continue;
        }
        let Some(succ) = model.single_succ(id)? else {
            continue;
        };
        let Some(conv) = succ.op_as::<FastConv>() else {
            continue;
        };
        let residual = residual_add(model, succ, node.inputs[0])?;
        let Some(op) = op.with_projection(conv.clone(), residual.is_some()) else {
            continue;
        };
        let mut chain = vec![id, succ.id];
        chain.extend(residual);
        let (name, x) = (node.name.clone(), node.inputs[0]);
        replace_chain(model, &name, op, &[x], &chain)?;
        projections += 1;
        residuals += residual.is_some() as usize;
    }
    Ok((projections, residuals))
}

/// Replaces each small-plane 1x1 [`FastConv`] whose only consumer sums its output over the
/// plane (`Reduce<Sum>` on axes 2 and 3: a global average pool's sum) by one [`PooledConv`];
/// returns how many.
fn fuse_pooled(model: &mut TypedModel) -> TractResult<usize> {
    use tract_onnx::tract_core::ops::nn::{Reduce, Reducer};
    let convs: Vec<usize> = model
        .nodes
        .iter()
        .filter(|n| n.op_is::<FastConv>())
        .map(|n| n.id)
        .collect();
    let mut pooled = 0;
    for id in convs {
        let node = model.node(id);
        if model.outputs.contains(&OutletId::new(id, 0)) {
            continue;
        }
        let Some(succ) = model.single_succ(id)? else {
            continue;
        };
        let sums_plane = succ.op_as::<Reduce>().is_some_and(|r| {
            r.reducer == Reducer::Sum && r.axes.as_slice() == [2, 3] && succ.inputs.len() == 1
        });
        let conv = node.op_as::<FastConv>().unwrap().clone();
        let Some(op) = PooledConv::new(conv).filter(|_| sums_plane) else {
            continue;
        };
        if succ.outputs[0].fact.shape.as_concrete() != Some(&op.shapes().1) {
            continue;
        }
        let (name, x, reduce_id) = (node.name.clone(), node.inputs[0], succ.id);
        replace_chain(model, &name, op, &[x], &[id, reduce_id])?;
        pooled += 1;
    }
    Ok(pooled)
}

/// Replaces the nodes of `chain` (each the only consumer of the one before; the last one's
/// output is what the rest of the model reads) by one node `name` running `op` on `inputs`.
fn replace_chain(
    model: &mut TypedModel,
    name: &str,
    op: impl Into<Box<dyn TypedOp>>,
    inputs: &[OutletId],
    chain: &[usize],
) -> TractResult<()> {
    let mut patch = TypedModelPatch::default();
    let taps = patch.taps(model, inputs)?;
    let wire = patch.wire_node(name, op, &taps)?;
    let last = *chain.last().context("an empty chain")?;
    patch.shunt_outside(model, OutletId::new(last, 0), wire[0])?;
    for &id in chain {
        patch.obliterate(id)?;
    }
    patch.apply(model)
}

/// The `Add` node that is the only consumer of `conv`'s output and adds `input` to it (same
/// shapes, no broadcasting, no clamp after it), if there is one.
fn residual_add(
    model: &TypedModel,
    conv: &TypedNode,
    input: OutletId,
) -> TractResult<Option<usize>> {
    Ok(residual_after(model, conv)?
        .filter(|&(_, skip, clip)| skip == input && clip.is_none())
        .map(|(add, _, _)| add))
}

/// The [`FusedLanesConvDepthwise`] for a 1x1 [`FastConv`] and the depthwise `node` on its
/// output, when the depthwise weights are f32 constants and the pair runs channels in lanes
/// (AVX-512).
fn lanes_pair(
    model: &TypedModel,
    node: &TypedNode,
    conv: &FastConv,
    dw: &FastDepthwise,
) -> TractResult<Option<FusedLanesConvDepthwise>> {
    let (Some(kernel), Some(bias)) = (
        const_value(model, node.inputs[1], 4),
        const_value(model, node.inputs[2], 4),
    ) else {
        return Ok(None);
    };
    if kernel.datum_type() != f32::datum_type() || bias.datum_type() != f32::datum_type() {
        return Ok(None);
    }
    let kernel = kernel.try_as_plain_ram()?.as_slice::<f32>()?;
    let bias = bias.try_as_plain_ram()?.as_slice::<f32>()?;
    Ok(FusedLanesConvDepthwise::new(
        conv.clone(),
        dw.clone(),
        kernel,
        bias,
    ))
}

/// The [`FastConv`] or [`FastWinograd`] (where [`winograd_tile`] picks one) equivalent to a
/// group-1 tract `Conv` node with constant weights, or why there is none.
fn dense_for_node(
    model: &TypedModel,
    node: &TypedNode,
    options: &RewriteOptions,
) -> TractResult<Replacement> {
    let conv = node.op_as::<Conv>().context("not a Conv")?;
    let spec = &conv.pool_spec;
    ensure!(
        conv.group == 1 && conv.q_params.is_none(),
        "grouped or quantized"
    );
    ensure!(
        conv.kernel_fmt == KernelFormat::OIHW,
        "kernel format {:?}",
        conv.kernel_fmt
    );
    ensure!(node.inputs.len() == 3, "{} inputs", node.inputs.len());
    let x = model.outlet_fact(node.inputs[0])?;
    ensure!(
        x.datum_type == f32::datum_type() && !x.is_exotic(),
        "input {x:?}"
    );
    let kernel = const_value(model, node.inputs[1], 4).context("kernel is not a constant")?;
    let bias = const_value(model, node.inputs[2], 4).context("bias is not a constant")?;
    ensure!(kernel.datum_type() == f32::datum_type() && bias.datum_type() == f32::datum_type());
    let (geo, rank, out_shape) = geometry(node, x, spec)?;
    let cout = spec.output_channels;
    ensure!(
        kernel.shape() == [cout, geo.c, geo.kh, geo.kw],
        "kernel {:?}",
        kernel.shape()
    );
    let kernel_values = kernel.try_as_plain_ram()?.as_slice::<f32>()?;
    let bias_values: Vec<f32> = match bias.len() {
        1 => vec![bias.cast_to_scalar::<f32>()?; cout],
        l if l == cout => bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec(),
        l => bail!("{l} biases for {cout} channels"),
    };
    // The tile is chosen on the node's own geometry: a zero `Pad` folded later only moves
    // padding into the op, the output plane stays.
    if let Some(tile) = winograd_tile(&geo, cout).filter(|_| options.winograd) {
        let op = FastWinograd::new(geo, cout, rank, tile, kernel_values, &bias_values)?;
        ensure!(
            op.shapes().1.as_slice() == out_shape,
            "output {out_shape:?} vs {:?}",
            op.shapes().1
        );
        return Ok(Replacement::Winograd(op));
    }
    let op = FastConv::new(geo, cout, rank, kernel_values, &bias_values)?;
    ensure!(
        op.shapes().1.as_slice() == out_shape,
        "output {out_shape:?} vs {:?}",
        op.shapes().1
    );
    Ok(Replacement::Dense(op))
}

/// The [`FastDepthwise`] equivalent to a depthwise tract `Conv` node (one group per channel,
/// as many outputs as inputs), or why there is none; with the per-channel biases when the
/// node's bias input is a single constant.
fn depthwise_for_node(
    model: &TypedModel,
    node: &TypedNode,
) -> TractResult<(FastDepthwise, Option<Tensor>)> {
    let conv = node.op_as::<Conv>().context("not a Conv")?;
    let spec = &conv.pool_spec;
    ensure!(conv.q_params.is_none(), "quantized");
    ensure!(
        conv.group == spec.input_channels && conv.group == spec.output_channels,
        "group {} for {} -> {} channels",
        conv.group,
        spec.input_channels,
        spec.output_channels
    );
    ensure!(
        conv.kernel_fmt == KernelFormat::OIHW,
        "kernel format {:?}",
        conv.kernel_fmt
    );
    ensure!(node.inputs.len() == 3, "{} inputs", node.inputs.len());
    let x = model.outlet_fact(node.inputs[0])?;
    let kernel = model.outlet_fact(node.inputs[1])?;
    let bias = model.outlet_fact(node.inputs[2])?;
    ensure!(
        x.datum_type == f32::datum_type() && !x.is_exotic(),
        "input {x:?}"
    );
    ensure!(
        kernel.datum_type == f32::datum_type() && !kernel.is_exotic(),
        "kernel {kernel:?}"
    );
    let (geo, rank, out_shape) = geometry(node, x, spec)?;
    ensure!(
        geo.c == conv.group,
        "{} channels, {} groups",
        geo.c,
        conv.group
    );
    ensure!(supported_taps(geo.taps()), "{}x{} kernel", geo.kh, geo.kw);
    ensure!(
        kernel.shape.as_concrete() == Some(&[geo.c, 1, geo.kh, geo.kw][..]),
        "kernel shape {:?}",
        kernel.shape
    );
    let bias_len = bias
        .shape
        .as_concrete()
        .map(|s| s.iter().product::<usize>());
    let bias = if bias.datum_type == f32::datum_type() && bias_len == Some(geo.c) {
        None
    } else {
        let value = const_value(model, node.inputs[2], 4).context("bias is not a constant")?;
        ensure!(
            value.len() == 1,
            "{} biases for {} channels",
            value.len(),
            geo.c
        );
        let v = value.cast_to_scalar::<f32>()?;
        Some(Tensor::from_shape(&[geo.c], &vec![v; geo.c])?)
    };
    let op = FastDepthwise::new(geo, rank, None)?;
    ensure!(
        out_shape == op.output_shape().as_slice(),
        "output {out_shape:?} vs computed {:?}",
        op.output_shape()
    );
    Ok((op, bias))
}

/// The geometry of a convolution node from tract's `PoolSpec` and the node's input fact:
/// f32 CHW / NCHW, two spatial axes, dilation 1; with the tensor rank and the output shape.
fn geometry<'a>(
    node: &'a TypedNode,
    x: &TypedFact,
    spec: &tract_onnx::tract_core::ops::cnn::PoolSpec,
) -> TractResult<(Geometry, usize, &'a [usize])> {
    let shape = x.shape.as_concrete().context("symbolic input shape")?;
    let out_shape = node.outputs[0]
        .fact
        .shape
        .as_concrete()
        .context("symbolic output shape")?;
    let rank = shape.len();
    ensure!(
        matches!(
            (spec.data_format, rank),
            (DataFormat::NCHW, 4) | (DataFormat::CHW, 3)
        ),
        "{:?} with rank {rank}",
        spec.data_format
    );
    ensure!(
        spec.kernel_shape.len() == 2,
        "{} spatial axes",
        spec.kernel_shape.len()
    );
    ensure!(spec.dilations().iter().all(|&d| d == 1), "dilations");
    let (n, c, h, w) = if rank == 4 {
        (shape[0], shape[1], shape[2], shape[3])
    } else {
        (1, shape[0], shape[1], shape[2])
    };
    let pads = spec.computed_padding(&[h, w]);
    let strides = spec.strides();
    let geo = Geometry {
        n,
        c,
        h,
        w,
        kh: spec.kernel_shape[0],
        kw: spec.kernel_shape[1],
        sh: strides[0],
        sw: strides[1],
        pad_top: pads[0].pad_before,
        pad_left: pads[1].pad_before,
        pad_bottom: pads[0].pad_after,
        pad_right: pads[1].pad_after,
    };
    ensure!(geo.is_valid(), "geometry {geo:?}");
    Ok((geo, rank, out_shape))
}

/// The [`FastMaxPool`] equivalent to a tract `OptMaxPool` node, if it has one: f32 CHW/NCHW,
/// two spatial axes, no index output, dilation 1, a 3x3 or 5x5 window.
fn maxpool_for_node(model: &TypedModel, node: &TypedNode) -> TractResult<Option<FastMaxPool>> {
    let Some(op) = node.op_as::<OptMaxPool>() else {
        return Ok(None);
    };
    let x = model.outlet_fact(node.inputs[0])?;
    if op.with_index_outputs.is_some()
        || node.outputs.len() != 1
        || node.inputs.len() != 1
        || x.datum_type != f32::datum_type()
        || x.is_exotic()
    {
        return Ok(None);
    }
    let Ok((geo, rank, out_shape)) = geometry(node, x, &op.pool_spec) else {
        return Ok(None);
    };
    if !supported_taps(geo.taps()) {
        return Ok(None);
    }
    let op = FastMaxPool::new(geo, rank)?;
    if op.shapes().1.as_slice() != out_shape {
        return Ok(None);
    }
    Ok(Some(op))
}

/// The ReLU6 (`OptBinChain(Max+Min)` with two scalar constants) or ReLU (`OptMaxByScalar`
/// with a scalar constant) that is the only consumer of `node`'s output, if any, and its
/// bounds.
fn fusable_clip(model: &TypedModel, node: &TypedNode) -> TractResult<Option<(usize, Clip)>> {
    if model.outputs.contains(&OutletId::new(node.id, 0)) {
        return Ok(None);
    }
    let Some(succ) = model.single_succ(node.id)? else {
        return Ok(None);
    };
    let name = succ.op().name();
    let arity = match name.as_ref() {
        "OptBinChain(Max+Min)" => 3,
        "OptMaxByScalar" => 2,
        _ => return Ok(None),
    };
    if succ.inputs.len() != arity || succ.inputs[0] != OutletId::new(node.id, 0) {
        return Ok(None);
    }
    let scalar = |outlet: OutletId| scalar_const(model, outlet);
    let hi = if arity == 3 {
        scalar(succ.inputs[2])
    } else {
        Some(f32::INFINITY)
    };
    let (Some(lo), Some(hi)) = (scalar(succ.inputs[1]), hi) else {
        return Ok(None);
    };
    if lo.partial_cmp(&hi).is_none_or(|o| o.is_gt())
        || succ.outputs[0].fact.shape != node.outputs[0].fact.shape
    {
        return Ok(None);
    }
    Ok(Some((succ.id, Clip::new(lo, hi))))
}

/// The value of `outlet` if it is a constant f32 with one element.
fn scalar_const(model: &TypedModel, outlet: OutletId) -> Option<f32> {
    let fact = model.outlet_fact(outlet).ok()?;
    let konst = fact.konst.as_ref()?;
    if konst.len() != 1 || konst.datum_type() != f32::datum_type() {
        return None;
    }
    konst.cast_to_scalar::<f32>().ok()
}

/// A constant zero `Pad` on the two spatial axes only producing `outlet` for one consumer: its
/// input, and the padding (top, bottom, left, right) a convolution can take over.
fn foldable_pad(model: &TypedModel, outlet: OutletId) -> Option<(OutletId, [usize; 4])> {
    use tract_onnx::tract_core::ops::array::{Pad, PadMode};
    let node = model.node(outlet.node);
    let pad = node.op_as::<Pad>()?;
    let PadMode::Constant(value) = &pad.mode else {
        return None;
    };
    if !value.is_zero().ok()? || model.outlet_successors(outlet).len() != 1 {
        return None;
    }
    if model.outputs.contains(&outlet) {
        return None;
    }
    let rank = pad.pads.len();
    if rank < 3 || pad.pads[..rank - 2].iter().any(|&(a, b)| a != 0 || b != 0) {
        return None;
    }
    let (top, bottom) = pad.pads[rank - 2];
    let (left, right) = pad.pads[rank - 1];
    Some((node.inputs[0], [top, bottom, left, right]))
}

/// The value of `outlet` if it is a constant, or computed from constants alone within `depth`
/// nodes (the ONNX importer routes a convolution's bias through a `Cast` that tract folds only
/// when it declutters).
fn const_value(model: &TypedModel, outlet: OutletId, depth: usize) -> Option<Arc<Tensor>> {
    let fact = model.outlet_fact(outlet).ok()?;
    if let Some(k) = &fact.konst {
        return Some(k.clone());
    }
    let node = model.node(outlet.node);
    if depth == 0 || node.inputs.is_empty() {
        return None;
    }
    let inputs = node
        .inputs
        .iter()
        .map(|i| const_value(model, *i, depth - 1).map(|t| t.into_tvalue()))
        .collect::<Option<TVec<TValue>>>()?;
    let outputs = node.op.eval_out_of_plan(inputs).ok()??;
    outputs
        .get(outlet.slot)
        .map(|v| v.clone().into_arc_tensor())
}
