from typing import Any, Literal, Union

import numpy as np
import numpy.typing as npt

__version__: str
DEFAULT_DAMPING: float
SOLVERS: list[str]
CUDA_COMPILED: bool

class OptimaError(Exception):
    """Base of the errors that are not bad input (bad input raises ValueError)."""

class NumericalError(OptimaError):
    """A numerical failure that damping could not repair."""

class DeviceError(OptimaError):
    """A device that is not available in this build or on this machine, or that failed."""

class NumericalWarning(RuntimeWarning):
    """Rows of a reconstruct that could not be solved and came back mask-only."""

ArrayLike = npt.ArrayLike
Pattern = Union[str, float]
Masker = Literal["wanda", "magnitude", "sparsegpt"]
Solver = Literal["auto", "direct", "dual-pcg", "pcg", "admm", "pdhg", "sparsegpt"]

class HessianAccumulator:
    """Accumulates H = XᵀX / N from batches of a layer's inputs (float64 sums on the CPU)."""

    def __init__(
        self, n: int, dtype: npt.DTypeLike = ..., threads: int = 0, products: npt.DTypeLike = ...
    ) -> None: ...
    @property
    def n(self) -> int:
        """The layer's input count."""
    @property
    def tokens(self) -> int:
        """Tokens added so far."""
    def add_batch(self, x: ArrayLike) -> None:
        """Adds activations of shape (tokens, n) or (batch, seq, n), read as float32."""
    def finish(self, damping: float = 0.0) -> npt.NDArray[np.float64]:
        """The n×n mean XᵀX / N plus damping · mean(diag) · I (leave 0 for reconstruct)."""

def select_mask(
    weight: ArrayLike,
    hessian: ArrayLike,
    pattern: Pattern = "0.5",
    masker: Masker = "wanda",
    damping: float = 0.01,
) -> npt.NDArray[np.bool_]:
    """A bool mask of weight's shape, True = pruned, satisfying pattern ("0.5", "0.5/layer", "2:4")."""

def reconstruct(
    weight: ArrayLike,
    hessian: ArrayLike,
    mask: ArrayLike,
    solver: Solver = "auto",
    tol: float = 1e-6,
    damping: float = 0.01,
    device: str = "cpu",
    threads: int = 0,
) -> tuple[npt.NDArray[Any], dict[str, Any]]:
    """Re-fits the kept weights under mask (True = pruned); returns (new_weight, report)."""
