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

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, Optional, TypeVar, Union

import numpy as np

from gradstep import _core

_kinds = _core.schedules

# The composition limits, defined once in the C++ core (schedule.hpp).
MAX_DEPTH: int = int(_kinds.MAX_DEPTH)
MAX_NODES: int = int(_kinds.MAX_NODES)
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


def _int_or_none(name: str, value: Any) -> Optional[int]:
    return None if value is None else _int(name, value)


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


def _schedule(name: str, value: Any) -> Any:
    if not isinstance(value, Schedule):
        raise TypeError(
            f"{name} must be a gradstep schedule (from gradstep.schedules), got "
            f"{type(value).__name__}; Python callables are accepted only as an optimizer's lr"
        )
    return value._core


def _schedules(name: str, values: Any) -> list[Any]:
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"{name} must be a list of schedules, got {type(values).__name__}")
    return [_schedule(f"{name}[{i}]", s) for i, s in enumerate(values)]


# A field's Python type, as the C++ core names it (register_schedules.cpp):
# the check and conversion its argument goes through before C++ sees it.
_CONVERT: dict[str, Callable[[str, Any], Any]] = {
    "real": _real,
    "int": _int,
    "int_or_none": _int_or_none,
    "flag": _flag,
    "ints": _ints,
    "reals": _reals,
    "text": _text,
    "schedule": _schedule,
    "schedules": _schedules,
}


class Schedule:
    """A learning-rate schedule held and evaluated in C++.

    Build one with the factories of this module. ``sched(k)`` gives the rate
    of update ``k`` as a float; ``sched(array_of_steps)`` an array of rates.
    """

    __slots__ = ("_core",)

    def __init__(self, core: _core.Schedule) -> None:
        # Private: the factories build the C++ schedule; everything else
        # (name, fields, to_dict, repr) is read back from it.
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
        return self._core.name

    def _fields(self) -> list[tuple[str, Any]]:
        # The C++ node's fields in its declared order; child schedules wrapped.
        def wrap(value: Any) -> Any:
            if isinstance(value, _core.Schedule):
                return Schedule(value)
            if isinstance(value, list) and value and isinstance(value[0], _core.Schedule):
                return [Schedule(v) for v in value]
            return value

        return [(key, wrap(value)) for key, value in self._core.fields()]

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-serializable dict; ``from_dict`` rebuilds the schedule."""
        out: dict[str, Any] = {"type": self.name}
        for key, value in self._fields():
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
        args = ", ".join(f"{k}={v!r}" for k, v in self._fields())
        return f"{self.name}({args})"


def _build(kind: Any, args: dict[str, Any]) -> Schedule:
    """A schedule of the C++ kind from the factory's arguments: each checked
    and converted as its field's type says, in the kind's field order."""
    return Schedule(kind(*(_CONVERT[tag](name, args[name]) for name, tag in kind.fields)))


# A factory's default, filled in from the C++ kind's (schedule.hpp) by @_factory.
_FROM_CPP: Any = object()

_F = TypeVar("_F", bound=Callable[..., Schedule])


def _factory(declaration: _F) -> _F:
    """The factory of the C++ kind named like ``declaration``.

    The decorated function declares the signature users see (the kind's
    fields, in order, with their types; each default written ``_FROM_CPP``)
    and the docstring; its body hands the bound arguments over
    (``return _arguments(locals())``). Its defaults are replaced by the C++
    struct's member initializers, and a declaration that disagrees with the
    C++ fields fails at import.
    """
    function: Any = declaration
    name = function.__name__
    kind = next((k for k in _kinds.KINDS if k.name == name), None)
    if kind is None:
        raise ImportError(f"gradstep.schedules.{name}: no C++ schedule kind of that name")
    params = list(inspect.signature(function).parameters.values())
    if [p.name for p in params] != [field for field, _ in kind.fields]:
        raise ImportError(f"gradstep.schedules.{name} does not declare the C++ kind's fields {kind.fields}")
    for p in params:
        if (p.default is _FROM_CPP) != (p.name in kind.defaults):
            raise ImportError(f"gradstep.schedules.{name}: {p.name}'s default must be the C++ kind's (_FROM_CPP)")
    function.__defaults__ = tuple(kind.defaults[p.name] for p in params if p.name in kind.defaults) or None

    @functools.wraps(function)
    def factory(*args: Any, **kwargs: Any) -> Schedule:
        return _build(kind, function(*args, **kwargs))  # that call binds the arguments, as Python does

    wrapped: Any = factory
    wrapped.kind = kind
    return wrapped


def _arguments(values: dict[str, Any]) -> Any:
    """A factory declaration's bound arguments, for @_factory (typed Any: the declaration returns a Schedule)."""
    return values


# ---- factories -------------------------------------------------------------


@_factory
def constant(lr: float) -> Schedule:
    """The same rate at every step."""
    return _arguments(locals())


