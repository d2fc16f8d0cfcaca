"""bfloat16 and float16 params in gs.X (issue 13): per-step accuracy against float64
references of the reference implementations' equations (torch.optim, lion_pytorch and the
learning-rate-free packages), float32 states and master weights against float32 runs,
stochastic rounding's stagnation test, bit identity across ISA targets and thread counts,
exact resume, float32 params with half grads, safeguards, and bad input changing nothing."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
import torch

import gradstep as gs
from gradstep import checkpoint
from gradstep.bench.spec import import_reference

from conftest import CASES, case_id, reference_optimizer

BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
HALVES = {"bfloat16": BF16, "float16": F16}
# 9001 elements: two chunks (8192) and a tail, so the staging is seen across chunks;
# (3, 4, 33): Adafactor's batched factored moments; (90, 130): a matrix over two chunks, whose
# rows and columns Adafactor reads across them.
SHAPES = [(7,), (13, 5), (9001,), (3, 4, 33), (90, 130), (1,)]
# The learning-rate-free and package optimizers at their defaults (their option grids are
# covered in float32/float64 by their own test files; the half path is the same for all).
PACKAGE_CASES = [("Prodigy", 1.0, {}), ("DAdaptAdam", 1.0, {}), ("DAdaptSGD", 1.0, {}),
                 ("Lamb", 1e-2, {}), ("Lion", 1e-3, {})]


def ordered(a: np.ndarray) -> np.ndarray:
    """The bits of a bfloat16/float16 array as integers in the order of the values (-0 == +0),
    so that neighbours differ by 1."""
    bits = a.view(np.uint16).astype(np.int64)
    return np.where(bits & 0x8000, -(bits & 0x7FFF), bits)


def problem(dtype, seed=0, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes], rng


def torch_reference(name, lr, opts, params):
    """The reference optimizer (tests/conftest.py: torch.optim's single-tensor path, or the
    declared package class) over torch tensors of `params` (their dtype)."""
    tensors = [torch.tensor(p) for p in params]
    if name == "Lamb":  # timm's __init__ needs torchvision, which the CPU torch here lacks
        return tensors, import_reference("timm.optim.lamb", "Lamb")(tensors, lr=lr, **opts)
    return tensors, reference_optimizer(name, tensors, lr=lr, **opts)


def per_step_mismatch(name, lr, opts, half, steps=8, **precision):
    """gs.<name> on half params (float32 states) against the reference in float64 taken
    from gradstep's own half params at every step (its float64 states run on their own):
    the fraction of element-steps whose rounded result differs, and the largest difference
    in ulps among the elements whose float64 result is not within float32's error of the
    values it came from (an update that cancels the param, p - lr*g = 2e-18 in float64 and
    0 in float32, is thousands of bfloat16 ulps from 0: a legitimate difference)."""
    params, rng = problem(half)
    ours = getattr(gs, name)(params, lr=lr, **opts, **precision)
    tensors, ref = torch_reference(name, lr, opts, [p.astype(np.float64) for p in params])
    differ = total = worst = 0
    for _ in range(steps):
        grads = [rng.standard_normal(p.shape).astype(half) for p in params]
        starts = [p.astype(np.float64) for p in params]
        with torch.no_grad():
            for t, p in zip(tensors, starts):
                t.copy_(torch.from_numpy(p))
        for t, g in zip(tensors, grads):
            t.grad = torch.from_numpy(g.astype(np.float64))
        ref.step()
        ours.step(grads)
        for t, p, before in zip(tensors, params, starts):
            exact = t.detach().numpy()
            expected = exact.astype(half)  # round to nearest even (ml_dtypes / numpy)
            gap = np.abs(ordered(expected) - ordered(p))
            differ += int(np.count_nonzero(gap))
            total += gap.size
            cancelled = np.abs(p.astype(np.float64) - exact) <= 2.0**-20 * (np.abs(before) + np.abs(exact - before))
            worst = max(worst, int(np.where(cancelled, 0, gap).max()))
    return differ / total, worst


# Adamax with eps=0 and L2 decay divides by |g + wd * p|, which cancels to exactly 0 in
# float32 for some coarse float16 grads (0/0 = NaN there, in torch's float32 too; float64
# keeps 2e-18): a degenerate setting, left to the float32/float64 tests.
PER_STEP_CASES = [c for c in CASES + PACKAGE_CASES
                  if not (c[0] == "Adamax" and c[2]["eps"] == 0.0 and c[2]["weight_decay"] != 0.0)]


@pytest.mark.parametrize("half", ["bfloat16", "float16"])
@pytest.mark.parametrize("case", PER_STEP_CASES, ids=case_id)
def test_each_step_is_the_rounded_float32_update(case, half):
    name, lr, opts = case
    fraction, worst = per_step_mismatch(name, lr, opts, HALVES[half])
    assert worst <= 1
    assert fraction < 1e-3


def test_a_param_that_moves_is_checked_at_all():
    # The comparison above would pass for an optimizer that never moved a param only if
    # the reference did not move either: here the updates are many ulps.
    params, rng = problem(BF16, shapes=[(1000,)])
    before = params[0].copy()
    gs.SGD(params, lr=0.5).step([np.ones(1000, BF16)])
    assert np.all(params[0].astype(np.float32) < before.astype(np.float32))


@pytest.mark.parametrize("name,lr,opts", [("Adam", 1e-2, dict(amsgrad=True, weight_decay=0.1)),
                                          ("AdamW", 1e-2, {}), ("SGD", 0.1, dict(momentum=0.9, nesterov=True)),
                                          ("Adafactor", 1e-2, {}), ("Prodigy", 1.0, {})])
def test_master_weights_follow_a_float32_run(name, lr, opts):
    """The master is a float32 trajectory of the reference's equations over the same
    (widened) grads: no further from the reference's float64 run than the reference's own
    float32 run is (twice its error, for the different order of float32 operations); the
    half param is the master rounded to nearest after every step."""
    params, rng = problem(BF16)
    ours = getattr(gs, name)(params, lr=lr, **opts, master_weights=True)
    tensors32, ref32 = torch_reference(name, lr, opts, [p.astype(np.float32) for p in params])
    tensors64, ref64 = torch_reference(name, lr, opts, [p.astype(np.float64) for p in params])
    for _ in range(20):
        grads = [rng.standard_normal(p.shape).astype(BF16) for p in params]
        for t32, t64, g in zip(tensors32, tensors64, grads):
            t32.grad = torch.from_numpy(g.astype(np.float32))
            t64.grad = torch.from_numpy(g.astype(np.float64))
        ref32.step()
        ref64.step()
        ours.step(grads)
        for p, m in zip(params, ours.state["master_param"]):
            assert p.view(np.uint16).tobytes() == m.astype(BF16).view(np.uint16).tobytes()
    for m, t32, t64 in zip(ours.state["master_param"], tensors32, tensors64):
        truth = t64.detach().numpy()
        theirs = np.abs(t32.detach().numpy() - truth).max()
        assert np.abs(m - truth).max() <= 2 * theirs + 1e-6


def test_float32_states_are_the_float32_computation():
    """Adam's float32 moments of a bfloat16 param equal torch's float32 moments of the widened
    grads (the same arithmetic)."""
    params, rng = problem(BF16, shapes=[(9001,)])
    ours = gs.Adam(params, lr=1e-2)
    t = torch.tensor(params[0].astype(np.float32))
    ref = torch.optim.Adam([t], lr=1e-2, foreach=False)
    for _ in range(5):
        g = rng.standard_normal(9001).astype(BF16)
        with torch.no_grad():
            t.copy_(torch.from_numpy(params[0].astype(np.float32)))
        t.grad = torch.from_numpy(g.astype(np.float32))
        ref.step()
        ours.step([g])
    # m sums terms of both signs: its float32 error is relative to the terms (~0.1), not to m
    np.testing.assert_allclose(ours.state["exp_avg"][0], ref.state[t]["exp_avg"].numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ours.state["exp_avg_sq"][0], ref.state[t]["exp_avg_sq"].numpy(), rtol=1e-6,
                               atol=1e-12)


@pytest.mark.parametrize("half", ["bfloat16", "float16"])
def test_state_dtype_param_keeps_states_in_the_params_dtype(half):
    """torch's layout: states of the param's dtype, each the float32 result rounded to nearest."""
    dtype = HALVES[half]
    params, rng = problem(dtype, shapes=[(9001,)])
    ours = gs.Adam(params, lr=1e-2, state_dtype="param")
    assert all(a.dtype == dtype for arrays in ours.state.values() for a in arrays)
    p0 = params[0].astype(np.float32)
    g = rng.standard_normal(9001).astype(dtype)
    ours.step([g])
    g32 = g.astype(np.float32)
    m = (np.float32(0.1) * g32).astype(dtype)  # torch's lerp from zero: 0 + 0.1 * g
    v = (np.float32(1 - 0.999) * g32 * g32).astype(dtype)
    assert ours.state["exp_avg"][0].tobytes() == m.tobytes()
    assert ours.state["exp_avg_sq"][0].tobytes() == v.tobytes()
    assert not np.array_equal(params[0].astype(np.float32), p0)


def test_stochastic_rounding_moves_a_weight_that_nearest_rounding_leaves():
    """Updates of a quarter ulp (bfloat16 at 1.0: ulp 2^-7, the update 2^-9): nearest
    rounding never moves the weight; stochastic rounding moves it by the update on average."""
    n, steps = 100_000, 8
    grads = [np.full(n, -1.0, BF16)]
    near = [np.ones(n, BF16)]
    stoch = [np.ones(n, BF16)]
    a = gs.SGD(near, lr=2.0**-9)
    b = gs.SGD(stoch, lr=2.0**-9, rounding="stochastic", seed=7)
    for _ in range(steps):
        a.step(grads)
        b.step(grads)
    assert np.all(near[0].astype(np.float64) == 1.0)
    moved = stoch[0].astype(np.float64) - 1.0
    expected = steps * 2.0**-9
    # Each step moves an element by 2^-7 with probability 1/4, independently.
    sd = math.sqrt(steps * (2.0**-7) ** 2 * (1 / 4) * (3 / 4) / n)
    assert abs(moved.mean() - expected) < 5 * sd
    assert set(np.unique(moved / 2.0**-7)) <= set(range(steps + 1))


def test_stochastic_rounding_is_unbiased_for_float16_too():
    n = 100_000
    p = [np.full(n, 1.0, F16)]  # float16 ulp at 1.0: 2^-10; update 2^-12
    opt = gs.SGD(p, lr=2.0**-12, rounding="stochastic", seed=1)
    opt.step([np.full(n, -1.0, F16)])
    up = np.count_nonzero(p[0] != 1.0)
    assert abs(up - n / 4) < 5 * math.sqrt(n * 3 / 16)
    assert set(np.unique(p[0].astype(np.float64))) == {1.0, 1.0 + 2.0**-10}


def run_bits(name, lr, opts, half, isa, threads, steps=4, **precision):
    before_isa, before_threads = gs.isa(), gs.get_num_threads()
    gs.set_isa(isa)
    gs.set_num_threads(threads)
    try:
        params, rng = problem(HALVES[half], seed=5, shapes=[(40_000,), (3, 4, 33), (5,)])
        opt = getattr(gs, name)(params, lr=lr, **opts, **precision)
        if name.endswith("ScheduleFree"):
            opt.train()
        for _ in range(steps):
            opt.step([rng.standard_normal(p.shape).astype(p.dtype) for p in params])
        return [p.view(np.uint16).tobytes() for p in params] + [
            a.tobytes() for arrays in opt.state.values() for a in arrays]
    finally:
        gs.set_isa(before_isa)
        gs.set_num_threads(before_threads)


BIT_CASES = [(name, lr) for name, lr in [
    ("SGD", 0.1), ("Adagrad", 0.05), ("Adadelta", 1.0), ("RMSprop", 0.01), ("Adam", 0.01), ("AdamW", 0.01),
    ("Adamax", 0.01), ("RAdam", 0.01), ("NAdam", 0.01), ("Lion", 1e-3), ("Lamb", 1e-2), ("Adafactor", 1e-2),
    ("Prodigy", 1.0), ("DAdaptAdam", 1.0), ("DAdaptSGD", 1.0), ("AdamWScheduleFree", 1e-2),
    ("SGDScheduleFree", 1e-1)]]


def test_every_optimizer_is_in_the_bit_identity_cases():
    assert {name for name, _ in BIT_CASES} == set(gs.optim.OPTIMIZERS)


@pytest.mark.parametrize("precision", [dict(), dict(rounding="stochastic", seed=3),
                                       dict(master_weights=True, rounding="stochastic", seed=3),
                                       dict(state_dtype="param")], ids=["nearest", "stochastic", "master",
                                                                        "param-states"])
@pytest.mark.parametrize("half", ["bfloat16", "float16"])
@pytest.mark.parametrize("name,lr", BIT_CASES)
def test_bit_identical_on_every_target_and_thread_count(name, lr, half, precision):
    if precision.get("state_dtype") == "param" and gs.optim.OPTIMIZERS[name].__gradstep_spec__.reduces:
        precision = dict(rounding="stochastic")  # its states are float32 always (test_reducing_steps_...)
    baseline = run_bits(name, lr, {}, half, "scalar", 1, **precision)
    for isa in gs.available_isas():
        for threads in (1, 2, 3, 4):
            assert run_bits(name, lr, {}, half, isa, threads, **precision) == baseline, (isa, threads)


def test_different_seeds_round_differently():
    a = run_bits("Adam", 0.01, {}, "bfloat16", gs.isa(), 2, rounding="stochastic", seed=1)
    b = run_bits("Adam", 0.01, {}, "bfloat16", gs.isa(), 2, rounding="stochastic", seed=2)
    assert a[0] != b[0]
    assert a[0] == run_bits("Adam", 0.01, {}, "bfloat16", gs.isa(), 2, rounding="stochastic", seed=1)[0]


@pytest.mark.parametrize("name,lr", [("Adam", 1e-2), ("Prodigy", 1.0), ("Lamb", 1e-2), ("Adafactor", 1e-2)])
@pytest.mark.parametrize("precision", [dict(rounding="stochastic", seed=11),
                                       dict(master_weights=True, rounding="stochastic", seed=11),
                                       dict(state_dtype="param")], ids=["stochastic", "master", "param-states"])
def test_resume_is_exact(name, lr, precision, tmp_path):
    """Saved at step 5 (state_dict and checkpoint file), loaded into fresh optimizers, steps
    6..10 are bit-identical to the uninterrupted run: the seed travels with the state."""
    if "state_dtype" in precision and gs.optim.OPTIMIZERS[name].__gradstep_spec__.reduces:
        precision = dict(rounding="stochastic", seed=4)
    params, rng = problem(BF16, seed=2)
    grads = [[rng.standard_normal(p.shape).astype(BF16) for p in params] for _ in range(10)]
    opt = getattr(gs, name)(params, lr=lr, **precision)
    for g in grads[:5]:
        opt.step(g)
    sd = opt.state_dict()
    path = tmp_path / "ckpt.npz"
    checkpoint.save(opt, path)
    resumed_params = [p.copy() for p in params]
    from_file_params = [p.copy() for p in params]
    fresh = getattr(gs, name)(resumed_params, lr=lr, **{**precision, "seed": 0} if "seed" in precision else precision)
    fresh.load_state_dict(sd)
    from_file = checkpoint.load(path, from_file_params)
    for g in grads[5:]:
        opt.step(g)
        fresh.step(g)
        from_file.step(g)
    for a, b, c in zip(params, resumed_params, from_file_params):
        assert a.view(np.uint16).tobytes() == b.view(np.uint16).tobytes() == c.view(np.uint16).tobytes()
    if "seed" in precision:
        assert fresh.seed == from_file.seed == precision["seed"]


@pytest.mark.parametrize("grad_half", ["bfloat16", "float16"])
@pytest.mark.parametrize("name,lr,opts", [("Adam", 1e-2, {}), ("SGD", 0.1, dict(momentum=0.9)),
                                          ("Adafactor", 1e-2, {})])
def test_float32_params_with_half_grads(name, lr, opts, grad_half):
    """ZeRO-Offload's layout: float32 params and states, half grads; equal (to float32
    rounding) to torch's float32 optimizer stepping with the widened grads."""
    params, rng = problem(np.float32)
    ours = getattr(gs, name)(params, lr=lr, **opts, grad_dtype=grad_half)
    tensors, ref = torch_reference(name, lr, opts, [p.copy() for p in params])
    for _ in range(10):
        grads = [rng.standard_normal(p.shape).astype(HALVES[grad_half]) for p in params]
        for t, g in zip(tensors, grads):
            t.grad = torch.from_numpy(g.astype(np.float32))
        ref.step()
        ours.step(grads)
    for p, t in zip(params, tensors):
        np.testing.assert_allclose(p, t.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_bfloat16_params_with_float32_grads():
    params, rng = problem(BF16, shapes=[(9001,)])
    widened = [p.astype(np.float32) for p in params]
    a = gs.Adam(params, lr=1e-2, grad_dtype="float32")
    b = gs.Adam(widened, lr=1e-2)
    for _ in range(3):
        g = rng.standard_normal(9001).astype(np.float32)
        a.step([g])
        b.step([g])
        # the same float32 arithmetic from the same values, then rounded
        assert params[0].view(np.uint16).tobytes() == widened[0].astype(BF16).view(np.uint16).tobytes()
        widened[0][...] = params[0].astype(np.float32)  # each step from the rounded param


def test_raw_uint16_bits_with_an_explicit_dtype():
    bits = np.full(10, 0x3F80, np.uint16)  # bfloat16 1.0
    opt = gs.SGD([bits], lr=0.5, dtype="bfloat16")
    opt.step([np.full(10, 0x3F80, np.uint16)])  # grads as raw bits too
    assert bits.view(BF16).astype(np.float32).tolist() == [0.5] * 10
    with pytest.raises(TypeError, match="dtype='bfloat16'"):
        gs.SGD([np.zeros(3, np.uint16)], lr=0.1)


def test_safeguards_with_half_grads():
    params, rng = problem(BF16, shapes=[(9001,), (5,)])
    grads = [rng.standard_normal(p.shape).astype(BF16) for p in params]
    opt = gs.Adam(params, lr=1e-2, max_grad_norm=1.0, master_weights=True)
    norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads))
    result = opt.step(grads)
    assert result.grad_norm == pytest.approx(norm, rel=1e-12)
    # A non-finite grad with skip_nonfinite: nothing written, not counted.
    opt.skip_nonfinite = True
    before = [p.copy() for p in params] + [a.copy() for arrays in opt.state.values() for a in arrays]
    bad = [g.copy() for g in grads]
    bad[1][2] = np.nan
    result = opt.step(bad)
    assert result.skipped and opt.step_count == 1
    after = list(params) + [a for arrays in opt.state.values() for a in arrays]
    for x, y in zip(before, after):
        assert x.tobytes() == y.tobytes()


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(state_dtype="float16"), ValueError, "state_dtype"),
    (dict(rounding="down"), ValueError, "rounding"),
    (dict(seed=2**64), ValueError, "seed"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(master_weights="yes"), TypeError, "master_weights"),
    (dict(grad_dtype="int8"), ValueError, "grad_dtype"),
    (dict(dtype="float32"), ValueError, "dtype"),
])
def test_bad_precision_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        gs.Adam([np.zeros(4, BF16)], lr=1e-3, **kwargs)


