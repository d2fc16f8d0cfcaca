"""The ``gradstep bench`` subcommand: its flags, and one run from timing to files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import gradstep as gs
from gradstep.bench.record import FORMAT
from gradstep.bench.report import chart, compare, table
from gradstep.bench.spec import DEFAULT_CASES, OPTIMIZERS, QUICK_CASES, SPECS, Case
from gradstep.bench.timing import TORCH_SETTLE_S, run_all


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help=f"a few seconds: cases {QUICK_CASES}, 3 rounds of short samples")
    parser.add_argument("--out", type=Path, help="write bench.txt, bench.json and bench.png here")
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS),
                        help=f"comma-separated, from {', '.join(OPTIMIZERS)}")
    parser.add_argument("--cases", help=f"comma-separated N or MxN (default {DEFAULT_CASES})")
    parser.add_argument("--threads", type=int, help="threads for gradstep and torch (default: gradstep's)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
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
    cases = [Case.parse(c) for c in (args.cases or (QUICK_CASES if args.quick else DEFAULT_CASES)).split(",")]
    threads = args.threads or gs.get_num_threads()
    rounds = args.rounds or (3 if args.quick else 9)
    old = json.loads(args.compare.read_text()) if args.compare else None
    if args.load:
        record = json.loads(args.load.read_text())
        if record.get("format") != FORMAT:
            raise SystemExit(f"gradstep bench: {args.load} is not a {FORMAT} record")
    else:
        isa_before = gs.isa()
        if args.isa:
            gs.set_isa(args.isa)
        try:
            record = run_all(optimizers, cases, np.dtype(args.dtype), threads, rounds,
                             sample_s=0.001 if args.quick else 0.02,
                             warm_s=0.0003 if args.quick else 0.002,
                             settle_s=TORCH_SETTLE_S / 2 if args.quick else TORCH_SETTLE_S,
                             progress=lambda msg: print(f"  timing {msg} ...", file=sys.stderr, flush=True))
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

