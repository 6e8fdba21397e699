//! The model's shape and the names of its linear layers and their inputs.

use optima::error::{OptimaError, Result};

/// The shape of a Llama model, from the GGUF metadata keys `llama.*`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct LlamaConfig {
    /// Residual width (`llama.embedding_length`).
    pub hidden: usize,
    /// MLP width (`llama.feed_forward_length`).
    pub intermediate: usize,
    /// Number of transformer blocks (`llama.block_count`).
    pub blocks: usize,
    /// Query heads (`llama.attention.head_count`).
    pub heads: usize,
    /// Key/value heads (`llama.attention.head_count_kv`); `heads` must be a multiple of it.
    pub kv_heads: usize,
    /// Width of one head; `heads · head_dim` must equal `hidden`, and it must be even for RoPE.
    pub head_dim: usize,
    /// RoPE base frequency θ (`llama.rope.freq_base`).
    pub rope_theta: f32,
    /// RMSNorm epsilon (`llama.attention.layer_norm_rms_epsilon`).
    pub rms_eps: f32,
    /// Vocabulary size (rows of `token_embd.weight`).
    pub vocab: usize,
    /// Longest sequence the model accepts (`llama.context_length`).
    pub context: usize,
}

impl LlamaConfig {
    /// SmolLM2-135M: 30 blocks, hidden 576, MLP 1536, 9 heads / 3 KV heads, θ = 1e5, ε = 1e-5,
    /// vocabulary 49152, context 8192.
    pub fn smollm2_135m() -> Self {
        Self {
            hidden: 576,
            intermediate: 1536,
            blocks: 30,
            heads: 9,
            kv_heads: 3,
            head_dim: 64,
            rope_theta: 100_000.0,
            rms_eps: 1e-5,
            vocab: 49152,
            context: 8192,
        }
    }

