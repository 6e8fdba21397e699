//! The byte-level BPE tokenizer on arbitrary input: encoding any text (bytes read as lossy UTF-8)
//! with a small fixed tokenizer, decoding any ids, and building a tokenizer from arbitrary
//! vocabulary, merges and token types and then using it.

#![no_main]

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use optima_llm::tokenizer::{PreTokenizer, Tokenizer, bytes_to_unicode, token_type};

/// All 256 byte symbols, a few merges, and two control tokens, with both pre-tokenizers.
fn fixed(pre: PreTokenizer) -> Tokenizer {
    let mut tokens: Vec<String> = bytes_to_unicode().iter().map(|c| c.to_string()).collect();
    let merged = ["th", "he", "Ġt", "in", "the", "Ġth", "Ġthe", "er", "ĠĠ", "12"];
    tokens.extend(merged.map(String::from));
    tokens.extend(["<|im_start|>", "<|im_end|>", "<|im"].map(String::from));
    let mut types = vec![token_type::NORMAL; tokens.len()];
    let n = types.len();
    types[n - 3] = token_type::CONTROL;
    types[n - 2] = token_type::CONTROL;
    types[n - 1] = token_type::USER_DEFINED;
    let merges = ["t h", "h e", "Ġ t", "i n", "th e", "Ġt h", "Ġth e", "e r", "Ġ Ġ", "1 2"];
    Tokenizer::new(tokens, &merges, &types, pre).expect("the fixed tokenizer builds")
}

fn tokenizers() -> &'static [Tokenizer; 2] {
    static TOKENIZERS: OnceLock<[Tokenizer; 2]> = OnceLock::new();
    TOKENIZERS.get_or_init(|| [fixed(PreTokenizer::SmolLm), fixed(PreTokenizer::Gpt2)])
}

#[derive(Arbitrary, Debug)]
struct Parts {
    tokens: Vec<String>,
    merges: Vec<String>,
    types: Vec<i64>,
    smollm: bool,
    text: String,
    ids: Vec<u32>,
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 3 {
        // Encode arbitrary text: it must decode back to itself (every byte has a symbol).
        0 => {
            let text = String::from_utf8_lossy(rest);
            for tok in tokenizers() {
                let ids = tok.encode(&text);
                assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
                assert_eq!(tok.decode(&ids), text, "round trip");
                let pieces = tok.pre_tokenize(&text);
                assert_eq!(pieces.concat(), text, "pre-tokens concatenate back to the text");
                let _ = tok.to_byte_symbols(&text);
            }
        }
        // Decode arbitrary ids.
        1 => {
            let ids: Vec<u32> =
                rest.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) % 300).collect();
            for tok in tokenizers() {
                let _ = tok.decode(&ids);
                for &id in &ids {
                    let _ = (tok.token(id), tok.is_special(id));
                }
            }
        }
        // A tokenizer from arbitrary parts.
        _ => {
            let Ok(parts) = Parts::arbitrary(&mut Unstructured::new(rest)) else { return };
            let merges: Vec<&str> = parts.merges.iter().map(String::as_str).collect();
            let pre = if parts.smollm { PreTokenizer::SmolLm } else { PreTokenizer::Gpt2 };
            let mut types = parts.types;
            types.resize(parts.tokens.len(), token_type::NORMAL);
            let Ok(tok) = Tokenizer::new(parts.tokens, &merges, &types, pre) else { return };
            let ids = tok.encode(&parts.text);
            assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
            let _ = tok.decode(&ids);
            let _ = tok.decode(&parts.ids);
            for t in 0..tok.vocab_size().min(64) as u32 {
                if let Some(s) = tok.token(t) {
                    let _ = tok.token_id(&s.to_owned());
                }
            }
        }
    }
});
