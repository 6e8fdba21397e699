//! The tiny model written as a Hugging Face folder (config.json, safetensors in the Hugging Face
//! names and q/k row order, optionally sharded with an index, tokenizer.json), and an independent
//! reference forward pass in the `transformers` convention (rotate_half RoPE) to check against.

use std::collections::BTreeMap;
use std::path::Path;

use half::{bf16, f16};
use optima_llm::llama::{LinearKind, LlamaModel};
use optima_llm::tokenizer::bytes_to_unicode;
use safetensors::Dtype;
use safetensors::tensor::TensorView;

/// How to write the folder.
pub struct HfWrite {
    /// F32, F16 or BF16 (anything else is written as given, for error tests: I32 bytes of F32).
    pub dtype: Dtype,
    /// 1: `model.safetensors`; more: that many shards and `model.safetensors.index.json`.
    pub shards: usize,
    /// `llama`, `mistral`, `qwen2`, …
    pub model_type: &'static str,
}

impl Default for HfWrite {
    fn default() -> Self {
        Self { dtype: Dtype::F32, shards: 1, model_type: "llama" }
    }
}

/// `model` with every weight rounded through `dtype` (exact for F32).
pub fn rounded(model: &LlamaModel, dtype: Dtype) -> LlamaModel {
    let r = |v: f32| match dtype {
        Dtype::F16 => half::f16::from_f32(v).to_f32(),
        Dtype::BF16 => half::bf16::from_f32(v).to_f32(),
        _ => v,
    };
    let mut m = model.clone();
    m.token_embd.mapv_inplace(r);
    m.output_norm.iter_mut().for_each(|v| *v = r(*v));
    if let Some(o) = m.output.as_mut() {
        o.mapv_inplace(r);
    }
    for block in &mut m.blocks {
        for a in
            [&mut block.q, &mut block.k, &mut block.v, &mut block.o, &mut block.gate, &mut block.up, &mut block.down]
        {
            a.mapv_inplace(r);
        }
        block.attn_norm.iter_mut().chain(block.ffn_norm.iter_mut()).for_each(|v| *v = r(*v));
        if let Some(b) = block.qkv_bias.as_mut() {
            b.q.iter_mut().chain(b.k.iter_mut()).chain(b.v.iter_mut()).for_each(|v| *v = r(*v));
        }
    }
    m
}

/// Hugging Face row of GGUF row `r` (llama.cpp's converter: reshape(heads, 2, d/2).swapaxes(1, 2)).
fn hf_row(r: usize, head_dim: usize) -> usize {
    let (h, w) = (r / head_dim, r % head_dim);
    h * head_dim + (w % 2) * (head_dim / 2) + w / 2
}

fn unpermute_rows(a: &ndarray::Array2<f32>, head_dim: usize) -> Vec<f32> {
    let mut out = vec![0.0; a.len()];
    for (r, row) in a.outer_iter().enumerate() {
        let to = hf_row(r, head_dim) * a.ncols();
        out[to..to + a.ncols()].copy_from_slice(row.as_slice().unwrap());
    }
    out
}

fn unpermute_vec(v: &[f32], head_dim: usize) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for (r, &x) in v.iter().enumerate() {
        out[hf_row(r, head_dim)] = x;
    }
    out
}

/// Every tensor of `model` under its Hugging Face name, in the Hugging Face layout: (shape, values).
pub fn hf_tensors(model: &LlamaModel) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let c = model.config;
    let mut t = BTreeMap::new();
    let flat = |a: &ndarray::Array2<f32>| (vec![a.nrows(), a.ncols()], a.iter().copied().collect::<Vec<f32>>());
    t.insert("model.embed_tokens.weight".to_string(), flat(&model.token_embd));
    t.insert("model.norm.weight".to_string(), (vec![c.hidden], model.output_norm.clone()));
    if let Some(out) = &model.output {
        t.insert("lm_head.weight".to_string(), flat(out));
    }
    for (b, block) in model.blocks.iter().enumerate() {
        let p = format!("model.layers.{b}");
        t.insert(format!("{p}.input_layernorm.weight"), (vec![c.hidden], block.attn_norm.clone()));
        t.insert(format!("{p}.post_attention_layernorm.weight"), (vec![c.hidden], block.ffn_norm.clone()));
        for (kind, name) in [
            (LinearKind::Q, "self_attn.q_proj"),
            (LinearKind::K, "self_attn.k_proj"),
            (LinearKind::V, "self_attn.v_proj"),
            (LinearKind::O, "self_attn.o_proj"),
            (LinearKind::Gate, "mlp.gate_proj"),
            (LinearKind::Up, "mlp.up_proj"),
            (LinearKind::Down, "mlp.down_proj"),
        ] {
            let w = block.weight(kind);
            let rotary = matches!(kind, LinearKind::Q | LinearKind::K);
            let values = if rotary { unpermute_rows(w, c.head_dim) } else { w.iter().copied().collect() };
            t.insert(format!("{p}.{name}.weight"), (vec![w.nrows(), w.ncols()], values));
            if let Some(bias) = block.qkv_bias.as_ref().and_then(|q| q.of(kind)) {
                let values = if rotary { unpermute_vec(bias, c.head_dim) } else { bias.to_vec() };
                t.insert(format!("{p}.{name}.bias"), (vec![bias.len()], values));
            }
        }
    }
    t
}

