//! The layer Hessian `H = XᵀX / N` with the damping and dead-input conventions of docs/math.md ("Conventions").

#![allow(clippy::indexing_slicing)] // Indices run over 0..n of a matrix checked square (n × n) before any is used.

use ndarray::{Array2, ArrayView2};

use crate::error::{OptimaError, Result, check_finite};

/// Default relative damping: `λ = 0.01 · mean(diag H)`, as SparseGPT and Wanda use.
pub const DEFAULT_PERCDAMP: f64 = 0.01;

/// Relative asymmetry tolerated (and averaged away) before a matrix is rejected as non-symmetric.
const SYMMETRY_TOLERANCE: f64 = 1e-6;

/// A symmetric positive (semi-)definite n×n Hessian, damped and ready to solve with.
///
/// Built by [`Hessian::new`], which validates the matrix, marks dead inputs (`H_jj = 0`: the input
/// never fires) by setting `H_jj = 1`, and adds `λ I` with `λ = percdamp · mean(diag H)`.
#[derive(Clone, Debug)]
pub struct Hessian {
    /// Shared, so that sub-problems over row chunks of a layer cost no copy.
    matrix: std::sync::Arc<Array2<f64>>,
    raw_diag: Vec<f64>,
    dead: Vec<usize>,
    damping: f64,
    percdamp: f64,
}

impl Hessian {
    /// Validates `matrix` (square, finite, symmetric to rounding, non-negative diagonal), handles
    /// dead inputs and applies relative damping `percdamp` (`0` keeps `H` exactly as given).
    pub fn new(matrix: Array2<f64>, percdamp: f64) -> Result<Self> {
        if !(percdamp.is_finite() && percdamp >= 0.0) {
            return Err(OptimaError::InvalidSetting(format!("damping must be a finite number ≥ 0, got {percdamp}")));
        }
        let (rows, cols) = matrix.dim();
        if rows != cols {
            return Err(OptimaError::shape("hessian", "a square matrix", format!("{rows}×{cols}")));
        }
        if rows == 0 {
            return Err(OptimaError::Empty("hessian has no inputs".into()));
        }
        check_finite("hessian", matrix.view())?;
        let mut matrix = matrix;
        let n = rows;
        let max_diag = (0..n).map(|j| matrix[[j, j]].abs()).fold(0.0, f64::max);
        for j in 0..n {
            let d = matrix[[j, j]];
            if d < 0.0 {
                return Err(OptimaError::NegativeDiagonal { index: j, value: d });
            }
        }
        let tol = SYMMETRY_TOLERANCE * max_diag.max(f64::MIN_POSITIVE);
        for i in 0..n {
            for j in (i + 1)..n {
                let (a, b) = (matrix[[i, j]], matrix[[j, i]]);
                if (a - b).abs() > tol {
                    return Err(OptimaError::NotSymmetric { i, j, a, b });
                }
                let mean = 0.5 * (a + b);
                matrix[[i, j]] = mean;
                matrix[[j, i]] = mean;
            }
        }
        // Row-major from here on: the solvers gather rows of H (a column-major H made each of
        // those reads a cache miss).
        if !matrix.is_standard_layout() {
            matrix = matrix.as_standard_layout().into_owned();
        }
        let raw_diag: Vec<f64> = (0..n).map(|j| matrix[[j, j]]).collect();
        let dead: Vec<usize> = (0..n).filter(|&j| raw_diag[j] == 0.0).collect();
        for &j in &dead {
            matrix[[j, j]] = 1.0;
        }
        let mean_diag = (0..n).map(|j| matrix[[j, j]]).sum::<f64>() / n as f64;
        let damping = percdamp * mean_diag;
        for j in 0..n {
            matrix[[j, j]] += damping;
        }
        Ok(Self { matrix: std::sync::Arc::new(matrix), raw_diag, dead, damping, percdamp })
    }

    /// The matrix as given: without the damping, dead inputs' diagonal back at 0.
    pub fn undamped(&self) -> Array2<f64> {
        let mut matrix = self.matrix.as_ref().clone();
        for (j, &d) in self.raw_diag.iter().enumerate() {
            matrix[[j, j]] = d;
        }
        matrix
    }

    /// Number of inputs `n`.
    pub fn dim(&self) -> usize {
        self.matrix.nrows()
    }

    /// The damped matrix that solvers use.
    pub fn matrix(&self) -> ArrayView2<'_, f64> {
        self.matrix.view()
    }

    /// The diagonal before dead-input handling and damping (`‖X_j‖² / N`), as Wanda scores it.
    pub fn raw_diag(&self) -> &[f64] {
        &self.raw_diag
    }

    /// Inputs whose diagonal was zero: they never fire, so their weights have no effect.
    pub fn dead_inputs(&self) -> &[usize] {
        &self.dead
    }

    /// The absolute damping `λ` added to the diagonal.
    pub fn damping(&self) -> f64 {
        self.damping
    }

    /// The relative damping this Hessian was built with.
    pub fn percdamp(&self) -> f64 {
        self.percdamp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::ShapeBuilder;

    #[test]
    fn a_column_major_matrix_is_stored_row_major_with_the_same_values() {
        let n = 5;
        let value = |i: usize, j: usize| 1.0 / (1 + i + j) as f64 + if i == j { 1.0 } else { 0.0 };
        let column_major = Array2::from_shape_fn((n, n).f(), |(i, j)| value(i, j));
        assert!(!column_major.is_standard_layout());
        let h = Hessian::new(column_major, 0.0).unwrap();
        assert!(h.matrix().is_standard_layout());
        assert_eq!(h.matrix(), Array2::from_shape_fn((n, n), |(i, j)| value(i, j)));
    }
}
