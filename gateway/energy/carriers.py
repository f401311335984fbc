"""Default energy carriers: their accounting unit, standard-coal (kgce) and CO2e factors, sources.

Every factor is overridable per carrier in `[energy.carriers.NAME]`. Sources and confidence
follow ../shared/data/energy-rules.md ([V] verified, [S] secondary, [D] derived here).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_CARRIERS", "GRID_FACTORS", "CarrierDefaults"]

_GRID_2023 = "China 2023 grid average, MEE/NBS, reported 2026-01 (光明日报, 中国电力报) [V]"

# energy.grid_region -> (kg CO2 per kWh, source): ../shared/data/energy-rules.md §2.2.
GRID_FACTORS: dict[str, tuple[float, str]] = {
    "national": (0.5306, f"national {_GRID_2023}"),
    "north": (0.6361, f"North China (华北) {_GRID_2023}"),
    "northeast": (0.5122, f"Northeast (东北) {_GRID_2023}"),
    "east": (0.5500, f"East China (华东) {_GRID_2023}"),
    "central": (0.5271, f"Central China (华中) {_GRID_2023}"),
    "northwest": (0.5543, f"Northwest (西北) {_GRID_2023}"),
    "south": (0.4042, f"South (南方) {_GRID_2023}"),
    "southwest": (0.2472, f"Southwest (西南) {_GRID_2023}"),
}


@dataclass(frozen=True, slots=True)
class CarrierDefaults:
    unit: str
    kgce_per_unit: float
    kgco2e_per_unit: float
    method: str
    source: str


DEFAULT_CARRIERS: dict[str, CarrierDefaults] = {
    "electricity": CarrierDefaults(
        "kWh",
        0.1229,
        0.5306,
        "equivalent",
        "kgce: GB/T 2589 equivalent value (3600 kJ/kWh) [V]; CO2: China national grid "
        "average 2023, 0.5306 kg/kWh (MEE/NBS) [V]",
    ),
    "natural_gas": CarrierDefaults(
        "m3",
        1.2143,
        2.165,
        "equivalent",
        "kgce: GB/T 2589 statistical table 12.1430 t/1e4 m3 [S]; CO2: national guideline NCV "
        "389.31 GJ/1e4 Nm3 x 15.32 tC/TJ x 99% x 44/12 [S, D]",
    ),
    "coke_oven_gas": CarrierDefaults(
        "m3",
        0.6143,
        0.771,
        "equivalent",
        "kgce: GB/T 2589 table 6.1430 t/1e4 m3 [S]; CO2: IPCC 44,400 kg/TJ x 17.35 MJ/m3 [V, D]",
    ),
    "blast_furnace_gas": CarrierDefaults(
        "m3",
        0.1286,
        0.978,
        "equivalent",
        "kgce: GB/T 2589 table 1.2860 t/1e4 m3 [S]; CO2: IPCC 260,000 kg/TJ x 3.763 MJ/m3 [V, D]",
    ),
    "converter_gas": CarrierDefaults(
        "m3",
        0.2730,
        1.456,
        "equivalent",
        "no GB/T 2589 value: LHV / 29.307 MJ per kgce with a typical LDG LHV of 8.0 MJ/m3 [U, D]; "
        "CO2: IPCC oxygen-steel-furnace gas 182,000 kg/TJ x 8.0 MJ/m3 [V, D]. Set the measured "
        "LHV's factors in [energy.carriers.converter_gas]",
    ),
    "steam": CarrierDefaults(
        "t",
        128.6,
        0.0,
        "equivalent",
        "kgce: low-pressure steam 128.6 kgce/t citing GB/T 2589-2020 [S]; CO2 depends on the "
        "steam's source: set kgco2e_per_unit for purchased steam",
    ),
    "heat": CarrierDefaults(
        "GJ",
        34.12,
        0.0,
        "equivalent",
        "kgce: 1/29.3076 MJ [D]; CO2 depends on the source: set kgco2e_per_unit",
    ),
    "compressed_air": CarrierDefaults(
        "m3",
        0.0400,
        0.0,
        "equivalent",
        "kgce: GB/T 2589 Annex B energy-carrying medium [S]",
    ),
    "oxygen": CarrierDefaults(
        "m3",
        0.4000,
        0.0,
        "equivalent",
        "kgce: GB/T 2589 Annex B energy-carrying medium [S]",
    ),
    "nitrogen": CarrierDefaults(
        "m3",
        0.0169,
        0.0,
        "equivalent",
        "kgce: T/CISA 416-2024 (steel) [S]",
    ),
    "water": CarrierDefaults(
        "t",
        0.2571,
        0.0,
        "equivalent",
        "kgce: GB/T 2589 Annex B fresh water [S]",
    ),
    "coke": CarrierDefaults(
        "t",
        971.4,
        3042.5,
        "equivalent",
        "kgce: GB/T 2589 0.9714 kgce/kg [S]; CO2: IPCC gas coke 107,000 kg/TJ x 28.435 GJ/t [V, D]",
    ),
    "coal": CarrierDefaults(
        "t",
        714.3,
        1978.0,
        "equivalent",
        "kgce: raw coal 0.7143 kgce/kg [S]; CO2: IPCC bituminous 94,600 kg/TJ x 20.908 GJ/t [V, D]",
    ),
    "diesel": CarrierDefaults(
        "t",
        1457.1,
        3160.0,
        "equivalent",
        "kgce: 1.4571 kgce/kg [S]; CO2: IPCC 74,100 kg/TJ x 42.652 GJ/t [V, D]",
    ),
    # Not energy: production quantities are the denominators of intensity.
    "product": CarrierDefaults("t", 0.0, 0.0, "none", "production quantity, not an energy carrier"),
}
