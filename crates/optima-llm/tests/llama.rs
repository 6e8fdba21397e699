//! The Llama forward pass against a plain-loop reference, causality, captured inputs, loading by
//! GGUF names, and perplexity windows.

mod assets_dir;

use std::collections::HashMap;

use ndarray::{Array2, ArrayView2, s};
use optima::OptimaError;
use optima_llm::llama::{LinearInput, LinearKind, LlamaBlock, LlamaConfig, LlamaModel};
use optima_llm::perplexity::perplexity;
use rand::{Rng, SeedableRng, rngs::StdRng};

fn tiny() -> LlamaConfig {
    LlamaConfig {
        hidden: 64,
        intermediate: 128,
        blocks: 2,
        heads: 4,
        kv_heads: 2,
        head_dim: 16,
        rope_theta: 10_000.0,
        rms_eps: 1e-5,
        vocab: 100,
        context: 512,
    }
}

fn tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(0..vocab as u32)).collect()
}

fn random_input(t: usize, hidden: usize, seed: u64) -> Array2<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    Array2::from_shape_fn((t, hidden), |_| rng.random_range(-2.0f32..2.0))
}

/// max |a − b| / max |b|.
fn rel_err(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>) -> f64 {
    assert_eq!(a.dim(), b.dim());
    let diff = a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs())).fold(0.0, f64::max);
    let scale = b.iter().map(|y| f64::from(y.abs())).fold(0.0, f64::max);
    diff / scale.max(1e-30)
}

// ----- Naive reference, plain loops in f64. -----

fn ref_rms_norm(x: &[f64], gain: &[f32], eps: f32) -> Vec<f64> {
    let mean_sq = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let scale = 1.0 / (mean_sq + f64::from(eps)).sqrt();
    x.iter().zip(gain).map(|(v, &g)| v * scale * f64::from(g)).collect()
}

fn ref_matvec(w: &Array2<f32>, x: &[f64]) -> Vec<f64> {
    (0..w.nrows()).map(|o| (0..w.ncols()).map(|i| f64::from(w[[o, i]]) * x[i]).sum()).collect()
}

/// How the reference rotates a head: llama.cpp's adjacent pairs `(2i, 2i+1)` (right for GGUF
/// weights), or the Hugging Face halves `(i, i + d/2)` (wrong for them).
#[derive(Clone, Copy, PartialEq)]
enum Rope {
    Adjacent,
    Halves,
}

fn ref_rope(v: &mut [f64], pos: usize, head_dim: usize, theta: f32, rope: Rope) {
    let half = head_dim / 2;
    for head in v.chunks_mut(head_dim) {
        for i in 0..half {
            let angle = pos as f64 * f64::from(theta).powf(-2.0 * i as f64 / head_dim as f64);
            let (a, b) = if rope == Rope::Adjacent { (2 * i, 2 * i + 1) } else { (i, i + half) };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * angle.cos() - x1 * angle.sin();
            head[b] = x0 * angle.sin() + x1 * angle.cos();
        }
    }
}

fn ref_block(c: &LlamaConfig, b: &LlamaBlock, x: &Array2<f32>) -> Array2<f32> {
    ref_block_with(c, b, x, Rope::Adjacent)
}

