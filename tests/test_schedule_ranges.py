"""Schedules at the edges: huge steps, tiny and huge parameters, deep compositions.

Every value must be finite, non-negative and inside the interval the
schedule's definition allows (bounds written here from the math, not from
the code's output), agree with a reference computed from the definition
(Python integers, fractions and math.fsum, no shared closed form), and bad
steps or compositions must raise a ValueError that says what is wrong.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest

import gradstep as gs
from gradstep import schedules as S

I63 = 2**63 - 1
HUGE = [2**40, 2**53 + 1, 2**62, I63]
STEPS = sorted({0, 1, 2, 3, 7, 1000, 12345, 10**6, 2**31, *HUGE, I63 - 1})


# (id, schedule, lower bound, upper bound, non-increasing?) -- bounds from each definition.
def _cases():
    c = []
    c.append(("constant", S.constant(0.3), 0.3, 0.3, True))
    for g in (0.1, 1 - 1e-12, 1.0, 0.0):
        c.append((f"step-{g}", S.step(0.1, 1, g), 0.0, 0.1, True))
        c.append((f"exponential-{g}", S.exponential(0.1, g), 0.0, 0.1, True))
        c.append((f"multistep-{g}", S.multistep(0.1, [0, 5, 2**62], g), 0.0, 0.1, True))
        c.append((f"exp-decay-{g}", S.exponential_decay(0.1, g, 1), 0.0, 0.1, True))
        c.append((f"exp-decay-stair-{g}", S.exponential_decay(0.1, g, 3, staircase=True), 0.0, 0.1, True))
    c.append(("exp-decay-1e-300", S.exponential_decay(0.1, 1e-300, 2**62), 0.0, 0.1, True))
    for rate in (0.0, 1e-300, 1e-12, 5.0):
        c.append((f"exp-rate-{rate}", S.exponential(0.1, rate=rate), 0.0, 0.1, True))
    for d in (0.0, 1e-300, 1e-12, 1.0, 1e300):
        c.append((f"inverse-time-{d}", S.inverse_time(0.1, d), 0.0, 0.1, True))
        c.append((f"inverse-time-stair-{d}", S.inverse_time(0.1, d, 7, True), 0.0, 0.1, True))
    for d in (0.0, 5e-324, 1e-300, 1e-24, 1e-12, 1e-4, 0.03, 1.0, 1e300):
        c.append((f"time-based-{d}", S.time_based(0.1, d), 0.0, 0.1, True))
    for T in (1, 7, 2**62, I63):
        for p in (0.0, 0.5, 1.0, 3.0):
            c.append((f"polynomial-{T}-{p}", S.polynomial(0.1, T, p, 0.001), 0.001, 0.1, True))
        c.append((f"linear-down-{T}", S.linear(0.1, 0.001, T), 0.001, 0.1, True))
        c.append((f"linear-up-{T}", S.linear(0.001, 0.1, T), 0.001, 0.1, False))
        c.append((f"cosine-{T}", S.cosine(0.1, T, 0.001), 0.001, 0.1, False))
        c.append((f"cosine-up-{T}", S.cosine(0.001, T, 0.1), 0.001, 0.1, False))
    for period, mult in ((1, 1), (3, 1), (1, 2), (5, 3), (2**62, 2), (I63, 1)):
        c.append((f"restarts-{period}-{mult}", S.cosine_restarts(0.1, period, mult, 0.001), 0.001, 0.1, False))
    for up, down in ((1, 1), (3, 5), (2**62, 2**62), (I63, I63)):
        for mode, g in (("triangular", 1.0), ("triangular2", 1.0), ("exp_range", 0.99), ("exp_range", 1 - 1e-15)):
            c.append((f"cyclic-{mode}-{g}-{up}-{down}", S.cyclic(0.01, 0.1, up, down, mode, g), 0.01, 0.1, False))
        c.append((f"cyclic-down-{up}", S.cyclic(0.1, 0.01, up, down), 0.01, 0.1, False))
    for total in (2, 100, 2**62, I63):
        for three in (False, True):
            for anneal in ("cos", "linear"):
                if total == 2 and three:
                    continue
                pct = 0.3 if total > 2 else 0.9
                sched = S.one_cycle(0.1, total, pct, anneal, 25.0, 1e4, three)
                c.append((f"one-cycle-{total}-{three}-{anneal}", sched, 0.1 / 25 / 1e4, 0.1, False))
    c.append(("piecewise", S.piecewise_constant([1, 2**62], [0.1, 0.05, 0.2]), 0.05, 0.2, False))
    c.append(("warmup", S.warmup(S.time_based(0.1, 1e-300), 2**62, 0.01), 0.01, 0.1, False))
    c.append(("sequence", S.sequence([S.cosine(0.1, 2**61), S.linear(0.1, 0.0, I63)], [2**61]), 0.0, 0.1, True))
    return c


CASES = _cases()


@pytest.mark.parametrize("name, sched, low, high, decreasing", CASES, ids=[c[0] for c in CASES])
def test_every_kind_stays_in_its_range_at_any_step(name, sched, low, high, decreasing):
    steps = np.array(STEPS, dtype=np.int64)
    out = sched(steps)
    assert np.all(np.isfinite(out)), (name, out)
    assert np.all(out >= low) and np.all(out <= high), (name, out.tolist())
    if decreasing:
        assert np.all(np.diff(out) <= 0), (name, out.tolist())
    assert out.tolist() == [sched(int(k)) for k in steps]  # scalar and vector paths agree


def test_time_based_tiny_decay_stays_at_its_first_rate():
    # The example: it used to climb to 1e221.
    sched = S.time_based(0.1, decay=1e-300)
    assert sched(2**62) == 0.1
    assert sched(I63) == 0.1


def _time_based_log_exact(d: float, n: int, terms: int = 8) -> float:
    # sum_{i<n} log1p(d i) = sum_p (-1)^(p+1) d^p S_p / p, S_p by Faulhaber in
    # exact integers (valid while n d << 1, the only regime used here).
    dd = Fraction(d)
    s1 = n * (n - 1) // 2
    sums = {1: s1, 2: (n - 1) * n * (2 * n - 1) // 6, 3: s1 * s1,
            4: n * (n - 1) * (2 * n - 1) * (3 * n * n - 3 * n - 1) // 30}
    total = Fraction(0)
    for p in range(1, 5):
        total += (-1) ** (p + 1) * dd**p * sums[p] / p
    return float(total)


@pytest.mark.parametrize("d, n", [(1e-24, 2**40), (1e-30, 2**53 + 1), (1e-38, 2**62), (1e-300, I63),
                                  (1e-18, 10**9), (3e-16, 2**31)])
def test_time_based_huge_steps_match_exact_series(d, n):
    want = 0.1 * math.exp(-_time_based_log_exact(d, n))
    assert S.time_based(0.1, d)(n) == pytest.approx(want, rel=1e-13)


@pytest.mark.parametrize("d", [1e-300, 1e-12, 1e-8, 1.1e-8, 1e-7, 1e-5, 1e-3, 0.03, 0.5, 31.0, 40.0])
def test_time_based_matches_fsum_of_log1p(d):
    sched = S.time_based(0.1, d)
    for n in (0, 1, 2, 3, 10, 99, 1000, 9999, 30000):
        log_eta = -math.fsum(math.log1p(d * i) for i in range(n))
        want = 0.1 * math.exp(log_eta)
        if want > 1e-290:
            assert sched(n) == pytest.approx(want, rel=1e-11), (d, n)


def test_polynomial_and_linear_keep_the_last_steps_distance_to_the_end():
    T = 2**62
    # (1 - (T - 1) / T) is 0 in float64; the definition's value is 1 / T.
    assert S.polynomial(0.1, T, 1.0)(T - 1) == pytest.approx(0.1 / T, rel=1e-15)
    assert S.polynomial(0.1, T, 2.0)(T - 2) == pytest.approx(0.1 * (2 / T) ** 2, rel=1e-15)
    assert S.polynomial(0.1, T, 1.0)(T) == 0.0
    assert S.linear(0.1, 0.0, T)(T - 1) == pytest.approx(0.1 / T, rel=1e-15)
    assert S.linear(0.0, 0.1, T)(1) == pytest.approx(0.1 / T, rel=1e-15)
    assert S.linear(0.0, 0.1, T)(T - 3) == pytest.approx(0.1 - 0.3 / T, rel=1e-15)


def _cos_ref(lr: float, final: float, m: int, T: int) -> float:
    # (1 + cos(pi m / T)) / 2 == cos(pi m / (2T))^2 == sin(pi (T - m) / (2T))^2, m in [0, T]
    c = math.cos(math.pi * m / (2 * T)) ** 2 if 2 * m <= T else math.sin(math.pi * (T - m) / (2 * T)) ** 2
    return final + (lr - final) * c


@pytest.mark.parametrize("T", [1, 3, 1000, 2**40 + 7, 2**62, I63])
def test_cosine_at_huge_steps_and_near_the_end(T):
    sched = S.cosine(0.1, T, 0.0)
    for k in {0, 1, T // 2, T - 1, T, min(T + 1, I63), *HUGE}:
        q, rem = divmod(k, T)
        m = rem if q % 2 == 0 else T - rem  # cos(pi k / T): period 2T, symmetric about T
        assert sched(k) == pytest.approx(_cos_ref(0.1, 0.0, m, T), rel=1e-13, abs=1e-300), k


@pytest.mark.parametrize("period, mult", [(3, 1), (7, 2), (1, 3), (2**40, 2)])
def test_cosine_restarts_at_huge_steps(period, mult):
    sched = S.cosine_restarts(0.1, period, mult, 0.001)
    for k in [0, period - 1, period, *HUGE]:
        start, length = (k - k % period, period) if mult == 1 else (0, period)
        while k - start >= length:
            start += length
            length *= mult
        want = _cos_ref(0.1, 0.001, k - start, length)
        assert sched(k) == pytest.approx(want, rel=1e-13), k


@pytest.mark.parametrize("up, down, mode, gamma", [(3, 5, "triangular", 1.0), (2000, 2000, "triangular2", 1.0),
                                                   (7, 2, "exp_range", 1 - 1e-17), (25, 15, "exp_range", 0.995)])
def test_cyclic_at_huge_steps(up, down, mode, gamma):
    sched = S.cyclic(0.01, 0.1, up, down, mode, gamma)
    for k in [0, up, up + down, *HUGE, 12345]:
        cycle, pos = divmod(k, up + down)
        x = Fraction(pos, up) if pos <= up else Fraction(up + down - pos, down)
        scale = {"triangular": 1.0, "triangular2": 2.0 ** -min(cycle, 5000),
                 "exp_range": math.exp(k * math.log(gamma))}[mode]
        want = 0.01 + float(Fraction(0.1 - 0.01) * x) * scale
        assert sched(k) == pytest.approx(want, rel=1e-13), k


def test_one_cycle_huge_total_near_the_end():
    total = 2**62
    sched = S.one_cycle(0.1, total, 0.3)
    low = 0.1 / 25 / 1e4
    assert sched(total - 1) == low and sched(I63) == low
    # the last anneal phase: end + (start - end) sin(pi (end_step - k) / (2 len))^2
    end_step, start_step = float(total - 1), 0.3 * total - 1.0
    k = total - 2**20
    frac = (end_step - k) / (end_step - start_step)
    want = low + (0.1 - low) * math.sin(math.pi * frac / 2) ** 2
    assert sched(k) == pytest.approx(want, rel=1e-9)


def test_moderate_steps_match_definitions():
    k = np.arange(0, 20000, 13)
    cases = [
        (S.exponential(0.1, 1 - 1e-12), [0.1 * math.exp(int(n) * math.log1p(-1e-12)) for n in k]),
        (S.step(0.1, 1, 1 - 1e-9), [0.1 * math.exp(int(n) * math.log1p(-1e-9)) for n in k]),
        (S.exponential(0.1, rate=1e-300), [0.1] * len(k)),
        (S.inverse_time(0.1, 1e-300), [0.1] * len(k)),
        (S.inverse_time(0.1, 1e300), [0.1] + [0.1 / (1e300 * int(n)) for n in k[1:]]),
        (S.exponential_decay(0.1, 1e-300, 1000), [0.1 * math.exp(int(n) / 1000 * math.log(1e-300)) for n in k]),
    ]
    for sched, want in cases:
        np.testing.assert_allclose(sched(k), want, rtol=1e-12, atol=0)


# ---- growth past float64, zero rates ----------------------------------------------


def test_a_growing_schedule_past_float64_raises_where_it_overflows():
    sched = S.exponential(0.1, 2.0)
    assert sched(1000) == 0.1 * 2.0**1000
    with pytest.raises(ValueError, match=r"step 1100 .*float64 range"):
        sched(1100)
    with pytest.raises(ValueError, match="float64 range"):
        sched(np.array([0, 1, 5000]))
    with pytest.raises(ValueError, match="float64 range"):
        S.exponential(0.1, rate=-1.0)(10**4)


def test_a_zero_rate_times_an_overflowing_factor_is_zero_not_nan():
    for sched in (S.exponential(0.0, 2.0), S.step(0.0, 1, 3.0), S.exponential(0.0, rate=-5.0)):
        assert sched(2**62) == 0.0
    # cyclic exp_range with gamma > 1 at a cycle's base: the height is 0, the rate base_lr
    assert S.cyclic(0.01, 0.1, 2, 2, "exp_range", 2.0)(4 * 10**5) == 0.01


def test_optimizer_step_on_an_overflowing_schedule_changes_nothing():
    w = np.ones(3)
    opt = gs.SGD([w], lr=S.exponential(0.1, 2.0))
    sd = opt.state_dict()
    sd["step"] = 1100
    opt.load_state_dict(sd)
    with pytest.raises(ValueError, match="float64 range"):
        opt.step([np.ones(3)])
    assert opt.step_count == 1100 and np.array_equal(w, np.ones(3))


# ---- steps outside int64 ----------------------------------------------------------


@pytest.mark.parametrize("bad", [2**63, 2**64, 10**30, -1, -(2**63), np.uint64(2**63), np.uint64(2**64 - 1)])
def test_scalar_steps_outside_int64_raise_value_error(bad):
    with pytest.raises(ValueError, match="step"):
        S.cosine(0.1, 100)(bad)


@pytest.mark.parametrize("bad", [np.array([2**63], dtype=np.uint64), [0, 2**63], [2**64], [-1, 2**63],
                                 np.array([5, -1])])
def test_array_steps_outside_int64_raise_value_error(bad):
    with pytest.raises(ValueError, match="step"):
        S.cosine(0.1, 100)(bad)


def test_the_largest_step_is_accepted():
    assert S.cosine(0.1, 100)(I63) == S.cosine(0.1, 100)(np.array([I63]))[0]
    assert S.cosine(0.1, 100)(np.array([I63], dtype=np.uint64))[0] == S.cosine(0.1, 100)(I63)


# ---- optimizer step counts ---------------------------------------------------------

MAX_STEP = getattr(gs.checkpoint, "MAX_STEP", 2**62)


def _snapshot(opt):
    return ([p.copy() for p in opt.params], {k: [a.copy() for a in v] for k, v in opt.state.items()},
            opt.step_count, opt.lr, opt.schedule)


def _assert_unchanged(opt, snap):
    params, state, step, lr, schedule = snap
    assert all(np.array_equal(a, b) for a, b in zip(opt.params, params))
    assert all(np.array_equal(a, b) for k in state for a, b in zip(opt.state[k], state[k]))
    assert opt.step_count == step and opt.lr == lr and opt.schedule == schedule


@pytest.mark.parametrize("step", [2**63, 2**63 - 1, MAX_STEP + 1, 2**70, -1, "5", 5.0, True, None, [3]])
def test_load_state_dict_refuses_steps_out_of_range(step):
    w = np.ones(4)
    opt = gs.Adam([w], lr=S.cosine(0.1, 10))
    opt.step([np.full(4, 0.5)])
    sd = opt.state_dict()
    sd["step"] = step
    snap = _snapshot(opt)
    with pytest.raises(ValueError, match=r"state_dict\['step'\]"):
        opt.load_state_dict(sd)
    _assert_unchanged(opt, snap)


def test_step_count_at_the_maximum_steps_on_without_overflow():
    assert MAX_STEP == 2**62
    w = np.ones(4)
    opt = gs.Adam([w], lr=S.cosine(0.1, 10))
    sd = opt.state_dict()
    sd["step"] = MAX_STEP
    opt.load_state_dict(sd)
    for _ in range(3):
        opt.step([np.full(4, 0.5)])
    assert opt.step_count == MAX_STEP + 3 and np.all(np.isfinite(w))


# ---- depth and size limits ------------------------------------------------------------


def test_depth_limit_is_documented_and_enforced_at_construction():
    assert S.MAX_DEPTH == 64 and "64" in (S.__doc__ or "")
    s = S.constant(0.1)
    for _ in range(S.MAX_DEPTH - 1):
        s = S.warmup(s, 2)
    with pytest.raises(ValueError, match="nest at most 64 levels"):
        S.warmup(s, 2)
    with pytest.raises(ValueError, match="nest at most 64 levels"):
        S.sequence([S.constant(0.2), s], [3])


def test_doubling_sequences_are_refused_before_they_explode():
    s = S.constant(0.1)
    with pytest.raises(ValueError, match="at most 10000 nodes"):
        for _ in range(40):  # 2**40 nodes if it were allowed
            s = S.sequence([s, s], [1])


def test_deepest_allowed_schedule_round_trips_everywhere(tmp_path):
    s = S.cosine(0.1, 1000, 0.001)
    for i in range(S.MAX_DEPTH - 2):
        s = S.warmup(s, 3 + i % 5, start_lr=1e-4) if i % 2 else S.sequence([S.constant(0.05), s], [2])
    s = S.warmup(s, 2)
    steps = np.array([0, 1, 2, 3, 50, 99, 100, 101, 500, 999, 5000, 2**40, 2**62, I63])
    want = s(steps)
    again = S.from_dict(json.loads(json.dumps(s.to_dict())))
    assert np.array_equal(again(steps), want)

    w = np.ones(3)
    opt = gs.SGD([w], lr=s, momentum=0.9)
    opt.step([np.ones(3)])
    sd = opt.state_dict()
    other = gs.SGD([np.ones(3)], lr=0.1, momentum=0.9)
    other.load_state_dict(sd)
    assert np.array_equal(other.schedule(steps), want) and other.lr == opt.lr
    gs.save(opt, tmp_path / "deep.npz")
    loaded = gs.load(tmp_path / "deep.npz", [w.copy()])
    assert np.array_equal(loaded.schedule(steps), want) and loaded.lr == opt.lr


def _nested(depth: int) -> dict:
    d: dict = {"type": "constant", "lr": 0.1}
    for _ in range(depth - 1):
        d = {"type": "warmup", "schedule": d, "steps": 2, "start_lr": 0.0}
    return d


@pytest.mark.parametrize("depth", [65, 400, 5000])
def test_from_dict_refuses_deep_nesting_without_recursion_error(depth):
    with pytest.raises(ValueError, match="nest at most 64 levels"):
        S.from_dict(_nested(depth))
    assert S.from_dict(_nested(64))(1000) == 0.1


def test_from_dict_refuses_huge_fan_out_before_building_it():
    wide = {"type": "sequence", "schedules": [{"type": "constant", "lr": 0.1}] * 10**6,
            "boundaries": list(range(1, 10**6))}
    with pytest.raises(ValueError, match="at most 10000 nodes"):
        S.from_dict(wide)
    # many nodes spread over several lists
    mid = {"type": "sequence", "schedules": [{"type": "constant", "lr": 0.1}] * 6000,
           "boundaries": list(range(1, 6000))}
    with pytest.raises(ValueError, match="at most 10000 nodes"):
        S.from_dict({"type": "sequence", "schedules": [mid, mid], "boundaries": [5]})


HOSTILE = [
    ({"type": "nope"}, "unknown schedule type"),
    ({"type": 3}, "type"),
    ({}, "type"),
    ([], "type"),
    ("cosine", "type"),
    (None, "type"),
    ({"type": "cosine"}, "cosine"),  # missing fields
    ({"type": "cosine", "lr": 0.1, "total_steps": 10, "bogus": 1}, "bogus"),
    ({"type": "cosine", "lr": "0.1", "total_steps": 10}, "lr"),
    ({"type": "cosine", "lr": 0.1, "total_steps": 10.0}, "total_steps"),
    ({"type": "cosine", "lr": 0.1, "total_steps": True}, "total_steps"),
    ({"type": "cosine", "lr": 0.1, "total_steps": 2**63}, "total_steps"),
    ({"type": "cosine", "lr": float("nan"), "total_steps": 10}, "lr"),
    ({"type": "cosine", "lr": float("inf"), "total_steps": 10}, "lr"),
    ({"type": "cosine", "lr": 1e400, "total_steps": 10}, "lr"),
    ({"type": "cyclic", "base_lr": 0.1, "max_lr": 0.2, "step_size_up": 1, "step_size_down": 1, "mode": 3,
      "gamma": 1.0}, "mode"),
    ({"type": "warmup", "schedule": 0.1, "steps": 3, "start_lr": 0.0}, "schedule"),
    ({"type": "warmup", "schedule": {"type": "nope"}, "steps": 3, "start_lr": 0.0}, "unknown"),
    ({"type": "sequence", "schedules": {"type": "constant", "lr": 0.1}, "boundaries": []}, "schedules"),
    ({"type": "sequence", "schedules": [{"type": "constant", "lr": 0.1}, 5], "boundaries": [1]}, "type"),
    ({"type": "sequence", "schedules": [], "boundaries": []}, "schedules"),
    ({"type": "piecewise_constant", "boundaries": "12", "values": [0.1]}, "boundaries"),
    ({"type": "piecewise_constant", "boundaries": [1, 2], "values": [0.1, None, 0.2]}, "values"),
    ({"type": "multistep", "lr": 0.1, "milestones": [1, -2], "gamma": 0.1}, "milestones"),
]


@pytest.mark.parametrize("data, words", HOSTILE, ids=[str(i) for i in range(len(HOSTILE))])
def test_from_dict_hostile_input_raises_value_error(data, words):
    with pytest.raises(ValueError, match=words):
        S.from_dict(data)


def test_stepping_past_int64_is_a_clear_error_and_changes_nothing():
    w = np.ones(3)
    opt = gs.SGD([w], lr=0.1)
    opt._step_count = 2**63 - 1  # unreachable by loading (MAX_STEP) or by stepping in practice
    with pytest.raises(ValueError, match="largest step"):
        opt.step([np.ones(3)])
    assert np.array_equal(w, np.ones(3)) and opt.step_count == 2**63 - 1
