//! Byte-level BPE tokenizer: a tiny hand-built vocabulary (no asset needed), and the real
//! SmolLM2 tokenizer against ids computed with Hugging Face `tokenizers` from the same vocabulary
//! and merges (skipped with a note when the model has not been fetched).

mod assets_dir;

use std::path::Path;

use optima_llm::gguf::{GgufFile, GgufValue, GgufValueType, gguf_bytes};
use optima_llm::tokenizer::{PreTokenizer, Tokenizer, bytes_to_unicode, token_type};

// ---- a tiny vocabulary ----------------------------------------------------------------------

/// All 256 byte symbols, then merged tokens, then two control tokens.
fn tiny() -> Tokenizer {
    let mut tokens: Vec<String> = bytes_to_unicode().iter().map(|c| c.to_string()).collect();
    let merged = ["he", "ll", "hell", "hello", "Ġw", "Ġwo", "or", "Ġwor", "ld", "Ġworld", "ĠĠ", "aa"];
    tokens.extend(merged.iter().map(|s| s.to_string()));
    tokens.push("<|im_start|>".into());
    tokens.push("<|im_end|>".into());
    let mut types = vec![token_type::NORMAL; tokens.len()];
    let n = types.len();
    types[n - 2] = token_type::CONTROL;
    types[n - 1] = token_type::CONTROL;
    // Ranks: "h e" first, ..., note "o r" is ranked before "Ġw o" so "Ġwor" forms via "Ġw"+"or".
    let merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "Ġ Ġ", "a a", "Ġw o"];
    Tokenizer::new(tokens, &merges, &types, PreTokenizer::SmolLm).unwrap()
}

fn id(t: &Tokenizer, s: &str) -> u32 {
    t.token_id(s).unwrap_or_else(|| panic!("{s:?} not in vocab"))
}

#[test]
fn gpt2_byte_alphabet() {
    let m = bytes_to_unicode();
    assert_eq!(m[b'A' as usize], 'A');
    assert_eq!(m[b' ' as usize], 'Ġ');
    assert_eq!(m[b'\n' as usize], 'Ċ');
    assert_eq!(m[0], 'Ā');
    assert_eq!(m[0xAD], 'Ń'); // the soft hyphen is remapped
    let distinct: std::collections::HashSet<char> = m.iter().copied().collect();
    assert_eq!(distinct.len(), 256);
}

#[test]
fn tiny_vocab_merges_by_rank() {
    let t = tiny();
    assert_eq!(t.vocab_size(), 256 + 12 + 2);
    assert_eq!(t.encode("hello"), vec![id(&t, "hello")]);
    assert_eq!(t.encode("hello world"), vec![id(&t, "hello"), id(&t, "Ġworld")]);
    // "Ġw o" has the worst rank; "or" forms first, then "Ġw"+"or".
    assert_eq!(t.encode(" wor"), vec![id(&t, "Ġwor")]);
    assert_eq!(t.encode(" wo"), vec![id(&t, "Ġwo")]);
    // Repeated pairs merge left to right: "aaa" → "aa", "a".
    assert_eq!(t.encode("aaa"), vec![id(&t, "aa"), id(&t, "a")]);
    assert_eq!(t.encode("aaaa"), vec![id(&t, "aa"), id(&t, "aa")]);
    // Unmerged bytes fall back to byte symbols; empty text has no tokens.
    assert_eq!(t.encode("xyz"), vec![id(&t, "x"), id(&t, "y"), id(&t, "z")]);
    assert!(t.encode("").is_empty());
    assert_eq!(t.encode("é"), vec![id(&t, "Ã"), id(&t, "©")]);
}

#[test]
fn tiny_vocab_pre_tokenizes_like_gpt2_with_single_digits() {
    let t = tiny();
    assert_eq!(t.pre_tokenize("Hello world, 2024!"), vec!["Hello", " world", ",", " ", "2", "0", "2", "4", "!"]);
    assert_eq!(t.pre_tokenize("don't  stop\n\n  go  "), vec!["don", "'t", " ", " stop", "\n\n ", " go", "  "]);
    assert_eq!(t.pre_tokenize("a\u{3000}b x²"), vec!["a", "\u{3000}", "b", " x", "²"]);
    assert_eq!(t.pre_tokenize("x\n\n\ny"), vec!["x", "\n\n", "\n", "y"]);
    for s in ["", " ", "  a", "1 2  3\t\t4", "日本語 テキスト", "a'b'S's"] {
        assert_eq!(t.pre_tokenize(s).concat(), s);
    }
}

