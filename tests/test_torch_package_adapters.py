"""gradstep.torch's adapters for the package optimizers whose reference carries values in
its param groups (prodigyopt.Prodigy, dadaptation.DAdaptAdam/DAdaptSGD, timm.optim.Lamb,
schedulefree.AdamWScheduleFree/SGDScheduleFree), against those classes: the same
constructor, param groups, states and steps (float64), state_dicts moving both ways,
Schedule-Free's train()/eval(), bad input changing nothing, deepcopy."""

import copy
import importlib
import inspect

import pytest

torch = pytest.importorskip("torch")
import gradstep.torch as gt  # noqa: E402
from gradstep import _spec  # noqa: E402
from gradstep.bench.spec import import_reference  # noqa: E402  (timm's Lamb without torchvision)

NAMES = ["Prodigy", "DAdaptAdam", "DAdaptSGD", "Lamb", "AdamWScheduleFree", "SGDScheduleFree"]
SCHEDULE_FREE = ("AdamWScheduleFree", "SGDScheduleFree")

# Option combinations per optimizer; "wd1", "eps1", "sw1" and "lr1" are the second group's
# weight_decay, eps, safeguard_warmup and lr (the reference reads them per group: Prodigy and
# DAdaptAdam in one globally reduced step, Schedule-Free one group at a time; DAdaptSGD reads
# weight_decay from param_groups[0] only, so group 1's is ignored there as in the reference).
OPTIONS = {
    "Prodigy": [
        dict(wd1=0.1),
        dict(weight_decay=0.05, decouple=False, use_bias_correction=True, wd1=0.0, eps1=1e-4),
        dict(betas=(0.0, 0.99), weight_decay=0.1, safeguard_warmup=True, d_coef=2.0, growth_rate=1.05, wd1=0.02),
        dict(beta3=0.95, weight_decay=0.02, d0=1e-4, eps=1e-6, sw1=True, wd1=0.3),
        dict(weight_decay=0.05, lr1=0.0),
        dict(slice_p=3, weight_decay=0.05, wd1=0.0),  # s and p0 of every third element
        dict(slice_p=11, betas=(0.0, 0.99), lr1=0.0),
    ],
    "DAdaptAdam": [
        dict(wd1=0.1),
        dict(weight_decay=0.05, use_bias_correction=True, wd1=0.0, eps1=1e-4),
        dict(weight_decay=0.1, decouple=True, betas=(0.5, 0.9), growth_rate=1.1, d0=1e-4, wd1=0.01),
        dict(weight_decay=0.05, decouple=True, lr1=0.0),
    ],
    "DAdaptSGD": [
        dict(wd1=0.3),
        dict(momentum=0.9, weight_decay=0.05, wd1=0.0),
        dict(momentum=0.5, growth_rate=1.2, d0=1e-3, wd1=0.1),
        dict(momentum=0.9, weight_decay=0.02, lr1=0.0),
    ],
    "Lamb": [
        dict(wd1=0.0),
        dict(lr=0.01, weight_decay=0.1, trust_clip=True, max_grad_norm=None, lr1=0.002),
        dict(caution=True, weight_decay=0.05, wd1=0.0, betas=(0.8, 0.99), max_grad_norm=0.5),
        dict(decoupled_decay=True, corrected_weight_decay=True, weight_decay=0.1, always_adapt=True,
             grad_averaging=False, bias_correction=False, wd1=0.02, eps1=1e-4, ca1=True),
    ],
    "AdamWScheduleFree": [
        dict(lr=0.01, wd1=0.1),
        dict(lr=0.02, betas=(0.8, 0.99), weight_decay=0.05, warmup_steps=5, wd1=0.0),
        dict(lr=0.01, r=0.5, weight_lr_power=1.0, eps=1e-6, warmup_steps=40, wd1=0.2),
    ],
    "SGDScheduleFree": [
        dict(lr=0.05, wd1=0.1),
        dict(lr=0.1, momentum=0.5, weight_decay=0.05, warmup_steps=5, wd1=0.0),
        dict(lr=0.05, r=0.5, weight_lr_power=1.0, warmup_steps=40, wd1=0.2),
    ],
}
CASES = [(name, o) for name in NAMES for o in OPTIONS[name]]
IDS = [f"{name}-{i}" for name in NAMES for i in range(len(OPTIONS[name]))]

