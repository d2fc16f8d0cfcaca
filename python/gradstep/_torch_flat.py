"""Flat parameters for torch models: every parameter a view into one aligned buffer.

:func:`flatten_parameters` copies a model's parameters (and their grads) into
one allocation per dtype, then points each parameter's ``.data`` and ``.grad``
at its slot. The model, its ``state_dict``, ``load_state_dict`` and
``torch.save`` keep working (they see ordinary parameters that happen to be
views), autograd accumulates straight into the flat grad buffer (it adds in
place into an existing ``.grad``), and an optimizer given the returned
:class:`FlatParameter` objects steps the whole model as one contiguous vector.

Layout. Members are laid out in the order given; each starts on an
``align_bytes`` boundary (64 by default, a cache line), so the slots are as
aligned as separate allocations. The padding between slots is zero in the
params and grads, and no optimizer moves it: with a zero parameter and a zero
gradient every state stays at its initial value and every update is zero
(``p -= lr * 0 / (sqrt(0) + eps)`` and the like), with one exception: an
``eps`` of exactly 0 in Adam, AdamW, Adagrad, RMSprop or Adadelta makes that
``0 / 0``, NaN, as it does for any parameter element whose gradient and
second moment are zero. :meth:`FlatParameter._zero_padding` resets the padding
(call it after such a step). A member that is not C-contiguous but dense (e.g.
channels_last) keeps its strides inside its slot: the slot holds its memory in
the member's memory order, so its grad and states (laid out the same way)
pair element for element, and a channels_last convolution stays channels_last.

Invariant, and how it is kept. After flattening, for each member ``p``:
``p.data`` views its slot of ``flat`` and ``p.grad`` is the installed view of
its slot of ``flat.grad``. Two things break it:

* ``p.grad`` replaced (``model.zero_grad()`` sets grads to None by default;
  the next backward then makes a fresh tensor; ``create_graph=True`` replaces
  the grad too). :meth:`FlatParameter._gather_grads`, called at the start of
  each optimizer step, copies such a grad into its slot and re-installs the
  view; a member whose grad is None gets a zero-filled slot and its view
  back, so the flat step sees a zero gradient for it. This differs from
  torch.optim, which skips a parameter without a grad (a zero gradient still
  decays momentum and weight); FSDP's flat parameters behave as we do.
* ``p.data`` replaced (``p.data = t``, ``model.to(dtype)``,
  ``model.half()``): the model no longer uses the memory the optimizer steps.
  ``_gather_grads`` raises ValueError naming the member rather than silently
  stepping stale memory (re-copying would silently undo a dtype change). Copy
  new values in place instead (``with torch.no_grad(): p.copy_(t)``), or
  flatten the model again and build a new optimizer (a member whose data left
  its slot may be flattened again). Moving the whole storage
  (``model.share_memory()``) keeps every view in its slot and is accepted.

Not detected: ``model.load_state_dict(..., assign=True)`` and anything else
that replaces the model's Parameter *objects* (the flat parameter keeps
stepping the old ones), and a member's grad view retargeted in place
(``p.grad.data = t``; ``model.to`` does this, but it also moves ``p.data``,
which is detected).
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Iterable
from typing import Any

import torch
from torch.utils.weak import WeakIdKeyDictionary

__all__ = ["FlatParameter", "flatten_parameters"]

_FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_GRAD: Any = torch._C.TensorBase.grad  # the C-level .grad, below FlatParameter's property
_get_grad = _GRAD.__get__
_set_grad = _GRAD.__set__
_data_ptr = torch.Tensor.data_ptr
_is = operator.is_

# member -> (weakref to its FlatParameter, index): "already flattened" without
# an attribute on the parameter (which torch.save(model) would pickle).
_FLATTENED: Any = WeakIdKeyDictionary()
_PRIVATE = object()


_CONTIGUOUS: tuple[int, ...] = (-1,)  # _dense_strides of every C-contiguous tensor (no stride is negative)


def _dense_strides(t: torch.Tensor) -> tuple[int, ...] | None:
    """The strides of t's dims longer than 1 if t is dense and non-overlapping
    (its elements tile its memory span exactly), else None. Two tensors of one
    shape with equal such strides keep their elements in the same memory order.
    (gradstep.torch's test of a steppable layout too.)"""
    if t.is_contiguous():  # the common case, without building the tuple
        return _CONTIGUOUS
    strides = tuple(st for sz, st in zip(t.shape, t.stride()) if sz != 1)
    if t.numel() == 0:
        return strides
    expected = 1
    for st, sz in sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz != 1):
        if st != expected:
            return None
        expected *= sz
    return strides


