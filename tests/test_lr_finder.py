"""The learning-rate range test, on problems whose good rate is known in closed form.

For f(x) = a/2 * |x|^2 and plain gradient descent, x <- (1 - lr*a) x: the rate
1/a reaches the minimum in one step, rates up to 2/a converge, rates above 2/a
diverge. A sound range test must suggest a rate within a decade below 1/a,
never one that diverges, and must stop soon after the rate passes 2/a.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import gradstep as gs
from gradstep.lr_finder import (
    METHODS,
    MIN_POINTS,
    SUGGESTERS,
    _longest_decreasing_run,
    lr_sweep,
    suggest_minimum,
    suggest_steepest,
    suggest_valley,
)


def quadratic(a: float, noise: float = 0.0, seed: int = 0, dim: int = 100):
    """An SGD optimizer on f(x) = a/2 mean(x^2) and its range-test step function."""
    rng = np.random.default_rng(seed)
    x = np.ones(dim)
    opt = gs.SGD([x], lr=1e-3)

    def step(lr: float) -> float:
        assert opt.lr == lr  # lr_find sets the optimizer's rate before each step
        loss = 0.5 * a * float(np.mean(x * x))
        opt.step([a * x + noise * a * rng.standard_normal(dim)])
        return loss

    return x, opt, step


@pytest.mark.parametrize("a", [0.5, 4.0, 50.0])
@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_suggestions_land_in_the_decade_below_the_optimal_rate(a: float, noise: float) -> None:
    _, opt, step = quadratic(a, noise)
    result = gs.lr_find(opt, step, start_lr=1e-5 / a, end_lr=1e3 / a, num_steps=100, progress=False)
    for method, lr in result.suggestions.items():
        assert lr is not None, method
        assert 0.1 / a <= lr <= 1.0 / a, (method, lr * a)
    assert result.suggested_lr == result.suggestion("valley")


@pytest.mark.parametrize("a", [0.5, 4.0, 50.0])
def test_divergence_stops_the_test_early(a: float) -> None:
    x, opt, step = quadratic(a)
    num_steps = 100
    result = gs.lr_find(opt, step, start_lr=1e-5 / a, end_lr=1e3 / a, num_steps=num_steps, progress=False)
    assert result.stop_reason.startswith("diverged")
    assert len(result.lrs) < num_steps
    # The loss can only grow once lr > 2/a, so stopping requires passing it...
    assert result.lrs[-1] > 2.0 / a
    # ...and a 4x rise takes few of these ~15%-apart rates beyond it.
    assert result.lrs[-1] < 2.0 / a * 10
    assert result.smoothed_losses[-1] > 4.0 * np.min(result.smoothed_losses)
    np.testing.assert_array_equal(result.lrs, lr_sweep(1e-5 / a, 1e3 / a, num_steps)[: len(result.lrs)])


def test_first_non_finite_loss_stops_and_cuts_the_curve() -> None:
    x, opt, step = quadratic(4.0)

    def overflowing(lr: float) -> float:
        loss = step(lr)
        return math.inf if lr > 0.6 else loss  # an overflow well before the 4x rule fires

    result = gs.lr_find(opt, overflowing, start_lr=1e-6, end_lr=100.0, progress=False)
    assert result.stop_reason.startswith("non-finite loss")
    assert math.isinf(result.losses[-1]) and math.isnan(result.smoothed_losses[-1])
    assert np.isfinite(result.losses[:-1]).all()
    suggestions = result.suggestions
    for method in ("steepest", "valley"):
        assert 0.1 / 4.0 <= suggestions[method] <= 1.0 / 4.0
    # The cut curve still falls at its end, so "minimum" is a tenth of a rate below 2/a.
    assert suggestions["minimum"] < 0.1 * 2.0 / 4.0


def test_nan_inside_a_recorded_curve_cuts_it_there() -> None:
    lrs = np.logspace(-6, 1, 60)
    losses = 1.0 / (1.0 + (lrs / 1e-3) ** 2) + 0.1  # falls around 1e-3
    losses[40] = np.nan  # e.g. a curve loaded from another tool
    losses[41:] = -100.0  # garbage after the NaN must not become the minimum
    result = gs.LRFinderResult(lrs, losses, losses, skip_start=0, skip_end=0)
    used_lrs, _ = result.usable()
    assert len(used_lrs) == 40
    assert 1e-4 <= result.suggestion("steepest") <= 1e-2
    assert result.suggestion("minimum") == pytest.approx(lrs[39] / 10)


def test_skipping_the_ends_survives_a_noisy_start() -> None:
    lrs = np.logspace(-6, 1, 100)
    losses = 1.0 / (1.0 + (lrs / 1e-3) ** 2) + 0.1 + (lrs / 0.1) ** 2  # lowest near 0.01
    losses[:3] = 0.0  # a few lucky first batches: lowest loss at the very start
    losses[-2:] = 0.0  # and a final spike down of a diverging run
    noisy = gs.LRFinderResult(lrs, losses, losses, skip_start=0, skip_end=0)
    assert noisy.suggestion("steepest") is None  # the curve's minimum is at its start
    result = gs.LRFinderResult(lrs, losses, losses)  # default skips: 10 and 5
    for lr in result.suggestions.values():
        assert lr is not None and 1e-4 <= lr <= 1e-2


@pytest.mark.parametrize("n", [0, 1, 2, MIN_POINTS - 1])
def test_too_few_points_give_none_and_a_reason(n: int, tmp_path: Path) -> None:
    lrs = np.logspace(-3, 0, n)
    losses = np.linspace(1.0, 0.5, n)
    result = gs.LRFinderResult(lrs, losses, losses)
    assert result.suggestions == {"steepest": None, "valley": None, "minimum": None}
    assert "usable points" in result.notes["valley"]
    assert "None" in str(result)
    if n:
        result.plot(tmp_path / "few.png")
        assert (tmp_path / "few.png").read_bytes()[:4] == b"\x89PNG"


def test_short_curves_keep_enough_points_despite_skips() -> None:
    lrs = np.logspace(-3, 0, 8)
    losses = np.array([2.0, 1.9, 1.5, 1.0, 0.6, 0.5, 0.8, 3.0])
    result = gs.LRFinderResult(lrs, losses, losses)  # skip 10 + 5 > 8 points
    assert len(result.usable()[0]) == MIN_POINTS
    assert all(lr is not None for lr in result.suggestions.values())


def test_immediate_divergence_is_a_clear_answer() -> None:
    x, opt, step = quadratic(4.0)
    result = gs.lr_find(opt, step, start_lr=10.0, end_lr=1e4, num_steps=50, progress=False)
    assert result.stop_reason.startswith("diverged")
    assert result.suggested_lr is None
    assert result.notes["valley"]


def test_a_loss_that_only_rises_has_no_suggestion() -> None:
    lrs = np.logspace(-3, 0, 30)
    losses = np.linspace(1.0, 2.0, 30)
    result = gs.LRFinderResult(lrs, losses, losses, skip_start=2, skip_end=2)
    assert result.suggestions == {"steepest": None, "valley": None, "minimum": None}
    assert "never decreased" in result.notes["steepest"]


def test_suggestion_rules_are_pure_functions_of_the_curve() -> None:
    lrs = np.logspace(-6, 1, 60)
    losses = 1.0 / (1.0 + (lrs / 1e-3) ** 2) + 0.1 + (lrs / 1.0) ** 2  # falls around 1e-3, then rises
    result = gs.LRFinderResult(lrs, losses, losses, skip_start=0, skip_end=0)
    assert SUGGESTERS == {"steepest": suggest_steepest, "valley": suggest_valley, "minimum": suggest_minimum}
    assert tuple(SUGGESTERS) == METHODS
    for method, rule in SUGGESTERS.items():
        x, y = lrs.copy(), losses.copy()
        rate, note = rule(x, y)
        assert note is None and rate is not None and 1e-5 <= rate <= 1e-2, method
        assert rate == result.suggestion(method)
        assert np.array_equal(x, lrs) and np.array_equal(y, losses)  # arguments untouched
    for rule in SUGGESTERS.values():
        rate, note = rule(lrs[:MIN_POINTS - 1], losses[:MIN_POINTS - 1])
        assert rate is None and note is not None and "usable points" in note
        rate, note = rule(lrs, np.linspace(1.0, 2.0, len(lrs)))
        assert rate is None and note is not None and "never decreased" in note
    with pytest.raises(ValueError, match="differ in length"):
        suggest_valley(lrs, losses[:-1])


def _reading_cases() -> dict[str, gs.LRFinderResult]:
    lrs = np.logspace(-3, 0, 30)
    rising = np.linspace(1.0, 2.0, 30)
    short = np.linspace(1.0, 0.5, MIN_POINTS - 1)
    _, opt, step = quadratic(4.0)
    found = gs.lr_find(opt, step, start_lr=1e-5, end_lr=100.0, progress=False)
    found.run_notes["data"] = "a quadratic"
    return {
        "found": found,  # every reading suggests a rate; one note of the run's own
        "rising": gs.LRFinderResult(lrs, rising, rising, skip_start=2, skip_end=2),
        "short": gs.LRFinderResult(lrs[: MIN_POINTS - 1], short, short),
    }


@pytest.mark.parametrize("case", ["found", "rising", "short"])
def test_reading_a_result_in_any_order_leaves_its_notes_unchanged(case: str, tmp_path: Path) -> None:
    readers: dict[str, Callable[[gs.LRFinderResult], object]] = {
        "str": str,
        "plot": lambda r: r.plot(tmp_path / "curve.png"),
        "suggestion": lambda r: [r.suggestion(m) for m in reversed(METHODS)],
    }
    seen = []
    for order in itertools.permutations(readers):
        result = _reading_cases()[case]
        notes, run_notes = result.notes, dict(result.run_notes)
        for name in order:
            readers[name](result)
            assert result.notes == notes, (order, name)
            assert result.run_notes == run_notes, (order, name)
        result.notes["data"] = "written into a copy"  # notes is a fresh dict: this changes nothing
        assert result.notes == notes
        seen.append((notes, str(result)))
    assert all(x == seen[0] for x in seen)  # the same notes and text whatever the order
    notes = seen[0][0]
    if case == "found":
        assert notes == {"data": "a quadratic"}
    else:
        assert list(notes) == list(METHODS)
    result = _reading_cases()[case]
    for method in METHODS:  # suggest() returns the rate with its note
        assert result.suggest(method) == (result.suggestion(method), notes.get(method))


def test_longest_decreasing_run() -> None:
    # Small rises inside a run are allowed as long as the run keeps reaching new lows.
    seq = np.array([5.0, 6.0, 4.0, 4.5, 3.0, 7.0, 2.0, 8.0, 9.0])
    assert _longest_decreasing_run(seq) == (1, 6)  # 6 > 4 > 3 > 2 (or 5 > 4 > 3 > 2)
    assert _longest_decreasing_run(np.array([1.0, 2.0, 3.0])) in {(0, 0), (1, 1), (2, 2)}


def test_smoothing_is_a_bias_corrected_moving_average() -> None:
    raw = [3.0, 1.0, 2.0, 0.5]
    x = np.zeros(1)
    opt = gs.SGD([x], lr=1e-3)
    it = iter(raw)
    result = gs.lr_find(opt, lambda lr: next(it), start_lr=1e-3, end_lr=1e-2, num_steps=4,
                        smooth=0.5, progress=False)
    expected, avg = [], 0.0
    for i, loss in enumerate(raw):
        avg = 0.5 * avg + 0.5 * loss
        expected.append(avg / (1 - 0.5 ** (i + 1)))
    np.testing.assert_allclose(result.smoothed_losses, expected, rtol=1e-15)
    assert result.smoothed_losses[0] == raw[0]  # bias correction: no pull towards 0


def test_linear_mode_and_sweep() -> None:
    np.testing.assert_allclose(lr_sweep(0.1, 1.0, 10, "linear"), np.linspace(0.1, 1.0, 10))
    exp = lr_sweep(1e-4, 1.0, 5)
    np.testing.assert_allclose(exp, [1e-4, 1e-3, 1e-2, 1e-1, 1.0], rtol=1e-12)
    x, opt, step = quadratic(4.0)
    result = gs.lr_find(opt, step, start_lr=0.01, end_lr=1.0, num_steps=40, mode="linear", progress=False)
    np.testing.assert_allclose(np.diff(result.lrs), (1.0 - 0.01) / 39)
    assert result.suggestions["minimum"] is not None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(start_lr=0.0), "0 < start_lr < end_lr"),
        (dict(start_lr=1.0, end_lr=0.1), "0 < start_lr < end_lr"),
        (dict(end_lr=math.inf), "0 < start_lr < end_lr"),
        (dict(num_steps=1), "num_steps"),
        (dict(mode="cosine"), "mode"),
        (dict(smooth=1.0), "smooth"),
        (dict(diverge_factor=1.0), "diverge_factor"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs: dict, match: str) -> None:
    x, opt, step = quadratic(1.0)
    with pytest.raises(ValueError, match=match):
        gs.lr_find(opt, step, **kwargs)
    assert (x == 1.0).all()  # nothing ran


# -- restoring: training after the test equals training without it ---------------

def _make(name: str, params: list[np.ndarray]) -> gs.Optimizer:
    return {
        "SGD": lambda: gs.SGD(params, lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-3),
        "Adagrad": lambda: gs.Adagrad(params, lr=0.01, lr_decay=1e-3, initial_accumulator_value=0.1),
        "Adadelta": lambda: gs.Adadelta(params, lr=1.0),
        "RMSprop": lambda: gs.RMSprop(params, lr=0.01, momentum=0.5, centered=True),
        "Adam": lambda: gs.Adam(params, lr=1e-3, amsgrad=True),
        "AdamW": lambda: gs.AdamW(params, lr=1e-3),
        "Adamax": lambda: gs.Adamax(params, lr=1e-3, weight_decay=1e-3),
        "RAdam": lambda: gs.RAdam(params, lr=1e-3, weight_decay=1e-3, decoupled_weight_decay=True),
        "NAdam": lambda: gs.NAdam(params, lr=1e-3, weight_decay=1e-3, momentum_decay=0.1),
        "Lamb": lambda: gs.Lamb(params, lr=1e-3, caution=True),
        "Lion": lambda: gs.Lion(params, lr=1e-4, weight_decay=0.1, decoupled_weight_decay=True),
        "Adafactor": lambda: gs.Adafactor(params, lr=1e-2, weight_decay=1e-3),
    }[name]()


def _problem(dtype: type) -> tuple[list[np.ndarray], Callable[[list[np.ndarray]], tuple[float, list]]]:
    rng = np.random.default_rng(7)
    target = rng.standard_normal((5, 3)).astype(dtype)
    params = [rng.standard_normal((5, 3)).astype(dtype), rng.standard_normal(7).astype(dtype)]

    def loss_and_grads(ps: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
        w, b = ps
        return float(np.sum((w - target) ** 2) + np.sum(b**4)), [2 * (w - target), 4 * b**3]

    return params, loss_and_grads


@pytest.mark.parametrize("name", ["SGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW", "Adamax", "RAdam", "NAdam",
                                  "Lamb", "Lion", "Adafactor"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_training_after_the_test_equals_training_without_it(name: str, dtype: type) -> None:
    runs = []
    for with_finder in (False, True):
        params, loss_and_grads = _problem(dtype)
        opt = _make(name, params)
        buffers = [p.ctypes.data for p in params]
        for _ in range(5):  # warm state: momentum, averages, step count all non-trivial
            opt.step(loss_and_grads(params)[1])
        if with_finder:
            before = opt.state_dict()

            def step(lr: float) -> float:
                loss, grads = loss_and_grads(params)
                opt.step(grads)
                return loss

            result = gs.lr_find(opt, step, start_lr=1e-6, end_lr=10.0, num_steps=30, progress=False)
            assert len(result.lrs) > 5  # it did train
            after = opt.state_dict()
            assert after["step"] == before["step"] == 5 and after["lr"] == before["lr"]
            for key in before["state"]:
                for x, y in zip(before["state"][key], after["state"][key]):
                    assert np.array_equal(x, y)
        assert [p.ctypes.data for p in params] == buffers  # same arrays, values copied back
        for _ in range(5):
            opt.step(loss_and_grads(params)[1])
        runs.append((params, opt.state_dict(), opt.step_count))
    (p0, s0, n0), (p1, s1, n1) = runs
    assert n0 == n1 == 10
    for x, y in zip(p0, p1):
        assert np.array_equal(x, y)  # bit for bit
    for key in s0["state"]:
        for x, y in zip(s0["state"][key], s1["state"][key]):
            assert np.array_equal(x, y)


def test_restores_a_callable_rate_and_restores_when_the_step_raises() -> None:
    x, opt, step = quadratic(4.0)

    def schedule(k: int) -> float:
        return 0.01 / (1 + k)

    opt.lr = schedule
    calls = []

    def failing(lr: float) -> float:
        calls.append(lr)
        if len(calls) == 10:
            raise RuntimeError("out of data")
        return step(lr)

    with pytest.raises(RuntimeError, match="out of data"):
        gs.lr_find(opt, failing, start_lr=1e-3, end_lr=1.0, progress=False)
    assert (x == 1.0).all() and opt.step_count == 0
    assert opt.schedule is schedule and opt.lr == 0.01


def test_restore_false_keeps_the_trained_values() -> None:
    x, opt, step = quadratic(4.0)
    result = gs.lr_find(opt, step, start_lr=1e-3, end_lr=0.2, num_steps=20, restore=False, progress=False)
    assert opt.step_count == len(result.lrs) == 20
    assert (np.abs(x) < 1.0).all()
    assert opt.lr == 1e-3  # the optimizer's own rate is always put back


def test_progress_bar_when_asked_and_quiet_otherwise(capsys: pytest.CaptureFixture[str]) -> None:
    x, opt, step = quadratic(4.0)
    gs.lr_find(opt, step, num_steps=60, progress=True)
    assert "lr range test" in capsys.readouterr().err
    gs.lr_find(opt, step, num_steps=60, progress=False)
    gs.lr_find(opt, step, num_steps=60)  # default: only on a terminal; pytest's is not
    assert capsys.readouterr().err == ""


def test_plot_writes_a_png(tmp_path: Path) -> None:
    x, opt, step = quadratic(4.0)
    result = gs.lr_find(opt, step, start_lr=1e-5, end_lr=100.0, progress=False)
    fig = result.plot(tmp_path / "range.png", title="quadratic")
    assert (tmp_path / "range.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    labels = [line.get_label() for line in ax.get_lines()]
    assert any(label.startswith("valley") for label in labels)


def test_a_plateau_scale_neither_shrinks_the_test_rates_nor_is_lost() -> None:
    x, opt, step = quadratic(4.0)  # its step function asserts opt.lr == the test's rate
    schedule = gs.schedules.cosine(0.05, total_steps=100)
    opt.lr = schedule
    plateau = gs.ReduceLROnPlateau(opt, factor=0.5, patience=0, min_lr=1e-4)
    plateau.step(1.0)
    plateau.step(2.0)  # no improvement: the rate is halved
    assert opt.lr_scale == 0.5
    result = gs.lr_find(opt, step, start_lr=1e-3, end_lr=1.0, num_steps=20, progress=False)
    assert len(result.lrs) == 20
    assert opt.schedule is schedule and opt.lr_scale == 0.5 and opt.lr == 0.025
    assert (x == 1.0).all()
