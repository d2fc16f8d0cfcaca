"""Learning-rate schedules, evaluated in closed form by the C++ core.

A schedule maps the 0-based update index ``k`` to a rate: update ``k`` (the
``k``-th call to an optimizer's ``step``, counting from 0) uses ``sched(k)``.
Where ``torch.optim.lr_scheduler`` has the schedule, ``sched(k)`` equals its
``get_last_lr()`` after ``k`` scheduler steps, without the drift of torch's
recursive updates. ``sched(np.arange(n))`` evaluates many steps in one C++
call. Schedules compose (``warmup``, ``sequence``), serialize to plain dicts
(``to_dict`` / ``from_dict``) and are passed to an optimizer as its ``lr``,
which evaluates them inside its C++ step.

An optimizer also accepts any Python callable of the step as ``lr``; that is
the slow path (one Python call per step) and cannot be serialized.

Limits: a schedule is evaluated at any step ``0 <= k <= 2**63 - 1`` (other
steps raise ValueError), and every value lies in the range its formula allows
(a non-increasing schedule never rises above its first rate, whatever the
step or parameters); a growing one (``gamma > 1``, a negative ``rate``) that
leaves the float64 range raises ValueError at the step where it does.
Compositions nest at most ``MAX_DEPTH`` (64) levels deep: ``warmup`` and
``sequence`` each add one level over their children, a plain schedule is one
level; and a schedule has at most ``MAX_NODES`` (10000) nodes in all. Deeper
or larger ones are refused when built and by ``from_dict``.

Past the end of a finite schedule:

- ``cosine`` follows torch's CosineAnnealingLR for every step, so after
  ``total_steps`` it rises again (period ``2 * total_steps``); follow it with
  ``sequence`` and ``constant`` to hold ``final_lr`` instead.
- ``one_cycle`` holds its last rate, ``max_lr / (div_factor * final_div_factor)``,
  from step ``total_steps - 1`` on (torch raises past ``total_steps``).
- ``polynomial`` and ``linear`` hold their end value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

import numpy as np

from gradstep import _core

_factories = _core.schedules

# The composition limits, defined once in the C++ core (schedule.hpp).
MAX_DEPTH: int = int(_factories.MAX_DEPTH)
MAX_NODES: int = int(_factories.MAX_NODES)
_MAX_STEP = 2**63 - 1  # the largest step a schedule is evaluated at (int64)

Steps = Union[int, np.integer, np.ndarray, Sequence[int]]


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if not -(2**63) <= int(value) <= _MAX_STEP:
        raise ValueError(f"{name} must fit in int64 (at most 2**63 - 1), got {int(value)}")
    return int(value)


def _ints(name: str, values: Any) -> list[int]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be a sequence of integers, got {type(values).__name__}")
    return [_int(f"{name}[{i}]", v) for i, v in enumerate(values)]


def _reals(name: str, values: Any) -> list[float]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__}")
    return [_real(f"{name}[{i}]", v) for i, v in enumerate(values)]


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    return value


def _schedule(name: str, value: Any) -> Schedule:
    if not isinstance(value, Schedule):
        raise TypeError(
            f"{name} must be a gradstep schedule (from gradstep.schedules), got "
            f"{type(value).__name__}; Python callables are accepted only as an optimizer's lr"
        )
    return value


class Schedule:
    """A learning-rate schedule held and evaluated in C++.

    Build one with the factories of this module. ``sched(k)`` gives the rate
    of update ``k`` as a float; ``sched(array_of_steps)`` an array of rates.
    """

    __slots__ = ("_args", "_core", "_name")

    def __init__(self, name: str, args: dict[str, Any], core: Any) -> None:
        # Private: `args` are the factory's normalized arguments (what to_dict
        # writes), `core` the C++ schedule built from them.
        self._name = name
        self._args = args
        self._core = core

    def __call__(self, step: Steps) -> Any:
        if isinstance(step, (int, np.integer)) and not isinstance(step, bool):
            k = int(step)
            if not 0 <= k <= _MAX_STEP:
                raise ValueError(f"step must be an integer in [0, 2**63 - 1], got {k}")
            return self._core.at(k)
        steps = np.asarray(step)
        if not isinstance(step, np.ndarray) and steps.dtype.kind in "fO":
            # A list of Python ints numpy could not fit in one integer type
            # ([0, 2**63] becomes float64): check them as the integers they are.
            items = np.asarray(step, dtype=object)
            if items.size and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items.flat):
                bad = next((int(v) for v in items.flat if not 0 <= int(v) <= _MAX_STEP), None)
                if bad is not None:
                    raise ValueError(f"steps must be integers in [0, 2**63 - 1], got {bad}")
        if steps.dtype.kind not in "iu":
            raise TypeError(f"steps must be integers, got dtype {steps.dtype}")
        if steps.dtype.kind == "u" and steps.size and int(steps.max()) > _MAX_STEP:
            raise ValueError(f"steps must be integers in [0, 2**63 - 1], got {int(steps.max())}")
        return self._core.eval(np.ascontiguousarray(steps, dtype=np.int64))

    @property
    def name(self) -> str:
        """The factory that made this schedule (``"cosine"``, ``"warmup"``, ...)."""
        return self._name

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-serializable dict; ``from_dict`` rebuilds the schedule."""
        out: dict[str, Any] = {"type": self._name}
        for key, value in self._args.items():
            if isinstance(value, Schedule):
                value = value.to_dict()
            elif isinstance(value, list):
                value = [v.to_dict() if isinstance(v, Schedule) else v for v in value]
            out[key] = value
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Schedule):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(repr(self))

    def __reduce__(self) -> tuple[Callable[[dict[str, Any]], Schedule], tuple[dict[str, Any]]]:
        return from_dict, (self.to_dict(),)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._args.items())
        return f"{self._name}({args})"


