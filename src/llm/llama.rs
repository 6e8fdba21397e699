//! The Llama forward pass in f32: RMSNorm, grouped-query attention with rotary positions,
//! SwiGLU, tied or separate output head.
//!
//! Weights use llama.cpp's GGUF names and layout: every matrix is `[out_features, in_features]`
//! (`y = W x`), and the q/k rows are stored permuted so that RoPE rotates **adjacent** pairs
//! `(2i, 2i+1)` of each head with frequency `θ^(−2i/d)` (llama.cpp's "normal" rope mode).
//!
//! [`LlamaBlock::forward`] can report the input of every distinct linear layer through a
//! callback, which is what the pruning driver accumulates its Hessians from.
//!
//! ```
//! use optima::llm::llama::{LlamaConfig, LlamaModel};
//!
//! # fn main() -> optima::Result<()> {
//! let config = LlamaConfig {
//!     hidden: 32, intermediate: 64, blocks: 2, heads: 4, kv_heads: 2, head_dim: 8,
//!     rope_theta: 10_000.0, rms_eps: 1e-5, vocab: 50, context: 128,
//! };
//! let model = LlamaModel::random(config, 7)?;
//! let nll = model.nll(&[1, 2, 3, 4, 5])?;
//! assert_eq!(nll.len(), 4);
//! # Ok(()) }
//! ```

use faer::{Accum, Par};
use faer_ext::IntoFaer;
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis, Zip, s};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;
use rayon::prelude::*;

use crate::error::{OptimaError, Result};

/// Query rows per attention task: each (head, row block) pair is one rayon task, and a block only
/// multiplies against the keys at or before its last row, which halves the causal work.
const ATTENTION_ROW_BLOCK: usize = 64;
/// Positions per chunk when turning hidden states into log-probabilities, so the `[T, vocab]`
/// logits never exist all at once.
const LOGIT_ROW_CHUNK: usize = 128;

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

