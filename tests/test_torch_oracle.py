"""Every optimizer and option combination against torch.optim (Lion: lion_pytorch), step by step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gradstep as gs

import float32_accuracy
from conftest import CASES, case_id, make_problem

STEPS = 45
TOLERANCE = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-6)}


def run_torch(name, lr, opts, params, grads):
    """torch.optim in the params' own dtype: its params (same dtype) and the optimizer."""
    _, topt = float32_accuracy.run_torch(name, lr, opts, params, grads,
                                         dtype=torch.from_numpy(params[0]).dtype)
    return [t.detach().numpy() for t in topt.param_groups[0]["params"]], topt


_float64_runs: dict[str, tuple] = {}


def float64_runs(case, params, grads):
    """The float64 truth and the float32-storage-only run of a case (the same for every ISA)."""
    key = case_id(case)
    if key not in _float64_runs:
        name, lr, opts = case
        _float64_runs[key] = tuple(
            float32_accuracy.run_torch(name, lr, opts, params, grads, storage_float32=s)[0]
            for s in (False, True))
    return _float64_runs[key]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_torch(case, dtype, each_isa):
    name, lr, opts = case
    params, grads = make_problem(dtype, STEPS)
    expected, topt = run_torch(name, lr, opts, params, grads)

    mine = [p.copy() for p in params]
    opt = getattr(gs, name)(mine, lr=lr, **opts)
    for step_grads in grads:
        opt.step(step_grads)

    assert opt.step_count == STEPS
    if dtype == np.float64:
        for got, want in zip(mine, expected):
            assert got.dtype == dtype
            np.testing.assert_allclose(got, want, **TOLERANCE[dtype])
    else:
        truth, storage_only = float64_runs(case, params, grads)
        for got, want in zip(mine, expected):
            assert got.dtype == dtype
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)  # torch's float32, this CPU
        float32_accuracy.assert_float32_accurate(mine, truth, storage_only, case_id(case))
    # The states agree with the reference's too, under its names.
    torch_state = topt.state_dict()["state"]
    for name_, arrays in opt.state.items():
        for i, arr in enumerate(arrays):
            if name_ not in torch_state[i]:  # a state of another extent the param has no buffer in
                assert arr.size == 0 and opt.__gradstep_spec__.by_state(name_).extent != "full"
                continue
            np.testing.assert_allclose(arr, torch_state[i][name_].numpy(),
                                       **(TOLERANCE[dtype] if dtype == np.float64
                                          else dict(rtol=1e-4, atol=1e-5)))


def test_changing_lr_between_steps_matches_torch():
    params, grads = make_problem(np.float64, 30)
    rates = [0.1 * 0.9**k for k in range(30)]
    tensors = [torch.tensor(p).requires_grad_() for p in params]
    topt = torch.optim.SGD(tensors, lr=rates[0], momentum=0.9, nesterov=True, foreach=False)
    mine = [p.copy() for p in params]
    opt = gs.SGD(mine, lr=lambda k: rates[k], momentum=0.9, nesterov=True)
    for k, step_grads in enumerate(grads):
        assert opt.lr == rates[k]
        topt.param_groups[0]["lr"] = rates[k]
        for t, g in zip(tensors, step_grads):
            t.grad = torch.tensor(g)
        topt.step()
        opt.step(step_grads)
    for got, t in zip(mine, tensors):
        np.testing.assert_allclose(got, t.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_defaults_are_the_references():
    import importlib
    import inspect

    from gradstep import _spec

    for name in ["SGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW", "Adamax", "RAdam", "NAdam", "Lion", "Adafactor"]:
        spec = _spec.by_name(name)
        ours = inspect.signature(getattr(gs, name)).parameters
        theirs = inspect.signature(getattr(importlib.import_module(spec.reference), name)).parameters
        gs_only = {p.name for p in spec.params if p.keep == "absent"}  # Lion's maximize
        for param, sig in ours.items():
            if param in ("params", "skip_nonfinite", "max_grad_norm"):  # gradstep's own safeguards
                continue
            if param in {n for n, _, _ in _spec.PRECISION}:  # gs.X's storage-precision arguments
                continue
            if param in gs_only:
                assert param not in theirs, (name, param)
                continue
            assert param in theirs, (name, param)
            assert sig.default == theirs[param].default, (name, param)
