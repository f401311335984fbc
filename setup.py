"""Builds the Cython kernel(s) in ext/; everything else is declared in pyproject.toml.

Every ext/*.pyx becomes an extension module. -ffp-contract=off keeps C from fusing
multiply-adds that Python does not, so the compiled kernel and its pure twin agree bit for bit.
"""

from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent
sources = sorted(p.relative_to(HERE).as_posix() for p in (HERE / "ext").glob("*.pyx"))
extensions = [
    Extension(
        "ext." + Path(src).stem,
        [src],
        extra_compile_args=["-O3", "-ffp-contract=off", "-fno-fast-math"],
    )
    for src in sources
]

compiled = cythonize(
    extensions,
    compiler_directives={
        "language_level": "3",
        "boundscheck": False,
        "wraparound": False,
        "cdivision": True,
        "initializedcheck": False,
        # Cython 3's default, stated: methods are introspectable (inspect.signature), which
        # tests/kernel/test_twin_api.py relies on to compare the twins; no cost per call.
        "binding": True,
    },
)
for extension in compiled:
    # Without a C compiler the install goes on and the pure twin runs (ext/__init__.py). Set
    # on cythonize's result: the extensions it returns are new objects without the flag.
    extension.optional = True

setup(ext_modules=compiled)
