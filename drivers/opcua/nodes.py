"""Node id strings of the config (`ns=2;s=X`, `nsu=URI;i=5`, ...) parsed without asyncua.

Pure and stdlib-only: config checks and `ironwatt check` can validate node ids without paying
asyncua's import cost; the driver turns a `NodeRef` into a `ua.NodeId` once namespaces are known.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["NodeIdError", "NodeRef", "parse_node_id", "resolve_namespace"]

IdKind = Literal["i", "s", "g", "b"]


class NodeIdError(ValueError):
    """A node id string that cannot be parsed, or whose namespace the server does not know."""


@dataclass(frozen=True, slots=True)
class NodeRef:
    """A parsed node id: the namespace by index or by URI, and the identifier."""

    text: str
    kind: IdKind
    identifier: int | str | uuid.UUID | bytes
    ns_index: int | None = None
    ns_uri: str | None = None

    @property
    def needs_namespace_array(self) -> bool:
        return self.ns_uri is not None


def parse_node_id(text: str) -> NodeRef:
    """Parse the OPC UA string form (Part 6 §5.3.1.10) as written in the config.

    Accepts `ns=<index>;` or `nsu=<uri>;` (either optional: namespace 0 when absent) followed by
    `i=<uint32>`, `s=<string>`, `g=<guid>` or `b=<base64>`.
    """
    rest = text.strip()
    if not rest:
        raise NodeIdError("empty node id")
    ns_index, ns_uri, rest = _namespace(text, rest)
    kind, sep, value = rest.partition("=")
    if not sep or kind not in ("i", "s", "g", "b"):
        raise NodeIdError(f"node id {text!r}: identifier must start with i=, s=, g= or b=")
    identifier = _identifier(text, kind, value)
    return NodeRef(text=text, kind=kind, identifier=identifier, ns_index=ns_index, ns_uri=ns_uri)  # type: ignore[arg-type]


def _namespace(text: str, rest: str) -> tuple[int | None, str | None, str]:
    """The `ns=` index or `nsu=` URI in front of the identifier (neither: namespace 0)."""
    if rest.startswith("nsu="):
        # The URI may itself hold ';' only in theory; real URIs do not, and the identifier part
        # always starts right after the first ';' followed by one of i=, s=, g=, b=.
        head, sep, tail = _split_namespace(rest[4:])
        if not sep:
            raise NodeIdError(f"node id {text!r}: expected 'nsu=<uri>;<i|s|g|b>=<id>'")
        if not head:
            raise NodeIdError(f"node id {text!r}: empty namespace URI")
        return None, head, tail
    if rest.startswith("ns="):
        head, sep, tail = rest[3:].partition(";")
        if not sep or not head.isdigit():
            raise NodeIdError(f"node id {text!r}: expected 'ns=<index>;<i|s|g|b>=<id>'")
        ns_index = int(head)
        if ns_index > 0xFFFF:
            raise NodeIdError(f"node id {text!r}: namespace index {ns_index} exceeds 65535")
        return ns_index, None, tail
    return None, None, rest


def _identifier(text: str, kind: str, value: str) -> int | str | uuid.UUID | bytes:
    if kind == "i":
        if not value.isdigit() or int(value) > 0xFFFFFFFF:
            raise NodeIdError(f"node id {text!r}: i= needs an integer 0..4294967295")
        return int(value)
    if kind == "s":
        if not value:
            raise NodeIdError(f"node id {text!r}: empty string identifier")
        return value
    if kind == "g":
        try:
            return uuid.UUID(value)
        except ValueError:
            raise NodeIdError(f"node id {text!r}: g= needs a GUID") from None
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise NodeIdError(f"node id {text!r}: b= needs base64") from None


def _split_namespace(text: str) -> tuple[str, str, str]:
    for marker in (";i=", ";s=", ";g=", ";b="):
        pos = text.find(marker)
        if pos >= 0:
            return text[:pos], ";", text[pos + 1 :]
    return text, "", ""


def resolve_namespace(ref: NodeRef, namespace_array: Sequence[str]) -> int:
    """The namespace index to use on the wire, looked up by URI when the node id names one."""
    if ref.ns_uri is None:
        return ref.ns_index or 0
    try:
        return list(namespace_array).index(ref.ns_uri)
    except ValueError:
        raise NodeIdError(
            f"namespace URI {ref.ns_uri!r} is not in the server's NamespaceArray "
            f"({', '.join(namespace_array) or 'empty'})"
        ) from None