class FlatParameter(torch.nn.Parameter):
    """One dtype's share of a flattened model: a 1-D parameter over the flat buffer.

    Made by :func:`flatten_parameters`, never directly. Its ``.grad`` is the
    flat grad buffer, which the members' grads view; hand it to an optimizer
    in place of the members. ``members``, ``names`` and ``offsets`` (in
    elements) describe the layout. Setting ``.grad`` to None (what
    ``torch.optim.Optimizer.zero_grad()`` does by default) zeroes the buffer
    in place instead, so the members' grad views stay valid; setting it to a
    tensor copies that tensor's values in. A FlatParameter cannot be pickled
    or deep-copied (its members would not follow it); save the model's
    ``state_dict`` instead.
    """

    _members: tuple[torch.Tensor, ...]
    _names: tuple[str, ...]
    _offsets: tuple[int, ...]
    _meta: tuple[tuple[Any, ...], ...]  # (shape, stride, dtype) of each member's slot view
    _ptrs: list[int]                    # each member's data_ptr when it views its slot
    _grad_views: list[torch.Tensor]     # the grad views installed (their identity is the check)
    _grad_ptrs: list[int]
    _grad_buffer: torch.Tensor
    _ptr: int
    _padding: torch.Tensor | None       # indices of the padding elements
    _views: list[torch.Tensor]          # while being built: the slot views install() puts in .data

    def __new__(cls, data: torch.Tensor, requires_grad: bool = True, *, _token: object = None) -> FlatParameter:
        if _token is not _PRIVATE:
            raise TypeError("FlatParameter is made by gradstep.torch.flatten_parameters(), not directly")
        return torch.Tensor._make_subclass(cls, data, requires_grad)  # type: ignore[no-any-return]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    # -- .grad: always the flat grad buffer --------------------------------

    @property  # type: ignore[override]
    def grad(self) -> torch.Tensor | None:
        return _get_grad(self)  # type: ignore[no-any-return]

    @grad.setter
    def grad(self, value: torch.Tensor | None) -> None:
        buffer = self.__dict__.get("_grad_buffer")
        if buffer is None:  # while being built
            _set_grad(self, value)
        elif value is None:
            self._zero_grad(True)
        elif value is not buffer:
            if not isinstance(value, torch.Tensor) or value.shape != buffer.shape or value.dtype != buffer.dtype:
                raise TypeError(f"FlatParameter.grad must be a {buffer.dtype} tensor of shape "
                                f"{tuple(buffer.shape)} (its values are copied into the flat grad buffer)")
            with torch.no_grad():
                buffer.copy_(value)
            _set_grad(self, buffer)
        else:
            _set_grad(self, buffer)

    # -- layout ----------------------------------------------------------------

    @property
    def members(self) -> tuple[torch.Tensor, ...]:
        return self._members

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    @property
    def offsets(self) -> tuple[int, ...]:
        return self._offsets

    def _slot(self, buffer: torch.Tensor, i: int) -> torch.Tensor:
        shape, stride, _ = self._meta[i]
        return buffer.as_strided(shape, stride, buffer.storage_offset() + self._offsets[i])

    def _views_slot(self, i: int) -> bool:
        # Relative to the flat buffer: model.share_memory() moves the whole storage.
        p = self._members[i]
        return (p.data_ptr() - self.data_ptr() == self._offsets[i] * self.element_size()
                and p.untyped_storage().data_ptr() == self.untyped_storage().data_ptr()
                and (p.shape, p.stride(), p.dtype) == self._meta[i])

    def _check_members(self) -> None:
        """Raise unless every member views its slot (wherever the storage now is), then
        record where they are."""
        for i in range(len(self._members)):
            if not self._views_slot(i):
                raise ValueError(
                    f"flat parameter member {self._names[i]!r} no longer views its slot of the flat "
                    "buffer (its .data was replaced, e.g. by `p.data = ...` or model.to(...)): the "
                    "optimizer would step memory the model does not use. Copy new values in place "
                    "(`with torch.no_grad(): p.copy_(t)`), or flatten the model again and build a new "
                    "optimizer")
        self._ptr = self.data_ptr()
        self._ptrs = [p.data_ptr() for p in self._members]

    # -- what the optimizer adapter calls --------------------------------------

    def _gather_grads(self) -> None:
        """Make the flat grad buffer hold every member's gradient (start of a step).

        Cheap when nothing changed: per member, its .grad read and compared by
        identity with the installed view and its data pointer compared (a
        replaced .data must not go unnoticed). A member whose grad was
        replaced has it copied into its slot and the view re-installed; a
        member without a grad gets a zero slot (the step sees a zero
        gradient). Raises ValueError, before writing anything, if a member's
        data no longer views its slot.
        """
        members = self._members
        if (_get_grad(self) is self._grad_buffer and _data_ptr(self) == self._ptr
                and all(map(_is, map(_get_grad, members), self._grad_views))
                and list(map(_data_ptr, members)) == self._ptrs):
            return
        if list(map(_data_ptr, members)) != self._ptrs or _data_ptr(self) != self._ptr:
            self._check_members()
        grads: list[tuple[Any] | None] = []
        for i, p in enumerate(members):
            g = _get_grad(p)
            view = self._grad_views[i]
            if g is view and view.data_ptr() == self._grad_ptrs[i]:
                grads.append(None)
                continue
            if g is not None and (g.device.type != "cpu" or g.layout not in (torch.strided, torch.sparse_coo)):
                raise TypeError(f"flat parameter member {self._names[i]!r}: its grad is a {g.layout} "
                                f"tensor on {g.device}; a flat step takes CPU dense or sparse COO grads")
            grads.append((g,))
        buffer = self._grad_buffer
        with torch.no_grad():
            for i, entry in enumerate(grads):
                if entry is None:
                    continue
                (g,) = entry
                fresh = self._grad_views[i]  # reused while it views its slot (it is not p.grad)
                if fresh.data_ptr() != self._grad_ptrs[i] or fresh is g:
                    fresh = self._slot(buffer, i)
                if g is None or g.layout == torch.sparse_coo:
                    fresh.zero_()
                    if g is not None:
                        fresh.add_(g)
                else:
                    fresh.copy_(g)
                _set_grad(members[i], fresh)
                self._grad_views[i] = fresh
                self._grad_ptrs[i] = fresh.data_ptr()
        if _get_grad(self) is not buffer:
            _set_grad(self, buffer)

    def _zero_grad(self, set_to_none: bool = True) -> None:
        """What an optimizer's zero_grad does to a flat parameter: zero the flat
        grad buffer in place and (re-)install every member's grad view.

        ``set_to_none`` is ignored: setting the grads to None would detach the
        members' views, and the next backward would allocate fresh per-member
        grads that the flat step does not see until they are gathered back
        (a copy per member). A zero buffer costs one memset and keeps autograd
        accumulating in place.
        """
        buffer = self._grad_buffer
        members = self._members
        if not all(map(_is, map(_get_grad, members), self._grad_views)):
            for i, p in enumerate(members):
                if _get_grad(p) is not self._grad_views[i] and self._views_slot(i):
                    view = self._grad_views[i]
                    if view.data_ptr() != self._grad_ptrs[i]:
                        view = self._slot(buffer, i)
                    _set_grad(p, view)
                    self._grad_views[i] = view
                    self._grad_ptrs[i] = view.data_ptr()
        with torch.no_grad():
            buffer.zero_()
        if _get_grad(self) is not buffer:
            _set_grad(self, buffer)

    def _zero_padding(self) -> None:
        """Reset the padding between slots to zero (after a step with eps=0, the
        only case in which an optimizer moves it: 0 / 0 is NaN)."""
        if self._padding is not None:
            with torch.no_grad():
                self.detach().index_fill_(0, self._padding, 0)

    # -- not a stand-alone tensor ---------------------------------------------

    def __repr__(self, *, tensor_contents: Any = None) -> str:  # type: ignore[override]
        return (f"FlatParameter({len(self._members)} members, {self.numel()} elements with padding, "
                f"{self.dtype})")

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("a FlatParameter cannot be pickled (its members would not follow it); "
                        "save the model's state_dict() and flatten again after loading")

    def __deepcopy__(self, memo: Any) -> Any:
        raise TypeError("a FlatParameter cannot be deep-copied (its members would not follow it); "
                        "deep-copy the model and flatten the copy")


