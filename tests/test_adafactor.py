"""Adafactor against torch.optim.Adafactor 2.13 (foreach=False), and its states of another
extent than the param's: row_var (..., R, 1) and col_var (..., 1, C) of a matrix, a full
variance of a 0-d or 1-d param."""

from __future__ import annotations

import copy
import io
import json
import zipfile

import numpy as np
import pytest
import torch

import gradstep as gs
import gradstep.torch as gst
from conftest import option_grid
from float32_accuracy import assert_float32_accurate, errors, rms, run_torch

# 0-d, one element, vectors, matrices (1xN and Nx1 among them), batches of matrices.
SHAPES = [(), (1,), (7,), (13, 5), (3, 4, 33), (1, 9), (9, 1), (1, 1), (2, 1, 3, 6)]
STEPS = 55
SCHEDULE = gs.schedules.warmup(gs.schedules.cosine(0.3, total_steps=STEPS, final_lr=1e-3), steps=5)

# lr 0.5 is capped by 1/sqrt(step) for the first steps; the schedule crosses that cap.
OPTIONS = option_grid(lr=[0.01, 0.5, "schedule"], beta2_decay=[-0.8, -0.3],
                      eps=[(None, 1e-3), (1e-20, 0.0), (1e-3, 0.1)], d=[1.0, 2.0],
                      weight_decay=[0.0, 0.05], maximize=[False, True])


def _id(o):
    return ",".join(f"{k}={v}" for k, v in o.items())


def problem(dtype, steps=STEPS, shapes=SHAPES, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(steps)]
    return params, grads


def rates(lr, steps=STEPS):
    return [float(r) for r in SCHEDULE(np.arange(steps))] if lr == "schedule" else [lr] * steps


def run_gradstep(opts, params, grads):
    opts = dict(opts)
    lr = opts.pop("lr")
    ps = [p.copy() for p in params]
    opt = gs.Adafactor(ps, lr=SCHEDULE if lr == "schedule" else lr, **opts)
    for g in grads:
        opt.step(g)
    return ps, opt


def run_reference(opts, params, grads, dtype=torch.float64):
    opts = dict(opts)
    lrs = rates(opts.pop("lr"), len(grads))
    ts = [torch.tensor(np.asarray(p), dtype=dtype).requires_grad_() for p in params]
    topt = torch.optim.Adafactor(ts, lr=lrs[0], foreach=False, **opts)
    for k, g in enumerate(grads):
        topt.param_groups[0]["lr"] = lrs[k]
        for t, gk in zip(ts, g):
            t.grad = torch.tensor(np.asarray(gk), dtype=dtype)
        topt.step()
    return ts, topt


def torch_states(topt, ts):
    """torch's row_var, col_var, variance per param, as gradstep lays them out ((0,) where none)."""
    out = {}
    for name in ("row_var", "col_var", "variance"):
        out[name] = [topt.state[t][name].numpy() if name in topt.state[t] else np.empty(0) for t in ts]
    return out


@pytest.mark.parametrize("opts", OPTIONS, ids=[_id(o) for o in OPTIONS])
def test_matches_torch_in_float64(opts):
    params, grads = problem(np.float64)
    got, opt = run_gradstep(opts, params, grads)
    ts, topt = run_reference(opts, params, grads)
    for p, t in zip(got, ts):
        assert p.shape == tuple(t.shape)
        np.testing.assert_allclose(p, t.detach().numpy(), rtol=1e-10, atol=1e-300)
    theirs = torch_states(topt, ts)
    for name, arrays in opt.state.items():
        for i, (mine, ref) in enumerate(zip(arrays, theirs[name])):
            assert mine.shape == ref.shape, (name, i)
            np.testing.assert_allclose(mine, ref, rtol=1e-10, atol=1e-300, err_msg=f"{name}[{i}]")
    assert opt.step_count == STEPS


def test_states_have_torchs_shapes():
    params, _ = problem(np.float32, steps=0)
    opt = gs.Adafactor(params)
    assert [a.shape for a in opt.state["row_var"]] == [(0,), (0,), (0,), (13, 1), (3, 4, 1), (1, 1), (9, 1),
                                                       (1, 1), (2, 1, 3, 1)]
    assert [a.shape for a in opt.state["col_var"]] == [(0,), (0,), (0,), (1, 5), (3, 1, 33), (1, 9), (1, 1),
                                                       (1, 1), (2, 1, 1, 6)]
    assert [a.shape for a in opt.state["variance"]] == [(), (1,), (7,)] + [(0,)] * 6
    assert all(a.dtype == np.float32 for arrays in opt.state.values() for a in arrays)


