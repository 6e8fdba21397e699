//! Masks chosen with the solver in the loop (docs/math.md, "Mask refinement").
//!
//! Starting from another masker's mask, ADMM on the ℓ0-constrained layer problem (in the manner of
//! ALPS, Meng et al. 2024) alternates, in the diagonally normalized space `Ĥ = D^{-1/2} H D^{-1/2}`,
//!
//! ```text
//! x ← (Ĥŵ + ρ(z − u)) (Ĥ + ρI)⁻¹,   z ← project(x + u),   u ← u + x − z
//! ```
//!
//! for all rows at once, with `project` the pattern's projection (the largest `|·|` kept, per row
//! or per N:M group) and ρ growing geometrically so that `x` and `z` meet. The support ADMM ends on
//! is then solved exactly, and each row keeps whichever of the two supports, the starting one or
//! ADMM's, has the lower exact objective: refinement never raises any row's objective.

use std::sync::Arc;
use std::time::Instant;

use ndarray::{Array1, Array2, ArrayView2, Zip};

use super::{Masker, check_inputs, select_lowest};
use crate::backend::Parallelism;
use crate::backend::cpu::{spd_inverse, times_hessian};
use crate::error::{OptimaError, Result};
use crate::problem::{Hessian, LayerProblem, Mask, SolveReport, SparsityPattern};
use crate::solve::{QpSolver, evaluate};

/// Where [`MaskRefiner::propose`] starts ADMM's `z`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
#[non_exhaustive]
pub enum WarmStart {
    /// The exact solution on the starting mask (one solve by the refiner's solver): ADMM settles on
    /// a support near the exact fit. What [`MaskRefiner::refine`] does, and what measured best
    /// end to end (docs/results.md).
    ExactSolution,
    /// The masked weights: no solve at all.
    MaskedWeights,
}

/// Settings of [`MaskRefiner`].
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct RefineSettings {
    /// ADMM iterations at most (each one GEMM of the layer against an n×n matrix).
    pub iterations: usize,
    /// The first penalty ρ, relative to the normalized Hessian's unit diagonal.
    pub rho_start: f64,
    /// The factor ρ grows by every [`RefineSettings::grow_every`] iterations.
    pub rho_growth: f64,
    /// Iterations between growths of ρ (each growth costs one n×n inverse).
    pub grow_every: usize,
    /// ADMM stops early once its support has not changed for this many iterations.
    pub stable_iterations: usize,
    /// Where [`MaskRefiner::propose`] starts ADMM ([`MaskRefiner::refine`] always starts from the
    /// exact solution, which it needs for its per-row choice anyway).
    pub warm_start: WarmStart,
    /// Threads.
    pub parallelism: Parallelism,
}

impl Default for RefineSettings {
    fn default() -> Self {
        Self {
            iterations: 60,
            rho_start: 0.1,
            rho_growth: 1.5,
            grow_every: 5,
            stable_iterations: 9,
            warm_start: WarmStart::ExactSolution,
            parallelism: Parallelism::AllCores,
        }
    }
}

impl RefineSettings {
    /// Checks the settings once, before any work.
    pub fn check(&self) -> Result<()> {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !(positive(self.rho_start) && self.rho_growth.is_finite() && self.rho_growth >= 1.0) {
            return Err(OptimaError::InvalidSetting(format!(
                "refinement needs rho_start > 0 and rho_growth ≥ 1 (got {}, {})",
                self.rho_start, self.rho_growth
            )));
        }
        if self.grow_every == 0 || self.stable_iterations == 0 {
            return Err(OptimaError::InvalidSetting(
                "refinement needs grow_every ≥ 1 and stable_iterations ≥ 1".into(),
            ));
        }
        Ok(())
    }

    /// Sets the iteration cap (default 60; 0 keeps the starting mask and only solves it).
    pub fn iterations(mut self, iterations: usize) -> Self {
        self.iterations = iterations;
        self
    }