def _make(name: str, core_factory: str, **args: Any) -> Schedule:
    def core_arg(value: Any) -> Any:
        if isinstance(value, Schedule):
            return value._core
        if isinstance(value, list) and value and isinstance(value[0], Schedule):
            return [v._core for v in value]
        return value

    core = getattr(_factories, core_factory)(**{k: core_arg(v) for k, v in args.items()})
    return Schedule(name, args, core)


# ---- factories -------------------------------------------------------------


def constant(lr: float) -> Schedule:
    """The same rate at every step."""
    return _make("constant", "constant", lr=_real("lr", lr))


def step(lr: float, step_size: int, gamma: float = 0.1) -> Schedule:
    """StepLR: ``lr * gamma ** (k // step_size)``."""
    return _make(
        "step", "step", lr=_real("lr", lr), step_size=_int("step_size", step_size), gamma=_real("gamma", gamma)
    )


def multistep(lr: float, milestones: Sequence[int], gamma: float = 0.1) -> Schedule:
    """MultiStepLR: ``lr * gamma ** (number of milestones <= k)``; milestones sorted."""
    return _make(
        "multistep",
        "multistep",
        lr=_real("lr", lr),
        milestones=_ints("milestones", milestones),
        gamma=_real("gamma", gamma),
    )


def exponential(lr: float, gamma: Optional[float] = None, *, rate: Optional[float] = None) -> Schedule:
    """ExponentialLR ``lr * gamma ** k``, or ``lr * exp(-rate * k)``; give exactly one."""
    if (gamma is None) == (rate is None):
        raise ValueError("exponential takes exactly one of gamma and rate")
    if gamma is not None:
        return _make("exponential", "exponential", lr=_real("lr", lr), gamma=_real("gamma", gamma))
    return _make("exponential", "exponential_rate", lr=_real("lr", lr), rate=_real("rate", rate))


def exponential_decay(lr: float, decay_rate: float, decay_steps: int, staircase: bool = False) -> Schedule:
    """``lr * decay_rate ** (k / decay_steps)`` (Keras, optax); ``staircase`` floors the exponent."""
    return _make(
        "exponential_decay",
        "exponential_decay",
        lr=_real("lr", lr),
        decay_rate=_real("decay_rate", decay_rate),
        decay_steps=_int("decay_steps", decay_steps),
        staircase=_flag("staircase", staircase),
    )


