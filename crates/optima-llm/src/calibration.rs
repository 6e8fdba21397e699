//! Text for calibration and evaluation: reading (files, folders, gzip) and cutting token streams
//! into sequences.

use std::io::Read;
use std::path::Path;

use rand::{Rng, SeedableRng, rngs::StdRng};

use optima::error::{OptimaError, Result};

/// Reads text from a file (gzip-compressed or not) or from every regular file in a folder, in
/// name order (fortune index files `*.dat` and `*.u8` skipped). Invalid UTF-8 is replaced.
pub fn read_text(path: &Path) -> Result<String> {
    let io = |source| OptimaError::Io { path: path.to_path_buf(), source };
    if !path.exists() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "not found (run ./scripts/fetch-assets.sh to fetch the default texts)",
        )));
    }
    if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .filter(|p| {
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                !(name.starts_with('.') || name.ends_with(".dat") || name.ends_with(".u8"))
            })
            .collect();
        files.sort();
        let mut text = String::new();
        for f in files {
            text.push_str(&read_text(&f)?);
            text.push('\n');
        }
        return Ok(text);
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes.as_slice()).read_to_end(&mut out).map_err(io)?;
        out
    } else {
        bytes
    };
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The text from character `start` on (characters, not bytes).
pub fn skip_chars(text: &str, start: usize) -> &str {
    match text.char_indices().nth(start) {
        Some((byte, _)) => &text[byte..],
        None => "",
    }
}

/// `count` sequences of `len` tokens starting at random positions of `tokens` (seeded, as
/// SparseGPT samples its calibration windows).
pub fn calibration_sequences(tokens: &[u32], count: usize, len: usize, seed: u64) -> Result<Vec<Vec<u32>>> {
    if count == 0 || len == 0 {
        return Err(OptimaError::InvalidSetting(
            "calibration needs at least one sequence of at least one token".into(),
        ));
    }
    if tokens.len() < len {
        return Err(OptimaError::InvalidSetting(format!(
            "calibration text has {} tokens, fewer than one sequence of {len}",
            tokens.len()
        )));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    Ok((0..count)
        .map(|_| {
            let start = rng.random_range(0..=tokens.len() - len);
            tokens.get(start..start + len).map(<[u32]>::to_vec).unwrap_or_default()
        })
        .collect())
}
