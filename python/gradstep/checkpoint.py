"""Optimizer checkpoints without pickle: one .npz file, written atomically.

The file holds the optimizer's state buffers as plain arrays and everything
else (class, step count, learning rate or schedule, hyperparameters, and a
manifest of every array's dtype and shape) as JSON, with a SHA-256 over all
of it so truncation or tampering is detected on load.

Reading trusts nothing in the file: members are read with ``zipfile`` one by
one, only the expected names, each ``.npy`` header checked against the
manifest (dtype, shape, and the member's declared size) before its data is
read, and every read bounded by that size, so a hostile file cannot make the
reader allocate or inflate more than the manifest declares, nor run code
(``allow_pickle`` never applies: object dtypes are refused). Any malformed
file raises :class:`CheckpointError` saying what is wrong.

Format version 2 adds the per-array manifest; version 1 files (without it)
are still read, each member checked against its own header and size.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import socket
import tempfile
import time
import warnings
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO, Optional, Union

import numpy as np

FORMAT = "gradstep-checkpoint"
VERSION = 2
READABLE_VERSIONS = (1, 2)
# The largest step count an optimizer accepts (load_state_dict, gs.load).
# Far from int64's end on purpose: counting up one step at a time from any
# accepted count cannot reach 2**63 - 1 (that would take 2**62 more steps).
MAX_STEP = 2**62
# The metadata (JSON) is read whole; bound it. Schedules are small trees.
MAX_META_BYTES = 16 * 2**20
PathLike = Union[str, "os.PathLike[str]"]

_META = "__meta__.npy"
_STATE_MEMBER = re.compile(r"state/([A-Za-z_][A-Za-z0-9_]{0,63})/(0|[1-9][0-9]{0,8})\.npy")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_MAX_NPY_HEADER = 65536
# dtype.str of the state buffers a checkpoint may hold (little-endian floats),
# and "bfloat16" (ml_dtypes'; its dtype.str, '<V2', says nothing), which is
# stored as its bits, little-endian uint16.
_STATE_DTYPES = frozenset({"<f2", "<f4", "<f8", "bfloat16"})
_STORED_AS = {"bfloat16": "<u2"}


def _dtype_name(dtype: np.dtype) -> str:
    """How the manifest names a state dtype."""
    from gradstep.precision import BFLOAT16

    return "bfloat16" if dtype == BFLOAT16 else dtype.str
_MAX_NDIM = 32
# A temp file whose creator died is removed after this long even when its pid
# cannot be checked (legacy names without a pid).
_LEGACY_TEMP_AGE = 3600.0


class CheckpointError(ValueError):
    """The file is not a valid gradstep checkpoint (truncated, tampered, foreign)."""


def _digest(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for key in sorted(arrays):
        a = arrays[key]  # tobytes() is C order whatever the layout
        h.update(f"{key}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


_INF = "inf"  # a hyperparameter's +infinity in the JSON metadata


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    return value


# ---- writing ----------------------------------------------------------------------


def save(optimizer: Any, path: PathLike) -> None:
    """Write ``optimizer``'s full state to ``path`` atomically.

    The data goes to a temporary file in the same folder (``.{name}.{host}-{pid}.*.tmp``),
    is flushed to disk, and then renamed over ``path``: a crash at any moment
    leaves either the previous checkpoint or the new one, never a mix. Temporary
    files left by a save that was killed (its process no longer alive) are
    removed by the next save of the same path; a concurrent save's are not.
    """
    sd = optimizer.state_dict()
    if sd.get("lr") is None:
        raise TypeError(
            "this optimizer's lr is a Python callable, which cannot be checkpointed without "
            "pickle; use a gradstep schedule or a number"
        )
    arrays = {
        # Not ascontiguousarray: it turns a 0-d state into shape (1,).
        f"state/{name}/{i}": np.asarray(a).copy(order="C")
        for name, buffers in sd["state"].items()
        for i, a in enumerate(buffers)
    }
    names = {key: _dtype_name(a.dtype) for key, a in arrays.items()}
    for key, a in arrays.items():
        if names[key] not in _STATE_DTYPES:
            raise TypeError(f"{key}: dtype {a.dtype} cannot be checkpointed (float16/32/64 and bfloat16 only)")
        if names[key] in _STORED_AS:
            arrays[key] = a.view(_STORED_AS[names[key]])
    extra = {k: v for k, v in sd.items() if k != "state"}
    # JSON has no infinity: an unbounded hyperparameter (growth_rate=inf) is stored as "inf".
    extra["hyperparameters"] = {k: _INF if isinstance(v, float) and v == math.inf else v
                                for k, v in extra["hyperparameters"].items()}
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "state_dict": _jsonable(extra),
        "state_counts": {name: len(buffers) for name, buffers in sd["state"].items()},
        "arrays": {key: {"dtype": names[key], "shape": list(a.shape)} for key, a in arrays.items()},
    }
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(
            "this optimizer's state cannot be checkpointed without pickle "
            f"(a Python callable as lr, or a non-finite number?): {e}"
        ) from None
    meta["sha256"] = _digest(meta, arrays)
    text = json.dumps(meta).encode()
    if len(text) > MAX_META_BYTES:
        raise ValueError(f"checkpoint metadata is {len(text)} bytes; at most {MAX_META_BYTES} can be read back")

    path = Path(path)
    folder = path.parent
    _remove_stale_temps(folder, path.name)
    fd, tmp = tempfile.mkstemp(prefix=f"{_temp_prefix(path.name)}.", suffix=".tmp", dir=folder)
    try:
        payload: dict[str, Any] = {"__meta__": np.frombuffer(text, dtype=np.uint8)}
        payload.update(arrays)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(folder)


def _host_id() -> str:
    # Temp names carry the host too: a pid means nothing on another machine
    # sharing the folder (NFS), so only this host's dead pids are cleaned up.
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _temp_prefix(name: str, pid: Optional[int] = None) -> str:
    """The start of the temp file names a save of ``name`` uses (``.{name}.{host}-{pid}``)."""
    return f".{name}.{_host_id()}-{os.getpid() if pid is None else pid}"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid() or pid <= 0:
        return True  # another thread of this process may be saving
    if os.name == "nt":  # os.kill would terminate it there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, someone else's
        return True
    return True


def _remove_stale_temps(folder: Path, name: str) -> None:
    ours = re.compile(re.escape(f".{name}.") + r"([0-9a-f]{8})-([0-9]{1,10})\.[a-z0-9_]+\.tmp")
    legacy = re.compile(re.escape(f".{name}.") + r"[a-z0-9_]{8}\.tmp")  # mkstemp names of format 1
    host = _host_id()
    try:
        entries = list(os.scandir(folder or "."))
    except OSError:
        return
    for entry in entries:
        m = ours.fullmatch(entry.name)
        try:
            if m:
                if m.group(1) != host or _pid_alive(int(m.group(2))):
                    continue
            elif legacy.fullmatch(entry.name):
                if time.time() - entry.stat(follow_symlinks=False).st_mtime < _LEGACY_TEMP_AGE:
                    continue
            else:
                continue
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
        except OSError:
            pass  # gone already, or not ours to remove


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- reading ----------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} in JSON")


class _Reader:
    """An open checkpoint: its members listed and checked, its metadata parsed and checked."""

    def __init__(self, path: PathLike) -> None:
        self.path = path
        self._file: BinaryIO = open(path, "rb")  # OSError (missing file, ...) propagates as is
        try:
            self._open()
        except BaseException:
            if hasattr(self, "_zip"):
                self._zip.close()
            self._file.close()
            raise

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._zip.close()
        self._file.close()

    def error(self, what: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: {what}")

    # -- members and metadata
    def _open(self) -> None:
        size = os.fstat(self._file.fileno()).st_size
        if size == 0:
            raise self.error("not a gradstep checkpoint (the file is empty)")
        if self._file.read(6) == b"\x93NUMPY":
            raise self.error("not a gradstep checkpoint (a single .npy array, not an .npz archive)")
        self._file.seek(0)
        try:
            self._zip = zipfile.ZipFile(self._file)
            infos = self._zip.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
            raise self.error(
                f"unreadable checkpoint (truncated or corrupt, or not an .npz archive at all): {e}"
            ) from None
        self.infos: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            name = info.filename
            if name in self.infos:
                raise self.error(f"not a gradstep checkpoint (member {name!r} appears twice)")
            if name != _META and not _STATE_MEMBER.fullmatch(name):
                raise self.error(f"not a gradstep checkpoint (unexpected member {name[:100]!r})")
            if info.flag_bits & 0x1:
                raise self.error(f"member {name!r} is encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise self.error(f"member {name!r} uses an unsupported compression ({info.compress_type})")
            if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
                raise self.error(
                    f"member {name!r} is truncated or corrupt: stored size {info.compress_size} != size {info.file_size}"
                )
            if info.compress_type == zipfile.ZIP_DEFLATED and info.file_size > 1032 * info.compress_size + 64:
                # deflate cannot expand more than ~1032:1; a larger claim is a lie
                raise self.error(f"member {name!r} is corrupt: it claims to inflate {info.compress_size} "
                                 f"bytes to {info.file_size}")
            if info.header_offset + info.compress_size > size:
                raise self.error(f"member {name!r} extends past the end of the file (truncated or corrupt)")
            self.infos[name] = info
        if _META not in self.infos:
            raise self.error("not a gradstep checkpoint (no metadata)")
        raw = self.read_member(_META, "|u1", None, max_bytes=MAX_META_BYTES)
        if raw.ndim != 1:
            raise self.error("not a gradstep checkpoint (bad metadata)")
        try:
            meta = json.loads(raw.tobytes().decode("utf-8"), parse_constant=_reject_constant)
        except RecursionError:
            raise self.error("metadata JSON is nested too deeply") from None
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, huge int literals
            raise self.error(f"metadata is not valid JSON: {str(e)[:200]}") from None
        self.meta = self._check_meta(meta)

    def _check_meta(self, meta: Any) -> dict[str, Any]:
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise self.error("not a gradstep checkpoint")
        version = meta.get("version")
        if not _is_int(version) or version not in READABLE_VERSIONS:
            raise self.error(f"checkpoint version {str(version)[:50]!r} is not one of {READABLE_VERSIONS}")
        known = {"format", "version", "state_dict", "state_counts", "sha256"} | ({"arrays"} if version >= 2 else set())
        unknown = set(meta) - known
        if unknown:
            raise self.error(f"unexpected metadata fields {sorted(unknown)[:10]}")
        if not isinstance(meta.get("sha256"), str):
            raise self.error("metadata has no sha256 string")

        sd = meta.get("state_dict")
        if not isinstance(sd, dict):
            raise self.error("metadata 'state_dict' must be an object")
        if not isinstance(sd.get("optimizer"), str):
            raise self.error(f"metadata 'optimizer' must be a string, got {_short(sd.get('optimizer'))}")
        step: Any = sd.get("step")
        if not _is_int(step) or not 0 <= step <= MAX_STEP:
            raise self.error(f"metadata 'step' must be an integer in [0, 2**62], got {_short(step)}")
        lr: Any = sd.get("lr")
        if not (isinstance(lr, dict) or (_is_real(lr) and math.isfinite(lr) and lr >= 0)):
            raise self.error(f"metadata 'lr' must be a number >= 0 or a schedule, got {_short(lr)}")
        for key, default in (("lr_scale", 1.0), ("min_lr", 0.0)):
            v: Any = sd.get(key, default)
            if not (_is_real(v) and math.isfinite(v) and v >= 0):
                raise self.error(f"metadata {key!r} must be a finite number >= 0, got {_short(v)}")
        hyper = sd.get("hyperparameters")
        if not isinstance(hyper, dict):
            raise self.error(f"metadata 'hyperparameters' must be an object, got {_short(hyper)}")
        if "state" in sd:
            raise self.error("metadata 'state_dict' must not hold 'state' (the buffers are members)")
        carried = sd.get("carried", {})
        if not isinstance(carried, dict) or len(carried) > 64 or not all(
                isinstance(k, str) and _NAME.fullmatch(k) and (_is_real(v) or isinstance(v, bool))
                for k, v in carried.items()):
            raise self.error(f"metadata 'carried' must map names to numbers or bools, got {_short(carried)}")

        counts = meta.get("state_counts")
        if not isinstance(counts, dict):
            raise self.error("metadata 'state_counts' must be an object")
        for name, n in counts.items():
            if not _NAME.fullmatch(name):
                raise self.error(f"bad state name {name[:100]!r}")
            if not _is_int(n) or not 0 <= n < len(self.infos):
                raise self.error(f"state_counts[{name!r}] must be a count of members, got {_short(n)}")
        # Before any state member is read: exactly the expected names.
        self.keys = [f"state/{name}/{i}" for name, n in counts.items() for i in range(n)]
        expected = {_META} | {f"{key}.npy" for key in self.keys}
        missing, extra = expected - set(self.infos), set(self.infos) - expected
        if missing:
            raise self.error(f"missing members {sorted(missing)[:10]}")
        if extra:
            raise self.error(f"unexpected members {sorted(extra)[:10]}")

        self.manifest: Optional[dict[str, tuple[str, tuple[int, ...]]]] = None
        if version >= 2:
            arrays = meta.get("arrays")
            if not isinstance(arrays, dict) or set(arrays) != set(self.keys):
                raise self.error("metadata 'arrays' must list exactly the state buffers")
            self.manifest = {}
            for key, entry in arrays.items():
                if not isinstance(entry, dict) or set(entry) != {"dtype", "shape"}:
                    raise self.error(f"metadata arrays[{key!r}] must be {{'dtype': ..., 'shape': [...]}}")
                dtype, shape = entry["dtype"], entry["shape"]
                if dtype not in _STATE_DTYPES:
                    raise self.error(f"{key}: dtype {_short(dtype)} is not a float16/32/64 state dtype")
                if (not isinstance(shape, list) or len(shape) > _MAX_NDIM
                        or not all(_is_int(d) and 0 <= d < 2**63 for d in shape)):
                    raise self.error(f"{key}: shape {_short(shape)} is not a list of sizes")
                self.manifest[key] = (dtype, tuple(shape))
        return meta

    # -- arrays
    def read_member(self, name: str, dtype: Optional[str], shape: Optional[tuple[int, ...]],
                    max_bytes: Optional[int] = None) -> np.ndarray:
        """One member's array; the header must match (dtype, shape) where given."""
        info = self.infos[name]
        if shape is not None and dtype is not None:
            max_bytes = math.prod(shape) * np.dtype(dtype).itemsize
        if max_bytes is not None and info.file_size > max_bytes + _MAX_NPY_HEADER:
            raise self.error(f"member {name!r} is {info.file_size} bytes, more than its {max_bytes} bytes of data")
        try:
            with self._zip.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    got_shape, fortran, got_dtype = np.lib.format.read_array_header_1_0(f, _MAX_NPY_HEADER)
                elif version == (2, 0):
                    got_shape, fortran, got_dtype = np.lib.format.read_array_header_2_0(f, _MAX_NPY_HEADER)
                else:
                    raise self.error(f"member {name!r}: unsupported .npy version {version}")
                if got_dtype.hasobject:
                    raise self.error(f"member {name!r} holds Python objects (pickled data), which are refused")
                if fortran:
                    raise self.error(f"member {name!r} is in Fortran order; checkpoints store C order")
                if dtype is not None and got_dtype.str != dtype:
                    raise self.error(f"member {name!r} has dtype {got_dtype.str}, the manifest says {dtype}")
                if dtype is None and name != _META and got_dtype.str not in _STATE_DTYPES:
                    raise self.error(f"member {name!r} has dtype {got_dtype}, not a float16/32/64 state dtype")
                if shape is not None and tuple(got_shape) != shape:
                    raise self.error(f"member {name!r} has shape {got_shape}, the manifest says {list(shape)}")
                nbytes = math.prod(got_shape) * got_dtype.itemsize
                if max_bytes is not None and nbytes > max_bytes:
                    raise self.error(f"member {name!r} claims {nbytes} bytes, more than {max_bytes}")
                if info.file_size - f.tell() != nbytes:
                    raise self.error(
                        f"member {name!r}: its header claims {nbytes} bytes of data, "
                        f"the zip entry holds {info.file_size - f.tell()}"
                    )
                data = f.read(nbytes + 1)  # bounded; reading to the end also checks the CRC
                if len(data) != nbytes:
                    raise self.error(f"member {name!r} is truncated or corrupt ({len(data)} of {nbytes} bytes)")
        except CheckpointError:
            raise
        except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError, NotImplementedError,
                SyntaxError, TypeError) as e:
            raise self.error(f"member {name!r} is unreadable (truncated or corrupt): {str(e)[:200]}") from None
        return np.frombuffer(data, dtype=got_dtype).reshape(got_shape).copy()

    def read_arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for key in self.keys:
            dtype, shape = self.manifest[key] if self.manifest is not None else (None, None)
            stored = _STORED_AS.get(dtype, dtype) if dtype is not None else None
            out[key] = self.read_member(f"{key}.npy", stored, shape)
        return out

    def state_dict(self, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        meta = dict(self.meta)
        stored = meta.pop("sha256")
        if stored != _digest(meta, arrays):
            raise self.error("checksum mismatch (the file was modified or damaged)")
        sd = dict(meta["state_dict"])
        if self.manifest is not None:  # the bits of bfloat16 states, viewed as what they are
            from gradstep.precision import HALF_DTYPES

            arrays = {key: a.view(HALF_DTYPES[self.manifest[key][0]]) if self.manifest[key][0] in _STORED_AS else a
                      for key, a in arrays.items()}
        sd["state"] = {name: [arrays[f"state/{name}/{i}"] for i in range(n)]
                       for name, n in meta["state_counts"].items()}
        return sd


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 100 else text[:100] + "..."


def read(path: PathLike) -> dict[str, Any]:
    """The state_dict stored in ``path``, verified; raises CheckpointError if it is damaged.

    Verified means everything ``load`` checks short of fitting particular
    params: the optimizer class, its hyperparameters and the schedule too.
    """
    with _Reader(path) as r:
        _, hyper, _ = _validated(r)
        sd = r.state_dict(r.read_arrays())
    sd["hyperparameters"] = hyper
    return sd


# ---- loading into an optimizer ----------------------------------------------------------


def _optimizer_class(reader: _Reader) -> Any:
    import gradstep

    name = reader.meta["state_dict"]["optimizer"]
    cls = getattr(gradstep, name, None) if _NAME.fullmatch(name) else None
    if not (isinstance(cls, type) and issubclass(cls, gradstep.Optimizer) and cls is not gradstep.Optimizer
            and cls.__name__ == name and getattr(cls, "__gradstep_spec__", None) is not None):
        raise reader.error(f"unknown optimizer {name[:100]!r}")
    return cls


def _hyperparameters(reader: _Reader, cls: Any) -> dict[str, Any]:
    """The file's hyperparameters, each one ``cls`` declares and of its declared type."""
    hyper = dict(reader.meta["state_dict"]["hyperparameters"])
    # The class's declared parameters (gradstep._spec), then the safeguards.
    kinds: dict[str, Any] = {p.name: p for p in cls.__gradstep_spec__.hyper_params}
    kinds.update(skip_nonfinite="flag", max_grad_norm="real or None")
    # The storage-precision arguments; files written before them have none (the defaults).
    precision = {"state_dtype": (None, "float32", "param"), "master_weights": (False, True),
                 "rounding": ("nearest", "stochastic"), "grad_dtype": (None, "float32", "float16", "bfloat16"),
                 "dtype": (None, "bfloat16", "float16")}
    for key, allowed in precision.items():
        value = hyper.setdefault(key, allowed[0])
        if not any(value is a or (type(value) is type(a) and value == a) for a in allowed):
            raise reader.error(f"hyperparameter {key!r} must be one of {list(allowed)}, got {_short(value)}")
    kinds.update({key: "precision" for key in precision})
    missing = sorted(set(kinds) - set(hyper))
    if missing:
        raise reader.error(f"missing hyperparameters {missing} for {cls.__name__}")
    for key, value in hyper.items():
        if key not in kinds:
            raise reader.error(f"unknown hyperparameter {key[:100]!r} for {cls.__name__}")
        kind = kinds[key]
        if kind == "precision":
            continue  # checked above
        if kind == "flag":
            ok = isinstance(value, bool)
        elif kind == "real or None":
            ok = value is None or _is_real(value)
        elif kind.grouped:  # stored as a JSON list, given to the class as a tuple (Adam's betas)
            ok = isinstance(value, list) and len(value) == len(kind.fields) and all(
                _is_real(v) or (v is None and f.optional) for v, f in zip(value, kind.fields))
            if ok:
                hyper[key] = tuple(value)
        elif kind.fields[0].type == "flag":
            ok = isinstance(value, bool)
        elif value == _INF:
            hyper[key], ok = math.inf, True  # its bound (positive_or_inf or not) is checked with the rest
        else:
            ok = _is_real(value) or (value is None and kind.fields[0].optional)
        if not ok:
            raise reader.error(f"hyperparameter {key!r} has the wrong type: {_short(value)}")
    return hyper


def _stand_in(hyper: dict[str, Any]) -> np.ndarray:
    """A one-element param the precision hyperparameters admit."""
    from gradstep.precision import BFLOAT16

    if hyper["dtype"] is not None:
        return np.zeros(1, np.uint16)  # raw bits of the dtype named
    if hyper["master_weights"]:
        return np.zeros(1, BFLOAT16)
    return np.zeros(1, np.float32 if hyper["state_dtype"] == "float32" or hyper["grad_dtype"] else np.float64)


def _validated(reader: _Reader) -> tuple[Any, dict[str, Any], Any]:
    """The optimizer class, hyperparameters and lr (a number or a Schedule) of the file, all checked."""
    import gradstep

    cls = _optimizer_class(reader)
    hyper = _hyperparameters(reader, cls)
    lr: Any = reader.meta["state_dict"]["lr"]
    if isinstance(lr, dict):
        try:
            lr = gradstep.schedules.from_dict(lr)
        except (ValueError, TypeError) as e:
            raise reader.error(f"bad schedule: {e}") from None
    try:  # the hyperparameters alone, on a stand-in param: their errors are the file's
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cls([_stand_in(hyper)], lr=lr, **hyper)
    except (TypeError, ValueError) as e:
        raise reader.error(f"bad hyperparameters for {cls.__name__}: {e}") from None
    return cls, hyper, lr


def load(path: PathLike, params: Iterable[Any]) -> Any:
    """A new optimizer over ``params`` (updated in place from now on) restored from ``path``.

    ``params`` may also be flat buffers from ``gs.flatten``.

    The class, hyperparameters, learning rate or schedule, step count and
    state all come from the file; ``params`` supply the current weights. A
    file that is not a valid checkpoint, or whose buffers do not fit
    ``params``, raises CheckpointError before anything is read into memory
    beyond its metadata, and ``params`` are left as they were.
    """
    import gradstep

    with _Reader(path) as reader:
        cls, hyper, lr = _validated(reader)
        if not isinstance(params, gradstep.FlatBuffers):
            params = list(params)
        optimizer = cls(params, lr=lr, **hyper)  # views params, writes nothing
        _check_fits(reader, optimizer)
        sd = reader.state_dict(reader.read_arrays())
    sd["hyperparameters"] = hyper  # betas as the tuple the optimizer reports
    try:
        optimizer.load_state_dict(sd)
    except ValueError as e:
        raise CheckpointError(f"{path}: does not fit the params given: {e}") from None
    return optimizer


def _check_fits(reader: _Reader, optimizer: Any) -> None:
    """The file's buffers have the names, dtypes and shapes ``optimizer``'s states have."""
    counts = reader.meta["state_counts"]
    mine = optimizer.state
    if set(counts) != set(mine):
        raise reader.error(f"holds the states {sorted(counts)}, {type(optimizer).__name__} here has {sorted(mine)}")
    for name, buffers in mine.items():
        if counts[name] != len(buffers):
            raise reader.error(f"holds {counts[name]} '{name}' buffers for the {len(buffers)} params given")
    if reader.manifest is None:
        return  # version 1: checked by load_state_dict once read
    for name, buffers in mine.items():
        for i, b in enumerate(buffers):
            dtype, shape = reader.manifest[f"state/{name}/{i}"]
            if dtype != _dtype_name(b.dtype) or shape != b.shape:
                shown = dtype if dtype in _STORED_AS else np.dtype(dtype)
                raise reader.error(
                    f"does not fit the params given: state '{name}'[{i}] is {shown}{list(shape)} "
                    f"in the file, {b.dtype}{list(b.shape)} here"
                )
