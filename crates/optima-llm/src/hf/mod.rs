//! Hugging Face checkpoints of Llama-family models (Llama 2/3, SmolLM, Mistral, Qwen2): a folder
//! with `config.json` ([`config`]), `model.safetensors` or shards listed by
//! `model.safetensors.index.json` in F32, F16 or BF16 ([`shards`]), and `tokenizer.json`
//! ([`tokenizer`]). The tensors are renamed and the q/k rows reordered into the GGUF layout the
//! forward pass uses ([`layout`]), so a checkpoint and its llama.cpp conversion load to the same
//! [`LlamaModel`]. [`write`] writes a model back out as such a folder.
//!
//! ```no_run
//! # fn main() -> optima::Result<()> {
//! let checkpoint = optima_llm::hf::load(std::path::Path::new("SmolLM2-135M"))?;
//! assert_eq!(checkpoint.model.config.blocks, 30);
//! # Ok(()) }
//! ```

pub mod config;
pub mod gguf_tokenizer;
pub mod layout;
pub mod shards;
pub mod tokenizer;
pub mod write;

use std::path::{Path, PathBuf};

use ndarray::Array2;

pub use config::{HfArchitecture, HfConfig};
pub use shards::{HfTensor, Safetensors};
pub use tokenizer::HfTokenizer;
pub use write::{HfDtype, write_checkpoint};

use crate::llama::{LinearKind, LlamaModel, QkvBias};
use layout::{gguf_rows_from_hf, gguf_vector_from_hf, hf_linear_module, hf_name, is_rotary};
use optima::error::{OptimaError, Result};

/// A Hugging Face folder as loaded: where it is, its configuration, and what was read.
#[derive(Clone, Debug)]
pub struct HfCheckpoint {
    /// The folder.
    pub dir: PathBuf,
    /// Its `config.json`.
    pub config: HfConfig,
    /// The architecture `config.json` names.
    pub architecture: HfArchitecture,
    /// The safetensors files the weights came from.
    pub files: Vec<PathBuf>,
    /// Their total size in bytes.
    pub file_bytes: u64,
    /// The dtype of the token embedding as stored (what an output keeps by default).
    pub dtype: HfDtype,
}

/// A loaded checkpoint: its description, its weights in f32 (GGUF layout), its tokenizer.
pub struct HfModel {
    /// The folder and its configuration.
    pub checkpoint: HfCheckpoint,
    /// The weights.
    pub model: LlamaModel,
    /// The tokenizer from `tokenizer.json`.
    pub tokenizer: HfTokenizer,
}

/// Whether `path` names a Hugging Face checkpoint: a folder, or a file named `config.json`.
pub fn is_checkpoint_path(path: &Path) -> bool {
    path.is_dir() || path.file_name().is_some_and(|n| n == "config.json")
}

