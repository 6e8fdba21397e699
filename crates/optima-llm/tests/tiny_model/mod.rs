//! A tiny random Llama written as GGUF (and as a Hugging Face folder, [`hf`]) with a byte-level
//! tokenizer, its pruning settings and calibration: the fixtures of the pipeline tests (here and
//! in the CLI crate's tests).
#![allow(dead_code)]

pub mod hf;

use std::path::Path;

use optima::solve::SolverSpec;
use optima::{Parallelism, SparsityPattern};
use optima_llm::calibration::calibration_sequences;
use optima_llm::gguf::{GgufTensorData, GgufValue, GgufValueType, write_gguf};
use optima_llm::llama::{LinearKind, LlamaConfig, LlamaModel};
use optima_llm::prune::{MaskerChoice, PruneSettings};
use optima_llm::tokenizer::bytes_to_unicode;

pub fn tiny_config() -> LlamaConfig {
    LlamaConfig {
        hidden: 64,
        intermediate: 128,
        blocks: 2,
        heads: 4,
        kv_heads: 2,
        head_dim: 16,
        rope_theta: 10000.0,
        rms_eps: 1e-5,
        vocab: 260,
        context: 512,
    }
}

/// Writes `model` as a llama GGUF with a byte-level tokenizer of 256 bytes + 4 merges.
pub fn write_tiny_gguf(path: &Path, model: &LlamaModel) {
    let c = model.config;
    let mut tokens: Vec<String> = bytes_to_unicode().iter().map(|ch| ch.to_string()).collect();
    tokens.extend(["th", "he", "Ġt", "in"].map(String::from));
    let types = vec![GgufValue::I32(1); tokens.len()];
    let u = |v: usize| GgufValue::U32(v as u32);
    let metadata = vec![
        ("general.architecture".to_string(), GgufValue::String("llama".into())),
        ("llama.embedding_length".to_string(), u(c.hidden)),
        ("llama.feed_forward_length".to_string(), u(c.intermediate)),
        ("llama.block_count".to_string(), u(c.blocks)),
        ("llama.attention.head_count".to_string(), u(c.heads)),
        ("llama.attention.head_count_kv".to_string(), u(c.kv_heads)),
        ("llama.rope.freq_base".to_string(), GgufValue::F32(c.rope_theta)),
        ("llama.attention.layer_norm_rms_epsilon".to_string(), GgufValue::F32(c.rms_eps)),
        ("llama.context_length".to_string(), u(c.context)),
        ("tokenizer.ggml.model".to_string(), GgufValue::String("gpt2".into())),
        ("tokenizer.ggml.pre".to_string(), GgufValue::String("smollm".into())),
        ("tokenizer.ggml.tokens".to_string(), GgufValue::string_array(tokens)),
        ("tokenizer.ggml.merges".to_string(), GgufValue::string_array(["t h", "h e", "Ġ t", "i n"])),
        ("tokenizer.ggml.token_type".to_string(), GgufValue::Array(GgufValueType::I32, types)),
    ];
    let matrix = |name: String, a: &ndarray::Array2<f32>| {
        (name, vec![a.ncols(), a.nrows()], GgufTensorData::F32(a.iter().copied().collect()))
    };
    let vector = |name: String, v: &[f32]| (name, vec![v.len()], GgufTensorData::F32(v.to_vec()));
    let mut tensors = vec![matrix("token_embd.weight".into(), &model.token_embd)];
    for (b, block) in model.blocks.iter().enumerate() {
        tensors.push(vector(format!("blk.{b}.attn_norm.weight"), &block.attn_norm));
        tensors.push(vector(format!("blk.{b}.ffn_norm.weight"), &block.ffn_norm));
        for kind in LinearKind::ALL {
            tensors.push(matrix(kind.gguf_name(b), block.weight(kind)));
        }
    }
    tensors.push(vector("output_norm.weight".into(), &model.output_norm));
    if let Some(output) = &model.output {
        tensors.push(matrix("output.weight".into(), output));
    }
    write_gguf(path, &metadata, &tensors).unwrap();
}

pub fn settings(pattern: &str, masker: MaskerChoice, update: &str) -> PruneSettings {
    PruneSettings {
        pattern: pattern.parse().unwrap(),
        masker,
        update: (update != "none").then(|| update.parse::<SolverSpec>().unwrap().parallelism(Parallelism::Threads(2))),
        percdamp: 0.01,
        held_out: None,
        keep_only_improving: false,
        refine: None,
        objective: optima_llm::settings::Objective::Layer,
        order: optima_llm::settings::InBlockOrder::Sequential,
        parallelism: Parallelism::Threads(2),
        device: optima::backend::Device::Cpu,
        max_blocks: None,
        memory_budget: None,
        save_problems: None,
        allocation: optima::allocation::AllocationSettings::default(),
        layer_error: false,
        hessian_precision: Default::default(),
    }
}

pub fn calibration(seed: u64) -> Vec<Vec<u32>> {
    let stream: Vec<u32> = (0..4000u32).map(|i| (i.wrapping_mul(2654435761) >> 7) % 260).collect();
    calibration_sequences(&stream, 6, 48, seed).unwrap()
}

pub fn check_pattern(model: &LlamaModel, pattern: &SparsityPattern) {
    for block in &model.blocks {
        for kind in LinearKind::ALL {
            let w = block.weight(kind);
            let mask = optima::Mask::from_fn(w.nrows(), w.ncols(), |i, j| w[[i, j]] == 0.0);
            mask.validate(pattern).unwrap_or_else(|e| panic!("{kind}: {e}"));
        }
    }
}
