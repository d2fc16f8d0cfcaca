"""Lion (Chen et al. 2023) against its reference, lion_pytorch.Lion (lion-pytorch
0.2.5), beyond the shared matrices (conftest.CASES runs it against lion_pytorch, the
float64 reference, every ISA target and float32's bound; test_threading's CONFIGS
over 1-4 threads; test_torch_adapter's PACKAGE_REFERENCES through state_dict moves):
every option combination on 0-d to 3-d tensors through gs.Lion and gradstep.torch.Lion,
bit for bit where the arithmetic is the same; float32 against lion_pytorch's float32;
torch.sign's zeros and NaN on every ISA target; the decoupled decay's initial rate;
exact resume; state_dict interchange; the reference's constructor, use_triton; bad input.

The update is discontinuous (a sign), so a comparison is only meaningful where no
rounding difference can flip a sign: every run here asserts its margin first.
"""

from __future__ import annotations

import copy
import inspect
import math
import os
import subprocess
import sys
from pathlib import Path

import lion_pytorch
import numpy as np
import pytest
import torch

import gradstep as gs
import gradstep.torch as gt

from conftest import option_grid, reference_optimizer

STEPS = 60
SHAPES = [(), (1,), (5,), (3, 4), (2, 3, 7)]
LR = 1e-3
TOL = dict(rtol=1e-10, atol=1e-12)
HERE = Path(__file__).parent
BETAS = [(0.9, 0.99), (0.95, 0.98), (0.0, 0.0), (1.0, 1.0), (0.0, 1.0), (1.0, 0.0), (0.999999, 1e-6)]
GRID = option_grid(betas=BETAS, weight_decay=[0.0, 0.1], decoupled_weight_decay=[False, True],
                   maximize=[False, True])


def opts_id(opts):
    return ",".join(f"{k}={v}" for k, v in opts.items())


def problem(dtype=np.float64, seed=0, steps=STEPS):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(steps)]
    return params, grads


def sign_margin(opts, grads):
    """The smallest |beta1 m + (1 - beta1) g| over a run, relative to its two terms
    (in float64; where both terms are 0 it is 0 in every implementation). Above
    1e-9 no rounding difference (torch's fused multiply-adds, float32 states) can
    flip a sign, so results compare as continuous functions of the inputs."""
    b1, b2 = opts.get("betas", (0.9, 0.99))
    sign = -1.0 if opts.get("maximize") else 1.0
    ms = [np.zeros(np.shape(g), np.float64) for g in grads[0]]
    worst = math.inf
    for step in grads:
        for m, g in zip(ms, step):
            g = sign * np.asarray(g, np.float64)
            a, b = b1 * m, (1 - b1) * g
            terms = np.abs(a) + np.abs(b)
            c = np.abs(a + b)
            if np.any(terms > 0):
                worst = min(worst, float(np.min(c[terms > 0] / terms[terms > 0])))
            m[...] = b2 * m + (1 - b2) * g
    return worst


def reference_run(opts, params, grads, lr=LR, dtype=None):
    """lion_pytorch.Lion (maximize: grads negated around its step): params and exp_avg as numpy."""
    ts = [torch.tensor(p if dtype is None else p.astype(dtype)).requires_grad_() for p in params]
    opt = reference_optimizer("Lion", ts, lr=lr, **opts)
    for step in grads:
        for t, g in zip(ts, step):
            t.grad = torch.tensor(g if dtype is None else g.astype(dtype))
        opt.step()
    return [t.detach().numpy() for t in ts], [opt.state[t]["exp_avg"].numpy() for t in ts], opt


def gs_run(opts, params, grads, lr=LR):
    mine = [p.copy() for p in params]
    opt = gs.Lion(mine, lr=lr, **opts)
    for step in grads:
        opt.step(step)
    return mine, opt.state["exp_avg"], opt


def adapter_run(opts, params, grads, lr=LR):
    """gradstep.torch.Lion (which, as lion_pytorch.Lion, has no maximize)."""
    assert not opts.get("maximize")
    ts = [torch.tensor(p).requires_grad_() for p in params]
    opt = gt.Lion(ts, lr=lr, **{k: v for k, v in opts.items() if k != "maximize"})
    for step in grads:
        for t, g in zip(ts, step):
            t.grad = torch.tensor(g)
        opt.step()
    return [t.detach().numpy() for t in ts], [opt.state[t]["exp_avg"].numpy() for t in ts], opt


