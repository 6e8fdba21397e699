//! The whole pruning pipeline on a tiny random Llama written as GGUF: no downloads.

use std::path::Path;
use std::process::Command;

use optima::io::gguf::{GgufTensorData, GgufValue, GgufValueType, write_gguf};
use optima::llm::calibration::calibration_sequences;
use optima::llm::llama::{LinearKind, LlamaConfig, LlamaModel};
use optima::llm::model_file::{WeightPrecision, load_model, write_model_gguf, write_model_safetensors};
use optima::llm::prune::{MaskerChoice, PruneSettings, plan_memory, prune_model};
use optima::llm::tokenizer::bytes_to_unicode;
use optima::memory::Bytes;
use optima::solve::SolverOptions;
use optima::{Parallelism, SparsityPattern};

fn tiny_config() -> LlamaConfig {
    LlamaConfig {
        hidden: 64,
        intermediate: 128,
        blocks: 2,
        heads: 4,
        kv_heads: 2,
        head_dim: 16,
        rope_theta: 10000.0,
        rms_eps: 1e-5,
        vocab: 260,
        context: 512,
    }
}

/// Writes `model` as a llama GGUF with a byte-level tokenizer of 256 bytes + 4 merges.
fn write_tiny_gguf(path: &Path, model: &LlamaModel) {
    let c = model.config;
    let mut tokens: Vec<String> = bytes_to_unicode().iter().map(|ch| ch.to_string()).collect();
    tokens.extend(["th", "he", "Ġt", "in"].map(String::from));
    let types = vec![GgufValue::I32(1); tokens.len()];
    let u = |v: usize| GgufValue::U32(v as u32);
    let metadata = vec![
        ("general.architecture".to_string(), GgufValue::String("llama".into())),
        ("llama.embedding_length".to_string(), u(c.hidden)),
        ("llama.feed_forward_length".to_string(), u(c.intermediate)),
        ("llama.block_count".to_string(), u(c.blocks)),
        ("llama.attention.head_count".to_string(), u(c.heads)),
        ("llama.attention.head_count_kv".to_string(), u(c.kv_heads)),
        ("llama.rope.freq_base".to_string(), GgufValue::F32(c.rope_theta)),
        ("llama.attention.layer_norm_rms_epsilon".to_string(), GgufValue::F32(c.rms_eps)),
        ("llama.context_length".to_string(), u(c.context)),
        ("tokenizer.ggml.model".to_string(), GgufValue::String("gpt2".into())),
        ("tokenizer.ggml.pre".to_string(), GgufValue::String("smollm".into())),
        ("tokenizer.ggml.tokens".to_string(), GgufValue::string_array(tokens)),
        ("tokenizer.ggml.merges".to_string(), GgufValue::string_array(["t h", "h e", "Ġ t", "i n"])),
        ("tokenizer.ggml.token_type".to_string(), GgufValue::Array(GgufValueType::I32, types)),
    ];
    let matrix = |name: String, a: &ndarray::Array2<f32>| {
        (name, vec![a.ncols(), a.nrows()], GgufTensorData::F32(a.iter().copied().collect()))
    };
    let vector = |name: String, v: &[f32]| (name, vec![v.len()], GgufTensorData::F32(v.to_vec()));
    let mut tensors = vec![matrix("token_embd.weight".into(), &model.token_embd)];
    for (b, block) in model.blocks.iter().enumerate() {
        tensors.push(vector(format!("blk.{b}.attn_norm.weight"), &block.attn_norm));
        tensors.push(vector(format!("blk.{b}.ffn_norm.weight"), &block.ffn_norm));
        for kind in LinearKind::ALL {
            tensors.push(matrix(kind.gguf_name(b), block.weight(kind)));
        }
    }
    tensors.push(vector("output_norm.weight".into(), &model.output_norm));
    write_gguf(path, &metadata, &tensors).unwrap();
}

fn settings(pattern: &str, masker: MaskerChoice, update: &str) -> PruneSettings {
    PruneSettings {
        pattern: pattern.parse().unwrap(),
        masker,
        update: update.parse().unwrap(),
        percdamp: 0.01,
        solver: SolverOptions { parallelism: Parallelism::Threads(2), ..SolverOptions::default() },
        device: optima::backend::Device::Cpu,
        max_blocks: None,
        progress: false,
        memory_budget: None,
        save_problems: None,
    }
}