def test_master_weights_need_half_params_and_float64_has_float64_states():
    with pytest.raises(ValueError, match="master_weights"):
        gs.Adam([np.zeros(4, BF16), np.zeros(4, np.float32)], lr=1e-3, master_weights=True)
    with pytest.raises(ValueError, match="state_dtype"):
        gs.Adam([np.zeros(4)], lr=1e-3, state_dtype="float32")


def test_bad_grads_change_nothing():
    """A grad of the wrong dtype or shape in the last tensor: a TypeError/ValueError naming it,
    and no param, state or master changed, the step not counted."""
    params, rng = problem(BF16, shapes=[(9001,), (5,)])
    opt = gs.Adam(params, lr=1e-2, master_weights=True, rounding="stochastic")
    opt.step([rng.standard_normal(p.shape).astype(BF16) for p in params])
    snapshot = [p.copy() for p in params] + [a.copy() for arrays in opt.state.values() for a in arrays]
    for bad, error in [(np.zeros(5, np.float32), TypeError), (np.zeros(5, F16), TypeError),
                       (np.zeros(6, BF16), ValueError)]:
        with pytest.raises(error, match=r"grads\[1\]"):
            opt.step([np.ones(9001, BF16), bad])
    assert opt.step_count == 1
    after = list(params) + [a for arrays in opt.state.values() for a in arrays]
    for x, y in zip(snapshot, after):
        assert x.tobytes() == y.tobytes()


