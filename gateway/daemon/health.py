"""The optional local HTTP listener: /healthz, /status (JSON) and /metrics (Prometheus text).

A minimal HTTP/1.1 responder on asyncio.start_server: three GET routes, one response per
connection. No framework and no prometheus-client: neither is a dependency, and the exposition
format is a few lines of text (see docs/daemon.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = ["HealthServer", "Metric", "parse_listen", "render_metrics"]

log = logging.getLogger("ironwatt.health")

_REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    400: "Bad Request",
    503: "Service Unavailable",
}


@dataclass(slots=True)
class Metric:
    """One metric family: samples are (labels, value) pairs."""

    name: str
    kind: str  # "gauge" | "counter" | "summary"
    help: str
    samples: list[tuple[dict[str, str], float, str]] = field(default_factory=list)

    def add(self, value: float | int | None, suffix: str = "", **labels: str) -> Metric:
        """One sample; `suffix` names a summary's part ("_sum", "_count")."""
        if value is not None:
            self.samples.append((labels, float(value), suffix))
        return self


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def render_metrics(metrics: Iterable[Metric]) -> str:
    """Prometheus text exposition format 0.0.4."""
    lines: list[str] = []
    for metric in metrics:
        help_text = metric.help.replace("\\", "\\\\").replace("\n", "\\n")
        lines.append(f"# HELP {metric.name} {help_text}")
        lines.append(f"# TYPE {metric.name} {metric.kind}")
        for labels, value, suffix in metric.samples:
            label_text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
            name = metric.name + suffix
            series = f"{name}{{{label_text}}}" if label_text else name
            lines.append(f"{series} {_format_value(value)}")
    return "\n".join(lines) + "\n"


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` → (host, port)."""
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"http.listen {listen!r}: expected host:port, e.g. 127.0.0.1:9108")
    return host.strip("[]"), int(port)


class HealthServer:
    """Serves the three routes from callables the runtime provides; each is cheap and sync."""

    def __init__(
        self,
        listen: str,
        healthz: Callable[[], tuple[bool, str]],
        status: Callable[[], dict[str, object]],
        metrics: Callable[[], Iterable[Metric]],
    ) -> None:
        self.host, self.port = parse_listen(listen)
        self._healthz = healthz
        self._status = status
        self._metrics = metrics
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])  # port 0 in tests: the one the OS gave
        log.info(
            "status listener on http://%s:%d (/healthz /status /metrics)", self.host, self.port
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, ctype, body = await asyncio.wait_for(self._respond(reader), timeout=5.0)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError):
            writer.close()
            return
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
        )
        try:
            writer.write(head.encode("ascii") + body)
            await asyncio.wait_for(writer.drain(), timeout=5.0)
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[int, str, bytes]:
        request = await reader.readuntil(b"\r\n")
        # Headers are read and ignored (bounded: the stream limit caps each line).
        for _ in range(100):
            if await reader.readuntil(b"\n") in (b"\r\n", b"\n"):
                break
        parts = request.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return 400, "text/plain", b"bad request\n"
        method, target = parts[0], parts[1].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"GET only\n"
        try:
            status, ctype, body = self._route(target)
        except Exception:
            log.exception("status listener: %s failed", target)
            return 503, "text/plain", b"internal error, see the gateway log\n"
        return status, ctype, b"" if method == "HEAD" else body

    def _route(self, target: str) -> tuple[int, str, bytes]:
        if target == "/healthz":
            ok, why = self._healthz()
            return (200 if ok else 503), "text/plain", (why + "\n").encode()
        if target == "/status":
            body = json.dumps(self._status(), indent=1, default=str).encode()
            return 200, "application/json", body + b"\n"
        if target == "/metrics":
            text = render_metrics(self._metrics())
            return 200, "text/plain; version=0.0.4; charset=utf-8", text.encode()
        return 404, "text/plain", b"not found: try /healthz, /status or /metrics\n"
