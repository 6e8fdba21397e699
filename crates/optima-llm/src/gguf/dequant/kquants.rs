//! The K-quants: super-blocks of 256 elements in 16 or 8 sub-blocks, each sub-block with its own
//! small integer scale (and for Q2_K, Q4_K, Q5_K a minimum), those scaled by the super-block's
//! `f16` `d` (and `dmin`). Layouts as in ggml's `block_q*_K`; the arithmetic is done in `f32` in
//! ggml's order (sub-block scale first, `d · sc`, then times the quant), so the values match
//! ggml's reference dequantization bit for bit.
//!
//! Each decoder returns `Option<()>` only so its fields can be read with `?`; the field sizes add
//! up to the block size, so it always returns `Some`.

use super::Fields;

/// `block_q2_K { u8 scales[16]; u8 qs[64]; f16 d; f16 dmin; }`, 2.625 bits per weight.
///
/// Each half of 128 elements takes 32 bytes of `qs`; bit pair `2j` of them (j = 0..4) gives 32
/// elements, the first 16 from bytes 0..16 and the next 16 from bytes 16..32, each group of 16 with
/// the next `scales` byte: low nibble scale `sc`, high nibble minimum `m`;
/// `y = (d · sc) · q − dmin · m`.
pub(super) fn q2_k(x: &[u8; 84], y: &mut [f32; 256]) -> Option<()> {
    let mut f = Fields(x);
    let scales: &[u8; 16] = f.next()?;
    let qs: &[u8; 64] = f.next()?;
    let (d, dmin) = (f.half()?, f.half()?);
    let mut sc = scales.iter();
    for (qs, y) in qs.chunks_exact(32).zip(y.chunks_exact_mut(128)) {
        for (shift, y) in [0u8, 2, 4, 6].into_iter().zip(y.chunks_exact_mut(32)) {
            for (qs, y) in qs.chunks_exact(16).zip(y.chunks_exact_mut(16)) {
                let s = sc.next()?;
                let dl = d * f32::from(s & 0x0f);
                let ml = dmin * f32::from(s >> 4);
                for (&q, y) in qs.iter().zip(y) {
                    *y = dl * f32::from((q >> shift) & 3) - ml;
                }
            }
        }
    }
    Some(())
}

/// `block_q3_K { u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d; }`, 3.4375 bits per weight.
///
/// The low two bits come from `qs` as in Q2_K; the third from bit `4·half + j` of `hmask` (the same
/// 32 bytes for both halves), and a *clear* bit subtracts 4, so quants run −4..=3. Sixteen signed
/// 6-bit scales (stored +32) are packed in `scales`: see [`q3_k_scales`]. `y = (d · sc) · q`.
pub(super) fn q3_k(x: &[u8; 110], y: &mut [f32; 256]) -> Option<()> {
    let mut f = Fields(x);
    let hmask: &[u8; 32] = f.next()?;
    let qs: &[u8; 64] = f.next()?;
    let scales = q3_k_scales(f.next()?)?;
    let d = f.half()?;
    let mut sc = scales.iter();
    for (half, (qs, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(128)).enumerate() {
        for (j, y) in y.chunks_exact_mut(32).enumerate() {
            let shift = 2 * j;
            let mask = 1u8 << (4 * half + j);
            for ((qs, hm), y) in qs.chunks_exact(16).zip(hmask.chunks_exact(16)).zip(y.chunks_exact_mut(16)) {
                let dl = d * f32::from(*sc.next()?);
                for ((&q, &h), y) in qs.iter().zip(hm).zip(y) {
                    let low = ((q >> shift) & 3) as i8;
                    let q = if h & mask != 0 { low } else { low - 4 };
                    *y = dl * f32::from(q);
                }
            }
        }
    }
    Some(())
}

/// Q3_K's sixteen scales, each 6 bits less 32: bytes 0..8 hold the low nibbles (scales 0..8 in
/// the low halves, 8..16 in the high halves), and byte `8 + i % 4` holds the top two bits of
/// scale `i` at bit `2 · (i / 4)`.
fn q3_k_scales(b: &[u8; 12]) -> Option<[i8; 16]> {
    let mut f = Fields(b);
    let low: &[u8; 8] = f.next()?;
    let high: &[u8; 4] = f.next()?;
    let mut out = [0i8; 16];
    for (g, out) in out.chunks_exact_mut(4).enumerate() {
        let low = low.chunks_exact(4).nth(g % 2)?;
        for ((o, &l), &h) in out.iter_mut().zip(low).zip(high) {
            let l = if g < 2 { l & 0x0f } else { l >> 4 };
            let h = (h >> (2 * g)) & 3;
            *o = (l | (h << 4)) as i8 - 32;
        }
    }
    Some(out)
}

/// Q4_K's and Q5_K's eight (scale, minimum) pairs, 6 bits each, in 12 bytes `a[4] b[4] c[4]`:
/// pairs 0..4 are the low 6 bits of `a` and `b`; pairs 4..8 take their low nibbles from `c` (scale
/// low, minimum high) and their top two bits from the top of `a` (scale) and `b` (minimum).
fn scales_mins(s: &[u8; 12]) -> Option<[(u8, u8); 8]> {
    let mut f = Fields(s);
    let a: &[u8; 4] = f.next()?;
    let b: &[u8; 4] = f.next()?;
    let c: &[u8; 4] = f.next()?;
    let mut out = [(0u8, 0u8); 8];
    let (first, second) = out.split_at_mut(4);
    for ((((o1, o2), &a), &b), &c) in first.iter_mut().zip(second).zip(a).zip(b).zip(c) {
        *o1 = (a & 63, b & 63);
        *o2 = ((c & 0x0f) | ((a >> 6) << 4), (c >> 4) | ((b >> 6) << 4));
    }
    Some(out)
}

/// `block_q4_K { f16 d; f16 dmin; u8 scales[12]; u8 qs[128]; }`, 4.5 bits per weight.
///
/// Four runs of 64 elements, each from 32 bytes of `qs`: low nibbles are elements 0..32 with pair
/// `2i`, high nibbles 32..64 with pair `2i + 1` ([`scales_mins`]); `y = (d · sc) · q − dmin · m`.
pub(super) fn q4_k(x: &[u8; 144], y: &mut [f32; 256]) -> Option<()> {
    let mut f = Fields(x);
    let (d, dmin) = (f.half()?, f.half()?);
    let pairs = scales_mins(f.next()?)?;
    let qs: &[u8; 128] = f.next()?;
    for ((qs, y), pair) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).zip(pairs.chunks_exact(2)) {
        let [(s1, m1), (s2, m2)] = *pair else { return None };
        let (d1, m1, d2, m2) = (d * f32::from(s1), dmin * f32::from(m1), d * f32::from(s2), dmin * f32::from(m2));
        let (lo, hi) = y.split_at_mut(32);
        for ((&q, lo), hi) in qs.iter().zip(lo).zip(hi) {
            *lo = d1 * f32::from(q & 0x0f) - m1;
            *hi = d2 * f32::from(q >> 4) - m2;
        }
    }
    Some(())
}

