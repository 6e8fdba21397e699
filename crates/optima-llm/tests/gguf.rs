//! GGUF reader and writer: bit-exact round trips and the real SmolLM2 model (fetched by
//! `scripts/fetch-assets.sh`). Quantized blocks are in `gguf_dequant.rs`, hostile files in
//! `gguf_hostile.rs`.

mod assets_dir;
mod gguf_fixtures;

use gguf_fixtures::*;
use half::f16;
use optima::OptimaError;
use optima_llm::gguf::{GgmlType, GgufFile, GgufTensorData, GgufValue, GgufValueType, gguf_bytes, write_gguf};

// ---- round trips ----------------------------------------------------------------------------

fn all_value_types() -> Vec<(String, GgufValue)> {
    use GgufValue::*;
    vec![
        ("general.architecture".into(), String("llama".into())),
        ("t.u8".into(), U8(255)),
        ("t.i8".into(), I8(-128)),
        ("t.u16".into(), U16(65535)),
        ("t.i16".into(), I16(-32768)),
        ("t.u32".into(), U32(u32::MAX)),
        ("t.i32".into(), I32(i32::MIN)),
        ("t.f32".into(), F32(-1.5e-7)),
        ("t.bool.true".into(), Bool(true)),
        ("t.bool.false".into(), Bool(false)),
        ("t.string.unicode".into(), String("héllo wörld — ☃ 日本 \n\t\0".into())),
        ("t.string.empty".into(), String("".into())),
        ("t.u64".into(), U64(u64::MAX)),
        ("t.i64".into(), I64(i64::MIN)),
        ("t.f64".into(), F64(std::f64::consts::PI)),
        ("t.f32.subnormal".into(), F32(f32::from_bits(1))),
        ("t.array.str".into(), GgufValue::string_array(["a", "", "Ġworld", "<|im_start|>"])),
        ("t.array.i32".into(), Array(GgufValueType::I32, vec![I32(1), I32(-2), I32(3)])),
        ("t.array.f32".into(), Array(GgufValueType::F32, vec![F32(0.5), F32(-0.0)])),
        ("t.array.empty".into(), Array(GgufValueType::U64, vec![])),
        ("t.array.bool".into(), Array(GgufValueType::Bool, vec![Bool(true), Bool(false)])),
        (
            "t.array.nested".into(),
            Array(
                GgufValueType::Array,
                vec![
                    Array(GgufValueType::U8, vec![U8(1), U8(2)]),
                    Array(GgufValueType::String, vec![String("x".into())]),
                    Array(GgufValueType::F64, vec![]),
                ],
            ),
        ),
    ]
}

fn odd_tensors() -> Vec<(String, Vec<usize>, GgufTensorData)> {
    let f32s = |n: usize, seed: f32| (0..n).map(|i| (i as f32 * 0.731 + seed).sin() * 3.0).collect::<Vec<f32>>();
    let mut special = f32s(7, 0.0);
    special[0] = f32::NAN;
    special[1] = f32::INFINITY;
    special[2] = -0.0;
    special[3] = f32::from_bits(1); // subnormal
    vec![
        ("a".into(), vec![3], GgufTensorData::F32(f32s(3, 1.0))),
        ("blk.0.attn_q.weight".into(), vec![5, 7], GgufTensorData::F32(f32s(35, 2.0))),
        ("half".into(), vec![3, 1, 5], GgufTensorData::F16(f32s(15, 3.0).into_iter().map(f16::from_f32).collect())),
        ("specials".into(), vec![7], GgufTensorData::F32(special)),
        ("ones".into(), vec![1, 1, 1, 1], GgufTensorData::F32(vec![42.0])),
        ("empty".into(), vec![4, 0], GgufTensorData::F32(vec![])),
        ("half.odd".into(), vec![1, 3], GgufTensorData::F16(vec![f16::NAN, f16::MIN_POSITIVE_SUBNORMAL, f16::MAX])),
    ]
}

