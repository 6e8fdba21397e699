//! `optima perplexity`: score a text with a GGUF model or a Hugging Face checkpoint.

use std::path::PathBuf;

use clap::Args;
use optima_llm::calibration::{read_text, skip_chars};
use optima_llm::model_file::load_model;
use optima_llm::perplexity::perplexity;

#[derive(Args)]
pub struct PerplexityArgs {
    /// The model: a GGUF file, or a Hugging Face folder (or its config.json).
    #[arg(long)]
    pub model: PathBuf,
    /// The text (may be gzip-compressed).
    #[arg(long)]
    pub text: PathBuf,
    /// Skip this many characters of the text first.
    #[arg(long, default_value_t = 0)]
    pub start_char: usize,
    /// Number of windows.
    #[arg(long, default_value_t = 16)]
    pub windows: usize,
    /// Tokens per window.
    #[arg(long, default_value_t = 512)]
    pub window_len: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: PerplexityArgs) -> optima::Result<()> {
    let loaded = load_model(&args.model)?;
    let text = read_text(&args.text)?;
    let tokens = loaded.tokenizer.encode(skip_chars(&text, args.start_char))?;
    let bar = crate::progress::PerplexityBar::new(!args.json);
    let result = perplexity(&loaded.model, &tokens, args.windows, args.window_len, |p| bar.update(p))?;
    drop(bar);
    if args.json {
        println!("{}", serde_json::json!(result));
    } else {
        println!(
            "perplexity {:.4} (mean NLL {:.5}) over {} tokens: {} windows of {} tokens",
            result.ppl, result.mean_nll, result.tokens_scored, result.windows, result.window_len
        );
    }
    Ok(())
}
