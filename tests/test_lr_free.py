"""Prodigy, DAdaptAdam and DAdaptSGD against their reference packages (prodigyopt 1.1.2,
dadaptation 3.2): every combination of their flags in float64 over several tensors whose
reductions span the whole set, float32 accuracy, bit identity across ISA targets and
thread counts, exact resume from checkpoints (carried values included), and bad input
that raises and changes nothing."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from dadaptation import DAdaptAdam, DAdaptSGD
from prodigyopt import Prodigy

import gradstep as gs

from float32_accuracy import errors, rms

SHAPES = [(), (1,), (5,), (3, 4), (2, 3, 7)]
REFERENCES = {"Prodigy": Prodigy, "DAdaptAdam": DAdaptAdam, "DAdaptSGD": DAdaptSGD}
# The d estimate's own settings, as published and as tuned (lr is their multiplier).
SETTINGS = [dict(lr=1.0), dict(lr=0.5, d0=1e-4, growth_rate=1.05)]


def grid(**axes):
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


CASES = (
    [("Prodigy", {**s, **o}) for s in SETTINGS + [dict(lr=1.0, d_coef=2.0)]
     for o in grid(betas=[(0.9, 0.999), (0.0, 0.99)], beta3=[None, 0.9], weight_decay=[0.0, 0.1],
                   decouple=[True, False], use_bias_correction=[False, True], safeguard_warmup=[False, True],
                   maximize=[False, True])]
    # s and p0 over every slice_p-th element of each param (prodigyopt: p.flatten()[::slice_p]).
    + [("Prodigy", {**s, **o}) for s in SETTINGS
       for o in grid(slice_p=[2, 11], betas=[(0.9, 0.999), (0.0, 0.99)], weight_decay=[0.0, 0.1],
                     decouple=[True, False], safeguard_warmup=[False, True], maximize=[False, True])]
    + [("DAdaptAdam", {**s, **o}) for s in SETTINGS
       for o in grid(betas=[(0.9, 0.999), (0.5, 0.9)], weight_decay=[0.0, 0.1], decouple=[False, True],
                     use_bias_correction=[False, True], maximize=[False, True])]
    + [("DAdaptSGD", {**s, **o}) for s in SETTINGS
       for o in grid(momentum=[0.0, 0.9], weight_decay=[0.0, 0.01], maximize=[False, True])]
)


def case_id(case):
    name, opts = case
    return name + "[" + ",".join(f"{k}={v}" for k, v in opts.items()) + "]"


def problem(seed=0, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return ([rng.standard_normal(s) for s in shapes], [rng.standard_normal(s) for s in shapes], rng)


def gradients(params, targets, rng, k, zero_first):
    """A noisy quadratic's gradients (d has a distance to adapt to); the first steps all zero
    when asked (the references then update their averages but neither d nor k)."""
    if zero_first and k < 2:
        return [np.zeros_like(p) for p in params]
    return [np.asarray((p - t) * (1 + i) + 0.1 * rng.standard_normal(p.shape))
            for i, (p, t) in enumerate(zip(params, targets))]


def reference_run(name, opts, steps, dtype=np.float64, zero_first=True, gs_dtype=None):
    """gs.<name> (in gs_dtype, default dtype) and the reference (in dtype) over the same gradients, taken
    at gradstep's params; returns both optimizers and both param lists (float64)."""
    params, targets, rng = problem()
    params[2] = np.zeros_like(params[2])  # prodigyopt keeps an all-zero param's p0 as a scalar 0
    mine = [p.astype(gs_dtype or dtype) for p in params]
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    theirs = [torch.tensor(p, dtype=tdtype) for p in params]
    ref_opts = {k: v for k, v in opts.items() if k != "maximize"}
    ours = getattr(gs, name)(mine, **opts)
    ref = REFERENCES[name](theirs, **ref_opts)
    sign = -1.0 if opts.get("maximize") else 1.0
    for k in range(steps):
        grads = gradients([p.astype(np.float64) for p in mine], targets, rng, k, zero_first)
        ours.step([(sign * g).astype(p.dtype) for g, p in zip(grads, mine)])
        for t, g in zip(theirs, grads):
            t.grad = torch.tensor(g, dtype=tdtype)  # a fresh tensor: the reference adds L2 decay to it in place
        ref.step()
    return ours, ref, [p.astype(np.float64) for p in mine], [t.numpy().astype(np.float64) for t in theirs]


