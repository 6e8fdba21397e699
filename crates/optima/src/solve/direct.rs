//! The exact solver: per row, a Cholesky of the smaller of `H_SS` (primal) and `G_PP` with
//! `G = H⁻¹` (dual); rows with identical masks share one factorization; rows run in parallel.

#![allow(clippy::indexing_slicing)] // Dense kernels: every index runs over the dimensions LayerProblem::new validated (m rows, n
// inputs) or over index sets built from the mask.

use std::time::Instant;

use faer::{Accum, Mat, Par};
use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;

use super::{QpSolver, evaluate::evaluate};
use crate::backend::Parallelism;
use crate::backend::cpu::{
    Factorization, cholesky_inverse, cholesky_of, cholesky_solve, cholesky_with_retry, times_hessian,
};
use crate::error::{OptimaError, Result};
use crate::memory::{Bytes, MemoryEstimate};
use crate::problem::{LayerProblem, Mask, RowStatus, Solution};

/// Which closed form `direct` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum DirectForm {
    /// The cheaper one per group of rows, by the cost model `min(k³, p³ + …)` (default).
    #[default]
    Auto,
    /// Always `H_SS ŵ_S = (H w)_S`: one |S|×|S| Cholesky per group.
    Primal,
    /// Always `λ = G_PP⁻¹ w_P`, `ŵ = w − G_{:,P} λ`: one |P|×|P| Cholesky per group.
    Dual,
}

impl std::str::FromStr for DirectForm {
    type Err = OptimaError;

    /// `auto`, `primal` or `dual`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "primal" => Ok(Self::Primal),
            "dual" => Ok(Self::Dual),
            other => Err(OptimaError::InvalidSetting(format!("unknown form {other:?}; choose auto, primal or dual"))),
        }
    }
}

/// Settings of [`DirectSolver`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct DirectSettings {
    /// Threads to use.
    pub parallelism: Parallelism,
    /// Primal, dual or automatic.
    pub form: DirectForm,
}

impl DirectSettings {
    /// Sets the parallelism.
    pub fn parallelism(mut self, parallelism: Parallelism) -> Self {
        self.parallelism = parallelism;
        self
    }

    /// Sets the closed form.
    pub fn form(mut self, form: DirectForm) -> Self {
        self.form = form;
        self
    }
}

/// The exact per-row solver (docs/math.md, "Exact solution"; cost `m · min(k, p)³ / 3`).
#[derive(Clone, Debug, Default)]
pub struct DirectSolver {
    settings: DirectSettings,
}

impl DirectSolver {
    /// A solver with the given settings.
    pub fn new(settings: DirectSettings) -> Self {
        Self { settings }
    }

    /// Its settings.
    pub fn settings(&self) -> &DirectSettings {
        &self.settings
    }
}

/// The flop count of the factorizations `direct` needs: `Σ_i min(k_i, p_i)³ / 3`.
pub fn direct_flops(mask: &Mask) -> f64 {
    (0..mask.rows())
        .map(|i| {
            let p = mask.pruned_in_row(i) as f64;
            let k = mask.cols() as f64 - p;
            k.min(p).powi(3) / 3.0
        })
        .sum()
}

/// Rows that share one mask, and the form chosen for them.
struct Group {
    rows: Vec<usize>,
    kept: Vec<usize>,
    pruned: Vec<usize>,
    dual: bool,
}

/// Per-thread scratch for the k×k blocks: reused from group to group, so a wide layer does not
/// allocate (and page-fault in) a fresh block for every row.
#[derive(Default)]
struct Workspace {
    factor: Vec<f64>,
}

/// The first `k·k` entries of `buffer` as a column-major k×k matrix (grown when needed).
fn square(buffer: &mut Vec<f64>, k: usize) -> faer::MatMut<'_, f64> {
    if buffer.len() < k * k {
        buffer.resize(k * k, 0.0);
    }
    faer::MatMut::from_column_major_slice_mut(&mut buffer[..k * k], k, k)
}