def _check_member(p: Any, where: str) -> None:
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"{where}: expected a torch.Tensor, got {type(p).__name__}")
    if isinstance(p, FlatParameter):
        raise ValueError(f"{where}: is a FlatParameter already (flatten its members, not it)")
    if p.device.type != "cpu":
        raise TypeError(f"{where}: flat parameters are CPU tensors; got a parameter on {p.device}")
    if p.layout != torch.strided:
        raise TypeError(f"{where}: cannot flatten a sparse parameter ({p.layout})")
    if p.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{where}: flat parameters are float32, float64, bfloat16 or float16, got {p.dtype}")
    if not p.is_leaf:
        raise ValueError(f"{where}: is not a leaf tensor (an optimizer cannot step it)")
    if _dense_strides(p) is None:
        raise ValueError(f"{where}: must be dense and non-overlapping, got shape {tuple(p.shape)} with "
                         f"strides {p.stride()}")
    entry = _FLATTENED.get(p)
    if entry is not None:
        flat, i = entry[0](), entry[1]
        if flat is not None and flat._members[i] is p and flat._views_slot(i):
            raise ValueError(f"{where}: is already flattened (a member of a live FlatParameter)")
    g = p.grad
    if g is not None:
        if g.device.type != "cpu" or g.layout not in (torch.strided, torch.sparse_coo):
            raise TypeError(f"{where}: its grad is a {g.layout} tensor on {g.device}; flat parameters "
                            "take CPU dense or sparse COO grads")
        if g.dtype != p.dtype or g.shape != p.shape:
            raise TypeError(f"{where}: its grad ({g.dtype}, {tuple(g.shape)}) does not match the "
                            f"parameter ({p.dtype}, {tuple(p.shape)})")


