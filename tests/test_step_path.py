"""The per-step grad checks (a few ndarray field reads on the fast path) catch
what the full checks catch, including arrays changed in place between steps."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import gradstep as gs


def make(n=10, dtype=np.float32):
    w = np.zeros(n, dtype)
    return w, gs.SGD([w], lr=1.0)


def test_same_list_again_after_in_place_dtype_change_is_rejected():
    w, opt = make()
    g = np.ones(10, np.float32)
    grads = [g]
    opt.step(grads)
    g.dtype = np.int32  # same memory, same object, other dtype
    with pytest.raises(TypeError, match=r"grads\[0\]: dtype"):
        opt.step(grads)
    assert np.array_equal(w, -np.ones(10, np.float32))


def test_same_list_again_after_in_place_reshape_is_rejected():
    w, opt = make()
    g = np.ones(10, np.float32)
    opt.step([g])
    g.shape = (2, 5)
    with pytest.raises(ValueError, match=r"grads\[0\]: shape"):
        opt.step([g])


def test_list_mutated_between_steps_uses_the_new_array():
    w, opt = make()
    grads = [np.ones(10, np.float32)]
    opt.step(grads)
    grads[0] = np.full(10, 2.0, np.float32)
    opt.step(grads)
    assert np.array_equal(w, np.full(10, -3.0, np.float32))


@pytest.mark.parametrize("make_grads", [
    lambda g: (g,),
    lambda g: (x for x in [g]),
    lambda g: [g.view(np.ndarray)],
], ids=["tuple", "generator-like", "view"])
def test_sequences_other_than_lists(make_grads):
    w, opt = make()
    g = np.ones(10, np.float32)
    grads = make_grads(g)
    if not hasattr(grads, "__len__"):
        with pytest.raises(TypeError, match="sequence"):
            opt.step(grads)
        return
    opt.step(grads)
    assert np.array_equal(w, -g)


def test_rejected_on_the_fast_path_and_explained():
    w, opt = make()
    with pytest.raises(TypeError, match="dtype"):
        opt.step([np.ones(10, np.dtype(">f4"))])  # non-native byte order
    with pytest.raises(ValueError, match="contiguous"):
        opt.step([np.ones(20, np.float32)[::2]])
    with pytest.raises(ValueError, match="shape"):
        opt.step([np.ones(11, np.float32)])
    with pytest.raises(TypeError, match="dtype"):
        opt.step([np.ones(10, np.float64)])
    with pytest.raises(ValueError, match="overlaps"):
        opt.step([w])
    assert not w.any() and opt.step_count == 0


def test_ndarray_subclass_and_torch_tensor_grads():
    class Sub(np.ndarray):
        pass

    w, opt = make()
    opt.step([np.ones(10, np.float32).view(Sub)])
    opt.step([torch.ones(10)])  # viewed through DLPack
    assert np.array_equal(w, np.full(10, -2.0, np.float32))


def test_list_shrunk_by_another_thread_mid_step_is_safe():
    # The step holds its own snapshot of the list, so arrays dropped from the
    # list while the GIL is released stay alive until the step is done.
    n = 1 << 20
    w = np.zeros(n, np.float32)
    opt = gs.SGD([w], lr=1.0)
    for _ in range(20):
        grads = [np.ones(n, np.float32)]
        t = threading.Thread(target=grads.clear)
        t.start()
        try:
            opt.step(grads)
        except ValueError:
            pass  # the list was already empty when the step looked at it
        t.join()
    assert set(np.unique(w)) <= {-float(k) for k in range(21)}
    assert len(np.unique(w)) == 1
