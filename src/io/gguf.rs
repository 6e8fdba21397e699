//! GGUF files (the llama.cpp model format, versions 2 and 3): a bounds-checked reader that
//! dequantizes tensors to `f32`, and a writer for `f32`/`f16` tensors.
//!
//! The reader treats the file as untrusted: every count, length, dimension and offset is checked
//! against the file's size before anything is allocated, all arithmetic on them is checked, and
//! every problem comes back as [`OptimaError::Format`] naming the file — never a panic.
//!
//! Layout (all little-endian): magic `GGUF`, version `u32`, tensor count `u64`, metadata count
//! `u64`, the metadata key/value pairs, the tensor infos (name, dims with `ne[0]` first, ggml
//! type, offset), padding to `general.alignment` (default 32), then the tensor data, each tensor
//! at an aligned offset from the start of the data section.
//!
//! Dimensions follow ggml: `ne[0]` varies fastest, so a 2-D weight with dims `[n_in, n_out]` is a
//! row-major `[n_out][n_in]` matrix; [`GgufFile::tensor_matrix`] returns it as such.
//!
//! ```no_run
//! use optima::io::gguf::GgufFile;
//! # fn main() -> optima::Result<()> {
//! let file = GgufFile::read(std::path::Path::new("assets/SmolLM2-135M-Instruct.Q4_1.gguf"))?;
//! assert_eq!(file.get_str("general.architecture")?, "llama");
//! let w = file.tensor_matrix("blk.0.attn_q.weight")?; // [out = 576, in = 576]
//! # let _ = w; Ok(()) }
//! ```

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use ndarray::Array2;
use rayon::prelude::*;

use crate::error::{OptimaError, Result};

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// The version [`write_gguf`] writes.
pub const GGUF_VERSION: u32 = 3;
/// Alignment of tensor data when the file does not set `general.alignment`.
pub const GGUF_DEFAULT_ALIGNMENT: usize = 32;
/// The metadata key that sets the alignment of tensor data.
pub const GGUF_ALIGNMENT_KEY: &str = "general.alignment";
/// The most dimensions a ggml tensor has.
pub const GGML_MAX_DIMS: usize = 4;
/// Longest tensor name (in bytes) llama.cpp accepts; the writer refuses longer ones.
pub const GGML_MAX_NAME: usize = 63;
/// How deeply metadata arrays may nest inside each other (real files use one level).
const MAX_ARRAY_DEPTH: usize = 8;
/// Largest alignment accepted from a file.
const MAX_ALIGNMENT: u64 = 1 << 30;

/// The type tag of a metadata value, as stored in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GgufValueType {
    /// `u8`.
    U8 = 0,
    /// `i8`.
    I8 = 1,
    /// `u16`.
    U16 = 2,
    /// `i16`.
    I16 = 3,
    /// `u32`.
    U32 = 4,
    /// `i32`.
    I32 = 5,
    /// `f32`.
    F32 = 6,
    /// One byte, 0 or 1.
    Bool = 7,
    /// `u64` length, then UTF-8 bytes.
    String = 8,
    /// Element type `u32`, `u64` count, then the elements.
    Array = 9,
    /// `u64`.
    U64 = 10,
    /// `i64`.
    I64 = 11,
    /// `f64`.
    F64 = 12,
}

