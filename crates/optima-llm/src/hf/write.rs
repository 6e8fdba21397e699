//! Writing a model as a Hugging Face folder that `transformers` loads as is: `config.json`,
//! `model.safetensors` (Hugging Face names, q/k rows back in the Hugging Face order, F32, F16 or
//! BF16) and the tokenizer files — copied from a Hugging Face input, or written from a GGUF
//! input's metadata ([`super::gguf_tokenizer`]). The folder is written beside its destination
//! and renamed into place ([`optima::io::write_dir_atomically`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use half::{bf16, f16};
use safetensors::Dtype;
use serde_json::{Value, json};

use super::gguf_tokenizer;
use super::layout::{gguf_row_of_each_hf_row, hf_name, is_rotary};
use super::shards::SINGLE_FILE;
use crate::gguf::GgufFile;
use crate::llama::LlamaModel;
use crate::model_file::{ModelSource, model_tensor, model_tensor_names};
use optima::error::{OptimaError, Result};

/// Element type of the written safetensors. Pruned zeros stay exactly zero in all three.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum HfDtype {
    /// `float32`: the weights bit for bit.
    F32,
    /// `float16`.
    F16,
    /// `bfloat16`.
    BF16,
}

impl HfDtype {
    /// The dtype of a safetensors tensor, if it is one of the three.
    pub fn from_safetensors(dtype: Dtype) -> Option<HfDtype> {
        match dtype {
            Dtype::F32 => Some(HfDtype::F32),
            Dtype::F16 => Some(HfDtype::F16),
            Dtype::BF16 => Some(HfDtype::BF16),
            _ => None,
        }
    }

    /// The name `config.json` gives it (`torch_dtype`).
    pub fn torch_name(self) -> &'static str {
        match self {
            HfDtype::F32 => "float32",
            HfDtype::F16 => "float16",
            HfDtype::BF16 => "bfloat16",
        }
    }

    fn safetensors(self) -> Dtype {
        match self {
            HfDtype::F32 => Dtype::F32,
            HfDtype::F16 => Dtype::F16,
            HfDtype::BF16 => Dtype::BF16,
        }
    }

    fn width(self) -> usize {
        match self {
            HfDtype::F32 => 4,
            HfDtype::F16 | HfDtype::BF16 => 2,
        }
    }

    fn push(self, out: &mut Vec<u8>, v: f32) {
        match self {
            HfDtype::F32 => out.extend_from_slice(&v.to_le_bytes()),
            HfDtype::F16 => out.extend_from_slice(&f16::from_f32(v).to_le_bytes()),
            HfDtype::BF16 => out.extend_from_slice(&bf16::from_f32(v).to_le_bytes()),
        }
    }
}

impl fmt::Display for HfDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HfDtype::F32 => "f32",
            HfDtype::F16 => "f16",
            HfDtype::BF16 => "bf16",
        })
    }
}

impl FromStr for HfDtype {
    type Err = OptimaError;
    fn from_str(s: &str) -> Result<HfDtype> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(HfDtype::F32),
            "f16" | "float16" => Ok(HfDtype::F16),
            "bf16" | "bfloat16" => Ok(HfDtype::BF16),
            other => Err(OptimaError::InvalidSetting(format!("dtype {other:?}: use f32, f16 or bf16"))),
        }
    }
}

/// Tokenizer and generation files copied from a Hugging Face input when it has them.
const COPIED_FILES: [&str; 9] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "tokenizer.model",
];

