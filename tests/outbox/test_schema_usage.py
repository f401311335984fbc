"""`python -m gateway.outbox.schema` (the migration child) says how it is called when it is not."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("args", [[], ["a.db", "b.db"]])
def test_the_migration_child_without_one_database_prints_its_usage(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.outbox.schema", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == "usage: python -m gateway.outbox.schema DATABASE\n"
