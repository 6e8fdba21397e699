//! One transformer block's weights, their checks, and its forward pass.

use faer::Par;
use ndarray::{Array2, ArrayView2, Axis};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;
use rayon::prelude::*;

use optima::error::{OptimaError, Result};

use super::*;

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
    /// Biases of the q/k/v projections (Qwen2); `None` for Llama, which has none.
    pub qkv_bias: Option<QkvBias>,
}

/// The biases added to the query, key and value projections' outputs (Qwen2). The q/k biases
/// are permuted like their weights' rows.
#[derive(Clone, Debug, PartialEq)]
pub struct QkvBias {
    /// `[hidden]`, added to `q`.
    pub q: Vec<f32>,
    /// `[kv_dim]`, added to `k`.
    pub k: Vec<f32>,
    /// `[kv_dim]`, added to `v`.
    pub v: Vec<f32>,
}

impl QkvBias {
    /// The bias of `kind` (q, k or v), if it has one.
    pub fn of(&self, kind: LinearKind) -> Option<&[f32]> {
        match kind {
            LinearKind::Q => Some(&self.q),
            LinearKind::K => Some(&self.k),
            LinearKind::V => Some(&self.v),
            _ => None,
        }
    }
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
            if let Some(bias) = self.qkv_bias.as_ref().and_then(|b| b.of(kind)) {
                let rows = kind.shape(config).0;
                if bias.len() != rows {
                    return Err(OptimaError::shape(
                        format!("{prefix}.{}.bias", kind.short_name()),
                        format!("[{rows}]"),
                        format!("[{}]", bias.len()),
                    ));
                }
            }
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
        let mut report = |input: LinearInput, a: ArrayView2<'_, f32>| {
            if let Some(f) = capture.as_mut() {
                f(input, a);
            }
        };
        let xn = self.attn_input(config, x)?;
        report(LinearInput::Attn, xn.view());
        let attn = self.attention_mix(config, xn.view())?;
        drop(xn);
        report(LinearInput::AttnOut, attn.view());
        let h = self.after_attention(config, x, attn.view())?;
        drop(attn);
        let hn = self.mlp_input(config, h.view())?;
        report(LinearInput::Mlp, hn.view());
        let act = self.mlp_hidden(config, hn.view())?;
        drop(hn);
        report(LinearInput::MlpHidden, act.view());
        self.after_mlp(config, h, act.view())
    }

    /// Stage 1 of [`Self::forward`]: the attention's input `RMSNorm(x)` (q/k/v read it).
    pub fn attn_input(&self, config: &LlamaConfig, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        self.check_stage(config, x, config.hidden, "block input")?;
        Ok(rms_norm(x, &self.attn_norm, config.rms_eps))
    }

    /// Stage 2: q/k/v of `xn`, rotary positions, causal attention: o_proj's input `[T, hidden]`.
    pub fn attention_mix(&self, config: &LlamaConfig, xn: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        self.check_stage(config, xn, config.hidden, "attention input")?;
        let par = Par::rayon(0);
        let mut q = linear(xn, self.q.view(), par);
        let mut k = linear(xn, self.k.view(), par);
        let mut v = linear(xn, self.v.view(), par);
        if let Some(bias) = &self.qkv_bias {
            // Shapes checked by `check_stage`: each bias is as long as its output's rows.
            for (out, b) in [(&mut q, &bias.q), (&mut k, &bias.k), (&mut v, &bias.v)] {
                out.axis_iter_mut(Axis(0)).for_each(|mut row| row.iter_mut().zip(b).for_each(|(y, &c)| *y += c));
            }
        }
        let rope = RopeTable::new(xn.nrows(), config.head_dim, config.rope_theta);
        rope.apply(q.view_mut(), config.head_dim);
        rope.apply(k.view_mut(), config.head_dim);
        Ok(attention(config, q.view(), k.view(), v.view()))
    }

    /// Stage 3: the residual stream after attention, `h = x + o(attn)`.
    pub fn after_attention(
        &self,
        config: &LlamaConfig,
        x: ArrayView2<'_, f32>,
        attn: ArrayView2<'_, f32>,
    ) -> Result<Array2<f32>> {
        self.check_stage(config, x, config.hidden, "block input")?;
        self.check_stage(config, attn, config.hidden, "attention output")?;
        same_tokens(x, attn)?;
        let mut h = x.to_owned();
        linear_add(h.view_mut(), attn, self.o.view(), Par::rayon(0));
        Ok(h)
    }

    /// Stage 4: the MLP's input `RMSNorm(h)` (gate/up read it).
    pub fn mlp_input(&self, config: &LlamaConfig, h: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        self.check_stage(config, h, config.hidden, "residual stream")?;
        Ok(rms_norm(h, &self.ffn_norm, config.rms_eps))
    }

    /// Stage 5: down_proj's input `silu(gate(hn)) · up(hn)` `[T, intermediate]`.
    pub fn mlp_hidden(&self, config: &LlamaConfig, hn: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        self.check_stage(config, hn, config.hidden, "MLP input")?;
        let par = Par::rayon(0);
        let mut gate = linear(hn, self.gate.view(), par);
        let up = linear(hn, self.up.view(), par);
        swiglu(gate.view_mut(), up.view());
        Ok(gate)
    }

    /// Stage 6: the block's output `h + down(act)`.
    pub fn after_mlp(&self, config: &LlamaConfig, h: Array2<f32>, act: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        self.check_stage(config, h.view(), config.hidden, "residual stream")?;
        self.check_stage(config, act, config.intermediate, "MLP hidden state")?;
        same_tokens(h.view(), act)?;
        let mut h = h;
        linear_add(h.view_mut(), act, self.down.view(), Par::rayon(0));
        Ok(h)
    }

    /// What every stage checks: the config, the weights' shapes, the input's width and length.
    fn check_stage(&self, config: &LlamaConfig, a: ArrayView2<'_, f32>, width: usize, what: &str) -> Result<()> {
        config.validate()?;
        self.check_named(config, "block")?;
        if a.ncols() != width {
            return Err(OptimaError::shape(what, format!("[T, {width}]"), shape_of(a)));
        }
        if a.nrows() > config.context {
            return Err(OptimaError::InvalidSetting(format!(
                "a sequence of {} tokens exceeds the model's context of {}",
                a.nrows(),
                config.context
            )));
        }
        Ok(())
    }
}

