"""NAdam, RAdam and Adamax (issue 14) against torch.optim 2.13, beyond the
shared matrices (conftest.CASES runs them against torch, the references, every
ISA target and float32's bound; test_threading's CONFIGS over 1-4 threads;
test_torch_adapter's TWINS through state_dict moves): every option combination
on 0-d and 1-element tensors through both gs.X and gradstep.torch.X, exact
resume from a checkpoint, and NAdam's mu_product, which torch keeps as a
float32 scalar per parameter."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import gradstep as gs
import gradstep.torch as gt

from conftest import option_grid

STEPS = 60
SHAPES = [(), (1,), (5,), (3, 4), (2, 3, 7)]
TOL = dict(rtol=1e-10, atol=1e-12)

GRIDS = {
    "NAdam": option_grid(betas=[(0.9, 0.999), (0.3, 0.9)], eps=[1e-8], weight_decay=[0.0, 0.05],
                         momentum_decay=[4e-3, 0.0, 0.5], decoupled_weight_decay=[False, True],
                         maximize=[False, True]),
    "RAdam": option_grid(betas=[(0.9, 0.999), (0.3, 0.9), (0.9, 0.5)], eps=[1e-8, 0.0],
                         weight_decay=[0.0, 0.05], decoupled_weight_decay=[False, True],
                         maximize=[False, True]),
    "Adamax": option_grid(betas=[(0.9, 0.999), (0.3, 0.9), (0.0, 0.0)], eps=[1e-8, 0.0],
                          weight_decay=[0.0, 0.05], maximize=[False, True]),
}
CASES = [(name, o) for name, grid in GRIDS.items() for o in grid]


def case_id(case):
    name, o = case
    return name + "[" + ",".join(f"{k}={v}" for k, v in o.items()) + "]"


def problem(seed=0, steps=STEPS):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s) for s in SHAPES]
    grads = [[rng.standard_normal(s) for s in SHAPES] for _ in range(steps)]
    return params, grads


def torch_run(name, opts, params, grads, cls=None, lr=0.01):
    ts = [torch.tensor(p).requires_grad_() for p in params]
    opts = {k: v for k, v in opts.items() if k != "lr"}
    opt = (cls or getattr(torch.optim, name))(ts, lr=lr, **opts, **({} if cls else {"foreach": False}))
    for step in grads:
        for t, g in zip(ts, step):
            t.grad = torch.tensor(g)
        opt.step()
    return [t.detach().numpy() for t in ts], opt


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_float64_matches_torch_through_gs_and_the_adapter(case):
    name, opts = case
    params, grads = problem()
    want, topt = torch_run(name, opts, params, grads)

    mine = [p.copy() for p in params]
    opt = getattr(gs, name)(mine, lr=0.01, **opts)
    for step in grads:
        opt.step(step)
    for got, w in zip(mine, want):
        assert got.shape == w.shape
        np.testing.assert_allclose(got, w, **TOL)

    adapted, aopt = torch_run(name, opts, params, grads, cls=getattr(gt, name))
    for got, w in zip(adapted, want):
        np.testing.assert_allclose(got, w, **TOL)
    ours, theirs = aopt.state_dict()["state"], topt.state_dict()["state"]
    for i in theirs:
        assert ours[i].keys() == theirs[i].keys()
        for key, value in theirs[i].items():
            assert ours[i][key].dtype == value.dtype and ours[i][key].shape == value.shape, key
            torch.testing.assert_close(ours[i][key], value, **TOL)


@pytest.mark.parametrize("name", list(GRIDS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_checkpoint_resume_mid_run_is_bit_exact(name, dtype, tmp_path):
    opts = GRIDS[name][-1]
    params, grads = problem(seed=4, steps=30)
    params = [p.astype(dtype) for p in params]
    grads = [[g.astype(dtype) for g in step] for step in grads]
    straight = [p.copy() for p in params]
    opt = getattr(gs, name)(straight, lr=0.01, **opts)
    for step in grads:
        opt.step(step)

    partial = [p.copy() for p in params]
    opt = getattr(gs, name)(partial, lr=0.01, **opts)
    for step in grads[:13]:
        opt.step(step)
    gs.save(opt, tmp_path / "c.npz")
    resumed = [p.copy() for p in partial]
    opt = gs.load(tmp_path / "c.npz", resumed)
    assert type(opt).__name__ == name and opt.step_count == 13
    for step in grads[13:]:
        opt.step(step)
    for a, b in zip(resumed, straight):
        assert a.tobytes() == b.tobytes()


def moves(name, opts, classes, grads, params):
    """Steps of 10 with each class in turn, each loading its predecessor's state_dict."""
    ms = [torch.tensor(p).requires_grad_() for p in params]
    opt = None
    for phase, cls in enumerate(classes):
        new = cls(ms, **opts, **({} if cls.__module__ == "gradstep.torch" else {"foreach": False}))
        if opt is not None:
            new.load_state_dict(copy.deepcopy(opt.state_dict()))
        opt = new
        for step in grads[10 * phase:10 * (phase + 1)]:
            for m, g in zip(ms, step):
                m.grad = torch.tensor(g)
            opt.step()
    return ms, opt