/// The callback [`LlamaBlock::forward`] reports linear-layer inputs to: `[T, dim]` per call.
pub type Capture<'a> = &'a mut dyn FnMut(LinearInput, ArrayView2<'_, f32>);

/// The weights of one transformer block.
#[derive(Clone, Debug)]
pub struct LlamaBlock {
    /// RMSNorm gain before attention, `[hidden]`.
    pub attn_norm: Vec<f32>,
    /// Query projection `[hidden, hidden]` (rows permuted for adjacent-pair RoPE).
    pub q: Array2<f32>,
    /// Key projection `[kv_dim, hidden]` (rows permuted for adjacent-pair RoPE).
    pub k: Array2<f32>,
    /// Value projection `[kv_dim, hidden]`.
    pub v: Array2<f32>,
    /// Attention output projection `[hidden, hidden]`.
    pub o: Array2<f32>,
    /// RMSNorm gain before the MLP, `[hidden]`.
    pub ffn_norm: Vec<f32>,
    /// MLP gate `[intermediate, hidden]`.
    pub gate: Array2<f32>,
    /// MLP up projection `[intermediate, hidden]`.
    pub up: Array2<f32>,
    /// MLP down projection `[hidden, intermediate]`.
    pub down: Array2<f32>,
}

impl LlamaBlock {
    /// The weight of one linear layer.
    pub fn weight(&self, kind: LinearKind) -> &Array2<f32> {
        match kind {
            LinearKind::Q => &self.q,
            LinearKind::K => &self.k,
            LinearKind::V => &self.v,
            LinearKind::O => &self.o,
            LinearKind::Gate => &self.gate,
            LinearKind::Up => &self.up,
            LinearKind::Down => &self.down,
        }
    }

    /// The weight of one linear layer, to overwrite (e.g. with its pruned reconstruction).
    pub fn weight_mut(&mut self, kind: LinearKind) -> &mut Array2<f32> {
        match kind {
            LinearKind::Q => &mut self.q,
            LinearKind::K => &mut self.k,
            LinearKind::V => &mut self.v,
            LinearKind::O => &mut self.o,
            LinearKind::Gate => &mut self.gate,
            LinearKind::Up => &mut self.up,
            LinearKind::Down => &mut self.down,
        }
    }

    /// Checks every weight's shape against `config`; `block` only names the tensors in errors.
    pub fn check(&self, config: &LlamaConfig, block: usize) -> Result<()> {
        self.check_named(config, &format!("blk.{block}"))
    }

    fn check_named(&self, config: &LlamaConfig, prefix: &str) -> Result<()> {
        for (name, norm) in [("attn_norm", &self.attn_norm), ("ffn_norm", &self.ffn_norm)] {
            if norm.len() != config.hidden {
                return Err(OptimaError::shape(
                    format!("{prefix}.{name}.weight"),
                    format!("[{}]", config.hidden),
                    format!("[{}]", norm.len()),
                ));
            }
        }
        for kind in LinearKind::ALL {
            check_matrix(&format!("{prefix}.{}.weight", kind.short_name()), self.weight(kind), kind.shape(config))?;
        }
        Ok(())
    }

    /// Runs the block on one sequence `x` `[T, hidden]` at positions `0..T`:
    /// `x + attn(RMSNorm(x))`, then `h + down(silu(gate(RMSNorm(h))) · up(RMSNorm(h)))`.
    ///
    /// `capture`, when given, is called once per [`LinearInput`] with that input `[T, dim]`.
    pub fn forward(
        &self,
        config: &LlamaConfig,
        x: ArrayView2<'_, f32>,
        mut capture: Option<Capture<'_>>,
    ) -> Result<Array2<f32>> {
        config.validate()?;
        self.check_named(config, "block")?;
        let t = x.nrows();
        if x.ncols() != config.hidden {
            return Err(OptimaError::shape("block input", format!("[T, {}]", config.hidden), shape_of(x)));
        }
        if t > config.context {
            return Err(OptimaError::InvalidSetting(format!(
                "a sequence of {t} tokens exceeds the model's context of {}",
                config.context
            )));
        }
        let mut report = |input: LinearInput, a: ArrayView2<'_, f32>| {
            if let Some(f) = capture.as_mut() {
                f(input, a);
            }
        };
        let par = Par::rayon(0);

        // Attention.
        let xn = rms_norm(x, &self.attn_norm, config.rms_eps);
        report(LinearInput::Attn, xn.view());
        let mut q = linear(xn.view(), self.q.view(), par);
        let mut k = linear(xn.view(), self.k.view(), par);
        let v = linear(xn.view(), self.v.view(), par);
        drop(xn);
        let rope = RopeTable::new(t, config.head_dim, config.rope_theta);
        rope.apply(q.view_mut(), config.head_dim);
        rope.apply(k.view_mut(), config.head_dim);
        let attn = attention(config, q.view(), k.view(), v.view());
        drop((q, k, v));
        report(LinearInput::AttnOut, attn.view());
        let mut h = x.to_owned();
        linear_add(h.view_mut(), attn.view(), self.o.view(), par);
        drop(attn);

        // MLP.
        let hn = rms_norm(h.view(), &self.ffn_norm, config.rms_eps);
        report(LinearInput::Mlp, hn.view());
        let mut gate = linear(hn.view(), self.gate.view(), par);
        let up = linear(hn.view(), self.up.view(), par);
        drop(hn);
        Zip::from(&mut gate).and(&up).par_for_each(|g, &u| *g = silu(*g) * u);
        report(LinearInput::MlpHidden, gate.view());
        linear_add(h.view_mut(), gate.view(), self.down.view(), par);
        Ok(h)
    }
}

/// A Llama model in f32.
#[derive(Clone, Debug)]
pub struct LlamaModel {
    /// The shape.
    pub config: LlamaConfig,
    /// Token embeddings `[vocab, hidden]`; also the output head when `output` is `None`.
    pub token_embd: Array2<f32>,
    /// The transformer blocks, in order.
    pub blocks: Vec<LlamaBlock>,
    /// Final RMSNorm gain, `[hidden]`.
    pub output_norm: Vec<f32>,
    /// Separate output head `[vocab, hidden]`; `None` for tied embeddings.
    pub output: Option<Array2<f32>>,
}

