"""The candidates of a case: gradstep (plain, flat, with safeguards), the roof, and
the peers this Python has (numpy by hand, torch.optim, the reference package of an
optimizer torch.optim has not such as lion_pytorch, gradstep.torch, deepspeed).

A candidate is a name and a zero-argument step; all candidates of a case start
from copies of the same params and read the same grads.

A model case (mlp, resnet18, gpt2: the tensors of a model's shapes) has the
candidates a training loop would choose between: torch.optim fused and
foreach, gradstep.torch over the torch tensors, gradstep.torch over flat
parameters (``gradstep.torch.flatten_parameters``, where this gradstep has
it), gs.X on numpy arrays of the same shapes (allocated as the torch
candidates' tensors are: numpy copies of the same params, the very same grad
arrays), deepspeed where it imports, and the roof.

Half params (bfloat16, float16) are benched per precision (spec.PRECISIONS, a
row each): gs.X with that configuration, its roof (the core's stream probe
over a gs.X of the same configuration's buffers: param and grad in the half
dtype, states in theirs, the master), gs.X with safeguards, and the peers of
the same layout: torch.optim (loop, foreach, fused), whose half path keeps its
states in the param's dtype, beside ``param-states``; DeepSpeedCPUAdam with
float32 states (``fp32_optimizer_states=True``) beside ``f32-states`` and with
states in the param's dtype beside ``param-states``. Neither has a master copy
or stochastic rounding: those rows have no peer. gradstep.torch is not benched
on half params yet.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

import gradstep as gs
from gradstep import _core
from gradstep.optim import MASTER
from gradstep.bench.numpy_steps import NumpyState
from gradstep.bench.spec import PRECISIONS, Case, Spec, import_reference, is_half, ready, state_count

# The peers gradstep is compared with, in report order.
PEERS = ("numpy", "reference", "torch-loop", "torch-foreach", "torch-fused", "deepspeed")


# The candidates of a model case, in report order (those this Python has).
MODEL_CANDIDATES = ("gradstep", "roof", "reference", "torch-foreach", "torch-fused", "gradstep.torch",
                    "gradstep.torch-flat", "deepspeed")


@dataclass
class Candidate:
    name: str
    step: Callable[[], Any]
    # The candidate's params now, one array per tensor in the case's order
    # (views where possible), to check that candidates step the same math;
    # None for the roof, which updates nothing.
    values: Optional[Callable[[], list[np.ndarray]]] = None
    # Steps taken while it was made (torch optimizers step once, to fail early).
    steps: int = 0


def _problem(case: Case, dtype: np.dtype, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if is_half(dtype):  # drawn in float32, rounded to the half dtype
        params = [rng.standard_normal(shape, dtype=np.float32).astype(dtype) for shape in case.shapes]
        grads = [(rng.standard_normal(shape, dtype=np.float32) * 1e-2).astype(dtype) for shape in case.shapes]
        return params, grads
    params = [rng.standard_normal(shape, dtype=dtype) for shape in case.shapes]
    grads = [rng.standard_normal(shape, dtype=dtype) for shape in case.shapes]
    for g in grads:
        g *= 1e-2
    return params, grads


def _precision(precision: Optional[str]) -> dict[str, Any]:
    """gs.X's keyword arguments for a precision of PRECISIONS (none for float32/float64)."""
    return {} if precision is None else PRECISIONS[precision]


def gradstep_candidate(spec: Spec, params: list[np.ndarray], grads: list[np.ndarray],
                       precision: Optional[str] = None) -> Candidate:
    mine = [p.copy() for p in params]
    opt = ready(spec, getattr(gs, spec.gradstep)(mine, **spec.hyper, **_precision(precision)))
    return Candidate("gradstep", lambda: opt.step(grads), lambda: mine)


def gradstep_flat_candidate(spec: Spec, params: list[np.ndarray], grads: list[np.ndarray]) -> Candidate:
    flat = gs.flatten(params)
    for dst, src in zip(flat.grads, grads):
        np.copyto(dst, src)
    opt = ready(spec, getattr(gs, spec.gradstep)(flat, **spec.hyper))
    return Candidate("gradstep-flat", opt.step, lambda: flat.params)


