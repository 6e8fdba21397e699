//! Byte-level BPE tokenizer (the GPT-2 family, `tokenizer.ggml.model = "gpt2"`) built from the
//! vocabulary and merges stored in a GGUF file.
//!
//! Encoding, as llama.cpp and Hugging Face `tokenizers` do it for SmolLM2:
//! 1. control tokens (`tokenizer.ggml.token_type` 3, e.g. `<|im_start|>`) and user-defined tokens
//!    (type 4) found in the text become their own ids, leftmost-longest first;
//! 2. the rest is pre-tokenized: for the `smollm` pre-tokenizer every digit becomes its own piece,
//!    then the GPT-2 regex `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
//!    splits each piece (no prefix space is added);
//! 3. each piece's bytes are mapped to GPT-2's printable byte alphabet and merged by BPE, the
//!    lowest-ranked adjacent pair first (leftmost among equal ranks).
//!
//! No BOS token is added. Decoding maps the ids back to bytes, so `decode(encode(s)) == s` for
//! every string when the vocabulary holds all 256 byte symbols.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;

use fancy_regex::Regex;

use crate::gguf::GgufFile;
use optima::error::{OptimaError, Result};

/// The GPT-2 pre-tokenizer regex (byte-level, as in Hugging Face's `ByteLevel`).
pub const GPT2_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Token types of `tokenizer.ggml.token_type` (llama.cpp's `llama_token_type`).
pub mod token_type {
    /// An ordinary token.
    pub const NORMAL: i64 = 1;
    /// The unknown token.
    pub const UNKNOWN: i64 = 2;
    /// A control token such as `<|im_start|>`.
    pub const CONTROL: i64 = 3;
    /// A token added by the user, matched whole like a control token.
    pub const USER_DEFINED: i64 = 4;
    /// An unused slot.
    pub const UNUSED: i64 = 5;
    /// A byte token (`<0x0A>`) of SentencePiece vocabularies.
    pub const BYTE: i64 = 6;
}

/// How text is split into pieces before BPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizer {
    /// The GPT-2 regex alone.
    Gpt2,
    /// Every digit on its own, then the GPT-2 regex (`tokenizer.ggml.pre = "smollm"`).
    SmolLm,
}

impl PreTokenizer {
    /// The pre-tokenizer for a `tokenizer.ggml.pre` name, `None` if it is not implemented.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "smollm" => Some(PreTokenizer::SmolLm),
            "gpt2" | "default" => Some(PreTokenizer::Gpt2),
            _ => None,
        }
    }
}

/// Cached BPE results are dropped when the cache holds this many words.
const CACHE_LIMIT: usize = 200_000;

/// A byte-level BPE tokenizer. Cheap to share between threads (`&self` methods only).
pub struct Tokenizer {
    tokens: Vec<String>,
    token_to_id: HashMap<String, u32>,
    /// (left id, right id) → (rank, merged id).
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// The id of each byte's single-symbol token, if the vocabulary has it.
    byte_ids: [Option<u32>; 256],
    /// Byte → its GPT-2 printable character.
    byte_to_char: [char; 256],
    /// GPT-2 printable character → byte.
    char_to_byte: HashMap<char, u8>,
    /// Control and user-defined tokens matched whole in the input, longest first.
    specials: Vec<(String, u32)>,
    /// Whether some special token starts with this byte.
    special_first_byte: [bool; 256],
    is_special: Vec<bool>,
    pre: PreTokenizer,
    regex: Regex,
    unknown_id: Option<u32>,
    cache: Mutex<HashMap<String, Vec<u32>>>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.tokens.len())
            .field("merges", &self.merges.len())
            .field("specials", &self.specials.len())
            .field("pre", &self.pre)
            .finish()
    }
}

/// GPT-2's map from bytes to printable characters: printable Latin-1 bytes map to themselves,
/// the rest to U+0100 upwards in byte order.
pub fn bytes_to_unicode() -> [char; 256] {
    let mut n = 0u32;
    // `from_fn` visits the indices in ascending order, so `n` counts the non-printable bytes.
    std::array::from_fn(|i| {
        let b = i as u8;
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        if printable {
            char::from(b)
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap_or('\u{FFFD}')
        }
    })
}

/// The entry of a per-byte table.
#[inline]
#[allow(clippy::indexing_slicing)] // a u8 is always a valid index into a 256-entry table
fn byte_entry<T: Copy>(table: &[T; 256], b: u8) -> T {
    table[usize::from(b)]
}