impl LlamaModel {
    /// Builds the model from tensors by their GGUF names: `get` returns a matrix
    /// `[out, in]`, `get_vec` a vector, and `get_optional` a matrix that may be absent
    /// (`output.weight`; `Ok(None)` means tied embeddings). Every shape is checked against
    /// `config` and every value must be finite; errors name the tensor.
    pub fn from_tensors(
        config: LlamaConfig,
        mut get: impl FnMut(&str) -> Result<Array2<f32>>,
        mut get_vec: impl FnMut(&str) -> Result<Vec<f32>>,
        mut get_optional: impl FnMut(&str) -> Result<Option<Array2<f32>>>,
    ) -> Result<Self> {
        config.validate()?;
        let mut matrix = |name: &str, shape: (usize, usize)| -> Result<Array2<f32>> {
            let a = get(name)?;
            check_matrix(name, &a, shape)?;
            check_finite(name, a.view())?;
            Ok(a)
        };
        let mut vector = |name: &str| -> Result<Vec<f32>> {
            let v = get_vec(name)?;
            if v.len() != config.hidden {
                return Err(OptimaError::shape(name, format!("[{}]", config.hidden), format!("[{}]", v.len())));
            }
            check_finite(name, ndarray::aview1(&v).insert_axis(Axis(0)))?;
            Ok(v)
        };
        let token_embd = matrix("token_embd.weight", (config.vocab, config.hidden))?;
        // `blocks` comes from a file's metadata: grow as its tensors are found, never reserve for it.
        let mut blocks = Vec::new();
        for b in 0..config.blocks {
            blocks.push(LlamaBlock {
                attn_norm: vector(&format!("blk.{b}.attn_norm.weight"))?,
                q: matrix(&LinearKind::Q.gguf_name(b), LinearKind::Q.shape(&config))?,
                k: matrix(&LinearKind::K.gguf_name(b), LinearKind::K.shape(&config))?,
                v: matrix(&LinearKind::V.gguf_name(b), LinearKind::V.shape(&config))?,
                o: matrix(&LinearKind::O.gguf_name(b), LinearKind::O.shape(&config))?,
                ffn_norm: vector(&format!("blk.{b}.ffn_norm.weight"))?,
                gate: matrix(&LinearKind::Gate.gguf_name(b), LinearKind::Gate.shape(&config))?,
                up: matrix(&LinearKind::Up.gguf_name(b), LinearKind::Up.shape(&config))?,
                down: matrix(&LinearKind::Down.gguf_name(b), LinearKind::Down.shape(&config))?,
            });
        }
        let output_norm = vector("output_norm.weight")?;
        let output = match get_optional("output.weight")? {
            Some(a) => {
                check_matrix("output.weight", &a, (config.vocab, config.hidden))?;
                check_finite("output.weight", a.view())?;
                Some(a)
            }
            None => None,
        };
        let model = Self { config, token_embd, blocks, output_norm, output };
        Ok(model)
    }

    /// A random model of shape `config`, the same for the same seed: linear weights and
    /// embeddings ~ N(0, 1/in_features), norm gains ~ 1 + N(0, 0.1²), tied embeddings.
    pub fn random(config: LlamaConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let mut stream = 0u64;
        let mut next = || {
            stream += 1;
            seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(stream.wrapping_mul(0xbf58_476d_1ce4_e5b9))
        };
        let gain = |s: u64| -> Vec<f32> {
            let mut rng = StdRng::seed_from_u64(s);
            (0..config.hidden).map(|_| 1.0 + 0.1 * rng.sample::<f32, _>(StandardNormal)).collect()
        };
        let token_embd = random_matrix((config.vocab, config.hidden), next());
        let mut blocks = Vec::with_capacity(config.blocks);
        for _ in 0..config.blocks {
            blocks.push(LlamaBlock {
                attn_norm: gain(next()),
                q: random_matrix(LinearKind::Q.shape(&config), next()),
                k: random_matrix(LinearKind::K.shape(&config), next()),
                v: random_matrix(LinearKind::V.shape(&config), next()),
                o: random_matrix(LinearKind::O.shape(&config), next()),
                ffn_norm: gain(next()),
                gate: random_matrix(LinearKind::Gate.shape(&config), next()),
                up: random_matrix(LinearKind::Up.shape(&config), next()),
                down: random_matrix(LinearKind::Down.shape(&config), next()),
            });
        }
        let output_norm = gain(next());
        Ok(Self { config, token_embd, blocks, output_norm, output: None })
    }

