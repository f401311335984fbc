"""The Modbus TCP servers the benches poll: the libmodbus C server (bench/modbus_server.c, built
here) and, where libmodbus is missing, pymodbus plants in a child process.

Both serve float32 values (ABCD) from register 0 on, and both take writes (function 16): a
bench changes the values it serves by writing them, so what the gateway reads moves.
Run as `python -m bench.support.servers pymodbus PORT...` it is that pymodbus child.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["C_MAX_PORTS", "ROOT", "build_c_server", "launch_c_server", "launch_pymodbus_plant"]

ROOT = Path(__file__).resolve().parents[2]
C_MAX_PORTS = 64  # MAX_PORTS of modbus_server.c: ports one C server process listens on


def build_c_server(work: Path, *, install: bool = True) -> Path | None:
    """Compile bench/modbus_server.c against libmodbus; None when that is not possible here.

    With `install`, libmodbus-dev is installed with apt-get when missing and allowed (root).
    """
    if shutil.which("gcc") is None:
        return None
    header = Path("/usr/include/modbus/modbus.h")
    if install and not header.exists() and os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing libmodbus-dev with apt-get ...", file=sys.stderr)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "libmodbus-dev"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=180, check=False,
        )  # fmt: skip
    if not header.exists():
        return None
    binary = work / "modbus_server"
    result = subprocess.run(
        ["gcc", "-O2", "-o", str(binary), str(ROOT / "bench" / "modbus_server.c"),
         "-I/usr/include/modbus", "-lmodbus"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        print(f"C server did not build:\n{result.stderr}", file=sys.stderr)
        return None
    return binary


def _await_ready(proc: subprocess.Popen[str], what: str) -> None:
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        proc.wait()
        raise SystemExit(f"the {what} did not start")


def launch_c_server(binary: Path, ports: Sequence[int]) -> subprocess.Popen[str]:
    """One C server process listening on every port (at most C_MAX_PORTS), once it is ready.

    Every port and unit id of one process answers from one register map.
    """
    if not 0 < len(ports) <= C_MAX_PORTS:
        raise ValueError(f"one C server listens on 1..{C_MAX_PORTS} ports, not {len(ports)}")
    proc = subprocess.Popen([str(binary), *map(str, ports)], stdout=subprocess.PIPE, text=True)
    _await_ready(proc, "C Modbus server")
    return proc


def launch_pymodbus_plant(ports: Sequence[int], registers: int = 1000) -> subprocess.Popen[str]:
    """A Python process serving `registers` holding and input registers of float32 values as
    unit 1 on every port, all from one register map (as the C server does), once it is ready."""
    cmd = [sys.executable, "-m", "bench.support.servers", "pymodbus", str(registers)]
    proc = subprocess.Popen([*cmd, *map(str, ports)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    _await_ready(proc, "pymodbus plant")
    return proc


async def _serve_pymodbus(registers: int, ports: list[int]) -> None:
    from drivers.modbus.decode import encode_value
    from gateway.sim.modbus_meters import ModbusPlant, SimMeter

    # One meter behind every port: a write through any port is read through all.
    meter = SimMeter(unit=1)
    words = [w for a in range(0, registers, 2) for w in encode_value(200.0 + a % 50, "float32")]
    meter.set_registers("holding", 0, words[:registers])
    meter.set_registers("input", 0, words[:registers])
    plants = []
    for port in ports:
        plant = ModbusPlant([meter], port=port)
        await plant.start()
        plants.append(plant)
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for plant in plants:
        await plant.stop()


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[1] != "pymodbus":
        raise SystemExit("usage: python -m bench.support.servers pymodbus REGISTERS PORT...")
    import logging

    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_serve_pymodbus(int(sys.argv[2]), [int(p) for p in sys.argv[3:]]))
