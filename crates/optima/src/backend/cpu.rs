//! CPU kernels on faer and rayon: GEMM against the shared Hessian, Cholesky with bounded retries.

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use faer_ext::IntoFaer;
use ndarray::{Array2, ArrayView2};

use crate::error::{OptimaError, Result};

/// How many threads a computation may use, as an explicit value (in the manner of faer's `Par`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Parallelism {
    /// One thread.
    Sequential,
    /// Every core rayon sees.
    #[default]
    AllCores,
    /// Exactly this many threads (≥ 1).
    Threads(usize),
}

impl Parallelism {
    /// From a thread count, `0` meaning all cores.
    pub fn from_threads(threads: usize) -> Self {
        match threads {
            0 => Self::AllCores,
            1 => Self::Sequential,
            t => Self::Threads(t),
        }
    }

    /// The number of threads this value stands for.
    pub fn threads(self) -> usize {
        match self {
            Self::Sequential => 1,
            Self::AllCores => rayon::current_num_threads().max(1),
            Self::Threads(t) => t.max(1),
        }
    }

    /// The matching faer parallelism.
    pub fn faer(self) -> Par {
        match self.threads() {
            1 => Par::Seq,
            t => Par::rayon(t),
        }
    }

    /// Runs `work` on a rayon pool of this many threads.
    pub fn install<R: Send>(self, work: impl FnOnce() -> R + Send) -> Result<R> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.threads())
            .build()
            .map_err(|e| OptimaError::InvalidSetting(format!("cannot start {} threads: {e}", self.threads())))?;
        Ok(pool.install(work))
    }
}

/// `A · H` for an m×n `A` and the symmetric n×n `H`: row i is `H a_i` (f64, or f32 where a
/// heuristic needs no more).
pub(crate) fn times_hessian<T>(a: ArrayView2<'_, T>, h: ArrayView2<'_, T>, par: Parallelism) -> Array2<T>
where
    T: faer::traits::ComplexField + faer::traits::Conjugate<Canonical = T>,
{
    let mut out = Array2::from_elem((a.nrows(), h.ncols()), T::zero_impl());
    faer::linalg::matmul::matmul(
        out.view_mut().into_faer(),
        Accum::Replace,
        a.into_faer(),
        h.into_faer(),
        T::one_impl(),
        par.faer(),
    );
    out
}

/// `dst = beta · dst + alpha · XᵀX` for a tokens×n batch `x`, the whole matrix.
/// Only the lower triangle is multiplied (half the flops of a GEMM); the upper is mirrored.
pub(crate) fn add_gram(dst: MatMut<'_, f64>, beta: f64, x: MatRef<'_, f64>, alpha: f64, par: Parallelism) {
    let mut dst = dst;
    let n = dst.ncols();
    for j in 0..n {
        dst.as_mut().col_mut(j).subrows_mut(j, n - j).iter_mut().for_each(|v| *v *= beta);
    }
    gram_lower(dst.as_mut(), Accum::Add, x.transpose(), alpha, par);
    mirror_lower(dst);
}

/// `lower(dst) += alpha · Xᵀ (Xᵀ)ᵀ` for `xt = Xᵀ` (n × tokens, one token per column): the
/// Hessian's streaming update; the strict upper triangle is left as it is (see [`mirror_lower`]).
/// With [`Accum::Replace`] the lower triangle is overwritten instead of added to.
pub(crate) fn gram_lower<T: faer::traits::ComplexField>(
    dst: MatMut<'_, T>,
    accum: Accum,
    xt: MatRef<'_, T>,
    alpha: T,
    par: Parallelism,
) {
    use faer::linalg::matmul::triangular::{BlockStructure, matmul};
    matmul(
        dst,
        BlockStructure::TriangularLower,
        accum,
        xt,
        BlockStructure::Rectangular,
        xt.transpose(),
        BlockStructure::Rectangular,
        alpha,
        par.faer(),
    );
}

/// Copies the strict lower triangle of the square `dst` onto its upper one.
pub(crate) fn mirror_lower(dst: MatMut<'_, f64>) {
    let mut dst = dst;
    let n = dst.ncols();
    for j in 0..n {
        for i in (j + 1)..n {
            dst[(j, i)] = dst[(i, j)];
        }
    }
}

/// How a Cholesky factorization ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Factorization {
    /// Factored as given.
    Clean,
    /// Factored after adding `extra` to the diagonal, on attempt `attempts`.
    Regularized {
        /// Absolute value added to the diagonal.
        extra: f64,
        /// Factorizations tried in all.
        attempts: u32,
    },
}

