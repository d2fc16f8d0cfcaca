"""Optimizers over lists of numpy buffers, updated in place by the C++ core.

Names, defaults and update equations follow torch.optim (for Lion, which
torch.optim has not, lion_pytorch). Each optimizer keeps its parameters and
states in a C++ TensorSet (checked once); ``step(grads)`` is one call into C++
that updates every tensor with the GIL released, on several threads when the
step is large (``gs.set_num_threads``).

Given a :class:`gradstep.flat.FlatBuffers` (``gs.flatten``) instead of a list
of arrays, an optimizer lays its states out the same way and steps the whole
model as one contiguous vector.

``lr`` is a number, a schedule from ``gradstep.schedules`` (evaluated in C++
inside the step call), or any Python callable of the 0-based step (the slow
path: one Python call per step, not serializable). A ReduceLROnPlateau scales
whichever it is (``lr_scale``, floored at its ``min_lr``).
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, ClassVar, NamedTuple, Optional, Union

import numpy as np

from gradstep import _core, _spec
from gradstep import precision as _precision
from gradstep.flat import FlatBuffers
from gradstep.ranges import check_learning_rate
from gradstep.schedules import Schedule, from_dict

_LAST_STEP = 2**63 - 1
# The state holding the float32 master copies (master_weights=True).
MASTER = "master_param"
_PRECISION_DEFAULTS = {name: default for name, default, _ in _spec.PRECISION if name != "seed"}


_REENTERED = ("this optimizer was called from inside its own step (a callback of that step "
              "re-entered it); step, state_dict and load_state_dict cannot nest")


def _serialized(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run the method under the optimizer's step lock, never from inside a step."""

    @functools.wraps(method)
    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            if self._stepping:
                raise RuntimeError(_REENTERED)
            return method(self, *args, **kwargs)

    return locked


class StepResult(NamedTuple):
    """What a step did."""

    found_inf: bool  # a gradient held NaN or inf (checked when skip_nonfinite or max_grad_norm is set)
    skipped: bool  # found_inf with skip_nonfinite: nothing changed, step_count not advanced
    grad_norm: Optional[float]  # global L2 norm of the gradients, when max_grad_norm or skip_nonfinite is set
    lr: float  # the learning rate of this step


class LRSettings(NamedTuple):
    """An optimizer's rate as given and its plateau scaling (``opt.lr_settings()``)."""

    lr: Any  # a number, a schedule or a callable
    lr_scale: float
    min_lr: float


LearningRate = Union[float, Schedule, Callable[[int], float]]
# A list of arrays (updated in place), or flat buffers from gs.flatten.
Params = Union[Iterable[Any], FlatBuffers]


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def _group(name: str, value: Any, size: int, optional: Sequence[bool] = ()) -> tuple[Optional[float], ...]:
    """A grouped parameter (Adam's betas): a tuple or list of `size` real numbers (None
    where the field allows it: Adafactor's eps = (None, 1e-3))."""
    if not isinstance(value, (tuple, list)) or len(value) != size:
        what = "a pair" if size == 2 else f"a tuple of {size}"
        raise TypeError(f"{name} must be {what} of numbers, got {value!r}")
    allowed = tuple(optional) or (False,) * size
    out: list[Optional[float]] = []
    for i, v in enumerate(value):
        if v is None and allowed[i]:
            out.append(None)
            continue
        real = _real(f"{name}[{i}]", v)
        out.append(real)
        if allowed[i] and math.isnan(real):  # NaN is how the options say None
            raise ValueError(f"{name}[{i}] must be a number or None, got nan")
    return tuple(out)


def _callable_value(lr: Callable[[int], float], k: int) -> float:
    rate = _real("lr(step)", lr(k))
    if not math.isfinite(rate) or rate < 0:
        raise ValueError(f"lr({k}) returned {rate!r}; it must be a finite number >= 0")
    return rate


