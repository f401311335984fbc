"""The child that validates ironwatt.toml for the daemon: `python -m gateway.config.worker FILE`.

It loads the file exactly as `ironwatt check` does (gateway.config.load.load_config: pydantic, every
cross-key check, profiles merged) and writes two pickles to stdout: ("config", fields per model)
then the models packed as plain values (gateway.config.records.Packed); or one, ("error", (file,
problems)), for a refused file. The daemon turns it back into records and never imports
pydantic (why: gateway/config/records.py).
"""

from __future__ import annotations

import contextlib
import pickle
import sys
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from gateway.config.load import ConfigError, load_config
from gateway.config.records import Packed

__all__ = ["main", "pack"]

# Values the daemon needs that are methods of a model, computed here once: the field name
# they travel under (a record slot) and how to get them. Every device model has
# `resolved_points()` (a profile merged in, or its own points), whatever its protocol.
_RESOLVED: tuple[tuple[str, Callable[[Any], Any]], ...] = (
    ("_resolved", lambda device: device.resolved_points()),
)


def _derived(cls: type) -> tuple[tuple[str, Callable[[Any], Any]], ...]:
    return _RESOLVED if callable(getattr(cls, "resolved_points", None)) else ()


def _exactly(value: Any) -> Any:
    """A key equal only for the same value of the same type: 1, 1.0 and True differ, and so
    do 0.0 and -0.0 (tuples compare them equal), inside tuples too."""
    if type(value) is float:
        return (float, value.hex())
    if type(value) is tuple:
        return (tuple, tuple(_exactly(v) for v in value))
    return (type(value), value)


def pack(root: BaseModel) -> tuple[dict[str, tuple[str, ...]], Any]:
    """(fields per model class name, the tree): plain values, one Packed per model."""
    fields: dict[str, tuple[str, ...]] = {}
    owners: dict[str, type] = {}
    memo: dict[int, Any] = {}  # what one object in the models stays one object on the wire
    # Equal models travel as one object too: 200 meters of one profile (or one copied block
    # of points) share one record per point definition in the daemon, not 200.
    same: dict[tuple[Any, ...], Packed] = {}

    def walk(value: Any) -> Any:
        if isinstance(value, BaseModel):
            seen = memo.get(id(value))
            if seen is not None:
                return seen
            cls = type(value)
            name = cls.__name__
            if owners.setdefault(name, cls) is not cls:
                raise TypeError(f"two config models are both named {name}")
            derived = _derived(cls)
            names = fields.setdefault(name, (*cls.model_fields, *(n for n, _ in derived)))
            values = [getattr(value, n) for n in cls.model_fields]
            values += [get(value) for _, get in derived]
            out = Packed(name, tuple(walk(v) for v in values))
            assert len(out.values) == len(names)
            with contextlib.suppress(TypeError):  # a dict among the values: kept apart
                out = same.setdefault((name, *map(_exactly, out.values)), out)
            memo[id(value)] = out
            return out
        if isinstance(value, tuple | list):
            return type(value)(walk(v) for v in value)
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if type(value) is str:
            return sys.intern(value)  # one object: pickle sends each distinct string once
        return value

    tree = walk(root)
    return fields, tree


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m gateway.config.worker FILE", file=sys.stderr)
        return 2
    out = sys.stdout.buffer
    try:
        fields, tree = pack(load_config(args[0]))
    except ConfigError as exc:
        problems = [(p.line, p.path, p.message) for p in exc.problems]
        out.write(pickle.dumps(("error", (exc.file, problems)), pickle.HIGHEST_PROTOCOL))
    else:
        # Two pickles: the reader needs the fields to build records as the tree streams in.
        out.write(pickle.dumps(("config", fields), pickle.HIGHEST_PROTOCOL))
        out.write(pickle.dumps(tree, pickle.HIGHEST_PROTOCOL))
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
