//! Winograd convolution F(m x m, 3 x 3) for dense 3x3 stride-1 convolutions (16 of ResNet18's
//! 20): each `m x m` block of outputs comes from an `a x a` input tile (`a = m + 2`, tiles at a
//! stride of `m`) with `a * a` products per channel pair instead of `9 * m * m`.
//!
//! 1. at load, every filter `g` becomes `U = G g G^T` (`a * a` matrices `[cout][cin]`), packed
//!    for the dense convolution's kernels;
//! 2. input transform: every tile `d` of every channel becomes `V = B^T d B`, scattered into
//!    `a * a` planes `V[xi][cin][tiles]`;
//! 3. `a * a` matrix products `M[xi] = U[xi] x V[xi]`: each is a 1x1 convolution over a plane of
//!    `tiles` pixels, so the dense convolution's kernels run it unchanged (AVX-512: 8 channels x
//!    3 vectors of tiles, or channels in the lanes when there are few tiles; AVX2; portable);
//! 4. output transform `Y = A^T M A`, plus the bias and the fused clamp, into the output.
//!
//! F(2x2) multiplies 2.25x less than the direct convolution, F(4x4) 4x less but with larger
//! rounding errors (its transforms scale by up to 8 and 1/24); the tests bound both against an
//! f64 definition. Transforms run in f32 on the caller's ISA (the compiler vectorises them
//! along a row of tiles); which layers take which tile is decided by [`crate::engine::rewrite`].

// The transforms index several rows by one tile index; iterators would hide that.
#![allow(clippy::needless_range_loop)]

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::conv::{CT, MR};
use super::planes::Job;
use super::{eval_f32, Clip, Geometry, Isa};

/// The output tile edge of a Winograd transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tile {
    /// F(2x2, 3x3): 4x4 input tiles, 16 products.
    F2,
    /// F(4x4, 3x3): 6x6 input tiles, 36 products.
    F4,
}

impl Tile {
    /// Outputs per tile edge.
    pub fn m(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F4 => 4,
        }
    }

    /// Inputs per tile edge.
    pub fn alpha(self) -> usize {
        self.m() + 2
    }

    /// The filter transform `G` (`alpha x 3`), in f64.
    fn g(self) -> &'static [[f64; 3]] {
        const F2: [[f64; 3]; 4] = [
            [1.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.5, -0.5, 0.5],
            [0.0, 0.0, 1.0],
        ];
        const F4: [[f64; 3]; 6] = [
            [1.0 / 4.0, 0.0, 0.0],
            [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
            [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
            [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
            [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
            [0.0, 0.0, 1.0],
        ];
        match self {
            Tile::F2 => &F2,
            Tile::F4 => &F4,
        }
    }
}

/// Tiles at most this many run the products with output channels in the lanes
/// ([`crate::engine::ops::x86::conv::pointwise_tile`]): vectors along so few tiles would be
/// mostly empty.
const LANES_TILES: usize = 64;

/// How `U` is packed for the products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Packing {
    /// `[xi][cout / MR][cin][MR]`: the dense convolution's register blocks.
    Blocks,
    /// `[xi][cout / CT][cin][CT]`: channels in the lanes.
    Lanes,
}

impl Packing {
    fn width(self) -> usize {
        match self {
            Packing::Blocks => MR,
            Packing::Lanes => CT,
        }
    }
}

/// The transformed filters of one convolution, packed, and the biases.
pub struct WinogradWeights {
    packing: Packing,
    cin: usize,
    cout: usize,
    packed: Vec<f32>,
    bias: Vec<f32>,
}

impl WinogradWeights {
    /// `U = G g G^T` for every filter of an OIHW 3x3 kernel, computed in f64.
    fn new(
        tile: Tile,
        packing: Packing,
        cin: usize,
        cout: usize,
        kernel: &[f32],
        bias: &[f32],
    ) -> WinogradWeights {
        assert_eq!(kernel.len(), cout * cin * 9);
        let (a, g) = (tile.alpha(), tile.g());
        let width = packing.width();
        let groups = cout.div_ceil(width);
        let mut packed = vec![0f32; a * a * groups * cin * width];
        for co in 0..cout {
            for ci in 0..cin {
                let f = &kernel[(co * cin + ci) * 9..][..9];
                // G f (a x 3), then (G f) G^T (a x a).
                let mut gf = vec![[0f64; 3]; a];
                for i in 0..a {
                    for l in 0..3 {
                        gf[i][l] = (0..3).map(|k| g[i][k] * f[k * 3 + l] as f64).sum();
                    }
                }
                for i in 0..a {
                    for j in 0..a {
                        let u: f64 = (0..3).map(|l| gf[i][l] * g[j][l]).sum();
                        let xi = i * a + j;
                        let (grp, lane) = (co / width, co % width);
                        packed[((xi * groups + grp) * cin + ci) * width + lane] = u as f32;
                    }
                }
            }
        }
        WinogradWeights {
            packing,
            cin,
            cout,
            packed,
            bias: bias.to_vec(),
        }
    }

    fn groups(&self) -> usize {
        self.cout.div_ceil(self.packing.width())
    }

    /// Output channel rows of `M` (the channels past `cout` are computed and dropped).
    fn cout_padded(&self) -> usize {
        self.groups() * self.packing.width()
    }

    /// `U[xi][co][ci]`, wherever it is packed.
    fn at(&self, xi: usize, co: usize, ci: usize) -> f32 {
        let w = self.packing.width();
        self.packed[((xi * self.groups() + co / w) * self.cin + ci) * w + co % w]
    }
}

impl std::fmt::Debug for WinogradWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WinogradWeights({}x{} {:?})",
            self.cout, self.cin, self.packing
        )
    }
}

