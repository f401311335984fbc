"""The typed, validated shape of ironwatt.toml (../shared/spec/config.md is the contract).

Field names are the TOML keys. Every model forbids unknown keys and is frozen; checks that span
several keys live in `config_checks.py`, loading and error reporting in `config.py`.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union
from zoneinfo import ZoneInfo

from pydantic import (
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from drivers.fields import (
    NAME_RE,
    Bool,
    Duration,
    Float,
    Int,
    Name,
    Size,
    in_range,
    parse_duration,
    quote,
)
from drivers.models import ConfigModel
from drivers.registry import PLUGINS
from drivers.secrets import read_secret
from gateway.config.base import device_named
from gateway.energy.benchmarks import PROCESSES, table_process
from gateway.energy.carriers import DEFAULT_CARRIERS, GRID_FACTORS
from gateway.energy.tou import parse_hours
from gateway.energy.windows import MONTH, SHIFT, check_interval

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
    "MqttConfig",
    "ShiftConfig",
    "TariffConfig",
    "TariffPeriod",
    "TariffSeason",
]


_Model = ConfigModel


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
    id: Name = Field(description='this gateway\'s name, a topic level: id = "bf2-sub-a"')
    site: Name = Field(description='the plant or site, a topic level: site = "plant1"')
    timezone: str = Field(default_factory=_system_zone)
    data_dir: Path = Path("/var/lib/ironwatt")

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class MqttConfig(_Model):
    url: str = Field(description='the broker: url = "mqtts://broker.plant.local:8883"')
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
    telemetry: Bool = False
    telemetry_qos: Literal[0, 1] = 0
    # Added keys (config.md allows additions).
    max_inflight: Annotated[Int, in_range(1, 1000)] = 20
    drain_rate: Annotated[Float, in_range(0, 1e9)] = (
        0.0  # messages/s after an outage; 0 = unlimited
    )
    telemetry_heartbeat: Duration = 300.0

    def password(self) -> str | None:
        return read_secret(self.password_file, self.password_env)


class HttpConfig(_Model):
    listen: str = "127.0.0.1:9108"


class BufferConfig(_Model):
    max_size: Size = 512 << 20
    durability: Literal["full", "normal"] = "full"


class Interval(_Model):
    name: str  # as written: "15m" (a topic level)
    seconds: int  # 0 for "1mo": calendar months have no one length


def _interval(value: Any) -> Any:
    """ "15m" -> Interval(name="15m", seconds=900), refusing lengths that do not tile a day."""
    if isinstance(value, Interval | dict):
        return value
    if value == MONTH:
        return Interval(name=MONTH, seconds=0)
    if not isinstance(value, str):
        raise PydanticCustomError(
            "interval",
            '{value} is not an interval (expected e.g. "15m", "1h", "1d")',
            {"value": quote(value)},
        )
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise PydanticCustomError("interval", str(exc)) from None
    if not NAME_RE.fullmatch(value):
        raise PydanticCustomError(
            "interval",
            '{value} cannot name a topic level (write it in lowercase units: "15m", "1h")',
            {"value": quote(value)},
        )
    if not seconds.is_integer() or seconds <= 0:
        raise PydanticCustomError(
            "interval", "{value} is not a whole number of seconds", {"value": quote(value)}
        )
    reason = check_interval(int(seconds))
    if reason:
        raise PydanticCustomError(
            "interval", "{value} {reason}", {"value": quote(value), "reason": reason}
        )
    return Interval(name=value, seconds=int(seconds))


IntervalSpec = Annotated[
    Interval,
    BeforeValidator(_interval),
    WithJsonSchema({"type": "string", "pattern": r"^((\d+(ms|s|m|h|d))+|1mo)$"}),
]

CarrierMethod = Literal["equivalent", "equal", "none"]


class Carrier(_Model):
    """An energy carrier: its accounting unit and conversion factors (defaults merged with
    `[energy.carriers.NAME]`), `source` saying where the factors come from."""

    unit: str = Field(description='the carrier\'s accounting unit: unit = "kWh" (or m3, t, GJ)')
    kgce_per_unit: Annotated[Float, in_range(0, 1e9)] = Field(
        description="kg of standard coal equivalent per unit: kgce_per_unit = 0.1229"
    )
    kgco2e_per_unit: Annotated[Float, in_range(0, 1e9)] = Field(
        description="kg CO2e per unit: kgco2e_per_unit = 0.5306 (0 when not emitting)"
    )
    method: CarrierMethod = Field(
        default="equivalent",
        description='how kgce is counted: "equivalent" (当量值), "equal" (等价值), '
        '"none" (not energy, e.g. product)',
    )
    source: str = Field(default="config", description="where the factors come from")


def _merge_carriers(value: Any) -> Any:
    """Overrides of `[energy.carriers.NAME]` merged over the defaults of gateway/energy/carriers."""
    if not isinstance(value, dict):
        return value  # the dict validator words the type error
    merged: dict[str, Any] = {
        name: {
            "unit": d.unit,
            "kgce_per_unit": d.kgce_per_unit,
            "kgco2e_per_unit": d.kgco2e_per_unit,
            "method": d.method,
            "source": d.source,
        }
        for name, d in DEFAULT_CARRIERS.items()
    }
    for name, over in value.items():
        if isinstance(over, dict) and name in merged:
            changed = [k for k, v in over.items() if k != "source" and merged[name].get(k) != v]
            base = dict(merged[name])
            if changed:
                base["source"] = f"config ({', '.join(changed)}); default: {base['source']}"
            merged[name] = {**base, **over}
        elif isinstance(over, dict) and "source" not in over:
            merged[name] = {**over, "source": "config"}
        else:
            merged[name] = over
    return merged


_CARRIER_OVERRIDE_SCHEMA = {
    "type": "object",
    "description": "overrides of the default carriers, or new carriers (unit and factors)",
    "additionalProperties": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "unit": {"type": "string"},
            "kgce_per_unit": {"type": "number", "minimum": 0},
            "kgco2e_per_unit": {"type": "number", "minimum": 0},
            "method": {"enum": ["equivalent", "equal", "none"]},
            "source": {"type": "string"},
        },
    },
}


def _clock_minute(value: Any) -> Any:
    """ "07:00" -> 420 minutes after local midnight."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    span = parse_hours(f"{value}-00:00") if isinstance(value, str) else None
    if span is None or span[0] >= 1440:
        raise PydanticCustomError(
            "clock", '{value} is not a local time (expected "HH:MM", e.g. "07:00")',
            {"value": quote(value)},
        )  # fmt: skip
    return span[0]


