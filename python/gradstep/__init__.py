"""gradstep: SIMD optimizer steps and learning-rate schedules in C++."""

from __future__ import annotations

from gradstep import kernels, schedules
from gradstep._core import available_isas, get_num_threads, isa, set_isa, set_num_threads
from gradstep.checkpoint import CheckpointError, load, save
from gradstep.flat import FlatBuffers, flatten
from gradstep.lr_finder import LRFinderResult, lr_find
from gradstep.optim import SGD, Adadelta, Adagrad, Adam, AdamW, Optimizer, RMSprop, StepResult
from gradstep.plateau import ReduceLROnPlateau
from gradstep.plotting import plot_schedules
from gradstep.ranges import LearningRateRange, LearningRateWarning, recommended_range

__all__ = [
    "SGD",
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamW",
    "CheckpointError",
    "FlatBuffers",
    "LRFinderResult",
    "LearningRateRange",
    "LearningRateWarning",
    "Optimizer",
    "RMSprop",
    "ReduceLROnPlateau",
    "StepResult",
    "available_isas",
    "cmake_dir",
    "flatten",
    "get_num_threads",
    "isa",
    "kernels",
    "load",
    "lr_find",
    "plot_schedules",
    "recommended_range",
    "save",
    "schedules",
    "set_isa",
    "set_num_threads",
]
from gradstep._version import __version__  # written from pyproject.toml at build time


def cmake_dir() -> str:
    """The folder holding gradstepConfig.cmake, for C++ trainers that link the core.

    ``cmake -Dgradstep_DIR=$(python -c "import gradstep; print(gradstep.cmake_dir())")``
    """
    from pathlib import Path

    return str(Path(__file__).parent / "lib" / "cmake" / "gradstep")
