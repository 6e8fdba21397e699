//! Loading a Llama model with its tokenizer from GGUF or a Hugging Face folder, and writing a pruned model back out
//! (GGUF F32/F16/Q8_0 keeping all metadata, safetensors under the GGUF names, or a Hugging Face
//! folder through [`crate::hf::write_checkpoint`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use half::f16;
use ndarray::Array2;
use safetensors::Dtype;

use super::llama::{LinearKind, LlamaConfig, LlamaModel};
use super::tokenizer::Tokenizer;
use crate::gguf::{
    GgmlType, GgufFile, GgufTensorData, GgufTensorInfo, GgufTensorSpec, GgufValue, quantize_q8_0, write_gguf_streamed,
};
use crate::hf::{self, HfCheckpoint, HfTokenizer};
use optima::error::{OptimaError, Result};
use optima::io::write_atomically_via;

/// Where a loaded model came from.
pub enum ModelSource {
    /// A GGUF file (metadata and original tensors).
    Gguf(GgufFile),
    /// A Hugging Face folder.
    HuggingFace(HfCheckpoint),
}

impl ModelSource {
    /// The GGUF file, for a model read from one.
    pub fn gguf(&self) -> Option<&GgufFile> {
        match self {
            ModelSource::Gguf(g) => Some(g),
            ModelSource::HuggingFace(_) => None,
        }
    }

    /// Bytes of the model files that stay mapped while the model is in use (a GGUF file's; a
    /// Hugging Face checkpoint's files are closed once read).
    pub fn mapped_bytes(&self) -> u64 {
        match self {
            ModelSource::Gguf(g) => std::fs::metadata(g.path()).map_or(0, |m| m.len()),
            ModelSource::HuggingFace(_) => 0,
        }
    }
}

/// The tokenizer that came with a model.
pub enum ModelTokenizer {
    /// optima's own byte-level BPE, from a GGUF file's metadata.
    Gguf(Box<Tokenizer>),
    /// A `tokenizer.json`, run by the `tokenizers` crate.
    HuggingFace(Box<HfTokenizer>),
}

impl ModelTokenizer {
    /// The ids of `text`, no BOS added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            ModelTokenizer::Gguf(t) => Ok(t.encode(text)),
            ModelTokenizer::HuggingFace(t) => t.encode(text),
        }
    }
}

/// A model, its Llama weights in f32, and its tokenizer.
pub struct LoadedModel {
    /// The file or folder it was read from.
    pub source: ModelSource,
    /// The weights, dequantized, in the GGUF layout.
    pub model: LlamaModel,
    /// Its tokenizer.
    pub tokenizer: ModelTokenizer,
}

impl LoadedModel {
    /// The GGUF file, for a model read from one.
    pub fn gguf(&self) -> Option<&GgufFile> {
        self.source.gguf()
    }
}

/// Reads a model: a Hugging Face folder (or its `config.json`, see [`crate::hf`]), else a Llama
/// GGUF file ([`load_gguf`]).
pub fn load_model(path: &Path) -> Result<LoadedModel> {
    if hf::is_checkpoint_path(path) {
        let loaded = hf::load(path)?;
        return Ok(LoadedModel {
            source: ModelSource::HuggingFace(loaded.checkpoint),
            model: loaded.model,
            tokenizer: ModelTokenizer::HuggingFace(Box::new(loaded.tokenizer)),
        });
    }
    let (gguf, model, tokenizer) = load_gguf(path)?;
    Ok(LoadedModel { source: ModelSource::Gguf(gguf), model, tokenizer: ModelTokenizer::Gguf(Box::new(tokenizer)) })
}

/// Reads a Llama GGUF file: weights dequantized to f32, tokenizer from its metadata.
pub fn load_gguf(path: &Path) -> Result<(GgufFile, LlamaModel, Tokenizer)> {
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
    Ok((gguf, model, tokenizer))
}

/// Element type of the written linear and embedding weights (norms stay f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightPrecision {
    /// GGML F32: bit-exact pruned weights.
    F32,
    /// GGML F16: half the size; pruned entries stay exactly 0.
    F16,
    /// GGML Q8_0 (a tensor whose rows do not fill 32-value blocks goes to F16): about a quarter
    /// of F32; pruned entries stay exactly 0.
    Q8_0,
    /// Each tensor in its own type in the source file where that is F32, F16 or Q8_0; F32 for
    /// the types optima cannot encode (the K-quants, Q4_0, …).
    Source,
}

impl std::str::FromStr for WeightPrecision {
    type Err = OptimaError;
    fn from_str(s: &str) -> Result<WeightPrecision> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(WeightPrecision::F32),
            "f16" => Ok(WeightPrecision::F16),
            "q8_0" => Ok(WeightPrecision::Q8_0),
            "source" => Ok(WeightPrecision::Source),
            other => Err(OptimaError::InvalidSetting(format!("GGUF type {other:?}: use f32, f16, q8_0 or source"))),
        }
    }
}

impl WeightPrecision {
    /// The type a tensor of `source` is written in: vectors (norms, biases) stay F32.
    pub fn tensor_type(self, info: &GgufTensorInfo) -> GgmlType {
        let matrix = info.dims.iter().filter(|&&d| d > 1).count() >= 2;
        let fills_q8 = info.dims.first().is_some_and(|&ne0| ne0 % GgmlType::Q8_0.block_size() == 0);
        match (self, info.ggml_type) {
            _ if !matrix => GgmlType::F32,
            (WeightPrecision::F32, _) => GgmlType::F32,
            (WeightPrecision::F16, _) => GgmlType::F16,
            (WeightPrecision::Q8_0, _) => {
                if fills_q8 {
                    GgmlType::Q8_0
                } else {
                    GgmlType::F16
                }
            }
            (WeightPrecision::Source, GgmlType::F16) => GgmlType::F16,
            (WeightPrecision::Source, GgmlType::Q8_0) if fills_q8 => GgmlType::Q8_0,
            (WeightPrecision::Source, _) => GgmlType::F32,
        }
    }
}

