//! Writing Hugging Face folders (`hf::write_checkpoint`): a tiny random Llama, pruned, written
//! from GGUF or from a Hugging Face folder, reads back to the same weights (f32 bit for bit,
//! f16/bf16 as rounded, zeros exact), with the Hugging Face names and q/k row order of an
//! independent writer, the same tokenizer ids and perplexity; hostile destinations are refused
//! and leave nothing behind.

mod tiny_model;

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::Array2;
use optima::OptimaError;
use optima_llm::hf::layout::{gguf_rows_from_hf, hf_rows_from_gguf};
use optima_llm::hf::{HfDtype, write_checkpoint};
use optima_llm::llama::{LinearKind, LlamaModel, QkvBias};
use optima_llm::model_file::{LoadedModel, ModelSource, load_model};
use optima_llm::perplexity::perplexity;
use safetensors::Dtype;
use tiny_model::hf::*;
use tiny_model::*;

/// `model` with a third of every linear layer's weights set to exactly zero.
fn pruned(mut model: LlamaModel) -> LlamaModel {
    for block in &mut model.blocks {
        for kind in LinearKind::ALL {
            let w = block.weight_mut(kind);
            w.iter_mut().enumerate().filter(|(i, _)| i % 3 == 1).for_each(|(_, v)| *v = 0.0);
        }
    }
    model
}

fn untied(seed: u64) -> LlamaModel {
    let mut model = LlamaModel::random(tiny_config(), seed).unwrap();
    model.output = Some(LlamaModel::random(tiny_config(), seed + 1000).unwrap().token_embd);
    model
}

/// The tensors of a written `model.safetensors`, widened to f32.
fn read_safetensors(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let values = match view.dtype() {
                Dtype::F32 => view.data().chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
                Dtype::F16 => view.data().chunks(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
                Dtype::BF16 => {
                    view.data().chunks(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
                }
                other => panic!("{name}: {other:?}"),
            };
            (name, (view.shape().to_vec(), values))
        })
        .collect()
}

/// The same configuration and every tensor (biases included) bit for bit.
fn assert_same(a: &LlamaModel, b: &LlamaModel, what: &str) {
    assert_eq!(a.config, b.config, "{what}");
    let bits = |m: &LlamaModel| -> BTreeMap<String, (Vec<usize>, Vec<u32>)> {
        hf_tensors(m).into_iter().map(|(n, (s, v))| (n, (s, v.iter().map(|x| x.to_bits()).collect()))).collect()
    };
    assert!(bits(a) == bits(b), "{what}: the tensors differ");
}

fn config(folder: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(folder.join("config.json")).unwrap()).unwrap()
}

const TEXT: &str = "the thin thing in the tin 1234 then\nthey think 56 times\t\tthat  it is in there. ";

#[test]
fn q_k_rows_go_back_to_the_hugging_face_order() {
    let hf = Array2::from_shape_fn((64, 3), |(i, j)| (i * 3 + j) as f32);
    let gguf = gguf_rows_from_hf("q", &hf, 16).unwrap();
    assert_ne!(gguf, hf);
    assert_eq!(hf_rows_from_gguf("q", &gguf, 16).unwrap(), hf);
    assert_eq!(gguf_rows_from_hf("q", &hf_rows_from_gguf("q", &hf, 16).unwrap(), 16).unwrap(), hf);
    assert!(hf_rows_from_gguf("q", &hf, 6).is_err(), "rows not a multiple of the head width");
}