    /// Checks every tensor's shape against the config (useful after editing weights in place).
    pub fn check(&self) -> Result<()> {
        self.config.validate()?;
        check_matrix("token_embd.weight", &self.token_embd, (self.config.vocab, self.config.hidden))?;
        if self.blocks.len() != self.config.blocks {
            return Err(OptimaError::shape("blocks", self.config.blocks.to_string(), self.blocks.len().to_string()));
        }
        for (b, block) in self.blocks.iter().enumerate() {
            block.check(&self.config, b)?;
        }
        if self.output_norm.len() != self.config.hidden {
            return Err(OptimaError::shape(
                "output_norm.weight",
                format!("[{}]", self.config.hidden),
                format!("[{}]", self.output_norm.len()),
            ));
        }
        if let Some(output) = &self.output {
            check_matrix("output.weight", output, (self.config.vocab, self.config.hidden))?;
        }
        Ok(())
    }

    /// Parameters held in f32 (embeddings, norms, every linear layer, the output head).
    pub fn parameter_count(&self) -> usize {
        let blocks: usize = self
            .blocks
            .iter()
            .map(|b| {
                LinearKind::ALL.iter().map(|&k| b.weight(k).len()).sum::<usize>() + b.attn_norm.len() + b.ffn_norm.len()
            })
            .sum();
        blocks + self.token_embd.len() + self.output_norm.len() + self.output.as_ref().map_or(0, |o| o.len())
    }

    /// Embeddings of `tokens`, `[T, hidden]`. Errors on an empty sequence, a token id outside
    /// the vocabulary, or a sequence longer than the context.
    pub fn embed(&self, tokens: &[u32]) -> Result<Array2<f32>> {
        let c = &self.config;
        if tokens.is_empty() {
            return Err(OptimaError::Empty("token sequence".into()));
        }
        if tokens.len() > c.context {
            return Err(OptimaError::InvalidSetting(format!(
                "a sequence of {} tokens exceeds the model's context of {}",
                tokens.len(),
                c.context
            )));
        }
        check_matrix("token_embd.weight", &self.token_embd, (c.vocab, c.hidden))?;
        if let Some((pos, &id)) = tokens.iter().enumerate().find(|&(_, &id)| id as usize >= c.vocab) {
            return Err(OptimaError::InvalidSetting(format!(
                "token id {id} at position {pos} is outside the vocabulary of {} tokens",
                c.vocab
            )));
        }
        let mut x = Array2::<f32>::zeros((tokens.len(), c.hidden));
        for (mut row, &id) in x.outer_iter_mut().zip(tokens) {
            row.assign(&self.token_embd.row(id as usize));
        }
        Ok(x)
    }

    /// Runs block `b` on `x` `[T, hidden]` (see [`LlamaBlock::forward`]).
    pub fn block_forward(&self, b: usize, x: ArrayView2<'_, f32>, capture: Option<Capture<'_>>) -> Result<Array2<f32>> {
        let block = self.blocks.get(b).ok_or_else(|| {
            OptimaError::InvalidSetting(format!("block {b} does not exist (the model has {})", self.blocks.len()))
        })?;
        self.config.validate()?;
        block.check(&self.config, b)?;
        block.forward(&self.config, x, capture)
    }

    /// The hidden states after every block, `[T, hidden]` (before the final norm).
    pub fn hidden_states(&self, tokens: &[u32]) -> Result<Array2<f32>> {
        let mut x = self.embed(tokens)?;
        for b in 0..self.blocks.len() {
            x = self.block_forward(b, x.view(), None)?;
        }
        Ok(x)
    }

    /// Logits `[T, vocab]` from hidden states `[T, hidden]`: final RMSNorm, then the output head
    /// (or the token embeddings when tied).
    pub fn logits(&self, hidden: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        let head = self.head()?;
        if hidden.ncols() != self.config.hidden {
            return Err(OptimaError::shape("hidden states", format!("[T, {}]", self.config.hidden), shape_of(hidden)));
        }
        let hn = rms_norm(hidden, &self.output_norm, self.config.rms_eps);
        Ok(linear(hn.view(), head.view(), Par::rayon(0)))
    }

