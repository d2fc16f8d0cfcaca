"""state_dict round trips, zero-copy buffers from other libraries, kernel functions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import gradstep as gs

from conftest import CASES, case_id, make_problem


@pytest.mark.parametrize("case", CASES[::3], ids=case_id)
def test_resume_from_state_dict_is_bit_exact(case):
    name, lr, opts = case
    params, grads = make_problem(np.float32, 20, seed=5)
    straight = [p.copy() for p in params]
    opt = getattr(gs, name)(straight, lr=lr, **opts)
    for g in grads:
        opt.step(g)

    first = [p.copy() for p in params]
    opt1 = getattr(gs, name)(first, lr=lr, **opts)
    for g in grads[:8]:
        opt1.step(g)
    sd = opt1.state_dict()
    resumed = [p.copy() for p in first]
    opt2 = getattr(gs, name)(resumed, lr=lr, **opts)
    opt2.load_state_dict(sd)
    assert opt2.step_count == 8
    for g in grads[8:]:
        opt2.step(g)
    for a, b in zip(resumed, straight):
        assert a.tobytes() == b.tobytes()


def test_state_dict_is_plain_data_and_a_copy():
    w = np.ones(3, np.float32)
    opt = gs.Adam([w], lr=0.1, amsgrad=True)
    opt.step([np.ones(3, np.float32)])
    sd = opt.state_dict()
    scalars = {k: v for k, v in sd.items() if k != "state"}
    json.dumps(scalars)  # numbers, strings, lists only
    assert all(isinstance(a, np.ndarray) for v in sd["state"].values() for a in v)
    sd["state"]["exp_avg"][0][:] = 123.0
    assert not np.any(opt.state["exp_avg"][0] == 123.0)
    assert sorted(sd["state"]) == ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]


def test_torch_tensors_are_updated_in_place_without_copy():
    t = torch.zeros(6, dtype=torch.float32)
    g = torch.ones(6, dtype=torch.float32)
    opt = gs.SGD([t.numpy()], lr=0.5)
    opt.step([g])          # a tensor given directly goes through DLPack
    opt.step([g.numpy()])  # or through .numpy()
    assert torch.equal(t, torch.full((6,), -1.0))


def test_dlpack_and_buffer_protocol_params():
    t = torch.zeros(4, dtype=torch.float64)
    arr = np.zeros(4)
    mv = memoryview(arr)
    opt = gs.SGD([t, mv], lr=1.0)
    opt.step([np.ones(4), np.full(4, 2.0)])
    assert torch.equal(t, torch.full((4,), -1.0, dtype=torch.float64))
    assert np.array_equal(arr, np.full(4, -2.0))


def test_tensor_that_requires_grad_gets_a_clear_error():
    t = torch.zeros(3, requires_grad=True)
    with pytest.raises(TypeError, match=r"params\[0\].*without copying"):
        gs.SGD([t])


def test_mixed_dtypes_step_in_one_optimizer():
    a, b = np.ones(5, np.float32), np.ones(3, np.float64)
    opt = gs.Adam([a, b], lr=0.1)
    opt.step([np.ones(5, np.float32), np.ones(3)])
    assert a.dtype == np.float32 and b.dtype == np.float64
    np.testing.assert_allclose(a, 0.9, rtol=1e-6)
    np.testing.assert_allclose(b, 1 - 0.1 / (1 + 1e-8), rtol=1e-14)


def test_empty_and_zero_size_params():
    with pytest.raises(ValueError, match="empty parameter list"):  # as torch.optim
        gs.Adam([], lr=0.1)
    z = np.zeros(0, np.float32)
    w = np.ones(2, np.float32)
    opt = gs.SGD([z, w], lr=0.5)
    opt.step([np.zeros(0, np.float32), np.ones(2, np.float32)])
    assert np.array_equal(w, [0.5, 0.5])


KERNEL_CALLS = {
    "SGD": lambda p, g, st, k: gs.kernels.sgd_step(p, g, st["momentum_buffer"], lr=0.05, step=k,
                                                   momentum=0.9, nesterov=True, weight_decay=0.01),
    "Adagrad": lambda p, g, st, k: gs.kernels.adagrad_step(p, g, st["sum"], lr=0.05, step=k,
                                                           lr_decay=0.01),
    "Adadelta": lambda p, g, st, k: gs.kernels.adadelta_step(p, g, st["square_avg"], st["acc_delta"],
                                                             step=k, rho=0.8),
    "RMSprop": lambda p, g, st, k: gs.kernels.rmsprop_step(p, g, st["square_avg"], st["momentum_buffer"],
                                                           st["grad_avg"], lr=0.01, step=k,
                                                           momentum=0.5, centered=True),
    "AdamW": lambda p, g, st, k: gs.kernels.adamw_step(p, g, st["exp_avg"], st["exp_avg_sq"],
                                                       st["max_exp_avg_sq"], lr=0.01, step=k,
                                                       amsgrad=True),
}
TORCH_TWINS = {
    "SGD": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    "Adagrad": lambda ps: torch.optim.Adagrad(ps, lr=0.05, lr_decay=0.01),
    "Adadelta": lambda ps: torch.optim.Adadelta(ps, rho=0.8),
    "RMSprop": lambda ps: torch.optim.RMSprop(ps, lr=0.01, momentum=0.5, centered=True),
    "AdamW": lambda ps: torch.optim.AdamW(ps, lr=0.01, amsgrad=True),
}


@pytest.mark.parametrize("name", list(KERNEL_CALLS))
def test_kernel_functions_match_torch(name):
    params, grads = make_problem(np.float64, 25, seed=9)
    tensors = [torch.tensor(p).requires_grad_() for p in params]
    topt = TORCH_TWINS[name](tensors)
    names = {"SGD": ["momentum_buffer"], "Adagrad": ["sum"], "Adadelta": ["square_avg", "acc_delta"],
             "RMSprop": ["square_avg", "momentum_buffer", "grad_avg"],
             "AdamW": ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]}[name]
    states = {n: [np.zeros_like(p) for p in params] for n in names}
    mine = [p.copy() for p in params]
    for k, step_grads in enumerate(grads, start=1):
        for t, g in zip(tensors, step_grads):
            t.grad = torch.tensor(g)
        topt.step()
        KERNEL_CALLS[name](mine, step_grads, states, k)  # lists: one call for all tensors
    for got, t in zip(mine, tensors):
        np.testing.assert_allclose(got, t.detach().numpy(), rtol=1e-10, atol=1e-12)
