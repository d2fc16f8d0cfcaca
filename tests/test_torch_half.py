"""gradstep.torch with bfloat16/float16 parameters (issue 13), against independent oracles.

* state_dtype="param": torch's own optimizer on the same half params (fused=True where torch
  has a CPU fused kernel, else foreach=False), one step at a time from the same params and
  states: within 1 ulp of the dtype, and > 99% of elements exactly.
* float32 states (the default): a float64 run of torch's equations from the same widened
  param, grad and states, each step; its param rounded to nearest matches.
* master_weights: the master is torch's optimizer run in float32 from the same values.
* state_dict round trips, stochastic rounding's statistics, ISA and thread bit identity,
  bad input.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lion_pytorch import Lion as ReferenceLion

import gradstep as gs
import gradstep.torch as gt

HERE = Path(__file__).parent
HALF = [torch.bfloat16, torch.float16]
SHAPES = [(130, 70), (257,)]  # a matrix of more than one 8192-element chunk, and a vector


def shapes_for(name: str) -> list[tuple[int, ...]]:
    # (Adafactor's multi-chunk matrix included: gradstep.torch gives it float32 grads, as the
    # core's stats pass reads grads across chunks; see torch.py's _wide_grads)
    return SHAPES


def ordered(t: torch.Tensor) -> torch.Tensor:
    """A half tensor's bits as integers in the order of the values (+0 and -0 both 0)."""
    i = t.view(torch.int16).to(torch.int32)
    return torch.where(i < 0, -(i & 0x7FFF), i)


def ulps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """How many representable values apart a and b are."""
    assert a.dtype == b.dtype and a.dtype in HALF
    return (ordered(a) - ordered(b)).abs()


def ulp(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The dtype's ulp at |x| (float64): the spacing of its values in |x|'s binade."""
    bits = 7 if dtype == torch.bfloat16 else 10  # stored mantissa bits
    _, e = torch.frexp(x.double().abs())  # |x| in [2^(e-1), 2^e)
    tiny = torch.finfo(dtype).tiny * 2.0 ** -bits  # the subnormal spacing
    return torch.clamp(torch.ldexp(torch.ones_like(x, dtype=torch.float64), e - 1 - bits), min=tiny)


def assert_rounding_close(got: torch.Tensor, want: torch.Tensor, exact: float, what: str,
                          before: torch.Tensor | None = None) -> float:
    """got is want to the dtype's rounding: within 1 ulp everywhere, and equal in more than
    `exact` of the elements. The ulp is the one at the larger of |want| and |before| (the
    param before the step): where the update cancels the param, the result is far below the
    operands' precision, and two float32 evaluations of it differ by many of its own ulps."""
    got, want = got.detach(), want.detach()
    scale = want.double().abs() if before is None else torch.maximum(want.double().abs(), before.double().abs())
    off = (got.double() - want.double()).abs() / ulp(scale, want.dtype)
    same = (ulps(got, want) == 0).double().mean().item()
    assert off.max().item() <= 1.0, (what, off.max().item(), int(off.argmax()))
    assert same > exact, (what, same)
    return same


def make_params(dtype: torch.dtype, seed: int = 0, shapes=SHAPES) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).to(dtype).requires_grad_() for s in shapes]


def make_grads(dtype: torch.dtype, steps: int, seed: int = 1, shapes=SHAPES) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=g).to(dtype) for s in shapes] for _ in range(steps)]


def clones(params: list[torch.Tensor]) -> list[torch.Tensor]:
    return [p.detach().clone().requires_grad_() for p in params]


def torch_class(name: str):
    return ReferenceLion if name == "Lion" else getattr(torch.optim, name)


# (name, options, oracle). "fused": torch's fused CPU kernel on the same half params, which
# computes in float32 and rounds params and states once. "float32": torch's single-tensor step
# (foreach=False) run in float32 on the widened param, states and grad, its params and states
# rounded once to the dtype: the same model of rounding, for the optimizers torch has no fused
# CPU kernel for. (Their foreach=False step on half tensors rounds after every op, and so is
# not "to the dtype's rounding": e.g. RMSprop's eps = 1e-8 is 0 in float16 and divides by
# zero.) torch 2.13's fused CPU SGD is wrong for bf16/f16 (it disagrees with its own
# foreach=False step by more than an ulp, with or without momentum, on the default, avx2 and
# avx512 kernels), so SGD's oracle is "float32" too; so is Adagrad's (below).
AGAINST_TORCH = [
    ("Adam", {"lr": 1e-3, "weight_decay": 0.01}, "fused"),
    ("Adam", {"lr": 1e-3, "amsgrad": True}, "fused"),
    ("AdamW", {"lr": 1e-3, "weight_decay": 0.1}, "fused"),
    ("AdamW", {"lr": 1e-3, "amsgrad": True, "weight_decay": 0.1}, "fused"),
    # torch's fused CPU Adagrad rounds the update lr * g / std to the dtype before adding it
    # (two roundings; ~3% of elements 1 ulp off a once-rounded result): test_adagrad_fused
    ("Adagrad", {"lr": 1e-2, "weight_decay": 1e-3}, "float32"),
    ("SGD", {"lr": 1e-2, "momentum": 0.9, "weight_decay": 1e-3}, "float32"),
    ("SGD", {"lr": 1e-2, "momentum": 0.9, "nesterov": True}, "float32"),
    ("RMSprop", {"lr": 1e-3}, "float32"),
    ("RMSprop", {"lr": 1e-3, "momentum": 0.9, "centered": True}, "float32"),
    ("Adadelta", {"lr": 0.5}, "float32"),
    ("NAdam", {"lr": 1e-3}, "float32"),
    ("RAdam", {"lr": 1e-3}, "float32"),
    ("Adamax", {"lr": 1e-3}, "float32"),
    ("Adafactor", {"lr": 1e-2}, "float32"),
    ("Lion", {"lr": 1e-4, "weight_decay": 0.1}, "float32"),
]


