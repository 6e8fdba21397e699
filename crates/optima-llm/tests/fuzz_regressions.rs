//! Inputs found by fuzzing (`fuzz/`, see docs/robustness.md), each kept as a regression test: the
//! library must answer them with an error or a result, never a panic, an abort or a huge
//! allocation. Also the generator of the fuzzers' seed corpora (`write_fuzz_seeds`, run by
//! `scripts/fuzz.sh`), built from small valid files written by the crate's own writers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ndarray::Array2;
use optima::io::{parse_problem_file, write_problem_file};
use optima::{Mask, SparsityPattern};
use optima_llm::gguf::{GgmlType, GgufFile, GgufTensorData, GgufValue, GgufValueType, gguf_bytes};
use optima_llm::tokenizer::bytes_to_unicode;
use safetensors::{Dtype, tensor::TensorView};

// ---- seed corpora ----------------------------------------------------------------------------

/// A tiny Llama GGUF: `hidden` wide with 2 heads of `hidden / 2`, one KV head, one block, a
/// byte-level tokenizer over `tokens` with `merges`, every weight F32 (a small pattern of values).
fn tiny_llama(hidden: usize, intermediate: usize, tokens: Vec<String>, merges: &[&str]) -> Vec<u8> {
    let vocab = tokens.len();
    let mut types = vec![GgufValue::I32(1); vocab];
    if let Some(last) = types.last_mut() {
        *last = GgufValue::I32(3);
    }
    let u = |v: usize| GgufValue::U32(v as u32);
    let metadata = vec![
        ("general.architecture".to_string(), GgufValue::String("llama".into())),
        ("general.name".to_string(), GgufValue::String("tiny".into())),
        ("llama.embedding_length".to_string(), u(hidden)),
        ("llama.feed_forward_length".to_string(), u(intermediate)),
        ("llama.block_count".to_string(), u(1)),
        ("llama.attention.head_count".to_string(), u(2)),
        ("llama.attention.head_count_kv".to_string(), u(1)),
        ("llama.rope.freq_base".to_string(), GgufValue::F32(10000.0)),
        ("llama.attention.layer_norm_rms_epsilon".to_string(), GgufValue::F32(1e-5)),
        ("llama.context_length".to_string(), u(32)),
        ("tokenizer.ggml.model".to_string(), GgufValue::String("gpt2".into())),
        ("tokenizer.ggml.pre".to_string(), GgufValue::String("smollm".into())),
        ("tokenizer.ggml.tokens".to_string(), GgufValue::string_array(tokens)),
        ("tokenizer.ggml.merges".to_string(), GgufValue::string_array(merges.iter().copied())),
        ("tokenizer.ggml.token_type".to_string(), GgufValue::Array(GgufValueType::I32, types)),
        ("tokenizer.ggml.unknown_token_id".to_string(), u(0)),
    ];
    let values = |n: usize| (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect::<Vec<f32>>();
    let matrix = |name: &str, rows: usize, cols: usize| {
        (name.to_string(), vec![cols, rows], GgufTensorData::F32(values(rows * cols)))
    };
    let vector = |name: &str, n: usize| (name.to_string(), vec![n], GgufTensorData::F32(vec![1.0; n]));
    let kv = hidden / 2;
    let tensors = vec![
        matrix("token_embd.weight", vocab, hidden),
        vector("blk.0.attn_norm.weight", hidden),
        matrix("blk.0.attn_q.weight", hidden, hidden),
        matrix("blk.0.attn_k.weight", kv, hidden),
        matrix("blk.0.attn_v.weight", kv, hidden),
        matrix("blk.0.attn_output.weight", hidden, hidden),
        vector("blk.0.ffn_norm.weight", hidden),
        matrix("blk.0.ffn_gate.weight", intermediate, hidden),
        matrix("blk.0.ffn_up.weight", intermediate, hidden),
        matrix("blk.0.ffn_down.weight", hidden, intermediate),
        vector("output_norm.weight", hidden),
    ];
    gguf_bytes(&metadata, &tensors).expect("the tiny model is a valid GGUF")
}

/// Sets the ggml type of tensor `name` in GGUF `bytes` written by `gguf_bytes` (its data, sized
/// for F32, is then longer than the new type needs, so the file stays valid).
fn retype(mut bytes: Vec<u8>, name: &str, ty: GgmlType) -> Vec<u8> {
    let file = GgufFile::from_bytes(bytes.clone(), Path::new("seed.gguf")).expect("a valid seed");
    let n_dims = file.tensor_info(name).expect("the tensor exists").dims.len();
    let mut needle = (name.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(name.as_bytes());
    let at = bytes.windows(needle.len()).position(|w| w == needle).expect("the tensor info is in the header");
    let type_at = at + needle.len() + 4 + 8 * n_dims;
    bytes[type_at..type_at + 4].copy_from_slice(&(ty as u32).to_le_bytes());
    GgufFile::from_bytes(bytes.clone(), Path::new("seed.gguf")).expect("the retyped seed is valid");
    bytes
}

fn gguf_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    // Small vocabulary: a handful of byte symbols, one merge, one control token.
    let small: Vec<String> = ["a", "b", "Ġ", "ab", "1", "<|im_end|>"].map(String::from).to_vec();
    seeds.push(("llama_small".to_string(), tiny_llama(4, 4, small, &["a b"])));
    // Full byte alphabet with GPT-2 style merges; hidden 32 so quantized types fit whole rows.
    let mut tokens: Vec<String> = bytes_to_unicode().iter().map(|c| c.to_string()).collect();
    tokens.extend(["th", "he", "Ġt", "in", "<|im_start|>"].map(String::from));
    let full = tiny_llama(32, 32, tokens, &["t h", "h e", "Ġ t", "i n"]);
    for ty in [GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0] {
        seeds.push((format!("llama_q_{ty}"), retype(full.clone(), "blk.0.attn_q.weight", ty)));
    }
    seeds.push(("llama_v_q5_1".to_string(), retype(full, "blk.0.attn_v.weight", GgmlType::Q5_1)));
    // Metadata of every type, nested arrays, a custom alignment, a 3-D tensor, an F16 tensor.
    let metadata = vec![
        ("general.alignment".to_string(), GgufValue::U32(64)),
        ("u8".to_string(), GgufValue::U8(1)),
        ("i8".to_string(), GgufValue::I8(-1)),
        ("u16".to_string(), GgufValue::U16(2)),
        ("i16".to_string(), GgufValue::I16(-2)),
        ("i32".to_string(), GgufValue::I32(-3)),
        ("f32".to_string(), GgufValue::F32(0.5)),
        ("bool".to_string(), GgufValue::Bool(true)),
        ("u64".to_string(), GgufValue::U64(4)),
        ("i64".to_string(), GgufValue::I64(-4)),
        ("f64".to_string(), GgufValue::F64(0.25)),
        ("strs".to_string(), GgufValue::string_array(["x", "yz"])),
        ("floats".to_string(), GgufValue::Array(GgufValueType::F32, vec![GgufValue::F32(1.0), GgufValue::F32(2.0)])),
        (
            "nested".to_string(),
            GgufValue::Array(GgufValueType::Array, vec![GgufValue::Array(GgufValueType::U8, vec![GgufValue::U8(7)])]),
        ),
    ];
    let tensors = vec![
        ("cube".to_string(), vec![2, 2, 2], GgufTensorData::F32((0..8).map(|i| i as f32).collect())),
        ("half".to_string(), vec![4, 1], GgufTensorData::F16((0..4).map(|i| half::f16::from_f32(i as f32)).collect())),
    ];
    seeds.push(("metadata".to_string(), gguf_bytes(&metadata, &tensors).expect("valid")));
    // One 256-element tensor of each K-quant and IQ4 type (written as F32, whose 1 KiB of data is
    // more than any of their blocks need, then retyped).
    use GgmlType::*;
    let k_types = [Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K, IQ4_NL, IQ4_XS];
    let tensors: Vec<_> = k_types
        .iter()
        .map(|ty| (format!("k.{ty}"), vec![256], GgufTensorData::F32((0..256).map(|i| i as f32 - 100.5).collect())))
        .collect();
    let mut bytes = gguf_bytes(&[], &tensors).expect("valid");
    for ty in k_types {
        bytes = retype(bytes, &format!("k.{ty}"), ty);
    }
    seeds.push(("k_quants".to_string(), bytes));
    seeds
}

fn safetensors_bytes(tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)>) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            (name.to_string(), TensorView::new(*dtype, shape.clone(), data).expect("consistent view"))
        })
        .collect();
    safetensors::serialize(views, None::<HashMap<String, String>>).expect("serializes")
}

