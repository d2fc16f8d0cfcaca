"""`gradstep demo --quick`: exits 0, writes every PNG and the results table, and
shows what it claims (the suggested rate beats a too-low and a too-high one)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gradstep.demo import LR_FREE, OPTIMIZERS, PNGS, RESULTS
from gradstep.mlp import MLP


def gs_default_lr(name: str) -> float:
    import inspect

    import gradstep as gs

    return float(inspect.signature(getattr(gs, name)).parameters["lr"].default)


def _demo(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-m", "gradstep.cli", "demo", "--quick", "--out", str(out), *extra],
        capture_output=True, text=True, timeout=300,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("demo")
    return _demo(out, "--seed", "3"), out


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_exits_0_and_writes_every_png_and_the_table(demo: tuple) -> None:
    proc, out = demo
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no warnings, and no progress bars off a terminal
    for name in PNGS:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        assert len(data) > 10_000, name  # something was drawn
    for name in RESULTS:
        assert (out / name).stat().st_size > 0
    table = (out / "results.md").read_text()
    assert "| suggested" in table and "| one-cycle" in table
    assert "suggestion for SGD(momentum=0.9)" in proc.stdout
    assert "| val loss" in proc.stdout


def test_table_has_every_run(demo: tuple) -> None:
    rows = _rows(demo[1])
    sections = [(r["section"], r["run"]) for r in rows]
    assert [run for section, run in sections if section == "rates"] == ["too low", "suggested", "too high"]
    assert [run for section, run in sections if section == "schedules"] == [
        "constant", "step decay", "exponential", "1/t", "warm-up + cosine", "cyclic", "one-cycle", "plateau",
    ]
    assert len([1 for section, _ in sections if section == "optimizers"]) == len(OPTIMIZERS) == 6
    assert [run for section, run in sections if section == "no rate chosen"] == [
        "Prodigy", "DAdaptAdam", "DAdaptSGD(momentum=0.9)", "AdamWScheduleFree"] == [
        {"DAdaptSGD": "DAdaptSGD(momentum=0.9)"}.get(n, n) for n in LR_FREE]
    for row in rows:
        float(row["val loss"]), float(row["time s"])
    for name, make in LR_FREE.items():  # "no rate chosen": each at its class's default rate
        assert make([np.zeros(3)]).lr == gs_default_lr(name)


def test_suggested_rate_beats_too_low_and_too_high(demo: tuple) -> None:
    rates = {r["run"]: r for r in _rows(demo[1]) if r["section"] == "rates"}
    low, good, high = (float(rates[k]["val loss"]) for k in ("too low", "suggested", "too high"))
    assert good < low and good < high
    assert float(rates["suggested"]["val acc"]) > 0.9
    assert "diverged" in rates["too high"]["note"]
    # The rates are what the demo says: suggestion/100 and 30x.
    lr = float(rates["suggested"]["lr"])
    assert float(rates["too low"]["lr"]) == pytest.approx(lr / 100, rel=0.01)
    assert float(rates["too high"]["lr"]) == pytest.approx(lr * 30, rel=0.01)


def test_every_optimizer_learns_at_its_suggested_rate(demo: tuple) -> None:
    # ... and the learning-rate-free ones with no rate chosen (lr=1.0, Schedule-Free's default).
    for row in _rows(demo[1]):
        if row["section"] in ("optimizers", "schedules", "no rate chosen"):
            assert float(row["val acc"]) > 0.9, row  # chance is 0.1


def test_same_seed_same_results(demo: tuple, tmp_path: Path) -> None:
    proc = _demo(tmp_path, "--seed", "3", "--quiet")
    assert proc.returncode == 0, proc.stderr

    def numbers(out: Path) -> list[list[str]]:
        return [[v for k, v in row.items() if k != "time s"] for row in _rows(out)]

    assert numbers(tmp_path) == numbers(demo[1])


def test_mlp_gradients_match_finite_differences() -> None:
    rng = np.random.default_rng(0)
    model = MLP([5, 7, 4], rng, np.float64)
    x, y = rng.standard_normal((6, 5)), np.array([0, 3, 1, 2, 3, 0])
    model.loss_and_grads(x, y)
    analytic = [g.copy() for g in model.grads]
    h = 1e-6
    for param, grad in zip(model.params, analytic):
        for idx in np.ndindex(param.shape):
            saved = param[idx]
            param[idx] = saved + h
            up = model.evaluate(x, y)[0]
            param[idx] = saved - h
            down = model.evaluate(x, y)[0]
            param[idx] = saved
            assert (up - down) / (2 * h) == pytest.approx(grad[idx], abs=1e-7)


def test_readme_setup_commands_and_example() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert '    pip install ".[demo]" && gradstep demo\n' in readme
    assert '    pip install ".[test]" torch==2.13.0 && python -m pytest\n' in readme
    assert "![" in readme and (Path(__file__).parents[1] / "docs" / "demo.png").is_file()
    example = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert len([line for line in example.splitlines() if line.strip()]) <= 12
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    losses, x, y, w, b = (namespace[k] for k in ("losses", "x", "y", "w", "b"))
    assert losses[-1] < 0.2 * losses[0]
    assert np.mean((x @ w + b > 0) == (y > 0)) > 0.95


def test_readme_torch_example() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    example = readme.split("```python\n")[2].split("```", 1)[0]
    assert "gradstep.torch" in example
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    model, x, y, loss = (namespace[k] for k in ("model", "x", "y", "loss"))
    import torch

    start = torch.nn.functional.mse_loss(torch.zeros_like(y), y)
    assert loss.detach().item() < 0.05 * start.item()
    assert all(p.grad is not None for p in model.parameters())
