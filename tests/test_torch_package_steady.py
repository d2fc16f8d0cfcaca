"""The steady step of gradstep.torch's package adapters (Prodigy, DAdaptAdam, DAdaptSGD,
Lamb, AdamWScheduleFree, SGDScheduleFree) and of gradstep.torch.Adafactor (whose row_var
and col_var are not the param's size): after a planned step, later steps skip the
per-param plan while nothing but the grads' values changed. Every change a user can
make between steps must still give the reference's result (prodigyopt, dadaptation,
timm, schedulefree, torch.optim.Adafactor; float64, rtol 1e-10), with the plan running
again; unchanged steps must take the steady path; bad input met after a change still
raises before any write.
"""

from __future__ import annotations

import importlib
from collections import defaultdict

import pytest
import torch

import gradstep.torch as gt
from gradstep import _spec
from gradstep.bench.spec import import_reference  # (timm's Lamb without torchvision)

PACKAGE = ["Prodigy", "DAdaptAdam", "DAdaptSGD", "Lamb", "AdamWScheduleFree", "SGDScheduleFree"]
NAMES = [*PACKAGE, "Adafactor"]
SCHEDULE_FREE = ("AdamWScheduleFree", "SGDScheduleFree")
LEARNING_RATE_FREE = ("Prodigy", "DAdaptAdam", "DAdaptSGD")

CONFIGS = {
    "Prodigy": dict(lr=1.0, weight_decay=0.01),
    "DAdaptAdam": dict(lr=1.0, weight_decay=0.01, decouple=True),
    "DAdaptSGD": dict(lr=1.0, momentum=0.9, weight_decay=0.01),
    "Lamb": dict(lr=1e-2, weight_decay=0.01, max_grad_norm=1.0),
    "AdamWScheduleFree": dict(lr=1e-2, weight_decay=0.01, warmup_steps=2),
    "SGDScheduleFree": dict(lr=0.05, momentum=0.9, warmup_steps=2),
    "Adafactor": dict(lr=1e-2, weight_decay=0.01, foreach=False),
}
SHAPES = [(5, 5), (7,), (3, 4), (6,), (2, 3)]  # groups: [0, 1] and [2, 3, 4] (one group for Adafactor)
LOGGED = {"d_denom", "d_hat"}  # prodigyopt's logging-only keys
HALF = set(gt._HALF_OPTIONS)  # gradstep.torch's half-precision options, in every group


def reference_class(name):
    if name == "Adafactor":
        return torch.optim.Adafactor
    if name == "Lamb":
        return import_reference("timm.optim.lamb", "Lamb")
    return getattr(importlib.import_module(_spec.by_name(name).reference), name)


def _no_grad(fn):
    with torch.no_grad():
        return fn()


