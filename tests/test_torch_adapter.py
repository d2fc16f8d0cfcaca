"""gradstep.torch: real torch.optim optimizers whose step is gradstep's."""

from __future__ import annotations

import copy
import inspect
import re

import numpy as np
import pytest
import torch

import gradstep.torch as gt
from gradstep.torch import _HALF_OPTIONS as HALF_OPTIONS

from conftest import reference_optimizer

TWINS = {
    "SGD": dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "Adagrad": dict(lr=0.05, lr_decay=1e-3, initial_accumulator_value=0.1),
    "Adadelta": dict(lr=1.0, rho=0.9),
    "RMSprop": dict(lr=1e-2, momentum=0.5, centered=True),
    "Adam": dict(lr=1e-2, amsgrad=True, weight_decay=1e-3),
    "AdamW": dict(lr=1e-2, weight_decay=0.05),
    "NAdam": dict(lr=1e-2, weight_decay=1e-3, momentum_decay=0.1),
    "RAdam": dict(lr=1e-2, weight_decay=1e-2, decoupled_weight_decay=True),
    "Adamax": dict(lr=1e-2, weight_decay=1e-3),
    "Adafactor": dict(lr=1e-2, weight_decay=1e-2, eps=(1e-20, 1e-3)),
}
# Optimizers torch.optim has not: gradstep.torch.X mirrors the declared reference
# (lion_pytorch.Lion), and is compared with it wherever the test is not about torch.optim.
PACKAGE_REFERENCES = {
    "Lion": dict(lr=1e-3, weight_decay=0.1),
}
ALL = {**TWINS, **PACKAGE_REFERENCES}


def mlp(dtype, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(10, 32), torch.nn.Tanh(), torch.nn.Linear(32, 16), torch.nn.Tanh(),
        torch.nn.Linear(16, 3),
    ).to(dtype)


def data(dtype, steps=50, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(24, 10, generator=g, dtype=dtype), torch.randint(0, 3, (24,), generator=g))
            for _ in range(steps)]


def train(model, opt, batches, scheduler=None):
    for x, y in batches:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
    return model


def assert_models_close(a, b, dtype):
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    for pa, pb in zip(a.parameters(), b.parameters()):
        np.testing.assert_allclose(pa.detach().numpy(), pb.detach().numpy(), **tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", list(ALL))
def test_mlp_training_matches_torch(name, dtype):
    ours, theirs = mlp(dtype), mlp(dtype)
    batches = data(dtype)
    opt = getattr(gt, name)(ours.parameters(), **ALL[name])
    assert isinstance(opt, torch.optim.Optimizer)
    if name in TWINS:
        assert isinstance(opt, getattr(torch.optim, name))
    train(ours, opt, batches)
    train(theirs, reference_optimizer(name, theirs.parameters(), **ALL[name]), batches)
    assert_models_close(ours, theirs, dtype)


@pytest.mark.parametrize("name", list(ALL))
def test_state_dict_moves_both_ways(name):
    batches = data(torch.float64, steps=30)
    straight = mlp(torch.float64)
    train(straight, reference_optimizer(name, straight.parameters(), **ALL[name]), batches)

    # torch (the reference) for 10 steps -> gradstep for 10 -> torch for 10.
    model = mlp(torch.float64)
    first = reference_optimizer(name, model.parameters(), **ALL[name])
    train(model, first, batches[:10])
    second = getattr(gt, name)(model.parameters(), **ALL[name])
    second.load_state_dict(copy.deepcopy(first.state_dict()))
    train(model, second, batches[10:20])
    third = reference_optimizer(name, model.parameters(), **ALL[name])
    third.load_state_dict(copy.deepcopy(second.state_dict()))
    train(model, third, batches[20:])
    assert_models_close(model, straight, torch.float64)
    assert second.state_dict()["state"].keys() == first.state_dict()["state"].keys()


def test_param_groups_keep_their_own_hyperparameters():
    def groups(model):
        return [{"params": model[0].parameters(), "lr": 0.1, "betas": (0.5, 0.9)},
                {"params": model[2].parameters(), "weight_decay": 0.1},
                {"params": model[4].parameters(), "amsgrad": True, "eps": 1e-3}]

    ours, theirs = mlp(torch.float64), mlp(torch.float64)
    batches = data(torch.float64, steps=20)
    train(ours, gt.Adam(groups(ours), lr=1e-2), batches)
    train(theirs, torch.optim.Adam(groups(theirs), lr=1e-2, foreach=False), batches)
    assert_models_close(ours, theirs, torch.float64)


def test_torch_schedulers_drive_the_adapter():
    ours, theirs = mlp(torch.float64), mlp(torch.float64)
    batches = data(torch.float64, steps=40)
    o1 = gt.SGD(ours.parameters(), lr=0.1, momentum=0.9)
    o2 = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9, foreach=False)
    train(ours, o1, batches, torch.optim.lr_scheduler.OneCycleLR(o1, max_lr=0.5, total_steps=40))
    train(theirs, o2, batches, torch.optim.lr_scheduler.OneCycleLR(o2, max_lr=0.5, total_steps=40))
    assert_models_close(ours, theirs, torch.float64)
    assert o1.param_groups[0]["lr"] == o2.param_groups[0]["lr"]


