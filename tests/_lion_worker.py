"""Worker for test_lion.py: lion_pytorch.Lion's params and exp_avg for every option
combination of test_lion.GRID, under the CPU kernels chosen by this process's
ATEN_CPU_CAPABILITY."""

from __future__ import annotations

import sys

import numpy as np
import torch

from test_lion import GRID, problem, reference_run


def main(out: str) -> None:
    results = {"capability": np.array(torch.backends.cpu.get_cpu_capability())}
    for c, opts in enumerate(GRID):
        for dtype in (np.float64, np.float32):
            params, grads = problem(dtype)
            ps, ms, _ = reference_run(opts, params, grads)
            for i, (p, m) in enumerate(zip(ps, ms)):
                results[f"{c}/{dtype.__name__}/p{i}"] = p
                results[f"{c}/{dtype.__name__}/m{i}"] = m
    np.savez(out, **results)


if __name__ == "__main__":
    main(sys.argv[1])
