//! `optima`: the command line over the library — solve layer problems, generate them, bench.

mod bench;
mod generate;
mod perplexity;
mod prune;
mod solve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Optimal one-shot pruning: exact per-row weight reconstruction for pruned linear layers.
#[derive(Parser)]
#[command(name = "optima", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Reconstruct one layer from a problem file (weight, hessian, optional mask).
    Solve(solve::SolveArgs),
    /// Write a generated LLM-like layer problem to a file.
    Generate(generate::GenerateArgs),
    /// Measure solvers side by side on generated LLM-like layers.
    Bench(bench::BenchArgs),
    /// Perplexity of a GGUF model on a text.
    Perplexity(perplexity::PerplexityArgs),
    /// Prune a GGUF Llama model block by block and write it out.
    Prune(prune::PruneArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Solve(args) => solve::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Perplexity(args) => perplexity::run(args),
        Command::Prune(args) => prune::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