def test_callable_lr_is_evaluated_at_each_step():
    ours, theirs = mlp(torch.float64), mlp(torch.float64)
    batches = data(torch.float64, steps=25)
    train(ours, gt.Adam(ours.parameters(), lr=lambda k: 0.01 * 0.9**k), batches)
    o2 = torch.optim.Adam(theirs.parameters(), lr=0.01, foreach=False)
    train(theirs, o2, batches, torch.optim.lr_scheduler.ExponentialLR(o2, gamma=0.9))
    assert_models_close(ours, theirs, torch.float64)


def test_params_without_grads_are_skipped_as_torch_does():
    ours, theirs = mlp(torch.float64), mlp(torch.float64)
    o1 = gt.Adam(ours.parameters(), lr=1e-2)
    o2 = torch.optim.Adam(theirs.parameters(), lr=1e-2, foreach=False)
    for step, (x, y) in enumerate(data(torch.float64, steps=12)):
        for model, opt in ((ours, o1), (theirs, o2)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            if step % 3 == 0:  # freeze the first layer now and then: its step count lags
                for p in model[0].parameters():
                    p.grad = None
            opt.step()
    assert_models_close(ours, theirs, torch.float64)
    steps = [o1.state[p]["step"].item() for p in ours.parameters()]
    assert steps[0] == 8 and steps[-1] == 12


def test_closure_is_called_and_its_loss_returned():
    model = mlp(torch.float64)
    opt = gt.AdamW(model.parameters())
    x, y = data(torch.float64, steps=1)[0]

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor) and loss.item() > 0
    assert all(opt.state[p]["step"].item() == 1 for p in model.parameters())


def test_unsupported_tensors_get_clear_errors():
    with pytest.raises(TypeError, match="CPU"):
        gt.Adam([torch.nn.Parameter(torch.zeros(3, device="meta"))])
    with pytest.raises(TypeError, match="float32, float64, bfloat16 and float16"):
        gt.Adam([torch.nn.Parameter(torch.zeros(3, dtype=torch.complex64))])
    p = torch.nn.Parameter(torch.zeros(4))
    opt = gt.SGD([p], lr=0.1)
    p.grad = torch.zeros(4).to_sparse()
    with pytest.raises(TypeError, match="sparse"):
        opt.step()
    assert torch.equal(p.detach(), torch.zeros(4))


# -- all-or-nothing validation ---------------------------------------------

def snapshot(opt):
    """Everything a step may change: params, state tensors and steps, param_groups."""
    params = [p.detach().clone() for g in opt.param_groups for p in g["params"]]
    state = {id(p): {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in s.items()}
             for p, s in opt.state.items()}
    groups = [{k: (list(v) if k == "params" else v) for k, v in g.items()} for g in opt.param_groups]
    return params, state, groups


def assert_unchanged(opt, before):
    params, state, groups = snapshot(opt)
    assert len(params) == len(before[0]) and all(torch.equal(a, b) for a, b in zip(params, before[0]))
    assert state.keys() == before[1].keys()
    for key, s in state.items():
        assert s.keys() == before[1][key].keys()
        for name, v in s.items():
            old = before[1][key][name]
            assert torch.equal(v, old) if isinstance(v, torch.Tensor) else v == old
    assert len(groups) == len(before[2])
    for g, old in zip(groups, before[2]):
        assert g.keys() == old.keys()
        assert all(a is b for a, b in zip(g["params"], old["params"]))


