"""The hand-written stub of the compiled core matches it, and the package type-checks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gradstep

PACKAGE = Path(gradstep.__file__).parent


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Run from an empty folder so mypy sees the installed package (PEP 561).
    env = {**os.environ, "MYPY_CACHE_DIR": str(cwd / ".mypy_cache")}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env,
                          cwd=cwd)


def test_stub_matches_compiled_module(tmp_path):
    allowlist = Path(__file__).with_name("stubtest_allowlist.txt")
    out = run(tmp_path, "mypy.stubtest", "gradstep._core", "--allowlist", str(allowlist))
    assert out.returncode == 0, out.stdout + out.stderr


def test_package_type_checks(tmp_path):
    out = run(tmp_path, "mypy", "--ignore-missing-imports", "-p", "gradstep")
    assert out.returncode == 0, out.stdout + out.stderr


def test_py_typed_marker_ships():
    assert (PACKAGE / "py.typed").is_file()
    assert (PACKAGE / "_core.pyi").is_file()
