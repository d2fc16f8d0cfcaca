"""Schedules against torch.optim.lr_scheduler (driven for real) and against
the textbook formulas, written out independently here."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler as L

import gradstep as gs
from gradstep import cli, plotting
from gradstep import schedules as S

RTOL = 1e-9


def torch_rates(make: Callable[[torch.optim.Optimizer], L.LRScheduler], steps: int, lr: float) -> np.ndarray:
    """get_last_lr() before each of `steps` scheduler steps: the rate of update k."""
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.SGD([p], lr=lr)
    sched = make(opt)
    out = []
    for _ in range(steps):
        out.append(sched.get_last_lr()[0])
        opt.step()  # no grad: changes nothing, but keeps torch's call-order check quiet
        sched.step()
    return np.array(out, dtype=np.float64)


def assert_rel(actual: np.ndarray, expected: np.ndarray, rtol: float = RTOL) -> None:
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=0.0)


# (id, gradstep schedule, torch scheduler factory, steps, optimizer lr for torch)
TORCH_CASES = [
    ("constant", S.constant(0.05), lambda o: L.LambdaLR(o, lambda k: 1.0), 300, 0.05),
    ("step", S.step(0.1, 7, 0.5), lambda o: L.StepLR(o, 7, 0.5), 300, 0.1),
    ("step-default-gamma", S.step(0.1, 30), lambda o: L.StepLR(o, 30), 300, 0.1),
    ("multistep", S.multistep(0.1, [10, 50, 50, 200], 0.3), lambda o: L.MultiStepLR(o, [10, 50, 50, 200], 0.3), 300, 0.1),
    ("multistep-default", S.multistep(0.2, [0, 100]), lambda o: L.MultiStepLR(o, [0, 100]), 300, 0.2),
    ("exponential", S.exponential(0.1, 0.99), lambda o: L.ExponentialLR(o, 0.99), 500, 0.1),
    ("exponential-rate", S.exponential(0.1, rate=0.01), lambda o: L.ExponentialLR(o, math.exp(-0.01)), 500, 0.1),
    ("exponential-decay-staircase", S.exponential_decay(0.1, 0.5, 25, staircase=True),
     lambda o: L.StepLR(o, 25, 0.5), 500, 0.1),
    ("exponential-decay", S.exponential_decay(0.1, 0.5, 25), lambda o: L.ExponentialLR(o, 0.5 ** (1 / 25)), 500, 0.1),
    ("inverse-time", S.inverse_time(0.1, 0.3, 10), lambda o: L.LambdaLR(o, lambda k: 1 / (1 + 0.3 * k / 10)), 400, 0.1),
    ("inverse-time-staircase", S.inverse_time(0.1, 0.3, 10, staircase=True),
     lambda o: L.LambdaLR(o, lambda k: 1 / (1 + 0.3 * (k // 10))), 400, 0.1),
    # torch's MultiplicativeLR multiplies by f(k) at step k >= 1: the seed recursion.
    ("time-based-0.01", S.time_based(0.1, 0.01), lambda o: L.MultiplicativeLR(o, lambda k: 1 / (1 + 0.01 * (k - 1))),
     300, 0.1),
    ("time-based-0.5", S.time_based(0.1, 0.5), lambda o: L.MultiplicativeLR(o, lambda k: 1 / (1 + 0.5 * (k - 1))),
     100, 0.1),
    ("time-based-1e-4", S.time_based(0.1, 1e-4), lambda o: L.MultiplicativeLR(o, lambda k: 1 / (1 + 1e-4 * (k - 1))),
     500, 0.1),
    ("polynomial-1", S.polynomial(0.1, 100), lambda o: L.PolynomialLR(o, 100), 300, 0.1),
    ("polynomial-2", S.polynomial(0.1, 100, 2.0), lambda o: L.PolynomialLR(o, 100, 2.0), 300, 0.1),
    ("polynomial-0.5", S.polynomial(0.1, 77, 0.5), lambda o: L.PolynomialLR(o, 77, 0.5), 300, 0.1),
    ("linear-up", S.linear(0.05, 0.15, 100), lambda o: L.LinearLR(o, 0.25, 0.75, 100), 300, 0.2),
    ("linear-down", S.linear(0.2, 0.02, 150), lambda o: L.LinearLR(o, 1.0, 0.1, 150), 300, 0.2),
    # Past total_steps both keep following cos(pi k / T): period 2T.
    ("cosine", S.cosine(0.1, 100, 0.001), lambda o: L.CosineAnnealingLR(o, 100, 0.001), 350, 0.1),
    ("cosine-zero", S.cosine(0.1, 37), lambda o: L.CosineAnnealingLR(o, 37), 300, 0.1),
    ("restarts-1", S.cosine_restarts(0.1, 10), lambda o: L.CosineAnnealingWarmRestarts(o, 10), 500, 0.1),
    ("restarts-2", S.cosine_restarts(0.1, 10, 2, 0.001),
     lambda o: L.CosineAnnealingWarmRestarts(o, 10, 2, 0.001), 500, 0.1),
    ("restarts-3", S.cosine_restarts(0.3, 7, 3), lambda o: L.CosineAnnealingWarmRestarts(o, 7, 3), 500, 0.3),
    ("cyclic-triangular", S.cyclic(0.01, 0.1, 20),
     lambda o: L.CyclicLR(o, 0.01, 0.1, 20, cycle_momentum=False), 400, 0.1),
    ("cyclic-triangular2", S.cyclic(0.01, 0.1, 20, 30, "triangular2"),
     lambda o: L.CyclicLR(o, 0.01, 0.1, 20, 30, "triangular2", cycle_momentum=False), 400, 0.1),
    ("cyclic-exp-range", S.cyclic(0.01, 0.1, 25, 15, "exp_range", 0.995),
     lambda o: L.CyclicLR(o, 0.01, 0.1, 25, 15, "exp_range", 0.995, cycle_momentum=False), 400, 0.1),
    ("cyclic-default-sizes", S.cyclic(0.001, 0.006),
     lambda o: L.CyclicLR(o, 0.001, 0.006, cycle_momentum=False), 5000, 0.1),
    # OneCycleLR: every update of a total_steps-update run.
    ("one-cycle", S.one_cycle(0.1, 300), lambda o: L.OneCycleLR(o, 0.1, 300, cycle_momentum=False), 300, 0.1),
    ("one-cycle-linear", S.one_cycle(0.1, 300, 0.4, "linear", 10.0, 100.0),
     lambda o: L.OneCycleLR(o, 0.1, 300, pct_start=0.4, anneal_strategy="linear", div_factor=10.0,
                            final_div_factor=100.0, cycle_momentum=False), 300, 0.1),
    ("one-cycle-three-phase", S.one_cycle(0.5, 250, 0.25, three_phase=True),
     lambda o: L.OneCycleLR(o, 0.5, 250, pct_start=0.25, three_phase=True, cycle_momentum=False), 250, 0.1),
    ("one-cycle-three-phase-linear", S.one_cycle(0.5, 301, 0.33, "linear", three_phase=True),
     lambda o: L.OneCycleLR(o, 0.5, 301, pct_start=0.33, anneal_strategy="linear", three_phase=True,
                            cycle_momentum=False), 301, 0.1),
    ("warmup-cosine", S.warmup(S.cosine(0.1, 200), 20, start_lr=0.01),
     lambda o: L.SequentialLR(o, [L.LinearLR(o, 0.1, 1.0, 20), L.CosineAnnealingLR(o, 200)], [20]), 300, 0.1),
    ("sequence", S.sequence([S.exponential(0.1, 0.9), S.step(0.1, 7, 0.5), S.cosine(0.1, 50)], [30, 80]),
     lambda o: L.SequentialLR(o, [L.ExponentialLR(o, 0.9), L.StepLR(o, 7, 0.5), L.CosineAnnealingLR(o, 50)], [30, 80]),
     300, 0.1),
]


@pytest.mark.parametrize("schedule, make, steps, lr", [c[1:] for c in TORCH_CASES], ids=[c[0] for c in TORCH_CASES])
def test_matches_torch(schedule: S.Schedule, make: Callable, steps: int, lr: float) -> None:
    expected = torch_rates(make, steps, lr)
    assert_rel(schedule(np.arange(steps)), expected)
    assert_rel(np.array([schedule(k) for k in range(steps)]), expected)


def test_every_factory_is_checked_against_torch_or_a_formula() -> None:
    covered = {c[1].name for c in TORCH_CASES} | {"piecewise_constant"}
    assert covered == set(S.FACTORIES)


# ---- the seed formulas, written out here ------------------------------------


@pytest.mark.parametrize(
    "decay, steps",
    [(0.0, 1000), (1e-8, 200_000), (1e-6, 10_000), (1e-5, 10_000), (1e-3, 10_000), (0.03, 10_000),
     (0.5, 10_000), (3.0, 10_000)],
)
def test_time_based_matches_recursion(decay: float, steps: int) -> None:
    # eta_{n+1} = eta_n / (1 + d n), iterated in float64.
    eta, ref = 0.1, np.empty(steps)
    for n in range(steps):
        ref[n] = eta
        eta = eta / (1 + decay * n)
    ours = S.time_based(0.1, decay)(np.arange(steps))
    normal = ref > 1e-290  # compare where the recursion has not reached subnormals
    assert normal[:50].all()
    assert_rel(ours[normal], ref[normal])
    assert (ours[~normal] < 1e-280).all()


def test_time_based_far_out_matches_log_sum() -> None:
    # Against exp of an exactly-rounded sum of log(1 + d i), for n far past
    # what the recursion test covers.
    lr, decay = 1.0, 1e-9  # 1/decay = 1e9: lgamma(1e9) alone would cost ~1e-6 here
    sched = S.time_based(lr, decay)
    for n in (10_000, 100_000, 1_000_000):
        log_eta = -math.fsum(math.log1p(decay * i) for i in range(n))
        assert sched(n) == pytest.approx(lr * math.exp(log_eta), rel=RTOL)


def test_step_decay_seed_formula() -> None:
    # eta_n = eta_0 d^floor((1 + n) / r): the seed counts n from the rate
    # after the first drop check, i.e. its eta_n is the rate of update n + 1.
    eta0, d, r = 0.2, 0.5, 10
    sched = S.step(eta0, r, d)
    for n in range(400):
        assert sched(n + 1) == pytest.approx(eta0 * d ** math.floor((1 + n) / r), rel=1e-12)
        assert sched(n) == pytest.approx(eta0 * d ** (n // r), rel=1e-12)


def test_exponential_seed_formula() -> None:
    eta0, d = 0.2, 0.003
    ours = S.exponential(eta0, rate=d)(np.arange(2000))
    assert_rel(ours, np.array([eta0 * math.exp(-d * n) for n in range(2000)]))


def test_inverse_time_seed_formula() -> None:
    eta0, d = 0.2, 0.05
    assert_rel(S.inverse_time(eta0, d)(np.arange(2000)), np.array([eta0 / (1 + d * t) for t in range(2000)]))
    ours = S.inverse_time(eta0, d, decay_steps=7, staircase=True)(np.arange(2000))
    assert_rel(ours, np.array([eta0 / (1 + d * (t // 7)) for t in range(2000)]))


def test_exponential_decay_formula() -> None:
    ours = S.exponential_decay(0.3, 0.96, 100)(np.arange(5000))
    assert_rel(ours, np.array([0.3 * 0.96 ** (t / 100) for t in range(5000)]))
    ours = S.exponential_decay(0.3, 0.96, 100, staircase=True)(np.arange(5000))
    assert_rel(ours, np.array([0.3 * 0.96 ** (t // 100) for t in range(5000)]))


def test_polynomial_with_end_lr_formula() -> None:
    ours = S.polynomial(0.1, 200, 1.5, end_lr=0.01)(np.arange(500))
    expected = [(0.1 - 0.01) * (1 - min(t, 200) / 200) ** 1.5 + 0.01 for t in range(500)]
    assert_rel(ours, np.array(expected))


def test_piecewise_constant_formula() -> None:
    boundaries, values = [10, 25, 100], [0.1, 0.05, 0.01, 0.001]
    ours = S.piecewise_constant(boundaries, values)(np.arange(300))
    expected = [values[sum(1 for b in boundaries if t >= b)] for t in range(300)]
    assert np.array_equal(ours, np.array(expected))


def test_warmup_and_sequence_formulas() -> None:
    inner = S.exponential(0.2, 0.97)
    ours = S.warmup(inner, 50, start_lr=0.02)(np.arange(400))
    expected = [0.02 + (0.2 - 0.02) * k / 50 if k < 50 else 0.2 * 0.97 ** (k - 50) for k in range(400)]
    assert_rel(ours, np.array(expected))

    nested = S.sequence([S.warmup(S.constant(0.1), 10), S.sequence([S.constant(0.05), S.linear(0.05, 0.0, 20)], [5])],
                        [100])
    expected = [0.1 * k / 10 if k < 10 else 0.1 if k < 100 else 0.05 if k < 105 else 0.05 * (1 - min(k - 105, 20) / 20)
                for k in range(300)]
    assert_rel(nested(np.arange(300)), np.array(expected))


def test_one_cycle_holds_last_rate_after_total_steps() -> None:
    sched = S.one_cycle(0.1, 100, div_factor=20.0, final_div_factor=50.0)
    assert sched(99) == pytest.approx(0.1 / 20 / 50, rel=1e-15)
    assert np.all(sched(np.arange(99, 400)) == sched(99))


def test_cosine_keeps_cycling_like_torch_past_total_steps() -> None:
    sched = S.cosine(1.0, 10)
    assert sched(10) == 0.0 and sched(20) == pytest.approx(1.0, rel=1e-15)


# ---- evaluation API -----------------------------------------------------------


def test_vector_and_scalar_evaluation_agree_bitwise() -> None:
    sched = S.warmup(S.cosine_restarts(0.1, 13, 2, 0.001), 17)
    steps = np.arange(0, 3000, 3).reshape(20, 50)
    out = sched(steps)
    assert out.shape == (20, 50) and out.dtype == np.float64
    assert np.array_equal(out, np.array([[sched(int(k)) for k in row] for row in steps]))
    assert np.array_equal(sched(steps.astype(np.int32)), out)
    assert np.array_equal(sched(list(range(10))), np.array([sched(k) for k in range(10)]))
    assert isinstance(sched(np.int64(5)), float)


def test_bad_steps() -> None:
    sched = S.cosine(0.1, 100)
    with pytest.raises(ValueError, match="step"):
        sched(-1)
    with pytest.raises(ValueError, match=r"steps\[2\]"):
        sched(np.array([0, 1, -5]))
    with pytest.raises(TypeError, match="integers"):
        sched(np.array([0.5, 1.0]))
    with pytest.raises(TypeError):
        sched(1.0)


BAD = [
    (lambda: S.step(0.1, 0), "step_size"),
    (lambda: S.step(0.1, -3), "step_size"),
    (lambda: S.multistep(0.1, [30, 10]), "milestones"),
    (lambda: S.multistep(0.1, [-1, 10]), "milestones"),
    (lambda: S.cyclic(0.01, 0.1, mode="sawtooth"), "mode"),
    (lambda: S.cyclic(0.01, 0.1, step_size_up=0), "step_size_up"),
    (lambda: S.cyclic(0.01, 0.1, step_size_down=0), "step_size_down"),
    (lambda: S.one_cycle(0.1, 100, pct_start=0.0), "pct_start"),
    (lambda: S.one_cycle(0.1, 100, pct_start=1.0), "pct_start"),
    (lambda: S.one_cycle(0.1, 100, pct_start=1.5), "pct_start"),
    (lambda: S.one_cycle(0.1, 100, pct_start=-0.2), "pct_start"),
    (lambda: S.one_cycle(0.1, 100, pct_start=0.01), "pct_start"),  # empty warm-up phase
    (lambda: S.one_cycle(0.1, 100, pct_start=0.6, three_phase=True), "pct_start"),
    (lambda: S.one_cycle(0.1, 100, anneal_strategy="cosine"), "anneal_strategy"),
    (lambda: S.one_cycle(0.1, 100, div_factor=0.0), "div_factor"),
    (lambda: S.cosine(float("nan"), 100), "lr"),
    (lambda: S.cosine(0.1, 100, final_lr=float("inf")), "final_lr"),
    (lambda: S.cosine(0.1, 0), "total_steps"),
    (lambda: S.constant(-0.1), "lr"),
    (lambda: S.exponential(0.1, float("inf")), "gamma"),
    (lambda: S.exponential(0.1, rate=float("nan")), "rate"),
    (lambda: S.exponential(0.1), "exactly one"),
    (lambda: S.exponential(0.1, 0.9, rate=0.1), "exactly one"),
    (lambda: S.exponential_decay(0.1, 0.5, 0), "decay_steps"),
    (lambda: S.inverse_time(0.1, -1.0), "decay_rate"),
    (lambda: S.time_based(0.1, -0.1), "decay"),
    (lambda: S.polynomial(0.1, 10, power=float("nan")), "power"),
    (lambda: S.linear(0.1, 0.0, 0), "total_steps"),
    (lambda: S.cosine_restarts(0.1, 0), "period"),
    (lambda: S.cosine_restarts(0.1, 10, 0), "period_mult"),
    (lambda: S.piecewise_constant([10, 5], [0.1, 0.2, 0.3]), "boundaries"),
    (lambda: S.piecewise_constant([10, 20], [0.1, 0.2]), "values"),
    (lambda: S.piecewise_constant([10], [0.1, float("nan")]), "values"),
    (lambda: S.warmup(S.constant(0.1), -1), "steps"),
    (lambda: S.sequence([S.constant(0.1), S.constant(0.2)], [5, 6]), "boundaries"),
    (lambda: S.sequence([S.constant(0.1), S.constant(0.2), S.constant(0.3)], [6, 5]), "boundaries"),
    (lambda: S.sequence([], []), "schedules"),
]


@pytest.mark.parametrize("build, name", BAD, ids=[f"{i}-{b[1]}" for i, b in enumerate(BAD)])
def test_bad_parameters_raise_value_error(build: Callable[[], object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        build()


def test_wrong_types_raise_type_error() -> None:
    with pytest.raises(TypeError, match="step_size"):
        S.step(0.1, 2.5)
    with pytest.raises(TypeError, match="schedule"):
        S.warmup(lambda k: 0.1, 10)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="lr"):
        S.constant("0.1")  # type: ignore[arg-type]


# ---- serialization --------------------------------------------------------------

ALL = [c[1] for c in TORCH_CASES] + [
    S.piecewise_constant([10, 25], [0.1, 0.05, 0.01]),
    S.polynomial(0.1, 50, 3.0, end_lr=0.001),
    S.warmup(S.sequence([S.one_cycle(0.1, 100, three_phase=True), S.time_based(0.01, 0.001)], [100]), 10, 1e-4),
]


@pytest.mark.parametrize("schedule", ALL, ids=[f"{i}-{s.name}" for i, s in enumerate(ALL)])
def test_json_round_trip(schedule: S.Schedule) -> None:
    text = json.dumps(schedule.to_dict())
    again = S.from_dict(json.loads(text))
    assert again == schedule and again.to_dict() == schedule.to_dict()
    steps = np.arange(0, 5000, 7)
    assert np.array_equal(again(steps), schedule(steps))
    # repr is an expression the CLI parser accepts, and it rebuilds the same schedule
    assert plotting.parse_schedule(repr(schedule)) == schedule


def test_from_dict_rejects_bad_dicts() -> None:
    with pytest.raises(ValueError, match="type"):
        S.from_dict({"lr": 0.1})
    with pytest.raises(ValueError, match="unknown schedule"):
        S.from_dict({"type": "os.system"})
    with pytest.raises(ValueError, match="cosine"):
        S.from_dict({"type": "cosine", "lr": 0.1})
    with pytest.raises(ValueError, match="total_steps"):
        S.from_dict({"type": "cosine", "lr": 0.1, "total_steps": 0})


# ---- optimizers driven by schedules, against torch's optimizer + scheduler ------------

OPTIMIZER_CASES = [
    ("sgd-nesterov-warmup-cosine",
     lambda ps, lr: gs.SGD(ps, lr=lr, momentum=0.9, nesterov=True, weight_decay=1e-3),
     lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
     S.warmup(S.cosine(0.1, 50, 0.001), 10, start_lr=0.01),
     lambda o: L.SequentialLR(o, [L.LinearLR(o, 0.1, 1.0, 10), L.CosineAnnealingLR(o, 50, 0.001)], [10])),
    ("sgd-dampening-cyclic",
     lambda ps, lr: gs.SGD(ps, lr=lr, momentum=0.8, dampening=0.1),
     lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.8, dampening=0.1),
     S.cyclic(0.01, 0.1, 7, 5, "triangular2"),
     lambda o: L.CyclicLR(o, 0.01, 0.1, 7, 5, "triangular2", cycle_momentum=False)),
    ("adam-one-cycle",
     lambda ps, lr: gs.Adam(ps, lr=lr),
     lambda ps: torch.optim.Adam(ps, lr=0.1),
     S.one_cycle(0.05, 60, three_phase=True),
     lambda o: L.OneCycleLR(o, 0.05, 60, three_phase=True, cycle_momentum=False)),
    ("adam-amsgrad-multistep",
     lambda ps, lr: gs.Adam(ps, lr=lr, betas=(0.8, 0.99), weight_decay=1e-2, amsgrad=True),
     lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.8, 0.99), weight_decay=1e-2, amsgrad=True),
     S.multistep(0.01, [15, 30, 45], 0.5),
     lambda o: L.MultiStepLR(o, [15, 30, 45], 0.5)),
    ("adamw-restarts",
     lambda ps, lr: gs.AdamW(ps, lr=lr),
     lambda ps: torch.optim.AdamW(ps, lr=0.01),
     S.cosine_restarts(0.01, 8, 2, 1e-4),
     lambda o: L.CosineAnnealingWarmRestarts(o, 8, 2, 1e-4)),
    ("sgd-python-callable",
     lambda ps, lr: gs.SGD(ps, lr=lr, momentum=0.5),
     lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.5),
     lambda k: 0.1 / (1 + 0.1 * k),
     lambda o: L.LambdaLR(o, lambda k: 1 / (1 + 0.1 * k))),
]


@pytest.mark.parametrize("make_gs, make_torch, schedule, make_sched", [c[1:] for c in OPTIMIZER_CASES],
                         ids=[c[0] for c in OPTIMIZER_CASES])
def test_optimizer_with_schedule_matches_torch(make_gs: Callable, make_torch: Callable, schedule: object,
                                               make_sched: Callable) -> None:
    rng = np.random.default_rng(7)
    init = [rng.standard_normal((7, 5)), rng.standard_normal(13)]
    grads = [[rng.standard_normal(p.shape) for p in init] for _ in range(60)]

    ours = [p.copy() for p in init]
    opt = make_gs(ours, schedule)
    theirs = [torch.nn.Parameter(torch.tensor(p)) for p in init]
    topt = make_torch(theirs)
    tsched = make_sched(topt)
    for g in grads:
        assert opt.lr == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12)
        opt.step(g)
        for p, gi in zip(theirs, g):
            p.grad = torch.tensor(gi)
        topt.step()
        tsched.step()
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-10, atol=1e-14)


def test_opt_lr_shows_the_next_rate() -> None:
    sched = S.step(0.1, 3, 0.5)
    w = np.zeros(4)
    opt = gs.SGD([w], lr=sched)
    for k in range(10):
        assert opt.lr == 0.1 * 0.5 ** (k // 3)
        opt.step([np.ones(4)])


@pytest.mark.filterwarnings("ignore::gradstep.LearningRateWarning")  # Adam(lr=0.5) below is on purpose
@pytest.mark.parametrize("opt_cls, kwargs", [(gs.SGD, dict(momentum=0.9, nesterov=True)), (gs.Adam, dict(amsgrad=True)),
                                             (gs.RMSprop, dict(momentum=0.5, centered=True))])
def test_state_dict_resume_is_exact(opt_cls: type, kwargs: dict) -> None:
    sched = S.warmup(S.cosine(0.05, 80, 1e-4), 15, 1e-3)
    rng = np.random.default_rng(3)
    init = [rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(9)]
    grads = [[rng.standard_normal(p.shape).astype(p.dtype) for p in init] for _ in range(50)]

    straight = [p.copy() for p in init]
    opt = opt_cls(straight, lr=sched, **kwargs)
    for g in grads:
        opt.step(g)

    first = [p.copy() for p in init]
    opt = opt_cls(first, lr=sched, **kwargs)
    for g in grads[:20]:
        opt.step(g)
    saved = opt.state_dict()
    json.dumps(saved["lr"])  # the schedule travels as plain data
    resumed = [p.copy() for p in first]
    opt2 = opt_cls(resumed, lr=0.5, **kwargs)  # a different lr: the state_dict's must win
    opt2.load_state_dict(saved)
    assert opt2.schedule == sched and opt2.step_count == 20 and opt2.lr == sched(20)
    for g in grads[20:]:
        opt2.step(g)
    for a, b in zip(resumed, straight):
        assert np.array_equal(a, b)


# ---- plotting ------------------------------------------------------------------------

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plot_schedules_writes_png(tmp_path) -> None:
    path = gs.plot_schedules(
        {"warmup+cosine": S.warmup(S.cosine(0.1, 900, 1e-3), 100), "one cycle": S.one_cycle(0.1, 1000),
         "callable": lambda k: 0.05},
        1000, tmp_path / "schedules.png", title="test",
    )
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000
    path = gs.plot_schedules([S.exponential(0.1, 0.99), S.step(0.1, 100)], 500, tmp_path / "log.png", log_y=True)
    assert path.read_bytes().startswith(PNG_MAGIC)


def test_plot_schedule_subcommand(tmp_path, capsys) -> None:
    assert cli.SUBCOMMANDS["plot-schedule"][0] == "gradstep.plotting"
    parser = argparse.ArgumentParser()
    plotting.add_arguments(parser)
    out = tmp_path / "cli.png"
    cosine = json.dumps(S.cosine(0.1, 1000).to_dict())
    args = parser.parse_args(
        ["--steps", "1000", "--out", str(out), "warmup(cosine(0.1, total_steps=900), steps=100)", cosine,
         "cyclic(1e-3, 6e-3, step_size_up=200, mode='exp_range', gamma=0.999)"]
    )
    assert plotting.run(args) == 0
    assert out.read_bytes().startswith(PNG_MAGIC) and out.stat().st_size > 5000
    assert str(out) in capsys.readouterr().out


@pytest.mark.parametrize("text", ["__import__('os').system('true')", "cosine(0.1, total_steps=10**9)",
                                  "open('x')", "cosine.__globals__", "[cosine(0.1, 10)]", "cosine(*[0.1, 10])",
                                  "cosine(0.1, total_steps=lambda: 1)"])
def test_schedule_expressions_are_parsed_not_evaluated(text: str) -> None:
    with pytest.raises(ValueError):
        plotting.parse_schedule(text)


def test_bisect_convention_matches_torch_milestones() -> None:
    # A boundary step already uses the new value, as a MultiStepLR milestone does.
    milestones = [5, 9]
    expected = torch_rates(lambda o: L.MultiStepLR(o, milestones, 0.5), 12, 1.0)
    ours = S.piecewise_constant(milestones, [1.0, 0.5, 0.25])(np.arange(12))
    assert_rel(ours, expected)