impl GgufValueType {
    /// The type for a tag read from a file, `None` for an unknown tag.
    pub fn from_u32(tag: u32) -> Option<Self> {
        use GgufValueType::*;
        Some(match tag {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The fewest bytes one value of this type takes in a file.
    fn min_size(self) -> usize {
        use GgufValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// `u8`.
    U8(u8),
    /// `i8`.
    I8(i8),
    /// `u16`.
    U16(u16),
    /// `i16`.
    I16(i16),
    /// `u32`.
    U32(u32),
    /// `i32`.
    I32(i32),
    /// `f32`.
    F32(f32),
    /// `bool`.
    Bool(bool),
    /// A UTF-8 string.
    String(String),
    /// An array: the element type (kept so empty arrays round-trip) and the elements, which must
    /// all be of that type.
    Array(GgufValueType, Vec<GgufValue>),
    /// `u64`.
    U64(u64),
    /// `i64`.
    I64(i64),
    /// `f64`.
    F64(f64),
}

impl GgufValue {
    /// The type tag of this value.
    pub fn value_type(&self) -> GgufValueType {
        match self {
            GgufValue::U8(_) => GgufValueType::U8,
            GgufValue::I8(_) => GgufValueType::I8,
            GgufValue::U16(_) => GgufValueType::U16,
            GgufValue::I16(_) => GgufValueType::I16,
            GgufValue::U32(_) => GgufValueType::U32,
            GgufValue::I32(_) => GgufValueType::I32,
            GgufValue::F32(_) => GgufValueType::F32,
            GgufValue::Bool(_) => GgufValueType::Bool,
            GgufValue::String(_) => GgufValueType::String,
            GgufValue::Array(..) => GgufValueType::Array,
            GgufValue::U64(_) => GgufValueType::U64,
            GgufValue::I64(_) => GgufValueType::I64,
            GgufValue::F64(_) => GgufValueType::F64,
        }
    }

    /// An array of strings.
    pub fn string_array<S: Into<String>>(items: impl IntoIterator<Item = S>) -> Self {
        GgufValue::Array(GgufValueType::String, items.into_iter().map(|s| GgufValue::String(s.into())).collect())
    }

    /// The value as an integer if it is one of the integer types (any width, any sign) and fits.
    pub fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            GgufValue::U8(v) => v.into(),
            GgufValue::I8(v) => v.into(),
            GgufValue::U16(v) => v.into(),
            GgufValue::I16(v) => v.into(),
            GgufValue::U32(v) => v.into(),
            GgufValue::I32(v) => v.into(),
            GgufValue::U64(v) => v.into(),
            GgufValue::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// The value as `u64` if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        self.as_i128().and_then(|v| u64::try_from(v).ok())
    }

    /// The value as `i64` if it is an integer of any width that fits.
    pub fn as_i64(&self) -> Option<i64> {
        self.as_i128().and_then(|v| i64::try_from(v).ok())
    }

    /// The value as `f64` if it is a float or an integer.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => self.as_i128().map(|v| v as f64),
        }
    }

    /// The value as a string slice if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The elements if the value is an array.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(_, items) => Some(items),
            _ => None,
        }
    }

    /// The value if it is a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// A short description for error messages: the type, and the value when it is short.
    fn describe(&self) -> String {
        match self {
            GgufValue::String(s) if s.len() <= 40 => format!("string {s:?}"),
            GgufValue::String(s) => format!("string of {} bytes", s.len()),
            GgufValue::Array(t, items) => format!("array of {} {:?}", items.len(), t),
            v => format!("{v:?}"),
        }
    }
}

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

    /// Whether [`GgufFile::tensor_f32`] can convert this type to `f32`.
    pub fn can_dequantize(self) -> bool {
        use GgmlType::*;
        matches!(self, F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Where and what one tensor is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensorInfo {
    /// The tensor's name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// GGUF dims, `ne[0]` (the fastest-varying) first.
    pub dims: Vec<usize>,
    /// Storage type.
    pub ggml_type: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: usize,
    /// Number of elements (product of `dims`).
    pub n_elements: usize,
    /// Number of bytes of data.
    pub n_bytes: usize,
}

/// A parsed GGUF file: header, metadata, tensor infos, and the file's bytes for the data.
pub struct GgufFile {
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata key/value pairs, in file order.
    pub metadata: Vec<(String, GgufValue)>,
    /// Tensor infos, in file order.
    pub tensors: Vec<GgufTensorInfo>,
    /// Alignment of tensor data.
    pub alignment: usize,
    /// Offset of the data section from the start of the file.
    pub data_offset: usize,
    path: PathBuf,
    bytes: Vec<u8>,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

/// A bounds-checked little-endian cursor over the file.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn err(&self, detail: impl Into<String>) -> OptimaError {
        format_err(self.path, detail)
    }

    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n);
        let out = end.and_then(|end| self.bytes.get(self.pos..end)).ok_or_else(|| {
            self.err(format!(
                "truncated: {what} needs {n} bytes at offset {} but the file has {} bytes",
                self.pos,
                self.bytes.len()
            ))
        })?;
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        let [b] = self.array::<1>(what)?;
        Ok(b)
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A `u64` count of items each at least `min_size` bytes long, checked against the bytes left.
    fn count(&mut self, min_size: usize, what: &str) -> Result<usize> {
        let at = self.pos;
        let n = self.u64(what)?;
        let fits = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(min_size).map(|b| (n, b)))
            .filter(|&(_, b)| b <= self.remaining());
        match fits {
            Some((n, _)) => Ok(n),
            None => Err(self.err(format!(
                "{what} {n} at offset {at} is impossible: {} bytes remain, each item needs at least {min_size}",
                self.remaining()
            ))),
        }
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let at = self.pos;
        let len = self.count(1, &format!("length of {what}"))?;
        let raw = self.take(len, what)?;
        String::from_utf8(raw.to_vec()).map_err(|e| self.err(format!("{what} at offset {at} is not valid UTF-8: {e}")))
    }

    fn value(&mut self, ty: GgufValueType, key: &str, depth: usize) -> Result<GgufValue> {
        Ok(match ty {
            GgufValueType::U8 => GgufValue::U8(self.u8(key)?),
            GgufValueType::I8 => GgufValue::I8(self.u8(key)? as i8),
            GgufValueType::U16 => GgufValue::U16(self.u16(key)?),
            GgufValueType::I16 => GgufValue::I16(self.u16(key)? as i16),
            GgufValueType::U32 => GgufValue::U32(self.u32(key)?),
            GgufValueType::I32 => GgufValue::I32(self.u32(key)? as i32),
            GgufValueType::F32 => GgufValue::F32(f32::from_bits(self.u32(key)?)),
            GgufValueType::U64 => GgufValue::U64(self.u64(key)?),
            GgufValueType::I64 => GgufValue::I64(self.u64(key)? as i64),
            GgufValueType::F64 => GgufValue::F64(f64::from_bits(self.u64(key)?)),
            GgufValueType::Bool => {
                let at = self.pos;
                match self.u8(key)? {
                    0 => GgufValue::Bool(false),
                    1 => GgufValue::Bool(true),
                    b => return Err(self.err(format!("metadata {key:?}: bool byte {b} at offset {at} is not 0 or 1"))),
                }
            }
            GgufValueType::String => GgufValue::String(self.string(&format!("metadata {key:?}"))?),
            GgufValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.err(format!("metadata {key:?}: arrays nested deeper than {MAX_ARRAY_DEPTH}")));
                }
                let at = self.pos;
                let tag = self.u32(key)?;
                let elem = GgufValueType::from_u32(tag).ok_or_else(|| {
                    self.err(format!("metadata {key:?}: unknown array element type {tag} at offset {at}"))
                })?;
                let n = self.count(elem.min_size(), &format!("element count of metadata {key:?}"))?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem, key, depth + 1)?);
                }
                GgufValue::Array(elem, items)
            }
        })
    }
}

