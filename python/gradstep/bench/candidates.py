"""The candidates of a case: gradstep (plain, flat, with safeguards), the roof, and
the peers this Python has (numpy by hand, torch.optim, gradstep.torch, deepspeed).

A candidate is a name and a zero-argument step; all candidates of a case start
from copies of the same params and read the same grads.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

import gradstep as gs
from gradstep import _core
from gradstep.bench.numpy_steps import NumpyState
from gradstep.bench.spec import Case, Spec, state_count

# The peers gradstep is compared with, in report order.
PEERS = ("numpy", "torch-loop", "torch-foreach", "torch-fused", "deepspeed")


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


def torch_optimizer(cls: Callable[..., Any], spec: Spec, params: list[np.ndarray],
                    grads: list[np.ndarray], **extra: Any) -> Any:
    """``cls`` (a torch.optim.Optimizer) over torch copies of ``params``, whose grads view
    ``grads``, after one step: a missing implementation raises here, not while timing."""
    import torch

    tensors = [torch.from_numpy(p.copy()).requires_grad_() for p in params]
    for t, g in zip(tensors, grads):
        t.grad = torch.from_numpy(g)
    opt = cls(tensors, **spec.hyper, **extra)
    opt.step()
    return opt


def torch_candidates(spec: Spec, params: list[np.ndarray], grads: list[np.ndarray]) -> list[Candidate]:
    """torch.optim for-loop, foreach and fused, each only if this torch supports it."""
    try:
        import torch
    except ImportError:
        return []
    out = []
    cls = getattr(torch.optim, spec.torch)
    for name, flags in (("torch-loop", dict(foreach=False)), ("torch-foreach", dict(foreach=True)),
                        ("torch-fused", dict(fused=True))):
        try:
            opt = torch_optimizer(cls, spec, params, grads, **flags)
        except (RuntimeError, TypeError, ValueError):
            continue  # e.g. no fused implementation of this optimizer on CPU
        out.append(Candidate(name, opt.step))
    # gradstep.torch: the torch.optim subclass stepping the same torch tensors.
    import gradstep.torch as gt

    adapter = torch_optimizer(getattr(gt, spec.torch), spec, params, grads)
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
        cls = getattr(importlib.import_module(module_name), class_name)
        opt = torch_optimizer(cls, spec, params, grads, **extra)
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

