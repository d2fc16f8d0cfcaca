"""The Python factories are the C++ kinds': same fields in the same order,
defaults taken from the C++ structs (schedule.hpp), and each kind reachable."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from gradstep import _core
from gradstep import schedules as S

KINDS = _core.schedules.KINDS
# exponential(lr, gamma=None, *, rate=None) chooses between two C++ kinds
# (both fields required there): tested on its own below.
ONE_TO_ONE = [k for k in KINDS if k.name != "exponential"]


@pytest.mark.parametrize("kind", ONE_TO_ONE, ids=[k.name for k in ONE_TO_ONE])
def test_python_defaults_are_the_cpp_defaults(kind) -> None:
    factory = S.FACTORIES[kind.name]
    params = inspect.signature(factory).parameters
    assert list(params) == [name for name, _ in kind.fields]
    for name, p in params.items():
        if name in kind.defaults:
            assert p.default == kind.defaults[name] and type(p.default) is type(kind.defaults[name])
        else:
            assert p.default is inspect.Parameter.empty
    assert factory.kind is kind


def test_exponential_covers_both_cpp_kinds() -> None:
    assert [f for f, _ in _core.schedules.Exponential.fields] == ["lr", "gamma"]
    assert [f for f, _ in _core.schedules.ExponentialRate.fields] == ["lr", "rate"]
    assert not _core.schedules.Exponential.defaults and not _core.schedules.ExponentialRate.defaults
    assert S.exponential(0.1, 0.5)._core.fields() == [("lr", 0.1), ("gamma", 0.5)]
    assert S.exponential(0.1, rate=0.5)._core.fields() == [("lr", 0.1), ("rate", 0.5)]


def test_every_kind_has_a_factory() -> None:
    assert {k.name for k in KINDS} == set(S.FACTORIES)
    assert len(KINDS) == 17


def test_the_defaults_themselves() -> None:
    # torch.optim.lr_scheduler's, where it has the schedule; written out once here.
    d = {k.name: k.defaults for k in KINDS if k is not _core.schedules.ExponentialRate}
    assert d["step"] == {"gamma": 0.1} and d["multistep"] == {"gamma": 0.1}
    assert d["cyclic"] == {"step_size_up": 2000, "step_size_down": None, "mode": "triangular", "gamma": 1.0}
    assert d["one_cycle"] == {"pct_start": 0.3, "anneal_strategy": "cos", "div_factor": 25.0,
                              "final_div_factor": 1e4, "three_phase": False}
    assert d["cosine"] == {"final_lr": 0.0} and d["warmup"] == {"start_lr": 0.0}
    assert d["inverse_time"] == {"decay_steps": 1, "staircase": False}


@pytest.mark.parametrize("up", [1, 7, 2000])
def test_cyclic_step_size_down_none_means_step_size_up(up: int) -> None:
    implicit, explicit = S.cyclic(0.001, 0.006, up), S.cyclic(0.001, 0.006, up, up)
    assert implicit.to_dict() == explicit.to_dict() and implicit.to_dict()["step_size_down"] == up
    steps = np.arange(0, 10 * up + 3)
    assert np.array_equal(implicit(steps), explicit(steps))
    assert S.cyclic(0.001, 0.006, up, None) == explicit
    assert S.cyclic(0.001, 0.006, step_size_down=3).to_dict()["step_size_up"] == 2000


def test_a_declaration_that_disagrees_with_cpp_fails_at_import() -> None:
    def cosine(lr: float, steps: int, final_lr: float = S._FROM_CPP) -> S.Schedule:
        return S._arguments(locals())

    with pytest.raises(ImportError, match="fields"):
        S._factory(cosine)

    def step(lr: float, step_size: int, gamma: float = 0.5) -> S.Schedule:  # a default of its own
        return S._arguments(locals())

    with pytest.raises(ImportError, match="gamma"):
        S._factory(step)


def test_kinds_build_with_every_field_given_in_order() -> None:
    s = _core.schedules.Cosine(0.1, 100, 0.0)
    assert s.name == "cosine" and s.fields() == [("lr", 0.1), ("total_steps", 100), ("final_lr", 0.0)]
    with pytest.raises(TypeError, match="3 field values"):
        _core.schedules.Cosine(0.1, 100)
    with pytest.raises(ValueError, match="mode must be 'triangular', 'triangular2' or 'exp_range'"):
        _core.schedules.Cyclic(0.1, 0.2, 3, None, "saw", 1.0)
    w = _core.schedules.Warmup(s, 5, 0.0)
    assert w.num_nodes == 2 and w.fields()[0][1].fields() == s.fields()
