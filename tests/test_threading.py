"""Threaded steps are bit-identical to single-threaded ones.

Every optimizer (each kernel variant), both dtypes, sizes on both sides of
the chunk size (8192 elements), of the smallest threaded step and of the
largest step that does not wake parked workers, lists of many small
tensors; 1 to 4 threads, on both thread back ends: gradstep's own pool (the
default) and the OpenMP team torch has loaded (this module imports torch;
opted into in a subprocess with GRADSTEP_THREADING=openmp). Also the ISA forced to scalar,
the gradient-norm pre-pass, the thread-count defaults and forked children.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import gradstep as gs

HERE = Path(__file__).parent
CHUNK = 8192

# One configuration per kernel variant: (class name, lr, options).
CONFIGS = [
    ("SGD", 0.05, dict()),
    ("SGD", 0.05, dict(momentum=0.9, nesterov=True, weight_decay=0.05)),
    ("SGD", 0.05, dict(momentum=0.9, dampening=0.3, maximize=True)),
    ("Adagrad", 0.05, dict(lr_decay=0.01, weight_decay=0.05, initial_accumulator_value=0.1)),
    ("Adadelta", 1.0, dict(weight_decay=0.05)),
    ("RMSprop", 0.01, dict()),
    ("RMSprop", 0.01, dict(momentum=0.9, centered=True, weight_decay=0.05, maximize=True)),
    ("Adam", 0.01, dict(amsgrad=True, weight_decay=0.05)),
    ("AdamW", 0.01, dict()),
    ("Adam", 0.01, dict(betas=(0.3, 0.9), maximize=True)),
    ("Adamax", 0.01, dict(weight_decay=0.05, maximize=True)),
    ("RAdam", 0.01, dict(betas=(0.3, 0.9), weight_decay=0.05)),  # rectified from step 3
    ("RAdam", 0.01, dict(weight_decay=0.05, decoupled_weight_decay=True)),
    ("NAdam", 0.01, dict(weight_decay=0.05, maximize=True)),
    ("NAdam", 0.01, dict(weight_decay=0.05, decoupled_weight_decay=True, momentum_decay=0.1)),
    # Two passes with reductions over every tensor between them (the sums in chunk order).
    ("Prodigy", 1.0, dict(weight_decay=0.05, decouple=False, use_bias_correction=True, maximize=True)),
    ("Prodigy", 1.0, dict(betas=(0.0, 0.99), weight_decay=0.05, safeguard_warmup=True)),
    ("DAdaptAdam", 1.0, dict(weight_decay=0.05, decouple=True)),
    ("DAdaptSGD", 1.0, dict(momentum=0.9, weight_decay=0.05)),
    # Lamb's passes: clip, moments, apply; with the caution norm pass; one fused pass.
    ("Lamb", 0.01, dict()),
    ("Lamb", 0.01, dict(caution=True, decoupled_decay=True, trust_clip=True, maximize=True)),
    ("Lamb", 0.01, dict(weight_decay=0.0, max_grad_norm=None)),
    ("AdamWScheduleFree", 0.01, dict(weight_decay=0.05, warmup_steps=2, maximize=True)),
    ("SGDScheduleFree", 0.05, dict(weight_decay=0.05, r=0.5)),
    ("Lion", 1e-3, dict(betas=(0.3, 0.9), maximize=True)),  # no decay
    ("Lion", 1e-3, dict(weight_decay=0.05, decoupled_weight_decay=True)),
    # Three passes; row and column sums of the matrices shared among their chunks.
    ("Adafactor", 0.01, dict(weight_decay=0.05, maximize=True)),
    ("Adafactor", 0.5, dict(beta2_decay=-0.3, eps=(1e-20, 0.0), d=2.0)),
]
CONFIG_IDS = [f"{name}{sorted(opts.items())}" for name, _, opts in CONFIGS]

# Single tensors straddling: a chunk, the smallest threaded step (16K or
# 32K elements depending on the optimizer), several chunks with a tail.
SIZES = [1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK - 1, 2 * CHUNK, 2 * CHUNK + 3,
         4 * CHUNK - 1, 4 * CHUNK + 1, 9 * CHUNK + 5, 70_001]
# Large enough to wake parked workers (32x the threaded minimum) for every optimizer.
LARGE = [(1 << 20) + 3]
THREADS = [1, 2, 3, 4]


def many_tensor_shapes(seed: int) -> list[tuple[int, ...]]:
    """Many small tensors (and a few large ones, some empty), grouped into shared blocks."""
    rng = np.random.default_rng(seed)
    shapes: list[tuple[int, ...]] = [(int(n),) for n in rng.integers(0, 3000, size=150)]
    shapes += [(0,), (CHUNK + 7,), (37, 1001), (3, CHUNK - 1)]
    return shapes


def run_steps(name, lr, opts, shapes, dtype, threads, steps=3, control=None):
    """Params and states after `steps` steps on `threads` threads (same inputs every time)."""
    rng = np.random.default_rng(12345)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(steps)]
    before = gs.get_num_threads()
    gs.set_num_threads(threads)
    try:
        opt = getattr(gs, name)(params, lr=lr, **(control or {}), **opts)
        mode = opt.__gradstep_spec__.mode
        if mode is not None:  # Schedule-Free: train() before the steps, eval() after them
            getattr(opt, mode.on)()
        results = [opt.step(g) for g in grads]
        if mode is not None:
            getattr(opt, mode.off)()
    finally:
        gs.set_num_threads(before)
    state = [a for arrays in opt.state.values() for a in arrays]
    return [a.tobytes() for a in params + state], results


def assert_identical_across_threads(name, lr, opts, shapes, dtype):
    reference, _ = run_steps(name, lr, opts, shapes, dtype, 1)
    for threads in THREADS[1:]:
        got, _ = run_steps(name, lr, opts, shapes, dtype, threads)
        assert got == reference, f"{threads} threads differ from 1 ({name}, {dtype}, {len(shapes)} tensors)"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_single_tensors_bit_identical_across_thread_counts(config, dtype):
    name, lr, opts = config
    for n in SIZES:
        assert_identical_across_threads(name, lr, opts, [(n,)], dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_many_tensors_bit_identical_across_thread_counts(config, dtype):
    name, lr, opts = config
    assert_identical_across_threads(name, lr, opts, many_tensor_shapes(7), dtype)


@pytest.mark.parametrize("config", [CONFIGS[1], CONFIGS[7]], ids=[CONFIG_IDS[1], CONFIG_IDS[7]])
def test_large_steps_bit_identical_across_thread_counts(config):
    name, lr, opts = config
    for n in LARGE:
        assert_identical_across_threads(name, lr, opts, [(n,)], np.float32)


def test_gradient_norm_pre_pass_identical_across_thread_counts():
    shapes = many_tensor_shapes(3) + [(5 * CHUNK + 3,)]
    control = dict(max_grad_norm=1.0, skip_nonfinite=True)
    ref_state, ref_results = run_steps("Adam", 0.01, {}, shapes, np.float32, 1, control=control)
    assert all(r.grad_norm is not None for r in ref_results)
    for threads in THREADS[1:]:
        state, results = run_steps("Adam", 0.01, {}, shapes, np.float32, threads, control=control)
        assert state == ref_state
        assert [r.grad_norm for r in results] == [r.grad_norm for r in ref_results]


@pytest.mark.parametrize("isa", gs.available_isas())
def test_threaded_forced_isa_matches_default_single_threaded(isa):
    shapes = [(4 * CHUNK + 5,), (333,), (2 * CHUNK,)]
    reference, _ = run_steps("Adam", 0.01, dict(amsgrad=True), shapes, np.float32, 1)
    before = gs.isa()
    gs.set_isa(isa)
    try:
        assert gs.isa() == isa
        for threads in (2, 4):
            got, _ = run_steps("Adam", 0.01, dict(amsgrad=True), shapes, np.float32, threads)
            assert got == reference
    finally:
        gs.set_isa(before)


def test_two_python_threads_stepping_large_sets_at_once():
    # Both want the worker threads; one gets them, the other runs alone.
    shapes = [(300_001,)]
    expected, _ = run_steps("Adam", 0.01, {}, shapes, np.float32, 1, steps=5)
    out: list = [None, None]

    def work(i: int) -> None:
        out[i] = run_steps("Adam", 0.01, {}, shapes, np.float32, 2, steps=5)[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == [expected, expected]


def run_python(code: str, **env: str) -> str:
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("GRADSTEP_NUM_THREADS", "OMP_NUM_THREADS", "GRADSTEP_THREADING")}
    full_env.update(env)
    out = subprocess.run([sys.executable, "-W", "ignore::DeprecationWarning", "-c", textwrap.dedent(code)],
                         capture_output=True, text=True, env=full_env, cwd=HERE, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.strip()


def test_borrowed_openmp_team_bit_identical_across_thread_counts():
    # The same checks on torch's OpenMP team (GRADSTEP_THREADING=openmp).
    code = """
        import numpy as np, test_threading as t
        for name, lr, opts in t.CONFIGS:
            for dtype in (np.float32, np.float64):
                for n in t.SIZES:
                    t.assert_identical_across_threads(name, lr, opts, [(n,)], dtype)
                t.assert_identical_across_threads(name, lr, opts, t.many_tensor_shapes(7), dtype)
        for name, lr, opts in (t.CONFIGS[1], t.CONFIGS[7]):
            for n in t.LARGE:
                t.assert_identical_across_threads(name, lr, opts, [(n,)], np.float32)
        t.test_gradient_norm_pre_pass_identical_across_thread_counts()
        t.test_two_python_threads_stepping_large_sets_at_once()
        print("ok")
    """
    assert run_python(code, GRADSTEP_THREADING="openmp") == "ok"


def test_set_num_threads_round_trip_and_bounds():
    before = gs.get_num_threads()
    try:
        gs.set_num_threads(3)
        assert gs.get_num_threads() == 3
        for bad in (0, -1, 100_000):
            with pytest.raises(ValueError, match="number of threads"):
                gs.set_num_threads(bad)
        assert gs.get_num_threads() == 3
    finally:
        gs.set_num_threads(before)


@pytest.mark.parametrize(
    "env, expected",
    [
        (dict(GRADSTEP_NUM_THREADS="3"), "3"),
        (dict(GRADSTEP_NUM_THREADS="3", OMP_NUM_THREADS="5"), "3"),
        (dict(OMP_NUM_THREADS="5"), "5"),
        (dict(OMP_NUM_THREADS="4,2"), "4"),
        (dict(GRADSTEP_NUM_THREADS="lots", OMP_NUM_THREADS="2"), "2"),
        ({}, "affinity"),
        (dict(GRADSTEP_NUM_THREADS="0"), "affinity"),
    ],
)
def test_default_thread_count(env, expected):
    got = run_python("import gradstep as gs; print(gs.get_num_threads())", **env)
    if expected == "affinity":
        expected = str(len(os.sched_getaffinity(0)))
    assert got == expected


@pytest.mark.parametrize("backend", ["pool", "openmp"])
def test_forked_child_steps_with_threads(backend):
    # The child has none of the parent's threads; it must still step (on a
    # pool of its own) and get the same bits as the parent.
    code = """
        import os, numpy as np
        if os.environ.get("USE_TORCH"):
            import torch
            torch.ones(1 << 20).sum()  # torch's OpenMP team is running
        import gradstep as gs
        gs.set_num_threads(2)
        def run():
            rng = np.random.default_rng(0)
            w = rng.standard_normal(1 << 20).astype(np.float32)
            opt = gs.Adam([w])
            for _ in range(4):
                opt.step([rng.standard_normal(1 << 20).astype(np.float32)])
            return w.tobytes()
        parent = run()
        r, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(wfd, b"1" if run() == parent else b"0")
            os._exit(0)
        os.close(wfd)
        same = os.read(r, 1)
        os.waitpid(pid, 0)
        print("ok" if same == b"1" else "differs")
    """
    env = dict(GRADSTEP_THREADING="pool") if backend == "pool" else dict(USE_TORCH="1", GRADSTEP_THREADING="openmp")
    assert run_python(code, **env) == "ok"



def run_with_thread_count_changing(thread_counts, control):
    """One Adam over 1M elements built on 1 thread, stepped on each count in turn."""
    rng = np.random.default_rng(5)
    w = rng.standard_normal(1 << 20).astype(np.float32)
    grads = [rng.standard_normal(1 << 20).astype(np.float32) for _ in thread_counts]
    before = gs.get_num_threads()
    gs.set_num_threads(1)
    try:
        opt = gs.Adam([w], lr=0.01, **control)
        results = []
        for threads, g in zip(thread_counts, grads):
            gs.set_num_threads(threads)
            results.append(opt.step([g]).grad_norm)
    finally:
        gs.set_num_threads(before)
    return [w.tobytes()] + [a.tobytes() for arrays in opt.state.values() for a in arrays], results


@pytest.mark.parametrize("backend", ["pool", "openmp"])
def test_thread_count_changed_after_construction(backend):
    # The set's blocks are cut again for each step's thread count (8 threads
    # get twice the blocks of 4 at this size); the bits stay those of 1 thread.
    code = """
        import test_threading as t
        control = dict(max_grad_norm=1.0)
        want = t.run_with_thread_count_changing([1, 1, 1, 1], control)
        got = t.run_with_thread_count_changing([8, 2, 8, 3], control)
        print("ok" if got == want else "differs")
    """
    # test_threading imports torch, so its OpenMP runtime is loaded to borrow.
    assert run_python(code, GRADSTEP_THREADING=backend) == "ok"
