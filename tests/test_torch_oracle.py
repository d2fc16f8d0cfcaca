"""Every optimizer and option combination against torch.optim, step by step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gradstep as gs

from conftest import CASES, case_id, make_problem

STEPS = 45
TOLERANCE = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-6)}


def assert_float32_as_good_as_torch(got, torch32, truth64):
    """float32 results round differently from torch's (it fuses multiply-adds),
    and ill-conditioned cases (centered RMSprop with small alpha subtracts
    nearly equal numbers) amplify that. So: close to torch's float32 result,
    and no further from the float64 truth than torch's own float32 result is."""
    np.testing.assert_allclose(got, torch32, rtol=1e-4, atol=1e-5)
    ours = np.max(np.abs(got.astype(np.float64) - truth64), initial=0.0)
    theirs = np.max(np.abs(torch32.astype(np.float64) - truth64), initial=0.0)
    assert ours <= 2 * theirs + 1e-6, (ours, theirs)


def run_torch(name, lr, opts, params, grads):
    tensors = [torch.tensor(p).requires_grad_() for p in params]
    topt = getattr(torch.optim, name)(tensors, lr=lr, foreach=False, **opts)
    for step_grads in grads:
        for t, g in zip(tensors, step_grads):
            t.grad = torch.tensor(g)
        topt.step()
    return [t.detach().numpy() for t in tensors], topt


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
        truth, _ = run_torch(name, lr, opts, [p.astype(np.float64) for p in params],
                             [[g.astype(np.float64) for g in gs_] for gs_ in grads])
        for got, want, true in zip(mine, expected, truth):
            assert got.dtype == dtype
            assert_float32_as_good_as_torch(got, want, true)
    # The states agree with torch's too, under torch's names.
    torch_state = topt.state_dict()["state"]
    for name_, arrays in opt.state.items():
        for i, arr in enumerate(arrays):
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


def test_defaults_are_torchs():
    import inspect

    for name in ["SGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW"]:
        ours = inspect.signature(getattr(gs, name)).parameters
        theirs = inspect.signature(getattr(torch.optim, name)).parameters
        for param, spec in ours.items():
            if param in ("params", "skip_nonfinite", "max_grad_norm"):  # gradstep's own safeguards
                continue
            assert param in theirs, (name, param)
            assert spec.default == theirs[param].default, (name, param)