/// `block_q5_K { f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]; }`, 5.5 bits per weight.
///
/// Q4_K with a fifth bit per element: for run `i`, bit `2i` of `qh[l]` belongs to element `l` of
/// the low-nibble half and bit `2i + 1` to element `l` of the high-nibble half.
pub(super) fn q5_k(x: &[u8; 176], y: &mut [f32; 256]) -> Option<()> {
    let mut f = Fields(x);
    let (d, dmin) = (f.half()?, f.half()?);
    let pairs = scales_mins(f.next()?)?;
    let qh: &[u8; 32] = f.next()?;
    let qs: &[u8; 128] = f.next()?;
    let runs = qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).zip(pairs.chunks_exact(2));
    for (i, ((qs, y), pair)) in runs.enumerate() {
        let [(s1, m1), (s2, m2)] = *pair else { return None };
        let (d1, m1, d2, m2) = (d * f32::from(s1), dmin * f32::from(m1), d * f32::from(s2), dmin * f32::from(m2));
        let (u1, u2) = (1u8 << (2 * i), 2u8 << (2 * i));
        let (lo, hi) = y.split_at_mut(32);
        for (((&q, &h), lo), hi) in qs.iter().zip(qh).zip(lo).zip(hi) {
            let q1 = (q & 0x0f) | if h & u1 != 0 { 16 } else { 0 };
            let q2 = (q >> 4) | if h & u2 != 0 { 16 } else { 0 };
            *lo = d1 * f32::from(q1) - m1;
            *hi = d2 * f32::from(q2) - m2;
        }
    }
    Some(())
}

/// `block_q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d; }`, 6.5625 bits per weight.
///
/// Each half of 128 elements takes 64 bytes of `ql`, 32 of `qh` and 8 scales. Its quarter `k`
/// (32 elements) takes the low (k = 0, 1) or high (k = 2, 3) nibbles of `ql[0..32]` (k even) or
/// `ql[32..64]` (k odd), and bits `2k, 2k + 1` of `qh` as bits 4 and 5; quants are stored +32.
/// Elements `l < 16` of a quarter use scale `2k`, the others `2k + 1`; `y = (d · sc) · q`.
pub(super) fn q6_k(x: &[u8; 210], y: &mut [f32; 256]) -> Option<()> {
    let mut f = Fields(x);
    let ql: &[u8; 128] = f.next()?;
    let qh: &[u8; 64] = f.next()?;
    let scales: &[u8; 16] = f.next()?;
    let d = f.half()?;
    let halves = ql.chunks_exact(64).zip(qh.chunks_exact(32)).zip(scales.chunks_exact(8));
    for (((ql, qh), sc), y) in halves.zip(y.chunks_exact_mut(128)) {
        let (ql_even, ql_odd) = ql.split_at(32);
        for (k, y) in y.chunks_exact_mut(32).enumerate() {
            let ql = if k % 2 == 0 { ql_even } else { ql_odd };
            let nibble = if k < 2 { 0 } else { 4 };
            let shift = 2 * k;
            let groups = y.chunks_exact_mut(16).zip(ql.chunks_exact(16)).zip(qh.chunks_exact(16));
            for (((y, ql), qh), &s) in groups.zip(sc.iter().skip(2 * k)) {
                let ds = d * f32::from(s as i8);
                for ((y, &l), &h) in y.iter_mut().zip(ql).zip(qh) {
                    let q = (((l >> nibble) & 0x0f) | (((h >> shift) & 3) << 4)) as i8 - 32;
                    *y = ds * f32::from(q);
                }
            }
        }
    }
    Some(())
}

/// `block_q8_K { f32 d; i8 qs[256]; i16 bsums[16]; }`: `y = d · q` (`bsums`, the sums of groups of
/// 16 quants, only serve ggml's dot products). Its scale is a full `f32`, unlike every other type.
pub(super) fn q8_k(x: &[u8; 292], y: &mut [f32; 256]) -> Option<()> {
    let mut f = Fields(x);
    let d = f32::from_le_bytes(*f.next()?);
    let qs: &[u8; 256] = f.next()?;
    for (y, &q) in y.iter_mut().zip(qs) {
        *y = d * f32::from(q as i8);
    }
    Some(())
}
