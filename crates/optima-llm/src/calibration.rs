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
    Ok(calibration_starts(tokens.len(), count, len, seed)?
        .into_iter()
        .map(|start| tokens.get(start..start + len).map(<[u32]>::to_vec).unwrap_or_default())
        .collect())
}

/// Where [`calibration_sequences`] starts each of its `count` sequences of `len` tokens in a
/// stream of `total` tokens.
pub fn calibration_starts(total: usize, count: usize, len: usize, seed: u64) -> Result<Vec<usize>> {
    if count == 0 || len == 0 {
        return Err(OptimaError::InvalidSetting(
            "calibration needs at least one sequence of at least one token".into(),
        ));
    }
    if total < len {
        return Err(OptimaError::InvalidSetting(format!(
            "calibration text has {total} tokens, fewer than one sequence of {len}"
        )));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    Ok((0..count).map(|_| rng.random_range(0..=total - len)).collect())
}

/// `windows` windows of `window_len` tokens of the calibration stream `tokens` that no calibration
/// sequence (of `len` tokens from `starts`) touches, concatenated: held-out text from the
/// calibration distribution, to choose settings on without looking at any evaluation text.
/// Window `k` is the first free one from `k · total / windows` on, so the windows spread over the
/// whole text (every file of a folder). Errors when the text has no room for them.
pub fn held_out_calibration_windows(
    tokens: &[u32],
    starts: &[usize],
    len: usize,
    windows: usize,
    window_len: usize,
) -> Result<Vec<u32>> {
    let total = tokens.len();
    let mut taken: Vec<(usize, usize)> = starts.iter().map(|&s| (s, s.saturating_add(len))).collect();
    let free = |a: usize, b: usize, taken: &[(usize, usize)]| taken.iter().all(|&(s, e)| b <= s || e <= a);
    let mut out = Vec::with_capacity(windows.saturating_mul(window_len));
    for k in 0..windows {
        let from = k.saturating_mul(total) / windows.max(1);
        // Candidate starts: from `from` to the last that fits, then wrapping round to 0.
        let ends = total.checked_sub(window_len).map_or(0, |last| last + 1);
        let from = from.min(ends);
        let found = (from..ends).chain(0..from).find(|&a| free(a, a + window_len, &taken));
        let Some(a) = found else {
            return Err(OptimaError::InvalidSetting(format!(
                "the calibration text ({total} tokens) has no room for {windows} held-out windows of {window_len} \
                 tokens beside its calibration sequences"
            )));
        };
        out.extend(tokens.get(a..a + window_len).unwrap_or_default());
        taken.push((a, a + window_len));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_out_windows_touch_no_calibration_token_nor_each_other() {
        let tokens: Vec<u32> = (0..10_000).collect();
        let starts = calibration_starts(tokens.len(), 40, 100, 3).unwrap();
        let held = held_out_calibration_windows(&tokens, &starts, 100, 12, 64).unwrap();
        assert_eq!(held.len(), 12 * 64);
        let mut seen = std::collections::HashSet::new();
        for &t in &held {
            let t = t as usize;
            assert!(starts.iter().all(|&s| t < s || t >= s + 100), "token {t} is in a calibration sequence");
            assert!(seen.insert(t), "token {t} twice");
        }
        // Spread over the text: some window in each quarter.
        for q in 0..4 {
            assert!(held.iter().any(|&t| (t as usize) / 2500 == q), "no window in quarter {q}");
        }
        // The same sequences as calibration_sequences takes.
        let seqs = calibration_sequences(&tokens, 40, 100, 3).unwrap();
        assert!(seqs.iter().zip(&starts).all(|(seq, &s)| seq[0] as usize == s && seq.len() == 100));
    }

    #[test]
    fn no_room_is_an_error() {
        let tokens: Vec<u32> = (0..1_000).collect();
        let starts = calibration_starts(tokens.len(), 1, 1_000, 0).unwrap();
        assert!(held_out_calibration_windows(&tokens, &starts, 1_000, 1, 10).is_err());
        assert!(held_out_calibration_windows(&tokens, &[], 100, 3, 400).is_err());
    }
}