fn bits(d: &GgufTensorData) -> Vec<u32> {
    match d {
        GgufTensorData::F32(v) => v.iter().map(|x| x.to_bits()).collect(),
        GgufTensorData::F16(v) => v.iter().map(|x| x.to_f32().to_bits()).collect(),
        GgufTensorData::Q8_0(b) => optima_llm::gguf::dequantize(GgmlType::Q8_0, b, b.len() / 34 * 32)
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect(),
    }
}

#[test]
fn write_read_round_trip_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rt.gguf");
    let metadata = all_value_types();
    let tensors = odd_tensors();
    write_gguf(&path, &metadata, &tensors).unwrap();
    let file = GgufFile::read(&path).unwrap();
    assert_eq!(file.version, 3);
    assert_eq!(file.alignment, 32);
    // All metadata kept, in order, with general.alignment appended.
    assert_eq!(file.metadata.len(), metadata.len() + 1);
    assert_eq!(&file.metadata[..metadata.len()], &metadata[..]);
    assert_eq!(file.metadata.last().unwrap(), &("general.alignment".to_string(), GgufValue::U32(32)));
    assert_eq!(file.tensor_names().collect::<Vec<_>>(), tensors.iter().map(|t| t.0.as_str()).collect::<Vec<_>>());
    for (name, dims, data) in &tensors {
        let info = file.tensor_info(name).unwrap();
        assert_eq!(&info.dims, dims);
        assert_eq!(info.offset % 32, 0);
        assert_eq!((file.data_offset + info.offset) % 32, 0);
        let expected_type = match data {
            GgufTensorData::F32(_) => GgmlType::F32,
            GgufTensorData::F16(_) => GgmlType::F16,
            GgufTensorData::Q8_0(_) => GgmlType::Q8_0,
        };
        assert_eq!(info.ggml_type, expected_type);
        let (got_dims, values) = file.tensor_f32(name).unwrap();
        assert_eq!(&got_dims, dims);
        assert_eq!(values.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), bits(data), "{name}");
    }
    // Re-writing what was read gives the same bytes.
    let again = gguf_bytes(&file.metadata, &tensors).unwrap();
    assert_eq!(again, std::fs::read(&path).unwrap());
}

#[test]
fn mapped_files_are_checked_against_their_length() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mapped.gguf");
    let tensors = odd_tensors();
    write_gguf(&path, &all_value_types(), &tensors).unwrap();
    let file = GgufFile::read(&path).unwrap();
    assert!(format!("{file:?}").contains("mapped: true"), "{file:?}");
    let (last, ..) = tensors.last().unwrap();
    let read_bits = |name: &str| file.tensor_f32(name).map(|(_, v)| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
    // Reading a tensor twice (its pages released in between) gives the same values.
    assert_eq!(read_bits(last).unwrap(), read_bits(last).unwrap());
    // Cut the file under the open map: reading a tensor is a format error, not a crash.
    let cut = file.data_offset + file.tensor_info(last).unwrap().offset;
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(cut as u64).unwrap();
    for (name, ..) in &tensors {
        match file.tensor_f32(name) {
            Err(e @ OptimaError::Format { .. }) => assert!(e.to_string().contains("shrank"), "{e}"),
            other => panic!("{name}: expected a format error, got {other:?}"),
        }
        assert!(file.tensor_bytes(name).is_err());
    }
    // Opened again, the short file is refused up front, naming the tensor past its end.
    let msg = is_format_error(GgufFile::read(&path));
    assert!(msg.contains(&format!("{last:?}")) && msg.contains("past the end"), "{msg}");
    // An empty file and a missing one.
    std::fs::write(&path, b"").unwrap();
    is_format_error(GgufFile::read(&path));
    assert!(matches!(GgufFile::read(&dir.path().join("missing.gguf")), Err(OptimaError::Io { .. })));
}

