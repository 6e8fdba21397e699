//! Side-by-side measurements: the engine behind `optima bench` and the criterion benches.

pub mod llama;

use std::time::Instant;

use faer::Mat;
use rayon::prelude::*;
use serde::Serialize;

use optima::backend::cpu::cholesky_with_retry;
use optima::backend::{Device, Parallelism};
use optima::error::{OptimaError, Result};
use optima::mask::{Masker, WandaMasker};
use optima::problem::{Hessian, LayerProblem, SolveReport, SparsityPattern};
use optima::solve::{Preconditioner, SolverSpec, direct_flops};
use optima::synthetic::LlmLikeLayer;

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
    /// The pattern (or `file`).
    pub pattern: String,
    /// The solver.
    pub solver: String,
    /// Threads used.
    pub threads: usize,
    /// Solve seconds.
    pub seconds: f64,
    /// Rows per second.
    pub rows_per_second: f64,
    /// Model flops of the solver (see [`model_flops`]) per second, GFLOP/s.
    pub gflops: f64,
    /// `(objective − objective_direct) / objective_direct`, when `direct` ran too.
    pub gap_to_direct: Option<f64>,
    /// `seconds / seconds_direct`, when `direct` ran too.
    pub time_vs_direct: Option<f64>,
    /// `E` before reconstruction (mask only).
    pub error_before: f64,
    /// `E` after.
    pub error_after: f64,
    /// Max relative KKT residual.
    pub kkt_residual: f64,
    /// Max iterations over rows.
    pub iterations: usize,
    /// Rows not solved to the solver's promise.
    pub failed_rows: usize,
    /// For `direct`: faer's Cholesky throughput on the same block size, rows and threads, GFLOP/s.
    pub cholesky_gflops: Option<f64>,
}

/// Generates `case` and masks it with Wanda (1% damping).
pub fn generate_problem(case: &BenchCase, par: Parallelism) -> Result<LayerProblem> {
    let (weight, h) = LlmLikeLayer::new(case.rows, case.cols, case.seed).generate(par);
    let hessian = Hessian::new(h, optima::problem::DEFAULT_PERCDAMP)?;
    let mask = WandaMasker.select(weight.view(), &hessian, &case.pattern)?;
    LayerProblem::new(weight, hessian, mask)
}

/// Seconds faer takes to factor `count` Cholesky problems of size `dim` (principal submatrices of
/// `problem`'s Hessian), spread over rows in parallel exactly as `direct` spreads its rows.
#[allow(clippy::indexing_slicing)] // the block lies inside H: offset + size ≤ n by construction.
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
                cholesky_with_retry(a.as_mut(), fill, faer::Par::Seq).is_err()
            })
            .count()
    })?;
    if failures > 0 {
        return Err(OptimaError::Numerical(format!("{failures} baseline factorizations failed")));
    }
    Ok(start.elapsed().as_secs_f64())
}

/// The flops a solver's model charges for a report: `direct` its factorizations
/// `Σ min(k,p)³/3`; the batched iterative solvers `2n²` per row-iteration and GEMM (two GEMMs for
/// PCG with the inverse-Hessian preconditioner); SparseGPT `4n³/3 + mn²`.
pub fn model_flops(report: &SolveReport, problem: &LayerProblem, spec: &SolverSpec) -> f64 {
    let n = problem.cols() as f64;
    let row_iterations: f64 = report.rows.iter().map(|r| r.iterations as f64).sum();
    match report.solver.as_str() {
        "direct" => direct_flops(problem.mask()),
        "sparsegpt" => 4.0 * n.powi(3) / 3.0 + problem.rows() as f64 * n * n,
        "pcg" if matches!(spec, SolverSpec::Pcg(s) if s.preconditioner == Preconditioner::InverseHessian) => {
            4.0 * n * n * row_iterations + n.powi(3)
        }
        "auto" if report.iterations > 1 => 4.0 * n * n * row_iterations + n.powi(3),
        "auto" => direct_flops(problem.mask()),
        _ => 2.0 * n * n * row_iterations,
    }
}