fn format_err(path: &Path, detail: impl Into<String>) -> OptimaError {
    OptimaError::Format { path: path.to_path_buf(), detail: detail.into() }
}

fn align_up(x: usize, alignment: usize) -> Option<usize> {
    x.checked_add(alignment - 1).map(|v| v / alignment * alignment)
}

/// Checks an alignment value: a power of two between 1 and 2^30.
fn check_alignment(value: &GgufValue) -> std::result::Result<usize, String> {
    match value.as_u64() {
        Some(a) if a.is_power_of_two() && a <= MAX_ALIGNMENT => {
            usize::try_from(a).map_err(|_| format!("{GGUF_ALIGNMENT_KEY} {a} does not fit this machine"))
        }
        _ => Err(format!("{GGUF_ALIGNMENT_KEY} must be a power of two up to 2^30, found {}", value.describe())),
    }
}

impl GgufFile {
    /// Reads and parses the GGUF file at `path`.
    pub fn read(path: &Path) -> Result<GgufFile> {
        let bytes = std::fs::read(path).map_err(|source| OptimaError::Io { path: path.to_path_buf(), source })?;
        Self::from_bytes(bytes, path)
    }

    /// Parses a GGUF file already in memory; `path` only names the file in errors.
    pub fn from_bytes(bytes: Vec<u8>, path: &Path) -> Result<GgufFile> {
        let mut r = Reader { bytes: &bytes, pos: 0, path };
        let magic = r.array::<4>("magic")?;
        if magic != GGUF_MAGIC {
            return Err(r.err(format!("not a GGUF file: it starts with {magic:02x?}, not \"GGUF\"")));
        }
        let version = r.u32("version")?;
        match version {
            2 | 3 => {}
            1 => return Err(r.err("GGUF version 1 is not supported (re-convert the model with a current llama.cpp)")),
            v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
                return Err(r.err("big-endian GGUF files are not supported"));
            }
            v => return Err(r.err(format!("unsupported GGUF version {v} (2 and 3 are read)"))),
        }
        // Minimal sizes: a tensor info is name length + n_dims + type + offset; a metadata pair is
        // key length + type + at least one byte of value.
        let n_tensors = r.count(8 + 4 + 4 + 8, "tensor count")?;
        let n_kv = r.count(8 + 4 + 1, "metadata count")?;

        let mut metadata: Vec<(String, GgufValue)> = Vec::with_capacity(n_kv);
        let mut keys = HashSet::with_capacity(n_kv);
        for i in 0..n_kv {
            let key = r.string(&format!("metadata key #{i}"))?;
            let at = r.pos;
            let tag = r.u32(&key)?;
            let ty = GgufValueType::from_u32(tag)
                .ok_or_else(|| r.err(format!("metadata {key:?}: unknown value type {tag} at offset {at}")))?;
            let value = r.value(ty, &key, 0)?;
            if !keys.insert(key.clone()) {
                return Err(r.err(format!("metadata key {key:?} appears twice")));
            }
            metadata.push((key, value));
        }

        let alignment = match metadata.iter().find(|(k, _)| k == GGUF_ALIGNMENT_KEY) {
            Some((_, v)) => check_alignment(v).map_err(|d| r.err(d))?,
            None => GGUF_DEFAULT_ALIGNMENT,
        };

