"""The accounting keys of the config (shifts, months, grid region, groups' process) and the
`ironwatt carriers` / `ironwatt benchmarks` listings that show what a config makes of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.config.load import load_config
from gateway.errors import ConfigError

BASE = """
[gateway]
id = "gw1"
site = "plant1"
timezone = "Asia/Shanghai"

[mqtt]
url = "mqtt://127.0.0.1:1883"

[[devices]]
name = "eaf1-meter"
driver = "modbus"
host = "127.0.0.1"
[[devices.points]]
name = "energy"
address = 0
type = "uint32"
kind = "counter"
unit = "kWh"
carrier = "electricity"
[[devices.points]]
name = "steel"
address = 2
type = "uint32"
kind = "counter"
unit = "t"
carrier = "product"
"""


def write(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "ironwatt.toml"
    path.write_text(BASE + extra, encoding="utf-8")
    return path


def refusal(tmp_path: Path, extra: str) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, extra))
    return err.value.report()


def test_shifts_and_months_are_accepted(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, """
[energy]
intervals = ["15m", "1d", "1mo"]
shifts = [{ name = "night", start = "23:00" }, { name = "day", start = "7:00" },
          { name = "swing", start = "15:00" }]
"""))  # fmt: skip
    assert [(i.name, i.seconds) for i in cfg.energy.intervals] == [
        ("15m", 900), ("1d", 86400), ("1mo", 0)
    ]  # fmt: skip
    assert [(s.name, s.start, s.start_text) for s in cfg.energy.shifts] == [
        ("night", 1380, "23:00"), ("day", 420, "07:00"), ("swing", 900, "15:00")
    ]  # fmt: skip
    assert cfg.energy.all_intervals == ("15m", "1d", "1mo", "shift")


@pytest.mark.parametrize(
    ("shifts", "words"),
    [
        ('[{ name = "a", start = "25:00" }]', '"25:00" is not a local time'),
        ('[{ name = "a", start = "07:00" }, { name = "a", start = "19:00" }]',
         'shift "a" appears twice'),
        ('[{ name = "a", start = "07:00" }, { name = "b", start = "07:00" }]',
         'shifts[0] and shifts[1] both start at "07:00"'),
    ],
)  # fmt: skip
def test_bad_shifts_are_refused_naming_the_key(tmp_path: Path, shifts: str, words: str) -> None:
    report = refusal(tmp_path, f"[energy]\nshifts = {shifts}\n")
    assert "energy.shifts" in report
    assert words in report


def test_a_regional_grid_sets_electricity_co2_unless_the_file_does(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[energy]\ngrid_region = "east"\n'))
    electricity = cfg.energy.carriers["electricity"]
    assert electricity.kgco2e_per_unit == 0.55
    assert "East China (华东)" in electricity.source
    assert electricity.kgce_per_unit == 0.1229
    own = load_config(write(tmp_path, """
[energy]
grid_region = "east"
[energy.carriers.electricity]
kgco2e_per_unit = 0.6
"""))  # fmt: skip
    assert own.energy.carriers["electricity"].kgco2e_per_unit == 0.6


def test_an_unknown_grid_region_is_refused(tmp_path: Path) -> None:
    report = refusal(tmp_path, '[energy]\ngrid_region = "mars"\n')
    assert "energy.grid_region" in report
    assert "east" in report


def test_carriers_lists_the_merged_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, '[energy]\ngrid_region = "southwest"\n')
    assert main(["carriers", "--json", "-c", str(path)]) == 0
    rows = {r["carrier"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["electricity"]["kgco2e_per_unit"] == 0.2472
    assert rows["converter_gas"]["unit"] == "m3"
    assert main(["carriers"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == [
        "carrier", "unit", "kgce/unit", "kgCO2e/unit", "method", "source"
    ]  # fmt: skip
    assert "natural_gas        m3    1.2143     2.165" in table


def test_benchmarks_lists_what_each_group_is_judged_by(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, """
[[groups]]
name = "eaf-1"
members = ["eaf1-meter.energy"]
production = "eaf1-meter.steel"
process = "eaf"
furnace_capacity_t = 60
benchmark = { limits = { "3" = 75 } }
""")  # fmt: skip
    assert main(["benchmarks", "--json", "-c", str(path)]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["group"], row["process"], row["standard"]) == (
        "eaf-1",
        "eaf_50_70t",
        "GB 21256-2025",
    )
    assert (row["benchmark"], row["baseline"], row["limits"]) == (61, 72, {"3": 75.0})
    assert row["source"].startswith("site-adjusted (limits)")
    assert main(["benchmarks"]) == 0
    assert (
        "blast_furnace  GB 21256-2025  361        435       361 / 370 / 415"
        in capsys.readouterr().out
    )


GROUPS = """
[[groups]]
name = "bf"
members = ["eaf1-meter.energy"]
production = "eaf1-meter.steel"
"""


@pytest.mark.parametrize(
    ("extra", "where", "words"),
    [
        ('process = "eaf"\n', "groups[0].furnace_capacity_t",
         'process "eaf" needs furnace_capacity_t'),
        ('process = "bof"\nstandard = "GB 1-2000"\n', "groups[0].standard",
         '"GB 1-2000" has no table for bof (known: "GB 21256-2025"'),
        ('standard = "GB 21256-2025"\n', "groups[0].standard", "set process too"),
        ('recovered = ["eaf1-meter.nope"]\n', "groups[0].recovered[0]",
         "device eaf1-meter has no point nope"),
        ('process = "mars"\n', "groups[0].process", "blast_furnace"),
    ],
)  # fmt: skip
def test_group_refusals_name_the_key(tmp_path: Path, extra: str, where: str, words: str) -> None:
    report = refusal(tmp_path, GROUPS + extra)
    assert where in report
    assert words in report


def test_a_judged_group_needs_production(tmp_path: Path) -> None:
    report = refusal(tmp_path, '[[groups]]\nname = "bf"\nmembers = ["eaf1-meter.energy"]\n'
                     'process = "blast_furnace"\n')  # fmt: skip
    assert "groups[0].production" in report
    assert "judged in kgce per tonne" in report


def test_a_point_counted_twice_is_refused(tmp_path: Path) -> None:
    report = refusal(tmp_path, GROUPS + """
[[groups]]
name = "plant"
members = ["bf", "eaf1-meter.energy"]
""")  # fmt: skip
    assert "groups[1].members" in report
    assert '"eaf1-meter.energy" is counted twice in group "plant"' in report


def test_benchmark_intervals_must_be_intervals(tmp_path: Path) -> None:
    report = refusal(tmp_path, '[energy]\nbenchmark_intervals = ["1d", "week"]\n')
    assert "energy.benchmark_intervals[1]" in report
    assert '"week" is not an interval' in report


@pytest.mark.parametrize("own", [0.7252, 0.5306])
def test_a_factor_of_the_sites_own_wins_over_the_region(tmp_path: Path, own: float) -> None:
    cfg = load_config(write(tmp_path, f"""
[energy]
grid_region = "north"
[energy.carriers.electricity]
kgco2e_per_unit = {own}
source = "provincial factor 2023"
"""))  # fmt: skip
    electricity = cfg.energy.carriers["electricity"]
    assert (electricity.kgco2e_per_unit, electricity.source) == (own, "provincial factor 2023")


def test_a_grid_region_that_is_not_a_name_is_refused_in_words(tmp_path: Path) -> None:
    report = refusal(tmp_path, '[energy]\ngrid_region = ["east"]\n')
    assert "energy.grid_region" in report