def two_groups(name="Adam", **kwargs):
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(s, dtype=torch.float64)) for s in [(4,), (3, 2), (5,), (2, 2)]]
    opt = getattr(gt, name)([{"params": ps[:2]}, {"params": ps[2:]}], lr=0.1, **kwargs)
    return ps, opt


def set_grads(ps):
    for p in ps:
        p.grad = torch.randn_like(p)


def corrupt(ps, opt, how):
    bad = ps[3]
    if how == "sparse grad":
        bad.grad = torch.randn_like(bad).to_sparse()
    elif how == "float16 grad":
        bad.grad.data = bad.grad.data.half()
    elif how == "grad shape":
        bad.grad.data = torch.zeros(7, dtype=bad.dtype)
    elif how == "complex param":  # (bf16/f16 params are supported: test_torch_half.py)
        bad.data = bad.data.to(torch.complex64)
        bad.grad = None
        bad.grad = torch.zeros_like(bad)
    elif how == "negative lr":
        opt.param_groups[1]["lr"] = -1.0
    elif how == "bad betas":
        opt.param_groups[1]["betas"] = (1.5, 0.9)
    elif how == "capturable":
        opt.param_groups[1]["capturable"] = True
    elif how == "state shape":
        opt.state[bad]["exp_avg"] = torch.zeros(9, dtype=bad.dtype)
    elif how == "state dtype":
        opt.state[bad]["exp_avg_sq"] = opt.state[bad]["exp_avg_sq"].float()
    elif how == "grad aliasing its param":  # refused by the C++ set: group 0 must not step either
        bad.grad = bad.detach()
    elif how == "state aliased as grad":
        bad.grad = opt.state[bad]["exp_avg"]


BAD_INPUTS = ["sparse grad", "float16 grad", "grad shape", "complex param", "negative lr",
              "bad betas", "capturable", "state shape", "state dtype", "grad aliasing its param",
              "state aliased as grad"]


@pytest.mark.parametrize("warm", [False, True], ids=["fresh", "warm"])
@pytest.mark.parametrize("how", BAD_INPUTS)
def test_bad_input_in_a_later_group_changes_nothing(how, warm):
    ps, opt = two_groups()
    set_grads(ps)
    if warm or how.startswith("state"):
        opt.step()
        set_grads(ps)
    corrupt(ps, opt, how)
    before = snapshot(opt)
    where = "param_groups[1]" if how in ("negative lr", "bad betas", "capturable") else \
        "param_groups[1]['params'][1]"
    with pytest.raises((TypeError, ValueError, NotImplementedError), match=re.escape(where)):
        opt.step()
    assert_unchanged(opt, before)


def test_sparse_grad_in_group_one_leaves_group_zero_and_its_steps_alone():
    ps, opt = two_groups("SGD", momentum=0.9)
    set_grads(ps)
    opt.step()
    set_grads(ps)
    ps[2].grad = ps[2].grad.to_sparse()
    before = snapshot(opt)
    with pytest.raises(TypeError, match=r"param_groups\[1\]\['params'\]\[0\]: .*sparse"):
        opt.step()
    assert_unchanged(opt, before)


@pytest.mark.parametrize("how", ["complex param", "duplicate param", "param in another group",
                                 "negative lr", "bad eps", "capturable", "meta param",
                                 "overlapping param"])