class Pair:
    """The reference and gradstep.torch.X over equal params, stepped with equal grads;
    `planned` counts gradstep's planned steps."""

    def __init__(self, name: str, **kwargs) -> None:
        self.name = name
        g = torch.Generator().manual_seed(0)
        start = [torch.randn(s, generator=g, dtype=torch.float64) for s in SHAPES]
        self.theirs = [torch.nn.Parameter(t.clone()) for t in start]
        self.ours = [torch.nn.Parameter(t.clone()) for t in start]
        options = {**CONFIGS[name], **kwargs}
        if name == "Adafactor":
            self.oracle = torch.optim.Adafactor(self.theirs, **options)
            self.opt = gt.Adafactor(self.ours, **options)
        else:
            def groups(ps):
                return [{"params": ps[:2]}, {"params": ps[2:], "weight_decay": 0.1}]

            self.oracle = reference_class(name)(groups(self.theirs), **options)
            self.opt = getattr(gt, name)(groups(self.ours), **options)
        if name in SCHEDULE_FREE:
            self.oracle.train()
            self.opt.train()
        self.gen = torch.Generator().manual_seed(1)
        self.skip: set[int] = set()  # params left without a grad
        self.planned = 0
        method = "_planned_step" if name == "Adafactor" else "_plan"
        plan = getattr(self.opt, method)

        def counted():
            self.planned += 1
            return plan()

        setattr(self.opt, method, counted)

    def grads(self) -> None:
        for i, (a, b) in enumerate(zip(self.theirs, self.ours)):
            g = torch.randn(a.shape, generator=self.gen, dtype=torch.float64)
            a.grad, b.grad = (None, None) if i in self.skip else (g.clone(), g.clone())
        known = {id(p) for p in self.theirs}
        for ga, gb in zip(self.oracle.param_groups[1:], self.opt.param_groups[1:]):  # an added group
            for a, b in zip(ga["params"], gb["params"]):
                if id(a) not in known:
                    g = torch.randn(a.shape, generator=self.gen, dtype=torch.float64)
                    a.grad, b.grad = g.clone(), g.clone()

    def step(self) -> None:
        self.grads()
        self.oracle.step()
        self.opt.step()
        self.compare()

    def compare(self) -> None:
        for a, b in zip(self.theirs, self.ours):
            torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-10, atol=1e-12)
        for ga, gb in zip(self.oracle.param_groups, self.opt.param_groups):
            keys = set(ga) - LOGGED - {"params"}
            assert keys == set(gb) - LOGGED - HALF - {"params"}
            for key in keys:
                va, vb = ga[key], gb[key]
                if isinstance(va, float) and isinstance(vb, float):
                    assert vb == pytest.approx(va, rel=1e-10, abs=1e-300), key
                elif isinstance(va, torch.Tensor):
                    assert isinstance(vb, torch.Tensor) and vb.dtype == va.dtype and torch.equal(vb, va), key
                else:
                    assert vb == va, key
            for a, b in zip(ga["params"], gb["params"]):
                sa, sb = self.oracle.state.get(a, {}), self.opt.state.get(b, {})
                assert set(sa) == set(sb)
                for key, value in sa.items():
                    if isinstance(value, torch.Tensor):
                        assert sb[key].shape == value.shape, key
                        torch.testing.assert_close(sb[key], value, rtol=1e-10, atol=1e-12)
                    else:
                        assert sb[key] == value, key

    def both(self, change) -> None:
        change(self.theirs, self.oracle)
        change(self.ours, self.opt)

    def snapshot(self):
        return ([p.detach().clone() for p in self.ours],
                {id(p): {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in self.opt.state[p].items()}
                 for p in self.ours if p in self.opt.state},
                [{k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in g.items() if k != "params"}
                 for g in self.opt.param_groups])

    def assert_unchanged(self, before) -> None:
        params, states, groups = before
        for p, b in zip(self.ours, params):
            assert torch.equal(p.detach(), b)
        for p in self.ours:
            if id(p) in states:
                assert set(self.opt.state[p]) == set(states[id(p)])
                for k, v in self.opt.state[p].items():
                    assert torch.equal(v, states[id(p)][k]) if isinstance(v, torch.Tensor) else v == states[id(p)][k]
        for g, b in zip(self.opt.param_groups, groups):
            for k, v in b.items():
                assert torch.equal(g[k], v) if isinstance(v, torch.Tensor) else g[k] == v, k


def _tensor_states(opt, p):
    return [(k, v) for k, v in opt.state[p].items() if k != "step" and isinstance(v, torch.Tensor)]


def _add_group(ps, opt):
    opt.add_param_group({"params": [torch.nn.Parameter(torch.linspace(-1, 1, 6, dtype=torch.float64))]})
    if hasattr(opt, "train"):  # a group added in eval mode (the defaults' train_mode)
        opt.train()


