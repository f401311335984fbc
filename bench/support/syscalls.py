"""A syscall census of one thread from outside: `strace -c -p TID` for a while.

strace slows what it traces (each syscall stops the thread twice), so a bench takes the census
after its own measurements, never during them; the counts, not the times, are the point.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Mapping

__all__ = ["census"]


def census(tids: Mapping[str, int], seconds: float) -> dict[str, dict[str, int]] | None:
    """Calls per syscall for each named thread over `seconds` (all traced at once); None when
    strace is missing or not allowed."""
    exe = shutil.which("strace")
    if exe is None:
        return None
    procs = {}
    for name, tid in tids.items():
        cmd = [exe, "-c", "-q", "-p", str(tid)]
        procs[name] = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
    time.sleep(seconds)
    out: dict[str, dict[str, int]] = {}
    for name, proc in procs.items():
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        calls: dict[str, int] = {}
        for line in err.splitlines():
            parts = line.split()
            # % time, seconds, usecs/call, calls, [errors], syscall
            if len(parts) in (5, 6) and parts[3].isdigit() and parts[-1] != "total":
                calls[parts[-1]] = int(parts[3])
        out[name] = calls
    return out if any(out.values()) else None
