"""Memory at midnight: the energy stage and the outbox when every interval closes at once.

200 meters x 20 points (4 counters, 6 rates, 10 gauges), windows 1m 15m 1h 1d 1mo, three shifts
and ten groups, a tariff; simulated time fed as fast as the kernel takes it (samples every 1 s,
stamped in simulated time), the windows stored in a real outbox (SQLite) as the daemon stores
them. Each case runs in a fresh interpreter and reports its peak RSS (VmHWM) from /proc:

- `midnight`: 23:50 -> 00:10 local on the last day of a month, so 1m, 15m, 1h, 1d and 1mo
  all close at 00:00; the peak over the span against the RSS at 23:59 (steady state): the
  ratio is what the midnight close adds.
- `restart`: a snapshot at 06:10, the gateway back at 09:00 with every meter answering, in
  the daemon's order: the restored stage holds the 2 h 50 min of downtime until devices report
  (EnergyStage.hold_catch_up), and the first pass folds the readings in one device at a time,
  each device's downtime windows (the counter's energy spread over them) out before the next,
  against the RSS just before. Closed at once instead, every window would have been published
  as a gap, kept whole to be revised and published again: 867 MB peak, measured.

Windows go to the outbox a chunk at a time as they are encoded, as the daemon's pipeline hands
them over (IW_STREAM=0: all at the end of the close, as before). This process has no drivers,
uplink or HTTP (the soak bench measures those); add its increment
over steady state to the soak's RSS for the daemon's.

    python bench/midnight.py            # both cases, 3 runs each (medians)
    python bench/midnight.py --runs 1

Last line: RESULT midnight_peak_mb=... midnight_over_steady=... restart_peak_mb=...
restart_over_before=...
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METERS = 200
STREAM = os.environ.get("IW_STREAM", "1") == "1"
GROUPS = 10
TZ = ZoneInfo("Asia/Shanghai")


def config_text(data: Path) -> str:
    text = f"""
[gateway]
id = "gw1"
site = "plant1"
timezone = "{TZ.key}"
data_dir = "{data}"

[mqtt]
url = "mqtt://127.0.0.1:1883"

[energy]
intervals = ["1m", "15m", "1h", "1d", "1mo"]
shifts = [{{ name = "night", start = "23:00" }}, {{ name = "day", start = "07:00" }},
          {{ name = "swing", start = "15:00" }}]

