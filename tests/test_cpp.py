"""The C++ side: unit tests and the example trainer, built against the installed CMake package."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import gradstep

ROOT = Path(__file__).resolve().parent.parent


def build_and_run(source: Path, build: Path, target: str) -> subprocess.CompletedProcess[str]:
    cmake = shutil.which("cmake")
    assert cmake, "cmake is needed to build the C++ tests (pip install cmake)"
    subprocess.run([cmake, "-S", str(source), "-B", str(build), f"-Dgradstep_DIR={gradstep.cmake_dir()}",
                    "-DCMAKE_BUILD_TYPE=Release"], check=True, capture_output=True, text=True)
    subprocess.run([cmake, "--build", str(build)], check=True, capture_output=True, text=True)
    return subprocess.run([str(build / target)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def build_root(tmp_path_factory):
    return tmp_path_factory.mktemp("cpp")


def test_cpp_unit_tests(build_root):
    out = build_and_run(ROOT / "tests" / "cpp", build_root / "unit", "test_core")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().endswith("passed, 0 failed")


def test_cpp_example_trainer(build_root):
    out = build_and_run(ROOT / "examples" / "train_linear", build_root / "example", "train_linear")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"isa {gradstep.isa()}"
    losses = [float(line.split()[-1]) for line in lines if line.startswith("step")]
    assert losses[0] > 1.0 and losses[-1] < 1e-6
    weights = [float(v) for v in lines[-1].split()[1:]]
    assert weights == pytest.approx([(j + 1) / 8 for j in range(8)], abs=1e-3)
