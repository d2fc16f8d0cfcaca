"""gradstep._torch_flat: a model's parameters flattened into one aligned buffer
train exactly as the unflattened model does (bit for bit, against torch.optim
with foreach=False and against gradstep.torch), keep their state_dict, and keep
the invariant "members view their slots" or refuse loudly."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch

import gradstep.torch as gt
from gradstep._torch_flat import FlatParameter, flatten_parameters

from conftest import reference_optimizer

OPTIMIZERS = {
    "Adam": ("Adam", dict(lr=1e-2, weight_decay=1e-2)),
    "Adam-amsgrad": ("Adam", dict(lr=1e-2, amsgrad=True, betas=(0.8, 0.99))),
    "AdamW": ("AdamW", dict(lr=1e-2, weight_decay=0.1)),
    "SGD-momentum": ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-3)),
    "SGD-nesterov": ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    "Adagrad": ("Adagrad", dict(lr=0.05, lr_decay=1e-3, weight_decay=1e-3, initial_accumulator_value=0.1)),
    "RMSprop": ("RMSprop", dict(lr=1e-2, momentum=0.5, centered=True, weight_decay=1e-3)),
    "Adadelta": ("Adadelta", dict(lr=1.0, rho=0.9, weight_decay=1e-3)),
    "Lion": ("Lion", dict(lr=1e-3, weight_decay=0.1)),  # against lion_pytorch.Lion
}
DTYPES = [torch.float32, torch.float64]
STEPS = 8


class Net(torch.nn.Module):
    """Embedding (rows 15..19 never used: zero grad rows), Conv2d, BatchNorm, Linear."""

    def __init__(self, channels_last=False):
        super().__init__()
        self.emb = torch.nn.Embedding(20, 6)
        self.conv = torch.nn.Conv2d(2, 3, 3)
        self.bn = torch.nn.BatchNorm2d(3)
        self.fc = torch.nn.Linear(12, 3)
        if channels_last:
            self.conv.weight.data = self.conv.weight.data.to(memory_format=torch.channels_last)

    def forward(self, tok):
        x = self.emb(tok).view(-1, 2, 3, 6)
        x = torch.tanh(self.bn(self.conv(x)))
        return self.fc(x.flatten(1))


def net(dtype, seed=0, **kw):
    torch.manual_seed(seed)
    return Net(**kw).to(dtype)


def batches(n=STEPS, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, 15, (8, 6), generator=g), torch.randint(0, 3, (8,), generator=g))
            for _ in range(n)]


def backward(model, tok, y):
    torch.nn.functional.cross_entropy(model(tok), y).backward()


def train(model, opt, data, flats=(), zero=None):
    """The usual loop; flats are gathered before each step, as the adapter will."""
    for tok, y in data:
        (zero or opt.zero_grad)()
        backward(model, tok, y)
        for f in flats:
            f._gather_grads()
        opt.step()


def assert_same_params(a, b):
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert pa.dtype == pb.dtype
        assert torch.equal(pa, pb), f"{name}: max diff {(pa - pb).abs().max().item()}"


def assert_views(flat):
    """Every member's data and grad view its slots of flat and flat.grad."""
    assert flat.grad is flat._grad_buffer
    base, gbase = flat.data_ptr(), flat.grad.data_ptr()
    size = flat.element_size()
    for i, (p, off) in enumerate(zip(flat.members, flat.offsets)):
        assert p.data_ptr() == base + off * size, flat.names[i]
        assert p.grad is flat._grad_views[i], flat.names[i]
        assert p.grad.data_ptr() == gbase + off * size, flat.names[i]
        assert torch.equal(flat.detach()[off:off + p.numel()], _memory(p)), flat.names[i]


def _memory(t):
    """t's elements in memory order (what its slot holds)."""
    t = t.detach()
    return t.reshape(-1) if t.is_contiguous() else t.as_strided((t.numel(),), (1,), t.storage_offset())


def padding_mask(flat):
    mask = torch.ones(flat.numel(), dtype=torch.bool)
    for p, off in zip(flat.members, flat.offsets):
        mask[off:off + p.numel()] = False
    return mask


