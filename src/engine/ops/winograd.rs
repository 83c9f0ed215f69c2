//! Winograd convolution F(m x m, 3 x 3) for dense 3x3 stride-1 convolutions (13 of ResNet18's
//! 20 convolutions, most of its FLOPs): each `m x m` block of outputs comes from an `a x a` input tile (`a = m + 2`, tiles at a
//! stride of `m`) with `a * a` products per channel pair instead of `9 * m * m`.
//!
//! 1. at load, every filter `g` becomes `U = G g G^T` (`a * a` matrices `[cout][cin]`), packed
//!    for the dense convolution's kernels;
//! 2. input transform ([`transform`]): every tile `d` of every channel becomes `V = B^T d B`,
//!    scattered into `a * a` planes `V[xi][cin][tiles]`;
//! 3. `a * a` matrix products `M[xi] = U[xi] x V[xi]`: each is a 1x1 convolution over a plane of
//!    `tiles` pixels, so the dense convolution's kernels run it unchanged (AVX-512: 8 channels x
//!    3 vectors of tiles, the last 1-4 tiles with the 8 channels in the lanes, or 24 channels x
//!    the one vector of a 7x7 plane's F(2x2) tiles; AVX2 4 x 3 vectors of 8; portable).
//!    Channels in the lanes (the small-plane pointwise kernel) measured slower on ResNet18 at
//!    every size;
//! 4. output transform `Y = A^T M A`, plus the bias, the fused residual (a second input of
//!    the output's shape: ResNet's shortcut, added before the clamp) and the fused clamp, into
//!    the output ([`transform`]).
//!
//! F(2x2) multiplies 2.25x less than the direct convolution, F(4x4) 4x less but with larger
//! rounding errors (its transforms scale by up to 8 and 1/24); the tests bound both against an
//! f64 definition. Which layers take which tile is decided by [`crate::engine::rewrite`].

// The transforms index several rows by one tile index; iterators would hide that.
#![allow(clippy::needless_range_loop)]

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::conv::MR;
use super::planes::Job;
use super::{describe_clip, eval_f32, f32_output_facts, Clip, Geometry, Isa};

mod transform;

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
}

