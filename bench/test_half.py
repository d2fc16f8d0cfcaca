"""Adam on bfloat16/float16 params, every precision of `gradstep bench --dtype bfloat16|float16`
and every candidate it finds (gs.Adam, the roof of the same buffers, torch.optim beside
param-states, DeepSpeedCPUAdam beside f32-states and param-states): pytest-benchmark suites.

Run: python -m pytest bench/test_half.py --benchmark-group-by=param:dtype,param:precision,param:case
As bench/test_peers.py, the candidates are not interleaved: use `gradstep bench --dtype
bfloat16` for ratios on a busy machine, these for pytest-benchmark's statistics and
--benchmark-compare.
"""

from __future__ import annotations

import pytest

from gradstep import bench

CASES = [bench.Case.parse(c) for c in ("4096", "1048576", "16777216", "200x5000")]
SPEC = bench.SPECS["adam"]


def available(dtype: str, precision: str) -> list[str]:
    """The candidates this Python has at this precision (from a tiny trial case)."""
    trial = bench.Case(1, 16)
    return [c.name for c in bench.make_candidates(SPEC, trial, bench.bench_dtype(dtype), precision=precision)]


PARAMS = [
    pytest.param(dtype, precision, case, name, id=f"{dtype}-{precision}-{case.label}-{name}")
    for dtype in bench.HALF_DTYPES
    for precision in bench.PRECISIONS
    for case in CASES
    for name in available(dtype, precision)
]


@pytest.fixture(scope="module")
def candidates():
    cache: dict = {}

    def get(dtype: str, precision: str, case: bench.Case) -> dict:
        key = (dtype, precision, case)
        if key not in cache:
            cache.clear()  # one case's buffers at a time
            made = bench.make_candidates(SPEC, case, bench.bench_dtype(dtype), precision=precision)
            cache[key] = {c.name: c for c in made}
        return cache[key]

    return get


@pytest.mark.parametrize("dtype, precision, case, name", PARAMS)
def test_half_step(benchmark, candidates, dtype, precision, case, name):
    step = candidates(dtype, precision, case)[name].step
    benchmark.extra_info["bytes_per_step"] = bench.bytes_per_element(SPEC, 2, precision) * case.elements
    if case.elements >= 1 << 22:
        benchmark.pedantic(step, rounds=5, warmup_rounds=1)
    else:
        benchmark(step)
