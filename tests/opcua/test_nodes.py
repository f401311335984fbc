"""Node id strings of the config, parsed and resolved without a server (table-driven)."""

from __future__ import annotations

import uuid

import pytest

from drivers.opcua.nodes import NodeIdError, parse_node_id, resolve_namespace

NAMESPACES = ["http://opcfoundation.org/UA/", "urn:ironwatt:sim:plc", "urn:plant1:bf2"]


@pytest.mark.parametrize(
    ("text", "kind", "identifier", "ns_index", "ns_uri"),
    [
        ("i=2258", "i", 2258, None, None),
        ("ns=2;s=Production.HotMetalTons", "s", "Production.HotMetalTons", 2, None),
        ("nsu=urn:plant1:bf2;s=A;B=c", "s", "A;B=c", None, "urn:plant1:bf2"),
        ("nsu=http://x.org/UA/;i=5", "i", 5, None, "http://x.org/UA/"),
        (
            "ns=3;g=09087e75-8e5e-499b-954f-f2a9603db28a",
            "g",
            uuid.UUID("09087e75-8e5e-499b-954f-f2a9603db28a"),
            3,
            None,
        ),
        ("ns=1;b=aGVsbG8=", "b", b"hello", 1, None),
        ("s=NoNamespace", "s", "NoNamespace", None, None),
    ],
)
def test_parse(
    text: str, kind: str, identifier: object, ns_index: int | None, ns_uri: str | None
) -> None:
    ref = parse_node_id(text)
    assert (ref.kind, ref.identifier, ref.ns_index, ref.ns_uri) == (
        kind,
        identifier,
        ns_index,
        ns_uri,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty node id"),
        ("ns=x;s=A", "expected 'ns=<index>"),
        ("ns=70000;i=1", "exceeds 65535"),
        ("nsu=urn:a", "expected 'nsu=<uri>"),
        ("nsu=;s=A", "empty namespace URI"),
        ("ns=2;q=1", "must start with i=, s=, g= or b="),
        ("i=-1", "i= needs an integer"),
        ("i=4294967296", "i= needs an integer"),
        ("ns=2;s=", "empty string identifier"),
        ("ns=2;g=not-a-guid", "g= needs a GUID"),
        ("ns=2;b=%%%", "b= needs base64"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(NodeIdError, match=message):
        parse_node_id(text)


def test_resolve_namespace_by_uri_and_index() -> None:
    assert resolve_namespace(parse_node_id("nsu=urn:plant1:bf2;s=A"), NAMESPACES) == 2
    assert resolve_namespace(parse_node_id("ns=7;s=A"), NAMESPACES) == 7
    assert resolve_namespace(parse_node_id("i=85"), NAMESPACES) == 0
    with pytest.raises(NodeIdError, match="'urn:other' is not in the server's NamespaceArray"):
        resolve_namespace(parse_node_id("nsu=urn:other;s=A"), NAMESPACES)