#[test]
fn alignment_from_metadata_is_kept_and_used() {
    let mut md = vec![("general.alignment".to_string(), GgufValue::U64(64)), ("x".to_string(), GgufValue::I8(1))];
    let tensors = odd_tensors();
    let bytes = gguf_bytes(&md, &tensors).unwrap();
    let file = parse(bytes).unwrap();
    assert_eq!(file.alignment, 64);
    assert_eq!(file.data_offset % 64, 0);
    assert!(file.tensors.iter().all(|t| t.offset % 64 == 0));
    // Kept in place, written as u32 (the type llama.cpp requires).
    assert_eq!(file.metadata[0], ("general.alignment".to_string(), GgufValue::U32(64)));
    assert_eq!(file.metadata.len(), 2);
    md[0].1 = GgufValue::U32(48);
    assert!(matches!(gguf_bytes(&md, &tensors), Err(OptimaError::InvalidSetting(_))));
}

#[test]
fn writer_refuses_inconsistent_input() {
    let t = |name: &str, dims: Vec<usize>, n: usize| (name.to_string(), dims, GgufTensorData::F32(vec![0.0; n]));
    assert!(matches!(gguf_bytes(&[], &[t("a", vec![2, 3], 5)]), Err(OptimaError::ShapeMismatch { .. })));
    assert!(matches!(gguf_bytes(&[], &[t("a", vec![usize::MAX, 3], 5)]), Err(OptimaError::ShapeMismatch { .. })));
    assert!(matches!(
        gguf_bytes(&[], &[t("a", vec![1], 1), t("a", vec![1], 1)]),
        Err(optima::OptimaError::InvalidSetting(_))
    ));
    assert!(matches!(gguf_bytes(&[], &[t(&"x".repeat(64), vec![1], 1)]), Err(optima::OptimaError::InvalidSetting(_))));
    assert!(matches!(gguf_bytes(&[], &[t("a", vec![], 1)]), Err(optima::OptimaError::InvalidSetting(_))));
    assert!(matches!(gguf_bytes(&[], &[t("a", vec![1, 1, 1, 1, 1], 1)]), Err(optima::OptimaError::InvalidSetting(_))));
    let mixed = GgufValue::Array(GgufValueType::U8, vec![GgufValue::U8(1), GgufValue::I8(1)]);
    assert!(matches!(gguf_bytes(&[("m".into(), mixed)], &[]), Err(optima::OptimaError::InvalidSetting(_))));
    let dup = vec![("k".to_string(), GgufValue::U8(1)), ("k".to_string(), GgufValue::U8(2))];
    assert!(matches!(gguf_bytes(&dup, &[]), Err(optima::OptimaError::InvalidSetting(_))));
    // A failed write leaves no file behind.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gguf");
    assert!(matches!(write_gguf(&path, &[], &[t("a", vec![2], 3)]), Err(optima::OptimaError::ShapeMismatch { .. })));
    assert!(!path.exists());
}

