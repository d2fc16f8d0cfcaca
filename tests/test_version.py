"""One version, written in pyproject.toml: the package, its metadata and the CMake package agree."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import gradstep as gs

ROOT = Path(__file__).resolve().parent.parent


def _pyproject_version() -> str:
    match = re.search(r'^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert match, "no version line in pyproject.toml"
    return match.group(1)


def _cmake_package_version(config_version: Path) -> str:
    match = re.search(r'set\(PACKAGE_VERSION "([^"]+)"\)', config_version.read_text())
    assert match, config_version
    return match.group(1)


def test_version_is_the_distribution_version() -> None:
    assert gs.__version__ == importlib.metadata.version("gradstep")


def test_installed_cmake_package_has_the_same_version() -> None:
    config_version = Path(gs.cmake_dir()) / "gradstepConfigVersion.cmake"
    assert _cmake_package_version(config_version) == gs.__version__


def test_cmake_without_scikit_build_reads_pyproject(tmp_path: Path) -> None:
    # A plain configure of the source tree (C++ trainers, the TSan job): no
    # SKBUILD_PROJECT_VERSION, so CMake parses pyproject.toml.
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    subprocess.run([cmake, "-S", str(ROOT), "-B", str(tmp_path), "-DCMAKE_BUILD_TYPE=Release"],
                   check=True, capture_output=True, text=True)
    assert _cmake_package_version(tmp_path / "gradstepConfigVersion.cmake") == _pyproject_version()