fn invalid(detail: impl Into<String>) -> OptimaError {
    OptimaError::InvalidSetting(format!("tokenizer: {}", detail.into()))
}

impl Tokenizer {
    /// Builds the tokenizer stored in a GGUF file: `tokenizer.ggml.model` must be `gpt2`, with
    /// `tokenizer.ggml.tokens`, `tokenizer.ggml.merges`, and optionally `tokenizer.ggml.token_type`
    /// and `tokenizer.ggml.pre` (`smollm` or `gpt2`; missing means `gpt2`).
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer> {
        let fmt = |detail: String| OptimaError::Format { path: file.path().to_path_buf(), detail };
        if let Some(model) = file.get("tokenizer.ggml.model") {
            let model =
                file.get_str("tokenizer.ggml.model").map_err(|_| fmt(format!("tokenizer.ggml.model is {model:?}")))?;
            if model != "gpt2" {
                return Err(fmt(format!("tokenizer model {model:?} is not supported (only byte-level BPE, \"gpt2\")")));
            }
        }
        let tokens: Vec<String> = file.get_str_array("tokenizer.ggml.tokens")?.into_iter().map(String::from).collect();
        let merges = file.get_str_array("tokenizer.ggml.merges")?;
        let types = match file.get("tokenizer.ggml.token_type") {
            Some(_) => file.get_i64_array("tokenizer.ggml.token_type")?,
            None => vec![token_type::NORMAL; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(fmt(format!(
                "tokenizer.ggml.token_type has {} entries for {} tokens",
                types.len(),
                tokens.len()
            )));
        }
        let pre = match file.get("tokenizer.ggml.pre") {
            None => PreTokenizer::Gpt2,
            Some(_) => {
                let name = file.get_str("tokenizer.ggml.pre")?;
                PreTokenizer::from_name(name)
                    .ok_or_else(|| fmt(format!("pre-tokenizer {name:?} is not supported (smollm, gpt2)")))?
            }
        };
        let unknown_id = match file.get("tokenizer.ggml.unknown_token_id") {
            Some(v) => v.as_u64().and_then(|v| u32::try_from(v).ok()).filter(|&v| (v as usize) < tokens.len()),
            None => None,
        };
        let mut tok = Self::new(tokens, &merges, &types, pre)?;
        tok.unknown_id = unknown_id;
        Ok(tok)
    }

    /// Builds a tokenizer from its parts: `tokens` (id = index), `merges` ("left right", rank =
    /// index), `token_types` (one per token, see [`token_type`]) and the pre-tokenizer.
    pub fn new(tokens: Vec<String>, merges: &[&str], token_types: &[i64], pre: PreTokenizer) -> Result<Tokenizer> {
        if tokens.is_empty() {
            return Err(invalid("the vocabulary is empty"));
        }
        if u32::try_from(tokens.len()).is_err() {
            return Err(invalid(format!("{} tokens do not fit u32 ids", tokens.len())));
        }
        if token_types.len() != tokens.len() {
            return Err(invalid(format!("{} token types for {} tokens", token_types.len(), tokens.len())));
        }
        let mut token_to_id = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            // A later duplicate wins, as in llama.cpp.
            token_to_id.insert(t.clone(), i as u32);
        }
        let mut merge_map = HashMap::with_capacity(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            // Split at the first space after the first character (llama.cpp's rule).
            let split = m.char_indices().skip(1).find(|&(_, c)| c == ' ').and_then(|(pos, _)| {
                let (left, right) = m.split_at_checked(pos)?;
                Some((left, right.strip_prefix(' ')?))
            });
            let Some((left, right)) = split else {
                return Err(invalid(format!("merge #{rank} {m:?} has no space separating its two parts")));
            };
            let ids = (token_to_id.get(left), token_to_id.get(right));
            let merged = token_to_id.get(&format!("{left}{right}"));
            // Merges whose parts or result are not in the vocabulary can never apply.
            if let ((Some(&l), Some(&r)), Some(&mid)) = (ids, merged) {
                merge_map.entry((l, r)).or_insert((rank as u32, mid));
            }
        }
        let byte_to_char = bytes_to_unicode();
        let byte_ids = byte_to_char.map(|c| token_to_id.get(c.encode_utf8(&mut [0u8; 4]) as &str).copied());
        let char_to_byte: HashMap<char, u8> = byte_to_char.iter().copied().zip(0..=255u8).collect();
        let mut specials: Vec<(String, u32)> = tokens
            .iter()
            .zip(token_types)
            .enumerate()
            .filter(|(_, (t, ty))| !t.is_empty() && (**ty == token_type::CONTROL || **ty == token_type::USER_DEFINED))
            .map(|(i, (t, _))| (t.clone(), i as u32))
            .collect();
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let mut special_first_byte = [false; 256];
        for (s, _) in &specials {
            if let Some(flag) = s.as_bytes().first().and_then(|&b| special_first_byte.get_mut(usize::from(b))) {
                *flag = true;
            }
        }
        let is_special =
            token_types.iter().map(|&t| t == token_type::CONTROL || t == token_type::USER_DEFINED).collect();
        let regex = Regex::new(GPT2_PATTERN).map_err(|e| invalid(format!("pre-tokenizer regex: {e}")))?;
        Ok(Tokenizer {
            tokens,
            token_to_id,
            merges: merge_map,
            byte_ids,
            byte_to_char,
            char_to_byte,
            specials,
            special_first_byte,
            is_special,
            pre,
            regex,
            unknown_id: None,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The pre-tokenizer in use.
    pub fn pre_tokenizer(&self) -> PreTokenizer {
        self.pre
    }

    /// The text of token `id` as stored in the vocabulary (byte-level symbols, e.g. `Ġworld`).
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The id of the vocabulary entry `token` (as stored, e.g. `<|im_end|>` or `Ġworld`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.token_to_id.get(token).copied()
    }

    /// Whether `id` is a control or user-defined token.
    pub fn is_special(&self, id: u32) -> bool {
        self.is_special.get(id as usize).copied().unwrap_or(false)
    }

    /// The ids of `text`. Control tokens written in the text are recognised; no BOS is added.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 1);
        let mut rest = text;
        while !rest.is_empty() {
            match self.next_special(rest) {
                Some((at, len, id)) => {
                    // `next_special` returns the bounds of a match, which are char boundaries.
                    let (before, after) = rest.split_at_checked(at).unwrap_or((rest, ""));
                    self.encode_ordinary(before, &mut ids);
                    ids.push(id);
                    rest = after.get(len..).unwrap_or("");
                }
                None => {
                    self.encode_ordinary(rest, &mut ids);
                    break;
                }
            }
        }
        ids
    }

    /// The leftmost (then longest) special token in `text`: (byte offset, byte length, id).
    fn next_special(&self, text: &str) -> Option<(usize, usize, u32)> {
        if self.specials.is_empty() {
            return None;
        }
        let bytes = text.as_bytes();
        for (at, &b) in bytes.iter().enumerate() {
            // Special tokens are valid UTF-8, so a position whose byte starts one is a char
            // boundary.
            if !byte_entry(&self.special_first_byte, b) {
                continue;
            }
            let Some(here) = text.get(at..) else { continue };
            // `specials` is sorted longest first, so the first hit is the longest.
            for (s, id) in &self.specials {
                if here.starts_with(s.as_str()) {
                    return Some((at, s.len(), *id));
                }
            }
        }
        None
    }

    /// Pre-tokenizes and BPE-encodes text that holds no special tokens.
    fn encode_ordinary(&self, text: &str, ids: &mut Vec<u32>) {
        self.for_each_piece(text, &mut |piece| self.encode_word(piece, ids));
    }

    /// The pre-tokens of `text` (special tokens are not treated specially here): the pieces BPE
    /// runs on, which concatenate back to `text`.
    pub fn pre_tokenize<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let mut pieces = Vec::new();
        self.for_each_piece(text, &mut |piece| pieces.push(piece));
        pieces
    }

    fn for_each_piece<'t>(&self, text: &'t str, f: &mut impl FnMut(&'t str)) {
        match self.pre {
            PreTokenizer::Gpt2 => self.regex_pieces(text, f),
            PreTokenizer::SmolLm => {
                // Every numeric character is a piece of its own; the text between them is split
                // by the regex.
                let mut start = 0;
                for (i, c) in text.char_indices() {
                    if c.is_numeric() {
                        self.regex_pieces(&text[start..i], f);
                        let end = i + c.len_utf8();
                        f(&text[i..end]);
                        start = end;
                    }
                }
                self.regex_pieces(&text[start..], f);
            }
        }
    }

    fn regex_pieces<'t>(&self, text: &'t str, f: &mut impl FnMut(&'t str)) {
        if text.is_empty() {
            return;
        }
        let mut last = 0;
        for m in self.regex.find_iter(text) {
            match m {
                Ok(m) => {
                    if m.start() > last {
                        f(&text[last..m.start()]);
                    }
                    if m.end() > m.start() {
                        f(m.as_str());
                    }
                    last = m.end();
                }
                // Not expected (the regex cannot backtrack without bound); the rest of the text
                // then becomes one piece rather than being lost.
                Err(_) => break,
            }
        }
        if last < text.len() {
            f(&text[last..]);
        }
    }

    /// BPE of one pre-token, through the cache.
    fn encode_word(&self, word: &str, ids: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        if let Ok(cache) = self.cache.lock() {
            if let Some(hit) = cache.get(word) {
                ids.extend_from_slice(hit);
                return;
            }
        }
        let out = self.bpe(word.as_bytes());
        ids.extend_from_slice(&out);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(word.to_string(), out);
        }
    }

