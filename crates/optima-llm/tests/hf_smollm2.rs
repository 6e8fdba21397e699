//! The real SmolLM2 asset written as a Hugging Face folder by `hf::write_checkpoint` (its
//! dequantized weights in F32 under the Hugging Face names and q/k order, a `tokenizer.json`
//! written from the GGUF's vocabulary and merges): the `tokenizers` crate and optima's own
//! tokenizer agree on the whole Jargon text, and both paths give the same perplexity.

mod assets_dir;

use optima_llm::calibration::read_text;
use optima_llm::hf::write_checkpoint;
use optima_llm::model_file::load_model;
use optima_llm::perplexity::perplexity;

#[test]
fn smollm2_written_as_a_hugging_face_folder_tokenizes_and_scores_like_its_gguf() {
    let gguf = load_model(&assets_dir::smollm2()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("SmolLM2-135M");
    write_checkpoint(&folder, &gguf.source, &gguf.model, None).unwrap();
    let hf = load_model(&folder).unwrap();
    assert_eq!(hf.model.config, gguf.model.config);
    assert!(hf.model.output.is_none() && hf.model.token_embd == gguf.model.token_embd);
    assert!(hf.model.blocks.iter().zip(&gguf.model.blocks).all(|(a, b)| a.q == b.q && a.k == b.k && a.down == b.down));
    let text = read_text(&assets_dir::require("jargon.txt.gz")).unwrap();
    let ids = gguf.tokenizer.encode(&text).unwrap();
    assert!(ids.len() > 100_000);
    assert_eq!(hf.tokenizer.encode(&text).unwrap(), ids, "tokenizers and optima's tokenizer differ on Jargon");
    // The chat markers are special tokens of the written tokenizer too.
    let chat = "<|im_start|>user\nHello<|im_end|>";
    assert_eq!(hf.tokenizer.encode(chat).unwrap(), gguf.tokenizer.encode(chat).unwrap());
    let a = perplexity(&gguf.model, &ids, 2, 128, |_| {}).unwrap();
    let b = perplexity(&hf.model, &ids, 2, 128, |_| {}).unwrap();
    assert_eq!(a.mean_nll, b.mean_nll);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("tokenizer_config.json")).unwrap()).unwrap();
    assert!(config["eos_token"].is_string() && config["chat_template"].is_string(), "{config}");
}