def test_failing_add_param_group_changes_nothing(how):
    ps, opt = two_groups()
    set_grads(ps)
    opt.step()
    new = torch.nn.Parameter(torch.randn(3, dtype=torch.float64))
    group = {"params": [new]}
    if how == "complex param":
        group["params"] = [new, torch.nn.Parameter(torch.zeros(2, dtype=torch.complex64))]
    elif how == "duplicate param":
        group["params"] = [new, new]
    elif how == "param in another group":
        group["params"] = [new, ps[0]]
    elif how == "negative lr":
        group["lr"] = -0.1
    elif how == "bad eps":
        group["eps"] = -1.0
    elif how == "capturable":
        group["capturable"] = True
    elif how == "meta param":
        group["params"] = [new, torch.nn.Parameter(torch.zeros(2, device="meta"))]
    elif how == "overlapping param":
        group["params"] = [new, torch.nn.Parameter(torch.zeros(3, 1, dtype=torch.float64).expand(3, 4))]
    before = snapshot(opt)
    with pytest.raises((TypeError, ValueError, NotImplementedError), match=re.escape("param_groups[2]")):
        opt.add_param_group(group)
    assert_unchanged(opt, before)
    opt.step()  # the optimizer still works


@pytest.mark.parametrize("how", ["complex param", "overlapping param", "meta param"])
def test_construction_errors_name_the_param(how):
    bad = {"complex param": torch.zeros(2, dtype=torch.complex64),
           "overlapping param": torch.zeros(3, 1).expand(3, 4),
           "meta param": torch.zeros(2, device="meta")}[how]
    good = [torch.nn.Parameter(torch.zeros(2)) for _ in range(3)]
    with pytest.raises((TypeError, ValueError), match=re.escape("param_groups[1]['params'][1]:")):
        gt.Adam([{"params": good[:1]}, {"params": [good[1], torch.nn.Parameter(bad), good[2]]}])


# -- dense params in any layout --------------------------------------------

def layout_params(seed=0):
    torch.manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(8, 3, 5, 5, dtype=torch.float64)
                               .to(memory_format=torch.channels_last)),
            torch.nn.Parameter(torch.randn(5, 7, dtype=torch.float64).t()),
            torch.nn.Parameter(torch.randn(4, 1, 6, dtype=torch.float64).permute(2, 1, 0)),
            torch.nn.Parameter(torch.randn((), dtype=torch.float64)),
            torch.nn.Parameter(torch.randn(0, 3, dtype=torch.float64))]


@pytest.mark.parametrize("grads", ["param strides", "contiguous", "other strides"])
@pytest.mark.parametrize("name", list(ALL))
def test_dense_layouts_step_as_torch_does(name, grads):
    ours, theirs = layout_params(), layout_params()
    if name == "Adafactor":  # torch.optim.Adafactor divides by numel: an empty param raises ZeroDivisionError
        ours, theirs = ours[:-1], theirs[:-1]
    assert not ours[0].is_contiguous() and not ours[1].is_contiguous()
    o1 = getattr(gt, name)(ours, **ALL[name])
    o2 = reference_optimizer(name, theirs, **ALL[name])
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        for a, b in zip(ours, theirs):
            grad = torch.randn(a.shape, generator=g, dtype=a.dtype)
            if grads == "param strides":
                grad = _like_layout(grad, a)
            elif grads == "other strides" and grad.dim() >= 2:
                grad = grad.transpose(0, -1).contiguous().transpose(0, -1)
            a.grad, b.grad = grad.clone(), grad.clone()
        o1.step()
        o2.step()
    for a, b in zip(ours, theirs):
        assert a.stride() == b.stride()
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for a, b in zip(ours, theirs):
        for key, value in o2.state[b].items():
            torch.testing.assert_close(o1.state[a][key], value, rtol=1e-10, atol=1e-12)


def _like_layout(t, p):
    return torch.empty_like(p).copy_(t)


def test_checkpoint_states_in_another_layout_are_laid_out_as_the_param():
    ours, theirs = layout_params(), layout_params()
    o1, o2 = gt.Adam(ours, lr=0.01), torch.optim.Adam(theirs, lr=0.01, foreach=False)
    for a, b in zip(ours, theirs):
        a.grad, b.grad = torch.ones_like(a), torch.ones_like(b)
    o1.step(), o2.step()
    sd = copy.deepcopy(o2.state_dict())
    for s in sd["state"].values():  # contiguous copies, as a checkpoint may hold them
        s["exp_avg"] = s["exp_avg"].contiguous()
    o1.load_state_dict(copy.deepcopy(sd))  # load_state_dict keeps the tensors it is given
    o2.load_state_dict(copy.deepcopy(sd))
    for _ in range(3):
        for a, b in zip(ours, theirs):
            a.grad, b.grad = torch.full_like(a, 0.5), torch.full_like(b, 0.5)
        o1.step(), o2.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(o1.state[a]["exp_avg"], o2.state[b]["exp_avg"], rtol=1e-10,
                                   atol=1e-12)