def case_id(case) -> str:
    name, opts, oracle = case
    return name + "[" + ",".join(f"{k}={v}" for k, v in opts.items()) + f"]-{oracle}"


def flags(name: str, fused: bool) -> dict:
    if name == "Lion":
        return {}
    return {"fused": True} if fused else {"foreach": False}


def copy_state(into: torch.optim.Optimizer, source: torch.optim.Optimizer) -> None:
    """into's params and states made source's, in place (the tensors into's steps view stay)."""
    with torch.no_grad():
        for gi, gs_ in zip(into.param_groups, source.param_groups):
            for p, q in zip(gi["params"], gs_["params"]):
                p.copy_(q)
                for key, value in source.state.get(q, {}).items():
                    mine = into.state[p].get(key)
                    if isinstance(value, torch.Tensor) and isinstance(mine, torch.Tensor):
                        assert mine.dtype == value.dtype and mine.shape == value.shape, key  # torch's layout
                        mine.copy_(value)


def state_tensors(opt: torch.optim.Optimizer, p: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v for k, v in opt.state[p].items()
            if isinstance(v, torch.Tensor) and k not in ("step", "mu_product")}


def wide_reference(name: str, opts: dict, ours: torch.optim.Optimizer, ours_p: list[torch.Tensor],
                   grads: list[torch.Tensor], dtype: torch.dtype) -> tuple[list[torch.Tensor], torch.optim.Optimizer]:
    """torch's single-tensor step in `dtype` (float32 or float64) from ours' params and states
    (widened exactly: torch's load_state_dict casts them to the params' dtype)."""
    wide = [p.detach().to(dtype).clone().requires_grad_() for p in ours_p]
    ref = torch_class(name)(wide, **opts, **flags(name, False))
    if ours.state:
        ref.load_state_dict(copy.deepcopy(ours.state_dict()))  # (torch shares a loaded step tensor)
    for w, g in zip(wide, grads):
        w.grad = g.to(dtype)
    ref.step()
    return wide, ref


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("case", AGAINST_TORCH, ids=case_id)
def test_param_states_equal_torch_per_step(case, dtype):
    """state_dtype="param": torch's layout, and each step's params and states equal torch's to
    the dtype's rounding (module docstring)."""
    name, opts, oracle = case
    shapes = shapes_for(name)
    ours_p = make_params(dtype, shapes=shapes)
    ours = getattr(gt, name)(ours_p, **opts, state_dtype="param")
    if oracle == "fused":
        theirs_p = clones(ours_p)
        theirs = torch_class(name)(theirs_p, **opts, **flags(name, True))
    worst = 1.0
    for step, grads in enumerate(make_grads(dtype, 6, shapes=shapes)):
        before = [p.detach().clone() for p in ours_p]
        before_states = [{k: v.clone() for k, v in state_tensors(ours, p).items()} for p in ours_p] \
            if ours.state else [{} for _ in ours_p]
        if oracle == "fused":
            if step:
                copy_state(ours, theirs)  # the same start for this step
                before = [p.detach().clone() for p in ours_p]
                before_states = [{k: v.clone() for k, v in state_tensors(ours, p).items()} for p in ours_p]
            for q, g in zip(theirs_p, grads):
                q.grad = g.clone()
            theirs.step()
            want = [q.detach() for q in theirs_p]
            want_states = [state_tensors(theirs, q) for q in theirs_p]
        else:
            wide, ref = wide_reference(name, opts, ours, ours_p, grads, torch.float32)
            want = [w.detach().to(dtype) for w in wide]
            want_states = [{k: v.to(dtype) for k, v in state_tensors(ref, w).items()} for w in wide]
        for p, g in zip(ours_p, grads):
            p.grad = g.clone()
        ours.step()
        for i, p in enumerate(ours_p):
            what = f"{case_id(case)} {dtype} step {step} param {i}"
            worst = min(worst, assert_rounding_close(p, want[i], 0.99, what, before[i]))
            mine = state_tensors(ours, p)
            assert mine.keys() == want_states[i].keys(), what
            for key, value in mine.items():  # torch's layout: the param's dtype and shape
                assert value.dtype == dtype and value.shape == want_states[i][key].shape, (what, key)
                # Adafactor's row_var/col_var are means of g^2 over a row/column (gradstep's
                # sums in double, in its own order): one of a few dozen may round the other way
                exact = 0.9 if key in ("row_var", "col_var") else 0.99
                assert_rounding_close(value, want_states[i][key], exact, f"{what} state {key}",
                                      before_states[i].get(key))
    print(f"{case_id(case)} {dtype}: worst exact fraction {worst:.5f}")


# Test 2: the default float32 states. Each step, a float64 run of torch's equations (its
# single-tensor step on float64 tensors) from the same bf16 param widened, grad widened and
# float32 states widened; its param rounded to nearest even (torch's .to(dtype)) is gradstep's
# but in a tiny fraction (< 0.1%: gradstep computes in float32, then rounds), and within 1 ulp.
# gradstep's float32 states equal the float64 ones to float32 accuracy.
FLOAT32_STATES = [
    ("Adam", {"lr": 1e-3, "weight_decay": 0.01}),
    ("AdamW", {"lr": 1e-3, "amsgrad": True, "weight_decay": 0.1}),
    ("SGD", {"lr": 1e-2, "momentum": 0.9, "nesterov": True}),
    ("Adagrad", {"lr": 1e-2}),
    ("RMSprop", {"lr": 1e-3, "momentum": 0.9, "centered": True}),
    ("Adadelta", {"lr": 0.5}),
    ("NAdam", {"lr": 1e-3}),
    ("RAdam", {"lr": 1e-3}),
    ("Adamax", {"lr": 1e-3}),
    ("Adafactor", {"lr": 1e-2}),
    ("Lion", {"lr": 1e-4, "weight_decay": 0.1}),
]