/// The filter transform `G` of F(2x2, 3x3) (`4 x 3`): [`transform_filters_f2`] computes its
/// product without the zeros and ones; the tests check it against this matrix.
#[cfg(test)]
const G2: [[f32; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// The filter transform `G` of F(4x4, 3x3) (`6 x 3`).
const G4: [[f32; 3]; 6] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// The transformed filters of one convolution, packed, and the biases.
pub struct WinogradWeights {
    cin: usize,
    cout: usize,
    packed: Vec<f32>,
    bias: Vec<f32>,
}

impl WinogradWeights {
    /// `U = G g G^T` for every filter of an OIHW 3x3 kernel.
    fn new(tile: Tile, cin: usize, cout: usize, kernel: &[f32], bias: &[f32]) -> WinogradWeights {
        assert_eq!(kernel.len(), cout * cin * 9);
        let a = tile.alpha();
        let groups = cout.div_ceil(MR);
        let mut packed = vec![0f32; a * a * groups * cin * MR];
        let args = (cin, cout, kernel, &mut packed[..]);
        // The same arithmetic (no fused multiply-adds) on 8-lane vectors where the CPU has them.
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // Safety: AVX2 detected just above.
            unsafe {
                match tile {
                    Tile::F2 => transform_filters_f2_avx2(args),
                    Tile::F4 => transform_filters_avx2(&G4, args),
                }
            }
            return WinogradWeights::with_packed(cin, cout, packed, bias);
        }
        match tile {
            Tile::F2 => transform_filters_f2(args),
            Tile::F4 => transform_filters(&G4, args),
        }
        WinogradWeights::with_packed(cin, cout, packed, bias)
    }

    fn with_packed(cin: usize, cout: usize, packed: Vec<f32>, bias: &[f32]) -> WinogradWeights {
        WinogradWeights {
            cin,
            cout,
            packed,
            bias: bias.to_vec(),
        }
    }

    fn groups(&self) -> usize {
        self.cout.div_ceil(MR)
    }

    /// Output channel rows of `M` (the channels past `cout` are computed and dropped).
    fn cout_padded(&self) -> usize {
        self.groups() * MR
    }

    /// `U[xi][co][ci]`.
    fn at(&self, xi: usize, co: usize, ci: usize) -> f32 {
        self.packed[((xi * self.groups() + co / MR) * self.cin + ci) * MR + co % MR]
    }
}

/// What [`transform_filters`] reads and writes: `cin`, `cout`, the OIHW kernel, the packing.
type FilterArgs<'a> = (usize, usize, &'a [f32], &'a mut [f32]);

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transform_filters_avx2<const A: usize>(g: &[[f32; 3]; A], args: FilterArgs) {
    transform_filters(g, args)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transform_filters_f2_avx2(args: FilterArgs) {
    transform_filters_f2(args)
}

/// [`MR`] filters of `kernel` (from `grp * MR`, input channel `ci`) as 9 taps of `MR` lanes,
/// zero past `cout`.
#[inline(always)]
fn gather_filters(
    kernel: &[f32],
    cin: usize,
    cout: usize,
    grp: usize,
    ci: usize,
) -> [[f32; MR]; 9] {
    let mut f = [[0f32; MR]; 9];
    for j in 0..MR.min(cout - grp * MR) {
        let filter = &kernel[((grp * MR + j) * cin + ci) * 9..][..9];
        for t in 0..9 {
            f[t][j] = filter[t];
        }
    }
    f
}

/// [`transform_filters`] for F(2x2) (`G2`), with `G2`'s zeros and ones left out: 4x fewer
/// operations (ResNet18 transforms 1 M filters with F(2x2) at every start). Every value is
/// the same as the general product's, because scaling by 0.5 is exact: `0.5 a + 0.5 b + 0.5 c`
/// rounds as `0.5 (a + b + c)` (only the sign of a zero may differ, `-0 + 0 = +0` there).
#[inline(always)]
fn transform_filters_f2((cin, cout, kernel, packed): FilterArgs) {
    const A: usize = 4;
    let groups = cout.div_ceil(MR);
    assert_eq!(packed.len(), A * A * groups * cin * MR);
    /// `G2 v` for the 3 values `v` of one column (or row), lane by lane.
    #[inline(always)]
    fn g2(v0: &[f32; MR], v1: &[f32; MR], v2: &[f32; MR]) -> [[f32; MR]; 4] {
        let mut out = [[0f32; MR]; 4];
        for j in 0..MR {
            out[0][j] = v0[j];
            out[1][j] = 0.5 * ((v0[j] + v1[j]) + v2[j]);
            out[2][j] = 0.5 * ((v0[j] - v1[j]) + v2[j]);
            out[3][j] = v2[j];
        }
        out
    }
    for grp in 0..groups {
        for ci in 0..cin {
            let f = gather_filters(kernel, cin, cout, grp, ci);
            // G f: column l of f (taps l, 3 + l, 6 + l) becomes column l of gf (4 rows).
            let mut gf = [[[0f32; MR]; 3]; A];
            for l in 0..3 {
                let col = g2(&f[l], &f[3 + l], &f[6 + l]);
                for i in 0..A {
                    gf[i][l] = col[i];
                }
            }
            // (G f) G^T: row i of gf becomes row i of U.
            for i in 0..A {
                let row = g2(&gf[i][0], &gf[i][1], &gf[i][2]);
                for jj in 0..A {
                    let xi = i * A + jj;
                    packed[((xi * groups + grp) * cin + ci) * MR..][..MR].copy_from_slice(&row[jj]);
                }
            }
        }
    }
}

/// `U = G g G^T` into `packed` (`[xi][cout / MR][cin][MR]`), [`MR`] filters at a time so that
/// the arithmetic runs on vectors and every store is a whole block row (ResNet18 has 2.8 M
/// filters to transform at load: one at a time with scattered stores took 0.4 s).
#[inline(always)]
fn transform_filters<const A: usize>(g: &[[f32; 3]; A], (cin, cout, kernel, packed): FilterArgs) {
    let groups = cout.div_ceil(MR);
    assert_eq!(packed.len(), A * A * groups * cin * MR);
    for grp in 0..groups {
        for ci in 0..cin {
            let f = gather_filters(kernel, cin, cout, grp, ci);
            // G f (A x 3), then (G f) G^T (A x A).
            let mut gf = [[[0f32; MR]; 3]; A];
            for i in 0..A {
                for l in 0..3 {
                    for k in 0..3 {
                        for j in 0..MR {
                            gf[i][l][j] += g[i][k] * f[k * 3 + l][j];
                        }
                    }
                }
            }
            for i in 0..A {
                for jj in 0..A {
                    let mut u = [0f32; MR];
                    for l in 0..3 {
                        for j in 0..MR {
                            u[j] += gf[i][l][j] * g[jj][l];
                        }
                    }
                    let xi = i * A + jj;
                    packed[((xi * groups + grp) * cin + ci) * MR..][..MR].copy_from_slice(&u);
                }
            }
        }
    }
}

impl std::fmt::Debug for WinogradWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WinogradWeights({}x{})", self.cout, self.cin)
    }
}

