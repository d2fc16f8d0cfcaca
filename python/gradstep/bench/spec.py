"""What is timed: the cases (tensor counts and sizes) and the optimizer configurations."""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

import gradstep as gs
from gradstep.bench import models, numpy_steps
from gradstep.bench.models import MODELS

DEFAULT_CASES = "4096,65536,1048576,16777216,200x5000"
QUICK_CASES = "4096,20x5000"
# The default list; every name of SPECS may be asked for (--optimizers), the learning-rate-free
# ones (whose peer is their reference package, not numpy or torch.optim) among them.
OPTIMIZERS = ("adam", "sgd", "adagrad", "rmsprop", "adadelta", "adamax", "radam", "nadam")


def import_reference(module: str, name: str) -> Any:
    """``module.name`` of a reference package (timm.optim.lamb.Lamb).

    When the package's ``__init__`` does not import here (timm's needs
    torchvision, which a CPU-only torch install may lack) the module is loaded
    from its file, under a private name, with its parents as bare packages so
    that its relative imports (timm.optim._helpers) still resolve.
    """
    try:
        return getattr(importlib.import_module(module), name)
    except Exception:  # noqa: BLE001 - any failure of the package's own imports: PyPI's torchvision
        pass  # beside torch's CPU wheel raises RuntimeError ("operator torchvision::nms does not exist")
    top, *parts = module.split(".")
    found = importlib.util.find_spec(top)  # finds the package without running its __init__
    if found is None or not found.submodule_search_locations:
        raise ImportError(f"{top} is not installed")
    path = Path(list(found.submodule_search_locations)[0])
    private = "_gradstep_reference_" + top
    for i in range(len(parts)):  # the bare parent packages
        package = ".".join([private, *parts[:i]])
        if package not in sys.modules:
            bare = importlib.util.module_from_spec(importlib.machinery.ModuleSpec(package, None, is_package=True))
            bare.__path__ = [str(path.joinpath(*parts[:i]))]
            sys.modules[package] = bare
    full = ".".join([private, *parts])
    if full not in sys.modules:
        file_spec = importlib.util.spec_from_file_location(full, path.joinpath(*parts).with_suffix(".py"))
        assert file_spec is not None and file_spec.loader is not None
        loaded = importlib.util.module_from_spec(file_spec)
        sys.modules[full] = loaded
        try:
            file_spec.loader.exec_module(loaded)
        except BaseException:
            del sys.modules[full]
            raise
    return getattr(sys.modules[full], name)


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
    gradstep: str  # class in gradstep
    torch: Optional[str]  # class in torch.optim (and gradstep.torch); None: torch.optim has none
    hyper: dict[str, Any]  # constructor arguments common to gradstep and torch
    numpy_step: Optional[Callable[[Any, int], None]]  # (NumpyState, 1-based step); None: no numpy peer
    deepspeed: Optional[tuple[str, str, dict[str, Any]]] = None  # module, class, extra kwargs
    # The reference implementation (module, class): a torch.optim.Optimizer of its own
    # package (prodigyopt.Prodigy), timed as "reference" when that package is installed.
    # Loaded by import_reference (timm's Lamb from its file).
    reference: Optional[tuple[str, str]] = None


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
    # The learning-rate-free optimizers, against their reference packages (lr: the multiplier 1.0).
    # growth_rate=1 holds d at d0: timed over thousands of steps on the same grads, an
    # unbounded d grows until it overflows (DAdaptAdam's does); each step does the same work.
    "prodigy": Spec("prodigy", "Prodigy", None, dict(lr=1.0, betas=(0.9, 0.999), weight_decay=0.0, growth_rate=1.0),
                    None, reference=("prodigyopt", "Prodigy")),
    "dadaptadam": Spec("dadaptadam", "DAdaptAdam", None, dict(lr=1.0, betas=(0.9, 0.999), growth_rate=1.0), None,
                       reference=("dadaptation", "DAdaptAdam")),
    "dadaptsgd": Spec("dadaptsgd", "DAdaptSGD", None, dict(lr=1.0, momentum=0.9, growth_rate=1.0), None,
                      reference=("dadaptation", "DAdaptSGD")),
    # Without its global clip (max_grad_norm=None): the numpy peer steps tensor by tensor.
    "lamb": Spec("lamb", "Lamb", None, dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01,
                                            max_grad_norm=None),
                 numpy_steps.lamb, reference=("timm.optim.lamb", "Lamb")),
    # Schedule-Free, against the schedulefree package (train() before stepping: ready()).
    "adamw-sf": Spec("adamw-sf", "AdamWScheduleFree", None,
                     dict(lr=2.5e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2),
                     numpy_steps.adamw_schedule_free, reference=("schedulefree", "AdamWScheduleFree")),
    "sgd-sf": Spec("sgd-sf", "SGDScheduleFree", None, dict(lr=1.0, momentum=0.9),
                   numpy_steps.sgd_schedule_free, reference=("schedulefree", "SGDScheduleFree")),
    # Lion is used with weight decay (Chen et al. 2023: 3-10x AdamW's); lion-pytorch's default rate.
    "lion": Spec("lion", "Lion", None, dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.1),
                 functools.partial(numpy_steps.lion, weight_decay=0.1), reference=("lion_pytorch", "Lion")),
    # torch's defaults; a vector case steps the full variance, a model's matrices the
    # factored row_var/col_var (no numpy peer: its states are not the params' shape).
    "adafactor": Spec("adafactor", "Adafactor", "Adafactor", dict(lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3)),
                      None),
}


