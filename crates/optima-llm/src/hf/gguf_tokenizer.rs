//! A GGUF file's byte-level BPE tokenizer as the Hugging Face files `transformers` loads:
//! `tokenizer.json` (the vocabulary and merges of `tokenizer.ggml.tokens`/`merges`, the GPT-2
//! byte-level pre-tokenizer — after single-digit splitting for `smollm` — and decoder, control
//! and user-defined tokens as added tokens), `tokenizer_config.json` and
//! `special_tokens_map.json`. The `tokenizers` crate encodes text with it to the ids optima's own
//! tokenizer gives (tests/hf_smollm2.rs checks it on the whole Jargon text).

use serde_json::{Value, json};

use crate::gguf::GgufFile;
use crate::tokenizer::{PreTokenizer, Tokenizer};
use optima::error::Result;

/// The Hugging Face `tokenizer.json` of the GGUF file's tokenizer (`tokenizer`, read from it).
pub fn tokenizer_json(gguf: &GgufFile, tokenizer: &Tokenizer) -> Result<Value> {
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for id in 0..tokenizer.vocab_size() as u32 {
        let Some(token) = tokenizer.token(id) else { continue };
        // A token stored twice keeps its first id, as optima's tokenizer does.
        if vocab.contains_key(token) {
            continue;
        }
        vocab.insert(token.to_string(), id.into());
        if tokenizer.is_special(id) {
            added.push(json!({ "id": id, "content": token, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true }));
        }
    }
    let merges = gguf.get_str_array("tokenizer.ggml.merges")?;
    let byte_level = json!({ "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true });
    let pre_tokenizer = match tokenizer.pre_tokenizer() {
        PreTokenizer::SmolLm => json!({ "type": "Sequence", "pretokenizers": [
            { "type": "Digits", "individual_digits": true }, byte_level ] }),
        PreTokenizer::Gpt2 => byte_level,
    };
    let bos = special(gguf, tokenizer, "bos");
    let post_processor = match (&bos, gguf.get("tokenizer.ggml.add_bos_token").and_then(|v| v.as_bool())) {
        (Some((id, token)), Some(true)) => json!({
            "type": "TemplateProcessing",
            "single": [{ "SpecialToken": { "id": token, "type_id": 0 } }, { "Sequence": { "id": "A", "type_id": 0 } }],
            "pair": [{ "SpecialToken": { "id": token, "type_id": 0 } }, { "Sequence": { "id": "A", "type_id": 0 } },
                { "SpecialToken": { "id": token, "type_id": 1 } }, { "Sequence": { "id": "B", "type_id": 1 } }],
            "special_tokens": { token.as_str(): { "id": token, "ids": [id], "tokens": [token] } }
        }),
        _ => Value::Null,
    };
    Ok(json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": { "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true },
        "model": { "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges }
    }))
}

/// The id and text of the special token `tokenizer.ggml.{name}_token_id`, if the file names one.
fn special(gguf: &GgufFile, tokenizer: &Tokenizer, name: &str) -> Option<(u32, String)> {
    let id = u32::try_from(gguf.get(&format!("tokenizer.ggml.{name}_token_id"))?.as_u64()?).ok()?;
    Some((id, tokenizer.token(id)?.to_string()))
}

/// The tokenizer files of a Hugging Face folder, (file name, contents), for the GGUF file's
/// tokenizer; `context` is the model's `model_max_length`.
pub fn tokenizer_files(gguf: &GgufFile, context: usize) -> Result<Vec<(&'static str, Value)>> {
    let tokenizer = Tokenizer::from_gguf(gguf)?;
    let mut map = serde_json::Map::new();
    for (key, name) in [("bos_token", "bos"), ("eos_token", "eos"), ("pad_token", "padding"), ("unk_token", "unknown")]
    {
        if let Some((_, token)) = special(gguf, &tokenizer, name) {
            map.insert(key.into(), token.into());
        }
    }
    let mut config = map.clone();
    config.insert("tokenizer_class".into(), "PreTrainedTokenizerFast".into());
    config.insert("model_max_length".into(), context.into());
    config.insert("clean_up_tokenization_spaces".into(), false.into());
    if let Some(add) = gguf.get("tokenizer.ggml.add_bos_token").and_then(|v| v.as_bool()) {
        config.insert("add_bos_token".into(), add.into());
    }
    if let Some(template) = gguf.get("tokenizer.chat_template").and_then(|v| v.as_str()) {
        config.insert("chat_template".into(), template.into());
    }
    Ok(vec![
        ("tokenizer.json", tokenizer_json(gguf, &tokenizer)?),
        ("tokenizer_config.json", Value::Object(config)),
        ("special_tokens_map.json", Value::Object(map)),
    ])
}