/// Runs `solvers` on `problem` side by side (direct first when listed, as the reference).
pub fn bench_problem(
    shape: &str,
    pattern: &str,
    problem: &LayerProblem,
    solvers: &[SolverSpec],
) -> Result<Vec<BenchRow>> {
    bench_problem_on(Device::Cpu, shape, pattern, problem, solvers, 1)
}

/// As [`bench_problem`], with the solvers on `device`, each run `repeat` times in rounds (every
/// solver once per round, so slow drifts of a shared machine hit all of them alike), reporting
/// each one's fastest run.
pub fn bench_problem_on(
    device: Device,
    shape: &str,
    pattern: &str,
    problem: &LayerProblem,
    solvers: &[SolverSpec],
    repeat: usize,
) -> Result<Vec<BenchRow>> {
    let is_direct = |s: &&SolverSpec| matches!(s, SolverSpec::Direct(_));
    let mut order: Vec<&SolverSpec> = solvers.iter().filter(is_direct).collect();
    order.extend(solvers.iter().filter(|s| !is_direct(s)));
    let made = order.iter().map(|spec| spec.build(device)).collect::<Result<Vec<_>>>()?;
    let mut fastest: Vec<Option<optima::problem::SolveReport>> = vec![None; order.len()];
    for _ in 0..repeat.max(1) {
        for (solver, best) in made.iter().zip(fastest.iter_mut()) {
            let report = solver.solve(problem, None)?.report;
            if best.as_ref().is_none_or(|b| report.seconds < b.seconds) {
                *best = Some(report);
            }
        }
    }
    let mut reference: Option<(f64, f64)> = None;
    let mut rows = Vec::new();
    for (spec, report) in order.into_iter().zip(fastest) {
        let name = spec.name();
        let par = spec.threads();
        let report = report.ok_or_else(|| optima::OptimaError::Empty(format!("no run of {name}")))?;
        let mut cholesky_gflops = None;
        if name == "direct" {
            reference = Some((report.objective, report.seconds));
            let mask = problem.mask();
            let dim = (0..mask.rows())
                .map(|i| mask.pruned_in_row(i).min(mask.cols() - mask.pruned_in_row(i)))
                .max()
                .unwrap_or(0);
            if dim > 0 {
                let baseline = cholesky_baseline_seconds(problem, dim, problem.rows(), par)?;
                cholesky_gflops = Some(problem.rows() as f64 * (dim as f64).powi(3) / 3.0 / baseline / 1e9);
            }
        }
        rows.push(BenchRow {
            shape: shape.to_string(),
            pattern: pattern.to_string(),
            solver: name.to_string(),
            threads: par.threads(),
            seconds: report.seconds,
            rows_per_second: problem.rows() as f64 / report.seconds,
            gflops: model_flops(&report, problem, spec) / report.seconds / 1e9,
            gap_to_direct: reference.map(|(obj, _)| (report.objective - obj) / obj.max(f64::MIN_POSITIVE)),
            time_vs_direct: reference.map(|(_, secs)| report.seconds / secs),
            error_before: report.error_before,
            error_after: report.error_after,
            kkt_residual: report.kkt_residual,
            iterations: report.iterations,
            failed_rows: report.failed_rows,
            cholesky_gflops,
        });
    }
    Ok(rows)
}

/// Renders bench rows as a Markdown table.
pub fn markdown_table(rows: &[BenchRow]) -> String {
    let mut out = String::from(
        "| shape | pattern | solver | threads | seconds | × direct | gap to direct | iterations | GFLOP/s | faer chol GFLOP/s | E before | E after | KKT |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map(f).unwrap_or_else(|| "–".to_string());
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.3} | {} | {} | {} | {:.1} | {} | {:.5} | {:.5} | {:.1e} |\n",
            r.shape,
            r.pattern,
            r.solver,
            r.threads,
            r.seconds,
            opt(r.time_vs_direct, &|v| format!("{v:.2}")),
            opt(r.gap_to_direct, &|v| format!("{v:.1e}")),
            r.iterations,
            r.gflops,
            opt(r.cholesky_gflops, &|v| format!("{v:.1}")),
            r.error_before,
            r.error_after,
            r.kkt_residual
        ));
    }
    out
}
