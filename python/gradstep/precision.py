"""Storage precision of an optimizer's buffers: bfloat16 and float16 params.

A bfloat16 or float16 param is updated in float32 by the C++ core, one chunk
at a time (widened, stepped by the float32 kernel, rounded back), so every
optimizer takes them. What is stored is configured here, the same for gs.X
and gradstep.torch:

- ``state_dtype``: ``None`` (the default: float32 states for bfloat16/float16
  params, the param's dtype otherwise), ``"float32"``, or ``"param"`` (the
  param's dtype, as torch's optimizers keep them: the same state layout, at
  half the bytes and with moments rounded to the param's precision).
- ``master_weights``: a float32 copy of each bfloat16/float16 param that the
  step updates; the param is rounded from it after every step, so updates
  smaller than the param's precision accumulate in the master.
- ``rounding``: how the float32 result is stored into the half param:
  ``"nearest"`` (ties to even: the IEEE conversion, torch's ``.to()``) or
  ``"stochastic"``: up or down with the probability of nearness, so an update
  below half an ulp still moves the weight on average. The random bits are a
  hash of (``seed``, step, tensor, element): the same on every ISA target and
  thread count, and a run resumed from a checkpoint rounds as the original.
  States are always rounded to nearest.

numpy has no bfloat16 of its own; gradstep uses ``ml_dtypes.bfloat16`` (what
JAX uses), and takes raw ``uint16`` arrays of bfloat16 or float16 bits when
told which they are (``dtype="bfloat16"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import ml_dtypes
import numpy as np

BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
FLOAT16 = np.dtype(np.float16)
HALF_DTYPES = {"bfloat16": BFLOAT16, "float16": FLOAT16}
STATE_DTYPES = (None, "float32", "param")
ROUNDING = ("nearest", "stochastic")
# The seed is a 64-bit unsigned integer in the core.
MAX_SEED = 2**64 - 1


def is_half(dtype: Any) -> bool:
    """Whether a numpy dtype is bfloat16 or float16."""
    return np.dtype(dtype) in (BFLOAT16, FLOAT16)


@dataclass(frozen=True)
class Precision:
    """The checked precision arguments of an optimizer."""

    state_dtype: Optional[str] = None
    master_weights: bool = False
    rounding: str = "nearest"
    seed: int = 0

    def state_dtype_for(self, param_dtype: np.dtype) -> np.dtype:
        """The dtype of a param's full-size states."""
        if is_half(param_dtype) and self.state_dtype != "param":
            return np.dtype(np.float32)
        if self.state_dtype == "float32" and param_dtype != np.float32:
            raise ValueError(f"state_dtype='float32': the states of a {param_dtype} param are {param_dtype}")
        return np.dtype(param_dtype)

    def check_params(self, dtypes: list[np.dtype], optimizer: str = "", reduces: bool = False) -> None:
        """Refuse what these param dtypes cannot have (before any buffer is made); `reduces`:
        the optimizer's step reduces over its states between passes (its _spec)."""
        for i, d in enumerate(dtypes):
            self.state_dtype_for(d)
            if reduces and self.state_dtype == "param" and is_half(d):
                raise ValueError(f"state_dtype='param': {optimizer} sums over its states between the passes of "
                                 "a step, which would read them rounded to the param's dtype in one pass and "
                                 "unrounded in another; its states stay float32 (state_dtype=None)")
            if self.master_weights and not is_half(d):
                raise ValueError(f"master_weights=True: params[{i}] is {d}; a float32 master copy is kept for "
                                 "bfloat16/float16 params, so every param must be one")


def checked(state_dtype: Any = None, master_weights: Any = False, rounding: Any = "nearest",
            seed: Any = 0) -> Precision:
    """The precision arguments, validated (TypeError/ValueError naming the argument)."""
    if state_dtype not in STATE_DTYPES:
        raise ValueError(f"state_dtype must be None, 'float32' or 'param', got {state_dtype!r}")
    if not isinstance(master_weights, (bool, np.bool_)):
        raise TypeError(f"master_weights must be a bool, got {master_weights!r}")
    if rounding not in ROUNDING:
        raise ValueError(f"rounding must be 'nearest' or 'stochastic', got {rounding!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, 2**64 - 1], got {seed!r}")
    return Precision(state_dtype, bool(master_weights), str(rounding), int(seed))


def raw_view(array: Any, dtype: Optional[str], what: str) -> Any:
    """A uint16 numpy array of raw bits viewed as `dtype` ('bfloat16' or 'float16'), without
    copying; anything else as it is. A uint16 array without a dtype is refused."""
    if not isinstance(array, np.ndarray) or array.dtype != np.uint16:
        return array
    if dtype is None:
        raise TypeError(f"{what}: uint16 array; pass dtype='bfloat16' or dtype='float16' to say what its bits are")
    return array.view(HALF_DTYPES[dtype])


def checked_dtype(dtype: Any) -> Optional[str]:
    """The `dtype` argument (what raw uint16 params hold): None, 'bfloat16' or 'float16'."""
    if dtype is None:
        return None
    if isinstance(dtype, str) and dtype in HALF_DTYPES:
        return dtype
    try:
        d = np.dtype(dtype)
    except TypeError:
        d = None
    for name, half in HALF_DTYPES.items():
        if d == half:
            return name
    raise ValueError(f"dtype must be None, 'bfloat16' or 'float16' (the type of raw uint16 params), got {dtype!r}")


def checked_grad_dtype(grad_dtype: Any) -> Optional[np.dtype]:
    """The `grad_dtype` argument: None (each param's dtype) or float32/float16/bfloat16."""
    if grad_dtype is None:
        return None
    try:
        d = BFLOAT16 if grad_dtype == "bfloat16" else np.dtype(grad_dtype)
    except TypeError:
        raise ValueError(f"grad_dtype must be None, float32, float16 or bfloat16, got {grad_dtype!r}") from None
    if d not in (np.dtype(np.float32), FLOAT16, BFLOAT16):
        raise ValueError(f"grad_dtype must be None, float32, float16 or bfloat16, got {grad_dtype!r}")
    return d


__all__ = ["BFLOAT16", "FLOAT16", "Precision", "checked", "is_half"]
