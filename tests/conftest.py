from __future__ import annotations

import itertools

import numpy as np
import pytest

import gradstep as gs
from gradstep import _spec

SHAPES = [(7,), (13, 5), (3, 4, 33), (1,)]


def option_grid(**axes):
    """Every combination of the given option values, as dicts."""
    names = list(axes)
    return [dict(zip(names, values)) for values in itertools.product(*axes.values())]


def _valid_sgd(o):
    return not o["nesterov"] or (o["momentum"] > 0 and o["dampening"] == 0)


# (gradstep class name, lr, options) for every combination of every option.
CASES = (
    [("SGD", 0.05, o) for o in option_grid(momentum=[0.0, 0.9], dampening=[0.0, 0.3],
                                            nesterov=[False, True], weight_decay=[0.0, 0.05],
                                            maximize=[False, True]) if _valid_sgd(o)]
    + [("Adagrad", 0.05, o) for o in option_grid(lr_decay=[0.0, 0.01], weight_decay=[0.0, 0.05],
                                                  initial_accumulator_value=[0.0, 0.1],
                                                  eps=[1e-10], maximize=[False, True])]
    + [("Adadelta", 1.0, o) for o in option_grid(rho=[0.9, 0.5], eps=[1e-6],
                                                  weight_decay=[0.0, 0.05], maximize=[False, True])]
    + [("RMSprop", 0.01, o) for o in option_grid(alpha=[0.99, 0.3], eps=[1e-8],
                                                  weight_decay=[0.0, 0.05], momentum=[0.0, 0.9],
                                                  centered=[False, True], maximize=[False, True])]
    + [("Adam", 0.01, o) for o in option_grid(betas=[(0.9, 0.999), (0.3, 0.9)], eps=[1e-8],
                                               weight_decay=[0.0, 0.05], amsgrad=[False, True],
                                               maximize=[False, True])]
    + [("AdamW", 0.01, o) for o in option_grid(betas=[(0.9, 0.999), (0.3, 0.9)],
                                                weight_decay=[0.0, 0.05], amsgrad=[False, True],
                                                maximize=[False, True])]
    + [("Adamax", 0.01, o) for o in option_grid(betas=[(0.9, 0.999), (0.3, 0.9)], eps=[1e-8, 0.0],
                                                 weight_decay=[0.0, 0.05], maximize=[False, True])]
    # beta2 = 0.5: rho_inf = 3, never rectified; the others switch at rho > 5 after a few steps.
    + [("RAdam", 0.01, o) for o in option_grid(betas=[(0.9, 0.999), (0.3, 0.9), (0.9, 0.5)], eps=[1e-8],
                                                weight_decay=[0.0, 0.05], decoupled_weight_decay=[False, True],
                                                maximize=[False, True])]
    + [("NAdam", 0.01, o) for o in option_grid(betas=[(0.9, 0.999), (0.3, 0.9)], eps=[1e-8],
                                                weight_decay=[0.0, 0.05], momentum_decay=[4e-3, 0.5],
                                                decoupled_weight_decay=[False, True], maximize=[False, True])]
    # Lion's reference is lion_pytorch.Lion (reference_optimizer); its rates are 3-10x Adam's lower.
    + [("Lion", 1e-3, o) for o in option_grid(betas=[(0.9, 0.99), (0.3, 0.9)], weight_decay=[0.0, 0.05],
                                               decoupled_weight_decay=[False, True], maximize=[False, True])]
    # SHAPES' matrices get factored row_var/col_var, its vectors a full variance.
    + [("Adafactor", 0.01, o) for o in option_grid(beta2_decay=[-0.8, -0.3], eps=[(None, 1e-3), (1e-20, 0.0)],
                                                    weight_decay=[0.0, 0.05], maximize=[False, True])]
)


def reference_optimizer(name, params, **kwargs):
    """The oracle of gs.<name> over torch tensors: torch.optim.<name> (its single-tensor
    path), or, for an optimizer torch.optim has not, its declared reference class
    (lion_pytorch.Lion), with gradstep's maximize done by negating the grads around
    that class's step (exact, and undone after it)."""
    import importlib

    import torch

    spec = _spec.by_name(name)
    if spec.torch_twin:
        return getattr(torch.optim, name)(params, foreach=False, **kwargs)
    maximize = kwargs.pop("maximize", False)
    opt = getattr(importlib.import_module(spec.reference), name)(params, **kwargs)
    if maximize:
        def negate(optimizer, args, kw):
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.neg_()

        opt.register_step_pre_hook(negate)
        opt.register_step_post_hook(negate)
    return opt


def case_id(case):
    name, lr, opts = case
    flags = ",".join(f"{k}={v}" for k, v in opts.items())
    return f"{name}[{flags}]"


def make_problem(dtype, steps, seed=0, shapes=SHAPES):
    """Initial params and a fixed sequence of gradients for each step."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(steps)]
    return params, grads


@pytest.fixture(params=gs.available_isas())
def each_isa(request):
    """Run the test once per ISA target this CPU supports, then restore."""
    before = gs.isa()
    gs.set_isa(request.param)
    yield request.param
    gs.set_isa(before)
