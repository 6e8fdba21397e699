//! The safetensors files of a Hugging Face folder: `model.safetensors`, or the shards listed by
//! `model.safetensors.index.json`, memory-mapped and read tensor by tensor as `f32`.
//!
//! Each file's header is parsed and checked once by the `safetensors` crate (offsets inside the
//! file, contiguous, covering it exactly); tensors are then sliced out of the map with checked
//! arithmetic. The mapping assumption of [`crate::gguf::source`] holds here too: a file must not
//! be modified while it is open, and one that shrinks is refused before its bytes are read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors, tensor::Metadata};
use serde::Deserialize;

use crate::gguf::source::FileBytes;
use optima::error::{OptimaError, Result};

/// The single-file checkpoint's name.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// One mapped safetensors file and its parsed header.
struct Shard {
    path: PathBuf,
    bytes: FileBytes,
    /// Where the tensor data starts: 8 bytes of header length, then the header.
    data_start: usize,
    metadata: Metadata,
}

/// A tensor as read: its shape (outermost first, as in PyTorch) and its values in `f32`.
#[derive(Clone, Debug, PartialEq)]
pub struct HfTensor {
    /// The shape, e.g. `[out_features, in_features]` for a linear weight.
    pub shape: Vec<usize>,
    /// The values, row-major.
    pub values: Vec<f32>,
}

/// The safetensors files of one checkpoint, and which holds which tensor.
pub struct Safetensors {
    shards: Vec<Shard>,
    /// Tensor name → index into `shards`.
    location: HashMap<String, usize>,
}

#[derive(Deserialize)]
struct Index {
    weight_map: HashMap<String, String>,
}

impl Safetensors {
    /// Opens the checkpoint in `dir`: the index's shards when `model.safetensors.index.json` is
    /// there, else `model.safetensors`. Every shard the index names must exist and hold the
    /// tensors the index puts in it.
    pub fn open(dir: &Path) -> Result<Safetensors> {
        let index_path = dir.join(INDEX_FILE);
        if !index_path.exists() {
            let shard = Shard::open(&dir.join(SINGLE_FILE))?;
            let location = shard.metadata.tensors().into_keys().map(|name| (name, 0)).collect();
            return Ok(Safetensors { shards: vec![shard], location });
        }
        let text = std::fs::read_to_string(&index_path)
            .map_err(|source| OptimaError::Io { path: index_path.clone(), source })?;
        let index: Index = serde_json::from_str(&text)
            .map_err(|e| OptimaError::Format { path: index_path.clone(), detail: e.to_string() })?;
        let mut files: Vec<&String> = index.weight_map.values().collect();
        files.sort();
        files.dedup();
        let mut shards = Vec::with_capacity(files.len());
        for file in &files {
            // A shard is a plain file name next to the index, never a path elsewhere.
            if Path::new(file.as_str()).file_name() != Some(std::ffi::OsStr::new(file.as_str())) {
                return Err(OptimaError::Format {
                    path: index_path.clone(),
                    detail: format!("shard name {file:?} is not a file name in the folder"),
                });
            }
            shards.push(Shard::open(&dir.join(file.as_str()))?);
        }
        let mut location = HashMap::with_capacity(index.weight_map.len());
        for (name, file) in &index.weight_map {
            let at = files.binary_search(&file).map_err(|_| OptimaError::Internal("shard list".into()))?;
            let holds = shards.get(at).is_some_and(|s| s.metadata.info(name).is_some());
            if !holds {
                return Err(OptimaError::Format {
                    path: dir.join(file.as_str()),
                    detail: format!("the index puts tensor {name:?} here, but the file does not hold it"),
                });
            }
            location.insert(name.clone(), at);
        }
        Ok(Safetensors { shards, location })
    }

    /// Whether the checkpoint holds a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.location.contains_key(name)
    }

    /// The stored dtype of tensor `name`, if the checkpoint holds it.
    pub fn dtype(&self, name: &str) -> Option<Dtype> {
        let shard = self.shards.get(*self.location.get(name)?)?;
        shard.metadata.info(name).map(|info| info.dtype)
    }

    /// The files read, in order.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.shards.iter().map(|s| s.path.as_path())
    }

    /// Bytes of all the files.
    pub fn total_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.bytes.as_slice().len() as u64).sum()
    }

    /// The tensor `name` in `f32`: F32 as is, F16 and BF16 widened exactly; any other dtype is
    /// a format error naming the tensor and its dtype. The tensor's pages are released after.
    pub fn tensor(&self, name: &str) -> Result<HfTensor> {
        let shard = self.location.get(name).and_then(|&i| self.shards.get(i)).ok_or_else(|| OptimaError::Format {
            path: self.shards.first().map(|s| s.path.clone()).unwrap_or_default(),
            detail: format!("tensor {name:?} is missing from the checkpoint"),
        })?;
        shard.tensor(name)
    }
}

impl Shard {
    fn open(path: &Path) -> Result<Shard> {
        if !path.exists() {
            return Err(OptimaError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "safetensors file not found"),
            });
        }
        let bytes = FileBytes::map(path)?;
        let (header_len, metadata) = SafeTensors::read_metadata(bytes.as_slice())
            .map_err(|e| OptimaError::Format { path: path.to_path_buf(), detail: format!("safetensors: {e}") })?;
        let data_start = header_len
            .checked_add(8)
            .ok_or_else(|| OptimaError::Format { path: path.to_path_buf(), detail: "header too long".into() })?;
        Ok(Shard { path: path.to_path_buf(), bytes, data_start, metadata })
    }

    fn tensor(&self, name: &str) -> Result<HfTensor> {
        let format = |detail: String| OptimaError::Format { path: self.path.clone(), detail };
        let info = self.metadata.info(name).ok_or_else(|| format(format!("tensor {name:?} is missing")))?;
        let width: usize = match info.dtype {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            other => {
                return Err(format(format!("tensor {name:?} has dtype {other:?}; only F32, F16 and BF16 are read")));
            }
        };
        let (begin, end) = info.data_offsets;
        let bytes = info.shape.iter().try_fold(width, |n, &d| n.checked_mul(d));
        if bytes.is_none() || end.checked_sub(begin) != bytes {
            return Err(format(format!(
                "tensor {name:?}: shape {:?} does not match its {} bytes",
                info.shape,
                end.saturating_sub(begin)
            )));
        }
        let start = self.data_start.checked_add(begin).ok_or_else(|| format(format!("tensor {name:?}: bad offset")))?;
        let stop = self.data_start.checked_add(end).ok_or_else(|| format(format!("tensor {name:?}: bad offset")))?;
        self.bytes.check_intact(&self.path)?;
        let raw = self
            .bytes
            .as_slice()
            .get(start..stop)
            .ok_or_else(|| format(format!("tensor {name:?} lies outside the file")))?;
        let values: Vec<f32> = match info.dtype {
            // `chunks_exact` hands out chunks of exactly the array's length: the conversions hold.
            Dtype::F32 => raw.chunks_exact(4).map(|c| c.try_into().map_or(0.0, f32::from_le_bytes)).collect(),
            Dtype::F16 => {
                raw.chunks_exact(2).map(|c| c.try_into().map_or(0.0, |b| f16::from_le_bytes(b).to_f32())).collect()
            }
            _ => raw.chunks_exact(2).map(|c| c.try_into().map_or(0.0, |b| bf16::from_le_bytes(b).to_f32())).collect(),
        };
        self.bytes.release(start, stop - start);
        Ok(HfTensor { shape: info.shape.clone(), values })
    }
}