# -- training: bit-identical to the unflattened model ------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", list(OPTIMIZERS))
@pytest.mark.parametrize("impl", ["torch", "gradstep"])
def test_flat_training_is_bit_identical(impl, config, dtype):
    name, kw = OPTIMIZERS[config]

    def cls(params):  # torch.optim's (lion_pytorch's for Lion) or gradstep.torch's
        return reference_optimizer(name, params, **kw) if impl == "torch" else getattr(gt, name)(params, **kw)

    plain, flat_model = net(dtype), net(dtype)
    data = batches()
    train(plain, cls(plain.parameters()), data)
    flats = flatten_parameters(flat_model)
    assert len(flats) == 1 and flats[0].dtype == dtype
    opt = cls(flats)
    # gradstep.torch gathers the members' grads itself; torch.optim needs it done by hand.
    train(flat_model, opt, data, flats if impl == "torch" else ())
    assert_same_params(plain, flat_model)
    assert not torch.equal(plain.fc.weight, net(dtype).fc.weight)  # it trained
    (flat,) = flats
    assert_views(flat)
    pad = padding_mask(flat)
    assert pad.any()
    assert torch.all(flat.detach()[pad] == 0) and torch.all(flat.grad[pad] == 0)
    for key, state in opt.state[flat].items():
        if isinstance(state, torch.Tensor) and state.shape == flat.shape:
            init = kw.get("initial_accumulator_value", 0.0) if key == "sum" else 0.0
            assert torch.all(state[pad] == init), key


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", ["Adam", "SGD-nesterov"])
def test_adapter_and_channels_last(config, dtype):
    """Through gradstep.torch (which gathers the members' grads at each step), with the usual
    loop (model.zero_grad() in between: grads set to None, then fresh); a
    channels_last member keeps its strides inside its slot."""
    name, kw = OPTIMIZERS[config]
    plain, flat_model = net(dtype, channels_last=True), net(dtype, channels_last=True)
    data = batches()
    train(plain, getattr(gt, name)(plain.parameters(), **kw), data)
    flats = flatten_parameters(flat_model)
    assert not flat_model.conv.weight.is_contiguous()
    assert flat_model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    opt = getattr(gt, name)(flats, **kw)
    for i, (tok, y) in enumerate(data):
        (flat_model.zero_grad if i % 2 else opt.zero_grad)()
        backward(flat_model, tok, y)
        opt.step()
    assert_same_params(plain, flat_model)
    assert_views(flats[0])


def test_plain_torch_loop_without_gather():
    """torch.optim's own zero_grad() (set_to_none=True) on a FlatParameter zeroes the
    buffer instead of dropping it, so the usual loop trains the model without any
    gather: autograd accumulates into the installed views."""
    plain, flat_model = net(torch.float32), net(torch.float32)
    data = batches()
    train(plain, torch.optim.Adam(plain.parameters(), lr=1e-2, foreach=False), data)
    flats = flatten_parameters(flat_model)
    train(flat_model, torch.optim.Adam(flats, lr=1e-2, foreach=False), data)
    assert_same_params(plain, flat_model)
    assert_views(flats[0])


@pytest.mark.parametrize("impl", ["torch", "gradstep"])
def test_param_groups_keep_their_weight_decay(impl):
    cls, extra = (torch.optim.AdamW, dict(foreach=False)) if impl == "torch" else (gt.AdamW, {})

    def groups(model):
        decay = [model.emb.weight, model.conv.weight, model.fc.weight]
        return [{"params": decay, "weight_decay": 0.2},
                {"params": [model.conv.bias, model.bn.weight, model.bn.bias, model.fc.bias],
                 "weight_decay": 0.0, "lr": 5e-3}]

    plain, flat_model = net(torch.float64), net(torch.float64)
    data = batches()
    train(plain, cls(groups(plain), lr=1e-2, **extra), data)
    given = groups(flat_model)
    flat_groups = flatten_parameters(given)
    assert [len(g["params"]) for g in flat_groups] == [1, 1]
    assert [g["weight_decay"] for g in flat_groups] == [0.2, 0.0] and flat_groups[1]["lr"] == 5e-3
    assert given[0]["params"][0] is flat_model.emb.weight  # the dicts passed in are not modified
    flats = [g["params"][0] for g in flat_groups]
    assert flats[1].names == tuple(f"param_groups[1]['params'][{i}]" for i in range(4))
    train(flat_model, cls(flat_groups, lr=1e-2, **extra), data, flats)
    assert_same_params(plain, flat_model)
    for f in flats:
        assert_views(f)


