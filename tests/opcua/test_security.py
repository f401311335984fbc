"""Secure sessions against a PLC with certificates and users; refusals must say what to check."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from drivers.opcua.config import OpcuaDevice
from drivers.opcua.driver import OpcuaDriver
from drivers.opcua.security import (
    OpcuaConnectError,
    certificate_info,
    connect,
    fingerprint,
    load_der,
    settings_for_device,
)
from drivers.samples import QUALITY_GOOD
from tests.opcua.conftest import (
    NSU,
    PASSWORD,
    PlcProcess,
    make_cert,
    make_device,
    point,
)
from tests.support.recording import RecordingSink
from tests.support.tasks import running
from tests.support.waiting import await_until


def secure_device(
    plc: PlcProcess, pinned: Path | None, password_file: Path | None, **extra: object
) -> OpcuaDevice:
    data: dict[str, object] = {
        "security_policy": "Basic256Sha256",
        "security_mode": "SignAndEncrypt",
        "username": "gateway",
        "password_file": str(password_file) if password_file else None,
        "server_certificate": str(pinned) if pinned else None,
        "timeout": "5s",
    }
    data.update(extra)
    return make_device(plc.endpoint, [point("temp", NSU + "Furnace.Temp1")], **data)


@pytest.mark.asyncio
async def test_basic256sha256_sign_and_encrypt_with_username(
    secure_plc: PlcProcess, pinned: Path, tmp_path: Path
) -> None:
    password_file = tmp_path / "plc-password"
    password_file.write_text(PASSWORD + "\n")
    sink = RecordingSink()
    device = secure_device(secure_plc, pinned, password_file)
    driver = OpcuaDriver(device, sink.index, sink, tmp_path / "data", "gw1", "plant1")
    async with running(driver):
        await await_until(lambda: sink.rows(), 20, "a value over the secure channel")
    assert sink.rows()[0][2:] == (1450.0, QUALITY_GOOD)
    # The gateway's own certificate: created on first use, with its application URI, then reused.
    own = tmp_path / "data" / "pki" / "own" / "cert.der"
    info = certificate_info(own.read_bytes())
    assert info.application_uri == "urn:ironwatt:plant1:gw1"
    first = own.read_bytes()
    client = await connect(settings_for_device(device, tmp_path / "data", "gw1", "plant1"))
    await client.disconnect()
    assert own.read_bytes() == first


@pytest.mark.asyncio
async def test_other_policies_password_env_and_x509_user(
    secure_plc: PlcProcess,
    pinned: Path,
    user_cert: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PLC_PASSWORD", PASSWORD)
    aes128 = secure_device(
        secure_plc,
        pinned,
        None,
        security_policy="Aes128_Sha256_RsaOaep",
        password_env="PLC_PASSWORD",
    )
    aes256_x509 = secure_device(
        secure_plc,
        pinned,
        None,
        security_policy="Aes256_Sha256_RsaPss",
        security_mode="Sign",
        username=None,
        user_certificate=str(user_cert[0]),
        user_key=str(user_cert[1]),
    )
    for device in (aes128, aes256_x509):
        client = await connect(settings_for_device(device, tmp_path, "gw1", "plant1"))
        try:
            value = await client.get_node(f"ns={secure_plc.ns_index};s=Types.Double").read_value()
        finally:
            await client.disconnect()
        assert value == 2.25


@pytest.mark.asyncio
async def test_wrong_password_is_refused_with_a_clear_message(
    secure_plc: PlcProcess, pinned: Path, tmp_path: Path
) -> None:
    password_file = tmp_path / "plc-password"
    password_file.write_text("wrong")
    device = secure_device(secure_plc, pinned, password_file)
    with pytest.raises(OpcuaConnectError) as err:
        await connect(settings_for_device(device, tmp_path, "gw1", "plant1"))
    message = str(err.value)
    assert "device bf2" in message
    assert secure_plc.endpoint in message
    assert "refused the user 'gateway'" in message
    assert "BadUserAccessDenied" in message
    assert "password_file" in message
    # The driver reports the same as device_down and keeps retrying.
    sink = RecordingSink()
    driver = OpcuaDriver(device, sink.index, sink, tmp_path, "gw1", "plant1")
    async with running(driver):
        await await_until(lambda: sink.events_of("device_down"), 20, "device_down")
    assert "refused the user 'gateway'" in sink.events_of("device_down")[0].reason
    assert driver.device_status()["state"] == "stopped"
    assert sink.rows() == []


@pytest.mark.asyncio
async def test_unpinned_or_mismatched_server_certificate_is_refused(
    secure_plc: PlcProcess, pinned: Path, tmp_path: Path
) -> None:
    password_file = tmp_path / "plc-password"
    password_file.write_text(PASSWORD)
    unpinned = secure_device(secure_plc, None, password_file)
    with pytest.raises(OpcuaConnectError) as err:
        await connect(settings_for_device(unpinned, tmp_path, "gw1", "plant1"))
    assert "needs a pinned server certificate" in str(err.value)
    assert f"ironwatt opcua trust {secure_plc.endpoint}" in str(err.value)

    impostor, _key = make_cert(tmp_path / "impostor", "urn:someone:else")
    wrong = secure_device(secure_plc, impostor, password_file)
    with pytest.raises(OpcuaConnectError) as err:
        await connect(settings_for_device(wrong, tmp_path, "gw1", "plant1"))
    message = str(err.value)
    assert "server certificate mismatch" in message
    assert fingerprint(load_der(pinned)) in message  # what the server presents
    assert fingerprint(impostor.read_bytes()) in message  # what was pinned
    # Pinning applies without encryption too: a None-policy device pinned to the impostor.
    plain = replace(
        settings_for_device(wrong, tmp_path, "gw1", "plant1"),
        security_policy="None",
        security_mode="None",
    )
    with pytest.raises(OpcuaConnectError, match="server certificate mismatch"):
        await connect(plain)


@pytest.mark.asyncio
async def test_missing_pinned_file_names_the_file(secure_plc: PlcProcess, tmp_path: Path) -> None:
    device = secure_device(secure_plc, tmp_path / "gone.der", None)
    with pytest.raises(OpcuaConnectError) as err:
        await connect(settings_for_device(device, tmp_path, "gw1", "plant1"))
    assert f"server_certificate {tmp_path / 'gone.der'} cannot be read" in str(err.value)
