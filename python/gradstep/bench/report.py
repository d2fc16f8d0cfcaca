"""Reporting a record: the table, the comparison with an earlier record, the chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gradstep.bench.candidates import PEERS


def fmt_time(seconds: float) -> str:
    us = seconds * 1e6
    if us < 10:
        return f"{us:.2f} µs"
    if us < 1000:
        return f"{us:.1f} µs"
    return f"{us / 1000:.2f} ms"


def table(record: dict[str, Any]) -> str:
    """The report: machine line, ratios table, then every candidate's median time."""
    m, s, v = record["machine"], record["settings"], record["versions"]
    lines = [
        f"gradstep bench: {m['cpu']}, {m['affinity_cpus']} CPUs usable, ISA {m['isa']}, "
        f"{s['threads']} threads, {s['dtype']}",
        f"versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
        f"medians of {s['rounds']} interleaved rounds; time per step, Python call included",
        "",
    ]
    results = record["results"]
    peers = [p for p in PEERS if any(p in r["speedup"] for r in results)]
    extra = [n for n in ("gradstep-flat", "gradstep-checked", "gradstep.torch")
             if any(n in r["median_seconds"] for r in results)]
    head = ["optimizer", "case", "B/elem", "gradstep", "GB/s", "roof GB/s", "% roof",
            *[f"vs {p}" for p in peers], "checks cost", "gradstep.torch vs torch-fused"]
    rows = []
    for r in results:
        med = r["median_seconds"]
        t = med["gradstep"]
        # skip_nonfinite + max_grad_norm: time with the checks over time without.
        checks = f"{med['gradstep-checked'] / t:.2f}x" if "gradstep-checked" in med else "-"
        adapter = (f"{med['torch-fused'] / med['gradstep.torch']:.1f}x"
                   if "gradstep.torch" in med and "torch-fused" in med else "-")
        rows.append([r["optimizer"], r["case"], str(r["bytes_per_element"]), fmt_time(t),
                     f"{r['gbps']['gradstep']:.1f}", f"{r['roof_gbps']:.1f}",
                     f"{100 * r['roof_fraction']:.0f}%",
                     *[_ratio(r["speedup"][p]) if p in r["speedup"] else "-" for p in peers],
                     checks, adapter])
    lines += _grid(head, rows)
    lines += ["", "median time per step"]
    names = ["gradstep", *extra, "roof", *peers]
    rows = [[r["optimizer"], r["case"],
             *[fmt_time(r["median_seconds"][n]) if n in r["median_seconds"] else "-" for n in names]]
            for r in results]
    lines += _grid(["optimizer", "case", *names], rows)
    return "\n".join(lines) + "\n"


def _ratio(x: float) -> str:
    return f"{x:.2f}x" if x < 10 else f"{x:.1f}x"


def _grid(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return [line(head), "  ".join("-" * w for w in widths), *[line(r) for r in rows]]


def compare(old: dict[str, Any], new: dict[str, Any]) -> str:
    """gradstep's time and roof fraction, old run vs this one, for the cases both have."""
    before = {(r["optimizer"], r["case"]): r for r in old.get("results", [])}
    rows = []
    for r in new["results"]:
        o = before.get((r["optimizer"], r["case"]))
        if o is None:
            continue
        t_old, t_new = o["median_seconds"]["gradstep"], r["median_seconds"]["gradstep"]
        rows.append([r["optimizer"], r["case"], fmt_time(t_old), fmt_time(t_new), f"{t_new / t_old:.2f}",
                     f"{100 * o['roof_fraction']:.0f}%", f"{100 * r['roof_fraction']:.0f}%"])
    head = ["optimizer", "case", "old", "new", "new/old", "old % roof", "new % roof"]
    title = f"compared with {old.get('created', '?')} ({old.get('machine', {}).get('cpu', '?')})"
    return "\n".join([title, *_grid(head, rows)]) + "\n"


def chart(record: dict[str, Any], path: Path) -> None:
    """Time per step by case, one panel per optimizer, the roof as a black dash."""
    # A Figure with its own Agg canvas, no pyplot: no global backend switch, no GUI.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    results = record["results"]
    optimizers = list(dict.fromkeys(r["optimizer"] for r in results))
    names = [n for n in ("gradstep", "gradstep-flat", *PEERS)
             if any(n in r["median_seconds"] for r in results)]
    colors = dict(zip(names, ["#d62728", "#ff9896", "#7f7f7f", "#1f77b4", "#9edae5", "#2ca02c",
                              "#9467bd"]))
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
        ax.set_xticks(range(len(mine)), [r["case"] for r in mine], fontsize=8)
        ax.set_title(f"{opt} ({mine[0]['bytes_per_element']} B/element)", fontsize=10)
        ax.set_ylabel("µs per step", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", which="major", alpha=0.3)
    for ax in list(axes.flat)[len(optimizers):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    m, s = record["machine"], record["settings"]
    fig.legend(handles, labels, loc="lower right" if len(optimizers) % cols else "upper center",
               fontsize=8, ncol=1 if len(optimizers) % cols else len(labels), frameon=False)
    fig.suptitle(f"optimizer step, {s['dtype']}: {m['cpu']}, {s['threads']} threads, ISA {m['isa']} "
                 "(lower is better)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)

