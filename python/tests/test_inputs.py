"""Bad input raises ValueError or TypeError naming the problem; odd layouts and array-likes work."""

import numpy as np
import pytest

import optima
from conftest import small_problem


@pytest.fixture
def problem():
    return small_problem(m=6, n=16, seed=1)


def test_bad_shapes(problem):
    _, w, h, mask = problem
    with pytest.raises(ValueError, match="2-D"):
        optima.reconstruct(w[0], h, mask)
    with pytest.raises(ValueError, match="2-D"):
        optima.reconstruct(w[None], h, mask)
    with pytest.raises(ValueError, match="square"):
        optima.reconstruct(w, h[:, :8], mask)
    with pytest.raises(ValueError, match="hessian vs weight"):
        optima.reconstruct(w[:, :8], h, mask[:, :8])
    with pytest.raises(ValueError, match="mask vs weight"):
        optima.reconstruct(w, h, mask[:3])
    with pytest.raises(ValueError, match="empty|0×"):
        optima.reconstruct(w[:0], h, mask[:0])
    with pytest.raises(ValueError, match="hessian vs weight"):
        optima.select_mask(w, h[:8, :8])
    acc = optima.HessianAccumulator(16)
    with pytest.raises(ValueError, match=r"\(tokens, 16\)"):
        acc.add_batch(np.ones((4, 15), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(tokens, 16\)"):
        acc.add_batch(np.ones(16, dtype=np.float32))
    with pytest.raises(ValueError, match="n"):
        optima.HessianAccumulator(0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values(problem, bad):
    _, w, h, mask = problem
    w_bad = w.copy()
    w_bad[2, 3] = bad
    with pytest.raises(ValueError, match=r"weight holds a non-finite value .* at \[2, 3\]"):
        optima.reconstruct(w_bad, h, mask)
    with pytest.raises(ValueError, match="non-finite"):
        optima.select_mask(w_bad, h)
    h_bad = h.copy()
    h_bad[1, 1] = bad
    with pytest.raises(ValueError, match="hessian holds a non-finite"):
        optima.reconstruct(w, h_bad, mask)
    x = np.ones((5, 16), dtype=np.float32)
    x[4, 0] = bad
    with pytest.raises(ValueError, match="activations holds a non-finite"):
        optima.HessianAccumulator(16).add_batch(x)


def test_invalid_hessians(problem):
    _, w, h, mask = problem
    asym = h.copy()
    asym[0, 1] += 1.0
    with pytest.raises(ValueError, match="not symmetric"):
        optima.reconstruct(w, asym, mask)
    neg = h.copy()
    neg[3, 3] = -1.0
    with pytest.raises(ValueError, match="positive semi-definite"):
        optima.reconstruct(w, neg, mask)


def test_wrong_dtypes(problem):
    _, w, h, mask = problem
    with pytest.raises(TypeError, match="weight must hold floats"):
        optima.reconstruct(w.astype(np.int64), h, mask)
    with pytest.raises(TypeError, match="hessian must hold floats"):
        optima.reconstruct(w, h.astype(np.complex128), mask)
    with pytest.raises(TypeError, match="mask must be bool"):
        optima.reconstruct(w, h, mask.astype(np.float64))
    with pytest.raises(ValueError, match="only 0 and 1"):
        optima.reconstruct(w, h, mask.astype(np.uint8) * 2)
    with pytest.raises(TypeError, match="floats"):
        optima.select_mask(np.array([["a", "b"]]), h)
    with pytest.raises(TypeError, match="real numbers"):
        optima.HessianAccumulator(2).add_batch(np.array([[1 + 1j, 2]]))
    with pytest.raises(ValueError, match="float64"):
        optima.HessianAccumulator(16, dtype=np.float32)


def test_bad_settings(problem):
    _, w, h, mask = problem
    with pytest.raises(ValueError, match="unknown solver|solver"):
        optima.reconstruct(w, h, mask, solver="newton")
    with pytest.raises(ValueError, match="masker"):
        optima.select_mask(w, h, masker="random")
    with pytest.raises(ValueError, match="pattern"):
        optima.select_mask(w, h, pattern="half")
    with pytest.raises(ValueError, match="pattern"):
        optima.select_mask(w, h, pattern="3:7")
    with pytest.raises(ValueError, match="damping"):
        optima.reconstruct(w, h, mask, damping=-0.1)
    with pytest.raises(ValueError, match="damping"):
        optima.reconstruct(w, h, mask, damping="lots")
    with pytest.raises(ValueError, match="threads"):
        optima.reconstruct(w, h, mask, threads=-1)
    with pytest.raises(ValueError, match="device"):
        optima.reconstruct(w, h, mask, device="tpu")
    with pytest.raises(ValueError, match="no calibration tokens"):
        optima.HessianAccumulator(4).finish()


@pytest.mark.skipif(optima.CUDA_COMPILED, reason="this build has CUDA; the error is for builds without it")
def test_cuda_without_the_feature_is_a_device_error(problem):
    _, w, h, mask = problem
    with pytest.raises(optima.DeviceError, match="without CUDA support"):
        optima.reconstruct(w, h, mask, device="cuda")


def test_numerical_failure_raises_numerical_error():
    # Entries near the top of the f64 range: PCG's first step overflows to infinity.
    _, w, h, mask = small_problem(seed=2)
    with pytest.raises(optima.NumericalError, match="non-finite"):
        optima.reconstruct(w * 1e150, h * 1e300, mask, solver="pcg", damping=0.0)
    assert issubclass(optima.NumericalError, optima.OptimaError)
    assert not issubclass(optima.NumericalError, ValueError)


def test_rows_that_fail_are_counted_and_warned_about():
    _, w, h, mask = small_problem(seed=2)
    with pytest.warns(optima.NumericalWarning, match="6 of 6 rows"):
        new, report = optima.reconstruct(w * 1e150, h * 1e300, mask, solver="direct", damping=0.0)
    assert report["failed_rows"] == report["status"]["numerical_error"] == 6
    np.testing.assert_array_equal(new, np.where(mask, 0.0, w * 1e150))


def test_non_contiguous_arrays_give_the_contiguous_answer(problem):
    _, w, h, mask = problem
    expected, _ = optima.reconstruct(w, h, mask, solver="direct")
    fortran = (np.asfortranarray(w), np.asfortranarray(h), np.asfortranarray(mask))
    strided_w = np.zeros((6, 32))
    strided_w[:, ::2] = w
    strided_m = np.zeros((12, 16), dtype=bool)
    strided_m[::2] = mask
    reversed_h = h[::-1, ::-1][::-1, ::-1]
    for args in [fortran, (strided_w[:, ::2], reversed_h, strided_m[::2]), (w.T.copy().T, h.T, mask)]:
        assert not all(a.flags.c_contiguous for a in args) or args[1] is h.T
        got, _ = optima.reconstruct(*args, solver="direct")
        np.testing.assert_array_equal(got, expected)
    m = optima.select_mask(np.asfortranarray(w), h[:, :], pattern="2:4")
    np.testing.assert_array_equal(m, optima.select_mask(w, h, pattern="2:4"))
    acc = optima.HessianAccumulator(16)
    x = np.random.default_rng(0).standard_normal((40, 16)).astype(np.float32)
    acc.add_batch(np.asfortranarray(x)[::2])
    plain = optima.HessianAccumulator(16)
    plain.add_batch(np.ascontiguousarray(x[::2]))
    np.testing.assert_array_equal(acc.finish(), plain.finish())


class Wrapped:
    """An array-like that is not a numpy array (what a CPU torch tensor looks like to numpy)."""

    def __init__(self, array):
        self.array = array

    def __array__(self, dtype=None, copy=None):
        return self.array if dtype is None else self.array.astype(dtype)


def test_array_likes_are_accepted(problem):
    x, w, h, mask = problem
    expected, _ = optima.reconstruct(w, h, mask, solver="direct")
    got, _ = optima.reconstruct(Wrapped(w), Wrapped(h), Wrapped(mask), solver="direct")
    np.testing.assert_array_equal(got, expected)
    got, _ = optima.reconstruct(w.tolist(), h.tolist(), mask.tolist(), solver="direct")
    np.testing.assert_array_equal(got, expected)
    assert optima.select_mask(Wrapped(w.astype(np.float16)), Wrapped(h)).dtype == np.bool_
    acc = optima.HessianAccumulator(16)
    acc.add_batch(Wrapped(x))
    assert acc.tokens == x.shape[0]


def test_torch_tensors_are_accepted(problem):
    torch = pytest.importorskip("torch", reason="torch is not installed; the torch path is tested where it is")
    x, w, h, mask = problem
    expected, _ = optima.reconstruct(w.astype(np.float32), h, mask, solver="direct")
    got, _ = optima.reconstruct(torch.from_numpy(w.astype(np.float32)), torch.from_numpy(h), torch.from_numpy(mask), solver="direct")
    np.testing.assert_array_equal(got, expected)
