"""The optimizers' declarations, read from the C++ core.

Each optimizer is declared once, in C++ next to its options struct
(``cpp/include/gradstep/optim.hpp``): its name and reference (torch.optim's
class, or a package's where torch has none), fields with defaults and
bounds, how they appear as Python parameters and in the reference, its state
slots (the reference's names) and when each is needed, cross-field rules,
variants (AdamW) and the update equations. ``_core.<X>Options.spec()`` hands
that declaration over as plain data; this module turns it into
:class:`OptimizerSpec` objects, from which
``gradstep.optim``, ``gradstep.torch``, ``gradstep.kernels`` and
``gradstep.checkpoint`` build their per-optimizer parts, and which render the
stub entries of ``_core.pyi`` and the table in ``docs/guide.md`` (both checked
against the declarations by the tests).
"""

from __future__ import annotations

import functools
import math
import inspect
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from gradstep import _core

# The package optimizers with values carried in the reference's param groups whose layout
# gradstep.torch knows (its _PACKAGE_STEPS): they have a gradstep.torch adapter.
PACKAGE_LAYOUTS = ("Prodigy", "DAdaptAdam", "DAdaptSGD", "Lamb", "AdamWScheduleFree", "SGDScheduleFree")

# Arguments every gs.X takes after its declared ones (gradstep's own, not torch's).
SAFEGUARDS = ("skip_nonfinite", "max_grad_norm")
# Then the storage-precision arguments (gradstep.precision): name, default, annotation.
PRECISION: tuple[tuple[str, Any, Any], ...] = (
    ("state_dtype", None, Optional[str]), ("master_weights", False, bool), ("rounding", "nearest", str),
    ("seed", 0, int), ("grad_dtype", None, Any), ("dtype", None, Optional[str]))


@dataclass(frozen=True)
class Field:
    """One declared value: an option of the step, or a Python-only construction value."""

    name: str
    type: str  # "real" or "flag"
    option: bool  # a member of the options struct (else Python-only, e.g. initial_accumulator_value)
    default: Any  # float or bool
    bound: str  # "any", "nonneg", "unit_closed", "unit_open"
    rule: Optional[str]  # the bound in words ("in [0, 1)"), None for flags
    # "positional", "keyword_only", "fixed" (not a constructor argument), "carried" (not an
    # argument: a value the step updates and the next step reads, kept in state_dicts),
    # "reference_only" (an argument of the reference's constructor alone: lion_pytorch's use_triton)
    kind: str
    group: Optional[str]  # the Python parameter grouping it with others ("betas")
    fills: Optional[str]  # the state a Python-only value initialises
    kernel_default: bool  # lr only: the kernel function gives it its default
    initial_from: Optional[str] = None  # carried only: the field whose value it starts at
    # The options' value a Python None stands for, when None is allowed: NaN for a value left
    # unset (Prodigy's beta3 = None: sqrt(beta2)), 0 for "off" (Lamb's max_grad_norm); None: not allowed
    none_value: Optional[float] = None

    @property
    def optional(self) -> bool:
        """Python None is a value of this field."""
        return self.none_value is not None

    def stands_for_none(self, value: Any) -> bool:
        assert self.none_value is not None
        if math.isnan(self.none_value):
            return isinstance(value, float) and math.isnan(value)
        return bool(value == self.none_value)

    @property
    def arg_default(self) -> Any:
        """The default as a Python argument (None when it stands for None)."""
        return self.from_option(self.default)

    def to_option(self, value: Any) -> Any:
        """An argument's value for the options (None: the value standing for it)."""
        return self.none_value if self.optional and value is None else value

    def from_option(self, value: Any) -> Any:
        """An option's value as an argument (the value standing for None: None)."""
        return None if self.optional and self.stands_for_none(value) else value
    # Where the reference keeps it: "group" (a param-group key), "optimizer"
    # (on the optimizer, in neither param_groups nor state_dict), "absent"
    # (not the reference's: gradstep.torch.X uses the default).
    keep: str = "group"
    rate_at_start: bool = False  # filled with the rate the optimizer starts from (Lion's init_lr)


