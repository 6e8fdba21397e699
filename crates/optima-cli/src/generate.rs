//! `optima generate`: a generated LLM-like layer as a problem file.

use std::path::PathBuf;

use clap::Args;
use optima::{Parallelism, io::write_problem_file, synthetic::LlmLikeLayer};

use crate::bench::parse_shape;

#[derive(Args)]
pub struct GenerateArgs {
    /// Layer shape `MxN` (outputs × inputs).
    #[arg(long, default_value = "576x1536", value_parser = parse_shape)]
    shape: (usize, usize),
    /// Calibration tokens behind the Hessian (default 2·N).
    #[arg(long)]
    tokens: Option<usize>,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to write the problem (safetensors).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: GenerateArgs) -> optima::Result<()> {
    let (m, n) = args.shape;
    let mut layer = LlmLikeLayer::new(m, n, args.seed);
    if let Some(t) = args.tokens {
        layer.tokens = t;
    }
    let (weight, hessian) = layer.generate(Parallelism::AllCores);
    write_problem_file(&args.out, weight.view(), hessian.view(), None)?;
    eprintln!("wrote a {m}x{n} LLM-like layer problem ({} tokens) to {}", layer.tokens, args.out.display());
    Ok(())
}