CHANGES = {
    "param .data replaced": lambda ps, opt: setattr(ps[1], "data", ps[1].detach().clone() + 0.5),
    "param set_ to other storage": lambda ps, opt: _no_grad(lambda: ps[2].set_(ps[2].detach().clone() * 2)),
    "param values changed in place": lambda ps, opt: ps[1].data.mul_(0.5),
    "state dict entry replaced": lambda ps, opt: [
        opt.state[p].__setitem__(k, torch.zeros_like(v)) for p in ps[:3] for k, v in _tensor_states(opt, p)],
    "state .data replaced": lambda ps, opt: [
        setattr(v, "data", torch.full_like(v, 0.25)) for p in ps[:1] for k, v in _tensor_states(opt, p)],
    "state zeroed in place": lambda ps, opt: [v.zero_() for p in ps[1:3] for k, v in _tensor_states(opt, p)],
    "one param's state deleted": lambda ps, opt: opt.state.pop(ps[3], None),
    "whole state replaced": lambda ps, opt: setattr(opt, "state", defaultdict(dict)),
    "lr changed": lambda ps, opt: [g.__setitem__("lr", g["lr"] * 0.3) for g in opt.param_groups],
    "weight_decay changed": lambda ps, opt: opt.param_groups[-1].__setitem__("weight_decay", 0.2),
    "param dropped from group": lambda ps, opt: opt.param_groups[0]["params"].pop(1),
    "group params reordered": lambda ps, opt: opt.param_groups[0]["params"].reverse(),
    "group added": _add_group,
}
# Each optimizer's own values, kept in its groups, its state or on the optimizer.
CARRIED = {
    "d changed": (LEARNING_RATE_FREE, lambda ps, opt: [g.__setitem__("d", g["d"] * 2.0) for g in opt.param_groups]),
    "k changed": (LEARNING_RATE_FREE + SCHEDULE_FREE,
                  lambda ps, opt: [g.__setitem__("k", g["k"] + 5) for g in opt.param_groups]),
    "state step changed": (("Prodigy", "DAdaptAdam"), lambda ps, opt: opt.state[ps[0]].__setitem__("step", 100)),
    "state step deleted": (("Prodigy", "DAdaptAdam"), lambda ps, opt: opt.state[ps[1]].pop("step")),
    "z replaced": (("DAdaptSGD",) + SCHEDULE_FREE,
                   lambda ps, opt: opt.state[ps[0]].__setitem__("z", opt.state[ps[0]]["z"].clone() * 0.5)),
    "weight_sum changed": (SCHEDULE_FREE, lambda ps, opt: opt.param_groups[1].__setitem__(
        "weight_sum", opt.param_groups[1]["weight_sum"] * 1.5)),
    "lr_max changed": (SCHEDULE_FREE, lambda ps, opt: [g.__setitem__("lr_max", g["lr_max"] * 2.0)
                                                       for g in opt.param_groups]),
    "eval and train": (SCHEDULE_FREE, lambda ps, opt: (opt.eval(), opt.train())),
    "group step changed in place": (("Lamb",), lambda ps, opt: [g["step"].fill_(40.0) for g in opt.param_groups]),
    "group step replaced": (("Lamb",), lambda ps, opt: [
        g.__setitem__("step", torch.tensor(10.0, dtype=g["step"].dtype)) for g in opt.param_groups]),
    "defaults max_grad_norm changed": (("Lamb",), lambda ps, opt: opt.defaults.__setitem__("max_grad_norm", 0.05)),
    "step count replaced": (("Adafactor",), lambda ps, opt: opt.state[ps[0]].__setitem__(
        "step", torch.tensor(100.0, dtype=opt.state[ps[0]]["step"].dtype))),
    "step count changed in place": (("Adafactor",), lambda ps, opt: [opt.state[p]["step"].fill_(40.0) for p in ps]),
    "row_var replaced": (("Adafactor",), lambda ps, opt: opt.state[ps[0]].__setitem__(
        "row_var", opt.state[ps[0]]["row_var"].clone() * 2.0)),
    "param .data a transposed view": (("Adafactor",), lambda ps, opt: setattr(ps[0], "data", ps[0].data.t())),
    "param t_() in place": (("Adafactor",), lambda ps, opt: _no_grad(ps[0].t_)),  # square: torch's shapes hold
}
# Changes the steady path itself takes into account (values in place, lr; the twins' hyperparameters).
# prodigyopt's and dadaptation's state["step"] is only counted (the step writes it, never reads it).
SEEN_ON_THE_STEADY_PATH = ("param values changed in place", "state zeroed in place", "eval and train",
                           "state step changed", "lr changed")
STRIDED = ("param .data a transposed view", "param t_() in place")  # planned every time after


def _cases():
    out = []
    for name in NAMES:
        for change in CHANGES:
            if change == "group added" and name in ("Lamb", "Adafactor"):
                continue  # Lamb: the new group's step differs (refused); Adafactor: one group here
            if change in ("param dropped from group", "group params reordered") and name == "Adafactor":
                continue  # in test_torch_steady's terms these are the twins', covered there
            out.append((name, change))
        out.append((name, "a grad removed"))
        out += [(name, change) for change, (names, _) in CARRIED.items() if name in names]
    return out


@pytest.mark.parametrize("name", NAMES)
def test_unchanged_steps_take_the_steady_path(name):
    pair = Pair(name)
    for _ in range(6):
        pair.step()
    assert pair.planned == 1


@pytest.mark.parametrize("name,change", _cases())
def test_a_change_between_steps_is_seen_as_the_reference_sees_it(name, change):
    pair = Pair(name)
    for _ in range(3):
        pair.step()
    if change == "a grad removed":  # from then on (the references skip it; its state stays)
        pair.skip = {2}
    else:
        pair.both(CHANGES[change] if change in CHANGES else CARRIED[change][1])
    planned = pair.planned
    for _ in range(3):
        pair.step()
    seen_on_steady = change in SEEN_ON_THE_STEADY_PATH or (
        name == "Adafactor" and change == "weight_decay changed")  # the twins' hyperparameters
    if not seen_on_steady:
        assert pair.planned > planned  # the change was seen...
    if change not in STRIDED:
        assert pair.planned <= planned + 2  # ...and the steady path resumed
        before = pair.planned
        pair.step()
        assert pair.planned == before