fn same_tokens(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>) -> Result<()> {
    if a.nrows() != b.nrows() {
        return Err(OptimaError::shape(
            "stage inputs",
            format!("{} tokens", a.nrows()),
            format!("{} tokens", b.nrows()),
        ));
    }
    Ok(())
}

pub(super) fn shape_of(a: ArrayView2<'_, f32>) -> String {
    format!("[{}, {}]", a.nrows(), a.ncols())
}

pub(super) fn check_matrix(name: &str, a: &Array2<f32>, (rows, cols): (usize, usize)) -> Result<()> {
    if a.dim() != (rows, cols) {
        return Err(OptimaError::shape(name, format!("[{rows}, {cols}]"), shape_of(a.view())));
    }
    Ok(())
}

pub(super) fn check_finite(name: &str, a: ArrayView2<'_, f32>) -> Result<()> {
    for (row, values) in a.outer_iter().enumerate() {
        if let Some((col, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(OptimaError::NonFinite { what: name.to_string(), row, col, value: f64::from(value) });
        }
    }
    Ok(())
}

pub(super) fn random_matrix((rows, cols): (usize, usize), seed: u64) -> Array2<f32> {
    let std = 1.0 / (cols.max(1) as f32).sqrt();
    let mut a = Array2::<f32>::zeros((rows, cols));
    a.axis_iter_mut(Axis(0)).into_par_iter().enumerate().for_each(|(i, mut row)| {
        let mut rng = StdRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x94d0_49bb_1331_11eb));
        row.iter_mut().for_each(|w| *w = std * rng.sample::<f32, _>(StandardNormal));
    });
    a
}
