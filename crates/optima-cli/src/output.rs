//! Where `optima prune` and `optima convert` write a model, chosen by `--out`'s extension: a
//! GGUF file, a safetensors file of the GGUF-named tensors, or (any other path) a Hugging Face
//! folder.

use std::path::{Path, PathBuf};

use optima::OptimaError;
use optima_llm::hf::{HfDtype, write_checkpoint};
use optima_llm::model_file::{LoadedModel, WeightPrecision, write_model_gguf, write_model_safetensors};

/// The help of `--dtype`, shared by the subcommands.
pub const DTYPE_HELP: &str = "Element type of the written weights: for a .gguf --out f32, f16 or q8_0 \
    [default: each tensor's own type where it is F32, F16 or Q8_0, else F32]; for a Hugging Face \
    folder f32, f16 or bf16 [default: a Hugging Face input's own, f32 from GGUF]; .safetensors is f32";

/// A resolved output.
pub enum Output {
    /// A GGUF file in these types (needs a GGUF input: its metadata is kept).
    Gguf(PathBuf, WeightPrecision),
    /// f32 safetensors under the GGUF names.
    Safetensors(PathBuf),
    /// A Hugging Face folder.
    HuggingFace(PathBuf, Option<HfDtype>),
}

impl Output {
    /// The output `out` names, with `--dtype` (and the older `--f16`) checked against it.
    pub fn resolve(out: &Path, dtype: Option<&str>, f16: bool, gguf_input: bool) -> optima::Result<Output> {
        let bad = |what: String| Err(OptimaError::InvalidSetting(what));
        if f16 && dtype.is_some_and(|d| !d.eq_ignore_ascii_case("f16")) {
            return bad("--f16 and --dtype disagree; give one".into());
        }
        let dtype = if f16 { Some("f16") } else { dtype };
        match out.extension().and_then(|e| e.to_str()) {
            Some("gguf") => {
                if !gguf_input {
                    return bad(format!(
                        "--out {} needs a GGUF input model (its metadata is kept); write a Hugging Face model \
                         as a folder or as .safetensors",
                        out.display()
                    ));
                }
                let precision = match dtype {
                    None => WeightPrecision::Source,
                    Some(d) if d.eq_ignore_ascii_case("source") => {
                        return bad("--dtype source: leave --dtype out to keep the input's types".into());
                    }
                    Some(d) => d.parse()?,
                };
                Ok(Output::Gguf(out.to_path_buf(), precision))
            }
            Some("safetensors") => match dtype {
                None => Ok(Output::Safetensors(out.to_path_buf())),
                Some(d) if d.eq_ignore_ascii_case("f32") => Ok(Output::Safetensors(out.to_path_buf())),
                Some(d) => bad(format!("--dtype {d}: a .safetensors --out is written in f32 (use a folder for {d})")),
            },
            _ => Ok(Output::HuggingFace(out.to_path_buf(), dtype.map(str::parse).transpose()?)),
        }
    }

    /// Writes `loaded`'s model.
    pub fn write(&self, loaded: &LoadedModel) -> optima::Result<()> {
        match self {
            Output::Gguf(path, precision) => {
                let gguf =
                    loaded.gguf().ok_or_else(|| OptimaError::Internal("a GGUF output without a GGUF input".into()))?;
                write_model_gguf(path, gguf, &loaded.model, *precision)
            }
            Output::Safetensors(path) => write_model_safetensors(path, &loaded.source, &loaded.model),
            Output::HuggingFace(dir, dtype) => write_checkpoint(dir, &loaded.source, &loaded.model, *dtype),
        }
    }
}
