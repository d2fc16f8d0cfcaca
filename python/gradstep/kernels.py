"""Direct in-place kernel calls, for trainers that own their optimizer state.

Each function updates ``param`` (and the state buffers) in place from ``grad``
with the same C++ kernel the optimizer classes use. Every argument may also be
a list of arrays, to update many tensors in one call. ``step`` is the 1-based
number of this update (torch's ``state["step"]`` after its increment).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

from gradstep import _core


def _listed(x: Any) -> list[Any]:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _run(options: Any, param: Any, grad: Any, states: Sequence[Optional[Any]],
         names: Sequence[str], step: int) -> None:
    options.validate()
    params = _listed(param)
    tensor_set = _core.TensorSet(
        params, [None if s is None else _listed(s) for s in states], list(names)
    )
    tensor_set.step(_listed(grad), options, step)


def _options(cls: type, **fields: Any) -> Any:
    options = cls()
    for name, value in fields.items():
        setattr(options, name, value)
    return options


def sgd_step(param: Any, grad: Any, momentum_buffer: Any = None, *, lr: float, step: int,
             momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
             nesterov: bool = False, maximize: bool = False) -> None:
    """SGD; ``momentum_buffer`` is required when momentum != 0 (step 1 overwrites it)."""
    options = _options(_core.SgdOptions, lr=lr, momentum=momentum, dampening=dampening,
                       weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
    _run(options, param, grad, [momentum_buffer if momentum != 0 else None],
         ["momentum_buffer"], step)


def adagrad_step(param: Any, grad: Any, sum: Any, *, lr: float, step: int,
                 lr_decay: float = 0.0, weight_decay: float = 0.0, eps: float = 1e-10,
                 maximize: bool = False) -> None:
    """Adagrad; ``sum`` starts at initial_accumulator_value."""
    options = _options(_core.AdagradOptions, lr=lr, lr_decay=lr_decay,
                       weight_decay=weight_decay, eps=eps, maximize=maximize)
    _run(options, param, grad, [sum], ["sum"], step)


def adadelta_step(param: Any, grad: Any, square_avg: Any, acc_delta: Any, *, lr: float = 1.0,
                  step: int, rho: float = 0.9, eps: float = 1e-6, weight_decay: float = 0.0,
                  maximize: bool = False) -> None:
    """Adadelta."""
    options = _options(_core.AdadeltaOptions, lr=lr, rho=rho, eps=eps,
                       weight_decay=weight_decay, maximize=maximize)
    _run(options, param, grad, [square_avg, acc_delta], ["square_avg", "acc_delta"], step)


def rmsprop_step(param: Any, grad: Any, square_avg: Any, momentum_buffer: Any = None,
                 grad_avg: Any = None, *, lr: float, step: int, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False, maximize: bool = False) -> None:
    """RMSprop; ``momentum_buffer`` when momentum > 0, ``grad_avg`` when centered."""
    options = _options(_core.RmspropOptions, lr=lr, alpha=alpha, eps=eps,
                       weight_decay=weight_decay, momentum=momentum, centered=centered,
                       maximize=maximize)
    _run(options, param, grad,
         [square_avg, momentum_buffer if momentum > 0 else None, grad_avg if centered else None],
         ["square_avg", "momentum_buffer", "grad_avg"], step)


def adam_step(param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, max_exp_avg_sq: Any = None,
              *, lr: float, step: int, beta1: float = 0.9, beta2: float = 0.999,
              eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False,
              decoupled_weight_decay: bool = False, maximize: bool = False) -> None:
    """Adam (AdamW with ``decoupled_weight_decay=True``); ``max_exp_avg_sq`` for amsgrad."""
    options = _options(_core.AdamOptions, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                       weight_decay=weight_decay, amsgrad=amsgrad,
                       decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)
    _run(options, param, grad, [exp_avg, exp_avg_sq, max_exp_avg_sq if amsgrad else None],
         ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"], step)


def adamw_step(param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, max_exp_avg_sq: Any = None,
               *, lr: float, step: int, beta1: float = 0.9, beta2: float = 0.999,
               eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
               maximize: bool = False) -> None:
    """AdamW: Adam with decoupled weight decay."""
    adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr=lr, step=step, beta1=beta1,
              beta2=beta2, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
              decoupled_weight_decay=True, maximize=maximize)
