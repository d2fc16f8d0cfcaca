"""The ``gradstep bench`` subcommand: its flags, and one run from timing to files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import numpy as np

import gradstep as gs
from gradstep.bench.candidates import memory_needed
from gradstep.bench.models import MODELS
from gradstep.bench.record import upgrade
from gradstep.bench.report import chart, compare, table
from gradstep.bench.spec import (DEFAULT_CASES, HALF_DTYPES, OPTIMIZERS, PRECISIONS, QUICK_CASES, SPECS, Case,
                                 bench_dtype, parse_precisions, parse_threads)
from gradstep.bench.timing import TORCH_SETTLE_S, run_all


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help=f"a few seconds: cases {QUICK_CASES}, 3 rounds of short samples")
    parser.add_argument("--out", type=Path, help="write bench.txt, bench.json and bench.png here")
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS),
                        help=f"comma-separated, from {', '.join(OPTIMIZERS)}")
    parser.add_argument("--cases", help=f"comma-separated N, MxN or a model's parameter shapes "
                        f"({', '.join(MODELS)}; default {DEFAULT_CASES})")
    parser.add_argument("--threads", help="threads for gradstep and torch, or a comma list (1,2): every "
                        "case at each, and the scaling reported (default: gradstep's)")
    parser.add_argument("--dtype", choices=["float32", "float64", *HALF_DTYPES], default="float32",
                        help="the params' dtype; bfloat16/float16 are benched at each --precision")
    parser.add_argument("--precision", help="bfloat16/float16 params: comma-separated, from "
                        f"{', '.join(PRECISIONS)} (default all): float32 states (gradstep's default), "
                        "states in the param's dtype (torch's layout), a float32 master copy, "
                        "stochastic rounding; a row each, with its own bytes and roof")
    parser.add_argument("--rounds", type=int, help="interleaved samples per candidate (default 9)")
    parser.add_argument("--isa", help="force gradstep's ISA target for the run (e.g. scalar)")
    parser.add_argument("--compare", type=Path, metavar="OLD_JSON",
                        help="also print this run against an earlier bench.json")
    parser.add_argument("--load", type=Path, metavar="JSON",
                        help="time nothing: report (and --out, --compare) a saved bench.json")


def run(args: argparse.Namespace) -> int:
    optimizers = [o.strip() for o in args.optimizers.split(",") if o.strip()]
    unknown = [o for o in optimizers if o not in SPECS]
    if unknown:
        raise SystemExit(f"gradstep bench: unknown optimizer(s) {unknown}; choose from {list(SPECS)}")
    try:
        cases = [Case.parse(c) for c in (args.cases or (QUICK_CASES if args.quick else DEFAULT_CASES)).split(",")]
        threads = parse_threads(args.threads) if args.threads else [gs.get_num_threads()]
        precisions = parse_precisions(args.precision) if args.precision else None
        if precisions and args.dtype not in HALF_DTYPES:
            raise ValueError(f"--precision is for --dtype bfloat16 or float16, not {args.dtype}")
    except ValueError as e:
        raise SystemExit(f"gradstep bench: {e}") from None
    rounds = args.rounds or (3 if args.quick else 9)
    if not args.load:
        _check_memory(optimizers, cases, bench_dtype(args.dtype))
    old = _read(args.compare) if args.compare else None
    if args.load:
        record = _read(args.load)
    else:
        isa_before = gs.isa()
        if args.isa:
            gs.set_isa(args.isa)
        try:
            record = run_all(optimizers, cases, bench_dtype(args.dtype), threads, rounds,
                             sample_s=0.001 if args.quick else 0.02,
                             warm_s=0.0003 if args.quick else 0.002,
                             settle_s=TORCH_SETTLE_S / 2 if args.quick else TORCH_SETTLE_S,
                             progress=lambda msg: print(f"  timing {msg} ...", file=sys.stderr, flush=True),
                             precisions=precisions)
        finally:
            gs.set_isa(isa_before)
    text = table(record)
    if old is not None:
        text += "\n" + compare(old, record)
    print(text, end="")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench.txt").write_text(text)
        (args.out / "bench.json").write_text(json.dumps(record, indent=1) + "\n")
        chart(record, args.out / "bench.png")
        print(f"wrote {args.out / 'bench.txt'}, {args.out / 'bench.json'}, {args.out / 'bench.png'}")
    return 0



def _read(path: Path) -> dict:
    """A saved record, of this format or an earlier one (upgraded)."""
    try:
        return upgrade(json.loads(path.read_text()))
    except ValueError as e:
        raise SystemExit(f"gradstep bench: {path}: {e}") from None


def _available_bytes() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _check_memory(optimizers: list[str], cases: list[Case], dtype: np.dtype) -> None:
    """Refuse, before timing anything, a model case whose candidates would not fit in memory."""
    available = _available_bytes()
    if available is None:
        return
    for case in cases:
        if not case.model:
            continue
        need = max(memory_needed(SPECS[o], case, dtype.itemsize) for o in optimizers)
        if need > 0.9 * available:
            raise SystemExit(f"gradstep bench: case {case.label} needs about {need / 2**30:.1f} GiB, "
                             f"{available / 2**30:.1f} GiB are available")
