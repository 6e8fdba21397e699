//! One transformer block's weights, their checks, and its forward pass.

use faer::Par;
use ndarray::{Array2, ArrayView2, Axis, Zip};
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