/// The config.json of `model` (tied when `model.output` is `None`).
pub fn hf_config(model: &LlamaModel, model_type: &str) -> serde_json::Value {
    let c = model.config;
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": model_type,
        "hidden_size": c.hidden,
        "intermediate_size": c.intermediate,
        "num_hidden_layers": c.blocks,
        "num_attention_heads": c.heads,
        "num_key_value_heads": c.kv_heads,
        "rms_norm_eps": c.rms_eps,
        "rope_theta": c.rope_theta,
        "vocab_size": c.vocab,
        "max_position_embeddings": c.context,
        "tie_word_embeddings": model.output.is_none(),
        "hidden_act": "silu",
        "rope_scaling": null,
        "torch_dtype": "float32",
    })
}

/// The bytes of `values` in `dtype`.
pub fn encode(values: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F16 => values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
        Dtype::BF16 => values.iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect(),
        _ => values.iter().flat_map(|&v| v.to_le_bytes()).collect(),
    }
}

/// Writes `tensors` to one safetensors file in `dtype`.
pub fn write_safetensors(path: &Path, tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>, dtype: Dtype) {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> =
        tensors.iter().map(|(n, (s, v))| (n.clone(), s.clone(), encode(v, dtype))).collect();
    let views: Vec<(String, TensorView<'_>)> =
        bytes.iter().map(|(n, s, b)| (n.clone(), TensorView::new(dtype, s.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Writes `model` as a Hugging Face folder in `dir`.
pub fn write_hf(dir: &Path, model: &LlamaModel, how: &HfWrite) {
    std::fs::create_dir_all(dir).unwrap();
    let config = hf_config(model, how.model_type);
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json().to_string()).unwrap();
    let tensors = hf_tensors(model);
    if how.shards <= 1 {
        write_safetensors(&dir.join("model.safetensors"), &tensors, how.dtype);
        return;
    }
    let names: Vec<&String> = tensors.keys().collect();
    let per = names.len().div_ceil(how.shards);
    let mut weight_map = serde_json::Map::new();
    for (i, chunk) in names.chunks(per).enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", i + 1, how.shards);
        let part: BTreeMap<String, (Vec<usize>, Vec<f32>)> =
            chunk.iter().map(|&n| (n.clone(), tensors[n].clone())).collect();
        write_safetensors(&dir.join(&file), &part, how.dtype);
        for n in chunk {
            weight_map.insert((*n).clone(), serde_json::Value::String(file.clone()));
        }
    }
    let index = serde_json::json!({ "metadata": { "total_size": 0 }, "weight_map": weight_map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

/// The tiny GGUF tokenizer (256 byte symbols + 4 merges, SmolLM's digit splitting) as a
/// `tokenizer.json`, written from its definition rather than from optima's reader.
pub fn tokenizer_json() -> serde_json::Value {
    let mut vocab = serde_json::Map::new();
    for (i, ch) in bytes_to_unicode().iter().enumerate() {
        vocab.insert(ch.to_string(), i.into());
    }
    for (i, t) in ["th", "he", "Ġt", "in"].iter().enumerate() {
        vocab.insert(t.to_string(), (256 + i).into());
    }
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": { "type": "Sequence", "pretokenizers": [
            { "type": "Digits", "individual_digits": true },
            { "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true }
        ]},
        "post_processor": null,
        "decoder": { "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true },
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": ["t h", "h e", "Ġ t", "i n"]
        }
    })
}

/// Logits `[T][vocab]` of `tokens` computed in f64 straight from Hugging Face tensors, the way
/// `transformers`' LlamaForCausalLM does (rotate_half RoPE, optional q/k/v biases).
pub fn reference_logits(
    t: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    model: &LlamaModel,
    tokens: &[u32],
) -> Vec<Vec<f64>> {
    let c = model.config;
    let get = |n: &str| -> &[f32] { &t[n].1 };
    let matvec = |w: &[f32], x: &[f64], rows: usize| -> Vec<f64> {
        let cols = x.len();
        (0..rows).map(|r| (0..cols).map(|j| f64::from(w[r * cols + j]) * x[j]).sum()).collect()
    };
    let norm = |x: &[f64], g: &[f32]| -> Vec<f64> {
        let s = (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64 + f64::from(c.rms_eps)).sqrt();
        x.iter().zip(g).map(|(v, &g)| v / s * f64::from(g)).collect()
    };
    let (hd, half) = (c.head_dim, c.head_dim / 2);
    let rope = |v: &mut [f64], pos: usize| {
        for head in v.chunks_mut(hd) {
            for i in 0..half {
                let angle = pos as f64 * f64::from(c.rope_theta).powf(-2.0 * i as f64 / hd as f64);
                let (a, b) = (head[i], head[i + half]);
                head[i] = a * angle.cos() - b * angle.sin();
                head[i + half] = b * angle.cos() + a * angle.sin();
            }
        }
    };
    let embed = get("model.embed_tokens.weight");
    let mut x: Vec<Vec<f64>> = tokens
        .iter()
        .map(|&id| (0..c.hidden).map(|j| f64::from(embed[id as usize * c.hidden + j])).collect())
        .collect();
    for b in 0..c.blocks {
        let p = format!("model.layers.{b}");
        let proj = |name: &str, x: &[f64], rows: usize| {
            let mut y = matvec(get(&format!("{p}.{name}.weight")), x, rows);
            if let Some((_, bias)) = t.get(&format!("{p}.{name}.bias")) {
                y.iter_mut().zip(bias).for_each(|(y, &b)| *y += f64::from(b));
            }
            y
        };
        let xn: Vec<Vec<f64>> = x.iter().map(|r| norm(r, get(&format!("{p}.input_layernorm.weight")))).collect();
        let mut q: Vec<Vec<f64>> = xn.iter().map(|r| proj("self_attn.q_proj", r, c.hidden)).collect();
        let mut k: Vec<Vec<f64>> = xn.iter().map(|r| proj("self_attn.k_proj", r, c.kv_dim())).collect();
        let v: Vec<Vec<f64>> = xn.iter().map(|r| proj("self_attn.v_proj", r, c.kv_dim())).collect();
        for (pos, (q, k)) in q.iter_mut().zip(k.iter_mut()).enumerate() {
            rope(q, pos);
            rope(k, pos);
        }
        for tq in 0..tokens.len() {
            let mut attn = vec![0.0; c.hidden];
            for h in 0..c.heads {
                let kv = h / (c.heads / c.kv_heads);
                let qh = &q[tq][h * hd..(h + 1) * hd];
                let scores: Vec<f64> = (0..=tq)
                    .map(|tk| {
                        qh.iter().zip(&k[tk][kv * hd..(kv + 1) * hd]).map(|(a, b)| a * b).sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                for (tk, s) in scores.iter().enumerate() {
                    let w = (s - max).exp() / z;
                    for d in 0..hd {
                        attn[h * hd + d] += w * v[tk][kv * hd + d];
                    }
                }
            }
            let o = proj("self_attn.o_proj", &attn, c.hidden);
            x[tq].iter_mut().zip(o).for_each(|(x, o)| *x += o);
        }
        for row in x.iter_mut() {
            let hn = norm(row, get(&format!("{p}.post_attention_layernorm.weight")));
            let gate = proj("mlp.gate_proj", &hn, c.intermediate);
            let up = proj("mlp.up_proj", &hn, c.intermediate);
            let act: Vec<f64> = gate.iter().zip(&up).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
            let down = proj("mlp.down_proj", &act, c.hidden);
            row.iter_mut().zip(down).for_each(|(x, d)| *x += d);
        }
    }
    let head = t.get("lm_head.weight").map_or(embed, |(_, v)| v.as_slice());
    x.iter().map(|r| matvec(head, &norm(r, get("model.norm.weight")), c.vocab)).collect()
}
