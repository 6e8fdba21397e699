//! The whole pruning pipeline on a tiny random Llama written as GGUF: no downloads.

mod tiny_model;

use optima::SparsityPattern;
use optima::memory::Bytes;
use optima_llm::llama::{LinearKind, LlamaModel};
use optima_llm::model_file::{WeightPrecision, load_model, write_model_gguf, write_model_safetensors};
use optima_llm::prune::{MaskerChoice, PruneSettings, plan_memory, prune_model};
use optima_llm::report::LayerRecord;
use tiny_model::*;

/// A layer's `E` after its update, measured (every run here needs the whole Hessians).
fn after(l: &LayerRecord) -> f64 {
    l.error_after.expect("E is measured")
}

/// A layer's `E` with the mask alone, measured.
fn before(l: &LayerRecord) -> f64 {
    l.error_before.expect("E is measured")
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
    write_model_gguf(&again, loaded.gguf().unwrap(), &loaded.model, WeightPrecision::F32).unwrap();
    let reloaded = load_model(&again).unwrap();
    assert_eq!(reloaded.model.blocks[1].down, model.blocks[1].down);
    assert_eq!(reloaded.gguf().unwrap().get_str("tokenizer.ggml.pre").unwrap(), "smollm");
    assert_eq!(reloaded.gguf().unwrap().metadata.len(), loaded.gguf().unwrap().metadata.len() + 1); // + general.file_type
    // The input model is never overwritten.
    assert!(matches!(
        write_model_gguf(&path, loaded.gguf().unwrap(), &loaded.model, WeightPrecision::F32),
        Err(optima::OptimaError::InvalidSetting(_))
    ));
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
            assert!(after(l) < before(l), "{pattern} block {} {}", l.block, l.layer);
            assert!(l.kkt_residual.unwrap() < 1e-9 && l.failed_rows == 0);
        }
        assert!(report.mean_error_after.unwrap() < report.mean_error_before.unwrap());
        assert!(loaded.model.nll(&calibration(9)[0]).unwrap().iter().all(|v| v.is_finite()));
        let pattern: SparsityPattern = pattern.parse().unwrap();
        check_pattern(&loaded.model, &pattern);
        for precision in [WeightPrecision::F32, WeightPrecision::F16] {
            let out = dir.path().join(format!("pruned-{precision:?}.gguf"));
            write_model_gguf(&out, loaded.gguf().unwrap(), &loaded.model, precision).unwrap();
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
        let mut s = settings("0.5", masker, update);
        // The mask-only run measures E from the whole Hessians too.
        s.layer_error = true;
        prune_model(&mut loaded.model, &calibration(0), &s).unwrap()
    };
    let mask_only = run(MaskerChoice::Wanda, "none");
    let exact = run(MaskerChoice::Wanda, "direct");
    let auto = run(MaskerChoice::Wanda, "auto");
    assert!(exact.mean_error_after.unwrap() < mask_only.mean_error_after.unwrap());
    assert!(
        (auto.mean_error_after.unwrap() - exact.mean_error_after.unwrap()).abs()
            <= 1e-6 * exact.mean_error_after.unwrap()
    );
    // Block 0 sees identical inputs in both runs, so layer by layer exact ≤ SparseGPT's own update.
    let sgpt = run(MaskerChoice::SparseGpt, "sparsegpt");
    let sgpt_exact = run(MaskerChoice::SparseGpt, "direct");
    for (a, b) in sgpt_exact.layers.iter().zip(&sgpt.layers).take(7) {
        assert!(after(a) <= after(b) * (1.0 + 1e-9), "{}: {} vs {}", a.layer, after(a), after(b));
    }
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
        let solved = "direct"
            .parse::<optima::SolverSpec>()
            .unwrap()
            .parallelism(s.parallelism)
            .build(optima::Device::Cpu)
            .unwrap()
            .solve(&problem, None)
            .unwrap();
        assert_eq!(solved.weight.mapv(|v| v as f32), *model.blocks[0].weight(kind), "{kind}");
    }
    assert!(!dir.path().join("blk.1.attn_q.safetensors").exists());
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
        assert!(reference.layers.iter().all(|l| l.chunks == 1), "{update}: unbounded runs solve whole layers");
        assert!(report.layers.iter().any(|l| l.chunks > 1), "{update}: the budget must have split some solve");
        for (a, b) in reference.layers.iter().zip(&report.layers) {
            assert_eq!(a.failed_rows, b.failed_rows);
            let gap = (after(a) - after(b)).abs() / after(a);
            assert!(gap < 1e-9, "{update} {}: {} vs {}", a.layer, after(a), after(b));
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
fn safetensors_output_holds_every_tensor_bit_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    let model = LlamaModel::random(tiny_config(), 9).unwrap();
    write_tiny_gguf(&path, &model);
    let loaded = load_model(&path).unwrap();
    let out = dir.path().join("tiny.safetensors");
    write_model_safetensors(&out, &loaded.source, &loaded.model).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), loaded.gguf().unwrap().tensors.len());
    let down = st.tensor("blk.1.ffn_down.weight").unwrap();
    assert_eq!(down.shape(), &[64, 128]);
    let values: Vec<f32> = down.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(values, model.blocks[1].down.iter().copied().collect::<Vec<_>>());
    assert!(
        matches!(
            write_model_safetensors(&path, &loaded.source, &loaded.model),
            Err(optima::OptimaError::InvalidSetting(_))
        ),
        "never overwrites the input"
    );
}

