"""Plot learning-rate schedules to a PNG.

Each schedule is given as an expression over the gradstep.schedules
factories, e.g. 'warmup(cosine(0.1, total_steps=900), steps=100)', or as the
JSON of Schedule.to_dict(). Expressions are parsed, not evaluated: only
factory calls and literal numbers, strings and lists are accepted.
"""

# (That docstring is also the help of `gradstep plot-schedule`.)
#
# Every figure gradstep draws is drawn here: the schedules, the range test's
# curve (LRFinderResult.plot) and the demo's figures. The bench's chart reads a
# bench record and lives with the table and the comparison that read it too, in
# gradstep.bench.report. All use matplotlib's object-oriented API (a Figure, no
# pyplot): no global backend switch and no GUI, whatever the caller has set up.

from __future__ import annotations

import argparse
import ast
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Protocol, Union

import numpy as np

from gradstep import schedules as _schedules
from gradstep.schedules import Schedule

if TYPE_CHECKING:
    from gradstep.lr_finder import LRFinderResult

ScheduleLike = Union[Schedule, Callable[[int], float]]


def _rates(schedule: ScheduleLike, steps: int) -> np.ndarray:
    if isinstance(schedule, Schedule):
        return np.asarray(schedule(np.arange(steps)), dtype=np.float64)
    if callable(schedule):  # slow path: one Python call per step
        return np.array([float(schedule(k)) for k in range(steps)], dtype=np.float64)
    raise TypeError(f"expected a schedule or a callable of the step, got {type(schedule).__name__}")


def plot_schedules(
    schedules: Union[Mapping[str, ScheduleLike], Sequence[ScheduleLike], ScheduleLike],
    steps: int,
    path: Union[str, Path],
    *,
    log_y: bool = False,
    title: str | None = None,
) -> Path:
    """Write a PNG plotting each schedule's rate over steps 0 .. steps-1; returns the path.

    ``schedules`` is a dict label -> schedule, a list (labelled by repr) or one
    schedule. Python callables of the step are accepted too (slow path).
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if isinstance(schedules, Mapping):
        items = [(str(label), s) for label, s in schedules.items()]
    elif isinstance(schedules, Sequence) and not isinstance(schedules, str):
        items = [(repr(s), s) for s in schedules]
    else:
        items = [(repr(schedules), schedules)]  # type: ignore[list-item]
    if not items:
        raise ValueError("schedules is empty: nothing to plot")
    curves = [(label, _rates(s, int(steps))) for label, s in items]

    # The object-oriented API with an explicit Agg canvas: no pyplot, so no
    # global backend switch and no GUI, whatever the caller has set up.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.arange(int(steps))
    for label, y in curves:
        ax.plot(x, y, label=label if len(label) <= 80 else label[:77] + "...")
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    if log_y:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    out = Path(path)
    fig.savefig(out, format="png")
    return out


# ---- the range test -------------------------------------------------------------

# How each suggestion is marked on the curve.
SUGGESTION_MARKERS = {"steepest": ("C3", "o"), "valley": ("C4", "s"), "minimum": ("C5", "^")}


def plot_range_test(result: LRFinderResult, path: Optional[Union[str, Path]] = None, *, ax: Any = None,
                    title: Optional[str] = None) -> Any:
    """Loss against lr (log axis) with the suggestions marked; saves a PNG to ``path``.

    Draws into ``ax`` when given, else into a new figure (no pyplot, no global
    backend change). Returns the figure. Reads ``result`` only.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100) if ax is None else ax.figure
    if ax is None:
        ax = fig.add_subplot()
    shown = np.isfinite(result.losses)
    ax.plot(result.lrs[shown], result.losses[shown], color="0.7", lw=1, label="loss")
    ax.plot(result.lrs[shown], result.smoothed_losses[shown], color="k", lw=2, label="smoothed")
    lrs, losses = result.usable()
    for method, value in result.suggestions.items():
        if value is None:
            continue
        color, marker = SUGGESTION_MARKERS[method]
        y = float(np.interp(np.log(value), np.log(lrs), losses))
        ax.plot([value], [y], marker=marker, color=color, ls="none", ms=8,
                label=f"{method}: {value:.2g}")
    ax.set_xscale("log" if np.all(result.lrs > 0) else "linear")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    smooth = result.smoothed_losses[np.isfinite(result.smoothed_losses)]
    if len(smooth):  # a diverging tail (and raw spikes) would flatten the curve: cut it
        low = float(min(smooth.min(), result.losses[shown].min()))
        descent = smooth[: int(np.argmin(smooth)) + 1]
        high = float(max(descent.max(), min(smooth.max(), 1.5 * smooth[0])))
        pad = 0.05 * (high - low) or 0.1 * abs(high) or 1.0
        ax.set_ylim(low - pad, high + pad)
    ax.set_title(title or "learning-rate range test")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    if path is not None:
        fig.savefig(path, bbox_inches="tight")
    return fig


# ---- the demo's figures -------------------------------------------------------


