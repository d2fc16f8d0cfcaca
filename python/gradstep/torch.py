"""torch.optim optimizers whose step runs in gradstep's C++ kernels.

Each class here *is* its torch.optim twin (a subclass): same constructor,
defaults, param groups, hooks, ``zero_grad`` and ``state_dict`` layout, so a
checkpoint moves between ``torch.optim.Adam`` and ``gradstep.torch.Adam`` in
both directions and torch's LR schedulers drive it. An optimizer torch.optim
has not is a ``torch.optim.Optimizer`` with its reference package's
constructor, param groups and ``state_dict`` layout (``lion_pytorch.Lion``),
which it does not import. Only ``step`` differs: a param group's tensors are
updated in place through zero-copy numpy views, one C++ call per group (per
distinct step count, when some parameters skipped steps).

The package references that keep the values their step carries in every
param group (prodigyopt.Prodigy, dadaptation.DAdaptAdam and DAdaptSGD,
timm.optim.Lamb, schedulefree.AdamWScheduleFree and SGDScheduleFree) are
mirrored with those keys: the carried values go from the groups into the C++
step and back. Prodigy, D-Adaptation and Lamb reduce across all groups, in one
C++ call whose tensors each take their group's options where the reference
reads them per group (``TensorSet.step_groups``; the rest, and the carried
values, from ``param_groups[0]``, as there). A group whose value of a per-group
option the kernel does not take (Prodigy's d0, dadaptation's layer_scale)
differs from the first group's raises NotImplementedError before any write.
Schedule-Free steps each group alone; ``train()``/``eval()`` are its mode
switch. These adapters step contiguous parameters only. CPU float32, float64,
bfloat16 and float16 dense tensors only, in any non-overlapping layout
(channels_last, transposed): params, grads and states are stepped as 1-D views
of their memory in the param's element order.

bfloat16/float16 parameters (grads of the param's dtype, as torch makes them)
are computed in float32 per chunk by the C++ core and rounded back once per
step. Every optimizer takes four keyword-only options, kept in each param
group (so they travel in a state_dict; a state_dict without them, torch's,
keeps the optimizer's own):

* ``state_dtype``: None (float32 states for bf16/f16 params, the param's dtype
  otherwise), ``"param"`` (the param's dtype: torch's layout, e.g. its
  ``fused=True`` Adam's) or ``"float32"``. States of another extent than the
  param's (Adafactor's row_var/col_var/variance) are float32 in the kernel;
  with ``"param"`` gradstep.torch keeps them in the param's dtype as torch
  does and steps float32 copies of them (such groups take the planned step).
  Prodigy, D-Adaptation and Lamb refuse ``"param"`` for half params: their
  step sums over their states between passes, so the states stay float32.
* ``master_weights``: a float32 master copy of each bf16/f16 param in its
  state under ``"master_param"``; the param is rounded from it every step. A
  state without one (torch's) starts it from the param.
* ``rounding`` (``"nearest"`` or ``"stochastic"``) and ``seed``: how the
  param is rounded. Stochastic rounding's random bits are keyed by (seed,
  step, tensor, element) in the core, the tensor by its index in its C++ set;
  gradstep.torch makes the key unique and independent of ISA and threads by
  giving each set the seed ``mix(seed, a)`` where ``a`` is the position of its
  first param in the optimizer's flat order (over all groups), and ``seed``
  itself when ``a`` is 0: with one set (every param with a grad at the same
  step) the key is exactly (seed, step, flat position). SGD and Lion keep no
  step count: for their stochastic rounding each bf16/f16 param keeps
  ``state["rounding_step"]`` (an int), folded into the set's seed, and their
  groups take the planned step.

``lr`` may also be a gradstep schedule (or any callable of the 0-based step),
evaluated at each parameter's own step count (an optimizer that keeps none,
SGD or Lion: at 0 on its first step, at 1 after).
"""

from __future__ import annotations

import inspect
import itertools
import re
import textwrap
import threading
from collections.abc import Callable
from typing import Any, ClassVar

import ml_dtypes
import numpy as np
import torch
from torch.optim import optimizer as _optimizer

from gradstep import _core, _spec
from gradstep import precision as _precision
from gradstep._torch_flat import _CONTIGUOUS, FlatParameter, _dense_strides, flatten_parameters

_HALF_DTYPES = (torch.bfloat16, torch.float16)
_FLOAT_DTYPES = (torch.float32, torch.float64, *_HALF_DTYPES)

# The half-precision options (module docstring), with their defaults: keyword-only
# arguments of every optimizer here, kept in each param group.
_HALF_OPTIONS: dict[str, Any] = {"state_dtype": None, "master_weights": False, "rounding": "nearest", "seed": 0}
_MASTER = "master_param"  # state key of a bf16/f16 param's float32 master copy
_ROUNDING_STEP = "rounding_step"  # state key: the stochastic rounding count of SGD's and Lion's half params
_M64 = (1 << 64) - 1


def _check_half_options(values: dict[str, Any], where: str = "") -> None:
    """The half-precision options' values (not yet against any param): gradstep.precision's rules."""
    try:
        _precision.checked(values.get("state_dtype"), values.get("master_weights"), values.get("rounding"),
                           values.get("seed"))
    except (TypeError, ValueError) as e:
        raise type(e)(f"{where}: {e}" if where else str(e)) from None


def _half_values(group: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(map(group.get, _HALF_OPTIONS))


def _check_half_param(p: torch.Tensor, group: dict[str, Any], where: str) -> None:
    """The group's half-precision options hold for p."""
    if group.get("state_dtype") == "float32" and p.dtype == torch.float64:
        raise ValueError(f"{where}: state_dtype='float32' is for float32, bfloat16 and float16 parameters; "
                         "a float64 parameter keeps float64 states (state_dtype=None)")
    if group.get("master_weights") and p.dtype not in _HALF_DTYPES:
        raise ValueError(f"{where}: master_weights=True keeps a float32 master copy of bfloat16/float16 "
                         f"parameters only, got a {p.dtype} one (give it a group with master_weights=False)")


def _state_dtype(p: torch.Tensor, group: dict[str, Any]) -> torch.dtype:
    """The dtype of p's full-size states in this group."""
    if p.dtype in _HALF_DTYPES and group.get("state_dtype") != "param":
        return torch.float32
    return p.dtype


def _mix64(x: int) -> int:
    # splitmix64's finalizer: a bijection of 64-bit ints
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _M64
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _M64
    return x ^ (x >> 31)


def _set_seed(seed: int, first: int, count: int | None = None) -> int:
    """The seed of a C++ set whose first param is at flat position first (module
    docstring): unique per set, the group's seed itself for a set starting at 0."""
    if first == 0 and count is None:
        return int(seed)
    out = _mix64(_mix64(int(seed) ^ 0x9E3779B97F4A7C15) ^ first)
    return out if count is None else _mix64(out ^ _mix64(count + 1))


def _master_of(p: torch.Tensor) -> torch.Tensor:
    """A new float32 master copy of p, laid out as p."""
    return torch.empty_like(p, dtype=torch.float32, memory_format=torch.preserve_format).copy_(p.detach())


def _check_master(t: Any, p: torch.Tensor, where: str) -> None:
    if not isinstance(t, torch.Tensor) or t.layout != torch.strided or t.device.type != "cpu":
        raise TypeError(f"{where}: state '{_MASTER}' must be a dense CPU torch.Tensor")
    if t.dtype != torch.float32:
        raise TypeError(f"{where}: state '{_MASTER}' must be float32, got {t.dtype}")
    if t.shape != p.shape:
        raise ValueError(f"{where}: state '{_MASTER}' shape {tuple(t.shape)} differs from the parameter's "
                         f"{tuple(p.shape)}")


def _where(gi: int, i: int | None = None) -> str:
    return f"param_groups[{gi}]" if i is None else f"param_groups[{gi}]['params'][{i}]"


def _flat(t: torch.Tensor) -> torch.Tensor:
    """A 1-D view of a dense tensor over its memory, in memory order."""
    t = t.detach()
    if t.is_contiguous():
        return t.reshape(-1)
    return t.as_strided((t.numel(),), (1,), t.storage_offset())


def _like(t: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """t's values laid out in memory as p is (empty_like keeps dense strides)."""
    out = torch.empty_like(p, dtype=t.dtype, memory_format=torch.preserve_format)
    return out.copy_(t)


def _witness(t: torch.Tensor) -> tuple[Any, ...]:
    return (t.data_ptr(), t.dtype, t.shape, t.stride())


def _check_param(p: Any, where: str) -> None:
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"{where}: expected a torch.Tensor, got {type(p).__name__}")
    if p.device.type != "cpu":
        raise TypeError(f"{where}: gradstep.torch runs on the CPU; got a parameter on {p.device}")
    if p.layout != torch.strided:
        raise TypeError(f"{where}: gradstep.torch does not support sparse parameters ({p.layout})")
    if p.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{where}: gradstep.torch supports float32, float64, bfloat16 and float16 parameters, "
                        f"got {p.dtype}")
    if _dense_strides(p) is None:
        raise ValueError(f"{where}: must be dense and non-overlapping to be updated in place, got shape "
                         f"{tuple(p.shape)} with strides {p.stride()} (an expanded or overlapping view)")