FLOAT32_OPTIONS = option_grid(lr=[0.01, "schedule"], eps=[(None, 1e-3), (1e-20, 0.0)],
                              weight_decay=[0.0, 0.05], maximize=[False, True])


@pytest.mark.parametrize("opts", FLOAT32_OPTIONS, ids=[_id(o) for o in FLOAT32_OPTIONS])
def test_float32_no_further_from_float64_than_torchs_float32(opts):
    params, grads = problem(np.float32)
    got, _ = run_gradstep(opts, params, grads)
    truth = [t.detach().numpy() for t in run_reference(opts, params, grads)[0]]
    torch32 = [t.detach().numpy() for t in run_reference(opts, params, grads, dtype=torch.float32)[0]]
    # The storage-only floor: torch's float64 steps with params and states rounded to float32.
    o = dict(opts)
    lr = o.pop("lr")
    if lr != "schedule":  # (run_torch takes a constant rate)
        storage, _ = run_torch("Adafactor", lr, o, params, grads, storage_float32=True)
        assert_float32_accurate(got, truth, storage, _id(opts))
    mine, theirs = errors(got, truth), errors(torch32, truth)
    assert rms(mine) <= 1.25 * rms(theirs), (rms(mine), rms(theirs))
    assert np.max(np.abs(mine)) <= 1.5 * np.max(np.abs(theirs)), (np.max(np.abs(mine)), np.max(np.abs(theirs)))


# Matrices of many chunks (8K elements each): rows longer than a chunk, tall and thin,
# a batch, vectors around the threaded minimum; every row and column sum shared out.
BIG = [(300, 700), (5, 40_000), (40_000, 3), (4, 50, 301), (70_001,), (1, 20_000), (20_000, 1), (3,)]
BIG_OPTIONS = [dict(lr=0.01, weight_decay=0.05, maximize=True), dict(lr=0.5, beta2_decay=-0.3, eps=(1e-20, 0.0))]


def _bytes(opts, dtype, threads, steps=3):
    params, grads = problem(dtype, steps=steps, shapes=BIG, seed=3)
    before = gs.get_num_threads()
    gs.set_num_threads(threads)
    try:
        got, opt = run_gradstep(opts, params, grads)
    finally:
        gs.set_num_threads(before)
    return [a.tobytes() for a in got + [s for arrays in opt.state.values() for s in arrays]]


_BASELINE: dict = {}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("opts", BIG_OPTIONS, ids=[_id(o) for o in BIG_OPTIONS])
def test_bit_identical_on_every_isa_and_thread_count(each_isa, opts, dtype):
    key = (_id(opts), np.dtype(dtype).name)
    if key not in _BASELINE:
        active = gs.isa()
        gs.set_isa("scalar")
        try:
            _BASELINE[key] = _bytes(opts, dtype, 1)
        finally:
            gs.set_isa(active)
    assert gs.isa() == each_isa
    for threads in (1, 2, 3, 4):
        assert _bytes(opts, dtype, threads) == _BASELINE[key], (each_isa, threads)


def test_big_matrices_match_torch():
    opts = dict(lr=0.01, weight_decay=0.05)
    params, grads = problem(np.float64, steps=3, shapes=BIG, seed=3)
    got, _ = run_gradstep(opts, params, grads)
    ts, _ = run_reference(opts, params, grads)
    for p, t in zip(got, ts):
        np.testing.assert_allclose(p, t.detach().numpy(), rtol=1e-10, atol=1e-300)


def test_exact_resume_from_a_checkpoint(tmp_path):
    params, grads = problem(np.float64, steps=40)
    ps = [p.copy() for p in params]
    opt = gs.Adafactor(ps, lr=SCHEDULE, weight_decay=0.05, eps=(None, 1e-3))
    for g in grads[:20]:
        opt.step(g)
    gs.save(opt, tmp_path / "a.npz")
    at_save = [p.copy() for p in ps]
    for g in grads[20:]:
        opt.step(g)
    resumed_params = [p.copy() for p in at_save]
    resumed = gs.load(tmp_path / "a.npz", resumed_params)
    assert type(resumed) is gs.Adafactor and resumed.step_count == 20
    assert resumed.hyperparameters() == opt.hyperparameters()
    for g in grads[20:]:
        resumed.step(g)
    assert [p.tobytes() for p in resumed_params] == [p.tobytes() for p in ps]
    for name in opt.state:
        assert [a.tobytes() for a in resumed.state[name]] == [a.tobytes() for a in opt.state[name]]
    # And through a state_dict into an optimizer built anew.
    again_params = [p.copy() for p in at_save]
    again = gs.Adafactor(again_params, lr=SCHEDULE, weight_decay=0.05)
    again.load_state_dict(gs.checkpoint.read(tmp_path / "a.npz"))
    for g in grads[20:]:
        again.step(g)
    assert [p.tobytes() for p in again_params] == [p.tobytes() for p in ps]