/// Writes `model` (loaded from `source`) as a Hugging Face folder at `dir`, its weights in
/// `dtype` (default: a Hugging Face input's own dtype, F32 for a GGUF input). From a Hugging Face
/// input, `config.json` is the input's with `torch_dtype` set, and the tokenizer files are
/// copied; from a GGUF input, they are written from its metadata. Refuses a `dir` that holds the
/// input, is a file, or is a non-empty folder without a `config.json`; a previous model folder
/// there is replaced only once the new one is complete.
pub fn write_checkpoint(dir: &Path, source: &ModelSource, model: &LlamaModel, dtype: Option<HfDtype>) -> Result<()> {
    check_destination(dir, source)?;
    let dtype = dtype.unwrap_or(match source {
        ModelSource::HuggingFace(hf) => hf.dtype,
        ModelSource::Gguf(_) => HfDtype::F32,
    });
    let config = match source {
        ModelSource::HuggingFace(hf) => {
            let path = hf.dir.join("config.json");
            let text =
                std::fs::read_to_string(&path).map_err(|source| OptimaError::Io { path: path.clone(), source })?;
            let mut config: Value = serde_json::from_str(&text)
                .map_err(|e| OptimaError::Format { path: path.clone(), detail: format!("config.json: {e}") })?;
            if let Some(map) = config.as_object_mut() {
                map.insert("torch_dtype".into(), dtype.torch_name().into());
            }
            config
        }
        ModelSource::Gguf(gguf) => gguf_config(gguf, model, dtype),
    };
    optima::io::remove_stale_temporaries(dir);
    optima::io::write_dir_atomically(dir, |tmp| {
        write_json(&tmp.join("config.json"), &config)?;
        write_weights(&tmp.join(SINGLE_FILE), model, dtype)?;
        // The safetensors writer creates its file private (0600): give it config.json's mode.
        let weights = tmp.join(SINGLE_FILE);
        let io = |source| OptimaError::Io { path: weights.clone(), source };
        let mode = std::fs::metadata(tmp.join("config.json")).map_err(io)?.permissions();
        std::fs::set_permissions(&weights, mode).map_err(io)?;
        match source {
            ModelSource::HuggingFace(hf) => {
                for name in COPIED_FILES {
                    let from = hf.dir.join(name);
                    if from.is_file() {
                        std::fs::copy(&from, tmp.join(name))
                            .map_err(|source| OptimaError::Io { path: from, source })?;
                    }
                }
                Ok(())
            }
            ModelSource::Gguf(gguf) => {
                let files = gguf_tokenizer::tokenizer_files(gguf, model.config.context)?;
                for (name, value) in files {
                    write_json(&tmp.join(name), &value)?;
                }
                write_json(&tmp.join("generation_config.json"), &generation_config(gguf))
            }
        }
    })
}

/// Refuses a destination that would destroy the input or something that is not a model folder.
fn check_destination(dir: &Path, source: &ModelSource) -> Result<()> {
    let refuse = |why: String| Err(OptimaError::InvalidSetting(format!("--out {}: {why}", dir.display())));
    if dir.exists() && !dir.is_dir() {
        return refuse("a file is there; a Hugging Face output is a folder".into());
    }
    let Ok(out) = dir.canonicalize() else { return Ok(()) };
    let inputs: Vec<&Path> = match source {
        ModelSource::Gguf(g) => vec![g.path()],
        ModelSource::HuggingFace(hf) => {
            std::iter::once(hf.dir.as_path()).chain(hf.files.iter().map(|f| f.as_path())).collect()
        }
    };
    for input in inputs {
        if input.canonicalize().is_ok_and(|i| i.starts_with(&out)) {
            return refuse(format!("refusing to overwrite the input model {}; choose another --out", input.display()));
        }
    }
    let mut entries = std::fs::read_dir(&out).map_err(|source| OptimaError::Io { path: dir.to_path_buf(), source })?;
    if entries.next().is_some() && !out.join("config.json").is_file() {
        return refuse("the folder is not empty and holds no config.json; refusing to replace it".into());
    }
    Ok(())
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| OptimaError::Internal(e.to_string()))?;
    std::fs::write(path, text + "\n").map_err(|source| OptimaError::Io { path: path.to_path_buf(), source })
}

/// An `f32` as the shortest decimal that reads back as it (`1e-5`, not `9.99999974e-6`).
fn short_float(v: f32) -> Value {
    v.to_string().parse::<f64>().ok().and_then(serde_json::Number::from_f64).map_or(Value::Null, Value::Number)
}

/// A GGUF metadata integer, as JSON.
fn gguf_id(gguf: &GgufFile, key: &str) -> Option<Value> {
    gguf.get(key).and_then(|v| v.as_u64()).map(Value::from)
}