@dataclass(frozen=True)
class Param:
    """One constructor parameter of gs.X: a field, or a group of fields as a tuple."""

    name: str
    fields: tuple[Field, ...]
    keyword_only: bool

    @property
    def grouped(self) -> bool:
        return self.fields[0].group is not None

    @property
    def keep(self) -> str:
        return self.fields[0].keep

    @property
    def default(self) -> Any:
        if self.grouped:
            return tuple(f.arg_default for f in self.fields)
        return self.fields[0].arg_default

    @property
    def annotation(self) -> Any:
        if self.grouped:
            return tuple[tuple(float for _ in self.fields)]  # type: ignore[misc]
        if self.fields[0].optional:
            return Optional[float]
        return bool if self.fields[0].type == "flag" else float


@dataclass(frozen=True)
class State:
    name: str  # torch's state key
    needed_when: Optional[str]  # the option that must be nonzero/set; None: always
    copy_param: bool = False  # starts as a copy of the param (else zeros or a Python-only value's fill)
    # How many elements it holds for a param (declaration.hpp's Extent): "full" (the param's
    # shape), "rows" / "cols" (a matrix's, the last two dims: shape (..., R, 1) / (..., 1, C)),
    # "vector" (the param's shape when it is no matrix: 0-d, 1-d), "strided" (every stride-th
    # element: (ceil(numel / stride),), the param's shape for stride 1); a param it has no buffer
    # for gets shape (0,).
    extent: str = "full"
    stride: Optional[str] = None  # "strided": the option holding the stride (Prodigy's slice_p)

    @property
    def extent_note(self) -> str:
        """The extent in words, for docs ("" for the param's size)."""
        return {"full": "", "rows": "per matrix row", "cols": "per matrix column", "vector": "0-d/1-d params",
                "strided": f"every {self.stride}-th element"}[self.extent]

    def shape(self, param_shape: tuple[int, ...], options: Any = None) -> tuple[int, ...]:
        """The shape of this state for a param of this shape (options: for a stride)."""
        shape = tuple(param_shape)
        matrix = len(shape) >= 2 and math.prod(shape) > 0
        if self.extent == "full":
            return shape
        if self.extent == "rows":
            return shape[:-1] + (1,) if matrix else (0,)
        if self.extent == "cols":
            return shape[:-2] + (1, shape[-1]) if matrix else (0,)
        if self.extent == "vector":
            return (0,) if matrix else shape
        if self.extent == "strided":  # stride 1: the whole param, in its shape
            assert self.stride is not None
            stride = int(getattr(options, self.stride))
            return shape if stride == 1 else (-(-math.prod(shape) // stride),)
        raise ValueError(f"unknown extent {self.extent!r}")


@dataclass(frozen=True)
class Mode:
    """Two states the params can be in (Schedule-Free: y while training, x for evaluation),
    switched by a kernel pass; gs.X gets a method for each (``train()``, ``eval()``)."""

    flag: str  # the carried flag, true in the state `on`
    on: str  # the method entering it; steps need it
    off: str  # the method leaving it
    step_refused: str  # the error of a step in the `off` state


@dataclass(frozen=True)
class OptimizerSpec:
    """Everything Python needs to know about one optimizer class (a declaration or a variant)."""

    name: str  # gs.X, gradstep.torch.X, and the reference's class: <reference>.X
    options: type  # _core.<X>Options
    base: Optional[str]  # the declaration a variant derives from
    summary: str
    equations: str
    torch_step_state: bool  # the reference keeps state["step"]
    fields: tuple[Field, ...]  # the variant's defaults applied
    states: tuple[State, ...]
    checks: tuple[dict[str, Any], ...]
    # The module of the reference class: "torch.optim" (gradstep.torch.X is a
    # subclass of torch.optim.X), or a package's ("lion_pytorch": gradstep.torch.X
    # is a torch.optim.Optimizer with that class's arguments and state layout).
    reference: str = "torch.optim"
    variant_fixed: dict[str, Any] = field(default_factory=dict)  # fixed by the variant
    # The step reduces over each tensor (Lamb's trust ratios): flat buffers are stepped tensor by tensor.
    per_tensor: bool = False
    # The step reduces over its buffers between passes (Prodigy's sums, Lamb's norms): its
    # states are float32 for bfloat16/float16 params (rounding them between passes would
    # make the passes disagree; gradstep.precision).
    reduces: bool = False
    mode: Optional[Mode] = None  # two states of the params and the pass between them (Schedule-Free)

    @property
    def kernel(self) -> str:
        """The name of the low-level function in gradstep.kernels."""
        return f"{self.name.lower()}_step"

    def field(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)

    @property
    def reference_class(self) -> str:
        """The reference's class, "torch.optim.Adam" or "lion_pytorch.Lion"."""
        return f"{self.reference}.{self.name}"

    @property
    def mirrored_in_torch(self) -> bool:
        """gradstep.torch.X exists for a package's optimizer (torch.optim has no twin): a
        torch.optim.Optimizer with that package's constructor, param groups and state_dict
        layout. Those without values carried from step to step, a Mode or a step count
        (Lion) get it from the declaration alone; those with them (Prodigy's d and
        Schedule-Free's weight_sum live in the reference's param groups) when gradstep.torch
        also knows where the package keeps them (PACKAGE_LAYOUTS)."""
        if self.torch_twin:
            return False
        return (not self.carried and self.mode is None and not self.torch_step_state) or \
            self.name in PACKAGE_LAYOUTS

    @property
    def torch_twin(self) -> bool:
        """The reference is torch.optim's class (gradstep.torch.X subclasses it)."""
        return self.reference == "torch.optim"

    @property
    def rate_at_start(self) -> Optional[str]:
        """The option filled with the rate the optimizer starts from (Lion's init_lr), if any."""
        return next((f.name for f in self.fields if f.rate_at_start), None)

    @property
    def fixed(self) -> dict[str, Any]:
        """Options that are not constructor arguments of the class, with their values."""
        out = {f.name: f.default for f in self.fields if f.kind == "fixed"}
        out.update(self.variant_fixed)
        return out

    @functools.cached_property
    def params(self) -> tuple[Param, ...]:
        """gs.X's declared parameters after ``params``, in order (lr first)."""
        return _params(f for f in self.fields
                       if f.kind not in ("fixed", "carried", "reference_only") and f.name not in self.variant_fixed)

    @functools.cached_property
    def reference_params(self) -> tuple[Param, ...]:
        """The reference's constructor parameters after ``params``, in order: the
        declared ones it has (not those kept "absent") and its reference-only ones."""
        return _params(f for f in self.fields
                       if f.kind not in ("fixed", "carried") and f.keep != "absent" and f.name not in self.variant_fixed)

    @property
    def hyper_params(self) -> tuple[Param, ...]:
        """The parameters other than lr: what ``hyperparameters()`` reports, in order."""
        return tuple(p for p in self.params if p.name != "lr")

    @functools.cached_property
    def group_keys(self) -> tuple[str, ...]:
        """The param-group keys the core's options are built from (lr aside): gs.X's
        parameters the reference keeps in its groups, then the fixed options (Adam's
        decoupled_weight_decay, a torch.optim.Adam group key) but one filled with the
        starting rate."""
        return (tuple(p.name for p in self.hyper_params if p.keep == "group")
                + tuple(name for name in self.fixed if name != self.rate_at_start))

    @property
    def carried(self) -> tuple[Field, ...]:
        """The values the step carries to the next step (Prodigy's d), in declaration order."""
        return tuple(f for f in self.fields if f.kind == "carried")

    def initial_carried(self, options: Any) -> dict[str, Any]:
        """The carried values before the first step, for options built from the arguments
        (a float each; a mode's flag a bool)."""
        return {f.name: (bool if f.type == "flag" else float)(
                    getattr(options, f.initial_from) if f.initial_from else f.default)
                for f in self.carried}

    @property
    def kernel_fields(self) -> tuple[Field, ...]:
        """The options the kernel function takes by keyword after lr and step (not a mode's
        flag: the kernel function steps params in the mode steps need)."""
        mode_flag = self.mode.flag if self.mode is not None else None
        return tuple(f for f in self.fields
                     if f.option and f.name not in ("lr", mode_flag) and f.name not in self.variant_fixed)

    def state_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.states)

    def by_state(self, name: str) -> State:
        """The declared state of this name."""
        return next(s for s in self.states if s.name == name)

    def needed(self, state: State, values: dict[str, Any]) -> bool:
        """Whether options with these values use the state (values by field name)."""
        return state.needed_when is None or bool(values[state.needed_when])

    def initial_values(self) -> dict[str, str]:
        """Python-only construction values -> the state each fills."""
        return {f.name: f.fills for f in self.fields if not f.option and f.fills is not None}

    @property
    def safeguards(self) -> tuple[str, ...]:
        """The safeguards gs.X takes after its declared parameters: those it does not declare
        itself (Lamb's max_grad_norm is its own, with timm's formula and default)."""
        declared = {p.name for p in self.params}
        return tuple(name for name in SAFEGUARDS if name not in declared)

    def signature(self, lr_annotation: Any = float, params_annotation: Any = Any) -> inspect.Signature:
        """gs.X.__init__'s signature: params, the declared parameters, the safeguards."""
        P = inspect.Parameter
        out = [P("self", P.POSITIONAL_OR_KEYWORD),
               P("params", P.POSITIONAL_OR_KEYWORD, annotation=params_annotation)]
        for p in self.params:
            kind = P.KEYWORD_ONLY if p.keyword_only else P.POSITIONAL_OR_KEYWORD
            annotation = lr_annotation if p.name == "lr" else p.annotation
            out.append(P(p.name, kind, default=p.default, annotation=annotation))
        safeguards = {"skip_nonfinite": (False, bool), "max_grad_norm": (None, Optional[float])}
        for name in self.safeguards:
            default, annotation = safeguards[name]
            out.append(P(name, P.KEYWORD_ONLY, default=default, annotation=annotation))
        for name, value, kind in PRECISION:
            out.append(P(name, P.KEYWORD_ONLY, default=value, annotation=kind))
        return inspect.Signature(out, return_annotation=None)

    def doc(self) -> str:
        """The update equations, states and bounds, for docstrings."""
        lines = ["Update of each element, per step (±grad: -grad with maximize=True):", ""]
        lines += ["    " + line for line in self.equations.rstrip("\n").split("\n")]
        if self.variant_fixed:
            fixed = ", ".join(f"{k}={v!r}" for k, v in self.variant_fixed.items())
            lines += ["", f"with {fixed}."]
        states = ", ".join(s.name + (f" (when {s.needed_when})" if s.needed_when else "")
                           + (f" ({s.extent_note})" if s.extent_note else "") for s in self.states)
        lines += ["", f"State buffers ({self.reference_class}'s names): {states}."]
        bounds = []
        for p in self.params:
            for i, f in enumerate(p.fields):
                if f.rule is not None:
                    bounds.append(f"{p.name}[{i}]" if p.grouped else f.name)
                    bounds[-1] += f" {f.rule}"
        lines += ["", "Bounds: " + "; ".join(bounds) + "."]
        for check in self.checks:
            lines.append(check["message"][0].upper() + check["message"][1:] + ".")
        for name, state in self.initial_values().items():
            lines.append(f"{name} is the initial value of {state}.")
        return "\n".join(lines)


def _params(fields: Any) -> tuple[Param, ...]:
    """Fields as constructor parameters, those of a group together (betas)."""
    out: list[Param] = []
    for f in fields:
        if f.group is not None and out and out[-1].name == f.group:
            out[-1] = replace(out[-1], fields=out[-1].fields + (f,))
            continue
        out.append(Param(f.group or f.name, (f,), f.kind == "keyword_only"))
    return tuple(out)


def _variant(base: OptimizerSpec, variant: dict[str, Any]) -> OptimizerSpec:
    defaults = variant["defaults"]
    fields = tuple(replace(f, default=type(f.default)(defaults[f.name])) if f.name in defaults else f
                   for f in base.fields)
    return replace(base, name=variant["name"], base=base.name, summary=variant["summary"], fields=fields,
                   variant_fixed=dict(variant["fixed"]))


def _read(options: type) -> list[OptimizerSpec]:
    spec = options.spec()  # type: ignore[attr-defined]
    base = OptimizerSpec(
        name=spec["name"], options=options, base=None, summary=spec["summary"],
        equations=spec["equations"], torch_step_state=spec["torch_step_state"],
        fields=tuple(Field(**f) for f in spec["fields"]),
        states=tuple(State(**s) for s in spec["states"]),
        checks=tuple(spec["checks"]), per_tensor=spec["per_tensor"], reduces=spec["reduces"],
        reference=spec["reference"],
        mode=Mode(**spec["mode"]) if spec["mode"] is not None else None,
    )
    return [base] + [_variant(base, v) for v in spec["variants"]]


@functools.lru_cache(maxsize=None)
def optimizers() -> tuple[OptimizerSpec, ...]:
    """Every declared optimizer class, in declaration order (a variant after its base)."""
    return tuple(s for options in _core.OPTIONS for s in _read(options))


def by_name(name: str) -> OptimizerSpec:
    for s in optimizers():
        if s.name == name:
            return s
    raise KeyError(name)


# ---- generated text: stubs and docs ---------------------------------------------------

STUB_BEGIN = "# --- generated from the declarations (gradstep._spec.stub_text); do not edit ---"
STUB_END = "# --- end of generated stubs ---"


def stub_text() -> str:
    """The ``_core.pyi`` entries of the options classes."""
    out = [STUB_BEGIN, ""]
    for options in _core.OPTIONS:
        spec = _read(options)[0]
        out.append(f"class {options.__name__}(_Options):")
        for f in spec.fields:
            if f.option and f.name not in ("lr", "weight_decay", "maximize"):
                out.append(f"    {f.name}: {'bool' if f.type == 'flag' else 'float'}")
        kwargs = ", ".join(f"{f.name}: {'bool' if f.type == 'flag' else 'float'} = ..."
                           for f in spec.fields if f.option)
        out.append(f"    def __init__(self, *, {kwargs}) -> None: ...")
        out.append("")
    out.append("OPTIONS: tuple[type[_Options], ...]")
    out.append(STUB_END)
    return "\n".join(out) + "\n"


DOCS_BEGIN = "<!-- generated from the declarations (gradstep._spec.docs_table); do not edit -->"
DOCS_END = "<!-- end of generated table -->"


def docs_table() -> str:
    """The optimizer table of ``docs/guide.md``."""
    rows = [DOCS_BEGIN,
            "| class | arguments (defaults) | state (the reference's names) | kernel function |",
            "|---|---|---|---|"]
    for s in optimizers():
        args = ", ".join(("*, " if p.keyword_only and not any(q.keyword_only for q in s.params[:i]) else "")
                         + f"`{p.name}={p.default!r}`" for i, p in enumerate(s.params))
        states = ", ".join(f"`{st.name}`" + (f" (if {st.needed_when})" if st.needed_when else "")
                           + (f" ({st.extent_note})" if st.extent_note else "") for st in s.states)
        fixed = f" ({', '.join(f'{k}={v!r}' for k, v in s.variant_fixed.items())})" if s.variant_fixed else ""
        rows.append(f"| `gs.{s.name}`{fixed} | {args} | {states} | `gs.kernels.{s.kernel}` |")
    rows.append(DOCS_END)
    return "\n".join(rows) + "\n"


def _rewrite(path: Any, begin: str, end: str, text: str) -> bool:
    """Replace the generated block of the file at path; True if it changed."""
    from pathlib import Path

    file = Path(path)
    old = file.read_text()
    a, b = old.index(begin), old.index(end) + len(end)
    new = old[:a] + text.rstrip("\n") + old[b:]
    if new != old:
        file.write_text(new)
    return new != old


def main(argv: Any = None) -> int:
    """``python -m gradstep._spec SOURCE_TREE``: rewrite the generated blocks of
    the source tree's docs/guide.md and python/gradstep/_core.pyi from the
    declarations of the installed build (after adding or changing one)."""
    import sys
    from pathlib import Path

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print(main.__doc__, file=sys.stderr)
        return 2
    root = Path(args[0])
    for rel, begin, end, text in (
            ("docs/guide.md", DOCS_BEGIN, DOCS_END, docs_table()),
            ("python/gradstep/_core.pyi", STUB_BEGIN, STUB_END, stub_text())):
        changed = _rewrite(root / rel, begin, end, text)
        print(f"{rel}: {'rewritten' if changed else 'up to date'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
