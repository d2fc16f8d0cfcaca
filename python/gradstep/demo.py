"""Choose a learning rate, then train with it: a small numpy MLP on scikit-learn's
8x8 digits, trained with gradstep.

(a) runs the learning-rate range test for each optimizer; (b) trains with a
too-low, the suggested and a too-high constant rate; (c) compares schedules at
the suggested rate, and the six optimizers at their own suggested rates;
(d) trains the learning-rate-free optimizers (Prodigy, D-Adaptation, Schedule-Free),
with no rate chosen, beside Adam and SGD at their suggested rates;
(e) prints a results table and writes it, with PNG plots, into --out.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

import gradstep as gs
from gradstep import plotting
from gradstep.lr_finder import LRFinderResult
from gradstep.mlp import MLP

OPTIMIZERS: dict[str, Callable[..., gs.Optimizer]] = {
    "SGD": lambda params, lr: gs.SGD(params, lr=lr, momentum=0.9),
    "Adagrad": lambda params, lr: gs.Adagrad(params, lr=lr),
    "Adadelta": lambda params, lr: gs.Adadelta(params, lr=lr),
    "RMSprop": lambda params, lr: gs.RMSprop(params, lr=lr),
    "Adam": lambda params, lr: gs.Adam(params, lr=lr),
    "AdamW": lambda params, lr: gs.AdamW(params, lr=lr),
}
# No rate is chosen for these: their defaults, lr=1.0 multiplying the step size Prodigy
# and D-Adaptation estimate, and Schedule-Free AdamW's package default with no schedule.
LR_FREE: dict[str, Callable[[list[np.ndarray]], gs.Optimizer]] = {
    "Prodigy": lambda params: gs.Prodigy(params, lr=1.0),
    "DAdaptAdam": lambda params: gs.DAdaptAdam(params, lr=1.0),
    "DAdaptSGD": lambda params: gs.DAdaptSGD(params, lr=1.0, momentum=0.9),
    "AdamWScheduleFree": lambda params: gs.AdamWScheduleFree(params, lr=2.5e-3),
}
LABELS = {"SGD": "SGD(momentum=0.9)", "DAdaptSGD": "DAdaptSGD(momentum=0.9)"}
MAIN = "SGD"  # the optimizer of parts (b) and (c)

PNGS = ("lr_range_test.png", "rates.png", "schedules.png", "schedule_runs.png", "optimizers.png", "lr_free.png")
RESULTS = ("results.md", "results.csv")


@dataclass
class Config:
    hidden: int
    batch_size: int
    epochs: int
    range_steps: int = 100
    start_lr: float = 1e-7
    end_lr: float = 10.0


QUICK = Config(hidden=64, batch_size=64, epochs=10)
FULL = Config(hidden=128, batch_size=32, epochs=40)


@dataclass
class Data:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def load_data(seed: int, val_fraction: float = 0.2) -> Data:
    """scikit-learn's digits (shipped inside the package, no download), split by seed."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)  # pixel intensities are 0..16
    order = np.random.default_rng([seed, 0]).permutation(len(y))
    n_val = int(round(val_fraction * len(y)))
    val, train = order[:n_val], order[n_val:]
    return Data(x[train], y[train].astype(np.intp), x[val], y[val].astype(np.intp))


@dataclass
class Run:
    section: str
    name: str
    optimizer: str
    lr_text: str
    train_loss: list[float] = field(default_factory=list)  # per epoch, whole training set
    val_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)  # the rate of every update
    step_losses: list[float] = field(default_factory=list)  # the minibatch loss of every update
    seconds: float = 0.0
    note: str = ""

    @property
    def final(self) -> tuple[float, float, float, float]:
        def last(values: list[float]) -> float:
            return values[-1] if values and math.isfinite(values[-1]) else math.inf

        return (last(self.train_loss), last(self.train_acc), last(self.val_loss), last(self.val_acc))


