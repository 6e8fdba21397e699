//! Hostile GGUF files: bad headers, absurd counts, bad values and tensor infos, every truncation
//! and random mutations are answered with format errors, never panics.

mod gguf_fixtures;

use gguf_fixtures::*;
use proptest::prelude::*;

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
