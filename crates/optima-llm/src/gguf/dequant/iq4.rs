//! The non-linear 4-bit types: each nibble picks one of 16 fixed levels ([`LEVELS`], ggml's
//! `kvalues_iq4nl`) instead of standing for itself. IQ4_NL has 32-element blocks with one `f16`
//! scale; IQ4_XS has 256-element super-blocks with a 6-bit scale per 32 elements.

use super::Fields;

/// The 16 levels a nibble selects (ggml's `kvalues_iq4nl`), denser near zero.
const LEVELS: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// The level of the nibble `q & 0x0f`, as `f32`.
#[inline]
#[allow(clippy::indexing_slicing)] // a nibble (< 16) always indexes the 16 levels.
fn level(q: u8) -> f32 {
    f32::from(LEVELS[usize::from(q & 0x0f)])
}

/// 16 bytes of nibbles into 32 values: low nibbles are elements 0..16, high 16..32; `y = d · level`.
#[inline]
fn nibbles(d: f32, qs: &[u8], y: &mut [f32]) {
    let (lo, hi) = y.split_at_mut(y.len() / 2);
    for ((&q, lo), hi) in qs.iter().zip(lo).zip(hi) {
        *lo = d * level(q);
        *hi = d * level(q >> 4);
    }
}

/// `block_iq4_nl { f16 d; u8 qs[16]; }`, 4.5 bits per weight.
pub(super) fn iq4_nl(x: &[u8; 18], y: &mut [f32; 32]) -> Option<()> {
    let mut f = Fields(x);
    let d = f.half()?;
    let qs: &[u8; 16] = f.next()?;
    nibbles(d, qs, y);
    Some(())
}

/// `block_iq4_xs { f16 d; u16 scales_h; u8 scales_l[4]; u8 qs[128]; }`, 4.25 bits per weight.
///
/// Sub-block `i` (32 elements, 16 bytes of `qs` as in IQ4_NL) has the 6-bit scale whose low nibble
/// is nibble `i % 2` of `scales_l[i / 2]` and whose top two bits are bits `2i, 2i + 1` of
/// `scales_h`, stored +32; `y = (d · (ls − 32)) · level`.
pub(super) fn iq4_xs(x: &[u8; 136], y: &mut [f32; 256]) -> Option<()> {
    let mut f = Fields(x);
    let d = f.half()?;
    let scales_h = u16::from_le_bytes(*f.next()?);
    let scales_l: &[u8; 4] = f.next()?;
    let qs: &[u8; 128] = f.next()?;
    for (i, (qs, y)) in qs.chunks_exact(16).zip(y.chunks_exact_mut(32)).enumerate() {
        let low = (scales_l.get(i / 2)? >> (4 * (i % 2))) & 0x0f;
        let high = ((scales_h >> (2 * i)) & 3) as u8;
        let ls = i16::from(low | (high << 4)) - 32;
        nibbles(d * f32::from(ls), qs, y);
    }
    Some(())
}