    /// Negative log-likelihoods (natural log) of `tokens[1..]`, each given the tokens before it:
    /// `T − 1` values for `T` tokens (none for one token).
    pub fn nll(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        let hidden = self.hidden_states(tokens)?;
        let scored = tokens.len() - 1;
        let mut out = Vec::with_capacity(scored);
        let mut start = 0;
        while start < scored {
            let end = (start + LOGIT_ROW_CHUNK).min(scored);
            let logits = self.logits(hidden.slice(s![start..end, ..]))?;
            let targets = tokens.get(start + 1..end + 1).unwrap_or_default();
            let chunk = logits
                .axis_iter(Axis(0))
                .into_par_iter()
                .zip(targets)
                .map(|(row, &target)| {
                    let max = row.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l));
                    let sum: f64 = row.iter().map(|&l| f64::from(exp(l - max))).sum();
                    let lse = f64::from(max) + sum.ln();
                    let logit = row.get(target as usize).ok_or_else(|| {
                        OptimaError::InvalidSetting(format!(
                            "token {target} is outside the vocabulary of {}",
                            row.len()
                        ))
                    })?;
                    Ok((lse - f64::from(*logit)) as f32)
                })
                .collect::<Result<Vec<f32>>>()?;
            out.extend(chunk);
            start = end;
        }
        Ok(out)
    }

    /// The output head: `output.weight` or, tied, `token_embd.weight`, shape-checked.
    fn head(&self) -> Result<&Array2<f32>> {
        let (name, head) = match &self.output {
            Some(o) => ("output.weight", o),
            None => ("token_embd.weight", &self.token_embd),
        };
        check_matrix(name, head, (self.config.vocab, self.config.hidden))?;
        if self.output_norm.len() != self.config.hidden {
            return Err(OptimaError::shape(
                "output_norm.weight",
                format!("[{}]", self.config.hidden),
                format!("[{}]", self.output_norm.len()),
            ));
        }
        Ok(head)
    }
}

// ---------------------------------------------------------------------------------------------
// Kernels.

fn shape_of(a: ArrayView2<'_, f32>) -> String {
    format!("[{}, {}]", a.nrows(), a.ncols())
}

fn check_matrix(name: &str, a: &Array2<f32>, (rows, cols): (usize, usize)) -> Result<()> {
    if a.dim() != (rows, cols) {
        return Err(OptimaError::shape(name, format!("[{rows}, {cols}]"), shape_of(a.view())));
    }
    Ok(())
}

fn check_finite(name: &str, a: ArrayView2<'_, f32>) -> Result<()> {
    for (row, values) in a.outer_iter().enumerate() {
        if let Some((col, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(OptimaError::NonFinite { what: name.to_string(), row, col, value: f64::from(value) });
        }
    }
    Ok(())
}

fn random_matrix((rows, cols): (usize, usize), seed: u64) -> Array2<f32> {
    let std = 1.0 / (cols.max(1) as f32).sqrt();
    let mut a = Array2::<f32>::zeros((rows, cols));
    a.axis_iter_mut(Axis(0)).into_par_iter().enumerate().for_each(|(i, mut row)| {
        let mut rng = StdRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x94d0_49bb_1331_11eb));
        row.iter_mut().for_each(|w| *w = std * rng.sample::<f32, _>(StandardNormal));
    });
    a
}

fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// `eˣ` in f32 to about 2 ulp, clamped to `[e^−87.3, e^88]` (NaN stays NaN).
///
/// Written out rather than calling libm's `expf`: after faer's AVX-512 GEMM kernels have run on
/// a thread, glibc's VEX-encoded `expf` runs about 30× slower there (measured: 6 ns → 200 ns per
/// call), which made the softmax and SwiGLU dominate the whole forward pass.
#[inline]
fn exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2²³: adding and subtracting it rounds to an integer
    let x = x.clamp(-87.3, 88.0);
    let k = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    // r = x − k·ln 2 in two parts (Cody–Waite), |r| ≤ ln 2 / 2.
    let r = x - k * 0.693_145_75 - k * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r / 5040.0))))));
    p * f32::from_bits(((k as i32 + 127) as u32) << 23)
}

