//! The bounds-checked reader: header, metadata, tensor infos, and tensor data as `f32`.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use ndarray::Array2;

use optima::error::{OptimaError, Result};

use super::source::FileBytes;
use super::*;

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

/// A parsed GGUF file: header, metadata, tensor infos, and the file's bytes for the data (mapped
/// from the file by [`GgufFile::read`], in memory with [`GgufFile::from_bytes`]).
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
    bytes: FileBytes,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .field("bytes", &self.bytes.as_slice().len())
            .field("mapped", &matches!(self.bytes, FileBytes::Mapped { .. }))
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

pub(super) fn format_err(path: &Path, detail: impl Into<String>) -> OptimaError {
    OptimaError::Format { path: path.to_path_buf(), detail: detail.into() }
}

pub(super) fn align_up(x: usize, alignment: usize) -> Option<usize> {
    x.checked_add(alignment - 1).map(|v| v / alignment * alignment)
}

/// Checks an alignment value: a power of two between 1 and 2^30.
pub(super) fn check_alignment(value: &GgufValue) -> std::result::Result<usize, String> {
    match value.as_u64() {
        Some(a) if a.is_power_of_two() && a <= MAX_ALIGNMENT => {
            usize::try_from(a).map_err(|_| format!("{GGUF_ALIGNMENT_KEY} {a} does not fit this machine"))
        }
        _ => Err(format!("{GGUF_ALIGNMENT_KEY} must be a power of two up to 2^30, found {}", value.describe())),
    }
}

impl GgufFile {
    /// Maps the GGUF file at `path` into memory and parses it; tensor data is read from the map
    /// when asked for. The file must not be modified or truncated while the result lives (the
    /// usual assumption of memory-mapped readers): every tensor is checked to lie inside the file
    /// now, and the file's length is checked again before each tensor is read, so a file
    /// truncated in between gives a format error rather than a crash (see `source.rs`).
    pub fn read(path: &Path) -> Result<GgufFile> {
        Self::parse(FileBytes::map(path)?, path)
    }

    /// Parses a GGUF file already in memory; `path` only names the file in errors.
    pub fn from_bytes(bytes: Vec<u8>, path: &Path) -> Result<GgufFile> {
        Self::parse(FileBytes::Owned(bytes), path)
    }

    fn parse(source: FileBytes, path: &Path) -> Result<GgufFile> {
        let bytes = source.as_slice();
        let mut r = Reader { bytes, pos: 0, path };
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
        Ok(GgufFile { version, metadata, tensors, alignment, data_offset, path: path.to_path_buf(), bytes: source })
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
        self.bytes.check_intact(&self.path)?;
        // Checked at parse time; checked again so a hand-edited info cannot index out of bounds.
        self.data_offset
            .checked_add(t.offset)
            .and_then(|start| start.checked_add(t.n_bytes).map(|end| (start, end)))
            .and_then(|(start, end)| self.bytes.as_slice().get(start..end))
            .ok_or_else(|| self.err(format!("tensor {:?} runs past the end of the file", t.name)))
    }

    /// The tensor called `name` as `f32`: its GGUF dims (`ne[0]` first) and its values in storage
    /// order (`ne[0]` fastest). Converts every type in [`GgmlType::DEQUANTIZABLE`] (the plain
    /// floats, the legacy quants, the K-quants and IQ4_NL/IQ4_XS). From a mapped file, the
    /// tensor's pages are released afterwards (they do not stay in this process's memory).
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let t = self.tensor_info(name)?;
        let bytes = self.bytes_of(t)?;
        let values =
            dequantize(t.ggml_type, bytes, t.n_elements).map_err(|d| self.err(format!("tensor {name:?}: {d}")))?;
        self.bytes.release(self.data_offset.saturating_add(t.offset), t.n_bytes);
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
