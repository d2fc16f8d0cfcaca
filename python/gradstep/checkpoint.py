"""Optimizer checkpoints without pickle: one .npz file, written atomically.

The file holds the optimizer's state buffers as plain arrays and everything
else (class, step count, learning rate or schedule, hyperparameters) as JSON,
with a SHA-256 over all of it so truncation or tampering is detected on load.
``np.load(..., allow_pickle=False)`` is the only reader: loading a checkpoint
never executes code from the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Union

import numpy as np

FORMAT = "gradstep-checkpoint"
VERSION = 1
# The largest step count an optimizer accepts (load_state_dict, gs.load).
# Far from int64's end on purpose: counting up one step at a time from any
# accepted count cannot reach 2**63 - 1 (that would take 2**62 more steps).
MAX_STEP = 2**62
PathLike = Union[str, "os.PathLike[str]"]


class CheckpointError(ValueError):
    """The file is not a valid gradstep checkpoint (truncated, tampered, foreign)."""


def _digest(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for key in sorted(arrays):
        a = arrays[key]  # tobytes() is C order whatever the layout
        h.update(f"{key}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    return value


def save(optimizer: Any, path: PathLike) -> None:
    """Write ``optimizer``'s full state to ``path`` atomically.

    The data goes to a temporary file in the same folder, is flushed to disk,
    and then renamed over ``path``: a crash at any moment leaves either the
    previous checkpoint or the new one, never a mix.
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
    extra = {k: v for k, v in sd.items() if k != "state"}
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "state_dict": _jsonable(extra),
        "state_counts": {name: len(buffers) for name, buffers in sd["state"].items()},
    }
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(
            "this optimizer's state cannot be checkpointed without pickle "
            f"(a Python callable as lr, or a non-finite number?): {e}"
        ) from None
    meta["sha256"] = _digest(meta, arrays)

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        payload: dict[str, Any] = {"__meta__": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
        payload.update(arrays)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


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


def read(path: PathLike) -> dict[str, Any]:
    """The state_dict stored in ``path``, verified; raises CheckpointError if it is damaged."""
    try:
        data = Path(path).read_bytes()
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            if "__meta__" not in npz.files:
                raise CheckpointError(f"{path}: not a gradstep checkpoint (no metadata)")
            entries = {k: npz[k] for k in npz.files}
        # A member that is not a .npy array comes back as raw bytes.
        if not all(isinstance(a, np.ndarray) for a in entries.values()):
            raise CheckpointError(f"{path}: not a gradstep checkpoint (foreign members)")
        raw = entries.pop("__meta__")
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise CheckpointError(f"{path}: not a gradstep checkpoint (bad metadata)")
        meta = json.loads(raw.tobytes().decode())
        arrays = entries
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint (truncated or corrupt): {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a gradstep checkpoint")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {meta.get('version')!r} is not {VERSION}")
    stored = meta.pop("sha256", None)
    if stored != _digest(meta, arrays):
        raise CheckpointError(f"{path}: checksum mismatch (the file was modified or damaged)")
    sd = dict(meta["state_dict"])
    counts = meta["state_counts"]
    try:
        sd["state"] = {name: [arrays[f"state/{name}/{i}"] for i in range(n)] for name, n in counts.items()}
    except KeyError as e:
        raise CheckpointError(f"{path}: missing state buffer {e}") from None
    return sd


def load(path: PathLike, params: Iterable[Any]) -> Any:
    """A new optimizer over ``params`` (updated in place from now on) restored from ``path``.

    ``params`` may also be flat buffers from ``gs.flatten``.

    The class, hyperparameters, learning rate or schedule, step count and
    state all come from the file; ``params`` supply the current weights.
    """
    import gradstep

    sd = read(path)
    cls = getattr(gradstep, str(sd.get("optimizer")), None)
    if not (isinstance(cls, type) and issubclass(cls, gradstep.Optimizer)):
        raise CheckpointError(f"{path}: unknown optimizer {sd.get('optimizer')!r}")
    hyper = dict(sd["hyperparameters"])
    if "betas" in hyper:
        hyper["betas"] = tuple(hyper["betas"])
    sd["hyperparameters"] = hyper
    lr = sd.get("lr")
    if isinstance(lr, dict):
        lr = gradstep.schedules.from_dict(lr)
    if not isinstance(params, gradstep.FlatBuffers):
        params = list(params)
    optimizer = cls(params, lr=0.0 if lr is None else lr, **hyper)
    optimizer.load_state_dict(sd)
    return optimizer