@pytest.mark.parametrize("default_dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(GRIDS))
def test_state_dict_moves_to_torch_and_back_mid_run(name, default_dtype):
    # torch's load_state_dict casts every state tensor but step to the param's
    # dtype, so after a move NAdam's mu_product is float64 (in torch.optim too);
    # under a float64 default dtype it is float64 from the start. Either way the
    # value in the state is the one gradstep uses and updates.
    before = torch.get_default_dtype()
    torch.set_default_dtype(default_dtype)
    try:
        opts = dict(GRIDS[name][5], lr=0.02)
        params, grads = problem(seed=2, steps=40)
        theirs, topt = moves(name, opts, [getattr(torch.optim, name)] * 4, grads, params)
        ours, opt = moves(name, opts, [getattr(torch.optim, name), getattr(gt, name)] * 2, grads, params)
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, **TOL)
        got, want = opt.state_dict()["state"], topt.state_dict()["state"]
        for i in want:
            assert got[i].keys() == want[i].keys()
            for key, value in want[i].items():
                assert got[i][key].dtype == value.dtype, key
                torch.testing.assert_close(got[i][key], value, **TOL)
        # gradstep's own state, made by gradstep.torch from the start, is torch's layout.
        _, fresh = torch_run(name, opts, params, grads[:3], cls=getattr(gt, name), lr=opts["lr"])
        _, tfresh = torch_run(name, opts, params, grads[:3], lr=opts["lr"])
        for i, state in tfresh.state_dict()["state"].items():
            mine = fresh.state_dict()["state"][i]
            assert list(mine) == list(state) or set(mine) == set(state)
            for key, value in state.items():
                assert mine[key].dtype == value.dtype and mine[key].shape == value.shape, key
                torch.testing.assert_close(mine[key], value, **TOL)
    finally:
        torch.set_default_dtype(before)


def test_loaded_mu_product_wins_over_the_recomputed_one():
    # A mu_product that is not the step count's (edited, or from another
    # precision) is used as torch uses it, and updated as torch updates it.
    params, grads = problem(seed=5, steps=12)
    ms = [torch.tensor(p).requires_grad_() for p in params]
    first = torch.optim.NAdam(ms, lr=0.02, foreach=False)
    for step in grads[:4]:
        for m, g in zip(ms, step):
            m.grad = torch.tensor(g)
        first.step()
    for i, p in enumerate(ms):
        first.state[p]["mu_product"].fill_(0.1 + 0.05 * i)  # a different value per param
    ts = [m.detach().clone().requires_grad_() for m in ms]
    theirs = torch.optim.NAdam(ts, lr=0.02, foreach=False)
    theirs.load_state_dict(copy.deepcopy(first.state_dict()))
    ours = gt.NAdam(ms, lr=0.02)
    ours.load_state_dict(copy.deepcopy(first.state_dict()))
    for step in grads[4:]:
        for t, m, g in zip(ts, ms, step):
            t.grad, m.grad = torch.tensor(g), torch.tensor(g)
        theirs.step()
        ours.step()
    for a, b in zip(ms, ts):
        torch.testing.assert_close(a, b, **TOL)
    for p, q in zip(ms, ts):
        assert ours.state[p]["mu_product"].item() == theirs.state[q]["mu_product"].item()
    # and differs from what the step count alone gives
    fresh = [torch.tensor(p).requires_grad_() for p in params]
    plain = gt.NAdam(fresh, lr=0.02)
    for step in grads:
        for f, g in zip(fresh, step):
            f.grad = torch.tensor(g)
        plain.step()
    assert not torch.allclose(fresh[0], ms[0], rtol=1e-6, atol=0)


