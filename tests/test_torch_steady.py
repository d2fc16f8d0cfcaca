"""gradstep.torch's steady step: after a planned step, later steps skip the
Python plan while nothing but the grads' values changed. Every change a user
can make between steps must still give torch.optim's result, with the plan
running again; unchanged steps must take the steady path.

Each test steps torch.optim.X (the oracle) and gradstep.torch.X side by side
in float64 from the same start, applies the same change to both between two
steps, and compares every param and every state tensor after each step.
"""

from __future__ import annotations

import copy
from collections import defaultdict

import numpy as np
import pytest
import torch

from torch.optim.optimizer import register_optimizer_step_pre_hook

import gradstep.torch as gt

CONFIGS = {
    "Adam": dict(lr=1e-2, weight_decay=1e-3),
    "AdamW": dict(lr=1e-2, weight_decay=0.05, amsgrad=True),
    "SGD": dict(lr=0.05, momentum=0.9, nesterov=True),
    "RMSprop": dict(lr=1e-2, momentum=0.5, centered=True),
    "Adagrad": dict(lr=0.05, lr_decay=1e-3),
    "Adadelta": dict(lr=1.0),
}
SHAPES = [(5, 5), (7,), (3, 4), ()]


class Twin:
    """torch.optim.X and gradstep.torch.X over equal params, stepped with equal grads."""

    def __init__(self, name: str, shapes=SHAPES, **kwargs) -> None:
        g = torch.Generator().manual_seed(0)
        start = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
        self.theirs = [torch.nn.Parameter(t.clone()) for t in start]
        self.ours = [torch.nn.Parameter(t.clone()) for t in start]
        options = {**CONFIGS[name], **kwargs}
        self.oracle = getattr(torch.optim, name)(self.theirs, foreach=False, **options)
        self.opt = getattr(gt, name)(self.ours, **options)
        self.gen = torch.Generator().manual_seed(1)
        self.planned = 0
        plan = self.opt._planned_step

        def counted() -> None:
            self.planned += 1
            plan()

        self.opt._planned_step = counted

    def grads(self, skip=()) -> None:
        for i, (a, b) in enumerate(zip(self.theirs, self.ours)):
            if i in skip:
                a.grad = b.grad = None
                continue
            g = torch.randn(a.shape, generator=self.gen, dtype=torch.float64)
            a.grad, b.grad = g.clone(), g.clone()

    def step(self, skip=()) -> None:
        self.grads(skip)
        self.oracle.step()
        self.opt.step()
        self.compare()

    def compare(self) -> None:
        for a, b in zip(self.theirs, self.ours):
            np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), rtol=1e-10, atol=1e-13)
            sa, sb = self.oracle.state.get(a, {}), self.opt.state.get(b, {})
            assert set(sa) == set(sb)
            for key, value in sa.items():
                if isinstance(value, torch.Tensor):
                    np.testing.assert_allclose(np.asarray(sb[key]), np.asarray(value), rtol=1e-10, atol=1e-13)

    def both(self, change) -> None:
        """The same change to both optimizers: change(params, optimizer)."""
        change(self.theirs, self.oracle)
        change(self.ours, self.opt)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_unchanged_steps_take_the_steady_path(name):
    twin = Twin(name)
    for _ in range(6):
        twin.step()
    # SGD's first step makes its momentum buffers; one planned step each way.
    assert twin.planned == 1


