//! `optima`: the command line over the library — solve layer problems, generate them, bench.

mod bench;
mod convert;
mod generate;
mod output;
mod perplexity;
mod progress;
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
    /// Perplexity of a GGUF model or a Hugging Face checkpoint on a text.
    Perplexity(perplexity::PerplexityArgs),
    /// Prune a Llama model (GGUF or Hugging Face) block by block and write it out.
    Prune(Box<prune::PruneArgs>),
    /// Write a model in another format or type without pruning it.
    Convert(convert::ConvertArgs),
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Solve(args) => solve::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Perplexity(args) => perplexity::run(args),
        Command::Prune(args) => prune::run(*args),
        Command::Convert(args) => convert::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Asks glibc's allocator to keep freed memory for reuse. Solvers allocate and free buffers of
/// tens of MiB per layer; by default glibc maps the larger ones fresh and returns freed heap tops
/// to the kernel, so every layer pays a page fault per 4 KiB it touches again (2–7% of `auto`'s
/// time on a 1536×576 layer, docs/benchmarks.md). The same applies to library users through
/// `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only changes allocator parameters; it is called before any other thread
    // exists, and glibc accepts these values (32 MiB is its largest mmap threshold).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}
