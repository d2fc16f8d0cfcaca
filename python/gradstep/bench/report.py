"""Reporting a record: the table, the comparison with an earlier record, the chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gradstep.bench.candidates import PEERS
from gradstep.bench.record import upgrade


def fmt_time(seconds: float) -> str:
    us = seconds * 1e6
    if us < 10:
        return f"{us:.2f} µs"
    if us < 1000:
        return f"{us:.1f} µs"
    return f"{us / 1000:.2f} ms"


def table(record: dict[str, Any]) -> str:
    """The report: machine line; gradstep's ratios; gradstep.torch's ratios (where it ran);
    every candidate's median time; with several thread counts, the scaling per case."""
    record = upgrade(record)
    m, s, v = record["machine"], record["settings"], record["versions"]
    counts = s["threads"]
    results = record["results"]
    many = len(counts) > 1
    # Half params: a row per precision (spec.PRECISIONS), keyed by it after the case.
    half = any("precision" in r for r in results)
    lines = [
        f"gradstep bench: {m['cpu']}, {m['affinity_cpus']} CPUs usable, ISA {m['isa']}, "
        f"{_threads(counts)}, {s['dtype']}",
        f"versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
        f"medians of {s['rounds']} interleaved rounds; time per step, Python call included",
        "",
    ]

    def key(r: dict[str, Any]) -> list[str]:
        return [r["optimizer"], r["case"], *([r.get("precision", "-")] if half else []),
                *([str(r["threads"])] if many else [])]

    keys = ["optimizer", "case", *(["precision"] if half else []), *(["threads"] if many else [])]
    peers = [p for p in PEERS if any(p in r["speedup"] for r in results)]
    head = [*keys, "B/elem", "gradstep", "GB/s", "roof GB/s", "% roof",
            *[f"vs {p}" for p in peers], "checks cost"]
    rows = []
    for r in results:
        med = r["median_seconds"]
        t = med["gradstep"]
        # skip_nonfinite + max_grad_norm: time with the checks over time without.
        checks = f"{med['gradstep-checked'] / t:.2f}x" if "gradstep-checked" in med else "-"
        rows.append([*key(r), str(r["bytes_per_element"]), fmt_time(t),
                     f"{r['gbps']['gradstep']:.1f}", f"{r['roof_gbps']:.1f}",
                     f"{100 * r['roof_fraction']:.0f}%",
                     *[_ratio(r["speedup"][p]) if p in r["speedup"] else "-" for p in peers],
                     checks])
    lines += _grid(head, rows)
    if half:
        lines += ["", *HALF_LEGEND]

    adapted = [r for r in results if "gradstep.torch" in r["median_seconds"]]
    if adapted:
        lines += ["", "gradstep.torch (the torch.optim adapter): its speedup over torch-fused, flat "
                  "parameters and deepspeed; its cost over gs.X on the same buffers (target <= 1.20x)"]
        ds = any("deepspeed" in r["median_seconds"] for r in adapted)
        flat = any("gradstep.torch-flat" in r["median_seconds"] for r in adapted)
        head = [*keys, "gradstep.torch", "vs torch-fused", "cost over gs.X",
                *(["flat speedup", "flat vs torch-fused"] if flat else []),
                *(["vs deepspeed"] if ds else [])]
        rows = []
        for r in adapted:
            med = r["median_seconds"]
            t = med["gradstep.torch"]
            tf = med.get("gradstep.torch-flat")
            rows.append([*key(r), fmt_time(t), _over(med, "torch-fused", t), _ratio(t / med["gradstep"]),
                         *([_over(med, "gradstep.torch", tf), _over(med, "torch-fused", tf)] if flat else []),
                         *([_over(med, "deepspeed", t)] if ds else [])])
        lines += _grid(head, rows)

    lines += ["", "median time per step"]
    names = [n for n in ("gradstep", *EXTRA, "roof", *PEERS) if any(n in r["median_seconds"] for r in results)]
    rows = [[*key(r), *[fmt_time(r["median_seconds"][n]) if n in r["median_seconds"] else "-" for n in names]]
            for r in results]
    lines += _grid([*keys, *names], rows)
    if many:
        lines += ["", *scaling(record)]
    return "\n".join(lines) + "\n"