def assert_float32_accurate(got: torch.Tensor, want: torch.Tensor, scale: torch.Tensor, what: str) -> None:
    """got (float32) is want (float64) to float32 accuracy, normwise: within 8 float32 ulps of
    the tensor's largest magnitude (before or after the step). (Elementwise, a state whose
    update cancels, e.g. Adam's g + weight_decay * p, is far below its operands' precision.)"""
    assert got.dtype == torch.float32, what
    bound = 8 * 2.0 ** -24 * max(want.abs().max().item(), scale.double().abs().max().item(), 1e-30)
    off = (got.double() - want).abs().max().item() / bound
    assert off <= 1.0, (what, off)


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("case", FLOAT32_STATES, ids=lambda c: c[0])
def test_float32_states_equal_a_float64_reference(case, dtype):
    name, opts = case
    shapes = shapes_for(name)
    ours_p = make_params(dtype, shapes=shapes)
    ours = getattr(gt, name)(ours_p, **opts)  # state_dtype=None: float32 states
    differ = total = 0
    for step, grads in enumerate(make_grads(dtype, 6, shapes=shapes)):
        before = [p.detach().clone() for p in ours_p]
        before_states = [{k: v.clone() for k, v in state_tensors(ours, p).items()} for p in ours_p] \
            if ours.state else [{} for _ in ours_p]
        wide, ref = wide_reference(name, opts, ours, ours_p, grads, torch.float64)
        for p, g in zip(ours_p, grads):
            p.grad = g.clone()
        ours.step()
        for i, (p, w) in enumerate(zip(ours_p, wide)):
            what = f"{name} {dtype} step {step} param {i}"
            want = w.detach().to(dtype)  # round to nearest even
            assert_rounding_close(p, want, 0.99, what, before[i])
            differ += int((p != want).sum())
            total += p.numel()
            mine, theirs = state_tensors(ours, p), state_tensors(ref, w)
            assert mine.keys() == theirs.keys(), what
            for key, value in mine.items():
                assert value.shape == theirs[key].shape, (what, key)
                assert_float32_accurate(value, theirs[key], before_states[i].get(key, value), f"{what} state {key}")
    assert differ / total < 1e-3, (name, differ, total)
    print(f"{name} {dtype}: {differ} of {total} param elements 1 ulp from the float64 reference rounded")


# Test 3: master_weights. The master is torch's optimizer run in float32 on float32 params
# initialised to the same values (the grads the same bf16 values, widened): a float32
# trajectory; the half param is the master rounded to nearest, at every step.
MASTER_CASES = [
    ("Adam", {"lr": 1e-3, "weight_decay": 0.01}),
    ("AdamW", {"lr": 1e-3, "amsgrad": True, "weight_decay": 0.1}),
    ("SGD", {"lr": 1e-2, "momentum": 0.9}),
    ("Adagrad", {"lr": 1e-2}),
    ("RMSprop", {"lr": 1e-3}),
    ("NAdam", {"lr": 1e-3}),
    ("RAdam", {"lr": 1e-3}),
    ("Adamax", {"lr": 1e-3}),
    ("Adadelta", {"lr": 0.5}),
    ("Adafactor", {"lr": 1e-2}),
    ("Lion", {"lr": 1e-4, "weight_decay": 0.1}),
]


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("case", MASTER_CASES, ids=lambda c: c[0])
def test_master_weights_follow_a_float32_run(case, dtype):
    name, opts = case
    shapes = shapes_for(name)
    ours_p = make_params(dtype, shapes=shapes)
    ref_p = [p.detach().float().clone().requires_grad_() for p in ours_p]
    ours = getattr(gt, name)(ours_p, **opts, master_weights=True)
    ref = torch_class(name)(ref_p, **opts, **flags(name, False))
    worst = 0.0
    for step, grads in enumerate(make_grads(dtype, 20, shapes=shapes)):
        for p, q, g in zip(ours_p, ref_p, grads):
            p.grad, q.grad = g.clone(), g.float()
        ours.step()
        ref.step()
        for i, (p, q) in enumerate(zip(ours_p, ref_p)):
            master = ours.state[p]["master_param"]
            assert master.dtype == torch.float32 and master.shape == p.shape
            assert torch.equal(p.detach(), master.to(dtype)), (name, step, i)  # rounded from it
            # rtol: two float32 evaluations of the same equations, 20 steps on (observed up to
            # 4.4e-6 where g + weight_decay * p cancels); atol for elements near 0
            torch.testing.assert_close(master, q.detach(), rtol=5e-6, atol=1e-6)
            worst = max(worst, ((master - q.detach()).abs() / q.detach().abs().clamp(min=1e-3)).max().item())
    print(f"{name} {dtype}: master vs float32 run after 20 steps, worst relative {worst:.2e}")


