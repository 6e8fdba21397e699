//! `direct` on the device: rows with identical masks form a group; for groups of the same kept
//! size k, many at a time, a kernel gathers each `H_SS` (k×k, f64), cuSOLVER factors them in one
//! batched Cholesky, and one batched triangular solve per row finds `δ_S` from
//! `H_SS δ_S = −(H d0)_S` (the primal form of `solve/direct.rs`; `D0·H` is one DGEMM). Groups
//! whose factorization fails, or whose answer is not finite, are solved by the CPU `direct` with
//! its regularizing retries, so every row ends as the CPU's would.
//!
//! Only the primal form runs on the device: at 50% and at 2:4 (the shapes it is meant for) the
//! two forms cost the same and the CPU takes the primal too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use ndarray::{Array2, ArrayView2, Axis};

use super::pcg::row_major;
use crate::backend::cuda::CudaBackend;
use crate::error::{OptimaError, Result};
use crate::problem::{LayerProblem, Mask, RowStatus, Solution};
use crate::solve::{DirectSettings, DirectSolver, QpSolver, evaluate};

/// Device memory the gathered blocks of one batch may take, bytes.
pub const DEFAULT_BLOCK_BUDGET: usize = 2 << 30;

/// Exact per-row solves on a CUDA device (see the module docs).
#[derive(Debug)]
pub struct CudaDirectSolver {
    backend: Arc<CudaBackend>,
    settings: DirectSettings,
    block_budget: usize,
}

impl CudaDirectSolver {
    /// A solver on `backend`; `settings.parallelism` serves the CPU fallback and the report.
    pub fn new(backend: Arc<CudaBackend>, settings: DirectSettings) -> Self {
        Self { backend, settings, block_budget: DEFAULT_BLOCK_BUDGET }
    }

    /// Caps the device memory of one batch of gathered blocks (at least one block per batch).
    pub fn block_budget(mut self, bytes: usize) -> Self {
        self.block_budget = bytes;
        self
    }
}

struct Group {
    rows: Vec<usize>,
    kept: Vec<usize>,
    pruned: usize,
}

/// The mask's row groups (shared with the CPU's `direct`) with each group's kept columns.
#[allow(clippy::indexing_slicing)] // every group holds at least one row.
fn group_rows(mask: &Mask) -> Vec<Group> {
    let groups = mask.row_groups();
    groups
        .into_iter()
        .map(|rows| Group { kept: mask.kept_indices(rows[0]), pruned: mask.pruned_in_row(rows[0]), rows })
        .collect()
}

impl QpSolver for CudaDirectSolver {
    fn name(&self) -> &str {
        "direct"
    }

    fn solve(&self, problem: &LayerProblem, _warm_start: Option<ArrayView2<'_, f64>>) -> Result<Solution> {
        let par = self.settings.parallelism;
        let start = Instant::now();
        let (weight, status) = self.solve_rows(problem)?;
        let seconds = start.elapsed().as_secs_f64();
        let iterations = vec![1; problem.rows()];
        let report =
            par.install(|| evaluate(self.name(), problem, weight.view(), &iterations, &status, seconds, par))?;
        Ok(Solution { weight, report })
    }
}

impl CudaDirectSolver {
    /// Weights and per-row status of every row (the report is the caller's).
    #[allow(clippy::indexing_slicing)] // group, row and kept-column indices are built from the validated mask (m × n).
    pub(crate) fn solve_rows(&self, problem: &LayerProblem) -> Result<(Array2<f64>, Vec<RowStatus>)> {
        let (m, n) = (problem.rows(), problem.cols());
        let w = problem.weight();
        let groups = group_rows(problem.mask());
        let mut weight = Array2::<f64>::zeros((m, n));
        let mut status = vec![RowStatus::Solved; m];
        let mut by_size: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (g, group) in groups.iter().enumerate() {
            if group.pruned == 0 {
                for &row in &group.rows {
                    weight.row_mut(row).assign(&w.row(row));
                }
            } else if !group.kept.is_empty() {
                by_size.entry(group.kept.len()).or_default().push(g);
            }
        }
        let mut fallback: Vec<usize> = Vec::new();
        if !by_size.is_empty() {
            let backend = &self.backend;
            let _session = backend.session()?;
            let h64 = backend.upload(&row_major(problem.hessian().matrix()))?;
            let d0 = &problem.masked_weight() - &w;
            let d0 = backend.upload(&row_major(d0.view()))?;
            let mut hd0 = backend.zeros::<f64>(m * n)?;
            backend.times_symmetric_f64(&d0, &h64, &mut hd0, n)?;
            drop(d0);
            for (&k, members) in &by_size {
                let per_batch = (self.block_budget / (k * k * 8)).max(1);
                for chunk in members.chunks(per_batch) {
                    let idx: Vec<i32> = chunk.iter().flat_map(|&g| groups[g].kept.iter().map(|&j| j as i32)).collect();
                    let idx_dev = backend.upload(&idx)?;
                    let mut blocks = backend.zeros::<f64>(chunk.len() * k * k)?;
                    backend.gather_blocks_f64(&mut blocks, &h64, &idx_dev, k, n)?;
                    let info = backend.potrf_batched(&mut blocks, k)?;
                    let (mut rows, mut local, mut factor_of) = (Vec::new(), Vec::new(), Vec::new());
                    for (b, &g) in chunk.iter().enumerate() {
                        if info.get(b).copied() == Some(0) {
                            for &row in &groups[g].rows {
                                rows.push(row as i32);
                                local.push(b as i32);
                                factor_of.push(b);
                            }
                        } else {
                            fallback.extend(&groups[g].rows);
                        }
                    }
                    if rows.is_empty() {
                        continue;
                    }
                    let (rows_dev, local_dev) = (backend.upload(&rows)?, backend.upload(&local)?);
                    let mut rhs = backend.zeros::<f64>(rows.len() * k)?;
                    backend.gather_rhs_f64(&mut rhs, &hd0, &idx_dev, &rows_dev, &local_dev, k, n)?;
                    backend.potrs_batched(&blocks, k, &factor_of, &mut rhs)?;
                    backend.note_memory();
                    let delta = backend.download(&rhs)?;
                    for (r, (&row, &b)) in rows.iter().zip(&factor_of).enumerate() {
                        let row = row as usize;
                        let values = delta
                            .get(r * k..(r + 1) * k)
                            .ok_or_else(|| OptimaError::Internal("device direct returned too few values".into()))?;
                        if values.iter().any(|v| !v.is_finite()) {
                            fallback.push(row);
                            continue;
                        }
                        for (&j, &d) in groups[chunk[b]].kept.iter().zip(values) {
                            weight[[row, j]] = w[[row, j]] + d;
                        }
                    }
                }
            }
        }
        if !fallback.is_empty() {
            fallback.sort_unstable();
            let mask = problem.mask();
            let sub_mask = Mask::from_fn(fallback.len(), n, |r, j| mask.is_pruned(fallback[r], j));
            let sub = LayerProblem::new(w.select(Axis(0), &fallback), problem.hessian().clone(), sub_mask)?;
            let cpu = DirectSolver::new(self.settings).solve(&sub, None)?;
            for (r, &row) in fallback.iter().enumerate() {
                weight.row_mut(row).assign(&cpu.weight.row(r));
                status[row] = cpu.report.rows[r].status;
            }
        }
        Ok((weight, status))
    }
}