def gradstep_checked_candidate(spec: Spec, params: list[np.ndarray], grads: list[np.ndarray],
                               precision: Optional[str] = None) -> Candidate:
    """The cost of the safeguards: the non-finite check and global-norm clipping (one more
    read of the gradients before the update)."""
    mine = [p.copy() for p in params]
    # Lamb's max_grad_norm is its own (timm's clip), in spec.hyper: the safeguard's value wins.
    opt = ready(spec, getattr(gs, spec.gradstep)(mine, **{**spec.hyper, "skip_nonfinite": True,
                                                           "max_grad_norm": 1e9}, **_precision(precision)))
    return Candidate("gradstep-checked", lambda: opt.step(grads), lambda: mine)


def numpy_candidate(spec: Spec, params: list[np.ndarray], grads: list[np.ndarray]) -> Candidate:
    numpy_step = spec.numpy_step
    assert numpy_step is not None, spec.name
    count = state_count(spec)
    states = [NumpyState(p.copy(), g, count) for p, g in zip(params, grads)]
    counter = [0]

    def step() -> None:
        counter[0] += 1
        for x in states:
            numpy_step(x, counter[0])

    return Candidate("numpy", step, lambda: [x.p for x in states])


def probe_candidate(spec: Spec, case: Case, dtype: np.dtype, precision: Optional[str] = None) -> Candidate:
    """The roof: the core's stream probe over one contiguous tensor of the case's elements.

    Half params: over the buffers of a gs.X of that precision (param, its master and
    states as that configuration holds them), so that the probe moves a step's bytes."""
    n, states = case.elements, state_count(spec)
    if is_half(dtype):
        param = np.ones(n, dtype)
        grad = np.full(n, 0.5, dtype)
        opt = getattr(gs, spec.gradstep)([param], **spec.hyper, **_precision(precision))
        # Its buffers as that configuration holds them (public: params, state), the full-size
        # states and the master streamed as their own dtypes.
        full = [name for name, arrays in opt.state.items() if name != MASTER and arrays[0].shape == param.shape]
        probe_set = _core.TensorSet([param], [opt.state[name] for name in full], full, None, None, None,
                                    opt.state.get(MASTER))
        return Candidate("roof", lambda: probe_set.stream([grad]))
    names = [f"s{i}" for i in range(states)]
    param = np.ones(n, dtype)
    grad = np.full(n, 0.5, dtype)
    state_lists: list[Optional[list[np.ndarray]]] = [[np.ones(n, dtype)] for _ in range(states)]
    probe = _core.TensorSet([param], state_lists, names)
    return Candidate("roof", lambda: probe.stream([grad]))


def torch_optimizer(cls: Callable[..., Any], spec: Spec, params: list[np.ndarray],
                    grads: list[np.ndarray], **extra: Any) -> Any:
    """``cls`` (a torch.optim.Optimizer) over torch copies of ``params`` and ``grads``, after
    one step: a missing implementation raises here, not while timing. The grads are copies
    because some references write to them (schedulefree normalizes them in place), which
    would change every other candidate's grads."""
    import torch

    tensors = [to_torch(p.copy()).requires_grad_() for p in params]
    for t, g in zip(tensors, grads):
        t.grad = to_torch(g.copy())
    opt = ready(spec, cls(tensors, **spec.hyper, **extra))
    opt.step()
    return opt


def to_torch(a: np.ndarray) -> Any:
    """A torch tensor sharing ``a``'s memory (a bfloat16 array through its bits: torch's
    from_numpy does not know ml_dtypes' bfloat16)."""
    import torch

    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def from_torch(t: Any) -> np.ndarray:
    """``t``'s values as a numpy array sharing its memory (bfloat16 as ml_dtypes')."""
    import torch

    t = t.detach()
    if t.dtype == torch.bfloat16:
        from gradstep.precision import BFLOAT16

        return t.view(torch.int16).numpy().view(BFLOAT16)
    return t.numpy()


def _torch_values(opt: Any) -> Callable[[], list[np.ndarray]]:
    tensors = list(opt.param_groups[0]["params"])
    return lambda: [from_torch(t) for t in tensors]


