"""The package gives the command line's answers on the same problem files."""

import numpy as np
import pytest

import optima
from conftest import read_safetensors, run_cli, write_safetensors

REPORT_KEYS = ["objective", "objective_mask_only", "output_energy", "relative_error", "kkt_residual", "iterations"]


@pytest.mark.parametrize(
    ("solver", "pattern", "masker", "damping"),
    [
        ("direct", "2:4", "wanda", 0.01),
        ("direct", "0.5", "magnitude", 0.0),
        ("auto", "0.5", "wanda", 0.01),
        ("dual-pcg", "2:4", "wanda", 0.03),
        ("sparsegpt", "0.5", "wanda", 0.01),
    ],
)
def test_selected_mask_and_solve_equal_the_cli(optima_bin, generated_problem, tmp_path, solver, pattern, masker, damping):
    out = tmp_path / "out.safetensors"
    cli = run_cli(
        optima_bin, "solve", "--problem", str(generated_problem), "--solver", solver, "--pattern", pattern,
        "--masker", masker, "--damping", str(damping), "--out", str(out),
    )
    problem, solved = read_safetensors(generated_problem), read_safetensors(out)
    mask = optima.select_mask(problem["weight"], problem["hessian"], pattern=pattern, masker=masker, damping=damping)
    np.testing.assert_array_equal(mask, solved["mask"] == 1)
    new, report = optima.reconstruct(problem["weight"], problem["hessian"], mask, solver=solver, damping=damping)
    assert new.dtype == np.float32
    np.testing.assert_allclose(new, solved["weight"], rtol=1e-6, atol=1e-7)
    for key in REPORT_KEYS:
        assert report[key] == pytest.approx(cli[key], rel=1e-9, abs=1e-15), key
    assert report["solver"] == cli["solver"]
    assert report["failed_rows"] == cli["failed_rows"] == 0


def test_a_file_mask_gives_the_cli_answer(optima_bin, generated_problem, tmp_path):
    problem = read_safetensors(generated_problem)
    rng = np.random.default_rng(11)
    mask = rng.random(problem["weight"].shape) < 0.6
    with_mask = tmp_path / "masked.safetensors"
    write_safetensors(with_mask, {**problem, "mask": mask.astype(np.uint8)})
    out = tmp_path / "out.safetensors"
    cli = run_cli(optima_bin, "solve", "--problem", str(with_mask), "--solver", "direct", "--out", str(out))
    new, report = optima.reconstruct(problem["weight"], problem["hessian"], mask.astype(np.uint8), solver="direct")
    np.testing.assert_array_equal(new, read_safetensors(out)["weight"])
    assert report["objective"] == pytest.approx(cli["objective"], rel=1e-12)
    assert cli["mask"] == "file"
