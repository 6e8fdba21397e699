//! `optima convert`: write a model in another format without pruning it (GGUF → Hugging Face
//! folder, GGUF → GGUF in another type, Hugging Face → Hugging Face in another dtype, …).

use std::path::PathBuf;

use clap::Args;
use optima_llm::model_file::load_model;

use crate::output::{DTYPE_HELP, Output};

#[derive(Args)]
pub struct ConvertArgs {
    /// The model: a GGUF file, or a Hugging Face folder (or its config.json).
    #[arg(long)]
    model: PathBuf,
    /// Where to write it: .gguf (from a GGUF model), .safetensors (f32 tensors under their GGUF
    /// names), or any other path: a Hugging Face folder that `transformers` loads.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, help = DTYPE_HELP)]
    dtype: Option<String>,
}

pub fn run(args: ConvertArgs) -> optima::Result<()> {
    let loaded = load_model(&args.model)?;
    let output = Output::resolve(&args.out, args.dtype.as_deref(), false, loaded.gguf().is_some())?;
    optima::io::remove_stale_temporaries(&args.out);
    output.write(&loaded)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
