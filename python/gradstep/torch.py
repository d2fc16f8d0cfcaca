"""torch.optim optimizers whose step runs in gradstep's C++ kernels.

Each class here *is* its torch.optim twin (a subclass): same constructor,
defaults, param groups, hooks, ``zero_grad`` and ``state_dict`` layout, so a
checkpoint moves between ``torch.optim.Adam`` and ``gradstep.torch.Adam`` in
both directions and torch's LR schedulers drive it. Only ``step`` differs: a
param group's tensors are updated in place through zero-copy numpy views, one
C++ call per group (per distinct step count, when some parameters skipped
steps). CPU float32/float64 dense tensors only.

``lr`` may also be a gradstep schedule (or any callable of the 0-based step),
evaluated at each parameter's own step count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch

from gradstep import _core

__all__ = ["SGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW"]

_STEP_DTYPE = torch.float32  # torch keeps state["step"] as a float32 scalar on CPU


def _numpy(t: torch.Tensor, what: str) -> np.ndarray:
    return _core.view_array(t.detach().numpy(), what)


class _GradstepStep:
    """The shared step: turns param groups into C++ TensorSets and steps them."""

    _options_type: ClassVar[type]
    _state_names: ClassVar[tuple[str, ...]]
    _has_step: ClassVar[bool] = True  # torch keeps state["step"] (SGD does not)

    # Filled in by torch.optim.Optimizer.__init__.
    param_groups: list[dict[str, Any]]
    state: Any

    def _init_gradstep(self) -> None:
        # (group index, param indices) -> (TensorSet, what it was built from)
        self._sets: dict[tuple[int, tuple[int, ...]], tuple[Any, list[Any]]] = {}
        for group in self.param_groups:
            for p in group["params"]:
                self._check_param(p)

    @staticmethod
    def _check_param(p: torch.Tensor) -> None:
        if p.device.type != "cpu":
            raise TypeError(f"gradstep.torch runs on the CPU; got a parameter on {p.device}")
        if p.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"gradstep.torch supports float32 and float64 parameters, got {p.dtype}")
        if p.is_sparse:
            raise TypeError("gradstep.torch does not support sparse parameters")

    def _options(self, group: dict[str, Any], lr: float) -> Any:
        raise NotImplementedError

    def _new_state(self, p: torch.Tensor, group: dict[str, Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _group_lr(self, group: dict[str, Any], step: int) -> float:
        lr = group["lr"]
        if isinstance(lr, torch.Tensor):
            return float(lr.item())
        if callable(lr):
            return float(lr(step - 1))
        return float(lr)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)  # type: ignore[misc]
        self._sets.clear()  # state tensors were replaced

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)  # type: ignore[misc]
        for p in self.param_groups[-1]["params"]:
            self._check_param(p)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for gi, group in enumerate(self.param_groups):
            if group.get("differentiable"):
                raise ValueError("gradstep.torch does not support differentiable=True")
            self._step_group(gi, group)
        return loss

    def _step_group(self, gi: int, group: dict[str, Any]) -> None:
        # Parameters without a gradient are skipped, as torch does; those with
        # one are grouped by their step count so each batch is one C++ call.
        by_step: dict[int, list[int]] = {}
        needed = self._needed_states(group)
        for i, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise TypeError("gradstep.torch does not support sparse gradients")
            state = self.state[p]
            fresh = any(n not in state for n in needed) or (self._has_step and "step" not in state)
            if fresh:
                state.update({k: v for k, v in self._new_state(p, group).items() if k not in state})
            if self._has_step:
                k = int(state["step"].item()) + 1
            else:
                # torch seeds SGD's momentum buffer with the first gradient; the
                # kernel does that on step 1. A buffer that exists has seen one.
                k = 1 if fresh else 2
            by_step.setdefault(k, []).append(i)
        for k, indices in by_step.items():
            params = [group["params"][i] for i in indices]
            options = self._options(group, self._group_lr(group, k))
            tensor_set = self._tensor_set(gi, tuple(indices), params, options)
            grads = [p.grad if p.grad.is_contiguous() else p.grad.contiguous() for p in params]
            tensor_set.step([_numpy(g, "grad") for g in grads], options, k)
            if self._has_step:
                torch._foreach_add_([self.state[p]["step"] for p in params], 1.0)

    def _needed_states(self, group: dict[str, Any]) -> list[str]:
        mask = self._options(group, 0.0).state_mask
        return [n for slot, n in enumerate(self._state_names) if mask & (1 << slot)]

    def _tensor_set(self, gi: int, indices: tuple[int, ...], params: list[torch.Tensor],
                    options: Any) -> Any:
        """A cached TensorSet, rebuilt if any param's storage or state tensor changed."""
        names = [n for slot, n in enumerate(self._state_names) if options.state_mask & (1 << slot)]
        states = [self.state[p] for p in params]
        for st in states:  # state tensors must be contiguous to be updated in place
            for n in names:
                if not st[n].is_contiguous():
                    st[n] = st[n].contiguous()
        witness = [p.data_ptr() for p in params] + [st[n] for st in states for n in names]
        cached = self._sets.get((gi, indices))
        if cached is not None and len(cached[1]) == len(witness) and all(
            a is b or (isinstance(a, int) and a == b) for a, b in zip(cached[1], witness)
        ):
            return cached[0]
        tensor_set = _core.TensorSet(
            [_numpy(p, f"params[{i}]") for i, p in zip(indices, params)],
            [[_numpy(st[n], n) for st in states] if n in names else None for n in self._state_names],
            list(self._state_names),
        )
        self._sets[(gi, indices)] = (tensor_set, witness)
        return tensor_set


