//! Perplexity over consecutive non-overlapping windows (the protocol of docs/results.md).

use crate::llama::LlamaModel;
use crate::progress::PerplexityProgress;
use optima::error::{OptimaError, Result};

/// The perplexity of a model on a token stream.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PerplexityResult {
    /// `exp(mean_nll)`.
    pub ppl: f64,
    /// Mean negative log-likelihood (natural log) per scored token.
    pub mean_nll: f64,
    /// Tokens scored: `windows · (window_len − 1)`.
    pub tokens_scored: usize,
    /// Windows evaluated.
    pub windows: usize,
    /// Tokens per window.
    pub window_len: usize,
}

/// Perplexity of `model` on the first `windows · window_len` tokens of `tokens`, cut into
/// `windows` consecutive non-overlapping windows of `window_len` tokens. Each window is run on its
/// own (positions restart at 0) and every token after its first is scored; the result is
/// `exp(mean NLL)` over all scored tokens. `progress` is told after every window.
///
/// Errors when `windows` is 0, `window_len < 2`, or `tokens` holds fewer than
/// `windows · window_len` tokens (the message says how many are needed).
pub fn perplexity(
    model: &LlamaModel,
    tokens: &[u32],
    windows: usize,
    window_len: usize,
    mut progress: impl FnMut(PerplexityProgress),
) -> Result<PerplexityResult> {
    if windows == 0 {
        return Err(OptimaError::InvalidSetting("perplexity needs at least one window".into()));
    }
    if window_len < 2 {
        return Err(OptimaError::InvalidSetting(format!(
            "perplexity window length {window_len} is too short: a window needs at least 2 tokens"
        )));
    }
    let needed = windows
        .checked_mul(window_len)
        .ok_or_else(|| OptimaError::InvalidSetting(format!("{windows} windows of {window_len} tokens overflow")))?;
    if tokens.len() < needed {
        return Err(OptimaError::InvalidSetting(format!(
            "perplexity over {windows} windows of {window_len} tokens needs {needed} tokens, but the text has only {} \
             (use fewer or shorter windows)",
            tokens.len()
        )));
    }
    let mut sum = 0.0f64;
    let mut count = 0usize;
    for (done, window) in tokens.get(..needed).unwrap_or_default().chunks_exact(window_len).enumerate() {
        let nll = model.nll(window)?;
        sum += nll.iter().map(|&v| f64::from(v)).sum::<f64>();
        count += nll.len();
        progress(PerplexityProgress { windows_done: done + 1, windows, ppl_so_far: (sum / count.max(1) as f64).exp() });
    }
    let mean_nll = sum / count.max(1) as f64;
    Ok(PerplexityResult { ppl: mean_nll.exp(), mean_nll, tokens_scored: count, windows, window_len })
}
