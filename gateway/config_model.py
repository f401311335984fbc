"""The typed, validated shape of ironwatt.toml (../shared/spec/config.md is the contract).

Field names are the TOML keys. Every model forbids unknown keys and is frozen; checks that span
several keys live in `config_checks.py`, loading and error reporting in `config.py`.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag

from gateway.carriers import DEFAULT_CARRIERS
from gateway.config_types import Duration, Name, Size, in_range, positive

__all__ = [
    "BufferConfig",
    "Carrier",
    "Config",
    "Device",
    "EnergyConfig",
    "GatewayConfig",
    "GroupConfig",
    "HttpConfig",
    "Interval",
    "ModbusDevice",
    "ModbusPoint",
    "MqttConfig",
    "OpcuaDevice",
    "OpcuaPoint",
    "TariffConfig",
    "TariffPeriod",
    "TariffSeason",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


def _system_zone() -> str:
    """The system's zone name (TZ, /etc/timezone, /etc/localtime), UTC when none is set."""
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz:
        return tz
    try:
        return Path("/etc/timezone").read_text(encoding="utf-8").strip() or "UTC"
    except OSError:
        pass
    try:
        target = os.readlink("/etc/localtime")
        if "zoneinfo/" in target:
            return target.split("zoneinfo/", 1)[1]
    except OSError:
        pass
    return "UTC"


class GatewayConfig(_Model):
    id: Name
    site: Name
    timezone: str = Field(default_factory=_system_zone)
    data_dir: Path = Path("/var/lib/ironwatt")

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class MqttConfig(_Model):
    url: str
    client_id: str | None = None
    username: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    topic_prefix: str = "ironwatt"
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive: Duration = 30.0
    telemetry: bool = False
    telemetry_qos: Literal[0, 1] = 0
    # Added keys (config.md allows additions).
    max_inflight: Annotated[int, in_range(1, 1000)] = 20
    drain_rate: Annotated[float, in_range(0, 1e9)] = 0.0  # messages/s after an outage; 0 = unlimited
    telemetry_heartbeat: Duration = 300.0

    def password(self) -> str | None:
        return _read_secret(self.password_file, self.password_env)


class HttpConfig(_Model):
    listen: str = "127.0.0.1:9108"


class BufferConfig(_Model):
    max_size: Size = 512 << 20
    durability: Literal["full", "normal"] = "full"


class Interval(_Model):
    name: str  # as written: "15m" (a topic level)
    seconds: int


class Carrier(_Model):
    unit: str
    kgce_per_unit: Annotated[float, in_range(0, 1e9)]
    kgco2e_per_unit: Annotated[float, in_range(0, 1e9)]
    method: str = "equivalent"
    source: str = "config"


class CarrierOverride(_Model):
    unit: str | None = None
    kgce_per_unit: Annotated[float, in_range(0, 1e9)] | None = None
    kgco2e_per_unit: Annotated[float, in_range(0, 1e9)] | None = None
    method: Literal["equivalent", "equal", "none"] | None = None


class EnergyConfig(_Model):
    intervals: tuple[str, ...] = ("1m", "15m", "1h", "1d")
    demand_interval: Duration = 900.0
    max_revision_age: Duration = 86400.0
    carriers: dict[Name, CarrierOverride] = Field(default_factory=dict)

    @property
    def windows(self) -> tuple[Interval, ...]:
        """The intervals with their lengths (validated in config_checks)."""
        from gateway.config_types import parse_duration

        return tuple(Interval(name=n, seconds=round(parse_duration(n))) for n in self.intervals)

    @property
    def resolved_carriers(self) -> dict[str, Carrier]:
        """Defaults merged with the overrides of `[energy.carriers.*]`."""
        merged: dict[str, Carrier] = {}
        for name in sorted(set(DEFAULT_CARRIERS) | set(self.carriers)):
            base = DEFAULT_CARRIERS.get(name)
            over = self.carriers.get(name, CarrierOverride())
            merged[name] = Carrier(
                unit=over.unit or (base.unit if base else ""),
                kgce_per_unit=_first(over.kgce_per_unit, base.kgce_per_unit if base else 0.0),
                kgco2e_per_unit=_first(
                    over.kgco2e_per_unit, base.kgco2e_per_unit if base else 0.0
                ),
                method=over.method or (base.method if base else "equivalent"),
                source="config" if name in self.carriers else (base.source if base else "config"),
            )
        return merged


class TariffPeriod(_Model):
    name: Name
    price: Annotated[float, in_range(0, 1e6)]
    hours: tuple[str, ...]


class TariffSeason(_Model):
    months: str  # "7-8", "12-2", "6"
    periods: tuple[TariffPeriod, ...]


class TariffConfig(_Model):
    currency: str = "CNY"
    periods: tuple[TariffPeriod, ...]
    seasons: tuple[TariffSeason, ...] = ()
    weekend: tuple[TariffPeriod, ...] | None = None
    holiday: tuple[TariffPeriod, ...] | None = None  # periods on `holidays`; default: weekend's
    holidays: tuple[date, ...] = ()


Kind = Literal["gauge", "counter", "rate"]
Integration = Literal["trapezoid", "hold"]
RegisterType = Literal[
    "bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"
]