def _span(p: torch.Tensor) -> tuple[int, int]:
    return p.data_ptr(), p.data_ptr() + p.numel() * p.element_size()


class _Layout:
    """One FlatParameter to be: members of one dtype, their offsets, the filled buffers."""

    def __init__(self, dtype: torch.dtype, align_bytes: int) -> None:
        self.dtype = dtype
        self.align = max(1, align_bytes // torch.empty((), dtype=dtype).element_size())
        self.align_bytes = align_bytes
        self.members: list[torch.Tensor] = []
        self.names: list[str] = []
        self.offsets: list[int] = []
        self.size = 0

    def add(self, name: str, p: torch.Tensor) -> None:
        self.members.append(p)
        self.names.append(name)
        self.offsets.append(self.size)
        self.size += -(-p.numel() // self.align) * self.align

    def _buffer(self) -> torch.Tensor:
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        raw = torch.zeros(self.size + self.align_bytes // itemsize + 1, dtype=self.dtype)
        start = (-raw.data_ptr() % self.align_bytes) // itemsize
        return raw[start:start + self.size]

    def build(self) -> FlatParameter:
        """The FlatParameter with values and grads copied in; the members are untouched."""
        data, grad = self._buffer(), self._buffer()
        flat = FlatParameter(data, True, _token=_PRIVATE)
        flat._members = tuple(self.members)
        flat._names = tuple(self.names)
        flat._offsets = tuple(self.offsets)
        flat._meta = tuple((p.shape, p.stride(), p.dtype) for p in self.members)
        flat._grad_buffer = grad
        views, grad_views = [], []
        with torch.no_grad():
            for i, p in enumerate(self.members):
                view = flat._slot(data, i)
                view.copy_(p.detach())
                gview = flat._slot(grad, i)
                g = p.grad
                if g is not None:
                    if g.layout == torch.sparse_coo:
                        gview.add_(g)
                    else:
                        gview.copy_(g)
                views.append(view)
                grad_views.append(gview)
        flat._views = views  # installed by install()
        flat._ptrs = [v.data_ptr() for v in views]
        flat._grad_views = grad_views
        flat._grad_ptrs = [v.data_ptr() for v in grad_views]
        flat._ptr = flat.data_ptr()
        padding = [j for off, p, nxt in zip(self.offsets, self.members, self.offsets[1:] + [self.size])
                   for j in range(off + p.numel(), nxt)]
        flat._padding = torch.tensor(padding, dtype=torch.int64) if padding else None
        _set_grad(flat, grad)
        return flat


def _install(flat: FlatParameter) -> None:
    """Point every member's .data and .grad at its slots (cannot fail: all checked)."""
    views = flat.__dict__.pop("_views")
    for i, (p, view, gview) in enumerate(zip(flat._members, views, flat._grad_views)):
        p.data = view
        _set_grad(p, gview)
        _FLATTENED[p] = (weakref.ref(flat), i)


def _entries(items: Iterable[Any], where: str) -> list[tuple[str, Any]]:
    if isinstance(items, torch.Tensor):
        raise TypeError(f"{where}: expected an iterable of tensors, got a single tensor (wrap it in a list)")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            out.append((item[0], item[1]))  # a named parameter, as named_parameters() yields
        else:
            out.append((f"{where}[{i}]", item))
    return out


def _layouts(entries: list[tuple[str, Any]], align_bytes: int, seen: dict[int, str]) -> list[_Layout]:
    layouts: dict[torch.dtype, _Layout] = {}
    for name, p in entries:
        _check_member(p, name)
        if id(p) in seen:
            raise ValueError(f"{name}: the same tensor as {seen[id(p)]}; a parameter may appear only once")
        seen[id(p)] = name
        if p.dtype not in layouts:
            layouts[p.dtype] = _Layout(p.dtype, align_bytes)
        layouts[p.dtype].add(name, p)
    return list(layouts.values())


def flatten_parameters(obj: Any, *, align_bytes: int = 64) -> Any:
    """Make parameters and their grads views into one aligned buffer per dtype.

    ``obj`` is an ``nn.Module`` (its parameters that require grad), an
    iterable of tensors (or of ``(name, tensor)`` pairs), or a list of torch
    param-group dicts (``{"params": [...], "weight_decay": 0.0, ...}``).
    Returns a list of :class:`FlatParameter` (one per dtype, in order of first
    appearance), or, for groups, new group dicts with the same entries and
    ``"params"`` replaced by that group's flat parameters (each group is
    flattened on its own, so it keeps its hyperparameters; the dicts passed in
    are not modified). Pass the result to an optimizer:

    >>> opt = gradstep.torch.Adam(flatten_parameters(model), lr=1e-3)

    Members are CPU, dense float32/float64/bfloat16/float16 leaf tensors, each appearing once,
    not already flattened; each slot starts on an ``align_bytes`` boundary (a
    power of two), padding zero. Bad input raises TypeError or ValueError
    naming the parameter, and changes nothing.
    """
    if isinstance(align_bytes, bool) or not isinstance(align_bytes, int) or align_bytes < 1 \
            or align_bytes & (align_bytes - 1):
        raise ValueError(f"align_bytes must be a positive power of two, got {align_bytes!r}")
    seen: dict[int, str] = {}
    groups: list[dict[str, Any]] | None = None
    if isinstance(obj, torch.nn.Module):
        planned = [_layouts([(n, p) for n, p in obj.named_parameters() if p.requires_grad],
                            align_bytes, seen)]
    else:
        if isinstance(obj, torch.Tensor):
            raise TypeError("flatten_parameters() takes a module, an iterable of tensors or a list of "
                            "param-group dicts, not a single tensor (wrap it in a list)")
        items = list(obj)
        dicts = [isinstance(item, dict) for item in items]
        if any(dicts):
            if not all(dicts):
                raise TypeError("flatten_parameters(): mixes param-group dicts and tensors")
            groups = items
            planned = []
            for gi, group in enumerate(groups):
                if "params" not in group:
                    raise ValueError(f"param_groups[{gi}]: has no 'params' entry")
                params = group["params"]
                if isinstance(params, set):
                    raise TypeError(f"param_groups[{gi}]['params']: a set has no order; use a list")
                params = [params] if isinstance(params, torch.Tensor) else params
                planned.append(_layouts(_entries(params, f"param_groups[{gi}]['params']"), align_bytes,
                                        seen))
        else:
            planned = [_layouts(_entries(items, "params"), align_bytes, seen)]
    named = [(name, p) for layouts in planned for layout in layouts
             for name, p in zip(layout.names, layout.members)]
    if not named:
        raise ValueError("flatten_parameters(): no parameters to flatten")
    spans = sorted((_span(p), name) for name, p in named if p.numel())
    for (a, name_a), (b, name_b) in zip(spans, spans[1:]):
        if b[0] < a[1]:
            raise ValueError(f"{name_b}: shares memory with {name_a}; flattening would make them "
                             "independent copies")
    # Every check passed: build (copies only), then install (cannot fail).
    built = [[layout.build() for layout in layouts] for layouts in planned]
    for flats in built:
        for flat in flats:
            _install(flat)
    if groups is None:
        return built[0]
    return [{**group, "params": flats} for group, flats in zip(groups, built)]
