"""Where threads start to pay: one step on 1 thread vs N threads, per optimizer and size.

The thresholds in cpp/src/optim.cpp (kParallelMin*) come from this script. A
normal build runs steps below them on one thread whatever the thread count,
so build with the override first to see both sides of the crossover:

    pip install --no-build-isolation . -Ccmake.define.GRADSTEP_PARALLEL_MIN=0
    python bench/threshold.py            # then reinstall normally

Two regimes are timed, interleaved: back to back (the pool's workers are
still polling from the previous step, as in a benchmark) and after 1 ms of
other work on the calling thread (the workers have parked and must be woken,
as in training, where a forward and backward pass separate steps). Medians
of per-step times.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import gradstep as gs

OPTIMIZERS = {
    "sgd": lambda p: gs.SGD(p, lr=1e-3, momentum=0.9),
    "adagrad": lambda p: gs.Adagrad(p),
    "adadelta": lambda p: gs.Adadelta(p),
    "rmsprop": lambda p: gs.RMSprop(p),
    "adam": lambda p: gs.Adam(p),
}


def _busy(seconds: float) -> None:
    # Work, not sleep: a sleeping caller lets the scheduler put the woken
    # worker on the caller's own core, which a training loop would not do.
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", default="4096,8192,16384,32768,65536,131072,262144")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"threads 1 vs {args.threads}; isa {gs.isa()}; medians of {args.rounds} steps (us)")
    print(f"{'optimizer':10} {'elements':>9} | {'b2b 1T':>8} {'b2b NT':>8} {'ratio':>6}"
          f" | {'gap 1T':>8} {'gap NT':>8} {'ratio':>6}")
    for name in args.optimizers.split(","):
        for n in sizes:
            rng = np.random.default_rng(0)
            param = rng.standard_normal(n).astype(np.float32)
            grad = (rng.standard_normal(n) * 1e-3).astype(np.float32)
            opt = OPTIMIZERS[name]([param])
            opt.step([grad])
            times: dict[tuple[str, int], list[float]] = {}
            for _ in range(args.rounds):
                for regime in ("b2b", "gap"):
                    for threads in (1, args.threads):
                        gs.set_num_threads(threads)
                        if regime == "b2b":
                            for _ in range(3):  # wakes the workers
                                opt.step([grad])
                        else:
                            _busy(1e-3)
                        start = time.perf_counter()
                        opt.step([grad])
                        times.setdefault((regime, threads), []).append(time.perf_counter() - start)
            med = {k: statistics.median(v) * 1e6 for k, v in times.items()}
            cells = []
            for regime in ("b2b", "gap"):
                one, many = med[(regime, 1)], med[(regime, args.threads)]
                cells.append(f"{one:8.1f} {many:8.1f} {one / many:6.2f}")
            print(f"{name:10} {n:9d} | " + " | ".join(cells))


if __name__ == "__main__":
    main()