@_factory
def step(lr: float, step_size: int, gamma: float = _FROM_CPP) -> Schedule:
    """StepLR: ``lr * gamma ** (k // step_size)``."""
    return _arguments(locals())


@_factory
def multistep(lr: float, milestones: Sequence[int], gamma: float = _FROM_CPP) -> Schedule:
    """MultiStepLR: ``lr * gamma ** (number of milestones <= k)``; milestones sorted."""
    return _arguments(locals())


def exponential(lr: float, gamma: Optional[float] = None, *, rate: Optional[float] = None) -> Schedule:
    """ExponentialLR ``lr * gamma ** k``, or ``lr * exp(-rate * k)``; give exactly one."""
    if (gamma is None) == (rate is None):
        raise ValueError("exponential takes exactly one of gamma and rate")
    if gamma is not None:
        return _build(_kinds.Exponential, {"lr": lr, "gamma": gamma})
    return _build(_kinds.ExponentialRate, {"lr": lr, "rate": rate})


@_factory
def exponential_decay(lr: float, decay_rate: float, decay_steps: int, staircase: bool = _FROM_CPP) -> Schedule:
    """``lr * decay_rate ** (k / decay_steps)`` (Keras, optax); ``staircase`` floors the exponent."""
    return _arguments(locals())


@_factory
def inverse_time(lr: float, decay_rate: float, decay_steps: int = _FROM_CPP, staircase: bool = _FROM_CPP) -> Schedule:
    """1/t decay: ``lr / (1 + decay_rate * k / decay_steps)``; ``staircase`` floors ``k / decay_steps``."""
    return _arguments(locals())


@_factory
def time_based(lr: float, decay: float) -> Schedule:
    """``eta_0 = lr``, ``eta_{k+1} = eta_k / (1 + decay * k)``, in closed form (via the gamma function)."""
    return _arguments(locals())


@_factory
def polynomial(lr: float, total_steps: int, power: float = _FROM_CPP, end_lr: float = _FROM_CPP) -> Schedule:
    """PolynomialLR: ``(lr - end_lr) * (1 - min(k, total_steps) / total_steps) ** power + end_lr``."""
    return _arguments(locals())


@_factory
def linear(start_lr: float, end_lr: float, total_steps: int) -> Schedule:
    """From ``start_lr`` to ``end_lr`` in ``total_steps`` steps, then ``end_lr``."""
    return _arguments(locals())


@_factory
def cosine(lr: float, total_steps: int, final_lr: float = _FROM_CPP) -> Schedule:
    """CosineAnnealingLR: ``final_lr + (lr - final_lr) * (1 + cos(pi * k / total_steps)) / 2``.

    As torch's, it keeps cycling after ``total_steps`` (see the module docs).
    """
    return _arguments(locals())


@_factory
def cosine_restarts(lr: float, period: int, period_mult: int = _FROM_CPP, final_lr: float = _FROM_CPP) -> Schedule:
    """CosineAnnealingWarmRestarts (``T_0=period``, ``T_mult=period_mult``, ``eta_min=final_lr``)."""
    return _arguments(locals())


@_factory
def cyclic(
    base_lr: float,
    max_lr: float,
    step_size_up: int = _FROM_CPP,
    step_size_down: Optional[int] = _FROM_CPP,
    mode: str = _FROM_CPP,
    gamma: float = _FROM_CPP,
) -> Schedule:
    """CyclicLR's rate (modes ``triangular``, ``triangular2``, ``exp_range``).

    Momentum is not cycled: a schedule drives the learning rate only.
    """
    return _arguments(locals())


@_factory
def one_cycle(
    max_lr: float,
    total_steps: int,
    pct_start: float = _FROM_CPP,
    anneal_strategy: str = _FROM_CPP,
    div_factor: float = _FROM_CPP,
    final_div_factor: float = _FROM_CPP,
    three_phase: bool = _FROM_CPP,
) -> Schedule:
    """OneCycleLR's rate; from step ``total_steps - 1`` on it holds its last value.

    ``pct_start`` must lie in (0, 1) and leave every phase at least one step.
    Momentum is not cycled.
    """
    return _arguments(locals())


@_factory
def piecewise_constant(boundaries: Sequence[int], values: Sequence[float]) -> Schedule:
    """``values[i]`` for ``boundaries[i-1] <= k < boundaries[i]``: a boundary step takes the new value."""
    return _arguments(locals())


@_factory
def warmup(schedule: Schedule, steps: int, start_lr: float = _FROM_CPP) -> Schedule:
    """A linear ramp from ``start_lr`` towards ``schedule(0)``, then ``schedule`` shifted by ``steps``.

    ``lr(k) = start_lr + (schedule(0) - start_lr) * k / steps`` for ``k < steps``,
    and ``schedule(k - steps)`` after (the optax / transformers convention).
    """
    return _arguments(locals())


@_factory
def sequence(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """SequentialLR / optax.join_schedules: ``schedules[i]`` runs from ``boundaries[i-1]``, restarted at 0."""
    return _arguments(locals())


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