SHAPES = [(3, 4), (), (1,), (5,), (2, 3)]  # the last starts all zeros (prodigyopt's 0-d p0)


def reference_class(name):
    if name == "Lamb":
        return import_reference("timm.optim.lamb", "Lamb")
    return getattr(importlib.import_module(_spec.by_name(name).reference), name)


def count(opt):
    """The step count the groups keep (timm's Lamb: a scalar tensor)."""
    g = opt.param_groups[0]
    return g["k"] if "k" in g else int(g["step"].item())


def make_params(seed=0):
    g = torch.Generator().manual_seed(seed)
    out = [torch.randn(s, generator=g, dtype=torch.float64) for s in SHAPES[:-1]]
    out.append(torch.zeros(SHAPES[-1], dtype=torch.float64))
    return [p.requires_grad_() for p in out]


def groups_of(params, options):
    o = dict(options)
    second = {"params": params[2:], "weight_decay": o.pop("wd1", o.get("weight_decay", 0.0))}
    for short, key in (("eps1", "eps"), ("sw1", "safeguard_warmup"), ("lr1", "lr"), ("ca1", "caution")):
        if short in o:
            second[key] = o.pop(short)
    return [{"params": params[:2]}, second], o


def build(cls, options, seed=0):
    params = make_params(seed)
    groups, o = groups_of(params, options)
    opt = cls(groups, **o)
    if hasattr(opt, "train"):
        opt.train()
    return params, opt


def set_grads(params, step):
    g = torch.Generator().manual_seed(1000 + step)
    for i, p in enumerate(params):
        target = torch.full_like(p, 0.5 - 0.25 * i)
        p.grad = (p.detach() - target) + 0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype)


def run(params, opt, first, last):
    for k in range(first, last):
        set_grads(params, k)
        opt.step()


# Keys prodigyopt writes for logging only (the sums' values the kernel does not report).
LOGGED = {"d_denom", "d_hat"}
# gradstep.torch's half-precision options, in every group (test_torch_half.py)
HALF = set(gt._HALF_OPTIONS)


def assert_same(ours, theirs, params_a, params_b, rtol=1e-10):
    for a, b in zip(params_a, params_b):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=rtol, atol=1e-12)
    for ga, gb in zip(ours.param_groups, theirs.param_groups):
        keys_a, keys_b = set(ga) - LOGGED - HALF - {"params"}, set(gb) - LOGGED - HALF - {"params"}
        assert keys_a == keys_b
        for key in keys_a:
            va, vb = ga[key], gb[key]
            if isinstance(vb, float) and isinstance(va, float):
                assert va == pytest.approx(vb, rel=rtol, abs=1e-300), key
            elif isinstance(vb, torch.Tensor):  # timm's group["step"]
                assert isinstance(va, torch.Tensor) and va.dtype == vb.dtype and torch.equal(va, vb), key
            else:
                assert va == vb, key
    for a, b in zip(params_a, params_b):
        sa, sb = ours.state[a], theirs.state[b]
        assert set(sa) == set(sb)
        for key in sb:
            if isinstance(sb[key], torch.Tensor):
                assert sa[key].shape == sb[key].shape, key
                torch.testing.assert_close(sa[key], sb[key], rtol=rtol, atol=1e-12)
            else:
                assert sa[key] == sb[key], key


@pytest.mark.parametrize("name,options", CASES, ids=IDS)
def test_steps_equal_the_reference(name, options):
    pa, ours = build(getattr(gt, name), options)
    pb, theirs = build(reference_class(name), options)
    run(pa, ours, 0, 35)
    run(pb, theirs, 0, 35)
    assert_same(ours, theirs, pa, pb)
    assert all(torch.isfinite(p).all() for p in pa)
    # the carried values moved (the test sees a real run, not a stuck one)
    g = ours.param_groups[0]
    assert count(ours) == 35
    if name == "Lamb":
        pass
    elif name in SCHEDULE_FREE:
        ours.eval()
        theirs.eval()
        assert_same(ours, theirs, pa, pb)
        assert g["train_mode"] is False
    else:
        assert g["d"] != pytest.approx(_spec.by_name(name).field("d0").default)


