"""optima: optimal one-shot pruning of LLM linear layers.

After a mask is chosen for a linear layer, :func:`reconstruct` re-fits the kept weights so that
the layer's output on calibration data changes as little as possible: one quadratic program per
output row, all sharing the layer's Hessian ``H = XᵀX / N``, solved exactly (``solver="direct"``)
or to a certified tolerance (``"auto"``, the default). :class:`HessianAccumulator` builds ``H``
from activations; :func:`select_mask` chooses a mask (Wanda, magnitude or SparseGPT's).

Arrays may be numpy arrays or anything ``numpy.asarray`` takes (a CPU torch tensor). Bad input
raises ``ValueError`` (or ``TypeError`` for an unsupported element type); a numerical failure
raises :class:`NumericalError`; an unavailable device :class:`DeviceError`.
"""

from __future__ import annotations

import warnings

import numpy as np

from . import _optima
from ._optima import (
    CUDA_COMPILED,
    DEFAULT_DAMPING,
    SOLVERS,
    DeviceError,
    NumericalError,
    OptimaError,
    __version__,
)

__all__ = [
    "CUDA_COMPILED",
    "DEFAULT_DAMPING",
    "SOLVERS",
    "DeviceError",
    "HessianAccumulator",
    "NumericalError",
    "NumericalWarning",
    "OptimaError",
    "__version__",
    "reconstruct",
    "select_mask",
]


class NumericalWarning(RuntimeWarning):
    """Rows of a :func:`reconstruct` that could not be solved and came back mask-only."""


def _matrix(value, what: str) -> np.ndarray:
    """A 2-D float32 or float64 array of ``value`` (float16 widened to float32), read in place."""
    array = np.asarray(value)
    if array.dtype.kind != "f":
        raise TypeError(f"{what} must hold floats (float16, float32 or float64), got dtype {array.dtype}")
    if array.dtype == np.float16:
        array = array.astype(np.float32)
    elif array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float64)
    if array.ndim != 2:
        raise ValueError(f"{what} must be a 2-D matrix, got shape {array.shape}")
    return array


def _mask(value, what: str = "mask") -> np.ndarray:
    """A 2-D bool array of ``value``; integers must be 0 or 1 (1 = pruned)."""
    array = np.asarray(value)
    if array.ndim != 2:
        raise ValueError(f"{what} must be a 2-D matrix, got shape {array.shape}")
    if array.dtype == np.bool_:
        return array
    if array.dtype.kind in "iu":
        if array.size and not np.isin(array, (0, 1)).all():
            raise ValueError(f"{what} must hold only 0 and 1 (1 = pruned)")
        return array != 0
    raise TypeError(f"{what} must be bool (True = pruned) or 0/1 integers, got dtype {array.dtype}")


