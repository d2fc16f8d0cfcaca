"""skip_nonfinite and max_grad_norm: skipped steps change nothing; clipping equals
torch.nn.utils.clip_grad_norm_ followed by the torch step."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import gradstep as gs

from conftest import CASES, case_id, make_problem, reference_optimizer


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("case", CASES[::5], ids=case_id)
def test_nonfinite_step_is_skipped_and_changes_nothing(case, bad):
    name, lr, opts = case
    params, grads = make_problem(np.float32, 4, seed=2)
    opt = getattr(gs, name)(params, lr=lr, skip_nonfinite=True, **opts)
    for g in grads[:2]:
        assert not opt.step(g).found_inf
    before = [p.copy() for p in params], {k: [a.copy() for a in v] for k, v in opt.state.items()}
    poisoned = [g.copy() for g in grads[2]]
    poisoned[2].flat[poisoned[2].size // 2] = bad
    result = opt.step(poisoned)
    assert result.found_inf and result.skipped
    assert opt.step_count == 2
    for a, b in zip(params, before[0]):
        assert a.tobytes() == b.tobytes()
    for k, arrays in opt.state.items():
        for a, b in zip(arrays, before[1][k]):
            assert a.tobytes() == b.tobytes()
    result = opt.step(grads[3])
    assert not result.found_inf and not result.skipped and opt.step_count == 3


def test_without_skip_nonfinite_torchs_behaviour_is_kept():
    w = np.ones(3)
    opt = gs.SGD([w], lr=0.1)
    result = opt.step([np.array([1.0, math.nan, 1.0])])
    assert not result.skipped and opt.step_count == 1
    assert np.isnan(w[1]) and w[0] == 0.9


TORCH_OPTS = {"AdamW": dict(weight_decay=1e-2)}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES[::4], ids=case_id)
def test_clipping_matches_torch_clip_grad_norm(case, dtype):
    name, lr, opts = case
    params, grads = make_problem(dtype, 30, seed=4)
    # Scale some steps' grads up so clipping engages on those and not others.
    grads = [[g * (6.0 if k % 3 == 0 else 0.05) for g in step] for k, step in enumerate(grads)]
    max_norm = 3.0
    tensors = [torch.tensor(p).requires_grad_() for p in params]
    topt = reference_optimizer(name, tensors, lr=lr, **opts)
    mine = [p.copy() for p in params]
    opt = getattr(gs, name)(mine, lr=lr, max_grad_norm=max_norm, **opts)
    clipped_some = unclipped_some = False
    for step_grads in grads:
        for t, g in zip(tensors, step_grads):
            t.grad = torch.tensor(g)
        total = torch.nn.utils.clip_grad_norm_(tensors, max_norm, foreach=False).item()
        topt.step()
        result = opt.step(step_grads)
        assert result.grad_norm == pytest.approx(total, rel=1e-12 if dtype == np.float64 else 1e-5)
        clipped_some |= total > max_norm
        unclipped_some |= total < max_norm
    assert clipped_some and unclipped_some
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-5)
    for got, t in zip(mine, tensors):
        np.testing.assert_allclose(got, t.detach().numpy(), **tol)


def test_clipping_and_norm_are_bit_identical_across_isas():
    results = set()
    before = gs.isa()
    for isa in gs.available_isas():
        gs.set_isa(isa)
        try:
            params, grads = make_problem(np.float32, 6, seed=8, shapes=[(1,), (17,), (40_000,), (3, 77)])
            opt = gs.Adam(params, lr=1e-2, max_grad_norm=1.0, skip_nonfinite=True)
            norms = [opt.step(g).grad_norm for g in grads]
            results.add((tuple(norms), b"".join(p.tobytes() for p in params)))
        finally:
            gs.set_isa(before)
    assert len(results) == 1


@pytest.mark.parametrize("value", [0.0, -1.0, math.nan, math.inf])
def test_bad_max_grad_norm_is_rejected(value):
    with pytest.raises(ValueError, match="max_grad_norm"):
        gs.SGD([np.zeros(2)], max_grad_norm=value)


def test_safeguards_survive_a_checkpoint(tmp_path):
    w = np.ones(4)
    opt = gs.RMSprop([w], lr=1e-2, skip_nonfinite=True, max_grad_norm=0.5)
    opt.step([np.ones(4)])
    gs.save(opt, tmp_path / "c.npz")
    loaded = gs.load(tmp_path / "c.npz", [w.copy()])
    assert loaded.skip_nonfinite and loaded.max_grad_norm == 0.5
