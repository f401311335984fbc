"""Secrets that systemd hands the service: paths under /run/credentials/<unit>/ (LoadCredential=).

Such a file exists only while the unit runs, so `ironwatt check` before the first start looks up
where the unit loads it from instead; inside the unit ($CREDENTIALS_DIRECTORY) it must exist.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CREDENTIALS_ROOT",
    "Credential",
    "CredentialSource",
    "credential_of",
    "find_sources",
    "inside_unit",
    "unit_search_path",
]

CREDENTIALS_ROOT = Path("/run/credentials")
# systemd's search path for system units, highest priority first (systemd.unit(5)).
_UNIT_PATH = (
    "/etc/systemd/system.control",
    "/run/systemd/system.control",
    "/run/systemd/transient",
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
)
# Where `LoadCredential=ID` without a path (or with a relative one) is looked up.
_CREDSTORE = ("/etc/credstore", "/run/credstore", "/usr/lib/credstore")
_CREDSTORE_ENCRYPTED = tuple(d + ".encrypted" for d in _CREDSTORE)
_DIRECTIVE = re.compile(
    r"^(LoadCredential|LoadCredentialEncrypted|SetCredential|SetCredentialEncrypted)\s*=\s*(.*)$"
)


@dataclass(frozen=True)
class Credential:
    """/run/credentials/<unit>/<name>: the credential `name` of `unit`."""

    unit: str
    name: str

    @property
    def directory(self) -> Path:
        return CREDENTIALS_ROOT / self.unit


@dataclass(frozen=True)
class CredentialSource:
    """Where a unit gets a credential: a file (LoadCredential=) or the unit file itself."""

    directive: str  # e.g. "LoadCredential=mqtt-password:/etc/ironwatt/credentials/mqtt-password"
    unit_file: Path  # the file (unit or drop-in) that says so
    path: Path | None  # the file systemd reads at start; None for SetCredential= (inline)
    encrypted: bool = False


def credential_of(path: Path) -> Credential | None:
    """The credential a path names, when it is /run/credentials/<unit>/<name>."""
    parts = Path(os.path.normpath(path)).parts
    if len(parts) == 5 and Path(*parts[:3]) == CREDENTIALS_ROOT and parts[3].count(".") >= 1:
        return Credential(parts[3], parts[4])
    return None


def inside_unit(credential: Credential) -> bool:
    """True in the unit's own processes: systemd set $CREDENTIALS_DIRECTORY to its folder."""
    here = os.environ.get("CREDENTIALS_DIRECTORY")
    return bool(here) and Path(os.path.normpath(str(here))) == credential.directory


def unit_search_path() -> list[Path]:
    """The folders unit files are read from; $SYSTEMD_UNIT_PATH as systemd itself honours it
    (a trailing ':' appends the defaults)."""
    env = os.environ.get("SYSTEMD_UNIT_PATH")
    if env is None:
        return [Path(p) for p in _UNIT_PATH]
    dirs = [p for p in env.split(":") if p]
    if env.endswith(":"):
        dirs += list(_UNIT_PATH)
    return [Path(p) for p in dirs]


def _unit_files(unit: str, search: list[Path]) -> list[Path]:
    """The unit file and its drop-ins in the order systemd applies them ([] without a unit)."""
    names = [unit]
    prefix, at, rest = unit.partition("@")
    if at and rest.split(".", 1)[0]:  # an instance: the template and its drop-ins apply too
        names.append(f"{prefix}@.{rest.rsplit('.', 1)[-1]}")
    main = next((d / n for n in names for d in search if (d / n).is_file()), None)
    if main is None:
        return []
    dropins: dict[str, Path] = {}
    for name in reversed(names):  # the instance's drop-ins override the template's
        for folder in reversed(search):  # a higher-priority folder overrides a same-named file
            for conf in sorted((folder / f"{name}.d").glob("*.conf")):
                dropins[conf.name] = conf
    return [main, *(dropins[k] for k in sorted(dropins))]


def _directives(unit_file: Path) -> list[tuple[str, str]]:
    """(directive, value) of the credential lines in [Service], continuation lines joined."""
    try:
        text = unit_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    found: list[tuple[str, str]] = []
    section = ""
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        match = _DIRECTIVE.match(line)
        if section == "Service" and match:
            found.append((match[1], match[2].strip()))
    return found


def find_sources(credential: Credential) -> tuple[list[Path], list[CredentialSource]]:
    """The unit's files that were read and every source that provides `credential`.

    ([], []) when no unit file of that name is installed.
    """
    files = _unit_files(credential.unit, unit_search_path())
    sources: list[CredentialSource] = []
    for unit_file in files:
        for directive, value in _directives(unit_file):
            if not value:  # an empty assignment drops what earlier lines loaded
                sources = [s for s in sources if not s.directive.startswith(directive + "=")]
                continue
            ident, _, where = (part.strip() for part in value.partition(":"))
            spelled = f"{directive}={value}"
            if directive.startswith("Set"):
                if ident == credential.name:
                    sources.append(CredentialSource(spelled, unit_file, None))
                continue
            encrypted = directive.endswith("Encrypted")
            source = _source_path(ident, where, credential.name, encrypted)
            if source is not None:
                sources.append(CredentialSource(spelled, unit_file, source, encrypted))
    return files, sources


def _source_path(ident: str, where: str, name: str, encrypted: bool) -> Path | None:
    """The file `LoadCredential=ident[:where]` reads for credential `name`, if it is that one."""
    stores = _CREDSTORE_ENCRYPTED if encrypted else _CREDSTORE
    if not where:
        where = ident
    candidates = [Path(where)] if where.startswith("/") else [Path(d) / where for d in stores]
    path = next((c for c in candidates if c.exists()), candidates[0])
    if ident == name:
        return path
    # A folder loads each of its files as the credential "<ident>_<file name>".
    if name.startswith(ident + "_") and path.is_dir():
        return path / name[len(ident) + 1 :]
    return None