    /// Reads the configuration from GGUF-style metadata: `lookup(key)` returns the numeric value
    /// of a `llama.*` key, or `None` when it is absent. `vocab` comes from the tokenizer or from
    /// `token_embd.weight`. `llama.rope.freq_base` defaults to 10000 and
    /// `llama.attention.head_count_kv` to the head count, as in llama.cpp.
    pub fn from_metadata(lookup: impl Fn(&str) -> Option<f64>, vocab: usize) -> Result<Self> {
        let count = |key: &str| -> Result<usize> {
            let value =
                lookup(key).ok_or_else(|| OptimaError::InvalidSetting(format!("missing metadata key {key}")))?;
            if value.is_finite() && value >= 0.0 && value.fract() == 0.0 && value <= u32::MAX as f64 {
                Ok(value as usize)
            } else {
                Err(OptimaError::InvalidSetting(format!("metadata key {key} = {value} is not a count")))
            }
        };
        let hidden = count("llama.embedding_length")?;
        let heads = count("llama.attention.head_count")?;
        let kv_heads = match lookup("llama.attention.head_count_kv") {
            Some(_) => count("llama.attention.head_count_kv")?,
            None => heads,
        };
        let head_dim = match lookup("llama.attention.key_length") {
            Some(_) => count("llama.attention.key_length")?,
            None if heads > 0 => hidden / heads,
            None => 0,
        };
        let rms_eps = lookup("llama.attention.layer_norm_rms_epsilon").ok_or_else(|| {
            OptimaError::InvalidSetting("missing metadata key llama.attention.layer_norm_rms_epsilon".into())
        })? as f32;
        let config = Self {
            hidden,
            intermediate: count("llama.feed_forward_length")?,
            blocks: count("llama.block_count")?,
            heads,
            kv_heads,
            head_dim,
            rope_theta: lookup("llama.rope.freq_base").unwrap_or(10_000.0) as f32,
            rms_eps,
            vocab,
            context: count("llama.context_length")?,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks that the dimensions fit together: every size positive, `heads · head_dim = hidden`,
    /// `heads` a multiple of `kv_heads`, `head_dim` even, θ > 0 and ε ≥ 0 finite.
    pub fn validate(&self) -> Result<()> {
        let bad = |detail: String| Err(OptimaError::InvalidSetting(format!("Llama config: {detail}")));
        for (name, value) in [
            ("hidden", self.hidden),
            ("intermediate", self.intermediate),
            ("blocks", self.blocks),
            ("heads", self.heads),
            ("kv_heads", self.kv_heads),
            ("head_dim", self.head_dim),
            ("vocab", self.vocab),
            ("context", self.context),
        ] {
            if value == 0 {
                return bad(format!("{name} must be positive"));
            }
        }
        if self.heads.checked_mul(self.head_dim) != Some(self.hidden) {
            return bad(format!(
                "heads × head_dim = {} × {} must equal hidden = {}",
                self.heads, self.head_dim, self.hidden
            ));
        }
        if self.heads % self.kv_heads != 0 {
            return bad(format!("heads = {} is not a multiple of kv_heads = {}", self.heads, self.kv_heads));
        }
        if self.head_dim % 2 != 0 {
            return bad(format!("head_dim = {} must be even for rotary embeddings", self.head_dim));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return bad(format!("rope_theta = {} must be positive and finite", self.rope_theta));
        }
        if !(self.rms_eps.is_finite() && self.rms_eps >= 0.0) {
            return bad(format!("rms_eps = {} must be non-negative and finite", self.rms_eps));
        }
        Ok(())
    }

    /// Width of the key and value projections: `kv_heads · head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

/// One of the seven linear layers of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum LinearKind {
    /// Query projection `attn_q`, `[hidden, hidden]`.
    Q,
    /// Key projection `attn_k`, `[kv_dim, hidden]`.
    K,
    /// Value projection `attn_v`, `[kv_dim, hidden]`.
    V,
    /// Attention output projection `attn_output`, `[hidden, hidden]`.
    O,
    /// MLP gate `ffn_gate`, `[intermediate, hidden]`.
    Gate,
    /// MLP up projection `ffn_up`, `[intermediate, hidden]`.
    Up,
    /// MLP down projection `ffn_down`, `[hidden, intermediate]`.
    Down,
}

impl LinearKind {
    /// All seven, in the order the forward pass uses them.
    pub const ALL: [LinearKind; 7] = [
        LinearKind::Q,
        LinearKind::K,
        LinearKind::V,
        LinearKind::O,
        LinearKind::Gate,
        LinearKind::Up,
        LinearKind::Down,
    ];

    /// The short llama.cpp name: `attn_q`, `attn_k`, `attn_v`, `attn_output`, `ffn_gate`,
    /// `ffn_up`, `ffn_down`.
    pub fn short_name(self) -> &'static str {
        match self {
            LinearKind::Q => "attn_q",
            LinearKind::K => "attn_k",
            LinearKind::V => "attn_v",
            LinearKind::O => "attn_output",
            LinearKind::Gate => "ffn_gate",
            LinearKind::Up => "ffn_up",
            LinearKind::Down => "ffn_down",
        }
    }

    /// The GGUF tensor name in block `block`, e.g. `blk.3.attn_q.weight`.
    pub fn gguf_name(self, block: usize) -> String {
        format!("blk.{block}.{}.weight", self.short_name())
    }

    /// The activation this layer multiplies.
    pub fn input(self) -> LinearInput {
        match self {
            LinearKind::Q | LinearKind::K | LinearKind::V => LinearInput::Attn,
            LinearKind::O => LinearInput::AttnOut,
            LinearKind::Gate | LinearKind::Up => LinearInput::Mlp,
            LinearKind::Down => LinearInput::MlpHidden,
        }
    }

    /// `(out_features, in_features)` under `config`.
    pub fn shape(self, config: &LlamaConfig) -> (usize, usize) {
        match self {
            LinearKind::Q | LinearKind::O => (config.hidden, config.hidden),
            LinearKind::K | LinearKind::V => (config.kv_dim(), config.hidden),
            LinearKind::Gate | LinearKind::Up => (config.intermediate, config.hidden),
            LinearKind::Down => (config.hidden, config.intermediate),
        }
    }
}

impl std::fmt::Display for LinearKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.short_name())
    }
}

/// A distinct input of a block's linear layers: layers that share an input share a Hessian.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum LinearInput {
    /// `RMSNorm(x) · attn_norm`, seen by q, k and v.
    Attn,
    /// The attention output before the output projection, seen by o.
    AttnOut,
    /// `RMSNorm(x) · ffn_norm` after the attention residual, seen by gate and up.
    Mlp,
    /// `silu(gate) · up`, seen by down.
    MlpHidden,
}

impl LinearInput {
    /// All four, in the order the forward pass produces them.
    pub const ALL: [LinearInput; 4] =
        [LinearInput::Attn, LinearInput::AttnOut, LinearInput::Mlp, LinearInput::MlpHidden];

    /// The layers that multiply this input.
    pub fn kinds(self) -> &'static [LinearKind] {
        match self {
            LinearInput::Attn => &[LinearKind::Q, LinearKind::K, LinearKind::V],
            LinearInput::AttnOut => &[LinearKind::O],
            LinearInput::Mlp => &[LinearKind::Gate, LinearKind::Up],
            LinearInput::MlpHidden => &[LinearKind::Down],
        }
    }

    /// Width of this input (the side of its Hessian).
    pub fn dim(self, config: &LlamaConfig) -> usize {
        match self {
            LinearInput::Attn | LinearInput::AttnOut | LinearInput::Mlp => config.hidden,
            LinearInput::MlpHidden => config.intermediate,
        }
    }
}
