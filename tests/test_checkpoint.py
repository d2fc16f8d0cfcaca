"""Checkpoints: no pickle, atomic, verified, and resume is bit-exact across processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

import gradstep as gs

from conftest import CASES, case_id, make_problem

RESUME_SCRIPT = r"""
import sys, numpy as np, gradstep as gs
path, grads_path, out = sys.argv[1:4]
grads = np.load(grads_path, allow_pickle=False)
params = [grads[f"p{i}"].copy() for i in range(int(grads["n"]))]
opt = gs.load(path, params)
for k in range(int(grads["first"]), int(grads["steps"])):
    opt.step([grads[f"g{k}_{i}"] for i in range(len(params))])
np.savez(out, *params)
"""


@pytest.mark.parametrize("case", CASES[::4], ids=case_id)
def test_resume_in_a_fresh_process_is_bit_exact(case, tmp_path):
    name, lr, opts = case
    steps, first = 16, 7
    params, grads = make_problem(np.float32, steps, seed=11)
    straight = [p.copy() for p in params]
    opt = getattr(gs, name)(straight, lr=lr, **opts)
    for g in grads:
        opt.step(g)

    partial = [p.copy() for p in params]
    opt = getattr(gs, name)(partial, lr=lr, **opts)
    for g in grads[:first]:
        opt.step(g)
    gs.save(opt, tmp_path / "ckpt.npz")
    payload = {f"p{i}": p for i, p in enumerate(partial)}
    payload |= {f"g{k}_{i}": g for k, gk in enumerate(grads) for i, g in enumerate(gk)}
    np.savez(tmp_path / "grads.npz", n=len(params), first=first, steps=steps, **payload)
    subprocess.run([sys.executable, "-c", RESUME_SCRIPT, str(tmp_path / "ckpt.npz"),
                    str(tmp_path / "grads.npz"), str(tmp_path / "out.npz")], check=True)
    with np.load(tmp_path / "out.npz", allow_pickle=False) as out:
        for i, want in enumerate(straight):
            assert out[f"arr_{i}"].tobytes() == want.tobytes()


def test_checkpoint_holds_no_pickle(tmp_path):
    w = np.ones(5)
    opt = gs.AdamW([w], lr=1e-3, amsgrad=True)
    opt.step([np.ones(5)])
    gs.save(opt, tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz", allow_pickle=False) as npz:  # would raise on object arrays
        assert all(npz[k].dtype != object for k in npz.files)
    loaded = gs.load(tmp_path / "c.npz", [w.copy()])
    assert isinstance(loaded, gs.AdamW) and loaded.step_count == 1
    assert loaded.hyperparameters() == opt.hyperparameters()


def test_truncated_file_gives_a_clear_error(tmp_path):
    opt = gs.Adam([np.ones(1000)], lr=1e-3)
    opt.step([np.ones(1000)])
    path = tmp_path / "c.npz"
    gs.save(opt, path)
    data = path.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 5):
        path.write_bytes(data[:cut])
        with pytest.raises(gs.CheckpointError, match="truncated or corrupt|checksum"):
            gs.load(path, [np.ones(1000)])


def test_tampered_state_is_detected(tmp_path):
    opt = gs.Adam([np.ones(8)], lr=1e-3)
    opt.step([np.ones(8)])
    path = tmp_path / "c.npz"
    gs.save(opt, path)
    with np.load(path, allow_pickle=False) as npz:
        entries = {k: npz[k].copy() for k in npz.files}
    entries["state/exp_avg/0"][3] += 1.0
    np.savez(path, **entries)
    with pytest.raises(gs.CheckpointError, match="checksum"):
        gs.load(path, [np.ones(8)])


def test_foreign_files_are_rejected(tmp_path):
    np.savez(tmp_path / "x.npz", a=np.ones(3))
    with pytest.raises(gs.CheckpointError, match="not a gradstep checkpoint"):
        gs.load(tmp_path / "x.npz", [np.ones(3)])
    with zipfile.ZipFile(tmp_path / "y.npz", "w") as z:
        z.writestr("__meta__.npy", b"garbage")
    with pytest.raises(gs.CheckpointError):
        gs.load(tmp_path / "y.npz", [np.ones(3)])


def test_failed_save_leaves_previous_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    opt = gs.SGD([np.ones(4)], lr=0.1, momentum=0.9)
    opt.step([np.ones(4)])
    gs.save(opt, path)
    before = path.read_bytes()
    opt.step([np.ones(4)])

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", explode)
    with pytest.raises(OSError, match="disk full"):
        gs.save(opt, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]


def test_callable_lr_cannot_be_checkpointed(tmp_path):
    opt = gs.SGD([np.ones(2)], lr=lambda k: 0.1)
    with pytest.raises(TypeError, match="without pickle"):
        gs.save(opt, tmp_path / "c.npz")
    assert not (tmp_path / "c.npz").exists()


KILL_SCRIPT = r"""
import sys, numpy as np, gradstep as gs
path = sys.argv[1]
w = np.zeros(3_000_000, np.float32)
opt = gs.Adam([w], lr=1e-3, amsgrad=True)
k = 0
while True:
    opt.step([np.full_like(w, 1.0)])
    gs.save(opt, path)
    k += 1
    print(k, flush=True)
"""


def test_process_killed_mid_save_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "c.npz"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # one complete save exists
        time.sleep(0.05)        # the next save is under way (each writes ~48 MB)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    opt = gs.load(path, [np.zeros(3_000_000, np.float32)])
    assert opt.step_count >= 1
    assert np.all(opt.state["exp_avg"][0] > 0)


def test_zero_dimensional_params_round_trip(tmp_path):
    w = np.zeros((), np.float64)
    opt = gs.Adam([w, np.ones((2, 3))], lr=0.1, amsgrad=True)
    opt.step([np.ones(()), np.ones((2, 3))])
    gs.save(opt, tmp_path / "c.npz")
    loaded = gs.load(tmp_path / "c.npz", [w.copy(), np.ones((2, 3))])
    assert loaded.state["exp_avg"][0].shape == ()
    assert loaded.state["exp_avg"][0].tobytes() == opt.state["exp_avg"][0].tobytes()
