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

class AdamaxOptions(_Options):
    beta1: float
    beta2: float
    eps: float
    def __init__(self, *, lr: float = ..., beta1: float = ..., beta2: float = ..., eps: float = ..., weight_decay: float = ..., maximize: bool = ...) -> None: ...

class RadamOptions(_Options):
    beta1: float
    beta2: float
    eps: float
    decoupled_weight_decay: bool
    def __init__(self, *, lr: float = ..., beta1: float = ..., beta2: float = ..., eps: float = ..., weight_decay: float = ..., decoupled_weight_decay: bool = ..., maximize: bool = ...) -> None: ...

class NadamOptions(_Options):
    beta1: float
    beta2: float
    eps: float
    momentum_decay: float
    decoupled_weight_decay: bool
    mu_product: float
    def __init__(self, *, lr: float = ..., beta1: float = ..., beta2: float = ..., eps: float = ..., weight_decay: float = ..., momentum_decay: float = ..., decoupled_weight_decay: bool = ..., maximize: bool = ..., mu_product: float = ...) -> None: ...

class ProdigyOptions(_Options):
    beta1: float
    beta2: float
    beta3: float
    eps: float
    decouple: bool
    use_bias_correction: bool
    safeguard_warmup: bool
    d0: float
    d_coef: float
    growth_rate: float
    fsdp_in_use: bool
    slice_p: float
    d: float
    d_max: float
    d_numerator: float
    k: float
    def __init__(self, *, lr: float = ..., beta1: float = ..., beta2: float = ..., beta3: float = ..., eps: float = ..., weight_decay: float = ..., decouple: bool = ..., use_bias_correction: bool = ..., safeguard_warmup: bool = ..., d0: float = ..., d_coef: float = ..., growth_rate: float = ..., fsdp_in_use: bool = ..., slice_p: float = ..., maximize: bool = ..., d: float = ..., d_max: float = ..., d_numerator: float = ..., k: float = ...) -> None: ...

class DadaptAdamOptions(_Options):
    beta1: float
    beta2: float
    eps: float
    log_every: float
    decouple: bool
    use_bias_correction: bool
    d0: float
    growth_rate: float
    fsdp_in_use: bool
    d: float
    numerator_weighted: float
    k: float
    def __init__(self, *, lr: float = ..., beta1: float = ..., beta2: float = ..., eps: float = ..., weight_decay: float = ..., log_every: float = ..., decouple: bool = ..., use_bias_correction: bool = ..., d0: float = ..., growth_rate: float = ..., fsdp_in_use: bool = ..., maximize: bool = ..., d: float = ..., numerator_weighted: float = ..., k: float = ...) -> None: ...

class DadaptSgdOptions(_Options):
    momentum: float
    log_every: float
    d0: float
    growth_rate: float
    fsdp_in_use: bool
    d: float
    numerator_weighted: float
    g0_norm: float
    def __init__(self, *, lr: float = ..., momentum: float = ..., weight_decay: float = ..., log_every: float = ..., d0: float = ..., growth_rate: float = ..., fsdp_in_use: bool = ..., maximize: bool = ..., d: float = ..., numerator_weighted: float = ..., g0_norm: float = ...) -> None: ...

class LambOptions(_Options):
    bias_correction: bool
    beta1: float
    beta2: float
    eps: float
    grad_averaging: bool
    max_grad_norm: float
    trust_clip: bool
    always_adapt: bool
    caution: bool
    decoupled_decay: bool
    corrected_weight_decay: bool
    max_lr: float
    def __init__(self, *, lr: float = ..., bias_correction: bool = ..., beta1: float = ..., beta2: float = ..., eps: float = ..., weight_decay: float = ..., grad_averaging: bool = ..., max_grad_norm: float = ..., trust_clip: bool = ..., always_adapt: bool = ..., caution: bool = ..., decoupled_decay: bool = ..., corrected_weight_decay: bool = ..., maximize: bool = ..., max_lr: float = ...) -> None: ...

class AdamwScheduleFreeOptions(_Options):
    beta1: float
    beta2: float
    eps: float
    warmup_steps: float
    r: float
    weight_lr_power: float
    lr_max: float
    weight_sum: float
    train_mode: bool
    def __init__(self, *, lr: float = ..., beta1: float = ..., beta2: float = ..., eps: float = ..., weight_decay: float = ..., warmup_steps: float = ..., r: float = ..., weight_lr_power: float = ..., maximize: bool = ..., lr_max: float = ..., weight_sum: float = ..., train_mode: bool = ...) -> None: ...

