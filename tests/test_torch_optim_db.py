"""torch's own optimizer test matrix (``optim_db``, shipped in the torch wheel)
run against gradstep.torch: every configuration torch tests for SGD, Adagrad,
Adadelta, RMSprop, Adam, AdamW, Adamax, RAdam and NAdam on the CPU, each stepped by torch.optim and
by gradstep.torch from the same params and grads; params, state_dict() and
param_groups must agree. Configurations gradstep refuses (capturable,
differentiable) must be refused with gradstep's clear message, and torch's
error inputs must fail as torch fails. Nothing is skipped silently: every
configuration is counted as run or refused, and the counts are asserted.
"""

from __future__ import annotations

import copy

import pytest
import torch

import gradstep.torch as gt

import expecttest  # noqa: F401  (torch.testing._internal needs it; the test extra installs it)

from torch.testing._internal.common_optimizers import (  # noqa: E402
    OptimizerErrorEnum,
    _get_optim_inputs_including_global_cliquey_kwargs,
    optim_db,
)

NAMES = ("SGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW", "Adamax", "RAdam", "NAdam")
INFOS = [info for info in optim_db if info.optim_cls.__name__ in NAMES]
STEPS = 10


def params(seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(3, 4), (), (5,)]
    ps = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    ps.append(torch.randn(4, 3, 2, 3, generator=g, dtype=torch.float64)
              .to(memory_format=torch.channels_last))
    ps.append(torch.randn(4, 6, generator=g, dtype=torch.float64).t())
    return [torch.nn.Parameter(p) for p in ps]


def as_float64(kwargs):
    """A float32 tensor lr (as optim_db gives) as a float64 tensor of the same value:
    torch then does its tensor-lr arithmetic in float64, as gradstep does."""
    return {k: (v.to(torch.float64) if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}


def schedulers(info, opt, kwargs):
    if not isinstance(kwargs.get("lr"), torch.Tensor):
        return []
    # Every scheduler list torch tests this optimizer with, chained.
    out = []
    for makers in info.scheduler_inputs:
        for make in makers:
            s = make(opt)
            if not isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau):
                out.append(s)
                return out  # one chain is enough to exercise lr.fill_
    return out


def run(cls, info, kwargs, seed=1, param_layout_grads=False):
    ps = params()
    opt = cls(ps, **copy.deepcopy(kwargs))
    scheds = schedulers(info, opt, kwargs)
    g = torch.Generator().manual_seed(seed)
    for step in range(STEPS):
        for i, p in enumerate(ps):
            grad = torch.randn(p.shape, generator=g, dtype=p.dtype)
            if param_layout_grads or (step + i) % 3 == 0:  # the param's strides, else contiguous
                grad = torch.empty_like(p).copy_(grad)
            p.grad = grad
        if step == 4:
            ps[2].grad = None  # one param skips a step: its step count lags
        opt.step()
        for s in scheds:
            s.step()
    return ps, opt


def assert_same(a, b, where="state_dict"):
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{a.shape} != {b.dtype}{b.shape}"
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=lambda m: f"{where}: {m}")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def refused(cls, kwargs):
    """gradstep refuses capturable/differentiable with its own message."""
    flag = "capturable" if kwargs.get("capturable") else "differentiable"
    with pytest.raises(NotImplementedError, match=f"gradstep.torch does not support {flag}=True"):
        cls(params(), **copy.deepcopy(kwargs))