fn problem_seeds(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let weight = |m: usize, n: usize| Array2::from_shape_fn((m, n), |(i, j)| ((i * 3 + j * 5) % 7) as f64 - 3.0);
    let gram = |n: usize| {
        let a = Array2::from_shape_fn((n + 1, n), |(i, j)| ((i * 5 + j * 3) % 11) as f64 - 5.0);
        a.t().dot(&a)
    };
    for (name, m, n, mask) in [("4x8_mask", 4, 8, true), ("2x4", 2, 4, false), ("3x2_mask", 3, 2, true)] {
        let path = dir.join(format!("{name}.safetensors"));
        let mask = mask.then(|| Mask::from_fn(m, n, |i, j| (i + j) % 2 == 0));
        write_problem_file(&path, weight(m, n).view(), gram(n).view(), mask.as_ref()).expect("writes");
        seeds.push((name.to_string(), std::fs::read(&path).expect("reads back")));
    }
    // The other accepted element types: f16/bf16 weights, an f32 Hessian.
    let h32: Vec<u8> = gram(4).iter().flat_map(|&v| (v as f32).to_le_bytes()).collect();
    let w16: Vec<u8> = weight(2, 4).iter().flat_map(|&v| half::f16::from_f64(v).to_le_bytes()).collect();
    let wb16: Vec<u8> = weight(2, 4).iter().flat_map(|&v| half::bf16::from_f64(v).to_le_bytes()).collect();
    seeds.push((
        "f16_f32".into(),
        safetensors_bytes(vec![
            ("weight", Dtype::F16, vec![2, 4], w16),
            ("hessian", Dtype::F32, vec![4, 4], h32.clone()),
        ]),
    ));
    seeds.push((
        "bf16_f32_mask".into(),
        safetensors_bytes(vec![
            ("weight", Dtype::BF16, vec![2, 4], wb16),
            ("hessian", Dtype::F32, vec![4, 4], h32),
            ("mask", Dtype::U8, vec![2, 4], vec![1, 0, 1, 0, 0, 1, 0, 1]),
        ]),
    ));
    for (name, _) in &seeds {
        let _ = std::fs::remove_file(dir.join(format!("{name}.safetensors")));
    }
    seeds
}