def _count(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{what} must be an integer ≥ 0, got {value!r}")
    return int(value)


def _damping(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"damping must be a number ≥ 0, got {value!r}") from None


class HessianAccumulator:
    """Accumulates the layer Hessian ``H = XᵀX / N`` from batches of a layer's inputs.

    ``n`` is the layer's input count. Sums are kept in float64 on the CPU; ``dtype`` names that
    precision and takes only ``numpy.float64`` (or ``"float64"``). ``products`` is the precision of
    each batch's ``XᵀX``: ``numpy.float64`` (the default), or ``numpy.float32``, about twice as fast,
    its error about 1e-6 of ``max |H|`` with the diagonal kept exact. ``threads`` = 0 uses all cores.
    """

    def __init__(self, n: int, dtype=np.float64, threads: int = 0, products=np.float64):
        if np.dtype(dtype) != np.float64:
            raise ValueError(f"the CPU accumulator sums in float64; dtype {np.dtype(dtype)} is not available")
        precision = {np.dtype(np.float64): "f64", np.dtype(np.float32): "f32"}.get(np.dtype(products))
        if precision is None:
            raise ValueError(f"products are float64 or float32; {np.dtype(products)} is not available")
        self._inner = _optima._HessianAccumulator(_count(n, "n"), _count(threads, "threads"), precision)

    @property
    def n(self) -> int:
        """The layer's input count."""
        return self._inner.n

    @property
    def tokens(self) -> int:
        """Tokens added so far."""
        return self._inner.tokens

    def add_batch(self, x) -> None:
        """Adds activations of shape (tokens, n) or (batch, seq, n), read as float32."""
        array = np.asarray(x)
        if array.dtype.kind not in "fiu":
            raise TypeError(f"activations must be real numbers, got dtype {array.dtype}")
        if array.ndim not in (2, 3) or array.shape[-1] != self.n:
            raise ValueError(f"activations must have shape (tokens, {self.n}) or (batch, seq, {self.n}), got {array.shape}")
        array = array.reshape(-1, self.n)
        if array.dtype != np.float32:
            array = array.astype(np.float32)
        self._inner.add_batch(array)

    def finish(self, damping: float = 0.0) -> np.ndarray:
        """The n×n float64 mean ``XᵀX / N`` plus ``damping · mean(diag) · I``.

        Leave ``damping`` at 0 when the matrix goes to :func:`reconstruct` or :func:`select_mask`:
        they damp the matrix they are given themselves (their ``damping``, 0.01 by default), as
        ``optima solve`` does with a problem file's undamped Hessian. More batches may follow.
        """
        return self._inner.finish(_damping(damping))


def select_mask(weight, hessian, pattern="0.5", masker: str = "wanda", damping: float = DEFAULT_DAMPING) -> np.ndarray:
    """A bool mask of ``weight``'s shape, True = pruned.

    ``pattern``: a ratio per row (``"0.5"`` or ``0.5``), per layer (``"0.5/layer"``) or N:M
    (``"2:4"``). ``masker``: ``"wanda"`` (|W|·‖X_j‖), ``"magnitude"`` or ``"sparsegpt"`` (its OBS
    sweep, on the Hessian damped by ``damping``).
    """
    return _optima.select_mask(_matrix(weight, "weight"), _matrix(hessian, "hessian"), str(pattern), str(masker), _damping(damping))


def reconstruct(
    weight,
    hessian,
    mask,
    solver: str = "auto",
    tol: float = 1e-6,
    damping: float = DEFAULT_DAMPING,
    device: str = "cpu",
    threads: int = 0,
):
    """Re-fits the kept weights of ``weight`` (m×n) under ``mask`` (True = pruned).

    Minimizes ``(ŵ − w_i)ᵀ H (ŵ − w_i)`` with ``ŵ_j = 0`` for every pruned ``j``, row by row, where
    ``H`` is ``hessian`` (n×n, undamped, as :meth:`HessianAccumulator.finish` gives it) plus
    ``damping · mean(diag H) · I``; ``damping=0`` solves the given matrix as is (an input whose
    diagonal is 0 never fires and is treated as such). Returns ``(new_weight, report)``:
    ``new_weight`` in ``weight``'s float type with pruned entries exactly 0, ``report`` a dict
    (objective, objective_mask_only, relative_error, kkt_residual, iterations, seconds, a
    ``status`` dict of per-row counts, ...). Rows that fail are returned mask-only and counted
    in ``report["failed_rows"]``; rows whose solve broke down numerically also raise a
    :class:`NumericalWarning`.
    """
    new_weight, report = _optima.reconstruct(
        _matrix(weight, "weight"),
        _matrix(hessian, "hessian"),
        _mask(mask),
        str(solver),
        float(tol),
        _damping(damping),
        str(device),
        _count(threads, "threads"),
    )
    failed = report["status"]["numerical_error"]
    if failed:
        warnings.warn(
            f"{failed} of {report['m']} rows could not be solved and keep their mask-only weights; "
            "more damping usually helps",
            NumericalWarning,
            stacklevel=2,
        )
    return new_weight, report
