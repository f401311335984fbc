"""A reload, decided before it is done: (running config, new config) → a plan, a pure function.

`plan_reload` says which device units stop, start or take their new devices in place, which
sections need a restart, and what the `config_reloaded` event reports; it runs no loop and
touches no driver, so it is tested on configs alone. `validate` loads the new file in the
config child; the daemon (gateway/daemon/lifecycle.py) carries the plan out.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config.records import load_config_isolated
from gateway.daemon.devices import DeviceUnit, plan_units
from gateway.daemon.logs import TRANSITION
from gateway.daemon.reload_control import RELOAD_WORKER_TIMEOUT_S, ReloadOutcome
from gateway.errors import ConfigError, ConfigWorkerError

if TYPE_CHECKING:
    from gateway.config.model import Config

__all__ = ["RESTART_KEYS", "ReloadPlan", "diff_devices", "plan_reload", "point_keys", "validate"]

log = logging.getLogger("ironwatt.runtime")

# Sections a reload cannot apply in place: they need a restart (the new values are reported).
RESTART_KEYS = ("gateway", "mqtt", "buffer", "http", "energy", "tariff")


def diff_devices(old: Config, new: Config) -> tuple[list[str], list[str], list[str]]:
    """(added, removed, changed) device names between two configs."""
    before = {d.name: d for d in old.devices}
    after = {d.name: d for d in new.devices}
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(n for n in set(before) & set(after) if before[n] != after[n])
    return added, removed, changed


def point_keys(cfg: Config) -> list[str]:
    """Every enabled point's key ("device.point"), in config order."""
    return [
        f"{d.name}.{p.name}"
        for d in cfg.devices
        if getattr(d, "enabled", True)
        for p in d.resolved_points()
    ]


@dataclass(frozen=True)
class ReloadPlan:
    """What a reload from one config to another does."""

    added: list[str]  # device names
    removed: list[str]
    changed: list[str]
    restart_needed: list[str]  # sections whose changes wait for a restart
    groups_changed: bool
    stop: list[str]  # unit keys: units the new config no longer has
    start: list[str]  # unit keys: units only the new config has
    # Unit keys whose devices changed: taken in place where the driver can (a Modbus link
    # keeps its connection and the others on the line keep polling), else stopped and started.
    retune: list[str]
    units: dict[str, DeviceUnit] = field(repr=False)  # the new config's units, by key

    @property
    def note(self) -> str:
        """The one-line summary the log, the event and `ironwatt reload` show."""
        return (
            f"added {self.added or 'none'}, removed {self.removed or 'none'}, "
            f"changed {self.changed or 'none'}"
        )

    @property
    def warnings(self) -> tuple[str, ...]:
        if not self.restart_needed:
            return ()
        return (f"changes to [{'], ['.join(self.restart_needed)}] take effect at the next restart",)

    def event(self, fresh: list[str], retuned: list[str]) -> dict[str, Any]:
        """The `config_reloaded` event (mqtt.md), given what the energy stage did with points."""
        body: dict[str, Any] = {
            "type": "config_reloaded", "reason": self.note, "added": self.added,
            "removed": self.removed, "changed": self.changed,
            "groups_changed": self.groups_changed,
        }  # fmt: skip
        if fresh:
            body["fresh_points"] = fresh
            body["note"] = (
                "points whose source changed start fresh: their open windows and counter "
                "baselines were dropped"
            )
        if retuned:
            body["retuned_points"] = retuned
        if self.restart_needed:
            body["restart_needed"] = self.restart_needed
        return body


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """The plan for going from `old` to `new` (both validated configs)."""
    added, removed, changed = diff_devices(old, new)
    old_units, new_units = plan_units(old.devices), plan_units(new.devices)
    return ReloadPlan(
        added=added,
        removed=removed,
        changed=changed,
        restart_needed=[k for k in RESTART_KEYS if getattr(old, k) != getattr(new, k)],
        groups_changed=old.groups != new.groups,
        stop=[k for k in old_units if k not in new_units],
        start=[k for k in new_units if k not in old_units],
        retune=[k for k, u in new_units.items() if k in old_units and old_units[k] != u],
        units=new_units,
    )


async def validate(path: Path) -> Config | ReloadOutcome:
    """The new config, validated in the config child off the loop, or the refusal.

    The worker gets less time than at the start: the verdict must reach `ironwatt reload`
    (ExecReload=) before it gives up; a worker over that time is a refused reload.
    """
    loop = asyncio.get_running_loop()
    check = partial(load_config_isolated, path, timeout=RELOAD_WORKER_TIMEOUT_S)
    try:
        return await loop.run_in_executor(None, check)
    except ConfigError as exc:
        report = exc.report()
        log.error("config reload refused, the running config stays:\n%s", report, extra=TRANSITION)
        first = report.splitlines()[0]
        more = len(exc.problems) - 1
        summary = first + (f" (and {more} more: journalctl -u ironwatt)" if more > 0 else "")
        return ReloadOutcome(False, summary, report)
    except (OSError, ConfigWorkerError) as exc:
        log.error("config reload refused (%s), the running config stays", exc, extra=TRANSITION)
        return ReloadOutcome(False, str(exc))