@pytest.mark.parametrize("name", NAMES)
def test_a_hook_changing_the_grads_runs_on_the_steady_path(name):
    pair = Pair(name)
    pair.step()

    def halve(opt, args, kwargs):
        for g in opt.param_groups:
            for p in g["params"]:
                if p.grad is not None:
                    p.grad.mul_(0.5)

    hooks = [pair.oracle.register_step_pre_hook(halve), pair.opt.register_step_pre_hook(halve)]
    for _ in range(3):
        pair.step()
    for h in hooks:
        h.remove()
    pair.step()
    assert pair.planned == 1


def _aliased_state(pair):
    p = pair.ours[1]  # a buffer the kernel steps (not DAdaptSGD's z, which the adapter writes after)
    stepped = pair.opt.__gradstep_spec__.state_names()
    return next(v for k, v in _tensor_states(pair.opt, p) if v.shape == p.shape and k in stepped)


@pytest.mark.parametrize("what", ["param", "state"])
@pytest.mark.parametrize("name", NAMES)
def test_a_grad_aliasing_a_param_or_state_is_refused_and_changes_nothing(name, what):
    pair = Pair(name)
    for _ in range(3):
        pair.step()
    pair.grads()
    before = pair.snapshot()
    good = pair.ours[1].grad
    pair.ours[1].grad = pair.ours[1].detach() if what == "param" else _aliased_state(pair)
    with pytest.raises(ValueError):
        pair.opt.step()
    pair.assert_unchanged(before)
    pair.ours[1].grad = good
    pair.oracle.step()
    pair.opt.step()
    pair.compare()


BAD = {
    "state resized": (ValueError, lambda pair: pair.opt.state[pair.ours[0]].__setitem__(
        _tensor_states(pair.opt, pair.ours[0])[0][0], torch.zeros(3, dtype=torch.float64))),
    "state of another dtype": (TypeError, lambda pair: pair.opt.state[pair.ours[2]].__setitem__(
        _tensor_states(pair.opt, pair.ours[2])[0][0], _tensor_states(pair.opt, pair.ours[2])[0][1].float())),
    "grad of another shape": (ValueError, lambda pair: setattr(pair.ours[3].grad, "data", torch.zeros(
        3, dtype=torch.float64))),
    "grad of another dtype": (TypeError, lambda pair: setattr(pair.ours[3].grad, "data", pair.ours[3].grad.float())),
    "sparse grad": (TypeError, lambda pair: setattr(pair.ours[3], "grad", pair.ours[3].grad.to_sparse())),
    "param made strided": (ValueError, lambda pair: setattr(pair.ours[0], "data", pair.ours[0].data.t())),
}


# Adafactor steps a strided param (as a contiguous copy: the STRIDED cases), so that change is no bad input there.
@pytest.mark.parametrize("name,bad", [(name, bad) for name in NAMES for bad in BAD
                                      if not (bad == "param made strided" and name == "Adafactor")])
def test_bad_input_after_steady_steps_raises_and_changes_nothing(name, bad):
    error, make = BAD[bad]
    if bad == "state resized" and name == "Adafactor":
        make = lambda pair: pair.opt.state[pair.ours[0]].__setitem__(  # noqa: E731
            "row_var", torch.zeros(4, dtype=torch.float64))
    pair = Pair(name)
    for _ in range(3):
        pair.step()
    pair.grads()
    make(pair)
    before = pair.snapshot()
    with pytest.raises(error):
        pair.opt.step()
    pair.assert_unchanged(before)


@pytest.mark.parametrize("name", SCHEDULE_FREE)
def test_schedule_free_in_eval_mode_refuses_to_step_after_steady_steps(name):
    pair = Pair(name)
    for _ in range(3):
        pair.step()
    pair.opt.param_groups[1]["train_mode"] = False
    pair.grads()
    before = pair.snapshot()
    with pytest.raises(RuntimeError):
        pair.opt.step()
    pair.assert_unchanged(before)


