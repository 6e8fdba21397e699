//! Encoding `f32` values as GGML Q8_0, the one quantized type optima writes: blocks of 32 values,
//! each `block_q8_0 { f16 d; i8 qs[32]; }` with `d = max|x| / 127` (rounded to f16) and
//! `q = round(x / d)`, so that `d · q` is within `d / 2` of `x` and a zero stays exactly zero.

use half::f16;

use super::GgmlType;
use optima::error::{OptimaError, Result};

/// Values per Q8_0 block.
pub const Q8_0_BLOCK: usize = 32;

/// The Q8_0 bytes of `values` (whole blocks of 32; the caller falls back to another type for a
/// tensor whose rows do not fill them). `name` names the tensor in errors: a length that is not a
/// multiple of 32, or a value that is not finite or too large for an f16 scale.
pub fn quantize_q8_0(name: &str, values: &[f32]) -> Result<Vec<u8>> {
    if values.len() % Q8_0_BLOCK != 0 {
        return Err(OptimaError::shape(
            format!("tensor {name:?} written as Q8_0"),
            format!("a multiple of {Q8_0_BLOCK} elements"),
            values.len().to_string(),
        ));
    }
    let mut out = Vec::with_capacity(values.len() / Q8_0_BLOCK * GgmlType::Q8_0.type_size());
    for (b, block) in values.chunks_exact(Q8_0_BLOCK).enumerate() {
        let amax = block.iter().fold(0.0f32, |m, &x| m.max(x.abs()));
        let d = f16::from_f32(amax / 127.0);
        // NaN escapes `max`: look for it, and for a scale past f16's range, explicitly.
        let bad = block.iter().position(|x| !x.is_finite() || (!d.is_finite() && x.abs() == amax));
        if let Some(col) = bad {
            return Err(OptimaError::NonFinite {
                what: format!("{name} written as Q8_0"),
                row: 0,
                col: b * Q8_0_BLOCK + col,
                value: block.get(col).copied().map_or(f64::NAN, f64::from),
            });
        }
        out.extend_from_slice(&d.to_bits().to_le_bytes());
        // The scale as stored: quantizing against it keeps the error within d / 2 (the clamp only
        // acts when f16 rounded d down, by less than d / 16).
        let scale = d.to_f32();
        let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        out.extend(block.iter().map(|&x| (x * inverse).round().clamp(-127.0, 127.0) as i8 as u8));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::dequantize;

    #[test]
    fn q8_0_round_trips_within_half_a_step_and_keeps_zeros() {
        let mut values: Vec<f32> = (0..96).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013).collect();
        values.iter_mut().step_by(3).for_each(|v| *v = 0.0);
        values[40..72].iter_mut().for_each(|v| *v = 0.0); // a whole block of zeros
        let bytes = quantize_q8_0("t", &values).unwrap();
        assert_eq!(bytes.len(), 3 * 34);
        let back = dequantize(GgmlType::Q8_0, &bytes, values.len()).unwrap();
        for (b, (x, y)) in values.chunks(32).zip(back.chunks(32)).enumerate() {
            let d = f16::from_le_bytes([bytes[34 * b], bytes[34 * b + 1]]).to_f32();
            let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!((d - amax / 127.0).abs() <= amax / 127.0 / 1024.0, "block {b}: d = {d}");
            for (&a, &c) in x.iter().zip(y) {
                assert!((a - c).abs() <= d / 2.0 + 1e-7, "block {b}: {a} -> {c}, d = {d}");
                if a == 0.0 {
                    assert_eq!(c.to_bits(), 0.0f32.to_bits(), "a pruned zero stays +0");
                }
            }
            // The largest magnitude maps to ±127.
            let at = x.iter().position(|v| v.abs() == amax).unwrap();
            assert_eq!((bytes[34 * b + 2 + at] as i8).unsigned_abs(), if amax > 0.0 { 127 } else { 0 });
        }
        assert!(back[40..72].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn q8_0_known_answer() {
        // max |x| = 127 · 0.5: d = 0.5 exactly, q = x / 0.5.
        let values: Vec<f32> = (0..32).map(|i| if i == 5 { -63.5 } else { (i as f32 - 16.0) * 0.5 }).collect();
        let bytes = quantize_q8_0("t", &values).unwrap();
        assert_eq!(&bytes[..2], &f16::from_f32(0.5).to_bits().to_le_bytes());
        assert_eq!(bytes[2 + 5] as i8, -127);
        assert_eq!(bytes[2 + 16] as i8, 0);
        assert_eq!(bytes[2 + 31] as i8, 15);
        assert_eq!(dequantize(GgmlType::Q8_0, &bytes, 32).unwrap(), values);
    }

    #[test]
    fn q8_0_refuses_partial_blocks_and_non_finite_values() {
        assert!(matches!(quantize_q8_0("t", &[0.0; 31]), Err(OptimaError::ShapeMismatch { .. })));
        let mut v = vec![0.5f32; 32];
        v[3] = f32::NAN;
        assert!(matches!(quantize_q8_0("t", &v), Err(OptimaError::NonFinite { .. })));
        v[3] = 1e9;
        assert!(matches!(quantize_q8_0("t", &v), Err(OptimaError::NonFinite { col: 3, .. })));
    }
}
