//! GGUF reader and writer: bit-exact round trips, quantized blocks built byte by byte and checked
//! against values computed by hand, hostile files answered with errors (never panics), and the
//! real SmolLM2 model when `scripts/fetch-assets.sh` has fetched it.

mod assets_dir;

use std::path::Path;

use half::f16;
use optima::OptimaError;
use optima_llm::gguf::{
    DequantizeError, GgmlType, GgufFile, GgufTensorData, GgufValue, GgufValueType, dequantize, gguf_bytes, write_gguf,
};
use proptest::prelude::*;

fn p() -> &'static Path {
    Path::new("test.gguf")
}

fn parse(bytes: Vec<u8>) -> optima::Result<GgufFile> {
    GgufFile::from_bytes(bytes, p())
}

fn is_format_error(r: optima::Result<GgufFile>) -> String {
    match r {
        Err(e @ OptimaError::Format { .. }) => e.to_string(),
        Err(e) => panic!("expected a format error, got {e:?}"),
        Ok(f) => panic!("expected a format error, got a file {f:?}"),
    }
}

// ---- a hand-made GGUF builder, independent of the library's writer --------------------------

#[derive(Default)]
struct Raw {
    version: u32,
    kv: Vec<u8>,
    n_kv: u64,
    infos: Vec<u8>,
    n_tensors: u64,
    data: Vec<u8>,
    alignment: usize,
}

impl Raw {
    fn new() -> Self {
        Raw { version: 3, alignment: 32, ..Default::default() }
    }
    fn string(buf: &mut Vec<u8>, s: &[u8]) {
        buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
        buf.extend_from_slice(s);
    }
    /// A key with a raw type tag and raw value bytes.
    fn kv_raw(&mut self, key: &str, tag: u32, value: &[u8]) -> &mut Self {
        Self::string(&mut self.kv, key.as_bytes());
        self.kv.extend_from_slice(&tag.to_le_bytes());
        self.kv.extend_from_slice(value);
        self.n_kv += 1;
        self
    }
    /// A tensor whose data is appended (aligned) to the data section.
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, data: &[u8]) -> &mut Self {
        let pad = self.data.len().next_multiple_of(self.alignment);
        self.data.resize(pad, 0);
        let offset = self.data.len() as u64;
        self.data.extend_from_slice(data);
        self.tensor_at(name, dims, ty, offset)
    }
    /// A tensor info with an explicit offset and no data.
    fn tensor_at(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        Self::string(&mut self.infos, name.as_bytes());
        self.infos.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            self.infos.extend_from_slice(&d.to_le_bytes());
        }
        self.infos.extend_from_slice(&ty.to_le_bytes());
        self.infos.extend_from_slice(&offset.to_le_bytes());
        self.n_tensors += 1;
        self
    }
    fn bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.n_tensors.to_le_bytes());
        out.extend_from_slice(&self.n_kv.to_le_bytes());
        out.extend_from_slice(&self.kv);
        out.extend_from_slice(&self.infos);
        let start = out.len().next_multiple_of(self.alignment);
        out.resize(start, 0);
        out.extend_from_slice(&self.data);
        out
    }
}

fn h(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_bits().to_le_bytes()
}

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

// ---- quantized blocks, byte by byte ----------------------------------------------------------

#[test]
fn q8_0_blocks_dequantize_by_hand() {
    // Two blocks: d = 0.5 with q = j - 16, and d = -0.25 with q = (-128, 127, 0, 1, ...).
    let mut data = Vec::new();
    data.extend_from_slice(&h(0.5));
    data.extend((0..32).map(|j| (j as i8 - 16) as u8));
    data.extend_from_slice(&h(-0.25));
    let q2: Vec<i8> = (0..32)
        .map(|j| {
            if j == 0 {
                -128
            } else if j == 1 {
                127
            } else {
                (j as i8) - 2
            }
        })
        .collect();
    data.extend(q2.iter().map(|&q| q as u8));
    assert_eq!(data.len(), 2 * 34);
    let mut raw = Raw::new();
    raw.tensor("q8", &[32, 2], 8, &data);
    let f = parse(raw.bytes()).unwrap();
    let (dims, y) = f.tensor_f32("q8").unwrap();
    assert_eq!(dims, vec![32, 2]);
    let mut expected: Vec<f32> = (0..32).map(|j| (j as f32 - 16.0) * 0.5).collect();
    expected.extend(q2.iter().map(|&q| q as f32 * -0.25));
    assert_eq!(y, expected);
    assert_eq!(y[32], 32.0);
    assert_eq!(y[33], -31.75);
}

