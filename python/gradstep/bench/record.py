"""The record of a run: its format tag, the machine and the versions it ran with."""

from __future__ import annotations

import importlib
import importlib.util
import os
import copy
import platform
from typing import Any, Optional

import numpy as np

import gradstep as gs

# /2: settings["threads"] is the list of thread counts run, and every result
# has its "threads"; /1 (one thread count, in settings only) is read by upgrade.
FORMAT = "gradstep-bench/2"
FORMATS = ("gradstep-bench/1", FORMAT)


def upgrade(record: dict[str, Any]) -> dict[str, Any]:
    """A record of any format this version reads, as the current format (a copy; the
    record itself is unchanged). Raises ValueError for anything else."""
    if record.get("format") not in FORMATS:
        raise ValueError(f"not a {FORMAT} record (format {record.get('format')!r})")
    if record["format"] == FORMAT:
        return record
    out = copy.deepcopy(record)
    settings = out.setdefault("settings", {})
    threads = settings.get("threads")
    torch_threads = settings.get("torch_threads")
    settings["threads"] = [threads] if threads is not None else []
    settings["torch_threads"] = [torch_threads] if torch_threads is not None else None
    for r in out.get("results", []):
        r.setdefault("threads", threads)
    out["format"] = FORMAT
    out["upgraded_from"] = record["format"]
    return out


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
    # The reference packages of optimizers torch.optim has not (lion_pytorch), where installed.
    from gradstep.bench.spec import SPECS

    # The top-level package: finding timm.optim.lamb would run timm's __init__ (which needs torchvision).
    for module in sorted({s.reference[0].split(".")[0] for s in SPECS.values() if s.reference is not None}):
        if importlib.util.find_spec(module) is not None:
            out[module] = _distribution_version(module)
    return out


def _distribution_version(module: str) -> Optional[str]:
    """The installed version of the distribution providing ``module`` (lion_pytorch: lion-pytorch)."""
    import importlib.metadata as metadata

    try:
        names = metadata.packages_distributions().get(module) or [module.replace("_", "-")]
    except AttributeError:  # Python 3.9 has no packages_distributions
        names = [module.replace("_", "-")]
    try:
        return metadata.version(names[0])
    except metadata.PackageNotFoundError:
        return None

