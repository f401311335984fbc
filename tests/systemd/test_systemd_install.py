"""The documented install under a real systemd: runs tests/systemd/nspawn_run.py.

Skipped unless IRONWATT_SYSTEMD_TEST=1 (`make test-systemd` sets it): it needs root, debootstrap
and systemd-nspawn, and takes minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

DRIVER = Path(__file__).with_name("nspawn_run.py")

pytestmark = [
    pytest.mark.systemd,
    pytest.mark.skipif(
        os.environ.get("IRONWATT_SYSTEMD_TEST") != "1",
        reason="boots systemd in a container: run `make test-systemd` (root)",
    ),
]


@pytest.mark.timeout(1800)
def test_documented_install_under_systemd() -> None:
    # The driver's progress goes straight to the terminal (make test-systemd runs pytest -s).
    done = subprocess.run([sys.executable, str(DRIVER)], check=False, timeout=1700)
    assert done.returncode == 0, "see the driver's output above"