def test_one_flat_parameter_per_dtype_in_order_of_first_appearance():
    a = torch.nn.Parameter(torch.randn(3, dtype=torch.float64))
    b = torch.nn.Parameter(torch.randn(5))
    c = torch.nn.Parameter(torch.randn(2, 2, dtype=torch.float64))
    flats = flatten_parameters([a, b, c])
    assert [f.dtype for f in flats] == [torch.float64, torch.float32]
    assert flats[0].members == (a, c) and flats[1].members == (b,)
    assert flats[0].offsets == (0, 8)  # 64 bytes = 8 float64
    for f in flats:
        assert f.data_ptr() % 64 == 0 and f.grad.data_ptr() % 64 == 0
        assert_views(f)


@pytest.mark.parametrize("align", [4, 64, 256])
def test_alignment(align):
    ps = [torch.nn.Parameter(torch.randn(n)) for n in (1, 17, 0, 33)]
    values = [p.detach().clone() for p in ps]
    (flat,) = flatten_parameters(ps, align_bytes=align)
    for p, v in zip(ps, values):
        assert p.data_ptr() % align == 0 and p.grad.data_ptr() % align == 0
        assert torch.equal(p, v)
    assert torch.all(flat.detach()[padding_mask(flat)] == 0)


# -- padding: no optimizer moves it, except with eps=0 ----------------------------

@pytest.mark.parametrize("name", ["Adam", "AdamW", "Adagrad", "RMSprop", "Adadelta"])
def test_eps_zero_poisons_padding_and_zero_padding_resets_it(name):
    # torch.optim stepping a flat parameter: 0 / 0 makes the padding NaN.
    model = net(torch.float64)
    (flat,) = flatten_parameters(model)
    opt = getattr(torch.optim, name)([flat], eps=0.0, foreach=False)
    backward(model, *batches(1)[0])
    flat._gather_grads()
    opt.step()
    pad = padding_mask(flat)
    assert torch.isnan(flat.detach()[pad]).all()  # 0 / 0: why _zero_padding exists
    members = [p.detach().clone() for p in model.parameters()]
    flat._zero_padding()
    assert torch.all(flat.detach()[pad] == 0)
    for p, before in zip(model.parameters(), members):
        torch.testing.assert_close(p.detach(), before, rtol=0, atol=0, equal_nan=True)
    # gradstep.torch resets the padding after each step with eps=0 (planned and steady steps).
    model = net(torch.float64)
    (flat,) = flatten_parameters(model)
    opt = getattr(gt, name)([flat], eps=0.0)
    for x, y in batches(4):
        opt.zero_grad()
        backward(model, x, y)
        opt.step()
        assert torch.all(flat.detach()[padding_mask(flat)] == 0)
        for key, value in opt.state[flat].items():
            if key != "step":  # the states' padding holds its start value (0; Adagrad's sum: its initial value)
                assert torch.all(value[padding_mask(flat)] == value[padding_mask(flat)][0]), key


# -- state_dict, save, load ---------------------------------------------------------

def test_state_dict_save_load_round_trip():
    model = net(torch.float32)
    flats = flatten_parameters(model)
    opt = gt.Adam(flats, lr=1e-2)
    train(model, opt, batches(3), flats)
    saved = io.BytesIO()
    torch.save(model.state_dict(), saved)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(7.0)
    saved.seek(0)
    model.load_state_dict(torch.load(saved))
    for k, v in model.state_dict().items():
        assert torch.equal(v, expected[k]), k
    assert_views(flats[0])
    # a fresh model loads the flat model's state_dict, and the flat one keeps training
    other = net(torch.float32, seed=5)
    other.load_state_dict(model.state_dict())
    assert_same_params(model, other)
    train(model, opt, batches(1), flats)
    assert_views(flats[0])


