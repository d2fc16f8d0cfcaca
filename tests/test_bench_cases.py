"""`gradstep bench`: thread lists, model-shaped cases, the candidates' math, the report and
old records (behaviour only: nothing here asserts a time)."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys

import numpy as np
import pytest

import gradstep as gs
from gradstep import bench
from gradstep.bench import candidates as cands

torch = pytest.importorskip("torch")
import gradstep.torch as gt  # noqa: E402


# --- thread lists ---------------------------------------------------------------------

def test_thread_list_parsing():
    assert bench.parse_threads("2") == [2]
    assert bench.parse_threads("1,2") == [1, 2]
    assert bench.parse_threads("4,1,2,1") == [1, 2, 4]
    for bad in ("", "0", "1,,2", "a", "-1", "1,0", "1.5"):
        with pytest.raises(ValueError, match="bad thread list"):
            bench.parse_threads(bad)


def test_bad_thread_list_is_an_error():
    out = subprocess.run([sys.executable, "-m", "gradstep.cli", "bench", "--threads", "1,x"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "bad thread list" in out.stderr


def test_thread_list_runs_every_case_at_each_count(tmp_path):
    out = subprocess.run([sys.executable, "-m", "gradstep.cli", "bench", "--quick", "--optimizers", "sgd",
                          "--cases", "64,3x32", "--threads", "2,1", "--rounds", "1", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    record = json.loads((tmp_path / "bench.json").read_text())
    assert record["format"] == bench.FORMAT
    assert record["settings"]["threads"] == [1, 2] and record["settings"]["torch_threads"] == [1, 2]
    assert [(r["case"], r["threads"]) for r in record["results"]] == [
        ("64", 1), ("64", 2), ("3x32", 1), ("3x32", 2)]
    text = (tmp_path / "bench.txt").read_text()
    assert "threads 1,2" in text.splitlines()[0]
    assert "scaling with threads" in text and "(speedup over 1 thread)" in text
    scaling = text[text.index("scaling with threads"):]
    for name in ("gradstep", "torch-fused", "roof"):
        assert f" {name} " in scaling
    # The run leaves gradstep's and torch's thread counts as they were (checked in-process).
    before = gs.get_num_threads(), torch.get_num_threads()
    bench.run_all(["sgd"], [bench.Case(1, 64)], np.dtype("float32"), [1, 2], rounds=1, sample_s=1e-4,
                  warm_s=0, settle_s=0, progress=lambda msg: None)
    assert (gs.get_num_threads(), torch.get_num_threads()) == before


# --- the report, from records made by hand ----------------------------------------------

def _result(optimizer, case, threads, **seconds):
    med = {"gradstep": 2e-6, "roof": 1e-6, **seconds}
    per_step = 20 * 1000
    gbps = {n: per_step / t / 1e9 for n, t in med.items()}
    return {"optimizer": optimizer, "case": case, "threads": threads, "tensors": 1, "elements": 1000,
            "bytes_per_element": 20, "bytes_per_step": per_step, "median_seconds": med,
            "gbps": gbps, "roof_gbps": gbps["roof"], "roof_fraction": gbps["gradstep"] / gbps["roof"],
            "speedup": {n: t / med["gradstep"] for n, t in med.items() if n in bench.PEERS}}


def _record(threads, results, fmt=None):
    return {"format": fmt or bench.FORMAT, "created": "2026-01-01T00:00:00+00:00",
            "machine": {"cpu": "Test CPU", "affinity_cpus": 2, "isa": "avx2"},
            "versions": {"python": "3", "gradstep": "0.1.0", "numpy": "2", "torch": None, "deepspeed": None},
            "settings": {"threads": threads, "torch_threads": threads, "dtype": "float32", "rounds": 3},
            "results": results}


def _row(text, *cells):
    """The line of a table in ``text`` that starts with these cells."""
    for line in text.splitlines():
        if line.split()[:len(cells)] == list(cells):
            return line.split()
    raise AssertionError(f"no row {cells} in\n{text}")


def test_report_scaling_and_adapter_ratios():
    record = _record([1, 2], [
        _result("adam", "mlp", 1, **{"torch-fused": 8e-6, "gradstep.torch": 2.4e-6,
                                     "gradstep.torch-flat": 1.2e-6, "deepspeed": 4.8e-6}),
        _result("adam", "mlp", 2, gradstep=1e-6, roof=0.8e-6,
                **{"torch-fused": 5e-6, "gradstep.torch": 2e-6, "gradstep.torch-flat": 1e-6,
                   "deepspeed": 2e-6}),
    ])
    text = bench.table(record)
    assert "threads 1,2" in text.splitlines()[0]
    # gradstep.torch: speedup over torch-fused, cost over gs.X, flat speedup, flat vs fused, vs deepspeed
    adapter = text[text.index("gradstep.torch (the torch.optim adapter)"):text.index("median time per step")]
    assert _row(adapter, "adam", "mlp", "1")[5:] == ["3.33x", "1.20x", "2.00x", "6.67x", "2.00x"]
    assert _row(adapter, "adam", "mlp", "2")[5:] == ["2.50x", "2.00x", "2.00x", "5.00x", "1.00x"]
    scaling = text[text.index("scaling with threads"):]
    assert _row(scaling, "adam", "mlp", "gradstep")[3:] == ["2.00", "µs", "1.00", "µs", "(2.00x)"]
    assert _row(scaling, "adam", "mlp", "torch-fused")[-1] == "(1.60x)"
    assert _row(scaling, "adam", "mlp", "roof")[-1] == "(1.25x)"
    # Without 1 thread in the list, the fewest threads run is the base.
    record = _record([2, 4], [_result("sgd", "64", 2), _result("sgd", "64", 4, gradstep=0.5e-6)])
    scaling = bench.scaling(record)
    assert "speedup over 2 threads" in scaling[0]
    assert _row("\n".join(scaling), "sgd", "64", "gradstep")[-1] == "(4.00x)"


def test_single_thread_count_keeps_the_layout():
    text = bench.table(_record([2], [_result("sgd", "64", 2, **{"torch-fused": 4e-6})]))
    assert "2 threads" in text.splitlines()[0]
    assert "scaling with threads" not in text
    assert _row(text, "optimizer", "case")[2] == "B/elem"  # no threads column


OLD = "gradstep-bench/1"


def _old_record():
    """A record as gradstep-bench/1 wrote it: one thread count, in settings only."""
    record = _record(2, [_result("adam", "4096", None, **{"torch-fused": 8e-6}),
                         _result("sgd", "4096", None)], fmt=OLD)
    for r in record["results"]:
        del r["threads"]
    return record


def test_old_records_are_upgraded_not_changed():
    old = _old_record()
    kept = copy.deepcopy(old)
    new = bench.upgrade(old)
    assert old == kept
    assert new["format"] == bench.FORMAT and new["upgraded_from"] == OLD
    assert new["settings"]["threads"] == [2] and new["settings"]["torch_threads"] == [2]
    assert [r["threads"] for r in new["results"]] == [2, 2]
    assert bench.upgrade(new) is new
    with pytest.raises(ValueError, match="not a gradstep-bench"):
        bench.upgrade({"format": "something/9"})
    assert "2 threads" in bench.table(old).splitlines()[0]


def test_compare_matches_cases_at_the_same_thread_count():
    old = _old_record()  # ran at 2 threads
    new = _record([1, 2], [_result("adam", "4096", 1, gradstep=4e-6),
                           _result("adam", "4096", 2, gradstep=1e-6)])
    text = bench.compare(old, new)
    assert _row(text, "adam", "4096", "2")[3:8] == ["2.00", "µs", "1.00", "µs", "0.50"]
    assert not any(line.split()[:3] == ["adam", "4096", "1"] for line in text.splitlines())
    assert "in common" in bench.compare(old, _record([1], [_result("adam", "4096", 1)]))


def test_load_and_compare_an_old_record(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps(_old_record()))
    out = subprocess.run([sys.executable, "-m", "gradstep.cli", "bench", "--load", str(path),
                          "--compare", str(path), "--out", str(tmp_path / "again")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 threads" in out.stdout and "new/old" in out.stdout
    assert _row(out.stdout, "adam", "4096", "2")[7] == "1.00"
    assert (tmp_path / "again" / "bench.png").is_file()
    assert json.loads((tmp_path / "again" / "bench.json").read_text())["format"] == bench.FORMAT
    path.write_text(json.dumps({"format": "other/1"}))
    bad = subprocess.run([sys.executable, "-m", "gradstep.cli", "bench", "--load", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "not a gradstep-bench" in bad.stderr


# --- model cases -----------------------------------------------------------------------

def test_model_shape_lists():
    mlp, resnet, gpt2 = (bench.Case.parse(n) for n in ("mlp", "resnet18", "GPT2"))
    assert mlp.label == "mlp" and mlp.tensors == 4
    assert mlp.shapes == ((256, 784), (256,), (10, 256), (10,)) and mlp.elements == 203_530
    # torchvision's published resnet18 count (ImageNet weights: 11,689,512 params).
    assert resnet.tensors == 62 and resnet.elements == 11_689_512
    assert sum(len(s) == 4 for s in resnet.shapes) == 20  # conv weights, no conv biases
    assert sum(len(s) == 1 for s in resnet.shapes) == 41  # 20 bn weights, 20 bn biases, fc bias
    assert resnet.shapes[0] == (64, 3, 7, 7) and resnet.shapes[-2:] == ((1000, 512), (1000,))
    # GPT-2 small: 124M with wte (tied to the LM head) and wpe, 85M without them.
    assert gpt2.tensors == 148 and gpt2.elements == 124_439_808
    assert gpt2.shapes[:2] == ((50257, 768), (1024, 768))
    assert gpt2.elements - 50257 * 768 - 1024 * 768 == 85_056_000
    assert sum(math.prod(s) for s in gpt2.shapes) == gpt2.elements


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_model_case_candidates_step_the_same_math(optimizer):
    spec = bench.SPECS[optimizer]
    made = bench.make_candidates(spec, bench.Case.parse("mlp"), np.dtype("float32"))
    names = [c.name for c in made]
    assert names == [n for n in bench.MODEL_CANDIDATES if n in names]
    assert {"gradstep", "roof", "torch-foreach", "torch-fused", "gradstep.torch",
            "gradstep.torch-flat"} <= set(names)
    assert "numpy" not in names and "torch-loop" not in names
    for c in made:  # every candidate at 3 steps
        for _ in range(3 - c.steps):
            c.step()
    by_name = {c.name: c for c in made}
    assert by_name["roof"].values is None
    want = [v.copy() for v in by_name["torch-fused"].values()]
    start = cands._problem(bench.Case.parse("mlp"), np.dtype("float32"))[0]
    assert not np.allclose(want[0], start[0])  # the steps moved the params
    for c in made:
        if c.values is None:
            continue
        got = c.values()
        assert [g.shape for g in got] == [w.shape for w in want], c.name
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=c.name)


def test_flat_candidate_only_where_gradstep_torch_has_flatten_parameters(monkeypatch):
    spec, case = bench.SPECS["sgd"], bench.Case(2, 8, "")
    params, grads = cands._problem(case, np.dtype("float32"))
    assert cands.torch_flat_candidate(spec, params, grads) is not None
    monkeypatch.delattr(gt, "flatten_parameters", raising=False)
    assert cands.torch_flat_candidate(spec, params, grads) is None
    names = [c.name for c in bench.make_candidates(spec, bench.Case.parse("mlp"), np.dtype("float32"))]
    assert "gradstep.torch-flat" not in names and "gradstep.torch" in names
    # A flatten that loses the grads is refused while the candidate is made, not while timed.
    with pytest.raises(RuntimeError, match="without grads"):
        cands.torch_flat_candidate(spec, params, grads,
                                   flatten=lambda ts: [torch.zeros(16).requires_grad_()])


def test_model_memory_estimate():
    gpt2 = bench.Case.parse("gpt2")
    need = cands.memory_needed(bench.SPECS["adam"], gpt2, 4)
    assert 10 * 2**30 < need < 16 * 2**30
    assert cands.memory_needed(bench.SPECS["sgd"], gpt2, 4) < need


@pytest.mark.parametrize("name", [n for n in bench.OPTIMIZERS if bench.SPECS[n].numpy_step is not None])
def test_numpy_peer_steps_the_optimizers_equations(name):
    # The by-hand numpy step the bench times must be the optimizer it claims to be:
    # equal to gs.X (itself checked against torch.optim) in float64 over 30 steps,
    # through the rectification switch of RAdam (rho_t > 5 from step 6).
    from gradstep.bench.numpy_steps import NumpyState

    spec = bench.SPECS[name]
    rng = np.random.default_rng(3)
    start = rng.standard_normal(257)
    ours = start.copy()
    opt = bench.ready(spec, getattr(gs, spec.gradstep)([ours], **spec.hyper))
    peer = NumpyState(start.copy(), np.zeros(257), bench.state_count(spec))
    for k in range(1, 31):
        g = rng.standard_normal(257)
        np.copyto(peer.g, g)
        opt.step([g])
        spec.numpy_step(peer, k)
        np.testing.assert_allclose(peer.p, ours, rtol=1e-10, atol=1e-12, err_msg=f"step {k}")


@pytest.mark.parametrize("name", [n for n in bench.SPECS if bench.SPECS[n].reference is not None])
def test_reference_peer_steps_the_same_math(name):
    # Where torch.optim has no such optimizer, the peer is its reference package (prodigyopt,
    # dadaptation, timm, schedulefree): a smoke run of the spec's candidates, all at the same
    # params after one step (a numpy peer, where the spec has one, among them; one step, as
    # schedulefree normalizes its grads in place, so its later steps see other grads).
    spec = bench.SPECS[name]
    made = bench.make_candidates(spec, bench.Case.parse("3x1000"), np.dtype("float64"))
    names = [c.name for c in made]
    assert "reference" in names and "torch-loop" not in names
    assert ("numpy" in names) == (spec.numpy_step is not None)
    for c in made:
        for _ in range(1 - c.steps):
            c.step()
    by_name = {c.name: c for c in made}
    want = by_name["reference"].values()
    for c in made:
        if c.values is not None:
            for g, w in zip(c.values(), want):
                np.testing.assert_allclose(g, w, rtol=1e-10, err_msg=c.name)
def test_an_optimizer_without_a_torch_twin_is_timed_against_its_reference_package():
    # Lion: no torch.optim class, so no torch-loop/foreach/fused; lion_pytorch.Lion is
    # the peer "reference", and gradstep.torch.Lion (the adapter mirroring it) is timed.
    from gradstep.bench.record import versions

    spec = bench.SPECS["lion"]
    assert spec.torch is None and spec.reference is not None and spec.reference[:2] == ("lion_pytorch", "Lion")
    for case, dtype, tol in ((bench.Case.parse("3x257"), "float64", dict(rtol=1e-12, atol=0)),
                             (bench.Case.parse("mlp"), "float32", dict(rtol=1e-5, atol=1e-6))):
        made = bench.make_candidates(spec, case, np.dtype(dtype))
        names = [c.name for c in made]
        assert "reference" in names and "gradstep.torch" in names, names
        assert not any(n.startswith("torch-") for n in names)
        if case.model:
            assert names == [n for n in bench.MODEL_CANDIDATES if n in names]
        for c in made:
            for _ in range(3 - c.steps):
                c.step()
        want = [v.copy() for v in {c.name: c for c in made}["reference"].values()]
        for c in made:
            if c.values is not None:
                for g, w in zip(c.values(), want):
                    np.testing.assert_allclose(g, w, **tol, err_msg=c.name)
    assert versions()["lion_pytorch"] == "0.2.5"
    assert cands.memory_needed(spec, bench.Case.parse("gpt2"), 4) < cands.memory_needed(
        bench.SPECS["sgd"], bench.Case.parse("gpt2"), 4) + 124_439_808 * 4 * 2