def torch_candidates(spec: Spec, params: list[np.ndarray], grads: list[np.ndarray],
                     names: tuple[str, ...] = ("reference", "torch-loop", "torch-foreach", "torch-fused",
                                               "gradstep.torch")) -> list[Candidate]:
    """The reference package's optimizer (spec.reference), torch.optim for-loop, foreach and
    fused, each only if this torch supports it, then gradstep.torch (of those in ``names``)."""
    try:
        import torch
    except ImportError:
        return []
    out = []
    if spec.reference is not None and "reference" in names:
        ref = reference_candidate(spec, params, grads)
        if ref is not None:
            out.append(ref)
    for name, flags in (("torch-loop", dict(foreach=False)), ("torch-foreach", dict(foreach=True)),
                        ("torch-fused", dict(fused=True))):
        if spec.torch is None or name not in names:
            continue
        try:
            opt = torch_optimizer(getattr(torch.optim, spec.torch), spec, params, grads, **flags)
        except (RuntimeError, TypeError, ValueError):
            continue  # e.g. no fused implementation of this optimizer on CPU
        out.append(Candidate(name, opt.step, _torch_values(opt), steps=1))
    if "gradstep.torch" in names and _has_adapter(spec):
        # gradstep.torch: the torch.optim subclass stepping the same torch tensors.
        import gradstep.torch as gt

        adapter = torch_optimizer(gt.ADAPTERS[spec.gradstep], spec, params, grads)
        out.append(Candidate("gradstep.torch", adapter.step, _torch_values(adapter), steps=1))
    return out


def reference_candidate(spec: Spec, params: list[np.ndarray], grads: list[np.ndarray]) -> Optional[Candidate]:
    """spec.reference's optimizer over torch copies of params; None when its package is missing."""
    assert spec.reference is not None
    try:
        cls = import_reference(*spec.reference)
    except ImportError:
        return None
    opt = torch_optimizer(cls, spec, params, grads)
    return Candidate("reference", opt.step, _torch_values(opt), steps=1)


def _has_adapter(spec: Spec) -> bool:
    """gradstep.torch has an adapter for this spec's optimizer."""
    import gradstep.torch as gt

    return spec.gradstep in gt.ADAPTERS


def torch_flat_candidate(spec: Spec, params: list[np.ndarray], grads: list[np.ndarray],
                         flatten: Optional[Callable[[list[Any]], list[Any]]] = None) -> Optional[Candidate]:
    """gradstep.torch over flat parameters: ``flatten(tensors)`` (by default
    ``gradstep.torch.flatten_parameters``; None when this gradstep has none) is given the
    torch tensors with their grads set and returns the flat parameters to optimize instead;
    the tensors stay the model's parameters (views into the flat ones), and the flat
    parameters' grads hold the tensors' grads."""
    try:
        import torch
    except ImportError:
        return None
    import gradstep.torch as gt

    if not _has_adapter(spec):
        return None
    adapter_class = gt.ADAPTERS[spec.gradstep]
    if flatten is None:
        # getattr: gradstep.torch's module __getattr__ claims every name is an optimizer class.
        flatten = getattr(gt, "flatten_parameters", None)
        if flatten is None:
            return None
    tensors = [torch.from_numpy(p.copy()).requires_grad_() for p in params]
    for t, g in zip(tensors, grads):
        t.grad = torch.from_numpy(g.copy())
    flat = list(flatten(tensors))
    if any(f.grad is None for f in flat):
        raise RuntimeError("flatten_parameters returned flat parameters without grads")
    opt = ready(spec, adapter_class(flat, **spec.hyper))
    opt.step()
    return Candidate("gradstep.torch-flat", opt.step, lambda: [t.detach().numpy() for t in tensors], steps=1)


def torch_present() -> bool:
    return importlib.util.find_spec("torch") is not None


def deepspeed_available() -> bool:
    return importlib.util.find_spec("deepspeed") is not None


def deepspeed_candidate(spec: Spec, params: list[np.ndarray], grads: list[np.ndarray],
                        precision: Optional[str] = None) -> Optional[Candidate]:
    """DeepSpeed's CPU optimizer over torch copies of params. Half params: DeepSpeedCPUAdam
    steps them with float32 states (``fp32_optimizer_states=True``, for ``f32-states``) or
    states in the param's dtype (False, for ``param-states``); no other precision."""
    if spec.deepspeed is None or not deepspeed_available() or precision not in DEEPSPEED_PRECISIONS:
        return None
    module_name, class_name, extra = spec.deepspeed
    if precision is not None:
        if class_name != "DeepSpeedCPUAdam":
            return None
        extra = {**extra, "fp32_optimizer_states": precision == "f32-states"}
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
        opt = torch_optimizer(cls, spec, params, grads, **extra)
    except Exception as e:  # a broken or CUDA-only build: report it as absent
        if class_name not in _DEEPSPEED_FAILED:
            _DEEPSPEED_FAILED.add(class_name)
            print(f"gradstep bench: {class_name} left out: {type(e).__name__}: {e}", file=sys.stderr)
        return None
    return Candidate("deepspeed", opt.step, _torch_values(opt), steps=1)