# -- 1. float64: every option combination, equal to lion_pytorch ----------------------------

@pytest.mark.parametrize("opts", GRID, ids=opts_id)
def test_float64_equals_lion_pytorch_through_gs_and_the_adapter(opts):
    params, grads = problem()
    assert sign_margin(opts, grads) > 1e-9
    want, want_m, ref = reference_run(opts, params, grads)

    # The params are lion_pytorch's bit for bit: the decay and the step lr * sign
    # are the same operations (lr * sign is exact, so torch's fused multiply-add
    # cannot round it differently). exp_avg is, under torch's default kernels
    # (test_exp_avg_is_bit_identical_under_torchs_default_kernels); its AVX2 and
    # AVX-512 kernels fuse m * beta2 + (1 - beta2) * g, which gradstep does not.
    mine, mine_m, _ = gs_run(opts, params, grads)
    for got, w, gm, wm in zip(mine, want, mine_m, want_m):
        assert got.shape == w.shape and got.dtype == w.dtype
        assert got.tobytes() == w.tobytes()
        np.testing.assert_allclose(gm, wm, **TOL)

    if opts["maximize"]:  # not an argument of lion_pytorch.Lion, so not of gradstep.torch.Lion
        with pytest.raises(TypeError, match="maximize"):
            gt.Lion([torch.zeros(1, requires_grad=True)], maximize=True)
        return
    adapted, adapted_m, aopt = adapter_run(opts, params, grads)
    for got, w, gm, m in zip(adapted, want, adapted_m, mine_m):
        assert got.tobytes() == w.tobytes()
        assert gm.tobytes() == m.tobytes()  # gs.Lion's kernel
    ours, theirs = aopt.state_dict(), ref.state_dict()
    assert without_half(ours["param_groups"]) == theirs["param_groups"]
    assert ours["state"].keys() == theirs["state"].keys()
    for i, state in theirs["state"].items():
        assert list(ours["state"][i]) == list(state) == ["exp_avg"]  # no state["step"], as lion_pytorch
        assert ours["state"][i]["exp_avg"].dtype == state["exp_avg"].dtype
        torch.testing.assert_close(ours["state"][i]["exp_avg"], state["exp_avg"], **TOL)


def test_exp_avg_is_bit_identical_under_torchs_default_kernels(tmp_path):
    # torch's default CPU kernels round every product and sum (no fused
    # multiply-add), as gradstep's kernel does on every target: then exp_avg is
    # lion_pytorch's bit for bit too, in float64 and float32 alike, and so are
    # float64 params. (float32 params differ: gradstep rounds p * (1 - lr * wd)
    # + (-lr) * sign once, in double; torch twice, with lr rounded to float32.)
    out = tmp_path / "lion.npz"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default",
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, str(HERE / "_lion_worker.py"), str(out)], env=env, check=True, timeout=600)
    with np.load(out) as f:
        theirs = {k: f[k] for k in f.files}
    assert str(theirs.pop("capability")).lower() == "default"
    for c, opts in enumerate(GRID):
        for dtype in (np.float64, np.float32):
            params, grads = problem(dtype)
            mine, mine_m, _ = gs_run(opts, params, grads)
            for i, (p, m) in enumerate(zip(mine, mine_m)):
                assert m.tobytes() == theirs[f"{c}/{dtype.__name__}/m{i}"].tobytes(), (opts, dtype, i)
                if dtype == np.float64:
                    assert p.tobytes() == theirs[f"{c}/{dtype.__name__}/p{i}"].tobytes(), (opts, i)


# -- 2. float32: no further from the float64 truth than lion_pytorch's float32 -----------

def rms(e):
    return float(np.sqrt(np.mean(np.square(e))))


