"""The outbox: every outgoing message in SQLite until the broker has it (one writer thread).

The face is lazy: `python -m gateway.outbox.schema` (the daemon's migration child) imports this
package first, and a face that imported the schema module (through the store) would make runpy
warn that it is already loaded; the daemon never loads sqlite-utils either way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.lazyface import lazy_face

__all__ = [
    "Message",
    "MessageClass",
    "Outbox",
    "OutboxReader",
    "OutboxSettings",
    "OutboxStats",
    "Row",
    "compose",
    "encode_body",
    "open_outbox",
]

if TYPE_CHECKING:
    from gateway.outbox.messages import (
        Message,
        OutboxSettings,
        OutboxStats,
        Row,
        compose,
        encode_body,
    )
    from gateway.outbox.policy import MessageClass
    from gateway.outbox.store import Outbox, OutboxReader, open_outbox

_HOME = {
    "Message": "messages",
    "MessageClass": "policy",
    "Outbox": "store",
    "OutboxReader": "store",
    "OutboxSettings": "messages",
    "OutboxStats": "messages",
    "Row": "messages",
    "compose": "messages",
    "encode_body": "messages",
    "open_outbox": "store",
}


__getattr__, __dir__ = lazy_face(__name__, _HOME, globals())