    /// Sets the first penalty (default 0.1).
    pub fn rho_start(mut self, rho_start: f64) -> Self {
        self.rho_start = rho_start;
        self
    }

    /// Sets the growth factor of ρ (default 1.5).
    pub fn rho_growth(mut self, rho_growth: f64) -> Self {
        self.rho_growth = rho_growth;
        self
    }

    /// Sets where [`MaskRefiner::propose`] starts ADMM (default: the exact solution).
    pub fn warm_start(mut self, warm_start: WarmStart) -> Self {
        self.warm_start = warm_start;
        self
    }

    /// Sets the threads (default: all cores).
    pub fn parallelism(mut self, parallelism: Parallelism) -> Self {
        self.parallelism = parallelism;
        self
    }
}

/// A refined mask with its exact weights and the account of each step.
#[derive(Clone, Debug)]
pub struct Refinement {
    /// The refined mask; it satisfies the pattern exactly.
    pub mask: Mask,
    /// The exact solution on `mask`.
    pub weight: Array2<f64>,
    /// The certificate of `weight` on `mask`.
    pub report: SolveReport,
    /// The layer objective of each step, and the cost.
    pub summary: RefinementSummary,
}

/// What one refinement did: the layer objective `Σ f_i` of each step, rows moved and the cost.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RefinementSummary {
    /// The exact solution on the starting mask.
    pub objective_start: f64,
    /// The exact solution on the support ADMM ended on.
    pub objective_admm: f64,
    /// Row by row the lower of the two, so at most both.
    pub objective: f64,
    /// Rows that took ADMM's support.
    pub rows_changed: usize,
    /// ADMM iterations run.
    pub iterations: usize,
    /// Wall time, seconds (ADMM and both exact solves).
    pub seconds: f64,
}

/// A support proposed by ADMM, not yet solved ([`MaskRefiner::propose`]).
#[derive(Clone, Debug)]
pub struct Proposal {
    /// The support ADMM ended on; it satisfies the pattern exactly.
    pub mask: Mask,
    /// Rows whose support differs from the starting mask's.
    pub rows_changed: usize,
    /// ADMM iterations run.
    pub iterations: usize,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// Refines a starting mask by ADMM on the ℓ0-constrained problem, then certifies it with an exact
/// solver (see the module docs).
#[derive(Clone)]
pub struct MaskRefiner {
    settings: RefineSettings,
    solver: Arc<dyn QpSolver + Send + Sync>,
}

impl std::fmt::Debug for MaskRefiner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskRefiner").field("settings", &self.settings).field("solver", &self.solver.name()).finish()
    }
}

impl MaskRefiner {
    /// A refiner whose supports are solved by `solver` (an exact one, e.g. `auto`, for the
    /// never-worse guarantee to hold for the true optimum of each support).
    pub fn new(settings: RefineSettings, solver: Arc<dyn QpSolver + Send + Sync>) -> Result<Self> {
        settings.check()?;
        Ok(Self { settings, solver })
    }

    /// The settings.
    pub fn settings(&self) -> &RefineSettings {
        &self.settings
    }

    /// ADMM's support from `start` (a mask of `weight` that satisfies `pattern`), started as
    /// [`RefineSettings::warm_start`] says, with the support itself not solved: for a caller that
    /// judges the two supports itself (the pipeline does, on held-out tokens).
    /// [`MaskRefiner::refine`] is the certified path.
    pub fn propose(
        &self,
        weight: ArrayView2<'_, f64>,
        hessian: &Hessian,
        pattern: &SparsityPattern,
        start: &Mask,
    ) -> Result<Proposal> {
        let t = Instant::now();
        self.check_start(weight, hessian, pattern, start)?;
        let problem = LayerProblem::new(weight.to_owned(), hessian.clone(), start.clone())?;
        let start_weight = match self.settings.warm_start {
            WarmStart::ExactSolution => self.solver.solve(&problem, None)?.weight,
            WarmStart::MaskedWeights => problem.masked_weight(),
        };
        let (mask, iterations) = self.admm(weight, hessian, pattern, start_weight.view())?;
        let rows_changed = (0..mask.rows()).filter(|&i| !mask.row_pruned(i).eq(start.row_pruned(i))).count();
        Ok(Proposal { mask, rows_changed, iterations, seconds: t.elapsed().as_secs_f64() })
    }