fn ref_block_with(c: &LlamaConfig, b: &LlamaBlock, x: &Array2<f32>, rope: Rope) -> Array2<f32> {
    let t = x.nrows();
    let d = c.head_dim;
    let rows: Vec<Vec<f64>> = (0..t).map(|i| x.row(i).iter().map(|&v| f64::from(v)).collect()).collect();
    let mut q = Vec::new();
    let mut k = Vec::new();
    let mut v = Vec::new();
    for (pos, row) in rows.iter().enumerate() {
        let xn = ref_rms_norm(row, &b.attn_norm, c.rms_eps);
        let mut qi = ref_matvec(&b.q, &xn);
        let mut ki = ref_matvec(&b.k, &xn);
        ref_rope(&mut qi, pos, d, c.rope_theta, rope);
        ref_rope(&mut ki, pos, d, c.rope_theta, rope);
        q.push(qi);
        k.push(ki);
        v.push(ref_matvec(&b.v, &xn));
    }
    let group = c.heads / c.kv_heads;
    let mut out = Array2::<f32>::zeros((t, c.hidden));
    for pos in 0..t {
        let mut attn = vec![0.0f64; c.hidden];
        for h in 0..c.heads {
            let g = h / group;
            let scores: Vec<f64> = (0..=pos)
                .map(|j| (0..d).map(|e| q[pos][h * d + e] * k[j][g * d + e]).sum::<f64>() / (d as f64).sqrt())
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let sum: f64 = exps.iter().sum();
            for (j, p) in exps.iter().enumerate() {
                for e in 0..d {
                    attn[h * d + e] += p / sum * v[j][g * d + e];
                }
            }
        }
        let o = ref_matvec(&b.o, &attn);
        let h1: Vec<f64> = rows[pos].iter().zip(&o).map(|(a, b)| a + b).collect();
        let hn = ref_rms_norm(&h1, &b.ffn_norm, c.rms_eps);
        let gate = ref_matvec(&b.gate, &hn);
        let up = ref_matvec(&b.up, &hn);
        let mid: Vec<f64> = gate.iter().zip(&up).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
        let down = ref_matvec(&b.down, &mid);
        for e in 0..c.hidden {
            out[[pos, e]] = (h1[e] + down[e]) as f32;
        }
    }
    out
}

// ----- Tests. -----

#[test]
fn block_forward_matches_plain_loop_reference() {
    let c = tiny();
    let model = LlamaModel::random(c, 1).unwrap();
    // 150 positions span three attention row blocks; 1 position is the degenerate case.
    for (t, seed) in [(150, 2), (1, 3), (64, 4), (65, 5)] {
        let x = random_input(t, c.hidden, seed);
        for b in 0..c.blocks {
            let got = model.block_forward(b, x.view(), None).unwrap();
            let want = ref_block(&c, &model.blocks[b], &x);
            let err = rel_err(got.view(), want.view());
            assert!(err < 1e-4, "T = {t}, block {b}: relative error {err}");
        }
    }
}

#[test]
fn rope_rotates_adjacent_pairs_not_halves() {
    // The reference tells the two conventions apart on this input, and the model follows the
    // adjacent-pair one (GGUF stores q/k rows permuted for it).
    let mut c = tiny();
    c.rope_theta = 100_000.0;
    let model = LlamaModel::random(c, 11).unwrap();
    // Larger attention weights make the scores, and so the rotation, matter more.
    let mut block = model.blocks[0].clone();
    block.q *= 4.0;
    block.k *= 4.0;
    let x = random_input(40, c.hidden, 12);
    let got = block.forward(&c, x.view(), None).unwrap();
    let adjacent = ref_block_with(&c, &block, &x, Rope::Adjacent);
    let halves = ref_block_with(&c, &block, &x, Rope::Halves);
    assert!(rel_err(got.view(), adjacent.view()) < 1e-4);
    let apart = rel_err(halves.view(), adjacent.view());
    assert!(apart > 1e-2, "the conventions differ by only {apart}");
}

#[test]
fn outputs_do_not_depend_on_later_tokens() {
    let c = tiny();
    let model = LlamaModel::random(c, 2).unwrap();
    let a = tokens(130, c.vocab, 1);
    let mut b = a.clone();
    let p = 70;
    for (i, tok) in b.iter_mut().enumerate().skip(p) {
        *tok = (*tok + 1 + i as u32) % c.vocab as u32;
    }
    let ha = model.hidden_states(&a).unwrap();
    let hb = model.hidden_states(&b).unwrap();
    assert!(rel_err(ha.slice(s![..p, ..]), hb.slice(s![..p, ..])) < 1e-6);
    assert!(rel_err(ha.slice(s![p.., ..]), hb.slice(s![p.., ..])) > 1e-3, "later positions should change");
    // A shorter sequence gives the same prefix.
    let hp = model.hidden_states(&a[..p]).unwrap();
    assert!(rel_err(hp.view(), ha.slice(s![..p, ..])) < 1e-5);
    // nll[i] scores token i+1 from tokens ..=i: unchanged while i + 1 < p.
    let na = model.nll(&a).unwrap();
    let nb = model.nll(&b).unwrap();
    for i in 0..p - 1 {
        assert!((na[i] - nb[i]).abs() <= 1e-5 * na[i].abs().max(1.0), "nll[{i}]: {} vs {}", na[i], nb[i]);
    }
}

