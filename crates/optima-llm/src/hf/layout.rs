//! Hugging Face tensor names and the q/k row order, mapped onto optima's GGUF-named layout.
//!
//! `transformers` applies RoPE with `rotate_half`: within a head of width `d`, row `i` pairs with
//! row `i + d/2` (frequency `θ^(−2i/d)`). optima's forward pass, like llama.cpp, rotates adjacent
//! rows `(2i, 2i+1)` with the same frequency. llama.cpp's converter therefore permutes the rows of
//! `q_proj` and `k_proj` (and of their biases) head by head — `reshape(heads, 2, d/2, …)
//! .swapaxes(1, 2)` — so that GGUF row `h·d + 2i + j` is Hugging Face row `h·d + j·d/2 + i`
//! (`j ∈ {0, 1}`). Attention scores only see q·k within a head, so the same permutation on q and k
//! leaves the model's function unchanged; v and o are not permuted.

use ndarray::Array2;

use crate::llama::LinearKind;
use optima::error::{OptimaError, Result};

/// The Hugging Face row of GGUF row `row` of a q/k projection with heads of width `head_dim`.
pub fn hf_row_of_gguf_row(row: usize, head_dim: usize) -> usize {
    let half = head_dim / 2;
    if half == 0 {
        return row;
    }
    let (head, within) = (row / head_dim, row % head_dim);
    head * head_dim + (within % 2) * half + within / 2
}

/// Reorders the rows of a Hugging Face q/k weight `[heads · head_dim, in]` into the GGUF order.
pub fn gguf_rows_from_hf(name: &str, hf: &Array2<f32>, head_dim: usize) -> Result<Array2<f32>> {
    check_heads(name, hf.nrows(), head_dim)?;
    let mut out = Array2::<f32>::zeros(hf.dim());
    for (row, mut dst) in out.outer_iter_mut().enumerate() {
        let src = hf.row(hf_row_of_gguf_row(row, head_dim));
        dst.assign(&src);
    }
    Ok(out)
}

/// Reorders a Hugging Face q/k bias `[heads · head_dim]` into the GGUF order.
pub fn gguf_vector_from_hf(name: &str, hf: &[f32], head_dim: usize) -> Result<Vec<f32>> {
    check_heads(name, hf.len(), head_dim)?;
    (0..hf.len())
        .map(|row| hf.get(hf_row_of_gguf_row(row, head_dim)).copied())
        .collect::<Option<Vec<f32>>>()
        .ok_or_else(|| OptimaError::Internal(format!("{name}: row permutation out of range")))
}

/// For each Hugging Face row of a q/k projection with `rows` rows, the GGUF row it comes from:
/// the inverse of [`hf_row_of_gguf_row`], used to write the Hugging Face order back.
pub fn gguf_row_of_each_hf_row(name: &str, rows: usize, head_dim: usize) -> Result<Vec<usize>> {
    check_heads(name, rows, head_dim)?;
    let mut order = vec![0; rows];
    for row in 0..rows {
        let slot = order
            .get_mut(hf_row_of_gguf_row(row, head_dim))
            .ok_or_else(|| OptimaError::Internal(format!("{name}: row permutation out of range")))?;
        *slot = row;
    }
    Ok(order)
}

/// Reorders the rows of a q/k weight in the GGUF order back into the Hugging Face order (the
/// inverse of [`gguf_rows_from_hf`]).
pub fn hf_rows_from_gguf(name: &str, gguf: &Array2<f32>, head_dim: usize) -> Result<Array2<f32>> {
    let order = gguf_row_of_each_hf_row(name, gguf.nrows(), head_dim)?;
    let mut out = Array2::<f32>::zeros(gguf.dim());
    for (mut dst, &from) in out.outer_iter_mut().zip(&order) {
        dst.assign(&gguf.row(from));
    }
    Ok(out)
}

fn check_heads(name: &str, rows: usize, head_dim: usize) -> Result<()> {
    if head_dim == 0 || head_dim % 2 != 0 || rows % head_dim != 0 {
        return Err(OptimaError::shape(
            name,
            format!("rows a multiple of the even head width {head_dim}"),
            rows.to_string(),
        ));
    }
    Ok(())
}

/// The Hugging Face module of a linear layer in block `block`, e.g.
/// `model.layers.3.self_attn.q_proj` (append `.weight` or `.bias`).
pub fn hf_linear_module(kind: LinearKind, block: usize) -> String {
    let module = match kind {
        LinearKind::Q => "self_attn.q_proj",
        LinearKind::K => "self_attn.k_proj",
        LinearKind::V => "self_attn.v_proj",
        LinearKind::O => "self_attn.o_proj",
        LinearKind::Gate => "mlp.gate_proj",
        LinearKind::Up => "mlp.up_proj",
        LinearKind::Down => "mlp.down_proj",
    };
    format!("model.layers.{block}.{module}")
}

/// The Hugging Face name of a tensor optima names as in GGUF (`blk.3.attn_q.weight` →
/// `model.layers.3.self_attn.q_proj.weight`); `None` for a name outside the Llama layout.
pub fn hf_name(gguf: &str) -> Option<String> {
    match gguf {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let (block, tail) = gguf.strip_prefix("blk.")?.split_once('.')?;
    let b: usize = block.parse().ok()?;
    match tail {
        "attn_norm.weight" => Some(format!("model.layers.{b}.input_layernorm.weight")),
        "ffn_norm.weight" => Some(format!("model.layers.{b}.post_attention_layernorm.weight")),
        _ => {
            let (short, suffix) = tail.split_once('.')?;
            let kind = LinearKind::ALL.into_iter().find(|k| k.short_name() == short)?;
            matches!(suffix, "weight" | "bias").then(|| format!("{}.{suffix}", hf_linear_module(kind, b)))
        }
    }
}

/// Whether the GGUF-named tensor is a q or k projection (weight or bias), whose rows differ in
/// order between the layouts.
pub fn is_rotary(gguf: &str) -> bool {
    gguf.strip_prefix("blk.")
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(_, tail)| tail.starts_with("attn_q.") || tail.starts_with("attn_k."))
}
