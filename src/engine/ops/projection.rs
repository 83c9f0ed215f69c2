//! The 1x1 projection that closes an inverted-residual block (EfficientNet-Lite0's
//! `_project_conv`, and the residual `Add` after it), run inside
//! [`super::FusedLanesConvDepthwise`] on the depthwise output as that op's channels-in-lanes
//! kernel leaves it: tiles of [`CT`] channels, pixel-major.
//!
//! Apart, the depthwise step transposed its whole output (up to 1152 channels) into channel
//! planes for the projection to read: about a tenth of Lite0's time. The projection reads the
//! tiles where they are (its inputs are broadcast operands either way) and transposes only its
//! own output, 4 to 6 times fewer channels, adding the block's input on the way when the
//! block has a skip connection.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::conv::{FastConv, CT};
use super::Geometry;

/// A 1x1 [`FastConv`] (its weights channels in lanes) on a depthwise step's output, and
/// whether the block's input is added to its output.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Projection {
    /// The 1x1, stride-1, unpadded convolution, its clamp included.
    pub conv: FastConv,
    /// Add the fused op's own input (a skip connection: same shape as the output).
    pub residual: bool,
}

impl Projection {
    /// The projection `conv` on the output of a depthwise step of geometry `dw` (`dw.c`
    /// channels, `oh x ow`); with `residual`, the block's input (`input_shape`) must have the
    /// projection's output shape.
    pub(crate) fn new(
        conv: FastConv,
        dw: &Geometry,
        input_shape: &[usize],
        residual: bool,
    ) -> Option<Projection> {
        let g = conv.geo;
        let pointwise = Geometry::pointwise(dw.n, dw.c, dw.oh(), dw.ow());
        if g != pointwise || conv.rank != 4 {
            return None;
        }
        let conv = conv.with_lanes_weights()?;
        if residual && conv.shapes().1.as_slice() != input_shape {
            return None;
        }
        Some(Projection { conv, residual })
    }
}

/// `op` on one batch item's depthwise output `tiles` (`[c / CT][p][CT]`, whole tiles; the
/// lanes past `c` never read) into `out` (`cout` planes of `p`), plus `skip` (the same shape)
/// when the projection has a residual. AVX-512F only (the caller checked).
#[cfg(target_arch = "x86_64")]
pub(crate) fn project_tiles(
    op: &Projection,
    tiles: &[f32],
    skip: Option<&[f32]>,
    out: &mut [f32],
) -> TractResult<()> {
    assert_eq!(op.residual, skip.is_some());
    let p = op.conv.geo.h * op.conv.geo.w;
    let input = super::x86::conv::Input::Tiles {
        tile_stride: p * CT,
    };
    let store = super::conv::Store::Planes { skip };
    super::conv::pointwise_lanes(&op.conv, tiles, input, store, out)
}
