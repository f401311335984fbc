"""A package face whose names are imported on first use (PEP 562 module `__getattr__`).

Why lazy: a face that imported its modules eagerly would load sqlite-utils, paho or the drivers
into processes that need one name (the daemon's migration child, `ironwatt status`), and make
`python -m package.module` warn that the module was already imported. Each face still lists
its names under `if TYPE_CHECKING:` so mypy sees the real types.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_face"]


def lazy_face(
    package: str, homes: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, whose name N lives in `package.homes[N]`;
    a name found once is stored in the package's `namespace` (its globals())."""

    def getattr_(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{home}"), name)
        namespace[name] = value  # found once: later lookups do not come here
        return value

    def dir_() -> list[str]:
        return sorted(homes)

    return getattr_, dir_
