"""OutboxSettings and UplinkSettings read from a real config file by the contract's key names."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import UplinkError
from gateway.outbox import OutboxSettings
from gateway.uplink import UplinkSettings, parse_url


def test_from_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.config.load import load_config

    monkeypatch.setenv("IW_TEST_MQTT_PASSWORD", "s3cret-from-env")
    config = tmp_path / "ironwatt.toml"
    config.write_text(
        '[gateway]\nid = "bf2-sub-a"\nsite = "plant1"\n'
        f'data_dir = "{tmp_path / "data"}"\n'
        '[mqtt]\nurl = "mqtts://broker.plant.local"\nusername = "bf2"\n'
        'password_env = "IW_TEST_MQTT_PASSWORD"\nprotocol = "3.1.1"\nkeepalive = "15s"\n'
        "max_inflight = 50\ndrain_rate = 200\n"
        '[buffer]\nmax_size = "64MB"\ndurability = "normal"\n'
    )
    cfg = load_config(config)
    ob = OutboxSettings.from_config(cfg)
    assert ob.path == tmp_path / "data" / "ironwatt.db"
    assert (ob.gw_id, ob.site, ob.durability, ob.max_size_bytes) == (
        "bf2-sub-a",
        "plant1",
        "normal",
        64 << 20,
    )
    assert ob.event_topic == "ironwatt/plant1/bf2-sub-a/event"
    up = UplinkSettings.from_config(cfg)
    assert up.client_id == "ironwatt-plant1-bf2-sub-a"
    assert up.password == "s3cret-from-env"
    assert "s3cret" not in repr(up)
    assert (up.protocol, up.keepalive_s, up.max_inflight, up.drain_rate) == (
        "3.1.1",
        15.0,
        50,
        200.0,
    )
    assert up.status_topic == "ironwatt/plant1/bf2-sub-a/status"


def test_parse_url() -> None:
    assert parse_url("mqtt://h") == ("h", 1883, False)
    assert parse_url("mqtts://h") == ("h", 8883, True)
    assert parse_url("mqtts://10.0.0.1:9000") == ("10.0.0.1", 9000, True)
    with pytest.raises(UplinkError, match="mqtt:// or mqtts://"):
        parse_url("http://h")


def test_a_url_without_host_is_an_uplink_error() -> None:
    with pytest.raises(UplinkError, match=r"mqtt.url 'mqtt://:1883': no host"):
        parse_url("mqtt://:1883")


def test_a_url_with_a_bad_port_is_an_uplink_error() -> None:
    with pytest.raises(UplinkError, match=r"mqtt.url 'mqtt://h:99999': Port out of range"):
        parse_url("mqtt://h:99999")
    with pytest.raises(UplinkError, match=r"mqtt.url 'mqtt://h:x'"):
        parse_url("mqtt://h:x")


def test_an_uplink_on_a_malformed_url_is_refused_when_made(tmp_path: Path) -> None:
    from gateway.outbox import Outbox, OutboxSettings
    from gateway.uplink import Uplink
    from tests.outbox.helpers import uplink_settings

    outbox = Outbox(OutboxSettings(path=tmp_path / "ironwatt.db", gw_id="g", site="s"))
    try:
        with pytest.raises(UplinkError, match="mqtt:// or mqtts://"):
            Uplink(uplink_settings("tcp://broker"), outbox)
    finally:
        outbox.close()


def test_tls_files_that_cannot_be_read_are_an_uplink_error(tmp_path: Path) -> None:
    from gateway.uplink.mqtt_client import new_client
    from tests.outbox.helpers import uplink_settings

    settings = uplink_settings("mqtts://h", ca_file=tmp_path / "no-ca.pem")
    with pytest.raises(UplinkError, match="TLS setup for h:8883 failed") as caught:
        new_client(settings, tls=True, where="h:8883", will=b"{}")
    assert "check that mqtt.ca_file, cert_file and key_file exist" in str(caught.value)
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    with pytest.raises(UplinkError, match="TLS setup"):
        new_client(
            uplink_settings("mqtts://h", ca_file=tmp_path / "ca.pem"),
            tls=True,
            where="h:8883",
            will=b"{}",
        )
