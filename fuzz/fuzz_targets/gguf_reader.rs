//! The GGUF reader on arbitrary bytes, then everything the model loader does with a parsed file:
//! every tensor dequantized and read as a matrix and as a vector, every metadata getter, the
//! tokenizer and the Llama configuration and weights.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use optima_llm::gguf::{GgufFile, GgufValue};
use optima_llm::llama::{LlamaConfig, LlamaModel};
use optima_llm::tokenizer::Tokenizer;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data.to_vec(), Path::new("fuzz.gguf")) else { return };
    let _ = format!("{file:?}");

    let names: Vec<String> = file.tensor_names().map(String::from).collect();
    for name in &names {
        let _ = file.tensor_info(name);
        let _ = file.tensor_bytes(name);
        if let Ok((dims, values)) = file.tensor_f32(name) {
            let n: usize = dims.iter().product();
            assert_eq!(values.len(), n, "tensor {name:?}: {} values for dims {dims:?}", values.len());
        }
        if let Ok(m) = file.tensor_matrix(name) {
            let dims = &file.tensor_info(name).map(|t| t.dims.clone()).unwrap_or_default();
            assert_eq!((m.ncols(), m.nrows()), (dims[0], dims[1]));
        }
        let _ = file.tensor_vector(name);
    }

    let keys: Vec<String> = file.metadata.iter().map(|(k, _)| k.clone()).collect();
    for key in &keys {
        let _ = file.get_u32(key);
        let _ = file.get_u64(key);
        let _ = file.get_usize(key);
        let _ = file.get_i64(key);
        let _ = file.get_f32(key);
        let _ = file.get_f64(key);
        let _ = file.get_bool(key);
        let _ = file.get_str(key);
        let _ = file.get_str_array(key);
        let _ = file.get_i64_array(key);
        let _ = file.get_f32_array(key);
    }

    // What `optima_llm::model_file::load_model` does after reading the file.
    let _ = file.get_str("general.architecture");
    if let Ok(tokenizer) = Tokenizer::from_gguf(&file) {
        let ids = tokenizer.encode("Hello, world! 123 <|im_start|>x");
        let _ = tokenizer.decode(&ids);
    }
    let vocab = file.tensor_info("token_embd.weight").ok().and_then(|t| t.dims.get(1).copied()).unwrap_or(0);
    if let Ok(config) = LlamaConfig::from_metadata(|k| file.get(k).and_then(GgufValue::as_f64), vocab) {
        let _ = LlamaModel::from_tensors(
            config,
            |name| file.tensor_matrix(name),
            |name| file.tensor_vector(name),
            |name| if file.tensor_info(name).is_ok() { file.tensor_matrix(name).map(Some) } else { Ok(None) },
        );
    }
});