    fn check_start(
        &self,
        weight: ArrayView2<'_, f64>,
        hessian: &Hessian,
        pattern: &SparsityPattern,
        start: &Mask,
    ) -> Result<()> {
        check_inputs(weight, hessian.raw_diag())?;
        pattern.validate(weight.ncols())?;
        start.validate(pattern)?;
        if start.rows() != weight.nrows() || start.cols() != weight.ncols() {
            return Err(OptimaError::shape(
                "starting mask vs weight",
                format!("{:?}", weight.dim()),
                format!("{}×{}", start.rows(), start.cols()),
            ));
        }
        Ok(())
    }

    /// Refines `start` (a mask of `weight` that satisfies `pattern`).
    pub fn refine(
        &self,
        weight: ArrayView2<'_, f64>,
        hessian: &Hessian,
        pattern: &SparsityPattern,
        start: &Mask,
    ) -> Result<Refinement> {
        let t = Instant::now();
        self.check_start(weight, hessian, pattern, start)?;
        let first = LayerProblem::new(weight.to_owned(), hessian.clone(), start.clone())?;
        let first_solution = self.solver.solve(&first, None)?;
        let (admm_mask, iterations) = self.admm(weight, hessian, pattern, first_solution.weight.view())?;
        let second = LayerProblem::new(weight.to_owned(), hessian.clone(), admm_mask)?;
        let second_solution = self.solver.solve(&second, None)?;

        let takes_admm: Vec<bool> = first_solution
            .report
            .rows
            .iter()
            .zip(&second_solution.report.rows)
            .map(|(a, b)| b.status.is_success() && b.objective < a.objective)
            .collect();
        let rows_changed = takes_admm.iter().filter(|&&b| b).count();
        let choose = |i: usize| takes_admm.get(i).copied().unwrap_or(false);
        let mask = Mask::from_fn(weight.nrows(), weight.ncols(), |i, j| {
            if choose(i) { second.mask().is_pruned(i, j) } else { first.mask().is_pruned(i, j) }
        });
        let mut merged = first_solution.weight;
        for (i, mut row) in merged.rows_mut().into_iter().enumerate() {
            if choose(i) {
                row.assign(&second_solution.weight.row(i));
            }
        }
        let pick = |i: usize, a: &SolveReport, b: &SolveReport| {
            let source = if choose(i) { b } else { a };
            source.rows.get(i).copied()
        };
        let m = weight.nrows();
        let rows: Vec<_> = (0..m).filter_map(|i| pick(i, &first_solution.report, &second_solution.report)).collect();
        let iterations_per_row: Vec<usize> = rows.iter().map(|r| r.iterations).collect();
        let status: Vec<_> = rows.iter().map(|r| r.status).collect();
        let problem = LayerProblem::new(weight.to_owned(), hessian.clone(), mask)?;
        let solve_seconds = first_solution.report.seconds + second_solution.report.seconds;
        let par = self.settings.parallelism;
        let report =
            evaluate(self.solver.name(), &problem, merged.view(), &iterations_per_row, &status, solve_seconds, par);
        let (_, _, mask) = problem.into_parts();
        let summary = RefinementSummary {
            objective_start: first_solution.report.objective,
            objective_admm: second_solution.report.objective,
            objective: report.objective,
            rows_changed,
            iterations,
            seconds: t.elapsed().as_secs_f64(),
        };
        Ok(Refinement { mask, weight: merged, report, summary })
    }

