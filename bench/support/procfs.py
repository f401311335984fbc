"""What a bench reads about a process from outside it: CPU time, resident memory, threads.

All from /proc (Linux), so the measured process runs exactly as it would without the bench.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.request
from pathlib import Path
from typing import Any

__all__ = [
    "all_cpu",
    "descendants",
    "proc_cpu",
    "proc_io",
    "proc_rss_mb",
    "reset_peak",
    "status_doc",
    "thread_cpu",
    "thread_stats",
    "tree_cpu",
]

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(path: str) -> list[str]:
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    return Path(path).read_text().rsplit(")", 1)[1].split()


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of the process, all its threads."""
    fields = _stat_fields(f"/proc/{pid}/stat")
    return (int(fields[11]) + int(fields[12])) / _TICK


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tasks:
        try:
            kids += [int(k) for k in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except OSError:
            continue
    return kids


def tree_cpu(pid: int) -> float:
    """CPU seconds of the process and of every descendant: the live ones as they run, the
    ones that ended (and were waited for) through cutime/cstime."""
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            fields = _stat_fields(f"/proc/{p}/stat")
        except OSError:
            continue  # ended meanwhile: its parent's cutime has it once reaped
        total += sum(int(fields[i]) for i in (11, 12, 13, 14)) / _TICK
        todo += _children(p)
    return total


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (`comm`; threads of one name are summed)."""
    out: dict[str, float] = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            fields = _stat_fields(f"/proc/{pid}/task/{tid}/stat")
        except OSError:
            continue
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / _TICK
    return out


def thread_stats(pid: int) -> dict[str, tuple[int, float, int, int]]:
    """Per thread name: (tid, CPU seconds, voluntary and involuntary context switches).

    A voluntary switch is the thread going to sleep (a wait, a blocking syscall): their rate is
    how often it wakes up. Threads of one name are summed (the tid is the first one's).
    """
    out: dict[str, tuple[int, float, int, int]] = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        base = f"/proc/{pid}/task/{tid}"
        try:
            name = Path(f"{base}/comm").read_text().strip()
            fields = _stat_fields(f"{base}/stat")
            status = Path(f"{base}/status").read_text()
        except OSError:
            continue
        switches = dict(
            line.split(":", 1) for line in status.splitlines() if "ctxt_switches" in line
        )
        vol = int(switches.get("voluntary_ctxt_switches", "0"))
        invol = int(switches.get("nonvoluntary_ctxt_switches", "0"))
        cpu = (int(fields[11]) + int(fields[12])) / _TICK
        t0, c0, v0, i0 = out.get(name, (int(tid), 0.0, 0, 0))
        out[name] = (t0, c0 + cpu, v0 + vol, i0 + invol)
    return out


def proc_io(pid: int) -> dict[str, int]:
    """/proc/<pid>/io: syscr, syscw (read/write-like syscalls), read_bytes, write_bytes (to
    storage), cancelled_write_bytes..."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            key, _, value = line.partition(":")
            out[key.strip()] = int(value)
    return out


def proc_rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident MB now (VmRSS) or at the most since the start (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM (Linux clear_refs 5), so it then measures only what follows."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def status_doc(http_port: int, timeout: float = 5.0) -> dict[str, Any]:
    """The gateway's /status document (its `[http] listen` on loopback)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/status", timeout=timeout) as r:
        doc: dict[str, Any] = json.load(r)
        return doc


def all_cpu() -> dict[int, tuple[str, float]]:
    """(command line, CPU seconds) of every process on the machine, by pid."""
    out: dict[int, tuple[str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _stat_fields(f"/proc/{entry}/stat")
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
            cmd = raw.replace(b"\0", b" ").decode(errors="replace").strip()
            if not cmd:
                cmd = "[" + Path(f"/proc/{entry}/comm").read_text().strip() + "]"
        except OSError:
            continue
        out[int(entry)] = (cmd, (int(fields[11]) + int(fields[12])) / _TICK)
    return out


def descendants(pid: int) -> set[int]:
    """The process and every live descendant."""
    seen: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        todo += _children(p)
    return seen
