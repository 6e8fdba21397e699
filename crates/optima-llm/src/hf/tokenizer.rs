//! The tokenizer of a Hugging Face folder, from its `tokenizer.json`, run by the `tokenizers`
//! crate (built without onig: its regex pre-tokenizers run on `fancy-regex`).

use std::path::{Path, PathBuf};

use optima::error::{OptimaError, Result};

/// A `tokenizer.json` tokenizer.
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer").field("path", &self.path).field("vocab", &self.vocab_size()).finish()
    }
}

impl HfTokenizer {
    /// Reads `tokenizer.json`; a file `tokenizers` cannot parse is a format error naming it.
    pub fn from_file(path: &Path) -> Result<HfTokenizer> {
        if !path.exists() {
            return Err(OptimaError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "tokenizer.json not found"),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| OptimaError::Format { path: path.to_path_buf(), detail: format!("tokenizer.json: {e}") })?;
        Ok(HfTokenizer { inner, path: path.to_path_buf() })
    }

    /// The ids of `text`, with no special tokens added (no BOS), as the GGUF tokenizer does.
    /// Special tokens written in the text are recognised.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| OptimaError::Format { path: self.path.clone(), detail: format!("tokenizing: {e}") })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Tokens in the vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