        let mut tensors: Vec<GgufTensorInfo> = Vec::with_capacity(n_tensors);
        let mut names = HashSet::with_capacity(n_tensors);
        for i in 0..n_tensors {
            let name = r.string(&format!("name of tensor #{i}"))?;
            let what = format!("tensor {name:?}");
            let n_dims = r.u32(&what)?;
            if n_dims as usize > GGML_MAX_DIMS {
                return Err(r.err(format!("{what} has {n_dims} dimensions (at most {GGML_MAX_DIMS})")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            let mut n_elements: usize = 1;
            for _ in 0..n_dims {
                let d = r.u64(&what)?;
                let d = usize::try_from(d)
                    .ok()
                    .filter(|&d| i64::try_from(d).is_ok())
                    .ok_or_else(|| r.err(format!("{what} has an impossible dimension {d}")))?;
                n_elements = n_elements
                    .checked_mul(d)
                    .ok_or_else(|| r.err(format!("{what}: element count overflows (dims so far {dims:?} × {d})")))?;
                dims.push(d);
            }
            let at = r.pos;
            let tag = r.u32(&what)?;
            let ggml_type = GgmlType::from_u32(tag)
                .ok_or_else(|| r.err(format!("{what} has unknown ggml type {tag} (at offset {at})")))?;
            let offset = r.u64(&what)?;
            let offset =
                usize::try_from(offset).map_err(|_| r.err(format!("{what} has offset {offset} past any file")))?;
            let block = ggml_type.block_size();
            let ne0 = dims.first().copied().unwrap_or(1);
            if ne0 % block != 0 {
                return Err(r.err(format!(
                    "{what}: first dimension {ne0} is not a multiple of the {ggml_type} block size {block}"
                )));
            }
            let n_bytes = (n_elements / block)
                .checked_mul(ggml_type.type_size())
                .ok_or_else(|| r.err(format!("{what}: data size overflows")))?;
            if offset % alignment != 0 {
                return Err(
                    r.err(format!("{what}: data offset {offset} is not a multiple of the alignment {alignment}"))
                );
            }
            if !names.insert(name.clone()) {
                return Err(r.err(format!("tensor name {name:?} appears twice")));
            }
            tensors.push(GgufTensorInfo { name, dims, ggml_type, offset, n_elements, n_bytes });
        }

        let data_offset = align_up(r.pos, alignment).ok_or_else(|| r.err("data offset overflows"))?;
        let data_len = bytes.len().saturating_sub(data_offset);
        if !tensors.is_empty() && data_offset > bytes.len() {
            return Err(r.err(format!(
                "truncated: the data section would start at offset {data_offset} but the file has {} bytes",
                bytes.len()
            )));
        }
        for t in &tensors {
            let end = t.offset.checked_add(t.n_bytes);
            if end.is_none_or(|e| e > data_len) {
                return Err(r.err(format!(
                    "tensor {:?} ({} {:?}, {} bytes at data offset {}) runs past the end of the file (data section is {data_len} bytes; truncated download?)",
                    t.name, t.ggml_type, t.dims, t.n_bytes, t.offset
                )));
            }
        }
        Ok(GgufFile { version, metadata, tensors, alignment, data_offset, path: path.to_path_buf(), bytes })
    }

    /// The path the file was read from (or the name given to [`GgufFile::from_bytes`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, detail: impl Into<String>) -> OptimaError {
        format_err(&self.path, detail)
    }

    /// The metadata value under `key`, if present.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn require(&self, key: &str) -> Result<&GgufValue> {
        self.get(key).ok_or_else(|| self.err(format!("metadata key {key:?} is missing")))
    }

    fn wrong_type(&self, key: &str, wanted: &str, found: &GgufValue) -> OptimaError {
        self.err(format!("metadata {key:?} should be {wanted}, found {}", found.describe()))
    }