def test_float32_is_no_further_from_the_truth_than_lion_pytorchs_float32():
    ratios = []
    for opts in GRID:
        params, grads = problem(np.float32, seed=3)
        assert sign_margin(opts, grads) > 1e-5  # float32's m cannot flip a sign either
        truth, _, _ = reference_run(opts, params, grads, dtype=np.float64)
        theirs, _, _ = reference_run(opts, params, grads)
        mine, _, _ = gs_run(opts, params, grads)
        adapted = (adapter_run(opts, params, grads)[0] if not opts["maximize"] else mine)
        err = np.concatenate([(a.astype(np.float64) - t).ravel() for a, t in zip(mine, truth)])
        ref = np.concatenate([(a.astype(np.float64) - t).ravel() for a, t in zip(theirs, truth)])
        assert rms(err) <= rms(ref) * (1 + 1e-6) + 1e-12, (opts, rms(err), rms(ref))
        assert np.max(np.abs(err)) <= np.max(np.abs(ref)) * (1 + 1e-6) + 1e-12, opts
        for a, b in zip(adapted, mine):
            assert a.tobytes() == b.tobytes()  # the adapter is the same kernel
        ratios.append(rms(err) / max(rms(ref), 1e-300))
    # With weight decay lion_pytorch's float32 multiplies by float32(1 - lr * wd),
    # the same rounding step after step; gradstep decays in double.
    assert min(ratios) < 0.5


# -- 3. torch.sign's zeros and NaN, identical on every ISA target --------------------------

def special_values(n, dtype, rng):
    """exp_avg and grads whose interpolation is exactly +0, -0, NaN, +-inf, subnormal or plain."""
    tiny = np.finfo(dtype).smallest_subnormal
    m_choices = np.array([0.0, -0.0, 0.0, 1.0, -1.0, tiny, -tiny, 0.5], dtype)
    g_choices = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 0.0, 0.0, -2.0], dtype)
    pick = rng.integers(0, len(m_choices), n)
    return m_choices[pick].copy(), g_choices[pick].copy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("betas", [(1.0, 0.5), (0.9, 0.99), (0.0, 0.0)])
