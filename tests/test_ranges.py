"""Recommended learning-rate ranges and the warning for rates far outside them."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import torch

import gradstep as gs
from gradstep.ranges import FAR_OUTSIDE

OPTIMIZERS = ["SGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW", "NAdam", "RAdam", "Adamax", "Lion", "Adafactor"]


def _params() -> list[np.ndarray]:
    return [np.zeros(3, np.float32)]


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [("gradient descent", 1e-3, 0.1), ("SGD", 1e-3, 0.1), ("adam", 1e-4, 1e-2), ("RMSProp", 1e-3, 0.05)],
)
def test_rule_of_thumb_ranges(name: str, low: float, high: float) -> None:
    rng = gs.recommended_range(name)
    assert (rng.low, rng.high) == (low, high)
    assert rng.source


def test_lion_range_is_three_to_ten_times_below_adams() -> None:
    lion, adam = gs.recommended_range("lion"), gs.recommended_range("adam")
    assert (lion.low, lion.high) == (1e-5, 3e-3)
    assert adam.low / lion.low == 10 and round(adam.high / lion.high) == 3
    assert 1e-4 in lion and "Chen" in lion.source


@pytest.mark.parametrize("name", ["momentum", "adagrad", "adadelta", "adamw"])
def test_researched_ranges_are_sane_intervals(name: str) -> None:
    rng = gs.recommended_range(name)
    assert 0 < rng.low < rng.high
    assert rng.source


def reference_class(name: str) -> type:
    """torch.optim.<name>, or the declared reference of an optimizer torch has not (lion_pytorch.Lion)."""
    import importlib

    from gradstep import _spec

    return getattr(importlib.import_module(_spec.by_name(name).reference), name)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_torch_default_lr_is_inside_the_range(name: str) -> None:
    # torch's defaults (lion_pytorch's for Lion) are a common first try; they must
    # not trigger the warning.
    default = inspect.signature(reference_class(name)).parameters["lr"].default
    assert float(default) in gs.recommended_range(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        getattr(gs, name)(_params())  # gradstep's own default
        getattr(gs, name)(_params(), lr=float(default))


@pytest.mark.parametrize("name", ["Prodigy", "DAdaptAdam", "DAdaptSGD"])
def test_learning_rate_free_lr_is_a_multiplier(name: str) -> None:
    # Their references' lr (prodigyopt, dadaptation) multiplies the estimated step: 1.0.
    import dadaptation
    import prodigyopt

    ref = getattr(prodigyopt if name == "Prodigy" else dadaptation, name)
    default = inspect.signature(ref).parameters["lr"].default
    rng = gs.recommended_range(name)
    assert default == 1.0 and default in rng and "multiplier" in rng.source
    assert inspect.signature(getattr(gs, name)).parameters["lr"].default == 1.0
@pytest.mark.parametrize(("name", "factors", "base"), [("AdamWScheduleFree", (1, 10), "adam"),
                                                        ("SGDScheduleFree", (10, 50), "sgd")])
def test_schedule_free_ranges_scale_the_base_rule_as_its_readme_says(name: str, factors: tuple[int, int],
                                                                     base: str) -> None:
    import schedulefree

    rng, base_rng = gs.recommended_range(name), gs.recommended_range(base)
    assert (rng.low, rng.high) == pytest.approx((factors[0] * base_rng.low, factors[1] * base_rng.high))
    assert "step size of z" in rng.source
    default = inspect.signature(getattr(schedulefree, name)).parameters["lr"].default
    assert default == inspect.signature(getattr(gs, name)).parameters["lr"].default
    assert default in rng
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        getattr(gs, name)(_params())


def test_names_classes_and_instances_resolve_alike() -> None:
    assert gs.recommended_range(gs.Adam) == gs.recommended_range("ADAM")
    assert gs.recommended_range(gs.Adam(_params())) == gs.recommended_range("adam")
    assert gs.recommended_range(gs.SGD(_params(), lr=0.01)) == gs.recommended_range("sgd")
    with_momentum = gs.SGD(_params(), lr=0.01, momentum=0.9)
    assert gs.recommended_range(with_momentum) == gs.recommended_range("momentum")


def test_unknown_optimizer_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no recommended range for 'lbfgs'"):
        gs.recommended_range("lbfgs")


@pytest.mark.parametrize(
    ("name", "lr"), [("Adam", 1.0), ("AdamW", 1e-6), ("SGD", 5.0), ("Adadelta", 1e-3), ("RMSprop", 1.0)]
)
def test_far_outside_warns_and_points_at_the_caller(name: str, lr: float) -> None:
    with pytest.warns(gs.LearningRateWarning, match="outside the usual range") as record:
        opt = getattr(gs, name)(_params(), lr=lr)
    assert record[0].filename == __file__  # stacklevel skips gradstep's own frames
    # A warning, not an error: the optimizer works.
    opt.step([np.ones(3, np.float32)])
    assert opt.step_count == 1


def test_the_threshold_is_a_factor_outside_the_range() -> None:
    rng = gs.recommended_range("adam")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gs.Adam(_params(), lr=rng.high * FAR_OUTSIDE)
        gs.Adam(_params(), lr=rng.low / FAR_OUTSIDE)
    with pytest.warns(gs.LearningRateWarning):
        gs.Adam(_params(), lr=rng.high * FAR_OUTSIDE * 1.01)
    with pytest.warns(gs.LearningRateWarning):
        gs.Adam(_params(), lr=rng.low / FAR_OUTSIDE / 1.01)


def test_momentum_sgd_is_judged_by_the_momentum_range() -> None:
    # 5e-5 is more than 10x below plain SGD's floor (1e-3), within 10x of momentum's (1e-4).
    with pytest.warns(gs.LearningRateWarning):
        gs.SGD(_params(), lr=5e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gs.SGD(_params(), lr=5e-5, momentum=0.9)


def test_zero_and_schedules_are_not_judged() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gs.Adam(_params(), lr=0.0)
        gs.Adam(_params(), lr=lambda step: 100.0)
