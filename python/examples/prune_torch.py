"""Prune a stack of nn.Linear layers with optima, the way a PyTorch compression framework would.

Forward pre-hooks capture each layer's inputs into an optima.HessianAccumulator; layers are
pruned in order, each calibrated on the outputs of the already pruned layers before it; every
layer gets a mask (Wanda's by default) and an exact reconstruction. At the end the pruned model's
output error on held-out inputs is compared with the mask-only model's (same masks, no update).

    pip install ./python torch
    python python/examples/prune_torch.py --pattern 2:4
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import optima

try:
    import torch
    from torch import nn
except ImportError:  # pragma: no cover - the message is the point
    torch = None


def make_model(widths, seed):
    """A ReLU MLP with the given widths, its weights random but fixed by seed."""
    torch.manual_seed(seed)
    layers = []
    for i, (d_in, d_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).eval()


def make_inputs(tokens, width, seed):
    """Correlated inputs (a random mixing of Gaussian features), like a layer's activations."""
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(width, width, generator=g) / width**0.5
    return torch.randn(tokens, width, generator=g) @ mixing + 0.1 * torch.randn(tokens, width, generator=g)


def layer_hessian(model, layer, batches):
    """H of `layer`'s inputs over the calibration batches, captured by a forward pre-hook."""
    acc = optima.HessianAccumulator(layer.in_features)

    def capture(_module, inputs):
        acc.add_batch(inputs[0].detach().to("cpu", torch.float32))

    handle = layer.register_forward_pre_hook(capture)
    try:
        with torch.no_grad():
            for batch in batches:
                model(batch)
    finally:
        handle.remove()
    return acc.finish()


def prune(model, batches, pattern, masker, solver, update=True):
    """Prunes every nn.Linear of `model` in place, in order; returns one report per layer."""
    reports = []
    for name, layer in model.named_modules():
        if not isinstance(layer, nn.Linear):
            continue
        hessian = layer_hessian(model, layer, batches)
        weight = layer.weight.detach().to("cpu", torch.float32)
        mask = optima.select_mask(weight, hessian, pattern=pattern, masker=masker)
        if update:
            new_weight, report = optima.reconstruct(weight, hessian, mask, solver=solver)
        else:
            new_weight, report = np.where(mask, 0.0, weight.numpy()).astype(np.float32), None
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(new_weight))
        reports.append((name, report))
    return reports


def output_error(model, reference, inputs):
    """‖f(x) − f_dense(x)‖² / ‖f_dense(x)‖² on `inputs`."""
    with torch.no_grad():
        dense = reference(inputs)
        return float(((model(inputs) - dense) ** 2).sum() / (dense**2).sum())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="128,512,128,64", help="layer widths, comma-separated")
    parser.add_argument("--pattern", default="0.5", help="0.5, 0.5/layer or 2:4")
    parser.add_argument("--masker", default="wanda", choices=["wanda", "magnitude", "sparsegpt"])
    parser.add_argument("--solver", default="auto")
    parser.add_argument("--calib-batches", type=int, default=8)
    parser.add_argument("--batch-tokens", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if torch is None:
        sys.exit("this example needs PyTorch: pip install torch")
    widths = [int(w) for w in args.widths.split(",")]
    dense = make_model(widths, args.seed)
    batches = [make_inputs(args.batch_tokens, widths[0], args.seed + 1 + b) for b in range(args.calib_batches)]
    held_out = make_inputs(1024, widths[0], args.seed + 10_000)

    reconstructed = make_model(widths, args.seed)
    reports = prune(reconstructed, batches, args.pattern, args.masker, args.solver)
    mask_only = make_model(widths, args.seed)
    prune(mask_only, batches, args.pattern, args.masker, args.solver, update=False)

    for name, r in reports:
        print(
            f"layer {name}: {r['m']}x{r['n']}, layer error {r['relative_error_mask_only']:.4f} -> "
            f"{r['relative_error']:.4f}, KKT {r['kkt_residual']:.1e}, {r['seconds']:.3f} s, rows {r['status']}"
        )
    result = {
        "error_reconstructed": output_error(reconstructed, dense, held_out),
        "error_mask_only": output_error(mask_only, dense, held_out),
    }
    print(
        f"held-out output error: mask only {result['error_mask_only']:.4f}, "
        f"reconstructed {result['error_reconstructed']:.4f}"
    )
    if not result["error_reconstructed"] < result["error_mask_only"]:
        sys.exit("reconstruction did not lower the output error")
    return result


if __name__ == "__main__":
    main()