def nadam_one_step(k, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, psi=4e-3):
    """p after NAdam's step k from p = m = v = 0 with g = 1, torch's formulas in
    Python, with mu_product as torch keeps it (float32, mu rounded to float32)."""
    prod = np.float32(1.0)
    for i in range(1, k + 1):
        prod = np.float32(prod * np.float32(beta1 * (1.0 - 0.5 * 0.96 ** (i * psi))))
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (k * psi))
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((k + 1) * psi))
    m, v = 1 - beta1, 1 - beta2
    denom = np.sqrt(v / (1 - beta2**k)) + eps
    p = -lr * (1 - mu) / (1 - float(prod)) / denom
    return p - lr * mu_next / (1 - float(prod) * mu_next) * m / denom


def test_kernel_mu_product_is_torchs_recurrence_at_any_step_order():
    # gs.NAdam keeps no scalar state: the kernel rebuilds torch's float32
    # mu_product from the step count (remembering the last one per thread),
    # in any order of steps: forward, back, a jump, after underflow to 0.
    for k in (1, 2, 3000, 5, 6, 3000, 2999, 100_000, 7):
        w, m, v = np.zeros(1), np.zeros(1), np.zeros(1)
        gs.kernels.nadam_step(w, np.ones(1), m, v, step=k, lr=0.1)
        np.testing.assert_allclose(w, [nadam_one_step(k)], rtol=1e-13)
        assert np.isfinite(w).all()
    # An explicit mu_product (as gradstep.torch passes torch's) is used as given.
    w1, w2 = np.zeros(1), np.zeros(1)
    gs.kernels.nadam_step(w1, np.ones(1), np.zeros(1), np.zeros(1), step=3, lr=0.1, mu_product=0.5)
    gs.kernels.nadam_step(w2, np.ones(1), np.zeros(1), np.zeros(1), step=3, lr=0.1)
    assert w1[0] != w2[0]


@pytest.mark.parametrize(("name", "kwargs", "word"), [
    ("NAdam", dict(momentum_decay=-1e-3), "momentum_decay"),
    ("NAdam", dict(betas=(1.0, 0.9)), "betas"),
    ("NAdam", dict(eps=-1.0), "eps"),
    ("RAdam", dict(betas=(0.9, 1.0)), "betas"),
    ("RAdam", dict(weight_decay=-0.1), "weight_decay"),
    ("RAdam", dict(lr=float("nan")), "lr"),
    ("Adamax", dict(betas=(-0.1, 0.9)), "betas"),
    ("Adamax", dict(eps=float("inf")), "eps"),
    ("Adamax", dict(lr=-1.0), "lr"),
])
def test_bad_hyperparameters_raise_naming_the_argument_and_change_nothing(name, kwargs, word):
    params = [np.ones(3), np.ones(())]
    snap = [p.copy() for p in params]
    with pytest.raises(ValueError, match=word):
        getattr(gs, name)(params, **kwargs)
    # gradstep.torch: refused at construction, and when a group is changed mid-run
    # the step raises before anything is written.
    with pytest.raises(ValueError):
        getattr(gt, name)([torch.ones(3, requires_grad=True)], **kwargs)
    ts = [torch.tensor(p).requires_grad_() for p in params]
    opt = getattr(gt, name)(ts)
    for t in ts:
        t.grad = torch.ones_like(t)
    opt.step()
    before = [t.detach().clone() for t in ts], copy.deepcopy(opt.state_dict()["state"])
    for key, value in kwargs.items():
        opt.param_groups[0][key] = value
    with pytest.raises(ValueError, match=word):
        opt.step()
    for t, b in zip(ts, before[0]):
        assert torch.equal(t.detach(), b)
    after = opt.state_dict()["state"]
    for i in before[1]:
        for key, value in before[1][i].items():
            assert torch.equal(after[i][key], value), key
    for a, b in zip(params, snap):
        assert a.tobytes() == b.tobytes()


def test_bad_mu_product_in_a_loaded_state_raises_and_changes_nothing():
    t = torch.ones(3, dtype=torch.float64, requires_grad=True)
    opt = gt.NAdam([t], lr=0.1)
    t.grad = torch.ones(3, dtype=torch.float64)
    opt.step()
    opt.state[t]["mu_product"].fill_(float("nan"))
    before = t.detach().clone(), {k: v.clone() for k, v in opt.state[t].items()}
    with pytest.raises(ValueError, match="mu_product"):
        opt.step()
    assert torch.equal(t.detach(), before[0])
    for k, v in opt.state[t].items():
        assert torch.equal(v, before[1][k]) or (k == "mu_product" and v.isnan().all())