def _zeros(p: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(p, memory_format=torch.preserve_format)


def _step0() -> torch.Tensor:
    return torch.tensor(0.0, dtype=_STEP_DTYPE)


def _accepts_schedule(lr: Any) -> tuple[Any, Any]:
    """torch validates lr as a number: pass it a placeholder, then put the callable back."""
    return (1e-3, lr) if callable(lr) else (lr, None)


def _restore_schedule(opt: Any, schedule: Any) -> None:
    if schedule is not None:
        for group in opt.param_groups:
            group["lr"] = schedule
            group["initial_lr"] = schedule


class SGD(_GradstepStep, torch.optim.SGD):
    _options_type = _core.SgdOptions
    _state_names = ("momentum_buffer",)
    _has_step = False

    def __init__(self, params: Any, lr: Any = 1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False, *, maximize: bool = False) -> None:
        lr, schedule = _accepts_schedule(lr)
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
        _restore_schedule(self, schedule)
        self._init_gradstep()

    def _new_state(self, p: torch.Tensor, group: dict[str, Any]) -> dict[str, Any]:
        return {"momentum_buffer": _zeros(p)} if group["momentum"] != 0 else {}

    def _options(self, group: dict[str, Any], lr: float) -> Any:
        o = _core.SgdOptions()
        o.lr, o.momentum, o.dampening = lr, group["momentum"], group["dampening"]
        o.weight_decay, o.nesterov, o.maximize = group["weight_decay"], group["nesterov"], group["maximize"]
        return o


class Adagrad(_GradstepStep, torch.optim.Adagrad):
    _options_type = _core.AdagradOptions
    _state_names = ("sum",)

    def __init__(self, params: Any, lr: Any = 1e-2, lr_decay: float = 0, weight_decay: float = 0,
                 initial_accumulator_value: float = 0, eps: float = 1e-10, *,
                 maximize: bool = False) -> None:
        lr, schedule = _accepts_schedule(lr)
        super().__init__(params, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                         initial_accumulator_value=initial_accumulator_value, eps=eps,
                         maximize=maximize)
        _restore_schedule(self, schedule)
        self._init_gradstep()

    def _new_state(self, p: torch.Tensor, group: dict[str, Any]) -> dict[str, Any]:
        init = group["initial_accumulator_value"]
        return {"step": _step0(), "sum": torch.full_like(p, init, memory_format=torch.preserve_format)}

    def _options(self, group: dict[str, Any], lr: float) -> Any:
        o = _core.AdagradOptions()
        o.lr, o.lr_decay, o.weight_decay = lr, group["lr_decay"], group["weight_decay"]
        o.eps, o.maximize = group["eps"], group["maximize"]
        return o


class Adadelta(_GradstepStep, torch.optim.Adadelta):
    _options_type = _core.AdadeltaOptions
    _state_names = ("square_avg", "acc_delta")

    def __init__(self, params: Any, lr: Any = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0, *, maximize: bool = False) -> None:
        lr, schedule = _accepts_schedule(lr)
        super().__init__(params, lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                         maximize=maximize)
        _restore_schedule(self, schedule)
        self._init_gradstep()

    def _new_state(self, p: torch.Tensor, group: dict[str, Any]) -> dict[str, Any]:
        return {"step": _step0(), "square_avg": _zeros(p), "acc_delta": _zeros(p)}

    def _options(self, group: dict[str, Any], lr: float) -> Any:
        o = _core.AdadeltaOptions()
        o.lr, o.rho, o.eps = lr, group["rho"], group["eps"]
        o.weight_decay, o.maximize = group["weight_decay"], group["maximize"]
        return o


class RMSprop(_GradstepStep, torch.optim.RMSprop):
    _options_type = _core.RmspropOptions
    _state_names = ("square_avg", "momentum_buffer", "grad_avg")

    def __init__(self, params: Any, lr: Any = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0, momentum: float = 0, centered: bool = False, *,
                 maximize: bool = False) -> None:
        lr, schedule = _accepts_schedule(lr)
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                         momentum=momentum, centered=centered, maximize=maximize)
        _restore_schedule(self, schedule)
        self._init_gradstep()

    def _new_state(self, p: torch.Tensor, group: dict[str, Any]) -> dict[str, Any]:
        state = {"step": _step0(), "square_avg": _zeros(p)}
        if group["momentum"] > 0:
            state["momentum_buffer"] = _zeros(p)
        if group["centered"]:
            state["grad_avg"] = _zeros(p)
        return state

    def _options(self, group: dict[str, Any], lr: float) -> Any:
        o = _core.RmspropOptions()
        o.lr, o.alpha, o.eps = lr, group["alpha"], group["eps"]
        o.weight_decay, o.momentum = group["weight_decay"], group["momentum"]
        o.centered, o.maximize = group["centered"], group["maximize"]
        return o


