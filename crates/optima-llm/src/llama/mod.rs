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
//! use optima_llm::llama::{LlamaConfig, LlamaModel};
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

mod config;
mod kernels;
mod weights;

pub use config::{LinearInput, LinearKind, LlamaConfig};
pub use weights::{Capture, LlamaBlock, QkvBias};

use faer::Par;
use ndarray::{Array2, ArrayView2, Axis, s};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;
use rayon::prelude::*;

use kernels::*;
use optima::error::{OptimaError, Result};
use weights::{check_finite, check_matrix, random_matrix, shape_of};

/// Query rows per attention task: each (head, row block) pair is one rayon task, and a block only
/// multiplies against the keys at or before its last row, which halves the causal work.
pub(super) const ATTENTION_ROW_BLOCK: usize = 64;
/// Positions per chunk when turning hidden states into log-probabilities, so the `[T, vocab]`
/// logits never exist all at once.
pub(super) const LOGIT_ROW_CHUNK: usize = 128;

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
                qkv_bias: None,
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
                qkv_bias: None,
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
                let biases = b.qkv_bias.as_ref().map_or(0, |c| c.q.len() + c.k.len() + c.v.len());
                LinearKind::ALL.iter().map(|&k| b.weight(k).len()).sum::<usize>()
                    + b.attn_norm.len()
                    + b.ffn_norm.len()
                    + biases
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
