"""Group windows from member windows: every number below can be redone on paper."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from gateway.energy.carriers import DEFAULT_CARRIERS
from gateway.energy.groups import GroupAccountant, compile_groups
from gateway.timefmt import utc_iso

H = 3600.0
T0 = 1_780_000_000.0 - 1_780_000_000.0 % H  # an hour edge


@dataclass(frozen=True)
class Pt:
    device: str
    name: str
    kind: str
    unit: str
    carrier: str | None


@dataclass(frozen=True)
class G:
    name: str
    members: tuple[str, ...]
    production: str | None = None
    recovered: tuple[str, ...] = ()
    process: str | None = None  # the [[groups]] fields levels_of reads
    furnace_capacity_t: float | None = None


POINTS = [
    Pt("meter", "energy_import", "counter", "kWh", "electricity"),
    Pt("meter", "power_total", "rate", "kW", "electricity"),
    Pt("plc", "gas_flow", "rate", "m3/h", "natural_gas"),
    Pt("plc", "hot_metal", "counter", "t", "product"),
    Pt("bof", "energy_wh", "counter", "Wh", "electricity"),
    Pt("bof", "oxygen", "counter", "m3", "oxygen"),
    Pt("bof", "ldg", "counter", "m3", "converter_gas"),
    Pt("bof", "steam", "counter", "kg", "steam"),
    Pt("bof", "steel", "counter", "t", "product"),
    Pt("mill", "power", "rate", "MW", "electricity"),
]


def counter(delta: float | None, coverage: float = 1.0, **extra: Any) -> dict[str, Any]:
    return {"kind": "counter", "delta": delta, "coverage": coverage, **extra}


def rate(integral: float | None, coverage: float = 1.0, **extra: Any) -> dict[str, Any]:
    return {"kind": "rate", "integral": integral, "coverage": coverage, **extra}


def window(device: str, revision: int = 1, **points: dict[str, Any]) -> dict[str, Any]:
    return {"device": device, "revision": revision, "points": points}


def accountant(*groups: G, currency: str | None = "CNY") -> GroupAccountant:
    specs = compile_groups(groups, POINTS, DEFAULT_CARRIERS)
    return GroupAccountant(specs, DEFAULT_CARRIERS, currency=currency)


def test_an_hour_of_electricity_gas_and_hot_metal() -> None:
    acc = accountant(G("bf", ("meter.energy_import", "plc.gas_flow"), "plc.hot_metal"))
    cost = {"currency": "CNY", "amount": 510.0, "by_period": {"valley": 90.0, "flat": 420.0}}
    acc.take_window("1h", T0, T0 + H, window("meter", energy_import=counter(1000.0, cost=cost)))
    assert acc.complete(T0 + H) == []  # the PLC's window is still to come: never half-summed
    acc.take_window("1h", T0, T0 + H, window(
        "plc", gas_flow=rate(500.0, 0.9), hot_metal=counter(20.0)))  # fmt: skip
    [out] = acc.complete(T0 + H + 2)
    assert out["group"] == "bf"
    assert (out["interval"], out["start"], out["end"]) == ("1h", utc_iso(T0), utc_iso(T0 + H))
    assert (out["revision"], out["estimated"]) == (1, False)
    assert out["carriers"] == {
        "electricity": {"unit": "kWh", "amount": 1000.0},
        "natural_gas": {"unit": "m3", "amount": 500.0},
    }
    # 1000 kWh x 0.1229 + 500 m3 x 1.2143 = 122.9 + 607.15
    assert out["kgce"] == pytest.approx(730.05, rel=1e-12)
    # 1000 x 0.5306 + 500 x 2.165 = 530.6 + 1082.5
    assert out["kgco2e"] == pytest.approx(1613.1, rel=1e-12)
    assert out["production"] == {"unit": "t", "amount": 20.0}
    assert out["intensity_kgce_per_unit"] == pytest.approx(730.05 / 20, rel=1e-12)
    assert out["cost"] == {"currency": "CNY", "amount": 510.0,
                           "by_period": {"valley": 90.0, "flat": 420.0}}  # fmt: skip
    assert out["coverage"] == 0.9
    assert out["factors"]["electricity"]["kgce_per_unit"] == 0.1229
    assert out["factors"]["electricity"]["method"] == "equivalent"
    assert out["factors"]["natural_gas"]["kgco2e_per_unit"] == 2.165
    assert out["members"]["plc.gas_flow"] == {
        "carrier": "natural_gas", "unit": "m3", "amount": 500.0, "coverage": 0.9}  # fmt: skip
    assert "demand" not in out  # no demand block in
    assert acc.pending() == 0  # published and not revisable: forgotten


def test_units_convert_to_the_carrier_unit() -> None:
    acc = accountant(G("bof", ("bof.energy_wh",)), G("mill", ("mill.power",)))
    acc.take_window("1h", T0, T0 + H, window("bof", energy_wh=counter(250_000.0)))
    acc.take_window("1h", T0, T0 + H, window("mill", power=rate(1.5)))  # MW over 1 h = 1.5 MWh
    got = {g["group"]: g["carriers"]["electricity"]["amount"] for g in acc.complete(T0 + H)}
    assert got == {"bof": 250.0, "mill": 1500.0}


def test_a_converter_with_recovered_gas_and_steam_goes_negative() -> None:
    acc = accountant(G("bof-1", ("bof.energy_wh", "bof.oxygen"), "bof.steel",
                       recovered=("bof.ldg", "bof.steam")))  # fmt: skip
    acc.take_window("1h", T0, T0 + H, window(
        "bof", energy_wh=counter(500_000.0), oxygen=counter(1000.0), ldg=counter(2000.0),
        steam=counter(1000.0), steel=counter(10.0)))  # fmt: skip
    [out] = acc.complete(T0 + H)
    assert out["carriers"] == {"electricity": {"unit": "kWh", "amount": 500.0},
                               "oxygen": {"unit": "m3", "amount": 1000.0}}  # fmt: skip
    assert out["recovered"] == {"converter_gas": {"unit": "m3", "amount": 2000.0},
                                "steam": {"unit": "t", "amount": 1.0}}  # fmt: skip
    # in: 500 x 0.1229 + 1000 x 0.4 = 461.45; recovered: 2000 x 0.273 + 1 x 128.6 = 674.6
    assert out["kgce"] == pytest.approx(461.45 - 674.6, rel=1e-12)
    assert out["kgco2e"] == pytest.approx(500 * 0.5306 - 2000 * 1.456, rel=1e-12)
    assert out["intensity_kgce_per_unit"] == pytest.approx((461.45 - 674.6) / 10, rel=1e-12)
    assert out["members"]["bof.ldg"]["recovered"] is True


@pytest.mark.parametrize("steel", [0.0, -3.0, None])
def test_no_production_means_no_intensity(steel: float | None) -> None:
    acc = accountant(G("bof-1", ("bof.oxygen",), "bof.steel"))
    acc.take_window("1h", T0, T0 + H, window("bof", oxygen=counter(1000.0), steel=counter(steel)))
    [out] = acc.complete(T0 + H)
    assert out["kgce"] == pytest.approx(400.0, rel=1e-12)
    assert out["production"] == {"unit": "t", "amount": steel}
    assert out["intensity_kgce_per_unit"] is None


def test_a_member_without_a_baseline_counts_nothing_and_says_so() -> None:
    acc = accountant(G("bf", ("meter.energy_import", "plc.gas_flow")))
    acc.take_window("1h", T0, T0 + H, window("meter", energy_import=counter(None, 0.0)))
    acc.take_window("1h", T0, T0 + H, window("plc", gas_flow=rate(None, 0.0)))
    [out] = acc.complete(T0 + H)
    assert out["carriers"] == {"electricity": {"unit": "kWh", "amount": None},
                               "natural_gas": {"unit": "m3", "amount": None}}  # fmt: skip
    assert (out["kgce"], out["kgco2e"], out["coverage"]) == (None, None, 0.0)


def test_nested_groups_sum_to_the_flat_total() -> None:
    bf = G("bf", ("meter.energy_import", "plc.gas_flow"))
    bof = G("bof-1", ("bof.energy_wh", "bof.oxygen"), recovered=("bof.ldg",))
    plant = G("plant", ("bf", "bof-1"))
    flat = G("flat", ("meter.energy_import", "plc.gas_flow", "bof.energy_wh", "bof.oxygen"),
             recovered=("bof.ldg",))  # fmt: skip
    acc = accountant(plant, bf, bof, flat)
    acc.take_window("1h", T0, T0 + H, window("meter", energy_import=counter(1000.25)))
    acc.take_window("1h", T0, T0 + H, window("plc", gas_flow=rate(500.5, 0.75)))
    bof_window = window(
        "bof", energy_wh=counter(250_000.0), oxygen=counter(1000.0), ldg=counter(64.0)
    )
    acc.take_window("1h", T0, T0 + H, bof_window)
    out = {g["group"]: g for g in acc.complete(T0 + H)}
    assert list(out) == ["bf", "bof-1", "plant", "flat"]  # children before their parent
    assert (
        out["plant"]["carriers"]
        == out["flat"]["carriers"]
        == {
            "electricity": {"unit": "kWh", "amount": 1250.25},
            "natural_gas": {"unit": "m3", "amount": 500.5},
            "oxygen": {"unit": "m3", "amount": 1000.0},
        }
    )
    assert out["plant"]["recovered"] == {"converter_gas": {"unit": "m3", "amount": 64.0}}
    assert out["plant"]["kgce"] == pytest.approx(out["bf"]["kgce"] + out["bof-1"]["kgce"])
    assert out["plant"]["kgce"] == pytest.approx(out["flat"]["kgce"], rel=1e-12)
    assert out["plant"]["coverage"] == 0.75
    assert out["plant"]["groups"] == ["bf", "bof-1"]


def test_group_demand_is_the_peak_of_simultaneous_sums() -> None:
    acc = accountant(G("line", ("meter.power_total", "mill.power")))
    q = 900.0
    # meter peaks in the first quarter, the mill (in MW) in the second: their peaks never meet.
    for b, (meter_kw, mill_mw) in enumerate([(300.0, 0.1), (100.0, 0.3), (50.0, 0.05), (0, 0)]):
        start = T0 + b * q
        acc.take_block("meter.power_total", start, start + q, meter_kw)
        acc.take_block("mill.power", start, start + q, mill_mw)
    acc.take_window("1h", T0, T0 + H, window("meter", power_total=rate(112.5)))
    acc.take_window("1h", T0, T0 + H, window("mill", power=rate(0.1125)))
    [out] = acc.complete(T0 + H)
    # sums: 400, 400, 100, 0 kW; the separate peaks would add to 300 + 300 = 600
    assert out["demand"] == {"unit": "kW", "peak": 400.0, "at": utc_iso(T0 + q)}


def test_a_block_with_a_silent_member_has_no_simultaneous_sum() -> None:
    acc = accountant(G("line", ("meter.power_total", "mill.power")))
    acc.take_block("meter.power_total", T0, T0 + 900, 900.0)
    acc.take_block("mill.power", T0, T0 + 900, None)
    acc.take_block("meter.power_total", T0 + 900, T0 + 1800, 100.0)
    acc.take_block("mill.power", T0 + 900, T0 + 1800, 0.2)
    acc.take_window("1h", T0, T0 + H, window("meter", power_total=rate(250.0)))
    acc.take_window("1h", T0, T0 + H, window("mill", power=rate(0.05)))
    [out] = acc.complete(T0 + H)
    assert out["demand"] == {"unit": "kW", "peak": 300.0, "at": utc_iso(T0 + 1800)}


def test_a_revised_member_republishes_the_group_with_the_next_revision() -> None:
    acc = accountant(G("bf", ("meter.energy_import", "plc.gas_flow")))
    acc.take_window("1h", T0, T0 + H, window("meter", energy_import=counter(400.0, 0.5)),
                    revisable=True)  # fmt: skip
    acc.take_window("1h", T0, T0 + H, window("plc", gas_flow=rate(100.0)))
    [first] = acc.complete(T0 + H)
    assert (first["revision"], first["estimated"], first["coverage"]) == (1, False, 0.5)
    assert acc.complete(T0 + H + 60) == []  # nothing new
    acc.take_window("1h", T0, T0 + H, window(
        "meter", revision=2, energy_import=counter(800.0, 0.5, estimated=True)))  # fmt: skip
    [again] = acc.complete(T0 + 2 * H)
    assert (again["revision"], again["estimated"]) == (2, True)
    assert again["carriers"]["electricity"]["amount"] == 800.0
    assert again["kgce"] == pytest.approx(800 * 0.1229 + 100 * 1.2143, rel=1e-12)
    assert first["carriers"]["electricity"]["amount"] == 400.0  # the first payload is untouched


def test_a_disabled_device_leaves_its_members_missing() -> None:
    specs = compile_groups([G("bf", ("meter.energy_import", "off.energy"))], POINTS,
                           DEFAULT_CARRIERS, disabled=["off"])  # fmt: skip
    acc = GroupAccountant(specs, DEFAULT_CARRIERS)
    acc.take_window("1h", T0, T0 + H, window("meter", energy_import=counter(10.0)))
    [out] = acc.complete(T0 + H)
    assert (out["missing"], out["coverage"]) == (["off.energy"], 0.0)
    assert out["carriers"]["electricity"]["amount"] == 10.0


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ([G("a", ("b",)), G("b", ("a",))], "groups form a cycle: a -> b -> a"),
        ([G("a", ())], "group 'a' has no member"),
        ([G("a", ("meter.nope",))], "member 'meter.nope' is not a configured point"),
        ([G("a", ("b", "meter.energy_import")), G("b", ("meter.energy_import",))],
         "'meter.energy_import' is counted twice"),
    ],
)  # fmt: skip
def test_tables_the_checks_refuse_are_refused_here_too(groups: list[G], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compile_groups(groups, POINTS, DEFAULT_CARRIERS)


def test_a_shift_window_names_its_shift_and_is_judged() -> None:
    from gateway.energy.benchmarks import benchmark_for

    @dataclass(frozen=True)
    class Judged(G):
        process: str | None = "blast_furnace"
        standard: str | None = None
        benchmark: Any = None

    specs = compile_groups([Judged("bf", ("plc.gas_flow",), "plc.hot_metal")], POINTS,
                           DEFAULT_CARRIERS)  # fmt: skip
    assert specs[0].benchmark == benchmark_for("blast_furnace")
    acc = GroupAccountant(specs, DEFAULT_CARRIERS, benchmark_intervals=["shift"])
    body = window("plc", gas_flow=rate(3000.0), hot_metal=counter(10.0))
    acc.take_window("shift", T0, T0 + 8 * H, {**body, "shift": "night"})
    acc.take_window("1h", T0, T0 + H, body)
    out = {g["interval"]: g for g in acc.complete(T0 + 8 * H)}
    assert out["shift"]["shift"] == "night"
    # 3000 m3 x 1.2143 kgce/m3 / 10 t = 364.29 kgce/t: between benchmark 361 and baseline 435
    bench = out["shift"]["benchmark"]
    assert bench["value"] == pytest.approx(364.29, rel=1e-12)
    assert (bench["standing"], bench["grade"]) == ("between_benchmark_and_baseline", 2)
    assert "benchmark" not in out["1h"]  # not one of benchmark_intervals
    assert "shift" not in out["1h"]


def test_the_state_survives_a_restart_and_a_revision_after_it() -> None:
    import json

    group = G("bf", ("meter.energy_import", "plc.gas_flow"))
    acc = accountant(group)
    acc.take_window("1h", T0, T0 + H, window("meter", energy_import=counter(400.0, 0.5)),
                    revisable=True)  # fmt: skip
    acc.take_block("meter.power_total", T0, T0 + 900, 100.0)
    assert acc.complete(T0 + H) == []  # the PLC's window is still to come
    state = json.loads(json.dumps(acc.state()))  # what the snapshot file holds
    later = accountant(group)
    assert later.restore(state) == 1
    later.take_window("1h", T0, T0 + H, window("plc", gas_flow=rate(100.0)))
    [out] = later.complete(T0 + H + 5)
    assert out["carriers"]["electricity"]["amount"] == 400.0  # the member seen before the restart
    later.take_window("1h", T0, T0 + H, window(
        "meter", revision=2, energy_import=counter(800.0, 0.5, estimated=True)))  # fmt: skip
    again = accountant(group)
    again.restore(json.loads(json.dumps(later.state())))
    [revised] = later.complete(T0 + 2 * H)
    assert (revised["revision"], revised["carriers"]["electricity"]["amount"]) == (2, 800.0)
    [also] = again.complete(T0 + 2 * H)  # the same from a state saved before the publication
    assert also == revised


def test_a_damaged_state_is_refused() -> None:
    acc = accountant(G("bf", ("meter.energy_import",)))
    with pytest.raises(ValueError, match="the groups' saved state is unreadable"):
        acc.restore({"slots": [{"interval": "1h"}], "partial": {}, "whole": {}})
    assert acc.pending() == 0


def test_a_dead_meter_holds_only_its_own_groups_windows() -> None:
    acc = accountant(G("bf", ("meter.energy_import",)), G("bof-1", ("bof.oxygen",)))
    for m in range(3):
        start = T0 + 60 * m
        acc.take_window("1m", start, start + 60, window("meter", energy_import=counter(0.0, 0.0)),
                        revisable=True)  # a gap may still revise these  # fmt: skip
        acc.take_window("1m", start, start + 60, window("bof", oxygen=counter(5.0)))
    assert len(acc.complete(T0 + 200)) == 6
    state = acc.state()
    held = {g for s in state["slots"] for g in s["published"]}
    assert held == {"bf"}  # bof-1's windows are let go of: nothing can revise them
    assert all(set(s["inputs"]) == {"meter.energy_import"} for s in state["slots"])
    assert acc.pending() == 3


def test_a_parent_waiting_for_its_own_member_still_sums_its_finished_child() -> None:
    acc = accountant(G("bf", ("plc.gas_flow",)), G("plant", ("bf", "mill.power")))
    acc.take_window("1h", T0, T0 + H, window("plc", gas_flow=rate(100.0)))
    [bf] = acc.complete(T0 + H)  # the child is out; the mill's window is late
    assert bf["group"] == "bf"
    acc.take_window("1h", T0, T0 + H, window("mill", power=rate(0.5)))
    [plant] = acc.complete(T0 + H + 30)
    assert plant["carriers"] == {"natural_gas": {"unit": "m3", "amount": 100.0},
                                 "electricity": {"unit": "kWh", "amount": 500.0}}  # fmt: skip
    assert acc.pending() == 0


def test_a_group_changed_by_a_reload_does_not_rewrite_windows_it_published() -> None:
    import json

    old = accountant(G("bf", ("meter.energy_import", "plc.gas_flow")))
    old.take_window("1h", T0, T0 + H, window("meter", energy_import=counter(400.0, 0.5)),
                    revisable=True)  # fmt: skip
    old.take_window("1h", T0, T0 + H, window("plc", gas_flow=rate(100.0)))
    [first] = old.complete(T0 + H)
    assert first["revision"] == 1
    new = accountant(G("bf", ("meter.energy_import",)))  # gas_flow left the group
    new.restore(json.loads(json.dumps(old.state())))
    assert new.complete(T0 + H + 1) == []
    new.take_window("1h", T0, T0 + H, window(
        "meter", revision=2, energy_import=counter(800.0, 0.5, estimated=True)))  # fmt: skip
    assert new.complete(T0 + 2 * H) == []  # summed under the old membership: left as it was
    same = accountant(G("bf", ("meter.energy_import", "plc.gas_flow")))
    same.restore(json.loads(json.dumps(old.state())))
    same.take_window("1h", T0, T0 + H, window(
        "meter", revision=2, energy_import=counter(800.0, 0.5, estimated=True)))  # fmt: skip
    [again] = same.complete(T0 + 2 * H)
    assert (again["revision"], again["carriers"]["electricity"]["amount"]) == (2, 800.0)


def test_a_production_point_on_a_disabled_device_is_missing_not_a_coverage_loss() -> None:
    specs = compile_groups([G("bf", ("meter.energy_import",), "off.tons")], POINTS,
                           DEFAULT_CARRIERS, disabled=["off"])  # fmt: skip
    acc = GroupAccountant(specs, DEFAULT_CARRIERS)
    acc.take_window("1h", T0, T0 + H, window("meter", energy_import=counter(10.0)))
    [out] = acc.complete(T0 + H)
    assert (out["production"], out["intensity_kgce_per_unit"]) == (None, None)
    assert (out["missing"], out["coverage"]) == (["off.tons"], 1.0)


def test_a_parent_still_sums_a_child_whose_definition_changed() -> None:
    import json

    child = G("bf", ("plc.gas_flow",))
    before = accountant(child, G("plant", ("bf", "mill.power")))
    before.take_window("1h", T0, T0 + H, window("plc", gas_flow=rate(100.0)))
    assert [g["group"] for g in before.complete(T0 + H)] == ["bf"]  # the mill is late
    changed = G("bf", ("plc.gas_flow",), "plc.hot_metal")  # bf gained a production point
    after = accountant(changed, G("plant", ("bf", "mill.power")))
    after.restore(json.loads(json.dumps(before.state())))
    after.take_window("1h", T0, T0 + H, window("mill", power=rate(0.5)))
    [plant] = after.complete(T0 + H + 30)
    assert plant["carriers"]["natural_gas"]["amount"] == 100.0
    assert after.pending() == 0


def test_a_damaged_state_of_the_wrong_shape_is_refused_in_words() -> None:
    acc = accountant(G("bf", ("meter.energy_import",)))
    with pytest.raises(ValueError, match="unreadable"):
        acc.restore({"slots": [], "partial": {}, "whole": {}, "specs": []})
