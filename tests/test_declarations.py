"""Everything per optimizer comes from its one declaration in C++ (optim.hpp)."""

from __future__ import annotations

import inspect
import math
import pydoc
from pathlib import Path

import numpy as np
import pytest

import gradstep as gs
from gradstep import _core, _spec

SPECS = _spec.optimizers()
NAMES = [s.name for s in SPECS]
REPO = Path(__file__).resolve().parents[1]
# torch.optim's implementation switches, which gs.X does not take (gradstep.torch does).
TORCH_IMPLEMENTATION_FLAGS = {"foreach", "fused", "capturable", "differentiable"}


def declared(spec):
    """name -> default of gs.X's declared parameters, from the declaration alone."""
    return {p.name: p.default for p in spec.params}


def test_every_declared_optimizer_is_generated():
    assert NAMES == ["SGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW", "Adamax", "RAdam", "NAdam",
                     "Prodigy", "DAdaptAdam", "DAdaptSGD", "Lamb",
                     "AdamWScheduleFree", "SGDScheduleFree", "Lion", "Adafactor"]
    for spec in SPECS:
        assert getattr(gs, spec.name).__gradstep_spec__ is spec
        assert spec.name in gs.__all__
        assert callable(getattr(gs.kernels, spec.kernel))


@pytest.mark.parametrize("spec", SPECS, ids=NAMES)
def test_gs_torch_adapter_and_torch_agree_on_names_and_defaults(spec):
    torch = pytest.importorskip("torch")
    import gradstep.torch as gt

    if not spec.torch_twin:
        return  # test_gs_adapter_and_a_package_reference_agree_on_names_and_defaults
    want = declared(spec)
    ours = inspect.signature(getattr(gs, spec.name)).parameters
    adapter = inspect.signature(getattr(gt, spec.name)).parameters
    theirs = inspect.signature(getattr(torch.optim, spec.name)).parameters
    gradstep_own = ("params", *_spec.SAFEGUARDS, *(name for name, _, _ in _spec.PRECISION))
    mine = {k: p.default for k, p in ours.items() if k not in gradstep_own}
    assert mine == want
    assert list(mine) == list(want)  # and in the declared order
    for sig in (adapter, theirs):
        assert {k: sig[k].default for k in want} == want
    # Beyond the declared parameters torch has only its implementation switches
    # and the options gs.X fixes (Adam's decoupled_weight_decay; AdamW's is fixed true).
    extras = set(theirs) - set(want) - {"self", "params"}
    assert extras <= TORCH_IMPLEMENTATION_FLAGS | set(spec.fixed), extras
    for name in set(spec.fixed) & extras:
        assert theirs[name].default == spec.field(name).default
    # The adapter takes exactly torch's arguments, then gradstep.torch's half-precision options.
    assert [(p.name, p.kind, p.default) for p in adapter.values()] == \
        [(p.name, p.kind, p.default) for p in theirs.values()] + [(k, inspect.Parameter.KEYWORD_ONLY, v) for k, v in gt._HALF_OPTIONS.items()]


@pytest.mark.parametrize("spec", [s for s in SPECS if s.mirrored_in_torch], ids=lambda s: s.name)
def test_gs_adapter_and_a_package_reference_agree_on_names_and_defaults(spec):
    # An optimizer torch.optim has not: gradstep.torch.X is generated from the
    # declaration alone, and takes exactly the reference class's arguments.
    torch = pytest.importorskip("torch")
    import gradstep.torch as gt

    from gradstep.bench.spec import import_reference

    # timm's Lamb from its file when timm.optim does not import (torchvision beside torch's CPU wheel).
    reference = import_reference(spec.reference + (".lamb" if spec.reference == "timm.optim" else ""), spec.name)
    adapter, theirs = (inspect.signature(c).parameters for c in (getattr(gt, spec.name), reference))
    assert [(p.name, p.kind, p.default) for p in adapter.values()] == \
        [(p.name, p.kind, p.default) for p in theirs.values()] + [(k, inspect.Parameter.KEYWORD_ONLY, v) for k, v in gt._HALF_OPTIONS.items()]
    assert issubclass(getattr(gt, spec.name), torch.optim.Optimizer)
    assert not issubclass(getattr(gt, spec.name), reference)  # never imported by gradstep
    # gs.X: the declared parameters, the reference's defaults; beyond them the
    # reference has only its reference-only arguments, gs.X only those the
    # reference lacks (Lion's maximize).
    want = declared(spec)
    ours = inspect.signature(getattr(gs, spec.name)).parameters
    # (the safeguards it does not declare itself: Lamb's max_grad_norm is timm's argument)
    assert {k: p.default for k, p in ours.items() if k not in ("params", *spec.safeguards, *(n for n, _, _ in _spec.PRECISION))} == want
    absent = {p.name for p in spec.params if p.keep == "absent"}
    assert {k: theirs[k].default for k in want if k not in absent} == \
        {k: v for k, v in want.items() if k not in absent}
    assert not absent & set(theirs)
    only = {p.name for p in spec.reference_params if p.fields[0].kind == "reference_only"}
    assert set(theirs) - set(want) - {"params"} == only


