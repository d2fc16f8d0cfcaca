"""Steps from several Python threads: independent optimizers run in parallel
(the GIL is released), and one optimizer shared by threads is serialized."""

from __future__ import annotations

import threading

import numpy as np

import gradstep as gs


def problem(seed, n=300_000, steps=30):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(n).astype(np.float32)
    grads = [rng.standard_normal(n).astype(np.float32) for _ in range(steps)]
    return w, grads


def test_two_threads_two_optimizers_equal_sequential():
    (w1, g1), (w2, g2) = problem(1), problem(2)
    seq = [w1.copy(), w2.copy()]
    for w, grads in zip(seq, (g1, g2)):
        opt = gs.Adam([w], lr=1e-2, amsgrad=True)
        for g in grads:
            opt.step([g])

    par = [w1.copy(), w2.copy()]
    opts = [gs.Adam([w], lr=1e-2, amsgrad=True) for w in par]
    barrier = threading.Barrier(2)
    errors = []

    def work(opt, grads):
        try:
            barrier.wait()
            for g in grads:
                opt.step([g])
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(o, g)) for o, g in zip(opts, (g1, g2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for a, b in zip(par, seq):
        assert a.tobytes() == b.tobytes()


def test_one_optimizer_from_two_threads_is_serialized_not_corrupted():
    # SGD without momentum is a sum of -lr * g, so the order of the steps does
    # not matter and the result after all of them is known exactly (in float64
    # with small integers, every partial sum is exact).
    w = np.zeros(200_000)
    opt = gs.SGD([w], lr=1.0)
    ones = np.ones_like(w)
    per_thread, threads_n = 50, 4
    barrier = threading.Barrier(threads_n)

    def work():
        barrier.wait()
        for _ in range(per_thread):
            opt.step([ones])

    threads = [threading.Thread(target=work) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert np.all(w == -float(per_thread * threads_n))


def test_shared_adam_counts_every_step_once():
    # With the same gradient every time, Adam's result depends only on how many
    # steps ran and on each step having its own bias-correction step number.
    w_threads, w_seq = np.zeros(50_000), np.zeros(50_000)
    g = np.full_like(w_threads, 0.5)
    seq = gs.Adam([w_seq], lr=1e-3)
    for _ in range(120):
        seq.step([g])
    opt = gs.Adam([w_threads], lr=1e-3)
    barrier = threading.Barrier(3)

    def work():
        barrier.wait()
        for _ in range(40):
            opt.step([g])

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert opt.step_count == 120
    assert w_threads.tobytes() == w_seq.tobytes()