def test_hostile_state_dict_changes_nothing():
    params, rng = problem(BF16, shapes=[(100,)])
    opt = gs.Adam(params, lr=1e-2, master_weights=True, rounding="stochastic", seed=9)
    opt.step([rng.standard_normal(100).astype(BF16)])
    good = opt.state_dict()
    before = params[0].copy()
    for change in [dict(seed=-5), dict(seed="x"), dict(seed=2**64)]:
        with pytest.raises(ValueError, match="seed"):
            opt.load_state_dict({**good, **change})
    wrong_master = {**good, "state": {**good["state"], "master_param": [np.zeros(100, np.float64)]}}
    with pytest.raises(ValueError, match="master_param"):
        opt.load_state_dict(wrong_master)
    other_rounding = {**good, "hyperparameters": {**good["hyperparameters"], "rounding": "nearest"}}
    with pytest.raises(ValueError, match="hyperparameters"):
        opt.load_state_dict(other_rounding)
    assert opt.seed == 9 and opt.step_count == 1
    assert params[0].tobytes() == before.tobytes()


def test_flat_buffers_refuse_half_params_clearly():
    with pytest.raises(TypeError, match="float32 or float64"):
        gs.flatten([np.zeros(3, np.float16)])
    for kwargs in (dict(master_weights=True), dict(grad_dtype="bfloat16")):
        with pytest.raises(ValueError, match="flat buffers"):
            gs.Adam(gs.flatten([np.zeros(3, np.float32)]), lr=1e-3, **kwargs)