def test_overlapping_param_is_refused_at_construction():
    p = torch.nn.Parameter(torch.zeros(3, 1, dtype=torch.float64).expand(3, 4))
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[1\]: must be dense"):
        gt.SGD([torch.nn.Parameter(torch.zeros(2)), p], lr=0.1)
    q = torch.nn.Parameter(torch.zeros(10, dtype=torch.float64)[::2])  # dense? no: gaps
    with pytest.raises(ValueError, match=r"\['params'\]\[0\]: must be dense"):
        gt.SGD([q], lr=0.1)


# -- storage replaced under the optimizer ----------------------------------

def _resize(t, *shape):
    requires_grad = t.requires_grad
    t.requires_grad_(False)  # torch resizes no tensor that requires grad
    t.resize_(*shape)
    t.requires_grad_(requires_grad)


def replace_storage(opt, p, how, seed):
    g = torch.Generator().manual_seed(seed)
    fresh = torch.randn(p.shape, generator=g, dtype=p.dtype)
    state = opt.state[p]
    if how == "param .data":
        p.data = fresh
    elif how == "param set_":
        with torch.no_grad():
            p.set_(fresh)
    elif how == "param set_ transposed":  # same shape, other strides, new storage
        with torch.no_grad():
            p.set_(fresh.t().contiguous().t())
    elif how == "param new shape":
        p.data = torch.randn(6, generator=g, dtype=p.dtype)
    elif how == "param resize_ smaller":  # same storage, another shape
        _resize(p, 2, 3)
    elif how == "state replaced":
        state["exp_avg"] = fresh
    elif how == "state set_":
        state["exp_avg"].set_(fresh)
    elif how == "state transposed":
        state["exp_avg"] = fresh.t().contiguous().t()


def test_storage_gradstep_views_cannot_be_reallocated():
    # torch refuses to reallocate a storage that .numpy() has viewed, so
    # growing a stepped param or state raises instead of freeing what the
    # TensorSet views; the optimizer goes on as before.
    p = torch.nn.Parameter(torch.randn(3, 4, dtype=torch.float64))
    opt = gt.Adam([p], lr=0.1)
    p.grad = torch.randn_like(p)
    opt.step()
    before = snapshot(opt)
    for t in (p, opt.state[p]["exp_avg"]):
        with pytest.raises(RuntimeError, match="not resizable"):
            t.untyped_storage().resize_(t.untyped_storage().nbytes() * 4)
    assert_unchanged(opt, before)
    opt.step()


REPLACEMENTS = ["param .data", "param set_", "param set_ transposed", "param new shape",
                "param resize_ smaller", "state replaced", "state set_", "state transposed"]


@pytest.mark.parametrize("name,how", [("Adam", h) for h in REPLACEMENTS]
                         + [("SGD", h) for h in REPLACEMENTS if h.startswith("param")])
def test_replaced_storage_is_stepped_as_torch_steps_it(how, name):
    kwargs = dict(lr=0.05) if name == "SGD" else dict(lr=0.05, amsgrad=True)

    def make():
        torch.manual_seed(0)
        return [torch.nn.Parameter(torch.randn(s, dtype=torch.float64)) for s in [(5,), (3, 4)]]

    ours, theirs = make(), make()
    o1, o2 = getattr(gt, name)(ours, **kwargs), getattr(torch.optim, name)(theirs, foreach=False, **kwargs)
    g = torch.Generator().manual_seed(1)
    for step in range(5):
        if step == 2:
            replace_storage(o1, ours[1], how, seed=7)
            replace_storage(o2, theirs[1], how, seed=7)
        for a, b in zip(ours, theirs):
            grad = torch.randn(a.shape, generator=g, dtype=a.dtype)
            a.grad, b.grad = grad.clone(), grad.clone()
        if step >= 2 and name == "Adam" and how in ("param new shape", "param resize_ smaller"):
            before = snapshot(o1)  # the states no longer fit the param
            with pytest.raises(ValueError, match=re.escape("param_groups[0]['params'][1]: state")):
                o1.step()
            assert_unchanged(o1, before)
            with pytest.raises(RuntimeError):
                o2.step()
            return
        o1.step()
        o2.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        for key, value in o2.state[b].items():
            torch.testing.assert_close(o1.state[a][key], value, rtol=1e-10, atol=1e-12)