# Test 4: state_dicts.
def step_with(opt: torch.optim.Optimizer, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
    for p, g in zip(params, grads):
        p.grad = g.clone()
    opt.step()


def assert_bits_equal(a: list[torch.Tensor], b: list[torch.Tensor], what: str) -> None:
    for i, (x, y) in enumerate(zip(a, b)):
        assert x.dtype == y.dtype and torch.equal(x.detach().view(-1).view(torch.uint8),
                                                  y.detach().view(-1).view(torch.uint8)), (what, i)


def assert_state_dicts_bit_equal(a: dict, b: dict) -> None:
    assert a["state"].keys() == b["state"].keys()
    for i in a["state"]:
        assert a["state"][i].keys() == b["state"][i].keys(), i
        for k, v in a["state"][i].items():
            w = b["state"][i][k]
            if isinstance(v, torch.Tensor):
                assert_bits_equal([v], [w], f"state {i} {k}")
            else:
                assert v == w, (i, k)


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_state_dict_moves_between_gradstep_and_torch_fused_adam(dtype):
    """gradstep.torch.Adam(state_dtype="param") -> torch.optim.Adam(fused=True) -> gradstep,
    mid-run: each load gives the other the same tensors (bits, dtype, shape), and the step
    after it equals the step the source takes from there, to the dtype's rounding. (Longer
    runs of the two are not compared: a 1-ulp difference in a state grows over steps.)"""
    # (no weight decay: where g + weight_decay * p cancels in exp_avg, two float32
    # evaluations of it differ by more than the ulp of the operands this bound takes)
    opts = {"lr": 1e-3, "amsgrad": True}
    keys = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    grads = make_grads(dtype, 5)
    a = make_params(dtype)
    # fused=True on gradstep's too (stored, ignored): the loaded groups say which step torch takes
    ours = gt.Adam(a, **opts, fused=True, state_dtype="param")
    for g in grads[:3]:
        step_with(ours, a, g)
    # gradstep -> torch
    b = clones(a)
    theirs = torch.optim.Adam(b, **opts, fused=True)
    theirs.load_state_dict(copy.deepcopy(ours.state_dict()))
    for p, q in zip(a, b):
        assert theirs.state[q]["step"].item() == 3
        for key in keys:
            assert theirs.state[q][key].dtype == dtype
            assert_bits_equal([theirs.state[q][key]], [ours.state[p][key]], key)
    before = [p.detach().clone() for p in a]
    states = [{k: ours.state[p][k].clone() for k in keys} for p in a]
    step_with(ours, a, grads[3])
    step_with(theirs, b, grads[3])
    for i, (p, q) in enumerate(zip(a, b)):
        assert_rounding_close(q, p, 0.99, f"torch's step 4 from gradstep's state, param {i}", before[i])
        for key in keys:
            assert_rounding_close(theirs.state[q][key], ours.state[p][key], 0.99, key, states[i][key])
    # torch -> gradstep
    c = clones(b)
    again = gt.Adam(c, **opts, fused=True, state_dtype="param")
    again.load_state_dict(copy.deepcopy(theirs.state_dict()))
    for p, q in zip(c, b):
        for key in keys:
            assert_bits_equal([again.state[p][key]], [theirs.state[q][key]], key)
    before = [q.detach().clone() for q in b]
    states = [{k: theirs.state[q][k].clone() for k in keys} for q in b]
    step_with(again, c, grads[4])
    step_with(theirs, b, grads[4])
    for i, (p, q) in enumerate(zip(c, b)):
        assert_rounding_close(p, q, 0.99, f"gradstep's step 5 from torch's state, param {i}", before[i])
        assert again.state[p]["step"].item() == theirs.state[q]["step"].item() == 5
        for key in keys:
            assert_rounding_close(again.state[p][key], theirs.state[q][key], 0.99, key, states[i][key])


def test_torch_states_load_into_float32_states_and_back():
    """torch's bf16 states into the default (float32 states): widened exactly; gradstep's
    float32 states into gradstep: kept float32 (torch's load would cast them to bf16)."""
    dtype = torch.bfloat16
    grads = make_grads(dtype, 6)
    tp = make_params(dtype)
    theirs = torch.optim.Adam(tp, lr=1e-3, fused=True)
    for g in grads[:2]:
        step_with(theirs, tp, g)
    a = clones(tp)
    ours = gt.Adam(a, lr=1e-3)
    ours.load_state_dict(copy.deepcopy(theirs.state_dict()))
    for p, q in zip(a, tp):
        for key in ("exp_avg", "exp_avg_sq"):
            assert ours.state[p][key].dtype == torch.float32
            assert torch.equal(ours.state[p][key], theirs.state[q][key].float())
    for g in grads[2:4]:
        step_with(ours, a, g)
    b = clones(a)
    other = gt.Adam(b, lr=1e-3)
    other.load_state_dict(copy.deepcopy(ours.state_dict()))
    for p, q in zip(b, a):
        for key in ("exp_avg", "exp_avg_sq"):
            assert other.state[p][key].dtype == torch.float32
            assert torch.equal(other.state[p][key], ours.state[q][key])
    for g in grads[4:]:
        step_with(ours, a, g)
        step_with(other, b, g)
    assert_bits_equal(b, a, "continued")
    assert_state_dicts_bit_equal(other.state_dict(), ours.state_dict())


@pytest.mark.parametrize("name", ["Adam", "SGD", "Lamb"])
def test_master_weights_state_dict_reloads_and_continues_bit_identically(name):
    dtype = torch.bfloat16
    opts = {"lr": 1e-2, "momentum": 0.9} if name == "SGD" else {"lr": 1e-3}
    grads = make_grads(dtype, 8)
    a = make_params(dtype)
    ours = getattr(gt, name)(a, **opts, master_weights=True)
    for g in grads[:4]:
        step_with(ours, a, g)
    saved = copy.deepcopy(ours.state_dict())
    for i in range(len(a)):
        master = saved["state"][i]["master_param"]
        assert master.dtype == torch.float32 and master.shape == a[i].shape
    b = clones(a)
    other = getattr(gt, name)(b, **opts, master_weights=True)
    other.load_state_dict(saved)
    for g in grads[4:]:
        step_with(ours, a, g)
        step_with(other, b, g)
    assert_bits_equal(b, a, "params")
    assert_state_dicts_bit_equal(other.state_dict(), ours.state_dict())


def test_a_torch_state_dict_into_master_weights_starts_the_master_from_the_param():
    dtype = torch.bfloat16
    grads = make_grads(dtype, 3)
    tp = make_params(dtype)
    theirs = torch.optim.Adam(tp, lr=1e-3, fused=True)
    for g in grads[:2]:
        step_with(theirs, tp, g)
    a = clones(tp)
    ours = gt.Adam(a, lr=1e-3, master_weights=True)
    ours.load_state_dict(copy.deepcopy(theirs.state_dict()))
    assert ours.param_groups[0]["master_weights"] is True  # torch's groups have none: ours kept
    assert all("master_param" not in ours.state[p] for p in a)
    ours.param_groups[0]["lr"] = 0.0  # a step that keeps the param: the master is the param's value
    step_with(ours, a, grads[2])
    for p, q in zip(a, tp):
        assert torch.equal(ours.state[p]["master_param"], q.detach().float())
        assert torch.equal(p.detach(), q.detach())


@pytest.mark.parametrize("name", ["Adam", "SGD", "Lion", "Lamb", "AdamWScheduleFree"])
def test_stochastic_rounding_resumes_bit_identically(name):
    """Saved at step 5 and loaded into a fresh optimizer constructed with other rounding
    options: steps 6..10 are the uninterrupted run's (rounding and seed travel in the groups,
    SGD's and Lion's rounding count in the state)."""
    dtype = torch.bfloat16
    opts = {"lr": 1e-2, "momentum": 0.9} if name == "SGD" else {"lr": 1e-3}
    grads = make_grads(dtype, 10)
    a = make_params(dtype)
    ours = getattr(gt, name)(a, **opts, rounding="stochastic", seed=1234)
    if name == "AdamWScheduleFree":
        ours.train()
    for g in grads[:5]:
        step_with(ours, a, g)
    saved = copy.deepcopy(ours.state_dict())
    b = clones(a)
    other = getattr(gt, name)(b, **opts)  # nearest, seed 0: the state_dict's replace them
    other.load_state_dict(saved)
    assert other.param_groups[0]["rounding"] == "stochastic" and other.param_groups[0]["seed"] == 1234
    for g in grads[5:]:
        step_with(ours, a, g)
        step_with(other, b, g)
    assert_bits_equal(b, a, "params")
    assert_state_dicts_bit_equal(other.state_dict(), ours.state_dict())
    # and the rounding was stochastic: a nearest run from the same start differs
    c = make_params(dtype)
    nearest = getattr(gt, name)(c, **opts)
    if name == "AdamWScheduleFree":
        nearest.train()
    for g in grads:
        step_with(nearest, c, g)
    assert not all(torch.equal(x, y) for x, y in zip(c, a))


# Test 5: stochastic rounding's statistics. SGD (no momentum) and Adam on bf16 params all
# 1.0 with grad -1 and lr = 2^-9, a quarter of bf16's ulp above 1.0 (2^-7): each step adds
# a quarter ulp (Adam: lr * m_hat / (sqrt(v_hat) + eps), a quarter ulp less 1e-8 of one).
# Nearest never moves; stochastic moves an element up one ulp with probability 1/4, so the
# mean rises by 2^-9 per step: within 5 standard deviations over 100k elements.
@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_stochastic_rounding_moves_by_the_expected_amount(name):
    n, steps, ulp1 = 100_000, 8, 2.0 ** -7
    lr = ulp1 / 4
    runs = {}
    for rounding in ("nearest", "stochastic"):
        p = torch.ones(n, dtype=torch.bfloat16, requires_grad=True)
        opt = getattr(gt, name)([p], lr=lr, rounding=rounding, seed=7)
        for step in range(1, steps + 1):
            p.grad = torch.full((n,), -1.0, dtype=torch.bfloat16)
            opt.step()
            if rounding == "nearest":
                assert torch.equal(p.detach(), torch.ones(n, dtype=torch.bfloat16)), step
            else:
                up = (p.detach().double() - 1.0) / ulp1  # ulps above 1.0
                assert up.min().item() >= 0 and (up == up.round()).all()
                mean = up.mean().item() * ulp1
                # each step an element moves up by one ulp with probability 1/4, independently
                sd = (step * 0.25 * 0.75 / n) ** 0.5 * ulp1
                assert abs(mean - step * lr) < 5 * sd, (step, mean, step * lr, sd)
                if step == 1:
                    moved = (up == 1).double().mean().item()
                    assert abs(moved - 0.25) < 5 * (0.25 * 0.75 / n) ** 0.5, moved
        runs[rounding] = p.detach().clone()
    # different seeds, different bits; the same seed, the same
    again = torch.ones(n, dtype=torch.bfloat16, requires_grad=True)
    other = torch.ones(n, dtype=torch.bfloat16, requires_grad=True)
    a = getattr(gt, name)([again], lr=lr, rounding="stochastic", seed=7)
    b = getattr(gt, name)([other], lr=lr, rounding="stochastic", seed=8)
    for _ in range(steps):
        again.grad = torch.full((n,), -1.0, dtype=torch.bfloat16)
        other.grad = torch.full((n,), -1.0, dtype=torch.bfloat16)
        a.step()
        b.step()
    assert torch.equal(again.detach(), runs["stochastic"])
    assert not torch.equal(other.detach(), runs["stochastic"])


def test_stochastic_keys_per_set():
    """gradstep.torch's documented keying: in a set starting at flat position 0 a param's key
    is (seed, step, its position); a set starting at a > 0 has seed mix(seed, a). So the same
    params in one group or two round alike in the set at 0, differently (and repeatably) in
    the other."""
    dtype = torch.bfloat16
    grads = make_grads(dtype, 3)
    a = make_params(dtype)
    b = clones(a)
    one = gt.Adam(a, lr=1e-3, rounding="stochastic", seed=3)
    two = gt.Adam([{"params": b[:1]}, {"params": b[1:]}], lr=1e-3, rounding="stochastic", seed=3)
    for g in grads:
        step_with(one, a, g)
        step_with(two, b, g)
    assert_bits_equal(b[:1], a[:1], "the first set, at 0: the same keys")
    # the second group's set starts at position 1: its seed is mix(3, 1), unlike the
    # single set's tensor 1 (keyed (3, step, 1)): a different, still deterministic, draw
    assert not torch.equal(b[1], a[1])
    c = clones(make_params(dtype))
    three = gt.Adam([{"params": c[:1]}, {"params": c[1:]}], lr=1e-3, rounding="stochastic", seed=3)
    for g in grads:
        step_with(three, c, g)
    assert_bits_equal(c, b, "the same groups, the same bits")


# Test 6: bit identity across ISA targets and thread counts, bf16, nearest and stochastic, on
# tensors of several 8192-element chunks.
ISA_CASES = [("Adam", {"lr": 1e-3, "weight_decay": 0.01}), ("SGD", {"lr": 1e-2, "momentum": 0.9}),
             ("AdamW", {"lr": 1e-3}), ("Lamb", {"lr": 1e-3})]


def run_bits(name: str, opts: dict, rounding: str, master: bool, threads: int) -> list[torch.Tensor]:
    shapes = [(3, 10001), (8193,), (5,)]
    before = gs.get_num_threads()
    gs.set_num_threads(threads)
    try:
        p = make_params(torch.bfloat16, shapes=shapes)
        opt = getattr(gt, name)(p, **opts, rounding=rounding, seed=11, master_weights=master)
        for g in make_grads(torch.bfloat16, 4, shapes=shapes):
            step_with(opt, p, g)
        out = [x.detach().clone() for x in p]
        if master:
            out += [opt.state[x]["master_param"].clone() for x in p]
        return out
    finally:
        gs.set_num_threads(before)


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("case", ISA_CASES, ids=lambda c: c[0])
def test_bits_equal_across_isas_and_threads(case, rounding, each_isa):
    name, opts = case
    gs.set_isa(gs.available_isas()[0])  # the baseline: the first target, one thread
    try:
        base = {m: run_bits(name, opts, rounding, m, 1) for m in (False, True)}
    finally:
        gs.set_isa(each_isa)
    for threads in (1, 2, 3, 4):
        for master in (False, True):
            assert_bits_equal(run_bits(name, opts, rounding, master, threads), base[master],
                              f"{name} {rounding} {each_isa} threads={threads} master={master}")


# Test 7: bad input raises, naming the argument, and changes nothing.
def snapshot(opt: torch.optim.Optimizer, params: list[torch.Tensor]):
    return ([p.detach().clone() for p in params], copy.deepcopy(opt.state_dict()))


def assert_unchanged(opt: torch.optim.Optimizer, params: list[torch.Tensor], before) -> None:
    assert_bits_equal([p.detach() for p in params], before[0], "params")
    now = opt.state_dict()
    assert now["param_groups"] == before[1]["param_groups"]
    assert_state_dicts_bit_equal(now, before[1])


@pytest.mark.parametrize("kwargs, error, match", [
    ({"state_dtype": "float16"}, ValueError, "state_dtype must be None, 'float32' or 'param'"),
    ({"state_dtype": torch.float32}, ValueError, "state_dtype must be"),
    ({"rounding": "up"}, ValueError, "rounding must be 'nearest' or 'stochastic'"),
    ({"seed": -1}, ValueError, "seed must be an int"),
    ({"seed": 2 ** 64}, ValueError, "seed must be an int"),
    ({"seed": 1.5}, ValueError, "seed must be an int"),
    ({"master_weights": "yes"}, TypeError, "master_weights must be a bool"),
])
@pytest.mark.parametrize("name", ["Adam", "Lion", "Prodigy"])
def test_bad_options_are_refused_at_construction(name, kwargs, error, match):
    with pytest.raises(error, match=re.escape(match)):
        getattr(gt, name)(make_params(torch.bfloat16), **kwargs)


def test_options_that_do_not_fit_a_param_are_refused_naming_it():
    good = make_params(torch.bfloat16)
    wide = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match=re.escape("param_groups[0]['params'][2]: master_weights=True")):
        gt.Adam([*good, wide], master_weights=True)
    with pytest.raises(ValueError, match=re.escape("param_groups[0]['params'][0]: master_weights=True")):
        gt.SGD([torch.zeros(3, requires_grad=True)], lr=0.1, master_weights=True)  # float32
    with pytest.raises(ValueError, match=re.escape("param_groups[0]['params'][0]: state_dtype='float32'")):
        gt.Adam([wide], state_dtype="float32")
    with pytest.raises(ValueError, match=re.escape("param_groups[0]['params'][0]: state_dtype='param' is not "
                                                   "supported by gradstep.torch.Prodigy")):
        gt.Prodigy(good, state_dtype="param")
    opt = gt.Adam(good, lr=1e-3)
    before = len(opt.param_groups), copy.deepcopy(opt.defaults)
    with pytest.raises(ValueError, match=re.escape("param_groups[1]['params'][0]: master_weights=True")):
        opt.add_param_group({"params": [wide], "master_weights": True})
    with pytest.raises(ValueError, match=re.escape("param_groups[1]: rounding must be")):
        opt.add_param_group({"params": [wide], "rounding": "down"})
    assert (len(opt.param_groups), opt.defaults) == before


