"""gradstep: SIMD optimizer steps and learning-rate schedules in C++."""

from __future__ import annotations

from gradstep import kernels, schedules
from gradstep._core import available_isas, get_num_threads, isa, set_isa, set_num_threads
from gradstep.optim import SGD, Adadelta, Adagrad, Adam, AdamW, Optimizer, RMSprop
from gradstep.plateau import ReduceLROnPlateau
from gradstep.plotting import plot_schedules

__all__ = [
    "SGD",
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamW",
    "Optimizer",
    "RMSprop",
    "ReduceLROnPlateau",
    "available_isas",
    "get_num_threads",
    "isa",
    "kernels",
    "plot_schedules",
    "schedules",
    "set_isa",
    "set_num_threads",
]
__version__ = "0.1.0"
