"""Property tests (hypothesis) over the public entry points: any valid input
matches the float64 reference; any invalid input raises and changes nothing."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gradstep as gs

import reference

# Any valid rate is fair game here, including ones far outside the usual ranges.
pytestmark = pytest.mark.filterwarnings("ignore::gradstep.LearningRateWarning")

settings.register_profile("gradstep", max_examples=150, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("gradstep")

REFS = {"SGD": reference.SGDRef, "Adagrad": reference.AdagradRef, "Adadelta": reference.AdadeltaRef,
        "RMSprop": reference.RMSpropRef, "Adam": reference.AdamRef, "AdamW": reference.AdamRef,
        "Adamax": reference.AdamaxRef,
        "RAdam": reference.RAdamRef,
        "NAdam": reference.NAdamRef,
        "Lamb": reference.LambRef,
        "AdamWScheduleFree": functools.partial(reference.ScheduleFreeRef, adam=True),
        "SGDScheduleFree": functools.partial(reference.ScheduleFreeRef, adam=False),
        "Lion": reference.LionRef}

unit = st.floats(0.0, 0.999)
small = st.floats(0.0, 0.5)
positive_eps = st.floats(1e-10, 1e-2)


@st.composite
def optimizer_options(draw):
    name = draw(st.sampled_from(sorted(REFS)))
    lr = draw(st.floats(0.0, 1.0))
    if name == "SGD":
        momentum = draw(st.sampled_from([0.0]) | unit)
        nesterov = momentum > 0 and draw(st.booleans())
        opts = dict(momentum=momentum, nesterov=nesterov,
                    dampening=0.0 if nesterov else draw(st.floats(0.0, 1.0)), weight_decay=draw(small))
    elif name == "Adagrad":
        opts = dict(lr_decay=draw(small), weight_decay=draw(small), eps=draw(positive_eps),
                    initial_accumulator_value=draw(st.floats(0.0, 2.0)))
    elif name == "Adadelta":
        opts = dict(rho=draw(st.floats(0.0, 1.0)), eps=draw(positive_eps), weight_decay=draw(small))
    elif name == "RMSprop":
        opts = dict(alpha=draw(unit), eps=draw(positive_eps), weight_decay=draw(small),
                    momentum=draw(st.sampled_from([0.0]) | unit), centered=draw(st.booleans()))
    elif name in ("Adam", "AdamW"):
        opts = dict(betas=(draw(unit), draw(unit)), eps=draw(positive_eps), weight_decay=draw(small),
                    amsgrad=draw(st.booleans()))
    elif name == "Lamb":
        opts = dict(betas=(draw(unit), draw(unit)), eps=draw(positive_eps), weight_decay=draw(small),
                    max_grad_norm=draw(st.none() | st.floats(1e-3, 10.0)),
                    **{flag: draw(st.booleans()) for flag in ("bias_correction", "grad_averaging", "trust_clip",
                                                              "always_adapt", "caution", "decoupled_decay")})
    elif name.endswith("ScheduleFree"):
        beta = st.floats(0.01, 0.999)  # > 0: eval() divides by it
        opts = dict(weight_decay=draw(small), warmup_steps=draw(st.integers(0, 4)), r=draw(st.floats(0.0, 2.0)),
                    weight_lr_power=draw(st.floats(0.0, 3.0)))
        if name.startswith("Adam"):
            opts.update(betas=(draw(beta), draw(unit)), eps=draw(positive_eps))
        else:
            opts.update(momentum=draw(beta))
    elif name == "Lion":  # betas in [0, 1]; the decoupled decay is relative to lr, which must be > 0
        opts = dict(betas=(draw(st.floats(0.0, 1.0)), draw(st.floats(0.0, 1.0))), weight_decay=draw(small),
                    decoupled_weight_decay=lr > 0 and draw(st.booleans()))
    else:
        opts = dict(betas=(draw(unit), draw(unit)), eps=draw(positive_eps), weight_decay=draw(small))
    opts["maximize"] = draw(st.booleans())
    return name, lr, opts


shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=9)
finite = st.floats(-10, 10, allow_subnormal=False)


@given(optimizer_options(), st.lists(shapes, min_size=1, max_size=4), st.integers(1, 6), st.data())
def test_any_valid_input_matches_reference(config, tensor_shapes, steps, data):
    name, lr, opts = config
    params = [data.draw(hnp.arrays(np.float64, s, elements=finite)) for s in tensor_shapes]
    hyper = dict(opts, decoupled=True) if name == "AdamW" else dict(opts, init_lr=lr) if name == "Lion" else opts
    ref = REFS[name](params, **hyper)
    mine = [p.copy() for p in params]
    opt = getattr(gs, name)(mine, lr=lr, **opts)
    mode = opt.__gradstep_spec__.mode
    if mode is not None:  # Schedule-Free: steps need train()
        getattr(opt, mode.on)()
    for _ in range(steps):
        grads = [data.draw(hnp.arrays(np.float64, p.shape, elements=finite)) for p in params]
        with np.errstate(all="ignore"):
            ref.step(grads, lr)
        opt.step(grads)
    # Centered RMSprop's v - m^2 amplifies float64 rounding by v / (v - m^2):
    # with the variance below 1e-8 of the mean square (alpha near 0, a steady
    # gradient) half the digits are gone in any float64 implementation, the
    # reference's included, and the sign of a variance near 0 (NaN or not) is
    # rounding. Those inputs say nothing about gradstep; the rest must match.
    assume(getattr(ref, "conditioning", 1.0) < 1e8)
    for got, want in zip(mine, ref.params):
        # The bound is loose, but NaN/inf placement must agree exactly.
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, equal_nan=True)


bad_values = st.sampled_from([-1.0, -1e-12, math.nan, math.inf, -math.inf])


@given(st.sampled_from(["lr", "weight_decay", "eps", "momentum", "alpha", "rho", "lr_decay",
                        "dampening", "betas0", "betas1"]), bad_values | st.floats(1.0001, 1e6))
def test_any_invalid_hyperparameter_raises_and_changes_nothing(key, value):
    p = np.ones(5)
    candidates = {
        "lr": ("SGD", dict(lr=value), value < 0 or not math.isfinite(value)),
        "weight_decay": ("Adam", dict(weight_decay=value), value < 0 or not math.isfinite(value)),
        "eps": ("RMSprop", dict(eps=value), value < 0 or not math.isfinite(value)),
        # Decay factors: [0, 1] (see cpp/src/optim.cpp's validate).
        "momentum": ("SGD", dict(momentum=value), not 0 <= value <= 1),
        "alpha": ("RMSprop", dict(alpha=value), not 0 <= value <= 1),
        "rho": ("Adadelta", dict(rho=value), True),
        "lr_decay": ("Adagrad", dict(lr_decay=value), value < 0 or not math.isfinite(value)),
        "dampening": ("SGD", dict(dampening=value), True),
        "betas0": ("Adam", dict(betas=(value, 0.9)), True),
        "betas1": ("AdamW", dict(betas=(0.9, value)), True),
    }
    name, kwargs, invalid = candidates[key]
    if not invalid:
        getattr(gs, name)([p], **kwargs)  # large but valid
        return
    with pytest.raises(ValueError):
        getattr(gs, name)([p], **kwargs)
    assert np.array_equal(p, np.ones(5))


@given(st.sampled_from(["SGD", "Adam", "RMSprop"]),
       hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=2, max_side=6)),
       st.sampled_from(["transpose", "step", "readonly", "float16", "int", "offset"]))
def test_any_unusable_buffer_is_rejected_and_unchanged(name, base, kind):
    param = np.ascontiguousarray(base)
    opt = getattr(gs, name)([param], lr=0.1)
    before = param.copy()
    if kind == "transpose":
        grad = np.ones((param.shape[1], param.shape[0]), np.float32).T
    elif kind == "step":
        grad = np.ones((param.shape[0], param.shape[1] * 2), np.float32)[:, ::2]
    elif kind == "readonly":
        grad = np.ones_like(param)
        grad.flags.writeable = False
        opt.step([grad])  # read-only grads are fine: grads are only read
        return
    elif kind == "float16":
        grad = np.ones(param.shape, np.float16)
    elif kind == "int":
        grad = np.ones(param.shape, np.int64)
    else:
        grad = np.ones(param.size + 1, np.float32)[1:].reshape(param.shape)
        opt.step([grad])  # an offset but contiguous, aligned view is fine
        return
    with pytest.raises((TypeError, ValueError)):
        opt.step([grad])
    assert param.tobytes() == before.tobytes()
    assert opt.step_count == 0


@given(st.dictionaries(st.sampled_from(["optimizer", "step", "lr", "hyperparameters", "state"]),
                       st.none() | st.integers(-3, 3) | st.text(max_size=3) | st.floats()
                       | st.lists(st.integers(), max_size=2), max_size=5))
def test_any_malformed_state_dict_is_rejected_and_changes_nothing(sd):
    w = np.ones(4)
    opt = gs.Adam([w], lr=1e-3)
    opt.step([np.ones(4)])
    snapshot = (w.copy(), [a.copy() for a in opt.state["exp_avg"]], opt.step_count, opt.lr)
    with pytest.raises((TypeError, ValueError)):
        opt.load_state_dict(sd)
    assert w.tobytes() == snapshot[0].tobytes()
    assert opt.state["exp_avg"][0].tobytes() == snapshot[1][0].tobytes()
    assert (opt.step_count, opt.lr) == snapshot[2:]


@given(st.integers(0, 70), st.sampled_from([np.float32, np.float64]), st.booleans())
def test_kernel_functions_agree_across_isas(n, dtype, amsgrad):
    rng = np.random.default_rng(n)
    results = []
    before = gs.isa()
    for isa in gs.available_isas():
        gs.set_isa(isa)
        try:
            p = rng.standard_normal(n).astype(dtype) if not results else start.copy()
            if not results:
                start = p.copy()
            m, v, vmax = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
            g = np.linspace(-1, 1, n).astype(dtype)
            for k in range(1, 4):
                gs.kernels.adam_step(p, g, m, v, vmax, lr=1e-2, step=k, amsgrad=amsgrad,
                                     weight_decay=0.01)
            results.append(p.tobytes())
        finally:
            gs.set_isa(before)
    assert len(set(results)) == 1


# ---- schedules ------------------------------------------------------------------------

rate = st.floats(1e-6, 10.0)
count = st.integers(1, 500)


@st.composite
def any_schedule(draw, depth=0):
    S = gs.schedules
    kinds = ["constant", "step", "multistep", "exponential", "exponential_rate", "exponential_decay",
             "inverse_time", "time_based", "polynomial", "linear", "cosine", "cosine_restarts",
             "cyclic", "one_cycle", "piecewise_constant"]
    if depth < 2:
        kinds += ["warmup", "sequence"]
    kind = draw(st.sampled_from(kinds))
    if kind == "constant":
        return S.constant(draw(rate))
    if kind == "step":
        return S.step(draw(rate), draw(count), draw(st.floats(0.0, 1.0)))
    if kind == "multistep":
        return S.multistep(draw(rate), sorted(draw(st.lists(st.integers(0, 1000), max_size=5))),
                           draw(st.floats(0.0, 1.0)))
    if kind == "exponential":
        return S.exponential(draw(rate), draw(st.floats(0.5, 1.0)))
    if kind == "exponential_rate":
        return S.exponential(draw(rate), rate=draw(st.floats(0.0, 1.0)))
    if kind == "exponential_decay":
        return S.exponential_decay(draw(rate), draw(st.floats(0.01, 1.0)), draw(count), draw(st.booleans()))
    if kind == "inverse_time":
        return S.inverse_time(draw(rate), draw(st.floats(0.0, 10.0)), draw(count), draw(st.booleans()))
    if kind == "time_based":
        return S.time_based(draw(rate), draw(st.floats(0.0, 1.0)))
    if kind == "polynomial":
        return S.polynomial(draw(rate), draw(count), draw(st.floats(0.1, 5.0)), 0.0)
    if kind == "linear":
        return S.linear(draw(rate), draw(rate), draw(count))
    if kind == "cosine":
        return S.cosine(draw(rate), draw(count), 0.0)
    if kind == "cosine_restarts":
        return S.cosine_restarts(draw(rate), draw(count), draw(st.integers(1, 3)), 0.0)
    if kind == "cyclic":
        lo = draw(rate)
        return S.cyclic(lo, lo * draw(st.floats(1.0, 100.0)), draw(count), None,
                        draw(st.sampled_from(["triangular", "triangular2", "exp_range"])),
                        draw(st.floats(0.9, 1.0)))
    if kind == "one_cycle":
        three = draw(st.booleans())  # three phases need pct_start < 1/2 to leave room
        return S.one_cycle(draw(rate), draw(st.integers(20, 500)),
                           draw(st.floats(0.1, 0.45 if three else 0.9)),
                           draw(st.sampled_from(["cos", "linear"])), three_phase=three)
    if kind == "piecewise_constant":
        bounds = sorted(set(draw(st.lists(st.integers(1, 1000), max_size=4))))
        return S.piecewise_constant(bounds, [draw(rate) for _ in range(len(bounds) + 1)])
    if kind == "warmup":
        return S.warmup(draw(any_schedule(depth + 1)), draw(count), draw(st.floats(0.0, 1e-3)))
    parts = draw(st.lists(any_schedule(depth + 1), min_size=1, max_size=3))
    bounds = sorted(set(draw(st.lists(st.integers(1, 1000), min_size=len(parts) - 1,
                                      max_size=len(parts) - 1, unique=True))))
    if len(bounds) != len(parts) - 1:
        bounds = list(range(1, len(parts)))
    return S.sequence(parts, bounds)


steps_arrays = hnp.arrays(np.int64, st.integers(0, 40), elements=st.integers(0, 10**6))


@given(any_schedule(), steps_arrays)
def test_any_schedule_is_finite_nonnegative_and_vectorized_equals_scalar(schedule, steps):
    values = schedule(steps)
    assert values.shape == steps.shape
    assert np.all(np.isfinite(values)) and np.all(values >= 0)
    for k, v in zip(steps.tolist(), values.tolist()):
        assert schedule(k) == v


@given(any_schedule(), steps_arrays)
def test_any_schedule_survives_json(schedule, steps):
    import json

    again = gs.schedules.from_dict(json.loads(json.dumps(schedule.to_dict())))
    assert again == schedule
    assert np.array_equal(again(steps), schedule(steps))


@given(st.sampled_from(["step_size", "milestones", "mode", "pct_start", "negative step", "nan lr",
                        "total_steps", "boundaries"]))
def test_any_bad_schedule_parameter_is_a_value_error(which):
    S = gs.schedules
    bad = {
        "step_size": lambda: S.step(0.1, 0),
        "milestones": lambda: S.multistep(0.1, [5, 3]),
        "mode": lambda: S.cyclic(0.1, 1.0, mode="sawtooth"),
        "pct_start": lambda: S.one_cycle(0.1, 100, pct_start=1.0),
        "negative step": lambda: S.cosine(0.1, 100)(-1),
        "nan lr": lambda: S.constant(math.nan),
        "total_steps": lambda: S.cosine(0.1, 0),
        "boundaries": lambda: S.piecewise_constant([10, 5], [1.0, 0.5, 0.1]),
    }[which]
    with pytest.raises(ValueError):
        bad()
