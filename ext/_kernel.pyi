"""Type stub of the compiled kernel: the same API as its pure twin, ext/_kernel_py.py."""

from ext._kernel_py import BLOCK_COLUMNS as BLOCK_COLUMNS
from ext._kernel_py import COUNTER as COUNTER
from ext._kernel_py import GAUGE as GAUGE
from ext._kernel_py import HOLD as HOLD
from ext._kernel_py import KERNEL_SNAPSHOT_VERSION as KERNEL_SNAPSHOT_VERSION
from ext._kernel_py import KEY_COLUMNS as KEY_COLUMNS
from ext._kernel_py import MAX_KEY_BYTES as MAX_KEY_BYTES
from ext._kernel_py import MAX_PERIODS as MAX_PERIODS
from ext._kernel_py import MAX_REVISABLE as MAX_REVISABLE
from ext._kernel_py import RATE as RATE
from ext._kernel_py import TRAPEZOID as TRAPEZOID
from ext._kernel_py import WINDOW_COLUMNS as WINDOW_COLUMNS
from ext._kernel_py import Kernel as Kernel
from ext._kernel_py import build_grid as build_grid