def _rewrite_member(src, dst, member, array):
    """The checkpoint src with one state member replaced (manifest and digest kept consistent)."""
    from test_checkpoint_hostile import _arrays, _npy, _parts, _write

    meta, members = _parts(src)
    members[f"{member}.npy"] = _npy(array)
    if "arrays" in meta:
        meta["arrays"][member] = [array.dtype.str, list(array.shape)]
    _write(dst, meta, members)
    assert _arrays(members)[member].shape == array.shape


def test_checkpoint_with_a_wrong_row_var_size_is_refused(tmp_path):
    params, grads = problem(np.float64, steps=3)
    opt = gs.Adafactor([p.copy() for p in params])
    for g in grads:
        opt.step(g)
    gs.save(opt, tmp_path / "a.npz")
    i = 3  # the (13, 5) matrix: row_var (13, 1)
    for bad in (np.zeros((12, 1)), np.zeros((13,)), np.zeros((1, 13)), np.zeros((13, 5))):
        _rewrite_member(tmp_path / "a.npz", tmp_path / "b.npz", f"state/row_var/{i}", bad)
        given = [p.copy() for p in params]
        with pytest.raises(ValueError, match="row_var"):
            gs.load(tmp_path / "b.npz", given)
        assert all(a.tobytes() == b.tobytes() for a, b in zip(given, params))
        # load_state_dict of the same: refused, nothing changed.
        sd = opt.state_dict()
        sd["state"]["row_var"][i] = bad
        before = [a.tobytes() for arrays in opt.state.values() for a in arrays]
        with pytest.raises(ValueError, match="row_var"):
            opt.load_state_dict(sd)
        assert [a.tobytes() for arrays in opt.state.values() for a in arrays] == before
    # A vector's variance given a matrix's row_var instead: refused too.
    _rewrite_member(tmp_path / "a.npz", tmp_path / "c.npz", "state/variance/2", np.zeros((7, 1)))
    with pytest.raises(ValueError, match="variance"):
        gs.load(tmp_path / "c.npz", [p.copy() for p in params])


@pytest.mark.parametrize(("kwargs", "error", "words"), [
    (dict(beta2_decay=0.1), ValueError, "beta2_decay"),
    (dict(beta2_decay=float("nan")), ValueError, "beta2_decay"),
    (dict(d=0.5), ValueError, "d must be"),
    (dict(d=float("inf")), ValueError, "d must be"),
    (dict(eps=(-1e-3, 1e-3)), ValueError, r"eps\[0\]"),
    (dict(eps=(float("nan"), 1e-3)), ValueError, r"eps\[0\]"),
    (dict(eps=(None, -1.0)), ValueError, r"eps\[1\]"),
    (dict(eps=(None, None)), TypeError, r"eps\[1\]"),
    (dict(eps=1e-3), TypeError, "eps"),
    (dict(eps=(None, 1e-3, 1.0)), TypeError, "eps"),
    (dict(weight_decay=-0.1), ValueError, "weight_decay"),
    (dict(lr=-1.0), ValueError, "lr"),
    (dict(lr=float("nan")), ValueError, "lr"),
])
def test_bad_options_raise_naming_the_argument(kwargs, error, words):
    params, _ = problem(np.float32, steps=0)
    before = [p.copy() for p in params]
    with pytest.raises(error, match=words):
        gs.Adafactor(params, **kwargs)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(params, before))


def test_bad_grads_raise_and_change_nothing():
    params, grads = problem(np.float32, steps=2)
    opt = gs.Adafactor(params)
    opt.step(grads[0])
    snapshot = [a.tobytes() for a in params] + [a.tobytes() for arrays in opt.state.values() for a in arrays]
    bad = list(grads[1])
    bad[3] = np.zeros((5, 13), np.float32)  # the (13, 5) matrix's grad transposed
    with pytest.raises(ValueError, match=r"grads\[3\]"):
        opt.step(bad)
    bad = list(grads[1])
    bad[4] = bad[4].astype(np.float64)
    with pytest.raises(TypeError, match=r"grads\[4\]"):
        opt.step(bad)
    assert opt.step_count == 1
    assert snapshot == [a.tobytes() for a in params] + [a.tobytes() for arrays in opt.state.values() for a in arrays]


