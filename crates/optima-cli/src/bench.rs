//! `optima bench`: solvers side by side on generated LLM-like layers or problem files.

use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::Axis;
use optima::backend::Device;
use optima::io::read_problem_file;
use optima::mask::masker_by_name;
use optima::solve::{Precision, Preconditioner, SolverSpec};
use optima::{Hessian, LayerProblem, Mask, OptimaError, Parallelism, SparsityPattern};
use optima_cli::harness::llama::{LlamaBenchOptions, bench_llama3_8b, llama_markdown};
use optima_cli::harness::{BenchCase, BenchRow, bench_problem_on, generate_problem, markdown_table};
use optima_cli::solver_flags::SolverFlags;

#[derive(Args)]
pub struct BenchArgs {
    /// Layer shapes `MxN` to generate; repeat the flag for several.
    #[arg(long = "shape", value_parser = parse_shape)]
    shapes: Vec<(usize, usize)>,
    /// Problem files to bench instead of (or besides) generated shapes; repeat for several.
    #[arg(long = "problem")]
    problems: Vec<PathBuf>,
    /// Patterns for Wanda masks; repeat the flag for several (files with a mask use theirs).
    #[arg(long = "pattern", default_values = ["0.5", "2:4"])]
    patterns: Vec<SparsityPattern>,
    /// Solvers to run, comma-separated (direct, when listed, runs first as the reference).
    /// Default: direct; with --llama3-8b-shapes, auto.
    #[arg(long, value_delimiter = ',')]
    solvers: Vec<String>,
    /// Device: cpu, cuda or cuda:N (cuda needs a build with `--features cuda` and a GPU).
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// Bench the seven linear layers of Llama-3-8B (q/o 4096x4096, k/v 1024x4096, gate/up
    /// 14336x4096, down 4096x14336) at the given patterns, with the 32-block projection.
    #[arg(long)]
    llama3_8b_shapes: bool,
    /// With --llama3-8b-shapes: divide every dimension by this (smoke tests on small machines).
    #[arg(long, default_value_t = 1)]
    scale_down: usize,
    /// Relative KKT tolerance of iterative solvers (pdhg keeps its own 1e-2 unless --pdhg-tol).
    #[arg(long, default_value_t = optima::solve::DEFAULT_TOLERANCE)]
    tol: f64,
    /// eps_abs = eps_rel of pdhg.
    #[arg(long)]
    pdhg_tol: Option<f64>,
    /// Iteration cap of iterative solvers.
    #[arg(long)]
    max_iter: Option<usize>,
    /// Preconditioner of pcg: jacobi, identity or inverse.
    #[arg(long, default_value = "jacobi")]
    preconditioner: Preconditioner,
    /// Precision of pcg's and dual-pcg's products: double, or mixed (f32 GEMMs, f64 checks).
    /// Default: double for pcg, mixed for dual-pcg; auto always uses mixed.
    #[arg(long)]
    precision: Option<Precision>,
    /// Bench only the first R rows of each layer (for shapes where direct on all rows is too slow).
    #[arg(long)]
    rows: Option<usize>,
    /// Run every solver this many times, in rounds, and report its fastest run (shared machines
    /// are noisy).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print JSON (one array) instead of a table.
    #[arg(long)]
    json: bool,
    /// Measure this machine's f32 GEMM rate at SmolLM2's forward-pass shapes (256 tokens against
    /// 576×576, 576×1536 and 1536×576 weights) instead of solvers: the yardstick of the pipeline's
    /// forward GFLOP/s.
    #[arg(long)]
    gemm_rate: bool,
}

/// Parses `MxN`.
pub fn parse_shape(s: &str) -> Result<(usize, usize), String> {
    let (m, n) = s.split_once(['x', 'X']).ok_or_else(|| format!("shape {s:?} is not MxN"))?;
    let parse = |v: &str| {
        v.trim()
            .parse::<usize>()
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| format!("shape {s:?}: {v:?} is not a positive integer"))
    };
    Ok((parse(m)?, parse(n)?))
}

fn first_rows(problem: LayerProblem, rows: Option<usize>) -> optima::Result<LayerProblem> {
    let Some(r) = rows.filter(|&r| r < problem.rows()) else {
        return Ok(problem);
    };
    let (w, h, mask) = problem.into_parts();
    let idx: Vec<usize> = (0..r).collect();
    let sub = Mask::from_fn(r, mask.cols(), |i, j| mask.is_pruned(i, j));
    LayerProblem::new(w.select(Axis(0), &idx), h, sub)
}

