"""Timing: interleaved rounds of every candidate of a case, medians over rounds."""

from __future__ import annotations

import datetime
import gc
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

import numpy as np

import gradstep as gs
from gradstep.bench.candidates import PEERS, Candidate, make_candidates, torch_present
from gradstep.bench.record import FORMAT, machine_info, versions
from gradstep.bench.spec import PRECISIONS, SPECS, Case, Spec, bytes_per_element, is_half

# Cases of at least this many elements (DRAM-resident) get new buffers every round.
FRESH_ELEMENTS = 1 << 22
# torch's OpenMP workers spin for about 10 ms after each parallel region
# (measured on the 2-core test VM); a round starts after they have parked.
TORCH_SETTLE_S = 0.02
# The candidates whose steps run torch ops (gradstep.torch's steady step runs none).
TORCH_OPS = ("torch-", "reference", "deepspeed")



def _run_for(fn: Callable[[], Any], seconds: float, at_least: int) -> None:
    end = time.perf_counter() + seconds
    done = 0
    while done < at_least or time.perf_counter() < end:
        fn()
        done += 1


def measure(make: Callable[[], list[Candidate]], rounds: int, sample_s: float, warm_s: float,
            settle_s: float, fresh: bool) -> tuple[dict[str, list[float]], dict[str, int]]:
    """`rounds` interleaved samples of ~sample_s per candidate: seconds per step, and steps per sample.

    With `fresh`, the candidates (and so all their buffers) are made anew every
    round: where a large array lands in physical memory (which DRAM banks its
    pages share with the other arrays of the step) can change a streaming
    step's time by tens of percent, and it stays fixed for an allocation's
    life; new allocations each round let the median average over it.
    """
    cands = make()
    steps: dict[str, int] = {}
    for c in cands:  # calibrate steps per sample
        c.step()
        start = time.perf_counter()
        c.step()
        once = time.perf_counter() - start
        steps[c.name] = max(1, min(100_000, round(sample_s / max(once, 1e-7))))
    samples: dict[str, list[float]] = {c.name: [] for c in cands}
    for r in range(rounds):
        if fresh and r:
            del cands[:]
            gc.collect()
            cands = make()
        if settle_s:
            time.sleep(settle_s)
        after_torch = False
        for c in cands:
            # A candidate right after one that ran torch (or deepspeed) ops would
            # share the cores with torch's still-spinning OpenMP workers.
            if settle_s and after_torch:
                time.sleep(settle_s)
            after_torch = c.name.startswith(TORCH_OPS)
            # Untimed warm-up: at least two steps, so the thread pool sees
            # back-to-back steps and the caches hold what they will hold.
            _run_for(c.step, warm_s, 2)
            k = steps[c.name]
            start = time.perf_counter()
            for _ in range(k):
                c.step()
            samples[c.name].append((time.perf_counter() - start) / k)
    return samples, steps


def run_case(spec: Spec, case: Case, dtype: np.dtype, rounds: int, sample_s: float,
             warm_s: float, settle_s: float, threads: Optional[int] = None,
             precision: Optional[str] = None) -> dict[str, Any]:
    """One case at the thread counts set now (``threads``, for the record: gradstep's by default);
    half params (bfloat16, float16) at one ``precision`` of PRECISIONS (default f32-states)."""
    if is_half(dtype) and precision is None:
        precision = "f32-states"
    # Large cases live in DRAM: fresh buffers every round (see measure).
    fresh = case.elements >= FRESH_ELEMENTS
    samples, steps = measure(lambda: make_candidates(spec, case, dtype, precision=precision), rounds, sample_s, warm_s,
                             settle_s if torch_present() else 0.0, fresh)
    medians = {name: statistics.median(v) for name, v in samples.items()}
    per_element = bytes_per_element(spec, dtype.itemsize, precision)
    per_step = per_element * case.elements
    gbps = {name: per_step / t / 1e9 for name, t in medians.items()}
    ours = medians["gradstep"]
    result = {
        "optimizer": spec.name,
        "case": case.label,
        **({"precision": precision} if precision is not None else {}),
        "threads": threads if threads is not None else gs.get_num_threads(),
        "tensors": case.tensors,
        "elements": case.elements,
        "bytes_per_element": per_element,
        "bytes_per_step": per_step,
        "median_seconds": medians,
        "samples": samples,
        "steps_per_sample": steps,
        "fresh_buffers_each_round": fresh,
        "gbps": gbps,
        "roof_gbps": gbps["roof"],
        "roof_fraction": gbps["gradstep"] / gbps["roof"],
        "speedup": {name: t / ours for name, t in medians.items() if name in PEERS},
    }
    gc.collect()
    return result


def run_all(optimizers: Sequence[str], cases: Sequence[Case], dtype: np.dtype,
            threads: Union[int, Sequence[int]], rounds: int, sample_s: float, warm_s: float,
            settle_s: float, progress: Callable[[str], None],
            precisions: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Every optimizer and case at every thread count (``threads``: one or a list), the
    same count for gradstep and torch; a case's runs at its thread counts follow one
    another, so that they see the same machine load as far as can be. Half params:
    every case at each of ``precisions`` (default: all of PRECISIONS), one after another."""
    counts = [threads] if isinstance(threads, int) else list(threads)
    if is_half(dtype):
        runs: list[Optional[str]] = list(precisions or PRECISIONS)
    elif precisions:
        raise ValueError(f"precisions are for bfloat16/float16 params, not {np.dtype(dtype)}")
    else:
        runs = [None]
    torch_before = None
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch_before = torch.get_num_threads()
    gs_before = gs.get_num_threads()
    started = time.time()
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    results = []
    try:
        for name in optimizers:
            for case in cases:
                for precision in runs:
                    for n in counts:
                        gs.set_num_threads(n)
                        if torch_before is not None:
                            torch.set_num_threads(n)
                        progress(f"{name} {case.label}" + (f" {precision}" if precision else "")
                                 + (f" at {n} thread{'s' if n > 1 else ''}" if len(counts) > 1 else ""))
                        results.append(run_case(SPECS[name], case, dtype, rounds, sample_s, warm_s,
                                                settle_s, threads=n, precision=precision))
    finally:
        gs.set_num_threads(gs_before)
        if torch_before is not None:
            import torch

            torch.set_num_threads(torch_before)
    return {
        "format": FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": ["gradstep", "bench", *sys.argv[2:]] if sys.argv[1:2] == ["bench"] else sys.argv,
        "machine": machine_info(),
        "versions": versions(),
        "settings": {
            "threads": counts,
            "torch_threads": counts if torch_before is not None else None,
            "dtype": str(dtype),
            **({"precisions": runs} if is_half(dtype) else {}),
            "rounds": rounds,
            "sample_seconds": sample_s,
            "warmup_seconds": warm_s,
            "settle_seconds": settle_s,
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "wall_seconds": round(time.time() - started, 1),
        },
        "results": results,
    }

