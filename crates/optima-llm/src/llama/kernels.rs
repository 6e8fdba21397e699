//! The forward pass's kernels: RMSNorm, SwiGLU, GEMM-backed linear layers, RoPE, blocked causal
//! attention.

use faer::{Accum, Par};
use faer_ext::IntoFaer;
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis, s};
use rayon::prelude::*;

use super::*;

pub(super) fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// `gate ← silu(gate) · up`, element by element (SwiGLU), on slices of rows in parallel: a plain
/// slice loop, which vectorizes.
pub(super) fn swiglu(mut gate: ArrayViewMut2<'_, f32>, up: ArrayView2<'_, f32>) {
    const CHUNK: usize = 16 * 1024;
    match (gate.as_slice_mut(), up.as_slice()) {
        (Some(g), Some(u)) if g.len() == u.len() => {
            g.par_chunks_mut(CHUNK).zip(u.par_chunks(CHUNK)).for_each(|(g, u)| {
                g.iter_mut().zip(u).for_each(|(g, &u)| *g = silu(*g) * u);
            });
        }
        _ => ndarray::Zip::from(&mut gate).and(&up).par_for_each(|g, &u| *g = silu(*g) * u),
    }
}

/// `eˣ` in f32 to about 2 ulp, clamped to `[e^−87.3, e^88]` (NaN stays NaN).
///
/// Written out rather than calling libm's `expf`: after faer's AVX-512 GEMM kernels have run on
/// a thread, glibc's VEX-encoded `expf` runs about 30× slower there (measured: 6 ns → 200 ns per
/// call), which made the softmax and SwiGLU dominate the whole forward pass.
#[inline]
pub(super) fn exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2²³: adding and subtracting it rounds to an integer
    let x = x.clamp(-87.3, 88.0);
    let k = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    // r = x − k·ln 2 in two parts (Cody–Waite), |r| ≤ ln 2 / 2.
    let r = x - k * 0.693_145_75 - k * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r / 5040.0))))));
    p * f32::from_bits(((k as i32 + 127) as u32) << 23)
}

/// `x / sqrt(mean(x²) + ε) · gain`, row by row.
pub(super) fn rms_norm(x: ArrayView2<'_, f32>, gain: &[f32], eps: f32) -> Array2<f32> {
    let mut out = x.to_owned();
    let n = x.ncols().max(1) as f64;
    out.axis_iter_mut(Axis(0)).into_par_iter().for_each(|mut row| {
        let mean_sq = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / n;
        let scale = (1.0 / (mean_sq + f64::from(eps)).sqrt()) as f32;
        row.iter_mut().zip(gain).for_each(|(v, &g)| *v = *v * scale * g);
    });
    out
}

/// `x Wᵀ` for `x` `[T, in]` and `w` `[out, in]`.
pub(super) fn linear(x: ArrayView2<'_, f32>, w: ArrayView2<'_, f32>, par: Par) -> Array2<f32> {
    let mut out = Array2::<f32>::zeros((x.nrows(), w.nrows()));
    faer::linalg::matmul::matmul(
        out.view_mut().into_faer(),
        Accum::Replace,
        x.into_faer(),
        w.into_faer().transpose(),
        1.0,
        par,
    );
    out
}

/// `dst += x Wᵀ` (a residual connection).
pub(super) fn linear_add(dst: ArrayViewMut2<'_, f32>, x: ArrayView2<'_, f32>, w: ArrayView2<'_, f32>, par: Par) {
    faer::linalg::matmul::matmul(dst.into_faer(), Accum::Add, x.into_faer(), w.into_faer().transpose(), 1.0, par);
}

/// cos/sin of `pos · θ^(−2i/d)` for positions `0..T` and pairs `0..d/2`.
pub(super) struct RopeTable {
    pub(super) cos: Vec<f32>,
    pub(super) sin: Vec<f32>,
    half: usize,
}