/// `config.json` of a model read from GGUF: the Llama architecture (Qwen2's when the model has
/// q/k/v biases) with the shapes the model has, and the special token ids of the metadata.
fn gguf_config(gguf: &GgufFile, model: &LlamaModel, dtype: HfDtype) -> Value {
    let c = &model.config;
    let qwen2 = model.blocks.iter().any(|b| b.qkv_bias.is_some());
    let mut config = json!({
        "architectures": [if qwen2 { "Qwen2ForCausalLM" } else { "LlamaForCausalLM" }],
        "model_type": if qwen2 { "qwen2" } else { "llama" },
        "hidden_size": c.hidden,
        "intermediate_size": c.intermediate,
        "num_hidden_layers": c.blocks,
        "num_attention_heads": c.heads,
        "num_key_value_heads": c.kv_heads,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": short_float(c.rms_eps),
        "rope_theta": short_float(c.rope_theta),
        "rope_scaling": null,
        "max_position_embeddings": c.context,
        "vocab_size": c.vocab,
        "tie_word_embeddings": model.output.is_none(),
        "attention_bias": qwen2,
        "mlp_bias": false,
        "initializer_range": 0.02,
        "use_cache": true,
        "torch_dtype": dtype.torch_name(),
    });
    if let Some(map) = config.as_object_mut() {
        for (key, name) in [("bos_token_id", "bos"), ("eos_token_id", "eos"), ("pad_token_id", "padding")] {
            if let Some(id) = gguf_id(gguf, &format!("tokenizer.ggml.{name}_token_id")) {
                map.insert(key.into(), id);
            }
        }
    }
    config
}

fn generation_config(gguf: &GgufFile) -> Value {
    let mut config = serde_json::Map::new();
    for (key, name) in [("bos_token_id", "bos"), ("eos_token_id", "eos"), ("pad_token_id", "padding")] {
        if let Some(id) = gguf_id(gguf, &format!("tokenizer.ggml.{name}_token_id")) {
            config.insert(key.into(), id);
        }
    }
    Value::Object(config)
}

/// One tensor in the Hugging Face layout, converted to bytes only when the writer reaches it.
struct OutTensor<'a> {
    dtype: HfDtype,
    /// PyTorch order: `[out, in]` for a matrix.
    shape: Vec<usize>,
    /// The values in the GGUF layout.
    values: &'a [f32],
    /// For a q/k weight or bias, the GGUF row of each Hugging Face row.
    rows: Option<Vec<usize>>,
}

impl safetensors::View for OutTensor<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype.safetensors()
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        let mut out = Vec::with_capacity(self.data_len());
        match &self.rows {
            None => self.values.iter().for_each(|&v| self.dtype.push(&mut out, v)),
            Some(rows) => {
                // Checked in `write_weights`: the rows divide the values evenly.
                let cols = self.values.len() / rows.len().max(1);
                for &from in rows {
                    let row = self.values.get(from * cols..(from + 1) * cols).unwrap_or_default();
                    row.iter().for_each(|&v| self.dtype.push(&mut out, v));
                }
            }
        }
        out.into()
    }
    fn data_len(&self) -> usize {
        self.values.len() * self.dtype.width()
    }
}

/// Writes every tensor `model` holds to one safetensors file under its Hugging Face name.
fn write_weights(path: &Path, model: &LlamaModel, dtype: HfDtype) -> Result<()> {
    let mut tensors = Vec::new();
    for (gguf, dims) in model_tensor_names(model) {
        let name = hf_name(&gguf).ok_or_else(|| OptimaError::Internal(format!("no Hugging Face name for {gguf}")))?;
        let values =
            model_tensor(model, &gguf).ok_or_else(|| OptimaError::Internal(format!("tensor {gguf} not held")))?;
        let shape: Vec<usize> = dims.iter().rev().copied().collect();
        let rows = shape.first().copied().unwrap_or(0);
        if values.len() != dims.iter().product::<usize>() || rows == 0 || values.len() % rows != 0 {
            return Err(OptimaError::shape(&name, format!("{shape:?}"), format!("{} values", values.len())));
        }
        let rows =
            if is_rotary(&gguf) { Some(gguf_row_of_each_hf_row(&name, rows, model.config.head_dim)?) } else { None };
        tensors.push((name, OutTensor { dtype, shape, values, rows }));
    }
    let metadata = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("producer".to_string(), format!("optima {}", env!("CARGO_PKG_VERSION"))),
    ]);
    safetensors::serialize_to_file(tensors, Some(metadata), path)
        .map_err(|e| OptimaError::Format { path: path.to_path_buf(), detail: e.to_string() })
}