#[test]
fn captured_inputs_have_the_right_shapes_and_values() {
    let c = tiny();
    let model = LlamaModel::random(c, 3).unwrap();
    let t = 37;
    let x = random_input(t, c.hidden, 9);
    let mut seen: Vec<(LinearInput, Array2<f32>)> = Vec::new();
    let mut capture = |input: LinearInput, a: ArrayView2<'_, f32>| seen.push((input, a.to_owned()));
    let out = model.block_forward(1, x.view(), Some(&mut capture)).unwrap();
    let plain = model.block_forward(1, x.view(), None).unwrap();
    assert_eq!(out, plain, "capturing must not change the output");
    let order: Vec<LinearInput> = seen.iter().map(|(i, _)| *i).collect();
    assert_eq!(order, LinearInput::ALL.to_vec());
    for (input, a) in &seen {
        assert_eq!(a.dim(), (t, input.dim(&c)), "{input:?}");
        for kind in input.kinds() {
            assert_eq!(kind.input(), *input);
            assert_eq!(model.blocks[1].weight(*kind).ncols(), input.dim(&c));
        }
    }
    let gain = &model.blocks[1].attn_norm;
    let want = Array2::from_shape_fn((t, c.hidden), |(i, j)| {
        let row: Vec<f64> = x.row(i).iter().map(|&v| f64::from(v)).collect();
        ref_rms_norm(&row, gain, c.rms_eps)[j] as f32
    });
    assert!(rel_err(seen[0].1.view(), want.view()) < 1e-6);
    // The MLP hidden capture is what `down` multiplies: out = h + mid · downᵀ, h = x + attn · oᵀ.
    let b = &model.blocks[1];
    let h = &x + &seen[1].1.dot(&b.o.t());
    let recon = &h + &seen[3].1.dot(&b.down.t());
    assert!(rel_err(recon.view(), out.view()) < 1e-5);
}

#[test]
fn nll_matches_a_direct_log_softmax() {
    let c = tiny();
    let model = LlamaModel::random(c, 4).unwrap();
    let toks = tokens(200, c.vocab, 4); // more than one logit chunk
    let nll = model.nll(&toks).unwrap();
    assert_eq!(nll.len(), 199);
    let logits = model.logits(model.hidden_states(&toks).unwrap().view()).unwrap();
    assert_eq!(logits.dim(), (200, c.vocab));
    for (i, &got) in nll.iter().enumerate() {
        let row = logits.row(i);
        let lse = row.iter().map(|&l| f64::from(l).exp()).sum::<f64>().ln();
        let want = lse - f64::from(row[toks[i + 1] as usize]);
        assert!((f64::from(got) - want).abs() < 1e-4 * want.abs().max(1.0), "{i}: {got} vs {want}");
    }
    assert!(model.nll(&toks[..1]).unwrap().is_empty());
}

#[test]
fn perplexity_is_the_mean_over_windows() {
    let c = tiny();
    let model = LlamaModel::random(c, 5).unwrap();
    let (windows, len) = (3, 20);
    let toks = tokens(windows * len + 7, c.vocab, 5);
    let result = perplexity(&model, &toks, windows, len, |_| {}).unwrap();
    assert_eq!(result.tokens_scored, windows * (len - 1));
    assert_eq!((result.windows, result.window_len), (windows, len));
    let mut sum = 0.0f64;
    for w in 0..windows {
        let nll = model.nll(&toks[w * len..(w + 1) * len]).unwrap();
        assert_eq!(nll.len(), len - 1);
        sum += nll.iter().map(|&v| f64::from(v)).sum::<f64>();
    }
    let mean = sum / (windows * (len - 1)) as f64;
    assert!((result.mean_nll - mean).abs() < 1e-9 * mean.abs().max(1.0));
    assert!((result.ppl - mean.exp()).abs() < 1e-9 * mean.exp());
    let json = serde_json::to_string(&result).unwrap();
    assert!(json.contains("\"ppl\"") && json.contains("\"tokens_scored\":57"), "{json}");

    let err = perplexity(&model, &toks[..50], windows, len, |_| {}).unwrap_err();
    assert!(matches!(err, OptimaError::InvalidSetting(_)), "{err}");
    assert!(err.to_string().contains("60"), "{err}");
    for (w, l) in [(1, 1), (1, 0), (0, 10)] {
        assert!(
            matches!(perplexity(&model, &toks, w, l, |_| {}), Err(optima::OptimaError::InvalidSetting(_))),
            "{w} × {l}"
        );
    }
}

