//! The plain types (F32, F16, BF16) and ggml's original 32-element block types: Q4_0, Q4_1,
//! Q5_0, Q5_1 and Q8_0, each block one `f16` scale (and for the `_1` types an `f16` minimum)
//! over 32 quants.

use half::bf16;

use super::half;

/// F32: one little-endian `f32`.
pub(super) fn plain_f32(&x: &[u8; 4], [y]: &mut [f32; 1]) {
    *y = f32::from_le_bytes(x);
}

/// F16: one little-endian IEEE half.
pub(super) fn plain_f16(&x: &[u8; 2], [y]: &mut [f32; 1]) {
    *y = half(x);
}

/// BF16: the top 16 bits of an `f32`.
pub(super) fn plain_bf16(&x: &[u8; 2], [y]: &mut [f32; 1]) {
    *y = bf16::from_le_bytes(x).to_f32();
}

/// `block_q8_0 { f16 d; i8 qs[32]; }`: `d · q`.
pub(super) fn q8_0(x: &[u8; 34], y: &mut [f32; 32]) {
    let [d0, d1, qs @ ..] = x;
    let d = half([*d0, *d1]);
    for (v, &q) in y.iter_mut().zip(qs) {
        *v = f32::from(q as i8) * d;
    }
}

/// `block_q4_0 { f16 d; u8 qs[16]; }`: low nibbles are elements 0..16, high 16..32; `(q − 8) · d`.
pub(super) fn q4_0(x: &[u8; 18], y: &mut [f32; 32]) {
    let [d0, d1, qs @ ..] = x;
    let d = half([*d0, *d1]);
    let (lo, hi) = y.split_at_mut(16);
    for ((&q, lo), hi) in qs.iter().zip(lo).zip(hi) {
        *lo = f32::from(i16::from(q & 0x0f) - 8) * d;
        *hi = f32::from(i16::from(q >> 4) - 8) * d;
    }
}

/// `block_q4_1 { f16 d; f16 m; u8 qs[16]; }`: `q · d + m`.
pub(super) fn q4_1(x: &[u8; 20], y: &mut [f32; 32]) {
    let [d0, d1, m0, m1, qs @ ..] = x;
    let (d, m) = (half([*d0, *d1]), half([*m0, *m1]));
    let (lo, hi) = y.split_at_mut(16);
    for ((&q, lo), hi) in qs.iter().zip(lo).zip(hi) {
        *lo = f32::from(q & 0x0f) * d + m;
        *hi = f32::from(q >> 4) * d + m;
    }
}

/// `block_q5_0 { f16 d; u8 qh[4]; u8 qs[16]; }`: bit j of qh is the 5th bit of element j;
/// `(q − 16) · d`.
pub(super) fn q5_0(x: &[u8; 22], y: &mut [f32; 32]) {
    let [d0, d1, h0, h1, h2, h3, qs @ ..] = x;
    let d = half([*d0, *d1]);
    let qh = u32::from_le_bytes([*h0, *h1, *h2, *h3]);
    let (lo, hi) = y.split_at_mut(16);
    for (j, ((&q, lo), hi)) in qs.iter().zip(lo).zip(hi).enumerate() {
        let (h0, h1) = high_bits(qh, j);
        *lo = f32::from(i16::from((q & 0x0f) | h0) - 16) * d;
        *hi = f32::from(i16::from((q >> 4) | h1) - 16) * d;
    }
}

/// `block_q5_1 { f16 d; f16 m; u8 qh[4]; u8 qs[16]; }`: `q · d + m`.
pub(super) fn q5_1(x: &[u8; 24], y: &mut [f32; 32]) {
    let [d0, d1, m0, m1, h0, h1, h2, h3, qs @ ..] = x;
    let (d, m) = (half([*d0, *d1]), half([*m0, *m1]));
    let qh = u32::from_le_bytes([*h0, *h1, *h2, *h3]);
    let (lo, hi) = y.split_at_mut(16);
    for (j, ((&q, lo), hi)) in qs.iter().zip(lo).zip(hi).enumerate() {
        let (h0, h1) = high_bits(qh, j);
        *lo = f32::from((q & 0x0f) | h0) * d + m;
        *hi = f32::from((q >> 4) | h1) * d + m;
    }
}

/// The 5th bits (as 0 or 16) of elements `j` and `j + 16` (`j < 16`) from a Q5 block's `qh`.
#[inline]
fn high_bits(qh: u32, j: usize) -> (u8, u8) {
    ((((qh >> j) << 4) & 0x10) as u8, ((qh >> (j + 12)) & 0x10) as u8)
}