fn tokenizer_seeds() -> Vec<(String, Vec<u8>)> {
    let texts = [
        "Hello, world! The theory of 12345 things.",
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>",
        "  leading spaces, trailing   \n\n\ttabs and ' quotes 're 'll 'd",
        "Ünïcödé: 日本語テキスト, emoji 🦀🚀, Ελληνικά, ١٢٣ digits",
        "<|im<|im_start|><|im_end",
    ];
    let mut seeds = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        seeds.push((format!("encode_{i}"), [&[0u8][..], t.as_bytes()].concat()));
    }
    seeds.push(("encode_invalid_utf8".into(), vec![0, b'a', 0xff, 0xfe, b' ', 0xc3, b'1', 0xe2, 0x82]));
    let ids: Vec<u8> = [0u32, 65, 255, 256, 260, 266, 267, 268, 299, 7].iter().flat_map(|i| i.to_le_bytes()).collect();
    seeds.push(("decode".into(), [&[1u8][..], &ids].concat()));
    let mut parts = vec![2u8];
    parts.extend((0..200u32).map(|i| (i * 37 % 251) as u8));
    seeds.push(("parts".into(), parts));
    seeds
}

fn validation_seeds() -> Vec<(String, Vec<u8>)> {
    // The fuzz target reads these through `arbitrary`; any bytes make a valid input, these just
    // start it off with a spread of sizes and values.
    (0..8u32)
        .map(|s| {
            let len = 64 + 48 * s as usize;
            let bytes =
                (0..len as u32).map(|i| (i.wrapping_mul(2654435761).wrapping_add(s * 97) >> 13) as u8).collect();
            (format!("random_{s}"), bytes)
        })
        .collect()
}

/// Writes the seed corpora into `$FUZZ_SEEDS_DIR/<target>/` (default `fuzz/corpus`).
#[test]
#[ignore = "writes the fuzzers' seed corpora; run by scripts/fuzz.sh"]
fn write_fuzz_seeds() {
    let root = std::env::var_os("FUZZ_SEEDS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus"));
    let scratch = tempfile::tempdir().expect("a temporary directory");
    let sets = [
        ("gguf_reader", gguf_seeds()),
        ("problem_file", problem_seeds(scratch.path())),
        ("tokenizer", tokenizer_seeds()),
        ("problem_validation", validation_seeds()),
    ];
    for (target, seeds) in sets {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("creates the corpus directory");
        for (name, bytes) in seeds {
            std::fs::write(dir.join(format!("seed_{name}")), bytes).expect("writes a seed");
        }
    }
}

/// The seeds themselves are valid inputs.
#[test]
fn seeds_are_valid() {
    for (name, bytes) in gguf_seeds() {
        let file = GgufFile::from_bytes(bytes, Path::new("seed.gguf")).unwrap_or_else(|e| panic!("{name}: {e}"));
        for t in file.tensor_names() {
            file.tensor_f32(t).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    let scratch = tempfile::tempdir().unwrap();
    for (name, bytes) in problem_seeds(scratch.path()) {
        parse_problem_file(&bytes, Path::new("seed.safetensors")).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let _: SparsityPattern = "2:4".parse().unwrap();
}

// ---- regressions -----------------------------------------------------------------------------

/// Overwrites the `u32` value of metadata `key` in GGUF `bytes`.
fn set_u32(mut bytes: Vec<u8>, key: &str, value: u32) -> Vec<u8> {
    let mut needle = (key.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(key.as_bytes());
    needle.extend_from_slice(&(GgufValueType::U32 as u32).to_le_bytes());
    let at = bytes.windows(needle.len()).position(|w| w == needle).expect("the key is in the header") + needle.len();
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    bytes
}

/// `llama.block_count = 4294967295` in an otherwise valid model: the loader reserved room for that
/// many blocks before reading any (a ~2.5 TB allocation, an abort). Now it fails on the first
/// missing block tensor.
#[test]
fn huge_block_count_is_an_error_not_an_allocation() {
    let small: Vec<String> = ["a", "b", "Ġ", "ab", "1", "<|im_end|>"].map(String::from).to_vec();
    let bytes = set_u32(tiny_llama(4, 4, small, &["a b"]), "llama.block_count", u32::MAX);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blocks.gguf");
    std::fs::write(&path, bytes).unwrap();
    let err = optima_llm::model_file::load_model(&path).err().expect("a model with missing blocks is refused");
    assert!(err.to_string().contains("blk.1."), "{err}");
}
