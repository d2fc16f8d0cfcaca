"""Time optimizer steps against the peers installed and against the memory roof.

For every optimizer and case (one tensor of N elements, or M tensors of N
elements each), gradstep's step is timed beside the peers this Python has:
numpy written by hand from the update equations (always), torch.optim with a
for-loop, foreach and fused implementation (when torch is installed and the
optimizer has that implementation), and DeepSpeedCPUAdam / DeepSpeedCPUAdagrad
(when deepspeed imports). The roof is a STREAM-like probe in the C++ core that
reads and writes the same buffers as the step (param, grad and the
optimizer's states) with the same threads but no optimizer math.

All candidates of a case run in one process, interleaved round-robin: each
round sleeps first so that torch's OpenMP threads, which spin for ~10 ms
after every torch op, have parked, then every candidate warms up (a few
steps, untimed) and takes one sample of back-to-back steps. Reported times
are medians over rounds of the time per step, Python call included. Cases
of 4M elements and more get new buffers every round (physical placement
matters to DRAM-bound steps; see measure).

Results print as a table; with ``--out DIR`` the table, a JSON record (with
the machine, versions and settings, to keep and ``--compare`` against later)
and a PNG chart are written there.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

import gradstep as gs
from gradstep import _core

FORMAT = "gradstep-bench/1"
DEFAULT_CASES = "4096,65536,1048576,16777216,200x5000"
QUICK_CASES = "4096,20x5000"
OPTIMIZERS = ("adam", "sgd", "adagrad", "rmsprop", "adadelta")
PEERS = ("numpy", "torch-loop", "torch-foreach", "torch-fused", "deepspeed")
# Cases of at least this many elements (DRAM-resident) get new buffers every round.
FRESH_ELEMENTS = 1 << 22
# torch's OpenMP workers spin for about 10 ms after each parallel region
# (measured on the 2-core test VM); a round starts after they have parked.
TORCH_SETTLE_S = 0.02


# -- cases -----------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """``tensors`` tensors of ``size`` elements each."""

    tensors: int
    size: int

    @property
    def label(self) -> str:
        return str(self.size) if self.tensors == 1 else f"{self.tensors}x{self.size}"

    @property
    def elements(self) -> int:
        return self.tensors * self.size

    @staticmethod
    def parse(text: str) -> Case:
        parts = text.lower().replace("×", "x").split("x")
        try:
            numbers = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"bad case {text!r}: expected N or MxN (M tensors of N elements)") from None
        if len(numbers) == 1:
            numbers = [1, numbers[0]]
        if len(numbers) != 2 or min(numbers) < 1:
            raise ValueError(f"bad case {text!r}: expected N or MxN with positive integers")
        return Case(numbers[0], numbers[1])


# -- optimizers: gradstep, numpy by hand, torch, deepspeed -----------------------


@dataclass(frozen=True)
class Spec:
    """One optimizer configuration, as every implementation spells it."""

    name: str
    gradstep: str  # class in gradstep
    torch: str  # class in torch.optim
    hyper: dict[str, Any]  # constructor arguments common to gradstep and torch
    numpy_step: Callable[[Any, int], None]  # (NumpyState, 1-based step)
    deepspeed: Optional[tuple[str, str, dict[str, Any]]] = None  # module, class, extra kwargs


class NumpyState:
    """A param, its grad, its states and scratch space, for the by-hand steps."""

    def __init__(self, param: np.ndarray, grad: np.ndarray, states: int) -> None:
        self.p, self.g = param, grad
        self.s = [np.zeros_like(param) for _ in range(states)]
        self.t = [np.empty_like(param) for _ in range(2)]


def _np_adam(x: NumpyState, k: int, lr: float = 1e-3, b1: float = 0.9, b2: float = 0.999,
             eps: float = 1e-8) -> None:
    m, v = x.s
    t, u = x.t
    m *= b1
    np.multiply(x.g, 1 - b1, out=t)
    m += t
    v *= b2
    np.multiply(x.g, x.g, out=t)
    t *= 1 - b2
    v += t
    np.sqrt(v, out=t)
    t /= math.sqrt(1 - b2**k)
    t += eps
    np.divide(m, t, out=u)
    u *= lr / (1 - b1**k)
    x.p -= u


def _np_sgd(x: NumpyState, k: int, lr: float = 1e-2, momentum: float = 0.9) -> None:
    (buf,) = x.s
    t = x.t[0]
    if k == 1:
        np.copyto(buf, x.g)
    else:
        buf *= momentum
        buf += x.g
    np.multiply(buf, lr, out=t)
    x.p -= t


def _np_adagrad(x: NumpyState, k: int, lr: float = 1e-2, eps: float = 1e-10) -> None:
    (acc,) = x.s
    t = x.t[0]
    np.multiply(x.g, x.g, out=t)
    acc += t
    np.sqrt(acc, out=t)
    t += eps
    np.divide(x.g, t, out=t)
    t *= lr
    x.p -= t


def _np_rmsprop(x: NumpyState, k: int, lr: float = 1e-2, alpha: float = 0.99,
                eps: float = 1e-8) -> None:
    (sq,) = x.s
    t = x.t[0]
    sq *= alpha
    np.multiply(x.g, x.g, out=t)
    t *= 1 - alpha
    sq += t
    np.sqrt(sq, out=t)
    t += eps
    np.divide(x.g, t, out=t)
    t *= lr
    x.p -= t


def _np_adadelta(x: NumpyState, k: int, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6) -> None:
    sq, acc = x.s
    t, u = x.t
    sq *= rho
    np.multiply(x.g, x.g, out=t)
    t *= 1 - rho
    sq += t
    np.add(acc, eps, out=t)
    np.sqrt(t, out=t)
    np.add(sq, eps, out=u)
    np.sqrt(u, out=u)
    t /= u
    t *= x.g  # t = delta
    np.multiply(t, t, out=u)
    u *= 1 - rho
    acc *= rho
    acc += u
    t *= lr
    x.p -= t


SPECS = {
    "adam": Spec("adam", "Adam", "Adam", dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8), _np_adam,
                 ("deepspeed.ops.adam", "DeepSpeedCPUAdam", dict(adamw_mode=False))),
    "sgd": Spec("sgd", "SGD", "SGD", dict(lr=1e-2, momentum=0.9), _np_sgd),
    "adagrad": Spec("adagrad", "Adagrad", "Adagrad", dict(lr=1e-2, eps=1e-10), _np_adagrad,
                    ("deepspeed.ops.adagrad", "DeepSpeedCPUAdagrad", {})),
    "rmsprop": Spec("rmsprop", "RMSprop", "RMSprop", dict(lr=1e-2, alpha=0.99, eps=1e-8), _np_rmsprop),
    "adadelta": Spec("adadelta", "Adadelta", "Adadelta", dict(lr=1.0, rho=0.9, eps=1e-6), _np_adadelta),
}


def state_count(spec: Spec) -> int:
    """State buffers per parameter of this configuration (from the core's slot mask)."""
    opt = getattr(gs, spec.gradstep)([np.zeros(1, np.float32)], **spec.hyper)
    return bin(opt._options.state_mask).count("1")


def bytes_per_element(spec: Spec, itemsize: int) -> int:
    """Memory traffic of one element's update: param, grad and states read; param and states written."""
    states = state_count(spec)
    return itemsize * ((2 + states) + (1 + states))


# -- candidates ----------------------------------------------------------------


@dataclass
class Candidate:
    name: str
    step: Callable[[], Any]


def _problem(case: Case, dtype: np.dtype, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(case.size).astype(dtype) for _ in range(case.tensors)]
    grads = [(rng.standard_normal(case.size) * 1e-2).astype(dtype) for _ in range(case.tensors)]
    return params, grads


def gradstep_candidate(spec: Spec, params: list[np.ndarray], grads: list[np.ndarray]) -> Candidate:
    opt = getattr(gs, spec.gradstep)([p.copy() for p in params], **spec.hyper)
    return Candidate("gradstep", lambda: opt.step(grads))


def gradstep_flat_candidate(spec: Spec, params: list[np.ndarray], grads: list[np.ndarray]) -> Candidate:
    flat = gs.flatten(params)
    for dst, src in zip(flat.grads, grads):
        np.copyto(dst, src)
    opt = getattr(gs, spec.gradstep)(flat, **spec.hyper)
    return Candidate("gradstep-flat", opt.step)


def gradstep_checked_candidate(spec: Spec, params: list[np.ndarray], grads: list[np.ndarray]) -> Candidate:
    """The cost of the safeguards: the non-finite check and global-norm clipping (one more
    read of the gradients before the update)."""
    opt = getattr(gs, spec.gradstep)([p.copy() for p in params], skip_nonfinite=True,
                                     max_grad_norm=1e9, **spec.hyper)
    return Candidate("gradstep-checked", lambda: opt.step(grads))


def numpy_candidate(spec: Spec, params: list[np.ndarray], grads: list[np.ndarray]) -> Candidate:
    count = state_count(spec)
    states = [NumpyState(p.copy(), g, count) for p, g in zip(params, grads)]
    counter = [0]

    def step() -> None:
        counter[0] += 1
        for x in states:
            spec.numpy_step(x, counter[0])

    return Candidate("numpy", step)


def probe_candidate(spec: Spec, case: Case, dtype: np.dtype) -> Candidate:
    """The roof: the core's stream probe over one contiguous tensor of the case's elements."""
    n, states = case.elements, state_count(spec)
    names = ["s0", "s1", "s2"]
    param = np.ones(n, dtype)
    grad = np.full(n, 0.5, dtype)
    state_lists: list[Optional[list[np.ndarray]]] = [[np.ones(n, dtype)] for _ in range(states)]
    state_lists += [None] * (3 - states)
    probe = _core.TensorSet([param], state_lists, names)
    return Candidate("roof", lambda: probe.stream([grad]))


def torch_candidates(spec: Spec, params: list[np.ndarray], grads: list[np.ndarray]) -> list[Candidate]:
    """torch.optim for-loop, foreach and fused, each only if this torch supports it."""
    try:
        import torch
    except ImportError:
        return []
    out = []
    for name, flags in (("torch-loop", dict(foreach=False)), ("torch-foreach", dict(foreach=True)),
                        ("torch-fused", dict(fused=True))):
        tensors = [torch.from_numpy(p.copy()).requires_grad_() for p in params]
        for t, g in zip(tensors, grads):
            t.grad = torch.from_numpy(g)
        try:
            opt = getattr(torch.optim, spec.torch)(tensors, **spec.hyper, **flags)
            opt.step()
        except (RuntimeError, TypeError, ValueError):
            continue  # e.g. no fused implementation of this optimizer on CPU
        out.append(Candidate(name, opt.step))
    # gradstep.torch: the torch.optim subclass stepping the same torch tensors.
    import gradstep.torch as gt

    tensors = [torch.from_numpy(p.copy()).requires_grad_() for p in params]
    for t, g in zip(tensors, grads):
        t.grad = torch.from_numpy(g)
    adapter = getattr(gt, spec.torch)(tensors, **spec.hyper)
    adapter.step()
    out.append(Candidate("gradstep.torch", adapter.step))
    return out


def torch_present() -> bool:
    return importlib.util.find_spec("torch") is not None


def deepspeed_available() -> bool:
    return importlib.util.find_spec("deepspeed") is not None


def deepspeed_candidate(spec: Spec, params: list[np.ndarray], grads: list[np.ndarray]) -> Optional[Candidate]:
    if spec.deepspeed is None or not deepspeed_available():
        return None
    module_name, class_name, extra = spec.deepspeed
    try:
        import torch

        cls = getattr(importlib.import_module(module_name), class_name)
        tensors = [torch.from_numpy(p.copy()).requires_grad_() for p in params]
        for t, g in zip(tensors, grads):
            t.grad = torch.from_numpy(g)
        opt = cls(tensors, **spec.hyper, **extra)
        opt.step()
    except Exception:  # a broken or CUDA-only build: report it as absent
        return None
    return Candidate("deepspeed", opt.step)


def make_candidates(spec: Spec, case: Case, dtype: np.dtype, peers: bool = True) -> list[Candidate]:
    """Every candidate for one case, gradstep first, the roof second."""
    params, grads = _problem(case, dtype)
    cands = [gradstep_candidate(spec, params, grads)]
    if case.tensors > 1:
        cands.append(gradstep_flat_candidate(spec, params, grads))
    cands.append(probe_candidate(spec, case, dtype))
    cands.append(gradstep_checked_candidate(spec, params, grads))
    if peers:
        cands.append(numpy_candidate(spec, params, grads))
        cands += torch_candidates(spec, params, grads)
        ds = deepspeed_candidate(spec, params, grads)
        if ds is not None:
            cands.append(ds)
    return cands


# -- timing ----------------------------------------------------------------------


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
        for c in cands:
            # Untimed warm-up: at least two steps, so the thread pool sees
            # back-to-back steps and the caches hold what they will hold.
            _run_for(c.step, warm_s, 2)
            k = steps[c.name]
            start = time.perf_counter()
            for _ in range(k):
                c.step()
            samples[c.name].append((time.perf_counter() - start) / k)
    return samples, steps


# -- one run -----------------------------------------------------------------------


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


def run_case(spec: Spec, case: Case, dtype: np.dtype, rounds: int, sample_s: float,
             warm_s: float, settle_s: float) -> dict[str, Any]:
    # Large cases live in DRAM: fresh buffers every round (see measure).
    fresh = case.elements >= FRESH_ELEMENTS
    samples, steps = measure(lambda: make_candidates(spec, case, dtype), rounds, sample_s, warm_s,
                             settle_s if torch_present() else 0.0, fresh)
    medians = {name: statistics.median(v) for name, v in samples.items()}
    per_step = bytes_per_element(spec, dtype.itemsize) * case.elements
    gbps = {name: per_step / t / 1e9 for name, t in medians.items()}
    ours = medians["gradstep"]
    result = {
        "optimizer": spec.name,
        "case": case.label,
        "tensors": case.tensors,
        "elements": case.elements,
        "bytes_per_element": bytes_per_element(spec, dtype.itemsize),
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


def run_all(optimizers: Sequence[str], cases: Sequence[Case], dtype: np.dtype, threads: int,
            rounds: int, sample_s: float, warm_s: float, settle_s: float,
            progress: Callable[[str], None]) -> dict[str, Any]:
    torch_threads = None
    torch_before = None
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch_before = torch.get_num_threads()
        torch.set_num_threads(threads)
        torch_threads = threads
    gs_before = gs.get_num_threads()
    gs.set_num_threads(threads)
    started = time.time()
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    results = []
    try:
        for name in optimizers:
            for case in cases:
                progress(f"{name} {case.label}")
                results.append(run_case(SPECS[name], case, dtype, rounds, sample_s, warm_s, settle_s))
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
            "threads": threads,
            "torch_threads": torch_threads,
            "dtype": str(dtype),
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


# -- reporting ----------------------------------------------------------------------


def fmt_time(seconds: float) -> str:
    us = seconds * 1e6
    if us < 10:
        return f"{us:.2f} µs"
    if us < 1000:
        return f"{us:.1f} µs"
    return f"{us / 1000:.2f} ms"


def table(record: dict[str, Any]) -> str:
    """The report: machine line, ratios table, then every candidate's median time."""
    m, s, v = record["machine"], record["settings"], record["versions"]
    lines = [
        f"gradstep bench: {m['cpu']}, {m['affinity_cpus']} CPUs usable, ISA {m['isa']}, "
        f"{s['threads']} threads, {s['dtype']}",
        f"versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
        f"medians of {s['rounds']} interleaved rounds; time per step, Python call included",
        "",
    ]
    results = record["results"]
    peers = [p for p in PEERS if any(p in r["speedup"] for r in results)]
    extra = [n for n in ("gradstep-flat", "gradstep-checked", "gradstep.torch")
             if any(n in r["median_seconds"] for r in results)]
    head = ["optimizer", "case", "B/elem", "gradstep", "GB/s", "roof GB/s", "% roof",
            *[f"vs {p}" for p in peers], "checks cost", "gradstep.torch vs torch-fused"]
    rows = []
    for r in results:
        med = r["median_seconds"]
        t = med["gradstep"]
        # skip_nonfinite + max_grad_norm: time with the checks over time without.
        checks = f"{med['gradstep-checked'] / t:.2f}x" if "gradstep-checked" in med else "-"
        adapter = (f"{med['torch-fused'] / med['gradstep.torch']:.1f}x"
                   if "gradstep.torch" in med and "torch-fused" in med else "-")
        rows.append([r["optimizer"], r["case"], str(r["bytes_per_element"]), fmt_time(t),
                     f"{r['gbps']['gradstep']:.1f}", f"{r['roof_gbps']:.1f}",
                     f"{100 * r['roof_fraction']:.0f}%",
                     *[_ratio(r["speedup"][p]) if p in r["speedup"] else "-" for p in peers],
                     checks, adapter])
    lines += _grid(head, rows)
    lines += ["", "median time per step"]
    names = ["gradstep", *extra, "roof", *peers]
    rows = [[r["optimizer"], r["case"],
             *[fmt_time(r["median_seconds"][n]) if n in r["median_seconds"] else "-" for n in names]]
            for r in results]
    lines += _grid(["optimizer", "case", *names], rows)
    return "\n".join(lines) + "\n"


def _ratio(x: float) -> str:
    return f"{x:.2f}x" if x < 10 else f"{x:.1f}x"


def _grid(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return [line(head), "  ".join("-" * w for w in widths), *[line(r) for r in rows]]


def compare(old: dict[str, Any], new: dict[str, Any]) -> str:
    """gradstep's time and roof fraction, old run vs this one, for the cases both have."""
    before = {(r["optimizer"], r["case"]): r for r in old.get("results", [])}
    rows = []
    for r in new["results"]:
        o = before.get((r["optimizer"], r["case"]))
        if o is None:
            continue
        t_old, t_new = o["median_seconds"]["gradstep"], r["median_seconds"]["gradstep"]
        rows.append([r["optimizer"], r["case"], fmt_time(t_old), fmt_time(t_new), f"{t_new / t_old:.2f}",
                     f"{100 * o['roof_fraction']:.0f}%", f"{100 * r['roof_fraction']:.0f}%"])
    head = ["optimizer", "case", "old", "new", "new/old", "old % roof", "new % roof"]
    title = f"compared with {old.get('created', '?')} ({old.get('machine', {}).get('cpu', '?')})"
    return "\n".join([title, *_grid(head, rows)]) + "\n"


def chart(record: dict[str, Any], path: Path) -> None:
    """Time per step by case, one panel per optimizer, the roof as a black dash."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = record["results"]
    optimizers = list(dict.fromkeys(r["optimizer"] for r in results))
    names = [n for n in ("gradstep", "gradstep-flat", *PEERS)
             if any(n in r["median_seconds"] for r in results)]
    colors = dict(zip(names, ["#d62728", "#ff9896", "#7f7f7f", "#1f77b4", "#9edae5", "#2ca02c",
                              "#9467bd"]))
    cols = min(3, len(optimizers))
    rows = -(-len(optimizers) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    width = 0.8 / len(names)
    for ax, opt in zip(axes.flat, optimizers):
        mine = [r for r in results if r["optimizer"] == opt]
        for j, name in enumerate(names):
            xs = [i + (j - (len(names) - 1) / 2) * width for i, r in enumerate(mine)
                  if name in r["median_seconds"]]
            ys = [r["median_seconds"][name] * 1e6 for r in mine if name in r["median_seconds"]]
            ax.bar(xs, ys, width, color=colors[name], label=name)
        for i, r in enumerate(mine):
            ax.hlines(r["median_seconds"]["roof"] * 1e6, i - 0.45, i + 0.45, colors="black",
                      linewidth=1.5, label="roof (stream probe)" if i == 0 else None)
        ax.set_yscale("log")
        ax.set_xticks(range(len(mine)), [r["case"] for r in mine], fontsize=8)
        ax.set_title(f"{opt} ({mine[0]['bytes_per_element']} B/element)", fontsize=10)
        ax.set_ylabel("µs per step", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", which="major", alpha=0.3)
    for ax in list(axes.flat)[len(optimizers):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    m, s = record["machine"], record["settings"]
    fig.legend(handles, labels, loc="lower right" if len(optimizers) % cols else "upper center",
               fontsize=8, ncol=1 if len(optimizers) % cols else len(labels), frameon=False)
    fig.suptitle(f"optimizer step, {s['dtype']}: {m['cpu']}, {s['threads']} threads, ISA {m['isa']} "
                 "(lower is better)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# -- command line -------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help=f"a few seconds: cases {QUICK_CASES}, 3 rounds of short samples")
    parser.add_argument("--out", type=Path, help="write bench.txt, bench.json and bench.png here")
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS),
                        help=f"comma-separated, from {', '.join(OPTIMIZERS)}")
    parser.add_argument("--cases", help=f"comma-separated N or MxN (default {DEFAULT_CASES})")
    parser.add_argument("--threads", type=int, help="threads for gradstep and torch (default: gradstep's)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--rounds", type=int, help="interleaved samples per candidate (default 9)")
    parser.add_argument("--isa", help="force gradstep's ISA target for the run (e.g. scalar)")
    parser.add_argument("--compare", type=Path, metavar="OLD_JSON",
                        help="also print this run against an earlier bench.json")
    parser.add_argument("--load", type=Path, metavar="JSON",
                        help="time nothing: report (and --out, --compare) a saved bench.json")


def run(args: argparse.Namespace) -> int:
    optimizers = [o.strip() for o in args.optimizers.split(",") if o.strip()]
    unknown = [o for o in optimizers if o not in SPECS]
    if unknown:
        raise SystemExit(f"gradstep bench: unknown optimizer(s) {unknown}; choose from {list(SPECS)}")
    cases = [Case.parse(c) for c in (args.cases or (QUICK_CASES if args.quick else DEFAULT_CASES)).split(",")]
    threads = args.threads or gs.get_num_threads()
    rounds = args.rounds or (3 if args.quick else 9)
    old = json.loads(args.compare.read_text()) if args.compare else None
    if args.load:
        record = json.loads(args.load.read_text())
        if record.get("format") != FORMAT:
            raise SystemExit(f"gradstep bench: {args.load} is not a {FORMAT} record")
    else:
        isa_before = gs.isa()
        if args.isa:
            gs.set_isa(args.isa)
        try:
            record = run_all(optimizers, cases, np.dtype(args.dtype), threads, rounds,
                             sample_s=0.001 if args.quick else 0.02,
                             warm_s=0.0003 if args.quick else 0.002,
                             settle_s=TORCH_SETTLE_S / 2 if args.quick else TORCH_SETTLE_S,
                             progress=lambda msg: print(f"  timing {msg} ...", file=sys.stderr, flush=True))
        finally:
            gs.set_isa(isa_before)
    text = table(record)
    if old is not None:
        text += "\n" + compare(old, record)
    print(text, end="")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench.txt").write_text(text)
        (args.out / "bench.json").write_text(json.dumps(record, indent=1) + "\n")
        chart(record, args.out / "bench.png")
        print(f"wrote {args.out / 'bench.txt'}, {args.out / 'bench.json'}, {args.out / 'bench.png'}")
    return 0