/// tract op: a dense 3x3 stride-1 convolution of an f32 CHW (`rank == 3`) or NCHW
/// (`rank == 4`) tensor by Winograd's algorithm, with weights held by the op, an optional
/// fused residual add and an optional fused clamp (ReLU, ReLU6). Any padding.
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
    /// A residual `Add` fused in: the op takes a second input of the output's shape and adds
    /// it to every output (after the bias, before the clamp, as the unfused graph rounds).
    pub residual: bool,
    weights: Arc<WinogradWeights>,
}

impl PartialEq for FastWinograd {
    fn eq(&self, other: &Self) -> bool {
        self.geo == other.geo
            && self.cout == other.cout
            && self.rank == other.rank
            && self.tile == other.tile
            && self.clip == other.clip
            && self.residual == other.residual
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
        self.residual.hash(state);
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
            tile.alpha() * tile.alpha() * geo.c.max(cout + MR) * layout.stride < u32::MAX as usize
        );
        let weights = WinogradWeights::new(tile, geo.c, cout, kernel, bias);
        Ok(FastWinograd {
            geo,
            cout,
            rank,
            tile,
            clip: None,
            residual: false,
            weights: Arc::new(weights),
        })
    }

    /// Input and output shapes.
    pub fn shapes(&self) -> (TVec<usize>, TVec<usize>) {
        self.geo.shapes(self.cout, self.rank)
    }
}