def reference_state(name, ref, theirs, shapes=None):
    """The reference's states under gradstep's names and shapes (shapes: gradstep's, by name,
    for states not of the param's shape: Prodigy's s and p0 with slice_p > 1)."""
    out = {}
    for i, t in enumerate(ref.param_groups[0]["params"]):
        st = ref.state[t]
        for key, value in st.items():
            if key == "step" or not torch.is_tensor(value):
                continue
            value = value.numpy().astype(np.float64)
            shape = shapes[key][i] if shapes and key in shapes else theirs[i].shape
            if key == "p0" and value.ndim == 0:  # prodigyopt keeps an all-zero param's p0 as one 0
                value = np.zeros(shape)
            out.setdefault(key, []).append(value.reshape(shape))
    return out


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_reference_float64(case):
    name, opts = case
    # DAdaptSGD's reference divides by a zero first gradient: it starts from a real one.
    zero_first = name != "DAdaptSGD"
    ours, ref, mine, theirs = reference_run(name, opts, 60, zero_first=zero_first)
    for a, b in zip(mine, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=0)
    group = ref.param_groups[0]
    for key, value in ours.carried().items():
        assert value == pytest.approx(float(group[key]), rel=1e-10, abs=1e-300), key
    expected = reference_state(name, ref, theirs, {k: [a.shape for a in v] for k, v in ours.state.items()})
    if opts.get("slice_p", 1) > 1:
        n = opts["slice_p"]
        assert [a.shape for a in ours.state["s"]] == [(-(-max(1, a.size) // n),) for a in theirs]
    if name == "DAdaptSGD":
        for z, x0, s in zip(expected.pop("z"), expected["x0"], expected["s"]):
            np.testing.assert_allclose(z, x0 - s, rtol=1e-12, atol=1e-300)  # z is derived, not stored
    assert set(expected) == set(ours.state)
    for key, arrays in expected.items():
        for a, b in zip(ours.state[key], arrays):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-300, err_msg=key)
    if zero_first:
        assert ours.carried()["k"] == group["k"]
        if opts["weight_decay"] == 0.0:
            assert group["k"] == 58  # the two zero steps did not count
    d = ours.carried()["d"]
    assert d > opts.get("d0", 1e-6)  # d adapted: the comparison covers its updates


FLOAT32_FACTOR = 1.35
FLOAT32_MAX_FACTOR = 2.5
ACCURACY_CASES = [c for c in CASES if c[1]["lr"] == 1.0 and not c[1]["maximize"]
                  and c[1].get("d_coef", 1.0) == 1.0 and c[1].get("beta3") is None]


@pytest.mark.parametrize("case", ACCURACY_CASES, ids=case_id)
def test_float32_no_further_from_the_truth_than_the_reference(case):
    name, opts = case
    zero_first = name != "DAdaptSGD"
    _, _, truth, _ = reference_run(name, opts, 50, zero_first=zero_first)
    # Same gradients for all three runs: those of the float64 run at its params.
    params, targets, rng = problem()
    grads = []
    walk = [p.copy() for p in params]
    opt = getattr(gs, name)(walk, **opts)
    for k in range(50):
        g = gradients(walk, targets, rng, k, zero_first)
        grads.append(g)
        opt.step(g)
    truth = walk

    def run(make, dtype):
        ps = [p.astype(dtype) for p in params]
        stepper = make(ps)
        for g in grads:
            stepper([x.astype(dtype) for x in g])
        return ps

    def ours(ps):
        o = getattr(gs, name)(ps, **opts)
        return o.step

    def theirs(ps):
        ts = [torch.from_numpy(p) for p in ps]  # shares memory with ps
        r = REFERENCES[name](ts, **{k: v for k, v in opts.items() if k != "maximize"})

        def step(g):
            for t, x in zip(ts, g):
                t.grad = torch.from_numpy(x)
            r.step()
        return step

    # Both round every stored value to float32, in different places (gradstep reduces in
    # double, torch fuses its adds): case by case either comes out ahead in RMS, by up to
    # ~1.25x on this matrix; the largest error, a few elements' accumulated roundings
    # (a few ulps), by up to 2.1x either way.
    mine, ref = errors(run(ours, np.float32), truth), errors(run(theirs, np.float32), truth)
    assert rms(mine) <= FLOAT32_FACTOR * rms(ref), (rms(mine), rms(ref))
    assert np.max(np.abs(mine)) <= FLOAT32_MAX_FACTOR * np.max(np.abs(ref)), (np.max(np.abs(mine)), np.max(np.abs(ref)))


# Large enough that each pass is shared between threads (parallel_min 2^14 and 2^15
# elements) and the reductions span many 8192-element chunks, with odd tails.
BIG_SHAPES = [(40_001,), (3,), (129, 257), (8_193,)]
BIG_CASES = [
    ("Prodigy", dict(weight_decay=0.1, decouple=False, use_bias_correction=True)),
    ("Prodigy", dict(betas=(0.0, 0.99), weight_decay=0.1, safeguard_warmup=True, growth_rate=1.1, maximize=True)),
    ("Prodigy", dict(slice_p=11, weight_decay=0.1)),  # the sliced sums: chunks do not start on a slice
    ("DAdaptAdam", dict(weight_decay=0.1, decouple=True, use_bias_correction=True)),
    ("DAdaptAdam", dict(weight_decay=0.1, maximize=True)),
    ("DAdaptSGD", dict(momentum=0.9, weight_decay=0.01)),
    ("DAdaptSGD", dict(maximize=True)),
]


def big_run(name, opts, dtype, steps=6):
    params, targets, rng = problem(1, BIG_SHAPES)
    params = [p.astype(dtype) for p in params]
    opt = getattr(gs, name)(params, **opts)
    for k in range(steps):
        opt.step([g.astype(dtype) for g in gradients(params, targets, rng, k, False)])
    return [p.tobytes() for p in params], {k: [a.tobytes() for a in v] for k, v in opt.state.items()}, opt.carried()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", BIG_CASES, ids=case_id)
def test_bit_identical_on_every_target_and_thread_count(case, dtype):
    before_isa, before_threads = gs.isa(), gs.get_num_threads()
    try:
        gs.set_isa("scalar")
        gs.set_num_threads(1)
        baseline = big_run(*case, dtype)
        for isa in gs.available_isas():
            gs.set_isa(isa)
            for threads in (1, 2, 3, 4):
                gs.set_num_threads(threads)
                assert big_run(*case, dtype) == baseline, (isa, threads)
    finally:
        gs.set_isa(before_isa)
        gs.set_num_threads(before_threads)


@pytest.mark.parametrize("case", [c for c in BIG_CASES], ids=case_id)
def test_resume_from_state_dict_and_checkpoint_is_exact(case, tmp_path):
    name, opts = case
    params, targets, rng = problem(2)
    grads = [gradients(params, targets, rng, k, name != "DAdaptSGD") for k in range(20)]
    straight = [p.copy() for p in params]
    opt = getattr(gs, name)(straight, **opts)
    for g in grads[:10]:
        opt.step(g)
    sd = opt.state_dict()
    gs.save(opt, tmp_path / "mid.gsckpt")
    assert sd["carried"] == opt.carried() and set(sd["carried"]) == {f.name for f in opt.__gradstep_spec__.carried}
    middle = [p.copy() for p in straight]
    for g in grads[10:]:
        opt.step(g)

    resumed = [p.copy() for p in middle]
    other = getattr(gs, name)(resumed, **opts)  # fresh: its carried values start over
    other.load_state_dict(sd)
    assert other.carried() == sd["carried"] and other.step_count == 10
    loaded_params = [p.copy() for p in middle]
    loaded = gs.load(tmp_path / "mid.gsckpt", loaded_params)
    assert type(loaded) is type(opt) and loaded.carried() == sd["carried"]
    assert loaded.hyperparameters() == opt.hyperparameters()
    for g in grads[10:]:
        other.step(g)
        loaded.step(g)
    for a, b, c in zip(straight, resumed, loaded_params):
        assert a.tobytes() == b.tobytes() == c.tobytes()
    assert other.carried() == loaded.carried() == opt.carried()


def test_kernel_functions_take_and_return_the_carried_values():
    params, targets, rng = problem(3)
    via_class = [p.copy() for p in params]
    opt = gs.Prodigy(via_class, weight_decay=0.1)
    p = np.concatenate([x.ravel() for x in params])
    s, p0, v, m = np.zeros_like(p), p.copy(), np.zeros_like(p), np.zeros_like(p)
    carried = dict(d=1e-6, d_max=1e-6, d_numerator=0.0, k=0.0)
    for k in range(5):
        g = gradients(via_class, targets, rng, k, False)
        opt.step(g)
        carried = gs.kernels.prodigy_step(p, np.concatenate([x.ravel() for x in g]), s, p0, v, m,
                                          step=k + 1, weight_decay=0.1, **carried)
    assert carried.keys() == opt.carried().keys()
    for key in carried:  # one tensor against five: the sums differ in rounding only
        assert carried[key] == pytest.approx(opt.carried()[key], rel=1e-12)
    np.testing.assert_allclose(p, np.concatenate([x.ravel() for x in via_class]), rtol=1e-12)
    # Hostile carried values given to the kernel function raise, naming them, and write nothing.
    before = [a.copy() for a in (p, s, p0, v, m)]
    for key, value in [("d", -1.0), ("k", 0.5), ("d_numerator", math.nan), ("d_max", math.inf)]:
        with pytest.raises(ValueError, match=key):
            gs.kernels.prodigy_step(p, np.ones_like(p), s, p0, v, m, step=6, **{**carried, key: value})
    for a, b in zip((p, s, p0, v, m), before):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("name", list(REFERENCES))
def test_lr_zero_and_zero_gradients(name):
    params, targets, rng = problem(4)
    opt = getattr(gs, name)(params, lr=0.0)
    before = [p.copy() for p in params], {k: [a.copy() for a in v] for k, v in opt.state.items()}, opt.carried()
    opt.step(gradients(params, targets, rng, 5, False))  # lr = 0: the reference leaves everything as it was
    assert [p.tobytes() for p in params] == [p.tobytes() for p in before[0]]
    assert {k: [a.tobytes() for a in v] for k, v in opt.state.items()} == {
        k: [a.tobytes() for a in v] for k, v in before[1].items()}
    assert opt.carried() == before[2]
    if name == "DAdaptSGD":  # a zero first gradient: no g0_norm, nothing moves (the reference divides by 0)
        opt.lr = 1.0
        opt.step([np.zeros_like(p) for p in params])
        assert opt.carried() == before[2]
        assert [p.tobytes() for p in params] == [p.tobytes() for p in before[0]]


# ---- bad input ------------------------------------------------------------------------

BAD_ARGUMENTS = {
    "Prodigy": [("lr", -1.0), ("lr", math.nan), ("eps", 0.0), ("d0", 0.0), ("d0", math.inf), ("d_coef", -1.0),
                ("growth_rate", 0.0), ("growth_rate", math.nan), ("beta3", 1.5), ("beta3", math.nan),
                ("betas", (1.0, 0.999)), ("slice_p", 0), ("slice_p", 2.5), ("slice_p", -1.0), ("fsdp_in_use", True), ("weight_decay", -0.1)],
    "DAdaptAdam": [("lr", math.nan), ("eps", 0.0), ("d0", -1.0), ("growth_rate", -1.0), ("log_every", 0.5),
                   ("betas", (0.9, 1.0)), ("fsdp_in_use", True)],
    "DAdaptSGD": [("lr", math.inf), ("momentum", 1.0), ("d0", 0.0), ("growth_rate", 0.0), ("weight_decay", math.nan),
                  ("fsdp_in_use", True)],
}


@pytest.mark.parametrize("name,arg,value", [(n, a, v) for n, bad in BAD_ARGUMENTS.items() for a, v in bad])
def test_bad_arguments_raise_naming_them(name, arg, value):
    params, _, _ = problem()
    with pytest.raises(ValueError, match=arg.rstrip("s") if arg == "betas" else arg):
        getattr(gs, name)(params, **{arg: value})


def stepped(name, steps=4):
    params, targets, rng = problem(5)
    opt = getattr(gs, name)(params)
    for k in range(steps):
        opt.step(gradients(params, targets, rng, k, False))
    return opt, targets, rng


def snapshot(opt):
    return ([p.tobytes() for p in opt.params], {k: [a.tobytes() for a in v] for k, v in opt.state.items()},
            opt.step_count, opt.carried(), opt.lr)


HOSTILE_CARRIED = [("d", -1.0), ("d", 0.0), ("d", math.nan), ("d", math.inf), ("k", 1.5), ("k", -1.0),
                   ("d_max", math.nan), ("d_numerator", math.inf), ("numerator_weighted", math.nan),
                   ("g0_norm", -1.0), ("d", "1.0"), ("d", True)]


@pytest.mark.parametrize("name", list(REFERENCES))
def test_hostile_carried_values_raise_and_change_nothing(name):
    opt, _, _ = stepped(name)
    good = opt.state_dict()
    names = set(good["carried"])
    cases = [(k, v) for k, v in HOSTILE_CARRIED if k in names]
    assert len(cases) >= 4
    before = snapshot(opt)
    for key, value in cases:
        sd = opt.state_dict()
        sd["carried"] = {**good["carried"], key: value}
        with pytest.raises(ValueError, match=key):
            opt.load_state_dict(sd)
        assert snapshot(opt) == before
    for carried in [None, {}, {k: 1.0 for k in list(names)[1:]}, {**good["carried"], "extra": 1.0}, [1.0]]:
        sd = opt.state_dict()
        sd["carried"] = carried
        with pytest.raises(ValueError, match="carried"):
            opt.load_state_dict(sd)
        assert snapshot(opt) == before
    # The carried values are checked with the rest before anything is written.
    sd = opt.state_dict()
    sd["carried"] = {**good["carried"], "d": -1.0}
    sd["step"] = 99
    with pytest.raises(ValueError, match="d"):
        opt.load_state_dict(sd)
    assert snapshot(opt) == before


@pytest.mark.parametrize("name", list(REFERENCES))
def test_bad_lr_and_bad_grads_change_nothing(name):
    opt, targets, rng = stepped(name)
    before = snapshot(opt)
    for bad in (math.nan, -1.0, math.inf):
        with pytest.raises(ValueError, match="lr"):
            opt.lr = bad
        assert snapshot(opt) == before
    grads = gradients(opt.params, targets, rng, 9, False)
    grads[3] = np.ones(grads[3].size + 1)
    with pytest.raises(ValueError):
        opt.step(grads)
    assert snapshot(opt) == before


@pytest.mark.parametrize("name", list(REFERENCES))
def test_nonfinite_gradient_is_skipped_with_the_carried_values(name):
    params, targets, rng = problem(6)
    opt = getattr(gs, name)(params, skip_nonfinite=True, max_grad_norm=10.0)
    for k in range(3):
        opt.step(gradients(params, targets, rng, k, False))
    before = snapshot(opt)
    grads = gradients(params, targets, rng, 3, False)
    grads[4][1, 2, 3] = np.nan
    result = opt.step(grads)
    assert result.skipped and snapshot(opt) == before


def test_recommended_range_says_lr_is_a_multiplier():
    for name in REFERENCES:
        r = gs.recommended_range(name)
        assert r.low <= 1.0 <= r.high and "multiplier" in r.source


@pytest.mark.parametrize("case", BIG_CASES, ids=case_id)
def test_flat_buffers_step_the_same_math_and_keep_the_padding_zero(case):
    # One contiguous vector instead of five tensors: the sums are added in another order
    # (not the same bits), the padding between views holds zero params, grads and states.
    name, opts = case
    params, targets, rng = problem(7)
    separate = [p.copy() for p in params]
    flat = gs.flatten([p.copy() for p in params])
    a = getattr(gs, name)(separate, **opts)
    b = getattr(gs, name)(flat, **opts)
    key = "p0" if name == "Prodigy" else "s"
    assert b.state[key][0].shape == a.state[key][0].shape  # the param's, or its slice's (slice_p > 1)
    for k in range(20):
        grads = gradients(separate, targets, rng, k, False)
        a.step(grads)
        b.step(grads)
    for x, y in zip(separate, flat.params):
        np.testing.assert_allclose(y, x, rtol=1e-12, atol=1e-300)
    for key, value in a.carried().items():
        assert b.carried()[key] == pytest.approx(value, rel=1e-12)
    used = np.zeros(flat.size, bool)
    for view, offset in zip(flat.params, flat.offsets):
        used[offset:offset + view.size] = True
    assert not flat.param_buffer[~used].any()
