"""Lamb against timm's Lamb (timm 1.0.31, timm.optim.lamb, its default CPU path):
every option combination in float64 over tensors of several ranks in one
optimizer (the global clip spans them all), float32 no further from the
float64 truth than timm's float32, bit identity across ISA targets and thread
counts on tensors of many chunks, exact resume from a checkpoint (the carried
max_lr included), and bad input that changes nothing."""

from __future__ import annotations

import inspect
import itertools
import math

import numpy as np
import pytest
import torch

import gradstep as gs
from gradstep import _spec
from gradstep.bench.spec import import_reference

import float32_accuracy
import reference

TimmLamb = import_reference("timm.optim.lamb", "Lamb")

SHAPES = [(), (1,), (5,), (3, 4), (2, 3, 7)]
STEPS = 60
LR = 0.01
FLAGS = ("bias_correction", "grad_averaging", "trust_clip", "always_adapt", "caution", "decoupled_decay",
         "corrected_weight_decay", "maximize")
CHUNK = 8192


def flag_combinations():
    for values in itertools.product([False, True], repeat=len(FLAGS)):
        yield dict(zip(FLAGS, values))


def problem(dtype, steps=STEPS, shapes=SHAPES, seed=0):
    """Params and grads; every third step's grads are large, so that the global clip
    (max_grad_norm=1) engages on some steps and not on others."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[(rng.standard_normal(s) * (1.0 if k % 3 == 0 else 0.02)).astype(dtype) for s in shapes]
             for k in range(steps)]
    return params, grads


def timm_kwargs(opts):
    """timm's arguments for gs.Lamb's (timm has no maximize: it gets the negated grads)."""
    return {k: v for k, v in opts.items() if k != "maximize"}


def run_timm(opts, params, grads, dtype=torch.float64, storage_float32=False, lr=LR):
    """timm's Lamb over copies of params; params and states as float64 arrays."""
    tensors = [torch.tensor(np.asarray(p), dtype=dtype).requires_grad_() for p in params]
    opt = TimmLamb(tensors, lr=lr, **timm_kwargs(opts))
    sign = -1.0 if opts.get("maximize") else 1.0
    for step_grads in grads:
        for t, g in zip(tensors, step_grads):
            t.grad = torch.tensor(sign * np.asarray(g), dtype=dtype)
        opt.step()
        if storage_float32:
            with torch.no_grad():
                for t in tensors:
                    t.copy_(t.float())
                    for value in opt.state[t].values():
                        value.copy_(value.float())
    state = {key: [opt.state[t][key].numpy().astype(np.float64) for t in tensors]
             for key in ("exp_avg", "exp_avg_sq")}
    return [t.detach().numpy().astype(np.float64) for t in tensors], state


def run_gs(opts, params, grads, lr=LR):
    mine = [p.copy() for p in params]
    opt = gs.Lamb(mine, lr=lr, **opts)
    for step_grads in grads:
        opt.step(step_grads)
    return mine, opt


# ---- 1. every option combination against timm, float64 -----------------------------

@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.3, 0.9)], ids=["betas-default", "betas-low"])
@pytest.mark.parametrize("max_grad_norm", [None, 1.0])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_every_option_combination_matches_timm_in_float64(weight_decay, max_grad_norm, betas):
    params, grads = problem(np.float64)
    for flags in flag_combinations():
        opts = dict(flags, weight_decay=weight_decay, max_grad_norm=max_grad_norm, betas=betas)
        want, want_state = run_timm(opts, params, grads)
        got, opt = run_gs(opts, params, grads)
        assert opt.step_count == STEPS
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12, err_msg=str(opts))
        for key, arrays in want_state.items():
            for g, w in zip(opt.state[key], arrays):
                np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-14, err_msg=f"{key} {opts}")


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_every_option_combination_matches_the_published_equations(weight_decay):
    # tests/reference.py's LambRef, written from the paper (and timm's conventions).
    params, grads = problem(np.float64, seed=1)
    for flags in flag_combinations():
        for max_grad_norm in (None, 1.0):
            opts = dict(flags, weight_decay=weight_decay, max_grad_norm=max_grad_norm)
            ref = reference.LambRef(params, **opts)
            got, _ = run_gs(opts, params, grads)
            for step_grads in grads:
                ref.step(step_grads, LR)
            for g, w in zip(got, ref.params):
                np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12, err_msg=str(opts))


def test_the_clip_engages_on_some_steps_only():
    # The matrix above is only a test of the clip if it both clips and does not.
    params, grads = problem(np.float64)
    norms = [math.sqrt(sum(float(np.sum(g * g)) for g in step)) for step in grads]
    assert min(norms) < 1.0 < max(norms)
    opt = gs.Lamb([p.copy() for p in params], lr=LR)
    reported = [opt.step(step).grad_norm for step in grads]
    np.testing.assert_allclose(reported, norms, rtol=1e-12)