def _rate_at_start(lr: LearningRate) -> float:
    """The base rate of update 0: what an option declared to hold the rate the
    optimizer starts from (Lion's init_lr) is set to whenever the rate is set
    (a callable is called at 0 then)."""
    if isinstance(lr, Schedule):
        return float(lr(0))
    if callable(lr):
        return _callable_value(lr, 0)
    return _real("lr", lr)


def _checked(spec: _spec.OptimizerSpec, given: dict[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
    """The declared parameters given to gs.X as (option fields, Python-only values), type-checked;
    Python-only values also checked against their bounds (the options by validate())."""
    unknown = set(given) - {p.name for p in spec.hyper_params}
    if unknown:
        raise TypeError(f"{spec.name} got unexpected arguments {sorted(unknown)}")
    options: dict[str, Any] = dict(spec.fixed)
    initial: dict[str, float] = {}
    for p in spec.hyper_params:
        value = given.get(p.name, p.default)
        if p.grouped:
            values = _group(p.name, value, len(p.fields), [f.optional for f in p.fields])
        else:
            values = (value,)
        for f, v in zip(p.fields, values):
            if f.type == "flag":
                v = bool(v)
            elif not p.grouped and not (f.optional and v is None):
                v = _real(f.name, v)
                if f.optional and math.isnan(v):  # NaN is how the options say None
                    raise ValueError(f"{f.name} must be {f.rule} or None, got nan")
            v = f.to_option(v)
            if f.option:
                options[f.name] = v
            else:
                _core.check_bound(f.name, f.bound, v)
                initial[f.name] = v
    return options, initial


class Optimizer:
    """Base class: owns params, states and the C++ TensorSet that steps them.

    Each optimizer class (gs.SGD, gs.Adam, ...) is generated from its
    declaration in the C++ core; ``__gradstep_spec__`` is that declaration
    (a :class:`gradstep._spec.OptimizerSpec`).
    """

    __gradstep_spec__: ClassVar[_spec.OptimizerSpec]

    def __init__(self, params: Params, lr: LearningRate, *, skip_nonfinite: bool = False,
                 max_grad_norm: float | None = None, state_dtype: Optional[str] = None,
                 master_weights: bool = False, rounding: str = "nearest", seed: int = 0,
                 grad_dtype: Any = None, dtype: Optional[str] = None, **hyperparameters: Any) -> None:
        spec = self.__gradstep_spec__
        # Storage precision (gradstep.precision), checked with everything else first.
        self._precision = _precision.checked(state_dtype, master_weights, rounding, seed)
        self._raw_dtype = _precision.checked_dtype(dtype)
        self._grad_dtype = _precision.checked_grad_dtype(grad_dtype)
        if "max_grad_norm" not in spec.safeguards:  # an option of the optimizer's own (Lamb)
            hyperparameters["max_grad_norm"], max_grad_norm = max_grad_norm, None
        skip_nonfinite = bool(skip_nonfinite)
        if max_grad_norm is not None:
            max_grad_norm = _real("max_grad_norm", max_grad_norm)
            if not math.isfinite(max_grad_norm) or max_grad_norm <= 0:
                raise ValueError(f"max_grad_norm must be a finite number > 0 or None, got {max_grad_norm!r}")
        fields, self._initial_values = _checked(spec, hyperparameters)
        # Everything is checked before any buffer is made, lr with the rest:
        # a number as it is, a schedule or callable when it is evaluated.
        options = spec.options(**fields)
        if not isinstance(lr, Schedule) and not callable(lr):
            options.lr = _real("lr", lr)
        first = options
        if isinstance(lr, Schedule) or callable(lr):  # a value carried from lr starts at the first step's rate
            first = spec.options(**fields)
            first.lr = _real("lr(0)", lr(0))
        for name, value in spec.initial_carried(first).items():
            setattr(options, name, value)
        if spec.rate_at_start is not None:  # Lion's init_lr: lr at step 0 (a callable is called)
            setattr(options, spec.rate_at_start, _rate_at_start(lr))
        options.validate()
        self._step_count = 0
        # One step at a time: the step number, the settings and the buffers
        # must not be shared by two steps in flight from different threads,
        # and a snapshot or a load never sees half a step. Reentrant, with a
        # flag, so that a callback run inside a step (a callable lr, a grad's
        # __dlpack__) calling back into this optimizer gets an error instead
        # of a deadlock (a Python-level lock class would cost ~90 ns a step).
        self._lock = threading.RLock()
        self._stepping = False
        mask = options.state_mask
        self._state_names = spec.state_names()
        self._extents = {st.name: st.extent for st in spec.states}
        # The options whose declaration sizes the states (slot extents, a stride), as at construction.
        self._declared_by = spec.options(**fields)
        self._declared_by.lr = 0.0
        self._copied_states = {st.name for st in spec.states if st.copy_param}
        used = [name for slot, name in enumerate(self._state_names) if mask & (1 << slot)]
        self._flat = params if isinstance(params, FlatBuffers) else None
        if not isinstance(params, FlatBuffers):
            given = [_precision.raw_view(p, self._raw_dtype, f"params[{i}]") for i, p in enumerate(params)]
            if not given:
                raise ValueError("optimizer got an empty parameter list")
            self.params: list[np.ndarray] = [
                _core.view_array(p, f"params[{i}]") for i, p in enumerate(given)
            ]
            self._precision.check_params([p.dtype for p in self.params], spec.name, spec.reduces)
            self.state: dict[str, list[np.ndarray]] = {
                name: [self._new_state(name, p, options) for p in self.params] for name in used
            }
            if self._precision.master_weights:
                self.state[MASTER] = [p.astype(np.float32) for p in self.params]
            # The set gets the objects given, not only their numpy views: it
            # holds them, so their memory cannot dangle, and checks at each
            # step that their storage was not swapped or resized.
            self._set = self._tensor_set(given, self.state)
            self._view_set: Any = self._set
        else:
            # The whole model is one tensor of the core's TensorSet; the
            # per-tensor views stay available (state_dict, foreign grads).
            flat = params
            if len(flat) == 0:
                raise ValueError("optimizer got an empty parameter list")
            if _precision.is_half(flat.dtype) or self._precision.master_weights or self._grad_dtype is not None:
                raise ValueError("flat buffers (gs.flatten) are float32 or float64 here: pass bfloat16/float16 "
                                 "params (master_weights, grad_dtype) as a list of arrays")
            self.params = flat.params
            # States not of the params' shape (Adafactor's row_var, Prodigy's s with slice_p > 1)
            # are kept per tensor, and the set steps the per-tensor views.
            sized = [name for name in used
                     if next(st for st in spec.states if st.name == name).shape((2, 3), options) != (2, 3)]
            buffers = {name: flat.new_buffer(self._initial_state(name)) for name in used if name not in sized}
            for name in buffers:
                if name in self._copied_states:
                    np.copyto(buffers[name][0], flat.param_buffer)  # padding stays zero in both
            self.state = {name: views for name, (_, views) in buffers.items()}
            # States of another extent than the params' are per tensor (the set steps the views).
            self.state.update({name: [self._new_state(name, p, options) for p in self.params] for name in sized})
            self.state = {name: self.state[name] for name in used}
            if spec.per_tensor or sized:
                # Its step reduces over each tensor (Lamb's trust ratios), or it
                # keeps states per tensor: one vector would be one tensor, so
                # the set steps the views.
                self._set = self._tensor_set(self.params, self.state)
                self._flat_grads = flat.grads
                self._view_set = self._set
            else:
                self._set = self._tensor_set(
                    [flat.param_buffer], {name: [buf] for name, (buf, _) in buffers.items()}
                )
                self._flat_grads = [flat.grad_buffer]
                self._view_set = None  # built on first use
        # The set owns the options, the rate (base rate or schedule, plateau
        # scale and floor) and the safeguards; they are set here and when they
        # change, and read back from it.
        self._set.set_options(options)
        self._lr_callable: Optional[Callable[[int], float]] = None  # the slow path's function
        self.lr = lr
        self._set.set_safeguards(skip_nonfinite, max_grad_norm or 0.0)
        self._set.set_rounding(self._precision.rounding, self._precision.seed)
        check_learning_rate(self)

    def _tensor_set(self, params: list[np.ndarray], state: dict[str, list[np.ndarray]]) -> Any:
        grad_dtypes = None if self._grad_dtype is None else [self._grad_dtype] * len(params)
        return _core.TensorSet(
            params, [state.get(name) for name in self._state_names], list(self._state_names), self._declared_by,
            None, grad_dtypes, state.get(MASTER),
        )

    def _new_state(self, name: str, p: np.ndarray, options: Any) -> np.ndarray:
        """The state `name` of param p before the first step, in its declared shape."""
        st = next(s for s in self.__gradstep_spec__.states if s.name == name)
        shape = st.shape(p.shape, options)
        # Float32 for bfloat16/float16 params unless state_dtype="param"; a
        # state of another extent than the param's is float32 for them always.
        dtype = self._precision.state_dtype_for(p.dtype) if shape == p.shape else (
            np.dtype(np.float32) if _precision.is_half(p.dtype) else p.dtype)
        if name in self._copied_states:
            if shape == p.shape:
                return p.astype(dtype)  # a copy
            if st.extent == "strided" and st.stride is not None:
                return p.reshape(-1)[::int(getattr(options, st.stride))].astype(dtype)
            raise ValueError(f"state {name!r}: a copy of the param needs extent 'full' or 'strided'")
        return np.full(shape, self._initial_state(name), dtype=dtype)

    @property
    def _options(self) -> Any:
        """A copy of the core's options for this optimizer (lr: the rate of the last step)."""
        return self._set.options

    # -- safeguards ----------------------------------------------------------
    @property
    def skip_nonfinite(self) -> bool:
        """A step whose gradients hold NaN or inf changes nothing and is not counted."""
        return bool(self._set.skip_nonfinite)

    @skip_nonfinite.setter
    def skip_nonfinite(self, value: bool) -> None:
        self._set.set_safeguards(bool(value), self._set.max_grad_norm)

    @property
    def max_grad_norm(self) -> float | None:
        """Gradients are clipped to this global L2 norm (None: no clipping); by the optimizer's
        own rule when it declares max_grad_norm (Lamb), else as torch's clip_grad_norm_."""
        if self._owns("max_grad_norm"):
            return float(self._options.max_grad_norm) or None
        return float(self._set.max_grad_norm) or None

    @max_grad_norm.setter
    def max_grad_norm(self, value: float | None) -> None:
        if value is not None:
            value = _real("max_grad_norm", value)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"max_grad_norm must be a finite number > 0 or None, got {value!r}")
        if self._owns("max_grad_norm"):
            options = self._options
            options.max_grad_norm = value or 0.0
            self._set.set_options(options)
            return
        self._set.set_safeguards(self._set.skip_nonfinite, value or 0.0)

    def _owns(self, safeguard: str) -> bool:
        """Whether the optimizer declares this safeguard's name as an option of its own."""
        return safeguard not in self.__gradstep_spec__.safeguards

    def _initial_state(self, name: str) -> float:
        for value_name, state in self.__gradstep_spec__.initial_values().items():
            if state == name:
                return self._initial_values[value_name]
        return 0.0

    # -- learning rate -------------------------------------------------------
    # The core's TensorSet owns the rate: the base rate or schedule (a callable
    # is evaluated here at each step and handed over), the plateau scale and
    # floor. The rate of update k is plateau_rate(base(k), lr_scale, min_lr).
    @property
    def lr(self) -> float:
        """The learning rate the next step will use (any plateau scaling applied)."""
        k = self._step_count
        if self._lr_callable is not None:
            return float(_core.plateau_rate(self._callable_rate(k), self._set.lr_scale, self._set.min_lr))
        return float(self._set.lr_at(k))

    @lr.setter
    def lr(self, value: LearningRate) -> None:
        if not isinstance(value, Schedule) and not callable(value):
            rate = _real("lr", value)
            if not math.isfinite(rate) or rate < 0:
                raise ValueError(f"lr must be a finite number >= 0, got {rate!r}")
        # An option holding the rate at step 0 (Lion's init_lr) follows the
        # rate: checked with the other options before anything changes.
        start = self.__gradstep_spec__.rate_at_start
        options = None
        if start is not None:
            options = self._set.options
            setattr(options, start, _rate_at_start(value))
            options.validate()
        if isinstance(value, Schedule):
            self._set.set_schedule(value._core, value)  # evaluated in C++, inside each step
            self._lr_callable = None
        elif callable(value):
            self._set.set_lr(0.0, value)  # the rate of each step is set just before it
            self._lr_callable = value
        else:
            self._set.set_lr(rate, rate)
            self._lr_callable = None
        if options is not None:
            self._set.set_options(options)

    def _callable_rate(self, k: int) -> float:
        assert self._lr_callable is not None
        return _callable_value(self._lr_callable, k)

    @property
    def base_lr(self) -> float:
        """The base rate (number, schedule or callable) of the next step, before plateau scaling."""
        k = self._step_count
        return self._callable_rate(k) if self._lr_callable is not None else float(self._set.base_lr_at(k))

    @property
    def schedule(self) -> LearningRate:
        """The base rate as given: a number, a schedule or a callable."""
        source: LearningRate = self._set.lr_source
        return source

    @property
    def lr_scale(self) -> float:
        """The factor a ReduceLROnPlateau has applied to the base rate so far (1.0 if none)."""
        return float(self._set.lr_scale)

    @property
    def min_lr(self) -> float:
        """The floor of plateau scaling: a reduction never takes the rate below it."""
        return float(self._set.min_lr)

    def set_plateau(self, lr_scale: float, min_lr: float) -> None:
        """Scale the base rate by ``lr_scale``, floored at ``min_lr`` (ReduceLROnPlateau's hook)."""
        self._set.set_plateau(_real("lr_scale", lr_scale), _real("min_lr", min_lr))

    def lr_settings(self) -> LRSettings:
        """The rate as given and its plateau scaling, to restore with ``restore_lr_settings``."""
        return LRSettings(self.schedule, self.lr_scale, self.min_lr)

    def restore_lr_settings(self, settings: LRSettings) -> None:
        """Put back what ``lr_settings`` returned (the very rate object, a schedule included)."""
        self.set_plateau(settings.lr_scale, settings.min_lr)
        self.lr = settings.lr

    @contextlib.contextmanager
    def pinned_lr(self, rate: float) -> Iterator[None]:
        """Steps inside use exactly ``rate`` (no schedule, no plateau scaling; ``opt.lr = x``
        may change it); the rate and its scaling as they were come back on exit."""
        saved = self.lr_settings()
        self.set_plateau(1.0, 0.0)
        try:
            self.lr = rate
            yield
        finally:
            self.restore_lr_settings(saved)

    @property
    def step_count(self) -> int:
        """Number of steps taken so far."""
        return self._step_count

    # -- stepping ------------------------------------------------------------
    def step(self, grads: Optional[Sequence[Any]] = None) -> StepResult:
        """Update every parameter in place from its gradient (one C++ call).

        ``grads`` has one array per parameter. An optimizer built on flat
        buffers steps from ``flat.grads`` when ``grads`` is omitted (or is
        ``flat.grads``), as one contiguous vector; other grads are accepted
        too and step the same buffers tensor by tensor.

        With ``skip_nonfinite=True`` a step whose gradients hold NaN or inf
        changes nothing and is not counted (``result.skipped``); with
        ``max_grad_norm`` the gradients are scaled as by
        ``torch.nn.utils.clip_grad_norm_`` (without modifying them) and
        ``result.grad_norm`` is their global norm before clipping.
        """
        with self._lock:
            if self._stepping:
                raise RuntimeError(_REENTERED)
            k = self._step_count
            if k >= _LAST_STEP:  # the core counts steps in int64
                raise ValueError(f"step_count {k} has reached the largest step gradstep can count")
            self._stepping = True
            try:
                if self._lr_callable is not None:  # the slow path: one Python call per step
                    self._set.set_lr(self._callable_rate(k), self._lr_callable)
                tensor_set = self._set
                if self._flat is None:
                    if grads is None:
                        raise TypeError("step() needs grads: one array per parameter")
                    if self._raw_dtype is not None:  # raw uint16 bits, viewed as the dtype given
                        grads = [_precision.raw_view(g, self._raw_dtype, f"grads[{i}]") for i, g in enumerate(grads)]
                elif grads is None or grads is self._flat.grads:
                    grads = self._flat_grads
                else:
                    if self._view_set is None:
                        view_set = self._tensor_set(self.params, self.state)
                        view_set.share_settings(self._set)
                        self._view_set = view_set
                    tensor_set = self._view_set
                # Positional arguments: keyword matching costs more than a small step.
                # _make: the NamedTuple constructor parses arguments (~300 ns).
                result = StepResult._make(tensor_set.step(grads, k + 1))
                if not result.skipped:
                    self._step_count = k + 1
                return result
            finally:
                self._stepping = False

    # -- checkpoints ---------------------------------------------------------
    def hyperparameters(self) -> dict[str, Any]:
        """Every constructor argument but params and lr, as plain values."""
        return {**self._update_hyperparameters(), "skip_nonfinite": self.skip_nonfinite,
                "max_grad_norm": self.max_grad_norm,  # declared (Lamb) or the safeguard: the same value
                **self._precision_hyperparameters()}

    def _precision_hyperparameters(self) -> dict[str, Any]:
        """The storage-precision arguments but the seed (which state_dict carries as the
        run's, and load_state_dict adopts), as plain values."""
        grad_dtype = None if self._grad_dtype is None else str(self._grad_dtype)
        return {"state_dtype": self._precision.state_dtype, "master_weights": self._precision.master_weights,
                "rounding": self._precision.rounding, "grad_dtype": grad_dtype, "dtype": self._raw_dtype}

    @property
    def seed(self) -> int:
        """The seed of stochastic rounding's random bits (see gradstep.precision)."""
        return int(self._set.seed)

    def _update_hyperparameters(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        options = self._options
        for p in self.__gradstep_spec__.hyper_params:
            values = tuple(f.from_option(getattr(options, f.name)) if f.option else self._initial_values[f.name]
                           for f in p.fields)
            out[p.name] = values if p.grouped else values[0]
        return out

    @_serialized
    def state_dict(self) -> dict[str, Any]:
        """Plain numbers, dicts and numpy arrays (copies); no pickle needed to store it.

        A schedule is stored as its ``to_dict()``; a Python callable lr as None
        (load_state_dict then keeps the loading optimizer's own lr).
        """
        source = self.schedule
        if isinstance(source, Schedule):
            lr: Any = source.to_dict()
        else:
            lr = None if callable(source) else source
        out = {
            "optimizer": type(self).__name__,
            "step": self._step_count,
            "lr": lr,
            "lr_scale": self.lr_scale,
            "min_lr": self.min_lr,
            "hyperparameters": self.hyperparameters(),
            "state": {name: [a.copy() for a in arrays] for name, arrays in self.state.items()},
            "seed": self.seed,
        }
        if self.__gradstep_spec__.carried:
            out["carried"] = self.carried()
        return out

    def carried(self) -> dict[str, Any]:
        """The values the next step starts from that earlier steps computed (Prodigy's d,
        Schedule-Free's weight_sum), by name, and the mode the params are in (Schedule-Free's
        train_mode, a bool); empty for optimizers without any."""
        options = self._options
        return {f.name: (bool if f.type == "flag" else float)(getattr(options, f.name))
                for f in self.__gradstep_spec__.carried}

    @_serialized
    def _switch_mode(self, on: bool) -> None:
        """The declaration's Mode: move every param into its `on` state (or out of it)."""
        self._set.switch_mode(on)

    @_serialized
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state_dict from an optimizer of the same kind and shapes.

        Everything is checked before anything is written; the states are
        copied into the existing buffers, which stay where they are. Bad
        content raises ValueError naming the field. ``step`` must lie in
        ``[0, gradstep.checkpoint.MAX_STEP]`` (2**62): far from int64's end,
        so stepping on from any accepted count cannot overflow it.
        """
        from gradstep.checkpoint import MAX_STEP

        if not isinstance(state_dict, dict):
            raise ValueError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        name = state_dict.get("optimizer")
        if name != type(self).__name__:
            raise ValueError(f"state_dict is for {name!r}, not {type(self).__name__!r}")
        step = state_dict.get("step")
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not 0 <= step <= MAX_STEP:
            raise ValueError(f"state_dict['step'] must be an integer in [0, 2**62], got {step!r}")
        hyper = state_dict.get("hyperparameters")
        if isinstance(hyper, dict):  # saved before the precision arguments existed: their defaults
            hyper = {**_PRECISION_DEFAULTS, **hyper}
        if hyper != self.hyperparameters():
            raise ValueError(
                "state_dict hyperparameters differ from this optimizer's: "
                f"{hyper!r} != {self.hyperparameters()!r}"
            )
        states = state_dict.get("state")
        if not isinstance(states, dict) or set(states) != set(self.state):
            raise ValueError(
                f"state_dict['state'] must have the buffers {sorted(self.state)}, "
                f"got {sorted(states) if isinstance(states, dict) else states!r}"
            )
        for key, arrays in states.items():
            mine = self.state[key]
            if not isinstance(arrays, (list, tuple)):
                raise ValueError(f"state '{key}' must be a list of arrays, got {type(arrays).__name__}")
            if len(arrays) != len(mine):
                raise ValueError(f"state '{key}': {len(arrays)} buffers for {len(mine)} params")
            for i, (src, dst) in enumerate(zip(arrays, mine)):
                src = np.asarray(src)
                if src.shape != dst.shape or src.dtype != dst.dtype:
                    raise ValueError(
                        f"state '{key}'[{i}]: {src.dtype}{list(src.shape)} does not match "
                        f"{dst.dtype}{list(dst.shape)}"
                    )
        lr = state_dict.get("lr")
        if isinstance(lr, dict):
            lr = from_dict(lr)
        elif lr is not None and not isinstance(lr, Schedule):
            if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating, np.integer)):
                raise ValueError(f"state_dict['lr'] must be a number, a schedule dict or None, got {lr!r}")
            if not math.isfinite(lr) or lr < 0:
                raise ValueError(f"state_dict['lr'] must be a finite number >= 0, got {lr!r}")
        # Absent in state_dicts saved before plateau support: no scaling.
        lr_scale = state_dict.get("lr_scale", 1.0)
        min_lr = state_dict.get("min_lr", 0.0)
        for key, value in (("lr_scale", lr_scale), ("min_lr", min_lr)):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                raise ValueError(f"state_dict[{key!r}] must be a number, got {value!r}")
        _core.plateau_rate(0.0, _real("lr_scale", lr_scale), _real("min_lr", min_lr))  # validates
        carried = self._checked_carried(state_dict)
        seed = state_dict.get("seed", self.seed)  # absent before stochastic rounding: the optimizer's own
        try:
            seed = _precision.checked(seed=seed).seed
        except ValueError as e:
            raise ValueError(f"state_dict['seed']: {e}") from None
        if lr is not None:
            self.lr = lr if isinstance(lr, Schedule) else float(lr)
        self.set_plateau(lr_scale, min_lr)
        if carried is not None:
            self._set.set_options(carried)
        for key, arrays in states.items():
            for src, dst in zip(arrays, self.state[key]):
                np.copyto(dst, src)
        self._set.set_rounding(self._precision.rounding, seed)
        self._step_count = int(step)

    def _checked_carried(self, state_dict: dict[str, Any]) -> Any:
        """The options with state_dict's carried values, validated; None if the optimizer has none."""
        spec = self.__gradstep_spec__
        if not spec.carried:
            if "carried" in state_dict and state_dict["carried"] not in ({}, None):
                raise ValueError(f"state_dict['carried'] must be empty for {type(self).__name__}")
            return None
        given = state_dict.get("carried")
        names = sorted(f.name for f in spec.carried)
        if not isinstance(given, dict) or sorted(given) != names:
            raise ValueError(f"state_dict['carried'] must be a dict with the values {names}, got {given!r}")
        options = self._options
        flags = {f.name for f in spec.carried if f.type == "flag"}
        for name, value in given.items():
            if name in flags:
                if not isinstance(value, (bool, np.bool_)):
                    raise ValueError(f"state_dict['carried'][{name!r}] must be a bool, got {value!r}")
                setattr(options, name, bool(value))
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                raise ValueError(f"state_dict['carried'][{name!r}] must be a number, got {value!r}")
            setattr(options, name, float(value))
        try:
            options.validate()
        except ValueError as e:
            raise ValueError(f"state_dict['carried']: {e}") from None
        return options

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({len(self.params)} tensors, lr={self.schedule!r}, {args})"


def _optimizer_class(spec: _spec.OptimizerSpec, base: type[Optimizer]) -> type[Optimizer]:
    """gs.X from its declaration: its reference's signature and defaults (torch.optim's,
    lion_pytorch's), the update equations as its doc."""
    signature = spec.signature(lr_annotation=LearningRate, params_annotation=Params)

    def __init__(self: Optimizer, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        given = dict(bound.arguments)
        del given["self"]
        safeguards = {name: given.pop(name) for name in spec.safeguards}
        precision = {name: given.pop(name) for name, _, _ in _spec.PRECISION}
        Optimizer.__init__(self, given.pop("params"), given.pop("lr"), **safeguards, **precision, **given)

    __init__.__signature__ = signature  # type: ignore[attr-defined]
    __init__.__qualname__ = f"{spec.name}.__init__"
    doc = f"{spec.reference_class}: {spec.summary}.\n\n{spec.doc()}\n"
    namespace: dict[str, Any] = {"__init__": __init__, "__doc__": doc, "__gradstep_spec__": spec,
                                 "__module__": __name__, "__qualname__": spec.name}
    if spec.mode is not None:
        namespace.update(_mode_methods(spec, spec.mode))
    return type(spec.name, (base,), namespace)


def _mode_methods(spec: _spec.OptimizerSpec, mode: _spec.Mode) -> dict[str, Callable[..., None]]:
    """The methods switching a declared Mode (Schedule-Free's train() and eval())."""

    def enter(self: Optimizer) -> None:
        self._switch_mode(True)

    def leave(self: Optimizer) -> None:
        self._switch_mode(False)

    out: dict[str, Callable[..., None]] = {}
    for method, name, state in ((enter, mode.on, True), (leave, mode.off, False)):
        method.__name__ = name
        method.__qualname__ = f"{spec.name}.{name}"
        method.__doc__ = (f"Move every param into the {name} point (one C++ pass over all tensors; nothing "
                          f"happens when they are there already). carried()[{mode.flag!r}] is then {state}; "
                          f"steps need {mode.on}().")
        out[name] = method
    return out


def _generate() -> dict[str, type[Optimizer]]:
    classes: dict[str, type[Optimizer]] = {}
    for spec in _spec.optimizers():  # a variant (AdamW) subclasses its base (Adam)
        classes[spec.name] = _optimizer_class(spec, classes[spec.base] if spec.base else Optimizer)
    return classes


# Every declared optimizer: gs.SGD, gs.Adagrad, ..., gs.AdamW.
OPTIMIZERS: dict[str, type[Optimizer]] = _generate()
globals().update(OPTIMIZERS)
__all__ = ["LRSettings", "LearningRate", "OPTIMIZERS", "Optimizer", "Params", "StepResult", *OPTIMIZERS]


def __getattr__(name: str) -> type[Optimizer]:
    # Reached only for names that are not here. It tells type checkers that
    # the generated names (gs.optim.Adam) are optimizer classes.
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
