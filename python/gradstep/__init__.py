"""gradstep: SIMD optimizer steps and learning-rate schedules in C++."""

from __future__ import annotations

from gradstep import kernels, schedules
from gradstep._core import available_isas, get_num_threads, isa, set_isa, set_num_threads
from gradstep.checkpoint import CheckpointError, load, save
from gradstep.flat import FlatBuffers, flatten
from gradstep.optim import SGD, Adadelta, Adagrad, Adam, AdamW, Optimizer, RMSprop, StepResult
from gradstep.plateau import ReduceLROnPlateau
from gradstep.plotting import plot_schedules

__all__ = [
    "SGD",
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamW",
    "CheckpointError",
    "FlatBuffers",
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
    "plot_schedules",
    "save",
    "schedules",
    "set_isa",
    "set_num_threads",
]
__version__ = "0.1.0"


def cmake_dir() -> str:
    """The folder holding gradstepConfig.cmake, for C++ trainers that link the core.

    ``cmake -Dgradstep_DIR=$(python -c "import gradstep; print(gradstep.cmake_dir())")``
    """
    from pathlib import Path

    return str(Path(__file__).parent / "lib" / "cmake" / "gradstep")
