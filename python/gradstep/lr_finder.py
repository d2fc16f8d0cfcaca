"""The learning-rate range test (Leslie N. Smith, "Cyclical Learning Rates for
Training Neural Networks", WACV 2017).

Train for a short while with a rate that grows from tiny to huge, record the
loss at every update, and read a good rate off the curve: where the loss falls
fastest, in the middle of its longest decline, or a tenth of where it bottoms
out. ``lr_find`` runs the test and puts the parameters and the optimizer back
exactly as they were, so training afterwards is the same as without it.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from gradstep.optim import Optimizer

# Fewer usable points than this and a curve says nothing about slopes or runs.
MIN_POINTS = 5
NEVER_DECREASED = "the loss never decreased: the range holds no good rate"

# A suggested rate, or None and why there is none.
Suggestion = tuple[Optional[float], Optional[str]]


# -- the suggestion rules: pure functions of a curve --------------------------
#
# Each reads a curve as LRFinderResult.usable() gives it (finite losses,
# positive rates, the noisy ends skipped) and returns (rate, None) or
# (None, why not). None of them changes its arguments.


def _descent(lrs: np.ndarray, losses: np.ndarray) -> tuple[int, Optional[str]]:
    """The index of the lowest loss, or -1 and why the curve holds no suggestion."""
    if len(lrs) != len(losses):
        raise ValueError(f"lrs and losses differ in length: {len(lrs)}, {len(losses)}")
    if len(lrs) < MIN_POINTS:
        return -1, f"only {len(lrs)} usable points (need {MIN_POINTS})"
    lowest = int(np.argmin(losses))
    if lowest == 0:
        return -1, NEVER_DECREASED
    return lowest, None


def suggest_minimum(lrs: np.ndarray, losses: np.ndarray) -> Suggestion:
    """A tenth of the rate at the lowest loss."""
    lrs, losses = np.asarray(lrs, dtype=np.float64), np.asarray(losses, dtype=np.float64)
    lowest, note = _descent(lrs, losses)
    if note is not None:
        return None, note
    return float(lrs[lowest] / 10.0), None


def suggest_steepest(lrs: np.ndarray, losses: np.ndarray) -> Suggestion:
    """Where the loss falls fastest against log(lr), on the way down to its lowest point."""
    lrs, losses = np.asarray(lrs, dtype=np.float64), np.asarray(losses, dtype=np.float64)
    lowest, note = _descent(lrs, losses)
    if note is not None:
        return None, note
    # Only the way down to the lowest point counts: past it the loss has
    # blown up, and a fall back from a spike is not a good rate.
    log_lrs = np.log(lrs)
    if np.all(np.diff(log_lrs) > 0):
        slopes = np.gradient(losses, log_lrs)[: lowest + 1]
    else:  # a hand-made curve with repeated rates: fall back to per-point slopes
        slopes = np.gradient(losses)[: lowest + 1]
    i = int(np.argmin(slopes))
    if not slopes[i] < 0:
        return None, NEVER_DECREASED
    return float(lrs[i]), None


def suggest_valley(lrs: np.ndarray, losses: np.ndarray) -> Suggestion:
    """Along the longest decreasing run down to the lowest loss, the rate at which the
    loss has made half of the run's fall."""
    lrs, losses = np.asarray(lrs, dtype=np.float64), np.asarray(losses, dtype=np.float64)
    lowest, note = _descent(lrs, losses)
    if note is not None:
        return None, note
    first, last = _longest_decreasing_run(losses[: lowest + 1])
    # Where the loss has made half its fall along the run. (fastai takes the run's
    # middle in index, which a long, slowly sinking start drags decades too low.)
    half = 0.5 * (losses[first] + losses[last])
    i = first + int(np.argmax(losses[first : last + 1] <= half))
    return float(lrs[i]), None


SUGGESTERS: dict[str, Callable[[np.ndarray, np.ndarray], Suggestion]] = {
    "steepest": suggest_steepest,
    "valley": suggest_valley,
    "minimum": suggest_minimum,
}
METHODS = tuple(SUGGESTERS)