    /// Byte-level BPE of `bytes`: start from one symbol per byte and repeatedly merge the
    /// lowest-ranked adjacent pair (leftmost first among equal ranks).
    // Every index used on `syms` is a position < n taken from the list links after checking it
    // is not NONE, so indexing cannot fail; `get` on this hot loop would only obscure that.
    #[allow(clippy::indexing_slicing)]
    fn bpe(&self, bytes: &[u8]) -> Vec<u32> {
        #[derive(Clone, Copy)]
        struct Sym {
            id: Option<u32>,
            prev: usize,
            next: usize,
            alive: bool,
        }
        const NONE: usize = usize::MAX;
        let n = bytes.len();
        let mut syms: Vec<Sym> = bytes
            .iter()
            .enumerate()
            .map(|(i, &b)| Sym {
                id: byte_entry(&self.byte_ids, b),
                prev: if i == 0 { NONE } else { i - 1 },
                next: if i + 1 == n { NONE } else { i + 1 },
                alive: true,
            })
            .collect();
        // Heap of (rank, left position) minima, with the ids the pair had when pushed.
        let mut heap: BinaryHeap<Reverse<(u32, usize, u32, u32)>> = BinaryHeap::new();
        let push = |heap: &mut BinaryHeap<_>, syms: &[Sym], left: usize| {
            let right = syms[left].next;
            if right == NONE {
                return;
            }
            if let (Some(l), Some(r)) = (syms[left].id, syms[right].id) {
                if let Some(&(rank, _)) = self.merges.get(&(l, r)) {
                    heap.push(Reverse((rank, left, l, r)));
                }
            }
        };
        for i in 0..n {
            push(&mut heap, &syms, i);
        }
        while let Some(Reverse((_, left, l, r))) = heap.pop() {
            let right = syms[left].next;
            // Skip stale entries: either symbol merged away or changed since the push.
            if !syms[left].alive || right == NONE || syms[left].id != Some(l) || syms[right].id != Some(r) {
                continue;
            }
            let Some(&(_, merged)) = self.merges.get(&(l, r)) else { continue };
            syms[left].id = Some(merged);
            syms[right].alive = false;
            let after = syms[right].next;
            syms[left].next = after;
            if after != NONE {
                syms[after].prev = left;
            }
            let before = syms[left].prev;
            if before != NONE {
                push(&mut heap, &syms, before);
            }
            push(&mut heap, &syms, left);
        }
        let mut out = Vec::new();
        let mut i = if n == 0 { NONE } else { 0 };
        while i != NONE {
            match syms[i].id {
                Some(id) => out.push(id),
                None => out.extend(self.unknown_id),
            }
            i = syms[i].next;
        }
        out
    }

    /// The text of `ids`: byte-level symbols mapped back to bytes (invalid UTF-8 replaced by
    /// U+FFFD); control tokens appear as their text; unknown ids are skipped.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            let Some(tok) = self.tokens.get(id as usize) else { continue };
            if self.is_special(id) {
                bytes.extend_from_slice(tok.as_bytes());
                continue;
            }
            for c in tok.chars() {
                match self.char_to_byte.get(&c) {
                    Some(&b) => bytes.push(b),
                    None => bytes.extend_from_slice(c.encode_utf8(&mut [0u8; 4]).as_bytes()),
                }
            }
        }
        match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }

    /// The printable byte-level form of `text` (each byte as its GPT-2 symbol), as tokens store it.
    pub fn to_byte_symbols(&self, text: &str) -> String {
        text.bytes().map(|b| byte_entry(&self.byte_to_char, b)).collect()
    }
}