/// llama.cpp's `general.file_type` (`llama_ftype`) for a file mostly of `ty`.
fn file_type_of(ty: GgmlType) -> u32 {
    match ty {
        GgmlType::F16 => 1,
        GgmlType::Q8_0 => 7,
        _ => 0,
    }
}

/// The model's current value of a tensor named as in GGUF, if the model holds it.
pub(crate) fn model_tensor<'a>(model: &'a LlamaModel, name: &str) -> Option<&'a [f32]> {
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
                    let (short, suffix) = tail.split_once('.')?;
                    let kind = LinearKind::ALL.into_iter().find(|k| k.short_name() == short)?;
                    match suffix {
                        "weight" => as_slice(block.weight(kind)),
                        "bias" => block.qkv_bias.as_ref()?.of(kind),
                        _ => None,
                    }
                }
            }
        }
    }
}

/// Writes `model` as GGUF: every tensor of `source` in its order and shape (the model's current
/// values, or the source's own dequantized ones for tensors the model does not hold), all
/// metadata kept, each tensor in the type `precision` gives it ([`WeightPrecision::tensor_type`]),
/// `general.file_type` set to the type of most of the matrices' elements. Refuses to overwrite
/// `source`'s file.
pub fn write_model_gguf(path: &Path, source: &GgufFile, model: &LlamaModel, precision: WeightPrecision) -> Result<()> {
    refuse_overwrite(path, source.path())?;
    let mut metadata = source.metadata.clone();
    let types: Vec<GgmlType> = source.tensors.iter().map(|info| precision.tensor_type(info)).collect();
    let mut elements: HashMap<u32, usize> = HashMap::new();
    for (info, ty) in source.tensors.iter().zip(&types) {
        if info.dims.iter().filter(|&&d| d > 1).count() >= 2 {
            *elements.entry(file_type_of(*ty)).or_default() += info.n_elements;
        }
    }
    let most = elements.into_iter().max_by_key(|&(ty, n)| (n, ty)).map_or(0, |(ty, _)| ty);
    let file_type = GgufValue::U32(most);
    match metadata.iter_mut().find(|(k, _)| k == "general.file_type") {
        Some((_, v)) => *v = file_type,
        None => metadata.push(("general.file_type".into(), file_type)),
    }
    let specs: Vec<GgufTensorSpec<'_>> = source
        .tensors
        .iter()
        .zip(&types)
        .map(|(info, &ggml_type)| GgufTensorSpec { name: &info.name, dims: &info.dims, ggml_type })
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
        Ok(Cow::Owned(match types.get(i) {
            Some(GgmlType::F16) => GgufTensorData::F16(values.iter().map(|&v| f16::from_f32(v)).collect()),
            Some(GgmlType::Q8_0) => GgufTensorData::Q8_0(quantize_q8_0(&info.name, &values)?),
            _ => GgufTensorData::F32(values),
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

/// The GGUF names and shapes (ggml order, `ne[0]` first) of every tensor `model` holds.
pub(crate) fn model_tensor_names(model: &LlamaModel) -> Vec<(String, Vec<usize>)> {
    let c = &model.config;
    let mut out = vec![("token_embd.weight".to_string(), vec![c.hidden, c.vocab])];
    for (b, block) in model.blocks.iter().enumerate() {
        out.push((format!("blk.{b}.attn_norm.weight"), vec![c.hidden]));
        out.push((format!("blk.{b}.ffn_norm.weight"), vec![c.hidden]));
        for kind in LinearKind::ALL {
            let (rows, cols) = kind.shape(c);
            out.push((kind.gguf_name(b), vec![cols, rows]));
            if block.qkv_bias.as_ref().and_then(|q| q.of(kind)).is_some() {
                out.push((format!("blk.{b}.{}.bias", kind.short_name()), vec![rows]));
            }
        }
    }
    out.push(("output_norm.weight".to_string(), vec![c.hidden]));
    if model.output.is_some() {
        out.push(("output.weight".to_string(), vec![c.hidden, c.vocab]));
    }
    out
}

/// Writes every tensor of `model` as f32 safetensors under its GGUF name ([out, in] matrices, q/k
/// rows in the GGUF order), streamed one tensor at a time: from a GGUF source, every tensor of the
/// file in its order (the source's own values for those the model does not hold); from a Hugging
/// Face source, every tensor the model holds.
pub fn write_model_safetensors(path: &Path, source: &ModelSource, model: &LlamaModel) -> Result<()> {
    let names: Vec<(String, Vec<usize>)> = match source {
        ModelSource::Gguf(gguf) => {
            refuse_overwrite(path, gguf.path())?;
            gguf.tensors.iter().map(|info| (info.name.clone(), info.dims.clone())).collect()
        }
        ModelSource::HuggingFace(hf) => {
            for file in &hf.files {
                refuse_overwrite(path, file)?;
            }
            model_tensor_names(model)
        }
    };
    let mut tensors = Vec::with_capacity(names.len());
    for (name, dims) in names {
        let values = match (model_tensor(model, &name), source) {
            (Some(v), _) => Cow::Borrowed(v),
            (None, ModelSource::Gguf(gguf)) => Cow::Owned(gguf.tensor_f32(&name)?.1),
            (None, ModelSource::HuggingFace(_)) => {
                return Err(OptimaError::Internal(format!("tensor {name} not held")));
            }
        };
        tensors.push((name, F32Tensor { shape: dims.iter().rev().copied().collect(), values }));
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