/// Retries allowed after a failed Cholesky, each adding 100× more diagonal than the last.
pub const MAX_REGULARIZATION_ATTEMPTS: u32 = 6;
/// First extra damping, relative to the mean diagonal.
const FIRST_RELATIVE_EXTRA: f64 = 1e-10;

/// Factors the symmetric matrix that `fill` writes (lower triangle suffices) in place as `L Lᵀ`,
/// in `a`. When a pivot is not positive, refills and retries with growing diagonal damping, at
/// most [`MAX_REGULARIZATION_ATTEMPTS`] more times; `Err` when every attempt fails.
pub fn cholesky_with_retry(
    mut a: MatMut<'_, f64>,
    mut fill: impl FnMut(MatMut<'_, f64>),
    par: Par,
) -> Result<Factorization> {
    let dim = a.nrows();
    let mut buffer = MemBuffer::new(llt::factor::cholesky_in_place_scratch::<f64>(dim, par, Default::default()));
    fill(a.as_mut());
    let mean_diag = (0..dim).map(|j| a[(j, j)].abs()).sum::<f64>() / dim.max(1) as f64;
    let scale = if mean_diag > 0.0 && mean_diag.is_finite() { mean_diag } else { 1.0 };
    let mut extra = 0.0;
    for attempt in 0..=MAX_REGULARIZATION_ATTEMPTS {
        if attempt > 0 {
            fill(a.as_mut());
            extra = if attempt == 1 { FIRST_RELATIVE_EXTRA * scale } else { extra * 100.0 };
            for j in 0..dim {
                a[(j, j)] += extra;
            }
        }
        let stack = MemStack::new(&mut buffer);
        if llt::factor::cholesky_in_place(a.as_mut(), Default::default(), par, stack, Default::default()).is_ok() {
            return Ok(if attempt == 0 {
                Factorization::Clean
            } else {
                Factorization::Regularized { extra, attempts: attempt + 1 }
            });
        }
    }
    Err(OptimaError::Numerical(format!(
        "Cholesky of a {dim}×{dim} block failed even with {extra:e} added to its diagonal"
    )))
}

/// Solves `L Lᵀ X = B` in place for the factor `l` that [`cholesky_with_retry`] left.
pub(crate) fn cholesky_solve(l: MatRef<'_, f64>, rhs: MatMut<'_, f64>, par: Par) {
    let mut buffer = MemBuffer::new(llt::solve::solve_in_place_scratch::<f64>(l.nrows(), rhs.ncols(), par));
    llt::solve::solve_in_place(l, rhs, par, MemStack::new(&mut buffer));
}

/// `(L Lᵀ)⁻¹` (full symmetric) from the factor `l`.
pub(crate) fn cholesky_inverse(l: MatRef<'_, f64>, par: Par) -> Mat<f64> {
    let n = l.nrows();
    let mut inv = Mat::<f64>::zeros(n, n);
    let mut buffer = MemBuffer::new(llt::inverse::inverse_scratch::<f64>(n, par));
    llt::inverse::inverse(inv.as_mut(), l, par, MemStack::new(&mut buffer));
    for j in 0..n {
        for i in 0..j {
            inv[(i, j)] = inv[(j, i)];
        }
    }
    inv
}

/// Factors `a + shift·I` (symmetric; its lower triangle is read) with bounded retries.
#[allow(clippy::indexing_slicing)] // i, j run over the dimensions of the matrix being copied.
pub(crate) fn cholesky_of(a: ArrayView2<'_, f64>, shift: f64, par: Par) -> Result<(Mat<f64>, Factorization)> {
    let n = a.nrows();
    let mut l = Mat::<f64>::zeros(n, n);
    let fill = |mut dst: MatMut<'_, f64>| {
        for j in 0..n {
            for i in j..n {
                dst[(i, j)] = a[[i, j]];
            }
            dst[(j, j)] += shift;
        }
    };
    let factorization = cholesky_with_retry(l.as_mut(), fill, par)?;
    Ok((l, factorization))
}

/// `(a + shift·I)⁻¹` of a symmetric positive definite `a`, as an ndarray matrix.
pub(crate) fn spd_inverse(a: ArrayView2<'_, f64>, shift: f64, par: Par) -> Result<Array2<f64>> {
    let (l, _) = cholesky_of(a, shift, par)?;
    let inv = cholesky_inverse(l.as_ref(), par);
    Ok(Array2::from_shape_fn((a.nrows(), a.nrows()), |(i, j)| inv[(i, j)]))
}
