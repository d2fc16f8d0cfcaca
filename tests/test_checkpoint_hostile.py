"""Hostile and malformed checkpoint files: a clear CheckpointError, nothing allocated
beyond the manifest, no pickle, and the params passed to gs.load left untouched."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

import gradstep as gs
from gradstep import checkpoint as ck

N = 8


def _saved(tmp_path, **kw):
    w = np.linspace(-1, 1, N)
    opt = gs.Adam([w, np.ones((2, 3))], lr=gs.schedules.cosine(0.1, 100), amsgrad=True, **kw)
    for _ in range(3):
        opt.step([np.full(N, 0.5), np.full((2, 3), -0.25)])
    path = tmp_path / "c.npz"
    gs.save(opt, path)
    return opt, path


def _npy(a: np.ndarray, allow_pickle: bool = False) -> bytes:
    b = io.BytesIO()
    np.lib.format.write_array(b, a, allow_pickle=allow_pickle)
    return b.getvalue()


def _parts(path):
    """(meta, {member name: bytes}) of a checkpoint."""
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    meta = json.loads(np.load(io.BytesIO(members.pop("__meta__.npy"))).tobytes())
    return meta, members


def _arrays(members):
    return {n[: -len(".npy")]: np.load(io.BytesIO(b), allow_pickle=False) for n, b in members.items()
            if n.startswith("state/")}


def _write(path, meta, members, *, digest=True, compression=zipfile.ZIP_STORED):
    meta = dict(meta)
    meta.pop("sha256", None)
    if digest:
        meta["sha256"] = ck._digest(meta, _arrays(members))
    elif digest is not None:
        meta["sha256"] = "0" * 64
    with zipfile.ZipFile(path, "w", compression) as z:
        z.writestr("__meta__.npy", _npy(np.frombuffer(json.dumps(meta).encode(), np.uint8)))
        for name, data in members.items():
            z.writestr(name, data)


def _params():
    return [np.linspace(-1, 1, N), np.ones((2, 3))]


def _assert_refused(path, words, params=None, *, read=True):
    params = _params() if params is None else params
    before = [p.copy() for p in params]
    with pytest.raises(gs.CheckpointError, match=words):
        gs.load(path, params)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(params, before))
    if read:  # gs.checkpoint.read checks all but the fit to particular params
        with pytest.raises(gs.CheckpointError, match=words):
            gs.checkpoint.read(path)


def test_checkpoint_error_is_a_value_error_and_format_is_version_2(tmp_path):
    assert issubclass(gs.CheckpointError, ValueError)
    opt, path = _saved(tmp_path)
    meta, members = _parts(path)
    assert meta["version"] == 2 == ck.VERSION
    assert meta["arrays"]["state/exp_avg/0"] == {"dtype": "<f8", "shape": [N]}
    loaded = gs.load(path, _params())
    assert loaded.step_count == 3 and loaded.lr == opt.lr


# ---- not a checkpoint at all ----------------------------------------------------------


def test_plain_npy_file(tmp_path):
    np.save(tmp_path / "x.npy", np.ones(3))
    _assert_refused(tmp_path / "x.npy", r"single \.npy array")


def test_empty_file(tmp_path):
    (tmp_path / "e.npz").write_bytes(b"")
    _assert_refused(tmp_path / "e.npz", "empty")


@pytest.mark.parametrize("seed", range(4))
def test_random_bytes(tmp_path, seed):
    data = np.random.default_rng(seed).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    (tmp_path / "r.npz").write_bytes(data)
    _assert_refused(tmp_path / "r.npz", "truncated or corrupt|not a gradstep checkpoint")


def test_random_bytes_with_a_zip_signature(tmp_path):
    data = b"PK\x03\x04" + os.urandom(3000) + b"PK\x05\x06" + os.urandom(18)
    (tmp_path / "r.npz").write_bytes(data)
    _assert_refused(tmp_path / "r.npz", "truncated or corrupt|not a gradstep checkpoint")


def test_damaged_central_directory(tmp_path):
    opt, path = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    cd = data.rfind(b"PK\x01\x02")
    end = data.rfind(b"PK\x05\x06")
    # the last entry's signature, sizes, name length and offset; the end record's sizes
    for offset in (cd, cd + 20, cd + 24, cd + 28, cd + 42, end + 8, end + 12, end + 16):
        damaged = bytearray(data)
        damaged[offset: offset + 4] = b"\xff\xff\xff\x7f"
        path.write_bytes(bytes(damaged))
        params = _params()
        try:
            loaded = gs.load(path, params)
        except gs.CheckpointError as e:
            assert any(w in str(e) for w in ("truncated or corrupt", "not a gradstep checkpoint", "unexpected member"))
            assert all(a.tobytes() == b.tobytes() for a, b in zip(params, _params()))
        else:  # a field zipfile does not use (entry counts of a one-disk archive): the checksum vouches
            assert offset in (cd + 28, end + 8), offset
            assert loaded.step_count == opt.step_count
            for name in opt.state:
                assert all(x.tobytes() == y.tobytes() for x, y in zip(loaded.state[name], opt.state[name]))


# ---- sizes: nothing allocated or inflated beyond the manifest -------------------------------


def _header_only(shape, dtype="<f8") -> bytes:
    b = io.BytesIO()
    np.lib.format.write_array_header_1_0(b, {"descr": dtype, "fortran_order": False, "shape": shape})
    return b.getvalue()


@pytest.mark.parametrize("manifest_too", [False, True])
def test_header_claiming_10_to_the_12_elements_is_refused_without_allocating(tmp_path, manifest_too):
    _, path = _saved(tmp_path)
    meta, members = _parts(path)
    members["state/exp_avg/0.npy"] = _header_only((10**12,)) + b"\0" * 64
    if manifest_too:
        meta["arrays"]["state/exp_avg/0"]["shape"] = [10**12]
    _write(path, meta, members, digest=False)
    tracemalloc.start()
    try:
        _assert_refused(path, "shape|bytes|does not fit")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20


def test_zip_bomb_member_is_never_inflated_past_its_declared_size(tmp_path):
    _, path = _saved(tmp_path)
    meta, members = _parts(path)
    real = members["state/exp_avg/0.npy"]
    bomb = real + b"\0" * (200 * 2**20)  # inflates to 200 MB, a few hundred kB deflated
    meta.pop("sha256")
    meta["sha256"] = ck._digest(meta, _arrays(members))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("__meta__.npy", _npy(np.frombuffer(json.dumps(meta).encode(), np.uint8)))
        for name, data in members.items():
            z.writestr(name, bomb if name == "state/exp_avg/0.npy" else data)
        for info in z.filelist:  # the central directory claims the honest size
            if info.filename == "state/exp_avg/0.npy":
                info.file_size = len(real)
    assert path.stat().st_size < 2 * 2**20
    tracemalloc.start()
    try:
        _assert_refused(path, "truncated or corrupt|CRC")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20


def test_member_larger_than_the_manifest_says_is_refused_before_reading(tmp_path):
    _, path = _saved(tmp_path)
    meta, members = _parts(path)
    members["state/exp_avg/0.npy"] = _npy(np.zeros(10**6))  # 8 MB where the manifest says 8 floats
    _write(path, meta, members, digest=False)
    _assert_refused(path, "more than its 64 bytes|shape")


def test_oversized_metadata_is_refused(tmp_path):
    _, path = _saved(tmp_path)
    _, members = _parts(path)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("__meta__.npy", _npy(np.zeros(ck.MAX_META_BYTES + 10, np.uint8)))
        for name, data in members.items():
            z.writestr(name, data)
    _assert_refused(path, "bytes")


# ---- members ------------------------------------------------------------------------------


def test_missing_member(tmp_path):
    _, path = _saved(tmp_path)
    meta, members = _parts(path)
    del members["state/max_exp_avg_sq/1.npy"]
    _write(path, meta, members)
    _assert_refused(path, r"missing members \['state/max_exp_avg_sq/1.npy'\]")


@pytest.mark.parametrize("extra", ["evil.pkl", "state/exp_avg/2.npy", "state/other/0.npy", "../x.npy",
                                   "state/exp_avg/01.npy"])
def test_extra_members_are_refused_before_they_are_read(tmp_path, monkeypatch, extra):
    _, path = _saved(tmp_path)
    meta, members = _parts(path)
    members[extra] = _npy(np.array([{"x": 1}], dtype=object), allow_pickle=True)
    _write(path, meta, members, digest=False)
    opened = []
    real_open = zipfile.ZipFile.open

    def spy(self, name, *a, **k):
        opened.append(getattr(name, "filename", name))
        return real_open(self, name, *a, **k)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    _assert_refused(path, "unexpected member")
    assert extra not in opened


def test_duplicate_member_names(tmp_path):
    _, path = _saved(tmp_path)
    with pytest.warns(UserWarning, match="Duplicate name"):
        with zipfile.ZipFile(path, "a") as z:
            z.writestr("state/exp_avg/0.npy", _npy(np.zeros(N)))
    _assert_refused(path, "appears twice")


def test_object_dtype_and_pickled_data_are_refused(tmp_path):
    _, path = _saved(tmp_path)
    meta, members = _parts(path)
    members["state/exp_avg/0.npy"] = _npy(np.array([print] * N, dtype=object), allow_pickle=True)
    _write(path, meta, members, digest=False)
    _assert_refused(path, "Python objects")
    meta["arrays"]["state/exp_avg/0"]["dtype"] = "|O"
    _write(path, meta, members, digest=False)
    _assert_refused(path, "dtype")


@pytest.mark.parametrize("array, words", [(np.zeros(N, np.float32), "dtype <f4, the manifest says <f8"),
                                          (np.zeros(N + 1), r"shape \(9,\), the manifest says \[8\]"),
                                          (np.zeros((2, 4)), "shape"),
                                          (np.zeros(N, ">f8"), "dtype"),
                                          (np.asfortranarray(np.zeros((2, 4))), "shape|Fortran")])
def test_member_disagreeing_with_the_manifest(tmp_path, array, words):
    _, path = _saved(tmp_path)
    meta, members = _parts(path)
    members["state/exp_avg/0.npy"] = _npy(array)
    _write(path, meta, members)
    _assert_refused(path, words)


def test_tampered_manifest_is_caught(tmp_path):
    _, path = _saved(tmp_path)
    meta, members = _parts(path)
    meta["arrays"]["state/exp_avg/0"]["shape"] = [4]
    members["state/exp_avg/0.npy"] = _npy(np.zeros(4))
    _write(path, meta, members)
    _assert_refused(path, r"does not fit the params given: state 'exp_avg'\[0\] is float64\[4\]", read=False)


# ---- metadata ------------------------------------------------------------------------------


def test_deeply_nested_json(tmp_path):
    _, path = _saved(tmp_path)
    _, members = _parts(path)
    for text in ("[" * 200_000 + "]" * 200_000, '{"a":' * 100_000 + "1" + "}" * 100_000):
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("__meta__.npy", _npy(np.frombuffer(text.encode(), np.uint8)))
            for name, data in members.items():
                z.writestr(name, data)
        _assert_refused(path, "nested too deeply|not a gradstep checkpoint")


@pytest.mark.parametrize("text, words", [(b"\xff\xfe", "not valid JSON"), (b'{"format": NaN}', "JSON"),
                                         (b"1" * 10_000, "JSON"), (b"[]", "not a gradstep")])
def test_bad_json(tmp_path, text, words):
    _, path = _saved(tmp_path)
    _, members = _parts(path)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("__meta__.npy", _npy(np.frombuffer(text, np.uint8)))
        for name, data in members.items():
            z.writestr(name, data)
    _assert_refused(path, words)


def _set(meta, dotted, value):
    keys = dotted.split(".")
    d = meta
    for k in keys[:-1]:
        d = d[k]
    if value is KeyError:
        del d[keys[-1]]
    else:
        d[keys[-1]] = value


BAD_META = [
    ("format", "pickle", "not a gradstep checkpoint"),
    ("version", "2", "version"),
    ("version", 3, "version"),
    ("version", True, "version"),
    ("version", 1.0, "version"),
    ("extra_field", 1, "unexpected metadata"),
    ("sha256", KeyError, "sha256"),
    ("state_dict", [], "state_dict"),
    ("state_dict.optimizer", "Optimizer", "unknown optimizer"),
    ("state_dict.optimizer", "os.system", "unknown optimizer"),
    ("state_dict.optimizer", "FlatBuffers", "unknown optimizer"),
    ("state_dict.optimizer", "__class__", "unknown optimizer"),
    ("state_dict.optimizer", "SGD", "hyperparameter"),
    ("state_dict.optimizer", 5, "optimizer"),
    ("state_dict.step", "5", "step"),
    ("state_dict.step", 5.0, "step"),
    ("state_dict.step", -1, "step"),
    ("state_dict.step", True, "step"),
    ("state_dict.step", 2**63, "step"),
    ("state_dict.step", 2**63 - 1, "step"),
    ("state_dict.step", 2**70, "step"),
    ("state_dict.step", None, "step"),
    ("state_dict.lr", "0.1", "lr"),
    ("state_dict.lr", -0.1, "lr"),
    ("state_dict.lr", None, "lr"),
    ("state_dict.lr", {"type": "os.system"}, "schedule"),
    ("state_dict.lr", {"type": "cosine", "lr": 0.1, "total_steps": 2**63}, "total_steps"),
    ("state_dict.lr", {"type": "constant", "lr": 0.1, "x": [1] * 10}, "schedule"),
    ("state_dict.lr_scale", "1", "lr_scale"),
    ("state_dict.lr_scale", -1.0, "lr_scale"),
    ("state_dict.min_lr", [0.0], "min_lr"),
    ("state_dict.hyperparameters", [1, 2], "hyperparameters"),
    ("state_dict.hyperparameters", "betas", "hyperparameters"),
    ("state_dict.hyperparameters.momentum", 0.9, "unknown hyperparameter 'momentum'"),
    ("state_dict.hyperparameters.__class__", 1, "unknown hyperparameter"),
    ("state_dict.hyperparameters.eps", "1e-8", "eps"),
    ("state_dict.hyperparameters.eps", -1.0, "eps"),
    ("state_dict.hyperparameters.amsgrad", 1, "amsgrad"),
    ("state_dict.hyperparameters.betas", [0.9], "betas"),
    ("state_dict.hyperparameters.betas", [0.9, "x"], "betas"),
    ("state_dict.hyperparameters.betas", [0.9, 1.5], "beta"),
    ("state_dict.hyperparameters.max_grad_norm", "big", "max_grad_norm"),
    ("state_dict.hyperparameters.max_grad_norm", -1.0, "max_grad_norm"),
    ("state_dict.hyperparameters.weight_decay", KeyError, r"missing hyperparameters \['weight_decay'\]"),
    ("state_dict.state", {}, "state"),
    ("state_counts", [], "state_counts"),
    ("state_counts.exp_avg", "2", "state_counts"),
    ("state_counts.exp_avg", -1, "state_counts"),
    ("state_counts.exp_avg", 10**18, "state_counts"),
    ("state_counts.exp_avg", 1, "unexpected members"),
    ("state_counts.exp_avg", 3, "missing members"),
    ("state_counts.bad-name", 1, "bad state name"),
    ("arrays", KeyError, "arrays"),
    ("arrays.state/exp_avg/0", {"dtype": "<f8"}, "arrays"),
    ("arrays.state/exp_avg/0", {"dtype": "<f8", "shape": [N], "x": 1}, "arrays"),
    ("arrays.state/exp_avg/0.shape", "8", "shape"),
    ("arrays.state/exp_avg/0.shape", [-8], "shape"),
    ("arrays.state/exp_avg/0.shape", [8.0], "shape"),
    ("arrays.state/exp_avg/0.shape", [1] * 40, "shape"),
    ("arrays.state/exp_avg/0.dtype", "object", "dtype"),
    ("arrays.state/exp_avg/0.dtype", 8, "dtype"),
    ("arrays.state/zzz/0", {"dtype": "<f8", "shape": [N]}, "arrays"),
]


@pytest.mark.parametrize("field, value, words", BAD_META, ids=[f"{i}-{b[0]}" for i, b in enumerate(BAD_META)])
def test_metadata_with_wrong_content(tmp_path, field, value, words):
    _, path = _saved(tmp_path)
    meta, members = _parts(path)
    _set(meta, field, value)
    # a valid checksum (none at all for the sha256 case): the content checks must catch it
    _write(path, meta, members, digest=None if field == "sha256" else True)
    _assert_refused(path, words)


def test_checksum_mismatch(tmp_path):
    _, path = _saved(tmp_path)
    meta, members = _parts(path)
    _write(path, meta, members, digest=False)
    _assert_refused(path, "checksum")


# ---- params that do not fit -------------------------------------------------------------


@pytest.mark.parametrize("params", [
    [np.zeros(N + 1), np.ones((2, 3))],           # a shape
    [np.zeros(N, np.float32), np.ones((2, 3), np.float32)],  # a dtype
    [np.zeros(N)],                                  # fewer params
    [np.zeros(N), np.ones((2, 3)), np.ones(2)],     # more params
    [np.zeros(N), np.ones((3, 2))],                 # transposed
])
def test_load_into_params_that_do_not_match(tmp_path, params):
    _, path = _saved(tmp_path)
    before = [p.copy() for p in params]
    with pytest.raises(gs.CheckpointError, match="params"):
        gs.load(path, params)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(params, before))


# ---- version 1 files ------------------------------------------------------------------------


def test_version_1_files_still_load(tmp_path):
    opt, path = _saved(tmp_path)
    meta, members = _parts(path)
    meta["version"] = 1
    del meta["arrays"]
    _write(path, meta, members)
    loaded = gs.load(path, _params())
    assert loaded.step_count == 3 and loaded.lr == opt.lr
    for name in opt.state:
        assert all(a.tobytes() == b.tobytes() for a, b in zip(loaded.state[name], opt.state[name]))
    # still checked against its own headers and sizes
    members["state/exp_avg/0.npy"] = _header_only((10**12,)) + b"\0" * 64
    _write(path, meta, members, digest=False)
    _assert_refused(path, "bytes")
    members["state/exp_avg/0.npy"] = _npy(np.zeros(N + 1))
    _write(path, meta, members)
    _assert_refused(path, "params", read=False)


# ---- a successful load after refusals leaves an optimizer intact -------------------------------


def test_refused_load_state_dict_from_a_file_changes_nothing(tmp_path):
    opt, path = _saved(tmp_path)
    sd = gs.checkpoint.read(path)
    sd["step"] = 2**63
    snap = ([p.copy() for p in opt.params], {k: [a.copy() for a in v] for k, v in opt.state.items()},
            opt.step_count, opt.lr)
    with pytest.raises(ValueError, match="step"):
        opt.load_state_dict(sd)
    assert all(np.array_equal(a, b) for a, b in zip(opt.params, snap[0]))
    assert all(np.array_equal(a, b) for k in snap[1] for a, b in zip(opt.state[k], snap[1][k]))
    assert (opt.step_count, opt.lr) == snap[2:]


# ---- temp files of killed saves -------------------------------------------------------------


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temp_of_a_dead_process_is_removed_by_the_next_save(tmp_path):
    opt, path = _saved(tmp_path)
    dead = tmp_path / f"{ck._temp_prefix(path.name, _dead_pid())}.abcd1234.tmp"
    alive = tmp_path / f"{ck._temp_prefix(path.name, os.getppid())}.abcd1234.tmp"
    mine = tmp_path / f"{ck._temp_prefix(path.name)}.zzzz9999.tmp"  # a concurrent save in this process
    other_host = tmp_path / f".{path.name}.0badf00d-{_dead_pid()}.abcd1234.tmp"
    other_file = tmp_path / f".other.npz.{ck._host_id()}-{_dead_pid()}.abcd1234.tmp"
    unrelated = tmp_path / "notes.tmp"
    for p in (dead, alive, mine, other_host, other_file, unrelated):
        p.write_bytes(b"partial")
    gs.save(opt, path)
    assert not dead.exists()
    assert all(p.exists() for p in (alive, mine, other_host, other_file, unrelated))
    assert gs.load(path, _params()).step_count == 3


def test_legacy_temp_names_are_removed_only_when_old(tmp_path):
    opt, path = _saved(tmp_path)
    old, new = tmp_path / f".{path.name}.abcd1234.tmp", tmp_path / f".{path.name}.wxyz5678.tmp"
    old.write_bytes(b"x")
    new.write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    gs.save(opt, path)
    assert not old.exists() and new.exists()


KILLED_SAVE = r"""
import sys, time, numpy as np, gradstep as gs
real = np.savez
def slow(f, **kw):
    real(f, **kw)
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
np.savez = slow
opt = gs.SGD([np.ones(1000)], lr=0.1, momentum=0.9)
opt.step([np.ones(1000)])
gs.save(opt, sys.argv[1])
"""


def test_save_killed_mid_write_leaves_a_temp_the_next_save_removes(tmp_path):
    path = tmp_path / "c.npz"
    opt = gs.SGD([np.ones(1000)], lr=0.1, momentum=0.9)
    opt.step([np.ones(1000)])
    gs.save(opt, path)
    before = path.read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SAVE, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    temps = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(temps) == 1 and f"-{proc.pid}." in temps[0].name
    assert path.read_bytes() == before  # the killed save never replaced it
    opt.step([np.ones(1000)])
    gs.save(opt, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]
    assert gs.load(path, [np.ones(1000)]).step_count == 2
