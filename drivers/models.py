"""The base of every protocol's config models: frozen, unknown keys refused, the point keys all
protocols share (what a reading is: kind, unit, carrier, scale; how the energy stage judges it).

Imports pydantic: only the validating side (the config worker, `ironwatt check`) loads it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from drivers.fields import Duration, Float, Name, in_range, positive

__all__ = ["ConfigModel", "Integration", "Kind", "PointBase"]

Kind = Literal["gauge", "counter", "rate"]
Integration = Literal["trapezoid", "hold"]


class ConfigModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class PointBase(ConfigModel):
    name: Name = Field(description='the point\'s name: name = "energy_import"')
    kind: Kind = "gauge"
    unit: str = ""
    carrier: Name | None = None
    scale: Float = 1.0
    offset: Float = 0.0
    max_rate: Annotated[Float, AfterValidator(positive)] | None = None
    max_gap: Duration | None = None
    integration: Integration | None = None
    report_deadband: Annotated[Float, in_range(0, 1e18)] | None = None
    report_deadband_percent: Annotated[Float, in_range(0, 100)] | None = None
