"""ReduceLROnPlateau against torch's, driven over metric series with plateaus."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler as L

import gradstep as gs
from gradstep import schedules as S


def metric_series(n_segments: int = 8) -> list[float]:
    """Improving stretches, then plateaus whose wiggles stay within 1e-3 relative."""
    out, v = [], 1.0
    for segment in range(n_segments):
        for _ in range(3 + segment % 3):
            v *= 0.9
            out.append(v)
        for i in range(6 + 3 * (segment % 4)):
            out.append(v * (1 + 1e-3 * (i % 3)))
    return out


def torch_pair(lr: float, **kwargs: object) -> tuple[torch.optim.Optimizer, L.ReduceLROnPlateau]:
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.SGD([p], lr=lr)
    return opt, L.ReduceLROnPlateau(opt, **kwargs)


CONFIGS = [
    ("defaults", 0.1, {}, 1),
    ("cooldown-min-lr", 0.1, dict(factor=0.5, patience=3, cooldown=2, min_lr=2e-3, threshold=1e-2), 1),
    ("abs-threshold", 0.1, dict(factor=0.3, patience=2, threshold=0.01, threshold_mode="abs", cooldown=1), 1),
    # mode="max" watches 1/metric, which rises with plateaus where the metric has them.
    ("max-rel", 0.1, dict(mode="max", factor=0.5, patience=2, cooldown=3, min_lr=1e-3), -1),
    ("max-abs", 0.1, dict(mode="max", factor=0.2, patience=1, threshold=0.005, threshold_mode="abs"), -1),
    # Reductions smaller than eps are skipped: 3e-8 -> 1.5e-8 is applied (1.5e-8 > 1e-8), the next is not.
    ("eps", 3e-8, dict(factor=0.5, patience=1), 1),
    ("zero-patience", 0.1, dict(factor=0.7, patience=0, min_lr=0.01), 1),
]


# The "eps" case needs a rate far below any usual range: the range warning is expected.
@pytest.mark.filterwarnings("ignore::gradstep.LearningRateWarning")
@pytest.mark.parametrize("lr, kwargs, power", [c[1:] for c in CONFIGS], ids=[c[0] for c in CONFIGS])
def test_matches_torch(lr: float, kwargs: dict, power: int) -> None:
    w = np.zeros(3)
    opt = gs.SGD([w], lr=lr)
    plateau = gs.ReduceLROnPlateau(opt, **kwargs)
    topt, tplateau = torch_pair(lr, **kwargs)
    reductions = 0
    for m in metric_series():
        before = topt.param_groups[0]["lr"]
        plateau.step(m**power)
        tplateau.step(m**power)
        expected = topt.param_groups[0]["lr"]
        reductions += expected != before
        assert opt.lr == pytest.approx(expected, rel=1e-12)
        assert plateau.get_last_lr()[0] == opt.lr
        assert plateau.num_bad_epochs == tplateau.num_bad_epochs
        assert plateau.cooldown_counter == tplateau.cooldown_counter
        assert plateau.best == tplateau.best
    assert reductions >= 1


@pytest.mark.filterwarnings("ignore::gradstep.LearningRateWarning")  # a deliberately tiny rate
def test_reductions_below_eps_are_skipped() -> None:
    opt = gs.SGD([np.zeros(1)], lr=3e-8)
    plateau = gs.ReduceLROnPlateau(opt, factor=0.5, patience=0)
    for _ in range(5):
        plateau.step(1.0)
    assert opt.lr == pytest.approx(1.5e-8, rel=1e-15)  # 3e-8 -> 1.5e-8 (> eps), then 7.5e-9 < eps: skipped


def test_min_lr_is_reached_like_torch() -> None:
    w = np.zeros(2)
    opt = gs.SGD([w], lr=0.1)
    plateau = gs.ReduceLROnPlateau(opt, factor=0.5, patience=0, min_lr=0.01)
    topt, tplateau = torch_pair(0.1, factor=0.5, patience=0, min_lr=0.01)
    for _ in range(20):
        plateau.step(1.0)
        tplateau.step(1.0)
        assert opt.lr == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12)
    assert opt.lr == pytest.approx(0.01, rel=1e-12)


def test_scales_a_schedule() -> None:
    # With eps=0 and min_lr=0 the decisions do not depend on the rate's size,
    # so torch's plateau on a constant lr of 1 gives the scale exactly.
    sched = S.cosine(0.1, 200, final_lr=0.01)
    w = np.zeros(4)
    opt = gs.SGD([w], lr=sched, momentum=0.9)
    plateau = gs.ReduceLROnPlateau(opt, factor=0.5, patience=2, cooldown=1, eps=0.0)
    topt, tplateau = torch_pair(1.0, factor=0.5, patience=2, cooldown=1, eps=0.0)
    grad = np.ones(4)
    for m in metric_series():
        opt.step([grad])
        plateau.step(m)
        tplateau.step(m)
        k = opt.step_count
        assert opt.lr == pytest.approx(topt.param_groups[0]["lr"] * (0.01 + 0.09 * (1 + math.cos(math.pi * k / 200)) / 2),
                                       rel=1e-12)
    assert opt.lr_scale < 1.0


def test_min_lr_floors_a_scaled_schedule_but_never_lifts_it() -> None:
    min_lr = 0.004
    sched = S.linear(0.1, 0.0, 100)  # falls below min_lr on its own
    w = np.zeros(2)
    opt = gs.SGD([w], lr=sched)
    plateau = gs.ReduceLROnPlateau(opt, factor=0.1, patience=0, min_lr=min_lr)
    for k in range(120):
        base = 0.1 * (1 - min(k, 100) / 100)
        assert opt.lr == pytest.approx(max(opt.lr_scale * base, min(base, min_lr)), rel=1e-12, abs=0.0)
        assert opt.lr >= min(base, min_lr) * (1 - 1e-12)
        if base < min_lr * (1 - 1e-12):
            assert opt.lr == pytest.approx(base, rel=1e-12, abs=0.0)
        opt.step([np.ones(2)])
        plateau.step(1.0)  # never improves: a reduction whenever it changes the rate by more than eps
    # Two reductions (0.1x, then to the floor); after that a reduction would not
    # change the rate, so, as in torch, it is skipped and the scale stays.
    assert opt.lr_scale == pytest.approx(0.01, rel=1e-12)


def test_optimizer_with_plateau_matches_torch() -> None:
    rng = np.random.default_rng(11)
    init = rng.standard_normal(17)
    grads = [rng.standard_normal(17) for _ in range(80)]
    metrics = metric_series()[:80]
    kwargs = dict(factor=0.5, patience=2, cooldown=1, min_lr=1e-3)

    w = init.copy()
    opt = gs.SGD([w], lr=0.05, momentum=0.9)
    plateau = gs.ReduceLROnPlateau(opt, **kwargs)
    p = torch.nn.Parameter(torch.tensor(init))
    topt = torch.optim.SGD([p], lr=0.05, momentum=0.9)
    tplateau = L.ReduceLROnPlateau(topt, **kwargs)
    for g, m in zip(grads, metrics):
        opt.step([g])
        p.grad = torch.tensor(g)
        topt.step()
        plateau.step(m)
        tplateau.step(m)
    np.testing.assert_allclose(w, p.detach().numpy(), rtol=1e-10, atol=1e-14)
    assert opt.lr == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12)
    assert opt.lr < 0.05 * 0.5**2


def test_resume_is_exact() -> None:
    rng = np.random.default_rng(5)
    init = rng.standard_normal(9)
    grads = [rng.standard_normal(9) for _ in range(70)]
    metrics = metric_series()[:70]
    sched = S.warmup(S.exponential(0.05, 0.99), 5)
    kwargs = dict(factor=0.5, patience=2, cooldown=2, min_lr=1e-4)

    def run(w: np.ndarray, opt: gs.Optimizer, plateau: gs.ReduceLROnPlateau, k0: int, k1: int) -> list[float]:
        rates = []
        for g, m in zip(grads[k0:k1], metrics[k0:k1]):
            rates.append(opt.lr)
            opt.step([g])
            plateau.step(m)
        return rates

    w_straight = init.copy()
    opt = gs.SGD([w_straight], lr=sched, momentum=0.9)
    straight_rates = run(w_straight, opt, gs.ReduceLROnPlateau(opt, **kwargs), 0, 70)

    w = init.copy()
    opt = gs.SGD([w], lr=sched, momentum=0.9)
    plateau = gs.ReduceLROnPlateau(opt, **kwargs)
    rates = run(w, opt, plateau, 0, 30)
    opt_state, plateau_state = opt.state_dict(), plateau.state_dict()
    assert opt_state["lr_scale"] < 1.0

    w2 = w.copy()
    opt2 = gs.SGD([w2], lr=0.1, momentum=0.9)
    plateau2 = gs.ReduceLROnPlateau(opt2)  # default settings: the state_dict's must win
    opt2.load_state_dict(opt_state)
    plateau2.load_state_dict(plateau_state)
    assert plateau2.state_dict() == plateau_state
    rates += run(w2, opt2, plateau2, 30, 70)
    assert rates == straight_rates
    assert np.array_equal(w2, w_straight)


BAD = [
    (dict(factor=1.0), "factor"),
    (dict(factor=-0.1), "factor"),
    (dict(mode="avg"), "mode"),
    (dict(threshold_mode="pct"), "threshold_mode"),
    (dict(patience=-1), "patience"),
    (dict(cooldown=-2), "cooldown"),
    (dict(min_lr=float("nan")), "min_lr"),
    (dict(eps=-1.0), "eps"),
    (dict(threshold=float("inf")), "threshold"),
]


@pytest.mark.parametrize("kwargs, name", BAD, ids=[b[1] + str(i) for i, b in enumerate(BAD)])
def test_bad_arguments(kwargs: dict, name: str) -> None:
    opt = gs.SGD([np.zeros(2)], lr=0.1)
    with pytest.raises(ValueError, match=name):
        gs.ReduceLROnPlateau(opt, **kwargs)


def test_bad_state_dict_changes_nothing() -> None:
    opt = gs.SGD([np.zeros(2)], lr=0.1)
    plateau = gs.ReduceLROnPlateau(opt, patience=3)
    bad = plateau.state_dict() | {"factor": 2.0, "num_bad_epochs": 4}
    with pytest.raises(ValueError, match="factor"):
        plateau.load_state_dict(bad)
    assert plateau.patience == 3 and plateau.factor == 0.1 and plateau.num_bad_epochs == 0
