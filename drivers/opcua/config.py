"""The OPC UA device table of ironwatt.toml: its models and the checks that span its keys.

The validating side only (pydantic): the config worker and `ironwatt check` load it through
`OPCUA.config()`; the daemon gets records with the same field names.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from drivers.fields import Bool, Duration, Float, Int, Name, in_range, positive
from drivers.models import ConfigModel, PointBase
from drivers.opcua.nodes import NodeIdError, parse_node_id
from drivers.plugin import Finding, Loc
from drivers.secrets import read_secret
from drivers.wording import quote, without_password

__all__ = ["OpcuaDevice", "OpcuaPoint", "check", "device_model", "point_model"]


class OpcuaPoint(PointBase):
    node: str = Field(description='the node id: node = "ns=2;s=Line1.Power"')
    rollover: Annotated[Float, AfterValidator(positive)] | None = None
    deadband_type: Literal["none", "absolute", "percent"] = "none"
    deadband_value: Annotated[Float, in_range(0, 1e18)] = 0.0


class OpcuaDevice(ConfigModel):
    name: Name = Field(description='the device\'s name, a topic level: name = "bf2-plc"')
    driver: Literal["opcua"]
    endpoint: str = Field(description='the server: endpoint = "opc.tcp://10.10.1.30:4840"')
    mode: Literal["subscribe", "poll"] = "subscribe"
    interval: Duration = 1.0
    security_policy: Literal[
        "None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"
    ] = "None"
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    username: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    server_certificate: Path | None = None
    timestamps: Literal["gateway", "source"] = "gateway"
    user_certificate: Path | None = None
    user_key: Path | None = None
    timeout: Duration = 5.0
    queue_size: Annotated[Int, in_range(1, 10000)] = 1
    enabled: Bool = True
    points: tuple[OpcuaPoint, ...] = ()

    def password(self) -> str | None:
        return read_secret(self.password_file, self.password_env)

    def resolved_points(self) -> tuple[OpcuaPoint, ...]:
        return self.points


device_model = OpcuaDevice
point_model = OpcuaPoint


def check(device: OpcuaDevice) -> Iterator[Finding]:
    """Problems that span several keys of one OPC UA device (locs below its table); its files
    are checked by the loader (`OPCUA.file_keys`)."""
    yield from _check_device((), device)


def _is_node_id(text: str) -> bool:
    # The driver's own parser: `check` accepts exactly the node ids the daemon can read.
    try:
        parse_node_id(text)
    except NodeIdError:
        return False
    return True


def endpoint_problem(endpoint: str) -> str | None:
    """What is wrong with an OPC UA endpoint URL, in words (None: nothing). The config check
    and the CLI tools (a usage error, exit 2) say the same."""
    from urllib.parse import urlsplit

    expected = "expected opc.tcp://HOST:PORT, e.g. opc.tcp://10.10.1.30:4840"
    if not endpoint.startswith("opc.tcp://"):
        return f"{quote(endpoint)} is not an OPC UA endpoint ({expected})"
    try:
        parts = urlsplit(endpoint)
    except ValueError:
        return (
            f"{quote(endpoint)}: a malformed host (an IPv6 address needs [brackets]) ({expected})"
        )
    try:
        port = parts.port  # raises ValueError when not a number in 0-65535
    except ValueError:
        if parts.netloc.count(":") > 1 and "[" not in parts.netloc:
            return f"{quote(endpoint)}: an IPv6 address needs [brackets] ({expected})"
        return f"{quote(endpoint)}: the port is not a number from 1 to 65535 ({expected})"
    if not parts.hostname:
        return f"{quote(endpoint)} names no host ({expected})"
    if port == 0:
        return f"{quote(endpoint)}: port 0 is not a server's port ({expected})"
    return None


def _check_device(loc: Loc, device: OpcuaDevice) -> Iterator[Finding]:
    masked = without_password(device.endpoint)
    if masked is not None:
        yield (
            (*loc, "endpoint"),
            (
                f"{quote(masked)} carries a password: never write one in the config; use username "
                "with password_file (chmod 600) or password_env"
            ),
        )
    elif (problem := endpoint_problem(device.endpoint)) is not None:
        yield ((*loc, "endpoint"), problem)
    none_policy = device.security_policy == "None"
    none_mode = device.security_mode == "None"
    if none_policy and not none_mode:
        yield (
            (*loc, "security_mode"),
            (
                f"security_mode {quote(device.security_mode)} needs a security_policy "
                '(e.g. security_policy = "Basic256Sha256"); without one, set both to "None"'
            ),
        )
    elif none_mode and not none_policy:
        yield (
            (*loc, "security_policy"),
            (
                f'security_policy {quote(device.security_policy)} needs security_mode = "Sign" '
                'or "SignAndEncrypt"; without security, set both to "None"'
            ),
        )
    if device.password_file is not None and device.password_env is not None:
        yield (*loc, "password_env"), "give password_file or password_env, not both"
    if (device.password_file or device.password_env) and not device.username:
        yield (*loc, "username"), "a password is set but no username"
    if (device.user_certificate is None) != (device.user_key is None):
        which = "user_key" if device.user_key is None else "user_certificate"
        yield (
            (*loc, "user_certificate" if which == "user_key" else "user_key"),
            (
                "an X.509 user identity needs both user_certificate and user_key "
                f"({which} is missing)"
            ),
        )
    for p, point in enumerate(device.points):
        if not _is_node_id(point.node):
            yield (
                (*loc, "points", p, "node"),
                (
                    f'{quote(point.node)} is not a node id (expected e.g. "ns=2;s=Line1.Power", '
                    '"nsu=urn:plant;i=1001")'
                ),
            )
        if point.deadband_type == "percent" and point.deadband_value > 100:
            yield (
                (*loc, "points", p, "deadband_value"),
                f"{point.deadband_value:g} is out of range (0..100 for a percent deadband)",
            )