#[test]
fn metadata_getters_accept_the_widths_real_files_use() {
    let md = vec![
        ("u8".to_string(), GgufValue::U8(7)),
        ("i32".to_string(), GgufValue::I32(30)),
        ("u64".to_string(), GgufValue::U64(576)),
        ("neg".to_string(), GgufValue::I64(-1)),
        ("f32".to_string(), GgufValue::F32(1e-5)),
        ("f64".to_string(), GgufValue::F64(100000.0)),
        ("s".to_string(), GgufValue::String("llama".into())),
        ("b".to_string(), GgufValue::Bool(true)),
        ("tt".to_string(), GgufValue::Array(GgufValueType::I32, vec![GgufValue::I32(1), GgufValue::I32(3)])),
        ("fa".to_string(), GgufValue::Array(GgufValueType::F32, vec![GgufValue::F32(0.25)])),
        ("sa".to_string(), GgufValue::string_array(["x", "y"])),
    ];
    let f = parse(gguf_bytes(&md, &[]).unwrap()).unwrap();
    assert_eq!(f.get_u32("u8").unwrap(), 7);
    assert_eq!(f.get_u32("i32").unwrap(), 30);
    assert_eq!(f.get_usize("u64").unwrap(), 576);
    assert_eq!(f.get_u64("u64").unwrap(), 576);
    assert_eq!(f.get_i64("neg").unwrap(), -1);
    assert!(matches!(f.get_u32("neg"), Err(optima::OptimaError::Format { .. })));
    assert!(matches!(f.get_u64("neg"), Err(optima::OptimaError::Format { .. })));
    assert_eq!(f.get_f32("f32").unwrap(), 1e-5);
    assert_eq!(f.get_f32("f64").unwrap(), 100000.0);
    assert_eq!(f.get_f64("i32").unwrap(), 30.0);
    assert_eq!(f.get_str("s").unwrap(), "llama");
    assert!(f.get_bool("b").unwrap());
    assert_eq!(f.get_i64_array("tt").unwrap(), vec![1, 3]);
    assert_eq!(f.get_f32_array("fa").unwrap(), vec![0.25]);
    assert_eq!(f.get_str_array("sa").unwrap(), vec!["x", "y"]);
    assert_eq!(f.get_array("sa").unwrap().len(), 2);
    // Missing keys and wrong types are format errors naming the key.
    for e in [f.get_u32("missing").unwrap_err(), f.get_str("u8").unwrap_err(), f.get_str_array("tt").unwrap_err()] {
        assert!(matches!(e, OptimaError::Format { .. }), "{e}");
    }
    assert!(f.get_u32("missing").unwrap_err().to_string().contains("missing"));
    assert!(f.get("s").is_some() && f.get("nope").is_none());
}