class Adam(_GradstepStep, torch.optim.Adam):
    _options_type = _core.AdamOptions
    _state_names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _decoupled: ClassVar[bool] = False

    def __init__(self, params: Any, lr: Any = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, amsgrad: bool = False, *,
                 maximize: bool = False) -> None:
        lr, schedule = _accepts_schedule(lr)
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize)
        _restore_schedule(self, schedule)
        self._init_gradstep()

    def _new_state(self, p: torch.Tensor, group: dict[str, Any]) -> dict[str, Any]:
        state = {"step": _step0(), "exp_avg": _zeros(p), "exp_avg_sq": _zeros(p)}
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = _zeros(p)
        return state

    def _options(self, group: dict[str, Any], lr: float) -> Any:
        o = _core.AdamOptions()
        o.lr, (o.beta1, o.beta2), o.eps = lr, group["betas"], group["eps"]
        o.weight_decay, o.amsgrad, o.maximize = group["weight_decay"], group["amsgrad"], group["maximize"]
        o.decoupled_weight_decay = group.get("decoupled_weight_decay", self._decoupled)
        return o


class AdamW(Adam, torch.optim.AdamW):
    _decoupled = True

    def __init__(self, params: Any, lr: Any = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False) -> None:
        lr, schedule = _accepts_schedule(lr)
        torch.optim.AdamW.__init__(self, params, lr=lr, betas=betas, eps=eps,
                                   weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize)
        _restore_schedule(self, schedule)
        self._init_gradstep()