    /// `key` as `u32`: any integer type whose value fits.
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        let v = self.require(key)?;
        v.as_i128().and_then(|x| u32::try_from(x).ok()).ok_or_else(|| self.wrong_type(key, "an integer fitting u32", v))
    }

    /// `key` as `u64`: any integer type whose value is non-negative.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        v.as_u64().ok_or_else(|| self.wrong_type(key, "a non-negative integer", v))
    }

    /// `key` as `usize`: any integer type whose value fits.
    pub fn get_usize(&self, key: &str) -> Result<usize> {
        let v = self.require(key)?;
        v.as_i128()
            .and_then(|x| usize::try_from(x).ok())
            .ok_or_else(|| self.wrong_type(key, "a non-negative integer", v))
    }

    /// `key` as `i64`: any integer type whose value fits.
    pub fn get_i64(&self, key: &str) -> Result<i64> {
        let v = self.require(key)?;
        v.as_i64().ok_or_else(|| self.wrong_type(key, "an integer fitting i64", v))
    }

    /// `key` as `f32`: an `f32`, `f64` or integer value.
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        let v = self.require(key)?;
        match v {
            GgufValue::F32(x) => Ok(*x),
            _ => v.as_f64().map(|x| x as f32).ok_or_else(|| self.wrong_type(key, "a number", v)),
        }
    }

    /// `key` as `f64`: an `f32`, `f64` or integer value.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        let v = self.require(key)?;
        v.as_f64().ok_or_else(|| self.wrong_type(key, "a number", v))
    }

    /// `key` as `bool`.
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        let v = self.require(key)?;
        v.as_bool().ok_or_else(|| self.wrong_type(key, "a bool", v))
    }

    /// `key` as a string.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| self.wrong_type(key, "a string", v))
    }

    /// `key` as an array.
    pub fn get_array(&self, key: &str) -> Result<&[GgufValue]> {
        let v = self.require(key)?;
        v.as_array().ok_or_else(|| self.wrong_type(key, "an array", v))
    }

    /// `key` as an array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        let items = self.get_array(key)?;
        items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str().ok_or_else(|| {
                    self.err(format!("metadata {key:?}[{i}] should be a string, found {}", v.describe()))
                })
            })
            .collect()
    }

    /// `key` as an array of integers (any integer element type whose values fit `i64`).
    pub fn get_i64_array(&self, key: &str) -> Result<Vec<i64>> {
        let items = self.get_array(key)?;
        items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_i64().ok_or_else(|| {
                    self.err(format!("metadata {key:?}[{i}] should be an integer, found {}", v.describe()))
                })
            })
            .collect()
    }

    /// `key` as an array of numbers converted to `f32` (float or integer elements).
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>> {
        let items = self.get_array(key)?;
        items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                GgufValue::F32(x) => Ok(*x),
                _ => v.as_f64().map(|x| x as f32).ok_or_else(|| {
                    self.err(format!("metadata {key:?}[{i}] should be a number, found {}", v.describe()))
                }),
            })
            .collect()
    }

    /// The names of all tensors, in file order.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|t| t.name.as_str())
    }

    /// The info of the tensor called `name`.
    pub fn tensor_info(&self, name: &str) -> Result<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name).ok_or_else(|| self.err(format!("no tensor named {name:?}")))
    }

    /// The raw bytes of the tensor called `name`, in its storage type.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let t = self.tensor_info(name)?;
        self.bytes_of(t)
    }

    fn bytes_of(&self, t: &GgufTensorInfo) -> Result<&[u8]> {
        // Checked at parse time; checked again so a hand-edited info cannot index out of bounds.
        self.data_offset
            .checked_add(t.offset)
            .and_then(|start| start.checked_add(t.n_bytes).map(|end| (start, end)))
            .and_then(|(start, end)| self.bytes.get(start..end))
            .ok_or_else(|| self.err(format!("tensor {:?} runs past the end of the file", t.name)))
    }

    /// The tensor called `name` as `f32`: its GGUF dims (`ne[0]` first) and its values in storage
    /// order (`ne[0]` fastest). Dequantizes F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1.
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let t = self.tensor_info(name)?;
        let bytes = self.bytes_of(t)?;
        let values =
            dequantize(t.ggml_type, bytes, t.n_elements).map_err(|d| self.err(format!("tensor {name:?}: {d}")))?;
        Ok((t.dims.clone(), values))
    }

    /// The 2-D tensor called `name` as a matrix `[rows = ne[1], cols = ne[0]]` (for a weight with
    /// GGUF dims `[n_in, n_out]`: `[n_out, n_in]`). Trailing dims of size 1 are allowed.
    pub fn tensor_matrix(&self, name: &str) -> Result<Array2<f32>> {
        let t = self.tensor_info(name)?;
        let (cols, rows) = match *t.dims.as_slice() {
            [cols, rows, ref rest @ ..] if rest.iter().all(|&d| d == 1) => (cols, rows),
            _ => {
                return Err(OptimaError::shape(
                    format!("tensor {name:?} in {}", self.path.display()),
                    "2-D",
                    format!("{:?}", t.dims),
                ));
            }
        };
        let (_, values) = self.tensor_f32(name)?;
        Array2::from_shape_vec((rows, cols), values).map_err(|e| self.err(format!("tensor {name:?}: {e}")))
    }

    /// The 1-D tensor called `name` (e.g. a norm weight) as a vector.
    pub fn tensor_vector(&self, name: &str) -> Result<Vec<f32>> {
        let t = self.tensor_info(name)?;
        if t.dims.iter().skip(1).any(|&d| d != 1) {
            return Err(OptimaError::shape(
                format!("tensor {name:?} in {}", self.path.display()),
                "1-D",
                format!("{:?}", t.dims),
            ));
        }
        Ok(self.tensor_f32(name)?.1)
    }
}

/// Converts `n` elements of type `ty` stored in `bytes` to `f32`, following ggml's block layouts.
/// `bytes` must hold exactly `n / block_size * type_size` bytes.
pub fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> std::result::Result<Vec<f32>, String> {
    let block = ty.block_size();
    let size = ty.type_size();
    if n % block != 0 {
        return Err(format!("{n} elements is not a whole number of {ty} blocks of {block}"));
    }
    let needed = (n / block).checked_mul(size).ok_or_else(|| "data size overflows".to_string())?;
    if bytes.len() != needed {
        return Err(format!("{n} {ty} elements need {needed} bytes, found {}", bytes.len()));
    }
    if !ty.can_dequantize() {
        return Err(format!(
            "type {ty} cannot be converted to f32 here (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1)"
        ));
    }
    let mut out = vec![0f32; n];
    // Work in chunks of whole blocks, in parallel.
    const BLOCKS_PER_TASK: usize = 1024;
    out.par_chunks_mut(block * BLOCKS_PER_TASK)
        .zip(bytes.par_chunks(size * BLOCKS_PER_TASK))
        .for_each(|(y, x)| dequantize_blocks(ty, x, y));
    Ok(out)
}