def corrupt(opt, params, how):
    p = params[1]
    state = opt.state[p]
    if how == "bad rounding":
        opt.param_groups[1]["rounding"] = "sideways"
    elif how == "bad seed":
        opt.param_groups[1]["seed"] = -5
    elif how == "bad state_dtype":
        opt.param_groups[1]["state_dtype"] = "bfloat16"
    elif how == "float64 state":
        state["exp_avg"] = state["exp_avg"].double()
    elif how == "bf16 state under float32 states":
        state["exp_avg_sq"] = state["exp_avg_sq"].bfloat16()
    elif how == "bf16 master":
        state["master_param"] = state["master_param"].bfloat16()
    elif how == "master shape":
        state["master_param"] = torch.zeros(3)
    elif how == "master_weights on float32":
        opt.param_groups[1]["params"][0].data = opt.param_groups[1]["params"][0].data.float()
        opt.param_groups[1]["params"][0].grad = torch.zeros_like(opt.param_groups[1]["params"][0])
    elif how == "float32 grad":
        p.grad.data = p.grad.data.float()  # (torch refuses `p.grad = ` of another dtype)


BAD = {"bad rounding": (ValueError, "param_groups[1]: rounding must be"),
       "bad seed": (ValueError, "param_groups[1]: seed must be"),
       "bad state_dtype": (ValueError, "param_groups[1]: state_dtype must be"),
       "float64 state": (TypeError, "param_groups[1]['params'][0]: state 'exp_avg' dtype torch.float64"),
       "bf16 state under float32 states": (TypeError, "state 'exp_avg_sq' dtype torch.bfloat16 differs from "
                                                      "torch.float32"),
       "bf16 master": (TypeError, "param_groups[1]['params'][0]: state 'master_param' must be float32"),
       "master shape": (ValueError, "param_groups[1]['params'][0]: state 'master_param' shape"),
       "master_weights on float32": (ValueError, "param_groups[1]['params'][0]: master_weights=True"),
       "float32 grad": (TypeError, "param_groups[1]['params'][0]: grad dtype torch.float32")}