_DEEPSPEED_FAILED: set[str] = set()
# The precisions with a DeepSpeed peer (None: float32/float64 params).
DEEPSPEED_PRECISIONS = (None, "f32-states", "param-states")
# The precision whose layout torch.optim's half path has (states in the param's dtype).
TORCH_PRECISION = "param-states"


def make_candidates(spec: Spec, case: Case, dtype: np.dtype, peers: bool = True,
                    precision: Optional[str] = None) -> list[Candidate]:
    """Every candidate for one case, gradstep first, the roof second. Half params
    (``dtype`` bfloat16 or float16) at one precision of PRECISIONS (default f32-states)."""
    if is_half(dtype):
        return half_candidates(spec, case, dtype, precision or "f32-states", peers)
    if precision is not None:
        raise ValueError(f"precision {precision!r} is for bfloat16/float16 params, not {np.dtype(dtype)}")
    params, grads = _problem(case, dtype)
    if case.model:
        return model_candidates(spec, case, dtype, params, grads, peers)
    cands = [gradstep_candidate(spec, params, grads)]
    if case.tensors > 1:
        cands.append(gradstep_flat_candidate(spec, params, grads))
    cands.append(probe_candidate(spec, case, dtype))
    cands.append(gradstep_checked_candidate(spec, params, grads))
    if peers:
        if spec.numpy_step is not None:
            cands.append(numpy_candidate(spec, params, grads))
        cands += torch_candidates(spec, params, grads)
        ds = deepspeed_candidate(spec, params, grads)
        if ds is not None:
            cands.append(ds)
    return cands



def half_candidates(spec: Spec, case: Case, dtype: np.dtype, precision: str,
                    peers: bool = True) -> list[Candidate]:
    """Half params at one precision: gradstep, the roof of its buffers, gradstep-checked,
    then the peers of the same layout (see the module's docstring)."""
    params, grads = _problem(case, dtype)
    cands = [gradstep_candidate(spec, params, grads, precision), probe_candidate(spec, case, dtype, precision)]
    if not case.model:
        cands.append(gradstep_checked_candidate(spec, params, grads, precision))
    if peers:
        if precision == TORCH_PRECISION:
            names = ("torch-foreach", "torch-fused") if case.model else ("torch-loop", "torch-foreach", "torch-fused")
            cands += torch_candidates(spec, params, grads, names=names)
        ds = deepspeed_candidate(spec, params, grads, precision)
        if ds is not None:
            cands.append(ds)
    return cands


def model_candidates(spec: Spec, case: Case, dtype: np.dtype, params: list[np.ndarray],
                     grads: list[np.ndarray], peers: bool = True) -> list[Candidate]:
    """A model case's candidates (MODEL_CANDIDATES, those this Python has)."""
    cands = [gradstep_candidate(spec, params, grads), probe_candidate(spec, case, dtype)]
    if peers:
        cands += torch_candidates(spec, params, grads,
                                  names=("reference", "torch-foreach", "torch-fused", "gradstep.torch"))
        flat = torch_flat_candidate(spec, params, grads)
        if flat is not None:
            cands.append(flat)
        ds = deepspeed_candidate(spec, params, grads)
        if ds is not None:
            cands.append(ds)
    return cands


def memory_needed(spec: Spec, case: Case, itemsize: int) -> int:
    """Bytes the candidates of a case hold at once, about (model cases; others are small or
    known): the shared params and grads, each stepping candidate's params and states,
    the flat candidate's grads, the roof's buffers and a full-size temporary for torch's
    foreach."""
    states = state_count(spec)
    stepping = len(MODEL_CANDIDATES) - 1  # all but the roof
    stepping -= (spec.torch is None) * 2 + (spec.reference is None)  # torch-foreach and -fused; reference
    return case.elements * itemsize * (2 + stepping * (1 + states) + 1 + (2 + states) + 1)