/// `x / sqrt(mean(x²) + ε) · gain`, row by row.
fn rms_norm(x: ArrayView2<'_, f32>, gain: &[f32], eps: f32) -> Array2<f32> {
    let mut out = x.to_owned();
    let n = x.ncols().max(1) as f64;
    out.axis_iter_mut(Axis(0)).into_par_iter().for_each(|mut row| {
        let mean_sq = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / n;
        let scale = (1.0 / (mean_sq + f64::from(eps)).sqrt()) as f32;
        row.iter_mut().zip(gain).for_each(|(v, &g)| *v = *v * scale * g);
    });
    out
}

/// `x Wᵀ` for `x` `[T, in]` and `w` `[out, in]`.
fn linear(x: ArrayView2<'_, f32>, w: ArrayView2<'_, f32>, par: Par) -> Array2<f32> {
    let mut out = Array2::<f32>::zeros((x.nrows(), w.nrows()));
    faer::linalg::matmul::matmul(
        out.view_mut().into_faer(),
        Accum::Replace,
        x.into_faer(),
        w.into_faer().transpose(),
        1.0,
        par,
    );
    out
}

/// `dst += x Wᵀ` (a residual connection).
fn linear_add(dst: ArrayViewMut2<'_, f32>, x: ArrayView2<'_, f32>, w: ArrayView2<'_, f32>, par: Par) {
    faer::linalg::matmul::matmul(dst.into_faer(), Accum::Add, x.into_faer(), w.into_faer().transpose(), 1.0, par);
}

/// cos/sin of `pos · θ^(−2i/d)` for positions `0..T` and pairs `0..d/2`.
struct RopeTable {
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
}

impl RopeTable {
    #[allow(clippy::indexing_slicing)] // pos < t and i < half: the tables are t × half.
    fn new(t: usize, head_dim: usize, theta: f32) -> Self {
        let half = head_dim / 2;
        // One rotation step per pair, then positions by angle addition in f64 (error ~ T·1e-16),
        // which keeps libm's sin/cos (slow after GEMM, see `exp`) out of an O(T·d) loop.
        let steps: Vec<(f64, f64)> =
            (0..half).map(|i| (f64::from(theta).powf(-2.0 * i as f64 / head_dim as f64)).sin_cos()).collect();
        let mut cos = vec![0.0f32; t * half];
        let mut sin = vec![0.0f32; t * half];
        let mut current: Vec<(f64, f64)> = vec![(0.0, 1.0); half];
        for pos in 0..t {
            for (i, (state, &(s1, c1))) in current.iter_mut().zip(&steps).enumerate() {
                cos[pos * half + i] = state.1 as f32;
                sin[pos * half + i] = state.0 as f32;
                let (s, c) = *state;
                *state = (s * c1 + c * s1, c * c1 - s * s1);
            }
        }
        Self { cos, sin, half }
    }

    /// Rotates adjacent pairs `(2i, 2i+1)` of every head of `x` `[T, heads · head_dim]`, row t at
    /// position t.
    #[allow(clippy::indexing_slicing)] // The table is built for x's T rows, so (pos + 1) · half fits.
    fn apply(&self, mut x: ArrayViewMut2<'_, f32>, head_dim: usize) {
        let half = self.half;
        x.axis_iter_mut(Axis(0)).into_par_iter().enumerate().for_each(|(pos, mut row)| {
            let cos = &self.cos[pos * half..(pos + 1) * half];
            let sin = &self.sin[pos * half..(pos + 1) * half];
            match row.as_slice_mut() {
                Some(values) => rotate_pairs(values, cos, sin, head_dim),
                None => {
                    let mut values = row.to_vec();
                    rotate_pairs(&mut values, cos, sin, head_dim);
                    row.assign(&ndarray::aview1(&values));
                }
            }
        });
    }
}