def test_sign_of_zero_and_nan_is_torchs_on_every_target(dtype, betas):
    # sign(+-0) = sign(NaN) = 0: a NaN grad (or momentum) moves nothing but the
    # decay, as in lion_pytorch; the momentum turns NaN.
    rng = np.random.default_rng(5)
    results = set()
    for n in (1, 7, 33, 4099):
        m0, g = special_values(n, dtype, rng)
        p0 = rng.standard_normal(n).astype(dtype)
        p0[: n // 3] = np.array([-0.0, 0.0, np.inf], dtype)[np.arange(n // 3) % 3]
        t = torch.tensor(p0).requires_grad_()
        ref = lion_pytorch.Lion([t], lr=LR, betas=betas, weight_decay=0.1)
        ref.state[t]["exp_avg"] = torch.tensor(m0)
        t.grad = torch.tensor(g)
        ref.step()
        want_p, want_m = t.detach().numpy(), ref.state[t]["exp_avg"].numpy()
        per_isa = set()
        for isa in gs.available_isas():
            before = gs.isa()
            gs.set_isa(isa)
            try:
                p, m = p0.copy(), m0.copy()
                gs.kernels.lion_step(p, g, m, lr=LR, step=1, beta1=betas[0], beta2=betas[1], weight_decay=0.1)
            finally:
                gs.set_isa(before)
            per_isa.add((p.tobytes(), m.tobytes()))
            assert np.array_equal(m, want_m, equal_nan=True), isa
            assert np.array_equal(np.signbit(m), np.signbit(want_m)) or np.isnan(m).any(), isa
            close = np.isclose(p, want_p, rtol=1e-6, atol=0, equal_nan=True)
            assert close.all(), (isa, p[~close], want_p[~close])
            finite = np.isfinite(p)
            assert np.array_equal(np.isnan(p), np.isnan(want_p)) and np.array_equal(p[~finite], want_p[~finite])
        assert len(per_isa) == 1, "ISA targets differ"
        results |= per_isa
    assert results


def test_nan_grad_freezes_the_element_as_in_lion_pytorch():
    params, grads = problem(seed=7, steps=8)
    grads[2][2][3] = np.nan
    opts = dict(weight_decay=0.1)
    want, want_m, _ = reference_run(opts, params, grads)
    mine, mine_m, _ = gs_run(opts, params, grads)
    for a, b, ma, mb in zip(mine, want, mine_m, want_m):
        assert a.tobytes() == b.tobytes()
        np.testing.assert_allclose(ma, mb, **TOL, equal_nan=True)
    assert np.isnan(mine_m[2][3]) and np.isfinite(mine[2][3])


# -- 4. the decoupled decay's initial rate ------------------------------------------------

def test_gs_lion_decay_is_relative_to_the_schedule_at_step_0():
    # lion_pytorch divides weight_decay by the constructor's lr and multiplies by the
    # group's lr of each step; gs.Lion's initial rate is its base rate at step 0.
    params, grads = problem(seed=1, steps=30)
    sched = gs.schedules.exponential(2e-3, gamma=0.9)
    opts = dict(weight_decay=0.2, decoupled_weight_decay=True)
    assert sign_margin(opts, grads) > 1e-9
    mine = [p.copy() for p in params]
    opt = gs.Lion(mine, lr=sched, **opts)
    assert opt._options.init_lr == 2e-3  # noqa: SLF001 - the test's own
    ts = [torch.tensor(p).requires_grad_() for p in params]
    ref = lion_pytorch.Lion(ts, lr=float(sched(0)), **opts)
    for k, step in enumerate(grads):
        ref.param_groups[0]["lr"] = float(sched(k))
        for t, g in zip(ts, step):
            t.grad = torch.tensor(g)
        ref.step()
        assert opt.step(step).lr == float(sched(k))
    for a, t in zip(mine, ts):
        assert a.tobytes() == t.detach().numpy().tobytes()


def test_plateau_scaling_scales_the_decay_and_a_new_rate_is_the_new_start():
    params, grads = problem(seed=2, steps=20)
    opts = dict(weight_decay=0.2, decoupled_weight_decay=True)
    mine = [p.copy() for p in params]
    opt = gs.Lion(mine, lr=1e-3, **opts)
    ts = [torch.tensor(p).requires_grad_() for p in params]
    ref = lion_pytorch.Lion(ts, lr=1e-3, **opts)

    def both(step):
        for t, g in zip(ts, step):
            t.grad = torch.tensor(g)
        ref.step()
        opt.step(step)

    for step in grads[:5]:
        both(step)
    opt.set_plateau(0.5, 0.0)  # the rate halves, the initial rate stays: the decay halves
    ref.param_groups[0]["lr"] = 5e-4
    for step in grads[5:10]:
        both(step)
    # A rate assigned is a new start (gs.Lion's init_lr follows it): as a
    # lion_pytorch.Lion built with that rate and given the state so far.
    opt.set_plateau(1.0, 0.0)
    opt.lr = 3e-4
    assert opt._options.init_lr == 3e-4  # noqa: SLF001 - the test's own
    rebuilt = lion_pytorch.Lion(ts, lr=3e-4, **opts)
    rebuilt.load_state_dict(ref.state_dict())  # its group's lr too (5e-4), not its _init_lr
    rebuilt.param_groups[0]["lr"] = 3e-4
    ref = rebuilt
    for step in grads[10:]:
        both(step)
    for a, t in zip(mine, ts):
        assert a.tobytes() == t.detach().numpy().tobytes()


def test_adapter_decay_is_relative_to_the_constructors_lr_for_every_group():
    # As lion_pytorch: one initial rate (the constructor's lr) for all groups,
    # whatever rate a group has or a torch scheduler gives it.
    def groups(ts):
        return [{"params": ts[:2], "lr": 3e-3}, {"params": ts[2:], "weight_decay": 0.05}]

    params, grads = problem(seed=4, steps=25)
    opts = dict(weight_decay=0.2, decoupled_weight_decay=True)
    runs = []
    for cls in (lion_pytorch.Lion, gt.Lion):
        ts = [torch.tensor(p).requires_grad_() for p in params]
        opt = cls(groups(ts), 1e-3, **opts)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
        for step in grads:
            for t, g in zip(ts, step):
                t.grad = torch.tensor(g)
            opt.step()
            sched.step()
        runs.append(ts)
    for a, b in zip(*runs):
        assert a.detach().numpy().tobytes() == b.detach().numpy().tobytes()


def test_decoupled_decay_needs_a_positive_initial_rate():
    p = np.ones(3)
    with pytest.raises(ValueError, match="decoupled_weight_decay, init_lr"):
        gs.Lion([p], lr=0.0, weight_decay=0.1, decoupled_weight_decay=True)
    with pytest.raises(ValueError, match="decoupled_weight_decay, init_lr"):  # a warmup from 0
        gs.Lion([p], lr=gs.schedules.warmup(gs.schedules.constant(1e-3), steps=10), weight_decay=0.1,
                decoupled_weight_decay=True)
    opt = gs.Lion([p], lr=1e-3, weight_decay=0.1, decoupled_weight_decay=True)
    opt.step([np.ones(3)])
    before = p.copy(), opt.state["exp_avg"][0].copy(), opt._options.init_lr  # noqa: SLF001
    with pytest.raises(ValueError, match="decoupled_weight_decay, init_lr"):
        opt.lr = 0.0
    assert opt.lr == 1e-3 and opt._options.init_lr == before[2]  # noqa: SLF001 - unchanged
    opt.step([np.ones(3)])
    gs.Lion([p], lr=0.0)  # without decoupled decay a zero rate is fine (it freezes)
    with pytest.raises(ValueError, match="decoupled_weight_decay, init_lr"):
        gs.kernels.lion_step(np.ones(2), np.ones(2), np.zeros(2), lr=1e-3, step=1, weight_decay=0.1,
                             decoupled_weight_decay=True)  # init_lr by keyword
    w, m = np.ones(2), np.zeros(2)
    gs.kernels.lion_step(w, np.ones(2), m, lr=1e-3, step=1, weight_decay=0.1, decoupled_weight_decay=True,
                         init_lr=1e-3)
    assert np.array_equal(w, np.full(2, (1 - 1e-3 * (0.1 / 1e-3)) - 1e-3))
    with pytest.raises(ValueError, match="lr"):
        gt.Lion([torch.ones(2, requires_grad=True)], lr=0.0, weight_decay=0.1, decoupled_weight_decay=True)


# -- 5. exact resume ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_checkpoint_resume_mid_run_is_bit_exact(dtype, tmp_path):
    opts = dict(betas=(0.95, 0.98), weight_decay=0.1, decoupled_weight_decay=True, maximize=True)
    lr = gs.schedules.cosine(2e-3, total_steps=30, final_lr=1e-4)
    params, grads = problem(dtype, seed=4, steps=30)
    straight, _, _ = gs_run(opts, params, grads, lr=lr)

    partial = [p.copy() for p in params]
    opt = gs.Lion(partial, lr=lr, **opts)
    for step in grads[:13]:
        opt.step(step)
    opt.set_plateau(0.5, 1e-4)
    gs.save(opt, tmp_path / "c.npz")
    for step in grads[13:]:
        opt.step(step)
    resumed = [p.copy() for p in params]
    first = gs.Lion(resumed, lr=lr, **opts)
    for step in grads[:13]:
        first.step(step)
    opt2 = gs.load(tmp_path / "c.npz", resumed)
    assert type(opt2) is gs.Lion and opt2.step_count == 13 and opt2.lr_scale == 0.5
    for step in grads[13:]:
        opt2.step(step)
    for a, b in zip(resumed, partial):
        assert a.tobytes() == b.tobytes()
    assert any(a.tobytes() != b.tobytes() for a, b in zip(resumed, straight))  # the plateau counted


def test_torch_state_dict_resume_is_bit_exact():
    opts = dict(betas=(0.9, 0.99), weight_decay=0.1, decoupled_weight_decay=True)
    params, grads = problem(seed=6, steps=30)
    straight, _, _ = adapter_run(opts, params, grads)
    ts = [torch.tensor(p).requires_grad_() for p in params]
    first = gt.Lion(ts, lr=LR, **opts)
    for k, step in enumerate(grads):
        if k == 11:  # a new optimizer from the state_dict, mid-run
            sd = copy.deepcopy(first.state_dict())
            first = gt.Lion(ts, lr=LR, **opts)
            first.load_state_dict(sd)
        for t, g in zip(ts, step):
            t.grad = torch.tensor(g)
        first.step()
    for a, b in zip(ts, straight):
        assert a.detach().numpy().tobytes() == b.tobytes()


# -- 6. state_dict interchange with lion_pytorch --------------------------------------------

def moves(opts, classes, grads, params):
    """Steps of 10 with each class in turn, each loading its predecessor's state_dict."""
    ms = [torch.tensor(p).requires_grad_() for p in params]
    opt = None
    for phase, cls in enumerate(classes):
        new = cls(ms, **opts)
        if opt is not None:
            new.load_state_dict(copy.deepcopy(opt.state_dict()))
        opt = new
        for step in grads[10 * phase:10 * (phase + 1)]:
            for m, g in zip(ms, step):
                m.grad = torch.tensor(g)
            opt.step()
    return ms, opt


@pytest.mark.parametrize("default_dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("opts", [dict(lr=2e-3), dict(lr=2e-3, betas=(0.5, 0.9), weight_decay=0.1,
                                                       decoupled_weight_decay=True)], ids=opts_id)
