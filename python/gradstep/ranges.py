"""Rule-of-thumb learning-rate ranges per optimizer, and the warning for rates far outside.

A range is where a first try usually works, not a hard limit: the range test
(``gradstep.lr_find``) measures the right rate for a given model. Optimizers
built with a float ``lr`` more than ``FAR_OUTSIDE`` times outside their range
issue a ``LearningRateWarning`` (a warning, never an error: unusual rates are
sometimes right).
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from typing import Any, NamedTuple, Union


class LearningRateWarning(UserWarning):
    """An optimizer was built with a learning rate far outside its usual range."""


class LearningRateRange(NamedTuple):
    """A rule-of-thumb interval ``[low, high]`` for a first learning rate."""

    low: float
    high: float
    source: str

    def __contains__(self, lr: object) -> bool:
        return isinstance(lr, (int, float)) and self.low <= lr <= self.high


# How far outside the range (as a factor) before the warning fires.
FAR_OUTSIDE = 10.0

_RANGES: dict[str, LearningRateRange] = {
    # The three commonly quoted rule-of-thumb ranges for gradient descent, Adam and RMSProp.
    "sgd": LearningRateRange(1e-3, 1e-1, "rule of thumb for gradient descent"),
    "adam": LearningRateRange(1e-4, 1e-2, "rule of thumb for Adam"),
    "rmsprop": LearningRateRange(1e-3, 5e-2, "rule of thumb for RMSProp"),
    # The rest are read off the literature and the libraries' defaults:
    # - momentum: Sutskever, Martens, Dahl & Hinton (ICML 2013, "On the importance of
    #   initialization and momentum in deep learning") search lr in {1e-4 ... 5e-2} with
    #   momentum up to 0.999; He et al. (CVPR 2016, ResNet) train with 0.1 and momentum 0.9.
    "momentum": LearningRateRange(
        1e-4, 1e-1, "Sutskever et al. 2013 (1e-4 to 5e-2); He et al. 2016 (0.1, momentum 0.9)"
    ),
    # - AdaGrad: Keras/TensorFlow default 1e-3, torch default 1e-2, and Pennington, Socher
    #   & Manning (EMNLP 2014, GloVe) train with AdaGrad at an initial rate of 0.05.
    "adagrad": LearningRateRange(
        1e-3, 1e-1, "Keras default 1e-3, torch default 1e-2, GloVe (Pennington et al. 2014) 0.05"
    ),
    # - Adadelta: Zeiler (2012, arXiv:1212.5701) has no learning rate at all, which is
    #   lr = 1.0 in torch's form (torch's default); rates well below that only slow it down
    #   (the Keras 2.3+ default of 1e-3 is a known source of "Adadelta does not learn").
    "adadelta": LearningRateRange(
        1e-1, 1.0, "Zeiler 2012 (no learning rate, i.e. 1.0; torch's default)"
    ),
}
_RANGES["adamw"] = LearningRateRange(1e-4, 1e-2, "rule of thumb for Adam (AdamW is Adam)")
# Adam's variants: Adam's range holds torch's defaults (NAdam and Adamax 2e-3, RAdam 1e-3).
_RANGES["nadam"] = LearningRateRange(1e-4, 1e-2, "rule of thumb for Adam (NAdam is Adam with Nesterov momentum)")
_RANGES["radam"] = LearningRateRange(1e-4, 1e-2, "rule of thumb for Adam (RAdam is Adam, rectified)")
_RANGES["adamax"] = LearningRateRange(1e-4, 1e-2, "rule of thumb for Adam (Adamax is Adam with an infinity norm)")
# The learning-rate-free optimizers estimate the step size d themselves; their lr is a
# multiplier of it, 1.0 as published (prodigyopt and dadaptation: "leave LR set to 1
# unless you encounter instability", then lower it).
_LR_MULTIPLIER = ("lr is a multiplier of the step size the optimizer estimates: 1.0 as published "
                  "(Mishchenko & Defazio 2023; Defazio & Mishchenko 2023); lower it only if unstable")
for _name in ("prodigy", "dadaptadam", "dadaptsgd"):
    _RANGES[_name] = LearningRateRange(0.1, 1.0, _LR_MULTIPLIER)
# LAMB's lr is the relative step of each tensor, ||delta p|| / ||p|| (the trust ratio
# scales the update to ||p||), so it does not depend on the gradient's scale. You et al.
# (ICLR 2020, arXiv:1904.00962) train BERT with 5e-3 / 2^k (k = 3 ... 0: 6.25e-4 at batch
# 512 to 5e-3 at 32K, square-root scaling); Wightman et al. ("ResNet strikes back", 2021)
# train ResNet-50 with 5e-3 to 8e-3 at batch 2048; timm's default is 1e-3.
_RANGES["lamb"] = LearningRateRange(
    5e-4, 1e-2, "You et al. 2019 (BERT, 6.25e-4 at batch 512 to 5e-3 at 32K), Wightman et al. 2021 "
    "(ResNet-50, 5e-3 to 8e-3); lr is each tensor's relative step (trust ratio)"
)

# Schedule-Free (schedulefree 1.4.1): lr is the step size of z, the base SGD or AdamW
# iterate (times the warmup factor while warming up); no schedule is needed. Its README:
# "For SGD, a learning rate 10x-50x larger than classical rates seems to be a good starting
# point. For AdamW, learning rates in the range 1x-10x larger than with schedule-based
# approaches seem to work." Applied to the rules of thumb above; each holds its default
# (AdamW-SF 0.0025, SGD-SF 1.0).
_RANGES["adamwschedulefree"] = LearningRateRange(
    1e-4, 1e-1, "schedulefree README: 1x-10x the rates of schedule-based AdamW (Adam's 1e-4 to 1e-2); "
    "lr is the step size of z, times the warmup factor")
_RANGES["sgdschedulefree"] = LearningRateRange(
    1e-2, 5.0, "schedulefree README: 10x-50x classical SGD rates (1e-3 to 1e-1); "
    "lr is the step size of z, times the warmup factor")
# - Lion: Chen et al. (2023, "Symbolic Discovery of Optimization Algorithms", section 5)
#   take Lion's rate 3-10x smaller than AdamW's (its sign update has a larger norm per
#   element): Adam's rule of thumb divided by 10 at the bottom and by 3 at the top. It
#   holds lion-pytorch's default 1e-4.
_RANGES["lion"] = LearningRateRange(
    1e-5, 3e-3, "Chen et al. 2023: 3-10x smaller than AdamW's (Adam's rule of thumb / 10 to / 3)"
)

# - Adafactor: lr caps the relative step rho = min(lr, 1/sqrt(step)), and the update is
#   scaled by the param's RMS (alpha = max(eps2, RMS(p)) * rho), so lr does not depend on
#   the gradient's scale. Shazeer & Stern (ICML 2018, "Adafactor: Adaptive Learning Rates
#   with Sublinear Memory Cost", section 8) use rho = min(1e-2, 1/sqrt(step)), torch's
#   default lr 1e-2; above 1 lr no longer changes any step (1/sqrt(step) <= 1).
_RANGES["adafactor"] = LearningRateRange(
    1e-3, 1e-1, "Shazeer & Stern 2018: relative step min(1e-2, 1/sqrt(step)) (torch's default lr 1e-2); "
    "lr caps the step relative to the param's RMS"
)

_ALIASES = {
    "gd": "sgd",
    "gradient descent": "sgd",
    "gradient_descent": "sgd",
    "sgd momentum": "momentum",
    "sgd_momentum": "momentum",
    "nesterov": "momentum",
}


def recommended_range(optimizer: Union[str, Any]) -> LearningRateRange:
    """The rule-of-thumb learning-rate range for an optimizer.

    ``optimizer`` is a name ("sgd", "gradient descent", "momentum", "adagrad",
    "adadelta", "rmsprop", "adam", "adamw", "nadam", "radam", "adamax", "lamb",
    "adamwschedulefree", "sgdschedulefree", and the
    learning-rate-free "prodigy", "dadaptadam", "dadaptsgd", whose lr is a multiplier (1.0);
    "adadelta", "rmsprop", "adam", "adamw", "nadam", "radam", "adamax", "lion", "adafactor";
    any case), a gradstep optimizer class,
    or an optimizer instance (an SGD instance with momentum gets the momentum range).
    """
    if isinstance(optimizer, str):
        key = optimizer.strip().lower()
    elif isinstance(optimizer, type):
        key = optimizer.__name__.lower()
    else:
        key = type(optimizer).__name__.lower()
        hyperparameters: dict[str, Any] = getattr(optimizer, "hyperparameters", dict)()
        if key == "sgd" and hyperparameters.get("momentum", 0.0) > 0:
            key = "momentum"
    key = _ALIASES.get(key, key)
    if key not in _RANGES:
        known = sorted(set(_RANGES) | set(_ALIASES))
        raise ValueError(f"no recommended range for {optimizer!r}; known names: {known}")
    return _RANGES[key]


def _caller_stacklevel() -> int:
    # Point the warning at the first frame outside the gradstep package, however
    # deep the constructor chain (AdamW -> Adam -> Optimizer) is.
    package_dir = os.path.dirname(os.path.abspath(__file__))
    frame = sys._getframe(1)
    level = 1
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == package_dir:
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


def check_learning_rate(optimizer: Any) -> None:
    """Warn when ``optimizer`` has a float lr more than FAR_OUTSIDE times outside its range.

    Schedules and callables are not checked; neither is lr == 0 (a frozen model is
    a deliberate choice, not a typo).
    """
    lr = getattr(optimizer, "schedule", None)  # the rate as given
    if callable(lr) or not isinstance(lr, float) or lr == 0.0 or not math.isfinite(lr):
        return
    try:
        rng = recommended_range(optimizer)
    except ValueError:
        return  # a user-defined optimizer we know nothing about
    if lr < rng.low / FAR_OUTSIDE or lr > rng.high * FAR_OUTSIDE:
        name = type(optimizer).__name__
        warnings.warn(
            f"{name} lr={lr:g} is more than {FAR_OUTSIDE:g}x outside the usual range "
            f"{rng.low:g} to {rng.high:g} ({rng.source}); gradstep.lr_find can measure "
            "a good rate for your model",
            LearningRateWarning,
            stacklevel=_caller_stacklevel(),
        )
