//! Generated layers that look like an LLM's: correlated inputs with a few outlier channels
//! 50–100× larger than the rest (the feature that makes real Hessians ill-conditioned).

use faer::Mat;
use faer_ext::IntoNdarray;
use ndarray::Array2;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

use crate::backend::{Parallelism, cpu::add_gram};

/// Recipe for a generated m×n layer and its calibration Hessian.
#[derive(Clone, Copy, Debug)]
pub struct LlmLikeLayer {
    /// Outputs `m`.
    pub rows: usize,
    /// Inputs `n`.
    pub cols: usize,
    /// Calibration tokens `N` behind the Hessian (fewer than `n` makes it rank-deficient).
    pub tokens: usize,
    /// Fraction of input channels that are outliers (at least two are, when n ≥ 2).
    pub outlier_fraction: f64,
    /// Shared latent factors that correlate the inputs.
    pub factors: usize,
    /// Random seed: the same recipe always yields the same layer.
    pub seed: u64,
}

impl LlmLikeLayer {
    /// An m×n layer with `2n` tokens, 0.5% outlier channels and 16 latent factors.
    pub fn new(rows: usize, cols: usize, seed: u64) -> Self {
        Self { rows, cols, tokens: 2 * cols, outlier_fraction: 0.005, factors: 16, seed }
    }

    /// The weights (m×n) and the undamped Hessian `XᵀX / N` (n×n).
    #[allow(clippy::indexing_slicing)] // scale has one entry per column.
    pub fn generate(&self, par: Parallelism) -> (Array2<f64>, Array2<f64>) {
        let (m, n, t) = (self.rows, self.cols, self.tokens.max(1));
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut normal = || -> f64 { rng.sample(StandardNormal) };
        let mut scale: Vec<f64> = (0..n).map(|_| (0.5 * normal()).exp()).collect();
        let outliers = ((self.outlier_fraction * n as f64).round() as usize).max(2.min(n));
        let mut rng = StdRng::seed_from_u64(self.seed ^ 0x9e37_79b9_7f4a_7c15);
        for _ in 0..outliers {
            let j = rng.random_range(0..n);
            scale[j] *= rng.random_range(50.0..100.0);
        }
        let factors = self.factors;
        let mut rng = StdRng::seed_from_u64(self.seed.wrapping_add(1));
        let mut normal = || -> f64 { rng.sample(StandardNormal) };
        let loadings = Mat::<f64>::from_fn(factors, n, |_, _| normal());
        let latent = Mat::<f64>::from_fn(t, factors, |_, _| normal());
        let mut x = Mat::<f64>::from_fn(t, n, |_, _| normal());
        faer::linalg::matmul::matmul(x.as_mut(), faer::Accum::Add, latent.as_ref(), loadings.as_ref(), 1.0, par.faer());
        for j in 0..n {
            for i in 0..t {
                x[(i, j)] *= scale[j];
            }
        }
        let mut gram = Mat::<f64>::zeros(n, n);
        add_gram(gram.as_mut(), 0.0, x.as_ref(), 1.0 / t as f64, par);
        let hessian = gram.as_ref().into_ndarray().to_owned();
        let mut rng = StdRng::seed_from_u64(self.seed.wrapping_add(2));
        let std = 1.0 / (n as f64).sqrt();
        let weight = Array2::from_shape_fn((m, n), |_| {
            let heavy = if rng.random::<f64>() < 0.01 { 5.0 } else { 1.0 };
            std * heavy * rng.sample::<f64, _>(StandardNormal)
        });
        (weight, hessian)
    }
}
