//! `optima bench`: solvers side by side on generated LLM-like layers.

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use optima::bench::{BenchCase, bench_direct, markdown_table};
use optima::{OptimaError, Parallelism, SparsityPattern};

#[derive(Args)]
pub struct BenchArgs {
    /// Layer shapes `MxN`; repeat the flag for several.
    #[arg(long = "shape", value_parser = parse_shape, default_values = ["576x576", "576x1536", "1536x576"])]
    shapes: Vec<(usize, usize)>,
    /// Patterns; repeat the flag for several.
    #[arg(long = "pattern", default_values = ["0.5", "2:4"])]
    patterns: Vec<SparsityPattern>,
    /// Solvers to run.
    #[arg(long, default_value = "direct", value_delimiter = ',')]
    solvers: Vec<String>,
    /// Threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print JSON (one array) instead of a table.
    #[arg(long)]
    json: bool,
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

pub fn run(args: BenchArgs) -> optima::Result<()> {
    for s in &args.solvers {
        if s != "direct" {
            return Err(OptimaError::InvalidSetting(format!("unknown solver {s:?}; available: direct")));
        }
    }
    let par = Parallelism::from_threads(args.threads);
    let cases: Vec<BenchCase> = args
        .shapes
        .iter()
        .flat_map(|&(rows, cols)| {
            args.patterns.iter().map(move |&pattern| BenchCase { rows, cols, pattern, seed: args.seed })
        })
        .collect();
    let progress = ProgressBar::new(cases.len() as u64);
    progress.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut rows = Vec::new();
    for case in &cases {
        progress.set_message(format!("{}x{} {}", case.rows, case.cols, case.pattern));
        rows.push(bench_direct(case, par)?);
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