REGISTER_WORDS: dict[str, int] = {
    "bool": 1, "int16": 1, "uint16": 1, "int32": 2, "uint32": 2,
    "int64": 4, "uint64": 4, "float32": 2, "float64": 4,
}


class _PointBase(_Model):
    name: Name
    kind: Kind = "gauge"
    unit: str = ""
    carrier: Name | None = None
    scale: float = 1.0
    offset: float = 0.0
    max_rate: Annotated[float, AfterValidator(positive)] | None = None
    max_gap: Duration | None = None
    integration: Integration | None = None
    report_deadband: Annotated[float, in_range(0, 1e18)] | None = None
    report_deadband_percent: Annotated[float, in_range(0, 100)] | None = None


class ModbusPoint(_PointBase):
    function: Literal["coil", "discrete", "input", "holding"] = "holding"
    address: Annotated[int, in_range(0, 65535)]
    type: RegisterType = "uint16"
    order: Literal["ABCD", "CDAB", "BADC", "DCBA"] = "ABCD"
    rollover: Annotated[float, AfterValidator(positive)] | Literal["auto"] | None = None
    bit: Annotated[int, in_range(0, 15)] | None = None
    multiply_by: Literal["ct", "pt", "ct*pt"] | None = None

    @property
    def words(self) -> int:
        return REGISTER_WORDS[self.type]


class OpcuaPoint(_PointBase):
    node: str
    rollover: Annotated[float, AfterValidator(positive)] | None = None
    deadband_type: Literal["none", "absolute", "percent"] = "none"
    deadband_value: Annotated[float, in_range(0, 1e18)] = 0.0


class ModbusDevice(_Model):
    name: Name
    driver: Literal["modbus"]
    transport: Literal["tcp", "rtu", "rtu-over-tcp"] = "tcp"
    host: str | None = None
    port: Annotated[int, in_range(1, 65535)] = 502
    unit: Annotated[int, in_range(0, 247)] = 1
    serial_port: str | None = None
    baudrate: Annotated[int, in_range(300, 4_000_000)] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    ct_ratio: Annotated[float, AfterValidator(positive)] = 1.0
    pt_ratio: Annotated[float, AfterValidator(positive)] = 1.0
    poll: Duration = 1.0
    timeout: Duration = 0.5
    profile: str | None = None
    retries: Annotated[int, in_range(0, 10)] = 2
    max_gap_registers: Annotated[int, in_range(0, 124)] = 10
    max_registers_per_request: Annotated[int, in_range(1, 125)] = 125
    max_bits_per_request: Annotated[int, in_range(1, 2000)] = 2000
    enabled: bool = True
    points: tuple[ModbusPoint, ...] = ()

    def resolved_points(self) -> tuple[ModbusPoint, ...]:
        """The profile's points (if any) with the device's own, which override by name."""
        if not self.profile:
            return self.points
        from drivers.modbus import profiles

        document = profiles.load(self.profile)
        defaults = document.get("defaults", {})
        own = {p.name for p in self.points}
        merged: list[ModbusPoint] = []
        for raw in document.get("points", ()):
            if raw["name"] in own:
                continue
            fields = {**defaults, **raw}
            merged.append(ModbusPoint(**{k: v for k, v in fields.items() if k != "note"}))
        return (*merged, *self.points)


class OpcuaDevice(_Model):
    name: Name
    driver: Literal["opcua"]
    endpoint: str
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
    queue_size: Annotated[int, in_range(1, 10000)] = 1
    enabled: bool = True
    points: tuple[OpcuaPoint, ...] = ()

    def password(self) -> str | None:
        return _read_secret(self.password_file, self.password_env)

    def resolved_points(self) -> tuple[OpcuaPoint, ...]:
        return self.points


def _device_tag(value: Any) -> str | None:
    driver = value.get("driver") if isinstance(value, dict) else getattr(value, "driver", None)
    return driver if driver in ("modbus", "opcua") else None


Device = Annotated[
    Annotated[ModbusDevice, Tag("modbus")] | Annotated[OpcuaDevice, Tag("opcua")],
    Discriminator(
        _device_tag,
        custom_error_type="driver",
        custom_error_message="driver must be \"modbus\" or \"opcua\"",
    ),
]


class GroupConfig(_Model):
    name: Name
    members: tuple[str, ...]
    production: str | None = None


class Config(_Model):
    gateway: GatewayConfig
    mqtt: MqttConfig
    http: HttpConfig | None = None
    buffer: BufferConfig = BufferConfig()
    energy: EnergyConfig = EnergyConfig()
    tariff: TariffConfig | None = None
    devices: tuple[Device, ...] = ()
    groups: tuple[GroupConfig, ...] = ()
    path: Path = Path("ironwatt.toml")

    def device(self, name: str) -> ModbusDevice | OpcuaDevice:
        for dev in self.devices:
            if dev.name == name:
                return dev
        raise KeyError(f"no device named {name!r} in {self.path}")

    @property
    def mqtt_client_id(self) -> str:
        return self.mqtt.client_id or f"ironwatt-{self.gateway.site}-{self.gateway.id}"


def _first(value: float | None, fallback: float) -> float:
    return fallback if value is None else value


def _read_secret(path: Path | None, env: str | None) -> str | None:
    """The secret from its file (trailing newline stripped) or environment variable."""
    if path is not None:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    if env is not None:
        return os.environ.get(env)
    return None