/// An `f16` stored little-endian, as `f32`.
#[inline]
fn half(b: [u8; 2]) -> f32 {
    f16::from_le_bytes(b).to_f32()
}

/// Applies `f` to each block: `x` holds whole blocks of `X` bytes, `y` receives `Y` values per block.
#[inline]
fn for_blocks<const X: usize, const Y: usize>(x: &[u8], y: &mut [f32], f: impl Fn(&[u8; X], &mut [f32; Y])) {
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
    match ty {
        GgmlType::F32 => for_blocks(x, y, |&x: &[u8; 4], [y]: &mut [f32; 1]| *y = f32::from_le_bytes(x)),
        GgmlType::F16 => for_blocks(x, y, |&x: &[u8; 2], [y]: &mut [f32; 1]| *y = half(x)),
        GgmlType::BF16 => for_blocks(x, y, |&x: &[u8; 2], [y]: &mut [f32; 1]| *y = bf16::from_le_bytes(x).to_f32()),
        GgmlType::Q8_0 => for_blocks(x, y, |x: &[u8; 34], y: &mut [f32; 32]| {
            // block_q8_0 { f16 d; i8 qs[32]; }
            let [d0, d1, qs @ ..] = x;
            let d = half([*d0, *d1]);
            for (v, &q) in y.iter_mut().zip(qs) {
                *v = f32::from(q as i8) * d;
            }
        }),
        GgmlType::Q4_0 => for_blocks(x, y, |x: &[u8; 18], y: &mut [f32; 32]| {
            // block_q4_0 { f16 d; u8 qs[16]; }: low nibbles are elements 0..16, high 16..32.
            let [d0, d1, qs @ ..] = x;
            let d = half([*d0, *d1]);
            let (lo, hi) = y.split_at_mut(16);
            for ((&q, lo), hi) in qs.iter().zip(lo).zip(hi) {
                *lo = f32::from(i16::from(q & 0x0f) - 8) * d;
                *hi = f32::from(i16::from(q >> 4) - 8) * d;
            }
        }),
        GgmlType::Q4_1 => for_blocks(x, y, |x: &[u8; 20], y: &mut [f32; 32]| {
            // block_q4_1 { f16 d; f16 m; u8 qs[16]; }
            let [d0, d1, m0, m1, qs @ ..] = x;
            let (d, m) = (half([*d0, *d1]), half([*m0, *m1]));
            let (lo, hi) = y.split_at_mut(16);
            for ((&q, lo), hi) in qs.iter().zip(lo).zip(hi) {
                *lo = f32::from(q & 0x0f) * d + m;
                *hi = f32::from(q >> 4) * d + m;
            }
        }),
        GgmlType::Q5_0 => for_blocks(x, y, |x: &[u8; 22], y: &mut [f32; 32]| {
            // block_q5_0 { f16 d; u8 qh[4]; u8 qs[16]; }: bit j of qh is the 5th bit of element j.
            let [d0, d1, h0, h1, h2, h3, qs @ ..] = x;
            let d = half([*d0, *d1]);
            let qh = u32::from_le_bytes([*h0, *h1, *h2, *h3]);
            let (lo, hi) = y.split_at_mut(16);
            for (j, ((&q, lo), hi)) in qs.iter().zip(lo).zip(hi).enumerate() {
                let h0 = (((qh >> j) << 4) & 0x10) as u8;
                let h1 = ((qh >> (j + 12)) & 0x10) as u8;
                *lo = f32::from(i16::from((q & 0x0f) | h0) - 16) * d;
                *hi = f32::from(i16::from((q >> 4) | h1) - 16) * d;
            }
        }),
        GgmlType::Q5_1 => for_blocks(x, y, |x: &[u8; 24], y: &mut [f32; 32]| {
            // block_q5_1 { f16 d; f16 m; u8 qh[4]; u8 qs[16]; }
            let [d0, d1, m0, m1, h0, h1, h2, h3, qs @ ..] = x;
            let (d, m) = (half([*d0, *d1]), half([*m0, *m1]));
            let qh = u32::from_le_bytes([*h0, *h1, *h2, *h3]);
            let (lo, hi) = y.split_at_mut(16);
            for (j, ((&q, lo), hi)) in qs.iter().zip(lo).zip(hi).enumerate() {
                let h0 = (((qh >> j) << 4) & 0x10) as u8;
                let h1 = ((qh >> (j + 12)) & 0x10) as u8;
                *lo = f32::from((q & 0x0f) | h0) * d + m;
                *hi = f32::from((q >> 4) | h1) * d + m;
            }
        }),
        // Refused by `dequantize` before any block is touched.
        _ => y.fill(f32::NAN),
    }
}