/// One group's answer: `rows.len()` rows of n values, and their status.
struct GroupAnswer {
    values: Vec<f64>,
    status: RowStatus,
}

impl QpSolver for DirectSolver {
    fn name(&self) -> &str {
        "direct"
    }

    /// H⁻¹ or a factor, plus one k×k block per thread.
    fn memory_estimate(&self, cols: usize) -> MemoryEstimate {
        MemoryEstimate {
            fixed: Bytes::f64s(cols * cols) * (1 + self.settings.parallelism.threads()),
            per_row: Bytes::f64s(4 * cols),
        }
    }

    fn solve(&self, problem: &LayerProblem, _warm_start: Option<ArrayView2<'_, f64>>) -> Result<Solution> {
        let par = self.settings.parallelism;
        let start = Instant::now();
        let (weight, status) = par.install(|| self.solve_rows(problem))??;
        let seconds = start.elapsed().as_secs_f64();
        let iterations = vec![1; problem.rows()];
        let report =
            par.install(|| evaluate(self.name(), problem, weight.view(), &iterations, &status, seconds, par))?;
        Ok(Solution { weight, report })
    }
}

impl DirectSolver {
    /// Every row's weights and status, without the report.
    pub(crate) fn solve_rows(&self, problem: &LayerProblem) -> Result<(Array2<f64>, Vec<RowStatus>)> {
        let par = self.settings.parallelism;
        let (m, n) = (problem.rows(), problem.cols());
        let h = problem.hessian().matrix();
        let w = problem.weight();
        let mut groups = group_rows(problem.mask());
        self.choose_forms(&mut groups, n);

        // G = H⁻¹, once, when some group takes the dual form; if H will not factor, go primal.
        let inverse = if groups.iter().any(|g| g.dual) {
            match cholesky_of(h, 0.0, par.faer()) {
                Ok((l, Factorization::Clean)) => Some(cholesky_inverse(l.as_ref(), par.faer())),
                _ => None,
            }
        } else {
            None
        };
        if inverse.is_none() {
            groups.iter_mut().for_each(|g| g.dual = false);
        }
        // Right-hand sides of the primal form: (H d0)_S with d0 = −w on P, 0 on S.
        let h_d0 = if groups.iter().any(|g| !g.dual) {
            let d0 = &problem.masked_weight() - &w;
            Some(times_hessian(d0.view(), h, par))
        } else {
            None
        };

        let inner = if groups.len() < par.threads() { par.faer() } else { Par::Seq };
        let answers: Vec<GroupAnswer> = groups
            .par_iter()
            .map_init(Workspace::default, |ws, g| match (g.dual, &inverse, &h_d0) {
                _ if g.pruned.is_empty() => copy_rows(w, g),
                _ if g.kept.is_empty() => {
                    GroupAnswer { values: vec![0.0; g.rows.len() * n], status: RowStatus::Solved }
                }
                (true, Some(inv), _) => solve_dual(w, inv, g, ws, inner),
                (false, _, Some(h_d0)) => solve_primal(w, h, h_d0.view(), g, ws, inner),
                _ => mask_only(w, g),
            })
            .collect();

        let mut weight = Array2::<f64>::zeros((m, n));
        let mut status = vec![RowStatus::Solved; m];
        for (g, answer) in groups.iter().zip(&answers) {
            for (c, &row) in g.rows.iter().enumerate() {
                let values = answer
                    .values
                    .get(c * n..(c + 1) * n)
                    .ok_or_else(|| OptimaError::Internal("a row group returned too few values".into()))?;
                weight.row_mut(row).iter_mut().zip(values).for_each(|(dst, &v)| *dst = v);
                status[row] = answer.status;
            }
        }
        Ok((weight, status))
    }