# -- torch 2.13's constructor arguments ------------------------------------

@pytest.mark.parametrize("name", list(ALL))
def test_constructor_signature_is_torchs(name):
    ours = inspect.signature(getattr(gt, name).__init__).parameters
    theirs = inspect.signature(type(reference_optimizer(name, [torch.zeros(1, requires_grad=True)])).__init__).parameters
    # torch's, then gradstep's keyword-only half-precision options (test_torch_half.py)
    half = [(k, inspect.Parameter.KEYWORD_ONLY, v) for k, v in HALF_OPTIONS.items()]
    assert [(p.name, p.kind, p.default) for p in ours.values()] == \
        [(p.name, p.kind, p.default) for p in theirs.values()] + half


def test_sgd_without_momentum_keeps_no_state_as_torch():
    for momentum in (0.0, 0.9):
        ours, theirs = mlp(torch.float64), mlp(torch.float64)
        o1 = gt.SGD(ours.parameters(), lr=0.1, momentum=momentum)
        o2 = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=momentum)
        batches = data(torch.float64, steps=3)
        train(ours, o1, batches), train(theirs, o2, batches)
        assert_state_dicts_equal(o1.state_dict(), o2.state_dict())


def assert_state_dicts_equal(a, b):
    # gradstep's groups: torch's keys and gradstep's half-precision options
    assert [{k: v for k, v in g.items() if k not in HALF_OPTIONS} for g in a["param_groups"]] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for key, s in a["state"].items():
        assert s.keys() == b["state"][key].keys()
        for name, v in s.items():
            assert v.dtype == b["state"][key][name].dtype
            torch.testing.assert_close(v, b["state"][key][name], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_decoupled_weight_decay_is_adamw(amsgrad):
    ours, theirs = mlp(torch.float64), mlp(torch.float64)
    batches = data(torch.float64, steps=10)
    o1 = gt.Adam(ours.parameters(), lr=1e-2, weight_decay=0.1, amsgrad=amsgrad, decoupled_weight_decay=True)
    o2 = torch.optim.AdamW(theirs.parameters(), lr=1e-2, weight_decay=0.1, amsgrad=amsgrad, foreach=False)
    train(ours, o1, batches), train(theirs, o2, batches)
    assert_models_close(ours, theirs, torch.float64)
    assert o1.param_groups[0]["decoupled_weight_decay"] is True


@pytest.mark.parametrize("flags", [dict(foreach=True), dict(foreach=False), dict(fused=True),
                                   dict(fused=False)])
@pytest.mark.parametrize("name", list(TWINS))
def test_foreach_and_fused_are_accepted_and_stored(name, flags):
    if "fused" in flags and "fused" not in inspect.signature(getattr(torch.optim, name)).parameters:
        with pytest.raises(TypeError):
            getattr(gt, name)(mlp(torch.float64).parameters(), **flags)
        return
    ours, theirs = mlp(torch.float64), mlp(torch.float64)
    batches = data(torch.float64, steps=5)
    o1 = getattr(gt, name)(ours.parameters(), **TWINS[name], **flags)
    o2 = getattr(torch.optim, name)(theirs.parameters(), **TWINS[name], **flags)
    train(ours, o1, batches), train(theirs, o2, batches)
    assert_models_close(ours, theirs, torch.float64)
    assert_state_dicts_equal(o1.state_dict(), o2.state_dict())


@pytest.mark.parametrize("flag", ["capturable", "differentiable"])
@pytest.mark.parametrize("name", list(TWINS))
def test_capturable_and_differentiable_are_refused_clearly(name, flag):
    if flag not in inspect.signature(getattr(torch.optim, name)).parameters:
        return
    p = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(NotImplementedError, match=f"gradstep.torch does not support {flag}=True"):
        getattr(gt, name)([p], **{flag: True})
    opt = getattr(gt, name)([p])
    with pytest.raises(NotImplementedError, match=re.escape(f"param_groups[1]: gradstep.torch does not support {flag}")):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], flag: True})
    assert len(opt.param_groups) == 1


