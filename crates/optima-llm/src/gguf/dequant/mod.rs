//! ggml tensor types and their decoding to `f32`, following ggml's block layouts: plain and
//! legacy 32-element types in [`legacy`], the 256-element K-quants in [`kquants`], the non-linear
//! 4-bit types in [`iq4`]. Every decoder works on whole fixed-size blocks that [`dequantize`] has
//! checked against the data's length, so no input can make one read out of bounds.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

mod iq4;
mod kquants;
mod legacy;

use std::fmt;

use half::f16;
use rayon::prelude::*;

/// A ggml tensor type (the storage format of a tensor's data).
#[allow(non_camel_case_types, missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ2_XXS = 16,
    IQ2_XS = 17,
    IQ3_XXS = 18,
    IQ1_S = 19,
    IQ4_NL = 20,
    IQ3_S = 21,
    IQ2_S = 22,
    IQ4_XS = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    IQ1_M = 29,
    BF16 = 30,
    TQ1_0 = 34,
    TQ2_0 = 35,
    MXFP4 = 39,
}

impl GgmlType {
    /// The type for an id read from a file, `None` for an unknown id.
    pub fn from_u32(id: u32) -> Option<Self> {
        use GgmlType::*;
        Some(match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            10 => Q2_K,
            11 => Q3_K,
            12 => Q4_K,
            13 => Q5_K,
            14 => Q6_K,
            15 => Q8_K,
            16 => IQ2_XXS,
            17 => IQ2_XS,
            18 => IQ3_XXS,
            19 => IQ1_S,
            20 => IQ4_NL,
            21 => IQ3_S,
            22 => IQ2_S,
            23 => IQ4_XS,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            29 => IQ1_M,
            30 => BF16,
            34 => TQ1_0,
            35 => TQ2_0,
            39 => MXFP4,
            _ => return None,
        })
    }

    /// Elements per block (1 for plain types, 32 or 256 for quantized ones).
    pub fn block_size(self) -> usize {
        use GgmlType::*;
        match self {
            F32 | F16 | BF16 | I8 | I16 | I32 | I64 | F64 => 1,
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | IQ4_NL | MXFP4 => 32,
            _ => 256,
        }
    }

    /// Bytes per block (ggml's `type_size`).
    pub fn type_size(self) -> usize {
        use GgmlType::*;
        match self {
            F32 | I32 => 4,
            F16 | BF16 | I16 => 2,
            I8 => 1,
            I64 | F64 => 8,
            Q4_0 | IQ4_NL => 18,
            Q4_1 => 20,
            Q5_0 => 22,
            Q5_1 => 24,
            Q8_0 => 34,
            MXFP4 => 17,
            Q2_K => 84,
            Q3_K => 110,
            Q4_K => 144,
            Q5_K => 176,
            Q6_K => 210,
            Q8_K => 292,
            IQ2_XXS => 66,
            IQ2_XS => 74,
            IQ3_XXS => 98,
            IQ1_S => 50,
            IQ3_S => 110,
            IQ2_S => 82,
            IQ4_XS => 136,
            IQ1_M => 56,
            TQ1_0 => 54,
            TQ2_0 => 66,
        }
    }

    /// The types [`dequantize`] converts to `f32`.
    pub const DEQUANTIZABLE: [GgmlType; 16] = {
        use GgmlType::*;
        [F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K, IQ4_NL, IQ4_XS]
    };

    /// Whether [`GgufFile::tensor_f32`](super::GgufFile::tensor_f32) can convert this type to
    /// `f32` (one of [`GgmlType::DEQUANTIZABLE`]).
    pub fn can_dequantize(self) -> bool {
        Self::DEQUANTIZABLE.contains(&self)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why tensor data could not be converted to `f32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DequantizeError {
    /// The element count does not fill whole blocks.
    #[error("{elements} elements is not a whole number of {ty} blocks of {block}")]
    PartialBlock {
        /// The tensor type.
        ty: GgmlType,
        /// Elements asked for.
        elements: usize,
        /// Elements per block of `ty`.
        block: usize,
    },
    /// The data's size does not fit in memory arithmetic.
    #[error("{elements} {ty} elements: data size overflows")]
    Overflow {
        /// The tensor type.
        ty: GgmlType,
        /// Elements asked for.
        elements: usize,
    },
    /// The data holds more or fewer bytes than the elements need.
    #[error("{elements} {ty} elements need {needed} bytes, found {found}")]
    WrongLength {
        /// The tensor type.
        ty: GgmlType,
        /// Elements asked for.
        elements: usize,
        /// Bytes they need.
        needed: usize,
        /// Bytes given.
        found: usize,
    },
    /// A type this build cannot decode.
    #[error("type {0} cannot be converted to f32 here (supported: {list})", list = supported_list())]
    Unsupported(GgmlType),
}

/// Converts `n` elements of type `ty` stored in `bytes` to `f32`, following ggml's block layouts.
/// `bytes` must hold exactly `n / block_size * type_size` bytes.
pub fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> std::result::Result<Vec<f32>, DequantizeError> {
    let block = ty.block_size();
    let size = ty.type_size();
    if n % block != 0 {
        return Err(DequantizeError::PartialBlock { ty, elements: n, block });
    }
    let needed = (n / block).checked_mul(size).ok_or(DequantizeError::Overflow { ty, elements: n })?;
    if bytes.len() != needed {
        return Err(DequantizeError::WrongLength { ty, elements: n, needed, found: bytes.len() });
    }
    if !ty.can_dequantize() {
        return Err(DequantizeError::Unsupported(ty));
    }
    let mut out = vec![0f32; n];
    // Work in chunks of whole blocks, in parallel.
    const BLOCKS_PER_TASK: usize = 1024;
    out.par_chunks_mut(block * BLOCKS_PER_TASK)
        .zip(bytes.par_chunks(size * BLOCKS_PER_TASK))
        .for_each(|(y, x)| dequantize_blocks(ty, x, y));
    Ok(out)
}

/// The dequantizable types, comma-separated, for error messages.
fn supported_list() -> String {
    GgmlType::DEQUANTIZABLE.iter().map(GgmlType::to_string).collect::<Vec<_>>().join(", ")
}

/// An `f16` stored little-endian, as `f32`.
#[inline]
fn half(b: [u8; 2]) -> f32 {
    f16::from_le_bytes(b).to_f32()
}

/// Consecutive fixed-size fields of one block, read front to back.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    /// The next `N` bytes; `None` only if the block is shorter than its fields, which the block
    /// sizes rule out (each decoder's fields add up to its `type_size`).
    #[inline]
    fn next<const N: usize>(&mut self) -> Option<&'a [u8; N]> {
        let (field, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(field)
    }

    /// The next two bytes as a little-endian `f16`, converted to `f32`.
    #[inline]
    fn half(&mut self) -> Option<f32> {
        self.next().map(|&b| half(b))
    }
}

/// Applies `f` to each block: `x` holds whole blocks of `X` bytes, `y` receives `Y` values per
/// block. What `f` returns is ignored (the K-quant decoders return `Option<()>` only to read their
/// fields with `?`).
#[inline]
fn for_blocks<const X: usize, const Y: usize, R>(x: &[u8], y: &mut [f32], f: impl Fn(&[u8; X], &mut [f32; Y]) -> R) {
    for (x, y) in x.chunks_exact(X).zip(y.chunks_exact_mut(Y)) {
        // `chunks_exact` yields exactly `X` and `Y` elements, so both conversions succeed.
        if let (Ok(x), Ok(y)) = (x.try_into(), y.try_into()) {
            f(x, y);
        }
    }
}

/// Whole blocks of type `ty`: `x` holds `type_size` bytes per block, `y` receives `block_size`
/// values per block.
fn dequantize_blocks(ty: GgmlType, x: &[u8], y: &mut [f32]) {
    use GgmlType::*;
    match ty {
        F32 => for_blocks(x, y, legacy::plain_f32),
        F16 => for_blocks(x, y, legacy::plain_f16),
        BF16 => for_blocks(x, y, legacy::plain_bf16),
        Q8_0 => for_blocks(x, y, legacy::q8_0),
        Q4_0 => for_blocks(x, y, legacy::q4_0),
        Q4_1 => for_blocks(x, y, legacy::q4_1),
        Q5_0 => for_blocks(x, y, legacy::q5_0),
        Q5_1 => for_blocks(x, y, legacy::q5_1),
        Q2_K => for_blocks(x, y, kquants::q2_k),
        Q3_K => for_blocks(x, y, kquants::q3_k),
        Q4_K => for_blocks(x, y, kquants::q4_k),
        Q5_K => for_blocks(x, y, kquants::q5_k),
        Q6_K => for_blocks(x, y, kquants::q6_k),
        Q8_K => for_blocks(x, y, kquants::q8_k),
        IQ4_NL => for_blocks(x, y, iq4::iq4_nl),
        IQ4_XS => for_blocks(x, y, iq4::iq4_xs),
        // Refused by `dequantize` before any block is touched.
        _ => y.fill(f32::NAN),
    }
}
