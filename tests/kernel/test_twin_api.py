"""The compiled kernel and its pure twin show one public face: the same names, values, signatures.

A public name is one without a leading underscore that the module defines or lists in `__all__`
(helpers it imports to use, such as `typing.Any` or `zlib.crc32`, are not part of its face).
A name added to one twin only fails here, as does a parameter renamed, added or defaulted
differently in one of them.
"""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.kernel.conftest import load

STUB = Path(__file__).resolve().parents[2] / "ext" / "_kernel.pyi"


@pytest.fixture
def twins() -> tuple[ModuleType, ModuleType]:
    """(compiled, pure); skipped under IRONWATT_NO_EXTENSIONS=1, where there is one kernel."""
    return load("compiled"), load("pure")


def public(mod: ModuleType) -> dict[str, Any]:
    """The module's public names and what they are bound to."""
    out = {}
    for name in dir(mod):
        if name.startswith("_"):
            continue
        value = getattr(mod, name)
        if inspect.ismodule(value):
            continue
        # Constants (ints, tuples, bytes) have no __module__; functions and classes say where
        # they were defined, so an imported helper is told apart from the module's own names.
        origin = getattr(value, "__module__", None)
        if name in mod.__all__ or origin is None or origin == mod.__name__:
            out[name] = value
    return out


def differences(a: ModuleType, b: ModuleType) -> list[str]:
    """What one module's public face has that the other's lacks, named."""
    pa, pb = public(a), public(b)
    return [f"{n} only in {a.__name__}" for n in sorted(pa.keys() - pb.keys())] + [
        f"{n} only in {b.__name__}" for n in sorted(pb.keys() - pa.keys())
    ]


def shape(sig: inspect.Signature) -> list[tuple[str, Any, Any]]:
    """A signature without annotations (the compiled one has none): name, kind, default."""
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


def members(cls: type) -> dict[str, Any]:
    return {n: inspect.getattr_static(cls, n) for n in dir(cls) if not n.startswith("_")}


def test_both_twins_have_the_same_public_names(twins: tuple[ModuleType, ModuleType]) -> None:
    compiled, pure = twins
    assert differences(compiled, pure) == []
    assert sorted(compiled.__all__) == sorted(pure.__all__)
    for mod in twins:
        assert sorted(public(mod)) == sorted(mod.__all__), mod.__name__


def test_a_name_added_to_one_twin_is_caught(
    twins: tuple[ModuleType, ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled, pure = twins

    def extra(x: int) -> int:
        return x

    extra.__module__ = pure.__name__
    monkeypatch.setattr(pure, "EXTRA_LIMIT", 7, raising=False)
    monkeypatch.setattr(pure, "extra", extra, raising=False)
    assert differences(compiled, pure) == [
        f"EXTRA_LIMIT only in {pure.__name__}",
        f"extra only in {pure.__name__}",
    ]


def test_constants_are_equal(twins: tuple[ModuleType, ModuleType]) -> None:
    compiled, pure = twins
    for name, value in public(pure).items():
        if not callable(value):
            assert getattr(compiled, name) == value, name
            assert type(getattr(compiled, name)) is type(value), name


def test_functions_have_the_same_signatures(twins: tuple[ModuleType, ModuleType]) -> None:
    compiled, pure = twins
    functions = [n for n, v in public(pure).items() if callable(v) and not inspect.isclass(v)]
    assert functions  # build_grid at least
    for name in functions:
        got = inspect.signature(getattr(compiled, name))
        assert shape(got) == shape(inspect.signature(getattr(pure, name))), name


def test_classes_have_the_same_members_and_signatures(
    twins: tuple[ModuleType, ModuleType],
) -> None:
    compiled, pure = twins
    classes = [n for n, v in public(pure).items() if inspect.isclass(v)]
    assert classes == ["Kernel"]
    for name in classes:
        c_cls, p_cls = getattr(compiled, name), getattr(pure, name)
        # The constructor: the compiled class states it in its docstring's first line.
        assert shape(inspect.signature(c_cls)) == shape(inspect.signature(p_cls)), name
        c_members, p_members = members(c_cls), members(p_cls)
        assert sorted(c_members) == sorted(p_members), name
        for attr, p_member in p_members.items():
            c_member = c_members[attr]
            if inspect.isdatadescriptor(p_member):  # a property (a getset in C)
                assert inspect.isdatadescriptor(c_member), f"{name}.{attr}"
                continue
            c_sig = inspect.signature(getattr(c_cls, attr))
            p_sig = inspect.signature(getattr(p_cls, attr))
            assert shape(c_sig) == shape(p_sig), f"{name}.{attr}"


def test_the_stated_constructor_signature_is_the_real_one(
    twins: tuple[ModuleType, ModuleType],
) -> None:
    """The compiled class's signature is written in its docstring: it must accept exactly the
    twin's parameters by name, so a docstring that drifts from __init__ fails here."""
    compiled, pure = twins
    params = inspect.signature(pure.Kernel).parameters
    args = {n: 1 if p.default is inspect.Parameter.empty else p.default for n, p in params.items()}
    compiled.Kernel(**args)
    pure.Kernel(**args)
    with pytest.raises(TypeError):
        compiled.Kernel(**args, unknown_option=1)


def test_the_type_stub_names_the_same_api(twins: tuple[ModuleType, ModuleType]) -> None:
    compiled, _ = twins
    names = set()
    for node in ast.parse(STUB.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            names |= {alias.asname or alias.name for alias in node.names}
    assert sorted(names) == sorted(compiled.__all__)


def test_the_compiled_kernel_does_not_import_its_twin(
    twins: tuple[ModuleType, ModuleType],
) -> None:
    """What both need is in ext/_layout.py and ext/_grid.py, not in the twin's private names."""
    code = "import sys, ext._kernel; print(sorted(m for m in sys.modules if m.startswith('ext')))"
    env = {k: v for k, v in os.environ.items() if k != "IRONWATT_NO_EXTENSIONS"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    loaded = ast.literal_eval(out.stdout.strip())
    assert "ext._kernel" in loaded
    assert not [m for m in loaded if m.endswith("_py")], loaded
