"""Schedules reproduce, bit for bit, what the build before the typed-nodes
refactor computed (tests/fixtures/schedule_values.json, recorded by
tests/fixtures/record_schedule_values.py): every value (float.hex) or error at
107 steps from 0 to 2**63 - 1, to_dict() JSON (checkpoints store it), repr,
node count, the factories' error messages, signatures and docstrings."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest

from gradstep import schedules as S

DATA = json.loads((Path(__file__).parent / "fixtures" / "schedule_values.json").read_text())
STEPS = DATA["steps"]
NS = {"S": S}


def _value(schedule: S.Schedule, k: int) -> str:
    try:
        return float.hex(schedule(k))
    except (ValueError, TypeError) as e:
        return f"{type(e).__name__}: {e}"


@pytest.mark.parametrize("case", DATA["cases"], ids=[f"{i}-{c['expr'][:60]}" for i, c in enumerate(DATA["cases"])])
def test_values_and_dict_are_unchanged(case: dict) -> None:
    schedule = eval(case["expr"], NS)
    assert json.dumps(schedule.to_dict()) == case["to_dict"]
    assert repr(schedule) == case["repr"]
    assert schedule._core.num_nodes == case["num_nodes"]
    assert [_value(schedule, k) for k in STEPS] == case["values"]
    # the vectorized path, over the steps where every value is finite
    ok = [k for k, v in zip(STEPS, case["values"]) if "Error" not in v]
    want = [float.fromhex(v) for v in case["values"] if "Error" not in v]
    assert [float.hex(v) for v in schedule(np.array(ok, dtype=np.int64))] == [float.hex(v) for v in want]
    # and a checkpoint's dict rebuilds the same schedule
    again = S.from_dict(json.loads(case["to_dict"]))
    assert json.dumps(again.to_dict()) == case["to_dict"]
    assert [_value(again, k) for k in STEPS] == case["values"]


@pytest.mark.parametrize("case", DATA["errors"], ids=[f"{i}-{c['expr'][:60]}" for i, c in enumerate(DATA["errors"])])
def test_errors_are_unchanged(case: dict) -> None:
    try:
        outcome = json.dumps(eval(case["expr"], NS).to_dict())
    except (ValueError, TypeError) as e:
        outcome = f"{type(e).__name__}: {e}"
    assert outcome == case["outcome"]


def test_factory_signatures_and_docs_are_unchanged() -> None:
    got = {name: {"signature": str(inspect.signature(f)), "doc": f.__doc__} for name, f in S.FACTORIES.items()}
    assert got == DATA["factories"]
    assert list(S.__all__) == DATA["all"]


def test_fixture_covers_every_kind() -> None:
    kinds = {json.loads(c["to_dict"])["type"] for c in DATA["cases"]}
    assert kinds == set(S.FACTORIES)
    assert any("rate=" in c["expr"] for c in DATA["cases"])  # exponential's second C++ kind
