//! GGUF quantized blocks built byte by byte and checked against values computed by hand.

mod gguf_fixtures;

use gguf_fixtures::*;
use optima_llm::gguf::{DequantizeError, GgmlType, dequantize};

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
    // One IQ2_XXS block (256 elements, 66 bytes): the layout is known, the conversion is not.
    let mut raw = Raw::new();
    raw.tensor("k", &[256], 16, &[0u8; 66]);
    let f = parse(raw.bytes()).unwrap();
    assert_eq!(f.tensor_info("k").unwrap().ggml_type, GgmlType::IQ2_XXS);
    assert_eq!(f.tensor_bytes("k").unwrap().len(), 66);
    let e = f.tensor_f32("k").unwrap_err();
    assert!(e.to_string().contains("type IQ2_XXS cannot be converted"), "{e}");
    assert!(e.to_string().contains("Q4_K, Q5_K, Q6_K"), "the message lists what is supported: {e}");
    assert!(!GgmlType::IQ2_XXS.can_dequantize() && GgmlType::Q6_K.can_dequantize());
    assert_eq!(
        dequantize(GgmlType::Q8_0, &[0u8; 33], 32).unwrap_err(),
        DequantizeError::WrongLength { ty: GgmlType::Q8_0, elements: 32, needed: 34, found: 33 }
    );
    assert!(matches!(dequantize(GgmlType::Q8_0, &[0u8; 34], 31), Err(DequantizeError::PartialBlock { block: 32, .. })));
}