@pytest.mark.parametrize("name,options", CASES, ids=IDS)
@pytest.mark.parametrize("direction", ["reference_to_adapter", "adapter_to_reference"])
def test_state_dict_moves_mid_run_both_ways(name, options, direction):
    ours_cls, theirs_cls = getattr(gt, name), reference_class(name)
    src_cls, dst_cls = (theirs_cls, ours_cls) if direction == "reference_to_adapter" else (ours_cls, theirs_cls)
    ps, src = build(src_cls, options)
    run(ps, src, 0, 17)
    pd, dst = build(dst_cls, options, seed=5)  # other values and states, replaced by the load
    run(pd, dst, 0, 2)
    with torch.no_grad():
        for a, b in zip(pd, ps):
            a.copy_(b)
    dst.load_state_dict(copy.deepcopy(src.state_dict()))
    run(ps, src, 17, 34)
    run(pd, dst, 17, 34)
    if direction == "reference_to_adapter":
        assert_same(dst, src, pd, ps)
    else:
        assert_same(src, dst, ps, pd)


def test_prodigy_keeps_and_accepts_a_0d_p0():
    params, opt = build(gt.Prodigy, {})
    set_grads(params, 0)
    opt.step()
    assert opt.state[params[-1]]["p0"].shape == ()  # all zeros at the first step, as prodigyopt
    assert opt.state[params[0]]["p0"].shape == (12,)
    assert opt.state[params[1]]["s"].shape == (1,)  # a 0-d param: flat buffers of one element
    params, opt = build(gt.Prodigy, {"slice_p": 5})
    set_grads(params, 0)
    opt.step()
    assert opt.state[params[0]]["p0"].shape == (3,) and opt.state[params[0]]["s"].shape == (3,)  # 12 -> [::5]


@pytest.mark.parametrize("name", NAMES)
def test_signature_and_groups_are_the_references(name):
    ours, theirs = getattr(gt, name), reference_class(name)
    sa, sb = inspect.signature(ours).parameters, inspect.signature(theirs).parameters
    # the reference's, then gradstep's keyword-only half-precision options
    half = [(k, inspect.Parameter.KEYWORD_ONLY, v) for k, v in gt._HALF_OPTIONS.items()]
    assert [(p.name, p.kind, p.default) for p in sa.values()] == \
        [(p.name, p.kind, p.default) for p in sb.values()] + half
    assert issubclass(ours, torch.optim.Optimizer) and not issubclass(ours, theirs)
    a, b = ours(make_params()), theirs(make_params())
    assert {k: v for k, v in a.defaults.items() if k not in HALF} == b.defaults
    assert [set(g) - HALF for g in a.param_groups] == [set(g) for g in b.param_groups]
    assert getattr(a, "d0", None) == getattr(b, "d0", None)


def snapshot(params, opt):
    return (copy.deepcopy([p.detach().clone() for p in params]),
            copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]),
            copy.deepcopy({i: dict(opt.state[p]) for i, p in enumerate(params) if p in opt.state}))


def assert_unchanged(before, after):
    for a, b in zip(before[0], after[0]):
        assert torch.equal(a, b)
    assert before[1] == after[1]
    assert before[2].keys() == after[2].keys()
    for i in before[2]:
        assert before[2][i].keys() == after[2][i].keys()
        for k in before[2][i]:
            x, y = before[2][i][k], after[2][i][k]
            assert torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y


