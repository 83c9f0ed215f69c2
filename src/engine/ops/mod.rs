//! The engine's own tract ops for f32 CNNs, and what they share.
//!
//! - [`depthwise`]: depthwise convolution (tract 0.23.9 runs it through a generic scalar loop on
//!   x86; on EfficientNet-Lite0 that was 60% of the time for a few percent of the FLOPs);
//! - [`maxpool`]: max pooling on the same plane loop (3x3 at stride 2 straight from the rows on
//!   AVX-512);
//! - [`conv`]: dense (group 1) convolution as an implicit matrix product over the same phase
//!   planes, or over the input unfolded into one plane per tap (strided convolutions onto small
//!   planes, channels in the lanes);
//! - [`winograd`]: dense 3x3 stride-1 convolution by Winograd's F(2x2) / F(4x4) transforms, its
//!   products on [`conv`]'s kernels, a residual add and a clamp fused into its output;
//! - [`fused`]: a 1x1 convolution and the depthwise convolution consuming it, run block by
//!   block so the intermediate planes stay in cache;
//! - [`fused_lanes`]: the same pair channels in the vector lanes throughout (AVX-512; small
//!   planes and the larger ones where it gains);
//! - [`projection`]: the 1x1 projection closing an inverted-residual block (and its skip
//!   connection), fused into [`fused_lanes`] so the depthwise output stays in lanes;
//! - [`pooled`]: a small-plane 1x1 convolution and the global average pool's sum after it;
//! - [`planes`]: the phase-plane machinery (padding, strides, the per-plane loop) and the
//!   portable kernels; [`x86`] the AVX-512F and AVX2+FMA kernels, chosen at run time ([`Isa`]).
//!
//! Products are fused multiply-adds on the SIMD paths, so results may differ from tract's
//! (separate multiply and add) in the last bits. The loops run under tract's executor: a plan
//! with intra-op threads splits the planes across them.

use std::fmt;

pub(crate) mod aligned;
pub mod conv;
pub mod depthwise;
pub mod fused;
pub mod fused_lanes;
pub mod maxpool;
pub(crate) mod planes;
pub mod pooled;
pub mod projection;
#[cfg(test)]
pub(crate) mod testing;
pub mod winograd;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;

use tract_onnx::prelude::{tvec, Datum, TValue, TVec, Tensor, TractResult, TypedFact};
use tract_onnx::tract_core::internal::{ensure, DatumExt, IntoTValue};

pub use conv::FastConv;
pub use depthwise::{depthwise, FastDepthwise};
pub use fused::FusedConvDepthwise;
pub use fused_lanes::FusedLanesConvDepthwise;
pub use maxpool::{maxpool, FastMaxPool};
pub use pooled::PooledConv;
pub use winograd::{winograd, FastWinograd, Tile};

/// Where a depthwise convolution reads and writes: one spatial 2-D convolution per channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// Batch size (1 for a batchless CHW tensor).
    pub n: usize,
    /// Channels (= groups = output channels).
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Vertical stride.
    pub sh: usize,
    /// Horizontal stride.
    pub sw: usize,
    /// Zero rows above the input.
    pub pad_top: usize,
    /// Zero columns left of the input.
    pub pad_left: usize,
    /// Zero rows below the input.
    pub pad_bottom: usize,
    /// Zero columns right of the input.
    pub pad_right: usize,
}

impl Geometry {
    /// This geometry with `after` zeros below and right instead of its own (the asymmetric
    /// padding EfficientNet-Lite0's strided layers carry: one zero before, two after).
    pub fn with_pad_after(self, after: usize) -> Geometry {
        Geometry {
            pad_bottom: after,
            pad_right: after,
            ..self
        }
    }

    /// A square `k x k` kernel with the same stride both ways and `pad` zeros on every side.
    pub fn square(
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Geometry {
        Geometry {
            n,
            c,
            h,
            w,
            kh: k,
            kw: k,
            sh: stride,
            sw: stride,
            pad_top: pad,
            pad_left: pad,
            pad_bottom: pad,
            pad_right: pad,
        }
    }

    /// A 1x1, stride-1, unpadded (pointwise) convolution over `c` planes of `h x w`.
    pub fn pointwise(n: usize, c: usize, h: usize, w: usize) -> Geometry {
        Geometry::square(n, c, h, w, 1, 1, 0)
    }

    /// Input and output shapes of an op over this geometry with `cout` output channels: NCHW
    /// for `rank == 4`, CHW (batch 1) for `rank == 3`.
    pub fn shapes(&self, cout: usize, rank: usize) -> (TVec<usize>, TVec<usize>) {
        if rank == 4 {
            (
                tvec!(self.n, self.c, self.h, self.w),
                tvec!(self.n, cout, self.oh(), self.ow()),
            )
        } else {
            (
                tvec!(self.c, self.h, self.w),
                tvec!(cout, self.oh(), self.ow()),
            )
        }
    }

    /// `pad tT lL bB rR on HxW`: the end of every op's `info` line.
    pub(crate) fn describe_padding(&self) -> String {
        format!(
            "pad t{} l{} b{} r{} on {}x{}",
            self.pad_top, self.pad_left, self.pad_bottom, self.pad_right, self.h, self.w
        )
    }

    pub(crate) fn padded_h(&self) -> usize {
        self.h + self.pad_top + self.pad_bottom
    }

    pub(crate) fn padded_w(&self) -> usize {
        self.w + self.pad_left + self.pad_right
    }

    /// Whether the geometry describes a convolution with at least one output.
    pub fn is_valid(&self) -> bool {
        self.n > 0
            && self.c > 0
            && self.h > 0
            && self.w > 0
            && self.kh > 0
            && self.kw > 0
            && self.sh > 0
            && self.sw > 0
            && self.padded_h() >= self.kh
            && self.padded_w() >= self.kw
    }

    /// Output height.
    pub fn oh(&self) -> usize {
        (self.padded_h() - self.kh) / self.sh + 1
    }

    /// Output width.
    pub fn ow(&self) -> usize {
        (self.padded_w() - self.kw) / self.sw + 1
    }

    /// Rows of one phase plane.
    pub(crate) fn hq(&self) -> usize {
        self.padded_h().div_ceil(self.sh)
    }

    /// Columns of one phase plane: also the row pitch of the flat output layout.
    pub(crate) fn wq(&self) -> usize {
        self.padded_w().div_ceil(self.sw)
    }

    /// Floats per phase plane, with room for the vector reads past the last row.
    pub(crate) fn phase_len(&self) -> usize {
        (self.hq() * self.wq() + self.kw + 2 * LANES_MAX * UNROLL).next_multiple_of(16)
    }

    pub(crate) fn taps(&self) -> usize {
        self.kh * self.kw
    }

    /// No zero rows or columns on any side.
    pub(crate) fn unpadded(&self) -> bool {
        self.pad_top + self.pad_left + self.pad_bottom + self.pad_right == 0
    }
}

/// Widest vector any path uses, in f32 lanes.
pub(crate) const LANES_MAX: usize = 16;
/// Output vectors in flight on the SIMD paths; each keeps two partial sums (even and odd
/// taps), so eight FMA chains hide the FMA latency.
pub(crate) const UNROLL: usize = 4;

/// Which instruction set runs the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// AVX-512F, 16 lanes.
    Avx512,
    /// AVX2 with FMA, 8 lanes.
    Avx2,
    /// Plain Rust the compiler vectorises for the baseline target.
    Portable,
}

