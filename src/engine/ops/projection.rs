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

/// Output pixels per work item: the item's partial sums (`[pixels][CT]`, 32 KB) stay in L1/L2
/// while the input channels go by in passes.
#[cfg(target_arch = "x86_64")]
const CHUNK_PIXELS: usize = 256;

/// `op` on one batch item's depthwise output `tiles` (`[c / CT][p][CT]`, whole tiles; the
/// lanes past `c` never read) into `out` (`cout` planes of `p`), plus `skip` (the same shape) when the
/// projection has a residual; the work split by tiles of [`CT`] output channels and chunks of
/// pixels across tract's current executor. AVX-512F only (the caller checked).
#[cfg(target_arch = "x86_64")]
pub(crate) fn project_tiles(
    op: &Projection,
    tiles: &[f32],
    skip: Option<&[f32]>,
    out: &mut [f32],
) -> TractResult<()> {
    use super::aligned::AlignedBuf;
    use super::x86::conv::{partial_to_planes, pointwise_passes, Input};
    use super::Clip;
    let conv = &op.conv;
    let (k, p, cout) = (conv.geo.c, conv.geo.h * conv.geo.w, conv.cout);
    assert!(tiles.len() >= k.div_ceil(CT) * p * CT);
    assert_eq!(out.len(), cout * p);
    assert_eq!(skip.map_or(out.len(), |s| s.len()), out.len());
    assert_eq!(op.residual, skip.is_some());
    let (packed, bias) = conv.lanes_weights().context("no lanes weights")?;
    let (lo, hi) = Clip::bounds(conv.clip);
    let out_tiles = cout.div_ceil(CT);
    let chunks = p.div_ceil(CHUNK_PIXELS);
    let chunk = p.div_ceil(chunks);
    let (x, skip, dst) = (
        tiles.as_ptr() as usize,
        skip.map(|s| s.as_ptr() as usize),
        out.as_mut_ptr() as usize,
    );
    let work = cout * p * k;
    let items = out_tiles * chunks;
    tract_linalg::multithread::par_chunks_mut(&mut vec![(); items], 1, work, |first, is| {
        let mut partial = AlignedBuf::zeros(chunk * CT);
        let partial = partial.as_mut_slice();
        for item in first..first + is.len() {
            let (t, c) = (item / chunks, item % chunks);
            let p0 = c * chunk;
            let pixels = chunk.min(p - p0);
            let valid = (cout - t * CT).min(CT);
            let at = t * CT * p + p0;
            // Safety: AVX-512F (the caller checked); `tiles` holds `k` channels of `p`
            // pixels, the item reads pixels `p0..p0 + pixels` of them; item `(t, c)` writes
            // only its own channels' pixels of `out`.
            unsafe {
                pointwise_passes(
                    (x as *const f32).add(p0 * CT),
                    pixels,
                    k,
                    Input::Tiles {
                        tile_stride: p * CT,
                    },
                    valid.div_ceil(16),
                    packed[t * k * CT..][..k * CT].as_ptr(),
                    &bias[t * CT..][..CT],
                    conv.clip.is_some(),
                    lo,
                    hi,
                    partial,
                    None,
                );
                partial_to_planes(
                    partial.as_ptr(),
                    pixels,
                    valid,
                    (dst as *mut f32).add(at),
                    p,
                    skip.map(|s| (s as *const f32).add(at)),
                );
            }
        }
        Ok(())
    })
}