def tensor_hyperparameters(name, as_tensors):
    kwargs = {**TWINS[name], "lr": torch.tensor(0.01)}
    if name in ("Adam", "AdamW"):
        kwargs["betas"] = (torch.tensor(0.8), torch.tensor(0.99))
    if not as_tensors:
        kwargs = {k: (v.item() if isinstance(v, torch.Tensor) else
                      tuple(b.item() for b in v) if k == "betas" else v) for k, v in kwargs.items()}
    return kwargs


@pytest.mark.parametrize("name", list(TWINS))
def test_tensor_lr_and_tensor_betas_follow_a_scheduler_as_torch(name):
    # gradstep reads a tensor lr's value and steps in float64. torch's Adam and
    # Adagrad divide a float32 tensor lr by their bias corrections in float32,
    # so the exact twin is torch with the same values as floats; torch with the
    # tensors agrees to float32 rounding.
    ours, exact, rounded = mlp(torch.float64), mlp(torch.float64), mlp(torch.float64)
    o1 = getattr(gt, name)(ours.parameters(), **tensor_hyperparameters(name, True))
    o2 = getattr(torch.optim, name)(exact.parameters(), foreach=False,
                                    **tensor_hyperparameters(name, False))
    o3 = getattr(torch.optim, name)(rounded.parameters(), foreach=False,
                                    **tensor_hyperparameters(name, True))
    batches = data(torch.float64, steps=8)
    for model, opt in ((ours, o1), (exact, o2), (rounded, o3)):
        train(model, opt, batches, torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5))
    assert_models_close(ours, exact, torch.float64)
    for a, b in zip(ours.parameters(), rounded.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert isinstance(o1.param_groups[0]["lr"], torch.Tensor)
    assert o1.param_groups[0]["lr"].item() == o2.param_groups[0]["lr"]


@pytest.mark.parametrize("name", ["SGD", "Adagrad", "Adam", "AdamW"])
def test_fused_honours_a_grad_scaler_as_torch(name):
    ours, theirs = mlp(torch.float64), mlp(torch.float64)
    o1 = getattr(gt, name)(ours.parameters(), fused=True, **TWINS[name])
    o2 = getattr(torch.optim, name)(theirs.parameters(), fused=True, **TWINS[name])
    s1, s2 = (torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2) for _ in range(2))
    for i, (x, y) in enumerate(data(torch.float64, steps=6)):
        for model, opt, scaler in ((ours, o1, s1), (theirs, o2, s2)):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y) * (float("inf") if i == 2 else 1.0)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    assert s1.get_scale() == s2.get_scale()
    assert_models_close(ours, theirs, torch.float64)
    assert_state_dicts_equal(o1.state_dict(), o2.state_dict())


def test_hyperparameters_changed_between_steps_are_used_as_torch_uses_them():
    # The adapter reuses a group's core options while its values and rate are
    # unchanged: every change (lr, betas, weight_decay, a flag) must be seen.
    torch.manual_seed(0)
    init = torch.randn(6, dtype=torch.float64)
    ours, theirs = init.clone().requires_grad_(), init.clone().requires_grad_()
    mine = gt.Adam([ours], lr=0.01)
    ref = torch.optim.Adam([theirs], lr=0.01, foreach=False)
    changes = [{}, {"lr": 0.05}, {}, {"betas": (0.5, 0.9)}, {"weight_decay": 0.1}, {},
               {"amsgrad": True}, {"lr": 0.001, "betas": [0.8, 0.95]}, {}]
    for k, change in enumerate(changes):
        for opt in (mine, ref):
            opt.param_groups[0].update(change)
        g = torch.randn(6, dtype=torch.float64)
        ours.grad, theirs.grad = g.clone(), g.clone()
        if change.get("amsgrad"):  # torch creates max_exp_avg_sq lazily, as zeros
            ref.state[theirs].setdefault("max_exp_avg_sq", torch.zeros_like(theirs))
        mine.step()
        ref.step()
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14, msg=f"step {k}")