def test_corrected_weight_decay_with_a_changing_rate_matches_timm():
    # lr^2 / max_lr: max_lr is the rate the optimizer was made with, kept while lr changes.
    params, grads = problem(np.float64)
    opts = dict(decoupled_decay=True, corrected_weight_decay=True, weight_decay=0.1)
    tensors = [torch.tensor(p).requires_grad_() for p in params]
    theirs = TimmLamb(tensors, lr=0.02, **opts)
    mine = [p.copy() for p in params]
    ours = gs.Lamb(mine, lr=0.02, **opts)
    for k, step_grads in enumerate(grads):
        lr = 0.02 * (0.5 + 0.5 * math.cos(k / 20))
        for group in theirs.param_groups:
            group["lr"] = lr
        ours.lr = lr
        for t, g in zip(tensors, step_grads):
            t.grad = torch.tensor(g)
        theirs.step()
        ours.step(step_grads)
    assert ours.carried() == {"max_lr": 0.02}
    for g, t in zip(mine, tensors):
        np.testing.assert_allclose(g, t.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_a_schedule_starts_max_lr_at_its_first_rate():
    sched = gs.schedules.cosine(0.02, total_steps=100, final_lr=1e-4)
    opt = gs.Lamb([np.ones(3)], lr=sched, decoupled_decay=True, corrected_weight_decay=True)
    assert opt.carried() == {"max_lr": 0.02}


def test_signature_follows_timm():
    ours = inspect.signature(gs.Lamb).parameters
    theirs = inspect.signature(TimmLamb).parameters
    positional = [n for n, p in ours.items() if p.kind == p.POSITIONAL_OR_KEYWORD]
    assert positional == [n for n in theirs if n != "foreach"]
    for name in positional[1:]:
        assert ours[name].default == theirs[name].default, name
    # gradstep's own keywords; max_grad_norm is Lamb's own (timm's formula), not the safeguard.
    precision = [name for name, _, _ in _spec.PRECISION]  # gradstep's storage-precision arguments
    assert [n for n, p in ours.items() if p.kind == p.KEYWORD_ONLY] == ["maximize", "skip_nonfinite", *precision]
    assert gs.Lamb([np.ones(2)]).max_grad_norm == 1.0
    assert gs.Lamb([np.ones(2)], max_grad_norm=None).hyperparameters()["max_grad_norm"] is None


def test_max_grad_norm_set_later_is_timms_clip():
    params, grads = problem(np.float64, steps=10)
    want, _ = run_timm(dict(max_grad_norm=0.5), params, grads)
    mine = [p.copy() for p in params]
    opt = gs.Lamb(mine, lr=LR, max_grad_norm=None)
    opt.max_grad_norm = 0.5
    for step_grads in grads:
        opt.step(step_grads)
    for g, w in zip(mine, want):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)


def test_kernel_function_is_one_step_over_all_tensors():
    # gs.kernels.lamb_step over lists: the global clip and the trust ratios as in gs.Lamb.
    params, grads = problem(np.float64, steps=1)
    want, want_state = run_timm(dict(caution=True), params, grads)
    mine = [p.copy() for p in params]
    m, v = [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params]
    carried = gs.kernels.lamb_step(mine, grads[0], m, v, lr=LR, step=1, caution=True)
    assert carried == {"max_lr": 0.0}  # the kernel function's default; only corrected decay reads it
    for got, expected in ((mine, want), (m, want_state["exp_avg"]), (v, want_state["exp_avg_sq"])):
        for g, w in zip(got, expected):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-15)


# ---- 2. float32 against the float64 truth, beside timm's float32 ----------------------

# Measured on this matrix: at most 1.006x timm's float32 error (rms and max).
F32_NOISE = 1.05
F32_CASES = [
    dict(),
    dict(weight_decay=0.0),
    dict(weight_decay=0.0, always_adapt=True, trust_clip=True),
    dict(caution=True),
    dict(caution=True, weight_decay=0.0),
    dict(decoupled_decay=True, weight_decay=0.1),
    dict(decoupled_decay=True, corrected_weight_decay=True, weight_decay=0.1, max_grad_norm=None),
    dict(grad_averaging=False, bias_correction=False, betas=(0.3, 0.9), maximize=True),
]


