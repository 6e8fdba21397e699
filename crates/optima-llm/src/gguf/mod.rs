//! GGUF files (the llama.cpp model format, versions 2 and 3): a bounds-checked reader that
//! dequantizes tensors to `f32` ([`read`], [`dequant`]; plain floats, legacy quants, K-quants,
//! IQ4_NL/IQ4_XS) from a memory map of the file ([`source`]), and a writer for `f32`/`f16`/Q8_0
//! tensors ([`write`], with the Q8_0 encoder in [`quantize`]).
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
//! use optima_llm::gguf::GgufFile;
//! # fn main() -> optima::Result<()> {
//! let file = GgufFile::read(std::path::Path::new("assets/SmolLM2-135M-Instruct.Q4_1.gguf"))?;
//! assert_eq!(file.get_str("general.architecture")?, "llama");
//! let w = file.tensor_matrix("blk.0.attn_q.weight")?; // [out = 576, in = 576]
//! # let _ = w; Ok(()) }
//! ```

mod dequant;
mod quantize;
mod read;
pub(crate) mod source;
mod value;
mod write;

pub use dequant::{DequantizeError, GgmlType, dequantize};
pub use quantize::{Q8_0_BLOCK, quantize_q8_0};
pub use read::{GgufFile, GgufTensorInfo};
pub use value::{GgufValue, GgufValueType};
pub use write::{GgufTensorData, GgufTensorSpec, gguf_bytes, write_gguf, write_gguf_streamed};

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
pub(crate) const MAX_ARRAY_DEPTH: usize = 8;
/// Largest alignment accepted from a file.
pub(crate) const MAX_ALIGNMENT: u64 = 1 << 30;
