//! Hostile Hugging Face folders: every truncation of a safetensors file, random byte mutations,
//! absurd config values and index entries are answered with typed errors, never panics.

mod tiny_model;

use std::path::Path;

use optima::OptimaError;
use optima_llm::hf::load_weights;
use optima_llm::llama::{LlamaConfig, LlamaModel};
use proptest::prelude::*;
use tiny_model::hf::{HfWrite, write_hf};

fn small() -> LlamaModel {
    let config = LlamaConfig {
        hidden: 16,
        intermediate: 24,
        blocks: 1,
        heads: 2,
        kv_heads: 1,
        head_dim: 8,
        rope_theta: 10_000.0,
        rms_eps: 1e-5,
        vocab: 260,
        context: 64,
    };
    LlamaModel::random(config, 1).unwrap()
}

/// A valid folder in a new temporary directory.
fn folder(how: &HfWrite) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_hf(dir.path(), &small(), how);
    dir
}

fn typed(dir: &Path) -> Option<OptimaError> {
    load_weights(dir).err()
}

#[test]
fn every_truncation_is_an_error() {
    let dir = folder(&HfWrite::default());
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let cuts: Vec<usize> = (0..bytes.len().min(600)).chain((600..bytes.len()).step_by(97)).collect();
    for cut in cuts {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        match typed(dir.path()) {
            Some(OptimaError::Format { .. }) => {}
            other => panic!("cut at {cut} of {}: {other:?}", bytes.len()),
        }
    }
}

#[test]
fn hostile_index_entries_are_errors() {
    for weight_map in [
        serde_json::json!({ "model.norm.weight": "/etc/passwd" }),
        serde_json::json!({ "model.norm.weight": ".." }),
        serde_json::json!({ "model.norm.weight": "" }),
        serde_json::json!({ "model.norm.weight": 3 }),
        serde_json::json!([]),
    ] {
        let dir = folder(&HfWrite { shards: 2, ..HfWrite::default() });
        let index = serde_json::json!({ "weight_map": weight_map });
        std::fs::write(dir.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
        assert!(typed(dir.path()).is_some(), "{weight_map}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn mutated_safetensors_give_models_or_typed_errors(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let dir = folder(&HfWrite::default());
        let path = dir.path().join("model.safetensors");
        let mut bytes = std::fs::read(&path).unwrap();
        // Mostly the header (its length and JSON), sometimes the data.
        let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        for (at, value) in edits {
            let n = if at % 4 == 0 { bytes.len() } else { header };
            let i = at % n;
            bytes[i] = value;
        }
        std::fs::write(&path, &bytes).unwrap();
        let _ = load_weights(dir.path());
    }

    #[test]
    fn absurd_config_values_give_typed_errors(
        field in prop::sample::select(vec![
            "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings", "rms_norm_eps",
            "rope_theta", "sliding_window",
        ]),
        value in prop_oneof![
            Just(serde_json::json!(0)), Just(serde_json::json!(-1)), Just(serde_json::json!(1u64 << 40)),
            Just(serde_json::json!(u64::MAX)), Just(serde_json::json!(1.5)), Just(serde_json::json!("8")),
            Just(serde_json::json!(null)), Just(serde_json::json!(1e300)), (1u64..100).prop_map(serde_json::Value::from),
        ],
    ) {
        let dir = folder(&HfWrite { model_type: "mistral", ..HfWrite::default() });
        let path = dir.path().join("config.json");
        let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        config[field] = value;
        std::fs::write(&path, config.to_string()).unwrap();
        let _ = load_weights(dir.path());
    }
}
