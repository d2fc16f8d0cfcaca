"""ReduceLROnPlateau: cut the learning rate when a metric stops improving.

Arguments, defaults and the decision rule are torch.optim.lr_scheduler's.
Instead of overwriting a learning rate, it keeps a scale factor on the
optimizer, applied on top of whatever base rate the optimizer has (a number,
a schedule, a callable). The optimizer's step then uses

    max(lr_scale * base(k), min(base(k), min_lr))

(computed in C++): a reduction never takes the rate below ``min_lr``, and a
schedule that is already below ``min_lr`` is left as it is. With a constant
base rate this is exactly torch's behaviour. ``opt.lr`` shows the result.
"""

from __future__ import annotations

import math
from typing import Any, SupportsFloat

from gradstep import _core
from gradstep.optim import Optimizer, _real


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return value


def _checked_config(
    mode: Any, factor: Any, patience: Any, threshold: Any, threshold_mode: Any, cooldown: Any, min_lr: Any, eps: Any
) -> dict[str, Any]:
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if threshold_mode not in ("rel", "abs"):
        raise ValueError(f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
    config: dict[str, Any] = dict(mode=mode, threshold_mode=threshold_mode)
    config["factor"] = _real("factor", factor)
    if not 0.0 <= config["factor"] < 1.0:
        raise ValueError(f"factor must be in [0, 1), got {config['factor']!r}")
    for name, value in (("threshold", threshold), ("min_lr", min_lr), ("eps", eps)):
        config[name] = _real(name, value)
        if not math.isfinite(config[name]) or config[name] < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {config[name]!r}")
    config["patience"] = _count("patience", patience)
    config["cooldown"] = _count("cooldown", cooldown)
    return config


class ReduceLROnPlateau:
    """Reduce the optimizer's rate by ``factor`` after ``patience`` steps without improvement.

    ``step(metric)`` once per evaluation. ``mode="min"`` expects the metric to
    fall, ``"max"`` to rise; an improvement must beat the best so far by
    ``threshold`` (relative for ``threshold_mode="rel"``, absolute for
    ``"abs"``). After a reduction, ``cooldown`` steps pass before bad steps
    count again. A reduction smaller than ``eps`` is skipped.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float = 0.0,
        eps: float = 1e-8,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a gradstep optimizer, got {type(optimizer).__name__}")
        config = _checked_config(mode, factor, patience, threshold, threshold_mode, cooldown, min_lr, eps)
        self.optimizer = optimizer
        self.mode: str = config["mode"]
        self.factor: float = config["factor"]
        self.patience: int = config["patience"]
        self.threshold: float = config["threshold"]
        self.threshold_mode: str = config["threshold_mode"]
        self.cooldown: int = config["cooldown"]
        self.min_lr: float = config["min_lr"]
        self.eps: float = config["eps"]
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0
        optimizer.set_plateau(optimizer.lr_scale, self.min_lr)

    def _is_better(self, a: float, best: float) -> bool:
        if self.mode == "min":
            return a < best * (1.0 - self.threshold) if self.threshold_mode == "rel" else a < best - self.threshold
        return a > best * (self.threshold + 1.0) if self.threshold_mode == "rel" else a > best + self.threshold

    @property
    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def step(self, metrics: SupportsFloat) -> None:
        """Record one value of the monitored metric; maybe reduce the rate."""
        current = float(metrics)
        self.last_epoch += 1
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad steps during cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

    def _reduce(self) -> None:
        opt = self.optimizer
        scale = opt.lr_scale * self.factor
        old = opt.lr
        new = float(_core.plateau_rate(opt.base_lr, scale, self.min_lr))
        if old - new > self.eps:
            opt.set_plateau(scale, self.min_lr)

    def get_last_lr(self) -> list[float]:
        """torch's accessor: the rate the optimizer's next step uses, in a list."""
        return [self.optimizer.lr]

    _config = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lr", "eps")
    _counters = ("best", "num_bad_epochs", "cooldown_counter", "last_epoch")

    def state_dict(self) -> dict[str, Any]:
        """Settings and counters as plain numbers and strings (the scale lives in the optimizer's)."""
        return {name: getattr(self, name) for name in self._config + self._counters}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore settings and counters saved by ``state_dict``; checked before anything is set."""
        missing = [k for k in self._config + self._counters if k not in state_dict]
        if missing:
            raise ValueError(f"state_dict lacks {missing}")
        config = _checked_config(**{k: state_dict[k] for k in self._config})
        best = _real("best", state_dict["best"])
        counters = {k: _count(k, state_dict[k]) for k in ("num_bad_epochs", "cooldown_counter", "last_epoch")}
        for k, v in {**config, **counters, "best": best}.items():
            setattr(self, k, v)
        self.optimizer.set_plateau(self.optimizer.lr_scale, self.min_lr)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._config)
        return f"ReduceLROnPlateau({args})"