class ShiftConfig(_Model):
    """One shift of `energy.shifts`: it runs from its start to the next shift's start."""

    name: Name = Field(description='the shift\'s name, named in its windows: name = "night"')
    start: Annotated[
        int,
        BeforeValidator(_clock_minute),
        WithJsonSchema({"type": "string", "pattern": r"^\d{1,2}:\d\d$"}),
    ] = Field(description='local start time: start = "23:00"')

    @property
    def start_text(self) -> str:
        return f"{self.start // 60:02d}:{self.start % 60:02d}"


def _shifts(value: Any) -> Any:
    """Shifts have distinct names and starts (each runs to the next one's start)."""
    if not isinstance(value, list | tuple):
        return value
    names: dict[Any, int] = {}
    starts: dict[Any, int] = {}
    for i, shift in enumerate(value):
        if not isinstance(shift, dict):
            continue
        name, start = shift.get("name"), shift.get("start")
        if name in names:
            raise PydanticCustomError(
                "shifts", "shift {name} appears twice (shifts[{a}] and shifts[{b}])",
                {"name": quote(name), "a": names[name], "b": i},
            )  # fmt: skip
        if start is not None and start in starts:
            raise PydanticCustomError(
                "shifts", "shifts[{a}] and shifts[{b}] both start at {start}",
                {"start": quote(start), "a": starts[start], "b": i},
            )  # fmt: skip
        names[name] = i
        if start is not None:
            starts[start] = i
    return value