#[test]
fn tiny_vocab_control_tokens_are_whole() {
    let t = tiny();
    let start = id(&t, "<|im_start|>");
    let end = id(&t, "<|im_end|>");
    assert!(t.is_special(start) && !t.is_special(id(&t, "he")));
    assert_eq!(t.encode("<|im_start|>hello<|im_end|>"), vec![start, id(&t, "hello"), end]);
    assert_eq!(t.encode("<|im_start|><|im_start|>"), vec![start, start]);
    // A partial control token is ordinary text.
    let partial = t.encode("<|im_sta");
    assert!(!partial.contains(&start));
    assert_eq!(t.decode(&partial), "<|im_sta");
}

#[test]
fn tiny_vocab_decode_round_trips() {
    let t = tiny();
    for s in [
        "hello world",
        "<|im_start|>hello\n<|im_end|>",
        "digits 0123456789, unicode ☃ 日本 😀, tabs\t\tand   spaces\r\n",
        "\u{0}\u{1}\u{7f}",
    ] {
        assert_eq!(t.decode(&t.encode(s)), s);
    }
    // Ids out of range are skipped; cut UTF-8 becomes U+FFFD.
    assert_eq!(t.decode(&[id(&t, "hello"), 999_999]), "hello");
    assert_eq!(t.decode(&[id(&t, "Ã")]), "\u{FFFD}");
    assert_eq!(t.to_byte_symbols("a b\n"), "aĠbĊ");
}

#[test]
fn construction_errors_are_reported() {
    let toks = || vec!["a".to_string(), "b".to_string()];
    assert!(matches!(
        Tokenizer::new(vec![], &[], &[], PreTokenizer::Gpt2),
        Err(optima::OptimaError::InvalidSetting(_))
    ));
    assert!(matches!(
        Tokenizer::new(toks(), &[], &[1], PreTokenizer::Gpt2),
        Err(optima::OptimaError::InvalidSetting(_))
    ));
    assert!(matches!(
        Tokenizer::new(toks(), &["ab"], &[1, 1], PreTokenizer::Gpt2),
        Err(optima::OptimaError::InvalidSetting(_))
    ));
    // Merges naming tokens the vocabulary lacks are ignored.
    let t = Tokenizer::new(toks(), &["a b"], &[1, 1], PreTokenizer::Gpt2).unwrap();
    assert_eq!(t.encode("ab"), vec![0, 1]);
}

#[test]
fn from_gguf_reads_the_metadata() {
    let mut tokens: Vec<String> = bytes_to_unicode().iter().map(|c| c.to_string()).collect();
    tokens.push("he".into());
    tokens.push("<|im_end|>".into());
    let mut types = vec![GgufValue::I32(1); tokens.len()];
    types[257] = GgufValue::I32(3);
    let md = |model: &str, pre: &str| {
        vec![
            ("tokenizer.ggml.model".to_string(), GgufValue::String(model.into())),
            ("tokenizer.ggml.pre".to_string(), GgufValue::String(pre.into())),
            ("tokenizer.ggml.tokens".to_string(), GgufValue::string_array(tokens.clone())),
            ("tokenizer.ggml.merges".to_string(), GgufValue::string_array(["h e"])),
            ("tokenizer.ggml.token_type".to_string(), GgufValue::Array(GgufValueType::I32, types.clone())),
        ]
    };
    let file = |m: Vec<(String, GgufValue)>| {
        GgufFile::from_bytes(gguf_bytes(&m, &[]).unwrap(), Path::new("tok.gguf")).unwrap()
    };
    let t = Tokenizer::from_gguf(&file(md("gpt2", "smollm"))).unwrap();
    assert_eq!(t.vocab_size(), 258);
    assert_eq!(t.pre_tokenizer(), PreTokenizer::SmolLm);
    assert_eq!(t.encode("he<|im_end|>"), vec![256, 257]);
    assert!(matches!(Tokenizer::from_gguf(&file(md("llama", "smollm"))), Err(optima::OptimaError::Format { .. })));
    assert!(matches!(Tokenizer::from_gguf(&file(md("gpt2", "qwen2"))), Err(optima::OptimaError::Format { .. })));
    let mut short = md("gpt2", "smollm");
    short[4].1 = GgufValue::Array(GgufValueType::I32, vec![GgufValue::I32(1)]);
    assert!(matches!(Tokenizer::from_gguf(&file(short)), Err(optima::OptimaError::Format { .. })));
    let mut missing = md("gpt2", "smollm");
    missing.remove(3);
    assert!(matches!(Tokenizer::from_gguf(&file(missing)), Err(optima::OptimaError::Format { .. })));
}

