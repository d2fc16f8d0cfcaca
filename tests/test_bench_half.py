"""`gradstep bench --dtype bfloat16|float16`: the precisions' rows, their bytes, their candidates
and peers, the report (behaviour only: nothing here asserts a time)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from gradstep import bench
from gradstep.bench import candidates as cands
from gradstep.precision import BFLOAT16, FLOAT16

torch = pytest.importorskip("torch")

HALF = [BFLOAT16, FLOAT16]


def test_bytes_per_element_of_each_precision():
    adam, sgd = bench.SPECS["adam"], bench.SPECS["sgd"]
    # Adam, half p and g: read p 2 + g 2 + m 4 + v 4, write p 2 + m 4 + v 4.
    assert bench.bytes_per_element(adam, 2, "f32-states") == 22
    assert bench.bytes_per_element(adam, 2, "param-states") == 14  # torch's bf16 layout
    assert bench.bytes_per_element(adam, 2, "f32-master") == 30  # + the master, read and written
    assert bench.bytes_per_element(adam, 2, "stochastic") == 22
    assert bench.bytes_per_element(sgd, 2, "f32-states") == 14 and bench.bytes_per_element(sgd, 2, "param-states") == 10
    assert bench.bytes_per_element(adam, 4) == 28 and bench.bytes_per_element(adam, 8) == 56  # unchanged


def test_precision_and_dtype_parsing():
    assert bench.parse_precisions("all") == list(bench.PRECISIONS)
    # PRECISIONS' order, whatever the order asked, each once.
    assert bench.parse_precisions("stochastic,f32-states,stochastic") == ["f32-states", "stochastic"]
    for bad in ("", ",", "fp32", "all,param-states"):
        with pytest.raises(ValueError, match="bad precision list"):
            bench.parse_precisions(bad)
    assert bench.bench_dtype("bfloat16") == BFLOAT16 and bench.bench_dtype("float16") == FLOAT16
    assert bench.bench_dtype("float32") == np.dtype("float32")
    with pytest.raises(ValueError, match="for bfloat16/float16"):
        bench.make_candidates(bench.SPECS["adam"], bench.Case(1, 16), np.dtype("float32"), precision="f32-states")


def _bits_ulp(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """One unit in the last place of ``values`` in ``dtype`` (bfloat16: 8 bits, float16: 11)."""
    mantissa = 8 if dtype == BFLOAT16 else 11
    return np.exp2(np.floor(np.log2(np.maximum(np.abs(values), 2.0**-14))) - (mantissa - 1))


@pytest.mark.parametrize("dtype", HALF, ids=["bfloat16", "float16"])
@pytest.mark.parametrize("precision", list(bench.PRECISIONS))
def test_half_candidates_and_their_peers_step_the_same_math(dtype, precision):
    spec, case = bench.SPECS["adam"], bench.Case.parse("3x1000")
    made = bench.make_candidates(spec, case, dtype, precision=precision)
    names = [c.name for c in made]
    assert names[:3] == ["gradstep", "roof", "gradstep-checked"]
    # torch.optim's half path keeps its states in the param's dtype: beside param-states only.
    torch_names = {"torch-loop", "torch-foreach", "torch-fused"}
    assert (torch_names <= set(names)) == (precision == "param-states")
    assert not (torch_names & set(names)) or precision == "param-states"
    # DeepSpeedCPUAdam: float32 states or the param's dtype; no master, no stochastic rounding.
    if precision in ("f32-master", "stochastic") or not bench.deepspeed_available():
        assert "deepspeed" not in names
    # Not benched on half params (yet): numpy by hand, gradstep.torch, flat parameters.
    assert not {"numpy", "gradstep.torch", "gradstep.torch-flat", "gradstep-flat"} & set(names)
    start = cands._problem(case, dtype)[0]
    assert start[0].dtype == dtype
    for c in made:  # every candidate at 3 steps (the roof streams, three times)
        for _ in range(3 - c.steps):
            c.step()
    by_name = {c.name: c for c in made}
    assert by_name["roof"].values is None
    # The state of each candidate as the precision says.
    want = [v.astype(np.float32) for v in by_name["gradstep"].values()]
    assert by_name["gradstep"].values()[0].dtype == dtype
    for c in made:
        if c.values is None:
            continue
        got = c.values()
        if dtype == FLOAT16 and c.name in ("torch-loop", "torch-foreach"):
            # These compute in float16: v = g*g underflows and eps=1e-8 rounds to 0, so
            # some params step to inf (torch-fused computes in float32). Timed, not compared.
            continue
        assert [g.dtype for g in got] == [dtype] * 3, c.name
        for g, w in zip(got, want):
            # Rounded to the half dtype each step (stochastically or to nearest, from float32
            # or half states): a few ulps apart at most.
            assert np.all(np.abs(g.astype(np.float32) - w) <= 4 * _bits_ulp(w, dtype)), c.name
    if "deepspeed" in by_name:
        ds_state = next(iter(by_name["deepspeed"].step.__self__.state.values()))  # step: opt.step
        assert ds_state["exp_avg"].dtype == (torch.float32 if precision == "f32-states"
                                             else torch.bfloat16 if dtype == BFLOAT16 else torch.float16)


def test_torch_round_trip_of_bfloat16_shares_memory():
    a = np.arange(8, dtype=np.float32).astype(BFLOAT16)
    t = cands.to_torch(a)
    assert t.dtype == torch.bfloat16 and t.tolist() == list(range(8))
    t.add_(1)
    assert a.astype(np.float32).tolist() == list(range(1, 9))
    back = cands.from_torch(t)
    assert back.dtype == BFLOAT16 and np.shares_memory(back, a)
    f = np.ones(4, np.float16)
    assert cands.to_torch(f).dtype == torch.float16 and cands.from_torch(cands.to_torch(f)).dtype == np.float16


def _bench(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "gradstep.cli", "bench", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_half_bench_writes_a_row_per_precision(tmp_path):
    out = _bench("--quick", "--dtype", "float16", "--optimizers", "adam", "--cases", "64,3x32",
                 "--precision", "param-states,f32-states", "--rounds", "1", "--out", str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    record = json.loads((tmp_path / "bench.json").read_text())
    assert record["settings"]["dtype"] == "float16"
    assert record["settings"]["precisions"] == ["f32-states", "param-states"]
    assert [(r["case"], r["precision"]) for r in record["results"]] == [
        ("64", "f32-states"), ("64", "param-states"), ("3x32", "f32-states"), ("3x32", "param-states")]
    for r in record["results"]:
        times = r["median_seconds"]
        assert {"gradstep", "roof", "gradstep-checked"} <= set(times) and all(t > 0 for t in times.values())
        assert r["bytes_per_element"] == {"f32-states": 22, "param-states": 14}[r["precision"]]
        assert r["bytes_per_step"] == r["bytes_per_element"] * r["elements"]
        assert ("torch-fused" in times) == (r["precision"] == "param-states")
        assert set(r["speedup"]) <= set(bench.PEERS) and r["roof_fraction"] > 0
    text = (tmp_path / "bench.txt").read_text()
    assert text.splitlines()[0].endswith("float16")
    head = next(line for line in text.splitlines() if line.startswith("optimizer"))
    assert head.split()[:4] == ["optimizer", "case", "precision", "B/elem"]
    assert "% roof" in head and "vs torch-fused" in head
    assert "precision: f32-states = float32 states" in text
    row = next(line.split() for line in text.splitlines() if line.split()[:3] == ["adam", "3x32", "f32-states"])
    assert row[3] == "22" and row[row.index("-")] == "-"  # no torch peer beside float32 states
    assert (tmp_path / "bench.png").read_bytes().startswith(b"\x89PNG")
    # A kept half record compares with itself, row by row.
    text = bench.compare(record, record)
    assert "precision" in text.splitlines()[1] and len([ln for ln in text.splitlines() if "1.00" in ln]) == 4


def test_every_precision_by_default_and_bad_flags():
    record = bench.run_all(["sgd"], [bench.Case(1, 64)], BFLOAT16, [1, 2], rounds=1, sample_s=1e-4,
                           warm_s=0, settle_s=0, progress=lambda msg: None)
    assert record["settings"]["precisions"] == list(bench.PRECISIONS)
    assert [(r["precision"], r["threads"]) for r in record["results"]] == [
        (p, n) for p in bench.PRECISIONS for n in (1, 2)]
    text = bench.table(record)
    scaling = text[text.index("scaling with threads"):]
    assert any(line.split()[:4] == ["sgd", "64", "f32-master", "gradstep"] for line in scaling.splitlines())
    with pytest.raises(ValueError, match="for bfloat16/float16"):
        bench.run_all(["sgd"], [bench.Case(1, 64)], np.dtype("float32"), 1, rounds=1, sample_s=1e-4,
                      warm_s=0, settle_s=0, progress=lambda msg: None, precisions=["f32-states"])
    out = _bench("--dtype", "float32", "--precision", "param-states", timeout=60)
    assert out.returncode != 0 and "--precision is for --dtype bfloat16 or float16" in out.stderr
    out = _bench("--dtype", "bfloat16", "--precision", "fp8", timeout=60)
    assert out.returncode != 0 and "bad precision list" in out.stderr