@pytest.mark.parametrize("steady", [False, True], ids=["planned", "after steady steps"])
@pytest.mark.parametrize("how", list(BAD))
def test_bad_input_at_a_step_raises_and_changes_nothing(how, steady):
    """Two groups (the first fine): the step refuses before writing anything, in either."""
    dtype = torch.bfloat16
    params = make_params(dtype)
    opt = gt.Adam([{"params": params[:1]}, {"params": params[1:]}], lr=1e-3, master_weights=True,
                  rounding="stochastic", seed=5)
    grads = make_grads(dtype, 3)
    for g in grads[:2 if steady else 1]:
        step_with(opt, params, g)
    for p, g in zip(params, grads[2]):
        p.grad = g.clone()
    corrupt(opt, params, how)
    before = snapshot(opt, params)
    error, match = BAD[how]
    with pytest.raises(error, match=re.escape(match)):
        opt.step()
    assert_unchanged(opt, params, before)


# torch's CPU kernels differ by CPU (default, avx2, avx512): the fused comparison again, in a
# subprocess with each forced.
@pytest.mark.parametrize("capability", ["default", "avx2"])
def test_param_states_equal_torch_fused_under_each_cpu_capability(capability, tmp_path):
    out = tmp_path / "torch_half.pt"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability,
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, str(HERE / "_torch_half_worker.py"), str(out)], env=env, check=True,
                   timeout=600)
    results = torch.load(out, weights_only=False)
    assert results["capability"].lower() == capability
    for (name, dtype_name), (opts, steps) in results["runs"].items():
        params = [t.clone().requires_grad_() for t in steps[0][0][0]]
        ours = getattr(gt, name)(params, **opts, fused=True, state_dtype="param")
        for k, ((before, state), grads, after, state_after) in enumerate(steps):
            with torch.no_grad():
                for p, b in zip(params, before):
                    p.copy_(b)
            if k:
                ours.load_state_dict(copy.deepcopy(state))  # the same start for this step
            step_with(ours, params, grads)
            for i, (p, want) in enumerate(zip(params, after)):
                what = f"{name} {dtype_name} {capability} step {k} param {i}"
                assert_rounding_close(p, want, 0.99, what, before[i])
                for key, value in state_after["state"][i].items():
                    if key != "step":
                        assert_rounding_close(ours.state[p][key], value, 0.99, f"{what} {key}",
                                              state["state"].get(i, {}).get(key))


