//! Loading a Llama model with its tokenizer from GGUF, and writing a pruned model back out
//! (GGUF F32/F16 keeping all metadata, or safetensors).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use half::f16;
use ndarray::Array2;
use safetensors::Dtype;

use super::llama::{LinearKind, LlamaConfig, LlamaModel};
use super::tokenizer::Tokenizer;
use crate::gguf::{GgmlType, GgufFile, GgufTensorData, GgufTensorInfo, GgufTensorSpec, GgufValue, write_gguf_streamed};
use optima::error::{OptimaError, Result};
use optima::io::write_atomically_via;

/// A model file, its Llama weights in f32, and its tokenizer.
pub struct LoadedModel {
    /// The parsed file (metadata and original tensors).
    pub gguf: GgufFile,
    /// The weights, dequantized.
    pub model: LlamaModel,
    /// The tokenizer from the file's metadata.
    pub tokenizer: Tokenizer,
}

/// Reads a Llama GGUF file: weights dequantized to f32, tokenizer from its metadata.
pub fn load_model(path: &Path) -> Result<LoadedModel> {
    if !path.exists() {
        return Err(OptimaError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "model file not found (run ./scripts/fetch-assets.sh to fetch the default model)",
            ),
        });
    }
    let gguf = GgufFile::read(path)?;
    let arch = gguf.get_str("general.architecture")?;
    if arch != "llama" {
        return Err(OptimaError::Format {
            path: path.to_path_buf(),
            detail: format!("architecture is {arch:?}; only llama models are supported"),
        });
    }
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let embd = gguf.tensor_info("token_embd.weight")?;
    let vocab = embd.dims.get(1).copied().unwrap_or(0);
    let config = LlamaConfig::from_metadata(|k| gguf.get(k).and_then(GgufValue::as_f64), vocab)?;
    let model = LlamaModel::from_tensors(
        config,
        |name| gguf.tensor_matrix(name),
        |name| gguf.tensor_vector(name),
        |name| if gguf.tensor_info(name).is_ok() { gguf.tensor_matrix(name).map(Some) } else { Ok(None) },
    )?;
    Ok(LoadedModel { gguf, model, tokenizer })
}

/// Element type of the written linear and embedding weights (norms stay f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightPrecision {
    /// GGML F32: bit-exact pruned weights.
    F32,
    /// GGML F16: half the size; pruned entries stay exactly 0.
    F16,
}

/// The model's current value of a tensor named as in GGUF, if the model holds it.
fn model_tensor<'a>(model: &'a LlamaModel, name: &str) -> Option<&'a [f32]> {
    let as_slice = |a: &'a Array2<f32>| a.as_slice();
    match name {
        "token_embd.weight" => as_slice(&model.token_embd),
        "output_norm.weight" => Some(&model.output_norm),
        "output.weight" => model.output.as_ref().and_then(as_slice),
        _ => {
            let rest = name.strip_prefix("blk.")?;
            let (b, tail) = rest.split_once('.')?;
            let block = model.blocks.get(b.parse::<usize>().ok()?)?;
            match tail {
                "attn_norm.weight" => Some(&block.attn_norm),
                "ffn_norm.weight" => Some(&block.ffn_norm),
                _ => {
                    let kind = LinearKind::ALL.into_iter().find(|k| tail == format!("{}.weight", k.short_name()))?;
                    as_slice(block.weight(kind))
                }
            }
        }
    }
}

/// Writes `model` as GGUF: every tensor of `source` in its order and shape (the model's current
/// values, or the source's own dequantized ones for tensors the model does not hold), all
/// metadata kept, `general.file_type` set to match. Refuses to overwrite `source`'s file.
pub fn write_model_gguf(path: &Path, source: &GgufFile, model: &LlamaModel, precision: WeightPrecision) -> Result<()> {
    refuse_overwrite(path, source.path())?;
    let mut metadata = source.metadata.clone();
    let file_type = GgufValue::U32(match precision {
        WeightPrecision::F32 => 0,
        WeightPrecision::F16 => 1,
    });
    match metadata.iter_mut().find(|(k, _)| k == "general.file_type") {
        Some((_, v)) => *v = file_type,
        None => metadata.push(("general.file_type".into(), file_type)),
    }
    // Matrices go to F16 when asked; vectors (norms) stay F32.
    let half =
        |info: &GgufTensorInfo| precision == WeightPrecision::F16 && info.dims.iter().filter(|&&d| d > 1).count() >= 2;
    let specs: Vec<GgufTensorSpec<'_>> = source
        .tensors
        .iter()
        .map(|info| GgufTensorSpec {
            name: &info.name,
            dims: &info.dims,
            ggml_type: if half(info) { GgmlType::F16 } else { GgmlType::F32 },
        })
        .collect();
    // One tensor converted at a time, so that the output is never whole in memory.
    write_gguf_streamed(path, &metadata, &specs, |i| {
        let info = source.tensors.get(i).ok_or_else(|| OptimaError::Empty(format!("tensor {i}")))?;
        let values: Vec<f32> = match model_tensor(model, &info.name) {
            Some(v) => v.to_vec(),
            None => source.tensor_f32(&info.name)?.1,
        };
        if values.len() != info.n_elements {
            return Err(OptimaError::shape(
                &info.name,
                format!("{} elements", info.n_elements),
                format!("{}", values.len()),
            ));
        }
        Ok(Cow::Owned(if half(info) {
            GgufTensorData::F16(values.iter().map(|&v| f16::from_f32(v)).collect())
        } else {
            GgufTensorData::F32(values)
        }))
    })
}

/// One f32 tensor for safetensors, converted to bytes only when the writer reaches it.
struct F32Tensor<'a> {
    shape: Vec<usize>,
    values: Cow<'a, [f32]>,
}

impl safetensors::View for F32Tensor<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        self.values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into()
    }
    fn data_len(&self) -> usize {
        4 * self.values.len()
    }
}

/// Writes every tensor of `model` as f32 safetensors under its GGUF name ([out, in] matrices),
/// streamed one tensor at a time.
pub fn write_model_safetensors(path: &Path, source: &GgufFile, model: &LlamaModel) -> Result<()> {
    refuse_overwrite(path, source.path())?;
    let mut tensors = Vec::with_capacity(source.tensors.len());
    for info in &source.tensors {
        let values = match model_tensor(model, &info.name) {
            Some(v) => Cow::Borrowed(v),
            None => Cow::Owned(source.tensor_f32(&info.name)?.1),
        };
        tensors.push((info.name.clone(), F32Tensor { shape: info.dims.iter().rev().copied().collect(), values }));
    }
    let metadata = HashMap::from([("producer".to_string(), format!("optima {}", env!("CARGO_PKG_VERSION")))]);
    let format =
        |e: safetensors::SafeTensorError| OptimaError::Format { path: path.to_path_buf(), detail: e.to_string() };
    write_atomically_via(path, |tmp| safetensors::serialize_to_file(tensors, Some(metadata), tmp).map_err(format))
}

fn refuse_overwrite(out: &Path, input: &Path) -> Result<()> {
    let same = match (out.canonicalize(), input.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Err(OptimaError::InvalidSetting(format!(
            "refusing to overwrite the input model {}; choose another --out",
            input.display()
        )));
    }
    Ok(())
}
