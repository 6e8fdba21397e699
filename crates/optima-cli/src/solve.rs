//! `optima solve`: reconstruct one layer from a problem file.

use std::path::PathBuf;

use clap::Args;
use optima::backend::Device;
use optima::io::{read_problem_file, write_solution_file};
use optima::mask::masker_by_name;
use optima::memory::Bytes;
use optima::solve::{DirectForm, Precision, Preconditioner, RowChunked};
use optima::{Hessian, LayerProblem, OptimaError, Parallelism, SparsityPattern};
use optima_cli::solver_flags::SolverFlags;
use serde_json::json;

#[derive(Args)]
pub struct SolveArgs {
    /// Problem file: `weight` [m,n], `hessian` [n,n], optionally `mask` [m,n] u8 (1 = pruned).
    #[arg(long)]
    problem: PathBuf,
    /// Solver.
    #[arg(long, default_value = "direct")]
    solver: String,
    /// Relative damping added to the file's Hessian (0 = use it exactly as given).
    #[arg(long, default_value_t = optima::DEFAULT_PERCDAMP)]
    damping: f64,
    /// Masker used when the file has no mask, or when --pattern is given: wanda or magnitude.
    #[arg(long, default_value = "wanda")]
    masker: String,
    /// Sparsity pattern for a new mask: a ratio (0.5, 0.5/layer) or N:M (2:4). Overrides the file's mask.
    #[arg(long)]
    pattern: Option<SparsityPattern>,
    /// Threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Closed form of the direct solver: auto, primal or dual.
    #[arg(long, default_value = "auto")]
    form: DirectForm,
    /// Tolerance of iterative solvers: relative KKT residual (default 1e-6); for pdhg its
    /// eps_abs = eps_rel (default 1e-2, the paper's).
    #[arg(long)]
    tol: Option<f64>,
    /// Iteration cap of iterative solvers (default: the solver's own).
    #[arg(long)]
    max_iter: Option<usize>,
    /// Preconditioner of pcg: jacobi, identity or inverse.
    #[arg(long, default_value = "jacobi")]
    preconditioner: Preconditioner,
    /// Precision of pcg's and dual-pcg's products: double, or mixed (f32 GEMMs, f64 checks).
    /// Default: double for pcg (mixed on a GPU, its only one), mixed for dual-pcg; auto always
    /// uses mixed.
    #[arg(long)]
    precision: Option<Precision>,
    /// Write the reconstructed `weight` (f32) and `mask` (u8) here (safetensors).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Device: cpu, cuda or cuda:N (cuda runs auto, direct and pcg; it needs a build with
    /// `--features cuda` and a GPU).
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// Memory budget of the run (e.g. 4G): the layer is solved in row chunks to fit; a budget
    /// that cannot hold one row is refused before the solve starts.
    #[arg(long)]
    max_memory: Option<Bytes>,
    /// Print one JSON object on stdout instead of a summary.
    #[arg(long)]
    json: bool,
}

pub fn run(args: SolveArgs) -> optima::Result<()> {
    let par = Parallelism::from_threads(args.threads);
    let flags = SolverFlags {
        tolerance: args.tol,
        pdhg_tolerance: args.tol,
        max_iterations: args.max_iter,
        preconditioner: Some(args.preconditioner),
        precision: args.precision,
        form: Some(args.form),
        parallelism: par,
    };
    let solver = flags.spec(&args.solver, args.device)?.build(args.device)?;
    let file = read_problem_file(&args.problem)?;
    let hessian = Hessian::new(file.hessian, args.damping)?;
    let (mask, mask_source) = match (args.pattern, file.mask) {
        (Some(pattern), _) => {
            let masker = masker_by_name(&args.masker)?;
            (masker.select(file.weight.view(), &hessian, &pattern)?, format!("{} {pattern}", masker.name()))
        }
        (None, Some(mask)) => (mask, "file".to_string()),
        (None, None) => {
            return Err(OptimaError::InvalidSetting(
                "the problem file has no `mask`; pass --pattern (e.g. 0.5 or 2:4) to select one".into(),
            ));
        }
    };
    let problem = LayerProblem::new(file.weight, hessian, mask)?;
    let (m, n) = (problem.rows(), problem.cols());
    let solver = match args.max_memory {
        Some(total) => {
            // Resident before the solve: the layer's weights and the runtime; H and the per-row
            // work are in the chunk plan.
            let file_bytes = std::fs::metadata(&args.problem).map(|f| f.len()).unwrap_or(0);
            let resident = Bytes(file_bytes) + Bytes::f64s(m * n) + Bytes(32 << 20);
            let left = Bytes(total.0.saturating_sub(resident.0));
            Box::new(RowChunked::for_budget(solver.into(), m, n, left, &format!("solving the {m}×{n} layer"))?)
        }
        None => solver,
    };
    let solution = solver.solve(&problem, None)?;
    let r = &solution.report;
    if let Some(out) = &args.out {
        write_solution_file(out, solution.weight.view(), problem.mask())?;
    }
    if args.json {
        let value = json!({
            "solver": r.solver,
            "device": args.device.to_string(),
            "m": r.m,
            "n": r.n,
            "threads": par.threads(),
            "damping": args.damping,
            "mask": mask_source,
            "sparsity": problem.mask().sparsity(),
            "seconds": r.seconds,
            "objective": r.objective,
            "objective_mask_only": r.objective_mask_only,
            "output_energy": r.output_energy,
            "relative_error": r.error_after,
            "relative_error_mask_only": r.error_before,
            "kkt_residual": r.kkt_residual,
            "max_abs_pruned": r.max_abs_pruned,
            "iterations": r.iterations,
            "failed_rows": r.failed_rows,
            "regularized_rows": r.regularized_rows,
            "chunks": r.chunks,
        });
        println!("{value}");
    } else {
        println!(
            "layer {}x{}, mask {mask_source} ({:.1}% pruned), solver {}",
            r.m,
            r.n,
            100.0 * problem.mask().sparsity(),
            r.solver
        );
        println!("  solve time        {:.3} s ({} threads)", r.seconds, par.threads());
        println!("  error E, mask only {:.6}", r.error_before);
        println!(
            "  error E, solved    {:.6}  ({:.1}% of mask-only)",
            r.error_after,
            100.0 * r.error_after / r.error_before.max(f64::MIN_POSITIVE)
        );
        println!("  max KKT residual   {:.2e}", r.kkt_residual);
        println!("  rows regularized   {}, failed {}", r.regularized_rows, r.failed_rows);
        if let Some(out) = &args.out {
            println!("  wrote {}", out.display());
        }
    }
    Ok(())
}
