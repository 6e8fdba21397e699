"""The PyTorch example end to end (skipped, with the reason, where torch is not installed)."""

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed: the PyTorch example is not run")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "prune_torch.py"


def load_example():
    spec = importlib.util.spec_from_file_location("prune_torch", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("pattern", ["0.5", "2:4"])
def test_hooks_prune_and_reconstruct_a_linear_stack(pattern):
    result = load_example().main(["--widths", "64,128,32", "--pattern", pattern, "--calib-batches", "4"])
    assert result["error_reconstructed"] < 0.9 * result["error_mask_only"]


def test_captured_hessian_is_the_layers_input_gram():
    example = load_example()
    model = example.make_model([16, 24, 8], seed=0)
    batches = [example.make_inputs(32, 16, seed=s) for s in range(3)]
    hessian = example.layer_hessian(model, model[2], batches)
    with torch.no_grad():
        inputs = torch.cat([model[1](model[0](b)) for b in batches]).double()
    expected = (inputs.T @ inputs / inputs.shape[0]).numpy()
    assert abs(hessian - expected).max() < 1e-6 * abs(expected).max()
