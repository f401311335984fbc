"""Type stub of the compiled kernel: the same API as its pure twin, ext/_kernel_py.py."""

from ext._kernel_py import BLOCK_COLUMNS as BLOCK_COLUMNS
from ext._kernel_py import COUNTER as COUNTER
from ext._kernel_py import GAUGE as GAUGE
from ext._kernel_py import HOLD as HOLD
from ext._kernel_py import RATE as RATE
from ext._kernel_py import SNAPSHOT_VERSION as SNAPSHOT_VERSION
from ext._kernel_py import TRAPEZOID as TRAPEZOID
from ext._kernel_py import WINDOW_COLUMNS as WINDOW_COLUMNS
from ext._kernel_py import Kernel as Kernel
from ext._kernel_py import build_grid as build_grid