class SgdScheduleFreeOptions(_Options):
    momentum: float
    warmup_steps: float
    r: float
    weight_lr_power: float
    lr_max: float
    weight_sum: float
    train_mode: bool
    def __init__(self, *, lr: float = ..., momentum: float = ..., weight_decay: float = ..., warmup_steps: float = ..., r: float = ..., weight_lr_power: float = ..., maximize: bool = ..., lr_max: float = ..., weight_sum: float = ..., train_mode: bool = ...) -> None: ...

class LionOptions(_Options):
    beta1: float
    beta2: float
    decoupled_weight_decay: bool
    init_lr: float
    def __init__(self, *, lr: float = ..., beta1: float = ..., beta2: float = ..., weight_decay: float = ..., decoupled_weight_decay: bool = ..., maximize: bool = ..., init_lr: float = ...) -> None: ...

class AdafactorOptions(_Options):
    beta2_decay: float
    eps1: float
    eps2: float
    d: float
    def __init__(self, *, lr: float = ..., beta2_decay: float = ..., eps1: float = ..., eps2: float = ..., d: float = ..., weight_decay: float = ..., maximize: bool = ...) -> None: ...

OPTIONS: tuple[type[_Options], ...]
# --- end of generated stubs ---

class _TorchGroup:
    """gradstep.torch's record of a param group's last step (register_torch.cpp)."""

    def __init__(
        self,
        torch: Any,
        params: Sequence[Any],
        state: dict[Any, Any],
        batches: list[tuple[TensorSet, list[int], int]],
        names: Sequence[str],
        has_step: bool,
        param_types: tuple[type, ...],
        sizes: Sequence[Sequence[tuple[str, int] | tuple[str, int, Any]] | None] | None = None,
    ) -> None: ...
    @property
    def steps(self) -> list[int] | None: ...
    @property
    def valid(self) -> bool: ...
    def check(self, params: Any, state: Any) -> bool: ...
    def run(self, params: Any, state: Any, options: Sequence[Any]) -> bool: ...
    def step(self, options: Sequence[Any]) -> None: ...
    def step_set(self, options: Any, rate: float, k: int, groups: Sequence[Any] | None, group_of: Sequence[int]) -> None: ...

class TensorSet:
    def __init__(
        self, params: Sequence[Any], states: Sequence[Sequence[Any] | None], state_names: Sequence[str],
        declared_by: _Options | None = None, shapes: Sequence[Sequence[int]] | None = None,
        grad_dtypes: Sequence[Any] | None = None, masters: Sequence[Any] | None = None,
    ) -> None: ...
    def __len__(self) -> int: ...
    def step(self, grads: Sequence[Any], step: int) -> tuple[bool, bool, float | None, float]: ...
    def check_grads(self, grads: Sequence[Any]) -> None: ...
    def step_groups(self, grads: Sequence[Any], step: int, groups: Sequence[_Options],
                    group_of: Sequence[int]) -> tuple[bool, bool, float | None, float]: ...
    def set_options(self, options: _Options) -> None: ...
    def set_lr(self, rate: float, source: object = None) -> None: ...
    def set_schedule(self, schedule: Schedule, source: object = None) -> None: ...
    def set_plateau(self, scale: float, min_lr: float) -> None: ...
    def set_safeguards(self, skip_nonfinite: bool, max_grad_norm: float) -> None: ...
    def set_rounding(self, mode: str, seed: int) -> None: ...
    @property
    def rounding(self) -> str: ...
    @property
    def seed(self) -> int: ...
    def share_settings(self, other: TensorSet) -> None: ...
    def lr_at(self, k: int) -> float: ...
    def base_lr_at(self, k: int) -> float: ...
    @property
    def lr_source(self) -> Any: ...
    @property
    def lr_scale(self) -> float: ...
    @property
    def min_lr(self) -> float: ...
    @property
    def skip_nonfinite(self) -> bool: ...
    @property
    def max_grad_norm(self) -> float: ...
    @property
    def options(self) -> Any: ...
    def switch_mode(self, on: bool) -> None: ...
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