impl Isa {
    /// The best instruction set this CPU has.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// Every instruction set this CPU can run, best first (for tests and benchmarks).
    pub fn available() -> Vec<Isa> {
        let mut all = vec![];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                all.push(Isa::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                all.push(Isa::Avx2);
            }
        }
        all.push(Isa::Portable);
        all
    }

    pub(crate) fn lanes(self) -> usize {
        match self {
            Isa::Avx512 => 16,
            Isa::Avx2 => 8,
            Isa::Portable => 8,
        }
    }
}

/// Tap counts with a compiled kernel (3x3 and 5x5, or 1x9 / 9x1).
pub(crate) fn supported_taps(taps: usize) -> bool {
    matches!(taps, 9 | 25)
}

/// A clamp applied to every output (a fused ReLU6), bounds kept as bits so the op is `Eq`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Clip {
    lo: u32,
    hi: u32,
}

impl Clip {
    /// `min(max(x, lo), hi)`.
    pub fn new(lo: f32, hi: f32) -> Clip {
        Clip {
            lo: lo.to_bits(),
            hi: hi.to_bits(),
        }
    }

    /// The lower bound.
    pub fn lo(&self) -> f32 {
        f32::from_bits(self.lo)
    }

    /// The upper bound.
    pub fn hi(&self) -> f32 {
        f32::from_bits(self.hi)
    }

    /// `(lo, hi)` of an optional clamp as the kernels take them (unused, `(0, 0)`, without one).
    pub(crate) fn bounds(clip: Option<Clip>) -> (f32, f32) {
        clip.map(|c| (c.lo(), c.hi())).unwrap_or((0.0, 0.0))
    }
}

impl fmt::Debug for Clip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "clip({}, {})", self.lo(), self.hi())
    }
}

/// ` clip(lo, hi)` after an op's `info` line when it carries a fused clamp.
pub(crate) fn describe_clip(clip: Option<Clip>) -> String {
    clip.map(|c| format!(" {c:?}")).unwrap_or_default()
}

/// Every op's `output_facts`: `inputs` are the f32 activation of `input_shape` then `arity - 1`
/// constant weights; the output is f32 of `output_shape`.
pub(crate) fn f32_output_facts(
    inputs: &[&TypedFact],
    arity: usize,
    input_shape: &[usize],
    output_shape: &[usize],
) -> TractResult<TVec<TypedFact>> {
    ensure!(inputs.len() == arity);
    ensure!(inputs[0].datum_type == f32::datum_type());
    ensure!(inputs[0].shape.as_concrete() == Some(input_shape));
    Ok(tvec!(f32::fact(output_shape)))
}

/// What every op's `eval` does around its kernel: checks that the input is f32 and has the shape
/// the op was built for, then lets `kernel(input, output)` fill a fresh f32 tensor of
/// `output_shape`.
pub(crate) fn eval_f32(
    op: &str,
    x: &TValue,
    input_shape: &[usize],
    output_shape: &[usize],
    kernel: impl FnOnce(&[f32], &mut [f32]) -> TractResult<()>,
) -> TractResult<TVec<TValue>> {
    ensure!(x.datum_type() == f32::datum_type(), "{op} runs f32 only");
    ensure!(
        x.shape() == input_shape,
        "{op} expected {input_shape:?}, got {:?}",
        x.shape()
    );
    let x = x.try_as_plain_ram()?.as_slice::<f32>()?;
    // SAFETY: `kernel` writes every element before the tensor is read (each op's kernel covers
    // its whole output, as its tests against tract's own op check).
    let mut output = unsafe { Tensor::uninitialized::<f32>(output_shape)? };
    {
        let mut view = output.try_as_plain_ram_mut()?;
        kernel(x, view.as_slice_mut::<f32>()?)?;
    }
    Ok(tvec!(output.into_tvalue()))
}
