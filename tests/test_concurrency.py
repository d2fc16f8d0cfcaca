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


def _serial_states(n=400_000, steps=25):
    """Adam's state after each step of a fixed run, keyed by step count; with the grads."""
    rng = np.random.default_rng(7)
    w0 = rng.standard_normal(n).astype(np.float32)
    grads = [rng.standard_normal(n).astype(np.float32) for _ in range(steps)]
    w = w0.copy()
    ref = gs.Adam([w], lr=1e-2)
    states = {0: {k: [a.copy() for a in v] for k, v in ref.state.items()}}
    for k, g in enumerate(grads, 1):
        ref.step([g])
        states[k] = {key: [a.copy() for a in v] for key, v in ref.state.items()}
    return w0, grads, states


def _assert_some_serial_state(sd, states):
    k = sd["step"]
    for key, arrays in sd["state"].items():
        for got, want in zip(arrays, states[k][key]):
            assert got.tobytes() == want.tobytes(), f"torn snapshot: '{key}' is not step {k}'s"


def test_state_dict_and_save_from_another_thread_are_never_torn(tmp_path):
    # A snapshot taken while another thread steps must equal the state after
    # some whole number of steps: state_dict() and gs.save take the step's lock.
    w0, grads, states = _serial_states()
    w = w0.copy()
    opt = gs.Adam([w], lr=1e-2)
    done = threading.Event()
    start = threading.Barrier(2)
    snapshots, errors = [], []

    def stepper():
        try:
            start.wait()
            for g in grads:
                opt.step([g])
        except Exception as e:  # surfaced below
            errors.append(e)
        finally:
            done.set()

    def snapshotter():
        try:
            start.wait()
            i = 0
            while not done.is_set() or i < 3:
                snapshots.append(opt.state_dict())
                path = tmp_path / f"ck{i % 2}.npz"
                gs.save(opt, path)
                snapshots.append(gs.checkpoint.read(path))
                i += 1
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=stepper), threading.Thread(target=snapshotter)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(snapshots) >= 6
    for sd in snapshots:
        _assert_some_serial_state(sd, states)


def test_load_state_dict_from_another_thread_lands_between_steps():
    # Loading step 0's state while another thread steps: afterwards the state
    # equals the serial state after the steps that followed the load, i.e.
    # state_dict()["step"] - (steps before the load) - never a mix of both.
    w0, grads, states = _serial_states(n=200_000, steps=20)
    w = w0.copy()
    opt = gs.Adam([w], lr=1e-2)
    initial = opt.state_dict()
    start = threading.Barrier(2)
    errors = []

    def stepper():
        try:
            start.wait()
            for g in grads[:10]:
                opt.step([g])
        except Exception as e:
            errors.append(e)

    def loader():
        try:
            start.wait()
            opt.load_state_dict(initial)
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=stepper), threading.Thread(target=loader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    # The load happened between two whole steps: what is left is a run of
    # whole steps from step 0 with grads[j:10] for the j steps before it.
    k = opt.step_count
    assert 0 <= k <= 10
    sd = opt.state_dict()
    j = 10 - k
    replay = gs.Adam([w0.copy()], lr=1e-2)
    for g in grads[j:10]:
        replay.step([g])
    for key, arrays in sd["state"].items():
        for got, want in zip(arrays, replay.state[key]):
            assert got.tobytes() == want.tobytes()


def test_a_callback_reentering_its_own_step_is_a_clear_error():
    # A callable lr runs inside the step; calling back into the optimizer from
    # there must neither deadlock nor see half a step.
    w = np.ones(8)
    calls = []

    def lr(k):
        for call in (lambda: opt.state_dict(), lambda: opt.step([np.ones(8)]),
                     lambda: opt.load_state_dict(saved)):
            try:
                call()
            except RuntimeError as e:
                calls.append(str(e))
        return 0.1

    opt = gs.SGD([w], lr=0.1, momentum=0.9)
    saved = opt.state_dict()
    opt.lr = lr
    opt.step([np.ones(8)])
    assert len(calls) == 3 and all("inside its own step" in c for c in calls)
    assert opt.step_count == 1 and np.all(w == 0.9)