def test_kernel_functions_take_half_params_and_grads():
    """gs.kernels: bfloat16 params with float32 states, and float32 params with bfloat16
    grads (their dtype differing from the param's is what says so)."""
    p = np.full(9001, 1.0, BF16)
    m, v = np.zeros(9001, np.float32), np.zeros(9001, np.float32)
    gs.kernels.adam_step(p, np.full(9001, 1.0, BF16), m, v, lr=0.1, step=1)
    # step 1 from zero moments: m = 0.1 g, the update -lr * g / (|g| + eps') = -0.1
    assert np.all(m == np.float32(0.1))
    assert np.all(p == np.array(0.9, np.float32).astype(BF16))
    q = np.ones(9001, np.float32)
    gs.kernels.sgd_step(q, np.full(9001, 0.5, BF16), lr=0.5, step=1)
    assert np.all(q == np.float32(0.75))


@pytest.mark.parametrize("name", ["Prodigy", "DAdaptAdam", "DAdaptSGD", "Lamb", "Adafactor"])
def test_reducing_steps_keep_float32_states(name):
    """An optimizer whose step sums over its states between passes refuses half states (a
    later pass would read them rounded, the sums unrounded), before any buffer is made."""
    assert gs.optim.OPTIMIZERS[name].__gradstep_spec__.reduces
    p = np.ones(10, BF16)
    with pytest.raises(ValueError, match="state_dtype='param'"):
        getattr(gs, name)([p], lr=1e-2, state_dtype="param")
    assert {a.dtype for arrays in getattr(gs, name)([p], lr=1e-2).state.values() for a in arrays} == {
        np.dtype(np.float32)}
    assert not gs.optim.OPTIMIZERS["Adam"].__gradstep_spec__.reduces