#[test]
fn a_checkpoint_refuses_a_resume_with_any_other_setting() {
    use optima::solve::{DualPcgSettings, Precision};
    use optima::{Device, Parallelism, SolverSpec};
    use optima_llm::checkpoint::Checkpoint;
    use optima_llm::prune::prune_model_resumable;

    let dir = tempfile::tempdir().unwrap();
    let model = LlamaModel::random(tiny_config(), 5).unwrap();
    let calib = calibration(2);
    let mut base = settings("0.5", MaskerChoice::Wanda, "none");
    base.update = Some(SolverSpec::DualPcg(DualPcgSettings::default().precision(Precision::Mixed)));
    base.max_blocks = Some(1);
    let checkpoint = Checkpoint::new(dir.path().join("ck"), &model, &calib, &base).unwrap();
    let mut run = model.clone();
    prune_model_resumable(&mut run, &calib, &base, Some(&checkpoint), |_| {}).unwrap();
    assert!(checkpoint.exists());
    let resume = |s: &PruneSettings, calib: &[Vec<u32>], m: &LlamaModel| {
        Checkpoint::new(dir.path().join("ck"), m, calib, s).unwrap().resume(&mut m.clone())
    };
    // The same run resumes.
    assert_eq!(resume(&base, &calib, &model).unwrap().unwrap().blocks_done, 1);
    let dual = |f: &dyn Fn(DualPcgSettings) -> DualPcgSettings| {
        let mut s = base.clone();
        s.update = Some(SolverSpec::DualPcg(f(DualPcgSettings::default().precision(Precision::Mixed))));
        s
    };
    let with = |f: &dyn Fn(&mut PruneSettings)| {
        let mut s = base.clone();
        f(&mut s);
        s
    };
    let changed: Vec<(&str, PruneSettings)> = vec![
        ("pattern", with(&|s| s.pattern = "2:4".parse().unwrap())),
        ("masker", with(&|s| s.masker = MaskerChoice::Magnitude)),
        ("update", with(&|s| s.update = None)),
        ("solver", with(&|s| s.update = Some("direct".parse().unwrap()))),
        ("precision", dual(&|d| d.precision(Precision::Double))),
        ("tolerance", dual(&|d| d.iterative(d.iterative.tolerance(1e-9)))),
        ("iteration cap", dual(&|d| d.iterative(d.iterative.max_iterations(7)))),
        ("damping", with(&|s| s.percdamp = 0.1)),
        ("device", with(&|s| s.device = Device::Cuda { ordinal: 0 })),
        ("max blocks", with(&|s| s.max_blocks = Some(2))),
        ("in-block order", with(&|s| s.order = optima_llm::settings::InBlockOrder::Parallel)),
        ("held-out choice", with(&|s| s.held_out = Some(optima_llm::settings::HeldOutSelection::default().every(3)))),
        (
            "damping grid",
            with(&|s| s.held_out = Some(optima_llm::settings::HeldOutSelection::default().grid(vec![0.5]))),
        ),
    ];
    for (what, s) in &changed {
        match resume(s, &calib, &model) {
            Err(optima::OptimaError::InvalidSetting(msg)) => assert!(msg.contains("another run"), "{what}: {msg}"),
            other => panic!("a resume with another {what} must be refused, got {other:?}"),
        }
    }
    // Other calibration or other weights are another run too.
    assert!(matches!(resume(&base, &calibration(3), &model), Err(optima::OptimaError::InvalidSetting(_))));
    assert!(matches!(
        resume(&base, &calib, &LlamaModel::random(tiny_config(), 6).unwrap()),
        Err(optima::OptimaError::InvalidSetting(_))
    ));
    // What does not change the result's meaning may differ: threads, the memory budget, side outputs.
    let same = [
        with(&|s| {
            s.parallelism = Parallelism::Threads(1);
            s.update = s.update.clone().map(|u| u.parallelism(Parallelism::Threads(1)));
        }),
        with(&|s| s.memory_budget = Some(Bytes(1 << 30))),
        with(&|s| s.save_problems = Some(dir.path().join("problems"))),
    ];
    for s in &same {
        assert_eq!(resume(s, &calib, &model).unwrap().unwrap().blocks_done, 1);
    }
}

