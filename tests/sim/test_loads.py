"""The simulated plant's loads: power by phase, and energy as its exact integral."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.sim.loads import Cycle, Phase, Steady, eaf_heat, rolling_mill

TWO = Cycle([Phase("on", 10.0, 360.0), Phase("off", 20.0, 0.0)])  # 1 kWh per 10 s on


@pytest.mark.parametrize(
    ("t", "phase", "kw", "kwh"),
    [
        (0.0, "on", 360.0, 0.0),
        (5.0, "on", 360.0, 0.5),
        (10.0, "off", 0.0, 1.0),
        (29.0, "off", 0.0, 1.0),
        (30.0, "on", 360.0, 1.0),
        (35.0, "on", 360.0, 1.5),
        (95.0, "on", 360.0, 3.5),  # three whole cycles, then 5 s on
    ],
)
def test_a_cycle_by_hand(t: float, phase: str, kw: float, kwh: float) -> None:
    assert TWO.phase_at(t) == phase
    assert TWO.power_kw(t) == kw
    assert TWO.energy_kwh(t) == pytest.approx(kwh, abs=1e-12)


def test_the_steady_load_by_hand() -> None:
    load = Steady(kw=360.0, swing_kw=36.0, period_s=60.0)
    assert load.power_kw(15.0) == pytest.approx(396.0)  # a quarter period: the top of the swing
    # half a period: 360 kW x 30 s = 3 kWh, plus the swing's 36 x (1 - cos pi) / w over 3600
    w = 2 * math.pi / 60.0
    assert load.energy_kwh(30.0) == pytest.approx(3.0 + 36.0 * 2.0 / w / 3600.0)
    assert load.energy_kwh(60.0) == pytest.approx(6.0)  # the swing adds nothing over a period


def test_an_eaf_heat_goes_through_its_phases() -> None:
    heat = eaf_heat()
    assert heat.period == 120.0
    names = [heat.phase_at(t) for t in (1.0, 20.0, 80.0, 110.0, 121.0)]
    assert names == ["bore-in", "main melt", "refining", "tap and charge", "bore-in"]
    # one heat: 38 MW x 18 s + 62 MW x 54 s + 41 MW x 30 s + 1.5 MW x 18 s
    assert heat.energy_kwh(120.0) == pytest.approx(
        (38_000 * 18 + 62_000 * 54 + 41_000 * 30 + 1_500 * 18) / 3600.0
    )
    assert rolling_mill().period == 20.0


def test_a_cycle_needs_phases() -> None:
    with pytest.raises(ValueError, match="needs phases"):
        Cycle([])
    with pytest.raises(ValueError, match="longer than 0"):
        Cycle([Phase("x", 0.0, 1.0)])


@given(st.floats(0.0, 1000.0), st.floats(0.01, 30.0))
def test_energy_is_the_integral_of_power(t: float, dt: float) -> None:
    """Over any span, the energy added equals power integrated finely (a midpoint sum)."""
    for load in (eaf_heat(0.5), rolling_mill(), Steady(500.0, 80.0, 17.0)):
        steps = 4000
        h = dt / steps
        numeric = sum(load.power_kw(t + (i + 0.5) * h) for i in range(steps)) * h / 3600.0
        exact = load.energy_kwh(t + dt) - load.energy_kwh(t)
        # a phase edge inside one step is off by at most that step's share
        worst = max(abs(p.kw) for p in getattr(load, "phases", [Phase("s", 1.0, 600.0)]))
        assert exact == pytest.approx(numeric, abs=2 * worst * h / 3600.0 + 1e-9)
        assert exact >= 0.0