#[test]
fn tensor_matrix_is_rows_ne1_by_cols_ne0() {
    let values: Vec<f32> = (0..6).map(|i| i as f32).collect();
    let bytes = gguf_bytes(
        &[],
        &[
            ("w".to_string(), vec![3, 2], GgufTensorData::F32(values)),
            ("v".to_string(), vec![4], GgufTensorData::F32(vec![1.0; 4])),
            ("w3".to_string(), vec![2, 2, 1], GgufTensorData::F32(vec![0.0; 4])),
            ("w3d".to_string(), vec![1, 2, 2], GgufTensorData::F32(vec![0.0; 4])),
        ],
    )
    .unwrap();
    let f = parse(bytes).unwrap();
    let m = f.tensor_matrix("w").unwrap();
    assert_eq!(m.dim(), (2, 3));
    assert_eq!(m, ndarray::array![[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]);
    assert_eq!(f.tensor_matrix("w3").unwrap().dim(), (2, 2));
    assert!(matches!(f.tensor_matrix("v"), Err(OptimaError::ShapeMismatch { .. })));
    assert!(matches!(f.tensor_matrix("w3d"), Err(OptimaError::ShapeMismatch { .. })));
    assert_eq!(f.tensor_vector("v").unwrap(), vec![1.0; 4]);
    assert!(matches!(f.tensor_vector("w"), Err(optima::OptimaError::ShapeMismatch { .. })));
    assert!(matches!(f.tensor_f32("nope"), Err(OptimaError::Format { .. })));
}

// ---- the real model --------------------------------------------------------------------------

#[test]
fn real_smollm2_reads_and_dequantizes() {
    let path = assets_dir::smollm2();
    let f = GgufFile::read(&path).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(f.get_u32("llama.block_count").unwrap(), 30);
    assert_eq!(f.get_u32("llama.embedding_length").unwrap(), 576);
    assert_eq!(f.get_u32("llama.feed_forward_length").unwrap(), 1536);
    assert_eq!(f.get_u32("llama.attention.head_count").unwrap(), 9);
    assert_eq!(f.get_u32("llama.attention.head_count_kv").unwrap(), 3);
    assert_eq!(f.get_f32("llama.rope.freq_base").unwrap(), 100000.0);
    assert_eq!(f.get_str_array("tokenizer.ggml.tokens").unwrap().len(), 49152);
    assert_eq!(f.tensors.len(), 272);
    let mut types = std::collections::BTreeSet::new();
    for t in &f.tensors {
        types.insert(format!("{}", t.ggml_type));
        let (dims, v) = f.tensor_f32(&t.name).unwrap();
        assert_eq!(v.len(), dims.iter().product::<usize>());
        assert!(v.iter().all(|x| x.is_finite()), "{} holds non-finite values", t.name);
    }
    assert_eq!(types.into_iter().collect::<Vec<_>>(), vec!["F32", "Q4_1", "Q8_0"]);
    assert_eq!(f.tensor_info("token_embd.weight").unwrap().ggml_type, GgmlType::Q8_0);
    assert_eq!(f.tensor_matrix("token_embd.weight").unwrap().dim(), (49152, 576));
    assert_eq!(f.tensor_matrix("blk.0.attn_k.weight").unwrap().dim(), (192, 576));
    assert_eq!(f.tensor_matrix("blk.0.ffn_down.weight").unwrap().dim(), (576, 1536));
    assert_eq!(f.tensor_vector("output_norm.weight").unwrap().len(), 576);

    // Reference values from llama.cpp's gguf-py (`gguf.quants.dequantize`) on the same file:
    // the first three values, value #12345 (mod size), Σx and Σx² in f64.
    let reference: [(&str, [f64; 3], f64, f64, f64); 4] = [
        (
            "token_embd.weight",
            [-0.10654449462890625, 0.032978057861328125, 0.048198699951171875],
            0.031005859375,
            -15353.04449415207,
            520415.71544763993,
        ),
        (
            "blk.0.attn_q.weight",
            [-0.0963134765625, 0.1573486328125, -0.0963134765625],
            0.12109375,
            59.22322082519531,
            26749.573275085306,
        ),
        (
            "blk.29.ffn_down.weight",
            [-0.2733154296875, 0.186279296875, 0.186279296875],
            -0.04498291015625,
            49.83570861816406,
            29667.074891592143,
        ),
        ("output_norm.weight", [1.7578125, 1.8203125, 1.78125], 1.8046875, 1038.33203125, 1921.7355499267578),
    ];
    for (name, first, at, sum, sumsq) in reference {
        let (_, v) = f.tensor_f32(name).unwrap();
        assert_eq!(v[..3].iter().map(|&x| f64::from(x)).collect::<Vec<_>>(), first, "{name}");
        assert_eq!(f64::from(v[12345 % v.len()]), at, "{name}");
        let s: f64 = v.iter().map(|&x| f64::from(x)).sum();
        let s2: f64 = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        assert!((s - sum).abs() < 1e-6 * (1.0 + sum.abs()), "{name}: Σx {s} vs {sum}");
        assert!((s2 - sumsq).abs() < 1e-9 * sumsq, "{name}: Σx² {s2} vs {sumsq}");
    }

    // Writing all the metadata and a few dequantized tensors back gives the same values.
    let names = ["blk.0.attn_norm.weight", "blk.0.attn_k.weight"];
    let tensors: Vec<_> = names
        .iter()
        .map(|n| {
            let (dims, v) = f.tensor_f32(n).unwrap();
            (n.to_string(), dims, GgufTensorData::F32(v))
        })
        .collect();
    let g = parse(gguf_bytes(&f.metadata, &tensors).unwrap()).unwrap();
    assert_eq!(g.metadata[..f.metadata.len()], f.metadata[..]);
    for n in names {
        assert_eq!(g.tensor_f32(n).unwrap(), f.tensor_f32(n).unwrap());
    }
}
