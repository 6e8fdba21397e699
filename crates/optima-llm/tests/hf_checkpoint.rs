//! Hugging Face folders: a tiny random Llama written both as GGUF and as a Hugging Face folder
//! (single file, shards, F32/F16/BF16, Mistral, Qwen2 biases) loads to the same logits, which
//! match an independent `transformers`-style forward pass; broken folders give typed errors.

mod tiny_model;

use std::path::Path;

use ndarray::Array2;
use optima::OptimaError;
use optima_llm::hf::layout::hf_row_of_gguf_row;
use optima_llm::llama::{LlamaModel, QkvBias};
use optima_llm::model_file::{LoadedModel, ModelSource, load_model};
use optima_llm::perplexity::perplexity;
use safetensors::Dtype;
use tiny_model::hf::*;
use tiny_model::*;

const TOKENS: [u32; 12] = [5, 200, 17, 259, 3, 3, 111, 42, 256, 7, 99, 180];

fn logits(loaded: &LoadedModel) -> Array2<f32> {
    let model = &loaded.model;
    model.logits(model.hidden_states(&TOKENS).unwrap().view()).unwrap()
}

fn max_rel_diff(a: &Array2<f32>, reference: &[Vec<f64>]) -> f64 {
    let scale = reference.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
    let diff = a
        .outer_iter()
        .zip(reference)
        .flat_map(|(r, e)| r.iter().zip(e).map(|(&x, y)| (f64::from(x) - y).abs()).collect::<Vec<_>>());
    diff.fold(0.0, f64::max) / scale
}

fn untied(seed: u64) -> LlamaModel {
    let mut model = LlamaModel::random(tiny_config(), seed).unwrap();
    let other = LlamaModel::random(tiny_config(), seed + 1000).unwrap();
    model.output = Some(other.token_embd);
    model
}

/// Writes `model` as GGUF and as a Hugging Face folder, loads both, and checks the same logits,
/// bit for bit, and the reference forward pass within f32 rounding.
fn same_as_gguf(dir: &Path, model: &LlamaModel, how: &HfWrite) -> (LoadedModel, LoadedModel) {
    let model = rounded(model, how.dtype);
    let gguf_path = dir.join("tiny.gguf");
    write_tiny_gguf(&gguf_path, &model);
    let folder = dir.join("hf");
    write_hf(&folder, &model, how);
    let gguf = load_model(&gguf_path).unwrap();
    let hf = load_model(&folder).unwrap();
    assert!(matches!(hf.source, ModelSource::HuggingFace(_)));
    assert_eq!(hf.model.config, gguf.model.config);
    let (a, b) = (logits(&gguf), logits(&hf));
    assert_eq!(a, b, "{:?} {} shards: the Hugging Face folder's logits differ from the GGUF's", how.dtype, how.shards);
    let reference = reference_logits(&hf_tensors(&model), &model, &TOKENS);
    let rel = max_rel_diff(&b, &reference);
    assert!(rel < 1e-4, "relative difference {rel} from the transformers-style reference");
    (gguf, hf)
}

#[test]
fn a_hugging_face_folder_loads_to_the_gguf_model_and_the_transformers_forward_pass() {
    let dir = tempfile::tempdir().unwrap();
    let (gguf, hf) = same_as_gguf(dir.path(), &LlamaModel::random(tiny_config(), 3).unwrap(), &HfWrite::default());
    // The tokenizers agree, so perplexity is the same through either path.
    let text = "the thin thing in the tin 1234 then\nthey think 56 times\t\tthat  it is in there. ".repeat(20);
    let ids = gguf.tokenizer.encode(&text).unwrap();
    assert_eq!(hf.tokenizer.encode(&text).unwrap(), ids);
    assert!(ids.contains(&259) && ids.contains(&258), "merges used");
    let a = perplexity(&gguf.model, &ids, 4, 64, |_| {}).unwrap();
    let b = perplexity(&hf.model, &ids, 4, 64, |_| {}).unwrap();
    assert_eq!(a.mean_nll, b.mean_nll);
    // Its config.json names the same folder.
    let via_config = load_model(&dir.path().join("hf/config.json")).unwrap();
    assert_eq!(logits(&via_config), logits(&hf));
}

#[test]
fn sharded_untied_and_half_precision_folders_load_exactly() {
    for (dtype, shards) in [(Dtype::F32, 3), (Dtype::F16, 1), (Dtype::BF16, 2)] {
        let dir = tempfile::tempdir().unwrap();
        let (_, hf) = same_as_gguf(dir.path(), &untied(5), &HfWrite { dtype, shards, ..HfWrite::default() });
        assert!(hf.model.output.is_some());
        let ModelSource::HuggingFace(checkpoint) = &hf.source else { unreachable!() };
        assert_eq!(checkpoint.files.len(), shards);
    }
}