@pytest.mark.parametrize("name", PACKAGE)
def test_a_group_value_the_kernel_cannot_take_is_refused_after_steady_steps(name):
    pair = Pair(name)
    for _ in range(3):
        pair.step()
    key, value, error = {
        "Prodigy": ("d0", 1e-3, NotImplementedError), "DAdaptAdam": ("layer_scale", 2.0, NotImplementedError),
        "DAdaptSGD": ("momentum", 2.0, ValueError), "Lamb": ("step", torch.tensor(99.0), NotImplementedError),
        "AdamWScheduleFree": ("eps", -1.0, ValueError), "SGDScheduleFree": ("momentum", 2.0, ValueError),
    }[name]
    pair.opt.param_groups[0][key] = value
    pair.grads()
    before = pair.snapshot()
    with pytest.raises(error):
        pair.opt.step()
    for p, b in zip(pair.ours, before[0]):
        assert torch.equal(p.detach(), b)


@pytest.mark.parametrize("name", NAMES)
def test_an_lr_scheduler_keeps_the_steady_path(name):
    pair = Pair(name)
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, lambda k: 1.0 / (1 + k)) for o in (pair.oracle, pair.opt)]
    for _ in range(5):
        pair.step()
        for s in scheds:
            s.step()
    assert pair.planned == 1


@pytest.mark.parametrize("name", PACKAGE)
def test_unequal_lr_after_steady_steps_raises_as_the_plan_does(name):
    pair = Pair(name)
    for _ in range(3):
        pair.step()
    pair.opt.param_groups[1]["lr"] = pair.opt.param_groups[0]["lr"] * 0.5
    pair.grads()
    before = pair.snapshot()
    if name in LEARNING_RATE_FREE:  # the references' groups' lr must be equal or 0
        with pytest.raises(RuntimeError, match="lr"):
            pair.opt.step()
        pair.assert_unchanged(before)
    else:  # each group its own lr: as the reference
        pair.oracle.param_groups[1]["lr"] = pair.opt.param_groups[1]["lr"]
        pair.oracle.step()
        pair.opt.step()
        pair.compare()
        assert pair.planned == 1


@pytest.mark.parametrize("name", PACKAGE)
def test_state_dict_loaded_after_steady_steps(name):
    pair = Pair(name)
    for _ in range(4):
        pair.step()
    import copy

    pair.opt.load_state_dict(copy.deepcopy(pair.oracle.state_dict()))
    planned = pair.planned
    for _ in range(3):
        pair.step()
    assert planned < pair.planned <= planned + 1


# (schedulefree adds the weight decay into the grads in place: a fixed grad would differ there.)
@pytest.mark.parametrize("name", ["Prodigy", "Lamb"])
def test_steps_from_several_threads_are_each_applied_once(name):
    import threading

    pair = Pair(name)
    pair.step()
    pair.grads()  # fixed from here on: the order of the steps does not matter
    threads = [threading.Thread(target=lambda: [pair.opt.step() for _ in range(3)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for _ in range(12):
        pair.oracle.step()
    pair.compare()
    assert pair.planned == 1


def test_prodigy_with_sliced_states_takes_the_steady_path_and_checks_their_sizes():
    pair = Pair("Prodigy", slice_p=3)  # s and p0 of every third element
    for _ in range(5):
        pair.step()
    assert pair.planned == 1
    assert pair.opt.state[pair.ours[0]]["s"].shape == (9,)
    pair.grads()
    pair.opt.state[pair.ours[0]]["s"] = torch.zeros(25, dtype=torch.float64)  # the param's size: not prodigyopt's
    before = pair.snapshot()
    with pytest.raises(ValueError, match="'s'"):
        pair.opt.step()
    pair.assert_unchanged(before)


@pytest.mark.parametrize("change", ["none", "p0 filled in place", "p0 replaced", "p0 made full"])
def test_prodigy_with_an_all_zero_param_takes_the_steady_path(change):
    # prodigyopt keeps p0 0-d for a param that is all zeros at its first step: the set
    # steps a full-length copy of its value, which the steady path checks is still p0's.
    pair = Pair("Prodigy")
    with torch.no_grad():
        for p in (pair.theirs[3], pair.ours[3]):
            p.zero_()
    for _ in range(3):
        pair.step()
    assert pair.opt.state[pair.ours[3]]["p0"].shape == ()
    assert pair.planned == 1
    if change == "p0 filled in place":
        pair.both(lambda ps, opt: opt.state[ps[3]]["p0"].fill_(0.25))
    elif change == "p0 replaced":
        pair.both(lambda ps, opt: opt.state[ps[3]].__setitem__("p0", torch.tensor(-0.5, dtype=torch.float64)))
    elif change == "p0 made full":
        pair.both(lambda ps, opt: opt.state[ps[3]].__setitem__("p0", torch.full((6,), 0.5, dtype=torch.float64)))
    for _ in range(3):
        pair.step()
    assert pair.planned == (1 if change == "none" else 2)
