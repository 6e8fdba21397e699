//! The real SmolLM2 asset copied into a Hugging Face folder (its dequantized weights as F32 in the
//! Hugging Face names and q/k order, two shards, and a `tokenizer.json` rebuilt from the GGUF's
//! vocabulary and merges): the `tokenizers` crate and optima's own tokenizer agree on the whole
//! Jargon text, and both paths give the same perplexity.

mod assets_dir;
mod tiny_model;

use optima_llm::calibration::read_text;
use optima_llm::gguf::GgufFile;
use optima_llm::model_file::load_model;
use optima_llm::perplexity::perplexity;
use optima_llm::tokenizer::Tokenizer;

/// SmolLM2's tokenizer.json, as `transformers` ships it, rebuilt from the GGUF metadata.
fn tokenizer_json(gguf: &GgufFile) -> serde_json::Value {
    let tokenizer = Tokenizer::from_gguf(gguf).unwrap();
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for id in 0..tokenizer.vocab_size() as u32 {
        let token = tokenizer.token(id).unwrap();
        vocab.insert(token.to_string(), id.into());
        if tokenizer.is_special(id) {
            added.push(serde_json::json!({ "id": id, "content": token, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true }));
        }
    }
    let merges: Vec<&str> =
        gguf.get("tokenizer.ggml.merges").unwrap().as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": { "type": "Sequence", "pretokenizers": [
            { "type": "Digits", "individual_digits": true },
            { "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true }
        ]},
        "post_processor": null,
        "decoder": { "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true },
        "model": { "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges }
    })
}

#[test]
fn smollm2_as_a_hugging_face_folder_tokenizes_and_scores_like_its_gguf() {
    let gguf = load_model(&assets_dir::smollm2()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("SmolLM2-135M");
    let how = tiny_model::hf::HfWrite { shards: 2, ..Default::default() };
    tiny_model::hf::write_hf(&folder, &gguf.model, &how);
    std::fs::write(folder.join("tokenizer.json"), tokenizer_json(gguf.gguf().unwrap()).to_string()).unwrap();
    let hf = load_model(&folder).unwrap();
    let text = read_text(&assets_dir::require("jargon.txt.gz")).unwrap();
    let ids = gguf.tokenizer.encode(&text).unwrap();
    assert!(ids.len() > 100_000);
    assert_eq!(hf.tokenizer.encode(&text).unwrap(), ids, "tokenizers and optima's tokenizer differ on Jargon");
    let a = perplexity(&gguf.model, &ids, 2, 128, |_| {}).unwrap();
    let b = perplexity(&hf.model, &ids, 2, 128, |_| {}).unwrap();
    assert_eq!(a.mean_nll, b.mean_nll);
}