def ready(spec: Spec, opt: Any) -> Any:
    """``opt`` (gradstep's or the torch peer) in the mode steps need: Schedule-Free's train(),
    named by gradstep's declaration and called the same in the reference package."""
    mode = getattr(gs, spec.gradstep).__gradstep_spec__.mode
    if mode is not None:
        getattr(opt, mode.on)()
    return opt


def state_count(spec: Spec) -> int:
    """State buffers per parameter of this configuration (those the optimizer made), for a
    vector (a state of another extent it has no buffer in, Adafactor's row_var, not counted)."""
    opt = getattr(gs, spec.gradstep)([np.zeros(1, np.float32)], **spec.hyper)
    return sum(1 for arrays in opt.state.values() if arrays[0].size)


def bytes_per_element(spec: Spec, itemsize: int, precision: Optional[str] = None) -> int:
    """Memory traffic of one element's update: param, grad and states read; param and states written.

    With a ``precision`` (half params, ``itemsize`` 2): the states are float32 unless
    it keeps them in the param's dtype, and a float32 master is read and written too.
    """
    states = state_count(spec)
    if precision is None:
        return itemsize * ((2 + states) + (1 + states))
    kw = PRECISIONS[precision]
    state_size = itemsize if kw.get("state_dtype") == "param" else 4
    master = 8 if kw.get("master_weights") else 0
    return itemsize * 3 + state_size * 2 * states + master


# The half-param configurations of `gradstep bench --dtype bfloat16|float16`: each a row of
# the report, with its own bytes per element and roof, and the peers of the same layout.
PRECISIONS: dict[str, dict[str, Any]] = {
    "f32-states": {},  # gradstep's default: float32 states, round to nearest
    "param-states": dict(state_dtype="param"),  # states in the param's dtype (torch's layout)
    "f32-master": dict(master_weights=True),  # float32 states and a float32 master copy
    "stochastic": dict(rounding="stochastic"),  # float32 states, stochastic rounding of the param
}
HALF_DTYPES = ("bfloat16", "float16")


def bench_dtype(name: str) -> np.dtype:
    """``--dtype``'s numpy dtype (bfloat16: ml_dtypes')."""
    from gradstep.precision import HALF_DTYPES as half

    return half[name] if name in half else np.dtype(name)


def is_half(dtype: np.dtype) -> bool:
    return np.dtype(dtype).name in HALF_DTYPES


def parse_precisions(text: str) -> list[str]:
    """``--precision``: a comma list of PRECISIONS' names (``all``: every one), in PRECISIONS' order."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if names == ["all"]:
        return list(PRECISIONS)
    bad = [n for n in names if n not in PRECISIONS]
    if bad or not names:
        raise ValueError(f"bad precision list {text!r}: choose from {', '.join(PRECISIONS)} (or all)")
    return [n for n in PRECISIONS if n in names]