def test_state_dict_moves_to_lion_pytorch_and_back_mid_run(opts, default_dtype):
    before = torch.get_default_dtype()
    torch.set_default_dtype(default_dtype)
    try:
        params, grads = problem(seed=2, steps=40)
        theirs, topt = moves(opts, [lion_pytorch.Lion] * 4, grads, params)
        ours, opt = moves(opts, [lion_pytorch.Lion, gt.Lion, lion_pytorch.Lion, gt.Lion], grads, params)
        other, _ = moves(opts, [gt.Lion, lion_pytorch.Lion, gt.Lion, lion_pytorch.Lion], grads, params)
        for a, b, c in zip(ours, theirs, other):
            assert a.detach().numpy().tobytes() == b.detach().numpy().tobytes() == c.detach().numpy().tobytes()
        got, want = opt.state_dict(), topt.state_dict()
        assert without_half(got["param_groups"]) == want["param_groups"]
        for i in want["state"]:
            assert got["state"][i].keys() == want["state"][i].keys() == {"exp_avg"}
            assert got["state"][i]["exp_avg"].dtype == want["state"][i]["exp_avg"].dtype
            torch.testing.assert_close(got["state"][i]["exp_avg"], want["state"][i]["exp_avg"], **TOL)
    finally:
        torch.set_default_dtype(before)


