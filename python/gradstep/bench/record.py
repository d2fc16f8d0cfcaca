"""The record of a run: its format tag, the machine and the versions it ran with."""

from __future__ import annotations

import importlib
import importlib.util
import os
import platform
from typing import Any, Optional

import numpy as np

import gradstep as gs

FORMAT = "gradstep-bench/1"



def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = None
    try:
        memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (AttributeError, ValueError, OSError):
        pass
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "affinity_cpus": affinity,
        "memory_gib": memory,
        "isa": gs.isa(),
        "available_isas": gs.available_isas(),
        "platform": platform.platform(),
    }


def versions() -> dict[str, Optional[str]]:
    out: dict[str, Optional[str]] = {
        "python": platform.python_version(),
        "gradstep": gs.__version__,
        "numpy": np.__version__,
        "torch": None,
        "deepspeed": None,
    }
    for name in ("torch", "deepspeed"):
        if importlib.util.find_spec(name) is not None:
            try:
                out[name] = str(importlib.import_module(name).__version__)
            except Exception:
                out[name] = "present but failed to import"
    return out

