//! The `optima` binary's prune and perplexity commands on a tiny random Llama written as GGUF.

#[path = "../../optima-llm/tests/tiny_model/mod.rs"]
mod tiny_model;

use std::path::Path;
use std::process::Command;

use optima_llm::llama::{LlamaConfig, LlamaModel};
use optima_llm::model_file::load_model;
use tiny_model::*;

/// What `optima perplexity --json` prints for `model` on 2 windows of 16 tokens of `text`.
fn perplexity_json(model: &Path, text: &Path) -> serde_json::Value {
    let (model, text) = (model.to_str().unwrap(), text.to_str().unwrap());
    let args = ["perplexity", "--model", model, "--text", text, "--windows", "2", "--window-len", "16", "--json"];
    let r = Command::new(env!("CARGO_BIN_EXE_optima")).args(args).output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    serde_json::from_slice(&r.stdout).unwrap()
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
    assert!(perplexity_json(&out, &text)["ppl"].as_f64().unwrap() > 1.0);

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
fn presets_run_their_recipes_and_explicit_flags_override_them() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    write_tiny_gguf(&model, &LlamaModel::random(tiny_config(), 8).unwrap());
    let text = dir.path().join("calib.txt");
    std::fs::write(&text, "the thin thing in the tin then ".repeat(200)).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let prune = |extra: &[&str]| -> serde_json::Value {
        let (model, text) = (s(&model), s(&text));
        let mut args = vec!["prune", "--model", &model, "--calib", &text, "--seq-len", "32"];
        if !extra.contains(&"--calib-seqs") {
            args.extend(["--calib-seqs", "4"]);
        }
        args.extend(["--max-blocks", "1", "--json"]);
        args.extend(extra);
        let out = Command::new(env!("CARGO_BIN_EXE_optima")).args(&args).output().unwrap();
        assert!(out.status.success(), "{extra:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let recipe = |v: &serde_json::Value| {
        (
            v["preset"].clone(),
            v["masker"].clone(),
            v["solver"].clone(),
            v["damping"].clone(),
            v["keep_only_improving"].clone(),
        )
    };
    use serde_json::json;
    assert_eq!(recipe(&prune(&[])), (json!(null), json!("wanda"), json!("auto"), json!(0.01), json!(false)));
    let sparsegpt = prune(&["--preset", "sparsegpt"]);
    assert_eq!(
        recipe(&sparsegpt),
        (json!("sparsegpt"), json!("sparsegpt"), json!("sparsegpt"), json!(0.01), json!(false))
    );
    assert_eq!(sparsegpt["updates_kept"], 7, "one block, every update kept");
    let wanda = prune(&["--preset", "wanda"]);
    assert_eq!(recipe(&wanda), (json!("wanda"), json!("wanda"), json!("none"), json!(0.01), json!(false)));
    assert_eq!(wanda["updates_kept"], 0);
    // Wanda's mask alone needs only the Hessians' diagonal: E is not measured, unless asked for.
    assert_eq!(wanda["hessians"], "diagonal");
    assert_eq!((&wanda["mean_error_before"], &wanda["mean_error_after"]), (&json!(null), &json!(null)));
    let measured = prune(&["--preset", "wanda", "--layer-error"]);
    assert_eq!(measured["hessians"], "full");
    assert!(measured["mean_error_before"].as_f64().unwrap() > 0.0);
    assert_eq!(measured["mean_error_after"], measured["mean_error_before"]);
    let paper = prune(&["--preset", "optima-paper"]);
    assert_eq!(recipe(&paper), (json!("optima-paper"), json!("wanda"), json!("pdhg"), json!(0.01), json!(true)));
    // Explicit flags win over the preset's.
    let overridden =
        prune(&["--preset", "optima-paper", "--masker", "magnitude", "--solver", "direct", "--damping", "0.1"]);
    assert_eq!(
        recipe(&overridden),
        (json!("optima-paper"), json!("magnitude"), json!("direct"), json!(0.1), json!(true))
    );
    // In-block order: the presets calibrate a block in one pass, the default in order.
    assert_eq!(prune(&[])["in_block"], "sequential");
    for v in [&sparsegpt, &wanda, &paper] {
        assert_eq!(v["in_block"], "parallel", "{}", v["preset"]);
    }
    assert_eq!(prune(&["--in-block", "parallel"])["in_block"], "parallel");
    // Held-out dampings: the default's with 8 sequences or more (off with the 4 above), none for
    // the presets, explicit flags either way.
    assert_eq!(prune(&[])["held_out"], json!(null), "4 sequences are too few to hold 1 in 8 out");
    let held = prune(&["--calib-seqs", "8"]);
    assert_eq!(held["held_out"], json!({ "every": 8, "grid": [0.01, 0.03, 0.1, 0.3], "damps_refinement": true }));
    let at_run = prune(&["--calib-seqs", "8", "--refine-damping", "run"]);
    assert_eq!(at_run["held_out"]["damps_refinement"], false);
    let chosen: u64 = held["dampings_chosen"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(chosen, held["updates_kept"].as_u64().unwrap());
    let explicit = prune(&["--preset", "sparsegpt", "--held-out", "2", "--damping-grid", "0.1,1"]);
    assert_eq!(explicit["held_out"], json!({ "every": 2, "grid": [0.1, 1.0], "damps_refinement": true }));
    assert_eq!(prune(&["--calib-seqs", "8", "--held-out", "0"])["held_out"], json!(null));
    assert_eq!(prune(&["--calib-seqs", "8", "--solver", "none"])["held_out"], json!(null), "nothing to choose");
    let refused = |extra: &[&str], says: &str| {
        let (m, t) = (s(&model), s(&text));
        let mut args = vec!["prune", "--model", &m, "--calib", &t, "--calib-seqs", "4", "--seq-len", "32"];
        args.extend(extra);
        let out = Command::new(env!("CARGO_BIN_EXE_optima")).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(says), "{extra:?}: {stderr}");
    };
    refused(&["--preset", "wanda", "--damping-grid", "0.1"], "--damping-grid needs --held-out");
    refused(&["--held-out", "2", "--solver", "none"], "needs a weight update");
    refused(&["--held-out", "8"], "needs at least 8 sequences");
    refused(&["--held-out", "0", "--refine-damping", "held-out"], "--refine-damping held-out needs --held-out");
    refused(&["--refine-damping", "fixed"], "choose held-out or run");
    // f32 Hessian products: named in the recipe, the same fit to their rounding.
    let exact = |precision: &str| prune(&["--held-out", "0", "--refine", "0", "--hessian-precision", precision]);
    let (f64_run, f32_run) = (exact("f64"), exact("f32"));
    assert_eq!((&f64_run["hessian_precision"], &f32_run["hessian_precision"]), (&json!("f64"), &json!("f32")));
    assert_eq!(prune(&[])["hessian_precision"], "f64", "f64 by default");
    let error = |v: &serde_json::Value| v["mean_error_after"].as_f64().unwrap();
    assert!((error(&f64_run) - error(&f32_run)).abs() <= 1e-4 * error(&f64_run), "{f64_run} against {f32_run}");
    refused(&["--hessian-precision", "f16"], "choose f64 or f32");
    let t = s(&text);
    refused(
        &["--eval", &t, "--eval", &t, "--start-char", "1", "--start-char", "2", "--start-char", "3"],
        "--start-char values",
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_optima"))
        .args(["prune", "--model", &s(&model), "--calib", &s(&text), "--preset", "obs"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("unknown preset"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn a_hugging_face_folder_prunes_and_evaluates_like_its_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let model = LlamaModel::random(tiny_config(), 12).unwrap();
    let gguf = dir.path().join("tiny.gguf");
    write_tiny_gguf(&gguf, &model);
    let folder = dir.path().join("tiny-hf");
    tiny_model::hf::write_hf(&folder, &model, &tiny_model::hf::HfWrite { shards: 2, ..Default::default() });
    let text = dir.path().join("calib.txt");
    std::fs::write(&text, "the thin thing in the tin then 12 34 ".repeat(200)).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let run = |args: &[String]| Command::new(env!("CARGO_BIN_EXE_optima")).args(args).output().unwrap();
    let prune = |model: &Path, out: &Path| -> std::process::Output {
        let args = ["prune", "--model", &s(model), "--calib", &s(&text), "--pattern", "0.5", "--solver", "direct"];
        let more =
            ["--calib-seqs", "4", "--seq-len", "32", "--eval", &s(&text), "--windows", "2", "--window-len", "16"];
        run(&[&args[..], &more[..], &["--out", &s(out), "--json"]]
            .concat()
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>())
    };
    let (a, b) = (dir.path().join("from-gguf.safetensors"), dir.path().join("from-hf.safetensors"));
    let (ra, rb) = (prune(&gguf, &a), prune(&folder, &b));
    for r in [&ra, &rb] {
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    }
    let (va, vb): (serde_json::Value, serde_json::Value) =
        (serde_json::from_slice(&ra.stdout).unwrap(), serde_json::from_slice(&rb.stdout).unwrap());
    assert_eq!(va["perplexity"], vb["perplexity"]);
    assert_eq!(va["mean_error_after"], vb["mean_error_after"]);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "the same pruned tensors, byte for byte");
    assert_eq!(perplexity_json(&gguf, &text)["ppl"], perplexity_json(&folder.join("config.json"), &text)["ppl"]);
    let refused = prune(&folder, &dir.path().join("out.gguf"));
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("needs a GGUF input"));
}

#[test]
fn prune_and_convert_write_hugging_face_folders_and_q8_0() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny.gguf");
    write_tiny_gguf(&gguf, &LlamaModel::random(tiny_config(), 13).unwrap());
    let text = dir.path().join("calib.txt");
    std::fs::write(&text, "the thin thing in the tin then 12 34 ".repeat(200)).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_optima")).args(args).output().unwrap();
    let ok = |r: &std::process::Output| assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));

    // Converted without pruning: the folder scores what the GGUF scores.
    let copy = dir.path().join("tiny-hf");
    ok(&run(&["convert", "--model", &s(&gguf), "--out", &s(&copy)]));
    assert!(copy.join("config.json").is_file() && copy.join("tokenizer.json").is_file());
    assert_eq!(perplexity_json(&gguf, &text)["ppl"], perplexity_json(&copy, &text)["ppl"]);

    // Pruned into a folder: it loads with the pattern and the perplexity prune reported.
    let out = dir.path().join("pruned-hf");
    let r = run(&[
        "prune",
        "--model",
        &s(&gguf),
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
        "--eval",
        &s(&text),
        "--windows",
        "2",
        "--window-len",
        "16",
        "--calib-eval-windows",
        "3",
        "--out",
        &s(&out),
        "--json",
    ]);
    ok(&r);
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    // The held-out calibration windows are scored: 3 windows of 16 tokens, 15 scored in each.
    let held = &v["calibration_held_out"];
    assert_eq!((held["windows"].as_u64(), held["tokens_scored"].as_u64()), (Some(3), Some(45)), "{held}");
    assert!(held["ppl"].as_f64().is_some_and(|p| p.is_finite() && p > 1.0));
    check_pattern(&load_model(&out).unwrap().model, &"2:4".parse().unwrap());
    assert_eq!(v["perplexity"]["ppl"], perplexity_json(&out, &text)["ppl"]);
    assert!(!dir.path().join("pruned-hf.checkpoint").exists());

    // The folder back to GGUF is refused (no GGUF metadata); GGUF to Q8_0 keeps the zeros.
    let r = run(&["convert", "--model", &s(&out), "--out", &s(&dir.path().join("x.gguf"))]);
    assert!(String::from_utf8_lossy(&r.stderr).contains("needs a GGUF input"));
    let pruned_gguf = dir.path().join("pruned.gguf");
    ok(&run(&["convert", "--model", &s(&out), "--out", &s(&dir.path().join("again-hf")), "--dtype", "bf16"]));
    let r = run(&[
        "prune",
        "--model",
        &s(&gguf),
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
        &s(&pruned_gguf),
        "--json",
    ]);
    ok(&r);
    let q8 = dir.path().join("pruned.q8_0.gguf");
    ok(&run(&["convert", "--model", &s(&pruned_gguf), "--out", &s(&q8), "--dtype", "q8_0"]));
    let (q8, pruned) = (load_model(&q8).unwrap().model, load_model(&pruned_gguf).unwrap().model);
    for (a, b) in q8.blocks.iter().zip(&pruned.blocks) {
        assert!(a.down.iter().zip(&b.down).all(|(x, y)| *y != 0.0 || *x == 0.0), "pruned zeros stay exact in Q8_0");
        assert!(a.down != b.down, "quantized");
    }
    let bad = run(&["convert", "--model", &s(&gguf), "--out", &s(&dir.path().join("b.gguf")), "--dtype", "bf16"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("GGUF type"), "{}", String::from_utf8_lossy(&bad.stderr));
    let bad = run(&["convert", "--model", &s(&gguf), "--out", &s(&dir.path().join("q8-hf")), "--dtype", "q8_0"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("f32, f16 or bf16"));
}
