"""Short-lived child processes of the daemon: one-off work whose imports must not stay resident.

The daemon validates its config (gateway.config.worker) and migrates a buffer database
(gateway.outbox.schema) in children: pydantic and sqlite-utils would otherwise stay in its memory
for as long as it runs, which on a Modbus-only gateway is a third of its 60 MB budget.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["python_child_env"]


def python_child_env() -> dict[str, str]:
    """The environment for `sys.executable -m ...`: the child imports exactly what this process
    imports (a source checkout, a venv, an installed package)."""
    env = dict(os.environ)
    paths = [p for p in sys.path if p and Path(p).is_dir()]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env