GridRegion = Literal[
    "national", "north", "northeast", "east", "central", "northwest", "south", "southwest"
]  # fmt: skip
assert set(GridRegion.__args__) == set(GRID_FACTORS)  # type: ignore[attr-defined]


class EnergyConfig(_Model):
    intervals: tuple[IntervalSpec, ...] = Field(
        default=tuple(_interval(n) for n in ("1m", "15m", "1h", "1d")),
        description="windows published for every device and group; each divides 24 h, is whole "
        'days, or is "1mo" (calendar months)',
    )
    shifts: Annotated[tuple[ShiftConfig, ...], BeforeValidator(_shifts)] = Field(
        default=(),
        description='shift windows (interval "shift"), local time: shifts = [{ name = "night", '
        'start = "23:00" }, { name = "day", start = "07:00" }]',
    )
    benchmark_intervals: tuple[str, ...] = Field(
        default=(SHIFT, "1d", MONTH),
        description="the group windows that carry `benchmark` (those of them that are published)",
    )
    demand_interval: Duration = 900.0
    max_revision_age: Duration = 86400.0
    grid_region: GridRegion = Field(
        default="national",
        description="the grid whose CO2 factor electricity takes by default: national, north, "
        "northeast, east, central, northwest, south, southwest (2023 factors, MEE/NBS)",
    )
    carriers: Annotated[
        dict[Name, Carrier],
        BeforeValidator(_merge_carriers),
        WithJsonSchema(_CARRIER_OVERRIDE_SCHEMA),
    ] = Field(default_factory=dict, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _regional_grid(cls, data: Any) -> Any:
        """A regional grid factor replaces the national one, unless the file sets its own
        `[energy.carriers.electricity] kgco2e_per_unit` (decided on the file's keys)."""
        if not isinstance(data, dict):
            return data
        region = data.get("grid_region", "national")
        carriers = data.get("carriers", {})
        if (
            not isinstance(region, str)
            or region == "national"
            or region not in GRID_FACTORS
            or not isinstance(carriers, dict)
        ):
            return data  # national is the default; a bad value is worded by the field
        own = carriers.get("electricity", {})
        if not isinstance(own, dict) or "kgco2e_per_unit" in own:
            return data
        factor, source = GRID_FACTORS[region]
        default = DEFAULT_CARRIERS["electricity"].source.split("; CO2:")[0]
        regional = {"kgco2e_per_unit": factor, "source": f"{default}; CO2: {source}", **own}
        return {**data, "carriers": {**carriers, "electricity": regional}}

    @property
    def all_intervals(self) -> tuple[str, ...]:
        """Every interval name windows are published for: `intervals`, then "shift"."""
        names = tuple(i.name for i in self.intervals)
        return (*names, SHIFT) if self.shifts else names


class TariffPeriod(_Model):
    name: Name = Field(description='the period\'s name: name = "peak"')
    price: Annotated[Float, in_range(0, 1e6)] = Field(description="price per kWh: price = 1.085")
    hours: tuple[str, ...] = Field(description='local time ranges: hours = ["08:00-11:00"]')


class TariffSeason(_Model):
    months: str = Field(description='month range: months = "7-8" (or "12-2", "6")')
    periods: tuple[TariffPeriod, ...] = Field(description="the periods of this season's days")


class TariffConfig(_Model):
    currency: str = "CNY"
    periods: tuple[TariffPeriod, ...] = Field(
        description="the periods of a day, covering 24 h: "
        'periods = [{ name = "flat", price = 0.65, hours = ["00:00-24:00"] }]'
    )
    seasons: tuple[TariffSeason, ...] = ()
    weekend: tuple[TariffPeriod, ...] | None = None
    holiday: tuple[TariffPeriod, ...] | None = None  # periods on `holidays`; default: weekend's
    holidays: tuple[date, ...] = ()


def _device_tag(value: Any) -> str | None:
    driver = value.get("driver") if isinstance(value, dict) else getattr(value, "driver", None)
    return driver if isinstance(driver, str) and driver in PLUGINS else None


def _device_union() -> Any:
    """Every protocol's device model, told apart by `driver` (the registry's names, in order)."""
    branches = tuple(Annotated[p.config().device_model, Tag(p.name)] for p in PLUGINS.values())
    known = " or ".join(f'"{name}"' for name in PLUGINS)
    return Annotated[
        Union[branches],  # noqa: UP007 - a union built from a tuple of types
        Discriminator(
            _device_tag, custom_error_type="driver", custom_error_message=f"driver must be {known}"
        ),
    ]


if TYPE_CHECKING:
    Device = Any
else:
    Device = _device_union()


class BenchmarkLevels(_Model):
    """The site's adjusted levels (ore grade, scrap ratio ... corrections), kgce per tonne."""

    benchmark: Float | None = None
    baseline: Float | None = None
    limits: dict[Literal["1", "2", "3"], Float] | None = None


Process = Literal[
    "coking_top", "coking_stamp", "sintering", "pelletizing", "blast_furnace", "bof", "eaf",
    "eaf_below_50t", "eaf_50_70t", "eaf_70t_up",
]  # fmt: skip
assert set(Process.__args__) == {*PROCESSES, "eaf"}  # type: ignore[attr-defined]


class GroupConfig(_Model):
    name: Name = Field(description='the group\'s name, a topic level: name = "line-1"')
    members: tuple[str, ...] = Field(
        description='points ("device.point") and groups: members = ["meter1.energy_import"]'
    )
    recovered: tuple[str, ...] = Field(
        default=(),
        description="recovered or exported energy, counted negative: recovered = "
        '["bof1-plc.ldg_recovered"]',
    )
    production: str | None = None
    process: Process | None = Field(
        default=None, description='the process its benchmark judges: process = "blast_furnace"'
    )
    standard: str | None = Field(
        default=None, description='the benchmark table: standard = "GB 21256-2025"'
    )
    furnace_capacity_t: Annotated[Float, in_range(1, 1000)] | None = Field(
        default=None, description='an EAF\'s nominal capacity in t (process = "eaf" needs it)'
    )
    benchmark: BenchmarkLevels | None = None

    @property
    def benchmark_process(self) -> str | None:
        """The benchmark table's process: an EAF's class follows its furnace size."""
        return table_process(self.process, self.furnace_capacity_t)


class Config(_Model):
    gateway: GatewayConfig
    mqtt: MqttConfig
    http: HttpConfig | None = None
    buffer: BufferConfig = BufferConfig()
    energy: EnergyConfig = EnergyConfig()
    tariff: TariffConfig | None = None
    devices: tuple[Device, ...] = ()
    groups: tuple[GroupConfig, ...] = ()
    # The file it was read from (set by the loader, not a TOML key).
    path: SkipJsonSchema[Path] = Path("ironwatt.toml")

    def device(self, name: str) -> Any:
        return device_named(self.devices, name, self.path)

    @property
    def mqtt_client_id(self) -> str:
        return self.mqtt.client_id or f"ironwatt-{self.gateway.site}-{self.gateway.id}"


def _first(value: float | None, fallback: float) -> float:
    return fallback if value is None else value


def __getattr__(name: str) -> Any:
    """A protocol's model by its class name (`ModbusDevice`, ...): asked of the registry, so
    this module names no protocol and older imports keep working."""
    for plugin in PLUGINS.values():
        face = plugin.config()
        for model in (face.device_model, face.point_model):
            if model.__name__ == name:
                return model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
