"""What is timed: the cases (tensor counts and sizes) and the optimizer configurations."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

import gradstep as gs
from gradstep.bench import models, numpy_steps
from gradstep.bench.models import MODELS

DEFAULT_CASES = "4096,65536,1048576,16777216,200x5000"
QUICK_CASES = "4096,20x5000"
OPTIMIZERS = ("adam", "sgd", "adagrad", "rmsprop", "adadelta", "adamax", "radam", "nadam", "lion")


@dataclass(frozen=True)
class Case:
    """``tensors`` tensors of ``size`` elements each, or a model's parameter shapes.

    A model case (``model`` set, one of ``MODELS``: mlp, resnet18, gpt2) has
    ``tensors`` tensors of that model's shapes and ``size`` 0 (their sizes differ).
    """

    tensors: int
    size: int
    model: str = ""

    @property
    def label(self) -> str:
        if self.model:
            return self.model
        return str(self.size) if self.tensors == 1 else f"{self.tensors}x{self.size}"

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        if self.model:
            return MODELS[self.model]
        return ((self.size,),) * self.tensors

    @property
    def elements(self) -> int:
        return models.elements(MODELS[self.model]) if self.model else self.tensors * self.size

    @staticmethod
    def parse(text: str) -> Case:
        name = text.strip().lower()
        if name in MODELS:
            return Case(len(MODELS[name]), 0, name)
        parts = name.replace("×", "x").split("x")
        try:
            numbers = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"bad case {text!r}: expected N, MxN (M tensors of N elements) "
                             f"or a model ({', '.join(MODELS)})") from None
        if len(numbers) == 1:
            numbers = [1, numbers[0]]
        if len(numbers) != 2 or min(numbers) < 1:
            raise ValueError(f"bad case {text!r}: expected N or MxN with positive integers")
        return Case(numbers[0], numbers[1])


def parse_threads(text: str) -> list[int]:
    """``--threads``: one count or a comma list (``1,2``), as sorted distinct positive ints."""
    try:
        counts = [int(t) for t in text.split(",")]
    except ValueError:
        raise ValueError(f"bad thread list {text!r}: expected N or a comma list such as 1,2") from None
    if not counts or min(counts) < 1:
        raise ValueError(f"bad thread list {text!r}: thread counts must be positive")
    return sorted(set(counts))


@dataclass(frozen=True)
class Spec:
    """One optimizer configuration, as every implementation spells it."""

    name: str
    gradstep: str  # class in gradstep (gs.X and gradstep.torch.X)
    torch: Optional[str]  # class in torch.optim; None where torch.optim has none (Lion)
    hyper: dict[str, Any]  # constructor arguments common to gradstep and its peers
    numpy_step: Callable[[Any, int], None]  # (NumpyState, 1-based step)
    deepspeed: Optional[tuple[str, str, dict[str, Any]]] = None  # module, class, extra kwargs
    # The reference package's class of an optimizer torch.optim has not (module,
    # class, extra kwargs: lion_pytorch.Lion), timed as the peer "reference".
    reference: Optional[tuple[str, str, dict[str, Any]]] = None


SPECS = {
    "adam": Spec("adam", "Adam", "Adam", dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8), numpy_steps.adam,
                 ("deepspeed.ops.adam", "DeepSpeedCPUAdam", dict(adamw_mode=False))),
    "sgd": Spec("sgd", "SGD", "SGD", dict(lr=1e-2, momentum=0.9), numpy_steps.sgd),
    "adagrad": Spec("adagrad", "Adagrad", "Adagrad", dict(lr=1e-2, eps=1e-10), numpy_steps.adagrad,
                    ("deepspeed.ops.adagrad", "DeepSpeedCPUAdagrad", {})),
    "rmsprop": Spec("rmsprop", "RMSprop", "RMSprop", dict(lr=1e-2, alpha=0.99, eps=1e-8), numpy_steps.rmsprop),
    "adadelta": Spec("adadelta", "Adadelta", "Adadelta", dict(lr=1.0, rho=0.9, eps=1e-6), numpy_steps.adadelta),
    "adamax": Spec("adamax", "Adamax", "Adamax", dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8), numpy_steps.adamax),
    "radam": Spec("radam", "RAdam", "RAdam", dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8), numpy_steps.radam),
    "nadam": Spec("nadam", "NAdam", "NAdam", dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, momentum_decay=4e-3),
                  numpy_steps.nadam),
    # Lion is used with weight decay (Chen et al. 2023: 3-10x AdamW's); lion-pytorch's default rate.
    "lion": Spec("lion", "Lion", None, dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.1),
                 functools.partial(numpy_steps.lion, weight_decay=0.1), reference=("lion_pytorch", "Lion", {})),
}


def state_count(spec: Spec) -> int:
    """State buffers per parameter of this configuration (those the optimizer made)."""
    opt = getattr(gs, spec.gradstep)([np.zeros(1, np.float32)], **spec.hyper)
    return len(opt.state)


def bytes_per_element(spec: Spec, itemsize: int) -> int:
    """Memory traffic of one element's update: param, grad and states read; param and states written."""
    states = state_count(spec)
    return itemsize * ((2 + states) + (1 + states))