# What the precisions of half params' rows are, and which peers share their layout.
HALF_LEGEND = (
    "precision: f32-states = float32 states (gradstep's default for half params); "
    "param-states = states in the param's dtype",
    "  (state_dtype=\"param\", torch.optim's half layout: torch-* are timed beside it); "
    "f32-master = float32 states and master copy",
    "  (master_weights=True); stochastic = f32-states with rounding=\"stochastic\". deepspeed "
    "(DeepSpeedCPUAdam) is timed beside f32-states",
    "  (fp32_optimizer_states=True) and param-states (False); the roof streams each row's own buffers.",
)

# gradstep's own variants, reported beside gradstep, in this order.
EXTRA = ("gradstep-flat", "gradstep-checked", "gradstep.torch", "gradstep.torch-flat")
# The candidates whose scaling with threads is reported.
SCALING = ("gradstep", "gradstep.torch", "torch-fused", "roof")


def scaling(record: dict[str, Any]) -> list[str]:
    """Per case and candidate (SCALING), the time at each thread count and the speedup
    over the run at 1 thread (or at the fewest threads run)."""
    record = upgrade(record)
    counts = record["settings"]["threads"]
    base = counts[0]
    half = any("precision" in r for r in record["results"])
    runs: dict[tuple[str, ...], dict[int, dict[str, float]]] = {}
    for r in record["results"]:
        runs.setdefault((r["optimizer"], r["case"], *([r.get("precision", "-")] if half else [])),
                        {})[r["threads"]] = r["median_seconds"]
    rows = []
    for run_key, at in runs.items():
        for name in SCALING:
            if not any(name in med for med in at.values()):
                continue
            cells = []
            for n in counts:
                t = at.get(n, {}).get(name)
                t0 = at.get(base, {}).get(name)
                if t is None:
                    cells.append("-")
                elif n == base or t0 is None:
                    cells.append(fmt_time(t))
                else:
                    cells.append(f"{fmt_time(t)} ({t0 / t:.2f}x)")
            rows.append([*run_key, name, *cells])
    title = (f"scaling with threads: time per step (speedup over {base} thread"
             f"{'' if base == 1 else 's'})")
    return [title, *_grid(["optimizer", "case", *(["precision"] if half else []), "candidate",
                           *[_threads([n]) for n in counts]], rows)]


def _threads(counts: list[int]) -> str:
    if len(counts) == 1:
        return f"{counts[0]} thread" + ("" if counts[0] == 1 else "s")
    return "threads " + ",".join(str(n) for n in counts)


def _over(med: dict[str, float], name: str, t: Any) -> str:
    """``med[name] / t`` as a ratio, or "-" where either is missing."""
    return _ratio(med[name] / t) if name in med and t else "-"


def _ratio(x: float) -> str:
    return f"{x:.2f}x" if x < 10 else f"{x:.1f}x"