fn calibration(seed: u64) -> Vec<Vec<u32>> {
    let stream: Vec<u32> = (0..4000u32).map(|i| (i.wrapping_mul(2654435761) >> 7) % 260).collect();
    calibration_sequences(&stream, 6, 48, seed).unwrap()
}

fn check_pattern(model: &LlamaModel, pattern: &SparsityPattern) {
    for block in &model.blocks {
        for kind in LinearKind::ALL {
            let w = block.weight(kind);
            let mask = optima::Mask::from_fn(w.nrows(), w.ncols(), |i, j| w[[i, j]] == 0.0);
            mask.validate(pattern).unwrap_or_else(|e| panic!("{kind}: {e}"));
        }
    }
}

#[test]
fn gguf_model_round_trips_bit_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    let model = LlamaModel::random(tiny_config(), 1).unwrap();
    write_tiny_gguf(&path, &model);
    let loaded = load_model(&path).unwrap();
    assert_eq!(loaded.model.config, model.config);
    assert_eq!(loaded.model.token_embd, model.token_embd);
    for (a, b) in loaded.model.blocks.iter().zip(&model.blocks) {
        for kind in LinearKind::ALL {
            assert_eq!(a.weight(kind), b.weight(kind), "{kind}");
        }
        assert_eq!(a.attn_norm, b.attn_norm);
    }
    // Written back by the library (all metadata kept), read again: the same bits.
    let again = dir.path().join("again.gguf");
    write_model_gguf(&again, &loaded.gguf, &loaded.model, WeightPrecision::F32).unwrap();
    let reloaded = load_model(&again).unwrap();
    assert_eq!(reloaded.model.blocks[1].down, model.blocks[1].down);
    assert_eq!(reloaded.gguf.get_str("tokenizer.ggml.pre").unwrap(), "smollm");
    assert_eq!(reloaded.gguf.metadata.len(), loaded.gguf.metadata.len() + 1); // + general.file_type
    // The input model is never overwritten.
    assert!(write_model_gguf(&path, &loaded.gguf, &loaded.model, WeightPrecision::F32).is_err());
}

#[test]
fn pruning_reconstructs_every_layer_and_writes_the_exact_sparsity() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    write_tiny_gguf(&path, &LlamaModel::random(tiny_config(), 2).unwrap());
    for pattern in ["0.5", "2:4"] {
        let mut loaded = load_model(&path).unwrap();
        let report =
            prune_model(&mut loaded.model, &calibration(0), &settings(pattern, MaskerChoice::Wanda, "direct")).unwrap();
        assert_eq!(report.layers.len(), 14);
        for l in &report.layers {
            assert!((l.sparsity - 0.5).abs() < 1e-12, "{pattern} {}: {}", l.layer, l.sparsity);
            assert!(l.error_after < l.error_before, "{pattern} block {} {}", l.block, l.layer);
            assert!(l.kkt_residual < 1e-9 && l.failed_rows == 0);
        }
        assert!(report.mean_error_after < report.mean_error_before);
        assert!(loaded.model.nll(&calibration(9)[0]).unwrap().iter().all(|v| v.is_finite()));
        let pattern: SparsityPattern = pattern.parse().unwrap();
        check_pattern(&loaded.model, &pattern);
        for precision in [WeightPrecision::F32, WeightPrecision::F16] {
            let out = dir.path().join(format!("pruned-{precision:?}.gguf"));
            write_model_gguf(&out, &loaded.gguf, &loaded.model, precision).unwrap();
            let written = load_model(&out).unwrap();
            check_pattern(&written.model, &pattern);
            if precision == WeightPrecision::F32 {
                assert_eq!(written.model.blocks[0].q, loaded.model.blocks[0].q);
            }
        }
    }
}

