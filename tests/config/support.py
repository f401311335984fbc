"""Helpers of the config tests: run `ironwatt check` in-process on a case copied to a tmp dir.

A case may refer to secret-600.txt / secret-644.txt beside it: git keeps no file modes, so the
files are made here with the modes the case needs.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.cli.main import main

CASES = Path(__file__).parent / "cases"
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Run:
    status: int
    out: str
    err: str


def stage(source: Path, folder: Path) -> Path:
    """Copy a config into `folder` with the secret files it may refer to; return its path."""
    for name, mode in (("secret-600.txt", 0o600), ("secret-644.txt", 0o644)):
        secret = folder / name
        secret.write_text("not-a-real-password\n", encoding="utf-8")
        os.chmod(secret, mode)
    target = folder / source.name
    shutil.copyfile(source, target)
    return target


def check(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> Run:
    status = main(["check", "-c", str(path), *extra])
    captured = capsys.readouterr()
    return Run(status, captured.out, captured.err)