@dataclass
class LRFinderResult:
    """What the range test saw, and the rates it suggests.

    ``lrs[i]`` is the rate update ``i`` used and ``losses[i]`` the loss the step
    function returned for it; ``smoothed_losses`` is their bias-corrected
    exponential moving average. ``stop_reason`` says why the test ended.

    Reading a result changes nothing: suggestions are computed from the curve
    each time (``suggest``), and ``notes`` is a fresh dict of the run's own
    notes (``run_notes``) and of why each reading that has no suggestion has
    none. (Earlier, ``suggestion()`` wrote those into a ``notes`` field, so
    ``str()`` and ``plot()`` changed the result and ``notes`` depended on what
    had been called; that field is now ``run_notes``.)
    """

    lrs: np.ndarray
    losses: np.ndarray
    smoothed_losses: np.ndarray
    stop_reason: str = "completed"
    skip_start: int = 10
    skip_end: int = 5
    run_notes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lrs = np.asarray(self.lrs, dtype=np.float64)
        self.losses = np.asarray(self.losses, dtype=np.float64)
        self.smoothed_losses = np.asarray(self.smoothed_losses, dtype=np.float64)
        if not (self.lrs.ndim == self.losses.ndim == self.smoothed_losses.ndim == 1):
            raise ValueError("lrs, losses and smoothed_losses must be 1-D")
        if not (len(self.lrs) == len(self.losses) == len(self.smoothed_losses)):
            raise ValueError(
                f"lrs, losses and smoothed_losses differ in length: {len(self.lrs)}, "
                f"{len(self.losses)}, {len(self.smoothed_losses)}"
            )
        if self.skip_start < 0 or self.skip_end < 0:
            raise ValueError("skip_start and skip_end must be >= 0")

    # -- the part of the curve suggestions are read from -----------------------
    def usable(self) -> tuple[np.ndarray, np.ndarray]:
        """(lrs, smoothed losses) cut at the first non-finite value, ends skipped.

        The skips shrink on short curves so that MIN_POINTS stay when possible.
        """
        finite = np.isfinite(self.losses) & np.isfinite(self.smoothed_losses)
        finite &= np.isfinite(self.lrs) & (self.lrs > 0)
        n = len(self.lrs) if finite.all() else int(np.argmin(finite))
        start, end = self.skip_start, self.skip_end
        if n - start - end < MIN_POINTS and start + end > 0:
            spare = max(n - MIN_POINTS, 0)
            start = min(start, spare * start // (start + end))
            end = min(end, spare - start)
        return self.lrs[start : n - end], self.smoothed_losses[start : n - end]

    def suggest(self, method: str = "valley") -> Suggestion:
        """(rate, None), or (None, why the curve cannot give one); see ``suggestion``."""
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        lrs, losses = self.usable()
        if len(lrs) < MIN_POINTS:  # the run was too short: say how it ended
            return None, (
                f"only {len(lrs)} usable points (need {MIN_POINTS}) before the loss "
                f"stopped being finite or the test ended ({self.stop_reason}); "
                "lower start_lr or use more steps"
            )
        return SUGGESTERS[method](lrs, losses)

    def suggestion(self, method: str = "valley") -> Optional[float]:
        """A suggested rate, or None when the curve cannot give one (see ``notes``).

        All read the smoothed loss, cut at the first non-finite value and with
        ``skip_start``/``skip_end`` points dropped at the ends:

        - "steepest": where the loss falls fastest against log(lr), on the way
          down to its lowest point (the range test's classic reading);
        - "valley": along the longest decreasing run of the curve (its longest
          decreasing subsequence, as fastai's "valley"), the rate at which the
          loss has made half of the run's fall;
        - "minimum": a tenth of the rate at the lowest loss.

        The rules are the pure functions ``suggest_steepest``, ``suggest_valley``
        and ``suggest_minimum`` of this module.
        """
        return self.suggest(method)[0]

    @property
    def notes(self) -> dict[str, str]:
        """The run's notes, then, by method, why a reading gives no suggestion.

        A new dict at every access, computed from the curve: writing to it
        changes nothing (set ``run_notes`` for notes of your own).
        """
        notes = dict(self.run_notes)
        for method in METHODS:
            note = self.suggest(method)[1]
            if note is not None:
                notes[method] = note
        return notes

    @property
    def suggestions(self) -> dict[str, Optional[float]]:
        return {method: self.suggestion(method) for method in METHODS}

    @property
    def suggested_lr(self) -> Optional[float]:
        """The "valley" suggestion: the steadiest of the three across problems and smoothing."""
        return self.suggestion("valley")

    @property
    def best_lr(self) -> Optional[float]:
        """The rate at the lowest smoothed loss (where the curve bottoms out)."""
        lrs, losses = self.usable()
        return float(lrs[int(np.argmin(losses))]) if len(lrs) else None

    def __str__(self) -> str:
        parts = []
        for method, value in self.suggestions.items():
            parts.append(f"{method}={value:.3g}" if value is not None else f"{method}=None")
        span = f"lr {self.lrs[0]:.3g} to {self.lrs[-1]:.3g}, " if len(self.lrs) else ""
        text = (
            f"range test: {len(self.lrs)} steps, {span}{self.stop_reason}; "
            "suggestions: " + ", ".join(parts)
        )
        notes = "; ".join(f"{k}: {v}" for k, v in self.notes.items())
        return text + (f" [{notes}]" if notes else "")

    def plot(self, path: Optional[str] = None, *, ax: Any = None, title: Optional[str] = None) -> Any:
        """Loss against lr (log axis) with the suggestions marked; saves a PNG to ``path``.

        Draws into ``ax`` when given, else into a new figure (no pyplot, no global
        backend change). Returns the figure. (``gradstep.plotting.plot_range_test``.)
        """
        from gradstep.plotting import plot_range_test

        return plot_range_test(self, path, ax=ax, title=title)


def _longest_decreasing_run(losses: np.ndarray) -> tuple[int, int]:
    """First and last index of the longest stretch where the loss keeps decreasing.

    A stretch may contain small rises as long as it ends lower than any point
    before it in the stretch: it is the longest strictly decreasing subsequence
    (as fastai's valley), reported by its first and last element. O(n log n).
    """
    n = len(losses)
    # Patience sorting on the negated sequence: tails[k] indexes the smallest-ending
    # (here: largest last value) decreasing subsequence of length k + 1.
    tails: list[int] = []
    parent = [-1] * n
    neg = -np.asarray(losses, dtype=np.float64)
    for i in range(n):
        lo, hi = 0, len(tails)
        while lo < hi:  # first k with neg[tails[k]] >= neg[i]
            mid = (lo + hi) // 2
            if neg[tails[mid]] < neg[i]:
                lo = mid + 1
            else:
                hi = mid
        parent[i] = tails[lo - 1] if lo > 0 else -1
        if lo == len(tails):
            tails.append(i)
        else:
            tails[lo] = i
    last = tails[-1]
    first = last
    while parent[first] != -1:
        first = parent[first]
    return first, last


def _progress(total: int, enabled: Optional[bool]) -> Any:
    """A tqdm bar when asked (or, by default, on a terminal for long runs); else None."""
    if enabled is False or (enabled is None and (total < 50 or not sys.stderr.isatty())):
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is an optional extra: no bar rather than no test
        return None
    return tqdm(total=total, desc="lr range test", leave=False)


def lr_find(
    optimizer: Optimizer,
    step_fn: Callable[[float], float],
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    mode: str = "exp",
    smooth: float = 0.95,
    diverge_factor: float = 4.0,
    skip_start: int = 10,
    skip_end: int = 5,
    restore: bool = True,
    progress: Optional[bool] = None,
) -> LRFinderResult:
    """Run the learning-rate range test and put everything back afterwards.

    For update ``i`` the rate is set to ``lrs[i]`` (growing exponentially, or
    linearly with ``mode="linear"``, from ``start_lr`` to ``end_lr`` over
    ``num_steps`` updates); ``step_fn(lr)`` must run one training step with
    ``optimizer`` (forward, backward, ``optimizer.step(grads)``) and return the
    loss. The losses are smoothed by an exponential moving average with weight
    ``smooth`` on the past (bias-corrected; 0.95 as torch-lr-finder, fastai uses
    0.98). The test stops early once the smoothed loss exceeds ``diverge_factor``
    times the best so far, or at the first non-finite loss.

    With ``restore=True`` (the default) the parameters (values copied back into
    the same arrays), the optimizer's state buffers, step count and learning rate
    are restored exactly, even if ``step_fn`` raises. The rate and any
    ReduceLROnPlateau scaling are always restored. Anything else ``step_fn``
    changes (a data iterator, a random generator) is the caller's to reset.

    ``progress``: None shows a tqdm bar on a terminal for runs of 50+ steps,
    False never, True always.
    """
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a gradstep optimizer, got {type(optimizer).__name__}")
    if not callable(step_fn):
        raise TypeError("step_fn must be callable: step_fn(lr) -> loss")
    lrs = lr_sweep(start_lr, end_lr, num_steps, mode)
    if not 0.0 <= smooth < 1.0:
        raise ValueError(f"smooth must be in [0, 1), got {smooth!r}")
    if not diverge_factor > 1.0:
        raise ValueError(f"diverge_factor must be > 1, got {diverge_factor!r}")

    saved_params = [p.copy() for p in optimizer.params] if restore else []
    saved_state = optimizer.state_dict() if restore else None
    # The rate is set directly: a ReduceLROnPlateau's scaling must not shrink it.
    saved_lr = optimizer.lr_settings()
    optimizer.set_plateau(1.0, 0.0)

    losses: list[float] = []
    smoothed: list[float] = []
    stop_reason = "completed"
    average = 0.0
    best = math.inf
    bar = _progress(num_steps, progress)
    try:
        for i, lr in enumerate(lrs):
            optimizer.lr = float(lr)
            loss = float(step_fn(float(lr)))
            losses.append(loss)
            if not math.isfinite(loss):
                smoothed.append(math.nan)
                stop_reason = f"non-finite loss at lr={lr:.3g}"
                break
            average = smooth * average + (1.0 - smooth) * loss
            value = average / (1.0 - smooth ** (i + 1))  # bias correction, as Adam's
            smoothed.append(value)
            best = min(best, value)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(lr=f"{lr:.2e}", loss=f"{value:.4g}", refresh=False)
            if value > diverge_factor * best:
                stop_reason = f"diverged at lr={lr:.3g} (smoothed loss > {diverge_factor:g}x best)"
                break
    finally:
        if bar is not None:
            bar.close()
        if restore:
            for param, saved in zip(optimizer.params, saved_params):
                np.copyto(param, saved)
            assert saved_state is not None
            optimizer.load_state_dict(saved_state)
        optimizer.restore_lr_settings(saved_lr)  # the very object (a schedule comes back from its dict as a copy)

    n = len(losses)
    return LRFinderResult(
        lrs=lrs[:n].copy(),
        losses=np.array(losses, dtype=np.float64),
        smoothed_losses=np.array(smoothed, dtype=np.float64),
        stop_reason=stop_reason,
        skip_start=skip_start,
        skip_end=skip_end,
    )


def lr_sweep(start_lr: float, end_lr: float, num_steps: int, mode: str = "exp") -> np.ndarray:
    """The rates the range test uses, one per update."""
    if mode not in ("exp", "linear"):
        raise ValueError(f"mode must be 'exp' or 'linear', got {mode!r}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 2:
        raise ValueError(f"num_steps must be an integer >= 2, got {num_steps!r}")
    start, end = float(start_lr), float(end_lr)
    if not (math.isfinite(start) and math.isfinite(end)) or not 0.0 < start < end:
        raise ValueError(f"need 0 < start_lr < end_lr, both finite; got {start_lr!r}, {end_lr!r}")
    if mode == "exp":
        return start * (end / start) ** np.linspace(0.0, 1.0, int(num_steps))
    return np.linspace(start, end, int(num_steps))