/// The checkpoint's folder: `path` itself, or the folder of a `config.json`.
fn folder(path: &Path) -> PathBuf {
    if path.is_dir() {
        return path.to_path_buf();
    }
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Loads the checkpoint at `path` (its folder, or its `config.json`): weights in f32 in the GGUF
/// layout, every shape checked against `config.json`, every value finite; errors name the file
/// and the Hugging Face tensor.
pub fn load(path: &Path) -> Result<HfModel> {
    let dir = folder(path);
    let (checkpoint, model) = load_weights(&dir)?;
    let tokenizer = HfTokenizer::from_file(&dir.join("tokenizer.json"))?;
    if tokenizer.vocab_size() > model.config.vocab {
        return Err(OptimaError::Format {
            path: dir.join("tokenizer.json"),
            detail: format!(
                "the tokenizer has {} tokens but the model's vocabulary only {}",
                tokenizer.vocab_size(),
                model.config.vocab
            ),
        });
    }
    Ok(HfModel { checkpoint, model, tokenizer })
}

/// Loads the weights of the checkpoint in `dir` (no tokenizer).
pub fn load_weights(dir: &Path) -> Result<(HfCheckpoint, LlamaModel)> {
    let config_path = dir.join("config.json");
    let hf = HfConfig::read(&config_path)?;
    let architecture = hf.architecture(&config_path)?;
    let config = hf.llama_config(&config_path)?;
    let files = Safetensors::open(dir)?;
    let head_dim = config.head_dim;
    let read = |gguf: &str| -> Result<(String, HfTensor)> {
        let name = hf_name(gguf).ok_or_else(|| OptimaError::Internal(format!("no Hugging Face name for {gguf}")))?;
        let tensor = files.tensor(&name)?;
        Ok((name, tensor))
    };
    let matrix = |gguf: &str| -> Result<Array2<f32>> {
        let (name, t) = read(gguf)?;
        let &[rows, cols] = t.shape.as_slice() else {
            return Err(OptimaError::shape(name, "a matrix", format!("{:?}", t.shape)));
        };
        let a = Array2::from_shape_vec((rows, cols), t.values).map_err(|e| OptimaError::Internal(e.to_string()))?;
        if is_rotary(gguf) { gguf_rows_from_hf(&name, &a, head_dim) } else { Ok(a) }
    };
    let vector = |gguf: &str| -> Result<Vec<f32>> {
        let (name, t) = read(gguf)?;
        if t.shape.len() != 1 {
            return Err(OptimaError::shape(name, "a vector", format!("{:?}", t.shape)));
        }
        if is_rotary(gguf) { gguf_vector_from_hf(&name, &t.values, head_dim) } else { Ok(t.values) }
    };
    // Tied models may still store lm_head.weight (a copy); the embedding is what they use.
    let optional = |gguf: &str| if hf.tied() { Ok(None) } else { matrix(gguf).map(Some) };
    let mut model = LlamaModel::from_tensors(config, matrix, vector, optional).map_err(hf_names)?;
    if architecture.qkv_bias() {
        for (b, block) in model.blocks.iter_mut().enumerate() {
            let bias = |kind: LinearKind| vector(&format!("blk.{b}.{}.bias", kind.short_name()));
            let qkv = QkvBias { q: bias(LinearKind::Q)?, k: bias(LinearKind::K)?, v: bias(LinearKind::V)? };
            for (kind, values) in [(LinearKind::Q, &qkv.q), (LinearKind::K, &qkv.k), (LinearKind::V, &qkv.v)] {
                if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                    return Err(OptimaError::NonFinite {
                        what: format!("{}.bias", hf_linear_module(kind, b)),
                        row: 0,
                        col: i,
                        value: values.get(i).copied().map_or(f64::NAN, f64::from),
                    });
                }
            }
            block.qkv_bias = Some(qkv);
        }
        model.check().map_err(hf_names)?;
    }
    let embedding = "model.embed_tokens.weight";
    let dtype = files.dtype(embedding).and_then(HfDtype::from_safetensors).unwrap_or(HfDtype::F32);
    let checkpoint = HfCheckpoint {
        dir: dir.to_path_buf(),
        config: hf,
        architecture,
        files: files.paths().map(Path::to_path_buf).collect(),
        file_bytes: files.total_bytes(),
        dtype,
    };
    Ok((checkpoint, model))
}

/// Names a tensor in an error by its Hugging Face name, with the GGUF name it was checked as.
fn hf_names(e: OptimaError) -> OptimaError {
    let rename = |what: String| match hf_name(&what) {
        Some(hf) => format!("{hf} ({what})"),
        None => what,
    };
    match e {
        OptimaError::ShapeMismatch { what, expected, found } => {
            OptimaError::ShapeMismatch { what: rename(what), expected, found }
        }
        OptimaError::NonFinite { what, row, col, value } => {
            OptimaError::NonFinite { what: rename(what), row, col, value }
        }
        other => other,
    }
}