def _grid(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return [line(head), "  ".join("-" * w for w in widths), *[line(r) for r in rows]]


def compare(old: dict[str, Any], new: dict[str, Any]) -> str:
    """gradstep's time and roof fraction, old run vs this one, for the cases (and thread
    counts) both have. Either record may be of an earlier format."""
    old, new = upgrade(old), upgrade(new)
    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return r["optimizer"], r["case"], r.get("precision"), r["threads"]

    half = any("precision" in r for r in new["results"])
    before = {key(r): r for r in old.get("results", [])}
    rows = []
    for r in new["results"]:
        o = before.get(key(r))
        if o is None:
            continue
        t_old, t_new = o["median_seconds"]["gradstep"], r["median_seconds"]["gradstep"]
        rows.append([r["optimizer"], r["case"], *([r.get("precision", "-")] if half else []),
                     str(r["threads"]), fmt_time(t_old), fmt_time(t_new),
                     f"{t_new / t_old:.2f}", f"{100 * o['roof_fraction']:.0f}%",
                     f"{100 * r['roof_fraction']:.0f}%"])
    head = ["optimizer", "case", *(["precision"] if half else []), "threads", "old", "new", "new/old",
            "old % roof", "new % roof"]
    title = f"compared with {old.get('created', '?')} ({old.get('machine', {}).get('cpu', '?')})"
    if not rows:
        return f"{title}: no optimizer, case and thread count in common\n"
    return "\n".join([title, *_grid(head, rows)]) + "\n"


def _short(case: str) -> str:
    """A case label that fits under its bars: 1048576 -> 1M, 200x5000 as it is."""
    if not case.isdigit():
        return case
    n = int(case)
    for unit, size in (("M", 1 << 20), ("K", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return case


def chart(record: dict[str, Any], path: Path) -> None:
    """Time per step by case, one panel per optimizer, the roof as a black dash."""
    record = upgrade(record)
    # A Figure with its own Agg canvas, no pyplot: no global backend switch, no GUI.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    results = record["results"]
    optimizers = list(dict.fromkeys(r["optimizer"] for r in results))
    palette = {"gradstep": "#d62728", "gradstep-flat": "#ff9896", "gradstep.torch": "#ff7f0e",
               "gradstep.torch-flat": "#ffbb78", "numpy": "#7f7f7f", "reference": "#8c564b", "torch-loop": "#1f77b4",
               "torch-foreach": "#9edae5", "torch-fused": "#2ca02c", "deepspeed": "#9467bd"}
    names = [n for n in palette if any(n in r["median_seconds"] for r in results)]
    colors = palette
    cols = min(3, len(optimizers))
    rows = -(-len(optimizers) // cols)
    fig = Figure(figsize=(4.6 * cols, 3.4 * rows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    width = 0.8 / len(names)
    for ax, opt in zip(axes.flat, optimizers):
        mine = [r for r in results if r["optimizer"] == opt]
        for j, name in enumerate(names):
            xs = [i + (j - (len(names) - 1) / 2) * width for i, r in enumerate(mine)
                  if name in r["median_seconds"]]
            ys = [r["median_seconds"][name] * 1e6 for r in mine if name in r["median_seconds"]]
            ax.bar(xs, ys, width, color=colors[name], label=name)
        for i, r in enumerate(mine):
            ax.hlines(r["median_seconds"]["roof"] * 1e6, i - 0.45, i + 0.45, colors="black",
                      linewidth=1.5, label="roof (stream probe)" if i == 0 else None)
        ax.set_yscale("log")
        many = len(record["settings"]["threads"]) > 1
        ax.set_xticks(range(len(mine)), [_short(r["case"]) + (f"\n{r['precision']}" if "precision" in r else "")
                                         + (f"\n{r['threads']}t" if many else "")
                                         for r in mine], fontsize=8)
        per_element = sorted({r["bytes_per_element"] for r in mine})
        ax.set_title(f"{opt} ({'/'.join(map(str, per_element))} B/element)", fontsize=10)
        ax.set_ylabel("µs per step", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", which="major", alpha=0.3)
    for ax in list(axes.flat)[len(optimizers):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    m, s = record["machine"], record["settings"]
    fig.legend(handles, labels, loc="lower right" if len(optimizers) % cols else "upper center",
               fontsize=8, ncol=1 if len(optimizers) % cols else len(labels), frameon=False)
    fig.suptitle(f"optimizer step, {s['dtype']}: {m['cpu']}, {_threads(s['threads'])}, ISA {m['isa']} "
                 "(lower is better)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)

