//! The K-quants and IQ4 types: known answers from llama.cpp's gguf-py (fixtures written by
//! scripts/kquant-fixtures.py), blocks built by hand from the ggml layouts, and hostile lengths
//! and bytes answered with typed errors.

mod gguf_fixtures;

use std::path::{Path, PathBuf};

use gguf_fixtures::*;
use optima_llm::gguf::{DequantizeError, GgmlType, dequantize};
use proptest::prelude::*;

const K_TYPES: [GgmlType; 8] = [
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
];

// ---- known answers from gguf-py --------------------------------------------------------------

/// One fixture: the type, the raw blocks, and the values gguf-py decodes from them.
struct Fixture {
    ty: GgmlType,
    blocks: Vec<u8>,
    expected: Vec<f32>,
}

fn fixture_path(ty: GgmlType) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/dequant/{}.bin", ty.to_string().to_lowercase()))
}

/// Reads a fixture: `OQFX`, version 1, ggml type, element count n, byte count b, b bytes, n f32.
fn fixture(ty: GgmlType) -> Fixture {
    let path = fixture_path(ty);
    let raw =
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (run scripts/kquant-fixtures.py)", path.display()));
    let u32_at = |i: usize| u32::from_le_bytes(raw[i..i + 4].try_into().unwrap());
    assert_eq!(&raw[..4], b"OQFX", "{}", path.display());
    assert_eq!(u32_at(4), 1, "fixture version");
    assert_eq!(GgmlType::from_u32(u32_at(8)), Some(ty), "{}", path.display());
    let (n, b) = (u32_at(12) as usize, u32_at(16) as usize);
    assert_eq!(raw.len(), 20 + b + 4 * n, "{}: size", path.display());
    let blocks = raw[20..20 + b].to_vec();
    let expected = raw[20 + b..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    Fixture { ty, blocks, expected }
}

/// Bit-for-bit equality, except that any NaN equals any NaN (NaN payloads depend on the order of
/// operands inside numpy's and Rust's arithmetic, not on the format).
fn assert_same_bits(ty: GgmlType, got: &[f32], expected: &[f32]) {
    assert_eq!(got.len(), expected.len(), "{ty}: length");
    for (i, (&g, &e)) in got.iter().zip(expected).enumerate() {
        let same = g.to_bits() == e.to_bits() || (g.is_nan() && e.is_nan());
        assert!(same, "{ty} element {i} (block {}): got {g:e}, gguf-py {e:e}", i / ty.block_size());
    }
}

#[test]
fn k_quants_match_gguf_py_bit_for_bit() {
    for ty in K_TYPES {
        let f = fixture(ty);
        let n = f.expected.len();
        // The fixture is not degenerate: many distinct finite values, both signs.
        let mut finite: Vec<u32> = f.expected.iter().filter(|v| v.is_finite()).map(|v| v.to_bits()).collect();
        finite.sort_unstable();
        finite.dedup();
        assert!(finite.len() > n / 8, "{ty}: only {} distinct finite values", finite.len());
        assert!(f.expected.iter().any(|&v| v < 0.0) && f.expected.iter().any(|&v| v > 0.0), "{ty}");
        let got = dequantize(f.ty, &f.blocks, n).unwrap();
        assert_same_bits(ty, &got, &f.expected);
    }
}

#[test]
fn k_quant_tensors_read_from_a_gguf_file_match_gguf_py() {
    // The same blocks as tensors of a file: [block_size, n_blocks] matrices.
    let mut raw = Raw::new();
    let fixtures: Vec<Fixture> = K_TYPES.iter().map(|&ty| fixture(ty)).collect();
    for f in &fixtures {
        let rows = (f.expected.len() / f.ty.block_size()) as u64;
        raw.tensor(&f.ty.to_string(), &[f.ty.block_size() as u64, rows], f.ty as u32, &f.blocks);
    }
    let file = parse(raw.bytes()).unwrap();
    for f in &fixtures {
        let m = file.tensor_matrix(&f.ty.to_string()).unwrap();
        assert_eq!(m.ncols(), f.ty.block_size());
        assert_same_bits(f.ty, m.as_slice().unwrap(), &f.expected);
    }
}

// ---- blocks built by hand from the ggml layouts ----------------------------------------------

/// The IQ4_NL levels as ggml's `kvalues_iq4nl` lists them.
const IQ4_LEVELS: [f32; 16] =
    [-127., -104., -83., -65., -49., -35., -22., -10., 1., 13., 25., 38., 53., 69., 89., 113.];

#[test]
fn q8_k_block_by_hand() {
    // d = 0.5 as f32, q_j = j − 128, then 32 bytes of bsums that must not matter.
    let mut b = 0.5f32.to_le_bytes().to_vec();
    b.extend((0..256i32).map(|j| (j - 128) as i8 as u8));
    b.extend([0xAB; 32]);
    let y = dequantize(GgmlType::Q8_K, &b, 256).unwrap();
    let expected: Vec<f32> = (0..256).map(|j| (j as f32 - 128.0) * 0.5).collect();
    assert_eq!(y, expected);
}

#[test]
fn q6_k_block_by_hand() {
    // ql = 0x21 everywhere (low nibble 1, high 2); qh = 0b11_10_01_00 gives quarter k the high
    // bits k; scales[i] = i + 1; d = 0.5. Quarter k of a half: nibble 1 (k < 2) or 2, plus 16·k,
    // less 32; scale 8·half + 2·k + (element / 16 within the quarter).
    let mut b = vec![0x21u8; 128];
    b.extend([0b1110_0100u8; 64]);
    b.extend((1..=16u8).map(|s| s as i8 as u8));
    b.extend_from_slice(&h(0.5));
    let y = dequantize(GgmlType::Q6_K, &b, 256).unwrap();
    for (e, &v) in y.iter().enumerate() {
        let (half, k, g) = (e / 128, (e % 128) / 32, (e % 32) / 16);
        let q = if k < 2 { 1 } else { 2 } + 16 * k as i32 - 32;
        let scale = (8 * half + 2 * k + g + 1) as f32;
        assert_eq!(v, 0.5 * scale * q as f32, "element {e}");
    }
    assert_eq!((y[0], y[40], y[255]), (-15.5, -22.5, 144.0));
}

#[test]
fn q3_k_block_by_hand() {
    // Scale i is i + 1 (stored i + 33, packed by hand); every 2-bit quant is 1; hmask bytes
    // alternate 0xFF (high bit set: q = 1) and 0x00 (clear: q = 1 − 4 = −3); d = 0.25.
    let mut hmask = Vec::new();
    for l in 0..32 {
        hmask.push(if l % 2 == 0 { 0xFF } else { 0x00 });
    }
    let mut scales = [0u8; 12];
    for i in 0..16usize {
        let s = (i + 33) as u8;
        if i < 8 {
            scales[i] |= s & 0x0F;
        } else {
            scales[i - 8] |= (s & 0x0F) << 4;
        }
        scales[8 + i % 4] |= (s >> 4) << (2 * (i / 4));
    }
    let mut b = hmask;
    b.extend([0x55u8; 64]);
    b.extend_from_slice(&scales);
    b.extend_from_slice(&h(0.25));
    let y = dequantize(GgmlType::Q3_K, &b, 256).unwrap();
    for (e, &v) in y.iter().enumerate() {
        let sub = e / 16; // 16 sub-blocks of 16 elements, in element order
        let q = if (e % 32) % 2 == 0 { 1.0 } else { -3.0 };
        assert_eq!(v, 0.25 * (sub + 1) as f32 * q, "element {e}");
    }
}

#[test]
fn q2_k_block_by_hand() {
    // scales[i]: scale i % 15 + 1 (low nibble), minimum i % 4 (high nibble); qs = 0b11_10_01_00
    // so the quant of bit pair j is j; d = 0.5, dmin = 2.
    let mut b: Vec<u8> = (0..16u8).map(|i| (i % 15 + 1) | ((i % 4) << 4)).collect();
    b.extend([0b1110_0100u8; 64]);
    b.extend_from_slice(&h(0.5));
    b.extend_from_slice(&h(2.0));
    let y = dequantize(GgmlType::Q2_K, &b, 256).unwrap();
    for (e, &v) in y.iter().enumerate() {
        let (half, j, g) = (e / 128, (e % 128) / 32, (e % 32) / 16);
        let i = 8 * half + 2 * j + g;
        assert_eq!(v, 0.5 * (i % 15 + 1) as f32 * j as f32 - 2.0 * (i % 4) as f32, "element {e}");
    }
}

/// The 12 scale bytes of Q4_K/Q5_K for 8 (scale, minimum) pairs of 6 bits, packed by hand.
fn pack_scales_mins(pairs: [(u8, u8); 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for (j, (sc, m)) in pairs.into_iter().enumerate() {
        if j < 4 {
            s[j] = sc;
            s[j + 4] = m;
        } else {
            s[j + 4] = (sc & 0x0F) | ((m & 0x0F) << 4);
            s[j - 4] |= (sc >> 4) << 6;
            s[j] |= (m >> 4) << 6;
        }
    }
    s
}

#[test]
fn q4_k_and_q5_k_blocks_by_hand() {
    // Pairs with the top bits in use for 4..8: scale 3 + 8·j, minimum 60 − 7·j.
    let pairs: [(u8, u8); 8] = std::array::from_fn(|j| (3 + 8 * j as u8, 60 - 7 * j as u8));
    let qs: Vec<u8> = (0..128).map(|l| ((l % 16) | ((15 - l % 16) << 4)) as u8).collect();
    let mut q4 = h(0.125).to_vec();
    q4.extend_from_slice(&h(0.5));
    q4.extend_from_slice(&pack_scales_mins(pairs));
    q4.extend_from_slice(&qs);
    // Q5_K: bit 2i / 2i + 1 of qh[l] is the fifth bit of run i's low / high element l.
    let qh: Vec<u8> = (0..32).map(|l| (l * 37 + 11) as u8).collect();
    let mut q5 = q4[..16].to_vec();
    q5.extend_from_slice(&qh);
    q5.extend_from_slice(&qs);
    let y4 = dequantize(GgmlType::Q4_K, &q4, 256).unwrap();
    let y5 = dequantize(GgmlType::Q5_K, &q5, 256).unwrap();
    for e in 0..256 {
        let (run, within) = (e / 64, e % 64);
        let (pair, l) = (2 * run + within / 32, within % 32);
        let byte = qs[32 * run + l] as u32;
        let nibble = if within < 32 { byte & 0x0F } else { byte >> 4 };
        let (sc, m) = pairs[pair];
        let fifth = (qh[l] as u32 >> (2 * run + within / 32)) & 1;
        let expect = |q: u32| 0.125 * sc as f32 * q as f32 - 0.5 * m as f32;
        assert_eq!(y4[e], expect(nibble), "Q4_K element {e}");
        assert_eq!(y5[e], expect(nibble + 16 * fifth), "Q5_K element {e}");
    }
}

#[test]
fn iq4_blocks_by_hand() {
    // IQ4_NL: d = 2, qs[j] = j | (15 − j) << 4.
    let mut nl = h(2.0).to_vec();
    nl.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let y = dequantize(GgmlType::IQ4_NL, &nl, 32).unwrap();
    let expected: Vec<f32> =
        (0..16).map(|j| 2.0 * IQ4_LEVELS[j]).chain((0..16).map(|j| 2.0 * IQ4_LEVELS[15 - j])).collect();
    assert_eq!(y, expected);
    // IQ4_XS: sub-block i has the 6-bit scale 32 + i − 3 (low nibble in scales_l, top bits in
    // scales_h); d = 0.5; every sub-block has the IQ4_NL nibbles above.
    let ls: Vec<u16> = (0..8).map(|i| 32 + i - 3).collect();
    let scales_h: u16 = ls.iter().enumerate().map(|(i, &s)| (s >> 4) << (2 * i)).sum();
    let mut xs = h(0.5).to_vec();
    xs.extend_from_slice(&scales_h.to_le_bytes());
    xs.extend((0..4).map(|k| ((ls[2 * k] & 0x0F) | ((ls[2 * k + 1] & 0x0F) << 4)) as u8));
    for _ in 0..8 {
        xs.extend_from_slice(&nl[2..]);
    }
    let y = dequantize(GgmlType::IQ4_XS, &xs, 256).unwrap();
    for (e, &v) in y.iter().enumerate() {
        let (i, j) = (e / 32, e % 32);
        let level = if j < 16 { IQ4_LEVELS[j] } else { IQ4_LEVELS[31 - j] };
        assert_eq!(v, 0.5 * (i as f32 - 3.0) * level, "element {e}");
    }
}

// ---- hostile lengths and bytes ---------------------------------------------------------------

#[test]
fn wrong_lengths_and_partial_blocks_are_typed_errors() {
    for ty in K_TYPES {
        let (block, size) = (ty.block_size(), ty.type_size());
        let bytes = vec![0x5Au8; 2 * size + 1];
        for len in [0, 1, size - 1, size + 1, 2 * size - 1, 2 * size + 1] {
            assert_eq!(
                dequantize(ty, &bytes[..len], 2 * block),
                Err(DequantizeError::WrongLength { ty, elements: 2 * block, needed: 2 * size, found: len }),
                "{ty}: {len} bytes"
            );
        }
        for n in [1, block - 1, block + 1] {
            assert_eq!(
                dequantize(ty, &bytes[..size], n),
                Err(DequantizeError::PartialBlock { ty, elements: n, block }),
                "{ty}: {n} elements"
            );
        }
        assert_eq!(dequantize(ty, &bytes[..2 * size], 2 * block).map(|v| v.len()), Ok(2 * block), "{ty}");
        assert_eq!(dequantize(ty, &[], 0), Ok(vec![]), "{ty}");
    }
}

#[test]
fn truncated_k_quant_files_are_format_errors() {
    let mut raw = Raw::new();
    for ty in K_TYPES {
        raw.tensor(&ty.to_string(), &[ty.block_size() as u64, 2], ty as u32, &vec![0x33; 2 * ty.type_size()]);
    }
    let bytes = raw.bytes();
    let f = parse(bytes.clone()).unwrap();
    let needed = f.tensors.iter().map(|t| f.data_offset + t.offset + t.n_bytes).max().unwrap();
    assert_eq!(needed, bytes.len());
    for len in (0..bytes.len()).step_by(7).chain([bytes.len() - 1]) {
        is_format_error(parse(bytes[..len].to_vec()));
    }
    // A K-quant row that is not whole blocks is refused when the file is read.
    let mut raw = Raw::new();
    raw.tensor("q6", &[128, 2], GgmlType::Q6_K as u32, &[0u8; 210]);
    assert!(is_format_error(parse(raw.bytes())).contains("block size 256"));
}

#[test]
fn many_blocks_decode_as_each_block_alone() {
    // More blocks than one parallel task takes (1024), so the work is split; every block decodes
    // the same as it does alone.
    for ty in K_TYPES {
        let (block, size) = (ty.block_size(), ty.type_size());
        let n_blocks = 2500;
        let bytes: Vec<u8> = (0..n_blocks * size).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8).collect();
        let all = dequantize(ty, &bytes, n_blocks * block).unwrap();
        for b in [0, 1, 1023, 1024, 1025, 2047, 2048, n_blocks - 1] {
            let one = dequantize(ty, &bytes[b * size..(b + 1) * size], block).unwrap();
            let part = &all[b * block..(b + 1) * block];
            assert!(one.iter().zip(part).all(|(x, y)| x.to_bits() == y.to_bits()), "{ty} block {b}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_bytes_and_counts_give_values_or_typed_errors(
        which in 0usize..K_TYPES.len(),
        bytes in proptest::collection::vec(any::<u8>(), 0..1200),
        n in 0usize..1100,
    ) {
        let ty = K_TYPES[which];
        match dequantize(ty, &bytes, n) {
            Ok(v) => {
                prop_assert_eq!(v.len(), n);
                prop_assert_eq!(bytes.len(), n / ty.block_size() * ty.type_size());
            }
            Err(DequantizeError::PartialBlock { .. }) => prop_assert!(n % ty.block_size() != 0),
            Err(DequantizeError::WrongLength { needed, found, .. }) => prop_assert_ne!(needed, found),
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
    }

    #[test]
    fn whole_random_blocks_decode_with_finite_scales_to_finite_values(
        which in 0usize..K_TYPES.len(),
        seed in proptest::collection::vec(any::<u8>(), 292 * 3),
        scale in -8.0f32..8.0,
    ) {
        // Random quants and sub-block scales under a finite super-block scale (and min) give
        // finite values no larger than the format allows.
        let ty = K_TYPES[which];
        let size = ty.type_size();
        let mut bytes = seed[..3 * size].to_vec();
        for block in bytes.chunks_exact_mut(size) {
            let at: &[usize] = match ty {
                GgmlType::Q2_K => &[80, 82],
                GgmlType::Q3_K => &[108],
                GgmlType::Q6_K => &[208],
                GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
                _ => &[0],
            };
            for &a in at {
                block[a..a + 2].copy_from_slice(&h(scale));
            }
            if ty == GgmlType::Q8_K {
                block[..4].copy_from_slice(&scale.to_le_bytes());
            }
        }
        let y = dequantize(ty, &bytes, 3 * ty.block_size()).unwrap();
        // |d| ≤ 8: a sub-block scale ≤ 127 (6 bits or i8) times a quant ≤ 128, plus a min ≤ 63.
        let bound = 8.0 * (127.0 * 128.0 + 63.0);
        prop_assert!(y.iter().all(|v| v.is_finite() && v.abs() <= bound));
    }
}