def test_optim_db_configurations_match_torch():
    ran, refusals, both_fail, cases = 0, 0, 0, []
    for info in INFOS:
        name = info.optim_cls.__name__
        theirs, ours = getattr(torch.optim, name), getattr(gt, name)
        cpu = _get_optim_inputs_including_global_cliquey_kwargs("cpu", torch.float64, info)
        assert len(cpu) >= len(info.optim_inputs_func(device="cpu", dtype=torch.float64))
        # The CUDA-only configurations (capturable ones) must be refused clearly.
        cuda_only = info.optim_inputs_func(device="cuda", dtype=torch.float64)[
            len(info.optim_inputs_func(device="cpu", dtype=torch.float64)):]
        for config in cuda_only:
            assert config.kwargs.get("capturable"), config.desc
            refused(ours, config.kwargs)
            refusals += 1
        for config in cpu:
            kwargs = config.kwargs
            if kwargs.get("capturable") or kwargs.get("differentiable"):
                refused(ours, kwargs)
                refusals += 1
                continue
            kwargs = as_float64(kwargs)
            try:
                theirs(params(), **copy.deepcopy(kwargs))
            except (TypeError, ValueError, RuntimeError) as e:  # torch refuses the combination
                with pytest.raises(type(e)):
                    ours(params(), **copy.deepcopy(kwargs))
                both_fail += 1
                continue
            cases.append(f"{name}: {config.desc}")
            # torch 2.13's CPU fused kernels (Adam, AdamW, Adagrad) step a channels_last
            # param with a contiguous grad wrongly (they pair elements by memory order);
            # gradstep agrees with torch's foreach and for-loop steps there. Compare the
            # fused configurations on grads in the param's layout, where torch is right.
            fused = bool(kwargs.get("fused"))
            p1, o1 = run(ours, info, kwargs, param_layout_grads=fused)
            p2, o2 = run(theirs, info, kwargs, param_layout_grads=fused)
            where = f"{name} [{config.desc}] {config.kwargs}"
            for i, (a, b) in enumerate(zip(p1, p2)):
                assert a.stride() == b.stride(), f"{where}: params[{i}] strides"
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12,
                                           msg=lambda m, i=i: f"{where}: params[{i}]: {m}")
            ours_dict = o1.state_dict()  # less gradstep's half-precision options (test_torch_half.py)
            ours_dict["param_groups"] = [{k: v for k, v in g.items() if k not in gt._HALF_OPTIONS}
                                         for g in ours_dict["param_groups"]]
            assert_same(ours_dict, o2.state_dict(), f"{where}: state_dict()")
            ran += 1
    # Observed with torch 2.13 for the nine optimizers: 84 configurations run and 87
    # (differentiable=True on the CPU, the CUDA-only capturable ones) are refused
    # (SGD to AdamW alone: 66 and 56); torch itself refuses none of them.
    print(f"optim_db: {ran} run, {refusals} refused, {both_fail} refused by torch too")
    assert ran >= 84, cases
    assert refusals >= 87
    assert len(INFOS) == len(NAMES)


def test_optim_db_error_inputs_fail_as_in_torch():
    checked = 0
    for info in INFOS:
        name = info.optim_cls.__name__
        for error in info.optim_error_inputs_func(device="cpu", dtype=torch.float64):
            config = error.optimizer_error_input
            args = copy.deepcopy(config.params), copy.deepcopy(config.kwargs)
            cls = getattr(gt, name)

            def attempt(cls=cls, args=args):
                opt = cls(args[0], **args[1])
                if error.error_on == OptimizerErrorEnum.STEP_ERROR:
                    opt.step()

            if error.error_type is UserWarning and "duplicate" in error.error_regex:
                # torch warns and steps a duplicate twice; gradstep refuses it.
                with pytest.raises(ValueError, match="may appear only once"):
                    attempt()
            elif issubclass(error.error_type, Warning):
                with pytest.warns(error.error_type, match=error.error_regex):
                    attempt()
            else:
                with pytest.raises(error.error_type, match=error.error_regex):
                    attempt()
            checked += 1
    assert checked >= 40


@pytest.mark.parametrize("name", ["SGD", "Adagrad"])
def test_float32_tensor_lr_as_optim_db_gives_it(name):
    # optim_db's tensor lr is float32; torch's Adagrad divides it in float32, so
    # its results and gradstep's (float64 arithmetic) agree to float32 rounding.
    info = next(i for i in INFOS if i.optim_cls.__name__ == name)
    configs = [c for c in info.optim_inputs_func(device="cpu", dtype=torch.float64)
               if isinstance(c.kwargs.get("lr"), torch.Tensor)]
    assert configs
    for config in configs:
        p1, o1 = run(getattr(gt, name), info, config.kwargs)
        p2, o2 = run(getattr(torch.optim, name), info, config.kwargs)
        for a, b in zip(p1, p2):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
        assert o1.param_groups[0]["lr"].dtype == torch.float32
        assert o1.param_groups[0]["lr"].item() == o2.param_groups[0]["lr"].item()
