"""`gradstep bench --quick` runs and writes its table, JSON and chart (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gradstep import bench


def test_bench_quick_writes_table_json_and_png(tmp_path):
    out = subprocess.run([sys.executable, "-m", "gradstep.cli", "bench", "--quick", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    table = (tmp_path / "bench.txt").read_text()
    assert table in out.stdout
    assert "% roof" in table and "vs numpy" in table and "vs torch-fused" in table

    record = json.loads((tmp_path / "bench.json").read_text())
    assert record["format"] == bench.FORMAT
    assert {"cpu", "logical_cpus", "affinity_cpus", "isa"} <= set(record["machine"])
    assert record["versions"]["torch"] and record["versions"]["numpy"]
    assert len(record["settings"]["threads"]) == 1 and record["settings"]["threads"][0] >= 1
    assert all(r["threads"] == record["settings"]["threads"][0] for r in record["results"])
    cases = bench.QUICK_CASES.split(",")
    assert [(r["optimizer"], r["case"]) for r in record["results"]] == [
        (o, c) for o in bench.OPTIMIZERS for c in cases
    ]
    for r in record["results"]:
        times = r["median_seconds"]
        # torch.optim's loops where it has the optimizer, else the reference package's (Lion's).
        peers = {"torch-loop", "torch-foreach"} if bench.SPECS[r["optimizer"]].torch else {"reference"}
        assert {"gradstep", "roof", "numpy", "gradstep.torch", *peers} <= set(times)
        assert all(t > 0 for t in times.values())
        assert r["bytes_per_step"] == r["bytes_per_element"] * r["elements"]
        assert set(r["speedup"]) <= set(bench.PEERS)
        assert 0 < r["roof_fraction"]
    by_name = {r["optimizer"]: r for r in record["results"]}
    assert by_name["adam"]["bytes_per_element"] == 28  # p, g, m, v read; p, m, v written
    assert by_name["sgd"]["bytes_per_element"] == 20
    assert "torch-fused" in by_name["adam"]["median_seconds"]

    png = (tmp_path / "bench.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000

    # A kept result can be compared with a new one, and reported again.
    text = bench.compare(record, record)
    assert "new/old" in text and "1.00" in text
    again = subprocess.run([sys.executable, "-m", "gradstep.cli", "bench", "--load", str(tmp_path / "bench.json"),
                            "--compare", str(tmp_path / "bench.json"), "--out", str(tmp_path / "again")],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (tmp_path / "again" / "bench.txt").read_text().startswith(table)
    assert (tmp_path / "again" / "bench.png").is_file()


def test_case_parsing():
    assert bench.Case.parse("4096") == bench.Case(1, 4096)
    assert bench.Case.parse("200x5000") == bench.Case(200, 5000)
    assert bench.Case.parse("200x5000").label == "200x5000"
    for bad in ("", "x", "3x", "0", "2x3x4", "1e6", "resnet"):
        with pytest.raises(ValueError, match="bad case"):
            bench.Case.parse(bad)


def test_unknown_optimizer_is_an_error():
    out = subprocess.run([sys.executable, "-m", "gradstep.cli", "bench", "--optimizers", "lbfgs"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "unknown optimizer" in out.stderr