def test_whole_model_pickle_and_deepcopy_are_independent_copies():
    model = net(torch.float32)
    (flat,) = flatten_parameters(model)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    copied = copy.deepcopy(model)
    for other in (loaded, copied):
        assert_same_params(model, other)
        with torch.no_grad():
            other.fc.weight.add_(1.0)
        assert not torch.equal(other.fc.weight, model.fc.weight)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(flat)
    with pytest.raises(TypeError, match="cannot be deep-copied"):
        copy.deepcopy(flat)


# -- the invariant: kept, restored, or refused ----------------------------------------

def test_backward_accumulates_into_the_installed_views():
    model = net(torch.float64)
    plain = net(torch.float64)
    (flat,) = flatten_parameters(model)
    views = list(flat._grad_views)
    tok, y = batches(1)[0]
    for _ in range(2):  # twice: accumulates
        backward(model, tok, y)
        backward(plain, tok, y)
    assert all(p.grad is v for p, v in zip(model.parameters(), views))
    for p, q in zip(model.parameters(), plain.parameters()):
        assert torch.equal(p.grad, q.grad)


def test_model_zero_grad_then_backward_then_gather():
    model, plain = net(torch.float64), net(torch.float64)
    (flat,) = flatten_parameters(model)
    tok, y = batches(1)[0]
    backward(model, tok, y)
    model.zero_grad()  # set_to_none=True: the views are dropped
    assert model.fc.weight.grad is None
    backward(model, tok, y)  # fresh tensors outside the buffer
    assert model.fc.weight.grad is not flat._grad_views[flat.names.index("fc.weight")]
    backward(plain, tok, y)
    flat._gather_grads()
    assert_views(flat)
    for p, q in zip(model.parameters(), plain.parameters()):
        assert torch.equal(p.grad, q.grad)
    assert torch.all(flat.grad[padding_mask(flat)] == 0)


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_create_graph_grads_are_gathered():
    model, plain = net(torch.float64), net(torch.float64)
    (flat,) = flatten_parameters(model)
    tok, y = batches(1)[0]
    torch.nn.functional.cross_entropy(model(tok), y).backward(create_graph=True)
    torch.nn.functional.cross_entropy(plain(tok), y).backward()
    flat._gather_grads()
    assert_views(flat)
    assert not flat.grad.requires_grad
    for p, q in zip(model.parameters(), plain.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=0, atol=1e-15)


def test_sparse_embedding_grads():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(10, 4, sparse=True).double()
    dense = copy.deepcopy(emb)
    dense.sparse = False
    (flat,) = flatten_parameters(emb)
    tok = torch.tensor([1, 3, 3, 7])
    emb(tok).sum().backward()  # sparse into the dense view: in place
    dense(tok).sum().backward()
    assert emb.weight.grad is flat._grad_views[0] and torch.equal(emb.weight.grad, dense.weight.grad)
    emb.zero_grad()
    emb(tok).sum().backward()  # a fresh sparse grad
    assert emb.weight.grad.is_sparse
    flat._gather_grads()
    assert_views(flat)
    assert torch.equal(emb.weight.grad, dense.weight.grad)


def test_member_without_grad_gets_a_zero_slot_and_is_stepped():
    """Documented difference from torch.optim (which skips it): the flat step sees
    a zero gradient, so weight decay still moves it."""
    model = torch.nn.ModuleDict({"used": torch.nn.Linear(4, 2), "unused": torch.nn.Linear(4, 2)}).double()
    before = model["unused"].weight.detach().clone()
    (flat,) = flatten_parameters(model)
    opt = gt.SGD([flat], lr=0.1, weight_decay=0.5)
    model["used"](torch.randn(3, 4, dtype=torch.float64)).sum().backward()
    i = flat.names.index("unused.weight")
    with torch.no_grad():
        flat.grad[flat.offsets[i]] = 123.0  # a stale value the slot must lose
    model["unused"].weight.grad = None
    flat._gather_grads()
    assert model["unused"].weight.grad is flat._grad_views[i]
    assert torch.all(model["unused"].weight.grad == 0)
    opt.step()
    torch.testing.assert_close(model["unused"].weight.detach(), before - 0.1 * 0.5 * before, rtol=1e-14, atol=0)
    assert_views(flat)