@pytest.mark.parametrize("opts", F32_CASES, ids=[str(sorted(o.items())) for o in F32_CASES])
def test_float32_is_no_further_from_the_truth_than_timms(opts):
    # Both errors sit at the floor of storing float32 params and states (timm's float64
    # run rounded after each step reaches the same), where they differ by chance in the
    # last rounding of some elements: "no further" is within F32_NOISE. With a decoupled
    # decay gradstep's is 0.6-0.7x timm's (it rounds the decayed param once).
    params, grads = problem(np.float32, shapes=SHAPES + [(64, 65)])
    mine, _ = run_gs(opts, params, grads)
    truth, _ = run_timm(opts, params, grads)
    theirs, _ = run_timm(opts, params, grads, dtype=torch.float32)
    storage_only, _ = run_timm(opts, params, grads, storage_float32=True)
    errors, theirs_errors = float32_accuracy.errors(mine, truth), float32_accuracy.errors(theirs, truth)
    assert float32_accuracy.rms(errors) <= F32_NOISE * float32_accuracy.rms(theirs_errors), "rms"
    assert np.max(np.abs(errors)) <= F32_NOISE * np.max(np.abs(theirs_errors)), "max"
    float32_accuracy.assert_float32_accurate(mine, truth, storage_only, str(opts))


# ---- 3. bit identity across ISA targets and thread counts -------------------------------

# Each pass structure: clip + moments + apply (the default), the caution norm pass,
# caution without a trust ratio, one fused pass, decoupled + corrected decay, maximize.
BIT_CONFIGS = [
    dict(),
    dict(caution=True, trust_clip=True),
    dict(caution=True, weight_decay=0.0),
    dict(weight_decay=0.0, max_grad_norm=None),
    dict(decoupled_decay=True, corrected_weight_decay=True, always_adapt=True, weight_decay=0.1),
    dict(maximize=True, grad_averaging=False, max_grad_norm=0.5),
]
# Tensors of many chunks with tails, empty and 0-d ones: over the parallel threshold (16K).
BIG_SHAPES = [(3 * CHUNK + 5,), (), (0,), (70_001,), (CHUNK,), (5, 7), (2, CHUNK - 1)]


