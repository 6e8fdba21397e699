//! The `optima` binary as other tools drive it: JSON on stdout, files out, errors on stderr.

#[path = "../../optima/tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::llm_like;
use optima::io::{read_problem_file, write_problem_file};
use optima::prelude::*;
use safetensors::{Dtype, tensor::TensorView};

fn optima(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_optima")).args(args).output().unwrap()
}

fn fails_cleanly(out: &Output, needle: &str) {
    assert_eq!(out.status.code(), Some(1), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "one-line error expected: {stderr}");
    assert!(stderr.starts_with("error: ") && stderr.contains(needle), "{stderr}");
    assert!(out.stdout.is_empty());
}

fn write_raw(path: &Path, tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)>) {
    let views: Vec<(String, TensorView<'_>)> =
        tensors.iter().map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn solve_prints_one_json_object_and_writes_the_weights() {
    let dir = tempfile::tempdir().unwrap();
    let problem = dir.path().join("p.safetensors");
    let out = dir.path().join("out.safetensors");
    let generated = optima(&["generate", "--shape", "24x32", "--seed", "3", "--out", problem.to_str().unwrap()]);
    assert!(generated.status.success(), "{}", String::from_utf8_lossy(&generated.stderr));
    let run = optima(&[
        "solve",
        "--problem",
        problem.to_str().unwrap(),
        "--masker",
        "wanda",
        "--pattern",
        "2:4",
        "--threads",
        "2",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let stdout = String::from_utf8(run.stdout).unwrap();
    assert_eq!(stdout.trim().lines().count(), 1);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    for key in [
        "solver",
        "m",
        "n",
        "seconds",
        "objective",
        "objective_mask_only",
        "relative_error",
        "kkt_residual",
        "max_abs_pruned",
        "iterations",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["solver"], "direct");
    assert_eq!((v["m"].as_u64(), v["n"].as_u64()), (Some(24), Some(32)));
    assert_eq!(v["iterations"], 1);
    assert_eq!(v["max_abs_pruned"].as_f64(), Some(0.0));
    let (obj, obj0) = (v["objective"].as_f64().unwrap(), v["objective_mask_only"].as_f64().unwrap());
    assert!(obj < obj0 && obj > 0.0);
    assert!(v["kkt_residual"].as_f64().unwrap() < 1e-10);

    // The same problem through the library gives the same objective.
    let file = read_problem_file(&problem).unwrap();
    let hessian = Hessian::new(file.hessian, 0.01).unwrap();
    let mask = WandaMasker.select(file.weight.view(), &hessian, &"2:4".parse().unwrap()).unwrap();
    let lib =
        DirectSolver::default().solve(&LayerProblem::new(file.weight, hessian, mask.clone()).unwrap(), None).unwrap();
    assert!((lib.report.objective - obj).abs() <= 1e-9 * obj);

    // The output file: weight f32 with pruned entries exactly 0, and the mask.
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let w = st.tensor("weight").unwrap();
    assert_eq!(w.dtype(), Dtype::F32);
    let values: Vec<f32> = w.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let m = st.tensor("mask").unwrap();
    assert_eq!(m.data(), mask.to_dense().as_slice().unwrap());
    for (k, (&v, &p)) in values.iter().zip(m.data()).enumerate() {
        if p == 1 {
            assert_eq!(v.to_bits(), 0, "pruned entry {k} is {v}");
        } else {
            assert!(
                (f64::from(v) - lib.weight[[k / 32, k % 32]]).abs()
                    <= 1e-6 * lib.weight[[k / 32, k % 32]].abs().max(1e-3)
            );
        }
    }
}

#[test]
fn a_file_mask_in_half_precision_problems_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("half.safetensors");
    let (w, h) = llm_like(4, 8, 9);
    let mask = Mask::from_fn(4, 8, |i, j| (i + j) % 2 == 0);
    let w16: Vec<u8> = w.iter().flat_map(|&v| half::bf16::from_f64(v).to_le_bytes()).collect();
    let h32: Vec<u8> = h.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect();
    let m8 = mask.to_dense().into_raw_vec_and_offset().0;
    write_raw(
        &path,
        vec![
            ("weight", Dtype::BF16, vec![4, 8], w16),
            ("hessian", Dtype::F32, vec![8, 8], h32),
            ("mask", Dtype::U8, vec![4, 8], m8),
        ],
    );
    let run = optima(&["solve", "--problem", path.to_str().unwrap(), "--json"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let v: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(v["mask"], "file");
    assert_eq!(v["sparsity"].as_f64(), Some(0.5));
}

#[test]
fn bad_input_exits_with_a_one_line_error_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let s = |path: &Path| path.to_str().unwrap().to_string();
    let (w, h) = llm_like(4, 8, 1);
    write_problem_file(&p("ok.safetensors"), w.view(), h.view(), None).unwrap();

    fails_cleanly(&optima(&["solve", "--problem", &s(&p("ok.safetensors"))]), "--pattern");
    fails_cleanly(&optima(&["solve", "--problem", &s(&p("missing.safetensors"))]), "missing.safetensors");
    fails_cleanly(
        &optima(&["solve", "--problem", &s(&p("ok.safetensors")), "--pattern", "3:4", "--masker", "oracle"]),
        "unknown masker",
    );
    fails_cleanly(&optima(&["solve", "--problem", &s(&p("ok.safetensors")), "--pattern", "2:3"]), "multiple of 3");
    fails_cleanly(
        &optima(&["solve", "--problem", &s(&p("ok.safetensors")), "--pattern", "0.5", "--solver", "magic"]),
        "unknown solver",
    );

    let bytes = std::fs::read(p("ok.safetensors")).unwrap();
    std::fs::write(p("truncated.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    fails_cleanly(&optima(&["solve", "--problem", &s(&p("truncated.safetensors")), "--pattern", "0.5"]), "safetensors");
    let mut lying = bytes.clone();
    lying[0] = 0xff; // header length far beyond the file
    std::fs::write(p("lying.safetensors"), &lying).unwrap();
    fails_cleanly(&optima(&["solve", "--problem", &s(&p("lying.safetensors")), "--pattern", "0.5"]), "safetensors");

    let mut nan_w = w.clone();
    nan_w[[1, 2]] = f64::NAN;
    write_problem_file(&p("nan.safetensors"), nan_w.view(), h.view(), None).unwrap();
    fails_cleanly(&optima(&["solve", "--problem", &s(&p("nan.safetensors")), "--pattern", "0.5"]), "non-finite");

    let wrong_mask = Mask::empty(4, 4);
    let m8 = wrong_mask.to_dense().into_raw_vec_and_offset().0;
    let w32: Vec<u8> = w.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect();
    let h64: Vec<u8> = h.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_raw(
        &p("mask.safetensors"),
        vec![
            ("weight", Dtype::F32, vec![4, 8], w32.clone()),
            ("hessian", Dtype::F64, vec![8, 8], h64.clone()),
            ("mask", Dtype::U8, vec![4, 4], m8),
        ],
    );
    fails_cleanly(&optima(&["solve", "--problem", &s(&p("mask.safetensors"))]), "mask vs weight");

    write_raw(
        &p("h.safetensors"),
        vec![("weight", Dtype::F32, vec![4, 8], w32.clone()), ("hessian", Dtype::F64, vec![4, 16], h64.clone())],
    );
    fails_cleanly(&optima(&["solve", "--problem", &s(&p("h.safetensors")), "--pattern", "0.5"]), "hessian vs weight");
    write_raw(
        &p("i8.safetensors"),
        vec![("weight", Dtype::I32, vec![4, 8], w32), ("hessian", Dtype::F64, vec![8, 8], h64)],
    );
    fails_cleanly(&optima(&["solve", "--problem", &s(&p("i8.safetensors")), "--pattern", "0.5"]), "dtype");

    let mut asym = h.clone();
    asym[[0, 1]] += 1.0;
    write_problem_file(&p("asym.safetensors"), w.view(), asym.view(), None).unwrap();
    fails_cleanly(&optima(&["solve", "--problem", &s(&p("asym.safetensors")), "--pattern", "0.5"]), "not symmetric");
}

#[test]
fn a_memory_budget_chunks_the_solve_to_the_same_answer_or_refuses_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let problem = dir.path().join("p.safetensors");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (w, h) = llm_like(300, 64, 4);
    write_problem_file(&problem, w.view(), h.view(), None).unwrap();
    let solve = |extra: &[&str], out: &Path| {
        let (problem, out) = (s(&problem), s(out));
        let mut args = vec!["solve", "--problem", &problem, "--pattern", "2:4", "--solver", "pcg", "--json"];
        args.extend(["--out", &out]);
        args.extend(extra);
        optima(&args)
    };
    let free = solve(&[], &dir.path().join("free.safetensors"));
    assert!(free.status.success(), "{}", String::from_utf8_lossy(&free.stderr));
    // 32 MiB of runtime + the file + a few rows of a 64-wide layer.
    let tight = solve(&["--max-memory", "33.5M"], &dir.path().join("tight.safetensors"));
    assert!(tight.status.success(), "{}", String::from_utf8_lossy(&tight.stderr));
    let a: serde_json::Value = serde_json::from_slice(&free.stdout).unwrap();
    let b: serde_json::Value = serde_json::from_slice(&tight.stdout).unwrap();
    let (ea, eb) = (a["relative_error"].as_f64().unwrap(), b["relative_error"].as_f64().unwrap());
    assert!((ea - eb).abs() <= 1e-9 * ea, "{ea} vs {eb}");
    assert_eq!(a["failed_rows"], 0);
    assert_eq!(b["failed_rows"], 0);
    assert_eq!(a["chunks"], 1);
    assert!(b["chunks"].as_u64().unwrap() > 1, "the budget must have split the solve: {b}");
    // dual-pcg (its own default precision, mixed) reaches the same optimum through the CLI.
    let dual = {
        let (problem, out) = (s(&problem), s(&dir.path().join("dual.safetensors")));
        optima(&["solve", "--problem", &problem, "--pattern", "2:4", "--solver", "dual-pcg", "--json", "--out", &out])
    };
    assert!(dual.status.success(), "{}", String::from_utf8_lossy(&dual.stderr));
    let d: serde_json::Value = serde_json::from_slice(&dual.stdout).unwrap();
    assert_eq!(d["solver"], "dual-pcg");
    assert_eq!(d["failed_rows"], 0);
    let ed = d["relative_error"].as_f64().unwrap();
    assert!((ea - ed).abs() <= 1e-6 * ea, "{ea} vs {ed}");
    let refused = solve(&["--max-memory", "1M"], &dir.path().join("never.safetensors"));
    fails_cleanly(&refused, "memory budget");
    assert!(!dir.path().join("never.safetensors").exists());
}