/// Tensor data for [`write_gguf`].
#[derive(Debug, Clone, PartialEq)]
pub enum GgufTensorData {
    /// Stored as GGML F32.
    F32(Vec<f32>),
    /// Stored as GGML F16.
    F16(Vec<f16>),
}

impl GgufTensorData {
    fn len(&self) -> usize {
        match self {
            GgufTensorData::F32(v) => v.len(),
            GgufTensorData::F16(v) => v.len(),
        }
    }

    fn ggml_type(&self) -> GgmlType {
        match self {
            GgufTensorData::F32(_) => GgmlType::F32,
            GgufTensorData::F16(_) => GgmlType::F16,
        }
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &GgufValue, key: &str, depth: usize) -> std::result::Result<(), String> {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => out.extend_from_slice(&x.to_bits().to_le_bytes()),
        GgufValue::Bool(x) => out.push(u8::from(*x)),
        GgufValue::String(s) => put_string(out, s),
        GgufValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => out.extend_from_slice(&x.to_bits().to_le_bytes()),
        GgufValue::Array(elem, items) => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(format!("metadata {key:?}: arrays nested deeper than {MAX_ARRAY_DEPTH}"));
            }
            out.extend_from_slice(&(*elem as u32).to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for (i, item) in items.iter().enumerate() {
                if item.value_type() != *elem {
                    return Err(format!(
                        "metadata {key:?}[{i}] is {:?} in an array of {elem:?} (arrays hold one type)",
                        item.value_type()
                    ));
                }
                put_value(out, item, key, depth + 1)?;
            }
        }
    }
    Ok(())
}

/// What the writer needs of a tensor before its data: name, GGUF dims (`ne[0]` first), type.
#[derive(Clone, Copy, Debug)]
pub struct GgufTensorSpec<'a> {
    /// Tensor name.
    pub name: &'a str,
    /// GGUF dims, `ne[0]` first.
    pub dims: &'a [usize],
    /// Element type (F32 or F16).
    pub ggml_type: GgmlType,
}

/// The header of a GGUF v3 file, padded to the start of the data, with each tensor's data offset
/// (relative to that start) and the data section's length.
struct GgufLayout {
    header: Vec<u8>,
    offsets: Vec<usize>,
    data_len: usize,
}