#[test]
fn q4_0_blocks_dequantize_by_hand() {
    // d = 2; low nibble j, high nibble 15 - j: element j = (j - 8)·2, element j + 16 = (7 - j)·2.
    let mut data = h(2.0).to_vec();
    data.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let mut raw = Raw::new();
    raw.tensor("q4", &[32], 2, &data);
    let f = parse(raw.bytes()).unwrap();
    let (_, y) = f.tensor_f32("q4").unwrap();
    let expected: Vec<f32> =
        (0..16).map(|j| (j as f32 - 8.0) * 2.0).chain((0..16).map(|j| (7.0 - j as f32) * 2.0)).collect();
    assert_eq!(y, expected);
    assert_eq!((y[0], y[15], y[16], y[31]), (-16.0, 14.0, 14.0, -16.0));
}

#[test]
fn q4_1_blocks_dequantize_by_hand() {
    // d = 0.5, m = -1: element j = 0.5·(j) − 1, element j + 16 = 0.5·(15 − j) − 1.
    let mut data = h(0.5).to_vec();
    data.extend_from_slice(&h(-1.0));
    data.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    // Second block: d = 0.125, m = 3, all nibbles 0xF / 0x0.
    data.extend_from_slice(&h(0.125));
    data.extend_from_slice(&h(3.0));
    data.extend(std::iter::repeat_n(0x0Fu8, 16));
    let mut raw = Raw::new();
    raw.tensor("q41", &[64], 3, &data);
    let f = parse(raw.bytes()).unwrap();
    let (_, y) = f.tensor_f32("q41").unwrap();
    let mut expected: Vec<f32> =
        (0..16).map(|j| 0.5 * j as f32 - 1.0).chain((0..16).map(|j| 0.5 * (15 - j) as f32 - 1.0)).collect();
    expected.extend(std::iter::repeat_n(0.125 * 15.0 + 3.0, 16));
    expected.extend(std::iter::repeat_n(3.0, 16));
    assert_eq!(y, expected);
    assert_eq!((y[0], y[15], y[16], y[32], y[48]), (-1.0, 6.5, 6.5, 4.875, 3.0));
}

#[test]
fn q5_and_bf16_blocks_dequantize_by_hand() {
    let qh: u32 = 0xAAAA_5555;
    let bit = |k: u32| ((qh >> k) & 1) as f32 * 16.0;
    // Q5_0: d = 1; element j = (j | bit j << 4) − 16, element j+16 = ((15−j) | bit (j+16) << 4) − 16.
    let mut q50 = h(1.0).to_vec();
    q50.extend_from_slice(&qh.to_le_bytes());
    q50.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    // Q5_1: d = 0.5, m = 1.
    let mut q51 = h(0.5).to_vec();
    q51.extend_from_slice(&h(1.0));
    q51.extend_from_slice(&qh.to_le_bytes());
    q51.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let bf: Vec<u8> = [1.0f32, -2.5, 3.0e38].iter().flat_map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes()).collect();
    let mut raw = Raw::new();
    raw.tensor("q50", &[32], 6, &q50).tensor("q51", &[32], 7, &q51).tensor("bf", &[3], 30, &bf);
    let f = parse(raw.bytes()).unwrap();
    let e50: Vec<f32> = (0..16)
        .map(|j| j as f32 + bit(j) - 16.0)
        .chain((0..16).map(|j| (15 - j) as f32 + bit(j + 16) - 16.0))
        .collect();
    assert_eq!(f.tensor_f32("q50").unwrap().1, e50);
    let e51: Vec<f32> = (0..16)
        .map(|j| (j as f32 + bit(j)) * 0.5 + 1.0)
        .chain((0..16).map(|j| ((15 - j) as f32 + bit(j + 16)) * 0.5 + 1.0))
        .collect();
    assert_eq!(f.tensor_f32("q51").unwrap().1, e51);
    let bfv = f.tensor_f32("bf").unwrap().1;
    assert_eq!(&bfv[..2], &[1.0, -2.5]);
    assert_eq!(bfv[2], f32::from_bits((3.0e38f32.to_bits() >> 16) << 16));
}