def bad_inputs(name):
    """(what, mutate(params, opt) -> None, exception) that a step must refuse."""
    def wrong_dtype(params, opt):
        state = opt.state[params[3]]
        key = next(k for k in ("z", "s", "exp_avg") if k in state)
        state[key] = state[key].float()

    def not_a_tensor(params, opt):
        state = opt.state[params[0]]
        key = next(k for k in ("z", "s", "exp_avg") if k in state)
        state[key] = state[key].tolist()

    def bad_state(params, opt):
        key = "exp_avg_sq" if name not in ("DAdaptSGD", "SGDScheduleFree") else "s" if name == "DAdaptSGD" else "z"
        opt.state[params[2]][key] = torch.zeros(7, dtype=torch.float64)

    def bad_group(params, opt):
        opt.param_groups[1]["weight_decay" if name in SCHEDULE_FREE else "lr"] = -1.0

    def bad_carried(params, opt):
        key = "weight_sum" if name in SCHEDULE_FREE else "max_lr_snapshot" if name == "Lamb" else "d"
        opt.param_groups[0][key] = float("nan")

    def grad_is_its_param(params, opt):  # in the last group: the first group must not step either
        params[-1].grad = params[-1].detach()

    out = [("grad aliasing its param", grad_is_its_param, ValueError),
           ("state dtype", wrong_dtype, TypeError), ("state not a tensor", not_a_tensor, TypeError),
           ("state shape", bad_state, ValueError), ("carried", bad_carried, ValueError),
           ("group option", bad_group, (ValueError, RuntimeError))]
    if name in ("Prodigy", "DAdaptAdam"):
        def differing(params, opt):
            if name == "Prodigy":
                opt.param_groups[1]["d0"] = 1e-3
            else:
                opt.param_groups[1]["layer_scale"] = 0.5

        out.append(("per-group d0 / layer_scale", differing, NotImplementedError))

        def lr_differs(params, opt):
            opt.param_groups[1]["lr"] = 0.5

        out.append(("lr neither equal nor 0", lr_differs, RuntimeError))
    if name == "Lamb":
        def steps_differ(params, opt):
            opt.param_groups[1]["step"] = opt.param_groups[1]["step"] + 1

        def bad_clip(params, opt):
            opt.defaults["max_grad_norm"] = -1.0

        out += [("group steps differ", steps_differ, NotImplementedError),
                ("defaults' max_grad_norm", bad_clip, ValueError)]
    if name in SCHEDULE_FREE:
        def eval_group(params, opt):
            opt.param_groups[1]["train_mode"] = False

        out.append(("a group in eval mode", eval_group, RuntimeError))
    return out


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_raises_and_changes_nothing(name):
    for what, mutate, error in bad_inputs(name):
        params, opt = build(getattr(gt, name), OPTIONS[name][1])
        run(params, opt, 0, 3)
        set_grads(params, 3)
        mutate(params, opt)
        before = snapshot(params, opt)
        with pytest.raises(error):
            opt.step()
        assert_unchanged(before, snapshot(params, opt)), what


@pytest.mark.parametrize("name,key,value", [("Prodigy", "d0", 1e-3), ("DAdaptAdam", "layer_scale", 0.5)])
def test_per_group_options_the_kernel_does_not_take_raise_naming_the_key_and_group(name, key, value):
    params = make_params()
    opt = getattr(gt, name)([{"params": params[:2]}, {"params": params[2:], key: value}])
    set_grads(params, 0)
    before = snapshot(params, opt)
    with pytest.raises(NotImplementedError, match=rf"param_groups\[1\]: {key}={value}"):
        opt.step()
    assert_unchanged(before, snapshot(params, opt))
    assert not opt.state


@pytest.mark.parametrize("name", NAMES)
def test_bad_load_changes_nothing(name):
    params, opt = build(getattr(gt, name), OPTIONS[name][0])
    run(params, opt, 0, 3)
    sd = copy.deepcopy(opt.state_dict())
    sd["param_groups"][0]["weight_sum" if name in SCHEDULE_FREE else "max_lr_snapshot" if name == "Lamb" else "d"] = -1.0
    before = snapshot(params, opt)
    with pytest.raises(ValueError, match=r"param_groups\[0\]"):
        opt.load_state_dict(sd)
    assert_unchanged(before, snapshot(params, opt))