def without_half(groups):
    """gradstep.torch's groups less its half-precision options (test_torch_half.py)."""
    return [{k: v for k, v in g.items() if k not in gt._HALF_OPTIONS} for g in groups]


def test_param_groups_and_defaults_are_lion_pytorchs():
    ts = [torch.zeros(3, requires_grad=True)]
    for args in [(), (3e-4, (0.5, 0.8), 0.1, False, True)]:
        ours, theirs = gt.Lion(ts, *args), lion_pytorch.Lion(ts, *args)
        mine = {k: v for k, v in ours.defaults.items() if k not in gt._HALF_OPTIONS}
        assert mine == theirs.defaults
        assert list(mine) == list(theirs.defaults) == ["lr", "betas", "weight_decay"]
        sd = ours.state_dict()
        assert {**sd, "param_groups": without_half(sd["param_groups"])} == theirs.state_dict()
        assert isinstance(ours, torch.optim.Optimizer)


# -- 7. the reference's constructor; use_triton -------------------------------------------

def test_constructor_is_lion_pytorchs_and_use_triton_is_refused():
    ours, theirs = inspect.signature(gt.Lion).parameters, inspect.signature(lion_pytorch.Lion).parameters
    assert [(p.name, p.kind, p.default) for p in ours.values()] == \
        [(p.name, p.kind, p.default) for p in theirs.values()] + [(k, inspect.Parameter.KEYWORD_ONLY, v) for k, v in gt._HALF_OPTIONS.items()]
    # lion_pytorch's use_triton=True imports its Triton (CUDA) kernel (without
    # triton installed, lion_pytorch.triton calls exit()); gradstep.torch steps CPU
    # tensors with its own kernel, so it refuses, before anything is made.
    t = torch.zeros(3, requires_grad=True)
    with pytest.raises(NotImplementedError, match="use_triton=True"):
        gt.Lion([t], use_triton=True)
    with pytest.raises(NotImplementedError, match="use_triton=True"):
        gt.Lion([t], 1e-4, (0.9, 0.99), 0.0, True)
    gt.Lion([t], use_triton=False)
    assert "use_triton=True raises NotImplementedError" in gt.Lion.__doc__


# -- 8. bad input: ValueError naming the argument, nothing changed --------------------------