    /// ADMM from `start_weight` (feasible); returns the support it ends on and its iterations.
    /// The iterates are f32: they only choose a support, which the exact solve then certifies.
    fn admm(
        &self,
        weight: ArrayView2<'_, f64>,
        hessian: &Hessian,
        pattern: &SparsityPattern,
        start_weight: ArrayView2<'_, f64>,
    ) -> Result<(Mask, usize)> {
        let s = &self.settings;
        let par = s.parallelism;
        let h = hessian.matrix();
        let n = h.nrows();
        let sqrt_d: Array1<f64> = h.diag().mapv(f64::sqrt);
        let inv_sqrt_d = sqrt_d.mapv(|v| 1.0 / v);
        #[allow(clippy::indexing_slicing)] // i, j < n for an n×n matrix and n-vectors.
        let h_hat = Array2::from_shape_fn((n, n), |(i, j)| h[[i, j]] * inv_sqrt_d[i] * inv_sqrt_d[j]);
        let b = times_hessian((&weight * &sqrt_d).view(), h_hat.view(), par).mapv(|v| v as f32);
        let mut z = (&start_weight * &sqrt_d).mapv(|v| v as f32);
        let mut u = Array2::<f32>::zeros(z.dim());
        let mut mask = select_lowest(z.mapv(|v| f64::from(v.abs())).view(), pattern)?;
        let mut rho = s.rho_start;
        let inverse =
            |rho: f64| -> Result<Array2<f32>> { Ok(spd_inverse(h_hat.view(), rho, par.faer())?.mapv(|v| v as f32)) };
        let mut shifted_inverse = inverse(rho)?;
        let (mut stable, mut done) = (0usize, 0usize);
        let mut rhs = Array2::<f32>::zeros(z.dim());
        while done < s.iterations && stable < s.stable_iterations {
            if done > 0 && done % s.grow_every == 0 {
                rho *= s.rho_growth;
                shifted_inverse = inverse(rho)?;
            }
            let r = rho as f32;
            Zip::from(&mut rhs).and(&b).and(&z).and(&u).for_each(|out, &b, &z, &u| *out = b + r * (z - u));
            // v = x + u, with x = rhs (Ĥ + ρI)⁻¹.
            let mut v = times_hessian(rhs.view(), shifted_inverse.view(), par);
            v += &u;
            let next = select_lowest(v.mapv(|v| f64::from(v.abs())).view(), pattern)?;
            Zip::indexed(&mut z).and(&mut u).and(&v).for_each(|(i, j), z, u, &v| {
                *z = if next.is_pruned(i, j) { 0.0 } else { v };
                *u = v - *z;
            });
            stable = if next == mask { stable + 1 } else { 0 };
            mask = next;
            done += 1;
        }
        if z.iter().any(|v| !v.is_finite()) {
            return Err(OptimaError::Numerical("mask refinement: ADMM produced a non-finite iterate".into()));
        }
        Ok((mask, done))
    }
}

/// A [`Masker`] that refines another masker's mask with a [`MaskRefiner`].
#[derive(Debug)]
pub struct RefinedMasker<M> {
    start: M,
    refiner: MaskRefiner,
    name: String,
}

impl<M: Masker> RefinedMasker<M> {
    /// Refines the masks of `start`.
    pub fn new(start: M, refiner: MaskRefiner) -> Self {
        let name = format!("{}+refine", start.name());
        Self { start, refiner, name }
    }
}

impl<M: Masker> Masker for RefinedMasker<M> {
    fn name(&self) -> &str {
        &self.name
    }

    fn select(&self, weight: ArrayView2<'_, f64>, hessian: &Hessian, pattern: &SparsityPattern) -> Result<Mask> {
        let start = self.start.select(weight, hessian, pattern)?;
        Ok(self.refiner.refine(weight, hessian, pattern, &start)?.mask)
    }
}
