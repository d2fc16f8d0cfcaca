"""Type stubs for the compiled core (checked against it by tests/test_typing.py)."""

from collections.abc import Sequence
from typing import Any

import numpy as np

def isa() -> str: ...
def available_isas() -> list[str]: ...
def set_isa(name: str) -> None: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def view_array(obj: Any, what: str) -> np.ndarray: ...

class _Options:
    lr: float
    weight_decay: float
    maximize: bool
    def validate(self) -> None: ...
    @property
    def state_mask(self) -> int: ...
    @staticmethod
    def spec() -> dict[str, Any]: ...

def check_bound(name: str, bound: str, value: float) -> None: ...

# --- generated from the declarations (gradstep._spec.stub_text); do not edit ---

class SgdOptions(_Options):
    momentum: float
    dampening: float
    nesterov: bool
    def __init__(self, *, lr: float = ..., momentum: float = ..., dampening: float = ..., weight_decay: float = ..., nesterov: bool = ..., maximize: bool = ...) -> None: ...

class AdagradOptions(_Options):
    lr_decay: float
    eps: float
    def __init__(self, *, lr: float = ..., lr_decay: float = ..., weight_decay: float = ..., eps: float = ..., maximize: bool = ...) -> None: ...

class AdadeltaOptions(_Options):
    rho: float
    eps: float
    def __init__(self, *, lr: float = ..., rho: float = ..., eps: float = ..., weight_decay: float = ..., maximize: bool = ...) -> None: ...

class RmspropOptions(_Options):
    alpha: float
    eps: float
    momentum: float
    centered: bool
    def __init__(self, *, lr: float = ..., alpha: float = ..., eps: float = ..., weight_decay: float = ..., momentum: float = ..., centered: bool = ..., maximize: bool = ...) -> None: ...

class AdamOptions(_Options):
    beta1: float
    beta2: float
    eps: float
    amsgrad: bool
    decoupled_weight_decay: bool
    def __init__(self, *, lr: float = ..., beta1: float = ..., beta2: float = ..., eps: float = ..., weight_decay: float = ..., amsgrad: bool = ..., decoupled_weight_decay: bool = ..., maximize: bool = ...) -> None: ...

OPTIONS: tuple[type[_Options], ...]
# --- end of generated stubs ---

class TensorSet:
    def __init__(
        self, params: Sequence[Any], states: Sequence[Sequence[Any] | None], state_names: Sequence[str]
    ) -> None: ...
    def __len__(self) -> int: ...
    def step(
        self,
        grads: Sequence[Any],
        options: _Options,
        step: int,
        schedule: Schedule | None = None,
        lr_scale: float = 1.0,
        min_lr: float = 0.0,
        skip_nonfinite: bool = False,
        max_grad_norm: float = 0.0,
    ) -> tuple[bool, bool, float | None, float]: ...
    def stream(self, grads: Sequence[Any]) -> None: ...

class Schedule:
    def at(self, step: int) -> float: ...
    def eval(self, steps: np.ndarray) -> np.ndarray: ...
    @property
    def num_nodes(self) -> int: ...

def plateau_rate(rate: float, scale: float, min_lr: float) -> float: ...

# The factories, bound in the submodule _core.schedules (wrapped by gradstep.schedules).
schedules: Any