#[test]
fn a_gguf_model_written_as_a_folder_reads_back_bit_for_bit_and_scores_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let model = pruned(LlamaModel::random(tiny_config(), 21).unwrap());
    let gguf_path = dir.path().join("tiny.gguf");
    write_tiny_gguf(&gguf_path, &model);
    let gguf = load_model(&gguf_path).unwrap();
    let folder = dir.path().join("tiny-hf");
    write_checkpoint(&folder, &gguf.source, &gguf.model, None).unwrap();
    let hf = load_model(&folder).unwrap();
    let ModelSource::HuggingFace(checkpoint) = &hf.source else { panic!("not read as a Hugging Face folder") };
    assert_eq!(checkpoint.dtype, HfDtype::F32);
    assert_same(&hf.model, &gguf.model, "the same weights, bit for bit");
    // The names and q/k order of an independent writer.
    assert_eq!(read_safetensors(&folder.join("model.safetensors")), hf_tensors(&model));
    let c = config(&folder);
    assert_eq!(c["architectures"][0], "LlamaForCausalLM");
    assert_eq!(c["tie_word_embeddings"], true);
    assert_eq!(c["torch_dtype"], "float32");
    assert_eq!(c["rms_norm_eps"].as_f64(), Some(1e-5), "the shortest decimal of the f32");
    assert_eq!(c["num_key_value_heads"], 2);
    // The tokenizer written from the GGUF metadata gives optima's ids, so the perplexity is equal.
    let text = TEXT.repeat(20);
    let ids = gguf.tokenizer.encode(&text).unwrap();
    assert!(ids.contains(&259) && ids.contains(&258), "merges used");
    assert_eq!(hf.tokenizer.encode(&text).unwrap(), ids);
    let a = perplexity(&gguf.model, &ids, 4, 64, |_| {}).unwrap();
    let b = perplexity(&hf.model, &ids, 4, 64, |_| {}).unwrap();
    assert_eq!(a.mean_nll, b.mean_nll);
    for file in ["tokenizer_config.json", "special_tokens_map.json", "generation_config.json"] {
        assert!(folder.join(file).is_file(), "{file}");
    }
    let mode = |f: &str| std::fs::metadata(folder.join(f)).unwrap().permissions();
    assert_eq!(mode("model.safetensors"), mode("config.json"), "the weights are as readable as the config");
}

#[test]
fn half_precision_folders_keep_pruned_zeros_and_their_dtype() {
    let model = pruned(untied(22));
    for dtype in [HfDtype::F16, HfDtype::BF16] {
        let dir = tempfile::tempdir().unwrap();
        let gguf_path = dir.path().join("tiny.gguf");
        write_tiny_gguf(&gguf_path, &model);
        let gguf = load_model(&gguf_path).unwrap();
        let folder = dir.path().join("half");
        write_checkpoint(&folder, &gguf.source, &gguf.model, Some(dtype)).unwrap();
        let hf = load_model(&folder).unwrap();
        let st_dtype = if dtype == HfDtype::F16 { Dtype::F16 } else { Dtype::BF16 };
        assert_same(&hf.model, &rounded(&model, st_dtype), "rounded once, zeros exact");
        assert_eq!(config(&folder)["torch_dtype"], dtype.torch_name());
        assert_eq!(config(&folder)["tie_word_embeddings"], false);
        let zeros = |m: &LlamaModel| m.blocks[1].down.iter().filter(|&&v| v == 0.0).count();
        assert_eq!(zeros(&hf.model), zeros(&model));
        // From a Hugging Face input, its own dtype is kept, and the weights again.
        let again = dir.path().join("again");
        write_checkpoint(&again, &hf.source, &hf.model, None).unwrap();
        let back = load_model(&again).unwrap();
        let ModelSource::HuggingFace(checkpoint) = &back.source else { unreachable!() };
        assert_eq!(checkpoint.dtype, dtype);
        assert_same(&back.model, &hf.model, "again");
    }
}

