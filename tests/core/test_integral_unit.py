"""One answer for the unit of a rate's integral: the unit table's, in the payload and the checks.

Regression: `integral_unit` existed twice (the aggregator's spelling rule and the unit table's
canonical unit) and the two disagreed, "MW" -> "MWh" in one, "kWh" in the other. The kernel
integrates readings as they are, so a MW point's integral is in MWh.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from drivers.samples import SampleBatch
from gateway.config.load import parse_config
from gateway.energy import units
from gateway.energy.aggregate import AccountedPoint, Aggregator, integral_unit
from tests.config.test_example import MINIMAL

DAY0 = 1_764_374_400.0  # 2025-11-29T00:00:00Z, a minute edge


@pytest.mark.parametrize(("rate", "label"), [("MW", "MWh"), ("W", "Wh"), ("kvar", "kvarh")])
def test_the_payload_labels_the_integral_as_the_unit_table_does(rate: str, label: str) -> None:
    agg = Aggregator(ZoneInfo("UTC"), [("1m", 60)])
    agg.set_points([AccountedPoint("d", "p", "rate", rate)], DAY0)
    pid = agg.index.id("d.p")
    windows = []
    for s in range(0, 121, 10):
        batch = SampleBatch()
        batch.append(pid, DAY0 + s, 6.0)
        agg.ingest(batch, DAY0 + s)
        windows += agg.close_until(DAY0 + s + 5).windows
    point = windows[0].payload["points"]["p"]
    assert point["integral_unit"] == label == units.integral_unit(rate)
    assert point["integral"] == pytest.approx(6.0 / 60)  # 6 MW for a minute: 0.1 MWh


def test_every_rate_of_the_table_is_labelled_by_the_table() -> None:
    for name in units.UNITS:
        named = units.integral_unit(name)
        if named is not None:
            assert integral_unit(name) == named
            assert units.lookup(named) is not None


def test_a_rate_whose_integral_has_no_name_still_converts_to_its_carrier() -> None:
    """m3/s integrates to volume (3600 m3 a unit): a natural gas rate in m3/s is valid."""
    text = MINIMAL + (
        '\n[[devices]]\nname = "plc"\ndriver = "opcua"\nendpoint = "opc.tcp://127.0.0.1:4840"\n'
        '[[devices.points]]\nname = "gas"\nnode = "ns=2;s=Gas"\nkind = "rate"\nunit = "m3/s"\n'
        'carrier = "natural_gas"\n'
    )
    cfg = parse_config(text)
    assert cfg.devices[0].points[0].unit == "m3/s"