@pytest.mark.parametrize("spec", [s for s in SPECS if s.base is None], ids=lambda s: s.name)
def test_defaults_are_the_structs_member_initializers(spec):
    defaults = spec.options()
    for f in spec.fields:
        if f.option:
            value = getattr(defaults, f.name)
            assert value == f.default or (f.optional and math.isnan(value) and math.isnan(f.default)), f.name


@pytest.mark.parametrize("spec", SPECS, ids=NAMES)
def test_kernel_function_signature_follows_the_declaration(spec):
    sig = inspect.signature(getattr(gs.kernels, spec.kernel)).parameters
    P = inspect.Parameter
    states = [n for n in sig if n not in ("param", "grad")][: len(spec.states)]
    assert states == list(spec.state_names())
    for s in spec.states:
        assert (sig[s.name].default is None) == (s.needed_when is not None)
    assert sig["lr"].kind == P.KEYWORD_ONLY and sig["step"].default is P.empty
    keywords = [n for n, p in sig.items() if p.kind == P.KEYWORD_ONLY and n not in ("lr", "step")]
    assert keywords == [f.name for f in spec.kernel_fields]
    assert {n: sig[n].default for n in keywords} == {f.name: f.arg_default for f in spec.kernel_fields}


@pytest.mark.parametrize("spec", SPECS, ids=NAMES)
def test_help_shows_the_update_equations(spec):
    text = pydoc.render_doc(getattr(gs, spec.name), renderer=pydoc.plaintext)
    for line in spec.equations.strip().split("\n"):
        assert line.strip() in text
    for s in spec.states:
        assert s.name in text


def test_equations_live_in_the_declaration_and_kernels_point_there():
    header = (REPO / "cpp/include/gradstep/optim.hpp").read_text()
    for spec in SPECS:
        if spec.base is None:
            assert f"struct Declaration<{spec.options.__name__}>" in header
    for inl in ("sgd", "adagrad", "adadelta", "rmsprop", "adam", "adamax", "radam", "nadam", "lion"):
        head = (REPO / f"cpp/src/algorithms/{inl}.inl").read_text().split("\n\n")[0]
        assert "::equations" in head and "p -=" not in head and "p     -=" not in head


def test_docs_table_is_generated_from_the_declarations():
    guide = (REPO / "docs/guide.md").read_text()
    begin, end = guide.index(_spec.DOCS_BEGIN), guide.index(_spec.DOCS_END) + len(_spec.DOCS_END)
    assert guide[begin:end] + "\n" == _spec.docs_table(), \
        "docs/guide.md's table is stale: paste gradstep._spec.docs_table()"


def test_core_stubs_of_the_options_are_generated_from_the_declarations():
    stub = (Path(gs.__file__).parent / "_core.pyi").read_text()
    begin, end = stub.index(_spec.STUB_BEGIN), stub.index(_spec.STUB_END) + len(_spec.STUB_END)
    assert stub[begin:end] + "\n" == _spec.stub_text(), \
        "_core.pyi's options stubs are stale: paste gradstep._spec.stub_text()"


def test_options_take_keywords_and_reject_unknown_ones():
    o = _core.AdamOptions(lr=0.1, beta1=0.5, amsgrad=True)
    assert (o.lr, o.beta1, o.beta2, o.amsgrad) == (0.1, 0.5, 0.999, True)
    assert o.state_mask == 7
    with pytest.raises(TypeError, match="unexpected keyword argument 'betas'"):
        _core.AdamOptions(betas=(0.9, 0.99))
    with pytest.raises(TypeError, match="lr must be a real number"):
        _core.SgdOptions(lr="0.1")
    with pytest.raises(ValueError, match=r"betas\[1\] must be in \[0, 1\), got 1"):
        _core.AdamOptions(beta2=1.0).validate()
    with pytest.raises(ValueError, match="nesterov requires momentum > 0 and dampening = 0"):
        _core.SgdOptions(nesterov=True, momentum=0.9, dampening=0.1).validate()
    assert "beta1=0.5" in repr(o)


