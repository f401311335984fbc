"""Reading a running gateway's /status over its local HTTP listener (`ironwatt status`, the
demo's view). A leaf: urllib and json only."""

from __future__ import annotations

import http.client
import json
import urllib.request
from typing import Any

__all__ = ["fetch_status"]


def fetch_status(base_url: str, timeout: float = 5.0) -> dict[str, Any]:
    """The /status document at `base_url` (http://host:port). Raises OSError (no answer,
    refused, HTTP error) or ValueError (not a JSON object)."""
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + "/status", timeout=timeout) as answer:
            doc = json.loads(answer.read())
    except http.client.HTTPException as exc:  # cut off mid-answer: not an OSError by itself
        raise OSError(f"{base_url}/status: {exc!r}") from exc
    if not isinstance(doc, dict):
        raise ValueError(f"{base_url}/status: not a JSON object")
    return doc
