"""Direct in-place kernel calls, for trainers that own their optimizer state.

Each function updates ``param`` (and the state buffers) in place from ``grad``
with the same C++ kernel the optimizer classes use. Every argument may also be
a list of arrays, to update many tensors in one call. ``step`` is the 1-based
number of this update (torch's ``state["step"]`` after its increment).

One function per declared optimizer (``adam_step``, ``adamw_step``, ...),
generated from its declaration in the C++ core: the state buffers by torch's
names (those needed only by some options default to None), then ``lr``,
``step`` and every option by keyword, with the declared defaults. An
optimizer that carries values from step to step (Prodigy's ``d``) takes them
by keyword too and returns their new values as a dict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Optional

import numpy as np

from gradstep import _core, _spec


def _listed(x: Any) -> list[Any]:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _run(options: Any, param: Any, grad: Any, states: Sequence[Optional[Any]],
         names: Sequence[str], step: int, carried: Sequence[str] = ()) -> Optional[dict[str, float]]:
    options.validate()  # options.lr is this update's rate
    params = _listed(param)
    states = [_sized(s, params, extent) for s, extent in zip(states, _extents[type(options)])]
    grads = _listed(grad)
    # Grads of another dtype than their param's (half grads of float32 params): said so.
    grad_dtypes = [g.dtype if isinstance(g, np.ndarray) and isinstance(p, np.ndarray) and g.dtype != p.dtype
                   else None for g, p in zip(grads, params)]
    tensor_set = _core.TensorSet(
        params, [None if s is None else _listed(s) for s in states], list(names), options, None,
        grad_dtypes if any(d is not None for d in grad_dtypes) else None,
    )
    tensor_set.set_options(options)
    tensor_set.set_lr(options.lr)
    tensor_set.step(grads, step)
    if not carried:
        return None
    after = tensor_set.options
    return {name: float(getattr(after, name)) for name in carried}


def _sized(state: Any, params: list[Any], extent: str) -> Any:
    """A state of another extent than the param's given as None (or None for some params):
    an empty buffer for each param that has none in it (Adafactor's row_var of a vector)."""
    if extent == "full" or (state is not None and not isinstance(state, (list, tuple))):
        return state
    given = [None] * len(params) if state is None else list(state)
    if len(given) != len(params):
        return given
    return [np.empty(0, np.asarray(p).dtype) if s is None else s for s, p in zip(given, params)]


# Per options class, the extent of each state slot.
_extents: dict[type, tuple[str, ...]] = {s.options: tuple(st.extent for st in s.states) for s in _spec.optimizers()}


def _kernel_function(spec: _spec.OptimizerSpec) -> Callable[..., Any]:
    """gs.kernels.<x>_step as Python source, so its signature is a plain one."""
    lr = spec.field("lr")
    states = [s.name + ("=None" if s.needed_when else "") for s in spec.states]
    options = [f"{f.name}={f.arg_default!r}" for f in spec.kernel_fields]
    signature = ", ".join(["param", "grad", *states, "*", "lr" + (f"={lr.default!r}" if lr.kernel_default else ""),
                           "step", *options])
    fields = ", ".join(f"{f.name}=_fields[{f.name!r}].to_option({f.name})" if f.optional else f"{f.name}={f.name}"
                       for f in spec.kernel_fields)
    fixed = "".join(f", {k}={v!r}" for k, v in spec.variant_fixed.items())
    if spec.mode is not None:  # the params hold the point steps are taken at (Schedule-Free's y)
        fixed += f", {spec.mode.flag}=True"
    values = {**spec.variant_fixed, **{f.name: f.name for f in spec.kernel_fields}}
    needed = ", ".join(s.name if s.needed_when is None else f"{s.name} if {values[s.needed_when]} else None"
                       for s in spec.states)
    source = (f"def {spec.kernel}({signature}):\n"
              f"    options = _options(lr=lr, {fields}{fixed})\n"
              f"    return _run(options, param, grad, [{needed}], _names, step, _carried)\n")
    namespace: dict[str, Any] = {"_options": spec.options, "_run": _run, "_names": spec.state_names(),
                                 "_carried": tuple(f.name for f in spec.carried if f.type != "flag"),
                                 "_fields": {f.name: f for f in spec.kernel_fields}, "inf": math.inf}
    exec(source, namespace)  # noqa: S102 - the source is built from the declaration only
    fn: Callable[..., Any] = namespace[spec.kernel]
    fn.__module__ = __name__
    states_doc = ", ".join(f"``{s.name}``" + (f" (when {s.needed_when})" if s.needed_when else "")
                           for s in spec.states)
    carried = [f.name for f in spec.carried if f.type != "flag"]
    returns = (f"\n\nReturns the carried values after the update ({', '.join(carried)}), for the next call."
               if carried else "")
    if spec.mode is not None:
        returns += (f" ``param`` is taken to be in the state gs.{spec.name}.{spec.mode.on}() "
                    "puts it in.")
    fn.__doc__ = (f"One {spec.name} update in place; state buffers {states_doc}.{returns}\n\n{spec.doc()}\n")
    return fn


KERNELS: dict[str, Callable[..., Any]] = {s.kernel: _kernel_function(s) for s in _spec.optimizers()}
globals().update(KERNELS)
__all__ = ["KERNELS", *KERNELS]


def __getattr__(name: str) -> Callable[..., None]:
    # Reached only for names that are not here; tells type checkers that the
    # generated names (gs.kernels.adam_step) are functions.
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