#[test]
fn a_qwen2_folder_keeps_its_biases_config_and_tokenizer_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut qwen = pruned(untied(23));
    let c = qwen.config;
    for (b, block) in qwen.blocks.iter_mut().enumerate() {
        let bias =
            |n: usize, s: u64| (0..n).map(|i| ((i as u64 * 37 + s * 11 + b as u64) % 23) as f32 / 10.0 - 1.1).collect();
        block.qkv_bias = Some(QkvBias { q: bias(c.hidden, 1), k: bias(c.kv_dim(), 2), v: bias(c.kv_dim(), 3) });
    }
    let input = dir.path().join("qwen2");
    write_hf(&input, &qwen, &HfWrite { model_type: "qwen2", shards: 2, ..HfWrite::default() });
    let mut original = config(&input);
    original["custom_setting"] = 7.into();
    std::fs::write(input.join("config.json"), original.to_string()).unwrap();
    std::fs::write(input.join("tokenizer_config.json"), "{\"model_max_length\": 512}").unwrap();
    let loaded: LoadedModel = load_model(&input).unwrap();
    let out = dir.path().join("qwen2-out");
    write_checkpoint(&out, &loaded.source, &loaded.model, None).unwrap();
    let back = load_model(&out).unwrap();
    assert_same(&back.model, &loaded.model, "qwen2");
    assert_eq!(back.model.blocks[1].qkv_bias, qwen.blocks[1].qkv_bias);
    assert_eq!(read_safetensors(&out.join("model.safetensors")), hf_tensors(&qwen), "biases in the HF row order");
    let written = config(&out);
    assert_eq!(written["custom_setting"], 7, "the input's config.json is kept");
    assert_eq!(written["model_type"], "qwen2");
    assert_eq!(
        std::fs::read(out.join("tokenizer_config.json")).unwrap(),
        std::fs::read(input.join("tokenizer_config.json")).unwrap()
    );
    assert_eq!(
        std::fs::read(out.join("tokenizer.json")).unwrap(),
        std::fs::read(input.join("tokenizer.json")).unwrap()
    );
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

fn refused(e: optima::Result<()>, needle: &str) {
    match e {
        Err(OptimaError::InvalidSetting(msg)) => assert!(msg.contains(needle), "{msg}"),
        other => panic!("expected a refusal with {needle:?}, got {other:?}"),
    }
}

#[test]
fn hostile_destinations_are_refused_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let model = untied(24);
    let folder = dir.path().join("hf");
    write_hf(&folder, &model, &HfWrite::default());
    let hf = load_model(&folder).unwrap();
    let before = entries(&folder);
    let snapshot = std::fs::read(folder.join("model.safetensors")).unwrap();
    refused(write_checkpoint(&folder, &hf.source, &hf.model, None), "refusing to overwrite the input");
    refused(write_checkpoint(dir.path(), &hf.source, &hf.model, None), "refusing to overwrite the input");
    assert_eq!(entries(&folder), before);
    assert_eq!(std::fs::read(folder.join("model.safetensors")).unwrap(), snapshot);

    let gguf_path = dir.path().join("sub/tiny.gguf");
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    write_tiny_gguf(&gguf_path, &model);
    let gguf = load_model(&gguf_path).unwrap();
    refused(write_checkpoint(&gguf_path, &gguf.source, &gguf.model, None), "a file is there");
    refused(write_checkpoint(&dir.path().join("sub"), &gguf.source, &gguf.model, None), "refusing to overwrite");
    // A folder of other things is not replaced.
    let other = dir.path().join("notes");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("todo.txt"), "keep me").unwrap();
    refused(write_checkpoint(&other, &gguf.source, &gguf.model, None), "holds no config.json");
    assert_eq!(std::fs::read_to_string(other.join("todo.txt")).unwrap(), "keep me");
    // A destination under a file cannot be created: an I/O error, nothing left beside it.
    let top = entries(dir.path());
    let blocked = dir.path().join("notes/todo.txt/out");
    match write_checkpoint(&blocked, &gguf.source, &gguf.model, None) {
        Err(OptimaError::Io { .. }) => {}
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert_eq!(entries(dir.path()), top);
    assert_eq!(entries(&other), ["todo.txt"]);

    // A previous output is replaced whole; no temporary is left.
    let out = dir.path().join("out");
    write_checkpoint(&out, &gguf.source, &gguf.model, None).unwrap();
    std::fs::write(out.join("stale.txt"), "old").unwrap();
    write_checkpoint(&out, &gguf.source, &gguf.model, Some(HfDtype::BF16)).unwrap();
    assert!(!out.join("stale.txt").exists());
    assert_eq!(config(&out)["torch_dtype"], "bfloat16");
    assert!(entries(dir.path()).iter().all(|n| !n.contains(".tmp-")), "{:?}", entries(dir.path()));
    assert_same(&load_model(&out).unwrap().model, &rounded(&model, Dtype::BF16), "replaced");
}
