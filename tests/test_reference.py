"""Every optimizer and option combination against the float64 textbook equations."""

from __future__ import annotations

import numpy as np
import pytest

import gradstep as gs

import reference
from conftest import CASES, case_id, make_problem, option_grid

STEPS = 50
REFERENCES = {
    "SGD": reference.SGDRef,
    "Adagrad": reference.AdagradRef,
    "Adadelta": reference.AdadeltaRef,
    "RMSprop": reference.RMSpropRef,
    "Adam": reference.AdamRef,
    "AdamW": reference.AdamRef,
    "Adamax": reference.AdamaxRef,
    "RAdam": reference.RAdamRef,
    "NAdam": reference.NAdamRef,
    "Lion": reference.LionRef,
    "Adafactor": reference.AdafactorRef,
}


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_published_equations(case):
    name, lr, opts = case
    params, grads = make_problem(np.float64, STEPS, seed=1)
    hyper = dict(opts)
    if name == "AdamW":
        hyper["decoupled"] = True
        hyper.setdefault("weight_decay", 1e-2)
    if name == "Lion":
        hyper["init_lr"] = lr  # a constant rate: the rate at step 0
    ref = REFERENCES[name](params, **hyper)
    mine = [p.copy() for p in params]
    opt = getattr(gs, name)(mine, lr=lr, **opts)
    for step_grads in grads:
        ref.step(step_grads, lr)
        opt.step(step_grads)
    for got, want in zip(mine, ref.params):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_adam_first_step_moves_each_weight_by_lr():
    # With bias correction, Adam's first update is lr * g / (|g| + eps).
    w = np.zeros(5)
    g = np.array([3.0, -0.5, 1e-3, -200.0, 7.0])
    gs.Adam([w], lr=0.01).step([g])
    np.testing.assert_allclose(w, -0.01 * g / (np.abs(g) + 1e-8), rtol=1e-12)


SCHEDULE_FREE = dict(weight_decay=[0.0, 0.05], warmup_steps=[0, 7], r=[0.0, 1.0], weight_lr_power=[2.0, 0.5],
                     maximize=[False, True])
SCHEDULE_FREE_CASES = (
    [("AdamWScheduleFree", 0.01, o) for o in option_grid(betas=[(0.9, 0.999), (0.5, 0.9)], **SCHEDULE_FREE)]
    + [("SGDScheduleFree", 0.05, o) for o in option_grid(momentum=[0.9, 0.5], **SCHEDULE_FREE)])


@pytest.mark.parametrize("case", SCHEDULE_FREE_CASES, ids=case_id)
def test_schedule_free_matches_the_three_sequences(case):
    # gradstep keeps y in the param and moves it without forming x; the
    # reference keeps x and z and forms y: equal at y while training and at x
    # after eval().
    name, lr, opts = case
    params, grads = make_problem(np.float64, STEPS, seed=1)
    ref = reference.ScheduleFreeRef(params, adam=name.startswith("Adam"), **opts)
    mine = [p.copy() for p in params]
    opt = getattr(gs, name)(mine, lr=lr, **opts)
    opt.train()
    for step_grads in grads:
        ref.step(step_grads, lr)
        opt.step(step_grads)
    for got, want in zip(mine, ref.params):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    opt.eval()
    for got, want in zip(mine, ref.at_x()):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
