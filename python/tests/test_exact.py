"""The exact solver against an independent brute-force answer: least squares on the activations."""

import numpy as np
import pytest

import optima
from conftest import small_problem


def lstsq_reconstruction(x, w, mask, lam=0.0):
    """Row by row: min ‖X_S v − X w_i‖² / N + λ‖v − w_i,S‖² over the kept inputs S, by np.linalg.lstsq.

    With H = XᵀX/N this is min (ŵ − w_i)ᵀ(H + λI)(ŵ − w_i) subject to ŵ_P = 0, written without H.
    """
    tokens, n = x.shape
    out = np.zeros_like(w)
    for i in range(w.shape[0]):
        keep = ~mask[i]
        a = x[:, keep] / np.sqrt(tokens)
        b = x @ w[i] / np.sqrt(tokens)
        if lam > 0:
            a = np.vstack([a, np.sqrt(lam) * np.eye(keep.sum())])
            # λ‖ŵ − w_i‖² = λ‖v − w_i,S‖² + λ‖w_i,P‖², the last term a constant.
            b = np.concatenate([b, np.sqrt(lam) * w[i, keep]])
        out[i, keep] = np.linalg.lstsq(a, b, rcond=None)[0]
    return out


def objective(w_new, w, h):
    d = w_new - w
    return float(np.einsum("ij,jk,ik->", d, h, d))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_direct_equals_least_squares_without_damping(seed):
    x, w, h, mask = small_problem(seed=seed)
    new, report = optima.reconstruct(w, h, mask, solver="direct", damping=0.0)
    expected = lstsq_reconstruction(x, w, mask)
    np.testing.assert_allclose(new, expected, rtol=1e-8, atol=1e-9)
    assert np.all(new[mask] == 0.0)
    assert report["objective"] == pytest.approx(objective(new, w, h), rel=1e-9)
    assert report["objective"] <= report["objective_mask_only"]
    assert report["status"]["solved"] == w.shape[0] and report["failed_rows"] == 0


def test_damping_is_relative_to_the_mean_diagonal():
    x, w, h, mask = small_problem(seed=4)
    new, report = optima.reconstruct(w, h, mask, solver="direct", damping=0.1)
    lam = 0.1 * np.mean(np.diag(h))
    assert report["damping_absolute"] == pytest.approx(lam, rel=1e-12)
    np.testing.assert_allclose(new, lstsq_reconstruction(x, w, mask, lam), rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("solver", ["auto", "dual-pcg", "pcg"])
def test_iterative_solvers_reach_the_exact_answer(solver):
    x, w, h, mask = small_problem(m=12, n=32, tokens=128, seed=5)
    exact = lstsq_reconstruction(x, w, mask)
    new, report = optima.reconstruct(w, h, mask, solver=solver, tol=1e-10, damping=0.0)
    assert report["kkt_residual"] <= 1e-8
    assert objective(new, w, h) == pytest.approx(objective(exact, w, h), rel=1e-6)


def test_float32_weights_come_back_float32():
    _, w, h, mask = small_problem(seed=6)
    new32, _ = optima.reconstruct(w.astype(np.float32), h, mask, solver="direct")
    new64, _ = optima.reconstruct(w.astype(np.float32).astype(np.float64), h, mask, solver="direct")
    assert new32.dtype == np.float32 and new64.dtype == np.float64
    np.testing.assert_array_equal(new32, new64.astype(np.float32))


def test_accumulator_matches_numpy_and_any_batching():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 10, 24)).astype(np.float32)
    flat = x.reshape(-1, 24).astype(np.float64)
    whole = optima.HessianAccumulator(24)
    whole.add_batch(x)
    parts = optima.HessianAccumulator(24)
    for chunk in np.array_split(flat, 5):
        parts.add_batch(chunk)
    expected = flat.T @ flat / len(flat)
    assert whole.tokens == parts.tokens == 60
    np.testing.assert_allclose(whole.finish(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(parts.finish(), expected, rtol=1e-12, atol=1e-12)
    damped = whole.finish(damping=0.05)
    np.testing.assert_allclose(damped - expected, 0.05 * np.mean(np.diag(expected)) * np.eye(24), atol=1e-12)

    # float32 products: within their rounding of the float64 sums, the diagonal the same bits.
    fast = optima.HessianAccumulator(24, products=np.float32)
    fast.add_batch(x)
    got = fast.finish()
    scale = np.abs(expected).max()
    assert 0 < np.abs(got - whole.finish()).max() <= 1e-6 * scale
    np.testing.assert_array_equal(np.diag(got), np.diag(whole.finish()))
    with pytest.raises(ValueError, match="float64 or float32"):
        optima.HessianAccumulator(24, products=np.float16)


def test_masks_follow_their_patterns_and_scores():
    rng = np.random.default_rng(8)
    w = rng.standard_normal((10, 32))
    x = rng.standard_normal((100, 32)) * rng.uniform(0.1, 3.0, 32)
    h = x.T @ x / 100
    nm = optima.select_mask(w, h, pattern="2:4", masker="wanda")
    assert nm.dtype == np.bool_ and nm.shape == w.shape
    assert np.all(nm.reshape(10, 8, 4).sum(axis=2) == 2)
    scores = np.abs(w) * np.sqrt(np.diag(h))
    lowest = np.argsort(scores.reshape(10, 8, 4), axis=2)[:, :, :2]
    expected = np.zeros((10, 8, 4), dtype=bool)
    np.put_along_axis(expected, lowest, True, axis=2)
    np.testing.assert_array_equal(nm, expected.reshape(10, 32))
    magnitude = optima.select_mask(w, h, pattern=0.5, masker="magnitude")
    np.testing.assert_array_equal(magnitude, np.abs(w) <= np.sort(np.abs(w), axis=1)[:, 15:16])
    sparsegpt = optima.select_mask(w, h, pattern="0.5", masker="sparsegpt")
    assert np.all(sparsegpt.sum(axis=1) == 16)
