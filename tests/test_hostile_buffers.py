"""Hostile buffers (issue 10): storage swapped under a live optimizer, callbacks that
step during grad conversion, torch view bits, objects numpy would copy, empty lists.

The promise checked here: bad input gets a clear Python exception naming the
argument and leaves every param, state and step count as it was; never a crash,
never a silent wrong answer. Cases that crashed (or read freed memory) before
the fix run in a subprocess, so a segfault fails one test instead of the suite.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import gradstep as gs
from gradstep import kernels

OPTIMIZERS = ["SGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW", "Adamax", "RAdam", "NAdam",
              "Prodigy", "DAdaptAdam", "DAdaptSGD", "Lamb",
              "AdamWScheduleFree", "SGDScheduleFree", "Lion", "Adafactor"]


def ready(opt):
    """The optimizer in the mode steps need (Schedule-Free: train())."""
    mode = opt.__gradstep_spec__.mode
    if mode is not None:
        getattr(opt, mode.on)()
    return opt


# Shared by the in-process tests and the subprocess scripts.
HELPERS = '''
import numpy as np

def snapshot(opt):
    return ([np.array(p, copy=True) for p in opt.params],
            {k: [a.copy() for a in v] for k, v in opt.state.items()},
            opt.step_count)

def assert_unchanged(opt, snap):
    params, state, count = snap
    assert opt.step_count == count, (opt.step_count, count)
    for a, b in zip(opt.params, params):
        assert np.array_equal(np.asarray(a), b)
    for k, v in state.items():
        for a, b in zip(opt.state[k], v):
            assert np.array_equal(a, b), k
'''
exec(HELPERS)


def run_isolated(body: str) -> None:
    """Runs `body` in a fresh interpreter; it must print OK and exit cleanly."""
    code = ("import numpy as np, torch, pytest, gradstep as gs\n" + HELPERS
            + textwrap.dedent(body) + "\nprint('OK')\n")
    # The timeout only turns a deadlock into a failure; nothing is timed.
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("OK"), (
        f"exit {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}")


def ones(n=8, dtype=np.float32):
    return np.ones(n, dtype)


# -- 1. storage replaced or resized after the optimizer was built ------------------

TORCH_SWAPS = {
    "data = zeros": "t.data = torch.zeros(N)",
    "set_(other)": "t.set_(torch.zeros(N))",
    "resize_(bigger)": "t.resize_(50 * N)",
    "resize_(smaller)": "t.resize_(N // 2)",
    "untyped_storage().resize_": "t.untyped_storage().resize_(4 * 50 * N)",
    "data = view(int32)": "t.data = t.view(torch.int32)",
    "data = transposed": "t.data = t.view(8, N // 8).t()",
    "data = first half": "t.data = t[: N // 2]",
}


@pytest.mark.parametrize("swap", list(TORCH_SWAPS), ids=list(TORCH_SWAPS))
def test_torch_param_storage_swapped_is_detected(swap):
    run_isolated(f'''
        N = 4096
        a = torch.ones(N)
        t = torch.ones(N)
        opt = gs.Adam([a, t], lr=0.1)
        g = [np.ones(N, np.float32), np.ones(N, np.float32)]
        opt.step(g)
        snap = snapshot(opt)
        a_before = a.clone()
        try:
            {TORCH_SWAPS[swap]}
        except RuntimeError as e:
            # The view made the storage not resizable: torch refuses, nothing dangles.
            assert "not resizable" in str(e), e
            if t.numel() == N:
                opt.step(g)
                assert opt.step_count == 2
            else:  # torch changed t's sizes before refusing: t no longer fits its storage
                with pytest.raises(ValueError, match=r"params\\[1\\].*resized"):
                    opt.step(g)
                assert_unchanged(opt, snap)
        else:
            t_before = t.clone()
            with pytest.raises(ValueError, match=r"params\\[1\\].*since the optimizer was built"):
                opt.step(g)
            assert_unchanged(opt, snap)
            assert torch.equal(a, a_before) and torch.equal(t, t_before)
    ''')


@pytest.mark.parametrize("swap", list(TORCH_SWAPS), ids=list(TORCH_SWAPS))
def test_numpy_view_of_a_torch_param_stays_valid(swap):
    # Given t.numpy(), the param is that array (its base is an alias of t's
    # storage, not t): a storage swapped under t leaves the array alive and
    # updated in place; a resize is refused by torch.
    run_isolated(f'''
        N = 4096
        t = torch.ones(N)
        view = t.numpy()
        opt = gs.SGD([view], lr=0.5)
        g = [np.ones(N, np.float32)]
        opt.step(g)
        try:
            {TORCH_SWAPS[swap]}
        except RuntimeError as e:
            assert "not resizable" in str(e), e
        opt.step(g)
        assert np.array_equal(view, np.zeros(N, np.float32))
    ''')


def test_torch_param_that_is_not_resizable_after_build():
    t = torch.ones(16)
    gs.Adam([t])
    with pytest.raises(RuntimeError, match="not resizable"):
        t.resize_(1 << 20)


def test_numpy_resize_under_a_live_optimizer_is_refused():
    run_isolated('''
        a, b = np.ones(8, np.float32), np.ones(4096, np.float32)
        opt = gs.Adam([a, b], lr=0.1)
        opt.step([np.ones(8, np.float32), np.ones(4096, np.float32)])
        snap = snapshot(opt)
        # The optimizer holds a weak reference to each buffer's owner, which
        # numpy's resize refuses even with refcheck=False: nothing dangles.
        with pytest.raises(ValueError, match="cannot resize"):
            b.resize(1 << 20, refcheck=False)
        assert_unchanged(opt, snap)
        opt.step([np.ones(8, np.float32), np.ones(4096, np.float32)])
        assert opt.step_count == 2
    ''')


def test_numpy_resize_of_a_views_owner_is_refused():
    run_isolated('''
        base = np.ones(4096, np.float32)
        opt = gs.SGD([base[16:32]], lr=1.0)
        with pytest.raises(ValueError, match="cannot resize"):
            base.resize(1 << 20, refcheck=False)
        opt.step([np.ones(16, np.float32)])
        assert np.array_equal(base[16:32], np.zeros(16, np.float32))
    ''')


def test_numpy_state_resize_is_refused():
    run_isolated('''
        a = np.ones(4096, np.float32)
        opt = gs.Adam([a], lr=0.1)
        snap = snapshot(opt)
        with pytest.raises(ValueError, match="cannot resize"):
            opt.state["exp_avg"][0].resize(1 << 20, refcheck=False)
        assert_unchanged(opt, snap)
    ''')


NUMPY_CHANGES = {
    "shape": ("b.shape = (2, 4)", "shape"),
    "dtype": ("b.dtype = np.int32", "dtype"),
    "read-only": ("b.flags.writeable = False", "read-only"),
}


@pytest.mark.parametrize("change", list(NUMPY_CHANGES))
def test_numpy_param_changed_in_place_is_detected(change):
    code, word = NUMPY_CHANGES[change]
    a, b = ones(), ones()
    opt = gs.Adam([a, b], lr=0.1)
    g = [ones(), ones()]
    opt.step(g)
    snap = snapshot(opt)
    a0, b0 = a.copy(), b.copy()
    exec(code)
    with pytest.raises(ValueError, match=rf"params\[1\].*{word}.*since the optimizer was built"):
        opt.step(g)
    assert np.array_equal(a, a0) and np.array_equal(b.view(np.float32).ravel(), b0)
    b.shape, b.dtype, b.flags.writeable = (8,), np.float32, True
    assert_unchanged(opt, snap)


def test_state_changed_in_place_is_detected():
    a = ones()
    opt = gs.Adam([a], lr=0.1)
    opt.state["exp_avg_sq"][0].flags.writeable = False
    snap = snapshot(opt)
    with pytest.raises(ValueError, match=r"exp_avg_sq'\[0\].*read-only"):
        opt.step([ones()])
    assert_unchanged(opt, snap)


def test_grad_resized_by_a_later_grads_conversion_is_detected():
    # grads[0] passes the fast path; converting grads[1] then reallocates it.
    g0 = np.ones(4096, np.float32)
    target = [g0]

    class Resizer:
        def __init__(self, a):
            self.a = a

        def __dlpack__(self, **kw):
            target[0].resize(1 << 20, refcheck=False)
            return self.a.__dlpack__(**kw)

        def __dlpack_device__(self):
            return self.a.__dlpack_device__()

    p = [np.ones(4096, np.float32), ones()]
    opt = gs.SGD(p, lr=1.0)
    snap = snapshot(opt)
    with pytest.raises(ValueError, match=r"grads\[0\].*changed"):
        opt.step([g0, Resizer(ones())])
    assert_unchanged(opt, snap)


# -- 2. no scratch shared between steps in flight --------------------------------


class SteppingGrad:
    """A grad whose DLPack export steps another optimizer first."""

    def __init__(self, a, during):
        self.a = a
        self.during = during

    def __dlpack__(self, **kw):
        self.during()
        return self.a.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


@pytest.mark.filterwarnings("ignore::gradstep.LearningRateWarning")  # lr=0.1 is 33x Lion's usual top
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_other_optimizer_stepped_during_grad_conversion(name):
    rng = np.random.default_rng(3)
    shapes = [(5,), (7,), (3, 4)]
    p0 = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    g = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    q0 = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    h = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    cls = getattr(gs, name)

    ref_p = [a.copy() for a in p0]
    ready(cls(ref_p, lr=0.1)).step(g)
    ref_q = [a.copy() for a in q0]
    ready(cls(ref_q, lr=0.1)).step(h)

    p = [a.copy() for a in p0]
    q = [a.copy() for a in q0]
    outer, inner = ready(cls(p, lr=0.1)), ready(cls(q, lr=0.1))
    outer.step([g[0], SteppingGrad(g[1], lambda: inner.step(h)), g[2]])
    for a, b in zip(p + q, ref_p + ref_q):
        assert a.tobytes() == b.tobytes()
    assert outer.step_count == inner.step_count == 1


def test_same_optimizer_stepped_during_its_grad_conversion_raises():
    run_isolated('''
        p = [np.ones(5, np.float32), np.ones(7, np.float32)]
        g = [np.full(5, 0.5, np.float32), np.full(7, 0.25, np.float32)]
        opt = gs.Adam(p, lr=0.1)
        caught = []

        class Reenter:
            def __init__(self, a, swallow):
                self.a, self.swallow = a, swallow
            def __dlpack__(self, **kw):
                try:
                    opt.step(g)
                except RuntimeError as e:
                    caught.append(str(e))
                    if not self.swallow:
                        raise
                return self.a.__dlpack__(**kw)
            def __dlpack_device__(self):
                return self.a.__dlpack_device__()

        # The callback lets the error through: the outer step fails, changes nothing.
        snap = snapshot(opt)
        with pytest.raises(RuntimeError, match="re-entered"):
            opt.step([g[0], Reenter(g[1], swallow=False)])
        assert_unchanged(opt, snap)
        # The callback swallows it: the outer step is exactly one step.
        opt.step([g[0], Reenter(g[1], swallow=True)])
        ref = [np.ones(5, np.float32), np.ones(7, np.float32)]
        gs.Adam(ref, lr=0.1).step(g)
        assert all(a.tobytes() == b.tobytes() for a, b in zip(p, ref))
        assert opt.step_count == 1
        assert len(caught) == 2 and all("re-entered" in m for m in caught)
    ''')


def test_raw_tensor_set_reentry_raises():
    p = [ones(5)]
    tensor_set = gs._core.TensorSet(p, [None], ["momentum_buffer"])
    tensor_set.set_options(gs._core.SgdOptions())
    tensor_set.set_lr(1.0)
    seen = []

    def again():
        with pytest.raises(RuntimeError, match="re-entered"):
            tensor_set.step([ones(5)], 1)
        seen.append(True)

    tensor_set.step([SteppingGrad(ones(5), again)], 1)
    assert seen == [True]
    assert np.array_equal(p[0], np.zeros(5, np.float32))


# -- 3. torch view bits ----------------------------------------------------------


def test_negative_view_grad_is_read_with_its_sign():
    w = np.zeros(4, np.float32)
    g = torch.arange(4, dtype=torch.float32)
    gs.SGD([w], lr=1.0).step([torch._neg_view(g)])
    assert np.array_equal(w, g.numpy())  # w - lr * (-g)


def test_zero_tensor_grad_is_read_as_zeros():
    w = np.ones(3, np.float32)
    gs.SGD([w], lr=1.0).step([torch._efficientzerotensor(3)])
    assert np.array_equal(w, np.ones(3, np.float32))


@pytest.mark.parametrize("make, word", [
    (lambda: torch._neg_view(torch.ones(4)), "negative"),
    (lambda: torch._efficientzerotensor(4), "ZeroTensor"),
    (lambda: torch.ones(4, dtype=torch.complex64).conj(), "conjugate"),
    (lambda: torch.ones(4, requires_grad=True), "requires grad"),
], ids=["neg", "zero", "conj", "requires_grad"])
def test_torch_view_bits_are_rejected_as_params_and_states(make, word):
    with pytest.raises((TypeError, ValueError), match=rf"params\[1\].*{word}"):
        gs.Adam([ones(4), make()])
    p, before = ones(4), ones(4)
    with pytest.raises((TypeError, ValueError), match=rf"exp_avg'\[0\].*{word}"):
        kernels.adam_step(p, ones(4), make(), np.zeros(4, np.float32), lr=0.1, step=1)
    assert np.array_equal(p, before)


def test_conjugate_grad_is_rejected_clearly():
    w = np.zeros(4, np.float32)
    with pytest.raises((TypeError, ValueError), match=r"grads\[0\].*conjugate"):
        gs.SGD([w], lr=1.0).step([torch.ones(4, dtype=torch.complex64).conj()])


# -- 4. objects numpy would copy --------------------------------------------------

COPIED = {
    "numpy scalar": lambda: np.float32(1),
    "0-d arithmetic": lambda: np.ones((), np.float32) + 1,
    "float": lambda: 1.0,
    "list": lambda: [1.0, 2.0],
    "read-only memoryview": lambda: memoryview(bytes(16)).cast("f"),
    "bytes": lambda: bytes(16),
    "array interface": lambda: type("AI", (), {"__array_interface__":
                                               np.ones(4, np.float32).__array_interface__})(),
}


@pytest.mark.parametrize("what", list(COPIED))
def test_objects_numpy_would_copy_are_rejected_as_params(what):
    with pytest.raises((TypeError, ValueError), match=r"params\[1\]"):
        gs.Adam([ones(), COPIED[what]()])


@pytest.mark.parametrize("what", ["numpy scalar", "float", "read-only memoryview"])
def test_objects_numpy_would_copy_are_rejected_as_kernel_states(what):
    p, before = ones(1), ones(1)
    with pytest.raises((TypeError, ValueError), match=r"exp_avg_sq'\[0\]"):
        kernels.adam_step(p, ones(1), np.zeros(1, np.float32), COPIED[what](), lr=0.1, step=1)
    with pytest.raises((TypeError, ValueError), match=r"params\[0\]"):
        kernels.sgd_step(COPIED[what](), ones(1), lr=0.1, step=1)
    assert np.array_equal(p, before)


def test_numpy_scalar_param_message_says_it_would_be_copied():
    with pytest.raises(TypeError, match=r"params\[0\].*scalar.*cop"):
        gs.SGD([np.float64(2.0)])


def test_writable_buffer_exporters_are_updated_in_place():
    import array
    buf = array.array("f", [1.0, 2.0, 3.0])
    raw = bytearray(np.ones(3, np.float64).tobytes())
    gs.SGD([buf, memoryview(raw).cast("d")], lr=1.0).step([ones(3), np.ones(3)])
    assert list(buf) == [0.0, 1.0, 2.0]
    assert np.array_equal(np.frombuffer(raw), np.zeros(3))


def test_scalar_grad_for_a_0d_param_is_accepted():
    w = np.zeros((), np.float32)
    gs.SGD([w], lr=1.0).step([np.float32(2.0)])
    assert w == -2.0


# -- 5. empty parameter lists ----------------------------------------------------


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_empty_parameter_list_is_rejected(name):
    with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
        getattr(gs, name)([])
    with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
        getattr(gs, name)(iter([]))


def test_empty_flatten_is_rejected():
    with pytest.raises(ValueError, match="empty"):
        gs.flatten([])


def test_empty_kernel_call_is_rejected():
    with pytest.raises(ValueError, match="empty"):
        kernels.sgd_step([], [], lr=0.1, step=1)


# -- odd views -------------------------------------------------------------------


def test_negative_strides_are_rejected():
    with pytest.raises(ValueError, match=r"params\[0\].*C-contiguous"):
        gs.SGD([ones()[::-1]])
    w = ones()
    with pytest.raises(ValueError, match=r"grads\[0\].*C-contiguous"):
        gs.SGD([w]).step([ones()[::-1]])


def test_byte_swapped_dtypes_are_rejected():
    swapped = np.ones(4, np.dtype(np.float32).newbyteorder())
    with pytest.raises(TypeError, match=r"params\[0\].*byte order"):
        gs.SGD([swapped])
    w = ones(4)
    with pytest.raises(TypeError, match=r"grads\[0\]"):
        gs.SGD([w]).step([swapped])
    assert np.array_equal(w, ones(4))


def test_read_only_memmap_view_is_rejected(tmp_path):
    path = tmp_path / "w.bin"
    np.ones(16, np.float32).tofile(path)
    mm = np.memmap(path, np.float32, mode="r")
    with pytest.raises(ValueError, match=r"params\[0\].*read-only"):
        gs.SGD([mm[4:8]])
    # A read-only memmap is fine as a grad.
    w = ones(4)
    gs.SGD([w], lr=1.0).step([mm[4:8]])
    assert np.array_equal(w, np.zeros(4, np.float32))
    del mm


def test_writable_memmap_param_is_updated_on_disk(tmp_path):
    path = tmp_path / "w.bin"
    np.ones(8, np.float32).tofile(path)
    mm = np.memmap(path, np.float32, mode="r+")
    gs.SGD([mm], lr=1.0).step([ones()])
    mm.flush()
    assert np.array_equal(np.fromfile(path, np.float32), np.zeros(8, np.float32))
    del mm


def test_masked_arrays_are_rejected():
    m = np.ma.masked_array(ones(4), mask=[0, 1, 0, 0])
    with pytest.raises(TypeError, match=r"params\[0\].*mask"):
        gs.SGD([m])
    w = ones(4)
    with pytest.raises(TypeError, match=r"grads\[0\].*mask"):
        gs.SGD([w]).step([m])
    assert np.array_equal(w, ones(4))
    with pytest.raises(TypeError, match=r"items\[0\].*mask"):
        gs.flatten([m])


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_matrix_subclass_is_updated_in_place():
    m = np.asmatrix(np.ones((2, 2), np.float32))
    gs.SGD([m], lr=1.0).step([np.asmatrix(np.ones((2, 2), np.float32))])
    assert np.array_equal(np.asarray(m), np.zeros((2, 2), np.float32))


def test_flatten_reads_torch_view_bits_with_their_values():
    g = torch.arange(3, dtype=torch.float32)
    flat = gs.flatten([torch._neg_view(g), torch._efficientzerotensor(2)])
    assert np.array_equal(flat.params[0], -g.numpy())
    assert np.array_equal(flat.params[1], np.zeros(2, np.float32))