def _check_like(t: Any, p: torch.Tensor, where: str, what: str, dtype: torch.dtype | None = None) -> None:
    """t (a grad or a state buffer, of dtype, default p's) can be read or written elementwise with p."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{where}: {what} must be a torch.Tensor, got {type(t).__name__}")
    if t.layout != torch.strided:
        raise TypeError(f"{where}: gradstep.torch does not support sparse {what}s ({t.layout})")
    if t.device.type != "cpu":
        raise TypeError(f"{where}: {what} is on {t.device}; gradstep.torch runs on the CPU")
    if t.dtype != (dtype or p.dtype):
        raise TypeError(f"{where}: {what} dtype {t.dtype} differs from {_expected(p, dtype)}")
    if t.shape != p.shape:
        raise ValueError(f"{where}: {what} shape {tuple(t.shape)} differs from the parameter's "
                         f"{tuple(p.shape)}")


def _expected(p: torch.Tensor, dtype: torch.dtype | None) -> str:
    if dtype is None or dtype == p.dtype:
        return f"the parameter's {p.dtype}"
    return f"{dtype} (the states of a {p.dtype} parameter with this group's state_dtype)"


def _check_sized(t: Any, p: torch.Tensor, shape: torch.Size, where: str, what: str,
                 dtype: torch.dtype | None = None) -> None:
    """t is a state of another extent than p's (Adafactor's row_var), of this shape and dtype (p's)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{where}: {what} must be a torch.Tensor, got {type(t).__name__}")
    if t.layout != torch.strided or t.device.type != "cpu":
        raise TypeError(f"{where}: {what} must be a dense CPU tensor")
    if t.dtype != (dtype or p.dtype):
        raise TypeError(f"{where}: {what} dtype {t.dtype} differs from {_expected(p, dtype)}")
    if t.shape != shape:
        raise ValueError(f"{where}: {what} shape {tuple(t.shape)} is not {tuple(shape)} (for the parameter's "
                         f"{tuple(p.shape)})")


class _Batch:
    """The params of one group that take the same step, checked and ready to run."""

    __slots__ = ("key", "k", "params", "sources", "grads", "copied", "new_states", "states", "options",
                 "witness", "tensor_set", "skip", "mu", "stepped", "masters", "copies", "rounding", "counted")

    def __init__(self, key: tuple[int, tuple[int, ...]], k: int) -> None:
        self.key, self.k = key, k
        self.params: list[torch.Tensor] = []
        self.sources: list[torch.Tensor] = []   # the params' .grad
        self.grads: list[torch.Tensor] = []     # 1-D, the param's memory order
        self.copied: list[bool] = []             # grads[j] is a copy, not a view of p.grad
        self.new_states: list[dict[str, Any]] = []  # entries to put into state[p] on commit
        self.states: list[dict[str, torch.Tensor]] = []  # every state buffer the step uses
        self.options: Any = None
        self.witness: list[Any] = []
        self.tensor_set: Any = None
        self.skip = False
        self.mu: float | None = None  # NAdam: this step's mu, by which state["mu_product"] is multiplied
        # What the set steps: each param, or a contiguous copy of one in another layout whose
        # states are not its size (Adafactor's rows and columns are logical), copied back.
        self.stepped: list[torch.Tensor] = []
        self.masters: list[torch.Tensor | None] = []  # each param's float32 master, or None
        # (state tensor, its float32 copy the set steps): Adafactor's row_var of a bf16 param
        # with state_dtype="param", copied back after the step
        self.copies: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.rounding: tuple[str, int] = ("nearest", 0)  # the set's set_rounding
        self.counted = False  # the params keep state["rounding_step"] (SGD, Lion: stochastic)


def _numpy(t: torch.Tensor, what: str) -> np.ndarray:
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: its bits, viewed as ml_dtypes'
        return _core.view_array(t.view(torch.int16).numpy().view(ml_dtypes.bfloat16), what)
    return _core.view_array(t.numpy(), what)


def _renamed(e: Exception, gi: int, indices: tuple[int, ...]) -> str:
    """A TensorSet error names params by batch position: name them by group."""
    return re.sub(r"params\[(\d+)\]|tensor (\d+)", lambda m: _where(gi, indices[int(m.group(1) or m.group(2))]),
                  str(e))


class _Steady:
    """A group's record for the steady step: the C++ check, and the state
    buffers the options it was made with need."""

    __slots__ = ("group", "names", "options", "flats", "half")

    def __init__(self, group: Any, names: list[str], options: Any, flats: list[FlatParameter],
                 half: tuple[Any, ...]) -> None:
        self.group, self.names, self.options = group, names, options
        self.flats = flats  # the group's flat parameters: their members' grads are gathered first
        self.half = half  # the group's half-precision options it was recorded with


# The exact classes a parameter may have on the steady path: their methods
# are torch's C ones (a subclass could run Python code mid-check).
_PARAM_TYPES = (torch.Tensor, torch.nn.Parameter, FlatParameter)


class _GradstepStep:
    """The shared step: turns param groups into C++ TensorSets and steps them.

    A step first checks every param, grad, state buffer and hyperparameter of
    every group and prepares every TensorSet (plan), and only then writes
    anything (commit): bad input raises before any buffer, state entry or step
    count changes.
    """

    # The optimizer's declaration (gradstep._spec): options, states, torch's state["step"].
    __gradstep_spec__: ClassVar[_spec.OptimizerSpec]

    # The group keys the options depend on, lr aside (set per class by _adapter_class).
    _option_keys: ClassVar[tuple[str, ...]]

    # Filled in by torch.optim.Optimizer.__init__.
    param_groups: list[dict[str, Any]]
    state: Any
    defaults: dict[str, Any]
    _optimizer_step_pre_hooks: dict[int, Callable[..., Any]]
    _optimizer_step_post_hooks: dict[int, Callable[..., Any]]
    _optimizer_step_code: Callable[[], None]

    def _init_gradstep(self) -> None:
        # Built lazily: torch's __init__ calls add_param_group before this runs.
        self.__dict__.setdefault("_sets", {})

    @property
    def _cache(self) -> dict[tuple[int, tuple[int, ...]], tuple[Any, list[Any]]]:
        # (group index, param indices) -> (TensorSet, witness of what it views)
        return self.__dict__.setdefault("_sets", {})

    @property
    def _state_names(self) -> tuple[str, ...]:
        return self.__gradstep_spec__.state_names()

    @property
    def _has_step(self) -> bool:
        return self.__gradstep_spec__.torch_step_state  # torch keeps state["step"] (SGD does not)

    def _options(self, group: dict[str, Any], lr: float) -> Any:
        """The core's options for a param group, field by field as declared: each from
        where the reference keeps it (the group, the optimizer, or nowhere: the default)."""
        spec = self.__gradstep_spec__
        start = spec.rate_at_start
        # Options that are not gs.X arguments may still be torch's (Adam's decoupled_weight_decay).
        given: dict[str, Any] = {name: group.get(name, value) for name, value in spec.fixed.items()
                                 if name != start}
        kept = self.__dict__.get("_kept_arguments", {})
        for p in spec.hyper_params:
            value = group[p.name] if p.keep == "group" else kept[p.name] if p.keep == "optimizer" else p.default
            given.update(zip((f.name for f in p.fields), tuple(value) if p.grouped else (value,)))
        if start is not None:  # Lion's init_lr: the constructor's lr, as the reference keeps it
            given[start] = self.__dict__["_rate_at_start"]
        values = {f.name: bool(given[f.name]) if f.type == "flag" else _float(f.to_option(given[f.name]))
                  for f in spec.fields if f.option and f.name in given}  # to_option: None (Prodigy's beta3)
        return spec.options(lr=lr, **values)

    def _new_state(self, p: torch.Tensor, group: dict[str, Any], needed: list[str]) -> dict[str, Any]:
        """torch's initial state of p: its step count, and the needed buffers (zeros, or
        the declared initial value: Adagrad's sum starts at initial_accumulator_value)."""
        state: dict[str, Any] = {"step": _step0(group)} if self._has_step else {}
        if self._has_mu_product:
            state["mu_product"] = _step0(group) + 1.0  # torch's: a CPU scalar of state["step"]'s dtype
        fills = {s: v for v, s in self.__gradstep_spec__.initial_values().items()}
        sized = self._sized_shapes(p)
        dtype = _state_dtype(p, group)
        for n in needed:
            if n in sized:  # another extent than p's (Adafactor's row_var): torch's shape, or no buffer
                if sized[n] is not None:
                    state[n] = p.new_zeros(sized[n], dtype=dtype)
                continue
            state[n] = (torch.full_like(p, group[fills[n]], dtype=dtype, memory_format=torch.preserve_format)
                        if n in fills else _zeros(p, dtype))
        return state

    def _check_half(self, p: torch.Tensor, group: dict[str, Any], where: str) -> None:
        _check_half_param(p, group, where)
        spec = self.__gradstep_spec__
        if (p.dtype in _HALF_DTYPES and group.get("state_dtype") == "param" and spec.reduces
                and any(st.extent == "full" for st in spec.states)):
            # Its step sums over its states between passes: kept in the param's dtype they would
            # be read rounded by a later pass and unrounded by the sums (the core refuses them).
            # (Adafactor's states are all of other extents: stepped as float32 copies.)
            raise ValueError(f"{where}: state_dtype='param' is not supported by gradstep.torch.{spec.name} for "
                             f"{p.dtype} parameters (its step sums over its states between passes; they stay "
                             "float32): use state_dtype=None")

    def _sized_dtype(self, p: torch.Tensor, group: dict[str, Any]) -> torch.dtype:
        """The dtype of p's states of another extent than its own (Adafactor's row_var):
        as the full-size ones (kept in the param's dtype as torch does, stepped as float32
        copies, with state_dtype="param")."""
        return _state_dtype(p, group)

    def _sized_shapes(self, p: torch.Tensor) -> dict[str, Any]:
        """The states declared with another extent than the param's: name -> their shape for
        p, or None where p has no buffer in it (Adafactor's row_var of a vector)."""
        out: dict[str, Any] = {}
        for st in self.__gradstep_spec__.states:
            if st.extent != "full":
                shape = st.shape(tuple(p.shape))
                out[st.name] = None if shape == (0,) else torch.Size(shape)
        return out

    # NAdam's mu_product (mu_1 * ... * mu_step) is a scalar tensor per param in
    # torch's state, not a buffer the kernel steps. gradstep.torch keeps it as
    # torch does (made with the state, multiplied by the step's mu in place, in
    # its own dtype) and passes the updated value to the kernel in the options,
    # so a value loaded from torch.optim.NAdam is the one used. Such a group is
    # batched by (step, mu_product) and always takes the planned step.
    @property
    def _has_mu_product(self) -> bool:
        return "mu_product" in self.__gradstep_spec__.fixed

    def _mu_product_step(self, group: dict[str, Any], state: dict[str, Any], k: int) -> tuple[float, float]:
        """(mu, the updated mu_product) for a param at step k, in torch's arithmetic."""
        beta1 = _float(group["betas"][0])
        mu = beta1 * (1.0 - 0.5 * (0.96 ** (k * _float(group["momentum_decay"]))))  # torch's expression
        before = state.get("mu_product")
        if not isinstance(before, torch.Tensor):
            before = _step0(group) + (1.0 if before is None else float(before))
        return mu, float((before * mu).item())  # torch's `mu_product *= mu`, out of place

    def _mu_product_options(self, gi: int, group: dict[str, Any], k: int, value: float) -> Any:
        """The group's options at step k with mu_product = value, checked."""
        new = self._options(group, self._checked_options(gi, group, k).lr)
        new.mu_product = value
        try:
            new.validate()
        except ValueError as e:
            raise ValueError(f"{_where(gi)}: state['mu_product'] (after this step's update): {e}") from None
        return new

    def _group_lr(self, group: dict[str, Any], step: int) -> float:
        lr = group["lr"]
        if isinstance(lr, torch.Tensor):
            return float(lr.item())
        if callable(lr):
            return float(lr(step - 1))
        return float(lr)

    def _checked_options(self, gi: int, group: dict[str, Any], step: int) -> Any:
        # Building and checking the options field by field costs several µs,
        # more than a small step: reuse them while the group's values and the
        # rate are those they were built from (options are never mutated).
        # The look-up runs at every step, so it is kept to a few C calls.
        values = tuple(map(group.get, self._option_keys))
        lr = group["lr"]
        if type(lr) is not float:
            lr = self._group_lr(group, step)
        key = (values, lr)
        cache = self.__dict__.get("_options_cache")
        if cache is None:
            cache = self.__dict__["_options_cache"] = {}
        cached = cache.get(gi)
        if cached is not None and cached[0] == key:
            return cached[1]
        for flag in ("capturable", "differentiable"):
            if group.get(flag):
                raise NotImplementedError(f"{_where(gi)}: gradstep.torch does not support {flag}=True")
        try:
            options = self._options(group, lr)
            options.validate()
        except (TypeError, ValueError) as e:
            raise type(e)(f"{_where(gi)}: {e}") from None
        if not _holds_tensor(values):  # a tensor's value can change in place
            cache[gi] = (key, options)
        return options

    def _needed_states(self, options: Any) -> list[str]:
        return [n for slot, n in enumerate(self._state_names) if options.state_mask & (1 << slot)]

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        # Check first, then let torch add it, then check its hyperparameters
        # (torch fills in the defaults): a failing call leaves param_groups as it was.
        gi = len(self.param_groups)
        pending = self.__dict__.pop("_half_defaults", None)  # the constructor's (module docstring)
        if pending is not None:
            self.defaults.update(pending)
        if isinstance(param_group, dict):
            for key, value in _HALF_OPTIONS.items():
                param_group.setdefault(key, self.defaults.get(key, value))
            _check_half_options(param_group, _where(gi))
        params = param_group.get("params") if isinstance(param_group, dict) else None
        if params is not None and not isinstance(params, set):
            params = [params] if isinstance(params, torch.Tensor) else list(params)
            param_group["params"] = params  # it may have been an iterator
            seen: dict[int, int] = {}
            others = {id(p) for g in self.param_groups for p in g["params"]}
            for i, p in enumerate(params):
                p = p[1] if isinstance(p, tuple) and len(p) == 2 else p  # a named param
                where = _where(gi, i)
                _check_param(p, where)
                self._check_half(p, param_group, where)
                if id(p) in seen:
                    raise ValueError(f"{where}: the same tensor as {_where(gi, seen[id(p)])}; a "
                                     "parameter may appear only once")
                if id(p) in others:
                    raise ValueError(f"{where}: some parameters appear in more than one parameter "
                                     "group")
                seen[id(p)] = i
        super().add_param_group(param_group)  # type: ignore[misc]
        try:
            self._checked_options(gi, self.param_groups[gi], 1)
        except Exception:
            del self.param_groups[gi:]
            raise

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        before = self.state, self.param_groups
        super().load_state_dict(state_dict)  # type: ignore[misc]
        try:
            _load_half(self, state_dict, before[1])
            for gi, group in enumerate(self.param_groups):
                self._checked_options(gi, group, 1)
        except Exception:
            self.state, self.param_groups = before
            raise
        self._cache.clear()  # state tensors were replaced
        self.__dict__["_steady"] = None

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        # torch.optim wraps step in a profiler record and its hooks, which
        # costs more than a small step: do the same, but only when a hook is
        # registered or the profiler runs (torch sees `hooked` and does not wrap).
        if (_optimizer._global_optimizer_pre_hooks or _optimizer._global_optimizer_post_hooks
                or self._optimizer_step_pre_hooks or self._optimizer_step_post_hooks
                or torch.autograd._profiler_enabled()):
            return _hooked_step(self, closure)
        loss = _gradstep_step(self, closure)
        self._optimizer_step_code()
        return loss

    step.hooked = True  # type: ignore[attr-defined]

    def _step(self, closure: Callable[[], Any] | None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # One step at a time: a second thread's step waits rather than
        # interleaving its checks and writes with this one's.
        lock = self.__dict__.get("_step_lock")
        if lock is None:
            lock = self.__dict__.setdefault("_step_lock", threading.RLock())
        with lock:
            self._locked_step()
        return loss

    def _locked_step(self) -> None:
        if not self._steady_step():
            with torch.no_grad():
                self._planned_step()

    def _steady_step(self) -> bool:
        """The step when nothing but the grads' values changed since the last one:
        each group's TorchGroup checks that and steps it (no per-parameter Python).
        False, having written nothing, when the plan must run instead."""
        attrs = self.__dict__  # (a missing attribute costs more than a step of 4K elements)
        records = attrs.get("_steady")
        groups = self.param_groups
        if records is None or len(records) != len(groups) or attrs.get("grad_scale") is not None \
                or attrs.get("found_inf") is not None:
            return False
        plans = []
        for gi, record in enumerate(records):
            if record is None:
                return False
            steps = record.group.steps
            if steps is None:  # the record is void (e.g. step counts that no longer agree)
                return False
            group = groups[gi]
            if _half_values(group) != record.half:  # e.g. a new seed: the plan sets it
                return False
            for flat in record.flats:
                flat._gather_grads()
            # The hyperparameters first (they may run Python: a callable lr), then
            # the C++ checks, then the writes: nothing runs between those two.
            options = [self._checked_options(gi, group, k) for k in steps]
            if options and options[0] is not record.options:
                if self._needed_states(options[0]) != record.names:
                    return False  # e.g. amsgrad switched on: new state buffers
                record.options = options[0]
            plans.append(options)
        state = self.state
        if len(records) == 1:  # the usual case, in one C++ call
            record = records[0]
            if not record.group.run(groups[0]["params"], state, plans[0]):
                return False
        else:
            for group, record in zip(groups, records):
                if not record.group.check(group["params"], state):
                    return False
            for record, options in zip(records, plans):
                record.group.step(options)
        for group, record in zip(groups, records):
            if record.flats:
                _after_flat_step(self, group, record.flats)
        return True

    def _planned_step(self) -> None:
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        batches: list[_Batch] = []
        flats = [[p for p in group["params"] if isinstance(p, FlatParameter)] for group in self.param_groups]
        for group_flats in flats:
            for flat in group_flats:
                flat._gather_grads()
        for gi, group in enumerate(self.param_groups):
            scaled = grad_scale is not None or found_inf is not None
            if scaled and not group.get("fused"):
                raise RuntimeError(f"{_where(gi)}: grad_scale and found_inf are honoured only with "
                                   "fused=True, as in torch")
            batches += self._plan_group(gi, group)
        skip = found_inf is not None and bool(found_inf.item())
        for batch in batches:  # every check passed: from here on, only writes
            self._commit(batch, None if skip else grad_scale, skip)
        for group, group_flats in zip(self.param_groups, flats):
            _after_flat_step(self, group, group_flats)
        scaled = grad_scale is not None or found_inf is not None
        self.__dict__["_steady"] = None if scaled else [
            self._record(gi, group, [b for b in batches if b.key[0] == gi], group_flats)
            for gi, (group, group_flats) in enumerate(zip(self.param_groups, flats))]

    def _record(self, gi: int, group: dict[str, Any], batches: list[_Batch],
                flats: list[FlatParameter]) -> _Steady | None:
        """What the next step checks to skip the plan, or None if this group's
        tensors cannot take that path (copied grads, strided layouts)."""
        if self._has_mu_product or any(any(b.copied) or any(_dense_strides(p) is not _CONTIGUOUS for p in b.params)
                                       for b in batches):
            return None
        # Copied states, and the per-param rounding count of SGD/Lion, are the plan's to keep.
        if any(b.copies or b.counted for b in batches):
            return None
        options = self._checked_options(gi, group, 1)
        names = self._needed_states(options)
        k_next = [b.k + 1 if self._has_step else (2 if names else 1) for b in batches]
        sizes: list[Any] | None = None
        half = any(p.dtype in _HALF_DTYPES for b in batches for p in b.params)
        if half or any(st.extent != "full" for st in self.__gradstep_spec__.states):
            # States of another extent than the param's (Adafactor's row_var), or of another
            # dtype (a bf16 param's float32 states, its master): each member's buffers, their
            # sizes and dtypes, from the declaration's shapes (none where p has no buffer).
            sizes = [None] * len(group["params"])
            for b in batches:
                for i, p, m in zip(b.key[1], b.params, b.masters):
                    sized = self._sized_shapes(p)
                    dtype = _state_dtype(p, group) if p.dtype in _HALF_DTYPES else p.dtype
                    if sized and p.dtype in _HALF_DTYPES:
                        dtype_sized = torch.float32
                    else:
                        dtype_sized = dtype
                    sizes[i] = [(n, p.numel(), dtype) if n not in sized else (n, sized[n].numel(), dtype_sized)
                                for n in names if n not in sized or sized[n] is not None]
                    if m is not None:
                        sizes[i].append((_MASTER, p.numel(), torch.float32))
        try:
            recorded = _core._TorchGroup(torch, group["params"], self.state,
                                         [(b.tensor_set, list(b.key[1]), k) for b, k in zip(batches, k_next)],
                                         names, self._has_step, _PARAM_TYPES, sizes)
        except ValueError:
            return None
        return _Steady(recorded, names, options, flats, _half_values(group))

    def _plan_group(self, gi: int, group: dict[str, Any]) -> list[_Batch]:
        # Parameters without a gradient are skipped, as torch does; those with
        # one are batched by their step count so each batch is one C++ call.
        options = self._checked_options(gi, group, 1)
        needed = self._needed_states(options)
        _check_half_options(group, _where(gi))
        masters_on = bool(group["master_weights"])
        # SGD and Lion keep no step count: their stochastic rounding counts per param
        counting = not self._has_step and group["rounding"] == "stochastic"
        stateful = bool(needed) or self._has_step or masters_on or counting
        by_step: dict[Any, list[int]] = {}  # k, or (k, mu_product) with NAdam
        mu_options: dict[Any, tuple[float, Any]] = {}
        for i, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            where = _where(gi, i)
            _check_param(p, where)
            self._check_half(p, group, where)
            _check_like(p.grad, p, where, "grad")
            state = self.state.get(p, {}) if stateful else {}
            dtype = _state_dtype(p, group)
            if masters_on and _MASTER in state:
                _check_master(state[_MASTER], p, where)
            if counting and _ROUNDING_STEP in state and p.dtype in _HALF_DTYPES:
                c = state[_ROUNDING_STEP]
                if isinstance(c, bool) or not isinstance(c, int) or c < 0:
                    raise ValueError(f"{where}: state '{_ROUNDING_STEP}' must be an int >= 0, got {c!r}")
            sized = self._sized_shapes(p)
            if sized and isinstance(p, FlatParameter):  # one vector: no member's rows and columns
                raise ValueError(f"{where}: {type(self).__name__} keeps states shaped by each parameter "
                                 f"({', '.join(sized)}); a FlatParameter would be stepped as one vector: "
                                 "give it the model's parameters")
            for n in needed:
                if n in sized and sized[n] is not None and n in state:
                    _check_sized(state[n], p, sized[n], where, f"state '{n}'", dtype)
                elif n not in sized and n in state:
                    _check_like(state[n], p, where, f"state '{n}'", dtype)
            if self._has_step:
                step = state.get("step", 0)
                k = int(step.item() if isinstance(step, torch.Tensor) else step) + 1
            else:
                # torch seeds SGD's momentum buffer with the first gradient; the
                # kernel does that on step 1. A buffer that exists has seen one.
                k = 2 if needed and needed[0] in state else 1
            key: Any = k
            if self._has_mu_product:
                mu, value = self._mu_product_step(group, state, k)
                key = (k, value)
                if key not in mu_options:
                    mu_options[key] = (mu, self._mu_product_options(gi, group, k, value))
            by_step.setdefault(key, []).append(i)
        batches = []
        first = sum(len(g["params"]) for g in self.param_groups[:gi])  # the group's first flat position
        for key, indices in by_step.items():
            k = key[0] if isinstance(key, tuple) else key
            batch = _Batch((gi, tuple(indices)), k)
            count = None
            if counting:  # the first half param's rounding count, as the set's (module docstring)
                half = [i for i in indices if group["params"][i].dtype in _HALF_DTYPES]
                batch.counted = bool(half)
                if half:
                    count = self.state.get(group["params"][half[0]], {}).get(_ROUNDING_STEP, 0)
            batch.rounding = (group["rounding"], _set_seed(group["seed"], first + indices[0], count))
            batch.options = options if k == 1 else self._checked_options(gi, group, k)
            if key in mu_options:
                batch.mu, batch.options = mu_options[key]
            for i in indices:
                p = group["params"][i]
                batch.params.append(p)
                g = p.grad
                batch.sources.append(g)
                sized = self._sized_shapes(p)
                if sized and not p.is_contiguous():  # step a copy in logical (row-major) order
                    batch.stepped.append(p.detach().contiguous())
                    flat_grad = g.contiguous()
                    batch.grads.append(_flat(flat_grad))
                    batch.copied.append(flat_grad is not g)
                else:
                    batch.stepped.append(p)
                    layout = _dense_strides(p)
                    same = _dense_strides(g) == layout
                    batch.grads.append(_flat(g if same else _like(g, p)))
                    batch.copied.append(not same)
                layout = _dense_strides(p)
                state = self.state.get(p, {}) if stateful else {}
                # New state only for what is missing: allocating it every step
                # and dropping it would cost more than the step.
                has = [n for n in needed if n not in sized or sized[n] is not None]  # buffers p has
                missing = stateful and (any(n not in state for n in has)
                                        or (self._has_step and "step" not in state)
                                        or (self._has_mu_product and "mu_product" not in state))
                new = {n: v for n, v in self._new_state(p, group, needed).items() if n not in state} \
                    if missing else {}
                bufs = {}
                for n in needed:
                    if n in sized:
                        t = new[n] if n in new else state[n] if n in has else p.new_empty(
                            0, dtype=torch.float32 if p.dtype in _HALF_DTYPES else p.dtype)
                        if not t.is_contiguous():
                            t = new[n] = t.contiguous()
                        if p.dtype in _HALF_DTYPES and t.dtype != torch.float32:
                            # the kernel's are float32 (state_dtype="param" keeps torch's dtype): a copy
                            copy = t.float()
                            batch.copies.append((t, copy))
                            t = copy
                        bufs[n] = t
                        continue
                    t = new[n] if n in new else state[n]
                    if _dense_strides(t) != layout:  # e.g. loaded contiguous
                        t = new[n] = _like(t, p)
                    bufs[n] = t
                master = None
                if masters_on:  # made from the param when missing (a state from torch has none)
                    master = state.get(_MASTER)
                    if master is None:
                        master = new[_MASTER] = _master_of(p)
                    elif _dense_strides(master) != layout:  # e.g. loaded contiguous
                        master = new[_MASTER] = _like(master, p)
                    if batch.stepped[-1] is not p:  # the set steps a contiguous copy of p: so of its master
                        copy = master.contiguous()
                        if copy is not master:
                            batch.copies.append((master, copy))
                        master = copy
                batch.masters.append(master)
                batch.new_states.append(new)
                batch.states.append(bufs)
            names = [n for n in self._state_names if n in needed]
            batch.witness = [_witness(p) for p in batch.stepped] + [
                _witness(b[n]) for b in batch.states for n in names] + [
                _witness(m) if m is not None else None for m in batch.masters]
            cached = self._cache.get(batch.key)
            if cached is not None and cached[1] == batch.witness:
                batch.tensor_set = cached[0]
            else:
                try:
                    masters = None
                    if any(m is not None for m in batch.masters):
                        masters = [None if m is None else _numpy(_flat(m), f"state '{_MASTER}'")
                                   for m in batch.masters]
                    batch.tensor_set = _core.TensorSet(
                        [_numpy(_flat(p), f"params[{j}]") for j, p in enumerate(batch.stepped)],
                        [[_numpy(_flat(b[n]), n) for b in batch.states] if n in needed else None
                         for n in self._state_names],
                        list(self._state_names), batch.options, [tuple(p.shape) for p in batch.params],
                        masters=masters)
                except (TypeError, ValueError) as e:
                    raise type(e)(_renamed(e, gi, batch.key[1])) from None
            try:  # as the step will: a bad grad here must stop the other groups' steps too
                batch.tensor_set.check_grads([_numpy(g, "grad") for g in batch.grads])
            except (TypeError, ValueError) as e:
                raise type(e)(_renamed(e, gi, batch.key[1])) from None
            batches.append(batch)
        return batches

    def _commit(self, batch: _Batch, grad_scale: torch.Tensor | None, skip: bool) -> None:
        for p, new in zip(batch.params, batch.new_states):
            if new:
                self.state[p].update(new)
        if skip:  # torch's fused step with found_inf: states made, nothing stepped
            return
        self._cache[batch.key] = (batch.tensor_set, batch.witness)
        if grad_scale is not None:  # torch's fused step unscales the grads in place
            for source, g, copied in zip(batch.sources, batch.grads, batch.copied):
                source.div_(grad_scale)
                if copied:
                    g.div_(grad_scale)
        tensor_set = batch.tensor_set
        tensor_set.set_options(batch.options)  # checked when planned: cannot fail here
        tensor_set.set_lr(batch.options.lr)
        tensor_set.set_rounding(*batch.rounding)
        tensor_set.step([_numpy(g, "grad") for g in batch.grads], batch.k)
        for p, stepped in zip(batch.params, batch.stepped):
            if stepped is not p:
                p.detach().copy_(stepped)
        for t, copy in batch.copies:
            t.copy_(copy)
        if batch.counted:
            for p in batch.params:
                if p.dtype in _HALF_DTYPES:
                    state = self.state[p]
                    state[_ROUNDING_STEP] = state.get(_ROUNDING_STEP, 0) + 1
        if self._has_step:
            torch._foreach_add_([self.state[p]["step"] for p in batch.params], 1.0)
        if batch.mu is not None:
            for p in batch.params:
                self.state[p]["mu_product"].mul_(batch.mu)


def _load_half(self: Any, state_dict: dict[str, Any], before: list[dict[str, Any]]) -> None:
    """After torch's load_state_dict: the half-precision options and states as configured.

    A state_dict without the options (torch's) keeps the optimizer's. torch casts every
    floating state to its param's dtype: a bf16/f16 param's float32 states and master, as
    saved, are put back (copies). Then each state is made the dtype its group says
    (widening is exact; narrowing rounds to nearest), a master copy is dropped where the
    group keeps none (the param is what it was rounded to), and a missing one is made from
    the param at the next step.
    """
    for gi, (group, old) in enumerate(zip(self.param_groups, before)):
        for key, value in _HALF_OPTIONS.items():
            if key not in group:
                group[key] = old.get(key, value)
        _check_half_options(group, _where(gi))
    saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
    params = [p for group in self.param_groups for p in group["params"]]
    saved = state_dict["state"]
    for pid, p in zip(saved_ids, params):
        if p.dtype not in _HALF_DTYPES or p not in self.state:
            continue
        state = self.state[p]
        for key, was in saved.get(pid, {}).items():
            value = state.get(key)
            if isinstance(was, torch.Tensor) and was.dtype == torch.float32 and isinstance(value, torch.Tensor) \
                    and value.dtype != torch.float32 and key in _state_keys(self):
                state[key] = was.detach().to("cpu", copy=True)  # undo torch's cast
    _conform_states(self)


def _state_keys(self: Any) -> set[str]:
    return {*self.__gradstep_spec__.state_names(), *getattr(self, "_reference_states", ()), _MASTER}


def _conform_states(self: Any) -> None:
    """Each bf16/f16 param's states made the dtype its group says (widening is exact,
    narrowing rounds to nearest), its master dropped where the group keeps none."""
    sized = {st.name for st in self.__gradstep_spec__.states if st.extent != "full"}
    names = _state_keys(self)
    for group in self.param_groups:
        for p in group["params"]:
            if p.dtype not in _HALF_DTYPES or p not in self.state:
                continue
            state = self.state[p]
            for key, value in list(state.items()):
                if key not in names or not isinstance(value, torch.Tensor) or not value.is_floating_point():
                    continue
                want = torch.float32 if key == _MASTER else self._sized_dtype(p, group) if key in sized \
                    else _state_dtype(p, group)
                if value.dtype != want:
                    state[key] = value.to(want)
            if _MASTER in state and not group["master_weights"]:
                del state[_MASTER]


def _gradstep_step(self: Any, closure: Callable[[], Any] | None) -> Any:
    return self._step(closure)


_hooked_step = torch.optim.Optimizer.profile_hook_step(_gradstep_step)


def _after_flat_step(optimizer: Any, group: dict[str, Any], flats: list[FlatParameter]) -> None:
    # With eps = 0 a zero element with a zero grad becomes 0 / 0. The real
    # elements do as torch's would; the padding between a flat parameter's
    # members is reset (the param to zero, NaN states to zero) so it never
    # holds anything but its start values.
    if not flats or group.get("eps", 1.0) != 0:
        return
    for flat in flats:
        flat._zero_padding()
        pad = flat._padding
        if pad is None:
            continue
        with torch.no_grad():
            for value in optimizer.state.get(flat, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == flat.shape:
                    value.index_copy_(0, pad, value.index_select(0, pad).nan_to_num_(0.0))


def _holds_tensor(values: tuple[Any, ...]) -> bool:
    return any(isinstance(v, torch.Tensor) or (isinstance(v, tuple) and any(isinstance(x, torch.Tensor) for x in v))
               for v in values)


def _zeros(p: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    return torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)


def _step0(group: dict[str, Any]) -> torch.Tensor:
    # torch's state["step"]: a CPU scalar, float32 for fused steps, else the
    # default dtype's precision (float64 when that is the default, else float32).
    wide = torch.get_default_dtype() == torch.float64 and not group.get("fused")
    return torch.tensor(0.0, dtype=torch.float64 if wide else torch.float32)


def _float(x: Any) -> float:
    return float(x.item()) if isinstance(x, torch.Tensor) else float(x)


_IGNORED = """
    ``foreach`` and ``fused`` are accepted (and stored in param_groups) as torch
    does, and otherwise ignored: gradstep always runs one fused C++ call per
    group. As with torch's ``fused=True``, the optimizer then honours a
    GradScaler's ``grad_scale``/``found_inf`` (grads unscaled in place, the step
    skipped on inf). ``capturable=True`` and ``differentiable=True`` raise
    NotImplementedError.

    Keyword-only, for bfloat16/float16 params (gradstep.torch's docstring):
    ``state_dtype`` (None: float32 states; "param": the param's dtype, torch's
    layout; "float32"), ``master_weights`` (a float32 copy in
    state["master_param"]), ``rounding`` ("nearest" or "stochastic") and
    ``seed``, kept in each param group.
"""


def _adapter_class(spec: _spec.OptimizerSpec, base: type) -> type:
    """gradstep.torch.X: torch.optim.X with gradstep's step.

    The constructor is torch's own, with its signature (the declared
    parameters, whose defaults the tests check against the declaration, and
    torch's implementation flags such as foreach, fused, capturable): torch
    fills param_groups and defaults, after gradstep refused what it cannot do.
    """
    torch_cls = getattr(torch.optim, spec.name)  # _generate skips optimizers torch has not
    torch_signature = inspect.signature(torch_cls.__init__)  # type: ignore[misc]
    signature = _with_half_options(torch_signature)

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        given = dict(bound.arguments)
        del given["self"]
        half = {key: given.pop(key) for key in _HALF_OPTIONS}
        _check_half_options(half)
        self.__dict__["_half_defaults"] = half  # into defaults and groups by add_param_group
        for flag in ("capturable", "differentiable"):
            if given.get(flag):
                raise NotImplementedError(f"gradstep.torch does not support {flag}=True (it steps CPU "
                                          "tensors in C++, outside CUDA graphs and autograd)")
        # torch validates lr as a number: pass it a placeholder, then put the callable back.
        schedule = given["lr"] if callable(given["lr"]) else None
        if schedule is not None:
            given["lr"] = 1e-3
        torch_cls.__init__(self, **given)  # type: ignore[misc]
        self.defaults.update(self.__dict__.pop("_half_defaults", half))
        _conform_states(self)  # torch's Adagrad makes its state in the param's dtype here
        if schedule is not None:
            for group in self.param_groups:
                group["lr"] = schedule
                group["initial_lr"] = schedule
        self._init_gradstep()

    __init__.__signature__ = signature  # type: ignore[attr-defined]
    __init__.__qualname__ = f"{spec.name}.__init__"
    doc = (f"torch.optim.{spec.name}, stepped by gradstep's C++ kernels.\n{_IGNORED}\n"
           + "\n".join("    " + line if line else "" for line in spec.doc().split("\n")) + "\n")
    namespace = {"__init__": __init__, "__doc__": doc, "__gradstep_spec__": spec,
                 # the group's keys the options depend on, lr aside
                 "_option_keys": ("capturable", "differentiable", *spec.group_keys),
                 "__module__": __name__, "__qualname__": spec.name}
    return type(spec.name, (base, torch_cls), namespace)


def _with_half_options(signature: inspect.Signature) -> inspect.Signature:
    """signature with the half-precision options as keyword-only parameters at its end."""
    P = inspect.Parameter
    params = list(signature.parameters.values())
    extra = [P(key, P.KEYWORD_ONLY, default=value) for key, value in _HALF_OPTIONS.items()]
    tail = [p for p in params if p.kind == P.VAR_KEYWORD]
    return signature.replace(parameters=[p for p in params if p.kind != P.VAR_KEYWORD] + extra + tail)


def _reference_adapter_class(spec: _spec.OptimizerSpec, base: type) -> type:
    """gradstep.torch.X for a declaration whose reference is a package's class, not
    torch.optim's (lion_pytorch.Lion): a torch.optim.Optimizer that is that class as
    far as its users can tell, without importing it.

    From the declaration: the constructor has the reference's parameters, order and
    defaults (its reference-only arguments included, which gradstep accepts at their
    default only); param_groups and defaults hold exactly the arguments the reference
    keeps there, the optimizer object those it keeps on itself (never saved in a
    state_dict, as the reference's); the state holds the reference's buffers under its
    names, and state["step"] only if the reference keeps one. So a state_dict moves
    between the two both ways. A declared option filled with the rate at start (Lion's
    init_lr) is the constructor's lr, as the reference keeps it (a callable lr: its
    value at step 0). Stepping is _GradstepStep's, as for the torch.optim twins.
    """
    P = inspect.Parameter
    params = spec.reference_params
    # The reference's defaults as it writes them (prodigyopt's slice_p=1, an int its step slices with).
    written = getattr(base, "_reference_defaults", {})
    signature = inspect.Signature(
        [P("self", P.POSITIONAL_OR_KEYWORD), P("params", P.POSITIONAL_OR_KEYWORD)]
        + [P(p.name, P.KEYWORD_ONLY if p.keyword_only else P.POSITIONAL_OR_KEYWORD,
             default=written.get(p.name, p.default), annotation=p.annotation) for p in params],
        return_annotation=None)
    signature = _with_half_options(signature)
    refused = [p for p in params if p.fields[0].kind == "reference_only"]

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        given = dict(bound.arguments)
        half = {key: given.pop(key) for key in _HALF_OPTIONS}
        _check_half_options(half)
        for p in refused:
            if given[p.name] is not written.get(p.name, p.default) and given[p.name] != written.get(p.name, p.default):
                raise NotImplementedError(
                    f"gradstep.torch.{spec.name} does not support {p.name}={given[p.name]!r}: it selects "
                    f"another implementation of {spec.reference_class}, and gradstep steps CPU tensors "
                    "with its own C++ kernel")
        lr = given["lr"]
        # Read by _options, so set before torch's __init__ adds (and checks) the groups.
        self._kept_arguments = {p.name: given[p.name] for p in params if p.keep == "optimizer"}
        if spec.rate_at_start is not None:
            self._rate_at_start = _float(lr(0)) if callable(lr) else _float(lr)
        defaults = {p.name: given[p.name] for p in params if p.keep == "group"}
        extras = getattr(self, "_group_extras", None)
        if extras is not None:  # the carried values the reference keeps in its groups (Prodigy's d, k)
            defaults.update(extras(given))
        if getattr(self, "_keeps_d0", False):
            self.d0 = given["d0"]  # as prodigyopt.Prodigy and dadaptation.DAdaptAdam keep it
        defaults.update(half)
        torch.optim.Optimizer.__init__(self, given["params"], defaults)
        self._init_gradstep()

    __init__.__signature__ = signature  # type: ignore[attr-defined]
    __init__.__qualname__ = f"{spec.name}.__init__"
    kept = [p.name for p in params if p.keep == "optimizer" and p not in refused]
    notes = [f"Its constructor, param_groups and state_dict are {spec.reference_class}'s (the class is not "
             "imported), so a state_dict moves between the two both ways."]
    if kept:
        notes.append(f"As there, {', '.join(kept)} {'is' if len(kept) == 1 else 'are'} kept on the optimizer, "
                     "not in param_groups nor the state_dict.")
    notes += [(f"{p.name}={not p.default!r}" if p.fields[0].type == "flag" and p.name not in written
               else f"{p.name} other than {written.get(p.name, p.default)!r}")
              + " raises NotImplementedError (it selects another implementation, which gradstep does not run)."
              for p in refused]
    absent = [p.name for p in spec.hyper_params if p.keep == "absent"]
    if absent:
        notes.append(f"gs.{spec.name}'s {', '.join(absent)} is not an argument here: the default applies.")
    doc = (f"{spec.reference_class}, stepped by gradstep's C++ kernels.\n\n"
           + "".join(f"    {line}\n" for line in textwrap.wrap(" ".join(notes), 84)) + "\n"
           + "\n".join("    " + line if line else "" for line in spec.doc().split("\n")) + "\n")
    namespace = {"__init__": __init__, "__doc__": doc, "__gradstep_spec__": spec,
                 "__getstate__": _getstate_with_kept_arguments,
                 "_option_keys": ("capturable", "differentiable", *spec.group_keys),
                 "__module__": __name__, "__qualname__": spec.name}
    return type(spec.name, (base, torch.optim.Optimizer), namespace)


def _getstate_with_kept_arguments(self: Any) -> dict[str, Any]:
    # torch.optim.Optimizer pickles (and deep-copies) only defaults, state and
    # param_groups: the arguments kept on the optimizer go along too. (A copy of
    # lion_pytorch.Lion loses its decoupled_wd and _init_lr; its step then fails.)
    state: dict[str, Any] = torch.optim.Optimizer.__getstate__(self)
    for name in ("_kept_arguments", "_rate_at_start", "d0"):
        if name in self.__dict__:
            state[name] = self.__dict__[name]
    return state


# ---- package references with values carried in their param groups ----------------------
#
# prodigyopt.Prodigy, dadaptation.DAdaptAdam/DAdaptSGD, timm.optim.Lamb and
# schedulefree's AdamWScheduleFree/SGDScheduleFree keep the values their step
# carries (d, k, step, weight_sum, ...) in every param group, and Schedule-Free
# moves the params between y and x in train()/eval(). Their adapters keep that layout: the
# carried values go from the groups into the options of the C++ step and back,
# the states are the reference's buffers under its names and shapes. What the
# declaration does not say (the groups' extra keys, the states' shapes, which
# options the reference reads from param_groups[0] only) is said here, per class.


def _copy_options(spec: _spec.OptimizerSpec, options: Any) -> Any:
    return spec.options(**{f.name: getattr(options, f.name) for f in spec.fields if f.option})


def _check_buffer(t: Any, p: torch.Tensor, shape: tuple[int, ...], where: str, name: str,
                  dtype: torch.dtype | None = None) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{where}: state '{name}' must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu" or t.layout != torch.strided:
        raise TypeError(f"{where}: state '{name}' must be a dense CPU tensor")
    if t.dtype != (dtype or p.dtype):
        raise TypeError(f"{where}: state '{name}' dtype {t.dtype} differs from {_expected(p, dtype)}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{where}: state '{name}' shape {tuple(t.shape)} differs from {shape}, the reference's")
    if not t.is_contiguous():
        raise ValueError(f"{where}: state '{name}' must be contiguous")


_PLAIN_TYPES = (bool, int, float, str, type(None))


class _PackageSteady:
    """A package adapter's record for the steady step (_PackageStep._package_record)."""

    __slots__ = ("snapshot", "units", "flats")

    def __init__(self, snapshot: Any, units: list[Any], flats: list[list[FlatParameter]]) -> None:
        self.snapshot, self.units, self.flats = snapshot, units, flats


class _PackageStep(_GradstepStep):
    """The step of an adapter whose reference carries values in its param groups."""

    _global: ClassVar[bool] = True  # one C++ call over every group (a global d), else one per group
    # Keys the reference reads per group but gradstep takes from param_groups[0]:
    # a group whose value differs raises NotImplementedError, before any write.
    _equal_keys: ClassVar[tuple[str, ...]] = ()
    # The kernel reads the per-group options the reference reads per group (Prodigy's
    # weight_decay, eps, ...; TensorSet.step_groups), lr = 0 groups included.
    _group_options: ClassVar[bool] = False
    # The groups' lr must be equal or 0, the step's rate the largest (the learning-rate-free
    # references); else each group has its own and the step's is param_groups[0]'s (timm's Lamb).
    _shared_lr: ClassVar[bool] = True
    # The group key counting the steps (the kernel's step number is it + 1).
    _count_key: ClassVar[str] = "k"
    # Keys the reference requires to be 1 (dadaptation's layer_scale: not declared).
    _unit_keys: ClassVar[tuple[str, ...]] = ()
    # Declared carried field -> the group key holding it (the same name unless said).
    _carried_keys: ClassVar[dict[str, str]] = {}
    # The state key whose presence says the param's state was made.
    _made_key: ClassVar[str]
    # state names whose buffers are flat (numel,) in the reference (prodigyopt's s, p0).
    _flat_states: ClassVar[tuple[str, ...]] = ()
    # Defaults the reference writes as ints (prodigyopt slices with slice_p=1): the same values.
    _reference_defaults: ClassVar[dict[str, Any]] = {}
    # Buffers the reference keeps beside the declared states (dadaptation.DAdaptSGD's z = x0 - s).
    _reference_states: ClassVar[tuple[str, ...]] = ()

    @staticmethod
    def _group_extras(given: dict[str, Any]) -> dict[str, Any]:
        return {}

    # -- options ---------------------------------------------------------------
    def _options(self, group: dict[str, Any], lr: float) -> Any:
        # The group's carried values too: the options' checks may read them (Lamb's max_lr).
        options = super()._options(group, lr)
        self._fill_carried(options, group)
        return options

    def _carried_of(self, gi: int, group: dict[str, Any], options: Any) -> Any:
        """options with the carried values group keeps, validated (naming the group)."""
        new = _copy_options(self.__gradstep_spec__, options)
        try:
            self._fill_carried(new, group)
            new.validate()
        except (TypeError, ValueError) as e:
            raise type(e)(f"{_where(gi)}: {e}") from None
        return new

    def _fill_carried(self, new: Any, group: dict[str, Any]) -> None:
        """Set new's carried fields from the group's keys (before the first step: their
        initial values, e.g. d0's)."""
        for f in self.__gradstep_spec__.carried:
            key = self._carried_keys.get(f.name, f.name)
            value = group[key] if key in group else \
                getattr(new, f.initial_from) if f.initial_from else f.default
            if f.type == "flag":
                if not isinstance(value, (bool, np.bool_)):
                    raise TypeError(f"{key} must be a bool, got {value!r}")
                setattr(new, f.name, bool(value))
            else:
                if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, torch.Tensor)):
                    raise TypeError(f"{key} must be a number, got {value!r}")
                setattr(new, f.name, self._to_carried(key, _float(value)))

    @staticmethod
    def _to_carried(key: str, value: float) -> float:
        return value

    def _check_groups(self) -> float:
        """The rate of the step: the largest group's; the groups' options checked."""
        groups = self.param_groups
        g0 = groups[0]
        for gi, group in enumerate(groups):
            _check_half_options(group, _where(gi))
            if self._global and gi and _half_values(group)[2:] != _half_values(g0)[2:]:
                raise NotImplementedError(
                    f"{_where(gi)}: rounding={group['rounding']!r}, seed={group['seed']!r} differ from "
                    f"param_groups[0]'s: gradstep.torch.{type(self).__name__} steps every group in one C++ "
                    "call, rounded as param_groups[0] says")
            for key in self._unit_keys:
                if group.get(key, 1.0) != 1.0:
                    raise NotImplementedError(f"{_where(gi)}: {key}={group[key]!r}: gradstep.torch."
                                              f"{type(self).__name__} supports only {key}=1.0")
        if not self._global:
            return 0.0
        for gi, group in enumerate(groups):
            for key in self._equal_keys:
                if gi and _plain(group.get(key)) != _plain(g0.get(key)):
                    raise NotImplementedError(
                        f"{_where(gi)}: {key}={_plain(group.get(key))!r} differs from param_groups[0]'s "
                        f"{_plain(g0.get(key))!r}: gradstep.torch.{type(self).__name__} steps every group in one "
                        f"C++ call, with param_groups[0]'s {key}")
        if not self._shared_lr:
            return self._group_lr(g0, 1)
        rates = [self._group_lr(g, 1) for g in groups]
        lr = max(rates)
        for gi, (group, rate) in enumerate(zip(groups, rates)):
            if rate not in (lr, 0.0):
                raise RuntimeError(f"{_where(gi)}: lr {rate!r} differs from the largest group's {lr!r}: as in "
                                   f"{self.__gradstep_spec__.reference_class}, the groups' lr must be equal or 0")
            if rate != lr and not self._group_options:
                raise NotImplementedError(f"{_where(gi)}: lr=0 while another group's is {lr!r}: gradstep.torch."
                                          f"{type(self).__name__} steps every group with one set of options")
        return lr

    # -- states ----------------------------------------------------------------
    def _made_state(self, p: torch.Tensor, options: Any) -> dict[str, Any]:
        """The reference's state of p before its first step."""
        raise NotImplementedError

    def _shape(self, name: str, p: torch.Tensor) -> tuple[int, ...]:
        return (p.numel(),) if name in self._flat_states else tuple(p.shape)

    def _sized_dtype(self, p: torch.Tensor, group: dict[str, Any]) -> torch.dtype:
        # The kernel's states of another extent than a bf16/f16 param's (Prodigy's s, p0) are float32.
        return torch.float32 if p.dtype in _HALF_DTYPES else p.dtype

    def _buffers(self, p: torch.Tensor, state: dict[str, Any], needed: list[str], options: Any,
                 where: str, group: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any], Any]:
        """(the kernel's buffers of p, 1-D, by state name; the state entries to add; p's master
        copy, 1-D, or None)."""
        new: dict[str, Any] = {} if self._made_key in state else self._made_state(p, options)
        sized = {st.name for st in self.__gradstep_spec__.states if st.extent != "full"}
        full = _state_dtype(p, group)

        def dtype_of(n: str) -> torch.dtype:
            return self._sized_dtype(p, group) if n in sized else full

        if p.dtype in _HALF_DTYPES:  # the reference's state is made in p's dtype: in the group's
            new = {n: v.to(dtype_of(n)) if isinstance(v, torch.Tensor) and v.dtype == p.dtype else v
                   for n, v in new.items()}
        bufs = {}
        for n in needed:
            t = new[n] if n in new else state.get(n)
            if t is None:  # e.g. a state the options need now and did not before (beta1 > 0)
                t = new[n] = torch.zeros(self._shape(n, p), dtype=dtype_of(n))
            if n == "p0" and isinstance(t, torch.Tensor) and t.dim() == 0:
                # prodigyopt keeps p0 as a 0-d tensor when p is all zeros at its first step:
                # its dot product broadcasts it; the kernel reads it at full length.
                _check_buffer(t, p, (), where, n, dtype_of(n))
                t = torch.full(self._shape(n, p), float(t.item()), dtype=dtype_of(n))
            else:
                _check_buffer(t, p, self._shape(n, p), where, n, dtype_of(n))
            bufs[n] = t.view(-1)
        for n in self._reference_states:  # buffers the reference keeps and the kernel does not read
            _check_buffer(new[n] if n in new else state.get(n), p, self._shape(n, p), where, n, dtype_of(n))
        master = None
        if group["master_weights"]:  # made from the param when missing (a state from torch has none)
            master = state.get(_MASTER)
            if master is None:
                master = new[_MASTER] = _master_of(p)
            _check_master(master, p, where)
            if not master.is_contiguous():
                master = new[_MASTER] = master.contiguous()
            master = master.view(-1)
        return bufs, new, master

    def _tensor_set(self, params: list[torch.Tensor], bufs: list[dict[str, torch.Tensor]], needed: list[str],
                    where: list[str], options: Any, masters: list[Any] | None = None) -> Any:
        given = None
        if masters is not None and any(m is not None for m in masters):
            given = [None if m is None else _numpy(m, f"state '{_MASTER}'") for m in masters]
        try:  # the states sized by the extents the options declare (Prodigy's slice_p)
            return _core.TensorSet([_numpy(p.detach().view(-1), f"params[{j}]") for j, p in enumerate(params)],
                                   [[_numpy(b[n], n) for b in bufs] if n in needed else None
                                    for n in self._state_names],
                                   list(self._state_names), options, masters=given)
        except (TypeError, ValueError) as e:
            raise type(e)(re.sub(r"params\[(\d+)\]", lambda m: where[int(m.group(1))], str(e))) from None

    def _members(self, gis: list[int], options: Any) -> Any:
        """The params of these groups that take the step (those with a grad), checked, with their
        grads, the kernel's buffers and the state entries to add."""
        needed = self._needed_states(options)
        params, grads, bufs, news, where, group_of = [], [], [], [], [], []
        masters, positions = [], []
        for gi in gis:
            group = self.param_groups[gi]
            _check_half_options(group, _where(gi))
            first = sum(len(g["params"]) for g in self.param_groups[:gi])
            for i, p in enumerate(group["params"]):
                if p.grad is None:  # skipped, as the references do
                    continue
                w = _where(gi, i)
                _check_param(p, w)
                self._check_half(p, group, w)
                if not p.is_contiguous():
                    raise ValueError(f"{w}: gradstep.torch.{type(self).__name__} steps contiguous parameters "
                                     f"only, got strides {p.stride()}")
                _check_like(p.grad, p, w, "grad")
                b, new, master = self._buffers(p, self.state.get(p, {}), needed, options, w, group)
                masters.append(master)
                positions.append(first + i)
                params.append(p)
                g = p.grad.detach()
                grads.append(g.view(-1) if g.is_contiguous() else g.contiguous().view(-1))
                bufs.append(b)
                news.append(new)
                where.append(w)
                group_of.append(gi)
        return params, grads, bufs, news, where, needed, group_of, masters, positions

    # -- stepping --------------------------------------------------------------
    def _locked_step(self) -> None:  # (_GradstepStep._step: the closure run, the lock held)
        with torch.no_grad():
            if self._package_steady_step():
                return
            self.__dict__["_package_steady"] = None
            flats = [[p for p in group["params"] if isinstance(p, FlatParameter)] for group in self.param_groups]
            for group_flats in flats:  # flatten_parameters: the members' grads into the flat grad
                for flat in group_flats:
                    flat._gather_grads()
            plans = self._plan()
            for plan in plans:  # every check passed: from here on, only writes
                self._commit_plan(*plan)
            for group, group_flats in zip(self.param_groups, flats):
                _after_flat_step(self, group, group_flats)
            self.__dict__["_package_steady"] = self._package_record(plans, flats)

    # -- the steady step ---------------------------------------------------------
    # After a planned step, what it checked is recorded: a snapshot of every value the
    # plan reads from the groups (the carried ones, d, k, step, ... as written back), the
    # optimizer's defaults and kept arguments, and a TorchGroup per C++ set over its params,
    # grads and state buffers. A later step whose snapshot is equal, and whose tensors
    # TorchGroup finds as recorded, skips the per-param plan: its options are built from
    # the groups as the plan builds them, every set is checked before any is stepped,
    # then the groups are written as after a planned step. A number lr is left out of
    # the snapshot (an LR scheduler changes it every step): the steady step reads and
    # checks it as the plan does (_check_groups, _checked_options).
    def _snapshot(self) -> tuple[Any, list[Any]] | None:
        refs: list[Any] = []
        out: list[Any] = []
        for source in [*self.param_groups, self.defaults, self.__dict__.get("_kept_arguments", {})]:
            items: list[Any] = []
            for key, v in source.items():
                if key == "params":
                    continue
                t = type(v)
                if key == "lr" and (t is float or t is int):
                    continue
                if t in _PLAIN_TYPES or (t is tuple and all(type(x) in _PLAIN_TYPES for x in v)):
                    items.append((key, t, v))
                elif t is torch.Tensor and v.dim() == 0 and v.layout == torch.strided and v.device.type == "cpu":
                    refs.append(v)
                    items.append((key, id(v), v.dtype, v.item()))
                else:  # a callable lr, another object: the plan reads it every step
                    return None
            out.append(items)
        return out, refs

    def _package_record(self, plans: list[tuple[Any, ...]], flats: list[list[FlatParameter]]) -> Any:
        snapshot = self._snapshot()
        if snapshot is None:
            return None
        groups = self.param_groups
        units = []
        for gis, options, params, grads, news, ts, per_group, witness in plans:
            if ts is None or any(g.grad is None for g in params):
                return None
            all_params = [p for gi in gis for p in groups[gi]["params"]]
            position = {id(p): j for j, p in enumerate(all_params)}
            names = self._needed_states(options)
            watched = [*names, *(n for n in self._reference_states if n not in names)]
            if not watched:  # (TorchGroup checks the state dicts through their buffers)
                return None
            sizes: list[Any] = [None] * len(all_params)
            dicts = []
            scalars = []  # prodigyopt's 0-d p0s, with their values: the set steps a full copy of each
            for j, p in enumerate(params):
                state = self.state.get(p)
                if type(state) is not dict:
                    return None
                own = []
                for s, n in enumerate(names):
                    t = state.get(n)
                    if not isinstance(t, torch.Tensor):
                        return None
                    if t.data_ptr() == witness[len(params) + j * len(names) + s][0]:
                        own.append((n, int(np.prod(self._shape(n, p))), t.dtype))
                    elif n == "p0" and type(t) is torch.Tensor and t.dim() == 0:
                        own.append((n, 1, t.dtype))
                        scalars.append((t, t.item()))
                    else:  # the set steps a buffer that is not the state's
                        return None
                if type(state.get(self._made_key)) is not int and self._made_key not in watched:
                    return None
                own += [(n, int(np.prod(self._shape(n, p))), state[n].dtype) for n in watched if n not in names]
                seen = witness[len(params) * (1 + len(names)) + j]
                if seen is not None:  # its master copy, which the set steps
                    m = state.get(_MASTER)
                    if not isinstance(m, torch.Tensor) or m.data_ptr() != seen[0]:
                        return None
                    own.append((_MASTER, p.numel(), torch.float32))
                sizes[position[id(p)]] = own
                dicts.append(state)
            try:
                recorded = _core._TorchGroup(torch, all_params, self.state, [(ts, [position[id(p)] for p in params], 1)],
                                             names, False, _PARAM_TYPES, sizes)
            except ValueError:
                return None
            group_of = [] if per_group is None else list(per_group[1])
            units.append((gis, recorded, params, dicts, group_of, self._made_key not in watched, ts, scalars))
        return _PackageSteady(snapshot, units, flats)

    def _package_steady_step(self) -> bool:
        record = self.__dict__.get("_package_steady")
        if record is None:
            return False
        groups = self.param_groups
        if len(groups) != len(record.flats):
            return False
        snapshot = self._snapshot()
        if snapshot is None or snapshot[0] != record.snapshot[0]:
            return False
        for group_flats in record.flats:
            for flat in group_flats:
                flat._gather_grads()
        try:  # as the plan (it raised nothing with these values): the options, each set's
            lr = self._check_groups()
            steps = []
            for gis, *_, ts, scalars in record.units:
                for t, value in scalars:  # still the value the set's copy holds (TorchGroup: the same tensor)
                    if t.item() != value:
                        return False
                g = groups[gis[0]]
                rate = lr if self._global else self._group_lr(g, 1)
                options = self._carried_of(gis[0], g, self._checked_options(gis[0], g, 1))
                options.lr = rate
                self._check_step_options(gis[0], g, options)
                per_group = None
                if self._group_options and len(gis) > 1:
                    per_group = [self._carried_of(gi, groups[gi], self._checked_options(gi, groups[gi], 1))
                                 for gi in gis]
                ts.set_options(options)
                ts.set_lr(rate)
                steps.append((options, rate, per_group, ts))
        except Exception:
            return False  # the plan runs, and raises what it finds
        state = self.state
        made = self._made_key
        for (gis, recorded, params, dicts, group_of, int_made, _, _) in record.units:
            params_list = groups[gis[0]]["params"] if len(gis) == 1 else [p for gi in gis for p in groups[gi]["params"]]
            if not recorded.check(params_list, state):
                return False
            # prodigyopt's state["step"], the plan's sign the state was made (C calls only)
            if int_made and set(map(type, map(dict.get, dicts, itertools.repeat(made)))) != {int}:
                return False
        # Every check passed: from here on, only writes.
        for (gis, recorded, params, dicts, group_of, _, _, _), (options, rate, per_group, ts) in zip(record.units, steps):
            k = int(_float(groups[gis[0]].get(self._count_key, 0)))
            recorded.step_set(options, rate, k + 1, per_group, group_of)
            self._write_groups(gis, options, ts.options, params, k, dicts)
        for group, group_flats in zip(groups, record.flats):
            _after_flat_step(self, group, group_flats)
        snapshot = self._snapshot()
        if snapshot is None:
            self.__dict__["_package_steady"] = None
        else:
            record.snapshot = snapshot
        return True

    def _plan(self) -> list[tuple[Any, ...]]:
        lr = self._check_groups()
        groups = self.param_groups
        plans = []
        for gis in ([list(range(len(groups)))] if self._global else [[gi] for gi in range(len(groups))]):
            g = groups[gis[0]]
            rate = lr if self._global else self._group_lr(g, 1)
            options = self._carried_of(gis[0], g, self._checked_options(gis[0], g, 1))
            options.lr = rate
            self._check_step_options(gis[0], g, options)  # may adjust the step's options (Lamb's clip)
            params, grads, bufs, news, where, needed, group_of, masters, positions = self._members(gis, options)
            # The TensorSet of the last step, while it views the same buffers (building one costs
            # more than a small step); the cache keeps the buffers it views alive.
            witness = [_witness(p) for p in params] + [_witness(b[n]) for b in bufs for n in needed] + [
                None if m is None else _witness(m) for m in masters]
            cached = self._cache.get(("groups", tuple(gis)))  # type: ignore[arg-type]
            if cached is not None and cached[1] == witness:
                ts = cached[0]
            else:
                ts = self._tensor_set(params, bufs, needed, where, options, masters) if params else None
            per_group = None
            if self._group_options and len(gis) > 1:  # each group's options, checked, with its lr
                per_group = ([self._carried_of(gi, groups[gi], self._checked_options(gi, groups[gi], 1))
                              for gi in gis], group_of)
            if ts is not None:
                try:
                    ts.set_options(options)
                except (TypeError, ValueError) as e:
                    raise type(e)(f"{_where(gis[0])}: {e}") from None
                ts.set_lr(rate)
                # One set per call: param_groups[0]'s rounding (equal in every group: _check_groups),
                # the seed unique per set (module docstring).
                ts.set_rounding(g["rounding"], _set_seed(g["seed"], positions[0]))
                try:  # as the step will: a bad grad in a later group must stop the earlier ones' steps
                    ts.check_grads([_numpy(g, "grad") for g in grads])
                except (TypeError, ValueError) as e:
                    raise type(e)(re.sub(r"tensor (\d+)", lambda m: where[int(m.group(1))], str(e))) from None
            plans.append((gis, options, params, grads, news, ts, per_group, witness))
        return plans

    def _check_step_options(self, gi: int, group: dict[str, Any], options: Any) -> None:
        pass

    def _commit_plan(self, gis: list[int], options: Any, params: list[torch.Tensor], grads: list[torch.Tensor],
                     news: list[dict[str, Any]], ts: Any, per_group: Any, witness: list[Any]) -> None:
        k = int(_float(self.param_groups[gis[0]].get(self._count_key, 0)))
        after = options
        if ts is not None:
            arrays = [_numpy(g, "grad") for g in grads]
            if per_group is None:
                ts.step(arrays, k + 1)
            else:
                ts.step_groups(arrays, k + 1, *per_group)
            after = ts.options
            self._cache[("groups", tuple(gis))] = (ts, witness)  # type: ignore[index]
        for p, new in zip(params, news):
            if new:
                self.state[p].update(new)
        self._write_groups(gis, options, after, params, k)

    def _write_groups(self, gis: list[int], before: Any, after: Any, params: list[torch.Tensor], k: int,
                      dicts: list[dict[str, Any]] | None = None) -> None:
        raise NotImplementedError

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        before = self.state, self.param_groups
        torch.optim.Optimizer.load_state_dict(self, state_dict)  # type: ignore[arg-type]
        try:
            _load_half(self, state_dict, before[1])
            for gi, group in enumerate(self.param_groups):
                self._carried_of(gi, group, self._checked_options(gi, group, 1))
        except Exception:
            self.state, self.param_groups = before
            raise
        self._cache.clear()  # state tensors were replaced
        self.__dict__["_package_steady"] = None