def _same_values(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone()


def _no_grad(fn):
    with torch.no_grad():
        return fn()


CHANGES = {
    "param .data replaced": lambda ps, opt: setattr(ps[1], "data", _same_values(ps[1]) + 0.5),
    "param .data a transposed view": lambda ps, opt: setattr(ps[0], "data", ps[0].data.t()),
    "param t_() in place": lambda ps, opt: _no_grad(ps[0].t_),
    "param set_ to other storage": lambda ps, opt: _no_grad(lambda: ps[2].set_(_same_values(ps[2]) * 2)),
    "param values changed in place": lambda ps, opt: ps[1].data.mul_(0.5),
    "state dict entry replaced": lambda ps, opt: [
        opt.state[p].__setitem__(k, torch.zeros_like(v)) for p in ps[:2] for k, v in list(opt.state[p].items())
        if k != "step" and isinstance(v, torch.Tensor)],
    "state .data replaced": lambda ps, opt: [
        setattr(v, "data", torch.full_like(v, 0.25)) for p in ps[:1] for k, v in opt.state[p].items()
        if k != "step" and isinstance(v, torch.Tensor)],
    "state zeroed in place": lambda ps, opt: [
        v.zero_() for p in ps[1:3] for k, v in opt.state[p].items() if k != "step" and isinstance(v, torch.Tensor)],
    "step count replaced": lambda ps, opt: [
        opt.state[p].__setitem__("step", torch.tensor(100.0, dtype=opt.state[p]["step"].dtype))
        for p in ps[:1] if "step" in opt.state[p]],
    "step count changed in place": lambda ps, opt: [
        opt.state[p]["step"].fill_(40.0) for p in ps if "step" in opt.state[p]],
    "one param's state deleted": lambda ps, opt: opt.state.pop(ps[3], None),
    "whole state replaced": lambda ps, opt: setattr(opt, "state", defaultdict(dict)),
    "lr changed": lambda ps, opt: opt.param_groups[0].__setitem__("lr", opt.param_groups[0]["lr"] * 0.3),
    "param dropped from group": lambda ps, opt: opt.param_groups[0]["params"].pop(1),
    "group params reordered": lambda ps, opt: opt.param_groups[0]["params"].reverse(),
    "group added": lambda ps, opt: opt.add_param_group(
        {"params": [torch.nn.Parameter(torch.linspace(-1, 1, 6, dtype=torch.float64))]}),
}


@pytest.mark.parametrize("change", list(CHANGES))
@pytest.mark.parametrize("name", list(CONFIGS))
def test_a_change_between_steps_is_seen_as_torch_sees_it(name, change):
    twin = Twin(name)
    for _ in range(3):
        twin.step()
    twin.both(CHANGES[change])
    planned = twin.planned
    for _ in range(3):
        if change == "group added":
            extra_a, extra_b = twin.oracle.param_groups[1]["params"][0], twin.opt.param_groups[1]["params"][0]
            g = torch.randn(extra_a.shape, generator=twin.gen, dtype=torch.float64)
            extra_a.grad, extra_b.grad = g.clone(), g.clone()
        twin.step()
    if change not in SEEN_ON_THE_STEADY_PATH and not (name == "SGD" and "step count" in change):
        assert twin.planned > planned  # the change was seen...
    if change not in STRIDED:
        assert twin.planned <= planned + 2  # ...and the steady path resumed


# Changes the steady path itself takes into account (values in place, hyperparameters).
SEEN_ON_THE_STEADY_PATH = ("param values changed in place", "state zeroed in place", "lr changed")
# Changes after which a param is strided (dense, not contiguous): the plan steps it every time.
STRIDED = ("param .data a transposed view", "param t_() in place")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_a_param_that_skips_a_step_keeps_its_own_count(name):
    twin = Twin(name)
    for skip in [(), (), (1,), (), (0, 2), (), (), ()]:
        twin.step(skip)


@pytest.mark.parametrize("name", ["Adam", "SGD", "RMSprop"])
def test_grads_the_steady_path_refuses_are_handled_by_the_plan(name):
    twin = Twin(name)
    for _ in range(3):
        twin.step()
    # A transposed (non-contiguous) grad and a negative view: same values, other layouts.
    for i, how in [(0, "transposed"), (2, "negative view")]:
        twin.grads()
        a, b = twin.theirs[i], twin.ours[i]
        if how == "transposed":
            b.grad = b.grad.t().contiguous().t()
            assert not b.grad.is_contiguous()
        else:
            z = torch.complex(torch.zeros_like(b.grad), -b.grad).conj()
            b.grad = z.imag
            assert b.grad.is_neg()
        np.testing.assert_array_equal(b.grad.resolve_neg().numpy(), a.grad.numpy())
        twin.oracle.step()
        twin.opt.step()
        twin.compare()


@pytest.mark.parametrize("name", ["Adam", "Adagrad"])
def test_bad_grad_on_the_steady_path_raises_and_changes_nothing(name):
    twin = Twin(name)
    for _ in range(3):
        twin.step()
    before = [p.detach().clone() for p in twin.ours]
    states = {id(p): {k: v.clone() for k, v in twin.opt.state[p].items()} for p in twin.ours}
    twin.grads()
    good = twin.ours[2].grad
    twin.ours[2].grad = good.to_sparse()  # torch allows it; gradstep.torch refuses it
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['params'\]\[2\]: .*sparse"):
        twin.opt.step()
    for p, b in zip(twin.ours, before):
        assert torch.equal(p.detach(), b)
        for k, v in twin.opt.state[p].items():
            assert torch.equal(v, states[id(p)][k])
    twin.ours[2].grad = good
    twin.oracle.step()
    twin.opt.step()
    twin.compare()


def test_fused_float32_step_counts_are_incremented_as_torch_fused():
    # fused=True keeps state["step"] in float32, the default float64 elsewhere.
    twin = Twin("Adam", fused=True)
    for _ in range(5):
        twin.step()
    assert all(twin.opt.state[p]["step"].dtype == torch.float32 for p in twin.ours)
    assert twin.planned == 1


def test_hooks_and_profiler_records_still_run():
    twin = Twin("Adam")
    twin.step()
    calls = []
    pre = twin.opt.register_step_pre_hook(lambda opt, args, kwargs: calls.append("pre"))
    post = twin.opt.register_step_post_hook(lambda opt, args, kwargs: calls.append("post"))
    glob = register_optimizer_step_pre_hook(lambda opt, a, k: calls.append("global") if opt is twin.opt else None)
    try:
        twin.step()
        assert calls == ["global", "pre", "post"]
    finally:
        pre.remove(), post.remove(), glob.remove()
    twin.step()
    assert calls == ["global", "pre", "post"]
    with torch.profiler.profile() as prof:
        twin.step()
    assert any(e.name == "Optimizer.step#Adam.step" for e in prof.events())


def test_state_dict_taken_on_the_steady_path_moves_to_torch_and_back():
    twin = Twin("Adam", amsgrad=True)
    for _ in range(4):
        twin.step()
    sd = copy.deepcopy(twin.opt.state_dict())  # (torch's load_state_dict keeps the tensors given)
    assert [int(s["step"]) for s in sd["state"].values()] == [4] * len(SHAPES)
    fresh = [torch.nn.Parameter(p.detach().clone()) for p in twin.ours]
    torch_opt = torch.optim.Adam(fresh, foreach=False, **{**CONFIGS["Adam"], "amsgrad": True})
    torch_opt.load_state_dict(sd)
    back = gt.Adam([torch.nn.Parameter(p.detach().clone()) for p in twin.ours], **{**CONFIGS["Adam"], "amsgrad": True})
    back.load_state_dict(copy.deepcopy(torch_opt.state_dict()))
    for _ in range(3):
        twin.grads()
        for p, q, r in zip(twin.ours, fresh, back.param_groups[0]["params"]):
            q.grad, r.grad = p.grad.clone(), p.grad.clone()
        twin.opt.step(), torch_opt.step(), back.step()
        for p, q, r in zip(twin.ours, fresh, back.param_groups[0]["params"]):
            np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), rtol=1e-10, atol=1e-13)
            np.testing.assert_allclose(r.detach().numpy(), p.detach().numpy(), rtol=1e-10, atol=1e-13)


def test_steps_from_several_threads_are_each_applied_once():
    # Each thread's step is whole: after n steps from 4 threads the params are those
    # of 4n steps with the same grads (grads fixed, so the order does not matter).
    import threading

    twin = Twin("Adam")
    twin.step()
    twin.grads()
    threads = [threading.Thread(target=lambda: [twin.opt.step() for _ in range(25)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for _ in range(100):
        twin.oracle.step()
    twin.compare()