/// tract op: a dense 3x3 stride-1 convolution of an f32 CHW (`rank == 3`) or NCHW
/// (`rank == 4`) tensor by Winograd's algorithm, with weights held by the op and an optional
/// fused clamp (ReLU, ReLU6). Any padding.
#[derive(Debug, Clone)]
pub struct FastWinograd {
    /// The convolution over each input plane (`geo.c` input channels, 3x3, stride 1).
    pub geo: Geometry,
    /// Output channels.
    pub cout: usize,
    /// 3 for CHW, 4 for NCHW.
    pub rank: usize,
    /// The output tile.
    pub tile: Tile,
    /// A clamp fused from a following ReLU / ReLU6.
    pub clip: Option<Clip>,
    weights: Arc<WinogradWeights>,
}

impl PartialEq for FastWinograd {
    fn eq(&self, other: &Self) -> bool {
        self.geo == other.geo
            && self.cout == other.cout
            && self.rank == other.rank
            && self.tile == other.tile
            && self.clip == other.clip
            && (Arc::ptr_eq(&self.weights, &other.weights)
                || (self.weights.packed == other.weights.packed
                    && self.weights.bias == other.weights.bias))
    }
}

impl Eq for FastWinograd {}

impl std::hash::Hash for FastWinograd {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.geo.hash(state);
        self.cout.hash(state);
        self.rank.hash(state);
        self.tile.hash(state);
        self.clip.hash(state);
    }
}

/// Whether [`FastWinograd`] computes `geo`: 3x3, stride 1 (any padding, any size).
pub fn winograd_fits(geo: &Geometry) -> bool {
    geo.is_valid() && geo.kh == 3 && geo.kw == 3 && geo.sh == 1 && geo.sw == 1
}

impl FastWinograd {
    /// The op for `geo` (input channels `geo.c`, 3x3, stride 1) and an OIHW kernel of `cout`
    /// filters.
    pub fn new(
        geo: Geometry,
        cout: usize,
        rank: usize,
        tile: Tile,
        kernel: &[f32],
        bias: &[f32],
    ) -> TractResult<FastWinograd> {
        ensure!(winograd_fits(&geo), "no Winograd transform for {geo:?}");
        ensure!(
            rank == 4 || (rank == 3 && geo.n == 1),
            "rank {rank} for {geo:?}"
        );
        ensure!(cout > 0);
        ensure!(
            kernel.len() == cout * geo.c * 9 && bias.len() == cout,
            "weights for {geo:?}"
        );
        let layout = Layout::new(&geo, tile);
        ensure!(
            tile.alpha() * tile.alpha() * geo.c.max(cout + CT) * layout.tiles < u32::MAX as usize
        );
        let lanes = layout.tiles <= LANES_TILES && Isa::detect() == Isa::Avx512;
        FastWinograd::with_packing(geo, cout, rank, tile, kernel, bias, lanes)
    }