# The package adapters: bf16 params with master_weights; the master is the reference package's
# optimizer run in float32 from the same values (the grads the same bf16 values, widened).
PACKAGES = [("Prodigy", {"lr": 1.0}), ("DAdaptAdam", {"lr": 1.0}), ("DAdaptSGD", {"lr": 1.0}),
            ("Lamb", {"lr": 1e-3}), ("AdamWScheduleFree", {"lr": 1e-3}), ("SGDScheduleFree", {"lr": 1e-2})]


def reference_class(name: str):
    import importlib

    from gradstep import _spec
    from gradstep.bench.spec import import_reference  # (timm's Lamb without torchvision)

    if name == "Lamb":
        return import_reference("timm.optim.lamb", "Lamb")
    return getattr(importlib.import_module(_spec.by_name(name).reference), name)


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("case", PACKAGES, ids=lambda c: c[0])
def test_package_adapters_master_follows_the_reference_in_float32(case, dtype):
    name, opts = case
    ours_p = make_params(dtype)
    ref_p = [p.detach().float().clone().requires_grad_() for p in ours_p]
    ours = getattr(gt, name)(ours_p, **opts, master_weights=True)
    ref = reference_class(name)(ref_p, **opts)
    if "ScheduleFree" in name:
        ours.train()
        ref.train()
    for step, grads in enumerate(make_grads(dtype, 20)):
        for p, q, g in zip(ours_p, ref_p, grads):
            p.grad, q.grad = g.clone(), g.float()
        ours.step()
        ref.step()
        for i, (p, q) in enumerate(zip(ours_p, ref_p)):
            master = ours.state[p]["master_param"]
            assert torch.equal(p.detach(), master.to(dtype)), (name, step, i)
            torch.testing.assert_close(master, q.detach(), rtol=2e-5, atol=1e-5)
    if "ScheduleFree" in name:  # the mode switch moves the master, and the param with it
        ours.eval()
        ref.eval()
        for p, q in zip(ours_p, ref_p):
            master = ours.state[p]["master_param"]
            assert torch.equal(p.detach(), master.to(dtype))
            torch.testing.assert_close(master, q.detach(), rtol=2e-5, atol=1e-5)


# Prodigy, D-Adaptation and Lamb sum over their states between the passes of a step: their
# states stay float32 for half params (test_reducing_adapters_refuse_half_states).
REDUCING = ("Prodigy", "DAdaptAdam", "DAdaptSGD", "Lamb")


@pytest.mark.parametrize("name", REDUCING)
def test_reducing_adapters_refuse_half_states(name):
    opts = dict(PACKAGES)[name]
    with pytest.raises(ValueError, match=re.escape(f"state_dtype='param' is not supported by gradstep.torch.{name}")):
        getattr(gt, name)(make_params(torch.bfloat16), **opts, state_dtype="param")
    opt = getattr(gt, name)(make_params(torch.bfloat16), **opts)  # float32 states: fine
    assert opt.param_groups[0]["state_dtype"] is None


