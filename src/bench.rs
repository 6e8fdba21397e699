//! Side-by-side measurements on generated LLM-like layers: the engine behind `optima bench`.

use std::time::Instant;

use faer::Mat;
use rayon::prelude::*;
use serde::Serialize;

use crate::backend::Parallelism;
use crate::backend::cpu::cholesky_with_retry;
use crate::error::{OptimaError, Result};
use crate::mask::{Masker, WandaMasker};
use crate::problem::{Hessian, LayerProblem, SparsityPattern, synthetic::LlmLikeLayer};
use crate::solve::{DirectSettings, DirectSolver, QpSolver, direct_flops};

/// One generated layer to measure.
#[derive(Clone, Debug)]
pub struct BenchCase {
    /// Outputs.
    pub rows: usize,
    /// Inputs.
    pub cols: usize,
    /// The pattern its Wanda mask follows.
    pub pattern: SparsityPattern,
    /// Generator seed.
    pub seed: u64,
}

/// One row of the bench table.
#[derive(Clone, Debug, Serialize)]
pub struct BenchRow {
    /// `m×n`.
    pub shape: String,
    /// The pattern.
    pub pattern: String,
    /// The solver.
    pub solver: String,
    /// Threads used.
    pub threads: usize,
    /// Solve seconds.
    pub seconds: f64,
    /// Rows per second.
    pub rows_per_second: f64,
    /// Useful flops (`Σ min(k,p)³/3`) per second, in GFLOP/s.
    pub gflops: f64,
    /// faer's Cholesky throughput on the same block size, rows and threads, GFLOP/s.
    pub cholesky_gflops: f64,
    /// `gflops / cholesky_gflops`.
    pub fraction_of_cholesky: f64,
    /// `E` before reconstruction (mask only).
    pub error_before: f64,
    /// `E` after.
    pub error_after: f64,
    /// Max relative KKT residual.
    pub kkt_residual: f64,
    /// Max iterations.
    pub iterations: usize,
}

/// Generates `case`, masks it with Wanda, and returns the problem (1% damping).
pub fn generate_problem(case: &BenchCase, par: Parallelism) -> Result<LayerProblem> {
    let (weight, h) = LlmLikeLayer::new(case.rows, case.cols, case.seed).generate(par);
    let hessian = Hessian::new(h, crate::problem::DEFAULT_PERCDAMP)?;
    let mask = WandaMasker.select(weight.view(), &hessian, &case.pattern)?;
    LayerProblem::new(weight, hessian, mask)
}

/// Seconds faer takes to factor `count` Cholesky problems of size `dim` (principal submatrices of
/// `problem`'s Hessian), spread over rows in parallel exactly as `direct` spreads its rows.
pub fn cholesky_baseline_seconds(problem: &LayerProblem, dim: usize, count: usize, par: Parallelism) -> Result<f64> {
    let h = problem.hessian().matrix();
    let dim = dim.min(h.nrows());
    let start = Instant::now();
    let failures = par.install(|| {
        (0..count)
            .into_par_iter()
            .filter(|&c| {
                let offset = (c * 7) % (h.nrows() - dim + 1);
                let mut a = Mat::<f64>::zeros(dim, dim);
                let fill = |mut a: faer::MatMut<'_, f64>| {
                    for j in 0..dim {
                        for i in j..dim {
                            a[(i, j)] = h[[offset + i, offset + j]];
                        }
                    }
                };
                cholesky_with_retry(&mut a, fill, faer::Par::Seq).is_err()
            })
            .count()
    })?;
    if failures > 0 {
        return Err(OptimaError::Numerical(format!("{failures} baseline factorizations failed")));
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Runs `direct` on `case` and measures faer's Cholesky baseline beside it.
pub fn bench_direct(case: &BenchCase, par: Parallelism) -> Result<BenchRow> {
    let problem = generate_problem(case, par)?;
    let solver = DirectSolver::new(DirectSettings::default().parallelism(par));
    let solution = solver.solve(&problem, None)?;
    let report = &solution.report;
    let flops = direct_flops(problem.mask());
    let mask = problem.mask();
    let dim =
        (0..mask.rows()).map(|i| mask.pruned_in_row(i).min(mask.cols() - mask.pruned_in_row(i))).max().unwrap_or(0);
    let baseline = cholesky_baseline_seconds(&problem, dim, case.rows, par)?;
    let baseline_flops = case.rows as f64 * (dim as f64).powi(3) / 3.0;
    let gflops = flops / report.seconds / 1e9;
    let cholesky_gflops = baseline_flops / baseline / 1e9;
    Ok(BenchRow {
        shape: format!("{}x{}", case.rows, case.cols),
        pattern: case.pattern.to_string(),
        solver: solver.name().to_string(),
        threads: par.threads(),
        seconds: report.seconds,
        rows_per_second: case.rows as f64 / report.seconds,
        gflops,
        cholesky_gflops,
        fraction_of_cholesky: gflops / cholesky_gflops,
        error_before: report.error_before,
        error_after: report.error_after,
        kkt_residual: report.kkt_residual,
        iterations: report.iterations,
    })
}

/// Renders bench rows as a Markdown table.
pub fn markdown_table(rows: &[BenchRow]) -> String {
    let mut out = String::from(
        "| shape | pattern | solver | threads | seconds | rows/s | GFLOP/s | faer chol GFLOP/s | % of chol | E before | E after | KKT |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.3} | {:.0} | {:.1} | {:.1} | {:.0}% | {:.4} | {:.4} | {:.1e} |\n",
            r.shape,
            r.pattern,
            r.solver,
            r.threads,
            r.seconds,
            r.rows_per_second,
            r.gflops,
            r.cholesky_gflops,
            100.0 * r.fraction_of_cholesky,
            r.error_before,
            r.error_after,
            r.kkt_residual
        ));
    }
    out
}