class _LearningRateFree(_PackageStep):
    """prodigyopt's and dadaptation's layout: one step over every group, d global."""

    _made_key = "step"
    _keeps_d0 = True

    def _written(self, after: Any) -> dict[str, Any]:
        return {self._carried_keys.get(f.name, f.name): float(getattr(after, f.name))
                for f in self.__gradstep_spec__.carried if f.name != "k"}

    def _write_groups(self, gis: list[int], before: Any, after: Any, params: list[torch.Tensor], k: int,
                      dicts: list[dict[str, Any]] | None = None) -> None:
        if after.k == before.k:  # the reference returned early (nothing to adapt to): d and k kept
            return
        values = self._written(after)
        for gi in gis:
            group = self.param_groups[gi]
            group.update(values)
            group["k"] = int(_float(group["k"])) + 1
        for state in dicts if dicts is not None else (self.state[p] for p in params):
            state["step"] += 1


class _ProdigyStep(_LearningRateFree):
    # prodigyopt reads these per group too; gradstep steps them with param_groups[0]'s
    # (its d0 also says when d first moves).
    _equal_keys = ("d0", "slice_p")
    _group_options = True
    _flat_states = ("s", "p0")
    _reference_defaults = {"weight_decay": 0, "slice_p": 1}

    @staticmethod
    def _group_extras(given: dict[str, Any]) -> dict[str, Any]:
        d0 = given["d0"]
        return {"d": d0, "d_max": d0, "d_numerator": 0.0, "k": 0}

    def _shape(self, name: str, p: torch.Tensor) -> tuple[int, ...]:
        # s and p0: p.flatten()[::slice_p], as prodigyopt keeps them (slice_p equal in every group)
        if name in self._flat_states:
            return ((p.numel() + self._slice() - 1) // self._slice(),)
        return tuple(p.shape)

    def _slice(self) -> int:
        return int(_float(self.param_groups[0].get("slice_p", 1)))

    def _made_state(self, p: torch.Tensor, options: Any) -> dict[str, Any]:
        flat = p.detach().reshape(-1)[::int(options.slice_p)]
        state: dict[str, Any] = {"step": 0, "s": torch.zeros_like(flat)}
        state["p0"] = flat.clone() if bool(p.any()) else torch.tensor(0, dtype=p.dtype)
        if options.beta1 > 0:
            state["exp_avg"] = torch.zeros_like(p.detach())
        state["exp_avg_sq"] = torch.zeros_like(p.detach())
        return state


class _DAdaptAdamStep(_LearningRateFree):
    _group_options = True
    _unit_keys = ("layer_scale",)
    _reference_defaults = {"weight_decay": 0, "log_every": 0}

    @staticmethod
    def _group_extras(given: dict[str, Any]) -> dict[str, Any]:
        return {"d": given["d0"], "k": 0, "layer_scale": 1.0, "numerator_weighted": 0.0}

    def _made_state(self, p: torch.Tensor, options: Any) -> dict[str, Any]:
        t = p.detach()
        return {"step": 0, "s": torch.zeros_like(t), "exp_avg": torch.zeros_like(t),
                "exp_avg_sq": torch.zeros_like(t)}


class _DAdaptSGDStep(_LearningRateFree):
    # dadaptation.DAdaptSGD reads every option but lr from param_groups[0] (its kernel too).
    _group_options = True
    _made_key = "z"
    _keeps_d0 = False
    _reference_defaults = {"weight_decay": 0, "log_every": 0}
    _reference_states = ("z",)

    @staticmethod
    def _group_extras(given: dict[str, Any]) -> dict[str, Any]:
        return {"k": 0, "numerator_weighted": 0.0, "d": given["d0"]}

    def _made_state(self, p: torch.Tensor, options: Any) -> dict[str, Any]:
        t = p.detach()
        return {"z": t.clone(), "s": torch.zeros_like(t), "x0": t.clone()}

    def _write_groups(self, gis: list[int], before: Any, after: Any, params: list[torch.Tensor], k: int,
                      dicts: list[dict[str, Any]] | None = None) -> None:
        if after.g0_norm == 0.0:  # lr = 0 or a zero first gradient (the reference divides by zero)
            return
        values = self._written(after)
        for gi in gis:
            self.param_groups[gi].update(values)
            self.param_groups[gi]["k"] = k + 1  # param_groups[0]'s k, as the reference
        # the reference's z = x0 - s, which the kernel does not keep
        for state in dicts if dicts is not None else (self.state[p] for p in params):
            torch.sub(state["x0"], state["s"], out=state["z"])


class _ScheduleFreeStep(_PackageStep):
    """schedulefree's layout: each group steps alone, with its own carried values;
    train()/eval() move the params between y and x (the kernel's mode switch)."""

    _global = False
    _made_key = "z"

    @staticmethod
    def _group_extras(given: dict[str, Any]) -> dict[str, Any]:
        return {"k": 0, "train_mode": False, "weight_sum": 0.0, "lr_max": -1.0, "scheduled_lr": 0.0}

    @staticmethod
    def _to_carried(key: str, value: float) -> float:
        # schedulefree starts lr_max at -1, gradstep at 0: max(lr, .) is the same for any lr >= 0.
        return max(value, 0.0) if key == "lr_max" else value

    def _made_state(self, p: torch.Tensor, options: Any) -> dict[str, Any]:
        t = p.detach()
        return {n: (t.clone() if n == "z" else torch.zeros_like(t)) for n in self._state_names}

    def _plan(self) -> list[tuple[Any, ...]]:
        mode = self.__gradstep_spec__.mode
        assert mode is not None
        for gi, group in enumerate(self.param_groups):
            if not group.get("train_mode"):
                raise RuntimeError(f"{_where(gi)}: {mode.step_refused}")
        return super()._plan()

    def _write_groups(self, gis: list[int], before: Any, after: Any, params: list[torch.Tensor], k: int,
                      dicts: list[dict[str, Any]] | None = None) -> None:
        group = self.param_groups[gis[0]]
        warmup = _float(group["warmup_steps"])
        lr = self._group_lr(group, 1) * ((k + 1) / warmup if k < warmup else 1.0)
        group["scheduled_lr"] = lr
        if params:
            lr_max, weight_sum = float(after.lr_max), float(after.weight_sum)
        else:  # no param has a grad: the reference still advances the group's scalars
            lr_max = max(lr, _float(group["lr_max"]))
            weight_sum = _float(group["weight_sum"]) + ((k + 1) ** _float(group["r"])) * (
                lr_max ** _float(group["weight_lr_power"]))
        group["lr_max"], group["weight_sum"], group["k"] = lr_max, weight_sum, k + 1

    def _switch(self, on: bool) -> None:
        lock = self.__dict__.get("_step_lock")
        if lock is None:
            lock = self.__dict__.setdefault("_step_lock", threading.RLock())
        with lock, torch.no_grad():
            plans = []
            for gi, group in enumerate(self.param_groups):
                if bool(group.get("train_mode")) == on:
                    continue
                options = self._carried_of(gi, group, self._checked_options(gi, group, 1))
                options.train_mode = not on
                members = [(i, p) for i, p in enumerate(group["params"]) if self._made_key in self.state.get(p, {})]
                ts = None
                if members:
                    needed = self._needed_states(options)
                    params, bufs, where, masters, news = [], [], [], [], []
                    _check_half_options(group, _where(gi))
                    first = sum(len(g["params"]) for g in self.param_groups[:gi])
                    for i, p in members:
                        w = _where(gi, i)
                        _check_param(p, w)
                        self._check_half(p, group, w)
                        if not p.is_contiguous():
                            raise ValueError(f"{w}: gradstep.torch.{type(self).__name__} steps contiguous "
                                             f"parameters only, got strides {p.stride()}")
                        state = self.state[p]
                        for n in needed:
                            if n not in state:
                                raise ValueError(f"{w}: state '{n}' is missing")
                        b, new, master = self._buffers(p, state, needed, options, w, group)
                        params.append(p)
                        bufs.append(b)
                        where.append(w)
                        masters.append(master)
                        news.append((p, {_MASTER: new[_MASTER]} if _MASTER in new else {}))
                    ts = self._tensor_set(params, bufs, needed, where, options, masters)
                    try:
                        ts.set_options(options)
                    except (TypeError, ValueError) as e:
                        raise type(e)(f"{_where(gi)}: {e}") from None
                    ts.set_rounding(group["rounding"], _set_seed(group["seed"], first + members[0][0]))
                    plans.append((group, ts, news))
                else:
                    plans.append((group, None, []))
            for group, ts, news in plans:
                if ts is not None:
                    ts.switch_mode(on)
                for p, new in news:  # a master made from the param (a state from schedulefree has none)
                    self.state[p].update(new)
                group["train_mode"] = on

    def train(self) -> None:
        """Params to y, the point gradients are taken at (as the reference's train())."""
        self._switch(True)

    def eval(self) -> None:
        """Params to x, the average to evaluate and save (as the reference's eval())."""
        self._switch(False)


class _AdamWScheduleFreeStep(_ScheduleFreeStep):
    _reference_defaults = {"weight_decay": 0, "warmup_steps": 0}


class _SGDScheduleFreeStep(_ScheduleFreeStep):
    _reference_defaults = {"weight_decay": 0, "warmup_steps": 0, "weight_lr_power": 2}


class _LambStep(_PackageStep):
    """timm.optim.Lamb's layout: each group its own options and step count (group['step'], a
    scalar tensor), stepped together in one C++ call for the global clip, whose max_grad_norm
    is the optimizer's defaults' (as timm reads it)."""

    _group_options = True
    _shared_lr = False
    _count_key = "step"
    _equal_keys = ("step",)  # the kernel's bias correction: one step number per call
    _carried_keys = {"max_lr": "max_lr_snapshot"}
    _made_key = "exp_avg"
    _reference_defaults = {"foreach": None}

    @staticmethod
    def _group_extras(given: dict[str, Any]) -> dict[str, Any]:
        lr = _float(given["lr"])
        if given["corrected_weight_decay"] and lr <= 0:
            raise ValueError(f"corrected weight decay requires a positive max lr, got {lr} (construct the "
                             "optimizer with the peak lr)")
        return {"max_lr_snapshot": lr}

    def _check_step_options(self, gi: int, group: dict[str, Any], options: Any) -> None:
        field = self.__gradstep_spec__.field("max_grad_norm")
        value = self.defaults.get("max_grad_norm")
        try:
            options.max_grad_norm = _float(field.to_option(value))
            options.validate()
        except (TypeError, ValueError) as e:
            raise type(e)(f"defaults['max_grad_norm']: {e}") from None

    def _made_state(self, p: torch.Tensor, options: Any) -> dict[str, Any]:
        t = p.detach()
        return {"exp_avg": torch.zeros_like(t), "exp_avg_sq": torch.zeros_like(t)}

    def _write_groups(self, gis: list[int], before: Any, after: Any, params: list[torch.Tensor], k: int,
                      dicts: list[dict[str, Any]] | None = None) -> None:
        wide = torch.get_default_dtype() == torch.float64  # timm's scalar dtype
        for gi in gis:
            group = self.param_groups[gi]
            if "step" not in group:
                group["step"] = torch.tensor(0.0, dtype=torch.float64 if wide else torch.float32)
            group["step"].add_(1)


_PACKAGE_STEPS: dict[str, type] = {
    "Prodigy": _ProdigyStep, "DAdaptAdam": _DAdaptAdamStep, "DAdaptSGD": _DAdaptSGDStep,
    "AdamWScheduleFree": _AdamWScheduleFreeStep, "SGDScheduleFree": _SGDScheduleFreeStep, "Lamb": _LambStep,
}


def _plain(x: Any) -> Any:
    return _float(x) if isinstance(x, torch.Tensor) else x


def _generate() -> dict[str, type]:
    classes: dict[str, type] = {}
    for spec in _spec.optimizers():  # a variant (AdamW) subclasses its base's adapter, as torch's does
        base = classes[spec.base] if spec.base else _PACKAGE_STEPS.get(spec.name, _GradstepStep)
        if spec.mirrored_in_torch:
            classes[spec.name] = _reference_adapter_class(spec, base)
        elif spec.torch_twin and isinstance(getattr(torch.optim, spec.name, None), type):
            classes[spec.name] = _adapter_class(spec, base)
    return classes


ADAPTERS: dict[str, type] = _generate()
globals().update(ADAPTERS)
__all__ = ["ADAPTERS", "FlatParameter", "flatten_parameters", *ADAPTERS]


def __getattr__(name: str) -> type[torch.optim.Optimizer]:
    # Reached only for names that are not here; tells type checkers that the
    # generated names (gradstep.torch.Adam) are torch optimizers.
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