// ---- the real SmolLM2 tokenizer --------------------------------------------------------------

fn real() -> Tokenizer {
    Tokenizer::from_gguf(&GgufFile::read(&assets_dir::smollm2()).unwrap()).unwrap()
}

#[test]
fn smollm2_known_answers() {
    let t = real();
    assert_eq!(t.vocab_size(), 49152);
    // Reference ids: Hugging Face `tokenizers` (BPE from this file's tokens and merges,
    // pre-tokenizer Digits(individual) + ByteLevel(add_prefix_space = false), control tokens added).
    let cases: Vec<(&str, Vec<u32>)> = vec![
        ("Hello world, the quick brown fox.", vec![19556, 905, 28, 260, 2365, 6354, 16438, 30]),
        (
            "In 2024, π≈3.14159 — naïve café ☃ 日本語!\n\n  Two  spaces\tand tabs\r\nend   ",
            vec![
                788, 216, 34, 32, 34, 36, 28, 25143, 40533, 226, 35, 30, 33, 36, 33, 37, 41, 1841, 15486, 46494, 37366,
                4636, 242, 221, 17097, 241, 115, 40993, 179, 120, 248, 17, 8866, 5713, 216, 5600, 197, 397, 29416, 201,
                198, 486, 333,
            ],
        ),
        ("<|im_start|>user\nHi there<|im_end|>\n", vec![1, 4093, 198, 26843, 665, 2, 198]),
        ("don't I'll we've they're it's 'S", vec![12420, 982, 339, 3060, 392, 3543, 502, 2316, 357, 506, 637, 67]),
        ("   leading", vec![256, 2899]),
        ("x\n\n\ny", vec![104, 1116, 198, 105]),
        ("😀👍🏽", vec![10813, 242, 218, 10813, 235, 231, 10813, 233, 138]),
        ("12345678901", vec![33, 34, 35, 36, 37, 38, 39, 40, 41, 32, 33]),
    ];
    for (text, ids) in cases {
        assert_eq!(t.encode(text), ids, "{text:?}");
        assert_eq!(t.decode(&ids), text);
    }
    assert_eq!(t.token_id("<|im_start|>"), Some(1));
    assert!(t.is_special(2) && !t.is_special(19556));
}

#[test]
fn smollm2_round_trips_and_is_fast() {
    let t = real();
    let mut text = String::new();
    let mut i = 0u64;
    while text.len() < 1 << 20 {
        i += 1;
        text.push_str(&format!(
            "Line {i}: The answer is {} ({}%), naïve façade — ☃日本語😀\t<|im_end|>  spaced   out\r\n",
            i * 7919 % 1000,
            i % 100
        ));
        if i % 17 == 0 {
            text.push_str(&"word ".repeat((i % 50) as usize));
            text.push_str(&" ".repeat((i % 30) as usize));
            text.push('\n');
        }
    }
    let start = std::time::Instant::now();
    let ids = t.encode(&text);
    let secs = start.elapsed().as_secs_f64();
    eprintln!("encoded {} bytes into {} tokens in {secs:.2} s", text.len(), ids.len());
    assert!(secs < 10.0, "tokenizing 1 MB took {secs:.1} s");
    assert!(ids.iter().all(|&id| (id as usize) < t.vocab_size()));
    assert_eq!(t.decode(&ids), text);
}