#[test]
fn types_without_a_dequantizer_parse_but_refuse_conversion() {
    // One Q6_K block (256 elements, 210 bytes): the layout is known, the conversion is not.
    let mut raw = Raw::new();
    raw.tensor("k", &[256], 14, &[0u8; 210]);
    let f = parse(raw.bytes()).unwrap();
    assert_eq!(f.tensor_info("k").unwrap().ggml_type, GgmlType::Q6_K);
    assert_eq!(f.tensor_bytes("k").unwrap().len(), 210);
    let e = f.tensor_f32("k").unwrap_err();
    assert!(e.to_string().contains("Q6_K"), "{e}");
    assert_eq!(
        dequantize(GgmlType::Q8_0, &[0u8; 33], 32).unwrap_err(),
        DequantizeError::WrongLength { ty: GgmlType::Q8_0, elements: 32, needed: 34, found: 33 }
    );
    assert!(matches!(dequantize(GgmlType::Q8_0, &[0u8; 34], 31), Err(DequantizeError::PartialBlock { block: 32, .. })));
}

// ---- hostile files ---------------------------------------------------------------------------

fn header(version: u32, n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&n_tensors.to_le_bytes());
    b.extend_from_slice(&n_kv.to_le_bytes());
    b
}

#[test]
fn bad_headers_are_format_errors() {
    is_format_error(parse(vec![]));
    is_format_error(parse(b"GGU".to_vec()));
    assert!(is_format_error(parse(b"GGML\x03\0\0\0".to_vec())).contains("not a GGUF"));
    assert!(is_format_error(parse(header(1, 0, 0))).contains("version 1"));
    assert!(is_format_error(parse(header(4, 0, 0))).contains("version 4"));
    assert!(is_format_error(parse(header(3u32.swap_bytes(), 0, 0))).contains("big-endian"));
    is_format_error(parse(header(3, 0, 0)[..20].to_vec()));
    assert!(is_format_error(parse(header(3, 1 << 60, 0))).contains("tensor count"));
    assert!(is_format_error(parse(header(3, 0, u64::MAX))).contains("metadata count"));
    // An empty but well-formed file is fine.
    let f = parse(header(2, 0, 0)).unwrap();
    assert_eq!((f.version, f.metadata.len(), f.tensors.len()), (2, 0, 0));
}

#[test]
fn absurd_lengths_and_counts_are_format_errors() {
    // Key length u64::MAX.
    let mut b = header(3, 0, 1);
    b.extend_from_slice(&u64::MAX.to_le_bytes());
    b.extend_from_slice(&[0u8; 64]);
    assert!(is_format_error(parse(b)).contains("length"));
    // String value length u64::MAX.
    let mut raw = Raw::new();
    raw.kv_raw("s", 8, &u64::MAX.to_le_bytes());
    is_format_error(parse(raw.bytes()));
    // Array element counts that cannot fit.
    for (elem, count) in [(0u32, u64::MAX), (10, 1 << 61), (8, 1 << 40), (9, 1 << 59), (4, 1000)] {
        let mut v = elem.to_le_bytes().to_vec();
        v.extend_from_slice(&count.to_le_bytes());
        v.extend_from_slice(&[0u8; 8]);
        let mut raw = Raw::new();
        raw.kv_raw("a", 9, &v);
        is_format_error(parse(raw.bytes()));
    }
    // Arrays nested 10 000 deep: an error, not a stack overflow.
    let mut v = Vec::new();
    for _ in 0..10_000 {
        v.extend_from_slice(&9u32.to_le_bytes());
        v.extend_from_slice(&1u64.to_le_bytes());
    }
    let mut raw = Raw::new();
    raw.kv_raw("deep", 9, &v);
    assert!(is_format_error(parse(raw.bytes())).contains("nested"));
}