@pytest.mark.parametrize("case", [c for c in PACKAGES if c[0] not in REDUCING], ids=lambda c: c[0])
def test_package_adapters_take_half_states(case):
    """state_dtype="param": the reference's state layout in the param's dtype, and the step
    is a float32 run's, rounded (one step from the same start, to the dtype's rounding)."""
    name, opts = case
    dtype = torch.bfloat16
    ours_p = make_params(dtype)
    ref_p = [p.detach().float().clone().requires_grad_() for p in ours_p]
    ours = getattr(gt, name)(ours_p, **opts, state_dtype="param")
    ref = reference_class(name)(ref_p, **opts)
    if "ScheduleFree" in name:
        ours.train()
        ref.train()
    grads = make_grads(dtype, 1)[0]
    before = [p.detach().clone() for p in ours_p]
    for p, q, g in zip(ours_p, ref_p, grads):
        p.grad, q.grad = g.clone(), g.float()
    ours.step()
    ref.step()
    for i, (p, q) in enumerate(zip(ours_p, ref_p)):
        assert_rounding_close(p, q.detach().to(dtype), 0.99, f"{name} param {i}", before[i])
        for key, value in ours.state[p].items():
            if isinstance(value, torch.Tensor) and value.shape == p.shape:
                assert value.dtype == dtype, key


@pytest.mark.parametrize("master", [False, True])
def test_flat_bf16_parameters_step_as_the_model_s(master):
    """flatten_parameters takes bf16 members: one flat bf16 parameter, stepped (nearest) as
    the model's own parameters are, bit for bit (elementwise: the padding changes nothing)."""
    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(30, 20), torch.nn.Linear(20, 5)).to(torch.bfloat16)

    m1, m2 = model(), model()
    (flat,) = gt.flatten_parameters(m1)
    assert flat.dtype == torch.bfloat16
    o1 = gt.Adam([flat], lr=1e-3, master_weights=master)
    o2 = gt.Adam(m2.parameters(), lr=1e-3, master_weights=master)
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        x = torch.randn(8, 30, generator=g).bfloat16()
        for m, o in ((m1, o1), (m2, o2)):
            o.zero_grad()
            m(x).float().pow(2).mean().backward()
            o.step()
    assert_bits_equal(list(m1.parameters()), list(m2.parameters()), "flat vs per-parameter")


# The steady path (register_torch.cpp's TorchGroup): half params with float32 or half states
# and masters take it (it checks each state's own dtype); SGD/Lion with stochastic rounding,
# and Adafactor with state_dtype="param" (float32 copies of its row/col states), do not.
@pytest.mark.parametrize("name, kwargs, steady", [
    ("Adam", {}, True), ("Adam", {"state_dtype": "param"}, True), ("Adam", {"master_weights": True}, True),
    ("Adam", {"rounding": "stochastic", "master_weights": True}, True),
    ("SGD", {"momentum": 0.9, "master_weights": True}, True),
    ("SGD", {"momentum": 0.9, "rounding": "stochastic"}, False),
    ("Adafactor", {}, True), ("Adafactor", {"state_dtype": "param"}, False),
    ("Prodigy", {"master_weights": True}, True), ("Lamb", {"master_weights": True}, True),
])
def test_half_params_take_the_steady_path(name, kwargs, steady):
    shapes = shapes_for(name)
    params = make_params(torch.bfloat16, shapes=shapes)
    opt = getattr(gt, name)(params, lr=1e-3, **kwargs)
    planned = []
    method = "_plan" if name in ("Prodigy", "Lamb") else "_planned_step"
    plan = getattr(opt, method)

    def counted(*args):
        planned.append(1)
        return plan(*args)

    setattr(opt, method, counted)
    ref_p = clones(params)
    ref = getattr(gt, name)(ref_p, lr=1e-3, **kwargs)
    for k, g in enumerate(make_grads(torch.bfloat16, 5, shapes=shapes)):
        step_with(opt, params, g)
        ref.__dict__["_steady"] = ref.__dict__["_package_steady"] = None  # ref: always the plan
        step_with(ref, ref_p, g)
        if k == 2:  # a changed seed is seen: the plan sets it
            for o in (opt, ref):
                o.param_groups[0]["seed"] = 99
    assert len(planned) == (2 if steady else 5), planned
    # ref took every step through the plan: the same bits
    assert_bits_equal(params, ref_p, "steady vs planned")


def test_global_package_groups_must_agree_on_rounding():
    params = make_params(torch.bfloat16)
    opt = gt.Prodigy([{"params": params[:1]}, {"params": params[1:], "seed": 4}], lr=1.0)
    for p, g in zip(params, make_grads(torch.bfloat16, 1)[0]):
        p.grad = g
    before = snapshot(opt, params)
    with pytest.raises(NotImplementedError, match=re.escape("param_groups[1]: rounding='nearest', seed=4 differ")):
        opt.step()
    assert_unchanged(opt, params, before)


def test_state_dtype_float32_is_the_default_for_half_params():
    grads = make_grads(torch.bfloat16, 3)
    a, b = make_params(torch.bfloat16), make_params(torch.bfloat16)
    x = gt.Adam(a, lr=1e-3)
    y = gt.Adam(b, lr=1e-3, state_dtype="float32")
    for g in grads:
        step_with(x, a, g)
        step_with(y, b, g)
    assert_bits_equal(b, a, "params")
    assert all(y.state[p]["exp_avg"].dtype == torch.float32 for p in b)


def test_grad_scaler_unscales_half_grads_with_fused():
    """fused=True: torch's GradScaler contract (grad_scale/found_inf) holds for bf16 too."""
    grads = make_grads(torch.bfloat16, 1)[0]
    a, b = make_params(torch.bfloat16), make_params(torch.bfloat16)
    x = gt.Adam(a, lr=1e-3, fused=True)
    y = gt.Adam(b, lr=1e-3, fused=True)
    scale = torch.tensor(4.0)
    x.grad_scale, x.found_inf = scale, torch.tensor(0.0)
    for p, q, g in zip(a, b, grads):
        p.grad = (g.float() * 4).bfloat16()  # exact: a power of two
        q.grad = g.clone()
    x.step()
    y.step()
    assert_bits_equal(a, b, "scaled then unscaled")