def run_bits(opts, dtype, isa=None, threads=1, steps=4):
    params, grads = problem(dtype, steps=steps, shapes=BIG_SHAPES, seed=5)
    before_isa, before_threads = gs.isa(), gs.get_num_threads()
    try:
        if isa is not None:
            gs.set_isa(isa)
        gs.set_num_threads(threads)
        opt = gs.Lamb(params, lr=LR, **opts)
        for step_grads in grads:
            opt.step(step_grads)
    finally:
        gs.set_isa(before_isa)
        gs.set_num_threads(before_threads)
    return [a.tobytes() for a in params + [s for arrays in opt.state.values() for s in arrays]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("opts", BIT_CONFIGS, ids=[str(sorted(o.items())) for o in BIT_CONFIGS])
def test_every_isa_and_thread_count_gives_the_same_bits(opts, dtype):
    baseline = run_bits(opts, dtype, isa="scalar")
    for isa in gs.available_isas()[1:]:
        assert run_bits(opts, dtype, isa=isa) == baseline, isa
    for threads in (2, 3, 4):
        assert run_bits(opts, dtype, threads=threads) == baseline, threads


def test_the_step_is_shared_between_threads():
    # BIG_SHAPES are large enough for the pool to take part (parallel_min = 16K elements).
    total = sum(math.prod(s) for s in BIG_SHAPES)
    assert total > 4 * (1 << 14) and total > 10 * CHUNK


# ---- 3b. exact resume from a checkpoint -----------------------------------------------

RESUME_OPTS = dict(decoupled_decay=True, corrected_weight_decay=True, caution=True, weight_decay=0.1)


def test_resume_from_state_dict_is_bit_exact():
    params, grads = problem(np.float32, steps=30)
    straight, _ = run_gs(RESUME_OPTS, params, grads, lr=0.02)

    first = [p.copy() for p in params]
    opt = gs.Lamb(first, lr=0.02, **RESUME_OPTS)
    for step_grads in grads[:15]:
        opt.step(step_grads)
    saved = opt.state_dict()
    assert saved["carried"] == {"max_lr": 0.02}
    # Made with another rate: only the loaded max_lr (and lr) give the same run.
    resumed = [p.copy() for p in first]
    again = gs.Lamb(resumed, lr=0.05, **RESUME_OPTS)
    again.load_state_dict(saved)
    assert again.carried() == {"max_lr": 0.02} and again.step_count == 15
    for step_grads in grads[15:]:
        again.step(step_grads)
    for a, b in zip(resumed, straight):
        assert a.tobytes() == b.tobytes()


def test_resume_from_a_checkpoint_file_is_bit_exact(tmp_path):
    params, grads = problem(np.float64, steps=30)
    straight, _ = run_gs(RESUME_OPTS, params, grads, lr=0.02)
    first = [p.copy() for p in params]
    opt = gs.Lamb(first, lr=0.02, **RESUME_OPTS)
    for step_grads in grads[:12]:
        opt.step(step_grads)
    gs.save(opt, tmp_path / "lamb.ckpt")
    resumed = [p.copy() for p in first]
    again = gs.load(tmp_path / "lamb.ckpt", resumed)
    assert type(again) is gs.Lamb and again.carried() == {"max_lr": 0.02}
    for step_grads in grads[12:]:
        again.step(step_grads)
    for a, b in zip(resumed, straight):
        assert a.tobytes() == b.tobytes()


# ---- 3c. bad input raises ValueError naming the argument and changes nothing --------

def stepped(dtype=np.float64):
    params, grads = problem(dtype, steps=3)
    opt = gs.Lamb(params, lr=0.02, **RESUME_OPTS)
    for step_grads in grads:
        opt.step(step_grads)
    return opt, grads[0]


def snapshot(opt):
    return ([p.tobytes() for p in opt.params], {k: [a.tobytes() for a in v] for k, v in opt.state.items()},
            opt.step_count, opt.carried(), opt.hyperparameters(), opt.lr)


@pytest.mark.parametrize(("kwargs", "named"), [
    (dict(lr=math.nan), "lr"),
    (dict(lr=-1.0), "lr"),
    (dict(betas=(1.0, 0.9)), r"betas\[0\]"),
    (dict(betas=(0.9, math.nan)), r"betas\[1\]"),
    (dict(eps=-1e-6), "eps"),
    (dict(weight_decay=math.inf), "weight_decay"),
    (dict(max_grad_norm=-1.0), "max_grad_norm"),
    (dict(max_grad_norm=math.nan), "max_grad_norm"),
    (dict(max_grad_norm=math.inf), "max_grad_norm"),
    (dict(lr=0.0, decoupled_decay=True, corrected_weight_decay=True), "max_lr"),
])
def test_bad_arguments_are_rejected(kwargs, named):
    p = np.ones(4)
    with pytest.raises(ValueError, match=named):
        gs.Lamb([p], **kwargs)
    assert (p == 1).all()


@pytest.mark.parametrize("value", [math.nan, -0.5, math.inf])
def test_bad_lr_or_max_grad_norm_set_later_changes_nothing(value):
    opt, grads = stepped()
    snap = snapshot(opt)
    with pytest.raises(ValueError, match="lr"):
        opt.lr = value
    with pytest.raises(ValueError, match="max_grad_norm"):
        opt.max_grad_norm = value
    assert snapshot(opt) == snap
    opt.step(grads)
    assert opt.step_count == snap[2] + 1


@pytest.mark.parametrize(("carried", "named"), [
    ({"max_lr": math.nan}, "max_lr"),
    ({"max_lr": -1.0}, "max_lr"),
    ({"max_lr": math.inf}, "max_lr"),
    ({"max_lr": 0.0}, "max_lr"),  # corrected_weight_decay needs it > 0
    ({"max_lr": "0.02"}, "max_lr"),
    ({"max_lr": True}, "max_lr"),
    ({}, "carried"),
    ({"max_lr": 0.02, "d": 1.0}, "carried"),
    (None, "carried"),
    ([0.02], "carried"),
])
def test_hostile_carried_values_change_nothing(carried, named):
    opt, grads = stepped()
    sd = opt.state_dict()
    sd["carried"] = carried
    sd["step"] = 99
    for arrays in sd["state"].values():
        for a in arrays:
            a += 1.0
    snap = snapshot(opt)
    with pytest.raises(ValueError, match=named):
        opt.load_state_dict(sd)
    assert snapshot(opt) == snap
    opt.step(grads)
    assert opt.step_count == snap[2] + 1


def test_bad_kernel_call_changes_nothing():
    p, g, m, v = np.ones(5), np.ones(5), np.zeros(5), np.zeros(5)
    for kwargs, named in ((dict(lr=math.nan), "lr"), (dict(lr=0.1, max_grad_norm=-1.0), "max_grad_norm"),
                          (dict(lr=0.1, corrected_weight_decay=True, decoupled_decay=True), "max_lr")):
        with pytest.raises(ValueError, match=named):
            gs.kernels.lamb_step(p, g, m, v, step=1, **kwargs)
    assert (p == 1).all() and not m.any() and not v.any()


def test_skip_nonfinite_skips_before_the_clip_pass():
    opt, grads = stepped()
    opt.skip_nonfinite = True
    snap = snapshot(opt)
    bad = [g.copy() for g in grads]
    bad[3].flat[0] = math.nan
    result = opt.step(bad)
    assert result.skipped and result.found_inf
    assert snapshot(opt) == snap


# ---- 5. what lr means, and where the range comes from -----------------------------------

def test_recommended_range_holds_timms_default_and_says_what_lr_is():
    rng = gs.recommended_range(gs.Lamb)
    assert rng.low <= 1e-3 <= rng.high
    assert "trust ratio" in rng.source and "You et al." in rng.source