#[test]
fn bad_values_are_format_errors() {
    let cases: Vec<(&str, u32, Vec<u8>)> = vec![
        ("unknown value type", 13, vec![0; 8]),
        ("unknown array element type", 9, [13u32.to_le_bytes().to_vec(), 1u64.to_le_bytes().to_vec()].concat()),
        ("bool 2", 7, vec![2]),
        ("bad utf-8", 8, [2u64.to_le_bytes().to_vec(), vec![0xC3, 0x28]].concat()),
        ("alignment 0", 4, 0u32.to_le_bytes().to_vec()),
    ];
    for (what, tag, value) in cases {
        let mut raw = Raw::new();
        let key = if what.starts_with("alignment") { "general.alignment" } else { "k" };
        raw.kv_raw(key, tag, &value);
        let msg = is_format_error(parse(raw.bytes()));
        assert!(msg.contains("test.gguf"), "{what}: {msg}");
    }
    for (tag, value) in
        [(4u32, 3u32.to_le_bytes().to_vec()), (8, [1u64.to_le_bytes().to_vec(), b"x".to_vec()].concat())]
    {
        let mut raw = Raw::new();
        raw.kv_raw("general.alignment", tag, &value);
        assert!(is_format_error(parse(raw.bytes())).contains("alignment"));
    }
    // A value cut off by the end of the file (no padding after it).
    let mut b = header(3, 0, 1);
    Raw::string(&mut b, b"k");
    b.extend_from_slice(&10u32.to_le_bytes());
    b.extend_from_slice(&[1, 2, 3]);
    assert!(is_format_error(parse(b)).contains("truncated"));
    // Invalid UTF-8 in a key; a duplicate key.
    let mut raw = Raw::new();
    Raw::string(&mut raw.kv, &[0xFF, 0xFE]);
    raw.kv.extend_from_slice(&0u32.to_le_bytes());
    raw.kv.push(0);
    raw.n_kv = 1;
    is_format_error(parse(raw.bytes()));
    let mut raw = Raw::new();
    raw.kv_raw("k", 0, &[1]).kv_raw("k", 0, &[2]);
    assert!(is_format_error(parse(raw.bytes())).contains("twice"));
}

