"""Every optimizer, every case of `gradstep bench`, every candidate it finds: pytest-benchmark suites.

Run: python -m pytest bench/test_peers.py --benchmark-group-by=param:optimizer,param:case
Unlike `gradstep bench` the candidates are not interleaved; use the command
for ratios on a busy machine, these for pytest-benchmark's statistics,
histograms and --benchmark-compare.
"""

from __future__ import annotations

import numpy as np
import pytest

from gradstep import bench

CASES = [bench.Case.parse(c) for c in bench.DEFAULT_CASES.split(",")]


def available(optimizer: str, many: bool) -> list[str]:
    """The candidates this Python has for the optimizer (from a tiny trial case)."""
    trial = bench.Case(2, 16) if many else bench.Case(1, 16)
    return [c.name for c in bench.make_candidates(bench.SPECS[optimizer], trial, np.dtype("float32"))]


PARAMS = [
    pytest.param(opt, case, name, id=f"{opt}-{case.label}-{name}")
    for opt in bench.OPTIMIZERS
    for case in CASES
    for name in available(opt, case.tensors > 1)
]


@pytest.fixture(scope="module")
def candidates():
    cache: dict = {}

    def get(optimizer: str, case: bench.Case) -> dict:
        key = (optimizer, case)
        if key not in cache:
            cache.clear()  # one case's buffers at a time
            cands = bench.make_candidates(bench.SPECS[optimizer], case, np.dtype("float32"))
            cache[key] = {c.name: c for c in cands}
        return cache[key]

    return get


@pytest.mark.parametrize("optimizer, case, name", PARAMS)
def test_step(benchmark, candidates, optimizer, case, name):
    step = candidates(optimizer, case)[name].step
    benchmark.extra_info["bytes_per_step"] = (
        bench.bytes_per_element(bench.SPECS[optimizer], 4) * case.elements)
    if case.elements >= 1 << 22:
        benchmark.pedantic(step, rounds=5, warmup_rounds=1)
    else:
        benchmark(step)
