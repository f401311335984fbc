"""The public faces of gateway.outbox and gateway.uplink: what they export, what they load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import gateway.outbox
import gateway.uplink

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("face", [gateway.outbox, gateway.uplink])
def test_every_exported_name_resolves(face: object) -> None:
    names = face.__all__  # type: ignore[attr-defined]
    assert names
    assert sorted(names) == dir(face)
    for name in names:
        assert getattr(face, name) is not None, name
    with pytest.raises(AttributeError):
        face.NotThere  # type: ignore[attr-defined]  # noqa: B018


def test_the_faces_load_nothing_heavy() -> None:
    # The migration child imports the package first: the face must not load the schema
    # module (runpy would warn), sqlite-utils, or paho (the outbox and the config need none).
    script = (
        "import sys, gateway.outbox, gateway.uplink\n"
        "from gateway.uplink import parse_url, UplinkSettings\n"
        "from gateway.outbox import OutboxSettings, Message\n"
        "bad = [m for m in ('gateway.outbox.schema', 'gateway.outbox.store', 'sqlite_utils',"
        " 'paho', 'gateway.uplink.client') if m in sys.modules]\n"
        "print(bad)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_the_migration_child_runs_without_a_runpy_warning(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-W", "error", "-m", "gateway.outbox.schema", str(tmp_path / "x.db")],
        capture_output=True, text=True, check=False, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert (tmp_path / "x.db").exists()


def test_the_old_import_paths_of_the_daemon_and_the_cli_still_work() -> None:
    from gateway.outbox.messages import Message, OutboxSettings, Row, compose  # noqa: F401
    from gateway.outbox.policy import MessageClass  # noqa: F401
    from gateway.outbox.store import Outbox, open_outbox  # noqa: F401
    from gateway.uplink.client import Uplink, UplinkSettings  # noqa: F401
    from gateway.uplink.settings import parse_url  # noqa: F401

    assert Uplink is gateway.uplink.Uplink
    assert Outbox is gateway.outbox.Outbox
