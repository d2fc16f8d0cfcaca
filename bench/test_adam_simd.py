"""Adam step, float32, at 4K/64K/1M/16M elements: the forced-scalar target beside the dispatched one.

Run: python -m pytest bench/test_adam_simd.py --benchmark-group-by=param:size
Single-threaded (the SIMD effect alone) and at the default thread count.
Each benchmark also checks its answer against numpy written by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

import gradstep as gs
from gradstep import bench

SIZES = {"4K": 1 << 12, "64K": 1 << 16, "1M": 1 << 20, "16M": 1 << 24}
DISPATCHED = gs.isa()


@pytest.fixture
def isa_and_threads(request):
    isa, threads = request.param
    before = (gs.isa(), gs.get_num_threads())
    gs.set_isa(isa)
    gs.set_num_threads(threads or before[1])
    yield isa
    gs.set_isa(before[0])
    gs.set_num_threads(before[1])


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize(
    "isa_and_threads",
    [("scalar", 1), (DISPATCHED, 1), ("scalar", None), (DISPATCHED, None)],
    ids=["scalar-1T", f"{DISPATCHED}-1T", "scalar-allT", f"{DISPATCHED}-allT"],
    indirect=True,
)
def test_adam_step(benchmark, size, isa_and_threads):
    n = SIZES[size]
    rng = np.random.default_rng(0)
    param = rng.standard_normal(n).astype(np.float32)
    grad = (rng.standard_normal(n) * 1e-2).astype(np.float32)
    opt = gs.Adam([param], lr=1e-3)
    if n >= 1 << 22:
        benchmark.pedantic(opt.step, args=([grad],), rounds=7, warmup_rounds=1)
    else:
        benchmark(opt.step, [grad])
    assert gs.isa() == isa_and_threads

    # The answer: three fresh steps against numpy by hand.
    check = rng.standard_normal(4096).astype(np.float32)
    g = (rng.standard_normal(4096) * 1e-2).astype(np.float32)
    mine = check.copy()
    ours = gs.Adam([mine], lr=1e-3)
    ref = bench.NumpyState(check.copy(), g, 2)
    for k in range(1, 4):
        ours.step([g])
        bench.SPECS["adam"].numpy_step(ref, k)
    np.testing.assert_allclose(mine, ref.p, rtol=1e-5, atol=1e-7)