class Trainer:
    """Builds fresh models and optimizers; every run sees the same init and batch order."""

    def __init__(self, data: Data, config: Config, seed: int) -> None:
        self.data, self.config, self.seed = data, config, seed
        self.steps_per_epoch = len(data.y_train) // config.batch_size
        self.total_steps = self.steps_per_epoch * config.epochs
        self.warnings: list[str] = []

    def model(self) -> MLP:
        return MLP([self.data.x_train.shape[1], self.config.hidden, 10], np.random.default_rng([self.seed, 1]))

    def batches(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng([self.seed, 2])
        n, b = len(self.data.y_train), self.config.batch_size
        while True:
            order = rng.permutation(n)
            for i in range(0, n - b + 1, b):
                yield order[i : i + b]

    def optimizer(self, name: str, params: list[np.ndarray], lr: Any) -> gs.Optimizer:
        # The demo builds optimizers with bad rates on purpose: collect gradstep's
        # range warnings and report them rather than let them interrupt.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", gs.LearningRateWarning)
            opt = LR_FREE[name](params) if name in LR_FREE else OPTIMIZERS[name](params, lr)
        self.warnings += [str(w.message) for w in caught if issubclass(w.category, gs.LearningRateWarning)]
        return opt

    def range_test(self, name: str) -> LRFinderResult:
        model = self.model()
        opt = self.optimizer(name, model.params, 1.0 if name == "Adadelta" else 1e-3)
        batches = self.batches()
        data = self.data

        def step(lr: float) -> float:
            idx = next(batches)
            loss = model.loss_and_grads(data.x_train[idx], data.y_train[idx])
            opt.step(model.grads)
            return loss

        with np.errstate(all="ignore"):  # the test drives the model into overflow on purpose
            return gs.lr_find(
                opt, step, start_lr=self.config.start_lr, end_lr=self.config.end_lr,
                num_steps=self.config.range_steps, progress=False,
            )

    def train(self, run: Run, lr: Any, bar: Any, plateau: Optional[dict[str, Any]] = None) -> Run:
        model = self.model()
        opt = self.optimizer(run.optimizer, model.params, lr)
        reducer = gs.ReduceLROnPlateau(opt, **plateau) if plateau is not None else None
        data, batches = self.data, self.batches()
        # Schedule-Free steps at y and is evaluated at x: train() before the steps, eval() after.
        mode = type(opt).__gradstep_spec__.mode
        start = time.perf_counter()
        with np.errstate(all="ignore"):  # a diverging run overflows; it is caught below
            for epoch in range(self.config.epochs):
                if mode is not None:
                    getattr(opt, mode.on)()
                for _ in range(self.steps_per_epoch):
                    idx = next(batches)
                    run.lrs.append(opt.lr)
                    loss = model.loss_and_grads(data.x_train[idx], data.y_train[idx])
                    run.step_losses.append(loss)
                    if not math.isfinite(loss):
                        break
                    opt.step(model.grads)
                if mode is not None:
                    getattr(opt, mode.off)()
                for x, y, losses, accs in (
                    (data.x_train, data.y_train, run.train_loss, run.train_acc),
                    (data.x_val, data.y_val, run.val_loss, run.val_acc),
                ):
                    loss, acc = model.evaluate(x, y)
                    losses.append(loss if math.isfinite(loss) else math.inf)
                    accs.append(acc)
                if bar is not None:
                    bar.update(1)
                if not math.isfinite(run.val_loss[-1]):
                    run.note = f"diverged (non-finite loss in epoch {epoch + 1})"
                    if bar is not None:
                        bar.update(self.config.epochs - epoch - 1)
                    break
                if reducer is not None:
                    reducer.step(run.val_loss[-1])
        run.seconds = time.perf_counter() - start
        finite = [loss for loss in run.step_losses if math.isfinite(loss)]
        first, peak = finite[0], max(finite)
        if not run.note and peak > 2 * first:
            run.note = f"diverged: batch loss rose from {first:.3g} to {peak:.3g}"
        if run.final[0] >= 0.9 * math.log(10.0):  # a uniform guess over 10 classes scores ln 10
            run.note = (run.note + "; " if run.note else "") + "ends no better than a uniform guess"
        if reducer is not None:
            run.note = (run.note + "; " if run.note else "") + f"final lr {opt.lr:.3g}"
        return run


# -- output --------------------------------------------------------------------

COLUMNS = ("section", "run", "optimizer", "lr", "train loss", "train acc", "val loss", "val acc", "time s", "note")


def _row(run: Run) -> list[str]:
    train_loss, train_acc, val_loss, val_acc = run.final
    return [
        run.section, run.name, LABELS.get(run.optimizer, run.optimizer), run.lr_text,
        f"{train_loss:.4f}", f"{train_acc:.3f}", f"{val_loss:.4f}", f"{val_acc:.3f}",
        f"{run.seconds:.2f}", run.note,
    ]


def format_table(runs: list[Run]) -> str:
    rows = [list(COLUMNS)] + [_row(r) for r in runs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def write_results(runs: list[Run], out: Path, header: str) -> None:
    (out / "results.md").write_text(f"{header}\n\n{format_table(runs)}\n")
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows(_row(r) for r in runs)


def plot_all(out: Path, finder: dict[str, LRFinderResult], rate_runs: list[Run], rates: list[float],
             schedule_runs: list[Run], optimizer_runs: list[Run], lr_free_runs: list[Run], total_steps: int) -> None:
    main = LABELS.get(MAIN, MAIN)
    plotting.plot_range_tests({LABELS.get(name, name): result for name, result in finder.items()},
                              out / "lr_range_test.png")
    plotting.plot_rates(finder[MAIN], rate_runs, rates, out / "rates.png", title=f"range test, {main}")
    schedules = {run.name: (lambda k, lrs=run.lrs: lrs[k]) for run in schedule_runs if len(run.lrs) == total_steps}
    plotting.plot_schedules(schedules, total_steps, out / "schedules.png", log_y=True,
                            title=f"learning-rate schedules ({main})")
    plotting.plot_loss_curves(schedule_runs, out / "schedule_runs.png", title=f"schedules, {main}")
    plotting.plot_loss_curves(optimizer_runs, out / "optimizers.png", title="optimizers at their suggested rates")
    plotting.plot_loss_curves(lr_free_runs, out / "lr_free.png",
                              title="no rate chosen vs range-tested rates")


# -- the command ---------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="a smaller model and fewer epochs: seconds")
    parser.add_argument("--out", type=Path, default=Path("gradstep-demo"),
                        help="directory for the PNGs and the results table (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the init and the batches")
    parser.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _bar(total: int, desc: str, quiet: bool) -> Any:
    if quiet or not sys.stderr.isatty():
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="epoch", leave=False)


def run(args: argparse.Namespace) -> int:
    try:
        import matplotlib  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as exc:
        print(f"gradstep demo needs the demo extras ({exc.name} is missing): "
              'pip install "gradstep[demo]"', file=sys.stderr)
        return 2
    config = QUICK if args.quick else FULL
    if args.epochs is not None:
        if args.epochs < 1:
            raise SystemExit("gradstep demo: --epochs must be >= 1")
        config = Config(**{**config.__dict__, "epochs": args.epochs})
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(args.seed)
    trainer = Trainer(data, config, args.seed)
    main = LABELS.get(MAIN, MAIN)
    header = (
        f"gradstep demo: MLP 64-{config.hidden}-10 (ReLU) on scikit-learn's digits, "
        f"{len(data.y_train)} train / {len(data.y_val)} validation images, batch {config.batch_size}, "
        f"{config.epochs} epochs, seed {args.seed}{', quick' if args.quick else ''}; ISA {gs.isa()}"
    )
    print(header)

    # (a) range tests
    print(f"\n(a) learning-rate range test: {config.range_steps} steps, lr {config.start_lr:g} to "
          f"{config.end_lr:g}, smoothed loss; suggestions by three readings of the curve")
    finder = {name: trainer.range_test(name) for name in OPTIMIZERS}
    print(f"  {'optimizer':<18} {'steepest':>9} {'valley':>9} {'minimum':>9}   {'rule of thumb':<14} stopped")
    for name, result in finder.items():
        s = result.suggestions
        rng = gs.recommended_range("momentum" if name == "SGD" else name)
        cells = " ".join(f"{s[m]:9.3g}" if s[m] is not None else f"{'-':>9}" for m in s)
        print(f"  {LABELS.get(name, name):<18} {cells}   {rng.low:g}-{rng.high:g}".ljust(72)
              + f" {result.stop_reason}")
    suggested = {name: result.suggested_lr for name, result in finder.items()}
    missing = [name for name, lr in suggested.items() if lr is None]
    if missing:
        for name in missing:
            print(f"  no suggestion for {name}: {finder[name].notes}", file=sys.stderr)
        return 1
    lr = float(suggested[MAIN])  # type: ignore[arg-type]
    print(f"  suggestion for {main}: {lr:.3g} (valley)")

    # (b) too low, suggested, too high
    rates = [lr / 100, lr, 30 * lr]
    print(f"\n(b) {main} at constant rates: too low (suggestion/100) {rates[0]:.3g}, "
          f"suggested {lr:.3g}, too high (30x the suggestion) {rates[2]:.3g}")
    bar = _bar(3 * config.epochs, "(b) rates", args.quiet)
    rate_runs = [
        trainer.train(Run("rates", label, MAIN, f"{rate:.3g}"), rate, bar)
        for label, rate in zip(("too low", "suggested", "too high"), rates)
    ]
    if bar is not None:
        bar.close()

    # (c) schedules at the suggested rate, then the six optimizers
    T, spe = trainer.total_steps, trainer.steps_per_epoch
    peak = 2 * lr
    third = -(-T // 3)  # two drops within the run
    patience = max(1, config.epochs // 10)
    S = gs.schedules
    schedule_specs: list[tuple[str, Any, str, Optional[dict[str, Any]]]] = [
        ("constant", S.constant(lr), f"{lr:.3g}", None),
        ("step decay", S.step(lr, step_size=third, gamma=0.1), f"{lr:.3g}, x0.1 every {third} steps", None),
        ("exponential", S.exponential(lr, gamma=0.01 ** (1 / T)), f"{lr:.3g} to {lr / 100:.3g}", None),
        ("1/t", S.inverse_time(lr, decay_rate=1.0, decay_steps=spe), f"{lr:.3g}/(1+epoch)", None),
        ("warm-up + cosine", S.warmup(S.cosine(lr, T - T // 10), steps=T // 10),
         f"0 to {lr:.3g} in {T // 10} steps, cosine to 0", None),
        ("cyclic", S.cyclic(lr / 4, peak, step_size_up=max(T // 6, 1)), f"{lr / 4:.3g} to {peak:.3g}, 3 cycles", None),
        ("one-cycle", S.one_cycle(peak, T), f"peak {peak:.3g}", None),
        ("plateau", lr, f"{lr:.3g}, x0.1 after {patience} epochs without progress",
         dict(factor=0.1, patience=patience)),
    ]
    print(f"\n(c) schedules for {main} at the suggested rate {lr:.3g} ({T} updates)")
    bar = _bar(len(schedule_specs) * config.epochs, "(c) schedules", args.quiet)
    schedule_runs = [
        trainer.train(Run("schedules", label, MAIN, text), sched, bar, plateau)
        for label, sched, text, plateau in schedule_specs
    ]
    if bar is not None:
        bar.close()
    print("    the six optimizers, each at its own suggested rate")
    bar = _bar(len(OPTIMIZERS) * config.epochs, "(c) optimizers", args.quiet)
    optimizer_runs = [
        trainer.train(Run("optimizers", LABELS.get(name, name), name, f"{suggested[name]:.3g}"),
                      suggested[name], bar)
        for name in OPTIMIZERS
    ]
    if bar is not None:
        bar.close()

    # (d) the learning-rate-free optimizers, beside the range-tested Adam and SGD
    print("\n(d) no rate chosen: Prodigy, DAdaptAdam, DAdaptSGD (lr=1.0, a multiplier of the step size "
          "they estimate) and AdamWScheduleFree (its default rate, no schedule), beside Adam and SGD at "
          "their suggested rates")
    bar = _bar(len(LR_FREE) * config.epochs, "(d) no rate chosen", args.quiet)
    lr_free_runs = [
        trainer.train(Run("no rate chosen", LABELS.get(name, name), name,
                          f"{getattr(gs, name).__gradstep_spec__.field('lr').default:g} (the default)"), None, bar)
        for name in LR_FREE
    ] + [run for run in optimizer_runs if run.optimizer in ("Adam", MAIN)]
    if bar is not None:
        bar.close()

    # (e) table and plots
    runs = rate_runs + schedule_runs + optimizer_runs + lr_free_runs[:len(LR_FREE)]
    print("\n(e) results (final epoch; loss is cross-entropy, lower is better)\n")
    print(format_table(runs))
    for message in dict.fromkeys(trainer.warnings):
        print(f"note: gradstep warned: {message}")
    write_results(runs, out, header)
    plot_all(out, finder, rate_runs, rates, schedule_runs, optimizer_runs, lr_free_runs, T)
    print(f"\nwrote {', '.join(RESULTS + PNGS)} to {out}/")
    return 0