#[test]
fn uniform_logits_give_perplexity_equal_to_vocab() {
    let c = tiny();
    let toks = tokens(60, c.vocab, 6);
    // Tied head with zero embeddings: every hidden state and every logit is 0.
    let mut tied = LlamaModel::random(c, 6).unwrap();
    tied.token_embd.fill(0.0);
    let r = perplexity(&tied, &toks, 2, 30, |_| {}).unwrap();
    assert!((r.ppl - c.vocab as f64).abs() < 1e-4 * c.vocab as f64, "{}", r.ppl);
    // Separate zero output head, random embeddings.
    let mut untied = LlamaModel::random(c, 7).unwrap();
    untied.output = Some(Array2::zeros((c.vocab, c.hidden)));
    let r = perplexity(&untied, &toks, 2, 30, |_| {}).unwrap();
    assert!((r.ppl - c.vocab as f64).abs() < 1e-4 * c.vocab as f64, "{}", r.ppl);
}

#[test]
fn a_random_model_is_reproducible_and_sane() {
    let c = tiny();
    let a = LlamaModel::random(c, 9).unwrap();
    let b = LlamaModel::random(c, 9).unwrap();
    let d = LlamaModel::random(c, 10).unwrap();
    assert_eq!(a.blocks[1].down, b.blocks[1].down);
    assert_ne!(a.blocks[1].down, d.blocks[1].down);
    a.check().unwrap();
    let ppl = perplexity(&a, &tokens(64, c.vocab, 1), 1, 64, |_| {}).unwrap().ppl;
    assert!(ppl.is_finite() && ppl > 1.0, "{ppl}");
}

fn tensor_map(model: &LlamaModel) -> (HashMap<String, Array2<f32>>, HashMap<String, Vec<f32>>) {
    let mut mats = HashMap::new();
    let mut vecs = HashMap::new();
    mats.insert("token_embd.weight".to_string(), model.token_embd.clone());
    for (i, b) in model.blocks.iter().enumerate() {
        for kind in LinearKind::ALL {
            mats.insert(kind.gguf_name(i), b.weight(kind).clone());
        }
        vecs.insert(format!("blk.{i}.attn_norm.weight"), b.attn_norm.clone());
        vecs.insert(format!("blk.{i}.ffn_norm.weight"), b.ffn_norm.clone());
    }
    vecs.insert("output_norm.weight".to_string(), model.output_norm.clone());
    (mats, vecs)
}

fn load(
    c: LlamaConfig,
    mats: &HashMap<String, Array2<f32>>,
    vecs: &HashMap<String, Vec<f32>>,
) -> optima::Result<LlamaModel> {
    let missing = |name: &str| OptimaError::InvalidSetting(format!("missing tensor {name}"));
    LlamaModel::from_tensors(
        c,
        |name| mats.get(name).cloned().ok_or_else(|| missing(name)),
        |name| vecs.get(name).cloned().ok_or_else(|| missing(name)),
        |name| Ok(mats.get(name).cloned()),
    )
}