impl RopeTable {
    #[allow(clippy::indexing_slicing)] // pos < t and i < half: the tables are t × half.
    pub(super) fn new(t: usize, head_dim: usize, theta: f32) -> Self {
        let half = head_dim / 2;
        // One rotation step per pair, then positions by angle addition in f64 (error ~ T·1e-16),
        // which keeps libm's sin/cos (slow after GEMM, see `exp`) out of an O(T·d) loop.
        let steps: Vec<(f64, f64)> =
            (0..half).map(|i| (f64::from(theta).powf(-2.0 * i as f64 / head_dim as f64)).sin_cos()).collect();
        let mut cos = vec![0.0f32; t * half];
        let mut sin = vec![0.0f32; t * half];
        let mut current: Vec<(f64, f64)> = vec![(0.0, 1.0); half];
        for pos in 0..t {
            for (i, (state, &(s1, c1))) in current.iter_mut().zip(&steps).enumerate() {
                cos[pos * half + i] = state.1 as f32;
                sin[pos * half + i] = state.0 as f32;
                let (s, c) = *state;
                *state = (s * c1 + c * s1, c * c1 - s * s1);
            }
        }
        Self { cos, sin, half }
    }

    /// Rotates adjacent pairs `(2i, 2i+1)` of every head of `x` `[T, heads · head_dim]`, row t at
    /// position t.
    #[allow(clippy::indexing_slicing)] // The table is built for x's T rows, so (pos + 1) · half fits.
    pub(super) fn apply(&self, mut x: ArrayViewMut2<'_, f32>, head_dim: usize) {
        let half = self.half;
        x.axis_iter_mut(Axis(0)).into_par_iter().enumerate().for_each(|(pos, mut row)| {
            let cos = &self.cos[pos * half..(pos + 1) * half];
            let sin = &self.sin[pos * half..(pos + 1) * half];
            match row.as_slice_mut() {
                Some(values) => rotate_pairs(values, cos, sin, head_dim),
                None => {
                    let mut values = row.to_vec();
                    rotate_pairs(&mut values, cos, sin, head_dim);
                    row.assign(&ndarray::aview1(&values));
                }
            }
        });
    }
}

/// Rotates pair i of every `head_dim`-wide head in `row` by the angle with `cos[i]`, `sin[i]`.
pub(super) fn rotate_pairs(row: &mut [f32], cos: &[f32], sin: &[f32], head_dim: usize) {
    for head in row.chunks_exact_mut(head_dim) {
        for ((pair, &c), &s) in head.chunks_exact_mut(2).zip(cos).zip(sin) {
            if let [x0, x1] = pair {
                (*x0, *x1) = (*x0 * c - *x1 * s, *x0 * s + *x1 * c);
            }
        }
    }
}