#[test]
fn bad_tensor_infos_are_format_errors() {
    let f32x4 = [0u8; 16];
    type Build<'a> = Box<dyn Fn(&mut Raw) + 'a>;
    let cases: Vec<(&str, Build)> = vec![
        (
            "unknown type 4",
            Box::new(|r: &mut Raw| {
                r.tensor("t", &[4], 4, &f32x4);
            }),
        ),
        (
            "unknown type 99",
            Box::new(|r: &mut Raw| {
                r.tensor("t", &[4], 99, &f32x4);
            }),
        ),
        (
            "5 dims",
            Box::new(|r: &mut Raw| {
                r.tensor("t", &[1, 1, 1, 1, 4], 0, &f32x4);
            }),
        ),
        (
            "dim u64::MAX",
            Box::new(|r: &mut Raw| {
                r.tensor("t", &[u64::MAX], 0, &f32x4);
            }),
        ),
        (
            "dims overflow",
            Box::new(|r: &mut Raw| {
                r.tensor("t", &[1 << 32, 1 << 32, 1 << 32], 0, &f32x4);
            }),
        ),
        (
            "bytes overflow",
            Box::new(|r: &mut Raw| {
                r.tensor("t", &[1 << 62], 0, &f32x4);
            }),
        ),
        (
            "too big",
            Box::new(|r: &mut Raw| {
                r.tensor("t", &[5], 0, &f32x4);
            }),
        ),
        (
            "offset past end",
            Box::new(|r: &mut Raw| {
                r.tensor_at("t", &[1], 0, 1 << 20);
            }),
        ),
        (
            "offset u64::MAX",
            Box::new(|r: &mut Raw| {
                r.tensor_at("t", &[1], 0, u64::MAX);
            }),
        ),
        (
            "offset misaligned",
            Box::new(|r: &mut Raw| {
                r.tensor_at("t", &[1], 0, 4);
            }),
        ),
        (
            "not whole blocks",
            Box::new(|r: &mut Raw| {
                r.tensor("t", &[31], 8, &[0u8; 34]);
            }),
        ),
        (
            "duplicate name",
            Box::new(|r: &mut Raw| {
                r.tensor("t", &[4], 0, &f32x4).tensor("t", &[4], 0, &f32x4);
            }),
        ),
        (
            "bad utf-8 name",
            Box::new(|r: &mut Raw| {
                Raw::string(&mut r.infos, &[0xC0]);
                r.infos.extend_from_slice(&[0u8; 16]);
                r.n_tensors = 1;
            }),
        ),
    ];
    for (what, build) in cases {
        let mut raw = Raw::new();
        build(&mut raw);
        let msg = is_format_error(parse(raw.bytes()));
        assert!(!msg.is_empty(), "{what}");
    }
    // A tensor count larger than the infos present.
    let mut raw = Raw::new();
    raw.tensor("t", &[4], 0, &f32x4);
    raw.n_tensors = 2;
    is_format_error(parse(raw.bytes()));
}

fn valid_file() -> Vec<u8> {
    let mut raw = Raw::new();
    let mut q8 = h(0.5).to_vec();
    q8.extend(0..32u8);
    let mut q41 = h(0.5).to_vec();
    q41.extend_from_slice(&h(-1.0));
    q41.extend(0..16u8);
    raw.kv_raw("general.architecture", 8, &[5u64.to_le_bytes().to_vec(), b"llama".to_vec()].concat())
        .kv_raw("n", 4, &30u32.to_le_bytes())
        .kv_raw(
            "arr",
            9,
            &[8u32.to_le_bytes().to_vec(), 1u64.to_le_bytes().to_vec(), 1u64.to_le_bytes().to_vec(), b"a".to_vec()]
                .concat(),
        )
        .tensor("f", &[2, 2], 0, &[0u8; 16])
        .tensor("h", &[3], 1, &h(1.0).repeat(3))
        .tensor("q8", &[32], 8, &q8)
        .tensor("q41", &[32], 3, &q41);
    raw.bytes()
}

#[test]
fn every_truncation_is_answered() {
    let bytes = valid_file();
    let f = parse(bytes.clone()).unwrap();
    let needed = f.tensors.iter().map(|t| f.data_offset + t.offset + t.n_bytes).max().unwrap();
    for len in 0..bytes.len() {
        let r = parse(bytes[..len].to_vec());
        if len < needed {
            is_format_error(r);
        } else {
            assert!(r.is_ok(), "only padding was cut at {len}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..200), n_t in 0u64..4, n_kv in 0u64..4) {
        let _ = parse(tail.clone());
        let mut b = header(3, n_t, n_kv);
        b.extend_from_slice(&tail);
        if let Ok(f) = parse(b) {
            for t in &f.tensors {
                let _ = f.tensor_f32(&t.name);
            }
        }
    }

    #[test]
    fn mutated_valid_files_never_panic(edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let mut bytes = valid_file();
        for (i, v) in edits {
            let at = i.index(bytes.len());
            bytes[at] = v;
        }
        if let Ok(f) = parse(bytes) {
            for t in f.tensors.clone() {
                let _ = f.tensor_f32(&t.name);
                let _ = f.tensor_matrix(&t.name);
            }
            for (k, _) in f.metadata.clone() {
                let _ = (f.get_u32(&k), f.get_str(&k), f.get_str_array(&k), f.get_i64_array(&k), f.get_f32(&k));
            }
        }
    }
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