def test_flat_grad_none_is_restored_and_zero_grad_keeps_views():
    model = net(torch.float64)
    (flat,) = flatten_parameters(model)
    backward(model, *batches(1)[0])
    torch._C.TensorBase.grad.__set__(flat, None)  # below the property, as C++ could
    flat._gather_grads()
    assert flat.grad is flat._grad_buffer and flat.grad.abs().sum() > 0
    model.zero_grad()
    backward(model, *batches(1)[0])
    flat._zero_grad(set_to_none=True)
    assert_views(flat)
    assert torch.all(flat.grad == 0)
    flat.grad = None  # what torch.optim's zero_grad does
    assert flat.grad is flat._grad_buffer
    g = torch.randn(flat.shape, dtype=flat.dtype)
    flat.grad = g
    assert flat.grad is flat._grad_buffer and torch.equal(flat.grad, g)
    with pytest.raises(TypeError, match="flat grad buffer"):
        flat.grad = torch.zeros(3)


def test_replaced_data_raises_and_changes_nothing():
    model = net(torch.float32)
    (flat,) = flatten_parameters(model)
    opt = gt.Adam([flat])
    model.zero_grad()
    backward(model, *batches(1)[0])
    grads = [p.grad for p in model.parameters()]
    model.fc.weight.data = torch.randn(3, 12)
    with pytest.raises(ValueError, match="'fc.weight' no longer views its slot"):
        flat._gather_grads()
    assert all(p.grad is g for p, g in zip(model.parameters(), grads))  # nothing re-pointed
    assert flat._grad_views[0] is not grads[0]
    patched = gt.Adam([flat])
    with pytest.raises(ValueError, match="fc.weight"):
        patched.step()
    assert len(patched.state) == 0 and len(opt.state) == 0
    # the member may be flattened again
    (again,) = flatten_parameters([model.fc.weight])
    assert_views(again)


def test_model_to_another_dtype_raises():
    model = net(torch.float32)
    (flat,) = flatten_parameters(model)
    model.to(torch.float64)
    with pytest.raises(ValueError, match="no longer views its slot"):
        flat._gather_grads()


def test_model_still_computes_the_same():
    model = net(torch.float64)
    tok, _ = batches(1)[0]
    model.eval()
    before = model(tok)
    flatten_parameters(model)
    assert torch.equal(model(tok), before)


# -- bad input raises, naming the parameter, and changes nothing ------------------------

def _bad_inputs():
    t = torch.randn(6, 4)
    flat_owner = [torch.nn.Parameter(torch.randn(3))]
    (already,) = flatten_parameters(flat_owner)
    shared = torch.nn.Parameter(torch.randn(8))
    return [
        ("complex", torch.nn.Parameter(torch.randn(3).to(torch.complex64)), TypeError, "float16, got"),
        ("int", torch.zeros(3, dtype=torch.int64), TypeError, "bfloat16 or float16"),
        ("meta", torch.nn.Parameter(torch.empty(3, device="meta")), TypeError, "CPU"),
        ("sparse", torch.randn(3, 3).to_sparse(), TypeError, "sparse"),
        ("non-leaf", torch.randn(3, requires_grad=True) * 2, ValueError, "leaf"),
        ("expanded", torch.randn(1, 3).expand(4, 3), ValueError, "dense"),
        ("strided slice", t[:, ::2], ValueError, "dense"),
        ("not a tensor", [1.0, 2.0], TypeError, "torch.Tensor"),
        ("flat parameter", already, ValueError, "FlatParameter"),
        ("already flattened", flat_owner[0], ValueError, "already flattened"),
        ("shares memory", torch.nn.Parameter(shared.detach()[2:6]), ValueError, "shares memory"),
    ], shared


