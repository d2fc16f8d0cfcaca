"""gradstep: SIMD optimizer steps and learning-rate schedules in C++."""

from __future__ import annotations

from gradstep import kernels, schedules
from gradstep._core import available_isas, get_num_threads, isa, set_isa, set_num_threads
from gradstep.checkpoint import CheckpointError, load, save
from gradstep.flat import FlatBuffers, flatten
from gradstep.lr_finder import LRFinderResult, lr_find
from gradstep.optim import OPTIMIZERS, Optimizer, StepResult
from gradstep.plateau import ReduceLROnPlateau
from gradstep.plotting import plot_schedules
from gradstep.ranges import LearningRateRange, LearningRateWarning, recommended_range

globals().update(OPTIMIZERS)  # gs.SGD, ..., gs.AdamW: generated from the C++ declarations

__all__ = [
    "CheckpointError",
    "FlatBuffers",
    "LRFinderResult",
    "LearningRateRange",
    "LearningRateWarning",
    "Optimizer",
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
    *OPTIMIZERS,
]
from gradstep._version import __version__  # written from pyproject.toml at build time


def __getattr__(name: str) -> type[Optimizer]:
    # Reached only for names that are not here; tells type checkers that the
    # generated names (gs.Adam) are optimizer classes.
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def cmake_dir() -> str:
    """The folder holding gradstepConfig.cmake, for C++ trainers that link the core.

    ``cmake -Dgradstep_DIR=$(python -c "import gradstep; print(gradstep.cmake_dir())")``
    """
    from pathlib import Path

    return str(Path(__file__).parent / "lib" / "cmake" / "gradstep")