def test_state_mask_follows_the_declared_conditions():
    for spec in SPECS:
        if spec.base is not None:
            continue
        conditional = [s for s in spec.states if s.needed_when]
        for on in (False, True):
            values = {s.needed_when: (0.5 if spec.field(s.needed_when).type == "real" else True) if on else
                      (0.0 if spec.field(s.needed_when).type == "real" else False) for s in conditional}
            mask = spec.options(**values).state_mask
            expected = sum(1 << i for i, s in enumerate(spec.states) if spec.needed(s, values))
            assert mask == expected, (spec.name, values)


def test_python_only_values_fill_their_state():
    opt = gs.Adagrad([np.zeros(3)], initial_accumulator_value=0.25)
    assert np.array_equal(opt.state["sum"][0], np.full(3, 0.25))
    assert opt.hyperparameters()["initial_accumulator_value"] == 0.25
    with pytest.raises(ValueError, match="initial_accumulator_value must be a finite number >= 0"):
        gs.Adagrad([np.zeros(3)], initial_accumulator_value=-1.0)


def test_a_variant_is_its_base_with_fixed_and_changed_fields():
    adamw = _spec.by_name("AdamW")
    assert adamw.base == "Adam" and adamw.variant_fixed == {"decoupled_weight_decay": True}
    assert adamw.field("weight_decay").default == 1e-2
    assert issubclass(gs.AdamW, gs.Adam)
    assert gs.AdamW([np.zeros(2)])._options.decoupled_weight_decay is True  # noqa: SLF001 - the test's own
    assert gs.Adam([np.zeros(2)])._options.decoupled_weight_decay is False  # noqa: SLF001


# -- the rate has one owner ------------------------------------------------------------

PACKAGE = Path(gs.__file__).parent


def optimizer_private_fields():
    """The `_`-prefixed attributes and methods gradstep.optim.Optimizer keeps on itself."""
    import re

    source = (PACKAGE / "optim.py").read_text()
    fields = set(re.findall(r"self\.(_[a-z]\w*)\s*(?::[^=\n]*)?=(?!=)", source))
    return fields | set(re.findall(r"    def (_[a-z]\w*)\(self", source)) | {"_options"}


def test_no_module_reads_an_optimizers_private_fields():
    import re

    fields = optimizer_private_fields()
    assert {"_set", "_lr_callable", "_step_count"} <= fields
    names = "|".join(sorted(fields))
    reach = re.compile(rf"\b(?!self\b)\w+\.({names})\b|getattr\([^,]+,\s*[\"']({names})[\"']")
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).as_posix() == "optim.py":
            continue
        for n, line in enumerate(path.read_text().split("\n"), 1):
            if reach.search(line):
                offenders.append(f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_the_rate_lives_in_the_tensor_set():
    opt = gs.SGD([np.zeros(3)], lr=0.1)
    assert opt._set.lr_source == 0.1 and opt._set.lr_at(0) == 0.1  # noqa: SLF001 - the test's own
    sched = gs.schedules.step(1.0, step_size=1, gamma=0.5)
    opt.lr = sched
    assert opt.schedule is sched and opt._set.lr_source is sched  # noqa: SLF001
    opt.set_plateau(0.1, 0.05)
    assert (opt.lr_scale, opt.min_lr) == (0.1, 0.05)
    assert opt.lr == pytest.approx(0.1) and opt.base_lr == 1.0
    opt.step([np.ones(3)])
    assert opt.lr == pytest.approx(0.05) and opt.base_lr == 0.5  # floored at min_lr
    opt.max_grad_norm = 2.0
    assert opt._set.max_grad_norm == 2.0 and opt.max_grad_norm == 2.0  # noqa: SLF001
    opt.max_grad_norm = None
    assert opt._set.max_grad_norm == 0.0 and opt.max_grad_norm is None  # noqa: SLF001


def test_pinned_lr_ignores_schedule_and_plateau_then_restores_them():
    sched = gs.schedules.exponential(1.0, gamma=0.5)
    p = np.zeros(2)
    opt = gs.SGD([p], lr=sched)
    opt.set_plateau(0.5, 0.0)
    with opt.pinned_lr(0.25):
        assert opt.lr == 0.25 and opt.lr_scale == 1.0
        result = opt.step([np.ones(2)])
        assert result.lr == 0.25
        opt.lr = 0.125
        assert opt.step([np.ones(2)]).lr == 0.125
    assert opt.schedule is sched and opt.lr_scale == 0.5
    assert opt.lr == 0.5 * 0.5**2
    assert np.allclose(p, -0.375)


def test_a_callable_rate_is_evaluated_in_python_and_handed_to_the_set():
    opt = gs.SGD([np.zeros(1)], lr=lambda k: 0.1 * (k + 1))
    for k in range(3):
        assert opt.step([np.ones(1)]).lr == pytest.approx(0.1 * (k + 1))
        assert opt._set.lr_at(k) == pytest.approx(0.1 * (k + 1))  # noqa: SLF001 - set before each step
