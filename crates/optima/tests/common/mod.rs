//! Shared test fixtures: random SPD and LLM-like Hessians, random masks, and an independent
//! LAPACK solution of each row's full KKT system.
#![allow(dead_code)]

use ndarray::{Array1, Array2, s};
use ndarray_linalg::Solve;
use optima::synthetic::LlmLikeLayer;
use optima::{Mask, Parallelism};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

/// A random SPD matrix `A Aᵀ / k + 0.1 I` with `k` columns.
pub fn random_spd(n: usize, k: usize, seed: u64) -> Array2<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let a = Array2::from_shape_fn((n, k), |_| rng.sample::<f64, _>(StandardNormal));
    a.dot(&a.t()) / k as f64 + Array2::<f64>::eye(n) * 0.1
}

/// An LLM-like Hessian (outlier channels 50–100×) and weights from the library's generator.
pub fn llm_like(m: usize, n: usize, seed: u64) -> (Array2<f64>, Array2<f64>) {
    LlmLikeLayer::new(m, n, seed).generate(Parallelism::Sequential)
}

/// Random weights.
pub fn random_weight(m: usize, n: usize, seed: u64) -> Array2<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    Array2::from_shape_fn((m, n), |_| rng.sample::<f64, _>(StandardNormal))
}

/// A random mask pruning each entry with probability `p`; a few rows repeat row 0 so that
/// row groups are exercised.
pub fn random_mask(m: usize, n: usize, p: f64, seed: u64) -> Mask {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut mask = Mask::from_fn(m, n, |_, _| rng.random::<f64>() < p);
    for i in (0..m).step_by(3).skip(1) {
        for j in 0..n {
            let bit = mask.is_pruned(0, j);
            mask.set(i, j, bit);
        }
    }
    mask
}

/// The exact answer for row `w` under pruned set `pruned`, from the full KKT system
/// `[H Eᵀ; E 0] [ŵ; μ] = [H w; 0]` solved by LAPACK (LU with pivoting).
pub fn kkt_oracle(h: &Array2<f64>, w: &Array1<f64>, pruned: &[usize]) -> Array1<f64> {
    single_threaded_openblas();
    let n = h.nrows();
    let p = pruned.len();
    let mut a = Array2::<f64>::zeros((n + p, n + p));
    a.slice_mut(s![..n, ..n]).assign(h);
    for (r, &j) in pruned.iter().enumerate() {
        a[[n + r, j]] = 1.0;
        a[[j, n + r]] = 1.0;
    }
    let mut b = Array1::<f64>::zeros(n + p);
    b.slice_mut(s![..n]).assign(&h.dot(w));
    let x = a.solve_into(b).expect("LAPACK solve of the KKT system");
    x.slice(s![..n]).to_owned()
}

/// `(a − w)ᵀ H (a − w)`.
pub fn objective(h: &Array2<f64>, a: &Array1<f64>, w: &Array1<f64>) -> f64 {
    let d = a - w;
    d.dot(&h.dot(&d))
}

unsafe extern "C" {
    fn openblas_set_num_threads(threads: std::ffi::c_int);
}

/// OpenBLAS's own thread pool crashes when test threads call it concurrently; the oracle does
/// not need it.
pub fn single_threaded_openblas() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: a plain setter exported by the libopenblas that ndarray-linalg links.
    ONCE.call_once(|| unsafe { openblas_set_num_threads(1) });
}
