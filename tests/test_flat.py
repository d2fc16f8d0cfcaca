"""gs.flatten: one aligned allocation for many tensors, and optimizers stepping it as one vector."""

from __future__ import annotations

import numpy as np
import pytest

import gradstep as gs

SHAPES = [(3, 5), (7,), (1,), (129, 3), (), (0,), (2, 2, 17)]

OPTIMIZERS = [
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1)),
    ("Adagrad", dict(lr=0.05, initial_accumulator_value=0.1, weight_decay=0.05)),
    ("Adadelta", dict(weight_decay=0.05)),
    ("RMSprop", dict(momentum=0.5, centered=True, weight_decay=0.05, maximize=True)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.05)),
    ("AdamW", dict(lr=0.01)),
    ("Lamb", dict(lr=0.01, caution=True)),  # per-tensor trust ratios and caution means
    ("Lion", dict(lr=1e-3, weight_decay=0.1, decoupled_weight_decay=True)),
    ("Adafactor", dict(lr=0.01, weight_decay=0.1)),  # per tensor, row_var/col_var per matrix view
]


def arrays(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def test_params_are_aligned_views_holding_copies():
    src = arrays()
    flat = gs.flatten(src)
    assert len(flat) == len(SHAPES) and flat.dtype == np.float32
    for view, original in zip(flat.params, src):
        assert view.shape == original.shape and np.array_equal(view, original)
        assert np.shares_memory(view, flat.param_buffer) or view.size == 0
        assert view.ctypes.data % 64 == 0
        assert view.flags.c_contiguous and view.flags.writeable
    for grad, shape in zip(flat.grads, SHAPES):
        assert grad.shape == shape and not grad.any()
        assert np.shares_memory(grad, flat.grad_buffer) or grad.size == 0
    # Copies: the originals are not part of the layout.
    src[0][...] = 99
    assert not (flat.params[0] == 99).any()
    assert flat.param_buffer.ctypes.data % 64 == 0 and flat.param_buffer.ndim == 1


def test_shapes_dtypes_and_errors():
    flat = gs.flatten([(2, 3), 4, ()], dtype=np.float64)
    assert [p.shape for p in flat.params] == [(2, 3), (4,), ()]
    assert flat.dtype == np.float64 and not flat.param_buffer.any()
    assert gs.flatten([(2,)]).dtype == np.float32
    assert gs.flatten(arrays(np.float64)).dtype == np.float64
    converted = gs.flatten(arrays(np.float64), dtype=np.float32)
    assert converted.params[0].dtype == np.float32
    with pytest.raises(TypeError, match="different dtypes"):
        gs.flatten([np.zeros(2, np.float32), np.zeros(2, np.float64)])
    with pytest.raises(TypeError, match="float32 or float64"):
        gs.flatten([(2,)], dtype=np.float16)
    with pytest.raises(TypeError, match="float array or a shape"):
        gs.flatten([np.zeros(3, np.int64)])
    with pytest.raises(ValueError, match="negative"):
        gs.flatten([(2, -1)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, opts", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_flat_optimizer_matches_per_tensor_optimizer_bitwise(name, opts, dtype):
    rng = np.random.default_rng(1)
    separate = arrays(dtype)
    flat = gs.flatten(arrays(dtype))
    a = getattr(gs, name)(separate, **opts)
    b = getattr(gs, name)(flat, **opts)
    for k in range(5):
        grads = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        a.step(grads)
        for dst, src in zip(flat.grads, grads):
            np.copyto(dst, src)
        # The flat path (no argument, or flat.grads itself) and the per-view
        # path (any other list of grads) update the same buffers.
        if k == 0:
            b.step()
        elif k == 1:
            b.step(flat.grads)
        else:
            b.step([g.copy() for g in grads])
    for x, y in zip(separate, flat.params):
        assert x.tobytes() == y.tobytes()
    for key in a.state:
        for x, y in zip(a.state[key], b.state[key]):
            assert x.tobytes() == y.tobytes()
    assert b.step_count == 5


@pytest.mark.parametrize("name, opts", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_padding_stays_zero(name, opts):
    flat = gs.flatten(arrays())
    opt = getattr(gs, name)(flat, **opts)
    rng = np.random.default_rng(2)
    for _ in range(3):
        for g in flat.grads:
            g[...] = rng.standard_normal(g.shape)
        opt.step()
    used = np.zeros(flat.size, bool)
    for view, offset in zip(flat.params, flat.offsets):
        used[offset:offset + view.size] = True
    assert not flat.param_buffer[~used].any()
    assert np.isfinite(flat.param_buffer).all()


def test_states_are_flat_too_and_checkpoint_round_trip(tmp_path):
    # No 0-d tensor here: gs.save/gs.load store those as shape (1,).
    flat = gs.flatten([a for a in arrays() if a.ndim])
    opt = gs.Adam(flat, lr=0.01)
    for g in flat.grads:
        g[...] = 0.5
    opt.step()
    # Each state is one allocation laid out like the params.
    for views in opt.state.values():
        base = views[0].base
        assert all(v.base is base for v in views if v.size)
    sd = opt.state_dict()
    gs.save(opt, tmp_path / "opt.npz")

    flat2 = gs.flatten([p.copy() for p in flat.params])
    restored = gs.load(tmp_path / "opt.npz", flat2)
    assert restored.step_count == 1
    for key in sd["state"]:
        for x, y in zip(sd["state"][key], restored.state[key]):
            assert np.array_equal(x, y)
    for g in flat2.grads:
        g[...] = 0.5
    opt.step()
    restored.step()
    for x, y in zip(flat.params, flat2.params):
        assert x.tobytes() == y.tobytes()


def test_step_without_grads_needs_flat_buffers():
    opt = gs.SGD([np.zeros(3)], lr=0.1)
    with pytest.raises(TypeError, match="needs grads"):
        opt.step()
    assert opt.step_count == 0
