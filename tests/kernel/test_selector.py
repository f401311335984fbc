"""The ext selector: compiled kernel by default, the twin when asked or when the build is missing.

Runs a fresh interpreter per case so the environment variable is read at import.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.twin


def implementation(env_value: str | None) -> str:
    env = dict(os.environ)
    env.pop("IRONWATT_NO_EXTENSIONS", None)
    if env_value is not None:
        env["IRONWATT_NO_EXTENSIONS"] = env_value
    code = "import ext; print(ext.IMPLEMENTATION, ext.kernel.__name__)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_no_extensions_forces_the_twin() -> None:
    assert implementation("1") == "pure ext._kernel_py"


def test_compiled_by_default() -> None:
    if os.environ.get("IRONWATT_NO_EXTENSIONS", "") not in ("", "0"):
        pytest.skip("IRONWATT_NO_EXTENSIONS=1: the compiled kernel is not under test")
    assert implementation(None) == "compiled ext._kernel"
    assert implementation("0") == "compiled ext._kernel"
