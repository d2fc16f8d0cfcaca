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
    def __init__(self) -> None: ...
    def validate(self) -> None: ...
    @property
    def state_mask(self) -> int: ...

class SgdOptions(_Options):
    momentum: float
    dampening: float
    nesterov: bool

class AdagradOptions(_Options):
    lr_decay: float
    eps: float

class AdadeltaOptions(_Options):
    rho: float
    eps: float

class RmspropOptions(_Options):
    alpha: float
    eps: float
    momentum: float
    centered: bool

class AdamOptions(_Options):
    beta1: float
    beta2: float
    eps: float
    amsgrad: bool
    decoupled_weight_decay: bool

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
    def name(self) -> str: ...
    def fields(self) -> list[tuple[str, Any]]: ...
    @property
    def num_nodes(self) -> int: ...

class ScheduleKind:
    @property
    def name(self) -> str: ...
    @property
    def fields(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def defaults(self) -> dict[str, Any]: ...
    def __call__(self, *args: Any) -> Schedule: ...

def plateau_rate(rate: float, scale: float, min_lr: float) -> float: ...

# The submodule _core.schedules: one ScheduleKind per kind struct of schedule.hpp
# (Cosine, Warmup, ...; all in KINDS), wrapped by gradstep.schedules.
schedules: Any