fn gguf_layout(metadata: &[(String, GgufValue)], tensors: &[GgufTensorSpec<'_>]) -> Result<GgufLayout> {
    let bad = |d: String| OptimaError::InvalidSetting(format!("cannot write GGUF: {d}"));
    let mut alignment = GGUF_DEFAULT_ALIGNMENT;
    let mut kvs: Vec<(&str, GgufValue)> = Vec::with_capacity(metadata.len() + 1);
    let mut keys = HashSet::new();
    for (k, v) in metadata {
        if !keys.insert(k.as_str()) {
            return Err(bad(format!("metadata key {k:?} appears twice")));
        }
        if k == GGUF_ALIGNMENT_KEY {
            alignment = check_alignment(v).map_err(bad)?;
            kvs.push((k, GgufValue::U32(alignment as u32)));
        } else {
            kvs.push((k, v.clone()));
        }
    }
    if !keys.contains(GGUF_ALIGNMENT_KEY) {
        kvs.push((GGUF_ALIGNMENT_KEY, GgufValue::U32(alignment as u32)));
    }

    let mut out = Vec::new();
    out.extend_from_slice(&GGUF_MAGIC);
    out.extend_from_slice(&GGUF_VERSION.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for (k, v) in &kvs {
        put_string(&mut out, k);
        out.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
        put_value(&mut out, v, k, 0).map_err(bad)?;
    }

    let mut names = HashSet::new();
    let mut offset = 0usize;
    let mut offsets = Vec::with_capacity(tensors.len());
    for spec in tensors {
        let (name, dims) = (spec.name, spec.dims);
        if name.is_empty() || name.len() > GGML_MAX_NAME {
            return Err(bad(format!("tensor name {name:?} must be 1 to {GGML_MAX_NAME} bytes")));
        }
        if !names.insert(name) {
            return Err(bad(format!("tensor name {name:?} appears twice")));
        }
        if dims.is_empty() || dims.len() > GGML_MAX_DIMS {
            return Err(bad(format!("tensor {name:?} has {} dims (1 to {GGML_MAX_DIMS})", dims.len())));
        }
        let n = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(|| {
            OptimaError::shape(
                format!("tensor {name:?} written to GGUF"),
                "dims whose product fits",
                format!("{dims:?}"),
            )
        })?;
        put_string(&mut out, name);
        out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for &d in dims {
            out.extend_from_slice(&(d as u64).to_le_bytes());
        }
        out.extend_from_slice(&(spec.ggml_type as u32).to_le_bytes());
        out.extend_from_slice(&(offset as u64).to_le_bytes());
        offsets.push(offset);
        offset = n
            .checked_mul(spec.ggml_type.type_size())
            .and_then(|n_bytes| offset.checked_add(n_bytes))
            .and_then(|o| align_up(o, alignment))
            .ok_or_else(|| bad("tensor data too large".into()))?;
    }
    let data_start = align_up(out.len(), alignment).ok_or_else(|| bad("header too large".into()))?;
    out.resize(data_start, 0);
    Ok(GgufLayout { header: out, offsets, data_len: offset })
}

/// Writes the data section: tensor `i`'s values from `data(i)`, checked against its spec, at
/// its aligned offset.
fn write_gguf_data<'d>(
    out: &mut dyn std::io::Write,
    layout: &GgufLayout,
    tensors: &[GgufTensorSpec<'_>],
    mut data: impl FnMut(usize) -> Result<std::borrow::Cow<'d, GgufTensorData>>,
) -> Result<()> {
    let io = |e: std::io::Error| OptimaError::InvalidSetting(format!("cannot write GGUF: {e}"));
    let mut position = 0usize;
    for (i, (spec, &offset)) in tensors.iter().zip(&layout.offsets).enumerate() {
        out.write_all(&vec![0u8; offset.saturating_sub(position)]).map_err(io)?;
        let values = data(i)?;
        let expected = spec.dims.iter().product::<usize>();
        if values.len() != expected || values.ggml_type() != spec.ggml_type {
            return Err(OptimaError::shape(
                format!("tensor {:?} written to GGUF", spec.name),
                format!("{expected} {:?} values for dims {:?}", spec.ggml_type, spec.dims),
                format!("{} {:?} values", values.len(), values.ggml_type()),
            ));
        }
        let mut buffer = Vec::with_capacity(1 << 16);
        match values.as_ref() {
            GgufTensorData::F32(v) => {
                for chunk in v.chunks(1 << 14) {
                    buffer.clear();
                    chunk.iter().for_each(|x| buffer.extend_from_slice(&x.to_le_bytes()));
                    out.write_all(&buffer).map_err(io)?;
                }
            }
            GgufTensorData::F16(v) => {
                for chunk in v.chunks(1 << 15) {
                    buffer.clear();
                    chunk.iter().for_each(|x| buffer.extend_from_slice(&x.to_bits().to_le_bytes()));
                    out.write_all(&buffer).map_err(io)?;
                }
            }
        }
        position = offset + expected * spec.ggml_type.type_size();
    }
    out.write_all(&vec![0u8; layout.data_len.saturating_sub(position)]).map_err(io)
}

fn specs(tensors: &[(String, Vec<usize>, GgufTensorData)]) -> Vec<GgufTensorSpec<'_>> {
    tensors.iter().map(|(name, dims, data)| GgufTensorSpec { name, dims, ggml_type: data.ggml_type() }).collect()
}

/// The bytes of a GGUF v3 file holding `metadata` (all of it, in order) and `tensors`, each given
/// as (name, GGUF dims with `ne[0]` first, data in storage order). `general.alignment` is kept
/// (written as `u32`) when present and appended as 32 when not; tensor data is aligned to it.
pub fn gguf_bytes(
    metadata: &[(String, GgufValue)],
    tensors: &[(String, Vec<usize>, GgufTensorData)],
) -> Result<Vec<u8>> {
    let specs = specs(tensors);
    let layout = gguf_layout(metadata, &specs)?;
    let mut out = layout.header.clone();
    out.reserve(layout.data_len);
    write_gguf_data(&mut out, &layout, &specs, |i| {
        tensors
            .get(i)
            .map(|t| std::borrow::Cow::Borrowed(&t.2))
            .ok_or_else(|| OptimaError::Empty(format!("tensor {i}")))
    })?;
    Ok(out)
}

/// Writes a GGUF v3 file (see [`gguf_bytes`]) to `path` atomically.
pub fn write_gguf(
    path: &Path,
    metadata: &[(String, GgufValue)],
    tensors: &[(String, Vec<usize>, GgufTensorData)],
) -> Result<()> {
    write_gguf_streamed(path, metadata, &specs(tensors), |i| {
        tensors
            .get(i)
            .map(|t| std::borrow::Cow::Borrowed(&t.2))
            .ok_or_else(|| OptimaError::Empty(format!("tensor {i}")))
    })
}

/// Writes a GGUF v3 file to `path` atomically, producing tensor `i`'s data only when the writer
/// reaches it (`data(i)`), so that the file is never whole in memory.
pub fn write_gguf_streamed<'d>(
    path: &Path,
    metadata: &[(String, GgufValue)],
    tensors: &[GgufTensorSpec<'_>],
    data: impl FnMut(usize) -> Result<std::borrow::Cow<'d, GgufTensorData>>,
) -> Result<()> {
    let layout = gguf_layout(metadata, tensors)?;
    super::write_atomically_with(path, |out| {
        out.write_all(&layout.header).map_err(|source| OptimaError::Io { path: path.to_path_buf(), source })?;
        write_gguf_data(out, &layout, tensors, data)
    })
}