/// Causal grouped-query attention: query head h reads key/value head `h / (heads / kv_heads)`.
/// Returns `[T, heads · head_dim]`.
pub(super) fn attention(
    config: &LlamaConfig,
    q: ArrayView2<'_, f32>,
    k: ArrayView2<'_, f32>,
    v: ArrayView2<'_, f32>,
) -> Array2<f32> {
    let t = q.nrows();
    let d = config.head_dim;
    let group = config.heads / config.kv_heads;
    let scale = 1.0 / (d as f32).sqrt();
    let row_blocks = t.div_ceil(ATTENTION_ROW_BLOCK);
    let pieces: Vec<(usize, usize, Array2<f32>)> = (0..config.heads * row_blocks)
        .into_par_iter()
        .map(|task| {
            let (h, rb) = (task / row_blocks, task % row_blocks);
            let g = h / group;
            let r0 = rb * ATTENTION_ROW_BLOCK;
            let r1 = (r0 + ATTENTION_ROW_BLOCK).min(t);
            let qh = q.slice(s![r0..r1, h * d..(h + 1) * d]);
            let kh = k.slice(s![..r1, g * d..(g + 1) * d]);
            let vh = v.slice(s![..r1, g * d..(g + 1) * d]);
            let rows = r1 - r0;
            let mut scores = vec![0.0f32; rows * r1];
            faer::linalg::matmul::matmul(
                faer::MatMut::from_row_major_slice_mut(&mut scores, rows, r1),
                Accum::Replace,
                qh.into_faer(),
                kh.into_faer().transpose(),
                scale,
                Par::Seq,
            );
            for (i, row) in scores.chunks_exact_mut(r1).enumerate() {
                // Row i is position r0 + i: it sees keys 0..=r0 + i.
                let (visible, future) = row.split_at_mut(r0 + i + 1);
                let max = visible.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                // The exponentials in a loop of their own, which vectorizes; the sum after it, in
                // the same order as ever.
                visible.iter_mut().for_each(|v| *v = exp(*v - max));
                let sum = visible.iter().fold(0.0f32, |sum, &v| sum + v);
                let inv = 1.0 / sum;
                visible.iter_mut().for_each(|v| *v *= inv);
                future.fill(0.0);
            }
            let mut out = Array2::<f32>::zeros((r1 - r0, d));
            faer::linalg::matmul::matmul(
                out.view_mut().into_faer(),
                Accum::Replace,
                faer::MatRef::from_row_major_slice(&scores, rows, r1),
                vh.into_faer(),
                1.0,
                Par::Seq,
            );
            (h, r0, out)
        })
        .collect();
    let mut attn = Array2::<f32>::zeros((t, config.heads * d));
    for (h, r0, piece) in pieces {
        attn.slice_mut(s![r0..r0 + piece.nrows(), h * d..(h + 1) * d]).assign(&piece);
    }
    attn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_over_the_f32_range() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * f64::from(i) / 200_000.0;
            let got = f64::from(exp(x as f32));
            let want = f64::from(x as f32).exp();
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(f32::NEG_INFINITY) < 1e-37);
        assert!(exp(f32::INFINITY).is_finite());
        assert!(silu(-1e4).abs() < 1e-30 && silu(1e4) == 1e4);
    }

    #[test]
    fn swiglu_is_silu_of_gate_times_up_on_contiguous_and_strided_arrays() {
        let t = 3 * 16 * 1024 / 40 + 7; // more than one parallel chunk of rows, and a ragged end
        let gate = Array2::from_shape_fn((t, 40), |(i, j)| ((i * 40 + j) as f32 * 0.37).sin() * 9.0);
        let up = Array2::from_shape_fn((t, 40), |(i, j)| ((i + 3 * j) as f32 * 0.11).cos());
        let want = Array2::from_shape_fn((t, 40), |(i, j)| silu(gate[(i, j)]) * up[(i, j)]);
        let mut got = gate.clone();
        swiglu(got.view_mut(), up.view());
        assert_eq!(got, want);
        // Column-major views take the element-wise path; the same values.
        let (mut gate_t, up_t) = (gate.t().to_owned(), up.t().to_owned());
        swiglu(gate_t.view_mut().reversed_axes(), up_t.view().reversed_axes());
        assert_eq!(gate_t.t(), want);
        assert!(silu(2.0) > 1.76 && silu(2.0) < 1.77, "silu(2) = 2 / (1 + e^-2) ≈ 1.7616");
    }

    #[test]
    fn rope_table_matches_direct_angles() {
        let table = RopeTable::new(3000, 64, 1e5);
        for pos in [0usize, 1, 17, 511, 2999] {
            for i in [0usize, 1, 13, 31] {
                let angle = pos as f64 * 1e5f64.powf(-2.0 * i as f64 / 64.0);
                assert!((f64::from(table.cos[pos * 32 + i]) - angle.cos()).abs() < 1e-6);
                assert!((f64::from(table.sin[pos * 32 + i]) - angle.sin()).abs() < 1e-6);
            }
        }
    }
}
