//! A Hugging Face `config.json` of a Llama-family model, and the [`LlamaConfig`] it describes.

use std::path::Path;

use serde::Deserialize;

use crate::llama::LlamaConfig;
use optima::error::{OptimaError, Result};

/// The Llama-family architectures read from Hugging Face folders (`model_type` in `config.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum HfArchitecture {
    /// `llama`: Llama 2/3, SmolLM, TinyLlama, …
    Llama,
    /// `mistral`: the Llama block with a sliding attention window.
    Mistral,
    /// `qwen2`: the Llama block with biases on the q/k/v projections.
    Qwen2,
}

impl HfArchitecture {
    /// Whether the q/k/v projections carry biases (`self_attn.{q,k,v}_proj.bias`).
    pub fn qkv_bias(self) -> bool {
        self == HfArchitecture::Qwen2
    }
}

/// The fields of `config.json` that fix the model's shape; unknown fields are ignored, and
/// fields that would change the forward pass are checked by [`HfConfig::llama_config`].
#[derive(Clone, Debug, Deserialize)]
pub struct HfConfig {
    /// `llama`, `mistral` or `qwen2`.
    pub model_type: String,
    /// Residual width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Transformer blocks.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (defaults to the query heads).
    pub num_key_value_heads: Option<usize>,
    /// Width of one head (defaults to `hidden_size / num_attention_heads`).
    pub head_dim: Option<usize>,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base (defaults to 10000).
    pub rope_theta: Option<f64>,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Whether the output head is the token embedding (defaults to false, as in `transformers`).
    pub tie_word_embeddings: Option<bool>,
    /// Longest sequence the model was trained for.
    pub max_position_embeddings: usize,
    /// The MLP activation; only `silu` is supported.
    pub hidden_act: Option<String>,
    /// RoPE scaling (Llama 3.1's `llama3`, YaRN, …): unsupported unless absent or null.
    pub rope_scaling: Option<serde_json::Value>,
    /// Biases on the attention projections (Llama's `attention_bias`): unsupported when true.
    pub attention_bias: Option<bool>,
    /// Biases on the MLP projections: unsupported when true.
    pub mlp_bias: Option<bool>,
    /// Mistral's and Qwen2's sliding attention window.
    pub sliding_window: Option<usize>,
    /// Qwen2: whether the sliding window is used at all (default false).
    pub use_sliding_window: Option<bool>,
}

impl HfConfig {
    /// Reads and parses `config.json`; a malformed file is a format error naming it.
    pub fn read(path: &Path) -> Result<HfConfig> {
        let text =
            std::fs::read_to_string(path).map_err(|source| OptimaError::Io { path: path.to_path_buf(), source })?;
        serde_json::from_str(&text)
            .map_err(|e| OptimaError::Format { path: path.to_path_buf(), detail: format!("config.json: {e}") })
    }

    /// The architecture named by `model_type`, or a format error for any other.
    pub fn architecture(&self, path: &Path) -> Result<HfArchitecture> {
        match self.model_type.as_str() {
            "llama" => Ok(HfArchitecture::Llama),
            "mistral" => Ok(HfArchitecture::Mistral),
            "qwen2" => Ok(HfArchitecture::Qwen2),
            other => Err(unsupported(path, format!("model_type {other:?} (supported: llama, mistral, qwen2)"))),
        }
    }

    /// Whether the output head is tied to the token embedding.
    pub fn tied(&self) -> bool {
        self.tie_word_embeddings.unwrap_or(false)
    }

    /// The [`LlamaConfig`] of this model, validated. Features the forward pass lacks are refused
    /// by name: RoPE scaling, MLP biases, attention biases outside Qwen2, an activation other than
    /// SiLU. A sliding window (Mistral, Qwen2 with `use_sliding_window`) caps the context at the
    /// window, inside which attention is the full causal one the forward pass computes.
    pub fn llama_config(&self, path: &Path) -> Result<LlamaConfig> {
        let arch = self.architecture(path)?;
        if let Some(act) = self.hidden_act.as_deref().filter(|&a| a != "silu") {
            return Err(unsupported(path, format!("hidden_act {act:?} (only silu)")));
        }
        if self.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(unsupported(path, "rope_scaling (only plain RoPE)".into()));
        }
        if self.attention_bias == Some(true) && !arch.qkv_bias() {
            return Err(unsupported(path, "attention_bias = true".into()));
        }
        if self.mlp_bias == Some(true) {
            return Err(unsupported(path, "mlp_bias = true".into()));
        }
        let window = match arch {
            HfArchitecture::Mistral => self.sliding_window,
            HfArchitecture::Qwen2 if self.use_sliding_window == Some(true) => self.sliding_window,
            _ => None,
        };
        let heads = self.num_attention_heads;
        let config = LlamaConfig {
            hidden: self.hidden_size,
            intermediate: self.intermediate_size,
            blocks: self.num_hidden_layers,
            heads,
            kv_heads: self.num_key_value_heads.unwrap_or(heads),
            head_dim: self.head_dim.or_else(|| self.hidden_size.checked_div(heads)).unwrap_or(0),
            rope_theta: self.rope_theta.unwrap_or(10_000.0) as f32,
            rms_eps: self.rms_norm_eps as f32,
            vocab: self.vocab_size,
            context: window.map_or(self.max_position_embeddings, |w| w.min(self.max_position_embeddings)),
        };
        config
            .validate()
            .map_err(|e| OptimaError::Format { path: path.to_path_buf(), detail: format!("config.json: {e}") })?;
        Ok(config)
    }
}

fn unsupported(path: &Path, what: String) -> OptimaError {
    OptimaError::Format { path: path.to_path_buf(), detail: format!("unsupported model: {what}") }
}