    /// [`FastWinograd::new`] with the products on channels in the lanes (`lanes`, AVX-512
    /// only) or on the register blocks, whatever the plane.
    pub fn with_packing(
        geo: Geometry,
        cout: usize,
        rank: usize,
        tile: Tile,
        kernel: &[f32],
        bias: &[f32],
        lanes: bool,
    ) -> TractResult<FastWinograd> {
        let packing = if lanes {
            Packing::Lanes
        } else {
            Packing::Blocks
        };
        let weights = WinogradWeights::new(tile, packing, geo.c, cout, kernel, bias);
        Ok(FastWinograd {
            geo,
            cout,
            rank,
            tile,
            clip: None,
            weights: Arc::new(weights),
        })
    }

    /// Input and output shapes.
    pub fn shapes(&self) -> (TVec<usize>, TVec<usize>) {
        let g = &self.geo;
        if self.rank == 4 {
            (
                tvec!(g.n, g.c, g.h, g.w),
                tvec!(g.n, self.cout, g.oh(), g.ow()),
            )
        } else {
            (tvec!(g.c, g.h, g.w), tvec!(self.cout, g.oh(), g.ow()))
        }
    }
}

impl Op for FastWinograd {
    fn name(&self) -> StaticName {
        "FastWinograd".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let g = &self.geo;
        Ok(vec![format!(
            "{}->{} 3x3 {:?} pad t{} l{} b{} r{} on {}x{}{}",
            g.c,
            self.cout,
            self.tile,
            g.pad_top,
            g.pad_left,
            g.pad_bottom,
            g.pad_right,
            g.h,
            g.w,
            self.clip.map(|c| format!(" {c:?}")).unwrap_or_default()
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for FastWinograd {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let (input_shape, output_shape) = self.shapes();
        eval_f32("FastWinograd", &x, &input_shape, &output_shape, |x, out| {
            run(self, x, Isa::detect(), out)
        })
    }
}

impl TypedOp for FastWinograd {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let (input_shape, output_shape) = self.shapes();
        ensure!(inputs.len() == 1);
        ensure!(inputs[0].datum_type == f32::datum_type());
        ensure!(inputs[0].shape.as_concrete() == Some(&*input_shape));
        Ok(tvec!(f32::fact(&*output_shape)))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let g = &self.geo;
        let a = self.tile.alpha();
        let tiles = Layout::new(g, self.tile).tiles;
        let fma = g.n * self.cout * g.c * a * a * tiles;
        Ok(tvec!((Cost::FMA(f32::datum_type()), fma.into())))
    }

    as_op!();
}

/// Winograd convolution of `x` (`n*cin*h*w`, NCHW) by `op` into `out` (`n*cout*oh*ow`), on
/// `isa` (the portable products when `isa` cannot run the op's packing).
pub fn winograd(op: &FastWinograd, x: &[f32], isa: Isa, out: &mut [f32]) {
    run(op, x, isa, out).unwrap()
}

/// Where tiles and phase planes lie for one geometry.
#[derive(Debug, Clone, Copy)]
struct Layout {
    m: usize,
    a: usize,
    tiles_y: usize,
    tiles_x: usize,
    /// `tiles_y * tiles_x`: the pixels of each product's plane.
    tiles: usize,
    /// Rows of the padded input the tiles read (`m * tiles_y + 2`).
    rows: usize,
    /// Columns of one phase plane (`tiles_x + 1`): padded column `x` is phase `x % m`, index
    /// `x / m`.
    cols: usize,
}

impl Layout {
    fn new(g: &Geometry, tile: Tile) -> Layout {
        let (m, a) = (tile.m(), tile.alpha());
        let (tiles_y, tiles_x) = (g.oh().div_ceil(m), g.ow().div_ceil(m));
        Layout {
            m,
            a,
            tiles_y,
            tiles_x,
            tiles: tiles_y * tiles_x,
            rows: m * tiles_y + 2,
            cols: tiles_x + 1,
        }
    }
}

/// The whole convolution: for each batch item, the input transform into `V`, the products into
/// `M`, the output transform into `out`; each step split across tract's threads.
fn run(op: &FastWinograd, x: &[f32], isa: Isa, out: &mut [f32]) -> TractResult<()> {
    let g = &op.geo;
    let (oh, ow) = (g.oh(), g.ow());
    assert_eq!(x.len(), g.n * g.c * g.h * g.w);
    assert_eq!(out.len(), g.n * op.cout * oh * ow);
    let lay = Layout::new(g, op.tile);
    let w = &op.weights;
    let xis = lay.a * lay.a;
    let v_len = xis * g.c * lay.tiles;
    let m_len = xis * w.cout_padded() * lay.tiles;
    super::planes::with_buffers(v_len, m_len, |v, m| {
        for n in 0..g.n {
            let xn = &x[n * g.c * g.h * g.w..][..g.c * g.h * g.w];
            input_transform(op, &lay, xn, isa, v)?;
            products(op, &lay, v, isa, m)?;
            let on = &mut out[n * op.cout * oh * ow..][..op.cout * oh * ow];
            output_transform(op, &lay, m, isa, on)?;
        }
        Ok(())
    })
}

/// `V[xi][ci][tile] = (B^T d B)[xi]` for every tile `d` of every input channel.
fn input_transform(
    op: &FastWinograd,
    lay: &Layout,
    x: &[f32],
    isa: Isa,
    v: &mut [f32],
) -> TractResult<()> {
    let g = &op.geo;
    let v_addr = v.as_mut_ptr() as usize;
    let v_len = v.len();
    let work = g.c * lay.a * lay.a * lay.tiles;
    tract_linalg::multithread::par_chunks_mut(&mut vec![(); g.c], 1, work, |first, cs| {
        let mut phases = vec![0f32; lay.m * lay.rows * lay.cols];
        let mut rows = vec![0f32; lay.a * lay.a * lay.tiles_x];
        for ci in first..first + cs.len() {
            let plane = &x[ci * g.h * g.w..][..g.h * g.w];
            // Safety: channel `ci` writes only its own rows `V[xi][ci]`.
            let v = unsafe { std::slice::from_raw_parts_mut(v_addr as *mut f32, v_len) };
            // Safety: the features were detected for this `Isa`.
            unsafe {
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => {
                        input_channel_avx512(g, lay, plane, ci, &mut phases, &mut rows, v)
                    }
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => input_channel_avx2(g, lay, plane, ci, &mut phases, &mut rows, v),
                    _ => input_channel(g, lay, plane, ci, &mut phases, &mut rows, v),
                }
            }
        }
        Ok(())
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn input_channel_avx512(
    g: &Geometry,
    lay: &Layout,
    plane: &[f32],
    ci: usize,
    phases: &mut [f32],
    rows: &mut [f32],
    v: &mut [f32],
) {
    input_channel(g, lay, plane, ci, phases, rows, v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn input_channel_avx2(
    g: &Geometry,
    lay: &Layout,
    plane: &[f32],
    ci: usize,
    phases: &mut [f32],
    rows: &mut [f32],
    v: &mut [f32],
) {
    input_channel(g, lay, plane, ci, phases, rows, v)
}

/// One input channel: its padded plane split into `m` column phases (so that a row of tiles
/// reads every tap as a contiguous run), then per row of tiles the transform along the rows
/// into `rows[r][j][tx]` and along the columns into `V`.
#[inline(always)]
fn input_channel(
    g: &Geometry,
    lay: &Layout,
    plane: &[f32],
    ci: usize,
    phases: &mut [f32],
    rows: &mut [f32],
    v: &mut [f32],
) {
    if lay.m == 2 {
        input_channel_m::<2>(g, lay, plane, ci, phases, rows, v)
    } else {
        input_channel_m::<4>(g, lay, plane, ci, phases, rows, v)
    }
}

#[inline(always)]
fn input_channel_m<const M: usize>(
    g: &Geometry,
    lay: &Layout,
    plane: &[f32],
    ci: usize,
    phases: &mut [f32],
    rows: &mut [f32],
    v: &mut [f32],
) {
    let (m, a, cols, tx_n) = (M, lay.a, lay.cols, lay.tiles_x);
    let phase_len = lay.rows * cols;
    phases.fill(0.0);
    for q in 0..M {
        // Input columns landing in phase q: (x + pad_left) % M == q, from index (x + pad_left) / M.
        let x0 = (q + M - g.pad_left % M) % M;
        if x0 >= g.w {
            continue;
        }
        let i0 = (x0 + g.pad_left) / M;
        let count = (g.w - x0).div_ceil(M);
        for y in 0..g.h {
            let src = &plane[y * g.w + x0..][..(count - 1) * M + 1];
            let py = y + g.pad_top;
            let dst = &mut phases[q * phase_len + py * cols + i0..][..count];
            for (i, d) in dst.iter_mut().enumerate() {
                *d = src[i * M];
            }
        }
    }
    let ci_len = lay.tiles;
    let xi_len = g.c * ci_len;
    for ty in 0..lay.tiles_y {
        for r in 0..a {
            let py = m * ty + r;
            // Tap k of tile tx is padded column m * tx + k: phase k % m, index tx + k / m.
            let taps: [&[f32]; 6] = std::array::from_fn(|k| {
                if k < a {
                    &phases[(k % m) * phase_len + py * cols + k / m..][..tx_n]
                } else {
                    &[][..]
                }
            });
            let out = &mut rows[r * a * tx_n..][..a * tx_n];
            if m == 2 {
                transform_rows::<4>(&taps, out, tx_n, bt2);
            } else {
                transform_rows::<6>(&taps, out, tx_n, bt4);
            }
        }
        // Along the columns: V[i * a + j] from rows[r][j] over r.
        for j in 0..a {
            let taps: [&[f32]; 6] = std::array::from_fn(|r| {
                if r < a {
                    &rows[(r * a + j) * tx_n..][..tx_n]
                } else {
                    &[][..]
                }
            });
            let mut dst: [&mut [f32]; 6] = Default::default();
            let mut rest = &mut v[..];
            let mut taken = 0;
            for i in 0..a {
                let at = (i * a + j) * xi_len + ci * ci_len + ty * tx_n;
                let tail = std::mem::take(&mut rest);
                let (_, tail) = tail.split_at_mut(at - taken);
                let (run, tail) = tail.split_at_mut(tx_n);
                dst[i] = run;
                rest = tail;
                taken = at + tx_n;
            }
            if m == 2 {
                transform_into::<4>(&taps, &mut dst, tx_n, bt2);
            } else {
                transform_into::<6>(&taps, &mut dst, tx_n, bt4);
            }
        }
    }
}

/// `out[j][t] = f(d)[j]` with `d[k] = taps[k][t]`, for `t < n`; `out` is `A` rows of `n`.
#[inline(always)]
fn transform_rows<const A: usize>(
    taps: &[&[f32]; 6],
    out: &mut [f32],
    n: usize,
    f: impl Fn([f32; A]) -> [f32; A],
) {
    let taps: [&[f32]; A] = std::array::from_fn(|k| &taps[k][..n]);
    let (out, _) = out.split_at_mut(A * n);
    let mut dst: [&mut [f32]; A] = std::array::from_fn(|_| &mut [][..]);
    let mut rest = out;
    for d in dst.iter_mut() {
        let (run, tail) = std::mem::take(&mut rest).split_at_mut(n);
        *d = run;
        rest = tail;
    }
    for t in 0..n {
        let y = f(std::array::from_fn(|k| taps[k][t]));
        for j in 0..A {
            dst[j][t] = y[j];
        }
    }
}

/// `dst[j][t] = f(d)[j]` with `d[k] = taps[k][t]`, for `t < n`.
#[inline(always)]
fn transform_into<const A: usize>(
    taps: &[&[f32]; 6],
    dst: &mut [&mut [f32]; 6],
    n: usize,
    f: impl Fn([f32; A]) -> [f32; A],
) {
    let taps: [&[f32]; A] = std::array::from_fn(|k| &taps[k][..n]);
    let mut out: [&mut [f32]; A] = std::array::from_fn(|_| &mut [][..]);
    for (o, d) in out.iter_mut().zip(dst.iter_mut()) {
        *o = &mut std::mem::take(d)[..n];
    }
    for t in 0..n {
        let y = f(std::array::from_fn(|k| taps[k][t]));
        for j in 0..A {
            out[j][t] = y[j];
        }
    }
}

/// `B^T d` for F(2x2, 3x3).
#[inline(always)]
fn bt2(d: [f32; 4]) -> [f32; 4] {
    [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]
}

/// `B^T d` for F(4x4, 3x3).
#[inline(always)]
fn bt4(d: [f32; 6]) -> [f32; 6] {
    let t0 = d[4] - 4.0 * d[2];
    let t1 = d[3] - 4.0 * d[1];
    let t2 = d[4] - d[2];
    let t3 = 2.0 * (d[3] - d[1]);
    [
        4.0 * d[0] - 5.0 * d[2] + d[4],
        t0 + t1,
        t0 - t1,
        t2 + t3,
        t2 - t3,
        4.0 * d[1] - 5.0 * d[3] + d[5],
    ]
}

/// `A^T m` for F(2x2, 3x3) (2 of the 4 values are used).
#[inline(always)]
fn at2(d: [f32; 4]) -> [f32; 4] {
    [d[0] + d[1] + d[2], d[1] - d[2] - d[3], 0.0, 0.0]
}

/// `A^T m` for F(4x4, 3x3) (4 of the 6 values are used).
#[inline(always)]
fn at4(d: [f32; 6]) -> [f32; 6] {
    let s = d[1] + d[2];
    let t = d[1] - d[2];
    let s2 = d[3] + d[4];
    let t2 = d[3] - d[4];
    [
        d[0] + s + s2,
        t + 2.0 * t2,
        s + 4.0 * s2,
        t + 8.0 * t2 + d[5],
        0.0,
        0.0,
    ]
}

/// `M[xi] = U[xi] x V[xi]` for every `xi`: a 1x1 convolution of `cin` planes of `tiles` pixels
/// each, on the dense convolution's kernels.
fn products(
    op: &FastWinograd,
    lay: &Layout,
    v: &[f32],
    isa: Isa,
    m: &mut [f32],
) -> TractResult<()> {
    let w = &op.weights;
    let (cin, p) = (w.cin, lay.tiles);
    let xis = lay.a * lay.a;
    let groups = w.groups();
    let width = w.packing.width();
    let cout_p = w.cout_padded();
    let m_addr = m.as_mut_ptr() as usize;
    let native = match (w.packing, isa) {
        (Packing::Blocks, Isa::Avx512 | Isa::Avx2) | (Packing::Lanes, Isa::Avx512) => isa,
        _ => Isa::Portable,
    };
    let lanes = native.lanes();
    let jobs = super::planes::jobs(1, p, 0, 0, lanes);
    let zeros = [0f32; CT];
    let work = xis * cout_p * cin * p;
    tract_linalg::multithread::par_chunks_mut(
        &mut vec![(); xis * groups],
        1,
        work,
        |first, items| {
            for item in first..first + items.len() {
                let (xi, grp) = (item / groups, item % groups);
                let vx = &v[xi * cin * p..][..cin * p];
                let weights = &w.packed[(xi * groups + grp) * cin * width..][..cin * width];
                let m_xi = (m_addr as *mut f32).wrapping_add(xi * cout_p * p);
                // Safety: item (xi, grp) writes only rows `grp * width..` of `M[xi]`; the features
                // were detected for `native`.
                unsafe {
                    match native {
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx512 if w.packing == Packing::Lanes => {
                            super::x86::conv::pointwise_tile(
                                vx.as_ptr(),
                                p,
                                cin,
                                weights.as_ptr(),
                                &zeros,
                                (w.cout - grp * CT).min(CT),
                                m_xi.add(grp * width * p),
                                false,
                                0.0,
                                0.0,
                            );
                        }
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx512 | Isa::Avx2 => {
                            let koff: Vec<u32> = (0..cin).map(|ci| (ci * p) as u32).collect();
                            let mut outs = [std::ptr::null_mut::<f32>(); MR];
                            for j in 0..MR {
                                outs[j] = m_xi.add((grp * MR + j) * p);
                            }
                            for group in jobs.chunks(3) {
                                if native == Isa::Avx512 {
                                    super::x86::conv::block_avx512(
                                        vx.as_ptr(),
                                        &koff,
                                        weights.as_ptr(),
                                        &zeros[..MR],
                                        false,
                                        0.0,
                                        0.0,
                                        group,
                                        &outs,
                                    );
                                } else {
                                    for h in [0, MR / 2] {
                                        super::x86::conv::block_avx2(
                                            vx.as_ptr(),
                                            &koff,
                                            weights.as_ptr().add(h),
                                            &zeros[..MR / 2],
                                            false,
                                            0.0,
                                            0.0,
                                            group,
                                            &outs[h..],
                                        );
                                    }
                                }
                            }
                        }
                        _ => products_portable(w, xi, grp, vx, p, &jobs, m_xi),
                    }
                }
            }
            Ok(())
        },
    )
}

/// One item of [`products`] in plain Rust: `width` output channels of `M[xi]`.
///
/// # Safety
/// `m_xi` points at `M[xi]`, `cout_padded * p` floats.
unsafe fn products_portable(
    w: &WinogradWeights,
    xi: usize,
    grp: usize,
    vx: &[f32],
    p: usize,
    jobs: &[Job],
    m_xi: *mut f32,
) {
    let width = w.packing.width();
    for j in 0..width {
        let co = grp * width + j;
        // Safety: row `co` of `M[xi]` belongs to this item.
        let row = unsafe { std::slice::from_raw_parts_mut(m_xi.add(co * p), p) };
        row.fill(0.0);
        if co >= w.cout {
            continue;
        }
        for ci in 0..w.cin {
            let u = w.at(xi, co, ci);
            let src = &vx[ci * p..][..p];
            for job in jobs {
                let (at, n) = (job.inp as usize, job.lanes as usize);
                for (o, s) in row[at..at + n].iter_mut().zip(&src[at..at + n]) {
                    *o += u * s;
                }
            }
        }
    }
}

/// `out = A^T M A + bias`, clamped, for every tile of every output channel.
fn output_transform(
    op: &FastWinograd,
    lay: &Layout,
    m: &[f32],
    isa: Isa,
    out: &mut [f32],
) -> TractResult<()> {
    let g = &op.geo;
    let (oh, ow) = (g.oh(), g.ow());
    let out_addr = out.as_mut_ptr() as usize;
    let work = op.cout * lay.a * lay.a * lay.tiles;
    tract_linalg::multithread::par_chunks_mut(&mut vec![(); op.cout], 1, work, |first, cs| {
        let mut cols = vec![0f32; lay.m * lay.a * lay.tiles_x];
        let mut rows = vec![0f32; lay.a * lay.tiles_x];
        for co in first..first + cs.len() {
            // Safety: channel `co` writes only its own plane.
            let plane = unsafe {
                std::slice::from_raw_parts_mut((out_addr as *mut f32).add(co * oh * ow), oh * ow)
            };
            // Safety: the features were detected for this `Isa`.
            unsafe {
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => {
                        output_channel_avx512(op, lay, m, co, &mut cols, &mut rows, plane)
                    }
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => output_channel_avx2(op, lay, m, co, &mut cols, &mut rows, plane),
                    _ => output_channel(op, lay, m, co, &mut cols, &mut rows, plane),
                }
            }
        }
        Ok(())
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn output_channel_avx512(
    op: &FastWinograd,
    lay: &Layout,
    m: &[f32],
    co: usize,
    cols: &mut [f32],
    rows: &mut [f32],
    plane: &mut [f32],
) {
    output_channel(op, lay, m, co, cols, rows, plane)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn output_channel_avx2(
    op: &FastWinograd,
    lay: &Layout,
    m: &[f32],
    co: usize,
    cols: &mut [f32],
    rows: &mut [f32],
    plane: &mut [f32],
) {
    output_channel(op, lay, m, co, cols, rows, plane)
}

/// One output channel, a row of tiles at a time: along the columns of `M` into
/// `cols[i][j][tx]`, then along the rows into `rows[q][tx]` per output row `i`, plus the bias,
/// clamped, interleaved into the output row.
#[inline(always)]
fn output_channel(
    op: &FastWinograd,
    lay: &Layout,
    m: &[f32],
    co: usize,
    cols: &mut [f32],
    rows: &mut [f32],
    plane: &mut [f32],
) {
    if lay.m == 2 {
        output_channel_m::<2>(op, lay, m, co, cols, rows, plane)
    } else {
        output_channel_m::<4>(op, lay, m, co, cols, rows, plane)
    }
}

#[inline(always)]
fn output_channel_m<const M: usize>(
    op: &FastWinograd,
    lay: &Layout,
    m: &[f32],
    co: usize,
    cols: &mut [f32],
    rows: &mut [f32],
    plane: &mut [f32],
) {
    let g = &op.geo;
    let (oh, ow) = (g.oh(), g.ow());
    let (mm, a, tx_n) = (M, lay.a, lay.tiles_x);
    let cout_p = op.weights.cout_padded();
    let xi_len = cout_p * lay.tiles;
    let bias = op.weights.bias[co];
    let (lo, hi) = op
        .clip
        .map(|c| (c.lo(), c.hi()))
        .unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    for ty in 0..lay.tiles_y {
        let at = co * lay.tiles + ty * tx_n;
        for j in 0..a {
            let taps: [&[f32]; 6] = std::array::from_fn(|r| {
                if r < a {
                    &m[(r * a + j) * xi_len + at..][..tx_n]
                } else {
                    &[][..]
                }
            });
            // cols[i][j] for i < a (the rows past m are written and unused).
            let mut dst: [&mut [f32]; 6] = Default::default();
            let mut rest = &mut cols[..];
            let mut taken = 0;
            for i in 0..mm {
                let start = (i * a + j) * tx_n;
                let (_, tail) = std::mem::take(&mut rest).split_at_mut(start - taken);
                let (run, tail) = tail.split_at_mut(tx_n);
                dst[i] = run;
                rest = tail;
                taken = start + tx_n;
            }
            if mm == 2 {
                transform_into_first::<4, 2>(&taps, &mut dst, tx_n, at2);
            } else {
                transform_into_first::<6, 4>(&taps, &mut dst, tx_n, at4);
            }
        }
        for i in 0..mm {
            let oy = mm * ty + i;
            if oy >= oh {
                break;
            }
            let taps: [&[f32]; 6] = std::array::from_fn(|j| {
                if j < a {
                    &cols[(i * a + j) * tx_n..][..tx_n]
                } else {
                    &[][..]
                }
            });
            let mut dst: [&mut [f32]; 6] = Default::default();
            let mut rest = &mut rows[..];
            for q in 0..mm {
                let (run, tail) = std::mem::take(&mut rest).split_at_mut(tx_n);
                dst[q] = run;
                rest = tail;
            }
            if mm == 2 {
                transform_into_first::<4, 2>(&taps, &mut dst, tx_n, at2);
            } else {
                transform_into_first::<6, 4>(&taps, &mut dst, tx_n, at4);
            }
            let row = &mut plane[oy * ow..][..ow];
            let ys: [&[f32]; M] = std::array::from_fn(|q| &rows[q * tx_n..][..tx_n]);
            // Whole tiles, then the columns of a last partial one.
            let full = ow / M;
            for (tx, out) in row.chunks_exact_mut(M).take(full).enumerate() {
                for q in 0..M {
                    out[q] = (ys[q][tx] + bias).max(lo).min(hi);
                }
            }
            for ox in full * M..ow {
                row[ox] = (ys[ox % M][ox / M] + bias).max(lo).min(hi);
            }
        }
    }
}

/// `dst[j][t] = f(d)[j]` for the first `O` outputs of `f`, with `d[k] = taps[k][t]`.
#[inline(always)]
fn transform_into_first<const A: usize, const O: usize>(
    taps: &[&[f32]; 6],
    dst: &mut [&mut [f32]; 6],
    n: usize,
    f: impl Fn([f32; A]) -> [f32; A],
) {
    let taps: [&[f32]; A] = std::array::from_fn(|k| &taps[k][..n]);
    let mut out: [&mut [f32]; O] = std::array::from_fn(|_| &mut [][..]);
    for (o, d) in out.iter_mut().zip(dst.iter_mut()) {
        *o = &mut std::mem::take(d)[..n];
    }
    for t in 0..n {
        let y = f(std::array::from_fn(|k| taps[k][t]));
        for j in 0..O {
            out[j][t] = y[j];
        }
    }
}

#[cfg(test)]
mod tests;