#[test]
fn from_tensors_uses_gguf_names_and_checks_shapes() {
    let c = tiny();
    let model = LlamaModel::random(c, 8).unwrap();
    let (mut mats, mut vecs) = tensor_map(&model);
    assert!(mats.contains_key("blk.1.attn_output.weight") && mats.contains_key("blk.0.ffn_down.weight"));
    let loaded = load(c, &mats, &vecs).unwrap();
    let toks = tokens(20, c.vocab, 8);
    assert_eq!(loaded.nll(&toks).unwrap(), model.nll(&toks).unwrap());
    assert!(loaded.output.is_none());

    // A separate output head is picked up.
    mats.insert("output.weight".to_string(), Array2::zeros((c.vocab, c.hidden)));
    assert!(load(c, &mats, &vecs).unwrap().output.is_some());

    // Wrong shapes name the tensor.
    let good_k = mats["blk.1.attn_k.weight"].clone();
    mats.insert("blk.1.attn_k.weight".to_string(), Array2::zeros((c.hidden, c.hidden)));
    let err = load(c, &mats, &vecs).unwrap_err();
    assert!(
        matches!(err, OptimaError::ShapeMismatch { .. }) && err.to_string().contains("blk.1.attn_k.weight"),
        "{err}"
    );
    mats.insert("blk.1.attn_k.weight".to_string(), good_k);
    vecs.insert("blk.0.ffn_norm.weight".to_string(), vec![1.0; 3]);
    let err = load(c, &mats, &vecs).unwrap_err();
    assert!(err.to_string().contains("blk.0.ffn_norm.weight"), "{err}");
    vecs.insert("blk.0.ffn_norm.weight".to_string(), vec![1.0; c.hidden]);
    mats.insert("output.weight".to_string(), Array2::zeros((c.vocab, c.hidden + 1)));
    let err = load(c, &mats, &vecs).unwrap_err();
    assert!(err.to_string().contains("output.weight"), "{err}");
    mats.remove("output.weight");

    // Non-finite values are located.
    mats.get_mut("blk.0.ffn_up.weight").unwrap()[[5, 7]] = f32::NAN;
    let err = load(c, &mats, &vecs).unwrap_err();
    assert!(matches!(err, OptimaError::NonFinite { row: 5, col: 7, .. }), "{err}");
    mats.get_mut("blk.0.ffn_up.weight").unwrap()[[5, 7]] = 0.0;

    // A missing tensor's error comes through.
    mats.remove("blk.1.ffn_gate.weight");
    let err = load(c, &mats, &vecs).unwrap_err();
    assert!(err.to_string().contains("blk.1.ffn_gate.weight"), "{err}");
}

#[test]
fn bad_configs_and_inputs_are_typed_errors() {
    let c = tiny();
    for bad in [
        LlamaConfig { heads: 3, ..c },
        LlamaConfig { kv_heads: 3, ..c },
        LlamaConfig { head_dim: 15, heads: 4, hidden: 60, ..c },
        LlamaConfig { vocab: 0, ..c },
        LlamaConfig { rope_theta: f32::NAN, ..c },
        LlamaConfig { rms_eps: -1.0, ..c },
    ] {
        let err = bad.validate().unwrap_err();
        assert!(matches!(err, OptimaError::InvalidSetting(_)), "{err}");
        assert!(matches!(LlamaModel::random(bad, 1), Err(optima::OptimaError::InvalidSetting(_))));
    }
    LlamaConfig::smollm2_135m().validate().unwrap();

    let mut model = LlamaModel::random(c, 1).unwrap();
    let err = model.embed(&[1, 2, 100]).unwrap_err();
    assert!(err.to_string().contains("100") && err.to_string().contains("position 2"), "{err}");
    assert!(matches!(model.embed(&[]).unwrap_err(), OptimaError::Empty(_)));
    assert!(matches!(model.nll(&tokens(c.context + 1, c.vocab, 1)), Err(optima::OptimaError::InvalidSetting(_))));
    let x = random_input(5, c.hidden + 1, 1);
    assert!(matches!(model.block_forward(0, x.view(), None).unwrap_err(), OptimaError::ShapeMismatch { .. }));
    let x = random_input(5, c.hidden, 1);
    assert!(matches!(model.block_forward(2, x.view(), None), Err(optima::OptimaError::InvalidSetting(_))));
    assert!(matches!(
        model.logits(random_input(3, c.hidden - 1, 1).view()),
        Err(optima::OptimaError::ShapeMismatch { .. })
    ));
    // An empty block input gives an empty output.
    assert_eq!(model.block_forward(0, random_input(0, c.hidden, 1).view(), None).unwrap().dim(), (0, c.hidden));
    // A weight replaced with the wrong shape is an error, not a panic.
    *model.blocks[0].weight_mut(LinearKind::Up) = Array2::zeros((3, 3));
    let err = model.block_forward(0, x.view(), None).unwrap_err();
    assert!(err.to_string().contains("blk.0.ffn_up.weight"), "{err}");
    assert!(matches!(model.check(), Err(optima::OptimaError::ShapeMismatch { .. })));
}