#[test]
fn exact_reconstruction_beats_mask_only_and_sparsegpt_updates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    write_tiny_gguf(&path, &LlamaModel::random(tiny_config(), 3).unwrap());
    let run = |masker, update: &str| {
        let mut loaded = load_model(&path).unwrap();
        prune_model(&mut loaded.model, &calibration(0), &settings("0.5", masker, update)).unwrap()
    };
    let mask_only = run(MaskerChoice::Wanda, "none");
    let exact = run(MaskerChoice::Wanda, "direct");
    let auto = run(MaskerChoice::Wanda, "auto");
    assert!(exact.mean_error_after < mask_only.mean_error_after);
    assert!((auto.mean_error_after - exact.mean_error_after).abs() <= 1e-6 * exact.mean_error_after);
    // Block 0 sees identical inputs in both runs, so layer by layer exact ≤ SparseGPT's own update.
    let sgpt = run(MaskerChoice::SparseGpt, "sparsegpt");
    let sgpt_exact = run(MaskerChoice::SparseGpt, "direct");
    for (a, b) in sgpt_exact.layers.iter().zip(&sgpt.layers).take(7) {
        assert!(a.error_after <= b.error_after * (1.0 + 1e-9), "{}: {} vs {}", a.layer, a.error_after, b.error_after);
    }
}

#[test]
fn the_cli_prunes_evaluates_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    write_tiny_gguf(&model, &LlamaModel::random(tiny_config(), 4).unwrap());
    let text = dir.path().join("calib.txt");
    std::fs::write(&text, "the thin thing in the tin then ".repeat(200)).unwrap();
    let out = dir.path().join("pruned.gguf");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let run = |args: &[String]| Command::new(env!("CARGO_BIN_EXE_optima")).args(args).output().unwrap();
    let args: Vec<String> = [
        "prune",
        "--model",
        &s(&model),
        "--calib",
        &s(&text),
        "--pattern",
        "2:4",
        "--solver",
        "direct",
        "--calib-seqs",
        "4",
        "--seq-len",
        "32",
        "--out",
        &s(&out),
        "--eval",
        &s(&text),
        "--windows",
        "2",
        "--window-len",
        "16",
        "--json",
    ]
    .map(String::from)
    .to_vec();
    let result = run(&args);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let v: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    assert!(v["perplexity"]["ppl"].as_f64().unwrap() > 1.0);
    assert!(v["mean_error_after"].as_f64().unwrap() < v["mean_error_before"].as_f64().unwrap());
    check_pattern(&load_model(&out).unwrap().model, &"2:4".parse().unwrap());
    let ppl = run(&[
        "perplexity",
        "--model",
        &s(&out),
        "--text",
        &s(&text),
        "--windows",
        "2",
        "--window-len",
        "16",
        "--json",
    ]
    .map(String::from));
    assert!(ppl.status.success(), "{}", String::from_utf8_lossy(&ppl.stderr));

    let mut overwrite = args.clone();
    let pos = overwrite.iter().position(|a| a == "--out").unwrap();
    overwrite[pos + 1] = s(&model);
    let refused = run(&overwrite);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("refusing to overwrite"));
    let missing = run(&["perplexity", "--model", "/nonexistent/m.gguf", "--text", &s(&text)].map(String::from));
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("fetch-assets"));
}

#[test]
fn max_blocks_leaves_later_blocks_dense() {
    let mut model = LlamaModel::random(tiny_config(), 5).unwrap();
    let dense = model.clone();
    let mut s = settings("0.5", MaskerChoice::Magnitude, "direct");
    s.max_blocks = Some(1);
    let report = prune_model(&mut model, &calibration(1), &s).unwrap();
    assert_eq!(report.layers.len(), 7);
    assert!(report.layers.iter().all(|l| l.block == 0));
    assert_ne!(model.blocks[0].q, dense.blocks[0].q);
    for kind in LinearKind::ALL {
        assert_eq!(model.blocks[1].weight(kind), dense.blocks[1].weight(kind));
    }
}

#[test]
fn saved_layer_problems_reproduce_the_pruned_layers_bit_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = LlamaModel::random(tiny_config(), 7).unwrap();
    let dense = model.clone();
    let mut s = settings("0.5", MaskerChoice::Wanda, "direct");
    s.max_blocks = Some(1);
    s.save_problems = Some(dir.path().to_path_buf());
    prune_model(&mut model, &calibration(2), &s).unwrap();
    for kind in LinearKind::ALL {
        let path = dir.path().join(format!("blk.0.{}.safetensors", kind.short_name()));
        let file = optima::io::read_problem_file(&path).unwrap();
        assert_eq!(file.weight, dense.blocks[0].weight(kind).mapv(f64::from), "{kind}");
        // The file's Hessian is undamped: damped again as the run did, solving it gives the layer.
        let hessian = optima::Hessian::new(file.hessian, 0.01).unwrap();
        let problem = optima::LayerProblem::new(file.weight, hessian, file.mask.unwrap()).unwrap();
        let solved = optima::solve::solver_by_name("direct", &s.solver).unwrap().solve(&problem, None).unwrap();
        assert_eq!(solved.weight.mapv(|v| v as f32), *model.blocks[0].weight(kind), "{kind}");
    }
    assert!(!dir.path().join("blk.1.attn_q.safetensors").exists());
}