def test_tensor_set_checks_each_state_by_its_extent():
    p = np.zeros((4, 3))
    g = np.ones((4, 3))
    options = gs._core.AdafactorOptions()
    ok = [[np.zeros((4, 1))], [np.zeros((1, 3))], [np.zeros(0)]]
    gs._core.TensorSet([p], ok, ["row_var", "col_var", "variance"], options)
    with pytest.raises(ValueError, match=r"state 'row_var'\[0\]: 3 elements, expected 4"):
        gs._core.TensorSet([p], [[np.zeros((3, 1))], ok[1], ok[2]], ["row_var", "col_var", "variance"], options)
    with pytest.raises(ValueError, match=r"state 'variance'\[0\]: 12 elements, expected 0"):
        gs._core.TensorSet([p], [ok[0], ok[1], [np.zeros((4, 3))]], ["row_var", "col_var", "variance"], options)
    # Overlap is checked by each state's own size: col_var right after row_var is fine,
    # one element into it is not.
    buf = np.zeros(7)
    gs._core.TensorSet([p], [[buf[:4]], [buf[4:]], [np.zeros(0)]], ["row_var", "col_var", "variance"], options)
    with pytest.raises(ValueError, match="overlap"):
        gs._core.TensorSet([p], [[buf[:4]], [buf[3:6]], [np.zeros(0)]], ["row_var", "col_var", "variance"],
                           options)
    # A set built for the param's size everywhere does not take Adafactor's options.
    full = gs._core.TensorSet([p], [[np.zeros((4, 3))] for _ in range(3)], ["row_var", "col_var", "variance"])
    with pytest.raises(ValueError, match="extent"):
        full.set_options(options)
    # The shapes a flat view stands for.
    flat = gs._core.TensorSet([p.reshape(-1)], ok, ["row_var", "col_var", "variance"], options, [(4, 3)])
    flat.set_options(options)
    flat.set_lr(0.01)
    flat.step([g.reshape(-1)], 1)
    assert np.all(p != 0)
    with pytest.raises(ValueError, match=r"shapes\[0\]"):
        gs._core.TensorSet([p.reshape(-1)], ok, ["row_var", "col_var", "variance"], options, [(4, 4)])


def test_kernel_function_is_the_optimizers_step():
    params, grads = problem(np.float64, steps=2)
    got, opt = run_gradstep(dict(lr=0.01, weight_decay=0.05), params, grads[:1])
    ps = [p.copy() for p in params]
    states = {n: [np.zeros(a.shape) for a in arrays] for n, arrays in opt.state.items()}
    for i in range(len(ps)):
        vector = ps[i].ndim < 2
        gs.kernels.adafactor_step(ps[i], grads[0][i], None if vector else states["row_var"][i],
                                  None if vector else states["col_var"][i],
                                  states["variance"][i] if vector else None, lr=0.01, step=1, weight_decay=0.05)
    assert [p.tobytes() for p in ps] == [p.tobytes() for p in got]


TORCH_OPTIONS = [dict(lr=0.01), dict(lr=0.1, beta2_decay=-0.5, eps=(1e-20, 1e-2), d=2.0, weight_decay=0.05),
                 dict(lr=0.01, weight_decay=0.01, maximize=True)]


def _torch_problem(dtype, steps, seed=0):
    params, grads = problem(np.float64, steps=steps, seed=seed)
    ts = [torch.tensor(p, dtype=dtype) for p in params]
    gr = [[torch.tensor(g, dtype=dtype) for g in step] for step in grads]
    return ts, gr


def _stepped(cls, ts, gr, opts, start_state=None, steps=None):
    params = [t.clone().requires_grad_() for t in ts]
    opt = cls(params, foreach=False, **opts)  # gradstep.torch's takes (and ignores) foreach as torch's
    if start_state is not None:
        opt.load_state_dict(copy.deepcopy(start_state))
    for g in gr if steps is None else gr[:steps]:
        for p, gk in zip(params, g):
            p.grad = gk.clone()
        opt.step()
    return params, opt


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("opts", TORCH_OPTIONS, ids=[_id(o) for o in TORCH_OPTIONS])
def test_torch_adapter_matches_torch(opts, dtype):
    ts, gr = _torch_problem(dtype, 50)
    mine, opt = _stepped(gst.Adafactor, ts, gr, opts)
    theirs, topt = _stepped(torch.optim.Adafactor, ts, gr, opts)
    assert isinstance(opt, torch.optim.Adafactor)
    tol = dict(rtol=1e-10, atol=1e-300) if dtype == torch.float64 else dict(rtol=2e-4, atol=1e-6)
    for a, b in zip(mine, theirs):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), **tol)
    sd, tsd = opt.state_dict(), topt.state_dict()
    # torch's keys, and gradstep.torch's half-precision options (test_torch_half.py)
    assert [{k: v for k, v in g.items() if k not in gst._HALF_OPTIONS} for g in sd["param_groups"]] == \
        tsd["param_groups"]
    for i in tsd["state"]:
        assert sorted(sd["state"][i]) == sorted(tsd["state"][i])
        for key, value in tsd["state"][i].items():
            assert sd["state"][i][key].shape == value.shape and sd["state"][i][key].dtype == value.dtype
            np.testing.assert_allclose(sd["state"][i][key].numpy(), value.numpy(), **tol)