class TrainingRun(Protocol):
    """What the demo's figures read of a training run (gradstep.demo.Run)."""

    name: str
    lr_text: str
    train_loss: list[float]  # per epoch, whole training set
    val_loss: list[float]
    step_losses: list[float]  # the minibatch loss of every update


def _figure(ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (6.4, 4.2)) -> tuple[Any, Any]:
    # Figure + Agg canvas, no pyplot: no global backend switch, no GUI.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Fixed margins: a constrained layout costs seconds on these log axes.
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), dpi=80)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=0.7 / width, right=1 - 0.15 / width, bottom=0.55 / height,
                        top=1 - 0.35 / height, wspace=0.3, hspace=0.45)
    return fig, axes


def plot_range_tests(results: Mapping[str, LRFinderResult], path: Union[str, Path]) -> Path:
    """Each range test in its own panel, three to a row, titled by its label; returns the path."""
    ncols = min(3, max(len(results), 1))
    fig, axes = _figure(ncols, -(-len(results) // ncols) or 1, (4.6, 3.4))
    for ax, (label, result) in zip(axes.flat, results.items()):
        plot_range_test(result, ax=ax, title=label)
    fig.savefig(path)
    return Path(path)


def plot_rates(result: LRFinderResult, runs: Sequence[TrainingRun], rates: Sequence[float],
               path: Union[str, Path], *, title: str) -> Path:
    """The range test with each run's constant rate marked, beside those runs' losses."""
    fig, axes = _figure(2, 1, (5.6, 4.0))
    plot_range_test(result, ax=axes[0, 0], title=title)
    for i, (run, lr) in enumerate(zip(runs, rates)):
        axes[0, 0].axvline(lr, color=f"C{i}", ls=":", lw=1.5)
    ax = axes[0, 1]
    spe = len(runs[0].step_losses) / max(len(runs[0].val_loss), 1)
    for i, run in enumerate(runs):
        steps = np.arange(1, len(run.step_losses) + 1) / spe
        ax.plot(steps, run.step_losses, color=f"C{i}", lw=0.7, alpha=0.45)
        ax.plot(np.arange(1, len(run.val_loss) + 1), run.val_loss, color=f"C{i}", lw=2, marker="o", ms=3,
                label=f"{run.name}, lr {run.lr_text} (validation; thin: batches)")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    ax.set_title("training at three constant rates")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path)
    return Path(path)


def plot_loss_curves(runs: Sequence[TrainingRun], path: Union[str, Path], *, title: str) -> Path:
    """Validation (solid) and training (dashed) loss by epoch, one color per run."""
    fig, axes = _figure()
    ax = axes[0, 0]
    for i, run in enumerate(runs):
        epochs = np.arange(1, len(run.val_loss) + 1)
        ax.plot(epochs, run.val_loss, color=f"C{i % 10}", lw=2, label=run.name)
        ax.plot(epochs, run.train_loss, color=f"C{i % 10}", lw=1, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    ax.set_title(title + " (solid: validation, dashed: train)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path)
    return Path(path)


# ---- parsing schedule expressions for the command line ----------------------


def _literal(node: ast.AST) -> Any:
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _schedules.FACTORIES:
            raise ValueError(f"only gradstep.schedules factories may be called, not {ast.unparse(node.func)!r}")
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            raise ValueError("*args and **kwargs are not accepted in a schedule expression")
        args = [_literal(a) for a in node.args]
        kwargs = {k.arg: _literal(k.value) for k in node.keywords if k.arg is not None}
        return _schedules.FACTORIES[node.func.id](*args, **kwargs)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, (ast.USub, ast.UAdd))
        and isinstance(node.operand, ast.Constant)
        and isinstance(node.operand.value, (int, float))
        and not isinstance(node.operand.value, bool)
    ):
        return -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
    raise ValueError(f"not allowed in a schedule expression: {ast.unparse(node)!r}")


def parse_schedule(text: str) -> Schedule:
    """A schedule from 'factory(args...)' (literal arguments only) or from to_dict() JSON."""
    text = text.strip()
    if text.startswith("{"):
        return _schedules.from_dict(json.loads(text))
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise ValueError(f"cannot parse schedule expression {text!r}: {e.msg}") from e
    result = _literal(tree.body)
    if not isinstance(result, Schedule):
        raise ValueError(f"{text!r} is not a schedule expression")
    return result


# ---- the `gradstep plot-schedule` subcommand ---------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "schedules",
        nargs="+",
        metavar="SCHEDULE",
        help="e.g. 'cosine(0.1, total_steps=1000)' or the JSON of Schedule.to_dict()",
    )
    parser.add_argument("--steps", type=int, required=True, help="number of steps to plot")
    parser.add_argument("--out", default="schedules.png", help="PNG file to write (default: %(default)s)")
    parser.add_argument("--log", action="store_true", help="logarithmic rate axis")
    parser.add_argument("--title", default=None)


def run(args: argparse.Namespace) -> int:
    try:
        curves = {text: parse_schedule(text) for text in args.schedules}
    except ValueError as e:
        raise SystemExit(f"gradstep plot-schedule: {e}") from e
    path = plot_schedules(curves, args.steps, args.out, log_y=args.log, title=args.title)
    print(path)
    return 0