pub fn run(args: BenchArgs) -> optima::Result<()> {
    let par = Parallelism::from_threads(args.threads);
    if args.gemm_rate {
        return gemm_rate(par, args.repeat.max(3), args.json);
    }
    let flags = SolverFlags {
        tolerance: Some(args.tol),
        pdhg_tolerance: args.pdhg_tol,
        max_iterations: args.max_iter,
        preconditioner: Some(args.preconditioner),
        precision: args.precision,
        form: None,
        parallelism: par,
    };
    let default_solver = if args.llama3_8b_shapes { "auto" } else { "direct" };
    let names = if args.solvers.is_empty() { vec![default_solver.to_string()] } else { args.solvers.clone() };
    let solvers = names.iter().map(|name| flags.spec(name, args.device)).collect::<optima::Result<Vec<_>>>()?;
    if args.llama3_8b_shapes {
        return run_llama(&args, solvers, par);
    }
    let shapes = if args.shapes.is_empty() && args.problems.is_empty() {
        vec![(576, 576), (576, 1536), (1536, 576)]
    } else {
        args.shapes.clone()
    };
    let total = shapes.len() * args.patterns.len() + args.problems.len();
    let progress = ProgressBar::new(total as u64);
    progress.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut rows: Vec<BenchRow> = Vec::new();
    for &(m, n) in &shapes {
        for &pattern in &args.patterns {
            progress.set_message(format!("{m}x{n} {pattern}"));
            let case = BenchCase { rows: m, cols: n, pattern, seed: args.seed };
            let problem = first_rows(generate_problem(&case, par)?, args.rows)?;
            let shape = format!(
                "{}x{n}{}",
                problem.rows(),
                if problem.rows() < m { format!(" (of {m})") } else { String::new() }
            );
            let pattern = pattern.to_string();
            rows.extend(bench_problem_on(args.device, &shape, &pattern, &problem, &solvers, args.repeat)?);
            progress.inc(1);
        }
    }
    for path in &args.problems {
        progress.set_message(path.display().to_string());
        let file = read_problem_file(path)?;
        let hessian = Hessian::new(file.hessian, optima::DEFAULT_PERCDAMP)?;
        let (mask, label) = match file.mask {
            Some(mask) => (mask, "file".to_string()),
            None => {
                let pattern = args.patterns.first().copied().unwrap_or(SparsityPattern::per_row(0.5)?);
                (masker_by_name("wanda")?.select(file.weight.view(), &hessian, &pattern)?, pattern.to_string())
            }
        };
        let problem = first_rows(LayerProblem::new(file.weight, hessian, mask)?, args.rows)?;
        let shape = format!("{}x{}", problem.rows(), problem.cols());
        rows.extend(bench_problem_on(args.device, &shape, &label, &problem, &solvers, args.repeat)?);
        progress.inc(1);
    }
    progress.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows).map_err(|e| OptimaError::InvalidSetting(e.to_string()))?);
    } else {
        print!("{}", markdown_table(&rows));
    }
    Ok(())
}

fn run_llama(args: &BenchArgs, solvers: Vec<SolverSpec>, parallelism: Parallelism) -> optima::Result<()> {
    let opts = LlamaBenchOptions {
        device: args.device,
        solvers,
        patterns: args.patterns.clone(),
        rows: args.rows,
        scale_down: args.scale_down,
        parallelism,
        tolerance: args.tol,
        seed: args.seed,
    };
    let report = bench_llama3_8b(&opts, |step| eprintln!("bench: {step}"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| OptimaError::InvalidSetting(e.to_string()))?);
        eprint!("{}", llama_markdown(&report));
    } else {
        print!("{}", llama_markdown(&report));
    }
    Ok(())
}

/// The f32 GEMM rate `x Wᵀ` at the forward pass's shapes, best of `repeat` rounds of 8 products.
fn gemm_rate(par: Parallelism, repeat: usize, json: bool) -> optima::Result<()> {
    let mut rows = Vec::new();
    for (tokens, inputs, outputs) in [(256, 576, 576), (256, 576, 1536), (256, 1536, 576)] {
        let x = faer::Mat::<f32>::from_fn(tokens, inputs, |i, j| ((i * 7 + j * 3) % 11) as f32 - 5.0);
        let w = faer::Mat::<f32>::from_fn(outputs, inputs, |i, j| ((i * 5 + j) % 13) as f32 - 6.0);
        let mut out = faer::Mat::<f32>::zeros(tokens, outputs);
        let mut best = f64::INFINITY;
        for _ in 0..repeat {
            let t = std::time::Instant::now();
            for _ in 0..8 {
                faer::linalg::matmul::matmul(
                    out.as_mut(),
                    faer::Accum::Replace,
                    x.as_ref(),
                    w.as_ref().transpose(),
                    1.0,
                    par.faer(),
                );
            }
            best = best.min(t.elapsed().as_secs_f64() / 8.0);
        }
        let gflops = 2.0 * (tokens * inputs * outputs) as f64 / best / 1e9;
        rows.push(serde_json::json!({ "tokens": tokens, "inputs": inputs, "outputs": outputs, "gflop_per_s": gflops }));
    }
    if json {
        println!("{}", serde_json::Value::Array(rows));
    } else {
        println!("| x (tokens × in) | W (out × in) | f32 GFLOP/s |\n|---|---|---:|");
        for r in &rows {
            println!(
                "| {} × {} | {} × {} | {:.1} |",
                r["tokens"],
                r["inputs"],
                r["outputs"],
                r["inputs"],
                r["gflop_per_s"].as_f64().unwrap_or(0.0)
            );
        }
    }
    Ok(())
}