[tariff]
periods = [
  {{ name = "peak", price = 1.0, hours = ["10:00-12:00", "15:00-21:00"] }},
  {{ name = "flat", price = 0.625, hours = ["07:00-10:00", "12:00-15:00", "21:00-23:00"] }},
  {{ name = "valley", price = 0.25, hours = ["23:00-07:00"] }},
]
"""
    for m in range(METERS):
        text += f'\n[[devices]]\nname = "m{m}"\ndriver = "modbus"\nhost = "127.0.0.1"\n'
        for p in range(20):
            kind = "counter" if p < 4 else "rate" if p < 10 else "gauge"
            unit = {"counter": "kWh", "rate": "kW", "gauge": "V"}[kind]
            carrier = '\ncarrier = "electricity"' if kind != "gauge" else ""
            text += (
                f'[[devices.points]]\nname = "p{p}"\naddress = {2 * p}\ntype = "float32"\n'
                f'kind = "{kind}"\nunit = "{unit}"{carrier}\n'
            )
    per = METERS // GROUPS
    for g in range(GROUPS):
        members = ", ".join(f'"m{m}.p0"' for m in range(g * per, (g + 1) * per))
        text += f'\n[[groups]]\nname = "g{g}"\nmembers = [{members}]\n'
    return text


def local(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=TZ).timestamp()


def hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def reset_hwm() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def child(case: str) -> dict[str, float]:
    from drivers.samples import SampleBatch
    from gateway.config.load import validate_document
    from gateway.daemon.energy_stage import EnergyStage
    from gateway.outbox import Outbox, OutboxSettings

    work = Path(tempfile.mkdtemp(prefix="iw-midnight-"))
    text = config_text(work)
    cfg = validate_document(tomllib.loads(text), "bench.toml", text)
    outbox = Outbox(OutboxSettings(path=work / "outbox.db", gw_id="gw1", site="plant1",
                                   durability="normal", max_size_bytes=4 << 30))  # fmt: skip

    def batch_at(stage: EnergyStage, t: float) -> SampleBatch:
        batch = SampleBatch()
        s = t - START
        for i, pid in enumerate(
            stage.index.id(f"m{m}.p{p}") for m in range(METERS) for p in range(20)
        ):
            p = i % 20
            batch.append(pid, t, 1000.0 + s / 16 if p < 4 else 100.0 + p if p < 10 else 230.0)
        return batch

    def feed(stage: EnergyStage, t0: float, t1: float, on_steady: float | None = None) -> float:
        steady = 0.0
        t = t0
        while t <= t1:
            stage.agg.ingest(batch_at(stage, t), t)
            store(stage.close_due(t, flush=store if STREAM else None))
            if on_steady is not None and abs(t - on_steady) < 0.5:
                steady = rss_mb()
                reset_hwm()
            t += 1.0
        return steady

    def store(messages: list) -> bool:  # type: ignore[type-arg]
        for i in range(0, len(messages), 500):
            outbox.submit(messages[i : i + 500]).result()
        return True

    out: dict[str, float] = {}
    if case == "midnight":
        t0 = START = local("2026-11-30T23:50:00")
        stage = EnergyStage(cfg, t0)
        out["steady_mb"] = feed(stage, t0, local("2026-12-01T00:10:00"),
                                on_steady=local("2026-11-30T23:59:00"))  # fmt: skip
        out["peak_mb"] = hwm_mb()
    else:
        t0 = START = local("2026-12-02T05:59:50")
        stage = EnergyStage(cfg, t0)
        feed(stage, t0, local("2026-12-02T06:10:00"))
        blob = b"".join(stage.snapshot_parts())
        back = local("2026-12-02T09:00:00")
        later = EnergyStage(cfg, back)
        later.restore(blob)
        del stage
        first = batch_at(later, back)
        out["before_mb"] = rss_mb()
        reset_hwm()
        started = time.perf_counter()
        # The daemon's order: the restored stage holds the downtime until devices report; the
        # first pass folds each device's readings in and closes its downtime before the next.
        later.hold_catch_up(back)
        store(later.take_held(first, [], back, flush=store if STREAM else None))
        store(later.close_due(back + 10.0, flush=store if STREAM else None))
        out["seconds"] = time.perf_counter() - started
        out["peak_mb"] = hwm_mb()
        out["windows"] = float(later.windows + later.group_windows)
    outbox.close()
    return out


def run(case: str) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", case],
        capture_output=True, text=True, check=True, timeout=1800,
    )  # fmt: skip
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", metavar="CASE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    mid = [run("midnight") for _ in range(args.runs)]
    back = [run("restart") for _ in range(args.runs)]
    med = statistics.median
    peak, steady = med(r["peak_mb"] for r in mid), med(r["steady_mb"] for r in mid)
    r_peak, r_before = med(r["peak_mb"] for r in back), med(r["before_mb"] for r in back)
    print(f"midnight: steady {steady:.1f} MB at 23:59, peak {peak:.1f} MB over 23:59-00:10 "
          f"(+{peak - steady:.1f} MB for the close of 1m 15m 1h 1d 1mo at once)")  # fmt: skip
    print(f"restart after 2h50m off: {med(r['windows'] for r in back):.0f} windows in one pass "
          f"of {med(r['seconds'] for r in back):.1f} s, peak {r_peak:.1f} MB "
          f"(+{r_peak - r_before:.1f} MB)")  # fmt: skip
    print(
        f"RESULT midnight_peak_mb={peak:.1f} midnight_steady_mb={steady:.1f} "
        f"midnight_over_steady={peak / steady:.3f} restart_peak_mb={r_peak:.1f} "
        f"restart_over_before={r_peak / r_before:.3f}"
    )


if __name__ == "__main__":
    main()