@pytest.mark.parametrize("index", range(11))
def test_bad_member_raises_and_changes_nothing(index):
    cases, shared = _bad_inputs()
    label, bad, error, message = cases[index]
    good = [torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(2, 3)), shared]
    good[0].grad = torch.randn(5)
    before = [(p.data_ptr(), p.detach().clone(), p.grad) for p in good]
    with pytest.raises(error, match=message) as info:
        flatten_parameters([*good, bad])
    assert "params[3]" in str(info.value)
    with pytest.raises(error, match=message):
        flatten_parameters([{"params": good[:1], "weight_decay": 0.1}, {"params": [good[1], good[2], bad]}])
    for p, (ptr, value, grad) in zip(good, before):
        assert p.data_ptr() == ptr and torch.equal(p, value) and p.grad is grad
    assert_views(flatten_parameters(good)[0])  # nothing was registered


def test_bad_arguments():
    p, q = torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(3))
    with pytest.raises(ValueError, match="appear only once"):
        flatten_parameters([p, q, p])
    with pytest.raises(ValueError, match="appear only once"):
        flatten_parameters([{"params": [p]}, {"params": [q, p]}])
    with pytest.raises(TypeError, match="single tensor"):
        flatten_parameters(p)
    with pytest.raises(ValueError, match="no parameters"):
        flatten_parameters([])
    with pytest.raises(ValueError, match="no parameters"):
        flatten_parameters(torch.nn.ReLU())
    with pytest.raises(TypeError, match="mixes"):
        flatten_parameters([{"params": [p]}, q])
    with pytest.raises(ValueError, match="no 'params'"):
        flatten_parameters([{"lr": 0.1}])
    for align in (0, 3, -64, 64.0, True):
        with pytest.raises(ValueError, match="power of two"):
            flatten_parameters([p], align_bytes=align)
    with pytest.raises(TypeError, match="not directly"):
        FlatParameter(torch.zeros(3))
    model = net(torch.float32)
    model.fc.weight.data = model.fc.weight.data.to(torch.complex64)  # (bf16/f16 are flattened)
    with pytest.raises(TypeError, match="fc.weight: flat parameters are float32, float64, bfloat16 or float16"):
        flatten_parameters(model)
    assert model.emb.weight.grad is None
    flatten_parameters([model.emb.weight])  # it was not registered as flattened
    frozen = torch.nn.Linear(2, 2)
    frozen.weight.requires_grad_(False)
    (flat,) = flatten_parameters(frozen)
    assert flat.names == ("bias",)  # a module's frozen parameters stay where they are


def test_share_memory_moves_the_storage_and_the_views_follow():
    model, plain = net(torch.float32), net(torch.float32)
    (flat,) = flatten_parameters(model)
    tok, y = batches(1)[0]
    backward(model, tok, y)
    ptr = flat.data_ptr()
    model.share_memory()  # moves the storages (params and grads) into shared memory
    assert flat.data_ptr() != ptr and flat.is_shared()
    backward(model, tok, y)
    flat._gather_grads()  # no false alarm: every member still views its slot
    assert_views(flat)
    for _ in range(2):
        backward(plain, tok, y)
    for p, q in zip(model.parameters(), plain.parameters()):
        assert torch.equal(p.grad, q.grad)


def test_replaced_flat_data_raises():
    model = net(torch.float32)
    (flat,) = flatten_parameters(model)
    flat.data = flat.data.clone()
    with pytest.raises(ValueError, match="'emb.weight' no longer views its slot"):
        flat._gather_grads()


def test_member_replaced_after_steady_steps_raises_and_changes_nothing():
    model = net(torch.float64)
    (flat,) = flatten_parameters(model)
    opt = gt.Adam([flat], lr=1e-2)
    train(model, opt, batches(3))
    assert opt._steady is not None and opt._steady[0] is not None  # the steady path is in use
    before = flat.detach().clone()
    states = {k: v.clone() for k, v in opt.state[flat].items()}
    opt.zero_grad()
    backward(model, *batches(1)[0])
    model.fc.weight.data = model.fc.weight.detach().clone()
    with pytest.raises(ValueError, match="'fc.weight' no longer views its slot"):
        opt.step()
    assert torch.equal(flat.detach(), before)
    assert all(torch.equal(v, states[k]) for k, v in opt.state[flat].items())
