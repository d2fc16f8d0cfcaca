"""gradstep's threads next to torch's, measured: borrowed OpenMP team vs own pool.

A training step alternates torch work (forward, backward) with the optimizer
step. torch runs its ops on an OpenMP runtime whose threads spin for
milliseconds after each op. This script times that alternation with the
optimizer step done two ways, each with the same number of threads:

- gradstep, an Adam step on one float32 tensor: by default on gradstep's own
  pool; with GRADSTEP_THREADING=openmp on the OpenMP team torch has loaded;
- the same Adam loop in C with ``#pragma omp parallel for`` (compiled here
  with the system compiler against the system libgomp, as an extension built
  with -fopenmp would be), called through ctypes.

For each it reports the optimizer step's median time and the median time of
the torch op that follows it, in rounds of: torch op, optimizer step (x3).
It also reports both steps alone (no torch op in between). Needs a C
compiler with OpenMP and torch. Example:

    python bench/pool_vs_openmp.py --elements 1048576 --threads 2
    GRADSTEP_THREADING=openmp python bench/pool_vs_openmp.py
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import gradstep as gs

C_SOURCE = r"""
#include <math.h>
#include <stddef.h>
/* torch.optim.Adam's single-tensor update, as gradstep's kernel computes it. */
void adam_omp(float* p, const float* g, float* m, float* v, size_t n, double lr, double b1,
              double b2, double eps, long step) {
  const float one_minus_b1 = (float)(1.0 - b1), b2f = (float)b2, one_minus_b2 = (float)(1.0 - b2);
  const double bc2_sqrt = sqrt(1.0 - pow(b2, (double)step));
  const float epsf = (float)(eps * bc2_sqrt);
  const float neg_step = (float)(-(lr * bc2_sqrt / (1.0 - pow(b1, (double)step))));
  #pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) {
    const float gi = g[i];
    const float mi = m[i] + one_minus_b1 * (gi - m[i]);
    m[i] = mi;
    const float vi = v[i] * b2f + one_minus_b2 * gi * gi;
    v[i] = vi;
    p[i] = p[i] + neg_step * (mi / (sqrtf(vi) + epsf));
  }
}
"""


def build_openmp(tmp: Path) -> ctypes.CDLL:
    src, lib = tmp / "adam_omp.c", tmp / "adam_omp.so"
    src.write_text(C_SOURCE)
    subprocess.run(["cc", "-O3", "-mavx2", "-mfma", "-ffp-contract=off", "-fno-math-errno", "-fopenmp",
                    "-shared", "-fPIC", str(src), "-o", str(lib), "-lm"], check=True)
    dll = ctypes.CDLL(str(lib))
    dll.adam_omp.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_size_t] + [ctypes.c_double] * 4 + [ctypes.c_long]
    return dll


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=1 << 20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    n = args.elements
    torch.set_num_threads(args.threads)
    gs.set_num_threads(args.threads)
    # Read by the system libgomp when it loads (torch's copy is already loaded).
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        dll = build_openmp(Path(tmp))

        rng = np.random.default_rng(0)
        grad = (rng.standard_normal(n) * 1e-2).astype(np.float32)
        gs_param = rng.standard_normal(n).astype(np.float32)
        opt = gs.Adam([gs_param])
        omp = [gs_param.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)]
        omp_step = [0]

        def gs_step() -> None:
            opt.step([grad])

        def omp_adam() -> None:
            omp_step[0] += 1
            p, m, v = omp
            dll.adam_omp(p.ctypes.data, grad.ctypes.data, m.ctypes.data, v.ctypes.data, n, 1e-3, 0.9,
                         0.999, 1e-8, omp_step[0])

        # A torch op of about the optimizer step's size: a 256x256 matmul chain.
        a = torch.randn(256, 256)

        def torch_op() -> None:
            b = a
            for _ in range(4):
                b = b @ a

        times: dict[str, list[float]] = {}
        gs_name = "gradstep, " + ("borrowed team" if os.environ.get("GRADSTEP_THREADING") == "openmp"
                                  else "own pool")

        def timed(key: str, fn) -> None:  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            fn()
            times.setdefault(key, []).append(time.perf_counter() - start)

        for fn in (gs_step, omp_adam, torch_op):
            for _ in range(5):
                fn()
        for _ in range(args.rounds):
            for name, step in ((gs_name, gs_step), ("C loop, omp parallel for", omp_adam)):
                for _ in range(3):
                    timed(f"{name}: torch op", torch_op)
                    timed(f"{name}: step after torch op", step)
                time.sleep(0.02)  # let both runtimes' threads park
                for _ in range(3):
                    timed(f"{name}: step alone", step)
                time.sleep(0.02)
        print(f"{n} elements, {args.threads} threads; medians over {args.rounds} rounds")
        for key, values in times.items():
            print(f"  {key:50s} {statistics.median(values) * 1e6:9.1f} us")


if __name__ == "__main__":
    main()