def inverse_time(lr: float, decay_rate: float, decay_steps: int = 1, staircase: bool = False) -> Schedule:
    """1/t decay: ``lr / (1 + decay_rate * k / decay_steps)``; ``staircase`` floors ``k / decay_steps``."""
    return _make(
        "inverse_time",
        "inverse_time",
        lr=_real("lr", lr),
        decay_rate=_real("decay_rate", decay_rate),
        decay_steps=_int("decay_steps", decay_steps),
        staircase=_flag("staircase", staircase),
    )


def time_based(lr: float, decay: float) -> Schedule:
    """``eta_0 = lr``, ``eta_{k+1} = eta_k / (1 + decay * k)``, in closed form (via the gamma function)."""
    return _make("time_based", "time_based", lr=_real("lr", lr), decay=_real("decay", decay))


def polynomial(lr: float, total_steps: int, power: float = 1.0, end_lr: float = 0.0) -> Schedule:
    """PolynomialLR: ``(lr - end_lr) * (1 - min(k, total_steps) / total_steps) ** power + end_lr``."""
    return _make(
        "polynomial",
        "polynomial",
        lr=_real("lr", lr),
        total_steps=_int("total_steps", total_steps),
        power=_real("power", power),
        end_lr=_real("end_lr", end_lr),
    )


def linear(start_lr: float, end_lr: float, total_steps: int) -> Schedule:
    """From ``start_lr`` to ``end_lr`` in ``total_steps`` steps, then ``end_lr``."""
    return _make(
        "linear",
        "linear",
        start_lr=_real("start_lr", start_lr),
        end_lr=_real("end_lr", end_lr),
        total_steps=_int("total_steps", total_steps),
    )


def cosine(lr: float, total_steps: int, final_lr: float = 0.0) -> Schedule:
    """CosineAnnealingLR: ``final_lr + (lr - final_lr) * (1 + cos(pi * k / total_steps)) / 2``.

    As torch's, it keeps cycling after ``total_steps`` (see the module docs).
    """
    return _make(
        "cosine",
        "cosine",
        lr=_real("lr", lr),
        total_steps=_int("total_steps", total_steps),
        final_lr=_real("final_lr", final_lr),
    )


def cosine_restarts(lr: float, period: int, period_mult: int = 1, final_lr: float = 0.0) -> Schedule:
    """CosineAnnealingWarmRestarts (``T_0=period``, ``T_mult=period_mult``, ``eta_min=final_lr``)."""
    return _make(
        "cosine_restarts",
        "cosine_restarts",
        lr=_real("lr", lr),
        period=_int("period", period),
        period_mult=_int("period_mult", period_mult),
        final_lr=_real("final_lr", final_lr),
    )


def cyclic(
    base_lr: float,
    max_lr: float,
    step_size_up: int = 2000,
    step_size_down: Optional[int] = None,
    mode: str = "triangular",
    gamma: float = 1.0,
) -> Schedule:
    """CyclicLR's rate (modes ``triangular``, ``triangular2``, ``exp_range``).

    Momentum is not cycled: a schedule drives the learning rate only.
    """
    up = _int("step_size_up", step_size_up)
    down = up if step_size_down is None else _int("step_size_down", step_size_down)
    return _make(
        "cyclic",
        "cyclic",
        base_lr=_real("base_lr", base_lr),
        max_lr=_real("max_lr", max_lr),
        step_size_up=up,
        step_size_down=down,
        mode=_text("mode", mode),
        gamma=_real("gamma", gamma),
    )


def one_cycle(
    max_lr: float,
    total_steps: int,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
) -> Schedule:
    """OneCycleLR's rate; from step ``total_steps - 1`` on it holds its last value.

    ``pct_start`` must lie in (0, 1) and leave every phase at least one step.
    Momentum is not cycled.
    """
    return _make(
        "one_cycle",
        "one_cycle",
        max_lr=_real("max_lr", max_lr),
        total_steps=_int("total_steps", total_steps),
        pct_start=_real("pct_start", pct_start),
        anneal_strategy=_text("anneal_strategy", anneal_strategy),
        div_factor=_real("div_factor", div_factor),
        final_div_factor=_real("final_div_factor", final_div_factor),
        three_phase=_flag("three_phase", three_phase),
    )


