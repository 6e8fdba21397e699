//! Writing GGUF as Q8_0 (`write_model_gguf` with `WeightPrecision::Q8_0`), and keeping a GGUF's
//! own types by default (`WeightPrecision::Source`): a pruned tiny model's matrices come back
//! within half a quantization step, its zeros exact, its norms untouched.

mod tiny_model;

use half::f16;
use optima_llm::gguf::{GgmlType, GgufFile, GgufValue};
use optima_llm::llama::{LinearKind, LlamaModel};
use optima_llm::model_file::{WeightPrecision, load_model, write_model_gguf};
use tiny_model::*;

fn pruned(seed: u64) -> LlamaModel {
    let mut model = LlamaModel::random(tiny_config(), seed).unwrap();
    for block in &mut model.blocks {
        for kind in LinearKind::ALL {
            block.weight_mut(kind).iter_mut().step_by(2).for_each(|v| *v = 0.0);
        }
    }
    model
}

/// Every value of `got` within half its block's step of `want`, and exactly 0 where `want` is.
fn within_half_a_step(name: &str, file: &GgufFile, want: &[f32], got: &[f32]) {
    let bytes = file.tensor_bytes(name).unwrap();
    assert_eq!(want.len(), got.len());
    for (b, (w, g)) in want.chunks(32).zip(got.chunks(32)).enumerate() {
        let d = f16::from_le_bytes([bytes[34 * b], bytes[34 * b + 1]]).to_f32();
        for (&x, &y) in w.iter().zip(g) {
            assert!((x - y).abs() <= d / 2.0 + 1e-7, "{name} block {b}: {x} -> {y} (d = {d})");
            if x == 0.0 {
                assert_eq!(y, 0.0, "{name}: a pruned zero stays exact");
            }
        }
    }
}

#[test]
fn q8_0_output_keeps_zeros_exact_and_norms_in_f32() {
    let dir = tempfile::tempdir().unwrap();
    let model = pruned(31);
    let input = dir.path().join("f32.gguf");
    write_tiny_gguf(&input, &model);
    let loaded = load_model(&input).unwrap();
    let out = dir.path().join("q8.gguf");
    write_model_gguf(&out, loaded.gguf().unwrap(), &loaded.model, WeightPrecision::Q8_0).unwrap();
    let file = GgufFile::read(&out).unwrap();
    assert_eq!(file.get("general.file_type"), Some(&GgufValue::U32(7)), "llama.cpp's MOSTLY_Q8_0");
    for info in &file.tensors {
        let (_, values) = file.tensor_f32(&info.name).unwrap();
        let (_, original) = loaded.gguf().unwrap().tensor_f32(&info.name).unwrap();
        if info.dims.len() == 1 {
            assert_eq!(info.ggml_type, GgmlType::F32, "{}", info.name);
            assert_eq!(values, original);
        } else {
            assert_eq!(info.ggml_type, GgmlType::Q8_0, "{}", info.name);
            within_half_a_step(&info.name, &file, &original, &values);
            assert_ne!(values, original, "{}: quantized", info.name);
        }
    }
    // Small weights may round to 0 too (|x| < d / 2); every pruned one is 0.
    let q8 = load_model(&out).unwrap();
    let zeros = |m: &LlamaModel| m.blocks.iter().map(|b| b.q.iter().filter(|&&v| v == 0.0).count()).sum::<usize>();
    assert!(zeros(&q8.model) >= zeros(&model) && zeros(&model) > 0);

    // By default a GGUF input keeps its own types: the Q8_0 file rewrites to the same values, and
    // the F32 file to the same bits.
    let again = dir.path().join("again.gguf");
    write_model_gguf(&again, q8.gguf().unwrap(), &q8.model, WeightPrecision::Source).unwrap();
    let file2 = GgufFile::read(&again).unwrap();
    for info in &file2.tensors {
        assert_eq!(info.ggml_type, file.tensor_info(&info.name).unwrap().ggml_type);
        assert_eq!(file2.tensor_f32(&info.name).unwrap(), file.tensor_f32(&info.name).unwrap(), "{}", info.name);
    }
    let same = dir.path().join("same.gguf");
    write_model_gguf(&same, loaded.gguf().unwrap(), &loaded.model, WeightPrecision::Source).unwrap();
    let kept = GgufFile::read(&same).unwrap();
    for info in &kept.tensors {
        assert_eq!(info.ggml_type, GgmlType::F32);
        assert_eq!(kept.tensor_bytes(&info.name).unwrap(), loaded.gguf().unwrap().tensor_bytes(&info.name).unwrap());
    }
    assert_eq!(kept.get("general.file_type"), Some(&GgufValue::U32(0)), "F32 kept bit for bit");
}

#[test]
fn q8_0_falls_back_to_f16_for_rows_that_do_not_fill_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny_config();
    config.hidden = 48; // rows of 48 do not fill 32-value blocks
    config.heads = 4;
    config.kv_heads = 2;
    config.head_dim = 12;
    let model = LlamaModel::random(config, 32).unwrap();
    let input = dir.path().join("f32.gguf");
    write_tiny_gguf(&input, &model);
    let loaded = load_model(&input).unwrap();
    let out = dir.path().join("q8.gguf");
    write_model_gguf(&out, loaded.gguf().unwrap(), &loaded.model, WeightPrecision::Q8_0).unwrap();
    let file = GgufFile::read(&out).unwrap();
    assert_eq!(file.tensor_info("blk.0.attn_q.weight").unwrap().ggml_type, GgmlType::F16);
    // down_proj's rows are the MLP width, 128: Q8_0.
    assert_eq!(file.tensor_info("blk.0.ffn_down.weight").unwrap().ggml_type, GgmlType::Q8_0);
}