/// Rotates pair i of every `head_dim`-wide head in `row` by the angle with `cos[i]`, `sin[i]`.
fn rotate_pairs(row: &mut [f32], cos: &[f32], sin: &[f32], head_dim: usize) {
    for head in row.chunks_exact_mut(head_dim) {
        for ((pair, &c), &s) in head.chunks_exact_mut(2).zip(cos).zip(sin) {
            if let [x0, x1] = pair {
                (*x0, *x1) = (*x0 * c - *x1 * s, *x0 * s + *x1 * c);
            }
        }
    }
}

/// Causal grouped-query attention: query head h reads key/value head `h / (heads / kv_heads)`.
/// Returns `[T, heads · head_dim]`.
fn attention(
    config: &LlamaConfig,
    q: ArrayView2<'_, f32>,
    k: ArrayView2<'_, f32>,
    v: ArrayView2<'_, f32>,
) -> Array2<f32> {
    let t = q.nrows();
    let d = config.head_dim;
    let group = config.heads / config.kv_heads;
    let scale = 1.0 / (d as f32).sqrt();
    let row_blocks = t.div_ceil(ATTENTION_ROW_BLOCK);
    let pieces: Vec<(usize, usize, Array2<f32>)> = (0..config.heads * row_blocks)
        .into_par_iter()
        .map(|task| {
            let (h, rb) = (task / row_blocks, task % row_blocks);
            let g = h / group;
            let r0 = rb * ATTENTION_ROW_BLOCK;
            let r1 = (r0 + ATTENTION_ROW_BLOCK).min(t);
            let qh = q.slice(s![r0..r1, h * d..(h + 1) * d]);
            let kh = k.slice(s![..r1, g * d..(g + 1) * d]);
            let vh = v.slice(s![..r1, g * d..(g + 1) * d]);
            let rows = r1 - r0;
            let mut scores = vec![0.0f32; rows * r1];
            faer::linalg::matmul::matmul(
                faer::MatMut::from_row_major_slice_mut(&mut scores, rows, r1),
                Accum::Replace,
                qh.into_faer(),
                kh.into_faer().transpose(),
                scale,
                Par::Seq,
            );
            for (i, row) in scores.chunks_exact_mut(r1).enumerate() {
                // Row i is position r0 + i: it sees keys 0..=r0 + i.
                let (visible, future) = row.split_at_mut(r0 + i + 1);
                let max = visible.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                let mut sum = 0.0f32;
                for v in visible.iter_mut() {
                    *v = exp(*v - max);
                    sum += *v;
                }
                let inv = 1.0 / sum;
                visible.iter_mut().for_each(|v| *v *= inv);
                future.fill(0.0);
            }
            let mut out = Array2::<f32>::zeros((r1 - r0, d));
            faer::linalg::matmul::matmul(
                out.view_mut().into_faer(),
                Accum::Replace,
                faer::MatRef::from_row_major_slice(&scores, rows, r1),
                vh.into_faer(),
                1.0,
                Par::Seq,
            );
            (h, r0, out)
        })
        .collect();
    let mut attn = Array2::<f32>::zeros((t, config.heads * d));
    for (h, r0, piece) in pieces {
        attn.slice_mut(s![r0..r0 + piece.nrows(), h * d..(h + 1) * d]).assign(&piece);
    }
    attn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_over_the_f32_range() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * f64::from(i) / 200_000.0;
            let got = f64::from(exp(x as f32));
            let want = f64::from(x as f32).exp();
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(f32::NEG_INFINITY) < 1e-37);
        assert!(exp(f32::INFINITY).is_finite());
        assert!(silu(-1e4).abs() < 1e-30 && silu(1e4) == 1e4);
    }

    #[test]
    fn rope_table_matches_direct_angles() {
        let table = RopeTable::new(3000, 64, 1e5);
        for pos in [0usize, 1, 17, 511, 2999] {
            for i in [0usize, 1, 13, 31] {
                let angle = pos as f64 * 1e5f64.powf(-2.0 * i as f64 / 64.0);
                assert!((f64::from(table.cos[pos * 32 + i]) - angle.cos()).abs() < 1e-6);
                assert!((f64::from(table.sin[pos * 32 + i]) - angle.sin()).abs() < 1e-6);
            }
        }
    }
}
