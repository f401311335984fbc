"""A syscall census of a process's threads from outside, for a while.

`perf trace -s` (kernel tracepoints: the traced threads are not stopped) when it works here,
else `strace -c` per thread (ptrace: each syscall stops the thread twice, so it slows what it
counts). Either way a bench takes the census after its own measurements, never during them.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping

__all__ = ["census"]

_THREAD = re.compile(r"^\s*(.+?) \((\d+)\), \d+ events")


def census(
    pid: int, tids: Mapping[str, int], seconds: float
) -> tuple[str, dict[str, dict[str, int]]] | None:
    """(tool, calls per syscall per named thread) over `seconds`; None when neither tool works.

    Threads are named by `tids` (name -> tid); perf reports the others under their comm.
    """
    got = _perf(pid, tids, seconds)
    if got:
        return "perf trace -s", got
    got = _strace(tids, seconds)
    return ("strace -c", got) if got else None


def _perf(pid: int, tids: Mapping[str, int], seconds: float) -> dict[str, dict[str, int]]:
    exe = shutil.which("perf")
    if exe is None:
        return {}
    cmd = [exe, "trace", "-s", "-p", str(pid), "--", "sleep", f"{seconds:g}"]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    names = {tid: name for name, tid in tids.items()}
    out: dict[str, dict[str, int]] = {}
    current: dict[str, int] | None = None
    for line in (run.stderr + run.stdout).splitlines():
        m = _THREAD.match(line)
        if m:
            name = names.get(int(m.group(2)), m.group(1))
            current = out.setdefault(name, {})
            continue
        parts = line.split()
        if current is not None and len(parts) >= 3 and parts[1].isdigit():
            current[parts[0]] = current.get(parts[0], 0) + int(parts[1])
    return {k: v for k, v in out.items() if v}


def _strace(tids: Mapping[str, int], seconds: float) -> dict[str, dict[str, int]]:
    exe = shutil.which("strace")
    if exe is None:
        return {}
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
    return {k: v for k, v in out.items() if v}