#[test]
fn mistral_caps_the_context_at_its_window_and_qwen2_adds_qkv_biases() {
    let dir = tempfile::tempdir().unwrap();
    let model = LlamaModel::random(tiny_config(), 8).unwrap();
    let folder = dir.path().join("mistral");
    write_hf(&folder, &model, &HfWrite { model_type: "mistral", ..HfWrite::default() });
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("config.json")).unwrap()).unwrap();
    config["sliding_window"] = 128.into();
    std::fs::write(folder.join("config.json"), config.to_string()).unwrap();
    assert_eq!(load_model(&folder).unwrap().model.config.context, 128);

    let mut qwen = untied(9);
    let c = qwen.config;
    for (b, block) in qwen.blocks.iter_mut().enumerate() {
        let bias =
            |n: usize, s: u64| (0..n).map(|i| ((i as u64 * 37 + s * 11 + b as u64) % 23) as f32 / 10.0 - 1.1).collect();
        block.qkv_bias = Some(QkvBias { q: bias(c.hidden, 1), k: bias(c.kv_dim(), 2), v: bias(c.kv_dim(), 3) });
    }
    let folder = dir.path().join("qwen2");
    write_hf(&folder, &qwen, &HfWrite { model_type: "qwen2", ..HfWrite::default() });
    let loaded = load_model(&folder).unwrap();
    assert_eq!(loaded.model.blocks[1].qkv_bias, qwen.blocks[1].qkv_bias, "biases read in the GGUF row order");
    let rel = max_rel_diff(&logits(&loaded), &reference_logits(&hf_tensors(&qwen), &qwen, &TOKENS));
    assert!(rel < 1e-4, "qwen2: relative difference {rel}");
    // Without its biases the model computes something else: the test can see them.
    let mut plain = loaded.model.clone();
    plain.blocks.iter_mut().for_each(|b| b.qkv_bias = None);
    let without = plain.logits(plain.hidden_states(&TOKENS).unwrap().view()).unwrap();
    assert!(max_rel_diff(&without, &reference_logits(&hf_tensors(&qwen), &qwen, &TOKENS)) > 1e-2);
}

#[test]
fn the_q_k_row_order_is_llama_cpps() {
    // Head width 4 (pairs (0, 2) and (1, 3) in rotate_half): GGUF rows 0..4 are HF rows 0, 2, 1, 3.
    assert_eq!((0..8).map(|r| hf_row_of_gguf_row(r, 4)).collect::<Vec<_>>(), [0, 2, 1, 3, 4, 6, 5, 7]);
    assert_eq!((0..6).map(|r| hf_row_of_gguf_row(r, 6)).collect::<Vec<_>>(), [0, 3, 1, 4, 2, 5]);
}

/// A valid folder in `dir`, then `edit` applied to it; returns the load error.
fn broken(edit: impl FnOnce(&Path)) -> OptimaError {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("hf");
    write_hf(&folder, &untied(2), &HfWrite { shards: 2, ..HfWrite::default() });
    edit(&folder);
    match load_model(&folder) {
        Ok(_) => panic!("a broken folder loaded"),
        Err(e) => e,
    }
}

fn edit_config(folder: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = folder.join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    f(&mut config);
    std::fs::write(path, config.to_string()).unwrap();
}

fn rewrite_shard(
    folder: &Path,
    shard: &str,
    f: impl FnOnce(&mut std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)>),
    dtype: Dtype,
) {
    let path = folder.join(shard);
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: std::collections::BTreeMap<_, _> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            (n, (v.shape().to_vec(), v.data().chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()))
        })
        .collect();
    f(&mut tensors);
    write_safetensors(&path, &tensors, dtype);
}

fn format_error(e: &OptimaError, path_ends: &str, needle: &str) {
    match e {
        OptimaError::Format { path, detail } => {
            assert!(path.ends_with(path_ends), "{e}");
            assert!(detail.contains(needle), "{e}");
        }
        other => panic!("expected a format error, got {other}"),
    }
}