    /// Marks the groups that take the dual form: those where `p³/3 + 2p²g + 2npg < k³/3 + 2k²g`
    /// (factor, solve for g rows, and for the dual the product with `G_{:,P}`), provided the
    /// savings pay for computing `H⁻¹` (about `n³` flops).
    fn choose_forms(&self, groups: &mut [Group], n: usize) {
        let factor_and_solve = |dim: usize, rows: usize| {
            let d = dim as f64;
            d.powi(3) / 3.0 + 2.0 * d * d * rows as f64
        };
        let dual_cost = |g: &Group| {
            factor_and_solve(g.pruned.len(), g.rows.len()) + 2.0 * (n * g.pruned.len() * g.rows.len()) as f64
        };
        let primal_cost = |g: &Group| factor_and_solve(g.kept.len(), g.rows.len());
        match self.settings.form {
            DirectForm::Primal => {}
            DirectForm::Dual => groups.iter_mut().for_each(|g| g.dual = true),
            DirectForm::Auto => {
                let savings: f64 = groups.iter().map(|g| (primal_cost(g) - dual_cost(g)).max(0.0)).sum();
                if savings > (n as f64).powi(3) {
                    groups.iter_mut().for_each(|g| g.dual = dual_cost(g) < primal_cost(g));
                }
            }
        }
    }
}

/// The mask's row groups with each group's kept and pruned columns.
#[allow(clippy::indexing_slicing)] // every group holds at least one row.
fn group_rows(mask: &Mask) -> Vec<Group> {
    let groups = mask.row_groups();
    groups
        .into_iter()
        .map(|rows| Group { kept: mask.kept_indices(rows[0]), pruned: mask.pruned_indices(rows[0]), rows, dual: false })
        .collect()
}

fn status_of(f: Factorization) -> RowStatus {
    match f {
        Factorization::Clean => RowStatus::Solved,
        Factorization::Regularized { extra, attempts } => RowStatus::Regularized { extra_damping: extra, attempts },
    }
}

fn copy_rows(w: ArrayView2<'_, f64>, g: &Group) -> GroupAnswer {
    let values = g.rows.iter().flat_map(|&r| w.row(r).to_vec()).collect();
    GroupAnswer { values, status: RowStatus::Solved }
}

/// The mask-only answer, for rows that could not be solved.
fn mask_only(w: ArrayView2<'_, f64>, g: &Group) -> GroupAnswer {
    let mut answer = copy_rows(w, g);
    let n = w.ncols();
    for c in 0..g.rows.len() {
        for &j in &g.pruned {
            answer.values[c * n + j] = 0.0;
        }
    }
    answer.status = RowStatus::NumericalError;
    answer
}

/// `ŵ_S = w_S + δ_S` with `H_SS δ_S = −(H d0)_S`.
fn solve_primal(
    w: ArrayView2<'_, f64>,
    h: ArrayView2<'_, f64>,
    h_d0: ArrayView2<'_, f64>,
    g: &Group,
    ws: &mut Workspace,
    par: Par,
) -> GroupAnswer {
    let (n, k) = (w.ncols(), g.kept.len());
    let mut l = square(&mut ws.factor, k);
    let fill = |mut a: faer::MatMut<'_, f64>| {
        for (b, &jb) in g.kept.iter().enumerate() {
            let h_row = h.row(jb);
            for (a_idx, &ja) in g.kept.iter().enumerate().skip(b) {
                a[(a_idx, b)] = h_row[ja];
            }
        }
    };
    let Ok(factorization) = cholesky_with_retry(l.as_mut(), fill, par) else {
        return mask_only(w, g);
    };
    let mut rhs = Mat::<f64>::from_fn(k, g.rows.len(), |a, c| -h_d0[[g.rows[c], g.kept[a]]]);
    cholesky_solve(l.as_ref(), rhs.as_mut(), par);
    let mut values = vec![0.0; g.rows.len() * n];
    for (c, &row) in g.rows.iter().enumerate() {
        for (a, &j) in g.kept.iter().enumerate() {
            values[c * n + j] = w[[row, j]] + rhs[(a, c)];
        }
    }
    finish(values, factorization, w, g)
}

