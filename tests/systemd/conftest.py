"""The `systemd` marker: tests that boot a real systemd (make test-systemd), never in make test."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "systemd: boots Debian 12 in systemd-nspawn (make test-systemd; root)"
    )