@pytest.mark.parametrize(("kwargs", "word"), [
    (dict(lr=float("nan")), "lr"),
    (dict(lr=-1e-3), "lr"),
    (dict(betas=(1.5, 0.99)), "betas"),
    (dict(betas=(0.9, -0.1)), "betas"),
    (dict(betas=(0.9, float("nan"))), "betas"),
    (dict(weight_decay=-0.1), "weight_decay"),
    (dict(weight_decay=float("inf")), "weight_decay"),
])
def test_bad_hyperparameters_raise_naming_the_argument_and_change_nothing(kwargs, word):
    params = [np.ones(3), np.ones(())]
    snap = [p.copy() for p in params]
    with pytest.raises(ValueError, match=word):
        gs.Lion(params, **kwargs)
    for a, b in zip(params, snap):
        assert a.tobytes() == b.tobytes()
    with pytest.raises(ValueError, match=word):
        gt.Lion([torch.ones(3, requires_grad=True)], **kwargs)
    # Changed mid-run: gs.Lion's rate, gradstep.torch.Lion's group; nothing is written.
    opt = gs.Lion(params, lr=1e-3)
    opt.step([np.ones(3), np.ones(())])
    before = [p.copy() for p in params], [m.copy() for m in opt.state["exp_avg"]]
    if "lr" in kwargs:
        with pytest.raises(ValueError, match=word):
            opt.lr = kwargs["lr"]
        opt.step([np.ones(3), np.ones(())])
        before = [p.copy() for p in params], [m.copy() for m in opt.state["exp_avg"]]
    ts = [torch.tensor(p).requires_grad_() for p in params]
    topt = gt.Lion(ts)
    for t in ts:
        t.grad = torch.ones_like(t)
    topt.step()
    tbefore = [t.detach().clone() for t in ts], copy.deepcopy(topt.state_dict()["state"])
    for key, value in kwargs.items():
        topt.param_groups[0][key] = value
    with pytest.raises(ValueError, match=word):
        topt.step()
    for t, b in zip(ts, tbefore[0]):
        assert torch.equal(t.detach(), b)
    after = topt.state_dict()["state"]
    for i in tbefore[1]:
        assert torch.equal(after[i]["exp_avg"], tbefore[1][i]["exp_avg"])
    for a, b in zip(params, before[0]):
        assert a.tobytes() == b.tobytes()
    for a, b in zip(opt.state["exp_avg"], before[1]):
        assert a.tobytes() == b.tobytes()


# -- 9. the rest of the surface ----------------------------------------------------------------

def test_kernel_function_is_the_optimizers_step():
    params, grads = problem(seed=8, steps=5)
    opts = dict(betas=(0.8, 0.9), weight_decay=0.1, decoupled_weight_decay=True, maximize=True)
    mine, mine_m, _ = gs_run(opts, params, grads)
    ws, ms = [p.copy() for p in params], [np.zeros_like(p) for p in params]
    for k, step in enumerate(grads, 1):
        gs.kernels.lion_step(ws, step, ms, lr=LR, step=k, beta1=0.8, beta2=0.9, weight_decay=0.1,
                             decoupled_weight_decay=True, maximize=True, init_lr=LR)
    for a, b, c, d in zip(ws, mine, ms, mine_m):
        assert a.tobytes() == b.tobytes() and c.tobytes() == d.tobytes()


def test_help_and_docs_name_the_reference():
    assert gs.Lion.__doc__.startswith("lion_pytorch.Lion: ")
    assert gt.Lion.__doc__.startswith("lion_pytorch.Lion, stepped by gradstep's C++ kernels.")
    assert "sign(0) = sign(NaN) = 0" in gs.Lion.__doc__
    assert gs.recommended_range(gs.Lion) == gs.recommended_range("lion")


def test_a_copy_or_pickle_keeps_the_arguments_kept_on_the_optimizer():
    # torch.optim.Optimizer pickles only defaults, state and param_groups, so a
    # deep copy of lion_pytorch.Lion loses decoupled_weight_decay and its initial
    # rate (its step then raises AttributeError); gradstep.torch.Lion's keep them.
    import pickle

    params, grads = problem(seed=9, steps=6)
    opts = dict(lr=2e-3, weight_decay=0.1, decoupled_weight_decay=True)
    ts = [torch.tensor(p).requires_grad_() for p in params]
    opt = gt.Lion(ts, **opts)
    for t, g in zip(ts, grads[0]):
        t.grad = torch.tensor(g)
    opt.step()
    copies = [copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))]
    for other in copies:
        assert other.defaults == {**opt.defaults, "differentiable": False}  # as torch's __setstate__ makes it
        assert other._kept_arguments == {"use_triton": False, "decoupled_weight_decay": True}  # noqa: SLF001
    ref = lion_pytorch.Lion(ts, **opts)
    with pytest.raises(AttributeError, match="decoupled_wd"):
        copy.deepcopy(ref).step()
    # A copy steps its own copies of the params exactly as the original.
    twin = copy.deepcopy([ts, opt])
    for step in grads[1:]:
        for t, u, g in zip(ts, twin[0], step):
            t.grad, u.grad = torch.tensor(g), torch.tensor(g)
        opt.step()
        twin[1].step()
    for a, b in zip(ts, twin[0]):
        assert a.detach().numpy().tobytes() == b.detach().numpy().tobytes()