/// `λ = G_PP⁻¹ w_P`, `ŵ = w − G_{:,P} λ`, pruned entries set to 0.
fn solve_dual(w: ArrayView2<'_, f64>, inv: &Mat<f64>, g: &Group, ws: &mut Workspace, par: Par) -> GroupAnswer {
    let (n, p, rows) = (w.ncols(), g.pruned.len(), g.rows.len());
    let mut l = square(&mut ws.factor, p);
    let fill = |mut a: faer::MatMut<'_, f64>| {
        for (b, &jb) in g.pruned.iter().enumerate() {
            for (a_idx, &ja) in g.pruned.iter().enumerate().skip(b) {
                a[(a_idx, b)] = inv[(ja, jb)];
            }
        }
    };
    let Ok(factorization) = cholesky_with_retry(l.as_mut(), fill, par) else {
        return mask_only(w, g);
    };
    let mut lambda = Mat::<f64>::from_fn(p, rows, |a, c| w[[g.rows[c], g.pruned[a]]]);
    cholesky_solve(l.as_ref(), lambda.as_mut(), par);
    let g_cols = Mat::<f64>::from_fn(n, p, |j, a| inv[(j, g.pruned[a])]);
    let mut out = Mat::<f64>::from_fn(n, rows, |j, c| w[[g.rows[c], j]]);
    faer::linalg::matmul::matmul(out.as_mut(), Accum::Add, g_cols.as_ref(), lambda.as_ref(), -1.0, par);
    let mut values = vec![0.0; rows * n];
    for c in 0..rows {
        for j in 0..n {
            values[c * n + j] = out[(j, c)];
        }
        for &j in &g.pruned {
            values[c * n + j] = 0.0;
        }
    }
    finish(values, factorization, w, g)
}

/// The group's answer, or its mask-only weights if the solve produced a non-finite value.
fn finish(values: Vec<f64>, factorization: Factorization, w: ArrayView2<'_, f64>, g: &Group) -> GroupAnswer {
    if values.iter().all(|v| v.is_finite()) {
        GroupAnswer { values, status: status_of(factorization) }
    } else {
        mask_only(w, g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forms(mask: &Mask, form: DirectForm) -> Vec<bool> {
        let mut groups = group_rows(mask);
        DirectSolver::new(DirectSettings::default().form(form)).choose_forms(&mut groups, mask.cols());
        groups.iter().map(|g| g.dual).collect()
    }

    #[test]
    fn auto_form_picks_the_smaller_system() {
        // 25% pruned: |P| = 40 ≪ |S| = 120, many rows: the dual pays for H⁻¹.
        let sparse_p = Mask::from_fn(24, 160, |i, j| (i * 7919 + j * 104_729) % 97 < 24);
        assert!(forms(&sparse_p, DirectForm::Auto).iter().all(|&d| d));
        // 75% pruned: the primal is smaller.
        let sparse_s = Mask::from_fn(24, 160, |i, j| (i * 7919 + j * 104_729) % 97 >= 24);
        assert!(forms(&sparse_s, DirectForm::Auto).iter().all(|&d| !d));
        // One row only: H⁻¹ (n³) costs more than it saves.
        let one_row = Mask::from_fn(1, 160, |_, j| j % 4 == 0);
        assert!(forms(&one_row, DirectForm::Auto).iter().all(|&d| !d));
        assert!(forms(&sparse_s, DirectForm::Dual).iter().all(|&d| d));
    }

    #[test]
    fn identical_rows_form_one_group() {
        let mask = Mask::from_fn(6, 10, |i, j| (i % 2 == 0) == (j < 5));
        let groups = group_rows(&mask);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].rows, vec![0, 2, 4]);
        assert_eq!(groups[1].rows, vec![1, 3, 5]);
        assert_eq!(groups[0].pruned, vec![0, 1, 2, 3, 4]);
    }
}