#[test]
fn config_from_metadata() {
    let meta: HashMap<&str, f64> = [
        ("llama.embedding_length", 576.0),
        ("llama.feed_forward_length", 1536.0),
        ("llama.block_count", 30.0),
        ("llama.attention.head_count", 9.0),
        ("llama.attention.head_count_kv", 3.0),
        ("llama.rope.freq_base", 100_000.0),
        ("llama.attention.layer_norm_rms_epsilon", 1e-5),
        ("llama.context_length", 8192.0),
    ]
    .into_iter()
    .collect();
    let c = LlamaConfig::from_metadata(|k| meta.get(k).copied(), 49152).unwrap();
    assert_eq!(c, LlamaConfig::smollm2_135m());
    let mut partial = meta.clone();
    partial.remove("llama.block_count");
    let err = LlamaConfig::from_metadata(|k| partial.get(k).copied(), 49152).unwrap_err();
    assert!(err.to_string().contains("llama.block_count"), "{err}");
    assert_eq!(LinearKind::Q.gguf_name(7), "blk.7.attn_q.weight");
    assert_eq!(LinearKind::O.gguf_name(0), "blk.0.attn_output.weight");
}

/// Forward speed at SmolLM2-135M's shape: `cargo test --release --test llama -- --ignored --nocapture`.
#[test]
#[ignore = "a speed measurement: --release --ignored --nocapture"]
fn smollm2_shape_speed() {
    let c = LlamaConfig::smollm2_135m();
    let t0 = std::time::Instant::now();
    let model = LlamaModel::random(c, 1).unwrap();
    println!("random model: {:.2} s", t0.elapsed().as_secs_f64());
    let toks = tokens(512, c.vocab, 1);
    let x = model.embed(&toks).unwrap();
    let _ = model.block_forward(0, x.view(), None).unwrap(); // warm up
    let t0 = std::time::Instant::now();
    let h = model.hidden_states(&toks).unwrap();
    let blocks = t0.elapsed().as_secs_f64();
    let t0 = std::time::Instant::now();
    let nll = model.nll(&toks).unwrap();
    let total = t0.elapsed().as_secs_f64();
    assert_eq!(h.nrows(), 512);
    println!(
        "512 tokens: 30 blocks {blocks:.3} s ({:.0} tokens/s); with logits+NLL {total:.3} s ({:.0} tokens/s); mean nll {:.3}",
        512.0 / blocks,
        512.0 / total,
        nll.iter().map(|&v| f64::from(v)).sum::<f64>() / nll.len() as f64
    );
}

/// End to end on the real model when `assets/` holds it (`./scripts/fetch-assets.sh`):
/// `cargo test --release --test llama -- --ignored --nocapture real_smollm2`. A wrong RoPE
/// convention or layout gives perplexity in the hundreds; the right one gives tens.
#[test]
#[ignore = "the real model end to end, slow in debug: --release --ignored --nocapture"]
fn real_smollm2_perplexity_is_plausible() {
    use optima_llm::gguf::{GgufFile, GgufValue};
    use optima_llm::tokenizer::Tokenizer;
    use std::io::Read;
    let (model_path, text_path) = (assets_dir::smollm2(), assets_dir::require("jargon.txt.gz"));
    let gguf = GgufFile::read(&model_path).unwrap();
    let vocab = gguf.tensor_info("token_embd.weight").unwrap().dims[1];
    let config = LlamaConfig::from_metadata(|k| gguf.get(k).and_then(GgufValue::as_f64), vocab).unwrap();
    assert_eq!(LlamaConfig { context: 8192, ..config }, LlamaConfig::smollm2_135m());
    let model = LlamaModel::from_tensors(
        config,
        |name| gguf.tensor_matrix(name),
        |name| gguf.tensor_vector(name),
        |name| if gguf.tensor_info(name).is_ok() { gguf.tensor_matrix(name).map(Some) } else { Ok(None) },
    )
    .unwrap();
    let tokenizer = Tokenizer::from_gguf(&gguf).unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&text_path).unwrap()).read_to_string(&mut text).unwrap();
    let at = |i: usize| (i..).find(|&i| text.is_char_boundary(i)).unwrap();
    let tokens = tokenizer.encode(&text[at(text.len() / 2)..at(text.len() / 2 + 20_000)]);
    let t0 = std::time::Instant::now();
    let r = perplexity(&model, &tokens, 4, 512, |_| {}).unwrap();
    println!("SmolLM2-135M Q4_1 on jargon: {r:?} in {:.2} s", t0.elapsed().as_secs_f64());
    assert!(r.ppl > 2.0 && r.ppl < 60.0, "{r:?}");
}
