"""The aggregation kernel: a Cython module and its pure-Python twin, one API, one behaviour.

`IRONWATT_NO_EXTENSIONS=1` forces the twin; the twin is also used when the compiled module
cannot be imported (no compiler at install time). `IMPLEMENTATION` says which one is live.
"""

from __future__ import annotations

import os

__all__ = ["IMPLEMENTATION", "kernel"]

_force_pure = os.environ.get("IRONWATT_NO_EXTENSIONS", "") not in ("", "0")

if _force_pure:
    from ext import _kernel_py as kernel

    IMPLEMENTATION = "pure"
else:
    try:
        from ext import _kernel as kernel  # type: ignore[no-redef]

        IMPLEMENTATION = "compiled"
    except ImportError:
        from ext import _kernel_py as kernel

        IMPLEMENTATION = "pure (compiled kernel not built)"