@pytest.mark.parametrize("opts", TORCH_OPTIONS[1:], ids=[_id(o) for o in TORCH_OPTIONS[1:]])
def test_torch_state_dicts_move_both_ways(opts):
    ts, gr = _torch_problem(torch.float64, 40, seed=1)
    # 20 steps in torch, then 20 in gradstep from torch's state_dict (and params).
    half, topt = _stepped(torch.optim.Adafactor, ts, gr, opts, steps=20)
    rest = gr[20:]
    a, _ = _stepped(gst.Adafactor, [p.detach() for p in half], rest, opts, topt.state_dict())
    b, _ = _stepped(torch.optim.Adafactor, [p.detach() for p in half], rest, opts, topt.state_dict())
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.detach().numpy(), y.detach().numpy(), rtol=1e-10, atol=1e-300)
    # 20 steps in gradstep, then 20 in torch from gradstep's state_dict.
    half, gopt = _stepped(gst.Adafactor, ts, gr, opts, steps=20)
    c, _ = _stepped(torch.optim.Adafactor, [p.detach() for p in half], rest, opts, gopt.state_dict())
    d, _ = _stepped(gst.Adafactor, [p.detach() for p in half], rest, opts, gopt.state_dict())
    for x, y in zip(c, d):
        np.testing.assert_allclose(x.detach().numpy(), y.detach().numpy(), rtol=1e-10, atol=1e-300)
    for x, y in zip(c, a):  # and the two routes agree
        np.testing.assert_allclose(x.detach().numpy(), y.detach().numpy(), rtol=1e-9, atol=1e-300)


def test_torch_adapter_refuses_a_wrong_row_var_and_changes_nothing():
    ts, gr = _torch_problem(torch.float64, 2)
    params, opt = _stepped(gst.Adafactor, ts, gr, dict(lr=0.01), steps=1)
    before = [p.detach().clone() for p in params]
    opt.state[params[3]]["row_var"] = torch.zeros(12, 1, dtype=torch.float64)
    for p, g in zip(params, gr[1]):
        p.grad = g.clone()
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[3\]: state 'row_var' shape"):
        opt.step()
    assert all(torch.equal(a, b.detach()) for a, b in zip(before, params))
    assert float(opt.state[params[0]]["step"]) == 1.0


def test_torch_adapter_steps_other_layouts_by_their_logical_rows_and_columns():
    rng = np.random.default_rng(5)
    base = torch.tensor(rng.standard_normal((6, 4)))
    grads = [torch.tensor(rng.standard_normal((4, 6))) for _ in range(5)]
    w = base.clone().t().requires_grad_()  # a transposed view: rows are strided in memory
    ref = base.clone().t().contiguous().requires_grad_()
    opt, topt = gst.Adafactor([w], weight_decay=0.1), torch.optim.Adafactor([ref], weight_decay=0.1, foreach=False)
    for g in grads:
        w.grad, ref.grad = g.clone(), g.clone()
        opt.step()
        topt.step()
    assert w.stride() == (1, 4)
    np.testing.assert_allclose(w.detach().numpy(), ref.detach().numpy(), rtol=1e-10, atol=1e-300)
    for key in ("row_var", "col_var"):
        np.testing.assert_allclose(opt.state[w][key].numpy(), topt.state[ref][key].numpy(), rtol=1e-10)


def test_torch_adapter_refuses_a_flat_parameter():
    from gradstep._torch_flat import flatten_parameters

    model = torch.nn.Linear(4, 3).double()
    flats = flatten_parameters(model)
    opt = gst.Adafactor(flats)
    model(torch.ones(2, 4, dtype=torch.float64)).sum().backward()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="FlatParameter"):
        opt.step()
    assert all(torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))
