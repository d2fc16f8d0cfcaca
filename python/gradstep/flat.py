"""Flat buffers: many tensors in one contiguous allocation, stepped as one vector."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Optional, Union

import numpy as np

# Every tensor starts on a cache-line boundary, so each view is as aligned
# as a separate allocation would be.
ALIGN_BYTES = 64

Shape = Union[int, tuple[int, ...]]


class FlatBuffers:
    """Tensors of given shapes laid out in one aligned allocation, plus their grads.

    Made by :func:`flatten`. ``params`` and ``grads`` are lists of numpy views,
    one per tensor, into two 1-D allocations, ``param_buffer`` and
    ``grad_buffer``. Each tensor starts on a 64-byte boundary; the few padding
    elements between tensors are zero in every buffer and stay zero under
    every optimizer (a zero gradient on a zero parameter moves nothing).

    Pass the object itself to an optimizer (``gs.Adam(flat)``): its states are
    then allocated with the same layout (``new_buffer``), and a step updates
    the whole model as one long vector, one kernel call with no per-tensor
    work, from ``grads``.
    """

    def __init__(self, shapes: Sequence[tuple[int, ...]], dtype: np.dtype) -> None:
        self.dtype = np.dtype(dtype)
        self.shapes = [tuple(int(d) for d in s) for s in shapes]
        align = max(1, ALIGN_BYTES // self.dtype.itemsize)
        self.offsets: list[int] = []
        end = 0
        for shape in self.shapes:
            self.offsets.append(end)
            end += -(-int(np.prod(shape, dtype=np.int64)) // align) * align
        self.size = end
        self.param_buffer, self.params = self.new_buffer(0.0)
        self.grad_buffer, self.grads = self.new_buffer(0.0)

    def new_buffer(self, fill: float = 0.0) -> tuple[np.ndarray, list[np.ndarray]]:
        """A new aligned allocation with this layout: (1-D buffer, per-tensor views).

        The tensors' elements are set to ``fill``, the padding to zero.
        """
        raw = np.empty(self.size * self.dtype.itemsize + ALIGN_BYTES, dtype=np.uint8)
        start = -raw.ctypes.data % ALIGN_BYTES
        buffer = raw[start:start + self.size * self.dtype.itemsize].view(self.dtype)
        buffer.fill(0)
        views = []
        for shape, offset in zip(self.shapes, self.offsets):
            n = int(np.prod(shape, dtype=np.int64))
            view = buffer[offset:offset + n].reshape(shape)
            if fill:
                view.fill(fill)
            views.append(view)
        return buffer, views

    def __len__(self) -> int:
        return len(self.shapes)

    def __repr__(self) -> str:
        return (f"FlatBuffers({len(self.shapes)} tensors, {self.size} elements with padding, "
                f"{self.dtype})")


def _is_shape(item: Any) -> bool:
    if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
        return True
    return isinstance(item, tuple) and all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in item
    )


def _values(item: Any, what: str) -> np.ndarray:
    """The values of `item` as an array (flatten copies them in, so a copy is fine)."""
    if isinstance(item, np.ma.MaskedArray):
        raise TypeError(f"{what}: is a masked array, whose mask would be ignored; "
                        "pass its .data or .filled(value)")
    if callable(getattr(item, "is_neg", None)):
        # A torch tensor: view bits numpy cannot see through __array__/DLPack.
        if item.is_conj():
            raise TypeError(f"{what}: is a conjugate view (torch's conj bit set); "
                            "gradstep takes real float32/float64 tensors only")
        item = item.detach()
        if item.is_neg():
            item = item.resolve_neg()
        if getattr(item, "_is_zerotensor", lambda: False)():
            item = item.clone()
    return np.asarray(item)


def flatten(items: Iterable[Any], dtype: Optional[Any] = None) -> FlatBuffers:
    """Lay out tensors in one contiguous, aligned allocation (and their grads in another).

    ``items`` are arrays, whose values are copied in, or shapes (an int or a
    tuple of ints), which start at zero. ``dtype`` is float32 or float64; by
    default the arrays' common dtype (they must all have the same one), or
    float32 if there are only shapes. Returns a :class:`FlatBuffers`:

    >>> flat = gs.flatten([w, b])        # copies w and b
    >>> w, b = flat.params               # use the views from now on
    >>> opt = gs.Adam(flat, lr=1e-3)     # states laid out the same way
    >>> ...                              # write gradients into flat.grads
    >>> opt.step()                       # the whole model is one vector

    The original arrays are not touched or kept: train through ``flat.params``.
    """
    entries = list(items)
    if not entries:
        raise ValueError("flatten() got an empty list of tensors")
    shapes: list[tuple[int, ...]] = []
    arrays: list[Optional[np.ndarray]] = []
    dtypes = set()
    for i, item in enumerate(entries):
        array: Optional[np.ndarray] = None
        if _is_shape(item):
            shape = (int(item),) if not isinstance(item, tuple) else tuple(int(d) for d in item)
            if any(d < 0 for d in shape):
                raise ValueError(f"items[{i}]: negative dimension in shape {shape}")
            shapes.append(shape)
        else:
            array = _values(item, f"items[{i}]")
            if array.dtype.kind != "f":
                raise TypeError(f"items[{i}]: expected a float array or a shape, got {array.dtype}")
            shapes.append(array.shape)
            dtypes.add(array.dtype)
        arrays.append(array)
    if dtype is None:
        if len(dtypes) > 1:
            raise TypeError(f"arrays have different dtypes {sorted(str(d) for d in dtypes)}; "
                            "pass dtype= to convert them")
        chosen = dtypes.pop() if dtypes else np.dtype(np.float32)
    else:
        chosen = np.dtype(dtype)
    if chosen not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64, got {chosen}")
    flat = FlatBuffers(shapes, chosen)
    for view, source in zip(flat.params, arrays):
        if source is not None:
            np.copyto(view, source, casting="same_kind")
    return flat
