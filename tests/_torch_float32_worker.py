"""Worker for test_float32_accuracy.py: torch's float32 results for every case,
under the CPU kernels chosen by this process's ATEN_CPU_CAPABILITY."""

from __future__ import annotations

import sys

import numpy as np
import torch

import float32_accuracy
from conftest import CASES, make_problem


def main(out: str, steps: int) -> None:
    params, grads = make_problem(np.float32, steps)
    results = {"capability": np.array(torch.backends.cpu.get_cpu_capability())}
    for c, (name, lr, opts) in enumerate(CASES):
        got, _ = float32_accuracy.run_torch(name, lr, opts, params, grads, dtype=torch.float32)
        for i, p in enumerate(got):
            results[f"{c}/{i}"] = p
    np.savez(out, **results)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
