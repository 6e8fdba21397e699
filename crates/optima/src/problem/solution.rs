//! What a solver returns: the reconstructed weights and a report that certifies them.

use ndarray::Array2;

/// How one row's solve ended.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(tag = "status", rename_all = "snake_case"))]
pub enum RowStatus {
    /// Solved exactly (to rounding) as posed.
    Solved,
    /// Solved exactly after adding `extra_damping` to the diagonal because the factorization failed.
    Regularized {
        /// Absolute damping added on top of the Hessian's own.
        extra_damping: f64,
        /// Factorizations tried.
        attempts: u32,
    },
    /// An iterative solver reached the requested tolerance.
    ReachedTolerance,
    /// An iterative solver stopped at its iteration cap before the tolerance.
    MaxIterations,
    /// The row could not be solved; the mask-only weights were returned for it.
    NumericalError,
}

impl RowStatus {
    /// Whether the row's answer is as good as the solver promises.
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Solved | Self::Regularized { .. } | Self::ReachedTolerance)
    }
}

/// Per-row figures, all measured on the returned weights with the Hessian actually solved.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RowReport {
    /// `f_i = (ŵ−w_i)ᵀH(ŵ−w_i)`.
    pub objective: f64,
    /// `f_i` of the mask-only answer.
    pub objective_mask_only: f64,
    /// `‖(H(ŵ−w_i))_S‖∞ / max(‖(H w_i)_S‖∞, tiny)`.
    pub kkt_residual: f64,
    /// `‖ŵ_P‖∞` (0 whenever the solver honours the mask).
    pub max_abs_pruned: f64,
    /// Iterations (1 for exact solvers).
    pub iterations: usize,
    /// How the solve ended.
    pub status: RowStatus,
}

/// The whole layer's figures.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SolveReport {
    /// Solver name.
    pub solver: String,
    /// Rows `m`.
    pub m: usize,
    /// Inputs `n`.
    pub n: usize,
    /// Per-row figures.
    pub rows: Vec<RowReport>,
    /// `Σ_i f_i`.
    pub objective: f64,
    /// `Σ_i f_i` of the mask-only answer.
    pub objective_mask_only: f64,
    /// `Σ_i w_iᵀ H w_i`, the layer's output energy.
    pub output_energy: f64,
    /// `E` before reconstruction: mask-only objective / output energy.
    pub error_before: f64,
    /// `E` after reconstruction: objective / output energy.
    pub error_after: f64,
    /// Largest per-row KKT residual.
    pub kkt_residual: f64,
    /// Largest `|ŵ_ij|` over pruned entries.
    pub max_abs_pruned: f64,
    /// Largest per-row iteration count.
    pub iterations: usize,
    /// Rows whose status is not a success.
    pub failed_rows: usize,
    /// Rows that needed extra damping.
    pub regularized_rows: usize,
    /// Wall time of the solve alone, seconds.
    pub seconds: f64,
    /// Wall time of computing this report, seconds.
    pub evaluation_seconds: f64,
    /// Row chunks the layer was solved in (1 unless a memory budget split it).
    pub chunks: usize,
}

/// Reconstructed weights with their report.
#[derive(Clone, Debug)]
pub struct Solution {
    /// `Ŵ` (m×n), pruned entries exactly 0.
    pub weight: Array2<f64>,
    /// The certificate.
    pub report: SolveReport,
}

impl SolveReport {
    /// The layer's figures from its rows: sums, maxima and counts, with `E = objective / energy`.
    pub fn from_rows(
        solver: &str,
        n: usize,
        rows: Vec<RowReport>,
        output_energy: f64,
        seconds: f64,
        evaluation_seconds: f64,
    ) -> Self {
        let objective: f64 = rows.iter().map(|r| r.objective).sum();
        let objective_mask_only: f64 = rows.iter().map(|r| r.objective_mask_only).sum();
        let ratio = |x: f64| if output_energy > 0.0 { x / output_energy } else { 0.0 };
        Self {
            solver: solver.to_string(),
            m: rows.len(),
            n,
            objective,
            objective_mask_only,
            output_energy,
            error_before: ratio(objective_mask_only),
            error_after: ratio(objective),
            kkt_residual: rows.iter().map(|r| r.kkt_residual).fold(0.0, f64::max),
            max_abs_pruned: rows.iter().map(|r| r.max_abs_pruned).fold(0.0, f64::max),
            iterations: rows.iter().map(|r| r.iterations).max().unwrap_or(0),
            failed_rows: rows.iter().filter(|r| !r.status.is_success()).count(),
            regularized_rows: rows.iter().filter(|r| matches!(r.status, RowStatus::Regularized { .. })).count(),
            rows,
            seconds,
            evaluation_seconds,
            chunks: 1,
        }
    }

    /// One report for a layer solved in row chunks, `parts` in row order.
    pub fn concat(parts: Vec<SolveReport>) -> Option<Self> {
        let first = parts.first()?;
        let (solver, n) = (first.solver.clone(), first.n);
        let energy = parts.iter().map(|p| p.output_energy).sum();
        let seconds = parts.iter().map(|p| p.seconds).sum();
        let evaluation = parts.iter().map(|p| p.evaluation_seconds).sum();
        let chunks = parts.iter().map(|p| p.chunks).sum();
        let rows = parts.into_iter().flat_map(|p| p.rows).collect();
        Some(Self { chunks, ..Self::from_rows(&solver, n, rows, energy, seconds, evaluation) })
    }
}
