"""Every ISA target gives the same bytes; the chosen target is the one running."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import gradstep as gs

from conftest import CASES, case_id, make_problem

# Odd lengths exercise every vector tail; 4099 spans many full vectors.
SHAPES = [(1,), (7,), (33,), (4099,), (5, 13)]


def run_on(isa, name, lr, opts, dtype):
    before = gs.isa()
    gs.set_isa(isa)
    try:
        params, grads = make_problem(dtype, 12, seed=3, shapes=SHAPES)
        opt = getattr(gs, name)(params, lr=lr, **opts)
        for step_grads in grads:
            opt.step(step_grads)
        return params, opt.state
    finally:
        gs.set_isa(before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_every_target_is_bit_identical(case, dtype):
    isas = gs.available_isas()
    baseline_params, baseline_state = run_on("scalar", *case, dtype)
    for isa in isas[1:]:
        params, state = run_on(isa, *case, dtype)
        for a, b in zip(params, baseline_params):
            assert a.tobytes() == b.tobytes(), isa
        for key in state:
            for a, b in zip(state[key], baseline_state[key]):
                assert a.tobytes() == b.tobytes(), (isa, key)


def test_scalar_is_always_available_and_best_is_default():
    isas = gs.available_isas()
    assert isas[0] == "scalar"
    if "GRADSTEP_ISA" not in os.environ:
        assert gs.isa() == isas[-1]


@pytest.mark.parametrize("isa", gs.available_isas())
def test_forced_target_is_the_active_one(isa):
    before = gs.isa()
    try:
        gs.set_isa(isa)
        assert gs.isa() == isa
    finally:
        gs.set_isa(before)


@pytest.mark.parametrize("isa", gs.available_isas())
def test_environment_variable_forces_target(isa):
    out = subprocess.run(
        [sys.executable, "-c", "import gradstep; print(gradstep.isa())"],
        env={**os.environ, "GRADSTEP_ISA": isa},
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == isa


def test_unknown_or_unsupported_target_is_rejected():
    before = gs.isa()
    with pytest.raises(ValueError, match="unknown ISA"):
        gs.set_isa("sse9")
    missing = [t for t in ("avx2", "avx512") if t not in gs.available_isas()]
    for isa in missing:
        with pytest.raises(ValueError, match="not supported"):
            gs.set_isa(isa)
    assert gs.isa() == before


def test_cpu_flags_agree_with_available_targets():
    # On Linux the kernel's view of the CPU is an independent witness.
    with open("/proc/cpuinfo") as f:
        flags = f.read().split()
    has_avx2 = "avx2" in flags and "fma" in flags
    assert ("avx2" in gs.available_isas()) == has_avx2