#[test]
fn a_killed_run_resumes_from_its_checkpoint_to_the_same_bits() {
    let dir = tempfile::tempdir().unwrap();
    let config = LlamaConfig { hidden: 128, intermediate: 384, blocks: 6, heads: 8, kv_heads: 4, ..tiny_config() };
    let model = dir.path().join("tiny.gguf");
    write_tiny_gguf(&model, &LlamaModel::random(config, 6).unwrap());
    let text = dir.path().join("calib.txt");
    std::fs::write(&text, "the thin thing in the tin then ".repeat(400)).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let args = |out: &Path| -> Vec<String> {
        let a = ["prune", "--model", &s(&model), "--calib", &s(&text), "--solver", "direct", "--masker", "sparsegpt"];
        let b = ["--calib-seqs", "16", "--seq-len", "96", "--threads", "2", "--json", "--out", &s(out)];
        a.iter().chain(&b).map(|x| x.to_string()).collect()
    };
    let optima = || Command::new(env!("CARGO_BIN_EXE_optima"));

    let reference = dir.path().join("reference.gguf");
    let done = optima().args(args(&reference)).output().unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    assert!(!dir.path().join("reference.gguf.checkpoint").exists(), "checkpoint removed after success");

    // Kill a second run as soon as its checkpoint shows a finished block.
    let out = dir.path().join("out.gguf");
    let manifest = dir.path().join("out.gguf.checkpoint/manifest.json");
    let blocks_done = || -> usize {
        std::fs::read(&manifest)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["blocks_done"].as_u64())
            .unwrap_or(0) as usize
    };
    let mut child = optima().args(args(&out)).stdout(std::process::Stdio::null()).spawn().unwrap();
    while blocks_done() < 2 {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be interrupted");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let interrupted_at = blocks_done();
    assert!((2..config.blocks).contains(&interrupted_at), "killed after {interrupted_at} blocks");
    assert!(!out.exists(), "an interrupted run leaves no output");

    // Without --resume the unfinished run is not silently discarded.
    let refused = optima().args(args(&out)).output().unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--resume"));

    let mut resume = args(&out);
    resume.push("--resume".into());
    let resumed = optima().args(&resume).output().unwrap();
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&reference).unwrap(), "resumed output differs");
    let a: serde_json::Value = serde_json::from_slice(&done.stdout).unwrap();
    let b: serde_json::Value = serde_json::from_slice(&resumed.stdout).unwrap();
    assert_eq!(a["mean_error_after"], b["mean_error_after"]);
    assert!(!dir.path().join("out.gguf.checkpoint").exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn a_memory_budget_spills_activations_and_chunks_solves_to_the_same_bits() {
    let dense = LlamaModel::random(tiny_config(), 7).unwrap();
    let calib = calibration(3);
    let seq_len = calib[0].len();
    for update in ["direct", "pcg"] {
        let free = settings("0.5", MaskerChoice::Wanda, update);
        let mut unbounded = dense.clone();
        let reference = prune_model(&mut unbounded, &calib, &free).unwrap();
        // Just enough for one sequence in memory and a few rows per solve.
        let tight = {
            let mut s = settings("0.5", MaskerChoice::Wanda, update);
            s.memory_budget = Some(Bytes(1));
            let needed = match plan_memory(&dense.config, calib.len(), seq_len, &s).unwrap_err() {
                optima::OptimaError::MemoryBudget { needed, .. } => needed,
                e => panic!("{e}"),
            };
            s.memory_budget = Some(Bytes(needed.0 + 64 * 1024));
            s
        };
        let plan = plan_memory(&dense.config, calib.len(), seq_len, &tight).unwrap();
        assert!(plan.activations_on_disk);
        let mut bounded = dense.clone();
        let report = prune_model(&mut bounded, &calib, &tight).unwrap();
        for (a, b) in reference.layers.iter().zip(&report.layers) {
            assert_eq!(a.failed_rows, b.failed_rows);
            let gap = (a.error_after - b.error_after).abs() / a.error_after;
            assert!(gap < 1e-9, "{update} {}: {} vs {}", a.layer, a.error_after, b.error_after);
        }
        if update == "direct" {
            // Rows are independent exact solves: chunking and spilling change no bit.
            for (x, y) in unbounded.blocks.iter().zip(&bounded.blocks) {
                for kind in LinearKind::ALL {
                    assert_eq!(x.weight(kind), y.weight(kind), "{kind}");
                }
            }
        }
    }
    // A budget below one block's needs fails before any work, naming what does not fit.
    let mut s = settings("0.5", MaskerChoice::Wanda, "direct");
    s.memory_budget = Some(Bytes(100_000));
    let mut model = dense.clone();
    let err = prune_model(&mut model, &calib, &s).unwrap_err();
    assert!(matches!(err, optima::OptimaError::MemoryBudget { .. }), "{err}");
    assert!(err.to_string().contains("memory budget"), "{err}");
    assert_eq!(model.blocks[0].q, dense.blocks[0].q, "nothing was pruned");
}

#[test]
fn hostile_model_files_and_budgets_exit_with_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let model = dir.path().join("tiny.gguf");
    let mut dense = LlamaModel::random(tiny_config(), 8).unwrap();
    write_tiny_gguf(&model, &dense);
    let text = dir.path().join("calib.txt");
    std::fs::write(&text, "the thin thing in the tin then ".repeat(100)).unwrap();
    let run = |model: &Path, extra: &[&str]| {
        let mut args = vec!["prune".to_string(), "--model".into(), s(model), "--calib".into(), s(&text)];
        args.extend(["--calib-seqs", "2", "--seq-len", "16"].map(String::from));
        args.extend(extra.iter().map(|a| a.to_string()));
        Command::new(env!("CARGO_BIN_EXE_optima")).args(&args).output().unwrap()
    };
    let fails_cleanly = |out: std::process::Output, needle: &str| {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line expected: {stderr}");
        assert!(stderr.starts_with("error: ") && stderr.contains(needle), "{needle:?} not in {stderr}");
    };

    let bytes = std::fs::read(&model).unwrap();
    for cut in [0, 3, 24, bytes.len() / 3, bytes.len() - 1] {
        let truncated = dir.path().join(format!("cut{cut}.gguf"));
        std::fs::write(&truncated, &bytes[..cut]).unwrap();
        fails_cleanly(run(&truncated, &[]), "cut");
    }

    dense.blocks[1].up[[3, 5]] = f32::NAN;
    let nan = dir.path().join("nan.gguf");
    write_tiny_gguf(&nan, &dense);
    fails_cleanly(run(&nan, &[]), "blk.1.ffn_up.weight");

    let out = dir.path().join("out.gguf");
    fails_cleanly(run(&model, &["--max-memory", "300K", "--out", &s(&out)]), "memory budget");
    // A GPU that is not there (or not compiled in) is refused before any work, in one line.
    fails_cleanly(run(&model, &["--device", "cuda", "--solver", "direct", "--out", &s(&out)]), "CUDA");
    // A malformed flag is a usage error: clap's exit code 2 and its usage hint, never a panic.
    let usage = run(&model, &["--max-memory", "lots"]);
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).starts_with("error: invalid value 'lots'"));
    assert!(!out.exists());
}

#[test]
fn safetensors_output_holds_every_tensor_bit_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    let model = LlamaModel::random(tiny_config(), 9).unwrap();
    write_tiny_gguf(&path, &model);
    let loaded = load_model(&path).unwrap();
    let out = dir.path().join("tiny.safetensors");
    write_model_safetensors(&out, &loaded.gguf, &loaded.model).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), loaded.gguf.tensors.len());
    let down = st.tensor("blk.1.ffn_down.weight").unwrap();
    assert_eq!(down.shape(), &[64, 128]);
    let values: Vec<f32> = down.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(values, model.blocks[1].down.iter().copied().collect::<Vec<_>>());
    assert!(write_model_safetensors(&path, &loaded.gguf, &loaded.model).is_err(), "never overwrites the input");
}