def piecewise_constant(boundaries: Sequence[int], values: Sequence[float]) -> Schedule:
    """``values[i]`` for ``boundaries[i-1] <= k < boundaries[i]``: a boundary step takes the new value."""
    return _make(
        "piecewise_constant",
        "piecewise_constant",
        boundaries=_ints("boundaries", boundaries),
        values=_reals("values", values),
    )


def warmup(schedule: Schedule, steps: int, start_lr: float = 0.0) -> Schedule:
    """A linear ramp from ``start_lr`` towards ``schedule(0)``, then ``schedule`` shifted by ``steps``.

    ``lr(k) = start_lr + (schedule(0) - start_lr) * k / steps`` for ``k < steps``,
    and ``schedule(k - steps)`` after (the optax / transformers convention).
    """
    return _make(
        "warmup",
        "warmup",
        schedule=_schedule("schedule", schedule),
        steps=_int("steps", steps),
        start_lr=_real("start_lr", start_lr),
    )


def sequence(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """SequentialLR / optax.join_schedules: ``schedules[i]`` runs from ``boundaries[i-1]``, restarted at 0."""
    if not isinstance(schedules, (list, tuple)):
        raise TypeError(f"schedules must be a list of schedules, got {type(schedules).__name__}")
    return _make(
        "sequence",
        "sequence",
        schedules=[_schedule(f"schedules[{i}]", s) for i, s in enumerate(schedules)],
        boundaries=_ints("boundaries", boundaries),
    )


FACTORIES: dict[str, Callable[..., Schedule]] = {
    f.__name__: f
    for f in (
        constant,
        step,
        multistep,
        exponential,
        exponential_decay,
        inverse_time,
        time_based,
        polynomial,
        linear,
        cosine,
        cosine_restarts,
        cyclic,
        one_cycle,
        piecewise_constant,
        warmup,
        sequence,
    )
}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def from_dict(data: dict[str, Any]) -> Schedule:
    """Rebuild a schedule from ``Schedule.to_dict()`` output (e.g. after a JSON round trip).

    Anything else raises ValueError naming what is wrong: an unknown type,
    missing, unknown or mistyped fields, non-finite numbers, nesting deeper
    than ``MAX_DEPTH`` levels or more than ``MAX_NODES`` schedules in all
    (refused before recursing into them).
    """
    return _from_dict(data, 1, [0])


def _from_dict(data: Any, depth: int, count: list[int]) -> Schedule:
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ValueError(f"a schedule dict needs a 'type' naming its factory, got {_short(data)}")
    name = data["type"]
    factory = FACTORIES.get(name)
    if factory is None:
        raise ValueError(f"unknown schedule type {_short(name)}; known: {', '.join(sorted(FACTORIES))}")
    if depth > MAX_DEPTH:
        raise ValueError(f"schedules nest at most {MAX_DEPTH} levels deep; this dict nests deeper")
    count[0] += 1
    if count[0] > MAX_NODES:
        raise ValueError(f"a schedule may have at most {MAX_NODES} nodes; this dict has more")

    def value(v: Any) -> Any:  # nested schedules (warmup, sequence) are dicts too
        if isinstance(v, dict):
            return _from_dict(v, depth + 1, count)
        if isinstance(v, list) and v and isinstance(v[0], dict):
            if len(v) > MAX_NODES:
                raise ValueError(f"a schedule may have at most {MAX_NODES} nodes; a list here has {len(v)}")
            return [_from_dict(x, depth + 1, count) for x in v]
        return v

    args = {k: value(v) for k, v in data.items() if k != "type"}
    try:
        return factory(**args)
    except TypeError as e:
        raise ValueError(f"bad {name!r} schedule dict {_short(data)}: {e}") from e


__all__ = ["FACTORIES", "MAX_DEPTH", "MAX_NODES", "Schedule", "from_dict", *FACTORIES]