#[test]
fn broken_configs_are_format_errors_naming_config_json() {
    let e = broken(|f| edit_config(f, |c| drop(c.as_object_mut().unwrap().remove("hidden_size"))));
    format_error(&e, "config.json", "hidden_size");
    let e = broken(|f| edit_config(f, |c| c["num_attention_heads"] = 5.into()));
    format_error(&e, "config.json", "heads");
    let e = broken(|f| edit_config(f, |c| c["model_type"] = "gpt_neox".into()));
    format_error(&e, "config.json", "unsupported model: model_type \"gpt_neox\"");
    let e =
        broken(|f| edit_config(f, |c| c["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0})));
    format_error(&e, "config.json", "unsupported model: rope_scaling");
    let e = broken(|f| edit_config(f, |c| c["mlp_bias"] = true.into()));
    format_error(&e, "config.json", "mlp_bias");
    let e = broken(|f| std::fs::write(f.join("config.json"), "{not json").unwrap());
    format_error(&e, "config.json", "config.json");
}

#[test]
fn missing_shards_and_tensors_name_the_file() {
    let e = broken(|f| std::fs::remove_file(f.join("model-00002-of-00002.safetensors")).unwrap());
    assert!(matches!(&e, OptimaError::Io { path, .. } if path.ends_with("model-00002-of-00002.safetensors")), "{e}");
    // The index promises a tensor its shard does not hold.
    let e = broken(|f| rewrite_shard(f, "model-00001-of-00002.safetensors", |t| drop(t.pop_first()), Dtype::F32));
    format_error(&e, "model-00001-of-00002.safetensors", "the index puts tensor");
    // A shard outside the folder is refused.
    let e = broken(|f| {
        let index = std::fs::read_to_string(f.join("model.safetensors.index.json")).unwrap();
        std::fs::write(f.join("model.safetensors.index.json"), index.replace("model-00001", "../model-00001")).unwrap();
    });
    format_error(&e, "model.safetensors.index.json", "not a file name");
    // A tensor missing everywhere (no index, one file).
    let e = broken(|f| {
        std::fs::remove_file(f.join("model.safetensors.index.json")).unwrap();
        let mut all = std::collections::BTreeMap::new();
        for shard in ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"] {
            rewrite_shard(f, shard, |t| all.append(t), Dtype::F32);
        }
        all.remove("model.layers.1.mlp.up_proj.weight");
        write_safetensors(&f.join("model.safetensors"), &all, Dtype::F32);
    });
    format_error(&e, "model.safetensors", "\"model.layers.1.mlp.up_proj.weight\" is missing");
    let e = broken(|f| std::fs::remove_file(f.join("tokenizer.json")).unwrap());
    assert!(matches!(&e, OptimaError::Io { path, .. } if path.ends_with("tokenizer.json")), "{e}");
}

#[test]
fn wrong_shapes_and_unknown_dtypes_are_refused_by_tensor_name() {
    let shard_of = |f: &Path, name: &str| -> String {
        let index: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(f.join("model.safetensors.index.json")).unwrap()).unwrap();
        index["weight_map"][name].as_str().unwrap().to_string()
    };
    let name = "model.layers.0.self_attn.k_proj.weight";
    let e = broken(|f| {
        let shard = shard_of(f, name);
        rewrite_shard(
            f,
            &shard,
            |t| {
                let (shape, values) = t.get_mut(name).unwrap();
                *shape = vec![shape[0] / 2, shape[1] * 2];
                let _ = values;
            },
            Dtype::F32,
        )
    });
    match &e {
        OptimaError::ShapeMismatch { what, .. } => assert!(what.contains(name), "{e}"),
        other => panic!("expected a shape error, got {other}"),
    }
    let norm = "model.norm.weight";
    let e = broken(|f| {
        let shard = shard_of(f, norm);
        rewrite_shard(f, &shard, |t| t.get_mut(norm).unwrap().0 = vec![8, 8], Dtype::F32)
    });
    assert!(matches!(&e, OptimaError::ShapeMismatch { what, .. } if what.contains(norm)), "{e}");
    // I32 and F64 tensors: the bytes are fine, the dtype is not one the loader converts.
    for dtype in [Dtype::I32, Dtype::F64] {
        let e = broken(|f| {
            let shard = shard_of(f, norm);
            let path = f.join(&shard);
            let bytes = std::fs::read(&path).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let mut owned: Vec<(String, Vec<usize>, Dtype, Vec<u8>)> =
                st.tensors().into_iter().map(|(n, v)| (n, v.shape().to_vec(), v.dtype(), v.data().to_vec())).collect();
            for t in owned.iter_mut().filter(|t| t.0 == norm) {
                t.2 = dtype;
                if dtype == Dtype::F64 {
                    t.3 =
                        t.3.chunks(4)
                            .flat_map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())).to_le_bytes())
                            .collect();
                }
            }
            let views: Vec<_> = owned
                .iter()
                .map(|(n, s, d, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
                .collect();
            safetensors::serialize_to_file(views, None, &path).unwrap();
        });
        format_error(&e, "", &format!("dtype {dtype:?}"));
    }
}
