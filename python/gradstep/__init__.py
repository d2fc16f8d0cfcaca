"""gradstep: SIMD optimizer steps and learning-rate schedules in C++."""

from __future__ import annotations

from gradstep import kernels, schedules
from gradstep._core import available_isas, get_num_threads, isa, set_isa, set_num_threads
from gradstep.lr_finder import LRFinderResult, lr_find
from gradstep.optim import SGD, Adadelta, Adagrad, Adam, AdamW, Optimizer, RMSprop
from gradstep.plateau import ReduceLROnPlateau
from gradstep.plotting import plot_schedules
from gradstep.ranges import LearningRateRange, LearningRateWarning, recommended_range

__all__ = [
    "SGD",
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamW",
    "LRFinderResult",
    "LearningRateRange",
    "LearningRateWarning",
    "Optimizer",
    "RMSprop",
    "ReduceLROnPlateau",
    "available_isas",
    "get_num_threads",
    "isa",
    "kernels",
    "lr_find",
    "plot_schedules",
    "recommended_range",
    "schedules",
    "set_isa",
    "set_num_threads",
]
__version__ = "0.1.0"