impl Op for FastWinograd {
    fn name(&self) -> StaticName {
        "FastWinograd".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let g = &self.geo;
        Ok(vec![format!(
            "{}->{} 3x3 {:?} {}{}{}",
            g.c,
            self.cout,
            self.tile,
            g.describe_padding(),
            if self.residual { " + residual" } else { "" },
            describe_clip(self.clip)
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
        let (input_shape, output_shape) = self.shapes();
        let (x, skip) = if self.residual {
            let (x, skip) = args_2!(inputs);
            ensure!(
                skip.datum_type() == f32::datum_type() && skip.shape() == &*output_shape,
                "FastWinograd residual: expected f32 {output_shape:?}, got {:?} {:?}",
                skip.datum_type(),
                skip.shape()
            );
            (x, Some(skip))
        } else {
            (args_1!(inputs), None)
        };
        let skip = match &skip {
            Some(s) => Some(s.try_as_plain_ram()?.as_slice::<f32>()?),
            None => None,
        };
        eval_f32("FastWinograd", &x, &input_shape, &output_shape, |x, out| {
            run(self, x, skip, Isa::detect(), out)
        })
    }
}

impl TypedOp for FastWinograd {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let (input_shape, output_shape) = self.shapes();
        if self.residual {
            let skip = inputs
                .get(1)
                .context("FastWinograd residual: no second input")?;
            ensure!(skip.datum_type == f32::datum_type());
            ensure!(skip.shape.as_concrete() == Some(&*output_shape));
        }
        let arity = 1 + self.residual as usize;
        f32_output_facts(inputs, arity, &input_shape, &output_shape)
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
/// `isa`, plus `skip` (the output's shape) where the op fuses a residual.
pub fn winograd(op: &FastWinograd, x: &[f32], skip: Option<&[f32]>, isa: Isa, out: &mut [f32]) {
    run(op, x, skip, isa, out).unwrap()
}

/// Where tiles, their transforms and the phase planes lie for one geometry.
#[derive(Debug, Clone, Copy)]
struct Layout {
    m: usize,
    a: usize,
    tiles_y: usize,
    tiles_x: usize,
    /// `tiles_y * tiles_x`: the pixels of each product's plane.
    tiles: usize,
    /// `tiles_x` rounded up to whole vectors of [`RUN`]: the transforms run over a row of tiles
    /// in whole vectors, and what they compute past `tiles_x` is overwritten or never read.
    run: usize,
    /// Floats between two channels' planes in `V` and `M`: `tiles` and the slack a row's run
    /// may write past the last tile.
    stride: usize,
    /// Columns of one phase plane (`tiles_x + 1`): padded column `x` is phase `x % m`, index
    /// `x / m`.
    cols: usize,
    /// Floats per phase plane: the `m * tiles_y + 2` rows of the padded input the tiles read,
    /// and the slack a run reads past the last row.
    phase_len: usize,
}

/// The transforms' vector width (AVX-512's 16 lanes; AVX2 and the portable path take two or
/// more steps per run).
const RUN: usize = 16;

impl Layout {
    /// Floats between two `xi` planes of `V` or `M` of `channels` channels: a cache line more
    /// than the channels' planes, so that the `a * a` planes a transform reads or writes
    /// together do not fall into one L1 set (a 7x7 layer's were 64 KiB apart).
    fn xi_len(&self, channels: usize) -> usize {
        channels * self.stride + 16
    }

    fn new(g: &Geometry, tile: Tile) -> Layout {
        let (m, a) = (tile.m(), tile.alpha());
        let (tiles_y, tiles_x) = (g.oh().div_ceil(m), g.ow().div_ceil(m));
        let tiles = tiles_y * tiles_x;
        let run = tiles_x.next_multiple_of(RUN);
        let (rows, cols) = (m * tiles_y + 2, tiles_x + 1);
        Layout {
            m,
            a,
            tiles_y,
            tiles_x,
            tiles,
            run,
            stride: tiles + RUN,
            cols,
            phase_len: rows * cols + run + 1,
        }
    }
}

/// The whole convolution: for each batch item, the input transform into `V`, the products into
/// `M`, the output transform into `out`; each step split across tract's threads.
fn run(
    op: &FastWinograd,
    x: &[f32],
    skip: Option<&[f32]>,
    isa: Isa,
    out: &mut [f32],
) -> TractResult<()> {
    let g = &op.geo;
    let (oh, ow) = (g.oh(), g.ow());
    assert_eq!(x.len(), g.n * g.c * g.h * g.w);
    assert_eq!(out.len(), g.n * op.cout * oh * ow);
    ensure!(
        skip.map(|s| s.len()) == op.residual.then_some(out.len()),
        "FastWinograd: a residual input exactly when the op fuses one"
    );
    let lay = Layout::new(g, op.tile);
    let w = &op.weights;
    let xis = lay.a * lay.a;
    let v_len = xis * lay.xi_len(g.c);
    let m_len = xis * lay.xi_len(w.cout_padded());
    super::planes::with_buffers(v_len, m_len, |v, m| {
        for n in 0..g.n {
            let xn = &x[n * g.c * g.h * g.w..][..g.c * g.h * g.w];
            transform::input(g, &lay, xn, isa, v)?;
            products(op, &lay, v, isa, m)?;
            let item = n * op.cout * oh * ow..(n + 1) * op.cout * oh * ow;
            let skip_n = skip.map(|s| &s[item.clone()]);
            transform::output(op, &lay, m, isa, &mut out[item], skip_n)?;
        }
        Ok(())
    })
}

/// `M[xi] = U[xi] x V[xi]` for every `xi`: a 1x1 convolution of `cin` planes of `tiles` pixels
/// each (at a pitch of `stride`), on the dense convolution's kernels.
fn products(
    op: &FastWinograd,
    lay: &Layout,
    v: &[f32],
    isa: Isa,
    m: &mut [f32],
) -> TractResult<()> {
    let w = &op.weights;
    let (cin, p, stride) = (w.cin, lay.tiles, lay.stride);
    let xis = lay.a * lay.a;
    let groups = w.groups();
    let cout_p = w.cout_padded();
    let (v_xi_len, m_xi_len) = (lay.xi_len(cin), lay.xi_len(cout_p));
    assert!(v.len() >= xis * v_xi_len && m.len() >= xis * m_xi_len);
    let m_addr = m.as_mut_ptr() as usize;
    let lanes = isa.lanes();
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && p <= lanes {
        return products_single_vector(op, lay, v, &super::planes::jobs(1, p, 0, 0, lanes)[0], m);
    }
    // On AVX-512 the few tiles past the last whole vector (a 7x7 plane of tiles ends in one)
    // go channels-in-lanes, where a vector along the plane would carry them in 16 lanes.
    let tail = match p % lanes {
        #[cfg(target_arch = "x86_64")]
        t if isa == Isa::Avx512 && t <= super::x86::conv::TAIL_TILES => t,
        _ => 0,
    };
    let jobs = super::planes::jobs(1, p - tail, 0, 0, lanes);
    let koff: Vec<u32> = (0..cin).map(|ci| (ci * stride) as u32).collect();
    let zeros = [0f32; MR];
    let work = xis * cout_p * cin * p;
    tract_linalg::multithread::par_chunks_mut(
        &mut vec![(); xis * groups],
        1,
        work,
        |first, items| {
            for item in first..first + items.len() {
                let (xi, grp) = (item / groups, item % groups);
                let vx = &v[xi * v_xi_len..][..cin * stride];
                let weights = &w.packed[(xi * groups + grp) * cin * MR..][..cin * MR];
                let m_xi = (m_addr as *mut f32).wrapping_add(xi * m_xi_len);
                let mut outs = [std::ptr::null_mut::<f32>(); MR];
                for j in 0..MR {
                    outs[j] = m_xi.wrapping_add((grp * MR + j) * stride);
                }
                // Safety: item (xi, grp) writes only rows `grp * MR..` of `M[xi]`, `p` floats each;
                // the features were detected for `isa`.
                unsafe {
                    match isa {
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx512 => {
                            for group in jobs.chunks(3) {
                                super::x86::conv::block_avx512(
                                    vx.as_ptr(),
                                    &koff,
                                    weights.as_ptr(),
                                    &zeros,
                                    false,
                                    0.0,
                                    0.0,
                                    group,
                                    &outs,
                                );
                            }
                            if tail > 0 {
                                super::x86::conv::tail_pixels_avx512(
                                    vx.as_ptr(),
                                    &koff,
                                    weights.as_ptr(),
                                    p - tail,
                                    tail,
                                    &outs,
                                );
                            }
                        }
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx2 => {
                            for group in jobs.chunks(3) {
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
                        _ => products_portable(w, xi, grp, vx, stride, &jobs, &outs),
                    }
                }
            }
            Ok(())
        },
    )
}

/// [`products`] when each plane is one vector of tiles (a 7x7 plane's F(2x2) products), on
/// AVX-512, three blocks of output channels at a time ([`super::x86::conv::block3_single_vector`]).
#[cfg(target_arch = "x86_64")]
fn products_single_vector(
    op: &FastWinograd,
    lay: &Layout,
    v: &[f32],
    job: &Job,
    m: &mut [f32],
) -> TractResult<()> {
    let w = &op.weights;
    let (cin, stride) = (w.cin, lay.stride);
    let xis = lay.a * lay.a;
    let (groups, cout_p) = (w.groups(), w.cout_padded());
    let (v_xi_len, m_xi_len) = (lay.xi_len(cin), lay.xi_len(cout_p));
    let triples = groups.div_ceil(3);
    let m_addr = m.as_mut_ptr() as usize;
    let koff: Vec<u32> = (0..cin).map(|ci| (ci * stride) as u32).collect();
    let work = xis * cout_p * cin * lay.tiles;
    tract_linalg::multithread::par_chunks_mut(
        &mut vec![(); xis * triples],
        1,
        work,
        |first, items| {
            for item in first..first + items.len() {
                let (xi, t) = (item / triples, item % triples);
                let vx = &v[xi * v_xi_len..][..cin * stride];
                let blocks = (groups - 3 * t).min(3);
                let block = |b: usize| {
                    w.packed[(xi * groups + 3 * t + b) * cin * MR..][..cin * MR].as_ptr()
                };
                let mut weights = [std::ptr::null::<f32>(); 3];
                for (b, w) in weights.iter_mut().enumerate().take(blocks) {
                    *w = block(b);
                }
                let m_xi = (m_addr as *mut f32).wrapping_add(xi * m_xi_len);
                let mut outs = [std::ptr::null_mut::<f32>(); 3 * MR];
                for (j, o) in outs.iter_mut().enumerate().take(blocks * MR) {
                    *o = m_xi.wrapping_add((3 * t * MR + j) * stride);
                }
                // Safety: AVX-512F (the caller checked `isa`); item (xi, t) writes only rows
                // `3 * t * MR..` of `M[xi]`, within the job's lanes.
                unsafe {
                    super::x86::conv::block3_single_vector(
                        vx.as_ptr(),
                        &koff,
                        &weights[..blocks],
                        job,
                        &outs[..blocks * MR],
                    )
                };
            }
            Ok(())
        },
    )
}

/// One item of [`products`] in plain Rust: [`MR`] output channels of `M[xi]`.
///
/// # Safety
/// `outs[j]` points at row `grp * MR + j` of `M[xi]`, `stride` floats.
unsafe fn products_portable(
    w: &WinogradWeights,
    xi: usize,
    grp: usize,
    vx: &[f32],
    stride: usize,
    jobs: &[Job],
    outs: &[*mut f32; MR],
) {
    for j in 0..MR {
        let co = grp * MR + j;
        // Safety: row `co` of `M[xi]` belongs to this item.
        let row = unsafe { std::slice::from_raw_parts_mut(outs[j], stride) };
        row.fill(0.0);
        if co >= w.cout {
            continue;
        }
        for ci in 0..w.cin {
            let u = w.at(xi, co, ci);
            let src = &vx[ci * stride..][..stride];
            for job in jobs {
                let (at, n) = (job.inp as usize, job.lanes as usize);
                for (o, s) in row[at..at + n].iter_mut().zip(&src[at..at + n]) {
                    *o += u * s;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
