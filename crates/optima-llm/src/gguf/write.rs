//! The GGUF v3 writer: metadata, tensor infos and `f32`/`f16`/Q8_0 data, written atomically.

use std::collections::HashSet;
use std::path::Path;

use half::f16;

use optima::error::{OptimaError, Result};

use super::read::{align_up, check_alignment};
use super::*;

/// Tensor data for [`write_gguf`].
#[derive(Debug, Clone, PartialEq)]
pub enum GgufTensorData {
    /// Stored as GGML F32.
    F32(Vec<f32>),
    /// Stored as GGML F16.
    F16(Vec<f16>),
    /// GGML Q8_0 blocks as encoded by [`super::quantize_q8_0`] (34 bytes per 32 values).
    Q8_0(Vec<u8>),
}

impl GgufTensorData {
    fn len(&self) -> usize {
        match self {
            GgufTensorData::F32(v) => v.len(),
            GgufTensorData::F16(v) => v.len(),
            GgufTensorData::Q8_0(b) => b.len() / GgmlType::Q8_0.type_size() * GgmlType::Q8_0.block_size(),
        }
    }

    fn ggml_type(&self) -> GgmlType {
        match self {
            GgufTensorData::F32(_) => GgmlType::F32,
            GgufTensorData::F16(_) => GgmlType::F16,
            GgufTensorData::Q8_0(_) => GgmlType::Q8_0,
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
    /// Element type (F32, F16 or Q8_0).
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
        let block = spec.ggml_type.block_size();
        if dims.first().is_some_and(|&ne0| ne0 % block != 0) {
            return Err(bad(format!("tensor {name:?}: rows of {dims:?} do not fill {} blocks", spec.ggml_type)));
        }
        put_string(&mut out, name);
        out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for &d in dims {
            out.extend_from_slice(&(d as u64).to_le_bytes());
        }
        out.extend_from_slice(&(spec.ggml_type as u32).to_le_bytes());
        out.extend_from_slice(&(offset as u64).to_le_bytes());
        offsets.push(offset);
        offset = (n / block)
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
            GgufTensorData::Q8_0(bytes) => {
                if bytes.len() % GgmlType::Q8_0.type_size() != 0 {
                    return Err(OptimaError::Internal(format!("{}: partial Q8_0 block", spec.name)));
                }
                out.write_all(bytes).map_err(io)?;
            }
        }
        position = offset + expected / spec.ggml_type.block_size() * spec.ggml_type.type_size();
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
    optima::io::write_atomically_with(path, |out| {
        out.write_all(&layout.header).map_err(|source| OptimaError::Io { path: path.to_path_buf(), source })?;
        write_gguf_data(out, &layout, tensors, data)
    })
}