@pytest.mark.parametrize("name", NAMES)
def test_deepcopy_steps_as_the_original(name):
    params, opt = build(getattr(gt, name), OPTIONS[name][1])
    run(params, opt, 0, 4)
    params2, opt2 = copy.deepcopy((params, opt))
    assert getattr(opt2, "d0", None) == getattr(opt, "d0", None)
    run(params, opt, 4, 9)
    run(params2, opt2, 4, 9)
    for a, b in zip(params, params2):
        assert torch.equal(a, b)
    assert count(opt) == count(opt2) == 9


@pytest.mark.parametrize("name", NAMES)
def test_hooks_and_closure(name):
    params, opt = build(getattr(gt, name), OPTIONS[name][0])
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))

    def closure():
        set_grads(params, 0)
        return 1.5

    assert opt.step(closure) == 1.5
    assert calls == ["pre", "post"]
    assert count(opt) == 1


@pytest.mark.parametrize("name", SCHEDULE_FREE)
def test_schedule_free_train_eval_equal_the_references(name):
    options = OPTIONS[name][1]
    pa, ours = build(getattr(gt, name), options)
    pb, theirs = build(reference_class(name), options)
    for first in (0, 10, 20):
        run(pa, ours, first, first + 10)
        run(pb, theirs, first, first + 10)
        ours.eval()
        theirs.eval()
        assert_same(ours, theirs, pa, pb)
        ours.eval()  # already there: nothing moves
        theirs.eval()
        assert_same(ours, theirs, pa, pb)
        ours.train()
        theirs.train()
        assert_same(ours, theirs, pa, pb)
    ours.eval()
    with pytest.raises(RuntimeError, match="train mode"):
        set_grads(pa, 0)
        ours.step()


@pytest.mark.parametrize("name", ["Prodigy", "DAdaptAdam", "DAdaptSGD", "AdamWScheduleFree", "SGDScheduleFree"])
def test_flat_parameters_step_as_the_plain_ones(name):
    # flatten_parameters: the members' grads are gathered at each step; the padding between
    # members adds nothing to the sums and stays zero. (Lamb is left out: its trust ratio is
    # per tensor, and a flat parameter is one.)
    from gradstep.torch import flatten_parameters

    options = dict(OPTIONS[name][1])
    for short in ("wd1", "eps1", "sw1", "lr1", "ca1"):
        options.pop(short, None)
    plain, members = make_params(), make_params()
    flats = flatten_parameters(members)
    a, b = getattr(gt, name)(plain, **options), getattr(gt, name)(flats, **options)
    for opt in (a, b):
        if hasattr(opt, "train"):
            opt.train()
    for k in range(12):
        set_grads(plain, k)
        set_grads(members, k)
        a.step()
        b.step()
    for x, y in zip(plain, members):
        torch.testing.assert_close(x.detach(), y.detach(), rtol=1e-10, atol=1e-12)
    assert count(a) == count(b) == 12


@pytest.mark.parametrize("name", ["Prodigy", "DAdaptAdam", "DAdaptSGD", "Lamb"])
def test_per_group_steps_are_the_same_bits_on_every_isa_target(name):
    # step_groups's kernels (each tensor with its group's options) on every target.
    import gradstep as gs

    options = OPTIONS[name][-1]  # groups with different options (lr 0, caution, eps, ...)
    before = gs.isa()
    results = []
    try:
        for isa in gs.available_isas():
            gs.set_isa(isa)
            params, opt = build(getattr(gt, name), options)
            params32 = [p.detach().float().requires_grad_() for p in make_params()]
            groups32, options32 = groups_of(params32, options)
            opt32 = getattr(gt, name)(groups32, **options32)  # float32 too
            for k in range(6):
                set_grads(params, k)
                opt.step()
                for p, q in zip(params32, params):
                    p.grad = q.grad.float()
                opt32.step()
            results.append([p.detach().clone() for p in params + params32])
    finally:
        gs.set_isa(before)
    assert len(results) >= 1
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))
