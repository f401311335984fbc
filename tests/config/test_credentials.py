"""`password_file` under /run/credentials/<unit>/: before the first start the file does not exist,
so `ironwatt check` checks the unit's LoadCredential= source instead; inside the unit
($CREDENTIALS_DIRECTORY) the file must be there. A secret file that exists keeps every rule."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from gateway.config.credentials import Credential, credential_of, find_sources
from tests.config.support import REPO, check

CRED = "/run/credentials/ironwatt.service"


@pytest.fixture
def units(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty unit folder that stands for /etc/systemd/system (and nothing else is read)."""
    folder = tmp_path / "units"
    folder.mkdir()
    monkeypatch.setenv("SYSTEMD_UNIT_PATH", str(folder))
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    return folder


def _config(tmp_path: Path, *, plc: bool = False) -> Path:
    text = f"""
[gateway]
id = "gw1"
site = "plant1"
timezone = "UTC"
data_dir = "{tmp_path / "data"}"

[mqtt]
url = "mqtt://127.0.0.1:1883"
username = "gw1"
password_file = "{CRED}/mqtt-password"
"""
    if plc:
        text += f"""
[[devices]]
name = "plc"
driver = "opcua"
endpoint = "opc.tcp://127.0.0.1:4840"
security_policy = "None"
security_mode = "None"
username = "gateway"
password_file = "{CRED}/plc-password"
"""
    path = tmp_path / "ironwatt.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _secret(path: Path, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not-a-real-password\n", encoding="utf-8")
    os.chmod(path, mode)
    return path


def _unit(units: Path, *lines: str, name: str = "ironwatt.service") -> Path:
    unit = units / name
    unit.write_text("[Unit]\nDescription=test\n\n[Service]\n" + "\n".join(lines) + "\n")
    return unit


def _notes(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "ironwatt.config")


def test_no_unit_installed_is_a_note(
    units: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="ironwatt.config"):
        run = check(_config(tmp_path), capsys)
    assert run.status == 0, run.err
    assert "mqtt.password_file: " in _notes(caplog)
    assert "will be provided by systemd when ironwatt.service starts" in _notes(caplog)
    assert "is not installed here" in _notes(caplog)


def test_source_found_and_private(
    units: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = _secret(tmp_path / "creds" / "mqtt-password")
    unit = _unit(units, f"LoadCredential=mqtt-password:{source}")
    with caplog.at_level(logging.INFO, logger="ironwatt.config"):
        run = check(_config(tmp_path), capsys)
    assert run.status == 0, run.err
    assert f"from {source} (LoadCredential=mqtt-password:{source} in {unit})" in _notes(caplog)


def test_source_missing_is_refused(
    units: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "creds" / "mqtt-password"
    _unit(units, f"LoadCredential=mqtt-password:{source}")
    run = check(_config(tmp_path), capsys)
    assert run.status == 2
    assert f"is loaded from {source}" in run.err
    assert "which does not exist: systemd would refuse to start ironwatt.service" in run.err
    assert f"install -m 600 /dev/stdin {source}" in run.err


def test_source_readable_by_others_is_refused(
    units: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _secret(tmp_path / "creds" / "mqtt-password", 0o644)
    _unit(units, f"LoadCredential=mqtt-password:{source}")
    run = check(_config(tmp_path), capsys)
    assert run.status == 2
    assert "is readable by group or others (mode 0644)" in run.err
    assert f"chmod 600 {source}" in run.err


def test_unit_that_loads_no_such_credential(
    units: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _secret(tmp_path / "creds" / "mqtt-password")
    unit = _unit(units, f"LoadCredential=mqtt-password:{source}")
    run = check(_config(tmp_path, plc=True), capsys)
    assert run.status == 2
    assert "devices[0].password_file" in run.err
    assert f'loads none called "plc-password" (read: {unit})' in run.err
    assert "LoadCredential=plc-password:/etc/ironwatt/credentials/plc-password" in run.err


def test_drop_in_adds_and_empty_assignment_resets(
    units: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mqtt = _secret(tmp_path / "creds" / "mqtt-password")
    plc = _secret(tmp_path / "creds" / "plc-password")
    _unit(units, f"LoadCredential=mqtt-password:{mqtt}")
    dropins = units / "ironwatt.service.d"
    dropins.mkdir()
    (dropins / "opcua-credentials.conf").write_text(
        f"# a comment\n[Service]\nLoadCredential=\\\n  plc-password:{plc}\n"
    )
    assert check(_config(tmp_path, plc=True), capsys).status == 0
    (dropins / "zz-reset.conf").write_text("[Service]\nLoadCredential=\n")
    run = check(_config(tmp_path, plc=True), capsys)
    assert run.status == 2
    assert run.err.count("loads none called") == 2


def test_credstore_and_folder_sources(units: Path, tmp_path: Path) -> None:
    folder = tmp_path / "secrets"
    _secret(folder / "plc")
    _unit(units, f"LoadCredential=pw:{folder}", "SetCredential=token:abc")
    _files, sources = find_sources(Credential("ironwatt.service", "pw_plc"))
    assert [s.path for s in sources] == [folder / "plc"]
    _files, sources = find_sources(Credential("ironwatt.service", "token"))
    assert sources
    assert sources[0].path is None


def test_template_instance_reads_the_template(units: Path, tmp_path: Path) -> None:
    source = _secret(tmp_path / "creds" / "mqtt-password")
    _unit(units, f"LoadCredential=mqtt-password:{source}", name="ironwatt@.service")
    files, sources = find_sources(Credential("ironwatt@line2.service", "mqtt-password"))
    assert files == [units / "ironwatt@.service"]
    assert sources[0].path == source


def test_inside_the_unit_the_file_must_exist(
    units: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's own check (config worker at start and reload) runs inside the unit: a
    credential systemd did not provide is an error there, with what to add."""
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", CRED)
    _unit(units, "LoadCredential=mqtt-password:/nonexistent")
    run = check(_config(tmp_path), capsys)
    assert run.status == 2
    assert f'cannot read "{CRED}/mqtt-password"' in run.err
    assert "systemd provides only the credentials ironwatt.service loads" in run.err


def test_the_shipped_unit_and_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd/ironwatt.toml against systemd/ironwatt.service: the credential it names is loaded
    by the unit; on this machine its source (/etc/ironwatt/credentials) is not installed."""
    monkeypatch.setenv("SYSTEMD_UNIT_PATH", str(REPO / "systemd"))
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    if Path("/etc/ironwatt/credentials/mqtt-password").exists():
        pytest.skip("this machine has the gateway installed")
    run = check(REPO / "systemd" / "ironwatt.toml", capsys)
    assert run.status == 2
    assert "is loaded from /etc/ironwatt/credentials/mqtt-password" in run.err
    assert f"LoadCredential=mqtt-password:/etc/ironwatt/credentials/mqtt-password in {REPO}" in (
        run.err
    )


def test_credential_of() -> None:
    assert credential_of(Path(f"{CRED}/mqtt-password")) == Credential(
        "ironwatt.service", "mqtt-password"
    )
    assert credential_of(Path("/run/credentials/ironwatt.service/../x/pw")) is None
    assert credential_of(Path("/etc/ironwatt/credentials/mqtt-password")) is None
    assert credential_of(Path("/run/credentials/ironwatt.service")) is None