#[test]
fn keep_only_improving_keeps_exactly_the_updates_that_lower_the_calibration_loss() {
    let dense = LlamaModel::random(tiny_config(), 11).unwrap();
    let calib = calibration(4);
    // SparseGPT's approximate update on Wanda's mask is not the optimum there: some layers may
    // lose to the mask alone. Whatever it does, a kept update lowers E and a dropped one leaves
    // the mask-only weights.
    for update in ["sparsegpt", "pdhg", "direct"] {
        let mut s = settings("2:4", MaskerChoice::Wanda, update);
        s.keep_only_improving = true;
        let mut model = dense.clone();
        let report = prune_model(&mut model, &calib, &s).unwrap();
        let mut free = s.clone();
        free.keep_only_improving = false;
        let mut unfiltered = dense.clone();
        let all = prune_model(&mut unfiltered, &calib, &free).unwrap();
        for (kept, any) in report.layers.iter().zip(&all.layers) {
            assert_eq!(kept.update_kept, after(any) < before(any), "{update} {}", kept.layer);
            if kept.update_kept {
                assert!(after(kept) < before(kept), "{update} {}", kept.layer);
            } else {
                assert_eq!(after(kept), before(kept), "{update} {}: mask-only weights", kept.layer);
            }
            assert!(any.update_kept, "without the rule every update is kept");
        }
        if update == "direct" {
            assert!(report.layers.iter().all(|l| l.update_kept), "the exact optimum never loses to the mask");
        }
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn the_dense_objective_fits_dense_targets_resumes_and_spills_to_the_same_bits() {
    use optima_llm::checkpoint::Checkpoint;
    use optima_llm::prune::{Objective, prune_model_resumable};

    let config = optima_llm::llama::LlamaConfig { blocks: 3, ..tiny_config() };
    let dense = LlamaModel::random(config, 12).unwrap();
    let calib = calibration(5);
    let mut s = settings("0.5", MaskerChoice::Wanda, "direct");
    s.objective = Objective::Dense;
    let mut layer_s = s.clone();
    layer_s.objective = Objective::Layer;

    let mut fitted = dense.clone();
    let report = prune_model(&mut fitted, &calib, &s).unwrap();
    let mut layered = dense.clone();
    let layer_report = prune_model(&mut layered, &calib, &layer_s).unwrap();
    // Block 0's q/k/v see the dense inputs (C = H, W̃ = W): the same fit as the layer objective,
    // to rounding. Its later layers (calibrated in order) and later blocks see pruned inputs, and
    // the targets differ.
    for (a, b) in report.layers.iter().zip(&layer_report.layers) {
        let gap = (after(a) - after(b)).abs() / after(b);
        if a.block == 0 && a.layer.input() == optima_llm::llama::LinearInput::Attn {
            assert!(gap < 1e-9, "{}: {} vs {}", a.layer, after(a), after(b));
        }
    }
    // With every layer calibrated on the block's dense activations, all of block 0 agrees.
    let parallel = |objective| {
        let mut p = s.clone();
        p.objective = objective;
        p.order = optima_llm::settings::InBlockOrder::Parallel;
        prune_model(&mut dense.clone(), &calib, &p).unwrap()
    };
    let (dense_parallel, layer_parallel) = (parallel(Objective::Dense), parallel(Objective::Layer));
    for (a, b) in dense_parallel.layers.iter().zip(&layer_parallel.layers).filter(|(a, _)| a.block == 0) {
        let gap = (after(a) - after(b)).abs() / after(b);
        assert!(gap < 1e-9, "parallel {}: {} vs {}", a.layer, after(a), after(b));
    }
    assert!(
        report.layers.iter().zip(&layer_report.layers).any(|(a, b)| a.block > 0 && before(a) != before(b)),
        "later blocks fit other targets"
    );
    check_pattern(&fitted, &"0.5".parse().unwrap());
    assert_ne!(fitted.blocks[2].q, layered.blocks[2].q);

    // A run interrupted after two blocks resumes to the same bits (the dense inputs are recomputed
    // from the dense weights; the checkpoint holds only the pruned ones).
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("after-two");
    let checkpoint = Checkpoint::new(dir.path().join("ck"), &dense, &calib, &s).unwrap();
    let mut full = dense.clone();
    prune_model_resumable(&mut full, &calib, &s, Some(&checkpoint), |e| {
        if let optima_llm::progress::PruneEvent::BlockFinished { block: 1, .. } = e {
            copy_dir(checkpoint.dir(), &saved);
        }
    })
    .unwrap();
    let resumed_from = Checkpoint::new(&saved, &dense, &calib, &s).unwrap();
    assert_eq!(resumed_from.blocks_done().unwrap(), Some(2));
    let mut resumed = dense.clone();
    prune_model_resumable(&mut resumed, &calib, &s, Some(&resumed_from), |_| {}).unwrap();
    for (x, y) in full.blocks.iter().zip(&resumed.blocks) {
        for kind in LinearKind::ALL {
            assert_eq!(x.weight(kind), y.weight(kind), "{kind}");
        }
    }
    assert_eq!(full.blocks[2].q, fitted.blocks[2].q, "a checkpointed run gives the same bits");

    // A memory budget that spills both activation stores gives the same bits too.
    let mut tight = s.clone();
    tight.memory_budget = Some(Bytes(1));
    let seq_len = calib[0].len();
    let needed = match plan_memory(&config, calib.len(), seq_len, &tight).unwrap_err() {
        optima::OptimaError::MemoryBudget { needed, .. } => needed,
        e => panic!("{e}"),
    };
    tight.memory_budget = Some(Bytes(needed.0 + 64 * 1024));
    assert!(plan_memory(&config, calib.len(), seq_len, &tight).unwrap().activations_on_disk);
    let mut bounded = dense.clone();
    prune_model(&mut bounded, &calib, &tight).unwrap();
    for (x, y) in fitted.blocks.iter().zip(&bounded.blocks) {
        for kind in LinearKind::ALL {
            assert_eq!(x.weight(kind), y.weight(kind), "{kind}");
        }
    }

    // With no update there is nothing to fit.
    let mut none = s.clone();
    none.update = None;
    let err = prune_model(&mut dense.clone(), &calib, &none).unwrap_err();
    assert!(matches!(err, optima::OptimaError::InvalidSetting(_)), "{err}");
}

/// `XᵀX/N` over the rows of `inputs`, in f64 (independent of the library's accumulators).
fn gram(inputs: &[ndarray::Array2<f32>]) -> ndarray::Array2<f64> {
    let n = inputs[0].ncols();
    let mut sum = ndarray::Array2::<f64>::zeros((n, n));
    let mut tokens = 0;
    for x in inputs {
        let x = x.mapv(f64::from);
        sum += &x.t().dot(&x);
        tokens += x.nrows();
    }
    sum / tokens as f64
}

#[test]
fn in_block_order_calibrates_o_and_down_on_the_pruned_layers_before_them() {
    use optima_llm::settings::InBlockOrder;

    let dense = LlamaModel::random(tiny_config(), 21).unwrap();
    let calib = calibration(4);
    let run = |order: InBlockOrder| {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings("0.5", MaskerChoice::Wanda, "direct");
        s.max_blocks = Some(1);
        s.order = order;
        s.save_problems = Some(dir.path().to_path_buf());
        let mut model = dense.clone();
        prune_model(&mut model, &calib, &s).unwrap();
        let hessian = |kind: LinearKind| {
            optima::io::read_problem_file(&dir.path().join(format!("blk.0.{}.safetensors", kind.short_name())))
                .unwrap()
                .hessian
        };
        (model, hessian(LinearKind::O), hessian(LinearKind::Down))
    };
    // The inputs of o_proj and down_proj through block 0 with the given weights.
    let inputs = |block: &optima_llm::llama::LlamaBlock| {
        let c = &dense.config;
        let (mut o, mut down) = (Vec::new(), Vec::new());
        for seq in &calib {
            let x = dense.embed(seq).unwrap();
            let attn = block.attention_mix(c, block.attn_input(c, x.view()).unwrap().view()).unwrap();
            let h = block.after_attention(c, x.view(), attn.view()).unwrap();
            let act = block.mlp_hidden(c, block.mlp_input(c, h.view()).unwrap().view()).unwrap();
            o.push(attn);
            down.push(act);
        }
        (gram(&o), gram(&down))
    };
    let close = |a: &ndarray::Array2<f64>, b: &ndarray::Array2<f64>| {
        let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-9 * scale)
    };

    let (pruned, o_h, down_h) = run(InBlockOrder::Sequential);
    // o_proj's inputs come from the pruned q/k/v; down_proj's from the pruned q/k/v/o and gate/up
    // (down_proj's own weights do not enter its input).
    let (want_o, want_down) = inputs(&pruned.blocks[0]);
    assert!(close(&o_h, &want_o), "sequential: o_proj's Hessian is the pruned attention's");
    assert!(close(&down_h, &want_down), "sequential: down_proj's Hessian is the pruned MLP's");
    let (dense_o, dense_down) = inputs(&dense.blocks[0]);
    assert!(!close(&o_h, &dense_o) && !close(&down_h, &dense_down), "and not the dense block's");

    let (_, o_h, down_h) = run(InBlockOrder::Parallel);
    assert!(close(&o_h, &dense_o) && close(&down_h, &dense_down), "parallel: the dense block's activations");
}

#[test]
fn held_out_dampings_are_chosen_per_layer_and_checked() {
    use optima_llm::settings::HeldOutSelection;

    let dense = LlamaModel::random(tiny_config(), 5).unwrap();
    let calib = calibration(9);
    let mut s = settings("0.5", MaskerChoice::Wanda, "direct");
    let grid = vec![0.001, 0.1, 1.0];
    s.held_out = Some(HeldOutSelection::default().every(3).grid(grid.clone()));
    let mut model = dense.clone();
    let report = prune_model(&mut model, &calib, &s).unwrap();
    check_pattern(&model, &"0.5".parse().unwrap());
    for layer in &report.layers {
        let h = layer.held_out.expect("every layer records its held-out choice");
        assert!(grid.contains(&h.damping), "{}: {}", layer.layer, h.damping);
        assert_eq!(layer.update_kept, h.error_update < h.error_baseline, "{}", layer.layer);
        assert!(h.error_update.is_finite() && h.error_baseline > 0.0);
    }
    // Fewer fitted tokens than without holding out: another model.
    let mut all = dense.clone();
    prune_model(&mut all, &calib, &settings("0.5", MaskerChoice::Wanda, "direct")).unwrap();
    assert_ne!(all.blocks[0].q, model.blocks[0].q);

    let refused = |s: &PruneSettings| {
        matches!(prune_model(&mut dense.clone(), &calib, s), Err(optima::OptimaError::InvalidSetting(_)))
    };
    let mut none = settings("0.5", MaskerChoice::Wanda, "none");
    none.held_out = Some(HeldOutSelection::default());
    assert!(refused(&none), "nothing to choose without an update");
    for selection in [
        HeldOutSelection::default().every(1),
        HeldOutSelection::default().every(calib.len() + 1),
        HeldOutSelection::default().grid(vec![]),
        HeldOutSelection::default().grid(vec![0.01, f64::NAN]),
    ] {
        let mut bad = s.clone();
        bad.held_out = Some(selection.clone());
        assert!(refused(&bad), "{selection:?}");
    }
}

#[test]
fn held_out_dampings_resume_and_spill_to_the_same_bits_with_either_objective() {
    use optima_llm::checkpoint::Checkpoint;
    use optima_llm::prune::{Objective, prune_model_resumable};
    use optima_llm::settings::HeldOutSelection;

    let config = optima_llm::llama::LlamaConfig { blocks: 3, ..tiny_config() };
    let dense = LlamaModel::random(config, 17).unwrap();
    let calib = calibration(3);
    for objective in [Objective::Layer, Objective::Dense] {
        let mut s = settings("0.5", MaskerChoice::Wanda, "direct");
        s.objective = objective;
        s.held_out = Some(HeldOutSelection::default().every(3).grid(vec![0.01, 0.3]));
        let mut whole = dense.clone();
        let report = prune_model(&mut whole, &calib, &s).unwrap();
        assert!(report.layers.iter().all(|l| l.held_out.is_some()), "{objective:?}");

        // Interrupted after two blocks, resumed: the same bits.
        let dir = tempfile::tempdir().unwrap();
        let saved = dir.path().join("after-two");
        let checkpoint = Checkpoint::new(dir.path().join("ck"), &dense, &calib, &s).unwrap();
        prune_model_resumable(&mut dense.clone(), &calib, &s, Some(&checkpoint), |e| {
            if let optima_llm::progress::PruneEvent::BlockFinished { block: 1, .. } = e {
                copy_dir(checkpoint.dir(), &saved);
            }
        })
        .unwrap();
        let mut resumed = dense.clone();
        let from = Checkpoint::new(&saved, &dense, &calib, &s).unwrap();
        prune_model_resumable(&mut resumed, &calib, &s, Some(&from), |_| {}).unwrap();

        // Activations spilled to disk under a tight budget: the same bits.
        let mut tight = s.clone();
        tight.memory_budget = Some(Bytes(1));
        let needed = match plan_memory(&config, calib.len(), calib[0].len(), &tight).unwrap_err() {
            optima::OptimaError::MemoryBudget { needed, .. } => needed,
            e => panic!("{e}"),
        };
        tight.memory_budget = Some(Bytes(needed.0 + 64 * 1024));
        assert!(plan_memory(&config, calib.len(), calib[0].len(), &tight).unwrap().activations_on_disk);
        let mut bounded = dense.clone();
        prune_model(&mut bounded, &calib, &tight).unwrap();
        for ((x, y), z) in whole.blocks.iter().zip(&resumed.blocks).zip(&bounded.blocks) {
            for kind in LinearKind::ALL {
                assert_eq!(x.weight(kind), y.weight(kind), "{objective:?} resumed {kind}");
                assert_eq!(x.weight(kind), z.weight(kind), "{objective:?} spilled {kind}");
            }
        }
    }
}
